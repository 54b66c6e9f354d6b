//! One reconcile of a request, planned in two halves around its I/O: what the stored state
//! implies before anything moves (the trail, the deploy token, whether the live target is
//! read), then, from what was carried out, the status to write and when to look again.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{
    ApprovalPhase, ApprovalPolicy, ChangeOrigin, ChangeSet, DeployTokenStatus, DeploymentApproval,
    DeploymentApprovalStatus, NotificationStatus,
};
use crate::core::admission::decision::approval_state;
use crate::core::approval::chain::{ChainState, RoleBindingSnapshot};
use crate::core::approval::seal::{
    SealCheck, SealKey, check as check_seal, marked_unverified, verified_condition,
};
use crate::core::approval::set::{as_request, judged, set_check, settled_by_members};
use crate::core::approval::status::{plan_status, upsert_condition};
use crate::core::audit::trail::{PlannedEntry, trail};
use crate::core::notify::merge_records;
use crate::core::policy::matching::policy_named;
use crate::core::rollout::confirm::{LiveTarget, approval_ignore_fields, plan_rollout};
use crate::core::rollout::token::{GrantAction, plan_grant};

/// The first half: what the stored request implies, before any write.
#[derive(Clone, Debug)]
pub struct Opening {
    /// The request as people are shown it (the trail, notices, Events): its summary marked
    /// unverified unless the seal is countersign's.
    pub shown: DeploymentApproval,
    pub seal: SealCheck,
    /// Its chain, evaluated once for the whole reconcile.
    pub state: ChainState,
    /// The AuditEntries its durable state implies (written once each, by name).
    pub entries: Vec<PlannedEntry>,
    /// Issue or revoke the deploy token, or nothing.
    pub grant: GrantAction,
    /// When the token must be looked at again.
    pub grant_deadline: Option<Timestamp>,
    /// The change is rolling out: its target is read live and judged (`close`).
    pub confirms_rollout: bool,
    /// The GitOps sync the request came from, to be asked to apply again now that it is
    /// approved (once: `close` records it in the `SyncResumed` condition).
    pub resume: Option<ChangeOrigin>,
    /// Its notices are due here: a request of no set, or a set (a set's members announce
    /// nothing; their set does).
    pub announces: bool,
}

/// The condition recording that the sync a request came from was asked to apply again.
pub const SYNC_RESUMED_CONDITION: &str = "SyncResumed";

/// What the settings of this reconcile allow.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReconcileSettings {
    /// `--gitops`: an approved request a sync opened resumes that sync.
    pub resumes_syncs: bool,
}

/// Plan the first half of reconciling the request `stored` at `now`; a member of a change
/// set is judged with its set's reviews (`set`, as read), and announces nothing: its
/// set does.
pub fn open(
    stored: &DeploymentApproval,
    set: Option<&ChangeSet>,
    seal_key: &SealKey,
    bindings: &RoleBindingSnapshot,
    settings: ReconcileSettings,
    now: Timestamp,
) -> Opening {
    let namespace = stored.metadata.namespace.as_deref().unwrap_or_default();
    let seal = check_seal(seal_key, namespace, &stored.spec);
    let announces = stored.spec.change_set.is_none();
    opened(
        &judged(stored, set),
        seal,
        announces,
        None,
        bindings,
        settings,
        now,
    )
}

/// Plan the first half of reconciling the change set `set` at `now`, as one request
/// (`core::approval::set::as_request`); `members` are its requests as stored now, in its
/// order, which verify a set its requester made.
pub fn open_set(
    set: &ChangeSet,
    members: &[Option<DeploymentApproval>],
    seal_key: &SealKey,
    bindings: &RoleBindingSnapshot,
    settings: ReconcileSettings,
    now: Timestamp,
) -> Opening {
    let seal = set_check(seal_key, set, members);
    opened(
        &as_request(set),
        seal,
        true,
        Some(members),
        bindings,
        settings,
        now,
    )
}

fn opened(
    stored: &DeploymentApproval,
    seal: SealCheck,
    announces: bool,
    set_members: Option<&[Option<DeploymentApproval>]>,
    bindings: &RoleBindingSnapshot,
    settings: ReconcileSettings,
    now: Timestamp,
) -> Opening {
    let namespace = stored.metadata.namespace.as_deref().unwrap_or_default();
    let mut shown = stored.clone();
    if !seal.verified() {
        shown.spec.change.summary = marked_unverified(&stored.spec.change.summary);
    }
    let mut state = approval_state(&shown, namespace, bindings, now);
    if let Some(members) = set_members {
        state = settled_by_members(state, members);
    }
    let entries = trail(&shown, &state, now);
    let grant = plan_grant(&shown, now);
    let resume = resume_of(&shown, seal, &state, settings).filter(|_| announces);
    Opening {
        resume,
        announces,
        confirms_rollout: shown.phase() == ApprovalPhase::Deploying,
        shown,
        seal,
        state,
        entries,
        grant: grant.action,
        grant_deadline: grant.next_deadline,
    }
}

/// The sync to resume: a request countersign opened for a GitOps sync (sealed), approved
/// or rejected now, whose sync was not asked yet.
fn resume_of(
    shown: &DeploymentApproval,
    seal: SealCheck,
    state: &ChainState,
    settings: ReconcileSettings,
) -> Option<ChangeOrigin> {
    let asked = shown
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .any(|c| c.type_ == SYNC_RESUMED_CONDITION);
    // Approved: the sync applies it now. Rejected: the sync reports the rejection now
    // rather than at its next retry.
    let decided = match state.phase {
        ApprovalPhase::Approved => {
            shown.phase() != ApprovalPhase::Deploying && !shown.phase().is_terminal()
        }
        ApprovalPhase::Rejected => true,
        _ => false,
    };
    (settings.resumes_syncs && seal.verified() && decided && !asked)
        .then(|| shown.spec.change.origin.clone())
        .flatten()
}

/// How asking the sync to apply again went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeDone {
    /// Its controller was asked (Flux: `reconcile.fluxcd.io/requestedAt`).
    Requested,
    /// The sync's object is gone: nothing to resume.
    SourceGone,
    /// Its controller is syncing already (an Argo CD operation retrying), and that picks
    /// the decision up.
    Running,
}

fn resumed_condition(
    origin: &ChangeOrigin,
    done: &ResumeDone,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    let (status, reason, message) = match done {
        ResumeDone::Requested => (
            "True",
            "ReconcileRequested",
            format!(
                "decided: {} {}/{} was asked to apply again",
                origin.kind, origin.namespace, origin.name
            ),
        ),
        ResumeDone::Running => (
            "True",
            "SyncRunning",
            format!(
                "decided: {} {}/{} is syncing already, and its next attempt takes this up",
                origin.kind, origin.namespace, origin.name
            ),
        ),
        ResumeDone::SourceGone => (
            "False",
            "SyncSourceGone",
            format!(
                "decided, but {} {}/{} no longer exists: nothing to resume",
                origin.kind, origin.namespace, origin.name
            ),
        ),
    };
    Condition {
        type_: SYNC_RESUMED_CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message: crate::core::inert::bounded(&message, 1024),
        last_transition_time: Time(now),
        observed_generation: generation,
    }
}

/// The request as notifications should see it: what this replica delivered lately
/// (`remembered`, not yet in its cache) counts as delivered, so it is not sent again.
pub fn as_delivered(
    shown: &DeploymentApproval,
    remembered: &[NotificationStatus],
) -> Option<DeploymentApproval> {
    if remembered.is_empty() {
        return None;
    }
    let mut view = shown.clone();
    let status = view.status.get_or_insert_with(Default::default);
    status.notifications = merge_records(&status.notifications, remembered);
    Some(view)
}

/// How the deploy token's action went.
#[derive(Clone, Debug, PartialEq)]
pub enum GrantDone {
    /// Nothing was asked, or there was no token to revoke.
    Unchanged,
    Issued(DeployTokenStatus),
    Revoked,
}

/// What the shell carried out between the halves, and what it read.
pub struct Carried<'a> {
    /// The notification records after this round's deliveries.
    pub notifications: Vec<NotificationStatus>,
    /// When a failed delivery is due again.
    pub next_attempt: Option<Timestamp>,
    pub grant: GrantDone,
    /// The target as it is now (read only when the opening `confirms_rollout`).
    pub live: LiveTarget<'a>,
    /// The current policies (the one the request was made under names the fields a
    /// rollout ignores, unless the request carries its own).
    pub policies: &'a [ApprovalPolicy],
    /// How resuming the opening's sync went (`None`: there was none to resume).
    pub resumed: Option<ResumeDone>,
}

/// The second half: the status write and what follows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Closing {
    /// The status to write; `None`: it is already true.
    pub write: Option<DeploymentApprovalStatus>,
    /// Once the write lands, release the change lock: the rollout ended.
    pub releases_lock: bool,
    /// When to reconcile again although nothing changed.
    pub next_deadline: Option<Timestamp>,
}

/// Plan the second half at `now`, from the opening and what was carried out.
pub fn close(opening: &Opening, carried: Carried, now: Timestamp) -> Closing {
    let approval = &opening.shown;
    let (planned, status_deadline) = if opening.confirms_rollout {
        let policy_fields = policy_named(carried.policies, &approval.spec.policy.name)
            .map(|p| p.spec.effective_ignore_fields());
        let ignore_fields = approval_ignore_fields(approval, policy_fields);
        let plan = plan_rollout(
            approval,
            carried.live,
            &ignore_fields,
            opening.state.expires_at,
            now,
        );
        (plan.write, plan.next_deadline)
    } else {
        let plan = plan_status(approval, &opening.state, now);
        (plan.write, plan.next_deadline)
    };
    let stored = approval.status.as_ref();
    let mut status = planned.or_else(|| stored.cloned()).unwrap_or_default();
    status.notifications = carried.notifications;
    status.deploy_token = token_after(
        stored.and_then(|s| s.deploy_token.clone()),
        carried.grant,
        now,
    );
    upsert_condition(
        &mut status.conditions,
        verified_condition(opening.seal, now, approval.metadata.generation),
    );
    if let (Some(origin), Some(done)) = (&opening.resume, &carried.resumed) {
        upsert_condition(
            &mut status.conditions,
            resumed_condition(origin, done, now, approval.metadata.generation),
        );
    }
    let write = (stored != Some(&status)).then_some(status);
    let releases_lock = opening.confirms_rollout
        && write
            .as_ref()
            .is_some_and(|s| s.phase != ApprovalPhase::Deploying);
    let next_deadline = [
        status_deadline,
        carried.next_attempt,
        opening.grant_deadline,
    ]
    .into_iter()
    .flatten()
    .min();
    Closing {
        write,
        releases_lock,
        next_deadline,
    }
}

/// The token's record after `done`: a revoked token keeps its record, dated.
fn token_after(
    stored: Option<DeployTokenStatus>,
    done: GrantDone,
    now: Timestamp,
) -> Option<DeployTokenStatus> {
    match done {
        GrantDone::Unchanged => stored,
        GrantDone::Issued(token) => Some(token),
        GrantDone::Revoked => stored.map(|mut token| {
            token.revoked_at = Some(Time(now));
            token
        }),
    }
}

/// After someone else wrote first (the webhook admitting the change): the fresh status
/// with what this reconcile did kept in it (deliveries, so none is sent again; a token
/// issued or revoked; a sync resumed), or `None` when the fresh status already holds it.
pub fn kept_after_conflict(
    fresh: &DeploymentApprovalStatus,
    ours: &DeploymentApprovalStatus,
) -> Option<DeploymentApprovalStatus> {
    let mut status = fresh.clone();
    status.notifications = merge_records(&fresh.notifications, &ours.notifications);
    let ours_newer = ours
        .deploy_token
        .as_ref()
        .is_some_and(|token| fresh.deploy_token.is_none() || token.revoked_at.is_some());
    if ours_newer {
        status.deploy_token = ours.deploy_token.clone();
    }
    // A sync resumed here stays on record, so it is not resumed again.
    let resumed = |s: &DeploymentApprovalStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == SYNC_RESUMED_CONDITION)
            .cloned()
    };
    if let (Some(condition), None) = (resumed(ours), resumed(fresh)) {
        status.conditions.push(condition);
    }
    (status != *fresh).then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ReviewDecision, RolloutStatus};
    use crate::core::approval::seal::seal;
    use crate::core::test_builders::{minutes, two_level_request};
    use jiff::SignedDuration;

    fn key() -> SealKey {
        SealKey::new(&[7; 32]).expect("a key")
    }

    fn sealed(mut approval: DeploymentApproval) -> DeploymentApproval {
        approval.spec.change.summary_seal = Some(seal(&key(), "shop", &approval.spec));
        approval
    }

    fn carried(grant: GrantDone, live: LiveTarget<'_>) -> Carried<'_> {
        Carried {
            notifications: Vec::new(),
            next_attempt: None,
            grant,
            live,
            policies: &[],
            resumed: None,
        }
    }

    fn token(revoked: Option<i64>) -> DeployTokenStatus {
        DeployTokenStatus {
            secret_name: "web-1-deploy".into(),
            service_account: "web-1-deploy".into(),
            issued_at: Time(minutes(1)),
            expires_at: Time(minutes(31)),
            revoked_at: revoked.map(|m| Time(minutes(m))),
        }
    }

    fn record(event: &str, delivered: bool) -> NotificationStatus {
        NotificationStatus {
            sink: "slack".into(),
            level: "leads".into(),
            event: event.into(),
            delivered,
            attempts: 1,
            last_error: None,
            last_attempt_at: Some(Time(minutes(1))),
            delivered_at: delivered.then(|| Time(minutes(1))),
        }
    }

    /// Store what `close` wrote, as the API server would.
    fn stored_after(mut approval: DeploymentApproval, closing: &Closing) -> DeploymentApproval {
        if let Some(status) = &closing.write {
            approval.status = Some(status.clone());
        }
        approval
    }

    fn approved_twice() -> Vec<(&'static str, ReviewDecision, i64)> {
        vec![
            ("alice", ReviewDecision::Approve, 1),
            ("carol", ReviewDecision::Approve, 2),
        ]
    }

    #[test]
    fn a_reconcile_writes_once_and_then_finds_nothing_to_do() {
        let approval = sealed(two_level_request(&[], None));
        let now = minutes(5);
        let opening = open(
            &approval,
            None,
            &key(),
            &RoleBindingSnapshot::default(),
            ReconcileSettings::default(),
            now,
        );
        let first = close(
            &opening,
            carried(GrantDone::Unchanged, LiveTarget::NotWatched),
            now,
        );
        let written = first.write.clone().expect("a first status");
        assert_eq!(written.phase, ApprovalPhase::Pending);
        assert!(!first.releases_lock);
        let again = stored_after(approval, &first);
        let opening = open(
            &again,
            None,
            &key(),
            &RoleBindingSnapshot::default(),
            ReconcileSettings::default(),
            minutes(6),
        );
        let second = close(
            &opening,
            carried(GrantDone::Unchanged, LiveTarget::NotWatched),
            minutes(6),
        );
        assert_eq!(
            second.write, None,
            "a second reconcile rewrote {:?}",
            second.write
        );
    }

    #[test]
    fn a_summary_without_countersigns_seal_is_shown_unverified_everywhere() {
        // (seal, the summary shown, the condition's status)
        let cases = [
            (Some(true), false, "True"),
            (None, true, "False"),
            (Some(false), true, "False"),
        ];
        for (seal_state, marked, condition) in cases {
            let mut approval = two_level_request(&[], None);
            approval.spec.change.summary_seal = match seal_state {
                Some(true) => Some(seal(&key(), "shop", &approval.spec)),
                Some(false) => Some(seal(
                    &SealKey::new(&[8; 32]).expect("a key"),
                    "shop",
                    &approval.spec,
                )),
                None => None,
            };
            let opening = open(
                &approval,
                None,
                &key(),
                &RoleBindingSnapshot::default(),
                ReconcileSettings::default(),
                minutes(5),
            );
            assert_eq!(
                opening
                    .shown
                    .spec
                    .change
                    .summary
                    .text
                    .starts_with("UNVERIFIED"),
                marked,
                "{seal_state:?}"
            );
            let shown_in_trail: Vec<&str> = opening
                .entries
                .iter()
                .filter_map(|e| e.spec.reason.as_deref())
                .filter(|reason| reason.contains("image 1 → 2"))
                .collect();
            assert!(
                !shown_in_trail.is_empty(),
                "{seal_state:?}: no entry shows the summary"
            );
            assert!(
                shown_in_trail
                    .iter()
                    .all(|r| r.contains("UNVERIFIED") == marked),
                "{seal_state:?}: the trail shows another summary: {shown_in_trail:?}"
            );
            let closing = close(
                &opening,
                carried(GrantDone::Unchanged, LiveTarget::NotWatched),
                minutes(5),
            );
            let status = closing.write.expect("a status");
            let verified = status
                .conditions
                .iter()
                .find(|c| c.type_ == "SummaryVerified")
                .expect("the condition");
            assert_eq!(verified.status, condition, "{seal_state:?}");
        }
    }

    #[test]
    fn a_rollout_that_ends_releases_the_lock_once_written_and_one_that_goes_on_keeps_it() {
        // (the live target, ends the rollout)
        let object = serde_json::json!({"metadata": {"generation": 1}});
        let cases = [
            (LiveTarget::NotWatched, true),
            (LiveTarget::Missing, false),
            (LiveTarget::Present(&object), false),
        ];
        for (live, ends) in cases {
            let mut approval = sealed(two_level_request(
                &approved_twice(),
                Some(ApprovalPhase::Deploying),
            ));
            if let Some(status) = approval.status.as_mut() {
                status.rollout = Some(RolloutStatus {
                    admitted_at: Some(Time(minutes(3))),
                    ..RolloutStatus::default()
                });
            }
            let now = minutes(3) + SignedDuration::from_secs(1);
            let opening = open(
                &approval,
                None,
                &key(),
                &RoleBindingSnapshot::default(),
                ReconcileSettings::default(),
                now,
            );
            assert!(opening.confirms_rollout);
            let label = format!("{live:?}");
            let closing = close(&opening, carried(GrantDone::Unchanged, live), now);
            assert_eq!(closing.releases_lock, ends, "{label}");
            if !ends {
                assert!(
                    closing.next_deadline.is_some(),
                    "{label}: nobody looks again"
                );
            }
        }
    }

    #[test]
    fn the_token_record_follows_what_was_done_with_it() {
        // (stored token, what was done, the record after)
        let cases = [
            (None, GrantDone::Unchanged, None),
            (None, GrantDone::Issued(token(None)), Some(token(None))),
            (Some(token(None)), GrantDone::Unchanged, Some(token(None))),
            (Some(token(None)), GrantDone::Revoked, Some(token(Some(9)))),
            (None, GrantDone::Revoked, None),
        ];
        for (stored, done, after) in cases {
            let label = format!("{stored:?} {done:?}");
            assert_eq!(token_after(stored, done, minutes(9)), after, "{label}");
        }
    }

    #[test]
    fn the_next_look_is_the_earliest_deadline() {
        let approval = sealed(two_level_request(&[], None));
        let opening = open(
            &approval,
            None,
            &key(),
            &RoleBindingSnapshot::default(),
            ReconcileSettings::default(),
            minutes(5),
        );
        let request_expiry = minutes(60);
        let cases = [
            (None, request_expiry),
            (Some(minutes(7)), minutes(7)),
            (Some(minutes(90)), request_expiry),
        ];
        for (next_attempt, expected) in cases {
            let closing = close(
                &opening,
                Carried {
                    next_attempt,
                    ..carried(GrantDone::Unchanged, LiveTarget::NotWatched)
                },
                minutes(5),
            );
            assert_eq!(closing.next_deadline, Some(expected), "{next_attempt:?}");
        }
    }

    #[test]
    fn remembered_deliveries_count_as_delivered() {
        let approval = two_level_request(&[], Some(ApprovalPhase::Pending));
        assert!(as_delivered(&approval, &[]).is_none());
        let view = as_delivered(&approval, &[record("opened", true)]).expect("a view");
        let records = view.status.expect("a status").notifications;
        assert_eq!(records, vec![record("opened", true)]);
    }

    #[test]
    fn after_a_conflict_what_this_reconcile_did_is_kept_and_nothing_else() {
        let fresh_with = |records: Vec<NotificationStatus>, token: Option<DeployTokenStatus>| {
            DeploymentApprovalStatus {
                phase: ApprovalPhase::Deploying,
                notifications: records,
                deploy_token: token,
                ..DeploymentApprovalStatus::default()
            }
        };
        let ours_with = |records: Vec<NotificationStatus>, token: Option<DeployTokenStatus>| {
            DeploymentApprovalStatus {
                phase: ApprovalPhase::Approved,
                notifications: records,
                deploy_token: token,
                ..DeploymentApprovalStatus::default()
            }
        };
        // (fresh, ours, the write: None when the fresh status already holds it)
        let cases = [
            (
                fresh_with(vec![record("opened", true)], None),
                ours_with(vec![record("opened", true)], None),
                None,
            ),
            (
                fresh_with(vec![], None),
                ours_with(vec![record("opened", true)], None),
                Some(fresh_with(vec![record("opened", true)], None)),
            ),
            (
                fresh_with(vec![], None),
                ours_with(vec![], Some(token(None))),
                Some(fresh_with(vec![], Some(token(None)))),
            ),
            (
                fresh_with(vec![], Some(token(None))),
                ours_with(vec![], Some(token(Some(9)))),
                Some(fresh_with(vec![], Some(token(Some(9))))),
            ),
            // A sync resumed here is kept on record.
            (
                fresh_with(vec![], None),
                DeploymentApprovalStatus {
                    conditions: vec![resumed_condition(
                        &ChangeOrigin::default(),
                        &ResumeDone::Requested,
                        minutes(4),
                        None,
                    )],
                    ..ours_with(vec![], None)
                },
                Some(DeploymentApprovalStatus {
                    conditions: vec![resumed_condition(
                        &ChangeOrigin::default(),
                        &ResumeDone::Requested,
                        minutes(4),
                        None,
                    )],
                    ..fresh_with(vec![], None)
                }),
            ),
            // A token the fresh status holds is not replaced by an older live one.
            (
                fresh_with(vec![], Some(token(Some(9)))),
                ours_with(vec![], Some(token(None))),
                None,
            ),
        ];
        for (index, (fresh, ours, expected)) in cases.into_iter().enumerate() {
            let kept = kept_after_conflict(&fresh, &ours);
            assert_eq!(kept, expected, "case {index}");
            if let Some(kept) = kept {
                assert_eq!(
                    kept.phase, fresh.phase,
                    "case {index}: the other writer's phase was lost"
                );
            }
        }
    }

    fn from_a_sync(mut approval: DeploymentApproval) -> DeploymentApproval {
        approval.spec.change.origin = Some(ChangeOrigin {
            api_version: "kustomize.toolkit.fluxcd.io/v1".into(),
            kind: "Kustomization".into(),
            namespace: "flux-system".into(),
            name: "apps".into(),
            revision: Some("main@sha1:abc".into()),
        });
        approval
    }

    #[test]
    fn a_decided_request_of_a_sync_resumes_it_once() {
        let on = ReconcileSettings {
            resumes_syncs: true,
        };
        let approved = || sealed(from_a_sync(two_level_request(&approved_twice(), None)));
        let resumed_before = || {
            let mut approval = approved();
            let status = approval.status.get_or_insert_with(Default::default);
            status.phase = ApprovalPhase::Approved;
            status.conditions.push(resumed_condition(
                approval.spec.change.origin.as_ref().expect("origin"),
                &ResumeDone::Requested,
                minutes(3),
                None,
            ));
            approval
        };
        let unsealed = || {
            let mut approval = approved();
            approval.spec.change.summary_seal = None;
            approval
        };
        // (what, request, settings, resumes)
        let cases = [
            ("approved, from a sync", approved(), on, true),
            (
                "without --gitops",
                approved(),
                ReconcileSettings::default(),
                false,
            ),
            (
                "not from a sync",
                sealed(two_level_request(&approved_twice(), None)),
                on,
                false,
            ),
            (
                "pending",
                sealed(from_a_sync(two_level_request(
                    &[("alice", ReviewDecision::Approve, 1)],
                    None,
                ))),
                on,
                false,
            ),
            ("resumed already", resumed_before(), on, false),
            (
                "rejected: the sync reports it at once",
                sealed(from_a_sync(two_level_request(
                    &[("alice", ReviewDecision::Reject, 1)],
                    None,
                ))),
                on,
                true,
            ),
            (
                "expired",
                sealed(from_a_sync(two_level_request(
                    &[],
                    Some(ApprovalPhase::Expired),
                ))),
                on,
                false,
            ),
            ("its summary not countersign's", unsealed(), on, false),
            (
                "rolling out already",
                sealed(from_a_sync(two_level_request(
                    &approved_twice(),
                    Some(ApprovalPhase::Deploying),
                ))),
                on,
                false,
            ),
        ];
        for (what, approval, settings, resumes) in cases {
            let opening = open(
                &approval,
                None,
                &key(),
                &RoleBindingSnapshot::default(),
                settings,
                minutes(5),
            );
            assert_eq!(opening.resume.is_some(), resumes, "{what}");
        }

        // What was done is recorded, so it is done once.
        let approval = approved();
        let opening = open(
            &approval,
            None,
            &key(),
            &RoleBindingSnapshot::default(),
            on,
            minutes(5),
        );
        for (done, status) in [
            (ResumeDone::Requested, "True"),
            (ResumeDone::SourceGone, "False"),
        ] {
            let closing = close(
                &opening,
                Carried {
                    resumed: Some(done.clone()),
                    ..carried(GrantDone::Unchanged, LiveTarget::NotWatched)
                },
                minutes(5),
            );
            let written = closing.write.expect("a status");
            let condition = written
                .conditions
                .iter()
                .find(|c| c.type_ == SYNC_RESUMED_CONDITION)
                .expect("the condition");
            assert_eq!(condition.status, status, "{done:?}");
            let again = open(
                &stored_after(
                    approval.clone(),
                    &Closing {
                        write: Some(written.clone()),
                        releases_lock: false,
                        next_deadline: None,
                    },
                ),
                None,
                &key(),
                &RoleBindingSnapshot::default(),
                on,
                minutes(6),
            );
            assert!(again.resume.is_none(), "{done:?}: resumed twice");
        }
    }

    #[test]
    fn a_set_announces_and_resumes_once_for_all_its_members_which_announce_nothing() {
        use crate::core::approval::set::{sealed_set, set_spec};
        let on = ReconcileSettings {
            resumes_syncs: true,
        };
        let member = |name: &str, target: &str| {
            let mut request = from_a_sync(two_level_request(&[], None));
            request.metadata.name = Some(name.into());
            request.spec.target.name = target.into();
            request.spec.change_set = Some("apps-1".into());
            sealed(request)
        };
        let members = [member("web-1", "web"), member("api-1", "api")];
        let specs: Vec<_> = members
            .iter()
            .map(|m| (m.metadata.name.clone().unwrap_or_default(), &m.spec))
            .collect();
        let mut spec =
            set_spec(&specs, &members[0].spec.change.requester, minutes(0)).expect("a set");
        spec.change.origin = members[0].spec.change.origin.clone();
        spec.reviews = two_level_request(&approved_twice(), None).spec.reviews;
        let mut set = ChangeSet::new("apps-1", sealed_set(&key(), "shop", "apps-1", spec));
        set.metadata.namespace = Some("shop".into());
        let found: Vec<_> = members.iter().cloned().map(Some).collect();
        let bindings = RoleBindingSnapshot::default();

        let of_set = open_set(&set, &found, &key(), &bindings, on, minutes(5));
        assert!(of_set.announces, "a set announces");
        assert!(of_set.seal.verified());
        assert_eq!(of_set.state.phase, ApprovalPhase::Approved);
        assert!(of_set.resume.is_some(), "the set resumes its sync");
        assert_eq!(of_set.grant, GrantAction::Nothing, "a set carries no token");

        for request in &members {
            let of_member = open(request, Some(&set), &key(), &bindings, on, minutes(5));
            assert!(!of_member.announces, "a member announces nothing");
            assert!(of_member.resume.is_none(), "a member does not resume");
            assert!(
                of_member.seal.verified(),
                "judged, its own seal still holds"
            );
            assert_eq!(of_member.state.phase, ApprovalPhase::Approved);
        }
        // A member whose set is not there is judged on nothing.
        let alone = open(&members[0], None, &key(), &bindings, on, minutes(5));
        assert_eq!(alone.state.phase, ApprovalPhase::Pending);
    }
}
