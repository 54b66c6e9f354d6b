//! Deployment confirmation (SPEC §1.3, §1.4) on the real control plane, with rollouts on
//! the kwok nodes: an admitted change becomes Deployed when its rollout completes, Failed
//! when it cannot finish in time or its target is deleted, and Approved again when it
//! never reached the object; each step is audited, and the one-change lock is released.

use std::time::Duration;

use anyhow::{Context, Result};
use countersign::api::{ApprovalPhase, AuditAction, AuditEntry, DeploymentApprovalStatus};
use countersign::core::rollout::confirm::ROLLED_OUT_CONDITION;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

use crate::support::countersign::{Countersign, INSTALL_NAMESPACE, metrics};
use crate::support::flow::*;
use crate::support::wait::{Poll, until};
use crate::support::{TestCluster, TestNamespace, User};

/// One level: alice approves.
fn alice_approves() -> Value {
    json!({ "approval": { "levels": [{ "name": "leads", "approvers": [{ "user": "alice" }] }] } })
}

/// dave applies `object` (denied, opening its request); `approvers` approve it in turn;
/// dave applies it again until admitted. Returns the request's name.
async fn request_approve_apply(ns: &str, object: &Value, approvers: &[User]) -> Result<String> {
    until_gated(object).await?;
    assert_refused(&apply(User::Dave, object, &[])?, "approval required");
    let name = approvals(ns)
        .await?
        .into_iter()
        .filter(|a| a.status.as_ref().is_none_or(|s| !s.phase.is_terminal()))
        .find_map(|a| a.metadata.name)
        .context("the request")?;
    for approver in approvers {
        assert_ok(&review(
            *approver,
            ns,
            &name,
            json!({"decision": "Approve"}),
        )?);
    }
    status_until(ns, &name, "Approved", |s| {
        s.phase == ApprovalPhase::Approved
    })
    .await?;
    apply_until("the approved change to be admitted", object, &[], |out| {
        out.status.success()
    })
    .await?;
    Ok(name)
}

fn rolled_out_reason(status: &DeploymentApprovalStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == ROLLED_OUT_CONDITION)
        .map(|c| c.reason.as_str())
}

/// The AuditEntries of request `name` in `ns`, once there are at least `count`, oldest
/// first.
async fn trail_of(ns: &str, name: &str, count: usize) -> Result<Vec<AuditEntry>> {
    let admin = TestCluster::get().client(User::Admin).await?;
    let api = Api::<AuditEntry>::namespaced(admin, INSTALL_NAMESPACE);
    until("the audit trail", Duration::from_secs(30), || async {
        let mut mine: Vec<AuditEntry> = api
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter(|e| {
                e.spec.approval.as_deref() == Some(name)
                    && e.spec.target.namespace.as_deref() == Some(ns)
            })
            .collect();
        mine.sort_by_key(|e| e.spec.time.0);
        Ok(if mine.len() >= count {
            Poll::Ready(mine)
        } else {
            Poll::Pending(format!(
                "{:?}",
                mine.iter().map(|e| e.spec.action).collect::<Vec<_>>()
            ))
        })
    })
    .await
}

fn step<'a>(trail: &'a [AuditEntry], suffix: &str) -> Result<&'a AuditEntry> {
    trail
        .iter()
        .find(|e| {
            e.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.ends_with(&format!("-{suffix}")))
        })
        .with_context(|| format!("no {suffix} entry in {trail:?}"))
}

#[tokio::test]
async fn an_approved_change_rolls_out_and_is_confirmed_deployed() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("deployed", None).await?;
    let ns = ns.name();
    let _policy = Policy::apply(ns, two_level_chain())?;

    let v1 = rolling_web(ns, "nginx:1.27", 2);
    let name = request_approve_apply(ns, &v1, &[User::Alice, User::Carol]).await?;
    let deployed = status_until(ns, &name, "Deployed", |s| {
        s.phase == ApprovalPhase::Deployed
    })
    .await?;
    let rollout = deployed.rollout.clone().context("status.rollout")?;
    assert_eq!(rollout.admissions, 1);
    assert_eq!(
        rollout.admitted_by.map(|u| u.username).as_deref(),
        Some("dave")
    );
    assert!(rollout.applied_generation.is_some() && rollout.finished_at.is_some());
    assert_eq!(rolled_out_reason(&deployed), Some("Complete"));
    assert_eq!(deployed.lock_holder, None, "the lock is released");

    // The trail holds every step in order, each by its real actor, once.
    let expected = [
        ("requested", AuditAction::Requested, "dave"),
        ("review-0", AuditAction::ReviewRecorded, "alice"),
        ("level-1", AuditAction::LevelSatisfied, "alice"),
        ("review-1", AuditAction::ReviewRecorded, "carol"),
        ("level-2", AuditAction::LevelSatisfied, "carol"),
        ("approved", AuditAction::Approved, "carol"),
        ("admitted", AuditAction::Admitted, "dave"),
        ("deployed", AuditAction::Deployed, "system:countersign"),
    ];
    let trail = trail_of(ns, &name, expected.len()).await?;
    assert_eq!(trail.len(), expected.len(), "no entry twice: {trail:?}");
    let mut previous = None;
    for (suffix, action, actor) in expected {
        let entry = step(&trail, suffix)?;
        assert_eq!(entry.spec.action, action, "{suffix}");
        assert_eq!(entry.spec.actor.username, actor, "{suffix}");
        if let Some(before) = previous {
            assert!(entry.spec.time.0 >= before, "{suffix} is in order");
        }
        previous = Some(entry.spec.time.0);
    }

    // Events on the request and on the Deployment.
    let admin = TestCluster::get().client(User::Admin).await?;
    let events = Api::<Event>::namespaced(admin, ns);
    for (kind, object) in [("DeploymentApproval", name.as_str()), ("Deployment", "web")] {
        let selector = format!("involvedObject.kind={kind},involvedObject.name={object}");
        let reasons = until("the Events", Duration::from_secs(20), || async {
            let reasons: Vec<String> = events
                .list(&ListParams::default().fields(&selector))
                .await?
                .items
                .into_iter()
                .filter_map(|e| e.reason)
                .collect();
            Ok(if reasons.iter().any(|r| r == "Deployed") {
                Poll::Ready(reasons)
            } else {
                Poll::Pending(format!("{reasons:?}"))
            })
        })
        .await?;
        for reason in ["Approved", "Admitted", "Deployed"] {
            assert!(
                reasons.iter().any(|r| r == reason),
                "{kind}: {reason} in {reasons:?}"
            );
        }
    }

    // The lock is released: the next change is an ordinary new request.
    let v2 = rolling_web(ns, "nginx:1.28", 2);
    assert_refused(
        &apply(User::Dave, &v2, &[])?,
        "no DeploymentApproval for this change yet",
    );

    // The operator's metrics saw it.
    let metrics = metrics()?;
    for family in [
        "countersign_approvals{phase=\"Deployed\"}",
        "countersign_request_to_approved_seconds_count",
        "countersign_request_to_deployed_seconds_count",
    ] {
        assert!(
            metrics.contains(family),
            "/metrics lacks {family}: {metrics}"
        );
    }
    let deployed_count = metrics
        .lines()
        .find(|l| l.starts_with("countersign_request_to_deployed_seconds_count"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_default();
    assert!(deployed_count >= 1.0, "{metrics}");
    Ok(())
}

#[tokio::test]
async fn an_approval_not_applied_within_its_approval_ttl_expires() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("unused", None).await?;
    let ns = ns.name();
    let mut chain = alice_approves();
    chain["approval"]["approvalTTL"] = json!("5s");
    let _policy = Policy::apply(ns, chain)?;
    let v1 = web(ns, "nginx:1.27", 1);
    let name = open_request(ns, &v1).await?;
    assert_ok(&review(
        User::Alice,
        ns,
        &name,
        json!({"decision": "Approve"}),
    )?);
    let approved = status_until(ns, &name, "Approved", |s| {
        s.phase == ApprovalPhase::Approved
    })
    .await?;
    let deadline = approved.expires_at.context("expiresAt")?.0;
    let expired = status_until(ns, &name, "Expired", |s| s.phase == ApprovalPhase::Expired).await?;
    let seen = jiff::Timestamp::now();
    assert!(seen >= deadline, "expired before its approvalTTL ran out");
    assert!(
        seen.duration_since(deadline) < jiff::SignedDuration::from_secs(5),
        "expired {:#} late",
        seen.duration_since(deadline)
    );
    assert_eq!(expired.approved_by, ["alice"]);
    // Too late: the change is not admitted, and the attempt opens a fresh request.
    assert_refused(&apply(User::Dave, &v1, &[])?, "expired");
    let trail = trail_of(ns, &name, 5).await?;
    let entry = step(&trail, "expired")?;
    assert_eq!(
        entry.spec.reason.as_deref(),
        Some("approved but not applied in time")
    );
    Ok(())
}

#[tokio::test]
async fn a_rollout_that_cannot_finish_fails_at_its_timeout_and_releases_the_lock() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("timeout", None).await?;
    let ns = ns.name();
    let mut chain = alice_approves();
    chain["approval"]["rolloutTimeout"] = json!("8s");
    let _policy = Policy::apply(ns, chain)?;

    // Its pods can never be scheduled.
    let v1 = web(ns, "nginx:1.27", 1);
    let name = request_approve_apply(ns, &v1, &[User::Alice]).await?;
    let deploying = status_until(ns, &name, "Deploying, seen on the object", |s| {
        s.rollout
            .as_ref()
            .is_some_and(|r| r.applied_generation.is_some())
    })
    .await?;
    assert_eq!(deploying.phase, ApprovalPhase::Deploying);
    let v2 = web(ns, "nginx:1.28", 1);
    assert_refused(&apply(User::Dave, &v2, &[])?, "is rolling out");

    let failed = status_until(ns, &name, "Failed", |s| s.phase == ApprovalPhase::Failed).await?;
    assert_eq!(rolled_out_reason(&failed), Some("RolloutTimeout"));
    let admitted_at = failed
        .rollout
        .as_ref()
        .and_then(|r| r.admitted_at.clone())
        .context("admittedAt")?;
    let finished_at = failed
        .rollout
        .as_ref()
        .and_then(|r| r.finished_at.clone())
        .context("finishedAt")?;
    let took = finished_at.0.duration_since(admitted_at.0).as_secs_f64();
    assert!(
        (8.0..20.0).contains(&took),
        "failed {took} s after admission"
    );
    // Requested, the review, the level, Approved, Admitted and RolloutFailed.
    let trail = trail_of(ns, &name, 6).await?;
    let entry = step(&trail, "rollout-failed")?;
    assert_eq!(entry.spec.action, AuditAction::RolloutFailed);
    assert!(
        entry
            .spec
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("rollout timeout of 8s")),
        "{:?}",
        entry.spec.reason
    );

    // The lock is released: the next change is an ordinary new request.
    apply_until("the lock to be released", &v2, &[], |out| {
        text(out).contains("no DeploymentApproval for this change yet")
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn deleting_the_target_fails_its_rollout() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("deleted", None).await?;
    let ns = ns.name();
    let _policy = Policy::apply(ns, alice_approves())?;
    let v1 = web(ns, "nginx:1.27", 1);
    let name = request_approve_apply(ns, &v1, &[User::Alice]).await?;
    status_until(ns, &name, "the change seen on the object", |s| {
        s.rollout
            .as_ref()
            .is_some_and(|r| r.applied_generation.is_some())
    })
    .await?;
    assert_ok(&kubectl(
        User::Dave,
        &["delete", "deployment", "web", "-n", ns, "--wait=false"],
    )?);
    let failed = status_until(ns, &name, "Failed", |s| s.phase == ApprovalPhase::Failed).await?;
    assert_eq!(rolled_out_reason(&failed), Some("TargetDeleted"));
    assert_eq!(failed.lock_holder, None);
    Ok(())
}

#[tokio::test]
async fn an_admitted_change_that_never_reaches_the_object_is_approved_again() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("lapsed", None).await?;
    let ns = ns.name();
    // The namespace may hold one Deployment, and already does: ResourceQuota, an admission
    // plugin that runs after the webhooks, refuses the create countersign admitted.
    let quota = json!({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": { "name": "one-deployment", "namespace": ns },
        "spec": { "hard": { "count/deployments.apps": "1" } },
    });
    let mut other = rolling_web(ns, "nginx:1.27", 1);
    other["metadata"]["name"] = json!("other");
    for object in [&quota, &other] {
        let out = TestCluster::get().kubectl_output(
            User::Admin,
            &["apply", "-f", "-"],
            Some(object.to_string().as_bytes()),
        )?;
        assert_ok(&out);
    }
    let admin = TestCluster::get().client(User::Admin).await?;
    let quotas = Api::<k8s_openapi::api::core::v1::ResourceQuota>::namespaced(admin, ns);
    until(
        "the quota to count the Deployment",
        Duration::from_secs(30),
        || async {
            let used = quotas
                .get("one-deployment")
                .await?
                .status
                .and_then(|s| s.used)
                .and_then(|used| used.get("count/deployments.apps").map(|q| q.0.clone()));
            Ok(if used.as_deref() == Some("1") {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("{used:?}"))
            })
        },
    )
    .await?;
    let mut chain = alice_approves();
    chain["approval"]["approvalTTL"] = json!("1h");
    let _policy = Policy::apply(ns, chain)?;

    let v1 = rolling_web(ns, "nginx:1.27", 1);
    let name = open_request(ns, &v1).await?;
    assert_ok(&review(
        User::Alice,
        ns,
        &name,
        json!({"decision": "Approve"}),
    )?);
    status_until(ns, &name, "Approved", |s| {
        s.phase == ApprovalPhase::Approved
    })
    .await?;
    let refused = apply_until("the quota to refuse", &v1, &[], |out| {
        text(out).contains("exceeded quota")
    })
    .await?;
    assert!(!refused.status.success());

    // Admitted, then refused after countersign: the approval returns to Approved.
    let released = status_until(ns, &name, "Approved again", |s| {
        s.phase == ApprovalPhase::Approved && rolled_out_reason(s) == Some("NotApplied")
    })
    .await?;
    assert_eq!(released.lock_holder, None);
    assert_eq!(released.rollout.as_ref().map(|r| r.admissions), Some(1));
    // Requested, the review, the level, Approved, Admitted and NotApplied: the status may be
    // written a moment before the last of them.
    let trail = trail_of(ns, &name, 6).await?;
    assert_eq!(
        step(&trail, "not-applied")?.spec.action,
        AuditAction::NotApplied
    );

    // Room again: the same approval admits the change, which rolls out.
    assert_ok(&kubectl(
        User::Admin,
        &["delete", "deployment", "other", "-n", ns],
    )?);
    apply_until(
        "the approved change to be admitted again",
        &v1,
        &[],
        |out| out.status.success(),
    )
    .await?;
    let deployed = status_until(ns, &name, "Deployed", |s| {
        s.phase == ApprovalPhase::Deployed
    })
    .await?;
    assert_eq!(deployed.rollout.as_ref().map(|r| r.admissions), Some(2));
    let trail = trail_of(ns, &name, 8).await?;
    for (suffix, action) in [
        ("admitted", AuditAction::Admitted),
        ("not-applied", AuditAction::NotApplied),
        ("admitted-2", AuditAction::Admitted),
        ("deployed", AuditAction::Deployed),
    ] {
        assert_eq!(step(&trail, suffix)?.spec.action, action, "{suffix}");
    }
    Ok(())
}

/// The lock names the approval admitted a moment ago, whose stored status may not have
/// caught up with its reviews yet (the webhook admits on the reviews, ahead of the
/// operator's status): another approved change of the object waits for the lock to settle
/// rather than taking it. Two replicas once admitted two changes of one object this way,
/// when the operator was slow to write `Approved`. A holder that never got to `Deploying`
/// holds nothing once the lock has settled.
#[tokio::test]
async fn a_lock_taken_a_moment_ago_holds_while_its_holder_is_still_stored_pending() -> Result<()> {
    use countersign::core::rollout::lock::{LOCK_LABEL, lock_name};
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    Countersign::get();
    let ns = TestNamespace::create("settling", None).await?;
    let ns = ns.name();
    let _policy = Policy::apply(ns, alice_approves())?;
    // Change A is requested and never approved: its stored phase stays Pending.
    let holder = open_request(ns, &web(ns, "nginx:1.26", 1)).await?;
    status_until(ns, &holder, "Pending", |s| {
        s.phase == ApprovalPhase::Pending
    })
    .await?;
    // Change B is approved.
    let change = web(ns, "nginx:1.27", 1);
    let approved = open_request(ns, &change).await?;
    assert_ok(&review(
        User::Alice,
        ns,
        &approved,
        json!({"decision": "Approve"}),
    )?);
    status_until(ns, &approved, "Approved", |s| {
        s.phase == ApprovalPhase::Approved
    })
    .await?;
    // The object's lock, taken a moment ago for A, as a replica admitting A leaves it
    // before A's move to Deploying lands.
    let admin = TestCluster::get().client(User::Admin).await?;
    let leases = Api::<Lease>::namespaced(admin, INSTALL_NAMESPACE);
    let lock = Lease {
        metadata: ObjectMeta {
            name: Some(lock_name("apps", "Deployment", ns, "web")),
            labels: Some([(LOCK_LABEL.to_string(), "true".to_string())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(format!("{ns}/{holder}")),
            acquire_time: Some(MicroTime(jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    leases.create(&Default::default(), &lock).await?;
    assert_refused(&apply(User::Dave, &change, &[])?, "admitted a moment ago");
    // Once the lock has settled, A (still Pending) holds nothing: B goes through and
    // holds the lock.
    apply_until("the lock to settle", &change, &[], |out| {
        out.status.success()
    })
    .await?;
    let taken = leases
        .get(&lock_name("apps", "Deployment", ns, "web"))
        .await?;
    assert_eq!(
        taken.spec.and_then(|s| s.holder_identity),
        Some(format!("{ns}/{approved}"))
    );
    Ok(())
}
