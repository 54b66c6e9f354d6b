//! The audit trail's one room (SPEC §7): every call countersign makes on AuditEntries
//! (writing them, for the webhook and the operator alike; recording their deliveries;
//! writing their links in the hash chain; watching them; deleting those past retention)
//! goes through [`Trail`].
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
//!   An entry the request's state no longer holds whole (an earlier admission:
//!   `core::audit::trail::Recall`) is compared by what happened and to what.
//! - Every entry carries the writer's seal (`core::audit::chain::writer_seal`): the leader
//!   links into the hash chain only entries that carry it (`operator::chain`).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};

use super::status::apply_status_of;
use crate::api::{
    ACTION_LABEL, AuditAction, AuditEntry, AuditEntrySpec, AuditEntryStatus, ChainLink,
    NotificationStatus, entry_labels,
};
use crate::core::approval::seal::SealKey;
use crate::core::audit::chain::{WRITER_SEAL_ANNOTATION, writer_seal};
use crate::core::audit::trail::{PlannedEntry, Recall};
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

/// What became of writing a link into an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linked {
    Written,
    /// The entry is gone (deleted before it was linked).
    Gone,
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

/// Entries known to be in the trail, by a keyed hash of their name (8 or 16 bytes an entry
/// whatever its size). The key is random per process, so nobody can write an entry that
/// hashes alike.
/// - Written or found by this process: known by name. An entry's planned content may
///   change as the request moves on (the replica that admitted it is known only while the
///   change rolls out), and once written it is not written again.
/// - Learned from the trail as listed: known only with the content it holds (time aside,
///   as [`same_content`] compares), so an entry of other content under a planned name is
///   still checked and written beside it.
pub struct KnownEntries {
    keys: std::hash::RandomState,
    written: std::sync::Mutex<std::collections::HashSet<u64>>,
    listed: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
    /// The trail has been listed once (or could not be).
    learned: tokio::sync::watch::Sender<bool>,
}

impl Default for KnownEntries {
    fn default() -> Self {
        KnownEntries {
            keys: Default::default(),
            written: Default::default(),
            listed: Default::default(),
            learned: tokio::sync::watch::channel(false).0,
        }
    }
}

impl KnownEntries {
    /// Is `name` known to be written, or listed holding `spec` as it would be written
    /// ([`prepared`])? Written names are looked up first, without encoding the entry. An
    /// entry planned by identity and listed with other details is not held here: writing
    /// it reads the stored one back and finds it.
    pub fn holds(&self, name: &str, spec: &AuditEntrySpec) -> bool {
        let name = self.key_of(name);
        if self.written.lock().is_ok_and(|w| w.contains(&name)) {
            return true;
        }
        let content = self.content_of(&prepared(spec));
        self.listed
            .lock()
            .is_ok_and(|listed| listed.get(&name) == Some(&content))
    }

    /// Remember that this process wrote (or found) the entry planned as `name`.
    pub fn written(&self, name: &str) {
        let name = self.key_of(name);
        if let Ok(mut written) = self.written.lock() {
            written.insert(name);
        }
    }

    /// Remember that the trail lists `name` holding `spec` (as stored).
    pub fn learn(&self, name: &str, spec: &AuditEntrySpec) {
        let (name, content) = (self.key_of(name), self.content_of(spec));
        if let Ok(mut listed) = self.listed.lock() {
            listed.insert(name, content);
        }
    }

    /// The trail has been listed once, or could not be: what it holds is known as far as
    /// it will be.
    pub fn mark_learned(&self) {
        self.learned.send_replace(true);
    }

    /// Resolves once [`KnownEntries::mark_learned`] was called.
    pub async fn learned(&self) {
        let mut learned = self.learned.subscribe();
        let _ = learned.wait_for(|done| *done).await;
    }

    /// How many entries are known, either way.
    pub fn len(&self) -> usize {
        self.written.lock().map(|w| w.len()).unwrap_or_default()
            + self.listed.lock().map(|l| l.len()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn key_of(&self, name: &str) -> u64 {
        use std::hash::BuildHasher;
        self.keys.hash_one(name)
    }

    fn content_of(&self, spec: &AuditEntrySpec) -> u64 {
        use std::hash::BuildHasher;
        let mut timeless = spec.clone();
        timeless.time = Time(Timestamp::UNIX_EPOCH);
        // An entry that does not encode (it always does) is known as nothing.
        let json = serde_json::to_vec(&timeless).unwrap_or_default();
        self.keys.hash_one(json)
    }
}

/// Does the stored entry say what ours does, their time aside (and, for an entry planned
/// by identity, who acted and why: [`Recall::Identity`])?
fn same_content(stored: &AuditEntrySpec, ours: &AuditEntrySpec, recall: Recall) -> bool {
    let mut stored = stored.clone();
    stored.time = Time(ours.time.0);
    if recall == Recall::Identity {
        stored.actor = ours.actor.clone();
        stored.reason = ours.reason.clone();
    }
    stored == *ours
}

/// Entries per page when the trail is listed.
const PAGE: u32 = 500;

/// The install namespace's AuditEntries.
#[derive(Clone)]
pub struct Trail {
    api: Api<AuditEntry>,
    namespace: String,
    /// Seals each entry written (`None` only where nothing is written: offline checks).
    writer_key: Option<std::sync::Arc<SealKey>>,
}

impl Trail {
    pub fn new(client: Client, install_namespace: &str) -> Trail {
        Trail {
            api: Api::namespaced(client, install_namespace),
            namespace: install_namespace.to_string(),
            writer_key: None,
        }
    }

    /// The trail, sealing each entry it writes with `key`.
    pub fn sealed_with(mut self, key: std::sync::Arc<SealKey>) -> Trail {
        self.writer_key = Some(key);
        self
    }

    /// Write `planned` (see the module's rules).
    pub async fn write(&self, planned: &PlannedEntry) -> Result<Written, TrailError> {
        write(
            &self.api,
            &self.namespace,
            self.writer_key.as_deref(),
            planned,
        )
        .await
    }

    /// What to watch for every entry (the audit chain's sealer links each).
    pub fn watch_all(&self) -> (Api<AuditEntry>, watcher::Config) {
        (self.api.clone(), watcher::Config::default().page_size(PAGE))
    }

    /// Write `link`, an entry's place in the audit chain, into entry `name`'s status (the
    /// leader's sealer only: `operator::chain`).
    pub async fn link(&self, name: &str, link: &ChainLink) -> Result<Linked, kube::Error> {
        let patch = serde_json::json!({ "status": { "link": link } });
        match self
            .api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Linked::Written),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Linked::Gone),
            Err(error) => Err(error),
        }
    }

    /// What to watch for the break-glass entries (those labelled with that action), for
    /// whoever announces them.
    pub fn break_glass_watch(&self) -> (Api<AuditEntry>, watcher::Config) {
        let label = format!("{ACTION_LABEL}={:?}", AuditAction::BreakGlass);
        (self.api.clone(), watcher::Config::default().labels(&label))
    }

    /// The entry `name` as the API server holds it now (a quorum read, not a cache);
    /// `None` once it is gone.
    pub async fn fresh(&self, name: &str) -> Result<Option<AuditEntry>, kube::Error> {
        self.api.get_opt(name).await
    }

    /// Record `entry`'s deliveries in its status, at the version read. When the entry
    /// changed since only by its link (the leader's sealer writes it into the same status),
    /// the deliveries are recorded over the fresh entry; when someone else recorded
    /// deliveries meanwhile, that is the conflict it is.
    pub async fn record_deliveries(
        &self,
        entry: &AuditEntry,
        notifications: Vec<NotificationStatus>,
    ) -> Result<(), kube::Error> {
        let mut current = entry.clone();
        for _ in 0..3 {
            let status = AuditEntryStatus {
                notifications: notifications.clone(),
                ..current.status.clone().unwrap_or_default()
            };
            match apply_status_of(&self.api, &current, &status).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(conflict)) if conflict.code == 409 => {
                    let name = current.metadata.name.clone().unwrap_or_default();
                    let fresh = self.api.get(&name).await?;
                    let recorded = |e: &AuditEntry| {
                        e.status
                            .as_ref()
                            .map(|s| s.notifications.clone())
                            .unwrap_or_default()
                    };
                    if recorded(&fresh) != recorded(&current) {
                        return Err(kube::Error::Api(conflict));
                    }
                    current = fresh;
                }
                Err(error) => return Err(error),
            }
        }
        // Three versions in a row: one more try at whatever the entry is now.
        let status = AuditEntryStatus {
            notifications,
            ..current.status.clone().unwrap_or_default()
        };
        apply_status_of(&self.api, &current, &status)
            .await
            .map(drop)
    }

    /// One page of whole entries, and the token of the next page (`None` after the last).
    pub async fn entries_page(
        &self,
        page: Option<&str>,
    ) -> Result<(Vec<AuditEntry>, Option<String>), kube::Error> {
        let mut params = ListParams::default().limit(PAGE);
        if let Some(token) = page {
            params = params.continue_token(token);
        }
        let listed = self.api.list(&params).await?;
        let next = listed.metadata.continue_.filter(|token| !token.is_empty());
        Ok((listed.items, next))
    }

    /// Delete the entry `name` (past retention: the webhook lets only countersign do so);
    /// one already gone is no error.
    pub async fn delete(&self, name: &str) -> Result<(), kube::Error> {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// Write `planned` (see the module's rules) into `api`, the install namespace's
/// AuditEntries.
async fn write(
    api: &Api<AuditEntry>,
    namespace: &str,
    writer_key: Option<&SealKey>,
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
                annotations: writer_key.map(|key| {
                    [(
                        WRITER_SEAL_ANNOTATION.to_string(),
                        writer_seal(key, &candidate, &spec),
                    )]
                    .into()
                }),
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
                if same_content(&stored.spec, &spec, planned.recall) {
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
        assert!(same_content(
            &prepared(&spec("admin", 5)),
            &ours,
            Recall::Whole
        ));
        assert!(!same_content(
            &prepared(&spec("bob", 100)),
            &ours,
            Recall::Whole
        ));
        assert!(same_content(
            &prepared(&spec("bob", 100)),
            &ours,
            Recall::Identity
        ));
        let mut other_action = prepared(&spec("admin", 100));
        other_action.action = AuditAction::BreakGlass;
        assert!(!same_content(&other_action, &ours, Recall::Identity));
        assert_eq!(ours.reason.as_deref(), Some("deleted\\e[2J"));
    }

    #[test]
    fn an_entry_is_known_only_by_its_name_with_the_content_planned() {
        let known = KnownEntries::default();
        let ours = prepared(&spec("admin", 100));
        assert!(!known.holds("entry", &ours), "nothing is known at first");
        known.learn("entry", &prepared(&spec("admin", 7)));
        let cases = [
            (
                "entry",
                spec("admin", 100),
                true,
                "its time aside, the same entry",
            ),
            (
                "entry",
                spec("bob", 100),
                false,
                "another author under the name",
            ),
            (
                "other",
                spec("admin", 100),
                false,
                "the same content under another name",
            ),
        ];
        for (name, spec, held, why) in cases {
            assert_eq!(known.holds(name, &spec), held, "{why}");
        }
        // A forger's entry learned from the trail under the planned name does not count.
        let forged = KnownEntries::default();
        forged.learn("entry", &prepared(&spec("mallory", 100)));
        assert!(!forged.holds("entry", &ours));
        assert_eq!(forged.len(), 1);
        // Once this process has written (or found) it, the name is enough: its planned
        // content may move on with the request (the admitting replica is forgotten).
        forged.written("entry");
        assert!(forged.holds("entry", &prepared(&spec("admin", 100))));
        assert!(forged.holds("entry", &prepared(&spec("bob", 100))));
    }
}
