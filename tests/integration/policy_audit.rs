//! Policy changes in the audit trail (SPEC §7) and in the policy's status (SPEC §11), on
//! the real control plane: the entry names the real author, once per generation, and a
//! metadata edit cannot rewrite who made the spec.

use std::time::Duration;

use anyhow::{Context, Result};
use countersign::api::{ACTION_LABEL, ApprovalPolicy, AuditAction, AuditEntry, entry_labels};
use countersign::core::policy::authorship::{CHANGED_BY_ANNOTATION, PolicyChange};
use kube::Api;
use serde_json::json;

use crate::support::countersign::{Countersign, INSTALL_NAMESPACE};
use crate::support::flow::{assert_ok, kubectl, kubectl_stdin, text};
use crate::support::namespace::unique_name;
use crate::support::wait::{Poll, until};
use crate::support::{TestCluster, User};

/// erin may edit policies for the length of a test.
struct PolicyEditor {
    name: String,
}

impl PolicyEditor {
    fn grant(user: &str) -> Result<PolicyEditor> {
        let name = unique_name("policy-editor");
        let objects = json!({
            "apiVersion": "v1", "kind": "List", "items": [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": { "name": name },
                    "rules": [{ "apiGroups": ["countersign.dev"], "resources": ["approvalpolicies"],
                                "verbs": ["get", "list", "create", "update", "patch", "delete"] }],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": { "name": name },
                    "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
                    "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
                },
            ],
        });
        assert_ok(&kubectl_stdin(
            User::Admin,
            &["apply", "-f", "-"],
            &objects,
        )?);
        Ok(PolicyEditor { name })
    }
}

impl Drop for PolicyEditor {
    fn drop(&mut self) {
        for kind in ["clusterrolebinding", "clusterrole"] {
            let _ = kubectl(
                User::Admin,
                &["delete", kind, &self.name, "--ignore-not-found"],
            );
        }
    }
}

fn stamped_author(policy: &ApprovalPolicy) -> Option<String> {
    policy
        .metadata
        .annotations
        .as_ref()?
        .get(CHANGED_BY_ANNOTATION)
        .and_then(|text| serde_json::from_str::<PolicyChange>(text).ok())
        .map(|change| change.username)
}

async fn entry(name: &str) -> Result<AuditEntry> {
    let admin = TestCluster::get().client(User::Admin).await?;
    let api = Api::<AuditEntry>::namespaced(admin, INSTALL_NAMESPACE);
    until(
        &format!("AuditEntry {name}"),
        Duration::from_secs(20),
        || async {
            Ok(match api.get_opt(name).await? {
                Some(entry) => Poll::Ready(entry),
                None => Poll::Pending("not there".into()),
            })
        },
    )
    .await
}

#[tokio::test]
async fn policy_changes_are_audited_with_their_real_author() -> Result<()> {
    Countersign::get();
    let _editor = PolicyEditor::grant("erin")?;
    let name = unique_name("audited-policy");
    let mut policy = json!({
        "apiVersion": "countersign.dev/v1alpha1",
        "kind": "ApprovalPolicy",
        "metadata": { "name": name },
        "spec": {
            "match": { "namespaces": [unique_name("nowhere")] },
            "approval": { "levels": [{ "name": "leads", "approvers": [{ "user": "alice" }] }] },
        },
    });
    // erin creates it (a forged stamp in her manifest is replaced by her own).
    policy["metadata"]["annotations"] = json!({
        CHANGED_BY_ANNOTATION: r#"{"username":"bob","groups":[],"time":"2020-01-01T00:00:00Z"}"#,
    });
    let created = kubectl_stdin(User::Erin, &["create", "-f", "-"], &policy)?;
    assert_ok(&created);
    let _cleanup = scopeguard(name.clone());
    let admin = TestCluster::get().client(User::Admin).await?;
    let api = Api::<ApprovalPolicy>::all(admin);
    let stored = api.get(&name).await?;
    assert_eq!(stamped_author(&stored).as_deref(), Some("erin"));
    let uid8: String = stored
        .metadata
        .uid
        .as_deref()
        .context("uid")?
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    let first = entry(&format!("policy-{name}-{uid8}-1")).await?;
    assert_eq!(first.spec.action, AuditAction::PolicyCreated);
    assert_eq!(first.spec.actor.username, "erin");

    // The operator reports it in force.
    until(
        "the policy's Ready condition",
        Duration::from_secs(20),
        || async {
            let status = api.get(&name).await?.status.unwrap_or_default();
            Ok(
                match status.conditions.iter().find(|c| c.type_ == "Ready") {
                    Some(ready)
                        if ready.status == "True" && status.observed_generation == Some(1) =>
                    {
                        Poll::Ready(())
                    }
                    other => Poll::Pending(format!("{other:?}")),
                },
            )
        },
    )
    .await?;

    // The admin changes the spec: a second entry, by the admin.
    let patch = json!({ "spec": { "priority": 5 } }).to_string();
    assert_ok(&kubectl(
        User::Admin,
        &[
            "patch",
            "approvalpolicy",
            &name,
            "--type=merge",
            "-p",
            &patch,
        ],
    )?);
    let second = entry(&format!("policy-{name}-{uid8}-2")).await?;
    assert_eq!(second.spec.action, AuditAction::PolicyChanged);
    assert_eq!(second.spec.actor.username, "admin");
    assert_ne!(second.spec.change_digest, first.spec.change_digest);

    // erin edits only a label and tries to put the change in bob's name: the stamp stays
    // the admin's, and no entry is written for a write that left the spec alone.
    let forged = json!({
        "metadata": {
            "labels": { "team": "platform" },
            "annotations": { CHANGED_BY_ANNOTATION: r#"{"username":"bob","groups":[],"time":"2026-01-01T00:00:00Z"}"# },
        },
    })
    .to_string();
    let out = kubectl(
        User::Erin,
        &[
            "patch",
            "approvalpolicy",
            &name,
            "--type=merge",
            "-p",
            &forged,
        ],
    )?;
    assert_ok(&out);
    let after = api.get(&name).await?;
    assert_eq!(
        stamped_author(&after).as_deref(),
        Some("admin"),
        "{}",
        text(&out)
    );
    assert_eq!(after.metadata.generation, Some(2));
    Ok(())
}

/// The webhook and the operator write entries through one writer, which labels them with
/// one function (`api::entry_labels`): the break-glass entry the webhook plans for a
/// policy's spec change is labelled like the operator's entries and is announced to the
/// policy's sinks (it once got no action label and was never announced).
#[tokio::test]
async fn a_policy_change_by_break_glass_is_labelled_like_every_entry_and_announced() -> Result<()> {
    Countersign::get();
    let _editor = PolicyEditor::grant("erin")?;
    let receiver = crate::support::receiver::Receiver::start().await?;
    let leads = crate::support::receiver::SinkSecret::create(&format!("{}/leads", receiver.base))?;
    let name = unique_name("glass-policy");
    let policy = json!({
        "apiVersion": "countersign.dev/v1alpha1",
        "kind": "ApprovalPolicy",
        "metadata": { "name": name },
        "spec": {
            "match": { "namespaces": [unique_name("nowhere")] },
            "tamperProtection": "Refuse",
            "breakGlass": { "groups": ["oncall"] },
            "approval": { "levels": [{
                "name": "leads", "approvers": [{ "user": "alice" }], "sinks": [leads.name],
            }] },
        },
    });
    assert_ok(&kubectl_stdin(
        User::Admin,
        &["create", "-f", "-"],
        &policy,
    )?);
    let _cleanup = scopeguard(name.clone());
    let admin = TestCluster::get().client(User::Admin).await?;
    let stored = Api::<ApprovalPolicy>::all(admin.clone()).get(&name).await?;
    let uid8: String = stored
        .metadata
        .uid
        .as_deref()
        .context("uid")?
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    // The operator's entry of the creation.
    let created = entry(&format!("policy-{name}-{uid8}-1")).await?;
    assert_eq!(created.spec.action, AuditAction::PolicyCreated);

    // erin is on call: her spec change passes the tamper protection as break-glass, and
    // the webhook records it before the change is admitted.
    let patch = json!({ "spec": { "priority": 7 } }).to_string();
    let out = kubectl(
        User::Erin,
        &[
            "patch",
            "approvalpolicy",
            &name,
            "--type=merge",
            "-p",
            &patch,
        ],
    )?;
    assert_ok(&out);
    assert!(
        text(&out).contains("recorded as AuditEntry"),
        "{}",
        text(&out)
    );
    let glass = entry(&format!("policy-{name}-{uid8}-2-break-glass")).await?;
    assert_eq!(glass.spec.action, AuditAction::BreakGlass);
    assert_eq!(glass.spec.actor.username, "erin");

    // One labelling for both writers, from the entry's own spec.
    for written in [&created, &glass] {
        assert_eq!(
            written.metadata.labels.clone().unwrap_or_default(),
            entry_labels(&written.spec),
            "{:?}",
            written.metadata.name
        );
    }
    assert_eq!(
        glass
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ACTION_LABEL))
            .map(String::as_str),
        Some("BreakGlass")
    );

    // Announced to the policy's sinks, and the delivery recorded on the entry.
    let heard = until(
        "the break-glass notice at leads",
        Duration::from_secs(20),
        || async {
            let heard: Vec<_> = receiver
                .posts()
                .into_iter()
                .filter(|p| p.sink == "leads" && p.event == "BreakGlass")
                .collect();
            Ok(if heard.is_empty() {
                Poll::Pending("nothing yet".into())
            } else {
                Poll::Ready(heard)
            })
        },
    )
    .await?;
    assert_eq!(heard[0].body["actor"]["username"], "erin");
    let entries = Api::<AuditEntry>::namespaced(admin, INSTALL_NAMESPACE);
    let glass_name = glass.metadata.name.clone().context("name")?;
    until(
        "the delivery on the entry",
        Duration::from_secs(20),
        || async {
            let status = entries.get(&glass_name).await?.status.unwrap_or_default();
            Ok(if status.notifications.iter().any(|n| n.delivered) {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("{:?}", status.notifications))
            })
        },
    )
    .await?;
    Ok(())
}

/// Deletes the policy when the test ends, however it ends.
fn scopeguard(name: String) -> impl Drop {
    struct Delete(String);
    impl Drop for Delete {
        fn drop(&mut self) {
            let _ = kubectl(
                User::Admin,
                &["delete", "approvalpolicy", &self.0, "--ignore-not-found"],
            );
        }
    }
    Delete(name)
}
