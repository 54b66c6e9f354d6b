//! GitOps syncs (docs/gitops.md). Flux's kustomize-controller dry-runs every object of a
//! sync before it applies any, and stops at the first refusal; a denied dry run opens no
//! request. So a dry run by a controller a policy names, of a change that needs a request,
//! is one of its sync's *round*: the first of a round is held and then denied (so nothing
//! of the sync applies), the others pass (a dry run changes nothing) and are remembered.
//! When the controller reports the denial on its `Kustomization`, the round's requests are
//! opened, all at once, from what the API server sent, never from the report.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::api::{
    ApprovalPolicy, ChangeOrigin, ChangeSetSpec, DeploymentApprovalSpec, GROUP, GitOpsKind,
    UserInfo, VERSION, service_account_username,
};
use crate::core::approval::seal::{SealKey, is_sealed_text, seal_text, sealed};
use crate::core::approval::set::{SET_KIND, sealed_set, set_name, set_spec};
use crate::core::change::canonical_json;
use crate::core::inert;
use crate::core::plan::{Answer, EventKind, Outcome, PlannedEvent, ReviewPlan, Step, Write};
use sha2::{Digest, Sha256};

/// The labels kustomize-controller puts on every object it applies: its Kustomization.
pub const FLUX_NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
pub const FLUX_NAMESPACE_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";
/// Flux's Kustomization API.
pub const KUSTOMIZATION_API_VERSION: &str = "kustomize.toolkit.fluxcd.io/v1";
/// In the held denial, and so in the report of it that opens the round's requests.
pub const HELD_MARKER: &str = "countersign holds this sync for approval";

/// One sync: a controller (by identity) applying one Kustomization.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SyncKey {
    pub controller: GitOpsKind,
    /// The controller's user, as the API server authenticated it.
    pub identity: String,
    /// The Kustomization's namespace and name.
    pub namespace: String,
    pub name: String,
}

impl SyncKey {
    /// The request's record of where it came from.
    pub fn origin(&self, revision: Option<String>) -> ChangeOrigin {
        ChangeOrigin {
            api_version: KUSTOMIZATION_API_VERSION.into(),
            kind: "Kustomization".into(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            revision,
        }
    }

    fn describe(&self) -> String {
        format!("Kustomization {}/{}", self.namespace, self.name)
    }
}

/// The sync a review belongs to: a dry run, by a controller `policy` (the governing one)
/// names, of an object that carries its Kustomization's labels.
pub fn sync_of(
    dry_run: bool,
    requester: &UserInfo,
    object: &Value,
    policy: &ApprovalPolicy,
) -> Option<SyncKey> {
    if !dry_run {
        return None;
    }
    let controller = named_controller(requester, policy)?;
    let label = |key: &str| {
        object
            .pointer("/metadata/labels")
            .and_then(|labels| labels.get(key))
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
            .map(str::to_string)
    };
    match controller.kind {
        GitOpsKind::Flux => Some(SyncKey {
            controller: controller.kind,
            identity: requester.username.clone(),
            namespace: label(FLUX_NAMESPACE_LABEL)?,
            name: label(FLUX_NAME_LABEL)?,
        }),
        // Argo CD's dry run is client-side: its real apply opens the request (`origin_of`).
        GitOpsKind::ArgoCd => None,
    }
}

/// The GitOps controller `policy` names that `requester` is, if any.
fn named_controller<'p>(
    requester: &UserInfo,
    policy: &'p ApprovalPolicy,
) -> Option<&'p crate::api::GitOpsController> {
    policy.spec.gitops.as_ref()?.controllers.iter().find(|c| {
        requester.username
            == service_account_username(&c.service_account.namespace, &c.service_account.name)
    })
}

/// Argo CD's annotation naming the Application an object belongs to:
/// `<app>:<group>/<kind>:<namespace>/<name>`, `<app>` being `<namespace>_<name>` for an
/// Application outside Argo CD's own namespace.
pub const ARGOCD_TRACKING_ANNOTATION: &str = "argocd.argoproj.io/tracking-id";
/// Argo CD's older tracking label: the Application's name.
pub const ARGOCD_INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const ARGOCD_APPLICATION_API_VERSION: &str = "argoproj.io/v1alpha1";

/// Where a real apply by a GitOps controller `policy` names comes from, for the request it
/// opens: Argo CD's Application, from the object's tracking annotation (or label); an
/// Application without a namespace of its own is in the controller's.
pub fn origin_of(
    dry_run: bool,
    requester: &UserInfo,
    object: &Value,
    policy: &ApprovalPolicy,
) -> Option<ChangeOrigin> {
    let controller = named_controller(requester, policy).filter(|_| !dry_run)?;
    if controller.kind != GitOpsKind::ArgoCd {
        return None;
    }
    let metadata = object.get("metadata")?;
    let text = |section: &str, key: &str| {
        metadata
            .get(section)
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let instance = match text("annotations", ARGOCD_TRACKING_ANNOTATION) {
        Some(tracking) => tracking.split(':').next()?,
        None => text("labels", ARGOCD_INSTANCE_LABEL)?,
    };
    let (namespace, name) = match instance.split_once('_') {
        Some((namespace, name)) => (namespace, name),
        None => (controller.service_account.namespace.as_str(), instance),
    };
    let valid = |part: &str| {
        !part.is_empty()
            && part.len() <= 253
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    (valid(namespace) && valid(name)).then(|| ChangeOrigin {
        api_version: ARGOCD_APPLICATION_API_VERSION.into(),
        kind: "Application".into(),
        namespace: namespace.into(),
        name: name.into(),
        revision: None,
    })
}

/// What resuming an Argo CD Application takes, as `argocd app sync` does it.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgoResume {
    /// An operation is running (retrying, say): its next attempt applies the approved
    /// change; Argo CD refuses to start another, and none is needed.
    Running,
    /// Start a sync at the revision that failed: this merge patch (`operation`, the old
    /// `status.operationState` cleared), conditional on the Application's resourceVersion.
    Start(Value),
}

/// How to resume `application` (as read) for `approval` (`<namespace>/<name>`).
pub fn argo_resume(application: &Value, approval: &str) -> ArgoResume {
    if application.get("operation").is_some_and(|op| !op.is_null()) {
        return ArgoResume::Running;
    }
    let text = |pointer: &str| {
        application
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    // The revision the failed sync tried.
    let revision = text("/status/operationState/syncResult/revision")
        .or_else(|| text("/status/operationState/operation/sync/revision"))
        .or_else(|| text("/status/sync/revision"));
    let mut sync = serde_json::Map::new();
    if let Some(revision) = revision {
        sync.insert("revision".into(), Value::from(revision));
    }
    let revisions = application
        .pointer("/status/operationState/syncResult/revisions")
        .filter(|r| r.as_array().is_some_and(|r| !r.is_empty()));
    if let Some(revisions) = revisions {
        sync.insert("revisions".into(), revisions.clone());
    }
    if let Some(options) = application.pointer("/spec/syncPolicy/syncOptions") {
        sync.insert("syncOptions".into(), options.clone());
    }
    let mut operation = serde_json::json!({
        "sync": Value::Object(sync),
        "initiatedBy": { "username": "countersign" },
        "info": [{ "name": "Reason", "value": format!("approved in countersign: {approval}") }],
    });
    if let Some(retry) = application.pointer("/spec/syncPolicy/retry") {
        operation["retry"] = retry.clone();
    }
    let resource_version = text("/metadata/resourceVersion").unwrap_or_default();
    ArgoResume::Start(serde_json::json!({
        "metadata": { "resourceVersion": resource_version },
        "operation": operation,
        "status": { "operationState": null },
    }))
}

/// A change of a round: the request it would open.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundMember {
    pub namespace: String,
    /// The request's name.
    pub name: String,
    /// Unsealed: sealed when opened.
    pub spec: DeploymentApprovalSpec,
}

impl RoundMember {
    fn describe(&self) -> String {
        format!(
            "{} {}/{}",
            self.spec.target.kind, self.namespace, self.spec.target.name
        )
    }
}

/// The part a dry run takes in its round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncRole {
    /// Allowed: remembered, and requested with the round.
    Pass,
    /// Denied once the round has gone quiet, which holds the whole sync.
    Hold,
}

/// A round's first dry run is held; every later one passes. `held_already`: the round
/// has its held dry run.
pub fn role_in_round(held_already: bool) -> SyncRole {
    if held_already {
        SyncRole::Pass
    } else {
        SyncRole::Hold
    }
}

/// A passing dry run of `key`'s round: allowed, with a warning saying why.
pub fn pass_plan(key: &SyncKey, member: &RoundMember) -> ReviewPlan {
    ReviewPlan::answer(
        Answer::allow()
            .counted_as(Outcome::ApprovalRequired)
            .warn(inert::bounded(
                &format!(
                    "countersign: {} needs approval; it is remembered with the rest of {}'s sync, whose requests open together when the sync reports its denial",
                    member.describe(),
                    key.describe()
                ),
                2000,
            )),
    )
}

/// The held dry run, answered once its round has gone quiet: denied, naming every change
/// of the round (`members`, this one included) and how their requests open.
pub fn held_plan(key: &SyncKey, members: &[RoundMember], message: &str) -> ReviewPlan {
    let listed: Vec<String> = members.iter().map(RoundMember::describe).collect();
    let text = format!(
        "{message}\n- {HELD_MARKER}: {} gated change(s) of {} ({}); countersign opens their requests together when {} reports this denial, and the approvers are told",
        members.len(),
        key.describe(),
        inert::bounded(&listed.join(", "), 1500),
        key.identity,
    );
    ReviewPlan::answer(Answer::deny(text).counted_as(Outcome::ApprovalRequired))
}

/// A controller's report that it was held: a `Kustomization` whose Ready condition is
/// False with countersign's marker in its message. Only a trigger: what it opens comes
/// from the round countersign remembered, never from the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedHold {
    pub namespace: String,
    pub name: String,
    /// The revision it reports trying, recorded as reported.
    pub revision: Option<String>,
}

pub fn reported_hold(kustomization: &Value) -> Option<ReportedHold> {
    let ready = kustomization
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))?;
    let held = ready.get("status").and_then(Value::as_str) == Some("False")
        && ready
            .get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| m.contains(HELD_MARKER));
    if !held {
        return None;
    }
    let text = |pointer: &str| {
        kustomization
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Some(ReportedHold {
        namespace: text("/metadata/namespace")?,
        name: text("/metadata/name")?,
        revision: text("/status/lastAttemptedRevision").map(|r| inert::bounded(&r, 200)),
    })
}

/// The name of the object in the install namespace through which the replicas that each
/// saw part of a sync's round at `revision` share their parts (`webhook::syncs`).
pub fn exchange_name(key: &SyncKey, revision: Option<&str>) -> String {
    let identity = canonical_json(&serde_json::json!([
        key.identity,
        key.namespace,
        key.name,
        revision
    ]));
    let hash = format!("{:x}", Sha256::digest(identity.as_bytes()));
    format!("countersign-sync-{}", &hash[..16])
}

/// This replica's part of a round as it is shared: the members and countersign's seal over
/// them, so a part nobody but a countersign replica wrote is never opened.
pub fn round_part(members: &[RoundMember], key: &SealKey) -> String {
    let listed = canonical_json(&serde_json::to_value(members).unwrap_or_default());
    let seal = seal_text(key, &listed);
    canonical_json(&serde_json::json!({ "members": listed, "seal": seal }))
}

/// The whole round from the parts the replicas shared (`own` first, so it counts even if
/// it could not be shared): each part checked against countersign's seal (others are
/// dropped), each change once, in one order every replica computes alike (namespace, then
/// request name), so every replica opens the same set.
pub fn merged_round<'a>(
    own: &[RoundMember],
    shared: impl IntoIterator<Item = &'a str>,
    key: &SealKey,
) -> Vec<RoundMember> {
    let mut merged: Vec<RoundMember> = own.to_vec();
    for part in shared {
        let Ok(part) = serde_json::from_str::<serde_json::Value>(part) else {
            continue;
        };
        let (Some(listed), Some(seal)) = (part["members"].as_str(), part["seal"].as_str()) else {
            continue;
        };
        if !is_sealed_text(key, listed, seal) {
            continue;
        }
        let Ok(members) = serde_json::from_str::<Vec<RoundMember>>(listed) else {
            continue;
        };
        merged.extend(members);
    }
    merged.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    merged.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);
    merged
}

/// Open the requests of a held sync's round, now that its controller reported the hold at
/// `revision`: sealed, dated now, with the sync as their origin. The round's requests in
/// one namespace under one policy (one chain, one set of approvers) form one change set
/// when there are several: the set is opened first (sealed over its members), then its
/// members, so a retry after a failed step converges on the same objects.
pub fn open_round(
    key: &SyncKey,
    members: &[RoundMember],
    revision: Option<String>,
    seal_key: &SealKey,
    now: Timestamp,
) -> ReviewPlan {
    let origin = key.origin(revision);
    let mut groups: Vec<((&str, &str), Vec<&RoundMember>)> = Vec::new();
    for member in members {
        let group = (member.namespace.as_str(), member.spec.policy.name.as_str());
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, listed)) => listed.push(member),
            None => groups.push((group, vec![member])),
        }
    }
    let mut steps = Vec::new();
    for ((namespace, _), group) in groups {
        let set = (group.len() >= 2)
            .then(|| round_set(key, &origin, namespace, &group, seal_key, now))
            .flatten();
        let set_name = set.as_ref().map(|(name, _)| name.clone());
        if let Some((name, spec)) = set {
            steps.push(open_set_step(key, namespace, name, spec));
        }
        for member in group {
            let mut spec = member.spec.clone();
            spec.change.origin = Some(origin.clone());
            spec.change.requested_at = Time(now);
            spec.change_set = set_name.clone();
            let spec = sealed(seal_key, &member.namespace, spec);
            steps.push(open_request_step(key, member, spec));
        }
    }
    ReviewPlan {
        steps,
        answer: Answer::allow(),
        events: Vec::new(),
    }
}

/// The set of a round's `group` (one namespace, one policy): its name and sealed spec.
fn round_set(
    key: &SyncKey,
    origin: &ChangeOrigin,
    namespace: &str,
    group: &[&RoundMember],
    seal_key: &SealKey,
    now: Timestamp,
) -> Option<(String, ChangeSetSpec)> {
    let specs: Vec<(String, &DeploymentApprovalSpec)> =
        group.iter().map(|m| (m.name.clone(), &m.spec)).collect();
    let requester = group.first()?.spec.change.requester.clone();
    let mut spec = set_spec(&specs, &requester, now)?;
    spec.change.origin = Some(origin.clone());
    let name = set_name(&key.name, &spec.change.digest);
    let spec = sealed_set(seal_key, namespace, &name, spec);
    Some((name, spec))
}

fn open_set_step(key: &SyncKey, namespace: &str, name: String, spec: ChangeSetSpec) -> Step {
    let opened = PlannedEvent::admission(
        ObjectReference {
            api_version: Some(format!("{GROUP}/{VERSION}")),
            kind: Some(SET_KIND.into()),
            namespace: Some(namespace.into()),
            name: Some(name.clone()),
            ..ObjectReference::default()
        },
        EventKind::Normal,
        "ApprovalRequested",
        format!(
            "{} requested approval of change set {namespace}/{name}: {} (sync of {})",
            key.identity,
            spec.change.summary.text,
            key.describe()
        ),
    );
    let mut step = Step::new(
        Write::OpenSet {
            namespace: namespace.into(),
            name: name.clone(),
            spec: Box::new(spec),
        },
        format!(
            "countersign could not open change set {namespace}/{name} of {}'s sync ({{error}})",
            key.describe()
        ),
    );
    step.on_created = vec![opened];
    step
}

fn open_request_step(key: &SyncKey, member: &RoundMember, spec: DeploymentApprovalSpec) -> Step {
    let opened = PlannedEvent::admission(
        spec.target
            .in_namespace(Some(member.namespace.clone()))
            .reference(),
        EventKind::Normal,
        "ApprovalRequested",
        format!(
            "{} requested approval {}/{} for: {} (sync of {}{})",
            key.identity,
            member.namespace,
            member.name,
            spec.change.summary.text,
            key.describe(),
            spec.change_set
                .as_ref()
                .map(|set| format!(", in change set {set}"))
                .unwrap_or_default()
        ),
    );
    let mut step = Step::new(
        Write::OpenRequest {
            namespace: member.namespace.clone(),
            name: member.name.clone(),
            spec: Box::new(spec),
        },
        format!(
            "countersign could not open request {}/{} of {}'s sync ({{error}})",
            member.namespace,
            member.name,
            key.describe()
        ),
    );
    step.on_created = vec![opened];
    step
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApprovalPolicySpec, GitOpsController, GitOpsSettings, ServiceAccountRef};
    use crate::core::approval::seal::{SealCheck, check};
    use crate::core::test_builders::{minutes, two_level_request};
    use serde_json::json;

    const FLUX: &str = "system:serviceaccount:flux-system:kustomize-controller";

    fn policy(controllers: &[(&str, &str)]) -> ApprovalPolicy {
        ApprovalPolicy::new(
            "p",
            ApprovalPolicySpec {
                gitops: Some(GitOpsSettings {
                    controllers: controllers
                        .iter()
                        .map(|(namespace, name)| GitOpsController {
                            kind: GitOpsKind::Flux,
                            service_account: ServiceAccountRef {
                                namespace: (*namespace).into(),
                                name: (*name).into(),
                            },
                        })
                        .collect(),
                }),
                ..ApprovalPolicySpec::default()
            },
        )
    }

    fn object(labels: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "shop", "labels": labels}})
    }

    fn flux_labels() -> Value {
        json!({FLUX_NAME_LABEL: "apps", FLUX_NAMESPACE_LABEL: "flux-system"})
    }

    #[test]
    fn which_dry_runs_are_a_syncs() {
        let named = policy(&[("flux-system", "kustomize-controller")]);
        let key = SyncKey {
            controller: GitOpsKind::Flux,
            identity: FLUX.into(),
            namespace: "flux-system".into(),
            name: "apps".into(),
        };
        // (what, dry run, requester, object, policy, the sync)
        let cases = [
            (
                "the named controller's dry run",
                true,
                FLUX,
                object(flux_labels()),
                &named,
                Some(key.clone()),
            ),
            (
                "its real apply",
                false,
                FLUX,
                object(flux_labels()),
                &named,
                None,
            ),
            (
                "a person's dry run with the labels copied",
                true,
                "dave",
                object(flux_labels()),
                &named,
                None,
            ),
            (
                "a controller the policy does not name",
                true,
                "system:serviceaccount:flux-system:other",
                object(flux_labels()),
                &named,
                None,
            ),
            (
                "a policy naming none",
                true,
                FLUX,
                object(flux_labels()),
                &policy(&[]),
                None,
            ),
            (
                "an object without its Kustomization's labels",
                true,
                FLUX,
                object(json!({})),
                &named,
                None,
            ),
            (
                "an empty label",
                true,
                FLUX,
                object(json!({FLUX_NAME_LABEL: "", FLUX_NAMESPACE_LABEL: "flux-system"})),
                &named,
                None,
            ),
            (
                "labels that are not strings",
                true,
                FLUX,
                object(json!({FLUX_NAME_LABEL: 7, FLUX_NAMESPACE_LABEL: "flux-system"})),
                &named,
                None,
            ),
        ];
        for (what, dry_run, user, object, policy, expected) in cases {
            let requester = UserInfo::new(user, &[]);
            assert_eq!(
                sync_of(dry_run, &requester, &object, policy),
                expected,
                "{what}"
            );
        }
        let no_gitops = ApprovalPolicy::new("q", ApprovalPolicySpec::default());
        assert_eq!(
            sync_of(
                true,
                &UserInfo::new(FLUX, &[]),
                &object(flux_labels()),
                &no_gitops
            ),
            None
        );
    }

    #[test]
    fn a_round_holds_its_first_dry_run_and_passes_the_rest() {
        assert_eq!(role_in_round(false), SyncRole::Hold);
        assert_eq!(role_in_round(true), SyncRole::Pass);
    }

    fn key() -> SyncKey {
        SyncKey {
            controller: GitOpsKind::Flux,
            identity: FLUX.into(),
            namespace: "flux-system".into(),
            name: "apps".into(),
        }
    }

    fn member(name: &str) -> RoundMember {
        let mut spec = two_level_request(&[], None).spec;
        spec.target.name = name.into();
        spec.change.requester = UserInfo::new(FLUX, &[]);
        RoundMember {
            namespace: "shop".into(),
            name: format!("{name}-1"),
            spec,
        }
    }

    #[test]
    fn the_held_denial_names_the_round_and_a_pass_warns() {
        let members = [member("web"), member("api\u{1b}[2J")];
        let plan = held_plan(&key(), &members, "approval required by policy p");
        assert!(!plan.answer.allowed && plan.steps.is_empty());
        let message = &plan.answer.message;
        assert!(
            message.starts_with("approval required by policy p\n- "),
            "{message}"
        );
        assert!(message.contains(HELD_MARKER), "{message}");
        assert!(
            message.contains("2 gated change(s) of Kustomization flux-system/apps"),
            "{message}"
        );
        assert!(message.contains("Deployment shop/web"), "{message}");
        assert!(!message.contains('\u{1b}'), "raw escape in {message:?}");
        let pass = pass_plan(&key(), &members[0]);
        assert!(pass.answer.allowed && pass.steps.is_empty());
        assert!(pass.answer.warnings[0].contains("Deployment shop/web needs approval"));
    }

    #[test]
    fn what_counts_as_a_report_of_the_hold() {
        let kustomization = |status: &str, message: &str| {
            json!({
                "metadata": {"name": "apps", "namespace": "flux-system"},
                "status": {
                    "lastAttemptedRevision": "main@sha1:abc",
                    "conditions": [
                        {"type": "Reconciling", "status": "False", "message": HELD_MARKER},
                        {"type": "Ready", "status": status, "message": message},
                    ],
                },
            })
        };
        let held = format!("Deployment/shop/web dry-run failed: … - {HELD_MARKER}: 2 …");
        assert_eq!(
            reported_hold(&kustomization("False", &held)),
            Some(ReportedHold {
                namespace: "flux-system".into(),
                name: "apps".into(),
                revision: Some("main@sha1:abc".into()),
            })
        );
        for (what, object) in [
            ("ready", kustomization("True", &held)),
            (
                "failed for another reason",
                kustomization("False", "kustomize build failed"),
            ),
            ("unknown", kustomization("Unknown", &held)),
            (
                "no status",
                json!({"metadata": {"name": "apps", "namespace": "flux-system"}}),
            ),
            (
                "conditions not a list",
                json!({"metadata": {"name": "a", "namespace": "b"}, "status": {"conditions": "Ready"}}),
            ),
            (
                "no name",
                json!({"status": {"conditions": [{"type": "Ready", "status": "False", "message": HELD_MARKER}]}}),
            ),
        ] {
            assert_eq!(reported_hold(&object), None, "{what}");
        }
    }

    #[test]
    fn an_opened_round_is_sealed_dated_and_records_its_sync() {
        let seal_key = SealKey::new(&[3; 32]).expect("a key");
        let members = [member("web"), member("api")];
        let plan = open_round(
            &key(),
            &members,
            Some("main@sha1:abc".into()),
            &seal_key,
            minutes(9),
        );
        assert_eq!(plan.steps.len(), 3, "the set, then its two members");
        let Write::OpenSet {
            namespace,
            name: set_name,
            spec: set,
        } = &plan.steps[0].write
        else {
            panic!("not a set: {:?}", plan.steps[0].write);
        };
        assert_eq!(namespace, "shop");
        assert!(set_name.starts_with("apps-"), "{set_name}");
        let mut opened = crate::api::ChangeSet::new(set_name, (**set).clone());
        opened.metadata.namespace = Some("shop".into());
        assert_eq!(
            crate::core::approval::set::set_check(&seal_key, &opened, &[]),
            SealCheck::Verified,
            "a set countersign opens is sealed"
        );
        assert_eq!(set.members.len(), 2);
        assert_eq!(set.change.requester.username, FLUX);
        assert_eq!(
            set.change.origin.as_ref().map(|o| o.name.as_str()),
            Some("apps")
        );
        assert!(
            set.change.summary.text.starts_with("2 changes: "),
            "{}",
            set.change.summary.text
        );
        for (step, member) in plan.steps[1..].iter().zip(&members) {
            let Write::OpenRequest {
                namespace,
                name,
                spec,
            } = &step.write
            else {
                panic!("not a request: {:?}", step.write);
            };
            assert_eq!(
                (namespace.as_str(), name.as_str()),
                ("shop", member.name.as_str())
            );
            assert_eq!(spec.change_set.as_deref(), Some(set_name.as_str()));
            assert!(
                set.members
                    .iter()
                    .any(|m| &m.request == name && m.digest == spec.change.digest)
            );
            assert_eq!(check(&seal_key, "shop", spec), SealCheck::Verified);
            assert_eq!(spec.change.requested_at.0, minutes(9));
            assert_eq!(spec.change.requester.username, FLUX);
            let origin = spec.change.origin.as_ref().expect("an origin");
            assert_eq!(
                (
                    origin.kind.as_str(),
                    origin.namespace.as_str(),
                    origin.name.as_str(),
                    origin.revision.as_deref()
                ),
                (
                    "Kustomization",
                    "flux-system",
                    "apps",
                    Some("main@sha1:abc")
                )
            );
            assert_eq!(step.on_created.len(), 1);
        }
    }

    #[test]
    fn the_replicas_parts_merge_into_one_round_every_replica_orders_alike() {
        let seal_key = SealKey::new(&[3; 32]).expect("a key");
        let other_key = SealKey::new(&[4; 32]).expect("another key");
        let here = [member("web")];
        let there = [member("api"), member("db")];
        let shared = round_part(&there, &seal_key);
        let names =
            |round: &[RoundMember]| round.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
        // (what, this replica's part, the parts shared, the round opened)
        let forged = round_part(&[member("evil")], &other_key);
        let tampered = shared.replace("api-1", "evil-1");
        let own_shared = round_part(&here, &seal_key);
        type Case<'a> = (&'a str, &'a [RoundMember], Vec<&'a str>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            ("alone", &here, vec![], vec!["web-1"]),
            (
                "with another replica's part",
                &here,
                vec![shared.as_str()],
                vec!["api-1", "db-1", "web-1"],
            ),
            (
                "its own part shared too, and twice",
                &here,
                vec![shared.as_str(), shared.as_str(), own_shared.as_str()],
                vec!["api-1", "db-1", "web-1"],
            ),
            (
                "a part not sealed by countersign",
                &here,
                vec![forged.as_str()],
                vec!["web-1"],
            ),
            (
                "a part edited after sealing",
                &here,
                vec![tampered.as_str()],
                vec!["web-1"],
            ),
            (
                "garbage",
                &here,
                vec!["{", "[]", "{\"members\": 1}"],
                vec!["web-1"],
            ),
            (
                "nothing here, all there",
                &[],
                vec![shared.as_str()],
                vec!["api-1", "db-1"],
            ),
        ];
        for (what, own, parts, expected) in cases {
            let merged = merged_round(own, parts, &seal_key);
            assert_eq!(names(&merged), expected, "{what}");
        }
        // Both replicas open the same round, so the same set.
        let from_here = merged_round(&here, [shared.as_str()], &seal_key);
        let from_there = merged_round(&there, [round_part(&here, &seal_key).as_str()], &seal_key);
        assert_eq!(from_here, from_there);
        let set_of =
            |round: &[RoundMember]| match &open_round(&key(), round, None, &seal_key, minutes(1))
                .steps[0]
                .write
            {
                Write::OpenSet { name, .. } => name.clone(),
                other => panic!("not a set: {other:?}"),
            };
        assert_eq!(set_of(&from_here), set_of(&from_there));
        // One exchange per sync and revision.
        let a = exchange_name(&key(), Some("main@sha1:a"));
        assert_eq!(a, exchange_name(&key(), Some("main@sha1:a")));
        assert_ne!(a, exchange_name(&key(), Some("main@sha1:b")));
        assert!(a.starts_with("countersign-sync-") && a.len() <= 63, "{a}");
    }

    #[test]
    fn a_round_forms_one_set_per_namespace_and_policy_of_several_requests() {
        let seal_key = SealKey::new(&[3; 32]).expect("a key");
        let in_namespace = |name: &str, namespace: &str| RoundMember {
            namespace: namespace.into(),
            ..member(name)
        };
        let under_policy = |name: &str, policy: &str| {
            let mut m = member(name);
            m.spec.policy.name = policy.into();
            m
        };
        // (what, the round, sets opened, requests opened and how many of them in a set)
        let cases: Vec<(&str, Vec<RoundMember>, usize, usize, usize)> = vec![
            ("one change: a plain request", vec![member("web")], 0, 1, 0),
            (
                "two in one namespace: one set",
                vec![member("web"), member("api")],
                1,
                2,
                2,
            ),
            (
                "two namespaces, one each: no set",
                vec![in_namespace("web", "shop"), in_namespace("api", "billing")],
                0,
                2,
                0,
            ),
            (
                "two policies: no set across them",
                vec![under_policy("web", "p"), under_policy("api", "q")],
                0,
                2,
                0,
            ),
            (
                "three here, one there",
                vec![
                    member("web"),
                    member("api"),
                    in_namespace("db", "billing"),
                    member("worker"),
                ],
                1,
                4,
                3,
            ),
        ];
        for (what, members, sets, requests, in_sets) in cases {
            let plan = open_round(&key(), &members, None, &seal_key, minutes(9));
            let opened_sets = plan
                .steps
                .iter()
                .filter(|s| matches!(s.write, Write::OpenSet { .. }))
                .count();
            let opened: Vec<_> = plan
                .steps
                .iter()
                .filter_map(|s| match &s.write {
                    Write::OpenRequest { spec, .. } => Some(spec),
                    _ => None,
                })
                .collect();
            assert_eq!(opened_sets, sets, "{what}");
            assert_eq!(opened.len(), requests, "{what}");
            assert_eq!(
                opened.iter().filter(|s| s.change_set.is_some()).count(),
                in_sets,
                "{what}"
            );
            if let Some(first) = plan.steps.first() {
                assert!(
                    sets == 0 || matches!(first.write, Write::OpenSet { .. }),
                    "{what}: a set is opened before its members"
                );
            }
        }
    }

    const ARGO: &str = "system:serviceaccount:argocd:argocd-application-controller";

    fn argo_policy() -> ApprovalPolicy {
        let mut policy = policy(&[("argocd", "argocd-application-controller")]);
        if let Some(gitops) = policy.spec.gitops.as_mut() {
            gitops.controllers[0].kind = GitOpsKind::ArgoCd;
        }
        policy
    }

    fn tracked(annotations: Value, labels: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "shop", "annotations": annotations, "labels": labels}})
    }

    #[test]
    fn where_an_argo_cd_apply_comes_from() {
        let argo = argo_policy();
        let application =
            |namespace: &str, name: &str| Some((namespace.to_string(), name.to_string()));
        // (what, dry run, requester, object, the Application)
        let cases = [
            (
                "tracked by annotation",
                false,
                ARGO,
                tracked(
                    json!({ARGOCD_TRACKING_ANNOTATION: "shop:apps/Deployment:shop/web"}),
                    json!({}),
                ),
                application("argocd", "shop"),
            ),
            (
                "an Application in another namespace",
                false,
                ARGO,
                tracked(
                    json!({ARGOCD_TRACKING_ANNOTATION: "teams_shop:apps/Deployment:shop/web"}),
                    json!({}),
                ),
                application("teams", "shop"),
            ),
            (
                "tracked by the older label",
                false,
                ARGO,
                tracked(json!({}), json!({ARGOCD_INSTANCE_LABEL: "shop"})),
                application("argocd", "shop"),
            ),
            (
                "a dry run",
                true,
                ARGO,
                tracked(
                    json!({ARGOCD_TRACKING_ANNOTATION: "shop:apps/Deployment:shop/web"}),
                    json!({}),
                ),
                None,
            ),
            (
                "a person with the annotation copied",
                false,
                "dave",
                tracked(
                    json!({ARGOCD_TRACKING_ANNOTATION: "shop:apps/Deployment:shop/web"}),
                    json!({}),
                ),
                None,
            ),
            (
                "untracked",
                false,
                ARGO,
                tracked(json!({}), json!({})),
                None,
            ),
            (
                "a name no Application can have",
                false,
                ARGO,
                tracked(
                    json!({ARGOCD_TRACKING_ANNOTATION: "Shop/../x:apps/Deployment:shop/web"}),
                    json!({}),
                ),
                None,
            ),
            (
                "an empty tracking id",
                false,
                ARGO,
                tracked(json!({ARGOCD_TRACKING_ANNOTATION: ""}), json!({})),
                None,
            ),
        ];
        for (what, dry_run, user, object, expected) in cases {
            let origin = origin_of(dry_run, &UserInfo::new(user, &[]), &object, &argo);
            assert_eq!(
                origin
                    .as_ref()
                    .map(|o| (o.namespace.clone(), o.name.clone())),
                expected,
                "{what}"
            );
            if let Some(origin) = origin {
                assert_eq!(
                    (origin.api_version.as_str(), origin.kind.as_str()),
                    (ARGOCD_APPLICATION_API_VERSION, "Application")
                );
            }
        }
        // Flux's applies have no origin of this kind; Argo CD's dry runs form no round.
        let flux = policy(&[("flux-system", "kustomize-controller")]);
        assert_eq!(
            origin_of(
                false,
                &UserInfo::new(FLUX, &[]),
                &object(flux_labels()),
                &flux
            ),
            None
        );
        assert_eq!(
            sync_of(
                true,
                &UserInfo::new(ARGO, &[]),
                &object(flux_labels()),
                &argo
            ),
            None
        );
    }

    #[test]
    fn an_argo_cd_application_is_synced_again_at_the_revision_that_failed() {
        let failed = json!({
            "metadata": {"name": "shop", "namespace": "argocd", "resourceVersion": "42"},
            "spec": {"syncPolicy": {"syncOptions": ["ServerSideApply=true"], "retry": {"limit": 5}}},
            "status": {
                "sync": {"revision": "newer"},
                "operationState": {
                    "phase": "Failed",
                    "operation": {"sync": {"revision": "abc"}},
                    "syncResult": {"revision": "abc"},
                },
            },
        });
        let ArgoResume::Start(patch) = argo_resume(&failed, "shop/web-1") else {
            panic!("not started");
        };
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["operation"]["sync"]["revision"], "abc");
        assert_eq!(
            patch["operation"]["sync"]["syncOptions"],
            json!(["ServerSideApply=true"])
        );
        assert_eq!(patch["operation"]["retry"], json!({"limit": 5}));
        assert_eq!(patch["operation"]["initiatedBy"]["username"], "countersign");
        assert!(patch["status"]["operationState"].is_null());
        assert!(
            patch["operation"]["info"][0]["value"]
                .as_str()
                .unwrap_or_default()
                .contains("shop/web-1")
        );

        // The revision from where the failed sync left it, in order of preference.
        let mut only_operation = failed.clone();
        only_operation["status"]["operationState"]["syncResult"] = Value::Null;
        let mut only_sync = failed.clone();
        only_sync["status"]["operationState"] = Value::Null;
        for (what, application, revision) in [
            ("the operation's", only_operation, json!("abc")),
            ("the sync status's", only_sync, json!("newer")),
            (
                "none known",
                json!({"metadata": {"resourceVersion": "1"}}),
                Value::Null,
            ),
        ] {
            let ArgoResume::Start(patch) = argo_resume(&application, "shop/web-1") else {
                panic!("{what}: not started");
            };
            assert_eq!(patch["operation"]["sync"]["revision"], revision, "{what}");
        }

        let mut running = failed.clone();
        running["operation"] = json!({"sync": {"revision": "abc"}});
        assert_eq!(argo_resume(&running, "shop/web-1"), ArgoResume::Running);
    }
}
