//! The real Flux of `tests/gitops/up` beside the test cluster (started once per test
//! process, or reused): a bare repository the tests commit to with plain git, and
//! Kustomizations that apply a test's directory of it as kustomize-controller.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::cluster::{parse_env, run};
use super::flow::{kubectl_stdin, text};
use super::wait::{Poll, until};
use super::{TestCluster, User};

/// What `tests/gitops/up` wrote to `gitops.env`.
#[derive(Debug)]
pub struct Flux {
    /// The bare repository on disk; branch `main`.
    repo: PathBuf,
    /// The source every test's Kustomization names: (kind, namespace, name).
    source: (String, String, String),
    /// The user kustomize-controller authenticates as.
    pub kustomize_identity: String,
    /// kustomize-controller's own kubeconfig (its ServiceAccount token).
    pub kustomize_kubeconfig: PathBuf,
}

static FLUX: OnceLock<Result<Flux, String>> = OnceLock::new();
/// Commits from concurrent tests go one at a time (each pushes to `main`).
static COMMITS: Mutex<()> = Mutex::new(());

impl Flux {
    /// The Flux for this test process: a running one beside the test cluster is reused;
    /// otherwise `tests/gitops/up` starts one (building it on first use) and leaves it
    /// running (`tests/gitops/down` stops it). Panics with the reason when there is none.
    pub fn get() -> &'static Flux {
        TestCluster::get();
        let flux = FLUX.get_or_init(|| Self::start_or_reuse().map_err(|e| format!("{e:#}")));
        match flux {
            Ok(flux) => flux,
            Err(reason) => panic!("no Flux for the GitOps tests: {reason}"),
        }
    }

    fn start_or_reuse() -> Result<Flux> {
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gitops");
        let status = Command::new(scripts.join("status")).output()?;
        let env_text = if status.status.success() {
            String::from_utf8(status.stdout).context("gitops.env is not UTF-8")?
        } else {
            eprintln!("no Flux running beside the test cluster; starting one with tests/gitops/up");
            let up = Command::new(scripts.join("up"))
                .status()
                .context("running tests/gitops/up")?;
            if !up.success() {
                bail!("tests/gitops/up failed ({up}); its output above says why");
            }
            run(&mut Command::new(scripts.join("status")))?
        };
        let env = parse_env(&env_text);
        let get = |key: &str| -> Result<String> {
            env.get(key)
                .cloned()
                .with_context(|| format!("gitops.env has no {key}"))
        };
        let source = get("GITOPS_SOURCE")?;
        let mut parts = source.splitn(3, '/').map(str::to_owned);
        let (Some(kind), Some(namespace), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("GITOPS_SOURCE {source:?} is not kind/namespace/name");
        };
        Ok(Flux {
            repo: PathBuf::from(get("GITOPS_REPO")?),
            source: (kind, namespace, name),
            kustomize_identity: get("FLUX_KUSTOMIZE_IDENTITY")?,
            kustomize_kubeconfig: PathBuf::from(get("FLUX_KUSTOMIZE_KUBECONFIG")?),
        })
    }

    /// A policy spec with the tests' two-level chain (leads, then carol) that names this
    /// Flux's kustomize-controller as a GitOps controller (`spec.gitops`).
    pub fn gated_chain(&self) -> Value {
        let mut chain = super::flow::two_level_chain();
        let (namespace, name) = self
            .kustomize_identity
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .unwrap_or_default();
        chain["gitops"] = json!({
            "controllers": [{ "kind": "Flux", "serviceAccount": { "namespace": namespace, "name": name } }],
        });
        chain
    }

    /// Commits `documents` as the whole content of directory `dir` of the repository
    /// (one YAML stream) and pushes it to `main`; returns the commit's hash.
    pub fn commit(&self, dir: &str, documents: &[Value], message: &str) -> Result<String> {
        let _one_at_a_time = COMMITS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let work = tempfile::tempdir()?;
        let clone = work.path().join("clone");
        let git = |args: &[&str]| -> Result<String> {
            run(Command::new("git")
                .arg("-C")
                .arg(&clone)
                .args([
                    "-c",
                    "user.name=countersign-tests",
                    "-c",
                    "user.email=tests@countersign.dev",
                ])
                .args(args))
        };
        run(Command::new("git")
            .args(["clone", "--quiet", "--branch", "main"])
            .arg(&self.repo)
            .arg(&clone))?;
        let target = clone.join(dir);
        if target.exists() {
            std::fs::remove_dir_all(&target)?;
        }
        std::fs::create_dir_all(&target)?;
        let mut stream = String::new();
        for document in documents {
            stream.push_str("---\n");
            stream.push_str(&serde_json::to_string_pretty(document)?);
            stream.push('\n');
        }
        std::fs::write(target.join("resources.yaml"), stream)?;
        git(&["add", "--all", "."])?;
        git(&["commit", "--quiet", "--allow-empty", "-m", message])?;
        git(&["push", "--quiet", "origin", "main"])?;
        Ok(git(&["rev-parse", "HEAD"])?.trim().to_owned())
    }

    /// A Kustomization `name` in `namespace` applying directory `dir` of the repository,
    /// with Flux's production-like `interval` and `retryInterval` (so that nothing but
    /// a new commit, or a reconcile someone requests, makes it apply again soon).
    pub fn kustomization(
        &self,
        namespace: &str,
        name: &str,
        dir: &str,
        interval: &str,
    ) -> Result<()> {
        let (kind, source_namespace, source_name) = &self.source;
        let kustomization = json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": { "name": name, "namespace": namespace },
            "spec": {
                "interval": interval,
                "retryInterval": interval,
                "path": format!("./{dir}"),
                "prune": true,
                "timeout": "30s",
                "sourceRef": { "kind": kind, "namespace": source_namespace, "name": source_name },
            },
        });
        let out = kubectl_stdin(User::Admin, &["apply", "-f", "-"], &kustomization)?;
        anyhow::ensure!(
            out.status.success(),
            "applying the Kustomization: {}",
            text(&out)
        );
        Ok(())
    }

    /// Whether revision `tried` (as Flux reports it, `main@sha1:<hash>`) holds `commit`:
    /// it is that commit or a later one (other tests push to the same branch).
    pub fn holds(&self, tried: &str, commit: &str) -> bool {
        let Some(hash) = tried.rsplit(':').next().filter(|h| !h.is_empty()) else {
            return false;
        };
        Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["merge-base", "--is-ancestor", commit, hash])
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Waits until Kustomization `namespace/name` has tried revision `commit` (or a later
    /// one) and its Ready condition says `ready` ("True" or "False"); returns that condition.
    pub async fn tried(
        &self,
        namespace: &str,
        name: &str,
        commit: &str,
        ready: &str,
    ) -> Result<Value> {
        until(
            &format!("Kustomization {namespace}/{name} to try {commit} and be Ready={ready}"),
            Duration::from_secs(60),
            || async {
                let out = TestCluster::get().kubectl_output(
                    User::Admin,
                    &["get", "kustomization", name, "-n", namespace, "-o", "json"],
                    None,
                )?;
                if !out.status.success() {
                    return Ok(Poll::Pending(text(&out)));
                }
                let object: Value = serde_json::from_slice(&out.stdout)?;
                let status = &object["status"];
                let attempted = status["lastAttemptedRevision"].as_str().unwrap_or_default();
                let condition = status["conditions"]
                    .as_array()
                    .and_then(|all| all.iter().find(|c| c["type"] == "Ready"))
                    .cloned()
                    .unwrap_or(Value::Null);
                Ok(
                    if self.holds(attempted, commit) && condition["status"] == ready {
                        Poll::Ready(condition)
                    } else {
                        Poll::Pending(format!("revision {attempted}, Ready {condition}"))
                    },
                )
            },
        )
        .await
    }

    /// The messages of the Events on Kustomization `namespace/name` (one per failed attempt,
    /// whatever later attempts say in its status).
    pub fn event_messages(&self, namespace: &str, name: &str) -> Result<Vec<String>> {
        let selector = format!("involvedObject.kind=Kustomization,involvedObject.name={name}");
        let out = TestCluster::get().kubectl_output(
            User::Admin,
            &[
                "get",
                "events",
                "-n",
                namespace,
                "--field-selector",
                &selector,
                "-o",
                "json",
            ],
            None,
        )?;
        anyhow::ensure!(out.status.success(), "listing events: {}", text(&out));
        let list: Value = serde_json::from_slice(&out.stdout)?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|event| event["message"].as_str().map(str::to_owned))
            .collect())
    }
}
