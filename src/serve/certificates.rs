//! Issuing countersign's webhook certificates: a CA, and serving certificates it signs (ECDSA
//! P-256, with rcgen). Local mode and self-managed certificates both issue through here.

use std::collections::BTreeSet;
use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::core::tls::{BACKDATE, SERVING_LIFETIME, SIGNER_LIFETIME};

/// Why a certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("{0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("a validity time out of range: {0}")]
    Time(String),
}

/// A new CA named `common_name`, valid `SIGNER_LIFETIME`: (certificate, key) as PEM.
pub fn issue_ca(common_name: &str, now: Timestamp) -> Result<(String, String), IssueError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    valid_for(&mut params, now, SIGNER_LIFETIME)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `names` (DNS names, or IP addresses as text) issued by the CA,
/// valid `SERVING_LIFETIME`: (certificate, key) as PEM.
pub fn issue_serving(
    signer_crt: &str,
    signer_key: &str,
    names: &BTreeSet<String>,
    now: Timestamp,
) -> Result<(String, String), IssueError> {
    let issuer = Issuer::from_ca_cert_pem(signer_crt, KeyPair::from_pem(signer_key)?)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let common_name = names
        .iter()
        .find(|n| n.ends_with(".svc"))
        .or_else(|| names.first())
        .cloned()
        .unwrap_or_else(|| "countersign".into());
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(name.as_str().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    valid_for(&mut params, now, SERVING_LIFETIME)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// From `BACKDATE` before `now` for `life`.
fn valid_for(
    params: &mut CertificateParams,
    now: Timestamp,
    life: SignedDuration,
) -> Result<(), IssueError> {
    let at = |t: Timestamp| {
        time::OffsetDateTime::from_unix_timestamp(t.as_second())
            .map_err(|_| IssueError::Time(t.to_string()))
    };
    let start = now.checked_sub(BACKDATE).unwrap_or(now);
    let end = start
        .checked_add(life)
        .map_err(|_| IssueError::Time(format!("{start} + {life}")))?;
    params.not_before = at(start)?;
    params.not_after = at(end)?;
    Ok(())
}
