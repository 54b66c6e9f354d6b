//! The ApprovalPolicy controller: reports in each policy's status whether it is in force
//! (`core::policy::validation::policy_status`), and records its creation and each spec change in
//! the audit trail with the author countersign's webhook stamped
//! (`core::policy::authorship::policy_entry`).

use std::sync::Arc;

use jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};

use super::audit::record;
use super::{Context, ReconcileError};
use crate::api::ApprovalPolicy;
use crate::cluster::status::apply_status_of;
use crate::core::policy::authorship::policy_entry;
use crate::core::policy::validation::policy_status;

/// Run the controller until the future is dropped.
pub async fn run(context: Arc<Context>) {
    let api: Api<ApprovalPolicy> = Api::all(context.cluster.client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    super::controller::run("policies", controller, reconcile, context).await;
}

async fn reconcile(
    policy: Arc<ApprovalPolicy>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let entries = policy_entry(&policy).into_iter().collect();
    record(&context, entries, Some(policy.object_ref(&()))).await?;
    let status = policy_status(&policy, Timestamp::now());
    if policy.status.as_ref() != Some(&status) {
        let api = Api::<ApprovalPolicy>::all(context.cluster.client.clone());
        apply_status_of(&api, &*policy, &status)
            .await
            .map_err(|e| ReconcileError::Write(policy.name_any(), e))?;
    }
    Ok(Action::await_change())
}
