//! Users are who their certificates say, in the groups they say, and RBAC
//! holds them to what they were granted.

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, PostParams};
use kube::{Api, Error};

use crate::support::cluster::run;
use crate::support::objects;
use crate::support::{TestCluster, TestNamespace, User};

async fn who_am_i(user: User) -> Result<(String, Vec<String>)> {
    let client = TestCluster::get().client(user).await?;
    objects::who_am_i(client)
        .await
        .with_context(|| format!("SelfSubjectReview as {user:?}"))
}

#[tokio::test]
async fn every_user_is_authenticated_with_their_groups() -> Result<()> {
    for user in User::ALL {
        let (name, groups) = who_am_i(user).await?;
        ensure!(name == user.name(), "{user:?} authenticated as {name:?}");
        for group in user.groups() {
            ensure!(
                groups.iter().any(|g| g == group),
                "{name} lacks group {group}: {groups:?}"
            );
        }
        ensure!(
            groups.iter().any(|g| g == "system:authenticated"),
            "{name} lacks system:authenticated: {groups:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn kubectl_sees_the_same_identity() -> Result<()> {
    let out = run(TestCluster::get().kubectl(User::Carol).args([
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
    ]))?;
    ensure!(
        out.starts_with("carol "),
        "kubectl auth whoami said {out:?}"
    );
    ensure!(out.contains("\"sre\""), "carol is not in sre: {out:?}");
    Ok(())
}

fn is_forbidden<T>(result: &Result<T, Error>) -> bool {
    matches!(result, Err(Error::Api(status)) if status.code == 403)
}

#[tokio::test]
async fn dave_is_held_to_what_rbac_grants() -> Result<()> {
    let namespace = TestNamespace::create("rbac", Some("eu-west-1")).await?;
    let cluster = TestCluster::get();
    let dave = cluster.client(User::Dave).await?;

    // Not granted: nodes (cluster-scoped), or anything outside his namespaces.
    let nodes = Api::<Node>::all(dave.clone())
        .list(&ListParams::default())
        .await;
    ensure!(is_forbidden(&nodes), "dave listed nodes: {nodes:?}");
    let deployment = objects::deployment("web", "nginx:1.27", 1)?;
    let elsewhere = Api::<Deployment>::namespaced(dave.clone(), "default")
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &deployment,
        )
        .await;
    ensure!(
        is_forbidden(&elsewhere),
        "dave created a Deployment in default: {elsewhere:?}"
    );

    // Granted: edit in the test namespace.
    Api::<Deployment>::namespaced(dave, namespace.name())
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &deployment,
        )
        .await
        .context("dave may create Deployments in his test namespace")?;

    let can_i = |args: &[&str]| -> Result<String> {
        let output = cluster
            .kubectl(User::Dave)
            .args(["auth", "can-i"])
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    ensure!(can_i(&["create", "deployments", "-n", namespace.name()])? == "yes");
    ensure!(can_i(&["create", "deployments", "-n", "default"])? == "no");
    ensure!(can_i(&["create", "clusterroles"])? == "no");
    ensure!(can_i(&["get", "secrets", "-n", "kube-system"])? == "no");
    Ok(())
}
