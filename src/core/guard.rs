//! countersign's own webhook configurations as ground of the gate. The API server never
//! sends a ValidatingWebhookConfiguration or MutatingWebhookConfiguration to a webhook, so
//! nothing can refuse a change to them: the operator watches its two (both named
//! `countersign`), compares each with what countersign installs, and audits what differs.
//! This decides whether and how they differ, and what each audited step records.
//!
//! Only what changes what the API server sends, and how, counts: each webhook's rules,
//! selectors, match conditions, failure policy, endpoint, CA bundle and timeout. Labels and
//! annotations are not the gate's ground. Fields the API server fills in when left out are
//! compared with their defaults filled in on both sides, so an untouched configuration is
//! intact whichever way it was written.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value, json};

use crate::api::{AuditAction, AuditEntrySpec, AuditTarget, UserInfo};
use crate::core::audit::trail::{PlannedEntry, Recall, object_key};

/// The annotation on each configuration naming the countersign version that made it: the
/// chart writes its appVersion, `install::webhooks` this build's version.
pub const VERSION_ANNOTATION: &str = "countersign.dev/version";

/// This build's version, as it annotates the configurations it makes.
pub const OWN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version a configuration says made it, when that is a newer countersign than `own`
/// (semantic versioning: a chart applied before its image runs, replicas of the next
/// version rolling out). Such a configuration is the newer version's to guard: this one
/// neither restores nor injects into it, which would undo the upgrade, and records the
/// change as the newer version's. An annotation that is no version, or none, is not newer:
/// writing garbage there does not make countersign look away.
pub fn made_by_newer(configuration: &Value, own: &str) -> Option<semver::Version> {
    let own = semver::Version::parse(own).ok()?;
    let claimed = configuration
        .get("metadata")?
        .get("annotations")?
        .get(VERSION_ANNOTATION)?
        .as_str()?;
    semver::Version::parse(claimed.trim())
        .ok()
        .filter(|claimed| *claimed > own)
}

/// Which of the two configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigurationKind {
    Validating,
    Mutating,
}

impl ConfigurationKind {
    pub fn kind(self) -> &'static str {
        match self {
            ConfigurationKind::Validating => "ValidatingWebhookConfiguration",
            ConfigurationKind::Mutating => "MutatingWebhookConfiguration",
        }
    }

    fn word(self) -> &'static str {
        match self {
            ConfigurationKind::Validating => "validating",
            ConfigurationKind::Mutating => "mutating",
        }
    }
}

/// How the configuration in the cluster stands against the one countersign installs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drift {
    Intact,
    /// Each difference, as a person reads it (`workloads.countersign.dev: failurePolicy
    /// "Fail" → "Ignore"`).
    Changed(Vec<String>),
    /// There is no such configuration.
    Missing,
}

/// Compare the configuration in the cluster (`None`: there is none) with the expected one.
/// Both are whole objects as JSON; only their `webhooks` are compared, by name.
pub fn drift(kind: ConfigurationKind, expected: &Value, observed: Option<&Value>) -> Drift {
    let Some(observed) = observed else {
        return Drift::Missing;
    };
    let expected = hooks_by_name(kind, expected);
    let observed = hooks_by_name(kind, observed);
    let mut differences = Vec::new();
    for (name, want) in &expected {
        match observed.get(name) {
            None => differences.push(format!("webhook {name} removed")),
            Some(have) => compare(name, "", want, have, &mut differences),
        }
    }
    for name in observed.keys().filter(|name| !expected.contains_key(*name)) {
        differences.push(format!("webhook {name} added"));
    }
    if differences.is_empty() {
        Drift::Intact
    } else {
        Drift::Changed(differences)
    }
}

/// The CA bundle countersign keeps, put into the configuration in the cluster.
#[derive(Debug)]
pub struct CaInjection {
    /// Sets `clientConfig.caBundle` of each webhook named in `hooks`, guarded by the
    /// configuration's resourceVersion.
    pub patch: json_patch::Patch,
    /// The webhooks whose bundle differed, in the configuration's order.
    pub hooks: Vec<String>,
}

/// When a webhook of countersign's (by name) carries another CA bundle than the expected
/// one (the bundle countersign keeps itself was renewed, or is not injected yet): the
/// patch that sets each such bundle, and nothing else. `None` when every bundle is right.
///
/// Whatever else differs: until the bundle is right the API server cannot call the
/// webhook, and recording any other difference (an AuditEntry, admitted through the
/// webhook) waits on that; the other differences are audited, and restored if asked, once
/// the bundle is in. A bundle is only ever set to countersign's own CA, so an injection
/// never lets the API server trust anyone new.
pub fn ca_bundle_injection(expected: &Value, observed: &Value) -> Option<CaInjection> {
    let bundles: BTreeMap<&str, &Value> = expected
        .get("webhooks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|hook| {
            let name = hook.get("name")?.as_str()?;
            let bundle = hook.pointer("/clientConfig/caBundle")?;
            Some((name, bundle))
        })
        .collect();
    let mut operations = Vec::new();
    let mut hooks = Vec::new();
    let observed_hooks = observed.get("webhooks")?.as_array()?;
    for (index, hook) in observed_hooks.iter().enumerate() {
        let Some(name) = hook.get("name").and_then(Value::as_str) else {
            continue;
        };
        let Some(bundle) = bundles.get(name) else {
            continue;
        };
        // A webhook without a clientConfig object is not one the API server took.
        if !hook.get("clientConfig").is_some_and(Value::is_object) {
            continue;
        }
        if hook.pointer("/clientConfig/caBundle") != Some(*bundle) {
            operations.push(json!({
                "op": "add",
                "path": format!("/webhooks/{index}/clientConfig/caBundle"),
                "value": bundle,
            }));
            hooks.push(name.to_string());
        }
    }
    if operations.is_empty() {
        return None;
    }
    let version = observed.pointer("/metadata/resourceVersion")?.clone();
    operations.insert(
        0,
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": version}),
    );
    let patch = serde_json::from_value(Value::Array(operations)).ok()?;
    Some(CaInjection { patch, hooks })
}

/// Each webhook of a configuration by name, normalized (see [`normalized_hook`]). A webhook
/// without a name cannot pass the API server's validation; it is kept under `""`.
fn hooks_by_name(kind: ConfigurationKind, configuration: &Value) -> BTreeMap<String, Value> {
    configuration
        .get("webhooks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|hook| {
            let name = hook
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            (name, normalized_hook(kind, hook))
        })
        .collect()
}

/// A webhook with every null, empty list and empty object left out (each means the same as
/// absent), then the API server's defaults filled in where a field is absent.
fn normalized_hook(kind: ConfigurationKind, hook: &Value) -> Value {
    let mut hook = without_empties(hook).unwrap_or_else(|| Value::Object(Map::new()));
    let Some(fields) = hook.as_object_mut() else {
        return hook;
    };
    let mut default = |key: &str, value: Value| {
        fields.entry(key.to_string()).or_insert(value);
    };
    default("failurePolicy", Value::from("Fail"));
    default("matchPolicy", Value::from("Equivalent"));
    default("timeoutSeconds", Value::from(10));
    if kind == ConfigurationKind::Mutating {
        default("reinvocationPolicy", Value::from("Never"));
    }
    if let Some(rules) = fields.get_mut("rules").and_then(Value::as_array_mut) {
        for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
            rule.entry("scope").or_insert_with(|| Value::from("*"));
        }
    }
    if let Some(service) = fields
        .get_mut("clientConfig")
        .and_then(|c| c.get_mut("service"))
        .and_then(Value::as_object_mut)
    {
        service.entry("port").or_insert_with(|| Value::from(443));
    }
    hook
}

/// `value` without nulls, empty lists and empty objects, at every depth; `None` if nothing
/// is left.
fn without_empties(value: &Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Array(items) => {
            let items: Vec<Value> = items.iter().filter_map(without_empties).collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        Value::Object(fields) => {
            let fields: Map<String, Value> = fields
                .iter()
                .filter_map(|(key, value)| without_empties(value).map(|v| (key.clone(), v)))
                .collect();
            (!fields.is_empty()).then_some(Value::Object(fields))
        }
        other => Some(other.clone()),
    }
}

/// The differences between two normalized values of webhook `hook` at `path` (`""`: the
/// webhook itself); objects are compared field by field, anything else as a whole.
fn compare(hook: &str, path: &str, want: &Value, have: &Value, differences: &mut Vec<String>) {
    if want == have {
        return;
    }
    match (want, have) {
        (Value::Object(want_fields), Value::Object(have_fields)) => {
            let mut keys: Vec<&String> = want_fields.keys().chain(have_fields.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let null = Value::Null;
                let sub = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                compare(
                    hook,
                    &sub,
                    want_fields.get(key).unwrap_or(&null),
                    have_fields.get(key).unwrap_or(&null),
                    differences,
                );
            }
        }
        _ if path.ends_with("caBundle") => differences.push(format!("{hook}: {path} replaced")),
        _ => differences.push(format!("{hook}: {path} {} → {}", shown(want), shown(have))),
    }
}

/// A value as compact JSON, cut short: an audit reason, not a dump.
fn shown(value: &Value) -> String {
    if value.is_null() {
        return "(none)".into();
    }
    let text = value.to_string();
    if text.chars().count() > 160 {
        format!("{}…", text.chars().take(160).collect::<String>())
    } else {
        text
    }
}

/// Who last wrote a configuration, as far as it tells: its latest `managedFields` entry's
/// field manager, operation and time. The user is not recorded in the object; the API
/// server's own audit log has it.
pub fn last_writer(configuration: &Value) -> Option<String> {
    configuration
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|field| {
            let time = field
                .get("time")
                .and_then(Value::as_str)?
                .parse::<Timestamp>()
                .ok()?;
            Some((time, field))
        })
        .max_by_key(|(time, _)| *time)
        .map(|(time, field)| {
            format!(
                "field manager {} ({}) at {time}",
                field
                    .get("manager")
                    .and_then(Value::as_str)
                    .unwrap_or("(none)"),
                field
                    .get("operation")
                    .and_then(Value::as_str)
                    .unwrap_or("?"),
            )
        })
}

/// The actor of a change to a webhook configuration: the API server does not say who, to
/// countersign (no webhook sees these objects).
pub const UNKNOWN_ACTOR: &str = "unknown";

/// How many differences a reason lists before it says how many more there are.
const LISTED_DIFFERENCES: usize = 12;

fn target(kind: ConfigurationKind, configuration: &Value) -> AuditTarget {
    AuditTarget {
        api_version: "admissionregistration.k8s.io/v1".into(),
        kind: kind.kind().into(),
        namespace: None,
        name: text_at(configuration, "/metadata/name"),
        uid: Some(text_at(configuration, "/metadata/uid")).filter(|uid| !uid.is_empty()),
    }
}

fn text_at(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `webhooks-<kind>-<name>-<uid prefix>`: the key of one configuration's entries.
fn configuration_key(kind: ConfigurationKind, configuration: &Value) -> String {
    object_key(
        &format!(
            "webhooks-{}-{}",
            kind.word(),
            text_at(configuration, "/metadata/name")
        ),
        &text_at(configuration, "/metadata/uid"),
    )
}

fn entry(
    name: String,
    action: AuditAction,
    actor: UserInfo,
    target: AuditTarget,
    reason: String,
    now: Timestamp,
) -> PlannedEntry {
    PlannedEntry {
        name,
        spec: AuditEntrySpec {
            time: Time(now),
            action,
            actor,
            target,
            change_digest: None,
            approval: None,
            policy: None,
            reason: Some(reason),
            caller: None,
        },
        recall: Recall::Whole,
    }
}

/// The entry of a configuration found changed, as of its `resourceVersion` (so the same
/// change is recorded once, however often it is seen):
/// `webhooks-<kind>-<name>-<uid prefix>-changed-<resourceVersion>`.
pub fn changed_entry(
    kind: ConfigurationKind,
    observed: &Value,
    differences: &[String],
    now: Timestamp,
) -> PlannedEntry {
    change(kind, observed, differences_read(observed, differences), now)
}

/// The entry of a configuration made by a newer countersign (see [`made_by_newer`]): the
/// same name as [`changed_entry`], saying whose it is and that this version leaves it be.
pub fn newer_version_entry(
    kind: ConfigurationKind,
    observed: &Value,
    newer: &semver::Version,
    own: &str,
    differences: &[String],
    now: Timestamp,
) -> PlannedEntry {
    let reason = format!(
        "made by countersign {newer}, newer than this {own}: left to it, neither restored nor injected; {}",
        differences_read(observed, differences)
    );
    change(kind, observed, reason, now)
}

fn change(
    kind: ConfigurationKind,
    observed: &Value,
    reason: String,
    now: Timestamp,
) -> PlannedEntry {
    entry(
        format!(
            "{}-changed-{}",
            configuration_key(kind, observed),
            text_at(observed, "/metadata/resourceVersion")
        ),
        AuditAction::WebhookConfigurationChanged,
        UserInfo::new(UNKNOWN_ACTOR, &[]),
        target(kind, observed),
        reason,
        now,
    )
}

/// The differences as a reason: the first [`LISTED_DIFFERENCES`], how many more, and the
/// last writer.
fn differences_read(observed: &Value, differences: &[String]) -> String {
    let mut reason = differences
        .iter()
        .take(LISTED_DIFFERENCES)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if differences.len() > LISTED_DIFFERENCES {
        reason.push_str(&format!(
            "; and {} more",
            differences.len() - LISTED_DIFFERENCES
        ));
    }
    if let Some(writer) = last_writer(observed) {
        reason.push_str(&format!("; last written with {writer}"));
    }
    reason
}

/// The entry of a configuration seen deleted (`last_seen` is how it was):
/// `webhooks-<kind>-<name>-<uid prefix>-deleted`.
pub fn deleted_entry(kind: ConfigurationKind, last_seen: &Value, now: Timestamp) -> PlannedEntry {
    entry(
        format!("{}-deleted", configuration_key(kind, last_seen)),
        AuditAction::WebhookConfigurationDeleted,
        UserInfo::new(UNKNOWN_ACTOR, &[]),
        target(kind, last_seen),
        "deleted: the API server no longer sends what it named to countersign".into(),
        now,
    )
}

/// The entry of a configuration found missing when the operator started watching (it was
/// never seen, so not known deleted): `webhooks-<kind>-<name>-missing-<unix seconds>`.
pub fn missing_entry(kind: ConfigurationKind, name: &str, now: Timestamp) -> PlannedEntry {
    entry(
        format!(
            "webhooks-{}-{name}-missing-{}",
            kind.word(),
            now.as_second()
        ),
        AuditAction::WebhookConfigurationDeleted,
        UserInfo::new(UNKNOWN_ACTOR, &[]),
        AuditTarget {
            api_version: "admissionregistration.k8s.io/v1".into(),
            kind: kind.kind().into(),
            namespace: None,
            name: name.into(),
            uid: None,
        },
        "missing when countersign started watching it".into(),
        now,
    )
}

/// The entry of a configuration countersign put back (`restored` as written):
/// `webhooks-<kind>-<name>-<uid prefix>-restored-<resourceVersion>`.
pub fn restored_entry(
    kind: ConfigurationKind,
    restored: &Value,
    by: &UserInfo,
    undone: &str,
    now: Timestamp,
) -> PlannedEntry {
    entry(
        format!(
            "{}-restored-{}",
            configuration_key(kind, restored),
            text_at(restored, "/metadata/resourceVersion")
        ),
        AuditAction::WebhookConfigurationRestored,
        by.clone(),
        target(kind, restored),
        format!("restored as countersign installs it ({undone})"),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::webhooks::{Endpoint, mutating_configuration, validating_configuration};
    use serde_json::json;

    fn installed(kind: ConfigurationKind) -> Value {
        let endpoint = Endpoint::Url("https://127.0.0.1:8443".into());
        match kind {
            ConfigurationKind::Validating => {
                serde_json::to_value(validating_configuration(&endpoint, b"CA", "cs"))
            }
            ConfigurationKind::Mutating => {
                serde_json::to_value(mutating_configuration(&endpoint, b"CA", "cs"))
            }
        }
        .expect("a configuration as JSON")
    }

    /// The configuration as the API server answers with it: defaults filled in, empties
    /// written out, metadata added.
    fn as_stored(kind: ConfigurationKind) -> Value {
        let mut stored = installed(kind);
        stored["metadata"]["uid"] = json!("0f1e2d3c-aaaa-bbbb-cccc-000000000000");
        stored["metadata"]["resourceVersion"] = json!("4711");
        stored["metadata"]["annotations"] = json!({ "cert-manager.io/inject-ca-from": "cs/ca" });
        for hook in stored["webhooks"].as_array_mut().expect("webhooks") {
            if hook.get("objectSelector").is_none() {
                hook["objectSelector"] = json!({});
            }
            if hook.get("namespaceSelector").is_none() {
                hook["namespaceSelector"] = json!({});
            }
            hook["matchConditions"] = hook.get("matchConditions").cloned().unwrap_or(json!([]));
        }
        stored
    }

    fn hook_mut<'a>(configuration: &'a mut Value, name: &str) -> &'a mut Value {
        configuration["webhooks"]
            .as_array_mut()
            .expect("webhooks")
            .iter_mut()
            .find(|h| h["name"] == name)
            .expect("the webhook")
    }

    fn array(value: &mut Value) -> &mut Vec<Value> {
        value.as_array_mut().expect("an array")
    }

    const WORKLOADS: &str = "workloads.countersign.dev";

    #[test]
    fn an_untouched_configuration_is_intact_whichever_way_it_was_written() {
        for kind in [ConfigurationKind::Validating, ConfigurationKind::Mutating] {
            let expected = installed(kind);
            assert_eq!(drift(kind, &expected, Some(&expected)), Drift::Intact);
            assert_eq!(
                drift(kind, &expected, Some(&as_stored(kind))),
                Drift::Intact,
                "{kind:?}"
            );
        }
        // Explicit defaults are the same as defaults left out.
        let kind = ConfigurationKind::Validating;
        let mut explicit = as_stored(kind);
        for hook in explicit["webhooks"].as_array_mut().expect("webhooks") {
            for rule in hook["rules"].as_array_mut().expect("rules") {
                if rule.get("scope").is_none() {
                    rule["scope"] = json!("*");
                }
            }
        }
        let mut implicit = installed(kind);
        for hook in implicit["webhooks"].as_array_mut().expect("webhooks") {
            hook.as_object_mut().expect("hook").remove("matchPolicy");
        }
        assert_eq!(drift(kind, &implicit, Some(&explicit)), Drift::Intact);
    }

    #[test]
    fn a_missing_configuration_is_missing() {
        let kind = ConfigurationKind::Mutating;
        assert_eq!(drift(kind, &installed(kind), None), Drift::Missing);
    }

    /// Each way an administrator (or an attacker with the right) would loosen the gate
    /// without deleting it, and what the audit says about it.
    #[test]
    fn every_loosening_of_the_gate_is_a_named_difference() {
        let kind = ConfigurationKind::Validating;
        type Edit = fn(&mut Value);
        let cases: &[(&str, Edit, &str)] = &[
            (
                "fail open",
                |c| hook_mut(c, WORKLOADS)["failurePolicy"] = json!("Ignore"),
                r#"workloads.countersign.dev: failurePolicy "Fail" → "Ignore""#,
            ),
            (
                "miss requests through another version",
                |c| hook_mut(c, "approvals.countersign.dev")["matchPolicy"] = json!("Exact"),
                r#"approvals.countersign.dev: matchPolicy "Equivalent" → "Exact""#,
            ),
            (
                "skip objects with a label",
                |c| {
                    hook_mut(c, WORKLOADS)["objectSelector"] = json!({
                        "matchExpressions": [{ "key": "skip", "operator": "DoesNotExist" }]
                    })
                },
                "workloads.countersign.dev: objectSelector (none) → ",
            ),
            (
                "skip a namespace",
                |c| {
                    array(&mut hook_mut(c, WORKLOADS)["namespaceSelector"]["matchExpressions"][0]["values"])
                        .push(json!("payments"));
                },
                "workloads.countersign.dev: namespaceSelector",
            ),
            (
                "drop a kind from the rules",
                |c| {
                    array(&mut hook_mut(c, WORKLOADS)["rules"]).remove(0);
                },
                "workloads.countersign.dev: rules",
            ),
            (
                "stop sending UPDATE",
                |c| hook_mut(c, WORKLOADS)["rules"][0]["operations"] = json!(["CREATE"]),
                "workloads.countersign.dev: rules",
            ),
            (
                "send to an always-allow server",
                |c| {
                    hook_mut(c, WORKLOADS)["clientConfig"]["url"] =
                        json!("https://allow-all.example/validate")
                },
                "workloads.countersign.dev: clientConfig.url",
            ),
            (
                "trust another CA",
                |c| hook_mut(c, WORKLOADS)["clientConfig"]["caBundle"] = json!("T1RIRVI="),
                "workloads.countersign.dev: clientConfig.caBundle replaced",
            ),
            (
                "let a user through by a match condition",
                |c| {
                    array(&mut hook_mut(c, WORKLOADS)["matchConditions"]).push(json!({
                        "name": "not-dave",
                        "expression": "request.userInfo.username != 'dave'"
                    }));
                },
                "workloads.countersign.dev: matchConditions",
            ),
            (
                "a timeout the webhook cannot meet",
                |c| hook_mut(c, WORKLOADS)["timeoutSeconds"] = json!(1),
                "workloads.countersign.dev: timeoutSeconds 10 → 1",
            ),
            (
                "remove a webhook",
                |c| {
                    array(&mut c["webhooks"]).retain(|h| h["name"] != "audit.countersign.dev");
                },
                "webhook audit.countersign.dev removed",
            ),
            (
                "add a webhook",
                |c| {
                    let mut extra = hook_mut(c, WORKLOADS).clone();
                    extra["name"] = json!("extra.example.com");
                    array(&mut c["webhooks"]).push(extra);
                },
                "webhook extra.example.com added",
            ),
        ];
        for (what, edit, said) in cases {
            let mut observed = as_stored(kind);
            edit(&mut observed);
            match drift(kind, &installed(kind), Some(&observed)) {
                Drift::Changed(differences) => assert!(
                    differences.iter().any(|d| d.contains(said)),
                    "{what}: {differences:?}"
                ),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn labels_and_annotations_are_not_ground() {
        let kind = ConfigurationKind::Mutating;
        let mut observed = as_stored(kind);
        observed["metadata"]["labels"] = json!({ "team": "platform" });
        observed["metadata"]["annotations"] = json!({ "note": "hello" });
        assert_eq!(
            drift(kind, &installed(kind), Some(&observed)),
            Drift::Intact
        );
    }

    #[test]
    fn entries_are_named_once_per_change_and_say_what_and_who_wrote_last() {
        let kind = ConfigurationKind::Validating;
        let mut observed = as_stored(kind);
        observed["metadata"]["managedFields"] = json!([
            { "manager": "countersign-local", "operation": "Apply", "time": "2026-11-24T10:00:00Z" },
            { "manager": "kubectl-patch", "operation": "Update", "time": "2026-11-24T10:05:00Z" },
        ]);
        let now: Timestamp = "2026-11-24T10:05:01Z".parse().expect("time");
        let differences = vec!["one".to_string(); LISTED_DIFFERENCES + 2];
        let changed = changed_entry(kind, &observed, &differences, now);
        assert_eq!(
            changed.name,
            "webhooks-validating-countersign-0f1e2d3c-changed-4711"
        );
        assert_eq!(
            changed.spec.action,
            AuditAction::WebhookConfigurationChanged
        );
        assert_eq!(changed.spec.actor.username, UNKNOWN_ACTOR);
        let reason = changed.spec.reason.unwrap_or_default();
        assert!(reason.contains("and 2 more"), "{reason}");
        assert!(
            reason.contains("kubectl-patch (Update) at 2026-11-24T10:05:00Z"),
            "{reason}"
        );
        assert_eq!(changed.spec.target.kind, "ValidatingWebhookConfiguration");
        assert_eq!(
            deleted_entry(kind, &observed, now).name,
            "webhooks-validating-countersign-0f1e2d3c-deleted"
        );
        assert_eq!(
            missing_entry(ConfigurationKind::Mutating, "countersign", now).name,
            format!("webhooks-mutating-countersign-missing-{}", now.as_second())
        );
        let by = UserInfo::new("system:serviceaccount:cs:countersign", &[]);
        let restored = restored_entry(kind, &observed, &by, "changed", now);
        assert_eq!(
            restored.name,
            "webhooks-validating-countersign-0f1e2d3c-restored-4711"
        );
        assert_eq!(restored.spec.actor, by);
    }

    #[test]
    fn hostile_shapes_do_not_panic() {
        let kind = ConfigurationKind::Validating;
        for observed in [
            json!({}),
            json!({ "webhooks": null }),
            json!({ "webhooks": "text" }),
            json!({ "webhooks": [1, null, { "name": 3 }, { "name": "x", "rules": "y" }] }),
        ] {
            let _ = drift(kind, &installed(kind), Some(&observed));
            let _ = last_writer(&observed);
        }
        assert_eq!(
            last_writer(&json!({ "metadata": { "managedFields": [{ "manager": "m" }] } })),
            None
        );
    }

    #[test]
    fn the_ca_bundle_is_injected_whatever_else_differs_and_nothing_else_is_touched() {
        for kind in [ConfigurationKind::Validating, ConfigurationKind::Mutating] {
            let expected = installed(kind);
            let mut empty = as_stored(kind);
            for hook in empty["webhooks"].as_array_mut().expect("webhooks") {
                hook["clientConfig"]
                    .as_object_mut()
                    .expect("clientConfig")
                    .remove("caBundle");
            }
            let all: Vec<String> = empty["webhooks"]
                .as_array()
                .expect("webhooks")
                .iter()
                .map(|h| h["name"].as_str().unwrap_or_default().to_string())
                .collect();
            let injection = ca_bundle_injection(&expected, &empty).expect("an injection");
            assert_eq!(injection.hooks, all, "{kind:?}: every hook, in order");
            let mut patched = empty.clone();
            json_patch::patch(&mut patched, &injection.patch).expect("applies");
            assert_eq!(drift(kind, &expected, Some(&patched)), Drift::Intact);
            // The resourceVersion guards it: a configuration changed meanwhile refuses it.
            let mut moved = empty.clone();
            moved["metadata"]["resourceVersion"] = json!("4712");
            assert!(json_patch::patch(&mut moved, &injection.patch).is_err());

            // Another CA on one hook: that hook alone.
            let mut other = as_stored(kind);
            other["webhooks"][0]["clientConfig"]["caBundle"] = json!("T1RIRVI=");
            let injection = ca_bundle_injection(&expected, &other).expect("an injection");
            assert_eq!(injection.hooks, all[..1]);

            assert!(
                ca_bundle_injection(&expected, &as_stored(kind)).is_none(),
                "intact: nothing to inject"
            );

            // A configuration loosened and without the CA (another version's, or an
            // attacker's): the bundles go in, and only they; the loosening stays for the
            // audit, and for a restore if asked.
            let mut loosened = empty.clone();
            loosened["webhooks"][0]["failurePolicy"] = json!("Ignore");
            loosened["webhooks"][0]["clientConfig"]["url"] = json!("https://allow-all.example");
            let mut extra = loosened["webhooks"][0].clone();
            extra["name"] = json!("extra.example.com");
            extra["clientConfig"]["caBundle"] = json!("VEhFSVJT");
            array(&mut loosened["webhooks"]).push(extra);
            let injection = ca_bundle_injection(&expected, &loosened).expect("an injection");
            assert_eq!(
                injection.hooks, all,
                "not the hook that is not countersign's"
            );
            let mut patched = loosened.clone();
            json_patch::patch(&mut patched, &injection.patch).expect("applies");
            let Drift::Changed(left) = drift(kind, &expected, Some(&patched)) else {
                panic!("{kind:?}: still changed");
            };
            assert!(left.iter().all(|d| !d.contains("caBundle")), "{left:?}");
            for said in [
                "failurePolicy",
                "clientConfig.url",
                "webhook extra.example.com added",
            ] {
                assert!(left.iter().any(|d| d.contains(said)), "{said}: {left:?}");
            }
            assert_eq!(
                patched["webhooks"][all.len()]["clientConfig"]["caBundle"],
                "VEhFSVJT"
            );

            for hostile in [
                json!({}),
                json!({"webhooks": [{"name": 1}]}),
                json!({"webhooks": "x"}),
                json!({"webhooks": [{"name": WORKLOADS, "clientConfig": "x"}]}),
                json!({"webhooks": [{"name": WORKLOADS}]}),
            ] {
                assert!(
                    ca_bundle_injection(&expected, &hostile).is_none(),
                    "{hostile}"
                );
            }
            // No resourceVersion to guard the patch with: nothing.
            let mut unversioned = empty.clone();
            unversioned["metadata"]
                .as_object_mut()
                .expect("metadata")
                .remove("resourceVersion");
            assert!(ca_bundle_injection(&expected, &unversioned).is_none());
        }
    }

    #[test]
    fn only_a_configuration_made_by_a_newer_version_is_left_to_it() {
        let annotated = |version: Value| {
            let mut configuration = as_stored(ConfigurationKind::Validating);
            configuration["metadata"]["annotations"][VERSION_ANNOTATION] = version;
            configuration
        };
        let newer = |version: Value, own: &str| {
            made_by_newer(&annotated(version), own).map(|v| v.to_string())
        };
        let cases: &[(Value, &str, Option<&str>)] = &[
            (json!("0.2.0"), "0.1.0", Some("0.2.0")),
            (json!("1.0.0"), "0.9.9", Some("1.0.0")),
            (json!(" 0.1.1 "), "0.1.0", Some("0.1.1")),
            // A release is newer than its own pre-release, which is newer than the last.
            (json!("0.2.0"), "0.2.0-rc.1", Some("0.2.0")),
            (json!("0.2.0-rc.1"), "0.1.0", Some("0.2.0-rc.1")),
            // The same version, or an older one: this version's to guard.
            (json!("0.1.0"), "0.1.0", None),
            (json!("0.0.9"), "0.1.0", None),
            (json!("0.2.0-rc.1"), "0.2.0", None),
            // Not a version: not a reason to look away.
            (json!("999"), "0.1.0", None),
            (json!("latest"), "0.1.0", None),
            (json!("v9.0.0"), "0.1.0", None),
            (json!(""), "0.1.0", None),
            (json!(9), "0.1.0", None),
            (json!({"major": 9}), "0.1.0", None),
            (Value::Null, "0.1.0", None),
            // This build's version unreadable: it never stands down.
            (json!("9.0.0"), "dev", None),
        ];
        for (claimed, own, want) in cases {
            assert_eq!(
                newer(claimed.clone(), own).as_deref(),
                *want,
                "{claimed} against {own}"
            );
        }
        assert_eq!(
            made_by_newer(&as_stored(ConfigurationKind::Mutating), "0.1.0"),
            None,
            "no annotation"
        );
        assert_eq!(
            made_by_newer(&json!({"metadata": {"annotations": "x"}}), "0.1.0"),
            None
        );
        // What countersign installs says this build's version.
        assert_eq!(
            installed(ConfigurationKind::Mutating)["metadata"]["annotations"][VERSION_ANNOTATION],
            OWN_VERSION
        );
    }

    #[test]
    fn a_newer_versions_change_is_recorded_once_as_its_own_not_as_tampering() {
        let kind = ConfigurationKind::Validating;
        let mut observed = as_stored(kind);
        observed["metadata"]["annotations"][VERSION_ANNOTATION] = json!("0.2.0");
        let now: Timestamp = "2026-12-05T10:00:00Z".parse().expect("time");
        let differences = vec!["webhook next.countersign.dev added".to_string()];
        let newer = semver::Version::new(0, 2, 0);
        let entry = newer_version_entry(kind, &observed, &newer, "0.1.0", &differences, now);
        assert_eq!(
            entry.name,
            changed_entry(kind, &observed, &differences, now).name
        );
        let reason = entry.spec.reason.unwrap_or_default();
        assert!(
            reason.starts_with(
                "made by countersign 0.2.0, newer than this 0.1.0: left to it, neither restored nor injected; webhook next.countersign.dev added"
            ),
            "{reason}"
        );
    }
}
