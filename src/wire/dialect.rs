//! The four client dialects, each a module of its own (`openai`,
//! `anthropic`, `responses`, `gemini`) holding its request parsing, whole
//! and streamed answers, error and model-list bodies, and where the text
//! sits in its streamed answers. [`Dialect`]'s methods and [`SseEncoder`]
//! only pick the module; nothing dialect-specific lives here.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::answer::{Assembled, Delta, Finish, Meta};
use super::anthropic::{self, AnthropicSse};
use super::gemini::{self, GeminiSse};
use super::openai::{self, OpenAiSse};
use super::responses::{self, ResponsesSse};
use super::sse::{StreamEvent, StreamTexts};
use super::{CanonicalRequest, Dialect, ErrorKind, ParseError};

impl Dialect {
    /// A chat request of this dialect, from its body already read as JSON;
    /// `path` is the request path (Gemini names the model there).
    pub fn parse(self, obj: Map<String, Value>, path: &str) -> Result<CanonicalRequest, ParseError> {
        match self {
            Dialect::OpenAiChat => openai::chat_from(obj),
            Dialect::AnthropicMessages => anthropic::messages_from(obj),
            Dialect::OpenAiResponses => responses::responses_from(obj),
            Dialect::GeminiGenerate => {
                let (model, stream) =
                    gemini::model_of_request_path(path).ok_or(ParseError::Missing("model (in the request path)"))?;
                gemini::generate_from(&model, stream, obj)
            }
        }
    }

    /// sluice's own complete (non-streaming) answer.
    pub fn render_whole(self, meta: &Meta, answer: &Assembled, finish: Finish) -> Bytes {
        match self {
            Dialect::OpenAiChat => openai::render_whole(meta, answer, finish),
            Dialect::AnthropicMessages => anthropic::render_whole(meta, answer, finish),
            Dialect::OpenAiResponses => responses::render_whole(meta, answer, finish),
            Dialect::GeminiGenerate => gemini::render_whole(meta, answer, finish),
        }
    }

    /// The encoder for sluice's own streamed answer.
    pub fn encoder(self, meta: Meta, include_usage: bool) -> SseEncoder {
        match self {
            Dialect::OpenAiChat => SseEncoder::OpenAi(OpenAiSse::new(meta, include_usage)),
            Dialect::AnthropicMessages => SseEncoder::Anthropic(AnthropicSse::new(meta)),
            Dialect::OpenAiResponses => SseEncoder::Responses(ResponsesSse::new(meta)),
            Dialect::GeminiGenerate => SseEncoder::Gemini(GeminiSse::new(meta)),
        }
    }

    /// A refusal's body.
    pub fn error_body(self, kind: ErrorKind, message: &str) -> Bytes {
        match self {
            Dialect::OpenAiChat | Dialect::OpenAiResponses => openai::error_body(kind, message),
            Dialect::AnthropicMessages => anthropic::error_body(kind, message),
            Dialect::GeminiGenerate => gemini::error_body(kind, message),
        }
    }

    /// `GET /v1/models` from (id, owner) pairs.
    pub fn models_body(self, models: &[(&str, &str)]) -> Bytes {
        match self {
            Dialect::OpenAiChat | Dialect::OpenAiResponses => openai::models_body(models),
            Dialect::AnthropicMessages => anthropic::models_body(models),
            Dialect::GeminiGenerate => gemini::models_body(models),
        }
    }

    /// The (input, output) token counts an answer, or one event of a
    /// streamed answer, reports in this dialect.
    pub fn usage_of(self, answer: &Value) -> (Option<u64>, Option<u64>) {
        match self {
            Dialect::OpenAiChat => openai::usage_of(answer),
            Dialect::AnthropicMessages => anthropic::usage_of(answer),
            Dialect::OpenAiResponses => responses::usage_of(answer),
            Dialect::GeminiGenerate => gemini::usage_of(answer),
        }
    }

    /// Tell `texts` where the text sits in one parsed event of a streamed
    /// answer in this dialect; `has_event_line` is whether the event was named.
    pub fn stream_texts(
        self,
        event: &mut Map<String, Value>,
        has_event_line: bool,
        texts: &mut dyn StreamTexts,
    ) -> StreamEvent {
        match self {
            Dialect::OpenAiChat => openai::stream_texts(event, texts),
            Dialect::AnthropicMessages => anthropic::stream_texts(event, texts),
            Dialect::OpenAiResponses => responses::stream_texts(event, has_event_line, texts),
            Dialect::GeminiGenerate => gemini::stream_texts(event, texts),
        }
    }
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
    sse.replace("\r\n", "\n")
        .split("\n\n")
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
        let mut enc = Dialect::AnthropicMessages.encoder(meta(), false);
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
        let mut enc = Dialect::OpenAiChat.encoder(meta(), true);
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
        let mut enc = Dialect::OpenAiResponses.encoder(meta(), false);
        let mut out = String::new();
        out += std::str::from_utf8(&enc.start(2)).unwrap();
        out += std::str::from_utf8(&enc.delta(&Delta::Text("Hi".into()))).unwrap();
        out += std::str::from_utf8(&enc.finish(finish)).unwrap();
        let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n.unwrap()).collect();
        assert_eq!(names.first().map(String::as_str), Some("response.created"));
        assert_eq!(names.last().map(String::as_str), Some("response.completed"));
        let mut enc = Dialect::GeminiGenerate.encoder(meta(), false);
        assert!(enc.start(2).is_empty());
        let chunk = enc.delta(&Delta::Text("Hi".into()));
        assert!(chunk.starts_with(b"data: {") && chunk.ends_with(b"\r\n\r\n"));
        let whole: Value =
            serde_json::from_slice(&Dialect::GeminiGenerate.render_whole(&meta(), &Assembled::default(), finish))
                .unwrap();
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
        let o: Value = serde_json::from_slice(&Dialect::OpenAiChat.render_whole(&meta(), &a, finish)).unwrap();
        assert_eq!(o["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{\"q\":\"x\"}");
        assert_eq!(o["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(o["usage"]["total_tokens"], 16);
        assert_eq!(o["model"], "local-model");
        let an: Value = serde_json::from_slice(&Dialect::AnthropicMessages.render_whole(&meta(), &a, finish)).unwrap();
        assert_eq!(an["content"][1]["input"]["q"], "x");
        assert_eq!(an["stop_reason"], "tool_use");
        assert_eq!(an["usage"]["input_tokens"], 10);
    }
}
