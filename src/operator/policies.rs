//! The ApprovalPolicy controller: reports in each policy's status whether it is in force
//! (`core::policy::validation::policy_status`), and records its creation and each spec change in
//! the audit trail with the author countersign's webhook stamped
//! (`core::policy::authorship::policy_entry`).
//!
//! `Ready` is written only once this replica's webhook holds the policy as seen, so a user
//! who waits for it (`kubectl wait --for=condition=Ready`) knows the next change is judged
//! under it here; other replicas' caches follow within their watch's latency.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};

use super::audit::record;
use super::{Context, ReconcileError};
use crate::api::ApprovalPolicy;
use crate::cluster::snapshot::Snapshot;
use crate::cluster::status::apply_status_of;
use crate::core::policy::authorship::policy_entry;
use crate::core::policy::validation::policy_status;

/// Run the controller until the future is dropped.
pub async fn run(context: Arc<Context>) {
    let api: Api<ApprovalPolicy> = Api::all(context.cluster.client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    super::controller::run("policies", controller, reconcile, context).await;
}

async fn reconcile(
    policy: Arc<ApprovalPolicy>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let entries = policy_entry(&policy).into_iter().collect();
    record(&context, entries, Some(policy.object_ref(&()))).await?;
    if !until_cached(&context.snapshot, &policy).await {
        return Ok(Action::requeue(CACHE_RETRY));
    }
    let status = policy_status(&policy, Timestamp::now());
    if policy.status.as_ref() != Some(&status) {
        let api = Api::<ApprovalPolicy>::all(context.cluster.client.clone());
        apply_status_of(&api, &*policy, &status)
            .await
            .map_err(|e| ReconcileError::Write(policy.name_any(), e))?;
    }
    Ok(Action::await_change())
}

/// How long a reconcile waits for the webhook's cache to hold a policy before it tries again.
const CACHE_PATIENCE: Duration = Duration::from_secs(2);
/// When a policy the cache did not yet hold is looked at again.
const CACHE_RETRY: Duration = Duration::from_millis(200);

/// Waits (up to `CACHE_PATIENCE`) until the webhook's policy cache holds `policy` at its
/// generation or a later one; whether it does.
async fn until_cached(snapshot: &Snapshot, policy: &ApprovalPolicy) -> bool {
    // Subscribed before the first look, so a change between the two is not missed.
    let mut changes = Box::pin(snapshot.policy_changes());
    let waited = tokio::time::timeout(CACHE_PATIENCE, async {
        while !holds(snapshot, policy) {
            if changes.next().await.is_none() {
                return false;
            }
        }
        true
    });
    waited.await.unwrap_or(false)
}

/// Whether the cache holds this policy (same uid) at its generation or a later one.
fn holds(snapshot: &Snapshot, policy: &ApprovalPolicy) -> bool {
    snapshot.policies().iter().any(|cached| {
        cached.metadata.uid == policy.metadata.uid
            && cached.metadata.generation >= policy.metadata.generation
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::approval::chain::RoleBindingSnapshot;
    use serde_json::json;

    fn policy(uid: &str, generation: i64) -> ApprovalPolicy {
        let mut policy: ApprovalPolicy = serde_json::from_value(json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
            "metadata": { "name": "p" },
            "spec": { "match": { "namespaces": ["shop"] },
                "approval": { "levels": [{ "name": "leads", "approvers": [{ "user": "alice" }] }] } },
        }))
        .expect("a valid policy");
        policy.metadata.uid = Some(uid.into());
        policy.metadata.generation = Some(generation);
        policy
    }

    fn cache_of(policies: Vec<ApprovalPolicy>) -> Snapshot {
        Snapshot::preloaded(policies, vec![], vec![], RoleBindingSnapshot::default())
    }

    #[tokio::test(start_paused = true)]
    async fn ready_waits_for_the_webhooks_cache_to_hold_this_generation() {
        let seen = policy("u1", 2);
        let cases = [
            ("not in the cache", cache_of(vec![]), false),
            (
                "an older generation",
                cache_of(vec![policy("u1", 1)]),
                false,
            ),
            (
                "a namesake with another uid",
                cache_of(vec![policy("u2", 2)]),
                false,
            ),
            ("this generation", cache_of(vec![policy("u1", 2)]), true),
            ("a later generation", cache_of(vec![policy("u1", 3)]), true),
        ];
        for (case, cache, held) in cases {
            assert_eq!(until_cached(&cache, &seen).await, held, "{case}");
        }
    }
}
