//! The ways a careful user with `edit` rights (dave) might try around the gate, on the
//! real control plane: each is gated, or shown harmless (docs/security.md).

use anyhow::Result;
use serde_json::json;

use crate::support::countersign::Countersign;
use crate::support::flow::*;
use crate::support::wait::until;
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

#[tokio::test]
async fn kubectl_debug_is_a_change_and_a_policy_can_forbid_it() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("debug", None).await?;
    let ns = ns.name();
    // A running Pod, made before any policy gates the namespace.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "web", "namespace": ns },
        "spec": { "containers": [{ "name": "web", "image": "nginx:1.27" }] },
    });
    assert_ok(&kubectl_stdin(User::Admin, &["apply", "-f", "-"], &pod)?);
    // The built-in `edit` role does not include ephemeral containers (so for dave as he is,
    // `kubectl debug` is already forbidden by RBAC); a team that grants it gets the gate.
    let debugger = json!({
        "apiVersion": "v1", "kind": "List", "items": [
            { "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
              "metadata": { "name": "debugger", "namespace": ns },
              "rules": [{ "apiGroups": [""], "resources": ["pods/ephemeralcontainers"],
                          "verbs": ["get", "patch", "update"] }] },
            { "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
              "metadata": { "name": "dave-debugger", "namespace": ns },
              "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "debugger" },
              "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dave" }] },
        ],
    });
    assert_ok(&kubectl_stdin(
        User::Admin,
        &["apply", "-f", "-"],
        &debugger,
    )?);
    let debug = |container: &str| {
        kubectl(
            User::Dave,
            &[
                "debug",
                "web",
                "-n",
                ns,
                "--image=busybox:1.36",
                &format!("--container={container}"),
                "--attach=false",
            ],
        )
    };
    let mut policy = json!({ "approval": { "levels": [{ "name": "leads", "approvers": [{ "user": "alice" }] }] } });
    let gated = Policy::apply(ns, policy.clone())?;
    let refused = until(
        "kubectl debug to be gated",
        std::time::Duration::from_secs(20),
        || async {
            let out = debug("dbg-1")?;
            Ok(if text(&out).contains("approval required") {
                crate::support::wait::Poll::Ready(out)
            } else {
                crate::support::wait::Poll::Pending(text(&out))
            })
        },
    )
    .await?;
    assert_refused(&refused, "approval required by policy");
    // Approved, the same debug session (same container name, same image) passes.
    let requests = approvals(ns).await?;
    let name = requests
        .iter()
        .find(|a| a.spec.target.kind == "Pod")
        .and_then(|a| a.metadata.name.clone())
        .ok_or_else(|| anyhow::anyhow!("a request for the Pod"))?;
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
    let admitted = until(
        "the approved debug session",
        std::time::Duration::from_secs(20),
        || async {
            let out = debug("dbg-1")?;
            Ok(if out.status.success() {
                crate::support::wait::Poll::Ready(out)
            } else {
                crate::support::wait::Poll::Pending(text(&out))
            })
        },
    )
    .await?;
    assert_ok(&admitted);
    drop(gated);

    // A policy that forbids ephemeral containers denies them outright.
    policy["checks"] = json!({ "forbidEphemeralContainers": true });
    let _forbidding = Policy::apply(ns, policy)?;
    let denied = until(
        "the check to deny",
        std::time::Duration::from_secs(20),
        || async {
            let out = debug("dbg-2")?;
            Ok(if text(&out).contains("forbidden here") {
                crate::support::wait::Poll::Ready(out)
            } else {
                crate::support::wait::Poll::Pending(text(&out))
            })
        },
    )
    .await?;
    assert_refused(
        &denied,
        "ephemeral containers (kubectl debug) are forbidden here",
    );
    Ok(())
}
