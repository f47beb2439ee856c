//! Answers held until their audit record is durable.
//!
//! With `audit.durability: strict` a client must not hold a complete answer
//! whose record could still be lost. What "complete" means decides what is
//! held back until the record's [`Durable`] ticket resolves:
//!
//! - a whole answer (refusals, model lists, local answers that are not
//!   streamed): its one data frame ([`held_body`]);
//! - a streamed or relayed answer: its last frame, i.e. the end of the
//!   stream for chunked bodies and the last data frame for a body whose
//!   length is known, since the client has the whole answer with it
//!   ([`Holding`], used by the relay and local bodies);
//! - an answer without a body (HEAD, 204, 304, an empty relayed body):
//!   hyper sends those without polling the body, so [`Sluice::deliver`]
//!   drives the body itself before the head goes out.
//!
//! When the ticket fails, the answer is cut (the body ends in an error, so
//! the client sees a broken response, never a complete one) or, where
//! nothing was sent yet, replaced by a 503; either way it is counted in
//! `sluice_audit_withheld_answers_total` and logged.

use super::*;
use request_id::RequestId;

/// What a held frame turns into once its ticket resolves.
type Released = Option<Result<Frame<Bytes>, BoxError>>;

/// A final frame (`None`: the end of the stream) waiting for its record.
pub(super) struct Holding {
    frame: Option<Frame<Bytes>>,
    durable: Durable,
}

impl Holding {
    pub(super) fn new(frame: Option<Frame<Bytes>>, durable: Durable) -> Holding {
        Holding { frame, durable }
    }

    /// Releases `frame` now when there is no ticket to wait for (or it has
    /// resolved already); otherwise keeps it in `slot` until it resolves.
    pub(super) fn hold(
        frame: Option<Frame<Bytes>>,
        durable: Option<Durable>,
        slot: &mut Option<Holding>,
        cx: &mut Context<'_>,
    ) -> Poll<Released> {
        let Some(durable) = durable.filter(|d| !d.is_done()) else {
            return Poll::Ready(frame.map(Ok));
        };
        let mut holding = Holding::new(frame, durable);
        let polled = holding.poll(cx);
        if polled.is_pending() {
            *slot = Some(holding);
        }
        polled
    }

    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Released> {
        match Pin::new(&mut self.durable).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(self.frame.take().map(Ok)),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(withheld(e)))),
        }
    }
}

/// Counts and logs an answer cut because its record is not durable, and
/// gives the error its body ends with.
pub(super) fn withheld(e: AuditError) -> BoxError {
    metrics::counter!(telemetry::AUDIT_WITHHELD).increment(1);
    tracing::error!(error = %e, "audit record not durable; the answer is withheld");
    Box::new(AnswerWithheld)
}

#[derive(Debug, thiserror::Error)]
#[error("the audit record of this answer could not be made durable, so the answer was withheld")]
pub struct AnswerWithheld;

/// A whole answer's body, released once its record is durable.
pub fn held_body(bytes: Bytes, durable: Durable) -> RespBody {
    if durable.is_done() {
        return full(bytes);
    }
    UnsyncBoxBody::new(HeldWhole {
        len: bytes.len() as u64,
        holding: Some(Holding::new(Some(Frame::data(bytes)), durable)),
    })
}

struct HeldWhole {
    len: u64,
    holding: Option<Holding>,
}

impl Body for HeldWhole {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Released> {
        let Some(holding) = self.holding.as_mut() else {
            return Poll::Ready(None);
        };
        let released = std::task::ready!(holding.poll(cx));
        self.holding = None;
        match released {
            // An empty whole answer releases the end of the stream itself.
            Some(Ok(frame)) if frame.data_ref().is_some_and(|d| d.is_empty()) => Poll::Ready(None),
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.holding.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(if self.holding.is_some() { self.len } else { 0 })
    }
}

impl Sluice {
    /// The last step of every answer sluice gives on any listener: an
    /// answer that goes out complete with its head (HEAD, 1xx, 204, 304, or
    /// a body already at its end) is held until its record is durable,
    /// since hyper would never poll a body holding it back; then the
    /// request id goes on.
    pub async fn deliver(
        &self,
        request_id: &RequestId,
        head_only: bool,
        resp: Response<RespBody>,
    ) -> Response<RespBody> {
        let status = resp.status();
        let bodiless = head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || resp.body().is_end_stream()
            || resp.body().size_hint().exact() == Some(0);
        let mut resp = if bodiless && !is_upgrade(&resp) {
            settle(resp).await
        } else if self.audit.durability() == Durability::Strict && resp.body().size_hint().exact().is_some() {
            with_first_frame(resp).await
        } else {
            resp
        };
        request_id.set_on(resp.headers_mut());
        resp
    }
}

/// A body of known length is usually one frame, held for its record: wait
/// for it before the head goes out, so that head and body leave in one
/// write. Otherwise hyper flushes the head alone while the body is held,
/// which under load cost a `writev` per answer.
async fn with_first_frame(resp: Response<RespBody>) -> Response<RespBody> {
    let (parts, mut body) = resp.into_parts();
    let hint = body.size_hint();
    let first = body.frame().await;
    Response::from_parts(parts, UnsyncBoxBody::new(Prefixed { first, hint, rest: body }))
}

/// A body whose first frame was taken already.
struct Prefixed {
    first: Option<Result<Frame<Bytes>, BoxError>>,
    /// The whole body's size, for the head.
    hint: SizeHint,
    rest: RespBody,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Released> {
        match self.first.take() {
            Some(first) => Poll::Ready(Some(first)),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.first.is_some() {
            self.hint
        } else {
            self.rest.size_hint()
        }
    }
}

/// A 101 keeps its (empty) body: hyper hands the connection over with it.
fn is_upgrade(resp: &Response<RespBody>) -> bool {
    resp.status() == StatusCode::SWITCHING_PROTOCOLS
}

/// Drives a body that will not be sent to its end (releasing whatever it
/// holds), and answers with its head and no body; a 503 if it failed.
async fn settle(resp: Response<RespBody>) -> Response<RespBody> {
    let (mut parts, mut body) = resp.into_parts();
    if !parts.headers.contains_key(http::header::CONTENT_LENGTH) {
        // What hyper would have said for the body (a HEAD answer's length).
        if let Some(len) = body.size_hint().exact().filter(|&n| n > 0) {
            parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            // Already counted and logged where the frame was withheld.
            let mut resp = Response::new(full(Bytes::from_static(
                b"sluice could not make the audit record of this request durable, so the answer was withheld\n",
            )));
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return resp;
        }
    }
    Response::from_parts(parts, full(Bytes::new()))
}
