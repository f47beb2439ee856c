//! Cheap text extraction from PDF attachments, so that a card number or a
//! key inside an attached PDF is scanned like any prompt.
//!
//! The file is not parsed as a PDF: no xref table, no page tree, no object
//! graph. Every `stream ... endstream` is found by a linear scan, streams
//! that cannot hold page content (images, fonts, object and xref streams,
//! ICC profiles, metadata) are skipped by their dictionary, the rest are
//! inflated when `/FlateDecode` (the only filter understood) or read as they
//! are when unfiltered, and tokenized as content streams. The string
//! operands of the text-showing operators (`Tj`, `TJ`, `'`, `"`) are the
//! text; text-positioning operators become spaces and newlines so that
//! words placed apart do not fuse.
//!
//! Limits, by design:
//! - String bytes are read as WinAnsi/Latin-1. Fonts with their own
//!   encodings (Identity-H CID fonts, most subsetted TrueType in CJK and
//!   many generated PDFs) give glyph ids, not characters: such strings are
//!   dropped, and a file that is mostly such text gives `None`.
//! - Encrypted files, and streams behind any other filter (LZW, ASCII85,
//!   DCT, ...), give nothing.
//! - Text order is content-stream order, not reading order; a word drawn
//!   glyph by glyph with its own positioning comes out spaced.
//! - Work is bounded: at most [`MAX_STREAMS`] `stream` keywords are
//!   considered, each stream inflates to at most [`MAX_STREAM_INFLATE`]
//!   bytes and all of them together to at most [`MAX_TOTAL_INFLATE`] (a
//!   deflate bomb stops there), and the output stops at the caller's
//!   `limit`. Every scan is linear.

use std::io::Read;

/// Streams looked at in one file, whatever their kind.
pub const MAX_STREAMS: usize = 10_000;
/// Bytes one stream may inflate to; the rest of that stream is not read.
pub const MAX_STREAM_INFLATE: u64 = 8 << 20;
/// Bytes all streams of one file may inflate to together.
pub const MAX_TOTAL_INFLATE: u64 = 32 << 20;
/// How far back from `stream` its dictionary may start; real stream
/// dictionaries are a few hundred bytes.
const DICT_LOOKBACK: usize = 4096;
/// Operands kept before an operator; content operators take at most six.
const MAX_OPERANDS: usize = 16;
/// Items kept in one array operand; a `TJ` line has tens to hundreds, and
/// an array of millions of tiny items must not cost words per input byte.
const MAX_ARRAY_ITEMS: usize = 16_384;
/// Kerning in a `TJ` array at or beyond this (thousandths of an em, moving
/// right) is a word gap, not kerning.
const TJ_WORD_GAP: f64 = -200.0;

/// The visible text of `pdf`, at most `limit` bytes, or `None` when there
/// is none or when most of what is shown is not readable text (custom font
/// encodings, binary).
pub fn extract_text(pdf: &[u8], limit: usize) -> Option<String> {
    if limit == 0 {
        return None;
    }
    let mut text = Text::new(limit);
    let mut inflate_left = MAX_TOTAL_INFLATE;
    let finder = memchr::memmem::Finder::new(b"stream");
    let mut pos = 0;
    let mut considered = 0;
    while pos < pdf.len() && considered < MAX_STREAMS && !text.full {
        let Some(found) = finder.find(&pdf[pos..]) else { break };
        let keyword = pos + found;
        pos = keyword + b"stream".len();
        // Every occurrence counts, kept or not: each may cost a dictionary
        // lookback, and a file of nothing but `>>stream` must stay linear.
        considered += 1;
        let Some(dict) = stream_dict(pdf, keyword) else { continue };
        let Some(start) = data_start(pdf, pos) else { continue };
        let (end, next) = data_end(pdf, dict, start);
        pos = next;
        let data = &pdf[start..end];
        match stream_kind(dict) {
            Kind::Skip => {}
            Kind::Raw => read_content(data, &mut text),
            Kind::Flate => {
                let cap = MAX_STREAM_INFLATE.min(inflate_left);
                if cap == 0 {
                    break;
                }
                let inflated = inflate(data, cap);
                inflate_left -= (inflated.len() as u64).min(inflate_left);
                read_content(&inflated, &mut text);
            }
        }
        text.separate(b'\n');
    }
    text.finish()
}

/// The dictionary right before the `stream` keyword at `keyword`, between
/// its `<<` and `>>`; `None` when the keyword does not follow a dictionary
/// (it is then `endstream`, or the word inside some other data).
fn stream_dict(pdf: &[u8], keyword: usize) -> Option<&[u8]> {
    let mut end = keyword;
    while end > 0 && is_space(pdf[end - 1]) {
        end -= 1;
    }
    if end < 2 || &pdf[end - 2..end] != b">>" {
        return None;
    }
    let floor = end.saturating_sub(DICT_LOOKBACK);
    let mut depth = 0usize;
    let mut i = end;
    while i >= floor + 2 {
        match &pdf[i - 2..i] {
            b">>" => {
                depth += 1;
                i -= 2;
            }
            b"<<" => {
                depth -= 1;
                i -= 2;
                if depth == 0 {
                    return Some(&pdf[i + 2..end - 2]);
                }
            }
            _ => i -= 1,
        }
    }
    None
}

/// Where a stream's data starts: after the end of line that must follow the
/// keyword. Writers disagree on which end of line (and some put spaces
/// before it), so any is accepted; a keyword glued to more letters is not
/// the keyword.
fn data_start(pdf: &[u8], mut i: usize) -> Option<usize> {
    while i < pdf.len() && matches!(pdf[i], b' ' | b'\t') {
        i += 1;
    }
    match pdf.get(i..) {
        Some([b'\r', b'\n', ..]) => Some(i + 2),
        Some([b'\r' | b'\n', ..]) => Some(i + 1),
        Some([]) => Some(i),
        Some([b, ..]) if !is_regular(*b) => Some(i),
        _ => None,
    }
}

/// The end of a stream's data, and where scanning resumes. `/Length` is
/// trusted only when `endstream` is where it says, since it is often an
/// indirect reference or simply wrong; otherwise the next `endstream` ends
/// the data, and a file cut short ends it at its end.
fn data_end(pdf: &[u8], dict: &[u8], start: usize) -> (usize, usize) {
    const END: &[u8] = b"endstream";
    let declared = value_of(dict, b"/Length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<usize>().ok())
        .and_then(|len| start.checked_add(len))
        .filter(|&end| end <= pdf.len());
    if let Some(end) = declared {
        let mut after = end;
        while after < pdf.len() && is_space(pdf[after]) {
            after += 1;
        }
        if pdf[after..].starts_with(END) {
            return (end, after + END.len());
        }
    }
    match memchr::memmem::find(&pdf[start..], END) {
        Some(found) => {
            let mut end = start + found;
            // The end of line before `endstream` is not data.
            if end > start && pdf[end - 1] == b'\n' {
                end -= 1;
            }
            if end > start && pdf[end - 1] == b'\r' {
                end -= 1;
            }
            (end, start + found + END.len())
        }
        None => (pdf.len(), pdf.len()),
    }
}

enum Kind {
    /// Cannot hold page content, or is behind a filter not understood.
    Skip,
    Raw,
    Flate,
}

/// Whether a stream may be page content, and how to read it. Page content
/// streams carry no `/Type`; form XObjects and patterns (which can draw
/// text too) carry the types allowed here. Everything else that could look
/// like a content stream when tokenized (fonts, images, ICC profiles,
/// sampled functions) is told apart by its keys.
fn stream_kind(dict: &[u8]) -> Kind {
    if let Some(t) = value_of(dict, b"/Type") {
        if t != b"/XObject" && t != b"/Pattern" {
            return Kind::Skip;
        }
    }
    if let Some(s) = value_of(dict, b"/Subtype") {
        if s != b"/Form" {
            return Kind::Skip;
        }
    }
    let foreign = [&b"/Length1"[..], b"/Length2", b"/Length3", b"/N", b"/FunctionType", b"/Width"];
    if foreign.iter().any(|k| value_of(dict, k).is_some()) {
        return Kind::Skip;
    }
    let Some(filter) = value_of(dict, b"/Filter") else { return Kind::Raw };
    let filter = filter.strip_prefix(b"[").unwrap_or(filter);
    let filter = filter.strip_suffix(b"]").unwrap_or(filter);
    let mut names = filter.split(|&b| is_space(b) || b == b'/').filter(|n| !n.is_empty());
    match (names.next(), names.next()) {
        (None, _) => Kind::Raw,
        (Some(b"FlateDecode" | b"Fl"), None) => Kind::Flate,
        _ => Kind::Skip,
    }
}

/// The value of `key` in a dictionary: a name (with its slash), an array
/// (with its brackets) or a bare token such as a number. The key must be
/// followed by a delimiter, so `/Length` does not match `/Length1`.
fn value_of<'a>(dict: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut from = 0;
    while let Some(found) = memchr::memmem::find(&dict[from..], key) {
        let mut i = from + found + key.len();
        from = i;
        if dict.get(i).is_some_and(|&b| is_regular(b)) {
            continue;
        }
        while i < dict.len() && is_space(dict[i]) {
            i += 1;
        }
        let start = i;
        match dict.get(i) {
            Some(b'[') => {
                let close = memchr::memchr(b']', &dict[i..]).map_or(dict.len(), |c| i + c + 1);
                return Some(&dict[start..close]);
            }
            Some(b'/') => i += 1,
            Some(_) => {}
            None => return None,
        }
        while i < dict.len() && is_regular(dict[i]) {
            i += 1;
        }
        return Some(&dict[start..i]);
    }
    None
}

/// Inflate a zlib stream, or a bare deflate one (some writers omit the
/// header), up to `cap` bytes. A corrupt or truncated stream gives what
/// inflated before the damage.
fn inflate(data: &[u8], cap: u64) -> Vec<u8> {
    let mut out = Vec::new();
    // An error leaves the bytes read before it in `out`: that is the point.
    let _ = flate2::read::ZlibDecoder::new(data).take(cap).read_to_end(&mut out);
    if out.is_empty() {
        let _ = flate2::read::DeflateDecoder::new(data).take(cap).read_to_end(&mut out);
    }
    out
}

/// The text being collected, with the counts that decide whether it is
/// text at all.
struct Text {
    out: String,
    limit: usize,
    full: bool,
    /// Bytes of shown strings, and how many of them were readable.
    shown: usize,
    readable: usize,
}

impl Text {
    fn new(limit: usize) -> Text {
        Text { out: String::new(), limit, full: false, shown: 0, readable: 0 }
    }

    fn push(&mut self, c: char) {
        if self.full {
            return;
        }
        if self.out.len() + c.len_utf8() > self.limit {
            self.full = true;
            return;
        }
        self.out.push(c);
    }

    /// A space or newline between two runs of text, never doubled, and a
    /// newline wins over a space.
    fn separate(&mut self, sep: u8) {
        match self.out.as_bytes().last() {
            None | Some(b'\n') => {}
            Some(b' ') if sep == b'\n' => {
                self.out.pop();
                self.push('\n');
            }
            Some(b' ') => {}
            Some(_) => self.push(char::from(sep)),
        }
    }

    /// One string operand of a text-showing operator. A string that is
    /// mostly not characters is glyph ids of a custom-encoded font: it is
    /// counted against the whole, and not shown.
    fn show(&mut self, bytes: &[u8]) {
        let readable = bytes.iter().filter(|&&b| decode_byte(b).is_some()).count();
        self.shown += bytes.len();
        self.readable += readable;
        if readable * 4 < bytes.len() * 3 {
            return;
        }
        for &b in bytes {
            if let Some(c) = decode_byte(b) {
                self.push(c);
            }
        }
    }

    fn finish(mut self) -> Option<String> {
        // Most of what was shown must be readable: a file mostly in custom
        // encodings gives only the glyph ids that happen to look like
        // letters, which is noise to a scanner, not text.
        if self.readable * 5 < self.shown * 3 || !self.out.chars().any(char::is_alphanumeric) {
            return None;
        }
        let trimmed = self.out.trim_end().len();
        self.out.truncate(trimmed);
        Some(self.out)
    }
}

/// A shown byte as a character, reading it as WinAnsi (the encoding of
/// nearly all simple-font text), or `None` for a control or an unassigned
/// byte.
fn decode_byte(b: u8) -> Option<char> {
    const WIN_ANSI_80: [char; 32] = [
        '\u{20ac}', '\0', '\u{201a}', '\u{0192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{02c6}',
        '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\0', '\u{017d}', '\0', '\0', '\u{2018}', '\u{2019}',
        '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{02dc}', '\u{2122}', '\u{0161}', '\u{203a}',
        '\u{0153}', '\0', '\u{017e}', '\u{0178}',
    ];
    match b {
        b'\t' | b'\n' | b'\r' => Some(' '),
        0x20..=0x7e | 0xa0..=0xff => Some(char::from(b)),
        0x80..=0x9f => Some(WIN_ANSI_80[usize::from(b - 0x80)]).filter(|&c| c != '\0'),
        _ => None,
    }
}

/// One lexical token of a content stream.
enum Token<'a> {
    Str(Vec<u8>),
    Num(f64),
    Operator(&'a [u8]),
    ArrayOpen,
    ArrayClose,
    /// Names, dictionaries, stray delimiters: operands nothing here reads.
    Other,
}

enum Operand {
    Str(Vec<u8>),
    Num(f64),
    Array(Vec<Operand>),
    Other,
}

/// Tokenize a content stream and show the strings of its text operators.
fn read_content(data: &[u8], text: &mut Text) {
    let mut lexer = Lexer { data, i: 0 };
    let mut operands: Vec<Operand> = Vec::new();
    // One level of array is all `TJ` needs; deeper ones are flattened.
    let mut array: Option<Vec<Operand>> = None;
    let mut last_tm_y: Option<f64> = None;
    while let Some(token) = lexer.next() {
        if text.full {
            return;
        }
        let operand = match token {
            Token::Str(s) => Operand::Str(s),
            Token::Num(n) => Operand::Num(n),
            Token::Other => Operand::Other,
            Token::ArrayOpen => {
                if array.is_none() {
                    array = Some(Vec::new());
                }
                continue;
            }
            Token::ArrayClose => match array.take() {
                Some(items) => Operand::Array(items),
                None => continue,
            },
            Token::Operator(op) => {
                if let Some(items) = array.take() {
                    operands.push(Operand::Array(items));
                }
                operator(op, &operands, text, &mut last_tm_y, &mut lexer);
                operands.clear();
                continue;
            }
        };
        match &mut array {
            // Only what `TJ` reads is kept: strings, and word gaps.
            Some(items) => {
                let wanted = match &operand {
                    Operand::Str(s) => !s.is_empty(),
                    Operand::Num(n) => *n <= TJ_WORD_GAP,
                    _ => false,
                };
                if wanted && items.len() < MAX_ARRAY_ITEMS {
                    items.push(operand);
                }
            }
            None => {
                if operands.len() == MAX_OPERANDS {
                    operands.remove(0);
                }
                operands.push(operand);
            }
        }
    }
}

fn operator(op: &[u8], operands: &[Operand], text: &mut Text, last_tm_y: &mut Option<f64>, lexer: &mut Lexer) {
    let last = operands.last();
    let number = |back: usize| match operands.len().checked_sub(back).and_then(|i| operands.get(i)) {
        Some(Operand::Num(n)) => Some(*n),
        _ => None,
    };
    match op {
        b"Tj" => {
            if let Some(Operand::Str(s)) = last {
                text.show(s);
            }
        }
        b"'" | b"\"" => {
            text.separate(b'\n');
            if let Some(Operand::Str(s)) = last {
                text.show(s);
            }
        }
        b"TJ" => {
            if let Some(Operand::Array(items)) = last {
                for item in items {
                    match item {
                        Operand::Str(s) => text.show(s),
                        Operand::Num(n) if *n <= TJ_WORD_GAP => text.separate(b' '),
                        _ => {}
                    }
                }
            }
        }
        b"BT" | b"ET" | b"T*" => text.separate(b'\n'),
        b"Td" | b"TD" => {
            let down = number(1).is_some_and(|ty| ty != 0.0);
            text.separate(if down { b'\n' } else { b' ' });
        }
        b"Tm" => {
            // A new matrix on the same baseline continues the line.
            let y = number(1);
            let same_line = y.is_some() && y == *last_tm_y;
            *last_tm_y = y;
            text.separate(if same_line { b' ' } else { b'\n' });
        }
        // Inline image data is binary, delimited only by `EI`: skip it
        // rather than tokenize it.
        b"ID" => lexer.skip_inline_image(),
        _ => {}
    }
}

struct Lexer<'a> {
    data: &'a [u8],
    i: usize,
}

impl<'a> Lexer<'a> {
    /// Each call consumes at least one byte, so a stream of any content
    /// ends in at most its length in calls.
    fn next(&mut self) -> Option<Token<'a>> {
        let d = self.data;
        loop {
            let b = *d.get(self.i)?;
            if is_space(b) {
                self.i += 1;
            } else if b == b'%' {
                while self.i < d.len() && !matches!(d[self.i], b'\r' | b'\n') {
                    self.i += 1;
                }
            } else {
                break;
            }
        }
        let b = d[self.i];
        let token = match b {
            b'(' => {
                self.i += 1;
                Token::Str(self.literal())
            }
            b'<' if d.get(self.i + 1) == Some(&b'<') => {
                self.i += 2;
                Token::Other
            }
            b'>' if d.get(self.i + 1) == Some(&b'>') => {
                self.i += 2;
                Token::Other
            }
            b'<' => {
                self.i += 1;
                Token::Str(self.hex())
            }
            b'[' => {
                self.i += 1;
                Token::ArrayOpen
            }
            b']' => {
                self.i += 1;
                Token::ArrayClose
            }
            b'/' => {
                self.i += 1;
                self.regular();
                Token::Other
            }
            b')' | b'>' | b'{' | b'}' => {
                self.i += 1;
                Token::Other
            }
            _ => {
                let word = self.regular();
                let numeric = matches!(word.first(), Some(b'0'..=b'9' | b'+' | b'-' | b'.'));
                match std::str::from_utf8(word).ok().filter(|_| numeric).and_then(|w| w.parse::<f64>().ok()) {
                    Some(n) => Token::Num(n),
                    None if numeric => Token::Other,
                    None => Token::Operator(word),
                }
            }
        };
        Some(token)
    }

    /// A run of regular characters; at least one byte when called on one.
    fn regular(&mut self) -> &'a [u8] {
        let start = self.i;
        while self.i < self.data.len() && is_regular(self.data[self.i]) {
            self.i += 1;
        }
        &self.data[start..self.i]
    }

    /// A literal string after its `(`: balanced parentheses, escapes, and
    /// every end of line read as `\n`. An unclosed string runs to the end.
    fn literal(&mut self) -> Vec<u8> {
        let d = self.data;
        let mut out = Vec::new();
        let mut depth = 0usize;
        while let Some(&b) = d.get(self.i) {
            self.i += 1;
            match b {
                b'(' => {
                    depth += 1;
                    out.push(b);
                }
                b')' if depth == 0 => break,
                b')' => {
                    depth -= 1;
                    out.push(b);
                }
                b'\r' => {
                    if d.get(self.i) == Some(&b'\n') {
                        self.i += 1;
                    }
                    out.push(b'\n');
                }
                b'\\' => {
                    let Some(&e) = d.get(self.i) else { break };
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'0'..=b'7' => {
                            let mut value = u32::from(e - b'0');
                            for _ in 0..2 {
                                match d.get(self.i) {
                                    Some(&o @ b'0'..=b'7') => {
                                        value = value * 8 + u32::from(o - b'0');
                                        self.i += 1;
                                    }
                                    _ => break,
                                }
                            }
                            // `\ddd` beyond 255 keeps its low byte, as readers do.
                            out.push((value & 0xff) as u8);
                        }
                        // A backslash at the end of a line continues the string.
                        b'\r' => {
                            if d.get(self.i) == Some(&b'\n') {
                                self.i += 1;
                            }
                        }
                        b'\n' => {}
                        // `\(`, `\)`, `\\`, and an unknown escape: the character itself.
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
        out
    }

    /// A hex string after its `<`: whitespace and stray bytes ignored, an
    /// odd last digit read as if followed by 0.
    fn hex(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut high: Option<u8> = None;
        while let Some(&b) = self.data.get(self.i) {
            self.i += 1;
            if b == b'>' {
                break;
            }
            let Some(digit) = (b as char).to_digit(16) else { continue };
            let digit = digit as u8;
            match high.take() {
                Some(h) => out.push((h << 4) | digit),
                None => high = Some(digit),
            }
        }
        if let Some(h) = high {
            out.push(h << 4);
        }
        out
    }

    /// Past an inline image's data: to the `EI` that stands alone after
    /// whitespace, or the end of the stream.
    fn skip_inline_image(&mut self) {
        let d = self.data;
        let mut from = self.i;
        while let Some(found) = memchr::memmem::find(&d[from..], b"EI") {
            let at = from + found;
            let before = at > 0 && is_space(d[at - 1]);
            let after = d.get(at + 2).is_none_or(|&b| !is_regular(b));
            if before && after {
                self.i = at + 2;
                return;
            }
            from = at + 2;
        }
        self.i = d.len();
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b'\0' | b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

fn is_delimiter(b: u8) -> bool {
    matches!(b, b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%')
}

fn is_regular(b: u8) -> bool {
    !is_space(b) && !is_delimiter(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIMIT: usize = 1 << 20;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// A PDF with one page per content stream, each `(dict, data)` written
    /// as an object with a correct `/Length`; good enough for a reader that
    /// never looks at the xref table.
    fn pdf(streams: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
        let n = streams.len();
        let kids: Vec<String> = (0..n).map(|i| format!("{} 0 R", 3 + 2 * i)).collect();
        out.extend_from_slice(b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n");
        out.extend_from_slice(
            format!("2 0 obj\n<< /Type /Pages /Kids [{}] /Count {n} >>\nendobj\n", kids.join(" ")).as_bytes(),
        );
        for (i, (dict, data)) in streams.iter().enumerate() {
            let page = 3 + 2 * i;
            out.extend_from_slice(
                format!(
                    "{page} 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {} 0 R \
                     /Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>\nendobj\n",
                    page + 1
                )
                .as_bytes(),
            );
            out.extend_from_slice(
                format!("{} 0 obj\n<< {dict} /Length {} >>\nstream\n", page + 1, data.len()).as_bytes(),
            );
            out.extend_from_slice(data);
            out.extend_from_slice(b"\nendstream\nendobj\n");
        }
        out.extend_from_slice(b"trailer\n<< /Root 1 0 R >>\n%%EOF\n");
        out
    }

    fn content(ops: &str) -> Vec<u8> {
        format!("BT /F1 12 Tf 72 720 Td {ops} ET").into_bytes()
    }

    #[test]
    fn uncompressed_and_flate_streams() {
        let raw = pdf(&[("", content("(Card 4111 1111 1111 1111) Tj"))]);
        assert_eq!(extract_text(&raw, LIMIT).as_deref(), Some("Card 4111 1111 1111 1111"));
        let flate = pdf(&[("/Filter /FlateDecode", deflate(&content("(AKIAIOSFODNN7EXAMPLE) Tj")))]);
        assert_eq!(extract_text(&flate, LIMIT).as_deref(), Some("AKIAIOSFODNN7EXAMPLE"));
        // The filter as an array, and a bare deflate stream without header.
        let mut bare = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        bare.write_all(&content("(bare deflate) Tj")).unwrap();
        let bare = pdf(&[("/Filter [ /FlateDecode ]", bare.finish().unwrap())]);
        assert_eq!(extract_text(&bare, LIMIT).as_deref(), Some("bare deflate"));
    }

    #[test]
    fn tj_arrays_kerning_and_moves() {
        let doc = pdf(&[("", content("[(41) -12 (11) 30 ( 1111)] TJ [(Hello)-333(World)] TJ"))]);
        // No move between two `TJ`s: the line goes on.
        assert_eq!(extract_text(&doc, LIMIT).as_deref(), Some("4111 1111Hello World"));
        // Positioning between text objects and lines separates words.
        let doc = pdf(&[("", b"BT (one) Tj ET BT (two) Tj 0 -14 Td (three) Tj 10 0 Td (four) Tj T* (five) Tj (six) ' 1 2 (seven) \" ET BT 1 0 0 1 72 700 Tm (a) Tj 1 0 0 1 80 700 Tm (b) Tj 1 0 0 1 72 680 Tm (c) Tj ET".to_vec())]);
        assert_eq!(extract_text(&doc, LIMIT).as_deref(), Some("one\ntwo\nthree four\nfive\nsix\nseven\na b\nc"));
    }

    #[test]
    fn literal_escapes_octal_and_hex_strings() {
        let ops = br"BT (a\(b\)c\\d) Tj T* (tab\there) Tj T* (\101\102\1031) Tj T* (oct\0627end) Tj T* (cont\
inued) Tj T* (nested (parens) ok) Tj T* <48656C6C 6F> Tj T* <41424> Tj T* (caf\351) Tj T* (\222quote\224) Tj ET";
        let doc = pdf(&[("", ops.to_vec())]);
        let text = extract_text(&doc, LIMIT).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "a(b)c\\d",
                "tab here",
                "ABC1",
                "oct27end",
                "continued",
                "nested (parens) ok",
                "Hello",
                "AB@",
                "café",
                "\u{2019}quote\u{201d}"
            ]
        );
    }

    #[test]
    fn multiple_pages_and_form_xobjects() {
        let doc = pdf(&[
            ("/Filter /FlateDecode", deflate(&content("(page one) Tj"))),
            ("", content("(page two) Tj")),
            (
                "/Type /XObject /Subtype /Form /BBox [0 0 10 10] /Filter /FlateDecode",
                deflate(&content("(form text) Tj")),
            ),
        ]);
        assert_eq!(extract_text(&doc, LIMIT).as_deref(), Some("page one\npage two\nform text"));
    }

    #[test]
    fn non_content_streams_are_skipped() {
        let doc = pdf(&[
            ("/Type /XObject /Subtype /Image /Width 1 /Height 1", content("(image bytes) Tj")),
            ("/Length1 100 /Filter /FlateDecode", deflate(&content("(font program) Tj"))),
            ("/Type /ObjStm /N 1 /First 4", content("(object stream) Tj")),
            ("/Filter /DCTDecode", content("(jpeg) Tj")),
            ("/Filter [/ASCII85Decode /FlateDecode]", content("(chained) Tj")),
            ("", content("(visible) Tj")),
        ]);
        assert_eq!(extract_text(&doc, LIMIT).as_deref(), Some("visible"));
        // Inline image data is not read as operators.
        let doc = pdf(&[("", b"q BI /W 4 /H 1 /BPC 8 /CS /G ID (junk) Tj \xff\x00 EI Q BT (after) Tj ET".to_vec())]);
        assert_eq!(extract_text(&doc, LIMIT).as_deref(), Some("after"));
    }

    #[test]
    fn wrong_length_and_odd_line_ends() {
        let mut doc =
            b"%PDF-1.4\n1 0 obj<</Length 9 0 R>>stream\r\nBT (indirect length) Tj ET\r\nendstream endobj\n".to_vec();
        doc.extend_from_slice(b"2 0 obj<</Length 3>>  stream\nBT (wrong length) Tj ET\nendstream\n");
        assert_eq!(extract_text(&doc, LIMIT).as_deref(), Some("indirect length\nwrong length"));
    }

    #[test]
    fn custom_encodings_and_binary_give_none() {
        // Identity-H text: two-byte glyph ids.
        let doc = pdf(&[("/Filter /FlateDecode", deflate(&content("<0024004800510057> Tj [<00030044>-20<0011>] TJ")))]);
        assert_eq!(extract_text(&doc, LIMIT), None);
        // No text operators at all, or none at all readable.
        assert_eq!(extract_text(&pdf(&[("", b"0 0 m 10 10 l S".to_vec())]), LIMIT), None);
        assert_eq!(extract_text(&pdf(&[("", content("(\\001\\002\\003\\004) Tj"))]), LIMIT), None);
        let noise: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        assert_eq!(extract_text(&noise, LIMIT), None);
        assert_eq!(extract_text(b"", LIMIT), None);
        assert_eq!(extract_text(b"\x89PNG\r\n\x1a\n", LIMIT), None);
    }

    #[test]
    fn truncated_and_garbage_input_never_panics() {
        let good = pdf(&[
            ("/Filter /FlateDecode", deflate(&content("[(Card) -250 (4111 1111 1111 1111)] TJ (x\\101) Tj <4142> Tj"))),
            ("", content("(plain text here) Tj (\\")),
        ]);
        for cut in 0..good.len() {
            let text = extract_text(&good[..cut], 64);
            assert!(text.as_ref().is_none_or(|t| t.len() <= 64), "cut {cut}");
        }
        // Every single-byte corruption, too.
        for at in (0..good.len()).step_by(3) {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            let _ = extract_text(&bad, LIMIT);
        }
        let hostile: [&[u8]; 10] = [
            b"stream",
            b">>stream",
            b"<<>>stream",
            b"<<>>stream\n(",
            b"<<>>stream\n<",
            b"<<>>stream\n(\\",
            b"<<>>stream\n(\\7",
            b"<</Filter/FlateDecode>>stream\n\x78\x9c",
            b"<</Length 99999999999999999999999>>stream\nBT (x) Tj ET",
            b"<</Length>>stream\rBT [(a) [(b)] ] TJ ] ] ET endstream",
        ];
        for h in hostile {
            let _ = extract_text(h, LIMIT);
        }
        let deep = [b"<<".repeat(5000), b">>".repeat(5000), b"stream\n".to_vec()].concat();
        let _ = extract_text(&deep, LIMIT);
    }

    #[test]
    fn deflate_bomb_and_limits_bound_the_output() {
        // 64 MiB of text operators compresses to a few tens of KiB.
        let one = b"(0123456789 abcdefghijklmnopqrstuvwxyz) Tj\n";
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..(64 << 20) / one.len() {
            enc.write_all(one).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 1 << 20);
        let streams: Vec<(&str, Vec<u8>)> = (0..8).map(|_| ("/Filter /FlateDecode", bomb.clone())).collect();
        let doc = pdf(&streams);
        let started = std::time::Instant::now();
        let text = extract_text(&doc, usize::MAX).unwrap();
        // Each stream stops at its cap, and all together at theirs.
        let per_line = "0123456789 abcdefghijklmnopqrstuvwxyz".len();
        assert!(text.len() as u64 <= MAX_TOTAL_INFLATE / one.len() as u64 * per_line as u64 + 1024, "{}", text.len());
        assert!(text.len() as u64 >= MAX_TOTAL_INFLATE / one.len() as u64 * per_line as u64 / 2, "{}", text.len());
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        // The caller's limit, at a character boundary.
        let text = extract_text(&doc, 1000).unwrap();
        assert!(text.len() <= 1000);
        let multibyte = pdf(&[("", content("(\\351\\351\\351\\351\\351) Tj"))]);
        assert_eq!(extract_text(&multibyte, 5).as_deref(), Some("éé"));
        assert_eq!(extract_text(&multibyte, 0), None);
    }

    #[test]
    fn pathological_inputs_stay_linear() {
        let started = std::time::Instant::now();
        // Keywords that each invite a dictionary lookback.
        let lookbacks = [b"<".repeat(4096), b">>stream".repeat(1 << 20)].concat();
        assert_eq!(extract_text(&lookbacks, LIMIT), None);
        // One stream of 8 MiB of tiny array items, of unclosed strings, of
        // inline images without an end.
        let items = [b"[".to_vec(), b"() 1 ".repeat(1 << 21), b"] TJ".to_vec()].concat();
        let opens = b"((((".repeat(1 << 21);
        let images = b"BI ID ".repeat(1 << 20);
        for data in [items, opens, images] {
            let doc = pdf(&[("/Filter /FlateDecode", deflate(&data))]);
            let _ = extract_text(&doc, LIMIT);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn stream_count_is_capped() {
        let mut doc = Vec::new();
        for _ in 0..MAX_STREAMS + 10 {
            doc.extend_from_slice(b"<<>>stream\nBT (x) Tj ET\nendstream\n");
        }
        let text = extract_text(&doc, LIMIT).unwrap();
        assert_eq!(text.lines().count(), MAX_STREAMS);
    }
}
