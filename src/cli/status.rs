//! `countersign status NAME`: one request, top to bottom.

use jiff::Timestamp;
use kube::Api;

use super::CliError;
use super::cluster::{ClusterArgs, connect};
use super::present::status_text;
use super::show::{ShowFormat, print_object};
use crate::api::DeploymentApproval;

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
    let api: Api<DeploymentApproval> = Api::namespaced(cluster.client, &cluster.namespace);
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
            Ok(())
        }
        format => print_object(format, &approval),
    }
}
