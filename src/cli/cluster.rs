//! Connecting the approver's and deployer's commands to a cluster, the way kubectl does:
//! `--kubeconfig` (else `$KUBECONFIG`, `~/.kube/config`, in-cluster), `--context`, `-n`; and
//! who the caller is, from the API server itself (SelfSubjectReview).

use std::path::PathBuf;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::PostParams;
use kube::{Api, Client};

use super::CliError;
use crate::api::UserInfo;
use crate::kubeconfig::client_config;

/// Which cluster, as whom, and in which namespace.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

/// A connected client and the namespace to work in.
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
}

/// Connect as the kubeconfig says.
pub async fn connect(args: &ClusterArgs) -> Result<Cluster, CliError> {
    // kube's client uses rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = client_config(args.kubeconfig.as_deref(), args.context.as_deref())
        .await
        .map_err(|e| CliError::Connect(e.to_string()))?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| CliError::Connect(e.to_string()))?;
    Ok(Cluster { client, namespace })
}

/// Who the API server says the caller is.
pub async fn whoami(client: &Client) -> Result<UserInfo, CliError> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| CliError::from_api("asking the API server who you are", e))?;
    let user = review
        .status
        .and_then(|s| s.user_info)
        .ok_or_else(|| CliError::Connect("the API server did not say who you are".into()))?;
    Ok(UserInfo {
        username: user.username.unwrap_or_default(),
        groups: user.groups.unwrap_or_default(),
    })
}
