//! One `countersign serve --local` for the whole test process, started on first use exactly
//! as a user starts it, and stopped with SIGTERM when the test process ends (so it removes
//! its webhook configurations again).

use std::fs::File;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::cluster::{TestCluster, User};

/// The install namespace local mode uses by default.
pub const INSTALL_NAMESPACE: &str = "countersign-system";

/// The running webhook of this test process.
#[derive(Debug)]
pub struct Countersign {
    pub port: u16,
    /// The SIGTERM-on-EOF wrapper's process; `serve` is its only child.
    #[allow(dead_code)] // read by the apiserver benchmark only
    wrapper: u32,
}

static SERVE: OnceLock<Result<Countersign, String>> = OnceLock::new();
/// The wrapper's stdin: when the test process exits, it closes, and the wrapper sends
/// SIGTERM to `serve`.
static LIFELINE: Mutex<Option<ChildStdin>> = Mutex::new(None);

/// Runs `serve` ("$@") and sends it SIGTERM once stdin reaches end of file.
const WRAPPER: &str = r#""$@" & child=$!; read -r _; kill -TERM "$child"; wait "$child""#;

impl Countersign {
    /// The webhook, started on first use; panics with the reason (and the log's path)
    /// when it does not come up: every caller is a test.
    pub fn get() -> &'static Countersign {
        match SERVE.get_or_init(|| Self::start().map_err(|e| format!("{e:#}"))) {
            Ok(serve) => serve,
            Err(reason) => panic!("countersign serve --local did not start: {reason}"),
        }
    }

    /// The process id of `serve` itself (for its memory and CPU time).
    #[allow(dead_code)] // used by the apiserver benchmark only
    pub fn serve_pid(&self) -> Result<u32> {
        let path = format!("/proc/{0}/task/{0}/children", self.wrapper);
        let children = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        children
            .split_whitespace()
            .next()
            .context("the wrapper has no child: serve is not running")?
            .parse()
            .context("a process id in /proc is not a number")
    }

    fn start() -> Result<Countersign> {
        let cluster = TestCluster::get();
        let port = free_port()?;
        let log =
            std::env::temp_dir().join(format!("countersign-serve-{}.log", std::process::id()));
        let output = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = spawn_local(cluster, port, output)?;
        *LIFELINE
            .lock()
            .map_err(|_| anyhow::anyhow!("lifeline poisoned"))? = child.stdin.take();
        let started = Instant::now();
        // Ready when the API server sends countersign's kinds to it: a dry-run AuditEntry by
        // the admin is refused by the webhook (nobody but countersign writes the trail).
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "serve exited ({status}); see {}: {}",
                    log.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let probe = cluster.kubectl_output(
                User::Admin,
                &["create", "--dry-run=server", "-f", "-"],
                Some(PROBE_ENTRY.as_bytes()),
            )?;
            if String::from_utf8_lossy(&probe.stderr).contains("written by countersign only") {
                grant_approvers(cluster)?;
                return Ok(Countersign {
                    port,
                    wrapper: child.id(),
                });
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("not serving after 2 minutes; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Start `countersign serve --local` on 127.0.0.1:`port` under the SIGTERM-on-EOF wrapper.
pub fn spawn_local(cluster: &TestCluster, port: u16, output: File) -> Result<std::process::Child> {
    let errors = output.try_clone()?;
    Command::new("sh")
        .args(["-c", WRAPPER, "sh"])
        .arg(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--local", "--gitops", "--kubeconfig"])
        .arg(cluster.kubeconfig())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(cluster.client_auth_args())
        .env("RUST_LOG", "info,countersign=debug")
        .stdin(Stdio::piped())
        .stdout(output)
        .stderr(errors)
        .spawn()
        .context("starting countersign serve --local")
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

const PROBE_ENTRY: &str = r#"
apiVersion: countersign.dev/v1alpha1
kind: AuditEntry
metadata:
  name: readiness-probe
  namespace: countersign-system
spec:
  time: "2026-01-01T00:00:00Z"
  action: Approved
  actor: {username: admin}
  target: {apiVersion: apps/v1, kind: Deployment, name: probe}
"#;

/// A client that authenticates as countersign's own ServiceAccount (with a token from the
/// TokenRequest API), for what only countersign may write.
pub async fn own_client() -> Result<kube::Client> {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    Countersign::get();
    let cluster = TestCluster::get();
    let admin = cluster.client(User::Admin).await?;
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "spec": { "expirationSeconds": 3600 },
    }))?;
    let issued = kube::Api::<ServiceAccount>::namespaced(admin, INSTALL_NAMESPACE)
        .create_token_request("countersign", &Default::default(), &request)
        .await?;
    let token = issued
        .status
        .and_then(|s| s.token)
        .context("TokenRequest returned no token")?;
    let config = cluster.config_with_token(&token).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Lets the test cluster's approvers (`team-leads`, `sre`, `oncall`) review requests, as an
/// administrator would grant `countersign-approver`.
pub fn grant_approvers(cluster: &TestCluster) -> Result<()> {
    let subjects: Vec<serde_json::Value> = ["team-leads", "sre", "oncall"]
        .iter()
        .map(|group| {
            serde_json::json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group })
        })
        .collect();
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": { "name": "countersign-test-approvers" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "countersign-approver" },
        "subjects": subjects,
    });
    let out = cluster.kubectl_output(
        User::Admin,
        &["apply", "-f", "-"],
        Some(binding.to_string().as_bytes()),
    )?;
    if !out.status.success() {
        bail!(
            "granting countersign-approver: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The shared `serve`'s /metrics text.
pub fn metrics() -> Result<String> {
    let out = Command::new("curl")
        .args([
            "-sk",
            &format!("https://127.0.0.1:{}/metrics", Countersign::get().port),
        ])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A kubeconfig for the test cluster as ServiceAccount countersign of `namespace` (a
/// TokenRequest token, valid an hour), for a `serve` started by hand; `tag` names the file.
/// (Used by tests/local_mode.rs and tests/chart_install.rs, not by the integration tests.)
#[allow(dead_code)]
pub fn service_account_kubeconfig(namespace: &str, tag: &str) -> Result<std::path::PathBuf> {
    let cluster = TestCluster::get();
    let token = cluster.kubectl_output(
        User::Admin,
        &[
            "create",
            "token",
            "countersign",
            "-n",
            namespace,
            "--duration=1h",
        ],
        None,
    )?;
    if !token.status.success() {
        bail!(
            "kubectl create token: {}",
            String::from_utf8_lossy(&token.stderr)
        );
    }
    let view = cluster.kubectl_output(
        User::Admin,
        &["config", "view", "--raw", "--minify", "-o", "json"],
        None,
    )?;
    let mut config: serde_json::Value = serde_json::from_slice(&view.stdout)?;
    config["users"][0]["user"] =
        serde_json::json!({ "token": String::from_utf8_lossy(&token.stdout).trim() });
    let path = std::env::temp_dir().join(format!("countersign-{tag}.kubeconfig"));
    std::fs::write(&path, config.to_string())?;
    Ok(path)
}

/// Whether ServiceAccount countersign of `namespace` may `verb` `resource` (`scope`: `-n NS`,
/// `-A`, or nothing for the cluster scope), asked by the admin with `kubectl auth can-i --as`.
/// (Used by tests/local_mode.rs and tests/chart_install.rs, not by the integration tests.)
#[allow(dead_code)]
pub fn service_account_can_i(
    namespace: &str,
    verb: &str,
    resource: &str,
    scope: &[&str],
) -> Result<bool> {
    let who = format!("--as=system:serviceaccount:{namespace}:countersign");
    let mut args = vec!["auth", "can-i", verb, resource, &who];
    args.extend_from_slice(scope);
    let out = TestCluster::get().kubectl_output(User::Admin, &args, None)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
}

/// Who a review POSTed straight to the webhook claims to come from.
#[allow(dead_code)] // not every test crate posts reviews
#[derive(Clone, Copy, Debug)]
pub enum Presenting<'a> {
    /// The API server's own client certificate.
    ApiServer,
    /// No client certificate at all.
    Nothing,
    /// Another certificate and key (a user's, or one a test made).
    Certificate(&'a std::path::Path, &'a std::path::Path),
}

/// POST `body` to `path` of the webhook on `port` presenting `who`; (HTTP status, body).
#[allow(dead_code)] // not every test crate posts reviews
pub fn post_review(port: u16, path: &str, body: &[u8], who: Presenting) -> Result<(u16, String)> {
    use std::io::Write;
    let url = format!("https://127.0.0.1:{port}{path}");
    let mut command = Command::new("curl");
    command.args([
        "-sk",
        "-w",
        "\n%{http_code}",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        "@-",
        &url,
    ]);
    let (cert, key) = match who {
        Presenting::ApiServer => {
            let (cert, key) = TestCluster::get().webhook_client_credentials();
            (Some(cert.to_path_buf()), Some(key.to_path_buf()))
        }
        Presenting::Nothing => (None, None),
        Presenting::Certificate(cert, key) => (Some(cert.to_path_buf()), Some(key.to_path_buf())),
    };
    if let (Some(cert), Some(key)) = (cert, key) {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let mut curl = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running curl")?;
    if let Some(mut stdin) = curl.stdin.take() {
        stdin.write_all(body)?;
    }
    let out = curl.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, code) = text.rsplit_once('\n').context("curl printed no status")?;
    Ok((code.trim().parse()?, answer.to_string()))
}
