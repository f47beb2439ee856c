//! Refusals: every way a request can be turned away is a [`Refusal`], made
//! where the problem is found and carried out with `?`; [`Sluice::refuse`]
//! renders it once, in the client's own wire format, and records it.

use super::*;

/// Why a request is turned away: what the client is told, and what the
/// audit record says when the message quotes the client's own text.
#[derive(Debug)]
pub(super) struct Refusal {
    pub kind: ErrorKind,
    pub message: String,
    /// The record's version of `message`, when `message` quotes a path, a
    /// header or a field value the client sent (which can carry anything).
    pub reason: Option<String>,
    /// Seconds for `retry-after` (a limit's window resetting).
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub(super) fn new(kind: ErrorKind, message: impl Into<String>) -> Refusal {
        Refusal { kind, message: message.into(), reason: None, retry_after: None }
    }

    pub(super) fn quoting(kind: ErrorKind, message: impl Into<String>, reason: impl Into<String>) -> Refusal {
        Refusal { kind, message: message.into(), reason: Some(reason.into()), retry_after: None }
    }
}

impl From<wire::ParseError> for Refusal {
    fn from(e: wire::ParseError) -> Refusal {
        Refusal::quoting(ErrorKind::InvalidRequest, e.to_string(), e.audit_reason())
    }
}

impl From<LocalError> for Refusal {
    fn from(e: LocalError) -> Refusal {
        Refusal::new(ErrorKind::LocalUnavailable, format!("Local generation could not start: {e}"))
    }
}

impl From<crate::blocking::PoolError> for Refusal {
    fn from(e: crate::blocking::PoolError) -> Refusal {
        Refusal::new(ErrorKind::Internal, format!("inspection did not complete ({e}); nothing was forwarded"))
    }
}

impl Sluice {
    /// Answer with an error in the client's wire format, and record it.
    pub(super) fn refuse(&self, trail: Trail, refusal: Refusal) -> Response<RespBody> {
        self.refuse_as(trail, refusal, true)
    }

    /// [`Self::refuse`] without holding the answer for its record: for the
    /// refusal that says the audit log cannot be written, whose record can
    /// never become durable. The client learns why instead of getting a cut
    /// answer; nothing was forwarded.
    pub(super) fn refuse_now(&self, trail: Trail, refusal: Refusal) -> Response<RespBody> {
        self.refuse_as(trail, refusal, false)
    }

    fn refuse_as(&self, mut trail: Trail, refusal: Refusal, hold: bool) -> Response<RespBody> {
        let Refusal { kind, message, reason, retry_after } = refusal;
        let recorded = reason.as_deref().unwrap_or(&message);
        if trail.record.decision.is_empty() {
            trail.record.decision = "error".into();
        }
        // The reason names what went wrong, never the prompt. A policy's own
        // reason is kept and the outcome appended to it.
        trail.record.reason = if trail.record.reason.is_empty() {
            format!("{}: {}", kind.code(), recorded)
        } else if kind == ErrorKind::PolicyBlock {
            format!("{}; {}", trail.record.reason, kind.code())
        } else {
            format!("{}; {}: {}", trail.record.reason, kind.code(), recorded)
        };
        let rule = trail.record.rule.clone();
        let body = trail.dialect.error_body(kind, &message);
        let mut resp = if hold {
            self.answer(trail, kind.status(), body)
        } else {
            let status = kind.status();
            trail.record.status = status.as_u16();
            drop(self.record(trail, None));
            json_answer(status, full(body))
        };
        if let Some(seconds) = retry_after {
            resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if !rule.is_empty() {
            let route = if matches!(kind, ErrorKind::PolicyBlock | ErrorKind::LimitReached) {
                "block"
            } else if kind == ErrorKind::LocalUnavailable {
                "local"
            } else {
                "error"
            };
            set_route_headers(resp.headers_mut(), route, &rule);
        }
        resp
    }
}
