//! `/validate/audit` (SPEC §3, §7): AuditEntries are written by countersign only, never
//! updated, and deleted only by its retention (or with their namespace).

use jiff::Timestamp;
use kube::core::admission::Operation;

use super::request::{Request, decode};
use super::review::Webhook;
use crate::api::AuditEntry;
use crate::core::audit::custody::{AuditWrite, audit_write};
use crate::core::audit::retention::past_retention;
use crate::core::plan::{Answer, ReviewPlan};

impl Webhook {
    pub(super) fn audit_entry(&self, request: &Request) -> ReviewPlan {
        let write = match (request.sub_resource.as_deref(), &request.operation) {
            (Some("status"), _) => AuditWrite::StatusUpdate,
            (_, Operation::Create) => AuditWrite::Create,
            (_, Operation::Update) => AuditWrite::Update,
            (_, Operation::Delete) => AuditWrite::Delete {
                past_retention: decode::<AuditEntry>(request.old_object.as_ref())
                    .ok()
                    .is_some_and(|entry| {
                        past_retention(&entry, self.settings.audit_retention, Timestamp::now())
                    }),
            },
            (_, Operation::Connect) => return ReviewPlan::answer(Answer::allow()),
        };
        let actor = request.username().unwrap_or_default();
        ReviewPlan::answer(Answer::from_result(audit_write(
            write,
            actor,
            &self.settings.own_username,
        )))
    }
}
