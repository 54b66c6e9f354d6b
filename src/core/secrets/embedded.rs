//! Values nested inside a value: the string members of a JSON document and the text of a
//! base64 blob.

/// The `"key": "string"` pairs of a JSON document, unescaped, at any depth.
pub(super) fn json_pairs(text: &str) -> Vec<(String, String)> {
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

/// The decoded text of a value that is entirely one base64 blob (32 characters or more),
/// when that text is printable.
pub(super) fn decode_base64_blob(text: &str) -> Option<String> {
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
pub(super) fn decode_base64(text: &str) -> Option<Vec<u8>> {
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
