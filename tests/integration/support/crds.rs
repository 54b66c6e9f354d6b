//! Installs CustomResourceDefinitions from YAML files into the test cluster.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::Deserialize;

use super::wait::{Poll, until};

/// Field manager of everything the test support applies.
pub const FIELD_MANAGER: &str = "countersign-tests";

/// Every YAML document in the `.yaml`/`.yml` files of `dir` (sorted by file
/// name), as JSON values; empty documents are skipped.
pub fn read_yaml_documents(dir: &Path) -> Result<Vec<serde_json::Value>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
        })
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for document in yaml_serde::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(document)
                .with_context(|| format!("parsing {}", file.display()))?;
            if !value.is_null() {
                documents.push(value);
            }
        }
    }
    Ok(documents)
}

/// Applies every CRD in `dir` (server-side apply, so concurrent tests may all
/// do it) and waits until the API server reports each one Established.
pub async fn apply_crds(
    client: &kube::Client,
    dir: &Path,
) -> Result<Vec<CustomResourceDefinition>> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = Vec::new();
    for document in read_yaml_documents(dir)? {
        let crd: CustomResourceDefinition =
            serde_json::from_value(document).with_context(|| {
                format!(
                    "a document in {} is not a CustomResourceDefinition",
                    dir.display()
                )
            })?;
        let Some(name) = crd.metadata.name.clone() else {
            bail!("a CRD in {} has no metadata.name", dir.display());
        };
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
        applied.push(name);
    }
    let mut established = Vec::new();
    for name in applied {
        let crd = until(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(30),
            || async {
                let crd = api.get(&name).await?;
                let conditions = crd
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.clone())
                    .unwrap_or_default();
                let is_true = |kind: &str| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == kind && c.status == "True")
                };
                Ok(if is_true("Established") && is_true("NamesAccepted") {
                    Poll::Ready(crd)
                } else {
                    Poll::Pending(format!("{conditions:?}"))
                })
            },
        )
        .await?;
        established.push(crd);
    }
    Ok(established)
}
