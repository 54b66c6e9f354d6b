//! Deployment confirmation (SPEC §1.3, §1.4): what becomes of an admitted change, from the
//! live target object and the time. An approval the webhook moved to `Deploying` becomes
//! `Deployed` when the workload reports the rollout of that change complete, `Failed` when
//! the rollout fails, times out, is superseded or its target is deleted, and goes back to
//! `Approved` (while its approvalTTL lasts) when the admitted change never reached the
//! object.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::Value;

use crate::api::{ApprovalPhase, DeploymentApproval, DeploymentApprovalStatus, RolloutStatus};
use crate::core::approval::status::upsert_condition;
use crate::core::change::{ChangeDigest, api_group};
use crate::core::policy::windows::parse_duration;

/// How long after admission the change may take to show on the object before the
/// operator concludes it never got there (another admission plugin refused it after
/// countersign, or the client gave up).
pub const NOT_APPLIED_GRACE: SignedDuration = SignedDuration::from_secs(15);

/// The rollout timeout of a chain that names none.
pub const DEFAULT_ROLLOUT_TIMEOUT: SignedDuration = SignedDuration::from_mins(30);

/// The condition that tells where the admitted change's rollout stands.
pub const ROLLED_OUT_CONDITION: &str = "RolledOut";

/// Kinds whose rollout the operator watches; other kinds are Deployed on admission.
pub fn watches_rollout(api_version: &str, kind: &str) -> bool {
    matches!(
        (api_group(api_version), kind),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet") | ("batch", "Job")
    )
}

/// What a workload reports about the rollout of its current generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadProgress {
    Complete(String),
    Progressing(String),
    Failed { reason: String, message: String },
}

/// The rollout state of `object` (a Deployment, StatefulSet, DaemonSet or Job), judged
/// the way `kubectl rollout status` judges it. Missing fields count as "not there yet".
pub fn workload_progress(kind: &str, object: &Value) -> WorkloadProgress {
    match kind {
        "Deployment" => deployment_progress(object),
        "StatefulSet" => stateful_set_progress(object),
        "DaemonSet" => daemon_set_progress(object),
        "Job" => job_progress(object),
        other => WorkloadProgress::Complete(format!("no rollout to watch for kind {other}")),
    }
}

/// A Deployment: failed past its progress deadline, else complete when every wanted replica is
/// updated and available and no old one remains.
fn deployment_progress(object: &Value) -> WorkloadProgress {
    let generation = int(object, "/metadata/generation").unwrap_or(0);
    let observed = int(object, "/status/observedGeneration").unwrap_or(0);
    let status_int = |field: &str| int(object, &format!("/status/{field}")).unwrap_or(0);
    let waiting = |message: String| WorkloadProgress::Progressing(message);
    if let Some(condition) = condition(object, "Progressing")
        && condition.reason == "ProgressDeadlineExceeded"
    {
        return WorkloadProgress::Failed {
            reason: "ProgressDeadlineExceeded".into(),
            message: condition.message,
        };
    }
    if observed < generation {
        return waiting("waiting for the Deployment controller to observe the change".into());
    }
    let wanted = int(object, "/spec/replicas").unwrap_or(1);
    let updated = status_int("updatedReplicas");
    let available = status_int("availableReplicas");
    let total = status_int("replicas");
    if updated < wanted {
        waiting(format!("{updated} of {wanted} replicas updated"))
    } else if total > updated {
        waiting(format!(
            "{} old replicas are pending termination",
            total - updated
        ))
    } else if available < updated {
        waiting(format!(
            "{available} of {updated} updated replicas available"
        ))
    } else {
        WorkloadProgress::Complete(format!(
            "{updated} of {wanted} replicas updated and available"
        ))
    }
}

/// A StatefulSet: with a rolling update, complete when every replica is ready and updated (or
/// every replica above the partition is updated).
fn stateful_set_progress(object: &Value) -> WorkloadProgress {
    let generation = int(object, "/metadata/generation").unwrap_or(0);
    let observed = int(object, "/status/observedGeneration").unwrap_or(0);
    let status_int = |field: &str| int(object, &format!("/status/{field}")).unwrap_or(0);
    let waiting = |message: String| WorkloadProgress::Progressing(message);
    if observed == 0 || observed < generation {
        return waiting("waiting for the StatefulSet controller to observe the change".into());
    }
    let strategy = text(object, "/spec/updateStrategy/type").unwrap_or("RollingUpdate");
    if strategy != "RollingUpdate" {
        return WorkloadProgress::Complete(format!(
            "update strategy {strategy}: pods change when they are deleted"
        ));
    }
    let wanted = int(object, "/spec/replicas").unwrap_or(1);
    let ready = status_int("readyReplicas");
    if ready < wanted {
        return waiting(format!("{ready} of {wanted} replicas ready"));
    }
    if let Some(partition) = int(object, "/spec/updateStrategy/rollingUpdate/partition")
        && partition > 0
    {
        let updated = status_int("updatedReplicas");
        let due = (wanted - partition).max(0);
        return if updated < due {
            waiting(format!(
                "{updated} of {due} replicas above the partition updated"
            ))
        } else {
            WorkloadProgress::Complete(format!(
                "{updated} replicas above partition {partition} updated"
            ))
        };
    }
    let current = text(object, "/status/currentRevision");
    let update = text(object, "/status/updateRevision");
    if update.is_none() || current != update {
        return waiting(format!(
            "{} of {wanted} replicas updated",
            status_int("updatedReplicas")
        ));
    }
    WorkloadProgress::Complete(format!("{ready} of {wanted} replicas updated and ready"))
}

/// A DaemonSet: with a rolling update, complete when every scheduled pod is updated and available.
fn daemon_set_progress(object: &Value) -> WorkloadProgress {
    let generation = int(object, "/metadata/generation").unwrap_or(0);
    let observed = int(object, "/status/observedGeneration").unwrap_or(0);
    let status_int = |field: &str| int(object, &format!("/status/{field}")).unwrap_or(0);
    let waiting = |message: String| WorkloadProgress::Progressing(message);
    if observed < generation {
        return waiting("waiting for the DaemonSet controller to observe the change".into());
    }
    let strategy = text(object, "/spec/updateStrategy/type").unwrap_or("RollingUpdate");
    if strategy != "RollingUpdate" {
        return WorkloadProgress::Complete(format!(
            "update strategy {strategy}: pods change when they are deleted"
        ));
    }
    let desired = status_int("desiredNumberScheduled");
    let updated = status_int("updatedNumberScheduled");
    let available = status_int("numberAvailable");
    if updated < desired {
        waiting(format!("{updated} of {desired} pods updated"))
    } else if available < desired {
        waiting(format!("{available} of {desired} updated pods available"))
    } else {
        WorkloadProgress::Complete(format!("{desired} of {desired} pods updated and available"))
    }
}

/// A Job: complete or failed by its conditions.
fn job_progress(object: &Value) -> WorkloadProgress {
    let status_int = |field: &str| int(object, &format!("/status/{field}")).unwrap_or(0);
    let waiting = |message: String| WorkloadProgress::Progressing(message);
    if let Some(failed) = condition(object, "Failed")
        && failed.status == "True"
    {
        return WorkloadProgress::Failed {
            reason: format!("JobFailed: {}", failed.reason),
            message: failed.message,
        };
    }
    match condition(object, "Complete") {
        Some(complete) if complete.status == "True" => WorkloadProgress::Complete(format!(
            "the Job completed ({} succeeded)",
            status_int("succeeded")
        )),
        _ => waiting(format!(
            "the Job is running ({} active, {} succeeded)",
            status_int("active"),
            status_int("succeeded")
        )),
    }
}

/// The target as the operator read it.
#[derive(Clone, Copy, Debug)]
pub enum LiveTarget<'a> {
    /// The kind has no rollout to watch; the object was not read.
    NotWatched,
    Missing,
    Present(&'a Value),
}

/// What to do with a `Deploying` approval.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutPlan {
    /// The status to write; `None`: leave it as it is.
    pub write: Option<DeploymentApprovalStatus>,
    /// When to look again although nothing changed (the grace or the timeout running out).
    pub next_deadline: Option<Timestamp>,
}

/// How a rollout ended, or that it goes on.
enum Outcome {
    Waiting { message: String, until: Timestamp },
    Deployed(String),
    Failed { reason: String, message: String },
    NotApplied,
}

/// The next status of a `Deploying` approval, from its target as it is now. `ignore_fields`
/// are the pointers its digest was computed without (`approval_ignore_fields`).
/// `expires_at` is when its approval runs out (the chain's `approvalTTL`), which decides
/// whether a change that never arrived may be applied again.
pub fn plan_rollout(
    approval: &DeploymentApproval,
    target: LiveTarget,
    ignore_fields: &[String],
    approval_expires_at: Option<Timestamp>,
    now: Timestamp,
) -> RolloutPlan {
    let Some(stored) = approval
        .status
        .as_ref()
        .filter(|s| s.phase == ApprovalPhase::Deploying)
    else {
        return RolloutPlan {
            write: None,
            next_deadline: None,
        };
    };
    let mut rollout = stored.rollout.clone().unwrap_or_default();
    // Admitted by a webhook that did not record when: count from the first look.
    let admitted_at = rollout.admitted_at.as_ref().map_or(now, |t| t.0);
    rollout.admitted_at = Some(Time(admitted_at));
    let clock = RolloutClock::of(approval, admitted_at, now);
    let outcome = match target {
        LiveTarget::NotWatched => Outcome::Deployed(format!(
            "{} has no rollout to watch: deployed on admission",
            approval.spec.target.kind
        )),
        LiveTarget::Missing if rollout.applied_generation.is_some() => Outcome::Failed {
            reason: "TargetDeleted".into(),
            message: format!(
                "{} {} was deleted",
                approval.spec.target.kind, approval.spec.target.name
            ),
        },
        LiveTarget::Missing if now < clock.grace_ends => Outcome::Waiting {
            message: "waiting for the admitted change to reach the object".into(),
            until: clock.grace_ends.min(clock.timeout_at),
        },
        LiveTarget::Missing => Outcome::NotApplied,
        LiveTarget::Present(object) => {
            present_outcome(approval, object, ignore_fields, &mut rollout, &clock)
        }
    };
    status_after(
        approval,
        stored,
        rollout,
        outcome,
        approval_expires_at,
        &clock,
    )
}

/// The times a rollout is judged by.
struct RolloutClock {
    now: Timestamp,
    admitted_at: Timestamp,
    /// The chain's rollout timeout (or the default), and when it runs out.
    timeout: SignedDuration,
    timeout_at: Timestamp,
    /// Until when a change not yet on the object may still arrive.
    grace_ends: Timestamp,
}

impl RolloutClock {
    fn of(approval: &DeploymentApproval, admitted_at: Timestamp, now: Timestamp) -> Self {
        let timeout = approval
            .spec
            .policy
            .chain
            .rollout_timeout
            .as_deref()
            .and_then(|text| parse_duration(text).ok())
            .unwrap_or(DEFAULT_ROLLOUT_TIMEOUT);
        RolloutClock {
            now,
            admitted_at,
            timeout,
            timeout_at: admitted_at.checked_add(timeout).unwrap_or(Timestamp::MAX),
            grace_ends: admitted_at
                .checked_add(NOT_APPLIED_GRACE)
                .unwrap_or(Timestamp::MAX),
        }
    }
}

/// How the rollout stands with the target present: the admitted change is on it (then the
/// workload's progress decides, and the generation it arrived at is recorded), other content
/// replaced it, or it has not arrived (yet).
fn present_outcome(
    approval: &DeploymentApproval,
    object: &Value,
    ignore_fields: &[String],
    rollout: &mut RolloutStatus,
    clock: &RolloutClock,
) -> Outcome {
    let kind = approval.spec.target.kind.as_str();
    let live = ChangeDigest::of(object, ignore_fields);
    if live.as_str() == approval.spec.change.digest {
        if rollout.applied_generation.is_none() {
            rollout.applied_generation = Some(int(object, "/metadata/generation").unwrap_or(0));
        }
        match workload_progress(kind, object) {
            WorkloadProgress::Complete(message) => Outcome::Deployed(message),
            WorkloadProgress::Failed { reason, message } => Outcome::Failed { reason, message },
            WorkloadProgress::Progressing(message) if clock.now >= clock.timeout_at => {
                Outcome::Failed {
                    reason: "RolloutTimeout".into(),
                    message: format!(
                        "not rolled out within the rollout timeout of {}: {message}",
                        fmt_duration(clock.timeout)
                    ),
                }
            }
            WorkloadProgress::Progressing(message) => Outcome::Waiting {
                message,
                until: clock.timeout_at,
            },
        }
    } else if rollout.applied_generation.is_some() {
        Outcome::Failed {
            reason: "Superseded".into(),
            message: format!(
                "the object changed to other content ({}) before the rollout completed",
                live.short_hex(12)
            ),
        }
    } else if clock.now < clock.grace_ends {
        Outcome::Waiting {
            message: "waiting for the admitted change to reach the object".into(),
            until: clock.grace_ends.min(clock.timeout_at),
        }
    } else {
        Outcome::NotApplied
    }
}

/// The status an outcome leaves: still waiting (written only if it changed, looked at again
/// by `until`), or finished (Deployed, Failed, or back to Approved/Expired when the change
/// never arrived), which releases the lock.
fn status_after(
    approval: &DeploymentApproval,
    stored: &DeploymentApprovalStatus,
    mut rollout: RolloutStatus,
    outcome: Outcome,
    approval_expires_at: Option<Timestamp>,
    clock: &RolloutClock,
) -> RolloutPlan {
    let (now, admitted_at) = (clock.now, clock.admitted_at);
    let mut status = stored.clone();
    let condition = match outcome {
        Outcome::Waiting { message, until } => {
            rollout.message = Some(message.clone());
            status.rollout = Some(rollout);
            let condition = rolled_out("Unknown", "Progressing", message, now);
            status.conditions = with_condition(&stored.conditions, condition, approval);
            return RolloutPlan {
                write: (Some(&status) != approval.status.as_ref()).then_some(status),
                next_deadline: Some(until),
            };
        }
        Outcome::Deployed(message) => {
            status.phase = ApprovalPhase::Deployed;
            rollout.finished_at = Some(Time(now));
            rollout.message = Some(message.clone());
            rolled_out("True", "Complete", message, now)
        }
        Outcome::Failed { reason, message } => {
            status.phase = ApprovalPhase::Failed;
            rollout.finished_at = Some(Time(now));
            rollout.message = Some(format!("{reason}: {message}"));
            rolled_out("False", &reason, message, now)
        }
        Outcome::NotApplied => {
            let still_valid = approval_expires_at.is_none_or(|t| now < t);
            status.phase = if still_valid {
                ApprovalPhase::Approved
            } else {
                ApprovalPhase::Expired
            };
            let message = format!(
                "admitted at {admitted_at} but the change never reached the object; {}",
                if still_valid {
                    "it may be applied again while the approval lasts"
                } else {
                    "the approval has run out meanwhile"
                }
            );
            rollout.message = Some(message.clone());
            rolled_out("False", "NotApplied", message, now)
        }
    };
    status.lock_holder = None;
    status.rollout = Some(rollout);
    status.conditions = with_condition(&stored.conditions, condition, approval);
    RolloutPlan {
        write: Some(status),
        next_deadline: None,
    }
}

/// The ignored fields `approval`'s digest was computed without: the ones it recorded, else
/// the governing policy's current ones (`policy_fields`), else the default.
pub fn approval_ignore_fields(
    approval: &DeploymentApproval,
    policy_fields: Option<Vec<String>>,
) -> Vec<String> {
    approval
        .spec
        .policy
        .ignore_fields
        .clone()
        .or(policy_fields)
        .unwrap_or_else(|| {
            crate::api::DEFAULT_IGNORE_FIELDS
                .iter()
                .map(|f| f.to_string())
                .collect()
        })
}

/// The `RolledOut` condition the webhook sets as it admits a change.
pub fn admitted_condition(now: Timestamp, generation: Option<i64>) -> Condition {
    Condition {
        observed_generation: generation,
        ..rolled_out(
            "Unknown",
            "Admitted",
            "admitted; waiting for the rollout".into(),
            now,
        )
    }
}

/// `status.rollout` for an admission at `now` by `by`, counting earlier admissions.
pub fn admitted_rollout(
    previous: Option<&RolloutStatus>,
    by: crate::api::UserInfo,
    replica: &str,
    caller_verified: bool,
    now: Timestamp,
) -> RolloutStatus {
    let admissions = previous.map_or(0, |r| r.admissions) + 1;
    let mut unverified_admissions = previous
        .map(|r| r.unverified_admissions.clone())
        .unwrap_or_default();
    if !caller_verified {
        unverified_admissions.push(admissions);
    }
    RolloutStatus {
        admitted_at: Some(Time(now)),
        admitted_by: Some(by),
        admitted_by_replica: Some(replica.to_string()),
        admissions,
        unverified_admissions,
        ..RolloutStatus::default()
    }
}

/// The status of `approval` as the webhook admits its change (`chain`: its state now):
/// `Deploying`, with `replica` as the lock holder and `admitted_by`'s admission counted
/// (`caller_verified`: the review came from an authenticated API server; otherwise the
/// admission is recorded as a claim, `core::audit::trail`).
pub fn deploying_status(
    approval: &DeploymentApproval,
    chain: &crate::core::approval::chain::ChainState,
    replica: &str,
    admitted_by: &crate::api::UserInfo,
    caller_verified: bool,
    now: Timestamp,
) -> DeploymentApprovalStatus {
    let previous = approval.status.clone().unwrap_or_default();
    let mut status = chain.to_status();
    status.phase = ApprovalPhase::Deploying;
    status.current_level = None;
    status.lock_holder = Some(replica.to_string());
    status.observed_generation = approval.metadata.generation;
    status.notifications = previous.notifications;
    status.deploy_token = previous.deploy_token;
    status.rollout = Some(admitted_rollout(
        previous.rollout.as_ref(),
        admitted_by.clone(),
        replica,
        caller_verified,
        now,
    ));
    status.conditions = previous
        .conditions
        .into_iter()
        .filter(|c| c.type_ != ROLLED_OUT_CONDITION)
        .chain([admitted_condition(now, approval.metadata.generation)])
        .collect();
    status
}

fn rolled_out(status: &str, reason: &str, message: String, now: Timestamp) -> Condition {
    Condition {
        type_: ROLLED_OUT_CONDITION.into(),
        status: status.into(),
        reason: condition_reason(reason),
        message: message.chars().take(1024).collect(),
        last_transition_time: Time(now),
        observed_generation: None,
    }
}

/// A condition reason is CamelCase letters: `JobFailed: BackoffLimitExceeded` →
/// `JobFailed`.
fn condition_reason(reason: &str) -> String {
    let word: String = reason
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    if word.is_empty() {
        "Unknown".into()
    } else {
        word
    }
}

/// `conditions` with `condition` in place of its type, keeping the transition time while
/// the status does not change (API conventions).
fn with_condition(
    conditions: &[Condition],
    mut condition: Condition,
    approval: &DeploymentApproval,
) -> Vec<Condition> {
    condition.observed_generation = approval.metadata.generation;
    let mut merged = conditions.to_vec();
    upsert_condition(&mut merged, condition);
    merged
}

fn fmt_duration(duration: SignedDuration) -> String {
    format!("{duration:#}")
}

fn int(object: &Value, pointer: &str) -> Option<i64> {
    object.pointer(pointer).and_then(Value::as_i64)
}

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

/// A status condition of the object, by type.
struct ObjectCondition {
    status: String,
    reason: String,
    message: String,
}

fn condition(object: &Value, type_: &str) -> Option<ObjectCondition> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        .map(|c| {
            let field = |name: &str| {
                c.get(name)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            ObjectCondition {
                status: field("status"),
                reason: field("reason"),
                message: field("message"),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ReviewDecision, UserInfo};
    use crate::core::test_builders::{minutes as t, two_level_request};
    use serde_json::json;

    fn deployment(generation: i64, observed: i64, updated: i64, available: i64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "generation": generation},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}},
            "status": {"observedGeneration": observed, "replicas": updated.max(2),
                       "updatedReplicas": updated, "availableReplicas": available}
        })
    }

    #[test]
    fn workloads_report_their_rollouts_like_kubectl_rollout_status() {
        use WorkloadProgress::{Complete, Failed, Progressing};
        let stuck = json!({"metadata": {"generation": 2}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet web-1 has timed out progressing."}]}});
        let old_pods = json!({"metadata": {"generation": 2}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}});
        let sts = |current: &str, ready: i64| {
            json!({"metadata": {"generation": 3}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 3, "readyReplicas": ready, "updatedReplicas": 2,
                       "currentRevision": current, "updateRevision": "db-2"}})
        };
        let sts_partition = json!({"metadata": {"generation": 3},
            "spec": {"replicas": 4, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}},
            "status": {"observedGeneration": 3, "readyReplicas": 4, "updatedReplicas": 2}});
        let ds = |updated: i64, available: i64| {
            json!({"metadata": {"generation": 5},
            "status": {"observedGeneration": 5, "desiredNumberScheduled": 2,
                       "updatedNumberScheduled": updated, "numberAvailable": available}})
        };
        let job = |conditions: Value| {
            json!({"metadata": {"generation": 1},
            "status": {"succeeded": 1, "conditions": conditions}})
        };
        let progressing = |p: &WorkloadProgress| matches!(p, Progressing(_));
        let complete = |p: &WorkloadProgress| matches!(p, Complete(_));
        let failed = |p: &WorkloadProgress| matches!(p, Failed { .. });
        type Case = (
            &'static str,
            &'static str,
            Value,
            fn(&WorkloadProgress) -> bool,
        );
        let cases: Vec<Case> = vec![
            (
                "deployment done",
                "Deployment",
                deployment(2, 2, 2, 2),
                complete,
            ),
            (
                "change not observed yet",
                "Deployment",
                deployment(3, 2, 2, 2),
                progressing,
            ),
            (
                "one of two updated",
                "Deployment",
                deployment(2, 2, 1, 1),
                progressing,
            ),
            (
                "updated, not available",
                "Deployment",
                deployment(2, 2, 2, 1),
                progressing,
            ),
            ("old pods terminating", "Deployment", old_pods, progressing),
            ("progress deadline exceeded", "Deployment", stuck, failed),
            (
                "no status at all",
                "Deployment",
                json!({"metadata": {"generation": 1}}),
                progressing,
            ),
            ("statefulset done", "StatefulSet", sts("db-2", 2), complete),
            (
                "statefulset old revision",
                "StatefulSet",
                sts("db-1", 2),
                progressing,
            ),
            (
                "statefulset not ready",
                "StatefulSet",
                sts("db-2", 1),
                progressing,
            ),
            (
                "statefulset partition",
                "StatefulSet",
                sts_partition,
                complete,
            ),
            ("daemonset done", "DaemonSet", ds(2, 2), complete),
            ("daemonset updating", "DaemonSet", ds(1, 2), progressing),
            ("daemonset unavailable", "DaemonSet", ds(2, 1), progressing),
            (
                "job complete",
                "Job",
                job(json!([{"type": "Complete", "status": "True"}])),
                complete,
            ),
            (
                "job failed",
                "Job",
                job(
                    json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]),
                ),
                failed,
            ),
            ("job running", "Job", job(json!([])), progressing),
        ];
        for (name, kind, object, expected) in cases {
            let progress = workload_progress(kind, &object);
            assert!(expected(&progress), "{name}: {progress:?}");
        }
    }

    /// Admitted at minute 10, approved at minute 2 with a 30 minute approvalTTL and a
    /// 20 minute rollout timeout, for the change that `deployment(…)` holds.
    fn admitted(applied: Option<i64>) -> DeploymentApproval {
        use ReviewDecision::Approve;
        let mut approval = two_level_request(
            &[("alice", Approve, 1), ("carol", Approve, 2)],
            Some(ApprovalPhase::Deploying),
        );
        approval.spec.policy.chain.rollout_timeout = Some("20m".into());
        approval.spec.change.digest = ChangeDigest::of(&deployment(1, 1, 1, 1), &fields())
            .as_str()
            .to_string();
        if let Some(status) = approval.status.as_mut() {
            status.lock_holder = Some("replica-a".into());
            status.rollout = Some(RolloutStatus {
                applied_generation: applied,
                ..admitted_rollout(None, UserInfo::new("dave", &[]), "replica-a", true, t(10))
            });
        }
        approval
    }

    fn fields() -> Vec<String> {
        vec!["/spec/replicas".into()]
    }

    fn seconds(s: i64) -> Timestamp {
        t(10) + SignedDuration::from_secs(s)
    }

    #[test]
    fn an_admitted_change_is_confirmed_failed_or_released() {
        let done = deployment(2, 2, 2, 2);
        let rolling = deployment(2, 2, 1, 1);
        let mut other = deployment(2, 2, 2, 2);
        other["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:3");
        let mut stuck = rolling.clone();
        stuck["status"]["conditions"] = json!([{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "timed out"}]);
        let mut job = admitted(None);
        job.spec.target.api_version = "v1".into();
        job.spec.target.kind = "ConfigMap".into();
        let ttl = Some(t(32));
        // (name, approval, target, now, phase written, reason, next deadline)
        type Case<'a> = (
            &'static str,
            DeploymentApproval,
            LiveTarget<'a>,
            Timestamp,
            Option<ApprovalPhase>,
            Option<&'static str>,
            Option<Timestamp>,
        );
        let cases: Vec<Case> = vec![
            (
                "rolled out",
                admitted(None),
                LiveTarget::Present(&done),
                seconds(5),
                Some(ApprovalPhase::Deployed),
                Some("Complete"),
                None,
            ),
            (
                "rolling",
                admitted(None),
                LiveTarget::Present(&rolling),
                seconds(5),
                Some(ApprovalPhase::Deploying),
                Some("Progressing"),
                Some(t(30)),
            ),
            (
                "rolling past the timeout",
                admitted(Some(2)),
                LiveTarget::Present(&rolling),
                t(30),
                Some(ApprovalPhase::Failed),
                Some("RolloutTimeout"),
                None,
            ),
            (
                "progress deadline",
                admitted(Some(2)),
                LiveTarget::Present(&stuck),
                t(12),
                Some(ApprovalPhase::Failed),
                Some("ProgressDeadlineExceeded"),
                None,
            ),
            (
                "not there yet",
                admitted(None),
                LiveTarget::Present(&other),
                seconds(5),
                Some(ApprovalPhase::Deploying),
                Some("Progressing"),
                Some(seconds(15)),
            ),
            (
                "never arrived",
                admitted(None),
                LiveTarget::Present(&other),
                seconds(15),
                Some(ApprovalPhase::Approved),
                Some("NotApplied"),
                None,
            ),
            (
                "never arrived, approval ran out",
                admitted(None),
                LiveTarget::Present(&other),
                t(33),
                Some(ApprovalPhase::Expired),
                Some("NotApplied"),
                None,
            ),
            (
                "superseded after arriving",
                admitted(Some(2)),
                LiveTarget::Present(&other),
                seconds(30),
                Some(ApprovalPhase::Failed),
                Some("Superseded"),
                None,
            ),
            (
                "created object not there yet",
                admitted(None),
                LiveTarget::Missing,
                seconds(1),
                Some(ApprovalPhase::Deploying),
                Some("Progressing"),
                Some(seconds(15)),
            ),
            (
                "created object never arrived",
                admitted(None),
                LiveTarget::Missing,
                seconds(16),
                Some(ApprovalPhase::Approved),
                Some("NotApplied"),
                None,
            ),
            (
                "target deleted",
                admitted(Some(2)),
                LiveTarget::Missing,
                seconds(16),
                Some(ApprovalPhase::Failed),
                Some("TargetDeleted"),
                None,
            ),
            (
                "a kind without rollout",
                job,
                LiveTarget::NotWatched,
                seconds(1),
                Some(ApprovalPhase::Deployed),
                Some("Complete"),
                None,
            ),
            (
                "not admitted",
                two_level_request(&[], None),
                LiveTarget::Present(&done),
                seconds(1),
                None,
                None,
                None,
            ),
        ];
        for (name, approval, target, now, phase, reason, deadline) in cases {
            let plan = plan_rollout(&approval, target, &fields(), ttl, now);
            let written = plan.write.as_ref();
            assert_eq!(written.map(|s| s.phase), phase, "{name}: phase");
            let condition = written.and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == ROLLED_OUT_CONDITION)
            });
            assert_eq!(
                condition.map(|c| c.reason.as_str()),
                reason,
                "{name}: reason"
            );
            assert_eq!(plan.next_deadline, deadline, "{name}: deadline");
            if let Some(status) = written
                && status.phase != ApprovalPhase::Deploying
            {
                assert_eq!(status.lock_holder, None, "{name}: the lock is released");
            }
        }
    }

    #[test]
    fn a_rollout_seen_once_is_not_written_again() {
        let rolling = deployment(2, 2, 1, 1);
        let mut approval = admitted(None);
        let first = plan_rollout(
            &approval,
            LiveTarget::Present(&rolling),
            &fields(),
            None,
            seconds(1),
        );
        let status = first.write.expect("the applied generation is recorded");
        assert_eq!(
            status.rollout.as_ref().and_then(|r| r.applied_generation),
            Some(2)
        );
        approval.status = Some(status);
        let again = plan_rollout(
            &approval,
            LiveTarget::Present(&rolling),
            &fields(),
            None,
            seconds(9),
        );
        assert_eq!(again.write, None);
        assert_eq!(again.next_deadline, Some(t(30)));
    }

    #[test]
    fn ignore_fields_come_from_the_request_then_the_policy() {
        let mut approval = admitted(None);
        assert_eq!(approval_ignore_fields(&approval, None), fields());
        assert_eq!(
            approval_ignore_fields(&approval, Some(vec!["/spec/paused".into()])),
            vec!["/spec/paused".to_string()]
        );
        approval.spec.policy.ignore_fields = Some(vec![]);
        assert!(approval_ignore_fields(&approval, Some(fields())).is_empty());
    }
}
