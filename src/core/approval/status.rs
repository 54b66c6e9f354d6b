//! The status the operator writes on a DeploymentApproval: a function of its reviews (through
//! `core::approval::chain`, via `approval_state`), the status it has, and `now`.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::{ApprovalPhase, DeploymentApproval, DeploymentApprovalStatus};
use crate::core::approval::chain::ChainState;

/// What the operator should do with an approval's status.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusPlan {
    /// The status to write; `None`: leave it as it is.
    pub write: Option<DeploymentApprovalStatus>,
    /// When the status changes next without any review (the request's or the approval's
    /// expiry): reconcile again then.
    pub next_deadline: Option<Timestamp>,
}

/// The status an approval should have at `now`, its chain being `state`
/// (`approval_state`, evaluated once per reconcile). A status that records `Deploying` or
/// a terminal phase is left alone: the webhook moved it to Deploying as it admitted the
/// change, and the rollout, not the reviews, decides what comes after; terminal phases
/// never change.
pub fn plan_status(
    approval: &DeploymentApproval,
    state: &ChainState,
    now: Timestamp,
) -> StatusPlan {
    let stored = approval.status.as_ref();
    let settled =
        stored.is_some_and(|s| s.phase == ApprovalPhase::Deploying || s.phase.is_terminal());
    if settled {
        return StatusPlan {
            write: None,
            next_deadline: None,
        };
    }
    let generation = approval.metadata.generation;
    let mut desired = state.to_status();
    desired.observed_generation = generation;
    let previous = stored.cloned().unwrap_or_default();
    desired.notifications = previous.notifications.clone();
    desired.lock_holder = previous.lock_holder.clone();
    desired.rollout = previous.rollout.clone();
    desired.deploy_token = previous.deploy_token.clone();
    desired.conditions = previous.conditions.clone();
    match state.satisfiable_condition(now, generation) {
        Some(condition) => upsert_condition(&mut desired.conditions, condition),
        None => desired
            .conditions
            .retain(|c| c.type_ != crate::core::approval::chain::SATISFIABLE_CONDITION),
    }
    let next_deadline = match state.phase {
        ApprovalPhase::Pending | ApprovalPhase::Approved => state.expires_at.filter(|t| *t > now),
        _ => None,
    };
    StatusPlan {
        write: (stored != Some(&desired)).then_some(desired),
        next_deadline,
    }
}

/// Put `condition` in place of the one of its type (keeping the order of the others, so a
/// status that does not change compares equal), keeping its `lastTransitionTime` while its
/// status does not change (API conventions).
pub fn upsert_condition(conditions: &mut Vec<Condition>, mut condition: Condition) {
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        if existing.status == condition.status {
            condition.last_transition_time = existing.last_transition_time.clone();
        }
        *existing = condition;
    } else {
        conditions.push(condition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ReviewDecision;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use crate::core::admission::decision::approval_state;
    use crate::core::approval::chain::RoleBindingSnapshot;
    use crate::core::test_builders::{minutes as t, two_level_request};

    fn state_of(approval: &DeploymentApproval, now: Timestamp) -> ChainState {
        approval_state(approval, "shop", &RoleBindingSnapshot::default(), now)
    }

    /// The builders' request, whose approval must be applied within 30 minutes.
    fn approval(
        reviews: &[(&str, ReviewDecision, i64)],
        phase: Option<ApprovalPhase>,
    ) -> DeploymentApproval {
        let mut approval = two_level_request(reviews, phase);
        approval.spec.policy.chain.approval_ttl = Some("30m".into());
        approval
    }

    #[test]
    fn status_plans() {
        use ReviewDecision::{Approve, Reject};
        // (name, approval, now in minutes, phase written, next deadline in minutes)
        type Case = (
            &'static str,
            DeploymentApproval,
            i64,
            Option<ApprovalPhase>,
            Option<i64>,
        );
        let cases: Vec<Case> = vec![
            (
                "new request",
                approval(&[], None),
                1,
                Some(ApprovalPhase::Pending),
                Some(60),
            ),
            (
                "level one done",
                approval(&[("alice", Approve, 1)], None),
                2,
                Some(ApprovalPhase::Pending),
                Some(60),
            ),
            (
                "approved",
                approval(&[("alice", Approve, 1), ("carol", Approve, 2)], None),
                3,
                Some(ApprovalPhase::Approved),
                Some(32),
            ),
            (
                "approved, not applied in time",
                approval(&[("alice", Approve, 1), ("carol", Approve, 2)], None),
                33,
                Some(ApprovalPhase::Expired),
                None,
            ),
            (
                "rejected",
                approval(&[("carol", Reject, 1)], None),
                2,
                Some(ApprovalPhase::Rejected),
                None,
            ),
            (
                "request expired",
                approval(&[], None),
                61,
                Some(ApprovalPhase::Expired),
                None,
            ),
            (
                "a forged Approved over nothing",
                approval(&[], Some(ApprovalPhase::Approved)),
                1,
                Some(ApprovalPhase::Pending),
                Some(60),
            ),
            (
                "admitted: the rollout decides",
                approval(
                    &[("alice", Approve, 1), ("carol", Approve, 2)],
                    Some(ApprovalPhase::Deploying),
                ),
                90,
                None,
                None,
            ),
            (
                "terminal stays",
                approval(&[], Some(ApprovalPhase::Rejected)),
                1,
                None,
                None,
            ),
        ];
        for (name, approval, now, phase, deadline) in cases {
            let plan = plan_status(&approval, &state_of(&approval, t(now)), t(now));
            assert_eq!(plan.write.as_ref().map(|s| s.phase), phase, "{name}");
            assert_eq!(plan.next_deadline, deadline.map(t), "{name}");
        }
    }

    #[test]
    fn a_written_status_is_not_written_again_and_keeps_its_transition_time() {
        let mut approval = approval(&[], None);
        let first = plan_status(&approval, &state_of(&approval, t(1)), t(1))
            .write
            .expect("a first status");
        assert_eq!(first.current_level, Some(1));
        approval.status = Some(first.clone());
        let again = plan_status(&approval, &state_of(&approval, t(5)), t(5));
        assert_eq!(again.write, None, "nothing changed");
        assert_eq!(first.conditions[0].last_transition_time, Time(t(1)));
    }
}
