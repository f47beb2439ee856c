//! Cost of the limit check on the request path: `Limiter::admit` for a team
//! with all three budgets for the team and per user (six counters, two of
//! them reserved), and `settle` of an answer's usage, on the embedded store
//! (sled written through) and on a real `redis-server` on loopback (started
//! here from PATH; skipped without one). Then p50/p99 over 10,000 single
//! admissions, and the throughput of 64 concurrent tasks admitting at once
//! (criterion reports means; the request path cares about tails and
//! contention).

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use sluice::config::LimitsConfig;
use sluice::limits::Limiter;
use sluice::policy::limits::{Budget, Limits, OnLimit};

/// Limits no benchmark reaches, so every admission takes the whole path.
fn limits() -> Limits {
    let budget = Budget {
        requests_per_minute: Some(u64::MAX / 4),
        tokens_per_day: Some(u64::MAX / 4),
        micro_usd_per_month: Some(u64::MAX / 4),
    };
    Limits { team: budget, per_user: budget, on_limit: OnLimit::Block }
}

struct Redis(std::process::Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(dir: &std::path::Path) -> Option<Redis> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let redis = Redis(child, port);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(redis);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn percentiles(name: &str, rt: &tokio::runtime::Runtime, limiter: &Limiter, limits: &Limits) {
    let mut times: Vec<u64> = (0..10_000)
        .map(|i| {
            let user = format!("user{}", i % 50);
            let start = Instant::now();
            black_box(rt.block_on(limiter.admit("payments", &user, limits)).ok());
            start.elapsed().as_nanos() as u64
        })
        .collect();
    times.sort_unstable();
    let us = |q: f64| times[((times.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!("{name}: admit, 10000 calls: p50 {:.1} us, p99 {:.1} us, max {:.1} us", us(0.5), us(0.99), us(1.0));
}

/// 64 tasks on a two-worker runtime, `per_task` admissions each: the
/// admissions per second all of them get through together. The limiter is
/// opened in that runtime (Redis's connection task runs there).
fn concurrent(name: &str, cfg: &LimitsConfig, limits: &Limits, per_task: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let limits = Arc::new(limits.clone());
    let limiter = rt.block_on(async { Limiter::open(cfg, false).unwrap() });
    // The first admission connects (Redis); not part of the measurement.
    rt.block_on(limiter.admit("payments", "warmup", &limits)).ok();
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let (limiter, limits) = (limiter.clone(), limits.clone());
                tokio::spawn(async move {
                    let user = format!("user{t}");
                    for _ in 0..per_task {
                        black_box(limiter.admit("payments", &user, &limits).await.ok());
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let n = 64 * per_task;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name}: 64 concurrent tasks, {n} admissions: {:.0} per second, {:.1} us each",
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let limits = limits();
    let embedded_cfg = LimitsConfig { dir: dir.path().join("limits"), ..LimitsConfig::default() };
    let embedded = Limiter::open(&embedded_cfg, false).unwrap();
    let redis = start_redis(dir.path());
    let redis_cfg = redis
        .as_ref()
        .map(|r| LimitsConfig { store: format!("redis://127.0.0.1:{}/0", r.1), ..LimitsConfig::default() });
    // Opened in the runtime, as `serve` does: usage goes to Redis in batches.
    let shared = redis_cfg.as_ref().map(|cfg| rt.block_on(async { Limiter::open(cfg, false).unwrap() }));
    if shared.is_none() {
        eprintln!("no redis-server on PATH: the Redis store is not measured");
    }
    let stores: Vec<(&str, &Limiter)> = [("embedded", Some(&embedded)), ("redis", shared.as_ref())]
        .into_iter()
        .filter_map(|(n, l)| Some((n, l?)))
        .collect();

    let mut g = c.benchmark_group("limits");
    for (name, limiter) in &stores {
        g.bench_function(format!("{name}/admit"), |b| {
            b.iter(|| rt.block_on(limiter.admit("payments", "alice", black_box(&limits))).ok())
        });
        g.bench_function(format!("{name}/admit_and_settle"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    if let Ok(Some(charge)) = limiter.admit("payments", "alice", black_box(&limits)).await {
                        limiter.settle(charge, 1_200, 3_000);
                    }
                })
            })
        });
    }
    g.finish();

    for (name, limiter) in &stores {
        percentiles(name, &rt, limiter, &limits);
    }
    drop(embedded);
    let second = LimitsConfig { dir: dir.path().join("limits2"), ..LimitsConfig::default() };
    concurrent("embedded", &second, &limits, 2_000);
    if let Some(cfg) = &redis_cfg {
        concurrent("redis", cfg, &limits, 1_000);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
