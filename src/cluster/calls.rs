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
    #[error("{}", api_error_text(.0))]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Trail(String),
}

/// An API error as a person reads it in a denial or a log: the API server's own message
/// with its code and reason (`… (500 InternalError)`), not kube's debug dump of the whole
/// Status; other errors as they display.
fn api_error_text(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let reason = Some(status.reason.as_str()).filter(|r| !r.is_empty());
            match reason {
                Some(reason) => format!("{} ({} {reason})", status.message, status.code),
                None => format!("{} ({})", status.message, status.code),
            }
        }
        other => other.to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_reads_as_the_api_servers_message_not_a_debug_dump() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure",
            "code": 500,
            "reason": "InternalError",
            "message": "Internal error occurred: failed calling webhook \"audit.countersign.dev\": connection refused",
            "details": { "causes": [{ "message": "connection refused" }] },
        }))
        .expect("a Status");
        let text = WriteError::from(kube::Error::Api(status.into())).to_string();
        assert_eq!(
            text,
            "Internal error occurred: failed calling webhook \"audit.countersign.dev\": connection refused (500 InternalError)"
        );
        assert!(!text.contains("Status {"), "{text}");
    }
}
