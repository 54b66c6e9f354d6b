//! A linear pre-scan refusing flow collections nested too deep, before the YAML parser
//! (whose time grows with the square of the depth) sees them.

use std::path::Path;

use super::InputError;

/// The deepest nesting of flow collections (`[`, `{`) read. Kubernetes objects nest a
/// dozen levels; the YAML parser's time grows with the square of this depth.
pub const MAX_NESTING: usize = 100;

/// The first line where flow collections (`[`, `{`) nest deeper than [`MAX_NESTING`].
///
/// A linear pre-scan, run before the YAML parser, whose time grows with the square of the
/// depth (200 KB of `[` took seconds). It follows what the parser would see closely enough
/// to count only real collections: it skips comments, quoted scalars and block scalars
/// (`|`, `>`), and counts a bracket in block context only where a node may start (after
/// `:`, `-`, `?`, `,`, a tag or anchor, or at the start of a line), not inside plain text
/// such as `see [1]`. Block indentation is not counted: each level costs a line of
/// growing indentation, and the parser's own limit stops it early.
fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let blank = |b: u8| b == b' ' || b == b'\t';
    let eol = |b: u8| b == b'\n' || b == b'\r';
    let mut depth = 0usize;
    let mut line = 1usize;
    let mut i = 0usize;
    // At the start of a line: its indentation, and its content column (past `- `).
    let mut line_start = true;
    let mut indent = 0usize;
    let mut content_column = 0usize;
    // Inside a block scalar: lines indented more than this (or blank) are its text.
    let mut block_parent: Option<usize> = None;
    // The last non-blank byte on this line, and the first byte of the last token.
    let mut last_nonblank: Option<u8> = None;
    let mut token_first: Option<u8> = None;
    while i < bytes.len() {
        if line_start {
            line_start = false;
            indent = bytes[i..].iter().take_while(|b| **b == b' ').count();
            let rest = i + indent;
            let blank_line = bytes.get(rest).is_none_or(|b| eol(*b) || blank(*b));
            if let Some(parent) = block_parent {
                if blank_line || indent > parent {
                    // A line of the block scalar: skip it.
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                    line_start = true;
                    line += 1;
                    i += 1;
                    continue;
                }
                block_parent = None;
            }
            content_column = indent;
            while bytes.get(i + content_column) == Some(&b'-')
                && bytes.get(i + content_column + 1).is_some_and(|b| blank(*b))
            {
                content_column += 2;
            }
            last_nonblank = None;
            token_first = None;
        }
        let b = bytes[i];
        let previous = i.checked_sub(1).map(|p| bytes[p]);
        let after_blank = previous.is_none_or(|p| blank(p) || eol(p));
        // Could a node (a quoted scalar, a flow collection, a block scalar) start here?
        let node_start = depth > 0 && matches!(previous, Some(b'[' | b'{' | b',' | b':'))
            || match last_nonblank {
                None => true,
                // Indicators only inside a flow collection; plain text outside.
                Some(b'[' | b'{' | b',') => depth > 0,
                Some(b':' | b'-' | b'?') => after_blank || depth > 0,
                Some(_) => after_blank && matches!(token_first, Some(b'!' | b'&')),
            };
        match b {
            b'\n' => {
                line += 1;
                line_start = true;
                i += 1;
                continue;
            }
            b'#' if after_blank => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' if node_start => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    match bytes[i] {
                        b'\\' => i += 1,
                        b'\n' => line += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'\'' if node_start => {
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 1,
                        b'\'' => break,
                        b'\n' => line += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'[' | b'{' if node_start || depth > 0 => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(line);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'|' | b'>' if node_start && depth == 0 => {
                // A block scalar header: indicators, then only a comment.
                let header_end = bytes[i + 1..]
                    .iter()
                    .position(|b| !(b.is_ascii_digit() || *b == b'+' || *b == b'-'))
                    .map_or(bytes.len(), |n| i + 1 + n);
                let rest = &bytes[header_end..];
                let rest_of_line = &rest[..rest.iter().position(|b| eol(*b)).unwrap_or(rest.len())];
                let trimmed: Vec<u8> = rest_of_line
                    .iter()
                    .copied()
                    .skip_while(|b| blank(*b))
                    .collect();
                if trimmed.is_empty()
                    || (trimmed[0] == b'#' && rest_of_line.first().is_some_and(|b| blank(*b)))
                {
                    block_parent = Some(if matches!(last_nonblank, None | Some(b'-')) {
                        indent
                    } else {
                        content_column
                    });
                }
            }
            _ => {}
        }
        if !blank(b) && !eol(b) {
            if after_blank || last_nonblank.is_none() {
                token_first = Some(b);
            }
            last_nonblank = Some(b);
        }
        i += 1;
    }
    None
}

/// Refuse `text` where its flow collections nest deeper than [`MAX_NESTING`], naming
/// the line.
pub(super) fn refuse_deep_nesting(file: &Path, text: &str) -> Result<(), InputError> {
    match too_deep(text) {
        Some(line) => Err(InputError::new(
            file,
            None,
            format!("nesting deeper than {MAX_NESTING} levels at line {line}; not parsed"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::input::documents;

    #[test]
    fn flow_nesting_is_bounded_before_parsing() {
        let deep = |n: usize| "[".repeat(n);
        let cases: Vec<(&str, String, Option<usize>)> = vec![
            ("100 levels", deep(100), None),
            ("101 levels", deep(101), Some(1)),
            ("closed as it goes", "[]".repeat(1000), None),
            ("maps", "{a: ".repeat(101), Some(1)),
            ("JSON", "{\"a\": ".repeat(101), Some(1)),
            (
                "on line 3",
                format!("a:\n  b: 1\n  c: {}", deep(101)),
                Some(3),
            ),
            ("sequence entry", format!("- {}", deep(101)), Some(1)),
            ("after a tag", format!("a: !!seq {}", deep(101)), Some(1)),
            ("after an anchor", format!("a: &x {}", deep(101)), Some(1)),
            ("double-quoted", format!("a: \"{}\"", deep(200)), None),
            ("escaped quote", format!("a: \"x\\\"{}\"", deep(200)), None),
            ("single-quoted", format!("a: '{}'", deep(200)), None),
            (
                "escaped single quote",
                format!("a: 'it''s {}'", deep(200)),
                None,
            ),
            ("JSON string", format!("{{\"a\":\"{}\"}}", deep(200)), None),
            ("comment", format!("a: 1 # {}", deep(200)), None),
            ("plain text", format!("a: see {}", deep(200)), None),
            (
                "quote inside plain text",
                format!("a: b \"{}", deep(200)),
                None,
            ),
            (
                "block scalar",
                format!("a: |\n  {}\n  x\nb: 1\n", deep(200)),
                None,
            ),
            (
                "after a block scalar",
                format!("a: >-\n  x\n\nb: {}", deep(101)),
                Some(4),
            ),
            ("block scalar entry", format!("- |\n  {}", deep(200)), None),
            (
                "block scalar in a sequence's map",
                format!("- k: |2\n    {}\n  j: {}", deep(200), deep(101)),
                Some(3),
            ),
            (
                "quotes across lines",
                format!("a: \"x\n{}\"\nb: {}", deep(200), deep(101)),
                Some(3),
            ),
        ];
        for (name, text, expected) in cases {
            assert_eq!(too_deep(&text), expected, "{name}");
        }
        let message = documents(Path::new("x.yaml"), &format!("a:\n  b: {}", deep(5000)))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "x.yaml: nesting deeper than 100 levels at line 2; not parsed"
        );
    }
}
