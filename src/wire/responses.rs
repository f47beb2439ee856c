//! OpenAI Responses API (`POST /v1/responses`): request parsing, sluice's
//! own answers as a Response object or as the API's semantic server-sent
//! events, and where the text sits in a streamed answer. Errors and model
//! lists are OpenAI's (`openai.rs`).
//!
//! Requests that continue server-side state (`previous_response_id`,
//! `conversation`, a stored `prompt`, `item_reference` items) parse fine, but
//! the earlier turns live at the provider and are not in the body, so they
//! cannot be inspected here.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::answer::{Assembled, Delta, Finish, FinishReason, Meta, Usage};
use super::json::{join, model, object, opt_bool, opt_f64, opt_str, opt_u64, text_of};
use super::sse::{HeldEvent, StreamEnd, StreamEvent, StreamTexts};
use super::{
    parse_json, CanonicalRequest, Dialect, Identity, Message, ParseError, Part, Role, Sampling, Tool, ToolChoice,
};

/// Fields that make the provider supply earlier context the body lacks.
const SERVER_STATE: [&str; 3] = ["previous_response_id", "conversation", "prompt"];

pub fn parse_responses(body: &[u8]) -> Result<CanonicalRequest, ParseError> {
    responses_from(parse_json(body)?)
}

/// [`parse_responses`] of a body already read as JSON.
pub fn responses_from(obj: Map<String, Value>) -> Result<CanonicalRequest, ParseError> {
    let model = model(&obj)?;
    opt_str(&obj, "previous_response_id", "")?;
    let server_state = SERVER_STATE.iter().any(|k| obj.get(*k).is_some_and(|v| !v.is_null()));

    let mut system = Vec::new();
    if let Some(s) = opt_str(&obj, "instructions", "")? {
        system.push(s.to_string());
    }
    let mut messages = Vec::new();
    match obj.get("input") {
        None | Some(Value::Null) if server_state => {}
        None | Some(Value::Null) => return Err(ParseError::Missing("input")),
        Some(Value::String(s)) => messages.push(Message { role: Role::User, parts: vec![Part::Text(s.clone())] }),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, &format!("input[{i}]"), &mut system, &mut messages)?;
            }
        }
        Some(_) => return Err(ParseError::invalid("input", "must be a string or an array of input items")),
    }

    let mut tools = Vec::new();
    if let Some(list) = obj.get("tools").filter(|v| !v.is_null()) {
        let list = list.as_array().ok_or_else(|| ParseError::invalid("tools", "must be an array"))?;
        for (i, t) in list.iter().enumerate() {
            let path = format!("tools[{i}]");
            let t = object(t, &path)?;
            let parameters = match opt_str(t, "type", &path)? {
                Some("function") => t.get("parameters"),
                // Custom tools take free text; their description still reaches the model.
                Some("custom") => t.get("format"),
                // Hosted tools (web_search, file_search, mcp, ...) run at the
                // provider; there is nothing a local backend could call.
                Some(_) => continue,
                None => return Err(ParseError::invalid(join(&path, "type"), "is required")),
            };
            tools.push(Tool {
                name: opt_str(t, "name", &path)?.unwrap_or("").to_string(),
                description: opt_str(t, "description", &path)?.unwrap_or("").to_string(),
                parameters: parameters.cloned().unwrap_or(Value::Null),
            });
        }
    }

    Ok(CanonicalRequest {
        api: Dialect::OpenAiResponses,
        model,
        system,
        messages,
        tools,
        tool_choice: tool_choice(obj.get("tool_choice"))?,
        sampling: Sampling {
            temperature: opt_f64(&obj, "temperature")?,
            top_p: opt_f64(&obj, "top_p")?,
            stop: Vec::new(),
        },
        stream: opt_bool(&obj, "stream")?,
        stream_usage: false,
        max_tokens: opt_u64(&obj, "max_output_tokens")?,
        identity: Identity::default(),
    })
}

fn tool_choice(v: Option<&Value>) -> Result<ToolChoice, ParseError> {
    Ok(match v {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(ParseError::invalid("tool_choice", format!("has unknown value `{other}`"))),
        },
        Some(Value::Object(o)) => match o.get("type").and_then(Value::as_str) {
            Some("function") | Some("custom") => ToolChoice::Named(
                o.get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ParseError::invalid("tool_choice.name", "is required"))?
                    .to_string(),
            ),
            Some("allowed_tools") => match o.get("mode").and_then(Value::as_str) {
                Some("required") => ToolChoice::Required,
                _ => ToolChoice::Auto,
            },
            // Forcing a hosted tool (web_search_preview, mcp, ...): some tool must run.
            Some(_) => ToolChoice::Required,
            None => return Err(ParseError::invalid("tool_choice.type", "is required")),
        },
        Some(_) => return Err(ParseError::invalid("tool_choice", "must be a string or an object")),
    })
}

/// Add one `input` item. Assistant-side items (text, reasoning, calls) join
/// the assistant message before them, so a turn's text and calls stay one
/// message as in chat completions; each result becomes a tool message.
fn input_item(
    item: &Value,
    path: &str,
    system: &mut Vec<String>,
    messages: &mut Vec<Message>,
) -> Result<(), ParseError> {
    let item = object(item, path)?;
    let kind = opt_str(item, "type", path)?;
    match kind {
        Some("message") => message(item, path, system, messages),
        None if item.contains_key("role") => message(item, path, system, messages),
        None => Err(ParseError::invalid(join(path, "type"), "is required")),
        Some("function_call") => {
            let call = Part::ToolCall {
                id: opt_str(item, "call_id", path)?.unwrap_or("").to_string(),
                name: opt_str(item, "name", path)?.unwrap_or("").to_string(),
                arguments: item.get("arguments").map(text_of).unwrap_or_default(),
            };
            assistant(messages).push(call);
            Ok(())
        }
        Some("function_call_output") => {
            let call_id = opt_str(item, "call_id", path)?.unwrap_or("").to_string();
            messages.push(tool_output(call_id, item.get("output"), &join(path, "output"))?);
            Ok(())
        }
        Some("reasoning") => {
            // Summaries are model text that goes back to the model; encrypted
            // content cannot be read and is left alone.
            if let Some(summary) = item.get("summary").filter(|v| !v.is_null()) {
                let parts = content_parts(summary, &join(path, "summary"))?;
                assistant(messages).extend(parts);
            }
            Ok(())
        }
        // A pointer to an item stored at the provider.
        Some("item_reference") => Ok(()),
        Some(other) => other_item(other, item, path, messages),
    }
}

fn message(
    item: &Map<String, Value>,
    path: &str,
    system: &mut Vec<String>,
    messages: &mut Vec<Message>,
) -> Result<(), ParseError> {
    let role = match opt_str(item, "role", path)? {
        Some("system") | Some("developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some(other) => return Err(ParseError::invalid(join(path, "role"), format!("has unknown value `{other}`"))),
        None => return Err(ParseError::invalid(join(path, "role"), "is required")),
    };
    let cpath = join(path, "content");
    let parts = match item.get("content") {
        None | Some(Value::Null) => return Err(ParseError::invalid(cpath, "is required")),
        Some(Value::String(s)) => vec![Part::Text(s.clone())],
        Some(v @ Value::Array(_)) => content_parts(v, &cpath)?,
        Some(_) => return Err(ParseError::invalid(cpath, "must be a string or an array of content parts")),
    };
    match role {
        Role::System => system.extend(parts.into_iter().filter_map(|p| match p {
            Part::Text(t) => Some(t),
            _ => None,
        })),
        Role::Assistant => assistant(messages).extend(parts),
        _ => messages.push(Message { role, parts }),
    }
    Ok(())
}

/// Built-in tool items (custom, local shell, computer use, MCP, web search,
/// ...). Their shapes vary, so take what reaches the model: call inputs as a
/// tool call, outputs as a tool result, anything else as an opaque attachment.
fn other_item(
    kind: &str,
    item: &Map<String, Value>,
    path: &str,
    messages: &mut Vec<Message>,
) -> Result<(), ParseError> {
    let call_id = opt_str(item, "call_id", path)?.or(opt_str(item, "id", path)?).unwrap_or("").to_string();
    let input = ["arguments", "input", "action"].iter().find_map(|k| item.get(*k).filter(|v| !v.is_null()));
    let output = ["output", "results"].iter().find_map(|k| item.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v)));
    if let Some(input) = input {
        let name = opt_str(item, "name", path)?.unwrap_or(kind).to_string();
        assistant(messages).push(Part::ToolCall { id: call_id.clone(), name, arguments: text_of(input) });
    }
    if let Some((key, output)) = output {
        messages.push(tool_output(call_id, Some(output), &join(path, key))?);
    }
    if input.is_none() && output.is_none() {
        assistant(messages).push(Part::Attachment { kind: kind.to_string() });
    }
    Ok(())
}

/// A tool message from an output that is text, JSON, content parts, or a
/// typed object such as a computer-use screenshot.
fn tool_output(call_id: String, output: Option<&Value>, path: &str) -> Result<Message, ParseError> {
    let mut parts = Vec::new();
    let content = match output {
        Some(v @ Value::Array(_)) => {
            let mut texts = Vec::new();
            for p in content_parts(v, path)? {
                match p {
                    Part::Text(t) => texts.push(t),
                    other => parts.push(other),
                }
            }
            texts.join("\n")
        }
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str).is_some_and(|t| t != "input_text") => {
            let kind = o.get("type").and_then(Value::as_str).unwrap_or_default();
            parts.push(Part::Attachment { kind: kind.to_string() });
            String::new()
        }
        Some(Value::Object(o)) if o.contains_key("text") => o.get("text").map(text_of).unwrap_or_default(),
        Some(v) => text_of(v),
        None => String::new(),
    };
    parts.insert(0, Part::ToolResult { call_id, content });
    Ok(Message { role: Role::Tool, parts })
}

/// The parts of the last message, which becomes (or already is) an assistant one.
fn assistant(messages: &mut Vec<Message>) -> &mut Vec<Part> {
    if messages.last().is_none_or(|m| m.role != Role::Assistant) {
        messages.push(Message { role: Role::Assistant, parts: Vec::new() });
    }
    let last = messages.len() - 1;
    &mut messages[last].parts
}

fn content_parts(v: &Value, path: &str) -> Result<Vec<Part>, ParseError> {
    let items = v.as_array().ok_or_else(|| ParseError::invalid(path, "must be an array of content parts"))?;
    let mut parts = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}[{i}]");
        let item = object(item, &ipath)?;
        match opt_str(item, "type", &ipath)? {
            Some("input_text") | Some("output_text") | Some("summary_text") | Some("reasoning_text") | Some("text") => {
                parts.push(Part::Text(opt_str(item, "text", &ipath)?.unwrap_or("").to_string()))
            }
            Some("refusal") => parts.push(Part::Text(opt_str(item, "refusal", &ipath)?.unwrap_or("").to_string())),
            // input_image, input_file, input_audio, ...: kept as their kind only.
            Some(kind) => parts.push(Part::Attachment { kind: kind.to_string() }),
            None => return Err(ParseError::invalid(join(&ipath, "type"), "is required")),
        }
    }
    Ok(parts)
}

/// The complete non-streaming Response object.
pub fn render_whole(meta: &Meta, answer: &Assembled, finish: Finish) -> Bytes {
    let incomplete = finish.reason == FinishReason::Length;
    let mut output = Vec::new();
    if !answer.text.is_empty() || answer.tool_calls.is_empty() {
        output.push(message_item(&message_id(meta), &answer.text, if incomplete { "incomplete" } else { "completed" }));
    }
    for (i, (call_id, name, args)) in answer.tool_calls.iter().enumerate() {
        output.push(call_item(&call_item_id(meta, i), call_id, name, args, "completed"));
    }
    let status = if incomplete { "incomplete" } else { "completed" };
    Bytes::from(response_object(meta, status, output, Some(finish.usage), None).to_string())
}

fn message_id(meta: &Meta) -> String {
    format!("msg_{}", meta.id)
}

fn call_item_id(meta: &Meta, index: usize) -> String {
    format!("fc_{}_{index}", meta.id)
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": [output_text(text)]})
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": status})
}

/// A Response object with every field clients deserialize; request echoes
/// sluice does not track are null.
fn response_object(meta: &Meta, status: &str, output: Vec<Value>, usage: Option<Usage>, error: Option<Value>) -> Value {
    json!({
        "id": meta.id,
        "object": "response",
        "created_at": meta.created_unix,
        "status": status,
        "error": error,
        "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "instructions": null,
        "max_output_tokens": null,
        "model": meta.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage.map(usage_json),
        "user": null,
        "metadata": {},
    })
}

fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// One output item of a streamed response.
enum Item {
    Message { text: String },
    Call { call_id: String, name: String, arguments: String },
}

/// Turns deltas into the Responses API event sequence: `response.created`,
/// `response.in_progress`, per item `output_item.added` … `output_item.done`,
/// then `response.completed` (or `response.incomplete` when cut off by the
/// token limit). Every event carries its `type` and a `sequence_number`.
pub struct ResponsesSse {
    meta: Meta,
    sequence: u64,
    /// Output items in output order, with whether each is still open.
    items: Vec<(Item, bool)>,
    /// Delta tool-call index → output index.
    calls: Vec<usize>,
}

impl ResponsesSse {
    pub fn new(meta: Meta) -> ResponsesSse {
        ResponsesSse { meta, sequence: 0, items: Vec::new(), calls: Vec::new() }
    }

    /// The events that open a stream.
    pub fn start(&mut self, _prompt_tokens: u64) -> Bytes {
        let mut out = Vec::new();
        let response = response_object(&self.meta, "in_progress", Vec::new(), None, None);
        self.event(&mut out, "response.created", json!({"response": response}));
        self.event(&mut out, "response.in_progress", json!({"response": response}));
        Bytes::from(out)
    }

    pub fn delta(&mut self, delta: &Delta) -> Bytes {
        let mut out = Vec::new();
        match delta {
            Delta::Text(t) => {
                let index = self.open_message(&mut out);
                if let (Item::Message { text }, _) = &mut self.items[index] {
                    text.push_str(t);
                }
                if !t.is_empty() {
                    let id = message_id(&self.meta);
                    self.event(
                        &mut out,
                        "response.output_text.delta",
                        json!({"item_id": id, "output_index": index, "content_index": 0, "delta": t, "logprobs": []}),
                    );
                }
            }
            Delta::ToolCall { index: call, id, name, arguments } => {
                let index = match self.calls.get(*call) {
                    Some(&index) => index,
                    None => self.open_call(&mut out, id, name),
                };
                // Arguments are appended even to a call already closed (text
                // came in between) so the final response carries all of them;
                // deltas go out only while the item is open.
                let open = self.items[index].1;
                if let (Item::Call { arguments: args, .. }, _) = &mut self.items[index] {
                    args.push_str(arguments);
                }
                if open && !arguments.is_empty() {
                    let item_id = call_item_id(&self.meta, index);
                    self.event(
                        &mut out,
                        "response.function_call_arguments.delta",
                        json!({"item_id": item_id, "output_index": index, "delta": arguments}),
                    );
                }
            }
        }
        Bytes::from(out)
    }

    /// The events that close a stream.
    pub fn finish(&mut self, finish: Finish) -> Bytes {
        let mut out = Vec::new();
        if self.items.is_empty() {
            // Clients expect at least one output item.
            self.open_message(&mut out);
        }
        let incomplete = finish.reason == FinishReason::Length;
        self.close_items(&mut out, incomplete);
        let (name, status) =
            if incomplete { ("response.incomplete", "incomplete") } else { ("response.completed", "completed") };
        let response = response_object(&self.meta, status, self.output(incomplete), Some(finish.usage), None);
        self.event(&mut out, name, json!({"response": response}));
        Bytes::from(out)
    }

    /// An error after the stream has started (headers already sent): the
    /// `error` event, then `response.failed` so the stream still ends on a
    /// terminal lifecycle event.
    pub fn error(&mut self, message: &str) -> Bytes {
        let mut out = Vec::new();
        self.event(&mut out, "error", json!({"code": "local_generation_failed", "message": message, "param": null}));
        let error = json!({"code": "server_error", "message": message});
        let response = response_object(&self.meta, "failed", self.output(false), None, Some(error));
        self.event(&mut out, "response.failed", json!({"response": response}));
        Bytes::from(out)
    }

    /// Output index of the open message item, opening one (and closing any
    /// open calls) if needed.
    fn open_message(&mut self, out: &mut Vec<u8>) -> usize {
        if let Some(index) = self.items.iter().position(|(item, open)| *open && matches!(item, Item::Message { .. })) {
            return index;
        }
        self.close_items(out, false);
        let index = self.items.len();
        self.items.push((Item::Message { text: String::new() }, true));
        let id = message_id(&self.meta);
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": index,
                   "item": {"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []}}),
        );
        self.event(
            out,
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": output_text("")}),
        );
        index
    }

    /// Open a function call item. An open message closes first; other open
    /// calls stay open so backends may interleave argument fragments.
    fn open_call(&mut self, out: &mut Vec<u8>, call_id: &str, name: &str) -> usize {
        if let Some(index) = self.items.iter().position(|(item, open)| *open && matches!(item, Item::Message { .. })) {
            self.close_item(out, index, false);
        }
        let index = self.items.len();
        self.items.push((
            Item::Call { call_id: call_id.to_string(), name: name.to_string(), arguments: String::new() },
            true,
        ));
        self.calls.push(index);
        let item = call_item(&call_item_id(&self.meta, index), call_id, name, "", "in_progress");
        self.event(out, "response.output_item.added", json!({"output_index": index, "item": item}));
        index
    }

    fn close_items(&mut self, out: &mut Vec<u8>, incomplete: bool) {
        for index in 0..self.items.len() {
            if self.items[index].1 {
                self.close_item(out, index, incomplete);
            }
        }
    }

    fn close_item(&mut self, out: &mut Vec<u8>, index: usize, incomplete: bool) {
        self.items[index].1 = false;
        let item = self.item_json(index, incomplete);
        match &self.items[index].0 {
            Item::Message { text } => {
                let id = message_id(&self.meta);
                let text = text.clone();
                self.event(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
                );
                self.event(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": output_text(&text)}),
                );
            }
            Item::Call { name, arguments, .. } => {
                let body = json!({"item_id": call_item_id(&self.meta, index), "output_index": index,
                                  "name": name, "arguments": arguments});
                self.event(out, "response.function_call_arguments.done", body);
            }
        }
        self.event(out, "response.output_item.done", json!({"output_index": index, "item": item}));
    }

    fn item_json(&self, index: usize, incomplete: bool) -> Value {
        match &self.items[index].0 {
            Item::Message { text } => {
                message_item(&message_id(&self.meta), text, if incomplete { "incomplete" } else { "completed" })
            }
            Item::Call { call_id, name, arguments } => {
                call_item(&call_item_id(&self.meta, index), call_id, name, arguments, "completed")
            }
        }
    }

    fn output(&self, incomplete: bool) -> Vec<Value> {
        (0..self.items.len()).map(|i| self.item_json(i, incomplete)).collect()
    }

    fn event(&mut self, out: &mut Vec<u8>, name: &str, mut body: Value) {
        body["type"] = Value::from(name);
        body["sequence_number"] = Value::from(self.sequence);
        self.sequence += 1;
        out.extend_from_slice(format!("event: {name}\ndata: {body}\n\n").as_bytes());
    }
}

/// Where text sits in a Responses stream: every `*.delta` event's `delta`,
/// one stream per item, content part and summary part, ending with the
/// matching `*.done`; the response's end or an error ends them all.
/// Function and MCP call arguments are JSON text; all other deltas (output
/// text, refusals, reasoning) are prose.
pub fn stream_texts(v: &mut Map<String, Value>, has_event_line: bool, texts: &mut dyn StreamTexts) -> StreamEvent {
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("").to_string();
    if let Some(base) = kind.strip_suffix(".delta") {
        let Some(Value::String(mut text)) = v.remove("delta") else {
            return StreamEvent::Other;
        };
        let key = stream_key(base, v);
        let changed = texts.text(key, &mut text, base.ends_with("arguments"), false, &|| {
            Box::new(HeldDeltaEvent { event_line: has_event_line, template: v.clone() })
        });
        v.insert("delta".to_string(), Value::String(text));
        return StreamEvent::Delta { changed };
    }
    if let Some(base) = kind.strip_suffix(".done") {
        texts.end(StreamEnd::Key(&stream_key(base, v)));
    } else if matches!(kind.as_str(), "response.completed" | "response.incomplete" | "response.failed" | "error") {
        texts.end(StreamEnd::All);
    }
    StreamEvent::Other
}

/// Streams are told apart by item, content part and summary part; `.delta`
/// and `.done` events of one stream carry the same fields.
fn stream_key(base: &str, v: &Map<String, Value>) -> String {
    let field = |name: &str| v.get(name).map(Value::to_string).unwrap_or_default();
    format!(
        "r/{base}/{}/{}/{}/{}",
        field("item_id"),
        field("output_index"),
        field("content_index"),
        field("summary_index")
    )
}

/// A `*.delta` event carrying held text.
struct HeldDeltaEvent {
    event_line: bool,
    /// The delta event the text was held from, without `delta`.
    template: Map<String, Value>,
}

impl HeldEvent for HeldDeltaEvent {
    fn write(self: Box<Self>, text: String, out: &mut Vec<u8>) {
        let mut template = self.template;
        template.insert("delta".to_string(), Value::String(text));
        if template.contains_key("logprobs") {
            template.insert("logprobs".to_string(), json!([]));
        }
        if self.event_line {
            let kind = template.get("type").and_then(Value::as_str).unwrap_or("");
            out.extend_from_slice(format!("event: {kind}\n").as_bytes());
        }
        out.extend_from_slice(format!("data: {}\n\n", Value::Object(template)).as_bytes());
    }
}

/// The token counts an answer (or one event of a streamed answer) reports:
/// (input, output), each when present.
pub fn usage_of(v: &Value) -> (Option<u64>, Option<u64>) {
    // A Response object, or the `response.completed` event that carries one.
    let response = if v["response"].is_object() { &v["response"] } else { v };
    let usage = &response["usage"];
    (usage["input_tokens"].as_u64(), usage["output_tokens"].as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta { id: "resp_1".into(), model: "local-model".into(), created_unix: 7 }
    }

    fn events(sse: &[u8]) -> Vec<(String, Value)> {
        let sse = std::str::from_utf8(sse).unwrap();
        sse.split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                let name = name.strip_prefix("event: ").unwrap().to_string();
                let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], name.as_str());
                (name, data)
            })
            .collect()
    }

    #[test]
    fn parses_string_input_with_instructions() {
        let body = br#"{"model": "gpt-4.1", "instructions": "Talk like a pirate.",
                        "input": "Are semicolons optional in JavaScript?",
                        "stream": true, "max_output_tokens": 300, "temperature": 0.2, "top_p": 0.9}"#;
        let req = parse_responses(body).unwrap();
        assert_eq!(req.api, Dialect::OpenAiResponses);
        assert_eq!(req.model, "gpt-4.1");
        assert!(req.stream);
        assert_eq!(req.max_tokens, Some(300));
        assert_eq!(req.sampling.temperature, Some(0.2));
        assert_eq!(req.sampling.top_p, Some(0.9));
        assert_eq!(req.system, vec!["Talk like a pirate.".to_string()]);
        assert_eq!(
            req.messages,
            vec![Message {
                role: Role::User,
                parts: vec![Part::Text("Are semicolons optional in JavaScript?".into())]
            }]
        );
        assert_eq!(req.text_segments(), vec!["Talk like a pirate.", "Are semicolons optional in JavaScript?"]);
    }

    #[test]
    fn parses_items_calls_outputs_and_attachments() {
        let body = br#"{
            "model": "gpt-4.1",
            "input": [
                {"role": "developer", "content": "Answer in French."},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "What is in this image and the weather in Paris?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
                    {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,AAAA"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Need weather."}],
                 "encrypted_content": "gAAAA"},
                {"type": "message", "role": "assistant", "id": "msg_0", "status": "completed",
                 "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
                 "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "{\"temp_c\":18}"},
                {"type": "function_call_output", "call_id": "call_2", "output": [
                    {"type": "input_text", "text": "page one"},
                    {"type": "input_image", "image_url": "https://example.com/x.png"}]},
                {"type": "item_reference", "id": "msg_old"}
            ],
            "tools": [
                {"type": "function", "name": "get_weather", "description": "Weather for a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true},
                {"type": "web_search_preview"},
                {"type": "custom", "name": "apply_patch", "description": "Apply a patch"}
            ],
            "tool_choice": {"type": "function", "name": "get_weather"}
        }"#;
        let req = parse_responses(body).unwrap();
        assert_eq!(req.system, vec!["Answer in French.".to_string()]);
        assert_eq!(req.messages.len(), 4);
        assert_eq!(req.messages[0].role, Role::User);
        assert_eq!(req.messages[0].parts[1], Part::Attachment { kind: "input_image".into() });
        assert_eq!(req.messages[0].parts[2], Part::Attachment { kind: "input_file".into() });
        // Reasoning, text and the call form one assistant turn.
        assert_eq!(
            req.messages[1],
            Message {
                role: Role::Assistant,
                parts: vec![
                    Part::Text("Need weather.".into()),
                    Part::Text("Let me check.".into()),
                    Part::ToolCall {
                        id: "call_1".into(),
                        name: "get_weather".into(),
                        arguments: "{\"city\":\"Paris\"}".into()
                    },
                ]
            }
        );
        assert_eq!(
            req.messages[2],
            Message {
                role: Role::Tool,
                parts: vec![Part::ToolResult { call_id: "call_1".into(), content: "{\"temp_c\":18}".into() }]
            }
        );
        assert_eq!(
            req.messages[3].parts,
            vec![
                Part::ToolResult { call_id: "call_2".into(), content: "page one".into() },
                Part::Attachment { kind: "input_image".into() },
            ]
        );
        assert_eq!(req.tools.len(), 2);
        assert_eq!(req.tools[0].name, "get_weather");
        assert_eq!(req.tools[0].parameters["properties"]["city"]["type"], "string");
        assert_eq!(req.tools[1].name, "apply_patch");
        assert_eq!(req.tool_choice, ToolChoice::Named("get_weather".into()));
        assert_eq!(
            req.text_segments(),
            vec![
                "Answer in French.",
                "What is in this image and the weather in Paris?",
                "Need weather.",
                "Let me check.",
                "{\"city\":\"Paris\"}",
                "{\"temp_c\":18}",
                "page one",
                "Weather for a city",
                "Apply a patch",
            ]
        );
    }

    #[test]
    fn built_in_tool_items_are_inspected() {
        let body = br#"{"model": "codex-mini", "input": [
            {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done!"},
            {"type": "local_shell_call", "call_id": "c2", "action": {"type": "exec", "command": ["cat", ".env"]}},
            {"type": "local_shell_call_output", "id": "c2", "output": "AWS_SECRET=abc"},
            {"type": "computer_call_output", "call_id": "c3",
             "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,AAAA"}},
            {"type": "image_generation_call", "id": "ig_1", "result": "iVBOR"}
        ]}"#;
        let req = parse_responses(body).unwrap();
        let segments = req.text_segments();
        assert_eq!(segments.len(), 4);
        assert_eq!([segments[0], segments[1], segments[3]], ["*** Begin Patch", "Done!", "AWS_SECRET=abc"]);
        let Part::ToolCall { id, name, arguments } = &req.messages[2].parts[0] else { panic!("not a call") };
        assert_eq!((id.as_str(), name.as_str()), ("c2", "local_shell_call"));
        assert_eq!(segments[2], arguments);
        // Key order depends on serde_json features, so compare as JSON.
        let action: Value = serde_json::from_str(arguments).unwrap();
        assert_eq!(action, json!({"type": "exec", "command": ["cat", ".env"]}));
        assert_eq!(req.messages[4].parts[1], Part::Attachment { kind: "computer_screenshot".into() });
        assert_eq!(req.messages[5].parts, vec![Part::Attachment { kind: "image_generation_call".into() }]);
    }

    #[test]
    fn server_state_needs_no_input() {
        let body = br#"{"model": "gpt-4.1", "previous_response_id": "resp_abc"}"#;
        let req = parse_responses(body).unwrap();
        assert!(req.messages.is_empty());
        let body = br#"{"model": "gpt-4.1", "previous_response_id": "resp_abc", "input": "and then?"}"#;
        assert_eq!(parse_responses(body).unwrap().text_segments(), vec!["and then?"]);
    }

    #[test]
    fn tool_choice_forms() {
        let choice = |c: &str| parse_responses(format!(r#"{{"model":"m","input":"x","tool_choice":{c}}}"#).as_bytes());
        assert_eq!(choice("\"auto\"").unwrap().tool_choice, ToolChoice::Auto);
        assert_eq!(choice("\"none\"").unwrap().tool_choice, ToolChoice::None);
        assert_eq!(choice("\"required\"").unwrap().tool_choice, ToolChoice::Required);
        assert_eq!(choice(r#"{"type":"web_search_preview"}"#).unwrap().tool_choice, ToolChoice::Required);
        assert_eq!(
            choice(r#"{"type":"allowed_tools","mode":"auto","tools":[]}"#).unwrap().tool_choice,
            ToolChoice::Auto
        );
        assert!(choice("\"always\"").unwrap_err().to_string().contains("tool_choice"));
        assert!(choice(r#"{"type":"function"}"#).unwrap_err().to_string().contains("tool_choice.name"));
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(parse_responses(br#"{"input": "x"}"#), Err(ParseError::Missing("model")));
        assert_eq!(parse_responses(br#"{"model": "m"}"#), Err(ParseError::Missing("input")));
        assert_eq!(parse_responses(b"[]"), Err(ParseError::NotAnObject));
        let err = |b: &[u8]| parse_responses(b).unwrap_err().to_string();
        assert!(err(br#"{"model":"m","input":5}"#).contains("`input`"));
        assert!(err(br#"{"model":"m","input":[{"content":"x"}]}"#).contains("input[0].type"));
        assert!(err(br#"{"model":"m","input":[{"role":"wizard","content":"x"}]}"#).contains("input[0].role"));
        assert!(err(br#"{"model":"m","input":[{"role":"user","content":7}]}"#).contains("input[0].content"));
        assert!(err(br#"{"model":"m","input":[{"role":"user","content":[{"text":"x"}]}]}"#)
            .contains("input[0].content[0].type"));
        assert!(err(br#"{"model":"m","input":[{"type":"function_call","name":5}]}"#).contains("input[0].name"));
        assert!(err(br#"{"model":"m","input":"x","instructions":["a"]}"#).contains("instructions"));
        assert!(err(br#"{"model":"m","input":"x","max_output_tokens":-1}"#).contains("max_output_tokens"));
        assert!(err(br#"{"model":"m","input":"x","tools":[{"name":"f"}]}"#).contains("tools[0].type"));
        assert!(err(br#"{"model":"m","previous_response_id":3}"#).contains("previous_response_id"));
    }

    #[test]
    fn whole_response_object() {
        let mut a = Assembled::default();
        a.push(Delta::Text("Checking.".into()));
        a.push(Delta::ToolCall { index: 0, id: "call_9".into(), name: "lookup".into(), arguments: "{\"q\":".into() });
        a.push(Delta::ToolCall { index: 0, id: String::new(), name: String::new(), arguments: "1}".into() });
        let finish =
            Finish { reason: FinishReason::ToolCalls, usage: Usage { prompt_tokens: 12, completion_tokens: 5 } };
        let v: Value = serde_json::from_slice(&render_whole(&meta(), &a, finish)).unwrap();
        assert_eq!(v["id"], "resp_1");
        assert_eq!(v["object"], "response");
        assert_eq!(v["created_at"], 7);
        assert_eq!(v["status"], "completed");
        assert_eq!(v["incomplete_details"], Value::Null);
        assert_eq!(v["model"], "local-model");
        assert_eq!(
            v["output"][0],
            json!({"type": "message", "id": "msg_resp_1", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}]})
        );
        assert_eq!(
            v["output"][1],
            json!({"type": "function_call", "id": "fc_resp_1_0", "call_id": "call_9", "name": "lookup",
                   "arguments": "{\"q\":1}", "status": "completed"})
        );
        assert_eq!(v["usage"]["input_tokens"], 12);
        assert_eq!(v["usage"]["output_tokens"], 5);
        assert_eq!(v["usage"]["total_tokens"], 17);

        let text = Assembled { text: "cut".into(), tool_calls: Vec::new() };
        let finish = Finish { reason: FinishReason::Length, usage: Usage::default() };
        let v: Value = serde_json::from_slice(&render_whole(&meta(), &text, finish)).unwrap();
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(v["output"][0]["status"], "incomplete");
        assert_eq!(v["output"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn stream_event_sequence_text_then_call() {
        let mut enc = ResponsesSse::new(meta());
        let mut out = enc.start(4).to_vec();
        out.extend_from_slice(&enc.delta(&Delta::Text("Hel".into())));
        out.extend_from_slice(&enc.delta(&Delta::Text("lo".into())));
        out.extend_from_slice(&enc.delta(&Delta::ToolCall {
            index: 0,
            id: "call_1".into(),
            name: "f".into(),
            arguments: "{\"a\":".into(),
        }));
        out.extend_from_slice(&enc.delta(&Delta::ToolCall {
            index: 0,
            id: String::new(),
            name: String::new(),
            arguments: "1}".into(),
        }));
        out.extend_from_slice(&enc.finish(Finish {
            reason: FinishReason::ToolCalls,
            usage: Usage { prompt_tokens: 4, completion_tokens: 3 },
        }));
        let evs = events(&out);
        let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (_, data)) in evs.iter().enumerate() {
            assert_eq!(data["sequence_number"], i as u64);
        }
        assert_eq!(evs[0].1["response"]["status"], "in_progress");
        assert_eq!(evs[0].1["response"]["output"], json!([]));
        assert_eq!(evs[4].1["delta"], "Hel");
        assert_eq!(evs[4].1["item_id"], "msg_resp_1");
        assert_eq!(evs[6].1["text"], "Hello");
        assert_eq!(evs[7].1["part"]["text"], "Hello");
        assert_eq!(evs[8].1["item"]["content"][0]["text"], "Hello");
        assert_eq!(evs[9].1["output_index"], 1);
        assert_eq!(evs[9].1["item"]["type"], "function_call");
        assert_eq!(evs[9].1["item"]["call_id"], "call_1");
        assert_eq!(evs[9].1["item"]["status"], "in_progress");
        assert_eq!(evs[11].1["delta"], "1}");
        assert_eq!(evs[12].1["arguments"], "{\"a\":1}");
        assert_eq!(evs[13].1["item"]["arguments"], "{\"a\":1}");
        let done = &evs[14].1["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(done["usage"]["total_tokens"], 7);
    }

    #[test]
    fn stream_interleaved_calls_stay_open_until_text() {
        let call = |index: usize, id: &str, args: &str| Delta::ToolCall {
            index,
            id: id.into(),
            name: if id.is_empty() { String::new() } else { format!("f{index}") },
            arguments: args.into(),
        };
        let mut enc = ResponsesSse::new(meta());
        let mut out = enc.start(2).to_vec();
        out.extend_from_slice(&enc.delta(&call(0, "c0", "{\"x\":")));
        out.extend_from_slice(&enc.delta(&call(1, "c1", "{}")));
        out.extend_from_slice(&enc.delta(&call(0, "", "2}")));
        out.extend_from_slice(&enc.delta(&Delta::Text("done".into())));
        out.extend_from_slice(&enc.finish(Finish { reason: FinishReason::Stop, usage: Usage::default() }));
        let evs = events(&out);
        let summary: Vec<(&str, Value)> =
            evs[2..].iter().map(|(n, d)| (n.as_str(), d["output_index"].clone())).collect();
        assert_eq!(
            summary,
            [
                ("response.output_item.added", json!(0)),
                ("response.function_call_arguments.delta", json!(0)),
                ("response.output_item.added", json!(1)),
                ("response.function_call_arguments.delta", json!(1)),
                ("response.function_call_arguments.delta", json!(0)),
                ("response.function_call_arguments.done", json!(0)),
                ("response.output_item.done", json!(0)),
                ("response.function_call_arguments.done", json!(1)),
                ("response.output_item.done", json!(1)),
                ("response.output_item.added", json!(2)),
                ("response.content_part.added", json!(2)),
                ("response.output_text.delta", json!(2)),
                ("response.output_text.done", json!(2)),
                ("response.content_part.done", json!(2)),
                ("response.output_item.done", json!(2)),
                ("response.completed", Value::Null),
            ]
        );
        assert_eq!(evs[7].1["arguments"], "{\"x\":2}");
        assert_eq!(evs[7].1["name"], "f0");
        let output = &evs.last().unwrap().1["response"]["output"];
        assert_eq!(output[0]["call_id"], "c0");
        assert_eq!(output[1]["arguments"], "{}");
        assert_eq!(output[2]["content"][0]["text"], "done");
    }

    #[test]
    fn stream_cut_off_ends_incomplete_and_empty_stream_has_a_message() {
        let mut enc = ResponsesSse::new(meta());
        let mut out = enc.start(1).to_vec();
        out.extend_from_slice(
            &enc.finish(Finish {
                reason: FinishReason::Length,
                usage: Usage { prompt_tokens: 1, completion_tokens: 0 },
            }),
        );
        let evs = events(&out);
        let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.incomplete",
            ]
        );
        assert_eq!(evs[6].1["item"]["status"], "incomplete");
        assert_eq!(evs[7].1["response"]["incomplete_details"]["reason"], "max_output_tokens");
    }

    #[test]
    fn stream_error_ends_with_failed() {
        let mut enc = ResponsesSse::new(meta());
        let mut out = enc.start(1).to_vec();
        out.extend_from_slice(&enc.delta(&Delta::Text("par".into())));
        out.extend_from_slice(&enc.error("engine crashed"));
        let evs = events(&out);
        let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "error",
                "response.failed",
            ]
        );
        assert_eq!(evs[5].1["message"], "engine crashed");
        assert_eq!(evs[6].1["response"]["status"], "failed");
        assert_eq!(evs[6].1["response"]["error"]["message"], "engine crashed");
        assert_eq!(evs[6].1["sequence_number"], 6);
    }
}
