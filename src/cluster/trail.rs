//! The one writer of AuditEntries (SPEC §7), for the webhook and the operator alike.
//!
//! - Every entry is labelled with its action (`countersign.dev/action`), so the break-glass
//!   announcer watches exactly the break-glass entries, whoever wrote them.
//! - Its reason is inert and bounded (`core::inert`): it quotes comments, summaries and
//!   annotations.
//! - Names are deterministic, so a retry finds its entry there. But an existing name proves
//!   nothing: the entry under it is read back and compared (all but its time, which a retry
//!   moves). One with other content (written by someone who got around the webhook, or by
//!   a review that never came from the API server) is left as it is, and this entry is
//!   written under the next free name `<name>-2`, `-3`, …, so a pre-written entry never
//!   hides the real author.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::PostParams;

use crate::api::{AuditEntry, AuditEntrySpec, entry_labels};
use crate::core::audit::trail::PlannedEntry;
use crate::core::inert;

/// The longest reason kept.
pub const MAX_REASON_CHARS: usize = 4000;
/// How many names an entry may try before the write fails: more entries of other content
/// under one name than this is an attack on the trail, and the write is refused.
const MAX_NAME_ATTEMPTS: u32 = 10;

/// What became of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    /// Created now, under this name.
    Created(String),
    /// Already there with this content, under this name (a retry).
    Found(String),
}

impl Written {
    /// The name the entry is under.
    pub fn name(&self) -> &str {
        match self {
            Written::Created(name) | Written::Found(name) => name,
        }
    }

    /// The entry under the name it was planned under held other content.
    pub fn displaced(&self, planned: &str) -> bool {
        self.name() != planned
    }
}

/// Why an entry could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("writing AuditEntry {0}: {1}")]
    Api(String, kube::Error),
    #[error(
        "AuditEntries {0} to {0}-{MAX_NAME_ATTEMPTS} all hold other content; the trail is being tampered with, so nothing is recorded"
    )]
    Crowded(String),
}

/// The entry as it is written: reason inert and bounded.
pub fn prepared(spec: &AuditEntrySpec) -> AuditEntrySpec {
    let mut spec = spec.clone();
    spec.reason = spec
        .reason
        .map(|reason| inert::bounded(&reason, MAX_REASON_CHARS));
    spec
}

/// Do two entries say the same, their time aside?
fn same_content(stored: &AuditEntrySpec, ours: &AuditEntrySpec) -> bool {
    let mut stored = stored.clone();
    stored.time = Time(ours.time.0);
    stored == *ours
}

/// Write `planned` (see the module's rules) into `api`, the install namespace's
/// AuditEntries.
pub async fn write(
    api: &Api<AuditEntry>,
    namespace: &str,
    planned: &PlannedEntry,
) -> Result<Written, TrailError> {
    let name = planned.name.as_str();
    let spec = prepared(&planned.spec);
    for attempt in 1..=MAX_NAME_ATTEMPTS {
        let candidate = if attempt == 1 {
            name.to_string()
        } else {
            format!("{name}-{attempt}")
        };
        let entry = AuditEntry {
            metadata: ObjectMeta {
                name: Some(candidate.clone()),
                namespace: Some(namespace.to_string()),
                labels: Some(entry_labels(&spec)),
                ..ObjectMeta::default()
            },
            spec: spec.clone(),
            status: None,
        };
        match api.create(&PostParams::default(), &entry).await {
            Ok(_) => return Ok(Written::Created(candidate)),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let stored = api
                    .get(&candidate)
                    .await
                    .map_err(|e| TrailError::Api(candidate.clone(), e))?;
                if same_content(&stored.spec, &spec) {
                    return Ok(Written::Found(candidate));
                }
                tracing::warn!(
                    entry = candidate,
                    "an AuditEntry with other content holds this name; writing under the next"
                );
            }
            Err(error) => return Err(TrailError::Api(candidate, error)),
        }
    }
    Err(TrailError::Crowded(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AuditAction, AuditTarget, UserInfo};

    fn spec(actor: &str, seconds: i64) -> AuditEntrySpec {
        AuditEntrySpec {
            time: Time(jiff::Timestamp::from_second(seconds).expect("time")),
            action: AuditAction::PolicyDeleted,
            actor: UserInfo::new(actor, &[]),
            target: AuditTarget::default(),
            change_digest: None,
            approval: None,
            policy: Some("prod".into()),
            reason: Some("deleted\u{1b}[2J".into()),
            caller: None,
        }
    }

    #[test]
    fn a_retry_matches_but_another_author_does_not() {
        let ours = prepared(&spec("admin", 100));
        assert!(same_content(&prepared(&spec("admin", 5)), &ours));
        assert!(!same_content(&prepared(&spec("bob", 100)), &ours));
        assert_eq!(ours.reason.as_deref(), Some("deleted\\e[2J"));
    }
}
