//! Text that came from outside countersign (an object's fields, a review's comment, a name,
//! a sink's answer) made inert before a person sees it, on every surface: the CLI's text
//! and JSON, Slack-compatible notices, Events and AuditEntries. The one place that does it.
//!
//! - Control characters (C0, DEL, C1: ESC, CSI, OSC, CR, LF, …), format characters (bidi
//!   overrides and isolates, zero-width spaces and joiners, the BOM, tag characters), line
//!   and paragraph separators and unassigned code points are escaped visibly (`\e`, `\r`,
//!   `\n`, `\t`, `\u{202e}`), so nothing can move a terminal's cursor, clear or recolour
//!   it, hide a line, draw a link, reverse text or add a line of its own.
//! - Lengths are bounded with a visible cut (`…[+700000 chars]`).
//! - Backslashes are left as they are, so escaping twice changes nothing: a stored summary
//!   is made inert once, and showing it again is safe and the same.
//! - Slack: structure (bold, line breaks, code) is countersign's; content goes in as an
//!   inline code span with `&`, `<` and `>` escaped as Slack requires and backticks
//!   replaced, so content can neither format, mention, link nor break out of its quote.
//! - JSON output stays JSON: the unsafe characters serde_json leaves raw (C1, DEL, format
//!   characters) become `\uXXXX` escapes inside their strings.

use std::borrow::Cow;
use std::fmt::Write;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// The longest a single shown field (an image, a name, a comment, a value) may be.
pub const MAX_FIELD_CHARS: usize = 512;

/// Would `c` do something other than show itself in a terminal or a chat message?
pub fn is_unsafe(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::Unassigned
            | GeneralCategory::Surrogate
    )
}

/// `text` with every unsafe character escaped visibly, at most [`MAX_FIELD_CHARS`] long.
pub fn text(text: &str) -> String {
    bounded(text, MAX_FIELD_CHARS)
}

/// `text` with every unsafe character escaped visibly, at most `max_chars` characters long
/// (the cut marker included; at least the marker is kept).
pub fn bounded(text: &str, max_chars: usize) -> String {
    let escaped = escaped(text);
    cut(&escaped, max_chars).into_owned()
}

/// `text` with every unsafe character escaped visibly, unbounded: for multi-line text that
/// countersign itself composed around content that is already inert.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) {
            push_escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` with every unsafe character escaped visibly except line breaks: for a message
/// countersign composed line by line (a denial with one reason per line) whose content
/// was made inert as it was composed.
pub fn escaped_lines(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && is_unsafe(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c != '\n' && is_unsafe(c) {
            push_escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn push_escape(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{1b}' => out.push_str("\\e"),
        '\0' => out.push_str("\\0"),
        c if (c as u32) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// At most `max_chars` characters of `text`, the last of them a marker saying how many
/// were cut. Text within the bound is returned as it is, so cutting twice changes nothing.
pub fn cut(text: &str, max_chars: usize) -> Cow<'_, str> {
    let Some((boundary, _)) = text.char_indices().nth(max_chars) else {
        return Cow::Borrowed(text);
    };
    let total = text.chars().count();
    // The marker's length depends on the number it carries; size it for the worst case.
    let marker_room = format!("…[+{total} chars]").chars().count();
    let kept = max_chars.saturating_sub(marker_room);
    let keep_end = text.char_indices().nth(kept).map_or(boundary, |(i, _)| i);
    let mut out = String::with_capacity(keep_end + marker_room + 4);
    out.push_str(&text[..keep_end]);
    let _ = write!(out, "…[+{} chars]", total - kept);
    Cow::Owned(out)
}

/// Content for a Slack mrkdwn `text`: inert, bounded, and quoted as an inline code span, so
/// nothing in it formats, mentions, links, or starts a line of its own.
pub fn slack_quoted(content: &str, max_chars: usize) -> String {
    let inert = bounded(content, max_chars);
    let mut out = String::with_capacity(inert.len() + 2);
    out.push('`');
    for c in inert.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // A backtick would end the code span: U+02CB MODIFIER LETTER GRAVE ACCENT.
            '`' => out.push('\u{2cb}'),
            c => out.push(c),
        }
    }
    out.push('`');
    out
}

/// JSON text (as serde_json writes it) with the unsafe characters it leaves raw escaped as
/// `\uXXXX`. Outside strings JSON is plain ASCII, so every such character is inside a
/// string, where the escape means the same character: the data is unchanged.
pub fn json_output(json: &str) -> Cow<'_, str> {
    // serde_json escapes C0 inside strings itself; raw line breaks are layout.
    let unsafe_in_json = |c: char| is_unsafe(c) && !c.is_ascii_whitespace();
    if !json.chars().any(unsafe_in_json) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if unsafe_in_json(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// YAML text with no raw unsafe character, or `None` when one sits outside a double-quoted
/// scalar (where no escape exists; the caller then shows the same data as JSON, which is
/// YAML too). Inside double quotes the YAML escape `\uXXXX` means the same character.
pub fn yaml_output(yaml: &str) -> Option<Cow<'_, str>> {
    if !yaml.chars().any(is_unsafe_in_yaml) {
        return Some(Cow::Borrowed(yaml));
    }
    let mut out = String::with_capacity(yaml.len() + 16);
    let mut quoted = false;
    let mut escaping = false;
    for c in yaml.chars() {
        if is_unsafe_in_yaml(c) {
            if !quoted {
                return None;
            }
            let mut units = [0u16; 2];
            if c as u32 > 0xffff {
                let _ = write!(out, "\\U{:08x}", c as u32);
            } else {
                let unit = c.encode_utf16(&mut units)[0];
                let _ = write!(out, "\\u{unit:04x}");
            }
            continue;
        }
        out.push(c);
        match c {
            _ if escaping => escaping = false,
            '\\' if quoted => escaping = true,
            '"' => quoted = !quoted,
            // A line break ends a plain or single-quoted scalar's line; a double-quoted
            // one may span lines and stays open.
            _ => {}
        }
    }
    Some(Cow::Owned(out))
}

/// The YAML emitter writes line breaks and tabs itself; every other unsafe character must
/// not reach a terminal raw.
fn is_unsafe_in_yaml(c: char) -> bool {
    c != '\n' && c != '\t' && is_unsafe(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_builders::hostile_corpus;

    #[test]
    fn the_hostile_corpus_is_inert_everywhere() {
        for (what, input) in hostile_corpus() {
            let shown = text(&input);
            assert!(!shown.chars().any(is_unsafe), "{what}: {shown:?}");
            assert!(shown.chars().count() <= MAX_FIELD_CHARS, "{what}");
            // Showing inert text again changes nothing.
            assert_eq!(text(&shown), shown, "{what}");
            let slack = slack_quoted(&input, 200);
            assert!(!slack.chars().any(is_unsafe), "{what}: {slack:?}");
            let inner = &slack[1..slack.len() - 1];
            assert!(
                !inner.contains(['`', '<', '>']),
                "{what}: {slack:?} leaves its quote"
            );
        }
    }

    #[test]
    fn escapes_are_visible_and_name_the_character() {
        let cases = [
            ("a\u{1b}[2Jb", "a\\e[2Jb"),
            ("1\r2\n3\t4", "1\\r2\\n3\\t4"),
            ("x\u{202e}y", "x\\u{202e}y"),
            ("x\u{200b}y", "x\\u{200b}y"),
            ("x\u{9b}y", "x\\x9by"),
            ("x\u{7f}y", "x\\x7fy"),
            ("\0", "\\0"),
            (
                "plain text, ünïcödé and emoji 🚀",
                "plain text, ünïcödé and emoji 🚀",
            ),
            ("C:\\path\\n", "C:\\path\\n"),
        ];
        for (input, expected) in cases {
            assert_eq!(text(input), expected, "{input:?}");
        }
    }

    #[test]
    fn long_text_is_cut_visibly_within_the_bound() {
        let shown = bounded(&"x".repeat(700_000), 40);
        assert_eq!(shown.chars().count(), 40, "{shown}");
        assert!(shown.ends_with("…[+699976 chars]"), "{shown}");
        assert_eq!(bounded(&shown, 40), shown);
        assert_eq!(bounded("short", 40), "short");
        // A bound smaller than the marker keeps the marker.
        assert!(bounded(&"x".repeat(100), 3).starts_with('…'));
    }

    #[test]
    fn slack_content_is_quoted_and_cannot_format_mention_or_link() {
        assert_eq!(
            slack_quoted("*bold* _it_ <!channel> <https://x|y> a&b `code`", 200),
            "`*bold* _it_ &lt;!channel&gt; &lt;https://x|y&gt; a&amp;b \u{2cb}code\u{2cb}`"
        );
        assert_eq!(
            slack_quoted("x\n\n*Level 1/2: already approved*", 200),
            "`x\\n\\n*Level 1/2: already approved*`"
        );
    }

    #[test]
    fn json_output_stays_json_and_keeps_the_data() {
        let value = serde_json::json!({
            "image": "a\u{1b}[2J\u{9b}b\u{202e}c\u{7f}d\u{e0041}",
            "plain": "ok",
        });
        let text = serde_json::to_string_pretty(&value).unwrap();
        let safe = json_output(&text);
        assert!(!safe.chars().any(|c| is_unsafe(c) && c != '\n'), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn yaml_output_is_escaped_inside_double_quotes_or_refused() {
        let value = serde_json::json!({
            "a": "x\u{1b}[2J\u{202e}y",
            "b": "only\u{202e}format",
            "c": "plain",
        });
        let yaml = yaml_serde::to_string(&value).unwrap();
        match yaml_output(&yaml) {
            Some(safe) => {
                assert!(!safe.chars().any(is_unsafe_in_yaml), "{safe}");
                let back: serde_json::Value = yaml_serde::from_str(&safe).unwrap();
                assert_eq!(back, value);
            }
            // Left raw outside double quotes: the caller prints JSON instead.
            None => assert!(yaml.contains("only\u{202e}format")),
        }
        let escaped_only = serde_json::json!({"a": "x\u{1b}y\u{202e}z"});
        let yaml = yaml_serde::to_string(&escaped_only).unwrap();
        let safe = yaml_output(&yaml).expect("inside double quotes");
        let back: serde_json::Value = yaml_serde::from_str(&safe).unwrap();
        assert_eq!(back, escaped_only);
    }
}
