//! Per-team sensitive terms (project code names, customer names, ...):
//! whole-word, ASCII case-insensitive matching: an Aho-Corasick automaton
//! probed only at word starts that a cheap byte test lets through.

use aho_corasick::{AhoCorasick, Anchored, Input, MatchKind, StartKind};

use super::{finding, Category, Finding, TERM_KIND};

/// A compiled set of sensitive terms. Hits are reported as
/// [`Category::Term`] with kind [`TERM_KIND`]; the term itself never is.
#[derive(Clone)]
pub struct Dictionary {
    matcher: AhoCorasick,
    len: usize,
    /// Where a term can begin, as bit sets over ASCII-lowercased bytes: a
    /// cheap test that keeps the automaton away from almost every word
    /// start. `short`: bit `a << 8 | b` for terms under four bytes starting
    /// "ab" (a one-byte term "a" sets every `b`); `long`: bit `quad_slot` of
    /// the first four bytes of every longer term.
    short: Box<[u64; 1024]>,
    long: Box<[u64; 1024]>,
    /// Whether every term starts with an ASCII word byte, so only a word
    /// byte after a non-word byte can start one.
    word_first: bool,
    /// Bit b of 256: some term starts with byte b (either ASCII case).
    first: [u64; 4],
    /// `first` as a low-nibble table (see [`nibble_table`]), for the
    /// 32-bytes-at-a-time word start pass (AVX2 builds only).
    #[cfg_attr(not(target_feature = "avx2"), allow(dead_code))]
    first_nibbles: [u8; 16],
}

// By hand: the derived form would print the 16 KiB of start filters.
impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionary").field("matcher", &self.matcher).field("len", &self.len).finish_non_exhaustive()
    }
}

#[derive(thiserror::Error, Debug)]
pub enum DictionaryError {
    /// Term number `index` (0-based, in input order) is empty or only
    /// whitespace; it would match everywhere or nowhere.
    #[error("dictionary term #{index} is blank")]
    BlankTerm { index: usize },
    #[error("building the dictionary matcher failed")]
    Build(#[source] aho_corasick::BuildError),
}

impl Dictionary {
    /// Compile `terms`. Each is trimmed; terms differing only in ASCII case
    /// count once.
    pub fn new<I, S>(terms: I) -> Result<Self, DictionaryError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut patterns = Vec::new();
        for (index, term) in terms.into_iter().enumerate() {
            let term = term.as_ref().trim();
            if term.is_empty() {
                return Err(DictionaryError::BlankTerm { index });
            }
            patterns.push(term.to_ascii_lowercase());
        }
        patterns.sort_unstable();
        patterns.dedup();
        let matcher = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .start_kind(StartKind::Both)
            .build(&patterns)
            .map_err(DictionaryError::Build)?;
        let mut short = Box::new([0u64; 1024]);
        let mut long = Box::new([0u64; 1024]);
        let mut first_bytes = [0u64; 4];
        for pattern in &patterns {
            let bytes = pattern.as_bytes();
            for b in [bytes[0], bytes[0].to_ascii_uppercase()] {
                first_bytes[usize::from(b) / 64] |= 1 << (b % 64);
            }
            if let Some(quad) = bytes.first_chunk::<4>() {
                set_bit(&mut long, quad_slot(u32::from_le_bytes(*quad)));
                continue;
            }
            let first = usize::from(bytes[0]) << 8;
            let seconds = match bytes.get(1) {
                Some(&b) => usize::from(b)..usize::from(b) + 1,
                None => 0..256,
            };
            for pair in seconds {
                set_bit(&mut short, first | pair);
            }
        }
        let first_nibbles = nibble_table(|b| first_bytes[usize::from(b) / 64] & (1 << (b % 64)) != 0);
        Ok(Dictionary {
            first_nibbles,
            matcher,
            len: patterns.len(),
            word_first: patterns.iter().all(|p| is_ascii_word_byte(p.as_bytes()[0])),
            short,
            long,
            first: first_bytes,
        })
    }

    /// Number of distinct terms.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Push a finding for every whole-word term occurrence in `text`.
    /// Terms are only probed (anchored) where one can begin: after a byte
    /// that is not an ASCII word byte, on first bytes some term has. Word
    /// starts are found eight bytes at a time; scanning the whole text with
    /// the automaton cost about twice as much.
    pub(crate) fn find(&self, text: &str, segment: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        // Start of the text not yet covered by an accepted term.
        let mut pos = 0;
        let mut probe = |start: usize| {
            if start < pos || !self.may_start(bytes, start) {
                return;
            }
            if let Some(end) = self.term_at(text, start) {
                out.push(finding(Category::Term, TERM_KIND, segment, start..end, 1.0, "dictionary"));
                pos = end;
            }
        };
        let (base, after_word) = self.starts_wide(bytes, &mut probe);
        // The text start counts as following a non-word byte.
        let mut carry = if after_word { 0 } else { 0x80 };
        let first_mask = if self.word_first { 0 } else { u64::MAX };
        let chunks = bytes[base..].chunks_exact(8);
        let tail = chunks.remainder();
        for (index, chunk) in chunks.enumerate() {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            let nonword = non_word_tops(u64::from_le_bytes(word));
            let mut starts = (nonword << 8 | carry) & (!nonword | first_mask);
            carry = nonword >> 56;
            while starts != 0 {
                let byte = starts.trailing_zeros() as usize / 8;
                starts &= starts - 1;
                probe(base + index * 8 + byte);
            }
        }
        let mut after_word = carry == 0;
        let tail_base = bytes.len() - tail.len();
        for (offset, &b) in tail.iter().enumerate() {
            if !after_word {
                probe(tail_base + offset);
            }
            after_word = is_ascii_word_byte(b);
        }
    }

    /// Word starts on a byte some term begins with (a superset: non-ASCII
    /// first bytes share bits with ASCII ones), 32 bytes at a time, each
    /// handed to `probe` in order. Returns where it stopped and whether
    /// the byte before that is a word byte.
    #[cfg(target_feature = "avx2")]
    fn starts_wide(&self, bytes: &[u8], probe: &mut impl FnMut(usize)) -> (usize, bool) {
        use std::arch::x86_64::*;
        let (word_lo, first_lo) = (WORD_NIBBLES, self.first_nibbles);
        let (ascii_hi, all_hi) = (ASCII_HIGH_NIBBLES, HIGH_NIBBLES);
        let mut at = 0;
        let mut carry = 1u32;
        // SAFETY: each 32-byte load lies within `bytes` (`at + 32 <=
        // bytes.len()`; unaligned loads are allowed), and the table loads
        // read 32-byte local arrays; avx2 is enabled for the whole build
        // (this fn's cfg).
        unsafe {
            // Both 128-bit lanes shuffle with the same 16-byte table.
            let load = |table: [u8; 16]| _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr().cast()));
            let (word_lo, first_lo) = (load(word_lo), load(first_lo));
            let (ascii_hi, all_hi) = (load(ascii_hi), load(all_hi));
            let low_nibbles = _mm256_set1_epi8(15);
            let zero = _mm256_setzero_si256();
            while at + 32 <= bytes.len() {
                let v = _mm256_loadu_si256(bytes.as_ptr().add(at).cast());
                let lo = _mm256_and_si256(v, low_nibbles);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low_nibbles);
                let word = _mm256_and_si256(_mm256_shuffle_epi8(word_lo, lo), _mm256_shuffle_epi8(ascii_hi, hi));
                let first = _mm256_and_si256(_mm256_shuffle_epi8(first_lo, lo), _mm256_shuffle_epi8(all_hi, hi));
                let nonword = _mm256_movemask_epi8(_mm256_cmpeq_epi8(word, zero)) as u32;
                let not_first = _mm256_movemask_epi8(_mm256_cmpeq_epi8(first, zero)) as u32;
                let mut starts = (nonword << 1 | carry) & !not_first;
                carry = nonword >> 31;
                while starts != 0 {
                    probe(at + starts.trailing_zeros() as usize);
                    starts &= starts - 1;
                }
                at += 32;
            }
        }
        (at, carry == 0)
    }

    #[cfg(not(target_feature = "avx2"))]
    fn starts_wide(&self, _: &[u8], _: &mut impl FnMut(usize)) -> (usize, bool) {
        (0, false)
    }

    /// End of the whole-word term accepted at `start`, if any.
    #[inline(never)]
    fn term_at(&self, text: &str, start: usize) -> Option<usize> {
        let input = Input::new(text).range(start..).anchored(Anchored::Yes);
        let m = self.matcher.find(input)?;
        self.whole_word_end(text, start, m.end())
    }

    /// Whether a term may begin at `pos` (false positives allowed).
    #[inline]
    fn may_start(&self, bytes: &[u8], pos: usize) -> bool {
        let rest = &bytes[pos..];
        // One lookup rejects most word starts before the hashing below.
        if self.first[usize::from(rest[0]) / 64] & (1 << (rest[0] % 64)) == 0 {
            return false;
        }
        let Some(quad) = rest.first_chunk::<4>() else {
            // Near the end only a term under four bytes fits; a one-byte
            // term's bits are set for every second byte, 0 included.
            let first = usize::from(rest[0].to_ascii_lowercase()) << 8;
            let second = rest.get(1).map_or(0, |b| b.to_ascii_lowercase());
            return has_bit(&self.short, first | usize::from(second));
        };
        let quad = ascii_lowercase_u32(u32::from_le_bytes(*quad));
        let pair = ((quad & 0xff) << 8 | (quad >> 8) & 0xff) as usize;
        has_bit(&self.long, quad_slot(quad)) | has_bit(&self.short, pair)
    }

    /// End of the longest term at `start` that is a whole word, given the
    /// longest term there ends at `end`. "acme corp" in "acme corporation"
    /// fails, but "acme" may then still match.
    fn whole_word_end(&self, text: &str, start: usize, mut end: usize) -> Option<usize> {
        if text[..start].chars().next_back().is_some_and(is_word_char) {
            return None;
        }
        loop {
            if !text[end..].chars().next().is_some_and(is_word_char) {
                return Some(end);
            }
            // The leftmost-longest match in start..end-1 is the next shorter
            // term at `start` if it starts there; if it starts later, no
            // shorter term is at `start`. (Unanchored keeps the automaton a
            // DFA for small dictionaries; anchored support would not.)
            let shorter = self.matcher.find(Input::new(text).range(start..end - 1))?;
            if shorter.start() != start {
                return None;
            }
            end = shorter.end();
        }
    }
}

/// Bit index (of 65,536) for four lowercase bytes (little-endian).
fn quad_slot(quad: u32) -> usize {
    (quad.wrapping_mul(0x9E37_79B1) >> 16) as usize
}

/// `to_ascii_lowercase` on each byte of `word`, without branches: a byte's
/// top bit in `upper` is set exactly when it is b'A'..=b'Z' (adding to the
/// low seven bits never carries into the next byte).
fn ascii_lowercase_u32(word: u32) -> u32 {
    const TOPS: u32 = 0x8080_8080;
    let low7 = word & !TOPS;
    let at_least_a = low7.wrapping_add(0x3f3f_3f3f);
    let above_z = low7.wrapping_add(0x2525_2525);
    let upper = at_least_a & !above_z & !word & TOPS;
    word | (upper >> 2)
}

fn set_bit(bits: &mut [u64; 1024], index: usize) {
    bits[index / 64] |= 1 << (index % 64);
}

fn has_bit(bits: &[u64; 1024], index: usize) -> bool {
    bits[index / 64] & (1 << (index % 64)) != 0
}

/// The top bit of each byte of `word` that is not an ASCII word byte
/// ([0-9A-Za-z_]); non-ASCII bytes count as non-word. Range tests as in
/// `ascii_lowercase_u32`, eight bytes at once.
fn non_word_tops(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    let low7 = word & !TOPS;
    let in_range = |v: u64, lo: u8, hi: u8| {
        let at_least = v + ONES * u64::from(0x80 - lo);
        let above = v + ONES * u64::from(0x80 - hi - 1);
        at_least & !above
    };
    let digit = in_range(low7, b'0', b'9');
    let letter = in_range(low7 | (ONES * 0x20), b'a', b'z');
    let underscore = in_range(low7, b'_', b'_');
    let ascii_word = (digit | letter | underscore) & !word & TOPS;
    !ascii_word & TOPS
}

/// A byte set as a table for nibble lookups: bit `h & 7` of entry `l` is
/// set when byte `h << 4 | l` is in the set. ANDed with [`HIGH_NIBBLES`]
/// looked up by the high nibble, a byte's result is nonzero when it is in
/// the set: exactly so for ASCII bytes, while non-ASCII bytes share bits
/// with ASCII ones (a superset, good enough for a filter). With
/// [`ASCII_HIGH_NIBBLES`] instead, non-ASCII bytes are never in the set.
fn nibble_table(member: impl Fn(u8) -> bool) -> [u8; 16] {
    let mut table = [0u8; 16];
    for b in 0..=255u8 {
        if member(b) {
            table[usize::from(b & 15)] |= 1 << ((b >> 4) & 7);
        }
    }
    table
}

#[cfg_attr(not(target_feature = "avx2"), allow(dead_code))]
const HIGH_NIBBLES: [u8; 16] = {
    let mut table = [0u8; 16];
    let mut h = 0;
    while h < 16 {
        table[h] = 1 << (h & 7);
        h += 1;
    }
    table
};

#[cfg_attr(not(target_feature = "avx2"), allow(dead_code))]
const ASCII_HIGH_NIBBLES: [u8; 16] = {
    let mut table = HIGH_NIBBLES;
    let mut h = 8;
    while h < 16 {
        table[h] = 0;
        h += 1;
    }
    table
};

/// ASCII word bytes as a nibble table; exact with [`ASCII_HIGH_NIBBLES`].
#[cfg_attr(not(target_feature = "avx2"), allow(dead_code))]
const WORD_NIBBLES: [u8; 16] = {
    let mut table = [0u8; 16];
    let mut b = 0;
    while b < 128 {
        if ASCII_WORD[b] {
            table[b & 15] |= 1 << (b >> 4);
        }
        b += 1;
    }
    table
};

fn is_ascii_word_byte(b: u8) -> bool {
    ASCII_WORD[usize::from(b)]
}

const ASCII_WORD: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric() || b == b'_' as usize;
        b += 1;
    }
    table
};

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;

    fn spans(dict: &Dictionary, text: &str) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        dict.find(text, 7, &mut out);
        for f in &out {
            assert_eq!((f.category, f.kind, f.validator), (Category::Term, TERM_KIND, "dictionary"));
            assert_eq!(f.segment, 7);
        }
        out.into_iter().map(|f| f.span).collect()
    }

    #[test]
    fn case_insensitive_whole_words() {
        let dict = Dictionary::new(["Falcon", "acme corp"]).unwrap();
        let text = "FALCON, falcon; Falcons falconry (Acme Corp) ACME CORP.";
        assert_eq!(spans(&dict, text), vec![0..6, 8..14, 34..43, 45..54]);
    }

    #[test]
    fn word_boundaries_reject_embedded_hits() {
        let dict = Dictionary::new(["data"]).unwrap();
        assert!(spans(&dict, "database big_data data2 metadata").is_empty());
        assert_eq!(spans(&dict, "data-lake /data/ \"data\""), vec![0..4, 11..15, 18..22]);
        // Non-ASCII letters are word characters too.
        assert_eq!(spans(&dict, "ädata dataé data"), vec![14..18]);
    }

    #[test]
    fn longest_term_wins_and_shorter_is_retried() {
        let dict = Dictionary::new(["acme", "acme corp", "corp"]).unwrap();
        assert_eq!(spans(&dict, "acme corp today"), vec![0..9]);
        // "acme corp" is not a whole word here, "acme" is; then "corp" is not.
        assert_eq!(spans(&dict, "acme corporation"), vec![0..4]);
        // The retry inside "acme cor" finds "cor" at 5, not a term at 0.
        let dict = Dictionary::new(["acme corp", "cor"]).unwrap();
        assert!(spans(&dict, "acme corporation").is_empty());
        assert_eq!(spans(&dict, "acme cor"), vec![5..8]);
    }

    #[test]
    fn terms_are_trimmed_and_deduplicated() {
        let dict = Dictionary::new(["  Orion ", "orion", "ORION", "Vega\t"]).unwrap();
        assert_eq!(dict.len(), 2);
        assert!(!dict.is_empty());
        assert_eq!(spans(&dict, "orion and vega"), vec![0..5, 10..14]);
    }

    #[test]
    fn blank_terms_are_rejected() {
        let err = Dictionary::new(["ok", "  "]).unwrap_err();
        assert!(matches!(err, DictionaryError::BlankTerm { index: 1 }), "{err:?}");
        assert!(matches!(Dictionary::new([""]), Err(DictionaryError::BlankTerm { index: 0 })));
    }

    #[test]
    fn empty_dictionary_finds_nothing() {
        let dict = Dictionary::new(Vec::<String>::new()).unwrap();
        assert!(dict.is_empty());
        assert!(spans(&dict, "anything at all").is_empty());
    }

    #[test]
    fn byte_tricks_match_per_byte_definitions() {
        for b in 0..=255u8 {
            let word = u64::from_le_bytes([b'x', b, b' ', b, 0xC3, b, b'_', b]);
            let tops = non_word_tops(word);
            for (i, &byte) in word.to_le_bytes().iter().enumerate() {
                assert_eq!(tops >> (i * 8 + 7) & 1 == 1, !is_ascii_word_byte(byte), "{byte}");
            }
            let quad = u32::from_le_bytes([b, b'Q', 0xC9, b]);
            let lower = [b, b'Q', 0xC9, b].map(|x| x.to_ascii_lowercase());
            assert_eq!(ascii_lowercase_u32(quad), u32::from_le_bytes(lower), "{b}");
        }
    }

    #[test]
    fn terms_found_at_every_offset_and_in_the_tail() {
        let dict = Dictionary::new(["ab", "x", "lynx wolf", "#tag"]).unwrap();
        for pad in 0..20 {
            let lead = " ".repeat(pad);
            let text = format!("{lead}Lynx WOLF x ab #tag xab");
            let at = |s: usize, e: usize| pad + s..pad + e;
            assert_eq!(spans(&dict, &text), vec![at(0, 9), at(10, 11), at(12, 14), at(15, 19)], "{text:?}");
        }
        let dict = Dictionary::new(["ab", "lynx"]).unwrap();
        assert_eq!(spans(&dict, "zzzzzzz ab"), vec![8..10]);
        assert_eq!(spans(&dict, "é lynx é ab"), vec![3..7, 11..13]);
    }
}
