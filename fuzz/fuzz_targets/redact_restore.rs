//! Fuzz redaction and placeholder restoration.
//!
//! Three modes, picked by the first input byte:
//! - raw: arbitrary bytes as an SSE stream. Restoring must not panic, must
//!   give the same output however the bytes are chunked, and must pass a
//!   stream with no `<` (in any spelling) and no encoded backslash through
//!   byte for byte.
//! - round trip: values and a text built from a small alphabet rich in
//!   placeholder characters. Redacting a request body must leave no value
//!   outside the placeholders; restoring the redacted text whole, streamed
//!   as text deltas and streamed as tool-call JSON must all give the same
//!   answer as a simple one-pass reference (and the original text when it
//!   held no placeholder of its own).
//! - whole: arbitrary bytes to `redact_json_body` / `restore_json_body`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use sluice_fuzz::redact::{placeholder_label, RedactError, Redaction};
use sluice_fuzz::wire::Dialect as StreamFormat;

const FORMATS: [StreamFormat; 4] = [
    StreamFormat::OpenAiChat,
    StreamFormat::AnthropicMessages,
    StreamFormat::OpenAiResponses,
    StreamFormat::GeminiGenerate,
];

/// Characters that build and break placeholders; no NUL (the leak check
/// uses it as a stand-in for placeholders).
const ALPHABET: &[&str] =
    &["<", ">", "E", "M", "A", "I", "L", "T", "R", "_", "1", "2", "a", " ", "\"", "\\", "é", "\n", "u003c", "🦀"];

const KINDS: [&str; 3] = ["email", "term", "phone"];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => raw_stream(rest),
        1 => round_trip(rest),
        _ => whole_bodies(rest),
    }
});

fn fixed_redaction() -> Redaction {
    Redaction::plan([("email", "jo@x.org"), ("term", "Say \"Hi\" \\ ok"), ("phone", "5<>5"), ("email", "é@ü.io")])
}

fn run(r: &Redaction, format: StreamFormat, chunks: &[&[u8]]) -> Vec<u8> {
    let mut restorer = r.sse_restorer(format);
    let mut out = Vec::new();
    for c in chunks {
        out.extend(restorer.push(c));
    }
    out.extend(restorer.finish());
    out
}

/// Cut `bytes` into pieces whose sizes cycle through `sizes`.
fn chunks<'a>(bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let end = (at + sizes[i % sizes.len()]).min(bytes.len());
        out.push(&bytes[at..end]);
        at = end;
        i += 1;
    }
    out
}

fn raw_stream(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let format = FORMATS[data[0] as usize % 3];
    let sizes = [1 + data[1] as usize % 32, 1 + data[2] as usize % 7, 1 + data[3] as usize % 64];
    let stream = &data[4..];
    let r = fixed_redaction();
    let whole = run(&r, format, &[stream]);
    let chunked = run(&r, format, &chunks(stream, &sizes));
    assert_eq!(whole, chunked, "chunking changed the output");
    // `<` in any spelling, or an encoded backslash (which may start `\u003c`
    // in JSON text); anything else must not be touched.
    let may_open = stream.contains(&b'<')
        || stream.windows(2).any(|w| w == b"\\\\")
        || stream.windows(5).any(|w| w.eq_ignore_ascii_case(b"u003c") || w.eq_ignore_ascii_case(b"u005c"));
    if !may_open {
        assert_eq!(whole, stream, "a stream without placeholders must pass unchanged");
    }
}

fn whole_bodies(data: &[u8]) {
    let r = fixed_redaction();
    let _ = r.restore_json_body(data);
    if let Ok(out) = r.redact_json_body(data) {
        let v: Value = serde_json::from_slice(&out).expect("redacted body is JSON");
        let _ = v;
    }
}

/// Tiny deterministic generator for split points, seeded from the input.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// One-pass reference restore: at each position, a known placeholder is
/// replaced; placeholders are prefix-free (they end at their only `>`).
fn reference_restore(text: &str, table: &[(String, String)], json_escape: bool) -> String {
    let mut out = String::new();
    let mut rest = text;
    'outer: while let Some(c) = rest.chars().next() {
        for (placeholder, value) in table {
            if let Some(after) = rest.strip_prefix(placeholder.as_str()) {
                if json_escape {
                    let quoted = Value::from(value.as_str()).to_string();
                    out.push_str(&quoted[1..quoted.len() - 1]);
                } else {
                    out.push_str(value);
                }
                rest = after;
                continue 'outer;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Split `text` into `n` pieces at random char boundaries.
fn pieces<'a>(text: &'a str, rng: &mut Rng, n: usize) -> Vec<&'a str> {
    let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let mut cuts: Vec<usize> = (0..n).map(|_| bounds.get(rng.below(bounds.len())).copied().unwrap_or(0)).collect();
    cuts.extend([0, text.len()]);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

fn stream(format: StreamFormat, deltas: &[&str], arguments: bool) -> String {
    let mut s = String::new();
    match (format, arguments) {
        (StreamFormat::OpenAiChat, _) => {
            for d in deltas {
                let delta = if arguments {
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": d}}]})
                } else {
                    json!({"content": d})
                };
                let chunk = json!({"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
                s += &format!("data: {chunk}\n\n");
            }
            s += "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        }
        (StreamFormat::AnthropicMessages, _) => {
            for d in deltas {
                let delta = if arguments {
                    json!({"type": "input_json_delta", "partial_json": d})
                } else {
                    json!({"type": "text_delta", "text": d})
                };
                let ev = json!({"type": "content_block_delta", "index": 0, "delta": delta});
                s += &format!("event: content_block_delta\ndata: {ev}\n\n");
            }
            s += "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n";
            s += "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        }
        (StreamFormat::OpenAiResponses, _) => {
            let kind = if arguments { "response.function_call_arguments" } else { "response.output_text" };
            for d in deltas {
                let ev = json!({"type": format!("{kind}.delta"), "item_id": "i", "output_index": 0, "content_index": 0, "delta": d});
                s += &format!("event: {kind}.delta\ndata: {ev}\n\n");
            }
            let field = if arguments { "arguments" } else { "text" };
            let done = json!({"type": format!("{kind}.done"), "item_id": "i", "output_index": 0, "content_index": 0, field: deltas.concat()});
            s += &format!("event: {kind}.done\ndata: {done}\n\n");
        }
        // Gemini sends function calls whole; its streamed text is prose.
        (StreamFormat::GeminiGenerate, _) => {
            for d in deltas {
                let chunk = json!({"candidates": [{"content": {"parts": [{"text": d}], "role": "model"}, "index": 0}]});
                s += &format!("data: {chunk}\r\n\r\n");
            }
            s += "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\"}]},\"finishReason\":\"STOP\",\"index\":0}]}\r\n\r\n";
        }
    }
    s
}

/// Concatenated deltas of a restored stream, and the `.done` whole text if any.
fn collect(format: StreamFormat, out: &str, arguments: bool) -> (String, Option<String>) {
    let mut text = String::new();
    let mut done = None;
    let out = out.replace("\r\n", "\n");
    for event in out.split("\n\n").filter(|e| !e.is_empty()) {
        let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        let piece = match format {
            StreamFormat::OpenAiChat if arguments => {
                &v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
            }
            StreamFormat::OpenAiChat => &v["choices"][0]["delta"]["content"],
            StreamFormat::AnthropicMessages if arguments => &v["delta"]["partial_json"],
            StreamFormat::AnthropicMessages => &v["delta"]["text"],
            StreamFormat::OpenAiResponses => {
                if let Some(whole) = v["text"].as_str().or(v["arguments"].as_str()) {
                    done = Some(whole.to_string());
                }
                &v["delta"]
            }
            StreamFormat::GeminiGenerate => &v["candidates"][0]["content"]["parts"][0]["text"],
        };
        if let Some(p) = piece.as_str() {
            text += p;
        }
    }
    (text, done)
}

fn round_trip(data: &[u8]) {
    let mut bytes = data.iter().copied();
    let n_values = 1 + bytes.next().unwrap_or(0) as usize % 4;
    let mut values: Vec<String> = Vec::new();
    for _ in 0..n_values {
        let mut v = String::new();
        for b in bytes.by_ref() {
            if b % 16 == 15 || v.len() > 12 {
                break;
            }
            v.push_str(ALPHABET[b as usize % ALPHABET.len()]);
        }
        if !v.is_empty() {
            values.push(v);
        }
    }
    if values.is_empty() {
        return;
    }
    let mut text = String::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for b in bytes {
        seed = seed.rotate_left(5) ^ u64::from(b);
        if b >= 0xF0 {
            text.push_str(&values[b as usize % values.len()]);
        } else {
            text.push_str(ALPHABET[b as usize % ALPHABET.len()]);
        }
    }
    let mut rng = Rng(seed | 1);
    let r = Redaction::plan(values.iter().enumerate().map(|(i, v)| (KINDS[i % KINDS.len()], v.as_str())));

    // Redact a request body.
    let body = json!({"model": "m", "messages": [{"role": "user", "content": text}]});
    let raw = serde_json::to_vec(&body).expect("serialising a Value cannot fail");
    let redacted_body = match r.redact_json_body(&raw) {
        Ok(b) => b,
        Err(RedactError::Unplaced { .. }) => {
            assert!(values.iter().any(|v| !text.contains(v.as_str())), "every value is in the text");
            return;
        }
        Err(e) => panic!("unexpected error {e}"),
    };
    let redacted_value: Value = serde_json::from_slice(&redacted_body).expect("redacted body is JSON");
    assert_eq!(redacted_value["model"], "m");
    let redacted = redacted_value["messages"][0]["content"].as_str().expect("content stays a string").to_string();

    // The table the spec implies: numbered per label, first appearance
    // first, one placeholder per distinct value.
    let mut table: Vec<(String, String)> = Vec::new();
    let mut numbers: Vec<(String, u32)> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        if table.iter().any(|(_, known)| known == v) {
            continue;
        }
        let label = placeholder_label(KINDS[i % KINDS.len()]);
        let n = match numbers.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                numbers.push((label.clone(), 1));
                1
            }
        };
        table.push((format!("<{label}_{n}>"), v.clone()));
    }
    assert_eq!(r.counts_by_kind().values().sum::<u32>() as usize, table.len());

    // No value is left outside the placeholders.
    let mut masked = redacted.clone();
    for (p, _) in &table {
        masked = masked.replace(p.as_str(), "\0");
    }
    for v in &values {
        assert!(!masked.contains(v.as_str()), "value left in redacted text");
    }

    let expected = reference_restore(&redacted, &table, false);
    if !table.iter().any(|(p, _)| text.contains(p.as_str())) {
        assert_eq!(expected, text, "redact then restore gives the original");
    }

    // Whole response restore.
    let response = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": redacted,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": json!({"k": redacted}).to_string()}}]}}]});
    let restored: Value = serde_json::from_slice(
        &r.restore_json_body(&serde_json::to_vec(&response).expect("serialising a Value cannot fail"))
            .expect("restoring a valid body"),
    )
    .expect("restored body is JSON");
    let message = &restored["choices"][0]["message"];
    assert_eq!(message["content"].as_str(), Some(expected.as_str()));
    let args: Value = serde_json::from_str(message["tool_calls"][0]["function"]["arguments"].as_str().unwrap_or(""))
        .expect("restored arguments are JSON");
    assert_eq!(args["k"].as_str(), Some(expected.as_str()));

    // Streamed restore, as text deltas and as JSON-argument deltas.
    let format = FORMATS[rng.below(3)];
    let n = rng.below(6);
    let deltas = pieces(&redacted, &mut rng, n);
    let wire = stream(format, &deltas, false);
    let sizes: Vec<usize> = (0..3).map(|_| 1 + rng.below(40)).collect();
    let out = String::from_utf8(run(&r, format, &chunks(wire.as_bytes(), &sizes))).expect("UTF-8 in, UTF-8 out");
    let (got, done) = collect(format, &out, false);
    assert_eq!(got, expected, "streamed text {format:?} {deltas:?}\n{out}");
    if let Some(done) = done {
        assert_eq!(done, expected, "done text");
    }

    if format == StreamFormat::GeminiGenerate {
        // Gemini streams no JSON text (function calls arrive whole).
        return;
    }
    let args_text = json!({"k": redacted}).to_string();
    let n = rng.below(6);
    let deltas = pieces(&args_text, &mut rng, n);
    let wire = stream(format, &deltas, true);
    let out = String::from_utf8(run(&r, format, &chunks(wire.as_bytes(), &sizes))).expect("UTF-8 in, UTF-8 out");
    let (got, done) = collect(format, &out, true);
    let parsed: Value = serde_json::from_str(&got).expect("streamed arguments are JSON");
    assert_eq!(parsed["k"].as_str(), Some(expected.as_str()), "streamed arguments {format:?} {deltas:?}\n{out}");
    if let Some(done) = done {
        let parsed: Value = serde_json::from_str(&done).expect("done arguments are JSON");
        assert_eq!(parsed["k"].as_str(), Some(expected.as_str()), "done arguments");
    }
}
