//! `/validate/policies` (SPEC §3): an ApprovalPolicy is valid or refused with the field and
//! the reason (validated on the blocking pool, under a deadline); deleting one, or
//! changing its spec under `tamperProtection`, is the gate's own ground.

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::core::admission::Operation;

use super::request::{Request, decode};
use super::review::{Webhook, refuse};
use crate::api::{ApprovalPolicy, AuditAction};
use crate::core::audit::ground::{
    GroundChange, GroundVerdict, ground_plan, judge_ground_change, policy_ground_entry,
};
use crate::core::plan::{Answer, ReviewPlan};
use crate::core::policy::validation::{admission_answer, validate_policy};

/// How long the webhook waits for an ApprovalPolicy's validation before refusing the
/// policy (fail closed). The chain limits keep validation far below it; it stays well
/// inside the API server's 10 s webhook timeout, so the refusal, not a timeout, is what
/// the author sees.
pub const POLICY_VALIDATION_DEADLINE: Duration = Duration::from_secs(2);

impl Webhook {
    pub(super) async fn policy(&self, request: &Request) -> ReviewPlan {
        let author = request.requester();
        let now = Timestamp::now();
        let caller = request.caller.record();
        let old = match request.operation {
            Operation::Update | Operation::Delete => {
                match decode::<ApprovalPolicy>(request.old_object.as_ref()) {
                    Ok(old) => Some(old),
                    Err(why) => return refuse(why),
                }
            }
            _ => None,
        };
        if let (Operation::Delete, Some(old)) = (&request.operation, &old) {
            let verdict = judge_ground_change(GroundChange::PolicyDeleted, Some(old), &author);
            let entry = policy_ground_entry(
                old,
                AuditAction::PolicyDeleted,
                "deleted",
                &author,
                verdict.reason(),
                now,
            );
            return ground_plan(
                vec![(verdict, entry)],
                Answer::allow(),
                request.dry_run(),
                &self.settings.install_namespace,
                &caller,
            );
        }
        let policy = match decode::<ApprovalPolicy>(request.object.as_ref()) {
            Ok(policy) => policy,
            Err(why) => return refuse(why),
        };
        let validated = validated(&policy).await;
        if !validated.allowed {
            return ReviewPlan::answer(validated);
        }
        // A spec change under tamperProtection: audited as break-glass, or refused.
        let verdicts = match &old {
            Some(old) if old.spec != policy.spec => {
                let verdict =
                    judge_ground_change(GroundChange::PolicySpecChanged, Some(old), &author);
                let generation = policy.metadata.generation.unwrap_or_default();
                let entry = policy_ground_entry(
                    old,
                    AuditAction::BreakGlass,
                    &format!("{generation}-break-glass"),
                    &author,
                    verdict.reason(),
                    now,
                );
                vec![(verdict, entry)]
                    .into_iter()
                    .filter(|(verdict, _)| !matches!(verdict, GroundVerdict::Pass))
                    .collect()
            }
            _ => Vec::new(),
        };
        ground_plan(
            verdicts,
            validated,
            request.dry_run(),
            &self.settings.install_namespace,
            &caller,
        )
    }
}

/// The policy's validation as an answer, run off the async workers under a deadline:
/// validation is bounded by the chain limits, but a policy is outside data, and a busy
/// worker stalls other reviews.
async fn validated(policy: &ApprovalPolicy) -> Answer {
    let name = policy.name_any();
    let spec = policy.spec.clone();
    let validating = tokio::task::spawn_blocking(move || validate_policy(&spec));
    match tokio::time::timeout(POLICY_VALIDATION_DEADLINE, validating).await {
        Ok(Ok(validation)) => admission_answer(&name, validation),
        Ok(Err(error)) => {
            tracing::warn!(%error, policy = name, "policy validation failed");
            Answer::deny(format!(
                "countersign could not validate ApprovalPolicy {name}; it is refused"
            ))
        }
        Err(_) => {
            tracing::warn!(policy = name, "policy validation ran out of time");
            Answer::deny(format!(
                "countersign could not validate ApprovalPolicy {name} within {}s; it is refused",
                POLICY_VALIDATION_DEADLINE.as_secs()
            ))
        }
    }
}
