//! Inspection: find PII, secrets and per-team sensitive terms in the text
//! segments of a request, as [`Finding`]s (where and what, never the text).
//!
//! Each built-in type has its own detector (see `pii`, `network`, `ids`,
//! `crypto`, `secrets`, `rules` and `attachment`); a detector is a compiled
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
mod network;
mod pii;
mod rules;
mod secrets;

pub use dictionary::{Dictionary, DictionaryError};
pub use finding::*;

use std::cmp::Reverse;
use std::ops::Range;

use regex::Regex;

use keywords::KeywordGate;

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
    /// Runs of digits and dots with at least three dots (IPv4 candidates).
    dotted_runs: Vec<Range<usize>>,
    /// Offsets of two uppercase letters (then an optional space) followed
    /// by six digits: the shape of a UK National Insurance number.
    nino_starts: Vec<usize>,
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
            let (mut end, mut digits, mut dots) = (first, 0, 0);
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
                } else if bytes[j] == b'.' {
                    dots += 1;
                }
                j += 1;
            }
            if dots >= 3 && digits >= 4 {
                pre.dotted_runs.push(first..end);
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

/// Start of "AB123456" or "AB 12 34 56" ending at the digit `first`, with
/// the letters at a word start.
fn nino_shaped_at(bytes: &[u8], first: usize) -> Option<usize> {
    let letters = if first >= 3 && bytes[first - 1] == b' ' {
        first - 3
    } else {
        first.checked_sub(2)?
    };
    let word_start = letters == 0 || !is_word_byte(bytes[letters - 1]);
    let upper = bytes[letters].is_ascii_uppercase() && bytes[letters + 1].is_ascii_uppercase();
    let six = bytes[first..]
        .iter()
        .take(8)
        .filter(|b| b.is_ascii_digit())
        .count()
        >= 6;
    (word_start && upper && six).then_some(letters)
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
        let mut detectors = pii::detectors();
        detectors.extend(network::detectors());
        detectors.extend(ids::detectors());
        detectors.extend(crypto::detectors());
        detectors.extend(secrets::detectors());
        detectors.extend(rules::detectors());
        detectors.extend(attachment::detectors());
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
        Detectors {
            detectors,
            keywords: KeywordGate::new(words),
            keyword_owners,
            ungated,
        }
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

/// Remove PII, attachment and generic-secret findings in
/// `findings[first..]` (one segment, no terms yet) whose span lies within
/// another finding's span: a specific secret rule beats the generic
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
        if index <= first {
            return true;
        }
        let nested = reach.is_some_and(|r| f.span.end <= r);
        if !nested {
            reach = Some(f.span.end);
        }
        let droppable = match f.category {
            Category::Pii | Category::Attachment => true,
            Category::Secret => f.kind == "generic_secret",
            Category::Term => false,
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
    // Letters the words start with, by `byte & 31` (either case): one test
    // rules out most word starts before any comparison.
    // An empty word would match at every word start.
    let firsts = words.iter().fold(0u32, |set, w| {
        set | w.as_bytes().first().map_or(u32::MAX, |&b| 1 << (b & 31))
    });
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

    /// One sample per declared kind; `scan` must report that kind on it.
    const SAMPLES: &[(&str, &str)] = &[
        ("email", "mail a@example.com"),
        ("credit_card", "card 4111 1111 1111 1111"),
        ("us_ssn", "ssn 219-09-9999"),
        ("phone", "call (415) 555-0132"),
        ("iban", "iban DE89 3704 0044 0532 0130 00"),
        ("ip_address", "server 203.0.113.77"),
        ("mac_address", "mac 0c:80:33:28:5d:47"),
        ("uk_nino", "NINO AB123456C"),
        ("date_of_birth", "DOB: 1985-03-14"),
        ("passport_number", "passport no. 912803456"),
        ("drivers_license", "driver's license D1234567"),
        ("us_bank_routing", "routing number 121000358"),
        ("crypto_wallet", "btc 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"),
        ("aws_access_key", "AKIAQ3EGRTYU6WNOP4XZ"),
        ("github_token", "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5"),
        ("openai_key", "sk-proj-Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7Tv9Wx1Yz3"),
        ("anthropic_key", "sk-ant-api03-Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7Tv9Wx1Yz3"),
        ("private_key", "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----"),
        ("aws_secret_key", "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKQ"),
        ("gcp_service_account", r#""private_key_id": "0123456789abcdef0123456789abcdef01234567""#),
        ("gcp_api_key", "AIzaSyD3Ab5De7Fg9Hj1Kl3Mn5Pq7Rs9Tv1Wx3Y"),
        ("azure_storage_key", "AccountKey=aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9haB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h=="),
        ("azure_client_secret", "secret: 'abc8Q~aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3b'"),
        ("gitlab_token", "glpat-aB3dE5fG7hJ9kL1mN3pQ"),
        ("slack_token", "xoxb-123456789012-1234567890123-aB3dE5fG7hJ9kL1mN3pQ5rS7"),
        ("slack_webhook", "https://hooks.slack.com/services/T01ABCDEF12/B01ABCDEF34/aB3dE5fG7hJ9kL1mN3pQ5rS7"),
        ("stripe_key", "sk_live_51Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7"),
        ("twilio_key", "SK0123456789abcdef0123456789abcdef"),
        ("sendgrid_key", "SG.aB3dE5fG7hJ9kL1mN3pQ5r.aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h"),
        ("npm_token", "npm_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5"),
        ("pypi_token", "pypi-AgEIcHlwaS5vcmcCJGI4YmNhMDA5LTg1NDMtNDQ3Ny1hZDZiLTQwNGJmN2Q4YmYzYwACKlsz"),
        ("huggingface_token", "hf_aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH"),
        ("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"),
        ("database_url", "postgres://app:s3cr3t-P4ss@db.internal:5432/app"),
        ("generic_secret", "DB_PASSWORD=Zx8#kQ2@vL9p"),
        ("datadog_key", "DD_API_KEY=0123456789abcdef0123456789abcdef"),
        ("shopify_token", "shpat_0123456789abcdef0123456789abcdef"),
        ("discord_token", "discord bot MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs"),
        ("telegram_bot_token", "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"),
        ("mailgun_key", "key-0123456789abcdef0123456789abcdef"),
        ("square_token", "sq0csp-aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h"),
        ("digitalocean_token", "dop_v1_a1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4"),
        ("linear_key", "lin_api_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7f"),
        ("notion_token", "secret_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h"),
        ("atlassian_token", "jira_token: aB3dE5fG7hJ9kL1mN3pQ5rS7"),
        ("heroku_key", "HRKU-AAaB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9haB3dE5fG7hJ9kL1"),
        ("postman_key", "PMAK-0123456789abcdef01234567-0123456789abcdef0123456789abcdef01"),
        ("grafana_token", "glsa_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ_0a1b2c3d"),
        ("doppler_token", "dp.pt.aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h"),
        ("databricks_token", "dapi0123456789abcdef0123456789abcdef"),
        ("dynatrace_token", "dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX.aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9haB3dE5fG7hJ9kL1mN3pQ5"),
        ("newrelic_key", "NRAK-AB3DE5FG7HJ9KL1MN3PQ5RS7TV9"),
        ("sentry_token", "sntryu_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
        ("pulumi_token", "pul-0123456789abcdef0123456789abcdef01234567"),
        ("age_secret_key", "AGE-SECRET-KEY-1QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7LQPZRY9X8GF2TVDW0S3JN54KHCE"),
        ("vault_token", "hvs.CAESIaB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9haB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9haB3dE5fG7hJ9kL1mN3pQ"),
        ("terraform_token", "abcdefgh123456.atlasv1.aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9haB3dE5fG7hJ9kL1mN3pQ5r"),
        ("alibaba_key", "LTAI5tAb3De5Fg7Hj9Kl1Mn3"),
        ("flyio_token", "fo1_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h"),
        ("planetscale_token", "pscale_tkn_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5"),
        ("onepassword_token", "A3-ABCDEF-ABCDEFGHIJK-ABCDE-ABCDE-ABCDE"),
        (ATTACHMENT_KIND, "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"),
    ];

    #[test]
    fn every_kind_is_a_declared_type_name() {
        let d = Detectors::new();
        let mut want: Vec<&str> = PII_KINDS.iter().chain(SECRET_KINDS).copied().collect();
        want.push(ATTACHMENT_KIND);
        want.sort_unstable();
        let mut sampled: Vec<&str> = SAMPLES.iter().map(|s| s.0).collect();
        sampled.sort_unstable();
        assert_eq!(sampled, want, "one sample per declared kind");
        for (kind, text) in SAMPLES {
            let found = d.scan(None, &[text]);
            assert!(found.iter().any(|f| f.kind == *kind), "{kind}: {found:?}");
            for f in &found {
                assert!((0.0..=1.0).contains(&f.confidence), "{f:?}");
                let declared = match f.category {
                    Category::Pii => PII_KINDS.contains(&f.kind),
                    Category::Secret => SECRET_KINDS.contains(&f.kind),
                    Category::Attachment => f.kind == ATTACHMENT_KIND,
                    Category::Term => f.kind == TERM_KIND,
                };
                assert!(declared, "{f:?}");
            }
        }
        assert!(PII_KINDS.len() <= 64 && SECRET_KINDS.len() <= 64);
        assert!(SECRET_KINDS.len() >= 40);
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
    fn keyword_gate_finds_what_an_overlapping_automaton_finds() {
        let d = Detectors::new();
        let words = d.keywords.words();
        assert!(words
            .iter()
            .all(|w| w.len() >= 2 && *w == w.to_ascii_lowercase()));
        let reference = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(words)
            .expect("keywords build an automaton");
        let mut texts: Vec<String> = SAMPLES.iter().map(|s| s.1.to_string()).collect();
        let all = texts.join(" \n");
        texts.push(all.to_ascii_uppercase());
        texts.push(all.to_ascii_lowercase());
        texts.push(all);
        for text in &texts {
            let want: Vec<(usize, usize)> = reference
                .find_overlapping_iter(text)
                .map(|m| (m.pattern().as_usize(), m.end()))
                .collect();
            let mut got = Vec::new();
            d.keywords.find(text.as_bytes(), &mut got);
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn clean_text_has_no_findings() {
        let d = Detectors::new();
        let text = "Upgrade regex to 1.10.2 and tokio 1.38.0; the build took 12.5s \
                    on 2024-03-14 at 10:42. See issue #4521, PR 1234567 and commit \
                    9f8e7d6c5b4a. Port 8080, v10.0.0.1, version 1.2.3.4, ratio 3/4, \
                    version 10.123.45.6789, id 12345678901234567890.";
        assert_eq!(d.scan(None, &[text]), vec![]);
    }

    #[test]
    fn detectors_and_dictionary_can_be_shared_across_tasks() {
        fn shareable<T: Send + Sync + 'static>(_: &T) {}
        shareable(&Detectors::default());
        shareable(&Dictionary::new(["x"]).unwrap());
        assert!(format!("{:?}", Detectors::new()).contains("detectors: "));
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
