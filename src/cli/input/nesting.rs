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
    let mut scan = Scan::new(text.as_bytes());
    while scan.i < scan.bytes.len() {
        if scan.line_start && scan.start_line() {
            continue;
        }
        let b = scan.bytes[scan.i];
        let after_blank = scan.after_blank();
        let node_start = scan.node_start(after_blank);
        match b {
            b'\n' => {
                scan.line += 1;
                scan.line_start = true;
                scan.i += 1;
                continue;
            }
            b'#' if after_blank => {
                scan.skip_to_end_of_line();
                continue;
            }
            b'"' if node_start => scan.skip_double_quoted(),
            b'\'' if node_start => scan.skip_single_quoted(),
            b'[' | b'{' if node_start || scan.depth > 0 => {
                scan.depth += 1;
                if scan.depth > MAX_NESTING {
                    return Some(scan.line);
                }
            }
            b']' | b'}' => scan.depth = scan.depth.saturating_sub(1),
            b'|' | b'>' if node_start && scan.depth == 0 => scan.block_scalar_header(),
            _ => {}
        }
        if !blank(b) && !eol(b) {
            if after_blank || scan.last_nonblank.is_none() {
                scan.token_first = Some(b);
            }
            scan.last_nonblank = Some(b);
        }
        scan.i += 1;
    }
    None
}

fn blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn eol(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

/// Where [`too_deep`]'s scan stands.
struct Scan<'a> {
    bytes: &'a [u8],
    i: usize,
    line: usize,
    depth: usize,
    /// At the start of a line: its indentation, and its content column (past `- `).
    line_start: bool,
    indent: usize,
    content_column: usize,
    /// Inside a block scalar: lines indented more than this (or blank) are its text.
    block_parent: Option<usize>,
    /// The last non-blank byte on this line, and the first byte of the last token.
    last_nonblank: Option<u8>,
    token_first: Option<u8>,
}

impl<'a> Scan<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Scan {
            bytes,
            i: 0,
            line: 1,
            depth: 0,
            line_start: true,
            indent: 0,
            content_column: 0,
            block_parent: None,
            last_nonblank: None,
            token_first: None,
        }
    }

    /// Read a new line's indentation. Returns true when the line is a block scalar's text,
    /// which is skipped whole.
    fn start_line(&mut self) -> bool {
        let bytes = self.bytes;
        self.line_start = false;
        self.indent = bytes[self.i..].iter().take_while(|b| **b == b' ').count();
        let rest = self.i + self.indent;
        let blank_line = bytes.get(rest).is_none_or(|b| eol(*b) || blank(*b));
        if let Some(parent) = self.block_parent {
            if blank_line || self.indent > parent {
                self.skip_to_end_of_line();
                self.line_start = true;
                self.line += 1;
                self.i += 1;
                return true;
            }
            self.block_parent = None;
        }
        self.content_column = self.indent;
        while bytes.get(self.i + self.content_column) == Some(&b'-')
            && bytes
                .get(self.i + self.content_column + 1)
                .is_some_and(|b| blank(*b))
        {
            self.content_column += 2;
        }
        self.last_nonblank = None;
        self.token_first = None;
        false
    }

    fn after_blank(&self) -> bool {
        let previous = self.i.checked_sub(1).map(|p| self.bytes[p]);
        previous.is_none_or(|p| blank(p) || eol(p))
    }

    /// Could a node (a quoted scalar, a flow collection, a block scalar) start here?
    fn node_start(&self, after_blank: bool) -> bool {
        let previous = self.i.checked_sub(1).map(|p| self.bytes[p]);
        self.depth > 0 && matches!(previous, Some(b'[' | b'{' | b',' | b':'))
            || match self.last_nonblank {
                None => true,
                // Indicators only inside a flow collection; plain text outside.
                Some(b'[' | b'{' | b',') => self.depth > 0,
                Some(b':' | b'-' | b'?') => after_blank || self.depth > 0,
                Some(_) => after_blank && matches!(self.token_first, Some(b'!' | b'&')),
            }
    }

    fn skip_to_end_of_line(&mut self) {
        while self.i < self.bytes.len() && self.bytes[self.i] != b'\n' {
            self.i += 1;
        }
    }

    /// From an opening `"` to its closing one (or the end), counting lines.
    fn skip_double_quoted(&mut self) {
        self.i += 1;
        while self.i < self.bytes.len() && self.bytes[self.i] != b'"' {
            match self.bytes[self.i] {
                b'\\' => self.i += 1,
                b'\n' => self.line += 1,
                _ => {}
            }
            self.i += 1;
        }
    }

    /// From an opening `'` to its closing one (`''` is a quote inside), counting lines.
    fn skip_single_quoted(&mut self) {
        self.i += 1;
        while self.i < self.bytes.len() {
            match self.bytes[self.i] {
                b'\'' if self.bytes.get(self.i + 1) == Some(&b'\'') => self.i += 1,
                b'\'' => break,
                b'\n' => self.line += 1,
                _ => {}
            }
            self.i += 1;
        }
    }

    /// At `|` or `>`: a block scalar header is indicators, then only a comment; if it is one,
    /// the lines indented past its parent that follow are its text.
    fn block_scalar_header(&mut self) {
        let (bytes, i) = (self.bytes, self.i);
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
            self.block_parent = Some(if matches!(self.last_nonblank, None | Some(b'-')) {
                self.indent
            } else {
                self.content_column
            });
        }
    }
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
