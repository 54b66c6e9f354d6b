//! The cached DeploymentApprovals, indexed by target: a review looks up the approvals of one
//! object (namespace, name) without scanning every approval in the cluster. Each is held as
//! compact JSON and decoded when read: a review reads one to three of them, and a decoded
//! approval takes about three times the memory (BENCHMARKS.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use kube::ResourceExt;
use kube::runtime::watcher::Event;
use tokio::sync::watch;

use crate::api::{ApprovalPhase, DeploymentApproval};

/// (namespace, name).
type Key = (String, String);

/// One cached approval, as compact JSON.
type Stored = Arc<[u8]>;

fn store(approval: &DeploymentApproval) -> Option<Stored> {
    serde_json::to_vec(approval).ok().map(Stored::from)
}

/// Approvals by (namespace, target name), then by approval name; fed by watch events.
pub struct ApprovalIndex {
    by_target: RwLock<HashMap<Key, HashMap<String, Stored>>>,
    /// Where each approval is filed, so an update or delete finds it, and its phase.
    filed: RwLock<HashMap<Key, (Key, ApprovalPhase)>>,
    /// The objects of a relist in progress (between `Init` and `InitDone`).
    relist: Mutex<Option<Vec<DeploymentApproval>>>,
    synced: watch::Sender<bool>,
}

impl Default for ApprovalIndex {
    fn default() -> Self {
        ApprovalIndex {
            by_target: RwLock::default(),
            filed: RwLock::default(),
            relist: Mutex::default(),
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
                if let Ok(mut relist) = self.relist.lock() {
                    *relist = Some(Vec::new());
                }
            }
            Event::InitApply(approval) => {
                if let Ok(mut relist) = self.relist.lock() {
                    relist.get_or_insert_with(Vec::new).push(approval);
                }
            }
            Event::InitDone => {
                let listed = self
                    .relist
                    .lock()
                    .ok()
                    .and_then(|mut relist| relist.take())
                    .unwrap_or_default();
                self.replace_all(listed);
                self.synced.send_replace(true);
            }
            Event::Apply(approval) => self.insert(approval),
            Event::Delete(approval) => self.remove(&approval_key(&approval)),
        }
    }

    /// Replace everything with `approvals` (a complete list).
    pub fn replace_all(&self, approvals: Vec<DeploymentApproval>) {
        let mut by_target: HashMap<Key, HashMap<String, Stored>> = HashMap::new();
        let mut filed = HashMap::new();
        for approval in approvals {
            let Some(stored) = store(&approval) else {
                continue;
            };
            let target = target_key(&approval);
            filed.insert(approval_key(&approval), (target.clone(), approval.phase()));
            by_target
                .entry(target)
                .or_default()
                .insert(approval.name_any(), stored);
        }
        if let (Ok(mut index), Ok(mut keys)) = (self.by_target.write(), self.filed.write()) {
            *index = by_target;
            *keys = filed;
        }
    }

    fn insert(&self, approval: DeploymentApproval) {
        let key = approval_key(&approval);
        self.remove(&key);
        let Some(stored) = store(&approval) else {
            return;
        };
        let target = target_key(&approval);
        if let (Ok(mut index), Ok(mut keys)) = (self.by_target.write(), self.filed.write()) {
            keys.insert(key.clone(), (target.clone(), approval.phase()));
            index.entry(target).or_default().insert(key.1, stored);
        }
    }

    fn remove(&self, key: &Key) {
        if let (Ok(mut index), Ok(mut keys)) = (self.by_target.write(), self.filed.write())
            && let Some((target, _)) = keys.remove(key)
            && let Some(names) = index.get_mut(&target)
        {
            names.remove(&key.1);
            if names.is_empty() {
                index.remove(&target);
            }
        }
    }

    /// The approvals of the object `namespace/target_name`.
    pub fn for_target(&self, namespace: &str, target_name: &str) -> Vec<DeploymentApproval> {
        let stored: Vec<Stored> = match self.by_target.read() {
            Ok(index) => index
                .get(&(namespace.to_string(), target_name.to_string()))
                .map(|names| names.values().cloned().collect())
                .unwrap_or_default(),
            Err(_) => return Vec::new(),
        };
        // Decoded outside the lock; each was encoded from a DeploymentApproval.
        stored
            .iter()
            .filter_map(|json| serde_json::from_slice(json).ok())
            .collect()
    }

    /// The approval `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<DeploymentApproval> {
        let key = (namespace.to_string(), name.to_string());
        let stored = {
            let keys = self.filed.read().ok()?;
            let (target, _) = keys.get(&key)?;
            let index = self.by_target.read().ok()?;
            index.get(target)?.get(name)?.clone()
        };
        serde_json::from_slice(&stored).ok()
    }

    /// How many approvals are in each phase (a request without a status yet is Pending).
    pub fn phase_counts(&self) -> HashMap<ApprovalPhase, usize> {
        let mut counts = HashMap::new();
        if let Ok(keys) = self.filed.read() {
            for (_, phase) in keys.values() {
                *counts.entry(*phase).or_default() += 1;
            }
        }
        counts
    }

    pub fn len(&self) -> usize {
        self.filed.read().map(|keys| keys.len()).unwrap_or_default()
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
        assert_eq!(index.len(), 0, "a relist counts only when complete");
        index.apply(Event::InitDone);
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
}
