//! Asking a GitOps controller to apply again (`core::approval::reconcile`'s resume): Flux
//! reconciles a Kustomization at once when its `reconcile.fluxcd.io/requestedAt`
//! annotation changes, as `flux reconcile kustomization` does.

use jiff::Timestamp;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;

use super::calls::{WriteError, bounded};
use crate::api::ChangeOrigin;
use crate::core::admission::sync::KUSTOMIZATION_API_VERSION;

/// Flux's annotation that asks for a reconcile now.
pub const FLUX_REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

/// Ask the controller of `origin` to apply again. `Ok(false)`: its object is gone (or not a
/// kind countersign knows how to resume).
pub async fn request_reconcile(
    client: &kube::Client,
    origin: &ChangeOrigin,
    now: Timestamp,
) -> Result<bool, WriteError> {
    if origin.api_version != KUSTOMIZATION_API_VERSION || origin.kind != "Kustomization" {
        return Ok(false);
    }
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
    ));
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &origin.namespace, &resource);
    let patch = json!({ "metadata": { "annotations": { FLUX_REQUESTED_AT: now.to_string() } } });
    match bounded(api.patch(&origin.name, &PatchParams::default(), &Patch::Merge(&patch))).await {
        Ok(_) => Ok(true),
        Err(WriteError::Api(kube::Error::Api(response))) if response.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}
