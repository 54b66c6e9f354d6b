//! A real Flux (`tests/gitops/up`: source-controller and kustomize-controller from the Go
//! module proxy, a git server on loopback) applying commits to the test cluster while
//! countersign gates it: what GitOps users meet.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::support::countersign::Countersign;
use crate::support::flow::*;
use crate::support::gitops::Flux;
use crate::support::receiver::{Receiver, SinkSecret};
use crate::support::wait::{Poll, until};
use crate::support::{TestCluster, TestNamespace, User};

/// A ConfigMap `settings` in `namespace`.
fn settings(namespace: &str, value: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "settings", "namespace": namespace },
        "data": { "greeting": value },
    })
}

/// Whether `kind/name` exists in `namespace`.
fn exists(namespace: &str, kind: &str, name: &str) -> Result<bool> {
    let out = kubectl(
        User::Admin,
        &[
            "get",
            kind,
            name,
            "-n",
            namespace,
            "--ignore-not-found",
            "-o",
            "name",
        ],
    )?;
    anyhow::ensure!(out.status.success(), "kubectl get {kind}: {}", text(&out));
    Ok(!stdout(&out).trim().is_empty())
}

#[tokio::test]
async fn flux_applies_a_commit_as_kustomize_controller() -> Result<()> {
    let flux = Flux::get();
    let ns = TestNamespace::create("flux", None).await?;
    let ns = ns.name();
    // The identity gitops.env names is the one the API server authenticates.
    let whoami = TestCluster::get().kubectl_with(
        &flux.kustomize_kubeconfig,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    )?;
    assert_eq!(
        stdout(&whoami),
        flux.kustomize_identity,
        "{}",
        text(&whoami)
    );

    let commit = flux.commit(
        ns,
        &[settings(ns, "hello"), rolling_web(ns, "nginx:1.27", 1)],
        "web 1.27",
    )?;
    flux.kustomization(ns, "apps", ns, "10m")?;
    flux.tried(ns, "apps", &commit, "True").await?;
    assert!(exists(ns, "deployment", "web")? && exists(ns, "configmap", "settings")?);
    let managers = kubectl(
        User::Admin,
        &[
            "get",
            "deployment",
            "web",
            "-n",
            ns,
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ],
    )?;
    assert!(
        stdout(&managers).contains("kustomize-controller"),
        "{}",
        text(&managers)
    );
    Ok(())
}

#[tokio::test]
async fn a_gated_change_in_a_commit_holds_the_whole_commit() -> Result<()> {
    Countersign::get();
    let flux = Flux::get();
    let ns = TestNamespace::create("fluxgate", None).await?;
    let ns = ns.name();
    let _policy = Policy::apply(ns, two_level_chain())?;
    until_gated(&web(ns, "nginx:1.27", 1)).await?;

    let commit = flux.commit(
        ns,
        &[settings(ns, "hello"), rolling_web(ns, "nginx:1.27", 1)],
        "web 1.27",
    )?;
    flux.kustomization(ns, "apps", ns, "10m")?;
    let held = flux.tried(ns, "apps", &commit, "False").await?;
    let message = held["message"].as_str().context("a message")?;
    // kustomize-controller dry-runs every object of the stage before it applies any, and
    // stops at countersign's denial of the Deployment's dry run: nothing of the commit
    // lands, the ConfigMap (not gated) included.
    assert!(message.contains("dry-run failed"), "{held}");
    assert!(message.contains("approval required by policy"), "{held}");
    assert!(
        !exists(ns, "deployment", "web")?,
        "the gated Deployment was applied"
    );
    assert!(
        !exists(ns, "configmap", "settings")?,
        "part of a held commit was applied"
    );
    Ok(())
}

/// Deployment `name` that the kwok nodes roll out.
fn deployment(namespace: &str, name: &str, image: &str) -> Value {
    let mut object = rolling_web(namespace, image, 1);
    object["metadata"]["name"] = json!(name);
    object["spec"]["selector"]["matchLabels"]["app"] = json!(name);
    object["spec"]["template"]["metadata"]["labels"]["app"] = json!(name);
    object
}

#[tokio::test]
async fn a_held_sync_opens_one_change_set_of_all_its_gated_changes() -> Result<()> {
    Countersign::get();
    let flux = Flux::get();
    let receiver = Receiver::start().await?;
    let leads = SinkSecret::create(&format!("{}/leads", receiver.base))?;
    let sre = SinkSecret::create(&format!("{}/sre", receiver.base))?;
    let ns = TestNamespace::create("fluxsync", None).await?;
    let ns = ns.name();
    let mut chain = flux.gated_chain();
    chain["approval"]["levels"][0]["sinks"] = json!([leads.name]);
    chain["approval"]["levels"][1]["sinks"] = json!([sre.name]);
    let _policy = Policy::apply(ns, chain)?;
    until_gated(&web(ns, "nginx:1.27", 1)).await?;

    let commit = flux.commit(
        ns,
        &[
            settings(ns, "hello"),
            deployment(ns, "web", "nginx:1.27"),
            deployment(ns, "api", "api:2.0"),
        ],
        "web and api",
    )?;
    flux.kustomization(ns, "apps", ns, "10m")?;
    flux.tried(ns, "apps", &commit, "False").await?;
    // Flux's Event of the held attempt (its status may already show a later attempt,
    // denied as pending: other tests push to the same branch).
    let held = until(
        "the held attempt's Event",
        Duration::from_secs(20),
        || async {
            let messages = flux.event_messages(ns, "apps")?;
            let held = messages
                .iter()
                .find(|m| m.contains("countersign holds this sync for approval"));
            Ok(match held {
                Some(held) => Poll::Ready(held.clone()),
                None => Poll::Pending(format!("{messages:?}")),
            })
        },
    )
    .await?;
    assert!(
        held.contains(&format!("2 gated change(s) of Kustomization {ns}/apps")),
        "{held}"
    );

    // One set and both its requests, opened by countersign as the report came, without
    // anyone asking.
    let (set, opened) = until(
        "the sync's set and both its requests",
        Duration::from_secs(20),
        || async {
            let sets = change_sets(ns).await?;
            let opened = approvals(ns).await?;
            Ok(match sets.as_slice() {
                [set] if opened.len() >= 2 => Poll::Ready((set.clone(), opened)),
                _ => Poll::Pending(format!("{} sets, {} requests", sets.len(), opened.len())),
            })
        },
    )
    .await?;
    let set_name = set.metadata.name.clone().context("a set name")?;
    let mut targets: Vec<&str> = opened.iter().map(|a| a.spec.target.name.as_str()).collect();
    targets.sort_unstable();
    assert_eq!(targets, ["api", "web"]);
    let mut listed: Vec<&str> = set
        .spec
        .members
        .iter()
        .map(|m| m.target.name.as_str())
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, ["api", "web"], "the set lists both changes");
    assert_eq!(set.spec.change.requester.username, flux.kustomize_identity);
    assert!(
        set.spec.change.summary_seal.is_some(),
        "set opened unsealed"
    );
    assert!(
        set.spec.change.summary.text.starts_with("2 changes: "),
        "{}",
        set.spec.change.summary.text
    );
    for approval in &opened {
        let change = &approval.spec.change;
        assert_eq!(approval.spec.change_set.as_deref(), Some(set_name.as_str()));
        assert_eq!(change.requester.username, flux.kustomize_identity);
        let origin = change.origin.as_ref().context("an origin")?;
        assert_eq!(
            (
                origin.kind.as_str(),
                origin.namespace.as_str(),
                origin.name.as_str()
            ),
            ("Kustomization", ns, "apps")
        );
        assert!(
            origin
                .revision
                .as_deref()
                .is_some_and(|r| flux.holds(r, &commit)),
            "{origin:?}"
        );
        assert!(change.summary_seal.is_some(), "opened unsealed");
    }
    // Nothing of the commit landed while it waits.
    assert!(!exists(ns, "deployment", "web")? && !exists(ns, "deployment", "api")?);
    assert!(!exists(ns, "configmap", "settings")?);

    // The leads hear once, of the whole set.
    let notices = until("the leads' notice", Duration::from_secs(20), || async {
        let posts: Vec<_> = receiver
            .posts()
            .into_iter()
            .filter(|p| p.accepted && p.sink == "leads")
            .collect();
        Ok(if posts.is_empty() {
            Poll::Pending("none yet".into())
        } else {
            Poll::Ready(posts)
        })
    })
    .await?;
    let notice = notices[0].body.to_string();
    assert!(
        notice.contains(&set_name) && notice.contains("web") && notice.contains("api"),
        "the notice names the set and both changes: {notice}"
    );

    // A member is not reviewed on its own: the set is.
    let member = opened[0].metadata.name.clone().context("a name")?;
    assert_refused(
        &review(User::Alice, ns, &member, json!({ "decision": "Approve" }))?,
        &format!("belongs to change set {set_name}"),
    );

    // Nor is the set's list of changes edited, nor its status forged, by anyone.
    let dropped = kubectl(
        User::Alice,
        &[
            "patch",
            "changeset",
            &set_name,
            "-n",
            ns,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/members/1"}]"#,
        ],
    )?;
    assert_refused(&dropped, "spec.members is immutable");
    let forged_phase = kubectl(
        User::Admin,
        &[
            "patch",
            "changeset",
            &set_name,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Approved"}}"#,
        ],
    )?;
    assert_refused(&forged_phase, "written by countersign only");

    // A person's dry run is no sync's: denied, and it opens nothing.
    let dry = apply(
        User::Dave,
        &deployment(ns, "db", "db:1"),
        &["--dry-run=server"],
    )?;
    assert_refused(&dry, "dry run, none created");
    // Nor does a report forged on a Kustomization of one's own (suspended, so Flux leaves
    // its status alone): no round of countersign's stands behind it.
    let forged = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": { "name": "forged", "namespace": ns },
        "spec": {
            "interval": "10m", "path": "./nowhere", "prune": false, "suspend": true,
            "sourceRef": { "kind": "GitRepository", "namespace": "flux-system", "name": "apps" },
        },
    });
    assert_ok(&kubectl_stdin(User::Admin, &["apply", "-f", "-"], &forged)?);
    let status = json!({ "status": { "lastAttemptedRevision": format!("main@sha1:{commit}"), "conditions": [{
        "type": "Ready", "status": "False", "reason": "ReconciliationFailed",
        "lastTransitionTime": "2026-12-04T00:00:00Z",
        "message": format!("Deployment/{ns}/db dry-run failed: countersign holds this sync for approval: 1 gated change(s)"),
    }]}});
    assert_ok(&kubectl(
        User::Admin,
        &[
            "patch",
            "kustomization",
            "forged",
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ],
    )?);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        approvals(ns).await?.len(),
        2,
        "a dry run or a forged report opened a request"
    );
    assert_eq!(
        change_sets(ns).await?.len(),
        1,
        "a forged report opened a set"
    );

    // One approval per level, on the set; the last resumes the sync at once, although Flux
    // would retry only in 10 minutes: applied, then each change confirmed Deployed.
    let names: Vec<String> = opened
        .iter()
        .filter_map(|a| a.metadata.name.clone())
        .collect();
    for (user, level) in [(User::Alice, "leads"), (User::Carol, "sre")] {
        assert_ok(&review_set(
            user,
            ns,
            &set_name,
            json!({ "decision": "Approve", "comment": format!("{level} ok") }),
        )?);
    }
    let approved_at = std::time::Instant::now();
    until(
        "the approved commit applied",
        Duration::from_secs(15),
        || async {
            Ok(
                if exists(ns, "deployment", "web")?
                    && exists(ns, "deployment", "api")?
                    && exists(ns, "configmap", "settings")?
                {
                    Poll::Ready(())
                } else {
                    Poll::Pending("not applied yet".into())
                },
            )
        },
    )
    .await?;
    eprintln!(
        "gitops: applied {:?} after the last approval",
        approved_at.elapsed()
    );
    for name in &names {
        let status = status_until(ns, name, "Deployed", |s| {
            s.phase == countersign::api::ApprovalPhase::Deployed
        })
        .await?;
        assert!(
            !status.conditions.iter().any(|c| c.type_ == "SyncResumed"),
            "a member resumed the sync on its own: {status:?}"
        );
    }
    // The set resumed it, once, and settles as Deployed with its members (rather than
    // expiring with approvalTTL); each level heard once, of the set.
    let set_status = until("the set Deployed", Duration::from_secs(20), || async {
        let status = change_sets(ns)
            .await?
            .into_iter()
            .find(|s| s.metadata.name.as_deref() == Some(set_name.as_str()))
            .and_then(|s| s.status)
            .unwrap_or_default();
        Ok(
            if status.phase == countersign::api::ApprovalPhase::Deployed {
                Poll::Ready(status)
            } else {
                Poll::Pending(format!("{:?}", status.phase))
            },
        )
    })
    .await?;
    assert_eq!(set_status.expires_at, None, "a settled set has no deadline");
    let resumed = set_status
        .conditions
        .iter()
        .find(|c| c.type_ == "SyncResumed")
        .context("the set's SyncResumed condition")?;
    assert_eq!(resumed.status, "True", "{resumed:?}");
    let opened_notices = |sink: &str| {
        receiver
            .accepted(sink)
            .into_iter()
            .filter(|(event, _)| event == "LevelOpened")
            .count()
    };
    assert_eq!(
        opened_notices("leads"),
        1,
        "{:?}",
        receiver.accepted("leads")
    );
    assert_eq!(opened_notices("sre"), 1, "{:?}", receiver.accepted("sre"));
    eprintln!(
        "gitops: Deployed {:?} after the last approval",
        approved_at.elapsed()
    );
    let requested_at = kubectl(
        User::Admin,
        &[
            "get",
            "kustomization",
            "apps",
            "-n",
            ns,
            "-o",
            "jsonpath={.metadata.annotations.reconcile\\.fluxcd\\.io/requestedAt}",
        ],
    )?;
    assert!(
        !stdout(&requested_at).trim().is_empty(),
        "no reconcile was requested: {}",
        text(&requested_at)
    );

    // A second commit changes web alone: one request, for it alone. Rejected: the sync is
    // asked to report it at once, stays failed saying so, and nothing of it is applied.
    let second = flux.commit(
        ns,
        &[
            settings(ns, "hello"),
            deployment(ns, "web", "nginx:1.28"),
            deployment(ns, "api", "api:2.0"),
        ],
        "web 1.28",
    )?;
    let fresh = until(
        "the second commit's request",
        Duration::from_secs(40),
        || async {
            let all = approvals(ns).await?;
            let fresh: Vec<_> = all
                .into_iter()
                .filter(|a| !names.contains(a.metadata.name.as_ref().unwrap_or(&String::new())))
                .collect();
            Ok(if fresh.is_empty() {
                Poll::Pending("no new request".into())
            } else {
                Poll::Ready(fresh)
            })
        },
    )
    .await?;
    assert_eq!(
        fresh.len(),
        1,
        "one request for the one changed object: {fresh:?}"
    );
    assert_eq!(fresh[0].spec.target.name, "web");
    assert_eq!(fresh[0].spec.change_set, None, "one change forms no set");
    let origin = fresh[0].spec.change.origin.as_ref().context("an origin")?;
    assert!(
        origin
            .revision
            .as_deref()
            .is_some_and(|r| flux.holds(r, &second)),
        "{origin:?}"
    );
    let rejected = fresh[0].metadata.name.clone().context("a name")?;
    assert_ok(&review(
        User::Alice,
        ns,
        &rejected,
        json!({ "decision": "Reject", "comment": "not this week" }),
    )?);
    let failed = until(
        "the rejection reported by Flux",
        Duration::from_secs(15),
        || async {
            let condition = flux.tried(ns, "apps", &second, "False").await?;
            let message = condition["message"].as_str().unwrap_or_default().to_owned();
            Ok(if message.contains("was rejected by alice") {
                Poll::Ready(message)
            } else {
                Poll::Pending(message)
            })
        },
    )
    .await?;
    assert!(failed.contains("not this week"), "{failed}");
    let image = kubectl(
        User::Admin,
        &[
            "get",
            "deployment",
            "web",
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
    )?;
    assert_eq!(
        stdout(&image),
        "nginx:1.27",
        "a rejected change was applied"
    );
    Ok(())
}

/// Argo CD's half of the resume, against Argo CD's own Application CRD (installed by
/// `tests/gitops/up`; no Argo CD runs here): the change its controller applied is denied
/// and requested, with the Application recorded; once approved, countersign gives the
/// Application a sync operation at the revision that failed, as `argocd app sync` does.
#[tokio::test]
async fn an_approved_argo_cd_change_starts_a_sync_of_its_application() -> Result<()> {
    Countersign::get();
    Flux::get();
    let ns = TestNamespace::create("argo", None).await?;
    let ns = ns.name();
    // The namespace stands in for `argocd`: the controller's ServiceAccount and the
    // Application live in it.
    let controller = format!("system:serviceaccount:{ns}:argocd-application-controller");
    assert_ok(&kubectl(
        User::Admin,
        &[
            "create",
            "serviceaccount",
            "argocd-application-controller",
            "-n",
            ns,
        ],
    )?);
    assert_ok(&kubectl(
        User::Admin,
        &[
            "create",
            "rolebinding",
            "argocd-edit",
            "--clusterrole=edit",
            &format!("--serviceaccount={ns}:argocd-application-controller"),
            "-n",
            ns,
        ],
    )?);
    let mut chain = two_level_chain();
    chain["gitops"] = json!({ "controllers": [{
        "kind": "ArgoCD",
        "serviceAccount": { "namespace": ns, "name": "argocd-application-controller" },
    }]});
    let _policy = Policy::apply(ns, chain)?;
    let application = json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": { "name": "shop", "namespace": ns },
        "spec": {
            "project": "default",
            "source": { "repoURL": "https://git.example.com/shop.git", "path": "apps", "targetRevision": "HEAD" },
            "destination": { "server": "https://kubernetes.default.svc", "namespace": ns },
            "syncPolicy": { "automated": {}, "syncOptions": ["ServerSideApply=true"] },
        },
        "status": {
            "operationState": {
                "phase": "Failed",
                "message": "one or more objects failed to apply",
                "startedAt": "2026-12-04T10:00:00Z",
                "operation": { "sync": { "revision": "4f1c2d" } },
                "syncResult": { "revision": "4f1c2d", "source": { "repoURL": "https://git.example.com/shop.git" } },
            },
        },
    });
    assert_ok(&kubectl_stdin(
        User::Admin,
        &["create", "-f", "-"],
        &application,
    )?);
    until_gated(&web(ns, "nginx:1.27", 1)).await?;

    // Argo CD's controller applies web, tracked to the Application: denied, requested.
    let mut tracked = rolling_web(ns, "nginx:1.27", 1);
    tracked["metadata"]["annotations"] = json!({
        "argocd.argoproj.io/tracking-id": format!("shop:apps/Deployment:{ns}/web"),
    });
    let denied = kubectl_stdin(
        User::Admin,
        &["--as", &controller, "apply", "-f", "-"],
        &tracked,
    )?;
    assert_refused(&denied, "approval required by policy");
    let opened = approvals(ns).await?;
    assert_eq!(opened.len(), 1, "{opened:?}");
    let origin = opened[0].spec.change.origin.as_ref().context("an origin")?;
    assert_eq!(
        (
            origin.kind.as_str(),
            origin.namespace.as_str(),
            origin.name.as_str()
        ),
        ("Application", ns, "shop")
    );
    assert_eq!(opened[0].spec.change.requester.username, controller);
    let name = opened[0].metadata.name.clone().context("a name")?;

    for user in [User::Alice, User::Carol] {
        assert_ok(&review(user, ns, &name, json!({ "decision": "Approve" }))?);
    }
    let synced = until(
        "a sync operation on the Application",
        Duration::from_secs(15),
        || async {
            let out = kubectl(
                User::Admin,
                &["get", "application", "shop", "-n", ns, "-o", "json"],
            )?;
            let application: Value = serde_json::from_slice(&out.stdout)?;
            Ok(if application["operation"].is_object() {
                Poll::Ready(application)
            } else {
                Poll::Pending(application["status"].to_string())
            })
        },
    )
    .await?;
    let operation = &synced["operation"];
    assert_eq!(operation["sync"]["revision"], "4f1c2d", "{operation}");
    assert_eq!(
        operation["sync"]["syncOptions"],
        json!(["ServerSideApply=true"])
    );
    assert_eq!(operation["initiatedBy"]["username"], "countersign");
    assert!(
        synced["status"]["operationState"].is_null(),
        "{}",
        synced["status"]
    );
    let status = status_until(ns, &name, "SyncResumed", |s| {
        s.conditions.iter().any(|c| c.type_ == "SyncResumed")
    })
    .await?;
    let resumed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "SyncResumed")
        .context("the condition")?;
    assert_eq!(
        (resumed.status.as_str(), resumed.reason.as_str()),
        ("True", "ReconcileRequested")
    );
    Ok(())
}
