//! `countersign serve --local` as a process (SPEC §9): its webhook configurations, its exit
//! on SIGTERM, two processes registered together, certificate rotation under load, and the
//! operator guarding those configurations.
//! Its own test binary, run after the others: it registers and removes the configurations
//! named `countersign`, which the integration binary's webhook also uses.

#[path = "integration/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use kube::Api;
use serde_json::{Value, json};

use support::countersign::free_port;
use support::flow::{Policy, text};
use support::local::{
    InstallNamespace, Local, apply_until, approval_until, approve, approve_object, audit_verify,
    kubectl, metrics_of, reconciled_until, request_steps, signal, web,
};
use support::wait::{Poll, until};
use support::{TestCluster, TestNamespace, User};

/// One `serve --local` at a time: they share the configuration names.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn configurations() -> Result<(
    Option<ValidatingWebhookConfiguration>,
    Option<MutatingWebhookConfiguration>,
)> {
    let admin = TestCluster::get().client(User::Admin).await?;
    Ok((
        Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .get_opt("countersign")
            .await?,
        Api::<MutatingWebhookConfiguration>::all(admin)
            .get_opt("countersign")
            .await?,
    ))
}

async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

#[tokio::test]
async fn sigterm_removes_the_configurations_and_exits_zero() -> Result<()> {
    let _one = lock().await;
    let ns = TestNamespace::create("sigterm", None).await?;
    let policy_name = support::namespace::unique_name("sigterm");
    let local = Local::start(&["--log-format", "json"])?;
    let _policy = apply_alice_policy(&policy_name, ns.name())?;
    let started = Instant::now();
    while dry_run(ns.name(), "nginx:1.27")?.status.success() {
        ensure!(
            started.elapsed() < Duration::from_secs(20),
            "the policy never gated the namespace"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Ready (its caches synced) before it registered; logs are JSON lines.
    let ready = Command::new("curl")
        .args(["-sk", &format!("https://127.0.0.1:{}/readyz", local.port)])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&ready.stdout), "ok");
    let logged = local.log_text();
    let json_lines: Vec<&str> = logged.lines().filter(|l| l.starts_with('{')).collect();
    assert!(!json_lines.is_empty(), "no JSON log lines: {logged}");
    for line in json_lines {
        let entry: Value = serde_json::from_str(line)?;
        assert!(
            entry.get("level").is_some() && entry.get("timestamp").is_some(),
            "{line}"
        );
    }
    let (validating, mutating) = configurations().await?;
    let validating = validating.context("the validating configuration")?;
    let mutating = mutating.context("the mutating configuration")?;
    let prefix = format!("https://127.0.0.1:{}/", local.port);
    for hook in validating.webhooks.iter().flatten() {
        let url = hook.client_config.url.as_deref().unwrap_or_default();
        assert!(url.starts_with(&prefix), "{}: {url}", hook.name);
        assert!(hook.client_config.ca_bundle.is_some());
        assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    }
    // Review stamping, policy authors, the namespace labeller (writes that keep the labels,
    // failing open; relabels, failing closed).
    let mutating_hooks: Vec<(&str, Option<&str>)> = mutating
        .webhooks
        .iter()
        .flatten()
        .map(|hook| (hook.name.as_str(), hook.failure_policy.as_deref()))
        .collect();
    assert_eq!(
        mutating_hooks,
        [
            ("reviews.countersign.dev", Some("Fail")),
            ("policy-authors.countersign.dev", Some("Fail")),
            ("namespaces.countersign.dev", Some("Ignore")),
            ("namespace-labels.countersign.dev", Some("Fail")),
        ]
    );
    // The ServiceAccount it runs as cannot read Secrets across namespaces (only a
    // notification sink's, by name, in its own; it creates and updates deploy tokens'
    // ones: a patch or a deletion would answer with a Secret's contents), touch
    // cluster-wide RBAC, or grant what it does not hold.
    for (verb, resource) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("patch", "secrets"),
        ("delete", "secrets"),
        ("create", "clusterrolebindings"),
        ("escalate", "roles"),
        ("bind", "roles"),
        ("delete", "validatingwebhookconfigurations"),
    ] {
        assert!(!can_i(verb, resource)?, "{verb} {resource}");
    }
    let private = local.private_dir();
    assert!(private.join("token").exists());
    // The operator's lease, held by this replica (as its ServiceAccount), released on exit.
    let admin = TestCluster::get().client(User::Admin).await?;
    let leases =
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin, "countersign-system");
    let holder = || async {
        anyhow::Ok(
            leases
                .get_opt("countersign-operator")
                .await?
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity),
        )
    };
    let started = Instant::now();
    while holder().await?.is_none() {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "nobody took the operator's lease"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let status = local.terminate()?;
    assert!(status.success(), "exit status {status}");
    let (validating, mutating) = configurations().await?;
    assert!(
        validating.is_none() && mutating.is_none(),
        "configurations left behind"
    );
    assert!(!private.exists(), "private files left behind");
    // SPEC §9: local mode's exit takes its configurations away, so the gate is open until
    // it runs again (docs/security.md says so; a killed process leaves them and fails
    // closed, `while_countersign_is_down_…`).
    let open = dry_run(ns.name(), "nginx:1.27")?;
    ensure!(open.status.success(), "{}", text(&open));
    let _ = kubectl(
        User::Admin,
        &["delete", "approvalpolicy", &policy_name],
        None,
    );
    Ok(())
}

/// A workload change through the API server, as a dry run (a review, no side effects).
fn dry_run(namespace: &str, image: &str) -> Result<Output> {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "probe", "namespace": namespace },
        "spec": {
            "selector": { "matchLabels": { "app": "probe" } },
            "template": { "metadata": { "labels": { "app": "probe" } },
                "spec": { "containers": [{ "name": "probe", "image": image }] } },
        },
    });
    kubectl(
        User::Dave,
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&deployment),
    )
}

/// The SHA-256 fingerprint of the certificate served on `port`.
fn served_fingerprint(port: u16) -> Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(!text.is_empty(), "no certificate read from port {port}");
    Ok(text)
}

/// A new serving certificate for 127.0.0.1 under the CA in `dir`, written the way the
/// kubelet updates a Secret volume: a new file renamed over the old one.
fn rotate(dir: &Path) -> Result<()> {
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key"))?)?;
    // The CA as local mode made it: its name and key are what a leaf's issuer must match.
    let mut ca = rcgen::CertificateParams::default();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "countersign local CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse()?)];
    let cert = params.signed_by(&key, &issuer)?;
    for (name, text) in [("tls.key", key.serialize_pem()), ("tls.crt", cert.pem())] {
        let partial = dir.join(format!("{name}.new"));
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, dir.join(name))?;
    }
    Ok(())
}

#[tokio::test]
async fn certificate_files_replaced_while_reviews_flow_lose_no_review() -> Result<()> {
    let _one = lock().await;
    let ns = TestNamespace::create("rotate", None).await?;
    let local = Local::start(&[])?;
    let before = served_fingerprint(local.port)?;
    let namespace = ns.name().to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flow = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<usize> {
            let mut reviews = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let out = dry_run(&namespace, &format!("nginx:1.{reviews}"))?;
                ensure!(
                    out.status.success(),
                    "review {reviews} failed: {}",
                    text(&out)
                );
                reviews += 1;
            }
            Ok(reviews)
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    rotate(&local.private_dir())?;
    let started = Instant::now();
    let after = loop {
        let now = served_fingerprint(local.port)?;
        if now != before {
            break now;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "the new certificate is not served"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Release);
    let reviews = flow
        .join()
        .map_err(|_| anyhow::anyhow!("flow panicked"))??;
    assert!(reviews >= 5, "only {reviews} reviews flowed");
    assert_ne!(before, after);
    // SIGINT (Ctrl-C) stops it as cleanly as SIGTERM.
    assert!(local.stop_with("INT")?.success());
    let (validating, _) = configurations().await?;
    assert!(
        validating.is_none(),
        "configurations left behind after SIGINT"
    );
    Ok(())
}

#[tokio::test]
async fn two_processes_registered_together_behave_like_one() -> Result<()> {
    let _one = lock().await;
    let ns = TestNamespace::create("twin", None).await?;
    let ns = ns.name().to_string();
    let first = Local::start(&[])?;
    support::countersign::grant_approvers(TestCluster::get())?;
    // The second process: the same ServiceAccount and certificate, its own port, every
    // validating webhook registered a second time on it, so both judge every request.
    let cluster = TestCluster::get();
    let twin = Twin::start(&first)?;
    let second_port = twin.port;
    let second_log = twin.log.clone();
    let result = async {
        let admin = cluster.client(User::Admin).await?;
        let api = Api::<ValidatingWebhookConfiguration>::all(admin);
        let mut both = api.get("countersign").await?;
        let twins: Vec<_> = both
            .webhooks
            .iter()
            .flatten()
            .map(|hook| {
                let mut twin = hook.clone();
                twin.name = format!("twin-{}", hook.name);
                twin.client_config.url = hook.client_config.url.as_ref().map(|url| {
                    url.replace(&format!(":{}/", first.port), &format!(":{second_port}/"))
                });
                twin
            })
            .collect();
        both.webhooks.get_or_insert_with(Vec::new).extend(twins);
        both.metadata.managed_fields = None;
        api.replace("countersign", &Default::default(), &both)
            .await?;

        let policy_name = support::namespace::unique_name("twin");
        let _policy = apply_alice_policy(&policy_name, &ns)?;
        let web = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "web", "namespace": ns },
            "spec": { "selector": { "matchLabels": { "app": "web" } },
                "template": { "metadata": { "labels": { "app": "web" } },
                    "spec": { "containers": [{ "name": "web", "image": "nginx:1.27" }] } } },
        });
        let apply = || kubectl(User::Dave, &["apply", "-f", "-"], Some(&web));
        // Both deny and both open the request: one object.
        let started = Instant::now();
        loop {
            let out = apply()?;
            if text(&out).contains("approval required") {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(20),
                "not gated: {}",
                text(&out)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let listed = kubectl(
            User::Admin,
            &["get", "deploymentapprovals", "-n", &ns, "-o", "name"],
            None,
        )?;
        let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        ensure!(names.len() == 1, "one request, not {names:?}");
        let patch =
            json!([{ "op": "add", "path": "/spec/reviews/-", "value": { "decision": "Approve" } }])
                .to_string();
        let reviewed = kubectl(
            User::Alice,
            &["patch", &names[0], "-n", &ns, "--type=json", "-p", &patch],
            None,
        )?;
        ensure!(reviewed.status.success(), "{}", text(&reviewed));
        // The approved change is admitted at most one retry later, and consumed once.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let out = apply()?;
            if out.status.success() {
                break;
            }
            ensure!(
                text(&out).contains("retry") && attempts < 5,
                "{}",
                text(&out)
            );
        }
        let approval = kubectl(
            User::Admin,
            &["get", &names[0], "-n", &ns, "-o", "json"],
            None,
        )?;
        let approval: Value = serde_json::from_slice(&approval.stdout)?;
        // Admitted: Deploying, or already Deployed if the operator saw the rollout finish.
        ensure!(
            approval["status"]["phase"] == "Deploying" || approval["status"]["phase"] == "Deployed",
            "{approval}"
        );
        ensure!(
            approval["status"]["rollout"]["admissions"] == 1,
            "{approval}"
        );
        let judged = std::fs::read_to_string(&second_log)?;
        ensure!(
            judged.contains(r#"resource="deployments""#) && judged.contains("allowed=true"),
            "the second process judged no workload: {judged}"
        );
        // Both webhooks wrote entries at once and one leader linked them: one chain, no
        // fork (entries other tests wrote around countersign are outside it: not counted).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (_, out) = audit_verify("countersign-system", &["-o", "json"])?;
        let report: Value = serde_json::from_str(&out)?;
        let forks: Vec<&Value> = report["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|finding| finding["kind"] != "unchained")
            .collect();
        ensure!(forks.is_empty(), "the chain forked: {forks:?}");
        ensure!(report["entries"].as_u64().unwrap_or_default() > 0, "{out}");
        let _ = kubectl(
            User::Admin,
            &["delete", "approvalpolicy", &policy_name],
            None,
        );
        anyhow::Ok(())
    }
    .await;
    drop(twin);
    result?;
    assert!(first.terminate()?.success());
    Ok(())
}

/// A second `serve --webhook-only` beside a local one: the same ServiceAccount and
/// certificate, its own port; stopped when dropped.
struct Twin {
    child: Child,
    port: u16,
    kubeconfig: PathBuf,
    log: PathBuf,
}

impl Twin {
    fn start(first: &Local) -> Result<Twin> {
        Twin::start_with(first, &[])
    }

    /// With `extra` flags beside `--webhook-only`.
    fn start_with(first: &Local, extra: &[&str]) -> Result<Twin> {
        let kubeconfig = support::countersign::service_account_kubeconfig(
            "countersign-system",
            &format!("twin-{}", first.port),
        )?;
        let port = free_port()?;
        let dir = first.private_dir();
        let log = std::env::temp_dir().join(format!("countersign-twin-{port}.log"));
        let output = File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(["serve", "--webhook-only"])
            .args(extra)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(TestCluster::get().client_auth_args())
            .args(["--listen", &format!("127.0.0.1:{port}"), "--tls-cert"])
            .arg(dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("tls.key"))
            .env("RUST_LOG", "info,countersign=debug")
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()?;
        Ok(Twin {
            child,
            port,
            kubeconfig,
            log,
        })
    }

    /// Waits until it answers on /readyz.
    fn until_ready(&self) -> Result<()> {
        let started = Instant::now();
        loop {
            let ready = Command::new("curl")
                .args(["-sk", &format!("https://127.0.0.1:{}/readyz", self.port)])
                .output()?;
            if String::from_utf8_lossy(&ready.stdout) == "ok" {
                return Ok(());
            }
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the twin is not ready: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Twin {
    fn drop(&mut self) {
        let _ = signal(self.child.id(), "TERM");
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

#[tokio::test]
async fn two_replicas_never_admit_two_changes_of_one_object() -> Result<()> {
    use support::countersign::{Presenting, post_review};
    let _one = lock().await;
    let ns = TestNamespace::create("twin-lock", None).await?;
    let ns = ns.name().to_string();
    let first = Local::start(&[])?;
    support::countersign::grant_approvers(TestCluster::get())?;
    let twin = Twin::start(&first)?;
    twin.until_ready()?;
    let result = async {
        let web = |image: &str| {
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": "web", "namespace": ns },
                "spec": { "selector": { "matchLabels": { "app": "web" } },
                    "template": { "metadata": { "labels": { "app": "web" } },
                        "spec": { "nodeSelector": { "countersign.dev/test-node": "none" },
                            "containers": [{ "name": "web", "image": image }] } } },
            })
        };
        let created = kubectl(User::Admin, &["apply", "-f", "-"], Some(&web("nginx:1.25")))?;
        ensure!(created.status.success(), "{}", text(&created));
        let policy_name = support::namespace::unique_name("twin-lock");
        let _policy = apply_alice_policy(&policy_name, &ns)?;
        // Two different changes, each with an approved request.
        let mut reviews = Vec::new();
        for image in ["nginx:1.26", "nginx:1.27"] {
            let change = web(image);
            let started = Instant::now();
            let name = loop {
                let out = kubectl(User::Dave, &["apply", "-f", "-"], Some(&change))?;
                let said = text(&out);
                if let Some(name) = said
                    .split("kubectl countersign approve ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                {
                    break name.to_string();
                }
                ensure!(started.elapsed() < Duration::from_secs(20), "not gated: {said}");
                std::thread::sleep(Duration::from_millis(300));
            };
            let patch = json!([{ "op": "add", "path": "/spec/reviews/-",
                "value": { "decision": "Approve" } }])
            .to_string();
            let reviewed = kubectl(
                User::Alice,
                &["patch", "deploymentapproval", &name, "-n", &ns, "--type=json", "-p", &patch],
                None,
            )?;
            ensure!(reviewed.status.success(), "{}", text(&reviewed));
            // The change as the API server hands it to webhooks: defaulted, from a server
            // dry run (admitted without effect once approved).
            let started = Instant::now();
            let new = loop {
                let out = kubectl(
                    User::Dave,
                    &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
                    Some(&change),
                )?;
                if out.status.success() {
                    break serde_json::from_slice::<Value>(&out.stdout)?;
                }
                ensure!(
                    started.elapsed() < Duration::from_secs(20),
                    "never approved: {}",
                    text(&out)
                );
                std::thread::sleep(Duration::from_millis(300));
            };
            let old = kubectl(User::Admin, &["get", "deployment", "web", "-n", &ns, "-o", "json"], None)?;
            let old: Value = serde_json::from_slice(&old.stdout)?;
            let review = |uid: usize| {
                json!({
                    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "request": {
                        "uid": format!("{name}-{uid}"),
                        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                        "name": "web", "namespace": ns, "operation": "UPDATE",
                        "userInfo": {"username": "dave", "groups": ["developers", "system:authenticated"]},
                        "object": new, "oldObject": old,
                    },
                })
                .to_string()
            };
            let bodies: Vec<String> = (0..8).map(review).collect();
            reviews.push((name, bodies));
        }
        // Each change sent to both replicas at once, as two API servers would.
        let ports = [first.port, twin.port];
        let mut senders = Vec::new();
        for (change, (name, bodies)) in reviews.iter().enumerate() {
            for (i, body) in bodies.iter().enumerate() {
                let (port, name, body) = (ports[(i + change) % 2], name.clone(), body.clone());
                senders.push(tokio::task::spawn_blocking(move || {
                    let (code, answer) = post_review(
                        port,
                        "/validate/workloads",
                        body.as_bytes(),
                        Presenting::ApiServer,
                    )?;
                    ensure!(code == 200, "{code}: {answer}");
                    let answer: Value = serde_json::from_str(&answer)?;
                    anyhow::Ok((name, answer["response"]["allowed"] == true))
                }));
            }
        }
        let mut allowed = std::collections::BTreeSet::new();
        for sender in senders {
            let (name, admitted) = sender.await??;
            if admitted {
                allowed.insert(name);
            }
        }
        ensure!(
            allowed.len() <= 1,
            "both changes admitted by the two replicas: {allowed:?}"
        );
        // However the burst ended (every review may have been told "retry"), one more of
        // each, one after the other, admits exactly one change.
        for (change, (name, bodies)) in reviews.iter().enumerate() {
            let (code, answer) = post_review(
                ports[change % 2],
                "/validate/workloads",
                bodies[0].as_bytes(),
                Presenting::ApiServer,
            )?;
            ensure!(code == 200, "{code}: {answer}");
            let answer: Value = serde_json::from_str(&answer)?;
            if answer["response"]["allowed"] == true {
                allowed.insert(name.clone());
            }
        }
        ensure!(
            allowed.len() == 1,
            "exactly one change admitted by the two replicas: {allowed:?}"
        );
        let _ = kubectl(User::Admin, &["delete", "approvalpolicy", &policy_name], None);
        anyhow::Ok(())
    }
    .await;
    drop(twin);
    result?;
    assert!(first.terminate()?.success());
    Ok(())
}

#[tokio::test]
async fn audit_entries_are_deleted_when_their_retention_ends_and_not_before() -> Result<()> {
    let _one = lock().await;
    let local = Local::start(&["--audit-retention", "8s"])?;
    let name = support::namespace::unique_name("retained");
    let _policy = Policy { name: name.clone() };
    let policy = json!({
        "apiVersion": "countersign.dev/v1alpha1",
        "kind": "ApprovalPolicy",
        "metadata": { "name": name },
        "spec": { "match": { "namespaces": [support::namespace::unique_name("nowhere")] } },
    });
    let created = kubectl(User::Admin, &["create", "-f", "-"], Some(&policy))?;
    ensure!(created.status.success(), "{}", text(&created));
    let admin = TestCluster::get().client(User::Admin).await?;
    let entries = Api::<countersign::api::AuditEntry>::namespaced(admin, "countersign-system");
    let find = || async {
        anyhow::Ok(
            entries
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .find(|e| e.spec.policy.as_deref() == Some(name.as_str())),
        )
    };
    let started = Instant::now();
    let entry = loop {
        if let Some(entry) = find().await? {
            break entry;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "no PolicyCreated entry"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let entry_name = entry.metadata.name.clone().context("name")?;
    // Nobody else deletes it, retention or not.
    let refused = kubectl(
        User::Admin,
        &[
            "delete",
            "auditentry",
            &entry_name,
            "-n",
            "countersign-system",
        ],
        None,
    )?;
    ensure!(!refused.status.success(), "the admin deleted an AuditEntry");
    ensure!(
        text(&refused).contains("deleted only by countersign's retention"),
        "{}",
        text(&refused)
    );
    // Retention deletes it once 8 s have passed since it was recorded, not before.
    while find().await?.is_some() {
        ensure!(
            started.elapsed() < Duration::from_secs(40),
            "the entry outlived its retention: {}",
            local.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lived = jiff::Timestamp::now().duration_since(entry.spec.time.0);
    ensure!(
        lived >= jiff::SignedDuration::from_secs(8),
        "deleted {lived:#} after it was recorded"
    );
    let _ = kubectl(User::Admin, &["delete", "approvalpolicy", &name], None);
    ensure!(local.terminate()?.success());
    Ok(())
}

// Multi-threaded: the receiver answers while the test blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_killed_at_every_step_completes_and_loses_or_repeats_nothing() -> Result<()> {
    use support::receiver::{Receiver, SinkSecret};
    let _one = lock().await;
    let ns = TestNamespace::create("phoenix", None).await?;
    let ns = ns.name().to_string();
    let receiver = Receiver::start().await?;
    // The same replica name each time, as a restarted pod of a StatefulSet: it takes its
    // own lease back at once.
    let start = || Local::start(&["--replica", "phoenix"]);
    let mut serve = start()?;
    support::countersign::grant_approvers(TestCluster::get())?;
    // (After the first start: it makes the install namespace the Secrets live in.)
    // Level 1's receiver is slow to answer its first post: serve is killed while it waits.
    let leads = SinkSecret::create(&format!("{}/slow/leads", receiver.base))?;
    let sre = SinkSecret::create(&format!("{}/sre", receiver.base))?;
    let requester = SinkSecret::create(&format!("{}/requester", receiver.base))?;

    let policy_name = support::namespace::unique_name("phoenix");
    let _policy = Policy {
        name: policy_name.clone(),
    };
    let policy = json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
        "metadata": { "name": policy_name },
        "spec": { "match": { "namespaces": [ns] }, "approval": {
            "levels": [
                { "name": "leads", "approvers": [{ "user": "alice" }], "sinks": [leads.name] },
                { "name": "sre", "approvers": [{ "user": "carol" }], "sinks": [sre.name] },
            ],
            "requesterSinks": [requester.name],
        } },
    });
    ensure!(
        kubectl(User::Admin, &["apply", "-f", "-"], Some(&policy))?
            .status
            .success()
    );
    let v1 = web(&ns, "nginx:1.27");
    let result = async {
        // Killed right after the webhook opened the request.
        apply_until(User::Dave, &v1, "the request", |out| {
            text(out).contains("approval required")
        })?;
        serve.kill()?;
        serve = start()?;
        let listed = kubectl(
            User::Admin,
            &["get", "deploymentapprovals", "-n", &ns, "-o", "name"],
            None,
        )?;
        let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter_map(|l| {
                l.strip_prefix("deploymentapproval.countersign.dev/")
                    .map(str::to_string)
            })
            .collect();
        ensure!(names.len() == 1, "one request: {names:?}");
        let name = names[0].clone();
        // Killed right after each review.
        approve(User::Alice, &ns, &name)?;
        serve.kill()?;
        serve = start()?;
        approve(User::Carol, &ns, &name)?;
        serve.kill()?;
        serve = start()?;
        // Killed right after the admission.
        apply_until(User::Dave, &v1, "the admission", |out| out.status.success())?;
        serve.kill()?;
        serve = start()?;
        let done = approval_until(
            &ns,
            &name,
            "Deployed with every notice delivered",
            Duration::from_secs(90),
            |a| {
                a["status"]["phase"] == "Deployed"
                    && a["status"]["notifications"]
                        .as_array()
                        .is_some_and(|n| n.len() == 4 && n.iter().all(|r| r["delivered"] == true))
            },
        )?;
        // Every notice reached its receiver; none was recorded twice.
        let mut delivered: Vec<(String, String)> = receiver
            .posts()
            .into_iter()
            .filter(|p| p.accepted)
            .map(|p| (p.sink, p.event))
            .collect();
        delivered.sort();
        delivered.dedup();
        ensure!(
            delivered
                == [
                    ("requester".to_string(), "Approved".to_string()),
                    ("requester".to_string(), "Deployed".to_string()),
                    ("slow".to_string(), "LevelOpened".to_string()),
                    ("sre".to_string(), "LevelOpened".to_string()),
                ],
            "{delivered:?}"
        );
        // Delivery is at least once: every notice was answered, under one delivery id per
        // notice, so a receiver that drops ids it has seen acts on each exactly once. A
        // notice cut off by a kill is sent again (the slow one's first try); a kill between
        // a delivery and its record can repeat one, at most one per kill.
        let answered: Vec<String> = receiver
            .posts()
            .into_iter()
            .filter(|p| p.accepted)
            .map(|p| p.delivery)
            .collect();
        let mut distinct = answered.clone();
        distinct.sort();
        distinct.dedup();
        ensure!(distinct.len() == 4, "{:?}", receiver.posts());
        ensure!(
            answered.len() <= 4 + 4,
            "more repeats than kills: {:?}",
            receiver.posts()
        );
        let slow: Vec<(bool, u32)> = receiver
            .posts()
            .iter()
            .filter(|p| p.sink == "slow")
            .map(|p| (p.accepted, p.try_number))
            .collect();
        ensure!(
            slow.first() == Some(&(false, 1)) && slow.iter().skip(1).any(|(accepted, _)| *accepted),
            "the notice cut off by the kill is sent again after the restart: {slow:?}"
        );
        // And none is recorded twice.
        let records = done["status"]["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut keys: Vec<String> = records
            .iter()
            .map(|r| format!("{} {} {}", r["sink"], r["level"], r["event"]))
            .collect();
        keys.sort();
        keys.dedup();
        ensure!(keys.len() == records.len(), "{records:?}");
        ensure!(done["status"]["rollout"]["admissions"] == 1, "{done}");
        // The trail: each step once, by its actor.
        let steps = request_steps(&ns, &name)?;
        let mut expected: Vec<(String, String)> = [
            ("Requested", "dave"),
            ("ReviewRecorded", "alice"),
            ("ReviewRecorded", "carol"),
            ("LevelSatisfied", "alice"),
            ("LevelSatisfied", "carol"),
            ("Approved", "carol"),
            ("Admitted", "dave"),
            ("Deployed", "system:countersign"),
        ]
        .iter()
        .map(|(a, u)| (a.to_string(), u.to_string()))
        .collect();
        expected.sort();
        ensure!(steps == expected, "the trail: {steps:?}");
        // Killed once more after the rollout: the new process plans the trail from the
        // finished status (its lock released) and finds every entry there, the Admitted one
        // included, once it has reconciled every request it found at start.
        let requests = kubectl(
            User::Admin,
            &["get", "deploymentapprovals", "-A", "-o", "name"],
            None,
        )?;
        let requests = String::from_utf8_lossy(&requests.stdout).lines().count();
        serve.kill()?;
        serve = start()?;
        reconciled_until(serve.port, "approvals", requests)?;
        let steps = request_steps(&ns, &name)?;
        ensure!(
            steps == expected,
            "the trail after a restart once Deployed: {steps:?}"
        );
        anyhow::Ok(())
    }
    .await;
    let _ = kubectl(
        User::Admin,
        &["delete", "approvalpolicy", &policy_name],
        None,
    );
    if let Err(error) = result {
        bail!("{error:#}\nlast serve log:\n{}", serve.log_text());
    }
    ensure!(serve.terminate()?.success());
    Ok(())
}

#[tokio::test]
async fn a_killed_leader_is_replaced_by_the_other_process_within_the_lease() -> Result<()> {
    let _one = lock().await;
    let ns = TestNamespace::create("takeover", None).await?;
    let ns = ns.name().to_string();
    let mut first = Local::start(&["--replica", "first"])?;
    support::countersign::grant_approvers(TestCluster::get())?;
    let admin = TestCluster::get().client(User::Admin).await?;
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        admin.clone(),
        "countersign-system",
    );
    let holder = || async {
        anyhow::Ok(
            leases
                .get_opt("countersign-operator")
                .await?
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity),
        )
    };
    let started = Instant::now();
    while holder().await?.as_deref() != Some("first") {
        ensure!(
            started.elapsed() < Duration::from_secs(40),
            "first never led"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The second process: countersign's identity and the first's certificate, its own port,
    // webhook and operator both.
    let kubeconfig = support::countersign::service_account_kubeconfig(
        "countersign-system",
        &format!("second-{}", first.port),
    )?;
    let second_port = free_port()?;
    let dir = first.private_dir();
    let certs = std::env::temp_dir().join(format!("countersign-second-{second_port}"));
    std::fs::create_dir_all(&certs)?;
    for file in ["tls.crt", "tls.key"] {
        std::fs::copy(dir.join(file), certs.join(file))?;
    }
    let second_log = std::env::temp_dir().join(format!("countersign-second-{second_port}.log"));
    let log = File::create(&second_log)?;
    let mut second = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--replica", "second", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(TestCluster::get().client_auth_args())
        .args([
            "--listen",
            &format!("127.0.0.1:{second_port}"),
            "--tls-cert",
        ])
        .arg(certs.join("tls.crt"))
        .arg("--tls-key")
        .arg(certs.join("tls.key"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let policy_name = support::namespace::unique_name("takeover");
    let result = async {
        let _policy = apply_alice_policy(&policy_name, &ns)?;
        apply_until(User::Dave, &web(&ns, "nginx:1.27"), "the request", |out| text(out).contains("approval required"))?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        ensure!(holder().await?.as_deref() == Some("first"), "one leader, the first");

        // The leader dies; the API server is pointed at the survivor.
        let killed = Instant::now();
        first.kill()?;
        for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
            let out = kubectl(User::Admin, &["get", kind, "countersign", "-o", "json"], None)?;
            let text_json = String::from_utf8_lossy(&out.stdout)
                .replace(&format!("127.0.0.1:{}/", first_port_of(&out)?), &format!("127.0.0.1:{second_port}/"));
            let mut object: Value = serde_json::from_str(&text_json)?;
            object["metadata"]["managedFields"] = Value::Null;
            ensure!(kubectl(User::Admin, &["replace", "-f", "-"], Some(&object))?.status.success());
        }
        while holder().await?.as_deref() != Some("second") {
            ensure!(
                killed.elapsed() < Duration::from_secs(18),
                "no takeover within the 15 s lease (counted from the last renewal, before the kill) and one poll of the follower: {}",
                std::fs::read_to_string(&second_log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let took = killed.elapsed();
        // The survivor reconciles: alice's approval is recorded by its operator.
        let listed = kubectl(User::Admin, &["get", "deploymentapprovals", "-n", &ns, "-o", "name"], None)?;
        let name = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("deploymentapproval.countersign.dev/").map(str::to_string))
            .context("the request")?;
        approve(User::Alice, &ns, &name)?;
        approval_until(&ns, &name, "Approved by the new leader", Duration::from_secs(20), |a| {
            a["status"]["phase"] == "Approved"
        })?;
        eprintln!("took over {took:?} after the kill");
        anyhow::Ok(())
    }
    .await;
    let _ = kubectl(
        User::Admin,
        &["delete", "approvalpolicy", &policy_name],
        None,
    );
    let _ = signal(second.id(), "TERM");
    let _ = second.wait();
    let _ = std::fs::remove_file(&kubeconfig);
    let _ = std::fs::remove_dir_all(&certs);
    for kind in [
        "validatingwebhookconfiguration",
        "mutatingwebhookconfiguration",
    ] {
        let _ = kubectl(
            User::Admin,
            &["delete", kind, "countersign", "--ignore-not-found"],
            None,
        );
    }
    result
}

/// The port of the first webhook URL in a configuration's JSON (`kubectl get -o json`).
fn first_port_of(out: &Output) -> Result<u16> {
    let object: Value = serde_json::from_slice(&out.stdout)?;
    let url = object["webhooks"][0]["clientConfig"]["url"]
        .as_str()
        .context("a webhook URL")?;
    let port = url
        .trim_start_matches("https://127.0.0.1:")
        .split('/')
        .next()
        .context("a port")?;
    Ok(port.parse()?)
}

#[tokio::test]
async fn while_countersign_is_down_only_gated_kinds_in_gated_namespaces_are_held_up() -> Result<()>
{
    let _one = lock().await;
    let gated = TestNamespace::create("down", None).await?;
    let gated = gated.name().to_string();
    let free = TestNamespace::create("free", None).await?;
    let free = free.name().to_string();
    // A Deployment in the gated namespace, made before the policy.
    let web_gated = web(&gated, "nginx:1.27");
    ensure!(
        kubectl(User::Admin, &["apply", "-f", "-"], Some(&web_gated))?
            .status
            .success()
    );
    let mut serve = Local::start(&[])?;
    let policy_name = support::namespace::unique_name("down");
    let _policy = apply_alice_policy(&policy_name, &gated)?;
    let result = async {
        // The gated namespace is labelled, the other is not.
        let label = |ns: &str| -> Result<String> {
            let out = kubectl(
                User::Admin,
                &[
                    "get",
                    "namespace",
                    ns,
                    "-o",
                    "jsonpath={.metadata.labels.countersign\\.dev/gated}",
                ],
                None,
            )?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let started = Instant::now();
        while label(&gated)? != "true" {
            ensure!(
                started.elapsed() < Duration::from_secs(20),
                "the gated namespace is never labelled"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        ensure!(label(&free)?.is_empty(), "an ungated namespace is labelled");

        // countersign dies without cleaning up: its configurations stay registered.
        serve.kill()?;

        // A change in the gated namespace is refused, naming countersign's webhook.
        let refused = kubectl(
            User::Dave,
            &["apply", "-f", "-"],
            Some(&web(&gated, "nginx:1.28")),
        )?;
        ensure!(
            !refused.status.success(),
            "a gated change passed while countersign is down"
        );
        ensure!(
            text(&refused).contains("workloads.countersign.dev"),
            "the refusal names countersign: {}",
            text(&refused)
        );
        // Everything else is untouched: another namespace, kube-system, countersign's own.
        ensure!(
            kubectl(
                User::Dave,
                &["apply", "-f", "-"],
                Some(&web(&free, "nginx:1.28"))
            )?
            .status
            .success(),
            "a namespace no policy gates is held up"
        );
        for system in ["kube-system", "countersign-system"] {
            let mut repair = web(system, "nginx:1.27");
            repair["metadata"]["name"] = json!("countersign-down-test");
            let out = kubectl(User::Admin, &["apply", "-f", "-"], Some(&repair))?;
            ensure!(out.status.success(), "{system} is held up: {}", text(&out));
            let _ = kubectl(
                User::Admin,
                &[
                    "delete",
                    "deployment",
                    "countersign-down-test",
                    "-n",
                    system,
                    "--wait=false",
                ],
                None,
            );
        }
        // The workload controllers keep working in the gated namespace: a deleted Pod comes
        // back.
        let pods = |ns: &str| -> Result<Vec<String>> {
            let out = kubectl(
                User::Admin,
                &["get", "pods", "-n", ns, "-l", "app=web", "-o", "name"],
                None,
            )?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect())
        };
        let started = Instant::now();
        let before = loop {
            let found = pods(&gated)?;
            if !found.is_empty() {
                break found;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "web never got a Pod"
            );
            std::thread::sleep(Duration::from_millis(300));
        };
        ensure!(
            kubectl(
                User::Dave,
                &["delete", &before[0], "-n", &gated, "--wait=false"],
                None
            )?
            .status
            .success()
        );
        let started = Instant::now();
        loop {
            let now = pods(&gated)?;
            if now.iter().any(|p| !before.contains(p)) {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the ReplicaSet controller was held up: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        // Namespaces stay writable, but for their labels: a relabel could take one out of a
        // policy's reach, and nobody could name its author afterwards, so it waits for
        // countersign.
        let annotated = kubectl(
            User::Admin,
            &["annotate", "namespace", &free, "team=shop"],
            None,
        )?;
        ensure!(annotated.status.success(), "{}", text(&annotated));
        for ns in [&free, &gated] {
            let relabelled = kubectl(User::Admin, &["label", "namespace", ns, "team=shop"], None)?;
            ensure!(
                !relabelled.status.success()
                    && text(&relabelled).contains("namespace-labels.countersign.dev"),
                "{ns} relabelled while countersign is down: {}",
                text(&relabelled)
            );
            // Through the status subresource, which writes labels too.
            let relabelled = kubectl(
                User::Admin,
                &[
                    "patch",
                    "namespace",
                    ns,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"labels":{"team":"shop"}}}"#,
                ],
                None,
            )?;
            ensure!(
                !relabelled.status.success()
                    && text(&relabelled).contains("namespace-labels.countersign.dev"),
                "{ns} relabelled through its status while countersign is down: {}",
                text(&relabelled)
            );
        }
        anyhow::Ok(())
    }
    .await;
    // Back up, then a clean stop removes the configurations.
    serve = Local::start(&[])?;
    let _ = kubectl(
        User::Admin,
        &["delete", "approvalpolicy", &policy_name],
        None,
    );
    ensure!(serve.terminate()?.success());
    result
}

/// A TCP proxy to the API server that can hold its answers back, to play a slow API server
/// (TLS passes through untouched).
struct SlowProxy {
    port: u16,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SlowProxy {
    async fn start(upstream: std::net::SocketAddr) -> Result<SlowProxy> {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let delay = delay_ms.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let delay = delay.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    });
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(read) = server_read.read(&mut buffer).await {
                        if read == 0 {
                            break;
                        }
                        let wait = delay.load(Ordering::Relaxed);
                        if wait > 0 {
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                        }
                        if client_write.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                    up.abort();
                });
            }
        });
        Ok(SlowProxy { port, delay_ms })
    }

    fn hold_answers(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_api_server_gets_a_reasoned_denial_within_the_webhooks_own_budget() -> Result<()> {
    let _one = lock().await;
    let ns = TestNamespace::create("slow", None).await?;
    let ns = ns.name().to_string();
    // countersign reaches the API server through the proxy; everyone else directly.
    let view = kubectl(
        User::Admin,
        &["config", "view", "--raw", "--minify", "-o", "json"],
        None,
    )?;
    let mut config: Value = serde_json::from_slice(&view.stdout)?;
    let server = config["clusters"][0]["cluster"]["server"]
        .as_str()
        .context("a server URL")?
        .to_string();
    let upstream: std::net::SocketAddr = server.trim_start_matches("https://").parse()?;
    let proxy = SlowProxy::start(upstream).await?;
    config["clusters"][0]["cluster"]["server"] = json!(format!("https://127.0.0.1:{}", proxy.port));
    let kubeconfig =
        std::env::temp_dir().join(format!("countersign-slow-{}.kubeconfig", proxy.port));
    std::fs::write(&kubeconfig, config.to_string())?;
    let serve = Local::start_with(&kubeconfig, &[])?;
    let policy_name = support::namespace::unique_name("slow");
    let _policy = apply_alice_policy(&policy_name, &ns)?;
    let result = async {
        let v1 = web(&ns, "nginx:1.27");
        let started = Instant::now();
        while !text(&kubectl(
            User::Dave,
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&v1),
        )?)
        .contains("approval required")
        {
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the policy never gates"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        // The API server now takes 8 s to answer countersign; the API server gives the
        // webhook 10 s. The webhook's own writes and reads give up after 3 s and say so.
        proxy.hold_answers(Duration::from_secs(8));
        let started = Instant::now();
        let out = kubectl(User::Dave, &["apply", "-f", "-"], Some(&v1))?;
        let took = started.elapsed();
        ensure!(
            !out.status.success(),
            "passed without a request: {}",
            text(&out)
        );
        ensure!(
            text(&out).contains("did not answer within"),
            "a denial with the reason: {}",
            text(&out)
        );
        ensure!(
            took < Duration::from_secs(8),
            "answered after {took:?}, not within the webhook's own budget"
        );
        proxy.hold_answers(Duration::ZERO);
        anyhow::Ok(())
    }
    .await;
    proxy.hold_answers(Duration::ZERO);
    let _ = kubectl(
        User::Admin,
        &["delete", "approvalpolicy", &policy_name],
        None,
    );
    let stopped = serve.terminate();
    let _ = std::fs::remove_file(&kubeconfig);
    result?;
    ensure!(stopped?.success());
    Ok(())
}

/// Applies policy `name`: changes in `namespace` need alice's approval. The policy is
/// deleted when the returned guard drops, so a test that fails leaves none behind for
/// the next to find in its trail.
fn apply_alice_policy(name: &str, namespace: &str) -> Result<Policy> {
    let policy = json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
        "metadata": { "name": name },
        "spec": { "match": { "namespaces": [namespace] },
            "approval": { "levels": [{ "name": "leads", "approvers": [{ "user": "alice" }] }] } },
    });
    let out = kubectl(User::Admin, &["apply", "-f", "-"], Some(&policy))?;
    ensure!(
        out.status.success(),
        "applying policy {name}: {}",
        text(&out)
    );
    Ok(Policy {
        name: name.to_string(),
    })
}

/// Waits until the operator's lease has a holder (its controllers then run).
async fn until_leading() -> Result<()> {
    let admin = TestCluster::get().client(User::Admin).await?;
    let leases =
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin, "countersign-system");
    let started = Instant::now();
    loop {
        let holder = leases
            .get_opt("countersign-operator")
            .await?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        if holder.is_some() {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(40),
            "nobody took the operator's lease"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An AuditEntry about a webhook configuration: (action, kind, actor, reason).
type ConfigurationEntry = (String, String, String, String);

/// The AuditEntries about countersign's webhook configurations, by name.
async fn configuration_entries() -> Result<Vec<(String, ConfigurationEntry)>> {
    let admin = TestCluster::get().client(User::Admin).await?;
    let entries = Api::<countersign::api::AuditEntry>::namespaced(admin, "countersign-system")
        .list(&Default::default())
        .await?;
    Ok(entries
        .items
        .into_iter()
        .filter(|e| e.spec.target.kind.ends_with("WebhookConfiguration"))
        .map(|e| {
            (
                e.metadata.name.clone().unwrap_or_default(),
                (
                    format!("{:?}", e.spec.action),
                    e.spec.target.kind.clone(),
                    e.spec.actor.username.clone(),
                    e.spec.reason.clone().unwrap_or_default(),
                ),
            )
        })
        .collect())
}

/// The names of the entries about webhook configurations so far.
async fn configuration_entry_names() -> Result<Vec<String>> {
    Ok(configuration_entries()
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// Waits for an entry about a webhook configuration that `matches`, written after the
/// `before` entries; returns it.
async fn configuration_entry_until(
    what: &str,
    before: &[String],
    matches: impl Fn(&ConfigurationEntry) -> bool,
) -> Result<ConfigurationEntry> {
    let started = Instant::now();
    loop {
        let found = configuration_entries()
            .await?
            .into_iter()
            .find(|(name, e)| !before.contains(name) && matches(e))
            .map(|(_, e)| e);
        if let Some(entry) = found {
            return Ok(entry);
        }
        ensure!(
            started.elapsed() < Duration::from_secs(20),
            "no {what}: {:?}",
            configuration_entries().await?
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `serve` on `port` reports its validating configuration intact (1) or not (0).
fn validating_intact_until(port: u16, value: u8) -> Result<()> {
    let gauge = "countersign_webhook_configuration_intact{configuration=\"ValidatingWebhookConfiguration\"}";
    let wanted = format!("{gauge} {value}");
    let started = Instant::now();
    loop {
        let metrics = metrics_of(port)?;
        if metrics.lines().any(|l| l == wanted) {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(20),
            "never {wanted}: {}",
            metrics
                .lines()
                .find(|l| l.starts_with(gauge))
                .unwrap_or("(no such gauge)")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// May countersign's ServiceAccount do `verb` on `resource` (in any namespace)?
fn can_i(verb: &str, resource: &str) -> Result<bool> {
    support::countersign::service_account_can_i("countersign-system", verb, resource, &["-A"])
}

/// The API server never sends webhook configurations to a webhook, so the operator watches
/// its own two. Without --restore-webhook-configurations a change (failing open) and a
/// deletion are audited, with an Event and the metric, and left as they are.
#[tokio::test]
async fn a_changed_or_deleted_webhook_configuration_is_audited() -> Result<()> {
    let _one = lock().await;
    let local = Local::start(&[])?;
    until_leading().await?;
    ensure!(
        !can_i("create", "validatingwebhookconfigurations")?,
        "countersign may create webhook configurations without being asked to restore them"
    );
    let before = configuration_entry_names().await?;
    // The operator has compared once (it was registered before the operator was armed).
    validating_intact_until(local.port, 1)?;

    // The workloads webhook (the first) fails open.
    let patch =
        json!([{ "op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore" }]);
    support::webhook::patch_countersign_configuration(&patch)?;
    let (_, kind, actor, reason) = configuration_entry_until("changed entry", &before, |e| {
        e.0 == "WebhookConfigurationChanged"
    })
    .await?;
    assert_eq!(kind, "ValidatingWebhookConfiguration");
    assert_eq!(actor, "unknown", "the API server does not say who");
    assert!(
        reason.contains(r#"workloads.countersign.dev: failurePolicy "Fail" → "Ignore""#)
            && reason.contains("kubectl-patch"),
        "{reason}"
    );
    validating_intact_until(local.port, 0)?;
    let events = kubectl(
        User::Admin,
        &[
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            "reason=WebhookConfigurationChanged,involvedObject.kind=ValidatingWebhookConfiguration",
            "-o",
            "json",
        ],
        None,
    )?;
    let events: Value = serde_json::from_slice(&events.stdout)?;
    assert!(
        events["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|e| e["type"] == "Warning")),
        "{events}"
    );
    // Audited, not restored: it stays as the administrator left it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (validating, _) = configurations().await?;
    let workloads = validating
        .and_then(|c| c.webhooks)
        .and_then(|hooks| hooks.into_iter().next())
        .context("the workloads webhook")?;
    assert_eq!(workloads.failure_policy.as_deref(), Some("Ignore"));

    // Deleted.
    let out = kubectl(
        User::Admin,
        &["delete", "mutatingwebhookconfiguration", "countersign"],
        None,
    )?;
    ensure!(out.status.success(), "{}", text(&out));
    let (_, kind, _, _) = configuration_entry_until("deleted entry", &before, |e| {
        e.0 == "WebhookConfigurationDeleted"
    })
    .await?;
    assert_eq!(kind, "MutatingWebhookConfiguration");
    assert!(
        !configuration_entries()
            .await?
            .iter()
            .any(|(name, e)| e.0 == "WebhookConfigurationRestored" && !before.contains(name)),
        "restored without being asked to"
    );
    assert!(local.terminate()?.success());
    Ok(())
}

/// With --restore-webhook-configurations the operator also puts them back: a webhook
/// loosened so that labelled objects skip it, and a deleted configuration. It does not put
/// them back when its own process removes them on exit.
#[tokio::test]
async fn with_restore_a_loosened_or_deleted_webhook_configuration_is_put_back() -> Result<()> {
    let _one = lock().await;
    let local = Local::start(&["--restore-webhook-configurations"])?;
    until_leading().await?;
    ensure!(can_i("create", "validatingwebhookconfigurations")?);
    ensure!(can_i(
        "update",
        "validatingwebhookconfigurations/countersign"
    )?);
    ensure!(!can_i(
        "update",
        "validatingwebhookconfigurations/someone-else"
    )?);
    ensure!(!can_i(
        "delete",
        "validatingwebhookconfigurations/countersign"
    )?);
    let before = configuration_entry_names().await?;
    let (installed, _) = configurations().await?;
    let installed = installed.context("the validating configuration")?;

    // Objects labelled skip=yes no longer reach the workloads webhook.
    let patch = json!([{ "op": "add", "path": "/webhooks/0/objectSelector",
        "value": { "matchExpressions": [{ "key": "skip", "operator": "NotIn", "values": ["yes"] }] } }]);
    support::webhook::patch_countersign_configuration(&patch)?;
    let (_, _, _, reason) = configuration_entry_until("changed entry", &before, |e| {
        e.0 == "WebhookConfigurationChanged"
    })
    .await?;
    assert!(
        reason.contains("workloads.countersign.dev: objectSelector"),
        "{reason}"
    );
    let (_, kind, actor, reason) = configuration_entry_until("restored entry", &before, |e| {
        e.0 == "WebhookConfigurationRestored"
    })
    .await?;
    assert_eq!(kind, "ValidatingWebhookConfiguration");
    assert_eq!(
        actor,
        "system:serviceaccount:countersign-system:countersign"
    );
    assert!(reason.contains("objectSelector"), "{reason}");
    let (restored, _) = configurations().await?;
    let restored = restored.context("the validating configuration")?;
    assert_eq!(
        restored.webhooks.as_ref().map(Vec::len),
        installed.webhooks.as_ref().map(Vec::len)
    );
    for hook in restored.webhooks.iter().flatten() {
        assert!(
            hook.object_selector
                .as_ref()
                .is_none_or(|s| s.match_expressions.is_none() && s.match_labels.is_none()),
            "{}: {:?}",
            hook.name,
            hook.object_selector
        );
    }

    // Deleted, and created again as installed.
    let before = configuration_entry_names().await?;
    let out = kubectl(
        User::Admin,
        &["delete", "validatingwebhookconfiguration", "countersign"],
        None,
    )?;
    ensure!(out.status.success(), "{}", text(&out));
    configuration_entry_until("deleted entry", &before, |e| {
        e.0 == "WebhookConfigurationDeleted"
    })
    .await?;
    let (_, _, _, reason) = configuration_entry_until("restored entry", &before, |e| {
        e.0 == "WebhookConfigurationRestored"
    })
    .await?;
    assert!(reason.contains("missing"), "{reason}");
    let (again, _) = configurations().await?;
    let again = again.context("the validating configuration, created again")?;
    assert_ne!(again.metadata.uid, installed.metadata.uid);
    let prefix = format!("https://127.0.0.1:{}/", local.port);
    for hook in again.webhooks.iter().flatten() {
        let url = hook.client_config.url.as_deref().unwrap_or_default();
        assert!(url.starts_with(&prefix), "{}: {url}", hook.name);
        assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    }

    // As installed again: the restore ends there (no loop of restores).
    validating_intact_until(local.port, 1)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restores = configuration_entries()
        .await?
        .into_iter()
        .filter(|(name, e)| e.0 == "WebhookConfigurationRestored" && !before.contains(name))
        .count();
    assert_eq!(restores, 1, "one restore for one deletion");

    // A configuration that says a newer countersign made it (a chart applied before its
    // image, an upgrade rolling out) is left to that version: recorded as its change, not
    // restored, so the two do not undo each other.
    let before = configuration_entry_names().await?;
    let newer = json!([
        { "op": "add", "path": "/metadata/annotations/countersign.dev~1version", "value": "99.0.0" },
        { "op": "add", "path": "/webhooks/0/objectSelector",
          "value": { "matchLabels": { "next-version": "only" } } },
    ]);
    support::webhook::patch_countersign_configuration(&newer)?;
    let (action, _, actor, reason) =
        configuration_entry_until("newer version's entry", &before, |e| {
            e.0 == "WebhookConfigurationChanged"
        })
        .await?;
    assert_eq!(
        (action.as_str(), actor.as_str()),
        ("WebhookConfigurationChanged", "unknown")
    );
    assert!(
        reason.starts_with(&format!(
            "made by countersign 99.0.0, newer than this {}: left to it",
            env!("CARGO_PKG_VERSION")
        )) && reason.contains("workloads.countersign.dev: objectSelector"),
        "{reason}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (left, _) = configurations().await?;
    let left = left.context("the validating configuration")?;
    let selector = left
        .webhooks
        .iter()
        .flatten()
        .next()
        .and_then(|h| h.object_selector.clone());
    assert!(
        selector.is_some_and(|s| s.match_labels.is_some()),
        "not restored over the newer version's"
    );
    assert!(
        !configuration_entries()
            .await?
            .iter()
            .any(|(name, e)| e.0 == "WebhookConfigurationRestored" && !before.contains(name)),
        "no restore"
    );

    // The attack on that: an annotation that is no version does not make countersign look
    // away. It is a change like any other, restored, with this version's annotation.
    let before = configuration_entry_names().await?;
    let garbage = json!([
        { "op": "replace", "path": "/metadata/annotations/countersign.dev~1version", "value": "latest" },
    ]);
    support::webhook::patch_countersign_configuration(&garbage)?;
    let (_, _, _, reason) = configuration_entry_until("changed entry", &before, |e| {
        e.0 == "WebhookConfigurationChanged"
    })
    .await?;
    assert!(
        reason.starts_with("workloads.countersign.dev: objectSelector"),
        "{reason}"
    );
    configuration_entry_until("restored entry", &before, |e| {
        e.0 == "WebhookConfigurationRestored"
    })
    .await?;
    validating_intact_until(local.port, 1)?;
    let (restored, _) = configurations().await?;
    let annotations = restored
        .context("the validating configuration")?
        .metadata
        .annotations
        .unwrap_or_default();
    assert_eq!(
        annotations
            .get("countersign.dev/version")
            .map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );

    // Its own exit removes them, and nothing puts them back.
    let before = configuration_entry_names().await?;
    assert!(local.terminate()?.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (validating, mutating) = configurations().await?;
    assert!(validating.is_none() && mutating.is_none());
    assert_eq!(configuration_entry_names().await?, before);
    Ok(())
}

/// Issue 22: a held Flux sync whose change set was approved while countersign's operator
/// was not running (here: a webhook-only process, then killed) is resumed by the next
/// countersign that runs one, from what the set records: nothing else remembers it.
#[tokio::test]
async fn a_sync_approved_while_no_operator_ran_is_resumed_when_one_runs() -> Result<()> {
    let _one = lock().await;
    let flux = support::gitops::Flux::get();
    let ns = TestNamespace::create("fluxback", None).await?;
    let ns = ns.name();
    // countersign first: local mode installs the CRDs a fresh cluster lacks.
    let mut first = Local::start(&["--gitops"])?;
    support::countersign::grant_approvers(TestCluster::get())?;
    let _policy = support::flow::Policy::apply(ns, flux.gated_chain())?;
    support::flow::until_gated(&web(ns, "nginx:1.27")).await?;

    let mut api = web(ns, "api:2.0");
    api["metadata"]["name"] = json!("api");
    let commit = flux.commit(ns, &[web(ns, "nginx:1.27"), api], "web and api")?;
    flux.kustomization(ns, "apps", ns, "10m")?;
    flux.tried(ns, "apps", &commit, "False").await?;
    let (set, members) = until("the sync's set", Duration::from_secs(20), || async {
        let sets = support::flow::change_sets(ns).await?;
        let opened = support::flow::approvals(ns).await?;
        Ok(match sets.first().and_then(|s| s.metadata.name.clone()) {
            Some(set) if opened.len() == 2 => Poll::Ready((
                set,
                opened
                    .iter()
                    .filter_map(|a| a.metadata.name.clone())
                    .collect::<Vec<_>>(),
            )),
            _ => Poll::Pending(format!("{} sets, {} requests", sets.len(), opened.len())),
        })
    })
    .await?;
    // countersign goes down; a webhook-only process (no operator) answers while the
    // approvers approve the set, so nothing resumes the sync (Flux itself would in 10
    // minutes).
    first.kill()?;
    let mut webhook_only = Local::start(&["--gitops", "--webhook-only"])?;
    approve_object(User::Alice, ns, "changeset", &set)?;
    approve_object(User::Carol, ns, "changeset", &set)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !deployment_exists(ns)?,
        "applied without countersign's resume"
    );
    webhook_only.kill()?;

    let _back = Local::start(&["--gitops"])?;
    let started = Instant::now();
    until(
        "the approved sync applied",
        Duration::from_secs(30),
        || async {
            Ok(if deployment_exists(ns)? {
                Poll::Ready(())
            } else {
                Poll::Pending("not applied".into())
            })
        },
    )
    .await?;
    eprintln!(
        "gitops: applied {:?} after the operator came back",
        started.elapsed()
    );
    for name in &members {
        support::flow::status_until(ns, name, "Deployed", |s| {
            s.phase == countersign::api::ApprovalPhase::Deployed
        })
        .await?;
    }
    let status = support::flow::change_sets(ns)
        .await?
        .into_iter()
        .find(|s| s.metadata.name.as_deref() == Some(set.as_str()))
        .and_then(|s| s.status)
        .unwrap_or_default();
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "SyncResumed" && c.status == "True"),
        "{status:?}"
    );
    Ok(())
}

/// Issue 22: the API server spreads a sync's concurrent dry runs over the replicas, so each
/// sees part of the round. Here the split is forced (each replica's workloads webhook sees
/// only objects labelled its half); when Flux reports the hold the replicas share their
/// parts, and the commit still opens one set, approved once per level.
#[tokio::test]
async fn a_sync_split_across_two_replicas_opens_one_set() -> Result<()> {
    let _one = lock().await;
    let flux = support::gitops::Flux::get();
    let ns = TestNamespace::create("fluxsplit", None).await?;
    let ns = ns.name();
    // countersign first: local mode installs the CRDs a fresh cluster lacks.
    let first = Local::start(&["--gitops"])?;
    support::countersign::grant_approvers(TestCluster::get())?;
    let _policy = support::flow::Policy::apply(ns, flux.gated_chain())?;
    let twin = Twin::start_with(&first, &["--gitops"])?;
    twin.until_ready()?;
    let half = |name: &str, half: &str| {
        let mut object = web(ns, "nginx:1.27");
        object["metadata"]["name"] = json!(name);
        object["metadata"]["labels"] = json!({ "half": half });
        object
    };
    let admin = TestCluster::get().client(User::Admin).await?;
    let configurations = Api::<ValidatingWebhookConfiguration>::all(admin);
    let mut split = configurations.get("countersign").await?;
    let only = |hook: &mut k8s_openapi::api::admissionregistration::v1::ValidatingWebhook,
                half: &str| {
        let selector = hook.object_selector.get_or_insert_with(Default::default);
        selector
            .match_expressions
            .get_or_insert_with(Vec::new)
            .push(LabelSelectorRequirement {
                key: "half".into(),
                operator: "In".into(),
                values: Some(vec![half.into()]),
            });
    };
    let hooks = split.webhooks.get_or_insert_with(Vec::new);
    let workloads = hooks
        .iter_mut()
        .find(|h| h.name == "workloads.countersign.dev")
        .context("the workloads webhook")?;
    let mut twins = workloads.clone();
    only(workloads, "a");
    twins.name = "twin-workloads.countersign.dev".into();
    twins.client_config.url = twins
        .client_config
        .url
        .as_ref()
        .map(|url| url.replace(&format!(":{}/", first.port), &format!(":{}/", twin.port)));
    only(&mut twins, "b");
    hooks.push(twins);
    split.metadata.managed_fields = None;
    configurations
        .replace("countersign", &Default::default(), &split)
        .await?;
    support::flow::until_gated(&half("web", "a")).await?;
    support::flow::until_gated(&half("api", "b")).await?;

    let commit = flux.commit(ns, &[half("web", "a"), half("api", "b")], "web and api")?;
    flux.kustomization(ns, "apps", ns, "10m")?;
    flux.tried(ns, "apps", &commit, "False").await?;
    let (set, members) = until(
        "one set of both halves",
        Duration::from_secs(30),
        || async {
            let sets = support::flow::change_sets(ns).await?;
            let opened = support::flow::approvals(ns).await?;
            Ok(match sets.as_slice() {
                [set] if opened.len() == 2 && set.spec.members.len() == 2 => {
                    Poll::Ready((set.clone(), opened))
                }
                _ => Poll::Pending(format!(
                    "{} sets ({:?}), {} requests",
                    sets.len(),
                    sets.iter()
                        .map(|s| s.spec.members.len())
                        .collect::<Vec<_>>(),
                    opened.len()
                )),
            })
        },
    )
    .await?;
    let set = set.metadata.name.clone().context("a set name")?;
    for member in &members {
        ensure!(
            member.spec.change_set.as_deref() == Some(set.as_str()),
            "{:?} is not in {set}",
            member.metadata.name
        );
    }
    // Each replica saw one half: the first judged web, the twin api.
    let twin_log = std::fs::read_to_string(&twin.log)?;
    ensure!(
        twin_log.contains("opened the requests of a held sync") && twin_log.contains("seen_here=1"),
        "the twin opened nothing of its own half: {twin_log}"
    );

    approve_object(User::Alice, ns, "changeset", &set)?;
    approve_object(User::Carol, ns, "changeset", &set)?;
    until("both halves applied", Duration::from_secs(30), || async {
        let both = ["web", "api"].iter().all(|name| {
            kubectl(
                User::Admin,
                &[
                    "get",
                    "deployment",
                    name,
                    "-n",
                    ns,
                    "--ignore-not-found",
                    "-o",
                    "name",
                ],
                None,
            )
            .map(|out| !String::from_utf8_lossy(&out.stdout).trim().is_empty())
            .unwrap_or(false)
        });
        Ok(if both {
            Poll::Ready(())
        } else {
            Poll::Pending("not applied".into())
        })
    })
    .await?;
    drop(twin);
    Ok(())
}

fn deployment_exists(ns: &str) -> Result<bool> {
    let out = kubectl(
        User::Admin,
        &[
            "get",
            "deployment",
            "web",
            "-n",
            ns,
            "--ignore-not-found",
            "-o",
            "name",
        ],
        None,
    )?;
    ensure!(out.status.success(), "{}", text(&out));
    Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty())
}

/// The trail's entries in `install` by their place in the chain (unlinked ones last).
async fn chained_entries(install: &str) -> Result<Vec<countersign::api::AuditEntry>> {
    let admin = TestCluster::get().client(User::Admin).await?;
    let mut entries = Api::<countersign::api::AuditEntry>::namespaced(admin, install)
        .list(&Default::default())
        .await?
        .items;
    entries.sort_by_key(|e| {
        e.status
            .as_ref()
            .and_then(|s| s.link.as_ref())
            .map_or(u64::MAX, |l| l.sequence)
    });
    Ok(entries)
}

/// Deletes the test's install namespace (and its trail) when the test ends.
/// The tamper-evident trail: a clean trail verifies; with countersign stopped (its webhook
/// configurations gone, as an administrator could arrange), an entry deleted, one's reason
/// edited, two entries' links swapped, one inserted and the newest two deleted after a
/// checkpoint are each named by `countersign audit verify`, by sequence number, against the
/// checkpoints the leader appended to a file outside the cluster. A leader started again
/// leaves the inserted entry out of the chain and goes on from the chain's head.
#[tokio::test]
async fn each_tampering_with_the_audit_trail_is_found_by_audit_verify() -> Result<()> {
    let _one = lock().await;
    let install = support::namespace::unique_name("chain");
    let _cleanup = InstallNamespace(install.clone());
    let checkpoints = std::env::temp_dir().join(format!("{install}.checkpoints"));
    let checkpoints_arg = checkpoints.display().to_string();
    // Checkpoints also go to a URL (the flag) and to a sink a policy names (auditSinks).
    let receiver = support::receiver::Receiver::start().await?;
    let url_arg = format!("{}/flag-url", receiver.base);
    let args = [
        "--install-namespace",
        &install,
        "--audit-checkpoint-entries",
        "4",
        "--audit-checkpoint-interval",
        "1s",
        "--audit-checkpoint-file",
        &checkpoints_arg,
        "--audit-checkpoint-url",
        &url_arg,
    ];
    let local = Local::start(&args)?;
    let sink = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "audit-copies", "namespace": install },
        "stringData": { "url": format!("{}/audit-copies", receiver.base) },
    });
    let made = kubectl(User::Admin, &["apply", "-f", "-"], Some(&sink))?;
    ensure!(made.status.success(), "{}", text(&made));
    // Eight entries: four policies created, and each changed; the first names the sink.
    let mut policies = Vec::new();
    let mut guards = Vec::new();
    for i in 0..4 {
        let name = support::namespace::unique_name("chained");
        guards.push(Policy { name: name.clone() });
        let mut policy = json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
            "metadata": { "name": name },
            "spec": { "match": { "namespaces": [support::namespace::unique_name("nowhere")] } },
        });
        if i == 0 {
            policy["spec"]["auditSinks"] = json!(["audit-copies"]);
        }
        let created = kubectl(User::Admin, &["create", "-f", "-"], Some(&policy))?;
        ensure!(created.status.success(), "{}", text(&created));
        let changed = kubectl(
            User::Admin,
            &[
                "patch",
                "approvalpolicy",
                &name,
                "--type=merge",
                "-p",
                r#"{"spec":{"priority":3}}"#,
            ],
            None,
        )?;
        ensure!(changed.status.success(), "{}", text(&changed));
        policies.push(name);
    }
    let started = Instant::now();
    let head = loop {
        let (code, out) = audit_verify(&install, &["-o", "json", "--checkpoint", &checkpoints_arg])
            .unwrap_or((None, String::new()));
        let report: Value = serde_json::from_str(&out).unwrap_or_default();
        let entries = report["entries"].as_u64().unwrap_or_default();
        let signed = report["checkpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["sequence"].as_u64())
            .max()
            .unwrap_or_default();
        // The trail may also hold entries this `serve` recorded as it started (for objects
        // earlier suites left): wait until the policies' eight are linked, not any eight.
        let own = chained_entries(&install)
            .await?
            .iter()
            .filter(|e| {
                policies.contains(&e.spec.target.name)
                    && e.status.as_ref().is_some_and(|s| s.link.is_some())
            })
            .count();
        if code == Some(0) && own >= 8 && signed == entries {
            break entries;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the clean trail never verified with a checkpoint of all of it: {out}\n{}",
            local.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (code, out) = audit_verify(&install, &[])?;
    ensure!(code == Some(0) && out.starts_with("OK: "), "{out}");
    // The sink's copies are signed by the published key.
    let published = kubectl(
        User::Admin,
        &[
            "get",
            "configmap",
            "countersign-audit-key",
            "-n",
            &install,
            "-o",
            "jsonpath={.data.verifierKey}",
        ],
        None,
    )?;
    let verifier = countersign::core::audit::note::Verifier::parse(&String::from_utf8_lossy(
        &published.stdout,
    ))?;
    let started = Instant::now();
    loop {
        let copies: Vec<u64> = receiver
            .posts()
            .iter()
            .filter(|post| post.sink == "audit-copies" && post.event == "AuditCheckpoint")
            .filter_map(|post| {
                let note = post.body["checkpoint"].as_str()?;
                let text = verifier.open(note).ok()?;
                countersign::core::audit::note::parse_checkpoint(text)
                    .ok()
                    .map(|c| c.head.sequence)
            })
            .collect();
        let posted = receiver.posts().iter().any(|post| {
            post.sink == "flag-url"
                && post.accepted
                && post.event == "AuditCheckpoint"
                && post.delivery == format!("checkpoint-{head}")
        });
        if copies.contains(&head) && posted {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "no signed checkpoint of {head} entries at the policy's sink ({copies:?}) and the flag's URL"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ensure!(local.terminate()?.success());

    // countersign is stopped; the admin tampers.
    let entries = chained_entries(&install).await?;
    let name = |i: usize| entries[i].metadata.name.clone().unwrap_or_default();
    let run = |args: &[&str]| -> Result<()> {
        let mut all = args.to_vec();
        all.extend(["-n", install.as_str()]);
        let out = kubectl(User::Admin, &all, None)?;
        ensure!(out.status.success(), "{all:?}: {}", text(&out));
        Ok(())
    };
    run(&["delete", "auditentry", &name(1)])?;
    run(&[
        "patch",
        "auditentry",
        &name(3),
        "--type=merge",
        "-p",
        r#"{"spec":{"reason":"nothing happened"}}"#,
    ])?;
    let link = |i: usize| {
        serde_json::to_string(
            &json!({ "status": { "link": entries[i].status.as_ref().and_then(|s| s.link.clone()) } }),
        )
    };
    run(&[
        "patch",
        "auditentry",
        &name(4),
        "--subresource=status",
        "--type=merge",
        "-p",
        &link(5)?,
    ])?;
    run(&[
        "patch",
        "auditentry",
        &name(5),
        "--subresource=status",
        "--type=merge",
        "-p",
        &link(4)?,
    ])?;
    let mut forged = serde_json::to_value(&entries[0])?;
    forged["metadata"] = json!({ "name": "forged-entry", "namespace": install });
    forged["status"] = Value::Null;
    let created = kubectl(User::Admin, &["create", "-f", "-"], Some(&forged))?;
    ensure!(created.status.success(), "{}", text(&created));
    let last = head as usize - 1;
    run(&["delete", "auditentry", &name(last), &name(last - 1)])?;

    let (code, out) = audit_verify(
        &install,
        &[
            "-o",
            "json",
            "--grace",
            "0s",
            "--checkpoint",
            &checkpoints_arg,
        ],
    )?;
    ensure!(code == Some(1), "exit {code:?}: {out}");
    let report: Value = serde_json::from_str(&out)?;
    let found: Vec<String> = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            format!(
                "{} {} {}",
                f["kind"].as_str().unwrap_or_default(),
                f["from"]
                    .as_u64()
                    .or(f["sequence"].as_u64())
                    .unwrap_or_default(),
                f["to"].as_u64().unwrap_or_default()
            )
        })
        .collect();
    let expected = vec![
        "missing 2 2".to_string(),
        "edited 4 0".into(),
        "moved 6 5".into(),
        "moved 5 6".into(),
        format!("missing {} {}", head - 1, head),
        "unchained 0 0".into(),
    ];
    ensure!(
        found == expected,
        "found {found:?}, expected {expected:?}: {out}"
    );
    ensure!(
        report["findings"][4]["why"]
            .as_str()
            .is_some_and(|why| why.contains("newest entries were deleted")),
        "{out}"
    );
    let (code, out) = audit_verify(&install, &["--grace", "0s"])?;
    ensure!(code == Some(1), "{out}");
    for needle in [
        "TAMPERED: 6 finding(s)",
        "missing: entry 2 (deleted from within the chain)",
        &format!("edited: entry 4 ({})", name(3)),
        "inserted: forged-entry is in no place in the chain",
    ] {
        ensure!(out.contains(needle), "no {needle:?} in:\n{out}");
    }
    // A checkpoint file checked with another key is bad input, not a verdict.
    let stranger = std::env::temp_dir().join(format!("{install}.stranger-key"));
    std::fs::write(
        &stranger,
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW\n",
    )?;
    let stranger_arg = stranger.display().to_string();
    let (code, out) = audit_verify(
        &install,
        &[
            "--public-key",
            &stranger_arg,
            "--checkpoint",
            &checkpoints_arg,
        ],
    )?;
    ensure!(
        code == Some(2) && out.contains("--checkpoint"),
        "exit {code:?}: {out}"
    );

    // A leader again: the inserted entry stays out; a new entry follows the recorded head.
    let local = Local::start(&args)?;
    let _ = kubectl(
        User::Admin,
        &["delete", "approvalpolicy", &policies[0]],
        None,
    )?;
    let started = Instant::now();
    let deleted_head = entries[last]
        .status
        .as_ref()
        .and_then(|s| s.link.as_ref())
        .map(|l| l.hash.clone())
        .context("the deleted head's link")?;
    let next = loop {
        let entries = chained_entries(&install).await?;
        let deletion = entries
            .iter()
            .find(|e| e.spec.action == countersign::api::AuditAction::PolicyDeleted);
        if let Some(link) = deletion.and_then(|e| e.status.as_ref()?.link.as_ref()) {
            ensure!(link.sequence > head, "{link:?}");
            break entries
                .into_iter()
                .filter_map(|e| e.status?.link)
                .find(|l| l.sequence == head + 1)
                .context("no entry follows the recorded head")?;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the policy's deletion was never linked: {}",
            local.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // It follows the head the leader recorded, not the newest entry left in the trail.
    ensure!(next.previous == deleted_head, "{next:?}");
    let forged = chained_entries(&install)
        .await?
        .into_iter()
        .find(|e| e.metadata.name.as_deref() == Some("forged-entry"))
        .context("the forged entry")?;
    ensure!(
        forged.status.and_then(|s| s.link).is_none(),
        "the leader linked an entry countersign never wrote"
    );
    ensure!(
        local
            .log_text()
            .contains("without countersign's writer seal"),
        "{}",
        local.log_text()
    );
    for name in &policies[1..] {
        let _ = kubectl(User::Admin, &["delete", "approvalpolicy", name], None);
    }
    ensure!(local.terminate()?.success());
    let _ = std::fs::remove_file(&checkpoints);
    let _ = std::fs::remove_file(&stranger);
    Ok(())
}

/// Retention removes only the oldest part of the chain and signs where the rest begins: the
/// trail still verifies after entries went, and a kept entry deleted is still found.
#[tokio::test]
async fn a_trail_thinned_by_retention_still_verifies() -> Result<()> {
    let _one = lock().await;
    let install = support::namespace::unique_name("retain");
    let _cleanup = InstallNamespace(install.clone());
    let local = Local::start(&["--install-namespace", &install, "--audit-retention", "6s"])?;
    let policy = |name: &str| {
        json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
            "metadata": { "name": name },
            "spec": { "match": { "namespaces": [support::namespace::unique_name("nowhere")] } },
        })
    };
    let old = support::namespace::unique_name("old");
    let mut guards = vec![Policy { name: old.clone() }];
    let created = kubectl(User::Admin, &["create", "-f", "-"], Some(&policy(&old)))?;
    ensure!(created.status.success(), "{}", text(&created));
    // Until the old entries are gone, a newer one is kept.
    let started = Instant::now();
    let mut newer = Vec::new();
    let first = loop {
        let name = support::namespace::unique_name("new");
        guards.push(Policy { name: name.clone() });
        let created = kubectl(User::Admin, &["create", "-f", "-"], Some(&policy(&name)))?;
        ensure!(created.status.success(), "{}", text(&created));
        newer.push(name);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (code, out) = audit_verify(&install, &["-o", "json", "--grace", "0s"])?;
        let report: Value = serde_json::from_str(&out).unwrap_or_default();
        ensure!(code == Some(0), "the thinned trail did not verify: {out}");
        let first = report["first"].as_u64().unwrap_or_default();
        if first > 1 && report["anchor"]["sequence"].as_u64() == Some(first) {
            break first;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "retention never removed the oldest entries: {out}\n{}",
            local.log_text()
        );
    };
    ensure!(local.terminate()?.success());
    // A kept entry deleted around countersign is still a gap.
    let kept = chained_entries(&install)
        .await?
        .into_iter()
        .find(|e| {
            e.status
                .as_ref()
                .and_then(|s| s.link.as_ref())
                .is_some_and(|l| l.sequence == first)
        })
        .context("the first kept entry")?;
    let deleted = kubectl(
        User::Admin,
        &[
            "delete",
            "auditentry",
            kept.metadata.name.as_deref().unwrap_or_default(),
            "-n",
            &install,
        ],
        None,
    )?;
    ensure!(deleted.status.success(), "{}", text(&deleted));
    let (code, out) = audit_verify(&install, &["--grace", "0s"])?;
    ensure!(
        code == Some(1) && out.contains(&format!("missing: entry {first}")),
        "exit {code:?}: {out}"
    );
    for name in std::iter::once(&old).chain(&newer) {
        let _ = kubectl(User::Admin, &["delete", "approvalpolicy", name], None);
    }
    Ok(())
}

/// The chain survives its sealer being killed at any moment: `serve` (the leader) is
/// SIGKILLed five times while entries are written, at random points of its sealing, and
/// started again; the trail then verifies with every entry in it, no gap, no entry twice.
#[tokio::test]
async fn a_sealer_killed_mid_write_leaves_a_chain_that_verifies() -> Result<()> {
    let _one = lock().await;
    let install = support::namespace::unique_name("killed");
    let _cleanup = InstallNamespace(install.clone());
    let args = [
        "--install-namespace",
        install.as_str(),
        "--replica",
        "phoenix",
        "--audit-checkpoint-entries",
        "3",
    ];
    let mut serve = Local::start(&args)?;
    let mut policies = Vec::new();
    let mut guards = Vec::new();
    let seed = std::process::id() as u64;
    for round in 0..5u64 {
        // A burst of policy changes, each an entry; killed a moment into its sealing.
        for _ in 0..6 {
            let name = support::namespace::unique_name("burst");
            guards.push(Policy { name: name.clone() });
            let policy = json!({
                "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
                "metadata": { "name": name },
                "spec": { "match": { "namespaces": [support::namespace::unique_name("nowhere")] } },
            });
            if kubectl(User::Admin, &["create", "-f", "-"], Some(&policy))?
                .status
                .success()
            {
                policies.push(name);
            }
        }
        let pause = (seed.wrapping_mul(round + 7) % 900) + 50;
        std::thread::sleep(Duration::from_millis(pause));
        serve.kill()?;
        serve = Local::start(&args)?;
    }
    let written = policies.len();
    let started = Instant::now();
    loop {
        let (code, out) = audit_verify(&install, &["-o", "json", "--grace", "0s"])?;
        let report: Value = serde_json::from_str(&out).unwrap_or_default();
        let entries = report["entries"].as_u64().unwrap_or_default() as usize;
        let listed = chained_entries(&install).await?.len();
        if code == Some(0) && entries == listed && entries >= written {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "after 5 kills the chain does not verify whole ({entries} of {listed} entries linked, {written} policies written): {out}\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Killed exactly between claiming a batch and linking it: the record claims the newest
    // entry, whose link is not in it yet. The next leader links it as claimed. (Made with
    // the webhook configurations out of the way: the killed process left them behind.)
    serve.kill()?;
    for kind in [
        "validatingwebhookconfiguration",
        "mutatingwebhookconfiguration",
    ] {
        let _ = kubectl(User::Admin, &["delete", kind, "countersign"], None)?;
    }
    let newest = chained_entries(&install)
        .await?
        .into_iter()
        .rfind(|e| e.status.as_ref().and_then(|s| s.link.as_ref()).is_some())
        .context("a linked entry")?;
    let claimed = newest.status.and_then(|s| s.link).context("its link")?;
    let name = newest.metadata.name.context("its name")?;
    let unlinked = kubectl(
        User::Admin,
        &[
            "patch",
            "auditentry",
            &name,
            "-n",
            &install,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"link":null}}"#,
        ],
        None,
    )?;
    ensure!(unlinked.status.success(), "{}", text(&unlinked));
    let serve = Local::start(&args)?;
    let started = Instant::now();
    loop {
        let relinked = chained_entries(&install)
            .await?
            .into_iter()
            .find(|e| e.metadata.name.as_deref() == Some(name.as_str()))
            .and_then(|e| e.status?.link);
        if let Some(link) = relinked {
            ensure!(
                link == claimed,
                "relinked as {link:?}, claimed as {claimed:?}"
            );
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the claimed entry was never linked: {}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (code, out) = audit_verify(&install, &["--grace", "0s"])?;
    ensure!(code == Some(0), "{out}");
    for name in &policies {
        let _ = kubectl(User::Admin, &["delete", "approvalpolicy", name], None);
    }
    ensure!(serve.terminate()?.success());
    Ok(())
}

/// `/readyz` of `serve` on `port`: (HTTP status, body).
fn readyz(port: u16) -> Result<(String, String)> {
    let out = Command::new("curl")
        .args([
            "-sk",
            "-w",
            "\n%{http_code}",
            &format!("https://127.0.0.1:{port}/readyz"),
        ])
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = said.rsplit_once('\n').unwrap_or((&said, ""));
    Ok((code.to_string(), body.to_string()))
}

/// Waits until `/readyz` answers `code`; its body.
fn readyz_until(port: u16, code: &str, limit: Duration) -> Result<String> {
    let started = Instant::now();
    loop {
        let (now, body) = readyz(port)?;
        if now == code {
            return Ok(body);
        }
        ensure!(
            started.elapsed() < limit,
            "/readyz is {now} ({body}), not {code}, after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `kubectl VERB serviceaccount countersign` in countersign-system, as the admin: the
/// token test takes countersign's credentials away with it and gives them back.
fn countersign_service_account(verb: &str) -> Result<Output> {
    kubectl(
        User::Admin,
        &[
            verb,
            "serviceaccount",
            "countersign",
            "-n",
            "countersign-system",
        ],
        None,
    )
}

/// The request a denied apply names.
fn request_named(out: &Output) -> Option<String> {
    text(out)
        .split("kubectl countersign approve ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
}

/// The token `serve` runs with is refused and cannot be renewed, for longer than a renewal
/// retry: `/readyz` says so (503, with the reason) and the gauge is 1; the webhook goes on
/// answering from its caches (a pending change is still "approval required") and denies,
/// with a reason, what it cannot record (an approved change's admission, a new request),
/// admitting nothing; once renewal works again the same process is ready and the held
/// changes go through. A TokenRequest token cannot live less than 10 minutes, so its end
/// is made the way the API server sees every expired token: the ServiceAccount it was
/// issued for is deleted, which refuses the token at once and fails each renewal (no
/// ServiceAccount to issue for) until it is made again.
#[tokio::test]
async fn a_refused_token_turns_readyz_false_and_renewal_brings_all_back() -> Result<()> {
    let _one = lock().await;
    let ns = TestNamespace::create("refused", None).await?;
    let ns = ns.name().to_string();
    let deployments: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let mut object = web(&ns, "nginx:1.26");
            object["metadata"]["name"] = json!(name);
            object
        })
        .collect();
    for object in &deployments {
        let out = kubectl(User::Admin, &["apply", "-f", "-"], Some(object))?;
        ensure!(out.status.success(), "{}", text(&out));
    }
    let changed = |object: &Value| {
        let mut object = object.clone();
        object["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.27");
        object
    };
    let (a, b, c) = (
        changed(&deployments[0]),
        changed(&deployments[1]),
        changed(&deployments[2]),
    );
    let mut local = Local::start(&["--replica", "refused"])?;
    support::countersign::grant_approvers(TestCluster::get())?;
    let policy_name = support::namespace::unique_name("refused");
    let result = async {
        let _policy = apply_alice_policy(&policy_name, &ns)?;
        let ready = kubectl(
            User::Admin,
            &[
                "wait",
                "--for=condition=Ready",
                &format!("approvalpolicy/{policy_name}"),
                "--timeout=60s",
            ],
            None,
        )?;
        ensure!(ready.status.success(), "{}", text(&ready));
        // Before: a approved, b pending.
        let asked = apply_until(User::Dave, &a, "a's request", |out| {
            request_named(out).is_some()
        })?;
        let a_request = request_named(&asked).context("a's request")?;
        approve(User::Alice, &ns, &a_request)?;
        approval_until(
            &ns,
            &a_request,
            "a Approved",
            Duration::from_secs(30),
            |r| r["status"]["phase"] == "Approved",
        )?;
        let asked = apply_until(User::Dave, &b, "b's request", |out| {
            request_named(out).is_some()
        })?;
        let b_request = request_named(&asked).context("b's request")?;
        ensure!(readyz(local.port)?.0 == "200");

        // The token's end.
        let deleted = countersign_service_account("delete")?;
        ensure!(deleted.status.success(), "{}", text(&deleted));
        let refused_at = Instant::now();
        let reason = readyz_until(local.port, "503", Duration::from_secs(30))?;
        let noticed = refused_at.elapsed();
        ensure!(
            reason.contains("refused countersign's credentials"),
            "{reason}"
        );
        ensure!(
            metrics_of(local.port)?
                .lines()
                .any(|l| l == "countersign_api_credentials_refused 1"),
            "the gauge is not 1"
        );
        // Meanwhile: b is still pending (answered from the caches), a's admission and c's
        // request cannot be recorded and are denied with a reason; nothing is admitted.
        let mut answers = Vec::new();
        for (what, object) in [("pending b", &b), ("approved a", &a), ("new c", &c)] {
            let out = kubectl(User::Dave, &["apply", "-f", "-"], Some(object))?;
            ensure!(
                !out.status.success(),
                "{what} admitted while the token is refused"
            );
            let said = text(&out);
            let reason = said.rsplit("denied the request: ").next().unwrap_or(&said);
            answers.push(format!("{what}: {}", reason.trim()));
        }
        ensure!(
            answers[0].contains(&format!("approval {b_request} is pending")),
            "the pending change is not answered from the caches: {answers:?}"
        );
        // Renewal keeps failing past its retry.
        std::thread::sleep(Duration::from_secs(15));
        ensure!(
            local
                .log_text()
                .contains("could not renew the ServiceAccount token"),
            "no failed renewal logged"
        );
        ensure!(readyz(local.port)?.0 == "503");
        let refused_for = refused_at.elapsed();

        // Renewal works again: the ServiceAccount is back.
        let made = countersign_service_account("create")?;
        ensure!(made.status.success(), "{}", text(&made));
        let back_at = Instant::now();
        readyz_until(local.port, "200", Duration::from_secs(120))?;
        let recovered = back_at.elapsed();
        apply_until(User::Dave, &a, "a admitted", |out| out.status.success())?;
        approval_until(
            &ns,
            &a_request,
            "a Deployed",
            Duration::from_secs(90),
            |r| r["status"]["phase"] == "Deployed",
        )?;
        approve(User::Alice, &ns, &b_request)?;
        apply_until(User::Dave, &b, "b admitted", |out| out.status.success())?;
        apply_until(User::Dave, &c, "c's request", |out| {
            request_named(out).is_some()
        })?;
        ensure!(local.child.try_wait()?.is_none(), "serve exited");
        println!(
            "faults: token refused: /readyz 503 after {noticed:?}; refused for {refused_for:?}, \
             renewal failing; denied meanwhile: {answers:?}; ready {recovered:?} after renewal \
             worked again; serve never restarted"
        );
        anyhow::Ok(())
    }
    .await;
    let _ = kubectl(
        User::Admin,
        &["delete", "approvalpolicy", &policy_name],
        None,
    );
    // The ServiceAccount back whatever happened, for the tests after this one.
    let _ = countersign_service_account("create");
    if let Err(error) = result {
        bail!("{error:#}\nlast serve log:\n{}", local.log_text());
    }
    ensure!(local.terminate()?.success());
    Ok(())
}
