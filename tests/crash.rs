//! Kill -9 under load loses no record of an answered request
//! (`audit.durability: strict`, the default; issue 16).
//!
//! Each kill point: sluice (restarted on the same data directory) serves
//! 16 concurrent clients sending a mix of relayed answers (whole and
//! streamed), policy blocks and local-tier refusals, each with its own
//! `x-request-id`; after a random delay it is killed with SIGKILL. A request
//! counts as answered when the client read its whole answer, with sluice's
//! `x-request-id` naming it. Then the CLI, as a separate process, must find
//! a record for every answered id (`sluice audit query --json`) and an
//! intact chain (`sluice audit verify`), and the restarted sluice must serve
//! and append after the recovered records.
//!
//! `crash_loop` (ignored) runs many kill points and prints the totals; it is
//! what `scripts/crash-loop` runs for BENCHMARKS.md. Set `CRASH_SEED` to
//! replay a run's kill delays.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::*;

const CLIENTS: usize = 16;
const SECRET_PROMPT: &str = "why does this fail? AKIAIOSFODNN7EXAMPLE is my key";
const CARD_PROMPT: &str = "Charge my card 4111 1111 1111 1111 for the order";

/// What the kill points added up to.
#[derive(Debug, Default)]
struct Totals {
    kill_points: u64,
    answered: u64,
    /// Answered requests without a record.
    lost: Vec<String>,
}

/// A small deterministic generator for the kill delays (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn seed() -> u64 {
    match std::env::var("CRASH_SEED") {
        Ok(seed) => seed.parse().expect("CRASH_SEED is a number"),
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1,
    }
}

/// One client: sends requests until told to stop; returns the ids whose
/// whole answer it read.
async fn client_loop(url: String, round: u64, client: usize, stop: Arc<AtomicBool>) -> Vec<String> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut answered = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let id = format!("crash-{round}-{client}-{n}");
        // Relayed whole, relayed streamed, blocked by policy, kept local
        // (and refused: no local model here).
        let (body, stream) = match n % 4 {
            0 => (chat_body("Write a haiku about rivers", false), false),
            1 => (chat_body("Write a haiku about rivers", true), true),
            2 => (chat_body(SECRET_PROMPT, false), false),
            _ => (chat_body(CARD_PROMPT, false), false),
        };
        let sent = http.post(format!("{url}/v1/chat/completions")).header("x-request-id", &id).json(&body).send().await;
        let Ok(resp) = sent else {
            // Killed, or not up yet: a request that was never answered.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let named = resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()) == Some(id.as_str());
        let status = resp.status();
        let Ok(bytes) = resp.bytes().await else { continue };
        let whole = if stream {
            String::from_utf8_lossy(&bytes).contains("data: [DONE]")
        } else {
            serde_json::from_slice::<Value>(&bytes).is_ok()
        };
        assert!(named, "answer for {id} carries another x-request-id");
        assert!(
            whole && [200, 403, 503].contains(&status.as_u16()),
            "{id}: unexpected answer {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        answered.push(id);
    }
    answered
}

/// Every record's `(seq, request_id)`, via the CLI.
fn records(audit: &std::path::Path) -> Vec<(u64, String)> {
    let out = cli(&["audit", "query", "--json", "--dir"], Some(audit));
    assert!(out.status.success(), "audit query failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let r: Value = serde_json::from_str(line).unwrap();
            (r["seq"].as_u64().unwrap(), r["request_id"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

fn verify(audit: &std::path::Path) {
    let out = cli(&["audit", "verify", "--dir"], Some(audit));

    assert!(
        out.status.success(),
        "audit verify failed after a crash:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One request after a restart; returns its id.
async fn probe(sluice: &SluiceProc, round: u64) -> String {
    let id = format!("after-restart-{round}");
    let resp = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .header("x-request-id", &id)
        .json(&chat_body("hello again", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "sluice does not serve after recovering:\n{}", sluice.log());
    resp.bytes().await.unwrap();
    id
}

/// `durability` is `audit.durability`; empty is the default (strict).
async fn run(kill_points: u64, durability: &str) -> Totals {
    let seed = seed();
    eprintln!("crash test: {kill_points} kill points, CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let fake = FakeProvider::start().await;
    fake.record_requests(false);
    let audit = if durability.is_empty() { String::new() } else { format!("durability: {durability}") };
    let mut sluice = SluiceProc::start(&fake, Setup { audit, ..Setup::default() }).await;
    if durability.is_empty() {
        assert!(!sluice.log().contains("batched"), "strict is the default");
    }
    let audit = sluice.audit_dir();
    let mut totals = Totals::default();
    // The probe sent after the previous restart, and the last seq before it.
    let mut after_restart: Option<(String, u64)> = None;
    for round in 1..=kill_points {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(Mutex::new(Vec::new()));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (url, stop, answered) = (sluice.url(""), stop.clone(), answered.clone());
                tokio::spawn(async move {
                    let ids = client_loop(url, round, c, stop).await;
                    answered.lock().unwrap().extend(ids);
                })
            })
            .collect();
        // Anywhere from the first requests to well into steady load.
        let delay = Duration::from_millis(20 + rng.below(480));
        tokio::time::sleep(delay).await;
        sluice.kill9();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
        let answered = std::mem::take(&mut *answered.lock().unwrap());

        verify(&audit);
        let recorded = records(&audit);
        let ids: HashSet<&str> = recorded.iter().map(|(_, id)| id.as_str()).collect();
        let lost: Vec<String> = answered.iter().filter(|id| !ids.contains(id.as_str())).cloned().collect();
        if !lost.is_empty() {
            eprintln!(
                "kill point {round} (after {delay:?}): {} of {} answered requests lost",
                lost.len(),
                answered.len()
            );
        }
        if let Some((id, seq_before)) = after_restart.take() {
            let seq = recorded.iter().find(|(_, r)| *r == id).map(|(seq, _)| *seq);
            assert_eq!(seq, Some(seq_before + 1), "the restarted sluice appends right after the recovered records");
        }
        totals.kill_points += 1;
        totals.answered += answered.len() as u64;
        totals.lost.extend(lost);
        if round % 25 == 0 {
            eprintln!("{round} kill points, {} answered, {} lost", totals.answered, totals.lost.len());
        }

        sluice.restart().await;
        let last_seq = recorded.last().map_or(0, |(seq, _)| *seq);
        after_restart = Some((probe(&sluice, round).await, last_seq));
    }
    // A clean stop flushes everything and leaves no write-ahead log behind.
    assert!(sluice.stop().success(), "unclean exit:\n{}", sluice.log());
    let wal = audit.join("wal");
    let left: Vec<_> = std::fs::read_dir(&wal).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "segments left after a clean shutdown: {left:?}");
    verify(&audit);
    let recorded = records(&audit);
    if let Some((id, seq_before)) = after_restart {
        let seq = recorded.iter().find(|(_, r)| *r == id).map(|(seq, _)| *seq);
        assert_eq!(seq, Some(seq_before + 1));
    }
    totals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_no_answered_record() {
    let started = Instant::now();
    let totals = run(4, "").await;
    eprintln!("{totals:?} in {:?}", started.elapsed());
    assert!(totals.answered > 0, "no request was answered before the kills");
    assert!(totals.lost.is_empty(), "answered requests without a record: {:?}", totals.lost);
}

/// Many kill points; `scripts/crash-loop` runs it with `CRASH_ROUNDS`, and
/// `CRASH_DURABILITY=batched` for the control run that shows the test can
/// see a loss (it then reports the losses rather than failing).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "minutes long: run by scripts/crash-loop"]
async fn crash_loop() {
    let rounds = std::env::var("CRASH_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(300);
    let durability = std::env::var("CRASH_DURABILITY").unwrap_or_default();
    let started = Instant::now();
    let totals = run(rounds, &durability).await;
    println!(
        "crash loop ({}): {} kill points, {} answered requests, {} lost, {:.0} s",
        if durability.is_empty() { "strict" } else { durability.as_str() },
        totals.kill_points,
        totals.answered,
        totals.lost.len(),
        started.elapsed().as_secs_f64()
    );
    if durability != "batched" {
        assert!(totals.lost.is_empty(), "answered requests without a record: {:?}", totals.lost);
    }
}
