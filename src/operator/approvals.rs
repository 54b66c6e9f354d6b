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

use crate::api::DeploymentApproval;
use crate::core::status::plan_status;
use crate::webhook::snapshot::Snapshot;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// RoleBindings for role approvers, from the same caches the webhook uses.
    pub snapshot: Snapshot,
}

/// Why a reconcile did not finish; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("writing the status of {0}: {1}")]
    Write(String, #[source] kube::Error),
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

fn error_policy(
    _approval: Arc<DeploymentApproval>,
    _error: &ReconcileError,
    _context: Arc<Context>,
) -> Action {
    // A conflict means someone wrote first: look again at once; anything else, shortly.
    Action::requeue(Duration::from_millis(500))
}
