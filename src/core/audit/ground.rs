//! Changes to the gate's own ground (SPEC §1.6): deleting a policy, changing its spec, and
//! deleting a request. Each is audited with its author; a policy with
//! `tamperProtection: Refuse` refuses them unless the author is one of its break-glass
//! groups (audited as such).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    ApprovalPhase, ApprovalPolicy, AuditAction, AuditEntrySpec, AuditTarget, DeploymentApproval,
    ReviewCaller, TamperProtection, UserInfo,
};
use crate::core::audit::custody::NAMESPACE_CONTROLLER;
use crate::core::audit::trail::{
    PlannedEntry, Recall, entry_key, object_key, policy_key, policy_target, request_target,
};
use crate::core::plan::{Answer, EventKind, PlannedEvent, ReviewPlan, Step, WRITTEN_ENTRY, Write};
use crate::core::policy::matching::policy_name;

/// What is being done to the ground.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroundChange {
    PolicyDeleted,
    /// The policy's spec changes (its metadata alone is no change of ground).
    PolicySpecChanged,
    /// A request is deleted; its phase as stored.
    RequestDeleted(ApprovalPhase),
    /// A namespace's labels change so that the policy no longer reaches it.
    NamespaceLeftReach,
}

impl GroundChange {
    fn describe(self) -> &'static str {
        match self {
            GroundChange::PolicyDeleted => "deleting it",
            GroundChange::PolicySpecChanged => "changing its spec",
            GroundChange::RequestDeleted(_) => "deleting one of its open requests",
            GroundChange::NamespaceLeftReach => "taking a namespace out of its reach",
        }
    }
}

/// What the webhook does with such a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroundVerdict {
    /// Nothing to record here (a spec change is recorded by the operator, from the policy).
    Pass,
    /// Admit it once an AuditEntry with this reason is written.
    Audit(String),
    Refuse(String),
}

impl GroundVerdict {
    /// What the entry of this verdict says (empty for a pass, which writes none).
    pub fn reason(&self) -> String {
        match self {
            GroundVerdict::Pass => String::new(),
            GroundVerdict::Audit(reason) | GroundVerdict::Refuse(reason) => reason.clone(),
        }
    }
}

/// Judge `change` by `author`, under `policy` (the one deleted or changed, as it was; or
/// the request's policy, if it still exists).
pub fn judge_ground_change(
    change: GroundChange,
    policy: Option<&ApprovalPolicy>,
    author: &UserInfo,
) -> GroundVerdict {
    let open_request = matches!(
        change,
        GroundChange::RequestDeleted(phase) if !phase.is_terminal()
    );
    let protected = policy
        .is_some_and(|p| p.spec.tamper_protection == Some(TamperProtection::Refuse))
        && (open_request || !matches!(change, GroundChange::RequestDeleted(_)));
    let record = |reason: String| match change {
        GroundChange::PolicySpecChanged => GroundVerdict::Pass,
        _ => GroundVerdict::Audit(reason),
    };
    // Deleting a namespace deletes its requests; that must always be possible.
    if author.username == NAMESPACE_CONTROLLER {
        return record("deleted with its namespace".into());
    }
    if !protected {
        return record(match change {
            GroundChange::RequestDeleted(phase) => format!("request deleted while {phase}"),
            GroundChange::NamespaceLeftReach => format!(
                "the namespace's labels changed; policy {} no longer reaches it",
                policy.map(policy_name).unwrap_or_default()
            ),
            _ => "policy deleted".into(),
        });
    }
    let name = policy.map(policy_name).unwrap_or_default();
    let glass = policy
        .and_then(|p| p.spec.break_glass.as_ref())
        .and_then(|b| author.groups.iter().find(|g| b.groups.contains(g)));
    match glass {
        Some(group) => GroundVerdict::Audit(format!(
            "{} under policy {name}'s tamperProtection: Refuse, by break-glass (group {group})",
            change.describe()
        )),
        None => GroundVerdict::Refuse(format!(
            "policy {name} protects its ground (tamperProtection: Refuse): {} is refused unless by a member of its breakGlass groups",
            change.describe()
        )),
    }
}

/// The AuditEntry of a namespace leaving `policy`'s reach by the write that made
/// `resource_version` stale: `namespace-<name>-<uid prefix>-left-<policy>-<version>`.
pub fn namespace_left_entry(
    namespace: &str,
    uid: &str,
    resource_version: &str,
    policy: &str,
    author: &UserInfo,
    reason: String,
    now: Timestamp,
) -> PlannedEntry {
    let name: String = format!(
        "{}-left-{policy}-{resource_version}",
        object_key(&format!("namespace-{namespace}"), uid)
    )
    .chars()
    .take(253)
    .collect();
    PlannedEntry {
        name: name.trim_end_matches(['-', '.']).to_string(),
        spec: AuditEntrySpec {
            time: Time(now),
            action: AuditAction::NamespaceLeftReach,
            actor: author.clone(),
            target: AuditTarget {
                api_version: "v1".into(),
                kind: "Namespace".into(),
                namespace: None,
                name: namespace.to_string(),
                uid: Some(uid.to_string()).filter(|u| !u.is_empty()),
            },
            change_digest: None,
            approval: None,
            policy: Some(policy.to_string()),
            reason: Some(reason),
            caller: None,
        },
        recall: Recall::Whole,
    }
}

/// The AuditEntry of a deleted request: `<namespace>-<name>-<uid prefix>-deleted`.
pub fn request_deleted_entry(
    approval: &DeploymentApproval,
    author: &UserInfo,
    reason: String,
    now: Timestamp,
) -> PlannedEntry {
    let spec = &approval.spec;
    PlannedEntry {
        name: format!("{}-deleted", entry_key(approval)),
        spec: AuditEntrySpec {
            time: Time(now),
            action: AuditAction::RequestDeleted,
            actor: author.clone(),
            target: request_target(approval),
            change_digest: Some(spec.change.digest.clone()),
            approval: approval.metadata.name.clone(),
            policy: Some(spec.policy.name.clone()),
            reason: Some(reason),
            caller: None,
        },
        recall: Recall::Whole,
    }
}

/// The AuditEntry of a change to a policy made by the webhook's leave (a deletion, or a
/// break-glass spec change): `policy-<name>-<uid prefix>-<step>`.
pub fn policy_ground_entry(
    policy: &ApprovalPolicy,
    action: AuditAction,
    step: &str,
    author: &UserInfo,
    reason: String,
    now: Timestamp,
) -> PlannedEntry {
    let name = policy_name(policy);
    PlannedEntry {
        name: format!("{}-{step}", policy_key(policy)),
        spec: AuditEntrySpec {
            time: Time(now),
            action,
            actor: author.clone(),
            target: policy_target(policy),
            change_digest: None,
            approval: None,
            policy: Some(name.to_string()),
            reason: Some(reason),
            caller: None,
        },
        recall: Recall::Whole,
    }
}

/// The plan of a review that changes the gate's own ground, judged as `verdicts` (one per
/// policy concerned; each with the entry it would write): refused by the first that
/// refuses (with a Warning, unless a dry run), otherwise admitted once every entry is
/// written (a dry run writes none), as `admitted` says.
pub fn ground_plan(
    verdicts: Vec<(GroundVerdict, PlannedEntry)>,
    admitted: Answer,
    dry_run: bool,
    install_namespace: &str,
    caller: &ReviewCaller,
) -> ReviewPlan {
    if let Some((why, entry)) = verdicts.iter().find_map(|(verdict, entry)| match verdict {
        GroundVerdict::Refuse(why) => Some((why, entry)),
        _ => None,
    }) {
        let mut plan = ReviewPlan::answer(Answer::deny(why.clone()));
        if !dry_run {
            plan.events.push(PlannedEvent::admission(
                entry.spec.target.reference(),
                EventKind::Warning,
                "Refused",
                format!(
                    "{} was refused {:?}: {why}",
                    entry.spec.actor.username, entry.spec.action
                ),
            ));
        }
        return plan;
    }
    let mut plan = ReviewPlan::answer(admitted);
    if dry_run {
        return plan;
    }
    for (verdict, mut entry) in verdicts {
        let GroundVerdict::Audit(reason) = verdict else {
            continue;
        };
        entry.spec.caller = Some(caller.clone());
        let (target, action, actor) = (
            entry.spec.target.reference(),
            entry.spec.action,
            entry.spec.actor.username.clone(),
        );
        plan.steps.push(Step::new(
            Write::Entry(entry),
            "countersign could not record this ({error}); nothing passes unaudited, retry",
        ));
        plan.events.push(PlannedEvent::admission(
            target,
            EventKind::Warning,
            &format!("{action:?}"),
            format!("{action:?} by {actor}: {reason} (audited as AuditEntry {WRITTEN_ENTRY})"),
        ));
        plan.answer = plan.answer.warn(format!(
            "countersign: recorded as AuditEntry {install_namespace}/{WRITTEN_ENTRY}"
        ));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApprovalPolicySpec, BreakGlass};

    fn policy(protection: Option<TamperProtection>) -> ApprovalPolicy {
        let mut policy = ApprovalPolicy::new(
            "prod",
            ApprovalPolicySpec {
                tamper_protection: protection,
                break_glass: Some(BreakGlass {
                    groups: vec!["oncall".into()],
                }),
                ..ApprovalPolicySpec::default()
            },
        );
        policy.metadata.name = Some("prod".into());
        policy
    }

    #[test]
    fn the_ground_is_audited_and_under_refuse_kept_but_by_break_glass() {
        use GroundChange::*;
        use GroundVerdict as V;
        let audit = Some(TamperProtection::Audit);
        let refuse = Some(TamperProtection::Refuse);
        let dave = UserInfo::new("dave", &["developers"]);
        let erin = UserInfo::new("erin", &["oncall"]);
        let namespaces = UserInfo::new(NAMESPACE_CONTROLLER, &[]);
        let kind = |v: &GroundVerdict| match v {
            V::Pass => "pass",
            V::Audit(_) => "audit",
            V::Refuse(_) => "refuse",
        };
        let cases: Vec<(
            &str,
            GroundChange,
            Option<TamperProtection>,
            &UserInfo,
            &str,
        )> = vec![
            ("delete, default", PolicyDeleted, None, &dave, "audit"),
            ("delete, audit", PolicyDeleted, audit, &dave, "audit"),
            ("delete, refuse", PolicyDeleted, refuse, &dave, "refuse"),
            (
                "delete, refuse, break-glass",
                PolicyDeleted,
                refuse,
                &erin,
                "audit",
            ),
            ("edit, default", PolicySpecChanged, None, &dave, "pass"),
            ("edit, refuse", PolicySpecChanged, refuse, &dave, "refuse"),
            (
                "edit, refuse, break-glass",
                PolicySpecChanged,
                refuse,
                &erin,
                "audit",
            ),
            (
                "open request deleted",
                RequestDeleted(ApprovalPhase::Pending),
                None,
                &dave,
                "audit",
            ),
            (
                "open request, refuse",
                RequestDeleted(ApprovalPhase::Approved),
                refuse,
                &dave,
                "refuse",
            ),
            (
                "deploying request, refuse",
                RequestDeleted(ApprovalPhase::Deploying),
                refuse,
                &dave,
                "refuse",
            ),
            (
                "finished request, refuse",
                RequestDeleted(ApprovalPhase::Deployed),
                refuse,
                &dave,
                "audit",
            ),
            (
                "with its namespace, refuse",
                RequestDeleted(ApprovalPhase::Pending),
                refuse,
                &namespaces,
                "audit",
            ),
        ];
        for (name, change, protection, author, expected) in cases {
            let policy = policy(protection);
            let verdict = judge_ground_change(change, Some(&policy), author);
            assert_eq!(kind(&verdict), expected, "{name}: {verdict:?}");
        }
        assert_eq!(
            kind(&judge_ground_change(
                RequestDeleted(ApprovalPhase::Pending),
                None,
                &dave
            )),
            "audit",
            "a request whose policy is gone"
        );
    }
}
