//! `k=v,k2=v2` label lists on the command line, checked against Kubernetes' label syntax.

use std::collections::BTreeMap;

/// Labels from `k=v,k2=v2`; an empty text is no labels.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    if text.trim().is_empty() {
        return Ok(labels);
    }
    for pair in text.split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("{pair:?} is not key=value"));
        };
        check_key(key)?;
        check_value(key, value)?;
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("label {key:?} is given twice"));
        }
    }
    Ok(labels)
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let subdomain = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !subdomain {
            return Err(format!(
                "label key {key:?}: the prefix {prefix:?} is not a DNS subdomain (lowercase letters, digits, '-' and '.', at most 253 characters)"
            ));
        }
    }
    if name.is_empty() || !is_name(name) {
        return Err(format!(
            "label key {key:?}: the name must be 1 to 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn check_value(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || is_name(value) {
        Ok(())
    } else {
        Err(format!(
            "label {key}: the value {value:?} must be empty or 1 to 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"
        ))
    }
}

/// 1 to 63 of `[A-Za-z0-9_.-]`, beginning and ending with a letter or digit.
fn is_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    text.len() <= 63
        && edge(bytes.first())
        && edge(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_lists_table() {
        type Row<'a> = (&'a str, Result<Vec<(&'a str, &'a str)>, &'a str>);
        let cases: Vec<Row> = vec![
            ("", Ok(vec![])),
            ("env=production", Ok(vec![("env", "production")])),
            (
                "env=production,topology.kubernetes.io/region=eu-west-1",
                Ok(vec![
                    ("env", "production"),
                    ("topology.kubernetes.io/region", "eu-west-1"),
                ]),
            ),
            ("team=", Ok(vec![("team", "")])),
            ("A_b.c-9=X.y_z", Ok(vec![("A_b.c-9", "X.y_z")])),
            ("env", Err("\"env\" is not key=value")),
            ("env=a,env=b", Err("label \"env\" is given twice")),
            ("-env=a", Err("label key \"-env\": the name must be")),
            ("=a", Err("label key \"\": the name must be")),
            (
                "Example.com/env=a",
                Err("the prefix \"Example.com\" is not a DNS subdomain"),
            ),
            ("/env=a", Err("the prefix \"\" is not a DNS subdomain")),
            (
                "env=has space",
                Err("label env: the value \"has space\" must be"),
            ),
            ("env=a,", Err("\"\" is not key=value")),
            (
                "k=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                Err("label k: the value"),
            ),
        ];
        for (text, expected) in cases {
            match (parse_labels(text), expected) {
                (Ok(labels), Ok(want)) => {
                    let want: BTreeMap<String, String> = want
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    assert_eq!(labels, want, "{text}");
                }
                (Err(message), Err(want)) => assert!(message.contains(want), "{text}: {message}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }
}
