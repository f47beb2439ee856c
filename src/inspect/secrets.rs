//! Secret detectors: AWS access key IDs, GitHub tokens, OpenAI and
//! Anthropic API keys, and PEM / OpenSSH private key blocks; plus the
//! placeholder and entropy helpers the table rules in `rules` share.
//!
//! Every pattern starts with a fixed literal ("AKIA", "ghp_", "sk-",
//! "-----BEGIN"), which the regex crate turns into a fast substring
//! prefilter, so text without such a literal costs one quick pass each.
//! Word boundaries keep substrings of longer tokens out.

use std::ops::Range;

use regex::Regex;

use super::{compile_builtin, context_near, finding, Category, Detector, Finding, Prescan};

/// The secret detectors, in no particular order (`scan` sorts the output).
pub(super) fn detectors() -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(AwsAccessKey::new()),
        Box::new(GithubToken::new()),
        Box::new(OpenAiKey::new()),
        Box::new(AnthropicKey::new()),
        Box::new(PrivateKey::new()),
    ]
}

fn secret(kind: &'static str, segment: usize, span: Range<usize>, confidence: f32) -> Finding {
    finding(Category::Secret, kind, segment, span, confidence, "pattern")
}

/// Confidence for documentation placeholders ("AKIA...EXAMPLE",
/// "ghp_xxxx..."): still reported, since test suites and red-team prompts
/// use exactly these, but ranked below real-looking keys.
pub(super) const PLACEHOLDER: f32 = 0.6;

/// A body whose letters and digits are one repeated character
/// ("xxxx_xxxx") is a placeholder, not a key.
pub(super) fn is_placeholder(body: &[u8]) -> bool {
    let mut alnum = body.iter().filter(|b| b.is_ascii_alphanumeric());
    let first = alnum.next();
    alnum.all(|b| Some(b) == first)
}

/// Values that stand in for a secret in docs, templates and config:
/// whole words ("changeme", "none"), template syntax ("${VAR}",
/// "{{ x }}", "<your-key>"), masks ("****", "xxxx") and lookups
/// ("os.environ", "process.env").
pub(super) fn is_placeholder_value(value: &[u8]) -> bool {
    const WHOLE: &[&str] = &[
        "password",
        "passwd",
        "secret",
        "changeme",
        "none",
        "null",
        "nil",
        "true",
        "false",
        "undefined",
        "required",
        "optional",
        "string",
        "empty",
        "test",
        "testing",
        "admin",
        "root",
        "pass",
        "value",
        "token",
        "default",
        "example",
        "sample",
        "dummy",
        "redacted",
        "hidden",
        "masked",
        "replace_me",
        "replaceme",
        "todo",
        "fixme",
        "mypassword",
        "password123",
        "secret123",
        "letmein",
        "qwerty",
        "12345678",
        "123456",
    ];
    const INSIDE: &[&str] = &[
        "xxxx",
        "****",
        "....",
        "<your",
        "your_",
        "your-",
        "yourpassword",
        "yoursecret",
        "yourkey",
        "yourtoken",
        "changeme",
        "change_me",
        "change-me",
        "placeholder",
        "redacted",
        "example",
        "${",
        "{{",
        "$(",
        "%(",
        "process.env",
        "os.environ",
        "getenv",
        "secrets.",
        "insert_",
        "insert-",
        "dummy",
        "fake",
        "sample",
    ];
    let lower = value.to_ascii_lowercase();
    let Ok(lower) = std::str::from_utf8(&lower) else {
        return false;
    };
    let trimmed = lower.trim_matches(|c: char| matches!(c, '"' | '\'' | '<' | '>' | '[' | ']'));
    value.first() == Some(&b'$') || WHOLE.contains(&trimmed) || INSIDE.iter().any(|w| lower.contains(w))
}

/// Shannon entropy of `s` in bits per byte.
pub(super) fn shannon_entropy(s: &[u8]) -> f32 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f32;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f32 / n;
            -p * p.log2()
        })
        .sum()
}

/// Random-looking: upper- and lowercase letters and digits all present.
/// Real keys have all three; prose-like "sk-learn-model-selection" has not.
fn looks_random(body: &[u8]) -> bool {
    body.iter().any(u8::is_ascii_digit)
        && body.iter().any(u8::is_ascii_uppercase)
        && body.iter().any(u8::is_ascii_lowercase)
}

/// `(plain, boosted)` confidence: boosted when a context word ("key",
/// "token", ...) is near the match.
fn with_context(text: &str, span: &Range<usize>, words: &[&str], conf: (f32, f32)) -> f32 {
    if context_near(text, span, words) {
        conf.1
    } else {
        conf.0
    }
}

// ------------------------------------------------------------------- AWS

const AWS_ACCESS_KEY: &str = r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?-u:\b)";
const AWS_CONTEXT: &[&str] = &["aws", "access key", "access_key", "accesskey", "key"];

struct AwsAccessKey {
    re: Regex,
}

impl AwsAccessKey {
    fn new() -> Self {
        AwsAccessKey { re: compile_builtin(AWS_ACCESS_KEY) }
    }
}

impl Detector for AwsAccessKey {
    fn keywords(&self) -> &[&'static str] {
        &["akia", "asia", "abia", "acca"]
    }

    fn find(&self, text: &str, _: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        for m in self.re.find_iter(text) {
            let body = &m.as_str().as_bytes()[4..];
            let span = m.range();
            let conf = if is_placeholder(body) || body.ends_with(b"EXAMPLE") {
                PLACEHOLDER
            } else {
                with_context(text, &span, AWS_CONTEXT, (0.8, 0.85))
            };
            out.push(secret("aws_access_key", segment, span, conf));
        }
    }
}

// ---------------------------------------------------------------- GitHub

/// Classic tokens (personal, OAuth, user-to-server, server-to-server,
/// refresh) and fine-grained personal access tokens.
const GITHUB_TOKEN: &str = r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})(?-u:\b)";
const GITHUB_CONTEXT: &[&str] = &["github", "token", "gh_", "pat"];

struct GithubToken {
    re: Regex,
}

impl GithubToken {
    fn new() -> Self {
        GithubToken { re: compile_builtin(GITHUB_TOKEN) }
    }
}

impl Detector for GithubToken {
    fn keywords(&self) -> &[&'static str] {
        &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"]
    }

    fn find(&self, text: &str, _: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        for m in self.re.find_iter(text) {
            let s = m.as_str().as_bytes();
            let body = if s.starts_with(b"github_pat_") { &s[11..] } else { &s[4..] };
            let span = m.range();
            let conf =
                if is_placeholder(body) { PLACEHOLDER } else { with_context(text, &span, GITHUB_CONTEXT, (0.85, 0.9)) };
            out.push(secret("github_token", segment, span, conf));
        }
    }
}

// ---------------------------------------------------------------- OpenAI

/// Any "sk-" token; Anthropic's "sk-ant-" is excluded in code because the
/// regex crate has no lookahead.
const OPENAI_KEY: &str = r"(?-u:\b)sk-[A-Za-z0-9_\-]{20,}";
const OPENAI_CONTEXT: &[&str] = &["openai", "api key", "api_key", "apikey", "bearer", "key", "token"];
/// Project, service-account, admin and legacy project-less key prefixes.
const OPENAI_PREFIXES: &[&[u8]] = &[b"proj-", b"svcacct-", b"admin-", b"None-"];
/// Base64 of "OpenAI", embedded in every key issued since 2023.
const OPENAI_MARKER: &[u8] = b"T3BlbkFJ";

struct OpenAiKey {
    re: Regex,
}

impl OpenAiKey {
    fn new() -> Self {
        OpenAiKey { re: compile_builtin(OPENAI_KEY) }
    }
}

impl Detector for OpenAiKey {
    fn keywords(&self) -> &[&'static str] {
        &["sk-"]
    }

    fn find(&self, text: &str, _: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        for m in self.re.find_iter(text) {
            let s = trim_trailing_dashes(m.as_str().as_bytes());
            let rest = &s[3..];
            if rest.starts_with(b"ant-") {
                continue;
            }
            let body = OPENAI_PREFIXES.iter().find_map(|p| rest.strip_prefix(*p)).unwrap_or(rest);
            if body.len() < 20 || !looks_random(body) {
                continue;
            }
            let span = m.start()..m.start() + s.len();
            let marked = body.windows(OPENAI_MARKER.len()).any(|w| w == OPENAI_MARKER);
            let conf = if marked { (0.85, 0.9) } else { (0.75, 0.8) };
            let conf = with_context(text, &span, OPENAI_CONTEXT, conf);
            out.push(secret("openai_key", segment, span, conf));
        }
    }
}

/// A greedy `[A-Za-z0-9_-]+` also eats a dash that ends a sentence or
/// joins the next word; keys never end in one.
fn trim_trailing_dashes(s: &[u8]) -> &[u8] {
    let keep = s.iter().rposition(|&b| b != b'-').map_or(0, |i| i + 1);
    &s[..keep]
}

// ------------------------------------------------------------- Anthropic

const ANTHROPIC_KEY: &str = r"(?-u:\b)sk-ant-[A-Za-z0-9_\-]{20,}";
const ANTHROPIC_CONTEXT: &[&str] = &["anthropic", "claude", "api key", "api_key", "x-api-key", "key"];

struct AnthropicKey {
    re: Regex,
}

impl AnthropicKey {
    fn new() -> Self {
        AnthropicKey { re: compile_builtin(ANTHROPIC_KEY) }
    }
}

impl Detector for AnthropicKey {
    fn keywords(&self) -> &[&'static str] {
        &["sk-ant-"]
    }

    fn find(&self, text: &str, _: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        for m in self.re.find_iter(text) {
            let s = trim_trailing_dashes(m.as_str().as_bytes());
            let rest = &s[7..];
            // Typed keys look like "api03-…" or "admin01-…".
            let (typed, body) = match split_key_type(rest) {
                Some(body) => (true, body),
                None => (false, rest),
            };
            let has_letter = body.iter().any(u8::is_ascii_alphabetic);
            if body.len() < 20 || !has_letter || !body.iter().any(u8::is_ascii_digit) {
                continue;
            }
            let span = m.start()..m.start() + s.len();
            let conf = if typed && body.len() >= 80 { (0.85, 0.9) } else { (0.75, 0.8) };
            let conf = with_context(text, &span, ANTHROPIC_CONTEXT, conf);
            out.push(secret("anthropic_key", segment, span, conf));
        }
    }
}

/// Body after a "letters + two digits + dash" type tag, if there is one.
fn split_key_type(rest: &[u8]) -> Option<&[u8]> {
    let letters = rest.iter().take_while(|b| b.is_ascii_lowercase()).count();
    let tag = rest.get(letters..letters + 3)?;
    let tagged = letters > 0 && tag[0].is_ascii_digit() && tag[1].is_ascii_digit() && tag[2] == b'-';
    tagged.then(|| &rest[letters + 3..])
}

// ----------------------------------------------------------- private key

const PRIVATE_KEY_HEADER: &str = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----";
const END_MARKER: &str = "-----END";
/// An 8192-bit RSA key in PEM is about 6.5 KB; an END marker further away
/// than this belongs to something else.
const MAX_KEY_BODY: usize = 16 * 1024;
/// A real key body has at least this many base64 characters.
const MIN_KEY_BODY: usize = 64;

struct PrivateKey {
    re: Regex,
}

impl PrivateKey {
    fn new() -> Self {
        PrivateKey { re: compile_builtin(PRIVATE_KEY_HEADER) }
    }
}

impl Detector for PrivateKey {
    fn keywords(&self) -> &[&'static str] {
        &["-----begin"]
    }

    /// The span runs from the BEGIN line through the END line's closing
    /// dashes; without an END line, through the base64 that follows.
    fn find(&self, text: &str, _: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        // Position of the next END marker at or after `from`, cached so that
        // many headers without END lines still cost one pass in total.
        let mut next_end: Option<Option<usize>> = None;
        let mut pos = 0;
        while let Some(m) = self.re.find_at(text, pos) {
            let body_start = m.end();
            let end_marker = match next_end {
                Some(Some(e)) if e >= body_start => Some(e),
                Some(None) => None,
                _ => {
                    let found = text[body_start..].find(END_MARKER).map(|i| body_start + i);
                    next_end = Some(found);
                    found
                }
            }
            .filter(|&e| e - body_start <= MAX_KEY_BODY);
            let (body_end, end) = match end_marker {
                Some(e) => (e, end_line_end(bytes, e + END_MARKER.len())),
                None => {
                    let run =
                        bytes[body_start..].iter().take_while(|&&b| is_base64(b) || b == b'\n' || b == b'\r').count();
                    (body_start + run, body_start + run)
                }
            };
            let body = bytes[body_start..body_end].iter().filter(|&&b| is_base64(b)).count();
            let conf = if end_marker.is_some() && body >= MIN_KEY_BODY {
                0.85
            } else if body >= MIN_KEY_BODY {
                0.75
            } else {
                PLACEHOLDER
            };
            out.push(secret("private_key", segment, m.start()..end, conf));
            pos = end.max(m.end());
        }
    }
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

/// End of an END line that starts its label at `from`: just past the
/// closing "-----", or, if that is missing, the end of the label's ASCII
/// text on that line (bounded, and never inside a multi-byte character).
fn end_line_end(bytes: &[u8], from: usize) -> usize {
    let label = bytes[from..].iter().take(64).take_while(|&&b| b != b'\n' && b != b'\r' && b.is_ascii()).count();
    let line = &bytes[from..from + label];
    match line.windows(5).position(|w| w == b"-----") {
        Some(i) => from + i + 5,
        None => from + label,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(d: &dyn Detector, text: &str) -> Vec<(Range<usize>, f32)> {
        let mut out = Vec::new();
        d.find(text, &Prescan::of(text), 0, &mut out);
        for f in &out {
            assert_eq!(f.category, Category::Secret);
            assert_eq!(f.validator, "pattern");
        }
        out.into_iter().map(|f| (f.span, f.confidence)).collect()
    }

    fn spans(d: &dyn Detector, text: &str) -> Vec<Range<usize>> {
        hits(d, text).into_iter().map(|h| h.0).collect()
    }

    const OPENAI_PROJ: &str = "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";
    const ANTHROPIC: &str =
        "sk-ant-api03-abc123xyz-456def789ghij-klmnopqrstuvwx-3456yza789bcde-1234fghijklmnopby56aaaogaopaaaabc123xyzAA";

    #[test]
    fn aws_keys() {
        let d = AwsAccessKey::new();
        assert_eq!(hits(&d, "AKIALALEMEL33243OLIB"), vec![(0..20, 0.8)]);
        assert_eq!(hits(&d, "aws key: ASIAY34FZKBOKMUTVV7A"), vec![(9..29, 0.85)]);
        assert_eq!(hits(&d, "id=AKIAIOSFODNN7EXAMPLE"), vec![(3..23, PLACEHOLDER)]);
        assert_eq!(hits(&d, "AKIAXXXXXXXXXXXXXXXX"), vec![(0..20, PLACEHOLDER)]);
        // Part of a longer token, too short, lowercase, or not a key prefix.
        for text in [
            "XAKIALALEMEL33243OLIB",
            "AKIALALEMEL33243OLIBX",
            "AKIALALEMEL33243OLI",
            "akialalemel33243olib",
            "TODAYINASIAASACKOFRICEFELLOVER",
            "AKIBLALEMEL33243OLIB",
        ] {
            assert!(spans(&d, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn github_tokens() {
        let d = GithubToken::new();
        let classic = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5";
        for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
            let token = format!("{prefix}{}", &classic[4..]);
            let text = format!("token = \"{token}\"");
            assert_eq!(hits(&d, &text), vec![(9..49, 0.9)], "{prefix}");
        }
        let fine = format!("github_pat_11ABCDEFG0{}_{}", "a1B2c3D4e5F6", "x9Y8".repeat(14) + "Zz1");
        assert_eq!(fine.len(), 93);
        assert_eq!(hits(&d, &format!("use {fine} here")), vec![(4..97, 0.85)]);
        assert_eq!(hits(&d, "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), vec![(0..40, PLACEHOLDER)]);
        let fake_pat = format!("github_pat_{}_{}", "x".repeat(22), "x".repeat(59));
        assert_eq!(hits(&d, &fake_pat), vec![(0..93, PLACEHOLDER)]);
        for text in [
            "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC",
            "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5d",
            "xghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5",
            "ghx_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5",
        ] {
            assert!(spans(&d, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn openai_keys() {
        let d = OpenAiKey::new();
        assert_eq!(hits(&d, OPENAI_PROJ), vec![(0..OPENAI_PROJ.len(), 0.85)]);
        let svc =
            "sk-svcacct-0Zkr4NUd4f_6LkfHfi3LlC8xKZQePXJCb21UiUWGX0F3_-6jv9PpY9JtaoooN9CCUPltpFiamwT3BlbkFJZVaaY7Z2aq";
        let text = format!("OPENAI_API_KEY={svc}\n");
        assert_eq!(hits(&d, &text), vec![(15..15 + svc.len(), 0.9)]);
        let legacy = "sk-aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9hJ1kL";
        assert_eq!(hits(&d, &format!("({legacy}-)")), vec![(1..1 + legacy.len(), 0.75)]);
    }

    #[test]
    fn openai_negatives() {
        let d = OpenAiKey::new();
        for text in [
            ANTHROPIC,
            "install sk-learn-model-selection-helpers",
            "task-aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3",
            "sk-aB3dE5fG7hJ9kL1m",
            "sk-proj-short1A",
        ] {
            assert!(spans(&d, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn anthropic_keys() {
        let d = AnthropicKey::new();
        let text = format!("x-api-key: {ANTHROPIC}");
        assert_eq!(hits(&d, &text), vec![(11..11 + ANTHROPIC.len(), 0.9)]);
        let short = "sk-ant-api03-Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7Tv9Wx1Yz3";
        assert_eq!(hits(&d, &format!("{short}.")), vec![(0..short.len(), 0.75)]);
        assert!(spans(&d, "sk-ant-docs-and-examples-here").is_empty());
        assert!(spans(&d, "mask-ant-api03-Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7Tv9Wx1Yz3").is_empty());
    }

    #[test]
    fn private_key_block_spans_through_end_line() {
        let d = PrivateKey::new();
        let body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDAC4AWkdwKYSd8\n\
                    Ks14IReLcYgADhoXk56ZzXI=\n";
        for label in ["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED "] {
            let block = format!("-----BEGIN {label}PRIVATE KEY-----\n{body}-----END {label}PRIVATE KEY-----");
            let text = format!("here:\n{block}\nthanks");
            assert_eq!(hits(&d, &text), vec![(6..6 + block.len(), 0.85)], "{label:?}");
        }
        let pgp = "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQWGBGSVV4YBDAClvRnxezIRy2Yv7SFlzC0iFiRF/O/jePSw+XYhvcrTaqSYTGic\n=8xQN\n-----END PGP PRIVATE KEY BLOCK-----";
        assert_eq!(spans(&d, pgp), vec![0..pgp.len()]);
    }

    #[test]
    fn private_key_without_end_or_body() {
        let d = PrivateKey::new();
        let truncated =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpQIBAAKCAQEAn6/O8li+SX4m98LLYt/PKSzEmQ++ZBD7Loh9P13f4yQ92EF3\nyxR5";
        let text = format!("{truncated} is what I have");
        assert_eq!(hits(&d, &text), vec![(0..truncated.len(), 0.75)]);
        let fake = "-----BEGIN PRIVATE KEY-----\nanything\n-----END PRIVATE KEY-----";
        assert_eq!(hits(&d, fake), vec![(0..fake.len(), PLACEHOLDER)]);
        let empty = "-----BEGIN OPENSSH PRIVATE KEY----------END OPENSSH PRIVATE KEY-----";
        assert_eq!(spans(&d, empty), vec![0..empty.len()]);
        assert!(spans(&d, "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----").is_empty());
    }

    #[test]
    fn many_private_key_blocks_are_each_reported() {
        let d = PrivateKey::new();
        let block = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----";
        let text = [block, block, "-----BEGIN PRIVATE KEY-----"].join("\n");
        let n = block.len();
        assert_eq!(spans(&d, &text), vec![0..n, n + 1..2 * n + 1, 2 * n + 2..text.len()]);
    }
}
