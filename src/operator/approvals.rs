//! The DeploymentApproval controller, a shell around `core::approval::reconcile`: the core
//! plans what the stored request implies (its trail, the deploy token, whether its rollout
//! is confirmed); this records the trail, delivers the notices due, carries out the grant,
//! reads the live target, then writes the status the core plans from all that and comes
//! back exactly when a deadline falls (an expiry, the rollout timeout), not by polling.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DynamicObject, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::broadcast::error::RecvError;

use super::audit::record;
use super::grants;
use super::{Context, ReconcileError};
use crate::api::{ApprovalPhase, ChangeSet, DeploymentApproval, SET_LABEL};
use crate::cluster::approval_index::{ApprovalName, Touched, named};
use crate::cluster::snapshot::Snapshot;
use crate::cluster::status::{apply_status, apply_status_of};
use crate::core::approval::reconcile::{
    Carried, GrantDone, Opening, ReconcileSettings, as_delivered, close, kept_after_conflict, open,
    open_set,
};
use crate::core::rollout::confirm::{LiveTarget, watches_rollout};
use crate::core::rollout::token::GrantAction;
use crate::notify::NotificationRound;

/// Run the controller until the future is dropped (when this replica stops leading).
/// It is driven from the one approvals cache (`cluster::approval_index`), not a watch of
/// its own. Besides the approvals it watches the workloads whose rollouts it confirms (their
/// metadata only): a change of a Deployment, StatefulSet, DaemonSet or Job wakes the
/// approvals `Deploying` on it.
pub async fn run(context: Arc<Context>) {
    let index = context.snapshot.approval_index();
    let client = context.cluster.client.clone();
    let finished = Arc::new(Finished::default());
    let controller = Controller::for_stream(
        every_then_changed(context.clone(), finished.clone()),
        index.names(),
    );
    let controller = wake_on::<Deployment>(controller, &client, &context.snapshot);
    let controller = wake_on::<StatefulSet>(controller, &client, &context.snapshot);
    let controller = wake_on::<DaemonSet>(controller, &client, &context.snapshot);
    let controller = wake_on::<Job>(controller, &client, &context.snapshot);
    // A set's reviews decide its members: its change wakes each request it lists.
    let controller = controller.watches(
        Api::<ChangeSet>::all(client.clone()),
        watcher::Config::default(),
        |set: ChangeSet| {
            let namespace = set.namespace().unwrap_or_default();
            set.spec
                .members
                .iter()
                .map(|m| ObjectRef::new(&m.request).within(&namespace))
                .collect::<Vec<_>>()
        },
    );
    // ... and a member's change wakes its set.
    let sets = Controller::new(Api::<ChangeSet>::all(client), watcher::Config::default())
        .reconcile_on(member_sets(index.changes()));
    let counted = move |name: Arc<ApprovalName>, context: Arc<Context>| {
        let finished = finished.clone();
        async move {
            let result = reconcile(name, context).await;
            finished.one_more();
            result
        }
    };
    tokio::join!(
        super::controller::run("approvals", controller, counted, context.clone()),
        super::controller::run("changesets", sets, reconcile_set, context),
    );
}

/// How many names the start (or a start over) hands the controller ahead of the
/// reconciles it has finished. The controller's queue takes whatever it is given at once
/// and keeps the capacity after: fed all 10,000 requests of a large cluster, it held
/// megabytes for good. Paced, it holds a few lanes' worth.
const START_AHEAD: usize = 4 * super::controller::RECONCILE_CONCURRENCY as usize;

/// The longest the start waits for a reconcile to finish before it hands over more names
/// anyway: a name the queue merged with one already waiting is never counted, so the
/// pace is a bound on memory, never a stop.
const START_PATIENCE: Duration = Duration::from_secs(1);

/// The longest the start waits for the trail to be learned (`operator::audit`): until
/// then each planned entry not written by this process costs a create answered 409 and a
/// read, which at 10,000 requests was most of a start's work. Changes do not wait.
const START_LEARNING_PATIENCE: Duration = Duration::from_secs(120);

/// Reconciles finished, counted for the start's pace.
#[derive(Default)]
struct Finished {
    count: std::sync::atomic::AtomicUsize,
    more: tokio::sync::Notify,
}

impl Finished {
    fn one_more(&self) {
        self.count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.more.notify_waiters();
    }

    fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Resolves once fewer than `ahead` of `handed` names are unfinished (counted from
    /// `base`), or after [`START_PATIENCE`].
    async fn caught_up(&self, base: usize, handed: usize, ahead: usize) {
        let deadline = tokio::time::Instant::now() + START_PATIENCE;
        loop {
            let more = self.more.notified();
            if handed < self.count().saturating_sub(base) + ahead {
                return;
            }
            if tokio::time::timeout_at(deadline, more).await.is_err() {
                return;
            }
        }
    }
}

/// Every cached approval once, then each that changes; after falling behind, every one
/// again (a reconcile of an unchanged request writes nothing). Every one is handed over
/// at the pace reconciles finish ([`START_AHEAD`]), once the trail is learned
/// ([`START_LEARNING_PATIENCE`]); each change at once.
fn every_then_changed(
    context: Arc<Context>,
    finished: Arc<Finished>,
) -> impl futures::Stream<Item = Result<ApprovalName, watcher::Error>> + Send + 'static {
    let index = context.snapshot.approval_index();
    // Subscribed before the names are read, so no change falls between the two.
    let changes = index.changes();
    let names = index.names();
    let (names_at_start, finished_at_start) = (names.clone(), finished.clone());
    let every = move |names: &kube::runtime::reflector::Store<ApprovalName>,
                      finished: Arc<Finished>| {
        let all = names.state();
        let base = finished.count();
        futures::stream::unfold(0, move |handed| {
            let name = all.get(handed).map(|name| (**name).clone());
            let finished = finished.clone();
            async move {
                let name = name?;
                finished.caught_up(base, handed, START_AHEAD).await;
                Some((Ok(name), handed + 1))
            }
        })
        .boxed()
    };
    let learned = async move {
        let learned = context.known_entries.learned();
        if tokio::time::timeout(START_LEARNING_PATIENCE, learned)
            .await
            .is_err()
        {
            tracing::warn!("the audit trail is not learned yet; reconciling every request anyway");
        }
    };
    let first = futures::stream::once(learned)
        .map(move |()| every(&names_at_start, finished_at_start.clone()))
        .flatten();
    let then = futures::stream::unfold(
        (changes, names, finished),
        move |(mut changes, names, finished)| async move {
            loop {
                match changes.recv().await {
                    Ok(touched) if touched.deleted => continue,
                    Ok(touched) => {
                        let name = named(&touched.namespace, &touched.name);
                        let one = futures::stream::iter(vec![Ok(name)]).boxed();
                        return Some((one, (changes, names, finished)));
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::info!(missed, "approval changes came faster than the controller took them; reconciling every request");
                        let again = every(&names, finished.clone());
                        return Some((again, (changes, names, finished)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    )
    .flatten();
    // Side by side: a change made while the start is handed over is not kept waiting.
    futures::stream::select(first, then)
}

/// The change sets whose members changed (or went), from the approvals cache.
fn member_sets(
    changes: tokio::sync::broadcast::Receiver<Touched>,
) -> impl futures::Stream<Item = ObjectRef<ChangeSet>> + Send + 'static {
    futures::stream::unfold(changes, |mut changes| async move {
        loop {
            match changes.recv().await {
                Ok(Touched {
                    change_set: Some(set),
                    namespace,
                    ..
                }) => return Some((ObjectRef::new(&set).within(&namespace), changes)),
                // What a lag dropped, the sets' own watch covers when they change.
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

/// Reconcile the approvals rolling out on a workload of kind `K` whenever it changes.
/// Only the workloads' metadata is watched: their name is all the mapping reads.
fn wake_on<K>(
    controller: Controller<ApprovalName>,
    client: &Client,
    snapshot: &Snapshot,
) -> Controller<ApprovalName>
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
    let workloads = watcher(
        Api::<PartialObjectMeta<K>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    controller.watches_stream(workloads, move |workload: PartialObjectMeta<K>| {
        let namespace = workload.namespace().unwrap_or_default();
        let name = workload.name_any();
        snapshot
            .approvals_in_phase_for(&namespace, &name, ApprovalPhase::Deploying)
            .into_iter()
            .filter(|approval| approval.spec.target.kind == K::kind(&()))
            .map(|approval| ObjectRef::new(&approval.name_any()).within(&namespace))
            .collect::<Vec<_>>()
    })
}

async fn reconcile(
    name: Arc<ApprovalName>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = name.namespace().unwrap_or_default();
    let Some(stored) = context.snapshot.approval(&namespace, &name.name_any()) else {
        // Deleted since it was scheduled.
        return Ok(Action::await_change());
    };
    let now = Timestamp::now();
    let bindings = context.snapshot.bindings();
    // A member of a change set is judged with its set's reviews, read live: the set's
    // change is what woke this member, and the cache may not have it yet.
    let set = match &stored.spec.change_set {
        Some(name) => read_set(&context.cluster.client, &stored, name).await?,
        None => None,
    };
    let opening = open(
        &stored,
        set.as_ref(),
        &context.seal_key,
        &bindings,
        reconcile_settings(&context),
        now,
    );
    carry_out_opening(&context, opening, Subject::Request, now).await
}

/// Reconcile a change set: as one request (its chain, trail, notices, resume), over its
/// own status; its members follow it through their own reconciles.
async fn reconcile_set(
    stored: Arc<ChangeSet>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let now = Timestamp::now();
    let bindings = context.snapshot.bindings();
    let members = read_members(&context.cluster.client, &stored).await?;
    let opening = open_set(
        &stored,
        &members,
        &context.seal_key,
        &bindings,
        reconcile_settings(&context),
        now,
    );
    carry_out_opening(&context, opening, Subject::Set(stored), now).await
}

fn reconcile_settings(context: &Context) -> ReconcileSettings {
    ReconcileSettings {
        resumes_syncs: context.resumes_syncs,
    }
}

/// What a reconcile's status is written to.
enum Subject {
    Request,
    /// A change set (the opening shows it as one request).
    Set(Arc<ChangeSet>),
}

/// Carry out `opening`: record the trail, deliver the notices due (when it announces),
/// carry out the grant, read the live target, resume the sync, then write the status the
/// core plans from all that.
async fn carry_out_opening(
    context: &Context,
    opening: Opening,
    subject: Subject,
    now: Timestamp,
) -> Result<Action, ReconcileError> {
    let approval = &opening.shown;
    // What the stored state implies is recorded, announced and granted before the state
    // moves on: the trail, the notices (a delivery recorded in the status written below),
    // and the deploy token.
    record(
        context,
        opening.entries.clone(),
        Some(object_ref(approval, &subject)),
    )
    .await?;
    let round = if opening.announces {
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
        round
    } else {
        NotificationRound {
            notifications: approval
                .status
                .as_ref()
                .map(|s| s.notifications.clone())
                .unwrap_or_default(),
            ..NotificationRound::default()
        }
    };
    let grant = carry_out(context, approval, &opening.grant, now).await?;
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
        let written = match &subject {
            Subject::Request => apply_status(&context.cluster.client, approval, status)
                .await
                .map(drop),
            Subject::Set(set) => apply_status_of(&sets_api(context, set), set.as_ref(), status)
                .await
                .map(drop),
        };
        match written {
            Ok(()) => {
                if let Subject::Request = subject {
                    context.metrics.transition(approval, status, now);
                }
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
                match &subject {
                    Subject::Request => keep_deliveries(context, approval, status).await?,
                    Subject::Set(set) => keep_set_deliveries(context, set, status).await?,
                }
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

/// The object the trail's Events are published on: the request, or the set.
fn object_ref(
    approval: &DeploymentApproval,
    subject: &Subject,
) -> k8s_openapi::api::core::v1::ObjectReference {
    match subject {
        Subject::Request => approval.object_ref(&()),
        Subject::Set(set) => set.object_ref(&()),
    }
}

fn sets_api(context: &Context, set: &ChangeSet) -> Api<ChangeSet> {
    Api::namespaced(
        context.cluster.client.clone(),
        &set.namespace().unwrap_or_default(),
    )
}

/// The change set `name` of `member`, as stored now.
async fn read_set(
    client: &Client,
    member: &DeploymentApproval,
    name: &str,
) -> Result<Option<ChangeSet>, ReconcileError> {
    let api: Api<ChangeSet> =
        Api::namespaced(client.clone(), &member.namespace().unwrap_or_default());
    api.get_opt(name)
        .await
        .map_err(|e| ReconcileError::ReadTarget(object_name(member), e))
}

/// The requests `set` lists, as stored now, in its order: one list by the set's label,
/// then a read by name of any member without it (a request made by hand).
async fn read_members(
    client: &Client,
    set: &ChangeSet,
) -> Result<Vec<Option<DeploymentApproval>>, ReconcileError> {
    let namespace = set.namespace().unwrap_or_default();
    let failed = |e| ReconcileError::ReadTarget(format!("{namespace}/{}", set.name_any()), e);
    let api: Api<DeploymentApproval> = Api::namespaced(client.clone(), &namespace);
    let labelled = api
        .list(&ListParams::default().labels(&format!("{SET_LABEL}={}", set.name_any())))
        .await
        .map_err(failed)?;
    let mut members = Vec::with_capacity(set.spec.members.len());
    for listed in &set.spec.members {
        let found = labelled
            .items
            .iter()
            .find(|a| a.name_any() == listed.request);
        members.push(match found {
            Some(member) => Some(member.clone()),
            None => api.get_opt(&listed.request).await.map_err(failed)?,
        });
    }
    Ok(members)
}

/// [`keep_deliveries`] for a change set.
async fn keep_set_deliveries(
    context: &Context,
    set: &ChangeSet,
    ours: &crate::api::DeploymentApprovalStatus,
) -> Result<(), ReconcileError> {
    let api = sets_api(context, set);
    let name = format!("{}/{}", set.namespace().unwrap_or_default(), set.name_any());
    for _ in 0..5 {
        let fresh = api
            .get(&set.name_any())
            .await
            .map_err(|e| ReconcileError::Write(name.clone(), e))?;
        let stored = fresh.status.clone().unwrap_or_default();
        let Some(status) = kept_after_conflict(&stored, ours) else {
            return Ok(());
        };
        match apply_status_of(&api, &fresh, &status).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(conflict)) if conflict.code == 409 => continue,
            Err(error) => return Err(ReconcileError::Write(name, error)),
        }
    }
    Ok(())
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
