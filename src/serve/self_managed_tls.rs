//! `serve --self-managed-tls`: countersign keeps its own CA and serving certificate in the
//! Secret `countersign-webhook-tls` of its namespace (no cert-manager, no files to provide).
//!
//! Every replica reads the Secret every few seconds and writes the serving certificate,
//! its key and the CA bundle to a private directory, which the HTTPS server follows and the
//! webhook guard reads the bundle from. The replica that leads the operator also keeps the
//! Secret as `core::tls` plans: it creates it, renews what is due, rotates the CA
//! in two steps, and writes with the resourceVersion it read, so two replicas never both
//! win a write. The guard injects the bundle into the webhook configurations.
//!
//! A replica reports ready only once every webhook of those configurations trusts the
//! certificate it serves: until the leader's guard has injected the bundle, the API server
//! would refuse the certificate, so `helm install --wait` would return before countersign can
//! be used.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rcgen::{KeyPair, PublicKeyData};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::watch;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::certificates::{IssueError, issue_ca, issue_serving};
use crate::cluster::status::FIELD_MANAGER;
use crate::core::tls::{BundledCa, Found, IssuedBy, Plan, ServingFound, Validity, plan};
use crate::install::webhooks::CONFIGURATION_NAME;
use crate::webhook::server::TlsFiles;

/// The Secret, in the install namespace.
pub const SECRET_NAME: &str = "countersign-webhook-tls";

/// The Secret's keys: a `kubernetes.io/tls` Secret with the CA bundle and the signer added.
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_CRT: &str = "ca.crt";
const SIGNER_CRT: &str = "signer.crt";
const SIGNER_KEY: &str = "signer.key";

/// How often the Secret is read once this replica serves and is trusted, and before.
const POLL: Duration = Duration::from_secs(10);
const FIRST_POLL: Duration = Duration::from_secs(1);

/// The self-managed certificates of one replica.
pub struct SelfManagedTls {
    pub client: Client,
    pub namespace: String,
    /// The names the serving certificate is for (`core::tls::service_names`, or
    /// the webhook URL's host).
    pub names: BTreeSet<String>,
    /// The private directory the files are written to.
    pub dir: PathBuf,
    /// Whether this replica leads the operator, and so keeps the Secret (`None`: never,
    /// with --webhook-only).
    pub leading: Option<watch::Receiver<bool>>,
    /// Set once every webhook of the configurations trusts the certificate this replica
    /// serves (`/readyz`); it stays set, since a new CA reaches the configurations before
    /// any certificate it signed is served (`core::tls`).
    pub trusted: Arc<AtomicBool>,
}

/// Why one round did not finish; the next round tries again.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("reading the Secret {SECRET_NAME}: {0}")]
    Read(#[source] kube::Error),
    #[error("reading the webhook configurations: {0}")]
    Configurations(#[source] kube::Error),
    #[error("writing the Secret {SECRET_NAME}: {0}")]
    Write(#[source] kube::Error),
    #[error("issuing a certificate: {0}")]
    Issue(#[from] IssueError),
    #[error("writing {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The files the HTTPS server serves, in the private directory `dir`.
pub fn files_in(dir: &Path) -> TlsFiles {
    TlsFiles {
        cert_path: dir.join(TLS_CRT),
        key_path: dir.join(TLS_KEY),
    }
}

/// The CA bundle the webhook configurations should carry, in the private directory `dir`.
pub fn ca_bundle_in(dir: &Path) -> PathBuf {
    dir.join(CA_CRT)
}

impl SelfManagedTls {
    /// Keep the files (and, while leading, the Secret) current until dropped; `serving` turns
    /// true once usable files are written, and `trusted` once the webhooks trust them.
    pub async fn run(mut self, serving: watch::Sender<bool>) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut written: Option<Material> = None;
        let mut said_waiting = false;
        loop {
            // Seen now, so the wait below wakes only on the next change of leadership.
            let leading = self
                .leading
                .as_mut()
                .is_some_and(|leading| *leading.borrow_and_update());
            match self.round(&secrets, &mut written, leading).await {
                Ok(()) => {
                    if let Some(served) = &written {
                        serving.send_if_modified(|s| !std::mem::replace(s, true));
                        if let Err(error) = self.check_trust(served, &mut said_waiting).await {
                            tracing::warn!(%error, "self-managed certificates");
                        }
                    }
                }
                Err(RoundError::Write(kube::Error::Api(status))) if status.code == 409 => {
                    // Another replica wrote first: read what it wrote, now.
                    continue;
                }
                Err(error) => tracing::warn!(%error, "self-managed certificates"),
            }
            let wait = if written.is_some() && self.trusted.load(Ordering::Acquire) {
                POLL
            } else {
                FIRST_POLL
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // A replica that has just won the lease looks at once.
                Ok(()) = async {
                    match self.leading.as_mut() {
                        Some(leading) => leading.changed().await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }

    async fn round(
        &self,
        secrets: &Api<Secret>,
        written: &mut Option<Material>,
        leading: bool,
    ) -> Result<(), RoundError> {
        let secret = secrets
            .get_opt(SECRET_NAME)
            .await
            .map_err(RoundError::Read)?;
        let mut material = secret.as_ref().map(Material::of).unwrap_or_default();
        if leading {
            let now = Timestamp::now();
            let mut inspected = inspect(&material, &[]);
            let mut planned = plan(&inspected.found, &self.names, now);
            if planned.waiting_for_publication {
                // Only a move to a new CA depends on what the configurations carry, so they
                // are read only then.
                inspected = inspect(&material, &self.published_bundles().await?);
                planned = plan(&inspected.found, &self.names, now);
            }
            if planned.waiting_for_publication {
                tracing::info!(
                    "the serving certificate waits for the new CA to reach the webhook configurations"
                );
            }
            if planned.writes() {
                let next = renew(&material, &inspected, &planned, &self.names, now)?;
                write_secret(secrets, secret.as_ref(), &next).await?;
                tracing::info!(
                    secret = SECRET_NAME,
                    new_ca = planned.new_signer,
                    new_serving_certificate = planned.new_serving,
                    reasons = %planned.reasons.join("; "),
                    "self-managed certificates renewed"
                );
                material = next;
            }
        }
        if written.as_ref() != Some(&material) && material.serves() {
            self.write_files(&material).await?;
            *written = Some(material);
        }
        Ok(())
    }

    /// Until the webhook configurations trust the certificate this replica serves, look
    /// whether they do now (`trusted`), and say once that it waits for them.
    async fn check_trust(
        &self,
        served: &Material,
        said_waiting: &mut bool,
    ) -> Result<(), RoundError> {
        if self.trusted.load(Ordering::Acquire) {
            return Ok(());
        }
        let configured = self.webhook_bundles().await?;
        if trusted_by_every_webhook(&served.tls_crt, &configured.bundles) {
            self.trusted.store(true, Ordering::Release);
            tracing::info!(
                webhooks = configured.bundles.len(),
                "the webhook configurations trust this replica's serving certificate; ready"
            );
        } else if !std::mem::replace(said_waiting, true) {
            tracing::info!(
                "not ready until the webhook configurations carry the CA of this replica's serving certificate (the leader's operator injects it)"
            );
        }
        Ok(())
    }

    /// The CA bundles of every webhook of both configurations (none when one is missing).
    async fn published_bundles(&self) -> Result<Vec<Vec<u8>>, RoundError> {
        let configured = self.webhook_bundles().await?;
        Ok(if configured.both {
            configured.bundles
        } else {
            Vec::new()
        })
    }

    /// The CA bundles of the webhooks of whichever configurations exist.
    async fn webhook_bundles(&self) -> Result<WebhookBundles, RoundError> {
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let failed = RoundError::Configurations;
        let validating = validating
            .get_opt(CONFIGURATION_NAME)
            .await
            .map_err(failed)?;
        let mutating = mutating.get_opt(CONFIGURATION_NAME).await.map_err(failed)?;
        let both = validating.is_some() && mutating.is_some();
        let bundle = |b: &Option<ByteString>| b.as_ref().map(|b| b.0.clone()).unwrap_or_default();
        let mut bundles: Vec<Vec<u8>> = validating
            .and_then(|c| c.webhooks)
            .unwrap_or_default()
            .iter()
            .map(|w| bundle(&w.client_config.ca_bundle))
            .collect();
        bundles.extend(
            mutating
                .and_then(|c| c.webhooks)
                .unwrap_or_default()
                .iter()
                .map(|w| bundle(&w.client_config.ca_bundle)),
        );
        Ok(WebhookBundles { bundles, both })
    }

    /// Write the CA bundle, then the key, then the certificate (each replaced whole): the
    /// server takes a certificate and key only once they match.
    async fn write_files(&self, material: &Material) -> Result<(), RoundError> {
        for (name, text) in [
            (CA_CRT, &material.ca_crt),
            (TLS_KEY, &material.tls_key),
            (TLS_CRT, &material.tls_crt),
        ] {
            replace_file(&self.dir.join(name), text.as_bytes()).await?;
        }
        Ok(())
    }
}

/// The CA bundle of each webhook, and whether both configurations exist.
struct WebhookBundles {
    bundles: Vec<Vec<u8>>,
    both: bool,
}

/// Whether the API server would accept `serving_crt` from every webhook: each bundle holds
/// a CA that signed it. With no webhooks at all, nothing calls this replica, so nothing
/// waits on it either.
fn trusted_by_every_webhook(serving_crt: &str, bundles: &[Vec<u8>]) -> bool {
    let Some(der) = first_certificate(serving_crt) else {
        return false;
    };
    let Some(serving) = parse(&der) else {
        return false;
    };
    bundles.iter().all(|bundle| {
        certificates_in(bundle)
            .iter()
            .any(|ca| signed_by(&serving, ca))
    })
}

/// Write `path` through a temporary file and a rename, readable by this user only.
async fn replace_file(path: &Path, contents: &[u8]) -> Result<(), RoundError> {
    let failed = |source| RoundError::File {
        path: path.to_path_buf(),
        source,
    };
    let temporary = path.with_extension("new");
    let _ = tokio::fs::remove_file(&temporary).await;
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    let mut file = options.open(&temporary).await.map_err(failed)?;
    tokio::io::AsyncWriteExt::write_all(&mut file, contents)
        .await
        .map_err(failed)?;
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(failed)?;
    drop(file);
    tokio::fs::rename(&temporary, path).await.map_err(failed)
}

/// The Secret's contents, as text (missing or non-UTF-8 keys are empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Material {
    tls_crt: String,
    tls_key: String,
    ca_crt: String,
    signer_crt: String,
    signer_key: String,
}

impl Material {
    fn of(secret: &Secret) -> Material {
        let data = secret.data.clone().unwrap_or_default();
        let text = |key: &str| {
            data.get(key)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
                .unwrap_or_default()
        };
        Material {
            tls_crt: text(TLS_CRT),
            tls_key: text(TLS_KEY),
            ca_crt: text(CA_CRT),
            signer_crt: text(SIGNER_CRT),
            signer_key: text(SIGNER_KEY),
        }
    }

    /// A certificate and its key, and a CA bundle: something a replica can serve with.
    fn serves(&self) -> bool {
        !self.ca_crt.trim().is_empty()
            && first_certificate(&self.tls_crt).is_some_and(|der| key_matches(&der, &self.tls_key))
    }

    fn data(&self) -> BTreeMap<String, ByteString> {
        [
            (TLS_CRT, &self.tls_crt),
            (TLS_KEY, &self.tls_key),
            (CA_CRT, &self.ca_crt),
            (SIGNER_CRT, &self.signer_crt),
            (SIGNER_KEY, &self.signer_key),
        ]
        .into_iter()
        .map(|(key, text)| (key.to_string(), ByteString(text.as_bytes().to_vec())))
        .collect()
    }
}

/// What `inspect` found, with the bundle's certificates for writing it again.
struct Inspected {
    found: Found,
    bundle: Vec<CertificateDer<'static>>,
}

/// Read the Secret's certificates into what `core::tls` decides on.
fn inspect(material: &Material, published_bundles: &[Vec<u8>]) -> Inspected {
    let signer_der = first_certificate(&material.signer_crt).filter(|der| {
        parse(der).is_some_and(|cert| cert.is_ca()) && key_matches(der, &material.signer_key)
    });
    let signer = signer_der.as_ref().and_then(|der| validity(der));
    let bundle: Vec<CertificateDer<'static>> = certificates(&material.ca_crt)
        .into_iter()
        .filter(|der| parse(der).is_some_and(|cert| cert.is_ca()))
        .collect();
    let bundled = bundle
        .iter()
        .filter_map(|der| {
            Some(BundledCa {
                not_after: validity(der)?.not_after,
                is_signer: signer_der.as_ref() == Some(der),
            })
        })
        .collect();
    let serving = first_certificate(&material.tls_crt).and_then(|der| {
        let cert = parse(&der)?;
        let issued_by = if signer_der.as_ref().is_some_and(|ca| signed_by(&cert, ca)) {
            IssuedBy::Signer
        } else {
            bundle
                .iter()
                .position(|ca| signed_by(&cert, ca))
                .map_or(IssuedBy::Unknown, IssuedBy::Bundled)
        };
        Some(ServingFound {
            validity: validity(&der)?,
            names: names(&cert),
            key_matches: key_matches(&der, &material.tls_key),
            issued_by,
        })
    });
    let signer_published = !published_bundles.is_empty()
        && signer_der.as_ref().is_some_and(|signer| {
            published_bundles
                .iter()
                .all(|bundle| certificates_in(bundle).contains(signer))
        });
    Inspected {
        found: Found {
            signer,
            bundle: bundled,
            serving,
            signer_published,
        },
        bundle,
    }
}

/// The Secret's contents after `plan`.
fn renew(
    material: &Material,
    inspected: &Inspected,
    plan: &Plan,
    names: &BTreeSet<String>,
    now: Timestamp,
) -> Result<Material, RoundError> {
    let (signer_crt, signer_key) = if plan.new_signer {
        issue_ca(&format!("countersign webhook CA {}", now.as_second()), now)?
    } else {
        (material.signer_crt.clone(), material.signer_key.clone())
    };
    let (tls_crt, tls_key) = if plan.new_serving {
        issue_serving(&signer_crt, &signer_key, names, now)?
    } else {
        (material.tls_crt.clone(), material.tls_key.clone())
    };
    let mut ca_crt = first_certificate(&signer_crt)
        .map(|der| pem(&der))
        .unwrap_or_default();
    for kept in &plan.keep {
        if let Some(der) = inspected.bundle.get(*kept) {
            ca_crt.push_str(&pem(der));
        }
    }
    Ok(Material {
        tls_crt,
        tls_key,
        ca_crt,
        signer_crt,
        signer_key,
    })
}

/// Create the Secret, or replace it at the resourceVersion read (409 when another replica
/// wrote meanwhile).
async fn write_secret(
    secrets: &Api<Secret>,
    read: Option<&Secret>,
    material: &Material,
) -> Result<(), RoundError> {
    let params = PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let mut metadata = read
        .map(|s| s.metadata.clone())
        .unwrap_or_else(|| ObjectMeta {
            name: Some(SECRET_NAME.into()),
            ..ObjectMeta::default()
        });
    metadata.managed_fields = None;
    metadata
        .labels
        .get_or_insert_with(Default::default)
        .extend([
            (
                "app.kubernetes.io/name".to_string(),
                "countersign".to_string(),
            ),
            (
                "app.kubernetes.io/component".to_string(),
                "webhook-tls".to_string(),
            ),
        ]);
    let secret = Secret {
        metadata,
        type_: Some("kubernetes.io/tls".into()),
        data: Some(material.data()),
        ..Secret::default()
    };
    match read {
        None => secrets.create(&params, &secret).await,
        Some(_) => secrets.replace(SECRET_NAME, &params, &secret).await,
    }
    .map(drop)
    .map_err(RoundError::Write)
}

fn certificates(pem_text: &str) -> Vec<CertificateDer<'static>> {
    certificates_in(pem_text.as_bytes())
}

fn certificates_in(pem_bytes: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem_bytes)
        .filter_map(Result::ok)
        .collect()
}

fn first_certificate(pem_text: &str) -> Option<CertificateDer<'static>> {
    certificates(pem_text).into_iter().next()
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Option<X509Certificate<'a>> {
    X509Certificate::from_der(der.as_ref())
        .ok()
        .map(|(_, cert)| cert)
}

fn validity(der: &CertificateDer<'_>) -> Option<Validity> {
    let cert = parse(der)?;
    let at = |t: x509_parser::time::ASN1Time| Timestamp::from_second(t.timestamp()).ok();
    Some(Validity {
        not_before: at(cert.validity().not_before)?,
        not_after: at(cert.validity().not_after)?,
    })
}

/// The PEM private key `key_pem` is the key of the certificate.
fn key_matches(der: &CertificateDer<'_>, key_pem: &str) -> bool {
    let Some(cert) = parse(der) else {
        return false;
    };
    KeyPair::from_pem(key_pem)
        .is_ok_and(|key| key.subject_public_key_info() == cert.public_key().raw)
}

fn signed_by(cert: &X509Certificate<'_>, ca: &CertificateDer<'_>) -> bool {
    parse(ca).is_some_and(|ca| {
        cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok()
    })
}

/// The DNS names and IP addresses of the certificate's subjectAltName.
fn names(cert: &X509Certificate<'_>) -> BTreeSet<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return BTreeSet::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// One certificate as PEM.
fn pem(der: &CertificateDer<'_>) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut text = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str("-----END CERTIFICATE-----\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tls::{SERVING_LIFETIME, service_names};
    use jiff::SignedDuration;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("in range")
    }

    fn fresh(names: &BTreeSet<String>, at: Timestamp) -> Material {
        let empty = Material::default();
        let inspected = inspect(&empty, &[]);
        let plan = plan(&inspected.found, names, at);
        assert!(plan.new_signer && plan.new_serving);
        renew(&empty, &inspected, &plan, names, at).expect("issued")
    }

    #[test]
    fn a_fresh_secret_serves_and_inspects_as_healthy() {
        let names = service_names("cs", "countersign");
        let material = fresh(&names, now());
        assert!(material.serves());
        let published = vec![material.ca_crt.as_bytes().to_vec(); 2];
        let inspected = inspect(&material, &published);
        let found = &inspected.found;
        let serving = found.serving.as_ref().expect("a serving certificate");
        assert_eq!(serving.names, names);
        assert_eq!(serving.issued_by, IssuedBy::Signer);
        assert!(serving.key_matches && found.signer_published);
        assert_eq!(
            serving
                .validity
                .not_after
                .duration_since(serving.validity.not_before),
            SERVING_LIFETIME
        );
        assert_eq!(found.bundle.len(), 1);
        assert!(found.bundle[0].is_signer);
        let again = plan(found, &names, now());
        assert!(!again.writes(), "{:?}", again.reasons);
    }

    #[test]
    fn a_url_host_that_is_an_address_becomes_an_ip_name() {
        let names: BTreeSet<String> = ["127.0.0.1".to_string()].into();
        let material = fresh(&names, now());
        let inspected = inspect(&material, &[]);
        let serving = inspected.found.serving.expect("a serving certificate");
        assert_eq!(serving.names, names);
    }

    #[test]
    fn a_rotation_keeps_the_old_ca_trusted_and_then_moves_the_certificate() {
        let names = service_names("cs", "countersign");
        let old = fresh(&names, now());
        // Two thirds of the CA's life later, with a serving certificate renewed lately.
        let later = now()
            .checked_add(SignedDuration::from_hours(7 * 8766))
            .expect("in range");
        let (tls_crt, tls_key) =
            issue_serving(&old.signer_crt, &old.signer_key, &names, later).expect("issued");
        let before = Material {
            tls_crt,
            tls_key,
            ..old.clone()
        };
        let published = vec![before.ca_crt.as_bytes().to_vec(); 2];
        let inspected = inspect(&before, &published);
        let step = plan(&inspected.found, &names, later);
        assert!(step.new_signer && !step.new_serving && step.waiting_for_publication);
        let rotated = renew(&before, &inspected, &step, &names, later).expect("renewed");
        assert_eq!(
            rotated.tls_crt, before.tls_crt,
            "still the old CA's certificate"
        );
        assert_eq!(certificates(&rotated.ca_crt).len(), 2, "new CA and old CA");
        assert!(
            rotated.ca_crt.ends_with(&old.ca_crt),
            "the old CA stays trusted"
        );

        // Not yet in the configurations: nothing more.
        let inspected = inspect(&rotated, &published);
        assert!(!plan(&inspected.found, &names, later).writes());
        // Published: the serving certificate moves to the new CA.
        let published = vec![rotated.ca_crt.as_bytes().to_vec(); 2];
        let inspected = inspect(&rotated, &published);
        let step = plan(&inspected.found, &names, later);
        assert!(!step.new_signer && step.new_serving, "{step:?}");
        let moved = renew(&rotated, &inspected, &step, &names, later).expect("renewed");
        let inspected = inspect(&moved, &published);
        assert_eq!(
            inspected.found.serving.map(|s| s.issued_by),
            Some(IssuedBy::Signer)
        );
    }

    #[test]
    fn ready_only_once_every_webhook_trusts_the_served_certificate() {
        let names = service_names("cs", "countersign");
        let good = fresh(&names, now());
        let other = fresh(&names, now());
        let ca = || good.ca_crt.as_bytes().to_vec();
        let cases: [(&str, &str, Vec<Vec<u8>>, bool); 8] = [
            ("no webhooks: nothing calls it", &good.tls_crt, vec![], true),
            (
                "every webhook carries its CA",
                &good.tls_crt,
                vec![ca(); 3],
                true,
            ),
            (
                "one webhook not injected yet",
                &good.tls_crt,
                vec![ca(), Vec::new(), ca()],
                false,
            ),
            (
                "another CA only",
                &good.tls_crt,
                vec![other.ca_crt.as_bytes().to_vec(); 2],
                false,
            ),
            (
                "a rotation's bundle: another CA and its own",
                &good.tls_crt,
                vec![format!("{}{}", other.ca_crt, good.ca_crt).into_bytes(); 2],
                true,
            ),
            (
                "the serving certificate passed off as the bundle",
                &good.tls_crt,
                vec![good.tls_crt.as_bytes().to_vec(); 2],
                false,
            ),
            (
                "a bundle of garbage",
                &good.tls_crt,
                vec![b"garbage".to_vec()],
                false,
            ),
            ("nothing served", "garbage", vec![], false),
        ];
        for (case, served, bundles, trusted) in cases {
            assert_eq!(
                trusted_by_every_webhook(served, &bundles),
                trusted,
                "{case}"
            );
        }
    }

    #[test]
    fn garbage_in_the_secret_is_replaced_not_trusted() {
        let names = service_names("cs", "countersign");
        let good = fresh(&names, now());
        let other = fresh(&names, now());
        let cases = [
            (
                "a key that belongs to another certificate",
                Material {
                    tls_key: other.tls_key.clone(),
                    ..good.clone()
                },
            ),
            (
                "a serving certificate from another CA",
                Material {
                    tls_crt: other.tls_crt.clone(),
                    tls_key: other.tls_key.clone(),
                    ..good.clone()
                },
            ),
            (
                "not PEM at all",
                Material {
                    tls_crt: "garbage".into(),
                    signer_crt: "garbage".into(),
                    ..good.clone()
                },
            ),
            (
                "the serving certificate passed off as the CA",
                Material {
                    signer_crt: good.tls_crt.clone(),
                    signer_key: good.tls_key.clone(),
                    ..good.clone()
                },
            ),
        ];
        for (what, material) in cases {
            let inspected = inspect(&material, &[]);
            let step = plan(&inspected.found, &names, now());
            assert!(step.writes(), "{what}");
            let renewed = renew(&material, &inspected, &step, &names, now()).expect("renewed");
            let inspected = inspect(&renewed, &[renewed.ca_crt.as_bytes().to_vec()]);
            let serving = inspected.found.serving.expect("a serving certificate");
            assert!(
                serving.key_matches && serving.issued_by != IssuedBy::Unknown,
                "{what}: {serving:?}"
            );
            assert!(renewed.serves(), "{what}");
        }
    }

    #[test]
    fn pem_round_trips() {
        let material = fresh(&["a".to_string()].into(), now());
        let der = first_certificate(&material.signer_crt).expect("a certificate");
        assert_eq!(first_certificate(&pem(&der)), Some(der));
    }
}
