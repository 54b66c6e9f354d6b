//! `countersign audit verify`: reads the whole trail, the chain's record and the published
//! verifier key (or a pinned one), and checks the hash chain against itself, retention's
//! signed record and every signed checkpoint given (`core::audit::chain::verify`).
//! Exit status: 0 intact, 1 tampering found, 2 bad input, 3 cluster unreachable.

use std::path::PathBuf;
use std::process::ExitCode;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Resource};
use serde_json::{Value, json};

use super::CliError;
use super::cluster::{ClusterArgs, connect};
use super::show::{ShowFormat, print_object};
use crate::api::{AuditEntry, AuditEntrySpec, ChainLink};
use crate::cluster::chain::{PUBLIC_KEY_CONFIGMAP, RECORD_NAME, VERIFIER_KEY, record_of};
use crate::core::audit::chain::{Expected, Finding, Head, Listed, Verification, verify};
use crate::core::audit::note::{Verifier, parse_anchor, parse_checkpoint, split_notes};
use crate::core::inert;
use crate::install::DEFAULT_INSTALL_NAMESPACE;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Signed checkpoints to check the trail against: a file of one or more, as the
    /// checkpoint sink appends them (repeatable). The record's latest is checked as well.
    #[arg(long)]
    pub checkpoint: Vec<PathBuf>,
    /// The verifier key (NAME+KEYID+KEY) signatures must be made with. Default: the one
    /// published in ConfigMap countersign-audit-key; pin your own copy so a swapped key
    /// is caught.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
    /// Entries younger than this without a link are waiting for the leader to link them,
    /// not findings (e.g. `2m`).
    #[arg(long, default_value = "2m", value_parser = parse_grace)]
    pub grace: jiff::SignedDuration,
    /// The namespace countersign keeps its audit trail in.
    #[arg(long, env = "COUNTERSIGN_NAMESPACE", default_value = DEFAULT_INSTALL_NAMESPACE)]
    pub install_namespace: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: ShowFormat,
}

/// Exit status when tampering was found.
const EXIT_TAMPERED: u8 = 1;
/// Entries per page read.
const PAGE: u32 = 500;

pub async fn run(args: &VerifyArgs) -> Result<ExitCode, CliError> {
    // Files first: bad input is reported before the cluster is asked anything.
    let pinned = match &args.public_key {
        Some(path) => {
            Some(
                Verifier::parse(&read(path, "--public-key")?).map_err(|e| CliError::Flag {
                    flag: "--public-key",
                    message: format!("{}: {e}", path.display()),
                })?,
            )
        }
        None => None,
    };
    let mut outside: Vec<(String, String)> = Vec::new();
    for path in &args.checkpoint {
        let notes = split_notes(&read(path, "--checkpoint")?);
        if notes.is_empty() {
            return Err(CliError::Flag {
                flag: "--checkpoint",
                message: format!("{}: holds no signed note", path.display()),
            });
        }
        outside.extend(notes.into_iter().map(|n| (path.display().to_string(), n)));
    }

    let cluster = connect(&args.cluster).await?;
    let namespace = &args.install_namespace;
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), namespace);
    let mut notes: Vec<String> = Vec::new();
    let verifier = match pinned {
        Some(verifier) => Some(verifier),
        None => optional(
            maps.get_opt(PUBLIC_KEY_CONFIGMAP).await,
            "reading the published verifier key",
            &mut notes,
        )?
        .and_then(|map| map.data?.get(VERIFIER_KEY).cloned())
        .map(|key| {
            Verifier::parse(&key)
                .map_err(|e| CliError::Refused(format!("ConfigMap {PUBLIC_KEY_CONFIGMAP}: {e}")))
        })
        .transpose()?,
    };
    let record = optional(
        maps.get_opt(RECORD_NAME).await,
        "reading the audit chain's record",
        &mut notes,
    )?;
    let listed = list_trail(&cluster.client, namespace).await?;

    let mut findings: Vec<Finding> = Vec::new();
    let mut expected = Expected {
        grace: args.grace,
        now: Some(Timestamp::now()),
        ..Expected::default()
    };
    // Checkpoints from outside the cluster must be the key's: anything else is bad input.
    for (source, note) in &outside {
        let Some(verifier) = &verifier else {
            return Err(CliError::Flag {
                flag: "--checkpoint",
                message: "no verifier key to check it with (give --public-key)".into(),
            });
        };
        let checkpoint = verifier
            .open(note)
            .map_err(|e| e.to_string())
            .and_then(|text| parse_checkpoint(text).map_err(|e| e.to_string()))
            .map_err(|message| CliError::Flag {
                flag: "--checkpoint",
                message: format!("{source}: {message}"),
            })?;
        expected.checkpoints.push(checkpoint.head);
    }
    match record.as_ref().map(|map| (map, record_of(map))) {
        None => notes.push(format!(
            "no ConfigMap {RECORD_NAME}: the chain has not started, or its record was deleted"
        )),
        Some((_, None)) => notes.push(format!(
            "ConfigMap {RECORD_NAME} does not read as the chain's record"
        )),
        Some((_, Some(record))) => {
            expected.recorded_head = Some(record.head.clone());
            expected.claimed = record
                .claimed
                .iter()
                .map(|claimed| (claimed.name.clone(), claimed.link.clone()))
                .collect();
            if let Some(note) = &record.checkpoint {
                match opened(verifier.as_ref(), note, |t| {
                    parse_checkpoint(t).map(|c| c.head)
                }) {
                    Ok(head) => expected.checkpoints.push(head),
                    Err(why) => findings.push(Finding::Unsigned {
                        what: "the record's checkpoint".into(),
                        why,
                    }),
                }
            }
            if let Some(note) = &record.retention {
                match opened(verifier.as_ref(), note, |t| parse_anchor(t).map(|a| a.1)) {
                    Ok(anchor) => expected.anchor = Some(anchor),
                    Err(why) => findings.push(Finding::Unsigned {
                        what: "retention's record".into(),
                        why,
                    }),
                }
            }
        }
    }
    if verifier.is_none() {
        notes.push(format!(
            "no verifier key (ConfigMap {PUBLIC_KEY_CONFIGMAP}, or --public-key): checkpoints not checked"
        ));
    }
    let mut verification = verify(&listed, &expected);
    verification.findings.splice(0..0, findings);
    report(args.output, &verification, &expected, &notes)?;
    Ok(if verification.intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_TAMPERED)
    })
}

/// An object read if it may be: a refusal (no right to read it) is noted, and the trail
/// is verified without it; not reaching the cluster at all is exit 3.
fn optional<T>(
    read: Result<Option<T>, kube::Error>,
    what: &str,
    notes: &mut Vec<String>,
) -> Result<Option<T>, CliError> {
    match read {
        Ok(found) => Ok(found),
        Err(kube::Error::Api(status)) if (400..500).contains(&status.code) => {
            notes.push(format!("{what}: {}", status.message));
            Ok(None)
        }
        Err(error) => Err(CliError::Connect(format!("{what}: {error}"))),
    }
}

/// A duration of zero or more, such as `2m` or `0s`.
fn parse_grace(text: &str) -> Result<jiff::SignedDuration, String> {
    let duration: jiff::SignedDuration = text
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 2m or 30s"))?;
    if duration.is_negative() {
        return Err(format!("{text:?} must not be negative"));
    }
    Ok(duration)
}

fn read(path: &PathBuf, flag: &'static str) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::Flag {
        flag,
        message: format!("{}: {e}", path.display()),
    })
}

/// What a signed note in the record says, when `verifier` signed it.
fn opened<T>(
    verifier: Option<&Verifier>,
    note: &str,
    parse: impl Fn(&str) -> Result<T, crate::core::audit::note::NoteError>,
) -> Result<T, String> {
    let verifier = verifier.ok_or("no verifier key to check it with")?;
    let text = verifier.open(note).map_err(|e| e.to_string())?;
    parse(text).map_err(|e| e.to_string())
}

/// Every entry, as stored: read without the typed schema, so an entry edited into
/// something that no longer reads as one is reported, not a failure to list.
async fn list_trail(client: &kube::Client, namespace: &str) -> Result<Vec<Listed>, CliError> {
    let resource = ApiResource::erase::<AuditEntry>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let mut listed = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(PAGE);
        if let Some(token) = &page {
            params = params.continue_token(token);
        }
        let list = api
            .list(&params)
            .await
            // Not allowed to read the trail is no verdict on it: exit 3, as unreachable.
            .map_err(|e| CliError::Connect(format!("listing the audit trail: {e}")))?;
        for object in list.items {
            listed.push(listed_of(object));
        }
        match list.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(token) => page = Some(token),
            None => return Ok(listed),
        }
    }
}

fn listed_of(object: DynamicObject) -> Listed {
    let spec = object
        .data
        .get("spec")
        .cloned()
        .and_then(|spec| serde_json::from_value::<AuditEntrySpec>(spec).ok());
    let link = object
        .data
        .pointer("/status/link")
        .cloned()
        .and_then(|link| serde_json::from_value::<ChainLink>(link).ok());
    Listed {
        name: object.meta().name.clone().unwrap_or_default(),
        spec,
        link,
        created: object.meta().creation_timestamp.as_ref().map(|t| t.0),
    }
}

fn report(
    format: ShowFormat,
    verification: &Verification,
    expected: &Expected,
    notes: &[String],
) -> Result<(), CliError> {
    let checkpoints: Vec<&Head> = expected.checkpoints.iter().collect();
    if format != ShowFormat::Text {
        let mut value: Value =
            serde_json::to_value(verification).map_err(|e| CliError::Output(e.to_string()))?;
        value["intact"] = json!(verification.intact());
        value["checkpoints"] = json!(checkpoints);
        value["anchor"] = json!(expected.anchor);
        value["notes"] = json!(notes);
        return print_object(format, &value);
    }
    let mut out = String::new();
    if verification.intact() {
        let head = verification
            .head
            .as_ref()
            .map_or("none".to_string(), |h| format!("{} {}", h.sequence, h.hash));
        out.push_str(&format!(
            "OK: {} entries in the chain (from {}), head {head}\n",
            verification.entries, verification.first
        ));
    } else {
        out.push_str(&format!(
            "TAMPERED: {} finding(s)\n",
            verification.findings.len()
        ));
        for finding in &verification.findings {
            out.push_str(&format!("  {finding}\n"));
        }
    }
    if let Some(largest) = checkpoints.iter().map(|c| c.sequence).max() {
        out.push_str(&format!(
            "checked against {} signed checkpoint(s), the largest at {largest}\n",
            checkpoints.len()
        ));
    }
    if !verification.pending.is_empty() {
        out.push_str(&format!(
            "{} entries written moments ago are waiting for their link\n",
            verification.pending.len()
        ));
    }
    for note in notes {
        out.push_str(&format!("note: {note}\n"));
    }
    // Names come from the cluster: nothing reaches the terminal raw.
    print!("{}", inert::escaped_lines(&out));
    Ok(())
}
