//! Anthropic messages (`POST /v1/messages`): request parsing, sluice's own
//! answers (whole, streamed, errors, model lists), and where the text sits
//! in a streamed answer.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::answer::{Assembled, Delta, Finish, Meta};
use super::sse::{named_event, HeldEvent, StreamEnd, StreamEvent, StreamTexts};
use super::ErrorKind;

use super::json::{array, join, model, object, opt_bool, opt_f64, opt_str, opt_u64, string_list, text_of};
use super::{
    parse_json, CanonicalRequest, Dialect, Identity, Message, ParseError, Part, Role, Sampling, Tool, ToolChoice,
};

pub fn parse_messages(body: &[u8]) -> Result<CanonicalRequest, ParseError> {
    messages_from(parse_json(body)?)
}

/// [`parse_messages`] of a body already read as JSON.
pub fn messages_from(obj: Map<String, Value>) -> Result<CanonicalRequest, ParseError> {
    let model = model(&obj)?;
    let system = match obj.get("system") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(blocks)) => {
            let mut out = Vec::new();
            for (i, b) in blocks.iter().enumerate() {
                for p in block(b, &format!("system[{i}]"))? {
                    if let Part::Text(t) = p {
                        out.push(t);
                    }
                }
            }
            out
        }
        Some(_) => return Err(ParseError::invalid("system", "must be a string or an array of text blocks")),
    };
    let mut messages = Vec::new();
    for (i, m) in array(&obj, "messages")?.iter().enumerate() {
        let path = format!("messages[{i}]");
        let m = object(m, &path)?;
        let role = match opt_str(m, "role", &path)? {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(other) => {
                return Err(ParseError::invalid(
                    join(&path, "role"),
                    format!("must be `user` or `assistant`, not `{other}`"),
                ))
            }
            None => return Err(ParseError::invalid(join(&path, "role"), "is required")),
        };
        let parts = match m.get("content") {
            None | Some(Value::Null) => return Err(ParseError::invalid(join(&path, "content"), "is required")),
            Some(Value::String(s)) => vec![Part::Text(s.clone())],
            Some(Value::Array(blocks)) => {
                let mut parts = Vec::with_capacity(blocks.len());
                for (j, b) in blocks.iter().enumerate() {
                    parts.extend(block(b, &format!("{path}.content[{j}]"))?);
                }
                parts
            }
            Some(_) => {
                return Err(ParseError::invalid(
                    join(&path, "content"),
                    "must be a string or an array of content blocks",
                ))
            }
        };
        messages.push(Message { role, parts });
    }
    let mut tools = Vec::new();
    if let Some(list) = obj.get("tools").filter(|v| !v.is_null()) {
        let list = list.as_array().ok_or_else(|| ParseError::invalid("tools", "must be an array"))?;
        for (i, t) in list.iter().enumerate() {
            let path = format!("tools[{i}]");
            let t = object(t, &path)?;
            tools.push(Tool {
                name: opt_str(t, "name", &path)?.unwrap_or("").to_string(),
                description: opt_str(t, "description", &path)?.unwrap_or("").to_string(),
                parameters: t.get("input_schema").cloned().unwrap_or(Value::Null),
            });
        }
    }
    let tool_choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::Object(o)) => match o.get("type").and_then(Value::as_str) {
            Some("auto") => ToolChoice::Auto,
            Some("none") => ToolChoice::None,
            Some("any") => ToolChoice::Required,
            Some("tool") => ToolChoice::Named(
                o.get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ParseError::invalid("tool_choice.name", "is required for type `tool`"))?
                    .to_string(),
            ),
            _ => return Err(ParseError::invalid("tool_choice.type", "must be auto, any, tool or none")),
        },
        Some(_) => return Err(ParseError::invalid("tool_choice", "must be an object")),
    };
    Ok(CanonicalRequest {
        api: Dialect::AnthropicMessages,
        model,
        system,
        messages,
        tools,
        tool_choice,
        sampling: Sampling {
            temperature: opt_f64(&obj, "temperature")?,
            top_p: opt_f64(&obj, "top_p")?,
            stop: string_list(&obj, "stop_sequences")?,
        },
        stream: opt_bool(&obj, "stream")?,
        stream_usage: false,
        max_tokens: opt_u64(&obj, "max_tokens")?,
        identity: Identity::default(),
    })
}

/// One content block; tool results nest blocks of their own.
fn block(b: &Value, path: &str) -> Result<Vec<Part>, ParseError> {
    let b: &Map<String, Value> = object(b, path)?;
    Ok(match opt_str(b, "type", path)? {
        Some("text") => vec![Part::Text(opt_str(b, "text", path)?.unwrap_or("").to_string())],
        Some("thinking") => vec![Part::Text(opt_str(b, "thinking", path)?.unwrap_or("").to_string())],
        Some("tool_use") | Some("server_tool_use") => vec![Part::ToolCall {
            id: opt_str(b, "id", path)?.unwrap_or("").to_string(),
            name: opt_str(b, "name", path)?.unwrap_or("").to_string(),
            arguments: b.get("input").map(text_of).unwrap_or_default(),
        }],
        Some("tool_result") => {
            let call_id = opt_str(b, "tool_use_id", path)?.unwrap_or("").to_string();
            let content = match b.get("content") {
                Some(Value::Array(inner)) => {
                    let mut texts = Vec::new();
                    for (k, ib) in inner.iter().enumerate() {
                        for p in block(ib, &format!("{path}.content[{k}]"))? {
                            if let Part::Text(t) = p {
                                texts.push(t);
                            }
                        }
                    }
                    texts.join("\n")
                }
                Some(v) => text_of(v),
                None => String::new(),
            };
            vec![Part::ToolResult { call_id, content }]
        }
        Some("redacted_thinking") => Vec::new(),
        Some(kind) => vec![Part::Attachment { kind: kind.to_string() }],
        None => return Err(ParseError::invalid(join(path, "type"), "is required")),
    })
}

/// A local answer streamed as Anthropic message events.
pub struct AnthropicSse {
    meta: Meta,
    /// The open content block (index, is_tool) if any.
    open_block: Option<(usize, bool)>,
    next_block: usize,
    /// Tool-call index → content block index.
    tool_blocks: Vec<usize>,
}

impl AnthropicSse {
    pub fn new(meta: Meta) -> AnthropicSse {
        AnthropicSse { meta, open_block: None, next_block: 0, tool_blocks: Vec::new() }
    }

    pub fn start(&mut self, prompt_tokens: u64) -> Bytes {
        let mut out = named_event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.meta.id, "type": "message", "role": "assistant", "model": self.meta.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": prompt_tokens, "output_tokens": 0},
            }}),
        );
        out.extend_from_slice(&named_event("ping", &json!({"type": "ping"})));
        Bytes::from(out)
    }

    pub fn delta(&mut self, delta: &Delta) -> Bytes {
        let mut out = Vec::new();
        match delta {
            Delta::Text(t) => {
                let index = self.ensure_block(&mut out, None);
                out.extend_from_slice(&named_event(
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
                    out.extend_from_slice(&named_event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index,
                                "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                    ));
                }
            }
        }
        Bytes::from(out)
    }

    pub fn finish(&mut self, finish: Finish) -> Bytes {
        let mut out = Vec::new();
        if self.next_block == 0 {
            // Anthropic clients expect at least one content block.
            self.ensure_block(&mut out, None);
        }
        self.close_block(&mut out);
        out.extend_from_slice(&named_event(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": finish.reason.anthropic(), "stop_sequence": null},
                    "usage": {"input_tokens": finish.usage.prompt_tokens, "output_tokens": finish.usage.completion_tokens}}),
        ));
        out.extend_from_slice(&named_event("message_stop", &json!({"type": "message_stop"})));
        Bytes::from(out)
    }

    pub fn error(&mut self, message: &str) -> Bytes {
        Bytes::from(named_event("error", &json!({"type": "error", "error": {"type": "api_error", "message": message}})))
    }

    /// Make sure the right kind of block is open; returns its index.
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
        out.extend_from_slice(&named_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        self.open_block = Some((index, tool.is_some()));
        index
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open_block.take() {
            out.extend_from_slice(&named_event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }
}

/// The complete non-streaming answer.
pub fn render_whole(meta: &Meta, answer: &Assembled, finish: Finish) -> Bytes {
    let mut content = Vec::new();
    if !answer.text.is_empty() || answer.tool_calls.is_empty() {
        content.push(json!({"type": "text", "text": answer.text}));
    }
    for (id, name, args) in &answer.tool_calls {
        let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    let value = json!({
        "id": meta.id,
        "type": "message",
        "role": "assistant",
        "model": meta.model,
        "content": content,
        "stop_reason": finish.reason.anthropic(),
        "stop_sequence": null,
        "usage": {"input_tokens": finish.usage.prompt_tokens, "output_tokens": finish.usage.completion_tokens},
    });
    Bytes::from(value.to_string())
}

/// Anthropic's error `type` for each kind of refusal.
fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest
        | ErrorKind::UnsupportedMediaType
        | ErrorKind::RequestTimeout
        | ErrorKind::Misdirected => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PolicyBlock => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::TooLarge => "request_too_large",
        ErrorKind::LocalUnavailable | ErrorKind::LimitsUnavailable => "overloaded_error",
        ErrorKind::RateLimited | ErrorKind::LimitReached => "rate_limit_error",
        ErrorKind::Upstream | ErrorKind::UpstreamTimeout | ErrorKind::Internal => "api_error",
    }
}

/// An error body in Anthropic's shape.
pub fn error_body(kind: ErrorKind, message: &str) -> Bytes {
    let value = json!({"type": "error", "error": { "type": error_type(kind), "message": message }});
    Bytes::from(value.to_string())
}

/// `GET /v1/models`: (id, owner) pairs as an Anthropic model page.
pub fn models_body(models: &[(&str, &str)]) -> Bytes {
    let data: Vec<Value> = models
        .iter()
        .map(|(id, _)| json!({"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"}))
        .collect();
    let value = json!({
        "data": data,
        "has_more": false,
        "first_id": models.first().map(|m| m.0),
        "last_id": models.last().map(|m| m.0),
    });
    Bytes::from(value.to_string())
}

/// Where text sits in a message stream: `content_block_delta` events, one
/// stream per content block, ending with its `content_block_stop`; the
/// message's end or an error ends them all.
pub fn stream_texts(v: &mut Map<String, Value>, texts: &mut dyn StreamTexts) -> StreamEvent {
    let index = v.get("index").cloned().unwrap_or(Value::Null);
    match v.get("type").and_then(Value::as_str) {
        Some("content_block_delta") => {
            let Some(Value::Object(delta)) = v.get_mut("delta") else {
                return StreamEvent::Other;
            };
            let delta_type = delta.get("type").and_then(Value::as_str).unwrap_or("").to_string();
            let (field, json) = match delta_type.as_str() {
                "text_delta" => ("text", false),
                "input_json_delta" => ("partial_json", true),
                "thinking_delta" => ("thinking", false),
                _ => return StreamEvent::Other,
            };
            let Some(Value::String(text)) = delta.get_mut(field) else {
                return StreamEvent::Other;
            };
            let changed = texts.text(format!("a{index}"), text, json, false, &|| {
                Box::new(HeldBlockDelta { index: index.clone(), delta_type: delta_type.clone(), field })
            });
            StreamEvent::Delta { changed }
        }
        Some("content_block_stop") => {
            texts.end(StreamEnd::Key(&format!("a{index}")));
            StreamEvent::Other
        }
        Some("message_delta" | "message_stop" | "error") => {
            texts.end(StreamEnd::All);
            StreamEvent::Other
        }
        _ => StreamEvent::Other,
    }
}

/// A `content_block_delta` carrying held text.
struct HeldBlockDelta {
    index: Value,
    delta_type: String,
    field: &'static str,
}

impl HeldEvent for HeldBlockDelta {
    fn write(self: Box<Self>, text: String, out: &mut Vec<u8>) {
        let mut delta = Map::new();
        delta.insert("type".to_string(), Value::String(self.delta_type));
        delta.insert(self.field.to_string(), Value::String(text));
        let event = json!({"type": "content_block_delta", "index": self.index, "delta": delta});
        out.extend_from_slice(&named_event("content_block_delta", &event));
    }
}

/// The token counts an answer (or one event of a streamed answer) reports:
/// (input, output), each when present.
pub fn usage_of(v: &Value) -> (Option<u64>, Option<u64>) {
    // Whole answers carry `usage`; a stream reports input in
    // `message_start.message.usage` and output in `message_delta.usage`.
    let usage = if v["type"] == "message_start" { &v["message"]["usage"] } else { &v["usage"] };
    (usage["input_tokens"].as_u64(), usage["output_tokens"].as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks_tools_and_system() {
        let body = br#"{
            "model": "claude-sonnet-4-5", "max_tokens": 100,
            "system": [{"type": "text", "text": "sys"}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "found"}]},
                    {"type": "image", "source": {"type": "base64", "data": "AAAA"}}]}
            ],
            "tools": [{"name": "lookup", "description": "look up", "input_schema": {"type": "object"}}]
        }"#;
        let req = parse_messages(body).unwrap();
        assert_eq!(req.system, vec!["sys".to_string()]);
        assert!(!req.stream);
        assert_eq!(req.max_tokens, Some(100));
        assert_eq!(
            req.messages[1].parts[0],
            Part::ToolCall { id: "t1".into(), name: "lookup".into(), arguments: "{\"q\":\"x\"}".into() }
        );
        assert_eq!(req.messages[2].parts[0], Part::ToolResult { call_id: "t1".into(), content: "found".into() });
        assert_eq!(req.messages[2].parts[1], Part::Attachment { kind: "image".into() });
        assert_eq!(req.text_segments(), vec!["sys", "hi", "{\"q\":\"x\"}", "found", "look up"]);
    }

    #[test]
    fn rejects_system_role_in_messages() {
        let body = br#"{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"x"}]}"#;
        assert!(parse_messages(body).unwrap_err().to_string().contains("messages[0].role"));
    }
}
