//! A fresh namespace per test, with the test users' rights in it, deleted when
//! the test ends (passed or failed).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use super::cluster::{TestCluster, User};

/// Region label the operator reads to place a namespace (SPEC §3).
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";

/// A namespace that exists for one test. `dave` (group `developers`) may edit
/// in it; `team-leads`, `sre` and `oncall` may view it.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
}

impl TestNamespace {
    /// Creates `cs-<prefix>-<unique>`, labelled with `region` when given.
    pub async fn create(prefix: &str, region: Option<&str>) -> Result<TestNamespace> {
        let cluster = TestCluster::get();
        let admin = cluster.client(User::Admin).await?;
        let name = unique_name(prefix);
        let mut labels = json!({ "countersign.dev/test": "true" });
        if let Some(region) = region {
            labels[REGION_LABEL] = json!(region);
        }
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": { "name": name, "labels": labels },
        }))?;
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        // From here on, Drop cleans up even if granting rights fails.
        let created = TestNamespace { name };
        let bindings = Api::<RoleBinding>::namespaced(admin.clone(), &created.name);
        let granted = [
            ("developers", "edit"),
            ("team-leads", "view"),
            ("sre", "view"),
            ("oncall", "view"),
        ];
        for (group, role) in granted {
            let binding: RoleBinding = serde_json::from_value(json!({
                "metadata": { "name": format!("test-{group}-{role}") },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
                "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group }],
            }))?;
            bindings
                .create(&PostParams::default(), &binding)
                .await
                .with_context(|| format!("binding {group} to {role} in {}", created.name))?;
        }
        // The API server's authorizer learns bindings from a watch: a test acting at once
        // could be refused for a right it was just given (seen under load).
        for (group, role) in granted {
            until_authorized(&admin, &created.name, group, role).await?;
        }
        Ok(created)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Waits until the authorizer lets a member of `group` do what `role` (edit: create,
/// view: get) allows with Deployments in `namespace`.
async fn until_authorized(
    admin: &kube::Client,
    namespace: &str,
    group: &str,
    role: &str,
) -> Result<()> {
    let verb = if role == "edit" { "create" } else { "get" };
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": format!("a-member-of-{group}"),
            "groups": [group],
            "resourceAttributes": {
                "namespace": namespace, "verb": verb, "group": "apps", "resource": "deployments",
            },
        },
    }))?;
    let reviews = Api::<SubjectAccessReview>::all(admin.clone());
    let started = std::time::Instant::now();
    loop {
        let answer = reviews.create(&PostParams::default(), &review).await?;
        if answer.status.is_some_and(|status| status.allowed) {
            return Ok(());
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            bail!("{group} still may not {verb} deployments in {namespace} after 30 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

impl Drop for TestNamespace {
    /// Deletion goes through kubectl so it works from Drop, outside any async
    /// runtime; the namespace controller finishes it in the background.
    fn drop(&mut self) {
        let result = TestCluster::get()
            .kubectl(User::Admin)
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
        match result {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "could not delete namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => eprintln!("could not delete namespace {}: {error}", self.name),
        }
    }
}

/// A DNS-label name unique across tests in this and concurrent test processes.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    format!(
        "cs-{prefix}-{:x}{count:x}{:05x}",
        std::process::id(),
        nanos & 0xfffff
    )
}
