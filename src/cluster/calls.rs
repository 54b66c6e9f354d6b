//! Every live read and write the webhook makes runs under a deadline, so a slow API server
//! yields a denial with a reason rather than a timed-out admission call.

use std::time::Duration;

/// How long one live read or write may take before the webhook gives up and says so.
pub const CALL_BUDGET: Duration = Duration::from_secs(3);

/// Why a write did not land.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Someone else wrote first (409): the compare-and-swap lost, or the object exists.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("the API server did not answer within {0:?}")]
    Timeout(Duration),
    /// 401: the API server refuses countersign's own credentials.
    #[error(
        "the API server refuses countersign's credentials (401 Unauthorized): its ServiceAccount token expired or was revoked"
    )]
    CredentialsRefused,
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Trail(String),
}

/// Run `call` under [`CALL_BUDGET`].
pub async fn bounded<T>(
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, WriteError> {
    match tokio::time::timeout(CALL_BUDGET, call).await {
        Err(_) => Err(WriteError::Timeout(CALL_BUDGET)),
        Ok(Err(kube::Error::Api(status))) if status.code == 409 => {
            Err(WriteError::Conflict(status.message))
        }
        Ok(Err(kube::Error::Api(status))) if status.code == 401 => {
            Err(WriteError::CredentialsRefused)
        }
        Ok(result) => result.map_err(WriteError::from),
    }
}
