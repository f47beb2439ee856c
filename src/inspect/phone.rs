//! Phone numbers, international and national, validated against the
//! numbering plans libphonenumber publishes (`phone_tables`, generated).
//!
//! Prompts carry numbers of every kind (versions, order ids, amounts,
//! timestamps), so what is accepted depends on how much the text itself
//! says "phone":
//! - with a '+' or an international prefix ("00", "011") the country code
//!   is read and the number judged in that country's plan;
//! - US/Canadian numbers in their usual punctuation, "(415) 555-0132";
//! - a national number with its trunk prefix ("0151 1234567",
//!   "06-12345678") or a bracketed area code ("(11) 2345-6789") must be a
//!   valid number in one of the configured regions' plans
//!   ([`PhoneRegions`]): without a country code only a region hint says
//!   which plan to read it in;
//! - anything else phone-shaped only next to a word such as "phone",
//!   "mobile", "fax" or "call", and only with a length some configured
//!   plan allows.
//!
//! Dates, decimals, IPv4 addresses and numbers introduced as ids ("order
//! 01234567") are never phones. The plans' patterns are compiled lazily,
//! per region, the first time a candidate needs one: most prompts need none.

use std::ops::Range;
use std::sync::OnceLock;

use regex::Regex;

use super::national::named_near;
use super::phone_tables::{Plan, PLANS};
use super::{compile_builtin, finding, is_word_byte, Category, Detector, Finding, Prescan};

/// Regions whose plans read national numbers when the configuration names
/// none: the main numbering plans of North America, Europe's largest
/// economies, India, Brazil, Australia, Japan, Mexico and China.
pub const DEFAULT_PHONE_REGIONS: &[&str] =
    &["US", "CA", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "BR", "AU", "JP", "MX", "CN"];

/// The regions in whose numbering plans a phone number written without a
/// country code is read (a region hint: "0151 1234567" is a German mobile
/// number only if Germany is among them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneRegions {
    /// Indices into `PLANS`, in the order given, without duplicates.
    plans: Vec<usize>,
}

impl PhoneRegions {
    /// Regions by ISO 3166 code (any case); an unknown code is an error
    /// naming it.
    pub fn new<S: AsRef<str>>(codes: &[S]) -> Result<Self, String> {
        let mut plans = Vec::new();
        for code in codes {
            let code = code.as_ref().trim();
            let index = plan_index(code).ok_or_else(|| format!("unknown phone region `{code}`"))?;
            if !plans.contains(&index) {
                plans.push(index);
            }
        }
        Ok(PhoneRegions { plans })
    }

    /// Region codes, as configured.
    pub fn codes(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.plans.iter().map(|&i| PLANS[i].region)
    }
}

impl Default for PhoneRegions {
    fn default() -> Self {
        PhoneRegions { plans: DEFAULT_PHONE_REGIONS.iter().filter_map(|c| plan_index(c)).collect() }
    }
}

/// Whether `code` names a region with a numbering plan (for config checks).
pub fn phone_region_known(code: &str) -> bool {
    plan_index(code).is_some()
}

fn plan_index(code: &str) -> Option<usize> {
    let upper = code.to_ascii_uppercase();
    PLANS.binary_search_by(|p| p.region.cmp(upper.as_str())).ok()
}

/// Whole words that make a number near them a phone number (see
/// `national::named_near`; '*' also takes longer words, "phoneNumber").
const PHONE_WORDS: &[&str] = &[
    "phone*",
    "telephone*",
    "tel",
    "ph",
    "mobile",
    "mob",
    "cell",
    "cellphone",
    "call",
    "fax",
    "whatsapp",
    "sms",
    "text me",
    "dial",
    "landline",
    "hotline",
    "voicemail",
    "telefon*",
    "telefoon",
    "telefono",
    "tel\u{e9}fono",
    "t\u{e9}l\u{e9}phone",
    "t\u{e9}l",
    "handy",
    "mobil",
    "portable",
    "cellulare",
    "m\u{f3}vil",
    "celular",
    "rufnummer",
    "durchwahl",
];

/// Weaker words ("contact", "message"): enough for a number written in
/// phone groups, not for a bare run of digits (an id or a timestamp in a
/// JSON message).
const PHONE_HINTS: &[&str] = &["contact", "message", "messages", "answering", "desk", "reach me", "ring me"];

/// Words that, right before a number, say it is something else.
const ID_WORDS: &[&str] = &[
    "order",
    "invoice",
    "ticket",
    "id",
    "ref",
    "reference",
    "case",
    "po",
    "sku",
    "serial",
    "tracking",
    "transaction",
    "txn",
    "account",
    "acct",
    "customer",
    "employee",
    "member",
    "policy",
    "claim",
    "version",
    "build",
    "release",
    "port",
    "pid",
    "uid",
    "item",
    "no",
    "nr",
    "number",
    "page",
    "pages",
    "issue",
    "pr",
    "commit",
    "row",
    "line",
    "zip",
    "zipcode",
    "postcode",
    "postalcode",
];

/// At most this many digit groups make one number ("+46 (0)8 928 571 38").
const MAX_GROUPS: usize = 8;

pub(super) struct Phone {
    regions: PhoneRegions,
    /// One lazily compiled validity pattern per entry of `PLANS`.
    compiled: Vec<OnceLock<Regex>>,
}

impl Phone {
    pub(super) fn new(regions: PhoneRegions) -> Self {
        Phone { regions, compiled: (0..PLANS.len()).map(|_| OnceLock::new()).collect() }
    }

    /// Whether `national` (digits, no trunk prefix) is a valid number in
    /// the plan `PLANS[plan]`.
    fn valid_in(&self, plan: usize, national: &[u8]) -> bool {
        let p: &Plan = &PLANS[plan];
        if p.lengths & (1 << national.len().min(31)) == 0 {
            return false;
        }
        let re = self.compiled[plan].get_or_init(|| compile_builtin(&format!("(?-u)^(?:{})$", p.valid)));
        // The digits are ASCII, so this cannot fail.
        std::str::from_utf8(national).is_ok_and(|s| re.is_match(s))
    }

    /// Whether `digits`, dialled in one of the configured regions without
    /// a country code, is a valid number there: after the region's trunk
    /// prefix, or whole (Italian "06 ...", a number written without it).
    fn valid_national(&self, digits: &[u8]) -> bool {
        self.regions.plans.iter().any(|&i| {
            let prefix = PLANS[i].national_prefix.as_bytes();
            let after_trunk = digits.strip_prefix(prefix).filter(|_| !prefix.is_empty());
            after_trunk.is_some_and(|rest| self.valid_in(i, rest)) || self.valid_in(i, digits)
        })
    }

    /// Whether some configured plan allows `digits` as a number's length,
    /// local (no area code) numbers included, after its trunk prefix.
    fn possible_national(&self, digits: &[u8]) -> bool {
        self.regions.plans.iter().any(|&i| {
            let p = &PLANS[i];
            let allowed = p.lengths | p.local_lengths;
            let trunk = digits.starts_with(p.national_prefix.as_bytes()) && !p.national_prefix.is_empty();
            let after_trunk = digits.len() - if trunk { p.national_prefix.len() } else { 0 };
            allowed & (1 << digits.len().min(31)) != 0 || allowed & (1 << after_trunk.min(31)) != 0
        })
    }

    /// Whether `digits` (no '+') is a country code followed by a valid
    /// national number of that country; a "(0)" trunk was already dropped.
    fn valid_international(&self, digits: &[u8]) -> Option<bool> {
        if digits.first() == Some(&b'0') {
            return None;
        }
        let mut known = false;
        for cc_len in 1..=3 {
            let Some((cc, national)) = digits.split_at_checked(cc_len) else { break };
            let cc = cc.iter().fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
            let mut regions = PLANS.iter().enumerate().filter(|(_, p)| p.country_code == cc).peekable();
            if regions.peek().is_none() {
                continue;
            }
            known = true;
            if regions.any(|(i, _)| self.valid_in(i, national)) {
                return Some(true);
            }
            // Country codes are prefix-free: a known one ends the search.
            break;
        }
        known.then_some(false)
    }

    /// The finding for `groups[i..j]` of the numeric run `run`, if it is a
    /// phone number. What the words near the run say is looked up once per
    /// run, and only for candidates shaped like a number (`near` caches it).
    fn judge(
        &self,
        text: &str,
        run: &Range<usize>,
        groups: &[Range<usize>],
        (i, j): (usize, usize),
        near: &mut Option<Near>,
    ) -> Option<(Range<usize>, f32)> {
        let bytes = text.as_bytes();
        let cand = Candidate::read(bytes, groups, i, j)?;
        let digits = &cand.digits[..cand.len];
        // "+1.8005551212" is how registries (WHOIS, EPP) write a number;
        // any other single dot is a decimal point.
        let registry_style = cand.plus && cand.groups == 2 && cand.dots == 1;
        let decimal = cand.dots == 1 && !registry_style;
        // US ZIP+4 ("91011-1111") shares the shape of a short number.
        let zip4 = j - i == 2 && groups[i].len() == 5 && groups[i + 1].len() == 4 && bytes[groups[i].end] == b'-';
        if cand.date_shaped(groups, i, j, bytes) || cand.ip_shaped || decimal || cand.mixed_dots || zip4 {
            return None;
        }
        if !cand.plus && id_word_before(bytes, cand.span.start) {
            return None;
        }
        let near = *near.get_or_insert_with(|| Near::of(text, run));
        let context = near == Near::Word || (near == Near::Hint && cand.groups >= 2);
        let conf = |plain: f32, with_context: f32| if context { with_context } else { plain };
        if cand.plus {
            // E.164 allows 15 digits in all; a plain '+' number is taken on
            // its shape, and rated higher when its country's plan knows it.
            if !(8..=15).contains(&cand.len) {
                return None;
            }
            let score = match self.valid_international(digits) {
                None => return None,
                Some(true) => conf(0.85, 0.95),
                Some(false) if !registry_style => conf(0.65, 0.8),
                Some(false) => return None,
            };
            return Some((cand.span, score));
        }
        let idd =
            digits.strip_prefix(b"011").or_else(|| digits.strip_prefix(b"00").filter(|r| r.first() != Some(&b'0')));
        if let Some(rest) = idd.filter(|_| cand.groups >= 2) {
            if self.valid_international(rest) == Some(true) {
                return Some((cand.span, conf(0.75, 0.9)));
            }
        }
        if cand.nanp {
            return Some((cand.span, conf(0.7, 0.85)));
        }
        // A trunk prefix leads an area code: "030 ...", not "0-1048575".
        let formatted = (cand.groups >= 2 && groups[i].len() >= 2) || cand.paren_first;
        if formatted && digits[0] == b'0' && (8..=13).contains(&cand.len) && self.valid_national(digits) {
            return Some((cand.span, conf(0.75, 0.9)));
        }
        if cand.paren_first && digits[0] != b'0' && (8..=12).contains(&cand.len) && self.valid_national(digits) {
            return Some((cand.span, conf(0.7, 0.85)));
        }
        if context && (7..=13).contains(&cand.len) {
            if self.valid_national(digits) {
                return Some((cand.span, 0.8));
            }
            if self.possible_national(digits) {
                return Some((cand.span, 0.65));
            }
        }
        None
    }
}

impl Detector for Phone {
    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        let mut groups = Vec::new();
        for run in pre.runs(7) {
            // A run glued to a word ("DE89 3704 ...", "abc123 456") is part
            // of an identifier, not a number of its own.
            if run.start > 0 && is_word_byte(bytes[run.start - 1]) {
                continue;
            }
            groups.clear();
            digit_groups(bytes, run.clone(), &mut groups);
            let mut near = None;
            let mut i = 0;
            while i < groups.len() {
                let mut found = None;
                for j in (i + 1..=groups.len().min(i + MAX_GROUPS)).rev() {
                    let digits: usize = groups[i..j].iter().map(|g| g.len()).sum();
                    if !(7..=17).contains(&digits) {
                        continue;
                    }
                    if let Some(hit) = self.judge(text, &run, &groups, (i, j), &mut near) {
                        found = Some((j, hit));
                        break;
                    }
                }
                match found {
                    Some((j, (span, conf))) => {
                        out.push(finding(Category::Pii, "phone", segment, span, conf, "phone_plan"));
                        i = j;
                    }
                    None => i += 1,
                }
            }
        }
    }
}

/// What the words around a numeric run say about it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Near {
    Nothing,
    /// Only a weak hint ("contact", "message").
    Hint,
    /// A phone word ("phone", "mobile", "fax", "call").
    Word,
}

impl Near {
    fn of(text: &str, run: &Range<usize>) -> Near {
        if named_near(text, run, PHONE_WORDS) {
            Near::Word
        } else if named_near(text, run, PHONE_HINTS) {
            Near::Hint
        } else {
            Near::Nothing
        }
    }
}

/// The digit groups of a numeric run, in order.
fn digit_groups(bytes: &[u8], run: Range<usize>, out: &mut Vec<Range<usize>>) {
    let mut k = run.start;
    while k < run.end {
        if bytes[k].is_ascii_digit() {
            let start = k;
            while k < run.end && bytes[k].is_ascii_digit() {
                k += 1;
            }
            out.push(start..k);
        } else {
            k += 1;
        }
    }
}

/// `groups[i..j]` read as one number.
struct Candidate {
    span: Range<usize>,
    /// ASCII digits, the "(0)" of "+44 (0)20 ..." left out.
    digits: [u8; 20],
    len: usize,
    groups: usize,
    plus: bool,
    /// Starts with a bracketed group: "(0151) ...", "(11) 2345-6789".
    paren_first: bool,
    nanp: bool,
    dots: usize,
    /// Dots together with spaces or dashes: not how anyone writes a number.
    mixed_dots: bool,
    ip_shaped: bool,
}

impl Candidate {
    fn read(bytes: &[u8], groups: &[Range<usize>], i: usize, j: usize) -> Option<Candidate> {
        // The text before the first group: "+", "(", "+(" are part of the
        // number; a group inside the run must follow a space, or it is
        // one piece of a longer dashed or dotted number.
        let gap_start = if i == 0 { groups[0].start } else { groups[i - 1].end };
        let mut start = groups[i].start;
        while start > gap_start && matches!(bytes[start - 1], b'(' | b'+') {
            start -= 1;
        }
        if i == 0 {
            // A run can begin at '(' or '+'; step back to them too.
            while start > 0 && matches!(bytes[start - 1], b'(' | b'+') {
                start -= 1;
            }
            if start > 0 {
                let before = bytes[start - 1];
                // "id-0151 ...", "1.0151 ...", "arn:aws:iam::1234...".
                let prev = start.checked_sub(2).map(|k| bytes[k]);
                let joined = match before {
                    b':' => prev.is_some_and(|b| b.is_ascii_digit() || b == b':'),
                    b'/' => prev.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'/'),
                    b'.' | b'-' | b',' => prev.is_some_and(|b| b.is_ascii_alphanumeric()),
                    _ => false,
                };
                if is_word_byte(before) || before == b'+' || joined {
                    return None;
                }
            }
        } else {
            // A number starts inside a run only where the text clearly
            // starts a new one ("... 0132  +44 ...", "... (0151) ..."):
            // "DE89 3704 0044 0532 0130 01" has no phone in its tail.
            let gap = &bytes[gap_start..groups[i].start];
            if !(gap.windows(2).any(|w| w == b"  ") || gap.contains(&b'(') || gap.contains(&b'+')) {
                return None;
            }
        }
        let plus = bytes[start] == b'+' || (start + 1 < bytes.len() && bytes[start + 1] == b'+');
        if bytes[start..groups[i].start].iter().filter(|&&b| b == b'+').count() > 1 {
            return None;
        }
        let paren_first = bytes[start..groups[i].start].contains(&b'(');
        // The end: the next group must follow a space; the text after the
        // last one must not go on with a word or another number part,
        // except an extension ("x123", "ext. 123").
        let mut end = groups[j - 1].end;
        if j < groups.len() {
            let gap = &bytes[end..groups[j].start];
            if !gap.contains(&b' ') {
                return None;
            }
            if gap.first() == Some(&b')') {
                end += 1;
            }
        } else {
            if bytes.get(end) == Some(&b')') {
                end += 1;
            }
            end = extension_end(bytes, end).unwrap_or(end);
            let after = bytes.get(end).copied();
            let after2 = bytes.get(end + 1).copied();
            // "-Office" after a number is a label; "-9", ".5", ":role" or
            // "/path" continue it.
            let joined = match (after, after2) {
                (Some(b'.' | b'-' | b','), Some(b)) => b.is_ascii_digit(),
                (Some(b':' | b'/'), Some(b)) => b.is_ascii_alphanumeric(),
                _ => false,
            };
            if after.is_some_and(is_word_byte) || joined {
                return None;
            }
        }
        let mut cand = Candidate {
            span: start..end,
            digits: [0; 20],
            len: 0,
            groups: j - i,
            plus,
            paren_first,
            nanp: false,
            dots: 0,
            mixed_dots: false,
            ip_shaped: false,
        };
        // Separators between groups: at most one of " -." plus brackets,
        // brackets balanced around whole groups.
        let (mut open, mut spaces_or_dashes) = (paren_first, false);
        let mut short_groups = true;
        for k in i..j {
            if k > i {
                let sep = &bytes[groups[k - 1].end..groups[k].start];
                let plain = sep.iter().filter(|b| matches!(b, b' ' | b'-' | b'.')).count();
                if sep.len() > 3 || plain > 2 || sep.contains(&b'+') {
                    return None;
                }
                for &b in sep {
                    match b {
                        b'(' if !open => open = true,
                        b')' if open => open = false,
                        b'(' | b')' => return None,
                        b'.' => cand.dots += 1,
                        _ => spaces_or_dashes = true,
                    }
                }
            }
            let g = &bytes[groups[k].clone()];
            short_groups &= g.len() <= 3;
            // "+44 (0)20 ...": the bracketed trunk zero is not dialled.
            let trunk = plus && g == b"0" && k > i && bytes[groups[k].start - 1] == b'(';
            if !trunk {
                let room = cand.digits.len() - cand.len;
                if g.len() > room {
                    return None;
                }
                cand.digits[cand.len..cand.len + g.len()].copy_from_slice(g);
                cand.len += g.len();
            }
        }
        if open && bytes.get(groups[j - 1].end) != Some(&b')') {
            return None;
        }
        // A lone digit at the end is a suffix ("...-0132-9"), not a group.
        if !plus && cand.groups > 1 && groups[j - 1].len() < 2 {
            return None;
        }
        cand.mixed_dots = cand.dots > 0 && spaces_or_dashes;
        cand.ip_shaped = cand.groups == 4 && cand.dots == 3 && short_groups;
        cand.nanp = !plus && nanp_shaped(bytes, groups, i, j, start);
        Some(cand)
    }

    /// Three groups that read as a date: year-month-day or day-month-year.
    fn date_shaped(&self, groups: &[Range<usize>], i: usize, j: usize, bytes: &[u8]) -> bool {
        if j - i != 3 {
            return false;
        }
        let lens = [groups[i].len(), groups[i + 1].len(), groups[i + 2].len()];
        let year = |g: &Range<usize>| matches!(&bytes[g.start..g.start + 2], b"19" | b"20");
        let small = |n: usize| (1..=2).contains(&n);
        (lens[0] == 4 && small(lens[1]) && small(lens[2]) && year(&groups[i]))
            || (small(lens[0]) && small(lens[1]) && lens[2] == 4 && year(&groups[i + 2]))
    }
}

/// North American punctuation: "(415) 555-0132", "(415)555-0132",
/// "415-555-0132", "415.555.0132", "415 555 0132", each optionally after
/// "1 " / "1-" / "1."; area code and exchange start with 2-9.
fn nanp_shaped(bytes: &[u8], groups: &[Range<usize>], i: usize, j: usize, start: usize) -> bool {
    let len = |k: usize| groups[k].len();
    let first =
        if j - i == 4 && (len(i), len(i + 1), len(i + 2), len(i + 3)) == (1, 3, 3, 4) && bytes[groups[i].start] == b'1'
        {
            i + 1
        } else if j - i == 3 && (len(i), len(i + 1), len(i + 2)) == (3, 3, 4) {
            i
        } else {
            return false;
        };
    let area = &groups[first];
    let exchange = &groups[first + 1];
    if !matches!(bytes[area.start], b'2'..=b'9') || !matches!(bytes[exchange.start], b'2'..=b'9') {
        return false;
    }
    let sep1 = &bytes[area.end..exchange.start];
    let sep2 = &bytes[exchange.end..groups[first + 2].start];
    if first > i {
        let lead = &bytes[groups[i].end..area.start];
        if !matches!(lead, b" " | b"-" | b"." | b" (" | b"(") {
            return false;
        }
    }
    let bracketed = area.start > start && bytes[area.start - 1] == b'(';
    if bracketed {
        matches!(sep1, b")" | b") ") && matches!(sep2, b" " | b"-" | b".")
    } else {
        sep1 == sep2 && matches!(sep1, b" " | b"-" | b".")
    }
}

/// End of an extension right after a number ("x123", " ext. 123",
/// " ext 123"), if there is one.
fn extension_end(bytes: &[u8], end: usize) -> Option<usize> {
    let rest = &bytes[end..];
    let skip = [&b"x"[..], b" x", b" ext. ", b" ext ", b" ext.", b" x. "]
        .iter()
        .find(|p| rest.len() > p.len() && rest[..p.len()].eq_ignore_ascii_case(p) && rest[p.len()].is_ascii_digit())?
        .len();
    let digits = rest[skip..].iter().take_while(|b| b.is_ascii_digit()).count();
    (digits <= 6).then_some(end + skip + digits)
}

/// True when the word just before `start` (past spaces and one of ":#.")
/// introduces an id, not a phone number: "order 01234567".
fn id_word_before(bytes: &[u8], start: usize) -> bool {
    let mut end = start;
    while end > 0 && matches!(bytes[end - 1], b' ' | b':' | b'#' | b'.' | b'\t') {
        end -= 1;
    }
    let mut begin = end;
    while begin > 0 && bytes[begin - 1].is_ascii_alphabetic() && end - begin <= 12 {
        begin -= 1;
    }
    let word = &bytes[begin..end];
    ID_WORDS.iter().any(|w| word.eq_ignore_ascii_case(w.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(d: &Phone, text: &str) -> Vec<(Range<usize>, f32)> {
        let mut out = Vec::new();
        d.find(text, &Prescan::of(text), 0, &mut out);
        out.into_iter().map(|f| (f.span, f.confidence)).collect()
    }

    fn found<'t>(d: &Phone, text: &'t str) -> Vec<&'t str> {
        hits(d, text).into_iter().map(|h| &text[h.0]).collect()
    }

    fn phone() -> Phone {
        Phone::new(PhoneRegions::default())
    }

    #[test]
    fn every_plan_pattern_compiles() {
        for p in PLANS {
            let re = compile_builtin(&format!("(?-u)^(?:{})$", p.valid));
            assert!(!re.is_match(""), "{}", p.region);
        }
        assert!(PLANS.windows(2).all(|w| w[0].region < w[1].region), "sorted for binary search");
    }

    #[test]
    fn regions_are_checked() {
        assert!(PhoneRegions::new(&["us", "DE", "de"]).is_ok_and(|r| r.codes().collect::<Vec<_>>() == ["US", "DE"]));
        assert_eq!(PhoneRegions::new(&["XX"]), Err("unknown phone region `XX`".to_string()));
        assert!(phone_region_known("jp") && !phone_region_known("EU"));
        assert_eq!(PhoneRegions::default().codes().count(), DEFAULT_PHONE_REGIONS.len());
    }

    #[test]
    fn nanp_formats() {
        let d = phone();
        let text = "My US number is (415) 555-0132, and my international one is +1 415 555 0132";
        assert_eq!(found(&d, text), ["(415) 555-0132", "+1 415 555 0132"]);
        assert_eq!(found(&d, "_: (415)555-0132"), ["(415)555-0132"]);
        assert_eq!(found(&d, "dial 1-800-555-1234 or 415.555.0132"), ["1-800-555-1234", "415.555.0132"]);
        assert_eq!(hits(&d, "phone: 415-555-0132")[0].1, 0.85);
        assert_eq!(hits(&d, "see 415-555-0132")[0].1, 0.7);
        assert_eq!(
            found(&d, "desk 345-899-3560x4587 or (898)666-3621 ext. 35"),
            ["345-899-3560x4587", "(898)666-3621 ext. 35"]
        );
    }

    #[test]
    fn international_formats() {
        let d = phone();
        for number in [
            "+44 (20) 7123 4567",
            "+91 4155550132",
            "+55 11 98456 5666",
            "+49 30 1234567",
            "+33 1 42 68 53 00",
            "+30 21 0 1234567",
            "+14155550132",
            "+46 (0)8 928 571 38",
            "+447700 921 916",
            "+1-903-140-4508x769",
            "001-518-640-0854",
            "0044 20 7123 4567",
            "+1.8005551212",
        ] {
            let text = format!("reach me at {number}, thanks");
            assert_eq!(found(&d, &text), [number], "{number}");
        }
        // Valid in its country's plan rates higher than shape alone.
        assert_eq!(hits(&d, "x +49 30 1234567")[0].1, 0.85);
        assert_eq!(hits(&d, "x +41 96 471 07 95")[0].1, 0.65);
    }

    #[test]
    fn national_formats_validated_by_plan() {
        let d = phone();
        for number in [
            "0151 12345678",
            "(0151) 123 4567",
            "06-12345678",
            "020 7123 4567",
            "01 42 68 53 00",
            "01.42.68.53.00",
            "(02) 9374 4000",
            "0412 345 678",
            "02 1234 5678",
            "(11) 2345-6789",
            "03-1234-5678",
            "090-1234-5678",
            "010 1234 5678",
            "081234 56789",
        ] {
            let text = format!("ruf an: {number}");
            assert_eq!(found(&d, &text), [number], "{number}");
            let plain = format!("I wrote {number} down");
            assert_eq!(found(&d, &plain), [number], "{number}");
        }
        // The same digits, not valid in any configured plan.
        assert!(found(&d, "I wrote 0000 123 456 down").is_empty());
        // Without Germany among the regions a German number is not read.
        let us_only = Phone::new(PhoneRegions::new(&["US"]).expect("US is a region"));
        assert!(found(&us_only, "I wrote 0151 12345678 down").is_empty());
    }

    #[test]
    fn context_accepts_local_formats() {
        let d = phone();
        for (text, number) in [
            ("Phone: 467 3395", "467 3395"),
            ("Mobile: 723 813 266", "723 813 266"),
            ("They're not answering at 78 651 450", "78 651 450"),
            ("Desk: 5403926876\nFax: x", "5403926876"),
            ("Phone:\n60-56-85-91", "60-56-85-91"),
            ("930.167.3943 fax", "930.167.3943"),
            ("Telefon 612 34 56 78", "612 34 56 78"),
            ("\"phoneNumber\": \"2065550100\"", "2065550100"),
            ("stop receiving messages to 699 956 915", "699 956 915"),
            ("phoneNumber:206-555-1111", "206-555-1111"),
        ] {
            assert_eq!(found(&d, text), [number], "{text}");
        }
    }

    #[test]
    fn negatives() {
        let d = phone();
        for text in [
            "4155550132",
            "order 13812345678",
            "version 415.555.0132.7",
            "v415-555-0132",
            "x+3.14159265",
            " +3.14159265",
            "id 123-456-7890",
            "+12345",
            "2024-05-17 and 10.0.0.1",
            "release 2.415.555.0132",
            "between 2024 05 17 and 17.05.2024",
            "total 1 234 567 890 bytes",
            "call me about order 01234567",
            "phone: 192.168.100.200",
            "call 3.14159265",
            "built on 2024-11-02T09:14:07Z",
            "sizes [401219584,455081984]",
            "ticket 0151 12345678",
            "invoice INC-20241102-0042",
            "(415) 555-0132-9",
            "0151 12345678.5",
            "{\"callerArn\": \"x\", \"accountId\": \"123456789012\"}",
            "--sms-configuration SnsCallerArn=arn:aws:iam::123456789012:role/sms",
            "\"RangeInBytes\": \"0-1048575\"",
            "phone_number: +01115551212",
            "{\"timestamp\": 1433190184356, \"message\": \"Example Event\"}",
            "contact us about 2960322",
            "postalCode: 91011-1111, phone below",
            "phone: 91011-1111",
            "at 10:30:0151 12345678",
            "wire to DE89 3704 0044 0532 0130 01 today",
            "account 3704 0044 0532 0130 01",
            "call +3.14159265",
        ] {
            assert!(found(&d, text).is_empty(), "{text}: {:?}", found(&d, text));
        }
    }
}
