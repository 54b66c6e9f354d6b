//! `countersign check` (SPEC §10): gather the change, policies and approvals from files,
//! call `core::admission::decision::decide` exactly as the webhook does, and report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use serde_json::Value;

use super::CliError;
use super::input::{self, InputError};
use super::labels;
use super::output::{self, OutputFormat};
use super::{junit, manifest_set};
use crate::api::{ApprovalPolicy, DeploymentApproval, GROUP, Operation, UserInfo, VERSION};
use crate::core::admission::decision::{DecisionInput, ValidateOnTheSpot, decide};
use crate::core::approval::chain::RoleBindingSnapshot;
use crate::core::change::{group_kind, is_workload};
use crate::core::policy::matching::{ChangeRequest, selects_namespaces_by_label};
use crate::core::policy::validation::{validate_chain_snapshot, validate_policy};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// An ApprovalPolicy file (several documents allowed) or a directory of them. Repeatable.
    #[arg(long = "policy", value_name = "FILE_OR_DIR", required = true)]
    pub policies: Vec<PathBuf>,
    /// The object as it would be applied; or a rendered manifest set (several documents,
    /// a `List`, a directory; several paths allowed, e.g. from pre-commit), whose every
    /// workload is judged.
    #[arg(long, value_name = "FILE_OR_DIR", num_args = 1.., required = true)]
    pub object: Vec<PathBuf>,
    /// The object currently in the cluster (makes the operation UPDATE).
    #[arg(long, value_name = "FILE")]
    pub old_object: Option<PathBuf>,
    /// DeploymentApproval files or directories, as the webhook would find them. Repeatable.
    #[arg(long = "approval", value_name = "FILE_OR_DIR")]
    pub approvals: Vec<PathBuf>,
    /// RoleBindings and ClusterRoleBindings that decide who holds a `role` approver's role,
    /// e.g. the output of `kubectl get rolebindings,clusterrolebindings -A -o yaml`.
    /// Repeatable. Without it, no one holds a role.
    #[arg(long = "rbac", value_name = "FILE_OR_DIR")]
    pub rbac: Vec<PathBuf>,
    /// The target's Namespace object (its labels drive namespaceSelector and region).
    /// Needed, or --namespace-labels, when a policy has a match.namespaceSelector.
    #[arg(long, value_name = "FILE")]
    pub namespace: Option<PathBuf>,
    /// The target namespace's labels, instead of a --namespace file, e.g.
    /// `env=production,team=shop`; an empty value means no labels.
    #[arg(
        long,
        value_name = "K=V,…",
        conflicts_with = "namespace",
        value_parser = labels::parse_labels
    )]
    pub namespace_labels: Option<BTreeMap<String, String>>,
    /// The requesting user.
    #[arg(long, default_value = "system:anonymous")]
    pub user: String,
    /// A group of the requesting user. Repeatable.
    #[arg(long = "group", value_name = "G")]
    pub groups: Vec<String>,
    /// Default: UPDATE with --old-object, else CREATE.
    #[arg(long, value_enum, ignore_case = true)]
    pub operation: Option<OperationArg>,
    /// Evaluate at this time instead of now, e.g. 2025-06-07T10:00:00Z.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
    /// The cluster's region, used when the namespace has no topology.kubernetes.io/region label.
    #[arg(long, value_name = "R")]
    pub region: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// What fails (exit 1): `any` verdict but allowed (SPEC §10), or only `denied` changes
    /// (rules, freezes, checks such as secrets in env values), so a change that merely
    /// needs approval passes a pre-commit hook or a pull request's pipeline.
    #[arg(long, value_enum, default_value_t)]
    pub fail_on: FailOn,
}

/// Which verdicts make `check` exit 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Every verdict but allowed.
    #[default]
    Any,
    /// Only denials; a change waiting for approval passes.
    Denied,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OperationArg {
    #[value(name = "CREATE")]
    Create,
    #[value(name = "UPDATE")]
    Update,
}

/// Exit statuses of `check`.
const EXIT_ALLOWED: u8 = 0;
const EXIT_DENIED: u8 = 1;

/// What every object of one `check` is judged against.
struct Setting {
    policies: Vec<ApprovalPolicy>,
    approvals: Vec<DeploymentApproval>,
    bindings: RoleBindingSnapshot,
    /// The `--namespace` file's namespace, when given.
    namespace_name: Option<String>,
    namespace_labels: BTreeMap<String, String>,
    requester: UserInfo,
    now: Timestamp,
}

/// One judged object: its report, and the decision for the text view.
struct Judged {
    report: output::CheckReport,
    text: String,
}

pub fn run(args: &CheckArgs) -> Result<ExitCode, CliError> {
    let now = match &args.now {
        Some(text) => text.parse::<Timestamp>().map_err(|e| CliError::Flag {
            flag: "--now",
            message: format!("{text:?} is not an RFC 3339 time such as 2025-06-07T10:00:00Z: {e}"),
        })?,
        None => Timestamp::now(),
    };
    let policies = load_policies(&args.policies)?;
    let mut objects = Vec::new();
    for path in &args.object {
        objects.extend(manifest_set::load(path)?);
    }
    let single = match (args.object.as_slice(), objects.as_slice()) {
        ([path], [only]) => !path.is_dir() && only.is_whole_file(),
        _ => false,
    };
    let single_change = if single {
        Some(single_change(args, &objects[0].object)?)
    } else {
        None
    };
    let (namespace_name, namespace_labels) = match &args.namespace_labels {
        Some(labels) => (None, labels.clone()),
        None => load_namespace(args.namespace.as_deref())?,
    };
    if args.namespace.is_none() && args.namespace_labels.is_none() {
        // Without the namespace's labels a selector would silently never match.
        if let Some(policy) = policies.iter().find(|p| selects_namespaces_by_label(p)) {
            return Err(CliError::Flag {
                flag: "--namespace",
                message: format!(
                    "policy {} selects namespaces by label (spec.match.namespaceSelector) and the target namespace's labels are unknown: give --namespace FILE (the Namespace object) or --namespace-labels k=v,…",
                    policy.metadata.name.as_deref().unwrap_or_default()
                ),
            });
        }
    }
    let setting = Setting {
        approvals: load_approvals(&args.approvals)?,
        bindings: load_bindings(&args.rbac)?,
        policies,
        namespace_name,
        namespace_labels,
        requester: UserInfo {
            username: args.user.clone(),
            groups: args.groups.clone(),
        },
        now,
    };
    let judged = match single_change {
        Some((object, old_object, operation)) => {
            let path = args
                .object
                .first()
                .map(PathBuf::as_path)
                .unwrap_or(Path::new(""));
            let namespace = resolve_namespace(path, &object, setting.namespace_name.clone())?;
            vec![judge(
                args,
                &setting,
                &object,
                old_object.as_ref(),
                operation,
                &namespace,
            )?]
        }
        None => judge_set(args, &setting, objects)?,
    };
    let reports: Vec<&output::CheckReport> = judged.iter().map(|j| &j.report).collect();
    let rendered = match args.output {
        OutputFormat::Text if single => judged[0].text.clone(),
        OutputFormat::Text => {
            let mut text: String = judged.iter().map(|j| format!("{}\n", j.text)).collect();
            let allowed = reports.iter().filter(|r| r.allowed).count();
            text.push_str(&format!(
                "{} workloads: {allowed} allowed, {} denied or waiting for approval\n",
                reports.len(),
                reports.len() - allowed
            ));
            text
        }
        // SPEC §10's one object for one --object; a list of them for a manifest set.
        OutputFormat::Json if single => json_text(&reports[0])?,
        OutputFormat::Json => json_text(&reports)?,
        OutputFormat::Junit => junit::suite(&reports),
    };
    print!("{rendered}");
    let fails = |report: &&output::CheckReport| match args.fail_on {
        FailOn::Any => !report.allowed,
        FailOn::Denied => report.verdict == "Denied",
    };
    Ok(ExitCode::from(if reports.iter().any(fails) {
        EXIT_DENIED
    } else {
        EXIT_ALLOWED
    }))
}

fn json_text<T: serde::Serialize>(value: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(value)
        .map(|text| crate::core::inert::json_output(&text).into_owned() + "\n")
        .map_err(|e| CliError::Output(format!("cannot render the result: {e}")))
}

/// SPEC §10: one `--object` (`object`, a file's only document), optionally its
/// `--old-object`, and the operation.
fn single_change(
    args: &CheckArgs,
    object: &Value,
) -> Result<(Value, Option<Value>, Operation), CliError> {
    let old_object = match &args.old_object {
        Some(path) => {
            let old = load_one_object(path)?;
            same_object(path, &old, object)?;
            Some(old)
        }
        None => None,
    };
    let operation = match (args.operation, &old_object) {
        (Some(OperationArg::Create), Some(_)) => {
            return Err(CliError::Flag {
                flag: "--operation",
                message: "CREATE cannot have an --old-object".into(),
            });
        }
        (Some(OperationArg::Create), None) | (None, None) => Operation::Create,
        (Some(OperationArg::Update), _) | (None, Some(_)) => Operation::Update,
    };
    Ok((object.clone(), old_object, operation))
}

/// The one object in the file at `path`.
fn load_one_object(path: &Path) -> Result<Value, CliError> {
    let mut objects = manifest_set::load(path)?;
    match objects.as_slice() {
        [only] if only.is_whole_file() => Ok(objects.remove(0).object),
        _ => Err(InputError::new(
            path,
            None,
            format!("expected exactly one object, found {}", objects.len()),
        )
        .into()),
    }
}

/// A rendered manifest set: every workload in it, each an UPDATE of the object of the same
/// kind, namespace and name in `--old-object` (a manifest set too), else a CREATE.
fn judge_set(
    args: &CheckArgs,
    setting: &Setting,
    objects: Vec<manifest_set::Located>,
) -> Result<Vec<Judged>, CliError> {
    if args.operation.is_some() {
        return Err(CliError::Flag {
            flag: "--operation",
            message: "applies to a single --object; in a manifest set each workload is an UPDATE when --old-object has it, else a CREATE".into(),
        });
    }
    let key =
        |located: &manifest_set::Located| -> Result<(String, String, String, String), CliError> {
            let (group, kind) = group_kind(&located.object);
            let namespace = resolve_namespace(
                &located.file,
                &located.object,
                setting.namespace_name.clone(),
            )?;
            let name = located
                .object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Ok((group, kind, namespace, name))
        };
    let workload = |located: &manifest_set::Located| is_workload(&located.object);
    let mut olds = BTreeMap::new();
    if let Some(path) = &args.old_object {
        for located in manifest_set::load(path)?.into_iter().filter(workload) {
            olds.insert(key(&located)?, located.object);
        }
    }
    let objects: Vec<manifest_set::Located> = objects.into_iter().filter(workload).collect();
    if objects.is_empty() {
        return Err(InputError::new(
            args.object.first().map(PathBuf::as_path).unwrap_or(Path::new("")),
            None,
            "holds no workload (Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod or ReplicaSet) to judge",
        )
        .into());
    }
    let mut judged = Vec::new();
    for located in &objects {
        let key = key(located)?;
        let old = olds.get(&key);
        let operation = if old.is_some() {
            Operation::Update
        } else {
            Operation::Create
        };
        judged.push(judge(
            args,
            setting,
            &located.object,
            old,
            operation,
            &key.2,
        )?);
    }
    Ok(judged)
}

/// Decide one change exactly as the webhook would (nothing is created: a dry run).
fn judge(
    args: &CheckArgs,
    setting: &Setting,
    object: &Value,
    old_object: Option<&Value>,
    operation: Operation,
    namespace: &str,
) -> Result<Judged, CliError> {
    let request = ChangeRequest {
        operation,
        object,
        old_object,
        namespace,
        namespace_labels: &setting.namespace_labels,
        requester: &setting.requester,
        cluster_region: args.region.as_deref(),
        // Offline: evaluated like a real request, but nothing is created.
        dry_run: true,
    };
    let decision = decide(&DecisionInput {
        request,
        policies: &setting.policies,
        approvals: &setting.approvals,
        bindings: &setting.bindings,
        now: setting.now,
        validations: &ValidateOnTheSpot,
    });
    let summary = decision.summary(&request);
    let report = output::report(&decision, object, &summary);
    Ok(Judged {
        text: output::text(&decision, &report),
        report,
    })
}

/// Every ApprovalPolicy in the given files and directories; malformed or infeasible
/// policies are bad input, warnings go to stderr.
fn load_policies(paths: &[PathBuf]) -> Result<Vec<ApprovalPolicy>, CliError> {
    let api_version = format!("{GROUP}/{VERSION}");
    let mut policies = Vec::new();
    let mut names = BTreeSet::new();
    for path in paths {
        let before = policies.len();
        let files = input::expand(path)?;
        let is_file = files.len() == 1 && files[0] == *path;
        for file in files {
            let text = input::read(&file)?;
            let decoded = input::decode_all_checked::<ApprovalPolicy>(&file, &text, |document| {
                input::expect_kind(&file, document, &api_version, "ApprovalPolicy")
            })?;
            // An empty file would gate nothing and allow everything: surely a mistake.
            if decoded.is_empty() && is_file {
                return Err(InputError::new(&file, None, "holds no ApprovalPolicy").into());
            }
            for policy in decoded {
                let name = policy.metadata.name.clone().unwrap_or_default();
                if name.is_empty() {
                    return Err(InputError::new(&file, Some("metadata.name"), "missing").into());
                }
                if !names.insert(name.clone()) {
                    return Err(InputError::new(
                        &file,
                        Some("metadata.name"),
                        format!("policy {name:?} is given twice"),
                    )
                    .into());
                }
                let validation = validate_policy(&policy.spec);
                if let Some(error) = validation.errors.first() {
                    let also = match validation.errors.len() {
                        1 => String::new(),
                        n => format!(" (and {} more)", n - 1),
                    };
                    return Err(InputError::new(
                        &file,
                        Some(&error.field),
                        format!("policy {name} refused: {}{also}", error.message),
                    )
                    .into());
                }
                for warning in &validation.warnings {
                    eprintln!(
                        "countersign: warning: {}: policy {}: {}",
                        file.display(),
                        crate::core::inert::text(&name),
                        crate::core::inert::escaped_lines(warning)
                    );
                }
                policies.push(policy);
            }
        }
        if policies.len() == before {
            return Err(
                InputError::new(path, None, "holds no ApprovalPolicy in any of its files").into(),
            );
        }
    }
    Ok(policies)
}

fn load_approvals(paths: &[PathBuf]) -> Result<Vec<DeploymentApproval>, CliError> {
    let api_version = format!("{GROUP}/{VERSION}");
    let mut approvals = Vec::new();
    for path in paths {
        for file in input::expand(path)? {
            let text = input::read(&file)?;
            for document in input::documents(&file, &text)? {
                input::expect_kind(&file, &document, &api_version, "DeploymentApproval")?;
            }
            for approval in input::decode_all::<DeploymentApproval>(&file, &text)? {
                if approval
                    .metadata
                    .name
                    .as_deref()
                    .unwrap_or_default()
                    .is_empty()
                {
                    return Err(InputError::new(&file, Some("metadata.name"), "missing").into());
                }
                // A snapshot no policy could have (a TTL that never expires, an infeasible
                // level) makes the approval unusable; offline, that is bad input.
                let snapshot = validate_chain_snapshot(&approval.spec.policy.chain);
                if let Some(error) = snapshot.errors.first() {
                    return Err(InputError::new(
                        &file,
                        Some(&error.field),
                        format!(
                            "approval {} is unusable: {}",
                            approval.metadata.name.as_deref().unwrap_or_default(),
                            error.message
                        ),
                    )
                    .into());
                }
                approvals.push(approval);
            }
        }
    }
    Ok(approvals)
}

/// The RoleBindings and ClusterRoleBindings in the given files and directories, as single
/// objects or inside a `List` (what `kubectl get … -o yaml` prints).
fn load_bindings(paths: &[PathBuf]) -> Result<RoleBindingSnapshot, CliError> {
    let mut snapshot = RoleBindingSnapshot::default();
    for path in paths {
        for file in input::expand(path)? {
            let text = input::read(&file)?;
            for document in input::documents(&file, &text)? {
                let kind = document.get("kind").and_then(Value::as_str).unwrap_or("");
                if kind.ends_with("List") {
                    let items = document.get("items").and_then(Value::as_array);
                    let Some(items) = items else {
                        return Err(
                            InputError::new(&file, Some("items"), "a List needs items").into()
                        );
                    };
                    for (i, item) in items.iter().enumerate() {
                        add_binding(&file, item, &format!("items[{i}]"), &mut snapshot)?;
                    }
                } else {
                    add_binding(&file, &document, "", &mut snapshot)?;
                }
            }
        }
    }
    Ok(snapshot)
}

fn add_binding(
    file: &Path,
    object: &Value,
    at: &str,
    snapshot: &mut RoleBindingSnapshot,
) -> Result<(), CliError> {
    const RBAC: &str = "rbac.authorization.k8s.io/v1";
    let field = |name: &str| {
        if at.is_empty() {
            name.to_string()
        } else {
            format!("{at}.{name}")
        }
    };
    let kind = object.get("kind").and_then(Value::as_str);
    let version = object.get("apiVersion").and_then(Value::as_str);
    if version != Some(RBAC) {
        return Err(InputError::new(
            file,
            Some(&field("apiVersion")),
            format!("expected {RBAC}, found {}", version.unwrap_or("none")),
        )
        .into());
    }
    match kind {
        Some("RoleBinding") => {
            let binding: RoleBinding = input::decode_value(file, object, at)?;
            if binding
                .metadata
                .namespace
                .as_deref()
                .unwrap_or("")
                .is_empty()
            {
                return Err(InputError::new(
                    file,
                    Some(&field("metadata.namespace")),
                    "a RoleBinding needs its namespace: it grants the role there only",
                )
                .into());
            }
            snapshot.role_bindings.push(binding);
        }
        Some("ClusterRoleBinding") => {
            let binding: ClusterRoleBinding = input::decode_value(file, object, at)?;
            snapshot.cluster_role_bindings.push(binding);
        }
        other => {
            return Err(InputError::new(
                file,
                Some(&field("kind")),
                format!(
                    "expected RoleBinding or ClusterRoleBinding (or a List of them), found {}",
                    other.unwrap_or("no kind")
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// The text of `file` and its one document (`what` it should be, for the message).
fn single_document(file: &Path, what: &str) -> Result<(String, Value), CliError> {
    let text = input::read(file)?;
    let mut documents = input::documents(file, &text)?;
    if documents.len() != 1 {
        return Err(InputError::new(
            file,
            None,
            format!("expected exactly one {what}, found {}", documents.len()),
        )
        .into());
    }
    let document = documents.remove(0);
    Ok((text, document))
}

/// The old object must be the same object as the new one.
fn same_object(old_file: &Path, old: &Value, new: &Value) -> Result<(), CliError> {
    for (field, pointer) in [
        ("kind", "/kind"),
        ("metadata.name", "/metadata/name"),
        ("metadata.namespace", "/metadata/namespace"),
    ] {
        let (a, b) = (old.pointer(pointer), new.pointer(pointer));
        if a != b {
            return Err(InputError::new(
                old_file,
                Some(field),
                format!(
                    "the old object's {field} is {} but the new object's is {}",
                    a.map_or("unset".to_string(), Value::to_string),
                    b.map_or("unset".to_string(), Value::to_string)
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// The Namespace's name and labels, when a file is given.
fn load_namespace(
    file: Option<&Path>,
) -> Result<(Option<String>, BTreeMap<String, String>), CliError> {
    let Some(file) = file else {
        return Ok((None, BTreeMap::new()));
    };
    let (text, document) = single_document(file, "Namespace")?;
    input::expect_kind(file, &document, "v1", "Namespace")?;
    let mut namespaces = input::decode_all::<Namespace>(file, &text)?;
    let namespace = namespaces.remove(0);
    let name = namespace.metadata.name.filter(|n| !n.is_empty());
    if name.is_none() {
        return Err(InputError::new(file, Some("metadata.name"), "missing").into());
    }
    Ok((name, namespace.metadata.labels.unwrap_or_default()))
}

/// The target's namespace: the object's own, else the Namespace file's, else `default`.
fn resolve_namespace(
    object_file: &Path,
    object: &Value,
    from_file: Option<String>,
) -> Result<String, CliError> {
    let own = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str);
    match (own, from_file) {
        (Some(own), Some(other)) if own != other => Err(InputError::new(
            object_file,
            Some("metadata.namespace"),
            format!("is {own:?} but the --namespace file describes {other:?}"),
        )
        .into()),
        (Some(own), _) => Ok(own.to_string()),
        (None, Some(other)) => Ok(other),
        (None, None) => Ok("default".to_string()),
    }
}
