//! Writing a DeploymentApproval's status, for the webhook (the move to `Deploying`) and the
//! operator (everything else): server-side apply under one field manager, so each write
//! owns the whole status and a field left out is removed, and only over the version read
//! (`metadata.resourceVersion` in the applied object is a precondition), so two writers
//! racing on one approval are serialized by the API server: the second gets a 409.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::api::{DeploymentApproval, DeploymentApprovalStatus};

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "countersign";

/// Apply `status` to `approval` as read; a 409 means someone wrote it since.
pub async fn apply_status(
    client: &Client,
    approval: &DeploymentApproval,
    status: &DeploymentApprovalStatus,
) -> Result<DeploymentApproval, kube::Error> {
    let namespace = approval.namespace().unwrap_or_default();
    let name = approval.name_any();
    let patch = json!({
        "apiVersion": "countersign.dev/v1alpha1",
        "kind": "DeploymentApproval",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": approval.resource_version(),
        },
        "status": status,
    });
    let api: Api<DeploymentApproval> = Api::namespaced(client.clone(), &namespace);
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
}
