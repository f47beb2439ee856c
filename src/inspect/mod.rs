//! Inspection: find PII, secrets and per-team sensitive terms in the text
//! segments of a request, as [`Finding`]s (where and what, never the text).
//!
//! Each built-in type has its own detector (see `pii` and `secrets`); a
//! detector is a compiled pattern plus the checks that decide whether a
//! pattern hit is real. Everything is compiled once in [`Detectors::new`]
//! because `scan` runs on every prompt.

mod dictionary;
mod finding;
mod pii;
mod secrets;

pub use dictionary::{Dictionary, DictionaryError};
pub use finding::*;

use std::cmp::Reverse;
use std::ops::Range;

/// Cheap facts about a segment, computed once so detectors can skip text
/// they cannot match without running their regex over it.
pub(crate) struct TextHints {
    has_digit: bool,
    has_at: bool,
}

impl TextHints {
    fn of(text: &str) -> Self {
        let bytes = text.as_bytes();
        TextHints {
            has_digit: bytes.iter().any(u8::is_ascii_digit),
            // `<[u8]>::contains` is memchr-backed.
            has_at: bytes.contains(&b'@'),
        }
    }
}

/// One built-in detector: finds one type of item in one text segment.
pub(crate) trait Detector: Send + Sync {
    /// False when `find` cannot possibly match `hints`' text.
    fn may_match(&self, hints: &TextHints) -> bool;
    /// Push every accepted hit in `text` onto `out`, with `segment` as index.
    fn find(&self, text: &str, segment: usize, out: &mut Vec<Finding>);
}

/// All built-in PII and secret detectors, compiled once.
pub struct Detectors {
    detectors: Vec<Box<dyn Detector>>,
}

impl Detectors {
    pub fn new() -> Self {
        let mut detectors = pii::detectors();
        detectors.extend(secrets::detectors());
        Detectors { detectors }
    }

    /// Scan each segment; spans are byte ranges within that segment,
    /// `segment` = its index. Dictionary hits (if `dict` is given) are
    /// [`Category::Term`], kind [`TERM_KIND`], validator "dictionary".
    /// A PII hit lying inside another PII or secret hit (digits of an IBAN
    /// read as a card number, say) is dropped so one item counts once.
    /// Result sorted by (segment, span.start).
    pub fn scan(&self, dict: Option<&Dictionary>, segments: &[&str]) -> Vec<Finding> {
        let mut findings = Vec::new();
        for (segment, text) in segments.iter().enumerate() {
            if text.is_empty() {
                continue;
            }
            let first = findings.len();
            let hints = TextHints::of(text);
            for detector in &self.detectors {
                if detector.may_match(&hints) {
                    detector.find(text, segment, &mut findings);
                }
            }
            drop_nested_pii(&mut findings, first);
            if let Some(dict) = dict {
                dict.find(text, segment, &mut findings);
            }
        }
        findings.sort_by(|a, b| {
            (a.segment, a.span.start, a.span.end, a.kind).cmp(&(
                b.segment,
                b.span.start,
                b.span.end,
                b.kind,
            ))
        });
        findings
    }
}

impl std::fmt::Debug for Detectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detectors")
            .field("detectors", &self.detectors.len())
            .finish()
    }
}

impl Default for Detectors {
    fn default() -> Self {
        Self::new()
    }
}

/// Remove PII findings in `findings[first..]` (one segment, no terms yet)
/// whose span lies within another finding's span. Sorting by start, then
/// longest and most confident first, means a finding is nested exactly when
/// an earlier one reaches at least as far.
fn drop_nested_pii(findings: &mut Vec<Finding>, first: usize) {
    if findings.len() - first < 2 {
        return;
    }
    let tail = &mut findings[first..];
    tail.sort_by(|a, b| {
        (a.span.start, Reverse(a.span.end))
            .cmp(&(b.span.start, Reverse(b.span.end)))
            .then(b.confidence.total_cmp(&a.confidence))
    });
    let mut reach = 0;
    let mut seen_any = false;
    let kept: Vec<Finding> = findings
        .drain(first..)
        .filter(|f| {
            let nested = seen_any && f.span.end <= reach;
            if !seen_any || f.span.end > reach {
                reach = f.span.end;
            }
            seen_any = true;
            !(nested && f.category == Category::Pii)
        })
        .collect();
    findings.extend(kept);
}

/// Bytes that make up a "word" for boundary checks, as regex's ASCII `\b`.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// True when `span` is one piece of a longer dotted/dashed/slashed number
/// (a version, IP address, date or longer ID): a separator followed by a
/// digit directly before or after it.
fn joined_to_number(text: &str, span: &Range<usize>) -> bool {
    let bytes = text.as_bytes();
    let is_joiner = |b: u8| matches!(b, b'.' | b'-' | b'/' | b':');
    let before = span.start >= 2
        && is_joiner(bytes[span.start - 1])
        && bytes[span.start - 2].is_ascii_digit();
    let after = span.end + 1 < bytes.len()
        && is_joiner(bytes[span.end])
        && bytes[span.end + 1].is_ascii_digit();
    before || after
}

/// How far around a hit to look for words like "ssn" or "card".
const CONTEXT_BEFORE: usize = 48;
const CONTEXT_AFTER: usize = 24;

/// True when one of `words` (lowercase ASCII) starts a word near `span`.
/// Only the start is anchored so that "cards" or "cardholder" count too.
fn context_near(text: &str, span: &Range<usize>, words: &[&str]) -> bool {
    let bytes = text.as_bytes();
    let from = span.start.saturating_sub(CONTEXT_BEFORE);
    let to = (span.end + CONTEXT_AFTER).min(bytes.len());
    let windows = [(from, span.start), (span.end, to)];
    windows.iter().any(|&(lo, hi)| {
        let window = &bytes[lo..hi];
        words.iter().any(|word| {
            let word = word.as_bytes();
            window.len() >= word.len()
                && (0..=window.len() - word.len()).any(|i| {
                    let starts_word = i + lo == 0 || !bytes[i + lo - 1].is_ascii_alphabetic();
                    starts_word && window[i..i + word.len()].eq_ignore_ascii_case(word)
                })
        })
    })
}

/// Compile one of the built-in patterns.
fn compile_builtin(pattern: &str) -> regex::Regex {
    // The patterns are string constants exercised by the unit tests, so a
    // failure here is a programming error caught before release.
    regex::Regex::new(pattern).expect("built-in pattern is a valid regex")
}

/// Build a finding; every detector goes through here.
fn finding(
    category: Category,
    kind: &'static str,
    segment: usize,
    span: Range<usize>,
    confidence: f32,
    validator: &'static str,
) -> Finding {
    Finding {
        category,
        kind,
        segment,
        span,
        confidence,
        validator,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(findings: &[Finding]) -> Vec<(&'static str, usize, Range<usize>)> {
        findings
            .iter()
            .map(|f| (f.kind, f.segment, f.span.clone()))
            .collect()
    }

    #[test]
    fn every_kind_is_a_declared_type_name() {
        let d = Detectors::new();
        let text = "mail a@example.com card 4111 1111 1111 1111 ssn 219-09-9999 \
                    call (415) 555-0132 iban DE89 3704 0044 0532 0130 00 \
                    AKIAQ3EGRTYU6WNOP4XZ ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5 \
                    sk-proj-Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7Tv9Wx1Yz3 \
                    sk-ant-api03-Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7Tv9Wx1Yz3 \
                    -----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----";
        let found = d.scan(None, &[text]);
        let mut got: Vec<&str> = found.iter().map(|f| f.kind).collect();
        got.sort_unstable();
        got.dedup();
        let mut want: Vec<&str> = PII_KINDS.iter().chain(SECRET_KINDS).copied().collect();
        want.sort_unstable();
        assert_eq!(got, want);
        for f in &found {
            assert!((0.0..=1.0).contains(&f.confidence), "{f:?}");
            assert_eq!(
                f.category == Category::Pii,
                PII_KINDS.contains(&f.kind),
                "{f:?}"
            );
        }
    }

    #[test]
    fn segments_are_indexed_and_spans_are_local() {
        let d = Detectors::new();
        let segments = [
            "nothing here",
            "write to bob@example.com now",
            "",
            "key AKIAQ3EGRTYU6WNOP4XZ and ann@example.org",
        ];
        let found = d.scan(None, &segments);
        assert_eq!(
            kinds(&found),
            vec![
                ("email", 1, 9..24),
                ("aws_access_key", 3, 4..24),
                ("email", 3, 29..44),
            ]
        );
        assert_eq!(&segments[1][9..24], "bob@example.com");
        assert_eq!(&segments[3][29..44], "ann@example.org");
    }

    #[test]
    fn results_are_sorted_and_include_dictionary_terms() {
        let d = Detectors::new();
        let dict = Dictionary::new(["Project Falcon"]).unwrap();
        let segments = [
            "ann@example.org wrote about project falcon",
            "PROJECT FALCON ssn 219-09-9999",
        ];
        let found = d.scan(Some(&dict), &segments);
        assert_eq!(
            kinds(&found),
            vec![
                ("email", 0, 0..15),
                (TERM_KIND, 0, 28..42),
                (TERM_KIND, 1, 0..14),
                ("us_ssn", 1, 19..30),
            ]
        );
        let term = &found[1];
        assert_eq!(term.category, Category::Term);
        assert_eq!(term.validator, "dictionary");
    }

    #[test]
    fn clean_text_has_no_findings() {
        let d = Detectors::new();
        let text = "Upgrade regex to 1.10.2 and tokio 1.38.0; the build took 12.5s \
                    on 2024-03-14 at 10:42. See issue #4521, PR 1234567 and commit \
                    9f8e7d6c5b4a. Port 8080, 192.168.100.200, ratio 3/4, \
                    version 10.123.45.6789, id 12345678901234567890.";
        assert_eq!(d.scan(None, &[text]), vec![]);
    }

    #[test]
    fn card_digits_inside_an_iban_count_once() {
        let d = Detectors::new();
        // The 16 digits after the country code pass Luhn with a Visa prefix.
        let text = "GB77 4111 1111 1111 1111 00";
        let found = d.scan(None, &[text]);
        assert!(found.iter().all(|f| f.kind != "credit_card"), "{found:?}");
    }

    #[test]
    fn nested_pii_is_dropped_but_outer_and_disjoint_kept() {
        let mk =
            |kind, span: Range<usize>, conf| finding(Category::Pii, kind, 0, span, conf, "pattern");
        let mut v = vec![
            mk("phone", 5..15, 0.7),
            mk("iban", 0..30, 0.9),
            mk("email", 40..50, 0.85),
        ];
        drop_nested_pii(&mut v, 0);
        let got: Vec<&str> = v.iter().map(|f| f.kind).collect();
        assert_eq!(got, vec!["iban", "email"]);
    }

    #[test]
    fn context_words_must_start_a_word() {
        let text = "my ssn: 219-09-9999";
        assert!(context_near(text, &(8..19), &["ssn"]));
        let text = "carelessness 219-09-9999";
        assert!(!context_near(text, &(13..24), &["ssn"]));
        let text = "219-09-9999 is the SSN";
        assert!(context_near(text, &(0..11), &["ssn"]));
    }

    #[test]
    fn joined_numbers_are_recognised() {
        assert!(joined_to_number("1.415.555.0132", &(2..14)));
        assert!(joined_to_number("415-555-0132-9", &(0..12)));
        assert!(!joined_to_number("call 415-555-0132.", &(5..17)));
    }
}
