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

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::table::{may_hold_placeholder, Mode, Table};
use crate::wire::sse::{parse_event, EventSplitter};

/// The streaming dialect of an upstream answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    /// OpenAI chat completions: `data: {chunk}` … `data: [DONE]`.
    OpenAiChat,
    /// Anthropic messages: `event: content_block_delta` and friends.
    AnthropicMessages,
    /// OpenAI Responses API: `response.output_text.delta` and friends.
    OpenAiResponses,
}

/// An event that has not ended after this many bytes is passed on as it is
/// rather than buffered without bound.
const MAX_PENDING_EVENT: usize = 8 << 20;

/// OpenAI chat delta fields that carry text (others are OpenAI-compatible
/// servers' reasoning fields).
const OPENAI_TEXT_FIELDS: &[&str] = &["content", "refusal", "reasoning_content", "reasoning"];

/// Restores one SSE response; feed it every chunk, then call `finish`.
pub struct SseRestorer {
    table: Arc<Table>,
    format: StreamFormat,
    /// Bytes of an event whose end has not arrived yet.
    buf: Vec<u8>,
    split: EventSplitter,
    /// Streams with text held back, in the order they were last held.
    held: Vec<Held>,
}

struct Held {
    key: String,
    text: String,
    synth: Synth,
}

/// How to write held text as an event of its stream's shape.
enum Synth {
    OpenAi {
        /// The chunk the text was held from, without `choices`.
        base: Map<String, Value>,
        choice: Value,
        field: OpenAiField,
    },
    Anthropic {
        index: Value,
        delta_type: String,
        field: &'static str,
    },
    Responses {
        event_line: bool,
        /// The delta event the text was held from, without `delta`.
        template: Map<String, Value>,
    },
}

enum OpenAiField {
    Text(&'static str),
    ToolArguments(Value),
}

/// What a format handler did with a parsed event.
enum Outcome {
    Unchanged,
    /// The parsed event was modified; re-serialise it.
    Changed,
    /// Not a delta: restore any placeholder anywhere in it.
    Whole,
}

impl SseRestorer {
    pub(super) fn new(table: Arc<Table>, format: StreamFormat) -> SseRestorer {
        SseRestorer { table, format, buf: Vec::new(), split: EventSplitter::default(), held: Vec::new() }
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
        let outcome = match self.format {
            StreamFormat::OpenAiChat => self.openai_chat(&mut v, out),
            StreamFormat::AnthropicMessages => self.anthropic(&mut v, out),
            StreamFormat::OpenAiResponses => self.responses(&mut v, event.has_event_line, out),
        };
        let rewritten = match outcome {
            Outcome::Unchanged => None,
            Outcome::Changed => Some(Value::Object(v).to_string()),
            Outcome::Whole if maybe => super::restore_document(&self.table, &event.data).ok().flatten(),
            Outcome::Whole => None,
        };
        match rewritten {
            Some(data) => write_event(body, tail, &data, out),
            None => {
                out.extend_from_slice(body);
                out.extend_from_slice(tail);
            }
        }
    }

    fn openai_chat(&mut self, v: &mut Map<String, Value>, out: &mut Vec<u8>) -> Outcome {
        if !matches!(v.get("choices"), Some(Value::Array(_))) {
            if v.contains_key("error") {
                // A mid-stream error ends every stream.
                self.flush(|_| true, out);
            }
            return Outcome::Whole;
        }
        let Some(Value::Array(mut choices)) = v.remove("choices") else {
            return Outcome::Whole;
        };
        let mut changed = false;
        for choice in choices.iter_mut() {
            let Some(choice) = choice.as_object_mut() else {
                continue;
            };
            let index = choice.get("index").cloned().unwrap_or(json!(0));
            let ends = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            if let Some(Value::Object(delta)) = choice.get_mut("delta") {
                for &field in OPENAI_TEXT_FIELDS {
                    if let Some(Value::String(text)) = delta.get_mut(field) {
                        changed |= self.feed(format!("c{index}/{field}"), text, Mode::Text, ends, || Synth::OpenAi {
                            base: v.clone(),
                            choice: index.clone(),
                            field: OpenAiField::Text(field),
                        });
                    }
                }
                if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
                    for (position, call) in calls.iter_mut().enumerate() {
                        let Some(call) = call.as_object_mut() else {
                            continue;
                        };
                        let call_index = call.get("index").cloned().unwrap_or(json!(position));
                        let Some(Value::String(arguments)) =
                            call.get_mut("function").and_then(|f| f.get_mut("arguments"))
                        else {
                            continue;
                        };
                        let key = format!("c{index}/t{call_index}");
                        changed |= self.feed(key, arguments, Mode::JsonText, ends, || Synth::OpenAi {
                            base: v.clone(),
                            choice: index.clone(),
                            field: OpenAiField::ToolArguments(call_index.clone()),
                        });
                    }
                }
            }
            if ends {
                let prefix = format!("c{index}/");
                self.flush(|k| k.starts_with(&prefix), out);
            }
        }
        v.insert("choices".to_string(), Value::Array(choices));
        if changed {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        }
    }

    fn anthropic(&mut self, v: &mut Map<String, Value>, out: &mut Vec<u8>) -> Outcome {
        let index = v.get("index").cloned().unwrap_or(Value::Null);
        match v.get("type").and_then(Value::as_str) {
            Some("content_block_delta") => {
                let Some(Value::Object(delta)) = v.get_mut("delta") else {
                    return Outcome::Whole;
                };
                let delta_type = delta.get("type").and_then(Value::as_str).unwrap_or("").to_string();
                let (field, mode) = match delta_type.as_str() {
                    "text_delta" => ("text", Mode::Text),
                    "input_json_delta" => ("partial_json", Mode::JsonText),
                    "thinking_delta" => ("thinking", Mode::Text),
                    _ => return Outcome::Whole,
                };
                let Some(Value::String(text)) = delta.get_mut(field) else {
                    return Outcome::Whole;
                };
                let changed = self.feed(format!("a{index}"), text, mode, false, || Synth::Anthropic {
                    index: index.clone(),
                    delta_type: delta_type.clone(),
                    field,
                });
                if changed {
                    Outcome::Changed
                } else {
                    Outcome::Unchanged
                }
            }
            Some("content_block_stop") => {
                let key = format!("a{index}");
                self.flush(|k| k == key, out);
                Outcome::Whole
            }
            Some("message_delta" | "message_stop" | "error") => {
                self.flush(|_| true, out);
                Outcome::Whole
            }
            _ => Outcome::Whole,
        }
    }

    fn responses(&mut self, v: &mut Map<String, Value>, has_event_line: bool, out: &mut Vec<u8>) -> Outcome {
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("").to_string();
        if let Some(base) = kind.strip_suffix(".delta") {
            if let Some(Value::String(mut text)) = v.remove("delta") {
                let key = responses_key(base, v);
                // Function and MCP call arguments are JSON text; all other
                // deltas (output text, refusals, reasoning) are prose.
                let mode = if base.ends_with("arguments") { Mode::JsonText } else { Mode::Text };
                let changed = self.feed(key, &mut text, mode, false, || Synth::Responses {
                    event_line: has_event_line,
                    template: v.clone(),
                });
                v.insert("delta".to_string(), Value::String(text));
                return if changed { Outcome::Changed } else { Outcome::Unchanged };
            }
            return Outcome::Whole;
        }
        if let Some(base) = kind.strip_suffix(".done") {
            let key = responses_key(base, v);
            self.flush(|k| k == key, out);
        } else if matches!(kind.as_str(), "response.completed" | "response.incomplete" | "response.failed" | "error") {
            self.flush(|_| true, out);
        }
        Outcome::Whole
    }

    /// Join `text` to what its stream holds, restore what can be restored,
    /// and hold back a possible placeholder prefix unless the stream `ends`
    /// with this event. Returns whether `text` changed.
    fn feed(&mut self, key: String, text: &mut String, mode: Mode, ends: bool, synth: impl FnOnce() -> Synth) -> bool {
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
            self.held.push(Held { key, text: full[hold_from..].to_string(), synth: synth() });
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
                held.write(out);
            } else {
                i += 1;
            }
        }
    }
}

impl Held {
    fn write(self, out: &mut Vec<u8>) {
        match self.synth {
            Synth::OpenAi { mut base, choice, field } => {
                base.remove("usage");
                let delta = match field {
                    OpenAiField::Text(name) => {
                        let mut delta = Map::new();
                        delta.insert(name.to_string(), Value::String(self.text));
                        Value::Object(delta)
                    }
                    OpenAiField::ToolArguments(index) => {
                        json!({"tool_calls": [{"index": index, "function": {"arguments": self.text}}]})
                    }
                };
                base.insert("choices".to_string(), json!([{"index": choice, "delta": delta, "finish_reason": null}]));
                out.extend_from_slice(format!("data: {}\n\n", Value::Object(base)).as_bytes());
            }
            Synth::Anthropic { index, delta_type, field } => {
                let mut delta = Map::new();
                delta.insert("type".to_string(), Value::String(delta_type));
                delta.insert(field.to_string(), Value::String(self.text));
                let event = json!({"type": "content_block_delta", "index": index, "delta": delta});
                out.extend_from_slice(format!("event: content_block_delta\ndata: {event}\n\n").as_bytes());
            }
            Synth::Responses { event_line, mut template } => {
                template.insert("delta".to_string(), Value::String(self.text));
                if template.contains_key("logprobs") {
                    template.insert("logprobs".to_string(), json!([]));
                }
                if event_line {
                    let kind = template.get("type").and_then(Value::as_str).unwrap_or("");
                    out.extend_from_slice(format!("event: {kind}\n").as_bytes());
                }
                out.extend_from_slice(format!("data: {}\n\n", Value::Object(template)).as_bytes());
            }
        }
    }
}

/// Responses API streams are told apart by item, content part and summary
/// part; `.delta` and `.done` events of one stream carry the same fields.
fn responses_key(base: &str, v: &Map<String, Value>) -> String {
    let field = |name: &str| v.get(name).map(Value::to_string).unwrap_or_default();
    format!(
        "r/{base}/{}/{}/{}/{}",
        field("item_id"),
        field("output_index"),
        field("content_index"),
        field("summary_index")
    )
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

    fn redaction() -> Redaction {
        Redaction::plan([("email", "jo@x.org"), ("term", "Say \"Hi\""), ("email", "al@y.io")])
    }

    /// A stream of `format` whose text deltas are `deltas`, then its end.
    fn stream(format: StreamFormat, deltas: &[&str]) -> String {
        let mut s = String::new();
        match format {
            StreamFormat::OpenAiChat => {
                s += "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
                for d in deltas {
                    let chunk = json!({"id": "c1", "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": null}]});
                    s += &format!("data: {chunk}\n\n");
                }
                s += "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
                s += "data: [DONE]\n\n";
            }
            StreamFormat::AnthropicMessages => {
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
            StreamFormat::OpenAiResponses => {
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
        }
        s
    }

    use crate::wire::render::sse_events as events;

    /// Concatenated text deltas, checking every event is well formed.
    fn text_of(format: StreamFormat, sse: &str) -> String {
        let mut text = String::new();
        for (name, data) in events(sse) {
            match format {
                StreamFormat::OpenAiChat => {
                    if let Some(t) = data["choices"][0]["delta"]["content"].as_str() {
                        text += t;
                    }
                }
                StreamFormat::AnthropicMessages => {
                    assert_eq!(name.as_deref(), data["type"].as_str(), "event line matches type");
                    if let Some(t) = data["delta"]["text"].as_str() {
                        text += t;
                    }
                }
                StreamFormat::OpenAiResponses => {
                    if data["type"] == "response.output_text.delta" {
                        text += data["delta"].as_str().unwrap();
                    }
                    if data["type"] == "response.output_text.done" {
                        assert_eq!(data["text"].as_str().unwrap(), text, "done text is the whole text");
                    }
                }
            }
        }
        text
    }

    fn run(r: &Redaction, format: StreamFormat, chunks: &[&[u8]]) -> String {
        let mut restorer = r.sse_restorer(format);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(restorer.push(c));
        }
        out.extend(restorer.finish());
        String::from_utf8(out).unwrap()
    }

    const FORMATS: [StreamFormat; 3] =
        [StreamFormat::OpenAiChat, StreamFormat::AnthropicMessages, StreamFormat::OpenAiResponses];

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
            for event in wire.split_inclusive("\n\n") {
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
                })
                .unwrap();
            assert!(held_at < end_at, "{format:?}: held text goes out before the end event\n{out}");
        }
    }

    #[test]
    fn held_text_is_flushed_at_end_of_input_without_end_events() {
        let r = redaction();
        let chunk = json!({"choices": [{"index": 0, "delta": {"content": "cut <TER"}, "finish_reason": null}]});
        let wire = format!("data: {chunk}\n\ndata: {{\"choices\"");
        let out = run(&r, StreamFormat::OpenAiChat, &[wire.as_bytes()]);
        assert!(out.starts_with("data: "));
        assert!(out.contains("data: {\"choices\"\n\n"), "unterminated tail kept, then ended");
        assert_eq!(text_of(StreamFormat::OpenAiChat, &out), "cut <TER");
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
            let out = run(&r, StreamFormat::OpenAiChat, &[&wire.as_bytes()[..cut], &wire.as_bytes()[cut..]]);
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
        let out = run(&r, StreamFormat::AnthropicMessages, &[wire.as_bytes()]);
        assert!(out.contains("event: ping\ndata: {\"type\":  \"ping\"}\n\n"));
        assert!(out.contains("event: mystery\ndata: {\"type\":\"mystery\", \"v\": 1}\n\n"));
        assert_eq!(text_of(StreamFormat::AnthropicMessages, &out), "hi al@y.io");
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
        let out = run(&r, StreamFormat::OpenAiChat, &[wire.as_bytes()]);
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
        let out = run(&r, StreamFormat::AnthropicMessages, &[wire.as_bytes()]);
        let json: String =
            events(&out).iter().filter_map(|(_, d)| d["delta"]["partial_json"].as_str().map(String::from)).collect();
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), json!({"s": "Say \"Hi\"", "x": "al@y.io"}));

        // Responses function_call_arguments deltas and the whole `.done`.
        let wire = concat!(
            "data: {\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_1\",\"output_index\":1,\"delta\":\"{\\\"to\\\":\\\"<EMAIL\"}\n\n",
            "data: {\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_1\",\"output_index\":1,\"delta\":\"_1>\\\"}\"}\n\n",
            "data: {\"type\":\"response.function_call_arguments.done\",\"item_id\":\"fc_1\",\"output_index\":1,\"arguments\":\"{\\\"to\\\":\\\"<EMAIL_1>\\\"}\"}\n\n",
        );
        let out = run(&r, StreamFormat::OpenAiResponses, &[wire.as_bytes()]);
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
        let out = run(&r, StreamFormat::AnthropicMessages, &[wire.as_bytes()]);
        let json: String =
            events(&out).iter().filter_map(|(_, d)| d["delta"]["partial_json"].as_str().map(String::from)).collect();
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), json!({"to": "jo@x.org"}));
    }

    #[test]
    fn held_text_goes_out_before_a_mid_stream_error() {
        let r = redaction();
        let chunk = json!({"choices": [{"index": 0, "delta": {"content": "x <EM"}, "finish_reason": null}]});
        let wire = format!("data: {chunk}\n\ndata: {{\"error\":{{\"message\":\"boom\"}}}}\n\n");
        let out = run(&r, StreamFormat::OpenAiChat, &[wire.as_bytes()]);
        let evs = events(&out);
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[1].1["choices"][0]["delta"]["content"], "<EM");
        assert_eq!(evs[2].1["error"]["message"], "boom");
    }

    #[test]
    fn escaped_brackets_in_event_json_are_restored() {
        let r = redaction();
        let wire = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"to \\u003cEMAIL_1\\u003e\"},\"finish_reason\":null}]}\n\n";
        let out = run(&r, StreamFormat::OpenAiChat, &[wire.as_bytes()]);
        assert_eq!(text_of(StreamFormat::OpenAiChat, &out), "to jo@x.org");
    }

    #[test]
    fn choices_and_blocks_are_kept_apart() {
        let r = redaction();
        let mut wire = String::new();
        for (choice, piece) in [(0, "a <EMA"), (1, "b <EMA"), (1, "IL_2>"), (0, "IL_1>")] {
            let chunk = json!({"choices": [{"index": choice, "delta": {"content": piece}, "finish_reason": null}]});
            wire += &format!("data: {chunk}\n\n");
        }
        let out = run(&r, StreamFormat::OpenAiChat, &[wire.as_bytes()]);
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
        let out = run(&r, StreamFormat::AnthropicMessages, &[wire.as_bytes()]);
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
        let mut restorer = r.sse_restorer(StreamFormat::OpenAiChat);
        assert_eq!(restorer.push(b"data: {\"a\":\"<EMAIL_1>\"}\n\ndata: x"), b"data: {\"a\":\"<EMAIL_1>\"}\n\ndata: x");
        assert!(restorer.finish().is_empty());
    }
}
