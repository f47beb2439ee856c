//! What a generation backend produces, whatever the client's dialect: text
//! and tool-call [`Delta`]s, one [`Finish`] with its reason and [`Usage`],
//! and the [`Meta`] an answer is labelled with.
//!
//! A leaf: the dialects render these (see `render`), the local backends
//! emit them, and none of those modules import each other for it.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
}

impl FinishReason {
    pub(crate) fn openai(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }

    pub(crate) fn anthropic(self) -> &'static str {
        match self {
            FinishReason::Stop => "end_turn",
            FinishReason::Length => "max_tokens",
            FinishReason::ToolCalls => "tool_use",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A piece of generated output.
#[derive(Clone, Debug, PartialEq)]
pub enum Delta {
    Text(String),
    /// A tool call; `arguments` is JSON text. Backends that stream arguments
    /// in fragments send the first fragment with id and name, then further
    /// fragments with the same `index` and empty id/name.
    ToolCall {
        index: usize,
        id: String,
        name: String,
        arguments: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finish {
    pub reason: FinishReason,
    pub usage: Usage,
}

/// Identity of one generated answer.
#[derive(Clone, Debug)]
pub struct Meta {
    pub id: String,
    pub model: String,
    pub created_unix: u64,
}

/// A whole answer, assembled from deltas (non-streaming responses).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assembled {
    pub text: String,
    pub tool_calls: Vec<(String, String, String)>,
}

impl Assembled {
    pub fn push(&mut self, delta: Delta) {
        match delta {
            Delta::Text(t) => self.text.push_str(&t),
            Delta::ToolCall { index, id, name, arguments } => {
                if let Some(call) = self.tool_calls.get_mut(index) {
                    call.2.push_str(&arguments);
                } else {
                    self.tool_calls.push((id, name, arguments));
                }
            }
        }
    }
}
