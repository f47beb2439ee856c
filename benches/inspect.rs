//! Cost of `Detectors::scan` on one ~1,000-token (~4,000-byte) prompt of
//! mixed prose, code and JSON, all detectors on: with a 100-term team
//! dictionary once with nothing to find (near misses included) and once
//! with PII, secrets and a dictionary term; then the same two prompts with
//! a 100,000-term dictionary, to show dictionary cost does not grow with
//! its size. Throughput is reported in bytes of scanned text.
//!
//! Before the criterion groups it prints p50/p99/max per-scan latency over
//! 10,000 timed scans of each case (criterion reports means only).

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice::inspect::{Detectors, Dictionary};

const SYSTEM: &str = "\
You are a senior support engineer for an internal developer platform. Answer \
concisely, cite the runbook section when you can, and never invent configuration \
keys. The platform runs Kubernetes 1.29 in three regions (eu-west-1, us-east-2, \
ap-south-1); the current release is v4.12.3, built on 2024-11-02 from commit \
9f8e7d6c. When a user shares logs, summarise the root cause first, then list at \
most five remediation steps, each under 30 words. If the user includes credentials \
or personal data, tell them to rotate or remove it and do not repeat it back. \
Escalation contact: {CONTACT}. Business hours are 08:00-18:00 CET, Monday to \
Friday; the SLA for P1 incidents is 30 minutes and for P2 incidents 4 hours.";

const USER: &str = r#"Hi, our deploy of the billing-export service started failing after we
bumped the chart to 2.7.1. The pod restarts every 45 seconds with exit code 137.
I'm attaching the config loader and the last tool output. Customer reference:
{CUSTOMER}. The card on file for the test tenant is {CARD}, and finance asked us
to wire refunds to {IBAN} once the export is back.

What we already tried: rolled back the sidecar to 1.4.9, doubled the memory request
to 512Mi for one replica (it lasted 3 minutes longer), and disabled the nightly
compaction job. The heap profile from 09:12 UTC shows about 310 MB held by the export
buffer, which matches batch_size x average row size (512 x ~600 KB). Retries seem to
stack: each failed put_records call keeps its batch alive until the next attempt, so
after four timeouts we hold five batches at once. Is there a supported way to cap
in-flight batches, or should we stream rows instead of buffering them?

```python
import os, json, time
RETRY_DELAYS = [0.5, 1.0, 2.0, 4.0, 8.0]

def load_config(path: str) -> dict:
    with open(path) as fh:
        cfg = json.load(fh)
    cfg.setdefault("timeout_ms", 30000)
    cfg.setdefault("batch_size", 512)
    cfg["aws_access_key_id"] = os.environ.get("AWS_ACCESS_KEY_ID", "{AWS}")
    cfg["github_token"] = os.environ.get("GH_TOKEN", "{GITHUB}")
    return cfg

def export(rows, client, attempt=0):
    try:
        return client.put_records(rows[:512], timeout=30.0)
    except TimeoutError:
        if attempt >= len(RETRY_DELAYS):
            raise
        time.sleep(RETRY_DELAYS[attempt])
        return export(rows, client, attempt + 1)
```

The sidecar is Rust and does the same with a capped exponential backoff:

```rust
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(250);
    base.saturating_mul(2u32.saturating_pow(attempt.min(6)))
}
let client = Client::builder().api_key("{OPENAI}").timeout(Duration::from_secs(60)).build()?;
```
{PEM}
Memory limit is 512Mi and the request is 256Mi; nodes are m6i.2xlarge with 32 GiB.
Call me at {PHONE} if that is easier; HR has my record under {SSN}."#;

const TOOL: &str = r#"{"tool":"kubectl_describe","status":"ok","elapsed_ms":1842,"pod":{"name":"billing-export-7d9f8c6b5-x2x9k","namespace":"billing","node":"ip-10-42-17-201.eu-west-1.compute.internal","host_ip":"{HOST}","restarts":14,"started_at":"2024-11-02T09:14:07Z","image":"registry.internal/billing-export@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","resources":{"limits":{"memory":"512Mi","cpu":"500m"},"requests":{"memory":"256Mi","cpu":"250m"}},"last_state":{"terminated":{"reason":"OOMKilled","exit_code":137,"finished_at":"2024-11-02T09:15:52Z"}}},"events":[{"type":"Warning","reason":"BackOff","count":37,"message":"Back-off restarting failed container"},{"type":"Normal","reason":"Pulled","count":15,"message":"Container image already present on machine"},{"type":"Warning","reason":"Unhealthy","count":9,"message":"Liveness probe failed: Get http://billing-export:8080/healthz: context deadline exceeded"}],"metrics":{"p50_ms":112.4,"p95_ms":870.2,"p99_ms":2210.9,"rss_bytes":[401219584,455081984,498073600,536870912],"gc_pauses_ms":[12,15,11,48,230]},"owner":"{OWNER}","labels":{"app.kubernetes.io/version":"2.7.1","team":"billing","cost-center":"CC-4471-09"}}"#;

/// Placeholder, clean value (near misses where natural), sensitive value.
const FILLS: &[(&str, &str, &str)] = &[
    ("{CONTACT}", "the #platform-oncall channel", "jane.doe@northwind-mail.com"),
    ("{CUSTOMER}", "ticket INC-20241102-0042", "Project Crimson Falcon"),
    ("{CARD}", "4111 1111 1111 1112", "4111 1111 1111 1111"),
    ("{IBAN}", "DE89 3704 0044 0532 0130 01", "DE89 3704 0044 0532 0130 00"),
    ("{AWS}", "unset", "AKIAQ3EGRTYU6WNOP4XZ"),
    ("{GITHUB}", "", "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5"),
    ("{OPENAI}", "${OPENAI_API_KEY}", "sk-proj-Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7Tv9Wx1Yz3Ab5De7T3BlbkFJ"),
    (
        "{PEM}",
        "",
        "-----BEGIN OPENSSH PRIVATE KEY-----\n\
         b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n\
         QyNTUxOQAAACDkL3Xh9mV4rN2sQ8pT6yU1wZ0aB7cD5eF3gH9iJ2kL4mAAAAJh8\n\
         -----END OPENSSH PRIVATE KEY-----",
    ),
    ("{PHONE}", "extension 4471", "(415) 555-0132"),
    ("{SSN}", "000-12-3456", "SSN 219-09-9999"),
    ("{OWNER}", "team-billing", "ann.lee@northwind-mail.com"),
    ("{HOST}", "billing-export.svc", "93.184.215.14"),
];

fn prompt(sensitive: bool) -> Vec<String> {
    [SYSTEM, USER, TOOL]
        .iter()
        .map(|template| {
            FILLS.iter().fold(template.to_string(), |text, (slot, clean, hot)| {
                text.replace(slot, if sensitive { hot } else { clean })
            })
        })
        .collect()
}

/// 100 two-word code names: 10 adjectives x 10 animals.
fn small_dictionary() -> Dictionary {
    const ADJECTIVES: [&str; 10] =
        ["crimson", "silent", "golden", "hollow", "iron", "northern", "quiet", "scarlet", "velvet", "wild"];
    const ANIMALS: [&str; 10] =
        ["falcon", "otter", "badger", "heron", "lynx", "marten", "osprey", "raven", "stoat", "wolf"];
    let terms = ADJECTIVES.iter().flat_map(|a| ANIMALS.iter().map(move |n| format!("{a} {n}")));
    let dict = Dictionary::new(terms).expect("generated terms are not blank");
    assert_eq!(dict.len(), 100);
    dict
}

/// The 100 code names plus 99,900 generated customer-like names
/// ("customer q7k2m"), none of which occurs in the prompts.
fn large_dictionary() -> Dictionary {
    const ADJECTIVES: [&str; 10] =
        ["crimson", "silent", "golden", "hollow", "iron", "northern", "quiet", "scarlet", "velvet", "wild"];
    const ANIMALS: [&str; 10] =
        ["falcon", "otter", "badger", "heron", "lynx", "marten", "osprey", "raven", "stoat", "wolf"];
    let mut terms: Vec<String> =
        ADJECTIVES.iter().flat_map(|a| ANIMALS.iter().map(move |n| format!("{a} {n}"))).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while terms.len() < 100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let name: String = (0..6).map(|i| char::from(b'a' + ((x >> (i * 5)) % 26) as u8)).collect();
        terms.push(format!("customer {name}"));
    }
    terms.sort_unstable();
    terms.dedup();
    let dict = Dictionary::new(&terms).expect("generated terms are not blank");
    assert!(dict.len() > 99_000, "{}", dict.len());
    dict
}

/// p50, p99 and max of `n` timed scans, in microseconds.
fn latency(detectors: &Detectors, dict: &Dictionary, segments: &[&str], n: usize) -> [f64; 3] {
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let start = Instant::now();
            black_box(detectors.scan(black_box(Some(dict)), black_box(segments)));
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    [times[n / 2], times[n * 99 / 100], times[n - 1]]
}

fn bench_scan(c: &mut Criterion) {
    let detectors = Detectors::new();
    let small = small_dictionary();
    let large = large_dictionary();
    let mut group = c.benchmark_group("inspect");
    for (dict_name, dict) in [("dict100", &small), ("dict100k", &large)] {
        for (name, sensitive) in [("clean", false), ("with_findings", true)] {
            let segments = prompt(sensitive);
            let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
            let bytes: usize = segments.iter().map(|s| s.len()).sum();
            // Guard the benchmark's premise, so a detector change that
            // starts flagging the clean prompt (or misses the seeded one)
            // is noticed.
            let found = detectors.scan(Some(dict), &segments);
            if sensitive {
                // Every sensitive fill is found (the codename may also read
                // as a name to the people tagger, so count covered fills,
                // not findings).
                for (_, _, hot) in FILLS {
                    let covered = segments.iter().enumerate().any(|(i, text)| {
                        text.match_indices(hot).any(|(at, _)| {
                            found.iter().any(|f| f.segment == i && f.span.start < at + hot.len() && at < f.span.end)
                        })
                    });
                    assert!(covered, "seeded {hot:?} not found in {found:?}");
                }
            } else {
                assert!(found.is_empty(), "clean prompt produced {found:?}");
            }
            let id = format!("scan_1000_tokens_{name}_{dict_name}");
            let [p50, p99, max] = latency(&detectors, dict, &segments, 10_000);
            eprintln!("{id}: {bytes} bytes, p50 {p50:.1} us, p99 {p99:.1} us, max {max:.1} us");
            group.throughput(Throughput::Bytes(bytes as u64));
            group.bench_function(id, |b| b.iter(|| detectors.scan(black_box(Some(dict)), black_box(&segments))));
        }
    }
    group.finish();
}

/// What the request path does before the policy: read the body (JSON with
/// duplicate keys refused), take stock of every string, parse the dialect,
/// and scan. Once as an OpenAI chat request (parsed), once as the same
/// body on a path sluice does not know (inspected string by string).
fn bench_extract(c: &mut Criterion) {
    use sluice::wire::shapes::{extract, shape_of, Shape};
    use sluice::wire::Dialect;
    let detectors = Detectors::new();
    let dict = small_dictionary();
    let segments = prompt(false);
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": segments[0]},
            {"role": "user", "content": segments[1]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "read_logs", "arguments": "{\"service\":\"billing-export\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": segments[2]},
        ],
        "temperature": 0.2,
    })
    .to_string();
    let chat = Shape::chat(Dialect::OpenAiChat);
    let unknown = shape_of(&http::Method::POST, "/v1/some/new/feature", Dialect::OpenAiChat);
    let mut group = c.benchmark_group("extract");
    group.throughput(Throughput::Bytes(body.len() as u64));
    for (name, shape) in [("chat", chat), ("unknown_shape", unknown)] {
        let run = || {
            let e = extract(shape, "/v1/chat/completions", body.as_bytes(), "application/json").expect("valid body");
            let texts: Vec<&str> = e.inventory.texts().collect();
            let found = detectors.scan(Some(&dict), &texts).len();
            black_box(found)
        };
        assert_eq!(run(), 0, "the clean prompt has no findings in either shape");
        let mut times: Vec<f64> = (0..5_000)
            .map(|_| {
                let start = Instant::now();
                run();
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(f64::total_cmp);
        eprintln!(
            "extract_and_scan_{name}: {} bytes, p50 {:.1} us, p99 {:.1} us",
            body.len(),
            times[times.len() / 2],
            times[times.len() * 99 / 100]
        );
        group.bench_function(format!("extract_and_scan_{name}"), |b| b.iter(run));
    }
    group.finish();
}

criterion_group!(benches, bench_scan, bench_extract);
criterion_main!(benches);
