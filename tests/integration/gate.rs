//! `countersign serve --local` gating the real API server (SPEC §1, §3, §6), as the test
//! cluster's people: dave deploys, alice and bob lead, carol is SRE, erin is on call.

use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result};
use countersign::api::{AuditAction, AuditEntry, DeploymentApproval};
use futures::{StreamExt, TryStreamExt};
use kube::Api;
use serde_json::{Value, json};

use crate::support::countersign::{Countersign, INSTALL_NAMESPACE, Presenting, post_review};
use crate::support::flow::*;
use crate::support::namespace::unique_name;
use crate::support::wait::{Poll, until};
use crate::support::{TestCluster, TestNamespace, User};

#[tokio::test]
async fn a_gated_change_is_requested_reviewed_and_admitted_once() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("gate", None).await?;
    let ns = ns.name();
    let _policy = Policy::apply(ns, two_level_chain())?;

    // dave's first apply is denied and opens the request; retries and dry runs open nothing.
    let v1 = web(ns, "nginx:1.27", 1);
    until_gated(&v1).await?;
    let first = apply(User::Dave, &v1, &[])?;
    assert_refused(&first, "approval required by policy");
    assert_refused(&first, "approve with: kubectl countersign approve web-");
    assert_refused(&apply(User::Dave, &v1, &["--dry-run=server"])?, "approval");
    let retry = apply(User::Dave, &v1, &[])?;
    assert_refused(&retry, "is pending: level 1/2 leads: 0 of 1 approvals");
    let opened = approvals(ns).await?;
    assert_eq!(opened.len(), 1, "one request for one change: {opened:?}");
    let name = opened[0].metadata.name.clone().context("name")?;
    assert!(name.starts_with("web-") && name.len() == 12, "{name}");
    assert_eq!(opened[0].spec.change.requester.username, "dave");
    assert_refused(
        &retry,
        &format!("approve with: kubectl countersign approve {name} -n {ns}"),
    );

    // Forgeries, each refused with its own message.
    let before_reviews = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
    assert_refused(
        &review(
            User::Carol,
            ns,
            &name,
            json!({"decision": "Approve", "user": "alice"}),
        )?,
        "nobody can review in someone else's name",
    );
    assert_refused(
        &review(
            User::Alice,
            ns,
            &name,
            json!({"decision": "Approve", "groups": ["sre"]}),
        )?,
        "not one of your authenticated groups",
    );
    assert_refused(
        &review(User::Carol, ns, &name, json!({"decision": "Approve"}))?,
        "is not open yet",
    );
    assert_refused(
        &review(
            User::Alice,
            ns,
            &name,
            json!({"decision": "Approve", "user": "alice", "time": "2020-01-01T00:00:00Z"}),
        )?,
        "more than a minute from now",
    );
    let retarget = json!([{ "op": "replace", "path": "/spec/target/name", "value": "db" }]);
    assert_refused(
        &patch_approval(User::Alice, ns, &name, retarget)?,
        "spec.target is immutable",
    );
    assert_refused(
        &kubectl(
            User::Admin,
            &[
                "patch",
                "deploymentapproval",
                &name,
                "-n",
                ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Approved"}}"#,
            ],
        )?,
        "written by countersign only",
    );
    // dave may not approve his own change (and has no right to patch requests at all).
    assert_refused(
        &review(User::Dave, ns, &name, json!({"decision": "Approve"}))?,
        "forbidden",
    );

    // alice approves with only a decision; the mutating webhook stamps who and when.
    assert_ok(&review(
        User::Alice,
        ns,
        &name,
        json!({"decision": "Approve", "comment": "LGTM"}),
    )?);
    let stamped = &approvals(ns).await?[0].spec.reviews[0];
    assert_eq!(stamped.user, "alice");
    assert_eq!(stamped.groups, ["team-leads"]);
    assert!(
        stamped.time.0 >= before_reviews,
        "stamped now: {:?}",
        stamped.time
    );
    assert_refused(
        &review(User::Alice, ns, &name, json!({"decision": "Approve"}))?,
        "already reviewed this request",
    );
    assert_refused(
        &review(User::Bob, ns, &name, json!({"decision": "Approve"}))?,
        "is not an approver of the open level",
    );
    let earlier =
        json!([{ "op": "replace", "path": "/spec/reviews/0/comment", "value": "edited" }]);
    assert_refused(
        &patch_approval(User::Alice, ns, &name, earlier)?,
        "earlier reviews are immutable",
    );
    assert_ok(&review(
        User::Carol,
        ns,
        &name,
        json!({"decision": "Approve"}),
    )?);

    // A dry run of the approved change is admitted and consumes nothing.
    apply_until(
        "the approved dry run to be admitted",
        &v1,
        &["--dry-run=server"],
        |out| out.status.success(),
    )
    .await?;
    let untouched = approvals(ns).await?.remove(0);
    assert!(
        untouched
            .status
            .is_none_or(|s| s.phase.to_string() != "Deploying"),
        "a dry run consumed the approval"
    );

    // dave's same apply is admitted, and the approval is Deploying under this replica.
    let admitted = apply_until("the approved change to be admitted", &v1, &[], |out| {
        out.status.success()
    })
    .await?;
    assert!(
        text(&admitted).contains("it is now Deploying"),
        "{}",
        text(&admitted)
    );
    let approval = approvals(ns).await?.remove(0);
    let status = approval.status.context("status")?;
    assert_eq!(status.phase.to_string(), "Deploying");
    assert!(status.lock_holder.is_some());
    assert_eq!(status.approved_by, ["alice", "carol"]);

    // A different change waits for the rollout; a replicas-only change passes.
    let v2 = web(ns, "nginx:1.28", 1);
    assert_refused(
        &apply(User::Dave, &v2, &[])?,
        "is rolling out; one change at a time",
    );
    assert_ok(&kubectl(
        User::Dave,
        &["scale", "deployment", "web", "-n", ns, "--replicas=3"],
    )?);
    assert_eq!(approvals(ns).await?.len(), 1, "neither opened a request");
    Ok(())
}

#[tokio::test]
async fn a_secret_in_env_is_denied_by_name_without_echoing_it() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("secret", None).await?;
    let ns = ns.name();
    let _policy = Policy::apply(ns, json!({ "checks": { "secretDetection": true } }))?;
    let mut leaky = web(ns, "nginx:1.27", 1);
    let value = "AKIAZ3MSJV4WWNKWW5FC";
    leaky["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{ "name": "AWS_ACCESS_KEY_ID", "value": value }]);
    until_gated(&leaky).await?;
    let out = apply(User::Dave, &leaky, &[])?;
    assert_refused(&out, "AWS_ACCESS_KEY_ID");
    assert!(
        !text(&out).contains(value),
        "the value is echoed: {}",
        text(&out)
    );
    // The denial is an Event on the target, for whoever looks at the namespace later.
    let events = until("the denial's Event", Duration::from_secs(10), || async {
        let out = kubectl(User::Admin, &["get", "events", "-n", ns, "-o", "json"])?;
        let listed = text(&out);
        Ok(if listed.contains("\"reason\": \"Denied\"") {
            Poll::Ready(listed)
        } else {
            Poll::Pending(listed)
        })
    })
    .await?;
    assert!(
        events.contains("AWS_ACCESS_KEY_ID") && !events.contains(value),
        "{events}"
    );
    assert_ok(&apply(User::Dave, &web(ns, "nginx:1.27", 1), &[])?);
    Ok(())
}

#[tokio::test]
async fn break_glass_by_on_call_passes_and_is_audited() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("glass", None).await?;
    let ns = ns.name();
    assert_ok(&kubectl(
        User::Admin,
        &[
            "create",
            "rolebinding",
            "erin-edit",
            "--clusterrole=edit",
            "--user=erin",
            "-n",
            ns,
        ],
    )?);
    // Every level's sinks hear of a break-glass.
    let receiver = crate::support::receiver::Receiver::start().await?;
    let leads = crate::support::receiver::SinkSecret::create(&format!("{}/leads", receiver.base))?;
    let sre = crate::support::receiver::SinkSecret::create(&format!("{}/sre", receiver.base))?;
    let mut spec = two_level_chain();
    spec["breakGlass"] = json!({ "groups": ["oncall"] });
    spec["approval"]["levels"][0]["sinks"] = json!([leads.name]);
    spec["approval"]["levels"][1]["sinks"] = json!([sre.name]);
    let _policy = Policy::apply(ns, spec)?;
    let mut urgent = web(ns, "nginx:1.27-hotfix", 1);
    urgent["metadata"]["annotations"] =
        json!({ "countersign.dev/break-glass": "INC-42 checkout down" });
    // dave is not on call: break-glass does not help him.
    until_gated(&urgent).await?;
    assert_refused(&apply(User::Dave, &urgent, &[])?, "approval required");
    let out = apply(User::Erin, &urgent, &[])?;
    assert_ok(&out);
    assert!(
        text(&out).contains("break-glass recorded as AuditEntry"),
        "{}",
        text(&out)
    );
    let admin = TestCluster::get().client(User::Admin).await?;
    let entries = Api::<AuditEntry>::namespaced(admin, INSTALL_NAMESPACE)
        .list(&Default::default())
        .await?;
    let entry = entries
        .items
        .iter()
        .find(|e| e.spec.target.namespace.as_deref() == Some(ns))
        .context("a break-glass AuditEntry for the target")?;
    assert_eq!(entry.spec.action, AuditAction::BreakGlass);
    assert_eq!(entry.spec.actor.username, "erin");
    assert_eq!(entry.spec.reason.as_deref(), Some("INC-42 checkout down"));
    let entry_name = entry.metadata.name.clone().context("name")?;
    for sink in ["leads", "sre"] {
        let heard = until(
            &format!("the break-glass notice at {sink}"),
            Duration::from_secs(20),
            || async {
                // (dave's refused attempt opened a request: leads also hear level 1 open.)
                let heard: Vec<_> = receiver
                    .accepted(sink)
                    .into_iter()
                    .filter(|(event, _)| event == "BreakGlass")
                    .collect();
                Ok(if heard.is_empty() {
                    Poll::Pending("nothing yet".into())
                } else {
                    Poll::Ready(heard)
                })
            },
        )
        .await?;
        assert_eq!(heard, [("BreakGlass".to_string(), None)]);
    }
    let announced = receiver
        .posts()
        .into_iter()
        .find(|p| p.sink == "leads" && p.event == "BreakGlass")
        .context("the notice")?;
    assert_eq!(announced.body["actor"]["username"], "erin");
    assert_eq!(announced.body["reason"], "INC-42 checkout down");
    assert_eq!(announced.body["auditEntry"], json!(entry_name));
    // Recorded in the entry's status: nothing is announced twice.
    let admin = TestCluster::get().client(User::Admin).await?;
    let entries_api = Api::<AuditEntry>::namespaced(admin, INSTALL_NAMESPACE);
    until(
        "the announcements recorded",
        Duration::from_secs(20),
        || async {
            let status = entries_api
                .get(&entry_name)
                .await?
                .status
                .unwrap_or_default();
            Ok(
                if status.notifications.len() == 2
                    && status.notifications.iter().all(|n| n.delivered)
                {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!("{:?}", status.notifications))
                },
            )
        },
    )
    .await?;
    // The trail is append-only, even for the cluster admin.
    assert_refused(
        &kubectl(
            User::Admin,
            &["delete", "auditentry", &entry_name, "-n", INSTALL_NAMESPACE],
        )?,
        "deleted only by countersign's retention",
    );
    assert_refused(
        &kubectl(
            User::Admin,
            &[
                "label",
                "auditentry",
                &entry_name,
                "-n",
                INSTALL_NAMESPACE,
                "x=y",
            ],
        )?,
        "immutable",
    );
    Ok(())
}

#[tokio::test]
async fn a_freeze_denies_an_approved_change() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("freeze", None).await?;
    let ns = ns.name();
    let policy = Policy::apply(ns, two_level_chain())?;
    let v1 = web(ns, "nginx:1.27", 1);
    let name = open_request(ns, &v1).await?;
    assert_ok(&review(
        User::Alice,
        ns,
        &name,
        json!({"decision": "Approve"}),
    )?);
    assert_ok(&review(
        User::Carol,
        ns,
        &name,
        json!({"decision": "Approve"}),
    )?);
    // Now a freeze starts: no approval overrides it.
    let mut frozen = two_level_chain();
    frozen["match"]["namespaces"] = json!([ns]);
    frozen["windows"] = json!([{
        "name": "incident freeze",
        "effect": "Deny",
        "timeZone": "UTC",
        "absolute": { "start": "2020-01-01T00:00", "end": "2099-01-01T00:00" },
    }]);
    let document = json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
        "metadata": { "name": policy.name }, "spec": frozen,
    });
    assert_ok(&kubectl_stdin(
        User::Admin,
        &["apply", "-f", "-"],
        &document,
    )?);
    apply_until("the freeze to deny", &v1, &[], |out| {
        text(out).contains("incident freeze")
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_infeasible_policy_is_refused_with_the_field_named() -> Result<()> {
    Countersign::get();
    let policy = json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
        "metadata": { "name": unique_name("infeasible") },
        "spec": { "approval": { "levels": [{
            "name": "three-of-five", "minApprovals": 5,
            "approvers": [{ "user": "a" }, { "user": "b" }, { "user": "c" }],
        }] } },
    });
    let out = kubectl_stdin(User::Admin, &["apply", "-f", "-"], &policy)?;
    assert_refused(&out, "spec.approval.levels[0]");
    Ok(())
}

#[tokio::test]
async fn concurrent_applies_of_one_approved_change_consume_it_once() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("race", None).await?;
    let ns = ns.name();
    assert_ok(&apply(User::Dave, &web(ns, "nginx:1.27", 1), &[])?);
    let _policy = Policy::apply(
        ns,
        json!({ "approval": { "levels": [{ "name": "leads", "approvers": [{ "user": "alice" }] }] } }),
    )?;
    let v2 = web(ns, "nginx:1.28", 1);
    apply_until("the policy to gate the change", &v2, &[], |out| {
        text(out).contains("approval required")
    })
    .await?;
    let name = approvals(ns).await?[0]
        .metadata
        .name
        .clone()
        .context("name")?;
    assert_ok(&review(
        User::Alice,
        ns,
        &name,
        json!({"decision": "Approve"}),
    )?);

    // Watch the approval: every write of it shows up as a new resourceVersion.
    let admin = TestCluster::get().client(User::Admin).await?;
    let api = Api::<DeploymentApproval>::namespaced(admin, ns);
    let params = kube::api::WatchParams::default().fields(&format!("metadata.name={name}"));
    let before_race = api.get(&name).await?;
    let start = before_race
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    let mut events = api.watch(&params, &start).await?.boxed();

    // 100 clients, each with its own connections, apply the approved change at once with
    // server-side apply.
    let config = TestCluster::get().config(User::Dave).await?;
    let body = serde_json::to_vec(&v2)?;
    let mut racers = Vec::new();
    for _ in 0..100 {
        let client = kube::Client::try_from(config.clone())?;
        let request = http::Request::patch(format!(
            "/apis/apps/v1/namespaces/{ns}/deployments/web?fieldManager=racer&force=true"
        ))
        .header("Content-Type", "application/apply-patch+yaml")
        .body(kube::client::Body::from(body.clone()))?;
        racers.push(tokio::spawn(async move {
            let response = client.send(request).await?;
            let status = response.status();
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await?
                .to_bytes();
            anyhow::Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
        }));
    }
    let mut admitted = 0;
    for racer in racers {
        let (status, body) = racer.await??;
        admitted += usize::from(status.is_success());
        assert!(
            status.is_success() || body.contains("retry"),
            "neither admitted nor told to retry: {status} {body}"
        );
    }
    assert!(admitted >= 1, "the approved change was admitted");
    // Exactly one write moved the approval to Deploying (the operator may write its
    // rollout's progress after it).
    let mut deploying_writes = 0;
    let mut last_phase = None;
    let quiet = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(quiet);
    loop {
        tokio::select! {
            _ = &mut quiet => break,
            event = events.try_next() => match event? {
                Some(kube::api::WatchEvent::Modified(approval)) => {
                    let phase = approval.status.map(|s| s.phase.to_string());
                    let entered = phase.as_deref() == Some("Deploying") && last_phase != phase;
                    deploying_writes += usize::from(entered);
                    last_phase = phase;
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    assert_eq!(
        deploying_writes, 1,
        "exactly one admission consumes the approval"
    );
    // A status write over the version read before the race is refused: the server-side
    // apply carries that resourceVersion as its precondition.
    let own = crate::support::countersign::own_client().await?;
    let mut stale_status = before_race.status.clone().unwrap_or_default();
    stale_status.lock_holder = Some("a-stale-replica".into());
    match countersign::cluster::status::apply_status(&own, &before_race, &stale_status).await {
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        other => anyhow::bail!("a stale status write must conflict, got {other:?}"),
    }
    let all = approvals(ns).await?;
    assert_eq!(all.len(), 1, "no second request was opened");
    assert_eq!(
        all[0]
            .status
            .as_ref()
            .map(|s| s.phase.to_string())
            .as_deref(),
        Some("Deploying")
    );
    Ok(())
}

/// POST `body` to the webhook's `path` as the API server would; (HTTP status, body).
fn post(path: &str, body: &[u8]) -> Result<(u16, String)> {
    post_review(Countersign::get().port, path, body, Presenting::ApiServer)
}

#[tokio::test]
async fn malformed_bodies_get_400_and_the_server_keeps_serving() -> Result<()> {
    Countersign::get();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "7c2d", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "web", "namespace": "default", "operation": "CREATE",
            "userInfo": {"username": "dave"},
            "object": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": "not a map"}},
        },
    })
    .to_string();
    for (what, body, status) in [
        ("not JSON", b"hello".to_vec(), 400),
        (
            "truncated",
            review.as_bytes()[..review.len() / 2].to_vec(),
            400,
        ),
        (
            "no request",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            400,
        ),
        ("JSON of the wrong shape", b"[1,2,3]".to_vec(), 400),
        ("too large", vec![b' '; 3 * 1024 * 1024 + 1], 413),
    ] {
        let (code, answer) = post("/validate/workloads", &body)?;
        assert_eq!(code, status, "{what}: {answer}");
    }
    // An envelope it can read around an object it cannot: denied under the review's uid.
    let (code, answer) = post("/validate/workloads", review.as_bytes())?;
    assert_eq!(code, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer)?;
    assert_eq!(answer["response"]["uid"], "7c2d");
    assert_eq!(answer["response"]["allowed"], false);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot decode")
    );
    // Still serving, and counting.
    assert_eq!(post("/validate/policies", b"{}")?.0, 400);
    let metrics = Command::new("curl")
        .args([
            "-sk",
            &format!("https://127.0.0.1:{}/metrics", Countersign::get().port),
        ])
        .output()?;
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    for family in [
        "countersign_admission_reviews_total{",
        "verdict=\"BadRequest\"",
        "countersign_admission_decision_seconds_bucket",
        "countersign_cache_objects{cache=\"deploymentapprovals\"}",
    ] {
        assert!(
            metrics.contains(family),
            "/metrics lacks {family}: {metrics}"
        );
    }
    let health = Command::new("curl")
        .args([
            "-sk",
            &format!("https://127.0.0.1:{}/healthz", Countersign::get().port),
        ])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&health.stdout), "ok");
    Ok(())
}

#[tokio::test]
async fn a_request_made_by_hand_must_be_honest() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("forged", None).await?;
    let ns = ns.name();
    let _policy = Policy::apply(ns, two_level_chain())?;
    until_gated(&web(ns, "nginx:1.27", 1)).await?;
    assert_refused(
        &apply(User::Dave, &web(ns, "nginx:1.27", 1), &[])?,
        "approval required",
    );
    let mut genuine = serde_json::to_value(approvals(ns).await?.remove(0))?;
    for field in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "managedFields",
    ] {
        genuine["metadata"].as_object_mut().map(|m| m.remove(field));
    }
    genuine.as_object_mut().map(|o| o.remove("status"));
    genuine["metadata"]["namespace"] = json!(ns);
    let now = jiff::Timestamp::now().to_string();
    // The cluster admin has every RBAC right; the webhook still refuses forged requests.
    let forge = |name: &str, edit: &dyn Fn(&mut Value)| -> Result<Output> {
        let mut forged = genuine.clone();
        forged["metadata"]["name"] = json!(name);
        forged["spec"]["change"]["requestedAt"] = json!(now);
        edit(&mut forged);
        kubectl_stdin(User::Admin, &["create", "-f", "-"], &forged)
    };
    let pre_approved = |o: &mut Value| {
        o["spec"]["reviews"] = json!([{ "user": "alice", "decision": "Approve", "time": now }]);
    };
    assert_refused(
        &forge("web-x1", &pre_approved)?,
        "spec.reviews must be empty",
    );
    assert_refused(
        &forge("web-x2", &|_: &mut Value| {})?,
        "but the request was made by \"admin\"",
    );
    Ok(())
}

#[tokio::test]
async fn a_rejected_change_stays_denied_and_an_expired_request_is_opened_afresh() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("ends", None).await?;
    let ns = ns.name();
    let mut chain = two_level_chain();
    chain["approval"]["requestTTL"] = json!("4s");
    let _policy = Policy::apply(ns, chain)?;

    // Rejected: denied with who and why, and how to ask again; no new request.
    let v1 = web(ns, "nginx:1.27", 1);
    let rejected = open_request(ns, &v1).await?;
    // Level 1 approves; carol, at level 2, rejects.
    assert_ok(&review(
        User::Alice,
        ns,
        &rejected,
        json!({"decision": "Approve"}),
    )?);
    status_until(ns, &rejected, "level 2 open", |s| {
        s.current_level == Some(2)
    })
    .await?;
    assert_ok(&review(
        User::Carol,
        ns,
        &rejected,
        json!({"decision": "Reject", "comment": "not during the sale"}),
    )?);
    let out = apply_until("the rejection to be seen", &v1, &[], |out| {
        text(out).contains("was rejected by carol")
    })
    .await?;
    assert_refused(&out, "not during the sale");
    assert_refused(&out, "request --again");
    assert_eq!(
        approvals(ns).await?.len(),
        1,
        "a rejection is not re-requested"
    );
    assert_refused(
        &review(User::Alice, ns, &rejected, json!({"decision": "Approve"}))?,
        "reviews are closed",
    );

    // Expired: the next attempt opens a fresh request; the expired one stays.
    let v2 = web(ns, "nginx:1.28", 1);
    assert_refused(&apply(User::Dave, &v2, &[])?, "approval required");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let out = apply(User::Dave, &v2, &[])?;
    assert_refused(&out, "expired");
    let names: Vec<String> = approvals(ns)
        .await?
        .iter()
        .filter_map(|a| a.metadata.name.clone())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("-2")), "{names:?}");
    Ok(())
}

#[tokio::test]
async fn the_operator_keeps_status_true_and_expires_requests_on_time() -> Result<()> {
    use countersign::api::ApprovalPhase;
    Countersign::get();
    let ns = TestNamespace::create("status", None).await?;
    let ns = ns.name();
    let mut chain = two_level_chain();
    chain["approval"]["requestTTL"] = json!("6s");
    chain["approval"]["approvalTTL"] = json!("1h");
    let _policy = Policy::apply(ns, chain)?;

    until_gated(&web(ns, "nginx:1.27", 1)).await?;
    assert_refused(
        &apply(User::Dave, &web(ns, "nginx:1.27", 1), &[])?,
        "approval required",
    );
    let name = approvals(ns).await?[0]
        .metadata
        .name
        .clone()
        .context("name")?;
    let pending = status_until(ns, &name, "Pending at level 1", |s| {
        s.phase == ApprovalPhase::Pending && s.current_level == Some(1)
    })
    .await?;
    assert_eq!(pending.levels.len(), 2);
    assert!(pending.expires_at.is_some());
    assert_ok(&review(
        User::Alice,
        ns,
        &name,
        json!({"decision": "Approve"}),
    )?);
    let second = status_until(ns, &name, "level 2 open", |s| s.current_level == Some(2)).await?;
    assert!(second.levels[0].satisfied && second.levels[0].approved_by == ["alice"]);
    assert_ok(&review(
        User::Carol,
        ns,
        &name,
        json!({"decision": "Approve"}),
    )?);
    let approved = status_until(ns, &name, "Approved", |s| {
        s.phase == ApprovalPhase::Approved
    })
    .await?;
    assert_eq!(approved.approved_by, ["alice", "carol"]);
    assert!(approved.current_level.is_none() && approved.approved_at.is_some());

    // Applied and admitted: the trail holds every step, each by its real actor, once.
    let v1 = web(ns, "nginx:1.27", 1);
    apply_until("the approved change to be admitted", &v1, &[], |out| {
        out.status.success()
    })
    .await?;
    let expected = [
        ("requested", AuditAction::Requested, "dave"),
        ("review-0", AuditAction::ReviewRecorded, "alice"),
        ("review-1", AuditAction::ReviewRecorded, "carol"),
        ("level-1", AuditAction::LevelSatisfied, "alice"),
        ("level-2", AuditAction::LevelSatisfied, "carol"),
        ("approved", AuditAction::Approved, "carol"),
        ("admitted", AuditAction::Admitted, "dave"),
    ];
    let admin = TestCluster::get().client(User::Admin).await?;
    let entries_api = Api::<AuditEntry>::namespaced(admin, INSTALL_NAMESPACE);
    let trail = until("the audit trail", Duration::from_secs(20), || async {
        let mine: Vec<AuditEntry> = entries_api
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter(|e| {
                e.spec.approval.as_deref() == Some(name.as_str())
                    && e.spec.target.namespace.as_deref() == Some(ns)
            })
            .collect();
        Ok(if mine.len() >= expected.len() {
            Poll::Ready(mine)
        } else {
            Poll::Pending(format!("{} entries", mine.len()))
        })
    })
    .await?;
    assert_eq!(trail.len(), expected.len(), "no entry twice");
    for (step, action, actor) in expected {
        let entry = trail
            .iter()
            .find(|e| {
                e.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.ends_with(&format!("-{step}")))
            })
            .with_context(|| format!("no {step} entry"))?;
        assert_eq!(entry.spec.action, action, "{step}");
        assert_eq!(entry.spec.actor.username, actor, "{step}");
        assert_eq!(entry.spec.target.name, "web");
    }

    // An unreviewed request (of another Deployment: web is rolling out) expires when its
    // requestTTL runs out: not before, and promptly after (the operator comes back for the
    // deadline instead of polling).
    let mut api_server = web(ns, "nginx:1.28", 1);
    api_server["metadata"]["name"] = json!("api");
    assert_refused(&apply(User::Dave, &api_server, &[])?, "approval required");
    let all = approvals(ns).await?;
    let lapsing = all
        .iter()
        .find(|a| a.metadata.name.as_deref() != Some(name.as_str()))
        .context("the second request")?;
    let lapsing_name = lapsing.metadata.name.clone().context("name")?;
    let deadline = lapsing.spec.change.requested_at.0 + jiff::SignedDuration::from_secs(6);
    status_until(ns, &lapsing_name, "Expired", |s| {
        s.phase == ApprovalPhase::Expired
    })
    .await?;
    let seen = jiff::Timestamp::now();
    let expired_entry = until(
        "the expiry's AuditEntry",
        Duration::from_secs(10),
        || async {
            let found = entries_api
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .find(|e| {
                    e.spec.approval.as_deref() == Some(lapsing_name.as_str())
                        && e.spec.action == AuditAction::Expired
                });
            Ok(match found {
                Some(entry) => Poll::Ready(entry),
                None => Poll::Pending("none yet".into()),
            })
        },
    )
    .await?;
    assert_eq!(expired_entry.spec.actor.username, "system:countersign");
    assert!(seen >= deadline, "expired before its deadline");
    assert!(
        seen.duration_since(deadline) < jiff::SignedDuration::from_secs(4),
        "expired {} after its deadline",
        seen.duration_since(deadline)
    );
    Ok(())
}

/// A policy the operator reports Ready judges the very next change: `kubectl wait
/// --for=condition=Ready` is all a user needs before deploying (the demo once deployed in
/// the moment between the policy's write and the webhook's cache, and was admitted).
#[tokio::test]
async fn a_policy_reported_ready_judges_the_next_change() -> Result<()> {
    Countersign::get();
    for _ in 0..5 {
        let ns = TestNamespace::create("ready", None).await?;
        let ns = ns.name();
        let policy = Policy::apply(ns, two_level_chain())?;
        let resource = format!("approvalpolicy/{}", policy.name);
        assert_ok(&kubectl(
            User::Admin,
            &["wait", "--for=condition=Ready", &resource, "--timeout=30s"],
        )?);
        let first = apply(User::Dave, &web(ns, "nginx:1.27", 1), &[])?;
        assert_refused(&first, "approval required by policy");
    }
    Ok(())
}
