//! The ways a careful user with `edit` rights (dave) might try around the gate, on the
//! real control plane: each is gated, or shown harmless (docs/security.md).

use anyhow::Result;
use serde_json::json;

use crate::support::countersign::Countersign;
use crate::support::flow::*;
use crate::support::namespace::unique_name;
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
    // Until the policy reaches the webhook's cache a debug session passes, and its
    // container can never be added again: each attempt uses a fresh name.
    let attempt = std::sync::atomic::AtomicU32::new(0);
    let (session, refused) = until(
        "kubectl debug to be gated",
        std::time::Duration::from_secs(20),
        || async {
            let session = format!(
                "dbg-{}",
                attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
            );
            let out = debug(&session)?;
            Ok(if text(&out).contains("approval required") {
                crate::support::wait::Poll::Ready((session, out))
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
            let out = debug(&session)?;
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
            // A fresh name each time, as above.
            let session = format!(
                "dbg-{}",
                attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
            );
            let out = debug(&session)?;
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

/// Approve (alice) and apply `object` (dave), then wait until its rollout is confirmed;
/// the request's name.
async fn deploy(
    ns: &str,
    object: &serde_json::Value,
    phase: countersign::api::ApprovalPhase,
) -> Result<String> {
    let name = open_request(ns, object).await?;
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
    apply_until("the approved change to be admitted", object, &[], |out| {
        out.status.success()
    })
    .await?;
    status_until(ns, &name, &format!("{phase}"), |s| {
        s.phase == phase
            && s.rollout
                .as_ref()
                .is_some_and(|r| r.applied_generation.is_some())
    })
    .await?;
    Ok(name)
}

#[tokio::test]
async fn every_client_path_of_a_change_is_gated_and_a_rollback_to_the_deployed_revision_is_not()
-> Result<()> {
    use countersign::api::ApprovalPhase::{Deployed, Deploying, Failed};
    Countersign::get();
    let ns = TestNamespace::create("paths", None).await?;
    let ns = ns.name();
    let chain = json!({ "approval": { "levels": [{ "name": "leads", "approvers": [{ "user": "alice" }] }] } });
    let policy = Policy::apply(ns, chain.clone())?;
    let v1 = rolling_web(ns, "nginx:1.27", 1);
    let deployed = deploy(ns, &v1, Deployed).await?;

    // Every way of changing it is a change.
    let deployment = "deployment/web";
    let strategic = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.29"}]}}}}).to_string();
    let merge =
        json!({"spec": {"template": {"metadata": {"annotations": {"team": "shop"}}}}}).to_string();
    let json_patch = json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:1.30"}]).to_string();
    let paths: Vec<(&str, Vec<&str>)> = vec![
        (
            "set image",
            vec!["set", "image", deployment, "web=nginx:1.28"],
        ),
        (
            "strategic patch",
            vec!["patch", deployment, "--type=strategic", "-p", &strategic],
        ),
        (
            "merge patch",
            vec!["patch", deployment, "--type=merge", "-p", &merge],
        ),
        (
            "JSON patch",
            vec!["patch", deployment, "--type=json", "-p", &json_patch],
        ),
        ("rollout restart", vec!["rollout", "restart", deployment]),
    ];
    for (path, args) in paths {
        let mut args = args;
        args.extend(["-n", ns]);
        assert_refused(&kubectl(User::Dave, &args)?, "approval required");
        let _ = path;
    }
    let mut other_manager = rolling_web(ns, "nginx:1.31", 1);
    other_manager["metadata"]["annotations"] = json!({});
    assert_refused(
        &kubectl_stdin(
            User::Dave,
            &[
                "apply",
                "--server-side",
                "--field-manager=other",
                "--force-conflicts",
                "-f",
                "-",
            ],
            &other_manager,
        )?,
        "approval required",
    );
    let edit = crate::support::TestCluster::get()
        .kubectl(User::Dave)
        .args(["edit", deployment, "-n", ns])
        .env("KUBE_EDITOR", "sed -i s/nginx:1.27/nginx:1.32/")
        .output()?;
    assert_refused(&edit, "approval required");

    // A broken change is approved and admitted: its pods never schedule.
    let v2 = web(ns, "nginx:1.28", 1);
    let broken = deploy(ns, &v2, Deploying).await?;
    // `kubectl rollout undo` goes back to the revision last confirmed Deployed: it passes
    // without a new approval, past the broken change's lock, and is audited.
    let undo = kubectl(User::Dave, &["rollout", "undo", deployment, "-n", ns])?;
    assert_ok(&undo);
    assert!(
        text(&undo).contains("a rollback to the revision approval"),
        "{}",
        text(&undo)
    );
    let failed = status_until(ns, &broken, "the broken change superseded", |s| {
        s.phase == Failed
    })
    .await?;
    assert!(
        failed
            .conditions
            .iter()
            .any(|c| c.type_ == "RolledOut" && c.reason == "Superseded"),
        "{failed:?}"
    );
    let rollback = audit_entry_until("the rollback's AuditEntry", |e| {
        e.spec.action == countersign::api::AuditAction::Rollback
            && e.spec.target.namespace.as_deref() == Some(ns)
    })
    .await?;
    assert_eq!(rollback.spec.actor.username, "dave");
    assert_eq!(rollback.spec.approval.as_deref(), Some(deployed.as_str()));

    // A policy can make rollbacks need approval like any change.
    drop(policy);
    let mut strict = chain;
    strict["approval"]["allowRollback"] = json!(false);
    let _strict = Policy::apply(ns, strict)?;
    let v3 = web(ns, "nginx:1.33", 1);
    deploy(ns, &v3, Deploying).await?;
    let refused = until(
        "the strict policy to refuse the undo",
        std::time::Duration::from_secs(20),
        || async {
            let out = kubectl(User::Dave, &["rollout", "undo", deployment, "-n", ns])?;
            Ok(
                if text(&out).contains("is rolling out") || text(&out).contains("approval required")
                {
                    crate::support::wait::Poll::Ready(out)
                } else {
                    crate::support::wait::Poll::Pending(text(&out))
                },
            )
        },
    )
    .await?;
    assert!(!refused.status.success());

    // `replace --force` deletes and creates: the create is gated.
    let mut replaced = rolling_web(ns, "nginx:1.34", 1);
    replaced["metadata"]["annotations"] = json!({});
    let out = kubectl_stdin(User::Dave, &["replace", "--force", "-f", "-"], &replaced)?;
    assert_refused(&out, "approval required");
    Ok(())
}

#[tokio::test]
async fn the_gates_own_ground_is_audited_and_a_policy_can_refuse_changes_to_it() -> Result<()> {
    use countersign::api::AuditAction;
    Countersign::get();
    let ns = TestNamespace::create("ground", None).await?;
    let ns = ns.name();
    // erin is on call, and may edit and delete policies.
    let editor = unique_name("ground-editor");
    let grant = json!({
        "apiVersion": "v1", "kind": "List", "items": [
            { "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
              "metadata": { "name": editor },
              "rules": [{ "apiGroups": ["countersign.dev"], "resources": ["approvalpolicies"],
                          "verbs": ["get", "list", "patch", "update", "delete"] }] },
            { "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
              "metadata": { "name": editor },
              "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": editor },
              "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "erin" }] },
        ],
    });
    assert_ok(&kubectl_stdin(User::Admin, &["apply", "-f", "-"], &grant)?);
    // (Requests of the same change in other tests' namespaces share the name.)
    let entry_of = |action: AuditAction, name: String| async move {
        audit_entry_until(&format!("a {action:?} entry"), |e| {
            e.spec.action == action
                && ((e.spec.approval.as_deref() == Some(name.as_str())
                    && e.spec.target.namespace.as_deref() == Some(ns))
                    || e.spec.policy.as_deref() == Some(name.as_str()))
        })
        .await
    };

    // By default: deleting an open request is allowed, and audited with its author.
    let chain = json!({
        "approval": { "levels": [{ "name": "leads", "approvers": [{ "user": "alice" }] }] },
        "breakGlass": { "groups": ["oncall"] },
    });
    let audited = Policy::apply(ns, chain.clone())?;
    let request = open_request(ns, &web(ns, "nginx:1.27", 1)).await?;
    assert_ok(&kubectl(
        User::Admin,
        &["delete", "deploymentapproval", &request, "-n", ns],
    )?);
    let deleted = entry_of(AuditAction::RequestDeleted, request.clone()).await?;
    assert_eq!(deleted.spec.actor.username, "admin");
    // ... and announced by an Event on the workload it was for.
    let note = event_until(ns, "RequestDeleted", "web").await?;
    assert!(
        note.contains("by admin") && note.contains(&request),
        "{note}"
    );
    drop(audited);

    // tamperProtection: Refuse keeps the ground, even against the cluster admin...
    let mut protected_spec = chain;
    protected_spec["tamperProtection"] = json!("Refuse");
    let protected = Policy::apply(ns, protected_spec)?;
    let request = open_request(ns, &web(ns, "nginx:1.28", 1)).await?;
    assert_refused(
        &kubectl(
            User::Admin,
            &["delete", "deploymentapproval", &request, "-n", ns],
        )?,
        "tamperProtection: Refuse",
    );
    let note = event_until(ns, "Refused", "web").await?;
    assert!(note.contains("admin was refused"), "{note}");
    let edit = json!({ "spec": { "priority": 7 } }).to_string();
    assert_refused(
        &kubectl(
            User::Admin,
            &[
                "patch",
                "approvalpolicy",
                &protected.name,
                "--type=merge",
                "-p",
                &edit,
            ],
        )?,
        "tamperProtection: Refuse",
    );
    assert_refused(
        &kubectl(User::Admin, &["delete", "approvalpolicy", &protected.name])?,
        "tamperProtection: Refuse",
    );
    // ...but not against break-glass, which is audited as such.
    assert_ok(&kubectl(
        User::Erin,
        &["delete", "approvalpolicy", &protected.name],
    )?);
    let gone = entry_of(AuditAction::PolicyDeleted, protected.name.clone()).await?;
    assert_eq!(gone.spec.actor.username, "erin");
    // A cluster-scoped object's Events live in `default`.
    let note = event_until("default", "PolicyDeleted", &protected.name).await?;
    assert!(note.contains("by erin"), "{note}");
    assert!(
        gone.spec
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("by break-glass (group oncall)")),
        "{:?}",
        gone.spec.reason
    );
    for kind in ["clusterrolebinding", "clusterrole"] {
        let _ = kubectl(
            User::Admin,
            &["delete", kind, &editor, "--ignore-not-found"],
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_namespace_taken_out_of_a_policys_reach_is_audited_with_the_actor() -> Result<()> {
    use countersign::api::AuditAction;
    Countersign::get();
    let ns = TestNamespace::create("reach", None).await?;
    let ns = ns.name();
    let team = unique_name("team");
    assert_ok(&kubectl(
        User::Admin,
        &["label", "namespace", ns, &format!("team={team}")],
    )?);
    // A policy that reaches namespaces by label.
    let policy = crate::support::flow::Policy::apply(
        ns,
        json!({ "approval": { "levels": [{ "name": "leads", "approvers": [{ "user": "alice" }] }] } }),
    )?;
    let selector = json!({ "spec": { "match": { "namespaces": [],
        "namespaceSelector": { "matchLabels": { "team": team } } } } })
    .to_string();
    assert_ok(&kubectl(
        User::Admin,
        &[
            "patch",
            "approvalpolicy",
            &policy.name,
            "--type=merge",
            "-p",
            &selector,
        ],
    )?);
    let gated = |expected: &'static str| {
        let ns = ns.to_string();
        async move {
            until(
                "the gated label",
                std::time::Duration::from_secs(20),
                || async {
                    let out = kubectl(
                        User::Admin,
                        &[
                            "get",
                            "namespace",
                            &ns,
                            "-o",
                            "jsonpath={.metadata.labels.countersign\\.dev/gated}",
                        ],
                    )?;
                    let label = text(&out).trim().to_string();
                    Ok(if label == expected {
                        crate::support::wait::Poll::Ready(())
                    } else {
                        crate::support::wait::Poll::Pending(label)
                    })
                },
            )
            .await
        }
    };
    gated("true").await?;
    until_gated(&web(ns, "nginx:1.27", 1)).await?;

    // The admin removes the label the policy selects: allowed, audited, and the namespace
    // leaves the workload webhook's reach with it.
    assert_ok(&kubectl(User::Admin, &["label", "namespace", ns, "team-"])?);
    let left = audit_entry_until("the NamespaceLeftReach entry", |e| {
        e.spec.action == AuditAction::NamespaceLeftReach && e.spec.target.name == ns
    })
    .await?;
    assert_eq!(left.spec.actor.username, "admin");
    assert_eq!(left.spec.policy.as_deref(), Some(policy.name.as_str()));
    let note = event_until("default", "NamespaceLeftReach", ns).await?;
    assert!(note.contains("by admin"), "{note}");
    gated("").await?;

    // The same relabel through the namespace's status and finalize subresources, whose
    // strategies keep what the writer sent in its metadata: audited just the same.
    let admin = crate::support::TestCluster::get()
        .client(User::Admin)
        .await?;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(admin);
    for subresource in ["status", "finalize"] {
        assert_ok(&kubectl(
            User::Admin,
            &["label", "namespace", ns, &format!("team={team}")],
        )?);
        gated("true").await?;
        let version = namespaces
            .get(ns)
            .await?
            .metadata
            .resource_version
            .unwrap_or_default();
        let mut relabelled = namespaces.get(ns).await?;
        if let Some(labels) = relabelled.metadata.labels.as_mut() {
            labels.remove("team");
        }
        namespaces
            .replace_subresource(
                subresource,
                ns,
                &kube::api::PostParams::default(),
                &relabelled,
            )
            .await?;
        let left = audit_entry_until(&format!("the {subresource} relabel's entry"), |e| {
            e.spec.action == AuditAction::NamespaceLeftReach
                && e.spec.target.name == ns
                && e.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.ends_with(&version))
        })
        .await?;
        assert_eq!(left.spec.actor.username, "admin", "{subresource}");
        gated("").await?;
    }
    Ok(())
}

/// The note of the first Event in `namespace` with `reason` about the object `name`.
async fn event_until(namespace: &str, reason: &str, name: &str) -> Result<String> {
    let selector = format!("reason={reason},involvedObject.name={name}");
    until(
        &format!("a {reason} Event about {name}"),
        std::time::Duration::from_secs(10),
        || async {
            let out = kubectl(
                User::Admin,
                &[
                    "get",
                    "events",
                    "-n",
                    namespace,
                    "--field-selector",
                    &selector,
                    "-o",
                    "json",
                ],
            )?;
            let events: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            Ok(
                match events["items"].as_array().and_then(|items| items.first()) {
                    Some(event) => crate::support::wait::Poll::Ready(
                        event["message"].as_str().unwrap_or_default().to_string(),
                    ),
                    None => crate::support::wait::Poll::Pending(text(&out)),
                },
            )
        },
    )
    .await
}

#[tokio::test]
async fn a_replication_controller_made_by_hand_is_gated_and_its_pods_are_not() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("rc", None).await?;
    let ns = ns.name();
    // The admin is exempt here: an RC the admin makes runs, and its Pods are made by
    // kube-controller-manager's replication-controller.
    let mut chain = json!({ "approval": { "levels": [{ "name": "leads", "approvers": [{ "user": "alice" }] }] } });
    chain["exclude"] = json!({ "groups": ["system:masters"] });
    let _policy = Policy::apply(ns, chain)?;
    let controller = |name: &str, image: &str| {
        json!({
            "apiVersion": "v1", "kind": "ReplicationController",
            "metadata": { "name": name, "namespace": ns },
            "spec": { "replicas": 2, "selector": { "app": name },
                "template": { "metadata": { "labels": { "app": name } },
                    "spec": { "containers": [{ "name": "app", "image": image }] } } },
        })
    };
    until_gated(&rolling_web(ns, "nginx:1.27", 1)).await?;
    // dave's RC would run any image next to the gated Deployments: gated.
    assert_refused(
        &kubectl_stdin(
            User::Dave,
            &["apply", "-f", "-"],
            &controller("by-dave", "evil:1"),
        )?,
        "approval required",
    );
    // The admin's RC runs: its Pods come from the replication-controller, which is
    // admitted as a workload controller, and open no request.
    assert_ok(&kubectl_stdin(
        User::Admin,
        &["apply", "-f", "-"],
        &controller("by-admin", "nginx:1.27"),
    )?);
    until(
        "the RC's two Pods",
        std::time::Duration::from_secs(30),
        || async {
            let pods = kubectl(
                User::Admin,
                &["get", "pods", "-n", ns, "-l", "app=by-admin", "-o", "name"],
            )?;
            let count = text(&pods)
                .lines()
                .filter(|l| l.starts_with("pod/"))
                .count();
            Ok(if count == 2 {
                crate::support::wait::Poll::Ready(())
            } else {
                crate::support::wait::Poll::Pending(text(&pods))
            })
        },
    )
    .await?;
    let opened: Vec<String> = approvals(ns)
        .await?
        .into_iter()
        .map(|a| a.spec.change.requester.username)
        .collect();
    assert!(
        opened.iter().all(|who| who == "dave"),
        "only dave's RC opened a request: {opened:?}"
    );
    Ok(())
}

#[tokio::test]
async fn what_decides_a_requests_life_is_countersigns_alone() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("life", None).await?;
    let ns = ns.name();
    let _policy = Policy::apply(ns, two_level_chain())?;
    let name = open_request(ns, &web(ns, "nginx:1.27", 1)).await?;
    // An approver (who may patch requests) makes a dangling owner of it, so the garbage
    // collector would delete it in its own name; or pins it with a finalizer.
    let owner = json!([{ "op": "add", "path": "/metadata/ownerReferences", "value": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "gone",
        "uid": "00000000-0000-0000-0000-000000000000" }] }]);
    assert_refused(
        &patch_approval(User::Alice, ns, &name, owner)?,
        "metadata.ownerReferences of a DeploymentApproval may not be changed",
    );
    let finalizer =
        json!([{ "op": "add", "path": "/metadata/finalizers", "value": ["example.com/keep"] }]);
    assert_refused(
        &patch_approval(User::Alice, ns, &name, finalizer)?,
        "metadata.finalizers of a DeploymentApproval may not be changed",
    );
    // Still there, and still countersign's to decide.
    assert_eq!(approvals(ns).await?.len(), 1);
    Ok(())
}
