//! Opaque attachment detector: `data:` URLs and long base64 runs.
//!
//! Their decoded content is not inspected (out of scope), so they are
//! reported as [`Category::Attachment`] findings and a policy decides what
//! to do with uninspectable content. Short tokens (hashes, keys, IDs) are
//! not attachments: a run must be at least [`MIN_BASE64_RUN`] characters.

use regex::Regex;

use super::{compile_builtin, finding, Category, Detector, Finding, Prescan, ATTACHMENT_KIND};

pub(super) fn detectors() -> Vec<Box<dyn Detector>> {
    vec![Box::new(DataUrl::new()), Box::new(Base64Run)]
}

/// Shortest base64 run reported, in base64 characters (about 150 bytes
/// decoded; below this a run is a token, not a payload).
const MIN_BASE64_RUN: usize = 200;

// -------------------------------------------------------------- data URL

/// `data:[<mime>][;param]*[;base64],<payload>`, payload at least 16 chars.
const DATA_URL: &str =
    r"(?i)(?-u:\b)data:[a-z]+/[a-z0-9.+\-]+(?:;[a-z0-9.+\-]+=[a-z0-9.+\-]+)*(?:;base64)?,[A-Za-z0-9+/=%._\-]{16,}";

struct DataUrl {
    re: Regex,
}

impl DataUrl {
    fn new() -> Self {
        DataUrl { re: compile_builtin(DATA_URL) }
    }
}

impl Detector for DataUrl {
    fn keywords(&self) -> &[&'static str] {
        &["data:"]
    }

    fn find(&self, text: &str, _: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        for m in self.re.find_iter(text) {
            out.push(finding(Category::Attachment, ATTACHMENT_KIND, segment, m.range(), 0.95, "data_url"));
        }
    }
}

// ----------------------------------------------------------- base64 run

/// Probes every `MIN_BASE64_RUN / 2`-th byte: a qualifying run is at least
/// that long, so it covers a probe, and only runs through a probe are
/// measured. Line breaks inside a run (MIME, PEM) are allowed.
struct Base64Run;

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

fn is_b64_or_break(b: u8) -> bool {
    is_b64(b) || b == b'\n' || b == b'\r'
}

impl Detector for Base64Run {
    fn find(&self, text: &str, _: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        let step = MIN_BASE64_RUN / 2;
        let mut probe = 0;
        let mut covered = 0;
        while probe < bytes.len() {
            if probe < covered || !is_b64(bytes[probe]) {
                probe += step;
                continue;
            }
            let mut start = probe;
            while start > 0 && is_b64_or_break(bytes[start - 1]) {
                start -= 1;
            }
            let mut end = probe;
            while end < bytes.len() && is_b64_or_break(bytes[end]) {
                end += 1;
            }
            // Trim surrounding line breaks, then take '=' padding.
            while start < end && !is_b64(bytes[start]) {
                start += 1;
            }
            while end > start && !is_b64(bytes[end - 1]) {
                end -= 1;
            }
            let mut pad = 0;
            while pad < 2 && bytes.get(end) == Some(&b'=') {
                end += 1;
                pad += 1;
            }
            covered = end;
            probe += step;
            if looks_like_payload(&bytes[start..end]) {
                out.push(finding(Category::Attachment, ATTACHMENT_KIND, segment, start..end, 0.8, "base64_run"));
            }
        }
    }
}

/// Long enough, and random-looking: encoded bytes mix cases and digits and
/// use many distinct symbols (prose with no spaces does not exist, but
/// long identifiers or hex dumps do).
fn looks_like_payload(run: &[u8]) -> bool {
    // Most runs are ordinary words: too short to hold enough characters,
    // so spare them the table below.
    if run.len() < MIN_BASE64_RUN {
        return false;
    }
    let mut seen = [false; 256];
    let mut chars = 0;
    let (mut upper, mut lower, mut digit) = (false, false, false);
    for &b in run {
        if !is_b64(b) {
            continue;
        }
        chars += 1;
        seen[usize::from(b)] = true;
        upper |= b.is_ascii_uppercase();
        lower |= b.is_ascii_lowercase();
        digit |= b.is_ascii_digit();
    }
    let distinct = seen.iter().filter(|&&s| s).count();
    chars >= MIN_BASE64_RUN && upper && lower && digit && distinct >= 40
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;

    fn spans(d: &dyn Detector, text: &str) -> Vec<(Range<usize>, &'static str)> {
        let mut out = Vec::new();
        d.find(text, &Prescan::of(text), 0, &mut out);
        for f in &out {
            assert_eq!((f.category, f.kind), (Category::Attachment, ATTACHMENT_KIND));
        }
        out.into_iter().map(|f| (f.span, f.validator)).collect()
    }

    /// Pseudo-random base64 of `n` characters (an LCG; no dependency).
    fn blob(n: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut x: u32 = 12345;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                char::from(ALPHABET[(x >> 16) as usize % 64])
            })
            .collect()
    }

    #[test]
    fn data_urls() {
        let d = DataUrl::new();
        let text = format!("see ![x](data:image/png;base64,{}==) end", blob(40));
        assert_eq!(spans(&d, &text), vec![(9..9 + 22 + 40 + 2, "data_url")]);
        assert!(spans(&d, "the data: image/png; base64, short").is_empty());
        assert!(spans(&d, "data:text/plain,hi").is_empty());
    }

    #[test]
    fn long_base64_runs_only() {
        let d = Base64Run;
        let long = blob(300);
        let text = format!("payload: \"{long}==\" done");
        assert_eq!(spans(&d, &text), vec![(10..312, "base64_run")]);
        // Wrapped at 76 columns like MIME.
        let wrapped: Vec<String> =
            blob(400).as_bytes().chunks(76).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        let wrapped = wrapped.join("\n");
        assert_eq!(spans(&d, &wrapped).len(), 1);
        // Short token, hex digest, repeated letters, prose.
        assert!(spans(&d, &blob(150)).is_empty());
        assert!(spans(&d, &"9f86d081884c7d659a2feaa0c55ad015".repeat(8)).is_empty());
        assert!(spans(&d, &"A".repeat(500)).is_empty());
        assert!(spans(&d, &"lorem ipsum dolor sit amet ".repeat(30)).is_empty());
    }
}
