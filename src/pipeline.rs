//! The request path: identify → extract → inspect → decide → dispatch →
//! respond → record, top to bottom in [`Sluice::handle_llm`].
//!
//! Every request that reaches sluice leaves exactly one audit record, whether
//! it was refused at the door, blocked by policy or relayed from the cloud.
//! Relayed bodies are streamed frame by frame; their record is written when
//! the last frame has gone out (or the client went away).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use tracing::{info_span, Instrument};

use crate::audit::{AuditError, AuditLog, AuditRecord, AuditWriter, Latencies};
use crate::config::{Config, ProviderConfig};
use crate::dispatch::cloud::{CloudClient, CloudError};
use crate::identity::{Caller, IdentityTable};
use crate::inspect::{count_by_kind, Detectors, Dictionary, DictionaryError};
use crate::policy::{Action, PolicyErrors, PolicySet, Signals};
use crate::telemetry;
use crate::wire::{self, Api, ErrorKind, Format, Identity};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// Where a request came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingress {
    Gateway,
}

impl Ingress {
    fn as_str(self) -> &'static str {
        match self {
            Ingress::Gateway => "gateway",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("policies in {dir} are invalid:\n{errors}")]
    Policies { dir: String, errors: PolicyErrors },
    #[error("team `{team}`: dictionary: {source}")]
    Dictionary { team: String, source: DictionaryError },
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    #[error("cannot start the audit writer thread: {0}")]
    AuditThread(std::io::Error),
    #[error("upstream client: {0}")]
    Cloud(#[from] CloudError),
}

/// A provider as sluice calls it: config plus the key read at start-up.
struct Provider {
    config: ProviderConfig,
    key: Option<String>,
    key_env: Option<String>,
}

/// Everything the request path needs, built once at start-up.
pub struct Sluice {
    config: Config,
    identities: IdentityTable,
    policies: PolicySet,
    dictionaries: HashMap<String, Dictionary>,
    detectors: Detectors,
    audit: AuditWriter,
    cloud: CloudClient,
    openai: Provider,
    anthropic: Provider,
    next_id: AtomicU64,
}

/// The audit record being filled in as the request moves along.
struct Trail {
    record: AuditRecord,
    started: Instant,
    format: Format,
}

/// How sluice authenticates to the provider for one request.
enum UpstreamAuth {
    /// sluice's own provider key from config.
    Sluice,
    /// The client's own provider key, passed through.
    Client,
}

impl Sluice {
    pub fn build(config: Config) -> Result<Arc<Sluice>, StartError> {
        let policies = PolicySet::load_dir(&config.policies_dir).map_err(|errors| StartError::Policies {
            dir: config.policies_dir.display().to_string(),
            errors,
        })?;
        let mut dictionaries = HashMap::new();
        for team in policies.teams() {
            let Some(policy) = policies.team(team) else { continue };
            if policy.dictionary_terms().is_empty() {
                continue;
            }
            let dict = Dictionary::new(policy.dictionary_terms()).map_err(|source| StartError::Dictionary {
                team: team.to_string(),
                source,
            })?;
            dictionaries.insert(team.to_string(), dict);
        }
        let identities = IdentityTable::new(&config.identity);
        for team in identities.teams() {
            if policies.team(team).is_none() {
                tracing::warn!(team, "team has no policy file; its requests will be refused");
            }
        }
        let audit = AuditWriter::start(Arc::new(AuditLog::open(&config.audit.dir)?)).map_err(StartError::AuditThread)?;
        let cloud = CloudClient::new(&config.upstream)?;
        let provider = |c: &ProviderConfig| Provider {
            config: c.clone(),
            key: c.api_key_env.as_ref().and_then(|v| std::env::var(v).ok()).filter(|k| !k.is_empty()),
            key_env: c.api_key_env.clone(),
        };
        Ok(Arc::new(Sluice {
            openai: provider(&config.providers.openai),
            anthropic: provider(&config.providers.anthropic),
            identities,
            policies,
            dictionaries,
            detectors: Detectors::new(),
            audit,
            cloud,
            config,
            next_id: AtomicU64::new(1),
        }))
    }

    pub fn audit(&self) -> &AuditWriter {
        &self.audit
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Ready when the audit log accepts writes; policies loaded at build.
    pub fn ready(&self) -> bool {
        self.audit.check_writable().is_ok()
    }

    /// Route a gateway request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, client: SocketAddr, ingress: Ingress) -> Response<RespBody> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let span = info_span!("request", id, method = %req.method(), path = %req.uri().path(),
            team = tracing::field::Empty, decision = tracing::field::Empty, status = tracing::field::Empty);
        let api = match (req.method().as_str(), req.uri().path()) {
            ("POST", "/v1/chat/completions") => Some(Api::OpenAiChat),
            ("POST", "/v1/messages") => Some(Api::AnthropicMessages),
            _ => None,
        };
        let this = self.clone();
        async move {
            let resp = match api {
                Some(api) => this.handle_llm(api, req, client, ingress).await,
                None if req.method() == http::Method::GET && req.uri().path() == "/v1/models" => {
                    this.handle_models(req, client, ingress)
                }
                None => this.handle_unknown(req, client, ingress),
            };
            tracing::Span::current().record("status", resp.status().as_u16());
            tracing::debug!("done");
            resp
        }
        .instrument(span)
        .await
    }

    /// One LLM API call, end to end.
    async fn handle_llm(self: Arc<Self>, api: Api, req: Request<Incoming>, client: SocketAddr, ingress: Ingress) -> Response<RespBody> {
        let mut trail = Trail::new(api.as_str(), api.format(), client, ingress);
        trail.record.provider = api.provider().to_string();
        let (parts, body) = req.into_parts();

        // identify
        let (identity, auth) = match self.identify(api, &parts.headers) {
            Ok(found) => found,
            Err(message) => return self.refuse(trail, ErrorKind::Authentication, &message),
        };
        trail.record.team = identity.team.clone();
        trail.record.user = identity.user.clone();
        tracing::Span::current().record("team", identity.team.as_str());

        // extract
        if let Err(message) = check_content_type(&parts.headers) {
            return self.refuse(trail, ErrorKind::UnsupportedMediaType, &message);
        }
        let body = match read_body(body, &parts.headers, self.config.gateway.max_body_bytes).await {
            Ok(body) => body,
            Err((kind, message)) => return self.refuse(trail, kind, &message),
        };
        let parsed = match api {
            Api::OpenAiChat => wire::openai::parse_chat(&body),
            Api::AnthropicMessages => wire::anthropic::parse_messages(&body),
        };
        let mut request = match parsed {
            Ok(request) => request,
            Err(e) => return self.refuse(trail, ErrorKind::InvalidRequest, &e.to_string()),
        };
        request.identity = identity;
        trail.record.model_requested = request.model.clone();
        let Some(policy) = self.policies.team(&request.identity.team) else {
            let message = format!(
                "team `{}` has no policy; sluice refuses rather than guess (add {}.yaml to the policies directory)",
                request.identity.team, request.identity.team
            );
            return self.refuse(trail, ErrorKind::PolicyBlock, &message);
        };

        // inspect
        let inspect_started = Instant::now();
        let segments = request.text_segments();
        let findings = self
            .detectors
            .scan(self.dictionaries.get(&request.identity.team), &segments);
        let prompt_tokens = wire::CanonicalRequest::estimated_prompt_tokens(&segments);
        trail.record.prompt_sha256 = prompt_digest(&segments);
        trail.record.findings = count_by_kind(&findings)
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        let inspect_time = inspect_started.elapsed();
        trail.record.latency_us.inspect = micros(inspect_time);
        metrics::histogram!(telemetry::INSPECTION_DURATION).record(inspect_time.as_secs_f64());

        // decide
        let decision = policy.decide(&Signals {
            findings: &findings,
            requested_model: &request.model,
            provider: api.provider(),
            prompt_tokens,
        });
        trail.record.decision = decision.action.as_str().to_string();
        trail.record.rule = decision.rule.clone();
        trail.record.reason = decision.reason.clone();
        tracing::Span::current().record("decision", decision.action.as_str());

        // dispatch
        match decision.action {
            Action::Block => {
                let message = format!("Blocked by sluice policy rule `{}`: {}", decision.rule, decision.reason);
                self.refuse(trail, ErrorKind::PolicyBlock, &message)
            }
            Action::Local => {
                // Never falls back to the cloud: the policy said this prompt stays here.
                let message = format!(
                    "Policy rule `{}` keeps this request on the local model, and no local engine is available; \
                     the request was not sent to any cloud provider",
                    decision.rule
                );
                self.refuse(trail, ErrorKind::LocalUnavailable, &message)
            }
            Action::Cloud => {
                // Fail closed: nothing leaves unless its record can be written.
                if let Err(e) = self.audit.check_writable() {
                    tracing::error!(error = %e, "audit log not writable; refusing to forward");
                    let message = "sluice cannot write its audit log, so the request was not forwarded";
                    return self.refuse(trail, ErrorKind::LocalUnavailable, message);
                }
                let upstream = match self.upstream_request(api, &parts, body, auth) {
                    Ok(upstream) => upstream,
                    Err(message) => return self.refuse(trail, ErrorKind::Upstream, &message),
                };
                let upstream_started = Instant::now();
                match self.cloud.send(upstream).await {
                    Ok(resp) => self.relay(trail, resp, upstream_started, &decision.rule),
                    Err(e) => {
                        metrics::counter!(telemetry::UPSTREAM_ERRORS, "provider" => api.provider(), "kind" => e.kind())
                            .increment(1);
                        trail.record.latency_us.upstream = micros(upstream_started.elapsed());
                        let kind = match e {
                            CloudError::Timeout(_) => ErrorKind::UpstreamTimeout,
                            _ => ErrorKind::Upstream,
                        };
                        let message = format!("{} upstream failed: {e}", api.provider());
                        self.refuse(trail, kind, &message)
                    }
                }
            }
        }
    }

    fn identify(&self, api: Api, headers: &HeaderMap) -> Result<(Identity, UpstreamAuth), String> {
        let pass_client_key = self.provider(api).config.pass_client_key;
        let auth = |own_key: Option<&str>| {
            if own_key.is_some() && pass_client_key {
                UpstreamAuth::Client
            } else {
                UpstreamAuth::Sluice
            }
        };
        match self.identities.identify(headers) {
            Caller::Token { identity, own_key } => Ok((identity, auth(own_key))),
            Caller::Unknown { key } => {
                let auth = auth(key);
                match self.identities.anonymous() {
                    Some(identity) => Ok((identity, auth)),
                    None if key.is_some() => Err("Invalid sluice token".to_string()),
                    None => Err("Missing sluice token: send it as the API key (Authorization: Bearer or x-api-key)".to_string()),
                }
            }
        }
    }

    fn provider(&self, api: Api) -> &Provider {
        match api {
            Api::OpenAiChat => &self.openai,
            Api::AnthropicMessages => &self.anthropic,
        }
    }

    /// The original request, re-addressed to the provider with the right key.
    fn upstream_request(
        &self,
        api: Api,
        parts: &http::request::Parts,
        body: Bytes,
        auth: UpstreamAuth,
    ) -> Result<Request<Full<Bytes>>, String> {
        let provider = self.provider(api);
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let uri = format!("{}{}", provider.config.base_url.trim_end_matches('/'), path);
        let mut builder = Request::builder().method(parts.method.clone()).uri(uri);
        let headers = builder.headers_mut().ok_or("cannot build upstream request")?;
        for (name, value) in &parts.headers {
            if forwardable(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        match auth {
            UpstreamAuth::Client => {
                for name in [http::header::AUTHORIZATION, HeaderName::from_static("x-api-key")] {
                    if let Some(v) = parts.headers.get(&name) {
                        headers.insert(name, v.clone());
                    }
                }
            }
            UpstreamAuth::Sluice => {
                let Some(key) = provider.key.as_deref() else {
                    return Err(format!(
                        "no API key is configured for provider {} (set the environment variable {})",
                        api.provider(),
                        provider.key_env.as_deref().unwrap_or("named by api_key_env")
                    ));
                };
                let value = |v: String| HeaderValue::from_str(&v).map_err(|_| "provider API key is not a valid header value".to_string());
                match api {
                    Api::OpenAiChat => headers.insert(http::header::AUTHORIZATION, value(format!("Bearer {key}"))?),
                    Api::AnthropicMessages => headers.insert("x-api-key", value(key.to_string())?),
                };
            }
        }
        builder.body(Full::new(body)).map_err(|e| format!("cannot build upstream request: {e}"))
    }

    /// Stream the provider's response back, recording when it ends.
    fn relay(self: &Arc<Self>, mut trail: Trail, resp: Response<Incoming>, upstream_started: Instant, rule: &str) -> Response<RespBody> {
        let (mut parts, body) = resp.into_parts();
        trail.record.status = parts.status.as_u16();
        trail.record.model_used = trail.record.model_requested.clone();
        if !parts.status.is_success() {
            metrics::counter!(telemetry::UPSTREAM_ERRORS, "provider" => trail.record.provider.clone(), "kind" => "status")
                .increment(1);
        }
        strip_hop_by_hop(&mut parts.headers);
        set_route_headers(&mut parts.headers, "cloud", rule);
        let idle_timeout = Duration::from_millis(self.config.upstream.idle_timeout_ms);
        let body = RelayBody {
            inner: body,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            completion: Some(Completion {
                sluice: self.clone(),
                trail,
                upstream_started,
            }),
        };
        Response::from_parts(parts, UnsyncBoxBody::new(body))
    }

    fn handle_models(&self, req: Request<Incoming>, client: SocketAddr, ingress: Ingress) -> Response<RespBody> {
        let format = format_of(req.headers());
        let mut trail = Trail::new("models", format, client, ingress);
        let identity = match self.identify(Api::OpenAiChat, req.headers()) {
            Ok((identity, _)) => identity,
            Err(message) => return self.refuse(trail, ErrorKind::Authentication, &message),
        };
        trail.record.team = identity.team;
        trail.record.user = identity.user;
        trail.record.decision = "sluice".into();
        let mut models: Vec<(&str, &str)> = Vec::new();
        models.extend(self.openai.config.models.iter().map(|m| (m.as_str(), "openai")));
        models.extend(self.anthropic.config.models.iter().map(|m| (m.as_str(), "anthropic")));
        self.answer(trail, StatusCode::OK, wire::models_body(format, &models))
    }

    fn handle_unknown(&self, req: Request<Incoming>, client: SocketAddr, ingress: Ingress) -> Response<RespBody> {
        let format = format_of(req.headers());
        let trail = Trail::new("unknown", format, client, ingress);
        let message = format!("sluice does not serve {} {}", req.method(), req.uri().path());
        self.refuse(trail, ErrorKind::NotFound, &message)
    }

    /// Answer with an error in the client's wire format, and record it.
    fn refuse(&self, mut trail: Trail, kind: ErrorKind, message: &str) -> Response<RespBody> {
        if trail.record.decision.is_empty() {
            trail.record.decision = "error".into();
        }
        if trail.record.reason.is_empty() || kind != ErrorKind::PolicyBlock {
            // The reason names what went wrong, never the prompt.
            trail.record.reason = format!("{}: {}", kind.code(), message);
        }
        let rule = trail.record.rule.clone();
        let body = wire::error_body(trail.format, kind, message);
        let mut resp = self.answer(trail, kind.status(), body);
        if !rule.is_empty() {
            let route = if kind == ErrorKind::PolicyBlock { "block" } else if kind == ErrorKind::LocalUnavailable { "local" } else { "error" };
            set_route_headers(resp.headers_mut(), route, &rule);
        }
        resp
    }

    fn answer(&self, mut trail: Trail, status: StatusCode, body: Bytes) -> Response<RespBody> {
        trail.record.status = status.as_u16();
        self.record(trail, None);
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }

    /// Write the audit record and metrics for a finished request.
    fn record(&self, mut trail: Trail, upstream: Option<Duration>) {
        if let Some(upstream) = upstream {
            trail.record.latency_us.upstream = micros(upstream);
        }
        let total = trail.started.elapsed();
        trail.record.latency_us.total = micros(total);
        let r = &trail.record;
        let team = if r.team.is_empty() { "unknown".to_string() } else { r.team.clone() };
        metrics::counter!(telemetry::REQUESTS, "team" => team, "decision" => r.decision.clone(), "provider" => r.provider.clone())
            .increment(1);
        metrics::histogram!(telemetry::REQUEST_DURATION, "api" => r.api.clone(), "decision" => r.decision.clone())
            .record(total.as_secs_f64());
        for (kind, n) in &r.findings {
            metrics::counter!(telemetry::FINDINGS, "type" => kind.clone()).increment(u64::from(*n));
        }
        if let Err(e) = self.audit.submit(trail.record) {
            metrics::counter!(telemetry::AUDIT_WRITE_ERRORS).increment(1);
            tracing::error!(error = %e, "audit record could not be written");
        }
    }
}

impl Trail {
    fn new(api: &str, format: Format, client: SocketAddr, ingress: Ingress) -> Trail {
        Trail {
            record: AuditRecord {
                time_unix_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                client_addr: client.to_string(),
                ingress: ingress.as_str().to_string(),
                api: api.to_string(),
                latency_us: Latencies::default(),
                ..AuditRecord::default()
            },
            started: Instant::now(),
            format,
        }
    }
}

/// Anthropic clients send `anthropic-version`; everyone else gets OpenAI's shape.
fn format_of(headers: &HeaderMap) -> Format {
    if headers.contains_key("anthropic-version") {
        Format::Anthropic
    } else {
        Format::OpenAi
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), String> {
    let Some(value) = headers.get(http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let value = value.to_str().unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") || essence.to_ascii_lowercase().ends_with("+json") {
        Ok(())
    } else {
        Err(format!("Content-Type must be application/json, not `{value}`"))
    }
}

async fn read_body(body: Incoming, headers: &HeaderMap, limit: usize) -> Result<Bytes, (ErrorKind, String)> {
    let too_large = || (ErrorKind::TooLarge, format!("request body exceeds the limit of {limit} bytes"));
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err((ErrorKind::InvalidRequest, format!("cannot read request body: {e}"))),
    }
}

/// Headers that describe one hop, or carry credentials meant for sluice.
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host" | "authorization" | "x-api-key" | "x-sluice-token" | "content-length" | "connection" | "keep-alive"
            | "proxy-authorization" | "proxy-authenticate" | "proxy-connection" | "te" | "trailer"
            | "transfer-encoding" | "upgrade"
    )
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"] {
        headers.remove(name);
    }
}

fn set_route_headers(headers: &mut HeaderMap, route: &'static str, rule: &str) {
    headers.insert("x-sluice-route", HeaderValue::from_static(route));
    if let Ok(v) = HeaderValue::from_str(rule) {
        headers.insert("x-sluice-rule", v);
    }
}

/// SHA-256 over the prompt segments, each length-prefixed so that segment
/// boundaries are part of the digest.
fn prompt_digest(segments: &[&str]) -> String {
    let mut h = Sha256::new();
    for s in segments {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    hex::encode(h.finalize())
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

pub fn full(bytes: Bytes) -> RespBody {
    UnsyncBoxBody::new(Full::new(bytes).map_err(|never| match never {}))
}

/// What remains to do once a relayed body is finished.
struct Completion {
    sluice: Arc<Sluice>,
    trail: Trail,
    upstream_started: Instant,
}

impl Completion {
    fn finish(mut self, problem: Option<&str>) {
        if let Some(problem) = problem {
            self.trail.record.reason = format!("{}; {problem}", self.trail.record.reason);
        }
        let upstream = self.upstream_started.elapsed();
        self.sluice.record(self.trail, Some(upstream));
    }
}

/// The provider's body, relayed frame by frame with an idle timeout.
struct RelayBody {
    inner: Incoming,
    idle: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
    completion: Option<Completion>,
}

impl RelayBody {
    fn complete(&mut self, problem: Option<&str>) {
        if let Some(c) = self.completion.take() {
            c.finish(problem);
        }
    }
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let deadline = tokio::time::Instant::now() + this.idle_timeout;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.complete(Some("upstream body failed mid-stream"));
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.complete(None);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    this.complete(Some("upstream went idle mid-stream"));
                    let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream idle timeout");
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RelayBody {
    fn drop(&mut self) {
        // hyper may drop a body it knows is finished without polling it to
        // the end; only a body with frames still to come was cut short.
        if self.inner.is_end_stream() {
            self.complete(None);
        } else {
            self.complete(Some("client disconnected before the response completed"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_depends_on_segment_boundaries() {
        assert_ne!(prompt_digest(&["ab", "c"]), prompt_digest(&["a", "bc"]));
        assert_eq!(prompt_digest(&["x"]), prompt_digest(&["x"]));
    }

    #[test]
    fn content_type_rules() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_ok());
        h.insert("content-type", "application/json; charset=utf-8".parse().unwrap());
        assert!(check_content_type(&h).is_ok());
        h.insert("content-type", "text/plain".parse().unwrap());
        assert!(check_content_type(&h).unwrap_err().contains("text/plain"));
    }

    #[test]
    fn credentials_and_hop_headers_are_not_forwarded() {
        for h in ["authorization", "x-api-key", "x-sluice-token", "host", "connection", "transfer-encoding"] {
            assert!(!forwardable(&HeaderName::from_static(h)), "{h}");
        }
        assert!(forwardable(&HeaderName::from_static("anthropic-version")));
        assert!(forwardable(&HeaderName::from_static("openai-organization")));
    }
}
