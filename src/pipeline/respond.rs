//! Answers: the local model's generation and the provider's relayed body,
//! streamed frame by frame in the client's format, with redacted values
//! restored; the record is written when the body ends or is dropped, and
//! the last frame is held until the record is durable (see `held`).

use super::*;
use crate::wire::answer::Finish;
use crate::wire::sse::{parse_event, EventSplitter};

impl Sluice {
    /// Where a `local` decision is served: the local tier, or (only for
    /// prompts without findings, and only if the policy allows) the cloud
    /// when the local model is full or the prompt too long for it.
    pub(super) async fn local_route(
        &self,
        request: &wire::CanonicalRequest,
        options: LocalOptions,
        sensitive: bool,
        prompt_tokens: u64,
        rule: &str,
    ) -> Result<Route, Refusal> {
        // Never falls back to the cloud because the engine is down: the
        // policy said this prompt stays here.
        if let Err(e) = self.local.backend() {
            let message = format!(
                "Policy rule `{rule}` keeps this request on the local model, which is unavailable ({e}); \
                 the request was not sent to any cloud provider"
            );
            return Err(Refusal::new(ErrorKind::LocalUnavailable, message));
        }
        if let Some(context) = self.local.prompt_limit().filter(|&c| prompt_tokens >= c) {
            let message = format!(
                "The prompt has {prompt_tokens} tokens; the local model {} takes at most {context}",
                self.local.model_name()
            );
            return match options.too_long {
                TooLong::Cloud if !sensitive => Ok(Route::Cloud),
                TooLong::Cloud => Err(Refusal::new(
                    ErrorKind::TooLarge,
                    format!("{message}, and the prompt has sensitive findings, so it cannot go to the cloud"),
                )),
                TooLong::Block => Err(Refusal::new(
                    ErrorKind::PolicyBlock,
                    format!("{message}; policy blocks prompts that are too long"),
                )),
                TooLong::Reject => Err(Refusal::new(ErrorKind::TooLarge, message)),
            };
        }
        let wait = match options.overflow {
            Overflow::Wait => Some(Duration::from_millis(options.overflow_wait_ms)),
            Overflow::Reject | Overflow::Cloud => None,
        };
        let admitted = match self.local.admit(wait).await {
            Ok(admitted) => admitted,
            Err(_) if options.overflow == Overflow::Cloud && !sensitive => return Ok(Route::Cloud),
            Err(why) => {
                let message = match why {
                    Overflowed::TimedOut => format!(
                        "The local model is busy and no place freed up within {} ms; try again later",
                        options.overflow_wait_ms
                    ),
                    Overflowed::Full => "The local model's queue is full; try again later".to_string(),
                };
                return Err(Refusal::new(ErrorKind::RateLimited, message));
            }
        };
        match self.local.generate(request, admitted, prompt_tokens).await {
            Ok(generation) => Ok(Route::Local(generation)),
            Err(e) => Err(e.into()),
        }
    }

    /// Answer from the local tier in the client's format, streamed or whole.
    pub(super) async fn respond_local(
        self: &Arc<Self>,
        mut trail: Trail,
        request: &wire::CanonicalRequest,
        mut generation: Generation,
        json_array: bool,
        rule: &str,
    ) -> Response<RespBody> {
        trail.record.provider = "local".into();
        trail.record.model_used = self.local.model_name().to_string();
        let meta = Meta {
            id: format!("sluice-{}", self.next_id.fetch_add(1, Ordering::Relaxed)),
            model: self.local.model_name().to_string(),
            created_unix: trail.record.time_unix_ms / 1000,
        };
        let generation_started = Instant::now();
        if request.stream && !json_array {
            trail.record.status = 200;
            let mut encoder = trail.dialect.encoder(meta, request.stream_usage);
            let opening = encoder.start(generation.prompt_tokens);
            let body = LocalBody {
                generation,
                encoder,
                pending: Some(opening),
                held: None,
                done: false,
                stats: GenStats::new(generation_started),
                completion: Some(Completion { sluice: self.clone(), trail, upstream_started: generation_started }),
            };
            let mut resp = Response::new(UnsyncBoxBody::new(body));
            let headers = resp.headers_mut();
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            set_route_headers(headers, "local", rule);
            return resp;
        }
        let mut answer = Assembled::default();
        let mut stats = GenStats::new(generation_started);
        let finish = loop {
            match generation.events.recv().await {
                Some(Ok(GenEvent::Delta(delta))) => {
                    stats.token();
                    answer.push(delta);
                }
                Some(Ok(GenEvent::Finish(finish))) => break finish,
                Some(Err(e)) => {
                    trail.record.latency_us.upstream = micros(generation_started.elapsed());
                    return self.refuse(trail, Refusal::new(ErrorKind::LocalUnavailable, e.to_string()));
                }
                None => {
                    trail.record.latency_us.upstream = micros(generation_started.elapsed());
                    return self.refuse(
                        trail,
                        Refusal::new(ErrorKind::LocalUnavailable, "Local generation ended without an answer"),
                    );
                }
            }
        };
        stats.finish(finish.usage.completion_tokens);
        trail.record.latency_us.upstream = micros(generation_started.elapsed());
        stats.note(trail.usage(), finish);
        let body = if json_array {
            wire::gemini::render_stream_array(&meta, &answer, finish)
        } else {
            trail.dialect.render_whole(&meta, &answer, finish)
        };
        trail.usage().bytes_out = body.len() as u64;
        let mut resp = self.answer(trail, StatusCode::OK, body);
        set_route_headers(resp.headers_mut(), "local", rule);
        resp
    }

    /// Forward the original request to its cloud provider and relay the answer.
    pub(super) async fn forward_to_cloud(
        self: &Arc<Self>,
        trail: Trail,
        shape: Shape,
        via: &Via,
        mut upstream: Request<Full<Bytes>>,
        redaction: Option<Arc<Redaction>>,
        rule: &str,
    ) -> Response<RespBody> {
        let trail = match self.gate_on_audit(trail) {
            Ok(trail) => trail,
            Err(refused) => return refused,
        };
        let restore = redaction.map(|redaction| {
            // A compressed answer could not be searched for placeholders.
            upstream.headers_mut().insert(http::header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            // Only chat answers stream in their dialect's events; other
            // answers are restored whole.
            (redaction, shape.is_chat().then_some(shape.api))
        });
        let upstream_started = Instant::now();
        let sent = match via {
            Via::Gateway => self.upstream.send(upstream).await,
            Via::Proxy { origin, .. } => {
                origin.send(upstream.map(|b| b.map_err(|never| match never {}).boxed_unsync())).await
            }
        };
        match sent {
            Ok(resp) => {
                let route = if restore.is_some() { "redact" } else { "cloud" };
                self.relay_restoring(trail, resp, upstream_started, route, rule, restore)
            }
            Err(e) => self.relay_or_refuse(trail, Err(e), upstream_started, "cloud", rule),
        }
    }

    /// Relay an upstream answer, or refuse with the upstream's failure.
    pub(super) fn relay_or_refuse(
        self: &Arc<Self>,
        mut trail: Trail,
        sent: Result<Response<Incoming>, UpstreamError>,
        upstream_started: Instant,
        route: &'static str,
        rule: &str,
    ) -> Response<RespBody> {
        match sent {
            Ok(resp) => self.relay(trail, resp, upstream_started, route, rule),
            Err(e) => {
                let provider = trail.record.provider.clone();
                metrics::counter!(telemetry::UPSTREAM_ERRORS, "provider" => provider.clone(), "kind" => e.kind())
                    .increment(1);
                trail.record.latency_us.upstream = micros(upstream_started.elapsed());
                let kind = match e {
                    UpstreamError::Timeout(_) => ErrorKind::UpstreamTimeout,
                    _ => ErrorKind::Upstream,
                };
                let message = format!("{provider} upstream failed: {e}");
                self.refuse(trail, Refusal::new(kind, message.to_string()))
            }
        }
    }

    /// Stream the provider's response back, recording when it ends.
    pub(super) fn relay(
        self: &Arc<Self>,
        trail: Trail,
        resp: Response<Incoming>,
        upstream_started: Instant,
        route: &'static str,
        rule: &str,
    ) -> Response<RespBody> {
        self.relay_restoring(trail, resp, upstream_started, route, rule, None)
    }

    /// [`Self::relay`], putting redacted values back where the answer
    /// quotes their placeholders: event by event for SSE, whole otherwise.
    pub(super) fn relay_restoring(
        self: &Arc<Self>,
        mut trail: Trail,
        resp: Response<Incoming>,
        upstream_started: Instant,
        route: &'static str,
        rule: &str,
        restore: Option<(Arc<Redaction>, Option<Dialect>)>,
    ) -> Response<RespBody> {
        let (mut parts, body) = resp.into_parts();
        trail.record.status = parts.status.as_u16();
        trail.record.model_used = trail.record.model_requested.clone();
        if !parts.status.is_success() {
            metrics::counter!(telemetry::UPSTREAM_ERRORS, "provider" => trail.record.provider.clone(), "kind" => "status")
                .increment(1);
        }
        if let Some(ai) = trail.record.ai.as_mut() {
            if let Some(account) = ai.account.as_mut() {
                self.monitor.note_answer(account, &parts.headers);
            }
            if let Some(download) = ai.download.as_mut() {
                // Hugging Face answers a resolve with a redirect to its CDN
                // and says there how big the file is.
                download.bytes = linked_size(&parts.headers).unwrap_or(0);
            }
        }
        strip_hop_by_hop(&mut parts.headers);
        set_route_headers(&mut parts.headers, route, rule);
        let idle_timeout = Duration::from_millis(self.config.upstream.idle_timeout_ms);
        let is_sse = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let restore = restore.map(|(redaction, dialect)| {
            parts.headers.remove(http::header::CONTENT_LENGTH);
            match dialect {
                Some(dialect) if is_sse => Restore::Stream(redaction.sse_restorer(dialect)),
                _ => Restore::Whole { redaction, buffered: Vec::new() },
            }
        });
        // Chat answers report their tokens in their dialect's `usage`.
        let chat = trail.record.api == trail.dialect.as_str();
        let usage = chat.then(|| UsageSniff::new(trail.dialect, is_sse));
        let final_event = if chat && is_sse { FinalEvent::of(trail.dialect) } else { None };
        let body = RelayBody {
            inner: body,
            restore,
            finished: false,
            usage,
            first_byte: None,
            bytes: 0,
            sniffed: trail.sniff_models.then(Vec::new),
            final_event,
            held: None,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            completion: Some(Completion { sluice: self.clone(), trail, upstream_started }),
        };
        Response::from_parts(parts, UnsyncBoxBody::new(body))
    }
}

/// `x-linked-size`: the size of the file a Hugging Face redirect points at.
fn linked_size(headers: &HeaderMap) -> Option<u64> {
    headers.get("x-linked-size")?.to_str().ok()?.trim().parse().ok()
}

/// Reads an answer's token counts as it passes, without holding it: for a
/// stream only the events that mention usage are parsed, a whole answer is
/// kept up to [`MAX_SNIFFED`] and parsed at the end.
pub(super) struct UsageSniff {
    dialect: Dialect,
    sse: bool,
    buf: Vec<u8>,
    split: EventSplitter,
    tokens: (Option<u64>, Option<u64>),
}

impl UsageSniff {
    fn new(dialect: Dialect, sse: bool) -> UsageSniff {
        UsageSniff { dialect, sse, buf: Vec::new(), split: EventSplitter::default(), tokens: (None, None) }
    }

    fn push(&mut self, data: &[u8]) {
        if !self.sse {
            if self.buf.len() < MAX_SNIFFED {
                self.buf.extend_from_slice(data);
            }
            return;
        }
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some((body_end, end)) = self.split.next_event_end(&self.buf) {
            let event = &self.buf[start..body_end];
            // `usage` and Gemini's `usageMetadata` both contain this.
            if memchr::memmem::find(event, b"sage").is_some() {
                if let Some(v) =
                    parse_event(event).and_then(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
                {
                    self.merge(self.dialect.usage_of(&v));
                }
            }
            start = end;
        }
        self.buf.drain(..start);
        self.split.consumed(start);
        if self.buf.len() > MAX_SNIFFED {
            // An event this long is not a usage report.
            self.buf.clear();
            self.split.reset();
        }
    }

    /// Later reports win: Gemini repeats running totals, and OpenAI's
    /// final chunk is the only one with usage.
    fn merge(&mut self, (input, output): (Option<u64>, Option<u64>)) {
        self.tokens = (input.or(self.tokens.0), output.or(self.tokens.1));
    }

    fn finish(&mut self) -> (Option<u64>, Option<u64>) {
        if !self.sse {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.buf) {
                // Gemini's streamGenerateContent without SSE is an array.
                match &v {
                    serde_json::Value::Array(items) => items.iter().for_each(|i| self.merge(self.dialect.usage_of(i))),
                    _ => self.merge(self.dialect.usage_of(&v)),
                }
            }
            self.buf = Vec::new();
        }
        self.tokens
    }
}

/// A model list longer than this is not read for the server's kind.
const MAX_SNIFFED: usize = 1 << 20;

/// The provider's body, relayed frame by frame with an idle timeout.
pub(super) struct RelayBody {
    inner: Incoming,
    /// Placeholders to turn back into values on the way to the client.
    restore: Option<Restore>,
    /// The last frame (restored text) has gone out.
    finished: bool,
    /// Body bytes received from upstream.
    bytes: u64,
    /// When the first of them arrived.
    first_byte: Option<Instant>,
    /// The token counts the answer reports, read as it passes.
    usage: Option<UsageSniff>,
    /// The first bytes of a model list, kept to tell which server sent it.
    sniffed: Option<Vec<u8>>,
    /// Watches a chat stream for its terminal event.
    final_event: Option<FinalEvent>,
    /// The last frame, waiting for the record to be durable.
    held: Option<Holding>,
    idle: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
    completion: Option<Completion>,
}

impl RelayBody {
    fn complete(&mut self, problem: Option<&str>) -> Option<Durable> {
        let mut c = self.completion.take()?;
        let tokens = self.usage.as_mut().map(UsageSniff::finish);
        c.received(self.bytes, self.sniffed.take(), tokens, self.first_byte);
        Some(c.finish(problem))
    }

    /// The answer's last frame (`None`: its end): recorded, and released
    /// once the record is durable.
    fn last(
        &mut self,
        frame: Option<Frame<Bytes>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.finished = true;
        let durable = self.complete(None);
        Holding::hold(frame, durable, &mut self.held, cx)
    }

    /// Passes a frame on. The frame that completes a chat stream's terminal
    /// event is where an SDK stops reading, so the answer is whole for the
    /// client there: the record is written then, and the frame held until
    /// it is durable. (Whatever follows, usually just the end, is relayed.)
    fn emit(&mut self, frame: Frame<Bytes>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let ends = match (self.final_event.as_mut(), frame.data_ref()) {
            (Some(watch), Some(data)) => watch.completed_by(data),
            _ => false,
        };
        if !ends {
            return Poll::Ready(Some(Ok(frame)));
        }
        self.final_event = None;
        let durable = self.complete(None);
        Holding::hold(Some(frame), durable, &mut self.held, cx)
    }
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(held) = this.held.as_mut() {
            let released = std::task::ready!(held.poll(cx));
            this.held = None;
            return Poll::Ready(released);
        }
        if this.finished {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        this.bytes += data.len() as u64;
                        this.first_byte.get_or_insert_with(Instant::now);
                        if let Some(usage) = this.usage.as_mut() {
                            usage.push(data);
                        }
                        if let Some(sniffed) = this.sniffed.as_mut().filter(|s| s.len() < MAX_SNIFFED) {
                            sniffed.extend_from_slice(data);
                        }
                    }
                    let deadline = tokio::time::Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(deadline);
                    let Some(restore) = this.restore.as_mut() else {
                        // A body of known length ends with its last data
                        // frame: the client has the whole answer with it.
                        if this.inner.is_end_stream() {
                            return this.last(Some(frame), cx);
                        }
                        return this.emit(frame, cx);
                    };
                    let Some(data) = frame.data_ref() else {
                        return Poll::Ready(Some(Ok(frame)));
                    };
                    match restore {
                        Restore::Stream(restorer) => {
                            let out = restorer.push(data);
                            // Held back as a possible placeholder prefix: read on.
                            if !out.is_empty() {
                                return this.emit(Frame::data(Bytes::from(out)), cx);
                            }
                        }
                        Restore::Whole { buffered, .. } => buffered.extend_from_slice(data),
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    // The client gets a broken answer; nothing to hold.
                    let _ = this.complete(Some("upstream body failed mid-stream"));
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Ready(None) => {
                    let last = match this.restore.take() {
                        None => Vec::new(),
                        Some(Restore::Stream(mut restorer)) => restorer.finish(),
                        // Not JSON (an HTML error page, say): it cannot hold
                        // a placeholder the client would misread; pass it on.
                        Some(Restore::Whole { redaction, buffered }) => {
                            redaction.restore_json_body(&buffered).unwrap_or(buffered)
                        }
                    };
                    let frame = (!last.is_empty()).then(|| Frame::data(Bytes::from(last)));
                    return this.last(frame, cx);
                }
                Poll::Pending => {
                    if this.idle.as_mut().poll(cx).is_ready() {
                        let _ = this.complete(Some("upstream went idle mid-stream"));
                        let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream idle timeout");
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && (self.finished || (self.restore.is_none() && self.inner.is_end_stream()))
    }

    fn size_hint(&self) -> SizeHint {
        if self.restore.is_some() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

impl Drop for RelayBody {
    fn drop(&mut self) {
        // hyper may drop a body it knows is finished without polling it to
        // the end; only a body with frames still to come was cut short.
        // Either way the client is gone or has all it gets: nothing to hold.
        let problem = (!self.inner.is_end_stream()).then_some("client disconnected before the response completed");
        let _ = self.complete(problem);
    }
}

/// The terminal event of a chat dialect's SSE stream, found as it passes:
/// a line that starts with one of the markers, in an event whose closing
/// blank line has been seen. Anchored at a line start, since a newline
/// inside JSON (model text) is always escaped. Gemini streams have no
/// terminal event; they end with the body.
pub(super) struct FinalEvent {
    markers: &'static [&'static [u8]],
    /// The last bytes passed, so a marker split across frames is found.
    tail: Vec<u8>,
    seen: bool,
}

/// Longest marker plus its leading newline.
const FINAL_TAIL: usize = 32;

impl FinalEvent {
    fn of(dialect: Dialect) -> Option<FinalEvent> {
        let markers: &'static [&'static [u8]] = match dialect {
            Dialect::OpenAiChat => &[b"\ndata: [DONE]"],
            Dialect::AnthropicMessages => &[b"\nevent: message_stop"],
            Dialect::OpenAiResponses => {
                &[b"\nevent: response.completed", b"\nevent: response.incomplete", b"\nevent: response.failed"]
            }
            Dialect::GeminiGenerate => return None,
        };
        Some(FinalEvent { markers, tail: vec![b'\n'], seen: false })
    }

    /// Whether `data` completes the terminal event.
    fn completed_by(&mut self, data: &[u8]) -> bool {
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(data);
        if !self.seen {
            self.seen = self.markers.iter().any(|m| memchr::memmem::find(&window, m).is_some());
        }
        let keep = window.len().saturating_sub(FINAL_TAIL);
        self.tail = window.split_off(keep);
        self.seen && (self.tail.ends_with(b"\n\n") || self.tail.ends_with(b"\r\n\r\n"))
    }
}

/// How a redacted request's answer is restored.
pub(super) enum Restore {
    Stream(SseRestorer),
    Whole { redaction: Arc<Redaction>, buffered: Vec<u8> },
}

/// Local decode statistics, reported as metrics when a generation ends.
pub(super) struct GenStats {
    started: Instant,
    first_token: Option<Instant>,
    deltas: u64,
}

impl GenStats {
    fn new(started: Instant) -> GenStats {
        GenStats { started, first_token: None, deltas: 0 }
    }

    fn token(&mut self) {
        if self.first_token.is_none() {
            let now = Instant::now();
            metrics::histogram!(telemetry::LOCAL_TIME_TO_FIRST_TOKEN).record((now - self.started).as_secs_f64());
            self.first_token = Some(now);
        }
        self.deltas += 1;
    }

    /// The local answer's tokens and time to first token, for its record.
    fn note(&self, usage: &mut crate::audit::UsageNote, finish: Finish) {
        usage.tokens_in = finish.usage.prompt_tokens;
        usage.tokens_out = finish.usage.completion_tokens.max(self.deltas);
        usage.ttft_ms = self
            .first_token
            .map(|t| t.saturating_duration_since(self.started).as_millis().min(u128::from(u64::MAX)) as u64);
    }

    fn finish(&self, completion_tokens: u64) {
        let tokens = completion_tokens.max(self.deltas);
        metrics::counter!(telemetry::LOCAL_TOKENS).increment(tokens);
        if let Some(first) = self.first_token {
            let decode = first.elapsed().as_secs_f64();
            if tokens > 1 && decode > 0.0 {
                metrics::histogram!(telemetry::LOCAL_TOKENS_PER_SECOND).record((tokens - 1) as f64 / decode);
            }
        }
    }
}

/// A local generation streamed as SSE in the client's format. Dropping it
/// (the client went away) drops the generation, which cancels it.
pub(super) struct LocalBody {
    generation: Generation,
    encoder: SseEncoder,
    pending: Option<Bytes>,
    /// The last event, waiting for the record to be durable.
    held: Option<Holding>,
    done: bool,
    stats: GenStats,
    completion: Option<Completion>,
}

impl LocalBody {
    fn end(&mut self, problem: Option<&str>) -> Option<Durable> {
        self.done = true;
        self.completion.take().map(|c| c.finish(problem))
    }

    /// The stream's last event: recorded, and released once the record is
    /// durable.
    fn last(
        &mut self,
        bytes: Bytes,
        problem: Option<&str>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let durable = self.end(problem);
        Holding::hold(Some(Frame::data(bytes)), durable, &mut self.held, cx)
    }
}

impl Body for LocalBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(held) = this.held.as_mut() {
            let released = std::task::ready!(held.poll(cx));
            this.held = None;
            return Poll::Ready(released);
        }
        if let Some(bytes) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let bytes = match this.generation.events.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(GenEvent::Delta(delta)))) => {
                this.stats.token();
                let bytes = this.encoder.delta(&delta);
                if let Some(c) = this.completion.as_mut() {
                    c.trail.usage().bytes_out += bytes.len() as u64;
                }
                bytes
            }
            Poll::Ready(Some(Ok(GenEvent::Finish(finish)))) => {
                this.stats.finish(finish.usage.completion_tokens);
                let bytes = this.encoder.finish(finish);
                if let Some(c) = this.completion.as_mut() {
                    let usage = c.trail.usage();
                    this.stats.note(usage, finish);
                    usage.bytes_out += bytes.len() as u64;
                }
                return this.last(bytes, None, cx);
            }
            Poll::Ready(Some(Err(e))) => {
                let message = format!("local generation failed: {e}");
                let bytes = this.encoder.error(&message);
                return this.last(bytes, Some(&message), cx);
            }
            Poll::Ready(None) => {
                let bytes = this.encoder.error("local generation ended without finishing");
                return this.last(bytes, Some("local generation ended without finishing"), cx);
            }
        };
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none() && self.held.is_none()
    }
}

impl Drop for LocalBody {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.end(Some("client disconnected; local generation cancelled"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends_at(dialect: Dialect, frames: &[&str]) -> Option<usize> {
        let mut watch = FinalEvent::of(dialect).unwrap();
        frames.iter().position(|f| watch.completed_by(f.as_bytes()))
    }

    #[test]
    fn the_terminal_event_is_found_where_it_completes() {
        let openai = ["data: {\"choices\":[]}\n\n", "data: [DO", "NE]\n", "\n"];
        assert_eq!(ends_at(Dialect::OpenAiChat, &openai), Some(3));
        let anthropic =
            ["event: message_delta\ndata: {}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"];
        assert_eq!(ends_at(Dialect::AnthropicMessages, &anthropic), Some(0));
        let responses = ["event: response.completed\ndata: {\"response\":", "{\"usage\":{}}}\r\n\r\n"];
        assert_eq!(ends_at(Dialect::OpenAiResponses, &responses), Some(1));
        assert!(FinalEvent::of(Dialect::GeminiGenerate).is_none());
    }

    #[test]
    fn marker_text_inside_model_output_is_not_the_end() {
        // Model text is JSON: its newlines are escaped, so the marker never
        // starts a line there.
        let text = ["data: {\"delta\":\"say\\ndata: [DONE] or event: message_stop\"}\n\n"];
        assert_eq!(ends_at(Dialect::OpenAiChat, &text), None);
        assert_eq!(ends_at(Dialect::AnthropicMessages, &text), None);
    }
}
