//! The request path: identify → extract → inspect → decide → dispatch →
//! respond → record, top to bottom in [`Sluice::handle_llm`].
//!
//! Every request that reaches sluice leaves exactly one audit record, whether
//! it was refused at the door, blocked by policy or relayed from the cloud.
//! Relayed bodies are streamed frame by frame; their record is written when
//! the last frame has gone out (or the client went away).

mod extract;
mod held;
mod inspect;
mod limit;
mod proxied;
mod refusal;
mod request_id;
mod respond;
mod trail;

use extract::{check_body_headers, read_body};
use held::Holding;
use inspect::{scan_inventory, Inspected};
use refusal::Refusal;
use trail::{json_answer, micros, Completion, Trail};

pub use held::{held_body, AnswerWithheld};
pub use inspect::{scan_body, signal_summary, Scanned};
pub use proxied::{MessageVerdicts, Relayed};
pub use request_id::{RequestId, RequestIds};

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tracing::{info_span, Instrument};

use crate::audit::AttachmentNote;
use crate::audit::{AuditError, AuditLog, AuditRecord, AuditWriter, Durability, Durable, Latencies, PromptKey};
use crate::blocking::InspectPool;
use crate::classify::Classifier;
use crate::config::{Config, ProviderConfig};
use crate::dispatch::local::{GenEvent, Generation, LocalError, LocalTier, Overflowed};
use crate::dispatch::origin::Origin;
use crate::dispatch::upstream::{UpstreamClient, UpstreamError};
use crate::identity::{Caller, IdentityTable};
use crate::inspect::{count_by_kind, Detectors, Dictionary};
use crate::inspect::{Category, Finding, ATTACHMENT_KIND};
use crate::limits::{Limiter, LimitsError};
use crate::policy::reload::{LivePolicies, Policies};
use crate::policy::{Action, Decision, LocalOptions, Overflow, PolicyErrors, Signals, TeamPolicy, TooLong};
use crate::redact::{Redaction, SseRestorer};
use crate::relay::websocket::{Verdict, WsMessage, WsRelayed};
use crate::shadow::monitor::{looks_like_llm_api, Monitor, MonitorError};
use crate::sticky::{Conversation, StickySessions};
use crate::telemetry;
use crate::wire::answer::{Assembled, Meta};
use crate::wire::dialect::SseEncoder;
use crate::wire::document::Inventory;
use crate::wire::shapes::{Extracted, Shape, ShapeKind};
use crate::wire::{self, Dialect, ErrorKind, Identity};

pub use crate::body::{full, BoxError, RespBody};
use crate::headers::{forwardable, strip_hop_by_hop};

/// Where a request came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingress {
    Gateway,
    Proxy,
}

impl Ingress {
    fn as_str(self) -> &'static str {
        match self {
            Ingress::Gateway => "gateway",
            Ingress::Proxy => "proxy",
        }
    }
}

/// How a request reached sluice, which decides who the caller is and where
/// a `cloud` decision sends it.
#[derive(Clone)]
pub enum Via {
    /// An app pointed at sluice: the API key names the caller, and the
    /// configured provider is called with sluice's key (or the client's).
    Gateway,
    /// The forward proxy: the caller was named by proxy authentication and
    /// the request goes, with the client's own credentials, to the origin
    /// the client connected to.
    Proxy { identity: Identity, origin: Arc<Origin> },
}

impl Via {
    fn ingress(&self) -> Ingress {
        match self {
            Via::Gateway => Ingress::Gateway,
            Via::Proxy { .. } => Ingress::Proxy,
        }
    }

    /// The provider name policies see: the API's provider at the gateway,
    /// the catalog name of the origin host at the proxy.
    fn provider(&self, api: Dialect) -> String {
        match self {
            Via::Gateway => api.provider().to_string(),
            Via::Proxy { origin, .. } => provider_of_host(&origin.target().host).to_string(),
        }
    }
}

pub use crate::wire::providers::provider_of_host;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("policies in {dir} are invalid:\n{errors}")]
    Policies { dir: String, errors: PolicyErrors },
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    #[error("audit key: {0}")]
    AuditKey(#[from] crate::audit::keys::KeyError),
    #[error("upstream client: {0}")]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Local(#[from] LocalError),
    #[error("shadow-AI monitor: {0}")]
    Shadow(#[from] MonitorError),
    #[error("{0}")]
    Limits(#[from] LimitsError),
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
    /// Policies, dictionaries and the catalog of AI apps: a request takes
    /// one snapshot ([`LivePolicies::current`]) and is decided under it.
    policies: Arc<LivePolicies>,
    detectors: Detectors,
    audit: AuditWriter,
    /// Keys the prompt digest in audit records.
    prompt_key: PromptKey,
    upstream: UpstreamClient,
    local: Arc<LocalTier>,
    openai: Provider,
    anthropic: Provider,
    gemini: Provider,
    classifier: Classifier,
    sticky: StickySessions,
    /// Where large bodies are read and scanned.
    pool: InspectPool,
    monitor: Monitor,
    limits: Limiter,
    next_id: AtomicU64,
    request_ids: RequestIds,
}

/// Where a decided request is served.
enum Route {
    Local(Generation),
    Cloud,
}

/// What a decided request does next: the local model answers, or the
/// (possibly redacted) request goes to its provider.
enum Plan {
    Local { request: wire::CanonicalRequest, generation: Generation, json_array: bool, rule: String },
    Cloud { upstream: Request<Full<Bytes>>, redaction: Option<Arc<Redaction>>, rule: String },
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
        let monitor = Monitor::load(&config.shadow)?;
        let identities = IdentityTable::new(&config.identity);
        let teams = identities.teams().map(str::to_string).collect();
        let policies = LivePolicies::start(&config.policies_dir, &config.shadow, teams)
            .map_err(|errors| StartError::Policies { dir: config.policies_dir.display().to_string(), errors })?;
        // Before the log opens, which would quietly tighten a key file
        // that others could read instead of refusing it.
        let prompt_key = PromptKey::load(&config.audit)?;
        let audit = AuditWriter::start(Arc::new(AuditLog::open(&config.audit.dir)?), config.audit.durability)?;
        if config.audit.durability == Durability::Batched {
            tracing::warn!(
                "audit.durability is batched: requests are answered before their audit records are on disk, \
                 so a crash or power cut can lose the records of the last ~200 ms of answered requests"
            );
        }
        let limits = Limiter::open(&config.limits, true)?;
        let upstream = UpstreamClient::new(&config.upstream)?;
        let local = LocalTier::start(&config.local, &config.upstream)?;
        let provider = |c: &ProviderConfig| Provider {
            config: c.clone(),
            key: c.api_key_env.as_ref().and_then(|v| std::env::var(v).ok()).filter(|k| !k.is_empty()),
            key_env: c.api_key_env.clone(),
        };
        Ok(Arc::new(Sluice {
            openai: provider(&config.providers.openai),
            anthropic: provider(&config.providers.anthropic),
            gemini: provider(&config.providers.gemini),
            classifier: Classifier::new(),
            sticky: StickySessions::new(
                config.sessions.capacity,
                Duration::from_secs(config.sessions.ttl_hours.saturating_mul(3600)),
            ),
            identities,
            policies: Arc::new(policies),
            detectors: Detectors::with_phone_regions(config.inspect.phone_regions()),
            pool: InspectPool::default(),
            monitor,
            limits,
            audit,
            prompt_key,
            upstream,
            local,
            config,
            next_id: AtomicU64::new(1),
            request_ids: RequestIds::new(),
        }))
    }

    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// The live policy set, for the reloader and `/readyz`.
    pub fn policies(&self) -> &Arc<LivePolicies> {
        &self.policies
    }

    pub fn audit(&self) -> &AuditWriter {
        &self.audit
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn limits(&self) -> &Limiter {
        &self.limits
    }

    /// Every team's budgets against their limits (`sluice budget status`).
    pub async fn budget_report(&self, team: Option<&str>) -> Result<crate::limits::Report, LimitsError> {
        let policies = self.policies.current();
        let teams: Vec<(String, crate::policy::limits::Limits)> = policies
            .set()
            .teams()
            .filter_map(|t| policies.team(t).map(|p| (t.to_string(), p.limits().clone())))
            .collect();
        self.limits.report(&teams, team).await
    }

    /// Why sluice cannot take traffic, if it cannot: the audit log must
    /// accept writes and the local model must have loaded (policies are
    /// loaded before serving starts).
    pub fn not_ready(&self) -> Option<String> {
        if let Err(e) = self.audit.check_writable() {
            return Some(format!("audit log: {e}"));
        }
        if !self.local.is_ready() {
            return Some(match self.local.backend() {
                Err(e) => format!("local model: {e}"),
                Ok(_) => "local model not ready".into(),
            });
        }
        None
    }

    pub fn local(&self) -> &LocalTier {
        &self.local
    }

    /// Route a gateway request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
        ingress: Ingress,
    ) -> Response<RespBody> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request_id = self.request_ids.of(req.headers());
        let span = info_span!("request", id, request_id = request_id.as_str(), method = %req.method(), path = %req.uri().path(),
            team = tracing::field::Empty, decision = tracing::field::Empty, status = tracing::field::Empty);
        let path = wire::shapes::normalize_path(req.uri().path());
        let shape = wire::shapes::shape_of(req.method(), &path, Dialect::OpenAiChat);
        // The gateway calls the three configured providers; their other
        // endpoints (completions, embeddings, token counting, batches) go
        // to the same provider, inspected like chat.
        let served = match shape.kind {
            ShapeKind::Chat => true,
            ShapeKind::Endpoint => {
                shape.name.starts_with("openai.")
                    || shape.name.starts_with("anthropic.")
                    || shape.name.starts_with("gemini.")
            }
            ShapeKind::Unknown => false,
        };
        let models = req.method() == http::Method::GET && path == "/v1/models";
        let head_only = req.method() == http::Method::HEAD;
        let this = self.clone();
        async move {
            let resp = if served {
                this.clone().handle_llm(shape, req, client, Via::Gateway, &request_id).await
            } else if models {
                this.handle_models(req, client, ingress, &request_id)
            } else {
                this.handle_unknown(req, client, ingress, &request_id)
            };
            let resp = this.deliver(&request_id, head_only, resp).await;
            tracing::Span::current().record("status", resp.status().as_u16());
            tracing::debug!("done");
            resp
        }
        .instrument(span)
        .await
    }

    /// The id of a request that arrived at the proxy port or on an
    /// intercepted connection.
    pub fn request_id(&self, headers: &HeaderMap) -> RequestId {
        self.request_ids.of(headers)
    }

    /// An LLM request (it has a body) on an intercepted connection, in
    /// the request span the proxy opened for it ([`Self::proxied_span`]):
    /// known shapes go through their parsers, the rest is inspected string
    /// by string.
    pub async fn handle_proxied(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
        identity: Identity,
        origin: Arc<Origin>,
        request_id: &RequestId,
    ) -> Response<RespBody> {
        let fallback = crate::wire::providers::api_family_of_host(&origin.target().host);
        let shape = wire::shapes::shape_of(req.method(), &wire::shapes::normalize_path(req.uri().path()), fallback);
        self.handle_llm(shape, req, client, Via::Proxy { identity, origin }, request_id).await
    }

    /// The span of one request on an intercepted connection, whatever
    /// happens to it; `decision` and `status` are filled in on the way.
    pub fn proxied_span(
        &self,
        req: &Request<Incoming>,
        identity: &Identity,
        origin: &Origin,
        request_id: &RequestId,
    ) -> tracing::Span {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        info_span!("request", id, request_id = request_id.as_str(), ingress = "proxy", host = %origin.target().host, method = %req.method(),
            path = %req.uri().path(), team = %identity.team, decision = tracing::field::Empty, status = tracing::field::Empty)
    }

    pub fn identities(&self) -> &IdentityTable {
        &self.identities
    }

    pub fn upstream(&self) -> &UpstreamClient {
        &self.upstream
    }

    /// One request with a body for an LLM API: [`Self::plan`] runs the
    /// phases up to the answer, each ending in `?`; a refusal from any of
    /// them leaves through [`Self::refuse`]. The record is written when the
    /// answer ends (see `trail`).
    async fn handle_llm(
        self: Arc<Self>,
        shape: Shape,
        req: Request<Incoming>,
        client: SocketAddr,
        via: Via,
        request_id: &RequestId,
    ) -> Response<RespBody> {
        let mut trail = Trail::for_llm(shape, client, &via, request_id);
        let (parts, body) = req.into_parts();
        match self.clone().plan(shape, &parts, body, client, &via, &mut trail).await {
            Ok(Plan::Local { request, generation, json_array, rule }) => {
                self.respond_local(trail, &request, generation, json_array, &rule).await
            }
            Ok(Plan::Cloud { upstream, redaction, rule }) => {
                self.forward_to_cloud(trail, shape, &via, upstream, redaction, &rule).await
            }
            Err(refusal) => self.refuse(trail, refusal),
        }
    }

    /// identify → extract → inspect → decide → dispatch.
    async fn plan(
        self: Arc<Self>,
        shape: Shape,
        parts: &http::request::Parts,
        body: Incoming,
        client: SocketAddr,
        via: &Via,
        trail: &mut Trail,
    ) -> Result<Plan, Refusal> {
        // The policies this request is decided under, whatever reloads
        // happen while it runs.
        let policies = self.policies.current();
        // identify
        let (identity, auth) = self.identify_caller(shape.api, &parts.headers, client, via)?;
        trail.caller(&identity);
        // extract
        check_body_headers(&parts.headers, shape.kind != ShapeKind::Unknown)?;
        let body = read_body(body, &parts.headers, &self.config.gateway).await?;
        trail.usage().bytes_in = body.len() as u64;
        self.attribute(&policies, parts, &body, via, trail)?;
        // inspect
        let inspected = self.clone().inspect(&policies, shape, parts, body.clone(), identity, via, trail).await?;
        // decide
        let signals = inspected.signals();
        let mut decision = inspected.policy.decide(&signals);
        trail.decided(&signals, &decision);
        // limit
        let over = self.check_limits(shape, &inspected, &mut decision, trail).await?;
        // dispatch
        match decision.action {
            Action::Block => Err(Refusal::new(
                ErrorKind::PolicyBlock,
                format!("Blocked by sluice policy rule `{}`: {}", decision.rule, decision.reason),
            )),
            Action::Local => match self.keep_local(shape, parts, &inspected, &decision, trail).await? {
                Some(local) => Ok(local),
                // Over a limit, the local tier's overflow must not reach the cloud.
                None => match over {
                    Some(over) => {
                        trail.record.decision = "block".into();
                        Err(limit::over_limit(&over))
                    }
                    None => self.to_cloud(shape.api, via, parts, body, auth, None, decision.rule),
                },
            },
            Action::Redact => {
                let redaction = self.plan_redaction(&inspected, &decision, trail)?;
                let body = match &redaction {
                    Some(r) => redacted_body(r, &body, &decision.rule)?,
                    None => body,
                };
                self.to_cloud(shape.api, via, parts, body, auth, redaction, decision.rule)
            }
            Action::Cloud => self.to_cloud(shape.api, via, parts, body, auth, None, decision.rule),
        }
    }

    /// For the shadow-AI monitor: the app a proxied request uses (a
    /// catalogued host, or an unlisted one speaking an LLM API) and the key
    /// it uses; the account behind the key comes with the answer.
    fn attribute(
        &self,
        policies: &Policies,
        parts: &http::request::Parts,
        body: &Bytes,
        via: &Via,
        trail: &mut Trail,
    ) -> Result<(), Refusal> {
        let Via::Proxy { origin, .. } = via else {
            return Ok(());
        };
        let entry = self.app_of(policies, &trail.record.team, &origin.target().host);
        if !self.monitor.enabled() || entry.is_none() && !looks_like_llm_api(&parts.method, parts.uri.path(), body) {
            return Ok(());
        }
        let mut ai = self.monitor.usage(entry, true);
        ai.bytes_up = body.len() as u64;
        ai.account = self.monitor.account_of_request(&parts.headers);
        let refused = self.judge_app(policies, &trail.record.team, &mut ai);
        trail.record.ai = Some(ai);
        refused.map_or(Ok(()), Err)
    }

    /// A `redact` decision: the placeholders for this prompt (none when the
    /// findings to redact are none), recorded by kind.
    fn plan_redaction(
        &self,
        inspected: &Inspected,
        decision: &Decision,
        trail: &mut Trail,
    ) -> Result<Option<Arc<Redaction>>, Refusal> {
        let segments = inspected.segments();
        let planned =
            Redaction::from_findings(&segments, &inspected.policy.findings_to_redact(decision, &inspected.findings));
        trail.record.redacted = planned.counts_by_kind().into_iter().map(|(k, n)| (k.to_string(), n)).collect();
        Ok((!planned.is_empty()).then(|| Arc::new(planned)))
    }

    #[allow(clippy::too_many_arguments)]
    fn to_cloud(
        &self,
        api: Dialect,
        via: &Via,
        parts: &http::request::Parts,
        body: Bytes,
        auth: UpstreamAuth,
        redaction: Option<Arc<Redaction>>,
        rule: String,
    ) -> Result<Plan, Refusal> {
        let upstream = self.upstream_request(api, via, parts, body, auth)?;
        Ok(Plan::Cloud { upstream, redaction, rule })
    }

    /// A `local` decision: the local tier answers (chat shapes only), or
    /// (`None`) the team's local options send a clean prompt to the cloud
    /// after all.
    async fn keep_local(
        &self,
        shape: Shape,
        parts: &http::request::Parts,
        inspected: &Inspected,
        decision: &Decision,
        trail: &mut Trail,
    ) -> Result<Option<Plan>, Refusal> {
        if !shape.is_chat() {
            return Err(Refusal::new(
                ErrorKind::PolicyBlock,
                format!(
                    "Policy rule `{}` keeps this request in-house, and the local model cannot answer {} requests; \
                     it was not sent to any cloud provider",
                    decision.rule, shape.name
                ),
            ));
        }
        let request = &inspected.request;
        if decision.sticky {
            self.sticky.mark(&Conversation::of(&request.identity.team, request));
        }
        let prompt_tokens = match inspected.exact_tokens {
            true => inspected.prompt_tokens,
            false => self.local.count_tokens(request, inspected.prompt_tokens),
        };
        // A conversation kept local for what it contains never overflows to
        // the cloud, and its later turns stay local too. A named place or
        // organisation alone is not sensitive.
        let sensitive =
            inspected.findings.iter().any(|f| f.category != crate::inspect::Category::Entity) || decision.sticky;
        let options = inspected.policy.local_options();
        match self.local_route(request, options, sensitive, prompt_tokens, &decision.rule).await? {
            Route::Local(generation) => {
                // Gemini streams as SSE only with `alt=sse`; otherwise as one JSON array.
                let json_array = shape.api == Dialect::GeminiGenerate
                    && request.stream
                    && !wire::gemini::is_sse(parts.uri.path_and_query().map_or("", |p| p.as_str()));
                Ok(Some(Plan::Local { request: request.clone(), generation, json_array, rule: decision.rule.clone() }))
            }
            Route::Cloud => {
                // Only clean prompts get here; the record says where it really went.
                trail.record.decision = "cloud".into();
                trail
                    .record
                    .reason
                    .push_str("; local tier full or prompt too long, sent to cloud by the team's local options");
                Ok(None)
            }
        }
    }

    /// The caller: named by the API key at the gateway, by proxy
    /// authentication at the proxy (where the client's own provider
    /// credentials travel on unchanged).
    fn identify_caller(
        &self,
        api: Dialect,
        headers: &HeaderMap,
        client: SocketAddr,
        via: &Via,
    ) -> Result<(Identity, UpstreamAuth), Refusal> {
        match via {
            Via::Gateway => self.identify(api, headers, client),
            Via::Proxy { identity, .. } => Ok((identity.clone(), UpstreamAuth::Client)),
        }
    }

    /// The caller at the gateway (see `identity` for the order of
    /// precedence). The client's own API key, when it was not the sluice
    /// token, goes to the provider only if the provider passes client keys.
    fn identify(
        &self,
        api: Dialect,
        headers: &HeaderMap,
        client: SocketAddr,
    ) -> Result<(Identity, UpstreamAuth), Refusal> {
        let pass_client_key = self.provider(api).config.pass_client_key;
        let Caller { identity, source, own_key } = self
            .identities
            .identify(headers, client.ip())
            .map_err(|e| Refusal::new(ErrorKind::Authentication, e.to_string()))?;
        metrics::counter!(telemetry::CALLERS, "ingress" => "gateway", "source" => source.as_str()).increment(1);
        let auth = if own_key.is_some() && pass_client_key { UpstreamAuth::Client } else { UpstreamAuth::Sluice };
        Ok((identity, auth))
    }

    fn provider(&self, api: Dialect) -> &Provider {
        match api {
            Dialect::OpenAiChat | Dialect::OpenAiResponses => &self.openai,
            Dialect::AnthropicMessages => &self.anthropic,
            Dialect::GeminiGenerate => &self.gemini,
        }
    }

    /// The original request, re-addressed to the provider with the right key.
    fn upstream_request(
        &self,
        api: Dialect,
        via: &Via,
        parts: &http::request::Parts,
        body: Bytes,
        auth: UpstreamAuth,
    ) -> Result<Request<Full<Bytes>>, Refusal> {
        let provider = self.provider(api);
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let uri = match via {
            Via::Gateway => format!("{}{}", provider.config.base_url.trim_end_matches('/'), path),
            // The origin connection addresses it (origin form or h2 authority).
            Via::Proxy { .. } => path.to_string(),
        };
        let mut builder = Request::builder().method(parts.method.clone()).uri(uri);
        let upstream_error = |message: String| Refusal::new(ErrorKind::Upstream, message);
        let headers = builder.headers_mut().ok_or_else(|| upstream_error("cannot build upstream request".into()))?;
        for (name, value) in &parts.headers {
            if forwardable(name) && !self.identities.is_identity_header(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        match auth {
            UpstreamAuth::Client => {
                for name in [
                    http::header::AUTHORIZATION,
                    HeaderName::from_static("x-api-key"),
                    HeaderName::from_static("x-goog-api-key"),
                ] {
                    if let Some(v) = parts.headers.get(&name) {
                        headers.insert(name, v.clone());
                    }
                }
            }
            UpstreamAuth::Sluice => {
                let Some(key) = provider.key.as_deref() else {
                    return Err(upstream_error(format!(
                        "no API key is configured for provider {} (set the environment variable {})",
                        api.provider(),
                        provider.key_env.as_deref().unwrap_or("named by api_key_env")
                    )));
                };
                let value = |v: String| {
                    HeaderValue::from_str(&v)
                        .map_err(|_| upstream_error("provider API key is not a valid header value".into()))
                };
                match api {
                    Dialect::OpenAiChat | Dialect::OpenAiResponses => {
                        headers.insert(http::header::AUTHORIZATION, value(format!("Bearer {key}"))?)
                    }
                    Dialect::AnthropicMessages => headers.insert("x-api-key", value(key.to_string())?),
                    Dialect::GeminiGenerate => headers.insert("x-goog-api-key", value(key.to_string())?),
                };
            }
        }
        builder.body(Full::new(body)).map_err(|e| upstream_error(format!("cannot build upstream request: {e}")))
    }

    fn handle_models(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        ingress: Ingress,
        request_id: &RequestId,
    ) -> Response<RespBody> {
        let dialect = dialect_of(req.headers());
        let mut trail = Trail::new("models", dialect, client, ingress, request_id);
        let identity = match self.identify(Dialect::OpenAiChat, req.headers(), client) {
            Ok((identity, _)) => identity,
            Err(refusal) => return self.refuse(trail, refusal),
        };
        trail.record.team = identity.team;
        trail.record.user = identity.user;
        trail.record.decision = "sluice".into();
        let mut models: Vec<(&str, &str)> = Vec::new();
        models.extend(self.openai.config.models.iter().map(|m| (m.as_str(), "openai")));
        models.extend(self.anthropic.config.models.iter().map(|m| (m.as_str(), "anthropic")));
        models.extend(self.gemini.config.models.iter().map(|m| (m.as_str(), "gemini")));
        if self.local.backend().is_ok() {
            models.push((self.local.model_name(), "sluice-local"));
        }
        self.answer(trail, StatusCode::OK, dialect.models_body(&models))
    }

    fn handle_unknown(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        ingress: Ingress,
        request_id: &RequestId,
    ) -> Response<RespBody> {
        let dialect = dialect_of(req.headers());
        let trail = Trail::new("unknown", dialect, client, ingress, request_id);
        let message = format!("sluice does not serve {} {}", req.method(), req.uri().path());
        self.refuse(trail, Refusal::quoting(ErrorKind::NotFound, message.to_string(), "no such endpoint"))
    }
}

/// The body with every planned value replaced, checked for survivors.
/// Fails closed: a value that cannot be replaced must not leave.
fn redacted_body(redaction: &Redaction, body: &[u8], rule: &str) -> Result<Bytes, Refusal> {
    redaction
        .redact_json_body(body)
        .and_then(|redacted| redaction.check_gone(&redacted).map(|()| Bytes::from(redacted)))
        .map_err(|e| {
            Refusal::new(
                ErrorKind::PolicyBlock,
                format!("Policy rule `{rule}` redacts this prompt, but it could not be redacted: {e}"),
            )
        })
}

/// Anthropic clients send `anthropic-version`; everyone else gets OpenAI's shape.
fn dialect_of(headers: &HeaderMap) -> Dialect {
    if headers.contains_key("anthropic-version") {
        Dialect::AnthropicMessages
    } else {
        Dialect::OpenAiChat
    }
}

fn set_route_headers(headers: &mut HeaderMap, route: &'static str, rule: &str) {
    headers.insert("x-sluice-route", HeaderValue::from_static(route));
    if let Ok(v) = HeaderValue::from_str(rule) {
        headers.insert("x-sluice-rule", v);
    }
}
