//! Does a value look like a secret: long and random-looking (Shannon entropy, character
//! classes) or a passphrase, and not a reference, path, URL, e-mail address, hostname,
//! number, placeholder or plain words.

use super::names::name_words;

/// A value must be at least this long and this random (bits per character, Shannon) to
/// count as a credential under a password-like name.
const SECRET_MIN_LEN: usize = 10;
const SECRET_MIN_BITS: f64 = 3.0;

pub(super) fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// Long, random-looking, and not a reference to something else (`$(VAR)`, `${VAR}`, a
/// path, a URL), an address, a hostname, a number, a placeholder, or plain words.
pub fn looks_like_secret(value: &str) -> bool {
    let value = unquote(value.trim());
    if value.len() < SECRET_MIN_LEN
        || value.contains(char::is_whitespace)
        || is_reference(value)
        || value.contains("://")
        || is_path(value)
        || is_email(value)
        || is_hostname(value)
        || is_placeholder(value)
        || value
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | ':' | '-' | '_'))
        || is_wordish(value)
    {
        return false;
    }
    let classes = [
        value.chars().any(|c| c.is_ascii_lowercase()),
        value.chars().any(|c| c.is_ascii_uppercase()),
        value.chars().any(|c| c.is_ascii_digit()),
        value.chars().any(|c| !c.is_ascii_alphanumeric()),
    ]
    .iter()
    .filter(|&&present| present)
    .count();
    classes >= 2 && shannon_bits_per_char(value) >= SECRET_MIN_BITS
}

/// Three or more plain words, 16 characters or more (`correct-horse-battery-staple`).
pub(super) fn looks_like_passphrase(value: &str) -> bool {
    let words = value
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .count();
    value.len() >= 16
        && words >= 3
        && !value.contains(char::is_whitespace)
        && !is_reference(value)
        && !is_path(value)
        && !value.contains('.')
        && !value.contains('/')
        && !is_placeholder(value)
}

/// `$(VAR)`, `${VAR}`, `$VAR`, `{{ .Values.x }}`, `%s`: filled in from elsewhere.
pub(super) fn is_reference(value: &str) -> bool {
    value.starts_with('$')
        || value.contains("${")
        || value.contains("$(")
        || value.contains("{{")
        || value.contains("%s")
        || value.starts_with('@')
        || value.starts_with("secret:")
        || value.starts_with("vault:")
        || value.starts_with("ref+")
        || value.starts_with("arn:")
}

fn is_path(value: &str) -> bool {
    value.starts_with('/')
        || value.starts_with("./")
        || value.starts_with("../")
        || value.starts_with("~/")
        || value.starts_with("file:")
}

fn is_hostname_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
}

/// `api.example.com`, `db.internal:5432`.
fn is_hostname(value: &str) -> bool {
    let host = match value.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => value,
    };
    host.contains('.')
        && host.chars().all(is_hostname_char)
        && host
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()))
}

fn is_email(value: &str) -> bool {
    value.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-'))
            && is_hostname(&domain.to_ascii_lowercase())
    })
}

pub(super) fn is_placeholder(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    [
        "changeme",
        "change-me",
        "change_me",
        "changeit",
        "placeholder",
        "replace-me",
        "replace_me",
        "your-",
        "your_",
        "<",
        "xxxxx",
        "*****",
        "redacted",
        "todo",
    ]
    .iter()
    .any(|p| lower.contains(p))
}

/// Plain words, numbers and separators (`my-app-secrets`, `Jane-Doe-Maintainer`,
/// `keycloak-oidc`, `service-account-01`), not random characters.
pub(super) fn is_wordish(value: &str) -> bool {
    value
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|s| !s.is_empty())
        .all(|segment| {
            let letters = segment.trim_end_matches(|c: char| c.is_ascii_digit());
            let digits = segment.len() - letters.len();
            if letters.is_empty() {
                return digits <= 4;
            }
            if digits > 2 || !letters.chars().all(|c| c.is_ascii_alphabetic()) {
                return false;
            }
            let lower = letters.chars().all(|c| c.is_ascii_lowercase());
            let upper = letters.chars().all(|c| c.is_ascii_uppercase());
            if lower || upper {
                return true;
            }
            // camelCase words: every part two letters or more, three on average.
            let parts = name_words(letters);
            parts.iter().all(|p| p.len() >= 2) && letters.len() >= 3 * parts.len() - 1
        })
}

fn shannon_bits_per_char(value: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for c in value.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    let len = value.chars().count() as f64;
    counts
        .values()
        .map(|&n| {
            let p = n as f64 / len;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_values() {
        let cases: &[(&str, bool)] = &[
            ("q8Zr!t2Lw9@xPe4K", true),
            ("f3a9c1e07b2d4e68a1c5", true),
            ("550e8400-e29b-41d4-a716-446655440000", true),
            ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", true),
            ("changeme", false),
            ("CHANGE_ME_IN_PROD", false),
            ("my-app-secrets", false),
            ("Jane-Doe-Maintainer", false),
            ("keycloak-oidc", false),
            ("api.example.com", false),
            ("db.internal:5432", false),
            ("dev@example.com", false),
            ("/var/run/secrets/db/password", false),
            ("$(DB_PASSWORD)", false),
            ("${DB_PASSWORD}", false),
            ("{{ .Values.password }}", false),
            ("https://auth.example.com/x?y=Zq81", false),
            ("1234567890123", false),
            ("aaaaaaaaaaaaaaaaaaaa", false),
            ("service-account-01", false),
        ];
        for (value, expected) in cases {
            assert_eq!(looks_like_secret(value), *expected, "{value}");
        }
    }
}
