//! Normalise a changed object into its gated content and digest it (SPEC §2); what it
//! does for people is `core::change::summary`.

pub mod summary;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The workload kinds (group, kind) whose gated content is their `spec`.
pub const WORKLOAD_KINDS: &[(&str, &str)] = &[
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
];

/// Metadata fields the API server manages; they never belong to a change.
const SERVER_MANAGED_METADATA: &[&str] = &[
    "resourceVersion",
    "uid",
    "generation",
    "managedFields",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

/// The API group and kind of an object (`apps/v1` → `apps`; `v1` → the empty core group).
pub fn group_kind(object: &Value) -> (String, String) {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let group = api_group(api_version);
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    (group.to_string(), kind.to_string())
}

/// The group of an `apiVersion`: `apps/v1` → `apps`, `v1` → `` (the core group).
pub fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// Is this one of the built-in workload kinds?
pub fn is_workload(object: &Value) -> bool {
    let (group, kind) = group_kind(object);
    is_workload_kind(&group, &kind)
}

/// What the workload controllers make the workloads of: gated too when a person makes them
/// by hand (`kubectl run`, a hand-made ReplicaSet next to a gated Deployment), admitted
/// when a workload controller does (`core::admission::controllers`).
/// A ReplicationController is the ReplicaSet's predecessor: made by hand next to a gated
/// Deployment it would run any image, so it is gated like one.
pub const BUILDING_BLOCK_KINDS: &[(&str, &str)] = &[
    ("", "Pod"),
    ("apps", "ReplicaSet"),
    ("", "ReplicationController"),
];

/// Is (group, kind) one of the built-in workload kinds or what they are made of? Their
/// gated content is `spec`.
pub fn is_workload_kind(group: &str, kind: &str) -> bool {
    WORKLOAD_KINDS
        .iter()
        .chain(BUILDING_BLOCK_KINDS)
        .any(|(g, k)| *g == group && *k == kind)
}

/// Is (group, kind) a Pod or a ReplicaSet?
pub fn is_building_block(group: &str, kind: &str) -> bool {
    BUILDING_BLOCK_KINDS
        .iter()
        .any(|(g, k)| *g == group && *k == kind)
}

/// A SHA-256 over the canonical JSON of an object's gated content, shown as `sha256:<hex>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChangeDigest(String);

impl ChangeDigest {
    /// The digest of `object` with the `ignore_fields` pointers removed.
    ///
    /// A `serde_json::Value` cannot hold an infinite or NaN number (serde_json turns one
    /// into `null` while decoding, and `null` members are dropped from the gated content),
    /// so refusing `.inf` and `.nan` is the job of whichever shell parses the text: the
    /// CLI refuses them with the field's path; the webhook receives JSON, which has none.
    pub fn of(object: &Value, ignore_fields: &[String]) -> Self {
        let mut canonical = Vec::with_capacity(4096);
        match key_removals(object, ignore_fields) {
            Some(Gated::Null) => canonical.extend_from_slice(b"null"),
            Some(Gated::Subtree(root, removals)) => {
                let removals: Vec<&[String]> = removals.iter().map(Vec::as_slice).collect();
                write_gated(root, &removals, &mut canonical);
            }
            None => write_canonical(&gated_content(object, ignore_fields), &mut canonical),
        }
        let hash = Sha256::digest(&canonical);
        ChangeDigest(format!("sha256:{hash:x}"))
    }

    /// A digest as written in a DeploymentApproval: `sha256:` and 64 lowercase hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("sha256:")?;
        let well_formed = hex.len() == 64
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        well_formed.then(|| ChangeDigest(text.to_string()))
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first `len` hex characters, for names.
    pub fn short_hex(&self, len: usize) -> &str {
        let hex = self.0.trim_start_matches("sha256:");
        &hex[..len.min(hex.len())]
    }
}

impl std::fmt::Display for ChangeDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The gated content of an object as a subtree of it and the member paths to leave out,
/// for writing the digest without copying the object.
enum Gated<'a> {
    Null,
    Subtree(&'a Value, Vec<Vec<String>>),
}

/// [`gated_content`] as removals of object members, when that is all it does: every ignored
/// pointer is free of `*` and walks only through objects of `object` (removing an array
/// element shifts the ones after it, so those take the copying path). `None`: copy.
fn key_removals<'a>(object: &'a Value, ignore_fields: &[String]) -> Option<Gated<'a>> {
    let mut removals: Vec<Vec<String>> = Vec::with_capacity(ignore_fields.len() + 9);
    for pointer in ignore_fields {
        // A malformed pointer removes nothing.
        let Some(segments) = pointer_segments(pointer) else {
            continue;
        };
        if segments.iter().any(|s| s == "*") {
            return None;
        }
        let mut node = object;
        for (i, segment) in segments.iter().enumerate() {
            match node {
                Value::Array(_) => return None,
                Value::Object(map) if i + 1 < segments.len() => match map.get(segment) {
                    Some(child) => node = child,
                    None => break,
                },
                _ => break,
            }
        }
        removals.push(segments);
    }
    if is_workload(object) {
        if removals.iter().any(|r| r.len() == 1 && r[0] == "spec") {
            return Some(Gated::Null);
        }
        let Some(spec) = object.get("spec").filter(|spec| !spec.is_null()) else {
            return Some(Gated::Null);
        };
        let within_spec = removals
            .into_iter()
            .filter(|r| r.len() > 1 && r[0] == "spec")
            .map(|mut r| r.split_off(1))
            .collect();
        return Some(Gated::Subtree(spec, within_spec));
    }
    if object.get("metadata").is_some_and(|meta| meta.is_array()) {
        return None;
    }
    removals.push(vec!["status".to_string()]);
    removals.extend(
        SERVER_MANAGED_METADATA
            .iter()
            .map(|field| vec!["metadata".to_string(), field.to_string()]),
    );
    Some(Gated::Subtree(object, removals))
}

/// Visit an object's members in key order (UTF-8 bytes), without sorting when the map
/// already keeps them in order.
fn for_each_sorted(map: &serde_json::Map<String, Value>, mut visit: impl FnMut(&String, &Value)) {
    if map.keys().is_sorted() {
        map.iter().for_each(|(k, v)| visit(k, v));
    } else {
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort_unstable();
        keys.into_iter().for_each(|k| visit(k, &map[k]));
    }
}

/// The part of an object a change is judged on: for workload kinds the `spec`, otherwise
/// the object without `status` and server-managed metadata; minus the ignored pointers and
/// with `null` members dropped (absent and `null` mean the same to the API server).
pub fn gated_content(object: &Value, ignore_fields: &[String]) -> Value {
    let mut gated = if is_workload(object) {
        // Only `spec` is gated: copy just it, under its own key so that every pointer
        // (including `/*/…`) resolves exactly as it would in the whole object.
        let mut spec_only = Value::Object(
            object
                .get("spec")
                .map(|spec| ("spec".to_string(), spec.clone()))
                .into_iter()
                .collect(),
        );
        for pointer in ignore_fields {
            remove_pointer(&mut spec_only, pointer);
        }
        spec_only
            .as_object_mut()
            .and_then(|map| map.remove("spec"))
            .unwrap_or(Value::Null)
    } else {
        let mut whole = object.clone();
        for pointer in ignore_fields {
            remove_pointer(&mut whole, pointer);
        }
        if let Some(map) = whole.as_object_mut() {
            map.remove("status");
            if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                for field in SERVER_MANAGED_METADATA {
                    meta.remove(*field);
                }
            }
        }
        whole
    };
    drop_nulls(&mut gated);
    gated
}

fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Split a JSON pointer (RFC 6901) into unescaped segments; `None` when malformed.
pub fn pointer_segments(pointer: &str) -> Option<Vec<String>> {
    let rest = pointer.strip_prefix('/')?;
    rest.split('/')
        .map(|segment| {
            let mut out = String::new();
            let mut chars = segment.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return None,
                    }
                } else {
                    out.push(c);
                }
            }
            Some(out)
        })
        .collect()
}

/// Remove what a JSON pointer names; a `*` segment stands for every array element or
/// object member. A pointer that names nothing removes nothing.
pub fn remove_pointer(value: &mut Value, pointer: &str) {
    if let Some(segments) = pointer_segments(pointer) {
        remove_segments(value, &segments);
    }
}

fn remove_segments(value: &mut Value, segments: &[String]) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    if rest.is_empty() {
        match value {
            Value::Object(map) if first == "*" => map.clear(),
            Value::Object(map) => {
                map.remove(first);
            }
            Value::Array(items) if first == "*" => items.clear(),
            Value::Array(items) => {
                if let Ok(index) = first.parse::<usize>()
                    && index < items.len()
                {
                    items.remove(index);
                }
            }
            _ => {}
        }
        return;
    }
    match value {
        Value::Object(map) if first == "*" => {
            map.values_mut().for_each(|v| remove_segments(v, rest))
        }
        Value::Object(map) => {
            if let Some(child) = map.get_mut(first) {
                remove_segments(child, rest);
            }
        }
        Value::Array(items) if first == "*" => {
            items.iter_mut().for_each(|v| remove_segments(v, rest))
        }
        Value::Array(items) => {
            if let Some(child) = first.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                remove_segments(child, rest);
            }
        }
        _ => {}
    }
}

/// Compact JSON with object keys sorted (by UTF-8 bytes) at every depth, and numbers in
/// one form per value (see [`canonical_number`]), so that equal values digest equally.
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::with_capacity(1024);
    write_canonical(value, &mut out);
    // Only JSON text was written: valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    write_json(value, None, out)
}

/// Canonical JSON of `value` without the members `removals` name and without `null`
/// members (as [`gated_content`] drops them).
fn write_gated(value: &Value, removals: &[&[String]], out: &mut Vec<u8>) {
    write_json(value, Some(removals), out)
}

/// Canonical JSON of `value` ([`canonical_json`]); with `gated` removals, written as
/// [`write_gated`] says.
fn write_json(value: &Value, gated: Option<&[&[String]]>, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            out.push(b'{');
            let mut first = true;
            for_each_sorted(map, |key, member| {
                let below: Option<Vec<&[String]>> = match gated {
                    None => None,
                    Some(_) if member.is_null() => return,
                    Some(removals) => {
                        let below: Vec<&[String]> = removals
                            .iter()
                            .filter(|r| r.first() == Some(key))
                            .map(|r| &r[1..])
                            .collect();
                        if below.iter().any(|r| r.is_empty()) {
                            return;
                        }
                        Some(below)
                    }
                };
                if !first {
                    out.push(b',');
                }
                first = false;
                write_string(key, out);
                out.push(b':');
                write_json(member, below.as_deref(), out);
            });
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(item, gated.map(|_| &[][..]), out);
            }
            out.push(b']');
        }
        Value::Number(number) => out.extend_from_slice(canonical_number(number).as_bytes()),
        Value::String(text) => write_string(text, out),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Null => out.extend_from_slice(b"null"),
    }
}

/// A JSON string literal, escaped as serde_json escapes it.
fn write_string(text: &str, out: &mut Vec<u8>) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// One text per numeric value, in the style of RFC 8785 (JCS): `1.0`, `1` and `1e0` are
/// all `1`; `1.50` is `1.5`; `-0` is `0`; other fractions and large or tiny magnitudes are
/// the shortest text that reads back as the same IEEE-754 double, laid out as ECMAScript's
/// `Number.prototype.toString` does (`0.000001`, `1e-7`, `1e+21`).
///
/// One deliberate difference from JCS: an integer that fits in 64 bits keeps its exact
/// digits, even beyond 2^53 where a double cannot hold it (JCS would round
/// `9007199254740993` to `9007199254740992`). Kubernetes integers are int64, and two
/// different int64 values must not digest alike. An integral double inside the 64-bit
/// range is written as that exact integer too, so `2^60` written as `1152921504606846976`
/// or as `1.152921504606846976e18` digests alike.
pub fn canonical_number(number: &serde_json::Number) -> String {
    if let Some(n) = number.as_u64() {
        return n.to_string();
    }
    if let Some(n) = number.as_i64() {
        return n.to_string();
    }
    match number.as_f64() {
        Some(x) => canonical_double(x),
        // Only with serde_json's arbitrary precision, which this crate does not enable.
        None => number.to_string(),
    }
}

/// 2^63 and 2^64 as doubles: the bounds of the 64-bit integer range.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

fn canonical_double(x: f64) -> String {
    if x == 0.0 {
        // Also -0.
        return "0".to_string();
    }
    if !x.is_finite() {
        // A `Number` is always finite; say `null` as serde_json would, to be total.
        return "null".to_string();
    }
    if x.fract() == 0.0 {
        if (0.0..TWO_POW_64).contains(&x) {
            return (x as u64).to_string();
        }
        if (-TWO_POW_63..0.0).contains(&x) {
            return (x as i64).to_string();
        }
    }
    // `{:e}` gives the shortest round-trip digits: `1.5e-7`, `1e21`, `-1.25e0`.
    let scientific = format!("{x:e}");
    let (negative, unsigned) = match scientific.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, scientific.as_str()),
    };
    let Some((mantissa, exponent)) = unsigned.split_once('e') else {
        return x.to_string();
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return x.to_string();
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    // ECMAScript's n: the position of the decimal point relative to the digits.
    let k = digits.len() as i32;
    let n = exponent + 1;
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).unsigned_abs().to_string());
    }
    out
}

/// The pod spec inside a workload (or a Pod), where containers live.
pub fn pod_spec(object: &Value) -> Option<&Value> {
    let (_, kind) = group_kind(object);
    match kind.as_str() {
        "Pod" => object.get("spec"),
        "CronJob" => object.pointer("/spec/jobTemplate/spec/template/spec"),
        _ => object.pointer("/spec/template/spec"),
    }
}

/// Every container of a pod spec (init, regular, ephemeral) as (list name, container).
pub fn containers(pod_spec: &Value) -> Vec<(&'static str, &Map<String, Value>)> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(|list| {
            pod_spec
                .get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .map(move |c| (list, c))
        })
        .collect()
}

/// A reference to `object` (in `namespace`), for Events and entries.
pub fn object_reference(
    object: &Value,
    namespace: &str,
) -> k8s_openapi::api::core::v1::ObjectReference {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: text("/apiVersion"),
        kind: text("/kind"),
        name: text("/metadata/name"),
        namespace: Some(namespace.to_string()),
        uid: text("/metadata/uid"),
        ..Default::default()
    }
}

/// Is `object` a Kubernetes object: a JSON object whose metadata decodes? The core reads
/// objects as JSON; one that is not is refused with the reason rather than judged.
pub fn readable_object(object: &Value) -> Result<(), String> {
    if !object.is_object() {
        return Err("it is not a JSON object".into());
    }
    let metadata = object.get("metadata").unwrap_or(&Value::Null);
    <k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta as serde::Deserialize>::deserialize(
        metadata,
    )
    .map(|_| ())
    .map_err(|e| format!("metadata: {e}"))
}

/// "Kind namespace/name" for messages.
pub fn object_ref(object: &Value) -> String {
    let (_, kind) = group_kind(object);
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    match object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
    {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

#[cfg(test)]
mod digest_equivalence {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The digest as `gated_content` defines it: copy, remove, drop nulls, write.
    fn by_copy(object: &Value, ignore: &[String]) -> String {
        let canonical = canonical_json(&gated_content(object, ignore));
        format!("sha256:{:x}", Sha256::digest(canonical.as_bytes()))
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("spec".to_string()),
            Just("metadata".to_string()),
            Just("a".to_string()),
            Just("b".to_string()),
            Just("0".to_string()),
            Just("1".to_string()),
            Just("*".to_string()),
            Just("uid".to_string()),
        ]
    }

    fn tree() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..3).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map(segment(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Writing the digest without copying gives exactly the digest of the copy, for
        /// any object and any ignored pointers (wildcards, array indices, missing paths).
        #[test]
        fn the_streamed_digest_is_the_copied_one(
            body in tree(),
            workload in any::<bool>(),
            pointers in prop::collection::vec(prop::collection::vec(segment(), 0..4), 0..4),
        ) {
            let mut object = match body {
                Value::Object(map) => Value::Object(map),
                other => json!({ "spec": other }),
            };
            if workload {
                object["apiVersion"] = json!("apps/v1");
                object["kind"] = json!("Deployment");
            } else {
                object["apiVersion"] = json!("v1");
                object["kind"] = json!("ConfigMap");
            }
            let ignore: Vec<String> = pointers
                .iter()
                .map(|segments| format!("/{}", segments.join("/")))
                .collect();
            let streamed = ChangeDigest::of(&object, &ignore);
            prop_assert_eq!(streamed.as_str(), by_copy(&object, &ignore));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(image: &str, replicas: u32) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "1"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image}]}
                }
            }
        })
    }

    fn default_ignore() -> Vec<String> {
        vec!["/spec/replicas".to_string()]
    }

    #[test]
    fn digest_is_stable_under_key_order_and_whitespace() {
        let compact = deployment("nginx:1.25", 2);
        let reordered: Value = serde_json::from_str(
            r#"{ "spec": { "template": { "spec": { "containers": [ { "image": "nginx:1.25", "name": "web" } ] },
                 "metadata": { "labels": { "app": "web" } } },
                 "selector": { "matchLabels": { "app": "web" } }, "replicas": 2 },
               "metadata": { "namespace": "shop", "name": "web" },
               "kind": "Deployment", "apiVersion": "apps/v1" }"#,
        )
        .unwrap();
        assert_eq!(
            ChangeDigest::of(&compact, &default_ignore()),
            ChangeDigest::of(&reordered, &default_ignore())
        );
    }

    #[test]
    fn digest_ignores_replicas_metadata_status_and_nulls() {
        let base = deployment("nginx:1.25", 2);
        let mut variant = deployment("nginx:1.25", 7);
        variant["metadata"]["resourceVersion"] = json!("99");
        variant["status"] = json!({"readyReplicas": 7});
        variant["spec"]["template"]["spec"]["nodeSelector"] = Value::Null;
        assert_eq!(
            ChangeDigest::of(&base, &default_ignore()),
            ChangeDigest::of(&variant, &default_ignore())
        );
    }

    #[test]
    fn defaulted_but_unchanged_fields_do_not_change_the_digest() {
        // Both old and new as the API server hands them over: defaults filled in identically.
        let mut old = deployment("nginx:1.25", 2);
        let mut new = deployment("nginx:1.25", 3);
        for object in [&mut old, &mut new] {
            object["spec"]["strategy"] = json!({"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
            object["spec"]["revisionHistoryLimit"] = json!(10);
            object["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] =
                json!("/dev/termination-log");
        }
        assert_eq!(
            ChangeDigest::of(&old, &default_ignore()),
            ChangeDigest::of(&new, &default_ignore())
        );
    }

    #[test]
    fn any_image_change_changes_the_digest() {
        let cases = [
            ("nginx:1.25", "nginx:1.26"),
            (
                "nginx:1.25",
                "nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ),
            ("nginx:1.25", "registry.example.com/nginx:1.25"),
            ("nginx:1.25", "nginx:1.25 "),
        ];
        for (before, after) in cases {
            assert_ne!(
                ChangeDigest::of(&deployment(before, 2), &default_ignore()),
                ChangeDigest::of(&deployment(after, 2), &default_ignore()),
                "{before} -> {after}"
            );
        }
    }

    #[test]
    fn replicas_count_when_not_ignored() {
        assert_ne!(
            ChangeDigest::of(&deployment("a", 1), &[]),
            ChangeDigest::of(&deployment("a", 2), &[])
        );
    }

    #[test]
    fn digest_format_is_sha256_hex() {
        let digest = ChangeDigest::of(&deployment("a", 1), &[]);
        let hex = digest.as_str().strip_prefix("sha256:").unwrap();
        assert_eq!(hex.len(), 64);
        assert!(
            hex.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let value = json!({"b": {"z": 1, "a": [ {"y": true, "x": null} ]}, "a": "s"});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":"s","b":{"a":[{"x":null,"y":true}],"z":1}}"#
        );
    }

    #[test]
    fn numbers_have_one_canonical_form() {
        let number = |text: &str| -> Value { serde_json::from_str(text).unwrap() };
        let cases = [
            // (JSON text, canonical text)
            ("1", "1"),
            ("1.0", "1"),
            ("1e0", "1"),
            ("1e2", "100"),
            ("1E+2", "100"),
            ("100.000", "100"),
            ("1.50", "1.5"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("0.0", "0"),
            ("-1.0", "-1"),
            ("0.1", "0.1"),
            ("-2.5", "-2.5"),
            ("0.000001", "0.000001"),
            ("1e-7", "1e-7"),
            ("-1.5e-7", "-1.5e-7"),
            ("123456789.125", "123456789.125"),
            ("333333333.33333329", "333333333.3333333"),
            ("4.35", "4.35"),
            ("5e-324", "5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("1e21", "1e+21"),
            ("1e23", "1e+23"),
            // Beyond the 64-bit range but below 1e21: ECMAScript's digits, zero-padded.
            ("295147905179352830000.0", "295147905179352830000"),
            ("1e20", "100000000000000000000"),
            // Integers keep their exact digits, beyond 2^53 too.
            ("9007199254740993", "9007199254740993"),
            ("18446744073709551615", "18446744073709551615"),
            ("-9223372036854775808", "-9223372036854775808"),
            // Integral doubles inside the 64-bit range are that exact integer.
            ("9007199254740992.0", "9007199254740992"),
            ("1.152921504606846976e18", "1152921504606846976"),
            ("-9.223372036854775808e18", "-9223372036854775808"),
        ];
        for (text, expected) in cases {
            assert_eq!(canonical_json(&number(text)), expected, "{text}");
        }
    }

    #[test]
    fn equal_numbers_digest_equally() {
        let groups: [&[&str]; 5] = [
            &["1", "1.0", "1e0", "10e-1", "0.1e1"],
            &["420", "420.0", "4.2e2"],
            &["0", "-0", "0.0", "-0.0", "0e5"],
            &["1.5", "1.50", "15e-1"],
            &["1152921504606846976", "1152921504606846976.0"],
        ];
        for group in groups {
            let digests: Vec<ChangeDigest> = group
                .iter()
                .map(|text| {
                    let mut object = deployment("a", 1);
                    object["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] =
                        serde_json::from_str(text).unwrap();
                    ChangeDigest::of(&object, &[])
                })
                .collect();
            assert!(
                digests.windows(2).all(|w| w[0] == w[1]),
                "{group:?}: {digests:?}"
            );
        }
        let mut one = deployment("a", 1);
        one["spec"]["minReadySeconds"] = json!(1.0);
        let mut two = deployment("a", 1);
        two["spec"]["minReadySeconds"] = json!(1.000_000_1);
        assert_ne!(ChangeDigest::of(&one, &[]), ChangeDigest::of(&two, &[]));
        // Integers beyond 2^53 that one double cannot tell apart still differ.
        let mut a = deployment("a", 1);
        a["spec"]["big"] = json!(9_007_199_254_740_992_u64);
        let mut b = deployment("a", 1);
        b["spec"]["big"] = json!(9_007_199_254_740_993_u64);
        assert_ne!(ChangeDigest::of(&a, &[]), ChangeDigest::of(&b, &[]));
    }

    #[test]
    fn non_workload_kinds_digest_the_object_without_server_fields() {
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "uid": "1", "managedFields": []}, "data": {"k": "v"}});
        let b = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "uid": "2", "generation": 4}, "data": {"k": "v"}});
        let c = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"k": "w"}});
        assert_eq!(ChangeDigest::of(&a, &[]), ChangeDigest::of(&b, &[]));
        assert_ne!(ChangeDigest::of(&a, &[]), ChangeDigest::of(&c, &[]));
    }

    #[test]
    fn pointers_with_wildcards_and_escapes_are_removed() {
        let mut value = json!({"spec": {"a/b": 1, "list": [{"x": 1, "y": 2}, {"x": 3}]}});
        remove_pointer(&mut value, "/spec/a~1b");
        remove_pointer(&mut value, "/spec/list/*/x");
        assert_eq!(value, json!({"spec": {"list": [{"y": 2}, {}]}}));
        assert_eq!(
            pointer_segments("/a~0b/c~1d"),
            Some(vec!["a~b".into(), "c/d".into()])
        );
        assert_eq!(pointer_segments("no-slash"), None);
        assert_eq!(pointer_segments("/bad~2"), None);
    }
}
