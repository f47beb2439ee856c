//! Table-driven secret rules in the spirit of gitleaks: one entry per
//! credential format, each with the keywords that must be present for its
//! regex to run at all, the capture group holding the secret, and the
//! check that turns a match into a finding.
//!
//! The AWS access key ID, GitHub, OpenAI, Anthropic and PEM private key
//! detectors live in `secrets` (they predate this table and need more
//! code); everything else is here.

use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::Regex;

use super::secrets::{is_placeholder, is_placeholder_value, shannon_entropy, PLACEHOLDER};
use super::{compile_builtin, finding, Category, Detector, Finding, Prescan};

/// What decides whether a regex match is reported.
#[derive(Clone, Copy)]
enum Check {
    /// The format is distinctive enough; only placeholders are demoted.
    Format,
    /// The secret must reach this Shannon entropy (bits per character).
    Entropy(f32),
    /// JWT: the header must decode to a JSON object with "alg".
    Jwt,
    /// Password in a connection URL.
    UrlPassword,
}

struct Spec {
    kind: &'static str,
    keywords: &'static [&'static str],
    pattern: &'static str,
    /// Capture group holding the secret; 0 for the whole match.
    group: usize,
    check: Check,
    confidence: f32,
}

const fn spec(
    kind: &'static str,
    keywords: &'static [&'static str],
    pattern: &'static str,
    group: usize,
    check: Check,
    confidence: f32,
) -> Spec {
    Spec { kind, keywords, pattern, group, check, confidence }
}

use Check::{Entropy, Format, Jwt, UrlPassword};

/// Every table rule. Patterns are ASCII-only (`(?-u:\b)`) so the regex
/// crate keeps to its lazy DFA; each runs only when a keyword is present.
const SPECS: &[Spec] = &[
    // ---- cloud providers
    spec(
        "aws_secret_key",
        &["aws"],
        r#"(?i)aws[a-z0-9_.\-]{0,20}(?:secret|sk|private)[a-z0-9_.\-]{0,20}["']?\s{0,4}(?::=|=>|=|:|,)\s{0,4}["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
        1,
        Entropy(3.5),
        0.9,
    ),
    spec("gcp_service_account", &["private_key_id"], r#""private_key_id"\s*:\s*"([a-f0-9]{40})""#, 1, Format, 0.95),
    spec("gcp_service_account", &["service_account"], r#""type"\s*:\s*"service_account""#, 0, Format, 0.85),
    spec("gcp_api_key", &["aiza"], r"(?-u:\b)AIza[0-9A-Za-z_\-]{35}(?-u:\b)", 0, Format, 0.9),
    spec("azure_storage_key", &["accountkey"], r"(?i)AccountKey=([A-Za-z0-9+/]{86}==)", 1, Format, 0.95),
    spec(
        "azure_storage_key",
        &["sharedaccesssignature", "sig="],
        r"(?i)(?:SharedAccessSignature=|[?&])sv=[0-9\-]{10}&[^\s'\x22]{0,300}?sig=([A-Za-z0-9%+/]{43,60}(?:%3D|=)?)",
        1,
        Format,
        0.9,
    ),
    spec(
        "azure_client_secret",
        &["q~"],
        r"(?:^|[\\'\x22\x60\s>=:(,)])([A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.\-]{31,34})(?:$|[\\'\x22\x60\s<),])",
        1,
        Format,
        0.9,
    ),
    spec(
        "azure_client_secret",
        &["azure", "client_secret", "clientsecret"],
        r#"(?i)(?:azure|client)[a-z0-9_.\-]{0,12}secret["']?\s{0,4}(?::=|=>|=|:)\s{0,4}["']?([A-Za-z0-9_~.\-]{32,44})(?:[^A-Za-z0-9_~.\-]|$)"#,
        1,
        Entropy(3.5),
        0.85,
    ),
    spec("alibaba_key", &["ltai"], r"(?-u:\b)LTAI[A-Za-z0-9]{20}(?-u:\b)", 0, Format, 0.85),
    spec(
        "digitalocean_token",
        &["dop_v1_", "doo_v1_", "dor_v1_"],
        r"(?-u:\b)do[por]_v1_[a-f0-9]{64}(?-u:\b)",
        0,
        Format,
        0.95,
    ),
    spec("heroku_key", &["hrku-"], r"(?-u:\b)HRKU-AA[0-9A-Za-z_\-]{58}(?-u:\b)", 0, Format, 0.95),
    spec(
        "heroku_key",
        &["heroku"],
        r"(?i)heroku[\s\S]{0,40}?(?-u:\b)([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?-u:\b)",
        1,
        Format,
        0.8,
    ),
    spec(
        "flyio_token",
        &["fo1_", "fm1r_", "fm2_"],
        r"(?-u:\b)(?:fo1_[A-Za-z0-9_\-]{43}|fm1[ar]_[A-Za-z0-9+/]{100,}={0,3}|fm2_[A-Za-z0-9+/]{100,}={0,3})",
        0,
        Format,
        0.9,
    ),
    spec("vault_token", &["hvs.", "hvb."], r"(?-u:\b)hv[sb]\.[A-Za-z0-9_\-]{90,300}(?-u:\b)", 0, Format, 0.95),
    spec(
        "terraform_token",
        &["atlasv1"],
        r"(?i)(?-u:\b)[a-z0-9]{14}\.atlasv1\.[a-z0-9\-_=]{60,70}(?-u:\b)",
        0,
        Format,
        0.95,
    ),
    spec("pulumi_token", &["pul-"], r"(?-u:\b)pul-[a-f0-9]{40}(?-u:\b)", 0, Format, 0.9),
    spec(
        "planetscale_token",
        &["pscale_"],
        r"(?-u:\b)pscale_(?:tkn|oauth|pw)_[A-Za-z0-9=\-_.]{32,64}(?-u:\b)",
        0,
        Format,
        0.95,
    ),
    spec("doppler_token", &["dp.pt."], r"(?-u:\b)dp\.pt\.[A-Za-z0-9]{43}(?-u:\b)", 0, Format, 0.95),
    spec("databricks_token", &["dapi"], r"(?-u:\b)dapi[a-f0-9]{32}(?:-[0-9])?(?-u:\b)", 0, Entropy(3.0), 0.85),
    // ---- source hosting and package registries
    spec(
        "gitlab_token",
        &[
            "glpat-",
            "glptt-",
            "gldt-",
            "glrt-",
            "glcbt-",
            "glsoat-",
            "glft-",
            "glimt-",
            "glagent-",
            "gloas-",
            "gr1348941",
        ],
        r"(?-u:\b)(?:gl(?:pat|dt|rt|cbt|soat|ft|imt|agent|oas)-[0-9A-Za-z_\-]{20,300}(?:\.[0-9a-z]{2}[0-9a-z]{7})?|glptt-[0-9a-f]{40}|GR1348941[0-9A-Za-z_\-]{20})(?-u:\b)",
        0,
        Format,
        0.95,
    ),
    spec("npm_token", &["npm_"], r"(?-u:\b)npm_[A-Za-z0-9]{36}(?-u:\b)", 0, Format, 0.95),
    spec("pypi_token", &["pypi-ageichlwas5vcmc"], r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}", 0, Format, 0.95),
    spec(
        "huggingface_token",
        &["hf_", "api_org_"],
        r"(?-u:\b)(?:hf_[A-Za-z]{34}|api_org_[A-Za-z]{34})(?-u:\b)",
        0,
        Entropy(3.0),
        0.9,
    ),
    spec("atlassian_token", &["atatt3"], r"(?-u:\b)ATATT3[A-Za-z0-9_\-=]{186}", 0, Format, 0.95),
    spec(
        "atlassian_token",
        &["atlassian", "confluence", "jira"],
        r#"(?i)(?:atlassian|confluence|jira)[a-z0-9_.\-]{0,20}["']?\s{0,4}(?::=|=>|=|:)\s{0,4}["']?([A-Za-z0-9]{24})(?:[^A-Za-z0-9]|$)"#,
        1,
        Entropy(3.5),
        0.8,
    ),
    spec("linear_key", &["lin_api_"], r"(?-u:\b)lin_api_[A-Za-z0-9]{40}(?-u:\b)", 0, Format, 0.95),
    spec(
        "notion_token",
        &["secret_", "ntn_"],
        r"(?-u:\b)(?:secret_[A-Za-z0-9]{43}|ntn_[0-9]{11}[A-Za-z0-9]{35})(?-u:\b)",
        0,
        Entropy(3.5),
        0.85,
    ),
    spec("postman_key", &["pmak-"], r"(?-u:\b)PMAK-[a-fA-F0-9]{24}-[a-fA-F0-9]{34}(?-u:\b)", 0, Format, 0.95),
    // ---- messaging
    spec(
        "slack_token",
        &["xoxb-", "xoxa-", "xoxp-", "xoxr-", "xoxs-", "xoxo-", "xoxe", "xapp-"],
        r"(?-u:\b)(?:xox[baprseo]-[0-9A-Za-z\-]{10,250}|xoxe\.xox[bp]-[0-9]-[A-Z0-9]{163,166}|xoxe-[0-9]-[A-Z0-9]{146}|xapp-[0-9]-[A-Z0-9]+-[0-9]+-[a-z0-9]+)(?-u:\b)",
        0,
        Format,
        0.95,
    ),
    spec(
        "slack_webhook",
        &["hooks.slack.com"],
        r"(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{43,56}",
        0,
        Format,
        0.95,
    ),
    spec(
        "discord_token",
        &["discord"],
        r"(?i)discord[\s\S]{0,40}?(?-u:\b)([MNO][A-Za-z0-9_\-]{23,25}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,38})(?-u:\b)",
        1,
        Format,
        0.9,
    ),
    spec(
        "discord_token",
        &["discord"],
        r"https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9_\-]{60,68}",
        0,
        Format,
        0.95,
    ),
    spec("telegram_bot_token", &[":aa"], r"(?-u:\b)[0-9]{8,10}:AA[A-Za-z0-9_\-]{33}(?-u:\b)", 0, Format, 0.9),
    spec("twilio_key", &["sk"], r"(?-u:\b)SK[0-9a-fA-F]{32}(?-u:\b)", 0, Entropy(3.0), 0.8),
    spec("sendgrid_key", &["sg."], r"(?-u:\b)SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}(?-u:\b)", 0, Format, 0.95),
    spec("mailgun_key", &["key-"], r"(?-u:\b)key-[0-9a-f]{32}(?-u:\b)", 0, Entropy(3.0), 0.8),
    // ---- payments and commerce
    spec(
        "stripe_key",
        &["sk_live", "sk_test", "sk_prod", "rk_live", "rk_test", "rk_prod", "whsec_"],
        r"(?-u:\b)(?:(?:sk|rk)_(?:live|test|prod)_[0-9A-Za-z]{10,99}|whsec_[0-9A-Za-z]{32,})(?-u:\b)",
        0,
        Format,
        0.95,
    ),
    spec(
        "square_token",
        &["eaaa", "sq0atp-", "sq0csp-"],
        r"(?-u:\b)(?:EAAA[A-Za-z0-9_\-]{60}|sq0atp-[0-9A-Za-z_\-]{22}|sq0csp-[0-9A-Za-z_\-]{43})(?-u:\b)",
        0,
        Entropy(3.0),
        0.9,
    ),
    spec(
        "shopify_token",
        &["shpat_", "shpca_", "shppa_", "shpss_"],
        r"(?-u:\b)shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}(?-u:\b)",
        0,
        Format,
        0.95,
    ),
    // ---- observability
    spec(
        "datadog_key",
        &["datadog", "dd_api", "dd_app", "dd-api", "dd-app"],
        r#"(?i)(?:datadog|dd)[_\-]?(?:api|app(?:lication)?)?[_\-]?key["']?\s{0,4}(?::=|=>|=|:)\s{0,4}["']?([a-f0-9]{40}|[a-f0-9]{32})(?:[^a-f0-9]|$)"#,
        1,
        Entropy(3.0),
        0.9,
    ),
    spec(
        "grafana_token",
        &["glc_", "glsa_", "eyjrijoi"],
        r"(?-u:\b)(?:glc_[A-Za-z0-9+/]{32,400}={0,2}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}|eyJrIjoi[A-Za-z0-9]{70,400}={0,2})",
        0,
        Format,
        0.95,
    ),
    spec("dynatrace_token", &["dt0c01."], r"(?-u:\b)dt0c01\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{64}(?-u:\b)", 0, Format, 0.95),
    spec(
        "newrelic_key",
        &["nrak-", "nrjs-", "nrii-"],
        r"(?-u:\b)(?:NRAK-[A-Za-z0-9]{27}|NRJS-[a-f0-9]{19}|NRII-[A-Za-z0-9\-]{32})(?-u:\b)",
        0,
        Format,
        0.9,
    ),
    spec(
        "sentry_token",
        &["sntrys_", "sntryu_"],
        r"(?-u:\b)(?:sntrys_eyJpYXQiO[A-Za-z0-9+/]{10,200}(?:LCJyZWdpb25fdXJs|InJlZ2lvbl91cmwi|cmVnaW9uX3VybCI6)[A-Za-z0-9+/]{10,200}={0,2}_[A-Za-z0-9+/]{43}|sntryu_[a-f0-9]{64})(?-u:\b)",
        0,
        Format,
        0.95,
    ),
    // ---- credentials of other kinds
    spec(
        "age_secret_key",
        &["age-secret-key-1"],
        r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}",
        0,
        Format,
        0.95,
    ),
    spec(
        "onepassword_token",
        &["ops_ey", "a3-"],
        r"(?-u:\b)(?:ops_eyJ[A-Za-z0-9+/]{250,}={0,3}|A3-[A-Z0-9]{6}-(?:[A-Z0-9]{11}|[A-Z0-9]{6}-[A-Z0-9]{5})-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5})",
        0,
        Format,
        0.9,
    ),
    spec("jwt", &["eyj"], r"(?-u:\b)eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*", 0, Jwt, 0.9),
    spec(
        "database_url",
        &["://"],
        r#"(?i)(?-u:\b)(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|redis|rediss|amqps?|mssql|sqlserver|cockroachdb|clickhouse|jdbc:[a-z]+)://([^:/\s@'"]{0,128}):([^@\s'"/]{1,256})@[A-Za-z0-9.\-_\[\]]+"#,
        2,
        UrlPassword,
        0.95,
    ),
];

pub(super) fn detectors() -> Vec<Box<dyn Detector>> {
    let mut detectors: Vec<Box<dyn Detector>> = SPECS
        .iter()
        .map(|spec| Box::new(Rule { spec, re: compile_builtin(spec.pattern) }) as Box<dyn Detector>)
        .collect();
    detectors.push(Box::new(GenericAssignment::new()));
    detectors
}

/// Number of table rules (for tests and the report).
#[cfg(test)]
pub(super) fn rule_count() -> usize {
    SPECS.len()
}

struct Rule {
    spec: &'static Spec,
    re: Regex,
}

impl Detector for Rule {
    fn keywords(&self) -> &[&'static str] {
        self.spec.keywords
    }

    fn find(&self, text: &str, _: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        for caps in self.re.captures_iter(text) {
            let Some(m) = caps.get(self.spec.group) else {
                continue;
            };
            let secret = m.as_str().as_bytes();
            let span = m.range();
            let Some((conf, validator)) = self.judge(secret) else {
                continue;
            };
            out.push(finding(Category::Secret, self.spec.kind, segment, span, conf, validator));
        }
    }
}

impl Rule {
    /// Confidence and validator for one match, or `None` to drop it.
    fn judge(&self, secret: &[u8]) -> Option<(f32, &'static str)> {
        let conf = self.spec.confidence;
        match self.spec.check {
            Format => {
                if is_placeholder(secret) || is_placeholder_value(secret) {
                    Some((PLACEHOLDER, "pattern"))
                } else {
                    Some((conf, "pattern"))
                }
            }
            Entropy(min) => {
                if is_placeholder(secret) || is_placeholder_value(secret) {
                    Some((PLACEHOLDER, "pattern"))
                } else if shannon_entropy(secret) >= min {
                    Some((conf, "entropy"))
                } else {
                    None
                }
            }
            Jwt => {
                let (conf, ok) = jwt_check(secret, conf);
                ok.then_some((conf, "jwt_header"))
            }
            UrlPassword => (!is_placeholder_value(secret) && !is_placeholder(secret) && secret != b"*")
                .then_some((conf, "url_password")),
        }
    }
}

/// JWT: header and payload are base64url JSON objects, header has "alg".
/// An unsigned token (empty signature or alg "none") ranks lower.
fn jwt_check(token: &[u8], conf: f32) -> (f32, bool) {
    let mut parts = token.split(|&b| b == b'.');
    let (Some(header), Some(payload), Some(signature)) = (parts.next(), parts.next(), parts.next()) else {
        return (0.0, false);
    };
    let Some(header) = base64url_decode(header) else {
        return (0.0, false);
    };
    let Ok(serde_json::Value::Object(header)) = serde_json::from_slice(&header) else {
        return (0.0, false);
    };
    let Some(alg) = header.get("alg").and_then(|a| a.as_str()) else {
        return (0.0, false);
    };
    let payload_ok = base64url_decode(payload).is_some_and(|p| p.first() == Some(&b'{') && p.last() == Some(&b'}'));
    if !payload_ok {
        return (0.0, false);
    }
    if signature.is_empty() || alg.eq_ignore_ascii_case("none") {
        (0.75, true)
    } else {
        (conf, true)
    }
}

/// Decode unpadded base64url (also accepts the standard alphabet).
fn base64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    let s = s.strip_suffix(b"==").or(s.strip_suffix(b"=")).unwrap_or(s);
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

// ---------------------------------------------------- generic assignment

/// Words that make a key name secret-bearing ("db_password", "apiKey",
/// "SERVICE_TOKEN"); longest first within the matcher.
const SECRET_KEY_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "apikey",
    "api_key",
    "api-key",
    "access_key",
    "access-key",
    "accesskey",
    "access_token",
    "accesstoken",
    "auth_token",
    "authtoken",
    "token",
    "credential",
    "credentials",
];
/// After the key word: an optional `_suffix` (group 1), an optional
/// closing quote, an assignment operator, an optional opening quote
/// (group 2) and the value (group 3). Anchored: it runs at each key word's end only.
const ASSIGNMENT_TAIL: &str =
    r#"^((?:[_.\-][A-Za-z0-9_.\-]{0,20})?)["']?\s{0,4}(?::=|=>|=|:)\s{0,4}(["'\x60]?)([^\s"'\x60,;<>(){}\[\]]{6,256})"#;
/// How far left a key name may extend before its key word.
const KEY_PREFIX_MAX: usize = 30;

/// `password = ...`, `"api_key": "..."`, `SERVICE_TOKEN=...`: a value
/// assigned to a secret-sounding key, accepted only if it clears the
/// entropy bar and is no placeholder.
struct GenericAssignment {
    words: AhoCorasick,
    tail: Regex,
}

impl GenericAssignment {
    fn new() -> Self {
        GenericAssignment {
            words: AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostLongest)
                .build(SECRET_KEY_WORDS)
                .expect("constant key words build an automaton"),
            tail: compile_builtin(ASSIGNMENT_TAIL),
        }
    }
}

impl Detector for GenericAssignment {
    fn keywords(&self) -> &[&'static str] {
        SECRET_KEY_WORDS
    }

    fn find(&self, text: &str, pre: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        let key_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
        // Key word spans: from the scan's keyword pass when there was one
        // (no second pass over the text), else from our own matcher.
        let spans: Vec<Range<usize>> = match &pre.keyword_hits {
            Some(hits) => {
                hits.iter().filter(|(w, _)| SECRET_KEY_WORDS.contains(w)).map(|&(w, end)| end - w.len()..end).collect()
            }
            None => self.words.find_iter(text).map(|m| m.range()).collect(),
        };
        let mut last_end = 0;
        for m in spans {
            // Overlapping words ("access_token" and "token") end together
            // and would report the same value twice.
            if m.end <= last_end {
                continue;
            }
            let mut key_start = m.start;
            while key_start > 0 && m.start - key_start < KEY_PREFIX_MAX && key_byte(bytes[key_start - 1]) {
                key_start -= 1;
            }
            let Some(caps) = self.tail.captures(&text[m.end..]) else {
                continue;
            };
            last_end = m.end;
            let (Some(suffix), Some(quote), Some(value)) = (caps.get(1), caps.get(2), caps.get(3)) else {
                continue;
            };
            let key = &text[key_start..m.end + suffix.end()];
            let span = m.end + value.start()..m.end + value.end();
            if let Some((conf, validator)) =
                assignment_check(text, key, quote.as_str(), value.as_str().as_bytes(), &span, 0.7)
            {
                out.push(finding(Category::Secret, "generic_secret", segment, span, conf, validator));
            }
        }
    }
}

/// Key names that hold passwords: shorter, lower-entropy values count.
fn is_password_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "pwd"].iter().any(|w| key.contains(w))
}

/// Decide a `key = value` assignment. Quoted values are literals and need
/// only clear the entropy bar; unquoted ones must also not look like code
/// (an identifier or dotted expression such as `os.environ`).
fn assignment_check(
    text: &str,
    key: &str,
    quote: &str,
    value: &[u8],
    span: &Range<usize>,
    conf: f32,
) -> Option<(f32, &'static str)> {
    let bytes = text.as_bytes();
    // Fields about tokens that are not secrets.
    let lower_key = key.to_ascii_lowercase();
    const NOT_SECRET: &[&str] = &[
        "max_token",
        "num_token",
        "token_count",
        "tokens_",
        "token_type",
        "tokenizer",
        "token_url",
        "token_endpoint",
        "token_uri",
        "secret_name",
        "secret_ref",
        "secretname",
        "secretref",
        "password_hash",
        "password_policy",
        "password_length",
        "auth_type",
        "auth_method",
        "auth_url",
        "authority",
        "author",
        "secret_version",
    ];
    if NOT_SECRET.iter().any(|w| lower_key.contains(w)) {
        return None;
    }
    let quoted = !quote.is_empty();
    if quoted && bytes.get(span.end) != quote.as_bytes().first() {
        return None;
    }
    if is_placeholder_value(value) || is_placeholder(value) {
        return None;
    }
    let password = is_password_key(key);
    let entropy = shannon_entropy(value);
    let has_digit = value.iter().any(u8::is_ascii_digit);
    let has_symbol = value.iter().any(|b| !b.is_ascii_alphanumeric());
    let identifier_like = value.iter().all(|&b| b.is_ascii_alphabetic() || b == b'_' || b == b'.' || b == b'-');
    if !quoted && identifier_like {
        return None;
    }
    let (min_len, min_entropy) = if password { (6, 2.2) } else { (16, 3.3) };
    if value.len() < min_len || entropy < min_entropy {
        return None;
    }
    if !password && !has_digit && !has_symbol {
        return None;
    }
    // High entropy and length make a value look like a machine secret.
    let conf = if entropy >= 4.0 && value.len() >= 20 { conf + 0.1 } else { conf };
    Some((conf, "entropy"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Vec<(&'static str, String, f32)> {
        let mut out = Vec::new();
        for d in detectors() {
            let lower = text.to_ascii_lowercase();
            if d.keywords().iter().any(|k| lower.contains(k)) {
                d.find(text, &Prescan::of(text), 0, &mut out);
            }
        }
        out.into_iter().map(|f| (f.kind, text[f.span].to_string(), f.confidence)).collect()
    }

    fn kinds(text: &str) -> Vec<&'static str> {
        let mut k: Vec<_> = scan(text).into_iter().map(|h| h.0).collect();
        k.sort_unstable();
        k.dedup();
        k
    }

    #[test]
    fn every_rule_compiles_and_kinds_are_declared() {
        assert!(rule_count() >= 44);
        for s in SPECS {
            assert!(super::super::SECRET_KINDS.contains(&s.kind), "{} missing from SECRET_KINDS", s.kind);
            assert!(!s.keywords.is_empty(), "{}", s.kind);
            for k in s.keywords {
                assert_eq!(*k, k.to_ascii_lowercase(), "{}", s.kind);
            }
        }
        assert_eq!(detectors().len(), SPECS.len() + 1);
    }

    #[test]
    fn formats_with_fixed_prefixes() {
        let cases: &[(&str, &str)] = &[
            ("gcp_api_key", "key=AIzaSyD3Ab5De7Fg9Hj1Kl3Mn5Pq7Rs9Tv1Wx3Y"),
            ("gitlab_token", "glpat-aB3dE5fG7hJ9kL1mN3pQ"),
            ("gitlab_token", "GITLAB_TOKEN=glrt-Ab3De5Fg7Hj9Kl1Mn3Pq5Rs"),
            ("slack_token", "xoxb-123456789012-1234567890123-aB3dE5fG7hJ9kL1mN3pQ5rS7"),
            ("slack_webhook", "https://hooks.slack.com/services/T01ABCDEF12/B01ABCDEF34/aB3dE5fG7hJ9kL1mN3pQ5rS7"),
            ("stripe_key", "sk_live_51Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7"),
            ("stripe_key", "rk_live_51Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7"),
            ("twilio_key", "SK0123456789abcdef0123456789abcdef"),
            ("sendgrid_key", "SG.aB3dE5fG7hJ9kL1mN3pQ5r.aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h"),
            ("npm_token", "//registry/:_authToken=npm_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5"),
            ("pypi_token", "pypi-AgEIcHlwaS5vcmcCJGI4YmNhMDA5LTg1NDMtNDQ3Ny1hZDZiLTQwNGJmN2Q4YmYzYwACKlsz"),
            ("huggingface_token", "HF_TOKEN=hf_aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH"),
            ("digitalocean_token", &format!("dop_v1_{}", "a1b2c3d4".repeat(8))),
            ("linear_key", "lin_api_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7f"),
            ("notion_token", "secret_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h"),
            ("shopify_token", "shpat_0123456789abcdef0123456789abcdef"),
            ("telegram_bot_token", "bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1 ok"),
            ("mailgun_key", "key-0123456789abcdef0123456789abcdef"),
            ("square_token", "sq0csp-aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h"),
            ("postman_key", "PMAK-0123456789abcdef01234567-0123456789abcdef0123456789abcdef01"),
            ("databricks_token", "dapi0123456789abcdef0123456789abcdef"),
            ("newrelic_key", "NRAK-AB3DE5FG7HJ9KL1MN3PQ5RS7TV9"),
            ("age_secret_key", "AGE-SECRET-KEY-1QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7LQPZRY9X8GF2TVDW0S3JN54KHCE"),
            ("pulumi_token", "pul-0123456789abcdef0123456789abcdef01234567"),
            ("doppler_token", "dp.pt.aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h"),
            ("azure_client_secret", "secret: \"abc8Q~aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3b\""),
            ("grafana_token", "glsa_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ_0a1b2c3d"),
            ("datadog_key", "DD_API_KEY=0123456789abcdef0123456789abcdef"),
            ("aws_secret_key", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKQ"),
        ];
        for (kind, text) in cases {
            assert!(kinds(text).contains(kind), "{kind}: {text} -> {:?}", scan(text));
        }
    }

    #[test]
    fn gcp_and_azure_blocks() {
        let sa = r#"{"type": "service_account", "project_id": "p", "private_key_id": "0123456789abcdef0123456789abcdef01234567"}"#;
        let hits = scan(sa);
        assert!(hits.iter().any(|h| h.0 == "gcp_service_account" && h.1.len() == 40 && h.2 == 0.95));
        let conn = format!(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={}==;EndpointSuffix=core.windows.net",
            "aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h".repeat(2)
        );
        let hits = scan(&conn);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].0, "azure_storage_key");
        assert_eq!(hits[0].1.len(), 88);
    }

    #[test]
    fn jwt_needs_a_json_header_with_alg() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        assert_eq!(scan(&format!("Bearer {jwt}")), vec![("jwt", jwt.to_string(), 0.9)]);
        // Header {"typ":"JWT"} has no "alg".
        let no_alg = "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijkl";
        assert!(scan(no_alg).is_empty());
        // Not base64 JSON at all.
        assert!(scan("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIi.abc").is_empty());
        let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0NTY3ODkwIn0.";
        assert_eq!(scan(unsigned)[0].2, 0.75);
    }

    #[test]
    fn database_urls_report_the_password() {
        for (url, pw) in [
            ("postgres://app:s3cr3t-P4ss@db.internal:5432/app", "s3cr3t-P4ss"),
            ("mysql://root:Tr0ub4dor&3@10.0.0.5/prod", "Tr0ub4dor&3"),
            ("mongodb+srv://svc:hX9%40pQ2z@cluster0.ab1cd.mongodb.net/db", "hX9%40pQ2z"),
            ("redis://:r3d1sPass@cache:6379/0", "r3d1sPass"),
            ("amqp://guest:9fG7hJ9kL1@rabbit:5672/", "9fG7hJ9kL1"),
        ] {
            let hits = scan(url);
            assert!(hits.iter().any(|h| h.0 == "database_url" && h.1 == pw), "{url}: {hits:?}");
        }
        for url in [
            "postgres://user:password@localhost/db",
            "postgres://user:${DB_PASSWORD}@localhost/db",
            "postgres://user:<password>@localhost/db",
            "postgres://localhost:5432/db",
            "redis://cache:6379",
        ] {
            assert!(!kinds(url).contains(&"database_url"), "{url}");
        }
    }

    #[test]
    fn generic_assignments_gated_by_entropy_and_placeholders() {
        for text in [
            "password = \"hunter2!x\"",
            "DB_PASSWORD=Zx8#kQ2@vL9p",
            "api_key: \"a8f5f167f44f4964e6c998dee827110c\"",
            "\"client_secret\": \"Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7\"",
            "export SERVICE_TOKEN=Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7",
        ] {
            assert_eq!(kinds(text), vec!["generic_secret"], "{text}");
        }
        for text in [
            "password = \"changeme\"",
            "password: ${DB_PASSWORD}",
            "api_key = \"<your-key>\"",
            "api_key = \"xxxxxxxxxxxxxxxxxxxx\"",
            "token = os.environ.get(\"TOKEN\")",
            "password = get_password_from_vault",
            "max_tokens: 4096",
            "tokenizer: bert-base-uncased-v2",
            "The secret: nobody knows",
            "api_key = \"aaaaaaaaaaaaaaaaaaaaaaaa\"",
            "auth_token = \"{{ auth_token }}\"",
            "password=\"your_password_here\"",
        ] {
            assert!(kinds(text).is_empty(), "{text}: {:?}", scan(text));
        }
    }

    #[test]
    fn placeholders_of_fixed_formats_rank_low() {
        let hits = scan("npm_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].2, PLACEHOLDER);
    }

    #[test]
    fn base64url_decoder() {
        assert_eq!(base64url_decode(b"eyJhIjoxfQ").unwrap(), b"{\"a\":1}");
        assert_eq!(base64url_decode(b"_-8").unwrap(), vec![0xff, 0xef]);
        assert!(base64url_decode(b"a$b").is_none());
    }
}
