//! Break-glass announcements (SPEC §6): every break-glass AuditEntry the webhook writes is
//! announced to all levels' sinks of the policies it bypassed, at least once, with its
//! delivery records in the entry's status (so a restart resends nothing delivered). Only
//! entries labelled as break-glass are watched: the trail itself can be large.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::{Action, Controller};

use super::{Context, ReconcileError};
use crate::api::AuditEntry;

/// Run the controller until the future is dropped.
pub async fn run(context: Arc<Context>) {
    let (api, config) = context.cluster.trail.break_glass_watch();
    let controller = Controller::new(api, config);
    super::controller::run("break-glass", controller, reconcile, context).await;
}

async fn reconcile(
    entry: Arc<AuditEntry>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    // The watch cache can trail this controller's own last write: another write to the
    // entry (the sealer's link) queues a reconcile whose cached entry lacks the deliveries
    // just recorded, and they would go out again. Deliver only from what the API server
    // holds now (found by running the suites twice in a row: each notice sent twice).
    let name = entry.name_any();
    let Some(entry) = context
        .cluster
        .trail
        .fresh(&name)
        .await
        .map_err(|e| ReconcileError::Read(name.clone(), e))?
    else {
        return Ok(Action::await_change());
    };
    let now = Timestamp::now();
    let policies = context.snapshot.policies();
    let round = context
        .notifier
        .deliver_break_glass(&entry, &policies, now)
        .await;
    context.metrics.notifications(round.delivered, round.failed);
    let stored = entry.status.clone().unwrap_or_default();
    if stored.notifications != round.notifications {
        context
            .cluster
            .trail
            .record_deliveries(&entry, round.notifications)
            .await
            .map_err(|e| ReconcileError::Write(name, e))?;
    }
    Ok(match round.next_attempt {
        Some(at) => Action::requeue(
            Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default()
                + Duration::from_millis(50),
        ),
        None => Action::await_change(),
    })
}
