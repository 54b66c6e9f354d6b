//! Through the API server, countersign against Kyverno: Deployment create and update
//! latency (p50, p95, p99) and throughput with no admission webhook, with countersign only,
//! with Kyverno and a ClusterPolicy only and with Kyverno and a ValidatingPolicy only, at
//! 1, 10 and 50 concurrent clients, on the allow and the deny path, in one run on the test
//! cluster; the latency each webhook adds and the ratios between them; the processes'
//! memory and CPU time; then countersign's memory with 10,000 DeploymentApprovals cached.
//!
//! Run: `cargo bench --bench apiserver` (starts the test cluster if none is running,
//! builds Kyverno on first use; prints Markdown and writes docs/benchmarks/apiserver.svg,
//! or apiserver-kyverno-qpsN.svg with Kyverno's rate limit raised to N;
//! numbers in BENCHMARKS.md). `COUNTERSIGN_BENCH_ROUNDS` sets the measured rounds (3);
//! `COUNTERSIGN_BENCH_WRITES` the writes of each kind per setup and round at 1 and 10
//! clients (200; 50 clients get 2.5 times as many); `COUNTERSIGN_BENCH_SETUPS` the setups
//! (comma-separated among `cs`, `cpol`, `vpol`; all by default, the one without a webhook
//! always); `COUNTERSIGN_BENCH_KYVERNO_QPS` replaces Kyverno's client rate limit towards
//! the API server (its release default is 100 requests/s, burst 200);
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

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use countersign::api::{ApprovalPolicy, DeploymentApproval};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

use kyverno::Kyverno;
use report::{CLIENTS, ProcessRow, ProcessUse, Results};
use setup::{Setup, Switch, WEBHOOKS};
use support::countersign::Countersign;
use support::{TestCluster, TestNamespace, User};
use workload::KINDS;

/// Writes of one kind per cell and round: `writes` at 1 and 10 clients, `writes / 20` per
/// client above that, and one per client at least.
fn writes_per_phase(clients: usize, writes: usize) -> usize {
    writes.max(writes * clients / 20).max(clients)
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
    let writes: usize = setting("COUNTERSIGN_BENCH_WRITES")?.unwrap_or(200);
    ensure!(writes > 0, "COUNTERSIGN_BENCH_WRITES must be at least 1");
    let kyverno_qps: Option<u32> = setting("COUNTERSIGN_BENCH_KYVERNO_QPS")?;
    let approvals: usize = setting("COUNTERSIGN_BENCH_APPROVALS")?.unwrap_or(10_000);
    let setups = setup::selected(std::env::var("COUNTERSIGN_BENCH_SETUPS").ok().as_deref())?;
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
    // One Kyverno process serves both Kyverno setups; none when neither is measured.
    let kyverno = if setups.iter().any(|s| s.is_kyverno()) {
        Some(Kyverno::start(cluster, &admin, kyverno_qps).await?)
    } else {
        None
    };
    let switch = Switch::new(&admin, ns.name()).await?;
    let countersign_pid = countersign.serve_pid()?;
    let pid_of = |setup: Setup| -> Result<Option<u32>> {
        Ok(match setup {
            Setup::Bare => None,
            Setup::Countersign => Some(countersign_pid),
            Setup::KyvernoCpol | Setup::KyvernoVpol => Some(
                kyverno
                    .as_ref()
                    .and_then(Kyverno::pid)
                    .context("kyverno is not running")?,
            ),
        })
    };

    println!("{}", machine(&admin, kyverno.as_ref()).await?);
    if kyverno.is_some() {
        match kyverno_qps {
            None => println!(
                "Kyverno's client rate limit: the release's (100 requests/s, burst 200).\n"
            ),
            Some(qps) => {
                println!("Kyverno's client rate limit: raised to {qps} requests/s, burst {qps}.\n")
            }
        }
    }
    println!(
        "Deployment writes through the API server as dave (group developers); {rounds} rounds after a warm-up round, \
         each measuring every setup in turn ({}; the order rotates), {} writes per kind, setup and round at 1, 10 and 50 clients.\n",
        setups
            .iter()
            .map(|s| s.label())
            .collect::<Vec<_>>()
            .join(", "),
        CLIENTS
            .iter()
            .map(|&c| writes_per_phase(c, writes).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let deployments = Api::<Deployment>::namespaced(dave.clone(), ns.name());
    let mut results = Results::default();
    let mut uses: BTreeMap<Setup, ProcessUse> = BTreeMap::new();
    let started = Instant::now();
    for round in 0..=rounds {
        let mut order = setups.clone();
        order.rotate_left(round % setups.len());
        for setup in order {
            let denial = switch.to(&admin, &dave, kyverno.as_ref(), setup).await?;
            if round == 0
                && let Some(denial) = denial
            {
                eprintln!("{}: the deny path is answered: {denial}", setup.label());
            }
            let pid = pid_of(setup)?;
            let cpu_before = pid.map(cpu_time).transpose()?;
            let mut written = 0;
            for clients in CLIENTS {
                let prefix = format!("r{round}-{}-c{clients}", setup.short());
                let count = writes_per_phase(clients, writes);
                for kind in KINDS {
                    let phase =
                        workload::run_phase(&deployments, setup, &prefix, kind, count, clients)
                            .await
                            .with_context(|| format!("round {round}"))?;
                    written += phase.latencies.len();
                    if round > 0 {
                        results.add((setup, clients, kind.0, kind.1), phase);
                    }
                }
            }
            if round > 0
                && let (Some(pid), Some(before)) = (pid, cpu_before)
            {
                let used = uses.entry(setup).or_default();
                used.cpu_in_own_setup += cpu_time(pid)?.saturating_sub(before);
                used.writes_in_own_setup += written;
                used.resident_mib = memory_mib(pid)?.0;
            }
            eprintln!(
                "round {round}: {} measured ({:.0} s in)",
                setup.label(),
                started.elapsed().as_secs_f64()
            );
        }
        switch
            .to(&admin, &dave, kyverno.as_ref(), Setup::Bare)
            .await?;
        clean(&admin, ns.name()).await?;
    }
    for (&setup, used) in uses.iter_mut() {
        if let Some(pid) = pid_of(setup)? {
            used.peak_resident_mib = memory_mib(pid)?.1;
        }
    }

    println!("### Latency and throughput\n\n{}", results.latency_table());
    println!(
        "### Added latency (with the webhook minus without)\n\n{}",
        results.added_table()
    );
    let means: Vec<(Setup, f64)> = WEBHOOKS
        .into_iter()
        .filter_map(|s| Some((s, results.overall_added_mean(s)?)))
        .collect();
    if !means.is_empty() {
        let countersign_mean = results.overall_added_mean(Setup::Countersign);
        let text: Vec<String> = means
            .iter()
            .map(
                |&(setup, mean)| match (setup.is_kyverno(), countersign_mean) {
                    (true, Some(countersign_mean)) => format!(
                        "{} {mean:.2} ms ({})",
                        setup.label(),
                        report::ratio(setup, mean, countersign_mean)
                    ),
                    _ => format!("{} {mean:.2} ms", setup.label()),
                },
            )
            .collect();
        println!(
            "Mean added latency over all {} cells: {}.\n",
            CLIENTS.len() * KINDS.len(),
            text.join(", ")
        );
    }
    let process = |setup: Setup| match setup {
        Setup::Countersign => format!("countersign serve --local {}", env!("CARGO_PKG_VERSION")),
        _ => format!(
            "kyverno {}",
            kyverno.as_ref().map_or("", |k| k.version.as_str())
        ),
    };
    let rows: Vec<ProcessRow> = uses
        .iter()
        .map(|(&setup, &used)| ProcessRow {
            setup,
            process: process(setup),
            used,
        })
        .collect();
    println!(
        "### Processes (after the measured writes)\n\n{}",
        report::resources_table(&rows)
    );
    eprintln!("measured in {:.0} s", started.elapsed().as_secs_f64());
    // A run with Kyverno's rate limit raised has a plot of its own, beside the default's.
    let plot_name = match kyverno_qps {
        None => "apiserver.svg".to_string(),
        Some(qps) => format!("apiserver-kyverno-qps{qps}.svg"),
    };
    let svg = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/benchmarks")
        .join(plot_name);
    std::fs::create_dir_all(svg.parent().context("the plot has no directory")?)?;
    plot::write_svg(
        &svg,
        &results,
        &match kyverno.as_ref() {
            Some(kyverno) => format!(
                "Deployment writes through the API server: no webhook, countersign, Kyverno {} (ClusterPolicy, ValidatingPolicy)",
                kyverno.version
            ),
            None => "Deployment writes through the API server: no webhook, countersign".to_string(),
        },
    )?;
    println!("plot: {}", svg.display());

    switch
        .to(&admin, &dave, kyverno.as_ref(), Setup::Countersign)
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
async fn machine(admin: &kube::Client, kyverno: Option<&Kyverno>) -> Result<String> {
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
        kyverno.map_or("not started", |k| k.version.as_str()),
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
