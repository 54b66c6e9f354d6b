//! The operator half of `countersign serve`: what runs on the one replica that holds the
//! lease. Each concern is its own controller or task, sharing one [`Context`].

pub mod approvals;
pub mod audit;
pub mod break_glass;
pub mod chain;
mod controller;
pub mod grants;
pub mod leader;
pub mod namespaces;
pub mod policies;
pub mod retention;
pub mod webhook_guard;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::SignedDuration;

use crate::api::{DeploymentApproval, NotificationStatus};
use crate::cluster::Cluster;
use crate::cluster::snapshot::Snapshot;
use crate::notify::Notifier;
use crate::telemetry::Metrics;

/// What every reconcile shares.
pub struct Context {
    /// The room that carries out what the core decides: the client, the install namespace
    /// (where the trail is kept), the Events.
    pub cluster: Cluster,
    /// Policies and RoleBindings (for role approvers), from the same caches the webhook
    /// uses, and the approvals by target.
    pub snapshot: Snapshot,
    /// AuditEntries known to hold what is planned for them, so a reconcile does not write
    /// them again; the names, not this set, prevent duplicates.
    pub known_entries: crate::cluster::trail::KnownEntries,
    /// AuditEntries older than this are deleted (`None`: kept forever).
    pub audit_retention: Option<SignedDuration>,
    /// The region of namespaces without a region label (policies' `match.regions`).
    pub cluster_region: Option<String>,
    /// Delivers notifications to the sinks.
    pub notifier: Notifier,
    pub metrics: Arc<Metrics>,
    /// What countersign's webhook configurations should say (`None`: not known to this
    /// process, so they are not watched).
    pub webhook_guard: Option<webhook_guard::GuardSettings>,
    /// Notifications this replica delivered lately, until its cache shows them recorded.
    pub deliveries: RecentDeliveries,
    /// `--gitops`: an approved request a sync opened asks that sync to apply again.
    pub resumes_syncs: bool,
    /// The key requests' summaries are sealed with (`core::approval::seal`), which also
    /// tells entries countersign's writer sealed (`core::audit::chain::writer_seal`).
    pub seal_key: Arc<crate::core::approval::seal::SealKey>,
    /// How the audit chain is checkpointed, and where checkpoints go.
    pub chain: chain::ChainSettings,
}

/// The notification records of each request as this replica last wrote them, for a few
/// minutes: a reconcile that runs before the cache shows that write (a watch event of the
/// target arriving first) must not deliver the same notices again.
#[derive(Default)]
pub struct RecentDeliveries {
    by_request: Mutex<HashMap<String, (jiff::Timestamp, Vec<NotificationStatus>)>>,
}

/// How long delivered records are remembered: far longer than a cache lags.
const REMEMBER_DELIVERIES: SignedDuration = SignedDuration::from_mins(5);

impl RecentDeliveries {
    /// The delivered records remembered for `approval` (by uid).
    pub fn recalled(
        &self,
        approval: &DeploymentApproval,
        now: jiff::Timestamp,
    ) -> Vec<NotificationStatus> {
        let Some(uid) = approval.metadata.uid.as_deref() else {
            return Vec::new();
        };
        let Ok(mut by_request) = self.by_request.lock() else {
            return Vec::new();
        };
        by_request.retain(|_, (at, _)| now.duration_since(*at) < REMEMBER_DELIVERIES);
        by_request
            .get(uid)
            .map(|(_, records)| records.clone())
            .unwrap_or_default()
    }

    /// Remember the delivered records of `records` for `approval`.
    pub fn remember(
        &self,
        approval: &DeploymentApproval,
        records: &[NotificationStatus],
        now: jiff::Timestamp,
    ) {
        let Some(uid) = approval.metadata.uid.clone() else {
            return;
        };
        let delivered: Vec<NotificationStatus> =
            records.iter().filter(|r| r.delivered).cloned().collect();
        if delivered.is_empty() {
            return;
        }
        if let Ok(mut by_request) = self.by_request.lock() {
            by_request.insert(uid, (now, delivered));
        }
    }
}

/// Why a reconcile did not finish; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("writing the status of {0}: {1}")]
    Write(String, #[source] kube::Error),
    #[error("writing AuditEntry {0}: {1}")]
    Audit(String, #[source] crate::cluster::trail::TrailError),
    #[error("reading the target of {0}: {1}")]
    ReadTarget(String, #[source] kube::Error),
    #[error("reading {0}: {1}")]
    Read(String, #[source] kube::Error),
    #[error("the deploy token of {0}: {1}")]
    Grant(String, #[source] grants::GrantsError),
    #[error("resuming the GitOps sync of {0}: {1}")]
    Resume(String, #[source] crate::cluster::calls::WriteError),
}

impl ReconcileError {
    /// The error's kind, for the metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ReconcileError::Write(..) => "write",
            ReconcileError::Audit(..) => "audit",
            ReconcileError::ReadTarget(..) => "read-target",
            ReconcileError::Read(..) => "read",
            ReconcileError::Grant(..) => "grant",
            ReconcileError::Resume(..) => "resume",
        }
    }
}

/// Run every part of the operator until the future is dropped (when this replica stops
/// leading).
pub async fn run(context: Arc<Context>) {
    tokio::join!(
        approvals::run(context.clone()),
        policies::run(context.clone()),
        break_glass::run(context.clone()),
        namespaces::run(context.clone()),
        webhook_guard::run(context.clone()),
        chain::run(context.clone()),
        retention::run(context),
    );
}

/// Reconcile only while `leading` says this replica leads: started when the lease is won,
/// stopped (aborted at its next await) the moment it is lost; `gauge` says which.
pub async fn run_while_leading(
    context: Arc<Context>,
    mut leading: tokio::sync::watch::Receiver<bool>,
    gauge: prometheus_client::metrics::gauge::Gauge,
) {
    let mut reconciling: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let now = *leading.borrow_and_update();
        gauge.set(i64::from(now));
        if now && reconciling.is_none() {
            let context = context.clone();
            reconciling = Some(tokio::spawn(async move {
                context.snapshot.wait_until_synced().await;
                run(context).await;
            }));
        } else if !now && let Some(task) = reconciling.take() {
            task.abort();
        }
        if leading.changed().await.is_err() {
            break;
        }
    }
    if let Some(task) = reconciling {
        task.abort();
    }
}
