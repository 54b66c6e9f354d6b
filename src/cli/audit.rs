//! `countersign audit`: the audit trail of a request or of a target, oldest first.

use kube::Api;
use kube::api::ListParams;

use super::CliError;
use super::cluster::{ClusterArgs, connect};
use super::present::{sorted_entries, timeline};
use super::show::{ShowFormat, list_of, print_object};
use crate::api::AuditEntry;
use crate::install::DEFAULT_INSTALL_NAMESPACE;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub action: Option<AuditCommand>,
    /// A DeploymentApproval's name: its entries.
    #[arg(required_unless_present = "target", conflicts_with = "target")]
    pub approval: Option<String>,
    /// Or a target, as KIND/NAME (`deployment/web`): every entry about it.
    #[arg(long)]
    pub target: Option<String>,
    /// The namespace countersign keeps its audit trail in.
    #[arg(long, env = "COUNTERSIGN_NAMESPACE", default_value = DEFAULT_INSTALL_NAMESPACE)]
    pub install_namespace: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: ShowFormat,
}

/// What else `countersign audit` does besides showing a timeline.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check that the whole trail is complete and unedited: its hash chain, retention's
    /// signed record, and the signed checkpoints (docs/security.md).
    ///
    /// Exit status: 0 intact, 1 tampering found, 2 bad input, 3 cluster unreachable.
    Verify(Box<super::audit_verify::VerifyArgs>),
}

pub async fn run(args: &AuditArgs) -> Result<(), CliError> {
    let cluster = connect(&args.cluster).await?;
    let target = match &args.target {
        Some(text) => Some(parse_target(text)?),
        None => None,
    };
    let api: Api<AuditEntry> = Api::namespaced(cluster.client, &args.install_namespace);
    let entries: Vec<AuditEntry> = api
        .list(&ListParams::default())
        .await
        .map_err(|e| CliError::from_api("listing the audit trail", e))?
        .items
        .into_iter()
        .filter(|entry| {
            let spec = &entry.spec;
            let here = spec.target.namespace.as_deref() == Some(cluster.namespace.as_str());
            match (&args.approval, &target) {
                (Some(approval), _) => here && spec.approval.as_deref() == Some(approval),
                (None, Some((kind, name))) => {
                    here && spec.target.kind.eq_ignore_ascii_case(kind) && &spec.target.name == name
                }
                (None, None) => false,
            }
        })
        .collect();
    if args.output != ShowFormat::Text {
        return print_object(args.output, &list_of(&sorted_entries(&entries)));
    }
    if entries.is_empty() {
        println!("No audit entries.");
        return Ok(());
    }
    print!("{}", timeline(&entries));
    Ok(())
}

/// `deployment/web`, `Deployment/web` or `deployments/web` as (kind, name).
fn parse_target(text: &str) -> Result<(String, String), CliError> {
    let bad = || CliError::Flag {
        flag: "--target",
        message: format!("{text:?}: expected KIND/NAME, e.g. deployment/web"),
    };
    let (kind, name) = text.split_once('/').ok_or_else(bad)?;
    if kind.is_empty() || name.is_empty() || name.contains('/') {
        return Err(bad());
    }
    let kind = match kind.to_ascii_lowercase().as_str() {
        "deploy" | "deployments" => "deployment".to_string(),
        "sts" | "statefulsets" => "statefulset".to_string(),
        "ds" | "daemonsets" => "daemonset".to_string(),
        "jobs" => "job".to_string(),
        "cj" | "cronjobs" => "cronjob".to_string(),
        "po" | "pods" => "pod".to_string(),
        "rs" | "replicasets" => "replicaset".to_string(),
        other => other.to_string(),
    };
    Ok((kind, name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_kind_slash_name_as_kubectl_spells_them() {
        for (text, kind) in [
            ("deployment/web", "deployment"),
            ("Deployment/web", "deployment"),
            ("deploy/web", "deployment"),
            ("sts/web", "statefulset"),
            ("cronjobs/web", "cronjob"),
        ] {
            let parsed = parse_target(text).expect("a target");
            assert_eq!(parsed, (kind.to_string(), "web".to_string()), "{text}");
        }
        for bad in ["web", "/web", "deployment/", "a/b/c"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }
}
