//! The CRDs of `crds/` are accepted by the real API server, and a sample
//! object of each kind round-trips unchanged through its schema (the API
//! server prunes fields a schema does not know, so a sample that comes back
//! different means types and samples disagree).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, Error};
use serde_json::Value;

use crate::support::countersign::{INSTALL_NAMESPACE, own_client};
use crate::support::crds::{apply_crds, read_yaml_documents};
use crate::support::namespace::unique_name;
use crate::support::{TestCluster, TestNamespace, User};

/// The product's CRDs and the directory of their sample objects.
fn crds_and_samples() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    (root.join("crds"), root.join("tests/fixtures/crd-samples"))
}

fn api_resource(crd: &CustomResourceDefinition) -> Result<ApiResource> {
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .context("CRD has no storage version")?;
    Ok(ApiResource {
        group: crd.spec.group.clone(),
        version: version.name.clone(),
        api_version: format!("{}/{}", crd.spec.group, version.name),
        kind: crd.spec.names.kind.clone(),
        plural: crd.spec.names.plural.clone(),
    })
}

/// The object as a user wrote it: everything but status and server-set metadata.
fn user_content(object: &Value) -> Value {
    let mut content = object.clone();
    if let Some(map) = content.as_object_mut() {
        map.remove("status");
        let labels = map.get("metadata").and_then(|m| m.get("labels")).cloned();
        // countersign stamps a policy's author (`core::policy::authorship`); that is not the
        // user's content.
        let annotations = map
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(Value::as_object)
            .map(|annotations| {
                let mut annotations = annotations.clone();
                annotations.remove(countersign::core::policy::authorship::CHANGED_BY_ANNOTATION);
                annotations
            })
            .filter(|annotations| !annotations.is_empty())
            .map(Value::Object);
        let name = map.get("metadata").and_then(|m| m.get("name")).cloned();
        let mut metadata = serde_json::Map::new();
        for (key, value) in [
            ("name", name),
            ("labels", labels),
            ("annotations", annotations),
        ] {
            if let Some(value) = value {
                metadata.insert(key.to_owned(), value);
            }
        }
        map.insert("metadata".to_owned(), Value::Object(metadata));
    }
    content
}

#[tokio::test]
async fn crds_are_accepted_and_samples_round_trip() -> Result<()> {
    let (crd_dir, sample_dir) = crds_and_samples();
    let cluster = TestCluster::get();
    let admin = cluster.client(User::Admin).await?;
    let crds = apply_crds(&admin, &crd_dir).await?;
    ensure!(!crds.is_empty(), "no CRDs in {}", crd_dir.display());
    let samples = read_yaml_documents(&sample_dir)?;
    let namespace = TestNamespace::create("crds", Some("eu-west-1")).await?;
    // With countersign's webhook registered, only countersign writes DeploymentApprovals and
    // ChangeSets (unless a policy governs them) and AuditEntries (only in its own namespace).
    let own = own_client().await?;

    for crd in &crds {
        let resource = api_resource(crd)?;
        let of_kind: Vec<&Value> = samples
            .iter()
            .filter(|s| {
                s["apiVersion"] == resource.api_version.as_str()
                    && s["kind"] == resource.kind.as_str()
            })
            .collect();
        if of_kind.is_empty() {
            bail!(
                "no sample {} in {}",
                resource.api_version,
                sample_dir.display()
            );
        }
        let api: Api<DynamicObject> = match resource.kind.as_str() {
            "AuditEntry" => Api::namespaced_with(own.clone(), INSTALL_NAMESPACE, &resource),
            "DeploymentApproval" | "ChangeSet" => {
                Api::namespaced_with(own.clone(), namespace.name(), &resource)
            }
            _ if crd.spec.scope == "Namespaced" => {
                Api::namespaced_with(admin.clone(), namespace.name(), &resource)
            }
            _ => Api::all_with(admin.clone(), &resource),
        };
        for sample in of_kind {
            let mut sample = sample.clone();
            if resource.kind == "AuditEntry" {
                // The trail is append-only: each run leaves its own sample behind.
                sample["metadata"]["name"] = Value::from(unique_name("sample-auditentry"));
            }
            let sample = &sample;
            let object: DynamicObject = serde_json::from_value(sample.clone())?;
            let name = object.metadata.name.clone().context("sample has no name")?;
            if crd.spec.scope != "Namespaced" {
                // A cluster-scoped leftover of an interrupted run would collide.
                let _ = api.delete(&name, &Default::default()).await;
            }
            let created = api
                .create(&PostParams::default(), &object)
                .await
                .with_context(|| format!("creating sample {} {name}", resource.kind))?;
            let read_back = serde_json::to_value(api.get(&name).await?)?;
            ensure!(
                user_content(&read_back) == user_content(sample),
                "{} {name} did not round-trip:\n sent {}\n got  {}",
                resource.kind,
                user_content(sample),
                user_content(&read_back)
            );
            ensure!(created.metadata.uid.is_some(), "created object has no uid");

            // The schema is enforced: a spec of the wrong type is refused.
            let mut broken = sample.clone();
            broken["metadata"]["name"] = Value::from(format!("{name}-broken"));
            broken["spec"] = Value::from("not an object");
            let refused = api
                .create(&PostParams::default(), &serde_json::from_value(broken)?)
                .await;
            ensure!(
                matches!(&refused, Err(Error::Api(status)) if status.code == 422),
                "a {} with a string spec was not refused: {refused:?}",
                resource.kind
            );
            if crd.spec.scope != "Namespaced" {
                api.delete(&name, &Default::default()).await?;
            }
        }
    }
    Ok(())
}
