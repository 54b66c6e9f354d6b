//! `/mutate/namespaces` (docs/security.md, "When countersign is down"): keep a namespace's
//! `countersign.dev/gated` label as the policies say; a label change that takes it out of
//! a policy's reach is the gate's own ground, audited with its author or refused.

use jiff::Timestamp;
use serde_json::Value;

use super::request::Request;
use super::review::Webhook;
use crate::core::audit::ground::{
    GroundChange, ground_plan, judge_ground_change, namespace_left_entry,
};
use crate::core::plan::{Answer, ReviewPlan};
use crate::core::policy::matching::{
    gated_label_patch, namespace_labels_of, policies_left_behind, policy_name,
};

impl Webhook {
    pub(super) fn label_namespace(&self, request: &Request) -> ReviewPlan {
        let Some(namespace) = request.object.as_ref() else {
            return ReviewPlan::answer(Answer::allow());
        };
        let policies = self.snapshot.policies();
        let region = self.settings.cluster_region.as_deref();
        let labelled = Answer::patched(gated_label_patch(&policies, namespace, region));
        let Some(old) = request.old_object.as_ref() else {
            return ReviewPlan::answer(labelled);
        };
        let text = |object: &Value, pointer: &str| {
            object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let name = text(namespace, "/metadata/name");
        let (uid, version) = (
            text(old, "/metadata/uid"),
            text(old, "/metadata/resourceVersion"),
        );
        let author = request.requester();
        let now = Timestamp::now();
        let verdicts = policies_left_behind(
            &policies,
            &name,
            &namespace_labels_of(old),
            &namespace_labels_of(namespace),
            region,
        )
        .into_iter()
        .map(|policy| {
            let verdict =
                judge_ground_change(GroundChange::NamespaceLeftReach, Some(policy), &author);
            let entry = namespace_left_entry(
                &name,
                &uid,
                &version,
                policy_name(policy),
                &author,
                verdict.reason(),
                now,
            );
            (verdict, entry)
        })
        .collect();
        ground_plan(
            verdicts,
            labelled,
            request.dry_run(),
            &self.settings.install_namespace,
            &request.caller.record(),
        )
    }
}
