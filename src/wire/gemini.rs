//! Google Gemini (`POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent`): request parsing, sluice's own answers as a
//! GenerateContentResponse (whole or as `alt=sse` events), errors and model
//! lists, and where the text sits in a streamed answer.
//!
//! Gemini's JSON accepts both the proto's camelCase field names and their
//! snake_case forms (`systemInstruction` / `system_instruction`), and the
//! REST docs use both, so every field is looked up under either name.
//! `cachedContent` names context stored at Google; it is not in the body and
//! cannot be inspected here.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Map, Value};

use super::answer::{Assembled, Delta, Finish, FinishReason, Meta, Usage};
use super::json::{join, object, text_of};
use super::sse::{HeldEvent, StreamEnd, StreamEvent, StreamTexts};
use super::ErrorKind;
use super::{
    parse_json, CanonicalRequest, Dialect, Identity, Message, ParseError, Part, Role, Sampling, Tool, ToolChoice,
};

/// The model and whether the answer streams, from a request path such as
/// `/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse`. Tuned
/// models come back as `tunedModels/NAME`; Vertex AI paths
/// (`/v1/projects/P/locations/L/publishers/google/models/M:...`) work too.
pub fn model_from_path(path: &str) -> Option<(String, bool)> {
    let path = path.split('?').next().unwrap_or(path);
    // Some clients percent-encode the method colon.
    let path = path.replace("%3A", ":").replace("%3a", ":");
    let (resource, method) = path.rsplit_once(':')?;
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return None,
    };
    let segments: Vec<&str> = resource.trim_start_matches('/').split('/').collect();
    let [version, .., collection, model] = segments.as_slice() else {
        return None;
    };
    if !version.starts_with("v1") || model.is_empty() {
        return None;
    }
    match *collection {
        "models" => Some((model.to_string(), stream)),
        "tunedModels" => Some((format!("tunedModels/{model}"), stream)),
        _ => None,
    }
}

/// The model and stream flag of a Gemini path, whatever its spelling.
pub fn model_of_request_path(path: &str) -> Option<(String, bool)> {
    let path = path.split('?').next().unwrap_or(path);
    let decoded = super::document::percent_decode(path);
    let decoded = String::from_utf8_lossy(&decoded);
    let (resource, verb) = decoded.rsplit_once(':')?;
    let verb = match verb.trim_end_matches('/').to_ascii_lowercase().as_str() {
        "generatecontent" => "generateContent",
        "streamgeneratecontent" => "streamGenerateContent",
        _ => return None,
    };
    let resource: Vec<&str> = resource.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    let mut canonical = String::new();
    for (i, s) in resource.iter().enumerate() {
        canonical.push('/');
        // Collection names are case-insensitive here; model ids are not.
        if i + 1 < resource.len() && s.eq_ignore_ascii_case("tunedmodels") {
            canonical.push_str("tunedModels");
        } else if i + 1 < resource.len() && s.eq_ignore_ascii_case("models") {
            canonical.push_str("models");
        } else if i == 0 {
            canonical.push_str(&s.to_ascii_lowercase());
        } else {
            canonical.push_str(s);
        }
    }
    model_from_path(&format!("{canonical}:{verb}"))
}

/// Whether a streaming request asked for server-sent events (`alt=sse`);
/// without it Gemini streams one JSON array (see [`render_stream_array`]).
pub fn is_sse(path_and_query: &str) -> bool {
    path_and_query.split_once('?').is_some_and(|(_, query)| query.split('&').any(|pair| pair == "alt=sse"))
}

pub fn parse_generate(model_from_path: &str, stream: bool, body: &[u8]) -> Result<CanonicalRequest, ParseError> {
    generate_from(model_from_path, stream, parse_json(body)?)
}

/// [`parse_generate`] of a body already read as JSON.
pub fn generate_from(
    model_from_path: &str,
    stream: bool,
    obj: Map<String, Value>,
) -> Result<CanonicalRequest, ParseError> {
    if model_from_path.trim().is_empty() {
        return Err(ParseError::invalid("model", "must not be empty"));
    }
    let (key, contents) = field(&obj, "contents", "contents").ok_or(ParseError::Missing("contents"))?;
    let contents = contents.as_array().ok_or_else(|| ParseError::invalid(key, "must be an array"))?;
    let mut messages = Vec::with_capacity(contents.len());
    for (i, c) in contents.iter().enumerate() {
        let path = format!("{key}[{i}]");
        let c = object(c, &path)?;
        let role = match field(c, "role", "role").map(|(_, v)| v) {
            None => Role::User,
            Some(Value::String(r)) => match r.as_str() {
                "user" | "" => Role::User,
                "model" => Role::Assistant,
                // Older clients put function responses in a `function` turn.
                "function" | "tool" => Role::Tool,
                other => {
                    return Err(ParseError::invalid(
                        join(&path, "role"),
                        format!("must be `user` or `model`, not `{other}`"),
                    ))
                }
            },
            Some(_) => return Err(ParseError::invalid(join(&path, "role"), "must be a string")),
        };
        messages.push(Message { role, parts: parts(c, &path)? });
    }

    let mut system = Vec::new();
    if let Some((key, s)) = field(&obj, "systemInstruction", "system_instruction") {
        for p in parts(object(s, key)?, key)? {
            if let Part::Text(t) = p {
                system.push(t);
            }
        }
    }

    let mut tools = Vec::new();
    if let Some((key, list)) = field(&obj, "tools", "tools") {
        let list = list.as_array().ok_or_else(|| ParseError::invalid(key, "must be an array"))?;
        for (i, t) in list.iter().enumerate() {
            let path = format!("{key}[{i}]");
            let t = object(t, &path)?;
            // Other tool kinds (googleSearch, codeExecution, urlContext, ...)
            // run at Google; there is nothing a local backend could call.
            let Some((dkey, decls)) = field(t, "functionDeclarations", "function_declarations") else {
                continue;
            };
            let dpath = join(&path, dkey);
            let decls = decls.as_array().ok_or_else(|| ParseError::invalid(&dpath, "must be an array"))?;
            for (j, d) in decls.iter().enumerate() {
                let fpath = format!("{dpath}[{j}]");
                let d = object(d, &fpath)?;
                let parameters = field(d, "parameters", "parameters")
                    .or_else(|| field(d, "parametersJsonSchema", "parameters_json_schema"))
                    .map(|(_, v)| v.clone())
                    .unwrap_or(Value::Null);
                tools.push(Tool {
                    name: string(d, "name", "name", &fpath)?.unwrap_or("").to_string(),
                    description: string(d, "description", "description", &fpath)?.unwrap_or("").to_string(),
                    parameters,
                });
            }
        }
    }

    let (temperature, top_p, max_tokens, stop) = match field(&obj, "generationConfig", "generation_config") {
        None => (None, None, None, Vec::new()),
        Some((key, g)) => {
            let g = object(g, key)?;
            (
                number(g, "temperature", "temperature", key)?,
                number(g, "topP", "top_p", key)?,
                count(g, "maxOutputTokens", "max_output_tokens", key)?,
                strings(g, "stopSequences", "stop_sequences", key)?,
            )
        }
    };

    Ok(CanonicalRequest {
        api: Dialect::GeminiGenerate,
        model: model_from_path.to_string(),
        system,
        messages,
        tools,
        tool_choice: tool_choice(&obj)?,
        sampling: Sampling { temperature, top_p, stop },
        stream,
        stream_usage: false,
        max_tokens,
        identity: Identity::default(),
    })
}

/// `toolConfig.functionCallingConfig`: mode AUTO, ANY (optionally limited to
/// `allowedFunctionNames`), NONE or VALIDATED.
fn tool_choice(obj: &Map<String, Value>) -> Result<ToolChoice, ParseError> {
    let Some((key, config)) = field(obj, "toolConfig", "tool_config") else {
        return Ok(ToolChoice::Auto);
    };
    let config = object(config, key)?;
    let Some((fkey, f)) = field(config, "functionCallingConfig", "function_calling_config") else {
        return Ok(ToolChoice::Auto);
    };
    let path = join(key, fkey);
    let f = object(f, &path)?;
    let allowed = strings(f, "allowedFunctionNames", "allowed_function_names", &path)?;
    Ok(match string(f, "mode", "mode", &path)? {
        None | Some("AUTO") | Some("MODE_UNSPECIFIED") | Some("VALIDATED") => ToolChoice::Auto,
        Some("NONE") => ToolChoice::None,
        Some("ANY") => match allowed.as_slice() {
            [only] => ToolChoice::Named(only.clone()),
            _ => ToolChoice::Required,
        },
        Some(other) => {
            return Err(ParseError::invalid(
                join(&path, "mode"),
                format!("must be AUTO, ANY, NONE or VALIDATED, not `{other}`"),
            ))
        }
    })
}

/// The `parts` of a Content object.
fn parts(content: &Map<String, Value>, path: &str) -> Result<Vec<Part>, ParseError> {
    let (key, list) =
        field(content, "parts", "parts").ok_or_else(|| ParseError::invalid(join(path, "parts"), "is required"))?;
    let ppath = join(path, key);
    let list = list.as_array().ok_or_else(|| ParseError::invalid(&ppath, "must be an array"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let path = format!("{ppath}[{i}]");
        if let Some(part) = part(object(p, &path)?, &path)? {
            out.push(part);
        }
    }
    Ok(out)
}

/// One Part: exactly one data field (text, inlineData, functionCall, ...)
/// plus optional metadata (thought, thoughtSignature, videoMetadata).
fn part(p: &Map<String, Value>, path: &str) -> Result<Option<Part>, ParseError> {
    if let Some(t) = string(p, "text", "text", path)? {
        return Ok(Some(Part::Text(t.to_string())));
    }
    for (camel, snake) in [("inlineData", "inline_data"), ("fileData", "file_data")] {
        if let Some((key, blob)) = field(p, camel, snake) {
            let bpath = join(path, key);
            let mime = string(object(blob, &bpath)?, "mimeType", "mime_type", &bpath)?;
            // The MIME type says more than the part name (image vs PDF vs audio).
            let kind = mime.filter(|m| !m.is_empty()).unwrap_or(snake);
            return Ok(Some(Part::Attachment { kind: kind.to_string() }));
        }
    }
    if let Some((key, call)) = field(p, "functionCall", "function_call") {
        let cpath = join(path, key);
        let call = object(call, &cpath)?;
        let name = string(call, "name", "name", &cpath)?.unwrap_or("").to_string();
        // Gemini pairs calls and responses by name; newer versions add an id.
        let id = string(call, "id", "id", &cpath)?.map(String::from).unwrap_or_else(|| name.clone());
        let arguments = field(call, "args", "args").map(|(_, v)| text_of(v)).unwrap_or_else(|| "{}".to_string());
        return Ok(Some(Part::ToolCall { id, name, arguments }));
    }
    if let Some((key, resp)) = field(p, "functionResponse", "function_response") {
        let rpath = join(path, key);
        let resp = object(resp, &rpath)?;
        let name = string(resp, "name", "name", &rpath)?.unwrap_or("");
        let call_id = string(resp, "id", "id", &rpath)?.unwrap_or(name).to_string();
        let content = field(resp, "response", "response").map(|(_, v)| text_of(v)).unwrap_or_default();
        return Ok(Some(Part::ToolResult { call_id, content }));
    }
    // Code the model wrote and what running it printed both go back to the model.
    if let Some((key, code)) = field(p, "executableCode", "executable_code") {
        let cpath = join(path, key);
        return Ok(Some(Part::Text(string(object(code, &cpath)?, "code", "code", &cpath)?.unwrap_or("").to_string())));
    }
    if let Some((key, result)) = field(p, "codeExecutionResult", "code_execution_result") {
        let rpath = join(path, key);
        return Ok(Some(Part::Text(
            string(object(result, &rpath)?, "output", "output", &rpath)?.unwrap_or("").to_string(),
        )));
    }
    const METADATA: [&str; 6] =
        ["thought", "thoughtSignature", "thought_signature", "videoMetadata", "video_metadata", "partMetadata"];
    Ok(p.keys().find(|k| !METADATA.contains(&k.as_str())).map(|k| Part::Attachment { kind: k.clone() }))
}

/// A field under its camelCase or snake_case name, with the name used;
/// null counts as absent.
fn field<'a>(
    obj: &'a Map<String, Value>,
    camel: &'static str,
    snake: &'static str,
) -> Option<(&'static str, &'a Value)> {
    [camel, snake].into_iter().find_map(|k| obj.get(k).filter(|v| !v.is_null()).map(|v| (k, v)))
}

fn string<'a>(
    obj: &'a Map<String, Value>,
    camel: &'static str,
    snake: &'static str,
    path: &str,
) -> Result<Option<&'a str>, ParseError> {
    match field(obj, camel, snake) {
        None => Ok(None),
        Some((_, Value::String(s))) => Ok(Some(s)),
        Some((key, _)) => Err(ParseError::invalid(join(path, key), "must be a string")),
    }
}

fn number(
    obj: &Map<String, Value>,
    camel: &'static str,
    snake: &'static str,
    path: &str,
) -> Result<Option<f64>, ParseError> {
    field(obj, camel, snake)
        .map(|(key, v)| v.as_f64().ok_or_else(|| ParseError::invalid(join(path, key), "must be a number")))
        .transpose()
}

/// A token count; the proto3 JSON mapping also allows integers as strings.
fn count(
    obj: &Map<String, Value>,
    camel: &'static str,
    snake: &'static str,
    path: &str,
) -> Result<Option<u64>, ParseError> {
    field(obj, camel, snake)
        .map(|(key, v)| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| ParseError::invalid(join(path, key), "must be a non-negative integer"))
        })
        .transpose()
}

fn strings(
    obj: &Map<String, Value>,
    camel: &'static str,
    snake: &'static str,
    path: &str,
) -> Result<Vec<String>, ParseError> {
    let Some((key, v)) = field(obj, camel, snake) else {
        return Ok(Vec::new());
    };
    let bad = || ParseError::invalid(join(path, key), "must be an array of strings");
    v.as_array().ok_or_else(bad)?.iter().map(|s| s.as_str().map(String::from).ok_or_else(bad)).collect()
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        // Gemini reports STOP after function calls too.
        FinishReason::Stop | FinishReason::ToolCalls => "STOP",
        FinishReason::Length => "MAX_TOKENS",
    }
}

fn usage_json(u: Usage) -> Value {
    json!({
        "promptTokenCount": u.prompt_tokens,
        "candidatesTokenCount": u.completion_tokens,
        "totalTokenCount": u.prompt_tokens + u.completion_tokens,
    })
}

fn call_part(name: &str, arguments: &str) -> Value {
    // Gemini's args is a JSON object (a proto Struct); anything else cannot be sent.
    let args = match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    };
    json!({"functionCall": {"name": name, "args": args}})
}

/// One GenerateContentResponse with a single candidate.
fn chunk(meta: &Meta, parts: Vec<Value>, finish: Option<Finish>) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    let mut body = json!({"modelVersion": meta.model, "responseId": meta.id});
    if let Some(f) = finish {
        candidate["finishReason"] = Value::from(finish_reason(f.reason));
        body["usageMetadata"] = usage_json(f.usage);
    }
    body["candidates"] = json!([candidate]);
    body
}

fn whole(meta: &Meta, answer: &Assembled, finish: Finish) -> Value {
    let mut parts = Vec::new();
    if !answer.text.is_empty() || answer.tool_calls.is_empty() {
        parts.push(json!({"text": answer.text}));
    }
    parts.extend(answer.tool_calls.iter().map(|(_, name, args)| call_part(name, args)));
    chunk(meta, parts, Some(finish))
}

/// The complete non-streaming GenerateContentResponse.
pub fn render_whole(meta: &Meta, answer: &Assembled, finish: Finish) -> Bytes {
    Bytes::from(whole(meta, answer, finish).to_string())
}

/// `streamGenerateContent` without `alt=sse` answers with a JSON array of
/// responses; a locally generated answer is one element.
pub fn render_stream_array(meta: &Meta, answer: &Assembled, finish: Finish) -> Bytes {
    Bytes::from(json!([whole(meta, answer, finish)]).to_string())
}

/// Turns deltas into `alt=sse` events: each a whole GenerateContentResponse
/// as `data: {json}\r\n\r\n` (Gemini ends events with CRLF pairs). There is
/// no opening event and no `[DONE]`; the last chunk carries finishReason and
/// usageMetadata. Gemini never splits a function call, so calls are held
/// until the end and sent whole.
pub struct GeminiSse {
    meta: Meta,
    calls: Assembled,
}

impl GeminiSse {
    pub fn new(meta: Meta) -> GeminiSse {
        GeminiSse { meta, calls: Assembled::default() }
    }

    /// Gemini streams have no opening event.
    pub fn start(&mut self, _prompt_tokens: u64) -> Bytes {
        Bytes::new()
    }

    pub fn delta(&mut self, delta: &Delta) -> Bytes {
        match delta {
            Delta::Text(t) if t.is_empty() => Bytes::new(),
            Delta::Text(t) => data(&chunk(&self.meta, vec![json!({"text": t})], None)),
            Delta::ToolCall { .. } => {
                self.calls.push(delta.clone());
                Bytes::new()
            }
        }
    }

    /// The last chunk: held function calls (or empty text), finishReason and usage.
    pub fn finish(&mut self, finish: Finish) -> Bytes {
        let mut parts: Vec<Value> = self.calls.tool_calls.iter().map(|(_, name, args)| call_part(name, args)).collect();
        if parts.is_empty() {
            parts.push(json!({"text": ""}));
        }
        data(&chunk(&self.meta, parts, Some(finish)))
    }

    /// An error after the stream has started (headers already sent).
    pub fn error(&mut self, message: &str) -> Bytes {
        data(&error_json(StatusCode::INTERNAL_SERVER_ERROR, message))
    }
}

fn data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\r\n\r\n"))
}

/// google.rpc.Code names for the HTTP statuses sluice answers with.
fn rpc_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 | 415 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500 => "INTERNAL",
        _ if status.is_client_error() => "FAILED_PRECONDITION",
        _ => "UNKNOWN",
    }
}

fn error_json(status: StatusCode, message: &str) -> Value {
    json!({"error": {"code": status.as_u16(), "message": message, "status": rpc_status(status)}})
}

/// An error body in Google's shape: `{"error": {"code", "message", "status"}}`.
pub fn error_body(kind: ErrorKind, message: &str) -> Bytes {
    Bytes::from(error_json(kind.status(), message).to_string())
}

/// `GET /v1beta/models`: (id, owner) pairs as Gemini Model resources.
pub fn models_body(models: &[(&str, &str)]) -> Bytes {
    let models: Vec<Value> = models
        .iter()
        .map(|(id, _)| {
            json!({
                "name": format!("models/{id}"),
                "displayName": id,
                "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
            })
        })
        .collect();
    Bytes::from(json!({"models": models}).to_string())
}

/// Where text sits in a `streamGenerateContent` chunk: the text parts of
/// each candidate's content, one stream per candidate, ending with the
/// candidate's `finishReason`. Function calls arrive whole (their `args`
/// are JSON objects, restored as a whole event). An error ends every stream.
pub fn stream_texts(v: &mut Map<String, Value>, texts: &mut dyn StreamTexts) -> StreamEvent {
    let Some(Value::Array(mut candidates)) = v.remove("candidates") else {
        if v.contains_key("error") {
            texts.end(StreamEnd::All);
        }
        return StreamEvent::Other;
    };
    let text_only = |c: &Value| {
        let parts = c.get("content").and_then(|c| c.get("parts")).and_then(Value::as_array);
        parts.into_iter().flatten().all(|p| {
            p.as_object()
                .is_some_and(|p| p.keys().all(|k| matches!(k.as_str(), "text" | "thought" | "thoughtSignature")))
        })
    };
    if !candidates.iter().all(text_only) {
        // Function calls and other parts may quote placeholders too: the
        // event is restored whole, after any held text.
        texts.end(StreamEnd::All);
        v.insert("candidates".to_string(), Value::Array(candidates));
        return StreamEvent::Other;
    }
    let mut changed = false;
    for (position, candidate) in candidates.iter_mut().enumerate() {
        let Some(candidate) = candidate.as_object_mut() else {
            continue;
        };
        let index = candidate.get("index").cloned().unwrap_or(json!(position));
        let ends = candidate.get("finishReason").is_some_and(|f| !f.is_null());
        let key = format!("g{index}");
        let parts = candidate.get_mut("content").and_then(|c| c.get_mut("parts")).and_then(Value::as_array_mut);
        for part in parts.into_iter().flatten() {
            if let Some(Value::String(text)) = part.get_mut("text") {
                changed |= texts.text(key.clone(), text, false, ends, &|| {
                    Box::new(HeldChunk { base: v.clone(), candidate: index.clone() })
                });
            }
        }
        if ends {
            texts.end(StreamEnd::Key(&key));
        }
    }
    v.insert("candidates".to_string(), Value::Array(candidates));
    StreamEvent::Delta { changed }
}

/// A chunk of one candidate carrying held text.
struct HeldChunk {
    /// The chunk the text was held from, without `candidates`.
    base: Map<String, Value>,
    candidate: Value,
}

impl HeldEvent for HeldChunk {
    fn write(self: Box<Self>, text: String, out: &mut Vec<u8>) {
        let mut base = self.base;
        base.remove("usageMetadata");
        base.insert(
            "candidates".to_string(),
            json!([{"content": {"parts": [{"text": text}], "role": "model"}, "index": self.candidate}]),
        );
        out.extend_from_slice(&data(&Value::Object(base)));
    }
}

/// The token counts an answer (or one event of a streamed answer) reports:
/// (input, output), each when present.
pub fn usage_of(v: &Value) -> (Option<u64>, Option<u64>) {
    // Every chunk may carry `usageMetadata`; the last one has the totals.
    let usage = &v["usageMetadata"];
    (usage["promptTokenCount"].as_u64(), usage["candidatesTokenCount"].as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_of_request_path_in_any_spelling() {
        let of = model_of_request_path;
        assert_eq!(of("/v1beta/models/gemini-pro:generateContent"), Some(("gemini-pro".into(), false)));
        assert_eq!(of("/V1beta//models/gemini-pro:StreamGenerateContent?alt=sse"), Some(("gemini-pro".into(), true)));
        assert_eq!(of("/v1beta/models/gemini-pro%3AgenerateContent"), Some(("gemini-pro".into(), false)));
        assert_eq!(of("/v1beta/models/gemini-pro:countTokens"), None);
    }

    fn meta() -> Meta {
        Meta { id: "r-1".into(), model: "local-model".into(), created_unix: 1 }
    }

    fn events(sse: &[u8]) -> Vec<Value> {
        let sse = std::str::from_utf8(sse).unwrap();
        assert!(sse.ends_with("\r\n\r\n"));
        sse.split("\r\n\r\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn model_and_stream_from_paths() {
        let m = |p: &str| model_from_path(p);
        assert_eq!(m("/v1beta/models/gemini-1.5-flash:generateContent"), Some(("gemini-1.5-flash".into(), false)));
        assert_eq!(m("/v1/models/gemini-2.5-pro:streamGenerateContent"), Some(("gemini-2.5-pro".into(), true)));
        assert_eq!(
            m("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=k"),
            Some(("gemini-2.5-flash".into(), true))
        );
        assert_eq!(m("/v1beta/models/gemini-2.0-flash%3AgenerateContent"), Some(("gemini-2.0-flash".into(), false)));
        assert_eq!(m("/v1beta/tunedModels/my-tune:generateContent"), Some(("tunedModels/my-tune".into(), false)));
        assert_eq!(
            m("/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"),
            Some(("gemini-2.0-flash".into(), false))
        );
        assert_eq!(m("/v1beta/models/gemini-1.5-flash:countTokens"), None);
        assert_eq!(m("/v1beta/models/gemini-1.5-flash"), None);
        assert_eq!(m("/v1beta/models/:generateContent"), None);
        assert_eq!(m("/v1/chat/completions"), None);
        assert!(is_sse("/v1beta/models/g:streamGenerateContent?alt=sse"));
        assert!(is_sse("/v1beta/models/g:streamGenerateContent?key=k&alt=sse"));
        assert!(!is_sse("/v1beta/models/g:streamGenerateContent"));
        assert!(!is_sse("/v1beta/models/g:streamGenerateContent?alt=json"));
    }

    #[test]
    fn parses_multi_turn_with_function_calls_and_system() {
        let body = br#"{
            "systemInstruction": {"parts": [{"text": "You are a weather bot."}]},
            "contents": [
                {"role": "user", "parts": [
                    {"text": "Weather in Boston? Here is a map."},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                    {"fileData": {"mimeType": "application/pdf", "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/x"}}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"location": "Boston"}}, "thoughtSignature": "CiQB"}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temperature": 12}}}]},
                {"role": "model", "parts": [{"text": "It is 12 degrees."}]},
                {"parts": [{"text": "Thanks"}]}
            ],
            "tools": [
                {"functionDeclarations": [{"name": "get_weather", "description": "Current weather",
                    "parameters": {"type": "OBJECT", "properties": {"location": {"type": "STRING"}}}}]},
                {"googleSearch": {}}
            ],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {"temperature": 0.5, "topP": 0.8, "maxOutputTokens": 256, "stopSequences": ["END"]}
        }"#;
        let req = parse_generate("gemini-1.5-flash", true, body).unwrap();
        assert_eq!(req.api, Dialect::GeminiGenerate);
        assert_eq!(req.model, "gemini-1.5-flash");
        assert!(req.stream);
        assert_eq!(req.system, vec!["You are a weather bot.".to_string()]);
        assert_eq!(req.messages.len(), 5);
        assert_eq!(req.messages[0].parts[1], Part::Attachment { kind: "image/png".into() });
        assert_eq!(req.messages[0].parts[2], Part::Attachment { kind: "application/pdf".into() });
        assert_eq!(req.messages[1].role, Role::Assistant);
        assert_eq!(
            req.messages[1].parts,
            vec![Part::ToolCall {
                id: "get_weather".into(),
                name: "get_weather".into(),
                arguments: "{\"location\":\"Boston\"}".into()
            }]
        );
        assert_eq!(
            req.messages[2].parts,
            vec![Part::ToolResult { call_id: "get_weather".into(), content: "{\"temperature\":12}".into() }]
        );
        assert_eq!(req.messages[4].role, Role::User);
        assert_eq!(req.tools.len(), 1);
        assert_eq!(req.tools[0].name, "get_weather");
        assert_eq!(req.tools[0].parameters["properties"]["location"]["type"], "STRING");
        assert_eq!(req.tool_choice, ToolChoice::Named("get_weather".into()));
        assert_eq!(req.max_tokens, Some(256));
        assert_eq!(req.sampling, Sampling { temperature: Some(0.5), top_p: Some(0.8), stop: vec!["END".into()] });
        assert_eq!(
            req.text_segments(),
            vec![
                "You are a weather bot.",
                "Weather in Boston? Here is a map.",
                "{\"location\":\"Boston\"}",
                "{\"temperature\":12}",
                "It is 12 degrees.",
                "Thanks",
                "Current weather",
            ]
        );
    }

    #[test]
    fn accepts_snake_case_and_code_parts() {
        let body = br#"{
            "system_instruction": {"parts": [{"text": "sys"}]},
            "contents": [{"role": "user", "parts": [
                {"text": "run it"},
                {"inline_data": {"mime_type": "audio/wav", "data": "UklG"}},
                {"executable_code": {"language": "PYTHON", "code": "print(secret)"}},
                {"code_execution_result": {"outcome": "OUTCOME_OK", "output": "hunter2"}},
                {"function_response": {"id": "fc-7", "name": "f", "response": {"ok": true}}}]}],
            "tool_config": {"function_calling_config": {"mode": "NONE"}},
            "generation_config": {"max_output_tokens": "64", "top_p": 1}
        }"#;
        let req = parse_generate("gemini-2.0-flash", false, body).unwrap();
        assert_eq!(req.system, vec!["sys".to_string()]);
        assert_eq!(req.messages[0].parts[1], Part::Attachment { kind: "audio/wav".into() });
        assert_eq!(
            req.messages[0].parts[4],
            Part::ToolResult { call_id: "fc-7".into(), content: "{\"ok\":true}".into() }
        );
        assert_eq!(req.tool_choice, ToolChoice::None);
        assert_eq!(req.max_tokens, Some(64));
        assert_eq!(req.sampling.top_p, Some(1.0));
        assert_eq!(req.text_segments(), vec!["sys", "run it", "print(secret)", "hunter2", "{\"ok\":true}"]);
    }

    #[test]
    fn function_calling_modes() {
        let mode = |cfg: &str| {
            let body = format!(
                r#"{{"contents":[{{"parts":[{{"text":"x"}}]}}],"toolConfig":{{"functionCallingConfig":{cfg}}}}}"#
            );
            parse_generate("g", false, body.as_bytes()).map(|r| r.tool_choice)
        };
        assert_eq!(mode(r#"{"mode":"AUTO"}"#), Ok(ToolChoice::Auto));
        assert_eq!(mode(r#"{"mode":"ANY"}"#), Ok(ToolChoice::Required));
        assert_eq!(mode(r#"{"mode":"ANY","allowedFunctionNames":["a","b"]}"#), Ok(ToolChoice::Required));
        assert_eq!(mode(r#"{"mode":"VALIDATED"}"#), Ok(ToolChoice::Auto));
        assert!(mode(r#"{"mode":"SOMETIMES"}"#)
            .unwrap_err()
            .to_string()
            .contains("toolConfig.functionCallingConfig.mode"));
        assert!(mode(r#"{"mode":"ANY","allowedFunctionNames":"a"}"#)
            .unwrap_err()
            .to_string()
            .contains("toolConfig.functionCallingConfig.allowedFunctionNames"));
    }

    #[test]
    fn errors_name_the_field() {
        let err = |b: &[u8]| parse_generate("g", false, b).unwrap_err();
        assert_eq!(err(br#"{}"#), ParseError::Missing("contents"));
        assert_eq!(err(br#"{"contents": null}"#), ParseError::Missing("contents"));
        assert_eq!(err(b"[]"), ParseError::NotAnObject);
        assert!(parse_generate(" ", false, br#"{"contents":[]}"#).unwrap_err().to_string().contains("model"));
        let msg = |b: &[u8]| err(b).to_string();
        assert!(msg(br#"{"contents": {"parts": []}}"#).contains("`contents` must be an array"));
        assert!(msg(br#"{"contents": [{"role": "system", "parts": []}]}"#).contains("contents[0].role"));
        assert!(msg(br#"{"contents": [{"role": "user"}]}"#).contains("contents[0].parts"));
        assert!(msg(br#"{"contents": [{"parts": [{"text": 5}]}]}"#).contains("contents[0].parts[0].text"));
        assert!(msg(br#"{"contents": [{"parts": ["hi"]}]}"#).contains("contents[0].parts[0]"));
        assert!(
            msg(br#"{"contents": [{"parts": [{"functionCall": "f"}]}]}"#).contains("contents[0].parts[0].functionCall")
        );
        assert!(msg(br#"{"contents": [], "systemInstruction": "be nice"}"#).contains("systemInstruction"));
        assert!(msg(br#"{"contents": [], "generationConfig": {"temperature": "hot"}}"#)
            .contains("generationConfig.temperature"));
        assert!(msg(br#"{"contents": [], "generation_config": {"max_output_tokens": -3}}"#)
            .contains("generation_config.max_output_tokens"));
        assert!(msg(br#"{"contents": [], "tools": [{"functionDeclarations": [{"name": 1}]}]}"#)
            .contains("tools[0].functionDeclarations[0].name"));
    }

    #[test]
    fn whole_response_shape() {
        let mut a = Assembled::default();
        a.push(Delta::Text("Calling.".into()));
        a.push(Delta::ToolCall {
            index: 0,
            id: "c1".into(),
            name: "get_weather".into(),
            arguments: "{\"location\":".into(),
        });
        a.push(Delta::ToolCall { index: 0, id: String::new(), name: String::new(), arguments: "\"Paris\"}".into() });
        let finish =
            Finish { reason: FinishReason::ToolCalls, usage: Usage { prompt_tokens: 9, completion_tokens: 4 } };
        let v: Value = serde_json::from_slice(&render_whole(&meta(), &a, finish)).unwrap();
        assert_eq!(
            v,
            json!({
                "candidates": [{
                    "content": {"role": "model", "parts": [
                        {"text": "Calling."},
                        {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}]},
                    "finishReason": "STOP",
                    "index": 0}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13},
                "modelVersion": "local-model",
                "responseId": "r-1",
            })
        );
        let cut = Assembled { text: "partial".into(), tool_calls: Vec::new() };
        let finish = Finish { reason: FinishReason::Length, usage: Usage::default() };
        let arr: Value = serde_json::from_slice(&render_stream_array(&meta(), &cut, finish)).unwrap();
        assert_eq!(arr[0]["candidates"][0]["finishReason"], "MAX_TOKENS");
        assert_eq!(arr[0]["candidates"][0]["content"]["parts"][0]["text"], "partial");
    }

    #[test]
    fn sse_sequence() {
        let mut enc = GeminiSse::new(meta());
        let mut out = enc.start(3).to_vec();
        assert!(out.is_empty());
        out.extend_from_slice(&enc.delta(&Delta::Text("Hel".into())));
        out.extend_from_slice(&enc.delta(&Delta::Text(String::new())));
        out.extend_from_slice(&enc.delta(&Delta::Text("lo".into())));
        out.extend_from_slice(&enc.delta(&Delta::ToolCall {
            index: 0,
            id: "c".into(),
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
            usage: Usage { prompt_tokens: 3, completion_tokens: 2 },
        }));
        let evs = events(&out);
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[0]["candidates"][0]["content"], json!({"role": "model", "parts": [{"text": "Hel"}]}));
        assert_eq!(evs[0]["candidates"][0].get("finishReason"), None);
        assert_eq!(evs[0].get("usageMetadata"), None);
        assert_eq!(evs[0]["responseId"], "r-1");
        assert_eq!(evs[1]["candidates"][0]["content"]["parts"][0]["text"], "lo");
        assert_eq!(
            evs[2]["candidates"][0]["content"]["parts"],
            json!([{"functionCall": {"name": "f", "args": {"a": 1}}}])
        );
        assert_eq!(evs[2]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(evs[2]["usageMetadata"]["totalTokenCount"], 5);
    }

    #[test]
    fn sse_text_only_ends_with_empty_text_and_errors_are_google_shaped() {
        let mut enc = GeminiSse::new(meta());
        let mut out = enc.delta(&Delta::Text("x".into())).to_vec();
        out.extend_from_slice(
            &enc.finish(Finish {
                reason: FinishReason::Length,
                usage: Usage { prompt_tokens: 1, completion_tokens: 1 },
            }),
        );
        let evs = events(&out);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[1]["candidates"][0]["content"]["parts"], json!([{"text": ""}]));
        assert_eq!(evs[1]["candidates"][0]["finishReason"], "MAX_TOKENS");

        let err = events(&enc.error("engine crashed"));
        assert_eq!(err, vec![json!({"error": {"code": 500, "message": "engine crashed", "status": "INTERNAL"}})]);
        let body: Value = serde_json::from_slice(&error_body(ErrorKind::PolicyBlock, "blocked by policy")).unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": 403, "message": "blocked by policy", "status": "PERMISSION_DENIED"}})
        );
        let body: Value = serde_json::from_slice(&error_body(ErrorKind::RateLimited, "busy")).unwrap();
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
        let models: Value = serde_json::from_slice(&models_body(&[("local-model", "sluice")])).unwrap();
        assert_eq!(models["models"][0]["name"], "models/local-model");
    }
}
