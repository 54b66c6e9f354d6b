//! `ApprovalPolicy` (cluster-scoped): which changes are gated, by which rules, and who approves.

// kube's `printcolumn(...)` repeats `type_ = "string"`; clippy reads that as duplication.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Operation;

/// Which workload changes need human approval, which are refused outright, and who approves.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "countersign.dev",
    version = "v1alpha1",
    kind = "ApprovalPolicy",
    shortname = "apol",
    category = "countersign",
    doc = "Which workload changes need human approval, which are refused outright, and who approves (cluster-scoped).",
    status = "ApprovalPolicyStatus",
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalPolicySpec {
    /// Which changes this policy applies to.
    #[serde(rename = "match", default)]
    pub match_: PolicyMatch,
    /// Requesters and namespaces this policy never gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<PolicyExclusions>,
    /// JSON pointers (into the object) whose changes never need approval.
    /// Absent means `["/spec/replicas"]`, so an autoscaler never needs approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_fields: Option<Vec<String>>,
    /// Change freezes (`Deny`) and allowed windows (`Allow`).
    #[serde(default)]
    pub windows: Vec<ChangeWindow>,
    /// Preventative checks; each denies with a precise message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<PolicyChecks>,
    /// The approval chain. A policy without one only applies its deny rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalSettings>,
    /// Issue a scoped deploy token when a change is approved (SPEC §8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantSettings>,
    /// Among matching policies that require approval, the highest priority's chain applies
    /// (ties: name order).
    #[serde(default)]
    pub priority: i32,
    /// Who may bypass this policy with the `countersign.dev/break-glass` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlass>,
    /// Deleting this policy, changing its spec, deleting one of its open requests, or taking
    /// a namespace out of its reach: `Audit` (the default) records each with its author;
    /// `Refuse` also refuses them unless the author is in `breakGlass.groups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tamper_protection: Option<TamperProtection>,
    /// The GitOps controllers whose syncs this policy gates as syncs (docs/gitops.md): a
    /// sync denied for approval opens the requests of all its gated changes by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<GitOpsSettings>,
    /// Notification sinks (Secrets in the install namespace, like a level's `sinks`) sent
    /// every signed checkpoint of the audit trail (docs/security.md): copies outside the
    /// cluster to verify the trail against. The trail is one for all policies; every sink
    /// any policy names gets each checkpoint once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_sinks: Vec<String>,
}

/// How this policy treats GitOps controllers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitOpsSettings {
    /// The controllers' ServiceAccounts, e.g. Flux's `flux-system/kustomize-controller`.
    #[serde(default)]
    pub controllers: Vec<GitOpsController>,
}

/// A GitOps controller: what it is, and the ServiceAccount it applies as.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitOpsController {
    pub kind: GitOpsKind,
    pub service_account: ServiceAccountRef,
}

/// Which GitOps controller.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum GitOpsKind {
    /// Flux's kustomize-controller: it applies the objects of a `Kustomization`.
    #[default]
    Flux,
    /// Argo CD's application controller: it applies the objects of an `Application`.
    #[serde(rename = "ArgoCD")]
    ArgoCd,
}

/// What happens to changes of a policy's own ground.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TamperProtection {
    Audit,
    Refuse,
}

/// The default ignored field when `ignoreFields` is absent.
pub const DEFAULT_IGNORE_FIELDS: &[&str] = &["/spec/replicas"];

impl ApprovalPolicySpec {
    /// The effective ignored JSON pointers.
    pub fn effective_ignore_fields(&self) -> Vec<String> {
        match &self.ignore_fields {
            Some(fields) => fields.clone(),
            None => DEFAULT_IGNORE_FIELDS
                .iter()
                .map(|f| f.to_string())
                .collect(),
        }
    }
}

/// Which changes a policy matches. Empty lists match everything (kinds: the workload kinds).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMatch {
    /// Group/kind pairs. Empty means Deployment, StatefulSet, DaemonSet, Job and CronJob.
    #[serde(default)]
    pub kinds: Vec<GroupKind>,
    /// Namespace names. Empty means every namespace.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Labels the target's namespace must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Labels the target object must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_selector: Option<LabelSelector>,
    /// Regions of the target (namespace label `topology.kubernetes.io/region`, else the
    /// cluster region). Empty means every region.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Operations. Empty means CREATE and UPDATE.
    #[serde(default)]
    pub operations: Vec<Operation>,
}

/// A Kubernetes API group and kind; the core group is the empty string.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupKind {
    #[serde(default)]
    pub group: String,
    pub kind: String,
}

/// Requesters and namespaces a policy never gates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyExclusions {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub service_accounts: Vec<ServiceAccountRef>,
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// A ServiceAccount by namespace and name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

/// Whether a window forbids changes inside it or allows changes only inside it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WindowEffect {
    /// A change freeze: changes inside the window are denied.
    #[default]
    Deny,
    /// Changes are allowed only inside one of the policy's `Allow` windows.
    Allow,
}

/// A change freeze or allowed window: exactly one of `weekly` or `absolute`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeWindow {
    pub name: String,
    pub effect: WindowEffect,
    /// IANA time zone the window's times are read in, e.g. `Europe/Berlin`.
    pub time_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<WeeklySchedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute: Option<AbsoluteInterval>,
}

/// On each listed day, from `start` to `end` local time (`HH:MM`; `end` may be `24:00`).
/// An `end` at or before `start` runs past midnight into the next day.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WeeklySchedule {
    pub days: Vec<Weekday>,
    pub start: String,
    pub end: String,
}

/// A day of the week.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// From `start` (inclusive) to `end` (exclusive), local civil times `YYYY-MM-DDTHH:MM[:SS]`
/// in the window's time zone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbsoluteInterval {
    pub start: String,
    pub end: String,
}

/// Preventative checks on the pod template of the changed object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyChecks {
    /// Deny credentials in container env values, args and command.
    #[serde(default)]
    pub secret_detection: bool,
    /// Image registry prefixes allowed, e.g. `registry.example.com/` . Empty allows all.
    #[serde(default)]
    pub allowed_registries: Vec<String>,
    /// Every image must be pinned by `@sha256:` digest.
    #[serde(default)]
    pub require_image_digest: bool,
    /// Deny privileged containers and `allowPrivilegeEscalation: true`.
    #[serde(default)]
    pub forbid_privileged: bool,
    /// Every container must set CPU and memory requests and a memory limit.
    #[serde(default)]
    pub require_resources: bool,
    /// Deny adding ephemeral containers (`kubectl debug`) to Pods outright; otherwise one is
    /// a change of the Pod like any other, approved by its digest.
    #[serde(default)]
    pub forbid_ephemeral_containers: bool,
}

/// One kind of preventative check (SPEC §3 `checks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    SecretDetection,
    AllowedRegistries,
    RequireImageDigest,
    ForbidPrivileged,
    RequireResources,
    ForbidEphemeralContainers,
}

impl PolicyChecks {
    /// The kinds of check these settings turn on: the one list of them (validation's "gates
    /// nothing" warning reads it; a test holds it to every field).
    pub fn kinds(&self) -> Vec<CheckKind> {
        [
            (self.secret_detection, CheckKind::SecretDetection),
            (
                !self.allowed_registries.is_empty(),
                CheckKind::AllowedRegistries,
            ),
            (self.require_image_digest, CheckKind::RequireImageDigest),
            (self.forbid_privileged, CheckKind::ForbidPrivileged),
            (self.require_resources, CheckKind::RequireResources),
            (
                self.forbid_ephemeral_containers,
                CheckKind::ForbidEphemeralContainers,
            ),
        ]
        .into_iter()
        .filter_map(|(on, kind)| on.then_some(kind))
        .collect()
    }
}

/// The most levels a chain may have. Every admission walks the levels, and policy
/// validation checks them against each other, so their number is bounded; no organisation
/// signs a change off in more than a handful. Enforced by the CRD schema (`maxItems`) and
/// again by policy validation, which refuses a longer chain naming `levels`.
pub const MAX_LEVELS: usize = 32;

/// The most approver entries one level may have. Policy validation matches a level's named
/// people against every other level's, so with [`MAX_LEVELS`] this bounds its work (at most
/// 8,192 entries in a chain); a level meant for more people names a group or a role.
/// Enforced like [`MAX_LEVELS`]: `maxItems` in the CRD schema and policy validation.
pub const MAX_APPROVERS_PER_LEVEL: usize = 256;

/// The approval chain and its time limits (SPEC §4).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalSettings {
    /// Ordered levels; each must be satisfied before the next opens. At most 32.
    #[schemars(length(max = MAX_LEVELS))]
    pub levels: Vec<ApprovalLevel>,
    /// A pending request expires after this long, e.g. `72h`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "requestTTL"
    )]
    pub request_ttl: Option<String>,
    /// An approved change must be admitted within this long, e.g. `24h`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "approvalTTL"
    )]
    pub approval_ttl: Option<String>,
    /// An admitted rollout that has not completed after this long is `Failed`, e.g. `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_timeout: Option<String>,
    /// May the requester approve their own change?
    #[serde(default)]
    pub allow_self_approval: bool,
    /// A rollback to the revision last confirmed `Deployed` for an object passes without a
    /// new approval, audited as a rollback (SPEC §1.6). Absent: `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_rollback: Option<bool>,
    /// Notification sinks (Secrets in the install namespace, like a level's `sinks`) told
    /// the final decision: Approved, Rejected or Expired, and the rollout's end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requester_sinks: Vec<String>,
}

/// One level of an approval chain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalLevel {
    pub name: String,
    /// Who may approve at this level. At most 256 entries; name a group or a role for more.
    #[schemars(length(max = MAX_APPROVERS_PER_LEVEL))]
    pub approvers: Vec<Approver>,
    /// Distinct eligible approvals needed. Defaults to the number of required entries,
    /// or 1 when there are none. The stricter of this and the required entries wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_approvals: Option<u32>,
    /// Names of notification sinks (Secrets holding a webhook URL) told when the level opens.
    #[serde(default)]
    pub sinks: Vec<String>,
}

/// Exactly one of `user`, `group`, `serviceAccount` or `role`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approver {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountRef>,
    /// A Role or ClusterRole name: anyone bound to it by a RoleBinding in the target's
    /// namespace or by a ClusterRoleBinding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// This entry must itself approve (per-line approval).
    #[serde(default)]
    pub required: bool,
}

/// Scoped deploy token settings (SPEC §8).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantSettings {
    /// Lifetime of the token, e.g. `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// Who may break glass.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakGlass {
    pub groups: Vec<String>,
}

/// What the operator last concluded about the policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the policy is valid and in force.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// What could not be checked (e.g. the size of a group approver).
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of `checks` is a kind in [`PolicyChecks::kinds`]: a field added without
    /// its kind would leave a policy whose only check is it warned as gating nothing.
    #[test]
    fn every_check_field_is_a_kind() {
        let schema = serde_json::to_value(schemars::schema_for!(PolicyChecks)).unwrap();
        let fields: Vec<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut all = serde_json::Map::new();
        for field in &fields {
            let on = if field == "allowedRegistries" {
                serde_json::json!(["registry.example.com/"])
            } else {
                serde_json::json!(true)
            };
            all.insert(field.clone(), on);
        }
        let checks: PolicyChecks = serde_json::from_value(serde_json::Value::Object(all)).unwrap();
        assert_eq!(checks.kinds().len(), fields.len(), "{fields:?}");
        assert!(PolicyChecks::default().kinds().is_empty());
    }
}
