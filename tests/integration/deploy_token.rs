//! The scoped deploy token (SPEC §8) on the real control plane, issued and revoked by
//! `operator::grants` with exactly countersign's RBAC: with it a client changes exactly the
//! approved target and nothing else, the API server refuses it once revoked, and a deleted
//! request takes its token's objects along. `countersign serve --local` runs (requests and
//! their status are written as countersign's own identity, which its webhook requires), but
//! no policy matches these namespaces: what the token may do is RBAC's doing alone.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use countersign::api::{ApprovalPhase, DeployTokenStatus, DeploymentApproval};
use countersign::core::rollout::token::{
    GrantAction, NAMESPACE_KEY, RevokeReason, TOKEN_KEY, TOKEN_VERBS, names, plan_grant,
};
use countersign::install::rbac;
use countersign::operator::grants;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::{Api, Client, Error, ResourceExt};
use serde_json::json;

use crate::support::countersign::own_client;
use crate::support::crds::apply_crds;
use crate::support::namespace::unique_name;
use crate::support::objects;
use crate::support::wait::{Poll, until};
use crate::support::{TestCluster, TestNamespace, User};

fn code<T>(result: &Result<T, Error>) -> Option<u16> {
    match result {
        Ok(_) => None,
        Err(Error::Api(status)) => Some(status.code),
        Err(_) => Some(0),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The CRDs, and Deployments `web` and `other` in `namespace` (admin).
async fn setup(namespace: &str) -> Result<Client> {
    let admin = TestCluster::get().client(User::Admin).await?;
    apply_crds(&admin, &Path::new(env!("CARGO_MANIFEST_DIR")).join("crds")).await?;
    let deployments = Api::<Deployment>::namespaced(admin.clone(), namespace);
    for name in ["web", "other"] {
        deployments
            .create(
                &PostParams::default(),
                &objects::deployment(name, "nginx:1.27", 1)?,
            )
            .await
            .with_context(|| format!("creating Deployment {name}"))?;
    }
    Ok(admin)
}

/// A client with exactly countersign's rights in `namespace`: a ServiceAccount bound there to
/// the ClusterRole `countersign` of `src/install/rbac.rs`, applied as local mode applies it.
async fn countersign_client(admin: &Client, namespace: &str) -> Result<Client> {
    let own = rbac::cluster_roles()
        .into_iter()
        .find(|r| r.metadata.name.as_deref() == Some(rbac::OWN_ROLE))
        .context("countersign's ClusterRole")?;
    Api::<ClusterRole>::all(admin.clone())
        .patch(
            rbac::OWN_ROLE,
            &PatchParams::apply("countersign-local").force(),
            &Patch::Apply(&own),
        )
        .await
        .context("applying countersign's ClusterRole")?;
    let account: ServiceAccount = serde_json::from_value(json!({
        "metadata": { "name": "countersign-under-test" },
    }))?;
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), namespace);
    accounts.create(&PostParams::default(), &account).await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "countersign-under-test" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rbac::OWN_ROLE },
        "subjects": [{ "kind": "ServiceAccount", "name": "countersign-under-test", "namespace": namespace }],
    }))?;
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await?;
    let request = serde_json::from_value(json!({ "spec": { "expirationSeconds": 3600 } }))?;
    let token = accounts
        .create_token_request("countersign-under-test", &PostParams::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .context("no token for countersign-under-test")?;
    token_client(&token).await
}

async fn token_client(token: &str) -> Result<Client> {
    let config = TestCluster::get().config_with_token(token).await?;
    Ok(Client::try_from(config)?)
}

/// Create the request `name` for Deployment `web`, as the operator would find it once
/// approved: phase `Approved`; returned with a grant of 15 minutes. The grant is in the
/// returned object only: `serve`'s operator runs in this cluster too, and must not issue a
/// token of its own for these requests while the test drives `operator::grants` itself. Written as countersign (`own`):
/// its webhook lets only countersign open a request unchecked and write status. (The running
/// operator finds no reviews and sets it back to `Pending`, so it never issues a token of
/// its own here; the test plans with the object returned.)
async fn approved_request(own: &Client, namespace: &str, name: &str) -> Result<DeploymentApproval> {
    let approval: DeploymentApproval = serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1",
        "kind": "DeploymentApproval",
        "metadata": { "name": name },
        "spec": {
            "target": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" },
            "change": {
                "digest": format!("sha256:{}", "ab".repeat(32)),
                "summary": { "text": "image web nginx:1.27 → nginx:1.28" },
                "requester": { "username": "dave", "groups": ["developers"] },
                "operation": "UPDATE",
                "requestedAt": Timestamp::now().to_string(),
            },
            "policy": {
                "name": "prod",
                "chain": { "levels": [{ "name": "leads", "approvers": [{ "user": "alice" }] }] },
            },
        },
    }))?;
    let api = Api::<DeploymentApproval>::namespaced(own.clone(), namespace);
    api.create(&PostParams::default(), &approval)
        .await
        .context("creating the request")?;
    let mut approved = set_status(own, namespace, name, json!({ "phase": "Approved" })).await?;
    approved.spec.policy.grant = Some(countersign::api::GrantSettings {
        ttl: Some("15m".into()),
    });
    Ok(approved)
}

/// Merge `status` into the request's status, as countersign (`own`).
async fn set_status(
    own: &Client,
    namespace: &str,
    name: &str,
    status: serde_json::Value,
) -> Result<DeploymentApproval> {
    Api::<DeploymentApproval>::namespaced(own.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .context("writing the request's status")
}

/// What the operator does for an `Approved` request with a grant: plan, then issue.
async fn issue_as_planned(
    countersign: &Client,
    approval: &DeploymentApproval,
) -> Result<DeployTokenStatus> {
    let now = Timestamp::now();
    let plan = plan_grant(approval, now);
    let GrantAction::Issue { ttl } = plan.action else {
        anyhow::bail!("expected an Issue plan, got {plan:?}");
    };
    ensure!(ttl == SignedDuration::from_mins(15), "{ttl:?}");
    Ok(grants::issue(countersign, approval, ttl, now).await?)
}

/// The token in the request's Secret, read as an administrator (or a pipeline with read
/// access to Secrets in the namespace) would.
async fn token_in_secret(admin: &Client, namespace: &str, name: &str) -> Result<String> {
    let secret = Api::<Secret>::namespaced(admin.clone(), namespace)
        .get(name)
        .await?;
    let data = secret.data.unwrap_or_default();
    let namespace_in = data.get(NAMESPACE_KEY).map(|b| b.0.clone());
    ensure!(namespace_in.as_deref() == Some(namespace.as_bytes()));
    let token = data.get(TOKEN_KEY).context("no token in the Secret")?;
    Ok(String::from_utf8(token.0.clone())?)
}

/// Waits until the API server refuses `token` as unauthenticated (401).
async fn until_rejected(token: &str, namespace: &str) -> Result<()> {
    let client = token_client(token).await?;
    let api = Api::<Deployment>::namespaced(client, namespace);
    until(
        "the API server to reject the revoked token",
        Duration::from_secs(20),
        || async {
            let result = api.get("web").await;
            Ok(match code(&result) {
                Some(401) => Poll::Ready(()),
                other => Poll::Pending(format!("answered {other:?}")),
            })
        },
    )
    .await
}

/// Waits until the ServiceAccount, Role, RoleBinding and Secret of `approval` are gone.
async fn until_all_gone(admin: &Client, namespace: &str, approval: &str) -> Result<()> {
    let names = names(approval);
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), namespace);
    let roles = Api::<Role>::namespaced(admin.clone(), namespace);
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), namespace);
    let secrets = Api::<Secret>::namespaced(admin.clone(), namespace);
    until(
        "the deploy token's objects to be deleted",
        Duration::from_secs(60),
        || async {
            let left = [
                (
                    "ServiceAccount",
                    accounts.get_opt(&names.service_account).await?.is_some(),
                ),
                ("Role", roles.get_opt(&names.role).await?.is_some()),
                (
                    "RoleBinding",
                    bindings.get_opt(&names.role_binding).await?.is_some(),
                ),
                ("Secret", secrets.get_opt(&names.secret).await?.is_some()),
            ];
            let left: Vec<&str> = left.iter().filter(|(_, l)| *l).map(|(k, _)| *k).collect();
            Ok(if left.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("left: {left:?}"))
            })
        },
    )
    .await
}

/// A kubeconfig for this cluster that authenticates with `token` and nothing else.
struct TokenKubeconfig {
    path: PathBuf,
}

impl TokenKubeconfig {
    fn write(token: &str) -> Result<TokenKubeconfig> {
        let cluster = TestCluster::get();
        let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig())?;
        let context = kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == User::Admin.name())
            .and_then(|c| c.context.clone())
            .context("the admin context")?;
        let entry = kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .context("the admin context's cluster")?;
        let document = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [entry],
            "users": [{ "name": "deploy-token", "user": { "token": token } }],
            "contexts": [{ "name": "deploy-token", "context": { "cluster": context.cluster, "user": "deploy-token" } }],
            "current-context": "deploy-token",
        });
        let path = std::env::temp_dir().join(format!("{}.kubeconfig", unique_name("token")));
        std::fs::write(&path, serde_json::to_vec(&document)?)?;
        Ok(TokenKubeconfig { path })
    }

    /// `kubectl` with only the token.
    fn kubectl(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Output> {
        TestCluster::get().kubectl_with(&self.path, args, stdin)
    }
}

impl Drop for TokenKubeconfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test]
async fn a_deploy_token_changes_exactly_its_target_until_revoked() -> Result<()> {
    let namespace = TestNamespace::create("token", None).await?;
    let elsewhere = TestNamespace::create("token-elsewhere", None).await?;
    let ns = namespace.name();
    let admin = setup(ns).await?;
    Api::<Deployment>::namespaced(admin.clone(), elsewhere.name())
        .create(
            &PostParams::default(),
            &objects::deployment("web", "nginx:1.27", 1)?,
        )
        .await?;
    let countersign = countersign_client(&admin, ns).await?;
    let own = own_client().await?;
    let approval = approved_request(&own, ns, "web-0a1b2c3d").await?;

    let before = Timestamp::now();
    let issued = issue_as_planned(&countersign, &approval).await?;
    let expected = names("web-0a1b2c3d");
    ensure!(
        issued.secret_name == expected.secret && issued.service_account == expected.service_account
    );
    ensure!(issued.revoked_at.is_none());
    let lasts = issued.expires_at.0.duration_since(before);
    ensure!(
        lasts > SignedDuration::from_mins(14) && lasts <= SignedDuration::from_mins(16),
        "the token lasts {lasts:?}, not 15m"
    );
    let role = Api::<Role>::namespaced(admin.clone(), ns)
        .get(&expected.role)
        .await?;
    let rules = role.rules.unwrap_or_default();
    ensure!(rules.len() == 1, "{rules:?}");
    ensure!(rules[0].resource_names == Some(vec!["web".to_string()]));
    ensure!(rules[0].verbs == TOKEN_VERBS);

    // countersign wrote the Secret but cannot read it back (a patch or a deletion would
    // answer with its contents), nor grant more than it holds itself.
    let own_secrets = Api::<Secret>::namespaced(countersign.clone(), ns);
    let merge = Patch::Merge(json!({}));
    let wider: Role = serde_json::from_value(json!({
        "metadata": { "name": "wider" },
        "rules": [{ "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["delete"] }],
    }))?;
    for (what, answer) in [
        ("get", code(&own_secrets.get(&issued.secret_name).await)),
        (
            "list",
            code(&own_secrets.list(&ListParams::default()).await),
        ),
        (
            "patch",
            code(
                &own_secrets
                    .patch(&issued.secret_name, &PatchParams::default(), &merge)
                    .await,
            ),
        ),
        (
            "delete",
            code(
                &own_secrets
                    .delete(&issued.secret_name, &DeleteParams::default())
                    .await,
            ),
        ),
        (
            "grant delete on Deployments",
            code(
                &Api::<Role>::namespaced(countersign.clone(), ns)
                    .create(&PostParams::default(), &wider)
                    .await,
            ),
        ),
    ] {
        ensure!(
            answer == Some(403),
            "countersign may {what}: answered {answer:?}"
        );
    }

    let token = token_in_secret(&admin, ns, &issued.secret_name).await?;
    let deployer = token_client(&token).await?;
    let (user, _) = objects::who_am_i(deployer.clone()).await?;
    ensure!(
        user == format!("system:serviceaccount:{ns}:{}", expected.service_account),
        "{user}"
    );

    // Exactly the target: read, list and watch it by name, patch and update it.
    let deployments = Api::<Deployment>::namespaced(deployer.clone(), ns);
    deployments.get("web").await.context("get web")?;
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "release": "1.28" } } })),
        )
        .await
        .context("patch web")?;
    let mut web = deployments.get("web").await?;
    web.labels_mut().insert("checked".into(), "yes".into());
    deployments
        .replace("web", &PostParams::default(), &web)
        .await
        .context("update web")?;
    let by_name = ListParams::default().fields("metadata.name=web");
    ensure!(deployments.list(&by_name).await?.items.len() == 1);

    // Nothing else: not the other Deployment, not the list, no create, no delete, not the
    // same name elsewhere, not its own Secret.
    let refusals = [
        ("get other", code(&deployments.get("other").await)),
        (
            "patch other",
            code(
                &deployments
                    .patch("other", &PatchParams::default(), &Patch::Merge(json!({})))
                    .await,
            ),
        ),
        (
            "list all",
            code(&deployments.list(&ListParams::default()).await),
        ),
        (
            "create",
            code(
                &deployments
                    .create(
                        &PostParams::default(),
                        &objects::deployment("new", "nginx:1.27", 1)?,
                    )
                    .await,
            ),
        ),
        (
            "delete web",
            code(&deployments.delete("web", &DeleteParams::default()).await),
        ),
        (
            "web elsewhere",
            code(
                &Api::<Deployment>::namespaced(deployer.clone(), elsewhere.name())
                    .get("web")
                    .await,
            ),
        ),
        (
            "its Secret",
            code(
                &Api::<Secret>::namespaced(deployer.clone(), ns)
                    .get(&issued.secret_name)
                    .await,
            ),
        ),
    ];
    for (what, answer) in refusals {
        ensure!(answer == Some(403), "{what}: answered {answer:?}, not 403");
    }
    ensure!(
        Api::<Deployment>::namespaced(admin.clone(), ns)
            .get_opt("new")
            .await?
            .is_none()
    );

    // A pipeline's kubectl: set image, apply (client- and server-side), rollout status.
    let kubectl = TokenKubeconfig::write(&token)?;
    let manifest = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web", "namespace": ns },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "nginx:1.29" }] },
            },
        },
    })
    .to_string();
    for (args, stdin) in [
        (
            vec!["-n", ns, "set", "image", "deployment/web", "web=nginx:1.28"],
            None,
        ),
        (vec!["apply", "-f", "-"], Some(manifest.as_bytes())),
        (
            vec!["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(manifest.as_bytes()),
        ),
        (
            vec![
                "-n",
                ns,
                "rollout",
                "status",
                "deployment/web",
                "--timeout=90s",
            ],
            None,
        ),
    ] {
        let out = kubectl.kubectl(&args, stdin)?;
        ensure!(out.status.success(), "kubectl {args:?}: {}", text(&out));
    }
    let out = kubectl.kubectl(
        &[
            "-n",
            ns,
            "set",
            "image",
            "deployment/other",
            "other=nginx:1.28",
        ],
        None,
    )?;
    ensure!(
        !out.status.success() && text(&out).contains("Forbidden"),
        "kubectl set image on other: {}",
        text(&out)
    );

    // Deployed: the operator's plan says revoke, and the token stops authenticating.
    let deployed = set_status(
        &own,
        ns,
        "web-0a1b2c3d",
        json!({ "phase": "Deployed", "deployToken": serde_json::to_value(&issued)? }),
    )
    .await?;
    let plan = plan_grant(&deployed, Timestamp::now());
    ensure!(
        plan.action
            == GrantAction::Revoke {
                reason: RevokeReason::Ended(ApprovalPhase::Deployed)
            },
        "{plan:?}"
    );
    grants::revoke(&countersign, &deployed, &issued).await?;
    until_rejected(&token, ns).await?;
    let out = kubectl.kubectl(&["-n", ns, "get", "deployment", "web"], None)?;
    ensure!(
        text(&out).contains("Unauthorized"),
        "kubectl with the revoked token: {}",
        text(&out)
    );
    until_all_gone(&admin, ns, "web-0a1b2c3d").await?;
    grants::revoke(&countersign, &deployed, &issued)
        .await
        .context("revoking again finds nothing and is fine")?;
    Ok(())
}

#[tokio::test]
async fn deleting_the_request_deletes_its_token() -> Result<()> {
    let namespace = TestNamespace::create("token-gc", None).await?;
    let ns = namespace.name();
    let admin = setup(ns).await?;
    let countersign = countersign_client(&admin, ns).await?;
    let own = own_client().await?;
    let approval = approved_request(&own, ns, "web-1a2b3c4d").await?;
    let issued = issue_as_planned(&countersign, &approval).await?;
    let token = token_in_secret(&admin, ns, &issued.secret_name).await?;
    Api::<Deployment>::namespaced(token_client(&token).await?, ns)
        .get("web")
        .await
        .context("the token works before")?;
    Api::<DeploymentApproval>::namespaced(admin.clone(), ns)
        .delete("web-1a2b3c4d", &DeleteParams::background())
        .await?;
    until_all_gone(&admin, ns, "web-1a2b3c4d").await?;
    until_rejected(&token, ns).await
}

#[tokio::test]
async fn issuing_again_completes_a_half_made_token_and_adopts_leftovers() -> Result<()> {
    let namespace = TestNamespace::create("token-retry", None).await?;
    let ns = namespace.name();
    let admin = setup(ns).await?;
    let countersign = countersign_client(&admin, ns).await?;
    let own = own_client().await?;
    let name = "web-2a3b4c5d";
    let approval = approved_request(&own, ns, name).await?;
    let first = issue_as_planned(&countersign, &approval).await?;
    let first_token = token_in_secret(&admin, ns, &first.secret_name).await?;
    let objects = names(name);

    // As if a crash had left only the ServiceAccount and the RoleBinding: the Secret's
    // deletion alone already invalidates the token bound to it.
    Api::<Role>::namespaced(admin.clone(), ns)
        .delete(&objects.role, &DeleteParams::default())
        .await?;
    Api::<Secret>::namespaced(admin.clone(), ns)
        .delete(&objects.secret, &DeleteParams::default())
        .await?;
    until_rejected(&first_token, ns).await?;
    let second = issue_as_planned(&countersign, &approval).await?;
    let second_token = token_in_secret(&admin, ns, &second.secret_name).await?;
    ensure!(second_token != first_token);
    let deployer = Api::<Deployment>::namespaced(token_client(&second_token).await?, ns);
    deployer
        .get("web")
        .await
        .context("the re-issued token works")?;
    // Issuing over a complete set is fine too.
    issue_as_planned(&countersign, &approval).await?;

    // The request is deleted leaving its objects behind (orphaned), and a request of the same
    // name comes back: issuing adopts them, so collecting the old one never takes them.
    Api::<DeploymentApproval>::namespaced(admin.clone(), ns)
        .delete(
            name,
            &DeleteParams {
                propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
                ..DeleteParams::default()
            },
        )
        .await?;
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), ns);
    let approvals = Api::<DeploymentApproval>::namespaced(admin.clone(), ns);
    until(
        "the request to be gone",
        Duration::from_secs(30),
        || async {
            Ok(match approvals.get_opt(name).await? {
                None => Poll::Ready(()),
                Some(_) => Poll::Pending("still there".into()),
            })
        },
    )
    .await?;
    let orphan = accounts.get(&objects.service_account).await?;
    ensure!(
        orphan.owner_references().is_empty(),
        "{:?}",
        orphan.owner_references()
    );
    let again = approved_request(&own, ns, name).await?;
    let third = issue_as_planned(&countersign, &again).await?;
    let uid = again.uid().context("the new request's uid")?;
    let owned_by_it =
        |owners: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
            owners.len() == 1 && owners[0].uid == uid
        };
    ensure!(owned_by_it(
        accounts
            .get(&objects.service_account)
            .await?
            .owner_references()
    ));
    ensure!(owned_by_it(
        Api::<Role>::namespaced(admin.clone(), ns)
            .get(&objects.role)
            .await?
            .owner_references()
    ));
    ensure!(owned_by_it(
        Api::<RoleBinding>::namespaced(admin.clone(), ns)
            .get(&objects.role_binding)
            .await?
            .owner_references()
    ));
    let third_token = token_in_secret(&admin, ns, &third.secret_name).await?;
    Api::<Deployment>::namespaced(token_client(&third_token).await?, ns)
        .get("web")
        .await
        .context("the adopted set's token works")?;
    approvals.delete(name, &DeleteParams::background()).await?;
    until_all_gone(&admin, ns, name).await
}

/// The whole way, with `serve`'s operator: approved → a token in a Secret → the pipeline
/// applies exactly the approved change with it (and nothing else) → Deployed → revoked.
#[tokio::test]
async fn the_operator_issues_a_token_on_approval_and_revokes_it_once_deployed() -> Result<()> {
    use crate::support::flow::{
        Policy, assert_ok, open_request, review, rolling_web, status_until,
    };
    crate::support::countersign::Countersign::get();
    let ns = TestNamespace::create("granted", None).await?;
    let ns = ns.name();
    let admin = TestCluster::get().client(User::Admin).await?;
    // `web` and another Deployment, made before any policy gates the namespace: a token
    // changes an existing object (RBAC cannot limit `create` to one name).
    for object in [rolling_web(ns, "nginx:1.27", 1), {
        let mut other = rolling_web(ns, "nginx:1.27", 1);
        other["metadata"]["name"] = json!("other");
        other
    }] {
        Api::<Deployment>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &serde_json::from_value(object)?)
            .await?;
    }
    let _policy = Policy::apply(
        ns,
        json!({
            "approval": { "levels": [{ "name": "leads", "approvers": [{ "user": "alice" }] }] },
            "grant": { "ttl": "10m" },
        }),
    )?;
    let v1 = rolling_web(ns, "nginx:1.28", 1);
    let name = open_request(ns, &v1).await?;
    assert_ok(&review(
        User::Alice,
        ns,
        &name,
        json!({"decision": "Approve"}),
    )?);
    let approved = status_until(ns, &name, "a deploy token", |s| {
        s.phase == ApprovalPhase::Approved && s.deploy_token.is_some()
    })
    .await?;
    let issued = approved.deploy_token.context("deployToken")?;
    let lifetime = issued.expires_at.0.duration_since(issued.issued_at.0);
    ensure!(
        (SignedDuration::from_mins(9)..=SignedDuration::from_mins(11)).contains(&lifetime),
        "the token lasts the grant's ttl: {lifetime:#}"
    );
    let token = token_in_secret(&admin, ns, &issued.secret_name).await?;

    // The pipeline, with nothing but the token, applies the approved change.
    let pipeline = token_client(&token).await?;
    let deployments = Api::<Deployment>::namespaced(pipeline.clone(), ns);
    ensure!(
        code(&deployments.get("other").await) == Some(403),
        "the token reads another Deployment"
    );
    let mut another = rolling_web(ns, "nginx:1.27", 1);
    another["metadata"]["name"] = json!("another");
    ensure!(
        code(
            &deployments
                .create(&PostParams::default(), &serde_json::from_value(another)?)
                .await
        ) == Some(403),
        "the token creates a Deployment"
    );
    // Another change of its one target: denied, and no request opened in its name (it
    // exists for the approved change only).
    let unapproved = rolling_web(ns, "nginx:1.99", 1);
    let attempt = deployments
        .patch(
            "web",
            &PatchParams::apply("pipeline").force(),
            &Patch::Apply(&unapproved),
        )
        .await;
    let denied = attempt.err().map(|e| e.to_string()).unwrap_or_default();
    ensure!(
        denied.contains("a deploy token opens no requests"),
        "the token's other change: {denied}"
    );
    let requests = crate::support::flow::approvals(ns).await?;
    ensure!(
        requests.len() == 1,
        "a request in the token's name: {:?}",
        requests
            .iter()
            .map(|a| &a.spec.change.requester.username)
            .collect::<Vec<_>>()
    );
    let applied = until(
        "the approved change applied with the token",
        Duration::from_secs(20),
        || async {
            let result = deployments
                .patch(
                    "web",
                    &PatchParams::apply("pipeline").force(),
                    &Patch::Apply(&v1),
                )
                .await;
            Ok(match result {
                Ok(deployment) => Poll::Ready(deployment),
                Err(error) => Poll::Pending(error.to_string()),
            })
        },
    )
    .await?;
    ensure!(applied.metadata.name.as_deref() == Some("web"));

    // Rolled out: Deployed, and the token no longer authenticates.
    let deployed = status_until(ns, &name, "Deployed and revoked", |s| {
        s.phase == ApprovalPhase::Deployed
            && s.deploy_token
                .as_ref()
                .is_some_and(|t| t.revoked_at.is_some())
    })
    .await?;
    let admitted_by = deployed
        .rollout
        .and_then(|r| r.admitted_by)
        .map(|u| u.username)
        .unwrap_or_default();
    ensure!(
        admitted_by == format!("system:serviceaccount:{ns}:{}", issued.service_account),
        "admitted as the token's ServiceAccount, not {admitted_by}"
    );
    until_rejected(&token, ns).await?;
    Ok(())
}
