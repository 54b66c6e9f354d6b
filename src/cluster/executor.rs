//! Carrying out a review's plan (`core::plan`): each write in order, each under the call
//! budget; the first that fails ends the plan with the denial the core gave for it; once
//! all landed, the Events go out and the answer stands.

use kube::api::PostParams;
use kube::{Api, Client};

use super::calls::{CALL_BUDGET, WriteError, bounded};
use super::events::Events;
use super::lock;
use super::status::apply_status;
use super::trail;
use crate::api::{
    ChangeSet, ChangeSetSpec, DeploymentApproval, DeploymentApprovalSpec, request_labels,
};
use crate::core::plan::{Answer, ReviewPlan, StepFailure, WRITTEN_ENTRY, Write, failed};
use crate::core::rollout::lock::LockVerdict;

/// countersign's hands on its own objects, shared by the webhook and the operator.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    /// Where the audit trail (and the change locks) live.
    pub install_namespace: String,
    pub events: Events,
    /// The audit trail: every call on AuditEntries.
    pub trail: trail::Trail,
    /// The GitOps sync rounds the webhook saw, until their requests are opened.
    pub sync_rounds: super::sync_rounds::SyncRounds,
}

/// What one write did.
enum Landed {
    /// Made something new (an entry under this name, a request).
    Created(Option<String>),
    /// Found it there already (a retry), or changed what was there.
    Done(Option<String>),
}

impl Cluster {
    pub fn new(client: Client, install_namespace: String, replica: &str) -> Cluster {
        Cluster {
            events: Events::new(client.clone(), replica),
            trail: trail::Trail::new(client.clone(), &install_namespace),
            sync_rounds: super::sync_rounds::SyncRounds::default(),
            client,
            install_namespace,
        }
    }

    /// The same hands, sealing every AuditEntry they write with `key` (the leader links
    /// only sealed entries into the trail's chain).
    pub fn sealing_entries_with(
        mut self,
        key: std::sync::Arc<crate::core::approval::seal::SealKey>,
    ) -> Cluster {
        self.trail = self.trail.sealed_with(key);
        self
    }

    /// Carry `plan` out; the answer it ends in.
    pub async fn carry_out(&self, plan: ReviewPlan) -> Answer {
        let mut written = None;
        for step in &plan.steps {
            match self.write(&step.write).await {
                Ok(landed) => {
                    let (created, name) = match landed {
                        Landed::Created(name) => (true, name),
                        Landed::Done(name) => (false, name),
                    };
                    if created {
                        for event in &step.on_created {
                            self.events.publish(event.clone());
                        }
                    }
                    written = name.or(written);
                }
                Err(failure) => {
                    let (answer, events) = failed(step, &failure);
                    for event in events {
                        self.events.publish(event);
                    }
                    return answer;
                }
            }
        }
        let fill = |text: &str| match &written {
            Some(name) => text.replace(WRITTEN_ENTRY, name),
            None => text.to_string(),
        };
        for mut event in plan.events {
            event.note = fill(&event.note);
            self.events.publish(event);
        }
        let mut answer = plan.answer;
        answer.warnings = answer.warnings.iter().map(|w| fill(w)).collect();
        answer
    }

    async fn write(&self, write: &Write) -> Result<Landed, StepFailure> {
        let failure = |error: WriteError| match error {
            WriteError::Conflict(message) => StepFailure::Conflict(message),
            other => StepFailure::Error(other.to_string()),
        };
        match write {
            Write::Entry(entry) => {
                let write = self.trail.write(entry);
                match tokio::time::timeout(CALL_BUDGET, write).await {
                    Err(_) => Err(StepFailure::Error(
                        WriteError::Timeout(CALL_BUDGET).to_string(),
                    )),
                    Ok(Ok(trail::Written::Created(name))) => Ok(Landed::Created(Some(name))),
                    Ok(Ok(trail::Written::Found(name))) => Ok(Landed::Done(Some(name))),
                    Ok(Err(error)) => Err(StepFailure::Error(error.to_string())),
                }
            }
            Write::OpenRequest {
                namespace,
                name,
                spec,
            } => match self.open_request(namespace, name, spec).await {
                Ok(true) => Ok(Landed::Created(None)),
                Ok(false) => Ok(Landed::Done(None)),
                Err(error) => Err(failure(error)),
            },
            Write::OpenSet {
                namespace,
                name,
                spec,
            } => match self.open_set(namespace, name, spec).await {
                Ok(true) => Ok(Landed::Created(None)),
                Ok(false) => Ok(Landed::Done(None)),
                Err(error) => Err(failure(error)),
            },
            Write::TakeLock {
                target,
                approval,
                digest,
                ..
            } => {
                match lock::take(
                    &self.client,
                    &self.install_namespace,
                    target,
                    approval,
                    digest,
                )
                .await
                {
                    Ok(LockVerdict::Take | LockVerdict::Mine) => Ok(Landed::Done(None)),
                    Ok(held) => Err(StepFailure::LockHeld(held)),
                    Err(error) => Err(failure(error)),
                }
            }
            Write::MarkDeploying { approval, status } => {
                bounded(apply_status(&self.client, approval, status))
                    .await
                    .map(|_| Landed::Done(None))
                    .map_err(failure)
            }
        }
    }

    /// Open the Pending request `name`. `Ok(false)`: it already exists (a retry, or a
    /// racing replica opened it first); both converge on one object.
    async fn open_request(
        &self,
        namespace: &str,
        name: &str,
        spec: &DeploymentApprovalSpec,
    ) -> Result<bool, WriteError> {
        let approval = DeploymentApproval {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some(request_labels(spec)),
                ..Default::default()
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

    /// Open the Pending change set `name`. `Ok(false)`: this very set exists already (a
    /// retry, or a racing replica); a set of that name listing other changes or made by
    /// someone else is an error, so no request joins a set it was not made for.
    async fn open_set(
        &self,
        namespace: &str,
        name: &str,
        spec: &ChangeSetSpec,
    ) -> Result<bool, WriteError> {
        let mut set = ChangeSet::new(name, spec.clone());
        set.metadata.namespace = Some(namespace.into());
        let api: Api<ChangeSet> = Api::namespaced(self.client.clone(), namespace);
        match bounded(api.create(&PostParams::default(), &set)).await {
            Ok(_) => Ok(true),
            Err(WriteError::Conflict(conflict)) => {
                let existing = bounded(api.get_opt(name)).await?;
                match existing {
                    Some(existing)
                        if existing.spec.members == spec.members
                            && existing.spec.change.requester == spec.change.requester =>
                    {
                        Ok(false)
                    }
                    _ => Err(WriteError::Conflict(format!(
                        "a change set {namespace}/{name} exists that is not this sync's ({conflict})"
                    ))),
                }
            }
            Err(error) => Err(error),
        }
    }
}
