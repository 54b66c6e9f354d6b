//! Through the API server, countersign against Kyverno: Deployment create and update
//! latency (p50, p95, p99) and throughput with no admission webhook, with countersign only
//! and with Kyverno only, at 1, 10 and 50 concurrent clients, on the allow and the deny
//! path, in one run on the test cluster; the latency each webhook adds and the ratio
//! between them; both processes' memory and CPU time; then countersign's memory with
//! 10,000 DeploymentApprovals cached.
//!
//! Run: `cargo bench --bench apiserver` (starts the test cluster if none is running,
//! builds Kyverno on first use; prints Markdown and writes docs/benchmarks/apiserver.svg;
//! numbers in BENCHMARKS.md). `COUNTERSIGN_BENCH_ROUNDS` sets the measured rounds (3);
//! `COUNTERSIGN_BENCH_KYVERNO_QPS` replaces Kyverno's client rate limit towards the API
//! server (its release default is 100 requests/s, burst 200);
//! `COUNTERSIGN_BENCH_APPROVALS` sets the DeploymentApprovals of the memory measurement
//! (10,000; 0 skips it).

#[path = "../../tests/integration/support/mod.rs"]
#[allow(dead_code)]
mod support;

mod kyverno;
mod plot;
mod report;
mod setup;
mod workload;

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use countersign::api::{ApprovalPolicy, DeploymentApproval};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

use kyverno::Kyverno;
use report::{CLIENTS, ProcessUse, Results};
use setup::{SETUPS, Setup, Switch};
use support::countersign::Countersign;
use support::{TestCluster, TestNamespace, User};
use workload::KINDS;

/// Writes of one kind per cell and round: at least ten per client.
fn writes_per_phase(clients: usize) -> usize {
    (10 * clients).max(200)
}

fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<()> {
    let rounds: usize = setting("COUNTERSIGN_BENCH_ROUNDS")?.unwrap_or(3);
    let kyverno_qps: Option<u32> = setting("COUNTERSIGN_BENCH_KYVERNO_QPS")?;
    let approvals: usize = setting("COUNTERSIGN_BENCH_APPROVALS")?.unwrap_or(10_000);
    let cluster = TestCluster::get();
    let admin = cluster.client(User::Admin).await?;
    let dave = cluster.client(User::Dave).await?;
    ensure!(
        Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .get_opt("countersign")
            .await?
            .is_none(),
        "a countersign webhook is already registered; stop it first"
    );
    let ns = TestNamespace::create("bench", None).await?;

    // countersign exactly as users start it on a local cluster, gating the namespace with
    // the one check the comparison needs.
    let countersign = Countersign::get();
    let policy = json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
        "metadata": { "name": format!("bench-{}", ns.name()) },
        "spec": { "match": { "namespaces": [ns.name()] },
            "checks": { "secretDetection": true } },
    });
    let policies = Api::<ApprovalPolicy>::all(admin.clone());
    policies
        .create(&PostParams::default(), &serde_json::from_value(policy)?)
        .await?;
    let kyverno = Kyverno::start(cluster, &admin, kyverno_qps).await?;
    let switch = Switch::new(&admin, ns.name()).await?;
    let pids = [
        (Setup::Countersign, countersign.serve_pid()?),
        (
            Setup::Kyverno,
            kyverno.pid().context("kyverno is not running")?,
        ),
    ];

    println!("{}", machine(&admin, &kyverno).await?);
    match kyverno_qps {
        None => {
            println!("Kyverno's client rate limit: the release's (100 requests/s, burst 200).\n")
        }
        Some(qps) => {
            println!("Kyverno's client rate limit: raised to {qps} requests/s, burst {qps}.\n")
        }
    }
    println!(
        "Deployment writes through the API server as dave (group developers); {rounds} rounds after a warm-up round, \
         each measuring every setup in turn (the order rotates), {} writes per kind, setup and round at 1, 10 and 50 clients.\n",
        CLIENTS
            .iter()
            .map(|&c| writes_per_phase(c).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let deployments = Api::<Deployment>::namespaced(dave.clone(), ns.name());
    let mut results = Results::default();
    let mut uses = [ProcessUse::default(); 2];
    for round in 0..=rounds {
        let mut order = SETUPS;
        order.rotate_left(round % SETUPS.len());
        for setup in order {
            switch.to(&admin, &dave, &kyverno, setup).await?;
            let cpu_before = pids.map(|(_, pid)| cpu_time(pid));
            let mut writes = 0;
            for clients in CLIENTS {
                let prefix = format!("r{round}-{}-c{clients}", setup.short());
                let count = writes_per_phase(clients);
                for kind in KINDS {
                    let phase =
                        workload::run_phase(&deployments, setup, &prefix, kind, count, clients)
                            .await
                            .with_context(|| format!("round {round}"))?;
                    writes += phase.latencies.len();
                    if round > 0 {
                        results.add((setup, clients, kind.0, kind.1), phase);
                    }
                }
            }
            if round > 0 {
                for (used, ((owner, pid), before)) in
                    uses.iter_mut().zip(pids.iter().zip(cpu_before))
                {
                    if *owner == setup {
                        used.cpu_in_own_setup += cpu_time(*pid)?.saturating_sub(before?);
                        used.writes_in_own_setup += writes;
                    }
                }
            }
            eprintln!("round {round}: {} measured", setup.label());
        }
        switch.to(&admin, &dave, &kyverno, Setup::Bare).await?;
        clean(&admin, ns.name()).await?;
    }
    for (used, (_, pid)) in uses.iter_mut().zip(pids) {
        (used.resident_mib, used.peak_resident_mib) = memory_mib(pid)?;
    }

    println!("### Latency and throughput\n\n{}", results.latency_table());
    println!(
        "### Added latency (with the webhook minus without)\n\n{}",
        results.added_table()
    );
    if let Some((countersign_mean, kyverno_mean)) = results.overall_added_mean() {
        println!(
            "Mean added latency over all {} cells: countersign {countersign_mean:.2} ms, Kyverno {kyverno_mean:.2} ms ({}).\n",
            CLIENTS.len() * KINDS.len(),
            report::ratio(kyverno_mean, countersign_mean)
        );
    }
    println!(
        "### Processes (after the measured writes)\n\n{}",
        report::resources_table(&[
            (
                &format!("countersign serve --local {}", env!("CARGO_PKG_VERSION")),
                uses[0]
            ),
            (&format!("kyverno {}", kyverno.version), uses[1]),
        ])
    );
    let svg =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks/apiserver.svg");
    std::fs::create_dir_all(svg.parent().context("the plot has no directory")?)?;
    plot::write_svg(
        &svg,
        &results,
        &format!(
            "Deployment writes through the API server: no webhook, countersign, Kyverno {}",
            kyverno.version
        ),
    )?;
    println!("plot: {}", svg.display());

    switch
        .to(&admin, &dave, &kyverno, Setup::Countersign)
        .await?;
    drop(kyverno);
    if approvals > 0 {
        let filled = fill_approvals(approvals).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!(
            "countersign serve resident memory with {approvals} DeploymentApprovals cached: {:.0} MiB",
            memory_mib(countersign.serve_pid()?)?.0
        );
        drop(filled);
    }
    let _ = policies
        .delete(&format!("bench-{}", ns.name()), &Default::default())
        .await;
    Ok(())
}

/// A number from the environment, if set.
fn setting<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{name} is not a number: {text}")),
        Err(_) => Ok(None),
    }
}

/// The machine, the versions and the date, for BENCHMARKS.md.
async fn machine(admin: &kube::Client, kyverno: &Kyverno) -> Result<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown CPU");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let output = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let kubernetes = admin.apiserver_version().await?.git_version;
    Ok(format!(
        "Machine: {model}, {cores} cores, {memory_gib:.0} GiB RAM, Linux {}; {}; Kubernetes {kubernetes} (tests/cluster); \
         Kyverno {}; countersign {} (release profile); {}.\n",
        output("uname", &["-r"]),
        output("rustc", &["--version"]),
        kyverno.version,
        env!("CARGO_PKG_VERSION"),
        output("date", &["-u", "+%Y-%m-%d"]),
    ))
}

/// Removes the round's Deployments and their ReplicaSets (directly: the garbage collector
/// is rate-limited) and waits until none is left, so every round starts alike.
async fn clean(admin: &kube::Client, namespace: &str) -> Result<()> {
    let deployments = Api::<Deployment>::namespaced(admin.clone(), namespace);
    let replica_sets = Api::<ReplicaSet>::namespaced(admin.clone(), namespace);
    let one = ListParams::default().limit(1);
    deployments
        .delete_collection(&DeleteParams::background(), &ListParams::default())
        .await?;
    for _ in 0..600 {
        replica_sets
            .delete_collection(&DeleteParams::background(), &ListParams::default())
            .await?;
        if deployments.list_metadata(&one).await?.items.is_empty()
            && replica_sets.list_metadata(&one).await?.items.is_empty()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("the Deployments of namespace {namespace} were not gone after 5 minutes")
}

/// User plus system CPU time of a process (Linux reports it in 1/100 s).
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is the first, utime
    // and stime the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("a malformed /proc stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("a short /proc stat")?
            .parse()
            .context("a CPU time in /proc is not a number")
    };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// Resident and peak resident memory of a process.
fn memory_mib(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64> {
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|l| l.split_whitespace().next())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?
            .parse()?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// `count` DeploymentApprovals in a namespace of their own, written as countersign; the
/// namespace goes when the returned value is dropped.
async fn fill_approvals(count: usize) -> Result<TestNamespace> {
    let own = support::countersign::own_client().await?;
    let ns = TestNamespace::create("bench-approvals", None).await?;
    let sample: serde_json::Value = yaml_serde::from_str(include_str!(
        "../../tests/fixtures/crd-samples/deploymentapproval.yaml"
    ))?;
    let api: Api<DeploymentApproval> = Api::namespaced(own, ns.name());
    let mut workers = Vec::new();
    for worker in 0..16 {
        let api = api.clone();
        let sample = sample.clone();
        workers.push(tokio::spawn(async move {
            for i in (worker..count).step_by(16) {
                let mut approval = sample.clone();
                approval["metadata"]["name"] = json!(format!("app-{i}-93cfa25d"));
                approval["spec"]["target"]["name"] = json!(format!("app-{i}"));
                let approval: DeploymentApproval = serde_json::from_value(approval)?;
                // The API server drops a connection now and then under this load; an
                // answer it gave (such as a conflict) is not retried.
                let mut attempts = 0;
                loop {
                    match api.create(&PostParams::default(), &approval).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(status)) => {
                            anyhow::bail!("creating an approval: {status}")
                        }
                        Err(error) if attempts < 5 => {
                            attempts += 1;
                            eprintln!("creating an approval failed ({error}); retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(ns)
}
