//! The audit trail of a request (SPEC §7), derived from what is durable in etcd: the
//! request's spec (who asked, each review) and its status (admitted, and later deployed or
//! failed). Every entry has a name that is a function of the request and the step, so a
//! retry or a restart writes each one exactly once, and a crash loses none: the operator
//! derives the whole list again and creates what is missing.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    ApprovalPhase, AuditAction, AuditEntrySpec, AuditTarget, DeploymentApproval, ReviewDecision,
    UserInfo,
};
use crate::core::approval::chain::ChainState;

/// The actor of steps nobody took (an expiry): countersign itself.
pub const COUNTERSIGN_ACTOR: &str = "system:countersign";

/// One entry of the trail, with its deterministic name.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedEntry {
    pub name: String,
    pub spec: AuditEntrySpec,
}

/// Every entry the request's durable state implies, in order. `state` is its chain at the
/// time of the reconcile (`approval_state`); `now` dates only the admission, whose moment
/// is not recorded elsewhere.
pub fn trail(
    approval: &DeploymentApproval,
    state: &ChainState,
    now: Timestamp,
) -> Vec<PlannedEntry> {
    let spec = &approval.spec;
    let name = approval.metadata.name.clone().unwrap_or_default();
    let key = entry_key(approval);
    let target = AuditTarget {
        api_version: spec.target.api_version.clone(),
        kind: spec.target.kind.clone(),
        namespace: approval.metadata.namespace.clone(),
        name: spec.target.name.clone(),
        uid: spec.target.uid.clone(),
    };
    let entry = |step: String,
                 action: AuditAction,
                 time: Timestamp,
                 actor: UserInfo,
                 reason: Option<String>| {
        PlannedEntry {
            name: format!("{key}-{step}"),
            spec: AuditEntrySpec {
                time: Time(time),
                action,
                actor,
                target: target.clone(),
                change_digest: Some(spec.change.digest.clone()),
                approval: Some(name.clone()),
                policy: Some(spec.policy.name.clone()),
                reason,
                caller: None,
            },
        }
    };
    let mut trail = vec![entry(
        "requested".into(),
        AuditAction::Requested,
        spec.change.requested_at.0,
        spec.change.requester.clone(),
        Some(spec.change.summary.text.clone()).filter(|t| !t.is_empty()),
    )];
    let review_time = |user: &str| {
        spec.reviews
            .iter()
            .filter(|r| r.user == user)
            .map(|r| r.time.0)
            .max()
    };
    for (i, review) in spec.reviews.iter().enumerate() {
        let decision = match review.decision {
            ReviewDecision::Approve => "approved",
            ReviewDecision::Reject => "rejected",
        };
        let reason = match &review.comment {
            Some(comment) => format!("{decision}: {comment}"),
            None => decision.to_string(),
        };
        trail.push(entry(
            format!("review-{i}"),
            AuditAction::ReviewRecorded,
            review.time.0,
            UserInfo {
                username: review.user.clone(),
                groups: review.groups.clone(),
            },
            Some(reason),
        ));
    }
    for (i, level) in state.levels.iter().enumerate().filter(|(_, l)| l.satisfied) {
        // Satisfied by its last counted approval.
        let last = level
            .approved_by
            .iter()
            .filter_map(|user| review_time(user).map(|t| (t, user)))
            .max();
        if let Some((time, user)) = last {
            trail.push(entry(
                format!("level-{}", i + 1),
                AuditAction::LevelSatisfied,
                time,
                reviewer(spec, user),
                Some(format!(
                    "level {}/{} {} satisfied by {}",
                    i + 1,
                    state.levels.len(),
                    level.name,
                    level.approved_by.join(", ")
                )),
            ));
        }
    }
    let status = approval.status.as_ref();
    let phase = status.map(|s| s.phase);
    let rollout = status.and_then(|s| s.rollout.as_ref());
    // Admitted (and maybe rolled out since): the approval was used, so its approvalTTL
    // running out afterwards expires nothing.
    let admitted = matches!(
        phase,
        Some(ApprovalPhase::Deploying | ApprovalPhase::Deployed | ApprovalPhase::Failed)
    );
    // Once every level was satisfied the request was approved, whatever came after.
    if let (Some(time), Some(last)) = (state.approved_at, state.approved_by.last()) {
        trail.push(entry(
            "approved".into(),
            AuditAction::Approved,
            time,
            reviewer(spec, last),
            Some(format!("approved by {}", state.approved_by.join(", "))),
        ));
    }
    if state.phase == ApprovalPhase::Rejected
        && let Some((user, comment)) = &state.rejected_by
    {
        trail.push(entry(
            "rejected".into(),
            AuditAction::Rejected,
            review_time(user).unwrap_or(now),
            reviewer(spec, user),
            comment.clone(),
        ));
    }
    // Each admission, and each that never reached the object (all of them unless the
    // last is still under way or rolled out). Only the latest admission's time and
    // actor are durable; earlier entries were written when they happened.
    let admissions = rollout.map_or(u32::from(admitted), |r| {
        r.admissions.max(u32::from(admitted))
    });
    let lapsed = if admitted {
        admissions.saturating_sub(1)
    } else {
        admissions
    };
    let numbered = |step: &str, n: u32| {
        if n == 1 {
            step.to_string()
        } else {
            format!("{step}-{n}")
        }
    };
    // An admission on a review whose caller was not authenticated (no client CA is
    // configured) is only a claim: its Admitted entry waits until the change is seen on the
    // object, and one that never gets there leaves no Admitted entry at all.
    let unverified = |n: u32| rollout.is_some_and(|r| r.unverified_admissions.contains(&n));
    let applied = rollout.and_then(|r| r.applied_generation);
    for n in 1..=admissions {
        let latest = n == admissions;
        let (time, actor) = match rollout {
            Some(r) if latest => (
                r.admitted_at.as_ref().map_or(now, |t| t.0),
                r.admitted_by
                    .clone()
                    .unwrap_or_else(|| spec.change.requester.clone()),
            ),
            _ => (now, spec.change.requester.clone()),
        };
        let claimed = unverified(n);
        let seen_on_object = latest && admitted && applied.is_some();
        if !claimed || seen_on_object {
            let mut reason = status
                .and_then(|s| s.lock_holder.clone())
                .filter(|_| latest && admitted)
                .map(|replica| format!("admitted by {replica}"));
            if claimed {
                reason = Some(format!(
                    "admitted on a review whose caller was not authenticated; the change was seen on the object at generation {}",
                    applied.unwrap_or_default()
                ));
            }
            trail.push(entry(
                numbered("admitted", n),
                AuditAction::Admitted,
                time,
                actor,
                reason,
            ));
        }
        if n <= lapsed {
            let time = rolled_out_since(status).filter(|_| latest).unwrap_or(now);
            trail.push(entry(
                numbered("not-applied", n),
                AuditAction::NotApplied,
                time,
                UserInfo::new(COUNTERSIGN_ACTOR, &[]),
                Some(if claimed {
                    "a review whose caller was not authenticated claimed this change was applied; it never reached the object, so no admission is recorded".into()
                } else {
                    "the admitted change never reached the object".into()
                }),
            ));
        }
    }
    if state.phase == ApprovalPhase::Expired && !admitted {
        trail.push(entry(
            "expired".into(),
            AuditAction::Expired,
            state.expires_at.unwrap_or(now),
            UserInfo::new(COUNTERSIGN_ACTOR, &[]),
            Some(if state.approved_at.is_some() {
                "approved but not applied in time".into()
            } else {
                "no decision in time".into()
            }),
        ));
    }
    if let Some(token) = status.and_then(|s| s.deploy_token.as_ref()) {
        trail.push(entry(
            "token-issued".into(),
            AuditAction::DeployTokenIssued,
            token.issued_at.0,
            UserInfo::new(COUNTERSIGN_ACTOR, &[]),
            Some(format!(
                "deploy token for ServiceAccount {} in Secret {}, valid until {}",
                token.service_account, token.secret_name, token.expires_at.0
            )),
        ));
        if let Some(revoked) = &token.revoked_at {
            trail.push(entry(
                "token-revoked".into(),
                AuditAction::DeployTokenRevoked,
                revoked.0,
                UserInfo::new(COUNTERSIGN_ACTOR, &[]),
                Some(format!(
                    "ServiceAccount {}, its Role and RoleBinding deleted",
                    token.service_account
                )),
            ));
        }
    }
    let finished = |action: AuditAction, step: &str| {
        entry(
            step.into(),
            action,
            rollout
                .and_then(|r| r.finished_at.as_ref())
                .map_or(now, |t| t.0),
            UserInfo::new(COUNTERSIGN_ACTOR, &[]),
            rollout.and_then(|r| r.message.clone()),
        )
    };
    match phase {
        Some(ApprovalPhase::Deployed) => trail.push(finished(AuditAction::Deployed, "deployed")),
        Some(ApprovalPhase::Failed) => {
            trail.push(finished(AuditAction::RolloutFailed, "rollout-failed"))
        }
        _ => {}
    }
    trail
}

/// The Events that announce a newly written entry `name`: on its target and, when given,
/// on the request it belongs to; a Warning for what went wrong or around the gate.
pub fn entry_events(
    spec: &AuditEntrySpec,
    name: &str,
    request: Option<k8s_openapi::api::core::v1::ObjectReference>,
) -> Vec<crate::core::plan::PlannedEvent> {
    use crate::core::plan::{EventKind, PlannedEvent};
    let note = format!(
        "{:?} by {}{} (AuditEntry {name})",
        spec.action,
        spec.actor.username,
        spec.reason
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    let kind = match spec.action {
        AuditAction::Rejected
        | AuditAction::Expired
        | AuditAction::RolloutFailed
        | AuditAction::NotApplied
        | AuditAction::WebhookConfigurationChanged
        | AuditAction::WebhookConfigurationDeleted => EventKind::Warning,
        _ => EventKind::Normal,
    };
    request
        .into_iter()
        .chain([spec.target.reference()])
        .map(|regarding| PlannedEvent {
            regarding,
            kind,
            reason: format!("{:?}", spec.action),
            note: note.clone(),
            action: "Audit",
        })
        .collect()
}

/// When the `RolledOut` condition last changed: the moment the latest admission was found
/// not to have reached the object.
fn rolled_out_since(status: Option<&crate::api::DeploymentApprovalStatus>) -> Option<Timestamp> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == crate::core::rollout::confirm::ROLLED_OUT_CONDITION)
        .map(|c| c.last_transition_time.0)
}

/// The reviewer `user` as they reviewed (with the groups they approved through).
fn reviewer(spec: &crate::api::DeploymentApprovalSpec, user: &str) -> UserInfo {
    spec.reviews
        .iter()
        .find(|r| r.user == user)
        .map(|r| UserInfo {
            username: r.user.clone(),
            groups: r.groups.clone(),
        })
        .unwrap_or_else(|| UserInfo::new(user, &[]))
}

/// `<namespace>-<approval>-<uid prefix>`, cut to leave room for the step: unique per
/// request (a recreated request of the same name has another uid).
pub(crate) fn entry_key(approval: &DeploymentApproval) -> String {
    let namespace = approval.metadata.namespace.as_deref().unwrap_or_default();
    let name = approval.metadata.name.as_deref().unwrap_or_default();
    object_key(
        &format!("{namespace}-{name}"),
        approval.metadata.uid.as_deref().unwrap_or_default(),
    )
}

/// `<base>-<uid prefix>`, the base cut to leave room for a step: the key of one object's
/// entries (a recreated object of the same name has another uid).
pub(crate) fn object_key(base: &str, uid: &str) -> String {
    let uid: String = uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    let base: String = base.chars().take(200).collect();
    format!("{}-{uid}", base.trim_end_matches(['-', '.']))
}

/// `policy-<name>-<uid prefix>`: the key of a policy's entries.
pub(crate) fn policy_key(policy: &crate::api::ApprovalPolicy) -> String {
    object_key(
        &format!(
            "policy-{}",
            policy.metadata.name.as_deref().unwrap_or_default()
        ),
        policy.metadata.uid.as_deref().unwrap_or_default(),
    )
}

/// A policy as the target of an entry.
pub(crate) fn policy_target(policy: &crate::api::ApprovalPolicy) -> AuditTarget {
    AuditTarget {
        api_version: "countersign.dev/v1alpha1".into(),
        kind: "ApprovalPolicy".into(),
        namespace: None,
        name: policy.metadata.name.clone().unwrap_or_default(),
        uid: policy.metadata.uid.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::admission::decision::approval_state;
    use crate::core::approval::chain::RoleBindingSnapshot;

    use crate::core::test_builders::{minutes as t, two_level_request as request};

    fn steps(approval: &DeploymentApproval, now: i64) -> Vec<(String, AuditAction, String)> {
        let state = approval_state(approval, "shop", &RoleBindingSnapshot::default(), t(now));
        trail(approval, &state, t(now))
            .into_iter()
            .map(|e| (e.name, e.spec.action, e.spec.actor.username))
            .collect()
    }

    #[test]
    fn the_trail_follows_the_durable_state() {
        use ReviewDecision::{Approve, Reject};
        let key = "shop-web-1-6f1c2d3e";
        let admitted = request(
            &[("alice", Approve, 1), ("carol", Approve, 2)],
            Some(ApprovalPhase::Deploying),
        );
        assert_eq!(
            steps(&admitted, 3),
            vec![
                (
                    format!("{key}-requested"),
                    AuditAction::Requested,
                    "dave".into()
                ),
                (
                    format!("{key}-review-0"),
                    AuditAction::ReviewRecorded,
                    "alice".into()
                ),
                (
                    format!("{key}-review-1"),
                    AuditAction::ReviewRecorded,
                    "carol".into()
                ),
                (
                    format!("{key}-level-1"),
                    AuditAction::LevelSatisfied,
                    "alice".into()
                ),
                (
                    format!("{key}-level-2"),
                    AuditAction::LevelSatisfied,
                    "carol".into()
                ),
                (
                    format!("{key}-approved"),
                    AuditAction::Approved,
                    "carol".into()
                ),
                (
                    format!("{key}-admitted"),
                    AuditAction::Admitted,
                    "dave".into()
                ),
            ]
        );
        let rejected = request(&[("carol", Reject, 1)], None);
        assert_eq!(
            steps(&rejected, 2).last(),
            Some(&(
                format!("{key}-rejected"),
                AuditAction::Rejected,
                "carol".into()
            ))
        );
        let expired = request(&[], None);
        assert_eq!(
            steps(&expired, 61).last(),
            Some(&(
                format!("{key}-expired"),
                AuditAction::Expired,
                COUNTERSIGN_ACTOR.into()
            ))
        );
        // Admitted, then its approvalTTL runs out: the change was applied in time, nothing
        // expired.
        let mut in_time = admitted.clone();
        in_time.spec.policy.chain.approval_ttl = Some("30m".into());
        assert!(
            steps(&in_time, 90)
                .iter()
                .all(|(_, action, _)| *action != AuditAction::Expired),
            "{:?}",
            steps(&in_time, 90)
        );
        // Derived again later, the same names: nothing is written twice.
        let again = steps(&admitted, 90);
        assert_eq!(again.len(), 7);
        assert_eq!(again[0].0, format!("{key}-requested"));
    }

    #[test]
    fn admissions_lapses_and_rollout_ends_are_recorded_once_each() {
        use crate::api::RolloutStatus;
        use ReviewDecision::Approve;
        let key = "shop-web-1-6f1c2d3e";
        let with = |phase: ApprovalPhase, admissions: u32| {
            let mut approval =
                request(&[("alice", Approve, 1), ("carol", Approve, 2)], Some(phase));
            approval.spec.policy.chain.approval_ttl = Some("30m".into());
            if let Some(status) = approval.status.as_mut() {
                status.rollout = Some(RolloutStatus {
                    admitted_at: Some(Time(t(5))),
                    admitted_by: Some(UserInfo::new("argocd", &[])),
                    admissions,
                    finished_at: Some(Time(t(8))),
                    message: Some("2 of 2 replicas updated and available".into()),
                    ..RolloutStatus::default()
                });
            }
            approval
        };
        let after_approval =
            |approval: &DeploymentApproval, now: i64| -> Vec<(String, AuditAction, String)> {
                steps(approval, now).into_iter().skip(6).collect()
            };
        let named = |step: &str, action: AuditAction, actor: &str| {
            (format!("{key}-{step}"), action, actor.to_string())
        };
        let system = COUNTERSIGN_ACTOR;
        type Case = (
            &'static str,
            DeploymentApproval,
            i64,
            Vec<(String, AuditAction, String)>,
        );
        let cases: Vec<Case> = vec![
            (
                "admitted by a GitOps controller",
                with(ApprovalPhase::Deploying, 1),
                6,
                vec![named("admitted", AuditAction::Admitted, "argocd")],
            ),
            (
                "never reached the object: approved again",
                with(ApprovalPhase::Approved, 1),
                6,
                vec![
                    named("admitted", AuditAction::Admitted, "argocd"),
                    named("not-applied", AuditAction::NotApplied, system),
                ],
            ),
            (
                "admitted a second time",
                with(ApprovalPhase::Deploying, 2),
                9,
                vec![
                    named("admitted", AuditAction::Admitted, "dave"),
                    named("not-applied", AuditAction::NotApplied, system),
                    named("admitted-2", AuditAction::Admitted, "argocd"),
                ],
            ),
            (
                "deployed",
                with(ApprovalPhase::Deployed, 1),
                9,
                vec![
                    named("admitted", AuditAction::Admitted, "argocd"),
                    named("deployed", AuditAction::Deployed, system),
                ],
            ),
            (
                "rollout failed",
                with(ApprovalPhase::Failed, 1),
                9,
                vec![
                    named("admitted", AuditAction::Admitted, "argocd"),
                    named("rollout-failed", AuditAction::RolloutFailed, system),
                ],
            ),
            (
                "never applied and the approval ran out",
                with(ApprovalPhase::Expired, 1),
                40,
                vec![
                    named("admitted", AuditAction::Admitted, "argocd"),
                    named("not-applied", AuditAction::NotApplied, system),
                    named("expired", AuditAction::Expired, system),
                ],
            ),
        ];
        for (name, approval, now, expected) in cases {
            assert_eq!(after_approval(&approval, now), expected, "{name}");
        }
        // The end of a rollout is dated when it ended, not when it is recorded.
        let deployed = with(ApprovalPhase::Deployed, 1);
        let state = approval_state(&deployed, "shop", &RoleBindingSnapshot::default(), t(50));
        let entry = trail(&deployed, &state, t(50))
            .into_iter()
            .find(|e| e.spec.action == AuditAction::Deployed)
            .expect("a Deployed entry");
        assert_eq!(entry.spec.time, Time(t(8)));
        // A deploy token's issue and revocation, each once, when they happened.
        let mut granted = with(ApprovalPhase::Deployed, 1);
        if let Some(status) = granted.status.as_mut() {
            status.deploy_token = Some(crate::api::DeployTokenStatus {
                secret_name: "countersign-deploy-web-1".into(),
                service_account: "countersign-deploy-web-1".into(),
                issued_at: Time(t(3)),
                expires_at: Time(t(63)),
                revoked_at: Some(Time(t(9))),
            });
        }
        let tokens: Vec<(String, AuditAction, String)> = after_approval(&granted, 10)
            .into_iter()
            .filter(|(_, action, _)| {
                matches!(
                    action,
                    AuditAction::DeployTokenIssued | AuditAction::DeployTokenRevoked
                )
            })
            .collect();
        assert_eq!(
            tokens,
            vec![
                named("token-issued", AuditAction::DeployTokenIssued, system),
                named("token-revoked", AuditAction::DeployTokenRevoked, system),
            ]
        );
        // An approved request whose approval ran out unused keeps its Approved entry.
        let unused = request(&[("alice", Approve, 1), ("carol", Approve, 2)], None);
        let mut unused = unused;
        unused.spec.policy.chain.approval_ttl = Some("30m".into());
        let actions: Vec<AuditAction> = steps(&unused, 40).into_iter().map(|s| s.1).collect();
        assert!(actions.contains(&AuditAction::Approved), "{actions:?}");
        assert_eq!(actions.last(), Some(&AuditAction::Expired));
    }
}
