//! Trains the task classifier's weights (`src/classify/weights.bin`) from the
//! labelled prompts written by `scripts/prepare-task-data`.
//!
//!   scripts/prepare-task-data
//!   cargo run --release --example train_tasks -- data/tasks/train.jsonl src/classify/weights.bin
//!
//! With `--dev`, part of the training file (chosen by hashes of the text, or
//! of the template family and fillers for templated prompts) is
//! kept back and scored instead of writing weights: use that for tuning, and
//! the held-out file only for the final number (`examples/eval_tasks.rs`).
//!
//! Deterministic: fixed shuffle seed, no hash-map iteration, single thread.
//! The model is multinomial logistic regression on the hashed features of
//! `src/classify/features.rs` (included below so both sides hash alike),
//! trained with AdaGrad and class-balanced example weights, then quantised
//! to i16 with one scale for the whole matrix.

#[path = "../src/classify/features.rs"]
#[allow(dead_code)]
mod features;

use std::collections::BTreeMap;
use std::fs;
use std::process::ExitCode;

use features::BUCKETS;

/// Must match `Task::ALL` in `src/classify/mod.rs` (the weights file carries
/// the list and the classifier refuses a different order).
const CLASSES: [&str; 13] = [
    "code_completion",
    "code_generation",
    "code_review_debug",
    "summarization",
    "translation",
    "extraction",
    "classification",
    "closed_qa",
    "open_qa_chat",
    "brainstorming",
    "creative_writing",
    "math_reasoning",
    "research_analysis",
];
const K: usize = CLASSES.len();

/// Defaults; `TRAIN_EPOCHS`, `TRAIN_LR` and `TRAIN_L2` override them (for
/// tuning with `--dev`; the committed weights use the defaults).
const EPOCHS: usize = 12;
const LEARNING_RATE: f32 = 0.2;
const L2: f32 = 1e-5;

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
const SEED: u64 = 0x5eed_7a5c;

struct Example {
    label: usize,
    /// (bucket, value): text features already divided by sqrt(count).
    feats: Vec<(u32, f32)>,
}

#[derive(Default)]
struct Collect {
    text: Vec<u32>,
    shape: Vec<u32>,
}

impl features::Sink for Collect {
    fn text(&mut self, bucket: usize) {
        self.text.push(bucket as u32);
    }
    fn shape(&mut self, bucket: usize) {
        self.shape.push(bucket as u32);
    }
}

fn featurize(text: &str) -> Vec<(u32, f32)> {
    let mut c = Collect::default();
    features::extract(text, &mut c);
    let norm = 1.0 / (c.text.len().max(1) as f32).sqrt();
    // Merge duplicates in bucket order so the sum order is fixed.
    let mut merged: BTreeMap<u32, f32> = BTreeMap::new();
    for b in c.text {
        *merged.entry(b).or_default() += norm;
    }
    for b in c.shape {
        *merged.entry(b).or_default() += 1.0;
    }
    merged.into_iter().collect()
}

/// (text, label index, dev side): `Some(true)` dev, `Some(false)` fit,
/// `None` neither. Like the held-out split, the dev split holds out whole
/// template families and whole fillers (passages, snippets ...): a templated
/// prompt is dev only if its family and all its fillers are, fit only if
/// none are, and otherwise unused.
fn load(path: &str) -> Result<Vec<(String, usize, Option<bool>)>, String> {
    let data = fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = Vec::new();
    for (n, line) in data.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{path}:{}: {e}", n + 1))?;
        let text = v["text"].as_str().ok_or(format!("{path}:{}: no text", n + 1))?;
        let label = v["label"].as_str().ok_or(format!("{path}:{}: no label", n + 1))?;
        let idx = CLASSES.iter().position(|c| *c == label).ok_or(format!("{path}:{}: unknown label {label}", n + 1))?;
        let source = v["source"].as_str().unwrap_or("");
        let side = if source.starts_with("project:") && source != "project:prompts" {
            let mut keys = vec![source.to_string()];
            if let Some(content) = v["content"].as_array() {
                keys.extend(content.iter().filter_map(|c| c.as_str()).map(String::from));
            }
            let dev = keys.iter().filter(|k| fnv(k) % 100 < 25).count();
            if dev == keys.len() {
                Some(true)
            } else if dev == 0 {
                Some(false)
            } else {
                None
            }
        } else {
            Some(fnv(text) % 100 < 15)
        };
        out.push((text.to_string(), idx, side));
    }
    Ok(out)
}

/// FNV-1a, for the deterministic dev split.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

struct Model {
    w: Vec<[f32; K]>,
    b: [f32; K],
}

impl Model {
    fn logits(&self, feats: &[(u32, f32)]) -> [f32; K] {
        let mut z = self.b;
        for &(i, v) in feats {
            let row = &self.w[i as usize];
            for c in 0..K {
                z[c] += row[c] * v;
            }
        }
        z
    }
}

fn softmax(z: &mut [f32; K]) {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0;
    for x in z.iter_mut() {
        *x = (*x - m).exp();
        s += *x;
    }
    for x in z.iter_mut() {
        *x /= s;
    }
}

fn train(examples: &[Example]) -> Model {
    let epochs: usize = knob("TRAIN_EPOCHS", EPOCHS);
    let lr: f32 = knob("TRAIN_LR", LEARNING_RATE);
    let l2: f32 = knob("TRAIN_L2", L2);
    let mut counts = [0usize; K];
    for e in examples {
        counts[e.label] += 1;
    }
    let present = counts.iter().filter(|&&n| n > 0).count().max(1);
    let class_weight: Vec<f32> = counts
        .iter()
        .map(|&n| if n == 0 { 0.0 } else { examples.len() as f32 / (present as f32 * n as f32) })
        .collect();

    let mut m = Model { w: vec![[0.0; K]; BUCKETS], b: [0.0; K] };
    let mut g2w = vec![[1e-6f32; K]; BUCKETS];
    let mut g2b = [1e-6f32; K];
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = Rng(SEED);
    for _ in 0..epochs {
        // Fisher-Yates with the fixed-seed generator.
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for &ix in &order {
            let e = &examples[ix];
            let mut p = m.logits(&e.feats);
            softmax(&mut p);
            let cw = class_weight[e.label];
            let mut g = [0f32; K];
            for c in 0..K {
                g[c] = (p[c] - if c == e.label { 1.0 } else { 0.0 }) * cw;
            }
            for c in 0..K {
                g2b[c] += g[c] * g[c];
                m.b[c] -= lr * g[c] / g2b[c].sqrt();
            }
            for &(i, v) in &e.feats {
                let row = &mut m.w[i as usize];
                let acc = &mut g2w[i as usize];
                for c in 0..K {
                    let grad = g[c] * v + l2 * row[c];
                    acc[c] += grad * grad;
                    row[c] -= lr * grad / acc[c].sqrt();
                }
            }
        }
    }
    m
}

/// Quantises to i16 with one scale, as the classifier stores it.
fn quantize(m: &Model) -> (f32, Vec<[i16; K]>) {
    let max = m.w.iter().flat_map(|r| r.iter()).fold(0f32, |a, &x| a.max(x.abs())).max(1e-9);
    let scale = max / 32767.0;
    let q =
        m.w.iter()
            .map(|r| {
                let mut out = [0i16; K];
                for c in 0..K {
                    out[c] = (r[c] / scale).round().clamp(-32767.0, 32767.0) as i16;
                }
                out
            })
            .collect();
    (scale, q)
}

fn dequantized(m: &Model, scale: f32, q: &[[i16; K]]) -> Model {
    Model {
        w: q.iter()
            .map(|r| {
                let mut out = [0f32; K];
                for c in 0..K {
                    out[c] = f32::from(r[c]) * scale;
                }
                out
            })
            .collect(),
        b: m.b,
    }
}

fn accuracy(m: &Model, examples: &[Example]) -> (f64, f64) {
    let mut tp = [0usize; K];
    let mut pred_n = [0usize; K];
    let mut gold_n = [0usize; K];
    let mut correct = 0;
    for e in examples {
        let z = m.logits(&e.feats);
        let mut best = 0;
        for c in 1..K {
            if z[c] > z[best] {
                best = c;
            }
        }
        pred_n[best] += 1;
        gold_n[e.label] += 1;
        if best == e.label {
            tp[best] += 1;
            correct += 1;
        }
    }
    let mut f1_sum = 0.0;
    let mut present = 0;
    for c in 0..K {
        if gold_n[c] == 0 {
            continue;
        }
        present += 1;
        let p = if pred_n[c] == 0 { 0.0 } else { tp[c] as f64 / pred_n[c] as f64 };
        let r = tp[c] as f64 / gold_n[c] as f64;
        if p + r > 0.0 {
            f1_sum += 2.0 * p * r / (p + r);
        }
    }
    (correct as f64 / examples.len().max(1) as f64, f1_sum / f64::from(present.max(1)))
}

fn write_weights(path: &str, m: &Model, scale: f32, q: &[[i16; K]]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(64 + BUCKETS * K * 2);
    out.extend_from_slice(b"SLTC");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(BUCKETS as u32).to_le_bytes());
    out.extend_from_slice(&(K as u32).to_le_bytes());
    out.extend_from_slice(&scale.to_bits().to_le_bytes());
    for b in m.b {
        out.extend_from_slice(&b.to_bits().to_le_bytes());
    }
    let names = CLASSES.join(",");
    out.extend_from_slice(&(names.len() as u32).to_le_bytes());
    out.extend_from_slice(names.as_bytes());
    for row in q {
        for v in row {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    fs::write(path, out)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dev = args.iter().any(|a| a == "--dev");
    let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let train_path = paths.first().map_or("data/tasks/train.jsonl", |s| s.as_str());
    let out_path = paths.get(1).map_or("src/classify/weights.bin", |s| s.as_str());

    let rows = match load(train_path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("train_tasks: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (held, fit): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .filter(|(_, _, side)| !dev || side.is_some())
        .partition(|(_, _, side)| dev && *side == Some(true));
    let to_examples = |rows: Vec<(String, usize, Option<bool>)>| -> Vec<Example> {
        rows.into_iter().map(|(t, label, _)| Example { label, feats: featurize(&t) }).collect()
    };
    let fit = to_examples(fit);
    let held = to_examples(held);
    let model = train(&fit);
    let (scale, q) = quantize(&model);
    let qm = dequantized(&model, scale, &q);
    let (acc, f1) = accuracy(&qm, &fit);
    println!("train: {} examples, accuracy {acc:.4}, macro-F1 {f1:.4}", fit.len());
    if dev {
        let (acc, f1) = accuracy(&qm, &held);
        println!("dev:   {} examples, accuracy {acc:.4}, macro-F1 {f1:.4}", held.len());
        return ExitCode::SUCCESS;
    }
    match write_weights(out_path, &model, scale, &q) {
        Ok(()) => {
            println!("wrote {out_path}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("train_tasks: {out_path}: {e}");
            ExitCode::FAILURE
        }
    }
}
