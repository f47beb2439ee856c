//! Restore placeholders in a streamed (server-sent events) answer while it
//! passes through, chunk by chunk as the network delivers it.
//!
//! Network chunks are cut into complete events first (a client cannot use
//! half an event either, so this adds no latency). Delta events are restored
//! per stream (choice, content block, output item): the text of each stream
//! is joined across events and only a tail that may still become a
//! placeholder (`<EM`) is held back. When an event ends a stream while text
//! is held, the held text goes out first as a delta event of the same shape.
//! Events that need no change are forwarded byte for byte.
//!
//! Where the text sits in each dialect's events, which events end a stream
//! and how a held piece is written are the dialect's own
//! ([`Dialect::stream_texts`]); this module only joins, restores and holds.

use std::sync::Arc;

use serde_json::Value;

use super::table::{may_hold_placeholder, Mode, Table};
use crate::wire::sse::{parse_event, EventSplitter, HeldEvent, StreamEnd, StreamEvent, StreamTexts};
use crate::wire::Dialect;

/// An event that has not ended after this many bytes is passed on as it is
/// rather than buffered without bound.
const MAX_PENDING_EVENT: usize = 8 << 20;

/// Restores one SSE response; feed it every chunk, then call `finish`.
pub struct SseRestorer {
    table: Arc<Table>,
    dialect: Dialect,
    /// Bytes of an event whose end has not arrived yet.
    buf: Vec<u8>,
    split: EventSplitter,
    /// Streams with text held back, in the order they were last held.
    held: Vec<Held>,
}

struct Held {
    key: String,
    text: String,
    event: Box<dyn HeldEvent>,
}

impl SseRestorer {
    pub(super) fn new(table: Arc<Table>, dialect: Dialect) -> SseRestorer {
        SseRestorer { table, dialect, buf: Vec::new(), split: EventSplitter::default(), held: Vec::new() }
    }

    /// Feed raw bytes as they arrive; returns the bytes ready to send now
    /// (possibly empty).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.table.entries.is_empty() {
            return chunk.to_vec();
        }
        let mut out = Vec::with_capacity(chunk.len() + self.buf.len());
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some((body_end, end)) = self.split.next_event_end(&buf) {
            self.process_event(&buf[start..body_end], &buf[body_end..end], &mut out);
            start = end;
        }
        buf.drain(..start);
        self.split.consumed(start);
        if buf.len() > MAX_PENDING_EVENT {
            tracing::warn!(bytes = buf.len(), "SSE event too long to restore; passing it on unchanged");
            out.extend_from_slice(&buf);
            buf.clear();
            self.split.reset();
        }
        self.buf = buf;
        out
    }

    /// End of stream: the unterminated tail, if any, and any held text.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.buf);
        self.split.reset();
        if !rest.is_empty() {
            self.process_event(&rest, &[], &mut out);
        }
        if !self.held.is_empty() {
            if !rest.is_empty() {
                // End the unterminated event so the flushed ones stand alone.
                out.extend_from_slice(b"\n\n");
            }
            self.flush(|_| true, &mut out);
        }
        out
    }

    fn process_event(&mut self, body: &[u8], tail: &[u8], out: &mut Vec<u8>) {
        let maybe = may_hold_placeholder(body);
        if self.held.is_empty() && !maybe {
            out.extend_from_slice(body);
            out.extend_from_slice(tail);
            return;
        }
        let Some(event) = parse_event(body) else {
            out.extend_from_slice(body);
            out.extend_from_slice(tail);
            return;
        };
        if event.data.trim() == "[DONE]" {
            self.flush(|_| true, out);
            out.extend_from_slice(body);
            out.extend_from_slice(tail);
            return;
        }
        let Ok(Value::Object(mut v)) = serde_json::from_str::<Value>(&event.data) else {
            out.extend_from_slice(body);
            out.extend_from_slice(tail);
            return;
        };
        let dialect = self.dialect;
        let mut texts = Texts { restorer: self, out };
        let rewritten = match dialect.stream_texts(&mut v, event.has_event_line, &mut texts) {
            StreamEvent::Delta { changed: false } => None,
            StreamEvent::Delta { changed: true } => Some(Value::Object(v).to_string()),
            StreamEvent::Other if maybe => super::restore_document(&self.table, &event.data).ok().flatten(),
            StreamEvent::Other => None,
        };
        match rewritten {
            Some(data) => write_event(body, tail, &data, out),
            None => {
                out.extend_from_slice(body);
                out.extend_from_slice(tail);
            }
        }
    }

    /// Join `text` to what its stream holds, restore what can be restored,
    /// and hold back a possible placeholder prefix unless the stream `ends`
    /// with this event. Returns whether `text` changed.
    fn feed(
        &mut self,
        key: String,
        text: &mut String,
        mode: Mode,
        ends: bool,
        held_event: &dyn Fn() -> Box<dyn HeldEvent>,
    ) -> bool {
        let held = self.held.iter().position(|h| h.key == key).map(|i| self.held.remove(i));
        let may_open = text.contains('<') || (mode == Mode::JsonText && text.contains('\\'));
        if held.is_none() && !may_open {
            return false;
        }
        let full = match held {
            Some(h) => h.text + text,
            None => text.clone(),
        };
        let (restored, hold_from) =
            if ends { (self.table.restore(&full, mode), full.len()) } else { self.table.restore_partial(&full, mode) };
        let emit = restored.unwrap_or_else(|| full[..hold_from].to_string());
        if hold_from < full.len() {
            self.held.push(Held { key, text: full[hold_from..].to_string(), event: held_event() });
        }
        if emit == *text {
            false
        } else {
            *text = emit;
            true
        }
    }

    /// Write the held text of every stream `which` selects as its own event.
    fn flush(&mut self, mut which: impl FnMut(&str) -> bool, out: &mut Vec<u8>) {
        let mut i = 0;
        while i < self.held.len() {
            if which(&self.held[i].key) {
                let held = self.held.remove(i);
                held.event.write(held.text, out);
            } else {
                i += 1;
            }
        }
    }
}

/// The restorer as a dialect sees it while it reads one event: pieces of
/// text are fed, ended streams flush their held text into `out` (before
/// the event itself is written).
struct Texts<'a> {
    restorer: &'a mut SseRestorer,
    out: &'a mut Vec<u8>,
}

impl StreamTexts for Texts<'_> {
    fn text(
        &mut self,
        key: String,
        text: &mut String,
        json: bool,
        ends: bool,
        held: &dyn Fn() -> Box<dyn HeldEvent>,
    ) -> bool {
        let mode = if json { Mode::JsonText } else { Mode::Text };
        self.restorer.feed(key, text, mode, ends, held)
    }

    fn end(&mut self, which: StreamEnd<'_>) {
        match which {
            StreamEnd::All => self.restorer.flush(|_| true, self.out),
            StreamEnd::Key(key) => self.restorer.flush(|k| k == key, self.out),
            StreamEnd::Prefix(prefix) => self.restorer.flush(|k| k.starts_with(prefix), self.out),
        }
    }
}

/// Write `body` with its data replaced by `data` (on the first data line;
/// further data lines dropped), other lines and the terminator kept.
fn write_event(body: &[u8], tail: &[u8], data: &str, out: &mut Vec<u8>) {
    let mut written = false;
    for line in body.split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b"data:") {
            out.extend_from_slice(line);
            continue;
        }
        if written {
            continue;
        }
        written = true;
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(data.as_bytes());
        if line.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        } else if line.ends_with(b"\n") {
            out.extend_from_slice(b"\n");
        }
    }
    out.extend_from_slice(tail);
}

#[cfg(test)]
mod tests {
    use super::super::Redaction;
    use super::*;
    use serde_json::json;

    fn redaction() -> Redaction {
        Redaction::plan([("email", "jo@x.org"), ("term", "Say \"Hi\""), ("email", "al@y.io")])
    }

    /// A stream of `format` whose text deltas are `deltas`, then its end.
    fn stream(format: Dialect, deltas: &[&str]) -> String {
        let mut s = String::new();
        match format {
            Dialect::OpenAiChat => {
                s += "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
                for d in deltas {
                    let chunk = json!({"id": "c1", "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": null}]});
                    s += &format!("data: {chunk}\n\n");
                }
                s += "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
                s += "data: [DONE]\n\n";
            }
            Dialect::AnthropicMessages => {
                s += "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[]}}\n\n";
                s += "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
                s += "event: ping\ndata: {\"type\": \"ping\"}\n\n";
                for d in deltas {
                    let ev =
                        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}});
                    s += &format!("event: content_block_delta\ndata: {ev}\n\n");
                }
                s += "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n";
                s += "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n";
                s += "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
            }
            Dialect::OpenAiResponses => {
                s += "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0}\n\n";
                for (i, d) in deltas.iter().enumerate() {
                    let ev = json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
                        "content_index": 0, "delta": d, "sequence_number": i + 1});
                    s += &format!("event: response.output_text.delta\ndata: {ev}\n\n");
                }
                let done = json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0,
                    "content_index": 0, "text": deltas.concat()});
                s += &format!("event: response.output_text.done\ndata: {done}\n\n");
                s += "event: response.completed\ndata: {\"type\":\"response.completed\"}\n\n";
            }
            Dialect::GeminiGenerate => {
                for d in deltas {
                    let chunk = json!({"candidates": [{"content": {"parts": [{"text": d}], "role": "model"}, "index": 0}],
                        "modelVersion": "gemini-x"});
                    s += &format!("data: {chunk}\r\n\r\n");
                }
                let last = json!({"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"},
                    "finishReason": "STOP", "index": 0}], "usageMetadata": {"totalTokenCount": 3}});
                s += &format!("data: {last}\r\n\r\n");
            }
        }
        s
    }

    use crate::wire::dialect::sse_events as events;

    /// Concatenated text deltas, checking every event is well formed.
    fn text_of(format: Dialect, sse: &str) -> String {
        let mut text = String::new();
        for (name, data) in events(sse) {
            match format {
                Dialect::OpenAiChat => {
                    if let Some(t) = data["choices"][0]["delta"]["content"].as_str() {
                        text += t;
                    }
                }
                Dialect::AnthropicMessages => {
                    assert_eq!(name.as_deref(), data["type"].as_str(), "event line matches type");
                    if let Some(t) = data["delta"]["text"].as_str() {
                        text += t;
                    }
                }
                Dialect::OpenAiResponses => {
                    if data["type"] == "response.output_text.delta" {
                        text += data["delta"].as_str().unwrap();
                    }
                    if data["type"] == "response.output_text.done" {
                        assert_eq!(data["text"].as_str().unwrap(), text, "done text is the whole text");
                    }
                }
                Dialect::GeminiGenerate => {
                    assert_eq!(data["candidates"][0]["index"], 0, "every chunk names its candidate");
                    if let Some(t) = data["candidates"][0]["content"]["parts"][0]["text"].as_str() {
                        text += t;
                    }
                }
            }
        }
        text
    }

    fn run(r: &Redaction, format: Dialect, chunks: &[&[u8]]) -> String {
        let mut restorer = r.sse_restorer(format);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(restorer.push(c));
        }
        out.extend(restorer.finish());
        String::from_utf8(out).unwrap()
    }

    const FORMATS: [Dialect; 4] =
        [Dialect::OpenAiChat, Dialect::AnthropicMessages, Dialect::OpenAiResponses, Dialect::GeminiGenerate];

    #[test]
    fn placeholder_split_at_every_byte_across_two_network_chunks() {
        let r = redaction();
        for format in FORMATS {
            let wire = stream(format, &["Mail ", "<EMAIL_1>", " or <TERM_1>."]);
            let bytes = wire.as_bytes();
            for cut in 0..=bytes.len() {
                let out = run(&r, format, &[&bytes[..cut], &bytes[cut..]]);
                assert_eq!(text_of(format, &out), "Mail jo@x.org or Say \"Hi\".", "{format:?} cut at {cut}");
                assert!(!out.contains("EMAIL_1") && !out.contains("TERM_1"));
            }
        }
    }

    #[test]
    fn placeholder_split_across_delta_events_holds_only_the_prefix() {
        let r = redaction();
        for format in FORMATS {
            let wire = stream(format, &["Mail <EM", "AIL_1> now, <", "TERM_1>!"]);
            let mut restorer = r.sse_restorer(format);
            let mut pieces = Vec::new();
            // One event per push, to see what each event releases.
            let end = if wire.contains("\r\n\r\n") { "\r\n\r\n" } else { "\n\n" };
            for event in wire.split_inclusive(end) {
                pieces.push(String::from_utf8(restorer.push(event.as_bytes())).unwrap());
            }
            let first_delta = pieces.iter().find(|p| p.contains("Mail")).unwrap();
            assert_eq!(text_of(format, first_delta), "Mail ", "{format:?} emits text before the prefix at once");
            let out = pieces.concat() + std::str::from_utf8(&restorer.finish()).unwrap();
            assert_eq!(text_of(format, &out), "Mail jo@x.org now, Say \"Hi\"!");
        }
    }

    #[test]
    fn held_text_is_flushed_before_the_stream_ends() {
        let r = redaction();
        for format in FORMATS {
            let wire = stream(format, &["ends with <EMAIL_1"]);
            let out = run(&r, format, &[wire.as_bytes()]);
            assert_eq!(text_of(format, &out), "ends with <EMAIL_1", "{format:?}");
            let evs = events(&out);
            let held_at = evs.iter().position(|(_, d)| serde_json::to_string(d).unwrap().contains("<EMAIL_1")).unwrap();
            let end_at = evs
                .iter()
                .position(|(_, d)| {
                    !d["choices"][0]["finish_reason"].is_null()
                        || d["type"] == "content_block_stop"
                        || d["type"] == "response.output_text.done"
                        || !d["candidates"][0]["finishReason"].is_null()
                })
                .unwrap();
            // Gemini's last chunk carries text of its own, so the held text
            // goes out in it rather than before it.
            assert!(held_at <= end_at, "{format:?}: held text goes out no later than the end event\n{out}");
        }
    }

    #[test]
    fn held_text_is_flushed_at_end_of_input_without_end_events() {
        let r = redaction();
        let chunk = json!({"choices": [{"index": 0, "delta": {"content": "cut <TER"}, "finish_reason": null}]});
        let wire = format!("data: {chunk}\n\ndata: {{\"choices\"");
        let out = run(&r, Dialect::OpenAiChat, &[wire.as_bytes()]);
        assert!(out.starts_with("data: "));
        assert!(out.contains("data: {\"choices\"\n\n"), "unterminated tail kept, then ended");
        assert_eq!(text_of(Dialect::OpenAiChat, &out), "cut <TER");
    }

    #[test]
    fn streams_without_placeholders_pass_byte_for_byte() {
        let r = redaction();
        let wire = concat!(
            ": keep-alive\n\n",
            "event: ping\r\ndata: {\"type\":   \"ping\"}\r\n\r\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a < b <EMAIL_9> <div>\"},\"finish_reason\":null}]}\n\n",
            "data: <not json>\n\n",
            "event: custom\ndata: {\"x\": \"<b>\"}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}], \"usage\": {\"n\": 1.50}}\n\n",
            "data: [DONE]\n\n",
        );
        for cut in 0..=wire.len() {
            let out = run(&r, Dialect::OpenAiChat, &[&wire.as_bytes()[..cut], &wire.as_bytes()[cut..]]);
            assert_eq!(out, wire);
        }
    }

    #[test]
    fn unknown_events_pass_unchanged_while_text_is_held() {
        let r = redaction();
        let wire = concat!(
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi <EMA\"}}\n\n",
            "event: ping\ndata: {\"type\":  \"ping\"}\n\n",
            "event: mystery\ndata: {\"type\":\"mystery\", \"v\": 1}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"IL_2>\"}}\n\n",
        );
        let out = run(&r, Dialect::AnthropicMessages, &[wire.as_bytes()]);
        assert!(out.contains("event: ping\ndata: {\"type\":  \"ping\"}\n\n"));
        assert!(out.contains("event: mystery\ndata: {\"type\":\"mystery\", \"v\": 1}\n\n"));
        assert_eq!(text_of(Dialect::AnthropicMessages, &out), "hi al@y.io");
    }

    #[test]
    fn tool_arguments_are_restored_json_escaped() {
        let r = redaction();
        // OpenAI chat tool call arguments, split inside the placeholder.
        let mut wire = String::new();
        for piece in ["{\"to\":\"<EMAIL_1>\",\"s\":\"<TE", "RM_1>\"}"] {
            let chunk = json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, "finish_reason": null}]});
            wire += &format!("data: {chunk}\n\n");
        }
        wire += "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n";
        let out = run(&r, Dialect::OpenAiChat, &[wire.as_bytes()]);
        let args: String = events(&out)
            .iter()
            .filter_map(|(_, d)| {
                d["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().map(String::from)
            })
            .collect();
        assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"to": "jo@x.org", "s": "Say \"Hi\""}));

        // Anthropic input_json_delta, held part flushed at content_block_stop.
        let wire = concat!(
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"s\\\": \\\"<TERM_1>\\\", \\\"x\\\": \\\"\\\\u003cEMA\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"IL_2\\\\u003e\\\"}\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        );
        let out = run(&r, Dialect::AnthropicMessages, &[wire.as_bytes()]);
        let json: String =
            events(&out).iter().filter_map(|(_, d)| d["delta"]["partial_json"].as_str().map(String::from)).collect();
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), json!({"s": "Say \"Hi\"", "x": "al@y.io"}));

        // Responses function_call_arguments deltas and the whole `.done`.
        let wire = concat!(
            "data: {\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_1\",\"output_index\":1,\"delta\":\"{\\\"to\\\":\\\"<EMAIL\"}\n\n",
            "data: {\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_1\",\"output_index\":1,\"delta\":\"_1>\\\"}\"}\n\n",
            "data: {\"type\":\"response.function_call_arguments.done\",\"item_id\":\"fc_1\",\"output_index\":1,\"arguments\":\"{\\\"to\\\":\\\"<EMAIL_1>\\\"}\"}\n\n",
        );
        let out = run(&r, Dialect::OpenAiResponses, &[wire.as_bytes()]);
        let evs = events(&out);
        let deltas: String = evs.iter().filter_map(|(_, d)| d["delta"].as_str().map(String::from)).collect();
        assert_eq!(deltas, "{\"to\":\"jo@x.org\"}");
        assert_eq!(evs[2].1["arguments"], "{\"to\":\"jo@x.org\"}");
    }

    #[test]
    fn escaped_placeholder_cut_after_its_backslash_is_restored() {
        let r = redaction();
        let mut wire = String::new();
        for piece in ["{\"to\":\"\\", "u003cEMAIL_1\\u003e\"}"] {
            let ev = json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": piece}});
            wire += &format!("event: content_block_delta\ndata: {ev}\n\n");
        }
        let out = run(&r, Dialect::AnthropicMessages, &[wire.as_bytes()]);
        let json: String =
            events(&out).iter().filter_map(|(_, d)| d["delta"]["partial_json"].as_str().map(String::from)).collect();
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), json!({"to": "jo@x.org"}));
    }

    #[test]
    fn held_text_goes_out_before_a_mid_stream_error() {
        let r = redaction();
        let chunk = json!({"choices": [{"index": 0, "delta": {"content": "x <EM"}, "finish_reason": null}]});
        let wire = format!("data: {chunk}\n\ndata: {{\"error\":{{\"message\":\"boom\"}}}}\n\n");
        let out = run(&r, Dialect::OpenAiChat, &[wire.as_bytes()]);
        let evs = events(&out);
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[1].1["choices"][0]["delta"]["content"], "<EM");
        assert_eq!(evs[2].1["error"]["message"], "boom");
    }

    #[test]
    fn escaped_brackets_in_event_json_are_restored() {
        let r = redaction();
        let wire = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"to \\u003cEMAIL_1\\u003e\"},\"finish_reason\":null}]}\n\n";
        let out = run(&r, Dialect::OpenAiChat, &[wire.as_bytes()]);
        assert_eq!(text_of(Dialect::OpenAiChat, &out), "to jo@x.org");
    }

    #[test]
    fn choices_and_blocks_are_kept_apart() {
        let r = redaction();
        let mut wire = String::new();
        for (choice, piece) in [(0, "a <EMA"), (1, "b <EMA"), (1, "IL_2>"), (0, "IL_1>")] {
            let chunk = json!({"choices": [{"index": choice, "delta": {"content": piece}, "finish_reason": null}]});
            wire += &format!("data: {chunk}\n\n");
        }
        let out = run(&r, Dialect::OpenAiChat, &[wire.as_bytes()]);
        let mut texts = [String::new(), String::new()];
        for (_, d) in events(&out) {
            let i = d["choices"][0]["index"].as_u64().unwrap() as usize;
            texts[i] += d["choices"][0]["delta"]["content"].as_str().unwrap();
        }
        assert_eq!(texts, ["a jo@x.org", "b al@y.io"]);
    }

    #[test]
    fn crlf_events_are_restored_keeping_line_endings() {
        let r = redaction();
        let wire = "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"<EMAIL_1>\"}}\r\n\r\n";
        let out = run(&r, Dialect::AnthropicMessages, &[wire.as_bytes()]);
        assert!(out.starts_with("event: content_block_delta\r\ndata: {"));
        assert!(out.ends_with("}\r\n\r\n"));
        assert!(out.contains("jo@x.org"));
    }

    /// Reference restore: one pass, every known placeholder at once.
    fn expected(text: &str) -> String {
        text.replace("<EMAIL_1>", "\u{0}1")
            .replace("<EMAIL_2>", "\u{0}2")
            .replace("<TERM_1>", "\u{0}3")
            .replace("\u{0}1", "jo@x.org")
            .replace("\u{0}2", "al@y.io")
            .replace("\u{0}3", "Say \"Hi\"")
    }

    #[test]
    fn random_splits_restore_the_same_text() {
        let r = redaction();
        let words =
            ["<EMAIL_1>", "<EMAIL_2>", "<TERM_1>", "<EMAIL_9>", "<", "<E", "<EMAIL_1", "a<b", " ", "héllo", "\n", ">"];
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for round in 0..300 {
            let text: String = (0..next(12) + 1).map(|_| words[next(words.len())]).collect();
            // Cut the text into deltas at random char boundaries.
            let chars: Vec<(usize, char)> = text.char_indices().collect();
            let mut cuts: Vec<usize> = (0..next(4)).map(|_| chars[next(chars.len())].0).collect();
            cuts.extend([0, text.len()]);
            cuts.sort_unstable();
            cuts.dedup();
            let deltas: Vec<&str> = cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect();
            for format in FORMATS {
                let wire = stream(format, &deltas);
                let bytes = wire.as_bytes();
                let mut points: Vec<usize> = (0..next(6)).map(|_| next(bytes.len() + 1)).collect();
                points.extend([0, bytes.len()]);
                points.sort_unstable();
                let chunks: Vec<&[u8]> = points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
                let out = run(&r, format, &chunks);
                assert_eq!(text_of(format, &out), expected(&text), "round {round} {format:?} deltas {deltas:?}");
                let whole = run(&r, format, &[bytes]);
                assert_eq!(out, whole, "chunking must not change the output");
            }
        }
    }

    #[test]
    fn empty_redaction_passes_everything() {
        let r = Redaction::plan([]);
        let mut restorer = r.sse_restorer(Dialect::OpenAiChat);
        assert_eq!(restorer.push(b"data: {\"a\":\"<EMAIL_1>\"}\n\ndata: x"), b"data: {\"a\":\"<EMAIL_1>\"}\n\ndata: x");
        assert!(restorer.finish().is_empty());
    }
}
