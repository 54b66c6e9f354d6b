//! Audit retention (SPEC §7): deletes each AuditEntry once it is older than the configured
//! retention, then sleeps until the next one is due (`core::audit::retention`), but at least
//! [`MIN_SWEEP_INTERVAL`] (or the retention, if shorter) so a busy trail is not listed
//! again for every entry that falls due. Entries written meanwhile are younger than any
//! left, so they never fall due earlier. The trail is listed and swept a page at a time, so
//! a trail of any length is never held at once.

use std::sync::Arc;
use std::time::Duration;

use super::Context;
use crate::core::audit::retention::{earliest, retention_plan};
use jiff::Timestamp;

/// How long to wait after a failed sweep before trying again.
const RETRY: Duration = Duration::from_secs(30);

/// The least time between two sweeps: an entry is deleted at most this late.
pub const MIN_SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// Run until the future is dropped. Each sweep also teaches the audit writer what the
/// trail holds (`operator::audit`), so the first one, as this replica starts leading, saves
/// the controllers a read of every entry; when entries are kept forever, the trail is
/// walked once for that alone.
pub async fn run(context: Arc<Context>) {
    let Some(retention) = context.audit_retention else {
        super::audit::learn_trail(&context).await;
        return;
    };
    let least = Duration::try_from(retention)
        .unwrap_or(MIN_SWEEP_INTERVAL)
        .min(MIN_SWEEP_INTERVAL);
    loop {
        let swept = sweep(&context, retention).await;
        // Learned as far as it will be, whether the sweep finished or not.
        context.known_entries.mark_learned();
        let wait = match swept {
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

/// Delete what is due, a page at a time, learning what is kept; the next moment one falls
/// due.
async fn sweep(
    context: &Context,
    retention: jiff::SignedDuration,
) -> Result<Option<Timestamp>, kube::Error> {
    let trail = &context.cluster.trail;
    let started = std::time::Instant::now();
    let now = Timestamp::now();
    let mut next: Option<Timestamp> = None;
    let mut page: Option<String> = None;
    loop {
        let (entries, following) = trail.entries_page(page.as_deref()).await?;
        let times: Vec<(String, Timestamp)> = entries
            .iter()
            .filter_map(|e| e.metadata.name.clone().map(|name| (name, e.spec.time.0)))
            .collect();
        let plan = retention_plan(&times, retention, now);
        for name in &plan.delete {
            trail.delete(name).await?;
            tracing::info!(entry = %name, "audit entry past retention deleted");
        }
        for entry in &entries {
            if entry
                .metadata
                .name
                .as_ref()
                .is_some_and(|name| !plan.delete.contains(name))
            {
                super::audit::learn_listed(context, entry);
            }
        }
        next = earliest(next, plan.next);
        match following {
            Some(token) => page = Some(token),
            None => break,
        }
    }
    tracing::info!(
        known = context.known_entries.len(),
        seconds = started.elapsed().as_secs_f64(),
        "audit trail swept"
    );
    Ok(next)
}
