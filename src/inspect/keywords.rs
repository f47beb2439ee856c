//! Keyword gate: every occurrence of every detector keyword in a segment,
//! found with one cheap byte-pair test per position instead of an
//! Aho-Corasick pass.
//!
//! Each keyword is anchored on one of its byte pairs, the one least likely
//! in prompt text ("ku" in "heroku", "_a" in "api_key"). A 65,536-bit
//! table, which fits in L1, says whether a pair anchors any keyword; only
//! then is the keyword compared. Most positions cost one table test and
//! are done, which is what makes this pass several times cheaper than an
//! overlapping automaton over ~150 case-insensitive words.

use std::cmp::Reverse;

/// Bits of a pair table: one per pair of byte classes (see [`CLASSES`]).
const PAIRS: usize = 64 * 64;
/// Bits of the confirming-window table. Small tables matter more than
/// few collisions: the pass must not lose them from L1 between scans.
const WINDOWS: usize = 1 << 12;

/// Byte classes for the pair table: each ASCII letter (either case), each
/// digit and the punctuation keywords use have a class of their own; all
/// other bytes share class 0 and all non-ASCII bytes class 63. Pairs of
/// classes, not of bytes, keep the table at 512 bytes.
const CLASSES: [u8; 256] = {
    let mut classes = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        classes[b] = match byte {
            b'a'..=b'z' => byte - b'a' + 1,
            b'A'..=b'Z' => byte - b'A' + 1,
            b'0'..=b'9' => byte - b'0' + 27,
            0x80..=0xFF => 63,
            _ => {
                const PUNCTUATION: &[u8] = b"_-.:/ =[](){}<>~#'\",;@$";
                let mut class = 0;
                let mut i = 0;
                while i < PUNCTUATION.len() {
                    if PUNCTUATION[i] == byte {
                        class = 37 + i as u8;
                    }
                    i += 1;
                }
                class
            }
        };
        b += 1;
    }
    classes
};

/// One keyword anchored on the byte pair at `offset`.
#[derive(Clone, Copy)]
struct Anchor {
    /// Lowercase pair value (first byte in the low half).
    pair: u16,
    word: u16,
    offset: u8,
}

/// Index of the byte pair `a`, `b` in a pair table.
#[inline(always)]
fn pair_index(a: u8, b: u8) -> usize {
    usize::from(CLASSES[usize::from(a)]) << 6 | usize::from(CLASSES[usize::from(b)])
}

/// A set of byte pairs, case-insensitive (and, for bytes sharing a class,
/// a little wider).
struct PairSet([u64; PAIRS / 64]);

impl PairSet {
    fn new() -> Self {
        PairSet([0; PAIRS / 64])
    }

    fn insert(&mut self, a: u8, b: u8) {
        let p = pair_index(a, b);
        self.0[p / 64] |= 1 << (p % 64);
    }

    #[inline(always)]
    fn contains(&self, a: u8, b: u8) -> bool {
        let p = pair_index(a, b);
        self.0[p / 64] & (1 << (p % 64)) != 0
    }

    /// Whether the pair starting at `text[i]` is in the set; false when
    /// `i` is not followed by a byte.
    #[inline(always)]
    fn contains_at(&self, text: &[u8], i: usize) -> bool {
        match text.get(i..i + 2) {
            Some(&[a, b]) => self.contains(a, b),
            _ => false,
        }
    }
}

/// All occurrences of a fixed set of lowercase keywords, matched ASCII
/// case-insensitively and overlapping (as `find_overlapping_iter` would).
///
/// A keyword of three or more bytes is anchored on a pair and confirmed by
/// a hash of the three or four bytes around it (anchor first, or anchor
/// last when it ends the keyword), so a common pair costs a comparison
/// only where the bytes around it fit too. Two-byte keywords are compared
/// wherever their pair occurs.
pub(crate) struct KeywordGate {
    words: Vec<&'static str>,
    /// Pairs that anchor some keyword.
    anchor_pairs: PairSet,
    /// Anchor pairs of two-byte keywords, which need no confirmation.
    unconfirmed: PairSet,
    /// Bit `window_hash(...)` set for every keyword's confirming window.
    windows: [u64; WINDOWS / 64],
    /// Sorted by `pair`, so the anchors of one pair are adjacent.
    anchors: Vec<Anchor>,
}

/// Where a keyword's confirming window lies relative to its anchor pair.
#[derive(Clone, Copy)]
enum Window {
    /// Bytes `anchor..anchor + len`.
    After(usize),
    /// Bytes `anchor + 2 - len..anchor + 2`.
    Before(usize),
}

impl KeywordGate {
    /// `words` must be lowercase and at least two bytes long (checked by
    /// the tests over all built-in keywords); a shorter word is never
    /// reported.
    pub(crate) fn new(words: Vec<&'static str>) -> Self {
        let mut gate = KeywordGate {
            words: Vec::new(),
            anchor_pairs: PairSet::new(),
            unconfirmed: PairSet::new(),
            windows: [0; WINDOWS / 64],
            anchors: Vec::with_capacity(words.len()),
        };
        for (index, word) in words.iter().enumerate() {
            let w = word.as_bytes();
            let cost = |k: usize| pair_cost(w[k], w[k + 1]);
            let Some(offset) = (0..w.len().saturating_sub(1)).min_by_key(|&k| cost(k)) else {
                continue;
            };
            gate.anchor_pairs.insert(w[offset], w[offset + 1]);
            // The widest window that fits: four bytes from or up to the
            // anchor pair, else three.
            let window = if w.len() == 2 {
                None
            } else if offset + 4 <= w.len() {
                Some(&w[offset..offset + 4])
            } else if offset >= 2 {
                Some(&w[offset - 2..offset + 2])
            } else if offset + 3 <= w.len() {
                Some(&w[offset..offset + 3])
            } else {
                Some(&w[offset - 1..offset + 2])
            };
            match window {
                Some(bytes) => {
                    let h = window_hash(bytes);
                    gate.windows[h / 64] |= 1 << (h % 64);
                }
                None => gate.unconfirmed.insert(w[offset], w[offset + 1]),
            }
            gate.anchors.push(Anchor {
                pair: pair_value(w[offset], w[offset + 1]),
                // Detector keywords number in the hundreds at most.
                word: u16::try_from(index).unwrap_or(u16::MAX),
                offset: u8::try_from(offset).unwrap_or(u8::MAX),
            });
        }
        gate.anchors.sort_by_key(|a| a.pair);
        gate.words = words;
        gate
    }

    pub(crate) fn words(&self) -> &[&'static str] {
        &self.words
    }

    /// Push (word index, end offset) of every keyword occurrence in `text`
    /// onto `hits`, ordered by end, longer words first at the same end.
    pub(crate) fn find(&self, text: &[u8], hits: &mut Vec<(usize, usize)>) {
        let first = hits.len();
        // Positions are gathered a block at a time without branching, then
        // checked: a test-and-branch per position mispredicts on every
        // anchor pair, and those are common enough (a few percent of
        // positions) for that to dominate the pass.
        const BLOCK: usize = 256;
        let mut candidates = [0usize; BLOCK];
        let last = text.len().saturating_sub(1);
        let mut block_start = 0;
        while block_start < last {
            let block_end = (block_start + BLOCK).min(last);
            let mut found = 0;
            for (i, pair) in text[block_start..=block_end].windows(2).enumerate() {
                candidates[found] = block_start + i;
                found += usize::from(self.anchor_pairs.contains(pair[0], pair[1]));
            }
            for &i in &candidates[..found] {
                if self.confirmed(text, i) {
                    self.verify(text, i, hits);
                }
            }
            block_start = block_end;
        }
        hits[first..].sort_unstable_by_key(|&(word, end)| (end, Reverse(self.words[word].len())));
    }

    /// Whether a keyword anchored at `i` can be there at all: a two-byte
    /// keyword, or a confirming window of three or four bytes.
    #[inline(never)]
    fn confirmed(&self, text: &[u8], i: usize) -> bool {
        let window = |w: Window| {
            let range = match w {
                Window::After(len) => i..i + len,
                Window::Before(len) => (i + 2).checked_sub(len).unwrap_or(usize::MAX)..i + 2,
            };
            text.get(range).is_some_and(|bytes| {
                let h = window_hash(bytes);
                self.windows[h / 64] & (1 << (h % 64)) != 0
            })
        };
        self.unconfirmed.contains_at(text, i)
            || window(Window::After(4))
            || window(Window::After(3))
            || window(Window::Before(4))
            || window(Window::Before(3))
    }

    /// Compare every keyword anchored on the pair at `i`.
    #[cold]
    fn verify(&self, text: &[u8], i: usize, hits: &mut Vec<(usize, usize)>) {
        let pair = pair_value(
            text[i].to_ascii_lowercase(),
            text[i + 1].to_ascii_lowercase(),
        );
        let from = self.anchors.partition_point(|a| a.pair < pair);
        for anchor in self.anchors[from..].iter().take_while(|a| a.pair == pair) {
            let word = self.words[usize::from(anchor.word)].as_bytes();
            let Some(start) = i.checked_sub(usize::from(anchor.offset)) else {
                continue;
            };
            let end = start + word.len();
            if end <= text.len() && text[start..end].eq_ignore_ascii_case(word) {
                hits.push((usize::from(anchor.word), end));
            }
        }
    }
}

/// 12-bit hash of three or four bytes, ASCII letters in either case
/// alike. Setting bit 5 of every byte folds case; it also merges a few
/// punctuation bytes with others ('_' with DEL, '[' with '{'), which only
/// costs the odd extra comparison.
fn window_hash(bytes: &[u8]) -> usize {
    let mut b = [0u8; 4];
    for (slot, &byte) in b.iter_mut().zip(bytes) {
        *slot = byte | 0x20;
    }
    // Three-byte windows hash apart from four-byte ones ending in NUL.
    let x = u32::from_le_bytes(b) ^ if bytes.len() == 3 { 0xFF00_0000 } else { 0 };
    (x.wrapping_mul(0x9E37_79B1) >> 20) as usize
}

fn pair_value(a: u8, b: u8) -> u16 {
    u16::from_le_bytes([a, b])
}

/// How often a byte pair turns up in prompt text, roughly; only the order
/// matters (it picks each keyword's anchor). Pairs among the 256 commonest
/// (lowercased, counted over English prose, Rust and Python source and
/// JSON test data) rank by that count; any other pair costs the product
/// of its two bytes' frequencies, which is always less.
fn pair_cost(a: u8, b: u8) -> u32 {
    const COMMONEST: &str = concat!(
        "  tee , re\n  \" ter: esthstheenineds \": a//exle iont ec sseanatoritpectn d coart_ti c",
        "\"tisd_xpde\"ealr  m ongndray  r b w felsiio /tomeasneilo / \",nshas\" ln\"gecaountamet",
        "f lllifimave ppopa 1a  nce. n_ e_f droni [--chnalo_leaos hg fotrur_psswhritarse_unachi",
        "og {{\"beeeusof_r_s= nolal icso = u}}lfsuap],plrtxt:\nr.}\nh om.\n)\n0,\n\nizegzeifrnnc",
        "ut `diul 0 ghoot]]e\"1,_t[[ad_ituodscrdfn\"\"ms_aldim.ps_wiaygnmpid ymockpyemptf.t\"rr",
        "m \"pttke\n{pr_wy\"efsp[0()butc;\nuel_daoce\nwamylyi ``d\"::ow viemicctys.yovacrucol/\n",
        "aievrye,ciweabum_n",
    );
    let pair = [a.to_ascii_lowercase(), b.to_ascii_lowercase()];
    let common = COMMONEST.as_bytes().chunks_exact(2).position(|c| c == pair);
    match common {
        Some(rank) => 1_000_000 - rank as u32 * 1_000,
        None => byte_frequency(pair[0]) * byte_frequency(pair[1]),
    }
}

/// Per-mille frequency of a byte in English prose mixed with code.
fn byte_frequency(b: u8) -> u32 {
    const LETTERS: [u32; 26] = [
        82, 15, 28, 43, 127, 22, 20, 61, 70, 2, 8, 40, 24, 67, 75, 19, 1, 60, 63, 91, 28, 10, 24,
        2, 20, 1,
    ];
    match b {
        b'a'..=b'z' => LETTERS[usize::from(b - b'a')],
        b' ' => 180,
        b'0'..=b'9' => 15,
        b'"' | b'.' | b',' => 15,
        b'_' | b'-' | b':' | b'/' | b'=' => 8,
        0x80.. => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aho_corasick::{AhoCorasick, MatchKind};

    const WORDS: &[&str] = &[
        "token",
        "access_token",
        "auth_token",
        "sk",
        "sk-",
        "sk-ant-",
        "heroku",
        " dot ",
        "né le",
        "führerschein",
        "://",
        "q~",
    ];

    /// The gate must report what an overlapping, ASCII case-insensitive
    /// Aho-Corasick search reports, in the same order.
    fn reference(words: &[&'static str], text: &str) -> Vec<(usize, usize)> {
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(words)
            .unwrap();
        ac.find_overlapping_iter(text)
            .map(|m| (m.pattern().as_usize(), m.end()))
            .collect()
    }

    fn gate_hits(gate: &KeywordGate, text: &str) -> Vec<(usize, usize)> {
        let mut hits = Vec::new();
        gate.find(text.as_bytes(), &mut hits);
        hits
    }

    #[test]
    fn matches_overlapping_aho_corasick() {
        let gate = KeywordGate::new(WORDS.to_vec());
        for text in [
            "ACCESS_TOKEN=x auth_token: y Token",
            "sk-ant-api03 and sk-proj, task, SK",
            "Heroku! heroku. HEROKUheroku",
            "mail bob dot smith at example dot com",
            "née le 3 mars; Führerschein FÜHRERSCHEIN",
            "postgres://u:p@h abc8Q~x",
            "sk",
            "s",
            "",
            "tokentokentoken",
        ] {
            assert_eq!(gate_hits(&gate, text), reference(WORDS, text), "{text}");
        }
    }

    #[test]
    fn pseudo_random_texts_match_the_reference() {
        let gate = KeywordGate::new(WORDS.to_vec());
        let alphabet = b"skSK-_anteoThrku: ~qQd/\xc3\xa9";
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..2000 {
            let mut text = Vec::new();
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let text = String::from_utf8_lossy(&text).into_owned();
            assert_eq!(gate_hits(&gate, &text), reference(WORDS, &text), "{text:?}");
        }
    }

    #[test]
    fn anchors_avoid_common_pairs() {
        let gate = KeywordGate::new(vec!["heroku"]);
        assert_eq!(gate.anchors.len(), 1);
        assert_eq!(gate.anchors[0].pair, pair_value(b'k', b'u'));
        // "ku" ends the word, so "roku" confirms it.
        let mut hits = Vec::new();
        gate.find(b"Heroku heroKU herxku", &mut hits);
        assert_eq!(hits, vec![(0, 6), (0, 13)]);
        assert!(pair_cost(b't', b'h') > pair_cost(b'k', b'u'));
    }
}
