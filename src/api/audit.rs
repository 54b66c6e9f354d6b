//! `AuditEntry` (namespaced, in the install namespace): one immutable record per event (SPEC §7).

// kube's `printcolumn(...)` repeats `type_ = "string"`; clippy reads that as duplication.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::UserInfo;

/// One audited transition. Never updated; deleted only by retention.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "countersign.dev",
    version = "v1alpha1",
    kind = "AuditEntry",
    namespaced,
    shortname = "caudit",
    category = "countersign",
    doc = "One immutable audit record of a countersign transition.",
    status = "AuditEntryStatus",
    printcolumn(name = "Seq", type_ = "integer", json_path = ".status.link.sequence"),
    printcolumn(name = "Time", type_ = "date", json_path = ".spec.time"),
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(name = "Actor", type_ = "string", json_path = ".spec.actor.username"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.name"),
    printcolumn(name = "Approval", type_ = "string", json_path = ".spec.approval")
)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntrySpec {
    pub time: Time,
    pub action: AuditAction,
    pub actor: UserInfo,
    pub target: AuditTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_digest: Option<String>,
    /// Name of the DeploymentApproval, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For an entry the webhook wrote as it answered a review: how it knew the review came
    /// from the API server. Absent for entries the operator derives from durable state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<ReviewCaller>,
}

/// The label naming an entry's action, so that what watches some actions (the
/// break-glass announcer) sees exactly those, whoever wrote them.
pub const ACTION_LABEL: &str = "countersign.dev/action";

/// The labels of an AuditEntry: the one function every writer takes them from.
pub fn entry_labels(spec: &AuditEntrySpec) -> std::collections::BTreeMap<String, String> {
    [(ACTION_LABEL.to_string(), format!("{:?}", spec.action))].into()
}

/// Who sent the review an entry was written for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewCaller {
    pub authentication: CallerAuthentication,
    /// The name in the caller's client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// How the webhook authenticated its caller.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CallerAuthentication {
    /// A client certificate signed by the configured CA (`--client-ca-file`).
    ClientCertificate,
    /// Not at all: no client CA is configured, so the review was taken on trust (the
    /// NetworkPolicy is what keeps others out).
    #[default]
    None,
}

/// The audited transition, declared in the order a request goes through them (a timeline
/// orders steps of the same second by it).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AuditAction {
    Requested,
    ReviewRecorded,
    LevelSatisfied,
    Approved,
    Rejected,
    Expired,
    Admitted,
    Deployed,
    RolloutFailed,
    /// The admitted change never reached the object; the approval is `Approved` again.
    NotApplied,
    DeployTokenIssued,
    DeployTokenRevoked,
    BreakGlass,
    /// A change back to the revision last confirmed Deployed, admitted without approval.
    Rollback,
    PolicyCreated,
    PolicyChanged,
    PolicyDeleted,
    /// A request deleted (by its author's hand, or with its namespace).
    RequestDeleted,
    /// A namespace's labels changed so that a policy no longer reaches it.
    NamespaceLeftReach,
    /// countersign's own ValidatingWebhookConfiguration or MutatingWebhookConfiguration no
    /// longer says what countersign installs (the API server never sends these to a webhook,
    /// so this is found afterwards, by the operator).
    WebhookConfigurationChanged,
    /// One of them was deleted, or was missing when the operator started watching.
    WebhookConfigurationDeleted,
    /// The operator put one back as countersign installs it (`--restore-webhook-configurations`).
    WebhookConfigurationRestored,
}

/// The object an entry is about.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditTarget {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl AuditTarget {
    /// The target as an object reference (for Events).
    pub fn reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.clone()),
            namespace: self.namespace.clone(),
            name: Some(self.name.clone()),
            uid: self.uid.clone(),
            ..ObjectReference::default()
        }
    }

    /// The object `reference` names.
    pub fn of_reference(reference: &ObjectReference) -> AuditTarget {
        AuditTarget {
            api_version: reference.api_version.clone().unwrap_or_default(),
            kind: reference.kind.clone().unwrap_or_default(),
            namespace: reference.namespace.clone(),
            name: reference.name.clone().unwrap_or_default(),
            uid: reference.uid.clone(),
        }
    }
}

/// What was done about the entry after it was written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryStatus {
    /// `EventsRecorded`: the Events on the approval and on the target were written.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// A break-glass entry's announcements to the bypassed policies' sinks (SPEC §6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<crate::api::NotificationStatus>,
    /// The entry's place in the trail's hash chain, written once by the leader
    /// (`core::audit::chain`, docs/security.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<ChainLink>,
}

/// An entry's link in the trail's hash chain: its place, the hash of the entry before it,
/// and its own hash over both and its content.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainLink {
    /// Its place in the trail, from 1, with no gaps.
    pub sequence: u64,
    /// The `hash` of the entry at `sequence - 1` (64 zeros for the first), lowercase hex.
    pub previous: String,
    /// SHA-256 over the canonical JSON of the entry's name, spec, `sequence`, `previous` and
    /// `sealedAt`, lowercase hex.
    pub hash: String,
    /// When it entered the chain: RFC 3339 in UTC with microseconds, so entries of one
    /// second are ordered by time as well as by sequence.
    pub sealed_at: String,
}
