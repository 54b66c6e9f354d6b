//! The steps of a gated change as the test cluster's people take them: policies that live
//! for one test, applies by dave, reviews by the approvers, and waits for the status the
//! operator writes.

use std::process::Output;
use std::time::Duration;

use anyhow::Result;
use countersign::api::DeploymentApproval;
use kube::Api;
use serde_json::{Value, json};

use super::namespace::unique_name;
use super::wait::{Poll, until};
use super::{TestCluster, User};

/// A cluster-scoped ApprovalPolicy that exists for one test.
pub struct Policy {
    pub name: String,
}

impl Policy {
    /// Applies `spec` as a policy that matches only `namespace`.
    pub fn apply(namespace: &str, mut spec: Value) -> Result<Policy> {
        let name = unique_name("policy");
        spec["match"]["namespaces"] = json!([namespace]);
        let policy = json!({
            "apiVersion": "countersign.dev/v1alpha1",
            "kind": "ApprovalPolicy",
            "metadata": { "name": name },
            "spec": spec,
        });
        let out = kubectl_stdin(User::Admin, &["apply", "-f", "-"], &policy)?;
        anyhow::ensure!(out.status.success(), "applying policy: {}", text(&out));
        Ok(Policy { name })
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = TestCluster::get()
            .kubectl(User::Admin)
            .args(["delete", "approvalpolicy", &self.name, "--ignore-not-found"])
            .output();
    }
}

/// `countersign ARGS` (the built binary) as `user` (its kubeconfig context), in `namespace`.
pub fn countersign(user: User, namespace: &str, args: &[&str]) -> Result<Output> {
    Ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(args)
            .arg("--kubeconfig")
            .arg(TestCluster::get().kubeconfig())
            .args(["--context", user.name(), "-n", namespace])
            .output()?,
    )
}

/// What a command printed on its standard output.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn kubectl_stdin(user: User, args: &[&str], document: &Value) -> Result<Output> {
    TestCluster::get().kubectl_output(user, args, Some(document.to_string().as_bytes()))
}

pub fn kubectl(user: User, args: &[&str]) -> Result<Output> {
    TestCluster::get().kubectl_output(user, args, None)
}

/// Deployment `web`, whose pods are never scheduled (no node has the label it selects): an
/// admitted change stays `Deploying`, holding the one-change lock, for the tests of the
/// gate itself. `rolling_web` is one that rolls out.
pub fn web(namespace: &str, image: &str, replicas: i32) -> Value {
    let mut web = rolling_web(namespace, image, replicas);
    web["spec"]["template"]["spec"]["nodeSelector"] =
        json!({ "countersign.dev/test-node": "none" });
    web
}

/// Deployment `web`, which the kwok nodes roll out.
pub fn rolling_web(namespace: &str, image: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "namespace": namespace },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": image }] },
            },
        },
    })
}

pub fn apply(user: User, object: &Value, extra: &[&str]) -> Result<Output> {
    let mut args = vec!["apply", "-f", "-"];
    args.extend_from_slice(extra);
    kubectl_stdin(user, &args, object)
}

/// Applies `object` as dave (with `extra` flags) until `done` holds for the outcome (the
/// webhook's caches catch up within moments); returns that outcome.
pub async fn apply_until(
    what: &str,
    object: &Value,
    extra: &[&str],
    done: impl Fn(&Output) -> bool,
) -> Result<Output> {
    until(what, Duration::from_secs(20), || async {
        let out = apply(User::Dave, object, extra)?;
        Ok(if done(&out) {
            Poll::Ready(out)
        } else {
            Poll::Pending(text(&out))
        })
    })
    .await
}

/// Waits until the webhook judges with a policy applied a moment ago: a server-side dry run
/// of `object` by dave (no side effects) is refused.
pub async fn until_gated(object: &Value) -> Result<()> {
    apply_until(
        "the policy to take effect",
        object,
        &["--dry-run=server"],
        |out| !out.status.success(),
    )
    .await
    .map(|_| ())
}

pub async fn approvals(namespace: &str) -> Result<Vec<DeploymentApproval>> {
    let admin = TestCluster::get().client(User::Admin).await?;
    Ok(Api::<DeploymentApproval>::namespaced(admin, namespace)
        .list(&Default::default())
        .await?
        .items)
}

/// The ChangeSets in `namespace`.
pub async fn change_sets(namespace: &str) -> Result<Vec<countersign::api::ChangeSet>> {
    let admin = TestCluster::get().client(User::Admin).await?;
    Ok(
        Api::<countersign::api::ChangeSet>::namespaced(admin, namespace)
            .list(&Default::default())
            .await?
            .items,
    )
}

/// Append a review to change set `set`, as `kubectl patch --type=json` users do.
pub fn review_set(user: User, namespace: &str, set: &str, review: Value) -> Result<Output> {
    let patch = json!([{ "op": "add", "path": "/spec/reviews/-", "value": review }]).to_string();
    kubectl(
        user,
        &[
            "patch",
            "changeset",
            set,
            "-n",
            namespace,
            "--type=json",
            "-p",
            &patch,
        ],
    )
}

/// Patch a DeploymentApproval with JSON Patch `operations`, as `kubectl patch --type=json`
/// users do.
pub fn patch_approval(
    user: User,
    namespace: &str,
    approval: &str,
    operations: Value,
) -> Result<Output> {
    let patch = operations.to_string();
    kubectl(
        user,
        &[
            "patch",
            "deploymentapproval",
            approval,
            "-n",
            namespace,
            "--type=json",
            "-p",
            &patch,
        ],
    )
}

/// Append a review.
pub fn review(user: User, namespace: &str, approval: &str, review: Value) -> Result<Output> {
    patch_approval(
        user,
        namespace,
        approval,
        json!([{ "op": "add", "path": "/spec/reviews/-", "value": review }]),
    )
}

pub fn assert_refused(out: &Output, needle: &str) {
    let said = text(out);
    assert!(
        !out.status.success(),
        "expected a refusal containing {needle:?}, got success: {said}"
    );
    assert!(said.contains(needle), "expected {needle:?} in: {said}");
}

pub fn assert_ok(out: &Output) {
    assert!(out.status.success(), "expected success: {}", text(out));
}

/// Two levels: any team lead, then carol.
pub fn two_level_chain() -> Value {
    json!({
        "approval": {
            "levels": [
                { "name": "leads", "approvers": [{ "group": "team-leads" }] },
                { "name": "sre", "approvers": [{ "user": "carol" }] },
            ],
        },
    })
}

/// Waits until approval `name`'s status satisfies `done`; returns it.
pub async fn status_until(
    ns: &str,
    name: &str,
    what: &str,
    done: impl Fn(&countersign::api::DeploymentApprovalStatus) -> bool,
) -> Result<countersign::api::DeploymentApprovalStatus> {
    let admin = TestCluster::get().client(User::Admin).await?;
    let api = Api::<DeploymentApproval>::namespaced(admin, ns);
    until(what, Duration::from_secs(40), || async {
        let status = api.get(name).await?.status.unwrap_or_default();
        Ok(if done(&status) {
            Poll::Ready(status)
        } else {
            Poll::Pending(format!("{status:?}"))
        })
    })
    .await
}

/// dave applies `object` once the policy gates it: refused, which opens its request; the
/// request's name, as the denial names it.
pub async fn open_request(_ns: &str, object: &Value) -> Result<String> {
    until_gated(object).await?;
    let out = apply(User::Dave, object, &[])?;
    assert_refused(&out, "approval required");
    let said = text(&out);
    said.split("kubectl countersign approve ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("the denial names no request: {said}"))
}

/// Waits until an AuditEntry for which `matches` holds is in the trail; returns it.
pub async fn audit_entry_until(
    what: &str,
    matches: impl Fn(&countersign::api::AuditEntry) -> bool,
) -> Result<countersign::api::AuditEntry> {
    let admin = TestCluster::get().client(User::Admin).await?;
    let entries = Api::<countersign::api::AuditEntry>::namespaced(
        admin,
        super::countersign::INSTALL_NAMESPACE,
    );
    until(what, Duration::from_secs(10), || async {
        let found = entries
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .find(|e| matches(e));
        Ok(match found {
            Some(entry) => Poll::Ready(entry),
            None => Poll::Pending("not yet".into()),
        })
    })
    .await
}
