//! The DeploymentApproval controller: keeps each request's status true to its reviews
//! (`core::status::plan_status`), and comes back exactly when a request or an approval
//! expires, not by polling.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use std::collections::HashSet;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

use crate::api::{AuditAction, AuditEntry, AuditEntrySpec, DeploymentApproval};
use crate::core::audit::trail;
use crate::core::decision::approval_state;
use crate::core::status::plan_status;
use crate::webhook::snapshot::Snapshot;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// RoleBindings for role approvers, from the same caches the webhook uses.
    pub snapshot: Snapshot,
    /// Where the audit trail is kept.
    pub install_namespace: String,
    pub recorder: Recorder,
    /// AuditEntries known to exist, so a reconcile does not create them again; after a
    /// restart the names, not this set, prevent duplicates.
    pub written: Mutex<HashSet<String>>,
}

/// Why a reconcile did not finish; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("writing the status of {0}: {1}")]
    Write(String, #[source] kube::Error),
    #[error("writing AuditEntry {0}: {1}")]
    Audit(String, #[source] kube::Error),
}

/// Run the controller until the future is dropped (when this replica stops leading).
pub async fn run(context: Arc<Context>) {
    let api: Api<DeploymentApproval> = Api::all(context.client.clone());
    Controller::new(api, watcher::Config::default())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile failed; retrying");
            }
        })
        .await;
}

async fn reconcile(
    approval: Arc<DeploymentApproval>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let now = Timestamp::now();
    let plan = plan_status(&approval, &context.snapshot.bindings(), now);
    if let Some(status) = plan.write {
        let namespace = approval.namespace().unwrap_or_default();
        let name = approval.name_any();
        let mut updated = (*approval).clone();
        updated.status = Some(status);
        updated.metadata.managed_fields = None;
        // Only over the version read: the webhook may have just moved it to Deploying.
        let api: Api<DeploymentApproval> = Api::namespaced(context.client.clone(), &namespace);
        api.replace_status(&name, &PostParams::default(), &updated)
            .await
            .map_err(|e| ReconcileError::Write(format!("{namespace}/{name}"), e))?;
    }
    record_trail(&approval, &context, now).await?;
    Ok(match plan.next_deadline {
        Some(deadline) => {
            let wait = deadline.duration_since(Timestamp::now());
            // Just past the deadline, so the expiry is already true when it runs.
            Action::requeue(
                Duration::try_from(wait).unwrap_or_default() + Duration::from_millis(50),
            )
        }
        None => Action::await_change(),
    })
}

/// Create the AuditEntries the request's durable state implies and that do not exist yet,
/// each with an Event on the request and on its target.
async fn record_trail(
    approval: &DeploymentApproval,
    context: &Context,
    now: Timestamp,
) -> Result<(), ReconcileError> {
    let namespace = approval.namespace().unwrap_or_default();
    let state = approval_state(approval, &namespace, &context.snapshot.bindings(), now);
    let entries = trail(approval, &state, now);
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
            publish(context, approval, &entry.spec).await;
        }
        if let Ok(mut written) = context.written.lock() {
            written.insert(entry.name);
        }
    }
    Ok(())
}

/// The Events of one audited step, on the request and on its target.
async fn publish(context: &Context, approval: &DeploymentApproval, spec: &AuditEntrySpec) {
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
            AuditAction::Rejected | AuditAction::Expired | AuditAction::RolloutFailed => {
                EventType::Warning
            }
            _ => EventType::Normal,
        },
        reason: format!("{:?}", spec.action),
        note: Some(note.chars().take(1000).collect()),
        action: "Audit".into(),
        secondary: None,
    };
    let target = ObjectReference {
        api_version: Some(spec.target.api_version.clone()),
        kind: Some(spec.target.kind.clone()),
        namespace: spec.target.namespace.clone(),
        name: Some(spec.target.name.clone()),
        uid: spec.target.uid.clone(),
        ..ObjectReference::default()
    };
    for regarding in [approval.object_ref(&()), target] {
        if let Err(error) = context.recorder.publish(&event, &regarding).await {
            tracing::debug!(%error, "could not publish an Event");
        }
    }
}

fn error_policy(
    _approval: Arc<DeploymentApproval>,
    _error: &ReconcileError,
    _context: Arc<Context>,
) -> Action {
    // A conflict means someone wrote first: look again at once; anything else, shortly.
    Action::requeue(Duration::from_millis(500))
}
