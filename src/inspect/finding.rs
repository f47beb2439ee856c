//! The plain data every detector produces and every later step consumes.
//!
//! Findings never carry the matched text: only where it is (segment + span)
//! and what it is. Whoever needs the value (redaction) slices the request.

use std::collections::BTreeMap;
use std::ops::Range;

/// Broad family of a finding; policies match on it (`pii: any`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Pii,
    Secret,
    Term,
}

/// One detected item in one text segment of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub category: Category,
    /// Stable type name, one of [`PII_KINDS`], [`SECRET_KINDS`] or [`TERM_KIND`].
    pub kind: &'static str,
    /// Index of the scanned segment (see `Detectors::scan`).
    pub segment: usize,
    /// Byte range inside that segment.
    pub span: Range<usize>,
    /// 0.0..=1.0; validated matches are high, bare pattern matches lower.
    pub confidence: f32,
    /// Which check accepted the match: "luhn", "mod97", "ssn_rules", "pattern", "dictionary", ...
    pub validator: &'static str,
}

/// PII type names that policies may name under `when.pii`.
pub const PII_KINDS: &[&str] = &["email", "credit_card", "us_ssn", "phone", "iban"];

/// Secret type names that policies may name under `when.secrets`.
pub const SECRET_KINDS: &[&str] = &[
    "aws_access_key",
    "github_token",
    "openai_key",
    "anthropic_key",
    "private_key",
];

/// The kind of every dictionary hit; the term itself is never recorded.
pub const TERM_KIND: &str = "term";

/// Count findings by type name, for the audit record and metrics.
pub fn count_by_kind(findings: &[Finding]) -> BTreeMap<&'static str, u32> {
    let mut counts = BTreeMap::new();
    for f in findings {
        *counts.entry(f.kind).or_insert(0) += 1;
    }
    counts
}
