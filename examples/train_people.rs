//! Trains the people, places and organisations tagger's weights
//! (`src/inspect/people/weights.bin`) from the labelled sentences written by
//! `scripts/prepare-people-data`.
//!
//!   scripts/prepare-people-data
//!   cargo run --release --example train_people -- data/people/train.jsonl src/inspect/people/weights.bin
//!
//! The model is multinomial logistic regression (nothing, person, address,
//! place, organisation, nationality) over the hashed token features of
//! `src/inspect/people/features.rs` (included below so both sides hash
//! alike), trained with AdaGrad on the candidate tokens only (the detector
//! scores nothing else). The "nothing" class is folded into the other five
//! (scores relative to it), which are quantised to i16 with one scale:
//! 5 x 65,536 x 2 bytes.
//!
//! Deterministic: fixed shuffle seed, single thread. The held-out
//! multilingual set (`data/people/eval.jsonl`) is scored by
//! `examples/eval_pii.rs`, never here.

#[path = "../src/inspect/people/features.rs"]
#[allow(dead_code)]
mod features;

use std::fs;
use std::process::ExitCode;

use features::{BUCKETS, CLASSES, MAX_FEATURES};

const EPOCHS: usize = 8;
const LEARNING_RATE: f32 = 0.15;
const L2: f32 = 1e-6;
const SEED: u64 = 0x7e0_91e5;

struct Example {
    label: usize,
    feats: Vec<u32>,
}

fn load(path: &str) -> Result<Vec<Example>, String> {
    let data = fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let gaz = features::gazetteer();
    let mut out = Vec::new();
    let mut tokens = Vec::new();
    for (n, line) in data.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{path}:{}: {e}", n + 1))?;
        let text = v["text"].as_str().ok_or(format!("{path}:{}: no text", n + 1))?;
        let spans: Vec<(usize, usize, usize)> = v["spans"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        let label = match s[2].as_str()? {
                            "PER" => features::PER,
                            "ADDR" => features::ADDR,
                            "LOC" => features::LOC,
                            "ORG" => features::ORG,
                            "NRP" => features::NRP,
                            _ => return None,
                        };
                        Some((s[0].as_u64()? as usize, s[1].as_u64()? as usize, label))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !features::tokenize(text, gaz, &mut tokens) {
            continue;
        }
        mask_unknown(text, &spans, &mut tokens, n as u64);
        let mut buf = [0u32; MAX_FEATURES];
        for k in 0..tokens.len() {
            if !tokens[k].candidate {
                continue;
            }
            let t = tokens[k];
            let label = spans.iter().find(|s| t.start >= s.0 && t.end <= s.1).map_or(0, |s| s.2);
            let count = features::features(text, &tokens, k, &mut buf);
            out.push(Example { label, feats: buf[..count].to_vec() });
        }
    }
    Ok(out)
}

/// Share of sentences whose names (and, separately, whose other
/// capitalised words) are made unknown: no gazetteer flag and a word hash
/// seen nowhere else. Without it the model learns "in the name list" and
/// nothing else, and misses every name the list lacks.
const MASK_PCT: u64 = 45;

fn mask_unknown(text: &str, spans: &[(usize, usize, usize)], tokens: &mut [features::Token], line: u64) {
    let roll = |salt: u64| mix(line.wrapping_mul(0x9e37_79b9) ^ salt) % 100;
    let mask_names = roll(1) < MASK_PCT;
    let mask_others = roll(2) < MASK_PCT / 2;
    for (i, t) in tokens.iter_mut().enumerate() {
        let label = spans.iter().find(|s| t.start >= s.0 && t.end <= s.1).map_or(0, |s| s.2);
        let capitalised = text[t.start..].chars().next().is_some_and(char::is_uppercase);
        let mask = match label {
            features::PER => mask_names && roll(10 + i as u64) < 80,
            features::ADDR => mask_names && capitalised && roll(10 + i as u64) < 50,
            features::LOC | features::ORG => mask_names && capitalised && roll(10 + i as u64) < 30,
            // Nationalities are a closed list: never unknown.
            features::NRP => false,
            _ => mask_others && capitalised && t.flags & features::TITLE == 0 && roll(10 + i as u64) < 50,
        };
        if mask {
            t.flags = 0;
            t.hash = mix(line << 16 ^ i as u64 ^ 0x5eed);
        }
    }
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// xorshift64*, for a fixed shuffle.
fn shuffle<T>(items: &mut [T], mut state: u64) {
    for i in (1..items.len()).rev() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let j = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

fn train(examples: &mut [Example]) -> Vec<f32> {
    let mut w = vec![0f32; BUCKETS * CLASSES];
    let mut g2 = vec![1e-6f32; BUCKETS * CLASSES];
    let mut counts = [0usize; CLASSES];
    for e in examples.iter() {
        counts[e.label] += 1;
    }
    println!(
        "candidate tokens: none {}, person {}, address {}, place {}, organisation {}, nationality {}",
        counts[0], counts[1], counts[2], counts[3], counts[4], counts[5]
    );
    for epoch in 0..EPOCHS {
        shuffle(examples, SEED ^ epoch as u64);
        let mut loss = 0f64;
        let mut correct = 0usize;
        for e in examples.iter() {
            let mut z = [0f32; CLASSES];
            for &b in &e.feats {
                for (c, zc) in z.iter_mut().enumerate() {
                    *zc += w[b as usize * CLASSES + c];
                }
            }
            let max = z.iter().copied().fold(f32::MIN, f32::max);
            let exp: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            let p: Vec<f32> = exp.iter().map(|v| v / sum).collect();
            loss -= f64::from(p[e.label].max(1e-9).ln());
            let best = (0..CLASSES).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0);
            correct += usize::from(best == e.label);
            for &b in &e.feats {
                for (c, pc) in p.iter().enumerate() {
                    let i = b as usize * CLASSES + c;
                    let grad = pc - f32::from(u8::from(c == e.label)) + L2 * w[i];
                    g2[i] += grad * grad;
                    w[i] -= LEARNING_RATE * grad / g2[i].sqrt();
                }
            }
        }
        println!(
            "epoch {epoch}: loss {:.4}, train accuracy {:.4}",
            loss / examples.len() as f64,
            correct as f64 / examples.len() as f64
        );
    }
    w
}

/// Scores relative to "nothing", quantised: "SLPT", u32 buckets, f32
/// scale, then per bucket the weights of classes 1.. as i16 LE.
fn write(path: &str, w: &[f32]) -> Result<(), String> {
    let rel: Vec<f32> =
        (0..BUCKETS).flat_map(|b| (1..CLASSES).map(move |c| w[b * CLASSES + c] - w[b * CLASSES])).collect();
    let max = rel.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let scale = max / f32::from(i16::MAX);
    let mut out = Vec::with_capacity(12 + rel.len() * 2);
    out.extend_from_slice(b"SLPT");
    out.extend_from_slice(&(BUCKETS as u32).to_le_bytes());
    out.extend_from_slice(&scale.to_le_bytes());
    for v in rel {
        out.extend_from_slice(&((v / scale).round() as i16).to_le_bytes());
    }
    fs::write(path, &out).map_err(|e| format!("{path}: {e}"))?;
    println!("wrote {path}: {} bytes, scale {scale:e}", out.len());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: train_people TRAIN.jsonl WEIGHTS.bin");
        return ExitCode::FAILURE;
    };
    let result = load(input).and_then(|mut examples| {
        let w = train(&mut examples);
        write(output, &w)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
