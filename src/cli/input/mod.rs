//! Reading the files the CLI is given: YAML or JSON, one or more documents, decoded
//! strictly (unknown fields are errors) with messages that name the file and the field.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
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

/// The largest file read: 3 MiB, the Kubernetes API server's limit for a request body, so
/// no object it would take is refused.
pub const MAX_FILE_BYTES: u64 = 3 * 1024 * 1024;

/// The deepest nesting of flow collections (`[`, `{`) read. Kubernetes objects nest a
/// dozen levels; the YAML parser's time grows with the square of this depth.
pub const MAX_NESTING: usize = 100;

/// The text of a file, refusing one larger than [`MAX_FILE_BYTES`] without reading it all.
pub fn read(file: &Path) -> Result<String, InputError> {
    use std::io::Read;
    let cannot_read = |e: std::io::Error| InputError::new(file, None, format!("cannot read: {e}"));
    let handle = std::fs::File::open(file).map_err(cannot_read)?;
    let mut bytes = Vec::new();
    handle
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(InputError::new(
            file,
            None,
            format!(
                "larger than {MAX_FILE_BYTES} bytes (3 MiB, the Kubernetes API server's limit for a request); not read"
            ),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|e| InputError::new(file, None, format!("cannot read: not UTF-8 text: {e}")))
}

/// The first line where flow collections (`[`, `{`) nest deeper than [`MAX_NESTING`].
///
/// A linear pre-scan, run before the YAML parser, whose time grows with the square of the
/// depth (200 KB of `[` took seconds). It follows what the parser would see closely enough
/// to count only real collections: it skips comments, quoted scalars and block scalars
/// (`|`, `>`), and counts a bracket in block context only where a node may start (after
/// `:`, `-`, `?`, `,`, a tag or anchor, or at the start of a line), not inside plain text
/// such as `see [1]`. Block indentation is not counted: each level costs a line of
/// growing indentation, and the parser's own limit stops it early.
fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let blank = |b: u8| b == b' ' || b == b'\t';
    let eol = |b: u8| b == b'\n' || b == b'\r';
    let mut depth = 0usize;
    let mut line = 1usize;
    let mut i = 0usize;
    // At the start of a line: its indentation, and its content column (past `- `).
    let mut line_start = true;
    let mut indent = 0usize;
    let mut content_column = 0usize;
    // Inside a block scalar: lines indented more than this (or blank) are its text.
    let mut block_parent: Option<usize> = None;
    // The last non-blank byte on this line, and the first byte of the last token.
    let mut last_nonblank: Option<u8> = None;
    let mut token_first: Option<u8> = None;
    while i < bytes.len() {
        if line_start {
            line_start = false;
            indent = bytes[i..].iter().take_while(|b| **b == b' ').count();
            let rest = i + indent;
            let blank_line = bytes.get(rest).is_none_or(|b| eol(*b) || blank(*b));
            if let Some(parent) = block_parent {
                if blank_line || indent > parent {
                    // A line of the block scalar: skip it.
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                    line_start = true;
                    line += 1;
                    i += 1;
                    continue;
                }
                block_parent = None;
            }
            content_column = indent;
            while bytes.get(i + content_column) == Some(&b'-')
                && bytes.get(i + content_column + 1).is_some_and(|b| blank(*b))
            {
                content_column += 2;
            }
            last_nonblank = None;
            token_first = None;
        }
        let b = bytes[i];
        let previous = i.checked_sub(1).map(|p| bytes[p]);
        let after_blank = previous.is_none_or(|p| blank(p) || eol(p));
        // Could a node (a quoted scalar, a flow collection, a block scalar) start here?
        let node_start = depth > 0 && matches!(previous, Some(b'[' | b'{' | b',' | b':'))
            || match last_nonblank {
                None => true,
                // Indicators only inside a flow collection; plain text outside.
                Some(b'[' | b'{' | b',') => depth > 0,
                Some(b':' | b'-' | b'?') => after_blank || depth > 0,
                Some(_) => after_blank && matches!(token_first, Some(b'!' | b'&')),
            };
        match b {
            b'\n' => {
                line += 1;
                line_start = true;
                i += 1;
                continue;
            }
            b'#' if after_blank => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' if node_start => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    match bytes[i] {
                        b'\\' => i += 1,
                        b'\n' => line += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'\'' if node_start => {
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 1,
                        b'\'' => break,
                        b'\n' => line += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'[' | b'{' if node_start || depth > 0 => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(line);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'|' | b'>' if node_start && depth == 0 => {
                // A block scalar header: indicators, then only a comment.
                let header_end = bytes[i + 1..]
                    .iter()
                    .position(|b| !(b.is_ascii_digit() || *b == b'+' || *b == b'-'))
                    .map_or(bytes.len(), |n| i + 1 + n);
                let rest = &bytes[header_end..];
                let rest_of_line = &rest[..rest.iter().position(|b| eol(*b)).unwrap_or(rest.len())];
                let trimmed: Vec<u8> = rest_of_line
                    .iter()
                    .copied()
                    .skip_while(|b| blank(*b))
                    .collect();
                if trimmed.is_empty()
                    || (trimmed[0] == b'#' && rest_of_line.first().is_some_and(|b| blank(*b)))
                {
                    block_parent = Some(if matches!(last_nonblank, None | Some(b'-')) {
                        indent
                    } else {
                        content_column
                    });
                }
            }
            _ => {}
        }
        if !blank(b) && !eol(b) {
            if after_blank || last_nonblank.is_none() {
                token_first = Some(b);
            }
            last_nonblank = Some(b);
        }
        i += 1;
    }
    None
}

/// Every non-empty document of a file as plain JSON values, read as kubectl would send
/// them (see [`ManifestValue`]); YAML errors carry their line.
pub fn documents(file: &Path, text: &str) -> Result<Vec<Value>, InputError> {
    Ok(all_documents(file, text)?
        .into_iter()
        .filter(|value| !value.is_null())
        .collect())
}

/// Every document of a file, an empty one (a trailing `---`) as `null`.
fn all_documents(file: &Path, text: &str) -> Result<Vec<Value>, InputError> {
    if let Some(line) = too_deep(text) {
        return Err(InputError::new(
            file,
            None,
            format!("nesting deeper than {MAX_NESTING} levels at line {line}; not parsed"),
        ));
    }
    let mut out = Vec::new();
    for document in yaml_serde::Deserializer::from_str(text) {
        let refused = Cell::new(false);
        let mut track = serde_path_to_error::Track::new();
        let seed = ManifestValue {
            text,
            refused: &refused,
        };
        let result = seed.deserialize(serde_path_to_error::Deserializer::new(document, &mut track));
        let value = result.map_err(|e| {
            let field = track.path().to_string();
            let message = without_path(&field, &e);
            InputError::new(
                file,
                (field != ".").then_some(field.as_str()),
                if refused.get() {
                    message
                } else {
                    format!("not valid YAML or JSON: {message}")
                },
            )
        })?;
        out.push(value);
    }
    Ok(out)
}

/// 2^63 and 2^64 as doubles: the bounds of the 64-bit integer range.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// A document as a plain JSON value, as kubectl would send it, refusing what JSON cannot
/// carry.
///
/// kubectl reads YAML with go-yaml v2 (YAML 1.1), yaml_serde follows YAML 1.2. Where they
/// differ on integers, this reads as kubectl does: a plain (unquoted, untagged) `0644` is
/// octal 420 (a file mode), and so are `0o644`; `0X1A` is 26, `0B101` is 5, `1_000` is
/// 1000, and a leading zero before a non-octal digit (`08`) is decimal. A quoted `"0644"`
/// stays a string. YAML 1.1's booleans `yes`, `no`, `on`, `off`, `y`, `n` are *not*
/// followed: they stay strings, so a boolean field written `hostNetwork: yes` is refused
/// naming the field (write `true`) instead of being guessed, and a string written `on` is
/// kept as the user sees it (kubectl would send `true`, which the API server refuses for
/// a string field anyway).
///
/// YAML has `.inf`, `-.inf` and `.nan`; JSON, and so a Kubernetes object, has no such
/// number. serde_json would quietly turn one into `null`, which the digest then drops, so
/// here it is bad input naming the field. `refused` tells such a refusal from a YAML
/// syntax error.
struct ManifestValue<'a> {
    /// The whole file: a scalar borrowed from it shows how it was written.
    text: &'a str,
    refused: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for ManifestValue<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ManifestValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        // Beyond 64 bits, as go-yaml reads it: a float.
        self.visit_f64(v as f64)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        self.visit_f64(v as f64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // kubectl sends an integral float as an integer (Go writes 30.0 as `30`), so a
        // `terminationGracePeriodSeconds: 30.0` decodes as the int64 it is.
        if v.fract() == 0.0 {
            if (0.0..TWO_POW_64).contains(&v) {
                return Ok(Value::from(v as u64));
            }
            if (-TWO_POW_63..0.0).contains(&v) {
                return Ok(Value::from(v as i64));
            }
        }
        match serde_json::Number::from_f64(v) {
            Some(number) => Ok(Value::Number(number)),
            None => {
                self.refused.set(true);
                Err(E::custom(format!(
                    "{} is not a number JSON can carry: a Kubernetes object has no infinity or NaN (quote it if a string is meant)",
                    if v.is_nan() {
                        ".nan"
                    } else if v > 0.0 {
                        ".inf"
                    } else {
                        "-.inf"
                    }
                )))
            }
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Value, E> {
        // yaml_serde resolved the scalar as a string (YAML 1.2); YAML 1.1 may read an
        // integer in it. Only a plain scalar is a number, and only a plain scalar borrowed
        // from the text can be told apart from a quoted one.
        if written_plain(self.text, v)
            && let Some(integer) = yaml_1_1_integer(v)
        {
            return Ok(integer);
        }
        Ok(Value::String(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ManifestValue {
            text: self.text,
            refused: self.refused,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(ManifestValue {
                text: self.text,
                refused: self.refused,
            })?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
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

/// Was `scalar`, a slice of `text`, written plain: not quoted and not tagged (`!!str`)?
/// False for a string that is not a slice of `text`, which cannot be told.
fn written_plain(text: &str, scalar: &str) -> bool {
    let start = (scalar.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    if start
        .checked_add(scalar.len())
        .is_none_or(|end| end > text.len())
    {
        return false;
    }
    let Some(before) = text.get(..start) else {
        return false;
    };
    if before.ends_with(['"', '\'']) {
        return false;
    }
    let token = before
        .trim_end_matches([' ', '\t'])
        .rsplit([' ', '\t', '\n', '\r', '[', '{', ','])
        .next()
        .unwrap_or_default();
    !token.starts_with('!')
}

/// The integer go-yaml v2 (YAML 1.1, kubectl's reader) reads in a plain scalar that YAML
/// 1.2 reads as a string: Go's `ParseInt(s, 0, 64)` after dropping underscores, so `0644`
/// and `0o644` are octal, `0x`/`0X` hex, `0b`/`0B` binary; `08` is not octal and go-yaml
/// reads it as the decimal float 8.
fn yaml_1_1_integer(plain: &str) -> Option<Value> {
    let first = plain.bytes().next()?;
    if !(first.is_ascii_digit() || first == b'+' || first == b'-') {
        return None;
    }
    let cleaned: String = plain.chars().filter(|c| *c != '_').collect();
    let (negative, unsigned) = match cleaned.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, cleaned.strip_prefix('+').unwrap_or(&cleaned)),
    };
    let lower = unsigned.to_ascii_lowercase();
    let (radix, digits, leading_zero) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d, false)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d, false)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d, false)
    } else if let Some(d) = lower.strip_prefix('0').filter(|d| !d.is_empty()) {
        (8, d, true)
    } else {
        (10, lower.as_str(), false)
    };
    // from_str_radix would accept a sign here.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let magnitude = match u64::from_str_radix(digits, radix) {
        Ok(magnitude) => magnitude,
        Err(_) if leading_zero && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse::<u64>().ok()?
        }
        Err(_) => return None,
    };
    if negative {
        0i64.checked_sub_unsigned(magnitude).map(Value::from)
    } else {
        Some(Value::from(magnitude))
    }
}

/// Decode every non-empty document of `text` as `T`, refusing unknown fields.
///
/// Decoding runs on the documents as [`documents`] reads them (as kubectl would send
/// them). When it fails, the same decoding on the YAML itself usually fails at the same
/// field, and its message carries the line and column, so that one is reported.
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
    for (index, value) in values.into_iter().enumerate() {
        if value.is_null() {
            // An empty document (a trailing `---`) decodes as nothing.
            continue;
        }
        match decode_strict(file, &value, "") {
            Ok(decoded) => out.push(decoded),
            // An unknown field's message has no line to add.
            Err(error) if error.message == UNKNOWN_FIELD => return Err(error),
            Err(error) => {
                // Parse again only now, to find the line.
                let document = yaml_serde::Deserializer::from_str(text).nth(index);
                let with_line = document.map(|d| decode_strict::<_, T>(file, d, ""));
                return Err(match with_line {
                    Some(Err(with_line)) if with_line.field == error.field => with_line,
                    _ => error,
                });
            }
        }
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
    use serde_json::json;

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
    fn numbers_are_read_as_json_carries_them() {
        let read = |text: &str| {
            documents(Path::new("x.yaml"), text)
                .map(|mut documents| documents.remove(0))
                .map_err(|e| e.to_string())
        };
        let cases: Vec<(&str, Result<Value, &str>)> = vec![
            ("a: 1", Ok(json!({"a": 1}))),
            ("a: 30.0", Ok(json!({"a": 30}))),
            ("a: -2.0", Ok(json!({"a": -2}))),
            ("a: -0.0", Ok(json!({"a": 0}))),
            ("a: 1e2", Ok(json!({"a": 100}))),
            ("a: 1.5", Ok(json!({"a": 1.5}))),
            ("a: 1e30", Ok(json!({"a": 1e30}))),
            ("a: 100000000000000000000", Ok(json!({"a": 1e20}))),
            ("a: '.inf'", Ok(json!({"a": ".inf"}))),
            ("a: \".nan\"", Ok(json!({"a": ".nan"}))),
            ("a: inf", Ok(json!({"a": "inf"}))),
            (
                "a: .inf",
                Err("x.yaml: a: .inf is not a number JSON can carry"),
            ),
            (
                "a: {b: [1, -.INF]}",
                Err("x.yaml: a.b[1]: -.inf is not a number JSON can carry"),
            ),
            (
                "spec:\n  limits:\n    - max: .NaN\n",
                Err("x.yaml: spec.limits[0].max: .nan is not a number JSON can carry"),
            ),
        ];
        for (text, expected) in cases {
            match (read(text), expected) {
                (Ok(value), Ok(want)) => assert_eq!(value, want, "{text}"),
                (Err(message), Err(want)) => {
                    assert!(message.starts_with(want), "{text}: {message}");
                    assert!(message.contains("line"), "{text}: {message}");
                }
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
        // decode_all reads the same way: an infinite number in a policy is refused too.
        let policy = "apiVersion: countersign.dev/v1alpha1\nkind: ApprovalPolicy\nmetadata:\n  name: p\nspec:\n  priority: .inf\n";
        let message = decode(policy).unwrap_err();
        assert!(
            message.starts_with("p.yaml: spec.priority: .inf is not a number"),
            "{message}"
        );
    }

    #[test]
    fn plain_integers_are_read_as_yaml_1_1_like_kubectl() {
        let read = |text: &str| {
            documents(Path::new("x.yaml"), &format!("a: {text}\n"))
                .map(|mut documents| documents.remove(0)["a"].clone())
                .map_err(|e| e.to_string())
        };
        let cases: Vec<(&str, Value)> = vec![
            ("0644", json!(420)),
            ("0755", json!(493)),
            ("00", json!(0)),
            ("-0644", json!(-420)),
            ("+0644", json!(420)),
            ("0o644", json!(420)),
            ("0O644", json!(420)),
            ("0x1A", json!(26)),
            ("0X1a", json!(26)),
            ("0B101", json!(5)),
            ("1_000", json!(1000)),
            ("0_644", json!(420)),
            ("08", json!(8)),
            ("0129", json!(129)),
            ("420", json!(420)),
            // Quoted or tagged: a string, as written.
            ("\"0644\"", json!("0644")),
            ("'0644'", json!("0644")),
            ("!!str 0644", json!("0644")),
            // Not integers in YAML 1.1 either.
            ("0644.5", json!(644.5)),
            ("0x", json!("0x")),
            ("0xZZ", json!("0xZZ")),
            ("0123abc", json!("0123abc")),
            ("2024-01-15", json!("2024-01-15")),
            ("10.0.0.1", json!("10.0.0.1")),
            ("01:30", json!("01:30")),
            ("_1", json!("_1")),
            ("0644 files", json!("0644 files")),
            // YAML 1.1 booleans are not followed: they stay strings.
            ("yes", json!("yes")),
            ("off", json!("off")),
            ("true", json!(true)),
        ];
        for (text, expected) in cases {
            assert_eq!(read(text), Ok(expected), "{text}");
        }
        // In flow collections, block sequences and as JSON, too.
        let text = "a: [0644, \"0644\", {m: 0755}]\nb:\n  - 0600\n  - '0600'\n";
        assert_eq!(
            documents(Path::new("x.yaml"), text).unwrap(),
            vec![json!({"a": [420, "0644", {"m": 493}], "b": [384, "0600"]})]
        );
        let json_text = r#"{"a": "0644", "b": [0, 1]}"#;
        assert_eq!(
            documents(Path::new("x.json"), json_text).unwrap(),
            vec![json!({"a": "0644", "b": [0, 1]})]
        );
    }

    #[test]
    fn flow_nesting_is_bounded_before_parsing() {
        let deep = |n: usize| "[".repeat(n);
        let cases: Vec<(&str, String, Option<usize>)> = vec![
            ("100 levels", deep(100), None),
            ("101 levels", deep(101), Some(1)),
            ("closed as it goes", "[]".repeat(1000), None),
            ("maps", "{a: ".repeat(101), Some(1)),
            ("JSON", "{\"a\": ".repeat(101), Some(1)),
            (
                "on line 3",
                format!("a:\n  b: 1\n  c: {}", deep(101)),
                Some(3),
            ),
            ("sequence entry", format!("- {}", deep(101)), Some(1)),
            ("after a tag", format!("a: !!seq {}", deep(101)), Some(1)),
            ("after an anchor", format!("a: &x {}", deep(101)), Some(1)),
            ("double-quoted", format!("a: \"{}\"", deep(200)), None),
            ("escaped quote", format!("a: \"x\\\"{}\"", deep(200)), None),
            ("single-quoted", format!("a: '{}'", deep(200)), None),
            (
                "escaped single quote",
                format!("a: 'it''s {}'", deep(200)),
                None,
            ),
            ("JSON string", format!("{{\"a\":\"{}\"}}", deep(200)), None),
            ("comment", format!("a: 1 # {}", deep(200)), None),
            ("plain text", format!("a: see {}", deep(200)), None),
            (
                "quote inside plain text",
                format!("a: b \"{}", deep(200)),
                None,
            ),
            (
                "block scalar",
                format!("a: |\n  {}\n  x\nb: 1\n", deep(200)),
                None,
            ),
            (
                "after a block scalar",
                format!("a: >-\n  x\n\nb: {}", deep(101)),
                Some(4),
            ),
            ("block scalar entry", format!("- |\n  {}", deep(200)), None),
            (
                "block scalar in a sequence's map",
                format!("- k: |2\n    {}\n  j: {}", deep(200), deep(101)),
                Some(3),
            ),
            (
                "quotes across lines",
                format!("a: \"x\n{}\"\nb: {}", deep(200), deep(101)),
                Some(3),
            ),
        ];
        for (name, text, expected) in cases {
            assert_eq!(too_deep(&text), expected, "{name}");
        }
        let message = documents(Path::new("x.yaml"), &format!("a:\n  b: {}", deep(5000)))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "x.yaml: nesting deeper than 100 levels at line 2; not parsed"
        );
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
