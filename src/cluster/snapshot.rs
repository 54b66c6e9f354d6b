//! Answers from memory: reflector stores of ApprovalPolicies, DeploymentApprovals,
//! Namespaces and the RBAC bindings role approvers need, turned into the core's inputs.
//! Policies and bindings change rarely and are rebuilt once per change; validation results
//! are kept per policy generation and per approval, so a review does not validate again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::{ApprovalPolicy, ChangeSet, DeploymentApproval};
use crate::cluster::approval_index::ApprovalIndex;
use crate::core::admission::decision::{Validations, snapshot_problem};
use crate::core::approval::chain::RoleBindingSnapshot;
use crate::core::policy::validation::{FieldError, validate_policy};

/// The caches the webhook decides from. Cheap to clone (every field is shared).
#[derive(Clone)]
pub struct Snapshot {
    policies: Store<ApprovalPolicy>,
    approvals: Arc<ApprovalIndex>,
    sets: Store<ChangeSet>,
    namespaces: Store<Namespace>,
    role_bindings: Store<RoleBinding>,
    cluster_role_bindings: Store<ClusterRoleBinding>,
    derived: Arc<Derived>,
    validations: Arc<ValidationCache>,
    /// True once every cache has its first complete list. A channel, because kube's
    /// `Store::wait_until_ready` wakes only one of several waiters.
    synced: Arc<tokio::sync::watch::Sender<bool>>,
    /// Counts the policy cache's changes, once each is in the cache.
    policy_changes: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Views rebuilt when their source changed (`dirty`), on the next read.
#[derive(Default)]
struct Derived {
    policies_dirty: AtomicBool,
    policies: RwLock<Arc<Vec<ApprovalPolicy>>>,
    bindings_dirty: AtomicBool,
    bindings: RwLock<Arc<RoleBindingSnapshot>>,
}

/// The sizes of the caches, for /metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheSizes {
    pub policies: usize,
    pub approvals: usize,
    pub sets: usize,
    pub namespaces: usize,
    pub role_bindings: usize,
    pub cluster_role_bindings: usize,
}

/// The watch streams that fill a [`Snapshot`]; run them until the process ends.
pub type Feeds = Vec<futures::future::BoxFuture<'static, ()>>;

impl Snapshot {
    /// Caches over `client`, and the streams that fill them (the caller spawns them).
    pub fn watch(client: &Client) -> (Snapshot, Feeds) {
        let derived = Arc::new(Derived {
            policies_dirty: AtomicBool::new(true),
            bindings_dirty: AtomicBool::new(true),
            ..Derived::default()
        });
        let mut feeds: Feeds = Vec::new();
        let policy_changes = Arc::new(tokio::sync::watch::channel(0u64).0);
        let on_policy = {
            let derived = derived.clone();
            let changes = policy_changes.clone();
            move || {
                derived.policies_dirty.store(true, Ordering::Release);
                changes.send_modify(|count| *count = count.wrapping_add(1));
            }
        };
        let on_binding = {
            let derived = derived.clone();
            move || derived.bindings_dirty.store(true, Ordering::Release)
        };
        let policies = feed(
            Api::all(client.clone()),
            &mut feeds,
            on_policy,
            drop_managed_fields,
        );
        let approvals = Arc::new(ApprovalIndex::default());
        {
            let index = approvals.clone();
            let events = watcher(
                Api::<DeploymentApproval>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff()
            .modify(|approval| approval.managed_fields_mut().clear());
            feeds.push(Box::pin(async move {
                let mut events = std::pin::pin!(events);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(event) => index.apply(event),
                        Err(error) => tracing::warn!(%error, "watch failed; retrying with backoff"),
                    }
                }
            }));
        }
        let sets = feed(
            Api::all(client.clone()),
            &mut feeds,
            || {},
            drop_managed_fields,
        );
        let namespaces = feed(
            Api::all(client.clone()),
            &mut feeds,
            || {},
            keep_name_and_labels,
        );
        let role_bindings = feed(
            Api::all(client.clone()),
            &mut feeds,
            on_binding.clone(),
            keep_name_only,
        );
        let cluster_role_bindings = feed(
            Api::all(client.clone()),
            &mut feeds,
            on_binding,
            keep_name_only,
        );
        let snapshot = Snapshot {
            policies,
            approvals,
            sets,
            namespaces,
            role_bindings,
            cluster_role_bindings,
            derived,
            validations: Arc::new(ValidationCache::default()),
            synced: Arc::new(tokio::sync::watch::channel(false).0),
            policy_changes,
        };
        let stores = snapshot.clone();
        feeds.push(Box::pin(async move {
            // The one waiter on the stores; everyone else waits on `synced`.
            let all_ready = async {
                stores.policies.wait_until_ready().await?;
                stores.approvals.wait_until_synced().await;
                stores.sets.wait_until_ready().await?;
                stores.namespaces.wait_until_ready().await?;
                stores.role_bindings.wait_until_ready().await?;
                stores.cluster_role_bindings.wait_until_ready().await
            };
            if all_ready.await.is_ok() {
                stores.synced.send_replace(true);
            }
        }));
        (snapshot, feeds)
    }

    /// A snapshot of fixed objects, with no API server behind it: for benchmarks and tests
    /// of the admission path. Objects without a uid get one, so validation is cached.
    pub fn preloaded(
        policies: Vec<ApprovalPolicy>,
        approvals: Vec<DeploymentApproval>,
        namespaces: Vec<Namespace>,
        bindings: RoleBindingSnapshot,
    ) -> Snapshot {
        fn load<K>(objects: Vec<K>) -> Store<K>
        where
            K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
            K::DynamicType: Default + Eq + std::hash::Hash + Clone,
        {
            let (reader, mut writer) = reflector::store();
            writer.apply_watcher_event(&watcher::Event::Init);
            for (i, mut object) in objects.into_iter().enumerate() {
                object
                    .meta_mut()
                    .uid
                    .get_or_insert_with(|| format!("preloaded-{i}"));
                writer.apply_watcher_event(&watcher::Event::InitApply(object));
            }
            writer.apply_watcher_event(&watcher::Event::InitDone);
            // The reader stays valid after the writer is gone.
            drop(writer);
            reader
        }
        let derived = Arc::new(Derived {
            policies_dirty: AtomicBool::new(true),
            bindings_dirty: AtomicBool::new(true),
            ..Derived::default()
        });
        Snapshot {
            policies: load(policies),
            approvals: {
                let index = ApprovalIndex::default();
                index.replace_all(approvals);
                index.mark_synced();
                Arc::new(index)
            },
            sets: load(Vec::new()),
            namespaces: load(namespaces),
            role_bindings: load(bindings.role_bindings),
            cluster_role_bindings: load(bindings.cluster_role_bindings),
            derived,
            validations: Arc::new(ValidationCache::default()),
            synced: Arc::new(tokio::sync::watch::channel(true).0),
            policy_changes: Arc::new(tokio::sync::watch::channel(0u64).0),
        }
    }

    /// Yields once each time the policy cache changed, after the change is in it: what
    /// reacts to policies reads them from here, never ahead of this cache.
    pub fn policy_changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.policy_changes.subscribe(), |mut changes| async move {
            changes.changed().await.ok()?;
            Some(((), changes))
        })
    }

    /// Resolves once every cache has its first complete list.
    pub async fn wait_until_synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|done| *done).await;
    }

    /// Every ApprovalPolicy, shared until one changes.
    pub fn policies(&self) -> Arc<Vec<ApprovalPolicy>> {
        rebuilt(&self.derived.policies_dirty, &self.derived.policies, || {
            let mut all: Vec<ApprovalPolicy> = self
                .policies
                .state()
                .iter()
                .map(|p| (**p).clone())
                .collect();
            all.sort_by_key(|p| p.name_any());
            all
        })
    }

    /// The RoleBindings and ClusterRoleBindings, shared until one changes.
    pub fn bindings(&self) -> Arc<RoleBindingSnapshot> {
        rebuilt(&self.derived.bindings_dirty, &self.derived.bindings, || {
            RoleBindingSnapshot {
                role_bindings: self
                    .role_bindings
                    .state()
                    .iter()
                    .map(|b| (**b).clone())
                    .collect(),
                cluster_role_bindings: self
                    .cluster_role_bindings
                    .state()
                    .iter()
                    .map(|b| (**b).clone())
                    .collect(),
            }
        })
    }

    /// The DeploymentApprovals of the object `namespace/target_name` (countersign names
    /// requests after their target, so these include every name a new request could take).
    pub fn approvals_for(&self, namespace: &str, target_name: &str) -> Vec<DeploymentApproval> {
        self.approvals.for_target(namespace, target_name)
    }

    /// The approvals of `namespace/target_name` in `phase`, as cached.
    pub fn approvals_in_phase_for(
        &self,
        namespace: &str,
        target_name: &str,
        phase: crate::api::ApprovalPhase,
    ) -> Vec<DeploymentApproval> {
        self.approvals
            .in_phase_for_target(namespace, target_name, phase)
    }

    /// The one approvals cache itself, for the operator's controllers to be driven from.
    pub fn approval_index(&self) -> &ApprovalIndex {
        &self.approvals
    }

    /// The approval `namespace/name`, as cached.
    pub fn approval(&self, namespace: &str, name: &str) -> Option<DeploymentApproval> {
        self.approvals.get(namespace, name)
    }

    /// Is a request or change set `namespace/name` cached? (Nothing is decoded.)
    pub fn holds_request(&self, namespace: &str, name: &str) -> bool {
        self.approvals.contains(namespace, name)
            || self
                .sets
                .get(&ObjectRef::new(name).within(namespace))
                .is_some()
    }

    /// The change set `namespace/name`, as cached.
    pub fn set(&self, namespace: &str, name: &str) -> Option<ChangeSet> {
        self.sets
            .get(&ObjectRef::new(name).within(namespace))
            .map(|set| (*set).clone())
    }

    /// `approval` as it is judged: a member of a change set with its cached set's reviews
    /// (`core::approval::set::judged`).
    pub fn judged(&self, approval: &DeploymentApproval) -> DeploymentApproval {
        let namespace = approval.metadata.namespace.as_deref().unwrap_or_default();
        let set = approval
            .spec
            .change_set
            .as_deref()
            .and_then(|name| self.set(namespace, name));
        crate::core::approval::set::judged(approval, set.as_ref())
    }

    /// The requests a set lists, as cached, in its order.
    pub fn members(&self, set: &ChangeSet) -> Vec<Option<DeploymentApproval>> {
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        set.spec
            .members
            .iter()
            .map(|m| self.approval(namespace, &m.request))
            .collect()
    }

    /// A namespace's labels, when the cache knows the namespace.
    pub fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .map(|ns| ns.labels().clone())
    }

    /// The validation results `decide` reads, cached.
    pub fn validations(&self) -> &ValidationCache {
        &self.validations
    }

    /// How many cached approvals are in each phase.
    pub fn approval_phases(&self) -> std::collections::HashMap<crate::api::ApprovalPhase, usize> {
        self.approvals.phase_counts()
    }

    pub fn sizes(&self) -> CacheSizes {
        CacheSizes {
            policies: self.policies.len(),
            approvals: self.approvals.len(),
            sets: self.sets.state().len(),
            namespaces: self.namespaces.len(),
            role_bindings: self.role_bindings.len(),
            cluster_role_bindings: self.cluster_role_bindings.len(),
        }
    }
}

/// managedFields are large and nothing here reads them.
fn drop_managed_fields<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
}

/// Of a namespace only its name and labels are read (policies match on them).
fn keep_name_and_labels<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        resource_version: meta.resource_version.take(),
        labels: meta.labels.take(),
        ..ObjectMeta::default()
    };
}

/// Of a binding only its name, subjects and role are read: its annotations (a
/// `last-applied-configuration` doubles it) and labels are dropped.
fn keep_name_only<K: Resource>(object: &mut K) {
    keep_name_and_labels(object);
    object.meta_mut().labels = None;
}

/// A reflector for `api` whose stream is pushed onto `feeds`; `changed` runs after every
/// event, and `trim` on every object before it is kept, to drop what nothing here reads.
fn feed<K>(
    api: Api<K>,
    feeds: &mut Feeds,
    changed: impl Fn() + Send + 'static,
    trim: fn(&mut K),
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(trim);
    feeds.push(Box::pin(drain(
        reflector::reflector(writer, stream),
        changed,
    )));
    reader
}

async fn drain<S, T, E>(stream: S, changed: impl Fn())
where
    S: Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => changed(),
            Err(error) => tracing::warn!(%error, "watch failed; retrying with backoff"),
        }
    }
}

/// The shared view, rebuilt first when `dirty`.
fn rebuilt<T>(dirty: &AtomicBool, view: &RwLock<Arc<T>>, build: impl FnOnce() -> T) -> Arc<T> {
    if dirty.swap(false, Ordering::AcqRel) {
        let fresh = Arc::new(build());
        if let Ok(mut current) = view.write() {
            *current = fresh.clone();
        }
        return fresh;
    }
    match view.read() {
        Ok(current) => current.clone(),
        // A panic elsewhere poisoned the lock: rebuild rather than serve a half-written view.
        Err(_) => {
            dirty.store(true, Ordering::Release);
            Arc::new(build())
        }
    }
}

/// Validation results per policy (uid, generation) and per approval (uid, generation): a
/// policy's spec changes only with its generation, and an approval's chain snapshot is
/// immutable.
#[derive(Debug, Default)]
pub struct ValidationCache {
    policies: Mutex<HashMap<(String, i64), Vec<FieldError>>>,
    approvals: Mutex<HashMap<(String, i64), Option<String>>>,
}

/// More entries than this and the cache starts over (deleted objects leave stale keys).
const VALIDATION_CACHE_LIMIT: usize = 50_000;

fn cache_key<K: Resource>(object: &K) -> Option<(String, i64)> {
    let meta = object.meta();
    Some((meta.uid.clone()?, meta.generation.unwrap_or_default()))
}

fn cached<K: Resource, V: Clone>(
    cache: &Mutex<HashMap<(String, i64), V>>,
    object: &K,
    compute: impl FnOnce() -> V,
) -> V {
    let Some(key) = cache_key(object) else {
        return compute();
    };
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return hit;
    }
    let value = compute();
    if let Ok(mut cache) = cache.lock() {
        if cache.len() >= VALIDATION_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, value.clone());
    }
    value
}

impl Validations for ValidationCache {
    fn policy_errors(&self, policy: &ApprovalPolicy) -> Vec<FieldError> {
        cached(&self.policies, policy, || {
            validate_policy(&policy.spec).errors
        })
    }

    fn snapshot_problem(&self, approval: &DeploymentApproval) -> Option<String> {
        cached(&self.approvals, approval, || snapshot_problem(approval))
    }
}
