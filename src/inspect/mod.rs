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

use regex::Regex;

/// Numeric PII (cards, SSNs, phones) needs at least this many digits.
const MIN_RUN_DIGITS: usize = 8;

/// Facts about one segment gathered in a single byte pass, so detectors
/// run their regexes only where a match is possible. Prompts are full of
/// short numbers (versions, ports, counts); without this every digit would
/// restart each numeric regex.
pub(crate) struct Prescan {
    has_at: bool,
    /// Runs of digits and the separators numeric PII uses (space - . ( ) +)
    /// with at least [`MIN_RUN_DIGITS`] digits, each ending on a digit.
    numeric_runs: Vec<NumericRun>,
    /// Offsets of two uppercase letters plus two digits at a word start.
    iban_starts: Vec<usize>,
}

pub(crate) struct NumericRun {
    span: Range<usize>,
    digits: usize,
}

impl Prescan {
    fn of(text: &str) -> Self {
        let bytes = text.as_bytes();
        let mut pre = Prescan {
            // `<[u8]>::contains` is memchr-backed.
            has_at: bytes.contains(&b'@'),
            numeric_runs: Vec::new(),
            iban_starts: Vec::new(),
        };
        let mut i = 0;
        while let Some(first) = next_digit(bytes, i) {
            if iban_shaped_at(bytes, first) {
                pre.iban_starts.push(first - 2);
            }
            // "(415)" and "+44" start before their first digit.
            let mut start = first;
            while start > i && matches!(bytes[start - 1], b'(' | b'+') {
                start -= 1;
            }
            let (mut end, mut digits) = (first, 0);
            let mut j = first;
            while j < bytes.len()
                && matches!(
                    bytes[j],
                    b'0'..=b'9' | b' ' | b'-' | b'.' | b'(' | b')' | b'+'
                )
            {
                if bytes[j].is_ascii_digit() {
                    digits += 1;
                    end = j + 1;
                }
                j += 1;
            }
            if digits >= MIN_RUN_DIGITS {
                pre.numeric_runs.push(NumericRun {
                    span: start..end,
                    digits,
                });
            }
            i = j;
        }
        pre
    }

    /// Numeric runs with at least `min_digits` digits.
    fn runs(&self, min_digits: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        self.numeric_runs
            .iter()
            .filter(move |r| r.digits >= min_digits)
            .map(|r| r.span.clone())
    }
}

/// Index of the first ASCII digit at or after `from`. Most prompt text is
/// not digits, so it tests eight bytes at a time first.
fn next_digit(bytes: &[u8], mut from: usize) -> Option<usize> {
    while let Some(chunk) = bytes[from..].first_chunk::<8>() {
        if has_ascii_digit(u64::from_le_bytes(*chunk)) {
            break;
        }
        from += 8;
    }
    let offset = bytes[from..].iter().position(u8::is_ascii_digit)?;
    Some(from + offset)
}

/// Whether any of the eight bytes in `word` is b'0'..=b'9'. With the top
/// bit of each byte cleared, adding 0x80 - c sets a byte's top bit exactly
/// when that byte is >= c, and never carries into the next byte; bytes
/// that had their top bit set (non-ASCII) are masked out at the end.
fn has_ascii_digit(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    let low7 = word & !TOPS;
    let at_least_0 = low7 + ONES * u64::from(0x80 - b'0');
    let above_9 = low7 + ONES * u64::from(0x80 - b'9' - 1);
    at_least_0 & !above_9 & !word & TOPS != 0
}

/// True when the digit at `first` begins "CCdd" (an IBAN's country code and
/// check digits) and the letters start a word.
fn iban_shaped_at(bytes: &[u8], first: usize) -> bool {
    first >= 2
        && bytes[first - 2].is_ascii_uppercase()
        && bytes[first - 1].is_ascii_uppercase()
        && bytes.get(first + 1).is_some_and(u8::is_ascii_digit)
        && (first == 2 || !is_word_byte(bytes[first - 3]))
}

/// Matches of `re` within `range` of `text`, as spans of `text`. The
/// searched slice keeps one neighbouring ASCII byte on each side so `\b`
/// sees the real neighbours (a non-ASCII neighbour is a non-word byte for
/// ASCII `\b`, the same as the slice's edge). `range` must lie on char
/// boundaries.
fn find_in<'a>(
    re: &'a Regex,
    text: &'a str,
    range: Range<usize>,
) -> impl Iterator<Item = Range<usize>> + 'a {
    let bytes = text.as_bytes();
    let lo = match range.start.checked_sub(1) {
        Some(before) if bytes[before].is_ascii() => before,
        _ => range.start,
    };
    let hi = match bytes.get(range.end) {
        Some(b) if b.is_ascii() => range.end + 1,
        _ => range.end,
    };
    re.find_iter(&text[lo..hi])
        .map(move |m| lo + m.start()..lo + m.end())
}

/// One built-in detector: finds one type of item in one text segment.
pub(crate) trait Detector: Send + Sync {
    /// Push every accepted hit in `text` onto `out`, with `segment` as
    /// index; `pre` is `text`'s prescan.
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>);
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
            let pre = Prescan::of(text);
            for detector in &self.detectors {
                detector.find(text, &pre, segment, &mut findings);
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
    findings[first..].sort_by(|a, b| {
        (a.span.start, Reverse(a.span.end))
            .cmp(&(b.span.start, Reverse(b.span.end)))
            .then(b.confidence.total_cmp(&a.confidence))
    });
    let mut index = 0;
    let mut reach = None;
    findings.retain(|f| {
        index += 1;
        if index <= first {
            return true;
        }
        let nested = reach.is_some_and(|r| f.span.end <= r);
        if !nested {
            reach = Some(f.span.end);
        }
        !(nested && f.category == Category::Pii)
    });
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

/// True when one of `words` (lowercase ASCII, each starting with a letter)
/// starts a word near `span`. Only the start is anchored so that "cards" or
/// "cardholder" count too. Runs for every candidate, so positions inside
/// words are skipped before any comparison.
fn context_near(text: &str, span: &Range<usize>, words: &[&str]) -> bool {
    let bytes = text.as_bytes();
    let word_at = |i: usize, limit: usize| {
        bytes[i].is_ascii_alphabetic()
            && (i == 0 || !bytes[i - 1].is_ascii_alphabetic())
            && words.iter().any(|w| {
                let w = w.as_bytes();
                i + w.len() <= limit && bytes[i..i + w.len()].eq_ignore_ascii_case(w)
            })
    };
    let from = span.start.saturating_sub(CONTEXT_BEFORE);
    let to = (span.end + CONTEXT_AFTER).min(bytes.len());
    (from..span.start).any(|i| word_at(i, span.start)) || (span.end..to).any(|i| word_at(i, to))
}

/// Compile one of the built-in patterns.
fn compile_builtin(pattern: &str) -> Regex {
    // The patterns are string constants exercised by the unit tests, so a
    // failure here is a programming error caught before release.
    Regex::new(pattern).expect("built-in pattern is a valid regex")
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
    fn detectors_and_dictionary_can_be_shared_across_tasks() {
        fn shareable<T: Send + Sync + 'static>(_: &T) {}
        shareable(&Detectors::default());
        shareable(&Dictionary::new(["x"]).unwrap());
        assert!(format!("{:?}", Detectors::new()).contains("10"));
    }

    #[test]
    fn anthropic_key_is_not_also_an_openai_key() {
        let d = Detectors::new();
        let key = "sk-ant-api03-Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7Tv9Wx1Yz3";
        let found = d.scan(None, &[&format!("ANTHROPIC_API_KEY={key}")]);
        assert_eq!(
            kinds(&found),
            vec![("anthropic_key", 0, 18..18 + key.len())]
        );
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
    fn digit_search_matches_bytewise_search() {
        let mut text: Vec<u8> = b"no digits here, just words and \xc3\xa9 accents ".to_vec();
        assert_eq!(next_digit(&text, 0), None);
        for (i, b) in (0u8..=255).enumerate() {
            let word = u64::from_le_bytes([b'a', b'/', b':', 0xB0, 0xB9, b, b'z', 0xFF]);
            assert_eq!(
                has_ascii_digit(word),
                b.is_ascii_digit(),
                "byte {b:#x} ({i})"
            );
        }
        text.extend_from_slice(b"v2");
        assert_eq!(next_digit(&text, 0), Some(text.len() - 1));
        assert_eq!(next_digit(&text, text.len()), None);
    }

    #[test]
    fn prescan_finds_numeric_runs_and_iban_starts() {
        let text = "v1.2.3 call (415) 555-0132 or +44 20 7123 4567; IBAN DE89 3704, xDE89";
        let pre = Prescan::of(text);
        let runs: Vec<&str> = pre
            .numeric_runs
            .iter()
            .map(|r| &text[r.span.clone()])
            .collect();
        assert_eq!(runs, vec!["(415) 555-0132", "+44 20 7123 4567"]);
        assert_eq!(pre.iban_starts, vec![53]);
        assert!(!pre.has_at);
    }

    #[test]
    fn joined_numbers_are_recognised() {
        assert!(joined_to_number("1.415.555.0132", &(2..14)));
        assert!(joined_to_number("415-555-0132-9", &(0..12)));
        assert!(!joined_to_number("call 415-555-0132.", &(5..17)));
    }
}
