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
use crate::core::chain::ChainState;

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
    // Admitted (and maybe rolled out since): the approval was used, so its approvalTTL
    // running out afterwards expires nothing.
    let admitted = matches!(
        approval.status.as_ref().map(|s| s.phase),
        Some(ApprovalPhase::Deploying | ApprovalPhase::Deployed | ApprovalPhase::Failed)
    );
    let approved = matches!(
        state.phase,
        ApprovalPhase::Approved | ApprovalPhase::Deploying
    ) || admitted;
    if approved && let (Some(time), Some(last)) = (state.approved_at, state.approved_by.last()) {
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
    if state.phase == ApprovalPhase::Expired && !admitted {
        trail.push(entry(
            "expired".into(),
            AuditAction::Expired,
            state.expires_at.unwrap_or(now),
            UserInfo::new(COUNTERSIGN_ACTOR, &[]),
            Some("no decision in time".into()),
        ));
    }
    if admitted {
        trail.push(entry(
            "admitted".into(),
            AuditAction::Admitted,
            now,
            spec.change.requester.clone(),
            approval
                .status
                .as_ref()
                .and_then(|s| s.lock_holder.clone())
                .map(|replica| format!("admitted by {replica}")),
        ));
    }
    trail
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
fn entry_key(approval: &DeploymentApproval) -> String {
    let namespace = approval.metadata.namespace.as_deref().unwrap_or_default();
    let name = approval.metadata.name.as_deref().unwrap_or_default();
    let uid: String = approval
        .metadata
        .uid
        .as_deref()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    let base: String = format!("{namespace}-{name}").chars().take(200).collect();
    format!("{}-{uid}", base.trim_end_matches(['-', '.']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::chain::RoleBindingSnapshot;
    use crate::core::decision::approval_state;

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
}
