//! Answers sluice produces itself (local generation), rendered the way the
//! client spoke: OpenAI chat completions or Anthropic messages, whole or as
//! server-sent events.
//!
//! Generation backends emit [`Delta`]s and one [`Finish`]; the encoders here
//! turn them into each format's exact event sequence, so every backend gets
//! every format for free.

use bytes::Bytes;
use serde_json::{json, Value};

use super::answer::{Assembled, Delta, Finish, Meta};
use super::anthropic::AnthropicSse;
use super::gemini::GeminiSse;
use super::openai::OpenAiSse;
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
                "usage": super::openai::usage_json(finish.usage),
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

/// A stream encoder for the client's dialect; each dialect keeps its own
/// in its module, and this only picks one.
pub enum SseEncoder {
    OpenAi(OpenAiSse),
    Anthropic(AnthropicSse),
    Responses(ResponsesSse),
    Gemini(GeminiSse),
}

impl SseEncoder {
    pub fn new(format: Format, meta: Meta, include_usage: bool) -> SseEncoder {
        match format {
            Format::OpenAi => SseEncoder::OpenAi(OpenAiSse::new(meta, include_usage)),
            Format::Anthropic => SseEncoder::Anthropic(AnthropicSse::new(meta)),
            Format::OpenAiResponses => SseEncoder::Responses(ResponsesSse::new(meta)),
            Format::Gemini => SseEncoder::Gemini(GeminiSse::new(meta)),
        }
    }

    /// The events that open a stream.
    pub fn start(&mut self, prompt_tokens: u64) -> Bytes {
        match self {
            SseEncoder::OpenAi(e) => e.start(prompt_tokens),
            SseEncoder::Anthropic(e) => e.start(prompt_tokens),
            SseEncoder::Responses(e) => e.start(prompt_tokens),
            SseEncoder::Gemini(e) => e.start(prompt_tokens),
        }
    }

    pub fn delta(&mut self, delta: &Delta) -> Bytes {
        match self {
            SseEncoder::OpenAi(e) => e.delta(delta),
            SseEncoder::Anthropic(e) => e.delta(delta),
            SseEncoder::Responses(e) => e.delta(delta),
            SseEncoder::Gemini(e) => e.delta(delta),
        }
    }

    /// The events that close a stream.
    pub fn finish(&mut self, finish: Finish) -> Bytes {
        match self {
            SseEncoder::OpenAi(e) => e.finish(finish),
            SseEncoder::Anthropic(e) => e.finish(finish),
            SseEncoder::Responses(e) => e.finish(finish),
            SseEncoder::Gemini(e) => e.finish(finish),
        }
    }

    /// An error after the stream has started (headers already sent).
    pub fn error(&mut self, message: &str) -> Bytes {
        match self {
            SseEncoder::OpenAi(e) => e.error(message),
            SseEncoder::Anthropic(e) => e.error(message),
            SseEncoder::Responses(e) => e.error(message),
            SseEncoder::Gemini(e) => e.error(message),
        }
    }
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
    use crate::wire::answer::{FinishReason, Usage};

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
