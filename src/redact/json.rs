//! Rewrite the string values of a JSON document in place, keeping every
//! other byte (key order, numbers, whitespace) exactly as it was.
//!
//! Redaction and restoration change a few strings in bodies sluice otherwise
//! forwards untouched; a byte-level pass avoids re-serialising the whole
//! document through a map that would reorder keys or reformat numbers.

use std::borrow::Cow;

/// Where a string value sits, as far as the rewriters need to know.
pub(super) struct StrCtx<'a> {
    /// Key of the nearest enclosing object member (through arrays).
    pub key: Option<&'a str>,
    /// Inside an object that is the value of an `input` member (Anthropic
    /// `tool_use.input`): keys there are the model's, not the protocol's.
    pub in_input: bool,
}

struct Frame {
    object: bool,
    /// Objects: the member key most recently read.
    key: Option<String>,
    /// The key this container is the value of (inherited through arrays).
    outer_key: Option<String>,
    in_input: bool,
}

/// The document is not JSON (or has an escape a Rust string cannot hold).
#[derive(Debug)]
pub(super) struct InvalidJson(pub String);

/// Call `rewrite` on every string value (never keys); where it returns a new
/// string, splice that in. `Ok(None)` means nothing changed.
pub(super) fn rewrite_strings<F>(body: &str, mut rewrite: F) -> Result<Option<String>, InvalidJson>
where
    F: FnMut(&StrCtx<'_>, &str) -> Option<String>,
{
    // Validate first (syntax, nesting depth) so the scan below can trust the
    // structure it walks.
    serde_json::from_str::<serde::de::IgnoredAny>(body).map_err(|e| InvalidJson(e.to_string()))?;
    let bytes = body.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    let mut expect_key = false;
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            open @ (b'{' | b'[') => {
                let parent = stack.last();
                let outer_key = parent.and_then(|p| if p.object { p.key.clone() } else { p.outer_key.clone() });
                let in_input = parent.is_some_and(|p| p.in_input)
                    || (open == b'{' && parent.is_some_and(|p| p.object && p.key.as_deref() == Some("input")));
                stack.push(Frame { object: open == b'{', key: None, outer_key, in_input });
                expect_key = open == b'{';
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                expect_key = false;
                i += 1;
            }
            b',' => {
                expect_key = stack.last().is_some_and(|f| f.object);
                i += 1;
            }
            b':' => {
                expect_key = false;
                i += 1;
            }
            b'"' => {
                let end = string_end(bytes, i).ok_or_else(|| InvalidJson("unterminated string".into()))?;
                let raw = &body[i..=end];
                let text: Cow<'_, str> = if raw.contains('\\') {
                    Cow::Owned(serde_json::from_str::<String>(raw).map_err(|e| InvalidJson(e.to_string()))?)
                } else {
                    Cow::Borrowed(&raw[1..raw.len() - 1])
                };
                match stack.last_mut() {
                    Some(top) if expect_key => top.key = Some(text.into_owned()),
                    top => {
                        let ctx = StrCtx {
                            key: top.as_ref().and_then(|t| {
                                if t.object {
                                    t.key.as_deref()
                                } else {
                                    t.outer_key.as_deref()
                                }
                            }),
                            in_input: top.as_ref().is_some_and(|t| t.in_input),
                        };
                        if let Some(new) = rewrite(&ctx, &text) {
                            let out = out.get_or_insert_with(|| String::with_capacity(body.len()));
                            out.push_str(&body[copied..i]);
                            out.push_str(&serde_json::Value::from(new).to_string());
                            copied = end + 1;
                        }
                    }
                }
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    if let Some(out) = out.as_mut() {
        out.push_str(&body[copied..]);
    }
    Ok(out)
}

/// Index of the quote closing the string that opens at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut j = start + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 2,
            b'"' => return Some(j),
            _ => j += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_values_not_keys_and_keeps_other_bytes() {
        let body = r#"{ "z":1.50, "a" : ["x", {"k":"x"}], "x": "x\"y", "n": null }"#;
        let mut seen = Vec::new();
        let out = rewrite_strings(body, |ctx, s| {
            seen.push((ctx.key.map(str::to_string), s.to_string()));
            (s == "x").then(|| "Y".to_string())
        })
        .unwrap()
        .unwrap();
        assert_eq!(out, r#"{ "z":1.50, "a" : ["Y", {"k":"Y"}], "x": "x\"y", "n": null }"#);
        assert_eq!(
            seen,
            [(Some("a".into()), "x".into()), (Some("k".into()), "x".into()), (Some("x".into()), "x\"y".into())]
        );
    }

    #[test]
    fn marks_strings_inside_input_objects() {
        let body = r#"{"type":"tool_use","input":{"type":"t","deep":[{"id":"i"}]},"id":"o"}"#;
        let mut seen = Vec::new();
        let unchanged = rewrite_strings(body, |ctx, s| {
            seen.push((s.to_string(), ctx.in_input));
            None
        })
        .unwrap();
        assert!(unchanged.is_none());
        assert_eq!(seen, [("tool_use".into(), false), ("t".into(), true), ("i".into(), true), ("o".into(), false)]);
    }

    #[test]
    fn rejects_invalid_json() {
        assert!(rewrite_strings(r#"{"a": "b"#, |_, _| None).is_err());
        assert!(rewrite_strings("not json", |_, _| None).is_err());
    }
}
