//! Strict typed decoding: every document of a file as a Kubernetes or countersign type,
//! refusing unknown fields, with errors naming the field path (and the line, when the
//! YAML parser can tell it).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::manifest::all_documents;
use super::{InputError, without_path};

/// Decode every non-empty document of `text` as `T`, refusing unknown fields (errors carry
/// the line where the YAML tells it: [`decode_document`]).
pub fn decode_all<T: DeserializeOwned>(file: &Path, text: &str) -> Result<Vec<T>, InputError> {
    decode_all_checked(file, text, |_| Ok(()))
}

/// [`decode_all`], with `check` (such as [`expect_kind`]) run on every non-empty document
/// first; the text is parsed once.
pub fn decode_all_checked<T: DeserializeOwned>(
    file: &Path,
    text: &str,
    check: impl Fn(&Value) -> Result<(), InputError>,
) -> Result<Vec<T>, InputError> {
    let values = all_documents(file, text)?;
    for value in values.iter().filter(|value| !value.is_null()) {
        check(value)?;
    }
    let mut out = Vec::new();
    for (index, value) in values.iter().enumerate() {
        if value.is_null() {
            // An empty document (a trailing `---`) decodes as nothing.
            continue;
        }
        out.push(decode_document(file, text, index, value, "")?);
    }
    Ok(out)
}

/// Decode document `index` of `text` (counting empty documents too), already read as
/// `value`, strictly as `T`; `field_prefix` as in [`decode_value`].
///
/// Decoding runs on `value` (as kubectl would send it). When it fails, the same decoding
/// on the YAML itself usually fails at the same field, and its message carries the line
/// and column, so that one is reported.
pub fn decode_document<T: DeserializeOwned>(
    file: &Path,
    text: &str,
    index: usize,
    value: &Value,
    field_prefix: &str,
) -> Result<T, InputError> {
    match decode_strict(file, value, field_prefix) {
        Ok(decoded) => Ok(decoded),
        // An unknown field's message has no line to add.
        Err(error) if error.message == UNKNOWN_FIELD => Err(error),
        Err(error) => {
            // Parse again only now, to find the line.
            let document = yaml_serde::Deserializer::from_str(text).nth(index);
            let with_line = document.map(|d| decode_strict::<_, T>(file, d, field_prefix));
            Err(match with_line {
                Some(Err(with_line)) if with_line.field == error.field => with_line,
                _ => error,
            })
        }
    }
}

/// Decode one plain JSON value (e.g. an item of a `kind: List`) as `T`, refusing unknown
/// fields; `field_prefix` (such as `items[2]`) is put before the paths in messages.
pub fn decode_value<T: DeserializeOwned>(
    file: &Path,
    value: &Value,
    field_prefix: &str,
) -> Result<T, InputError> {
    decode_strict(file, value, field_prefix)
}

/// Check a document's `apiVersion` and `kind` before decoding it as that kind.
pub fn expect_kind(
    file: &Path,
    document: &Value,
    api_version: &str,
    kind: &str,
) -> Result<(), InputError> {
    let found_kind = document.get("kind").and_then(Value::as_str);
    if found_kind != Some(kind) {
        return Err(InputError::new(
            file,
            Some("kind"),
            format!(
                "expected {kind} ({api_version}), found {}",
                found_kind.map_or("no kind".to_string(), |k| k.to_string())
            ),
        ));
    }
    let found_version = document.get("apiVersion").and_then(Value::as_str);
    if found_version != Some(api_version) {
        return Err(InputError::new(
            file,
            Some("apiVersion"),
            format!(
                "expected {api_version} for kind {kind}, found {}",
                found_version.unwrap_or("none")
            ),
        ));
    }
    Ok(())
}

const UNKNOWN_FIELD: &str =
    "unknown field (check the spelling against `countersign crds` or the Kubernetes API)";

/// Decode as `T` from any deserializer, refusing unknown fields, with the field path.
fn decode_strict<'de, D, T>(file: &Path, document: D, field_prefix: &str) -> Result<T, InputError>
where
    D: serde::Deserializer<'de>,
    D::Error: std::fmt::Display,
    T: DeserializeOwned,
{
    let at = |field: &str| match (field_prefix, field) {
        ("", field) => field.to_string(),
        (prefix, "" | ".") => prefix.to_string(),
        (prefix, field) => format!("{prefix}.{field}"),
    };
    let mut unknown: Vec<String> = Vec::new();
    let mut record = |path: serde_ignored::Path| unknown.push(field_path(&path));
    let tracked = serde_ignored::Deserializer::new(document, &mut record);
    let result = serde_path_to_error::deserialize(tracked);
    // `apiVersion` and `kind` are checked by `expect_kind`; generated CRD types skip them.
    // An unknown field is reported first: it is the likely cause of a later error
    // (a misspelt required field shows up as both).
    if let Some(first) = unknown
        .iter()
        .find(|field| *field != "apiVersion" && *field != "kind")
    {
        return Err(InputError::new(file, Some(&at(first)), UNKNOWN_FIELD));
    }
    result.map_err(|e| {
        let field = e.path().to_string();
        let field = at(if field == "." { "" } else { &field });
        InputError::new(
            file,
            (!field.is_empty()).then_some(field.as_str()),
            without_path(&e.path().to_string(), e.inner()),
        )
    })
}

/// `spec.approval.levels[0].foo` for a serde_ignored path.
fn field_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        P::Map { parent, key } => {
            let parent = field_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            field_path(parent)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApprovalPolicy;

    fn decode(text: &str) -> Result<Vec<ApprovalPolicy>, String> {
        decode_all::<ApprovalPolicy>(Path::new("p.yaml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let head =
            "apiVersion: countersign.dev/v1alpha1\nkind: ApprovalPolicy\nmetadata:\n  name: p\n";
        let cases = [
            (
                "spec:\n  approval:\n    levels:\n      - name: l\n        approvers: [{user: a}]\n        minApprovals: many\n",
                "p.yaml: spec.approval.levels[0].minApprovals: invalid type: string \"many\", expected u32",
            ),
            (
                "spec:\n  approval:\n    levels:\n      - name: l\n        approvers: [{user: a, requierd: true}]\n",
                "p.yaml: spec.approval.levels[0].approvers[0].requierd: unknown field",
            ),
            ("spce: {}\n", "p.yaml: spce: unknown field"),
        ];
        for (body, expected) in cases {
            let message = decode(&format!("{head}{body}")).unwrap_err();
            assert!(message.starts_with(expected), "{message}");
        }
        let two = format!("{head}spec: {{}}\n---\n{head}spec: {{priority: 3}}\n---\n");
        assert_eq!(decode(&two).unwrap().len(), 2);
    }
}
