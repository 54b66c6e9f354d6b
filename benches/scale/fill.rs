//! The cluster the scale benchmark measures, written as admin straight to the API server
//! (no webhook registered yet), from a seed: kwok nodes, namespaces, policies,
//! RoleBindings, Deployments, DeploymentApprovals in every phase with their reviews and
//! the AuditEntries the operator itself would have written for them (the core's own
//! `trail`, written through `cluster::trail`, so a restarted operator finds its trail
//! complete), and older entries up to the trail's size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use countersign::api::{ApprovalPhase, AuditEntry, DeploymentApproval};
use countersign::cluster::chain::{ChainRecord, ChainStore};
use countersign::cluster::trail::Trail;
use countersign::core::admission::decision::approval_state;
use countersign::core::approval::chain::RoleBindingSnapshot;
use countersign::core::approval::seal::{SealKey, sealed};
use countersign::core::approval::status::plan_status;
use countersign::core::audit::chain::{
    Head, WRITER_SEAL_ANNOTATION, link_time, links_after, writer_seal,
};
use countersign::core::audit::trail::trail;
use futures::{StreamExt, TryStreamExt, stream};
use jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Writes in flight at once while filling.
const IN_FLIGHT: usize = 48;

/// What to make.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub seed: u64,
    pub nodes: usize,
    pub namespaces: usize,
    pub deployments: usize,
    pub approvals: usize,
    pub audit_entries: usize,
    pub role_bindings: usize,
    pub policies: usize,
    /// The number of the first namespace (and so of the first policy): a second fill with
    /// a higher one adds to the cluster beside the first.
    pub first_namespace: usize,
}

/// What was made, and how long it took.
pub struct Filled {
    pub planned_entries: usize,
    pub written: usize,
    pub took: Duration,
}

/// A small deterministic generator (SplitMix64): the same seed, the same cluster.
pub struct Seeded(u64);

impl Seeded {
    pub fn new(seed: u64) -> Seeded {
        Seeded(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub fn namespace_name(i: usize) -> String {
    format!("scale-{i:03}")
}

/// Creates `objects` with up to IN_FLIGHT at once; an object that exists already counts.
async fn create_all<K>(api: &Api<K>, objects: Vec<K>) -> Result<usize>
where
    K: kube::Resource
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let count = objects.len();
    stream::iter(objects)
        .map(|object| {
            let api = api.clone();
            async move { create_retrying(&api, &object).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(count)
}

/// One create, retried on a dropped connection (the API server drops some under this load);
/// an answer the API server gave is final, but for AlreadyExists (a second run's).
async fn create_retrying<K>(api: &Api<K>, object: &K) -> Result<()>
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let mut attempts = 0;
    loop {
        match api.create(&PostParams::default(), object).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
            Err(kube::Error::Api(status)) => {
                anyhow::bail!("creating {:?}: {status}", object.meta().name)
            }
            Err(error) if attempts < 5 => {
                attempts += 1;
                eprintln!("a create failed ({error}); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

fn from_json<K: DeserializeOwned>(value: Value) -> Result<K> {
    serde_json::from_value(value).context("a generated object does not fit its type")
}

/// The chain every scale policy has: team leads, then SRE, one approval each.
fn chain() -> Value {
    json!({ "levels": [
        { "name": "leads", "approvers": [{ "group": "team-leads", "required": false }], "minApprovals": 1, "sinks": [] },
        { "name": "sre", "approvers": [{ "group": "sre", "required": false }], "minApprovals": 1, "sinks": [] },
    ], "requestTTL": "72h", "approvalTTL": "24h", "rolloutTimeout": "30m", "allowSelfApproval": false })
}

pub async fn fill(
    admin: &kube::Client,
    sizes: Sizes,
    key: &Arc<SealKey>,
    install_namespace: &str,
) -> Result<Filled> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Namespace, Node};
    use k8s_openapi::api::rbac::v1::RoleBinding;

    let started = Instant::now();
    let mut rng = Seeded::new(sizes.seed);
    let mut written = 0;

    let nodes: Vec<Node> = (0..sizes.nodes)
        .map(|i| {
            from_json(json!({ "metadata": { "name": format!("scale-node-{i:02}"),
                "annotations": { "kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0" },
                "labels": { "kubernetes.io/hostname": format!("scale-node-{i:02}"), "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64", "type": "kwok" } } }))
        })
        .collect::<Result<_>>()?;
    written += create_all(&Api::all(admin.clone()), nodes).await?;

    let first = sizes.first_namespace;
    let namespaces: Vec<Namespace> = (first..first + sizes.namespaces)
        .map(|i| from_json(json!({ "metadata": { "name": namespace_name(i), "labels": { "countersign.dev/scale": "true" } } })))
        .collect::<Result<_>>()?;
    written += create_all(&Api::all(admin.clone()), namespaces).await?;

    // Each policy gates its share of the namespaces with the two-level chain.
    let per_policy = sizes.namespaces.div_ceil(sizes.policies.max(1)).max(1);
    let policy_of = |ns: usize| format!("scale-policy-{:02}", ns / per_policy);
    let policies: Vec<countersign::api::ApprovalPolicy> = (0..sizes.policies)
        .map(|p| {
            let covered: Vec<String> = (first + p * per_policy
                ..(first + (p + 1) * per_policy).min(first + sizes.namespaces))
                .map(namespace_name)
                .collect();
            from_json(
                json!({ "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
                "metadata": { "name": policy_of(first + p * per_policy) },
                "spec": { "match": { "namespaces": covered }, "approval": { "levels": [
                    { "name": "leads", "approvers": [{ "group": "team-leads" }] },
                    { "name": "sre", "approvers": [{ "group": "sre" }] } ] } } }),
            )
        })
        .collect::<Result<_>>()?;
    written += create_all(&Api::all(admin.clone()), policies).await?;

    let roles = ["view", "edit", "admin"];
    for ns in first..first + sizes.namespaces {
        let bindings: Vec<RoleBinding> = (0..sizes.role_bindings / sizes.namespaces.max(1))
            .map(|b| {
                let role = roles[rng.below(3) as usize];
                from_json(json!({ "metadata": { "name": format!("scale-rb-{b:03}") },
                    "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
                    "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": format!("user-{}", rng.below(500)) }] }))
            })
            .collect::<Result<_>>()?;
        written += create_all(
            &Api::namespaced(admin.clone(), &namespace_name(ns)),
            bindings,
        )
        .await?;
    }

    let per_namespace = sizes.deployments / sizes.namespaces.max(1);
    for ns in first..first + sizes.namespaces {
        let deployments: Vec<Deployment> = (0..per_namespace)
            .map(|d| {
                from_json(json!({ "metadata": { "name": format!("app-{d}") }, "spec": { "replicas": 1,
                    "selector": { "matchLabels": { "app": format!("app-{d}") } },
                    "template": { "metadata": { "labels": { "app": format!("app-{d}") } },
                        "spec": { "containers": [{ "name": "app", "image": format!("registry.example.com/app-{d}:1.0") }] } } } }))
            })
            .collect::<Result<_>>()?;
        written += create_all(
            &Api::namespaced(admin.clone(), &namespace_name(ns)),
            deployments,
        )
        .await?;
    }

    // Requests: per target, a history of finished ones and one in flight.
    let trail_writer = Trail::new(admin.clone(), install_namespace).sealed_with(key.clone());
    let now = Timestamp::now();
    let bindings = RoleBindingSnapshot::default();
    let per_ns_approvals = sizes.approvals / sizes.namespaces.max(1);
    let targets = per_namespace.max(1);
    let mut planned_entries = 0;
    for ns in first..first + sizes.namespaces {
        let namespace = namespace_name(ns);
        let mut approvals = Vec::new();
        for n in 0..per_ns_approvals {
            let target = n % targets;
            let history = n / targets;
            let in_flight = history + 1 == per_ns_approvals / targets;
            let phase = if in_flight {
                [
                    ApprovalPhase::Pending,
                    ApprovalPhase::Pending,
                    ApprovalPhase::Approved,
                    ApprovalPhase::Approved,
                    ApprovalPhase::Deploying,
                ][rng.below(5) as usize]
            } else {
                [
                    ApprovalPhase::Deployed,
                    ApprovalPhase::Deployed,
                    ApprovalPhase::Deployed,
                    ApprovalPhase::Rejected,
                    ApprovalPhase::Expired,
                    ApprovalPhase::Failed,
                ][rng.below(6) as usize]
            };
            let policy = policy_of(ns);
            approvals.push(approval(
                &namespace,
                &policy,
                (target, history),
                phase,
                now,
                &mut rng,
                key,
            )?);
        }
        // Spec first (the status is a subresource), then the status, then its trail.
        let api: Api<DeploymentApproval> = Api::namespaced(admin.clone(), &namespace);
        let specs: Vec<DeploymentApproval> = approvals
            .iter()
            .map(|a| DeploymentApproval {
                status: None,
                ..a.clone()
            })
            .collect();
        written += specs.len();
        // The trail's names carry each request's uid: take it (and the generation) from
        // what the API server made.
        let created: std::collections::HashMap<String, kube::core::ObjectMeta> =
            stream::iter(specs)
                .map(|spec| {
                    let api = api.clone();
                    async move {
                        create_retrying(&api, &spec).await?;
                        let name = spec.metadata.name.clone().unwrap_or_default();
                        anyhow::Ok((name.clone(), api.get(&name).await?.metadata))
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .try_collect()
                .await?;
        for approval in &mut approvals {
            let name = approval.metadata.name.clone().unwrap_or_default();
            let made = created
                .get(&name)
                .context("a request the API server did not make")?;
            approval.metadata.uid = made.uid.clone();
            approval.metadata.generation = made.generation;
        }
        let mut entries = Vec::new();
        let mut statuses = Vec::new();
        for approval in &approvals {
            let state = approval_state(approval, &namespace, &bindings, now);
            let status = match approval.status.clone() {
                Some(status) => status,
                // Pending and Approved: exactly what the operator would write.
                None => plan_status(approval, &state, now)
                    .write
                    .context("no status planned")?,
            };
            let with_status = DeploymentApproval {
                status: Some(status),
                ..approval.clone()
            };
            let state = approval_state(&with_status, &namespace, &bindings, now);
            entries.extend(trail(&with_status, &state, now));
            let name = approval.metadata.name.clone().context("unnamed")?;
            statuses.push((name, serde_json::to_value(&with_status.status)?));
        }
        written += statuses.len();
        stream::iter(statuses)
            .map(|(name, status)| {
                let api = api.clone();
                async move {
                    api.patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "status": status })),
                    )
                    .await
                    .map(|_| ())
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        planned_entries += entries.len();
        written += entries.len();
        stream::iter(entries)
            .map(|entry| {
                let writer = trail_writer.clone();
                async move { writer.write(&entry).await.map(|_| ()) }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
    }

    // Older entries, of requests long gone, up to the trail's size.
    let older = sizes.audit_entries.saturating_sub(planned_entries);
    written += older_entries(
        admin,
        install_namespace,
        0..older,
        sizes.namespaces,
        &mut rng,
        key,
    )
    .await?;

    Ok(Filled {
        planned_entries,
        written,
        took: started.elapsed(),
    })
}

/// One request for `app-<target>` in `namespace`, the `history`-th for it, in `phase`;
/// Pending and Approved ones carry no status (the caller plans the operator's).
fn approval(
    namespace: &str,
    policy: &str,
    (target, history): (usize, usize),
    phase: ApprovalPhase,
    now: Timestamp,
    rng: &mut Seeded,
    key: &SealKey,
) -> Result<DeploymentApproval> {
    let digest = format!(
        "sha256:{:016x}{:016x}{:016x}{:016x}",
        rng.next(),
        rng.next(),
        rng.next(),
        rng.next()
    );
    let name = format!("app-{target}-{}", &digest[7..17]);
    // Finished ones lie in the past, a day apart; one in flight is hours old.
    let requested = if matches!(
        phase,
        ApprovalPhase::Pending | ApprovalPhase::Approved | ApprovalPhase::Deploying
    ) {
        now - SignedDuration::from_secs(600 + rng.below(6 * 3600) as i64)
    } else {
        now - SignedDuration::from_hours(24 * (40 - history as i64))
            - SignedDuration::from_secs(rng.below(3600) as i64)
    };
    let at = |minutes: i64| (requested + SignedDuration::from_mins(minutes)).to_string();
    let approve = |user: &str, group: &str, minutes: i64| json!({ "user": user, "groups": [group], "decision": "Approve", "time": at(minutes) });
    let reviews = match phase {
        ApprovalPhase::Pending => {
            if rng.below(2) == 0 {
                vec![approve("alice", "team-leads", 5)]
            } else {
                vec![]
            }
        }
        ApprovalPhase::Expired => vec![],
        ApprovalPhase::Rejected => vec![
            json!({ "user": "alice", "groups": ["team-leads"], "decision": "Reject",
            "comment": "not this week", "time": at(5) }),
        ],
        _ => vec![
            approve("alice", "team-leads", 5),
            approve("carol", "sre", 9),
        ],
    };
    let status = match phase {
        ApprovalPhase::Pending | ApprovalPhase::Approved => None,
        ApprovalPhase::Deploying => {
            Some(json!({ "phase": "Deploying", "lockHolder": "scale-replica",
            "approvedBy": ["alice", "carol"], "approvedAt": at(9) }))
        }
        // As the webhook and the operator leave a finished rollout.
        ApprovalPhase::Deployed | ApprovalPhase::Failed => Some(json!({ "phase": phase,
            "approvedBy": ["alice", "carol"], "approvedAt": at(9),
            "rollout": { "admittedAt": at(10), "admissions": 1,
                "admittedBy": { "username": "dave", "groups": ["developers", "system:authenticated"] },
                "admittedByReplica": "scale-replica", "finishedAt": at(12) } })),
        ApprovalPhase::Rejected => Some(json!({ "phase": "Rejected", "rejectedBy": "alice" })),
        ApprovalPhase::Expired => Some(json!({ "phase": "Expired" })),
    };
    let mut approval: DeploymentApproval = from_json(json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "DeploymentApproval",
        "metadata": { "name": name, "namespace": namespace, "generation": 1 },
        "spec": {
            "target": { "apiVersion": "apps/v1", "kind": "Deployment", "name": format!("app-{target}") },
            "change": { "digest": digest,
                "summary": { "text": format!("Deployment {namespace}/app-{target}: image app registry.example.com/app-{target}:1.{history} → registry.example.com/app-{target}:1.{}", history + 1),
                    "images": [{ "container": "app", "before": format!("registry.example.com/app-{target}:1.{history}"),
                        "after": format!("registry.example.com/app-{target}:1.{}", history + 1) }],
                    "changedPaths": ["/spec/template/spec/containers/0/image"] },
                "requester": { "username": "dave", "groups": ["developers", "system:authenticated"] },
                "operation": "UPDATE", "requestedAt": requested.to_string() },
            "policy": { "name": policy, "chain": chain() },
            "reviews": reviews,
        },
        "status": status,
    }))?;
    approval.spec = sealed(key, namespace, approval.spec);
    Ok(approval)
}

/// AuditEntries `scale-older-<i>` for each i in `numbers`: of requests long gone (30 to 330
/// days old), spread over `namespaces` namespaces.
pub async fn older_entries(
    admin: &kube::Client,
    install_namespace: &str,
    numbers: std::ops::Range<usize>,
    namespaces: usize,
    rng: &mut Seeded,
    key: &SealKey,
) -> Result<usize> {
    let now = Timestamp::now();
    let actions = [
        "Requested",
        "ReviewRecorded",
        "Approved",
        "Admitted",
        "Deployed",
    ];
    let entries: Vec<AuditEntry> = numbers
        .map(|i| {
            let days = 30 + rng.below(300) as i64;
            let time = now - SignedDuration::from_hours(24 * days) - SignedDuration::from_secs(rng.below(86_400) as i64);
            from_json(json!({ "apiVersion": "countersign.dev/v1alpha1", "kind": "AuditEntry",
                "metadata": { "name": format!("scale-older-{i:06}") },
                "spec": { "time": time.to_string(), "action": actions[i % actions.len()],
                    "actor": { "username": "dave", "groups": ["developers"] },
                    "target": { "apiVersion": "apps/v1", "kind": "Deployment",
                        "namespace": namespace_name(i % namespaces.max(1)), "name": format!("retired-{}", i / 5) },
                    "changeDigest": format!("sha256:{:064x}", i),
                    "approval": format!("retired-{}-{:08x}", i / 5, i / 5),
                    "policy": "scale-policy-00" } }))
        })
        .map(|entry: Result<AuditEntry>| {
            // Sealed as countersign's writer seals what it writes.
            let mut entry = entry?;
            let name = entry.metadata.name.clone().unwrap_or_default();
            entry.metadata.annotations = Some(
                [(
                    WRITER_SEAL_ANNOTATION.to_string(),
                    writer_seal(key, &name, &entry.spec),
                )]
                .into(),
            );
            Ok(entry)
        })
        .collect::<Result<_>>()?;
    create_all(&Api::namespaced(admin.clone(), install_namespace), entries).await
}

/// Links every entry not yet in the audit chain, oldest first, as countersign's leader
/// would have while they were written (a trail of a running install is all linked); the
/// record made or advanced to the new head. Returns how many were linked.
pub async fn link_all(admin: &kube::Client, install_namespace: &str) -> Result<usize> {
    let api: Api<AuditEntry> = Api::namespaced(admin.clone(), install_namespace);
    let mut unlinked: Vec<AuditEntry> = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let mut params = kube::api::ListParams::default().limit(500);
        if let Some(token) = &page {
            params = params.continue_token(token);
        }
        let list = api.list(&params).await?;
        unlinked.extend(
            list.items
                .into_iter()
                .filter(|e| e.status.as_ref().and_then(|s| s.link.as_ref()).is_none()),
        );
        match list.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(token) => page = Some(token),
            None => break,
        }
    }
    unlinked.sort_by(|a, b| {
        (a.spec.time.0, a.metadata.name.as_deref())
            .cmp(&(b.spec.time.0, b.metadata.name.as_deref()))
    });
    let store = ChainStore::new(admin.clone(), install_namespace);
    let stored = store.read().await?;
    let named: Vec<(&str, &countersign::api::AuditEntrySpec)> = unlinked
        .iter()
        .map(|e| (e.metadata.name.as_deref().unwrap_or_default(), &e.spec))
        .collect();
    let links = links_after(&stored.record.head, &named, &link_time(Timestamp::now()));
    let head = links.last().map(|link| Head {
        sequence: link.sequence,
        hash: link.hash.clone(),
    });
    let count = links.len();
    let trail = Trail::new(admin.clone(), install_namespace);
    stream::iter(named.iter().map(|(name, _)| name.to_string()).zip(links))
        .map(|(name, link)| {
            let trail = trail.clone();
            async move { trail.link(&name, &link).await.map(drop) }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    if let Some(head) = head {
        let record = ChainRecord {
            head,
            ..stored.record
        };
        store.write(stored.version.as_deref(), &record).await?;
    }
    Ok(count)
}
