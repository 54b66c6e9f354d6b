//! The change lock's Lease (`core::rollout::lock`): taken by the webhook as it admits an
//! approved change, at the version it read; deleted by the operator when the rollout ends.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};

use super::calls::{WriteError, bounded};
use crate::api::{AuditTarget, DeploymentApproval};
use crate::core::audit::trail::request_target;
use crate::core::change::api_group;
use crate::core::rollout::lock::{
    HolderState, LOCK_LABEL, LockState, LockVerdict, judge_lock, lock_name, releases,
};

/// A lock Lease as the core reads it.
pub fn lock_state(lease: &Lease) -> LockState {
    let spec = lease.spec.as_ref();
    LockState {
        holder: spec
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default(),
        acquired_at: spec.and_then(|s| s.acquire_time.as_ref()).map(|t| t.0),
    }
}

fn target_lock(target: &AuditTarget) -> String {
    lock_name(
        api_group(&target.api_version),
        &target.kind,
        target.namespace.as_deref().unwrap_or_default(),
        &target.name,
    )
}

/// Take `target`'s lock for `approval` (`<namespace>/<name>`): read the Lease and, when
/// another approval holds it, that approval; judge (`core::rollout::lock`); then create or
/// replace the Lease at the version read. Of two admissions racing for one object, the
/// API server lets one write (the other gets a conflict).
pub async fn take(
    client: &Client,
    install_namespace: &str,
    target: &AuditTarget,
    approval: &str,
    digest: &str,
) -> Result<LockVerdict, WriteError> {
    let name = target_lock(target);
    let leases: Api<Lease> = Api::namespaced(client.clone(), install_namespace);
    let stored = bounded(leases.get_opt(&name)).await?;
    let lock = stored.as_ref().map(lock_state);
    let holder = match &lock {
        Some(lock) if lock.holder != approval => Some(holder_state(client, &lock.holder).await?),
        _ => None,
    };
    let verdict = judge_lock(lock.as_ref(), holder, approval, Timestamp::now());
    if verdict != LockVerdict::Take {
        return Ok(verdict);
    }
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(install_namespace.to_string()),
            resource_version: stored
                .as_ref()
                .and_then(|l| l.metadata.resource_version.clone()),
            labels: Some([(LOCK_LABEL.to_string(), "true".to_string())].into()),
            annotations: Some(
                [
                    (
                        "countersign.dev/target".to_string(),
                        format!(
                            "{} {}/{}",
                            target.kind,
                            target.namespace.as_deref().unwrap_or_default(),
                            target.name
                        ),
                    ),
                    ("countersign.dev/digest".to_string(), digest.to_string()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(approval.to_string()),
            acquire_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    match stored {
        None => bounded(leases.create(&PostParams::default(), &lease)).await?,
        Some(_) => bounded(leases.replace(&name, &PostParams::default(), &lease)).await?,
    };
    Ok(LockVerdict::Take)
}

/// Where the approval `<namespace>/<name>` holding a lock stands, read live.
async fn holder_state(client: &Client, holder: &str) -> Result<HolderState, WriteError> {
    let Some((namespace, name)) = holder.split_once('/') else {
        return Ok(HolderState::Gone);
    };
    let api: Api<DeploymentApproval> = Api::namespaced(client.clone(), namespace);
    Ok(match bounded(api.get_opt(name)).await? {
        None => HolderState::Gone,
        Some(approval) => HolderState::Phase(approval.phase()),
    })
}

/// Delete the lock of `approval`'s target once its rollout ended, if it still holds it (at
/// the version read, so a lock taken since is left alone). A lock left behind is harmless:
/// a holder that is not Deploying holds nothing.
pub async fn release(client: &Client, install_namespace: &str, approval: &DeploymentApproval) {
    let namespace = approval.metadata.namespace.clone().unwrap_or_default();
    let name = target_lock(&request_target(approval));
    let leases: Api<Lease> = Api::namespaced(client.clone(), install_namespace);
    let lease = match leases.get_opt(&name).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return,
        Err(error) => {
            tracing::debug!(%error, lock = name, "could not read the change lock");
            return;
        }
    };
    let holder = format!(
        "{namespace}/{}",
        approval.metadata.name.as_deref().unwrap_or_default()
    );
    if !releases(&lock_state(&lease), &holder) {
        return;
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: lease.metadata.resource_version.clone(),
            uid: lease.metadata.uid.clone(),
        }),
        ..DeleteParams::default()
    };
    if let Err(error) = leases.delete(&name, &params).await {
        tracing::debug!(%error, lock = name, "could not release the change lock");
    }
}
