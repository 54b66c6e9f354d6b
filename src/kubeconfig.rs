//! The client configuration every command that talks to a cluster starts from, chosen the
//! way kubectl chooses it, so `serve` and the approver's commands cannot drift apart:
//! `--kubeconfig` (else `$KUBECONFIG`, `~/.kube/config`, else in-cluster) and `--context`.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Why no client configuration could be made, naming the file when one was given.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KubeconfigError(String);

/// The configuration for `kubeconfig` (else the default files, else in-cluster) and
/// `context` (else the kubeconfig's current one). A context given without a file is looked
/// up in the default files: it is never ignored for the in-cluster configuration.
pub async fn client_config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Config, KubeconfigError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    match kubeconfig {
        Some(path) => {
            let in_file =
                |e: &dyn std::fmt::Display| KubeconfigError(format!("{}: {e}", path.display()));
            let file = Kubeconfig::read_from(path).map_err(|e| in_file(&e))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| in_file(&e))
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| KubeconfigError(e.to_string())),
        None => kube::Config::infer()
            .await
            .map_err(|e| KubeconfigError(e.to_string())),
    }
}
