//! Feature extraction for the task classifier: turns a prompt into hashed
//! feature buckets without allocating.
//!
//! This file has no dependency on the rest of the crate on purpose:
//! `examples/train_tasks.rs` includes it by `#[path]`, so training and
//! inference hash exactly the same features.
//!
//! Two groups of features are emitted:
//! - text features (word unigrams, 5-byte word stems, bigrams, symbols, first
//!   word of a line). Their sum is divided by the square root of their count,
//!   so long prompts do not get larger logits than short ones.
//! - edge and shape features: the opening and closing words of the prompt
//!   (where the instruction usually is), length, line count, code fences, an
//!   unfinished code stub, digits, multiple-choice lines, non-Latin script.
//!   Each counts 1 and is not normalised, so the instruction is not drowned
//!   by a long pasted document.

/// log2 of the number of hash buckets.
const BUCKET_BITS: u32 = 15;
/// Number of hash buckets.
pub const BUCKETS: usize = 1 << BUCKET_BITS;

/// Only this many bytes from the start of a prompt are read ...
const HEAD_BYTES: usize = 2048;
/// ... plus this many from its end, so cost is bounded for huge prompts while
/// an instruction placed after a pasted document is still seen.
const TAIL_BYTES: usize = 1024;

/// Words tagged as "opening" / "closing" words of the prompt.
const EDGE_WORDS: usize = 8;

/// Per-kind seeds, so "summarize" as a unigram and as an opening word land in
/// different buckets.
const K_WORD: u64 = 0x9e37_79b9_7f4a_7c15;
const K_BIGRAM: u64 = 0xc2b2_ae3d_27d4_eb4f;
const K_SYMBOL: u64 = 0x1656_67b1_9e37_79f9;
const K_OPEN: u64 = 0x27d4_eb2f_1656_67c5;
const K_CLOSE: u64 = 0x94d0_49bb_1331_11eb;
const K_LINE: u64 = 0xbf58_476d_1ce4_e5b9;
const K_FIRST: u64 = 0x2545_f491_4f6c_dd1d;
const K_SHAPE: u64 = 0xd6e8_feb8_6659_fd93;
const K_STEM: u64 = 0x6a09_e667_f3bc_c909;

/// Words longer than this also emit their first STEM_LEN bytes, so
/// "summarize", "summarise" and "summary" share a feature.
const STEM_LEN: usize = 5;

/// Receives the features of one prompt.
pub trait Sink {
    /// One text feature (normalised later by the square root of the count).
    fn text(&mut self, bucket: usize);
    /// One edge or shape feature (weight 1).
    fn shape(&mut self, bucket: usize);
}

/// Emits every feature of `text` into `sink`.
pub fn extract<S: Sink>(text: &str, sink: &mut S) {
    let bytes = text.as_bytes();
    let (head, tail) = regions(bytes);
    let mut state = TokenState::default();
    scan(head, sink, &mut state);
    if let Some(tail) = tail {
        // A break so no bigram spans the cut.
        state.prev_word = None;
        state.at_line_start = true;
        scan(tail, sink, &mut state);
    }
    for &h in state.closing.iter().take(state.closing_len.min(EDGE_WORDS)) {
        sink.shape(bucket(mix(h ^ K_CLOSE)));
    }
    if let Some(last) = state.last_word {
        sink.shape(bucket(mix(last ^ K_CLOSE ^ K_FIRST)));
    }
    shape_features(text, head, tail, &state, sink);
}

/// The parts of the prompt that are read: the head, and the tail when the
/// prompt is longer than both together. Cuts fall on byte offsets; a split
/// UTF-8 sequence only yields one odd "word", which is harmless.
fn regions(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    if bytes.len() <= HEAD_BYTES + TAIL_BYTES {
        (bytes, None)
    } else {
        (&bytes[..HEAD_BYTES], Some(&bytes[bytes.len() - TAIL_BYTES..]))
    }
}

#[derive(Default)]
struct TokenState {
    prev_word: Option<u64>,
    last_word: Option<u64>,
    words_seen: usize,
    at_line_start: bool,
    /// Ring buffer of the last EDGE_WORDS word hashes.
    closing: [u64; EDGE_WORDS],
    closing_len: usize,
    closing_pos: usize,
    lines: usize,
    code_lines: usize,
    choice_lines: usize,
    digits: usize,
    numbers: usize,
    non_ascii: usize,
    cjk_or_cyrillic: usize,
    ops: usize,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

fn scan<S: Sink>(bytes: &[u8], sink: &mut S, st: &mut TokenState) {
    if st.words_seen == 0 && st.lines == 0 {
        st.at_line_start = true;
    }
    let mut i = 0;
    let mut line_start_idx = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            line_stats(&bytes[line_start_idx..i], st);
            line_start_idx = i + 1;
            st.at_line_start = true;
            i += 1;
            continue;
        }
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if is_word_byte(b) {
            let start = i;
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            let mut stem = 0;
            let mut all_digits = true;
            while i < bytes.len() && is_word_byte(bytes[i]) {
                let c = bytes[i];
                if !c.is_ascii_digit() {
                    all_digits = false;
                }
                h = (h ^ u64::from(c.to_ascii_lowercase())).wrapping_mul(0x100_0000_01b3);
                i += 1;
                if i - start == STEM_LEN {
                    stem = h;
                }
            }
            let word = &bytes[start..i];
            if all_digits {
                st.numbers += 1;
                st.digits += word.len();
                // Numbers themselves carry little; their length does.
                h = 0x4e55_4d00 + word.len().min(6) as u64;
            }
            for &c in word {
                if c >= 0x80 {
                    st.non_ascii += 1;
                    // Lead bytes of CJK (0xE3-0xE9) and Cyrillic (0xD0-0xD1).
                    if (0xe3..=0xe9).contains(&c) || c == 0xd0 || c == 0xd1 {
                        st.cjk_or_cyrillic += 1;
                    }
                }
            }
            if !all_digits && word.len() > STEM_LEN {
                sink.text(bucket(mix(stem ^ K_STEM)));
                if st.words_seen < EDGE_WORDS {
                    sink.shape(bucket(mix(stem ^ K_STEM ^ K_OPEN)));
                }
            }
            emit_word(h, sink, st);
            continue;
        }
        // A symbol: one token per byte, kept out of bigrams so code and prose
        // share word bigrams.
        if matches!(b, b'=' | b'+' | b'*' | b'/' | b'^' | b'<' | b'>') {
            st.ops += 1;
        }
        let h = u64::from(b);
        sink.text(bucket(mix(h ^ K_SYMBOL)));
        if st.at_line_start {
            sink.text(bucket(mix(h ^ K_SYMBOL ^ K_LINE)));
            st.at_line_start = false;
        }
        i += 1;
    }
    line_stats(&bytes[line_start_idx..], st);
}

fn emit_word<S: Sink>(h: u64, sink: &mut S, st: &mut TokenState) {
    sink.text(bucket(mix(h ^ K_WORD)));
    if let Some(p) = st.prev_word {
        sink.text(bucket(mix(p.rotate_left(23) ^ h ^ K_BIGRAM)));
    }
    if st.words_seen < EDGE_WORDS {
        sink.shape(bucket(mix(h ^ K_OPEN)));
        if st.words_seen == 0 {
            sink.shape(bucket(mix(h ^ K_OPEN ^ K_FIRST)));
        }
        if st.words_seen == 1 {
            if let Some(p) = st.prev_word {
                sink.shape(bucket(mix(p.rotate_left(23) ^ h ^ K_OPEN ^ K_BIGRAM)));
            }
        }
    }
    if st.at_line_start {
        sink.text(bucket(mix(h ^ K_LINE)));
        st.at_line_start = false;
    }
    st.closing[st.closing_pos] = h;
    st.closing_pos = (st.closing_pos + 1) % EDGE_WORDS;
    st.closing_len += 1;
    st.prev_word = Some(h);
    st.last_word = Some(h);
    st.words_seen += 1;
}

/// Counts lines that look like code or like multiple-choice options.
fn line_stats(line: &[u8], st: &mut TokenState) {
    let trimmed_end = trim_end(line);
    if trimmed_end.is_empty() {
        return;
    }
    st.lines += 1;
    let indented = line.starts_with(b"    ") || line.starts_with(b"\t");
    let last = trimmed_end[trimmed_end.len() - 1];
    if indented || matches!(last, b';' | b'{' | b'}' | b')') {
        st.code_lines += 1;
    }
    let t = trim_start(trimmed_end);
    if t.len() >= 2 && (b'A'..=b'E').contains(&t[0]) && matches!(t[1], b'.' | b')' | b':') {
        st.choice_lines += 1;
    }
}

fn trim_end(s: &[u8]) -> &[u8] {
    let mut end = s.len();
    while end > 0 && s[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    &s[..end]
}

fn trim_start(s: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < s.len() && s[start].is_ascii_whitespace() {
        start += 1;
    }
    &s[start..]
}

fn shape_features<S: Sink>(text: &str, head: &[u8], tail: Option<&[u8]>, st: &TokenState, sink: &mut S) {
    let mut shape = |name: u64, value: u64| sink.shape(bucket(mix(K_SHAPE ^ name ^ (value << 8))));
    shape(1, log2_bucket(text.len()));
    shape(2, log2_bucket(st.lines));
    let read = tail.map_or(head.len(), |t| head.len() + t.len()).max(1);
    let code_ratio = st.code_lines * 4 / st.lines.max(1);
    shape(3, code_ratio as u64);
    if contains(head, b"```") || tail.is_some_and(|t| contains(t, b"```")) {
        shape(4, 1);
    }
    let end = trim_end(tail.unwrap_or(head));
    if ends_like_open_code(end) {
        shape(5, 1);
    }
    shape(6, (st.digits * 20 / read).min(4) as u64);
    shape(7, log2_bucket(st.numbers).min(6));
    if st.choice_lines >= 3 {
        shape(8, 1);
    }
    shape(9, (st.non_ascii * 10 / read).min(5) as u64);
    if st.cjk_or_cyrillic > 0 {
        shape(10, 1);
    }
    if end.last() == Some(&b'?') {
        shape(11, 1);
    }
    shape(12, log2_bucket(st.ops).min(6));
    if shape_has_colon_then_body(head) {
        shape(13, 1);
    }
    // A bias-like feature so shape weights have a common reference.
    shape(0, 0);
}

/// A prompt that stops where a function body should start: after a Python
/// docstring, a `def ...:` line, an opening brace, or an indented line.
fn ends_like_open_code(end: &[u8]) -> bool {
    if end.ends_with(b"\"\"\"") || end.ends_with(b"'''") {
        return true;
    }
    let last_line_start = end.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let last_line = &end[last_line_start..];
    let t = trim_start(last_line);
    (t.starts_with(b"def ") || t.starts_with(b"fn ") || t.starts_with(b"function "))
        || (matches!(end.last(), Some(b'{') | Some(b':') | Some(b'(') | Some(b',')) && contains(last_line, b"("))
        || (last_line.starts_with(b"    ") && !contains(end, b"```"))
}

/// An instruction line ending in ':' within the first 300 bytes followed by at
/// least 200 more bytes: the "instruction, then a pasted document" layout.
fn shape_has_colon_then_body(head: &[u8]) -> bool {
    let window = &head[..head.len().min(300)];
    window
        .iter()
        .position(|&b| b == b'\n')
        .map(|nl| trim_end(&window[..nl]).last() == Some(&b':') && head.len() > nl + 200)
        .unwrap_or(false)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn log2_bucket(n: usize) -> u64 {
    (usize::BITS - n.leading_zeros()) as u64
}

/// SplitMix64 finaliser: spreads FNV hashes over the buckets.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn bucket(h: u64) -> usize {
    (h >> (64 - BUCKET_BITS)) as usize
}
