//! May this person create this DeploymentApproval? (the ahead-of-time `request` path)
//!
//! countersign opens a request itself on the first denied attempt at a change. Anyone else
//! (a deployer asking ahead of a GitOps sync, `countersign request`) may create one only
//! for a change of their own, under the policy that governs that change with its current
//! chain, with no reviews and no status: nobody can open a request in someone else's
//! name, under a laxer chain, pre-approved, or dated so it never expires; and nobody
//! writes what approvers read: the summary must carry countersign's seal
//! (`core::approval::seal`), which only the proposal of a server-side dry run hands out.

use std::borrow::Cow;
use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::api::{ApprovalPolicy, DeploymentApproval, UserInfo};
use crate::core::admission::decision::Validations;
use crate::core::admission::decision::is_request_name;
use crate::core::approval::seal::{SealKey, check};
use crate::core::change::{ChangeDigest, api_group, group_kind};
use crate::core::policy::matching::{ChangeRequest, exclusion, matching_policies, policy_name};

/// How far `spec.change.requestedAt` may be from the API server's clock: a request dated
/// later would outlive its `requestTTL`, one dated earlier would refuse fresh reviews.
pub const REQUESTED_AT_CLOCK_SKEW: SignedDuration = SignedDuration::from_mins(1);

/// One CREATE of a DeploymentApproval by someone other than countersign.
#[derive(Clone, Copy, Debug)]
pub struct RequestCreate<'a> {
    pub approval: &'a DeploymentApproval,
    /// The authenticated user of the API call.
    pub creator: &'a UserInfo,
    /// The namespace the approval is created in (the target's namespace).
    pub namespace: &'a str,
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub cluster_region: Option<&'a str>,
    /// The target object as the change would make it, when known (its labels decide
    /// `objectSelector`); otherwise only `spec.target` is known.
    pub target_object: Option<&'a Value>,
    pub policies: &'a [ApprovalPolicy],
    /// The key countersign seals summaries with.
    pub seal_key: &'a SealKey,
    /// Policy validation, cached per policy generation by the webhook.
    pub validations: &'a dyn Validations,
    pub now: Timestamp,
}

/// Why such a CREATE is refused; each message names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefusal {
    #[error("status must be empty: countersign records where a request stands")]
    HasStatus,
    #[error("spec.reviews must be empty: reviews are added to a request once it exists")]
    HasReviews,
    #[error(
        "spec.change.requester.username is {claimed:?} but the request was made by {actual:?}; request changes in your own name only"
    )]
    NotTheRequester { claimed: String, actual: String },
    #[error(
        "spec.change.requester.groups names {0:?}, which is not one of your authenticated groups"
    )]
    GroupNotHeld(String),
    #[error("spec.target.{0} must not be empty")]
    TargetIncomplete(&'static str),
    #[error("spec.target is {claimed} but the change is to {actual}")]
    TargetMismatch { claimed: String, actual: String },
    #[error("spec.change.digest {0:?} is not sha256: followed by 64 lowercase hex digits")]
    BadDigest(String),
    #[error(
        "metadata.name {name:?} is not a name for this change: use {expected:?} (or {expected}-2, -3, … when that is taken)"
    )]
    BadName { name: String, expected: String },
    #[error(
        "spec.change.requestedAt is {time}, more than a minute from now ({now}); leave it to the current time"
    )]
    RequestedAtOutOfRange { time: Timestamp, now: Timestamp },
    #[error(
        "no ApprovalPolicy requires approval of this change for {0}; there is nothing to request"
    )]
    NoPolicy(String),
    #[error("policy {0} is invalid, so no request can be made under it: {1}")]
    PolicyUnusable(String, String),
    #[error("spec.policy.name is {claimed:?} but policy {governing:?} governs this change")]
    WrongPolicy { claimed: String, governing: String },
    #[error(
        "spec.policy.chain is not the current chain of policy {0}; copy the policy's spec.approval unchanged"
    )]
    StaleChain(String),
    #[error(
        "spec.policy.ignoreFields is not policy {0}'s list of ignored fields; leave it out or copy the policy's"
    )]
    StaleIgnoreFields(String),
    #[error("spec.policy.grant is not policy {0}'s spec.grant; leave it out or copy the policy's")]
    StaleGrant(String),
    #[error(
        "spec.change.summary is not countersign's own for this change ({0}); approvers read what countersign computed from the object, so open requests ahead of time with `countersign request -f MANIFEST`, which takes countersign's sealed proposal from a server-side dry run"
    )]
    SummaryNotSealed(&'static str),
    #[error(
        "metadata.{0} must be empty: what decides a request's life (its owners, its finalizers) is countersign's alone"
    )]
    LifeMetadata(&'static str),
    #[error(
        "metadata.{0} of a DeploymentApproval may not be changed: what decides a request's life is countersign's alone (a request is withdrawn by deleting it, which is audited)"
    )]
    LifeMetadataChanged(&'static str),
    #[error(
        "spec.change.origin must be empty: only countersign records that a request came from a GitOps sync (it opens those requests itself)"
    )]
    HasOrigin,
}

/// Check a CREATE of a DeploymentApproval by someone other than countersign.
pub fn validate_request_create(input: &RequestCreate) -> Result<(), RequestRefusal> {
    fresh_request_by_its_requester(input)?;
    let object = the_target(input)?;
    the_sealed_change(input)?;
    the_governing_policy(input, object)
}

/// The request is new (no status, no reviews, no life metadata), made by the user it names
/// as requester, holding every group it claims, at about the time it says.
fn fresh_request_by_its_requester(input: &RequestCreate) -> Result<(), RequestRefusal> {
    let approval = input.approval;
    let spec = &approval.spec;
    if approval.status.is_some() {
        return Err(RequestRefusal::HasStatus);
    }
    if let Some(field) = life_metadata(&approval.metadata) {
        return Err(RequestRefusal::LifeMetadata(field));
    }
    if !spec.reviews.is_empty() {
        return Err(RequestRefusal::HasReviews);
    }
    if spec.change.origin.is_some() {
        return Err(RequestRefusal::HasOrigin);
    }
    let requester = &spec.change.requester;
    if requester.username != input.creator.username {
        return Err(RequestRefusal::NotTheRequester {
            claimed: requester.username.clone(),
            actual: input.creator.username.clone(),
        });
    }
    if let Some(group) = requester
        .groups
        .iter()
        .find(|g| !input.creator.groups.contains(g))
    {
        return Err(RequestRefusal::GroupNotHeld(group.clone()));
    }
    let requested_at = spec.change.requested_at.0;
    if requested_at.duration_since(input.now).abs() > REQUESTED_AT_CLOCK_SKEW {
        return Err(RequestRefusal::RequestedAtOutOfRange {
            time: requested_at,
            now: input.now,
        });
    }
    Ok(())
}

/// The target is complete and, when the object exists, is that object in this namespace.
/// Returns the object the policies are matched against (a stub when it does not exist yet).
fn the_target<'a>(input: &'a RequestCreate) -> Result<Cow<'a, Value>, RequestRefusal> {
    let target = &input.approval.spec.target;
    for (field, value) in [
        ("apiVersion", &target.api_version),
        ("kind", &target.kind),
        ("name", &target.name),
    ] {
        if value.is_empty() {
            return Err(RequestRefusal::TargetIncomplete(field));
        }
    }
    let object = match input.target_object {
        Some(object) => Cow::Borrowed(object),
        None => Cow::Owned(json!({
            "apiVersion": target.api_version,
            "kind": target.kind,
            "metadata": {"name": target.name, "namespace": input.namespace},
        })),
    };
    let (group, kind) = group_kind(&object);
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(input.namespace);
    if group != api_group(&target.api_version)
        || kind != target.kind
        || name != target.name
        || namespace != input.namespace
    {
        return Err(RequestRefusal::TargetMismatch {
            claimed: format!("{} {}/{}", target.kind, input.namespace, target.name),
            actual: format!("{kind} {namespace}/{name}"),
        });
    }
    Ok(object)
}

/// The digest parses, the name is the one countersign gives this change, and the summary
/// carries countersign's seal.
fn the_sealed_change(input: &RequestCreate) -> Result<(), RequestRefusal> {
    let approval = input.approval;
    let spec = &approval.spec;
    let digest = ChangeDigest::parse(&spec.change.digest)
        .ok_or_else(|| RequestRefusal::BadDigest(spec.change.digest.clone()))?;
    let approval_name = approval.metadata.name.as_deref().unwrap_or_default();
    if !is_request_name(approval_name, &spec.target.name, &digest) {
        return Err(RequestRefusal::BadName {
            name: approval_name.to_string(),
            expected: crate::core::admission::decision::approval_name(&spec.target.name, &digest),
        });
    }
    if let Some(problem) = check(input.seal_key, input.namespace, spec).problem() {
        return Err(RequestRefusal::SummaryNotSealed(problem));
    }
    Ok(())
}

/// A usable policy with an approval chain governs the target, and the request copies its
/// name, chain, ignored fields and grant as they are now.
fn the_governing_policy(
    input: &RequestCreate,
    object: Cow<'_, Value>,
) -> Result<(), RequestRefusal> {
    let spec = &input.approval.spec;
    let request = ChangeRequest {
        operation: spec.change.operation,
        object: &object,
        old_object: None,
        namespace: input.namespace,
        namespace_labels: input.namespace_labels,
        requester: input.creator,
        cluster_region: input.cluster_region,
        dry_run: true,
    };
    let governing = matching_policies(input.policies, &request)
        .into_iter()
        .filter(|p| exclusion(p, &request).is_none())
        .find(|p| p.spec.approval.is_some())
        .ok_or_else(|| RequestRefusal::NoPolicy(input.creator.username.clone()))?;
    let governing_name = policy_name(governing);
    if let Some(error) = input.validations.policy_errors(governing).first() {
        return Err(RequestRefusal::PolicyUnusable(
            governing_name.to_string(),
            error.to_string(),
        ));
    }
    if spec.policy.name != governing_name {
        return Err(RequestRefusal::WrongPolicy {
            claimed: spec.policy.name.clone(),
            governing: governing_name.to_string(),
        });
    }
    if governing.spec.approval.as_ref() != Some(&spec.policy.chain) {
        return Err(RequestRefusal::StaleChain(governing_name.to_string()));
    }
    if spec
        .policy
        .ignore_fields
        .as_ref()
        .is_some_and(|fields| *fields != governing.spec.effective_ignore_fields())
    {
        return Err(RequestRefusal::StaleIgnoreFields(
            governing_name.to_string(),
        ));
    }
    if spec.policy.grant.is_some() && spec.policy.grant != governing.spec.grant {
        return Err(RequestRefusal::StaleGrant(governing_name.to_string()));
    }
    Ok(())
}

/// The metadata that decides when a request goes away, if any is set: `ownerReferences`
/// (the garbage collector deletes a request whose owner is gone, and the trail would name
/// the collector, not whoever arranged it) or `finalizers` (a request that can never be
/// deleted).
pub fn life_metadata(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<&'static str> {
    if metadata
        .owner_references
        .as_ref()
        .is_some_and(|owners| !owners.is_empty())
    {
        return Some("ownerReferences");
    }
    if metadata
        .finalizers
        .as_ref()
        .is_some_and(|finalizers| !finalizers.is_empty())
    {
        return Some("finalizers");
    }
    None
}

/// Who removes what the API server itself put on an object being deleted (the
/// `foregroundDeletion` and `orphan` finalizers, owners that are gone).
const GARBAGE_COLLECTORS: &[&str] = &[
    "system:serviceaccount:kube-system:generic-garbage-collector",
    "system:kube-controller-manager",
];

/// May `editor` make this change to a request's metadata? What decides when a request goes
/// away (`ownerReferences`, `finalizers`) is countersign's alone; the garbage collector may
/// only take them away.
pub fn validate_life_metadata_edit(
    old: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    new: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    editor: &str,
) -> Result<(), RequestRefusal> {
    match life_metadata_edit(old, new, editor) {
        Some(field) => Err(RequestRefusal::LifeMetadataChanged(field)),
        None => Ok(()),
    }
}

/// The field of a request's metadata `editor` may not change so, if any.
fn life_metadata_edit(
    old: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    new: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    editor: &str,
) -> Option<&'static str> {
    let owners = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.owner_references.clone().unwrap_or_default()
    };
    let finalizers = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.finalizers.clone().unwrap_or_default()
    };
    let collector = GARBAGE_COLLECTORS.contains(&editor);
    let (old_owners, new_owners) = (owners(old), owners(new));
    let owners_ok = old_owners == new_owners
        || (collector && new_owners.iter().all(|o| old_owners.contains(o)));
    if !owners_ok {
        return Some("ownerReferences");
    }
    let (old_finalizers, new_finalizers) = (finalizers(old), finalizers(new));
    let finalizers_ok = old_finalizers == new_finalizers
        || (collector && new_finalizers.iter().all(|f| old_finalizers.contains(f)));
    if !finalizers_ok {
        return Some("finalizers");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DeploymentApprovalStatus;
    use crate::core::admission::decision::approval_name;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const NOW: &str = "2025-06-02T10:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    fn policy(name: &str, priority: i32, approver: &str) -> ApprovalPolicy {
        serde_json::from_value(json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
            "metadata": {"name": name},
            "spec": {"priority": priority,
                     "exclude": {"groups": ["release-bots"]},
                     "match": {"objectSelector": {"matchExpressions": [
                        {"key": "tier", "operator": "NotIn", "values": ["scratch"]}]}},
                     "approval": {"levels": [{"name": "only", "approvers": [{"user": approver}]}]}}
        }))
        .unwrap()
    }

    fn digest() -> ChangeDigest {
        ChangeDigest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap()
    }

    fn seal_key() -> SealKey {
        SealKey::new(&[7; 32]).unwrap()
    }

    /// dave's own request for a change of shop/web under policy `prod`, sealed as the
    /// dry run's proposal hands it out.
    fn request() -> DeploymentApproval {
        let mut approval: DeploymentApproval = serde_json::from_value(json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "DeploymentApproval",
            "metadata": {"name": approval_name("web", &digest()), "namespace": "shop"},
            "spec": {
                "target": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "change": {"digest": digest().to_string(), "summary": {"text": "t"},
                           "requester": {"username": "dave", "groups": ["developers"]},
                           "operation": "UPDATE", "requestedAt": NOW},
                "policy": {"name": "prod",
                           "chain": {"levels": [{"name": "only", "approvers": [{"user": "alice"}]}]}}
            }
        }))
        .unwrap();
        approval.spec = crate::core::approval::seal::sealed(&seal_key(), "shop", approval.spec);
        approval
    }

    fn tweak(change: impl FnOnce(&mut DeploymentApproval)) -> DeploymentApproval {
        let mut approval = request();
        change(&mut approval);
        approval
    }

    /// (name, the approval, its creator, the policies, the target object, the verdict).
    type Case<'a> = (
        &'static str,
        DeploymentApproval,
        &'a UserInfo,
        &'a [ApprovalPolicy],
        Option<&'a Value>,
        Result<(), RequestRefusal>,
    );

    #[test]
    fn only_the_garbage_collector_may_take_owners_and_finalizers_away() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "gone".into(),
            uid: "0000".into(),
            ..Default::default()
        };
        let plain = ObjectMeta::default();
        let owned = ObjectMeta {
            owner_references: Some(vec![owner]),
            ..Default::default()
        };
        let finalized = ObjectMeta {
            finalizers: Some(vec!["foregroundDeletion".into()]),
            ..Default::default()
        };
        let gc = GARBAGE_COLLECTORS[0];
        let cases = [
            (
                "an approver adds an owner",
                &plain,
                &owned,
                "alice",
                Some("ownerReferences"),
            ),
            (
                "an approver adds a finalizer",
                &plain,
                &finalized,
                "alice",
                Some("finalizers"),
            ),
            (
                "an approver removes a finalizer",
                &finalized,
                &plain,
                "alice",
                Some("finalizers"),
            ),
            (
                "the collector adds an owner",
                &plain,
                &owned,
                gc,
                Some("ownerReferences"),
            ),
            (
                "the collector removes a finalizer",
                &finalized,
                &plain,
                gc,
                None,
            ),
            ("the collector removes an owner", &owned, &plain, gc, None),
            ("labels only", &plain, &plain, "alice", None),
        ];
        for (what, old, new, editor, expected) in cases {
            assert_eq!(life_metadata_edit(old, new, editor), expected, "{what}");
        }
    }

    #[test]
    fn request_create_table() {
        let dave = UserInfo::new("dave", &["developers", "system:authenticated"]);
        let bot = UserInfo::new("dave", &["release-bots"]);
        let prod = vec![policy("prod", 10, "alice")];
        let stricter = vec![policy("prod", 10, "alice"), policy("audit", 20, "cto")];
        let scratch = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"tier": "scratch"}}});
        let other_object = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "shop"}});
        let cases: Vec<Case> = vec![
            (
                "own request, current chain",
                request(),
                &dave,
                &prod,
                None,
                Ok(()),
            ),
            (
                "a later attempt's name",
                tweak(|a| a.metadata.name = Some(format!("{}-2", approval_name("web", &digest())))),
                &dave,
                &prod,
                None,
                Ok(()),
            ),
            (
                "with a status",
                tweak(|a| {
                    a.status = Some(DeploymentApprovalStatus {
                        phase: crate::api::ApprovalPhase::Approved,
                        ..Default::default()
                    })
                }),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::HasStatus),
            ),
            (
                "with a review",
                tweak(|a| {
                    a.spec.reviews.push(crate::api::Review {
                        user: "alice".into(),
                        groups: vec![],
                        decision: crate::api::ReviewDecision::Approve,
                        comment: None,
                        time: Time(now()),
                    })
                }),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::HasReviews),
            ),
            (
                "in someone else's name",
                tweak(|a| a.spec.change.requester.username = "erin".into()),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::NotTheRequester {
                    claimed: "erin".into(),
                    actual: "dave".into(),
                }),
            ),
            (
                "claiming a group not held",
                tweak(|a| a.spec.change.requester.groups.push("oncall".into())),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::GroupNotHeld("oncall".into())),
            ),
            (
                "dated in the future to outlive its requestTTL",
                tweak(|a| {
                    a.spec.change.requested_at = Time(now() + SignedDuration::from_hours(48))
                }),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::RequestedAtOutOfRange {
                    time: now() + SignedDuration::from_hours(48),
                    now: now(),
                }),
            ),
            (
                "under another policy's name",
                tweak(|a| a.spec.policy.name = "staging".into()),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::WrongPolicy {
                    claimed: "staging".into(),
                    governing: "prod".into(),
                }),
            ),
            (
                "a stricter policy governs",
                request(),
                &dave,
                &stricter,
                None,
                Err(RequestRefusal::WrongPolicy {
                    claimed: "prod".into(),
                    governing: "audit".into(),
                }),
            ),
            (
                "a laxer chain than the policy's",
                tweak(|a| a.spec.policy.chain.levels[0].approvers[0].user = Some("dave".into())),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::StaleChain("prod".into())),
            ),
            (
                "ignored fields the policy does not ignore",
                tweak(|a| a.spec.policy.ignore_fields = Some(vec!["/spec/template".into()])),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::StaleIgnoreFields("prod".into())),
            ),
            (
                "the policy's own ignored fields",
                tweak(|a| a.spec.policy.ignore_fields = Some(vec!["/spec/replicas".into()])),
                &dave,
                &prod,
                None,
                Ok(()),
            ),
            (
                "a deploy token the policy does not grant",
                tweak(|a| {
                    a.spec.policy.grant = Some(crate::api::GrantSettings {
                        ttl: Some("24h".into()),
                    })
                }),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::StaleGrant("prod".into())),
            ),
            (
                "no policy selects the object",
                request(),
                &dave,
                &prod,
                Some(&scratch),
                Err(RequestRefusal::NoPolicy("dave".into())),
            ),
            (
                "an exempt requester has nothing to request",
                tweak(|a| a.spec.change.requester.groups = vec!["release-bots".into()]),
                &bot,
                &prod,
                None,
                Err(RequestRefusal::NoPolicy("dave".into())),
            ),
            (
                "the object is not the target",
                request(),
                &dave,
                &prod,
                Some(&other_object),
                Err(RequestRefusal::TargetMismatch {
                    claimed: "Deployment shop/web".into(),
                    actual: "StatefulSet shop/web".into(),
                }),
            ),
            (
                "a malformed digest",
                tweak(|a| a.spec.change.digest = "sha256:ABC".into()),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::BadDigest("sha256:ABC".into())),
            ),
            (
                "squatting on another change's name",
                tweak(|a| a.metadata.name = Some("web-00000000".into())),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::BadName {
                    name: "web-00000000".into(),
                    expected: approval_name("web", &digest()),
                }),
            ),
            (
                "no target name",
                tweak(|a| a.spec.target.name = String::new()),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::TargetIncomplete("name")),
            ),
            (
                "a summary of the requester's own",
                tweak(|a| {
                    a.spec.change.summary.text = "Deployment shop/web: image web a → b".into();
                }),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::SummaryNotSealed(
                    crate::core::approval::seal::SealCheck::Mismatch
                        .problem()
                        .unwrap(),
                )),
            ),
            (
                "no seal",
                tweak(|a| a.spec.change.summary_seal = None),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::SummaryNotSealed(
                    crate::core::approval::seal::SealCheck::Missing
                        .problem()
                        .unwrap(),
                )),
            ),
            (
                "a seal copied from another request",
                tweak(|a| {
                    let mut other = request();
                    other.spec.change.summary.text = "another change".into();
                    let other =
                        crate::core::approval::seal::sealed(&seal_key(), "shop", other.spec);
                    a.spec.change.summary_seal = other.change.summary_seal;
                }),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::SummaryNotSealed(
                    crate::core::approval::seal::SealCheck::Mismatch
                        .problem()
                        .unwrap(),
                )),
            ),
            (
                "owned by something its requester can delete",
                tweak(|a| {
                    a.metadata.owner_references = Some(vec![
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                            api_version: "v1".into(),
                            kind: "ConfigMap".into(),
                            name: "gone".into(),
                            uid: "0000".into(),
                            ..Default::default()
                        },
                    ])
                }),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::LifeMetadata("ownerReferences")),
            ),
            (
                "with a finalizer",
                tweak(|a| a.metadata.finalizers = Some(vec!["example.com/keep".into()])),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::LifeMetadata("finalizers")),
            ),
            (
                "claiming to come from a GitOps sync (its resume would name another's sync)",
                tweak(|a| {
                    a.spec.change.origin = Some(crate::api::ChangeOrigin {
                        api_version: "kustomize.toolkit.fluxcd.io/v1".into(),
                        kind: "Kustomization".into(),
                        namespace: "flux-system".into(),
                        name: "apps".into(),
                        revision: None,
                    })
                }),
                &dave,
                &prod,
                None,
                Err(RequestRefusal::HasOrigin),
            ),
        ];
        let labels = BTreeMap::new();
        for (name, approval, creator, policies, object, expected) in cases {
            let got = validate_request_create(&RequestCreate {
                approval: &approval,
                creator,
                namespace: "shop",
                namespace_labels: &labels,
                cluster_region: None,
                target_object: object,
                policies,
                seal_key: &seal_key(),
                validations: &crate::core::admission::decision::ValidateOnTheSpot,
                now: now(),
            });
            assert_eq!(got, expected, "{name}");
        }
    }
}
