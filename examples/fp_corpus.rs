//! False alarms on clean text: scans prompts that carry no personal data
//! (public task sets) and counts what the detectors report, per type.
//!
//!     cargo run --release --example fp_corpus -- [--show KIND] [FILE.jsonl | DIR ...]
//!
//! Without files it reads every `*.jsonl` in `../shared/data/tasks` and
//! `../shared/data/tasks/routellm` (GSM8K and MMLU questions: numbers of
//! every kind). Each line's `prompt`, `question`, `instruction`,
//! `user_prompt` and `turns` (strings, or objects with `content`) are
//! scanned, and the `input` of `instances`. A directory stands for every
//! `.md`, `.rst` and `.txt` file under it, each scanned paragraph by
//! paragraph: documentation is a clean corpus of its own, full of example
//! addresses, documentation IPs and version numbers.
//! Every finding on this corpus is a false alarm, except where a prompt
//! really quotes an address or number (`--show KIND` prints each finding of
//! that type with its surroundings, to check).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use sluice::inspect::Detectors;

fn texts(line: &Value, out: &mut Vec<String>) {
    for key in ["prompt", "question", "instruction", "user_prompt"] {
        if let Some(s) = line[key].as_str() {
            out.push(s.to_string());
        }
    }
    for turn in line["turns"].as_array().into_iter().flatten() {
        match turn {
            Value::String(s) => out.push(s.clone()),
            other => out.extend(other["content"].as_str().map(str::to_string)),
        }
    }
    for instance in line["instances"].as_array().into_iter().flatten() {
        out.extend(instance["input"].as_str().map(str::to_string));
    }
}

/// Documentation files under `dir`, sorted.
fn doc_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            doc_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "md" || e == "rst" || e == "txt") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let show = args.iter().position(|a| a == "--show").map(|i| {
        let kind = args.get(i + 1).cloned().unwrap_or_default();
        args.drain(i..(i + 2).min(args.len()));
        kind
    });
    let mut files: Vec<PathBuf> = Vec::new();
    for arg in &args {
        let path = PathBuf::from(arg);
        if path.is_dir() {
            doc_files(&path, &mut files)?;
        } else {
            files.push(path);
        }
    }
    if files.is_empty() {
        for dir in ["../shared/data/tasks", "../shared/data/tasks/routellm"] {
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "jsonl") {
                    files.push(path);
                }
            }
        }
        files.sort();
    }
    let detectors = Detectors::new();
    let mut per_kind: BTreeMap<&'static str, usize> = BTreeMap::new();
    let (mut prompts, mut bytes, mut flagged) = (0usize, 0usize, 0usize);
    for file in &files {
        let mut file_findings = 0;
        let mut file_prompts = 0;
        let content = std::fs::read_to_string(file)?;
        let jsonl = file.extension().is_some_and(|e| e == "jsonl");
        let items: Vec<&str> = if jsonl {
            content.lines().filter(|l| !l.trim().is_empty()).collect()
        } else {
            content.split("\n\n").filter(|p| !p.trim().is_empty()).collect()
        };
        for item in items {
            let mut segments = Vec::new();
            if jsonl {
                texts(&serde_json::from_str(item)?, &mut segments);
            } else {
                segments.push(item.to_string());
            }
            for text in &segments {
                prompts += 1;
                file_prompts += 1;
                bytes += text.len();
                let found = detectors.scan(None, &[text.as_str()]);
                flagged += usize::from(!found.is_empty());
                file_findings += found.len();
                for f in found {
                    *per_kind.entry(f.kind).or_default() += 1;
                    if show.as_deref() == Some(f.kind) {
                        let mut from = f.span.start.saturating_sub(50);
                        while !text.is_char_boundary(from) {
                            from -= 1;
                        }
                        let mut to = (f.span.end + 30).min(text.len());
                        while !text.is_char_boundary(to) {
                            to += 1;
                        }
                        println!("{} {:.2} {:?} in {:?}", f.kind, f.confidence, &text[f.span.clone()], &text[from..to]);
                    }
                }
            }
        }
        if jsonl || files.len() < 20 {
            println!("{}: {file_prompts} texts, {file_findings} findings", file.display());
        }
    }
    println!("\n{prompts} texts ({:.1} MB), {flagged} with a finding", bytes as f64 / 1e6);
    println!("\n| kind | findings |\n|---|---:|");
    for (kind, n) in &per_kind {
        println!("| {kind} | {n} |");
    }
    println!("| **all** | {} |", per_kind.values().sum::<usize>());
    Ok(())
}
