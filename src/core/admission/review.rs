//! From a decision on a workload change to the plan that answers its review (SPEC §1, §6):
//! the writes that must land first (the request to open, the lock and the move to
//! Deploying, a break-glass or rollback record), the answer, and the Events.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::Value;

use crate::api::{AuditTarget, ReviewCaller, UserInfo};
use crate::core::admission::decision::{
    AllowReason, ApprovalRequirement, ApprovedChange, Decision, DenyReason, Verdict,
};
use crate::core::admission::proposal::{ProposedRequest, proposal};
use crate::core::admission::sync::{RoundMember, SyncKey};
use crate::core::approval::seal::{SealKey, sealed};
use crate::core::audit::bypass::{
    BreakGlassRecord, RollbackRecord, break_glass_entry, rollback_entry,
};
use crate::core::audit::trail::PlannedEntry;
use crate::core::inert;
use crate::core::plan::{
    Answer, EventKind, Outcome, PlannedEvent, ReviewPlan, Step, WRITTEN_ENTRY, Write,
};
use crate::core::rollout::confirm::deploying_status;

/// The longest reason line of a denial.
const MAX_REASON_CHARS: usize = 2000;

/// What the plan of one workload review needs besides the decision.
pub struct WorkloadReview<'a> {
    pub dry_run: bool,
    pub requester: &'a UserInfo,
    /// The target's namespace.
    pub namespace: &'a str,
    /// The object changed.
    pub target: ObjectReference,
    /// The old object's resourceVersion (an UPDATE): the state a rollback leaves.
    pub old_version: &'a str,
    /// Where AuditEntries are kept.
    pub install_namespace: &'a str,
    /// This replica, the lock holder of what it admits.
    pub replica: &'a str,
    /// How the review's caller was authenticated.
    pub caller: &'a ReviewCaller,
    pub seal_key: &'a SealKey,
    pub now: Timestamp,
}

/// The old object's resourceVersion, for [`WorkloadReview::old_version`]; empty for a
/// creation (no old object) or an old object without one.
pub fn old_version_of(old_object: Option<&Value>) -> &str {
    old_object
        .and_then(|old| old.pointer("/metadata/resourceVersion"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

impl WorkloadReview<'_> {
    fn authenticated(&self) -> bool {
        self.caller.authentication == crate::api::CallerAuthentication::ClientCertificate
    }

    fn audit_target(&self) -> AuditTarget {
        AuditTarget::of_reference(&self.target)
    }

    /// A change that passes without approval once its `entry` is written (`what` could not
    /// be recorded: refused, nothing passes unaudited); the answer warns where it is
    /// recorded (after `warning`), and a Warning Event (`reason`, `note`) names the entry.
    fn audited_pass(
        &self,
        entry: PlannedEntry,
        what: &str,
        warning: &str,
        reason: &'static str,
        note: String,
    ) -> ReviewPlan {
        ReviewPlan {
            steps: vec![Step::new(
                Write::Entry(entry),
                format!(
                    "{what} could not be recorded ({{error}}); nothing passes unaudited, retry"
                ),
            )],
            answer: Answer::allow().warn(format!(
                "countersign: {warning} recorded as AuditEntry {}/{WRITTEN_ENTRY}",
                self.install_namespace
            )),
            events: vec![PlannedEvent::admission(
                self.target.clone(),
                EventKind::Warning,
                reason,
                format!("{note} (audited as AuditEntry {WRITTEN_ENTRY})"),
            )],
        }
    }

    /// A Warning on the target that the change was denied (no Event for a dry run).
    fn denial_events(&self, reason: &str, message: &str) -> Vec<PlannedEvent> {
        if self.dry_run {
            return Vec::new();
        }
        vec![PlannedEvent::admission(
            self.target.clone(),
            EventKind::Warning,
            reason,
            format!("{} was denied: {message}", self.requester.username),
        )]
    }
}

/// The reasons as one message: the verdict first, then one line each. Reasons quote names,
/// comments and fields: each is inert, so none can add a line or reach a terminal raw.
pub fn render(reasons: &[String]) -> String {
    let line = |reason: &String| inert::bounded(reason, MAX_REASON_CHARS);
    match reasons.split_first() {
        None => String::new(),
        Some((first, rest)) => rest.iter().fold(line(first), |text, reason| {
            format!("{text}\n- {}", line(reason))
        }),
    }
}

/// The sync round a dry run joins, and the request it would open there
/// (`core::admission::sync`): a change that needs a new request, dry-run by a GitOps
/// controller, in a review the API server provably sent (a forged review must not make
/// countersign open anything later).
pub fn sync_member(review: &WorkloadReview, decision: &Decision) -> Option<(SyncKey, RoundMember)> {
    let Verdict::ApprovalRequired(requirement) = &decision.verdict else {
        return None;
    };
    let key = requirement
        .sync
        .clone()
        .filter(|_| review.authenticated())?;
    let member = RoundMember {
        namespace: review.namespace.to_string(),
        name: requirement.approval_name.clone(),
        spec: requirement.create.clone()?,
    };
    Some((key, member))
}

/// The plan that answers a workload review decided as `decision`.
pub fn workload_plan(review: &WorkloadReview, decision: &Decision) -> ReviewPlan {
    match &decision.verdict {
        Verdict::Allowed(AllowReason::Rollback { approval }) => {
            rollback_plan(review, decision, approval)
        }
        Verdict::Allowed(_) => match &decision.break_glass {
            Some(_) if !review.dry_run => break_glass_plan(review, decision),
            _ => ReviewPlan::answer(Answer::allow()),
        },
        Verdict::Denied(reason) => {
            let message = render(&decision.reasons);
            let reason = match reason {
                DenyReason::Rules => "Denied",
                DenyReason::PolicyUnusable => "PolicyUnusable",
                DenyReason::RolloutInProgress { .. } => "RolloutInProgress",
            };
            ReviewPlan {
                steps: Vec::new(),
                events: review.denial_events(reason, &message),
                answer: Answer::deny(message),
            }
        }
        Verdict::ApprovalRequired(requirement) => requirement_plan(review, decision, requirement),
        Verdict::Approved(approved) => approved_plan(review, decision, approved),
    }
}

/// A rollback to the revision last confirmed Deployed: admitted once its entry is written
/// (nothing passes unaudited; a dry run writes nothing).
fn rollback_plan(review: &WorkloadReview, decision: &Decision, deployed: &str) -> ReviewPlan {
    if review.dry_run {
        return ReviewPlan::answer(Answer::allow());
    }
    let policy = decision
        .matched_policies
        .first()
        .cloned()
        .unwrap_or_default();
    let entry = rollback_entry(
        RollbackRecord {
            target: review.audit_target(),
            actor: review.requester,
            digest: decision.digest.as_str(),
            from_version: review.old_version,
            deployed,
            policy: &policy,
            caller: Some(review.caller.clone()),
        },
        review.now,
    );
    review.audited_pass(
        entry,
        "the rollback",
        &format!("a rollback to the revision approval {deployed} deployed;"),
        "Rollback",
        format!(
            "{} rolled back to the revision approval {deployed} deployed, without a new approval",
            review.requester.username
        ),
    )
}

/// Break-glass passes every rule on the word of the review: only a review that provably
/// came from the API server may carry it, and it passes once its entry is written.
fn break_glass_plan(review: &WorkloadReview, decision: &Decision) -> ReviewPlan {
    let Some(glass) = &decision.break_glass else {
        return ReviewPlan::answer(Answer::allow());
    };
    if !review.authenticated() {
        return ReviewPlan::answer(Answer::deny(
            "break-glass needs the API server to authenticate to countersign with its client certificate (docs/install.md), and this review's caller did not: nothing is recorded, and the change is refused",
        ));
    }
    let entry = break_glass_entry(
        BreakGlassRecord {
            target: review.audit_target(),
            actor: review.requester,
            digest: decision.digest.as_str(),
            policies: &glass.policies,
            reason: &glass.reason,
            caller: Some(review.caller.clone()),
        },
        review.now,
    );
    review.audited_pass(
        entry,
        "break-glass",
        "break-glass",
        "BreakGlass",
        render(&decision.reasons),
    )
}

/// A change that needs approval: denied, opening its request (sealed) unless it is a dry
/// run, which is handed the request it would get instead.
fn requirement_plan(
    review: &WorkloadReview,
    decision: &Decision,
    requirement: &ApprovalRequirement,
) -> ReviewPlan {
    let message = render(&decision.reasons);
    let answer = Answer::deny(message.clone()).counted_as(Outcome::ApprovalRequired);
    if review.dry_run {
        let mut proposal = proposal(requirement);
        if let Some(open) = proposal.open.take() {
            proposal.open = Some(ProposedRequest {
                spec: sealed(review.seal_key, review.namespace, open.spec),
                ..open
            });
        }
        return ReviewPlan::answer(Answer {
            proposal: Some(proposal),
            ..answer
        });
    }
    let Some(spec) = &requirement.create else {
        return ReviewPlan {
            steps: Vec::new(),
            events: review.denial_events("ApprovalRequired", &message),
            answer,
        };
    };
    let spec = sealed(review.seal_key, review.namespace, spec.clone());
    let opened = PlannedEvent::admission(
        review.target.clone(),
        EventKind::Normal,
        "ApprovalRequested",
        format!(
            "{} requested approval {}/{} for: {}",
            review.requester.username,
            review.namespace,
            requirement.approval_name,
            spec.change.summary.text
        ),
    );
    let mut step = Step::new(
        Write::OpenRequest {
            namespace: review.namespace.to_string(),
            name: requirement.approval_name.clone(),
            spec: Box::new(spec),
        },
        // Not the decision's message: it names the request as opened and says how to
        // approve it, and a pipeline or a person would act on a name that does not exist.
        format!(
            "approval required by policy {}: this change needs a DeploymentApproval, and countersign could not open one ({{error}}); no request exists yet: apply the change again to open it",
            requirement.policy
        ),
    );
    step.on_created = vec![opened];
    ReviewPlan {
        steps: vec![step],
        answer,
        events: Vec::new(),
    }
}

/// An approved change: admitted once it holds the object's lock and its approval is
/// moved to Deploying (both compare-and-swap), or at once when it is Deploying already.
fn approved_plan(
    review: &WorkloadReview,
    decision: &Decision,
    approved: &ApprovedChange,
) -> ReviewPlan {
    if !approved.mark_deploying || review.dry_run {
        return ReviewPlan::answer(Answer::allow().counted_as(Outcome::Approved));
    }
    let name = approved.approval.metadata.name.clone().unwrap_or_default();
    let namespace = review.namespace;
    let message = render(&decision.reasons);
    let status = deploying_status(
        &approved.approval,
        &approved.chain,
        review.replica,
        review.requester,
        review.authenticated(),
        review.now,
    );
    let lock = Step::new(
        Write::TakeLock {
            target: review.audit_target(),
            approval: format!("{namespace}/{name}"),
            digest: decision.digest.to_string(),
            requester: review.requester.username.clone(),
        },
        format!(
            "approval {name} approves this change, but countersign could not take the object's lock ({{error}}); retry"
        ),
    )
    .on_conflict(
        "another approved change of this object is being admitted at this moment; one change at a time per object, retry",
    );
    let deploying = Step::new(
        Write::MarkDeploying {
            approval: Box::new(approved.approval.clone()),
            status: Box::new(status),
        },
        format!(
            "approval {name} approves this change, but countersign could not mark it Deploying ({{error}}); retry"
        ),
    )
    .on_conflict(format!(
        "approval {name} was just used by another admission of this change; retry"
    ));
    ReviewPlan {
        steps: vec![lock, deploying],
        answer: Answer::allow()
            .warn(format!(
                "countersign: approval {namespace}/{name} admits this change; it is now Deploying"
            ))
            .counted_as(Outcome::Approved),
        events: vec![
            PlannedEvent::admission(
                review.target.clone(),
                EventKind::Normal,
                "Admitted",
                format!("admitted under approval {namespace}/{name}: {message}"),
            ),
            PlannedEvent::admission(
                approval_reference(namespace, &name),
                EventKind::Normal,
                "Admitted",
                format!(
                    "{} applied the approved change; rolling out",
                    review.requester.username
                ),
            ),
        ],
    }
}

/// A reference to a DeploymentApproval, for Events.
pub fn approval_reference(namespace: &str, name: &str) -> ObjectReference {
    use kube::Resource;
    ObjectReference {
        api_version: Some(crate::api::DeploymentApproval::api_version(&()).into_owned()),
        kind: Some(crate::api::DeploymentApproval::kind(&()).into_owned()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApprovalPhase, CallerAuthentication, GitOpsKind};
    use crate::core::admission::decision::ApprovalRequirement;
    use crate::core::approval::chain::ChainState;
    use crate::core::change::ChangeDigest;
    use crate::core::test_builders::{minutes, two_level_request};

    fn requiring(sync: Option<SyncKey>) -> Decision {
        Decision {
            verdict: Verdict::ApprovalRequired(Box::new(ApprovalRequirement {
                policy: "p".into(),
                approval_name: "web-1".into(),
                existing: false,
                phase: ApprovalPhase::Pending,
                chain: ChainState {
                    phase: ApprovalPhase::Pending,
                    current_level: Some(0),
                    levels: Vec::new(),
                    approved_by: Vec::new(),
                    rejected_by: None,
                    approved_at: None,
                    expires_at: None,
                    ignored: Vec::new(),
                    stuck: None,
                },
                create: Some(two_level_request(&[], None).spec),
                again: None,
                sync,
            })),
            matched_policies: vec!["p".into()],
            digest: ChangeDigest::of(&serde_json::json!({}), &[]),
            ignore_fields: Vec::new(),
            reasons: Vec::new(),
            break_glass: None,
        }
    }

    /// A review of a change in `shop` at minute 1.
    fn review_in_shop<'a>(
        dry_run: bool,
        requester: &'a UserInfo,
        caller: &'a ReviewCaller,
        seal_key: &'a SealKey,
    ) -> WorkloadReview<'a> {
        WorkloadReview {
            dry_run,
            requester,
            namespace: "shop",
            target: ObjectReference::default(),
            old_version: "",
            install_namespace: "countersign-system",
            replica: "r",
            caller,
            seal_key,
            now: minutes(1),
        }
    }

    /// The request could not be opened (the API server or the other replica was away): the
    /// denial says so and names no request to approve, so nobody approves a name that
    /// does not exist; it says to apply again.
    #[test]
    fn a_request_that_could_not_be_opened_is_not_named_as_opened() {
        let requester = UserInfo::new("dave", &["developers"]);
        let seal_key = SealKey::new(&[5; 32]).expect("a key");
        let caller = ReviewCaller {
            authentication: CallerAuthentication::ClientCertificate,
            name: None,
        };
        let review = review_in_shop(false, &requester, &caller, &seal_key);
        let mut decision = requiring(None);
        decision.reasons = vec![
            "approval required by policy p: no DeploymentApproval for this change yet (requested as shop/web-1)".into(),
            "approve with: kubectl countersign approve web-1 -n shop".into(),
        ];
        let plan = workload_plan(&review, &decision);
        assert!(
            plan.answer.message.contains("approve with"),
            "{}",
            plan.answer.message
        );
        let [step] = plan.steps.as_slice() else {
            panic!("one step: {:?}", plan.steps.len());
        };
        let (answer, _) = crate::core::plan::failed(
            step,
            &crate::core::plan::StepFailure::Error("connection refused".into()),
        );
        assert!(!answer.allowed);
        for absent in ["approve with", "requested as", "web-1"] {
            assert!(
                !answer.message.contains(absent),
                "{absent}: {}",
                answer.message
            );
        }
        for present in [
            "policy p",
            "could not open one (connection refused)",
            "apply the change again",
        ] {
            assert!(
                answer.message.contains(present),
                "{present}: {}",
                answer.message
            );
        }
    }

    /// A round's requests are opened later on the word of its dry runs: a review that did
    /// not provably come from the API server (no client certificate) joins none, whatever
    /// identity it claims.
    #[test]
    fn only_a_review_the_api_server_sent_joins_a_sync_round() {
        let key = SyncKey {
            controller: GitOpsKind::Flux,
            identity: "system:serviceaccount:flux-system:kustomize-controller".into(),
            namespace: "flux-system".into(),
            name: "apps".into(),
        };
        let requester = UserInfo::new(&key.identity, &[]);
        let seal_key = SealKey::new(&[5; 32]).expect("a key");
        // (what, how the caller was authenticated, the decision's sync, joins)
        let cases = [
            (
                "sent by the API server",
                CallerAuthentication::ClientCertificate,
                Some(key.clone()),
                true,
            ),
            (
                "taken on trust",
                CallerAuthentication::None,
                Some(key.clone()),
                false,
            ),
            (
                "no sync",
                CallerAuthentication::ClientCertificate,
                None,
                false,
            ),
        ];
        for (what, authentication, sync, joins) in cases {
            let caller = ReviewCaller {
                authentication,
                name: None,
            };
            let review = review_in_shop(true, &requester, &caller, &seal_key);
            let member = sync_member(&review, &requiring(sync));
            assert_eq!(member.is_some(), joins, "{what}");
            if let Some((joined, member)) = member {
                assert_eq!(
                    (joined, member.name.as_str(), member.namespace.as_str()),
                    (key.clone(), "web-1", "shop")
                );
            }
        }
    }
}
