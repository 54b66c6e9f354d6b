//! A ServiceAccount token from the TokenRequest API, kept fresh in a file that kube's
//! client re-reads (it reloads a token file at least once a minute), the way a projected
//! ServiceAccount token works inside a pod.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::cluster::credentials::Credentials;

/// How long each token lives. Renewed at half its life, so a failed renewal has time to retry.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// After a failed renewal, try again this soon.
const RETRY: Duration = Duration::from_secs(10);

/// kube's client reads a token file again at least this often (kube-client's `TokenFile`).
const RELOAD: Duration = Duration::from_secs(70);

/// Request a token for `namespace/name` and write it to `path` (mode 0600, replaced
/// atomically so a reader never sees half a token).
pub async fn issue(
    issuer: &Client,
    namespace: &str,
    name: &str,
    path: &Path,
) -> Result<(), String> {
    let api: Api<ServiceAccount> = Api::namespaced(issuer.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: i64::try_from(TOKEN_LIFETIME.as_secs()).ok(),
            bound_object_ref: None,
        }),
        ..TokenRequest::default()
    };
    let issued = api
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("TokenRequest for serviceaccount {namespace}/{name}: {e}"))?;
    let token = issued
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("TokenRequest for {namespace}/{name} returned no token"))?;
    write_private(path, &token).map_err(|e| format!("{}: {e}", path.display()))
}

/// Keep the token at `path` fresh until the task is dropped: renewed at half its life, and
/// at once when the API server begins refusing the one in use (`credentials`: it expired
/// while renewals failed, or was revoked); while renewals fail, retried every [`RETRY`].
pub async fn keep_fresh(
    issuer: Client,
    namespace: String,
    name: String,
    path: PathBuf,
    credentials: Arc<Credentials>,
) {
    let mut wait = TOKEN_LIFETIME / 2;
    let mut handled = credentials.runs();
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = credentials.refusal_after(handled) => {
                tracing::warn!("the ServiceAccount token is refused; renewing it now");
            }
        }
        handled = credentials.runs();
        wait = match issue(&issuer, &namespace, &name, &path).await {
            // kube's client reads the file again within a minute; if the API server still
            // refuses the token after that, renew once more.
            Ok(()) if credentials.refused_for().is_some() => {
                tracing::info!(
                    "ServiceAccount token renewed while refused; the client reads it within a minute"
                );
                RELOAD
            }
            Ok(()) => {
                tracing::debug!("ServiceAccount token renewed");
                TOKEN_LIFETIME / 2
            }
            Err(error) => {
                tracing::warn!(%error, "could not renew the ServiceAccount token; retrying");
                RETRY
            }
        };
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}
