//! AdmissionReview in → core → AdmissionResponse out, per webhook path. No rule lives here:
//! each handler gathers the core's inputs (from the snapshot, or live when the snapshot may
//! be stale in a way that would wrongly deny), calls the core, and carries out its answer.

use std::collections::BTreeMap;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;
use kube::core::admission::{AdmissionResponse, AdmissionReview, Operation};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde::Deserialize;
use serde_json::Value;

use super::client_auth::Caller;
use super::effects::{Effects, Rollback, WriteError, approval_reference, bounded};
use super::request::{BadReview, Parsed, Request, decode, parse};
use super::snapshot::Snapshot;
use crate::api::{
    ApprovalPolicy, AuditAction, AuditTarget, DeploymentApproval, Operation as ChangeOperation,
};
use crate::core::admission::decision::{
    AllowReason, ApprovalRequirement, Decision, DecisionInput, DenyReason, Verdict, decide,
};
use crate::core::admission::proposal::{PROPOSAL_CAUSE, ProposedRequest, proposal};
use crate::core::approval::chain::ApprovalChain;
use crate::core::approval::request::{RequestCreate, life_metadata_edit, validate_request_create};
use crate::core::approval::review::{
    ReviewEdit, review_groups, stamp_appended_reviews, validate_review_edit,
    validate_review_standing,
};
use crate::core::approval::seal::{SealKey, sealed};
use crate::core::audit::custody::{AuditWrite, approval_status_write, audit_write};
use crate::core::audit::ground::{
    GroundChange, GroundVerdict, judge_ground_change, namespace_left_entry, policy_ground_entry,
    request_deleted_entry,
};
use crate::core::audit::trail::PlannedEntry;
use crate::core::policy::authorship::stamp_policy_change;
use crate::core::policy::matching::ChangeRequest;
use crate::core::policy::matching::{
    gated_label_patch, namespace_labels_of, policies_left_behind, policy_name,
};
use crate::core::policy::validation::validate_policy;
use crate::core::rollout::lock::LockVerdict;
use crate::install::webhooks::paths;
use crate::telemetry::{Metrics, ReviewLabels, Verdict as Counted};

/// Which webhook a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewPath {
    Workloads,
    Approvals,
    Audit,
    Policies,
    StampReviews,
    StampPolicies,
    LabelNamespaces,
}

impl ReviewPath {
    pub const ALL: [ReviewPath; 7] = [
        ReviewPath::Workloads,
        ReviewPath::Approvals,
        ReviewPath::Audit,
        ReviewPath::Policies,
        ReviewPath::StampReviews,
        ReviewPath::StampPolicies,
        ReviewPath::LabelNamespaces,
    ];

    pub fn path(self) -> &'static str {
        match self {
            ReviewPath::Workloads => paths::WORKLOADS,
            ReviewPath::Approvals => paths::APPROVALS,
            ReviewPath::Audit => paths::AUDIT,
            ReviewPath::Policies => paths::POLICIES,
            ReviewPath::StampReviews => paths::STAMP_REVIEWS,
            ReviewPath::StampPolicies => paths::STAMP_POLICIES,
            ReviewPath::LabelNamespaces => paths::LABEL_NAMESPACES,
        }
    }
}

/// Where the webhook runs and who it is.
#[derive(Clone, Debug)]
pub struct Settings {
    pub install_namespace: String,
    /// countersign's own username (its ServiceAccount).
    pub own_username: String,
    /// The region of namespaces without a region label (policies' `match.regions`).
    pub cluster_region: Option<String>,
    /// AuditEntries are kept this long; countersign itself deletes none younger
    /// (`None`: kept forever).
    pub audit_retention: Option<jiff::SignedDuration>,
}

/// The admission webhook: the snapshot it decides from and the writes it makes.
#[derive(Clone)]
pub struct Webhook {
    pub snapshot: Snapshot,
    pub effects: Effects,
    pub settings: Settings,
    pub metrics: std::sync::Arc<Metrics>,
    /// The key requests' summaries are sealed with (`core::approval::seal`).
    pub seal_key: std::sync::Arc<SealKey>,
}

/// An answer and how it is counted.
struct Answer {
    response: AdmissionResponse,
    verdict: Counted,
}

impl Answer {
    fn allow(request: &Request) -> Answer {
        Answer {
            response: request.allow(),
            verdict: Counted::Allowed,
        }
    }

    /// A denial; the message quotes objects and names, so nothing in it is left raw but
    /// its line breaks (countersign's own structure).
    fn deny(request: &Request, message: impl ToString) -> Answer {
        let message = message.to_string();
        Answer {
            response: request
                .allow()
                .deny(crate::core::inert::escaped_lines(&message)),
            verdict: Counted::Denied,
        }
    }

    /// Carry the request a change would get in the denial, as a cause the API server
    /// passes on to the client (`core::admission::proposal`), its summary sealed as countersign's own.
    fn with_proposal(
        mut self,
        requirement: &ApprovalRequirement,
        seal_key: &SealKey,
        namespace: &str,
    ) -> Answer {
        let mut proposal = proposal(requirement);
        if let Some(open) = proposal.open.take() {
            proposal.open = Some(ProposedRequest {
                spec: sealed(seal_key, namespace, open.spec),
                ..open
            });
        }
        if let Ok(json) = serde_json::to_string(&proposal) {
            let details = self.response.result.details.get_or_insert_with(|| {
                kube::core::response::StatusDetails {
                    name: String::new(),
                    group: String::new(),
                    kind: String::new(),
                    uid: String::new(),
                    causes: Vec::new(),
                    retry_after_seconds: 0,
                }
            });
            details.causes.push(kube::core::response::StatusCause {
                reason: PROPOSAL_CAUSE.into(),
                message: json,
                field: String::new(),
            });
        }
        self
    }

    fn warn(mut self, warning: String) -> Answer {
        self.response
            .warnings
            .get_or_insert_with(Vec::new)
            .push(warning);
        self
    }
}

impl Webhook {
    /// Answer one AdmissionReview body sent to `path`.
    pub async fn review(
        &self,
        path: ReviewPath,
        body: &[u8],
        caller: &Caller,
    ) -> Result<AdmissionReview<DynamicObject>, BadReview> {
        let started = Instant::now();
        let request = match parse(body) {
            Ok(Parsed::Request(mut request)) => {
                request.caller = caller.clone();
                request
            }
            Ok(Parsed::Unreadable(response)) => {
                self.count("unknown", "unknown", Counted::Denied, started);
                return Ok(response.into_review());
            }
            Err(bad) => {
                self.count("unknown", "unknown", Counted::BadRequest, started);
                return Err(bad);
            }
        };
        let answer = match path {
            ReviewPath::Workloads => self.workload(&request).await,
            ReviewPath::Approvals => self.approval(&request).await,
            ReviewPath::Audit => self.audit(&request),
            ReviewPath::Policies => self.policy(&request).await,
            ReviewPath::StampReviews => self.stamp(&request),
            ReviewPath::StampPolicies => stamp_policy(&request),
            ReviewPath::LabelNamespaces => self.label_namespace(&request).await,
        };
        let resource = request.resource_label();
        self.count(
            &resource,
            &format!("{:?}", request.operation).to_uppercase(),
            answer.verdict,
            started,
        );
        tracing::debug!(
            uid = %request.uid,
            resource,
            namespace = request.namespace.as_deref().unwrap_or_default(),
            name = %request.name,
            user = request.username().unwrap_or_default(),
            allowed = answer.response.allowed,
            "reviewed"
        );
        Ok(answer.response.into_review())
    }

    fn count(&self, resource: &str, operation: &str, verdict: Counted, started: Instant) {
        self.metrics
            .reviews
            .get_or_create(&ReviewLabels {
                resource: resource.to_string(),
                operation: operation.to_string(),
                verdict,
            })
            .inc();
        self.metrics
            .decision_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    fn is_own(&self, request: &Request) -> bool {
        request.username() == Some(self.settings.own_username.as_str())
    }

    /// A namespace's labels: from the snapshot, else read live (a namespace made a moment
    /// ago may not be cached yet).
    async fn namespace_labels(&self, namespace: &str) -> Result<BTreeMap<String, String>, String> {
        if let Some(labels) = self.snapshot.namespace_labels(namespace) {
            return Ok(labels);
        }
        let api: Api<Namespace> = Api::all(self.effects.client().clone());
        match bounded(api.get(namespace)).await {
            Ok(ns) => Ok(ns.labels().clone()),
            Err(error) => Err(format!(
                "countersign cannot read namespace {namespace} ({error}), so it cannot tell which policies apply; denied, retry"
            )),
        }
    }

    // ---- workloads (SPEC §1) ----

    async fn workload(&self, request: &Request) -> Answer {
        let operation = match request.operation {
            Operation::Create => ChangeOperation::Create,
            Operation::Update => ChangeOperation::Update,
            _ => return Answer::allow(request),
        };
        let Some(object) = &request.object else {
            return Answer::deny(request, "the request carries no object to judge");
        };
        let old_object = request.old_object.as_ref();
        // The core reads objects as JSON; one that is not a Kubernetes object is refused
        // here, with the reason, rather than judged.
        for (which, candidate) in [("object", Some(object)), ("oldObject", old_object)] {
            if let Some(candidate) = candidate
                && let Err(why) = readable_object(candidate)
            {
                return Answer::deny(
                    request,
                    format!(
                        "countersign cannot decode the request's {which}, so it is denied: {why}"
                    ),
                );
            }
        }
        let namespace = request.namespace.clone().unwrap_or_default();
        let labels = match self.namespace_labels(&namespace).await {
            Ok(labels) => labels,
            Err(why) => return Answer::deny(request, why),
        };
        let requester = request.requester();
        let change = ChangeRequest {
            operation,
            object,
            old_object,
            namespace: &namespace,
            namespace_labels: &labels,
            requester: &requester,
            cluster_region: self.settings.cluster_region.as_deref(),
            dry_run: request.dry_run(),
        };
        let target_name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut approvals = self.snapshot.approvals_for(&namespace, &target_name);
        let mut decision = self.decide(change, &approvals);
        // The snapshot may lag behind an approval that was just approved or released:
        // read the one approval the denial rests on before denying.
        if let Some(name) = stale_suspect(&decision) {
            match self.refresh(&namespace, &name, &mut approvals).await {
                Ok(true) => decision = self.decide(change, &approvals),
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, approval = name, "live read failed"),
            }
        }
        self.act(request, &change, &namespace, decision).await
    }

    fn decide(&self, request: ChangeRequest, approvals: &[DeploymentApproval]) -> Decision {
        let policies = self.snapshot.policies();
        let bindings = self.snapshot.bindings();
        decide(&DecisionInput {
            request,
            policies: &policies,
            approvals,
            bindings: &bindings,
            now: Timestamp::now(),
            validations: self.snapshot.validations(),
        })
    }

    /// Read approval `name` live into `approvals`. `Ok(true)`: it differed from the cache.
    async fn refresh(
        &self,
        namespace: &str,
        name: &str,
        approvals: &mut Vec<DeploymentApproval>,
    ) -> Result<bool, WriteError> {
        let api: Api<DeploymentApproval> =
            Api::namespaced(self.effects.client().clone(), namespace);
        let live = bounded(api.get_opt(name)).await?;
        let cached = approvals.iter().position(|a| a.name_any() == name);
        let changed = match (&live, cached) {
            (Some(live), Some(i)) => live.resource_version() != approvals[i].resource_version(),
            (None, None) => false,
            _ => true,
        };
        if let Some(i) = cached {
            approvals.remove(i);
        }
        approvals.extend(live);
        Ok(changed)
    }

    /// Admit a rollback to the revision last confirmed Deployed, once its AuditEntry is
    /// written (nothing passes unaudited; a dry run writes nothing).
    async fn rollback(
        &self,
        request: &Request,
        change: &ChangeRequest<'_>,
        namespace: &str,
        decision: &Decision,
        deployed: &str,
    ) -> Answer {
        if request.dry_run() {
            return Answer::allow(request);
        }
        let target = target_reference(change.object, namespace);
        let from_version = change
            .old_object
            .and_then(|old| old.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let policy = decision
            .matched_policies
            .first()
            .cloned()
            .unwrap_or_default();
        match self
            .effects
            .record_rollback(
                Rollback {
                    target: AuditTarget::of_reference(&target),
                    actor: change.requester,
                    digest: decision.digest.as_str(),
                    from_version,
                    deployed,
                    policy: &policy,
                },
                &request.caller,
                Timestamp::now(),
            )
            .await
        {
            Ok(entry) => {
                self.effects.publish(
                    target,
                    EventType::Warning,
                    "Rollback",
                    format!(
                        "{} rolled back to the revision approval {deployed} deployed, without a new approval (audited as AuditEntry {entry})",
                        change.requester.username
                    ),
                );
                Answer::allow(request).warn(format!(
                    "countersign: a rollback to the revision approval {deployed} deployed; recorded as AuditEntry {}/{entry}",
                    self.settings.install_namespace
                ))
            }
            Err(error) => Answer::deny(
                request,
                format!(
                    "the rollback could not be recorded ({error}); nothing passes unaudited, retry"
                ),
            ),
        }
    }

    /// Carry out a decision and answer.
    async fn act(
        &self,
        request: &Request,
        change: &ChangeRequest<'_>,
        namespace: &str,
        decision: Decision,
    ) -> Answer {
        // Most changes pass with nothing to record: answer them without building messages.
        if let Verdict::Allowed(AllowReason::Rollback { approval }) = &decision.verdict {
            return self
                .rollback(request, change, namespace, &decision, approval)
                .await;
        }
        let glass = match (&decision.verdict, &decision.break_glass) {
            (Verdict::Allowed(_), None) => return Answer::allow(request),
            (Verdict::Allowed(_), Some(_)) if request.dry_run() => return Answer::allow(request),
            (_, glass) => glass,
        };
        let target = target_reference(change.object, namespace);
        let message = render(&decision.reasons);
        match &decision.verdict {
            Verdict::Allowed(_) => {
                let Some(glass) = glass else {
                    return Answer::allow(request);
                };
                // Break-glass passes every rule on the word of the review: only a review
                // that provably came from the API server may carry it.
                if !request.caller.is_authenticated() {
                    return Answer::deny(
                        request,
                        "break-glass needs the API server to authenticate to countersign with its client certificate (docs/install.md), and this review's caller did not: nothing is recorded, and the change is refused",
                    );
                }
                let audit_target = AuditTarget::of_reference(&target);
                match self
                    .effects
                    .record_break_glass(
                        audit_target,
                        change.requester,
                        decision.digest.as_str(),
                        glass,
                        &request.caller,
                        Timestamp::now(),
                    )
                    .await
                {
                    Ok(entry) => {
                        self.effects.publish(
                            target,
                            EventType::Warning,
                            "BreakGlass",
                            format!("{message} (audited as AuditEntry {entry})"),
                        );
                        Answer::allow(request).warn(format!(
                            "countersign: break-glass recorded as AuditEntry {}/{entry}",
                            self.settings.install_namespace
                        ))
                    }
                    Err(error) => Answer::deny(
                        request,
                        format!(
                            "break-glass could not be recorded ({error}); nothing passes unaudited, retry"
                        ),
                    ),
                }
            }
            Verdict::Denied(reason) => {
                let reason = match reason {
                    DenyReason::Rules => "Denied",
                    DenyReason::PolicyUnusable => "PolicyUnusable",
                    DenyReason::RolloutInProgress { .. } => "RolloutInProgress",
                };
                self.publish_denial(request, target, reason, &message);
                Answer::deny(request, message)
            }
            Verdict::ApprovalRequired(requirement) if request.dry_run() => {
                // Nothing is opened; the client learns what would be (`countersign request`).
                let mut answer = Answer::deny(request, &message).with_proposal(
                    requirement,
                    &self.seal_key,
                    namespace,
                );
                answer.verdict = Counted::ApprovalRequired;
                answer
            }
            Verdict::ApprovalRequired(requirement) => {
                let mut answer = Answer::deny(request, &message);
                answer.verdict = Counted::ApprovalRequired;
                if let Some(spec) = &requirement.create {
                    let spec = sealed(&self.seal_key, namespace, spec.clone());
                    match self
                        .effects
                        .open_request(namespace, &requirement.approval_name, &spec)
                        .await
                    {
                        Ok(true) => self.effects.publish(
                            target,
                            EventType::Normal,
                            "ApprovalRequested",
                            format!(
                                "{} requested approval {namespace}/{} for: {}",
                                change.requester.username,
                                requirement.approval_name,
                                spec.change.summary.text
                            ),
                        ),
                        Ok(false) => {}
                        Err(error) => {
                            answer = Answer::deny(
                                request,
                                format!(
                                    "{message}\ncountersign could not open the request ({error}); retry"
                                ),
                            );
                        }
                    }
                } else {
                    self.publish_denial(request, target, "ApprovalRequired", &message);
                }
                answer
            }
            Verdict::Approved(approved) => {
                let name = approved.approval.name_any();
                if !approved.mark_deploying || request.dry_run() {
                    let mut answer = Answer::allow(request);
                    answer.verdict = Counted::Approved;
                    return answer;
                }
                // One change at a time per object, atomically: the object's lock first,
                // then the approval's own compare-and-swap (`core::rollout::lock`).
                let lock = self
                    .effects
                    .take_change_lock(
                        &AuditTarget::of_reference(&target),
                        &format!("{namespace}/{name}"),
                        decision.digest.as_str(),
                    )
                    .await;
                let refusal = match lock {
                    Ok(LockVerdict::Take | LockVerdict::Mine) => None,
                    Ok(LockVerdict::RollingOut { holder }) => Some(format!(
                        "approved change {holder} is rolling out; one change at a time per object"
                    )),
                    Ok(LockVerdict::Settling { holder }) => Some(format!(
                        "approved change {holder} of this object was admitted a moment ago; one change at a time per object, retry in a few seconds"
                    )),
                    Err(WriteError::Conflict(_)) => Some(
                        "another approved change of this object is being admitted at this moment; one change at a time per object, retry".to_string(),
                    ),
                    Err(error) => Some(format!(
                        "approval {name} approves this change, but countersign could not take the object's lock ({error}); retry"
                    )),
                };
                if let Some(refusal) = refusal {
                    self.publish_denial(request, target, "RolloutInProgress", &refusal);
                    return Answer::deny(request, refusal);
                }
                match self
                    .effects
                    .mark_deploying(
                        &approved.approval,
                        &approved.chain,
                        change.requester,
                        request.caller.is_authenticated(),
                    )
                    .await
                {
                    Ok(()) => {
                        self.effects.publish(
                            target.clone(),
                            EventType::Normal,
                            "Admitted",
                            format!("admitted under approval {namespace}/{name}: {message}"),
                        );
                        self.effects.publish(
                            approval_reference(namespace, &name),
                            EventType::Normal,
                            "Admitted",
                            format!(
                                "{} applied the approved change; rolling out",
                                change.requester.username
                            ),
                        );
                        let mut answer = Answer::allow(request).warn(format!(
                            "countersign: approval {namespace}/{name} admits this change; it is now Deploying"
                        ));
                        answer.verdict = Counted::Approved;
                        answer
                    }
                    Err(WriteError::Conflict(_)) => Answer::deny(
                        request,
                        format!(
                            "approval {name} was just used by another admission of this change; retry"
                        ),
                    ),
                    Err(error) => Answer::deny(
                        request,
                        format!(
                            "approval {name} approves this change, but countersign could not mark it Deploying ({error}); retry"
                        ),
                    ),
                }
            }
        }
    }

    fn publish_denial(
        &self,
        request: &Request,
        target: ObjectReference,
        reason: &str,
        message: &str,
    ) {
        if !request.dry_run() {
            self.effects.publish(
                target,
                EventType::Warning,
                reason,
                format!(
                    "{} was denied: {message}",
                    request.username().unwrap_or("someone")
                ),
            );
        }
    }

    // ---- DeploymentApprovals (SPEC §3) ----

    async fn approval(&self, request: &Request) -> Answer {
        if request.sub_resource.as_deref() == Some("status") {
            let actor = request.username().unwrap_or_default();
            return match approval_status_write(actor, &self.settings.own_username) {
                Ok(()) => Answer::allow(request),
                Err(why) => Answer::deny(request, why),
            };
        }
        let author = request.requester();
        let now = Timestamp::now();
        match request.operation {
            Operation::Create if self.is_own(request) => Answer::allow(request),
            Operation::Create => {
                let approval = match decode::<DeploymentApproval>(request.object.as_ref()) {
                    Ok(approval) => approval,
                    Err(why) => return Answer::deny(request, why),
                };
                let namespace = request.namespace.clone().unwrap_or_default();
                let labels = match self.namespace_labels(&namespace).await {
                    Ok(labels) => labels,
                    Err(why) => return Answer::deny(request, why),
                };
                let target = self.live_target(&namespace, &approval).await;
                let policies = self.snapshot.policies();
                match validate_request_create(&RequestCreate {
                    approval: &approval,
                    creator: &author,
                    namespace: &namespace,
                    namespace_labels: &labels,
                    cluster_region: self.settings.cluster_region.as_deref(),
                    target_object: target.as_ref(),
                    policies: &policies,
                    seal_key: &self.seal_key,
                    validations: self.snapshot.validations(),
                    now,
                }) {
                    Ok(()) => Answer::allow(request),
                    Err(refusal) => Answer::deny(request, refusal),
                }
            }
            Operation::Update => {
                let (old, new) = match (
                    decode::<DeploymentApproval>(request.old_object.as_ref()),
                    decode::<DeploymentApproval>(request.object.as_ref()),
                ) {
                    (Ok(old), Ok(new)) => (old, new),
                    (Err(why), _) | (_, Err(why)) => return Answer::deny(request, why),
                };
                if !self.is_own(request)
                    && let Some(field) =
                        life_metadata_edit(&old.metadata, &new.metadata, &author.username)
                {
                    return Answer::deny(
                        request,
                        format!(
                            "metadata.{field} of a DeploymentApproval may not be changed: what decides a request's life is countersign's alone (a request is withdrawn by deleting it, which is audited)"
                        ),
                    );
                }
                match validate_review_edit(&old.spec, &new.spec, &author, now) {
                    Err(refusal) => Answer::deny(request, refusal),
                    Ok(ReviewEdit::NoReview) => Answer::allow(request),
                    Ok(ReviewEdit::Appended(review)) => {
                        let bindings = self.snapshot.bindings();
                        match validate_review_standing(&old, &review, &bindings, now) {
                            Ok(()) => Answer::allow(request),
                            Err(refusal) => Answer::deny(request, refusal),
                        }
                    }
                }
            }
            Operation::Delete => {
                let approval = match decode::<DeploymentApproval>(request.old_object.as_ref()) {
                    Ok(approval) => approval,
                    Err(why) => return Answer::deny(request, why),
                };
                let phase = approval
                    .status
                    .as_ref()
                    .map(|s| s.phase)
                    .unwrap_or_default();
                let policies = self.snapshot.policies();
                let policy = policies
                    .iter()
                    .find(|p| p.metadata.name.as_deref() == Some(&approval.spec.policy.name));
                let verdict =
                    judge_ground_change(GroundChange::RequestDeleted(phase), policy, &author);
                self.carry_out_ground(request, verdict, |reason| {
                    request_deleted_entry(&approval, &author, reason, now)
                })
                .await
            }
            _ => Answer::allow(request),
        }
    }

    /// Admit, record or refuse a change of the gate's own ground (`core::audit::ground`); a dry
    /// run records nothing.
    async fn carry_out_ground(
        &self,
        request: &Request,
        verdict: GroundVerdict,
        entry: impl FnOnce(String) -> PlannedEntry,
    ) -> Answer {
        match verdict {
            GroundVerdict::Pass => Answer::allow(request),
            GroundVerdict::Refuse(why) => {
                if !request.dry_run() {
                    let planned = entry(why.clone());
                    self.effects.publish(
                        planned.spec.target.reference(),
                        EventType::Warning,
                        "Refused",
                        format!(
                            "{} was refused {:?}: {why}",
                            planned.spec.actor.username, planned.spec.action
                        ),
                    );
                }
                Answer::deny(request, why)
            }
            GroundVerdict::Audit(_) if request.dry_run() => Answer::allow(request),
            GroundVerdict::Audit(reason) => {
                let planned = entry(reason.clone());
                let (target, action, actor) = (
                    planned.spec.target.reference(),
                    planned.spec.action,
                    planned.spec.actor.username.clone(),
                );
                match self
                    .effects
                    .record_entry(planned.name, planned.spec, &request.caller)
                    .await
                {
                    Ok(name) => {
                        self.effects.publish(
                            target,
                            EventType::Warning,
                            &format!("{action:?}"),
                            format!(
                                "{action:?} by {actor}: {reason} (audited as AuditEntry {name})"
                            ),
                        );
                        Answer::allow(request).warn(format!(
                            "countersign: recorded as AuditEntry {}/{name}",
                            self.settings.install_namespace
                        ))
                    }
                    Err(error) => Answer::deny(
                        request,
                        format!(
                            "countersign could not record this ({error}); nothing passes unaudited, retry"
                        ),
                    ),
                }
            }
        }
    }

    /// The target of a request made ahead of time, read live when it exists (its labels
    /// decide `objectSelector`). Unknown kinds and slow reads leave it unknown.
    async fn live_target(&self, namespace: &str, approval: &DeploymentApproval) -> Option<Value> {
        let target = &approval.spec.target;
        let (group, version) = match target.api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", target.api_version.as_str()),
        };
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &target.kind);
        let client = self.effects.client().clone();
        let read = async {
            let (resource, _) = kube::discovery::pinned_kind(&client, &gvk).await?;
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &resource);
            api.get_opt(&target.name).await
        };
        match bounded(read).await {
            Ok(Some(object)) => serde_json::to_value(object).ok(),
            Ok(None) => None,
            Err(error) => {
                tracing::debug!(%error, kind = target.kind, "target not read");
                None
            }
        }
    }

    /// Stamp `user`, `groups` and `time` on appended reviews that left them out.
    fn stamp(&self, request: &Request) -> Answer {
        if request.operation != Operation::Update || request.sub_resource.is_some() {
            return Answer::allow(request);
        }
        let (Ok(old), Some(new)) = (
            decode::<DeploymentApproval>(request.old_object.as_ref()),
            request.object.as_ref(),
        ) else {
            // The validating webhook denies what cannot be read.
            return Answer::allow(request);
        };
        let author = request.requester();
        let bindings = self.snapshot.bindings();
        let requester = &old.spec.change.requester;
        let chain = ApprovalChain {
            settings: &old.spec.policy.chain,
            requester,
            namespace: request.namespace.as_deref().unwrap_or_default(),
            bindings: &bindings,
            requested_at: old.spec.change.requested_at.0,
        };
        let groups = review_groups(&chain, &author);
        let operations = stamp_appended_reviews(
            old.spec.reviews.len(),
            new,
            &author,
            &groups,
            Timestamp::now(),
        );
        allow_patched(request, operations, "the review")
    }

    /// Keep a namespace's gated label as the policies say (`core::policy::matching::gated_label_patch`).
    async fn label_namespace(&self, request: &Request) -> Answer {
        let Some(namespace) = request.object.as_ref() else {
            return Answer::allow(request);
        };
        let policies = self.snapshot.policies();
        let region = self.settings.cluster_region.as_deref();
        // A label change that takes the namespace out of a policy's reach changes the
        // gate's own ground: audited, and refused where the policy says so.
        if let Some(old) = request.old_object.as_ref() {
            let name = namespace
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let left = policies_left_behind(
                &policies,
                name,
                &namespace_labels_of(old),
                &namespace_labels_of(namespace),
                region,
            );
            let author = request.requester();
            let uid = old
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let version = old
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            for policy in left {
                let verdict =
                    judge_ground_change(GroundChange::NamespaceLeftReach, Some(policy), &author);
                let answer = self
                    .carry_out_ground(request, verdict, |reason| {
                        namespace_left_entry(
                            name,
                            uid,
                            version,
                            policy_name(policy),
                            &author,
                            reason,
                            Timestamp::now(),
                        )
                    })
                    .await;
                if !answer.response.allowed {
                    return answer;
                }
            }
        }
        let operations = gated_label_patch(&policies, namespace, region);
        allow_patched(request, operations, "the namespace's gated label")
    }

    // ---- AuditEntries (SPEC §3, §7) ----

    fn audit(&self, request: &Request) -> Answer {
        let write = match (request.sub_resource.as_deref(), &request.operation) {
            (Some("status"), _) => AuditWrite::StatusUpdate,
            (_, Operation::Create) => AuditWrite::Create,
            (_, Operation::Update) => AuditWrite::Update,
            (_, Operation::Delete) => AuditWrite::Delete {
                past_retention: self.past_retention(request),
            },
            (_, Operation::Connect) => return Answer::allow(request),
        };
        let actor = request.username().unwrap_or_default();
        match audit_write(write, actor, &self.settings.own_username) {
            Ok(()) => Answer::allow(request),
            Err(why) => Answer::deny(request, why),
        }
    }

    /// Is the AuditEntry being deleted older than the audit retention?
    fn past_retention(&self, request: &Request) -> bool {
        let Some(retention) = self.settings.audit_retention else {
            return false;
        };
        decode::<crate::api::AuditEntry>(request.old_object.as_ref())
            .ok()
            .and_then(|entry| entry.spec.time.0.checked_add(retention).ok())
            .is_some_and(|due| due <= Timestamp::now())
    }

    // ---- ApprovalPolicies (SPEC §3) ----

    async fn policy(&self, request: &Request) -> Answer {
        let author = request.requester();
        let now = Timestamp::now();
        let old = match request.operation {
            Operation::Update | Operation::Delete => {
                match decode::<ApprovalPolicy>(request.old_object.as_ref()) {
                    Ok(old) => Some(old),
                    Err(why) => return Answer::deny(request, why),
                }
            }
            _ => None,
        };
        if let (Operation::Delete, Some(old)) = (&request.operation, &old) {
            let verdict = judge_ground_change(GroundChange::PolicyDeleted, Some(old), &author);
            return self
                .carry_out_ground(request, verdict, |reason| {
                    policy_ground_entry(
                        old,
                        AuditAction::PolicyDeleted,
                        "deleted",
                        &author,
                        reason,
                        now,
                    )
                })
                .await;
        }
        let policy = match decode::<ApprovalPolicy>(request.object.as_ref()) {
            Ok(policy) => policy,
            Err(why) => return Answer::deny(request, why),
        };
        if let Some(old) = &old
            && old.spec != policy.spec
        {
            let verdict = judge_ground_change(GroundChange::PolicySpecChanged, Some(old), &author);
            if !matches!(verdict, GroundVerdict::Pass) {
                let generation = policy.metadata.generation.unwrap_or_default();
                let answer = self
                    .carry_out_ground(request, verdict, |reason| {
                        policy_ground_entry(
                            old,
                            AuditAction::BreakGlass,
                            &format!("{generation}-break-glass"),
                            &author,
                            reason,
                            now,
                        )
                    })
                    .await;
                if !answer.response.allowed {
                    return answer;
                }
            }
        }
        // Off the async workers, under a deadline: validation is bounded by the chain
        // limits, but a policy is outside data, and a busy worker stalls other reviews.
        let name = policy.name_any();
        let spec = policy.spec.clone();
        let validating = tokio::task::spawn_blocking(move || validate_policy(&spec));
        let validation = match tokio::time::timeout(POLICY_VALIDATION_DEADLINE, validating).await {
            Ok(Ok(validation)) => validation,
            Ok(Err(error)) => {
                tracing::warn!(%error, policy = name, "policy validation failed");
                return Answer::deny(
                    request,
                    format!("countersign could not validate ApprovalPolicy {name}; it is refused"),
                );
            }
            Err(_) => {
                tracing::warn!(policy = name, "policy validation ran out of time");
                return Answer::deny(
                    request,
                    format!(
                        "countersign could not validate ApprovalPolicy {name} within {}s; it is refused",
                        POLICY_VALIDATION_DEADLINE.as_secs()
                    ),
                );
            }
        };
        if !validation.errors.is_empty() {
            let errors: Vec<String> = validation.errors.iter().map(|e| e.to_string()).collect();
            return Answer::deny(
                request,
                format!("ApprovalPolicy {name} is invalid: {}", errors.join("; ")),
            );
        }
        let mut answer = Answer::allow(request);
        for warning in validation.warnings {
            answer = answer.warn(warning);
        }
        answer
    }
}

/// How long the webhook waits for an ApprovalPolicy's validation before refusing the
/// policy (fail closed). The chain limits keep validation far below it; it stays well
/// inside the API server's 10 s webhook timeout, so the refusal, not a timeout, is what
/// the author sees.
const POLICY_VALIDATION_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// The approval a denial rests on, when a fresher copy could change the answer: the
/// request (approved a moment ago? opened a moment ago by another replica, and maybe
/// approved since?) or the lock holder (released a moment ago?).
fn stale_suspect(decision: &Decision) -> Option<String> {
    match &decision.verdict {
        Verdict::ApprovalRequired(requirement) => Some(requirement.approval_name.clone()),
        Verdict::Denied(DenyReason::RolloutInProgress { approval }) => Some(approval.clone()),
        _ => None,
    }
}

/// The longest reason line of a denial.
const MAX_REASON_CHARS: usize = 2000;

/// The reasons as one message: the verdict first, then one line each. Reasons quote names,
/// comments and fields: each is inert, so none can add a line or reach a terminal raw.
fn render(reasons: &[String]) -> String {
    let line = |reason: &String| crate::core::inert::bounded(reason, MAX_REASON_CHARS);
    match reasons.split_first() {
        None => String::new(),
        Some((first, rest)) => rest.iter().fold(line(first), |text, reason| {
            format!("{text}\n- {}", line(reason))
        }),
    }
}

/// Is `object` a Kubernetes object: a JSON object whose metadata decodes?
fn readable_object(object: &Value) -> Result<(), String> {
    if !object.is_object() {
        return Err("it is not a JSON object".into());
    }
    let metadata = object.get("metadata").unwrap_or(&Value::Null);
    ObjectMeta::deserialize(metadata)
        .map(|_| ())
        .map_err(|e| format!("metadata: {e}"))
}

fn target_reference(object: &Value, namespace: &str) -> ObjectReference {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    ObjectReference {
        api_version: text("/apiVersion"),
        kind: text("/kind"),
        name: text("/metadata/name"),
        namespace: Some(namespace.to_string()),
        uid: text("/metadata/uid"),
        ..ObjectReference::default()
    }
}

/// Stamp who made a policy's spec (`core::policy::authorship`).
fn stamp_policy(request: &Request) -> Answer {
    let Some(new) = request.object.as_ref() else {
        return Answer::allow(request);
    };
    if request.sub_resource.is_some() {
        return Answer::allow(request);
    }
    let old = match request.operation {
        Operation::Update => request.old_object.as_ref(),
        _ => None,
    };
    let operations = stamp_policy_change(old, new, &request.requester(), Timestamp::now());
    allow_patched(request, operations, "the policy's author")
}

/// Allow `request` with the JSON Patch `operations` (none: a plain allow); a patch that
/// cannot be built denies, naming `what` was to be stamped.
fn allow_patched(request: &Request, operations: Vec<Value>, what: &str) -> Answer {
    if operations.is_empty() {
        return Answer::allow(request);
    }
    let patch = serde_json::from_value::<json_patch::Patch>(Value::Array(operations))
        .map_err(|e| e.to_string())
        .and_then(|patch| request.allow().with_patch(patch).map_err(|e| e.to_string()));
    match patch {
        Ok(response) => Answer {
            response,
            verdict: Counted::Allowed,
        },
        Err(error) => Answer::deny(
            request,
            format!("countersign could not stamp {what}: {error}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A webhook whose API server does not exist: caches stay empty, live reads fail fast.
    fn offline_webhook() -> Webhook {
        let config = kube::Config::new("https://127.0.0.1:9".parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let (snapshot, _feeds) = Snapshot::watch(&client);
        Webhook {
            snapshot,
            effects: Effects::new(client, "countersign-system".into(), "test".into()),
            settings: Settings {
                install_namespace: "countersign-system".into(),
                own_username: "system:serviceaccount:countersign-system:countersign".into(),
                cluster_region: None,
                audit_retention: None,
            },
            metrics: Metrics::new(),
            seal_key: std::sync::Arc::new(SealKey::new(&[9; 32]).expect("a key")),
        }
    }

    /// A complete review: alice appends a bare `{decision}` to a real request, so mutated
    /// copies reach the review checks, not only the decoder.
    fn sample_review() -> Value {
        let mut old: Value = yaml_serde::from_str(include_str!(
            "../../tests/fixtures/crd-samples/deploymentapproval.yaml"
        ))
        .expect("fixture");
        old["metadata"]["namespace"] = Value::from("shop");
        old["spec"]["reviews"] = Value::Array(Vec::new());
        let mut new = old.clone();
        new["spec"]["reviews"] = serde_json::json!([{"decision": "Approve", "user": "alice",
            "time": "2025-06-02T08:30:00Z"}]);
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "countersign.dev", "version": "v1alpha1", "kind": "DeploymentApproval"},
                "resource": {"group": "countersign.dev", "version": "v1alpha1", "resource": "deploymentapprovals"},
                "name": "sample-deploymentapproval", "namespace": "shop", "operation": "UPDATE",
                "userInfo": {"username": "alice", "groups": ["shop-leads"]},
                "object": new,
                "oldObject": old,
            },
        })
    }

    /// Every JSON pointer into `value`.
    fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match value {
            Value::Object(map) => map
                .iter()
                .for_each(|(k, v)| pointers(v, format!("{at}/{k}"), out)),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, v)| pointers(v, format!("{at}/{i}"), out)),
            _ => {}
        }
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn answer(path: ReviewPath, body: &[u8]) -> Result<AdmissionReview<DynamicObject>, BadReview> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            offline_webhook()
                .review(path, body, &Caller::default())
                .await
        })
    }

    /// The answer to creating an ApprovalPolicy `prod` with these chain levels.
    fn policy_creation(levels: Value) -> AdmissionResponse {
        let policy = serde_json::json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
            "metadata": {"name": "prod", "uid": "p-1"},
            "spec": {"approval": {"levels": levels}},
        });
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-2",
                "kind": {"group": "countersign.dev", "version": "v1alpha1", "kind": "ApprovalPolicy"},
                "resource": {"group": "countersign.dev", "version": "v1alpha1", "resource": "approvalpolicies"},
                "name": "prod", "operation": "CREATE",
                "userInfo": {"username": "alice", "groups": ["platform"]},
                "object": policy,
            },
        });
        let body = serde_json::to_vec(&review).expect("json");
        answer(ReviewPath::Policies, &body)
            .expect("an answer")
            .response
            .expect("a response")
    }

    /// A policy is validated on the blocking pool, and its verdict is the answer: refused
    /// with validation's message, or allowed.
    #[test]
    fn a_policy_is_answered_by_its_validation() {
        let refused = policy_creation(serde_json::json!([
            {"name": "leads", "approvers": [{"user": "a"}, {"user": "b"}], "minApprovals": 2},
            {"name": "sre", "approvers": [{"user": "a"}, {"user": "b"}, {"user": "c"}], "minApprovals": 2},
        ]));
        assert!(!refused.allowed);
        assert_eq!(
            refused.result.message,
            "ApprovalPolicy prod is invalid: spec.approval.levels: levels \"leads\" and \"sre\" together need 4 more approvals from people not required elsewhere, but name only 3 (a, b, c); one person counts at one level only"
        );
        let allowed = policy_creation(serde_json::json!([
            {"name": "leads", "approvers": [{"user": "a"}, {"user": "b"}]},
        ]));
        assert!(allowed.allowed, "{:?}", allowed.result);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Arbitrary bytes: a 400 or an answer, never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), path in 0..5usize) {
            let _ = answer(ReviewPath::ALL[path], &body);
        }

        /// A real review with one value replaced by hostile JSON, or cut short: a 400, or
        /// an answer under the review's uid; never a panic.
        #[test]
        fn hostile_reviews_are_answered_or_refused(
            pick in any::<prop::sample::Index>(),
            replacement in any_json(),
            cut in prop::option::of(any::<prop::sample::Index>()),
            path in 0..5usize,
        ) {
            let mut review = sample_review();
            let mut all = Vec::new();
            pointers(&review, String::new(), &mut all);
            let target = pick.get(&all).clone();
            if let Some(slot) = review.pointer_mut(&target) {
                *slot = replacement;
            }
            let mut body = serde_json::to_vec(&review).expect("json");
            if let Some(cut) = cut {
                body.truncate(cut.index(body.len() + 1));
            }
            if let Ok(answered) = answer(ReviewPath::ALL[path], &body) {
                let response = answered.response.expect("a response");
                prop_assert!(!response.uid.is_empty());
            }
        }
    }

    #[test]
    fn an_undecodable_object_is_denied_under_the_reviews_uid() {
        let mut review = sample_review();
        review["request"]["object"]["metadata"]["labels"] = Value::from("not a map");
        let body = serde_json::to_vec(&review).expect("json");
        let response = answer(ReviewPath::Approvals, &body)
            .expect("an answer")
            .response
            .expect("a response");
        assert_eq!(response.uid, "u-1");
        assert!(!response.allowed);
        assert!(response.result.message.contains("cannot decode"));
    }

    #[test]
    fn the_sample_reaches_the_review_checks() {
        let body = serde_json::to_vec(&sample_review()).expect("json");
        let response = answer(ReviewPath::Approvals, &body)
            .expect("an answer")
            .response
            .expect("a response");
        // Decoded and judged: the review is dated years ago.
        assert!(
            response
                .result
                .message
                .contains("more than a minute from now"),
            "{}",
            response.result.message
        );
    }
}
