//! The one cache of DeploymentApprovals, for the webhook and the operator alike.
//!
//! - Indexed by target: a review looks up the approvals of one object (namespace, name)
//!   without scanning every approval in the cluster.
//! - Each is held as compact JSON, LZ4-compressed against a dictionary of the first few
//!   approvals (about a fifth of the JSON, which a decoded approval takes three times:
//!   [`crate::cluster::approval_codec`]), and decoded when read: a review reads one to
//!   three of them, a reconcile one. Decompressing one takes about a microsecond.
//! - A relist (a watch that expired) is applied as it comes, one approval at a time, and
//!   what it no longer lists is removed at its end: the index is never held twice.
//! - The operator's controllers are driven from here ([`ApprovalIndex::names`] and
//!   [`ApprovalIndex::changes`]) rather than from watches of their own, so each approval
//!   is watched, decoded and held once. A relist reports only what it changed, so a watch
//!   that expires does not reconcile every request again.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher::Event;
use tokio::sync::{broadcast, watch};

use crate::api::{ApprovalPhase, DeploymentApproval};
use crate::cluster::approval_codec::{Codec, Stored};

/// (namespace, name).
type Key = (String, String);

/// An approval's name and namespace only: what the operator's controller schedules by
/// (it reads the approval itself from the index when it reconciles).
pub type ApprovalName = PartialObjectMeta<DeploymentApproval>;

fn name_of(key: &Key) -> ApprovalName {
    named(&key.0, &key.1)
}

/// The [`ApprovalName`] of `namespace/name`.
pub fn named(namespace: &str, name: &str) -> ApprovalName {
    PartialObjectMeta {
        types: None,
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        _phantom: Default::default(),
    }
}

/// One approval that changed (created, updated or deleted), for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Touched {
    pub namespace: String,
    pub name: String,
    /// The change set it is a member of.
    pub change_set: Option<String>,
    pub deleted: bool,
}

/// How many changes a slow listener may fall behind before it is told to start over
/// (it then takes every name from [`ApprovalIndex::names`]).
const CHANGES_BUFFER: usize = 4096;

/// What one approval is filed under.
struct Filed {
    target: Key,
    phase: ApprovalPhase,
    change_set: Option<String>,
}

/// The index proper: approvals by target, then by name, and where each is filed.
#[derive(Default)]
struct Entries {
    by_target: HashMap<Key, HashMap<String, Stored>>,
    filed: HashMap<Key, Filed>,
    codec: Codec,
}

impl Entries {
    /// File `approval`, in place of what was filed under its name; its key, and whether
    /// it differs from what it replaced (or is new).
    fn insert(&mut self, approval: &DeploymentApproval) -> Option<(Key, bool)> {
        let json = Codec::json(approval)?;
        if self.codec.learn(&json) {
            self.reencode_all();
        }
        let stored = self.codec.encode(&json);
        let key = approval_key(approval);
        let changed = self.stored(&key) != Some(&stored);
        self.remove(&key);
        let target = target_key(approval);
        self.filed.insert(
            key.clone(),
            Filed {
                target: target.clone(),
                phase: approval.phase(),
                change_set: approval.spec.change_set.clone(),
            },
        );
        self.by_target
            .entry(target)
            .or_default()
            .insert(key.1.clone(), stored);
        Some((key, changed))
    }

    fn remove(&mut self, key: &Key) -> Option<Filed> {
        let filed = self.filed.remove(key)?;
        if let Some(names) = self.by_target.get_mut(&filed.target) {
            names.remove(&key.1);
            if names.is_empty() {
                self.by_target.remove(&filed.target);
            }
        }
        Some(filed)
    }

    /// Every approval encoded again, once the codec's dictionary is whole (only the few
    /// filed before it are held then).
    fn reencode_all(&mut self) {
        let codec = &self.codec;
        for names in self.by_target.values_mut() {
            names.retain(|_, stored| match codec.reencoded(stored) {
                Some(again) => {
                    *stored = again;
                    true
                }
                None => false,
            });
        }
        let by_target = &self.by_target;
        self.filed.retain(|key, filed| {
            by_target
                .get(&filed.target)
                .is_some_and(|names| names.contains_key(&key.1))
        });
    }

    fn decoded(&self, stored: &[u8]) -> Option<DeploymentApproval> {
        self.codec.decode(stored)
    }

    fn stored(&self, key: &Key) -> Option<&Stored> {
        let filed = self.filed.get(key)?;
        self.by_target.get(&filed.target)?.get(&key.1)
    }

    fn touched(&self, key: &Key, deleted: bool) -> Touched {
        Touched {
            namespace: key.0.clone(),
            name: key.1.clone(),
            change_set: self.filed.get(key).and_then(|f| f.change_set.clone()),
            deleted,
        }
    }
}

/// A list in progress (between `Init` and `InitDone`).
#[derive(Default)]
struct Relist {
    /// The approvals it has listed so far: at its end, the others are gone.
    listed: std::collections::HashSet<Key>,
    /// The first list: its names go to the names store as one list, which marks the
    /// store ready (the controller starts only then).
    first: bool,
}

/// Approvals by (namespace, target name), then by approval name; fed by watch events.
pub struct ApprovalIndex {
    entries: RwLock<Entries>,
    relist: Mutex<Option<Relist>>,
    names: Store<ApprovalName>,
    names_writer: Mutex<Writer<ApprovalName>>,
    changes: broadcast::Sender<Touched>,
    synced: watch::Sender<bool>,
}

impl Default for ApprovalIndex {
    fn default() -> Self {
        let (names, names_writer) = reflector::store();
        ApprovalIndex {
            entries: RwLock::default(),
            relist: Mutex::default(),
            names,
            names_writer: Mutex::new(names_writer),
            changes: broadcast::channel(CHANGES_BUFFER).0,
            synced: watch::channel(false).0,
        }
    }
}

fn approval_key(approval: &DeploymentApproval) -> Key {
    (
        approval.namespace().unwrap_or_default(),
        approval.name_any(),
    )
}

fn target_key(approval: &DeploymentApproval) -> Key {
    (
        approval.namespace().unwrap_or_default(),
        approval.spec.target.name.clone(),
    )
}

impl ApprovalIndex {
    /// Apply one watch event.
    pub fn apply(&self, event: Event<DeploymentApproval>) {
        match event {
            Event::Init => {
                let first = !*self.synced.borrow();
                if first {
                    self.name_event(Event::Init);
                }
                if let Ok(mut relist) = self.relist.lock() {
                    *relist = Some(Relist {
                        first,
                        ..Relist::default()
                    });
                }
            }
            Event::InitApply(approval) => {
                let first = self
                    .relist
                    .lock()
                    .ok()
                    .and_then(|mut relist| {
                        let relist = relist.as_mut()?;
                        relist.listed.insert(approval_key(&approval));
                        Some(relist.first)
                    })
                    .unwrap_or_default();
                self.file(&approval, first);
            }
            Event::InitDone => {
                let relist = self
                    .relist
                    .lock()
                    .ok()
                    .and_then(|mut relist| relist.take())
                    .unwrap_or_default();
                self.drop_unlisted(&relist.listed);
                if relist.first {
                    self.name_event(Event::InitDone);
                }
                self.synced.send_replace(true);
            }
            Event::Apply(approval) => self.file(&approval, false),
            Event::Delete(approval) => {
                let key = approval_key(&approval);
                let removed = self.entries.write().ok().and_then(|mut e| e.remove(&key));
                self.name_event(Event::Delete(name_of(&key)));
                if removed.is_some() {
                    self.announce(Touched {
                        change_set: approval.spec.change_set.clone(),
                        namespace: key.0,
                        name: key.1,
                        deleted: true,
                    });
                }
            }
        }
    }

    /// File `approval` and announce it when it is new or changed; its name goes to the
    /// names store, into the first list's buffer when `first`.
    fn file(&self, approval: &DeploymentApproval, first: bool) {
        let filed = self
            .entries
            .write()
            .ok()
            .and_then(|mut e| e.insert(approval));
        let Some((key, changed)) = filed else {
            return;
        };
        let name = name_of(&key);
        if first {
            self.name_event(Event::InitApply(name));
        } else if changed {
            self.name_event(Event::Apply(name));
        }
        if changed {
            self.announce(Touched {
                namespace: key.0,
                name: key.1,
                change_set: approval.spec.change_set.clone(),
                deleted: false,
            });
        }
    }

    /// Remove (and announce) every approval a complete list did not have.
    fn drop_unlisted(&self, listed: &std::collections::HashSet<Key>) {
        let gone: Vec<Touched> = {
            let Ok(mut entries) = self.entries.write() else {
                return;
            };
            let keys: Vec<Key> = entries
                .filed
                .keys()
                .filter(|key| !listed.contains(*key))
                .cloned()
                .collect();
            keys.iter()
                .map(|key| {
                    let touched = entries.touched(key, true);
                    entries.remove(key);
                    touched
                })
                .collect()
        };
        for touched in gone {
            self.name_event(Event::Delete(named(&touched.namespace, &touched.name)));
            self.announce(touched);
        }
    }

    fn name_event(&self, event: Event<ApprovalName>) {
        if let Ok(mut writer) = self.names_writer.lock() {
            writer.apply_watcher_event(&event);
        }
    }

    fn announce(&self, change: Touched) {
        // No listener (this replica does not lead): nothing to tell.
        let _ = self.changes.send(change);
    }

    /// The names of every cached approval, as a store the operator's controller schedules
    /// from.
    pub fn names(&self) -> Store<ApprovalName> {
        self.names.clone()
    }

    /// Every change from now on. A listener that falls behind by more than
    /// `CHANGES_BUFFER` is told so (`Lagged`) and should take every name again.
    pub fn changes(&self) -> broadcast::Receiver<Touched> {
        self.changes.subscribe()
    }

    /// Replace everything with `approvals` (a complete list, for a preloaded snapshot).
    pub fn replace_all(&self, approvals: Vec<DeploymentApproval>) {
        self.apply(Event::Init);
        for approval in approvals {
            self.apply(Event::InitApply(approval));
        }
        self.apply(Event::InitDone);
    }

    /// The approvals of the object `namespace/target_name`.
    pub fn for_target(&self, namespace: &str, target_name: &str) -> Vec<DeploymentApproval> {
        self.decoded_for_target(namespace, target_name, |_| true)
    }

    /// The approvals of the object `namespace/target_name` that are in `phase`; only those
    /// are decoded.
    pub fn in_phase_for_target(
        &self,
        namespace: &str,
        target_name: &str,
        phase: ApprovalPhase,
    ) -> Vec<DeploymentApproval> {
        self.decoded_for_target(namespace, target_name, |filed| filed.phase == phase)
    }

    fn decoded_for_target(
        &self,
        namespace: &str,
        target_name: &str,
        wanted: impl Fn(&Filed) -> bool,
    ) -> Vec<DeploymentApproval> {
        let target = (namespace.to_string(), target_name.to_string());
        let Ok(entries) = self.entries.read() else {
            return Vec::new();
        };
        // Each was encoded from a DeploymentApproval. Decoded under the read lock, which
        // only the watch's writes wait for.
        entries
            .by_target
            .get(&target)
            .into_iter()
            .flatten()
            .filter(|(name, _)| {
                entries
                    .filed
                    .get(&(namespace.to_string(), (*name).clone()))
                    .is_some_and(&wanted)
            })
            .filter_map(|(_, stored)| entries.decoded(stored))
            .collect()
    }

    /// The approval `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<DeploymentApproval> {
        let key = (namespace.to_string(), name.to_string());
        let entries = self.entries.read().ok()?;
        entries.decoded(entries.stored(&key)?)
    }

    /// Is the approval `namespace/name` cached?
    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        let key = (namespace.to_string(), name.to_string());
        self.entries
            .read()
            .is_ok_and(|entries| entries.filed.contains_key(&key))
    }

    /// How many approvals are in each phase (a request without a status yet is Pending).
    pub fn phase_counts(&self) -> HashMap<ApprovalPhase, usize> {
        let mut counts = HashMap::new();
        if let Ok(entries) = self.entries.read() {
            for filed in entries.filed.values() {
                *counts.entry(filed.phase).or_default() += 1;
            }
        }
        counts
    }

    pub fn len(&self) -> usize {
        self.entries
            .read()
            .map(|entries| entries.filed.len())
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once the first complete list is in.
    pub async fn wait_until_synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|done| *done).await;
    }

    /// Mark the index complete without a watch (a preloaded snapshot).
    pub fn mark_synced(&self) {
        self.synced.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DeploymentApprovalSpec;
    use crate::cluster::approval_codec::tests::as_json;

    fn approval(namespace: &str, name: &str, target: &str) -> DeploymentApproval {
        let mut spec: DeploymentApprovalSpec = serde_json::from_value(serde_json::json!({
            "target": { "apiVersion": "apps/v1", "kind": "Deployment", "name": target },
            "change": { "digest": "sha256:00", "summary": { "text": "" },
                "requester": { "username": "dave" }, "operation": "UPDATE",
                "requestedAt": "2026-01-01T00:00:00Z" },
            "policy": { "name": "p", "chain": { "levels": [] } },
        }))
        .unwrap();
        spec.reviews.clear();
        let mut approval = DeploymentApproval::new(name, spec);
        approval.metadata.namespace = Some(namespace.into());
        approval
    }

    #[test]
    fn events_keep_the_index_true() {
        let index = ApprovalIndex::default();
        index.apply(Event::Init);
        index.apply(Event::InitApply(approval("shop", "web-1", "web")));
        index.apply(Event::InitApply(approval("shop", "db-1", "db")));
        index.apply(Event::InitApply(approval("other", "web-1", "web")));
        assert!(
            names(&index).is_empty(),
            "the controller's names come with the whole first list"
        );
        index.apply(Event::InitDone);
        assert_eq!(names(&index).len(), 3);
        assert_eq!(index.len(), 3);
        assert_eq!(index.for_target("shop", "web").len(), 1);

        index.apply(Event::Apply(approval("shop", "web-2", "web")));
        assert_eq!(index.for_target("shop", "web").len(), 2);
        // An update replaces, wherever it was filed.
        index.apply(Event::Apply(approval("shop", "web-2", "web")));
        assert_eq!(index.for_target("shop", "web").len(), 2);
        index.apply(Event::Delete(approval("shop", "web-1", "web")));
        assert_eq!(index.for_target("shop", "web").len(), 1);
        assert_eq!(index.for_target("other", "web").len(), 1);

        // A relist drops what is gone.
        index.apply(Event::Init);
        index.apply(Event::InitApply(approval("shop", "db-1", "db")));
        index.apply(Event::InitDone);
        assert_eq!(index.len(), 1);
        assert!(index.for_target("shop", "web").is_empty());
    }

    fn drained(changes: &mut broadcast::Receiver<Touched>) -> Vec<(String, bool)> {
        let mut seen = Vec::new();
        while let Ok(touched) = changes.try_recv() {
            seen.push((
                format!("{}/{}", touched.namespace, touched.name),
                touched.deleted,
            ));
        }
        seen.sort();
        seen
    }

    fn names(index: &ApprovalIndex) -> Vec<String> {
        let mut names: Vec<String> = index
            .names()
            .state()
            .iter()
            .map(|n| format!("{}/{}", n.namespace().unwrap_or_default(), n.name_any()))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_relist_announces_only_what_it_changed_and_the_names_follow() {
        let index = ApprovalIndex::default();
        let mut changes = index.changes();
        let mut changed = approval("shop", "web-1", "web");
        index.apply(Event::Init);
        index.apply(Event::InitApply(changed.clone()));
        index.apply(Event::InitApply(approval("shop", "db-1", "db")));
        index.apply(Event::InitApply(approval("shop", "gone-1", "gone")));
        assert!(names(&index).is_empty());
        index.apply(Event::InitDone);
        assert_eq!(
            drained(&mut changes),
            [
                ("shop/db-1".to_string(), false),
                ("shop/gone-1".to_string(), false),
                ("shop/web-1".to_string(), false)
            ],
            "the first list is all new"
        );
        assert_eq!(names(&index), ["shop/db-1", "shop/gone-1", "shop/web-1"]);

        // The watch expired: the relist finds one changed, one gone, one new, one as it was.
        changed.metadata.resource_version = Some("2".into());
        index.apply(Event::Init);
        index.apply(Event::InitApply(changed.clone()));
        index.apply(Event::InitApply(approval("shop", "db-1", "db")));
        index.apply(Event::InitApply(approval("shop", "new-1", "new")));
        // Applied as listed: the changed and the new are there and announced; what is
        // gone is known only once the list is whole.
        assert_eq!(
            drained(&mut changes),
            [
                ("shop/new-1".to_string(), false),
                ("shop/web-1".to_string(), false)
            ]
        );
        assert_eq!(
            names(&index),
            ["shop/db-1", "shop/gone-1", "shop/new-1", "shop/web-1"]
        );
        assert_eq!(
            index
                .get("shop", "web-1")
                .and_then(|a| a.metadata.resource_version),
            Some("2".to_string())
        );
        assert_eq!(index.for_target("shop", "gone").len(), 1);
        index.apply(Event::InitDone);
        assert_eq!(drained(&mut changes), [("shop/gone-1".to_string(), true)]);
        assert!(index.for_target("shop", "gone").is_empty());
        assert_eq!(names(&index), ["shop/db-1", "shop/new-1", "shop/web-1"]);

        // Live events: an update and a delete are announced, with the member's set.
        let mut member = approval("shop", "api-1", "api");
        member.spec.change_set = Some("release".into());
        index.apply(Event::Apply(member.clone()));
        index.apply(Event::Delete(approval("shop", "db-1", "db")));
        // Deleting what the index never had announces nothing.
        index.apply(Event::Delete(approval("shop", "never", "never")));
        let mut seen = Vec::new();
        while let Ok(touched) = changes.try_recv() {
            seen.push(touched);
        }
        assert_eq!(
            seen,
            [
                Touched {
                    namespace: "shop".into(),
                    name: "api-1".into(),
                    change_set: Some("release".into()),
                    deleted: false
                },
                Touched {
                    namespace: "shop".into(),
                    name: "db-1".into(),
                    change_set: None,
                    deleted: true
                }
            ]
        );
        assert_eq!(names(&index), ["shop/api-1", "shop/new-1", "shop/web-1"]);
    }

    #[test]
    fn approvals_filed_before_the_codec_learned_read_and_compare_as_the_rest() {
        let index = ApprovalIndex::default();
        let mut changes = index.changes();
        let listed: Vec<DeploymentApproval> = (0..10)
            .map(|n| approval("shop", &format!("web-{n}"), &format!("web{}", n % 3)))
            .collect();
        index.replace_all(listed.clone());
        assert_eq!(drained(&mut changes).len(), 10);
        for approval in &listed {
            assert_eq!(
                as_json(index.get("shop", &approval.name_any())),
                as_json(Some(approval.clone()))
            );
        }
        assert_eq!(index.for_target("shop", "web0").len(), 4);
        // The same list again (a watch that expired) changed nothing, those filed before
        // the dictionary was whole included.
        index.replace_all(listed);
        assert!(drained(&mut changes).is_empty());
        assert_eq!(index.len(), 10);
    }

    #[test]
    fn only_the_approvals_in_the_phase_asked_for_are_decoded() {
        let index = ApprovalIndex::default();
        let mut deploying = approval("shop", "web-1", "web");
        deploying.status = Some(crate::api::DeploymentApprovalStatus {
            phase: ApprovalPhase::Deploying,
            ..Default::default()
        });
        index.replace_all(vec![deploying, approval("shop", "web-2", "web")]);
        let found = index.in_phase_for_target("shop", "web", ApprovalPhase::Deploying);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name_any(), "web-1");
        assert_eq!(index.for_target("shop", "web").len(), 2);
        assert!(
            index
                .in_phase_for_target("shop", "web", ApprovalPhase::Approved)
                .is_empty()
        );
    }
}
