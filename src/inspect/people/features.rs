//! Tokens, gazetteer and hashed features of the people-and-places tagger.
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
/// Labels: 0 nothing, 1 part of a person's name, 2 part of a postal address.
pub const CLASSES: usize = 3;
pub const PER: usize = 1;
pub const ADDR: usize = 2;
/// Upper bound on features per token (see [`features`]).
pub const MAX_FEATURES: usize = 40;

/// Gazetteer flags (one bit per `## section` of `gazetteer.txt`).
pub const FIRST: u8 = 1;
pub const LAST: u8 = 2;
pub const STREET: u8 = 4;
pub const PLACE: u8 = 8;
pub const COMMON: u8 = 16;
pub const UNIT: u8 = 32;
pub const TITLE: u8 = 64;
const SECTIONS: [(&str, u8); 7] = [
    ("first", FIRST),
    ("last", LAST),
    ("street", STREET),
    ("place", PLACE),
    ("common", COMMON),
    ("unit", UNIT),
    ("title", TITLE),
];

/// Lowercase words from Faker's locale lists and a few hand-written ones,
/// written by `scripts/prepare-people-data`.
const GAZETTEER: &str = include_str!("gazetteer.txt");

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

pub type Gazetteer = HashMap<u64, u8, BuildHasherDefault<IdHasher>>;

/// The gazetteer, parsed on first use and shared by every detector set.
pub fn gazetteer() -> &'static Gazetteer {
    static GAZ: OnceLock<Gazetteer> = OnceLock::new();
    GAZ.get_or_init(|| {
        let mut map = Gazetteer::default();
        let mut flag = 0u8;
        for line in GAZETTEER.lines() {
            if let Some(section) = line.strip_prefix("## ") {
                flag = SECTIONS.iter().find(|(n, _)| *n == section).map_or(0, |(_, f)| *f);
            } else if !line.is_empty() && !line.starts_with('#') && flag != 0 {
                *map.entry(word_hash(line)).or_insert(0) |= flag;
            }
        }
        map
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
    pub flags: u8,
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
/// capitalised words that do not look like code, short numbers next to a
/// capitalised word or a street word, and street or unit words next to a
/// number or a capitalised word. Returns false (and may leave `out`
/// partly filled) when there is no capitalised word at all.
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
    if !any_cap {
        return false;
    }
    for t in out.iter_mut() {
        if is_cap(t.shape) && !code_like(bytes, t.start, t.end) && t.end - t.start <= 30 {
            t.candidate = true;
        }
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
    for k in 0..out.len() {
        let wanted = out[k].candidate
            || (k > 0 && out[k - 1].candidate)
            || out.get(k + 1).is_some_and(|t| t.candidate)
            || out.get(k + 2).is_some_and(|t| t.candidate)
            || (k > 1 && out[k - 2].candidate);
        if wanted {
            out[k].hash = word_hash(&text[out[k].start..out[k].end]);
            out[k].flags = gaz.get(&out[k].hash).copied().unwrap_or(0);
        }
    }
    true
}

fn street_or_unit(gaz: &Gazetteer, word: &str) -> bool {
    gaz.get(&word_hash(word)).is_some_and(|f| f & (STREET | UNIT) != 0)
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
    let flags_of = |x: Option<&Token>| x.map_or(128, |x| u64::from(x.flags));
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
    for bit in 0..7 {
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
    push(14, shape << 8 | flags);
    push(15, (t.gap as u64) << 8 | after_gap);
    push(16, flags_of(prev) << 8 | flags);
    push(17, flags << 8 | flags_of(next));
    push(18, hash_of(prev) ^ shape.wrapping_mul(0x1000_0001));
    push(19, hash_of(next) ^ shape.wrapping_mul(0x1000_0001));
    push(20, shape_of(prev) << 16 | shape << 8 | shape_of(next));
    push(21, flags_of(prev2) << 8 | flags_of(prev));
    push(22, flags_of(next) << 8 | flags_of(next2));
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
    n
}

fn bucket(template: u64, value: u64) -> u32 {
    let mut h = (value ^ template.wrapping_mul(0xff51_afd7_ed55_8ccd)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 29;
    (h % BUCKETS as u64) as u32
}
