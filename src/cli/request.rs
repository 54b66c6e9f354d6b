//! `countersign request -f MANIFEST`: ask for approval of a change before it is applied, so
//! a GitOps sync that comes later is admitted once the request is approved (Flux, for one,
//! dry-runs every object first and so never opens a request by applying).
//!
//! Each object of the manifest is applied as a server-side dry run. countersign's webhook
//! judges it like the real apply and, when approval is required, hands back the request the
//! change would get (`core::admission::proposal`); this command opens it. The approvals webhook checks
//! that request like any other: the caller's own change, the governing policy's chain.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, Scope};
use kube::{Api, Client};
use serde_json::Value;

use super::CliError;
use super::cluster::{ClusterArgs, connect};
use super::input::InputError;
use super::show::{ShowFormat, list_of, print_object};
use crate::api::DeploymentApproval;
use crate::core::admission::proposal::{PROPOSAL_CAUSE, ProposedRequest, RequestProposal};
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
    /// The change already has a request.
    AlreadyRequested { name: String, phase: String },
}

pub async fn run(args: &RequestArgs) -> Result<(), CliError> {
    let objects = read_objects(&args.file)?;
    let cluster = connect(&args.cluster).await?;
    let mut kinds = KnownKinds::default();
    let mut opened = Vec::new();
    let mut refusals = Vec::new();
    for object in objects {
        let what = object_ref(&object);
        let requested = request_one(
            &cluster.client,
            &mut kinds,
            &cluster.namespace,
            object,
            args.again,
        );
        match requested.await {
            Ok(outcome) => {
                if args.output == ShowFormat::Text {
                    print_outcome(&what, &outcome);
                }
                if let Outcome::Requested(approval) = outcome {
                    opened.push(*approval);
                }
            }
            Err(error) => {
                eprintln!(
                    "countersign: {}: {}",
                    inert::text(&what),
                    inert::escaped_lines(&error.to_string())
                );
                refusals.push(error);
            }
        }
    }
    if args.output != ShowFormat::Text {
        print_object(args.output, &list_of(&opened))?;
    }
    match refusals.into_iter().next() {
        None => Ok(()),
        // Each was printed; the exit status is the first's.
        Some(error) => Err(CliError::Refused(format!(
            "not every object was requested ({error})"
        ))),
    }
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

async fn request_one(
    client: &Client,
    kinds: &mut KnownKinds,
    default_namespace: &str,
    mut object: Value,
    again: bool,
) -> Result<Outcome, CliError> {
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
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => {
            let namespace = match text("/metadata/namespace") {
                namespace if namespace.is_empty() => default_namespace.to_string(),
                namespace => namespace,
            };
            object["metadata"]["namespace"] = Value::from(namespace.clone());
            Api::namespaced_with(client.clone(), &namespace, resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), resource),
    };
    let dry_run = PatchParams::apply("countersign-request").force().dry_run();
    let denial = match api.patch(&name, &dry_run, &Patch::Apply(&object)).await {
        Ok(_) => return Ok(Outcome::Admitted),
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
        Some(open) if !open.again || again => {
            let namespace = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(default_namespace)
                .to_string();
            open_request(client, &namespace, open).await
        }
        Some(_) => Err(CliError::Refused(format!(
            "request {} for this change was rejected; to ask again: countersign request --again -f …",
            proposal.name
        ))),
        None if !again => Ok(Outcome::AlreadyRequested {
            name: proposal.name,
            phase: proposal.phase.to_string(),
        }),
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
    let api: Api<DeploymentApproval> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), &approval).await {
        Ok(created) => Ok(Outcome::Requested(Box::new(created))),
        // Opened meanwhile (the change itself was applied, or another request ran).
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Outcome::AlreadyRequested {
            name: open.name,
            phase: "Pending".into(),
        }),
        Err(error) => Err(CliError::from_api(
            &format!("opening DeploymentApproval {namespace}/{}", open.name),
            error,
        )),
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
            println!(
                "{}: requested approval {namespace}/{name} under policy {}",
                inert::text(what),
                inert::text(&approval.spec.policy.name)
            );
            println!(
                "  change: {}",
                inert::bounded(&approval.spec.change.summary.text, 1000)
            );
            if let Some(level) = approval.spec.policy.chain.levels.first() {
                let approvers: Vec<String> = level
                    .approvers
                    .iter()
                    .map(|a| inert::text(&crate::core::approval::chain::approver_label(a)))
                    .collect();
                println!(
                    "  first:  level {}: {}",
                    inert::text(&level.name),
                    approvers.join(", ")
                );
            }
            println!("  follow: kubectl countersign status {name} -n {namespace}");
        }
        Outcome::AlreadyRequested { name, phase } => println!(
            "{}: already requested as {} ({})",
            inert::text(what),
            inert::text(name),
            inert::text(phase)
        ),
    }
}
