//! `/validate/workloads` (SPEC §1): a workload change. Gathers the decision's inputs (the
//! namespace's labels, the approvals of the target, read live when the cache may lag),
//! asks the core for the decision and its plan.

use jiff::Timestamp;
use kube::core::admission::Operation;
use kube::{Api, ResourceExt};
use serde_json::Value;

use super::request::Request;
use super::review::{Webhook, refuse};
use crate::api::{ChangeSet, DeploymentApproval, Operation as ChangeOperation};
use crate::cluster::calls::{WriteError, bounded};
use crate::core::admission::decision::{Decision, DecisionInput, decide, stale_suspect};
use crate::core::admission::review::{
    WorkloadReview, old_version_of, render, sync_member, workload_plan,
};
use crate::core::admission::sync::{RoundMember, SyncKey, SyncRole, held_plan, pass_plan};
use crate::core::approval::set::judged;
use crate::core::change::{object_reference, readable_object};
use crate::core::plan::{Answer, ReviewPlan};
use crate::core::policy::matching::ChangeRequest;

impl Webhook {
    pub(super) async fn workload(&self, request: &Request) -> ReviewPlan {
        let operation = match request.operation {
            Operation::Create => ChangeOperation::Create,
            Operation::Update => ChangeOperation::Update,
            _ => return ReviewPlan::answer(Answer::allow()),
        };
        let Some(object) = &request.object else {
            return refuse("the request carries no object to judge");
        };
        let old_object = request.old_object.as_ref();
        for (which, candidate) in [("object", Some(object)), ("oldObject", old_object)] {
            if let Some(Err(why)) = candidate.map(readable_object) {
                return refuse(format!(
                    "countersign cannot decode the request's {which}, so it is denied: {why}"
                ));
            }
        }
        let namespace = request.namespace.clone().unwrap_or_default();
        let labels = match self.namespace_labels(&namespace).await {
            Ok(labels) => labels,
            Err(why) => return refuse(why),
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
            .unwrap_or_default();
        // Members of change sets are judged with their set's reviews.
        let mut approvals: Vec<DeploymentApproval> = self
            .snapshot
            .approvals_for(&namespace, target_name)
            .iter()
            .map(|approval| self.snapshot.judged(approval))
            .collect();
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
        let caller = request.caller.record();
        let review = WorkloadReview {
            dry_run: request.dry_run(),
            requester: &requester,
            namespace: &namespace,
            target: object_reference(object, &namespace),
            old_version: old_version_of(old_object),
            install_namespace: &self.settings.install_namespace,
            replica: &self.settings.replica,
            caller: &caller,
            seal_key: &self.seal_key,
            now: Timestamp::now(),
        };
        match sync_member(&review, &decision) {
            Some((key, member)) => self.sync_dry_run(&key, member, &decision).await,
            None => workload_plan(&review, &decision),
        }
    }

    /// A dry run of a GitOps sync's round (`core::admission::sync`): remembered; passed, or
    /// held until the round goes quiet and then denied, naming the whole round.
    async fn sync_dry_run(
        &self,
        key: &SyncKey,
        member: RoundMember,
        decision: &Decision,
    ) -> ReviewPlan {
        let rounds = &self.cluster.sync_rounds;
        match rounds.join(key, member.clone()) {
            SyncRole::Pass => pass_plan(key, &member),
            SyncRole::Hold => {
                let members = rounds.until_quiet(key).await;
                held_plan(key, &members, &render(&decision.reasons))
            }
        }
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

    /// Read approval `name` live into `approvals` (judged with its change set, read live too:
    /// a set approved a moment ago is what a member's denial most likely rests on).
    /// `Ok(true)`: it differed from the cache.
    async fn refresh(
        &self,
        namespace: &str,
        name: &str,
        approvals: &mut Vec<DeploymentApproval>,
    ) -> Result<bool, WriteError> {
        let api: Api<DeploymentApproval> = Api::namespaced(self.cluster.client.clone(), namespace);
        let live = bounded(api.get_opt(name)).await?;
        let live = match live {
            Some(approval) => Some(self.judged_live(namespace, approval).await?),
            None => None,
        };
        let cached = approvals.iter().position(|a| a.name_any() == name);
        let changed = match (&live, cached) {
            (Some(live), Some(i)) => {
                live.resource_version() != approvals[i].resource_version()
                    || live.spec.reviews != approvals[i].spec.reviews
            }
            (None, None) => false,
            _ => true,
        };
        if let Some(i) = cached {
            approvals.remove(i);
        }
        approvals.extend(live);
        Ok(changed)
    }

    /// `approval` judged with its change set as stored now.
    async fn judged_live(
        &self,
        namespace: &str,
        approval: DeploymentApproval,
    ) -> Result<DeploymentApproval, WriteError> {
        let Some(set_name) = approval.spec.change_set.clone() else {
            return Ok(approval);
        };
        let sets: Api<ChangeSet> = Api::namespaced(self.cluster.client.clone(), namespace);
        let set = bounded(sets.get_opt(&set_name)).await?;
        Ok(judged(&approval, set.as_ref()))
    }
}
