//! `countersign serve --local` started as a process the test can signal, and the steps of
//! a change's flow driven through kubectl as the test users: shared by the tests that run
//! serve themselves (local_mode, faults).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use serde_json::{Value, json};

use super::countersign::free_port;
use super::flow::text;
use super::{TestCluster, User};

/// An install namespace of a test's own (`serve --local --install-namespace NAME`), its
/// trail apart from the one other suites share and plant entries in; deleted on drop.
pub struct InstallNamespace(pub String);

impl Drop for InstallNamespace {
    fn drop(&mut self) {
        let _ = kubectl(
            User::Admin,
            &["delete", "namespace", &self.0, "--wait=false"],
            None,
        );
    }
}

/// A `serve --local` process started directly, so the test can signal it.
pub struct Local {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Local {
    pub fn start(extra: &[&str]) -> Result<Local> {
        Self::start_with(TestCluster::get().kubeconfig(), extra)
    }

    /// Started with another kubeconfig (one that reaches the API server another way).
    pub fn start_with(kubeconfig: &Path, extra: &[&str]) -> Result<Local> {
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("countersign-local-test-{port}.log"));
        let output = File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(["serve", "--local", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(TestCluster::get().client_auth_args())
            .args(extra)
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()?;
        let local = Local { child, port, log };
        local.wait_until_registered()?;
        Ok(local)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_until_registered(&self) -> Result<()> {
        let started = Instant::now();
        while !self
            .log_text()
            .contains("webhook configurations registered")
        {
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "not registered after 60 s: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// The private directory of this process's certificates and token.
    pub fn private_dir(&self) -> PathBuf {
        std::env::temp_dir().join(format!("countersign-local-{}", self.child.id()))
    }

    /// SIGKILL: no cleanup at all, as when a node dies.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(self) -> Result<std::process::ExitStatus> {
        self.stop_with("TERM")
    }

    /// `name` (TERM or INT), then the exit status.
    pub fn stop_with(mut self, name: &str) -> Result<std::process::ExitStatus> {
        signal(self.child.id(), name)?;
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > Duration::from_secs(40) {
                let _ = self.child.kill();
                bail!(
                    "serve did not exit within 40 s of SIGTERM: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = signal(self.child.id(), "TERM");
            let _ = self.child.wait();
        }
    }
}

pub fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

pub fn kubectl(user: User, args: &[&str], stdin: Option<&Value>) -> Result<Output> {
    let input = stdin.map(Value::to_string);
    TestCluster::get().kubectl_output(user, args, input.as_deref().map(str::as_bytes))
}

/// Applies `object` as `user` until `done` holds for the outcome.
pub fn apply_until(
    user: User,
    object: &Value,
    what: &str,
    done: impl Fn(&Output) -> bool,
) -> Result<Output> {
    let started = Instant::now();
    loop {
        let out = kubectl(user, &["apply", "-f", "-"], Some(object))?;
        if done(&out) {
            return Ok(out);
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits (up to `limit`) until `check` holds for approval `name`'s JSON.
pub fn approval_until(
    ns: &str,
    name: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let started = Instant::now();
    loop {
        let out = kubectl(
            User::Admin,
            &["get", "deploymentapproval", name, "-n", ns, "-o", "json"],
            None,
        )?;
        let approval: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if check(&approval) {
            return Ok(approval);
        }
        ensure!(started.elapsed() < limit, "{what}: {approval}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn approve(user: User, ns: &str, name: &str) -> Result<()> {
    approve_object(user, ns, "deploymentapproval", name)
}

/// Append alice's or carol's approval to `kind` `name` (a request or a change set).
pub fn approve_object(user: User, ns: &str, kind: &str, name: &str) -> Result<()> {
    let patch =
        json!([{ "op": "add", "path": "/spec/reviews/-", "value": { "decision": "Approve" } }])
            .to_string();
    let started = Instant::now();
    loop {
        let out = kubectl(
            user,
            &["patch", kind, name, "-n", ns, "--type=json", "-p", &patch],
            None,
        )?;
        if out.status.success() {
            return Ok(());
        }
        // A webhook just registered may take a moment to answer.
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn web(ns: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web", "namespace": ns },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": image }] } } },
    })
}

/// The request `ns/name`'s AuditEntries as (action, actor), sorted.
pub fn request_steps(ns: &str, name: &str) -> Result<Vec<(String, String)>> {
    let entries = kubectl(
        User::Admin,
        &[
            "get",
            "auditentries",
            "-n",
            "countersign-system",
            "-o",
            "json",
        ],
        None,
    )?;
    ensure!(entries.status.success(), "{}", text(&entries));
    let entries: Value = serde_json::from_slice(&entries.stdout)?;
    let mut steps: Vec<(String, String)> = entries["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["spec"]["approval"] == json!(name) && e["spec"]["target"]["namespace"] == json!(ns)
        })
        .map(|e| {
            (
                e["spec"]["action"].as_str().unwrap_or_default().to_string(),
                e["spec"]["actor"]["username"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    steps.sort();
    Ok(steps)
}

/// The Prometheus text `serve` on `port` exposes at /metrics.
pub fn metrics_of(port: u16) -> Result<String> {
    let out = Command::new("curl")
        .args(["-sk", &format!("https://127.0.0.1:{port}/metrics")])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until `serve` on `port` has finished at least `count` reconciles of `controller`
/// (`countersign_reconcile_seconds_count`): at start it reconciles every object once.
pub fn reconciled_until(port: u16, controller: &str, count: usize) -> Result<()> {
    let series = format!("countersign_reconcile_seconds_count{{controller=\"{controller}\"}} ");
    let started = Instant::now();
    loop {
        let metrics = metrics_of(port)?;
        let done = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or_default();
        if done >= count {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "{controller}: {done} of {count} reconciles after a minute"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `countersign audit verify` as the built binary, in `install`: exit status and output.
pub fn audit_verify(install: &str, extra: &[&str]) -> Result<(Option<i32>, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["audit", "verify", "--install-namespace", install])
        .args(extra)
        .arg("--kubeconfig")
        .arg(TestCluster::get().kubeconfig())
        .args(["--context", User::Admin.name()])
        .output()?;
    Ok((out.status.code(), text(&out)))
}
