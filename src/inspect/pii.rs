//! PII detectors: email (plain and spelled out), payment card, US SSN
//! and IBAN (phone numbers are `phone`'s).
//!
//! Each regex only proposes candidates; the code after it decides, with the
//! type's own checks (Luhn, issuer prefix, SSN allocation rules, mod-97),
//! whether a candidate is reported and how confidently. All patterns use
//! ASCII word boundaries (`(?-u:\b)`) so the regex crate can stay on its
//! lazy DFA even on non-ASCII text.

use std::ops::Range;

use regex::Regex;

use super::{
    compile_builtin, context_near, find_in, finding, is_word_byte, joined_to_number, Category, Detector, Finding,
    Prescan,
};

/// The PII detectors, in no particular order (`scan` sorts the output).
pub(super) fn detectors() -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(Email::new()),
        Box::new(ObfuscatedEmail::new()),
        Box::new(CreditCard::new()),
        Box::new(UsSsn::new()),
        Box::new(Iban::new()),
    ]
}

fn pii(kind: &'static str, segment: usize, span: Range<usize>, conf: f32, v: &'static str) -> Finding {
    finding(Category::Pii, kind, segment, span, conf, v)
}

// ---------------------------------------------------------------- email

/// Local part, '@', dot-separated labels, then a punycode or alphabetic TLD
/// (punycode first: leftmost-first would otherwise stop at its "xn").
const EMAIL: &str = r"(?-u:\b)[A-Za-z0-9._%+'\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.(?:xn--[A-Za-z0-9\-]{1,59}|[A-Za-z]{2,24})(?-u:\b)";
const EMAIL_CONTEXT: &[&str] = &["email", "e-mail", "mail", "contact"];
/// Domains reserved for documentation (RFC 2606, RFC 6761): an address
/// there is an example by definition. Second-level names match with their
/// subdomains, top-level ones as the last label.
const EXAMPLE_DOMAINS: &[&str] = &["example.com", "example.org", "example.net"];
const EXAMPLE_TLDS: &[&str] = &["example", "test", "invalid", "localhost"];
/// `icon@2x.png` style asset names look like addresses; these TLDs are
/// file extensions in practice.
const FILE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp"];

struct Email {
    re: Regex,
}

impl Email {
    fn new() -> Self {
        Email { re: compile_builtin(EMAIL) }
    }
}

impl Detector for Email {
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        if !pre.has_at {
            return;
        }
        for m in self.re.find_iter(text) {
            let addr = m.as_str();
            let tld = addr.rsplit('.').next().unwrap_or("");
            if FILE_EXTENSIONS.iter().any(|e| tld.eq_ignore_ascii_case(e)) || example_domain(addr) {
                continue;
            }
            let span = m.range();
            let conf = if context_near(text, &span, EMAIL_CONTEXT) { 0.9 } else { 0.85 };
            out.push(pii("email", segment, span, conf, "pattern"));
        }
    }
}

/// Whether the address's domain is reserved for documentation.
fn example_domain(addr: &str) -> bool {
    let Some((_, domain)) = addr.rsplit_once('@') else { return false };
    let domain = domain.to_ascii_lowercase();
    let tld = domain.rsplit('.').next().unwrap_or("");
    EXAMPLE_TLDS.contains(&tld)
        || EXAMPLE_DOMAINS.iter().any(|d| domain == *d || domain.strip_suffix(d).is_some_and(|s| s.ends_with('.')))
}

// ---------------------------------------------------- obfuscated email

/// "john dot doe at example dot com", "john[at]example[.]com",
/// "jane (at) corp (dot) io": each separator either bracketed or a
/// spaced-out word. Plain '.' is allowed between labels too.
const OBFUSCATED_EMAIL: &str = concat!(
    r"(?i)(?-u:\b)[a-z0-9._%+\-]+",
    r"(?:\s*(?:\[dot\]|\(dot\)|\{dot\}|\[\.\])\s*[a-z0-9_%+\-]+|\s+dot\s+[a-z0-9_%+\-]+)*",
    r"(?:\s*(?:\[at\]|\(at\)|\{at\}|<at>)\s*|\s+at\s+)",
    r"[a-z0-9\-]+",
    r"(?:(?:\s*(?:\[dot\]|\(dot\)|\{dot\}|\[\.\])\s*|\s+dot\s+|\.)[a-z0-9\-]+)+(?-u:\b)",
);
/// Spelled-out separators can only be trusted with a real top-level
/// domain at the end: "look at the car dot" is prose.
const COMMON_TLDS: &[&str] = &[
    "com", "org", "net", "edu", "gov", "mil", "int", "io", "co", "ai", "dev", "app", "info", "biz", "me", "tech",
    "cloud", "online", "email", "xyz",
];

struct ObfuscatedEmail {
    re: Regex,
}

impl ObfuscatedEmail {
    fn new() -> Self {
        ObfuscatedEmail { re: compile_builtin(OBFUSCATED_EMAIL) }
    }
}

impl Detector for ObfuscatedEmail {
    fn keywords(&self) -> &[&'static str] {
        &["[at]", "(at)", "{at}", "<at>", " dot ", "[dot]", "(dot)", "{dot}", "[.]"]
    }

    fn find(&self, text: &str, _: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        for m in self.re.find_iter(text) {
            let s = m.as_str();
            let lower = s.to_ascii_lowercase();
            // A plain address is the Email detector's; this one only takes
            // candidates with at least one disguised separator.
            let bracketed =
                ["[at]", "(at)", "{at}", "<at>", "[dot]", "(dot)", "{dot}", "[.]"].iter().any(|w| lower.contains(w));
            let spelled = lower.split_whitespace().any(|w| w == "at" || w == "dot");
            if !bracketed && !spelled {
                continue;
            }
            let tld = lower.rsplit(|c: char| !c.is_ascii_alphanumeric() && c != '-').next().unwrap_or("");
            let tld_ok = if bracketed {
                (2..=24).contains(&tld.len()) && tld.bytes().all(|b| b.is_ascii_alphabetic())
            } else {
                COMMON_TLDS.contains(&tld) || (tld.len() == 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()))
            };
            // Spelled-out forms need "dot" in the domain, or "look at x.com"
            // would read as an address.
            let domain_dotted = lower.rsplit_once(" at ").is_none_or(|(_, d)| d.contains("dot") || d.contains("[.]"));
            if !tld_ok || (!bracketed && !domain_dotted) {
                continue;
            }
            let span = m.range();
            let conf = if context_near(text, &span, EMAIL_CONTEXT) { 0.85 } else { 0.75 };
            out.push(pii("email", segment, span, conf, "deobfuscated"));
        }
    }
}

// ---------------------------------------------------------- credit card

/// 13-19 contiguous digits, 4-4-4-(1..4)(-3), or Amex/Diners 4-6-(4|5).
/// Separators are space, dash or dot; the code requires one kind throughout.
const CARD: &str = r"(?-u:\b)(?:[0-9]{13,19}|[0-9]{4}[ .\-][0-9]{4}[ .\-][0-9]{4}[ .\-][0-9]{1,4}(?:[ .\-][0-9]{3})?|[0-9]{4}[ .\-][0-9]{6}[ .\-][0-9]{4,5})(?-u:\b)";
const CARD_CONTEXT: &[&str] = &["card", "credit", "debit", "visa", "mastercard", "amex", "payment"];

struct CreditCard {
    re: Regex,
}

impl CreditCard {
    fn new() -> Self {
        CreditCard { re: compile_builtin(CARD) }
    }
}

impl Detector for CreditCard {
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let candidates = pre.runs(13).flat_map(|run| find_in(&self.re, text, run));
        for span in candidates {
            let Some(digits) = card_digits(text[span.clone()].as_bytes()) else {
                continue;
            };
            let digits = digits.as_slice();
            if joined_to_number(text, &span) || !luhn_valid(digits) {
                continue;
            }
            let context = context_near(text, &span, CARD_CONTEXT);
            // Maestro's ranges overlap too many other numbers to accept
            // without a card word nearby.
            let conf = match (issuer_accepts(digits), context && maestro(digits)) {
                (true, _) if context => 0.95,
                (true, _) => 0.9,
                (false, true) => 0.85,
                (false, false) => continue,
            };
            out.push(pii("credit_card", segment, span, conf, "luhn"));
        }
    }
}

/// Up to 19 decimal digit values, kept on the stack.
struct Digits {
    buf: [u8; 19],
    len: usize,
}

impl Digits {
    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Digit values of a card candidate; `None` when it mixes separators or
/// the digit count is outside 13..=19.
fn card_digits(candidate: &[u8]) -> Option<Digits> {
    let mut digits = Digits { buf: [0; 19], len: 0 };
    let mut separator = None;
    for &b in candidate {
        if b.is_ascii_digit() {
            if digits.len == digits.buf.len() {
                return None;
            }
            digits.buf[digits.len] = b - b'0';
            digits.len += 1;
        } else if *separator.get_or_insert(b) != b {
            return None;
        }
    }
    (13..=19).contains(&digits.len).then_some(digits)
}

/// Leading digits as a number (`d` holds digit values, `k <= d.len()`).
fn prefix(d: &[u8], k: usize) -> u32 {
    d[..k].iter().fold(0, |acc, &x| acc * 10 + u32::from(x))
}

/// Whether the number starts like a card of a major network, with a length
/// that network issues.
fn issuer_accepts(d: &[u8]) -> bool {
    let n = d.len();
    match d[0] {
        4 => matches!(n, 13 | 16 | 19),
        5 => (51..=55).contains(&prefix(d, 2)) && n == 16,
        2 => {
            let mastercard = (2221..=2720).contains(&prefix(d, 4)) && n == 16;
            // Old 15-digit JCB ranges.
            mastercard || (prefix(d, 4) == 2131 && n == 15)
        }
        1 => prefix(d, 4) == 1800 && n == 15,
        3 => {
            let amex = matches!(prefix(d, 2), 34 | 37) && n == 15;
            let jcb = (3528..=3589).contains(&prefix(d, 4)) && n >= 16;
            let diners = matches!(prefix(d, 2), 36 | 38) || (300..=305).contains(&prefix(d, 3));
            amex || jcb || (diners && n >= 14)
        }
        6 => {
            let discover = prefix(d, 4) == 6011 || prefix(d, 2) == 65 || (644..=649).contains(&prefix(d, 3));
            discover && n >= 16
        }
        _ => false,
    }
}

/// Maestro: 50, 56-58, 6x prefixes, 13-19 digits.
fn maestro(d: &[u8]) -> bool {
    let p = prefix(d, 2);
    (p == 50 || (56..=58).contains(&p) || (60..=69).contains(&p)) && d.len() >= 13
}

fn luhn_valid(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

// --------------------------------------------------------------- US SSN

/// AAA-GG-SSSS; also spaced or bare, which the code only accepts near a
/// context word because nine bare digits are too common otherwise.
/// The shape SSN candidates must have; matched by hand (`ssn_shaped`),
/// since a regex search costs more to start than this takes to run on a
/// numeric run. The tests check the hand matcher against it.
#[cfg(test)]
const SSN: &str = r"(?-u:\b)[0-9]{3}[ \-]?[0-9]{2}[ \-]?[0-9]{4}(?-u:\b)";
const SSN_CONTEXT: &[&str] = &["ssn", "social security", "soc sec", "ss#", "ss #"];

struct UsSsn;

impl UsSsn {
    fn new() -> Self {
        UsSsn
    }
}

impl Detector for UsSsn {
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let candidates = pre.runs(9).flat_map(|run| ssn_shaped(text.as_bytes(), run));
        for span in candidates {
            let Some((dashed, area, group, serial)) = ssn_parts(text[span.clone()].as_bytes()) else {
                continue;
            };
            if !ssn_allocatable(area, group, serial) || joined_to_number(text, &span) {
                continue;
            }
            let context = context_near(text, &span, SSN_CONTEXT);
            let conf = match (dashed, context) {
                (true, true) => 0.95,
                (true, false) => 0.85,
                (false, true) => 0.9,
                (false, false) => continue,
            };
            out.push(pii("us_ssn", segment, span, conf, "ssn_rules"));
        }
    }
}

/// Matches of [`SSN`] within `run`, leftmost first and not overlapping,
/// as the regex finds them. Digits and separators are distinct, so at
/// each start the pattern matches in at most one way.
fn ssn_shaped(bytes: &[u8], run: Range<usize>) -> Vec<Range<usize>> {
    let digits = |at: usize, n: usize| bytes.get(at..at + n).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let separator = |at: usize| usize::from(matches!(bytes.get(at), Some(b' ' | b'-')));
    let mut out = Vec::new();
    let mut start = run.start;
    while start < run.end {
        let word_start = start == 0 || !is_word_byte(bytes[start - 1]);
        if word_start && digits(start, 3) {
            let group = start + 3 + separator(start + 3);
            if digits(group, 2) {
                let serial = group + 2 + separator(group + 2);
                let end = serial + 4;
                if digits(serial, 4) && bytes.get(end).is_none_or(|&b| !is_word_byte(b)) {
                    out.push(start..end);
                    start = end;
                    continue;
                }
            }
        }
        start += 1;
    }
    out
}

/// (dashed, area, group, serial) of a candidate whose two separators agree:
/// both dashes, both spaces, or none.
fn ssn_parts(candidate: &[u8]) -> Option<(bool, u32, u32, u32)> {
    let mut value = 0u32;
    let mut separators = [0u8; 2];
    let mut n_sep = 0;
    for &b in candidate {
        if b.is_ascii_digit() {
            value = value * 10 + u32::from(b - b'0');
        } else {
            *separators.get_mut(n_sep)? = b;
            n_sep += 1;
        }
    }
    let dashed = match (n_sep, separators) {
        (0, _) => false,
        (2, [b'-', b'-']) => true,
        (2, [b' ', b' ']) => false,
        _ => return None,
    };
    Some((dashed, value / 1_000_000, value / 10_000 % 100, value % 10_000))
}

/// SSA allocation rules plus the two numbers printed in every example.
fn ssn_allocatable(area: u32, group: u32, serial: u32) -> bool {
    let famous_fake = matches!((area, group, serial), (78, 5, 1120) | (123, 45, 6789));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 && !famous_fake
}

// ----------------------------------------------------------------- IBAN

/// Country, check digits, then the BBAN compact or in groups of four.
const IBAN: &str = r"(?-u:\b)[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)(?-u:\b)";
/// Longest IBAN (34 characters) plus its spaces, with room to spare.
const IBAN_WINDOW: usize = 48;
const IBAN_CONTEXT: &[&str] = &["iban", "account", "bank", "konto", "transfer", "wire"];

struct Iban {
    re: Regex,
}

impl Iban {
    fn new() -> Self {
        Iban { re: compile_builtin(IBAN) }
    }
}

impl Detector for Iban {
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        let mut covered = 0;
        for &start in &pre.iban_starts {
            // A group inside an accepted IBAN ("... AB12 ...") is no new one.
            if start < covered {
                continue;
            }
            let mut window_end = (start + IBAN_WINDOW).min(text.len());
            while !text.is_char_boundary(window_end) {
                window_end -= 1;
            }
            let Some(m) = find_in(&self.re, text, start..window_end).next() else {
                continue;
            };
            // The window may cut a longer token short; the real text must
            // not go on with a word byte.
            if m.start != start || bytes.get(m.end).is_some_and(|&b| is_word_byte(b)) {
                continue;
            }
            let s = &bytes[m.clone()];
            let Some(expected) = iban_length([s[0], s[1]]) else {
                continue;
            };
            // Collect exactly `expected` characters. A spaced candidate may
            // run on into a following word ("... 7034 DATA"); cut it at the
            // group boundary where the country's length ends.
            let mut compact = [0u8; 34];
            let mut n = 0;
            let mut end = 0;
            for (i, &b) in s.iter().enumerate() {
                if b == b' ' {
                    continue;
                }
                if n == expected {
                    break;
                }
                compact[n] = b;
                n += 1;
                end = i + 1;
            }
            if n != expected || (end < s.len() && s[end] != b' ') {
                continue;
            }
            if !mod97_valid(&compact[..n]) {
                continue;
            }
            let span = m.start..m.start + end;
            covered = span.end;
            let conf = if context_near(text, &span, IBAN_CONTEXT) { 0.95 } else { 0.9 };
            out.push(pii("iban", segment, span, conf, "mod97"));
        }
    }
}

/// ISO 13616 length for countries whose IBANs we recognise.
fn iban_length(country: [u8; 2]) -> Option<usize> {
    let n = match &country {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"XK" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" => 22,
        b"AE" | b"GI" | b"IL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"PT" => 25,
        b"IS" | b"TR" => 26,
        b"FR" | b"GR" | b"IT" | b"MC" | b"SM" => 27,
        b"AL" | b"AZ" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"PL" => 28,
        b"BR" | b"EG" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" => 30,
        b"MT" => 31,
        _ => return None,
    };
    Some(n)
}

/// ISO 7064 mod 97-10 over an uppercase alphanumeric IBAN: move the first
/// four characters to the end, read letters as 10..=35, remainder must be 1.
fn mod97_valid(iban: &[u8]) -> bool {
    let (head, tail) = iban.split_at(4);
    let rem = tail.iter().chain(head).fold(0u32, |r, &b| match b {
        b'0'..=b'9' => (r * 10 + u32::from(b - b'0')) % 97,
        _ => (r * 100 + u32::from(b - b'A' + 10)) % 97,
    });
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kinds and exact spans found by one detector.
    fn hits(d: &dyn Detector, text: &str) -> Vec<(Range<usize>, f32, &'static str)> {
        let mut out = Vec::new();
        d.find(text, &Prescan::of(text), 0, &mut out);
        out.into_iter().map(|f| (f.span, f.confidence, f.validator)).collect()
    }

    fn spans(d: &dyn Detector, text: &str) -> Vec<Range<usize>> {
        hits(d, text).into_iter().map(|h| h.0).collect()
    }

    #[test]
    fn email_positives() {
        let d = Email::new();
        assert_eq!(spans(&d, "info@presidio.site"), vec![0..18]);
        assert_eq!(
            spans(&d, "try one of these emails: info@presidio.site or anotherinfo@presidio.site"),
            vec![25..43, 47..72]
        );
        assert_eq!(spans(&d, "my email is user@xn--80ak6aa92e.com today"), vec![12..35]);
        assert_eq!(spans(&d, "a@xn--d1acufc.xn--p1ai"), vec![0..22]);
        assert_eq!(spans(&d, "<jane.o'neil+tag@mail.example.co.uk>"), vec![1..35]);
        let h = hits(&d, "email: a.b@acme-mail.com");
        assert_eq!(h, vec![(7..24, 0.9, "pattern")]);
        assert_eq!(hits(&d, "ping a.b@acme-mail.com")[0].1, 0.85);
    }

    #[test]
    fn email_negatives() {
        let d = Email::new();
        assert!(spans(&d, "my email is info@presidio.").is_empty());
        assert!(spans(&d, "this is not an email: hello-world here").is_empty());
        assert!(spans(&d, "use @decorator and user@localhost").is_empty());
        assert!(spans(&d, "assets/icon@2x.png and logo@3x.PNG").is_empty());
        assert!(spans(&d, "npm i lodash@4.17.21").is_empty());
    }

    #[test]
    fn documentation_domains_are_not_findings() {
        let d = Email::new();
        for text in [
            "email: a.b@example.com",
            "ann@EXAMPLE.org",
            "ops@mail.example.net",
            "dev@corp.example",
            "ci@runner.test",
            "x@foo.invalid",
            "me@box.localhost",
        ] {
            assert!(spans(&d, text).is_empty(), "{text}");
        }
        for text in ["a@example.co.uk", "a@myexample.com", "a@example.com.au", "a@testing.io"] {
            assert_eq!(spans(&d, text).len(), 1, "{text}");
        }
    }

    #[test]
    fn obfuscated_emails() {
        let d = ObfuscatedEmail::new();
        for (text, want) in [
            ("write john dot doe at example dot com today", "john dot doe at example dot com"),
            ("john[at]example[.]com", "john[at]example[.]com"),
            ("Jane (at) corp (dot) io", "Jane (at) corp (dot) io"),
            ("mail: ops[at]acme.co.uk", "ops[at]acme.co.uk"),
        ] {
            let got = spans(&d, text);
            assert_eq!(got.len(), 1, "{text}");
            assert_eq!(&text[got[0].clone()], want);
        }
        for text in [
            "look at the car dot",
            "meet at example.com",
            "plain a@example.com is not this detector's",
            "we are at home dot matrix",
        ] {
            assert!(spans(&d, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn card_positives_with_and_without_separators() {
        let d = CreditCard::new();
        let text = "4012888888881881 4012-8888-8888-1881 4012 8888 8888 1881";
        assert_eq!(spans(&d, text), vec![0..16, 17..36, 37..56]);
        for number in [
            "371449635398431",
            "3782 822463 10005",
            "5555555555554444",
            "2221000000000009",
            "30569309025904",
            "6011000400000000",
            "3528000700000000",
            "4222222222222",
        ] {
            assert_eq!(spans(&d, number), vec![0..number.len()], "{number}");
        }
        assert_eq!(hits(&d, "my credit card: 4111 1111 1111 1111."), vec![(16..35, 0.95, "luhn")]);
        assert_eq!(hits(&d, "ref 4111111111111111")[0].1, 0.9);
    }

    #[test]
    fn card_negatives() {
        let d = CreditCard::new();
        // Luhn fails.
        assert!(spans(&d, "my credit card number is 4012-8888-8888-1882").is_empty());
        assert!(spans(&d, "36168002586008").is_empty());
        // Luhn passes but no major-network prefix (UATP, Maestro, Dankort).
        assert!(spans(&d, "122000000000003 6759649826438453 5019717010103742").is_empty());
        // Maestro is accepted next to a card word.
        assert_eq!(hits(&d, "maestro card 6759649826438453"), vec![(13..29, 0.85, "luhn")]);
        // Legacy 15-digit JCB.
        assert_eq!(spans(&d, "213176828496175 180016070420458"), vec![0..15, 16..31]);
        // Dotted card numbers are one obfuscation.
        assert_eq!(spans(&d, "4111.1111.1111.1111"), vec![0..19]);
        // Amex prefix at the wrong length.
        assert!(spans(&d, "3704004405320130").is_empty());
        // Mixed separators, and digits glued to a longer number.
        assert!(spans(&d, "4111-1111 1111-1111").is_empty());
        assert!(spans(&d, "1.4111111111111111 and 4111111111111111.2").is_empty());
        assert!(spans(&d, "order 41111111111111119999").is_empty());
    }

    #[test]
    fn ssn_dashed_needs_no_context() {
        let d = UsSsn::new();
        assert_eq!(hits(&d, "id 219-09-9999 on file"), vec![(3..14, 0.85, "ssn_rules")]);
        assert_eq!(hits(&d, "SSN: 078-05-1123"), vec![(5..16, 0.95, "ssn_rules")]);
    }

    #[test]
    fn ssn_spaced_or_bare_needs_context() {
        let d = UsSsn::new();
        assert!(spans(&d, "abc 078 05 1123 abc").is_empty());
        assert!(spans(&d, "078051123").is_empty());
        assert_eq!(hits(&d, "ssn 078 05 1123 abc"), vec![(4..15, 0.9, "ssn_rules")]);
        assert_eq!(spans(&d, "social security number 078051123"), vec![23..32]);
    }

    #[test]
    fn ssn_structural_rejects() {
        let d = UsSsn::new();
        for bad in [
            "ssn 000-12-3456",
            "ssn 666-12-3456",
            "ssn 900-12-3456",
            "ssn 999-12-3456",
            "ssn 123-00-4567",
            "ssn 123-45-0000",
            "ssn 078-05-1120",
            "ssn 123-45-6789",
            "ssn 078-051121",
            "ssn 078 05-1123",
            "ssn 0780511201",
            "v1.219-09-9999",
        ] {
            assert!(spans(&d, bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn iban_positives() {
        let d = Iban::new();
        for iban in [
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "GB82 WEST 1234 5698 7654 32",
            "FR14 2004 1010 0505 0001 3M02 606",
            "NL91ABNA0417164300",
            "BE68 5390 0754 7034",
            "CH9300762011623852957",
            "PL61 1090 1014 0000 0712 1981 2874",
            "ES9121000418450200051332",
            "IT60X0542811101000000123456",
            "AT611904300234573201",
            "SE4550000000058398257466",
            "IE29AIBK93115212345678",
        ] {
            assert_eq!(hits(&d, iban), vec![(0..iban.len(), 0.9, "mod97")], "{iban}");
        }
        assert_eq!(hits(&d, "IBAN: DE89370400440532013000")[0].1, 0.95);
    }

    #[test]
    fn iban_spaced_run_on_is_cut_at_country_length() {
        let d = Iban::new();
        assert_eq!(spans(&d, "BE68 5390 0754 7034 DATA follows"), vec![0..19]);
    }

    #[test]
    fn iban_negatives() {
        let d = Iban::new();
        for text in [
            "DE88370400440532013000",
            "DE89 3704 0044 0532 0130 01",
            "DE8937040044053201300",
            "DE893704004405320130001",
            "US12345678901234567890",
            "XX89370400440532013000",
            "de89370400440532013000",
            "DE89 3704 0044 0532 0130 00XYZ",
        ] {
            assert!(spans(&d, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn luhn_and_mod97_helpers() {
        assert!(luhn_valid(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
        assert!(!luhn_valid(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]));
        assert!(mod97_valid(b"GB82WEST12345698765432"));
        assert!(!mod97_valid(b"GB82WEST12345698765433"));
    }

    #[test]
    fn ssn_shapes_match_the_regex() {
        let re = compile_builtin(SSN);
        let pieces = ["219", "09", "9999", "-", "-", " ", "x", "é", "1", "(", "+"];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut matched = 0;
        for _ in 0..3000 {
            let mut next = || {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (x >> 33) as usize
            };
            let mut t = String::new();
            for _ in 0..next() % 16 {
                t.push_str(pieces[next() % pieces.len()]);
            }
            let pre = Prescan::of(&t);
            let want: Vec<Range<usize>> = pre.runs(9).flat_map(|r| find_in(&re, &t, r)).collect();
            let got: Vec<Range<usize>> = pre.runs(9).flat_map(|r| ssn_shaped(t.as_bytes(), r)).collect();
            matched += want.len();
            assert_eq!(got, want, "{t:?}");
        }
        assert!(matched > 30, "{matched}");
    }
}
