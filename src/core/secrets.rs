//! Credential detection in container env values, args and command (SPEC §3 `secretDetection`).
//!
//! Findings name where a credential sits and what it looks like, never the value itself.

/// Names under which a long random-looking value is treated as a credential.
const PASSWORD_LIKE_NAMES: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "accesskey",
    "access_key",
    "credential",
    "private_key",
    "privatekey",
    "auth",
];

/// A value must be at least this long and this random (bits per character, Shannon) to
/// count as a high-entropy credential under a password-like name.
const HIGH_ENTROPY_MIN_LEN: usize = 12;
const HIGH_ENTROPY_MIN_BITS: f64 = 3.0;

/// What kind of credential a value looks like.
pub fn detect_credential(name: Option<&str>, value: &str) -> Option<&'static str> {
    if let Some(kind) = well_known_format(value) {
        return Some(kind);
    }
    if has_url_password(value) {
        return Some("password in a URL");
    }
    let name = name?;
    if is_password_like(name) && is_high_entropy(value) {
        return Some("high-entropy value under a password-like name");
    }
    None
}

/// Does this variable or flag name suggest a credential?
pub fn is_password_like(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    PASSWORD_LIKE_NAMES.iter().any(|n| lower.contains(n))
}

/// Long, random-looking, and not a reference to something else (`$(VAR)`, `${VAR}`, a path).
pub fn is_high_entropy(value: &str) -> bool {
    let value = value.trim();
    if value.len() < HIGH_ENTROPY_MIN_LEN
        || value.starts_with("$(")
        || value.starts_with("${")
        || value.starts_with('/')
        || value.contains(char::is_whitespace)
        // A URL is an address, not a secret (`AUTH_URL=https://…`); one with a password
        // in it is caught by `has_url_password`.
        || value.contains("://")
    {
        return false;
    }
    shannon_bits_per_char(value) >= HIGH_ENTROPY_MIN_BITS
}

/// `scheme://user:password@host…`, e.g. a database URL with its password inline.
fn has_url_password(value: &str) -> bool {
    value.match_indices("://").any(|(i, _)| {
        let rest = &value[i + 3..];
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        authority
            .rsplit_once('@')
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .is_some_and(|(_, password)| !password.is_empty())
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

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Length of the run of characters satisfying `pred` at the start of `s`.
fn run_len(s: &str, pred: impl Fn(char) -> bool) -> usize {
    s.chars().take_while(|&c| pred(c)).count()
}

/// Does `value` contain `prefix` followed by at least `min` characters satisfying `pred`?
fn has_prefixed_token(
    value: &str,
    prefix: &str,
    min: usize,
    pred: impl Fn(char) -> bool + Copy,
) -> bool {
    value
        .match_indices(prefix)
        .any(|(i, _)| run_len(&value[i + prefix.len()..], pred) >= min)
}

/// Well-known credential formats, recognised wherever they appear in a value.
fn well_known_format(value: &str) -> Option<&'static str> {
    let upper_alnum = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit();
    if ["AKIA", "ASIA", "ABIA", "ACCA"]
        .iter()
        .any(|p| has_prefixed_token(value, p, 16, upper_alnum))
    {
        return Some("AWS access key ID");
    }
    if value.contains("-----BEGIN") && value.contains("PRIVATE KEY") {
        return Some("private key block");
    }
    if ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]
        .iter()
        .any(|p| has_prefixed_token(value, p, 36, |c| c.is_ascii_alphanumeric()))
        || has_prefixed_token(value, "github_pat_", 22, is_token_char)
    {
        return Some("GitHub token");
    }
    if has_prefixed_token(value, "glpat-", 20, is_token_char) {
        return Some("GitLab token");
    }
    if ["xoxb-", "xoxp-", "xoxa-", "xoxs-", "xapp-"]
        .iter()
        .any(|p| has_prefixed_token(value, p, 10, is_token_char))
    {
        return Some("Slack token");
    }
    if ["sk_live_", "rk_live_"]
        .iter()
        .any(|p| has_prefixed_token(value, p, 16, |c| c.is_ascii_alphanumeric()))
    {
        return Some("Stripe live key");
    }
    if has_prefixed_token(value, "AIza", 35, is_token_char) {
        return Some("Google API key");
    }
    if looks_like_jwt(value) {
        return Some("JSON Web Token");
    }
    None
}

fn looks_like_jwt(value: &str) -> bool {
    value.match_indices("eyJ").any(|(i, _)| {
        let token: String = value[i..]
            .chars()
            .take_while(|&c| is_token_char(c) || c == '.')
            .collect();
        let parts: Vec<&str> = token.split('.').collect();
        parts.len() == 3 && parts[1].starts_with("eyJ") && parts.iter().all(|p| p.len() >= 8)
    })
}

/// A credential found in one container's env, args or command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialFinding {
    /// e.g. `env DB_PASSWORD`, `args[2]`.
    pub location: String,
    pub kind: &'static str,
}

/// Scan the argument list of a command or args field (`--password=…`, `--token …`).
pub fn scan_arguments(field: &str, arguments: &[&str]) -> Vec<CredentialFinding> {
    let mut findings = Vec::new();
    for (i, &argument) in arguments.iter().enumerate() {
        let (name, value): (Option<&str>, &str) = match argument.split_once('=') {
            Some((flag, value)) => (Some(flag), value),
            None => {
                let previous_flag = i
                    .checked_sub(1)
                    .and_then(|p| arguments.get(p))
                    .filter(|p| p.starts_with('-') && !p.contains('='))
                    .copied();
                (previous_flag, argument)
            }
        };
        if let Some(kind) = detect_credential(name, value) {
            findings.push(CredentialFinding {
                location: format!("{field}[{i}]"),
                kind,
            });
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_table() {
        let cases: &[(Option<&str>, &str, Option<&str>)] = &[
            (None, "AKIAIOSFODNN7EXAMPLE", Some("AWS access key ID")),
            (
                Some("X"),
                "prefix ASIAABCDEFGHIJKLMNOP suffix",
                Some("AWS access key ID"),
            ),
            (None, "AKIA-too-short", None),
            (
                Some("OAUTH_CALLBACK_URL"),
                "https://auth.example.com/oauth2/callback?x=Zq81",
                None,
            ),
            (
                Some("DATABASE_URL"),
                "postgres://shop:s3cr3t-Pa55@db.internal:5432/shop",
                Some("password in a URL"),
            ),
            (
                Some("DATABASE_URL"),
                "postgres://shop@db.internal/shop",
                None,
            ),
            (
                None,
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE...",
                Some("private key block"),
            ),
            (
                None,
                "-----BEGIN OPENSSH PRIVATE KEY-----",
                Some("private key block"),
            ),
            (None, "-----BEGIN CERTIFICATE-----", None),
            (
                None,
                "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                Some("GitHub token"),
            ),
            (
                None,
                "github_pat_11ABCDEFG0123456789_abcdefghijkl",
                Some("GitHub token"),
            ),
            (None, "glpat-abcdefghij0123456789", Some("GitLab token")),
            (None, "xoxb-123456789012-abcdefghij", Some("Slack token")),
            (
                None,
                "sk_live_abcdefghijklmnop1234",
                Some("Stripe live key"),
            ),
            (
                None,
                "AIzaSyA-abcdefghijklmnopqrstuvwxyz12345",
                Some("Google API key"),
            ),
            (
                None,
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                Some("JSON Web Token"),
            ),
            (
                Some("DB_PASSWORD"),
                "q8Zr!t2Lw9@xPe4K",
                Some("high-entropy value under a password-like name"),
            ),
            (
                Some("api_token"),
                "f3a9c1e07b2d4e68a1c5",
                Some("high-entropy value under a password-like name"),
            ),
            (Some("DB_PASSWORD"), "changeme", None),
            (Some("DB_PASSWORD"), "$(DB_PASSWORD_FROM_SECRET)", None),
            (
                Some("DB_PASSWORD_FILE"),
                "/var/run/secrets/db/password",
                None,
            ),
            (Some("LOG_LEVEL"), "q8Zr!t2Lw9@xPe4K", None),
            (Some("GREETING"), "hello world, how are you", None),
            (Some("DB_PASSWORD"), "aaaaaaaaaaaaaaaaaaaa", None),
        ];
        for (name, value, expected) in cases {
            assert_eq!(
                detect_credential(*name, value),
                *expected,
                "{name:?} = {value:?}"
            );
        }
    }

    #[test]
    fn arguments_with_flags_are_scanned_without_leaking_values() {
        let findings = scan_arguments(
            "args",
            &[
                "--port=8080",
                "--db-password=q8Zr!t2Lw9@xPe4K",
                "--token",
                "f3a9c1e07b2d4e68a1c5",
                "serve",
            ],
        );
        assert_eq!(
            findings,
            vec![
                CredentialFinding {
                    location: "args[1]".into(),
                    kind: "high-entropy value under a password-like name"
                },
                CredentialFinding {
                    location: "args[3]".into(),
                    kind: "high-entropy value under a password-like name"
                },
            ]
        );
        assert!(scan_arguments("command", &["/bin/server", "--verbose"]).is_empty());
    }
}
