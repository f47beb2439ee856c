//! The placeholder ↔ value table and placeholder → value substitution in
//! text, either whole or piece by piece as a stream arrives.
//!
//! Substitution works in two modes. In plain text a placeholder is
//! `<EMAIL_1>` and is replaced by the raw value. Inside JSON source text
//! (tool-call `arguments`, Anthropic `partial_json`) the value must be
//! JSON-escaped, and a placeholder may also be spelt with `\u003c`/`\u003e`.

use std::collections::HashMap;

/// Where a string being restored lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Ordinary text: values go in raw.
    Text,
    /// JSON source text: values go in JSON-escaped, escaped brackets count.
    JsonText,
}

pub(super) struct Entry {
    pub kind: &'static str,
    /// `<EMAIL_1>`
    pub placeholder: String,
    pub value: String,
    /// The value as it must appear inside a JSON string literal (no quotes).
    pub value_json: String,
}

#[derive(Default)]
pub(super) struct Table {
    pub entries: Vec<Entry>,
    /// Placeholder body (`EMAIL_1`, no brackets) → index into `entries`.
    by_body: HashMap<String, usize>,
    longest_body: usize,
}

/// What a placeholder candidate at some position turned out to be.
enum Probe {
    /// A known placeholder of this many bytes.
    Match {
        len: usize,
        entry: usize,
    },
    /// The text ends inside something that may still become a placeholder.
    Partial,
    Miss,
}

const OPEN_ESCAPED: [&str; 2] = ["\\u003c", "\\u003C"];
const CLOSE_ESCAPED: [&str; 2] = ["\\u003e", "\\u003E"];

impl Table {
    pub fn push(&mut self, kind: &'static str, placeholder_body: String, value: String) {
        let value_json = json_string_body(&value);
        self.longest_body = self.longest_body.max(placeholder_body.len());
        self.by_body.insert(placeholder_body.clone(), self.entries.len());
        self.entries.push(Entry { kind, placeholder: format!("<{placeholder_body}>"), value, value_json });
    }

    /// Replace every known placeholder in `text`; `None` when there is none.
    pub fn restore(&self, text: &str, mode: Mode) -> Option<String> {
        let (out, _) = self.scan(text, mode, false);
        out
    }

    /// Restore what can be restored now and say where a possible placeholder
    /// prefix starts: `(rewritten text before hold, hold_from)`. The rewritten
    /// text is `None` when `text[..hold_from]` needs no change.
    pub fn restore_partial(&self, text: &str, mode: Mode) -> (Option<String>, usize) {
        self.scan(text, mode, true)
    }

    fn scan(&self, text: &str, mode: Mode, partial: bool) -> (Option<String>, usize) {
        if self.entries.is_empty() {
            return (None, text.len());
        }
        let bytes = text.as_bytes();
        let mut out: Option<String> = None;
        let mut copied = 0;
        let mut i = 0;
        while let Some(offset) = next_candidate(&bytes[i..], mode) {
            let at = i + offset;
            match self.probe(&text[at..], mode) {
                Probe::Match { len, entry } => {
                    let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                    out.push_str(&text[copied..at]);
                    let e = &self.entries[entry];
                    out.push_str(match mode {
                        Mode::Text => &e.value,
                        Mode::JsonText => &e.value_json,
                    });
                    i = at + len;
                    copied = i;
                }
                Probe::Partial if partial => {
                    if let Some(out) = out.as_mut() {
                        out.push_str(&text[copied..at]);
                    }
                    return (out, at);
                }
                Probe::Partial | Probe::Miss => {
                    // In JSON text a backslash always escapes the next
                    // character, so `\\u003c` is a literal, never a bracket.
                    i = at + 1;
                    if bytes[at] == b'\\' {
                        if let Some(c) = text[i..].chars().next() {
                            i += c.len_utf8();
                        }
                    }
                }
            }
        }
        if let Some(out) = out.as_mut() {
            out.push_str(&text[copied..]);
        }
        (out, text.len())
    }

    fn probe(&self, rest: &str, mode: Mode) -> Probe {
        let open = if rest.starts_with('<') {
            1
        } else if mode == Mode::JsonText && OPEN_ESCAPED.iter().any(|o| rest.starts_with(o)) {
            6
        } else if mode == Mode::JsonText && OPEN_ESCAPED.iter().any(|o| o.starts_with(rest)) {
            return Probe::Partial;
        } else {
            return Probe::Miss;
        };
        let after_open = &rest[open..];
        let body_len = after_open
            .bytes()
            .take(self.longest_body + 1)
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
            .count();
        let body = &after_open[..body_len];
        if body_len == after_open.len() {
            // The text ends inside the body: wait only if a known one fits.
            return if self.by_body.keys().any(|b| b.starts_with(body)) { Probe::Partial } else { Probe::Miss };
        }
        let Some(&entry) = self.by_body.get(body) else {
            return Probe::Miss;
        };
        let after_body = &after_open[body_len..];
        let close = if after_body.starts_with('>') {
            1
        } else if mode == Mode::JsonText && CLOSE_ESCAPED.iter().any(|c| after_body.starts_with(c)) {
            6
        } else if mode == Mode::JsonText && CLOSE_ESCAPED.iter().any(|c| c.starts_with(after_body)) {
            return Probe::Partial;
        } else {
            return Probe::Miss;
        };
        Probe::Match { len: open + body_len + close, entry }
    }
}

/// Offset of the next byte that may open a placeholder.
fn next_candidate(bytes: &[u8], mode: Mode) -> Option<usize> {
    match mode {
        Mode::Text => bytes.iter().position(|&b| b == b'<'),
        Mode::JsonText => bytes.iter().position(|&b| b == b'<' || b == b'\\'),
    }
}

/// `s` as a JSON string literal without the surrounding quotes.
pub(super) fn json_string_body(s: &str) -> String {
    let quoted = serde_json::Value::from(s).to_string();
    // Display of a JSON string is always `"…"`; strip the two quotes.
    quoted[1..quoted.len() - 1].to_string()
}

/// Whether raw JSON bytes may contain a placeholder, or the start of one, in
/// any spelling: `<`, `\u003c`, or a backslash inside a decoded string
/// (JSON text inside JSON, where `\u003c` may be cut after its backslash),
/// which the raw bytes spell `\\` or `\u005c`.
pub(super) fn may_hold_placeholder(raw: &[u8]) -> bool {
    raw.contains(&b'<')
        || raw.windows(2).any(|w| w == b"\\\\")
        || raw.windows(5).any(|w| w.eq_ignore_ascii_case(b"u003c") || w.eq_ignore_ascii_case(b"u005c"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let mut t = Table::default();
        t.push("email", "EMAIL_1".into(), "a@x.com".into());
        t.push("term", "TERM_1".into(), "Pro\"ject".into());
        t.push("email", "EMAIL_10".into(), "j@x.com".into());
        t
    }

    #[test]
    fn whole_text_restores_known_and_keeps_unknown() {
        let t = table();
        assert_eq!(
            t.restore("to <EMAIL_1> and <EMAIL_9> re <TERM_1><", Mode::Text).unwrap(),
            "to a@x.com and <EMAIL_9> re Pro\"ject<"
        );
        assert!(t.restore("a < b, <div>", Mode::Text).is_none());
    }

    #[test]
    fn json_text_escapes_values_and_reads_escaped_brackets() {
        let t = table();
        assert_eq!(
            t.restore(r#"{"p":"<TERM_1>","q":"\u003cEMAIL_1\u003E"}"#, Mode::JsonText).unwrap(),
            r#"{"p":"Pro\"ject","q":"a@x.com"}"#
        );
        // An escaped backslash followed by `u003c` is literal text.
        assert!(t.restore(r#""\\u003cEMAIL_1\u003e""#, Mode::JsonText).is_none());
    }

    #[test]
    fn partial_holds_only_possible_placeholder_prefixes() {
        let t = table();
        assert_eq!(t.restore_partial("hi <EM", Mode::Text), (None, 3));
        assert_eq!(t.restore_partial("hi <EMAIL_1", Mode::Text), (None, 3));
        assert_eq!(t.restore_partial("<EMAIL_1> <", Mode::Text), (Some("a@x.com ".into()), 10));
        assert_eq!(t.restore_partial("a <b", Mode::Text), (None, 4));
        assert_eq!(t.restore_partial("x <EMAIL_2", Mode::Text), (None, 10));
        assert_eq!(t.restore_partial("x \\u00", Mode::JsonText), (None, 2));
        assert_eq!(t.restore_partial("x \\u00", Mode::Text), (None, 6));
    }
}
