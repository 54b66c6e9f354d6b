//! Change sets: the requests one GitOps sync or one multi-document `countersign request`
//! opened together, approved or rejected as one (SPEC §3, docs/gitops.md).
//!
//! A set holds the reviews; its members hold none. A member is judged with its set's
//! reviews ([`judged`]) only when the set lists it by name, target and digest, under the
//! same requester and chain, so nothing joins a set after it was made and no request can
//! borrow another set's approval. Each member is still admitted only with its own digest,
//! locked and audited on its own. Everything that works on one request (the chain, review
//! checks, the trail, notices, status) works on a set through [`as_request`].

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::{
    ApprovalPhase, ApprovalTarget, ChangeSet, ChangeSetSpec, ChangeSummary, DeploymentApproval,
    DeploymentApprovalSpec, GROUP, ImageChange, SetMember, UserInfo, VERSION,
};
use crate::core::approval::request::REQUESTED_AT_CLOCK_SKEW;
use crate::core::approval::review::{ReviewEdit, ReviewRefusal, validate_review_edit};
use crate::core::approval::seal::{SealCheck, SealKey, check as check_seal, seal};
use crate::core::change::canonical_json;
use crate::core::inert;

/// The most members a set may have.
pub const MAX_MEMBERS: usize = 100;

/// The kind a set is shown as when it stands in for a request.
pub const SET_KIND: &str = "ChangeSet";

/// The longest a set's one-line summary gets (each member's line is cut first).
const SUMMARY_CHARS: usize = 2_000;

/// `sha256:<hex>` over the members in order: what the set's seal and its reviews bind.
pub fn set_digest(members: &[SetMember]) -> String {
    let listed: Vec<_> = members
        .iter()
        .map(|m| {
            json!({
                "request": m.request,
                "apiVersion": m.target.api_version,
                "kind": m.target.kind,
                "name": m.target.name,
                "digest": m.digest,
            })
        })
        .collect();
    let canonical = canonical_json(&json!(listed));
    format!("sha256:{:x}", Sha256::digest(canonical.as_bytes()))
}

/// The set's summary from its members' (in the members' order): one line naming every
/// change, their images, and every kind of risk any of them carries.
pub fn set_summary(summaries: &[&ChangeSummary]) -> ChangeSummary {
    let per_member = (SUMMARY_CHARS / summaries.len().max(1)).max(80);
    let lines: Vec<String> = summaries
        .iter()
        .map(|s| inert::bounded(&s.text, per_member))
        .collect();
    let text = format!(
        "{} changes: {}",
        summaries.len(),
        inert::bounded(&lines.join("; "), SUMMARY_CHARS)
    );
    let images: Vec<ImageChange> = summaries
        .iter()
        .flat_map(|s| s.images.iter().cloned())
        .collect();
    let mut risks: Vec<_> = summaries.iter().flat_map(|s| s.risks.clone()).collect();
    risks.sort();
    risks.dedup();
    ChangeSummary {
        text,
        images,
        risks,
        ..ChangeSummary::default()
    }
}

/// A set's name: `prefix` (a sync's object, or `set`) and the start of its digest.
pub fn set_name(prefix: &str, digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    let cut: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let cut = cut.trim_matches('-');
    let prefix = if cut.is_empty() { "set" } else { cut };
    format!("{prefix}-{}", hex.get(..10).unwrap_or(hex))
}

/// The set as one request: its target is the set itself, it carries no deploy token, and
/// its status is the set's. The chain, review checks, trail, notices and status planning
/// all work on this.
pub fn as_request(set: &ChangeSet) -> DeploymentApproval {
    let mut policy = set.spec.policy.clone();
    policy.grant = None;
    DeploymentApproval {
        metadata: set.metadata.clone(),
        spec: DeploymentApprovalSpec {
            target: set_target(set),
            change: set.spec.change.clone(),
            policy,
            reviews: set.spec.reviews.clone(),
            change_set: None,
        },
        status: set.status.clone(),
    }
}

/// The set as a target (in requests' terms).
pub fn set_target(set: &ChangeSet) -> ApprovalTarget {
    ApprovalTarget {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: SET_KIND.to_string(),
        name: set.metadata.name.clone().unwrap_or_default(),
        uid: set.metadata.uid.clone(),
    }
}

/// Does `set` list `member` exactly: by name, target (kind and name) and digest, in its
/// namespace, under the member's requester and chain, and does the member name it?
pub fn lists(set: &ChangeSet, member: &DeploymentApproval) -> bool {
    let Some(set_name) = member.spec.change_set.as_deref() else {
        return false;
    };
    let name = member.metadata.name.as_deref().unwrap_or_default();
    let target = &member.spec.target;
    set.metadata.name.as_deref() == Some(set_name)
        && set.metadata.namespace == member.metadata.namespace
        && set.spec.change.requester.username == member.spec.change.requester.username
        && set.spec.policy.name == member.spec.policy.name
        && set.spec.policy.chain == member.spec.policy.chain
        && set.spec.members.iter().any(|m| {
            m.request == name
                && m.target.api_version == target.api_version
                && m.target.kind == target.kind
                && m.target.name == target.name
                && m.digest == member.spec.change.digest
        })
}

/// `member` as it is judged: a member of a set carries its set's reviews (and counts its
/// deadline from the set's time) when the set lists it; otherwise none, so it cannot be
/// approved. Its own reviews never count (the webhook refuses them). A request of no set is
/// judged as it is.
pub fn judged(member: &DeploymentApproval, set: Option<&ChangeSet>) -> DeploymentApproval {
    let mut judged = member.clone();
    if member.spec.change_set.is_none() {
        return judged;
    }
    judged.spec.reviews = Vec::new();
    if let Some(set) = set.filter(|set| lists(set, member)) {
        judged.spec.reviews = set.spec.reviews.clone();
        judged.spec.change.requested_at = set.spec.change.requested_at.clone();
    }
    judged
}

/// Why a set may not be made as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetRefusal {
    #[error("a set holds from 2 to {MAX_MEMBERS} requests; this one lists {0}")]
    Size(usize),
    #[error(
        "spec.change.requester is {claimed:?} but the set is made by {actual:?}; a set must be your own"
    )]
    NotTheRequester { claimed: String, actual: String },
    #[error("spec.change.origin is set only by countersign, for a GitOps sync it opened")]
    HasOrigin,
    #[error("a new set has no reviews")]
    HasReviews,
    #[error("spec.change.requestedAt is {time}, more than a minute from now ({now})")]
    TimeOutOfRange { time: Timestamp, now: Timestamp },
    #[error("spec.members lists request {0} twice, or two requests for one object")]
    Duplicate(String),
    #[error("request {0} does not exist in this namespace; make the requests first")]
    MemberMissing(String),
    #[error("request {request}: {why}")]
    MemberMismatch { request: String, why: String },
    #[error("spec.change.digest is not the digest of spec.members (expected {0})")]
    Digest(String),
    #[error("spec.change.summary is not the summary of the members' summaries")]
    Summary,
}

/// May `creator` make `set`, whose members were read live (`found`, in the set's order)?
/// For sets made by someone other than countersign (`countersign request -f` of several
/// documents): theirs, of their own fresh requests that name this set, under one chain,
/// with the digest and summary those requests imply.
pub fn validate_set_create(
    set: &ChangeSet,
    creator: &UserInfo,
    found: &[Option<DeploymentApproval>],
    now: Timestamp,
) -> Result<(), SetRefusal> {
    let spec = &set.spec;
    if !(2..=MAX_MEMBERS).contains(&spec.members.len()) {
        return Err(SetRefusal::Size(spec.members.len()));
    }
    if spec.change.requester.username != creator.username {
        return Err(SetRefusal::NotTheRequester {
            claimed: spec.change.requester.username.clone(),
            actual: creator.username.clone(),
        });
    }
    if spec.change.origin.is_some() {
        return Err(SetRefusal::HasOrigin);
    }
    if !spec.reviews.is_empty() {
        return Err(SetRefusal::HasReviews);
    }
    let time = spec.change.requested_at.0;
    if time.duration_since(now).abs() > REQUESTED_AT_CLOCK_SKEW {
        return Err(SetRefusal::TimeOutOfRange { time, now });
    }
    for (i, member) in spec.members.iter().enumerate() {
        let twice = spec.members[..i].iter().any(|earlier| {
            earlier.request == member.request
                || (earlier.target.kind == member.target.kind
                    && earlier.target.name == member.target.name)
        });
        if twice {
            return Err(SetRefusal::Duplicate(member.request.clone()));
        }
    }
    let mut summaries = Vec::new();
    for (listed, found) in spec.members.iter().zip(found) {
        let Some(request) = found else {
            return Err(SetRefusal::MemberMissing(listed.request.clone()));
        };
        member_problem(set, listed, request).map_or(Ok(()), |why| {
            Err(SetRefusal::MemberMismatch {
                request: listed.request.clone(),
                why,
            })
        })?;
        summaries.push(&request.spec.change.summary);
    }
    if found.len() != spec.members.len() {
        return Err(SetRefusal::Size(found.len()));
    }
    let digest = set_digest(&spec.members);
    if spec.change.digest != digest {
        return Err(SetRefusal::Digest(digest));
    }
    if spec.change.summary != set_summary(&summaries) {
        return Err(SetRefusal::Summary);
    }
    Ok(())
}

/// What keeps `request` from being the member `listed` of a new `set`.
fn member_problem(
    set: &ChangeSet,
    listed: &SetMember,
    request: &DeploymentApproval,
) -> Option<String> {
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let spec = &request.spec;
    if spec.change_set.as_deref() != Some(set_name) {
        return Some(format!("its spec.changeSet is not {set_name:?}"));
    }
    if spec.change.requester.username != set.spec.change.requester.username {
        return Some(format!(
            "it was requested by {}, not by the set's requester",
            spec.change.requester.username
        ));
    }
    if spec.target.kind != listed.target.kind
        || spec.target.name != listed.target.name
        || spec.target.api_version != listed.target.api_version
    {
        return Some("its target is not the one listed".to_string());
    }
    if spec.change.digest != listed.digest {
        return Some("its digest is not the one listed".to_string());
    }
    if spec.policy.name != set.spec.policy.name || spec.policy.chain != set.spec.policy.chain {
        return Some("it was requested under another policy or chain".to_string());
    }
    if !spec.reviews.is_empty() || request.phase() != ApprovalPhase::Pending {
        return Some(format!(
            "it is {} with {} reviews; a set is made of fresh requests",
            request.phase(),
            spec.reviews.len()
        ));
    }
    None
}

/// Check an UPDATE of a set's spec by `author` at `now`: its members fixed, and otherwise
/// exactly what a request's edit may do (one review appended, in the author's name).
pub fn validate_set_edit(
    old: &ChangeSetSpec,
    new: &ChangeSetSpec,
    author: &UserInfo,
    now: Timestamp,
) -> Result<ReviewEdit, ReviewRefusal> {
    if old.members != new.members {
        return Err(ReviewRefusal::Immutable("members"));
    }
    let as_spec = |spec: &ChangeSetSpec| DeploymentApprovalSpec {
        target: ApprovalTarget::default(),
        change: spec.change.clone(),
        policy: spec.policy.clone(),
        reviews: spec.reviews.clone(),
        change_set: None,
    };
    validate_review_edit(&as_spec(old), &as_spec(new), author, now)
}

/// `spec` with countersign's seal over the set as one request.
pub fn sealed_set(
    key: &SealKey,
    namespace: &str,
    name: &str,
    mut spec: ChangeSetSpec,
) -> ChangeSetSpec {
    let mut set = ChangeSet::new(name, spec.clone());
    set.metadata.namespace = Some(namespace.to_string());
    let request = as_request(&set);
    spec.change.summary_seal = Some(seal(key, namespace, &request.spec));
    spec
}

/// Whether a set's summary is countersign's: sealed by countersign (a set it opened), or,
/// unsealed, exactly what its members (`found`, as stored now, in the set's order) imply,
/// each of them sealed.
pub fn set_check(
    key: &SealKey,
    set: &ChangeSet,
    found: &[Option<DeploymentApproval>],
) -> SealCheck {
    let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
    let mut request = as_request(set);
    request.spec.target.uid = None;
    match check_seal(key, namespace, &request.spec) {
        SealCheck::Missing => {}
        sealed => return sealed,
    }
    let members_sealed = found.len() == set.spec.members.len()
        && found
            .iter()
            .zip(&set.spec.members)
            .all(|(request, listed)| {
                request.as_ref().is_some_and(|request| {
                    check_seal(key, namespace, &request.spec).verified()
                        && request.spec.change.digest == listed.digest
                        && request.spec.change_set.as_deref() == set.metadata.name.as_deref()
                })
            });
    let summaries: Vec<_> = found
        .iter()
        .flatten()
        .map(|r| &r.spec.change.summary)
        .collect();
    if members_sealed
        && set.spec.change.digest == set_digest(&set.spec.members)
        && set.spec.change.summary == set_summary(&summaries)
    {
        SealCheck::Verified
    } else {
        SealCheck::Missing
    }
}

/// A set's spec for `members` (each with its request's spec, in order), as `requester` asks
/// at `now`; unsealed.
pub fn set_spec(
    members: &[(String, &DeploymentApprovalSpec)],
    requester: &UserInfo,
    now: Timestamp,
) -> Option<ChangeSetSpec> {
    let (_, first) = members.first()?;
    let listed: Vec<SetMember> = members
        .iter()
        .map(|(name, spec)| SetMember {
            request: name.clone(),
            target: ApprovalTarget {
                uid: None,
                ..spec.target.clone()
            },
            digest: spec.change.digest.clone(),
        })
        .collect();
    let summaries: Vec<_> = members.iter().map(|(_, s)| &s.change.summary).collect();
    let mut change = first.change.clone();
    change.digest = set_digest(&listed);
    change.summary = set_summary(&summaries);
    change.summary_seal = None;
    change.requester = requester.clone();
    change.requested_at = Time(now);
    Some(ChangeSetSpec {
        members: listed,
        change,
        policy: first.policy.clone(),
        reviews: Vec::new(),
    })
}
