//! Asking a GitOps controller to apply again (`core::approval::reconcile`'s resume):
//! Flux reconciles a Kustomization at once when its `reconcile.fluxcd.io/requestedAt`
//! annotation changes, as `flux reconcile kustomization` does; Argo CD starts a sync when
//! an Application is given an `operation`, as `argocd app sync` does
//! (`core::admission::sync::argo_resume` says which).

use jiff::Timestamp;
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::json;

use super::calls::{WriteError, bounded};
use crate::api::ChangeOrigin;
use crate::core::admission::sync::{
    ARGOCD_APPLICATION_API_VERSION, ArgoResume, KUSTOMIZATION_API_VERSION, argo_resume,
};
use crate::core::approval::reconcile::ResumeDone;

/// Flux's annotation that asks for a reconcile now.
pub const FLUX_REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

/// Ask the controller of `origin` to apply again, for approval `approval`
/// (`<namespace>/<name>`).
pub async fn request_reconcile(
    client: &kube::Client,
    origin: &ChangeOrigin,
    approval: &str,
    now: Timestamp,
) -> Result<ResumeDone, WriteError> {
    let (api_version, kind) = (origin.api_version.as_str(), origin.kind.as_str());
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &origin.namespace,
        &super::api_resource(api_version, kind),
    );
    let found = if (api_version, kind) == (KUSTOMIZATION_API_VERSION, "Kustomization") {
        let patch =
            json!({ "metadata": { "annotations": { FLUX_REQUESTED_AT: now.to_string() } } });
        bounded(api.patch(&origin.name, &PatchParams::default(), &Patch::Merge(&patch)))
            .await
            .map(|_| ResumeDone::Requested)
    } else if (api_version, kind) == (ARGOCD_APPLICATION_API_VERSION, "Application") {
        start_argo_sync(&api, &origin.name, approval).await
    } else {
        return Ok(ResumeDone::SourceGone);
    };
    match found {
        Err(WriteError::Api(kube::Error::Api(response))) if response.code == 404 => {
            Ok(ResumeDone::SourceGone)
        }
        other => other,
    }
}

/// Start a sync of Application `name` unless one is running; a write that lost to another
/// (409) reads again, a few times.
async fn start_argo_sync(
    api: &Api<DynamicObject>,
    name: &str,
    approval: &str,
) -> Result<ResumeDone, WriteError> {
    let mut attempts = 0;
    loop {
        let application = bounded(api.get(name)).await?;
        let value = serde_json::to_value(&application).map_err(kube::Error::SerdeError)?;
        let patch = match argo_resume(&value, approval) {
            ArgoResume::Running => return Ok(ResumeDone::Running),
            ArgoResume::Start(patch) => patch,
        };
        match bounded(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))).await {
            Ok(_) => return Ok(ResumeDone::Requested),
            Err(WriteError::Conflict(_)) if attempts < 3 => attempts += 1,
            Err(error) => return Err(error),
        }
    }
}
