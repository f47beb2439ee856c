//! OpenAI chat completions (`POST /v1/chat/completions`): request parsing,
//! sluice's own answers (whole, streamed, errors, model lists), and where
//! the text sits in a streamed answer.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::answer::{Assembled, Delta, Finish, FinishReason, Meta, Usage};
use super::sse::{data_event, HeldEvent, StreamEnd, StreamEvent, StreamTexts};
use super::ErrorKind;

use super::json::{array, join, model, object, opt_bool, opt_f64, opt_str, opt_u64, string_list, text_of};
use super::{
    parse_json, CanonicalRequest, Dialect, Identity, Message, ParseError, Part, Role, Sampling, Tool, ToolChoice,
};

pub fn parse_chat(body: &[u8]) -> Result<CanonicalRequest, ParseError> {
    chat_from(parse_json(body)?)
}

/// [`parse_chat`] of a body already read as JSON.
pub fn chat_from(obj: Map<String, Value>) -> Result<CanonicalRequest, ParseError> {
    let model = model(&obj)?;
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for (i, m) in array(&obj, "messages")?.iter().enumerate() {
        let path = format!("messages[{i}]");
        let m = object(m, &path)?;
        let role = match opt_str(m, "role", &path)? {
            Some("system") | Some("developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("tool") | Some("function") => Role::Tool,
            Some(other) => {
                return Err(ParseError::invalid(join(&path, "role"), format!("has unknown value `{other}`")))
            }
            None => return Err(ParseError::invalid(join(&path, "role"), "is required")),
        };
        let mut parts = content_parts(m.get("content"), &path)?;
        if role == Role::System {
            system.extend(parts.into_iter().filter_map(|p| match p {
                Part::Text(t) => Some(t),
                _ => None,
            }));
            continue;
        }
        if role == Role::Tool {
            let call_id = opt_str(m, "tool_call_id", &path)?.or(opt_str(m, "name", &path)?).unwrap_or("");
            let content = parts
                .drain(..)
                .filter_map(|p| match p {
                    Part::Text(t) => Some(t),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n");
            parts.push(Part::ToolResult { call_id: call_id.to_string(), content });
        }
        if let Some(calls) = m.get("tool_calls").filter(|v| !v.is_null()) {
            let calls =
                calls.as_array().ok_or_else(|| ParseError::invalid(join(&path, "tool_calls"), "must be an array"))?;
            for (j, call) in calls.iter().enumerate() {
                let cpath = format!("{path}.tool_calls[{j}]");
                let call = object(call, &cpath)?;
                let id = opt_str(call, "id", &cpath)?.unwrap_or("").to_string();
                let function = call.get("function").map(|f| object(f, &join(&cpath, "function"))).transpose()?;
                let (name, arguments) = match function {
                    Some(f) => (
                        opt_str(f, "name", &cpath)?.unwrap_or("").to_string(),
                        f.get("arguments").map(text_of).unwrap_or_default(),
                    ),
                    None => (String::new(), String::new()),
                };
                parts.push(Part::ToolCall { id, name, arguments });
            }
        }
        messages.push(Message { role, parts });
    }
    let mut tools = Vec::new();
    if let Some(list) = obj.get("tools").filter(|v| !v.is_null()) {
        let list = list.as_array().ok_or_else(|| ParseError::invalid("tools", "must be an array"))?;
        for (i, t) in list.iter().enumerate() {
            let path = format!("tools[{i}]");
            let t = object(t, &path)?;
            // Chat tools nest under `function`; newer shapes put the fields at the top.
            let f = match t.get("function") {
                Some(f) => object(f, &join(&path, "function"))?,
                None => t,
            };
            tools.push(Tool {
                name: opt_str(f, "name", &path)?.unwrap_or("").to_string(),
                description: opt_str(f, "description", &path)?.unwrap_or("").to_string(),
                parameters: f.get("parameters").cloned().unwrap_or(Value::Null),
            });
        }
    }
    let max_tokens = match opt_u64(&obj, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => opt_u64(&obj, "max_tokens")?,
    };
    let tool_choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(ParseError::invalid("tool_choice", format!("has unknown value `{other}`"))),
        },
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| o.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| ParseError::invalid("tool_choice", "must name a function"))?;
            ToolChoice::Named(name.to_string())
        }
        Some(_) => return Err(ParseError::invalid("tool_choice", "must be a string or an object")),
    };
    let stream_usage =
        obj.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    Ok(CanonicalRequest {
        api: Dialect::OpenAiChat,
        model,
        system,
        messages,
        tools,
        tool_choice,
        sampling: Sampling {
            temperature: opt_f64(&obj, "temperature")?,
            top_p: opt_f64(&obj, "top_p")?,
            stop: string_list(&obj, "stop")?,
        },
        stream: opt_bool(&obj, "stream")?,
        stream_usage,
        max_tokens,
        identity: Identity::default(),
    })
}

fn content_parts(content: Option<&Value>, path: &str) -> Result<Vec<Part>, ParseError> {
    let path = join(path, "content");
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Part::Text(s.clone())]),
        Some(Value::Array(items)) => {
            let mut parts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let ipath = format!("{path}[{i}]");
                let item = object(item, &ipath)?;
                match opt_str(item, "type", &ipath)? {
                    Some("text") | Some("input_text") => {
                        parts.push(Part::Text(opt_str(item, "text", &ipath)?.unwrap_or("").to_string()))
                    }
                    Some("refusal") => {
                        parts.push(Part::Text(opt_str(item, "refusal", &ipath)?.unwrap_or("").to_string()))
                    }
                    Some(kind) => parts.push(Part::Attachment { kind: kind.to_string() }),
                    None => return Err(ParseError::invalid(join(&ipath, "type"), "is required")),
                }
            }
            Ok(parts)
        }
        Some(_) => Err(ParseError::invalid(path, "must be a string or an array of content parts")),
    }
}

/// A tool definition in OpenAI's function-tool shape (also what mistral.rs reads).
pub fn tool_json(t: &Tool) -> Value {
    json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}})
}

/// The canonical request as an OpenAI chat completions body, for
/// OpenAI-compatible local servers (vLLM, Ollama, llama.cpp, ...). Always
/// streams, with usage, so one parser serves both kinds of client request.
pub fn to_chat_body(req: &CanonicalRequest, model: &str, max_tokens: Option<u64>) -> Value {
    let mut messages = Vec::new();
    for s in &req.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    for turn in req.turns() {
        for (call_id, content) in &turn.results {
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
        }
        let role = match turn.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => continue,
        };
        if turn.text.is_empty() && turn.calls.is_empty() {
            continue;
        }
        let mut msg = json!({"role": role, "content": turn.text});
        if !turn.calls.is_empty() {
            let calls: Vec<Value> = turn
                .calls
                .iter()
                .map(|(id, name, arguments)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}))
                .collect();
            msg["tool_calls"] = Value::from(calls);
        }
        messages.push(msg);
    }
    let mut body = json!({
        "model": model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(n) = max_tokens {
        body["max_tokens"] = Value::from(n);
    }
    if let Some(t) = req.sampling.temperature {
        body["temperature"] = Value::from(t);
    }
    if let Some(p) = req.sampling.top_p {
        body["top_p"] = Value::from(p);
    }
    if !req.sampling.stop.is_empty() {
        body["stop"] = Value::from(req.sampling.stop.clone());
    }
    if !req.tools.is_empty() {
        body["tools"] = req.tools.iter().map(tool_json).collect();
        body["tool_choice"] = match &req.tool_choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Named(n) => json!({"type": "function", "function": {"name": n}}),
        };
    }
    body
}

/// A local answer streamed as OpenAI chat-completion chunks.
pub struct OpenAiSse {
    meta: Meta,
    include_usage: bool,
}

impl OpenAiSse {
    pub fn new(meta: Meta, include_usage: bool) -> OpenAiSse {
        OpenAiSse { meta, include_usage }
    }

    pub fn start(&mut self, _prompt_tokens: u64) -> Bytes {
        self.chunk(json!({"role": "assistant", "content": ""}), None)
    }

    pub fn delta(&mut self, delta: &Delta) -> Bytes {
        match delta {
            Delta::Text(t) => self.chunk(json!({"content": t}), None),
            Delta::ToolCall { index, id, name, arguments } => {
                let mut call = json!({"index": index, "function": {"arguments": arguments}});
                if !id.is_empty() {
                    call["id"] = Value::from(id.clone());
                    call["type"] = Value::from("function");
                    call["function"]["name"] = Value::from(name.clone());
                }
                self.chunk(json!({"tool_calls": [call]}), None)
            }
        }
    }

    pub fn finish(&mut self, finish: Finish) -> Bytes {
        let mut out = self.chunk(json!({}), Some(finish.reason)).to_vec();
        if self.include_usage {
            let mut chunk = self.base();
            chunk["choices"] = json!([]);
            chunk["usage"] = usage_json(finish.usage);
            out.extend_from_slice(&data_event(&chunk));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Bytes::from(out)
    }

    pub fn error(&mut self, message: &str) -> Bytes {
        data_event(&json!({"error": {"message": message, "type": "api_error", "code": "local_generation_failed"}}))
    }

    fn base(&self) -> Value {
        json!({"id": self.meta.id, "object": "chat.completion.chunk", "created": self.meta.created_unix, "model": self.meta.model})
    }

    fn chunk(&self, delta: Value, finish: Option<FinishReason>) -> Bytes {
        let mut chunk = self.base();
        chunk["choices"] =
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish.map(FinishReason::openai)}]);
        data_event(&chunk)
    }
}

/// The complete non-streaming answer.
pub fn render_whole(meta: &Meta, answer: &Assembled, finish: Finish) -> Bytes {
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
    let value = json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created_unix,
        "model": meta.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish.reason.openai()}],
        "usage": usage_json(finish.usage),
    });
    Bytes::from(value.to_string())
}

/// OpenAI's error `type` for each kind of refusal.
fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest
        | ErrorKind::TooLarge
        | ErrorKind::UnsupportedMediaType
        | ErrorKind::RequestTimeout
        | ErrorKind::Misdirected => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PolicyBlock => "policy_violation",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::LocalUnavailable | ErrorKind::LimitsUnavailable => "service_unavailable",
        ErrorKind::RateLimited | ErrorKind::LimitReached => "rate_limit_error",
        ErrorKind::Upstream | ErrorKind::UpstreamTimeout | ErrorKind::Internal => "api_error",
    }
}

/// An error body in OpenAI's shape (also the Responses API's).
pub fn error_body(kind: ErrorKind, message: &str) -> Bytes {
    let value = json!({
        "error": { "message": message, "type": error_type(kind), "param": null, "code": kind.code() }
    });
    Bytes::from(value.to_string())
}

/// `GET /v1/models`: (id, owner) pairs as an OpenAI model list.
pub fn models_body(models: &[(&str, &str)]) -> Bytes {
    let data: Vec<Value> = models
        .iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    Bytes::from(json!({"object": "list", "data": data}).to_string())
}

/// Delta fields that carry text (beyond `content`, OpenAI-compatible
/// servers' reasoning fields).
const STREAM_TEXT_FIELDS: &[&str] = &["content", "refusal", "reasoning_content", "reasoning"];

/// Where text sits in a chat-completion chunk: each choice's delta text
/// fields and tool-call arguments, one stream per choice and field (or
/// call), ending with the choice's `finish_reason`. A chunk without
/// `choices` is not a delta; one with an `error` ends every stream.
pub fn stream_texts(v: &mut Map<String, Value>, texts: &mut dyn StreamTexts) -> StreamEvent {
    if !matches!(v.get("choices"), Some(Value::Array(_))) {
        if v.contains_key("error") {
            texts.end(StreamEnd::All);
        }
        return StreamEvent::Other;
    }
    let Some(Value::Array(mut choices)) = v.remove("choices") else {
        return StreamEvent::Other;
    };
    let mut changed = false;
    for choice in choices.iter_mut() {
        let Some(choice) = choice.as_object_mut() else {
            continue;
        };
        let index = choice.get("index").cloned().unwrap_or(json!(0));
        let ends = choice.get("finish_reason").is_some_and(|f| !f.is_null());
        if let Some(Value::Object(delta)) = choice.get_mut("delta") {
            for &field in STREAM_TEXT_FIELDS {
                if let Some(Value::String(text)) = delta.get_mut(field) {
                    changed |= texts.text(format!("c{index}/{field}"), text, false, ends, &|| {
                        Box::new(HeldChunk { base: v.clone(), choice: index.clone(), field: HeldField::Text(field) })
                    });
                }
            }
            if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
                for (position, call) in calls.iter_mut().enumerate() {
                    let Some(call) = call.as_object_mut() else {
                        continue;
                    };
                    let call_index = call.get("index").cloned().unwrap_or(json!(position));
                    let Some(Value::String(arguments)) = call.get_mut("function").and_then(|f| f.get_mut("arguments"))
                    else {
                        continue;
                    };
                    let key = format!("c{index}/t{call_index}");
                    changed |= texts.text(key, arguments, true, ends, &|| {
                        Box::new(HeldChunk {
                            base: v.clone(),
                            choice: index.clone(),
                            field: HeldField::ToolArguments(call_index.clone()),
                        })
                    });
                }
            }
        }
        if ends {
            texts.end(StreamEnd::Prefix(&format!("c{index}/")));
        }
    }
    v.insert("choices".to_string(), Value::Array(choices));
    StreamEvent::Delta { changed }
}

/// A chunk of one choice carrying held text.
struct HeldChunk {
    /// The chunk the text was held from, without `choices`.
    base: Map<String, Value>,
    choice: Value,
    field: HeldField,
}

enum HeldField {
    Text(&'static str),
    ToolArguments(Value),
}

impl HeldEvent for HeldChunk {
    fn write(self: Box<Self>, text: String, out: &mut Vec<u8>) {
        let HeldChunk { mut base, choice, field } = *self;
        base.remove("usage");
        let delta = match field {
            HeldField::Text(name) => {
                let mut delta = Map::new();
                delta.insert(name.to_string(), Value::String(text));
                Value::Object(delta)
            }
            HeldField::ToolArguments(index) => {
                json!({"tool_calls": [{"index": index, "function": {"arguments": text}}]})
            }
        };
        base.insert("choices".to_string(), json!([{"index": choice, "delta": delta, "finish_reason": null}]));
        out.extend_from_slice(&data_event(&Value::Object(base)));
    }
}

/// OpenAI's `usage` object.
pub(crate) fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// The token counts an answer (or one event of a streamed answer) reports:
/// (input, output), each when present.
pub fn usage_of(v: &Value) -> (Option<u64>, Option<u64>) {
    // Whole answers and the last chunk of a stream (`stream_options.include_usage`).
    let usage = &v["usage"];
    (usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parts_tools_and_tool_results() {
        let body = br#"{
            "model": "gpt-4o", "stream": true, "max_tokens": 64,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "look"},
                                             {"type": "image_url", "image_url": {"url": "data:x"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "result text"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "description": "does f", "parameters": {}}}]
        }"#;
        let req = parse_chat(body).unwrap();
        assert_eq!(req.model, "gpt-4o");
        assert!(req.stream);
        assert_eq!(req.max_tokens, Some(64));
        assert_eq!(req.system, vec!["be brief".to_string()]);
        assert_eq!(req.messages.len(), 3);
        assert_eq!(req.messages[0].parts[1], Part::Attachment { kind: "image_url".into() });
        assert_eq!(
            req.messages[1].parts[0],
            Part::ToolCall { id: "c1".into(), name: "f".into(), arguments: "{\"a\":1}".into() }
        );
        assert_eq!(req.messages[2].parts[0], Part::ToolResult { call_id: "c1".into(), content: "result text".into() });
        assert_eq!(req.tools[0].name, "f");
        assert_eq!(req.text_segments(), vec!["be brief", "look", "{\"a\":1}", "result text", "does f"]);
    }

    #[test]
    fn clear_errors() {
        assert_eq!(parse_chat(b"{\"messages\": []}"), Err(ParseError::Missing("model")));
        assert_eq!(parse_chat(b"{\"model\": \"m\"}"), Err(ParseError::Missing("messages")));
        assert_eq!(parse_chat(b"[1]"), Err(ParseError::NotAnObject));
        assert_eq!(parse_chat(b"{\"model\": \"m\", \"messages\": [\xff]}"), Err(ParseError::InvalidUtf8(28)));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(parse_chat(deep.as_bytes()), Err(ParseError::TooDeep));
        let bad_role = br#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#;
        assert!(parse_chat(bad_role).unwrap_err().to_string().contains("messages[0].role"));
        let bad_content = br#"{"model":"m","messages":[{"role":"user","content":5}]}"#;
        assert!(parse_chat(bad_content).unwrap_err().to_string().contains("messages[0].content"));
    }
}
