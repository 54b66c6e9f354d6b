//! How `check` reports a decision: stable JSON for machines (SPEC §10), the verdict first
//! and then why for people.

use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use crate::api::{ApprovalPhase, ChangeSummary, FieldChange, ImageChange, LevelStatus, Risk};
use crate::core::admission::decision::{Decision, DenyReason, Verdict};
use crate::core::approval::chain::ChainState;
use crate::core::change::object_ref;
use crate::core::inert;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    /// A JUnit XML report, one test case per workload, for CI systems.
    Junit,
}

/// The JSON report. `allowed`, `reasons`, `policies`, `change.digest`, `approval.phase`
/// and `approval.levels[]` are stable (SPEC §10).
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub allowed: bool,
    /// `Allowed`, `Denied`, `ApprovalRequired` or `Approved`.
    pub verdict: &'static str,
    pub reasons: Vec<String>,
    pub policies: Vec<String>,
    pub change: ChangeReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalReport>,
    /// The break-glass reason, when break-glass let the change through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ChangeReport {
    pub target: String,
    pub digest: String,
    pub summary: String,
    pub images: Vec<ImageChange>,
    pub changed_paths: Vec<String>,
    /// Each changed field with its values, security-relevant ones first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// Every kind of security-relevant change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub risks: Vec<Risk>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalReport {
    pub name: String,
    /// Whether a DeploymentApproval for this change was given; otherwise the webhook
    /// would create it under `name`.
    pub existing: bool,
    pub policy: String,
    pub phase: ApprovalPhase,
    /// 1-based index of the open level, while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_level: Option<usize>,
    pub levels: Vec<LevelStatus>,
    pub approved_by: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Why a level of this pending request can no longer be satisfied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stuck: Option<String>,
}

impl ApprovalReport {
    fn new(
        name: &str,
        existing: bool,
        policy: &str,
        phase: ApprovalPhase,
        chain: &ChainState,
    ) -> Self {
        ApprovalReport {
            name: name.to_string(),
            existing,
            policy: policy.to_string(),
            phase,
            current_level: chain.current_level.map(|i| i + 1),
            levels: chain.levels.clone(),
            approved_by: chain.approved_by.clone(),
            rejected_by: chain.rejected_by.as_ref().map(|(user, _)| user.clone()),
            expires_at: chain.expires_at.map(|t| t.to_string()),
            stuck: chain.stuck.clone(),
        }
    }
}

/// Build the report for a decision on `object`.
pub fn report(decision: &Decision, object: &Value, summary: &ChangeSummary) -> CheckReport {
    let (verdict, approval) = match &decision.verdict {
        Verdict::Allowed(_) => ("Allowed", None),
        Verdict::Denied(_) => ("Denied", None),
        Verdict::ApprovalRequired(r) => (
            "ApprovalRequired",
            Some(ApprovalReport::new(
                &r.approval_name,
                r.existing,
                &r.policy,
                r.phase,
                &r.chain,
            )),
        ),
        Verdict::Approved(a) => (
            "Approved",
            Some(ApprovalReport::new(
                a.approval.metadata.name.as_deref().unwrap_or_default(),
                true,
                &a.approval.spec.policy.name,
                a.chain.phase,
                &a.chain,
            )),
        ),
    };
    CheckReport {
        allowed: decision.allowed(),
        verdict,
        reasons: decision.reasons.clone(),
        policies: decision.matched_policies.clone(),
        change: ChangeReport {
            target: object_ref(object),
            digest: decision.digest.to_string(),
            summary: summary.text.clone(),
            images: summary.images.clone(),
            changed_paths: summary.changed_paths.clone(),
            changes: summary.changes.clone(),
            risks: summary.risks.clone(),
        },
        approval,
        break_glass: decision.break_glass.as_ref().map(|g| g.reason.clone()),
    }
}

fn headline(decision: &Decision) -> &'static str {
    match &decision.verdict {
        Verdict::Allowed(_) if decision.break_glass.is_some() => "ALLOWED (break-glass)",
        Verdict::Allowed(_) => "ALLOWED",
        Verdict::Approved(_) => "ALLOWED (approved)",
        Verdict::Denied(DenyReason::RolloutInProgress { .. }) => {
            "DENIED (another change is rolling out)"
        }
        Verdict::Denied(_) => "DENIED",
        Verdict::ApprovalRequired(r) => match r.phase {
            ApprovalPhase::Rejected => "DENIED (approval rejected)",
            ApprovalPhase::Expired => "DENIED (approval expired)",
            _ => "DENIED (approval required)",
        },
    }
}

/// The report as a person reads it, ending in a newline.
pub fn text(decision: &Decision, report: &CheckReport) -> String {
    let t = |text: &str| inert::bounded(text, 1000);
    let list = |items: &[String]| items.iter().map(|i| t(i)).collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    let _ = writeln!(out, "{}: {}", headline(decision), t(&report.change.target));
    for reason in &report.reasons {
        let _ = writeln!(out, "  - {}", t(reason));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "change:   {}", t(&report.change.summary));
    for change in report.change.changes.iter().filter(|c| c.risk.is_some()) {
        let _ = writeln!(
            out,
            "  ! {}: {}: {} → {}",
            change.risk.map(|r| r.label()).unwrap_or_default(),
            t(&change.path),
            t(change.before.as_deref().unwrap_or("(none)")),
            t(change.after.as_deref().unwrap_or("(none)"))
        );
    }
    let _ = writeln!(out, "digest:   {}", report.change.digest);
    let policies = if report.policies.is_empty() {
        "(none matched)".to_string()
    } else {
        list(&report.policies)
    };
    let _ = writeln!(out, "policies: {policies}");
    if let Some(approval) = &report.approval {
        let state = if approval.existing {
            approval.phase.to_string()
        } else {
            "not requested yet".to_string()
        };
        let _ = writeln!(
            out,
            "approval: {} ({state}, policy {})",
            t(&approval.name),
            t(&approval.policy)
        );
        let total = approval.levels.len();
        for (i, level) in approval.levels.iter().enumerate() {
            let mut line = format!(
                "  {}/{total} {}: {} of {} approvals",
                i + 1,
                t(&level.name),
                level.approvals,
                level.required
            );
            if !level.approved_by.is_empty() {
                let _ = write!(line, " ({})", list(&level.approved_by));
            }
            if level.satisfied {
                line.push_str(", satisfied");
            } else if approval.phase == ApprovalPhase::Pending && !level.missing_required.is_empty()
            {
                let _ = write!(
                    line,
                    ", waiting for {} (required)",
                    list(&level.missing_required)
                );
            }
            if approval.current_level == Some(i + 1) {
                line.push_str("  <- open");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out
}
