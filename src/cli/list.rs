//! `countersign list`: the requests and change sets in flight, as a table to scan (a set's
//! members beneath it); `--mine`: those the caller may approve right now.

use futures::StreamExt;
use jiff::Timestamp;
use kube::Api;
use kube::api::ListParams;

use super::CliError;
use super::cluster::{ClusterArgs, connect};
use super::present::{Listed, list_header, listing, listing_rows, phase, table};
use super::show::{ShowFormat, list_of, print_object};
use crate::api::{ApprovalPhase, ChangeSet, DeploymentApproval};

/// How many dry-run reviews `--mine` has in flight at once.
const MINE_IN_FLIGHT: usize = 8;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only requests and change sets you may approve now: their open level counts you, and
    /// you have not reviewed them. Decided by countersign's webhook itself (a dry-run
    /// review).
    #[arg(long)]
    pub mine: bool,
    /// Also requests and sets that are over (Deployed, Rejected, Expired, Failed).
    #[arg(long)]
    pub all: bool,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: ShowFormat,
}

pub async fn run(args: &ListArgs) -> Result<(), CliError> {
    let cluster = connect(&args.cluster).await?;
    let (requests, sets): (Api<DeploymentApproval>, Api<ChangeSet>) = if args.all_namespaces {
        (
            Api::all(cluster.client.clone()),
            Api::all(cluster.client.clone()),
        )
    } else {
        (
            Api::namespaced(cluster.client.clone(), &cluster.namespace),
            Api::namespaced(cluster.client.clone(), &cluster.namespace),
        )
    };
    let requests: Vec<DeploymentApproval> = requests
        .list(&ListParams::default())
        .await
        .map_err(|e| CliError::from_api("listing DeploymentApprovals", e))?
        .items;
    let sets: Vec<ChangeSet> = match sets.list(&ListParams::default()).await {
        Ok(list) => list.items,
        // A cluster without the ChangeSet kind (countersign before sets) has none.
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(error) => return Err(CliError::from_api("listing ChangeSets", error)),
    };
    let mut listed = listing(requests, sets, args.all);
    if args.mine {
        // One dry-run review per pending request or set, a few at a time. A member of a
        // set is approved through its set, never on its own.
        let client = &cluster.client;
        let checked: Vec<Result<Option<Listed>, CliError>> = futures::stream::iter(listed)
            .filter(|entry| std::future::ready(awaits_review(entry)))
            .map(|entry| async move {
                let may = match &entry {
                    Listed::Set { set, .. } => {
                        super::review::may_approve(client, set.as_ref()).await?
                    }
                    Listed::Request(request) => {
                        super::review::may_approve(client, request.as_ref()).await?
                    }
                };
                Ok(may.then_some(entry))
            })
            .buffered(MINE_IN_FLIGHT)
            .collect()
            .await;
        listed = checked
            .into_iter()
            .filter_map(Result::transpose)
            .collect::<Result<_, _>>()?;
    }
    if args.output != ShowFormat::Text {
        let mut objects = Vec::new();
        for entry in &listed {
            objects.extend(
                entry
                    .objects()
                    .map_err(|e| CliError::Output(e.to_string()))?,
            );
        }
        return print_object(args.output, &list_of(&objects));
    }
    if listed.is_empty() {
        let scope = if args.all_namespaces {
            "in any namespace".to_string()
        } else {
            format!("in namespace {}", cluster.namespace)
        };
        let what = match (args.mine, args.all) {
            (true, _) => "No requests you can approve now",
            (false, true) => "No requests",
            (false, false) => "No open requests",
        };
        println!("{what} {scope}.");
        return Ok(());
    }
    let rows = listing_rows(&listed, args.all_namespaces, Timestamp::now());
    print!("{}", table(&list_header(args.all_namespaces), &rows));
    Ok(())
}

/// A pending set, or a pending request of no set: what may take an approval.
fn awaits_review(entry: &Listed) -> bool {
    match entry {
        Listed::Set { set, .. } => set.phase() == ApprovalPhase::Pending,
        Listed::Request(request) => {
            request.spec.change_set.is_none() && phase(request) == ApprovalPhase::Pending
        }
    }
}
