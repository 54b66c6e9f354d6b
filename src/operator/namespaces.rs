//! Keeps the `countersign.dev/gated` label on exactly the namespaces some policy can gate
//! (`core::policy::matching::gated_label_patch`), so the workload webhook is sent nothing else: while
//! countersign is down, the rest of the cluster is untouched. The mutating webhook sets the
//! label on each write of a namespace; this controller puts it right after a policy changes
//! and after countersign was down.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::{Context, ReconcileError};
use crate::cluster::status::FIELD_MANAGER;
use crate::core::policy::matching::gated_label_patch;
use crate::install::webhooks::excluded_namespaces;

/// Run the controller until the future is dropped. Any change of the snapshot's policies
/// looks at every namespace again, once the change is in the snapshot it reads them from.
pub async fn run(context: Arc<Context>) {
    let api: Api<Namespace> = Api::all(context.cluster.client.clone());
    let controller = Controller::new(api, watcher::Config::default())
        .reconcile_all_on(context.snapshot.policy_changes());
    super::controller::run("namespaces", controller, reconcile, context).await;
}

async fn reconcile(
    namespace: Arc<Namespace>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let name = namespace.name_any();
    if excluded_namespaces(&context.cluster.install_namespace).contains(&name) {
        return Ok(Action::await_change());
    }
    let object = serde_json::to_value(&*namespace).unwrap_or_default();
    let operations = gated_label_patch(
        &context.snapshot.policies(),
        &object,
        context.cluster_region.as_deref(),
    );
    if operations.is_empty() {
        return Ok(Action::await_change());
    }
    // Over the version read: a write in between is judged again by the mutating webhook.
    let mut with_version = vec![serde_json::json!({
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": namespace.resource_version(),
    })];
    with_version.extend(operations);
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(with_version))
            .map_err(|e| ReconcileError::Write(name.clone(), kube::Error::SerdeError(e)))?;
    Api::<Namespace>::all(context.cluster.client.clone())
        .patch(
            &name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::<()>::Json(patch),
        )
        .await
        .map_err(|e| ReconcileError::Write(name.clone(), e))?;
    tracing::info!(namespace = %name, "gated label put right");
    Ok(Action::await_change())
}
