//! What the core asks to be done (docs/architecture.md: the core plans, the cluster room
//! carries out): for a review, the writes that must land before its answer holds, the
//! answer itself, and the Events; Events as the cluster room publishes them. A shell
//! decides nothing: it gathers the core's inputs and carries its plan out.

use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::Value;

use crate::api::{
    AuditTarget, ChangeSetSpec, DeploymentApproval, DeploymentApprovalSpec,
    DeploymentApprovalStatus,
};
use crate::core::admission::proposal::RequestProposal;
use crate::core::audit::trail::PlannedEntry;
use crate::core::rollout::lock::{LockVerdict, refusal};

/// An Event's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// One Kubernetes Event, as the cluster room publishes it (its note made inert there).
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedEvent {
    pub regarding: ObjectReference,
    pub kind: EventKind,
    pub reason: String,
    pub note: String,
    /// What countersign was doing: `Admission` or `Audit`.
    pub action: &'static str,
}

impl PlannedEvent {
    /// An Event of the admission path.
    pub fn admission(
        regarding: ObjectReference,
        kind: EventKind,
        reason: &str,
        note: String,
    ) -> PlannedEvent {
        PlannedEvent {
            regarding,
            kind,
            reason: reason.to_string(),
            note,
            action: "Admission",
        }
    }
}

/// How a review is counted (`countersign_admission_reviews_total{verdict}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied,
    ApprovalRequired,
    Approved,
}

/// The placeholder, in an answer's warnings or an Event's note, for the name the plan's
/// AuditEntry was written under (`<name>-2` when another entry held its name).
pub const WRITTEN_ENTRY: &str = "{written-entry}";

/// The answer to a review.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub allowed: bool,
    /// Why not, when denied: one reason per line, each made inert by the caller's core.
    pub message: String,
    pub warnings: Vec<String>,
    /// JSON Patch operations (the mutating paths); empty: none.
    pub patch: Vec<Value>,
    pub outcome: Outcome,
    /// The request a change would get, for a dry run's denial (`countersign request`).
    pub proposal: Option<RequestProposal>,
}

impl Answer {
    pub fn allow() -> Answer {
        Answer {
            allowed: true,
            message: String::new(),
            warnings: Vec::new(),
            patch: Vec::new(),
            outcome: Outcome::Allowed,
            proposal: None,
        }
    }

    pub fn deny(message: impl Into<String>) -> Answer {
        Answer {
            allowed: false,
            message: message.into(),
            outcome: Outcome::Denied,
            ..Answer::allow()
        }
    }

    /// Allowed, or denied with the refusal's message.
    pub fn from_result<E: std::fmt::Display>(result: Result<(), E>) -> Answer {
        match result {
            Ok(()) => Answer::allow(),
            Err(refusal) => Answer::deny(refusal.to_string()),
        }
    }

    /// Allowed with a JSON Patch.
    pub fn patched(operations: Vec<Value>) -> Answer {
        Answer {
            patch: operations,
            ..Answer::allow()
        }
    }

    pub fn counted_as(mut self, outcome: Outcome) -> Answer {
        self.outcome = outcome;
        self
    }

    pub fn warn(mut self, warning: String) -> Answer {
        self.warnings.push(warning);
        self
    }
}

/// One write the cluster room makes for a review.
#[derive(Clone, Debug)]
pub enum Write {
    /// An AuditEntry through the one writer.
    Entry(PlannedEntry),
    /// A Pending request (one already there under the name counts: a retry, or a racing
    /// replica).
    OpenRequest {
        namespace: String,
        name: String,
        spec: Box<DeploymentApprovalSpec>,
    },
    /// A Pending change set (one already there under the name counts, as for a request).
    OpenSet {
        namespace: String,
        name: String,
        spec: Box<ChangeSetSpec>,
    },
    /// The object's change lock for an approval (`core::rollout::lock`), judged on the
    /// Lease and its holder as read then.
    TakeLock {
        target: AuditTarget,
        /// `<namespace>/<name>` of the approval.
        approval: String,
        digest: String,
        /// Whose change it is (for the Event when the lock is held).
        requester: String,
    },
    /// `status` over the approval as read (compare-and-swap on its resourceVersion).
    MarkDeploying {
        approval: Box<DeploymentApproval>,
        status: Box<DeploymentApprovalStatus>,
    },
}

/// A write that must land before the answer holds, and what the denial says if it does
/// not.
#[derive(Clone, Debug)]
pub struct Step {
    pub write: Write,
    /// The denial when the write fails; `{error}` stands for why.
    pub failed: String,
    /// The denial when someone wrote first (409), when that means something else.
    pub conflict: Option<String>,
    /// Published when the write made something new (not when it found it there).
    pub on_created: Vec<PlannedEvent>,
}

impl Step {
    pub fn new(write: Write, failed: impl Into<String>) -> Step {
        Step {
            write,
            failed: failed.into(),
            conflict: None,
            on_created: Vec::new(),
        }
    }

    pub fn on_conflict(mut self, message: impl Into<String>) -> Step {
        self.conflict = Some(message.into());
        self
    }
}

/// Everything answering a review takes.
#[derive(Clone, Debug)]
pub struct ReviewPlan {
    /// In order; the first that fails ends the plan with its denial.
    pub steps: Vec<Step>,
    /// The answer once every step landed.
    pub answer: Answer,
    /// Published once every step landed.
    pub events: Vec<PlannedEvent>,
}

impl ReviewPlan {
    /// An answer that takes no write and tells nobody.
    pub fn answer(answer: Answer) -> ReviewPlan {
        ReviewPlan {
            steps: Vec::new(),
            answer,
            events: Vec::new(),
        }
    }

    pub fn with_event(mut self, event: PlannedEvent) -> ReviewPlan {
        self.events.push(event);
        self
    }
}

/// Why a step did not land.
#[derive(Clone, Debug, PartialEq)]
pub enum StepFailure {
    /// Another approved change holds the object's lock.
    LockHeld(LockVerdict),
    /// Someone wrote first (409).
    Conflict(String),
    /// Anything else, as said (a timeout, an error of the API server's).
    Error(String),
}

/// The denial of a review whose `step` failed, and its Events.
pub fn failed(step: &Step, failure: &StepFailure) -> (Answer, Vec<PlannedEvent>) {
    let message = match failure {
        StepFailure::LockHeld(verdict) => {
            let message = refusal(verdict).unwrap_or_default();
            let events = match &step.write {
                Write::TakeLock {
                    target, requester, ..
                } => vec![PlannedEvent::admission(
                    target.reference(),
                    EventKind::Warning,
                    "RolloutInProgress",
                    format!("{requester} was denied: {message}"),
                )],
                _ => Vec::new(),
            };
            return (Answer::deny(message), events);
        }
        StepFailure::Conflict(error) => match &step.conflict {
            Some(message) => message.clone(),
            None => step
                .failed
                .replace("{error}", &format!("conflict: {error}")),
        },
        StepFailure::Error(error) => step.failed.replace("{error}", error),
    };
    (Answer::deny(message), Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_denies_saying_what_did_not_happen_and_why() {
        let step = Step::new(
            Write::OpenRequest {
                namespace: "shop".into(),
                name: "web-1".into(),
                spec: Box::new(crate::core::test_builders::two_level_request(&[], None).spec),
            },
            "countersign could not open the request ({error}); retry",
        );
        let (answer, events) = failed(&step, &StepFailure::Error("timed out".into()));
        assert!(!answer.allowed && events.is_empty());
        assert_eq!(
            answer.message,
            "countersign could not open the request (timed out); retry"
        );
        let cas = step.clone().on_conflict("just used; retry");
        assert_eq!(
            failed(&cas, &StepFailure::Conflict("409".into())).0.message,
            "just used; retry"
        );
        let lock = Step::new(
            Write::TakeLock {
                target: AuditTarget {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    namespace: Some("shop".into()),
                    name: "web".into(),
                    uid: None,
                },
                approval: "shop/web-2".into(),
                digest: "sha256:00".into(),
                requester: "dave".into(),
            },
            "no lock ({error}); retry",
        );
        let (answer, events) = failed(
            &lock,
            &StepFailure::LockHeld(LockVerdict::RollingOut {
                holder: "shop/web-1".into(),
            }),
        );
        assert!(
            answer
                .message
                .contains("approved change shop/web-1 is rolling out")
        );
        assert_eq!(events[0].reason, "RolloutInProgress");
    }
}
