//! Variable, flag and property names: their words, and whether they name a credential
//! (`DB_PASSWORD`, `--api-key`, `clientSecret`) or refer to one (`SECRET_NAME`,
//! `DB_PASSWORD_FILE`).

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

/// Is this a variable, flag or property name (`DB_PASSWORD`, `--db-password`,
/// `-Dspring.datasource.password`)?
pub(super) fn is_name(name: &str) -> bool {
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
pub(super) fn credential_words(words: &[String]) -> Option<bool> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
