//! Local mode (SPEC §9): install into a development cluster with the kubeconfig's user, then
//! run as countersign's ServiceAccount, bound to the same least-privilege roles the chart
//! ships, so every test exercises the real RBAC.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::AuthInfo;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::certificates::{IssueError, issue_ca, issue_serving};
use super::token;
use crate::install::webhooks::{Endpoint, mutating_configuration, validating_configuration};
use crate::install::{SERVICE_ACCOUNT, rbac};
use crate::webhook::server::TlsFiles;

/// The field manager of everything local mode applies.
const FIELD_MANAGER: &str = "countersign-local";

/// Why local mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0}")]
    Kubeconfig(String),
    #[error("certificates: {0}")]
    Certificates(String),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Token(String),
    #[error("CRD {0} was not established within 60 s")]
    NotEstablished(String),
}

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Api { what, source }
}

/// What local mode installed, and what it needs to run and to clean up.
pub struct LocalInstall {
    /// The kubeconfig's user: installs, issues tokens, registers and removes the webhooks.
    installer: Client,
    /// countersign's ServiceAccount, through a TokenRequest token kept fresh in a file.
    pub run_as: kube::Config,
    pub tls: TlsFiles,
    pub listen: SocketAddr,
    install_namespace: String,
    ca_pem: String,
    /// Private files: certificates, key, token. Removed on exit.
    dir: PathBuf,
    renewal: tokio::task::JoinHandle<()>,
}

impl LocalInstall {
    /// Install countersign with the kubeconfig's user and prepare to run as its
    /// ServiceAccount.
    pub async fn install(
        kubeconfig: &Path,
        context: Option<&str>,
        install_namespace: &str,
        listen: SocketAddr,
        optional: OptionalRoles,
        credentials: std::sync::Arc<crate::cluster::credentials::Credentials>,
    ) -> Result<LocalInstall, LocalError> {
        let admin_config = crate::kubeconfig::client_config(Some(kubeconfig), context)
            .await
            .map_err(|e| LocalError::Kubeconfig(e.to_string()))?;
        let installer = Client::try_from(admin_config.clone())
            .map_err(|e| LocalError::Kubeconfig(e.to_string()))?;

        let dir = private_dir()?;
        let (tls, ca_pem) = make_certificates(&dir, listen)?;

        ensure_namespace(&installer, install_namespace).await?;
        apply_crds(&installer).await?;
        apply_rbac(&installer, install_namespace, optional).await?;

        let token_path = dir.join("token");
        token::issue(&installer, install_namespace, SERVICE_ACCOUNT, &token_path)
            .await
            .map_err(LocalError::Token)?;
        let renewal = tokio::spawn(token::keep_fresh(
            installer.clone(),
            install_namespace.to_string(),
            SERVICE_ACCOUNT.to_string(),
            token_path.clone(),
            credentials,
        ));
        let mut run_as = admin_config;
        run_as.auth_info = AuthInfo {
            token_file: Some(token_path.to_string_lossy().into_owned()),
            ..AuthInfo::default()
        };
        tracing::info!(
            namespace = install_namespace,
            serviceaccount = SERVICE_ACCOUNT,
            "installed; running as the ServiceAccount"
        );
        Ok(LocalInstall {
            installer,
            run_as,
            tls,
            listen,
            install_namespace: install_namespace.to_string(),
            ca_pem,
            dir,
            renewal,
        })
    }

    /// Where the API server reaches this process: `https://LISTEN`.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Url(format!("https://{}", self.listen))
    }

    /// The CA that signed this process's serving certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Register both webhook configurations on `https://LISTEN`.
    pub async fn register(&self) -> Result<(), LocalError> {
        let endpoint = self.endpoint();
        let ca = self.ca_pem.as_bytes();
        apply(
            &self.installer,
            &validating_configuration(&endpoint, ca, &self.install_namespace),
        )
        .await?;
        apply(
            &self.installer,
            &mutating_configuration(&endpoint, ca, &self.install_namespace),
        )
        .await
    }

    /// Remove both webhook configurations.
    pub async fn unregister(&self) -> Result<(), LocalError> {
        let name = crate::install::webhooks::CONFIGURATION_NAME;
        delete::<ValidatingWebhookConfiguration>(&self.installer, name).await?;
        delete::<MutatingWebhookConfiguration>(&self.installer, name).await
    }

    /// Stop renewing the token and remove the private files.
    pub fn clean_up(&self) {
        self.renewal.abort();
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(%error, dir = %self.dir.display(), "could not remove local mode's files");
        }
    }
}

/// A fresh 0700 directory for local mode's private files:
/// `$TMPDIR/countersign-local-<pid>/{tls.crt,tls.key,ca.crt,ca.key,token}`.
fn private_dir() -> Result<PathBuf, LocalError> {
    super::private_dir("countersign-local").map_err(LocalError::Io)
}

/// A CA and a serving certificate for the listen address, written to `dir`.
fn make_certificates(dir: &Path, listen: SocketAddr) -> Result<(TlsFiles, String), LocalError> {
    let failed = |e: IssueError| LocalError::Certificates(e.to_string());
    let now = jiff::Timestamp::now();
    let (ca_pem, ca_key) = issue_ca("countersign local CA", now).map_err(failed)?;
    let mut names = BTreeSet::from([listen.ip().to_string()]);
    if listen.ip().is_loopback() {
        names.insert("localhost".into());
    }
    let (cert, key) = issue_serving(&ca_pem, &ca_key, &names, now).map_err(failed)?;
    let tls = TlsFiles {
        cert_path: dir.join("tls.crt"),
        key_path: dir.join("tls.key"),
    };
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|e| LocalError::Io(format!("{}: {e}", path.display())))
    };
    write(&tls.cert_path, &cert)?;
    write(&tls.key_path, &key)?;
    write(&dir.join("ca.crt"), &ca_pem)?;
    // Kept (in the private directory, for the life of the process) so a developer or a test
    // can rotate the serving certificate the way cert-manager would, under the same CA.
    write(&dir.join("ca.key"), &ca_key)?;
    Ok((tls, ca_pem))
}

async fn ensure_namespace(client: &Client, name: &str) -> Result<(), LocalError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match api.create(&PostParams::default(), &namespace).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(api_error(format!("creating namespace {name}"))(error)),
    }
}

async fn apply_crds(client: &Client) -> Result<(), LocalError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::api::crds() {
        apply(client, &crd).await?;
        let name = crd.name_any();
        let established = async {
            loop {
                let ready = api.get_opt(&name).await.ok().flatten().is_some_and(|crd| {
                    crd.status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
                if ready {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), established)
            .await
            .map_err(|_| LocalError::NotEstablished(name))?;
    }
    Ok(())
}

/// The roles local mode binds to countersign only when their flag asks for them.
#[derive(Clone, Copy, Debug, Default)]
pub struct OptionalRoles {
    /// `--restore-webhook-configurations`: the webhook restorer.
    pub restore_webhooks: bool,
    /// `--gitops`: reading the GitOps controllers' objects.
    pub gitops: bool,
}

/// countersign's ServiceAccount, roles and bindings; an optional role's binding only when
/// its flag asks for it (and removed otherwise, so no earlier run's right lingers).
async fn apply_rbac(
    client: &Client,
    namespace: &str,
    optional: OptionalRoles,
) -> Result<(), LocalError> {
    apply(client, &rbac::service_account(namespace)).await?;
    for role in rbac::cluster_roles() {
        apply(client, &role).await?;
    }
    apply(client, &rbac::own_role(namespace)).await?;
    apply(client, &rbac::own_cluster_role_binding(namespace)).await?;
    for (wanted, binding) in [
        (
            optional.restore_webhooks,
            rbac::restorer_cluster_role_binding(namespace),
        ),
        (
            optional.gitops,
            rbac::gitops_cluster_role_binding(namespace),
        ),
    ] {
        if wanted {
            apply(client, &binding).await?;
        } else {
            delete::<ClusterRoleBinding>(
                client,
                binding.metadata.name.as_deref().unwrap_or_default(),
            )
            .await?;
        }
    }
    apply(client, &rbac::own_role_binding(namespace)).await
}

/// Server-side apply `object` (cluster-scoped, or in its own namespace).
async fn apply<K>(client: &Client, object: &K) -> Result<(), LocalError>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = object.name_any();
    let resource = kube::api::ApiResource::erase::<K>(&());
    let api: Api<kube::api::DynamicObject> = match object.namespace() {
        Some(namespace) => Api::namespaced_with(client.clone(), &namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map(|_| ())
    .map_err(api_error(format!("applying {} {name}", K::kind(&()))))
}

async fn delete<K>(client: &Client, name: &str) -> Result<(), LocalError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(api_error(format!("deleting {} {name}", K::kind(&())))(
            error,
        )),
    }
}
