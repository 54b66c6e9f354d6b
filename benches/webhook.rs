//! The webhook alone: `serve`'s router behind its real TLS server on loopback, answering
//! realistic ~5 KB Deployment AdmissionReviews over keep-alive HTTP/1.1 connections, with
//! 100 policies and 10,000 DeploymentApprovals in its snapshot. Prints p50/p99 latency,
//! reviews per second, and the process's resident memory with the snapshot loaded.
//!
//! Run: `cargo bench --bench webhook` (numbers in BENCHMARKS.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use countersign::api::{ApprovalPolicy, DeploymentApproval};
use countersign::cluster::snapshot::Snapshot;
use countersign::core::approval::chain::RoleBindingSnapshot;
use countersign::core::change::ChangeDigest;
use countersign::telemetry::Metrics;
use countersign::webhook::review::Webhook;
use countersign::webhook::router::{AppState, router};
use countersign::webhook::server::{TlsFiles, serve};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Namespace;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The allocator `countersign` itself uses (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const POLICIES: usize = 100;
const APPROVALS: usize = 10_000;
const NAMESPACE: &str = "team-7";
const WARMUP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(8);

fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The allocator's settings `serve` runs with.
    countersign::serve::memory::tune();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run());
    // The server's certificate files.
    let _ = std::fs::remove_dir_all(bench_dir());
    result
}

/// Where the benchmark's server keeps its certificate files.
fn bench_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("countersign-bench-{}", std::process::id()))
}

async fn run() -> Result<()> {
    let (snapshot, bodies) = fixture()?;
    let rss_loaded = resident_kib();
    // An API server that does not exist: the measured paths make no API calls (Events of
    // denials are published in the background and fail fast).
    let webhook = Webhook::offline(snapshot, Metrics::new()).map_err(|e| anyhow::anyhow!(e))?;
    direct(&webhook, &bodies).await?;
    chain_costs()?;
    let (address, ca) = start_server(webhook).await?;
    println!("countersign webhook benchmark: {POLICIES} policies, {APPROVALS} approvals cached");
    println!(
        "review body: {} bytes on average ({} kinds of review, in turn)",
        bodies.iter().map(Vec::len).sum::<usize>() / bodies.len(),
        bodies.len()
    );
    println!(
        "resident memory with the snapshot loaded: {} MiB",
        rss_loaded / 1024
    );
    let bodies = Arc::new(bodies.into_iter().map(Bytes::from).collect::<Vec<_>>());
    for connections in [1, 4, 16] {
        let (latencies, elapsed) = load(address, &ca, &bodies, connections).await?;
        report(connections, &latencies, elapsed);
    }
    println!(
        "resident memory after the load: {} MiB",
        resident_kib() / 1024
    );
    Ok(())
}

fn report(connections: usize, latencies: &[Duration], elapsed: Duration) {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    println!(
        "{connections:>2} connection(s): {:>7} reviews, {:>6.0} reviews/s, p50 {:>4} µs, p99 {:>5} µs, max {:>6} µs",
        sorted.len(),
        sorted.len() as f64 / elapsed.as_secs_f64(),
        at(0.50).as_micros(),
        at(0.99).as_micros(),
        sorted.last().map(Duration::as_micros).unwrap_or_default(),
    );
}

/// The process's resident set size, in KiB.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or_default()
}

/// Policy `i` gates namespace `team-i`: two levels, a weekend freeze, every check.
fn policy(i: usize) -> Result<ApprovalPolicy> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
        "metadata": { "name": format!("team-{i}"), "generation": 1 },
        "spec": {
            "match": { "namespaces": [format!("team-{i}")] },
            "windows": [{ "name": "weekend", "effect": "Deny", "timeZone": "Europe/Berlin",
                "weekly": { "days": ["Saturday"], "start": "00:00", "end": "00:01" } }],
            "checks": { "secretDetection": true, "forbidPrivileged": true,
                "allowedRegistries": ["registry.example.com/"] },
            "approval": { "levels": [
                { "name": "leads", "approvers": [{ "user": "alice" }, { "user": "bob" }] },
                { "name": "sre", "approvers": [{ "user": "carol", "required": true }, { "user": "sre2" }] },
            ] },
        },
    }))?)
}

/// A ~5 KB Deployment: three containers with env, probes and resources.
fn deployment(name: &str, image_tag: &str, replicas: u32, secret: bool) -> Value {
    let container = |n: usize| {
        let mut env: Vec<Value> = (0..12)
            .map(|e| json!({ "name": format!("SETTING_{n}_{e}"), "value": format!("value-{e}-for-a-realistic-setting") }))
            .collect();
        if secret && n == 0 {
            env.push(json!({ "name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" }));
        }
        json!({
            "name": format!("c{n}"),
            "image": format!("registry.example.com/shop/c{n}:{image_tag}"),
            "ports": [{ "containerPort": 8080 + n, "protocol": "TCP" }],
            "env": env,
            "resources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "cpu": "1", "memory": "512Mi" } },
            "readinessProbe": { "httpGet": { "path": "/ready", "port": 8080 + n }, "periodSeconds": 5 },
            "livenessProbe": { "httpGet": { "path": "/live", "port": 8080 + n }, "periodSeconds": 10 },
            "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent",
        })
    };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": NAMESPACE, "uid": format!("uid-{name}"),
            "labels": { "app": name, "team": "shop", "tier": "web" },
            "annotations": { "deployment.kubernetes.io/revision": "12", "owner": "shop-team@example.com" } },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": "25%", "maxUnavailable": "25%" } },
            "template": {
                "metadata": { "labels": { "app": name, "team": "shop" } },
                "spec": { "containers": [container(0), container(1), container(2)],
                    "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst" },
            },
        },
    })
}

/// An approval of `target`'s change to `digest`, approved by alice and carol; `deploying`
/// makes it the admitted one (a retried apply of it is answered from the cache).
fn approval(
    i: usize,
    namespace: &str,
    target: &str,
    digest: &str,
    deploying: bool,
) -> Result<DeploymentApproval> {
    let now = jiff::Timestamp::now();
    let policy = policy(i % POLICIES)?;
    Ok(serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "DeploymentApproval",
        "metadata": { "name": format!("{target}-{i}"), "namespace": namespace, "generation": 2 },
        "spec": {
            "target": { "apiVersion": "apps/v1", "kind": "Deployment", "name": target },
            "change": { "digest": digest, "summary": { "text": "image c0 1.0 → 1.1" },
                "requester": { "username": "dave", "groups": ["developers"] },
                "operation": "UPDATE", "requestedAt": now.to_string() },
            "policy": { "name": format!("team-{}", i % POLICIES), "chain": policy.spec.approval },
            "reviews": [
                { "user": "alice", "decision": "Approve", "time": now.to_string() },
                { "user": "carol", "decision": "Approve", "time": now.to_string() },
            ],
        },
        "status": if deploying { json!({ "phase": "Deploying" }) } else { json!({ "phase": "Approved" }) },
    }))?)
}

fn review(uid: usize, object: &Value, old: &Value) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("bench-{uid}"),
            "kind": { "group": "apps", "version": "v1", "kind": "Deployment" },
            "resource": { "group": "apps", "version": "v1", "resource": "deployments" },
            "name": object["metadata"]["name"], "namespace": NAMESPACE, "operation": "UPDATE",
            "userInfo": { "username": "dave", "groups": ["developers", "system:authenticated"] },
            "object": object, "oldObject": old, "dryRun": false,
        },
    }))?)
}

/// The snapshot, and the review bodies the clients send in turn: an approved change being
/// applied again (found among the approvals), a change with a secret in env (denied by the
/// checks), and a replicas-only change (ignored field).
fn fixture() -> Result<(Snapshot, Vec<Vec<u8>>)> {
    let policies = (0..POLICIES).map(policy).collect::<Result<Vec<_>>>()?;
    let namespaces: Vec<Namespace> = (0..POLICIES)
        .map(|i| {
            serde_json::from_value(json!({ "metadata": { "name": format!("team-{i}"),
            "labels": { "kubernetes.io/metadata.name": format!("team-{i}") } } }))
        })
        .collect::<Result<_, _>>()?;
    let old = deployment("web", "1.0", 3, false);
    let new = deployment("web", "1.1", 3, false);
    let ignore = vec!["/spec/replicas".to_string()];
    let digest = ChangeDigest::of(&new, &ignore);
    let mut approvals = Vec::with_capacity(APPROVALS);
    for i in 0..APPROVALS - 1 {
        let namespace = format!("team-{}", i % POLICIES);
        let target = format!("app-{}", i / POLICIES);
        let other = ChangeDigest::of(&deployment(&target, &format!("{i}"), 1, false), &ignore);
        approvals.push(approval(i, &namespace, &target, other.as_str(), false)?);
    }
    approvals.push(approval(7, NAMESPACE, "web", digest.as_str(), true)?);
    let snapshot = Snapshot::preloaded(
        policies,
        approvals,
        namespaces,
        RoleBindingSnapshot::default(),
    );
    let bodies = vec![
        review(1, &new, &old)?,
        review(2, &deployment("web", "1.1", 3, true), &old)?,
        review(3, &deployment("web", "1.0", 5, false), &old)?,
    ];
    Ok((snapshot, bodies))
}

/// The admission path without transport: `Webhook::review` on each kind of body.
async fn direct(webhook: &Webhook, bodies: &[Vec<u8>]) -> Result<()> {
    for (kind, body) in [
        "approved change applied again",
        "secret in env (denied)",
        "replicas only",
    ]
    .iter()
    .zip(bodies)
    {
        let rounds = 2000;
        let started = Instant::now();
        for _ in 0..rounds {
            let answer = webhook
                .review(
                    countersign::webhook::review::ReviewPath::Workloads,
                    body,
                    &countersign::webhook::client_auth::Caller::default(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            std::hint::black_box(answer);
        }
        println!(
            "admission path alone, {kind}: {:.0} µs per review",
            started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
        );
    }
    Ok(())
}

/// What the audit chain adds where an entry is written (the writer's seal, on the
/// admission path whenever a review writes an entry) and where the leader links it.
fn chain_costs() -> Result<()> {
    use countersign::core::audit::chain::{Head, link_time, links_after, writer_seal};
    let key = countersign::core::approval::seal::SealKey::new(&[7; 32]).context("a seal key")?;
    let spec: countersign::api::AuditEntrySpec = serde_json::from_value(json!({
        "time": "2026-12-05T10:00:00Z", "action": "Admitted",
        "actor": { "username": "dave", "groups": ["developers", "system:authenticated"] },
        "target": { "apiVersion": "apps/v1", "kind": "Deployment", "namespace": NAMESPACE,
            "name": "web", "uid": "0c7d2f6e-5b1a-4c7e-9a51-2f0e6b8d9c11" },
        "changeDigest": format!("sha256:{}", "ab".repeat(32)),
        "approval": "web-1a2b3c4d", "policy": "production-eu",
        "reason": "admitted under approval web-1a2b3c4d (approved by alice, carol)",
        "caller": { "authentication": "ClientCertificate", "name": "kube-apiserver-webhook-client" } }))?;
    let rounds = 20_000;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(writer_seal(&key, "web-1a2b3c4d-admitted", &spec));
    }
    println!(
        "the writer's seal on an AuditEntry: {:.1} µs each",
        started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
    );
    let names: Vec<String> = (0..200).map(|i| format!("web-{i:08x}-admitted")).collect();
    let batch: Vec<(&str, &countersign::api::AuditEntrySpec)> =
        names.iter().map(|n| (n.as_str(), &spec)).collect();
    let started = Instant::now();
    for _ in 0..100 {
        std::hint::black_box(links_after(
            &Head::empty(),
            &batch,
            &link_time(jiff::Timestamp::now()),
        ));
    }
    println!(
        "the leader's links: {:.1} µs per entry (batches of 200)",
        started.elapsed().as_secs_f64() * 1e6 / 20_000.0
    );
    Ok(())
}

async fn start_server(webhook: Webhook) -> Result<(SocketAddr, rcgen::Certificate)> {
    let dir = bench_dir();
    std::fs::create_dir_all(&dir)?;
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    let cert = params.signed_by(&key, &rcgen::Issuer::from_params(&ca_params, &ca_key))?;
    let tls = TlsFiles {
        cert_path: dir.join("tls.crt"),
        key_path: dir.join("tls.key"),
    };
    std::fs::write(&tls.cert_path, cert.pem())?;
    std::fs::write(&tls.key_path, key.serialize_pem())?;

    let metrics = webhook.metrics.clone();
    let app = router(AppState {
        webhook: Some(webhook),
        ready: Arc::new(AtomicBool::new(true)),
        webhook_trusted: Arc::new(AtomicBool::new(true)),
        credentials: Default::default(),
        metrics,
        require_client_certificate: false,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(serve(
        listener,
        tls,
        None,
        app,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    Ok((address, ca))
}

async fn load(
    address: SocketAddr,
    ca: &rcgen::Certificate,
    bodies: &Arc<Vec<Bytes>>,
    connections: usize,
) -> Result<(Vec<Duration>, Duration)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let start = Instant::now() + WARMUP;
    let end = start + MEASURE;
    let mut clients = Vec::new();
    for c in 0..connections {
        let config = config.clone();
        let bodies = bodies.clone();
        clients.push(tokio::spawn(async move {
            let tcp = TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            let tls = TlsConnector::from(config)
                .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
                .await?;
            let (mut sender, connection) = http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(connection);
            let mut latencies = Vec::new();
            let mut turn = c;
            loop {
                let body = bodies[turn % bodies.len()].clone();
                turn += 1;
                let request = Request::post("/validate/workloads")
                    .header(hyper::header::HOST, "localhost")
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(body))?;
                let sent = Instant::now();
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                let answer = response.into_body().collect().await?.to_bytes();
                anyhow::ensure!(
                    status.is_success(),
                    "{status}: {}",
                    String::from_utf8_lossy(&answer)
                );
                let done = Instant::now();
                if done >= end {
                    break;
                }
                if sent >= start {
                    latencies.push(done - sent);
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await.context("client task")??);
    }
    Ok((all, MEASURE))
}
