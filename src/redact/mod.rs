//! `then: redact`: swap each finding's value for a typed placeholder
//! (`<EMAIL_1>`) in the body sent to the cloud, and swap placeholders back
//! for the values in the answer, whole or streamed, before the client sees it.
//!
//! A [`Redaction`] is planned once per request from the findings. The same
//! value always gets the same placeholder, numbered per type in order of
//! first appearance; clients resend the whole conversation each turn, so the
//! numbering is stable across turns. Placeholders the model invents
//! (`<EMAIL_9>` when there is no such entry) are left as they are.

mod json;
mod sse;
mod table;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::inspect::Finding;

pub use sse::SseRestorer;
use table::{Mode, Table};

/// Why a body could not be redacted or restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedactError {
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    /// Fail closed: a value the inspector found is not inside any string of
    /// the body that redaction rewrites (for example it spans two content
    /// parts the parser joined), so it would reach the cloud.
    #[error("a `{kind}` finding could not be located in the request body")]
    Unplaced { kind: &'static str },
    #[error("too many distinct values to redact")]
    TooManyValues,
}

impl From<json::InvalidJson> for RedactError {
    fn from(e: json::InvalidJson) -> Self {
        RedactError::InvalidJson(e.0)
    }
}

/// The placeholders of one request and the values they stand for.
///
/// Cheap to clone; `Debug` prints counts only, never values.
#[derive(Clone, Default)]
pub struct Redaction {
    table: Arc<Table>,
}

/// Member keys whose string values are protocol identifiers or binary
/// payloads, not prose: rewriting them would break the request (a term that
/// happens to occur in base64 image data, a model name, a tool id).
const PROTOCOL_KEYS: &[&str] = &[
    "model",
    "role",
    "type",
    "id",
    "name",
    "tool_call_id",
    "tool_use_id",
    "call_id",
    "signature",
    "data",
    "file_data",
    "file_id",
    "media_type",
    "detail",
    "format",
    "encrypted_content",
];

/// Keys whose string values are JSON source text rather than prose.
const JSON_TEXT_KEYS: &[&str] = &["arguments", "partial_json"];

impl Redaction {
    /// Assign placeholders in order of first appearance; the same value gets
    /// the same placeholder (and keeps the kind it was first seen with).
    /// `items` yields `(kind, value)` in conversation order. Empty values are
    /// ignored.
    pub fn plan<'a>(items: impl IntoIterator<Item = (&'static str, &'a str)>) -> Redaction {
        let mut table = Table::default();
        let mut seen: HashMap<&'a str, ()> = HashMap::new();
        let mut next_number: HashMap<String, u32> = HashMap::new();
        for (kind, value) in items {
            if value.is_empty() || seen.insert(value, ()).is_some() {
                continue;
            }
            let label = placeholder_label(kind);
            let n = next_number.entry(label.clone()).or_insert(0);
            *n += 1;
            table.push(kind, format!("{label}_{n}"), value.to_string());
        }
        Redaction { table: Arc::new(table) }
    }

    /// Plan from inspector findings over `segments` (the request's
    /// `text_segments()`), ordered by segment then position so numbering
    /// follows the conversation. Findings whose span does not fit their
    /// segment are skipped.
    pub fn from_findings(segments: &[&str], findings: &[Finding]) -> Redaction {
        let mut ordered: Vec<&Finding> = findings.iter().collect();
        ordered.sort_by_key(|f| (f.segment, f.span.start, std::cmp::Reverse(f.span.end)));
        Redaction::plan(ordered.into_iter().filter_map(|f| {
            let value = segments.get(f.segment)?.get(f.span.clone())?;
            Some((f.kind, value))
        }))
    }

    pub fn is_empty(&self) -> bool {
        self.table.entries.is_empty()
    }

    /// Fail closed on a value that survived redaction: one that also sits
    /// in a protocol field (a message `name`), a key, or behind a JSON
    /// escape. Every string and key of the redacted body is searched.
    pub fn check_gone(&self, redacted: &[u8]) -> Result<(), RedactError> {
        let value =
            crate::wire::document::parse_value(redacted).map_err(|e| RedactError::InvalidJson(e.to_string()))?;
        let inventory = crate::wire::document::Inventory::of(&value);
        let finder = AhoCorasick::new(self.table.entries.iter().map(|e| e.value.as_str()))
            .map_err(|_| RedactError::TooManyValues)?;
        for text in inventory.texts() {
            if let Some(m) = finder.find(text) {
                return Err(RedactError::Unplaced { kind: self.table.entries[m.pattern().as_usize()].kind });
            }
        }
        Ok(())
    }

    /// Distinct redacted values per finding kind, for the audit record.
    pub fn counts_by_kind(&self) -> BTreeMap<&'static str, u32> {
        let mut counts = BTreeMap::new();
        for e in &self.table.entries {
            *counts.entry(e.kind).or_insert(0) += 1;
        }
        counts
    }

    /// Rewrite a JSON request body: in every string value (not keys, not
    /// protocol fields such as `model`, `role`, `id` or base64 `data`), each
    /// value is replaced by its placeholder, longest match first. Everything
    /// else is kept byte for byte. Fails closed with
    /// [`RedactError::Unplaced`] if some value was found nowhere.
    pub fn redact_json_body(&self, body: &[u8]) -> Result<Vec<u8>, RedactError> {
        if self.is_empty() {
            return Ok(body.to_vec());
        }
        let text = std::str::from_utf8(body).map_err(|e| RedactError::InvalidJson(e.to_string()))?;
        let entries = &self.table.entries;
        let plain = Needles::new(entries.iter().enumerate().map(|(i, e)| (i, e.value.clone())))?;
        // Anthropic tool inputs are inspected as sluice's serialisation of
        // the `input` object, so a value found there may carry escapes
        // (`\"`, `\n`) that the strings inside `input` do not; there, match
        // the unescaped spelling too.
        let unescaped = entries.iter().enumerate().filter_map(|(i, e)| {
            if !e.value.contains('\\') {
                return None;
            }
            let plain = serde_json::from_str::<String>(&format!("\"{}\"", e.value)).ok()?;
            (plain != e.value && !plain.is_empty()).then_some((i, plain))
        });
        let input = Needles::new(plain.items.iter().cloned().chain(unescaped))?;
        let mut hits = vec![0u32; entries.len()];
        let rewritten = json::rewrite_strings(text, |ctx, s| {
            if !rewritable(ctx, s) {
                return None;
            }
            let needles = if ctx.in_input { &input } else { &plain };
            let mut out: Option<String> = None;
            let mut copied = 0;
            for m in needles.matcher.find_iter(s) {
                let entry = needles.items[m.pattern().as_usize()].0;
                hits[entry] += 1;
                let out = out.get_or_insert_with(|| String::with_capacity(s.len()));
                out.push_str(&s[copied..m.start()]);
                out.push_str(&entries[entry].placeholder);
                copied = m.end();
            }
            if let Some(out) = out.as_mut() {
                out.push_str(&s[copied..]);
            }
            out
        })?;
        // A value with no match of its own may only have occurred inside a
        // longer (or earlier, overlapping) value, which was replaced; it is
        // unplaced only if no rewritable string contains it at all.
        let mut missing: Vec<usize> = (0..hits.len()).filter(|&i| hits[i] == 0).collect();
        if !missing.is_empty() {
            json::rewrite_strings(text, |ctx, s| {
                if rewritable(ctx, s) {
                    let needles = if ctx.in_input { &input } else { &plain };
                    missing.retain(|&i| !needles.items.iter().any(|(o, n)| *o == i && s.contains(n.as_str())));
                }
                None
            })?;
        }
        if let Some(&first) = missing.first() {
            return Err(RedactError::Unplaced { kind: entries[first].kind });
        }
        Ok(rewritten.map_or_else(|| body.to_vec(), String::into_bytes))
    }

    /// Restore a whole (non-streamed) JSON response. Inside JSON-encoded
    /// strings (`arguments`, `partial_json`) values go in JSON-escaped.
    /// Returns the body unchanged when it holds no placeholder.
    pub fn restore_json_body(&self, body: &[u8]) -> Result<Vec<u8>, RedactError> {
        if self.is_empty() || !table::may_hold_placeholder(body) {
            return Ok(body.to_vec());
        }
        let text = std::str::from_utf8(body).map_err(|e| RedactError::InvalidJson(e.to_string()))?;
        let rewritten = restore_document(&self.table, text)?;
        Ok(rewritten.map_or_else(|| body.to_vec(), String::into_bytes))
    }

    /// A restorer for one streamed (SSE) response in `dialect`.
    pub fn sse_restorer(&self, dialect: crate::wire::Dialect) -> SseRestorer {
        SseRestorer::new(Arc::clone(&self.table), dialect)
    }
}

/// Values to find, each with the index of the entry it stands for.
struct Needles {
    items: Vec<(usize, String)>,
    matcher: AhoCorasick,
}

impl Needles {
    fn new(items: impl IntoIterator<Item = (usize, String)>) -> Result<Needles, RedactError> {
        let items: Vec<(usize, String)> = items.into_iter().collect();
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(items.iter().map(|(_, n)| n))
            .map_err(|_| RedactError::TooManyValues)?;
        Ok(Needles { items, matcher })
    }
}

/// Whether redaction may rewrite a string value: not protocol fields
/// (outside tool inputs) and not data URLs.
fn rewritable(ctx: &json::StrCtx<'_>, s: &str) -> bool {
    let protocol = !ctx.in_input && ctx.key.is_some_and(|k| PROTOCOL_KEYS.contains(&k));
    !protocol && !s.starts_with("data:")
}

/// Restore every placeholder in the string values of a JSON document;
/// `Ok(None)` when nothing changed.
fn restore_document(table: &Table, text: &str) -> Result<Option<String>, json::InvalidJson> {
    json::rewrite_strings(text, |ctx, s| {
        let json_text = !ctx.in_input && ctx.key.is_some_and(|k| JSON_TEXT_KEYS.contains(&k));
        table.restore(s, if json_text { Mode::JsonText } else { Mode::Text })
    })
}

impl fmt::Debug for Redaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redaction").field("counts", &self.counts_by_kind()).finish()
    }
}

/// The placeholder label for a finding kind: `email` → `EMAIL`,
/// `credit_card` → `CARD`; unknown kinds are upper-cased, with anything but
/// ASCII letters and digits turned into `_`.
pub fn placeholder_label(kind: &str) -> String {
    let fixed = match kind {
        "email" => "EMAIL",
        "credit_card" => "CARD",
        "us_ssn" => "SSN",
        "phone" => "PHONE",
        "iban" => "IBAN",
        "aws_access_key" => "AWS_KEY",
        "github_token" => "GITHUB_TOKEN",
        "openai_key" => "OPENAI_KEY",
        "anthropic_key" => "ANTHROPIC_KEY",
        "private_key" => "PRIVATE_KEY",
        "term" => "TERM",
        _ => "",
    };
    if !fixed.is_empty() {
        return fixed.to_string();
    }
    let label: String =
        kind.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    if label.is_empty() {
        "REDACTED".to_string()
    } else {
        label
    }
}

#[cfg(test)]
mod tests;
