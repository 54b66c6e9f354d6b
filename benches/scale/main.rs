//! countersign at a production cluster's size (issue 24): from a seed, 50 kwok nodes, 100
//! namespaces, 1,000 Deployments, 10,000 DeploymentApprovals in every phase with their
//! reviews, 100,000 AuditEntries, 5,000 RoleBindings and 50 policies are written as admin
//! straight to the API server (`fill`); then `countersign serve --local` (this build, a
//! release one under `cargo bench`) is started and measured: resident memory steady and at
//! peak (a relist after the API server restarts included), seconds to `/readyz`, admission
//! p50/p99 through the API server from 10 clients against no webhook in the same run,
//! operator lag (review written → status written), API requests per second at rest, and
//! approvals created and reviewed end to end per second. It ends with one line:
//!
//! `scale: approvals=N rss_steady_mib=X rss_peak_mib=Y ready_s=Z admission_p50_ratio=R operator_lag_p99_s=L`
//!
//! Run on a fresh cluster: `tests/cluster/up && cargo bench --bench scale` (numbers in
//! BENCHMARKS.md). `COUNTERSIGN_SCALE_SEED`, `_APPROVALS`, `_AUDIT_ENTRIES`,
//! `_DEPLOYMENTS`, `_NAMESPACES`, `_ROLE_BINDINGS`, `_POLICIES`, `_NODES` change the sizes;
//! `COUNTERSIGN_SCALE_GROWTH=0` leaves out the growth figures (memory per extra approval,
//! AuditEntry and ungated Deployment, each from a fresh `serve`), which take about ten
//! minutes more.

#[path = "../../tests/integration/support/mod.rs"]
#[allow(dead_code)]
mod support;

mod fill;

use std::collections::BTreeMap;
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use countersign::api::DeploymentApproval;
use countersign::install::DEFAULT_INSTALL_NAMESPACE;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use fill::Sizes;
use support::{TestCluster, TestNamespace, User};

const ADMISSION_CLIENTS: usize = 10;
const ADMISSION_WRITES: usize = 100;
const ADMISSION_ROUNDS: usize = 5;
const LAG_CLIENTS: usize = 10;
const LAG_CYCLES: usize = 10;
const SETTLE: Duration = Duration::from_secs(20);
/// Requests per second above the baseline that still count as at rest.
const REST_MARGIN: f64 = 5.0;
/// How long start-up work may take before the benchmark measures anyway.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);
const AT_REST: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

fn setting(name: &str, default: u64) -> Result<u64> {
    match std::env::var(format!("COUNTERSIGN_SCALE_{name}")) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("COUNTERSIGN_SCALE_{name}={value} is not a number")),
        Err(_) => Ok(default),
    }
}

async fn run() -> Result<()> {
    let sizes = Sizes {
        seed: setting("SEED", 2026)?,
        nodes: setting("NODES", 50)? as usize,
        namespaces: setting("NAMESPACES", 100)? as usize,
        deployments: setting("DEPLOYMENTS", 1_000)? as usize,
        approvals: setting("APPROVALS", 10_000)? as usize,
        audit_entries: setting("AUDIT_ENTRIES", 100_000)? as usize,
        role_bindings: setting("ROLE_BINDINGS", 5_000)? as usize,
        policies: setting("POLICIES", 50)? as usize,
        first_namespace: 0,
    };
    let cluster = TestCluster::get();
    let admin = cluster.client(User::Admin).await?;
    ensure!(
        Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .get_opt("countersign")
            .await?
            .is_none(),
        "a countersign webhook is already registered; stop it first (the benchmark wants a fresh cluster: tests/cluster/up)"
    );
    println!("{sizes:?}");

    // The CRDs, as serve --local would install them, so that the objects can be written first.
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
    let applied = cluster.kubectl_output(
        User::Admin,
        &["apply", "--server-side", "--force-conflicts", "-f", crds],
        None,
    )?;
    ensure!(
        applied.status.success(),
        "applying {crds}: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let established = cluster.kubectl_output(
        User::Admin,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            crds,
        ],
        None,
    )?;
    ensure!(
        established.status.success(),
        "the CRDs not established: {}",
        String::from_utf8_lossy(&established.stderr)
    );

    // The install namespace and the seal key, as serve would make them, so that the requests'
    // summaries carry countersign's own seal.
    let namespaces = Api::<Namespace>::all(admin.clone());
    if namespaces
        .get_opt(DEFAULT_INSTALL_NAMESPACE)
        .await?
        .is_none()
    {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({ "metadata": { "name": DEFAULT_INSTALL_NAMESPACE } }),
                )?,
            )
            .await?;
    }
    let key = Arc::new(
        countersign::serve::seal_key::load_or_create(&admin, DEFAULT_INSTALL_NAMESPACE).await,
    );
    let filled = fill::fill(&admin, sizes, &key, DEFAULT_INSTALL_NAMESPACE).await?;
    println!(
        "filled: {} objects in {:.0} s ({:.0}/s), {} of the AuditEntries the requests' own trails",
        filled.written,
        filled.took.as_secs_f64(),
        filled.written as f64 / filled.took.as_secs_f64(),
        filled.planned_entries
    );
    let linking = Instant::now();
    let linked = fill::link_all(&admin, DEFAULT_INSTALL_NAMESPACE).await?;
    println!(
        "linked the trail's {linked} entries into the audit chain in {:.0} s",
        linking.elapsed().as_secs_f64()
    );

    // The namespaces measured: one gated by a policy whose checks pass (the allow path), one
    // no policy reaches (the API server does not call the webhook), and one for the lag.
    let gated = TestNamespace::create("scale-admit", None).await?;
    let open = TestNamespace::create("scale-open", None).await?;
    let lag = TestNamespace::create("scale-lag", None).await?;
    let policies = Api::<countersign::api::ApprovalPolicy>::all(admin.clone());
    for (name, spec) in [
        (
            format!("scale-admit-{}", gated.name()),
            json!({ "match": { "namespaces": [gated.name()] }, "checks": { "secretDetection": true } }),
        ),
        (
            format!("scale-lag-{}", lag.name()),
            json!({ "match": { "namespaces": [lag.name()] },
            "approval": { "levels": [{ "name": "leads", "approvers": [{ "user": "alice" }] }] } }),
        ),
    ] {
        let policy = json!({ "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
            "metadata": { "name": name }, "spec": spec });
        policies
            .create(&PostParams::default(), &serde_json::from_value(policy)?)
            .await?;
    }
    for ns in [gated.name(), open.name()] {
        let probe = probe_deployment(ns, "1.0");
        Api::<Deployment>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &probe)
            .await?;
    }

    let baseline = request_rate(cluster, AT_REST).await?;
    println!("API requests at rest before countersign: {baseline:.1}/s");

    // countersign, measured from its start.
    let port = support::countersign::free_port()?;
    let log = std::env::temp_dir().join(format!("countersign-scale-{}.log", std::process::id()));
    let started = Instant::now();
    let mut serve = Serve::start(cluster, port, File::create(&log)?)?;
    let sampler = Sampler::start(serve.pid());
    let ready = wait_ready(&mut serve, port, &log).await?;
    println!("ready (/readyz) {:.1} s after start", ready.as_secs_f64());
    support::countersign::grant_approvers(cluster)?;
    wait_gated(&admin, gated.name()).await?;
    // At rest once the operator's start-up work is done: the API server's request rate
    // back within REST_MARGIN of what it was without countersign (bounded).
    let settled = settle(cluster, baseline, started).await?;
    let how = if settled < SETTLE_LIMIT {
        format!("settled {:.0} s after start", settled.as_secs_f64())
    } else {
        format!(
            "NOT settled {:.0} s after start, measured anyway",
            settled.as_secs_f64()
        )
    };
    println!(
        "{how} (the API server's request rate back within {REST_MARGIN}/s of the baseline); resident then {:.1} MiB, at most {:.1} MiB before",
        sampler.median_since(Instant::now() - Duration::from_secs(5)),
        sampler.max_since(started)
    );
    tokio::time::sleep(SETTLE).await;
    let rest_started = Instant::now();
    let at_rest = request_rate(cluster, AT_REST).await?;
    let steady = sampler.median_since(rest_started);
    println!(
        "at rest: resident {steady:.1} MiB (median over {} s), API requests {:.1}/s above the {baseline:.1}/s without countersign",
        AT_REST.as_secs(),
        at_rest - baseline
    );

    let admission = admission(cluster, gated.name(), open.name()).await?;
    println!(
        "admission through the API server, {ADMISSION_CLIENTS} clients, {} writes each: no webhook p50 {:.2} ms p99 {:.2} ms; countersign p50 {:.2} ms p99 {:.2} ms; p50 ratio {:.2}",
        ADMISSION_WRITES * ADMISSION_ROUNDS,
        admission.open.0,
        admission.open.1,
        admission.gated.0,
        admission.gated.1,
        admission.gated.0 / admission.open.0
    );

    let writes_before = request_counts(cluster)?;
    let lag_result = operator_lag(cluster, lag.name()).await?;
    // What each cycle's trail and status settle into, then counted.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes = writes_per(
        &writes_before,
        &request_counts(cluster)?,
        lag_result.lags.len(),
    );
    println!(
        "writes per approval cycle (denied create → request → review → Approved; alice's review, and the cluster's own lease renewals, included): {writes}"
    );
    println!(
        "operator lag (review written → status Approved), {} requests: p50 {:.2} s p99 {:.2} s; end to end {:.1} approvals/s (denied create → request → review → Approved, {LAG_CLIENTS} at once)",
        lag_result.lags.len(),
        lag_result.p50,
        lag_result.p99,
        lag_result.per_second
    );

    let chain = chain_rate(cluster, &key).await?;
    println!("{chain}");

    // A relist: the API server restarted, every watch of countersign's ends and starts over
    // from a list (the new API server's watch cache knows no earlier resourceVersion).
    let relist_started = Instant::now();
    restart_apiserver(cluster).await?;
    wait_ready(&mut serve, port, &log).await?;
    tokio::time::sleep(SETTLE).await;
    let after_relist = sampler.max_since(relist_started);
    let peak = serve.peak_mib()?;
    println!(
        "after the API server restarted: resident at most {after_relist:.1} MiB; peak of the run (VmHWM) {peak:.1} MiB"
    );
    sampler.stop();
    serve.stop()?;
    println!(
        "(serve's log: {}; {:.0} s in all)",
        log.display(),
        started.elapsed().as_secs_f64()
    );

    let growth = if setting("GROWTH", 1)? == 0 {
        None
    } else {
        Some(growth(cluster, &admin, sizes, &key, baseline).await?)
    };

    if let Some(growth) = growth {
        println!("{growth}");
    }
    println!(
        "scale: approvals={} rss_steady_mib={steady:.1} rss_peak_mib={peak:.1} ready_s={:.1} admission_p50_ratio={:.2} operator_lag_p99_s={:.2}",
        sizes.approvals,
        ready.as_secs_f64(),
        admission.gated.0 / admission.open.0,
        lag_result.p99
    );
    Ok(())
}

/// Entries written at once to measure the audit chain's rate, and by how many writers.
const CHAIN_BURST: usize = 2_000;
const CHAIN_WRITERS: usize = 10;

/// The audit chain under this cluster's load: CHAIN_BURST entries written through
/// countersign's writer as countersign (CHAIN_WRITERS at once, as busy webhooks would),
/// timed until the leader has linked them all (the chain's record reaches them).
async fn chain_rate(
    cluster: &TestCluster,
    key: &Arc<countersign::core::approval::seal::SealKey>,
) -> Result<String> {
    use countersign::cluster::chain::ChainStore;
    use countersign::cluster::trail::Trail;
    use countersign::core::audit::trail::{PlannedEntry, Recall};
    use futures::{StreamExt, TryStreamExt, stream};
    let token = cluster.kubectl_output(
        User::Admin,
        &[
            "create",
            "token",
            "countersign",
            "-n",
            DEFAULT_INSTALL_NAMESPACE,
            "--duration=1h",
        ],
        None,
    )?;
    ensure!(token.status.success(), "kubectl create token failed");
    let config = cluster
        .config_with_token(String::from_utf8_lossy(&token.stdout).trim())
        .await?;
    let countersign = kube::Client::try_from(config)?;
    let store = ChainStore::new(countersign.clone(), DEFAULT_INSTALL_NAMESPACE);
    let before = store.read().await?.record.head.sequence;
    let trail = Trail::new(countersign, DEFAULT_INSTALL_NAMESPACE).sealed_with(key.clone());
    let run = std::process::id();
    let started = Instant::now();
    stream::iter(0..CHAIN_BURST)
        .map(|i| {
            let trail = trail.clone();
            async move {
                let spec: countersign::api::AuditEntrySpec = serde_json::from_value(json!({
                    "time": jiff::Timestamp::now().to_string(), "action": "ReviewRecorded",
                    "actor": { "username": "alice", "groups": ["team-leads"] },
                    "target": { "apiVersion": "apps/v1", "kind": "Deployment",
                        "namespace": "scale-000", "name": format!("chain-{i}") },
                    "approval": format!("chain-{run}-{i}"), "reason": "the chain's rate" }))?;
                let planned = PlannedEntry {
                    name: format!("scale-chain-{run}-{i:05}"),
                    spec,
                    recall: Recall::Whole,
                };
                trail.write(&planned).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CHAIN_WRITERS)
        .try_collect::<Vec<()>>()
        .await?;
    let written = started.elapsed();
    let target = before + CHAIN_BURST as u64;
    loop {
        let head = store.read().await?.record.head.sequence;
        if head >= target {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the audit chain reached {head} of {target} in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let linked = started.elapsed();
    Ok(format!(
        "audit chain: {CHAIN_BURST} entries written by {CHAIN_WRITERS} writers in {:.1} s ({:.0}/s); all linked {:.1} s after the first was written ({:.0} links/s), {:.1} s after the last",
        written.as_secs_f64(),
        CHAIN_BURST as f64 / written.as_secs_f64(),
        linked.as_secs_f64(),
        CHAIN_BURST as f64 / linked.as_secs_f64(),
        (linked - written).as_secs_f64()
    ))
}

/// Extra approvals, AuditEntries and ungated Deployments for the growth figures.
const MORE_APPROVALS: usize = 5_000;
const MORE_AUDIT_ENTRIES: usize = 50_000;
const MORE_UNGATED: usize = 1_000;

/// Memory as the cluster grows, each figure from a fresh `serve` at rest, side by side in
/// one run: as it is, then with MORE_APPROVALS more requests (in 50 more namespaces under
/// 25 more policies, with their trails), then MORE_AUDIT_ENTRIES more AuditEntries, then
/// MORE_UNGATED more Deployments in a namespace no policy reaches.
async fn growth(
    cluster: &TestCluster,
    admin: &kube::Client,
    sizes: Sizes,
    key: &Arc<countersign::core::approval::seal::SealKey>,
    baseline: f64,
) -> Result<String> {
    let at_rest = |what: &'static str| async move {
        let rss = fresh_at_rest(cluster, baseline).await?;
        println!("growth: {what}: resident {rss:.1} MiB at rest");
        anyhow::Ok(rss)
    };
    let base = at_rest("as measured").await?;

    let more = Sizes {
        seed: sizes.seed + 1,
        nodes: 0,
        namespaces: 50,
        deployments: MORE_APPROVALS / 10,
        approvals: MORE_APPROVALS,
        audit_entries: 0,
        role_bindings: 0,
        policies: 25,
        first_namespace: sizes.first_namespace + sizes.namespaces,
    };
    fill::fill(admin, more, key, DEFAULT_INSTALL_NAMESPACE).await?;
    let with_approvals = at_rest("with more approvals").await?;

    let mut rng = fill::Seeded::new(sizes.seed + 2);
    let first = sizes.audit_entries;
    fill::older_entries(
        admin,
        DEFAULT_INSTALL_NAMESPACE,
        first..first + MORE_AUDIT_ENTRIES,
        sizes.namespaces,
        &mut rng,
        key,
    )
    .await?;
    fill::link_all(admin, DEFAULT_INSTALL_NAMESPACE).await?;
    let with_entries = at_rest("with more AuditEntries").await?;

    let ungated = TestNamespace::create("scale-ungated", None).await?;
    let deployments = Api::<Deployment>::namespaced(admin.clone(), ungated.name());
    for i in 0..MORE_UNGATED {
        let mut deployment = probe_deployment(ungated.name(), "1.0");
        deployment.metadata.name = Some(format!("ungated-{i:04}"));
        deployments
            .create(&PostParams::default(), &deployment)
            .await?;
    }
    let with_ungated = at_rest("with more ungated Deployments").await?;

    let kib = |from: f64, to: f64, count: usize| (to - from) * 1024.0 / count as f64;
    Ok(format!(
        "growth: {:.2} KiB per extra approval ({MORE_APPROVALS}), {:.4} KiB per extra AuditEntry ({MORE_AUDIT_ENTRIES}), {:.3} KiB per extra ungated Deployment ({MORE_UNGATED}); resident {base:.1} → {with_approvals:.1} → {with_entries:.1} → {with_ungated:.1} MiB",
        kib(base, with_approvals, MORE_APPROVALS),
        kib(with_approvals, with_entries, MORE_AUDIT_ENTRIES),
        kib(with_entries, with_ungated, MORE_UNGATED),
    ))
}

/// A fresh `serve`'s resident memory at rest (the median over AT_REST once its start-up
/// work is done), then stopped.
async fn fresh_at_rest(cluster: &TestCluster, baseline: f64) -> Result<f64> {
    let port = support::countersign::free_port()?;
    let log = std::env::temp_dir().join(format!(
        "countersign-scale-{}-{port}.log",
        std::process::id()
    ));
    let started = Instant::now();
    let mut serve = Serve::start(cluster, port, File::create(&log)?)?;
    let sampler = Sampler::start(serve.pid());
    wait_ready(&mut serve, port, &log).await?;
    settle(cluster, baseline, started).await?;
    tokio::time::sleep(SETTLE).await;
    let rest_started = Instant::now();
    tokio::time::sleep(AT_REST).await;
    let rss = sampler.median_since(rest_started);
    sampler.stop();
    serve.stop()?;
    Ok(rss)
}

fn probe_deployment(namespace: &str, version: &str) -> Deployment {
    serde_json::from_value(json!({ "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "probe", "namespace": namespace },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "probe" } },
            "template": { "metadata": { "labels": { "app": "probe" } },
                "spec": { "containers": [{ "name": "probe", "image": format!("registry.example.com/probe:{version}"),
                    "env": [{ "name": "MODE", "value": "scale" }] }] } } } }))
    .expect("a fixed Deployment")
}

/// `serve --local` as users start it, run directly (its pid is serve's).
struct Serve {
    child: Child,
}

impl Serve {
    fn start(cluster: &TestCluster, port: u16, log: File) -> Result<Serve> {
        let errors = log.try_clone()?;
        let child = Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(["serve", "--local", "--kubeconfig"])
            .arg(cluster.kubeconfig())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(cluster.client_auth_args())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(errors)
            .spawn()
            .context("starting countersign serve --local")?;
        Ok(Serve { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn peak_mib(&self) -> Result<f64> {
        status_mib(self.pid(), "VmHWM:")
    }

    fn stop(&mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.stop();
        }
    }
}

fn status_mib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|l| l.split_whitespace().next())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?
        .parse()?;
    Ok(kib / 1024.0)
}

/// Resident memory read every 250 ms on a thread of its own.
struct Sampler {
    samples: Arc<Mutex<Vec<(Instant, f64)>>>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (into, stopped) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                if let (Ok(mib), Ok(mut samples)) = (status_mib(pid, "VmRSS:"), into.lock()) {
                    samples.push((Instant::now(), mib));
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Sampler { samples, stop }
    }

    fn since(&self, from: Instant) -> Vec<f64> {
        self.samples
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|(at, _)| *at >= from)
                    .map(|(_, mib)| *mib)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn median_since(&self, from: Instant) -> f64 {
        let mut values = self.since(from);
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    }

    fn max_since(&self, from: Instant) -> f64 {
        self.since(from).into_iter().fold(f64::NAN, f64::max)
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Seconds from now until `/readyz` answers 200 (bounded: 10 minutes).
async fn wait_ready(serve: &mut Serve, port: u16, log: &std::path::Path) -> Result<Duration> {
    let started = Instant::now();
    let url = format!("https://127.0.0.1:{port}/readyz");
    loop {
        if let Some(status) = serve.child.try_wait()? {
            bail!("serve exited ({status}); see {}", log.display());
        }
        let out = Command::new("curl")
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "2",
                &url,
            ])
            .output()?;
        if out.stdout == b"200" {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("not ready after 10 minutes; see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the operator has labelled `namespace` as gated (bounded: 2 minutes).
async fn wait_gated(admin: &kube::Client, namespace: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let ns = Api::<Namespace>::all(admin.clone()).get(namespace).await?;
        let gated = ns
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("countersign.dev/gated"))
            .is_some_and(|v| v == "true");
        if gated {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "{namespace} not gated after 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the API server's request rate over 10 s is within REST_MARGIN of `baseline`,
/// printing it as it goes; the time since `started` (at most SETTLE_LIMIT).
async fn settle(cluster: &TestCluster, baseline: f64, started: Instant) -> Result<Duration> {
    loop {
        let rate = request_rate(cluster, Duration::from_secs(10)).await?;
        println!(
            "  {:>4.0} s: {rate:.0} API requests/s",
            started.elapsed().as_secs_f64()
        );
        if rate - baseline < REST_MARGIN {
            return Ok(started.elapsed());
        }
        if started.elapsed() > SETTLE_LIMIT {
            return Ok(SETTLE_LIMIT);
        }
    }
}

/// The API server's requests so far (apiserver_request_total) by verb and resource.
fn request_counts(cluster: &TestCluster) -> Result<BTreeMap<(String, String), f64>> {
    let out = cluster.kubectl_output(User::Admin, &["get", "--raw", "/metrics"], None)?;
    ensure!(out.status.success(), "reading the API server's metrics");
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(labels) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = labels.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_default()
                .to_string()
        };
        if let Ok(value) = value.parse::<f64>() {
            *counts
                .entry((label("verb"), label("resource")))
                .or_default() += value;
        }
    }
    Ok(counts)
}

/// The writes between two counts, per `cycles`, of the resources an approval cycle writes.
fn writes_per(
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
    cycles: usize,
) -> String {
    const WRITES: [&str; 5] = ["POST", "PUT", "PATCH", "APPLY", "DELETE"];
    const RESOURCES: [&str; 4] = ["auditentries", "events", "deploymentapprovals", "leases"];
    let mut parts = Vec::new();
    for ((verb, resource), count) in after {
        if !WRITES.contains(&verb.as_str()) || !RESOURCES.contains(&resource.as_str()) {
            continue;
        }
        let added = count
            - before
                .get(&(verb.clone(), resource.clone()))
                .unwrap_or(&0.0);
        if added > 0.0 {
            parts.push(format!(
                "{resource} {verb} {:.1}",
                added / cycles.max(1) as f64
            ));
        }
    }
    parts.join(", ")
}

/// The API server's requests per second over `window` (apiserver_request_total, summed).
async fn request_rate(cluster: &TestCluster, window: Duration) -> Result<f64> {
    let total = || -> Result<f64> { Ok(request_counts(cluster)?.values().sum()) };
    let before = total()?;
    tokio::time::sleep(window).await;
    // The scrape itself is one request.
    Ok((total()? - before - 1.0) / window.as_secs_f64())
}

struct Admission {
    /// p50 and p99 in milliseconds.
    open: (f64, f64),
    gated: (f64, f64),
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Server-side dry-run updates of Deployment `probe` as dave from ADMISSION_CLIENTS clients,
/// in rounds alternating between the namespace no policy reaches and the gated one.
async fn admission(cluster: &TestCluster, gated: &str, open: &str) -> Result<Admission> {
    let mut open_ms = Vec::new();
    let mut gated_ms = Vec::new();
    for round in 0..=ADMISSION_ROUNDS {
        for (ns, into) in [(open, &mut open_ms), (gated, &mut gated_ms)] {
            let mut tasks = Vec::new();
            for client in 0..ADMISSION_CLIENTS {
                let api = Api::<Deployment>::namespaced(cluster.client(User::Dave).await?, ns);
                tasks.push(tokio::spawn(async move {
                    let mut took = Vec::new();
                    let params = PatchParams::apply("scale-bench").force().dry_run();
                    for write in 0..ADMISSION_WRITES {
                        let probe = probe_deployment(
                            api.namespace().unwrap_or_default(),
                            &format!("2.{client}.{write}"),
                        );
                        let started = Instant::now();
                        api.patch("probe", &params, &Patch::Apply(&probe)).await?;
                        took.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                    anyhow::Ok(took)
                }));
            }
            for task in tasks {
                let took = task.await??;
                // Round 0 warms up.
                if round > 0 {
                    into.extend(took);
                }
            }
        }
    }
    open_ms.sort_by(f64::total_cmp);
    gated_ms.sort_by(f64::total_cmp);
    Ok(Admission {
        open: (percentile(&open_ms, 0.5), percentile(&open_ms, 0.99)),
        gated: (percentile(&gated_ms, 0.5), percentile(&gated_ms, 0.99)),
    })
}

struct Lag {
    lags: Vec<f64>,
    p50: f64,
    p99: f64,
    per_second: f64,
}

/// LAG_CLIENTS at once, LAG_CYCLES each: dave's create is denied and opens a request, alice
/// approves it (a JSON patch, as `kubectl countersign approve` does), and the time from her
/// patch returning to the status saying Approved is the operator's lag.
async fn operator_lag(cluster: &TestCluster, namespace: &str) -> Result<Lag> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..LAG_CLIENTS {
        let dave = Api::<Deployment>::namespaced(cluster.client(User::Dave).await?, namespace);
        let alice =
            Api::<DeploymentApproval>::namespaced(cluster.client(User::Alice).await?, namespace);
        tasks.push(tokio::spawn(async move {
            let mut lags = Vec::new();
            for cycle in 0..LAG_CYCLES {
                let mut deployment = probe_deployment(namespace_of(&dave), "1.0");
                let name = format!("lag-{client}-{cycle}");
                deployment.metadata.name = Some(name.clone());
                let denial = match dave.create(&PostParams::default(), &deployment).await {
                    Err(kube::Error::Api(status)) if status.message.contains("approval required") => status.message,
                    other => bail!("{name}: not denied for approval: {other:?}"),
                };
                let request = denial
                    .split("kubectl countersign approve ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .with_context(|| format!("the denial names no request: {denial}"))?
                    .to_string();
                let review = json!([{ "op": "add", "path": "/spec/reviews/-", "value": { "decision": "Approve" } }]);
                let patch: json_patch::Patch = serde_json::from_value(review)?;
                let mut attempts = 0;
                // The request may not be in alice's view for a moment: retried on NotFound.
                loop {
                    match alice.patch(&request, &PatchParams::default(), &Patch::<()>::Json(patch.clone())).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(status)) if status.code == 404 && attempts < 50 => {
                            attempts += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
                let reviewed = Instant::now();
                loop {
                    let approval = alice.get(&request).await?;
                    if approval.status.as_ref().is_some_and(|s| s.phase == countersign::api::ApprovalPhase::Approved) {
                        break;
                    }
                    ensure!(reviewed.elapsed() < Duration::from_secs(120), "{request} not Approved after 2 minutes");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                lags.push(reviewed.elapsed().as_secs_f64());
            }
            anyhow::Ok(lags)
        }));
    }
    let mut lags = Vec::new();
    for task in tasks {
        lags.extend(task.await??);
    }
    let per_second = lags.len() as f64 / started.elapsed().as_secs_f64();
    lags.sort_by(f64::total_cmp);
    Ok(Lag {
        p50: percentile(&lags, 0.5),
        p99: percentile(&lags, 0.99),
        per_second,
        lags,
    })
}

fn namespace_of(api: &Api<Deployment>) -> &str {
    api.namespace().unwrap_or_default()
}

/// Kills the test cluster's API server and starts it again with the same command line, in a
/// session of its own as `tests/cluster/up` does; waits until it is ready (bounded).
async fn restart_apiserver(cluster: &TestCluster) -> Result<()> {
    let state = cluster
        .env_value("COUNTERSIGN_CLUSTER_DIR")
        .context("cluster.env has no COUNTERSIGN_CLUSTER_DIR")?;
    let pid_file = format!("{state}/pids/kube-apiserver.pid");
    let pid: u32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // Killed, as a crash would: a graceful stop waits out its long-running requests.
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    let stopping = Instant::now();
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    };
    while !gone() {
        ensure!(
            stopping.elapsed() < Duration::from_secs(30),
            "the API server did not stop in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its port may still be held for a moment by the killed process: a start that exits at
    // once is tried again (ten times).
    let mut tries = 0;
    let child = loop {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(format!("{state}/logs/kube-apiserver.log"))?;
        let mut child = Command::new("setsid")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the API server again")?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        match child.try_wait()? {
            None => break child,
            Some(status) if tries < 10 => {
                tries += 1;
                eprintln!("the API server exited at once ({status}); starting it again");
            }
            Some(status) => bail!("the API server does not start again ({status}); see its log"),
        }
    };
    std::fs::write(&pid_file, child.id().to_string())?;
    let started = Instant::now();
    loop {
        let out = cluster.kubectl_output(User::Admin, &["get", "--raw", "/readyz"], None)?;
        if out.status.success() {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the API server not ready 2 minutes after its restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
