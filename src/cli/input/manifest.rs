//! YAML (or JSON) documents as the JSON values kubectl would send: YAML 1.1 integers such
//! as octal `0644`, integral floats as integers, and `.inf`/`.nan` refused.

use std::cell::Cell;
use std::path::Path;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::nesting::refuse_deep_nesting;
use super::{InputError, without_path};

/// Every non-empty document of a file as plain JSON values, read as kubectl would send
/// them (see `ManifestValue`); YAML errors carry their line.
pub fn documents(file: &Path, text: &str) -> Result<Vec<Value>, InputError> {
    Ok(all_documents(file, text)?
        .into_iter()
        .filter(|value| !value.is_null())
        .collect())
}

/// Every non-empty document of a file with its place among all of them (empty ones
/// counted, as [`decode_document`](super::decode_document) counts them).
pub fn numbered_documents(file: &Path, text: &str) -> Result<Vec<(usize, Value)>, InputError> {
    Ok(all_documents(file, text)?
        .into_iter()
        .enumerate()
        .filter(|(_, value)| !value.is_null())
        .collect())
}

/// Every document of a file, an empty one (a trailing `---`) as `null`.
///
/// A file whose first non-blank character is `{` is read as a stream of JSON values, as
/// kubectl reads it (its `YAMLOrJSONDecoder` makes the same test), and anything else as
/// YAML. JSON is not read through the YAML parser: YAML 1.1 folds a raw NEL (U+0085) in a
/// quoted scalar to a space and refuses an implicit key over 1,024 characters, both of
/// which JSON carries, so `check` would digest another object than the API server sees.
pub(super) fn all_documents(file: &Path, text: &str) -> Result<Vec<Value>, InputError> {
    refuse_deep_nesting(file, text)?;
    if text.trim_start().starts_with('{') {
        json_documents(file, text)
    } else {
        yaml_documents(file, text)
    }
}

fn yaml_documents(file: &Path, text: &str) -> Result<Vec<Value>, InputError> {
    yaml_serde::Deserializer::from_str(text)
        .map(|document| read_document(file, text, "YAML or JSON", document))
        .collect()
}

/// A stream of JSON values: each is found first (serde_json's stream reader takes no seed),
/// then read as a manifest value.
fn json_documents(file: &Path, text: &str) -> Result<Vec<Value>, InputError> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<de::IgnoredAny>();
    let mut out = Vec::new();
    loop {
        let start = stream.byte_offset();
        match stream.next() {
            None => return Ok(out),
            Some(Err(e)) => {
                return Err(InputError::new(file, None, format!("not valid JSON: {e}")));
            }
            Some(Ok(_)) => {
                let one = &text[start..stream.byte_offset()];
                let mut document = serde_json::Deserializer::from_str(one);
                out.push(read_document(file, text, "JSON", &mut document)?);
            }
        }
    }
}

/// One document as a manifest value, an error naming the field where one is known and
/// the syntax (`syntax`) the document was read as.
fn read_document<'de, D: serde::Deserializer<'de>>(
    file: &Path,
    text: &str,
    syntax: &str,
    document: D,
) -> Result<Value, InputError>
where
    D::Error: std::fmt::Display,
{
    let refused = Cell::new(false);
    let mut track = serde_path_to_error::Track::new();
    let seed = ManifestValue {
        text,
        refused: &refused,
    };
    seed.deserialize(serde_path_to_error::Deserializer::new(document, &mut track))
        .map_err(|e| {
            let field = track.path().to_string();
            let message = without_path(&field, &e);
            InputError::new(
                file,
                (field != ".").then_some(field.as_str()),
                if refused.get() {
                    message
                } else {
                    format!("not valid {syntax}: {message}")
                },
            )
        })
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
///
/// Copied into every nested value it reads.
#[derive(Clone, Copy)]
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
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self)?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApprovalPolicy;
    use crate::cli::input::decode_all;
    use serde_json::json;

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
        let message = decode_all::<ApprovalPolicy>(Path::new("p.yaml"), policy)
            .unwrap_err()
            .to_string();
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

    #[test]
    fn a_file_starting_with_a_brace_is_read_as_json_as_kubectl_reads_it() {
        let read = |text: &str| documents(Path::new("x.json"), text).map_err(|e| e.to_string());
        let long_key = "k".repeat(2000);
        let cases: Vec<(String, Result<Vec<Value>, &str>)> = vec![
            // YAML 1.1 folds a raw NEL in a quoted scalar to a space; JSON keeps it.
            (
                "{\"a\": \"x\u{85}y\"}".into(),
                Ok(vec![json!({"a": "x\u{85}y"})]),
            ),
            (
                "{\"a\": \"x\u{2028}y\"}".into(),
                Ok(vec![json!({"a": "x\u{2028}y"})]),
            ),
            // YAML refuses an implicit key over 1,024 characters; JSON has no limit.
            (
                format!("{{\"{long_key}\": 1}}"),
                Ok(vec![json!({ long_key.clone(): 1 })]),
            ),
            // A stream of values, blank-separated or not, as kubectl's decoder takes it.
            (
                "\n  {\"a\": 1}\n{\"b\": 2.0}{\"c\": [1.5, null]}\n".into(),
                Ok(vec![
                    json!({"a": 1}),
                    json!({"b": 2}),
                    json!({"c": [1.5, null]}),
                ]),
            ),
            // Numbers as YAML reads them: integral floats are integers, big ones floats.
            (
                "{\"a\": 30.0, \"b\": 100000000000000000000, \"c\": -0.0}".into(),
                Ok(vec![json!({"a": 30, "b": 1e20, "c": 0})]),
            ),
            // A quoted number stays a string.
            (
                "{\"mode\": \"0644\"}".into(),
                Ok(vec![json!({"mode": "0644"})]),
            ),
            // JSON's syntax, not YAML's: no comments, no plain scalars, nothing after.
            ("{\"a\": 1} # note".into(), Err("not valid JSON")),
            ("{a: 1}".into(), Err("not valid JSON")),
            ("{\"a\": 1}\n---\n".into(), Err("not valid JSON")),
            ("{\"a\": 1e400}".into(), Err("not valid JSON")),
            ("{\"a\": 1".into(), Err("not valid JSON")),
        ];
        for (text, expected) in cases {
            match (read(&text), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
        // A document that starts otherwise is YAML, a JSON-looking list included.
        assert_eq!(
            read("# made by hand\n{\"a\": 0644}").unwrap(),
            vec![json!({"a": 420})]
        );
        assert_eq!(read("[{\"a\": 1}]").unwrap(), vec![json!([{"a": 1}])]);
    }
}
