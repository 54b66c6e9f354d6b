//! Notifications (SPEC §5), derived from what is durable in etcd, like the audit trail: the
//! request's chain state says which notices exist and whom they are for, and
//! `status.notifications` says which were delivered. A restart derives the same notices
//! again and sends only what no record shows delivered.
//!
//! - A level's sinks hear `LevelOpened` when it opens: level 1 at the request, level i+1
//!   once level i is satisfied. A level that never opened (the request was rejected or
//!   expired first) is never announced.
//! - The requester's sinks (`spec.approval.requesterSinks`) hear the decision (`Approved`,
//!   `Rejected`, `Expired`) and the rollout's end (`Deployed`, `Failed`).
//! - Delivery is at least once: a failed attempt is retried after 1 s, 2 s, 4 s … at most
//!   5 minutes apart, without end. Each sink gets its notices in order: a later notice waits
//!   until the sink has taken the earlier ones, so a receiver never sees level 2 open before
//!   level 1.
//! - A notice is the same everywhere it goes: its delivery id is stable per
//!   (approval uid, level, event), so a receiver drops a duplicate (a delivery whose status
//!   write was lost is sent again).

use crate::core::approval::set::SET_KIND;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use crate::api::{
    ApprovalPhase, ApprovalPolicy, AuditAction, AuditEntry, AuditTarget, ChangeSummary,
    DeploymentApproval, NotificationStatus, Operation, UserInfo,
};
use crate::core::approval::chain::{ChainState, describe_level, describe_progress, level_label};
use crate::core::inert;
use crate::core::policy::matching::policy_named;

/// The `level` that the requester's notices carry in `status.notifications`. Level names are
/// never empty (policy validation), so it cannot be mistaken for a level.
pub const REQUESTER_LEVEL: &str = "";

/// The wait after the first failed attempt; each further failure doubles it.
pub const FIRST_RETRY_DELAY: SignedDuration = SignedDuration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_RETRY_DELAY: SignedDuration = SignedDuration::from_mins(5);
/// The longest `last_error` kept in the status.
const MAX_ERROR_CHARS: usize = 500;

/// What a notice announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum NoticeEvent {
    /// A level is open: its approvers can act now.
    LevelOpened,
    Approved,
    Rejected,
    Expired,
    /// The approved change rolled out (deployment confirmed).
    Deployed,
    /// The approved change's rollout failed or timed out.
    Failed,
    /// A change passed by break-glass (SPEC §6), announced to every level's sinks.
    BreakGlass,
}

impl NoticeEvent {
    /// The name in `status.notifications[].event` and in the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeEvent::LevelOpened => "LevelOpened",
            NoticeEvent::Approved => "Approved",
            NoticeEvent::Rejected => "Rejected",
            NoticeEvent::Expired => "Expired",
            NoticeEvent::Deployed => "Deployed",
            NoticeEvent::Failed => "Failed",
            NoticeEvent::BreakGlass => "BreakGlass",
        }
    }
}

/// One thing to tell, and the sinks to tell it to.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub event: NoticeEvent,
    /// The level (0-based) a `LevelOpened` notice announces; `None`: the requester's notice.
    pub level: Option<usize>,
    /// The level's name, or [`REQUESTER_LEVEL`]: with the sink and the event, the key of the
    /// notice's record in `status.notifications`.
    pub level_name: String,
    /// Sink names (Secrets in the install namespace), each once, in the policy's order.
    pub sinks: Vec<String>,
    /// `<approval uid>/level-<n>/<event>` or `<approval uid>/requester/<event>`: the same for
    /// every sink and every attempt, sent as the delivery header so receivers drop duplicates.
    pub delivery_id: String,
}

/// Every notice the request's durable state implies, in the order they are sent: the levels'
/// in level order, then the requester's. `state` is the chain at the time of the reconcile
/// (`approval_state`), which also carries a stored `Deployed` or `Failed`.
pub fn notices(approval: &DeploymentApproval, state: &ChainState) -> Vec<Notice> {
    let chain = &approval.spec.policy.chain;
    let key = approval_key(approval);
    let mut notices = Vec::new();
    for (index, level) in chain.levels.iter().enumerate() {
        let opened = index == 0
            || state
                .levels
                .get(index - 1)
                .is_some_and(|previous| previous.satisfied);
        if !opened {
            break;
        }
        notices.push(Notice {
            event: NoticeEvent::LevelOpened,
            level: Some(index),
            level_name: level.name.clone(),
            sinks: distinct(&level.sinks),
            delivery_id: format!(
                "{key}/level-{}/{}",
                index + 1,
                NoticeEvent::LevelOpened.as_str()
            ),
        });
    }
    let admitted = matches!(
        approval.recorded_phase(),
        Some(ApprovalPhase::Deploying | ApprovalPhase::Deployed | ApprovalPhase::Failed)
    );
    let mut decisions = Vec::new();
    // Every level was satisfied at some point: the requester hears it even when a rejection
    // or the approvalTTL ended the approval afterwards.
    if state.approved_at.is_some() {
        decisions.push(NoticeEvent::Approved);
    }
    match state.phase {
        ApprovalPhase::Rejected => decisions.push(NoticeEvent::Rejected),
        ApprovalPhase::Expired if !admitted => decisions.push(NoticeEvent::Expired),
        ApprovalPhase::Deployed => decisions.push(NoticeEvent::Deployed),
        ApprovalPhase::Failed => decisions.push(NoticeEvent::Failed),
        _ => {}
    }
    let requester_sinks = distinct(&chain.requester_sinks);
    for event in decisions {
        notices.push(Notice {
            event,
            level: None,
            level_name: REQUESTER_LEVEL.to_string(),
            sinks: requester_sinks.clone(),
            delivery_id: format!("{key}/requester/{}", event.as_str()),
        });
    }
    notices
}

/// The approval's uid, or `<namespace>/<name>` for an object that has none yet.
fn approval_key(approval: &DeploymentApproval) -> String {
    match approval.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_string(),
        _ => format!(
            "{}/{}",
            approval.metadata.namespace.as_deref().unwrap_or_default(),
            approval.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

fn distinct(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        if !name.is_empty() && !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

/// The JSON body a sink receives.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NoticePayload {
    /// The notice's stable id, also sent as the `X-Countersign-Delivery` header.
    pub delivery_id: String,
    pub event: NoticeEvent,
    /// What a person reads, in Slack's mrkdwn (`*bold*`, `` `code` ``), with `&`, `<` and
    /// `>` escaped as Slack requires, so text from a request can never mention or link.
    pub text: String,
    pub approval: PayloadApproval,
    pub target: PayloadTarget,
    pub change: PayloadChange,
    /// The level a `LevelOpened` notice announces; absent in the requester's notices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<PayloadLevel>,
    /// That level's progress; for the requester's notices, the whole chain's.
    pub progress: PayloadProgress,
    /// Why the request ended as it did (rejection comment, expiry, rollout message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How to approve, while the announced level is still open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commands: Option<PayloadCommands>,
}

/// The request: where it is and where it stands now.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadApproval {
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The phase at the time of sending (a late delivery may find the request decided).
    pub phase: ApprovalPhase,
    pub policy: String,
}

/// The object the change applies to.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadTarget {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// What changes, and who asked.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadChange {
    pub digest: String,
    /// One line of text, the images before → after, and the changed paths.
    pub summary: ChangeSummary,
    pub requester: UserInfo,
    pub operation: Operation,
}

/// A level of the chain, 1-based.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadLevel {
    pub index: usize,
    pub of: usize,
    pub name: String,
}

/// Approvals counted against approvals needed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadProgress {
    pub approvals: u32,
    pub required: u32,
    pub satisfied: bool,
    pub approved_by: Vec<String>,
    /// Required entries that have not approved yet (`bob`, `group:sre`, …).
    pub missing_required: Vec<String>,
    /// "level 1/2 leads: 0 of 1 approvals", as the webhook's denials say it; for the
    /// requester's notices, where the chain stands.
    pub text: String,
}

/// Commands that approve the request: the kubectl plugin, and plain `kubectl patch`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadCommands {
    pub approve: String,
    pub approve_with_kubectl: String,
    pub reject: String,
}

/// The body of `notice`, from the request and its chain as they are now.
pub fn payload(
    approval: &DeploymentApproval,
    state: &ChainState,
    notice: &Notice,
) -> NoticePayload {
    let spec = &approval.spec;
    let namespace = approval.metadata.namespace.clone().unwrap_or_default();
    let name = approval.metadata.name.clone().unwrap_or_default();
    let levels = &spec.policy.chain.levels;
    let progress = payload_progress(state, notice, levels.len());
    let still_open = state.phase == ApprovalPhase::Pending
        && notice.level.is_some()
        && state.current_level == notice.level;
    let commands =
        still_open.then(|| review_commands(&approval.spec.target.kind, &namespace, &name));
    let reason = reason(approval, state, notice.event);
    let text = notice_text(
        approval,
        state,
        notice,
        commands.as_ref(),
        reason.as_deref(),
        &progress.text,
    );
    NoticePayload {
        delivery_id: notice.delivery_id.clone(),
        event: notice.event,
        text,
        approval: PayloadApproval {
            namespace: namespace.clone(),
            name,
            uid: approval.metadata.uid.clone(),
            phase: state.phase,
            policy: spec.policy.name.clone(),
        },
        target: PayloadTarget {
            api_version: spec.target.api_version.clone(),
            kind: spec.target.kind.clone(),
            namespace,
            name: spec.target.name.clone(),
        },
        change: PayloadChange {
            digest: spec.change.digest.clone(),
            summary: spec.change.summary.clone(),
            requester: spec.change.requester.clone(),
            operation: spec.change.operation,
        },
        level: notice.level.map(|index| PayloadLevel {
            index: index + 1,
            of: levels.len(),
            name: notice.level_name.clone(),
        }),
        progress,
        reason,
        commands,
    }
}

/// How far the notice's level has come, or the whole chain for a notice of no level.
fn payload_progress(state: &ChainState, notice: &Notice, level_count: usize) -> PayloadProgress {
    let level_status = notice.level.and_then(|index| state.levels.get(index));
    match level_status {
        Some(level) => PayloadProgress {
            approvals: level.approvals,
            required: level.required,
            satisfied: level.satisfied,
            approved_by: level.approved_by.clone(),
            missing_required: level.missing_required.clone(),
            text: describe_level(notice.level.unwrap_or_default(), level_count, level),
        },
        None => PayloadProgress {
            approvals: state.levels.iter().map(|l| l.approvals).sum(),
            required: state.levels.iter().map(|l| l.required).sum(),
            satisfied: state.levels.iter().all(|l| l.satisfied),
            approved_by: state.approved_by.clone(),
            missing_required: state
                .levels
                .iter()
                .flat_map(|l| l.missing_required.iter().cloned())
                .collect(),
            text: describe_progress(state),
        },
    }
}

/// The commands that review request (or change set, by its `kind` as a target)
/// `namespace/name`.
fn review_commands(kind: &str, namespace: &str, name: &str) -> PayloadCommands {
    let resource = if kind == SET_KIND {
        "changeset"
    } else {
        "deploymentapproval"
    };
    PayloadCommands {
        approve: format!("kubectl countersign approve {name} -n {namespace} --comment \"...\""),
        approve_with_kubectl: format!(
            "kubectl patch {resource} {name} -n {namespace} --type=json -p '[{{\"op\":\"add\",\"path\":\"/spec/reviews/-\",\"value\":{{\"decision\":\"Approve\",\"comment\":\"...\"}}}}]'"
        ),
        reject: format!("kubectl countersign reject {name} -n {namespace} --comment \"...\""),
    }
}

/// The notice's message for people: what happened to which change, and what to do next.
fn notice_text(
    approval: &DeploymentApproval,
    state: &ChainState,
    notice: &Notice,
    commands: Option<&PayloadCommands>,
    reason: Option<&str>,
    progress_text: &str,
) -> String {
    let spec = &approval.spec;
    let namespace = approval.metadata.namespace.as_deref().unwrap_or_default();
    let name = approval.metadata.name.as_deref().unwrap_or_default();
    let levels = &spec.policy.chain.levels;
    let level_status = notice.level.and_then(|index| state.levels.get(index));
    // Structure (bold, line breaks, code) is countersign's; everything from the request,
    // the policy or a person goes in quoted and inert (`core::inert::slack_quoted`).
    let what = if spec.target.kind == SET_KIND {
        format!("change set {}", q(&format!("{namespace}/{name}")))
    } else {
        format!(
            "{} {} (request {})",
            q(&spec.target.kind),
            q(&format!("{namespace}/{}", spec.target.name)),
            q(&format!("{namespace}/{name}"))
        )
    };
    let summary = if spec.change.summary.text.is_empty() {
        q(&spec.change.digest)
    } else {
        q(&spec.change.summary.text)
    };
    let details = change_details(&spec.change.summary);
    let requester = q(&spec.change.requester.username);
    let progress_text = q(progress_text);
    match (notice.event, notice.level) {
        // Announced from its AuditEntry (`break_glass_payload`), never for a request.
        (NoticeEvent::BreakGlass, _) => format!("*Break-glass* on {what}"),
        (NoticeEvent::LevelOpened, Some(index)) => {
            let label = level_label(levels, index);
            match commands {
                Some(commands) => format!(
                    "*Approval needed* for {what}:\n{summary}{details}\nRequested by {requester}. Progress: {progress_text}.\nApprove with `{}`",
                    commands.approve
                ),
                None => format!(
                    "*Opened:* {} for {what}:\n{summary}{details}\nRequested by {requester}. Since then: {}",
                    q(&label),
                    q(&since_then(
                        state,
                        level_status.map(|l| l.approved_by.as_slice())
                    ))
                ),
            }
        }
        (NoticeEvent::Approved, _) => format!(
            "*Approved*: {what}:\n{summary}\nApproved by {}.{}",
            q(&state.approved_by.join(", ")),
            match (state.phase, state.expires_at) {
                (ApprovalPhase::Approved, Some(until)) => format!(" Apply it before {until}."),
                _ => String::new(),
            }
        ),
        (NoticeEvent::Rejected, _) => format!(
            "*Rejected*: {what}:\n{summary}\n{} Ask again with `countersign request --again`.",
            q(&sentence(reason.unwrap_or("Rejected")))
        ),
        (NoticeEvent::Expired, _) => format!(
            "*Expired*: {what}:\n{summary}\n{} The next attempt to apply the change opens a fresh request.",
            q(&sentence(reason.unwrap_or("No decision in time")))
        ),
        (NoticeEvent::Deployed, _) => format!(
            "*Deployed*: {what}:\n{summary}\n{}",
            q(&sentence(reason.unwrap_or("The rollout completed")))
        ),
        (NoticeEvent::Failed, _) => format!(
            "*Rollout failed*: {what}:\n{summary}\n{}",
            q(&sentence(reason.unwrap_or("The rollout did not complete")))
        ),
        // `notices` gives every LevelOpened notice its level.
        (NoticeEvent::LevelOpened, None) => format!("{what}: {summary}"),
    }
}

/// Why a decision or a rollout ended as it did.
fn reason(approval: &DeploymentApproval, state: &ChainState, event: NoticeEvent) -> Option<String> {
    let rollout_message = || {
        approval
            .status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .and_then(|r| r.message.clone())
            .filter(|m| !m.is_empty())
    };
    match event {
        NoticeEvent::Rejected => state
            .rejected_by
            .as_ref()
            .map(|(user, comment)| match comment {
                Some(comment) if !comment.is_empty() => format!("Rejected by {user}: {comment}"),
                _ => format!("Rejected by {user}"),
            }),
        NoticeEvent::Expired => Some(match (state.approved_at, state.expires_at) {
            (Some(_), Some(at)) => format!("Approved, but not applied before {at}"),
            (None, Some(at)) => format!("No decision before {at}"),
            _ => "No decision in time".to_string(),
        }),
        NoticeEvent::Deployed | NoticeEvent::Failed => rollout_message(),
        NoticeEvent::LevelOpened | NoticeEvent::Approved | NoticeEvent::BreakGlass => None,
    }
}

/// What happened after a level opened, for a notice delivered once it is no longer open.
fn since_then(state: &ChainState, level_approved_by: Option<&[String]>) -> String {
    match (state.phase, level_approved_by) {
        (ApprovalPhase::Pending, Some(by)) if !by.is_empty() => format!(
            "satisfied by {}; now {}",
            by.join(", "),
            describe_progress(state)
        ),
        (ApprovalPhase::Pending, _) => describe_progress(state),
        (phase, _) => format!("the request is {phase}"),
    }
}

/// `text` ending as a sentence does, with one full stop.
fn sentence(text: &str) -> String {
    let text = text.trim_end();
    if text.ends_with(['.', '!', '?']) {
        text.to_string()
    } else {
        format!("{text}.")
    }
}

/// The longest piece of quoted content in a notice.
const MAX_QUOTED_CHARS: usize = 600;

/// Content quoted for Slack mrkdwn (`core::inert::slack_quoted`).
fn q(content: &str) -> String {
    inert::slack_quoted(content, MAX_QUOTED_CHARS)
}

/// The security-relevant changes, one line each with their values (every one the request
/// lists: none hides behind "and N more"), for a notice that asks for a decision.
fn change_details(summary: &ChangeSummary) -> String {
    let mut lines = String::new();
    let risky: Vec<_> = summary.security_relevant().collect();
    if !risky.is_empty() {
        lines.push_str("\n*Security-relevant changes:*");
        for change in risky {
            let value = |v: &Option<String>| q(v.as_deref().unwrap_or("(none)"));
            lines.push_str(&format!(
                "\n• {} {}: {} → {}",
                change.risk.map(|r| r.label()).unwrap_or_default(),
                q(&change.path),
                value(&change.before),
                value(&change.after)
            ));
        }
    }
    let unlisted_risks = summary
        .risks
        .iter()
        .filter(|risk| !summary.changes.iter().any(|c| c.risk == Some(**risk)))
        .map(|risk| risk.label())
        .collect::<Vec<_>>();
    if !unlisted_risks.is_empty() {
        lines.push_str(&format!(
            "\n*Also security-relevant, beyond what the request lists:* {}; inspect the change itself",
            unlisted_risks.join(", ")
        ));
    }
    lines
}

/// The wait before the next attempt after `failed_attempts` failures in a row: 1 s, 2 s,
/// 4 s … at most [`MAX_RETRY_DELAY`].
pub fn retry_delay(failed_attempts: u32) -> SignedDuration {
    let doublings = failed_attempts.saturating_sub(1).min(16);
    let delay = FIRST_RETRY_DELAY
        .checked_mul(1_i32 << doublings)
        .unwrap_or(MAX_RETRY_DELAY);
    delay.min(MAX_RETRY_DELAY)
}

/// One attempt to make now: the notice (an index into the notices) to the sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueDelivery {
    pub notice: usize,
    pub sink: String,
}

/// What to send now, and when to come back.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryPlan {
    /// In notice order; at most one per sink (its first notice not yet delivered).
    pub due: Vec<DueDelivery>,
    /// The earliest moment a waiting attempt becomes due: reconcile again then.
    pub next_attempt: Option<Timestamp>,
}

/// The record of `notice` to `sink` in `status.notifications`.
pub fn record_of<'a>(
    records: &'a [NotificationStatus],
    notice: &Notice,
    sink: &str,
) -> Option<&'a NotificationStatus> {
    records.iter().find(|r| is_record_of(r, notice, sink))
}

fn is_record_of(record: &NotificationStatus, notice: &Notice, sink: &str) -> bool {
    record.sink == sink
        && record.level == notice.level_name
        && record.event == notice.event.as_str()
}

/// Which attempts are due at `now`, given the notices and the delivery records. Per sink,
/// the first notice it has not taken is the only candidate (the sink's notices go in order);
/// it is due when it was never tried or its backoff has run out. A delivered notice is
/// never sent again.
pub fn plan_deliveries(
    notices: &[Notice],
    records: &[NotificationStatus],
    now: Timestamp,
) -> DeliveryPlan {
    let mut sinks: Vec<&str> = Vec::new();
    for notice in notices {
        for sink in &notice.sinks {
            if !sinks.contains(&sink.as_str()) {
                sinks.push(sink);
            }
        }
    }
    let mut due = Vec::new();
    let mut next_attempt: Option<Timestamp> = None;
    for sink in sinks {
        let head = notices.iter().enumerate().find(|(_, notice)| {
            notice.sinks.iter().any(|s| s == sink)
                && !record_of(records, notice, sink).is_some_and(|r| r.delivered)
        });
        let Some((index, notice)) = head else {
            continue;
        };
        let due_at = record_of(records, notice, sink).and_then(|record| {
            let last = record.last_attempt_at.as_ref()?.0;
            (record.attempts > 0).then(|| {
                last.checked_add(retry_delay(record.attempts))
                    .unwrap_or(last)
            })
        });
        match due_at {
            Some(at) if at > now => {
                next_attempt = Some(next_attempt.map_or(at, |next| next.min(at)));
            }
            _ => due.push(DueDelivery {
                notice: index,
                sink: sink.to_string(),
            }),
        }
    }
    due.sort_by_key(|d| d.notice);
    DeliveryPlan { due, next_attempt }
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The sink answered 2xx.
    Delivered,
    /// Why not: the sink's answer, a timeout, an unreadable Secret, ….
    Failed(String),
}

/// Fold an attempt made at `now` into the records: one more attempt, its time, and either
/// delivered or its error. A record already delivered is left as it is.
pub fn record_attempt(
    records: &mut Vec<NotificationStatus>,
    notice: &Notice,
    sink: &str,
    outcome: &DeliveryOutcome,
    now: Timestamp,
) {
    let index = match records.iter().position(|r| is_record_of(r, notice, sink)) {
        Some(index) => index,
        None => {
            records.push(NotificationStatus {
                sink: sink.to_string(),
                level: notice.level_name.clone(),
                event: notice.event.as_str().to_string(),
                ..NotificationStatus::default()
            });
            records.len() - 1
        }
    };
    let Some(record) = records.get_mut(index) else {
        return;
    };
    if record.delivered {
        return;
    }
    record.attempts = record.attempts.saturating_add(1);
    record.last_attempt_at = Some(Time(now));
    match outcome {
        DeliveryOutcome::Delivered => {
            record.delivered = true;
            record.delivered_at = Some(Time(now));
            record.last_error = None;
        }
        DeliveryOutcome::Failed(error) => {
            record.last_error = Some(error.chars().take(MAX_ERROR_CHARS).collect());
        }
    }
}

/// The records of `stored` (as another writer left them) with what `ours` learned: per
/// (sink, level, event), a delivered record wins, else the one with more attempts. Used when
/// a status write lost a race, so a delivery is kept and never sent again.
pub fn merge_records(
    stored: &[NotificationStatus],
    ours: &[NotificationStatus],
) -> Vec<NotificationStatus> {
    let key = |r: &NotificationStatus| (r.sink.clone(), r.level.clone(), r.event.clone());
    let mut merged: Vec<NotificationStatus> = stored.to_vec();
    for record in ours {
        match merged.iter_mut().find(|m| key(m) == key(record)) {
            Some(existing) => {
                let better = (record.delivered && !existing.delivered)
                    || (record.delivered == existing.delivered
                        && record.attempts > existing.attempts);
                if better {
                    *existing = record.clone();
                }
            }
            None => merged.push(record.clone()),
        }
    }
    merged
}

/// The key of a break-glass notice's records (they live on the AuditEntry).
pub const BREAK_GLASS_LEVEL: &str = "";

/// The notice of a break-glass entry (SPEC §6): to every level's sinks of the policies it
/// passed, each sink once, in the policies' order. `policies` are the current ones; the
/// entry names those that were bypassed (comma-separated in `spec.policy`). `None` for any
/// other entry.
pub fn break_glass_notice(entry: &AuditEntry, policies: &[ApprovalPolicy]) -> Option<Notice> {
    if entry.spec.action != AuditAction::BreakGlass {
        return None;
    }
    let named: Vec<&str> = entry
        .spec
        .policy
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    let sinks: Vec<String> = named
        .iter()
        .filter_map(|name| policy_named(policies, name))
        .filter_map(|policy| policy.spec.approval.as_ref())
        .flat_map(|chain| chain.levels.iter().flat_map(|level| level.sinks.iter()))
        .cloned()
        .collect();
    let key = entry
        .metadata
        .uid
        .clone()
        .filter(|uid| !uid.is_empty())
        .or_else(|| entry.metadata.name.clone())
        .unwrap_or_default();
    Some(Notice {
        event: NoticeEvent::BreakGlass,
        level: None,
        level_name: BREAK_GLASS_LEVEL.to_string(),
        sinks: distinct(&sinks),
        delivery_id: format!("{key}/break-glass"),
    })
}

/// The JSON body of a break-glass notice.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakGlassPayload {
    pub delivery_id: String,
    pub event: NoticeEvent,
    /// Slack-compatible (mrkdwn, escaped).
    pub text: String,
    pub target: AuditTarget,
    pub actor: UserInfo,
    /// The reason given in the `countersign.dev/break-glass` annotation.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_digest: Option<String>,
    pub policies: Vec<String>,
    /// The AuditEntry that records it.
    pub audit_entry: String,
    pub time: Time,
}

/// The body of a break-glass notice.
pub fn break_glass_payload(entry: &AuditEntry, notice: &Notice) -> BreakGlassPayload {
    let spec = &entry.spec;
    let target = &spec.target;
    let reason = spec.reason.clone().unwrap_or_default();
    let text = format!(
        "*Break-glass*: {} {} changed by {} without approval.\nReason: {}\nAudited as {}.",
        q(&target.kind),
        q(&format!(
            "{}/{}",
            target.namespace.as_deref().unwrap_or_default(),
            target.name
        )),
        q(&spec.actor.username),
        q(&reason),
        q(entry.metadata.name.as_deref().unwrap_or_default()),
    );
    BreakGlassPayload {
        delivery_id: notice.delivery_id.clone(),
        event: notice.event,
        text,
        target: target.clone(),
        actor: spec.actor.clone(),
        reason,
        change_digest: spec.change_digest.clone(),
        policies: spec
            .policy
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect(),
        audit_entry: entry.metadata.name.clone().unwrap_or_default(),
        time: spec.time.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ReviewDecision, RolloutStatus};
    use crate::core::admission::decision::approval_state;
    use crate::core::approval::chain::RoleBindingSnapshot;
    use crate::core::test_builders::{minutes as t, two_level_request};

    /// The builders' request with sinks: `leads-hook` on level 1, `sre-hook` on level 2,
    /// `dave-hook` for the requester.
    fn request(
        reviews: &[(&str, ReviewDecision, i64)],
        phase: Option<ApprovalPhase>,
    ) -> DeploymentApproval {
        let mut approval = two_level_request(reviews, phase);
        let chain = &mut approval.spec.policy.chain;
        chain.levels[0].sinks = vec!["leads-hook".into()];
        chain.levels[1].sinks = vec!["sre-hook".into(), "sre-hook".into()];
        chain.requester_sinks = vec!["dave-hook".into()];
        chain.approval_ttl = Some("30m".into());
        approval
    }

    fn state(approval: &DeploymentApproval, now: i64) -> ChainState {
        approval_state(approval, "shop", &RoleBindingSnapshot::default(), t(now))
    }

    fn keys(approval: &DeploymentApproval, now: i64) -> Vec<(String, String, Vec<String>)> {
        notices(approval, &state(approval, now))
            .into_iter()
            .map(|n| (n.event.as_str().to_string(), n.level_name, n.sinks))
            .collect()
    }

    fn key(event: &str, level: &str, sink: &str) -> (String, String, Vec<String>) {
        (event.into(), level.into(), vec![sink.into()])
    }

    #[test]
    fn the_notices_follow_the_durable_state() {
        use ApprovalPhase::{Deployed, Deploying, Failed};
        use ReviewDecision::{Approve, Reject};
        let opened1 = key("LevelOpened", "leads", "leads-hook");
        let opened2 = key("LevelOpened", "sre", "sre-hook");
        let approved = key("Approved", "", "dave-hook");
        let both = [("alice", Approve, 1), ("carol", Approve, 2)];
        type Case = (
            &'static str,
            DeploymentApproval,
            i64,
            Vec<(String, String, Vec<String>)>,
        );
        let cases: Vec<Case> = vec![
            (
                "new request: level 1 only",
                request(&[], None),
                0,
                vec![opened1.clone()],
            ),
            (
                "carol's early approval opens nothing",
                request(&[("carol", Approve, 1)], None),
                2,
                vec![opened1.clone()],
            ),
            (
                "level 1 satisfied: level 2 opens",
                request(&[("alice", Approve, 1)], None),
                2,
                vec![opened1.clone(), opened2.clone()],
            ),
            (
                "approved: the requester hears it",
                request(&both, None),
                3,
                vec![opened1.clone(), opened2.clone(), approved.clone()],
            ),
            (
                "rejected at level 1: level 2 never opens",
                request(&[("carol", Reject, 1)], None),
                2,
                vec![opened1.clone(), key("Rejected", "", "dave-hook")],
            ),
            (
                "expired at level 1",
                request(&[], None),
                61,
                vec![opened1.clone(), key("Expired", "", "dave-hook")],
            ),
            (
                "approved, then not applied within approvalTTL",
                request(&both, None),
                40,
                vec![
                    opened1.clone(),
                    opened2.clone(),
                    approved.clone(),
                    key("Expired", "", "dave-hook"),
                ],
            ),
            (
                "admitted: nothing new; its approvalTTL running out expires nothing",
                request(&both, Some(Deploying)),
                40,
                vec![opened1.clone(), opened2.clone(), approved.clone()],
            ),
            (
                "deployed",
                request(&both, Some(Deployed)),
                40,
                vec![
                    opened1.clone(),
                    opened2.clone(),
                    approved.clone(),
                    key("Deployed", "", "dave-hook"),
                ],
            ),
            (
                "rollout failed",
                request(&both, Some(Failed)),
                40,
                vec![opened1, opened2, approved, key("Failed", "", "dave-hook")],
            ),
        ];
        for (name, approval, now, expected) in cases {
            assert_eq!(keys(&approval, now), expected, "{name}");
        }
    }

    #[test]
    fn delivery_ids_are_stable_per_approval_level_and_event() {
        use ReviewDecision::Approve;
        let approval = request(&[("alice", Approve, 1), ("carol", Approve, 2)], None);
        let ids: Vec<String> = notices(&approval, &state(&approval, 3))
            .into_iter()
            .map(|n| n.delivery_id)
            .collect();
        assert_eq!(
            ids,
            [
                "6f1c2d3e-0000-4000/level-1/LevelOpened",
                "6f1c2d3e-0000-4000/level-2/LevelOpened",
                "6f1c2d3e-0000-4000/requester/Approved",
            ]
        );
        // Later, with more happening, the earlier ids are the same.
        let deployed = request(
            &[("alice", Approve, 1), ("carol", Approve, 2)],
            Some(ApprovalPhase::Deployed),
        );
        let later = notices(&deployed, &state(&deployed, 50));
        assert_eq!(later[2].delivery_id, ids[2]);
        assert_eq!(
            later[3].delivery_id,
            "6f1c2d3e-0000-4000/requester/Deployed"
        );
    }

    #[test]
    fn a_sets_notice_names_the_set_lists_its_changes_and_says_how_to_review_it() {
        use crate::core::approval::set::{as_request, set_spec};
        let web = request(&[], None);
        let mut api = request(&[], None);
        api.metadata.name = Some("api-1".into());
        api.spec.target.name = "api".into();
        api.spec.change.summary.text = "Deployment shop/api: image api 1 → 2".into();
        let members = [
            ("web-1".to_string(), &web.spec),
            ("api-1".to_string(), &api.spec),
        ];
        let spec = set_spec(
            &members,
            &web.spec.change.requester,
            web.spec.change.requested_at.0,
        )
        .expect("a set");
        let mut set = crate::api::ChangeSet::new("apps-1", spec);
        set.metadata.namespace = Some("shop".into());
        set.metadata.uid = Some("set-uid".into());
        let shown = as_request(&set);
        let state = state(&shown, 0);
        let notice = &notices(&shown, &state)[0];
        let body = serde_json::to_value(payload(&shown, &state, notice)).expect("a body");
        assert_eq!(body["target"]["kind"], "ChangeSet");
        let text = body["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with("*Approval needed* for change set `shop/apps-1`:\n`2 changes: "),
            "{text}"
        );
        assert!(text.contains("shop/api: image api 1 → 2"), "{text}");
        assert!(
            body["commands"]["approveWithKubectl"]
                .as_str()
                .unwrap_or_default()
                .starts_with("kubectl patch changeset apps-1 -n shop "),
            "{body}"
        );
        assert_eq!(
            body["commands"]["approve"],
            "kubectl countersign approve apps-1 -n shop --comment \"...\""
        );
    }

    #[test]
    fn the_payload_says_what_how_far_and_how_to_approve() {
        let mut approval = request(&[], None);
        approval.spec.change.summary = ChangeSummary {
            text: "Deployment shop/web: image web nginx:1.25 → nginx:1.27 <!channel>".into(),
            images: vec![crate::api::ImageChange {
                container: "web".into(),
                before: Some("nginx:1.25".into()),
                after: Some("nginx:1.27".into()),
            }],
            changed_paths: vec!["/spec/template/spec/containers/0/image".into()],
            ..ChangeSummary::default()
        };
        let state = state(&approval, 0);
        let notice = &notices(&approval, &state)[0];
        let body = serde_json::to_value(payload(&approval, &state, notice)).unwrap();
        assert_eq!(body["deliveryId"], "6f1c2d3e-0000-4000/level-1/LevelOpened");
        assert_eq!(body["event"], "LevelOpened");
        assert_eq!(body["approval"]["namespace"], "shop");
        assert_eq!(body["approval"]["name"], "web-1");
        assert_eq!(body["approval"]["phase"], "Pending");
        assert_eq!(body["target"]["kind"], "Deployment");
        assert_eq!(body["target"]["name"], "web");
        assert_eq!(body["change"]["requester"]["username"], "dave");
        assert_eq!(
            body["change"]["summary"]["images"][0]["after"],
            "nginx:1.27"
        );
        assert_eq!(
            body["change"]["summary"]["changedPaths"][0],
            "/spec/template/spec/containers/0/image"
        );
        assert_eq!(
            body["level"],
            serde_json::json!({"index": 1, "of": 2, "name": "leads"})
        );
        assert_eq!(body["progress"]["approvals"], 0);
        assert_eq!(body["progress"]["required"], 1);
        assert_eq!(
            body["progress"]["text"],
            "level 1/2 leads: 0 of 1 approvals"
        );
        assert_eq!(
            body["commands"]["approve"],
            "kubectl countersign approve web-1 -n shop --comment \"...\""
        );
        assert_eq!(
            body["commands"]["approveWithKubectl"],
            "kubectl patch deploymentapproval web-1 -n shop --type=json -p '[{\"op\":\"add\",\"path\":\"/spec/reviews/-\",\"value\":{\"decision\":\"Approve\",\"comment\":\"...\"}}]'"
        );
        let text = body["text"].as_str().unwrap();
        assert_eq!(
            text,
            "*Approval needed* for `Deployment` `shop/web` (request `shop/web-1`):\n`Deployment shop/web: image web nginx:1.25 → nginx:1.27 &lt;!channel&gt;`\nRequested by `dave`. Progress: `level 1/2 leads: 0 of 1 approvals`.\nApprove with `kubectl countersign approve web-1 -n shop --comment \"...\"`"
        );
        assert!(text.contains("Requested by `dave`"), "{text}");
        assert!(
            text.contains("`kubectl countersign approve web-1 -n shop"),
            "{text}"
        );
        // The request's own text cannot mention a channel.
        assert!(
            text.contains("&lt;!channel&gt;") && !text.contains("<!channel>"),
            "{text}"
        );
        // The JSON fields keep the text as it is.
        assert!(
            body["change"]["summary"]["text"]
                .as_str()
                .unwrap()
                .ends_with("<!channel>")
        );
    }

    #[test]
    fn each_event_reads_as_a_person_would_say_it() {
        use ApprovalPhase::{Deployed, Failed};
        use ReviewDecision::{Approve, Reject};
        let both = [("alice", Approve, 1), ("carol", Approve, 2)];
        let mut failed = request(&both, Some(Failed));
        failed.status.get_or_insert_default().rollout = Some(RolloutStatus {
            message: Some("ProgressDeadlineExceeded".into()),
            ..RolloutStatus::default()
        });
        let cases: Vec<(DeploymentApproval, i64, NoticeEvent, &str)> = vec![
            (
                request(&both, None),
                3,
                NoticeEvent::Approved,
                "*Approved*: `Deployment` `shop/web` (request `shop/web-1`):\n`image 1 → 2`\nApproved by `alice, carol`. Apply it before 2026-11-24T10:32:00Z.",
            ),
            (
                request(&[("carol", Reject, 1)], None),
                2,
                NoticeEvent::Rejected,
                "*Rejected*: `Deployment` `shop/web` (request `shop/web-1`):\n`image 1 → 2`\n`Rejected by carol: ok.` Ask again with `countersign request --again`.",
            ),
            (
                request(&[], None),
                61,
                NoticeEvent::Expired,
                "*Expired*: `Deployment` `shop/web` (request `shop/web-1`):\n`image 1 → 2`\n`No decision before 2026-11-24T11:00:00Z.` The next attempt to apply the change opens a fresh request.",
            ),
            (
                request(&both, Some(Deployed)),
                40,
                NoticeEvent::Deployed,
                "*Deployed*: `Deployment` `shop/web` (request `shop/web-1`):\n`image 1 → 2`\n`The rollout completed.`",
            ),
            (
                failed,
                40,
                NoticeEvent::Failed,
                "*Rollout failed*: `Deployment` `shop/web` (request `shop/web-1`):\n`image 1 → 2`\n`ProgressDeadlineExceeded.`",
            ),
            // Level 1's notice delivered only after alice approved: it says so, and offers no
            // command for a level that is closed.
            (
                request(&[("alice", Approve, 1)], None),
                2,
                NoticeEvent::LevelOpened,
                "*Opened:* `level 1/2 leads` for `Deployment` `shop/web` (request `shop/web-1`):\n`image 1 → 2`\nRequested by `dave`. Since then: `satisfied by alice; now level 2/2 sre: 0 of 1 approvals`",
            ),
        ];
        for (approval, now, event, expected) in cases {
            let state = state(&approval, now);
            let notice = notices(&approval, &state)
                .into_iter()
                .find(|n| n.event == event)
                .unwrap();
            let body = payload(&approval, &state, &notice);
            assert_eq!(body.text, expected, "{event:?}");
            assert!(body.level.is_some() == (event == NoticeEvent::LevelOpened));
            assert!(body.commands.is_none(), "{event:?}");
        }
    }

    #[test]
    fn hostile_text_cannot_format_or_add_lines_to_a_notice() {
        let honest = {
            let approval = request(&[], None);
            let state = state(&approval, 1);
            let notice = notices(&approval, &state)[0].clone();
            payload(&approval, &state, &notice).text
        };
        for (what, hostile) in crate::core::test_builders::hostile_corpus() {
            let mut approval = request(&[], None);
            approval.spec.change.summary.text = hostile.clone();
            approval.spec.change.requester.username = hostile.clone();
            approval.spec.target.kind = hostile.clone();
            let state = state(&approval, 1);
            let notice = notices(&approval, &state)[0].clone();
            let text = payload(&approval, &state, &notice).text;
            assert!(
                !text.chars().any(|c| c != '\n' && inert::is_unsafe(c)),
                "{what}: {text}"
            );
            assert_eq!(
                text.lines().count(),
                honest.lines().count(),
                "{what}: {text}"
            );
            // Every backtick is countersign's: an even number, none from the content.
            assert_eq!(text.matches('`').count() % 2, 0, "{what}: {text}");
            assert!(
                !text.contains("<!channel>") && !text.contains("<https"),
                "{what}"
            );
            assert!(text.len() < 16 * 1024, "{what}: bounded");
        }
    }

    #[test]
    fn every_security_relevant_change_is_in_the_notice_by_value() {
        let mut approval = request(&[], None);
        let summary = &mut approval.spec.change.summary;
        for (path, risk) in [
            (
                "/spec/template/spec/hostPID",
                crate::api::Risk::HostNamespaces,
            ),
            (
                "/spec/template/spec/containers/0/securityContext/privileged",
                crate::api::Risk::Privilege,
            ),
            (
                "/spec/template/spec/volumes/0/hostPath/path",
                crate::api::Risk::HostPath,
            ),
            (
                "/spec/template/spec/initContainers/0/image",
                crate::api::Risk::InitContainer,
            ),
        ] {
            summary.changes.push(crate::api::FieldChange {
                path: path.into(),
                risk: Some(risk),
                before: None,
                after: Some("true".into()),
            });
            summary.risks.push(risk);
        }
        summary.risks.push(crate::api::Risk::Command);
        let state = state(&approval, 1);
        let notice = notices(&approval, &state)[0].clone();
        let text = payload(&approval, &state, &notice).text;
        for needle in [
            "host namespaces `/spec/template/spec/hostPID`: `(none)` → `true`",
            "privilege `/spec/template/spec/containers/0/securityContext/privileged`",
            "host path `/spec/template/spec/volumes/0/hostPath/path`",
            "init containers `/spec/template/spec/initContainers/0/image`",
            "beyond what the request lists:* command and args",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        assert!(!text.contains("more"), "{text}");
    }

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        let secs: Vec<i64> = [1, 2, 3, 4, 8, 9, 10, 100, u32::MAX]
            .into_iter()
            .map(|n| retry_delay(n).as_secs())
            .collect();
        assert_eq!(secs, [1, 2, 4, 8, 128, 256, 300, 300, 300]);
    }

    fn seconds(s: i64) -> Timestamp {
        t(0) + SignedDuration::from_secs(s)
    }

    fn record(
        sink: &str,
        level: &str,
        event: &str,
        delivered: bool,
        attempts: u32,
        last: Option<i64>,
    ) -> NotificationStatus {
        NotificationStatus {
            sink: sink.into(),
            level: level.into(),
            event: event.into(),
            delivered,
            attempts,
            last_attempt_at: last.map(|s| Time(seconds(s))),
            ..NotificationStatus::default()
        }
    }

    #[test]
    fn deliveries_are_planned_in_order_once_each_with_backoff() {
        use ReviewDecision::Approve;
        let approval = request(&[("alice", Approve, 0), ("carol", Approve, 0)], None);
        let all = notices(&approval, &state(&approval, 0));
        let due = |plan: &DeliveryPlan| -> Vec<(String, String)> {
            plan.due
                .iter()
                .map(|d| {
                    (
                        all[d.notice].event.as_str().to_string() + "@" + &all[d.notice].level_name,
                        d.sink.clone(),
                    )
                })
                .collect()
        };
        let pair = |notice: &str, sink: &str| (notice.to_string(), sink.to_string());
        // (name, records, now in seconds, due, next attempt in seconds)
        type Case = (
            &'static str,
            Vec<NotificationStatus>,
            i64,
            Vec<(String, String)>,
            Option<i64>,
        );
        let cases: Vec<Case> = vec![
            (
                "nothing sent yet: every sink's first notice, in level order",
                vec![],
                0,
                vec![
                    pair("LevelOpened@leads", "leads-hook"),
                    pair("LevelOpened@sre", "sre-hook"),
                    pair("Approved@", "dave-hook"),
                ],
                None,
            ),
            (
                "delivered notices are never sent again",
                vec![
                    record("leads-hook", "leads", "LevelOpened", true, 1, Some(0)),
                    record("sre-hook", "sre", "LevelOpened", true, 3, Some(0)),
                    record("dave-hook", "", "Approved", true, 1, Some(0)),
                ],
                10,
                vec![],
                None,
            ),
            (
                "a failed attempt waits out its backoff",
                vec![
                    record("leads-hook", "leads", "LevelOpened", false, 1, Some(0)),
                    record("sre-hook", "sre", "LevelOpened", false, 3, Some(0)),
                    record("dave-hook", "", "Approved", true, 1, Some(0)),
                ],
                0,
                vec![],
                Some(1),
            ),
            (
                "and is due when it has",
                vec![
                    record("leads-hook", "leads", "LevelOpened", false, 1, Some(0)),
                    record("sre-hook", "sre", "LevelOpened", false, 3, Some(0)),
                ],
                1,
                vec![
                    pair("LevelOpened@leads", "leads-hook"),
                    pair("Approved@", "dave-hook"),
                ],
                Some(4),
            ),
        ];
        for (name, records, now, expected_due, next) in cases {
            let plan = plan_deliveries(&all, &records, seconds(now));
            assert_eq!(due(&plan), expected_due, "{name}");
            assert_eq!(plan.next_attempt, next.map(seconds), "{name}");
        }
    }

    #[test]
    fn a_sink_takes_its_notices_in_order() {
        use ReviewDecision::Approve;
        // One sink for everything: level 2's notice waits for level 1's, the decision for both.
        let mut approval = request(&[("alice", Approve, 0), ("carol", Approve, 0)], None);
        let chain = &mut approval.spec.policy.chain;
        chain.levels[0].sinks = vec!["team".into()];
        chain.levels[1].sinks = vec!["team".into()];
        chain.requester_sinks = vec!["team".into()];
        let all = notices(&approval, &state(&approval, 0));
        let mut records = Vec::new();
        let mut sent = Vec::new();
        let mut now = seconds(0);
        for _ in 0..10 {
            let plan = plan_deliveries(&all, &records, now);
            assert!(plan.due.len() <= 1);
            for due in plan.due {
                let notice = &all[due.notice];
                // The first attempt of each notice fails, the second gets through.
                let outcome = if record_of(&records, notice, &due.sink).is_some() {
                    sent.push(notice.delivery_id.clone());
                    DeliveryOutcome::Delivered
                } else {
                    DeliveryOutcome::Failed("HTTP 503 Service Unavailable".into())
                };
                record_attempt(&mut records, notice, &due.sink, &outcome, now);
            }
            now += SignedDuration::from_secs(1);
        }
        assert_eq!(
            sent,
            all.iter()
                .map(|n| n.delivery_id.clone())
                .collect::<Vec<_>>()
        );
        assert!(
            records
                .iter()
                .all(|r| r.delivered && r.attempts == 2 && r.last_error.is_none())
        );
    }

    #[test]
    fn an_attempt_is_folded_into_its_record() {
        let approval = request(&[], None);
        let notice = &notices(&approval, &state(&approval, 0))[0];
        let mut records = vec![record("other", "leads", "LevelOpened", false, 4, Some(0))];
        record_attempt(
            &mut records,
            notice,
            "leads-hook",
            &DeliveryOutcome::Failed("HTTP 404 Not Found".into()),
            seconds(5),
        );
        record_attempt(
            &mut records,
            notice,
            "leads-hook",
            &DeliveryOutcome::Failed("x".repeat(2000)),
            seconds(6),
        );
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].attempts, 2);
        assert_eq!(records[1].last_error.as_ref().map(String::len), Some(500));
        assert_eq!(records[1].last_attempt_at, Some(Time(seconds(6))));
        record_attempt(
            &mut records,
            notice,
            "leads-hook",
            &DeliveryOutcome::Delivered,
            seconds(8),
        );
        let delivered = records[1].clone();
        assert!(delivered.delivered && delivered.last_error.is_none());
        assert_eq!(delivered.delivered_at, Some(Time(seconds(8))));
        // Delivered stays delivered: a late outcome changes nothing.
        record_attempt(
            &mut records,
            notice,
            "leads-hook",
            &DeliveryOutcome::Failed("late".into()),
            seconds(9),
        );
        assert_eq!(records[1], delivered);
        assert_eq!(records[0].attempts, 4);
    }

    #[test]
    fn break_glass_is_announced_to_every_level_of_the_bypassed_policies() {
        use crate::api::{
            ApprovalPolicySpec, ApprovalSettings, AuditEntrySpec, AuditTarget, UserInfo,
        };
        let policy = |name: &str, levels: &[&[&str]]| {
            let mut policy = ApprovalPolicy::new(
                name,
                ApprovalPolicySpec {
                    approval: Some(ApprovalSettings {
                        levels: levels
                            .iter()
                            .map(|sinks| crate::api::ApprovalLevel {
                                name: "l".into(),
                                sinks: sinks.iter().map(|s| s.to_string()).collect(),
                                ..Default::default()
                            })
                            .collect(),
                        requester_sinks: vec!["requester-only".into()],
                        ..ApprovalSettings::default()
                    }),
                    ..ApprovalPolicySpec::default()
                },
            );
            policy.metadata.name = Some(name.into());
            policy
        };
        let policies = vec![
            policy("prod", &[&["leads", "sre"], &["sre", "security"]]),
            policy("audit", &[&["compliance"]]),
            policy("other", &[&["not-told"]]),
        ];
        let mut entry = AuditEntry::new(
            "break-glass-0123",
            AuditEntrySpec {
                time: Time(t(3)),
                action: AuditAction::BreakGlass,
                actor: UserInfo::new("erin", &["oncall"]),
                target: AuditTarget {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    namespace: Some("shop".into()),
                    name: "web".into(),
                    uid: None,
                },
                change_digest: Some("sha256:00".into()),
                approval: None,
                policy: Some("prod,audit,gone".into()),
                reason: Some("outage <!channel>".into()),
                caller: None,
            },
        );
        entry.metadata.uid = Some("u-1".into());
        let notice = break_glass_notice(&entry, &policies).expect("a notice");
        assert_eq!(notice.sinks, ["leads", "sre", "security", "compliance"]);
        assert_eq!(notice.delivery_id, "u-1/break-glass");
        let payload = break_glass_payload(&entry, &notice);
        assert_eq!(payload.policies, ["prod", "audit", "gone"]);
        assert!(payload.text.contains("erin") && payload.text.contains("&lt;!channel&gt;"));
        entry.spec.action = AuditAction::Approved;
        assert_eq!(break_glass_notice(&entry, &policies), None);
    }

    #[test]
    fn merged_records_keep_every_delivery() {
        let record = |sink: &str, delivered: bool, attempts: u32| NotificationStatus {
            sink: sink.into(),
            level: "leads".into(),
            event: "LevelOpened".into(),
            delivered,
            attempts,
            ..NotificationStatus::default()
        };
        let stored = vec![
            record("a", false, 1),
            record("b", true, 1),
            record("c", false, 3),
        ];
        let ours = vec![
            record("a", true, 2),
            record("b", false, 4),
            record("c", false, 1),
            record("d", true, 1),
        ];
        let merged = merge_records(&stored, &ours);
        let view: Vec<(String, bool, u32)> = merged
            .iter()
            .map(|r| (r.sink.clone(), r.delivered, r.attempts))
            .collect();
        assert_eq!(
            view,
            [
                ("a".to_string(), true, 2),
                ("b".to_string(), true, 1),
                ("c".to_string(), false, 3),
                ("d".to_string(), true, 1),
            ]
        );
    }
}
