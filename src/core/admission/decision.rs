//! The one admission decision (SPEC §1–§6), shared by the webhook and `countersign check`:
//! a pure function of the change, the policies, the existing DeploymentApprovals, the
//! RoleBinding snapshot and `now`.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::api::{
    ApprovalPhase, ApprovalPolicy, ApprovalTarget, ChangeRecord, ChangeSummary,
    DEFAULT_IGNORE_FIELDS, DeploymentApproval, DeploymentApprovalSpec, Operation, PolicySnapshot,
};
use crate::core::admission::controllers::is_workload_controller;
use crate::core::admission::sync::{SyncKey, origin_of, sync_of};
use crate::core::approval::chain::{
    ApprovalChain, ChainState, RoleBindingSnapshot, describe_progress,
};
use crate::core::change::summary::summarize;
use crate::core::change::{ChangeDigest, api_group, group_kind};
use crate::core::policy::matching::{
    BreakGlassOutcome, ChangeRequest, break_glass, deny_reasons, exclusion, matching_policies,
    policy_name,
};
use crate::core::policy::validation::{FieldError, validate_chain_snapshot, validate_policy};
use crate::core::rollout::token::is_deploy_token;

/// Everything the decision looks at. The shell gathers it; the core only reads it.
#[derive(Clone, Copy, Debug)]
pub struct DecisionInput<'a> {
    pub request: ChangeRequest<'a>,
    pub policies: &'a [ApprovalPolicy],
    /// DeploymentApprovals in (or for) the target's namespace.
    pub approvals: &'a [DeploymentApproval],
    pub bindings: &'a RoleBindingSnapshot,
    pub now: Timestamp,
    /// Where validation results come from: [`ValidateOnTheSpot`], or a cache.
    pub validations: &'a dyn Validations,
}

/// The validation results `decide` needs. `check` validates on the spot; the webhook keeps
/// them per policy generation and per approval, so a request does not pay for the chain's
/// counting-order search (SPEC §3 validation) again and again.
pub trait Validations: std::fmt::Debug + Sync {
    /// The errors that make `policy` unusable (empty: usable).
    fn policy_errors(&self, policy: &ApprovalPolicy) -> Vec<FieldError>;
    /// Why an approval's chain snapshot makes it unusable.
    fn snapshot_problem(&self, approval: &DeploymentApproval) -> Option<String>;
}

/// Validates each time it is asked.
#[derive(Clone, Copy, Debug, Default)]
pub struct ValidateOnTheSpot;

impl Validations for ValidateOnTheSpot {
    fn policy_errors(&self, policy: &ApprovalPolicy) -> Vec<FieldError> {
        validate_policy(&policy.spec).errors
    }

    fn snapshot_problem(&self, approval: &DeploymentApproval) -> Option<String> {
        snapshot_problem(approval)
    }
}

/// The outcome of one admission decision.
#[derive(Clone, Debug)]
pub struct Decision {
    pub verdict: Verdict,
    /// Names of the policies whose `match` selected the change, in priority order.
    pub matched_policies: Vec<String>,
    /// The change's digest under the governing policy's ignored fields.
    pub digest: ChangeDigest,
    /// The governing policy's ignored fields, under which [`Decision::summary`] describes
    /// the change.
    pub ignore_fields: Vec<String>,
    /// Why, for people: the verdict's reasons first, then notes.
    pub reasons: Vec<String>,
    /// Break-glass bypassed some or all matching policies; the shell audits and announces it.
    pub break_glass: Option<BreakGlassUse>,
}

/// A granted break-glass: the reason from the annotation and the policies it bypassed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakGlassUse {
    pub reason: String,
    pub policies: Vec<String>,
}

impl Decision {
    /// What the decided change does, for people (images before → after, changed paths).
    /// Computed on demand: the webhook answers most changes without it.
    pub fn summary(&self, request: &ChangeRequest) -> ChangeSummary {
        summarize(request.old_object, request.object, &self.ignore_fields)
    }

    /// May the API server admit the change?
    pub fn allowed(&self) -> bool {
        matches!(self.verdict, Verdict::Allowed(_) | Verdict::Approved(_))
    }
}

/// What the webhook must answer, and what it must do alongside.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// Admit; nothing to record except break-glass.
    Allowed(AllowReason),
    /// Refuse; no approval helps (only break-glass does).
    Denied(DenyReason),
    /// Refuse until an approval for this exact change is `Approved`.
    ApprovalRequired(Box<ApprovalRequirement>),
    /// Admit under an approved DeploymentApproval.
    Approved(Box<ApprovedChange>),
}

/// Why a change passes without approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowReason {
    NoPolicyMatches,
    /// Every matching policy exempts the requester or namespace.
    Exempt,
    /// The gated content is unchanged (only ignored fields, e.g. `spec.replicas`, changed).
    OnlyIgnoredFields,
    /// The matching policies have deny rules only, and none fired.
    NoApprovalRequired,
    /// Break-glass bypassed every remaining policy (see [`Decision::break_glass`]).
    BreakGlass,
    /// A workload controller made it for a workload that was gated itself
    /// (`core::admission::controllers`).
    WorkloadController,
    /// Back to the revision last confirmed `Deployed` (by the approval named), which the
    /// policy allows without a new approval; audited as a rollback.
    Rollback {
        approval: String,
    },
}

/// Why a change is refused outright.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// Freezes, windows or checks fired.
    Rules,
    /// A matching policy is malformed; fail closed.
    PolicyUnusable,
    /// Another approved change of the same object is rolling out (SPEC §1.3).
    RolloutInProgress { approval: String },
}

/// The approval a change needs, and where it stands.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalRequirement {
    /// The policy whose chain applies (highest priority, ties by name).
    pub policy: String,
    /// The existing DeploymentApproval's name, or the name a new one gets.
    pub approval_name: String,
    pub existing: bool,
    /// `Pending`, `Rejected` or `Expired` (`Pending` too when none exists yet).
    pub phase: ApprovalPhase,
    pub chain: ChainState,
    /// The DeploymentApproval to create, when none exists: the webhook opens it on a real
    /// attempt; a dry run's denial hands it to the client (`countersign request`), which
    /// may open it ahead of time.
    pub create: Option<DeploymentApprovalSpec>,
    /// For a rejected change: the fresh request `countersign request --again` may open.
    /// Never opened by the webhook: a rejection is not undone by applying again.
    pub again: Option<FreshRequest>,
    /// The new request's change is a GitOps sync's dry run: it joins the sync's round
    /// (`core::admission::sync`) instead of being handed out.
    pub sync: Option<SyncKey>,
}

/// A request that may be opened: its name and spec.
#[derive(Clone, Debug, PartialEq)]
pub struct FreshRequest {
    pub name: String,
    pub spec: DeploymentApprovalSpec,
}

/// An approval that lets the change through.
#[derive(Clone, Debug)]
pub struct ApprovedChange {
    pub approval: DeploymentApproval,
    pub chain: ChainState,
    /// `true`: the webhook must move it to `Deploying` (compare-and-swap) before admitting.
    /// `false`: it is already `Deploying` for this very digest (a retried apply).
    pub mark_deploying: bool,
}

/// Decide on one change at `input.now`.
pub fn decide(input: &DecisionInput) -> Decision {
    let request = &input.request;
    let matched = matching_policies(input.policies, request);
    let digests = GatedDigests::for_policies(request, &matched);
    let mut notes = Vec::new();
    let mut break_glass = None;
    let (verdict, mut reasons, governing) =
        evaluate(input, &matched, &digests, &mut notes, &mut break_glass);
    reasons.append(&mut notes);
    let ignore = ignore_fields(governing);
    Decision {
        verdict,
        matched_policies: matched.iter().map(|p| policy_name(p).to_string()).collect(),
        digest: digests.of_change(&ignore),
        ignore_fields: ignore,
        reasons,
        break_glass,
    }
}

/// The approval whose change was confirmed `Deployed` last, of those for the target.
fn last_deployed<'a>(for_target: &[&'a DeploymentApproval]) -> Option<&'a DeploymentApproval> {
    for_target
        .iter()
        .copied()
        .filter(|a| stored_phase(a) == Some(ApprovalPhase::Deployed))
        .max_by_key(|a| {
            a.status
                .as_ref()
                .and_then(|s| s.rollout.as_ref())
                .and_then(|r| r.finished_at.as_ref())
                .map_or(a.spec.change.requested_at.0, |t| t.0)
        })
}

/// The verdict, its reasons, and the policy whose ignored fields govern the digest.
fn evaluate<'p>(
    input: &DecisionInput,
    matched: &[&'p ApprovalPolicy],
    digests: &GatedDigests,
    notes: &mut Vec<String>,
    glass: &mut Option<BreakGlassUse>,
) -> (Verdict, Vec<String>, Option<&'p ApprovalPolicy>) {
    let request = &input.request;
    let Some(&first) = matched.first() else {
        return (
            Verdict::Allowed(AllowReason::NoPolicyMatches),
            vec!["no ApprovalPolicy matches this change".into()],
            None,
        );
    };
    let (group, kind) = group_kind(request.object);
    if is_workload_controller(&request.requester.username, &group, &kind) {
        return (
            Verdict::Allowed(AllowReason::WorkloadController),
            vec![format!(
                "{} is the workload controller that makes {kind}s; what it makes was gated as its workload",
                request.requester.username
            )],
            Some(first),
        );
    }
    let applicable = match not_exempt(matched, request) {
        Ok((applicable, mut exemptions)) => {
            notes.append(&mut exemptions);
            applicable
        }
        Err(exemptions) => {
            return (
                Verdict::Allowed(AllowReason::Exempt),
                exemptions,
                Some(first),
            );
        }
    };
    let first = applicable.first().copied().unwrap_or(first);
    // An UPDATE that leaves a policy's gated content unchanged is not that policy's business.
    let changed: Vec<&ApprovalPolicy> = applicable
        .iter()
        .copied()
        .filter(|p| digests.changed(&p.spec.effective_ignore_fields()))
        .collect();
    let Some(&first_changed) = changed.first() else {
        return (
            Verdict::Allowed(AllowReason::OnlyIgnoredFields),
            vec!["the change touches only ignored fields; no approval needed".into()],
            Some(first),
        );
    };
    let first = first_changed;
    match not_bypassed(&changed, request, notes, glass) {
        Ok(remaining) => judged(input, &remaining, digests),
        Err(message) => (
            Verdict::Allowed(AllowReason::BreakGlass),
            vec![message],
            Some(first),
        ),
    }
}

/// The policies that do not exempt the requester or namespace, and the exemptions of
/// those that do; `Err`: every policy exempts it.
#[allow(clippy::type_complexity)]
fn not_exempt<'p>(
    matched: &[&'p ApprovalPolicy],
    request: &ChangeRequest,
) -> Result<(Vec<&'p ApprovalPolicy>, Vec<String>), Vec<String>> {
    let mut exemptions = Vec::new();
    let applicable: Vec<&ApprovalPolicy> = matched
        .iter()
        .copied()
        .filter(|p| match exclusion(p, request) {
            Some(why) => {
                exemptions.push(format!("policy {}: {why}", policy_name(p)));
                false
            }
            None => true,
        })
        .collect();
    if applicable.is_empty() {
        Err(exemptions)
    } else {
        Ok((applicable, exemptions))
    }
}

/// The policies break-glass does not bypass (`glass` records a use); `Err`: it bypasses
/// every one, and the message says so.
fn not_bypassed<'p>(
    changed: &[&'p ApprovalPolicy],
    request: &ChangeRequest,
    notes: &mut Vec<String>,
    glass: &mut Option<BreakGlassUse>,
) -> Result<Vec<&'p ApprovalPolicy>, String> {
    let mut glass_reason = None;
    let mut bypassed = Vec::new();
    let remaining: Vec<&ApprovalPolicy> = changed
        .iter()
        .copied()
        .filter(|p| match break_glass(p, request) {
            BreakGlassOutcome::NotRequested => true,
            BreakGlassOutcome::Granted(reason) => {
                glass_reason = Some(reason);
                bypassed.push(policy_name(p).to_string());
                false
            }
            BreakGlassOutcome::Refused(why) => {
                notes.push(why);
                true
            }
        })
        .collect();
    if let Some(reason) = glass_reason {
        *glass = Some(BreakGlassUse {
            reason,
            policies: bypassed.clone(),
        });
    }
    if remaining.is_empty() {
        return Err(format!(
            "break-glass by {}: {} (bypasses {})",
            request.requester.username,
            glass
                .as_ref()
                .map(|g| g.reason.as_str())
                .unwrap_or_default(),
            bypassed.join(", ")
        ));
    }
    if !bypassed.is_empty() {
        let rest: Vec<&str> = remaining.iter().map(|p| policy_name(p)).collect();
        notes.push(format!(
            "break-glass bypasses {} but not {}",
            bypassed.join(", "),
            rest.join(", ")
        ));
    }
    Ok(remaining)
}

/// The verdict of the policies that apply: an unusable one fails closed; the deny rules
/// of every one; then the governing chain's approval.
fn judged<'p>(
    input: &DecisionInput,
    remaining: &[&'p ApprovalPolicy],
    digests: &GatedDigests,
) -> (Verdict, Vec<String>, Option<&'p ApprovalPolicy>) {
    let first = remaining.first().copied();
    let unusable: Vec<String> = remaining
        .iter()
        .flat_map(|p| {
            input
                .validations
                .policy_errors(p)
                .into_iter()
                .map(move |e| format!("policy {} is invalid: {e}; denying", policy_name(p)))
        })
        .collect();
    if !unusable.is_empty() {
        return (Verdict::Denied(DenyReason::PolicyUnusable), unusable, first);
    }
    // Deny rules of every remaining policy; no approval overrides them.
    let chain_policy = remaining
        .iter()
        .copied()
        .find(|p| p.spec.approval.is_some());
    let denials: Vec<String> = remaining
        .iter()
        .flat_map(|p| deny_reasons(p, &input.request, input.now))
        .collect();
    if !denials.is_empty() {
        return (
            Verdict::Denied(DenyReason::Rules),
            denials,
            chain_policy.or(first),
        );
    }
    let Some(policy) = chain_policy else {
        return (
            Verdict::Allowed(AllowReason::NoApprovalRequired),
            vec!["the matching policies require no approval and none of their rules fired".into()],
            first,
        );
    };
    let digest = digests.of_change(&policy.spec.effective_ignore_fields());
    let (verdict, reasons) = approval_verdict(input, policy, &digest);
    (verdict, reasons, Some(policy))
}

/// The change's digests, new and old, under each distinct ignore-field list of the matched
/// policies: computed once per decision (each clones and hashes the object), however many
/// policies share a list.
struct GatedDigests<'r> {
    request: &'r ChangeRequest<'r>,
    /// (ignore fields, digest of the new object, digest of the old object on UPDATE).
    computed: Vec<(Vec<String>, ChangeDigest, Option<ChangeDigest>)>,
}

impl<'r> GatedDigests<'r> {
    fn for_policies(request: &'r ChangeRequest<'r>, policies: &[&ApprovalPolicy]) -> Self {
        let mut digests = GatedDigests {
            request,
            computed: Vec::new(),
        };
        let lists = policies
            .iter()
            .map(|p| p.spec.effective_ignore_fields())
            .chain([ignore_fields(None)]);
        for ignore in lists {
            if !digests.computed.iter().any(|(known, ..)| *known == ignore) {
                let (new, old) = digests.compute(&ignore);
                digests.computed.push((ignore, new, old));
            }
        }
        digests
    }

    fn compute(&self, ignore: &[String]) -> (ChangeDigest, Option<ChangeDigest>) {
        (
            ChangeDigest::of(self.request.object, ignore),
            self.request
                .old_object
                .map(|old| ChangeDigest::of(old, ignore)),
        )
    }

    fn lookup(&self, ignore: &[String]) -> (ChangeDigest, Option<ChangeDigest>) {
        match self.computed.iter().find(|(known, ..)| known == ignore) {
            Some((_, new, old)) => (new.clone(), old.clone()),
            None => self.compute(ignore),
        }
    }

    /// The digest of the change under `ignore`.
    fn of_change(&self, ignore: &[String]) -> ChangeDigest {
        self.lookup(ignore).0
    }

    /// Does the change touch gated content under `ignore`? (Always, on CREATE.)
    fn changed(&self, ignore: &[String]) -> bool {
        let (new, old) = self.lookup(ignore);
        old.is_none_or(|old| old != new)
    }
}

/// The verdict once approval is required by `policy`: look up the approval for (target, digest).
fn approval_verdict(
    input: &DecisionInput,
    policy: &ApprovalPolicy,
    digest: &ChangeDigest,
) -> (Verdict, Vec<String>) {
    let request = &input.request;
    let for_target: Vec<&DeploymentApproval> = input
        .approvals
        .iter()
        .filter(|a| targets(a, request))
        .collect();
    if let Some(rollback) = rollback_verdict(request, policy, &for_target, digest) {
        return rollback;
    }
    if let Some(held) = lock_verdict(&for_target, digest) {
        return held;
    }
    let mut notes = Vec::new();
    let Some((approval, chain)) = best_approval(input, policy, &for_target, digest, &mut notes)
    else {
        return new_request(input, policy, digest, notes);
    };
    if chain.phase == ApprovalPhase::Expired {
        let when = chain
            .expires_at
            .map(|t| format!(" at {t}"))
            .unwrap_or_default();
        notes.insert(
            0,
            format!(
                "approval {} expired{when}; it stays for the record",
                approval.metadata.name.as_deref().unwrap_or_default()
            ),
        );
        return new_request(input, policy, digest, notes);
    }
    let (verdict, mut reasons) = phase_verdict(input, policy, digest, approval, chain);
    reasons.extend(notes);
    (verdict, reasons)
}

/// A rollback to the revision last confirmed Deployed passes, lock or no lock: an
/// emergency rollback must not wait behind approvals (SPEC §1.6). Only countersign writes
/// a `Deployed` status, so the stored phase can be trusted here.
fn rollback_verdict(
    request: &ChangeRequest,
    policy: &ApprovalPolicy,
    for_target: &[&DeploymentApproval],
    digest: &ChangeDigest,
) -> Option<(Verdict, Vec<String>)> {
    let allowed = policy
        .spec
        .approval
        .as_ref()
        .and_then(|chain| chain.allow_rollback)
        .unwrap_or(true);
    if request.operation != Operation::Update || !allowed {
        return None;
    }
    let last =
        last_deployed(for_target).filter(|last| last.spec.change.digest == digest.as_str())?;
    let last_name = last.metadata.name.clone().unwrap_or_default();
    Some((
        Verdict::Allowed(AllowReason::Rollback {
            approval: last_name.clone(),
        }),
        vec![format!(
            "a rollback to the revision last confirmed Deployed (approval {last_name}): policy {} lets it pass without a new approval; it is audited as a rollback",
            policy_name(policy)
        )],
    ))
}

/// The lock (SPEC §1.3) follows the stored status: a stored phase may only make the
/// verdict stricter, so a `Deploying` status holds the object whatever its reviews say.
fn lock_verdict(
    for_target: &[&DeploymentApproval],
    digest: &ChangeDigest,
) -> Option<(Verdict, Vec<String>)> {
    let holder = for_target.iter().find(|a| {
        stored_phase(a) == Some(ApprovalPhase::Deploying) && a.spec.change.digest != digest.as_str()
    })?;
    let holder_name = holder.metadata.name.clone().unwrap_or_default();
    Some((
        Verdict::Denied(DenyReason::RolloutInProgress {
            approval: holder_name.clone(),
        }),
        vec![format!(
            "approved change {holder_name} is rolling out; one change at a time per object"
        )],
    ))
}

/// The approval for this exact change that counts most (by phase, then the latest), with
/// its chain; notes say why the others do not count. `None`: none may count.
fn best_approval<'a>(
    input: &DecisionInput,
    policy: &ApprovalPolicy,
    for_target: &[&'a DeploymentApproval],
    digest: &ChangeDigest,
    notes: &mut Vec<String>,
) -> Option<(&'a DeploymentApproval, ChainState)> {
    let name = policy_name(policy);
    let mut usable = Vec::new();
    let mut spent = Vec::new();
    for &approval in for_target
        .iter()
        .filter(|a| a.spec.change.digest == digest.as_str())
    {
        let approval_name = approval.metadata.name.as_deref().unwrap_or_default();
        if approval.spec.policy.name != name {
            notes.push(format!(
                "approval {approval_name} was requested under policy {}, but policy {name} governs this change now: it does not count, and a new request is needed",
                approval.spec.policy.name
            ));
            continue;
        }
        if let Some(problem) = input.validations.snapshot_problem(approval) {
            notes.push(format!(
                "approval {approval_name} is unusable: its chain snapshot is invalid ({problem}): it does not count, and a new request is needed"
            ));
            continue;
        }
        let state = approval_state(approval, input.request.namespace, input.bindings, input.now);
        if stored_phase(approval) == Some(ApprovalPhase::Deploying)
            && state.phase != ApprovalPhase::Deploying
        {
            notes.push(format!(
                "approval {approval_name}'s status says Deploying, but its reviews make it {}",
                state.phase
            ));
        }
        match phase_rank(state.phase) {
            Some(rank) => usable.push((rank, approval, state)),
            None => spent.push((approval_name, state.phase)),
        }
    }
    let best = usable.into_iter().max_by(|(ra, a, _), (rb, b, _)| {
        ra.cmp(rb).then_with(|| {
            a.spec
                .change
                .requested_at
                .0
                .cmp(&b.spec.change.requested_at.0)
        })
    });
    if best.is_none() {
        notes.extend(spent.iter().map(|(spent_name, phase)| {
            format!("approval {spent_name} for this change is {phase} and spent; this attempt needs a fresh request")
        }));
    }
    best.map(|(_, approval, state)| (approval, state))
}

/// The verdict an approval for exactly this change gives, by where its chain stands
/// (Approved or Deploying: admitted; Rejected; Pending).
fn phase_verdict(
    input: &DecisionInput,
    policy: &ApprovalPolicy,
    digest: &ChangeDigest,
    approval: &DeploymentApproval,
    chain: ChainState,
) -> (Verdict, Vec<String>) {
    let request = &input.request;
    let approval_name = approval.metadata.name.clone().unwrap_or_default();
    let requirement = |phase: ApprovalPhase, chain: ChainState| {
        Verdict::ApprovalRequired(Box::new(ApprovalRequirement {
            policy: policy_name(policy).to_string(),
            approval_name: approval_name.clone(),
            existing: true,
            phase,
            chain,
            create: None,
            again: None,
            sync: None,
        }))
    };
    match chain.phase {
        ApprovalPhase::Approved | ApprovalPhase::Deploying => {
            let mark_deploying = chain.phase == ApprovalPhase::Approved;
            let reason = if mark_deploying {
                let until = chain
                    .expires_at
                    .map(|t| format!(", valid until {t}"))
                    .unwrap_or_default();
                format!(
                    "approval {approval_name} is Approved by {}{until}",
                    chain.approved_by.join(", ")
                )
            } else {
                format!(
                    "{approval_name} is already admitted for this exact change, and its reviews still approve it"
                )
            };
            (
                Verdict::Approved(Box::new(ApprovedChange {
                    approval: approval.clone(),
                    chain,
                    mark_deploying,
                })),
                vec![reason],
            )
        }
        ApprovalPhase::Rejected => {
            let who = match &chain.rejected_by {
                Some((user, Some(comment))) => format!("{user}: {comment:?}"),
                Some((user, None)) => user.clone(),
                None => "an approver".to_string(),
            };
            let reasons = vec![
                format!("approval {approval_name} was rejected by {who}"),
                format!(
                    "to ask again: kubectl countersign request --again -f <manifest> -n {}",
                    request.namespace
                ),
            ];
            let mut verdict = requirement(ApprovalPhase::Rejected, chain);
            // Only a dry run hands the fresh request out (`core::admission::proposal`): a
            // real attempt is not charged for making one.
            if request.dry_run
                && let Verdict::ApprovalRequired(rejected) = &mut verdict
            {
                rejected.again = Some(fresh_request(input, policy, digest));
            }
            (verdict, reasons)
        }
        _ => {
            let mut reasons = vec![format!(
                "approval {approval_name} is pending: {}",
                describe_progress(&chain)
            )];
            reasons.extend(stuck_reason(&chain));
            reasons.extend(chain.ignored.iter().map(|i| format!("not counted: {i}")));
            // Said on every attempt, not only the first: a pipeline whose first attempt
            // got no answer (cut off after the request was written) learns it here.
            reasons.push(approve_with(&approval_name, request.namespace));
            (requirement(ApprovalPhase::Pending, chain), reasons)
        }
    }
}

/// The command that approves request `name` in `namespace`.
fn approve_with(name: &str, namespace: &str) -> String {
    format!("approve with: kubectl countersign approve {name} -n {namespace}")
}

/// What to tell people about a request that can no longer be approved as it stands.
fn stuck_reason(chain: &ChainState) -> Option<String> {
    chain.stuck.as_ref().map(|stuck| {
        format!(
            "{stuck}; an approver can reject this request, and the change can then be requested again"
        )
    })
}

/// No usable approval exists: the change needs a new request. `notes` say why the
/// approvals that exist do not count.
fn new_request(
    input: &DecisionInput,
    policy: &ApprovalPolicy,
    digest: &ChangeDigest,
    notes: Vec<String>,
) -> (Verdict, Vec<String>) {
    let request = &input.request;
    let name = policy_name(policy);
    let settings = policy.spec.approval.clone().unwrap_or_default();
    let fresh = fresh_request(input, policy, digest);
    let approval_name = fresh.name;
    let chain = ApprovalChain {
        settings: &settings,
        requester: request.requester,
        namespace: request.namespace,
        bindings: input.bindings,
        requested_at: input.now,
    }
    .evaluate(&[], input.now);
    // A deploy token exists to apply the one change it was issued for: its other attempts
    // are denied and open no request in its name.
    let by_token = is_deploy_token(&request.requester.username);
    let create = (!by_token).then_some(fresh.spec);
    let sync = sync_of(request.dry_run, request.requester, request.object, policy);
    let how = if by_token {
        "a deploy token opens no requests: it may apply only the change it was issued for"
            .to_string()
    } else if sync.is_some() {
        "a GitOps sync's dry run: opened with the rest of its sync when the controller reports the denial".to_string()
    } else if request.dry_run {
        "dry run, none created".to_string()
    } else {
        format!("requested as {}/{approval_name}", request.namespace)
    };
    let mut reasons = vec![if notes.is_empty() {
        format!(
            "approval required by policy {name}: no DeploymentApproval for this change yet ({how})"
        )
    } else {
        format!(
            "approval required by policy {name}: a fresh request for this change is needed ({how})"
        )
    }];
    reasons.extend(notes);
    reasons.push(describe_progress(&chain));
    reasons.extend(stuck_reason(&chain));
    reasons.push(approve_with(&approval_name, request.namespace));
    (
        Verdict::ApprovalRequired(Box::new(ApprovalRequirement {
            policy: name.to_string(),
            approval_name,
            existing: false,
            phase: ApprovalPhase::Pending,
            chain,
            create,
            again: None,
            sync,
        })),
        reasons,
    )
}

/// The request a change would open under `policy`: a name no approval has yet, and the
/// spec (target, change, the policy's chain as it stands, no reviews).
fn fresh_request(
    input: &DecisionInput,
    policy: &ApprovalPolicy,
    digest: &ChangeDigest,
) -> FreshRequest {
    let request = &input.request;
    let name = policy_name(policy);
    let settings = policy.spec.approval.clone().unwrap_or_default();
    let approval_name = fresh_approval_name(
        object_name(request.object),
        digest,
        request.namespace,
        input.approvals,
    );
    let spec = DeploymentApprovalSpec {
        target: ApprovalTarget {
            api_version: request
                .object
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            kind: group_kind(request.object).1,
            name: object_name(request.object).to_string(),
            // On CREATE the API server has given the object a uid that lasts only if it is
            // admitted; a denied create's next attempt gets another. Only an existing
            // object's uid identifies the target.
            uid: match request.operation {
                Operation::Update => object_uid(request.object).map(str::to_string),
                Operation::Create => None,
            },
        },
        change: ChangeRecord {
            digest: digest.to_string(),
            summary: summarize(
                request.old_object,
                request.object,
                &policy.spec.effective_ignore_fields(),
            ),
            // Sealed by the shell that hands the request out or opens it (`core::approval::seal`).
            summary_seal: None,
            requester: request.requester.clone(),
            operation: request.operation,
            requested_at: Time(input.now),
            // A GitOps controller's apply records where it came from, so a decision on it
            // resumes that sync.
            origin: origin_of(request.dry_run, request.requester, request.object, policy),
        },
        policy: PolicySnapshot {
            name: name.to_string(),
            chain: settings.clone(),
            ignore_fields: Some(policy.spec.effective_ignore_fields()),
            grant: policy.spec.grant.clone(),
        },
        reviews: Vec::new(),
        change_set: None,
    };
    FreshRequest {
        name: approval_name,
        spec,
    }
}

/// The approval a denial rests on, when a fresher copy could change the answer: the
/// request (approved a moment ago? opened a moment ago by another replica, and maybe
/// approved since?) or the lock holder (released a moment ago?). The webhook reads it live
/// and decides again.
pub fn stale_suspect(decision: &Decision) -> Option<String> {
    match &decision.verdict {
        Verdict::ApprovalRequired(requirement) => Some(requirement.approval_name.clone()),
        Verdict::Denied(DenyReason::RolloutInProgress { approval }) => Some(approval.clone()),
        _ => None,
    }
}

/// Where an approval stands at `now`. The chain is always recomputed from the reviews; the
/// stored status may only make it stricter: `Deployed`, `Failed`, `Rejected` and `Expired`
/// stand, and `Deploying` stands only while the recomputed chain is `Approved` (a status
/// claiming more than the reviews give never admits).
pub fn approval_state(
    approval: &DeploymentApproval,
    namespace: &str,
    bindings: &RoleBindingSnapshot,
    now: Timestamp,
) -> ChainState {
    let mut state =
        approval_chain(approval, namespace, bindings).evaluate(&approval.spec.reviews, now);
    let stricter = match stored_phase(approval) {
        Some(stored) if stored.is_terminal() => Some(stored),
        Some(ApprovalPhase::Deploying) if state.phase == ApprovalPhase::Approved => {
            Some(ApprovalPhase::Deploying)
        }
        _ => None,
    };
    if let Some(phase) = stricter {
        if phase.is_terminal() && phase != state.phase {
            // The reviews alone would not have ended it: their deadline is not the record's.
            state.expires_at = None;
        }
        state.phase = phase;
        state.current_level = None;
        state.stuck = None;
    }
    state
}

/// The chain an approval is judged by: its snapshot, requester and start, in its own
/// namespace (`namespace` when the object carries none).
pub fn approval_chain<'a>(
    approval: &'a DeploymentApproval,
    namespace: &'a str,
    bindings: &'a RoleBindingSnapshot,
) -> ApprovalChain<'a> {
    let spec = &approval.spec;
    ApprovalChain {
        settings: &spec.policy.chain,
        requester: &spec.change.requester,
        namespace: approval.metadata.namespace.as_deref().unwrap_or(namespace),
        bindings,
        requested_at: spec.change.requested_at.0,
    }
}

/// The phase an approval's status records, if any.
fn stored_phase(approval: &DeploymentApproval) -> Option<ApprovalPhase> {
    approval.recorded_phase()
}

/// Why an approval's chain snapshot makes it unusable: one a policy could not have.
pub fn snapshot_problem(approval: &DeploymentApproval) -> Option<String> {
    let validation = validate_chain_snapshot(&approval.spec.policy.chain);
    let first = validation.errors.first()?;
    Some(match validation.errors.len() {
        1 => first.to_string(),
        n => format!("{first}, and {} more", n - 1),
    })
}

/// Usable phases, best first; `Deployed` and `Failed` approvals are spent.
fn phase_rank(phase: ApprovalPhase) -> Option<u8> {
    match phase {
        ApprovalPhase::Deploying => Some(5),
        ApprovalPhase::Approved => Some(4),
        ApprovalPhase::Pending => Some(3),
        ApprovalPhase::Rejected => Some(2),
        ApprovalPhase::Expired => Some(1),
        ApprovalPhase::Deployed | ApprovalPhase::Failed => None,
    }
}

/// Is this approval about the request's target object?
fn targets(approval: &DeploymentApproval, request: &ChangeRequest) -> bool {
    let target = &approval.spec.target;
    let same_namespace = approval
        .metadata
        .namespace
        .as_deref()
        .is_none_or(|ns| ns == request.namespace);
    let (group, kind) = group_kind(request.object);
    let target_group = api_group(&target.api_version);
    let same_uid = match (&target.uid, object_uid(request.object)) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    same_namespace
        && target.kind == kind
        && target_group == group
        && target.name == object_name(request.object)
        && same_uid
}

/// The first name of the DeploymentApproval for a change: `<target>-<8 hex>`.
pub fn approval_name(target_name: &str, digest: &ChangeDigest) -> String {
    let base: String = target_name.chars().take(200).collect();
    format!("{base}-{}", digest.short_hex(8))
}

/// The name a new request for (target, digest) gets: `<target>-<8 hex>`, or, when an
/// earlier request of that change holds it (kept for the record after it expired, was
/// deployed or failed), `<target>-<8 hex>-<n>` with the smallest free `n` from 2.
/// A function of the approvals in the namespace, so racing replicas converge on one name.
pub fn fresh_approval_name(
    target_name: &str,
    digest: &ChangeDigest,
    namespace: &str,
    approvals: &[DeploymentApproval],
) -> String {
    let base = approval_name(target_name, digest);
    let taken = |candidate: &str| {
        approvals.iter().any(|a| {
            a.metadata.name.as_deref() == Some(candidate)
                && a.metadata
                    .namespace
                    .as_deref()
                    .is_none_or(|ns| ns == namespace)
        })
    };
    if !taken(&base) {
        return base;
    }
    (2u32..)
        .map(|n| format!("{base}-{n}"))
        .find(|candidate| !taken(candidate))
        .unwrap_or(base)
}

/// Is `name` one of the names [`fresh_approval_name`] gives requests for (target, digest)?
pub fn is_request_name(name: &str, target_name: &str, digest: &ChangeDigest) -> bool {
    let base = approval_name(target_name, digest);
    match name.strip_prefix(base.as_str()) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('-')
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 2 && rest == format!("-{n}")),
        None => false,
    }
}

fn object_name(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn object_uid(object: &Value) -> Option<&str> {
    object.pointer("/metadata/uid").and_then(Value::as_str)
}

fn ignore_fields(policy: Option<&ApprovalPolicy>) -> Vec<String> {
    match policy {
        Some(p) => p.spec.effective_ignore_fields(),
        None => DEFAULT_IGNORE_FIELDS
            .iter()
            .map(|f| f.to_string())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Operation, UserInfo};
    use serde_json::json;
    use std::collections::BTreeMap;

    /// Monday 2025-06-02 12:00 in Berlin.
    const NOW: &str = "2025-06-02T10:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    fn deployment(image: &str, replicas: u32) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"replicas": replicas,
                        "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    fn policy(value: Value) -> ApprovalPolicy {
        serde_json::from_value(value).unwrap()
    }

    fn two_level(name: &str, priority: i32) -> ApprovalPolicy {
        policy(json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
            "metadata": {"name": name},
            "spec": {
                "priority": priority,
                "match": {"regions": ["eu-west-1"]},
                "exclude": {"users": ["autoscaler-bot"]},
                "approval": {
                    "approvalTTL": "24h",
                    "levels": [
                        {"name": "team-leads", "approvers": [{"user": "alice"}, {"user": "anna"}]},
                        {"name": "sre", "minApprovals": 2,
                         "approvers": [{"user": "bob", "required": true}, {"user": "sam"}, {"user": "sue"}]}
                    ]
                },
                "breakGlass": {"groups": ["oncall"]}
            }
        }))
    }

    fn single_level(name: &str, priority: i32, approver: &str) -> ApprovalPolicy {
        policy(json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
            "metadata": {"name": name},
            "spec": {"priority": priority,
                     "approval": {"levels": [{"name": "only", "approvers": [{"user": approver}]}]}}
        }))
    }

    fn weekend_freeze() -> ApprovalPolicy {
        policy(json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
            "metadata": {"name": "weekend-freeze"},
            "spec": {"windows": [{"name": "weekend", "effect": "Deny", "timeZone": "Europe/Berlin",
                                  "weekly": {"days": ["Saturday", "Sunday"], "start": "00:00", "end": "24:00"}}]}
        }))
    }

    fn registry_check() -> ApprovalPolicy {
        policy(json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
            "metadata": {"name": "registries"},
            "spec": {"checks": {"allowedRegistries": ["registry.example.com"]}}
        }))
    }

    fn approval(image: &str, reviews: &[(&str, &str)], phase: Option<&str>) -> DeploymentApproval {
        let object = deployment(image, 3);
        let settings = two_level("prod", 10).spec.approval.unwrap();
        let digest = ChangeDigest::of(&object, &["/spec/replicas".to_string()]);
        let mut value = json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "DeploymentApproval",
            "metadata": {"name": approval_name("web", &digest), "namespace": "shop"},
            "spec": {
                "target": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "change": {"digest": digest.to_string(), "summary": {"text": "t"},
                           "requester": {"username": "dev", "groups": ["developers"]},
                           "operation": "UPDATE", "requestedAt": "2025-06-02T08:00:00Z"},
                "policy": {"name": "prod", "chain": settings},
                "reviews": reviews.iter().enumerate().map(|(i, (user, decision))| json!({
                    "user": user, "decision": decision, "comment": "c",
                    "time": format!("2025-06-02T08:0{}:00Z", i + 1)})).collect::<Vec<_>>()
            }
        });
        if let Some(phase) = phase {
            value["status"] = json!({"phase": phase});
        }
        serde_json::from_value(value).unwrap()
    }

    fn tweak(
        mut approval: DeploymentApproval,
        change: impl FnOnce(&mut DeploymentApproval),
    ) -> DeploymentApproval {
        change(&mut approval);
        approval
    }

    const LEVEL_ONE: &[(&str, &str)] = &[("alice", "Approve")];
    const ALL: &[(&str, &str)] = &[("alice", "Approve"), ("bob", "Approve"), ("sue", "Approve")];

    struct Case {
        name: &'static str,
        policies: Vec<ApprovalPolicy>,
        approvals: Vec<DeploymentApproval>,
        old: Option<Value>,
        new: Value,
        user: &'static str,
        groups: &'static [&'static str],
        now: &'static str,
        dry_run: bool,
        expect: &'static str,
        reason: &'static str,
    }

    fn case(name: &'static str) -> Case {
        Case {
            name,
            policies: vec![two_level("prod", 10)],
            approvals: vec![],
            old: Some(deployment("nginx:1.25", 3)),
            new: deployment("nginx:1.27", 3),
            user: "dev",
            groups: &["developers"],
            now: NOW,
            dry_run: true,
            expect: "",
            reason: "",
        }
    }

    fn label(verdict: &Verdict) -> String {
        match verdict {
            Verdict::Allowed(reason) => format!("Allowed:{reason:?}")
                .split([' ', '{'])
                .next()
                .unwrap_or_default()
                .to_string(),
            Verdict::Denied(DenyReason::Rules) => "Denied:Rules".into(),
            Verdict::Denied(DenyReason::PolicyUnusable) => "Denied:PolicyUnusable".into(),
            Verdict::Denied(DenyReason::RolloutInProgress { .. }) => "Denied:Rollout".into(),
            Verdict::ApprovalRequired(r) => format!(
                "Required:{}:{}",
                r.phase,
                if r.existing { "existing" } else { "new" }
            ),
            Verdict::Approved(a) => format!("Approved:mark={}", a.mark_deploying),
        }
    }

    fn run(case: &Case) -> Decision {
        let labels: BTreeMap<String, String> = [(
            "topology.kubernetes.io/region".to_string(),
            "eu-west-1".to_string(),
        )]
        .into();
        let requester = UserInfo::new(case.user, case.groups);
        let bindings = RoleBindingSnapshot::default();
        decide(&DecisionInput {
            request: ChangeRequest {
                operation: if case.old.is_some() {
                    Operation::Update
                } else {
                    Operation::Create
                },
                object: &case.new,
                old_object: case.old.as_ref(),
                namespace: "shop",
                namespace_labels: &labels,
                requester: &requester,
                cluster_region: None,
                dry_run: case.dry_run,
            },
            policies: &case.policies,
            approvals: &case.approvals,
            bindings: &bindings,
            now: case.now.parse().unwrap(),
            validations: &ValidateOnTheSpot,
        })
    }

    /// A policy naming Flux's and Argo CD's controllers: Flux's dry runs of a change that
    /// needs a new request join the sync's round, Argo CD's real applies record their
    /// Application; nobody else's do, whatever labels they copy.
    #[test]
    fn gitops_controllers_dry_runs_join_a_round_and_their_applies_name_their_application() {
        const FLUX: &str = "system:serviceaccount:flux-system:kustomize-controller";
        const ARGO: &str = "system:serviceaccount:argocd:argocd-application-controller";
        let mut gitops = two_level("prod", 10);
        gitops.spec.gitops = serde_json::from_value(json!({"controllers": [
            {"kind": "Flux", "serviceAccount": {"namespace": "flux-system", "name": "kustomize-controller"}},
            {"kind": "ArgoCD", "serviceAccount": {"namespace": "argocd", "name": "argocd-application-controller"}},
        ]}))
        .expect("gitops settings");
        let mut tracked = deployment("nginx:1.27", 3);
        tracked["metadata"]["labels"] = json!({
            "kustomize.toolkit.fluxcd.io/name": "apps",
            "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
        });
        tracked["metadata"]["annotations"] =
            json!({"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:shop/web"});
        // (what, requester, dry run, existing approvals, joins a round, records an Application)
        let cases = [
            ("Flux's dry run", FLUX, true, vec![], true, false),
            ("Flux's real apply", FLUX, false, vec![], false, false),
            (
                "a person's dry run of the same object",
                "dev",
                true,
                vec![],
                false,
                false,
            ),
            ("a person's real apply", "dev", false, vec![], false, false),
            ("Argo CD's real apply", ARGO, false, vec![], false, true),
            (
                "Argo CD's dry run: handed out, so no origin",
                ARGO,
                true,
                vec![],
                false,
                false,
            ),
            (
                "Flux's dry run of a change already requested",
                FLUX,
                true,
                vec![approval("nginx:1.27", LEVEL_ONE, None)],
                false,
                false,
            ),
        ];
        for (what, user, dry_run, approvals, joins, origin) in cases {
            let decision = run(&Case {
                policies: vec![gitops.clone()],
                approvals,
                new: tracked.clone(),
                user,
                dry_run,
                ..case("gitops")
            });
            let Verdict::ApprovalRequired(requirement) = &decision.verdict else {
                panic!("{what}: {:?}", decision.verdict);
            };
            assert_eq!(requirement.sync.is_some(), joins, "{what}");
            let recorded = requirement
                .create
                .as_ref()
                .and_then(|spec| spec.change.origin.as_ref());
            assert_eq!(recorded.is_some(), origin, "{what}: {recorded:?}");
            if let Some(origin) = recorded {
                assert_eq!(
                    (
                        origin.kind.as_str(),
                        origin.namespace.as_str(),
                        origin.name.as_str()
                    ),
                    ("Application", "argocd", "shop")
                );
            }
            let first = &decision.reasons[0];
            assert_eq!(
                first.contains("GitOps sync's dry run"),
                joins,
                "{what}: {first}"
            );
        }
    }

    /// A deploy token exists for one approved change: any other attempt it makes is denied
    /// and opens no request in its name.
    #[test]
    fn a_deploy_tokens_other_changes_open_no_request() {
        let denied = run(&Case {
            user: "system:serviceaccount:shop:countersign-deploy-web-1a2b",
            groups: &["system:serviceaccounts"],
            dry_run: false,
            ..case("a deploy token tries another change")
        });
        let Verdict::ApprovalRequired(req) = &denied.verdict else {
            panic!("{:?}", denied.verdict);
        };
        assert!(req.create.is_none(), "no request in the token's name");
        assert!(
            denied.reasons[0].contains("a deploy token opens no requests"),
            "{:?}",
            denied.reasons
        );
        let by_person = run(&Case {
            dry_run: false,
            ..case("a person tries it")
        });
        let Verdict::ApprovalRequired(req) = &by_person.verdict else {
            panic!("{:?}", by_person.verdict);
        };
        assert!(req.create.is_some());
    }

    /// A dry run hands the client the request it would open (`countersign request`); a
    /// rejected change offers a fresh request under the next free name, never the
    /// rejected one; a pending request offers nothing to open.
    #[test]
    fn a_dry_run_proposes_the_request_and_a_rejection_offers_a_fresh_one() {
        use crate::core::admission::proposal::proposal;
        let new = run(&case("a new change, dry run"));
        let Verdict::ApprovalRequired(req) = &new.verdict else {
            panic!("{:?}", new.verdict);
        };
        let offered = proposal(req);
        let open = offered.open.expect("a request to open");
        assert_eq!(open.name, approval_name("web", &new.digest));
        assert!(!open.again && !offered.existing);
        assert_eq!(open.spec.change.digest, new.digest.as_str());
        assert_eq!(open.spec.change.requester.username, "dev");

        let rejected = run(&Case {
            approvals: vec![approval("nginx:1.27", ALL, Some("Rejected"))],
            ..case("a rejected change")
        });
        let Verdict::ApprovalRequired(req) = &rejected.verdict else {
            panic!("{:?}", rejected.verdict);
        };
        assert!(
            req.create.is_none(),
            "applying again does not reopen a rejection"
        );
        let offered = proposal(req);
        assert!(offered.existing && offered.phase == ApprovalPhase::Rejected);
        let open = offered.open.expect("a fresh request");
        assert!(open.again);
        assert_eq!(
            open.name,
            format!("{}-2", approval_name("web", &rejected.digest))
        );
        assert!(open.spec.reviews.is_empty());

        let pending = run(&Case {
            approvals: vec![approval("nginx:1.27", LEVEL_ONE, None)],
            ..case("a pending change")
        });
        let Verdict::ApprovalRequired(req) = &pending.verdict else {
            panic!("{:?}", pending.verdict);
        };
        let offered = proposal(req);
        assert!(offered.existing && offered.open.is_none());
    }

    #[test]
    fn a_denied_create_is_found_again_though_the_retry_gets_another_uid() {
        let with_uid = |uid: &str| {
            let mut object = deployment("nginx:1.27", 3);
            object["metadata"]["uid"] = json!(uid);
            object
        };
        let mut first = case("first create");
        first.old = None;
        first.new = with_uid("uid-of-the-denied-attempt");
        first.dry_run = false;
        let decision = run(&first);
        let Verdict::ApprovalRequired(requirement) = &decision.verdict else {
            panic!("approval required, got {:?}", decision.verdict);
        };
        let spec = requirement.create.clone().expect("a request to open");
        assert_eq!(spec.target.uid, None, "a create's uid dies with the denial");
        let mut opened = DeploymentApproval::new(&requirement.approval_name, spec);
        opened.metadata.namespace = Some("shop".into());

        let mut retry = case("retried create");
        retry.old = None;
        retry.new = with_uid("uid-of-the-retry");
        retry.approvals = vec![opened];
        let Verdict::ApprovalRequired(requirement) = &run(&retry).verdict else {
            panic!("approval required");
        };
        assert!(
            requirement.existing,
            "the retry finds the request it opened"
        );
    }

    #[test]
    fn decision_table() {
        let mut broken = single_level("broken", 0, "alice");
        broken.spec.approval.as_mut().unwrap().levels[0].min_approvals = Some(3);
        let mut break_glass = deployment("nginx:1.27", 3);
        break_glass["metadata"]["annotations"] =
            json!({"countersign.dev/break-glass": "INC-42 checkout down"});
        let pod = |image: &str| {
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-7f9c-abcde", "namespace": "shop",
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": "web-7f9c", "uid": "u", "controller": true}]},
                "spec": {"containers": [{"name": "web", "image": image}]}})
        };
        let replica_set = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-7f9c", "namespace": "shop"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "evil:1"}]}}}});
        let mut job = deployment("nginx:1.27", 1);
        job["apiVersion"] = json!("batch/v1");
        job["kind"] = json!("Job");
        let deployments_only = policy(json!({"metadata": {"name": "prod"},
            "spec": {"match": {"kinds": [{"group": "apps", "kind": "Deployment"}]},
                "approval": {"levels": [{"name": "l", "approvers": [{"user": "alice"}]}]}}}));
        let debugged = |mut pod: Value| {
            pod["spec"]["ephemeralContainers"] =
                json!([{"name": "debugger", "image": "busybox:1.36"}]);
            pod
        };
        let mut no_debugging = two_level("prod", 10);
        no_debugging.spec.checks = Some(crate::api::PolicyChecks {
            forbid_ephemeral_containers: true,
            ..Default::default()
        });
        let mut no_rollback = two_level("prod", 10);
        if let Some(chain) = no_rollback.spec.approval.as_mut() {
            chain.allow_rollback = Some(false);
        }
        let deployed_at = |mut approval: DeploymentApproval, at: &str| {
            if let Some(status) = approval.status.as_mut() {
                status.rollout = Some(crate::api::RolloutStatus {
                    finished_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        at.parse().unwrap(),
                    )),
                    ..Default::default()
                });
            }
            approval
        };
        let config_maps_only = policy(json!({"metadata": {"name": "cm"},
            "spec": {"match": {"kinds": [{"group": "", "kind": "ConfigMap"}]},
                "approval": {"levels": [{"name": "l", "approvers": [{"user": "alice"}]}]}}}));
        let cases = vec![
            Case {
                old: None,
                new: pod("evil:1"),
                user: "system:serviceaccount:kube-system:replicaset-controller",
                expect: "Allowed:WorkloadController",
                reason: "is the workload controller that makes Pods",
                ..case("a Pod made by the ReplicaSet controller")
            },
            Case {
                old: None,
                new: pod("evil:1"),
                expect: "Required:Pending:new",
                reason: "approval required by policy prod",
                ..case("a bare Pod made by a person, with a forged owner")
            },
            Case {
                old: None,
                new: pod("evil:1"),
                policies: vec![deployments_only.clone()],
                expect: "Required:Pending:new",
                reason: "approval required by policy prod",
                ..case("a bare Pod under a policy that names Deployments only")
            },
            Case {
                old: None,
                new: pod("evil:1"),
                policies: vec![config_maps_only],
                expect: "Allowed:NoPolicyMatches",
                reason: "no ApprovalPolicy matches",
                ..case("a Pod under a policy for ConfigMaps only")
            },
            Case {
                old: None,
                new: pod("evil:1"),
                user: "system:serviceaccount:kube-system:deployment-controller",
                expect: "Required:Pending:new",
                reason: "approval required by policy prod",
                ..case("a Pod made by the wrong controller")
            },
            Case {
                old: None,
                new: replica_set.clone(),
                expect: "Required:Pending:new",
                reason: "approval required by policy prod",
                ..case("a hand-made ReplicaSet")
            },
            Case {
                old: None,
                new: replica_set,
                user: "system:serviceaccount:kube-system:deployment-controller",
                expect: "Allowed:WorkloadController",
                reason: "makes ReplicaSets",
                ..case("a ReplicaSet made by the Deployment controller")
            },
            Case {
                old: None,
                new: job.clone(),
                user: "system:serviceaccount:kube-system:cronjob-controller",
                expect: "Allowed:WorkloadController",
                reason: "makes Jobs",
                ..case("a Job made by the CronJob controller")
            },
            Case {
                old: None,
                new: job,
                expect: "Required:Pending:new",
                reason: "approval required by policy prod",
                ..case("kubectl create job --from=cronjob: a Job made by a person")
            },
            Case {
                old: Some(pod("nginx:1.27")),
                new: {
                    let mut labelled = pod("nginx:1.27");
                    labelled["metadata"]["labels"] = json!({"debug": "true"});
                    labelled
                },
                expect: "Allowed:OnlyIgnoredFields",
                reason: "",
                ..case("a Pod's labels changed by a person")
            },
            Case {
                old: Some(pod("nginx:1.27")),
                new: pod("evil:1"),
                expect: "Required:Pending:new",
                reason: "approval required by policy prod",
                ..case("kubectl set image on a Pod")
            },
            Case {
                old: Some(pod("nginx:1.27")),
                new: debugged(pod("nginx:1.27")),
                expect: "Required:Pending:new",
                reason: "approval required by policy prod",
                ..case("kubectl debug: an ephemeral container is a change")
            },
            Case {
                old: Some(pod("nginx:1.27")),
                new: debugged(pod("nginx:1.27")),
                policies: vec![no_debugging.clone()],
                expect: "Denied:Rules",
                reason: "ephemeral containers (kubectl debug) are forbidden here; image busybox:1.36",
                ..case("kubectl debug where a policy forbids it")
            },
            Case {
                old: Some(debugged(pod("nginx:1.27"))),
                new: {
                    let mut labelled = debugged(pod("nginx:1.27"));
                    labelled["metadata"]["labels"] = json!({"debugged": "yes"});
                    labelled
                },
                policies: vec![no_debugging],
                expect: "Allowed:OnlyIgnoredFields",
                reason: "",
                ..case("a Pod debugged before the policy is still labelled")
            },
            Case {
                policies: vec![],
                expect: "Allowed:NoPolicyMatches",
                reason: "no ApprovalPolicy matches",
                ..case("no policy")
            },
            Case {
                policies: vec![policy(json!({"metadata": {"name": "us"},
                    "spec": {"match": {"regions": ["us-east-1"]}, "approval": {"levels": [
                        {"name": "l", "approvers": [{"user": "x"}]}]}}}))],
                expect: "Allowed:NoPolicyMatches",
                reason: "no ApprovalPolicy matches",
                ..case("other region")
            },
            Case {
                user: "autoscaler-bot",
                expect: "Allowed:Exempt",
                reason: "policy prod: user autoscaler-bot is exempt",
                ..case("exempt user")
            },
            Case {
                new: deployment("nginx:1.25", 9),
                expect: "Allowed:OnlyIgnoredFields",
                reason: "only ignored fields",
                ..case("replicas only")
            },
            Case {
                policies: vec![registry_check()],
                new: deployment("registry.example.com/web:2", 3),
                expect: "Allowed:NoApprovalRequired",
                reason: "require no approval",
                ..case("checks pass, no chain")
            },
            Case {
                policies: vec![two_level("prod", 10), registry_check()],
                approvals: vec![approval("nginx:1.27", ALL, None)],
                expect: "Denied:Rules",
                reason: "policy registries: containers web: image nginx:1.27 is not from an allowed registry",
                ..case("failed check beats an approval")
            },
            Case {
                policies: vec![two_level("prod", 10), weekend_freeze()],
                approvals: vec![approval("nginx:1.27", ALL, None)],
                now: "2025-06-07T10:00:00Z",
                expect: "Denied:Rules",
                reason: "policy weekend-freeze: change freeze \"weekend\"",
                ..case("freeze beats an approval")
            },
            Case {
                policies: vec![two_level("prod", 10), weekend_freeze()],
                approvals: vec![approval("nginx:1.27", ALL, None)],
                expect: "Approved:mark=true",
                reason: "is Approved by alice, bob, sue, valid until 2025-06-03T08:03:00Z",
                ..case("freeze not in effect on Monday")
            },
            Case {
                policies: vec![two_level("prod", 10), broken],
                expect: "Denied:PolicyUnusable",
                reason: "policy broken is invalid: spec.approval.levels[0].minApprovals",
                ..case("invalid policy fails closed")
            },
            Case {
                expect: "Required:Pending:new",
                reason: "approval required by policy prod: no DeploymentApproval for this change yet (dry run, none created)",
                ..case("no approval yet, dry run")
            },
            Case {
                dry_run: false,
                expect: "Required:Pending:new",
                reason: "for this change yet (requested as shop/web-",
                ..case("no approval yet, real request")
            },
            Case {
                old: None,
                expect: "Required:Pending:new",
                reason: "level 1/2 team-leads: 0 of 1 approvals",
                ..case("create")
            },
            Case {
                approvals: vec![approval("nginx:1.27", LEVEL_ONE, None)],
                expect: "Required:Pending:existing",
                reason: "is pending: level 2/2 sre: 0 of 2 approvals, waiting for bob (required)",
                ..case("level one approved")
            },
            Case {
                approvals: vec![approval("nginx:1.27", LEVEL_ONE, None)],
                expect: "Required:Pending:existing",
                reason: "approve with: kubectl countersign approve ",
                ..case("a later attempt at a pending change says how to approve it too")
            },
            Case {
                approvals: vec![approval("nginx:1.26", ALL, None)],
                expect: "Required:Pending:new",
                reason: "approval required",
                ..case("approval for another image does not count")
            },
            Case {
                approvals: vec![approval("nginx:1.27", ALL, Some("Pending"))],
                expect: "Approved:mark=true",
                reason: "is Approved by",
                ..case("lagging status: reviews decide")
            },
            Case {
                approvals: vec![approval("nginx:1.27", LEVEL_ONE, Some("Approved"))],
                expect: "Required:Pending:existing",
                reason: "pending",
                ..case("status claiming Approved without reviews does not admit")
            },
            Case {
                approvals: vec![approval(
                    "nginx:1.27",
                    &[("alice", "Approve"), ("sam", "Reject")],
                    None,
                )],
                expect: "Required:Rejected:existing",
                reason: "was rejected by sam: \"c\"",
                ..case("rejected")
            },
            Case {
                approvals: vec![approval("nginx:1.27", ALL, None)],
                now: "2025-06-03T08:03:00Z",
                expect: "Required:Pending:new",
                reason: "expired at 2025-06-03T08:03:00Z; it stays for the record",
                ..case("approval TTL passed: the attempt opens a fresh request")
            },
            Case {
                approvals: vec![approval(
                    "nginx:1.27",
                    &[("sam", "Reject")],
                    Some("Deploying"),
                )],
                expect: "Required:Rejected:existing",
                reason: "status says Deploying, but its reviews make it Rejected",
                ..case("a Deploying status with only a rejection does not admit")
            },
            Case {
                approvals: vec![approval("nginx:1.27", LEVEL_ONE, Some("Deploying"))],
                expect: "Required:Pending:existing",
                reason: "status says Deploying, but its reviews make it Pending",
                ..case("a Deploying status with a pending chain does not admit")
            },
            Case {
                approvals: vec![approval(
                    "nginx:1.27",
                    &[
                        ("alice", "Approve"),
                        ("bob", "Approve"),
                        ("sue", "Approve"),
                        ("sam", "Reject"),
                    ],
                    Some("Deploying"),
                )],
                expect: "Required:Rejected:existing",
                reason: "was rejected by sam",
                ..case("a rejection after approval ends a Deploying request too")
            },
            Case {
                approvals: vec![approval("nginx:1.27", ALL, Some("Deploying"))],
                now: "2025-06-03T08:03:00Z",
                expect: "Required:Pending:new",
                reason: "status says Deploying, but its reviews make it Expired",
                ..case("a retried apply after the approval expired needs a fresh request")
            },
            Case {
                approvals: vec![approval("nginx:1.26", &[], Some("Deploying"))],
                expect: "Denied:Rollout",
                reason: "is rolling out",
                ..case("a Deploying status holds the lock even without reviews (stricter)")
            },
            Case {
                approvals: vec![tweak(approval("nginx:1.27", ALL, None), |a| {
                    a.metadata.namespace = Some("sandbox".into())
                })],
                expect: "Required:Pending:new",
                reason: "no DeploymentApproval for this change yet",
                ..case("an approval in another namespace is not for this object")
            },
            Case {
                approvals: vec![tweak(approval("nginx:1.27", ALL, None), |a| {
                    a.spec.target.kind = "StatefulSet".into()
                })],
                expect: "Required:Pending:new",
                reason: "no DeploymentApproval for this change yet",
                ..case("an approval for another kind of the same name does not count")
            },
            Case {
                approvals: vec![tweak(approval("nginx:1.27", ALL, None), |a| {
                    a.spec.policy.name = "staging".into()
                })],
                expect: "Required:Pending:new",
                reason: "was requested under policy staging, but policy prod governs this change now: it does not count, and a new request is needed",
                ..case("an approval made under another policy does not count")
            },
            Case {
                policies: vec![two_level("prod", 10), single_level("stricter", 20, "cto")],
                approvals: vec![approval("nginx:1.27", ALL, None)],
                expect: "Required:Pending:new",
                reason: "policy stricter governs this change now",
                ..case("a stricter policy added after the approval")
            },
            Case {
                approvals: vec![tweak(approval("nginx:1.27", ALL, None), |a| {
                    a.spec.policy.chain.request_ttl = Some("0s".into())
                })],
                expect: "Required:Pending:new",
                reason: "is unusable: its chain snapshot is invalid (spec.policy.chain.requestTTL: \"0s\" must be a positive duration)",
                ..case("a snapshot with a TTL that never expires is unusable")
            },
            Case {
                approvals: vec![tweak(approval("nginx:1.27", ALL, None), |a| {
                    a.spec.policy.chain.approval_ttl = Some("soon".into())
                })],
                expect: "Required:Pending:new",
                reason: "spec.policy.chain.approvalTTL",
                ..case("an unparsable approvalTTL makes the approval unusable")
            },
            Case {
                approvals: vec![tweak(approval("nginx:1.27", ALL, None), |a| {
                    a.spec.policy.chain.levels[1].min_approvals = Some(9)
                })],
                expect: "Required:Pending:new",
                reason: "spec.policy.chain.levels[1].minApprovals",
                ..case("an infeasible snapshot is unusable")
            },
            Case {
                approvals: vec![approval("nginx:1.26", ALL, Some("Deploying"))],
                expect: "Denied:Rollout",
                reason: "is rolling out",
                ..case("another change is rolling out")
            },
            Case {
                approvals: vec![approval("nginx:1.27", ALL, Some("Deploying"))],
                expect: "Approved:mark=false",
                reason: "already admitted",
                ..case("same change retried while deploying")
            },
            Case {
                policies: vec![no_rollback.clone()],
                approvals: vec![approval("nginx:1.27", ALL, Some("Deployed"))],
                expect: "Required:Pending:new",
                reason: "is Deployed and spent; this attempt needs a fresh request",
                ..case("a deployed approval is spent where rollbacks need approval")
            },
            Case {
                approvals: vec![approval("nginx:1.27", ALL, Some("Deployed"))],
                expect: "Allowed:Rollback",
                reason: "a rollback to the revision last confirmed Deployed",
                ..case("back to the revision last deployed")
            },
            Case {
                approvals: vec![
                    approval("nginx:1.27", ALL, Some("Deployed")),
                    approval("nginx:1.26", ALL, Some("Deploying")),
                ],
                expect: "Allowed:Rollback",
                reason: "a rollback to the revision last confirmed Deployed",
                ..case("an emergency rollback while a broken change is rolling out")
            },
            Case {
                approvals: vec![
                    deployed_at(
                        approval("nginx:1.27", ALL, Some("Deployed")),
                        "2025-06-01T08:00:00Z",
                    ),
                    deployed_at(
                        approval("nginx:1.26", ALL, Some("Deployed")),
                        "2025-06-02T08:00:00Z",
                    ),
                ],
                expect: "Required:Pending:new",
                reason: "is Deployed and spent",
                ..case("an older deployed revision is not a rollback")
            },
            Case {
                old: None,
                approvals: vec![approval("nginx:1.27", ALL, Some("Deployed"))],
                expect: "Required:Pending:new",
                reason: "is Deployed and spent",
                ..case("re-creating a deleted object is not a rollback")
            },
            Case {
                approvals: vec![tweak(approval("nginx:1.27", &[], Some("Approved")), |a| {
                    a.metadata.name = Some("forged".into())
                })],
                expect: "Required:Pending:existing",
                reason: "",
                ..case("only a Deployed status makes a rollback")
            },
            Case {
                approvals: vec![approval("nginx:1.27", ALL, Some("Failed"))],
                expect: "Required:Pending:new",
                reason: "is Failed and spent",
                ..case("a failed approval is spent")
            },
            Case {
                approvals: vec![approval("nginx:1.27", ALL, Some("Expired"))],
                expect: "Required:Pending:new",
                reason: "expired; it stays for the record",
                ..case("stored terminal phase is respected")
            },
            Case {
                approvals: vec![approval("nginx:1.27", ALL, Some("Rejected"))],
                expect: "Required:Rejected:existing",
                reason: "to ask again: kubectl countersign request --again -f <manifest> -n shop",
                ..case("a stored rejection stands over approving reviews")
            },
            Case {
                approvals: vec![
                    approval("nginx:1.27", ALL, Some("Rejected")),
                    approval("nginx:1.27", LEVEL_ONE, None),
                ],
                expect: "Required:Pending:existing",
                reason: "pending",
                ..case("a live request outranks a terminal one")
            },
            Case {
                new: break_glass.clone(),
                groups: &["developers", "oncall"],
                expect: "Allowed:BreakGlass",
                reason: "break-glass by dev: INC-42 checkout down (bypasses prod)",
                ..case("break-glass")
            },
            Case {
                new: break_glass,
                expect: "Required:Pending:new",
                reason: "dev may not break glass",
                ..case("break-glass refused")
            },
            Case {
                policies: vec![single_level("low", 1, "x"), single_level("high", 5, "y")],
                expect: "Required:Pending:new",
                reason: "approval required by policy high",
                ..case("highest priority chain applies")
            },
            Case {
                policies: vec![single_level("b", 1, "x"), single_level("a", 1, "y")],
                expect: "Required:Pending:new",
                reason: "approval required by policy a",
                ..case("priority ties by name")
            },
        ];
        for case in &cases {
            let decision = run(case);
            assert_eq!(label(&decision.verdict), case.expect, "{}", case.name);
            assert!(
                decision.reasons.iter().any(|r| r.contains(case.reason)),
                "{}: {:?} lacks {:?}",
                case.name,
                decision.reasons,
                case.reason
            );
            assert_eq!(
                decision.allowed(),
                case.expect.starts_with("Allowed") || case.expect.starts_with("Approved"),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn a_new_request_snapshots_the_chain_and_the_change() {
        let c = Case {
            dry_run: false,
            ..case("new")
        };
        let decision = run(&c);
        let Verdict::ApprovalRequired(req) = &decision.verdict else {
            panic!("{:?}", decision.verdict);
        };
        let spec = req.create.as_ref().unwrap();
        assert_eq!(spec.change.digest, decision.digest.as_str());
        assert_eq!(req.approval_name, approval_name("web", &decision.digest));
        assert_eq!(spec.policy.name, "prod");
        assert_eq!(spec.policy.chain.levels.len(), 2);
        assert_eq!(spec.change.requester.username, "dev");
        assert_eq!(spec.change.requested_at.0, now());
        assert_eq!(
            spec.change.summary.text,
            "Deployment shop/web: image web nginx:1.25 → nginx:1.27"
        );
        assert_eq!(spec.target.name, "web");
        assert!(spec.reviews.is_empty());
        assert_eq!(decision.matched_policies, vec!["prod".to_string()]);
    }

    #[test]
    fn a_fresh_request_never_takes_the_name_of_one_kept_for_the_record() {
        let named = |phase: &str, name: String| {
            tweak(approval("nginx:1.27", ALL, Some(phase)), |a| {
                a.metadata.name = Some(name)
            })
        };
        let base = approval("nginx:1.27", ALL, None)
            .metadata
            .name
            .unwrap_or_default();
        let cases: Vec<(&str, Vec<DeploymentApproval>, String)> = vec![
            ("none yet", vec![], base.clone()),
            (
                "the first expired",
                vec![named("Expired", base.clone())],
                format!("{base}-2"),
            ),
            (
                "deployed, then failed",
                vec![
                    named("Deployed", base.clone()),
                    named("Failed", format!("{base}-2")),
                ],
                format!("{base}-3"),
            ),
            (
                "a gap left by a deleted record is reused",
                vec![
                    named("Deployed", base.clone()),
                    named("Expired", format!("{base}-3")),
                ],
                format!("{base}-2"),
            ),
        ];
        // Rollbacks need approval here, so a Deployed record is only a name taken.
        let mut no_rollback = two_level("prod", 10);
        if let Some(chain) = no_rollback.spec.approval.as_mut() {
            chain.allow_rollback = Some(false);
        }
        for (name, approvals, expected) in cases {
            let decision = run(&Case {
                approvals,
                dry_run: false,
                policies: vec![no_rollback.clone()],
                ..case(name)
            });
            let Verdict::ApprovalRequired(req) = &decision.verdict else {
                panic!("{name}: {:?}", decision.verdict);
            };
            assert_eq!(req.approval_name, expected, "{name}");
            assert!(!req.existing, "{name}");
            assert!(req.create.is_some(), "{name}");
            assert!(
                is_request_name(&expected, "web", &decision.digest),
                "{name}"
            );
        }
        let digest = ChangeDigest::of(&deployment("nginx:1.27", 3), &[]);
        let base = approval_name("web", &digest);
        for (candidate, expected) in [
            (base.clone(), true),
            (format!("{base}-2"), true),
            (format!("{base}-17"), true),
            (format!("{base}-1"), false),
            (format!("{base}-02"), false),
            (format!("{base}-+2"), false),
            (format!("{base}-x"), false),
            (format!("{base}2"), false),
            ("web".to_string(), false),
            (approval_name("api", &digest), false),
        ] {
            assert_eq!(
                is_request_name(&candidate, "web", &digest),
                expected,
                "{candidate}"
            );
        }
    }

    #[test]
    fn a_request_that_can_never_be_approved_says_so() {
        let needs_the_requester = policy(json!({
            "metadata": {"name": "self-required"},
            "spec": {"approval": {"levels": [{"name": "owners",
                "approvers": [{"user": "dev", "required": true}, {"user": "ops"}]}]}}
        }));
        let decision = run(&Case {
            policies: vec![needs_the_requester],
            ..case("stuck")
        });
        assert_eq!(label(&decision.verdict), "Required:Pending:new");
        assert!(
            decision.reasons.iter().any(|r| r
                == "level 1/1 owners can no longer be satisfied: dev is required but dev is the requester; an approver can reject this request, and the change can then be requested again"),
            "{:?}",
            decision.reasons
        );
    }

    #[test]
    fn the_digest_ignores_replicas_and_matches_the_approval() {
        let with_replicas = Case {
            new: deployment("nginx:1.27", 7),
            approvals: vec![approval("nginx:1.27", ALL, None)],
            ..case("replicas differ from the approved object")
        };
        let decision = run(&with_replicas);
        assert_eq!(label(&decision.verdict), "Approved:mark=true");
        assert_eq!(
            decision.digest,
            ChangeDigest::of(&deployment("nginx:1.27", 1), &["/spec/replicas".into()])
        );
    }

    #[test]
    fn break_glass_is_reported_even_when_only_some_policies_are_bypassed() {
        let mut hotfix = deployment("registry.example.com/web:2", 3);
        hotfix["metadata"]["annotations"] = json!({"countersign.dev/break-glass": "INC-7"});
        let partial = Case {
            policies: vec![two_level("prod", 10), registry_check()],
            new: hotfix.clone(),
            groups: &["oncall"],
            ..case("partial")
        };
        let decision = run(&partial);
        assert_eq!(label(&decision.verdict), "Allowed:NoApprovalRequired");
        assert_eq!(
            decision.break_glass,
            Some(BreakGlassUse {
                reason: "INC-7".into(),
                policies: vec!["prod".into()],
            })
        );
        assert!(
            decision
                .reasons
                .iter()
                .any(|r| r.contains("policy registries: does not allow break-glass"))
        );
        let full = Case {
            new: hotfix,
            groups: &["oncall"],
            ..case("full")
        };
        let decision = run(&full);
        assert_eq!(label(&decision.verdict), "Allowed:BreakGlass");
        assert!(decision.break_glass.is_some());
        let none = run(&case("no annotation"));
        assert_eq!(none.break_glass, None);
    }
}
