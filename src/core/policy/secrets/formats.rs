//! Well-known credential formats, recognised anywhere in a text: prefixed vendor tokens
//! (the [`FORMATS`] table), private key blocks, JWTs, webhook URLs, Azure SAS tokens,
//! passwords in URLs, AWS secret keys and Google service-account JSON.

use std::sync::LazyLock;

use aho_corasick::AhoCorasick;

use super::embedded::json_string_members;
use super::values::{is_placeholder, is_reference};
use super::{Kind, SERVICE_ACCOUNT, URL_PASSWORD, first_occurrences};

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

    /// The longest start of `text` made of these characters (all ASCII, so its length in
    /// bytes is its length in characters).
    fn leading(self, text: &str) -> &str {
        let end = text.find(|c| !self.contains(c)).unwrap_or(text.len());
        &text[..end]
    }

    /// How many of `text`'s first characters are these characters, counting no further
    /// than `limit`: a matcher that needs a minimum length reads only that far, so a value
    /// made of one prefix repeated costs time in proportion to its length, not its square.
    fn leading_len(self, text: &str, limit: usize) -> usize {
        text.chars()
            .take(limit)
            .take_while(|&c| self.contains(c))
            .count()
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

/// The well-known format `text` holds, if any (see the module documentation).
pub(super) fn known_format(text: &str) -> Option<Kind> {
    if is_service_account_key(text) {
        return Some(SERVICE_ACCOUNT);
    }
    if let Some(format) = first_format(text) {
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
    None
}

/// Is `text[i..]` at the start of a word (no letter or digit right before it)?
fn starts_word(text: &str, i: usize) -> bool {
    text[..i]
        .chars()
        .next_back()
        .is_none_or(|c| !c.is_ascii_alphanumeric())
}

/// Does a character of `chars` end right before `text[i..]`? Then a token read from `i`
/// would only be the tail of a longer one; matchers that read a whole token start only
/// where none does, so the tokens they read never overlap.
fn inside_token(text: &str, i: usize, chars: Chars) -> bool {
    text[..i]
        .chars()
        .next_back()
        .is_some_and(|c| chars.contains(c))
}

/// Every [`FORMATS`] prefix, found in one pass over a text. Searching for each prefix in
/// turn set up 50 substring searchers per value, the largest part of a review's time
/// (BENCHMARKS.md, "Where the time goes now").
/// (`None` only if the fixed prefixes could not build one, which a unit test rules out.)
static PREFIXES: LazyLock<Option<AhoCorasick>> =
    LazyLock::new(|| AhoCorasick::new(FORMATS.iter().map(|format| format.prefix)).ok());

/// The first of [`FORMATS`], in table order, that `text` holds anywhere.
fn first_format(text: &str) -> Option<&'static Format> {
    let Some(prefixes) = PREFIXES.as_ref() else {
        // Never without an automaton in practice; still correct, prefix by prefix.
        return FORMATS.iter().find(|format| {
            text.match_indices(format.prefix)
                .any(|(i, _)| format_at(text, i, format))
        });
    };
    prefixes
        .find_overlapping_iter(text)
        .filter(|found| {
            FORMATS
                .get(found.pattern().as_usize())
                .is_some_and(|format| format_at(text, found.start(), format))
        })
        .map(|found| found.pattern().as_usize())
        .min()
        .and_then(|index| FORMATS.get(index))
}

/// Does `text` hold a token of `format` at byte `i`, where its prefix starts?
fn format_at(text: &str, i: usize, format: &Format) -> bool {
    let rest = &text[i + format.prefix.len()..];
    let run = format.chars.leading_len(rest, format.len + 1);
    // Prefixes ending in a letter or digit are a word on their own (`SK…`, `AKIA…`);
    // `AccountKey=` follows a `;`, which counts as a start too.
    starts_word(text, i)
        && if format.exact {
            run == format.len
                && rest[run..]
                    .chars()
                    .next()
                    .is_none_or(|c| !c.is_ascii_alphanumeric())
        } else {
            run >= format.len
        }
}

/// `-----BEGIN [RSA |EC |OPENSSH |ENCRYPTED |PGP ]PRIVATE KEY[ BLOCK]-----`.
fn has_private_key_block(text: &str) -> bool {
    text.match_indices("-----BEGIN ").any(|(i, _)| {
        let rest = &text[i + "-----BEGIN ".len()..];
        let label: String = rest.chars().take(45).collect();
        label
            .split_once("-----")
            .is_some_and(|(label, _)| label.len() < 40 && label.contains("PRIVATE KEY"))
    })
}

fn looks_like_jwt(value: &str) -> bool {
    value.match_indices("eyJ").any(|(i, _)| {
        if inside_token(value, i, Chars::DottedToken) {
            return false;
        }
        let token = Chars::DottedToken.leading(&value[i..]);
        let parts: Vec<&str> = token.split('.').collect();
        parts.len() == 3 && parts[1].starts_with("eyJ") && parts.iter().all(|p| p.len() >= 8)
    })
}

/// Slack and Discord incoming-webhook URLs: the URL is the credential.
fn webhook_url(text: &str) -> Option<Kind> {
    let path_run = |rest: &str| {
        rest.chars()
            .take(20)
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
                && Chars::Base64.leading_len(&text[i + 4..], 20) >= 20
        })
}

/// OpenAI keys carry `T3BlbkFJ` (base64 of `OpenAI`) in the middle: `sk-…T3BlbkFJ…`.
fn has_openai_marker(text: &str) -> bool {
    text.match_indices("sk-").any(|(i, _)| {
        if inside_token(text, i, Chars::Token) {
            return false;
        }
        let token = Chars::Token.leading(&text[i..]);
        token.len() >= 40 && token.contains("T3BlbkFJ")
    })
}

/// `SG.<22>.<43>`.
fn has_sendgrid_key(text: &str) -> bool {
    text.match_indices("SG.").any(|(i, _)| {
        if inside_token(text, i, Chars::Token) {
            return false;
        }
        let rest = &text[i + 3..];
        let id = Chars::Token.leading(rest).len();
        id >= 16
            && rest[id..]
                .strip_prefix('.')
                .is_some_and(|secret| Chars::Token.leading(secret).len() >= 30)
    })
}

/// `scheme://user:password@host…`, e.g. a database URL with its password inline. The
/// password may hold `/`, `#` or `@`: the authority ends at the last `@` that is followed
/// by a host, wherever the path starts.
fn has_url_password(text: &str) -> bool {
    first_occurrences(text, "://").any(|(i, _)| {
        let url: &str = text[i + 3..]
            .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .next()
            .unwrap_or_default();
        first_occurrences(url, "@").any(|(at, _)| {
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

pub(super) fn is_aws_secret_key(value: &str) -> bool {
    value.len() == 40
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '+'))
}

/// A Google service-account key file: `"type": "service_account"` or a `"private_key"`.
fn is_service_account_key(text: &str) -> bool {
    (text.contains("service_account") || text.contains("private_key"))
        && json_string_members(text).iter().any(|(key, value)| {
            (key == "type" && value == "service_account")
                || (key == "private_key" && value.len() >= 20)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The search [`first_format`] replaced: each prefix in turn, in table order.
    fn first_format_prefix_by_prefix(text: &str) -> Option<&'static Format> {
        FORMATS.iter().find(|format| {
            text.match_indices(format.prefix)
                .any(|(i, _)| format_at(text, i, format))
        })
    }

    /// Texts made of the table's prefixes and runs of the characters tokens are made of,
    /// so that prefixes meet, overlap, repeat and are cut short.
    fn texts_with_prefixes() -> impl Strategy<Value = String> {
        let prefix = prop::sample::select(FORMATS.iter().map(|f| f.prefix).collect::<Vec<_>>())
            .prop_map(str::to_string);
        let run = "[A-Za-z0-9_.;=+/%: -]{0,70}";
        prop::collection::vec(prop_oneof![prefix, run], 0..8).prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn one_pass_finds_the_format_the_prefix_by_prefix_search_found(text in texts_with_prefixes()) {
            prop_assert_eq!(
                first_format(&text).map(|f| f.kind),
                first_format_prefix_by_prefix(&text).map(|f| f.kind),
                "in {:?}", text
            );
            prop_assert_eq!(
                first_format(&text).map(|f| f.prefix),
                first_format_prefix_by_prefix(&text).map(|f| f.prefix)
            );
        }
    }

    #[test]
    fn the_first_format_in_table_order_wins_where_two_are_found() {
        // An AWS key ID and, earlier in the text, a GitHub token: AKIA is first in the
        // table, so it names the finding, as the search prefix by prefix did.
        let text = format!("ghp_{} AKIA{}", "a".repeat(36), "A".repeat(16));
        assert_eq!(first_format(&text).map(|f| f.prefix), Some("AKIA"));
        assert!(first_format("nothing here").is_none());
        assert!(
            PREFIXES.is_some(),
            "the table's prefixes build an automaton"
        );
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
}
