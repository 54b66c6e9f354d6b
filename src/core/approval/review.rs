//! Is an edit of a DeploymentApproval a genuine review by its author? (SPEC §3)
//!
//! Approvers approve by patching the CR; the webhook accepts an UPDATE only when it appends
//! one review in the author's own name, through groups the author really has, and leaves
//! everything else of the spec untouched ([`validate_review_edit`]), and when the author
//! may review the request as it stands ([`validate_review_standing`]). The mutating webhook
//! fills in what an approver may leave out ([`stamp_appended_reviews`]).
//!
//! Who may review (decisions beyond the letter of SPEC §3):
//! - The requester may always Reject (withdraw) their own request, approver or not;
//!   withdrawing only stops a change. Approving it needs `allowSelfApproval`.
//! - An approver who approved may still Reject later: "one person counts once" is about
//!   approvals, and a rejection only stops the change (`core::approval::chain` honours it).

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use crate::api::{
    ApprovalPhase, DeploymentApproval, DeploymentApprovalSpec, Review, ReviewDecision, UserInfo,
};
use crate::core::admission::decision::{approval_chain, approval_state};
use crate::core::approval::chain::{
    ApprovalChain, RoleBindingSnapshot, describe_progress, level_label,
};

/// How far a review's `time` may be from the API server's clock (SPEC §3: a minute).
pub const REVIEW_CLOCK_SKEW: SignedDuration = SignedDuration::from_mins(1);

/// Why an edit is refused; each message names the field, or the person and what they can do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReviewRefusal {
    #[error("spec.{0} is immutable")]
    Immutable(&'static str),
    /// A review on a member of a change set: the set is reviewed, as one.
    #[error(
        "this request belongs to change set {0}, which is reviewed as one: review the set (kubectl countersign approve {0}, or append the review to changeset {0})"
    )]
    MemberOfSet(String),
    #[error("spec.reviews[{0}] was changed or removed; earlier reviews are immutable")]
    EarlierReviewEdited(usize),
    #[error("append one review at a time ({0} were appended)")]
    SeveralAppended(usize),
    #[error(
        "spec.reviews[{index}].user is {claimed:?} but the request was made by {actual:?}; nobody can review in someone else's name"
    )]
    NotTheAuthor {
        index: usize,
        claimed: String,
        actual: String,
    },
    #[error(
        "spec.reviews[{index}].groups names {group:?}, which is not one of your authenticated groups"
    )]
    GroupNotHeld { index: usize, group: String },
    #[error("spec.reviews[{index}].time is {time}, more than a minute from now ({now})")]
    TimeOutOfRange {
        index: usize,
        time: Timestamp,
        now: Timestamp,
    },
    #[error(
        "spec.reviews[{index}].time is {time}, before the request was made ({requested_at}); a review cannot predate its request"
    )]
    BeforeRequest {
        index: usize,
        time: Timestamp,
        requested_at: Timestamp,
    },
    /// The request is decided, expired or rolling out (its phase is not `Pending`).
    #[error("the request is {0}; reviews are closed")]
    Closed(ApprovalPhase),
    /// The requester approves their own change and the chain does not allow it.
    #[error(
        "{user} requested this change and cannot approve it (the chain does not set allowSelfApproval); the open level needs other approvers ({progress}); a Reject from {user} withdraws the request"
    )]
    SelfApproval { user: String, progress: String },
    /// A second approval by the same person, under whatever groups.
    #[error(
        "{user} already reviewed this request (spec.reviews[{earlier}]); one person counts once per request, so the open level needs other approvers ({progress}); a Reject from {user} is still accepted, to stop the change"
    )]
    AlreadyReviewed {
        user: String,
        /// Index of their earlier review.
        earlier: usize,
        progress: String,
    },
    /// An approval by someone eligible only at a later level.
    #[error(
        "{level} is not open yet, so {user} cannot approve now; approve again once it opens (the open level is {progress})"
    )]
    LevelNotOpen {
        user: String,
        /// The first later level that names them, e.g. `level 2/2 sre`.
        level: String,
        progress: String,
    },
    /// An approval by someone the open level does not name, nor any later one.
    #[error(
        "{user} (review groups: {}) is not an approver of the open level{}; only its approvers can approve now ({progress})",
        list_or_none(.groups),
        satisfied_note(.user, .satisfied)
    )]
    NotAnApproverOfOpenLevel {
        user: String,
        groups: Vec<String>,
        /// Earlier, already satisfied levels that name them.
        satisfied: Vec<String>,
        progress: String,
    },
    /// A review by someone no level of the chain names.
    #[error(
        "{user} (review groups: {}) is not an approver of any level of this request, so cannot review it; ask one of its approvers",
        list_or_none(.groups)
    )]
    NotAnApprover { user: String, groups: Vec<String> },
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

fn satisfied_note(user: &str, satisfied: &[String]) -> String {
    match satisfied {
        [] => String::new(),
        [one] => format!(" ({user} approves at {one}, which is already satisfied)"),
        several => format!(
            " ({user} approves at {}, which are already satisfied)",
            several.join(" and ")
        ),
    }
}

/// What an accepted edit did.
#[derive(Clone, Debug, PartialEq)]
pub enum ReviewEdit {
    /// The spec's reviews are unchanged (e.g. only labels were edited).
    NoReview,
    /// One review was appended by its author.
    Appended(Review),
}

/// Check an UPDATE of a DeploymentApproval's spec by `author` at `now`.
pub fn validate_review_edit(
    old: &DeploymentApprovalSpec,
    new: &DeploymentApprovalSpec,
    author: &UserInfo,
    now: Timestamp,
) -> Result<ReviewEdit, ReviewRefusal> {
    if old.target != new.target {
        return Err(ReviewRefusal::Immutable("target"));
    }
    if old.change != new.change {
        return Err(ReviewRefusal::Immutable("change"));
    }
    if old.policy != new.policy {
        return Err(ReviewRefusal::Immutable("policy"));
    }
    if old.change_set != new.change_set {
        return Err(ReviewRefusal::Immutable("changeSet"));
    }
    if let Some(index) = old
        .reviews
        .iter()
        .enumerate()
        .find(|(i, review)| new.reviews.get(*i) != Some(review))
        .map(|(i, _)| i)
    {
        return Err(ReviewRefusal::EarlierReviewEdited(index));
    }
    let appended = &new.reviews[old.reviews.len()..];
    if let (Some(set), [_, ..]) = (&old.change_set, appended) {
        return Err(ReviewRefusal::MemberOfSet(set.clone()));
    }
    let review = match appended {
        [] => return Ok(ReviewEdit::NoReview),
        [one] => one,
        several => return Err(ReviewRefusal::SeveralAppended(several.len())),
    };
    let index = old.reviews.len();
    if review.user != author.username {
        return Err(ReviewRefusal::NotTheAuthor {
            index,
            claimed: review.user.clone(),
            actual: author.username.clone(),
        });
    }
    if let Some(group) = review.groups.iter().find(|g| !author.groups.contains(g)) {
        return Err(ReviewRefusal::GroupNotHeld {
            index,
            group: group.clone(),
        });
    }
    let time = review.time.0;
    if time.duration_since(now).abs() > REVIEW_CLOCK_SKEW {
        return Err(ReviewRefusal::TimeOutOfRange { index, time, now });
    }
    let requested_at = old.change.requested_at.0;
    if time < requested_at {
        return Err(ReviewRefusal::BeforeRequest {
            index,
            time,
            requested_at,
        });
    }
    Ok(ReviewEdit::Appended(review.clone()))
}

/// May `review` (the one [`validate_review_edit`] found appended, its `user` and `groups`
/// already proven to be the author's) be added to `old` as the request stands? The half of
/// SPEC §3 that depends on the chain (SPEC §4):
/// - the request must be open: `Pending` as [`approval_state`] recomputes it, judged at the
///   later of `now` and the review's `time`, so a review stamped past the deadline is not
///   accepted only for the chain to ignore it;
/// - a Reject comes from the requester (withdrawing) or from anyone eligible at any level;
/// - an Approve comes from someone eligible at the open level (even when that level needs
///   no more approvals: the chain holds it for the next level that names them), who has not
///   reviewed this request before and is not its requester (unless `allowSelfApproval`).
///
/// Eligibility is through the review's `groups`, as the chain counts it.
pub fn validate_review_standing(
    old: &DeploymentApproval,
    review: &Review,
    bindings: &RoleBindingSnapshot,
    now: Timestamp,
) -> Result<(), ReviewRefusal> {
    let namespace = old.metadata.namespace.as_deref().unwrap_or_default();
    let state = approval_state(old, namespace, bindings, now.max(review.time.0));
    if state.phase != ApprovalPhase::Pending {
        return Err(ReviewRefusal::Closed(state.phase));
    }
    let chain = approval_chain(old, namespace, bindings);
    let user = review.user.as_str();
    let by_requester = user == chain.requester.username;
    let eligible = chain.eligible_levels(user, &review.groups);
    let not_an_approver = || ReviewRefusal::NotAnApprover {
        user: user.to_string(),
        groups: review.groups.clone(),
    };
    if review.decision == ReviewDecision::Reject {
        return if by_requester || !eligible.is_empty() {
            Ok(())
        } else {
            Err(not_an_approver())
        };
    }
    let progress = describe_progress(&state);
    if by_requester && !chain.settings.allow_self_approval {
        return Err(ReviewRefusal::SelfApproval {
            user: user.to_string(),
            progress,
        });
    }
    if let Some(earlier) = old.spec.reviews.iter().position(|r| r.user == user) {
        return Err(ReviewRefusal::AlreadyReviewed {
            user: user.to_string(),
            earlier,
            progress,
        });
    }
    let Some(open) = state.current_level else {
        return Err(not_an_approver());
    };
    if eligible.contains(&open) {
        return Ok(());
    }
    let levels = &chain.settings.levels;
    if let Some(&later) = eligible.iter().find(|&&i| i > open) {
        return Err(ReviewRefusal::LevelNotOpen {
            user: user.to_string(),
            level: level_label(levels, later),
            progress,
        });
    }
    Err(ReviewRefusal::NotAnApproverOfOpenLevel {
        user: user.to_string(),
        groups: review.groups.clone(),
        satisfied: eligible.iter().map(|&i| level_label(levels, i)).collect(),
        progress,
    })
}

/// The author's authenticated groups that the chain names: those through which some entry
/// of some level matches them (a group entry, or a role bound to the group in the
/// namespace or cluster-wide). An entry that matches the author by name (user, service
/// account, role bound to the user) makes no group necessary, so it adds none. In the
/// author's order, without duplicates. The mutating webhook stamps these as a review's
/// `groups` when the approver leaves them out.
pub fn review_groups(chain: &ApprovalChain, author: &UserInfo) -> Vec<String> {
    let user = author.username.as_str();
    let entries: Vec<_> = chain
        .settings
        .levels
        .iter()
        .flat_map(|level| &level.approvers)
        .filter(|entry| !chain.entry_matches(entry, user, &[]))
        .collect();
    let mut named: Vec<String> = Vec::new();
    for group in &author.groups {
        if named.contains(group) {
            continue;
        }
        let through = std::slice::from_ref(group);
        if entries
            .iter()
            .any(|entry| chain.entry_matches(entry, user, through))
        {
            named.push(group.clone());
        }
    }
    named
}

/// JSON Patch (RFC 6902) operations that fill `user`, `groups` and `time` of each review
/// appended to the raw `new_object` (index `old_review_count` on) where the field is absent
/// or null, so an approver may append just `{decision, comment}` (SPEC §3). An empty
/// `groups` counts as absent: the CRD's structural defaulting fills `groups: []` before any
/// webhook sees the review, and the stamped groups are ones the author holds anyway. A field
/// that is present is left alone: the validating webhook refuses a wrong claim with its own
/// message rather than having it silently overwritten. `time` is written like a Kubernetes
/// `metav1.Time` (RFC 3339, whole seconds).
///
/// Works on raw JSON, since such a review does not deserialize into [`Review`]; a shape that
/// is not an object with a `spec.reviews` array of objects gets no patch (the validating
/// webhook then refuses it).
pub fn stamp_appended_reviews(
    old_review_count: usize,
    new_object: &Value,
    author: &UserInfo,
    groups: &[String],
    now: Timestamp,
) -> Vec<Value> {
    let Some(reviews) = new_object
        .pointer("/spec/reviews")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let stamps = [
        ("user", Some(Value::String(author.username.clone()))),
        ("groups", Some(json!(groups))),
        ("time", serde_json::to_value(Time(now)).ok()),
    ];
    let mut operations = Vec::new();
    for (index, review) in reviews.iter().enumerate().skip(old_review_count) {
        let Some(fields) = review.as_object() else {
            continue;
        };
        for (field, value) in &stamps {
            let Some(value) = value else {
                continue;
            };
            let absent = match fields.get(*field) {
                None | Some(Value::Null) => true,
                Some(Value::Array(items)) => {
                    *field == "groups" && items.is_empty() && !groups.is_empty()
                }
                Some(_) => false,
            };
            if absent {
                operations.push(json!({
                    "op": "add",
                    "path": format!("/spec/reviews/{index}/{field}"),
                    "value": value,
                }));
            }
        }
    }
    operations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        ApprovalTarget, ChangeRecord, ChangeSummary, Operation, PolicySnapshot, ReviewDecision,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn now() -> Timestamp {
        "2025-06-02T10:00:00Z".parse().unwrap()
    }

    fn review(user: &str, groups: &[&str]) -> Review {
        Review {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            decision: ReviewDecision::Approve,
            comment: Some("LGTM".into()),
            time: Time(now()),
        }
    }

    fn spec(reviews: Vec<Review>) -> DeploymentApprovalSpec {
        DeploymentApprovalSpec {
            target: ApprovalTarget {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                uid: None,
            },
            change: ChangeRecord {
                digest: "sha256:00".into(),
                summary: ChangeSummary::default(),
                summary_seal: None,
                requester: UserInfo::new("dev", &[]),
                operation: Operation::Update,
                requested_at: Time(now()),
                origin: None,
            },
            policy: PolicySnapshot::default(),
            reviews,
            change_set: None,
        }
    }

    #[test]
    fn review_edits_table() {
        let alice = UserInfo::new("alice", &["team-leads", "system:authenticated"]);
        let earlier = review("bob", &[]);
        let old = spec(vec![earlier.clone()]);
        let mut retargeted = spec(vec![earlier.clone(), review("alice", &[])]);
        retargeted.target.name = "db".into();
        let mut redigested = old.clone();
        redigested.change.digest = "sha256:ff".into();
        let mut late = review("alice", &[]);
        late.time = Time(now() + SignedDuration::from_secs(61));
        let mut slightly_late = review("alice", &[]);
        slightly_late.time = Time(now() + SignedDuration::from_secs(59));
        let mut backdated = review("alice", &[]);
        backdated.time = Time(now() - SignedDuration::from_secs(30));
        let mut flipped = earlier.clone();
        flipped.decision = ReviewDecision::Reject;

        let cases: Vec<(&str, DeploymentApprovalSpec, Result<(), ReviewRefusal>)> = vec![
            (
                "own review with own groups",
                spec(vec![earlier.clone(), review("alice", &["team-leads"])]),
                Ok(()),
            ),
            ("no review change", old.clone(), Ok(())),
            (
                "in someone else's name",
                spec(vec![earlier.clone(), review("carol", &[])]),
                Err(ReviewRefusal::NotTheAuthor {
                    index: 1,
                    claimed: "carol".into(),
                    actual: "alice".into(),
                }),
            ),
            (
                "group not held",
                spec(vec![earlier.clone(), review("alice", &["sre"])]),
                Err(ReviewRefusal::GroupNotHeld {
                    index: 1,
                    group: "sre".into(),
                }),
            ),
            (
                "earlier review removed",
                spec(vec![review("alice", &[])]),
                Err(ReviewRefusal::EarlierReviewEdited(0)),
            ),
            (
                "earlier review edited",
                spec(vec![flipped, review("alice", &[])]),
                Err(ReviewRefusal::EarlierReviewEdited(0)),
            ),
            (
                "two appended",
                spec(vec![
                    earlier.clone(),
                    review("alice", &[]),
                    review("alice", &[]),
                ]),
                Err(ReviewRefusal::SeveralAppended(2)),
            ),
            (
                "target edited",
                retargeted,
                Err(ReviewRefusal::Immutable("target")),
            ),
            (
                "change edited",
                redigested,
                Err(ReviewRefusal::Immutable("change")),
            ),
            (
                "time out of range",
                spec(vec![earlier.clone(), late]),
                Err(ReviewRefusal::TimeOutOfRange {
                    index: 1,
                    time: now() + SignedDuration::from_secs(61),
                    now: now(),
                }),
            ),
            (
                "time within a minute",
                spec(vec![earlier.clone(), slightly_late]),
                Ok(()),
            ),
            (
                "time before the request, within the skew",
                spec(vec![earlier.clone(), backdated]),
                Err(ReviewRefusal::BeforeRequest {
                    index: 1,
                    time: now() - SignedDuration::from_secs(30),
                    requested_at: now(),
                }),
            ),
        ];
        for (name, new, expected) in cases {
            let got = validate_review_edit(&old, &new, &alice, now()).map(|_| ());
            assert_eq!(got, expected, "{name}");
        }
    }
}

#[cfg(test)]
mod standing_tests {
    use super::*;
    use crate::api::{
        ApprovalLevel, ApprovalSettings, ApprovalTarget, ChangeRecord, ChangeSummary,
        DeploymentApprovalStatus, Operation, PolicySnapshot,
    };
    use crate::core::test_builders::{
        cluster_role_binding, group, level, role, role_binding, user,
    };

    /// When the request was made.
    fn t0() -> Timestamp {
        "2026-11-24T10:00:00Z".parse().unwrap()
    }

    fn at(minute: i64) -> Timestamp {
        t0() + SignedDuration::from_mins(minute)
    }

    fn by(who: &str, groups: &[&str], decision: ReviewDecision, time: Timestamp) -> Review {
        Review {
            user: who.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            decision,
            comment: None,
            time: Time(time),
        }
    }

    fn approve(who: &str, groups: &[&str], minute: i64) -> Review {
        by(who, groups, ReviewDecision::Approve, at(minute))
    }

    fn reject(who: &str, groups: &[&str], minute: i64) -> Review {
        by(who, groups, ReviewDecision::Reject, at(minute))
    }

    fn settings(levels: Vec<ApprovalLevel>) -> ApprovalSettings {
        ApprovalSettings {
            levels,
            ..Default::default()
        }
    }

    /// A DeploymentApproval in `shop`, requested by `dev` at [`t0`].
    fn approval(
        chain: &ApprovalSettings,
        reviews: Vec<Review>,
        status: Option<ApprovalPhase>,
    ) -> DeploymentApproval {
        let spec = DeploymentApprovalSpec {
            target: ApprovalTarget {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                uid: None,
            },
            change: ChangeRecord {
                digest: "sha256:00".into(),
                summary: ChangeSummary::default(),
                summary_seal: None,
                requester: UserInfo::new("dev", &["developers", "team-leads"]),
                operation: Operation::Update,
                requested_at: Time(t0()),
                origin: None,
            },
            policy: PolicySnapshot {
                name: "prod".into(),
                chain: chain.clone(),
                ..PolicySnapshot::default()
            },
            reviews,
            change_set: None,
        };
        let mut approval = DeploymentApproval::new("web-1", spec);
        approval.metadata.namespace = Some("shop".into());
        approval.status = status.map(|phase| DeploymentApprovalStatus {
            phase,
            ..Default::default()
        });
        approval
    }

    /// Level 1 leads: lead, both, dev (the requester) or any team-leads member; one needed.
    /// Level 2 sre: sre1, both, any sre member or anyone bound to release-approver; two.
    fn two_levels() -> ApprovalSettings {
        settings(vec![
            level(
                "leads",
                vec![
                    user("lead", false),
                    user("both", false),
                    user("dev", false),
                    group("team-leads", false),
                ],
                None,
            ),
            level(
                "sre",
                vec![
                    user("sre1", false),
                    user("both", false),
                    group("sre", false),
                    role("release-approver", false),
                ],
                Some(2),
            ),
        ])
    }

    /// release-approver: group shop-leads in `shop`, user cto cluster-wide; user outsider
    /// only in another namespace.
    fn bindings() -> RoleBindingSnapshot {
        RoleBindingSnapshot {
            role_bindings: vec![
                role_binding(
                    "shop",
                    "approvers",
                    "release-approver",
                    "Group",
                    "shop-leads",
                ),
                role_binding("other", "elsewhere", "release-approver", "User", "outsider"),
            ],
            cluster_role_bindings: vec![cluster_role_binding(
                "global",
                "release-approver",
                "User",
                "cto",
            )],
        }
    }

    struct Case {
        name: &'static str,
        chain: ApprovalSettings,
        reviews: Vec<Review>,
        status: Option<ApprovalPhase>,
        review: Review,
        now: Timestamp,
        expected: Result<(), &'static str>,
    }

    /// A case on [`two_levels`] with no status, judged at minute 10.
    fn case(
        name: &'static str,
        reviews: Vec<Review>,
        review: Review,
        expected: Result<(), &'static str>,
    ) -> Case {
        Case {
            name,
            chain: two_levels(),
            reviews,
            status: None,
            review,
            now: at(10),
            expected,
        }
    }

    const LEVEL_1_OPEN: &str = "level 1/2 leads: 0 of 1 approvals";

    #[test]
    fn review_standing_table() {
        let mut self_approving = two_levels();
        self_approving.allow_self_approval = true;
        let mut with_ttl = two_levels();
        with_ttl.request_ttl = Some("1h".into());
        // One required lead and two free approvers: two approvals needed.
        let lead_and_one = settings(vec![level(
            "leads",
            vec![user("lead", true), user("a", false), user("b", false)],
            Some(2),
        )]);
        let lead_approved = || vec![approve("lead", &[], 1)];

        let cases = vec![
            // Level 1 open.
            case(
                "a named approver of the open level",
                vec![],
                approve("lead", &[], 10),
                Ok(()),
            ),
            case(
                "a member of two groups, one of them named",
                vec![],
                approve("carol", &["staff", "team-leads"], 10),
                Ok(()),
            ),
            case(
                "the same person through the unnamed group only",
                vec![],
                approve("carol", &["staff"], 10),
                Err(
                    "carol (review groups: staff) is not an approver of the open level; only its approvers can approve now (level 1/2 leads: 0 of 1 approvals)",
                ),
            ),
            case(
                "an approver of a later level only",
                vec![],
                approve("sre1", &[], 10),
                Err(
                    "level 2/2 sre is not open yet, so sre1 cannot approve now; approve again once it opens (the open level is level 1/2 leads: 0 of 1 approvals)",
                ),
            ),
            case(
                "a role member (RoleBinding of a group) before the role's level opens",
                vec![],
                approve("lena", &["shop-leads"], 10),
                Err(
                    "level 2/2 sre is not open yet, so lena cannot approve now; approve again once it opens (the open level is level 1/2 leads: 0 of 1 approvals)",
                ),
            ),
            case(
                "one identity eligible at two levels, at the first",
                vec![],
                approve("both", &[], 10),
                Ok(()),
            ),
            case(
                "a rejection by an approver of a later level",
                vec![],
                reject("sre1", &[], 10),
                Ok(()),
            ),
            case(
                "an approval by nobody the chain names",
                vec![],
                approve("mallory", &[], 10),
                Err(
                    "mallory (review groups: none) is not an approver of the open level; only its approvers can approve now (level 1/2 leads: 0 of 1 approvals)",
                ),
            ),
            case(
                "a rejection by nobody the chain names",
                vec![],
                reject("mallory", &["staff"], 10),
                Err(
                    "mallory (review groups: staff) is not an approver of any level of this request, so cannot review it; ask one of its approvers",
                ),
            ),
            case(
                "the requester, also an approver, approves",
                vec![],
                approve("dev", &["team-leads"], 10),
                Err(
                    "dev requested this change and cannot approve it (the chain does not set allowSelfApproval); the open level needs other approvers (level 1/2 leads: 0 of 1 approvals); a Reject from dev withdraws the request",
                ),
            ),
            Case {
                name: "the requester approves under allowSelfApproval",
                chain: self_approving.clone(),
                ..case("", vec![], approve("dev", &[], 10), Ok(()))
            },
            case(
                "the requester withdraws their request",
                vec![],
                reject("dev", &[], 10),
                Ok(()),
            ),
            Case {
                name: "the requester withdraws a request whose chain does not name them",
                chain: lead_and_one.clone(),
                ..case("", vec![], reject("dev", &[], 10), Ok(()))
            },
            // Level 2 open: lead satisfied level 1.
            case(
                "both, at the second level after lead",
                lead_approved(),
                approve("both", &[], 10),
                Ok(()),
            ),
            case(
                "a group member of the second level",
                lead_approved(),
                approve("tom", &["sre"], 10),
                Ok(()),
            ),
            case(
                "a role member through a RoleBinding of their group in the namespace",
                lead_approved(),
                approve("lena", &["shop-leads"], 10),
                Ok(()),
            ),
            case(
                "a role member through a ClusterRoleBinding",
                lead_approved(),
                approve("cto", &[], 10),
                Ok(()),
            ),
            case(
                "a RoleBinding in another namespace does not make an approver",
                lead_approved(),
                approve("outsider", &[], 10),
                Err(
                    "outsider (review groups: none) is not an approver of the open level; only its approvers can approve now (level 2/2 sre: 0 of 2 approvals)",
                ),
            ),
            case(
                "an approver of the earlier, satisfied level only",
                lead_approved(),
                approve("carol", &["team-leads"], 10),
                Err(
                    "carol (review groups: team-leads) is not an approver of the open level (carol approves at level 1/2 leads, which is already satisfied); only its approvers can approve now (level 2/2 sre: 0 of 2 approvals)",
                ),
            ),
            case(
                "an approver of the satisfied level may still reject",
                vec![approve("both", &[], 1)],
                reject("lead", &[], 10),
                Ok(()),
            ),
            case(
                "an approver changes their mind and rejects",
                lead_approved(),
                reject("lead", &[], 10),
                Ok(()),
            ),
            case(
                "a second approval by the same person",
                lead_approved(),
                approve("lead", &[], 10),
                Err(
                    "lead already reviewed this request (spec.reviews[0]); one person counts once per request, so the open level needs other approvers (level 2/2 sre: 0 of 2 approvals); a Reject from lead is still accepted, to stop the change",
                ),
            ),
            case(
                "one identity eligible at two levels cannot count at both",
                vec![approve("both", &[], 1)],
                approve("both", &[], 10),
                Err(
                    "both already reviewed this request (spec.reviews[0]); one person counts once per request, so the open level needs other approvers (level 2/2 sre: 0 of 2 approvals); a Reject from both is still accepted, to stop the change",
                ),
            ),
            case(
                "a second review by the same person under another group",
                vec![approve("carol", &["team-leads"], 1)],
                approve("carol", &["sre"], 10),
                Err(
                    "carol already reviewed this request (spec.reviews[0]); one person counts once per request, so the open level needs other approvers (level 2/2 sre: 0 of 2 approvals); a Reject from carol is still accepted, to stop the change",
                ),
            ),
            Case {
                name: "the requester approves twice under allowSelfApproval",
                chain: self_approving,
                ..case(
                    "",
                    vec![approve("dev", &[], 1)],
                    approve("dev", &[], 10),
                    Err(
                        "dev already reviewed this request (spec.reviews[0]); one person counts once per request, so the open level needs other approvers (level 2/2 sre: 0 of 2 approvals); a Reject from dev is still accepted, to stop the change",
                    ),
                )
            },
            Case {
                name: "eligible at the open level though it needs no more free approvals",
                chain: lead_and_one.clone(),
                ..case(
                    "",
                    vec![approve("a", &[], 1)],
                    approve("b", &[], 10),
                    Ok(()),
                )
            },
            // Closed requests.
            case(
                "the chain is approved",
                vec![
                    approve("lead", &[], 1),
                    approve("tom", &["sre"], 2),
                    approve("cto", &[], 3),
                ],
                approve("sre1", &[], 10),
                Err("the request is Approved; reviews are closed"),
            ),
            case(
                "an approval after a rejection",
                vec![reject("sre1", &[], 1)],
                approve("lead", &[], 10),
                Err("the request is Rejected; reviews are closed"),
            ),
            case(
                "a rejection after a rejection",
                vec![reject("sre1", &[], 1)],
                reject("lead", &[], 10),
                Err("the request is Rejected; reviews are closed"),
            ),
            Case {
                name: "a status forged to Deploying over only a rejection",
                status: Some(ApprovalPhase::Deploying),
                ..case(
                    "",
                    vec![reject("sre1", &[], 1)],
                    approve("lead", &[], 10),
                    Err("the request is Rejected; reviews are closed"),
                )
            },
            Case {
                name: "a status forged to Pending over a rejection",
                status: Some(ApprovalPhase::Pending),
                ..case(
                    "",
                    vec![reject("sre1", &[], 1)],
                    approve("lead", &[], 10),
                    Err("the request is Rejected; reviews are closed"),
                )
            },
            Case {
                name: "a terminal status stands",
                status: Some(ApprovalPhase::Failed),
                ..case(
                    "",
                    vec![],
                    reject("lead", &[], 10),
                    Err("the request is Failed; reviews are closed"),
                )
            },
            Case {
                name: "requestTTL passed",
                chain: with_ttl.clone(),
                now: at(61),
                ..case(
                    "",
                    vec![],
                    approve("lead", &[], 61),
                    Err("the request is Expired; reviews are closed"),
                )
            },
            Case {
                name: "the requester cannot withdraw an expired request either",
                chain: with_ttl.clone(),
                now: at(61),
                ..case(
                    "",
                    vec![],
                    reject("dev", &[], 61),
                    Err("the request is Expired; reviews are closed"),
                )
            },
            Case {
                name: "a review timed past the deadline, sent just before it",
                chain: with_ttl.clone(),
                now: at(60) - SignedDuration::from_secs(20),
                ..case(
                    "",
                    vec![],
                    by(
                        "lead",
                        &[],
                        ReviewDecision::Approve,
                        at(60) + SignedDuration::from_secs(20),
                    ),
                    Err("the request is Expired; reviews are closed"),
                )
            },
            Case {
                name: "a review just before the deadline",
                chain: with_ttl,
                now: at(59),
                ..case("", vec![], approve("lead", &[], 59), Ok(()))
            },
        ];
        let bindings = bindings();
        for case in cases {
            let old = approval(&case.chain, case.reviews, case.status);
            let got = validate_review_standing(&old, &case.review, &bindings, case.now)
                .map_err(|refusal| refusal.to_string());
            assert_eq!(got, case.expected.map_err(String::from), "{}", case.name);
        }
    }

    #[test]
    fn refusals_are_typed() {
        let old = approval(&two_levels(), vec![], None);
        let got = validate_review_standing(&old, &approve("sre1", &[], 10), &bindings(), at(10));
        assert_eq!(
            got,
            Err(ReviewRefusal::LevelNotOpen {
                user: "sre1".into(),
                level: "level 2/2 sre".into(),
                progress: LEVEL_1_OPEN.into(),
            })
        );
        let old = approval(&two_levels(), vec![reject("sre1", &[], 1)], None);
        let got = validate_review_standing(&old, &approve("lead", &[], 10), &bindings(), at(10));
        assert_eq!(got, Err(ReviewRefusal::Closed(ApprovalPhase::Rejected)));
    }

    #[test]
    fn review_groups_table() {
        let mut chain = two_levels();
        chain.levels.push(level(
            "everyone",
            vec![user("alice", false), role("platform-approver", false)],
            None,
        ));
        let mut bindings = bindings();
        bindings.role_bindings.push(role_binding(
            "other",
            "foreign",
            "release-approver",
            "Group",
            "other-leads",
        ));
        bindings.cluster_role_bindings.push(cluster_role_binding(
            "platform",
            "platform-approver",
            "Group",
            "platform",
        ));
        bindings.cluster_role_bindings.push(cluster_role_binding(
            "alice-platform",
            "platform-approver",
            "User",
            "alice",
        ));
        let mut authenticated = settings(vec![level(
            "anyone",
            vec![group("system:authenticated", false)],
            None,
        )]);
        authenticated.allow_self_approval = true;
        let requester = UserInfo::new("dev", &[]);
        let cases: Vec<(&str, &ApprovalSettings, UserInfo, Vec<&str>)> = vec![
            (
                "only the named group, in the author's order",
                &chain,
                UserInfo::new(
                    "carol",
                    &["system:authenticated", "staff", "sre", "team-leads"],
                ),
                vec!["sre", "team-leads"],
            ),
            (
                "groups bound to a role in the namespace and cluster-wide",
                &chain,
                UserInfo::new("lena", &["other-leads", "platform", "shop-leads"]),
                vec!["platform", "shop-leads"],
            ),
            (
                "duplicates once",
                &chain,
                UserInfo::new("carol", &["sre", "team-leads", "sre"]),
                vec!["sre", "team-leads"],
            ),
            (
                "an approver named as a user needs no group",
                &chain,
                UserInfo::new("lead", &["system:authenticated", "staff"]),
                vec![],
            ),
            (
                "a role bound to the user by name adds no group, a group entry still does",
                &chain,
                UserInfo::new("alice", &["platform", "sre"]),
                vec!["sre"],
            ),
            (
                "nobody the chain names",
                &chain,
                UserInfo::new("mallory", &["system:authenticated", "developers"]),
                vec![],
            ),
            (
                "system:authenticated when the chain really names it",
                &authenticated,
                UserInfo::new("anyone", &["staff", "system:authenticated"]),
                vec!["system:authenticated"],
            ),
        ];
        for (name, settings, author, expected) in cases {
            let chain = ApprovalChain {
                settings,
                requester: &requester,
                namespace: "shop",
                bindings: &bindings,
                requested_at: t0(),
            };
            assert_eq!(review_groups(&chain, &author), expected, "{name}");
        }
    }

    /// Apply `add` operations as the API server would (enough for these tests).
    fn apply(object: &mut Value, operations: &[Value]) {
        for operation in operations {
            assert_eq!(operation["op"], "add");
            let path = operation["path"].as_str().unwrap();
            let (parent, field) = path.rsplit_once('/').unwrap();
            object.pointer_mut(parent).unwrap()[field] = operation["value"].clone();
        }
    }

    #[test]
    fn stamp_appended_reviews_table() {
        let author = UserInfo::new("alice", &["team-leads", "system:authenticated"]);
        let groups = vec!["team-leads".to_string()];
        // Sub-second precision is dropped, as metav1.Time does.
        let now: Timestamp = "2026-11-24T10:00:00.750Z".parse().unwrap();
        let earlier = json!({"user": "bob", "groups": [], "decision": "Approve",
            "time": "2026-11-24T09:59:00Z"});
        let with_reviews = |reviews: Value| json!({"spec": {"target": {}, "reviews": reviews}});
        let add = |index: usize, field: &str, value: Value| json!({"op": "add", "path": format!("/spec/reviews/{index}/{field}"), "value": value});
        let all_three = |index| {
            vec![
                add(index, "user", json!("alice")),
                add(index, "groups", json!(["team-leads"])),
                add(index, "time", json!("2026-11-24T10:00:00Z")),
            ]
        };
        let cases: Vec<(&str, usize, Value, Vec<Value>)> = vec![
            (
                "decision and comment only",
                1,
                with_reviews(json!([earlier, {"decision": "Approve", "comment": "LGTM"}])),
                all_three(1),
            ),
            (
                "null fields are filled",
                1,
                with_reviews(json!([earlier, {"decision": "Reject", "user": null,
                    "groups": null, "time": null}])),
                all_three(1),
            ),
            (
                "present claims are left for the validating webhook",
                1,
                with_reviews(json!([earlier, {"decision": "Approve", "user": "carol",
                    "groups": ["sre"]}])),
                vec![add(1, "time", json!("2026-11-24T10:00:00Z"))],
            ),
            (
                "an empty groups list (the CRD's default) is filled",
                0,
                with_reviews(json!([{"decision": "Approve", "groups": [],
                    "user": "alice", "time": "2026-11-24T10:00:00Z"}])),
                vec![add(0, "groups", json!(["team-leads"]))],
            ),
            (
                "earlier reviews are never touched",
                1,
                with_reviews(json!([{"decision": "Approve"}])),
                vec![],
            ),
            (
                "every appended review",
                0,
                with_reviews(json!([{"decision": "Approve"}, {"decision": "Reject"}])),
                [all_three(0), all_three(1)].concat(),
            ),
            ("no spec", 0, json!({"metadata": {}}), vec![]),
            (
                "spec is not an object",
                0,
                json!({"spec": "reviews"}),
                vec![],
            ),
            ("no reviews", 0, json!({"spec": {}}), vec![]),
            ("reviews is null", 0, with_reviews(Value::Null), vec![]),
            (
                "reviews is an object",
                0,
                with_reviews(json!({"0": {"decision": "Approve"}})),
                vec![],
            ),
            (
                "reviews that are not objects",
                0,
                with_reviews(json!(["Approve", 1, null, [{"decision": "Approve"}]])),
                vec![],
            ),
            (
                "an old count beyond the list",
                5,
                with_reviews(json!([{"decision": "Approve"}])),
                vec![],
            ),
            ("the object is an array", 0, json!([{"spec": {}}]), vec![]),
            ("the object is a string", 0, json!("spec"), vec![]),
        ];
        for (name, old_count, object, expected) in cases {
            let got = stamp_appended_reviews(old_count, &object, &author, &groups, now);
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn a_stamped_review_is_a_genuine_review() {
        let author = UserInfo::new("carol", &["staff", "team-leads", "system:authenticated"]);
        let old = approval(&two_levels(), vec![approve("lead", &[], 1)], None);
        let mut object = serde_json::to_value(&old).unwrap();
        object["spec"]["reviews"]
            .as_array_mut()
            .unwrap()
            .push(json!({"decision": "Approve", "comment": "ok"}));
        let bindings = bindings();
        let chain = approval_chain(&old, "shop", &bindings);
        let groups = review_groups(&chain, &author);
        assert_eq!(groups, vec!["team-leads"]);
        let now = at(10) + SignedDuration::from_millis(400);
        let operations = stamp_appended_reviews(1, &object, &author, &groups, now);
        apply(&mut object, &operations);
        let new: DeploymentApproval = serde_json::from_value(object).unwrap();
        let edit = validate_review_edit(&old.spec, &new.spec, &author, now);
        let Ok(ReviewEdit::Appended(review)) = edit else {
            panic!("stamped review refused: {edit:?}");
        };
        assert_eq!(review.time, Time(at(10)));
        // Stamped with the groups that name carol at level 1 only, so level 2 refuses her.
        assert_eq!(
            validate_review_standing(&old, &review, &bindings, now).map_err(|r| r.to_string()),
            Err("carol (review groups: team-leads) is not an approver of the open level (carol approves at level 1/2 leads, which is already satisfied); only its approvers can approve now (level 2/2 sre: 0 of 2 approvals)".to_string())
        );
    }
}
