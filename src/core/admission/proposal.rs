//! What a dry run of a change that needs approval tells the client: the request the change
//! has, or would get. The webhook puts it in its denial (a `StatusCause` the API server
//! passes on to the client); `countersign request` reads it and may open the request ahead
//! of time. That gives it no power: the approvals webhook checks a request made ahead of
//! time like any other (`core::approval::request`: the caller's own change, the governing policy's
//! current chain, no reviews, no status).

use serde::{Deserialize, Serialize};

use crate::api::{ApprovalPhase, DeploymentApprovalSpec};
use crate::core::admission::decision::ApprovalRequirement;

/// The `reason` of the cause that carries a [`RequestProposal`] (as JSON in its `message`).
pub const PROPOSAL_CAUSE: &str = "countersign.dev/request";

/// The request a change has or would get.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestProposal {
    /// The policy whose chain applies.
    pub policy: String,
    /// The request this change has, or the name a new one gets.
    pub name: String,
    /// Whether that request exists.
    pub existing: bool,
    /// Its phase (`Pending` for a new one).
    pub phase: ApprovalPhase,
    /// A request that may be opened now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<ProposedRequest>,
}

/// A request to open ahead of time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProposedRequest {
    pub name: String,
    pub spec: DeploymentApprovalSpec,
    /// A fresh request for a rejected change: opened only when asked to ask again.
    pub again: bool,
}

/// The proposal of a change that requires approval.
pub fn proposal(requirement: &ApprovalRequirement) -> RequestProposal {
    let open = match (&requirement.create, &requirement.again) {
        (Some(spec), _) => Some(ProposedRequest {
            name: requirement.approval_name.clone(),
            spec: spec.clone(),
            again: false,
        }),
        (None, Some(fresh)) => Some(ProposedRequest {
            name: fresh.name.clone(),
            spec: fresh.spec.clone(),
            again: true,
        }),
        (None, None) => None,
    };
    RequestProposal {
        policy: requirement.policy.clone(),
        name: requirement.approval_name.clone(),
        existing: requirement.existing,
        phase: requirement.phase,
        open,
    }
}
