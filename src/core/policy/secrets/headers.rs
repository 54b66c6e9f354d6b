//! HTTP headers that carry a credential: `Authorization: Bearer …` anywhere in a text, and
//! whole values shaped like a credential header line (`X-Api-Key: …`).

use super::embedded::decode_base64;
use super::names::is_password_like;
use super::values::{is_placeholder, is_reference, is_wordish, looks_like_secret};
use super::{HEADER, Kind, first_occurrences};

/// `Authorization: Bearer <token>` (or `Basic`, `token`, …) anywhere, also as a JSON key.
pub(super) fn authorization_anywhere(text: &str) -> Option<Kind> {
    let lower = text.to_ascii_lowercase();
    first_occurrences(&lower, "authorization").find_map(|(i, _)| {
        let rest = text[i + "authorization".len()..].trim_start_matches(['"', '\'']);
        let rest = rest.trim_start().strip_prefix([':', '='])?;
        let rest = rest.trim_start().trim_start_matches(['"', '\'']);
        let value: String = rest
            .chars()
            .take_while(|&c| !matches!(c, '"' | '\'' | '\n' | ',' | ';' | '}'))
            .collect();
        authorization_value(&value).then_some(HEADER)
    })
}

/// The value of an `Authorization` header: `[scheme] credentials`.
fn authorization_value(value: &str) -> bool {
    let mut words = value.split_whitespace();
    let (Some(first), second) = (words.next(), words.next()) else {
        return false;
    };
    let (scheme, credentials) = match second {
        Some(credentials) => (first, credentials),
        None => ("", first),
    };
    let credentials = credentials.trim_end_matches(['\\', ')']);
    if credentials.len() < 8 || is_reference(credentials) || is_placeholder(credentials) {
        return false;
    }
    if scheme.eq_ignore_ascii_case("basic") {
        return decode_base64(credentials)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .is_some_and(|pair| pair.contains(':'))
            || looks_like_secret(credentials);
    }
    credentials.len() >= 12 && !is_wordish(credentials)
}

/// A whole value shaped like an HTTP header line whose name is a credential
/// (`Authorization: …`, `X-Api-Key: …`, `Private-Token: …`).
pub(super) fn header_credential(value: &str) -> Option<Kind> {
    let (name, header_value) = value.split_once(':')?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return None;
    }
    let header_value = header_value.trim();
    let authorization = ["authorization", "proxy-authorization"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h));
    let found = if authorization {
        authorization_value(header_value)
    } else {
        is_password_like(name) && looks_like_secret(header_value)
    };
    found.then_some(HEADER)
}
