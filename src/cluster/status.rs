//! Writing the status of countersign's own objects: a DeploymentApproval (the webhook's
//! move to `Deploying`, the operator's everything else), an ApprovalPolicy, an AuditEntry.
//! Server-side apply under one field manager, so each write owns the whole status and a
//! field left out is removed, and only over the version read (`metadata.resourceVersion`
//! in the applied object is a precondition), so two writers racing on one object are
//! serialized by the API server: the second gets a 409.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
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
    let api = Api::namespaced(client.clone(), &approval.namespace().unwrap_or_default());
    apply_status_of(&api, approval, status).await
}

/// Apply `status` to `object` (one of countersign's kinds, in `api`) as read; a 409 means
/// someone wrote it since.
pub async fn apply_status_of<K>(
    api: &Api<K>,
    object: &K,
    status: &impl Serialize,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let name = object.name_any();
    let namespace = object.namespace();
    let mut metadata = json!({ "name": name, "resourceVersion": object.resource_version() });
    if let Some(namespace) = &namespace {
        metadata["namespace"] = json!(namespace);
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
}
