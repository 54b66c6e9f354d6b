//! ChangeSets on `/validate/approvals` and `/mutate/approvals` (SPEC §3, docs/gitops.md):
//! reviewed like requests, as one. A set made by someone other than countersign must be
//! theirs and list their own fresh requests exactly; an edit may only append the editor's
//! own review; status is countersign's; a deletion is the gate's own ground.

use jiff::Timestamp;
use kube::Api;
use kube::core::admission::Operation;

use super::request::{Request, decode};
use super::review::{Webhook, refuse};
use crate::api::{ChangeSet, DeploymentApproval};
use crate::cluster::calls::bounded;
use crate::core::approval::request::validate_life_metadata_edit;
use crate::core::approval::set::{as_request, validate_set_create, validate_set_edit};
use crate::core::plan::{Answer, ReviewPlan};

/// The resource name of sets in reviews.
pub(super) const RESOURCE: &str = "changesets";

impl Webhook {
    /// A set's create (by someone else), edit or deletion; `approval` has answered its
    /// status writes and countersign's own creates.
    pub(super) async fn change_set(&self, request: &Request) -> ReviewPlan {
        match request.operation {
            Operation::Create => self.set_created(request).await,
            Operation::Update => self.set_edited(request),
            Operation::Delete => self.set_deleted(request),
            Operation::Connect => ReviewPlan::answer(Answer::allow()),
        }
    }

    /// A set made by someone else (`countersign request -f` of several documents): theirs,
    /// of their own fresh requests, read live.
    async fn set_created(&self, request: &Request) -> ReviewPlan {
        let set = match decode::<ChangeSet>(request.object.as_ref()) {
            Ok(set) => set,
            Err(why) => return refuse(why),
        };
        let namespace = request.namespace.clone().unwrap_or_default();
        let api: Api<DeploymentApproval> = Api::namespaced(self.cluster.client.clone(), &namespace);
        let mut found = Vec::with_capacity(set.spec.members.len());
        for member in set
            .spec
            .members
            .iter()
            .take(crate::core::approval::set::MAX_MEMBERS + 1)
        {
            match bounded(api.get_opt(&member.request)).await {
                Ok(read) => found.push(read),
                Err(error) => {
                    return refuse(format!(
                        "countersign could not read request {namespace}/{} ({error})",
                        member.request
                    ));
                }
            }
        }
        let mut set = set;
        set.metadata.namespace = Some(namespace);
        ReviewPlan::answer(Answer::from_result(
            validate_set_create(&set, &request.requester(), &found, Timestamp::now())
                .map_err(|refusal| refusal.to_string()),
        ))
    }

    /// An edit: nothing but the editor's own review appended.
    fn set_edited(&self, request: &Request) -> ReviewPlan {
        let (old, new) = match (
            decode::<ChangeSet>(request.old_object.as_ref()),
            decode::<ChangeSet>(request.object.as_ref()),
        ) {
            (Ok(old), Ok(new)) => (old, new),
            (Err(why), _) | (_, Err(why)) => return refuse(why),
        };
        let author = request.requester();
        let now = Timestamp::now();
        if !self.is_own(request)
            && let Err(refusal) =
                validate_life_metadata_edit(&old.metadata, &new.metadata, &author.username)
        {
            return refuse(refusal);
        }
        self.edit_plan(
            validate_set_edit(&old.spec, &new.spec, &author, now),
            &as_request(&old),
            now,
        )
    }

    /// A deletion: audited with its author, refused where the policy says so (its members
    /// then can no longer be approved).
    fn set_deleted(&self, request: &Request) -> ReviewPlan {
        let set = match decode::<ChangeSet>(request.old_object.as_ref()) {
            Ok(set) => set,
            Err(why) => return refuse(why),
        };
        self.deletion_plan(request, &as_request(&set))
    }

    /// `/mutate/approvals` for a set: stamp `user`, `groups` and `time` on appended reviews
    /// that left them out.
    pub(super) fn stamp_set_review(&self, request: &Request) -> ReviewPlan {
        let (Ok(old), Some(new)) = (
            decode::<ChangeSet>(request.old_object.as_ref()),
            request.object.as_ref(),
        ) else {
            // The validating webhook denies what cannot be read.
            return ReviewPlan::answer(Answer::allow());
        };
        self.stamp_plan(request, &as_request(&old).spec, new)
    }
}
