//! `countersign status NAME`: one request, or one change set with its members, top to
//! bottom.

use jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client};

use super::CliError;
use super::cluster::{ClusterArgs, connect, whoami};
use super::present::{phase, set_status_text, status_text};
use super::review::{Found, find, may_approve, parse_name};
use super::show::{ShowFormat, print_object};
use crate::api::{ApprovalPhase, ChangeSet, DeploymentApproval, SET_LABEL};
use crate::core::approval::set::as_request;
use crate::core::inert;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The DeploymentApproval's or the ChangeSet's name (`changeset/NAME` or `cset/NAME`
    /// for a set, `deploymentapproval/NAME` for a request; a bare NAME is a request, else a
    /// set).
    pub name: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: ShowFormat,
}

pub async fn run(args: &StatusArgs) -> Result<(), CliError> {
    let named = parse_name(&args.name)?;
    let cluster = connect(&args.cluster).await?;
    let client = &cluster.client;
    let namespace = cluster.namespace.as_str();
    match find(client, namespace, named).await? {
        Found::Request(approval) => {
            if args.output != ShowFormat::Text {
                return print_object(args.output, &approval);
            }
            print!("{}", status_text(&approval, Timestamp::now()));
            if phase(&approval) != ApprovalPhase::Pending {
                return Ok(());
            }
            // Who is asking, as the API server says, and whether their approval counts now:
            // a member's is its set's.
            let you = whoami(client).await?;
            let verdict = match &approval.spec.change_set {
                None => approval_verdict(client, approval.as_ref(), false, namespace).await?,
                Some(set) => {
                    let sets: Api<ChangeSet> = Api::namespaced(client.clone(), namespace);
                    match sets.get_opt(set).await {
                        Ok(Some(set)) => approval_verdict(client, &set, true, namespace).await?,
                        _ => format!("its change set {} cannot be read", inert::text(set)),
                    }
                }
            };
            println!("You:  {} ({verdict})", inert::text(&you.username));
        }
        Found::Set(set) => {
            if args.output != ShowFormat::Text {
                return print_object(args.output, &set);
            }
            let members = read_members(client, &set).await?;
            print!("{}", set_status_text(&set, &members, Timestamp::now()));
            if phase(&as_request(&set)) == ApprovalPhase::Pending {
                let you = whoami(client).await?;
                let verdict = approval_verdict(client, set.as_ref(), false, namespace).await?;
                println!("You:  {} ({verdict})", inert::text(&you.username));
            }
        }
    }
    Ok(())
}

/// Whether the caller may approve `object` now, and how; `set_of_member`: it is the set of
/// the request shown.
async fn approval_verdict<K: super::review::Reviewed>(
    client: &Client,
    object: &K,
    set_of_member: bool,
    namespace: &str,
) -> Result<String, CliError> {
    let name = inert::text(object.meta().name.as_deref().unwrap_or_default());
    let may = may_approve(client, object).await?;
    Ok(match (may, set_of_member) {
        (true, false) => format!(
            "you may approve it now: kubectl countersign approve {name} -n {}",
            inert::text(namespace)
        ),
        (true, true) => format!(
            "you may approve its change set now: kubectl countersign approve {name} -n {}",
            inert::text(namespace)
        ),
        (false, false) => "your approval would not count now".to_string(),
        (false, true) => format!("your approval of its change set {name} would not count now"),
    })
}

/// The requests `set` lists, as stored now, in its order (`None`: not found): one list by
/// the set's label, and a read by name for any not labelled.
pub async fn read_members(
    client: &Client,
    set: &ChangeSet,
) -> Result<Vec<Option<DeploymentApproval>>, CliError> {
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let name = set.metadata.name.clone().unwrap_or_default();
    let api: Api<DeploymentApproval> = Api::namespaced(client.clone(), &namespace);
    let what = format!("reading the requests of ChangeSet {namespace}/{name}");
    // A name no label value can hold is refused as a selector: each is then read by name.
    let labelled = api
        .list(&ListParams::default().labels(&format!("{SET_LABEL}={name}")))
        .await
        .map(|list| list.items)
        .unwrap_or_default();
    let mut members = Vec::with_capacity(set.spec.members.len());
    for listed in &set.spec.members {
        let found = labelled
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(listed.request.as_str()))
            .cloned();
        let found = match found {
            Some(found) => Some(found),
            None => api
                .get_opt(&listed.request)
                .await
                .map_err(|e| CliError::from_api(&what, e))?,
        };
        members.push(found);
    }
    Ok(members)
}
