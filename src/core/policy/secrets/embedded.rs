//! Values nested inside a value: the string members of a JSON document, the parameters of
//! a URL query and the text of a base64 blob.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value;

use super::{MAX_OCCURRENCES, first_occurrences};

/// The `"key": "string"` members of the JSON objects in `text`, at any depth, unescaped.
/// An object may sit inside other text (`--credentials-json={…}`, a shell string), so every
/// `{` that opens a well-formed JSON value is parsed; text that is not JSON yields nothing.
pub(super) fn json_string_members(text: &str) -> Vec<(String, String)> {
    let mut members = Vec::new();
    let mut from = 0;
    // Each failed attempt may read to the end of the text: try only so many.
    let mut attempts_left = MAX_OCCURRENCES;
    while let Some(start) = text[from..].find('{').map(|i| from + i) {
        let mut values = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        from = match values.next() {
            Some(Ok(value)) => {
                collect_string_members(&value, &mut members);
                start + values.byte_offset()
            }
            _ => {
                attempts_left -= 1;
                if attempts_left == 0 {
                    break;
                }
                start + 1
            }
        };
    }
    members
}

fn collect_string_members(value: &Value, members: &mut Vec<(String, String)>) {
    match value {
        Value::Object(object) => {
            for (key, member) in object {
                if let Value::String(text) = member {
                    members.push((key.clone(), text.clone()));
                }
                collect_string_members(member, members);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_string_members(item, members);
            }
        }
        _ => {}
    }
}

/// The `name=value` parameters of the query of every URL in `text` (`?api_key=…&…`).
pub(super) fn url_query_parameters(text: &str) -> impl Iterator<Item = (&str, &str)> {
    first_occurrences(text, "://")
        .filter_map(|(i, _)| {
            let url = text[i + 3..]
                .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '#'))
                .next()
                .unwrap_or_default();
            url.split_once('?').map(|(_, query)| query)
        })
        .flat_map(|query| {
            query
                .split('&')
                .filter_map(|parameter| parameter.split_once('='))
        })
}

/// The decoded text of a value that is entirely one base64 blob (32 characters or more),
/// when that text is printable.
pub(super) fn decode_base64_blob(text: &str) -> Option<String> {
    let text = text.trim();
    if text.len() < 32 {
        return None;
    }
    let decoded = String::from_utf8(decode_base64(text)?).ok()?;
    decoded
        .chars()
        .all(|c| !c.is_control() || c.is_whitespace())
        .then_some(decoded)
}

/// Values are pasted by hand: padding is optional and stray bits in the last character are
/// ignored.
const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Standard or URL-safe base64, padding optional (any number of trailing `=` is dropped).
pub(super) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_string_members_inside_other_text() {
        let pair = |key: &str, value: &str| (key.to_string(), value.to_string());
        let cases: &[(&str, Vec<(String, String)>)] = &[
            (
                r#"{"spring":{"datasource":{"password":"p\u0041ss"}}}"#,
                vec![pair("password", "pAss")],
            ),
            (
                r#"--credentials-json={"type": "service_account"} --verbose"#,
                vec![pair("type", "service_account")],
            ),
            (
                r#"[{"token": "a"}, {"names": ["b"], "n": 1}] {"key": "c"}"#,
                vec![pair("token", "a"), pair("key", "c")],
            ),
            (
                r#"{"a": "{", "b": "}"}"#,
                vec![pair("a", "{"), pair("b", "}")],
            ),
            (r#"["not", "an", "object"]"#, vec![]),
            (r#"{"password": "cut off"#, vec![]),
        ];
        for (text, members) in cases {
            assert_eq!(json_string_members(text), *members, "{text}");
        }
    }
}
