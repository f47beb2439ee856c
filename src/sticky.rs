//! Session stickiness: once a conversation was kept local because it was
//! sensitive, its later turns stay local too, even when a later message
//! looks clean on its own.
//!
//! Clients resend the whole conversation every turn, so a conversation is
//! recognised by digests of its message prefixes: turn N+1 starts with the
//! messages of turn N. Only digests are kept (never text), in a bounded
//! map that forgets the oldest conversations first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::wire::{CanonicalRequest, Part, Role};

type Key = [u8; 32];

/// Digests of a request's message prefixes: `prefixes[k]` covers the team,
/// the system prompt and messages `0..=k`.
pub struct Conversation {
    prefixes: Vec<Key>,
}

impl Conversation {
    pub fn of(team: &str, request: &CanonicalRequest) -> Conversation {
        let mut h = Sha256::new();
        h.update((team.len() as u64).to_be_bytes());
        h.update(team.as_bytes());
        for s in &request.system {
            feed(&mut h, b"s", s);
        }
        let mut prefixes = Vec::with_capacity(request.messages.len());
        for m in &request.messages {
            let role: &[u8] = match m.role {
                Role::System => b"S",
                Role::User => b"U",
                Role::Assistant => b"A",
                Role::Tool => b"T",
            };
            for p in &m.parts {
                match p {
                    Part::Text(t) => feed(&mut h, role, t),
                    Part::ToolCall { id, name, arguments } => {
                        feed(&mut h, b"c", id);
                        feed(&mut h, b"n", name);
                        feed(&mut h, b"a", arguments);
                    }
                    Part::ToolResult { call_id, content } => {
                        feed(&mut h, b"r", call_id);
                        feed(&mut h, b"o", content);
                    }
                    Part::Attachment { kind } => feed(&mut h, b"f", kind),
                }
            }
            feed(&mut h, b"|", "");
            prefixes.push(h.clone().finalize().into());
        }
        Conversation { prefixes }
    }
}

fn feed(h: &mut Sha256, tag: &[u8], text: &str) {
    h.update(tag);
    h.update((text.len() as u64).to_be_bytes());
    h.update(text.as_bytes());
}

/// Conversations kept local for sensitive content.
pub struct StickySessions {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl: Duration,
}

struct Inner {
    seen: HashMap<Key, Instant>,
    order: VecDeque<Key>,
}

impl StickySessions {
    pub fn new(capacity: usize, ttl: Duration) -> StickySessions {
        StickySessions {
            inner: Mutex::new(Inner { seen: HashMap::new(), order: VecDeque::new() }),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// No conversation is remembered (so none can be sticky).
    pub fn is_empty(&self) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).seen.is_empty()
    }

    /// Whether an earlier turn of this conversation was marked sensitive:
    /// some strict prefix of its messages (or the whole list, for a retry)
    /// was the full message list of a marked request.
    pub fn is_sticky(&self, conversation: &Conversation) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        conversation.prefixes.iter().any(|k| inner.seen.get(k).is_some_and(|at| now.duration_since(*at) < self.ttl))
    }

    /// Remember this request's full conversation as sensitive.
    pub fn mark(&self, conversation: &Conversation) {
        let Some(last) = conversation.prefixes.last() else { return };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.seen.insert(*last, Instant::now()).is_none() {
            inner.order.push_back(*last);
        }
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.seen.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Dialect, Message};

    fn request(turns: &[(Role, &str)]) -> CanonicalRequest {
        let mut r =
            crate::wire::openai::parse_chat(br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert_eq!(r.api, Dialect::OpenAiChat);
        r.messages =
            turns.iter().map(|(role, t)| Message { role: *role, parts: vec![Part::Text(t.to_string())] }).collect();
        r
    }

    #[test]
    fn later_turns_of_a_marked_conversation_are_sticky() {
        let sessions = StickySessions::new(16, Duration::from_secs(3600));
        let first = request(&[(Role::User, "card 4111 1111 1111 1111, refund it")]);
        assert!(!sessions.is_sticky(&Conversation::of("t", &first)));
        sessions.mark(&Conversation::of("t", &first));
        let second = request(&[
            (Role::User, "card 4111 1111 1111 1111, refund it"),
            (Role::Assistant, "done"),
            (Role::User, "thanks, and now?"),
        ]);
        assert!(sessions.is_sticky(&Conversation::of("t", &second)));
        // The pipeline marks each sticky turn, so the chain holds at turn three.
        sessions.mark(&Conversation::of("t", &second));
        let third = request(&[
            (Role::User, "card 4111 1111 1111 1111, refund it"),
            (Role::Assistant, "done"),
            (Role::User, "thanks, and now?"),
            (Role::Assistant, "nothing else"),
            (Role::User, "write me a poem"),
        ]);
        assert!(sessions.is_sticky(&Conversation::of("t", &third)));
        // Another team, or another conversation, is not.
        assert!(!sessions.is_sticky(&Conversation::of("other", &second)));
        let unrelated = request(&[(Role::User, "hello"), (Role::Assistant, "hi"), (Role::User, "thanks, and now?")]);
        assert!(!sessions.is_sticky(&Conversation::of("t", &unrelated)));
    }

    #[test]
    fn bounded_and_expiring() {
        let sessions = StickySessions::new(2, Duration::from_secs(3600));
        let convs: Vec<_> = (0..3).map(|i| request(&[(Role::User, &format!("m{i}"))])).collect();
        for c in &convs {
            sessions.mark(&Conversation::of("t", c));
        }
        assert!(!sessions.is_sticky(&Conversation::of("t", &convs[0])), "oldest forgotten");
        assert!(sessions.is_sticky(&Conversation::of("t", &convs[2])));
        let expired = StickySessions::new(2, Duration::ZERO);
        expired.mark(&Conversation::of("t", &convs[0]));
        assert!(!expired.is_sticky(&Conversation::of("t", &convs[0])));
    }
}
