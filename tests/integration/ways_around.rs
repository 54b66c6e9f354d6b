//! The ways a careful user with `edit` rights (dave) might try around the gate, on the
//! real control plane: each is gated, or shown harmless (docs/security.md).

use anyhow::Result;
use serde_json::json;

use crate::support::countersign::Countersign;
use crate::support::flow::*;
use crate::support::{TestNamespace, User};

#[tokio::test]
async fn pods_and_replica_sets_made_by_hand_are_gated_but_not_those_the_controllers_make()
-> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("bare", None).await?;
    let ns = ns.name();
    // A CronJob made before any policy gates the namespace.
    let nightly = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": { "name": "nightly", "namespace": ns },
        "spec": { "schedule": "0 3 * * *", "jobTemplate": { "spec": { "template": { "spec": {
            "restartPolicy": "Never",
            "containers": [{ "name": "job", "image": "busybox:1.36" }] } } } } },
    });
    assert_ok(&kubectl_stdin(
        User::Admin,
        &["apply", "-f", "-"],
        &nightly,
    )?);
    // A policy that names Deployments only: Pods and ReplicaSets come with them.
    let mut chain = json!({ "approval": { "levels": [{ "name": "leads", "approvers": [{ "user": "alice" }] }] } });
    chain["match"] = json!({ "kinds": [
        { "group": "apps", "kind": "Deployment" },
        { "group": "batch", "kind": "Job" },
    ] });
    let _policy = Policy::apply(ns, chain)?;
    let web = rolling_web(ns, "nginx:1.27", 1);
    until_gated(&web).await?;

    // kubectl run: a bare Pod with any image.
    assert_refused(
        &kubectl(User::Dave, &["run", "evil", "--image=evil:1", "-n", ns])?,
        "approval required",
    );
    // A Pod that claims a ReplicaSet owns it: ownerReferences are anyone's to write.
    let forged = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "web-forged", "namespace": ns,
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web-123", "uid": "00000000-0000-0000-0000-000000000000",
                "controller": true }] },
        "spec": { "containers": [{ "name": "web", "image": "evil:1" }] },
    });
    assert_refused(
        &kubectl_stdin(User::Dave, &["apply", "-f", "-"], &forged)?,
        "approval required",
    );
    // A hand-made ReplicaSet next to the gated Deployment.
    let mut replica_set = rolling_web(ns, "evil:1", 1);
    replica_set["kind"] = json!("ReplicaSet");
    replica_set["metadata"]["name"] = json!("web-by-hand");
    assert_refused(
        &kubectl_stdin(User::Dave, &["apply", "-f", "-"], &replica_set)?,
        "approval required",
    );
    // A Job made by a person from a CronJob is a Job like any other.
    assert_refused(
        &kubectl(
            User::Dave,
            &[
                "create",
                "job",
                "by-hand",
                "--from=cronjob/nightly",
                "-n",
                ns,
            ],
        )?,
        "approval required",
    );

    // The approved Deployment rolls out: its ReplicaSet and Pods, made by the controllers,
    // are not held up.
    let name = open_request(ns, &web).await?;
    assert_ok(&review(
        User::Alice,
        ns,
        &name,
        json!({"decision": "Approve"}),
    )?);
    status_until(ns, &name, "Approved", |s| {
        s.phase == countersign::api::ApprovalPhase::Approved
    })
    .await?;
    apply_until("the approved change to be admitted", &web, &[], |out| {
        out.status.success()
    })
    .await?;
    status_until(ns, &name, "Deployed", |s| {
        s.phase == countersign::api::ApprovalPhase::Deployed
    })
    .await?;
    // Changing the image of a running Pod by hand is a change like any other.
    let pods = kubectl(
        User::Dave,
        &["get", "pods", "-n", ns, "-l", "app=web", "-o", "name"],
    )?;
    let pod = text(&pods).lines().next().unwrap_or_default().to_string();
    assert!(pod.starts_with("pod/"), "{}", text(&pods));
    assert_refused(
        &kubectl(User::Dave, &["set", "image", &pod, "web=evil:1", "-n", ns])?,
        "approval required",
    );
    // Labelling one is not.
    assert_ok(&kubectl(
        User::Dave,
        &["label", &pod, "debug=true", "-n", ns],
    )?);
    Ok(())
}
