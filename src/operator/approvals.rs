//! The DeploymentApproval controller: keeps each request's status true to its reviews
//! (`core::approval::status::plan_status`), confirms the rollout of an admitted change from its live
//! target (`core::rollout::confirm::plan_rollout`), records the audit trail, and comes back exactly
//! when a deadline falls (an expiry, the rollout timeout), not by polling.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use kube::Resource;

use super::audit::record;
use super::{Context, ReconcileError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::grants;
use crate::api::{ApprovalPhase, DeployTokenStatus, DeploymentApproval};
use crate::cluster::snapshot::Snapshot;
use crate::cluster::status::apply_status;
use crate::core::admission::decision::approval_state;
use crate::core::approval::chain::ChainState;
use crate::core::approval::seal::{
    SealCheck, check as check_seal, marked_unverified, verified_condition,
};
use crate::core::approval::status::plan_status;
use crate::core::audit::trail::trail;
use crate::core::notify::merge_records;
use crate::core::policy::matching::policy_named;
use crate::core::rollout::confirm::{
    LiveTarget, approval_ignore_fields, plan_rollout, watches_rollout,
};
use crate::core::rollout::token::{GrantAction, plan_grant};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

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
    let namespace = stored.namespace().unwrap_or_default();
    // A summary that is not countersign's own is shown as unverified wherever it goes:
    // the trail, the notices, the Events and the status (`core::approval::seal`).
    let seal = check_seal(&context.seal_key, &namespace, &stored.spec);
    let approval = Arc::new(as_shown(&stored, seal));
    let bindings = context.snapshot.bindings();
    let state = approval_state(&approval, &namespace, &bindings, now);
    // What the stored state implies is recorded, announced and granted before the state
    // moves on: the trail, the notices (a delivery recorded in the status written below),
    // and the deploy token.
    record_trail(&approval, &context, &state, now).await?;
    // The cache may not show this replica's last status write yet: what it delivered
    // moments ago counts as delivered, so a reconcile right after does not send it again.
    let remembered = context.deliveries.recalled(&approval, now);
    let round = if remembered.is_empty() {
        context.notifier.deliver_due(&approval, &state, now).await
    } else {
        let mut view = (*approval).clone();
        let status = view.status.get_or_insert_with(Default::default);
        status.notifications = merge_records(&status.notifications, &remembered);
        context.notifier.deliver_due(&view, &state, now).await
    };
    context
        .deliveries
        .remember(&approval, &round.notifications, now);
    context.metrics.notifications(round.delivered, round.failed);
    let grant = plan_grant(&approval, now);
    let deploy_token = carry_out(&context, &approval, &grant.action, now).await?;

    let deploying = approval
        .status
        .as_ref()
        .is_some_and(|s| s.phase == ApprovalPhase::Deploying);
    let (planned, next_deadline) = if deploying {
        let target = read_target(&context.cluster.client, &approval).await?;
        let live = match &target {
            TargetRead::NotWatched => LiveTarget::NotWatched,
            TargetRead::Missing => LiveTarget::Missing,
            TargetRead::Present(object) => LiveTarget::Present(object),
        };
        let policies = context.snapshot.policies();
        let policy_fields = policy_named(&policies, &approval.spec.policy.name)
            .map(|p| p.spec.effective_ignore_fields());
        let ignore_fields = approval_ignore_fields(&approval, policy_fields);
        let plan = plan_rollout(&approval, live, &ignore_fields, state.expires_at, now);
        (plan.write, plan.next_deadline)
    } else {
        let plan = plan_status(&approval, &state, now);
        (plan.write, plan.next_deadline)
    };
    let mut status = planned
        .or_else(|| approval.status.clone())
        .unwrap_or_default();
    status.notifications = round.notifications;
    status.deploy_token = deploy_token;
    upsert_condition(
        &mut status.conditions,
        verified_condition(seal, now, approval.metadata.generation),
    );
    if approval.status.as_ref() != Some(&status) {
        match apply_status(&context.cluster.client, &approval, &status).await {
            Ok(_) => {
                context.metrics.transition(&approval, &status, now);
                if deploying && status.phase != ApprovalPhase::Deploying {
                    crate::cluster::lock::release(
                        &context.cluster.client,
                        &context.cluster.install_namespace,
                        &approval,
                    )
                    .await;
                }
            }
            Err(kube::Error::Api(conflict)) if conflict.code == 409 => {
                // Someone wrote first (the webhook admitting the change): keep what was
                // delivered, so it is never sent again, and look at the fresh object.
                keep_deliveries(&context, &approval, &status).await?;
                return Ok(Action::requeue(Duration::ZERO));
            }
            Err(error) => return Err(ReconcileError::Write(object_name(&approval), error)),
        }
    }
    let next = [next_deadline, round.next_attempt, grant.next_deadline]
        .into_iter()
        .flatten()
        .min();
    Ok(match next {
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

/// The request as people are shown it: with its summary marked unverified unless its seal
/// is countersign's.
fn as_shown(approval: &DeploymentApproval, seal: SealCheck) -> DeploymentApproval {
    let mut shown = approval.clone();
    if !seal.verified() {
        shown.spec.change.summary = marked_unverified(&approval.spec.change.summary);
    }
    shown
}

/// Put `condition` in place of the one of its type, keeping its transition time while its
/// status does not change (API conventions).
fn upsert_condition(conditions: &mut Vec<Condition>, mut condition: Condition) {
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        if existing.status == condition.status {
            condition.last_transition_time = existing.last_transition_time.clone();
        }
        *existing = condition;
    } else {
        conditions.push(condition);
    }
}

/// Issue or revoke the deploy token as `action` says; the token's record for the status.
async fn carry_out(
    context: &Context,
    approval: &DeploymentApproval,
    action: &GrantAction,
    now: Timestamp,
) -> Result<Option<DeployTokenStatus>, ReconcileError> {
    let stored = approval
        .status
        .as_ref()
        .and_then(|s| s.deploy_token.clone());
    match action {
        GrantAction::Nothing => Ok(stored),
        GrantAction::Issue { ttl } => grants::issue(&context.cluster.client, approval, *ttl, now)
            .await
            .map(Some)
            .map_err(|e| ReconcileError::Grant(object_name(approval), e)),
        GrantAction::Revoke { reason } => {
            let Some(mut token) = stored else {
                return Ok(None);
            };
            grants::revoke(&context.cluster.client, approval, &token)
                .await
                .map_err(|e| ReconcileError::Grant(object_name(approval), e))?;
            tracing::info!(approval = %object_name(approval), %reason, "deploy token revoked");
            token.revoked_at = Some(Time(now));
            Ok(Some(token))
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
        let mut status = stored.clone();
        status.notifications = merge_records(&stored.notifications, &ours.notifications);
        // A token issued or revoked here stays on record.
        if ours.deploy_token.is_some()
            && (stored.deploy_token.is_none()
                || ours
                    .deploy_token
                    .as_ref()
                    .is_some_and(|t| t.revoked_at.is_some()))
        {
            status.deploy_token = ours.deploy_token.clone();
        }
        if status == stored {
            return Ok(());
        }
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
    let (group, version) = match target.api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", target.api_version.as_str()),
    };
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &target.kind));
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

/// Create the AuditEntries the request's durable state implies and that do not exist yet,
/// each with an Event on the request and on its target. `state` is its chain at `now`.
async fn record_trail(
    approval: &DeploymentApproval,
    context: &Context,
    state: &ChainState,
    now: Timestamp,
) -> Result<(), ReconcileError> {
    record(
        context,
        trail(approval, state, now),
        Some(approval.object_ref(&())),
    )
    .await
}
