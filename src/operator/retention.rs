//! Audit retention (SPEC §7): deletes each AuditEntry once it is older than the configured
//! retention, then sleeps until the next one is due (`core::retention`). Entries written
//! meanwhile are younger than any left, so they never fall due earlier.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, ListParams};

use super::Context;
use crate::api::AuditEntry;
use crate::core::retention::retention_plan;

/// How long to wait after a failed sweep before trying again.
const RETRY: Duration = Duration::from_secs(30);

/// Run until the future is dropped; returns at once when entries are kept forever.
pub async fn run(context: Arc<Context>) {
    let Some(retention) = context.audit_retention else {
        return;
    };
    let api: Api<AuditEntry> = Api::namespaced(context.client.clone(), &context.install_namespace);
    loop {
        let wait = match sweep(&api, retention).await {
            Ok(Some(next)) => Duration::try_from(next.duration_since(Timestamp::now()))
                .unwrap_or_default()
                .max(Duration::from_secs(1)),
            Ok(None) => Duration::try_from(retention).unwrap_or(RETRY),
            Err(error) => {
                tracing::warn!(%error, "audit retention could not sweep; retrying");
                RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Delete what is due; the next moment one falls due.
async fn sweep(
    api: &Api<AuditEntry>,
    retention: jiff::SignedDuration,
) -> Result<Option<Timestamp>, kube::Error> {
    let entries: Vec<(String, Timestamp)> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|e| e.metadata.name.clone().map(|name| (name, e.spec.time.0)))
        .collect();
    let plan = retention_plan(&entries, retention, Timestamp::now());
    for name in &plan.delete {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(entry = %name, "audit entry past retention deleted"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(plan.next)
}
