//! Workloads really run: the scheduler places pods on the kwok nodes, kwok
//! reports them Running and Ready, and Deployments complete their rollouts.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::objects;
use crate::support::wait::{Poll, until};
use crate::support::{TestCluster, TestNamespace, User};

const KWOK_NODES: [&str; 2] = ["kwok-eu-west-1", "kwok-us-east-1"];

/// Waits until the Deployment's controller has observed its current
/// generation and every replica is updated and available.
async fn rollout_complete(api: &Api<Deployment>, name: &str) -> Result<Deployment> {
    until(
        &format!("Deployment {name} to roll out"),
        Duration::from_secs(90),
        || async {
            let deployment = api.get(name).await?;
            let generation = deployment.metadata.generation;
            let wanted = deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1);
            let status = deployment.status.clone().unwrap_or_default();
            let available = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Available" && c.status == "True");
            let done = status.observed_generation == generation
                && status.updated_replicas == Some(wanted)
                && status.available_replicas == Some(wanted)
                && status.replicas == Some(wanted)
                && available;
            Ok(if done {
                Poll::Ready(deployment)
            } else {
                Poll::Pending(format!("generation {generation:?}, status {status:?}"))
            })
        },
    )
    .await
}

fn images(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| c.image.clone())
        .collect()
}

#[tokio::test]
async fn a_deployment_by_dave_rolls_out_on_kwok_nodes_and_rolls_out_again() -> Result<()> {
    let namespace = TestNamespace::create("rollout", Some("eu-west-1")).await?;
    let dave = TestCluster::get().client(User::Dave).await?;
    let deployments = Api::<Deployment>::namespaced(dave.clone(), namespace.name());
    let pods = Api::<Pod>::namespaced(dave, namespace.name());

    let deployment = objects::deployment("web", "nginx:1.27", 3)?;
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    let first = rollout_complete(&deployments, "web").await?;
    ensure!(first.metadata.generation == Some(1));

    let running = pods.list(&ListParams::default().labels("app=web")).await?;
    ensure!(
        running.items.len() == 3,
        "expected 3 pods, found {}",
        running.items.len()
    );
    for pod in &running.items {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .context("pod not scheduled")?;
        ensure!(
            KWOK_NODES.contains(&node.as_str()),
            "pod on unexpected node {node}"
        );
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        ensure!(phase.as_deref() == Some("Running"), "pod phase {phase:?}");
    }

    // An image update is a new generation that rolls out again.
    let patch = json!({
        "spec": { "template": { "spec": { "containers": [{ "name": "web", "image": "nginx:1.28" }] } } }
    });
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    let second = rollout_complete(&deployments, "web").await?;
    ensure!(second.metadata.generation == Some(2));

    // The old pods go; only pods of the new image remain.
    until("old pods to be gone", Duration::from_secs(60), || async {
        let now = pods.list(&ListParams::default().labels("app=web")).await?;
        let all_new = now.items.len() == 3 && now.items.iter().all(|p| images(p) == ["nginx:1.28"]);
        Ok(if all_new {
            Poll::Ready(())
        } else {
            Poll::Pending(format!(
                "{:?}",
                now.items.iter().map(images).collect::<Vec<_>>()
            ))
        })
    })
    .await
}
