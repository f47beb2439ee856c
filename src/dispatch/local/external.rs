//! An OpenAI-compatible server as the local tier: vLLM, Ollama, llama.cpp
//! server, LM Studio, LocalAI, Jan, mlx_lm.server. This is how sluice
//! scales past one GPU: the local tier becomes a cluster behind one URL.
//!
//! Requests are always sent streaming (with usage), whatever the client
//! asked for; the pipeline re-renders the events in the client's format.

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{GenEvent, LocalError};
use crate::config::{ExternalConfig, UpstreamConfig};
use crate::dispatch::upstream::{UpstreamClient, UpstreamError};
use crate::wire::answer::{Delta, Finish, FinishReason, Usage};
use crate::wire::sse::{parse_event, EventSplitter};
use crate::wire::CanonicalRequest;

pub struct Server {
    client: UpstreamClient,
    url: String,
    model: String,
    key: Option<String>,
}

impl Server {
    pub fn new(cfg: &ExternalConfig, upstream: &UpstreamConfig) -> Result<Server, UpstreamError> {
        Ok(Server {
            client: UpstreamClient::new(upstream)?,
            url: format!("{}/chat/completions", cfg.base_url.trim_end_matches('/')),
            model: cfg.model.clone(),
            key: cfg.api_key_env.as_ref().and_then(|v| std::env::var(v).ok()),
        })
    }

    pub async fn generate(
        &self,
        req: &CanonicalRequest,
        max_tokens: u64,
    ) -> Result<mpsc::Receiver<Result<GenEvent, LocalError>>, LocalError> {
        let body = crate::wire::openai::to_chat_body(req, &self.model, Some(max_tokens));
        let mut builder = Request::post(&self.url).header("content-type", "application/json");
        if let Some(key) = &self.key {
            let value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| LocalError::Backend("external API key is not a valid header value".into()))?;
            builder = builder.header("authorization", value);
        }
        let request =
            builder.body(Full::new(Bytes::from(body.to_string()))).map_err(|e| LocalError::Backend(e.to_string()))?;
        let resp = self.client.send(request).await.map_err(|e| LocalError::Backend(format!("local server: {e}")))?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let detail = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let detail = String::from_utf8_lossy(&detail[..detail.len().min(300)]).into_owned();
            return Err(LocalError::Backend(format!("local server answered {status}: {detail}")));
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut parser = ChunkParser::default();
            loop {
                // Stop reading (and so close the connection, which stops the
                // server) as soon as the client is gone, even mid-silence.
                let next = tokio::select! {
                    next = body.frame() => next,
                    _ = tx.closed() => return,
                };
                let frame = match next {
                    None => break,
                    Some(Err(e)) => {
                        let _ = tx.send(Err(LocalError::Backend(format!("local server stream: {e}")))).await;
                        return;
                    }
                    Some(Ok(frame)) => frame,
                };
                let Ok(data) = frame.into_data() else { continue };
                for event in parser.feed(&data) {
                    // A closed channel means the client went away: dropping
                    // the body closes the connection and stops the server.
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                if parser.done {
                    break;
                }
            }
            let _ = tx.send(Ok(GenEvent::Finish(parser.finish()))).await;
        });
        Ok(rx)
    }
}

/// Incremental parser for OpenAI chat-completion SSE chunks.
#[derive(Default)]
struct ChunkParser {
    buf: Vec<u8>,
    split: EventSplitter,
    reason: Option<FinishReason>,
    usage: Option<Usage>,
    deltas: u64,
    done: bool,
}

impl ChunkParser {
    fn feed(&mut self, data: &[u8]) -> Vec<Result<GenEvent, LocalError>> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some((body_end, end)) = self.split.next_event_end(&self.buf) {
            let event = parse_event(&self.buf[start..body_end]).map(|e| e.data.trim().to_string());
            start = end;
            let Some(payload) = event else { continue };
            if payload == "[DONE]" {
                self.done = true;
                break;
            }
            match serde_json::from_str::<Value>(&payload) {
                Ok(chunk) => self.chunk(&chunk, &mut out),
                Err(e) => out.push(Err(LocalError::Backend(format!("local server sent bad JSON: {e}")))),
            }
        }
        self.buf.drain(..start);
        self.split.consumed(start);
        out
    }

    fn chunk(&mut self, chunk: &Value, out: &mut Vec<Result<GenEvent, LocalError>>) {
        if let Some(err) = chunk.get("error") {
            let message = err.get("message").and_then(Value::as_str).unwrap_or("unknown error");
            out.push(Err(LocalError::Backend(format!("local server: {message}"))));
            return;
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(Usage {
                prompt_tokens: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
                completion_tokens: u.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0),
            });
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else { return };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.reason = Some(match reason {
                "length" => FinishReason::Length,
                "tool_calls" | "function_call" => FinishReason::ToolCalls,
                _ => FinishReason::Stop,
            });
        }
        let Some(delta) = choice.get("delta") else { return };
        if let Some(text) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            self.deltas += 1;
            out.push(Ok(GenEvent::Delta(Delta::Text(text.to_string()))));
        }
        for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
            let function = call.get("function");
            self.deltas += 1;
            out.push(Ok(GenEvent::Delta(Delta::ToolCall {
                index: call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize,
                id: text(call.get("id")),
                name: text(function.and_then(|f| f.get("name"))),
                arguments: text(function.and_then(|f| f.get("arguments"))),
            })));
        }
    }

    fn finish(&self) -> Finish {
        Finish {
            reason: self.reason.unwrap_or(FinishReason::Stop),
            // Servers that omit usage still streamed one delta per token or so.
            usage: self.usage.unwrap_or(Usage { prompt_tokens: 0, completion_tokens: self.deltas }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_chunks_tool_calls_usage_and_done() {
        let mut p = ChunkParser::default();
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}\n\n",
            "data: [DONE]\n\n"
        );
        let (a, b) = stream.as_bytes().split_at(37);
        let mut events = p.feed(a);
        events.extend(p.feed(b));
        let events: Vec<GenEvent> = events.into_iter().map(Result::unwrap).collect();
        assert_eq!(events[0], GenEvent::Delta(Delta::Text("Hel".into())));
        assert_eq!(events[1], GenEvent::Delta(Delta::Text("lo".into())));
        assert_eq!(
            events[2],
            GenEvent::Delta(Delta::ToolCall { index: 0, id: "c1".into(), name: "f".into(), arguments: "{}".into() })
        );
        assert!(p.done);
        assert_eq!(
            p.finish(),
            Finish { reason: FinishReason::ToolCalls, usage: Usage { prompt_tokens: 9, completion_tokens: 3 } }
        );
    }
}
