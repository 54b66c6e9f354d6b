//! `countersign list`: the requests in flight, as a table to scan; `--mine`: those the
//! caller may approve right now.

use futures::StreamExt;
use jiff::Timestamp;
use kube::Api;
use kube::api::ListParams;

use super::CliError;
use super::cluster::{ClusterArgs, connect};
use super::present::{is_open, list_header, list_row, phase, table};
use super::show::{ShowFormat, list_of, print_object};
use crate::api::{ApprovalPhase, DeploymentApproval};

/// How many dry-run reviews `--mine` has in flight at once.
const MINE_IN_FLIGHT: usize = 8;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only requests you may approve now: their open level counts you, and you have not
    /// reviewed them. Decided by countersign's webhook itself (a dry-run review).
    #[arg(long)]
    pub mine: bool,
    /// Also requests that are over (Deployed, Rejected, Expired, Failed).
    #[arg(long)]
    pub all: bool,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: ShowFormat,
}

pub async fn run(args: &ListArgs) -> Result<(), CliError> {
    let cluster = connect(&args.cluster).await?;
    let api: Api<DeploymentApproval> = if args.all_namespaces {
        Api::all(cluster.client.clone())
    } else {
        Api::namespaced(cluster.client.clone(), &cluster.namespace)
    };
    let mut approvals: Vec<DeploymentApproval> = api
        .list(&ListParams::default())
        .await
        .map_err(|e| CliError::from_api("listing DeploymentApprovals", e))?
        .items
        .into_iter()
        .filter(|a| args.all || is_open(a))
        .collect();
    if args.mine {
        // One dry-run review per pending request, a few at a time.
        let client = &cluster.client;
        let checked: Vec<Result<Option<DeploymentApproval>, CliError>> =
            futures::stream::iter(approvals)
                .filter(|a| std::future::ready(phase(a) == ApprovalPhase::Pending))
                .map(|approval| async move {
                    Ok(super::review::may_approve(client, &approval)
                        .await?
                        .then_some(approval))
                })
                .buffered(MINE_IN_FLIGHT)
                .collect()
                .await;
        approvals = checked
            .into_iter()
            .filter_map(Result::transpose)
            .collect::<Result<_, _>>()?;
    }
    approvals.sort_by(|a, b| {
        (&a.metadata.namespace, a.spec.change.requested_at.0)
            .cmp(&(&b.metadata.namespace, b.spec.change.requested_at.0))
    });
    if args.output != ShowFormat::Text {
        return print_object(args.output, &list_of(&approvals));
    }
    if approvals.is_empty() {
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
    let now = Timestamp::now();
    let rows: Vec<Vec<String>> = approvals
        .iter()
        .map(|a| list_row(a, args.all_namespaces, now))
        .collect();
    print!("{}", table(&list_header(args.all_namespaces), &rows));
    Ok(())
}
