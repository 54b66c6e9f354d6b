//! A request's summary is countersign's own (SPEC §3): what approvers are shown (the
//! summary, the target, the digest it describes, who asked and when) is sealed with an
//! HMAC under a key only countersign holds. The webhook seals every request it opens and
//! every request it proposes to a dry run (`countersign request` opens that one as it is);
//! a request created by anyone else is refused unless its seal is countersign's; and one
//! that exists anyway (made while the webhook was bypassed, or before the key changed) is
//! shown as unverified everywhere, by the operator's `SummaryVerified` condition.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use ring::hmac;
use serde_json::json;

use crate::api::{ChangeSummary, DeploymentApprovalSpec};
use crate::core::change::canonical_json;

/// The seal's version prefix; a later scheme gets another.
const SEAL_VERSION: &str = "v1:";
/// The shortest key accepted (HMAC-SHA256's block of security).
pub const MIN_KEY_BYTES: usize = 32;
/// The condition the operator keeps on every request.
pub const SUMMARY_VERIFIED_CONDITION: &str = "SummaryVerified";
/// How the summary of an unverified request is shown, before its own text.
pub const UNVERIFIED_MARK: &str =
    "UNVERIFIED SUMMARY (not computed by countersign; inspect the change itself)";

/// The key requests are sealed with.
pub struct SealKey(hmac::Key);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(…)")
    }
}

impl SealKey {
    /// A key from its secret bytes; `None` when they are too few.
    pub fn new(secret: &[u8]) -> Option<SealKey> {
        (secret.len() >= MIN_KEY_BYTES).then(|| SealKey(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }
}

/// What a seal covers, as canonical JSON: everything an approver reads about the change.
fn sealed_content(namespace: &str, spec: &DeploymentApprovalSpec) -> String {
    let change = &spec.change;
    canonical_json(&json!({
        "namespace": namespace,
        "target": spec.target,
        "digest": change.digest,
        "operation": change.operation,
        "requester": change.requester.username,
        "requestedAt": change.requested_at,
        "summary": change.summary,
    }))
}

/// The seal of `spec` in `namespace`: `v1:` and the HMAC in lowercase hex.
pub fn seal(key: &SealKey, namespace: &str, spec: &DeploymentApprovalSpec) -> String {
    let tag = hmac::sign(&key.0, sealed_content(namespace, spec).as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{SEAL_VERSION}{hex}")
}

/// countersign's seal over any `text` it wrote and reads back (a sync round's part shared
/// between replicas): `v1:` and the HMAC in lowercase hex.
pub fn seal_text(key: &SealKey, text: &str) -> String {
    let tag = hmac::sign(&key.0, text.as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{SEAL_VERSION}{hex}")
}

/// Whether `seal` is countersign's over `text`, in constant time.
pub fn is_sealed_text(key: &SealKey, text: &str, seal: &str) -> bool {
    seal.strip_prefix(SEAL_VERSION)
        .and_then(decode_hex)
        .is_some_and(|tag| hmac::verify(&key.0, text.as_bytes(), &tag).is_ok())
}

/// `spec` with its seal set.
pub fn sealed(
    key: &SealKey,
    namespace: &str,
    mut spec: DeploymentApprovalSpec,
) -> DeploymentApprovalSpec {
    spec.change.summary_seal = Some(seal(key, namespace, &spec));
    spec
}

/// Whether a request's summary is countersign's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealCheck {
    Verified,
    /// No seal at all.
    Missing,
    /// A seal, but not one countersign made for this content.
    Mismatch,
}

impl SealCheck {
    pub fn verified(self) -> bool {
        self == SealCheck::Verified
    }

    /// Why a request is not verified, for messages.
    pub fn problem(self) -> Option<&'static str> {
        match self {
            SealCheck::Verified => None,
            SealCheck::Missing => Some("it carries no seal"),
            SealCheck::Mismatch => Some(
                "its seal does not match its summary, target, digest, requester or time: someone other than countersign wrote them",
            ),
        }
    }
}

/// Check `spec`'s seal in constant time.
pub fn check(key: &SealKey, namespace: &str, spec: &DeploymentApprovalSpec) -> SealCheck {
    let Some(seal) = spec.change.summary_seal.as_deref() else {
        return SealCheck::Missing;
    };
    let Some(tag) = seal.strip_prefix(SEAL_VERSION).and_then(decode_hex) else {
        return SealCheck::Mismatch;
    };
    match hmac::verify(&key.0, sealed_content(namespace, spec).as_bytes(), &tag) {
        Ok(()) => SealCheck::Verified,
        Err(_) => SealCheck::Mismatch,
    }
}

/// Lowercase or uppercase hex as bytes; `None` when it is not hex.
pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The summary as it must be shown when it is not verified: marked in its one line, so
/// every surface that shows the line (notices, the trail, Events) says so.
pub fn marked_unverified(summary: &ChangeSummary) -> ChangeSummary {
    let mut marked = summary.clone();
    if !marked.text.starts_with(UNVERIFIED_MARK) {
        marked.text = format!("{UNVERIFIED_MARK}: {}", summary.text);
    }
    marked
}

/// The `SummaryVerified` condition for `check`.
pub fn verified_condition(check: SealCheck, now: Timestamp, generation: Option<i64>) -> Condition {
    let (status, reason, message) = match check.problem() {
        None => (
            "True",
            "Sealed",
            "the summary is countersign's own for this change".to_string(),
        ),
        Some(problem) => (
            "False",
            if check == SealCheck::Missing {
                "NotSealed"
            } else {
                "SealMismatch"
            },
            format!("{UNVERIFIED_MARK}: {problem}"),
        ),
    };
    Condition {
        type_: SUMMARY_VERIFIED_CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: Time(now),
        observed_generation: generation,
    }
}

/// Is `condition` one saying the summary is not verified?
pub fn is_unverified(conditions: &[Condition]) -> Option<bool> {
    conditions
        .iter()
        .find(|c| c.type_ == SUMMARY_VERIFIED_CONDITION)
        .map(|c| c.status != "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FieldChange, Risk};
    use crate::core::test_builders::two_level_request;

    fn key(byte: u8) -> SealKey {
        SealKey::new(&[byte; 32]).expect("a key")
    }

    #[test]
    fn a_sealed_request_verifies_and_any_edit_breaks_it() {
        let mut request = two_level_request(&[], None);
        request.spec.change.summary.changes.push(FieldChange {
            path: "/spec/template/spec/hostPID".into(),
            risk: Some(Risk::HostNamespaces),
            before: None,
            after: Some("true".into()),
        });
        let spec = sealed(&key(1), "shop", request.spec.clone());
        assert_eq!(check(&key(1), "shop", &spec), SealCheck::Verified);
        assert_eq!(check(&key(2), "shop", &spec), SealCheck::Mismatch);
        assert_eq!(check(&key(1), "other", &spec), SealCheck::Mismatch);
        type Edit = Box<dyn Fn(&mut DeploymentApprovalSpec)>;
        let edits: Vec<(&str, Edit)> = vec![
            (
                "a summary listing only the image bump",
                Box::new(|s| {
                    s.change.summary.text = "Deployment shop/web: image web a → b".into();
                }),
            ),
            (
                "a security-relevant change dropped",
                Box::new(|s| s.change.summary.changes.clear()),
            ),
            (
                "another digest",
                Box::new(|s| s.change.digest = format!("sha256:{}", "0".repeat(64))),
            ),
            (
                "another requester",
                Box::new(|s| s.change.requester.username = "erin".into()),
            ),
            ("another target", Box::new(|s| s.target.name = "api".into())),
            (
                "another time",
                Box::new(|s| s.change.requested_at = Time(Timestamp::UNIX_EPOCH)),
            ),
            ("no seal", Box::new(|s| s.change.summary_seal = None)),
            (
                "a malformed seal",
                Box::new(|s| s.change.summary_seal = Some("v1:zz".into())),
            ),
        ];
        for (what, edit) in edits {
            let mut forged = spec.clone();
            edit(&mut forged);
            assert!(!check(&key(1), "shop", &forged).verified(), "{what}");
        }
    }

    #[test]
    fn short_keys_are_refused_and_unverified_summaries_are_marked_once() {
        assert!(SealKey::new(&[0; 16]).is_none());
        let summary = ChangeSummary {
            text: "Deployment shop/web: image web a → b".into(),
            ..ChangeSummary::default()
        };
        let marked = marked_unverified(&summary);
        assert!(marked.text.starts_with(UNVERIFIED_MARK));
        assert_eq!(marked_unverified(&marked), marked);
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(
            is_unverified(&[verified_condition(SealCheck::Mismatch, now, None)]),
            Some(true)
        );
        assert_eq!(
            is_unverified(&[verified_condition(SealCheck::Verified, now, None)]),
            Some(false)
        );
        assert_eq!(is_unverified(&[]), None);
    }
}
