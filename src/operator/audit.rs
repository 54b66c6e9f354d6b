//! Writing the audit trail (SPEC §7): each planned entry is created once under its
//! deterministic name (an existing one is left alone, so a retry or a restart never writes
//! a duplicate), and a newly written one is announced by an Event on the object it is
//! about and, when given, on the request it belongs to.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType};

use super::{Context, ReconcileError};
use crate::api::{AuditAction, AuditEntry, AuditEntrySpec};
use crate::core::audit::PlannedEntry;

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
        let object = AuditEntry {
            metadata: ObjectMeta {
                name: Some(entry.name.clone()),
                namespace: Some(context.install_namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: entry.spec.clone(),
            status: None,
        };
        let created = match api.create(&PostParams::default(), &object).await {
            Ok(_) => true,
            Err(kube::Error::Api(status)) if status.code == 409 => false,
            Err(error) => return Err(ReconcileError::Audit(entry.name, error)),
        };
        if created {
            publish(context, &entry.spec, request.clone()).await;
        }
        if let Ok(mut written) = context.written.lock() {
            written.insert(entry.name);
        }
    }
    Ok(())
}

/// The Events of one audited step, on its target and on the request.
async fn publish(context: &Context, spec: &AuditEntrySpec, request: Option<ObjectReference>) {
    let note = format!(
        "{:?} by {}{}",
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
        note: Some(note.chars().take(1000).collect()),
        action: "Audit".into(),
        secondary: None,
    };
    for regarding in request.into_iter().chain([spec.target.reference()]) {
        if let Err(error) = context.recorder.publish(&event, &regarding).await {
            tracing::debug!(%error, "could not publish an Event");
        }
    }
}
