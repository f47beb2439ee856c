//! Inspection: find PII, secrets and per-team sensitive terms in the text
//! segments of a request, as [`Finding`]s (where and what, never the text).
//!
//! Each built-in type has its own detector (see `pii`, `phone`, `national`,
//! `network`, `ids`, `crypto`, `secrets`, `rules`, `attachment`, `people`
//! and `special`); a pattern detector is a compiled
//! pattern plus the checks that decide whether a pattern hit is real.
//! Everything is compiled once in [`Detectors::new`] because `scan` runs on
//! every prompt.
//!
//! Speed comes from not running most regexes at all: one byte pass
//! ([`Prescan`]) finds where numeric PII can be, and one keyword pass
//! (`keywords::KeywordGate`, a byte-pair filter over every detector's
//! keywords, where gitleaks uses Aho-Corasick) decides which keyword-gated
//! detectors run on a segment.

mod attachment;
mod crypto;
mod dictionary;
mod finding;
mod ids;
mod keywords;
mod national;
mod network;
mod people;
mod phone;
mod phone_tables;
mod pii;
mod rules;
mod secrets;
mod special;

pub use dictionary::{Dictionary, DictionaryError};
pub use finding::*;
pub use phone::{phone_region_known, PhoneRegions, DEFAULT_PHONE_REGIONS};

use std::cmp::Reverse;
use std::ops::Range;

use regex::Regex;

use keywords::KeywordGate;

/// Numeric PII (cards, SSNs, phones) needs at least this many digits
/// (a local phone number such as "467 3395" has seven).
const MIN_RUN_DIGITS: usize = 7;

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
    /// Runs of digits and dots with at least three dots (IPv4 candidates).
    dotted_runs: Vec<Range<usize>>,
    /// Offsets of two uppercase letters (then an optional space) followed
    /// by six digits: the shape of a UK National Insurance number.
    nino_starts: Vec<usize>,
    /// Offsets of tokens that start a word with one to eight uppercase
    /// letters followed by a digit ("X1234567L", "RSSMRA85T10A562S",
    /// "ABCPD1234Z"): where letter-and-digit national ids can begin.
    alnum_starts: Vec<usize>,
    /// Every detector keyword occurrence (keyword, end offset), filled by
    /// `Detectors::scan`; `None` when the segment was not keyword-scanned
    /// (detectors then search for what they need themselves).
    keyword_hits: Option<Vec<(&'static str, usize)>>,
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
            dotted_runs: Vec::new(),
            nino_starts: Vec::new(),
            alnum_starts: Vec::new(),
            keyword_hits: None,
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
            if let Some(s) = nino_shaped_at(bytes, first) {
                pre.nino_starts.push(s);
            }
            if let Some(s) = letters_before(bytes, first) {
                pre.alnum_starts.push(s);
            }
            let (mut end, mut digits, mut dots) = (first, 0, 0);
            let mut j = first;
            while j < bytes.len() && matches!(bytes[j], b'0'..=b'9' | b' ' | b'-' | b'.' | b'(' | b')' | b'+') {
                if bytes[j].is_ascii_digit() {
                    digits += 1;
                    end = j + 1;
                } else if bytes[j] == b'.' {
                    dots += 1;
                }
                j += 1;
            }
            if dots >= 3 && digits >= 4 {
                pre.dotted_runs.push(first..end);
            }
            if digits >= MIN_RUN_DIGITS {
                pre.numeric_runs.push(NumericRun { span: start..end, digits });
            }
            i = j;
        }
        pre
    }

    /// Numeric runs with at least `min_digits` digits.
    fn runs(&self, min_digits: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        self.numeric_runs.iter().filter(move |r| r.digits >= min_digits).map(|r| r.span.clone())
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

/// Start of "AB123456" or "AB 12 34 56" ending at the digit `first`, with
/// the letters at a word start.
fn nino_shaped_at(bytes: &[u8], first: usize) -> Option<usize> {
    let letters = if first >= 3 && bytes[first - 1] == b' ' { first - 3 } else { first.checked_sub(2)? };
    let word_start = letters == 0 || !is_word_byte(bytes[letters - 1]);
    let upper = bytes[letters].is_ascii_uppercase() && bytes[letters + 1].is_ascii_uppercase();
    let six = bytes[first..].iter().take(8).filter(|b| b.is_ascii_digit()).count() >= 6;
    (word_start && upper && six).then_some(letters)
}

/// Start of the one to eight uppercase letters that begin a word and end
/// at the digit `first`.
fn letters_before(bytes: &[u8], first: usize) -> Option<usize> {
    let mut start = first;
    while start > 0 && first - start < 8 && bytes[start - 1].is_ascii_uppercase() {
        start -= 1;
    }
    (start < first && (start == 0 || !is_word_byte(bytes[start - 1]))).then_some(start)
}

/// Matches of `re` within `range` of `text`, as spans of `text`. The
/// searched slice keeps one neighbouring ASCII byte on each side so `\b`
/// sees the real neighbours (a non-ASCII neighbour is a non-word byte for
/// ASCII `\b`, the same as the slice's edge). `range` must lie on char
/// boundaries.
fn find_in<'a>(re: &'a Regex, text: &'a str, range: Range<usize>) -> impl Iterator<Item = Range<usize>> + 'a {
    let bytes = text.as_bytes();
    let lo = match range.start.checked_sub(1) {
        Some(before) if bytes[before].is_ascii() => before,
        _ => range.start,
    };
    let hi = match bytes.get(range.end) {
        Some(b) if b.is_ascii() => range.end + 1,
        _ => range.end,
    };
    re.find_iter(&text[lo..hi]).map(move |m| lo + m.start()..lo + m.end())
}

/// One built-in detector: finds one type of item in one text segment.
pub(crate) trait Detector: Send + Sync {
    /// Push every accepted hit in `text` onto `out`, with `segment` as
    /// index; `pre` is `text`'s prescan.
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>);

    /// Lowercase ASCII strings of which at least one must occur in a
    /// segment (ASCII case-insensitively) for `find` to be worth running.
    /// Empty: always run.
    fn keywords(&self) -> &[&'static str] {
        &[]
    }
}

/// All built-in PII and secret detectors, compiled once.
pub struct Detectors {
    detectors: Vec<Box<dyn Detector>>,
    /// Every detector keyword, deduplicated; keyword i activates the
    /// detectors listed in `keyword_owners[i]`.
    keywords: KeywordGate,
    keyword_owners: Vec<Vec<usize>>,
    /// Detectors that declare no keywords and so run on every segment.
    ungated: Vec<usize>,
}

impl Detectors {
    pub fn new() -> Self {
        Self::with_phone_regions(PhoneRegions::default())
    }

    /// All detectors, with phone numbers written without a country code
    /// read in the numbering plans of `phone_regions`.
    pub fn with_phone_regions(phone_regions: PhoneRegions) -> Self {
        let mut detectors = pii::detectors();
        detectors.push(Box::new(phone::Phone::new(phone_regions)));
        detectors.extend(national::detectors());
        detectors.extend(network::detectors());
        detectors.extend(ids::detectors());
        detectors.extend(crypto::detectors());
        detectors.extend(secrets::detectors());
        detectors.extend(rules::detectors());
        detectors.extend(attachment::detectors());
        // Last: the special-category judgement reads the findings before it.
        detectors.extend(people::detectors());
        detectors.extend(special::detectors());
        let mut words: Vec<&'static str> = Vec::new();
        let mut keyword_owners: Vec<Vec<usize>> = Vec::new();
        let mut ungated = Vec::new();
        for (index, detector) in detectors.iter().enumerate() {
            if detector.keywords().is_empty() {
                ungated.push(index);
            }
            for &word in detector.keywords() {
                match words.iter().position(|w| *w == word) {
                    Some(i) => keyword_owners[i].push(index),
                    None => {
                        words.push(word);
                        keyword_owners.push(vec![index]);
                    }
                }
            }
        }
        Detectors { detectors, keywords: KeywordGate::new(words), keyword_owners, ungated }
    }

    /// Mark in `active` the detectors worth running on `text`, and record
    /// every keyword occurrence in `hits`.
    fn active(
        &self,
        text: &str,
        active: &mut Vec<bool>,
        found: &mut Vec<(usize, usize)>,
        hits: &mut Vec<(&'static str, usize)>,
    ) {
        active.clear();
        active.resize(self.detectors.len(), false);
        for &i in &self.ungated {
            active[i] = true;
        }
        found.clear();
        self.keywords.find(text.as_bytes(), found);
        let words = self.keywords.words();
        for &(word, end) in found.iter() {
            hits.push((words[word], end));
            for &i in &self.keyword_owners[word] {
                active[i] = true;
            }
        }
    }

    /// Scan each segment; spans are byte ranges within that segment,
    /// `segment` = its index. Dictionary hits (if `dict` is given) are
    /// [`Category::Term`], kind [`TERM_KIND`], validator "dictionary".
    /// A PII hit lying inside another PII or secret hit (digits of an IBAN
    /// read as a card number, say) is dropped so one item counts once.
    /// Result sorted by (segment, span.start).
    pub fn scan(&self, dict: Option<&Dictionary>, segments: &[&str]) -> Vec<Finding> {
        let mut findings = Vec::new();
        // Scratch space shared by the segments, so each allocates once.
        let mut active = Vec::new();
        let mut found = Vec::new();
        let mut hits = Vec::new();
        for (segment, text) in segments.iter().enumerate() {
            if text.is_empty() {
                continue;
            }
            let first = findings.len();
            let mut pre = Prescan::of(text);
            hits.clear();
            self.active(text, &mut active, &mut found, &mut hits);
            pre.keyword_hits = Some(hits);
            for (detector, _) in self.detectors.iter().zip(&active).filter(|(_, on)| **on) {
                detector.find(text, &pre, segment, &mut findings);
            }
            hits = pre.keyword_hits.take().unwrap_or_default();
            drop_nested_pii(&mut findings, first);
            if let Some(dict) = dict {
                dict.find(text, segment, &mut findings);
            }
        }
        findings.sort_by(|a, b| {
            (a.segment, a.span.start, a.span.end, a.kind).cmp(&(b.segment, b.span.start, b.span.end, b.kind))
        });
        findings
    }
}

impl std::fmt::Debug for Detectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detectors").field("detectors", &self.detectors.len()).finish()
    }
}

impl Default for Detectors {
    fn default() -> Self {
        Self::new()
    }
}

/// Remove PII, attachment and generic-secret findings in
/// `findings[first..]` (one segment, no terms yet) whose span lies within
/// another finding's span (named entities neither hide nor are hidden): a specific secret rule beats the generic
/// assignment rule, and a PEM body is not also an attachment. Sorting by start, then
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
        // A named place inside an address is a finding of its own, and a
        // name around a number does not hide the number.
        if index <= first || f.category == Category::Entity {
            return true;
        }
        let nested = reach.is_some_and(|r| f.span.end <= r);
        if !nested {
            reach = Some(f.span.end);
        }
        let droppable = match f.category {
            Category::Pii | Category::Attachment => true,
            Category::Secret => f.kind == "generic_secret",
            Category::Term | Category::Special | Category::Entity => false,
        };
        !(nested && droppable)
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
    let before = span.start >= 2 && is_joiner(bytes[span.start - 1]) && bytes[span.start - 2].is_ascii_digit();
    let after = span.end + 1 < bytes.len() && is_joiner(bytes[span.end]) && bytes[span.end + 1].is_ascii_digit();
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
    // Letters the words start with, by `byte & 31` (either case): one test
    // rules out most word starts before any comparison.
    // An empty word would match at every word start.
    let firsts = words.iter().fold(0u32, |set, w| set | w.as_bytes().first().map_or(u32::MAX, |&b| 1 << (b & 31)));
    let word_at = |i: usize, limit: usize| {
        bytes[i].is_ascii_alphabetic()
            && firsts & (1 << (bytes[i] & 31)) != 0
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
    Finding { category, kind, segment, span, confidence, validator }
}

#[cfg(test)]
mod tests;
