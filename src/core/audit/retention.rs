//! Audit retention: which AuditEntries are old enough to delete, and when the next one
//! will be, so the operator deletes each on time without polling.

use jiff::{SignedDuration, Timestamp};

/// What to delete now and when to look again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Names of the entries past retention.
    pub delete: Vec<String>,
    /// When the oldest remaining entry passes retention; `None`: none remains.
    pub next: Option<Timestamp>,
}

/// Is `entry` older than `retention` (`None`: kept forever) at `now`? The one rule of
/// retention, for the operator's deletions and the webhook's custody of the trail.
pub fn past_retention(
    entry: &crate::api::AuditEntry,
    retention: Option<SignedDuration>,
    now: Timestamp,
) -> bool {
    retention
        .and_then(|retention| entry.spec.time.0.checked_add(retention).ok())
        .is_some_and(|due| due <= now)
}

/// `entries` as (name, recorded time); each is kept `retention` after its time.
pub fn retention_plan(
    entries: &[(String, Timestamp)],
    retention: SignedDuration,
    now: Timestamp,
) -> RetentionPlan {
    let mut delete = Vec::new();
    let mut next: Option<Timestamp> = None;
    for (name, time) in entries {
        let due = time.checked_add(retention).unwrap_or(Timestamp::MAX);
        if due <= now {
            delete.push(name.clone());
        } else {
            next = Some(next.map_or(due, |n| n.min(due)));
        }
    }
    RetentionPlan { delete, next }
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
    fn entries_go_when_their_retention_ends() {
        let at = |h: i64| Timestamp::constant(1_795_514_400, 0) + SignedDuration::from_hours(h);
        let entries: Vec<(String, Timestamp)> = [("a", 0), ("b", 10), ("c", 30), ("d", 20)]
            .iter()
            .map(|(name, h)| (name.to_string(), at(*h)))
            .collect();
        let retention = SignedDuration::from_hours(24);
        // (now in hours, deleted, next deadline in hours)
        let cases: &[(i64, &[&str], Option<i64>)] = &[
            (1, &[], Some(24)),
            (24, &["a"], Some(34)),
            (44, &["a", "b", "d"], Some(54)),
            (60, &["a", "b", "c", "d"], None),
        ];
        for (now, deleted, next) in cases {
            let plan = retention_plan(&entries, retention, at(*now));
            assert_eq!(plan.delete, *deleted, "at {now}h");
            assert_eq!(plan.next, next.map(at), "at {now}h");
        }
    }
}
