//! Registers a ValidatingWebhookConfiguration that sends one test namespace's
//! requests to a URL, and removes it when dropped.

use anyhow::{Context, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use super::cluster::{TestCluster, User};
use super::namespace::unique_name;

/// What a registered webhook intercepts.
pub struct WebhookRule<'a> {
    pub api_groups: &'a [&'a str],
    pub api_versions: &'a [&'a str],
    pub resources: &'a [&'a str],
    pub operations: &'a [&'a str],
}

/// A ValidatingWebhookConfiguration that exists for one test.
pub struct RegisteredWebhook {
    name: String,
}

impl RegisteredWebhook {
    /// Sends matching requests in `namespace` (and only there, so concurrent
    /// tests are not affected) to `url`, trusting `ca_pem`. Fails closed:
    /// `failurePolicy: Fail`, as the product's webhook is deployed.
    pub async fn register(
        namespace: &str,
        url: &str,
        ca_pem: &str,
        rule: &WebhookRule<'_>,
    ) -> Result<RegisteredWebhook> {
        let admin = TestCluster::get().client(User::Admin).await?;
        let name = unique_name("webhook");
        let configuration: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": { "name": name },
            "webhooks": [{
                "name": "test.countersign.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
                "clientConfig": { "url": url, "caBundle": ByteString(ca_pem.as_bytes().to_vec()) },
                "namespaceSelector": {
                    "matchLabels": { "kubernetes.io/metadata.name": namespace }
                },
                "rules": [{
                    "apiGroups": rule.api_groups,
                    "apiVersions": rule.api_versions,
                    "resources": rule.resources,
                    "operations": rule.operations,
                    "scope": "Namespaced",
                }],
            }],
        }))?;
        Api::<ValidatingWebhookConfiguration>::all(admin)
            .create(&PostParams::default(), &configuration)
            .await
            .with_context(|| format!("registering webhook {name}"))?;
        Ok(RegisteredWebhook { name })
    }
}

impl Drop for RegisteredWebhook {
    fn drop(&mut self) {
        let result = TestCluster::get()
            .kubectl(User::Admin)
            .args([
                "delete",
                "validatingwebhookconfiguration",
                &self.name,
                "--ignore-not-found",
            ])
            .output();
        if let Err(error) = result {
            eprintln!(
                "could not delete webhook configuration {}: {error}",
                self.name
            );
        }
    }
}

/// Applies a JSON Patch to the ValidatingWebhookConfiguration `countersign`, as the
/// cluster admin (the tests that damage countersign's own configuration).
/// (Used by tests/local_mode.rs and tests/chart_install.rs, not by the integration tests.)
#[allow(dead_code)]
pub fn patch_countersign_configuration(patch: &serde_json::Value) -> Result<()> {
    let out = TestCluster::get().kubectl_output(
        User::Admin,
        &[
            "patch",
            "validatingwebhookconfiguration",
            "countersign",
            "--type=json",
            "-p",
            &patch.to_string(),
        ],
        None,
    )?;
    anyhow::ensure!(out.status.success(), "{}", super::flow::text(&out));
    Ok(())
}
