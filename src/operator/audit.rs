//! Writing the audit trail (SPEC §7): each planned entry is written once through the one
//! writer (`audit_trail`: a retry or a restart finds it and writes no duplicate; an entry
//! of other content under its name never counts as it), and a newly written one is
//! announced by an Event on the object it is about and, when given, on the request it
//! belongs to.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Api;
use kube::runtime::events::{Event, EventType};

use super::{Context, ReconcileError};
use crate::api::{AuditAction, AuditEntry, AuditEntrySpec};
use crate::audit_trail::{self, Written};
use crate::core::audit::trail::PlannedEntry;
use crate::core::inert;

/// Create the entries that do not exist yet, each with its Events.
pub async fn record(
    context: &Context,
    entries: Vec<PlannedEntry>,
    request: Option<ObjectReference>,
) -> Result<(), ReconcileError> {
    let api: Api<AuditEntry> = Api::namespaced(context.client.clone(), &context.install_namespace);
    for entry in entries {
        let known = context
            .written
            .lock()
            .map(|written| written.contains(&entry.name))
            .unwrap_or(false);
        if known {
            continue;
        }
        let written =
            audit_trail::write(&api, &context.install_namespace, &entry.name, &entry.spec)
                .await
                .map_err(|e| ReconcileError::Audit(entry.name.clone(), e))?;
        if let Written::Created(name) = &written {
            publish(context, &entry.spec, name, request.clone()).await;
        }
        if let Ok(mut written) = context.written.lock() {
            written.insert(entry.name);
        }
    }
    Ok(())
}

/// The Events of one audited step, on its target and on the request.
async fn publish(
    context: &Context,
    spec: &AuditEntrySpec,
    name: &str,
    request: Option<ObjectReference>,
) {
    let note = format!(
        "{:?} by {}{} (AuditEntry {name})",
        spec.action,
        spec.actor.username,
        spec.reason
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    let event = Event {
        type_: match spec.action {
            AuditAction::Rejected
            | AuditAction::Expired
            | AuditAction::RolloutFailed
            | AuditAction::NotApplied
            | AuditAction::WebhookConfigurationChanged
            | AuditAction::WebhookConfigurationDeleted => EventType::Warning,
            _ => EventType::Normal,
        },
        reason: format!("{:?}", spec.action),
        // The API server limits an Event's note to 1 KiB; what it quotes is inert.
        note: Some(inert::bounded(&note, 1000)),
        action: "Audit".into(),
        secondary: None,
    };
    for regarding in request.into_iter().chain([spec.target.reference()]) {
        if let Err(error) = context.recorder.publish(&event, &regarding).await {
            tracing::debug!(%error, "could not publish an Event");
        }
    }
}
