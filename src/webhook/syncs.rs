//! The sync opener (`--gitops`, docs/gitops.md): runs beside the webhook on every replica,
//! since each remembers the sync rounds its own dry runs formed (`cluster::sync_rounds`).
//! It watches Flux's Kustomizations; when one reports the denial countersign held its sync
//! with (`core::admission::sync::reported_hold`), this replica's round of that sync is
//! opened: every gated change's request at once. The report only triggers: what is opened
//! is what the API server sent in the dry runs.

use futures::StreamExt;
use jiff::Timestamp;
use kube::Api;
use kube::api::DynamicObject;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::sync::Arc;

use crate::cluster::Cluster;
use crate::core::admission::sync::{KUSTOMIZATION_API_VERSION, open_round, reported_hold};
use crate::core::approval::seal::SealKey;

/// Watch Kustomizations until the future is dropped; open each reported round.
pub async fn open_reported_rounds(cluster: Cluster, seal_key: Arc<SealKey>) {
    let resource = crate::cluster::api_resource(KUSTOMIZATION_API_VERSION, "Kustomization");
    let api: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &resource);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut warned = false;
    while let Some(event) = events.next().await {
        let object = match event {
            Ok(Event::Apply(object) | Event::InitApply(object)) => object,
            Ok(_) => continue,
            Err(error) => {
                // No Flux installed, or no right to read it: said once, retried with backoff.
                if !warned {
                    tracing::warn!(%error, "cannot watch Flux Kustomizations; GitOps syncs held for approval are not opened until this works");
                    warned = true;
                }
                continue;
            }
        };
        warned = false;
        let Ok(value) = serde_json::to_value(&object) else {
            continue;
        };
        let Some(report) = reported_hold(&value) else {
            continue;
        };
        for (key, members) in cluster.sync_rounds.take(&report.namespace, &report.name) {
            let plan = open_round(
                &key,
                &members,
                report.revision.clone(),
                &seal_key,
                Timestamp::now(),
            );
            let answer = cluster.carry_out(plan).await;
            if answer.allowed {
                tracing::info!(sync = ?key, requests = members.len(), "opened the requests of a held sync");
            } else {
                tracing::warn!(sync = ?key, why = %answer.message, "could not open every request of a held sync; its next sync attempt remembers it again");
            }
        }
    }
}
