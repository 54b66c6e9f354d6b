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
    pub recall: Recall,
}

/// How much of a planned entry the state it is planned from still holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recall {
    /// All of it (time aside, which a retry moves): an entry stored under its name with
    /// other content is someone else's.
    Whole,
    /// What happened and to what (action, target, change, request, policy, caller), not
    /// who did it or why: an earlier admission of a request admitted again, whose actor and
    /// replica the status no longer holds. Written when it happened with the details then
    /// known; an entry stored under its name saying the same happened is that entry.
    Identity,
}

/// Every entry the request's durable state implies, in order. `state` is its chain at the
/// time of the reconcile (`approval_state`); `now` dates only the admission, whose moment
/// is not recorded elsewhere.
pub fn trail(
    approval: &DeploymentApproval,
    state: &ChainState,
    now: Timestamp,
) -> Vec<PlannedEntry> {
    let mut trail = Trail::of(approval, now);
    trail.requested_and_reviewed();
    trail.levels(state);
    trail.decided(state);
    trail.admissions();
    trail.expired(state);
    trail.token();
    trail.rollout_ended();
    trail.entries
}

/// The entries of one request, as they are worked out.
struct Trail<'a> {
    spec: &'a crate::api::DeploymentApprovalSpec,
    status: Option<&'a crate::api::DeploymentApprovalStatus>,
    /// The request's name, and the key its entries' names start with.
    name: String,
    key: String,
    target: AuditTarget,
    now: Timestamp,
    entries: Vec<PlannedEntry>,
}

impl<'a> Trail<'a> {
    fn of(approval: &'a DeploymentApproval, now: Timestamp) -> Trail<'a> {
        let spec = &approval.spec;
        Trail {
            spec,
            status: approval.status.as_ref(),
            name: approval.metadata.name.clone().unwrap_or_default(),
            key: entry_key(approval),
            target: request_target(approval),
            now,
            entries: Vec::new(),
        }
    }

    fn push(
        &mut self,
        step: String,
        action: AuditAction,
        time: Timestamp,
        actor: UserInfo,
        reason: Option<String>,
    ) {
        self.push_recalled(Recall::Whole, step, action, time, actor, reason);
    }

    /// [`Trail::push`] an entry of which the state holds only as much as `recall` says.
    fn push_recalled(
        &mut self,
        recall: Recall,
        step: String,
        action: AuditAction,
        time: Timestamp,
        actor: UserInfo,
        reason: Option<String>,
    ) {
        self.entries.push(PlannedEntry {
            name: format!("{}-{step}", self.key),
            spec: AuditEntrySpec {
                time: Time(time),
                action,
                actor,
                target: self.target.clone(),
                change_digest: Some(self.spec.change.digest.clone()),
                approval: Some(self.name.clone()),
                policy: Some(self.spec.policy.name.clone()),
                reason,
                caller: None,
            },
            recall,
        });
    }

    /// When `user` last reviewed the request.
    fn review_time(&self, user: &str) -> Option<Timestamp> {
        self.spec
            .reviews
            .iter()
            .filter(|r| r.user == user)
            .map(|r| r.time.0)
            .max()
    }

    /// Admitted (and maybe rolled out since): the approval was used, so its approvalTTL
    /// running out afterwards expires nothing.
    fn admitted(&self) -> bool {
        matches!(
            self.status.map(|s| s.phase),
            Some(ApprovalPhase::Deploying | ApprovalPhase::Deployed | ApprovalPhase::Failed)
        )
    }

    fn rollout(&self) -> Option<&'a crate::api::RolloutStatus> {
        self.status.and_then(|s| s.rollout.as_ref())
    }

    fn requested_and_reviewed(&mut self) {
        let change = &self.spec.change;
        self.push(
            "requested".into(),
            AuditAction::Requested,
            change.requested_at.0,
            change.requester.clone(),
            Some(change.summary.text.clone()).filter(|t| !t.is_empty()),
        );
        for (i, review) in self.spec.reviews.iter().enumerate() {
            let decision = match review.decision {
                ReviewDecision::Approve => "approved",
                ReviewDecision::Reject => "rejected",
            };
            let reason = match &review.comment {
                Some(comment) => format!("{decision}: {comment}"),
                None => decision.to_string(),
            };
            self.push(
                format!("review-{i}"),
                AuditAction::ReviewRecorded,
                review.time.0,
                UserInfo {
                    username: review.user.clone(),
                    groups: review.groups.clone(),
                },
                Some(reason),
            );
        }
    }

    /// Each satisfied level, by its last counted approval.
    fn levels(&mut self, state: &ChainState) {
        for (i, level) in state.levels.iter().enumerate().filter(|(_, l)| l.satisfied) {
            let last = level
                .approved_by
                .iter()
                .filter_map(|user| self.review_time(user).map(|t| (t, user)))
                .max();
            if let Some((time, user)) = last {
                self.push(
                    format!("level-{}", i + 1),
                    AuditAction::LevelSatisfied,
                    time,
                    reviewer(self.spec, user),
                    Some(format!(
                        "level {}/{} {} satisfied by {}",
                        i + 1,
                        state.levels.len(),
                        level.name,
                        level.approved_by.join(", ")
                    )),
                );
            }
        }
    }

    /// Approved once every level was satisfied, whatever came after; rejected.
    fn decided(&mut self, state: &ChainState) {
        if let (Some(time), Some(last)) = (state.approved_at, state.approved_by.last()) {
            self.push(
                "approved".into(),
                AuditAction::Approved,
                time,
                reviewer(self.spec, last),
                Some(format!("approved by {}", state.approved_by.join(", "))),
            );
        }
        if state.phase == ApprovalPhase::Rejected
            && let Some((user, comment)) = &state.rejected_by
        {
            let time = self.review_time(user).unwrap_or(self.now);
            self.push(
                "rejected".into(),
                AuditAction::Rejected,
                time,
                reviewer(self.spec, user),
                comment.clone(),
            );
        }
    }

    /// Each admission, and each that never reached the object (all of them unless the
    /// last is still under way or rolled out). Only the latest admission's time and actor
    /// are durable; earlier entries were written when they happened. An admission on a
    /// review whose caller was not authenticated is only a claim: its Admitted entry waits
    /// until the change is seen on the object, and one that never gets there leaves no
    /// Admitted entry at all.
    fn admissions(&mut self) {
        let admitted = self.admitted();
        let rollout = self.rollout();
        let admissions = rollout.map_or(u32::from(admitted), |r| {
            r.admissions.max(u32::from(admitted))
        });
        let lapsed = if admitted {
            admissions.saturating_sub(1)
        } else {
            admissions
        };
        let applied = rollout.and_then(|r| r.applied_generation);
        for n in 1..=admissions {
            let latest = n == admissions;
            let claimed = rollout.is_some_and(|r| r.unverified_admissions.contains(&n));
            if !claimed || (latest && admitted && applied.is_some()) {
                self.admitted_entry(n, latest, claimed, applied);
            }
            if n <= lapsed {
                self.not_applied_entry(n, latest, claimed);
            }
        }
    }

    /// The `n`th admission's entry. The latest admission's time, actor and replica are in
    /// `status.rollout` (`lockHolder` stands in for the replica in a status written before
    /// the rollout kept it) and stay there after the rollout ends, so its entry is planned
    /// whole; an earlier admission's are gone, so its entry is planned by identity.
    fn admitted_entry(&mut self, n: u32, latest: bool, claimed: bool, applied: Option<i64>) {
        let rollout = self.rollout().filter(|_| latest);
        let (time, actor) = match rollout {
            Some(r) => (
                r.admitted_at.as_ref().map_or(self.now, |t| t.0),
                r.admitted_by
                    .clone()
                    .unwrap_or_else(|| self.spec.change.requester.clone()),
            ),
            None => (self.now, self.spec.change.requester.clone()),
        };
        let replica = rollout
            .and_then(|r| r.admitted_by_replica.clone())
            .or_else(|| self.status.and_then(|s| s.lock_holder.clone()))
            .filter(|_| latest);
        let (recall, reason) = if claimed {
            (
                Recall::Whole,
                Some(format!(
                    "admitted on a review whose caller was not authenticated; the change was seen on the object at generation {}",
                    applied.unwrap_or_default()
                )),
            )
        } else {
            match replica {
                Some(replica) => (Recall::Whole, Some(format!("admitted by {replica}"))),
                None => (Recall::Identity, None),
            }
        };
        self.push_recalled(
            recall,
            numbered("admitted", n),
            AuditAction::Admitted,
            time,
            actor,
            reason,
        );
    }

    fn not_applied_entry(&mut self, n: u32, latest: bool, claimed: bool) {
        let time = rolled_out_since(self.status)
            .filter(|_| latest)
            .unwrap_or(self.now);
        self.push(
            numbered("not-applied", n),
            AuditAction::NotApplied,
            time,
            UserInfo::new(COUNTERSIGN_ACTOR, &[]),
            Some(if claimed {
                "a review whose caller was not authenticated claimed this change was applied; it never reached the object, so no admission is recorded".into()
            } else {
                "the admitted change never reached the object".into()
            }),
        );
    }

    fn expired(&mut self, state: &ChainState) {
        if state.phase != ApprovalPhase::Expired || self.admitted() {
            return;
        }
        self.push(
            "expired".into(),
            AuditAction::Expired,
            state.expires_at.unwrap_or(self.now),
            UserInfo::new(COUNTERSIGN_ACTOR, &[]),
            Some(if state.approved_at.is_some() {
                "approved but not applied in time".into()
            } else {
                "no decision in time".into()
            }),
        );
    }

    fn token(&mut self) {
        let Some(token) = self.status.and_then(|s| s.deploy_token.as_ref()) else {
            return;
        };
        self.push(
            "token-issued".into(),
            AuditAction::DeployTokenIssued,
            token.issued_at.0,
            UserInfo::new(COUNTERSIGN_ACTOR, &[]),
            Some(format!(
                "deploy token for ServiceAccount {} in Secret {}, valid until {}",
                token.service_account, token.secret_name, token.expires_at.0
            )),
        );
        if let Some(revoked) = &token.revoked_at {
            self.push(
                "token-revoked".into(),
                AuditAction::DeployTokenRevoked,
                revoked.0,
                UserInfo::new(COUNTERSIGN_ACTOR, &[]),
                Some(format!(
                    "ServiceAccount {}, its Role and RoleBinding deleted",
                    token.service_account
                )),
            );
        }
    }

    fn rollout_ended(&mut self) {
        let (action, step) = match self.status.map(|s| s.phase) {
            Some(ApprovalPhase::Deployed) => (AuditAction::Deployed, "deployed"),
            Some(ApprovalPhase::Failed) => (AuditAction::RolloutFailed, "rollout-failed"),
            _ => return,
        };
        let rollout = self.rollout();
        self.push(
            step.into(),
            action,
            rollout
                .and_then(|r| r.finished_at.as_ref())
                .map_or(self.now, |t| t.0),
            UserInfo::new(COUNTERSIGN_ACTOR, &[]),
            rollout.and_then(|r| r.message.clone()),
        );
    }
}

/// `step`, then `step-2`, `step-3`, … for the n-th time.
fn numbered(step: &str, n: u32) -> String {
    if n == 1 {
        step.to_string()
    } else {
        format!("{step}-{n}")
    }
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

/// A request's target as its entries name it.
pub fn request_target(approval: &DeploymentApproval) -> AuditTarget {
    approval
        .spec
        .target
        .in_namespace(approval.metadata.namespace.clone())
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

    /// The Admitted entry as planned from `approval` at minute `now`: its name, content
    /// (time aside) and recall.
    fn admitted_entries(
        approval: &DeploymentApproval,
        now: i64,
    ) -> Vec<(String, AuditEntrySpec, Recall)> {
        let state = approval_state(approval, "shop", &RoleBindingSnapshot::default(), t(now));
        trail(approval, &state, t(now))
            .into_iter()
            .filter(|e| e.spec.action == AuditAction::Admitted)
            .map(|e| {
                let mut spec = e.spec;
                spec.time = Time(Timestamp::UNIX_EPOCH);
                (e.name, spec, e.recall)
            })
            .collect()
    }

    /// A restarted operator, or a new leader, plans the Admitted entry from whatever status
    /// it finds first. What it plans must be the entry written while the change rolled out,
    /// or the trail gets a second Admitted entry beside it.
    #[test]
    fn an_admission_is_planned_alike_from_every_later_status() {
        use ReviewDecision::Approve;
        let approved = request(
            &[("alice", Approve, 1), ("carol", Approve, 2)],
            Some(ApprovalPhase::Deploying),
        );
        let argocd = UserInfo::new("argocd", &[]);
        let deploying = {
            let mut approval = approved.clone();
            if let Some(status) = approval.status.as_mut() {
                status.lock_holder = Some("replica-a".into());
                status.rollout = Some(crate::core::rollout::confirm::admitted_rollout(
                    None,
                    argocd.clone(),
                    "replica-a",
                    true,
                    t(5),
                ));
            }
            approval
        };
        let written = admitted_entries(&deploying, 6);
        assert_eq!(written.len(), 1);
        assert_eq!(
            written[0].1.reason.as_deref(),
            Some("admitted by replica-a")
        );
        assert_eq!(written[0].2, Recall::Whole);
        let later = |phase: ApprovalPhase| {
            let mut approval = deploying.clone();
            if let Some(status) = approval.status.as_mut() {
                status.phase = phase;
                status.lock_holder = None;
            }
            approval
        };
        let cases = [
            (
                "rolled out: the lock is released",
                later(ApprovalPhase::Deployed),
            ),
            ("the rollout failed", later(ApprovalPhase::Failed)),
            (
                "never reached the object: approved again",
                later(ApprovalPhase::Approved),
            ),
        ];
        for (why, approval) in cases {
            assert_eq!(admitted_entries(&approval, 90), written, "{why}");
        }

        // A status written before the rollout kept its replica: once the lock is gone, who
        // admitted is unknown, so the entry is planned by what happened.
        let mut legacy = later(ApprovalPhase::Deployed);
        if let Some(rollout) = legacy.status.as_mut().and_then(|s| s.rollout.as_mut()) {
            rollout.admitted_by_replica = None;
        }
        let planned = admitted_entries(&legacy, 90);
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].2, Recall::Identity);
        assert_eq!(planned[0].1.reason, None);

        // Admitted again after a lapse: the first admission's actor and replica are gone
        // from the status, so it is planned by identity; the second whole.
        let mut again = deploying.clone();
        if let Some(status) = again.status.as_mut() {
            status.rollout = Some(crate::core::rollout::confirm::admitted_rollout(
                status.rollout.as_ref(),
                UserInfo::new("dave", &[]),
                "replica-b",
                true,
                t(20),
            ));
        }
        let recalls: Vec<(String, Recall, Option<String>)> = admitted_entries(&again, 21)
            .into_iter()
            .map(|(name, spec, recall)| (name, recall, spec.reason))
            .collect();
        assert_eq!(
            recalls,
            vec![
                (written[0].0.clone(), Recall::Identity, None),
                (
                    format!("{}-2", written[0].0),
                    Recall::Whole,
                    Some("admitted by replica-b".into())
                ),
            ]
        );
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
