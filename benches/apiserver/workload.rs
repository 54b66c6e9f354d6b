//! The writes measured: Deployment creates and updates by a developer, on the allow path
//! (ordinary env values) and the deny path (an AWS access key ID in an env value), each
//! timed from request to answer, from a number of concurrent clients.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::setup::Setup;

/// An access key ID of AWS's format (not the documentation's example key).
const ACCESS_KEY_ID: &str = "AKIAQ3ZJ7X2M5N8P4R6T";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Write {
    Create,
    Update,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    /// Nothing to find: the webhook admits the write.
    Allow,
    /// A cloud access key in an env value: the webhook denies the write.
    Deny,
}

impl Write {
    pub fn label(self) -> &'static str {
        match self {
            Write::Create => "create",
            Write::Update => "update",
        }
    }
}

impl Path {
    pub fn label(self) -> &'static str {
        match self {
            Path::Allow => "allow",
            Path::Deny => "deny",
        }
    }
}

/// The four kinds of write, in the order a cell runs them: the deny-path update changes
/// the Deployments the allow-path create made.
pub const KINDS: [(Write, Path); 4] = [
    (Write::Create, Path::Allow),
    (Write::Update, Path::Allow),
    (Write::Update, Path::Deny),
    (Write::Create, Path::Deny),
];

/// What one kind of write measured in one cell.
pub struct Phase {
    pub latencies: Vec<Duration>,
    pub wall: Duration,
}

/// `count` writes of one kind to Deployments `{prefix}-{i}`, spread over `clients`
/// concurrent clients; fails when an answer is not what `setup` must give.
pub async fn run_phase(
    api: &Api<Deployment>,
    setup: Setup,
    prefix: &str,
    (write, path): (Write, Path),
    count: usize,
    clients: usize,
) -> Result<Phase> {
    let began = Instant::now();
    let mut workers = Vec::new();
    for client in 0..clients {
        let api = api.clone();
        let prefix = prefix.to_string();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in (client..count).step_by(clients) {
                let name = format!("{prefix}-{i}");
                let started = Instant::now();
                let answer = send(&api, &name, write, path).await;
                latencies.push(started.elapsed());
                expect(setup, write, path, &name, answer)?;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for worker in workers {
        latencies.extend(worker.await??);
    }
    Ok(Phase {
        latencies,
        wall: began.elapsed(),
    })
}

async fn send(api: &Api<Deployment>, name: &str, write: Write, path: Path) -> kube::Result<()> {
    match write {
        Write::Create => {
            let name = match path {
                Path::Allow => name.to_string(),
                Path::Deny => format!("{name}-key"),
            };
            let object: Deployment = serde_json::from_value(deployment(&name, path == Path::Deny))
                .map_err(kube::Error::SerdeError)?;
            api.create(&PostParams::default(), &object).await?;
        }
        Write::Update => {
            let container = match path {
                Path::Allow => {
                    json!({ "name": "app", "image": "registry.example.com/shop/web:1.1" })
                }
                Path::Deny => json!({ "name": "app", "env": [
                    { "name": "AWS_ACCESS_KEY_ID", "value": ACCESS_KEY_ID }] }),
            };
            let patch =
                json!({ "spec": { "template": { "spec": { "containers": [container] } } } });
            api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
                .await?;
        }
    }
    Ok(())
}

/// The answer each setup must give: without a webhook every write passes; with one, the
/// allow path passes and the deny path is refused by that webhook's rule.
fn expect(
    setup: Setup,
    write: Write,
    path: Path,
    name: &str,
    answer: kube::Result<()>,
) -> Result<()> {
    let what = format!(
        "{} {} of {name} with {}",
        path.label(),
        write.label(),
        setup.label()
    );
    match (setup.denial_marker(), path, answer) {
        (None, _, Ok(())) | (Some(_), Path::Allow, Ok(())) => Ok(()),
        (Some(marker), Path::Deny, Err(kube::Error::Api(status)))
            if (400..500).contains(&status.code) && status.message.contains(marker) =>
        {
            Ok(())
        }
        (_, _, Ok(())) => bail!("{what} was admitted; it must be denied"),
        (_, _, Err(error)) => bail!("{what} failed unexpectedly: {error}"),
    }
}

/// A Deployment as teams write them (two containers, env, ports, probes, resources),
/// with no replicas so that nothing is scheduled; `with_key` adds an access key ID.
pub fn deployment(name: &str, with_key: bool) -> Value {
    let mut app_env = vec![
        json!({ "name": "LOG_LEVEL", "value": "info" }),
        json!({ "name": "DATABASE_HOST", "value": "postgres.shop.svc.cluster.local" }),
        json!({ "name": "DATABASE_USER", "value": "shop" }),
        json!({ "name": "DATABASE_PASSWORD", "valueFrom": { "secretKeyRef": { "name": "shop-db", "key": "password" } } }),
        json!({ "name": "FEATURE_FLAGS", "value": "checkout-v2,search-suggestions" }),
        json!({ "name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability:4317" }),
    ];
    if with_key {
        app_env.push(json!({ "name": "AWS_ACCESS_KEY_ID", "value": ACCESS_KEY_ID }));
    }
    let probe =
        |path: &str| json!({ "httpGet": { "path": path, "port": 8080 }, "periodSeconds": 10 });
    json!({
        "metadata": { "name": name, "labels": { "app": name, "team": "shop" } },
        "spec": {
            "replicas": 0,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name, "team": "shop" } },
                "spec": { "containers": [
                    {
                        "name": "app",
                        "image": "registry.example.com/shop/web:1.0",
                        "ports": [{ "containerPort": 8080, "name": "http" }],
                        "env": app_env,
                        "readinessProbe": probe("/ready"),
                        "livenessProbe": probe("/healthz"),
                        "resources": {
                            "requests": { "cpu": "100m", "memory": "128Mi" },
                            "limits": { "memory": "256Mi" },
                        },
                    },
                    {
                        "name": "proxy",
                        "image": "registry.example.com/platform/envoy:1.31",
                        "args": ["--config-path", "/etc/envoy/envoy.yaml", "--log-level", "warn"],
                        "env": [
                            { "name": "ENVOY_UID", "value": "101" },
                            { "name": "UPSTREAM", "value": "127.0.0.1:8080" },
                        ],
                        "resources": { "requests": { "cpu": "50m", "memory": "64Mi" } },
                    },
                ] },
            },
        },
    })
}
