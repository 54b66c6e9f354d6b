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
use crate::core::approval::chain::ChainState;
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

/// The set's state once its members have moved on: when every member it lists has been
/// admitted (each was judged approved by the set to get there), the set has done its work
/// and no longer expires with `approvalTTL`: it is `Approved` while any member rolls out,
/// then `Deployed` when all are, or `Failed` when any rollout failed and the rest ended.
/// Before that, the chain decides, as for a request.
pub fn settled_by_members(
    mut state: ChainState,
    members: &[Option<DeploymentApproval>],
) -> ChainState {
    let phases: Option<Vec<ApprovalPhase>> = members
        .iter()
        .map(|m| m.as_ref().map(DeploymentApproval::phase))
        .collect();
    let Some(phases) = phases.filter(|p| !p.is_empty()) else {
        return state;
    };
    let admitted = |p: &ApprovalPhase| {
        matches!(
            p,
            ApprovalPhase::Deploying | ApprovalPhase::Deployed | ApprovalPhase::Failed
        )
    };
    if !phases.iter().all(admitted) {
        return state;
    }
    let ended = |p: &ApprovalPhase| p.is_terminal();
    state.phase = if !phases.iter().all(ended) {
        ApprovalPhase::Approved
    } else if phases.contains(&ApprovalPhase::Failed) {
        ApprovalPhase::Failed
    } else {
        ApprovalPhase::Deployed
    };
    state.expires_at = None;
    state.current_level = None;
    state.stuck = None;
    state
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApprovalPhase, ChangeOrigin, Review, ReviewDecision};
    use crate::core::admission::decision::approval_state;
    use crate::core::approval::chain::RoleBindingSnapshot;
    use crate::core::test_builders::{minutes, two_level_request};

    const DAVE: &str = "dave";

    fn key() -> SealKey {
        SealKey::new(&[7; 32]).expect("a key")
    }

    /// Request `name` of `target`, sealed, of set `set` (made at minute 0 by dave).
    fn member(name: &str, target: &str, set: Option<&str>) -> DeploymentApproval {
        let mut request = two_level_request(&[], None);
        request.metadata.name = Some(name.into());
        request.spec.target.name = target.into();
        request.spec.change.digest = format!("sha256:{target}");
        request.spec.change.summary.text = format!("Deployment shop/{target}: image 1 → 2");
        request.spec.change_set = set.map(str::to_string);
        request.spec = crate::core::approval::seal::sealed(&key(), "shop", request.spec);
        request
    }

    fn members() -> Vec<DeploymentApproval> {
        vec![
            member("web-1", "web", Some("s")),
            member("api-1", "api", Some("s")),
        ]
    }

    /// Set `s` of `members`, made by their requester at minute 1.
    fn set_of(members: &[DeploymentApproval]) -> ChangeSet {
        let specs: Vec<(String, &DeploymentApprovalSpec)> = members
            .iter()
            .map(|m| (m.metadata.name.clone().unwrap_or_default(), &m.spec))
            .collect();
        let requester = members[0].spec.change.requester.clone();
        let spec = set_spec(&specs, &requester, minutes(1)).expect("a spec");
        let mut set = ChangeSet::new("s", spec);
        set.metadata.namespace = Some("shop".into());
        set
    }

    fn approve(who: &str, minute: i64) -> Review {
        Review {
            user: who.into(),
            groups: vec![],
            decision: ReviewDecision::Approve,
            comment: None,
            time: Time(minutes(minute)),
        }
    }

    fn phase_of(request: &DeploymentApproval, at: i64) -> ApprovalPhase {
        approval_state(
            request,
            "shop",
            &RoleBindingSnapshot::default(),
            minutes(at),
        )
        .phase
    }

    #[test]
    fn a_member_is_judged_by_the_set_that_lists_it_and_by_nothing_else() {
        let mut approved = set_of(&members());
        approved.spec.reviews = vec![approve("alice", 2), approve("carol", 3)];
        let web = members().remove(0);
        // (what, the member, its set, the phase it is judged to be in at minute 4)
        let tweak = |f: &dyn Fn(&mut ChangeSet)| {
            let mut set = approved.clone();
            f(&mut set);
            set
        };
        let mut own_reviews = web.clone();
        own_reviews.spec.reviews = vec![approve("alice", 2), approve("carol", 3)];
        let mut other_digest = web.clone();
        other_digest.spec.change.digest = "sha256:other".into();
        let mut other_set = web.clone();
        other_set.spec.change_set = Some("t".into());
        let mut other_name = web.clone();
        other_name.metadata.name = Some("web-2".into());
        let mut no_set = web.clone();
        no_set.spec.change_set = None;
        let cases: Vec<(&str, DeploymentApproval, Option<ChangeSet>, ApprovalPhase)> = vec![
            (
                "listed, set approved",
                web.clone(),
                Some(approved.clone()),
                ApprovalPhase::Approved,
            ),
            (
                "listed, set pending",
                web.clone(),
                Some(set_of(&members())),
                ApprovalPhase::Pending,
            ),
            ("its set is gone", web.clone(), None, ApprovalPhase::Pending),
            (
                "a member's own reviews never count",
                own_reviews,
                None,
                ApprovalPhase::Pending,
            ),
            (
                "another digest than the set lists",
                other_digest,
                Some(approved.clone()),
                ApprovalPhase::Pending,
            ),
            (
                "it names another set",
                other_set,
                Some(approved.clone()),
                ApprovalPhase::Pending,
            ),
            (
                "a request of another name for the listed change",
                other_name,
                Some(approved.clone()),
                ApprovalPhase::Pending,
            ),
            (
                "a set of another requester",
                web.clone(),
                Some(tweak(&|s| {
                    s.spec.change.requester.username = "mallory".into()
                })),
                ApprovalPhase::Pending,
            ),
            (
                "a set under another chain",
                web.clone(),
                Some(tweak(&|s| s.spec.policy.chain.allow_self_approval = true)),
                ApprovalPhase::Pending,
            ),
            (
                "a set in another namespace",
                web.clone(),
                Some(tweak(&|s| s.metadata.namespace = Some("other".into()))),
                ApprovalPhase::Pending,
            ),
            (
                "a set that lists another target under the name",
                web.clone(),
                Some(tweak(&|s| s.spec.members[0].target.name = "db".into())),
                ApprovalPhase::Pending,
            ),
            (
                "a request of no set ignores sets",
                no_set,
                Some(approved.clone()),
                ApprovalPhase::Pending,
            ),
        ];
        for (what, request, set, expected) in cases {
            let judged = judged(&request, set.as_ref());
            assert_eq!(phase_of(&judged, 4), expected, "{what}");
        }
    }

    #[test]
    fn a_rejected_or_expired_set_ends_its_members() {
        let web = members().remove(0);
        let mut rejected = set_of(&members());
        rejected.spec.reviews = vec![Review {
            decision: ReviewDecision::Reject,
            ..approve("alice", 2)
        }];
        assert_eq!(
            phase_of(&judged(&web, Some(&rejected)), 3),
            ApprovalPhase::Rejected
        );
        // The set's time counts, not the member's: requestTTL is one hour from minute 1.
        let pending = set_of(&members());
        assert_eq!(
            phase_of(&judged(&web, Some(&pending)), 60),
            ApprovalPhase::Pending
        );
        assert_eq!(
            phase_of(&judged(&web, Some(&pending)), 62),
            ApprovalPhase::Expired
        );
    }

    #[test]
    fn a_set_whose_members_were_all_admitted_settles_with_them_instead_of_expiring() {
        use ApprovalPhase::*;
        let mut approved = set_of(&members());
        approved.spec.reviews = vec![approve("alice", 2), approve("carol", 3)];
        let request = as_request(&approved);
        let with = |phases: &[Option<ApprovalPhase>]| -> Vec<Option<DeploymentApproval>> {
            phases
                .iter()
                .map(|phase| {
                    phase.map(|phase| {
                        let mut m = members().remove(0);
                        m.status = Some(crate::api::DeploymentApprovalStatus {
                            phase,
                            ..Default::default()
                        });
                        m
                    })
                })
                .collect()
        };
        // approvalTTL is unset and requestTTL one hour: at minute 90 an approved set whose
        // changes were never applied is still Approved; a Pending one has expired.
        // (what, the set's chain at minute, members' stored phases, the set's phase)
        let cases: Vec<(&str, i64, Vec<Option<ApprovalPhase>>, ApprovalPhase)> = vec![
            (
                "none admitted yet",
                5,
                vec![Some(Approved), Some(Approved)],
                Approved,
            ),
            (
                "one admitted",
                5,
                vec![Some(Deploying), Some(Approved)],
                Approved,
            ),
            (
                "both rolling out",
                5,
                vec![Some(Deploying), Some(Deploying)],
                Approved,
            ),
            (
                "one deployed, one rolling out",
                5,
                vec![Some(Deployed), Some(Deploying)],
                Approved,
            ),
            (
                "both deployed",
                5,
                vec![Some(Deployed), Some(Deployed)],
                Deployed,
            ),
            (
                "one failed, one deployed",
                5,
                vec![Some(Failed), Some(Deployed)],
                Failed,
            ),
            (
                "one failed, one rolling out",
                5,
                vec![Some(Failed), Some(Deploying)],
                Approved,
            ),
            ("a member missing", 5, vec![Some(Deployed), None], Approved),
            ("no members read", 5, vec![], Approved),
        ];
        for (what, minute, phases, expected) in cases {
            let state = approval_state(
                &request,
                "shop",
                &RoleBindingSnapshot::default(),
                minutes(minute),
            );
            let settled = settled_by_members(state, &with(&phases));
            assert_eq!(settled.phase, expected, "{what}");
            if phases
                .iter()
                .all(|p| matches!(p, Some(Deploying | Deployed | Failed)))
                && !phases.is_empty()
            {
                assert_eq!(
                    settled.expires_at, None,
                    "{what}: no deadline once all are admitted"
                );
            }
        }
        // Past the set's deadline: a set whose changes were all admitted does not expire.
        let mut pending = set_of(&members());
        pending.spec.reviews = vec![approve("alice", 2), approve("carol", 3)];
        pending.spec.policy.chain.approval_ttl = Some("10m".into());
        let late = approval_state(
            &as_request(&pending),
            "shop",
            &RoleBindingSnapshot::default(),
            minutes(30),
        );
        assert_eq!(late.phase, Expired);
        assert_eq!(
            settled_by_members(late.clone(), &with(&[Some(Deployed), Some(Deploying)])).phase,
            Approved
        );
        assert_eq!(
            settled_by_members(late, &with(&[Some(Deployed), Some(Approved)])).phase,
            Expired,
            "a change never applied in time expires the set"
        );
    }

    #[test]
    fn who_may_make_a_set_of_which_requests() {
        let dave = UserInfo::new(DAVE, &["developers"]);
        let mallory = UserInfo::new("mallory", &[]);
        let found = |m: &[DeploymentApproval]| m.iter().cloned().map(Some).collect::<Vec<_>>();
        let good = set_of(&members());
        let now = minutes(1);
        let tweak = |f: &dyn Fn(&mut ChangeSet)| {
            let mut set = good.clone();
            f(&mut set);
            set
        };
        let with_member = |f: &dyn Fn(&mut DeploymentApproval)| {
            let mut m = members();
            f(&mut m[1]);
            found(&m)
        };
        let mismatch = |why: &str| SetRefusal::MemberMismatch {
            request: "api-1".into(),
            why: why.into(),
        };
        let three = {
            let mut m = members();
            m.push(member("db-1", "db", Some("s")));
            m
        };
        // (what, the set, its members as read, who makes it, the answer)
        type Case<'a> = (
            &'a str,
            ChangeSet,
            Vec<Option<DeploymentApproval>>,
            &'a UserInfo,
            Result<(), SetRefusal>,
        );
        let cases: Vec<Case> = vec![
            (
                "their own fresh requests",
                good.clone(),
                found(&members()),
                &dave,
                Ok(()),
            ),
            (
                "three of them",
                set_of(&three),
                found(&three),
                &dave,
                Ok(()),
            ),
            (
                "someone else's requests",
                good.clone(),
                found(&members()),
                &mallory,
                Err(SetRefusal::NotTheRequester {
                    claimed: DAVE.into(),
                    actual: "mallory".into(),
                }),
            ),
            (
                "one request",
                set_of(&members()[..1]),
                found(&members()[..1]),
                &dave,
                Err(SetRefusal::Size(1)),
            ),
            (
                "an origin only countersign sets",
                tweak(&|s| s.spec.change.origin = Some(ChangeOrigin::default())),
                found(&members()),
                &dave,
                Err(SetRefusal::HasOrigin),
            ),
            (
                "made with reviews",
                tweak(&|s| s.spec.reviews = vec![approve("alice", 1)]),
                found(&members()),
                &dave,
                Err(SetRefusal::HasReviews),
            ),
            (
                "dated an hour ago",
                tweak(&|s| s.spec.change.requested_at = Time(minutes(-60))),
                found(&members()),
                &dave,
                Err(SetRefusal::TimeOutOfRange {
                    time: minutes(-60),
                    now,
                }),
            ),
            (
                "one request twice",
                tweak(&|s| s.spec.members[1] = s.spec.members[0].clone()),
                found(&members()),
                &dave,
                Err(SetRefusal::Duplicate("web-1".into())),
            ),
            (
                "a request that does not exist",
                good.clone(),
                vec![found(&members())[0].clone(), None],
                &dave,
                Err(SetRefusal::MemberMissing("api-1".into())),
            ),
            (
                "a request that names another set",
                good.clone(),
                with_member(&|m| m.spec.change_set = Some("t".into())),
                &dave,
                Err(mismatch("its spec.changeSet is not \"s\"")),
            ),
            (
                "a request of someone else",
                good.clone(),
                with_member(&|m| m.spec.change.requester.username = "erin".into()),
                &dave,
                Err(mismatch(
                    "it was requested by erin, not by the set's requester",
                )),
            ),
            (
                "a request for another change than listed",
                good.clone(),
                with_member(&|m| m.spec.change.digest = "sha256:evil".into()),
                &dave,
                Err(mismatch("its digest is not the one listed")),
            ),
            (
                "a request of another target than listed",
                good.clone(),
                with_member(&|m| m.spec.target.name = "db".into()),
                &dave,
                Err(mismatch("its target is not the one listed")),
            ),
            (
                "a request under another chain",
                good.clone(),
                with_member(&|m| m.spec.policy.chain.allow_self_approval = true),
                &dave,
                Err(mismatch("it was requested under another policy or chain")),
            ),
            (
                "a request already reviewed",
                good.clone(),
                with_member(&|m| m.spec.reviews = vec![approve("alice", 0)]),
                &dave,
                Err(mismatch(
                    "it is Pending with 1 reviews; a set is made of fresh requests",
                )),
            ),
            (
                "a request already decided",
                good.clone(),
                with_member(&|m| {
                    m.status = Some(crate::api::DeploymentApprovalStatus {
                        phase: ApprovalPhase::Approved,
                        ..Default::default()
                    })
                }),
                &dave,
                Err(mismatch(
                    "it is Approved with 0 reviews; a set is made of fresh requests",
                )),
            ),
            (
                "a digest that is not the members'",
                tweak(&|s| s.spec.change.digest = "sha256:00".into()),
                found(&members()),
                &dave,
                Err(SetRefusal::Digest(set_digest(&good.spec.members))),
            ),
            (
                "a summary of its own",
                tweak(&|s| s.spec.change.summary.text = "2 changes: nothing to see".into()),
                found(&members()),
                &dave,
                Err(SetRefusal::Summary),
            ),
        ];
        for (what, set, found, creator, expected) in cases {
            assert_eq!(
                validate_set_create(&set, creator, &found, now),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn a_set_is_edited_only_by_appending_ones_own_review() {
        let alice = UserInfo::new("alice", &["team-leads"]);
        let now = minutes(2);
        let old = set_of(&members()).spec;
        let appended = |review: Review| {
            let mut new = old.clone();
            new.reviews.push(review);
            new
        };
        let mut grown = appended(approve("alice", 2));
        grown.members.push(SetMember::default());
        let mut redigested = old.clone();
        redigested.change.digest = "sha256:00".into();
        let cases: Vec<(&str, ChangeSetSpec, Result<ReviewEdit, ReviewRefusal>)> = vec![
            (
                "own review",
                appended(approve("alice", 2)),
                Ok(ReviewEdit::Appended(approve("alice", 2))),
            ),
            ("nothing", old.clone(), Ok(ReviewEdit::NoReview)),
            (
                "a member added",
                grown,
                Err(ReviewRefusal::Immutable("members")),
            ),
            (
                "the digest",
                redigested,
                Err(ReviewRefusal::Immutable("change")),
            ),
            (
                "in carol's name",
                appended(approve("carol", 2)),
                Err(ReviewRefusal::NotTheAuthor {
                    index: 0,
                    claimed: "carol".into(),
                    actual: "alice".into(),
                }),
            ),
            (
                "before the set was made",
                appended(approve("alice", 0)),
                Err(ReviewRefusal::TimeOutOfRange {
                    index: 0,
                    time: minutes(0),
                    now,
                }),
            ),
        ];
        for (what, new, expected) in cases {
            assert_eq!(
                validate_set_edit(&old, &new, &alice, now),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn a_review_on_a_member_is_refused_and_names_the_set() {
        let old = members().remove(0).spec;
        let mut new = old.clone();
        new.reviews.push(approve("alice", 0));
        let refusal = validate_review_edit(&old, &new, &UserInfo::new("alice", &[]), minutes(0))
            .expect_err("refused");
        assert_eq!(refusal, ReviewRefusal::MemberOfSet("s".into()));
        assert!(refusal.to_string().contains("approve s"), "{refusal}");
        let mut moved = old.clone();
        moved.change_set = Some("t".into());
        assert_eq!(
            validate_review_edit(&old, &moved, &UserInfo::new("alice", &[]), minutes(0)),
            Err(ReviewRefusal::Immutable("changeSet"))
        );
    }

    #[test]
    fn whether_a_sets_summary_is_countersigns() {
        let key = key();
        let all = members();
        let found: Vec<_> = all.iter().cloned().map(Some).collect();
        let made = set_of(&all);
        let sealed = {
            let mut set = made.clone();
            set.spec = sealed_set(&key, "shop", "s", set.spec.clone());
            set.metadata.uid = Some("uid-given-later".into());
            set
        };
        let mut forged_text = sealed.clone();
        forged_text.spec.change.summary.text = "2 changes: harmless".into();
        let mut unsealed_member = all.clone();
        unsealed_member[1].spec.change.summary_seal = None;
        let mut lies = made.clone();
        lies.spec.change.summary.text = "2 changes: harmless".into();
        // (what, the set, its members as stored, the check)
        let cases: Vec<(&str, &ChangeSet, Vec<Option<DeploymentApproval>>, SealCheck)> = vec![
            (
                "sealed by countersign",
                &sealed,
                vec![],
                SealCheck::Verified,
            ),
            (
                "sealed, then its summary edited",
                &forged_text,
                found.clone(),
                SealCheck::Mismatch,
            ),
            (
                "made by its requester, as its members imply",
                &made,
                found.clone(),
                SealCheck::Verified,
            ),
            (
                "a member not there yet",
                &made,
                vec![found[0].clone(), None],
                SealCheck::Missing,
            ),
            (
                "a member unsealed",
                &made,
                unsealed_member.into_iter().map(Some).collect(),
                SealCheck::Missing,
            ),
            (
                "a summary its members do not imply",
                &lies,
                found.clone(),
                SealCheck::Missing,
            ),
        ];
        for (what, set, found, expected) in cases {
            assert_eq!(set_check(&key, set, &found), expected, "{what}");
        }
    }

    #[test]
    fn a_sets_summary_and_name_are_bounded_and_inert() {
        let hostile = ChangeSummary {
            text: format!("\u{1b}[2J{}", "x".repeat(5_000)),
            ..ChangeSummary::default()
        };
        let many: Vec<&ChangeSummary> = std::iter::repeat_n(&hostile, 100).collect();
        let summary = set_summary(&many);
        assert!(summary.text.starts_with("100 changes: "));
        assert!(!summary.text.contains('\u{1b}'), "escapes made visible");
        assert!(
            summary.text.chars().count() <= SUMMARY_CHARS + 20,
            "{}",
            summary.text.len()
        );
        for (prefix, expected) in [
            ("apps", "apps-0123456789"),
            ("Flux_Apps!", "fluxapps-0123456789"),
            ("", "set-0123456789"),
            ("---", "set-0123456789"),
            (&"a".repeat(300), &format!("{}-0123456789", "a".repeat(40))),
        ] {
            assert_eq!(
                set_name(prefix, "sha256:0123456789abcdef"),
                expected,
                "{prefix}"
            );
        }
    }

    #[test]
    fn the_set_as_one_request_carries_no_token_and_is_its_own_target() {
        let mut set = set_of(&members());
        set.spec.policy.grant = Some(Default::default());
        let request = as_request(&set);
        assert_eq!(request.spec.target.kind, SET_KIND);
        assert_eq!(request.spec.target.name, "s");
        assert_eq!(request.spec.policy.grant, None);
        assert_eq!(request.spec.change_set, None);
        assert_eq!(request.spec.change.digest, set_digest(&set.spec.members));
    }
}
