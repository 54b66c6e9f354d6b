//! Audit retention: which AuditEntries are old enough to delete, and when the next one
//! will be, so the operator deletes each on time without polling; and, for the trail's
//! hash chain, where the kept part begins, so only a prefix of the chain is removed and a
//! signed record of that place keeps the rest verifiable.

use jiff::{SignedDuration, Timestamp};

use crate::api::ChainLink;
use crate::core::audit::chain::Head;

/// The first place kept in the chain, found a page at a time: the lowest sequence of the
/// entries kept (not past retention, or claimed and not yet linked), and the hash before it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirstKept(Option<Head>);

impl FirstKept {
    /// A kept entry's link (or a claimed one's).
    pub fn keep(&mut self, link: &ChainLink) {
        if self
            .0
            .as_ref()
            .is_none_or(|first| link.sequence < first.sequence)
        {
            self.0 = Some(Head {
                sequence: link.sequence,
                hash: link.previous.clone(),
            });
        }
    }

    /// Where the kept chain begins, given the chain's `head` and the place retention last
    /// recorded (it never moves back): with nothing kept, after the head.
    pub fn anchor(self, head: &Head, recorded: Option<&Head>) -> Head {
        let anchor = self.0.unwrap_or_else(|| Head {
            sequence: head.sequence + 1,
            hash: head.hash.clone(),
        });
        match recorded {
            Some(recorded) if recorded.sequence > anchor.sequence => recorded.clone(),
            _ => anchor,
        }
    }
}

/// Is `entry` older than `retention` (`None`: kept forever) at `now`? The one rule of
/// retention, for the operator's deletions and the webhook's custody of the trail.
pub fn past_retention(
    entry: &crate::api::AuditEntry,
    retention: Option<SignedDuration>,
    now: Timestamp,
) -> bool {
    retention.is_some_and(|retention| due_at(entry.spec.time.0, retention) <= now)
}

/// When an entry recorded at `time` falls due: `retention` after it.
pub fn due_at(time: Timestamp, retention: SignedDuration) -> Timestamp {
    time.checked_add(retention).unwrap_or(Timestamp::MAX)
}

/// The earlier of two next sweeps (the plans of two pages of one trail), `None` for none.
pub fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_chain_begins_at_its_lowest_kept_place_and_never_moves_back() {
        let link = |sequence: u64| ChainLink {
            sequence,
            previous: format!("before-{sequence}"),
            hash: format!("hash-{sequence}"),
            sealed_at: String::new(),
        };
        let head = Head {
            sequence: 9,
            hash: "hash-9".into(),
        };
        let at = |sequence: u64, hash: &str| Head {
            sequence,
            hash: hash.into(),
        };
        // (kept sequences, in the order the pages show them; recorded; anchor)
        let cases: &[(&[u64], Option<Head>, Head)] = &[
            (&[7, 5, 8], None, at(5, "before-5")),
            (&[], None, at(10, "hash-9")),
            (&[7], Some(at(3, "before-3")), at(7, "before-7")),
            (&[4], Some(at(6, "before-6")), at(6, "before-6")),
        ];
        for (kept, recorded, anchor) in cases {
            let mut first = FirstKept::default();
            for sequence in *kept {
                first.keep(&link(*sequence));
            }
            assert_eq!(
                &first.anchor(&head, recorded.as_ref()),
                anchor,
                "{kept:?} {recorded:?}"
            );
        }
    }

    #[test]
    fn the_next_sweep_of_a_paged_trail_is_the_earliest_of_its_pages() {
        let at = |s: i64| Some(Timestamp::constant(1_795_514_400 + s, 0));
        let cases = [
            (None, None, None),
            (at(5), None, at(5)),
            (None, at(7), at(7)),
            (at(9), at(3), at(3)),
            (at(3), at(9), at(3)),
        ];
        for (a, b, expected) in cases {
            assert_eq!(earliest(a, b), expected, "{a:?} {b:?}");
        }
    }

    #[test]
    fn entries_fall_due_when_their_retention_ends() {
        let at = |h: i64| Timestamp::constant(1_795_514_400, 0) + SignedDuration::from_hours(h);
        let retention = SignedDuration::from_hours(24);
        assert_eq!(due_at(at(10), retention), at(34));
        assert_eq!(due_at(Timestamp::MAX, retention), Timestamp::MAX);
        let entry = |h: i64| {
            crate::api::AuditEntry::new(
                "e",
                crate::api::AuditEntrySpec {
                    time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(h)),
                    action: crate::api::AuditAction::Requested,
                    actor: crate::api::UserInfo::new("dave", &[]),
                    target: Default::default(),
                    change_digest: None,
                    approval: None,
                    policy: None,
                    reason: None,
                    caller: None,
                },
            )
        };
        // (recorded at, now, past retention)
        for (recorded, now, past) in [
            (0, 23, false),
            (0, 24, true),
            (10, 30, false),
            (10, 40, true),
        ] {
            assert_eq!(
                past_retention(&entry(recorded), Some(retention), at(now)),
                past,
                "recorded at {recorded}h, now {now}h"
            );
        }
        assert!(!past_retention(&entry(0), None, at(1000)), "kept forever");
    }
}
