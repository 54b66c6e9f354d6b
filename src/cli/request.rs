//! `countersign request -f MANIFEST`: ask for approval of a change before it is applied, so
//! a GitOps sync that comes later is admitted once the request is approved (Flux, for one,
//! dry-runs every object first and so never opens a request by applying).
//!
//! Each object of the manifest is applied as a server-side dry run. countersign's webhook
//! judges it like the real apply and, when approval is required, hands back the request the
//! change would get (`core::admission::proposal`); this command opens it. The approvals webhook checks
//! that request like any other: the caller's own change, the governing policy's chain.
//!
//! Two or more requests of one manifest under one policy in one namespace are opened as a
//! change set (`core::approval::set`), approved as one: the members first, each naming the
//! set, then the set listing them, which the webhook checks against the members as stored.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, Scope};
use kube::{Api, Client};
use serde_json::Value;

use super::CliError;
use super::cluster::{ClusterArgs, connect, whoami};
use super::input::InputError;
use super::show::{ShowFormat, list_of, print_object};
use crate::api::{
    ApprovalPhase, ChangeSet, ChangeSetSpec, DeploymentApproval, DeploymentApprovalSpec,
    PolicySnapshot, request_labels,
};
use crate::core::admission::proposal::{PROPOSAL_CAUSE, ProposedRequest, RequestProposal};
use crate::core::approval::set::{set_name, set_spec};
use crate::core::change::object_ref;
use crate::core::inert;

#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// The manifest (`-` for standard input): one or more YAML or JSON documents, as
    /// `kubectl apply -f` takes them.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Ask again for a change that was rejected: a fresh request (the rejected one stays on
    /// record).
    #[arg(long)]
    pub again: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: ShowFormat,
}

/// What became of one object of the manifest.
#[derive(Debug)]
enum Outcome {
    /// The change is admitted as it is (no policy requires approval, or it is approved).
    Admitted,
    /// A request was opened ahead of time.
    Requested(Box<DeploymentApproval>),
    /// The change already has a request (in change set `set`, when it names one).
    AlreadyRequested {
        name: String,
        phase: String,
        set: Option<String>,
    },
    /// The same change as an earlier document's.
    Repeated { name: String },
}

/// What a dry run said about one object, before anything is opened.
#[derive(Debug)]
enum Dry {
    Admitted,
    /// A request to open in `namespace`.
    Open {
        namespace: String,
        proposed: Box<ProposedRequest>,
    },
    /// The same change as an earlier document's, whose request is `name`.
    Repeated {
        name: String,
    },
    /// The change has request `name` already, as stored (`None`: not readable).
    Existing {
        name: String,
        phase: String,
        stored: Option<Box<DeploymentApproval>>,
    },
}

/// What became of a change set planned for the manifest.
#[derive(Debug)]
enum SetOutcome {
    Opened(Box<ChangeSet>),
    /// Opened by an earlier run of the same manifest.
    AlreadyOpen,
    /// Some of its requests were not opened, so neither was the set.
    MembersMissing {
        missing: usize,
    },
    Refused(String),
}

pub async fn run(args: &RequestArgs) -> Result<(), CliError> {
    let objects = read_objects(&args.file)?;
    let cluster = connect(&args.cluster).await?;
    let mut kinds = KnownKinds::default();
    let mut refusals = Vec::new();
    let refuse = |refusals: &mut Vec<CliError>, what: &str, error: CliError| {
        eprintln!(
            "countersign: {}: {}",
            inert::text(what),
            inert::escaped_lines(&error.to_string())
        );
        refusals.push(error);
    };
    // First every dry run: which requests the manifest needs, before any is opened; and
    // which of them may join a set (fresh ones, or an earlier run's unfinished members).
    let mut dry = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut candidate_of = Vec::new();
    let mut caller = None;
    for object in objects {
        let what = object_ref(&object);
        let answered = dry_run(
            &cluster.client,
            &mut kinds,
            &cluster.namespace,
            object,
            args.again,
        );
        let answer = match answered.await {
            Ok(answer) => answer,
            Err(error) => {
                refuse(&mut refusals, &what, error);
                continue;
            }
        };
        let mut candidate = candidate(&answer);
        // An earlier run's unfinished set is finished only by its requester: the caller,
        // as the API server says (asked once, and only then).
        if let Some(unfinished) = candidate.as_ref().filter(|c| !c.fresh) {
            if caller.is_none() {
                caller = Some(whoami(&cluster.client).await?);
            }
            let theirs = caller
                .as_ref()
                .is_some_and(|you| you.username == unfinished.spec.change.requester.username);
            if !theirs {
                candidate = None;
            }
        }
        let earlier = candidate
            .as_ref()
            .and_then(|c| candidates.iter().find(|earlier| same_target(earlier, c)));
        match (earlier, &candidate) {
            (Some(earlier), Some(c)) if earlier.name == c.name => {
                // The same change twice: one request.
                let name = earlier.name.clone();
                dry.push((what, Dry::Repeated { name }));
                candidate_of.push(None);
            }
            (Some(earlier), _) => {
                let error = CliError::Refused(format!(
                    "the manifest changes {} {} twice (request {} is for an earlier document): one request per object; request this change separately",
                    earlier.spec.target.kind, earlier.spec.target.name, earlier.name
                ));
                refuse(&mut refusals, &what, error);
            }
            (None, _) => {
                dry.push((what, answer));
                candidate_of.push(candidate.map(|c| {
                    candidates.push(c);
                    candidates.len() - 1
                }));
            }
        }
    }
    // Then the sets those requests form.
    let sets = plan_sets(&candidates, &set_prefix(&args.file), Timestamp::now());
    let set_of = |index: usize| sets.iter().find(|s| s.members.contains(&index));

    // The requests first (a set lists only requests that exist), then their sets.
    let mut outcomes = Vec::with_capacity(dry.len());
    let mut opened: Vec<Option<bool>> = vec![None; candidates.len()];
    let mut created = Vec::new();
    for ((what, answer), candidate) in dry.into_iter().zip(candidate_of) {
        let outcome = match answer {
            Dry::Admitted => Outcome::Admitted,
            Dry::Repeated { name } => Outcome::Repeated { name },
            Dry::Existing {
                name,
                phase,
                stored,
            } => {
                if let Some(index) = candidate {
                    opened[index] = Some(true);
                }
                Outcome::AlreadyRequested {
                    name,
                    phase,
                    set: stored.and_then(|s| s.spec.change_set),
                }
            }
            Dry::Open {
                namespace,
                mut proposed,
            } => {
                // The seal does not cover the set: the proposal's seal stays valid.
                proposed.spec.change_set = candidate.and_then(set_of).map(|set| set.name.clone());
                let result = open_request(&cluster.client, &namespace, *proposed).await;
                if let Some(index) = candidate {
                    opened[index] = Some(result.is_ok());
                }
                match result {
                    Ok(outcome) => outcome,
                    Err(error) => {
                        refuse(&mut refusals, &what, error);
                        continue;
                    }
                }
            }
        };
        if let Outcome::Requested(approval) = &outcome {
            created
                .push(serde_json::to_value(approval).map_err(|e| CliError::Output(e.to_string()))?);
        }
        outcomes.push((what, outcome));
    }
    let mut set_outcomes = Vec::with_capacity(sets.len());
    for set in &sets {
        let missing = set
            .members
            .iter()
            .filter(|&&i| opened.get(i).copied().flatten() != Some(true))
            .count();
        let outcome = if missing > 0 {
            SetOutcome::MembersMissing { missing }
        } else {
            open_set(&cluster.client, set).await
        };
        match &outcome {
            SetOutcome::Opened(made) => created
                .push(serde_json::to_value(made).map_err(|e| CliError::Output(e.to_string()))?),
            SetOutcome::AlreadyOpen => {}
            SetOutcome::MembersMissing { .. } | SetOutcome::Refused(_) => {
                let error = CliError::Refused(set_failure(set, &outcome));
                refuse(
                    &mut refusals,
                    &format!("ChangeSet {}/{}", set.namespace, set.name),
                    error,
                );
            }
        }
        set_outcomes.push(outcome);
    }

    if args.output == ShowFormat::Text {
        for (what, outcome) in &outcomes {
            print_outcome(what, outcome);
        }
        for (set, outcome) in sets.iter().zip(&set_outcomes) {
            print_set_outcome(set, outcome);
        }
    } else {
        print_object(args.output, &list_of(&created))?;
    }
    match refusals.into_iter().next() {
        None => Ok(()),
        // Each was printed; the exit status is the first's.
        Some(error) => Err(CliError::Refused(format!(
            "not every object was requested ({error})"
        ))),
    }
}

/// What of `answer` may join a set: a request to open, or an earlier run's unfinished
/// member.
fn candidate(answer: &Dry) -> Option<Candidate> {
    match answer {
        Dry::Open {
            namespace,
            proposed,
        } => Some(Candidate {
            namespace: namespace.clone(),
            name: proposed.name.clone(),
            spec: proposed.spec.clone(),
            fresh: true,
        }),
        Dry::Existing {
            stored: Some(stored),
            ..
        } if unfinished_member(stored) => Some(Candidate {
            namespace: stored.metadata.namespace.clone().unwrap_or_default(),
            name: stored.metadata.name.clone().unwrap_or_default(),
            spec: stored.spec.clone(),
            fresh: false,
        }),
        _ => None,
    }
}

/// A request an earlier run opened for a set that was never made: pending, unreviewed,
/// naming a set. Whether that set is the one this run plans is [`plan_sets`]'s to say.
fn unfinished_member(stored: &DeploymentApproval) -> bool {
    stored.spec.change_set.is_some()
        && stored.spec.reviews.is_empty()
        && stored.phase() == ApprovalPhase::Pending
}

fn same_target(a: &Candidate, b: &Candidate) -> bool {
    a.namespace == b.namespace
        && a.spec.target.kind == b.spec.target.kind
        && a.spec.target.name == b.spec.target.name
}

/// The start of a set's name: the manifest's file name without its extension (`set` for
/// standard input); `set_name` keeps what a name may hold.
fn set_prefix(file: &Path) -> String {
    if file == Path::new("-") {
        return "set".into();
    }
    file.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "set".into())
}

/// A request of the manifest that may join a set: one the dry run proposes to open
/// (`fresh`), or one an earlier run opened for a set it did not get to make.
#[derive(Clone, Debug)]
struct Candidate {
    namespace: String,
    name: String,
    spec: DeploymentApprovalSpec,
    fresh: bool,
}

/// A change set to open: its name, its spec, and its members (indices of the candidates,
/// in the manifest's order).
#[derive(Clone, Debug, PartialEq)]
struct PlannedSet {
    namespace: String,
    name: String,
    spec: ChangeSetSpec,
    members: Vec<usize>,
}

/// The sets the manifest's requests form: those of one namespace, one policy and one
/// requester are approved as one when there are two or more. An earlier run's unfinished
/// members join only the set they already name (the same manifest run again); otherwise
/// the set is made of the fresh requests alone. Its time is the newest of its fresh
/// requests' (the API server's clock, as the dry run stamped it), else `now`.
fn plan_sets(candidates: &[Candidate], prefix: &str, now: Timestamp) -> Vec<PlannedSet> {
    // By namespace, policy and requester, in the manifest's order.
    type Key<'a> = (&'a str, &'a str, &'a str);
    let mut groups: Vec<(Key, Vec<usize>)> = Vec::new();
    for (index, candidate) in candidates.iter().enumerate() {
        let key = (
            candidate.namespace.as_str(),
            candidate.spec.policy.name.as_str(),
            candidate.spec.change.requester.username.as_str(),
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(index),
            None => groups.push((key, vec![index])),
        }
    }
    let set_of = |members: &[usize]| -> Option<PlannedSet> {
        let first = candidates.get(*members.first()?)?;
        if members.len() < 2 {
            return None;
        }
        let listed: Vec<(String, &DeploymentApprovalSpec)> = members
            .iter()
            .filter_map(|&i| candidates.get(i))
            .map(|c| (c.name.clone(), &c.spec))
            .collect();
        let at = members
            .iter()
            .filter_map(|&i| candidates.get(i))
            .filter(|c| c.fresh)
            .map(|c| c.spec.change.requested_at.0)
            .max()
            .unwrap_or(now);
        let spec = set_spec(&listed, &first.spec.change.requester, at)?;
        Some(PlannedSet {
            namespace: first.namespace.clone(),
            name: set_name(prefix, &spec.change.digest),
            spec,
            members: members.to_vec(),
        })
    };
    let mut sets = Vec::new();
    for (_, members) in groups {
        let whole = set_of(&members).filter(|set| {
            members
                .iter()
                .filter_map(|&i| candidates.get(i))
                .all(|c| c.fresh || c.spec.change_set.as_deref() == Some(set.name.as_str()))
        });
        let planned = whole.or_else(|| {
            let fresh: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| candidates.get(i).is_some_and(|c| c.fresh))
                .collect();
            set_of(&fresh)
        });
        sets.extend(planned);
    }
    sets
}

fn read_objects(file: &Path) -> Result<Vec<Value>, CliError> {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| InputError::new(file, None, format!("cannot read: {e}")))?;
        text
    } else {
        super::input::read(file)?
    };
    let objects: Vec<Value> = super::manifest_set::from_text(file, &text)?
        .into_iter()
        .map(|located| located.object)
        .collect();
    if objects.is_empty() {
        return Err(InputError::new(file, None, "no objects in it").into());
    }
    Ok(objects)
}

/// The API resource of each kind met so far: discovery runs once per kind, not per object
/// (a manifest of fifty Deployments asks the API server about Deployments once).
#[derive(Default)]
struct KnownKinds {
    resolved: HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>,
}

impl KnownKinds {
    async fn resolve(
        &mut self,
        client: &Client,
        gvk: GroupVersionKind,
    ) -> Result<&(ApiResource, ApiCapabilities), CliError> {
        let found = match self.resolved.entry(gvk) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => {
                let gvk = new.key();
                let what = format!("looking up {}/{} {}", gvk.group, gvk.version, gvk.kind);
                let resolved = kube::discovery::pinned_kind(client, gvk)
                    .await
                    .map_err(|e| CliError::from_api(&what, e))?;
                new.insert(resolved)
            }
        };
        Ok(found)
    }
}

async fn dry_run(
    client: &Client,
    kinds: &mut KnownKinds,
    default_namespace: &str,
    mut object: Value,
    again: bool,
) -> Result<Dry, CliError> {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (api_version, kind, name) = (text("/apiVersion"), text("/kind"), text("/metadata/name"));
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or(("", api_version.as_str()));
    let gvk = GroupVersionKind::gvk(group, version, &kind);
    let (resource, capabilities) = kinds.resolve(client, gvk).await?;
    let mut namespace = default_namespace.to_string();
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => {
            if let Some(own) = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                namespace = own.to_string();
            }
            object["metadata"]["namespace"] = Value::from(namespace.clone());
            Api::namespaced_with(client.clone(), &namespace, resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), resource),
    };
    let dry_run = PatchParams::apply("countersign-request").force().dry_run();
    let denial = match api.patch(&name, &dry_run, &Patch::Apply(&object)).await {
        Ok(_) => return Ok(Dry::Admitted),
        Err(kube::Error::Api(status)) => status,
        Err(error) => return Err(CliError::from_api("dry-running the change", error)),
    };
    let proposal = denial
        .details
        .as_ref()
        .and_then(|d| d.causes.iter().find(|c| c.reason == PROPOSAL_CAUSE))
        .and_then(|cause| serde_json::from_str::<RequestProposal>(&cause.message).ok());
    let Some(proposal) = proposal else {
        // Denied outright (a rule, a freeze, a change rolling out), or refused by RBAC.
        return Err(CliError::from_api(
            "the change is refused",
            kube::Error::Api(denial),
        ));
    };
    match proposal.open {
        Some(open) if !open.again || again => Ok(Dry::Open {
            namespace,
            proposed: Box::new(open),
        }),
        Some(_) => Err(CliError::Refused(format!(
            "request {} for this change was rejected; to ask again: countersign request --again -f …",
            proposal.name
        ))),
        None if !again => {
            // Read as stored: whether it belongs to a set (one an earlier run may not have
            // finished making). Unreadable, it is shown as the dry run named it.
            let approvals: Api<DeploymentApproval> = Api::namespaced(client.clone(), &namespace);
            let stored = approvals.get_opt(&proposal.name).await.ok().flatten();
            Ok(Dry::Existing {
                name: proposal.name,
                phase: proposal.phase.to_string(),
                stored: stored.map(Box::new),
            })
        }
        None => Err(CliError::Refused(format!(
            "request {} for this change is {}, not rejected: there is nothing to ask again",
            proposal.name, proposal.phase
        ))),
    }
}

async fn open_request(
    client: &Client,
    namespace: &str,
    open: ProposedRequest,
) -> Result<Outcome, CliError> {
    let mut approval = DeploymentApproval::new(&open.name, open.spec);
    approval.metadata.namespace = Some(namespace.to_string());
    // As countersign labels the requests it opens: the target, and the set the operator
    // finds its members by.
    approval.metadata.labels = Some(request_labels(&approval.spec));
    let set = approval.spec.change_set.clone();
    let api: Api<DeploymentApproval> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), &approval).await {
        Ok(created) => Ok(Outcome::Requested(Box::new(created))),
        // Opened meanwhile (the change itself was applied, or another request ran).
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Outcome::AlreadyRequested {
            name: open.name,
            phase: "Pending".into(),
            set,
        }),
        Err(error) => Err(CliError::from_api(
            &format!("opening DeploymentApproval {namespace}/{}", open.name),
            error,
        )),
    }
}

/// Open `set` (its members exist); one that exists already was opened by an earlier run.
async fn open_set(client: &Client, set: &PlannedSet) -> SetOutcome {
    let mut made = ChangeSet::new(&set.name, set.spec.clone());
    made.metadata.namespace = Some(set.namespace.clone());
    let api: Api<ChangeSet> = Api::namespaced(client.clone(), &set.namespace);
    match api.create(&PostParams::default(), &made).await {
        Ok(created) => SetOutcome::Opened(Box::new(created)),
        Err(kube::Error::Api(status)) if status.code == 409 => SetOutcome::AlreadyOpen,
        // Said after the set's name: `ChangeSet NS/NAME: not opened: <the reason>`.
        Err(error) => SetOutcome::Refused(CliError::from_api("not opened", error).to_string()),
    }
}

/// Why a set was not opened, and what to do.
fn set_failure(set: &PlannedSet, outcome: &SetOutcome) -> String {
    match outcome {
        SetOutcome::MembersMissing { missing } => format!(
            "not opened: {missing} of its {} requests could not be opened (above); once that is fixed, run the same command again",
            set.members.len()
        ),
        SetOutcome::Refused(why) => why.clone(),
        SetOutcome::Opened(_) | SetOutcome::AlreadyOpen => String::new(),
    }
}

fn print_outcome(what: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Admitted => println!(
            "{}: admitted as it is (no approval required, or already approved)",
            inert::text(what)
        ),
        Outcome::Requested(approval) => {
            let name = approval.metadata.name.as_deref().unwrap_or_default();
            let namespace = approval.metadata.namespace.as_deref().unwrap_or_default();
            match &approval.spec.change_set {
                Some(set) => println!(
                    "{}: requested approval {namespace}/{name}, in change set {namespace}/{} (reviewed as one)",
                    inert::text(what),
                    inert::text(set)
                ),
                None => println!(
                    "{}: requested approval {namespace}/{name} under policy {}",
                    inert::text(what),
                    inert::text(&approval.spec.policy.name)
                ),
            }
            println!(
                "  change: {}",
                inert::bounded(&approval.spec.change.summary.text, 1000)
            );
            if approval.spec.change_set.is_none() {
                print_first_level(&approval.spec.policy, "first:  ");
                println!("  follow: kubectl countersign status {name} -n {namespace}");
            }
        }
        Outcome::Repeated { name } => println!(
            "{}: the same change as an earlier document (request {})",
            inert::text(what),
            inert::text(name)
        ),
        Outcome::AlreadyRequested { name, phase, set } => println!(
            "{}: already requested as {} ({}){}",
            inert::text(what),
            inert::text(name),
            inert::text(phase),
            set.as_deref()
                .map(|set| format!(", in change set {}", inert::text(set)))
                .unwrap_or_default()
        ),
    }
}

/// The set's line, and how to approve and follow it.
fn print_set_outcome(set: &PlannedSet, outcome: &SetOutcome) {
    let (namespace, name) = (inert::text(&set.namespace), inert::text(&set.name));
    match outcome {
        SetOutcome::Opened(_) => {
            println!(
                "Change set {namespace}/{name}: opened for {} requests under policy {}, approved as one",
                set.members.len(),
                inert::text(&set.spec.policy.name)
            );
            print_first_level(&set.spec.policy, "first:   ");
            println!("  approve: kubectl countersign approve {name} -n {namespace}");
            println!("  follow:  kubectl countersign status {name} -n {namespace}");
        }
        SetOutcome::AlreadyOpen => {
            println!(
                "Change set {namespace}/{name}: already open for these {} requests",
                set.members.len()
            );
            println!("  follow:  kubectl countersign status {name} -n {namespace}");
        }
        // Said on standard error.
        SetOutcome::MembersMissing { .. } | SetOutcome::Refused(_) => {}
    }
}

/// `  first:  level leads: group:team-leads`: who is asked first (`label` aligns it).
fn print_first_level(policy: &PolicySnapshot, label: &str) {
    if let Some(level) = policy.chain.levels.first() {
        let approvers: Vec<String> = level
            .approvers
            .iter()
            .map(|a| inert::text(&crate::core::approval::chain::approver_label(a)))
            .collect();
        println!(
            "  {label}level {}: {}",
            inert::text(&level.name),
            approvers.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::approval::set::set_digest;
    use crate::core::test_builders::{minutes, two_level_request};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// A candidate for `kind/target` in `namespace` under `policy` by `requester`, its
    /// request named `<target>-1`, proposed at `minute`.
    fn candidate(
        namespace: &str,
        target: &str,
        policy: &str,
        requester: &str,
        minute: i64,
    ) -> Candidate {
        let mut spec = two_level_request(&[], None).spec;
        spec.target.name = target.into();
        spec.change.digest = format!("sha256:{target}");
        spec.change.summary.text = format!("Deployment {namespace}/{target}: image");
        spec.policy.name = policy.into();
        spec.change.requester.username = requester.into();
        spec.change.requested_at = Time(minutes(minute));
        Candidate {
            namespace: namespace.into(),
            name: format!("{target}-1"),
            spec,
            fresh: true,
        }
    }

    /// An earlier run's member naming `set`.
    fn unfinished(mut c: Candidate, set: &str) -> Candidate {
        c.fresh = false;
        c.spec.change_set = Some(set.into());
        c
    }

    /// The members of each planned set, by request name.
    fn planned(sets: &[PlannedSet], candidates: &[Candidate]) -> Vec<Vec<String>> {
        sets.iter()
            .map(|s| {
                s.members
                    .iter()
                    .map(|&i| candidates[i].name.clone())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn requests_of_one_namespace_policy_and_requester_form_a_set() {
        let c = candidate;
        type Case<'a> = (&'a str, Vec<Candidate>, Vec<Vec<&'a str>>);
        let cases: Vec<Case> = vec![
            (
                "one request stays a request",
                vec![c("shop", "web", "p", "dave", 0)],
                vec![],
            ),
            (
                "two under one policy",
                vec![
                    c("shop", "web", "p", "dave", 0),
                    c("shop", "api", "p", "dave", 0),
                ],
                vec![vec!["web-1", "api-1"]],
            ),
            (
                "two policies: two single requests",
                vec![
                    c("shop", "web", "p", "dave", 0),
                    c("shop", "api", "q", "dave", 0),
                ],
                vec![],
            ),
            (
                "two namespaces: two single requests",
                vec![
                    c("shop", "web", "p", "dave", 0),
                    c("bank", "api", "p", "dave", 0),
                ],
                vec![],
            ),
            (
                "in the manifest's order, one set per policy",
                vec![
                    c("shop", "web", "p", "dave", 0),
                    c("shop", "db", "q", "dave", 0),
                    c("shop", "api", "p", "dave", 0),
                    c("shop", "cache", "q", "dave", 0),
                    c("bank", "ledger", "p", "dave", 0),
                ],
                vec![vec!["web-1", "api-1"], vec!["db-1", "cache-1"]],
            ),
            (
                "someone else's unfinished member never joins",
                vec![
                    c("shop", "web", "p", "dave", 0),
                    unfinished(c("shop", "api", "p", "erin", 0), "set-x"),
                ],
                vec![],
            ),
        ];
        for (what, candidates, expected) in cases {
            let sets = plan_sets(&candidates, "release", minutes(5));
            assert_eq!(planned(&sets, &candidates), expected, "{what}");
        }
    }

    #[test]
    fn a_set_is_named_after_the_manifest_and_its_digest_and_lists_its_members() {
        let candidates = vec![
            candidate("shop", "web", "p", "dave", 1),
            candidate("shop", "api", "p", "dave", 2),
        ];
        let sets = plan_sets(&candidates, "Release_2.yaml", minutes(9));
        let [set] = sets.as_slice() else {
            panic!("one set: {sets:?}");
        };
        assert_eq!(set.namespace, "shop");
        assert_eq!(set.spec.change.digest, set_digest(&set.spec.members));
        assert_eq!(
            set.name,
            set_name("Release_2.yaml", &set.spec.change.digest)
        );
        assert!(set.name.starts_with("release2yaml-"), "{}", set.name);
        let listed: Vec<(&str, &str)> = set
            .spec
            .members
            .iter()
            .map(|m| (m.request.as_str(), m.digest.as_str()))
            .collect();
        assert_eq!(listed, [("web-1", "sha256:web"), ("api-1", "sha256:api")]);
        assert_eq!(set.spec.change.requester.username, "dave");
        assert!(set.spec.reviews.is_empty() && set.spec.change.origin.is_none());
        // The API server's time, as the newest dry run stamped it; not the local clock.
        assert_eq!(set.spec.change.requested_at.0, minutes(2));
        assert_eq!(set_prefix(Path::new("-")), "set");
        assert_eq!(set_prefix(Path::new("deploy/shop.yaml")), "shop");
    }

    #[test]
    fn an_unfinished_set_is_made_again_only_as_its_members_name_it() {
        let fresh = || {
            vec![
                candidate("shop", "web", "p", "dave", 0),
                candidate("shop", "api", "p", "dave", 0),
            ]
        };
        let first = plan_sets(&fresh(), "set", minutes(1));
        let name = first[0].name.clone();
        // The same manifest again after only web's request was opened: the set is the same.
        let mut retry = fresh();
        retry[0] = unfinished(retry[0].clone(), &name);
        let again = plan_sets(&retry, "set", minutes(3));
        assert_eq!(again[0].name, name);
        assert_eq!(again[0].spec.members, first[0].spec.members);
        assert_eq!(again[0].members, [0, 1]);
        // Every request opened, only the set missing: the set, at the local time.
        let all: Vec<Candidate> = fresh().into_iter().map(|c| unfinished(c, &name)).collect();
        let again = plan_sets(&all, "set", minutes(3));
        assert_eq!(again[0].name, name);
        assert_eq!(again[0].spec.change.requested_at.0, minutes(3));
        // A request that names another set stays out; the fresh ones form a set of their own.
        let mut changed = fresh();
        changed.push(candidate("shop", "db", "p", "dave", 0));
        changed[0] = unfinished(changed[0].clone(), "set-other");
        let sets = plan_sets(&changed, "set", minutes(3));
        assert_eq!(planned(&sets, &changed), [["api-1", "db-1"]]);
        // Alone, an unfinished member forms nothing.
        let alone = vec![unfinished(candidate("shop", "web", "p", "dave", 0), &name)];
        assert!(plan_sets(&alone, "set", minutes(3)).is_empty());
    }
}
