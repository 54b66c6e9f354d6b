//! Who is calling the webhook: the API server presents a client certificate to webhooks
//! when it is configured to (`--admission-control-config-file`, a
//! `WebhookAdmissionConfiguration` whose kubeconfig names the certificate; see
//! docs/install.md). countersign verifies it against a CA (`--client-ca-file`, followed on
//! disk like the serving certificate) and, when given, the names it may carry
//! (`--client-name`). A review from any other caller is answered 401 with no effect.
//!
//! Without `--client-ca-file` (a managed cluster whose API server cannot be configured),
//! reviews are taken from whoever reaches the port: the chart's NetworkPolicy admits only
//! the control plane, each such review is counted, and what the webhook writes says its
//! caller was not authenticated (docs/security.md).

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::api::{CallerAuthentication, ReviewCaller};

/// How often the CA file is read again.
const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// How the webhook's callers are authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAuth {
    /// PEM CA bundle that signs the API server's client certificate.
    pub ca_file: PathBuf,
    /// Names (common name or DNS SAN) a client certificate may carry; empty: any the CA
    /// signed.
    pub allowed_names: Vec<String>,
}

/// The caller of one connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Caller {
    /// A client certificate the CA signed, with an allowed name.
    Authenticated { name: String },
    /// A client certificate the CA signed, but with none of the allowed names.
    NameNotAllowed { names: Vec<String> },
    /// No client certificate.
    #[default]
    Anonymous,
}

impl Caller {
    /// Who the caller is, of the certificate's names.
    pub fn of(peer: Option<&[CertificateDer<'_>]>, allowed: &[String]) -> Caller {
        let Some(leaf) = peer.and_then(<[_]>::first) else {
            return Caller::Anonymous;
        };
        let names = certificate_names(leaf);
        if allowed.is_empty() {
            return match names.into_iter().next() {
                Some(name) => Caller::Authenticated { name },
                None => Caller::Authenticated {
                    name: "(unnamed client certificate)".into(),
                },
            };
        }
        match names.iter().find(|n| allowed.contains(n)) {
            Some(name) => Caller::Authenticated { name: name.clone() },
            None => Caller::NameNotAllowed { names },
        }
    }

    pub fn is_authenticated(&self) -> bool {
        matches!(self, Caller::Authenticated { .. })
    }

    /// How an AuditEntry written for this caller's review records it.
    pub fn record(&self) -> ReviewCaller {
        match self {
            Caller::Authenticated { name } => ReviewCaller {
                authentication: CallerAuthentication::ClientCertificate,
                name: Some(name.clone()),
            },
            _ => ReviewCaller {
                authentication: CallerAuthentication::None,
                name: None,
            },
        }
    }

    /// Why a caller is refused, for the 401's body and the log.
    pub fn refusal(&self) -> String {
        match self {
            Caller::Authenticated { .. } => String::new(),
            Caller::NameNotAllowed { names } => format!(
                "countersign answers reviews from the API server only: this client certificate names {}, which --client-name does not allow",
                if names.is_empty() {
                    "nothing".to_string()
                } else {
                    names.join(", ")
                }
            ),
            Caller::Anonymous => "countersign answers reviews from the API server only, which presents its client certificate (docs/install.md); this caller presented none".into(),
        }
    }
}

/// The common name and DNS names of a certificate, common name first.
fn certificate_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, certificate)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = certificate
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = certificate.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_string());
            }
        }
    }
    names
}

/// Why the CA file gives no verifier.
#[derive(Debug, thiserror::Error)]
pub enum ClientCaError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Unusable { path: String, message: String },
}

/// A client-certificate verifier that follows its CA file: a rotated CA reaches new
/// connections, a broken file keeps the current one (and warns). Certificates are
/// optional at the TLS level, so probes and metrics need none; the router refuses a review
/// without one.
#[derive(Debug)]
pub struct ReloadingClientVerifier {
    file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<(Vec<u8>, Arc<dyn ClientCertVerifier>)>,
}

impl ReloadingClientVerifier {
    /// The verifier of `file`'s CA bundle; errors name the file.
    pub fn load(
        file: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingClientVerifier, ClientCaError> {
        let pem = std::fs::read(&file).map_err(|source| ClientCaError::Read {
            path: file.display().to_string(),
            source,
        })?;
        let verifier = verifier_of(&file, &pem, &provider)?;
        Ok(ReloadingClientVerifier {
            file,
            provider,
            current: RwLock::new((pem, verifier)),
        })
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }

    /// Read the file again every few seconds, for as long as the task runs.
    pub async fn follow_file(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RELOAD_INTERVAL).await;
            let Ok(pem) = tokio::fs::read(&self.file).await else {
                continue;
            };
            let unchanged = self
                .current
                .read()
                .map(|current| current.0 == pem)
                .unwrap_or(true);
            if unchanged {
                continue;
            }
            match verifier_of(&self.file, &pem, &self.provider) {
                Ok(verifier) => {
                    *self.current.write().unwrap_or_else(PoisonError::into_inner) = (pem, verifier);
                    tracing::info!(file = %self.file.display(), "verifying callers against the changed client CA");
                }
                Err(error) => {
                    tracing::warn!(%error, "keeping the current client CA");
                    // Do not warn again for the same broken content.
                    if let Ok(mut current) = self.current.write() {
                        current.0 = pem;
                    }
                }
            }
        }
    }
}

fn verifier_of(
    file: &std::path::Path,
    pem: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, ClientCaError> {
    let unusable = |message: String| ClientCaError::Unusable {
        path: file.display().to_string(),
        message,
    };
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(e.to_string()))?;
    if certificates.is_empty() {
        return Err(unusable("no CERTIFICATE block".into()));
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|e| unusable(format!("not a CA certificate: {e}")))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| unusable(e.to_string()))
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: a client then sends the certificate it has (the API server has one).
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}
