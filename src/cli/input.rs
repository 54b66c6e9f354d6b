//! Reading the files the CLI is given: YAML or JSON, one or more documents, decoded
//! strictly (unknown fields are errors) with messages that name the file and the field.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

/// A bad input: which file, which field (when known), and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), field.as_deref().map(|f| format!(": {f}")).unwrap_or_default())]
pub struct InputError {
    pub file: PathBuf,
    pub field: Option<String>,
    pub message: String,
}

impl InputError {
    pub fn new(file: &Path, field: Option<&str>, message: impl Into<String>) -> Self {
        InputError {
            file: file.to_path_buf(),
            field: field.map(str::to_string),
            message: message.into(),
        }
    }
}

/// One decoded document and where it came from.
#[derive(Debug)]
pub struct Document<T> {
    pub file: PathBuf,
    pub value: T,
}

/// The files a `FILE_OR_DIR` argument stands for: the file itself, or the `.yaml`, `.yml`
/// and `.json` files directly inside the directory, in name order.
pub fn expand(path: &Path) -> Result<Vec<PathBuf>, InputError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| InputError::new(path, None, format!("cannot read: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| InputError::new(path, None, format!("cannot list directory: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| InputError::new(path, None, format!("cannot list directory: {e}")))?;
        let file = entry.path();
        let manifest = file
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if manifest && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(InputError::new(
            path,
            None,
            "the directory holds no .yaml, .yml or .json files",
        ));
    }
    Ok(files)
}

/// The text of a file.
pub fn read(file: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(file)
        .map_err(|e| InputError::new(file, None, format!("cannot read: {e}")))
}

/// Every non-empty document of a file as plain JSON values (YAML errors carry their line).
pub fn documents(file: &Path, text: &str) -> Result<Vec<Value>, InputError> {
    let mut out = Vec::new();
    for document in yaml_serde::Deserializer::from_str(text) {
        let value: Value = serde_path_to_error::deserialize(document).map_err(|e| {
            let field = e.path().to_string();
            InputError::new(
                file,
                (field != ".").then_some(field.as_str()),
                format!(
                    "not valid YAML or JSON: {}",
                    without_path(&field, e.inner())
                ),
            )
        })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
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

/// Decode every non-empty document of `text` as `T`, refusing unknown fields.
/// Decoding runs on the YAML itself, so errors carry the line and column.
pub fn decode_all<T: DeserializeOwned>(file: &Path, text: &str) -> Result<Vec<T>, InputError> {
    let mut out = Vec::new();
    // Which documents are empty (a trailing `---`); they decode as nothing.
    let mut empty = Vec::new();
    for document in yaml_serde::Deserializer::from_str(text) {
        let value: Value = serde_path_to_error::deserialize(document).map_err(|e| {
            InputError::new(file, None, format!("not valid YAML or JSON: {}", e.inner()))
        })?;
        empty.push(value.is_null());
    }
    for (document, empty) in yaml_serde::Deserializer::from_str(text).zip(empty) {
        if empty {
            continue;
        }
        out.push(decode_strict(file, document, "")?);
    }
    Ok(out)
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
        return Err(InputError::new(
            file,
            Some(&at(first)),
            "unknown field (check the spelling against `countersign crds` or the Kubernetes API)",
        ));
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

/// yaml_serde already prefixes some messages with the path; say it once.
fn without_path(field: &str, error: &impl std::fmt::Display) -> String {
    let message = error.to_string();
    match message
        .strip_prefix(field)
        .and_then(|m| m.strip_prefix(": "))
    {
        Some(rest) => rest.to_string(),
        None => message,
    }
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

    #[test]
    fn yaml_syntax_errors_carry_the_line() {
        let message = documents(Path::new("x.yaml"), "a: [1, 2\nb: 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("x.yaml: a: not valid YAML or JSON"),
            "{message}"
        );
        assert!(message.contains("line"), "{message}");
    }
}
