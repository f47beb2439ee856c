//! National identifiers beyond the US: German tax id, French NIR, Spanish
//! DNI and NIE, Italian codice fiscale, Dutch BSN, UK NHS number, Indian
//! Aadhaar and PAN, Canadian SIN, Australian TFN and Medicare number,
//! Brazilian CPF and CNPJ.
//!
//! Every one is checked with its own check digit or letter. Where that
//! check still lets through one number in ten or so (a BSN, SIN, TFN,
//! NHS, Aadhaar or Steuer-ID is just nine to twelve digits), the number is
//! reported only near a word that names it ("BSN", "SIN", "Aadhaar").
//! Shapes that are distinctive in themselves ("123.456.789-09",
//! "X1234567L", "RSSMRA85T10A562S") need no context word.
//!
//! None of them is keyword-gated: they start from the prescan's numeric
//! runs and letter-digit tokens, which clean prose has few of, and look
//! for the naming word only once a checksum has passed. Gating on short
//! words such as "sin", "tin" or "pan" would cost more, since their
//! letter pairs are everywhere in English.

use std::ops::Range;

use super::{finding, is_word_byte, Category, Detector, Finding, Prescan};

pub(super) fn detectors() -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(NumericId::de_tax_id()),
        Box::new(NumericId::nl_bsn()),
        Box::new(NumericId::uk_nhs()),
        Box::new(NumericId::in_aadhaar()),
        Box::new(NumericId::ca_sin()),
        Box::new(NumericId::au_tfn()),
        Box::new(NumericId::au_medicare()),
        Box::new(NumericId::br_cpf()),
        Box::new(FrNir),
        Box::new(EsId),
        Box::new(ItFiscalCode),
        Box::new(InPan),
        Box::new(BrCnpj),
    ]
}

fn pii(kind: &'static str, segment: usize, span: Range<usize>, conf: f32, v: &'static str) -> Finding {
    finding(Category::Pii, kind, segment, span, conf, v)
}

/// How far around a candidate a naming word may be.
const BEFORE: usize = 48;
const AFTER: usize = 32;

/// True when one of `words` occurs as whole words near `span`; a word
/// ending in '*' matches any word it begins ("steuer*": "Steuer-ID").
/// Unlike `context_near` the end is anchored too, so "sin" is not "since".
pub(super) fn named_near(text: &str, span: &Range<usize>, words: &[&str]) -> bool {
    let bytes = text.as_bytes();
    let from = span.start.saturating_sub(BEFORE);
    let to = (span.end + AFTER).min(bytes.len());
    // First letters of the words (either case, by `byte & 31`): one test
    // rules out most word starts before any comparison.
    let firsts = words.iter().fold(0u32, |set, w| set | w.as_bytes().first().map_or(u32::MAX, |&b| 1 << (b & 31)));
    let word_at = |i: usize, limit: usize| {
        firsts & (1 << (bytes[i] & 31)) != 0
            && bytes[i].is_ascii_alphabetic()
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
            && words.iter().any(|w| {
                if w.as_bytes().first() != Some(&bytes[i].to_ascii_lowercase()) {
                    return false;
                }
                let (w, prefix) = match w.strip_suffix('*') {
                    Some(stem) => (stem.as_bytes(), true),
                    None => (w.as_bytes(), false),
                };
                i + w.len() <= limit
                    && bytes[i..i + w.len()].eq_ignore_ascii_case(w)
                    && (prefix || bytes.get(i + w.len()).is_none_or(|b| !b.is_ascii_alphanumeric()))
            })
    };
    (from..span.start).any(|i| word_at(i, span.start)) || (span.end..to).any(|i| word_at(i, to))
}

/// Spans in `run` made of whole digit groups with exactly `n` digits and
/// one separator byte (space, '-' or '.') between groups, that are not
/// glued to a word or to a longer number. Leftmost first, not overlapping.
fn id_candidates(bytes: &[u8], run: Range<usize>, n: usize) -> Vec<Range<usize>> {
    // Group bounds on the stack: this runs for every numeric run of every
    // segment, and an id has at most a few groups (a longer run is cut).
    let mut groups = [(0usize, 0usize); 24];
    let mut count = 0;
    let mut k = run.start;
    while k < run.end && count < groups.len() {
        let start = k;
        while k < run.end && bytes[k].is_ascii_digit() {
            k += 1;
        }
        if k > start {
            groups[count] = (start, k);
            count += 1;
        } else {
            k += 1;
        }
    }
    let groups = &groups[..count];
    let mut out = Vec::new();
    let mut i = 0;
    while i < groups.len() {
        let mut digits = 0;
        let mut j = i;
        while j < groups.len() && digits < n {
            if j > i && groups[j].0 - groups[j - 1].1 != 1 {
                break;
            }
            digits += groups[j].1 - groups[j].0;
            j += 1;
        }
        let span = groups[i].0..groups[j - 1].1;
        let ok = digits == n && {
            let left_ok = if i == 0 { free_left(bytes, span.start) } else { bytes[span.start - 1] == b' ' };
            let right_ok = if j == groups.len() { free_right(bytes, span.end) } else { bytes[span.end] == b' ' };
            left_ok && right_ok
        };
        if ok {
            out.push(span);
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// Nothing glued on before `start`: no word byte, no '+' or '(' (phone
/// punctuation), no separator with a digit or letter before it.
fn free_left(bytes: &[u8], start: usize) -> bool {
    let Some(&b) = start.checked_sub(1).and_then(|i| bytes.get(i)) else { return true };
    let joined =
        matches!(b, b'.' | b'-' | b'/' | b':' | b',') && start >= 2 && bytes[start - 2].is_ascii_alphanumeric();
    !(is_word_byte(b) || matches!(b, b'+' | b'(') || joined)
}

/// Nothing glued on after `end`: no word byte, no separator followed by a
/// digit or letter.
fn free_right(bytes: &[u8], end: usize) -> bool {
    let Some(&b) = bytes.get(end) else { return true };
    let joined =
        matches!(b, b'.' | b'-' | b'/' | b':' | b',') && bytes.get(end + 1).is_some_and(u8::is_ascii_alphanumeric);
    !(is_word_byte(b) || joined)
}

/// Digit values of `s` (separators skipped), at most 16.
fn digit_values(s: &[u8]) -> ([u8; 16], usize) {
    let mut d = [0u8; 16];
    let mut n = 0;
    for &b in s.iter().filter(|b| b.is_ascii_digit()) {
        if n == d.len() {
            break;
        }
        d[n] = b - b'0';
        n += 1;
    }
    (d, n)
}

/// Lengths of the digit groups of `s` and the separator bytes between
/// them, as "3-3-4"-style text: "3 3 4" with each separator kept.
fn grouping(s: &[u8]) -> String {
    let mut out = String::new();
    let mut count = 0;
    for &b in s {
        if b.is_ascii_digit() {
            count += 1;
        } else {
            out.push_str(&count.to_string());
            out.push(char::from(b));
            count = 0;
        }
    }
    out.push_str(&count.to_string());
    out
}

/// Whether the groups of `s` are one of `shapes` ("3-3-4"), with `-` in a
/// shape standing for any one separator used consistently, or compact.
fn grouped_as(s: &[u8], shapes: &[&str]) -> bool {
    let g = grouping(s);
    if !g.contains(|c: char| !c.is_ascii_digit()) {
        return true;
    }
    let separators: Vec<char> = g.chars().filter(|c| !c.is_ascii_digit()).collect();
    let consistent = separators.windows(2).all(|w| w[0] == w[1]);
    let sep = separators.first().copied().unwrap_or('-');
    consistent && shapes.iter().any(|shape| shape.replace('-', &sep.to_string()) == g)
}

// ------------------------------------------------------ checksum numbers

/// A number of a fixed digit count with a check digit, reported next to
/// a naming word (or, where `bare` allows it, on its shape alone).
struct NumericId {
    kind: &'static str,
    digits: usize,
    /// Whole words that name the number (see [`named_near`]).
    context: &'static [&'static str],
    /// Accepted groupings (see [`grouped_as`]); compact is always fine.
    shapes: &'static [&'static str],
    valid: fn(&[u8]) -> bool,
    /// Confidence without a naming word, for the candidate text; `None`:
    /// not without one.
    bare: fn(&[u8]) -> Option<f32>,
    validator: &'static str,
}

fn never(_: &[u8]) -> Option<f32> {
    None
}

impl NumericId {
    fn de_tax_id() -> Self {
        NumericId {
            kind: "de_tax_id",
            digits: 11,
            context: &["steuer*", "idnr", "id-nr", "identifikationsnummer", "tax id", "tax identification", "tin"],
            shapes: &["2-3-3-3", "3-3-3-2", "3-4-4"],
            valid: de_tax_id_valid,
            bare: never,
            validator: "iso7064_mod11_10",
        }
    }

    fn nl_bsn() -> Self {
        NumericId {
            kind: "nl_bsn",
            digits: 9,
            context: &["bsn", "burgerservice*", "sofinummer", "sofi", "citizen service number"],
            shapes: &["4-2-3", "3-3-3", "2-3-4"],
            valid: nl_bsn_valid,
            bare: never,
            validator: "eleven_proof",
        }
    }

    fn uk_nhs() -> Self {
        NumericId {
            kind: "uk_nhs",
            digits: 10,
            context: &["nhs", "nhs*", "national health service", "health service"],
            shapes: &["3-3-4"],
            valid: uk_nhs_valid,
            bare: never,
            validator: "mod11",
        }
    }

    fn in_aadhaar() -> Self {
        NumericId {
            kind: "in_aadhaar",
            digits: 12,
            context: &["aadhaar*", "aadhar*", "adhaar*", "uidai"],
            shapes: &["4-4-4"],
            valid: in_aadhaar_valid,
            bare: never,
            validator: "verhoeff",
        }
    }

    fn ca_sin() -> Self {
        NumericId {
            kind: "ca_sin",
            digits: 9,
            context: &["sin", "social insurance", "nas", "assurance sociale"],
            shapes: &["3-3-3"],
            valid: ca_sin_valid,
            bare: never,
            validator: "luhn",
        }
    }

    fn au_tfn() -> Self {
        NumericId {
            kind: "au_tfn",
            digits: 9,
            context: &["tfn", "tax file"],
            shapes: &["3-3-3"],
            valid: au_tfn_valid,
            bare: never,
            validator: "mod11",
        }
    }

    fn au_medicare() -> Self {
        NumericId {
            kind: "au_medicare",
            digits: 10,
            context: &["medicare*"],
            shapes: &["4-5-1"],
            valid: au_medicare_valid,
            bare: never,
            validator: "medicare_check",
        }
    }

    fn br_cpf() -> Self {
        NumericId {
            kind: "br_cpf",
            digits: 11,
            context: &["cpf"],
            shapes: &[],
            valid: br_cpf_valid,
            // "123.456.789-09" is how a CPF is written and nothing else is.
            bare: |s| (grouping(s) == "3.3.3-2").then_some(0.85),
            validator: "mod11",
        }
    }
}

impl Detector for NumericId {
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        for run in pre.runs(self.digits) {
            for span in id_candidates(bytes, run, self.digits) {
                let s = &bytes[span.clone()];
                let formatted = (self.bare)(s);
                if formatted.is_none() && !grouped_as(s, self.shapes) {
                    continue;
                }
                let (d, n) = digit_values(s);
                if n != self.digits || !(self.valid)(&d[..n]) {
                    continue;
                }
                let conf = if named_near(text, &span, self.context) {
                    0.95
                } else {
                    match formatted {
                        Some(conf) => conf,
                        None => continue,
                    }
                };
                out.push(pii(self.kind, segment, span, conf, self.validator));
            }
        }
    }
}

/// Steuer-ID: no leading zero; in the first ten digits exactly one digit
/// occurs two or three times (three not all in a row); ISO 7064 MOD 11,10.
fn de_tax_id_valid(d: &[u8]) -> bool {
    if d.len() != 11 || d[0] == 0 {
        return false;
    }
    let mut counts = [0u8; 10];
    for &x in &d[..10] {
        counts[usize::from(x)] += 1;
    }
    let repeated: Vec<usize> = (0..10).filter(|&x| counts[x] > 1).collect();
    let [digit] = repeated[..] else { return false };
    if counts[digit] > 3 {
        return false;
    }
    let d8 = digit as u8;
    if counts[digit] == 3 && d[..10].windows(3).any(|w| w.iter().all(|&x| x == d8)) {
        return false;
    }
    let mut product = 10u32;
    for &x in &d[..10] {
        let mut sum = (u32::from(x) + product) % 10;
        if sum == 0 {
            sum = 10;
        }
        product = sum * 2 % 11;
    }
    let check = (11 - product) % 10;
    check == u32::from(d[10])
}

/// BSN eleven-proof: weights 9..2 and -1, sum divisible by 11.
fn nl_bsn_valid(d: &[u8]) -> bool {
    let sum: i32 =
        d[..8].iter().enumerate().map(|(i, &x)| (9 - i as i32) * i32::from(x)).sum::<i32>() - i32::from(d[8]);
    d.iter().any(|&x| x != 0) && sum % 11 == 0
}

/// NHS number: weights 10..2 over nine digits, 11 - sum mod 11 (11 reads
/// as 0, 10 is never issued) is the tenth.
fn uk_nhs_valid(d: &[u8]) -> bool {
    let sum: u32 = d[..9].iter().enumerate().map(|(i, &x)| (10 - i as u32) * u32::from(x)).sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return false,
        c => c,
    };
    check == u32::from(d[9]) && d.iter().any(|&x| x != d[0])
}

/// Aadhaar: first digit 2-9, Verhoeff check digit.
fn in_aadhaar_valid(d: &[u8]) -> bool {
    d[0] >= 2 && verhoeff_valid(d)
}

const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];
const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

fn verhoeff_valid(d: &[u8]) -> bool {
    let c = d
        .iter()
        .rev()
        .enumerate()
        .fold(0u8, |c, (i, &x)| VERHOEFF_D[usize::from(c)][usize::from(VERHOEFF_P[i % 8][usize::from(x)])]);
    c == 0
}

/// SIN: Luhn; 0 and 8 are never issued as a first digit.
fn ca_sin_valid(d: &[u8]) -> bool {
    d[0] != 0 && d[0] != 8 && luhn(d)
}

fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x) * if i % 2 == 1 { 2 } else { 1 };
            if x > 9 {
                x - 9
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// TFN: weights 1, 4, 3, 7, 5, 8, 6, 9, 10, sum divisible by 11.
fn au_tfn_valid(d: &[u8]) -> bool {
    const W: [u32; 9] = [1, 4, 3, 7, 5, 8, 6, 9, 10];
    let sum: u32 = d.iter().zip(W).map(|(&x, w)| u32::from(x) * w).sum();
    d.iter().any(|&x| x != 0) && sum.is_multiple_of(11)
}

/// Medicare: first digit 2-6; the ninth digit is the weighted sum (1, 3,
/// 7, 9, ...) of the first eight mod 10; the tenth is the issue number.
fn au_medicare_valid(d: &[u8]) -> bool {
    const W: [u32; 8] = [1, 3, 7, 9, 1, 3, 7, 9];
    let sum: u32 = d[..8].iter().zip(W).map(|(&x, w)| u32::from(x) * w).sum();
    (2..=6).contains(&d[0]) && sum % 10 == u32::from(d[8])
}

/// CPF: two mod-11 check digits; all-equal numbers pass but are not issued.
fn br_cpf_valid(d: &[u8]) -> bool {
    let check = |n: usize| {
        let sum: u32 = d[..n].iter().enumerate().map(|(i, &x)| u32::from(x) * (n as u32 + 1 - i as u32)).sum();
        (sum * 10 % 11 % 10) as u8
    };
    d.iter().any(|&x| x != d[0]) && check(9) == d[9] && check(10) == d[10]
}

// ------------------------------------------------------------------ NIR

/// French social security number (NIR): sex, year, month, department
/// (Corsica "2A"/"2B"), commune, order, then a key = 97 - number mod 97.
struct FrNir;

const NIR_CONTEXT: &[&str] =
    &["nir", "insee", "s\u{e9}curit\u{e9} sociale", "securite sociale", "s\u{e9}cu", "carte vitale", "social security"];

impl Detector for FrNir {
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        for run in pre.runs(7) {
            let mut spans = id_candidates(bytes, run.clone(), 15);
            // Corsica: "1 85 05 2A 006 084 36" splits the run at the letter.
            if let Some(start) = corsica_start(bytes, run.start) {
                spans.insert(0, start..run.end);
            }
            for span in spans {
                let s = &bytes[span.clone()];
                let Some(number) = nir_digits(s) else { continue };
                if !nir_valid(&number) {
                    continue;
                }
                let conf = if named_near(text, &span, NIR_CONTEXT) { 0.95 } else { 0.8 };
                out.push(pii("fr_nir", segment, span, conf, "mod97"));
                break;
            }
        }
    }
}

/// Start of the five digits and "2A"/"2B" that lead the run at `run_start`
/// ("1 85 05 2A " or "185052A").
fn corsica_start(bytes: &[u8], run_start: usize) -> Option<usize> {
    let mut k = run_start;
    if k > 0 && bytes[k - 1] == b' ' {
        k -= 1;
    }
    if k < 2 || !matches!(bytes[k - 1], b'A' | b'B') || bytes[k - 2] != b'2' {
        return None;
    }
    k -= 2;
    let mut digits = 0;
    while k > 0 && digits < 5 && (bytes[k - 1].is_ascii_digit() || bytes[k - 1] == b' ') {
        digits += usize::from(bytes[k - 1].is_ascii_digit());
        k -= 1;
    }
    while bytes[k] == b' ' {
        k += 1;
    }
    (digits == 5 && free_left(bytes, k)).then_some(k)
}

/// The 15 characters of a NIR candidate (digits, or "2A"/"2B" as the
/// department), spaced as "1 85 05 78 006 084 36" or compact.
fn nir_digits(s: &[u8]) -> Option<[u8; 15]> {
    let mut out = [0u8; 15];
    let mut n = 0;
    for &b in s {
        if b == b' ' {
            continue;
        }
        if !(b.is_ascii_digit() || b == b'A' || b == b'B') || n == 15 {
            return None;
        }
        out[n] = b;
        n += 1;
    }
    let g = grouping(&s.iter().map(|&b| if b.is_ascii_alphabetic() { b'0' } else { b }).collect::<Vec<u8>>());
    let shaped = !g.contains(' ') || g == "1 2 2 2 3 3 2";
    (n == 15 && shaped).then_some(out)
}

fn nir_valid(c: &[u8; 15]) -> bool {
    let corsica = c[5] == b'2' && matches!(c[6], b'A' | b'B');
    if c.iter().enumerate().any(|(i, b)| !(b.is_ascii_digit() || (corsica && i == 6))) {
        return false;
    }
    let sex = c[0];
    let month = (c[3] - b'0') * 10 + (c[4] - b'0');
    let month_ok = (1..=12).contains(&month) || (20..=42).contains(&month) || (50..=99).contains(&month);
    if !matches!(sex, b'1' | b'2' | b'3' | b'4' | b'7' | b'8') || !month_ok || &c[5..7] == b"00" {
        return false;
    }
    // Corsica's letters count as 19 (2A) and 18 (2B) in the key.
    let mut number: u64 = 0;
    for (i, &b) in c[..13].iter().enumerate() {
        let digit = match (i, b) {
            (5, _) if corsica => 1,
            (6, b'A') => 9,
            (6, b'B') => 8,
            _ => b - b'0',
        };
        number = number * 10 + u64::from(digit);
    }
    let key = u64::from((c[13] - b'0') * 10 + (c[14] - b'0'));
    key == 97 - number % 97
}

// ------------------------------------------------------------- DNI, NIE

/// Spanish DNI/NIF (eight digits and a letter, the number mod 23) and
/// NIE (X, Y or Z for 0, 1, 2, seven digits and the same letter).
struct EsId;

const DNI_LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";
const ES_CONTEXT: &[&str] = &["dni", "nif", "nie", "documento nacional", "identificaci\u{f3}n", "extranjero"];

impl Detector for EsId {
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        for run in pre.runs(7) {
            // Only the last group can carry the letter.
            let mut start = run.end;
            while start > run.start && bytes[start - 1].is_ascii_digit() {
                start -= 1;
            }
            let digits = run.end - start;
            if !(7..=8).contains(&digits) {
                continue;
            }
            let spaced = bytes.get(run.end) == Some(&b' ');
            let letter_at = match bytes.get(run.end) {
                Some(b'-' | b' ') => run.end + 1,
                _ => run.end,
            };
            let Some(&letter) = bytes.get(letter_at) else { continue };
            let end = letter_at + 1;
            if !letter.is_ascii_alphabetic() || !free_right(bytes, end) {
                continue;
            }
            let prefix = start.checked_sub(1).map(|i| bytes[i].to_ascii_uppercase());
            let (kind, span, number) = match prefix {
                Some(p @ (b'X' | b'Y' | b'Z')) if digits == 7 && free_left(bytes, start - 1) => {
                    let lead = u32::from(p - b'X');
                    ("es_nie", start - 1..end, lead * 10_000_000 + parse(&bytes[start..run.end]))
                }
                _ if free_left(bytes, start) => ("es_dni", start..end, parse(&bytes[start..run.end])),
                _ => continue,
            };
            if DNI_LETTERS[(number % 23) as usize] != letter.to_ascii_uppercase() {
                continue;
            }
            let context = named_near(text, &span, ES_CONTEXT);
            // A lowercase or spaced-off letter is a word away from any
            // other number ("12345678 I think").
            let conf = match (context, letter.is_ascii_uppercase() && !spaced) {
                (true, _) => 0.95,
                (false, true) => 0.85,
                (false, false) => continue,
            };
            out.push(pii(kind, segment, span, conf, "mod23"));
        }
    }
}

fn parse(digits: &[u8]) -> u32 {
    digits.iter().fold(0, |acc, &b| acc * 10 + u32::from(b - b'0'))
}

// ------------------------------------------------------ codice fiscale

/// Italian codice fiscale: six letters (surname, name), year, month
/// letter, day (+40 for women), birthplace code, check letter. Digits may
/// be replaced by letters (omocodia) when two people would share a code.
struct ItFiscalCode;

const CF_CONTEXT: &[&str] = &["codice fiscale", "cf", "c.f", "fiscal code", "tax code"];
const CF_MONTHS: &[u8] = b"ABCDEHLMPRST";
const CF_OMOCODE: &[u8] = b"LMNPQRSTUV";
/// Values of 0-9 and A-Z at odd (1st, 3rd, ...) positions.
const CF_ODD: [u32; 26] =
    [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23];

impl Detector for ItFiscalCode {
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        for &start in &pre.alnum_starts {
            let span = start..start + 16;
            let Some(code) = bytes.get(span.clone()) else { continue };
            if !free_right(bytes, span.end) || !fiscal_code_valid(code) {
                continue;
            }
            let conf = if named_near(text, &span, CF_CONTEXT) { 0.95 } else { 0.9 };
            out.push(pii("it_fiscal_code", segment, span, conf, "check_letter"));
        }
    }
}

fn fiscal_code_valid(c: &[u8]) -> bool {
    let digit_or_omocode = |b: u8| b.is_ascii_digit() || CF_OMOCODE.contains(&b);
    let letters = c[..6].iter().all(u8::is_ascii_uppercase) && c[11].is_ascii_uppercase();
    let digits = [6, 7, 9, 10, 12, 13, 14].iter().all(|&i| digit_or_omocode(c[i]));
    if !letters || !digits || !CF_MONTHS.contains(&c[8]) || !c[15].is_ascii_uppercase() {
        return false;
    }
    let value = |b: u8| if b.is_ascii_digit() { u32::from(b - b'0') } else { u32::from(b - b'A') };
    let sum: u32 =
        c[..15].iter().enumerate().map(|(i, &b)| if i % 2 == 0 { CF_ODD[value(b) as usize] } else { value(b) }).sum();
    u32::from(c[15] - b'A') == sum % 26
}

// ------------------------------------------------------------------ PAN

/// Indian PAN: five letters (the fourth the holder type), four digits, a
/// letter. Any product code can look like that, so only next to "PAN".
struct InPan;

const PAN_HOLDER_TYPES: &[u8] = b"ABCFGHJLPT";
const PAN_CONTEXT: &[&str] = &["pan", "permanent account", "income tax"];

impl Detector for InPan {
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        for &start in &pre.alnum_starts {
            let span = start..start + 10;
            let Some(c) = bytes.get(span.clone()) else { continue };
            let shaped = c[..5].iter().all(u8::is_ascii_uppercase)
                && PAN_HOLDER_TYPES.contains(&c[3])
                && c[5..9].iter().all(u8::is_ascii_digit)
                && c[9].is_ascii_uppercase();
            if shaped && free_right(bytes, span.end) && named_near(text, &span, PAN_CONTEXT) {
                out.push(pii("in_pan", segment, span, 0.85, "context"));
            }
        }
    }
}

// ----------------------------------------------------------------- CNPJ

/// Brazilian company number: "12.345.678/0001-95" (two mod-11 digits).
struct BrCnpj;

impl Detector for BrCnpj {
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        for run in pre.runs(8) {
            // The '/' ends the prescan's run after "12.345.678".
            let formatted = run.end >= 10 && grouping(&bytes[run.end - 10..run.end]) == "2.3.3" && {
                let tail = bytes.get(run.end..run.end + 8);
                tail.is_some_and(|t| grouping(t) == "0/4-2" && t[0] == b'/')
            };
            let candidates: Vec<(Range<usize>, bool)> = if formatted {
                vec![(run.end - 10..run.end + 8, true)]
            } else {
                id_candidates(bytes, run, 14).into_iter().filter(|s| s.len() == 14).map(|s| (s, false)).collect()
            };
            for (span, formatted) in candidates {
                let s = &bytes[span.clone()];
                let (d, n) = digit_values(s);
                let edges = free_left(bytes, span.start) && free_right(bytes, span.end);
                if n != 14 || !edges || !cnpj_valid(&d[..14]) {
                    continue;
                }
                let conf = match (named_near(text, &span, &["cnpj"]), formatted) {
                    (true, _) => 0.95,
                    (false, true) => 0.85,
                    (false, false) => continue,
                };
                out.push(pii("br_cnpj", segment, span, conf, "mod11"));
            }
        }
    }
}

fn cnpj_valid(d: &[u8]) -> bool {
    let check = |n: usize| {
        let sum: u32 = d[..n].iter().enumerate().map(|(i, &x)| u32::from(x) * (((n - 1 - i) % 8) as u32 + 2)).sum();
        match sum % 11 {
            0 | 1 => 0,
            r => (11 - r) as u8,
        }
    };
    d.iter().any(|&x| x != d[0]) && check(12) == d[12] && check(13) == d[13]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found<'t>(d: &dyn Detector, text: &'t str) -> Vec<&'t str> {
        let mut out = Vec::new();
        d.find(text, &Prescan::of(text), 0, &mut out);
        out.into_iter().map(|f| &text[f.span]).collect()
    }

    /// A number with `body` followed by the one check digit that makes
    /// `valid` accept it (there is exactly one, or none).
    fn complete(body: &str, valid: fn(&[u8]) -> bool) -> Option<String> {
        (0..10).map(|c| format!("{body}{c}")).find(|s| valid(&s.bytes().map(|b| b - b'0').collect::<Vec<_>>()))
    }

    /// The number with its last digit changed: a bad check digit.
    fn corrupt(number: &str) -> String {
        let mut s = number.to_string();
        let last = s.pop().map_or(0, |c| c.to_digit(10).unwrap_or(0));
        s.push(char::from(b'0' + ((last + 1) % 10) as u8));
        s
    }

    fn space(number: &str, groups: &[usize], sep: &str) -> String {
        let mut out = Vec::new();
        let mut at = 0;
        for &g in groups {
            out.push(&number[at..at + g]);
            at += g;
        }
        out.join(sep)
    }

    #[test]
    fn de_tax_id() {
        let d = NumericId::de_tax_id();
        let valid = complete("8609574271", de_tax_id_valid).expect("a check digit exists");
        let text = format!("Meine Steuer-ID: {valid}.");
        assert_eq!(found(&d, &text), [valid.as_str()]);
        assert_eq!(found(&d, &format!("IdNr. {}", space(&valid, &[2, 3, 3, 3], " "))).len(), 1);
        assert!(found(&d, &format!("Steuer-ID {}", corrupt(&valid))).is_empty());
        assert!(found(&d, &format!("order {valid}")).is_empty(), "needs a naming word");
        // Repetition rule: all ten distinct, or a digit four times.
        for body in ["1234567890", "1111234567", "0860957427"] {
            if let Some(n) = complete(body, |_| true) {
                let digits: Vec<u8> = n.bytes().map(|b| b - b'0').collect();
                assert!((0..10).all(|c| !de_tax_id_valid(&[&digits[..10], &[c]].concat())), "{body}");
            }
        }
        // Three in a row is not issued; three apart is.
        let apart = complete("1213145678", de_tax_id_valid);
        assert!(apart.is_some());
        assert!(complete("1112345678", de_tax_id_valid).is_none());
    }

    #[test]
    fn nl_bsn() {
        let d = NumericId::nl_bsn();
        let valid = complete("11122233", nl_bsn_valid).expect("check digit");
        assert_eq!(found(&d, &format!("BSN: {valid}")), [valid.as_str()]);
        assert_eq!(found(&d, &format!("burgerservicenummer {}", space(&valid, &[4, 2, 3], "."))).len(), 1);
        assert!(found(&d, &format!("BSN: {}", corrupt(&valid))).is_empty());
        assert!(found(&d, &valid).is_empty());
    }

    #[test]
    fn uk_nhs() {
        let d = NumericId::uk_nhs();
        let valid = complete("401023213", uk_nhs_valid).expect("check digit");
        assert_eq!(valid, "4010232137", "NHS Digital's documented example");
        assert_eq!(found(&d, "NHS number 401 023 2137"), ["401 023 2137"]);
        assert_eq!(found(&d, "my nhs no. is 401-023-2137."), ["401-023-2137"]);
        assert!(found(&d, "NHS number 401 023 2138").is_empty());
        assert!(found(&d, "call 401 023 2137").is_empty());
        assert!(found(&d, "NHS 401-023 2137").is_empty(), "mixed separators");
    }

    #[test]
    fn in_aadhaar() {
        let d = NumericId::in_aadhaar();
        let valid = complete("23456789012", in_aadhaar_valid).expect("check digit");
        assert_eq!(found(&d, &format!("Aadhaar: {}", space(&valid, &[4, 4, 4], " "))).len(), 1);
        assert_eq!(found(&d, "My Aadhaar number is 400123456787 with a lot of text"), ["400123456787"]);
        assert!(found(&d, &format!("Aadhaar: {}", corrupt(&valid))).is_empty());
        let leading_one = complete("12345678901", verhoeff_valid).expect("check digit");
        assert!(found(&d, &format!("aadhaar {leading_one}")).is_empty(), "first digit 2-9");
    }

    #[test]
    fn ca_sin() {
        let d = NumericId::ca_sin();
        assert_eq!(found(&d, "my SIN is 130-692-544"), ["130-692-544"]);
        assert_eq!(found(&d, "mon NAS: 258 933 688"), ["258 933 688"]);
        assert!(found(&d, "my SIN is 130-692-545").is_empty());
        assert!(found(&d, "since 130 692 544").is_empty(), "'sin' must be a whole word");
        assert!(found(&d, "SIN 046 454 286").is_empty(), "no SIN starts with 0");
    }

    #[test]
    fn au_tfn_and_medicare() {
        let tfn = NumericId::au_tfn();
        assert_eq!(found(&tfn, "TFN: 876 543 210"), ["876 543 210"]);
        assert!(found(&tfn, "TFN: 824 753 557").is_empty());
        assert!(found(&tfn, "876 543 210").is_empty());
        let medicare = NumericId::au_medicare();
        assert_eq!(found(&medicare, "Medicare card 2123 45670 1"), ["2123 45670 1"]);
        assert_eq!(found(&medicare, "medicare no 2123456701"), ["2123456701"]);
        assert!(found(&medicare, "Medicare 2123 25870 1").is_empty());
        assert!(found(&medicare, "2123456701").is_empty());
    }

    #[test]
    fn br_cpf_and_cnpj() {
        let cpf = NumericId::br_cpf();
        let body = "529982247";
        let valid = (0..100)
            .map(|c| format!("{body}{c:02}"))
            .find(|s| br_cpf_valid(&s.bytes().map(|b| b - b'0').collect::<Vec<_>>()))
            .expect("check digits exist");
        assert_eq!(valid, "52998224725");
        assert_eq!(found(&cpf, "CPF 529.982.247-25 ok"), ["529.982.247-25"]);
        assert_eq!(found(&cpf, "cliente 529.982.247-25"), ["529.982.247-25"]);
        assert_eq!(found(&cpf, "cpf: 52998224725"), ["52998224725"]);
        assert!(found(&cpf, "ref 52998224725").is_empty(), "bare digits need the word");
        assert!(found(&cpf, "CPF 529.982.247-26").is_empty());
        assert!(found(&cpf, "CPF 111.111.111-11").is_empty());
        let cnpj = BrCnpj;
        assert_eq!(found(&cnpj, "empresa 11.222.333/0001-81."), ["11.222.333/0001-81"]);
        assert_eq!(found(&cnpj, "CNPJ 11222333000181"), ["11222333000181"]);
        assert!(found(&cnpj, "empresa 11.222.333/0001-82").is_empty());
        assert!(found(&cnpj, "ref 11222333000181").is_empty());
    }

    #[test]
    fn fr_nir() {
        let d = FrNir;
        // Key computed here: 97 - (1850578006084 mod 97).
        let key = 97 - 1_850_578_006_084u64 % 97;
        let nir = format!("1850578006084{key:02}");
        assert_eq!(found(&d, &format!("NIR {nir}")), [nir.as_str()]);
        let spaced = format!("1 85 05 78 006 084 {key:02}");
        assert_eq!(found(&d, &format!("n° de sécu : {spaced}")), [spaced.as_str()]);
        let bad = format!("1850578006084{:02}", key % 97 + 1);
        assert!(found(&d, &format!("NIR {bad}")).is_empty());
        // Corsica: 2A counts as 19 in the key.
        let key = 97 - 1_850_519_006_084u64 % 97;
        let corsica = format!("1 85 05 2A 006 084 {key:02}");
        assert_eq!(found(&d, &format!("INSEE {corsica}")), [corsica.as_str()]);
        let key = 97 - 2_850_518_006_084u64 % 97;
        let corsica = format!("285052B006084{key:02}");
        assert_eq!(found(&d, &format!("NIR {corsica}")).len(), 1, "{corsica}");
        // Month 13 and sex 5 are not issued.
        let key = 97 - 1_851_378_006_084u64 % 97;
        assert!(found(&d, &format!("NIR 1851378006084{key:02}")).is_empty());
    }

    #[test]
    fn es_dni_and_nie() {
        let d = EsId;
        assert_eq!(found(&d, "DNI 12345678Z"), ["12345678Z"]);
        assert_eq!(found(&d, "mi NIF es 55555555-K."), ["55555555-K"]);
        assert_eq!(found(&d, "Mi NIE es X9613851N"), ["X9613851N"]);
        assert_eq!(found(&d, "Y8063915-Z y Z8078221M"), ["Y8063915-Z", "Z8078221M"]);
        for text in ["DNI 12345678A", "NIE Y8063915Q", "W8063915Q", "AB12345678Z", "12345678Z9", "ref 12345678z"] {
            assert!(found(&d, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn it_fiscal_code() {
        let d = ItFiscalCode;
        assert_eq!(found(&d, "CF: RSSMRA85T10A562S"), ["RSSMRA85T10A562S"]);
        // Omocodia: digits replaced by letters keep the check letter rule.
        assert_eq!(found(&d, "AAAAAA00B11C333Y and AAAAAA00B11C333N"), ["AAAAAA00B11C333Y"]);
        assert_eq!(found(&d, "codice fiscale MRTMTT91D08F205J"), ["MRTMTT91D08F205J"]);
        assert_eq!(found(&d, "RSSMRA85T10A5S2S").len(), 0, "wrong check letter for the omocode");
        for text in ["RSSMRA85T10A562T", "RSSMRA85X10A562S", "xRSSMRA85T10A562S", "RSSMRA85T10A562SX"] {
            assert!(found(&d, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn in_pan() {
        let d = InPan;
        assert_eq!(found(&d, "My PAN number is ABBPM4567S with a lot of text"), ["ABBPM4567S"]);
        assert!(found(&d, "ABBPM4567S").is_empty(), "needs the word");
        assert!(found(&d, "PAN ABBXM4567S").is_empty(), "X is no holder type");
        assert!(found(&d, "company ABBPM4567S").is_empty());
    }
}
