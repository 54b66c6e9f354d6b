//! A real Flux (`tests/gitops/up`: source-controller and kustomize-controller from the Go
//! module proxy, a git server on loopback) applying commits to the test cluster while
//! countersign gates it: what GitOps users meet.

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::support::countersign::Countersign;
use crate::support::flow::*;
use crate::support::gitops::Flux;
use crate::support::{TestCluster, TestNamespace, User};

/// A ConfigMap `settings` in `namespace`.
fn settings(namespace: &str, value: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "settings", "namespace": namespace },
        "data": { "greeting": value },
    })
}

/// Whether `kind/name` exists in `namespace`.
fn exists(namespace: &str, kind: &str, name: &str) -> Result<bool> {
    let out = kubectl(
        User::Admin,
        &[
            "get",
            kind,
            name,
            "-n",
            namespace,
            "--ignore-not-found",
            "-o",
            "name",
        ],
    )?;
    anyhow::ensure!(out.status.success(), "kubectl get {kind}: {}", text(&out));
    Ok(!stdout(&out).trim().is_empty())
}

#[tokio::test]
async fn flux_applies_a_commit_as_kustomize_controller() -> Result<()> {
    let flux = Flux::get();
    let ns = TestNamespace::create("flux", None).await?;
    let ns = ns.name();
    // The identity gitops.env names is the one the API server authenticates.
    let whoami = TestCluster::get().kubectl_with(
        &flux.kustomize_kubeconfig,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    )?;
    assert_eq!(
        stdout(&whoami),
        flux.kustomize_identity,
        "{}",
        text(&whoami)
    );

    let commit = flux.commit(
        ns,
        &[settings(ns, "hello"), rolling_web(ns, "nginx:1.27", 1)],
        "web 1.27",
    )?;
    flux.kustomization(ns, "apps", ns, "10m")?;
    let ready = flux.tried(ns, "apps", &commit, "True").await?;
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&commit),
        "{ready}"
    );
    assert!(exists(ns, "deployment", "web")? && exists(ns, "configmap", "settings")?);
    let managers = kubectl(
        User::Admin,
        &[
            "get",
            "deployment",
            "web",
            "-n",
            ns,
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ],
    )?;
    assert!(
        stdout(&managers).contains("kustomize-controller"),
        "{}",
        text(&managers)
    );
    Ok(())
}

#[tokio::test]
async fn a_gated_change_in_a_commit_holds_the_whole_commit() -> Result<()> {
    Countersign::get();
    let flux = Flux::get();
    let ns = TestNamespace::create("fluxgate", None).await?;
    let ns = ns.name();
    let _policy = Policy::apply(ns, two_level_chain())?;
    until_gated(&web(ns, "nginx:1.27", 1)).await?;

    let commit = flux.commit(
        ns,
        &[settings(ns, "hello"), rolling_web(ns, "nginx:1.27", 1)],
        "web 1.27",
    )?;
    flux.kustomization(ns, "apps", ns, "10m")?;
    let held = flux.tried(ns, "apps", &commit, "False").await?;
    let message = held["message"].as_str().context("a message")?;
    // kustomize-controller dry-runs every object of the stage before it applies any, and
    // stops at countersign's denial of the Deployment's dry run: nothing of the commit
    // lands, the ConfigMap (not gated) included.
    assert!(message.contains("dry-run failed"), "{held}");
    assert!(message.contains("approval required by policy"), "{held}");
    assert!(
        !exists(ns, "deployment", "web")?,
        "the gated Deployment was applied"
    );
    assert!(
        !exists(ns, "configmap", "settings")?,
        "part of a held commit was applied"
    );
    Ok(())
}
