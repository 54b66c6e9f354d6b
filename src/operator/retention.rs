//! Audit retention (SPEC §7): deletes each AuditEntry once it is older than the configured
//! retention, then sleeps until the next one is due (`core::audit::retention`), but at least
//! [`MIN_SWEEP_INTERVAL`] (or the retention, if shorter) so a busy trail is not listed
//! again for every entry that falls due. Entries written meanwhile are younger than any
//! left, so they never fall due earlier. The trail is listed in pages.

use std::sync::Arc;
use std::time::Duration;

use super::Context;
use crate::cluster::trail::Trail;
use crate::core::audit::retention::retention_plan;
use jiff::Timestamp;

/// How long to wait after a failed sweep before trying again.
const RETRY: Duration = Duration::from_secs(30);

/// The least time between two sweeps: an entry is deleted at most this late.
pub const MIN_SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// Run until the future is dropped; returns at once when entries are kept forever.
pub async fn run(context: Arc<Context>) {
    let Some(retention) = context.audit_retention else {
        return;
    };
    let least = Duration::try_from(retention)
        .unwrap_or(MIN_SWEEP_INTERVAL)
        .min(MIN_SWEEP_INTERVAL);
    loop {
        let wait = match sweep(&context.cluster.trail, retention).await {
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
    trail: &Trail,
    retention: jiff::SignedDuration,
) -> Result<Option<Timestamp>, kube::Error> {
    let entries = trail.times().await?;
    let plan = retention_plan(&entries, retention, Timestamp::now());
    for name in &plan.delete {
        trail.delete(name).await?;
        tracing::info!(entry = %name, "audit entry past retention deleted");
    }
    Ok(plan.next)
}
