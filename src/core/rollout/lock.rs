//! One change at a time per object (SPEC §1.3), atomically. Moving an approval to
//! `Deploying` is a compare-and-swap on that approval; two *different* approved changes of
//! one object are two approvals, so that alone lets both through when they are applied at
//! the same moment (`kubectl replace` of two approved manifests, two replicas). So every
//! admission of an approved change first takes the object's lock: one Lease per object in
//! the install namespace, written at the resourceVersion it was read at, naming the
//! approval that holds it. Of two admissions racing for it the API server lets exactly one
//! write; the other is denied with "retry".
//!
//! The lock is held while its approval is `Deploying`, and for a short while after it was
//! taken (the holder's own move to `Deploying` is still on its way, and its stored phase
//! may still say `Pending`: the webhook admits on the reviews, ahead of the operator's
//! status); after that a holder that is not `Deploying` (rolled out, failed, never
//! applied, deleted) holds nothing, and the operator deletes the Lease of a rollout that
//! ended.

use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use crate::api::ApprovalPhase;

/// How long a freshly taken lock counts as held although its approval is not `Deploying`
/// yet: longer than the webhook's two live calls (each at most 3 s) between taking it and
/// moving the approval.
pub const LOCK_SETTLE: SignedDuration = SignedDuration::from_secs(10);

/// The label every lock Lease carries.
pub const LOCK_LABEL: &str = "countersign.dev/change-lock";

/// The lock of an object: `change-lock-<16 hex>` of its group, kind, namespace and name.
pub fn lock_name(group: &str, kind: &str, namespace: &str, name: &str) -> String {
    let mut hash = Sha256::new();
    for part in [group, kind, namespace, name] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let hex: String = hash
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("change-lock-{hex}")
}

/// The lock as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockState {
    /// `<namespace>/<approval>` holding it.
    pub holder: String,
    pub acquired_at: Option<Timestamp>,
}

/// Where the lock's holder stands now (read live).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderState {
    /// The approval no longer exists.
    Gone,
    Phase(ApprovalPhase),
}

/// What the admission of `me` may do with the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockVerdict {
    /// Take it (create the Lease, or replace it at the version read).
    Take,
    /// `me` holds it already (a retry of its own admission): go on.
    Mine,
    /// Another approved change is rolling out.
    RollingOut { holder: String },
    /// Another approved change was admitted a moment ago and is on its way to `Deploying`.
    Settling { holder: String },
}

/// Judge the lock for the admission of approval `me` at `now`. `holder` is the live state
/// of the lock's holder (not needed when there is no lock, or `me` holds it).
pub fn judge_lock(
    lock: Option<&LockState>,
    holder: Option<HolderState>,
    me: &str,
    now: Timestamp,
) -> LockVerdict {
    let Some(lock) = lock else {
        return LockVerdict::Take;
    };
    if lock.holder == me {
        return LockVerdict::Mine;
    }
    match holder {
        Some(HolderState::Phase(ApprovalPhase::Deploying)) => LockVerdict::RollingOut {
            holder: lock.holder.clone(),
        },
        // The stored phase lags the chain: the webhook admits on the reviews, so a holder
        // admitted a moment ago may still be stored `Pending` (the operator has not written
        // `Approved` yet) as well as `Approved` (its own move to `Deploying` is on its way).
        Some(HolderState::Phase(ApprovalPhase::Pending | ApprovalPhase::Approved))
            if lock
                .acquired_at
                .is_none_or(|at| now.duration_since(at) < LOCK_SETTLE) =>
        {
            LockVerdict::Settling {
                holder: lock.holder.clone(),
            }
        }
        // Unknown: the caller could not read the holder, so it cannot be taken safely.
        None => LockVerdict::Settling {
            holder: lock.holder.clone(),
        },
        _ => LockVerdict::Take,
    }
}

/// Why an admission is denied for the lock's sake; `None` when it may go on.
pub fn refusal(verdict: &LockVerdict) -> Option<String> {
    match verdict {
        LockVerdict::Take | LockVerdict::Mine => None,
        LockVerdict::RollingOut { holder } => Some(format!(
            "approved change {holder} is rolling out; one change at a time per object"
        )),
        LockVerdict::Settling { holder } => Some(format!(
            "approved change {holder} of this object was admitted a moment ago; one change at a time per object, retry in a few seconds"
        )),
    }
}

/// Whether the operator may delete the lock now that `holder`'s rollout ended: only a lock
/// its approval holds.
pub fn releases(lock: &LockState, approval: &str) -> bool {
    lock.holder == approval
}

#[cfg(test)]
mod tests {
    use super::*;
    use ApprovalPhase::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("a time")
    }

    #[test]
    fn lock_table() {
        let held = |since: i64| LockState {
            holder: "shop/web-a".into(),
            acquired_at: Some(at(since)),
        };
        let take = LockVerdict::Take;
        let rolling = LockVerdict::RollingOut {
            holder: "shop/web-a".into(),
        };
        let settling = LockVerdict::Settling {
            holder: "shop/web-a".into(),
        };
        // (what, lock, holder, me, now, verdict)
        type Case = (
            &'static str,
            Option<LockState>,
            Option<HolderState>,
            &'static str,
            i64,
            LockVerdict,
        );
        let cases: Vec<Case> = vec![
            ("no lock yet", None, None, "shop/web-b", 0, take.clone()),
            (
                "a retry of the holder",
                Some(held(0)),
                None,
                "shop/web-a",
                1,
                LockVerdict::Mine,
            ),
            (
                "the holder rolls out",
                Some(held(0)),
                Some(HolderState::Phase(Deploying)),
                "shop/web-b",
                600,
                rolling,
            ),
            (
                "the holder is on its way",
                Some(held(0)),
                Some(HolderState::Phase(Approved)),
                "shop/web-b",
                5,
                settling.clone(),
            ),
            (
                "the holder's status has not caught up with its approval yet",
                Some(held(0)),
                Some(HolderState::Phase(Pending)),
                "shop/web-b",
                5,
                settling.clone(),
            ),
            (
                "the holder's admission never finished",
                Some(held(0)),
                Some(HolderState::Phase(Pending)),
                "shop/web-b",
                11,
                take.clone(),
            ),
            (
                "the holder never got there",
                Some(held(0)),
                Some(HolderState::Phase(Approved)),
                "shop/web-b",
                11,
                take.clone(),
            ),
            (
                "the holder rolled out",
                Some(held(0)),
                Some(HolderState::Phase(Deployed)),
                "shop/web-b",
                5,
                take.clone(),
            ),
            (
                "the holder failed",
                Some(held(0)),
                Some(HolderState::Phase(Failed)),
                "shop/web-b",
                5,
                take.clone(),
            ),
            (
                "the holder is gone",
                Some(held(0)),
                Some(HolderState::Gone),
                "shop/web-b",
                5,
                take.clone(),
            ),
            (
                "the holder could not be read",
                Some(held(0)),
                None,
                "shop/web-b",
                600,
                settling.clone(),
            ),
            (
                "a lock without a time",
                Some(LockState {
                    holder: "shop/web-a".into(),
                    acquired_at: None,
                }),
                Some(HolderState::Phase(Approved)),
                "shop/web-b",
                600,
                settling,
            ),
        ];
        for (what, lock, holder, me, now, verdict) in cases {
            assert_eq!(
                judge_lock(lock.as_ref(), holder, me, at(now)),
                verdict,
                "{what}"
            );
        }
    }

    #[test]
    fn locks_are_per_object_and_released_only_by_their_holder() {
        let a = lock_name("apps", "Deployment", "shop", "web");
        assert_eq!(a, lock_name("apps", "Deployment", "shop", "web"));
        assert_ne!(a, lock_name("apps", "StatefulSet", "shop", "web"));
        assert_ne!(a, lock_name("apps", "Deployment", "shop2", "web"));
        assert_ne!(lock_name("a", "bc", "", ""), lock_name("ab", "c", "", ""));
        assert!(a.starts_with("change-lock-") && a.len() == 28);
        let lock = LockState {
            holder: "shop/web-a".into(),
            acquired_at: None,
        };
        assert!(releases(&lock, "shop/web-a"));
        assert!(!releases(&lock, "shop/web-b"));
    }
}
