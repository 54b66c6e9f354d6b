//! Where the replicas share the parts of a held sync's round (`--gitops`): the API server
//! spreads a sync's concurrent dry runs over the replicas, so each remembers only the
//! changes it answered. When the controller reports the hold, each replica with a part
//! writes it (sealed, `core::admission::sync::round_part`) into one ConfigMap of the
//! install namespace, waits a moment, and reads every part back, so all open the same set.
//! Written at report time, never while answering a dry run.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};

use super::calls::{WriteError, bounded};

/// The label on every exchange, so old ones are found and swept.
pub const EXCHANGE_LABEL: &str = "countersign.dev/sync-exchange";

/// How long the replicas that saw one report wait for each other's parts.
pub const EXCHANGE_WAIT: Duration = Duration::from_millis(1500);

/// How long an exchange is kept after it was made.
const KEPT_FOR: jiff::SignedDuration = jiff::SignedDuration::from_mins(10);

/// Share `part` as `replica`'s in exchange `name`.
pub async fn publish(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    replica: &str,
    part: &str,
) -> Result<(), WriteError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let data: BTreeMap<String, String> = [(data_key(replica), part.to_string())].into();
    let map = ConfigMap {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some([(EXCHANGE_LABEL.to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        data: Some(data.clone()),
        ..Default::default()
    };
    match bounded(api.create(&PostParams::default(), &map)).await {
        Ok(_) => Ok(()),
        // Another replica made it first: add this part beside theirs (a merge patch of one
        // key, so neither overwrites the other).
        Err(WriteError::Conflict(_)) => bounded(api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "data": data })),
        ))
        .await
        .map(drop),
        Err(error) => Err(error),
    }
}

/// Every part shared in exchange `name`.
pub async fn parts(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<String>, WriteError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let map = bounded(api.get_opt(name)).await?;
    Ok(map
        .and_then(|m| m.data)
        .map(|data| data.into_values().collect())
        .unwrap_or_default())
}

/// Delete the exchanges older than ten minutes.
pub async fn sweep(
    client: &kube::Client,
    namespace: &str,
    now: Timestamp,
) -> Result<(), WriteError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let listed =
        bounded(api.list(&ListParams::default().labels(&format!("{EXCHANGE_LABEL}=true")))).await?;
    for map in listed.items {
        let made = map.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if made.is_some_and(|made| now.duration_since(made) > KEPT_FOR)
            && let Some(name) = &map.metadata.name
        {
            match bounded(api.delete(name, &DeleteParams::default())).await {
                Ok(_) => {}
                // Another replica swept it first.
                Err(WriteError::Api(kube::Error::Api(status))) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(())
}

/// A replica's name as a ConfigMap key (letters, digits, `-`, `_` and `.`).
fn data_key(replica: &str) -> String {
    let key: String = replica
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    if key.is_empty() {
        "replica".into()
    } else {
        key
    }
}
