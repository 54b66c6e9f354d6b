//! `/validate/approvals` and `/mutate/approvals` (SPEC §3, §4): DeploymentApprovals (and
//! ChangeSets, handed to `change_sets`). Their
//! status is countersign's; a request opened by anyone else must be theirs and sealed; an
//! edit may only append the editor's own review; a deletion is the gate's own ground.

use jiff::Timestamp;
use kube::Api;
use kube::api::DynamicObject;
use kube::core::admission::Operation;
use serde_json::Value;

use super::request::{Request, decode};
use super::review::{Webhook, refuse};
use crate::api::{DeploymentApproval, DeploymentApprovalSpec};
use crate::cluster::calls::bounded;
use crate::core::approval::chain::ApprovalChain;
use crate::core::approval::request::{
    RequestCreate, validate_life_metadata_edit, validate_request_create,
};
use crate::core::approval::review::{
    ReviewEdit, ReviewRefusal, review_groups, stamp_appended_reviews, validate_review_edit,
    validate_review_standing,
};
use crate::core::audit::custody::approval_status_write;
use crate::core::audit::ground::{
    GroundChange, ground_plan, judge_ground_change, request_deleted_entry,
};
use crate::core::plan::{Answer, ReviewPlan};
use crate::core::policy::matching::policy_named;

impl Webhook {
    /// Requests and change sets alike: status is countersign's, its own creates pass; the
    /// rest is each kind's.
    pub(super) async fn approval(&self, request: &Request) -> ReviewPlan {
        if request.sub_resource.as_deref() == Some("status") {
            let actor = request.username().unwrap_or_default();
            return ReviewPlan::answer(Answer::from_result(approval_status_write(
                actor,
                &self.settings.own_username,
            )));
        }
        let is_set = request.resource.resource == super::change_sets::RESOURCE;
        match request.operation {
            Operation::Create if self.is_own(request) => ReviewPlan::answer(Answer::allow()),
            Operation::Connect => ReviewPlan::answer(Answer::allow()),
            _ if is_set => self.change_set(request).await,
            Operation::Create => self.request_created(request).await,
            Operation::Update => self.request_edited(request),
            Operation::Delete => self.request_deleted(request),
        }
    }

    /// A request opened by someone else (`countersign request`): theirs, sealed, under
    /// the governing policy's chain.
    async fn request_created(&self, request: &Request) -> ReviewPlan {
        let approval = match decode::<DeploymentApproval>(request.object.as_ref()) {
            Ok(approval) => approval,
            Err(why) => return refuse(why),
        };
        let namespace = request.namespace.clone().unwrap_or_default();
        let labels = match self.namespace_labels(&namespace).await {
            Ok(labels) => labels,
            Err(why) => return refuse(why),
        };
        let target = self.live_target(&namespace, &approval).await;
        let policies = self.snapshot.policies();
        ReviewPlan::answer(Answer::from_result(validate_request_create(
            &RequestCreate {
                approval: &approval,
                creator: &request.requester(),
                namespace: &namespace,
                namespace_labels: &labels,
                cluster_region: self.settings.cluster_region.as_deref(),
                target_object: target.as_ref(),
                policies: &policies,
                seal_key: &self.seal_key,
                validations: self.snapshot.validations(),
                now: Timestamp::now(),
            },
        )))
    }

    /// An edit: nothing but the editor's own review appended, and nothing of what decides
    /// the request's life.
    fn request_edited(&self, request: &Request) -> ReviewPlan {
        let (old, new) = match (
            decode::<DeploymentApproval>(request.old_object.as_ref()),
            decode::<DeploymentApproval>(request.object.as_ref()),
        ) {
            (Ok(old), Ok(new)) => (old, new),
            (Err(why), _) | (_, Err(why)) => return refuse(why),
        };
        let author = request.requester();
        let now = Timestamp::now();
        if !self.is_own(request)
            && let Err(refusal) =
                validate_life_metadata_edit(&old.metadata, &new.metadata, &author.username)
        {
            return refuse(refusal);
        }
        self.edit_plan(
            validate_review_edit(&old.spec, &new.spec, &author, now),
            &old,
            now,
        )
    }

    /// The answer to an edit of `old` (a request, or a set as one) that
    /// `validate_review_edit` judged `edit`: an appended review must also stand as the
    /// request stands.
    pub(super) fn edit_plan(
        &self,
        edit: Result<ReviewEdit, ReviewRefusal>,
        old: &DeploymentApproval,
        now: Timestamp,
    ) -> ReviewPlan {
        let result = match edit {
            Err(refusal) => Err(refusal.to_string()),
            Ok(ReviewEdit::NoReview) => Ok(()),
            Ok(ReviewEdit::Appended(review)) => {
                let bindings = self.snapshot.bindings();
                validate_review_standing(old, &review, &bindings, now).map_err(|r| r.to_string())
            }
        };
        ReviewPlan::answer(Answer::from_result(result))
    }

    /// A deletion: audited with its author, refused where the policy says so.
    fn request_deleted(&self, request: &Request) -> ReviewPlan {
        match decode::<DeploymentApproval>(request.old_object.as_ref()) {
            Ok(approval) => self.deletion_plan(request, &approval),
            Err(why) => refuse(why),
        }
    }

    /// The deletion of `approval` (a request, or a set as one): audited with its author,
    /// refused where its policy says so.
    pub(super) fn deletion_plan(
        &self,
        request: &Request,
        approval: &DeploymentApproval,
    ) -> ReviewPlan {
        let author = request.requester();
        let policies = self.snapshot.policies();
        let policy = policy_named(&policies, &approval.spec.policy.name);
        let verdict = judge_ground_change(
            GroundChange::RequestDeleted(approval.phase()),
            policy,
            &author,
        );
        let entry = request_deleted_entry(approval, &author, verdict.reason(), Timestamp::now());
        ground_plan(
            vec![(verdict, entry)],
            Answer::allow(),
            request.dry_run(),
            &self.settings.install_namespace,
            &request.caller.record(),
        )
    }

    /// The target of a request made ahead of time, read live when it exists (its labels
    /// decide `objectSelector`). Unknown kinds and slow reads leave it unknown.
    async fn live_target(&self, namespace: &str, approval: &DeploymentApproval) -> Option<Value> {
        let target = &approval.spec.target;
        let gvk = crate::cluster::gvk(&target.api_version, &target.kind);
        let client = self.cluster.client.clone();
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

    /// `/mutate/approvals`: stamp `user`, `groups` and `time` on appended reviews that left
    /// them out.
    pub(super) fn stamp_review(&self, request: &Request) -> ReviewPlan {
        if request.operation != Operation::Update || request.sub_resource.is_some() {
            return ReviewPlan::answer(Answer::allow());
        }
        if request.resource.resource == super::change_sets::RESOURCE {
            return self.stamp_set_review(request);
        }
        let (Ok(old), Some(new)) = (
            decode::<DeploymentApproval>(request.old_object.as_ref()),
            request.object.as_ref(),
        ) else {
            // The validating webhook denies what cannot be read.
            return ReviewPlan::answer(Answer::allow());
        };
        self.stamp_plan(request, &old.spec, new)
    }

    /// The stamps for the reviews appended to the raw `new` object over `old` (a request's
    /// spec, or a set's as one request): its chain says which of the author's groups count.
    pub(super) fn stamp_plan(
        &self,
        request: &Request,
        old: &DeploymentApprovalSpec,
        new: &Value,
    ) -> ReviewPlan {
        let author = request.requester();
        let bindings = self.snapshot.bindings();
        let chain = ApprovalChain {
            settings: &old.policy.chain,
            requester: &old.change.requester,
            namespace: request.namespace.as_deref().unwrap_or_default(),
            bindings: &bindings,
            requested_at: old.change.requested_at.0,
        };
        let groups = review_groups(&chain, &author);
        let operations =
            stamp_appended_reviews(old.reviews.len(), new, &author, &groups, Timestamp::now());
        ReviewPlan::answer(Answer::patched(operations))
    }
}
