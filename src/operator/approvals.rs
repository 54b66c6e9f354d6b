//! The DeploymentApproval controller, a shell around `core::approval::reconcile`: the core
//! plans what the stored request implies (its trail, the deploy token, whether its rollout
//! is confirmed); this records the trail, delivers the notices due, carries out the grant,
//! reads the live target, then writes the status the core plans from all that and comes
//! back exactly when a deadline falls (an expiry, the rollout timeout), not by polling.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use kube::api::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};

use super::audit::record;
use super::grants;
use super::{Context, ReconcileError};
use crate::api::{ApprovalPhase, DeploymentApproval};
use crate::cluster::snapshot::Snapshot;
use crate::cluster::status::apply_status;
use crate::core::approval::reconcile::{
    Carried, GrantDone, ReconcileSettings, as_delivered, close, kept_after_conflict, open,
};
use crate::core::rollout::confirm::{LiveTarget, watches_rollout};
use crate::core::rollout::token::GrantAction;

/// Run the controller until the future is dropped (when this replica stops leading).
/// Besides the approvals it watches the workloads whose rollouts it confirms: a change of
/// a Deployment, StatefulSet, DaemonSet or Job wakes the approvals `Deploying` on it.
pub async fn run(context: Arc<Context>) {
    let api: Api<DeploymentApproval> = Api::all(context.cluster.client.clone());
    let client = context.cluster.client.clone();
    let controller = Controller::new(api, watcher::Config::default());
    let controller = wake_on::<Deployment>(controller, &client, &context.snapshot);
    let controller = wake_on::<StatefulSet>(controller, &client, &context.snapshot);
    let controller = wake_on::<DaemonSet>(controller, &client, &context.snapshot);
    let controller = wake_on::<Job>(controller, &client, &context.snapshot);
    super::controller::run("approvals", controller, reconcile, context).await;
}

/// Reconcile the approvals rolling out on a workload of kind `K` whenever it changes.
fn wake_on<K>(
    controller: Controller<DeploymentApproval>,
    client: &Client,
    snapshot: &Snapshot,
) -> Controller<DeploymentApproval>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let snapshot = snapshot.clone();
    controller.watches(
        Api::<K>::all(client.clone()),
        watcher::Config::default(),
        move |workload: K| {
            let namespace = workload.namespace().unwrap_or_default();
            let name = workload.name_any();
            snapshot
                .approvals_for(&namespace, &name)
                .into_iter()
                .filter(|approval| {
                    approval.spec.target.kind == K::kind(&())
                        && approval
                            .status
                            .as_ref()
                            .is_some_and(|s| s.phase == ApprovalPhase::Deploying)
                })
                .map(|approval| ObjectRef::from_obj(&approval))
                .collect::<Vec<_>>()
        },
    )
}

async fn reconcile(
    stored: Arc<DeploymentApproval>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let now = Timestamp::now();
    let bindings = context.snapshot.bindings();
    let settings = ReconcileSettings {
        resumes_syncs: context.resumes_syncs,
    };
    let opening = open(&stored, &context.seal_key, &bindings, settings, now);
    let approval = &opening.shown;
    // What the stored state implies is recorded, announced and granted before the state
    // moves on: the trail, the notices (a delivery recorded in the status written below),
    // and the deploy token.
    record(
        &context,
        opening.entries.clone(),
        Some(approval.object_ref(&())),
    )
    .await?;
    let remembered = context.deliveries.recalled(approval, now);
    let view = as_delivered(approval, &remembered);
    let round = context
        .notifier
        .deliver_due(view.as_ref().unwrap_or(approval), &opening.state, now)
        .await;
    context
        .deliveries
        .remember(approval, &round.notifications, now);
    context.metrics.notifications(round.delivered, round.failed);
    let grant = carry_out(&context, approval, &opening.grant, now).await?;
    let target = if opening.confirms_rollout {
        read_target(&context.cluster.client, approval).await?
    } else {
        TargetRead::NotWatched
    };
    let resumed = match &opening.resume {
        None => None,
        Some(origin) => Some(
            crate::cluster::gitops::request_reconcile(
                &context.cluster.client,
                origin,
                &object_name(approval),
                now,
            )
            .await
            .map_err(|error| ReconcileError::Resume(object_name(approval), error))?,
        ),
    };
    let policies = context.snapshot.policies();
    let carried = Carried {
        resumed,
        notifications: round.notifications,
        next_attempt: round.next_attempt,
        grant,
        live: match &target {
            TargetRead::NotWatched => LiveTarget::NotWatched,
            TargetRead::Missing => LiveTarget::Missing,
            TargetRead::Present(object) => LiveTarget::Present(object),
        },
        policies: &policies,
    };
    let closing = close(&opening, carried, now);
    if let Some(status) = &closing.write {
        match apply_status(&context.cluster.client, approval, status).await {
            Ok(_) => {
                context.metrics.transition(approval, status, now);
                if closing.releases_lock {
                    crate::cluster::lock::release(
                        &context.cluster.client,
                        &context.cluster.install_namespace,
                        approval,
                    )
                    .await;
                }
            }
            Err(kube::Error::Api(conflict)) if conflict.code == 409 => {
                // Someone wrote first (the webhook admitting the change): keep what was
                // delivered, so it is never sent again, and look at the fresh object.
                keep_deliveries(&context, approval, status).await?;
                return Ok(Action::requeue(Duration::ZERO));
            }
            Err(error) => return Err(ReconcileError::Write(object_name(approval), error)),
        }
    }
    Ok(match closing.next_deadline {
        Some(deadline) => {
            let wait = deadline.duration_since(Timestamp::now());
            // Just past the deadline, so what it changes is already true when it runs.
            Action::requeue(
                Duration::try_from(wait).unwrap_or_default() + Duration::from_millis(50),
            )
        }
        None => Action::await_change(),
    })
}

/// Issue or revoke the deploy token as `action` says.
async fn carry_out(
    context: &Context,
    approval: &DeploymentApproval,
    action: &GrantAction,
    now: Timestamp,
) -> Result<GrantDone, ReconcileError> {
    let stored = approval
        .status
        .as_ref()
        .and_then(|s| s.deploy_token.as_ref());
    let failed = |e| ReconcileError::Grant(object_name(approval), e);
    match action {
        GrantAction::Nothing => Ok(GrantDone::Unchanged),
        GrantAction::Issue { ttl } => grants::issue(&context.cluster.client, approval, *ttl, now)
            .await
            .map(GrantDone::Issued)
            .map_err(failed),
        GrantAction::Revoke { reason } => {
            let Some(token) = stored else {
                return Ok(GrantDone::Unchanged);
            };
            grants::revoke(&context.cluster.client, approval, token)
                .await
                .map_err(failed)?;
            tracing::info!(approval = %object_name(approval), %reason, "deploy token revoked");
            Ok(GrantDone::Revoked)
        }
    }
}

/// Merge what this reconcile did (notification records, the deploy token) into the fresh
/// status of `approval`, retrying while others write.
async fn keep_deliveries(
    context: &Context,
    approval: &DeploymentApproval,
    ours: &crate::api::DeploymentApprovalStatus,
) -> Result<(), ReconcileError> {
    let api: Api<DeploymentApproval> = Api::namespaced(
        context.cluster.client.clone(),
        &approval.namespace().unwrap_or_default(),
    );
    let mut last = None;
    for _ in 0..5 {
        let fresh = api
            .get(&approval.name_any())
            .await
            .map_err(|e| ReconcileError::Write(object_name(approval), e))?;
        let stored = fresh.status.clone().unwrap_or_default();
        let Some(status) = kept_after_conflict(&stored, ours) else {
            return Ok(());
        };
        match apply_status(&context.cluster.client, &fresh, &status).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(conflict)) if conflict.code == 409 => {
                last = Some(kube::Error::Api(conflict));
            }
            Err(error) => return Err(ReconcileError::Write(object_name(approval), error)),
        }
    }
    match last {
        Some(error) => Err(ReconcileError::Write(object_name(approval), error)),
        None => Ok(()),
    }
}

/// The target of an admitted change, as it is now.
enum TargetRead {
    NotWatched,
    Missing,
    Present(serde_json::Value),
}

/// Read the target of `approval` live (the rollout is judged on the object as it is, not
/// on a cache that may lag the admission).
async fn read_target(
    client: &Client,
    approval: &DeploymentApproval,
) -> Result<TargetRead, ReconcileError> {
    let target = &approval.spec.target;
    if !watches_rollout(&target.api_version, &target.kind) {
        return Ok(TargetRead::NotWatched);
    }
    let resource = crate::cluster::api_resource(&target.api_version, &target.kind);
    let namespace = approval.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
    let object = api
        .get_opt(&target.name)
        .await
        .map_err(|e| ReconcileError::ReadTarget(object_name(approval), e))?;
    Ok(match object {
        None => TargetRead::Missing,
        Some(object) => TargetRead::Present(serde_json::to_value(object).map_err(|e| {
            ReconcileError::ReadTarget(object_name(approval), kube::Error::SerdeError(e))
        })?),
    })
}

fn object_name(approval: &DeploymentApproval) -> String {
    format!(
        "{}/{}",
        approval.namespace().unwrap_or_default(),
        approval.name_any()
    )
}
