//! `countersign status NAME`: one request, top to bottom.

use jiff::Timestamp;
use kube::Api;

use super::CliError;
use super::cluster::{ClusterArgs, connect, whoami};
use super::present::{phase, status_text};
use super::review::may_approve;
use super::show::{ShowFormat, print_object};
use crate::api::{ApprovalPhase, DeploymentApproval};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The DeploymentApproval's name.
    pub name: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: ShowFormat,
}

pub async fn run(args: &StatusArgs) -> Result<(), CliError> {
    let cluster = connect(&args.cluster).await?;
    let api: Api<DeploymentApproval> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let approval = api.get(&args.name).await.map_err(|e| {
        CliError::from_api(
            &format!(
                "reading DeploymentApproval {}/{}",
                cluster.namespace, args.name
            ),
            e,
        )
    })?;
    match args.output {
        ShowFormat::Text => {
            print!("{}", status_text(&approval, Timestamp::now()));
            // Who is asking, as the API server says, and whether their approval counts now.
            if phase(&approval) == ApprovalPhase::Pending {
                let you = whoami(&cluster.client).await?;
                let verdict = if may_approve(&cluster.client, &approval).await? {
                    format!(
                        "you may approve it now: kubectl countersign approve {} -n {}",
                        args.name, cluster.namespace
                    )
                } else {
                    "your approval would not count now".to_string()
                };
                println!("You:  {} ({verdict})", you.username);
            }
            Ok(())
        }
        format => print_object(format, &approval),
    }
}
