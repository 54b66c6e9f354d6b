//! Audit retention (SPEC §7): deletes each AuditEntry once it is older than the configured
//! retention, then sleeps until the next one is due (`core::audit::retention`), but at least
//! [`MIN_SWEEP_INTERVAL`] (or the retention, if shorter) so a busy trail is not listed
//! again for every entry that falls due. Entries written meanwhile are younger than any
//! left, so they never fall due earlier. The trail is listed in pages.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, ListParams};

use super::Context;
use crate::api::AuditEntry;
use crate::core::audit::retention::retention_plan;

/// How long to wait after a failed sweep before trying again.
const RETRY: Duration = Duration::from_secs(30);

/// The least time between two sweeps: an entry is deleted at most this late.
pub const MIN_SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// Entries per page of the listing.
const PAGE: u32 = 500;

/// Run until the future is dropped; returns at once when entries are kept forever.
pub async fn run(context: Arc<Context>) {
    let Some(retention) = context.audit_retention else {
        return;
    };
    let api: Api<AuditEntry> = Api::namespaced(
        context.cluster.client.clone(),
        &context.cluster.install_namespace,
    );
    let least = Duration::try_from(retention)
        .unwrap_or(MIN_SWEEP_INTERVAL)
        .min(MIN_SWEEP_INTERVAL);
    loop {
        let wait = match sweep(&api, retention).await {
            Ok(Some(next)) => Duration::try_from(next.duration_since(Timestamp::now()))
                .unwrap_or_default()
                .max(least),
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
    let mut entries: Vec<(String, Timestamp)> = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api.list(&params).await?;
        entries.extend(
            page.items
                .into_iter()
                .filter_map(|e| e.metadata.name.clone().map(|name| (name, e.spec.time.0))),
        );
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
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
