//! What a decision asks the webhook to do besides answering: open the request, move an
//! approved request to `Deploying` (compare-and-swap), record break-glass, publish Events.
//! Every write runs under a deadline, so a slow API server yields a denial with a reason
//! rather than a timed-out admission call.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use sha2::{Digest, Sha256};

use super::client_auth::Caller;
use crate::api::{
    ApprovalPhase, AuditAction, AuditEntry, AuditEntrySpec, AuditTarget, DeploymentApproval,
    DeploymentApprovalSpec, UserInfo,
};
use crate::approval_status::apply_status;
use crate::audit_trail;
use crate::core::admission::decision::BreakGlassUse;
use crate::core::approval::chain::ChainState;
use crate::core::inert;
use crate::core::rollout::confirm::{ROLLED_OUT_CONDITION, admitted_condition, admitted_rollout};
use crate::core::rollout::lock::{
    HolderState, LOCK_LABEL, LockState, LockVerdict, judge_lock, lock_name,
};

/// How long one live read or write may take before the webhook gives up and says so.
pub const CALL_BUDGET: Duration = Duration::from_secs(3);

/// The label that names the target object on a request countersign opened.
pub const TARGET_LABEL: &str = "countersign.dev/target";

/// Why a write did not land.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Someone else wrote first (409): the compare-and-swap lost, or the object exists.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("the API server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Trail(String),
}

/// Run `call` under [`CALL_BUDGET`].
pub async fn bounded<T>(
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, WriteError> {
    match tokio::time::timeout(CALL_BUDGET, call).await {
        Err(_) => Err(WriteError::Timeout(CALL_BUDGET)),
        Ok(Err(kube::Error::Api(status))) if status.code == 409 => {
            Err(WriteError::Conflict(status.message))
        }
        Ok(result) => result.map_err(WriteError::from),
    }
}

/// A rollback admitted without approval, as its AuditEntry records it.
pub struct Rollback<'a> {
    pub target: AuditTarget,
    pub actor: &'a UserInfo,
    /// The change's digest: the revision rolled back to.
    pub digest: &'a str,
    /// The old object's resourceVersion: the state rolled back from.
    pub from_version: &'a str,
    /// The approval that deployed the revision.
    pub deployed: &'a str,
    pub policy: &'a str,
}

/// The webhook's writes, as countersign's own identity.
#[derive(Clone)]
pub struct Effects {
    client: Client,
    recorder: Recorder,
    install_namespace: String,
    /// Who admitted a change: recorded as the approval's lock holder.
    replica: String,
}

impl Effects {
    pub fn new(client: Client, install_namespace: String, replica: String) -> Self {
        let reporter = Reporter {
            controller: "countersign".into(),
            instance: Some(replica.clone()),
        };
        Effects {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            install_namespace,
            replica,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Open the Pending request `name`. `Ok(false)`: it already exists (a retry, or a
    /// racing replica opened it first); both converge on one object.
    pub async fn open_request(
        &self,
        namespace: &str,
        name: &str,
        spec: &DeploymentApprovalSpec,
    ) -> Result<bool, WriteError> {
        let approval = DeploymentApproval {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some([(TARGET_LABEL.to_string(), label_value(&spec.target.name))].into()),
                ..ObjectMeta::default()
            },
            spec: spec.clone(),
            status: None,
        };
        let api: Api<DeploymentApproval> = Api::namespaced(self.client.clone(), namespace);
        match bounded(api.create(&PostParams::default(), &approval)).await {
            Ok(_) => Ok(true),
            Err(WriteError::Conflict(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Move `approval` to `Deploying` with this replica as lock holder, only if nobody
    /// wrote it since it was read (its resourceVersion): the one-change lock (SPEC §1.3).
    /// `caller_verified`: the review came from an authenticated API server; otherwise the
    /// admission is recorded as a claim (`core::audit::trail`).
    pub async fn mark_deploying(
        &self,
        approval: &DeploymentApproval,
        chain: &ChainState,
        admitted_by: &UserInfo,
        caller_verified: bool,
    ) -> Result<(), WriteError> {
        let now = Timestamp::now();
        let previous = approval.status.clone().unwrap_or_default();
        let mut status = chain.to_status();
        status.phase = ApprovalPhase::Deploying;
        status.current_level = None;
        status.lock_holder = Some(self.replica.clone());
        status.observed_generation = approval.metadata.generation;
        status.notifications = previous.notifications;
        status.deploy_token = previous.deploy_token;
        status.rollout = Some(admitted_rollout(
            previous.rollout.as_ref(),
            admitted_by.clone(),
            caller_verified,
            now,
        ));
        status.conditions = previous
            .conditions
            .into_iter()
            .filter(|c| c.type_ != ROLLED_OUT_CONDITION)
            .chain([admitted_condition(now, approval.metadata.generation)])
            .collect();
        bounded(apply_status(&self.client, approval, &status))
            .await
            .map(|_| ())
    }

    /// Take the lock of the object an approved change is admitted to (`core::rollout::lock`)
    /// for approval `approval` (`<namespace>/<name>`): read the Lease and, when another
    /// approval holds it, that approval; then create or replace the Lease at the version
    /// read. Of two admissions racing for one object, the API server lets one write.
    pub async fn take_change_lock(
        &self,
        target: &AuditTarget,
        approval: &str,
        digest: &str,
    ) -> Result<LockVerdict, WriteError> {
        let group = crate::core::change::api_group(&target.api_version);
        let namespace = target.namespace.as_deref().unwrap_or_default();
        let name = lock_name(group, &target.kind, namespace, &target.name);
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.install_namespace);
        let stored = bounded(leases.get_opt(&name)).await?;
        let lock = stored.as_ref().map(lock_state);
        let holder = match &lock {
            Some(lock) if lock.holder != approval => Some(self.holder_state(&lock.holder).await?),
            _ => None,
        };
        let verdict = judge_lock(lock.as_ref(), holder, approval, Timestamp::now());
        if verdict != LockVerdict::Take {
            return Ok(verdict);
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.install_namespace.clone()),
                resource_version: stored
                    .as_ref()
                    .and_then(|l| l.metadata.resource_version.clone()),
                labels: Some([(LOCK_LABEL.to_string(), "true".to_string())].into()),
                annotations: Some(
                    [
                        (
                            "countersign.dev/target".to_string(),
                            format!("{} {namespace}/{}", target.kind, target.name),
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
    async fn holder_state(&self, holder: &str) -> Result<HolderState, WriteError> {
        let Some((namespace, name)) = holder.split_once('/') else {
            return Ok(HolderState::Gone);
        };
        let api: Api<DeploymentApproval> = Api::namespaced(self.client.clone(), namespace);
        Ok(match bounded(api.get_opt(name)).await? {
            None => HolderState::Gone,
            Some(approval) => HolderState::Phase(
                approval
                    .status
                    .as_ref()
                    .map(|s| s.phase)
                    .unwrap_or_default(),
            ),
        })
    }

    /// Write the break-glass AuditEntry (SPEC §6, §7). Its name is derived from the change
    /// and the person, so a retried apply finds the entry already there instead of writing
    /// a second one.
    pub async fn record_break_glass(
        &self,
        target: AuditTarget,
        actor: &UserInfo,
        digest: &str,
        glass: &BreakGlassUse,
        caller: &Caller,
        now: Timestamp,
    ) -> Result<String, WriteError> {
        let name = break_glass_entry_name(&target, digest, &actor.username);
        self.create_entry(
            name,
            AuditEntrySpec {
                time: Time(now),
                action: AuditAction::BreakGlass,
                actor: actor.clone(),
                target,
                change_digest: Some(digest.to_string()),
                approval: None,
                policy: Some(glass.policies.join(",")),
                reason: Some(glass.reason.clone()),
                caller: Some(caller.record()),
            },
        )
        .await
    }

    /// Write the AuditEntry of a rollback admitted without approval (SPEC §1.6). Its name
    /// is derived from the target, the state rolled back from (`from_version`, the old
    /// object's resourceVersion), the change and the person: a retried apply finds it.
    pub async fn record_rollback(
        &self,
        rollback: Rollback<'_>,
        caller: &Caller,
        now: Timestamp,
    ) -> Result<String, WriteError> {
        let Rollback {
            target,
            actor,
            digest,
            from_version,
            deployed,
            policy,
        } = rollback;
        let name = format!(
            "rollback-{}",
            entry_hash(&target, &[digest, from_version, &actor.username])
        );
        self.create_entry(
            name,
            AuditEntrySpec {
                time: Time(now),
                action: AuditAction::Rollback,
                actor: actor.clone(),
                target,
                change_digest: Some(digest.to_string()),
                approval: Some(deployed.to_string()),
                policy: Some(policy.to_string()),
                reason: Some(format!(
                    "rolled back to the revision last confirmed Deployed by approval {deployed}, without a new approval"
                )),
                caller: Some(caller.record()),
            },
        )
        .await
    }

    /// Write an AuditEntry the webhook decided on, under its deterministic `name`, with
    /// how the review's caller was authenticated.
    pub async fn record_entry(
        &self,
        name: String,
        mut spec: AuditEntrySpec,
        caller: &Caller,
    ) -> Result<String, WriteError> {
        spec.caller = Some(caller.record());
        self.create_entry(name, spec).await
    }

    /// Write the entry planned as `name` through the one writer (`audit_trail`): a retry
    /// finds it; an entry of other content under that name never counts as this one.
    async fn create_entry(&self, name: String, spec: AuditEntrySpec) -> Result<String, WriteError> {
        let api: Api<AuditEntry> = Api::namespaced(self.client.clone(), &self.install_namespace);
        let write = audit_trail::write(&api, &self.install_namespace, &name, &spec);
        match tokio::time::timeout(CALL_BUDGET, write).await {
            Err(_) => Err(WriteError::Timeout(CALL_BUDGET)),
            Ok(Ok(written)) => Ok(written.name().to_string()),
            Ok(Err(error)) => Err(WriteError::Trail(error.to_string())),
        }
    }

    /// Publish an Event in the background: it never delays or changes an answer.
    pub fn publish(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let recorder = self.recorder.clone();
        let event = Event {
            type_,
            reason: reason.into(),
            // The API server limits an Event's note to 1 KiB; what it quotes is inert.
            note: Some(inert::bounded(&note, 1000)),
            action: "Admission".into(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(error) = recorder.publish(&event, &regarding).await {
                tracing::debug!(%error, "could not publish an Event");
            }
        });
    }
}

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

/// A reference to a DeploymentApproval, for Events.
pub fn approval_reference(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(DeploymentApproval::api_version(&()).into_owned()),
        kind: Some(DeploymentApproval::kind(&()).into_owned()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..ObjectReference::default()
    }
}

/// `break-glass-<16 hex>` of (target, digest, actor).
fn break_glass_entry_name(target: &AuditTarget, digest: &str, actor: &str) -> String {
    format!("break-glass-{}", entry_hash(target, &[digest, actor]))
}

/// 16 hex digits of a hash over the target and `parts`: a deterministic entry name.
fn entry_hash(target: &AuditTarget, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in [
        target.api_version.as_str(),
        target.kind.as_str(),
        target.namespace.as_deref().unwrap_or_default(),
        target.name.as_str(),
    ]
    .into_iter()
    .chain(parts.iter().copied())
    {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A label value: at most 63 characters of the name (object names may be longer).
fn label_value(name: &str) -> String {
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(['-', '.', '_']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn break_glass_names_are_stable_and_distinct() {
        let target = AuditTarget {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "web".into(),
            uid: None,
        };
        let a = break_glass_entry_name(&target, "sha256:aa", "erin");
        assert_eq!(a, break_glass_entry_name(&target, "sha256:aa", "erin"));
        assert_ne!(a, break_glass_entry_name(&target, "sha256:ab", "erin"));
        assert_ne!(a, break_glass_entry_name(&target, "sha256:aa", "dave"));
        assert!(a.starts_with("break-glass-") && a.len() == 28);
    }

    #[test]
    fn label_values_fit() {
        assert_eq!(label_value(&"a".repeat(100)).len(), 63);
        assert_eq!(
            label_value(&format!("{}-b", "a".repeat(62))),
            "a".repeat(62)
        );
    }
}
