//! `DeploymentApproval` (namespaced, in the target's namespace): one request for one change.

// kube's `printcolumn(...)` repeats `type_ = "string"`; clippy reads that as duplication.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Operation, UserInfo};
use super::policy::{ApprovalSettings, GrantSettings};

/// A request to admit exactly one change (target + digest), and the reviews it received.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "countersign.dev",
    version = "v1alpha1",
    kind = "DeploymentApproval",
    namespaced,
    shortname = "dapr",
    category = "countersign",
    doc = "A request to admit exactly one change (target + digest), and the reviews it received.",
    status = "DeploymentApprovalStatus",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Level", type_ = "integer", json_path = ".status.currentLevel"),
    printcolumn(
        name = "Requester",
        type_ = "string",
        json_path = ".spec.change.requester.username"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentApprovalSpec {
    pub target: ApprovalTarget,
    pub change: ChangeRecord,
    pub policy: PolicySnapshot,
    /// Appended by approvers, one at a time, each in their own name.
    #[serde(default)]
    pub reviews: Vec<Review>,
    /// The `ChangeSet` (same namespace) this request belongs to: reviewed there, not here;
    /// it counts only if that set lists this request with its target and digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_set: Option<String>,
}

/// The label naming the target object on a request countersign opened.
pub const TARGET_LABEL: &str = "countersign.dev/target";

/// The labels of a request countersign opens: its target's name and its set's (each cut to
/// a label's 63 characters).
pub fn request_labels(spec: &DeploymentApprovalSpec) -> std::collections::BTreeMap<String, String> {
    let mut labels: std::collections::BTreeMap<String, String> =
        [(TARGET_LABEL.to_string(), label_value(&spec.target.name))].into();
    if let Some(set) = &spec.change_set {
        labels.insert(super::SET_LABEL.to_string(), label_value(set));
    }
    labels
}

/// `name` cut to a label value's 63 characters.
fn label_value(name: &str) -> String {
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(['-', '.', '_']).to_string()
}

/// The object the change applies to, in the approval's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalTarget {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl ApprovalTarget {
    /// The target in `namespace` (its request's), as entries and Events name it.
    pub fn in_namespace(&self, namespace: Option<String>) -> super::AuditTarget {
        super::AuditTarget {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace,
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }
}

/// What changes, who asked, and when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRecord {
    /// `sha256:<hex>` of the gated content (SPEC §2).
    pub digest: String,
    pub summary: ChangeSummary,
    /// countersign's HMAC over the summary, target, digest, requester and time
    /// (`core::approval::seal`): a request whose seal is not countersign's is refused at creation,
    /// and shown as unverified if it exists anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_seal: Option<String>,
    pub requester: UserInfo,
    pub operation: Operation,
    /// When the request was made; `requestTTL` counts from here.
    pub requested_at: Time,
    /// The GitOps sync the change came from, when countersign opened the request for it
    /// (no one else may set it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ChangeOrigin>,
}

/// A GitOps sync: the controller's object that applies the change, and its revision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeOrigin {
    /// The object's API version and kind, e.g. `kustomize.toolkit.fluxcd.io/v1` `Kustomization`.
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The revision the controller reported trying (e.g. `main@sha1:…`), as it reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// A human-readable account of a change, computed by countersign from the objects the API
/// server sent (`core::change::summary`); every string is inert and bounded (`core::inert`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeSummary {
    /// One line, e.g. `Deployment shop/web: image web nginx:1.25 → nginx:1.27`; every kind
    /// of security-relevant change is named in it.
    pub text: String,
    #[serde(default)]
    pub images: Vec<ImageChange>,
    /// JSON pointers of the changed gated fields (at most 50, then `…`).
    #[serde(default)]
    pub changed_paths: Vec<String>,
    /// Each changed field with its values before and after (secrets hidden),
    /// security-relevant ones first; at most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// Every kind of security-relevant change the change makes, listed or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risks: Vec<Risk>,
    /// Changes beyond those listed in `changes`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unlisted: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ChangeSummary {
    /// The listed changes an approver must read first.
    pub fn security_relevant(&self) -> impl Iterator<Item = &FieldChange> {
        self.changes.iter().filter(|c| c.risk.is_some())
    }
}

/// One changed field: its JSON pointer and its values as compact JSON (absent: the field
/// is added or removed).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    pub path: String,
    /// Why an approver should look twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// A kind of security-relevant change, in the order summaries list them.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum Risk {
    /// A security context: privileged, privilege escalation, the user, seccomp, AppArmor,
    /// SELinux, sysctls, a runtime class.
    Privilege,
    /// Linux capabilities added or dropped.
    Capabilities,
    /// The host's PID, IPC, network or user namespace, a host port, a shared process
    /// namespace.
    HostNamespaces,
    /// A hostPath volume: the node's file system.
    HostPath,
    /// Volumes and their mounts.
    Volumes,
    /// The ServiceAccount a Pod runs as, or whether its token is mounted.
    ServiceAccount,
    /// A container's command, arguments or lifecycle hooks: what it runs.
    Command,
    /// Init containers.
    InitContainer,
    /// A container added or removed next to the others, or an ephemeral container.
    Sidecar,
    /// An image from another registry.
    ImageRegistry,
}

impl Risk {
    /// How a person reads it.
    pub fn label(self) -> &'static str {
        match self {
            Risk::Privilege => "privilege",
            Risk::Capabilities => "capabilities",
            Risk::HostNamespaces => "host namespaces",
            Risk::HostPath => "host path",
            Risk::Volumes => "volumes",
            Risk::ServiceAccount => "service account",
            Risk::Command => "command and args",
            Risk::InitContainer => "init containers",
            Risk::Sidecar => "sidecars",
            Risk::ImageRegistry => "image registry",
        }
    }
}

/// A container image before and after the change (absent: the container is new or removed).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageChange {
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// The policy and the chain the request was created under; later policy edits do not
/// change a pending request's rules.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySnapshot {
    pub name: String,
    pub chain: ApprovalSettings,
    /// The policy's ignored fields the digest was computed with, so the operator recognises
    /// the change on the live object. Absent: the policy's current ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_fields: Option<Vec<String>>,
    /// The policy's scoped deploy token settings when the request was made (SPEC §8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantSettings>,
}

/// An approver's decision.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReviewDecision {
    Approve,
    Reject,
}

/// One review, appended by its author.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    pub user: String,
    /// Groups the author approves through; must be a subset of their authenticated groups.
    #[serde(default)]
    pub groups: Vec<String>,
    pub decision: ReviewDecision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub time: Time,
}

impl DeploymentApproval {
    /// The phase its status records, if the operator has written one.
    pub fn recorded_phase(&self) -> Option<ApprovalPhase> {
        self.status.as_ref().map(|s| s.phase)
    }

    /// The phase as stored; a request the operator has not seen yet is `Pending`.
    pub fn phase(&self) -> ApprovalPhase {
        self.recorded_phase().unwrap_or_default()
    }
}

/// Where a request stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ApprovalPhase {
    #[default]
    Pending,
    Approved,
    Deploying,
    Deployed,
    Rejected,
    Expired,
    Failed,
}

impl ApprovalPhase {
    pub const ALL: [ApprovalPhase; 7] = [
        ApprovalPhase::Pending,
        ApprovalPhase::Approved,
        ApprovalPhase::Deploying,
        ApprovalPhase::Deployed,
        ApprovalPhase::Rejected,
        ApprovalPhase::Expired,
        ApprovalPhase::Failed,
    ];

    /// No further transition is possible.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ApprovalPhase::Deployed
                | ApprovalPhase::Rejected
                | ApprovalPhase::Expired
                | ApprovalPhase::Failed
        )
    }
}

impl std::fmt::Display for ApprovalPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Progress of one level of the chain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LevelStatus {
    pub name: String,
    /// Distinct approvals this level needs.
    pub required: u32,
    /// Distinct eligible approvals counted so far.
    pub approvals: u32,
    pub satisfied: bool,
    #[serde(default)]
    pub approved_by: Vec<String>,
    /// Required entries that have not approved yet (`bob`, `group:sre`, …).
    #[serde(default)]
    pub missing_required: Vec<String>,
}

/// Delivery state of one notification (approval, level, event).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationStatus {
    pub sink: String,
    pub level: String,
    pub event: String,
    pub delivered: bool,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the last attempt was made; the next waits out the backoff from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<Time>,
}

/// The admitted change on its way to the object (SPEC §1.4).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// When the webhook admitted the change (the move to `Deploying`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<Time>,
    /// Whose write was admitted (a person, a pipeline, a GitOps controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_by: Option<UserInfo>,
    /// The webhook replica that admitted it. Unlike `lockHolder`, kept once the rollout
    /// ends, so the `Admitted` entry planned from this status stays the one written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_by_replica: Option<String>,
    /// How often the change was admitted: more than once when an admitted change never
    /// reached the object and the approval went back to `Approved`.
    #[serde(default)]
    pub admissions: u32,
    /// Admissions (numbered from 1) made on a review whose caller was not authenticated:
    /// recorded as admitted only once the change is seen on the object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unverified_admissions: Vec<u32>,
    /// The target's generation at which the operator first saw the change on the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<i64>,
    /// When the rollout completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// What the rollout waits for, or why it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The scoped deploy token issued for the approved change (SPEC §8).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployTokenStatus {
    /// The Secret in the approval's namespace holding the token under the key `token`.
    pub secret_name: String,
    /// The ServiceAccount the token authenticates as.
    pub service_account: String,
    pub issued_at: Time,
    pub expires_at: Time,
    /// When the ServiceAccount, Role, RoleBinding and Secret were deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Time>,
}

/// What the operator last recorded about the request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentApprovalStatus {
    #[serde(default)]
    pub phase: ApprovalPhase,
    /// 1-based index of the open level; absent once no level is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_level: Option<u32>,
    #[serde(default)]
    pub levels: Vec<LevelStatus>,
    #[serde(default)]
    pub approved_by: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    #[serde(default)]
    pub notifications: Vec<NotificationStatus>,
    /// The webhook replica that admitted the change (set with the move to `Deploying`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_holder: Option<String>,
    /// The admitted change's way to the object, once admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// The scoped deploy token, while one exists (and when it was revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_token: Option<DeployTokenStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
