//! Credential detection in container env values, args and command (SPEC §3 `secretDetection`).
//!
//! A value is a credential when
//! 1. it contains a well-known credential format anywhere (cloud keys, vendor tokens, private
//!    key blocks, JWTs, webhook URLs; see `formats`), also inside a base64 blob or a JSON
//!    document;
//! 2. it holds a password in a URL (`scheme://user:password@host`) or a credential HTTP
//!    header (`Authorization: Bearer …`, `X-Api-Key: …`);
//! 3. it looks like a secret (long, random-looking, not a reference, path, URL, address,
//!    hostname or plain words) and sits under a credential-like name: an env variable, a
//!    flag (`--db-password=…`, `--token …`), a JVM property, a shell assignment, a JSON key,
//!    a URL query parameter or a `Key=Value;` connection-string field.
//!
//! Names match by word, not by substring (see [`is_password_like`]), so `AUTHOR` or
//! `OAUTH_AUDIENCE` are not credential names, and names that *refer* to a secret
//! (`SECRET_NAME`, `DB_PASSWORD_FILE`, `AWS_ACCESS_KEY_ID`, `TOKEN_URL`) are not either.
//! Shell strings in command/args and env values (`sh -c "export DB_PASSWORD=… && ./run"`)
//! are split into words and each word is scanned the same way.
//!
//! Findings name where a credential sits and what it looks like, never the value itself.
//!
//! This module ties the parts together: `names` (which names are credential names),
//! `values` (which values look like secrets), `formats` (well-known credential formats),
//! `headers` (credential HTTP headers), `embedded` (JSON documents and base64 blobs
//! inside a value) and `shell` (shell strings split into words).

/// What a credential looks like, e.g. `AWS access key ID`.
pub type Kind = &'static str;

pub const HIGH_ENTROPY: Kind = "high-entropy value under a password-like name";
pub const PASSPHRASE: Kind = "passphrase under a password-like name";
pub const URL_PASSWORD: Kind = "password in a URL";
pub const HEADER: Kind = "credential in an HTTP header";
pub const USER_OPTION: Kind = "password in a user:password option";
pub const AWS_SECRET: Kind = "AWS secret access key";
pub const SERVICE_ACCOUNT: Kind = "Google service account key";

mod embedded;
mod formats;
mod headers;
mod names;
mod shell;
mod values;

use embedded::{decode_base64_blob, json_string_members, url_query_parameters};
use formats::{is_aws_secret_key, known_format};
use headers::{authorization_anywhere, header_credential};
use names::{credential_words, is_name};
pub use names::{is_password_like, name_words};
use shell::shell_words;
pub use values::looks_like_secret;
use values::{looks_like_passphrase, unquote};

/// How deep shell strings inside shell strings (or JSON inside base64) are followed.
const MAX_DEPTH: u8 = 3;

/// The longest value scanned: Linux refuses a longer single argument or environment string
/// (`MAX_ARG_STRLEN`, 32 pages), so such a container could not start anyway; a longer
/// value is reported rather than scanned, which bounds the work one admission can ask for.
pub const MAX_SCANNED_LEN: usize = 128 * 1024;
pub const TOO_LONG: Kind = "value longer than 128 KiB, which Linux refuses for one argument or environment string; not scanned";

/// How many places a matcher whose reading can run to the end of the text (URLs, headers,
/// JSON documents) examines per text: enough for any real value, and a bound on the work
/// a value made of one marker repeated can cause.
const MAX_OCCURRENCES: usize = 16;

/// The first [`MAX_OCCURRENCES`] places `pattern` occurs in `text`.
fn first_occurrences<'t>(
    text: &'t str,
    pattern: &'t str,
) -> impl Iterator<Item = (usize, &'t str)> {
    text.match_indices(pattern).take(MAX_OCCURRENCES)
}

/// What kind of credential a value looks like, if any. `name` is the env variable or flag
/// the value is under; `None` scans the value alone (formats, URLs, headers, and any
/// `NAME=value` or `--flag value` inside it).
pub fn detect_credential(name: Option<&str>, value: &str) -> Option<Kind> {
    if value.len() > MAX_SCANNED_LEN {
        return Some(TOO_LONG);
    }
    match name {
        Some(name) => well_known(value, 0).or_else(|| scan_named(name, value, 0)),
        None => scan_word(value, None, 0),
    }
}

/// A credential found in one container's env, args or command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialFinding {
    /// e.g. `env DB_PASSWORD`, `args[2]`.
    pub location: String,
    pub kind: Kind,
}

/// Scan the argument list of a command or args field (`--password=…`, `--token …`,
/// `-H "Authorization: Bearer …"`, `sh -c "export DB_PASSWORD=… && ./run"`): at most one
/// finding per element.
pub fn scan_arguments(field: &str, arguments: &[&str]) -> Vec<CredentialFinding> {
    let mut findings = Vec::new();
    for (i, (previous, argument)) in with_previous(arguments).enumerate() {
        let found = if argument.len() > MAX_SCANNED_LEN {
            Some(TOO_LONG)
        } else {
            scan_word(argument, previous, 0)
        };
        if let Some(kind) = found {
            findings.push(CredentialFinding {
                location: format!("{field}[{i}]"),
                kind,
            });
        }
    }
    findings
}

/// One word of an argument list or shell string, after the word `previous`.
fn scan_word(word: &str, previous: Option<&str>, depth: u8) -> Option<Kind> {
    if let Some(kind) = well_known(word, depth).or_else(|| header_credential(word)) {
        return Some(kind);
    }
    let assigned = word
        .split_once('=')
        .filter(|(name, _)| is_name(name))
        .and_then(|(name, value)| scan_named(name, value, depth));
    if assigned.is_some() {
        return assigned;
    }
    if word.contains(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|')) {
        return scan_shell(word, depth);
    }
    let flag = previous.filter(|p| p.starts_with('-') && !p.contains('=') && is_name(p))?;
    scan_named(flag, word, depth)
}

/// A value under a name (env variable, flag, assignment, JSON key, query parameter).
fn scan_named(name: &str, value: &str, depth: u8) -> Option<Kind> {
    if let Some(kind) = header_credential(value) {
        return Some(kind);
    }
    if let Some(kind) = credential_under(name, value) {
        return Some(kind);
    }
    if value.contains(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '=')) {
        return scan_shell(value, depth);
    }
    None
}

/// Split a shell string (or a `Key=Value;` connection string) into words and scan each.
fn scan_shell(text: &str, depth: u8) -> Option<Kind> {
    if depth >= MAX_DEPTH {
        return None;
    }
    with_previous(&shell_words(text))
        .find_map(|(previous, word)| scan_word(word, previous, depth + 1))
}

/// Each word of `words` with the word before it.
fn with_previous<S: AsRef<str>>(words: &[S]) -> impl Iterator<Item = (Option<&str>, &str)> {
    let previous = std::iter::once(None).chain(words.iter().map(|w| Some(w.as_ref())));
    previous.zip(words.iter().map(AsRef::as_ref))
}

/// The kind of credential `value` is under the variable, flag or key `name`, if it is one.
fn credential_under(name: &str, value: &str) -> Option<Kind> {
    let words = name_words(name);
    if matches!(
        words
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["u"] | ["user"] | ["proxy", "user"]
    ) {
        let (user, password) = value.split_once(':')?;
        return (!user.is_empty() && looks_like_secret(password)).then_some(USER_OPTION);
    }
    let password_word = credential_words(&words)?;
    let value = unquote(value.trim());
    if looks_like_secret(value) {
        let aws = words.iter().any(|w| w == "aws") && words.iter().any(|w| w == "secret");
        return Some(if aws && is_aws_secret_key(value) {
            AWS_SECRET
        } else {
            HIGH_ENTROPY
        });
    }
    (password_word && looks_like_passphrase(value)).then_some(PASSPHRASE)
}

/// Credentials recognised by their format anywhere in `text`: prefixed tokens, private
/// key blocks, JWTs, webhook URLs, SAS tokens, URL passwords, `Authorization:` headers,
/// service-account and other JSON documents, and base64 blobs holding any of these.
fn well_known(text: &str, depth: u8) -> Option<Kind> {
    if let Some(kind) = known_format(text).or_else(|| authorization_anywhere(text)) {
        return Some(kind);
    }
    if depth < MAX_DEPTH {
        if let Some(kind) = json_credential(text, depth).or_else(|| query_credential(text, depth)) {
            return Some(kind);
        }
        if let Some(decoded) = decode_base64_blob(text) {
            return well_known(&decoded, depth + 1);
        }
    }
    None
}

/// Credential-named keys of a JSON document (`"password": "…"`, `"auth": "…"`).
fn json_credential(text: &str, depth: u8) -> Option<Kind> {
    if !text.contains("\":") && !text.contains("\" :") {
        return None;
    }
    let pairs = json_string_members(text);
    pairs
        .iter()
        .find_map(|(key, value)| credential_under(key, value))
        .or_else(|| {
            pairs
                .iter()
                .find_map(|(_, value)| well_known(value, depth + 1))
        })
}

/// Credential-named query parameters of a URL: `?api_key=…`, `&access_token=…`.
fn query_credential(text: &str, depth: u8) -> Option<Kind> {
    url_query_parameters(text).find_map(|(name, value)| {
        credential_under(name, value).or_else(|| well_known(value, depth + 1))
    })
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Values made of one marker repeated, as long as a value may be: each matcher reads a
    /// bounded stretch per place or examines a bounded number of places, so these are
    /// decided at once (see the module's constants) instead of in time growing with the
    /// square of their length. Longer values are reported, not scanned.
    #[test]
    fn hostile_values_are_decided_and_overlong_ones_reported() {
        let fill = |unit: &str| unit.repeat((MAX_SCANNED_LEN - 64) / unit.len());
        let cases: Vec<(String, Option<Kind>)> = vec![
            (fill("AKIA"), None),
            (fill("eyJ"), None),
            (fill("eyJa."), None),
            (fill("{\"a\":"), None),
            (fill("a://"), None),
            (fill("a:b@"), None),
            (fill("Authorization: "), None),
            (fill("sig="), None),
            (fill("sk-"), None),
            (fill("SG."), None),
            (fill("-----BEGIN "), None),
            (
                format!("{}AKIAIOSFODNN7EXAMPLE", fill(" ")),
                Some("AWS access key ID"),
            ),
            ("x".repeat(MAX_SCANNED_LEN + 1), Some(TOO_LONG)),
        ];
        for (value, expected) in &cases {
            let head: String = value.chars().take(12).collect();
            assert_eq!(detect_credential(None, value), *expected, "{head}…");
            let arguments = [value.as_str()];
            let findings = scan_arguments("args", &arguments);
            assert_eq!(findings.first().map(|f| f.kind), *expected, "{head}…");
        }
    }

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
            (Some("AUTHOR"), "Jane-Doe-Maintainer", None),
            (Some("GIT_AUTHOR_EMAIL"), "dev@example.com", None),
            (Some("OAUTH_AUDIENCE"), "api.example.com", None),
            (Some("SECRET_NAME"), "my-app-secrets", None),
            (Some("DB_PASS"), "Zx81kQ2mLp0aT7vN", Some(HIGH_ENTROPY)),
            (Some("SMTP_PASS"), "Zx81kQ2mLp0aT7vN", Some(HIGH_ENTROPY)),
            (
                Some("ENCRYPTION_KEY"),
                "c2VjcmV0LWtleS0xMjM0NTY3OA==",
                Some(HIGH_ENTROPY),
            ),
            (
                Some("SIGNING_KEY"),
                "9f86d081884c7d659a2feaa0c55ad015",
                Some(HIGH_ENTROPY),
            ),
            (
                Some("AWS_SECRET_ACCESS_KEY"),
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                Some(AWS_SECRET),
            ),
            (
                Some("GPG_PASSPHRASE"),
                "tumble-orchid-vapor-kettle",
                Some(PASSPHRASE),
            ),
            (
                Some("JAVA_OPTS"),
                "-Xmx1g -Dspring.datasource.password=Zx81kQ2mLp0aT7vN",
                Some(HIGH_ENTROPY),
            ),
            (
                Some("JAVA_OPTS"),
                "-Xmx1g -XX:+UseG1GC -Dspring.profiles.active=prod",
                None,
            ),
            (
                Some("CONNECTION"),
                "Server=sql;Database=app;Password=Zx81kQ2mLp0aT7vN;Encrypt=true",
                Some(HIGH_ENTROPY),
            ),
            (
                Some("SPRING_APPLICATION_JSON"),
                r#"{"spring":{"datasource":{"password":"Zx81kQ2mLp0aT7vN"}}}"#,
                Some(HIGH_ENTROPY),
            ),
            (
                Some("GOOGLE_CREDENTIALS"),
                r#"{"type": "service_account", "project_id": "acme"}"#,
                Some(SERVICE_ACCOUNT),
            ),
            (
                Some("WORKLOAD_IDENTITY"),
                r#"{"type": "external_account", "token_url": "https://sts.googleapis.com/v1/token"}"#,
                None,
            ),
            (
                Some("GCP_KEY"),
                "eyJ0eXBlIjogInNlcnZpY2VfYWNjb3VudCIsICJwcm9qZWN0X2lkIjogImFjbWUifQ==",
                Some(SERVICE_ACCOUNT),
            ),
            (
                None,
                "xoxe-1-Zx81kQ2mLp0aT7vNZx81kQ2mLp0aT7vN",
                Some("Slack token"),
            ),
            (None, "xoxr-1234567890-Zx81kQ2mLp0a", Some("Slack token")),
            (
                None,
                "https://hooks.slack.com/services/T0123ABCD/B0123456789/Zx81kQ2mLp0aT7vNZx81kQ2m",
                Some("Slack webhook URL"),
            ),
            (
                None,
                "sk_test_Zx81kQ2mLp0aT7vNZx81",
                Some("Stripe test key"),
            ),
            (None, "pk_live_Zx81kQ2mLp0aT7vNZx81", None),
            (
                None,
                "SK0123456789abcdef0123456789abcdef",
                Some("Twilio API key"),
            ),
            (None, "AC0123456789abcdef0123456789abcdef", None),
            (
                None,
                "SG.Zx81kQ2mLp0aT7vNZx81kQ.Zx81kQ2mLp0aT7vNZx81kQ2mLp0aT7vNZx81kQ2mLp0",
                Some("SendGrid API key"),
            ),
            (
                None,
                "-----BEGIN PGP PRIVATE KEY BLOCK-----",
                Some("private key block"),
            ),
            (
                None,
                "-----BEGIN ENCRYPTED PRIVATE KEY-----",
                Some("private key block"),
            ),
            (None, "-----BEGIN PUBLIC KEY-----", None),
            (
                Some("DATABASE_URL"),
                "postgres://u:pa/ss#w@host/db",
                Some(URL_PASSWORD),
            ),
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
    fn arguments_shell_strings_and_headers() {
        let token = "Zx81kQ2mLp0aT7vN4rW9yB3c";
        let cases: Vec<(Vec<String>, Option<&str>)> = vec![
            (
                vec![
                    "sh".into(),
                    "-c".into(),
                    format!("export DB_PASSWORD={token} && ./run"),
                ],
                Some(HIGH_ENTROPY),
            ),
            (
                vec!["-c".into(), format!("FOO=bar DB_PASS='{token}' ./x")],
                Some(HIGH_ENTROPY),
            ),
            (
                vec![
                    "sh".into(),
                    "-c".into(),
                    format!("mysql --password {token} -e 'select 1'"),
                ],
                Some(HIGH_ENTROPY),
            ),
            (
                vec![format!("--header=Authorization: Bearer {token}")],
                Some(HEADER),
            ),
            (
                vec!["-H".into(), "Authorization: Basic dXNlcjpodW50ZXIy".into()],
                Some(HEADER),
            ),
            (
                vec!["--header".into(), format!("X-Api-Key: {token}")],
                Some(HEADER),
            ),
            (
                vec![
                    "sh".into(),
                    "-c".into(),
                    format!("curl -H \"Authorization: Bearer {token}\" https://x"),
                ],
                Some(HEADER),
            ),
            (
                vec!["--user".into(), format!("admin:{token}")],
                Some(USER_OPTION),
            ),
            (vec!["--header=Authorization: Bearer $(TOKEN)".into()], None),
            (
                vec!["-H".into(), "Authorization: Bearer ${TOKEN}".into()],
                None,
            ),
            (vec!["--header=Content-Type: application/json".into()], None),
            (vec!["--auth-provider=keycloak-oidc".into()], None),
            (vec!["-u".into(), "1000:1000".into()], None),
            (
                vec![
                    "sh".into(),
                    "-c".into(),
                    "export DB_PASSWORD=$(cat /run/secrets/db) && ./run".into(),
                ],
                None,
            ),
            (
                vec![
                    "sh".into(),
                    "-c".into(),
                    "echo \"$PW\" | docker login --password-stdin registry.example.com".into(),
                ],
                None,
            ),
        ];
        for (arguments, expected) in cases {
            let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
            let findings = scan_arguments("args", &arguments);
            assert_eq!(findings.first().map(|f| f.kind), expected, "{arguments:?}");
            assert!(findings.len() <= 1, "{arguments:?}");
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
