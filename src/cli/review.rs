//! `countersign approve NAME` and `countersign reject NAME --comment …`: append the caller's
//! review to the request. countersign's webhook stamps who and when, and refuses a review
//! that does not count (not an approver of the open level, already reviewed, the requester
//! approving their own change); its reason is shown as it is.

use std::time::Duration;

use jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::CliError;
use super::cluster::{ClusterArgs, connect};
use super::present::{level, phase, status_text, waiting_for};
use super::show::{ShowFormat, print_object};
use crate::api::{ApprovalPhase, DeploymentApproval, ReviewDecision};
use crate::core::inert;

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The DeploymentApproval's name.
    pub name: String,
    /// Why (kept in the request and the audit trail).
    #[arg(long)]
    pub comment: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: ShowFormat,
}

#[derive(Debug, clap::Args)]
pub struct RejectArgs {
    /// The DeploymentApproval's name.
    pub name: String,
    /// Why it is rejected: the requester reads it.
    #[arg(long, required = true)]
    pub comment: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: ShowFormat,
}

/// How long to wait for the operator to count the review before printing the progress.
const COUNTED_WITHIN: Duration = Duration::from_secs(10);

pub async fn approve(args: &ApproveArgs) -> Result<(), CliError> {
    review(
        &args.name,
        ReviewDecision::Approve,
        args.comment.as_deref(),
        &args.cluster,
        args.output,
    )
    .await
}

pub async fn reject(args: &RejectArgs) -> Result<(), CliError> {
    if args.comment.trim().is_empty() {
        return Err(CliError::Flag {
            flag: "--comment",
            message: "say why the change is rejected".into(),
        });
    }
    review(
        &args.name,
        ReviewDecision::Reject,
        Some(&args.comment),
        &args.cluster,
        args.output,
    )
    .await
}

async fn review(
    name: &str,
    decision: ReviewDecision,
    comment: Option<&str>,
    cluster: &ClusterArgs,
    output: ShowFormat,
) -> Result<(), CliError> {
    let cluster = connect(cluster).await?;
    let api: Api<DeploymentApproval> = Api::namespaced(cluster.client, &cluster.namespace);
    let what = format!("DeploymentApproval {}/{name}", cluster.namespace);
    // A merge patch over the version read: another review landing first is a conflict,
    // and the review is appended again to the fresh list.
    let mut attempts = 0;
    let reviewed = loop {
        attempts += 1;
        let approval = api
            .get(name)
            .await
            .map_err(|e| CliError::from_api(&format!("reading {what}"), e))?;
        // Whether reviews are still open is the webhook's to say: its refusal is shown.
        let patch = append_review(&approval, decision, comment)?;
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(reviewed) => break reviewed,
            Err(kube::Error::Api(status)) if status.code == 409 && attempts < 5 => continue,
            Err(error) => {
                return Err(CliError::from_api(&format!("reviewing {what}"), error));
            }
        }
    };
    let counted = counted(&api, &reviewed).await.unwrap_or(reviewed);
    if output != ShowFormat::Text {
        return print_object(output, &counted);
    }
    let verb = match decision {
        ReviewDecision::Approve => "Approved",
        ReviewDecision::Reject => "Rejected",
    };
    let by = counted
        .spec
        .reviews
        .last()
        .map(|r| r.user.clone())
        .unwrap_or_default();
    println!(
        "{verb} {}/{} as {}.",
        inert::text(&cluster.namespace),
        inert::text(name),
        inert::text(&by)
    );
    match phase(&counted) {
        ApprovalPhase::Pending if counted.status.is_some() => println!(
            "Now at level {}, waiting for {}.",
            level(&counted),
            waiting_for(&counted)
        ),
        _ => print!("{}", status_text(&counted, Timestamp::now())),
    }
    Ok(())
}

/// The request once the operator has counted the review (its status is of the reviewed
/// generation), or `None` if it has not within [`COUNTED_WITHIN`].
async fn counted(
    api: &Api<DeploymentApproval>,
    reviewed: &DeploymentApproval,
) -> Option<DeploymentApproval> {
    let name = reviewed.metadata.name.clone()?;
    let generation = reviewed.metadata.generation?;
    let started = std::time::Instant::now();
    while started.elapsed() < COUNTED_WITHIN {
        if let Ok(now) = api.get(&name).await
            && now
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .is_some_and(|g| g >= generation)
        {
            return Some(now);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// A merge patch appending a review (who and when are stamped by the webhook) to the
/// reviews as read, over the version read.
pub fn append_review(
    approval: &DeploymentApproval,
    decision: ReviewDecision,
    comment: Option<&str>,
) -> Result<Value, CliError> {
    let mut reviews = serde_json::to_value(&approval.spec.reviews)
        .map_err(|e| CliError::Output(e.to_string()))?;
    let mut review = json!({ "decision": decision });
    if let Some(comment) = comment {
        review["comment"] = json!(comment);
    }
    if let Some(list) = reviews.as_array_mut() {
        list.push(review);
    }
    Ok(json!({
        "metadata": { "resourceVersion": approval.metadata.resource_version },
        "spec": { "reviews": reviews },
    }))
}

/// Whether the caller's approval of `approval` would be admitted now: a server-side dry
/// run of the review, judged by countersign's webhook with every rule it applies.
pub async fn may_approve(
    client: &kube::Client,
    approval: &DeploymentApproval,
) -> Result<bool, CliError> {
    let (Some(name), Some(namespace)) = (&approval.metadata.name, &approval.metadata.namespace)
    else {
        return Ok(false);
    };
    let api: Api<DeploymentApproval> = Api::namespaced(client.clone(), namespace);
    let patch = append_review(approval, ReviewDecision::Approve, None)?;
    let params = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    match api.patch(name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if (400..500).contains(&status.code) => Ok(false),
        Err(error) => Err(CliError::from_api(
            &format!("checking {namespace}/{name}"),
            error,
        )),
    }
}
