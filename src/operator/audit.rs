//! Writing the audit trail (SPEC §7): each planned entry is written once through the one
//! writer (`cluster::trail`: a retry or a restart finds it and writes no duplicate; an
//! entry of other content under its name never counts as it), and a newly written one is
//! announced by the Events the core plans for it (`core::audit::trail::entry_events`).
//! Entries already known to hold what is planned (`cluster::trail::KnownEntries`, learned
//! from the trail in pages when this replica starts leading) are not written again.

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
        if context.known_entries.holds(&entry.name, &entry.spec) {
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
        // Under its planned name, whatever name it was written under: that name holds
        // other content, and this entry is in the trail.
        context.known_entries.written(&entry.name);
    }
    Ok(())
}

/// Learn the trail as it is, a page at a time (one list request for 500 entries, where
/// each reconcile's first look at an entry costs a create answered 409 and a read): run
/// beside the controllers when this replica starts leading (retention's sweep does it
/// when entries are not kept forever).
pub async fn learn_trail(context: &Context) {
    learn_listed_pages(context).await;
    context.known_entries.mark_learned();
}

async fn learn_listed_pages(context: &Context) {
    let mut page: Option<String> = None;
    let started = std::time::Instant::now();
    loop {
        match context.cluster.trail.entries_page(page.as_deref()).await {
            Ok((entries, next)) => {
                for entry in &entries {
                    learn_listed(context, entry);
                }
                match next {
                    Some(token) => page = Some(token),
                    None => break,
                }
            }
            Err(error) => {
                // Not needed for correctness: each entry is still checked when written.
                tracing::warn!(%error, "could not list the audit trail; entries are checked one by one");
                return;
            }
        }
    }
    tracing::info!(
        entries = context.known_entries.len(),
        seconds = started.elapsed().as_secs_f64(),
        "audit trail learned"
    );
}

/// Remember an entry listed from the trail, when something may plan it again: an entry of
/// a request or change set still cached, or of no request at all. The entries of requests
/// long gone are most of a trail, and nothing plans them again.
pub fn learn_listed(context: &Context, entry: &crate::api::AuditEntry) {
    let Some(name) = &entry.metadata.name else {
        return;
    };
    let spec = &entry.spec;
    let plannable = match (&spec.approval, &spec.target.namespace) {
        (Some(request), Some(namespace)) => context.snapshot.holds_request(namespace, request),
        (Some(_), None) => false,
        (None, _) => true,
    };
    if plannable {
        context.known_entries.learn(name, spec);
    }
}
