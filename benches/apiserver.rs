//! Through the API server: Deployment create and update latency with countersign's webhook
//! registered, against the same without it, measured in one run on the test cluster, and
//! the resident memory of `countersign serve` with 10,000 DeploymentApprovals cached.
//!
//! Run: `cargo bench --bench apiserver` (starts the test cluster if none is running;
//! numbers in BENCHMARKS.md).

#[path = "../tests/integration/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::fs::File;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use countersign::api::DeploymentApproval;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use support::countersign::{INSTALL_NAMESPACE, free_port};
use support::objects::deployment;
use support::{TestCluster, TestNamespace, User};

const OPERATIONS: usize = 200;
const ROUNDS: usize = 3;
const APPROVALS: usize = 10_000;

fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<()> {
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
    let serve = Serve::start(cluster)?;
    let policy = json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
        "metadata": { "name": format!("bench-{}", ns.name()) },
        "spec": { "match": { "namespaces": [ns.name()] },
            "checks": { "secretDetection": true, "forbidPrivileged": true } },
    });
    Api::<countersign::api::ApprovalPolicy>::all(admin.clone())
        .create(&PostParams::default(), &serde_json::from_value(policy)?)
        .await?;
    let switch = Registration::read(&admin).await?;

    // Rounds alternate the two setups on the same cluster, so drift (etcd growing, caches
    // warming) falls on both alike; the first round only warms up.
    println!("Deployment writes (create, then image update) through the API server, as dave;");
    println!(
        "{ROUNDS} rounds of {OPERATIONS} writes per setup and concurrency, after a warm-up round"
    );
    let mut cells: Vec<(bool, usize, Vec<Duration>)> = Vec::new();
    for round in 0..=ROUNDS {
        for registered in [false, true] {
            switch.set(&admin, registered).await?;
            for concurrency in [1, 8] {
                let prefix = format!("r{round}-{}-c{concurrency}", u8::from(registered));
                let spent = measure(&dave, ns.name(), &prefix, concurrency).await?;
                if round == 0 {
                    continue;
                }
                match cells
                    .iter_mut()
                    .find(|(r, c, _)| *r == registered && *c == concurrency)
                {
                    Some((_, _, all)) => all.extend(spent),
                    None => cells.push((registered, concurrency, spent)),
                }
            }
        }
    }
    switch.set(&admin, true).await?;
    println!(
        "{:<18} {:>5} {:>9} {:>9}",
        "setup", "conc.", "p50 ms", "p99 ms"
    );
    for concurrency in [1, 8] {
        let mut quantiles = Vec::new();
        for registered in [false, true] {
            let Some((_, _, all)) = cells
                .iter_mut()
                .find(|(r, c, _)| *r == registered && *c == concurrency)
            else {
                continue;
            };
            all.sort();
            let at = |q: f64| {
                all[((all.len() as f64 * q) as usize).min(all.len() - 1)].as_secs_f64() * 1e3
            };
            let setup = if registered {
                "with countersign"
            } else {
                "without webhook"
            };
            println!(
                "{setup:<18} {concurrency:>5} {:>9.2} {:>9.2}",
                at(0.5),
                at(0.99)
            );
            quantiles.push((at(0.5), at(0.99)));
        }
        if let [(p50_a, p99_a), (p50_b, p99_b)] = quantiles[..] {
            println!(
                "ratio with/without at {concurrency} client(s): p50 {:.2}×, p99 {:.2}×",
                p50_b / p50_a,
                p99_b / p99_a
            );
        }
    }

    let rss_before = serve.resident_mib()?;
    fill_approvals(cluster).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "countersign serve resident memory: {rss_before:.1} MiB before, {:.1} MiB with {APPROVALS} DeploymentApprovals cached",
        serve.resident_mib()?
    );
    let _ = Api::<countersign::api::ApprovalPolicy>::all(admin)
        .delete(&format!("bench-{}", ns.name()), &Default::default())
        .await;
    serve.stop()?;
    Ok(())
}

/// `OPERATIONS` creates, then as many image updates, from `concurrency` clients: the
/// latency of each write.
async fn measure(
    client: &kube::Client,
    ns: &str,
    prefix: &str,
    concurrency: usize,
) -> Result<Vec<Duration>> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let mut latencies = Vec::new();
    for phase in ["create", "update"] {
        let mut workers = Vec::new();
        for worker in 0..concurrency {
            let api = api.clone();
            let prefix = prefix.to_string();
            workers.push(tokio::spawn(async move {
                let mut spent = Vec::new();
                for i in (worker..OPERATIONS).step_by(concurrency) {
                    let name = format!("{prefix}-{i}");
                    let began = Instant::now();
                    if phase == "create" {
                        api.create(&PostParams::default(), &deployment(&name, "nginx:1.27", 0)?)
                            .await?;
                    } else {
                        let patch = json!({ "spec": { "template": { "spec": {
                            "containers": [{ "name": name, "image": "nginx:1.28" }] } } } });
                        api.patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
                            .await?;
                    }
                    spent.push(began.elapsed());
                }
                anyhow::Ok(spent)
            }));
        }
        for worker in workers {
            latencies.extend(worker.await??);
        }
    }
    Ok(latencies)
}

/// The webhook configurations `serve --local` registered, so a round can take them away
/// and put them back (the process keeps running either way).
struct Registration {
    validating: ValidatingWebhookConfiguration,
    mutating: MutatingWebhookConfiguration,
}

impl Registration {
    async fn read(admin: &kube::Client) -> Result<Registration> {
        let strip = |meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            meta.resource_version = None;
            meta.uid = None;
            meta.managed_fields = None;
            meta.creation_timestamp = None;
        };
        let mut validating = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .get("countersign")
            .await?;
        let mut mutating = Api::<MutatingWebhookConfiguration>::all(admin.clone())
            .get("countersign")
            .await?;
        strip(&mut validating.metadata);
        strip(&mut mutating.metadata);
        Ok(Registration {
            validating,
            mutating,
        })
    }

    async fn set(&self, admin: &kube::Client, registered: bool) -> Result<()> {
        let validating = Api::<ValidatingWebhookConfiguration>::all(admin.clone());
        let mutating = Api::<MutatingWebhookConfiguration>::all(admin.clone());
        let present = validating.get_opt("countersign").await?.is_some();
        if registered && !present {
            validating
                .create(&PostParams::default(), &self.validating)
                .await?;
            mutating
                .create(&PostParams::default(), &self.mutating)
                .await?;
        } else if !registered && present {
            validating
                .delete("countersign", &Default::default())
                .await?;
            mutating.delete("countersign", &Default::default()).await?;
        }
        // The API server picks up configuration changes through an informer.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    }
}

/// `APPROVALS` DeploymentApprovals in a namespace of their own, written as countersign.
async fn fill_approvals(cluster: &TestCluster) -> Result<()> {
    let own = support::countersign::own_client().await?;
    let ns = TestNamespace::create("bench-approvals", None).await?;
    let sample: serde_json::Value = yaml_serde::from_str(include_str!(
        "../tests/fixtures/crd-samples/deploymentapproval.yaml"
    ))?;
    let api: Api<DeploymentApproval> = Api::namespaced(own, ns.name());
    let mut workers = Vec::new();
    for worker in 0..16 {
        let api = api.clone();
        let sample = sample.clone();
        workers.push(tokio::spawn(async move {
            for i in (worker..APPROVALS).step_by(16) {
                let mut approval = sample.clone();
                approval["metadata"]["name"] = json!(format!("app-{i}-93cfa25d"));
                approval["spec"]["target"]["name"] = json!(format!("app-{i}"));
                let approval: DeploymentApproval = serde_json::from_value(approval)?;
                api.create(&PostParams::default(), &approval).await?;
            }
            anyhow::Ok(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let _ = cluster;
    // Keep the namespace (and its approvals) until the measurement is taken.
    std::mem::forget(ns);
    Ok(())
}

/// `countersign serve --local`, started and stopped by the benchmark.
struct Serve {
    child: Child,
}

impl Serve {
    fn start(cluster: &TestCluster) -> Result<Serve> {
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("countersign-bench-serve-{port}.log"));
        let output = File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(["serve", "--local", "--kubeconfig"])
            .arg(cluster.kubeconfig())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()?;
        let started = Instant::now();
        while !std::fs::read_to_string(&log)?.contains("webhook configurations registered") {
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "serve did not start; see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // Give the API server a moment to pick up the new configurations.
        std::thread::sleep(Duration::from_secs(2));
        let _ = INSTALL_NAMESPACE;
        Ok(Serve { child })
    }

    fn resident_mib(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .context("no VmRSS")?
            .parse()?;
        Ok(kib / 1024.0)
    }

    fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}
