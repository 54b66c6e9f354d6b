//! The samples in tests/fixtures/crd-samples/ are applied to a real API server by the
//! integration tests, which expect them back unchanged. These checks catch the usual
//! causes of a failed round trip without a cluster: an unknown (pruned) field, a field
//! the API server would default, a namespace, or a status (a subresource, so ignored).

use std::path::{Path, PathBuf};

use countersign::api::{ApprovalPolicy, AuditEntry, ChangeSet, DeploymentApproval};
use countersign::cli::input::{decode_all, documents};
use countersign::core::policy::validation::validate_policy;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crd-samples")
}

/// Decode strictly, and check that serialising the typed object gives the file back:
/// every field is known and every defaulted field is spelled out.
fn round_trip<T: DeserializeOwned + Serialize>(file: &str) -> (T, Value) {
    let path = samples_dir().join(file);
    let text = std::fs::read_to_string(&path).expect("read sample");
    let mut raw = documents(&path, &text).expect("valid YAML");
    assert_eq!(raw.len(), 1, "{file}: one document");
    let raw = raw.remove(0);
    let mut typed = decode_all::<T>(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    let typed = typed.remove(0);
    let back = serde_json::to_value(&typed).expect("serialise");
    assert_eq!(
        back, raw,
        "{file}: the typed object differs from the file: a field is unknown or left to a default"
    );
    assert!(
        raw.get("status").is_none(),
        "{file}: status is a subresource; leave it out"
    );
    assert!(
        raw.pointer("/metadata/namespace").is_none(),
        "{file}: the integration test chooses the namespace"
    );
    let name = raw
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(
        name.starts_with("sample-"),
        "{file}: fixed name sample-…, got {name:?}"
    );
    (typed, raw)
}

#[test]
fn approval_policy_sample_round_trips_and_is_valid() {
    let (policy, _) = round_trip::<ApprovalPolicy>("approvalpolicy.yaml");
    let validation = validate_policy(&policy.spec);
    assert!(validation.is_valid(), "{:?}", validation.errors);
}

#[test]
fn deployment_approval_sample_round_trips() {
    let (approval, _) = round_trip::<DeploymentApproval>("deploymentapproval.yaml");
    assert!(!approval.spec.reviews.is_empty());
}

#[test]
fn change_set_sample_round_trips() {
    let (set, _) = round_trip::<ChangeSet>("changeset.yaml");
    assert!(set.spec.members.len() >= 2 && !set.spec.reviews.is_empty());
    assert!(set.spec.change.origin.is_some());
}

#[test]
fn audit_entry_sample_round_trips() {
    round_trip::<AuditEntry>("auditentry.yaml");
}

#[test]
fn there_is_one_sample_per_kind() {
    let mut files: Vec<String> = std::fs::read_dir(samples_dir())
        .expect("list samples")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "approvalpolicy.yaml",
            "auditentry.yaml",
            "changeset.yaml",
            "deploymentapproval.yaml"
        ]
    );
}
