//! What the fuzz targets do with their bytes, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`) and the stable replay of the seeds and regressions
//! (`tests/fuzz_corpus.rs`), so a seed replayed in CI runs exactly what the fuzzer ran.
//!
//! Each reader is pushed as far as pure code goes (no network, no cluster, no clock: `now`
//! is fixed): a panic anywhere is a finding. Cheap invariants that hold for every input are
//! asserted as well.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use countersign::api::{
    ApprovalPolicy, AuditEntry, ChangeSet, DeploymentApproval, Operation as ChangeOperation,
    UserInfo,
};
use countersign::cli::input::{self, MAX_NESTING};
use countersign::cli::{manifest_set, output};
use countersign::core::admission::decision::{
    DecisionInput, ValidateOnTheSpot, Verdict, decide, snapshot_problem,
};
use countersign::core::admission::proposal::proposal;
use countersign::core::admission::review::{
    WorkloadReview, old_version_of, sync_member, workload_plan,
};
use countersign::core::approval::chain::{ApprovalChain, RoleBindingSnapshot};
use countersign::core::approval::request::{
    RequestCreate, validate_life_metadata_edit, validate_request_create,
};
use countersign::core::approval::review::{
    ReviewEdit, review_groups, stamp_appended_reviews, validate_review_edit,
    validate_review_standing,
};
use countersign::core::approval::seal::SealKey;
use countersign::core::audit::ground::{GroundChange, judge_ground_change, request_deleted_entry};
use countersign::core::change::summary::summarize;
use countersign::core::change::{
    ChangeDigest, canonical_json, is_workload, object_reference, readable_object,
};
use countersign::core::policy::authorship::stamp_policy_change;
use countersign::core::policy::matching::{
    ChangeRequest, gated_label_patch, namespace_labels_of, policy_matches, policy_named,
    selects_namespaces_by_label,
};
use countersign::core::policy::validation::{admission_answer, policy_status, validate_policy};
use countersign::webhook::client_auth::Caller;
use countersign::webhook::request::{BadReview, Parsed, Request, decode, parse};
use jiff::Timestamp;
use kube::core::admission::Operation;
use serde_json::Value;

/// A Wednesday morning: no weekend freeze, so workload changes reach the approval chain.
const NOW: &str = "2025-06-04T10:00:00Z";
/// The region of namespaces without a region label.
const REGION: &str = "eu-west-1";

fn now() -> Timestamp {
    NOW.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The setting the webhook decides in: the example policies and requests, and the labels
/// of the example namespace (production, eu-west-1), read once.
struct Setting {
    policies: Vec<ApprovalPolicy>,
    approvals: Vec<DeploymentApproval>,
    labels: BTreeMap<String, String>,
    bindings: RoleBindingSnapshot,
    seal_key: SealKey,
}

fn setting() -> &'static Setting {
    static SETTING: OnceLock<Setting> = OnceLock::new();
    SETTING.get_or_init(|| {
        let file = Path::new("examples");
        let policies = [
            include_str!("../examples/policies/production-eu.yaml"),
            include_str!("../examples/policies/supply-chain-checks.yaml"),
            include_str!("../examples/policies/weekend-freeze.yaml"),
        ]
        .iter()
        .flat_map(|text| input::decode_all::<ApprovalPolicy>(file, text).unwrap_or_default())
        .collect();
        let approvals = [
            include_str!("../examples/approvals/web-pending.yaml"),
            include_str!("../examples/approvals/web-approved.yaml"),
            include_str!("../examples/approvals/web-rejected.yaml"),
        ]
        .iter()
        .flat_map(|text| input::decode_all::<DeploymentApproval>(file, text).unwrap_or_default())
        .collect();
        let namespace = input::documents(file, include_str!("../examples/namespace-shop.yaml"))
            .unwrap_or_default();
        let labels = namespace
            .first()
            .map(namespace_labels_of)
            .unwrap_or_default();
        Setting {
            policies,
            approvals,
            labels,
            bindings: RoleBindingSnapshot::default(),
            seal_key: SealKey::new(&[7; 32]).unwrap_or_else(|| panic!("a 32-byte seal key")),
        }
    })
}

// ---------------------------------------------------------------------------------------
// The review decoder: an AdmissionReview body as the webhook receives it.

/// Parse a body as the webhook does, then run every pure step of the review paths on it.
pub fn review(data: &[u8]) {
    match parse(data) {
        Err(BadReview(why)) => assert!(!why.is_empty(), "a 400 says why"),
        Ok(Parsed::Unreadable(response)) => {
            // Fail closed, under the uid the body carries.
            assert!(!response.allowed, "an unreadable request is denied");
            assert!(!response.result.message.is_empty(), "with a reason");
            let body: Value = serde_json::from_slice(data)
                .unwrap_or_else(|e| panic!("an Unreadable body is JSON: {e}"));
            let uid = body.pointer("/request/uid").and_then(Value::as_str);
            assert_eq!(Some(response.uid.as_str()), uid, "answered under its uid");
            assert!(!response.uid.is_empty());
        }
        Ok(Parsed::Request(request)) => {
            assert!(!request.uid.is_empty(), "a parsed request has a uid");
            let allowed = request.allow();
            assert_eq!(allowed.uid, request.uid);
            assert!(allowed.allowed);
            let _ = request.resource_label();
            let _ = request.dry_run();
            decoded_kinds(&request);
            approval_paths(&request);
            policy_paths(&request);
            workload_path(&request);
        }
    }
}

/// `decode` of the object and oldObject as every kind the webhook decodes; what is read
/// is checked as the webhook checks it.
fn decoded_kinds(request: &Request) {
    for object in [request.object.as_ref(), request.old_object.as_ref()] {
        if let Ok(approval) = decode::<DeploymentApproval>(object) {
            let _ = snapshot_problem(&approval);
            let _ = approval.phase();
        }
        if let Ok(set) = decode::<ChangeSet>(object) {
            let _ = set.phase();
        }
        let _ = decode::<AuditEntry>(object);
        if let Err(why) = decode::<ApprovalPolicy>(object) {
            assert!(why.starts_with("countersign cannot decode") || object.is_none());
        }
    }
}

/// `/validate/approvals` and `/mutate/approvals` on a DeploymentApproval: create, edit,
/// stamp, delete.
fn approval_paths(request: &Request) {
    let setting = setting();
    let author = request.requester();
    let namespace = request.namespace.clone().unwrap_or_default();
    let new = decode::<DeploymentApproval>(request.object.as_ref());
    let old = decode::<DeploymentApproval>(request.old_object.as_ref());
    if let Ok(approval) = &new {
        let _ = validate_request_create(&RequestCreate {
            approval,
            creator: &author,
            namespace: &namespace,
            namespace_labels: &setting.labels,
            cluster_region: Some(REGION),
            target_object: None,
            policies: &setting.policies,
            seal_key: &setting.seal_key,
            validations: &ValidateOnTheSpot,
            now: now(),
        });
    }
    if let (Ok(old), Ok(new)) = (&old, &new) {
        let _ = validate_life_metadata_edit(&old.metadata, &new.metadata, &author.username);
        if let Ok(ReviewEdit::Appended(review)) =
            validate_review_edit(&old.spec, &new.spec, &author, now())
        {
            let _ = validate_review_standing(old, &review, &setting.bindings, now());
        }
    }
    if let (Ok(old), Some(object)) = (&old, request.object.as_ref()) {
        let chain = ApprovalChain {
            settings: &old.spec.policy.chain,
            requester: &old.spec.change.requester,
            namespace: &namespace,
            bindings: &setting.bindings,
            requested_at: old.spec.change.requested_at.0,
        };
        let groups = review_groups(&chain, &author);
        let _ = stamp_appended_reviews(old.spec.reviews.len(), object, &author, &groups, now());
    }
    if let Ok(old) = &old {
        let policy = policy_named(&setting.policies, &old.spec.policy.name);
        let verdict =
            judge_ground_change(GroundChange::RequestDeleted(old.phase()), policy, &author);
        let _ = request_deleted_entry(old, &author, verdict.reason(), now());
    }
}

/// `/validate/policies`, `/mutate/policies` and `/mutate/namespaces`.
fn policy_paths(request: &Request) {
    let setting = setting();
    let author = request.requester();
    if let Ok(policy) = decode::<ApprovalPolicy>(request.object.as_ref()) {
        let name = policy.metadata.name.clone().unwrap_or_default();
        let answer = admission_answer(&name, validate_policy(&policy.spec));
        assert!(
            answer.allowed || !answer.message.is_empty(),
            "a refusal says why"
        );
    }
    if let Some(object) = request.object.as_ref() {
        let old = match request.operation {
            Operation::Update => request.old_object.as_ref(),
            _ => None,
        };
        let _ = stamp_policy_change(old, object, &author, now());
        let _ = gated_label_patch(&setting.policies, object, Some(REGION));
        let _ = namespace_labels_of(object);
    }
}

/// `/validate/workloads`: the decision on the change and the plan that answers it, with
/// the example policies and requests, as `webhook::workloads` runs them.
fn workload_path(request: &Request) {
    let setting = setting();
    let operation = match request.operation {
        Operation::Create => ChangeOperation::Create,
        Operation::Update => ChangeOperation::Update,
        _ => return,
    };
    let Some(object) = &request.object else {
        return;
    };
    let old_object = request.old_object.as_ref();
    if readable_object(object).is_err()
        || old_object.map(readable_object).is_some_and(|r| r.is_err())
    {
        return;
    }
    let namespace = request.namespace.clone().unwrap_or_default();
    let requester = request.requester();
    let change = ChangeRequest {
        operation,
        object,
        old_object,
        namespace: &namespace,
        namespace_labels: &setting.labels,
        requester: &requester,
        cluster_region: Some(REGION),
        dry_run: request.dry_run(),
    };
    let decision = decide(&DecisionInput {
        request: change,
        policies: &setting.policies,
        approvals: &setting.approvals,
        bindings: &setting.bindings,
        now: now(),
        validations: &ValidateOnTheSpot,
    });
    let summary = decision.summary(&change);
    let report = output::report(&decision, object, &summary);
    let _ = output::text(&decision, &report);
    if let Verdict::ApprovalRequired(requirement) = &decision.verdict {
        let _ = proposal(requirement);
    }
    // An authenticated caller, so a GitOps dry run reaches its sync round too.
    let caller = Caller::Authenticated {
        name: "kube-apiserver".into(),
    }
    .record();
    let review = WorkloadReview {
        dry_run: request.dry_run(),
        requester: &requester,
        namespace: &namespace,
        target: object_reference(object, &namespace),
        old_version: old_version_of(old_object),
        install_namespace: "countersign-system",
        replica: "fuzz",
        caller: &caller,
        seal_key: &setting.seal_key,
        now: now(),
    };
    let _ = sync_member(&review, &decision);
    let plan = workload_plan(&review, &decision);
    assert_eq!(
        plan.answer.allowed,
        decision.allowed(),
        "the plan answers as decided"
    );
    if !plan.answer.allowed {
        assert!(!plan.answer.message.is_empty(), "a denial says why");
    }
}

// ---------------------------------------------------------------------------------------
// The policy parser: ApprovalPolicy files as `countersign check --policy` reads them.

/// Read a file of ApprovalPolicies as `check` does; validate each; a valid one is put to
/// work: matched against the example change and decided on.
pub fn policy(data: &[u8]) {
    // `input::read` refuses a file that is not UTF-8 before anything parses it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("policy.yaml");
    let api_version = "countersign.dev/v1alpha1";
    let decoded = input::decode_all_checked::<ApprovalPolicy>(file, text, |document| {
        input::expect_kind(file, document, api_version, "ApprovalPolicy")
    });
    let policies = match decoded {
        Ok(policies) => policies,
        Err(error) => {
            assert!(!error.message.is_empty(), "an error says why");
            return;
        }
    };
    let mut valid = Vec::new();
    for policy in policies {
        // What decoded once re-encodes and decodes to the same policy.
        let json = serde_json::to_value(&policy)
            .unwrap_or_else(|e| panic!("a decoded policy encodes: {e}"));
        match input::decode_value::<ApprovalPolicy>(file, &json, "") {
            Ok(again) => {
                assert_eq!(
                    again.metadata, policy.metadata,
                    "metadata survives a round trip"
                );
                assert_eq!(again.spec, policy.spec, "the spec survives a round trip");
            }
            Err(error) => panic!("a decoded policy decodes again: {error}\n{json}"),
        }
        let validation = validate_policy(&policy.spec);
        let _ = policy_status(&policy, now());
        let _ = admission_answer(
            policy.metadata.name.as_deref().unwrap_or_default(),
            validation.clone(),
        );
        if validation.is_valid() {
            valid.push(policy);
        }
    }
    if valid.is_empty() {
        return;
    }
    let (old, new) = example_change();
    let setting = setting();
    let requester = UserInfo {
        username: "dev".into(),
        groups: vec!["shop-devs".into()],
    };
    let change = ChangeRequest {
        operation: ChangeOperation::Update,
        object: new,
        old_object: Some(old),
        namespace: "shop",
        namespace_labels: &setting.labels,
        requester: &requester,
        cluster_region: Some(REGION),
        dry_run: true,
    };
    for policy in &valid {
        let _ = policy_matches(policy, &change);
        let _ = selects_namespaces_by_label(policy);
    }
    let _ = gated_label_patch(&valid, &example_namespace(), Some(REGION));
    let decision = decide(&DecisionInput {
        request: change,
        policies: &valid,
        approvals: &setting.approvals,
        bindings: &setting.bindings,
        now: now(),
        validations: &ValidateOnTheSpot,
    });
    let summary = decision.summary(&change);
    let report = output::report(&decision, new, &summary);
    let _ = output::text(&decision, &report);
}

/// The example Deployment before and after its change (examples/deployment-v{1,2}.yaml).
fn example_change() -> (&'static Value, &'static Value) {
    static CHANGE: OnceLock<(Value, Value)> = OnceLock::new();
    let (old, new) = CHANGE.get_or_init(|| {
        let read = |text: &str| {
            input::documents(Path::new("examples"), text)
                .ok()
                .and_then(|mut documents| documents.pop())
                .unwrap_or(Value::Null)
        };
        (
            read(include_str!("../examples/deployment-v1.yaml")),
            read(include_str!("../examples/deployment-v2.yaml")),
        )
    });
    (old, new)
}

fn example_namespace() -> Value {
    input::documents(
        Path::new("examples"),
        include_str!("../examples/namespace-shop.yaml"),
    )
    .ok()
    .and_then(|mut documents| documents.pop())
    .unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------------------
// The manifest reader: YAML or JSON manifests as `countersign check --object` reads them.

/// Read a file of manifests as `check` does: its documents, then its objects (Lists
/// unpacked, workloads decoded strictly), each digested and summarized.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("manifest.yaml");
    let documents = match input::documents(file, text) {
        Ok(documents) => documents,
        Err(error) => {
            assert!(!error.message.is_empty(), "an error says why");
            // The same text is refused the same way by every reader of it.
            assert!(input::numbered_documents(file, text).is_err());
            return;
        }
    };
    let numbered = input::numbered_documents(file, text)
        .unwrap_or_else(|e| panic!("documents read it, numbered_documents did not: {e}"));
    assert_eq!(
        numbered.iter().map(|(_, value)| value).collect::<Vec<_>>(),
        documents.iter().collect::<Vec<_>>(),
        "the same documents, numbered"
    );
    assert!(numbered.windows(2).all(|pair| pair[0].0 < pair[1].0));
    for document in &documents {
        assert!(!document.is_null(), "empty documents are left out");
        round_trip(document);
        let _ = ChangeDigest::of(document, &["/spec/replicas".to_string()]);
    }
    let Ok(objects) = manifest_set::from_text(file, text) else {
        return;
    };
    for located in &objects {
        let object = &located.object;
        let digest = ChangeDigest::of(object, &["/spec/replicas".to_string()]);
        assert_eq!(
            ChangeDigest::parse(digest.as_str()).as_ref(),
            Some(&digest),
            "a digest reads back"
        );
        if is_workload(object) {
            let _ = summarize(None, object, &["/spec/replicas".to_string()]);
        }
    }
}

/// A document read once, written as JSON and read again, is the same value: what `check`
/// judges is what kubectl would send. Not for nesting beyond what the reader takes (block
/// nesting is not pre-scanned, its JSON is). JSON text starting with `{` is read as JSON,
/// as kubectl reads it; any other document (a list, a scalar) is written as JSON that is
/// read as YAML, as kubectl reads it too, so its round trip holds only for strings holding
/// characters a YAML stream carries raw as themselves (not an escaped `\uFFFE`, which JSON
/// writes raw, nor YAML 1.1's other line breaks NEL, LS and PS, which the YAML parser folds
/// inside a quoted scalar: `fuzz/regressions/manifest/json-string-with-nel.yaml`) and for
/// keys within YAML's 1024-character limit on an implicit key
/// (`fuzz/regressions/manifest/json-key-over-1024.yaml`); docs/security.md.
fn round_trip(document: &Value) {
    let json = serde_json::to_string(document)
        .unwrap_or_else(|e| panic!("a document encodes as JSON: {e}"));
    if document.is_object() || yaml_printable(document) && !long_key(document) {
        match input::documents(Path::new("again.json"), &json) {
            Ok(again) => assert_eq!(again.as_slice(), std::slice::from_ref(document), "{json}"),
            Err(error) => assert!(
                depth(document) > MAX_NESTING,
                "a document read once reads again: {error}\n{json}"
            ),
        }
    }
    // The canonical form (the digest's input) is JSON that reads back as the same value.
    let canonical = canonical_json(document);
    let read: Value = serde_json::from_str(&canonical)
        .unwrap_or_else(|e| panic!("canonical JSON is JSON: {e}\n{canonical}"));
    assert_eq!(canonical_json(&read), canonical, "canonical JSON is stable");
}

/// Some key, as JSON writes it, is longer than YAML's limit on an implicit key.
fn long_key(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(long_key),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| serde_json::to_string(k).map_or(true, |k| k.len() > 1000) || long_key(v)),
        _ => false,
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Every string (and key) holds only characters YAML reads raw as themselves.
fn yaml_printable(value: &Value) -> bool {
    let printable = |text: &str| {
        text.chars().all(|c| {
            c < ' ' // escaped in JSON
                || (' '..='~').contains(&c)
                || ('\u{A0}'..='\u{D7FF}').contains(&c) && !matches!(c, '\u{2028}' | '\u{2029}')
                || ('\u{E000}'..='\u{FFFD}').contains(&c) && c != '\u{FEFF}'
                || c >= '\u{10000}'
        })
    };
    match value {
        Value::String(text) => printable(text),
        Value::Array(items) => items.iter().all(yaml_printable),
        Value::Object(map) => map.iter().all(|(k, v)| printable(k) && yaml_printable(v)),
        _ => true,
    }
}
