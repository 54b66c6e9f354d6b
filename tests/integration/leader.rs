//! Leader election on a real Lease (the operator issue, item 1): one leader; a clean stop
//! hands over at once; a killed leader is replaced only after its lease lapses; a leader
//! that can no longer renew stops leading before anyone else starts.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use countersign::operator::leader::{Election, ElectionSettings};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tokio::sync::watch;

use crate::support::{TestCluster, TestNamespace, User};

const LEASE: Duration = Duration::from_secs(3);

fn settings(namespace: &str, identity: &str) -> ElectionSettings {
    ElectionSettings {
        namespace: namespace.into(),
        lease: "countersign-operator".into(),
        identity: identity.into(),
        duration: LEASE,
    }
}

/// Waits until `leading` reads `want`; returns when that was.
async fn until_leading(
    leading: &mut watch::Receiver<bool>,
    want: bool,
    within: Duration,
) -> Result<Instant> {
    tokio::time::timeout(within, leading.wait_for(|now| *now == want))
        .await
        .with_context(|| format!("leading did not become {want} within {within:?}"))??;
    Ok(Instant::now())
}

async fn holder(namespace: &str) -> Result<Option<String>> {
    let admin = TestCluster::get().client(User::Admin).await?;
    let lease = Api::<Lease>::namespaced(admin, namespace)
        .get("countersign-operator")
        .await?;
    Ok(lease.spec.and_then(|s| s.holder_identity))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_leads_and_a_clean_stop_hands_over_at_once() -> Result<()> {
    let ns = TestNamespace::create("lease", None).await?;
    let admin = TestCluster::get().client(User::Admin).await?;
    let a = Election::start(admin.clone(), settings(ns.name(), "a"));
    let mut a_leading = a.leading();
    until_leading(&mut a_leading, true, LEASE * 3).await?;
    let b = Election::start(admin.clone(), settings(ns.name(), "b"));
    let mut b_leading = b.leading();
    tokio::time::sleep(LEASE * 2).await;
    ensure!(!*b_leading.borrow(), "two leaders at once");
    ensure!(holder(ns.name()).await?.as_deref() == Some("a"));

    let stopped = Instant::now();
    a.stop().await;
    until_leading(&mut b_leading, true, LEASE).await?;
    ensure!(
        stopped.elapsed() < LEASE,
        "a released lease is taken without waiting for it to lapse"
    );
    ensure!(holder(ns.name()).await?.as_deref() == Some("b"));
    b.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_leader_is_replaced_only_after_its_lease_lapses() -> Result<()> {
    let ns = TestNamespace::create("lease", None).await?;
    let admin = TestCluster::get().client(User::Admin).await?;
    let a = Election::start(admin.clone(), settings(ns.name(), "a"));
    until_leading(&mut a.leading(), true, LEASE * 3).await?;
    let b = Election::start(admin.clone(), settings(ns.name(), "b"));
    let mut b_leading = b.leading();
    a.abandon();
    // a's last renewal, as the lease records it (a renews no more).
    let lease = Api::<Lease>::namespaced(admin.clone(), ns.name())
        .get("countersign-operator")
        .await?;
    let renewed = lease
        .spec
        .and_then(|s| s.renew_time)
        .context("a renewed the lease")?
        .0;
    until_leading(&mut b_leading, true, LEASE * 4).await?;
    let waited = jiff::Timestamp::now().duration_since(renewed);
    // Measured from the last renewal, not from the kill, so a slow machine that delays
    // the kill after a renewal cannot make a correct takeover look early.
    ensure!(
        waited >= jiff::SignedDuration::try_from(LEASE)?,
        "took over {waited:#} after a's last renewal, before the lease lapsed"
    );
    b.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_cannot_renew_stops_before_another_starts() -> Result<()> {
    let ns = TestNamespace::create("lease", None).await?;
    let cluster = TestCluster::get();
    let admin = cluster.client(User::Admin).await?;
    // Elector a runs as a ServiceAccount allowed to hold the lease, until that is revoked.
    let account: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "elector" } }))?;
    Api::<ServiceAccount>::namespaced(admin.clone(), ns.name())
        .create(&PostParams::default(), &account)
        .await?;
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "elector" },
        "rules": [{ "apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
            "verbs": ["get", "create", "update"] }],
    }))?;
    Api::<Role>::namespaced(admin.clone(), ns.name())
        .create(&PostParams::default(), &role)
        .await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "elector" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "elector" },
        "subjects": [{ "kind": "ServiceAccount", "name": "elector", "namespace": ns.name() }],
    }))?;
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), ns.name());
    bindings.create(&PostParams::default(), &binding).await?;
    let request = serde_json::from_value(json!({ "spec": { "expirationSeconds": 600 } }))?;
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), ns.name())
        .create_token_request("elector", &PostParams::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .context("no token")?;
    let elector = kube::Client::try_from(cluster.config_with_token(&token).await?)?;

    let a = Election::start(elector, settings(ns.name(), "a"));
    let mut a_leading = a.leading();
    until_leading(&mut a_leading, true, LEASE * 5).await?;
    let b = Election::start(admin.clone(), settings(ns.name(), "b"));
    let mut b_leading = b.leading();
    tokio::time::sleep(LEASE).await;
    ensure!(!*b_leading.borrow(), "two leaders at once");

    // a's renewals are now forbidden: it must stop leading before b may start. Both are
    // watched at once, so each change is timed when it happens.
    bindings.delete("elector", &Default::default()).await?;
    let (a_stopped, b_started) = tokio::join!(
        until_leading(&mut a_leading, false, LEASE * 3),
        until_leading(&mut b_leading, true, LEASE * 4),
    );
    let (a_stopped, b_started) = (a_stopped?, b_started?);
    ensure!(
        a_stopped < b_started,
        "b led {:?} before a stopped leading",
        a_stopped - b_started
    );
    a.abandon();
    b.stop().await;
    Ok(())
}
