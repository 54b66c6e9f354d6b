//! Starts the test cluster once per test process, or reuses a running one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The people of the test cluster, each with a client certificate whose
/// subject gives the user name and groups the API server authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum User {
    /// `system:masters`: sets things up, never the subject of a test.
    Admin,
    /// Team lead (`team-leads`).
    Alice,
    /// Team lead (`team-leads`).
    Bob,
    /// SRE (`sre`).
    Carol,
    /// Deployer (`developers`), with `edit` in every test namespace.
    Dave,
    /// On call (`oncall`).
    Erin,
}

impl User {
    pub const ALL: [User; 6] = [
        User::Admin,
        User::Alice,
        User::Bob,
        User::Carol,
        User::Dave,
        User::Erin,
    ];

    /// The user name, which is also the kubeconfig context name.
    pub fn name(self) -> &'static str {
        match self {
            User::Admin => "admin",
            User::Alice => "alice",
            User::Bob => "bob",
            User::Carol => "carol",
            User::Dave => "dave",
            User::Erin => "erin",
        }
    }

    /// The groups in the user's certificate (`system:authenticated` is added
    /// by the API server).
    pub fn groups(self) -> &'static [&'static str] {
        match self {
            User::Admin => &["system:masters"],
            User::Alice | User::Bob => &["team-leads"],
            User::Carol => &["sre"],
            User::Dave => &["developers"],
            User::Erin => &["oncall"],
        }
    }
}

/// A running test cluster, as described by the `cluster.env` that `up` wrote.
#[derive(Debug)]
pub struct TestCluster {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    /// The CA of the client certificate the API server presents to webhooks, and its name.
    webhook_client_ca: PathBuf,
    webhook_client_name: String,
    /// The API server's client certificate and key, for tests that speak as it.
    webhook_client_cert: PathBuf,
    webhook_client_key: PathBuf,
    /// Every line of `cluster.env` (the real node's among them, when it runs).
    env: HashMap<String, String>,
}

static CLUSTER: OnceLock<Result<TestCluster, String>> = OnceLock::new();

impl TestCluster {
    /// The cluster for this test process: a running one in the state directory
    /// (`$COUNTERSIGN_CLUSTER_DIR`, default `/tmp/countersign-cluster`) is
    /// reused; otherwise `tests/cluster/up` starts one and leaves it running
    /// for the next test run (`tests/cluster/down` stops it). Panics with the
    /// reason when there is no cluster to be had: every caller is a test.
    pub fn get() -> &'static TestCluster {
        let cluster = CLUSTER.get_or_init(|| Self::start_or_reuse().map_err(|e| format!("{e:#}")));
        match cluster {
            Ok(cluster) => cluster,
            Err(reason) => panic!("no test cluster: {reason}"),
        }
    }

    fn start_or_reuse() -> Result<TestCluster> {
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster");
        let status = Command::new(scripts.join("status"))
            .output()
            .context("running tests/cluster/status")?;
        let env_text = if status.status.success() {
            String::from_utf8(status.stdout).context("cluster.env is not UTF-8")?
        } else {
            eprintln!("no running test cluster; starting one with tests/cluster/up");
            let up = Command::new(scripts.join("up"))
                .status()
                .context("running tests/cluster/up")?;
            if !up.success() {
                bail!(
                    "tests/cluster/up failed ({up}); its output above says which component and where its log is"
                );
            }
            let again = Command::new(scripts.join("status"))
                .output()
                .context("running tests/cluster/status")?;
            if !again.status.success() {
                bail!(
                    "the cluster is not healthy right after tests/cluster/up: {}",
                    String::from_utf8_lossy(&again.stderr)
                );
            }
            String::from_utf8(again.stdout).context("cluster.env is not UTF-8")?
        };
        let env = parse_env(&env_text);
        let path = |key: &str| -> Result<PathBuf> {
            env.get(key)
                .map(PathBuf::from)
                .with_context(|| format!("cluster.env has no {key}"))
        };
        Ok(TestCluster {
            kubeconfig: path("KUBECONFIG")?,
            kubectl: path("KUBECTL")?,
            webhook_client_ca: path("WEBHOOK_CLIENT_CA")
                .context("a cluster started before webhook client certificates: restart it with tests/cluster/up")?,
            webhook_client_name: env
                .get("WEBHOOK_CLIENT_NAME")
                .cloned()
                .context("cluster.env has no WEBHOOK_CLIENT_NAME")?,
            webhook_client_cert: path("WEBHOOK_CLIENT_CERT")?,
            webhook_client_key: path("WEBHOOK_CLIENT_KEY")?,
            env,
        })
    }

    /// The flags that make `countersign serve` accept reviews from this cluster's API
    /// server only (its client certificate), as every test runs it.
    pub fn client_auth_args(&self) -> Vec<String> {
        vec![
            "--client-ca-file".into(),
            self.webhook_client_ca.display().to_string(),
            "--client-name".into(),
            self.webhook_client_name.clone(),
        ]
    }

    /// The CA of the API server's client certificate (its key beside it, `.key`).
    #[allow(dead_code)] // not every test crate speaks as the API server
    pub fn webhook_client_ca(&self) -> &Path {
        &self.webhook_client_ca
    }

    /// The API server's client certificate and key.
    #[allow(dead_code)] // not every test crate speaks as the API server
    pub fn webhook_client_credentials(&self) -> (&Path, &Path) {
        (&self.webhook_client_cert, &self.webhook_client_key)
    }

    /// A value of `cluster.env`, e.g. `REAL_NODE` when the cluster has a real node.
    #[allow(dead_code)] // read by the tests on the real node only
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }

    /// The kubeconfig with a context per test user (the admin's is the current one).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client that authenticates as `user`.
    pub async fn client(&self, user: User) -> Result<kube::Client> {
        let config = self.config(user).await?;
        kube::Client::try_from(config).context("building a kube client")
    }

    /// The client configuration of `user`'s kubeconfig context.
    pub async fn config(&self, user: User) -> Result<kube::Config> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        let options = KubeConfigOptions {
            context: Some(user.name().to_owned()),
            ..KubeConfigOptions::default()
        };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .with_context(|| format!("kubeconfig context {}", user.name()))
    }

    /// A client configuration for this cluster that authenticates with a
    /// bearer token (e.g. one issued by the TokenRequest API) instead of a
    /// client certificate.
    pub async fn config_with_token(&self, token: &str) -> Result<kube::Config> {
        let mut config = self.config(User::Admin).await?;
        config.auth_info = serde_json::from_value(serde_json::json!({ "token": token }))
            .context("building token credentials")?;
        Ok(config)
    }

    /// Runs `kubectl` as `user` with `args`, feeding `stdin` (e.g. a manifest for `-f -`),
    /// and returns its output whatever its exit status.
    pub fn kubectl_output(
        &self,
        user: User,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<std::process::Output> {
        output_with_stdin(self.kubectl(user).args(args), stdin)
    }

    /// `kubectl` with another kubeconfig (a ServiceAccount's or a token's), and its output.
    pub fn kubectl_with(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<std::process::Output> {
        output_with_stdin(
            Command::new(&self.kubectl)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(args),
            stdin,
        )
    }

    /// `kubectl` acting as `user` against this cluster.
    pub fn kubectl(&self, user: User) -> Command {
        let mut command = Command::new(&self.kubectl);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--context")
            .arg(user.name());
        command
    }
}

/// Parses `KEY=value` lines, skipping comments and blank lines.
pub fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// Runs a command to completion; fails with its stderr when it fails.
pub fn run(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).context("command output is not UTF-8")
}

/// Runs `command` with `stdin` written to it, and collects its output.
fn output_with_stdin(command: &mut Command, stdin: Option<&[u8]>) -> Result<std::process::Output> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running kubectl")?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)?;
    }
    Ok(child.wait_with_output()?)
}
