//! The entries of changes admitted without an approval (SPEC §6, §1.6): break-glass and a
//! rollback to the revision last confirmed Deployed. Written before the change is admitted,
//! under names derived from the change and the person, so a retried apply finds its entry.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sha2::{Digest, Sha256};

use crate::api::{AuditAction, AuditEntrySpec, AuditTarget, ReviewCaller, UserInfo};
use crate::core::audit::trail::{PlannedEntry, Recall};

/// A break-glass use, as its entry records it.
pub struct BreakGlassRecord<'a> {
    pub target: AuditTarget,
    pub actor: &'a UserInfo,
    pub digest: &'a str,
    /// The policies it passed.
    pub policies: &'a [String],
    pub reason: &'a str,
    pub caller: Option<ReviewCaller>,
}

/// `break-glass-<16 hex>` of (target, digest, actor).
pub fn break_glass_entry(record: BreakGlassRecord, now: Timestamp) -> PlannedEntry {
    PlannedEntry {
        name: format!(
            "break-glass-{}",
            entry_hash(&record.target, &[record.digest, &record.actor.username])
        ),
        spec: AuditEntrySpec {
            time: Time(now),
            action: AuditAction::BreakGlass,
            actor: record.actor.clone(),
            target: record.target,
            change_digest: Some(record.digest.to_string()),
            approval: None,
            policy: Some(record.policies.join(",")),
            reason: Some(record.reason.to_string()),
            caller: record.caller,
        },
        recall: Recall::Whole,
    }
}

/// A rollback admitted without approval, as its entry records it.
pub struct RollbackRecord<'a> {
    pub target: AuditTarget,
    pub actor: &'a UserInfo,
    /// The change's digest: the revision rolled back to.
    pub digest: &'a str,
    /// The old object's resourceVersion: the state rolled back from.
    pub from_version: &'a str,
    /// The approval that deployed the revision.
    pub deployed: &'a str,
    pub policy: &'a str,
    pub caller: Option<ReviewCaller>,
}

/// `rollback-<16 hex>` of (target, the state rolled back from, digest, actor).
pub fn rollback_entry(record: RollbackRecord, now: Timestamp) -> PlannedEntry {
    let deployed = record.deployed;
    PlannedEntry {
        name: format!(
            "rollback-{}",
            entry_hash(
                &record.target,
                &[record.digest, record.from_version, &record.actor.username]
            )
        ),
        spec: AuditEntrySpec {
            time: Time(now),
            action: AuditAction::Rollback,
            actor: record.actor.clone(),
            target: record.target,
            change_digest: Some(record.digest.to_string()),
            approval: Some(deployed.to_string()),
            policy: Some(record.policy.to_string()),
            reason: Some(format!(
                "rolled back to the revision last confirmed Deployed by approval {deployed}, without a new approval"
            )),
            caller: record.caller,
        },
        recall: Recall::Whole,
    }
}

/// 16 hex digits of a hash over the target and `parts`: a deterministic entry name.
fn entry_hash(target: &AuditTarget, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in [
        target.api_version.as_str(),
        target.kind.as_str(),
        target.namespace.as_deref().unwrap_or_default(),
        target.name.as_str(),
    ]
    .into_iter()
    .chain(parts.iter().copied())
    {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> AuditTarget {
        AuditTarget {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "web".into(),
            uid: None,
        }
    }

    #[test]
    fn break_glass_names_are_stable_and_distinct() {
        let name = |digest: &str, actor: &str| {
            break_glass_entry(
                BreakGlassRecord {
                    target: target(),
                    actor: &UserInfo::new(actor, &[]),
                    digest,
                    policies: &["prod".into()],
                    reason: "INC-1",
                    caller: None,
                },
                Timestamp::UNIX_EPOCH,
            )
            .name
        };
        let a = name("sha256:aa", "erin");
        assert_eq!(a, name("sha256:aa", "erin"));
        assert_ne!(a, name("sha256:ab", "erin"));
        assert_ne!(a, name("sha256:aa", "dave"));
        assert!(a.starts_with("break-glass-") && a.len() == 28);
    }

    #[test]
    fn a_rollback_entry_names_the_approval_that_deployed_the_revision() {
        let entry = rollback_entry(
            RollbackRecord {
                target: target(),
                actor: &UserInfo::new("dave", &[]),
                digest: "sha256:aa",
                from_version: "42",
                deployed: "web-1",
                policy: "prod",
                caller: None,
            },
            Timestamp::UNIX_EPOCH,
        );
        assert!(entry.name.starts_with("rollback-"));
        assert_eq!(entry.spec.approval.as_deref(), Some("web-1"));
        assert_eq!(entry.spec.action, AuditAction::Rollback);
    }
}
