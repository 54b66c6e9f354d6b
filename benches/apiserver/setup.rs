//! The four setups measured on one cluster, and switching between them while both
//! webhook processes keep running (so each setup pays the same background cost):
//! countersign's webhook configurations are removed and put back; Kyverno's two policies
//! (a ClusterPolicy and a ValidatingPolicy doing the same work) are removed and put back,
//! one at a time (Kyverno then drops or adds their Deployment rules). A switch is done
//! when server-side dry runs answer as the setup must.

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
    /// Kyverno with its ClusterPolicy (kyverno.io/v1).
    KyvernoCpol,
    /// Kyverno with its ValidatingPolicy (policies.kyverno.io/v1), evaluated by its webhook.
    KyvernoVpol,
}

pub const SETUPS: [Setup; 4] = [
    Setup::Bare,
    Setup::Countersign,
    Setup::KyvernoCpol,
    Setup::KyvernoVpol,
];

/// The setups with a webhook, in the order of the tables' columns.
pub const WEBHOOKS: [Setup; 3] = [Setup::Countersign, Setup::KyvernoCpol, Setup::KyvernoVpol];

impl Setup {
    pub fn label(self) -> &'static str {
        match self {
            Setup::Bare => "no webhook",
            Setup::Countersign => "countersign",
            Setup::KyvernoCpol => "Kyverno ClusterPolicy",
            Setup::KyvernoVpol => "Kyverno ValidatingPolicy",
        }
    }

    /// The name `COUNTERSIGN_BENCH_SETUPS` knows the setup by; also in Deployment names.
    pub fn short(self) -> &'static str {
        match self {
            Setup::Bare => "bare",
            Setup::Countersign => "cs",
            Setup::KyvernoCpol => "cpol",
            Setup::KyvernoVpol => "vpol",
        }
    }

    pub fn is_kyverno(self) -> bool {
        matches!(self, Setup::KyvernoCpol | Setup::KyvernoVpol)
    }

    /// Text only this setup's denial of the deny path carries; none without a webhook.
    pub fn denial_marker(self) -> Option<&'static str> {
        match self {
            Setup::Bare => None,
            Setup::Countersign => Some("holds a credential (AWS access key ID)"),
            Setup::KyvernoCpol => Some(kyverno::CLUSTER_POLICY.denial_marker),
            Setup::KyvernoVpol => Some(kyverno::VALIDATING_POLICY.denial_marker),
        }
    }
}

/// The setups `COUNTERSIGN_BENCH_SETUPS` names (comma-separated short names), always with
/// the one without a webhook, which every added latency is measured against; all four when
/// unset.
pub fn selected(list: Option<&str>) -> Result<Vec<Setup>> {
    let Some(list) = list else {
        return Ok(SETUPS.to_vec());
    };
    let mut chosen = vec![Setup::Bare];
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(setup) = SETUPS.into_iter().find(|s| s.short() == name) else {
            bail!(
                "COUNTERSIGN_BENCH_SETUPS: no setup {name:?}; the setups are {}",
                SETUPS.map(Setup::short).join(", ")
            );
        };
        if !chosen.contains(&setup) {
            chosen.push(setup);
        }
    }
    chosen.sort();
    Ok(chosen)
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

    /// Switches to `setup` and returns the denial its deny path got (none without a
    /// webhook); `kyverno` is `None` when no Kyverno setup is measured.
    pub async fn to(
        &self,
        admin: &kube::Client,
        developer: &kube::Client,
        kyverno: Option<&Kyverno>,
        setup: Setup,
    ) -> Result<Option<String>> {
        self.countersign
            .set(admin, setup == Setup::Countersign)
            .await?;
        if let Some(kyverno) = kyverno {
            let policies = [
                (&kyverno::CLUSTER_POLICY, Setup::KyvernoCpol),
                (&kyverno::VALIDATING_POLICY, Setup::KyvernoVpol),
            ];
            // The other policy goes before this one comes, so that Kyverno never answers
            // with both.
            for (policy, owner) in policies {
                if owner != setup {
                    kyverno
                        .set_policy(admin, policy, &self.namespace, false)
                        .await?;
                }
            }
            for (policy, owner) in policies {
                if owner == setup {
                    kyverno
                        .set_policy(admin, policy, &self.namespace, true)
                        .await?;
                }
            }
            kyverno.until_webhook_for(admin, setup).await?;
        }
        self.until_answering(developer, setup).await
    }

    /// Dry-run creates as the developer until the allow path passes and the deny path
    /// gets this setup's answer and no other setup's: the API server picks up
    /// configuration changes through an informer, Kyverno its policies through its own.
    async fn until_answering(
        &self,
        developer: &kube::Client,
        setup: Setup,
    ) -> Result<Option<String>> {
        let api = Api::<Deployment>::namespaced(developer.clone(), &self.namespace);
        let dry_run = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let allowed: Deployment = serde_json::from_value(deployment("probe", false))?;
        let denied: Deployment = serde_json::from_value(deployment("probe", true))?;
        let others: Vec<&str> = SETUPS
            .into_iter()
            .filter(|&s| s != setup)
            .filter_map(Setup::denial_marker)
            .collect();
        let started = Instant::now();
        let mut steady = 0;
        loop {
            let allow = api.create(&dry_run, &allowed).await;
            let deny = api.create(&dry_run, &denied).await;
            let deny_as_expected = match (setup.denial_marker(), &deny) {
                (None, Ok(_)) => true,
                (Some(marker), Err(kube::Error::Api(status))) => {
                    status.message.contains(marker)
                        && !others.iter().any(|other| status.message.contains(other))
                }
                _ => false,
            };
            // Three answers in a row, so that no stale configuration is still in use.
            steady = if allow.is_ok() && deny_as_expected {
                steady + 1
            } else {
                0
            };
            if steady == 3 {
                return Ok(match deny {
                    Err(kube::Error::Api(status)) => Some(status.message),
                    _ => None,
                });
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
