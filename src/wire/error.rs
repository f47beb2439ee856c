//! Why a request body could not be read: errors a client can act on, and
//! their client-free form for the audit record.

/// Why a body could not be turned into a canonical request.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("request body is not valid UTF-8 (invalid byte at offset {0})")]
    InvalidUtf8(usize),
    #[error("request body is not valid JSON: {0}")]
    Json(String),
    #[error("request JSON is nested too deeply")]
    TooDeep,
    /// Two members of one object share a key: providers differ on which
    /// one wins, so sluice cannot know what it would forward.
    #[error("request JSON repeats a key within one object (line {line}, column {column}); send each key once")]
    DuplicateKey { line: usize, column: usize },
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("`{field}` {problem}")]
    Invalid { field: String, problem: String },
}

impl ParseError {
    /// What was wrong, for the audit record: field paths and positions, never
    /// the client's values (a role or tool name can carry anything).
    pub fn audit_reason(&self) -> String {
        match self {
            ParseError::Invalid { field, .. } => format!("`{field}` is invalid"),
            ParseError::Json(_) => "request body is not valid JSON".to_string(),
            other => other.to_string(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ParseError::Invalid { field: field.into(), problem: problem.into() }
    }
}
