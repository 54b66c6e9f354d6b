//! Values nested inside a value: the string members of a JSON document and the text of a
//! base64 blob.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The `"key": "string"` pairs of a JSON document, unescaped, at any depth.
pub(super) fn json_pairs(text: &str) -> Vec<(String, String)> {
    let mut strings: Vec<(usize, usize, String)> = Vec::new();
    let mut chars = text.char_indices();
    while let Some((start, c)) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut content = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => content.push('\n'),
                    Some((_, other)) => content.push(other),
                    None => {}
                },
                _ => content.push(c),
            }
        }
        let Some(end) = end else { break };
        strings.push((start, end, content));
    }
    strings
        .windows(2)
        .filter_map(|pair| {
            let [(_, key_end, key), (value_start, _, value)] = pair else {
                return None;
            };
            (text[*key_end..*value_start].trim() == ":").then(|| (key.clone(), value.clone()))
        })
        .collect()
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
