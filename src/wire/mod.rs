//! Provider wire formats: parse requests into one canonical request, and
//! render sluice's own answers (whole, streamed, errors, model lists) the
//! way the client spoke.
//!
//! One module per client dialect (`openai`, `anthropic`, `responses`,
//! `gemini`), picked by [`Dialect`]'s methods in `dialect`; `shapes` maps
//! paths to request shapes, `document` reads any body's strings, `sse` is
//! the one SSE framer, `providers` the catalog of provider hosts.
//!
//! Only the fields that matter for inspection and routing are lifted into
//! [`CanonicalRequest`]; the original body is kept by the caller and
//! forwarded unchanged, so unknown or future fields survive the trip.

pub mod answer;
pub mod anthropic;
pub mod dialect;
pub mod document;
mod error;
pub mod gemini;
pub mod openai;
pub mod pdf;
pub mod providers;
pub mod responses;
pub mod shapes;
pub mod sse;

pub use error::ParseError;
use http::StatusCode;

/// The client dialect a request arrived in: how its body is read and how
/// sluice answers it (see `dialect` for the methods).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    OpenAiChat,
    AnthropicMessages,
    OpenAiResponses,
    GeminiGenerate,
}

impl Dialect {
    pub const fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAiChat => "openai.chat_completions",
            Dialect::AnthropicMessages => "anthropic.messages",
            Dialect::OpenAiResponses => "openai.responses",
            Dialect::GeminiGenerate => "gemini.generate_content",
        }
    }

    /// The provider a request in this dialect is dispatched to.
    pub fn provider(self) -> &'static str {
        match self {
            Dialect::OpenAiChat | Dialect::OpenAiResponses => "openai",
            Dialect::AnthropicMessages => "anthropic",
            Dialect::GeminiGenerate => "gemini",
        }
    }
}

/// Who is asking; filled in by the identify step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub team: String,
    pub user: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Text(String),
    /// Non-text content (images, documents, audio); only its kind is kept.
    Attachment {
        kind: String,
    },
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    ToolResult {
        call_id: String,
        content: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

/// How the model may use the tools it was given.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ToolChoice {
    #[default]
    Auto,
    None,
    /// Must call some tool (OpenAI `required`, Anthropic `any`).
    Required,
    /// Must call this tool.
    Named(String),
}

/// Sampling settings a client asked for; absent means the backend's default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// One request, whatever format it came in.
#[derive(Clone, Debug, PartialEq)]
pub struct CanonicalRequest {
    pub api: Dialect,
    pub model: String,
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    pub sampling: Sampling,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`: a final usage chunk.
    pub stream_usage: bool,
    pub max_tokens: Option<u64>,
    pub identity: Identity,
}

impl CanonicalRequest {
    /// Every piece of text that reaches the model, in a fixed order; the
    /// inspector reports findings by index into this list.
    pub fn text_segments(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.system.iter().map(String::as_str).collect();
        for m in &self.messages {
            for p in &m.parts {
                match p {
                    Part::Text(t) => out.push(t),
                    Part::ToolCall { arguments, .. } => out.push(arguments),
                    Part::ToolResult { content, .. } => out.push(content),
                    Part::Attachment { .. } => {}
                }
            }
        }
        for t in &self.tools {
            out.push(&t.description);
        }
        out.retain(|s| !s.is_empty());
        out
    }

    /// Messages in the conversation, system prompt excluded.
    pub fn turn_count(&self) -> u32 {
        self.messages.len().min(u32::MAX as usize) as u32
    }

    /// Tool calls the assistant has made so far in the conversation: the
    /// depth of an agent chain.
    pub fn tool_steps(&self) -> u32 {
        let calls = self
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .flat_map(|m| &m.parts)
            .filter(|p| matches!(p, Part::ToolCall { .. }))
            .count();
        calls.min(u32::MAX as usize) as u32
    }

    /// The text of the last user message, which says what is being asked.
    pub fn last_user_text(&self) -> String {
        let Some(m) = self.messages.iter().rev().find(|m| m.role == Role::User) else {
            return String::new();
        };
        let mut text = String::new();
        for p in &m.parts {
            if let Part::Text(t) = p {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(t);
            }
        }
        text
    }

    /// Rough token count (about four bytes per token for English and code)
    /// until a real tokenizer is wired in.
    pub fn estimated_prompt_tokens(segments: &[&str]) -> u64 {
        segments.iter().map(|s| (s.len() as u64).div_ceil(4)).sum()
    }
}

/// One message flattened for backends that take one text per message.
/// Tool results travel as their own messages, in order, before `text`.
#[derive(Debug, PartialEq)]
pub struct Turn<'a> {
    pub role: Role,
    pub text: String,
    /// (id, name, arguments) of each tool call the message makes.
    pub calls: Vec<(&'a str, &'a str, &'a str)>,
    /// (call id, content) of each tool result the message carries.
    pub results: Vec<(&'a str, &'a str)>,
}

impl CanonicalRequest {
    pub fn turns(&self) -> Vec<Turn<'_>> {
        self.messages
            .iter()
            .map(|m| {
                let mut turn = Turn { role: m.role, text: String::new(), calls: Vec::new(), results: Vec::new() };
                for p in &m.parts {
                    match p {
                        Part::Text(t) => turn.text.push_str(t),
                        Part::ToolCall { id, name, arguments } => turn.calls.push((id, name, arguments)),
                        Part::ToolResult { call_id, content } => turn.results.push((call_id, content)),
                        Part::Attachment { .. } => {}
                    }
                }
                turn
            })
            .collect()
    }
}

/// Decode a body into JSON with errors a client can act on; duplicate
/// keys are refused (see [`document::parse_object`]).
pub(crate) fn parse_json(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ParseError> {
    document::parse_object(body)
}

/// What went wrong, in terms every dialect can express.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    PolicyBlock,
    NotFound,
    TooLarge,
    /// The client did not finish sending its request in time.
    RequestTimeout,
    UnsupportedMediaType,
    LocalUnavailable,
    RateLimited,
    /// A team's or user's budget or rate limit (`limits:`) is used up.
    LimitReached,
    /// The limits counter store cannot be reached and sluice fails closed.
    LimitsUnavailable,
    /// The request named a host other than the one the connection is for.
    Misdirected,
    Upstream,
    UpstreamTimeout,
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Authentication => StatusCode::UNAUTHORIZED,
            ErrorKind::PolicyBlock => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::LocalUnavailable | ErrorKind::LimitsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::RateLimited | ErrorKind::LimitReached => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ErrorKind::Upstream => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code, also used as the audit reason prefix.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Authentication => "invalid_api_key",
            ErrorKind::PolicyBlock => "sluice_policy_block",
            ErrorKind::NotFound => "not_found",
            ErrorKind::TooLarge => "request_too_large",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::LocalUnavailable => "local_engine_unavailable",
            ErrorKind::RateLimited => "local_queue_full",
            ErrorKind::LimitReached => "sluice_limit_reached",
            ErrorKind::LimitsUnavailable => "sluice_limits_unavailable",
            ErrorKind::Misdirected => "misdirected_request",
            ErrorKind::Upstream => "upstream_error",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::Internal => "internal_error",
        }
    }
}

/// Shared helpers for walking loosely typed JSON with precise error paths.
pub(crate) mod json {
    use super::ParseError;
    use serde_json::{Map, Value};

    pub fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Result<Option<&'a str>, ParseError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ParseError::invalid(join(path, key), "must be a string")),
        }
    }

    pub fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<bool, ParseError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ParseError::invalid(key, "must be a boolean")),
        }
    }

    pub fn opt_u64(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, ParseError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| ParseError::invalid(key, "must be a non-negative integer")),
        }
    }

    pub fn opt_f64(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, ParseError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| ParseError::invalid(key, "must be a number")),
        }
    }

    /// A string or an array of strings (OpenAI `stop`, Anthropic `stop_sequences`).
    pub fn string_list(obj: &Map<String, Value>, key: &str) -> Result<Vec<String>, ParseError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| ParseError::invalid(key, "must be a string or an array of strings"))
                })
                .collect(),
            Some(_) => Err(ParseError::invalid(key, "must be a string or an array of strings")),
        }
    }

    pub fn model(obj: &Map<String, Value>) -> Result<String, ParseError> {
        match obj.get("model") {
            None | Some(Value::Null) => Err(ParseError::Missing("model")),
            Some(Value::String(s)) if s.trim().is_empty() => Err(ParseError::invalid("model", "must not be empty")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ParseError::invalid("model", "must be a string")),
        }
    }

    pub fn array<'a>(obj: &'a Map<String, Value>, key: &'static str) -> Result<&'a [Value], ParseError> {
        match obj.get(key) {
            None | Some(Value::Null) => Err(ParseError::Missing(key)),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(ParseError::invalid(key, "must be an array")),
        }
    }

    pub fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ParseError> {
        v.as_object().ok_or_else(|| ParseError::invalid(path, "must be an object"))
    }

    /// Tool arguments and results may be strings or structured JSON; either
    /// way the model sees their text, so that is what gets inspected.
    pub fn text_of(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    pub fn join(path: &str, key: &str) -> String {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_and_model_bodies_per_dialect() {
        let body = |d: Dialect| {
            serde_json::from_slice::<serde_json::Value>(&d.error_body(ErrorKind::PolicyBlock, "no")).unwrap()
        };
        assert_eq!(body(Dialect::OpenAiResponses), body(Dialect::OpenAiChat));
        assert_eq!(body(Dialect::OpenAiChat)["error"]["type"], "policy_violation");
        assert_eq!(body(Dialect::AnthropicMessages)["error"]["type"], "permission_error");
        assert_eq!(body(Dialect::GeminiGenerate)["error"]["status"], "PERMISSION_DENIED");
        assert_eq!(body(Dialect::GeminiGenerate)["error"]["code"], 403);
        let models = |d: Dialect| serde_json::from_slice::<serde_json::Value>(&d.models_body(&[("m", "o")])).unwrap();
        assert_eq!(models(Dialect::GeminiGenerate)["models"][0]["name"], "models/m");
        assert_eq!(models(Dialect::OpenAiChat)["data"][0]["owned_by"], "o");
        assert_eq!(models(Dialect::AnthropicMessages)["first_id"], "m");
    }
}
