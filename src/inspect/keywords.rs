//! Keyword gate: every occurrence of every detector keyword in a segment,
//! found with one cheap byte-pair test per position instead of an
//! Aho-Corasick pass.
//!
//! Each keyword is anchored on one of its byte pairs, the one least likely
//! in prompt text ("ku" in "heroku", "_a" in "api_key"). A 65,536-bit
//! table indexed by the case-folded pair says whether a pair anchors any
//! keyword; only then are the keywords anchored there compared, eight
//! bytes at a time. Most positions cost one table test and are done, which
//! is what makes this pass several times cheaper than an overlapping
//! automaton over ~150 case-insensitive words. With AVX2 the table is
//! tested for eight positions per gather, about three times cheaper than
//! one position at a time.

use std::cmp::Reverse;

/// Words of the pair table: one bit per folded byte pair.
const PAIR_WORDS: usize = (1 << 16) / 64;

/// Fold a byte for the pair table: ASCII letters lose their case. Other
/// bytes merge with the byte 0x20 away ('_' with DEL, '\r' with '-'), which
/// only costs the odd extra comparison.
#[inline(always)]
fn fold(b: u8) -> u8 {
    b | 0x20
}

/// Index of the pair `a`, `b` in the pair table, `a` in the low half as in
/// a little-endian load of the two bytes.
#[inline(always)]
fn pair_key(a: u8, b: u8) -> usize {
    usize::from(u16::from_le_bytes([fold(a), fold(b)]))
}

/// One keyword anchored on the byte pair at `offset`, with its first eight
/// bytes ready for a one-load comparison.
#[derive(Clone, Copy)]
struct Anchor {
    /// The first (up to) eight bytes of the keyword, lowercase, as a
    /// little-endian word; zero past its end.
    head: u64,
    /// 0x20 in each byte of `head` that is an ASCII letter: OR-ing it into
    /// the text's bytes folds exactly those to lowercase.
    letters: u64,
    /// 0xFF in each byte of `head` the keyword covers.
    mask: u64,
    word: u16,
    offset: u8,
}

/// All occurrences of a fixed set of lowercase keywords, matched ASCII
/// case-insensitively and overlapping (as `find_overlapping_iter` would).
pub(crate) struct KeywordGate {
    words: Vec<&'static str>,
    /// Bit `pair_key(a, b)` set when some keyword is anchored on `a`, `b`.
    pairs: Box<[u64; PAIR_WORDS]>,
    /// Set bits in `pairs` before each word: with a popcount within the
    /// word, the rank of a set pair, which indexes `groups`.
    ranks: Box<[u16; PAIR_WORDS]>,
    /// `anchors[groups[r]..groups[r + 1]]` share the pair of rank `r`.
    groups: Vec<u16>,
    /// Sorted by pair key.
    anchors: Vec<Anchor>,
}

impl KeywordGate {
    /// `words` must be lowercase and at least two bytes long (checked by
    /// the tests over all built-in keywords); a shorter word is never
    /// reported.
    pub(crate) fn new(words: Vec<&'static str>) -> Self {
        let mut keyed: Vec<(usize, Anchor)> = Vec::with_capacity(words.len());
        for (index, word) in words.iter().enumerate() {
            let w = word.as_bytes();
            let cost = |k: usize| pair_cost(w[k], w[k + 1]);
            let Some(offset) = (0..w.len().saturating_sub(1)).min_by_key(|&k| cost(k)) else {
                continue;
            };
            let (mut head, mut letters, mut mask) = ([0u8; 8], [0u8; 8], [0u8; 8]);
            for (k, &b) in w.iter().take(8).enumerate() {
                head[k] = b.to_ascii_lowercase();
                letters[k] = if b.is_ascii_alphabetic() { 0x20 } else { 0 };
                mask[k] = 0xFF;
            }
            let anchor = Anchor {
                head: u64::from_le_bytes(head),
                letters: u64::from_le_bytes(letters),
                mask: u64::from_le_bytes(mask),
                // Detector keywords number in the hundreds at most.
                word: u16::try_from(index).unwrap_or(u16::MAX),
                offset: u8::try_from(offset).unwrap_or(u8::MAX),
            };
            keyed.push((pair_key(w[offset], w[offset + 1]), anchor));
        }
        keyed.sort_by_key(|&(key, anchor)| (key, anchor.word));
        let mut pairs = Box::new([0u64; PAIR_WORDS]);
        let mut groups = Vec::new();
        for (n, &(key, _)) in keyed.iter().enumerate() {
            if pairs[key / 64] & (1 << (key % 64)) == 0 {
                pairs[key / 64] |= 1 << (key % 64);
                groups.push(u16::try_from(n).unwrap_or(u16::MAX));
            }
        }
        groups.push(u16::try_from(keyed.len()).unwrap_or(u16::MAX));
        let mut ranks = Box::new([0u16; PAIR_WORDS]);
        let mut seen = 0u16;
        for (rank, bits) in ranks.iter_mut().zip(pairs.iter()) {
            *rank = seen;
            // At most one set bit per keyword, so this stays small.
            seen = seen.saturating_add(bits.count_ones() as u16);
        }
        KeywordGate { words, pairs, ranks, groups, anchors: keyed.into_iter().map(|(_, anchor)| anchor).collect() }
    }

    pub(crate) fn words(&self) -> &[&'static str] {
        &self.words
    }

    /// Push (word index, end offset) of every keyword occurrence in `text`
    /// onto `hits`, ordered by end, longer words first at the same end.
    pub(crate) fn find(&self, text: &[u8], hits: &mut Vec<(usize, usize)>) {
        let first = hits.len();
        let done = self.find_wide(text, hits);
        self.find_narrow(text, done, hits);
        hits[first..].sort_unstable_by_key(|&(word, end)| (end, Reverse(self.words[word].len())));
    }

    /// The table test for 32 positions at a time (eight per gather from
    /// the pair table), while 33 bytes remain; returns where it stopped.
    #[cfg(target_feature = "avx2")]
    fn find_wide(&self, text: &[u8], hits: &mut Vec<(usize, usize)>) -> usize {
        use std::arch::x86_64::*;
        let mut at = 0;
        while at + 33 <= text.len() {
            let mut mask = 0u32;
            for part in 0..4 {
                let p = at + part * 8;
                // SAFETY: `p + 1 + 8 <= at + 33 <= text.len()`, so both
                // eight-byte loads stay inside `text` (unaligned loads are
                // allowed); every key is at most 0xFFFF, so `key >> 5`
                // indexes one of the table's 2,048 u32 halves; avx2 is
                // enabled for the whole build (this fn's cfg).
                let bits = unsafe {
                    let ptr = text.as_ptr().add(p);
                    let a = _mm256_cvtepu8_epi32(_mm_loadl_epi64(ptr.cast()));
                    let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(ptr.add(1).cast()));
                    let key = _mm256_or_si256(_mm256_or_si256(a, _mm256_slli_epi32::<8>(b)), _mm256_set1_epi32(0x2020));
                    let words = _mm256_i32gather_epi32::<4>(self.pairs.as_ptr().cast(), _mm256_srli_epi32::<5>(key));
                    // Move each lane's bit to its top, where movemask reads.
                    let shift = _mm256_sub_epi32(_mm256_set1_epi32(31), _mm256_and_si256(key, _mm256_set1_epi32(31)));
                    _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_sllv_epi32(words, shift)))
                };
                mask |= (bits as u32) << (part * 8);
            }
            while mask != 0 {
                self.verify(text, at + mask.trailing_zeros() as usize, hits);
                mask &= mask - 1;
            }
            at += 32;
        }
        at
    }

    #[cfg(not(target_feature = "avx2"))]
    fn find_wide(&self, _: &[u8], _: &mut Vec<(usize, usize)>) -> usize {
        0
    }

    /// The table test one position at a time, from `from` on.
    fn find_narrow(&self, text: &[u8], from: usize, hits: &mut Vec<(usize, usize)>) {
        // Positions are gathered a block at a time without branching, then
        // checked: a test-and-branch per position mispredicts on every
        // anchor pair, and those are common enough (a few percent of
        // positions) for that to dominate the pass.
        const BLOCK: usize = 256;
        let mut candidates = [0u32; BLOCK];
        let last = text.len().saturating_sub(1);
        let mut block_start = from;
        while block_start < last {
            let block_end = (block_start + BLOCK).min(last);
            let mut found = 0;
            for (i, pair) in text[block_start..=block_end].windows(2).enumerate() {
                // `i` < BLOCK, so it fits; `found` <= `i`, so the mask
                // changes nothing and spares a bounds check.
                candidates[found % BLOCK] = i as u32;
                let key = pair_key(pair[0], pair[1]);
                found += ((self.pairs[key / 64] >> (key % 64)) & 1) as usize;
            }
            for &i in &candidates[..found] {
                self.verify(text, block_start + i as usize, hits);
            }
            block_start = block_end;
        }
    }

    /// Compare every keyword anchored on the (table-listed) pair at `i`.
    #[inline(always)]
    fn verify(&self, text: &[u8], i: usize, hits: &mut Vec<(usize, usize)>) {
        let key = pair_key(text[i], text[i + 1]);
        let bits = self.pairs[key / 64];
        let rank = usize::from(self.ranks[key / 64]) + (bits & ((1u64 << (key % 64)) - 1)).count_ones() as usize;
        let group = usize::from(self.groups[rank])..usize::from(self.groups[rank + 1]);
        for anchor in &self.anchors[group] {
            let Some(start) = i.checked_sub(usize::from(anchor.offset)) else {
                continue;
            };
            let word = self.words[usize::from(anchor.word)].as_bytes();
            let end = start + word.len();
            let matched = match text.get(start..start + 8) {
                Some(head) => {
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(head);
                    let head = (u64::from_le_bytes(bytes) | anchor.letters) & anchor.mask;
                    head == anchor.head
                        && (word.len() <= 8
                            || text.get(start + 8..end).is_some_and(|rest| rest.eq_ignore_ascii_case(&word[8..])))
                }
                None => text.get(start..end).is_some_and(|bytes| bytes.eq_ignore_ascii_case(word)),
            };
            if matched {
                hits.push((usize::from(anchor.word), end));
            }
        }
    }
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
    const LETTERS: [u32; 26] =
        [82, 15, 28, 43, 127, 22, 20, 61, 70, 2, 8, 40, 24, 67, 75, 19, 1, 60, 63, 91, 28, 10, 24, 2, 20, 1];
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
        let ac =
            AhoCorasick::builder().ascii_case_insensitive(true).match_kind(MatchKind::Standard).build(words).unwrap();
        ac.find_overlapping_iter(text).map(|m| (m.pattern().as_usize(), m.end())).collect()
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
            for _ in 0..(x % 160) {
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
        assert_eq!(gate.anchors[0].offset, 4);
        let key = pair_key(b'K', b'u');
        assert!(gate.pairs[key / 64] & (1 << (key % 64)) != 0);
        // "ku" ends the word, so "roku" confirms it.
        let mut hits = Vec::new();
        gate.find(b"Heroku heroKU herxku", &mut hits);
        assert_eq!(hits, vec![(0, 6), (0, 13)]);
        assert!(pair_cost(b't', b'h') > pair_cost(b'k', b'u'));
    }
}
