//! Accuracy of the embedded task classifier on a labelled jsonl file
//! (`{"text": ..., "label": ...}` per line, e.g. the held-out split written
//! by `scripts/prepare-task-data`):
//!
//!   cargo run --release --example eval_tasks -- data/tasks/heldout.jsonl
//!
//! Prints accuracy, macro-F1, per-class precision / recall / F1 / support,
//! and the confusion matrix (rows: true label, columns: predicted).
//! With `--latency` it also times `classify` on every prompt of the file
//! (10 passes) and prints p50 / p99 / max.

use std::fs;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use sluice::classify::{Classifier, Task};

const K: usize = Task::ALL.len();

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let latency = args.iter().any(|a| a == "--latency");
    let Some(path) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: eval_tasks [--latency] FILE.jsonl");
        return ExitCode::FAILURE;
    };
    let data = match fs::read_to_string(path) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("eval_tasks: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rows = Vec::new();
    for (n, line) in data.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        let row = parsed.ok().and_then(|v| {
            let text = v["text"].as_str()?.to_string();
            let label = Task::from_name(v["label"].as_str()?)?;
            Some((text, label))
        });
        match row {
            Some(r) => rows.push(r),
            None => {
                eprintln!("eval_tasks: {path}:{}: not {{text, label}} with a known label", n + 1);
                return ExitCode::FAILURE;
            }
        }
    }

    let classifier = Classifier::new();
    let mut confusion = [[0usize; K]; K];
    let index = |t: Task| Task::ALL.iter().position(|&x| x == t).unwrap_or(0);
    let mut conf_right = Vec::new();
    let mut conf_wrong = Vec::new();
    for (text, gold) in &rows {
        let p = classifier.classify(text);
        confusion[index(*gold)][index(p.task)] += 1;
        if p.task == *gold {
            conf_right.push(p.confidence);
        } else {
            conf_wrong.push(p.confidence);
        }
    }

    let total = rows.len();
    let correct: usize = (0..K).map(|i| confusion[i][i]).sum();
    println!("file: {path}");
    println!("examples: {total}  accuracy: {:.4}", correct as f64 / total.max(1) as f64);
    println!("mean confidence: correct {:.3}, wrong {:.3}", mean(&conf_right), mean(&conf_wrong));
    println!();
    println!("{:<18} {:>9} {:>9} {:>9} {:>8}", "class", "precision", "recall", "f1", "support");
    let mut f1_sum = 0.0;
    let mut present = 0;
    for (i, task) in Task::ALL.iter().enumerate() {
        let tp = confusion[i][i];
        let support: usize = confusion[i].iter().sum();
        let predicted: usize = (0..K).map(|r| confusion[r][i]).sum();
        let precision = ratio(tp, predicted);
        let recall = ratio(tp, support);
        let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        if support > 0 {
            f1_sum += f1;
            present += 1;
        }
        println!("{:<18} {:>9.3} {:>9.3} {:>9.3} {:>8}", task.as_str(), precision, recall, f1, support);
    }
    println!();
    println!("macro-F1: {:.4}  (over {present} classes with support)", f1_sum / f64::from(present.max(1)));
    println!();
    println!("confusion matrix (rows: true, columns: predicted)");
    let short: Vec<String> = Task::ALL.iter().map(|t| abbrev(t.as_str())).collect();
    print!("{:<18}", "");
    for s in &short {
        print!(" {s:>5}");
    }
    println!();
    for (i, task) in Task::ALL.iter().enumerate() {
        print!("{:<18}", task.as_str());
        for c in confusion[i] {
            print!(" {c:>5}");
        }
        println!();
    }

    if latency && !rows.is_empty() {
        let mut times = Vec::with_capacity(rows.len() * 10);
        for _ in 0..10 {
            for (text, _) in &rows {
                let start = Instant::now();
                black_box(classifier.classify(black_box(text)));
                times.push(start.elapsed().as_nanos() as u64);
            }
        }
        times.sort_unstable();
        let pct = |q: f64| times[((times.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        println!();
        println!(
            "latency over {} calls: p50 {:.2} us, p99 {:.2} us, max {:.2} us",
            times.len(),
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
    }
    ExitCode::SUCCESS
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn mean(v: &[f32]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64
    }
}

/// "code_review_debug" -> "crd", "open_qa_chat" -> "oqc".
fn abbrev(name: &str) -> String {
    name.split('_').filter_map(|w| w.chars().next()).collect()
}
