//! Is an edit of a DeploymentApproval a genuine review by its author? (SPEC §3)
//!
//! Approvers approve by patching the CR; the webhook accepts an UPDATE only when it appends
//! one review in the author's own name, through groups the author really has, and leaves
//! everything else of the spec untouched.

use jiff::{SignedDuration, Timestamp};

use crate::api::{DeploymentApprovalSpec, Review, UserInfo};

/// How far a review's `time` may be from the API server's clock (SPEC §3: a minute).
pub const REVIEW_CLOCK_SKEW: SignedDuration = SignedDuration::from_mins(1);

/// Why an edit is refused; each message names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReviewRefusal {
    #[error("spec.{0} is immutable")]
    Immutable(&'static str),
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
                requester: UserInfo::new("dev", &[]),
                operation: Operation::Update,
                requested_at: Time(now()),
            },
            policy: PolicySnapshot::default(),
            reviews,
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
