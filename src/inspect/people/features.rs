//! Tokens, gazetteer and hashed features of the people, places and
//! organisations tagger.
//!
//! Shared word for word by the detector (`people/mod.rs`) and the trainer
//! (`examples/train_people.rs` includes this file by path), so the weights
//! are always read with the features they were trained on. Nothing here
//! allocates per token beyond the token list itself.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

/// Hashed feature buckets; the weights hold two scores per bucket.
pub const BUCKETS: usize = 1 << 16;
/// Labels: 0 nothing, 1 part of a person's name, 2 part of a postal
/// address, 3 a place (city, region, country), 4 an organisation, 5 a
/// nationality or national group.
pub const CLASSES: usize = 6;
pub const PER: usize = 1;
pub const ADDR: usize = 2;
pub const LOC: usize = 3;
pub const ORG: usize = 4;
pub const NRP: usize = 5;
/// Upper bound on features per token (see [`features`]).
pub const MAX_FEATURES: usize = 64;

/// Gazetteer flags (one bit per `## section` of the gazetteer).
pub const FIRST: u16 = 1;
pub const LAST: u16 = 2;
pub const STREET: u16 = 4;
pub const PLACE: u16 = 8;
pub const COMMON: u16 = 16;
pub const UNIT: u16 = 32;
pub const TITLE: u16 = 64;
pub const COUNTRY: u16 = 128;
/// Legal forms and kinds of organisation ("gmbh", "inc", "bank").
pub const ORG_WORD: u16 = 256;
pub const BRAND: u16 = 512;
pub const NATIONALITY: u16 = 1024;
/// Nationalities and one-word country names, scored in lowercase too.
pub const LOWERCASE: u16 = 2048;
const FLAG_BITS: u64 = 12;
const SECTIONS: [(&str, u16); 12] = [
    ("first", FIRST),
    ("last", LAST),
    ("street", STREET),
    ("place", PLACE),
    ("common", COMMON),
    ("unit", UNIT),
    ("title", TITLE),
    ("country", COUNTRY),
    ("org", ORG_WORD),
    ("brand", BRAND),
    ("nrp", NATIONALITY),
    ("lowercase", LOWERCASE),
];

/// Lowercase words from Faker's locale lists, GeoNames place names and a
/// few hand-written lists, written (gzip) by `scripts/prepare-people-data`.
const GAZETTEER_GZ: &[u8] = include_bytes!("gazetteer.txt.gz");

/// The keys are already FNV hashes; hashing them again buys nothing.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Word flags by [`word_hash`].
pub struct Gazetteer {
    words: HashMap<u64, u16, BuildHasherDefault<IdHasher>>,
    /// One bit per hash of the first three bytes of each `lowercase`
    /// word: most lowercase words of a prompt are ruled out here without
    /// being hashed whole.
    lowercase_starts: Vec<u64>,
}

const START_BITS: u32 = 16;

fn start_key(word: &[u8]) -> usize {
    let key = u32::from(word[0]) | u32::from(word[1]) << 8 | u32::from(word[2]) << 16;
    (key.wrapping_mul(0x9e37_79b1) >> (32 - START_BITS)) as usize
}

impl Gazetteer {
    /// The flags of the word with hash `hash`.
    pub fn get(&self, hash: u64) -> u16 {
        self.words.get(&hash).copied().unwrap_or(0)
    }

    /// The flags of `word` (hashed `hash`); a plural the lists lack
    /// ("ecuadorians", "surinameses") gets the nationality flags of its
    /// singular.
    pub fn lookup(&self, word: &str, hash: u64) -> u16 {
        let flags = self.get(hash);
        if flags != 0 || !word.ends_with('s') {
            return flags;
        }
        for strip in [1, 2] {
            if let Some(stem) = word.get(..word.len().saturating_sub(strip)).filter(|s| s.len() >= 4) {
                let f = self.get(word_hash(stem)) & (NATIONALITY | LOWERCASE);
                if f != 0 {
                    return f;
                }
            }
        }
        0
    }

    /// False when no `lowercase` word (or its plural) starts like `word`.
    fn may_be_lowercase_word(&self, word: &[u8]) -> bool {
        word.len() >= 4 && {
            let key = start_key(word);
            self.lowercase_starts[key / 64] & (1 << (key % 64)) != 0
        }
    }
}

/// The gazetteer, parsed on first use and shared by every detector set.
pub fn gazetteer() -> &'static Gazetteer {
    static GAZ: OnceLock<Gazetteer> = OnceLock::new();
    GAZ.get_or_init(|| {
        let mut map = HashMap::<u64, u16, BuildHasherDefault<IdHasher>>::default();
        let mut lowercase_starts = vec![0u64; (1 << START_BITS) / 64];
        // The file is built by the script and read by the unit tests; a
        // damaged one leaves the gazetteer empty (the tagger then reads
        // shape and context alone) rather than failing the scan.
        let mut text = String::new();
        if std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(GAZETTEER_GZ), &mut text).is_err() {
            text.clear();
        }
        let mut flag = 0u16;
        for line in text.lines() {
            if let Some(section) = line.strip_prefix("## ") {
                flag = SECTIONS.iter().find(|(n, _)| *n == section).map_or(0, |(_, f)| *f);
            } else if !line.is_empty() && !line.starts_with('#') && flag != 0 {
                *map.entry(word_hash(line)).or_insert(0) |= flag;
                if flag == LOWERCASE && line.len() >= 4 {
                    let key = start_key(line.as_bytes());
                    lowercase_starts[key / 64] |= 1 << (key % 64);
                }
            }
        }
        Gazetteer { words: map, lowercase_starts }
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv_byte(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
}

/// FNV-1a of the word's lowercase UTF-8, so "MÜLLER", "Müller" and
/// "müller" hash alike.
pub fn word_hash(word: &str) -> u64 {
    let mut h = FNV_OFFSET;
    for c in word.chars() {
        if c.is_ascii() {
            h = fnv_byte(h, c.to_ascii_lowercase() as u8);
        } else {
            let mut buf = [0u8; 4];
            for l in c.to_lowercase() {
                for &b in l.encode_utf8(&mut buf).as_bytes() {
                    h = fnv_byte(h, b);
                }
            }
        }
    }
    h
}

/// Hash of the last three characters, lowercase: surname and street
/// endings (-son, -ova, -ez, -weg, -aße) carry over to unseen words.
fn suffix_hash(word: &str) -> u64 {
    let start = word.char_indices().rev().nth(2).map_or(0, |(i, _)| i);
    word_hash(&word[start..])
}

/// What sits between a token and the one before it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Gap {
    Start = 0,
    Space = 1,
    Comma = 2,
    Newline = 3,
    /// `.`, `!` or `?` and then space: a sentence end or an abbreviation.
    Stop = 4,
    Colon = 5,
    /// An opening bracket or quote.
    Open = 6,
    /// Two newlines or more: a new paragraph or block.
    Para = 7,
    /// A joining mark without space (`-`, `/`, `#`, `'`) or anything else.
    Other = 8,
}

#[derive(Clone, Copy, Debug)]
pub struct Token {
    pub start: usize,
    pub end: usize,
    /// [`word_hash`] of the word; 0 for tokens more than two away from
    /// every candidate (never read).
    pub hash: u64,
    pub shape: u8,
    /// Gazetteer flags; looked up for candidates and their neighbours only.
    pub flags: u16,
    pub gap: Gap,
    /// Whether the tagger scores this token (see [`tokenize`]).
    pub candidate: bool,
}

// Shapes. Words:
const CAPITALISED: u8 = 1;
pub const SINGLE_UPPER: u8 = 2;
const UPPER_2: u8 = 3;
const UPPER_LONG: u8 = 4;
pub const LOWER: u8 = 5;
const MIXED: u8 = 6;
// Numbers: 10 + digits (1..=6), or:
const LONG_NUMBER: u8 = 17;
const NUMBER_LETTER: u8 = 18;

pub fn is_word_shape(shape: u8) -> bool {
    shape < 10
}

/// A word with its first letter alone in capitals ("Rossi").
pub fn is_capitalised(shape: u8) -> bool {
    shape == CAPITALISED
}

/// All-caps words of two letters or more.
pub fn is_upper(shape: u8) -> bool {
    matches!(shape, UPPER_2 | UPPER_LONG)
}

fn is_cap(shape: u8) -> bool {
    matches!(shape, CAPITALISED | SINGLE_UPPER | UPPER_2 | UPPER_LONG)
}

pub fn is_short_number(shape: u8) -> bool {
    (11..=16).contains(&shape) || shape == NUMBER_LETTER
}

fn word_shape(word: &str) -> u8 {
    let mut chars = word.chars().filter(|c| c.is_alphabetic());
    let Some(first) = chars.next() else { return MIXED };
    let (mut upper, mut lower, mut count) = (0, 0, 1);
    for c in chars {
        count += 1;
        if c.is_uppercase() {
            upper += 1;
        } else if c.is_lowercase() {
            lower += 1;
        }
    }
    if first.is_uppercase() {
        match (count, upper, lower) {
            (1, _, _) => SINGLE_UPPER,
            (_, 0, _) => CAPITALISED,
            (2, 1, 0) => UPPER_2,
            (_, _, 0) => UPPER_LONG,
            // McDonald, O'Brien, DeVito: one inner capital after a short
            // prefix; longer camel case is code.
            _ if upper == 1 && word.len() <= 12 && word.find(|c: char| c.is_lowercase()).is_some_and(|i| i <= 3) => {
                CAPITALISED
            }
            _ => MIXED,
        }
    } else if first.is_lowercase() && upper == 0 {
        LOWER
    } else {
        MIXED
    }
}

/// Split `text` into words and numbers, and mark the tokens worth scoring:
/// capitalised words that do not look like code, nationalities and
/// country names in lowercase, short numbers next to a capitalised word or
/// a street word, and street or unit words next to a number or a
/// capitalised word. Returns false (and may leave `out` partly filled)
/// when there is no candidate at all.
pub fn tokenize(text: &str, gaz: &Gazetteer, out: &mut Vec<Token>) -> bool {
    out.clear();
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut gap_start = 0;
    let mut any_cap = false;
    while i < bytes.len() {
        let b = bytes[i];
        let (is_alpha, is_digit) = if b.is_ascii() {
            (b.is_ascii_alphabetic(), b.is_ascii_digit())
        } else {
            let c = text[i..].chars().next().unwrap_or(' ');
            (c.is_alphabetic(), false)
        };
        if !is_alpha && !is_digit {
            i += if b.is_ascii() { 1 } else { text[i..].chars().next().map_or(1, char::len_utf8) };
            continue;
        }
        let start = i;
        let mut end = i;
        let mut has_digit = false;
        let mut has_alpha = false;
        // A word runs over letters, digits and inner ' ’ - joining letters.
        while end < bytes.len() {
            let b = bytes[end];
            if b.is_ascii_alphanumeric() {
                has_digit |= b.is_ascii_digit();
                has_alpha |= b.is_ascii_alphabetic();
                end += 1;
                continue;
            }
            let c = text[end..].chars().next().unwrap_or(' ');
            if c.is_alphanumeric() {
                has_digit |= c.is_ascii_digit();
                has_alpha |= c.is_alphabetic();
                end += c.len_utf8();
            } else if matches!(c, '\'' | '’' | '-')
                && text[end + c.len_utf8()..].chars().next().is_some_and(char::is_alphanumeric)
            {
                end += c.len_utf8();
            } else {
                break;
            }
        }
        let word = &text[start..end];
        let shape = if !has_digit {
            word_shape(word)
        } else if !has_alpha && !word.contains(['-', '\'']) {
            let digits = word.len();
            if digits <= 6 {
                10 + digits as u8
            } else {
                LONG_NUMBER
            }
        } else if word.len() <= 8 && word.as_bytes()[0].is_ascii_digit() {
            NUMBER_LETTER
        } else {
            MIXED
        };
        any_cap |= is_cap(shape);
        let gap = gap_of(&bytes[gap_start..start], out.is_empty());
        // Hashed later, and only where a feature or a lookup needs it.
        out.push(Token { start, end, hash: 0, shape, flags: 0, gap, candidate: false });
        gap_start = end;
        i = end;
    }
    let mut any_lower = false;
    for t in out.iter_mut() {
        if t.end - t.start > 30 || code_like(bytes, t.start, t.end) {
            continue;
        }
        if is_cap(t.shape) {
            t.candidate = true;
        } else if t.shape == LOWER && gaz.may_be_lowercase_word(&bytes[t.start..t.end]) {
            let word = &text[t.start..t.end];
            t.hash = word_hash(word);
            t.flags = gaz.lookup(word, t.hash);
            t.candidate = t.flags & LOWERCASE != 0;
            any_lower |= t.candidate;
        }
    }
    if !any_cap && !any_lower {
        return false;
    }
    // Numbers and street words count only beside another candidate, so
    // the version numbers and counts of ordinary prose are never scored.
    for k in 0..out.len() {
        let t = out[k];
        if t.candidate {
            continue;
        }
        let joined = |j: usize| out[j].gap as u8 <= Gap::Newline as u8 || out[j].gap == Gap::Other;
        let prev = (k > 0 && joined(k)).then(|| out[k - 1]);
        let next = out.get(k + 1).filter(|_| joined(k + 1)).copied();
        let near_cap = prev.is_some_and(|p| p.candidate) || next.is_some_and(|n| n.candidate && is_cap(n.shape));
        // Times, dates, fractions and versions ("11:34", "2/16/1942",
        // "1.29") are not house numbers.
        let digit_at = |i: Option<usize>| i.and_then(|i| bytes.get(i)).is_some_and(u8::is_ascii_digit);
        let mark_at = |i: Option<usize>| i.and_then(|i| bytes.get(i)).is_some_and(|b| matches!(b, b':' | b'/' | b'.'));
        let clock_or_date = (mark_at(t.start.checked_sub(1)) && digit_at(t.start.checked_sub(2)))
            || (mark_at(Some(t.end)) && digit_at(Some(t.end + 1)));
        if is_short_number(t.shape) && !clock_or_date {
            let near_street =
                |n: Option<Token>| n.is_some_and(|n| n.shape == LOWER && street_or_unit(gaz, &text[n.start..n.end]));
            if near_cap || near_street(prev) || near_street(next) {
                out[k].candidate = true;
            }
        } else if t.shape == LOWER && t.end - t.start <= 12 {
            let near_number = prev.is_some_and(|p| is_short_number(p.shape));
            if (near_cap || near_number) && street_or_unit(gaz, &text[t.start..t.end]) {
                out[k].candidate = true;
            }
        }
    }
    // Features read up to three tokens either side of a candidate.
    for k in 0..out.len() {
        let wanted = out[k.saturating_sub(3)..(k + 4).min(out.len())].iter().any(|t| t.candidate);
        // (A hash already there was looked up above.)
        if wanted && out[k].hash == 0 {
            let word = &text[out[k].start..out[k].end];
            out[k].hash = word_hash(word);
            out[k].flags = gaz.lookup(word, out[k].hash);
        }
    }
    true
}

fn street_or_unit(gaz: &Gazetteer, word: &str) -> bool {
    gaz.get(word_hash(word)) & (STREET | UNIT) != 0
}

/// Identifiers in code: `Client::new`, `os.Path`, `Duration(`, `_Name`,
/// `$Var`, `<Tag`, `Foo=`.
fn code_like(bytes: &[u8], start: usize, end: usize) -> bool {
    let before = start.checked_sub(1).map(|i| bytes[i]);
    let after = bytes.get(end).copied();
    let after2 = bytes.get(end + 1).copied();
    matches!(before, Some(b'.' | b'_' | b'$' | b'<' | b'/' | b'\\' | b'@' | b'`' | b'{' | b'='))
        && !(before == Some(b'.') && start >= 2 && bytes[start - 2] == b' ')
        || matches!(after, Some(b'(' | b'_' | b'<' | b'=' | b'`' | b'{' | b'['))
        || (after == Some(b':') && after2 == Some(b':'))
        || (after == Some(b'.') && after2.is_some_and(|b| b.is_ascii_alphabetic()))
}

fn gap_of(between: &[u8], first: bool) -> Gap {
    if first {
        return Gap::Start;
    }
    let newlines = between.iter().filter(|&&b| b == b'\n').count();
    if newlines >= 2 {
        return Gap::Para;
    }
    if newlines == 1 {
        return Gap::Newline;
    }
    let mut gap = Gap::Space;
    let spaced = between.iter().any(|b| b.is_ascii_whitespace());
    for &b in between {
        let g = match b {
            b' ' | b'\t' | b'\r' => continue,
            b',' | b';' => Gap::Comma,
            b'.' | b'!' | b'?' if spaced => Gap::Stop,
            b':' => Gap::Colon,
            b'(' | b'[' | b'"' | b'\'' => Gap::Open,
            _ => Gap::Other,
        };
        // The strongest mark wins: a stop outranks a comma.
        if gap == Gap::Space || g == Gap::Stop {
            gap = g;
        }
    }
    if between.is_empty() {
        Gap::Other
    } else {
        gap
    }
}

/// Where feature hashes land; callers add them up (the detector) or
/// collect them (the trainer).
pub fn features(text: &str, tokens: &[Token], k: usize, out: &mut [u32; MAX_FEATURES]) -> usize {
    const NONE: u64 = 0x9e37_79b9_7f4a_7c15;
    let t = &tokens[k];
    let word = &text[t.start..t.end];
    let prev = k.checked_sub(1).map(|j| &tokens[j]);
    let prev2 = k.checked_sub(2).map(|j| &tokens[j]);
    let next = tokens.get(k + 1);
    let next2 = tokens.get(k + 2);
    let after_gap = next.map_or(Gap::Start, |n| n.gap) as u64;
    let shape = u64::from(t.shape);
    let flags = u64::from(t.flags);
    let hash_of = |x: Option<&Token>| x.map_or(NONE, |x| x.hash);
    let shape_of = |x: Option<&Token>| x.map_or(99, |x| u64::from(x.shape));
    let flags_of = |x: Option<&Token>| x.map_or(1 << FLAG_BITS, |x| u64::from(x.flags));
    let mut n = 0;
    let mut push = |template: u64, value: u64| {
        if n < MAX_FEATURES {
            out[n] = bucket(template, value);
            n += 1;
        }
    };
    push(0, 0);
    push(1, t.hash);
    push(2, shape);
    if is_word_shape(t.shape) && word.len() > 3 {
        push(3, suffix_hash(word));
    }
    for bit in 0..FLAG_BITS {
        if t.flags & (1 << bit) != 0 {
            push(4, bit);
        }
    }
    push(5, flags);
    push(6, hash_of(prev));
    push(7, hash_of(next));
    push(8, hash_of(prev2));
    push(9, hash_of(next2));
    push(10, shape_of(prev) << 8 | t.gap as u64);
    push(11, shape_of(next) << 8 | after_gap);
    push(12, flags_of(prev));
    push(13, flags_of(next));
    push(14, shape << 16 | flags);
    push(15, (t.gap as u64) << 8 | after_gap);
    push(16, flags_of(prev) << 16 | flags);
    push(17, flags << 16 | flags_of(next));
    push(18, hash_of(prev) ^ shape.wrapping_mul(0x1000_0001));
    push(19, hash_of(next) ^ shape.wrapping_mul(0x1000_0001));
    push(20, shape_of(prev) << 16 | shape << 8 | shape_of(next));
    push(21, flags_of(prev2) << 16 | flags_of(prev));
    push(22, flags_of(next) << 16 | flags_of(next2));
    push(23, u64::from(prev.is_some_and(|p| p.candidate)) | u64::from(next.is_some_and(|x| x.candidate)) << 1);
    push(24, hash_of(prev) ^ (t.gap as u64).wrapping_mul(0x2000_0003));
    push(25, (t.end - t.start).min(12) as u64);
    // Title case ("Guilty Pleasures: 5 Musicians Of The 70s") capitalises
    // its neighbours and its small words too; a name stands among
    // lowercase words.
    let window = &tokens[k.saturating_sub(3)..(k + 4).min(tokens.len())];
    let caps = window.iter().filter(|x| is_cap(x.shape)).count() as u64;
    let small_caps = window.iter().any(|x| x.shape == CAPITALISED && x.flags & COMMON != 0 && x.end - x.start <= 4);
    push(26, caps << 1 | u64::from(small_caps));
    // What the next and previous few words are, whatever their order: a
    // legal form two words on ("Round Stones Inc"), a country after a
    // comma, a title before a name.
    let after = &tokens[(k + 1).min(tokens.len())..(k + 4).min(tokens.len())];
    let before = &tokens[k.saturating_sub(3)..k];
    let any_flags = |ts: &[Token]| ts.iter().fold(0u64, |f, x| f | u64::from(x.flags));
    let (flags_after, flags_before) = (any_flags(after), any_flags(before));
    for bit in 0..FLAG_BITS {
        if flags_after & (1 << bit) != 0 {
            push(27, bit);
        }
        if flags_before & (1 << bit) != 0 {
            push(28, bit);
        }
    }
    n
}

fn bucket(template: u64, value: u64) -> u32 {
    let mut h = (value ^ template.wrapping_mul(0xff51_afd7_ed55_8ccd)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 29;
    (h % BUCKETS as u64) as u32
}
