//! The sync opener (`--gitops`, docs/gitops.md): runs beside the webhook on every replica,
//! since each remembers the sync rounds its own dry runs formed (`cluster::sync_rounds`).
//! It watches Flux's Kustomizations; when one reports the denial countersign held its sync
//! with (`core::admission::sync::reported_hold`), this replica's round of that sync is
//! opened: every gated change's request at once, with the parts other replicas saw of the
//! same round (shared at report time, sealed: `cluster::sync_exchange`). The report only
//! triggers: what is opened is what the API server sent in the dry runs.

use futures::StreamExt;
use jiff::Timestamp;
use kube::Api;
use kube::api::DynamicObject;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::sync::Arc;

use crate::cluster::{Cluster, sync_exchange};
use crate::core::admission::sync::{
    KUSTOMIZATION_API_VERSION, RoundMember, SyncKey, exchange_name, merged_round, open_round,
    reported_hold, round_part,
};
use crate::core::approval::seal::SealKey;

/// Watch Kustomizations until the future is dropped; open each reported round, shared with
/// the other replicas that saw part of it (`cluster::sync_exchange`).
pub async fn open_reported_rounds(cluster: Cluster, seal_key: Arc<SealKey>, replica: String) {
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
        // Each report is opened on its own task (it may wait for this replica's round to go
        // quiet, then for the other replicas' parts), so the watch goes on.
        let (cluster, seal_key, replica) = (cluster.clone(), seal_key.clone(), replica.clone());
        tokio::spawn(async move {
            let rounds = cluster
                .sync_rounds
                .take_when_quiet(&report.namespace, &report.name)
                .await;
            for (key, members) in rounds {
                open_shared_round(
                    cluster.clone(),
                    seal_key.clone(),
                    replica.clone(),
                    key,
                    members,
                    report.revision.clone(),
                )
                .await;
            }
        });
    }
}

/// Share this replica's part of a reported round, wait for the other replicas' parts, and
/// open the whole round (the set every replica opens alike). Should sharing fail, this
/// replica's part is opened alone.
async fn open_shared_round(
    cluster: Cluster,
    seal_key: Arc<SealKey>,
    replica: String,
    key: SyncKey,
    own: Vec<RoundMember>,
    revision: Option<String>,
) {
    let client = &cluster.client;
    let namespace = &cluster.install_namespace;
    let exchange = exchange_name(&key, revision.as_deref());
    let shared = async {
        sync_exchange::publish(
            client,
            namespace,
            &exchange,
            &replica,
            &round_part(&own, &seal_key),
        )
        .await?;
        tokio::time::sleep(sync_exchange::EXCHANGE_WAIT).await;
        sync_exchange::parts(client, namespace, &exchange).await
    };
    let parts = match shared.await {
        Ok(parts) => parts,
        Err(error) => {
            tracing::warn!(%error, sync = ?key, "could not share this replica's part of a held sync; opening it alone");
            Vec::new()
        }
    };
    let members = merged_round(&own, parts.iter().map(String::as_str), &seal_key);
    let plan = open_round(&key, &members, revision, &seal_key, Timestamp::now());
    let answer = cluster.carry_out(plan).await;
    if answer.allowed {
        tracing::info!(sync = ?key, requests = members.len(), seen_here = own.len(), "opened the requests of a held sync");
    } else {
        tracing::warn!(sync = ?key, why = %answer.message, "could not open every request of a held sync; its next sync attempt remembers it again");
    }
    if let Err(error) = sync_exchange::sweep(client, namespace, Timestamp::now()).await {
        tracing::debug!(%error, "old sync exchanges not swept");
    }
}
