//! Network identifier detectors: IPv4 and IPv6 addresses and MAC
//! addresses.
//!
//! Prompts are full of dotted numbers that are not addresses (versions,
//! section numbers), so an IPv4 candidate must be four in-range octets, not
//! glued to a longer dotted number, and not introduced as a version
//! ("v1.2.3.4", "version 10.0.0.1"). IPv6 candidates are checked by the
//! standard library's parser. The documentation ranges (192.0.2.0/24,
//! 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) are examples by
//! definition and never reported.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use regex::Regex;

use super::{compile_builtin, context_near, find_in, finding, is_word_byte, Category, Detector, Finding, Prescan};

pub(super) fn detectors() -> Vec<Box<dyn Detector>> {
    vec![Box::new(Ipv4::new()), Box::new(Ipv6), Box::new(Mac::new()), Box::new(Mac::cisco())]
}

const IP_CONTEXT: &[&str] = &[
    "ip", "address", "host", "server", "client", "remote", "source", "src", "dest", "gateway", "connect", "ping", "ssh",
];

// ------------------------------------------------------------------ IPv4

const IPV4: &str = r"(?-u:\b)[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?-u:\b)";
/// Words that make a dotted quad a version number when they come right
/// before it.
const VERSION_WORDS: &[&str] = &[
    "version", "ver", "ver.", "v", "v.", "release", "build", "rev", "revision", "firmware", "fw", "update", "upgrade",
    "patch", "sdk", "tag",
];

struct Ipv4 {
    re: Regex,
}

impl Ipv4 {
    fn new() -> Self {
        Ipv4 { re: compile_builtin(IPV4) }
    }
}

impl Detector for Ipv4 {
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        for run in &pre.dotted_runs {
            for span in find_in(&self.re, text, run.clone()) {
                let Ok(addr) = text[span.clone()].parse::<Ipv4Addr>() else {
                    continue;
                };
                // Leading zeros ("01.02.03.04") are dates and IDs, and the
                // std parser rejects them too; a letter or '.' glued on the
                // left ("v1.2.3.4", "x.1.2.3.4") is a version or path.
                if ipv4_glued(bytes, &span) || version_before(text, span.start) || ipv4_documentation(addr) {
                    continue;
                }
                let octets = addr.octets();
                let special = addr.is_loopback()
                    || addr.is_unspecified()
                    || addr.is_broadcast()
                    || octets[0] == 255
                    || octets[0] == 0;
                let context = context_near(text, &span, IP_CONTEXT);
                let conf = match (special, addr.is_private(), context) {
                    (true, _, _) => 0.4,
                    (false, true, false) => 0.7,
                    (false, true, true) => 0.85,
                    (false, false, false) => 0.85,
                    (false, false, true) => 0.95,
                };
                out.push(finding(Category::Pii, "ip_address", segment, span, conf, "ipv4"));
            }
        }
    }
}

/// RFC 5737's documentation ranges (TEST-NET-1, -2, -3): addresses that
/// only ever appear in examples, so they identify no one.
fn ipv4_documentation(addr: Ipv4Addr) -> bool {
    matches!(addr.octets(), [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _])
}

/// RFC 3849's documentation prefix, 2001:db8::/32.
fn ipv6_documentation(addr: Ipv6Addr) -> bool {
    addr.segments()[..2] == [0x2001, 0x0db8]
}

/// True when the dotted quad at `span` is part of something longer: a
/// letter or '.' glued on the left ("v1.2.3.4", "x.1.2.3.4"), a dotted or
/// dashed number on the left, or more version parts on the right
/// ("1.2.3.4.5", "2.1.0.3-beta"). A ":port" or "/24" after it is fine.
fn ipv4_glued(bytes: &[u8], span: &Range<usize>) -> bool {
    let before = span.start.checked_sub(1).map(|i| bytes[i]);
    let before2 = span.start.checked_sub(2).map(|i| bytes[i]);
    let after = bytes.get(span.end).copied();
    let after2 = bytes.get(span.end + 1).copied();
    let left = match before {
        Some(b) if is_word_byte(b) || b == b'.' => true,
        Some(b'-' | b'/' | b':') => before2.is_some_and(|b| b.is_ascii_digit()),
        _ => false,
    };
    let right = match (after, after2) {
        (Some(b'.'), Some(b)) => b.is_ascii_alphanumeric(),
        (Some(b'-'), Some(b)) => b.is_ascii_alphabetic(),
        _ => false,
    };
    left || right
}

/// True when the word just before `start` (skipping spaces and one of
/// ":#=") is a version word such as "version" or "v".
fn version_before(text: &str, start: usize) -> bool {
    let head = &text.as_bytes()[..start];
    let mut end = head.len();
    while end > 0 && matches!(head[end - 1], b' ' | b'\t' | b':' | b'#' | b'=') {
        end -= 1;
    }
    let mut begin = end;
    while begin > 0 && (head[begin - 1].is_ascii_alphabetic() || head[begin - 1] == b'.') {
        begin -= 1;
        if end - begin > 10 {
            return false;
        }
    }
    let word = &head[begin..end];
    VERSION_WORDS.iter().any(|w| word.eq_ignore_ascii_case(w.as_bytes()))
}

// ------------------------------------------------------------------ IPv6

/// Needs no regex: every candidate contains ':' (found with memchr), and
/// the run of hex digits, ':' and '.' around it is handed to the parser.
struct Ipv6;

impl Detector for Ipv6 {
    fn find(&self, text: &str, _: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        let is_part = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
        let mut from = 0;
        while let Some(off) = memchr::memchr(b':', &bytes[from..]) {
            let colon = from + off;
            let mut start = colon;
            while start > 0 && is_part(bytes[start - 1]) {
                start -= 1;
            }
            let mut end = colon;
            while end < bytes.len() && is_part(bytes[end]) {
                end += 1;
            }
            from = end.max(colon + 1);
            // Sentence punctuation and a trailing ":" ("at fe80::1:") are
            // not part of the address.
            while end > start && matches!(bytes[end - 1], b'.') {
                end -= 1;
            }
            if let Some(span) = ipv6_span(text, start..end) {
                let conf = if context_near(text, &span, IP_CONTEXT) { 0.95 } else { 0.85 };
                out.push(finding(Category::Pii, "ip_address", segment, span, conf, "ipv6"));
            }
        }
    }
}

/// The candidate `run` as an IPv6 span if it parses as one and looks like
/// an address rather than a time ("10:42:17"), a C++ path ("std::max") or
/// a MAC address.
fn ipv6_span(text: &str, run: Range<usize>) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    if run.end - run.start < 3 {
        return None;
    }
    // Glued to a word on either side: part of an identifier or a URL port.
    let glued = |i: usize| bytes.get(i).is_some_and(|&b| is_word_byte(b));
    if (run.start > 0 && glued(run.start - 1)) || glued(run.end) {
        return None;
    }
    let s = &text[run.clone()];
    let addr: Ipv6Addr = s.parse().ok()?;
    let colons = s.bytes().filter(|&b| b == b':').count();
    let groups = s.split(':').filter(|g| !g.is_empty()).count();
    let has_digit = s.bytes().any(|b| b.is_ascii_digit());
    let compressed = s.contains("::");
    // Full form has 7 colons; a compressed one needs at least two groups
    // (so "::" and "a::b" in code stay out) unless it is loopback "::1".
    let shaped = colons == 7 || (compressed && groups >= 2) || addr == Ipv6Addr::LOCALHOST;
    if ipv6_documentation(addr) {
        return None;
    }
    // Six two-digit groups with no "::" would be a MAC, which needs 7 here.
    (shaped && has_digit).then_some(run)
}

// ------------------------------------------------------------------- MAC

/// Cisco's three dotted quads. Matched by hand (`dotted_macs`), which
/// spares a regex pass over every segment that says "machine"; the tests
/// check the hand matcher against this pattern.
#[cfg(test)]
const MAC: &str = r"(?-u:\b)[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}(?-u:\b)";
const MAC_CONTEXT: &[&str] = &["mac", "ether", "hwaddr", "bssid", "wifi", "wi-fi", "nic"];

/// `dotted: false` finds the ':'/'-' forms on every segment; `dotted:
/// true` also finds Cisco's form and runs only where "mac" occurs.
struct Mac {
    /// Cisco's dotted form ("0c80.3328.5d47"), reported only next to a
    /// MAC keyword; otherwise the ':'/'-' separated form.
    dotted: bool,
}

impl Mac {
    fn new() -> Self {
        Mac { dotted: false }
    }

    fn cisco() -> Self {
        Mac { dotted: true }
    }
}

impl Detector for Mac {
    fn keywords(&self) -> &[&'static str] {
        if self.dotted {
            &["mac"]
        } else {
            &[]
        }
    }

    fn find(&self, text: &str, _: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        // Colon- and dash-separated forms: every candidate has a separator
        // at its third byte, so walk the separators (memchr) and test the
        // 17 bytes around each, instead of running a regex over the text.
        let mut candidates = Vec::new();
        let mut next_free = 0;
        // The ':'/'-' forms belong to the plain detector only, so a segment
        // with "mac" in it does not report them twice.
        let separated = if self.dotted { &[][..] } else { bytes };
        for sep in memchr::memchr2_iter(b':', b'-', separated) {
            let Some(start) = sep.checked_sub(2) else {
                continue;
            };
            if start < next_free || !mac_at(bytes, start) {
                continue;
            }
            candidates.push(start..start + 17);
            next_free = start + 17;
        }
        // Cisco's dotted form is taken only near a word like "mac"; the
        // `CiscoMac` detector sets `dotted` when that keyword is present.
        if self.dotted {
            candidates.extend(dotted_macs(bytes));
        }
        for span in candidates {
            let s = &bytes[span.clone()];
            let is_sep = |b: u8| matches!(b, b':' | b'-' | b'.');
            let glued_after = bytes.get(span.end).is_some_and(|&b| is_sep(b) || is_word_byte(b))
                && bytes.get(span.end + 1).is_some_and(u8::is_ascii_hexdigit);
            let glued_before = span.start >= 1
                && (is_word_byte(bytes[span.start - 1])
                    || (span.start >= 2 && is_sep(bytes[span.start - 1]) && bytes[span.start - 2].is_ascii_hexdigit()));
            if glued_after || glued_before || bytes.get(span.end).is_some_and(|&b| is_word_byte(b)) {
                continue;
            }
            let has_digit = s.iter().any(u8::is_ascii_digit);
            let has_hex_letter = s.iter().any(u8::is_ascii_alphabetic);
            let dotted = s.get(4) == Some(&b'.');
            // All-digit runs ("12:30:45:11:22:33") are more often times or
            // counters: they need context, as does Cisco's dotted form.
            let context = context_near(text, &span, MAC_CONTEXT);
            let conf = match (has_hex_letter && has_digit, context) {
                (true, true) => 0.95,
                (true, false) if !dotted => 0.85,
                (false, true) if !dotted => 0.6,
                _ => continue,
            };
            out.push(finding(Category::Pii, "mac_address", segment, span, conf, "pattern"));
        }
    }
}

/// Matches of [`MAC`] (three dotted groups of four hex digits between
/// ASCII word boundaries), leftmost first and not overlapping, as the
/// regex would find them; a match is found through its first dot, so
/// only dots are visited.
fn dotted_macs(bytes: &[u8]) -> Vec<Range<usize>> {
    let hex4 = |at: usize| bytes.get(at..at + 4).is_some_and(|g| g.iter().all(u8::is_ascii_hexdigit));
    let mut out = Vec::new();
    let mut next_free = 0;
    for dot in memchr::memchr_iter(b'.', bytes) {
        let Some(start) = dot.checked_sub(4) else {
            continue;
        };
        let end = start + 14;
        let shaped = start >= next_free
            && (start == 0 || !is_word_byte(bytes[start - 1]))
            && hex4(start)
            && hex4(dot + 1)
            && bytes.get(dot + 5) == Some(&b'.')
            && hex4(dot + 6)
            && bytes.get(end).is_none_or(|&b| !is_word_byte(b));
        if shaped {
            out.push(start..end);
            next_free = end;
        }
    }
    out
}

/// Whether `bytes[start..]` begins with six hex pairs joined by one
/// separator kind (':' or '-').
fn mac_at(bytes: &[u8], start: usize) -> bool {
    let Some(s) = bytes.get(start..start + 17) else {
        return false;
    };
    let sep = s[2];
    (0..6).all(|i| s[i * 3].is_ascii_hexdigit() && s[i * 3 + 1].is_ascii_hexdigit())
        && (0..5).all(|i| s[i * 3 + 2] == sep)
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
    fn ipv4_positives() {
        let d = Ipv4::new();
        assert_eq!(spans(&d, "connect to 8.8.4.4 now"), vec![11..18]);
        assert_eq!(hits(&d, "server ip: 93.184.215.14")[0].1, 0.95);
        assert_eq!(hits(&d, "from 192.168.1.20 today")[0].1, 0.7);
        assert_eq!(spans(&d, "http://10.42.17.201:8080/healthz"), vec![7..19]);
        assert_eq!(hits(&d, "bind 0.0.0.0")[0].1, 0.4);
    }

    #[test]
    fn version_numbers_are_not_ips() {
        let d = Ipv4::new();
        for text in [
            "version 1.2.3.4",
            "Version: 10.0.0.1",
            "v10.0.0.1",
            "v 1.2.3.4",
            "release 4.12.3.1 is out",
            "1.2.3.4.5",
            "see 2.1.0.3-beta",
            "999.1.1.1",
            "1.2.3",
            "rule 01.02.03.04",
            "x.1.2.3.4",
        ] {
            assert!(spans(&d, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn documentation_addresses_are_not_findings() {
        for text in ["server ip: 203.0.113.77", "from 192.0.2.1", "to 198.51.100.255:8080"] {
            assert!(spans(&Ipv4::new(), text).is_empty(), "{text}");
        }
        assert_eq!(spans(&Ipv4::new(), "from 192.0.3.1 and 203.0.114.1"), vec![5..14, 19..30]);
        for text in ["addr 2001:db8:85a3::8a2e:370:7334 ok", "2001:0db8:0:0:0:0:0:1", "[2001:db8::1]:8080"] {
            assert!(spans(&Ipv6, text).is_empty(), "{text}");
        }
        assert_eq!(spans(&Ipv6, "2001:db9::1"), vec![0..11]);
    }

    #[test]
    fn ipv6_positives_and_negatives() {
        let d = Ipv6;
        for (text, want) in [
            ("addr 2001:470:85a3::8a2e:370:7334 ok", 5..33),
            ("2001:0470:85a3:0000:0000:8a2e:0370:7334", 0..39),
            ("ping fe80::1ff:fe23:4567:890a.", 5..29),
            ("loopback ::1", 9..12),
        ] {
            assert_eq!(spans(&d, text), vec![want], "{text}");
        }
        for text in [
            "at 10:42:17 UTC",
            "std::vector::push_back",
            "a::b",
            "key: value, x: y",
            "2001:db8:::1",
            "http://host:8080/path",
            "deadbeef::cafe",
        ] {
            assert!(spans(&d, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn mac_addresses() {
        let d = Mac::new();
        assert_eq!(hits(&d, "my MAC address 0c:80:33:28:5d:47 and"), vec![(15..32, 0.95)]);
        assert_eq!(spans(&d, "00-1A-2B-3C-4D-5E"), vec![0..17]);
        assert!(spans(&d, "mac 0123.4567.89ab").is_empty());
        assert_eq!(spans(&Mac::cisco(), "mac 0123.4567.89ab"), vec![4..18]);
        assert!(spans(&Mac::cisco(), "id 0123.4567.89ab").is_empty());
        for text in ["0c:80:33-28:5d:47", "12:30:45:11:22:33", "0c:80:33:28:5d:47:aa", "0c:80:33:28:5d"] {
            assert!(spans(&d, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn dotted_macs_match_the_regex() {
        let re = compile_builtin(MAC);
        let pieces = ["0c80.3328.", "0c80", "3328", ".", "5D4", "7", "x", " ", "_", "é", "-", ".5d47"];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut texts: Vec<String> = vec![
            "0c80.3328.5d47".into(),
            "a0c80.3328.5d47 0c80.3328.5d47.1 0c80.3328.5d47.0c80.3328.5d47".into(),
            "0c80.3328.5d470c80.3328.5d47 x.0c80.3328.5d47 é0c80.3328.5d47é".into(),
        ];
        for _ in 0..3000 {
            let mut t = String::new();
            let mut next = || {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (x >> 33) as usize
            };
            for _ in 0..next() % 24 {
                t.push_str(pieces[next() % pieces.len()]);
            }
            texts.push(t);
        }
        let mut matched = 0;
        for t in &texts {
            let want: Vec<Range<usize>> = re.find_iter(t).map(|m| m.range()).collect();
            matched += want.len();
            assert_eq!(dotted_macs(t.as_bytes()), want, "{t:?}");
        }
        assert!(matched > 50, "{matched}");
    }
}
