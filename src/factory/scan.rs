//! A small scanner of RON's lexical structure (comments, strings, nesting), without parsing.
//!
//! It finds where a field's value starts, for errors found after parsing, and splits a
//! `.tasks.ron` map into its entries so that 10^5 entries are parsed in parallel, each from its
//! own slice, with positions still counted in the whole file.

use std::ops::Range;

/// Skips whitespace and comments (`//` to the end of the line, nested `/* */`).
pub(crate) fn skip_trivia(b: &[u8], mut i: usize) -> usize {
    // The common case, called before every token: nothing to skip.
    match b.get(i) {
        Some(c) if !c.is_ascii_whitespace() && *c != b'/' => return i,
        None => return i,
        _ => {}
    }
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0usize;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else {
            return i;
        }
    }
}

/// Skips one string literal (`"..."`, `r"..."`, `r#"..."#`) or char literal starting at `i`.
/// `None` when `i` starts none of them, or it is unterminated.
fn skip_literal(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => {
            let mut j = i + 1;
            while j < b.len() {
                match b[j] {
                    b'\\' => j += 2,
                    b'"' => return Some(j + 1),
                    _ => j += 1,
                }
            }
            None
        }
        b'\'' => {
            let j = if b.get(i + 1) == Some(&b'\\') {
                i + 3
            } else {
                i + 2
            };
            let end = b[j.min(b.len())..].iter().position(|&c| c == b'\'')?;
            Some(j + end + 1)
        }
        b'r' if matches!(b.get(i + 1), Some(b'"' | b'#')) => {
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            let open = i + 1 + hashes;
            if b.get(open) != Some(&b'"') {
                return None;
            }
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            let end = b[open + 1..]
                .windows(close.len())
                .position(|w| w == close)?;
            Some(open + 1 + end + close.len())
        }
        _ => None,
    }
}

/// Skips one value starting at `i` up to the `,` or closing bracket that ends it (not consumed).
fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        i = skip_trivia(b, i);
        let c = *b.get(i)?;
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' | b',' if depth == 0 => return Some(i),
            b')' | b']' | b'}' => depth -= 1,
            b'"' | b'\'' => {
                i = skip_literal(b, i)?;
                continue;
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !is_ident(b[i - 1])) =>
            {
                i = skip_literal(b, i)?;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Finds field `name` of the struct starting in `range`: the offsets of its name and its value.
/// The name of the field of the struct in `range` whose name or value contains byte `at`
/// (the value may be malformed: that is what an error there is about).
pub(crate) fn field_at(b: &[u8], range: Range<usize>, at: usize) -> Option<&str> {
    let b = &b[..range.end];
    let mut i = skip_trivia(b, range.start);
    while i < b.len() && is_ident(b[i]) {
        i += 1;
    }
    i = skip_trivia(b, i);
    if b.get(i) != Some(&b'(') || at <= i {
        return None;
    }
    i += 1;
    loop {
        let name_at = skip_trivia(b, i);
        let mut j = name_at;
        while j < b.len() && is_ident(b[j]) {
            j += 1;
        }
        let field = std::str::from_utf8(&b[name_at..j]).ok()?;
        j = skip_trivia(b, j);
        if field.is_empty() || b.get(j) != Some(&b':') || at < name_at {
            return None;
        }
        let value_at = skip_trivia(b, j + 1);
        let Some(end) = skip_value(b, value_at) else {
            return Some(field);
        };
        if at < end {
            return Some(field);
        }
        i = skip_trivia(b, end);
        if b.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
}

pub(crate) fn find_field(b: &[u8], range: Range<usize>, name: &str) -> Option<(usize, usize)> {
    let b = &b[..range.end];
    let mut i = skip_trivia(b, range.start);
    while i < b.len() && is_ident(b[i]) {
        i += 1; // an optional struct name
    }
    i = skip_trivia(b, i);
    if b.get(i) != Some(&b'(') {
        return None;
    }
    i += 1;
    loop {
        let name_at = skip_trivia(b, i);
        let mut j = name_at;
        while j < b.len() && is_ident(b[j]) {
            j += 1;
        }
        let field = &b[name_at..j];
        j = skip_trivia(b, j);
        if field.is_empty() || b.get(j) != Some(&b':') {
            return None;
        }
        let value_at = skip_trivia(b, j + 1);
        if field == name.as_bytes() {
            return Some((name_at, value_at));
        }
        i = skip_trivia(b, skip_value(b, value_at)?);
        if b.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
}

/// One `"key": value` entry of a `.tasks.ron` map.
pub(crate) struct Entry {
    pub(crate) key: String,
    /// Offset of the key's opening quote.
    pub(crate) key_at: usize,
    pub(crate) value: Range<usize>,
}

/// Splits a `{"key": value, ...}` map into its entries, in file order. `None` when the text is
/// not such a map (a syntax error, or a form this scanner does not know): the caller then lets
/// `ron` parse the whole file, which names the problem precisely.
pub(crate) fn split_map(text: &str) -> Option<Vec<Entry>> {
    let b = text.as_bytes();
    let mut i = skip_trivia(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut entries = Vec::new();
    i += 1;
    loop {
        i = skip_trivia(b, i);
        if b.get(i) == Some(&b'}') {
            return (skip_trivia(b, i + 1) == b.len()).then_some(entries);
        }
        let key_at = i;
        let key_end = skip_literal(b, i).filter(|_| matches!(b[i], b'"' | b'r'))?;
        let key = if b[i] == b'r' {
            // `r"k"` or `r#"k"#`: no escapes, the text between the quotes as it is.
            let hashes =
                key_end - key_at - 1 - text[key_at + 1..key_end].trim_start_matches('#').len();
            text[key_at + 2 + hashes..key_end - 1 - hashes].to_owned()
        } else {
            let raw = &text[key_at + 1..key_end - 1];
            if raw.contains('\\') {
                ron::from_str::<String>(&text[key_at..key_end]).ok()?
            } else {
                raw.to_owned()
            }
        };
        i = skip_trivia(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_trivia(b, i + 1);
        let end = skip_value(b, start)?;
        if end == start {
            return None;
        }
        entries.push(Entry {
            key,
            key_at,
            value: start..end,
        });
        i = end;
        if b[i] == b',' {
            i += 1;
        } else if b[i] != b'}' {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factory::ron::Source;
    use std::path::Path;

    fn source(text: &str) -> Source<'_> {
        Source {
            file: Path::new("t.ron"),
            text,
        }
    }

    #[test]
    fn maps_split_into_entries_in_file_order() {
        let text =
            "// gen\n{\n \"b\": (run: Shell(\"}\")),\n \"a\\u{41}\": (run: Cmd([r#\"x\"#])), }\n";
        let entries = split_map(text).unwrap();
        let keys: Vec<_> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["b", "aA"]);
        assert_eq!(&text[entries[0].value.clone()], "(run: Shell(\"}\"))");
        assert_eq!(source(text).location(entries[1].key_at).line, 4);
        // A missing comma leaves one entry whose value `ron` then rejects, with its position.
        let entries = split_map("{\"a\": (run: Shell(\"x\")) \"b\": ()}").unwrap();
        assert_eq!(entries.len(), 1);
        assert!(split_map("{\"a\": }").is_none());
        assert_eq!(split_map(" {} ").map(|e| e.len()), Some(0));
    }

    #[test]
    fn raw_string_keys_split_too() {
        let text = "{r\"a\": (run: Shell(\"x\")), r#\"b\"c\"#: (run: Shell(\"y\"))}";
        let entries = split_map(text).unwrap();
        let keys: Vec<_> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a", "b\"c"]);
        assert_eq!(entries[1].key_at, text.find("r#").unwrap());
    }
}
