//! Scoped deploy tokens on the API server (SPEC §8): creates and deletes what
//! `core::rollout::token` builds. The operator decides when with `core::rollout::token::plan_grant`, calls
//! [`issue`] or [`revoke`], and records the result in `status.deployToken` and the audit trail.
//!
//! Both are safe to repeat after a crash at any step: objects that exist are replaced with
//! what they should be, a half-made set is completed, and what is already gone is not
//! missed.

use std::fmt::Debug;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{ApprovalTarget, DeployTokenStatus, DeploymentApproval};
use crate::core::rollout::token::{
    GrantError, TargetResource, builtin_resource, names, token_objects, token_request, token_secret,
};

/// Why a token could not be issued or revoked; the reconcile retries.
#[derive(Debug, thiserror::Error)]
pub enum GrantsError {
    #[error(transparent)]
    Build(#[from] GrantError),
    #[error("finding the API resource of {kind} ({api_version}): {source}")]
    Discovery {
        api_version: String,
        kind: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0} is not a namespaced kind; a deploy token's Role cannot name it")]
    NotNamespaced(String),
    /// Includes the API server refusing a Role for a kind whose rights countersign does
    /// not hold itself (docs/deploy-tokens.md says how to add them).
    #[error("{action} {kind} {namespace}/{name}: {source}")]
    Api {
        action: &'static str,
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the TokenRequest for ServiceAccount {0} returned no token")]
    NoToken(String),
}

/// The resource (group and plural) of the approval's target: the built-in workload kinds
/// from the core's table, any other kind by API discovery.
pub async fn target_resource(
    client: &Client,
    target: &ApprovalTarget,
) -> Result<TargetResource, GrantsError> {
    if let Some(resource) = builtin_resource(&target.api_version, &target.kind) {
        return Ok(resource);
    }
    let (group, version) = target
        .api_version
        .rsplit_once('/')
        .unwrap_or(("", target.api_version.as_str()));
    let gvk = GroupVersionKind::gvk(group, version, &target.kind);
    let (resource, capabilities) =
        kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|source| GrantsError::Discovery {
                api_version: target.api_version.clone(),
                kind: target.kind.clone(),
                source,
            })?;
    if capabilities.scope != Scope::Namespaced {
        return Err(GrantsError::NotNamespaced(target.kind.clone()));
    }
    Ok(TargetResource {
        group: resource.group,
        plural: resource.plural,
    })
}

/// Issue the deploy token of `approval`, lasting `ttl` (from `GrantAction::Issue`):
/// ServiceAccount, Role and RoleBinding (owned by the approval), the Secret (owned by the
/// ServiceAccount), a TokenRequest token bound to the Secret, written into the Secret under
/// `token`. Returns what the operator records in `status.deployToken` (`issuedAt` is
/// `now`, `expiresAt` the expiry the API server gave the token).
///
/// Calling it again re-issues: the objects are replaced (an object left over from a deleted
/// request of the same name becomes this one's) and the Secret gets a fresh token; an
/// earlier token stays valid until revoked or expired, as it is bound to the same Secret.
pub async fn issue(
    client: &Client,
    approval: &DeploymentApproval,
    ttl: SignedDuration,
    now: Timestamp,
) -> Result<DeployTokenStatus, GrantsError> {
    let resource = target_resource(client, &approval.spec.target).await?;
    let objects = token_objects(approval, &resource)?;
    let namespace = objects.namespace.as_str();
    let service_account = create_or_replace(client, namespace, &objects.service_account).await?;
    create_or_replace(client, namespace, &objects.role).await?;
    create_or_replace(client, namespace, &objects.role_binding).await?;
    let service_account_uid = service_account.uid().unwrap_or_default();
    // The Secret first without the token (the token is bound to it); an existing one is
    // left as it is until the new token replaces its contents.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let empty = token_secret(&objects, &service_account_uid, None);
    let secret_uid = match secrets.create(&PostParams::default(), &empty).await {
        Ok(created) => created.uid(),
        Err(kube::Error::Api(status)) if status.code == 409 => None,
        Err(source) => return Err(api_error("creating", &empty, namespace, source)),
    };
    let request = token_request(&objects, secret_uid.as_deref(), ttl);
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let issued = accounts
        .create_token_request(
            &objects.names.service_account,
            &PostParams::default(),
            &request,
        )
        .await
        .map_err(|source| GrantsError::Api {
            action: "requesting a token for",
            kind: "ServiceAccount".into(),
            namespace: namespace.into(),
            name: objects.names.service_account.clone(),
            source,
        })?;
    let status = issued.status.unwrap_or_default();
    let token = status
        .token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| GrantsError::NoToken(objects.names.service_account.clone()))?;
    // The API server may shorten the token (--service-account-max-token-expiration): its
    // expiry, not ours, is when the token stops working.
    let expires_at = status
        .expiration_timestamp
        .unwrap_or_else(|| Time(now.checked_add(ttl).unwrap_or(Timestamp::MAX)));
    let full = token_secret(&objects, &service_account_uid, Some(&token));
    // Unconditional: countersign may not read Secrets, so it cannot know the version.
    secrets
        .replace(&objects.names.secret, &PostParams::default(), &full)
        .await
        .map_err(|source| api_error("writing the token into", &full, namespace, source))?;
    Ok(DeployTokenStatus {
        secret_name: objects.names.secret.clone(),
        service_account: objects.names.service_account.clone(),
        issued_at: Time(now),
        expires_at,
        revoked_at: None,
    })
}

/// Revoke `approval`'s deploy token: delete its ServiceAccount (every token of it stops
/// authenticating at once), RoleBinding and Role. The Secret goes by garbage collection with
/// the ServiceAccount that owns it (countersign holds no `delete` on Secrets: a deletion
/// returns the Secret's contents). What is already gone counts as deleted. The operator
/// records `revokedAt` when this returns `Ok`.
pub async fn revoke(
    client: &Client,
    approval: &DeploymentApproval,
    token: &DeployTokenStatus,
) -> Result<(), GrantsError> {
    let namespace = approval
        .metadata
        .namespace
        .as_deref()
        .ok_or(GrantError::MissingMetadata("namespace"))?;
    let derived = names(&approval.name_any());
    delete::<ServiceAccount>(client, namespace, &token.service_account).await?;
    if derived.service_account != token.service_account {
        delete::<ServiceAccount>(client, namespace, &derived.service_account).await?;
    }
    delete::<RoleBinding>(client, namespace, &derived.role_binding).await?;
    delete::<Role>(client, namespace, &derived.role).await
}

/// Create `object`, or replace the one of that name with it (unconditionally: whatever was
/// there becomes this).
async fn create_or_replace<K>(
    client: &Client,
    namespace: &str,
    object: &K,
) -> Result<K, GrantsError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), object).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if status.code == 409 => api
            .replace(&object.name_any(), &PostParams::default(), object)
            .await
            .map_err(|source| api_error("replacing", object, namespace, source)),
        Err(source) => Err(api_error("creating", object, namespace, source)),
    }
}

/// Delete `name` in the background (dependents by garbage collection); gone already is fine.
async fn delete<K>(client: &Client, namespace: &str, name: &str) -> Result<(), GrantsError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(GrantsError::Api {
            action: "deleting",
            kind: K::kind(&()).into_owned(),
            namespace: namespace.into(),
            name: name.into(),
            source,
        }),
    }
}

fn api_error<K: Resource<DynamicType = ()>>(
    action: &'static str,
    object: &K,
    namespace: &str,
    source: kube::Error,
) -> GrantsError {
    GrantsError::Api {
        action,
        kind: K::kind(&()).into_owned(),
        namespace: namespace.into(),
        name: object.meta().name.clone().unwrap_or_default(),
        source,
    }
}
