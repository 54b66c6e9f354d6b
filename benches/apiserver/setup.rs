//! The three setups measured on one cluster, and switching between them while both
//! webhook processes keep running (so each setup pays the same background cost):
//! countersign's webhook configurations are removed and put back; Kyverno's ClusterPolicy
//! is removed and put back (Kyverno then drops or adds its Deployment rule). A switch is
//! done when a server-side dry run answers as the setup must.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;

use crate::kyverno::{self, Kyverno};
use crate::workload::deployment;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Setup {
    /// No admission webhook for Deployments.
    Bare,
    Countersign,
    Kyverno,
}

pub const SETUPS: [Setup; 3] = [Setup::Bare, Setup::Countersign, Setup::Kyverno];

impl Setup {
    pub fn label(self) -> &'static str {
        match self {
            Setup::Bare => "no webhook",
            Setup::Countersign => "countersign",
            Setup::Kyverno => "Kyverno",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Setup::Bare => "bare",
            Setup::Countersign => "cs",
            Setup::Kyverno => "kv",
        }
    }

    /// Text only this setup's denial of the deny path carries; none without a webhook.
    pub fn denial_marker(self) -> Option<&'static str> {
        match self {
            Setup::Bare => None,
            Setup::Countersign => Some("holds a credential (AWS access key ID)"),
            Setup::Kyverno => Some(kyverno::POLICY),
        }
    }
}

/// What switches the cluster from one setup to another.
pub struct Switch {
    countersign: Registration,
    namespace: String,
}

impl Switch {
    pub async fn new(admin: &kube::Client, namespace: &str) -> Result<Switch> {
        Ok(Switch {
            countersign: Registration::read(admin).await?,
            namespace: namespace.to_string(),
        })
    }

    pub async fn to(
        &self,
        admin: &kube::Client,
        developer: &kube::Client,
        kyverno: &Kyverno,
        setup: Setup,
    ) -> Result<()> {
        self.countersign
            .set(admin, setup == Setup::Countersign)
            .await?;
        kyverno
            .set_policy(admin, &self.namespace, setup == Setup::Kyverno)
            .await?;
        self.until_answering(developer, setup).await
    }

    /// Dry-run creates as the developer until the allow path passes and the deny path
    /// gets this setup's answer: the API server picks up configuration changes through
    /// an informer, Kyverno its policy through its own.
    async fn until_answering(&self, developer: &kube::Client, setup: Setup) -> Result<()> {
        let api = Api::<Deployment>::namespaced(developer.clone(), &self.namespace);
        let dry_run = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let allowed: Deployment = serde_json::from_value(deployment("probe", false))?;
        let denied: Deployment = serde_json::from_value(deployment("probe", true))?;
        let started = Instant::now();
        let mut steady = 0;
        loop {
            let allow = api.create(&dry_run, &allowed).await;
            let deny = api.create(&dry_run, &denied).await;
            let deny_as_expected = match (setup.denial_marker(), &deny) {
                (None, Ok(_)) => true,
                (Some(marker), Err(kube::Error::Api(status))) => status.message.contains(marker),
                _ => false,
            };
            // Three answers in a row, so that no stale configuration is still in use.
            steady = if allow.is_ok() && deny_as_expected {
                steady + 1
            } else {
                0
            };
            if steady == 3 {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "{} did not answer as it must after 60 s: allow {:?}, deny {:?}",
                    setup.label(),
                    allow.err(),
                    deny.err()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// The webhook configurations `serve --local` registered, so a switch can take them away
/// and put them back (the process keeps running either way).
struct Registration {
    validating: ValidatingWebhookConfiguration,
    mutating: MutatingWebhookConfiguration,
}

impl Registration {
    async fn read(admin: &kube::Client) -> Result<Registration> {
        let strip = |meta: &mut ObjectMeta| {
            meta.resource_version = None;
            meta.uid = None;
            meta.managed_fields = None;
            meta.creation_timestamp = None;
        };
        let mut validating = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .get("countersign")
            .await?;
        let mut mutating = Api::<MutatingWebhookConfiguration>::all(admin.clone())
            .get("countersign")
            .await?;
        strip(&mut validating.metadata);
        strip(&mut mutating.metadata);
        Ok(Registration {
            validating,
            mutating,
        })
    }

    async fn set(&self, admin: &kube::Client, registered: bool) -> Result<()> {
        let validating = Api::<ValidatingWebhookConfiguration>::all(admin.clone());
        let mutating = Api::<MutatingWebhookConfiguration>::all(admin.clone());
        let present = validating.get_opt("countersign").await?.is_some();
        if registered && !present {
            validating
                .create(&PostParams::default(), &self.validating)
                .await?;
            mutating
                .create(&PostParams::default(), &self.mutating)
                .await?;
        } else if !registered && present {
            validating
                .delete("countersign", &Default::default())
                .await?;
            mutating.delete("countersign", &Default::default()).await?;
        }
        Ok(())
    }
}
