//! Cost of `Classifier::classify` on a short prompt, a ~1,000-token
//! (~4,500-byte) prompt, and a 100 KB prompt (read only in part), then a
//! p99 over 10,000 single calls of the 1,000-token prompt, printed after the
//! criterion groups (criterion reports means, the budget is a p99).

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice::classify::Classifier;

const SHORT: &str = "Translate to German: the meeting has moved to Friday afternoon.";

const PARAGRAPH: &str = "The quarterly report shows revenue of 4.2 million, 6% above plan, \
driven by the Nordic region. Southern Europe missed its target by 180k after two renewals \
slipped into October. Marketing spend was flat, hiring is on hold until January, and the \
board asked for a revised forecast that accounts for the new pricing model. ";

fn long_prompt() -> String {
    let mut s = String::from("Summarize the following report for the leadership team in five bullet points:\n\n");
    while s.len() < 4_500 {
        s.push_str(PARAGRAPH);
    }
    s
}

fn bench(c: &mut Criterion) {
    let classifier = Classifier::new();
    let long = long_prompt();
    let huge = long.repeat(23);
    let mut g = c.benchmark_group("classify");
    for (name, text) in [("short", SHORT), ("1k_tokens", long.as_str()), ("100kb", huge.as_str())] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| b.iter(|| classifier.classify(black_box(text))));
    }
    g.finish();

    let mut times: Vec<u64> = (0..10_000)
        .map(|_| {
            let start = Instant::now();
            black_box(classifier.classify(black_box(&long)));
            start.elapsed().as_nanos() as u64
        })
        .collect();
    times.sort_unstable();
    let us = |q: f64| times[((times.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "classify 1k_tokens ({} bytes), 10000 calls: p50 {:.2} us, p99 {:.2} us, max {:.2} us",
        long.len(),
        us(0.5),
        us(0.99),
        us(1.0)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
