//! A fresh namespace per test, with the test users' rights in it, deleted when
//! the test ends (passed or failed).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
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
        let bindings = Api::<RoleBinding>::namespaced(admin, &created.name);
        for (group, role) in [
            ("developers", "edit"),
            ("team-leads", "view"),
            ("sre", "view"),
            ("oncall", "view"),
        ] {
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
        Ok(created)
    }

    pub fn name(&self) -> &str {
        &self.name
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
