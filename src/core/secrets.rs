//! Credential detection in container env values, args and command (SPEC §3 `secretDetection`).
//!
//! A value is a credential when
//! 1. it contains a well-known credential format anywhere (cloud keys, vendor tokens, private
//!    key blocks, JWTs, webhook URLs; see [`FORMATS`] and `well_known_format`), also inside
//!    a base64 blob or a JSON document;
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

/// What a credential looks like, e.g. `AWS access key ID`.
pub type Kind = &'static str;

pub const HIGH_ENTROPY: Kind = "high-entropy value under a password-like name";
pub const PASSPHRASE: Kind = "passphrase under a password-like name";
pub const URL_PASSWORD: Kind = "password in a URL";
pub const HEADER: Kind = "credential in an HTTP header";
pub const USER_OPTION: Kind = "password in a user:password option";
pub const AWS_SECRET: Kind = "AWS secret access key";
pub const SERVICE_ACCOUNT: Kind = "Google service account key";

/// A value must be at least this long and this random (bits per character, Shannon) to
/// count as a credential under a password-like name.
const SECRET_MIN_LEN: usize = 10;
const SECRET_MIN_BITS: f64 = 3.0;

/// How deep shell strings inside shell strings (or JSON inside base64) are followed.
const MAX_DEPTH: u8 = 3;

/// Name words that mark a credential on their own. A word also counts when it ends with
/// one of the longer ones (`dbpassword`, `accesstoken`).
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "pass",
    "pwd",
    "secret",
    "secrets",
    "token",
    "credential",
    "credentials",
    "creds",
    "apikey",
    "accesskey",
    "secretkey",
    "privatekey",
];
const SECRET_SUFFIXES: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "secretkey",
    "privatekey",
    "credentials",
];
/// Words for which a value made of plain words (a passphrase) still counts.
const PASSWORD_WORDS: &[&str] = &["password", "passwd", "passphrase", "pass", "pwd"];

/// `KEY` is a credential only after one of these (`API_KEY`, `SIGNING_KEY`, `x-api-key`);
/// `ROUTING_KEY`, `CACHE_KEY` or `PUBLIC_KEY` are not.
const KEY_QUALIFIERS: &[&str] = &[
    "api",
    "access",
    "secret",
    "private",
    "encryption",
    "encrypt",
    "decryption",
    "signing",
    "sign",
    "signature",
    "master",
    "hmac",
    "jwt",
    "ssh",
    "session",
    "shared",
    "account",
    "storage",
    "client",
    "app",
    "license",
    "crypto",
    "cipher",
    "aes",
    "enc",
    "admin",
    "service",
    "subscription",
    "auth",
    "primary",
    "secondary",
    "root",
    "webhook",
    "deploy",
    "ingest",
    "server",
    "sas",
];

/// `AUTH` (`BASIC_AUTH`, `REDIS_AUTH`, `--auth=`) is a credential only as the last word:
/// `AUTH_PROVIDER`, `AUTH_URL`, `AUTH_MODE`, `AUTH_ENABLED` are settings.
const AUTH_WORDS: &[&str] = &["auth", "authorization", "authorisation"];

/// Words after a credential word that make the name a reference to, or a setting of, a
/// credential rather than the credential itself: `SECRET_NAME`, `DB_PASSWORD_FILE`,
/// `TOKEN_URL`, `TOKEN_TTL`. `AWS_ACCESS_KEY_ID` is one too: an access key ID identifies a
/// key and is not secret on its own; real AWS key IDs are caught by their `AKIA…` format.
const REFERENCE_WORDS: &[&str] = &[
    "name",
    "names",
    "file",
    "files",
    "filename",
    "path",
    "paths",
    "dir",
    "directory",
    "ref",
    "reference",
    "id",
    "ids",
    "arn",
    "url",
    "uri",
    "urls",
    "endpoint",
    "host",
    "hostname",
    "port",
    "issuer",
    "audience",
    "ttl",
    "lifetime",
    "expiry",
    "expiration",
    "expires",
    "timeout",
    "length",
    "len",
    "size",
    "type",
    "kind",
    "mode",
    "provider",
    "enabled",
    "enable",
    "disabled",
    "required",
    "header",
    "location",
    "mount",
    "env",
    "var",
    "source",
    "store",
    "backend",
    "format",
    "algorithm",
    "alg",
    "policy",
    "min",
    "max",
    "count",
    "prefix",
    "suffix",
    "scope",
    "scopes",
    "stdin",
    "command",
    "cmd",
    "script",
    "version",
    "rotation",
    "interval",
    "field",
    "label",
    "selector",
    "namespace",
    "pattern",
    "regex",
    "rules",
    "complexity",
    "strength",
    "hint",
];

/// What kind of credential a value looks like, if any. `name` is the env variable or flag
/// the value is under; `None` scans the value alone (formats, URLs, headers, and any
/// `NAME=value` or `--flag value` inside it).
pub fn detect_credential(name: Option<&str>, value: &str) -> Option<Kind> {
    match name {
        Some(name) => well_known(value, 0)
            .or_else(|| header_credential(value))
            .or_else(|| scan_named(name, value, 0)),
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
    for (i, &argument) in arguments.iter().enumerate() {
        let previous = i.checked_sub(1).and_then(|p| arguments.get(p)).copied();
        if let Some(kind) = scan_word(argument, previous, 0) {
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
    let words = name_words(name);
    if let Some(kind) = credential_under(&words, value) {
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
    let words = shell_words(text);
    words.iter().enumerate().find_map(|(i, word)| {
        let previous = i
            .checked_sub(1)
            .and_then(|p| words.get(p))
            .map(String::as_str);
        scan_word(word, previous, depth + 1)
    })
}

/// Is this a variable, flag or property name (`DB_PASSWORD`, `--db-password`,
/// `-Dspring.datasource.password`)?
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().any(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The words of a variable, flag or property name, lower-cased: split on anything but
/// letters and digits, and at camelCase boundaries (`apiKey`, `APIKey` → `api`, `key`).
pub fn name_words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut words = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        let previous = i.checked_sub(1).and_then(|p| chars.get(p)).copied();
        let next = chars.get(i + 1).copied();
        let boundary = c.is_ascii_uppercase()
            && previous.is_some_and(|p| {
                p.is_ascii_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_ascii_uppercase() && next.is_some_and(|n| n.is_ascii_lowercase()))
            });
        if boundary && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        current.push(c.to_ascii_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Does this variable or flag name suggest a credential? By word: `DB_PASS`,
/// `--private-key`, `clientSecret`, `BASIC_AUTH`, but not `AUTHOR`, `AUTH_PROVIDER`,
/// `SECRET_NAME` or `DB_PASSWORD_FILE`.
pub fn is_password_like(name: &str) -> bool {
    credential_words(&name_words(name)).is_some()
}

/// The credential word (or pair) a name is about, if any: `Some(true)` when it is a
/// password word, under which plain-word passphrases count too.
fn credential_words(words: &[String]) -> Option<bool> {
    let mut found = None;
    for (i, word) in words.iter().enumerate() {
        let word = word.as_str();
        let following = words.get(i + 1..).unwrap_or_default();
        let previous = i
            .checked_sub(1)
            .and_then(|p| words.get(p))
            .map(String::as_str);
        let is_credential = SECRET_WORDS.contains(&word)
            || SECRET_SUFFIXES
                .iter()
                .any(|s| word.len() > s.len() && word.ends_with(s))
            || (matches!(word, "key" | "keys")
                && previous.is_some_and(|p| KEY_QUALIFIERS.contains(&p)))
            || (AUTH_WORDS.contains(&word) && following.is_empty());
        if is_credential
            && !following
                .iter()
                .any(|w| REFERENCE_WORDS.contains(&w.as_str()))
        {
            let password = PASSWORD_WORDS.iter().any(|p| word.ends_with(p));
            found = Some(found.unwrap_or(false) || password);
        }
    }
    found
}

/// The kind of credential `value` is under a name made of `words`, if it is one.
fn credential_under(words: &[String], value: &str) -> Option<Kind> {
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
    let password_word = credential_words(words)?;
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

fn is_aws_secret_key(value: &str) -> bool {
    value.len() == 40
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '+'))
}

fn unquote(value: &str) -> &str {
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
fn looks_like_passphrase(value: &str) -> bool {
    let words = value
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .count();
    value.len() >= 16
        && words >= 3
        && !value.contains(char::is_whitespace)
        && !is_reference(value)
        && !value.contains("://")
        && !is_path(value)
        && !value.contains('.')
        && !value.contains('/')
        && !is_placeholder(value)
}

/// `$(VAR)`, `${VAR}`, `$VAR`, `{{ .Values.x }}`, `%s`: filled in from elsewhere.
fn is_reference(value: &str) -> bool {
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

fn is_placeholder(value: &str) -> bool {
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
fn is_wordish(value: &str) -> bool {
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

/// Which characters a token of a [`Format`] is made of.
#[derive(Clone, Copy)]
enum Chars {
    /// Letters and digits.
    Alnum,
    /// Letters, digits, `_` and `-`.
    Token,
    /// Letters, digits, `_`, `-` and `.`.
    DottedToken,
    /// Upper-case letters and digits.
    UpperAlnum,
    /// Hex digits, either case.
    Hex,
    /// The base64 alphabet (`+`, `/`, `=`) and its URL-encoded form (`%2B`…).
    Base64,
}

impl Chars {
    fn contains(self, c: char) -> bool {
        match self {
            Chars::Alnum => c.is_ascii_alphanumeric(),
            Chars::Token => c.is_ascii_alphanumeric() || matches!(c, '_' | '-'),
            Chars::DottedToken => c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'),
            Chars::UpperAlnum => c.is_ascii_uppercase() || c.is_ascii_digit(),
            Chars::Hex => c.is_ascii_hexdigit(),
            Chars::Base64 => c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '%'),
        }
    }
}

/// A credential recognised by a fixed prefix followed by a token.
struct Format {
    prefix: &'static str,
    /// Characters after the prefix: at least this many (exactly, when `exact`).
    len: usize,
    exact: bool,
    chars: Chars,
    kind: Kind,
}

const fn at_least(prefix: &'static str, len: usize, chars: Chars, kind: Kind) -> Format {
    Format {
        prefix,
        len,
        exact: false,
        chars,
        kind,
    }
}

const fn exactly(prefix: &'static str, len: usize, chars: Chars, kind: Kind) -> Format {
    Format {
        prefix,
        len,
        exact: true,
        chars,
        kind,
    }
}

/// Prefixed token formats. The prefix must start a word (no letter or digit before it).
/// Stripe test keys (`sk_test_`) count: they open the account's test mode (customers,
/// webhooks) and travel the same way as live keys; publishable keys (`pk_…`), Twilio
/// account SIDs (`AC…`) and AWS unique IDs (`AIDA…`, `AROA…`) are not secrets.
const FORMATS: &[Format] = &[
    exactly("AKIA", 16, Chars::UpperAlnum, "AWS access key ID"),
    exactly("ASIA", 16, Chars::UpperAlnum, "AWS access key ID"),
    exactly("ABIA", 16, Chars::UpperAlnum, "AWS access key ID"),
    exactly("ACCA", 16, Chars::UpperAlnum, "AWS access key ID"),
    at_least("ghp_", 36, Chars::Alnum, "GitHub token"),
    at_least("gho_", 36, Chars::Alnum, "GitHub token"),
    at_least("ghu_", 36, Chars::Alnum, "GitHub token"),
    at_least("ghs_", 36, Chars::Alnum, "GitHub token"),
    at_least("ghr_", 36, Chars::Alnum, "GitHub token"),
    at_least("github_pat_", 22, Chars::Token, "GitHub token"),
    at_least("glpat-", 20, Chars::Token, "GitLab token"),
    at_least("glrt-", 20, Chars::Token, "GitLab token"),
    at_least("gldt-", 20, Chars::Token, "GitLab token"),
    at_least("glptt-", 20, Chars::Token, "GitLab token"),
    at_least("GR1348941", 20, Chars::Token, "GitLab token"),
    at_least("xoxb-", 10, Chars::DottedToken, "Slack token"),
    at_least("xoxp-", 10, Chars::DottedToken, "Slack token"),
    at_least("xoxa-", 10, Chars::DottedToken, "Slack token"),
    at_least("xoxs-", 10, Chars::DottedToken, "Slack token"),
    at_least("xoxe-", 10, Chars::DottedToken, "Slack token"),
    at_least("xoxe.", 10, Chars::DottedToken, "Slack token"),
    at_least("xoxr-", 10, Chars::DottedToken, "Slack token"),
    at_least("xoxo-", 10, Chars::DottedToken, "Slack token"),
    at_least("xapp-", 10, Chars::DottedToken, "Slack token"),
    at_least("sk_live_", 16, Chars::Alnum, "Stripe live key"),
    at_least("rk_live_", 16, Chars::Alnum, "Stripe live key"),
    at_least("sk_test_", 16, Chars::Alnum, "Stripe test key"),
    at_least("rk_test_", 16, Chars::Alnum, "Stripe test key"),
    at_least("whsec_", 24, Chars::Alnum, "Stripe webhook secret"),
    at_least("AIza", 35, Chars::Token, "Google API key"),
    exactly("npm_", 36, Chars::Alnum, "npm token"),
    at_least("pypi-AgEIcHlwaS5vcmc", 50, Chars::Token, "PyPI token"),
    at_least(
        "pypi-AgENdGVzdC5weXBpLm9yZw",
        50,
        Chars::Token,
        "PyPI token",
    ),
    exactly("SK", 32, Chars::Hex, "Twilio API key"),
    at_least("hvs.", 24, Chars::Token, "Vault token"),
    at_least("hvb.", 24, Chars::Token, "Vault token"),
    exactly("dop_v1_", 64, Chars::Hex, "DigitalOcean token"),
    exactly("shpat_", 32, Chars::Hex, "Shopify token"),
    exactly("shpss_", 32, Chars::Hex, "Shopify token"),
    exactly("shpca_", 32, Chars::Hex, "Shopify token"),
    at_least("hf_", 30, Chars::Alnum, "Hugging Face token"),
    at_least("dckr_pat_", 20, Chars::Token, "Docker Hub token"),
    at_least("glsa_", 32, Chars::Token, "Grafana token"),
    at_least("glc_", 32, Chars::Base64, "Grafana token"),
    exactly("NRAK-", 27, Chars::UpperAlnum, "New Relic API key"),
    at_least("sk-ant-", 32, Chars::Token, "Anthropic API key"),
    at_least("sk-proj-", 40, Chars::Token, "OpenAI API key"),
    exactly("dapi", 32, Chars::Hex, "Databricks token"),
    at_least(
        "AccountKey=",
        20,
        Chars::Base64,
        "Azure storage account key",
    ),
    at_least(
        "SharedAccessKey=",
        20,
        Chars::Base64,
        "Azure shared access key",
    ),
];

/// Credentials recognised by their format anywhere in `text`: prefixed tokens, private
/// key blocks, JWTs, webhook URLs, SAS tokens, URL passwords, `Authorization:` headers,
/// service-account and other JSON documents, and base64 blobs holding any of these.
fn well_known(text: &str, depth: u8) -> Option<Kind> {
    if is_service_account_key(text) {
        return Some(SERVICE_ACCOUNT);
    }
    if let Some(format) = FORMATS.iter().find(|f| has_format(text, f)) {
        return Some(format.kind);
    }
    if has_private_key_block(text) {
        return Some("private key block");
    }
    if looks_like_jwt(text) {
        return Some("JSON Web Token");
    }
    if let Some(kind) = webhook_url(text) {
        return Some(kind);
    }
    if is_sas_token(text) {
        return Some("Azure SAS token");
    }
    if has_openai_marker(text) {
        return Some("OpenAI API key");
    }
    if has_sendgrid_key(text) {
        return Some("SendGrid API key");
    }
    if has_url_password(text) {
        return Some(URL_PASSWORD);
    }
    if let Some(kind) = authorization_anywhere(text) {
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

/// Is `text[i..]` at the start of a word (no letter or digit right before it)?
fn starts_word(text: &str, i: usize) -> bool {
    text[..i]
        .chars()
        .next_back()
        .is_none_or(|c| !c.is_ascii_alphanumeric())
}

fn has_format(text: &str, format: &Format) -> bool {
    text.match_indices(format.prefix).any(|(i, _)| {
        let rest = &text[i + format.prefix.len()..];
        let run = rest
            .chars()
            .take_while(|&c| format.chars.contains(c))
            .count();
        // Prefixes ending in a letter or digit are a word on their own (`SK…`, `AKIA…`);
        // `AccountKey=` follows a `;`, which counts as a start too.
        starts_word(text, i)
            && if format.exact {
                run == format.len
                    && rest
                        .chars()
                        .nth(run)
                        .is_none_or(|c| !c.is_ascii_alphanumeric())
            } else {
                run >= format.len
            }
    })
}

/// `-----BEGIN [RSA |EC |OPENSSH |ENCRYPTED |PGP ]PRIVATE KEY[ BLOCK]-----`.
fn has_private_key_block(text: &str) -> bool {
    text.match_indices("-----BEGIN ").any(|(i, _)| {
        let rest = &text[i + "-----BEGIN ".len()..];
        rest.split_once("-----")
            .is_some_and(|(label, _)| label.len() < 40 && label.contains("PRIVATE KEY"))
    })
}

fn looks_like_jwt(value: &str) -> bool {
    value.match_indices("eyJ").any(|(i, _)| {
        let token: String = value[i..]
            .chars()
            .take_while(|&c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .collect();
        let parts: Vec<&str> = token.split('.').collect();
        parts.len() == 3 && parts[1].starts_with("eyJ") && parts.iter().all(|p| p.len() >= 8)
    })
}

/// Slack and Discord incoming-webhook URLs: the URL is the credential.
fn webhook_url(text: &str) -> Option<Kind> {
    let path_run = |rest: &str| {
        rest.chars()
            .take_while(|&c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'))
            .count()
    };
    for (marker, kind) in [
        ("hooks.slack.com/services/", "Slack webhook URL"),
        ("hooks.slack.com/workflows/", "Slack webhook URL"),
        ("hooks.slack.com/triggers/", "Slack webhook URL"),
        ("discord.com/api/webhooks/", "Discord webhook URL"),
        ("discordapp.com/api/webhooks/", "Discord webhook URL"),
    ] {
        if text
            .match_indices(marker)
            .any(|(i, _)| path_run(&text[i + marker.len()..]) >= 20)
        {
            return Some(kind);
        }
    }
    None
}

/// An Azure shared access signature: `sv=…&…&sig=<base64>`.
fn is_sas_token(text: &str) -> bool {
    (text.contains("sv=") || text.contains("se="))
        && text.match_indices("sig=").any(|(i, _)| {
            let before = text[..i].chars().next_back();
            before.is_none_or(|c| matches!(c, '?' | '&' | ';' | ' ' | '"' | '\''))
                && text[i + 4..]
                    .chars()
                    .take_while(|&c| Chars::Base64.contains(c))
                    .count()
                    >= 20
        })
}

/// OpenAI keys carry `T3BlbkFJ` (base64 of `OpenAI`) in the middle: `sk-…T3BlbkFJ…`.
fn has_openai_marker(text: &str) -> bool {
    text.match_indices("sk-").any(|(i, _)| {
        let token: String = text[i..]
            .chars()
            .take_while(|&c| Chars::Token.contains(c))
            .collect();
        starts_word(text, i) && token.len() >= 40 && token.contains("T3BlbkFJ")
    })
}

/// `SG.<22>.<43>`.
fn has_sendgrid_key(text: &str) -> bool {
    text.match_indices("SG.").any(|(i, _)| {
        let rest = &text[i + 3..];
        let id = rest
            .chars()
            .take_while(|&c| Chars::Token.contains(c))
            .count();
        starts_word(text, i)
            && id >= 16
            && rest[id..].strip_prefix('.').is_some_and(|secret| {
                secret
                    .chars()
                    .take_while(|&c| Chars::Token.contains(c))
                    .count()
                    >= 30
            })
    })
}

/// `scheme://user:password@host…`, e.g. a database URL with its password inline. The
/// password may hold `/`, `#` or `@`: the authority ends at the last `@` that is followed
/// by a host, wherever the path starts.
fn has_url_password(text: &str) -> bool {
    text.match_indices("://").any(|(i, _)| {
        let url: &str = text[i + 3..]
            .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .next()
            .unwrap_or_default();
        url.match_indices('@').any(|(at, _)| {
            let (userinfo, host) = (&url[..at], &url[at + 1..]);
            let host_ok = host
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '[');
            let Some((user, password)) = userinfo.split_once(':') else {
                return false;
            };
            // `host:8443/users/@me` is a port and a path, not a password.
            let port_and_path = password
                .split_once('/')
                .is_some_and(|(port, _)| port.chars().all(|c| c.is_ascii_digit()));
            host_ok
                && !user.contains(['/', '?', '#', '@'])
                && !password.is_empty()
                && !port_and_path
                && !is_reference(password)
                && !password.chars().all(|c| c == '*' || c == 'x')
                && !is_placeholder(password)
        })
    })
}

/// `Authorization: Bearer <token>` (or `Basic`, `token`, …) anywhere, also as a JSON key.
fn authorization_anywhere(text: &str) -> Option<Kind> {
    let lower = text.to_ascii_lowercase();
    lower.match_indices("authorization").find_map(|(i, _)| {
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
fn header_credential(value: &str) -> Option<Kind> {
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

/// A Google service-account key file: `"type": "service_account"` or a `"private_key"`.
fn is_service_account_key(text: &str) -> bool {
    (text.contains("service_account") || text.contains("private_key"))
        && json_pairs(text).iter().any(|(key, value)| {
            (key == "type" && value == "service_account")
                || (key == "private_key" && value.len() >= 20)
        })
}

/// Credential-named keys of a JSON document (`"password": "…"`, `"auth": "…"`).
fn json_credential(text: &str, depth: u8) -> Option<Kind> {
    if !text.contains("\":") && !text.contains("\" :") {
        return None;
    }
    let pairs = json_pairs(text);
    pairs
        .iter()
        .find_map(|(key, value)| credential_under(&name_words(key), value))
        .or_else(|| {
            pairs
                .iter()
                .find_map(|(_, value)| well_known(value, depth + 1))
        })
}

/// The `"key": "string"` pairs of a JSON document, unescaped, at any depth.
fn json_pairs(text: &str) -> Vec<(String, String)> {
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

/// Credential-named query parameters of a URL: `?api_key=…`, `&access_token=…`.
fn query_credential(text: &str, depth: u8) -> Option<Kind> {
    text.match_indices("://").find_map(|(i, _)| {
        let url = text[i + 3..]
            .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '#'))
            .next()
            .unwrap_or_default();
        let (_, query) = url.split_once('?')?;
        query.split('&').find_map(|parameter| {
            let (name, value) = parameter.split_once('=')?;
            credential_under(&name_words(name), value).or_else(|| well_known(value, depth + 1))
        })
    })
}

/// The decoded text of a value that is entirely one base64 blob (32 characters or more),
/// when that text is printable.
fn decode_base64_blob(text: &str) -> Option<String> {
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

/// Standard or URL-safe base64, padding optional.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut bits = 0u32;
    let mut count = 0u8;
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

/// Split a shell string into words: whitespace, `;`, `&` and `|` separate words outside
/// quotes; quotes and backslashes are removed as a shell would.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => current.extend(chars.next()),
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                current.extend(chars.next());
                in_word = true;
            }
            (None, c) if c.is_whitespace() || matches!(c, ';' | '&' | '|') => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
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
    fn names_split_into_words() {
        let cases: &[(&str, &[&str])] = &[
            ("DB_PASSWORD", &["db", "password"]),
            ("--db-password", &["db", "password"]),
            (
                "-Dspring.datasource.password",
                &["dspring", "datasource", "password"],
            ),
            ("clientSecret", &["client", "secret"]),
            ("APIKey", &["api", "key"]),
            ("oauth2Token", &["oauth2", "token"]),
            ("X-Api-Key", &["x", "api", "key"]),
        ];
        for (name, words) in cases {
            assert_eq!(name_words(name), *words, "{name}");
        }
    }

    #[test]
    fn credential_names_match_by_word() {
        let cases: &[(&str, bool)] = &[
            ("DB_PASSWORD", true),
            ("DB_PASS", true),
            ("SMTP_PASS", true),
            ("PGPASSWORD", true),
            ("dbPassword", true),
            ("ENCRYPTION_KEY", true),
            ("SIGNING_KEY", true),
            ("--access-key", true),
            ("--private-key", true),
            ("AWS_SECRET_ACCESS_KEY", true),
            ("SECRET_KEY_BASE", true),
            ("clientSecret", true),
            ("X-Api-Key", true),
            ("GITHUB_TOKEN", true),
            ("SMTP_CREDENTIALS", true),
            ("BASIC_AUTH", true),
            ("--auth", true),
            ("AUTHOR", false),
            ("GIT_AUTHOR_EMAIL", false),
            ("OAUTH_AUDIENCE", false),
            ("--auth-provider", false),
            ("AUTH_URL", false),
            ("AUTH_MODE", false),
            ("AUTH_ENABLED", false),
            ("SECRET_NAME", false),
            ("SECRET_REF", false),
            ("DB_PASSWORD_FILE", false),
            ("JWT_SECRET_PATH", false),
            ("TOKEN_URL", false),
            ("TOKEN_TTL", false),
            ("AWS_ACCESS_KEY_ID", false),
            ("--password-stdin", false),
            ("ROUTING_KEY", false),
            ("PUBLIC_KEY", false),
            ("BYPASS_CACHE", false),
            ("PASSWORD_MIN_LENGTH", false),
        ];
        for (name, expected) in cases {
            assert_eq!(is_password_like(name), *expected, "{name}");
        }
    }

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

    #[test]
    fn url_passwords() {
        let cases: &[(&str, bool)] = &[
            ("postgres://u:pa/ss#w@host/db", true),
            ("redis://:p@ss@redis:6379/0", true),
            ("http://user:s3cret@proxy:3128", true),
            ("postgres://shop@db.internal/shop", false),
            ("https://example.com:8443/users/@me", false),
            ("https://registry.npmjs.org/@acme/ui", false),
            ("https://api.example.com/v1?email=jane@example.com", false),
            ("postgres://app:${DB_PASSWORD}@db/app", false),
            ("postgres://app:$(DB_PASSWORD)@db/app", false),
            ("postgres://app:****@db/app", false),
        ];
        for (value, expected) in cases {
            assert_eq!(has_url_password(value), *expected, "{value}");
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
