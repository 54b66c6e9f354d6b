//! `countersign approve NAME` and `countersign reject NAME --comment …`: append the caller's
//! review to the request, or to the change set NAME names (`changeset/NAME`, or a NAME no
//! request has). countersign's webhook stamps who and when, and refuses a review that does
//! not count (not an approver of the open level, already reviewed, the requester approving
//! their own change); its reason is shown as it is. A member of a set is reviewed through
//! its set: that is said here, naming the set, before anything is patched.

use std::fmt::Debug;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Api, Client};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::CliError;
use super::cluster::{ClusterArgs, connect};
use super::present::{level, phase, set_status_text, status_text, waiting_for};
use super::show::{ShowFormat, print_object};
use super::status::read_members;
use crate::api::{ApprovalPhase, ChangeSet, DeploymentApproval, Review, ReviewDecision};
use crate::core::approval::set::as_request;
use crate::core::inert;

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The DeploymentApproval's or the ChangeSet's name (`changeset/NAME` or `cset/NAME`
    /// for a set, `deploymentapproval/NAME` for a request; a bare NAME is a request, else a
    /// set).
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
    /// The DeploymentApproval's or the ChangeSet's name (as for `approve`).
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

/// What a NAME argument names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Named<'a> {
    /// A bare name: a request, else a change set.
    Either(&'a str),
    Request(&'a str),
    Set(&'a str),
}

/// Read NAME as kubectl reads `KIND/NAME`: `changeset/`, `changesets/` or `cset/` for a
/// set; `deploymentapproval/`, `deploymentapprovals/` or `dapr/` for a request (each
/// also with `.countersign.dev`, in any case).
pub fn parse_name(arg: &str) -> Result<Named<'_>, CliError> {
    let Some((kind, name)) = arg.split_once('/') else {
        return Ok(Named::Either(arg));
    };
    let bad = || CliError::Flag {
        flag: "NAME",
        message: format!(
            "{}: name a request (NAME or deploymentapproval/NAME) or a change set (changeset/NAME or cset/NAME)",
            inert::text(arg)
        ),
    };
    if name.is_empty() || name.contains('/') {
        return Err(bad());
    }
    let kind = kind.to_ascii_lowercase();
    match kind.strip_suffix(".countersign.dev").unwrap_or(&kind) {
        "deploymentapproval" | "deploymentapprovals" | "dapr" => Ok(Named::Request(name)),
        "changeset" | "changesets" | "cset" => Ok(Named::Set(name)),
        _ => Err(bad()),
    }
}

/// A request or a change set, as stored.
pub enum Found {
    Request(Box<DeploymentApproval>),
    Set(Box<ChangeSet>),
}

/// Read what `named` names in `namespace`: a bare name is looked up as a request first,
/// then as a change set.
pub async fn find(client: &Client, namespace: &str, named: Named<'_>) -> Result<Found, CliError> {
    let requests: Api<DeploymentApproval> = Api::namespaced(client.clone(), namespace);
    let sets: Api<ChangeSet> = Api::namespaced(client.clone(), namespace);
    let reading = |kind: &str, name: &str| format!("reading {kind} {namespace}/{name}");
    match named {
        Named::Request(name) => requests
            .get(name)
            .await
            .map(|r| Found::Request(Box::new(r)))
            .map_err(|e| CliError::from_api(&reading("DeploymentApproval", name), e)),
        Named::Set(name) => sets
            .get(name)
            .await
            .map(|s| Found::Set(Box::new(s)))
            .map_err(|e| CliError::from_api(&reading("ChangeSet", name), e)),
        Named::Either(name) => {
            let request = requests
                .get_opt(name)
                .await
                .map_err(|e| CliError::from_api(&reading("DeploymentApproval", name), e))?;
            if let Some(request) = request {
                return Ok(Found::Request(Box::new(request)));
            }
            // A cluster without the ChangeSet kind (countersign before sets) has no set.
            let missing = || {
                CliError::Refused(format!(
                    "no request or change set {}/{} (kubectl countersign list -n {} shows those in flight)",
                    inert::text(namespace),
                    inert::text(name),
                    inert::text(namespace)
                ))
            };
            match sets.get_opt(name).await {
                Ok(Some(set)) => Ok(Found::Set(Box::new(set))),
                Ok(None) => Err(missing()),
                Err(kube::Error::Api(status)) if status.code == 404 => Err(missing()),
                Err(error) => Err(CliError::from_api(&reading("ChangeSet", name), error)),
            }
        }
    }
}

/// What takes reviews: a request, or a change set.
pub trait Reviewed:
    kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
{
    fn reviews(&self) -> &[Review];
    /// The generation the operator last counted.
    fn observed_generation(&self) -> Option<i64>;
}

impl Reviewed for DeploymentApproval {
    fn reviews(&self) -> &[Review] {
        &self.spec.reviews
    }
    fn observed_generation(&self) -> Option<i64> {
        self.status.as_ref().and_then(|s| s.observed_generation)
    }
}

impl Reviewed for ChangeSet {
    fn reviews(&self) -> &[Review] {
        &self.spec.reviews
    }
    fn observed_generation(&self) -> Option<i64> {
        self.status.as_ref().and_then(|s| s.observed_generation)
    }
}

/// Why a member of a set is not reviewed on its own, and what to run instead.
pub fn member_refusal(namespace: &str, name: &str, set: &str, decision: ReviewDecision) -> String {
    let (verb, comment) = match decision {
        ReviewDecision::Approve => ("approve", ""),
        ReviewDecision::Reject => ("reject", " --comment …"),
    };
    format!(
        "request {}/{} belongs to change set {}, which is reviewed as one: review the set (kubectl countersign {verb} {} -n {}{comment})",
        inert::text(namespace),
        inert::text(name),
        inert::text(set),
        inert::text(set),
        inert::text(namespace)
    )
}

async fn review(
    name: &str,
    decision: ReviewDecision,
    comment: Option<&str>,
    cluster: &ClusterArgs,
    output: ShowFormat,
) -> Result<(), CliError> {
    let named = parse_name(name)?;
    let cluster = connect(cluster).await?;
    let namespace = cluster.namespace.as_str();
    let verb = match decision {
        ReviewDecision::Approve => "Approved",
        ReviewDecision::Reject => "Rejected",
    };
    match find(&cluster.client, namespace, named).await? {
        Found::Request(request) => {
            let name = request.metadata.name.clone().unwrap_or_default();
            if let Some(set) = &request.spec.change_set {
                return Err(CliError::Refused(member_refusal(
                    namespace, &name, set, decision,
                )));
            }
            let api: Api<DeploymentApproval> = Api::namespaced(cluster.client.clone(), namespace);
            let what = format!("DeploymentApproval {namespace}/{name}");
            let reviewed = append_to(&api, *request, &what, decision, comment).await?;
            let counted = counted(&api, &reviewed).await.unwrap_or(reviewed);
            if output != ShowFormat::Text {
                return print_object(output, &counted);
            }
            print_reviewed(verb, namespace, &name, &counted);
            if !waits_on_reviews(&counted) {
                print!("{}", status_text(&counted, Timestamp::now()));
            }
        }
        Found::Set(set) => {
            let name = set.metadata.name.clone().unwrap_or_default();
            let api: Api<ChangeSet> = Api::namespaced(cluster.client.clone(), namespace);
            let what = format!("ChangeSet {namespace}/{name}");
            let reviewed = append_to(&api, *set, &what, decision, comment).await?;
            let counted = counted(&api, &reviewed).await.unwrap_or(reviewed);
            if output != ShowFormat::Text {
                return print_object(output, &counted);
            }
            print_reviewed(verb, namespace, &name, &as_request(&counted));
            if !waits_on_reviews(&as_request(&counted)) {
                let members = read_members(&cluster.client, &counted).await?;
                print!("{}", set_status_text(&counted, &members, Timestamp::now()));
            }
        }
    }
    Ok(())
}

/// Pending and counted: the next level waits for more reviews.
fn waits_on_reviews(request: &DeploymentApproval) -> bool {
    phase(request) == ApprovalPhase::Pending && request.status.is_some()
}

/// `Approved shop/web-1 as alice.`, and while reviews are still wanted, who is next.
fn print_reviewed(verb: &str, namespace: &str, name: &str, counted: &DeploymentApproval) {
    let by = counted
        .spec
        .reviews
        .last()
        .map(|r| r.user.clone())
        .unwrap_or_default();
    println!(
        "{verb} {}/{} as {}.",
        inert::text(namespace),
        inert::text(name),
        inert::text(&by)
    );
    if waits_on_reviews(counted) {
        println!(
            "Now at level {}, waiting for {}.",
            level(counted),
            waiting_for(counted)
        );
    }
}

/// Append the review to `read` (as read a moment ago) with a merge patch over its version:
/// another review landing first is a conflict, and the review is appended again to the
/// fresh list.
async fn append_to<K: Reviewed>(
    api: &Api<K>,
    read: K,
    what: &str,
    decision: ReviewDecision,
    comment: Option<&str>,
) -> Result<K, CliError> {
    let name = read.meta().name.clone().unwrap_or_default();
    let mut current = read;
    let mut attempts = 0;
    loop {
        attempts += 1;
        // Whether reviews are still open is the webhook's to say: its refusal is shown.
        let patch = append_review(&current, decision, comment)?;
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(reviewed) => return Ok(reviewed),
            Err(kube::Error::Api(status)) if status.code == 409 && attempts < 5 => {
                current = api
                    .get(&name)
                    .await
                    .map_err(|e| CliError::from_api(&format!("reading {what}"), e))?;
            }
            Err(error) => return Err(CliError::from_api(&format!("reviewing {what}"), error)),
        }
    }
}

/// The object once the operator has counted the review (its status is of the reviewed
/// generation), or `None` if it has not within [`COUNTED_WITHIN`].
async fn counted<K: Reviewed>(api: &Api<K>, reviewed: &K) -> Option<K> {
    let name = reviewed.meta().name.clone()?;
    let generation = reviewed.meta().generation?;
    let started = std::time::Instant::now();
    while started.elapsed() < COUNTED_WITHIN {
        if let Ok(now) = api.get(&name).await
            && now.observed_generation().is_some_and(|g| g >= generation)
        {
            return Some(now);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// A merge patch appending a review (who and when are stamped by the webhook) to the
/// reviews as read, over the version read.
pub fn append_review<K: Reviewed>(
    object: &K,
    decision: ReviewDecision,
    comment: Option<&str>,
) -> Result<Value, CliError> {
    let mut reviews =
        serde_json::to_value(object.reviews()).map_err(|e| CliError::Output(e.to_string()))?;
    let mut review = json!({ "decision": decision });
    if let Some(comment) = comment {
        review["comment"] = json!(comment);
    }
    if let Some(list) = reviews.as_array_mut() {
        list.push(review);
    }
    Ok(json!({
        "metadata": { "resourceVersion": object.meta().resource_version },
        "spec": { "reviews": reviews },
    }))
}

/// Whether the caller's approval of `object` (a request or a change set) would be admitted
/// now: a server-side dry run of the review, judged by countersign's webhook with every
/// rule it applies.
pub async fn may_approve<K: Reviewed>(client: &Client, object: &K) -> Result<bool, CliError> {
    let (Some(name), Some(namespace)) = (&object.meta().name, &object.meta().namespace) else {
        return Ok(false);
    };
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let patch = append_review(object, ReviewDecision::Approve, None)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_says_a_request_or_a_set_as_kubectl_reads_kind_slash_name() {
        let cases: &[(&str, Option<Named>)] = &[
            ("web-5f2c8e1a", Some(Named::Either("web-5f2c8e1a"))),
            ("changeset/release-1a", Some(Named::Set("release-1a"))),
            ("cset/release-1a", Some(Named::Set("release-1a"))),
            ("ChangeSets/release-1a", Some(Named::Set("release-1a"))),
            (
                "changeset.countersign.dev/release-1a",
                Some(Named::Set("release-1a")),
            ),
            ("deploymentapproval/web-1", Some(Named::Request("web-1"))),
            ("dapr/web-1", Some(Named::Request("web-1"))),
            ("deployment/web", None),
            ("cset/", None),
            ("cset/a/b", None),
        ];
        for (arg, expected) in cases {
            match (parse_name(arg), expected) {
                (Ok(named), Some(expected)) => assert_eq!(named, *expected, "{arg}"),
                (Err(CliError::Flag { message, .. }), None) => {
                    assert!(message.contains("changeset/NAME"), "{arg}: {message}")
                }
                (other, _) => panic!("{arg}: {:?}", other.map_err(|e| e.to_string())),
            }
        }
    }

    #[test]
    fn a_member_is_sent_to_its_set() {
        let approve = member_refusal("shop", "web-1", "release-1a", ReviewDecision::Approve);
        assert_eq!(
            approve,
            "request shop/web-1 belongs to change set release-1a, which is reviewed as one: review the set (kubectl countersign approve release-1a -n shop)"
        );
        let reject = member_refusal("shop", "web-1", "release-1a", ReviewDecision::Reject);
        assert!(
            reject.ends_with("(kubectl countersign reject release-1a -n shop --comment …)"),
            "{reject}"
        );
        // Names from the cluster reach the terminal inert.
        let hostile = member_refusal("shop", "web", "x\u{1b}[2J", ReviewDecision::Approve);
        assert!(!hostile.contains('\u{1b}'), "{hostile:?}");
    }
}
