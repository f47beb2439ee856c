//! Identity-document and banking detectors: UK National Insurance number,
//! date of birth, passport and driver's licence numbers, US bank routing
//! number.
//!
//! Dates, passport and licence numbers have no checksum and look like any
//! other date or ID, so they are only reported next to a context word
//! ("born", "passport", "driver's license"); the context word is the
//! detector's keyword, so text without one costs nothing here.

use std::ops::Range;

use regex::Regex;

use super::{
    compile_builtin, context_near, find_in, finding, is_word_byte, joined_to_number, Category, Detector, Finding,
    Prescan,
};

pub(super) fn detectors() -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(UkNino::new()),
        Box::new(DateOfBirth::new()),
        Box::new(ContextId::passport()),
        Box::new(ContextId::drivers_license()),
        Box::new(Routing::new()),
    ]
}

fn pii(kind: &'static str, segment: usize, span: Range<usize>, conf: f32, v: &'static str) -> Finding {
    finding(Category::Pii, kind, segment, span, conf, v)
}

/// For each context-word match of `re` in `text`, the `after` bytes that
/// follow it (cut back to a char boundary).
fn keyword_windows<'a>(re: &'a Regex, text: &'a str, after: usize) -> impl Iterator<Item = Range<usize>> + 'a {
    re.find_iter(text).map(move |m| {
        let mut end = (m.end() + after).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        m.end()..end
    })
}

// ----------------------------------------------------------------- NINO

/// Two prefix letters (HMRC never issues D, F, I, Q, U, V, nor O second),
/// six digits optionally in pairs, suffix A-D.
const NINO: &str = r"(?-u:\b)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D](?-u:\b)";
/// Prefixes HMRC does not allocate.
const NINO_BAD_PREFIXES: &[&[u8]] = &[b"BG", b"GB", b"KN", b"NK", b"NT", b"TN", b"ZZ"];
const NINO_CONTEXT: &[&str] = &["nino", "national insurance", "ni number", "ni no", "nin"];

struct UkNino {
    re: Regex,
}

impl UkNino {
    fn new() -> Self {
        UkNino { re: compile_builtin(NINO) }
    }
}

impl Detector for UkNino {
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        for &start in &pre.nino_starts {
            let mut end = (start + 14).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let Some(span) = find_in(&self.re, text, start..end).next() else {
                continue;
            };
            let s = &text.as_bytes()[span.clone()];
            if span.start != start || NINO_BAD_PREFIXES.contains(&&s[..2]) {
                continue;
            }
            // Spaced forms must be spaced consistently: "AB 12 34 56 C".
            let spaces = s.iter().filter(|&&b| b == b' ').count();
            if spaces != 0 && spaces != 4 {
                continue;
            }
            let conf = if context_near(text, &span, NINO_CONTEXT) { 0.95 } else { 0.8 };
            out.push(pii("uk_nino", segment, span, conf, "nino_rules"));
        }
    }
}

// ---------------------------------------------------------------- DOB

const DOB_KEYWORDS: &[&str] = &["dob", "d.o.b", "born", "birth", "birthday", "geboren", "né le", "nee le"];
const DOB_CONTEXT: &str = r"(?i)(?-u:\b)(?:dob|d\.o\.b\.?|born(?: on| in)?|date of birth|birth ?date|birthday|geboren(?: am)?|n[ée]e? le)(?-u:\b)";
const MONTHS: &str = "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?";
/// How far after the context word the date may start.
const DOB_WINDOW: usize = 40;

struct DateOfBirth {
    context: Regex,
    date: Regex,
}

impl DateOfBirth {
    fn new() -> Self {
        let date = format!(
            concat!(
                r"(?i)(?-u:\b)(?:",
                r"(?P<y1>[0-9]{{4}})[\-/.](?P<m1>[0-9]{{1,2}})[\-/.](?P<d1>[0-9]{{1,2}})",
                r"|(?P<a2>[0-9]{{1,2}})[\-/.](?P<b2>[0-9]{{1,2}})[\-/.](?P<y2>[0-9]{{4}}|[0-9]{{2}})",
                r"|(?P<d3>[0-9]{{1,2}})(?:st|nd|rd|th)?\.? (?:of )?(?P<m3>{months})\.?,? (?P<y3>[0-9]{{4}})",
                r"|(?P<m4>{months})\.? (?P<d4>[0-9]{{1,2}})(?:st|nd|rd|th)?,? (?P<y4>[0-9]{{4}})",
                r")(?-u:\b)"
            ),
            months = MONTHS
        );
        DateOfBirth { context: compile_builtin(DOB_CONTEXT), date: compile_builtin(&date) }
    }
}

impl Detector for DateOfBirth {
    fn keywords(&self) -> &[&'static str] {
        DOB_KEYWORDS
    }

    fn find(&self, text: &str, _: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let mut covered = 0;
        for window in keyword_windows(&self.context, text, DOB_WINDOW) {
            if window.start < covered {
                continue;
            }
            let Some(c) = self.date.captures(&text[window.clone()]) else {
                continue;
            };
            let Some(whole) = c.get(0) else { continue };
            // The date must start within the window, not merely end in it.
            let span = window.start + whole.start()..window.start + whole.end();
            let num = |name: &str| c.name(name).and_then(|m| m.as_str().parse::<u32>().ok());
            let month_num = |name: &str| c.name(name).map(|m| month_index(m.as_str()));
            let ymd = if let Some(y) = num("y1") {
                Some((y, num("m1"), num("d1")))
            } else if let Some(y) = num("y2") {
                // Either day-first or month-first; accept if one reading works.
                let (a, b) = (num("a2"), num("b2"));
                let y = if y < 100 { 1900 + y } else { y };
                match (a, b) {
                    (Some(a), Some(b)) if a > 12 => Some((y, Some(b), Some(a))),
                    _ => Some((y, a, b)),
                }
            } else if let Some(y) = num("y3") {
                Some((y, month_num("m3"), num("d3")))
            } else {
                num("y4").map(|y| (y, month_num("m4"), num("d4")))
            };
            let Some((y, Some(m), Some(d))) = ymd else {
                continue;
            };
            if !(1900..=2100).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
                continue;
            }
            covered = span.end;
            out.push(pii("date_of_birth", segment, span, 0.9, "context"));
        }
    }
}

/// 1-based month of an English month name or abbreviation.
fn month_index(name: &str) -> u32 {
    let lower = name.to_ascii_lowercase();
    const NAMES: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    NAMES.iter().position(|n| lower.starts_with(n)).map_or(0, |i| i as u32 + 1)
}

// ------------------------------------------- passport, driver's licence

/// An ID-shaped token: letters and digits (optionally dashed), reported
/// only shortly after a context phrase.
struct ContextId {
    kind: &'static str,
    keywords: &'static [&'static str],
    context: Regex,
    token: Regex,
    /// Allowed (min, max) length and minimum digit count of the token.
    len: (usize, usize),
    min_digits: usize,
}

const ID_WINDOW: usize = 32;
const ID_TOKEN: &str = r"(?-u:\b)[A-Za-z0-9][A-Za-z0-9\-]{3,18}[A-Za-z0-9](?-u:\b)";

impl ContextId {
    fn passport() -> Self {
        ContextId {
            kind: "passport_number",
            // English, German ("Reisepass", "Pass-Nr."), French, Spanish,
            // Portuguese, Italian and Dutch names for the document; the
            // token rule below fits the common formats (US/UK nine digits,
            // "C01X00T47", "09AB12345", "A1234567", "AB123456", "AAA123456").
            keywords: &[
                "passport",
                "reisepass",
                "pass-nr",
                "passnummer",
                "passeport",
                "pasaporte",
                "passaporte",
                "passaporto",
                "paspoort",
            ],
            context: compile_builtin(concat!(
                r"(?i)(?-u:\b)(?:passport|reisepass(?:nummer)?|pass-?nr\.?|passnummer|passeport|pasaporte|passaporte",
                r"|passaporto|paspoort(?:nummer)?)(?:\s*(?:number|num|no\.?|nr\.?|n[°o]\.?|#|id))?(?-u:\b)",
            )),
            token: compile_builtin(ID_TOKEN),
            len: (6, 10),
            min_digits: 5,
        }
    }

    fn drivers_license() -> Self {
        ContextId {
            kind: "drivers_license",
            keywords: &[
                "driver",
                "driving",
                "dl#",
                "dl no",
                "dl:",
                "licence no",
                "license no",
                "licence number",
                "license number",
                "führerschein",
            ],
            context: compile_builtin(concat!(
                r"(?i)(?:(?-u:\b)(?:driver'?s?|driving)[ \-](?:licen[cs]e|permit)(?:\s*(?:number|num|no\.?|#|id))?",
                r"|(?-u:\b)dl ?(?:#|no\.?|number|:)|(?-u:\b)licen[cs]e (?:number|no\.?)|führerschein(?:nummer)?)"
            )),
            token: compile_builtin(ID_TOKEN),
            len: (5, 20),
            min_digits: 4,
        }
    }
}

impl Detector for ContextId {
    fn keywords(&self) -> &[&'static str] {
        self.keywords
    }

    fn find(&self, text: &str, _: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let mut covered = 0;
        for window in keyword_windows(&self.context, text, ID_WINDOW) {
            if window.start < covered {
                continue;
            }
            // The first ID-shaped token with enough digits in the window.
            let found = self.token.find_iter(&text[window.clone()]).find(|m| {
                let t = m.as_str().as_bytes();
                let digits = t.iter().filter(|b| b.is_ascii_digit()).count();
                let lowercase = t.iter().any(u8::is_ascii_lowercase);
                (self.len.0..=self.len.1).contains(&t.len()) && digits >= self.min_digits && !lowercase
            });
            let Some(m) = found else { continue };
            let span = window.start + m.start()..window.start + m.end();
            // A token running past the window was cut short.
            if text.as_bytes().get(span.end).is_some_and(|&b| is_word_byte(b)) {
                continue;
            }
            covered = span.end;
            out.push(pii(self.kind, segment, span, 0.8, "context"));
        }
    }
}

// ------------------------------------------------------ ABA routing

/// Nine digits, or Presidio's "dddd-dddd-d" grouping.
/// The shape routing number candidates must have; matched by hand
/// (`routing_shaped`), since a regex search costs more to start than this
/// takes to run on a numeric run. The tests check the hand matcher
/// against it.
#[cfg(test)]
const ROUTING: &str = r"(?-u:\b)(?:[0-9]{9}|[0-9]{4}-[0-9]{4}-[0-9])(?-u:\b)";
const ROUTING_CONTEXT: &[&str] = &["routing", "aba", "rtn", "transit", "bank", "ach", "wire", "account"];

struct Routing;

impl Routing {
    fn new() -> Self {
        Routing
    }
}

impl Detector for Routing {
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let candidates = pre.runs(9).flat_map(|run| routing_shaped(text.as_bytes(), run));
        for span in candidates {
            let mut d = [0u32; 9];
            let mut n = 0;
            for b in text[span.clone()].bytes().filter(u8::is_ascii_digit) {
                d[n] = u32::from(b - b'0');
                n += 1;
            }
            if n != 9 || !aba_valid(&d) || joined_to_number(text, &span) {
                continue;
            }
            // One in ten random nine-digit numbers passes the checksum, so
            // without a banking word nearby this is only a weak signal.
            let conf = if context_near(text, &span, ROUTING_CONTEXT) { 0.95 } else { 0.4 };
            out.push(pii("us_bank_routing", segment, span, conf, "aba_checksum"));
        }
    }
}

/// Matches of [`ROUTING`] within `run`, leftmost first and not
/// overlapping, as the regex finds them: nine digits, else "dddd-dddd-d",
/// between word boundaries.
fn routing_shaped(bytes: &[u8], run: Range<usize>) -> Vec<Range<usize>> {
    let digits = |at: usize, n: usize| bytes.get(at..at + n).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let dash = |at: usize| bytes.get(at) == Some(&b'-');
    let bounded = |end: usize| bytes.get(end).is_none_or(|&b| !is_word_byte(b));
    let mut out = Vec::new();
    let mut start = run.start;
    while start < run.end {
        let word_start = start == 0 || !is_word_byte(bytes[start - 1]);
        let end = if !word_start {
            None
        } else if digits(start, 9) && bounded(start + 9) {
            Some(start + 9)
        } else if digits(start, 4)
            && dash(start + 4)
            && digits(start + 5, 4)
            && dash(start + 9)
            && digits(start + 10, 1)
            && bounded(start + 11)
        {
            Some(start + 11)
        } else {
            None
        };
        match end {
            Some(end) => {
                out.push(start..end);
                start = end;
            }
            None => start += 1,
        }
    }
    out
}

/// ABA checksum (weights 3, 7, 1) plus the Federal Reserve prefix ranges
/// (00-12 banks, 21-32 thrifts, 61-72 electronic, 80 traveller's cheques).
fn aba_valid(d: &[u32; 9]) -> bool {
    let prefix = d[0] * 10 + d[1];
    let prefix_ok = prefix <= 12 || (21..=32).contains(&prefix) || (61..=72).contains(&prefix) || prefix == 80;
    let sum = 3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + (d[2] + d[5] + d[8]);
    prefix_ok && sum.is_multiple_of(10) && d.iter().any(|&x| x != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(d: &dyn Detector, text: &str) -> Vec<(Range<usize>, f32)> {
        let mut out = Vec::new();
        d.find(text, &Prescan::of(text), 0, &mut out);
        out.into_iter().map(|f| (f.span, f.confidence)).collect()
    }

    fn spans(d: &dyn Detector, text: &str) -> Vec<Range<usize>> {
        hits(d, text).into_iter().map(|h| h.0).collect()
    }

    #[test]
    fn nino() {
        let d = UkNino::new();
        assert_eq!(hits(&d, "NINO: AB123456C"), vec![(6..15, 0.95)]);
        assert_eq!(spans(&d, "mine is JG 12 34 56 A ok"), vec![8..21]);
        for text in ["GB123456A", "AB123456E", "DA123456A", "AO123456A", "AB12 3456C", "XAB123456C", "AB1234567C"] {
            assert!(spans(&d, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn dob_needs_context_and_a_real_date() {
        let d = DateOfBirth::new();
        for (text, date) in [
            ("DOB: 1985-03-14", "1985-03-14"),
            ("date of birth 14/03/1985.", "14/03/1985"),
            ("born on 3 March 1985 in Leeds", "3 March 1985"),
            ("Born March 3rd, 1985", "March 3rd, 1985"),
            ("birthday: 07.11.1990", "07.11.1990"),
        ] {
            let got = spans(&d, text);
            assert_eq!(got.len(), 1, "{text}");
            assert_eq!(&text[got[0].clone()], date, "{text}");
        }
        for text in [
            "released on 1985-03-14",
            "DOB: 1985-13-14",
            "born 32/01/1985",
            "born in the year of the ox",
            "stillborn 1985-03-14",
        ] {
            assert!(spans(&d, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn passport_and_licence_need_context() {
        let p = ContextId::passport();
        assert_eq!(spans(&p, "Passport number: 912803456"), vec![17..26]);
        assert_eq!(spans(&p, "passport C01X00T47 issued"), vec![9..18]);
        assert!(spans(&p, "number: 912803456").is_empty());
        assert!(spans(&p, "passport photo is due 2024").is_empty());
        assert_eq!(spans(&p, "Pass-Nr.: F12345671"), vec![10..19]);
        assert_eq!(spans(&p, "numero di passaporto YA1234567"), vec![21..30]);
        assert_eq!(spans(&p, "paspoortnummer NW12345K8"), vec![15..24]);
        let dl = ContextId::drivers_license();
        assert_eq!(spans(&dl, "driver's license: D1234567"), vec![18..26]);
        assert_eq!(spans(&dl, "DL# 123-456-789"), vec![4..15]);
        assert!(spans(&dl, "MIT license 2.0 and 2024").is_empty());
        assert!(spans(&dl, "D1234567").is_empty());
    }

    #[test]
    fn routing_numbers() {
        let d = Routing::new();
        assert_eq!(hits(&d, "ABA routing 121000358"), vec![(12..21, 0.95)]);
        assert_eq!(hits(&d, "ref 0711-0130-7"), vec![(4..15, 0.4)]);
        // Bad checksum, bad prefix, all zeros.
        for text in ["routing 121000359", "routing 421042111", "routing 000000000"] {
            assert!(spans(&d, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn routing_shapes_match_the_regex() {
        let re = compile_builtin(ROUTING);
        let pieces = ["1210", "00358", "-", "-", "9", " ", "x", "é", "12345678"];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
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
            let got: Vec<Range<usize>> = pre.runs(9).flat_map(|r| routing_shaped(t.as_bytes(), r)).collect();
            matched += want.len();
            assert_eq!(got, want, "{t:?}");
        }
        assert!(matched > 30, "{matched}");
    }
}
