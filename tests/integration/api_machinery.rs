//! The API server machinery later issues build on works here as in a real
//! cluster: TokenRequest tokens authenticate as their ServiceAccount,
//! optimistic concurrency refuses stale writes, the garbage collector deletes
//! dependents, and Events can be written and listed.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Event, ServiceAccount};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Error};
use serde_json::json;

use crate::support::objects;
use crate::support::wait::{Poll, until};
use crate::support::{TestCluster, TestNamespace, User};

#[tokio::test]
async fn a_token_request_token_authenticates_as_its_service_account() -> Result<()> {
    let namespace = TestNamespace::create("token", None).await?;
    let admin = TestCluster::get().client(User::Admin).await?;
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), namespace.name());
    let account: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "deployer" } }))?;
    accounts.create(&PostParams::default(), &account).await?;

    let request: TokenRequest = serde_json::from_value(json!({
        "spec": { "audiences": [], "expirationSeconds": 600 },
    }))?;
    let issued = accounts
        .create_token_request("deployer", &PostParams::default(), &request)
        .await
        .context("TokenRequest for deployer")?;
    let token = issued
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .context("TokenRequest returned no token")?;

    let config = TestCluster::get().config_with_token(&token).await?;
    let as_account = kube::Client::try_from(config)?;
    let (user, _groups) = objects::who_am_i(as_account)
        .await
        .context("SelfSubjectReview with the issued token")?;
    let expected = format!("system:serviceaccount:{}:deployer", namespace.name());
    ensure!(
        user == expected,
        "the token authenticated as {user:?}, not {expected:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_write_with_a_stale_resource_version_is_refused_with_409() -> Result<()> {
    let namespace = TestNamespace::create("conflict", None).await?;
    let dave = TestCluster::get().client(User::Dave).await?;
    let maps = Api::<ConfigMap>::namespaced(dave, namespace.name());
    let map: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "lock" },
        "data": { "holder": "nobody" },
    }))?;
    let created = maps.create(&PostParams::default(), &map).await?;

    let mut first = created.clone();
    first.data = Some([("holder".to_owned(), "first".to_owned())].into());
    maps.replace("lock", &PostParams::default(), &first)
        .await
        .context("the first writer")?;

    let mut second = created;
    second.data = Some([("holder".to_owned(), "second".to_owned())].into());
    match maps.replace("lock", &PostParams::default(), &second).await {
        Err(Error::Api(status)) if status.code == 409 => {}
        Err(other) => bail!("the stale write failed, but not with 409 Conflict: {other}"),
        Ok(_) => bail!("a write with a stale resourceVersion was accepted"),
    }
    let holder = maps.get("lock").await?.data.unwrap_or_default();
    ensure!(
        holder.get("holder").map(String::as_str) == Some("first"),
        "the first write was lost: {holder:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_garbage_collector_deletes_dependents_of_a_deleted_owner() -> Result<()> {
    let namespace = TestNamespace::create("gc", None).await?;
    let dave = TestCluster::get().client(User::Dave).await?;
    let maps = Api::<ConfigMap>::namespaced(dave, namespace.name());
    let owner: ConfigMap = serde_json::from_value(json!({ "metadata": { "name": "owner" } }))?;
    let owner = maps.create(&PostParams::default(), &owner).await?;
    let owner_uid = owner.metadata.uid.context("owner has no uid")?;
    let dependent: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid,
            }],
        },
    }))?;
    maps.create(&PostParams::default(), &dependent).await?;

    maps.delete("owner", &DeleteParams::background()).await?;
    until(
        "the garbage collector to delete the dependent ConfigMap",
        Duration::from_secs(60),
        || async {
            Ok(match maps.get_opt("dependent").await? {
                None => Poll::Ready(()),
                Some(map) => Poll::Pending(format!(
                    "dependent still exists (deletionTimestamp {:?})",
                    map.metadata.deletion_timestamp
                )),
            })
        },
    )
    .await
}

#[tokio::test]
async fn events_are_written_and_listed_by_involved_object() -> Result<()> {
    let namespace = TestNamespace::create("events", None).await?;
    let admin = TestCluster::get().client(User::Admin).await?;
    let events = Api::<Event>::namespaced(admin, namespace.name());
    let event: Event = serde_json::from_value(json!({
        "metadata": { "name": "web.approval-requested" },
        "involvedObject": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": namespace.name() },
        "reason": "ApprovalRequested",
        "message": "approval web-1234 requested by dave",
        "type": "Normal",
        "source": { "component": "countersign-tests" },
    }))?;
    events.create(&PostParams::default(), &event).await?;
    let found = events
        .list(
            &ListParams::default().fields("involvedObject.kind=Deployment,involvedObject.name=web"),
        )
        .await?;
    ensure!(
        found
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("ApprovalRequested")),
        "the Event is not listed for its involved object: {:?}",
        found.items
    );
    Ok(())
}
