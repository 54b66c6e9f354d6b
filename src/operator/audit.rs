//! Writing the audit trail (SPEC §7): each planned entry is written once through the one
//! writer (`cluster::trail`: a retry or a restart finds it and writes no duplicate; an
//! entry of other content under its name never counts as it), and a newly written one is
//! announced by the Events the core plans for it (`core::audit::trail::entry_events`).

use k8s_openapi::api::core::v1::ObjectReference;

use super::{Context, ReconcileError};
use crate::cluster::trail::Written;
use crate::core::audit::trail::{PlannedEntry, entry_events};

/// Create the entries that do not exist yet, each with its Events.
pub async fn record(
    context: &Context,
    entries: Vec<PlannedEntry>,
    request: Option<ObjectReference>,
) -> Result<(), ReconcileError> {
    let cluster = &context.cluster;
    for entry in entries {
        let known = context
            .written
            .lock()
            .map(|written| written.contains(&entry.name))
            .unwrap_or(false);
        if known {
            continue;
        }
        let written = cluster
            .trail
            .write(&entry)
            .await
            .map_err(|e| ReconcileError::Audit(entry.name.clone(), e))?;
        if let Written::Created(name) = &written {
            for event in entry_events(&entry.spec, name, request.clone()) {
                cluster.events.publish_now(event).await;
            }
        }
        if let Ok(mut written) = context.written.lock() {
            written.insert(entry.name);
        }
    }
    Ok(())
}
