//! Which request shape a method and path name, and what inspection reads
//! from a body of that shape.
//!
//! Paths are normalised before they are matched (percent-decoding, `//`,
//! `.` and `..` segments, a trailing `/`, ASCII case), so a harmless
//! spelling of a parsed path is parsed. Whatever does not match is still a
//! shape: [`ShapeKind::Unknown`], inspected by scanning every string of its
//! body. Nothing with a body reaches an intercepted host uninspected.

use serde_json::{Map, Value};

use super::document::{self, Inventory};
use super::{CanonicalRequest, Dialect, Identity, Message, ParseError, Part, Role, Sampling, ToolChoice};

/// How well sluice knows a request's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeKind {
    /// A chat API sluice parses fully, answers locally and restores in streams.
    Chat,
    /// A provider endpoint sluice knows (completions, embeddings, token
    /// counting, batches, Bedrock, Cohere): its text is read, but only the
    /// provider can answer it.
    Endpoint,
    /// A path sluice does not know: every string of its body is inspected.
    Unknown,
}

/// One request shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// The audit record's `api`: "openai.chat_completions", "bedrock.converse", ...
    pub name: &'static str,
    /// The API family whose error format and credentials the request uses.
    pub api: Dialect,
    pub kind: ShapeKind,
}

impl Shape {
    pub const fn chat(api: Dialect) -> Shape {
        Shape { name: api_name(api), api, kind: ShapeKind::Chat }
    }

    const fn endpoint(name: &'static str, api: Dialect) -> Shape {
        Shape { name, api, kind: ShapeKind::Endpoint }
    }

    pub fn is_chat(self) -> bool {
        self.kind == ShapeKind::Chat
    }
}

const fn api_name(api: Dialect) -> &'static str {
    match api {
        Dialect::OpenAiChat => "openai.chat_completions",
        Dialect::AnthropicMessages => "anthropic.messages",
        Dialect::OpenAiResponses => "openai.responses",
        Dialect::GeminiGenerate => "gemini.generate_content",
    }
}

/// A request path as sluice matches it: percent-decoded once, without
/// empty, `.` or `..` segments or a trailing `/`, ASCII-lowercased. The
/// query is dropped.
pub fn normalize_path(raw: &str) -> String {
    let path = raw.split('?').next().unwrap_or(raw);
    let decoded = document::percent_decode(path);
    let decoded = String::from_utf8_lossy(&decoded);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out.make_ascii_lowercase();
    out
}

/// The shape of a request with a body, by method and normalised path.
/// Only POST reaches a parser; any other method with a body is inspected
/// as an unknown shape. `fallback` is the API family of the host (for the
/// error format of unknown shapes).
pub fn shape_of(method: &http::Method, path: &str, fallback: Dialect) -> Shape {
    let unknown = Shape { name: "unknown", api: fallback, kind: ShapeKind::Unknown };
    if method != http::Method::POST {
        return unknown;
    }
    let p = path;
    // Gemini: /v1beta/models/{model}:{method}, also tunedModels.
    if let Some((resource, verb)) = p.rsplit_once(':') {
        if resource.contains("/models/") || resource.contains("/tunedmodels/") {
            return match verb {
                "generatecontent" | "streamgeneratecontent" => Shape::chat(Dialect::GeminiGenerate),
                "counttokens" => Shape::endpoint("gemini.count_tokens", Dialect::GeminiGenerate),
                "embedcontent" | "batchembedcontents" => {
                    Shape::endpoint("gemini.embed_content", Dialect::GeminiGenerate)
                }
                "batchgeneratecontent" | "asyncbatchembedcontent" => {
                    Shape::endpoint("gemini.batch", Dialect::GeminiGenerate)
                }
                _ => Shape { name: "unknown", api: Dialect::GeminiGenerate, kind: ShapeKind::Unknown },
            };
        }
    }
    if p.ends_with("/cachedcontents") {
        return Shape::endpoint("gemini.cached_contents", Dialect::GeminiGenerate);
    }
    // Bedrock runtime: /model/{id}/{action}.
    if p.starts_with("/model/") {
        let action = p.rsplit('/').next().unwrap_or("");
        return match action {
            "converse" | "converse-stream" => Shape::endpoint("bedrock.converse", Dialect::AnthropicMessages),
            "invoke" | "invoke-with-response-stream" => Shape::endpoint("bedrock.invoke", Dialect::AnthropicMessages),
            _ => unknown,
        };
    }
    match p {
        "/v1/messages" => return Shape::chat(Dialect::AnthropicMessages),
        "/v1/messages/count_tokens" => return Shape::endpoint("anthropic.count_tokens", Dialect::AnthropicMessages),
        "/v1/messages/batches" => return Shape::endpoint("anthropic.batches", Dialect::AnthropicMessages),
        "/v1/complete" => return Shape::endpoint("anthropic.complete", Dialect::AnthropicMessages),
        "/v1/responses" => return Shape::chat(Dialect::OpenAiResponses),
        "/v1/responses/input_tokens" => {
            return Shape::endpoint("openai.responses_input_tokens", Dialect::OpenAiResponses)
        }
        "/v1/batches" => return Shape::endpoint("openai.batches", Dialect::OpenAiChat),
        "/v1/chat" | "/v2/chat" => return Shape::endpoint("cohere.chat", Dialect::OpenAiChat),
        "/v1/embed" | "/v2/embed" => return Shape::endpoint("cohere.embed", Dialect::OpenAiChat),
        "/v1/generate" => return Shape::endpoint("cohere.generate", Dialect::OpenAiChat),
        "/v1/rerank" | "/v2/rerank" => return Shape::endpoint("cohere.rerank", Dialect::OpenAiChat),
        _ => {}
    }
    if p.ends_with("/anthropic/v1/messages") {
        return Shape::chat(Dialect::AnthropicMessages);
    }
    if p.ends_with("/openai/v1/responses") {
        return Shape::chat(Dialect::OpenAiResponses);
    }
    // OpenAI-compatible providers (Azure, Mistral, Groq, Together, Cohere's
    // compatibility API) all end their chat path the same way.
    if p.ends_with("/chat/completions") {
        return Shape::chat(Dialect::OpenAiChat);
    }
    // Legacy completions, Mistral FIM and agents completions.
    if p.ends_with("/completions") {
        return Shape::endpoint("openai.completions", Dialect::OpenAiChat);
    }
    if p.ends_with("/embeddings") {
        return Shape::endpoint("openai.embeddings", Dialect::OpenAiChat);
    }
    if p.ends_with("/moderations") {
        return Shape::endpoint("openai.moderations", Dialect::OpenAiChat);
    }
    unknown
}

/// What inspection and routing read from one body.
#[derive(Debug)]
pub struct Extracted {
    /// The parsed request (chat shapes), or what routing needs of another
    /// shape (model, stream, the last user text) in the same form.
    pub request: CanonicalRequest,
    /// Every string, key and attachment of the body: what is scanned.
    pub inventory: Inventory,
    /// False for unknown shapes and bodies that are not JSON.
    pub parsed: bool,
}

/// Read a body of `shape`. `path` is the original request path (for
/// Gemini's model name); `content_type` decides whether a body of an
/// unknown shape is JSON or text.
pub fn extract(shape: Shape, path: &str, body: &[u8], content_type: &str) -> Result<Extracted, ParseError> {
    let json = is_json(content_type) || (content_type.is_empty() && looks_like_json(body));
    if shape.kind == ShapeKind::Unknown && !json {
        let inventory = Inventory::of_text(body, content_type);
        let request = summary_request(shape.api, &Map::new(), &inventory);
        return Ok(Extracted { request, inventory, parsed: false });
    }
    let value = document::parse_value(body)?;
    let inventory = Inventory::of(&value);
    let Value::Object(obj) = value else {
        if shape.kind == ShapeKind::Unknown {
            let request = summary_request(shape.api, &Map::new(), &inventory);
            return Ok(Extracted { request, inventory, parsed: false });
        }
        return Err(ParseError::NotAnObject);
    };
    // The parsers take the document already read: one JSON pass per body.
    let request = match shape.kind {
        ShapeKind::Chat => shape.api.parse(obj, path)?,
        _ => summary_request(shape.api, &obj, &inventory),
    };
    Ok(Extracted { request, inventory, parsed: shape.kind != ShapeKind::Unknown })
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

fn looks_like_json(body: &[u8]) -> bool {
    matches!(body.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{' | b'['))
}

/// What routing needs of a shape sluice does not parse as a conversation:
/// the model, the stream flag and the text a user wrote last, found in the
/// fields these APIs use (`prompt`, `input`, `message`, `messages`,
/// `contents`, `texts`, `query`, batch `requests`).
fn summary_request(api: Dialect, obj: &Map<String, Value>, inventory: &Inventory) -> CanonicalRequest {
    let model = ["model", "modelId"].iter().find_map(|k| obj.get(*k).and_then(Value::as_str)).unwrap_or("").to_string();
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut text = user_text(obj);
    if text.is_empty() && obj.is_empty() {
        text = inventory.strings.first().cloned().unwrap_or_default();
    }
    CanonicalRequest {
        api,
        model,
        system: Vec::new(),
        messages: vec![Message { role: Role::User, parts: vec![Part::Text(text)] }],
        tools: Vec::new(),
        tool_choice: ToolChoice::Auto,
        sampling: Sampling::default(),
        stream,
        stream_usage: false,
        max_tokens: None,
        identity: Identity::default(),
    }
}

fn user_text(obj: &Map<String, Value>) -> String {
    for key in ["prompt", "input", "message", "query", "text", "texts", "inputText"] {
        if let Some(v) = obj.get(key) {
            let t = strings_in(v);
            if !t.is_empty() {
                return t;
            }
        }
    }
    for key in ["messages", "contents"] {
        if let Some(Value::Array(items)) = obj.get(key) {
            if let Some(last) = items
                .iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str).is_none_or(|r| r.eq_ignore_ascii_case("user")))
            {
                return strings_in(last.get("content").or_else(|| last.get("parts")).unwrap_or(last));
            }
        }
    }
    if let Some(Value::Object(content)) = obj.get("content") {
        return strings_in(&Value::Object(content.clone()));
    }
    // Batches: the first request's body says what kind of work it is.
    if let Some(Value::Array(requests)) = obj.get("requests") {
        if let Some(Value::Object(first)) = requests.first() {
            let inner = first.get("params").or_else(|| first.get("request")).or_else(|| first.get("body"));
            if let Some(Value::Object(inner)) = inner {
                return user_text(inner);
            }
        }
    }
    String::new()
}

/// The text values under `v`, newline-joined (`text` members of content
/// blocks, or plain strings).
fn strings_in(v: &Value) -> String {
    let mut out = String::new();
    collect_text(v, &mut out);
    out
}

fn collect_text(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(s);
        }
        Value::Array(items) => items.iter().for_each(|i| collect_text(i, out)),
        Value::Object(map) => {
            if let Some(t) = map.get("text") {
                collect_text(t, out);
            } else if let Some(parts) = map.get("parts").or_else(|| map.get("content")) {
                collect_text(parts, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn harmless_spellings_normalise_to_one_path() {
        for raw in [
            "/v1/chat/completions",
            "/v1/chat/completions/",
            "//v1//chat/completions",
            "/v1/./chat/completions",
            "/v1/x/../chat/completions",
            "/v1/chat%2Fcompletions",
            "/V1/Chat/Completions",
            "/v1/chat/%63ompletions?x=1",
        ] {
            assert_eq!(normalize_path(raw), "/v1/chat/completions", "{raw}");
        }
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/../.."), "/");
    }

    #[test]
    fn shapes_by_path() {
        let shape = |p: &str| shape_of(&Method::POST, &normalize_path(p), Dialect::OpenAiChat);
        assert_eq!(shape("/v1/chat/completions/").kind, ShapeKind::Chat);
        assert_eq!(shape("/openai/deployments/d/chat/completions?api-version=1").api, Dialect::OpenAiChat);
        assert_eq!(shape("/V1/Messages").api, Dialect::AnthropicMessages);
        assert_eq!(shape("/v1/messages/count_tokens").name, "anthropic.count_tokens");
        assert_eq!(shape("/v1/messages/batches").name, "anthropic.batches");
        assert_eq!(shape("/v1/completions").name, "openai.completions");
        assert_eq!(shape("/v1/fim/completions").name, "openai.completions");
        assert_eq!(shape("/v1/embeddings").name, "openai.embeddings");
        assert_eq!(shape("/v2/chat").name, "cohere.chat");
        assert_eq!(shape("/model/anthropic.claude-3-haiku/invoke").name, "bedrock.invoke");
        assert_eq!(shape("/model/m/converse-stream").name, "bedrock.converse");
        assert_eq!(shape("/v1beta/models/gemini-pro:streamGenerateContent").api, Dialect::GeminiGenerate);
        assert_eq!(shape("/v1beta/models/gemini-pro:countTokens").name, "gemini.count_tokens");
        assert_eq!(shape("/v1beta/models/e:batchEmbedContents").name, "gemini.embed_content");
        assert_eq!(shape("/v1beta/cachedContents").name, "gemini.cached_contents");
        assert_eq!(shape("/v1/files").kind, ShapeKind::Unknown);
        assert_eq!(shape_of(&Method::PUT, "/v1/chat/completions", Dialect::OpenAiChat).kind, ShapeKind::Unknown);
    }

    #[test]
    fn endpoint_summaries_find_the_user_text() {
        let cases = [
            (r#"{"model":"m","prompt":"legacy prompt"}"#, "legacy prompt"),
            (r#"{"model":"m","input":["a","b"]}"#, "a\nb"),
            (r#"{"messages":[{"role":"user","content":[{"text":"bedrock text"}]}]}"#, "bedrock text"),
            (r#"{"model":"c","message":"cohere v1"}"#, "cohere v1"),
            (
                r#"{"requests":[{"custom_id":"1","params":{"model":"m","messages":[{"role":"user","content":"in batch"}]}}]}"#,
                "in batch",
            ),
            (r#"{"content":{"parts":[{"text":"embed me"}]}}"#, "embed me"),
        ];
        for (body, want) in cases {
            let shape = Shape::endpoint("x", Dialect::OpenAiChat);
            let e = extract(shape, "/", body.as_bytes(), "application/json").unwrap();
            assert_eq!(e.request.last_user_text(), want, "{body}");
            assert!(e.parsed);
        }
        let unknown = Shape { name: "unknown", api: Dialect::OpenAiChat, kind: ShapeKind::Unknown };
        let e = extract(unknown, "/", b"some text", "text/plain").unwrap();
        assert!(!e.parsed);
        assert_eq!(e.inventory.strings, ["some text"]);
        assert!(matches!(
            extract(
                shape_of(&Method::POST, "/v1/embeddings", Dialect::OpenAiChat),
                "/",
                br#"{"input":"a","input":"b"}"#,
                "application/json"
            ),
            Err(ParseError::DuplicateKey { .. })
        ));
    }

    /// A request per dialect with a distinct email address in every field
    /// of the provider's published request schema that carries text: each
    /// must be found by the detectors in what extraction hands them.
    #[test]
    fn every_schema_field_is_inspected_in_every_dialect() {
        let detectors = crate::inspect::Detectors::new();
        let openai_chat = r#"{"model":"gpt-4o","user":"@","metadata":{"k":"@"},"stop":["@"],
            "messages":[{"role":"system","content":"@","name":"@"},{"role":"developer","content":[{"type":"text","text":"@"}]},
              {"role":"user","name":"@","content":[{"type":"text","text":"@"},{"type":"image_url","image_url":{"url":"https://x/@"}}]},
              {"role":"assistant","content":"@","refusal":"@","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"q\":\"@\"}"}}],"audio":{"id":"@"}},
              {"role":"tool","tool_call_id":"c1","content":"@"}],
            "tools":[{"type":"function","function":{"name":"f","description":"@","parameters":{"type":"object","properties":{"q":{"type":"string","description":"@","enum":["@"]}}}}}],
            "functions":[{"name":"g","description":"@"}],
            "response_format":{"type":"json_schema","json_schema":{"name":"n","description":"@","schema":{"properties":{"a":{"description":"@"}}}}},
            "prediction":{"type":"content","content":"@"},
            "web_search_options":{"user_location":{"type":"approximate","approximate":{"city":"@"}}}}"#;
        let anthropic = r#"{"model":"claude","max_tokens":9,"system":[{"type":"text","text":"@"}],"metadata":{"user_id":"@"},"stop_sequences":["@"],
            "messages":[{"role":"user","content":[{"type":"text","text":"@"},
                {"type":"document","source":{"type":"text","media_type":"text/plain","data":"@"},"title":"@","context":"@","citations":{"enabled":true}},
                {"type":"document","source":{"type":"content","content":[{"type":"text","text":"@"}]}},
                {"type":"search_result","source":"@","title":"@","content":[{"type":"text","text":"@"}]}]},
              {"role":"assistant","content":[{"type":"thinking","thinking":"@","signature":"s"},{"type":"tool_use","id":"t","name":"f","input":{"q":"@"}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"@"},
                {"type":"document","source":{"type":"text","media_type":"text/plain","data":"@"}}]}]}],
            "tools":[{"name":"f","description":"@","input_schema":{"type":"object","properties":{"q":{"description":"@"}}}}],
            "mcp_servers":[{"type":"url","url":"https://m/@","name":"m","authorization_token":"@"}]}"#;
        let responses = r#"{"model":"gpt-4o","instructions":"@","metadata":{"k":"@"},"user":"@","prompt_cache_key":"@",
            "input":[{"role":"user","content":[{"type":"input_text","text":"@"},{"type":"input_file","filename":"@","file_data":"data:text/plain;base64,QEA="}]},
              {"type":"function_call","call_id":"c","name":"f","arguments":"{\"q\":\"@\"}"},{"type":"function_call_output","call_id":"c","output":"@"}],
            "tools":[{"type":"function","name":"f","description":"@","parameters":{"properties":{"q":{"description":"@"}}}}],
            "text":{"format":{"type":"json_schema","name":"n","schema":{"properties":{"a":{"description":"@"}}}}},
            "prompt":{"id":"p","variables":{"v":"@"}}}"#;
        let gemini = r#"{"contents":[{"role":"user","parts":[{"text":"@"},{"functionResponse":{"name":"f","response":{"r":"@"}}}]},
              {"role":"model","parts":[{"functionCall":{"name":"f","args":{"q":"@"}}}]}],
            "systemInstruction":{"parts":[{"text":"@"}]},"system_instruction":{"parts":[{"text":"@"}]},
            "tools":[{"functionDeclarations":[{"name":"f","description":"@","parameters":{"properties":{"q":{"description":"@"}}}}]}],
            "generationConfig":{"responseSchema":{"properties":{"a":{"description":"@"}}},"stopSequences":["@"]},"labels":{"l":"@"}}"#;
        let bedrock = r#"{"messages":[{"role":"user","content":[{"text":"@"},{"document":{"format":"txt","name":"@","source":{"bytes":"QEA="}}},
              {"toolResult":{"toolUseId":"t","content":[{"text":"@"},{"json":{"a":"@"}}]}}]}],
            "system":[{"text":"@"}],"toolConfig":{"tools":[{"toolSpec":{"name":"f","description":"@","inputSchema":{"json":{"properties":{"q":{"description":"@"}}}}}}]},
            "additionalModelRequestFields":{"x":"@"},"promptVariables":{"v":{"text":"@"}}}"#;
        let cohere = r#"{"model":"command-r","messages":[{"role":"system","content":"@"},{"role":"user","content":[{"type":"text","text":"@"}]}],
            "documents":[{"id":"d","data":{"text":"@","title":"@"}}],"tools":[{"type":"function","function":{"name":"f","description":"@"}}]}"#;
        let cases = [
            ("openai chat", Shape::chat(Dialect::OpenAiChat), "/v1/chat/completions", openai_chat),
            ("anthropic", Shape::chat(Dialect::AnthropicMessages), "/v1/messages", anthropic),
            ("responses", Shape::chat(Dialect::OpenAiResponses), "/v1/responses", responses),
            ("gemini", Shape::chat(Dialect::GeminiGenerate), "/v1beta/models/g:generateContent", gemini),
            (
                "bedrock converse",
                shape_of(&Method::POST, "/model/m/converse", Dialect::OpenAiChat),
                "/model/m/converse",
                bedrock,
            ),
            ("cohere chat", shape_of(&Method::POST, "/v2/chat", Dialect::OpenAiChat), "/v2/chat", cohere),
        ];
        for (name, shape, path, template) in cases {
            // Each `@` becomes its own address; `QEA=` (base64 of "@@")
            // stands for a text attachment and gets one too.
            let mut body = String::new();
            let mut n = 0;
            let mut want = Vec::new();
            for piece in template.split('@') {
                if n > 0 {
                    let address = format!("field{n}@acme-corp.io");
                    body.push_str(&address);
                    want.push(address);
                }
                body.push_str(piece);
                n += 1;
            }
            let encoded = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
            let attached = format!("attached{n}@acme-corp.io");
            let body = body.replace("QEA=", &encoded(&attached));
            if template.contains("QEA=") {
                want.push(attached);
            }
            let e =
                extract(shape, path, body.as_bytes(), "application/json").unwrap_or_else(|err| panic!("{name}: {err}"));
            assert!(e.parsed, "{name}");
            let segments: Vec<&str> = e.inventory.texts().collect();
            let found: Vec<&str> = detectors
                .scan(None, &segments)
                .iter()
                .filter(|f| f.kind == "email")
                .map(|f| &segments[f.segment][f.span.clone()])
                .collect();
            for w in &want {
                assert!(found.iter().any(|f| f == w), "{name}: {w} not found in {found:?}");
            }
        }
    }
}
