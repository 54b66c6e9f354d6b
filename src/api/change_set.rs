//! `ChangeSet` (namespaced): the requests one GitOps sync or one multi-document
//! `countersign request` opened together, approved or rejected as one.

// kube's `printcolumn(...)` repeats `type_ = "string"`; clippy reads that as duplication.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::approval::{
    ApprovalTarget, ChangeRecord, DeploymentApprovalStatus, PolicySnapshot, Review,
};

/// Requests approved as one: each member is still admitted only with its own digest, locked
/// and audited on its own; the set holds the reviews.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "countersign.dev",
    version = "v1alpha1",
    kind = "ChangeSet",
    namespaced,
    shortname = "cset",
    category = "countersign",
    doc = "Requests approved as one (a GitOps sync's, or one multi-document request): one review covers every member; each member is still admitted only with its own digest.",
    status = "DeploymentApprovalStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Level", type_ = "integer", json_path = ".status.currentLevel"),
    printcolumn(
        name = "Requester",
        type_ = "string",
        json_path = ".spec.change.requester.username"
    ),
    printcolumn(
        name = "Changes",
        type_ = "string",
        json_path = ".spec.change.summary.text"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ChangeSetSpec {
    /// The requests the set covers, each by name, target and digest; fixed at creation.
    pub members: Vec<SetMember>,
    /// The set as one change: its digest is over the members (`core::approval::set`), its
    /// summary lists them; the requester, time and origin are the members'.
    pub change: ChangeRecord,
    /// The chain every member was requested under.
    pub policy: PolicySnapshot,
    /// Appended by approvers, one at a time, each in their own name; they count for every
    /// member.
    #[serde(default)]
    pub reviews: Vec<Review>,
}

/// One request of a set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetMember {
    /// The DeploymentApproval's name, in the set's namespace.
    pub request: String,
    pub target: ApprovalTarget,
    /// `sha256:<hex>` of the member's change.
    pub digest: String,
}

/// The label naming the set a request belongs to.
pub const SET_LABEL: &str = "countersign.dev/change-set";

impl ChangeSet {
    /// The phase as stored; a set the operator has not seen yet is `Pending`.
    pub fn phase(&self) -> super::ApprovalPhase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }
}
