//! The chart installed for real (issue 11, the chart's install test): `helm install` into
//! the test cluster with `webhook.url` pointing at a `countersign serve` on this host that
//! runs as the chart's ServiceAccount (a TokenRequest token in a kubeconfig) with
//! self-managed certificates, the chart's default. It must:
//! - create its Secret of certificates and inject the CA into the chart's configurations;
//! - take a change through request → two approvals → rollout on kwok nodes → Deployed,
//!   so the chart's RBAC is enough;
//! - not hold more than that: no Secret outside its namespace, no RBAC it does not need,
//!   no other webhook configuration;
//! - and `helm uninstall` leaves nothing cluster-scoped behind but the CRDs.
//!
//! Its own test binary: it owns the webhook configurations `countersign` while it runs,
//! as the local-mode tests do in theirs (cargo runs test binaries one after another).

#[path = "integration/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use support::countersign::free_port;
use support::flow::text;
use support::namespace::unique_name;
use support::{TestCluster, TestNamespace, User};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn kubectl(user: User, args: &[&str], stdin: Option<&Value>) -> Result<Output> {
    let input = stdin.map(|v| v.to_string());
    TestCluster::get().kubectl_output(user, args, input.as_deref().map(str::as_bytes))
}

/// `kubectl` with another kubeconfig (countersign's own identity).
fn kubectl_as(kubeconfig: &Path, args: &[&str], stdin: Option<&Value>) -> Result<Output> {
    let input = stdin.map(Value::to_string);
    TestCluster::get().kubectl_with(kubeconfig, args, input.as_deref().map(str::as_bytes))
}

fn helm(args: &[&str]) -> Result<Output> {
    Command::new(root().join("tests/chart/helm"))
        .args(args)
        .arg("--kubeconfig")
        .arg(TestCluster::get().kubeconfig())
        .output()
        .context("running tests/chart/helm")
}

/// Polls `probe` every 300 ms until it gives a value, for up to `limit`.
fn until<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<Result<T, String>>,
) -> Result<T> {
    let started = Instant::now();
    loop {
        match probe()? {
            Ok(value) => return Ok(value),
            Err(last) if started.elapsed() > limit => bail!("{what}: not after {limit:?}: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

/// `countersign serve` on this host, stopped with SIGTERM when dropped (also on a panic).
struct HostServe {
    child: Child,
    log: PathBuf,
}

impl HostServe {
    fn start(kubeconfig: &Path, namespace: &str, port: u16) -> Result<HostServe> {
        let log = std::env::temp_dir().join(format!("countersign-{namespace}.log"));
        let output = std::fs::File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(["serve", "--kubeconfig"])
            .arg(kubeconfig)
            .args(support::TestCluster::get().client_auth_args())
            .args([
                "--install-namespace",
                namespace,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--webhook-url",
                &format!("https://127.0.0.1:{port}"),
                "--self-managed-tls",
                "--log-format",
                "text",
            ])
            .env("RUST_LOG", "info,countersign=debug")
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .context("starting countersign serve")?;
        Ok(HostServe { child, log })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        Ok(self.child.wait()?)
    }
}

impl Drop for HostServe {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.stop();
        }
    }
}

/// The install namespace, deleted at the end (and a release left behind uninstalled).
struct Release {
    namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(&[
            "uninstall",
            "countersign",
            "-n",
            &self.namespace,
            "--ignore-not-found",
        ]);
        let _ = kubectl(
            User::Admin,
            &[
                "delete",
                "namespace",
                &self.namespace,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
    }
}

fn can_i(namespace: &str, verb: &str, resource: &str, in_namespace: Option<&str>) -> Result<bool> {
    let scope = in_namespace.map(|ns| vec!["-n", ns]).unwrap_or_default();
    support::countersign::service_account_can_i(namespace, verb, resource, &scope)
}

/// The type and the base64 `ca.crt` of Secret countersign-webhook-tls in `namespace`, once
/// it exists with a CA bundle.
fn tls_secret(namespace: &str) -> Result<Option<(String, String)>> {
    let out = kubectl(
        User::Admin,
        &[
            "get",
            "secret",
            "countersign-webhook-tls",
            "-n",
            namespace,
            "-o",
            "json",
        ],
        None,
    )?;
    if !out.status.success() {
        return Ok(None);
    }
    let secret: Value = serde_json::from_slice(&out.stdout)?;
    let ca = secret["data"]["ca.crt"].as_str().unwrap_or_default();
    Ok((!ca.is_empty()).then(|| {
        (
            secret["type"].as_str().unwrap_or_default().to_string(),
            ca.to_string(),
        )
    }))
}

fn webhook_configurations() -> Result<Vec<Value>> {
    let mut found = Vec::new();
    for kind in [
        "validatingwebhookconfiguration",
        "mutatingwebhookconfiguration",
    ] {
        let out = kubectl(
            User::Admin,
            &["get", kind, "countersign", "-o", "json"],
            None,
        )?;
        if out.status.success() {
            found.push(serde_json::from_slice(&out.stdout)?);
        }
    }
    Ok(found)
}

/// Waits until every webhook of both configurations carries `ca` (base64) as its caBundle.
fn injected_until(ca: &str, serve: &HostServe) -> Result<()> {
    until(
        "the CA injected into both configurations",
        Duration::from_secs(60),
        || {
            let configurations = webhook_configurations()?;
            let injected = configurations.len() == 2
                && configurations.iter().all(|c| {
                    c["webhooks"].as_array().is_some_and(|hooks| {
                        hooks.iter().all(|h| h["clientConfig"]["caBundle"] == ca)
                    })
                });
            Ok(if injected {
                Ok(())
            } else {
                Err(format!("{configurations:?}\n{}", serve.log_text()))
            })
        },
    )
}

/// Waits until the API server calls the webhook: the audit webhook refuses the admin's
/// dry-run AuditEntry `probe`.
fn webhook_answers_until(probe: &Value) -> Result<()> {
    until("the webhook answering", Duration::from_secs(60), || {
        let out = kubectl(
            User::Admin,
            &["create", "--dry-run=server", "-f", "-"],
            Some(probe),
        )?;
        Ok(if text(&out).contains("written by countersign only") {
            Ok(())
        } else {
            Err(text(&out))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installed_chart_gates_under_its_own_rights_and_uninstalls_cleanly() -> Result<()> {
    let cluster = TestCluster::get();
    let namespace = unique_name("helm");
    let release = Release {
        namespace: namespace.clone(),
    };
    let port = free_port()?;
    let url = format!("https://127.0.0.1:{port}");
    let chart = root().join("charts/countersign");
    // Earlier local-mode runs leave countersign's ClusterRoles and bindings behind (by
    // design: a restart needs them); the chart takes them over, fields local mode applied
    // included, as a user moving from local mode would.
    let installed = helm(&[
        "install",
        "countersign",
        chart.to_str().context("a UTF-8 path")?,
        "-n",
        &namespace,
        "--create-namespace",
        "--take-ownership",
        "--force-conflicts",
        "--set",
        &format!("webhook.url={url}"),
    ])?;
    ensure!(
        installed.status.success(),
        "helm install: {}",
        text(&installed)
    );

    // countersign elsewhere, as the chart's ServiceAccount.
    let kubeconfig = support::countersign::service_account_kubeconfig(&namespace, &namespace)?;
    let mut serve = HostServe::start(&kubeconfig, &namespace, port)?;

    // It makes its Secret and injects the CA into the chart's configurations; then the API
    // server calls it (the audit webhook refuses the admin's AuditEntry).
    let (secret_type, ca) = until(
        "the Secret countersign-webhook-tls",
        Duration::from_secs(60),
        || Ok(tls_secret(&namespace)?.ok_or_else(|| serve.log_text())),
    )?;
    assert_eq!(secret_type, "kubernetes.io/tls");
    injected_until(&ca, &serve)?;
    let probe = json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "AuditEntry",
        "metadata": { "name": "readiness-probe", "namespace": namespace },
        "spec": { "time": "2026-01-01T00:00:00Z", "action": "Approved",
            "actor": { "username": "admin" },
            "target": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "probe" } },
    });
    webhook_answers_until(&probe)?;
    support::countersign::grant_approvers(cluster)?;

    // The whole flow, under the chart's rights.
    let workloads = TestNamespace::create("helm-flow", None).await?;
    let ns = workloads.name().to_string();
    let policy_name = unique_name("helm");
    let policy = json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
        "metadata": { "name": policy_name },
        "spec": { "match": { "namespaces": [ns] }, "approval": { "levels": [
            { "name": "leads", "approvers": [{ "user": "alice" }] },
            { "name": "sre", "approvers": [{ "user": "carol" }] },
        ] } },
    });
    let applied = kubectl(User::Admin, &["apply", "-f", "-"], Some(&policy))?;
    ensure!(applied.status.success(), "{}", text(&applied));
    let web = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web", "namespace": ns },
        "spec": { "replicas": 2, "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "nginx:1.27" }] } } },
    });
    let flow = async {
        let denied = until("the request opened", Duration::from_secs(60), || {
            let out = kubectl(User::Dave, &["apply", "-f", "-"], Some(&web))?;
            Ok(if text(&out).contains("approval required") {
                Ok(text(&out))
            } else {
                Err(text(&out))
            })
        })?;
        let name = denied
            .split("kubectl countersign approve ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .with_context(|| format!("the denial names no request: {denied}"))?;
        for approver in [User::Alice, User::Carol] {
            let review = json!([{ "op": "add", "path": "/spec/reviews/-",
                "value": { "decision": "Approve" } }])
            .to_string();
            until("the review", Duration::from_secs(30), || {
                let out = kubectl(
                    approver,
                    &[
                        "patch",
                        "deploymentapproval",
                        &name,
                        "-n",
                        &ns,
                        "--type=json",
                        "-p",
                        &review,
                    ],
                    None,
                )?;
                Ok(if out.status.success() {
                    Ok(())
                } else {
                    Err(text(&out))
                })
            })?;
        }
        until(
            "the approved change admitted",
            Duration::from_secs(60),
            || {
                let out = kubectl(User::Dave, &["apply", "-f", "-"], Some(&web))?;
                Ok(if out.status.success() {
                    Ok(())
                } else {
                    Err(text(&out))
                })
            },
        )?;
        until("Deployed", Duration::from_secs(120), || {
            let out = kubectl(
                User::Admin,
                &[
                    "get",
                    "deploymentapproval",
                    &name,
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.status.phase}",
                ],
                None,
            )?;
            let phase = String::from_utf8_lossy(&out.stdout).to_string();
            Ok(if phase == "Deployed" {
                Ok(())
            } else {
                Err(phase)
            })
        })?;
        // The trail is in the release namespace, written by the chart's identity.
        let trail = kubectl(
            User::Admin,
            &["get", "auditentries", "-n", &namespace, "-o", "json"],
            None,
        )?;
        let trail: Value = serde_json::from_slice(&trail.stdout)?;
        let actions: Vec<String> = trail["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["spec"]["target"]["namespace"] == ns.as_str())
            .filter_map(|e| e["spec"]["action"].as_str().map(str::to_string))
            .collect();
        for action in ["Requested", "Approved", "Deployed"] {
            ensure!(
                actions.iter().any(|a| a == action),
                "{action} in {actions:?}"
            );
        }
        anyhow::Ok(())
    };
    let outcome = flow.await;
    let _ = kubectl(
        User::Admin,
        &[
            "delete",
            "approvalpolicy",
            &policy_name,
            "--ignore-not-found",
        ],
        None,
    );
    outcome.with_context(|| format!("serve log:\n{}", serve.log_text()))?;

    // A CA bundle swapped by hand is put back (and audited); a deleted Secret is made anew,
    // with a new CA that reaches both configurations, and the webhook answers again.
    let swapped = json!([{ "op": "replace", "path": "/webhooks/0/clientConfig/caBundle",
        "value": "bm90IG91ciBDQQ==" }]);
    support::webhook::patch_countersign_configuration(&swapped)?;
    injected_until(&ca, &serve)?;
    let restored = kubectl(
        User::Admin,
        &["get", "auditentries", "-n", &namespace, "-o", "json"],
        None,
    )?;
    let restored: Value = serde_json::from_slice(&restored.stdout)?;
    ensure!(
        restored["items"].as_array().into_iter().flatten().any(|e| {
            e["spec"]["action"] == "WebhookConfigurationRestored"
                && e["spec"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("injected the CA bundle"))
        }),
        "the injection is audited: {restored}"
    );
    // The CA swapped together with another change (another version's configuration, say):
    // the CA still goes in first, or the webhook, and with it the audit of the rest, would
    // stay unreachable. Then the rest is audited as a change.
    let timeout = webhook_configurations()?
        .first()
        .and_then(|c| c["webhooks"][0]["timeoutSeconds"].as_u64())
        .context("the first webhook's timeout")?;
    let slower = if timeout == 7 { 8 } else { 7 };
    let swapped_and_slowed = json!([
        { "op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": "bm90IG91ciBDQQ==" },
        { "op": "replace", "path": "/webhooks/0/timeoutSeconds", "value": slower },
    ]);
    support::webhook::patch_countersign_configuration(&swapped_and_slowed)?;
    injected_until(&ca, &serve)?;
    let said = format!("timeoutSeconds {timeout} → {slower}");
    until(
        "the rest audited as a change",
        Duration::from_secs(60),
        || {
            let out = kubectl(
                User::Admin,
                &["get", "auditentries", "-n", &namespace, "-o", "json"],
                None,
            )?;
            let entries: Value = serde_json::from_slice(&out.stdout)?;
            let found = entries["items"].as_array().into_iter().flatten().any(|e| {
                e["spec"]["action"] == "WebhookConfigurationChanged"
                    && e["spec"]["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains(&said) && !r.contains("caBundle"))
            });
            Ok(if found {
                Ok(())
            } else {
                Err(format!("{entries}\n{}", serve.log_text()))
            })
        },
    )?;
    let back = json!([{ "op": "replace", "path": "/webhooks/0/timeoutSeconds", "value": timeout }]);
    support::webhook::patch_countersign_configuration(&back)?;
    let deleted = kubectl(
        User::Admin,
        &[
            "delete",
            "secret",
            "countersign-webhook-tls",
            "-n",
            &namespace,
        ],
        None,
    )?;
    ensure!(deleted.status.success(), "{}", text(&deleted));
    let renewed = until(
        "a new Secret with a new CA",
        Duration::from_secs(60),
        || {
            Ok(match tls_secret(&namespace)? {
                Some((_, bundle)) if bundle != ca => Ok(bundle),
                other => Err(format!("{other:?}")),
            })
        },
    )?;
    injected_until(&renewed, &serve)?;
    webhook_answers_until(&probe)?;

    // Not more than it needs.
    for (verb, resource, in_namespace) in [
        ("get", "secrets", Some("kube-system")),
        ("get", "secrets", Some(ns.as_str())),
        ("list", "secrets", Some(namespace.as_str())),
        ("watch", "secrets", Some(namespace.as_str())),
        ("delete", "secrets", Some(namespace.as_str())),
        ("create", "clusterroles", None),
        ("create", "clusterrolebindings", None),
        ("bind", "clusterroles", None),
        ("escalate", "roles", Some(ns.as_str())),
        ("impersonate", "users", None),
        ("create", "validatingwebhookconfigurations", None),
        (
            "delete",
            "validatingwebhookconfigurations/countersign",
            None,
        ),
        (
            "patch",
            "validatingwebhookconfigurations/someone-else",
            None,
        ),
        ("update", "mutatingwebhookconfigurations/countersign", None),
        ("delete", "customresourcedefinitions", None),
        ("update", "approvalpolicies", None),
        ("delete", "deployments", Some(ns.as_str())),
    ] {
        ensure!(
            !can_i(&namespace, verb, resource, in_namespace)?,
            "countersign may {verb} {resource} in {in_namespace:?}"
        );
    }
    ensure!(can_i(
        &namespace,
        "patch",
        "validatingwebhookconfigurations/countersign",
        None
    )?);
    // What RBAC lets it create (a deploy token's Role and RoleBinding) cannot lend more
    // than it holds: binding cluster-admin is refused.
    let escalation = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": "countersign-escalates", "namespace": ns },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin" },
        "subjects": [{ "kind": "User", "name": "dave", "apiGroup": "rbac.authorization.k8s.io" }],
    });
    let out = kubectl_as(&kubeconfig, &["create", "-f", "-"], Some(&escalation))?;
    ensure!(
        !out.status.success(),
        "countersign bound cluster-admin: {}",
        text(&out)
    );
    ensure!(text(&out).contains("forbidden"), "{}", text(&out));

    // Uninstalled: nothing of the chart's is left cluster-wide but the CRDs.
    let manifest = helm(&["get", "manifest", "countersign", "-n", &namespace])?;
    ensure!(manifest.status.success(), "{}", text(&manifest));
    let cluster_scoped: Vec<(String, String)> = String::from_utf8_lossy(&manifest.stdout)
        .split("\n---")
        .filter_map(|document| yaml_serde::from_str::<Value>(document).ok())
        .filter(|object| object["metadata"].get("namespace").is_none())
        .filter_map(|object| {
            Some((
                object["kind"].as_str()?.to_ascii_lowercase(),
                object["metadata"]["name"].as_str()?.to_string(),
            ))
        })
        .collect();
    ensure!(
        cluster_scoped.len() >= 10,
        "the release's cluster-scoped objects: {cluster_scoped:?}"
    );
    let uninstalled = helm(&["uninstall", "countersign", "-n", &namespace, "--wait"])?;
    ensure!(
        uninstalled.status.success(),
        "helm uninstall: {}",
        text(&uninstalled)
    );
    let status = serve.stop()?;
    ensure!(
        status.success(),
        "serve exited {status}: {}",
        serve.log_text()
    );
    for kind in [
        "clusterroles",
        "clusterrolebindings",
        "validatingwebhookconfigurations",
        "mutatingwebhookconfigurations",
    ] {
        let out = kubectl(
            User::Admin,
            &[
                "get",
                kind,
                "-l",
                "app.kubernetes.io/instance=countersign",
                "-o",
                "name",
            ],
            None,
        )?;
        ensure!(out.status.success(), "{}", text(&out));
        let left = String::from_utf8_lossy(&out.stdout).trim().to_string();
        ensure!(left.is_empty(), "left behind: {left}");
    }
    // Each cluster-scoped object the release made is gone.
    for (kind, name) in &cluster_scoped {
        let out = kubectl(User::Admin, &["get", kind, name, "-o", "name"], None)?;
        ensure!(
            !out.status.success() && text(&out).contains("NotFound"),
            "left behind: {kind} {name}: {}",
            text(&out)
        );
    }
    for crd in ["approvalpolicies", "deploymentapprovals", "auditentries"] {
        let out = kubectl(
            User::Admin,
            &[
                "get",
                "crd",
                &format!("{crd}.countersign.dev"),
                "-o",
                "name",
            ],
            None,
        )?;
        ensure!(out.status.success(), "the CRD {crd} stays: {}", text(&out));
    }
    drop(release);
    Ok(())
}
