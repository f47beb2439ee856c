//! Answers sluice produces itself (local generation), rendered the way the
//! client spoke: OpenAI chat completions or Anthropic messages, whole or as
//! server-sent events.
//!
//! Generation backends emit [`Delta`]s and one [`Finish`]; the encoders here
//! turn them into each format's exact event sequence, so every backend gets
//! every format for free.

use bytes::Bytes;
use serde_json::{json, Value};

use super::answer::{Assembled, Delta, Finish, FinishReason, Meta, Usage};
use super::gemini::GeminiSse;
use super::responses::ResponsesSse;
use super::Format;

/// The complete non-streaming body.
pub fn render_whole(format: Format, meta: &Meta, answer: &Assembled, finish: Finish) -> Bytes {
    let value = match format {
        Format::OpenAi => {
            let tool_calls: Vec<Value> = answer
                .tool_calls
                .iter()
                .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
                .collect();
            let mut message = json!({
                "role": "assistant",
                "content": if answer.text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::from(answer.text.clone()) },
            });
            if !tool_calls.is_empty() {
                message["tool_calls"] = Value::from(tool_calls);
            }
            json!({
                "id": meta.id,
                "object": "chat.completion",
                "created": meta.created_unix,
                "model": meta.model,
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish.reason.openai()}],
                "usage": openai_usage(finish.usage),
            })
        }
        Format::Anthropic => {
            let mut content = Vec::new();
            if !answer.text.is_empty() || answer.tool_calls.is_empty() {
                content.push(json!({"type": "text", "text": answer.text}));
            }
            for (id, name, args) in &answer.tool_calls {
                let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
                content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
            }
            json!({
                "id": meta.id,
                "type": "message",
                "role": "assistant",
                "model": meta.model,
                "content": content,
                "stop_reason": finish.reason.anthropic(),
                "stop_sequence": null,
                "usage": {"input_tokens": finish.usage.prompt_tokens, "output_tokens": finish.usage.completion_tokens},
            })
        }
        Format::OpenAiResponses => return super::responses::render_whole(meta, answer, finish),
        Format::Gemini => return super::gemini::render_whole(meta, answer, finish),
    };
    Bytes::from(value.to_string())
}

fn openai_usage(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// Turns deltas into one format's SSE event sequence.
pub struct SseEncoder {
    format: Format,
    meta: Meta,
    include_usage: bool,
    /// Anthropic: the open content block (index, is_tool) if any.
    open_block: Option<(usize, bool)>,
    next_block: usize,
    /// Anthropic: tool-call index → content block index.
    tool_blocks: Vec<usize>,
    /// The encoder for formats that keep theirs in their own module.
    other: Other,
}

enum Other {
    None,
    Responses(ResponsesSse),
    Gemini(GeminiSse),
}

impl SseEncoder {
    pub fn new(format: Format, meta: Meta, include_usage: bool) -> SseEncoder {
        SseEncoder {
            format,
            include_usage,
            open_block: None,
            next_block: 0,
            tool_blocks: Vec::new(),
            other: match format {
                Format::OpenAiResponses => Other::Responses(ResponsesSse::new(meta.clone())),
                Format::Gemini => Other::Gemini(GeminiSse::new(meta.clone())),
                Format::OpenAi | Format::Anthropic => Other::None,
            },
            meta,
        }
    }

    /// The events that open a stream.
    pub fn start(&mut self, prompt_tokens: u64) -> Bytes {
        match self.format {
            Format::OpenAi => self.openai_chunk(json!({"role": "assistant", "content": ""}), None, None),
            Format::Anthropic => {
                let mut out = event(
                    "message_start",
                    &json!({"type": "message_start", "message": {
                        "id": self.meta.id, "type": "message", "role": "assistant", "model": self.meta.model,
                        "content": [], "stop_reason": null, "stop_sequence": null,
                        "usage": {"input_tokens": prompt_tokens, "output_tokens": 0},
                    }}),
                );
                out.extend_from_slice(&event("ping", &json!({"type": "ping"})));
                Bytes::from(out)
            }
            Format::OpenAiResponses | Format::Gemini => match &mut self.other {
                Other::Responses(e) => e.start(prompt_tokens),
                Other::Gemini(e) => e.start(prompt_tokens),
                Other::None => Bytes::new(),
            },
        }
    }

    pub fn delta(&mut self, delta: &Delta) -> Bytes {
        match self.format {
            Format::OpenAi => match delta {
                Delta::Text(t) => self.openai_chunk(json!({"content": t}), None, None),
                Delta::ToolCall { index, id, name, arguments } => {
                    let mut call = json!({"index": index, "function": {"arguments": arguments}});
                    if !id.is_empty() {
                        call["id"] = Value::from(id.clone());
                        call["type"] = Value::from("function");
                        call["function"]["name"] = Value::from(name.clone());
                    }
                    self.openai_chunk(json!({"tool_calls": [call]}), None, None)
                }
            },
            Format::Anthropic => {
                let mut out = Vec::new();
                match delta {
                    Delta::Text(t) => {
                        let index = self.ensure_block(&mut out, None);
                        out.extend_from_slice(&event(
                            "content_block_delta",
                            &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}),
                        ));
                    }
                    Delta::ToolCall { index: call, id, name, arguments } => {
                        let index = match self.tool_blocks.get(*call) {
                            Some(&block) => block,
                            None => {
                                let block = self.ensure_block(&mut out, Some((id, name)));
                                self.tool_blocks.push(block);
                                block
                            }
                        };
                        if !arguments.is_empty() {
                            out.extend_from_slice(&event(
                                "content_block_delta",
                                &json!({"type": "content_block_delta", "index": index,
                                        "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                            ));
                        }
                    }
                }
                Bytes::from(out)
            }
            Format::OpenAiResponses | Format::Gemini => match &mut self.other {
                Other::Responses(e) => e.delta(delta),
                Other::Gemini(e) => e.delta(delta),
                Other::None => Bytes::new(),
            },
        }
    }

    /// The events that close a stream.
    pub fn finish(&mut self, finish: Finish) -> Bytes {
        match self.format {
            Format::OpenAi => {
                let mut out = self.openai_chunk(json!({}), Some(finish.reason), None).to_vec();
                if self.include_usage {
                    let mut chunk = self.openai_base();
                    chunk["choices"] = json!([]);
                    chunk["usage"] = openai_usage(finish.usage);
                    out.extend_from_slice(&data(&chunk));
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(out)
            }
            Format::Anthropic => {
                let mut out = Vec::new();
                if self.next_block == 0 {
                    // Anthropic clients expect at least one content block.
                    self.ensure_block(&mut out, None);
                }
                self.close_block(&mut out);
                out.extend_from_slice(&event(
                    "message_delta",
                    &json!({"type": "message_delta",
                            "delta": {"stop_reason": finish.reason.anthropic(), "stop_sequence": null},
                            "usage": {"input_tokens": finish.usage.prompt_tokens, "output_tokens": finish.usage.completion_tokens}}),
                ));
                out.extend_from_slice(&event("message_stop", &json!({"type": "message_stop"})));
                Bytes::from(out)
            }
            Format::OpenAiResponses | Format::Gemini => match &mut self.other {
                Other::Responses(e) => e.finish(finish),
                Other::Gemini(e) => e.finish(finish),
                Other::None => Bytes::new(),
            },
        }
    }

    /// An error after the stream has started (headers already sent).
    pub fn error(&mut self, message: &str) -> Bytes {
        match self.format {
            Format::OpenAi => {
                data(&json!({"error": {"message": message, "type": "api_error", "code": "local_generation_failed"}}))
            }
            Format::Anthropic => Bytes::from(event(
                "error",
                &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
            )),
            Format::OpenAiResponses | Format::Gemini => match &mut self.other {
                Other::Responses(e) => e.error(message),
                Other::Gemini(e) => e.error(message),
                Other::None => Bytes::new(),
            },
        }
    }

    fn openai_base(&self) -> Value {
        json!({"id": self.meta.id, "object": "chat.completion.chunk", "created": self.meta.created_unix, "model": self.meta.model})
    }

    fn openai_chunk(&self, delta: Value, finish: Option<FinishReason>, _usage: Option<Usage>) -> Bytes {
        let mut chunk = self.openai_base();
        chunk["choices"] =
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish.map(FinishReason::openai)}]);
        data(&chunk)
    }

    /// Anthropic: make sure the right kind of block is open; returns its index.
    fn ensure_block(&mut self, out: &mut Vec<u8>, tool: Option<(&String, &String)>) -> usize {
        match (self.open_block, tool) {
            (Some((index, false)), None) => return index,
            _ => self.close_block(out),
        }
        let index = self.next_block;
        self.next_block += 1;
        let block = match tool {
            None => json!({"type": "text", "text": ""}),
            Some((id, name)) => json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
        };
        out.extend_from_slice(&event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        self.open_block = Some((index, tool.is_some()));
        index
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open_block.take() {
            out.extend_from_slice(&event("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
        }
    }
}

fn data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn event(name: &str, v: &Value) -> Vec<u8> {
    format!("event: {name}\ndata: {v}\n\n").into_bytes()
}

/// Test helper: an SSE body as (event name, data) pairs, data parsed as JSON
/// where it is JSON.
#[cfg(test)]
pub(crate) fn sse_events(sse: &str) -> Vec<(Option<String>, Value)> {
    sse.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap_or(Value::String(d.to_string()));
                }
            }
            (name, data)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta { id: "id-1".into(), model: "local-model".into(), created_unix: 1 }
    }

    use super::sse_events as events;

    #[test]
    fn anthropic_stream_has_the_full_event_sequence() {
        let mut enc = SseEncoder::new(Format::Anthropic, meta(), false);
        let mut out = String::new();
        out += std::str::from_utf8(&enc.start(5)).unwrap();
        out += std::str::from_utf8(&enc.delta(&Delta::Text("Hel".into()))).unwrap();
        out += std::str::from_utf8(&enc.delta(&Delta::Text("lo".into()))).unwrap();
        out += std::str::from_utf8(&enc.delta(&Delta::ToolCall {
            index: 0,
            id: "t1".into(),
            name: "f".into(),
            arguments: "{\"a\":".into(),
        }))
        .unwrap();
        out += std::str::from_utf8(&enc.delta(&Delta::ToolCall {
            index: 0,
            id: String::new(),
            name: String::new(),
            arguments: "1}".into(),
        }))
        .unwrap();
        out += std::str::from_utf8(&enc.finish(Finish {
            reason: FinishReason::ToolCalls,
            usage: Usage { prompt_tokens: 5, completion_tokens: 4 },
        }))
        .unwrap();
        let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n.unwrap()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let evs = events(&out);
        assert_eq!(evs[6].1["content_block"]["type"], "tool_use");
        assert_eq!(evs[6].1["index"], 1);
        assert_eq!(evs[10].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(evs[10].1["usage"]["output_tokens"], 4);
    }

    #[test]
    fn openai_stream_ends_with_finish_usage_and_done() {
        let mut enc = SseEncoder::new(Format::OpenAi, meta(), true);
        let mut out = String::new();
        out += std::str::from_utf8(&enc.start(3)).unwrap();
        out += std::str::from_utf8(&enc.delta(&Delta::Text("Hi".into()))).unwrap();
        out +=
            std::str::from_utf8(&enc.finish(Finish {
                reason: FinishReason::Stop,
                usage: Usage { prompt_tokens: 3, completion_tokens: 1 },
            }))
            .unwrap();
        let evs = events(&out);
        assert_eq!(evs.len(), 5);
        assert_eq!(evs[0].1["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(evs[1].1["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(evs[2].1["choices"][0]["finish_reason"], "stop");
        assert_eq!(evs[3].1["usage"]["total_tokens"], 4);
        assert_eq!(evs[4].1, Value::String("[DONE]".into()));
    }

    #[test]
    fn responses_and_gemini_go_through_their_encoders() {
        let finish = Finish { reason: FinishReason::Stop, usage: Usage { prompt_tokens: 2, completion_tokens: 1 } };
        let mut enc = SseEncoder::new(Format::OpenAiResponses, meta(), false);
        let mut out = String::new();
        out += std::str::from_utf8(&enc.start(2)).unwrap();
        out += std::str::from_utf8(&enc.delta(&Delta::Text("Hi".into()))).unwrap();
        out += std::str::from_utf8(&enc.finish(finish)).unwrap();
        let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n.unwrap()).collect();
        assert_eq!(names.first().map(String::as_str), Some("response.created"));
        assert_eq!(names.last().map(String::as_str), Some("response.completed"));
        let mut enc = SseEncoder::new(Format::Gemini, meta(), false);
        assert!(enc.start(2).is_empty());
        let chunk = enc.delta(&Delta::Text("Hi".into()));
        assert!(chunk.starts_with(b"data: {") && chunk.ends_with(b"\r\n\r\n"));
        let whole: Value =
            serde_json::from_slice(&render_whole(Format::Gemini, &meta(), &Assembled::default(), finish)).unwrap();
        assert_eq!(whole["candidates"][0]["finishReason"], "STOP");
    }

    #[test]
    fn whole_answers_in_both_formats() {
        let mut a = Assembled::default();
        a.push(Delta::Text("Sure".into()));
        a.push(Delta::ToolCall { index: 0, id: "c1".into(), name: "lookup".into(), arguments: "{\"q\":".into() });
        a.push(Delta::ToolCall { index: 0, id: String::new(), name: String::new(), arguments: "\"x\"}".into() });
        let finish =
            Finish { reason: FinishReason::ToolCalls, usage: Usage { prompt_tokens: 10, completion_tokens: 6 } };
        let o: Value = serde_json::from_slice(&render_whole(Format::OpenAi, &meta(), &a, finish)).unwrap();
        assert_eq!(o["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{\"q\":\"x\"}");
        assert_eq!(o["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(o["usage"]["total_tokens"], 16);
        assert_eq!(o["model"], "local-model");
        let an: Value = serde_json::from_slice(&render_whole(Format::Anthropic, &meta(), &a, finish)).unwrap();
        assert_eq!(an["content"][1]["input"]["q"], "x");
        assert_eq!(an["stop_reason"], "tool_use");
        assert_eq!(an["usage"]["input_tokens"], 10);
    }
}
