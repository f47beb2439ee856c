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
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use hyper_util::rt::TokioIo;
use tracing::{info_span, Instrument};

use crate::classify::Classifier;
use crate::redact::{Redaction, SseRestorer, StreamFormat};
use crate::session::{Conversation, StickySessions};
use crate::audit::{AuditError, AuditLog, AuditRecord, AuditWriter, Latencies};
use crate::config::{Config, ProviderConfig};
use crate::dispatch::cloud::{CloudClient, CloudError};
use crate::dispatch::origin::{Origin, OriginBody};
use crate::identity::{Caller, IdentityTable};
use crate::inspect::{count_by_kind, Detectors, Dictionary, DictionaryError};
use crate::dispatch::local::{GenEvent, Generation, LocalError, LocalTier, Overflowed};
use crate::policy::{Action, LocalOptions, Overflow, PolicyErrors, PolicySet, Signals, TooLong};
use crate::wire::response::{self, Assembled, Meta, SseEncoder};
use crate::telemetry;
use crate::audit::AttachmentNote;
use crate::blocking::InspectPool;
use crate::ingress::websocket::{self, Verdict, WsMessage};
use crate::inspect::{Category, Finding, ATTACHMENT_KIND};
use crate::wire::document::Inventory;
use crate::wire::shapes::{Extracted, Shape, ShapeKind};
use crate::wire::{self, Api, ErrorKind, Format, Identity};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type RespBody = UnsyncBoxBody<Bytes, BoxError>;

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
    fn provider(&self, api: Api) -> String {
        match self {
            Via::Gateway => api.provider().to_string(),
            Via::Proxy { origin, .. } => provider_of_host(&origin.target().host).to_string(),
        }
    }
}

/// Catalog names for the intercepted LLM API hosts.
pub fn provider_of_host(host: &str) -> &str {
    const CATALOG: &[(&str, &str)] = &[
        ("api.openai.com", "openai"),
        ("api.anthropic.com", "anthropic"),
        ("generativelanguage.googleapis.com", "gemini"),
        ("api.mistral.ai", "mistral"),
        ("api.groq.com", "groq"),
        ("api.together.xyz", "together"),
        ("api.together.ai", "together"),
        ("api.deepseek.com", "deepseek"),
        ("openrouter.ai", "openrouter"),
        ("api.cohere.com", "cohere"),
        ("api.cohere.ai", "cohere"),
        ("api.x.ai", "xai"),
        ("api.perplexity.ai", "perplexity"),
        ("api.fireworks.ai", "fireworks"),
    ];
    if let Some((_, name)) = CATALOG.iter().find(|(h, _)| *h == host) {
        return name;
    }
    if host.ends_with(".openai.azure.com") {
        return "azure_openai";
    }
    if host.starts_with("bedrock-runtime.") && host.ends_with(".amazonaws.com") {
        return "bedrock";
    }
    host
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
    #[error("{0}")]
    Local(#[from] LocalError),
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
    local: Arc<LocalTier>,
    openai: Provider,
    anthropic: Provider,
    gemini: Provider,
    classifier: Classifier,
    sticky: StickySessions,
    /// Where large bodies are read and scanned.
    pool: InspectPool,
    next_id: AtomicU64,
}

/// The audit record being filled in as the request moves along.
struct Trail {
    record: AuditRecord,
    started: Instant,
    format: Format,
}

/// Where a decided request is served.
enum Route {
    Local(Generation),
    Cloud,
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
            policies,
            dictionaries,
            detectors: Detectors::new(),
            pool: InspectPool::default(),
            audit,
            cloud,
            local,
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
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, client: SocketAddr, ingress: Ingress) -> Response<RespBody> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let span = info_span!("request", id, method = %req.method(), path = %req.uri().path(),
            team = tracing::field::Empty, decision = tracing::field::Empty, status = tracing::field::Empty);
        let path = wire::shapes::normalize_path(req.uri().path());
        let shape = wire::shapes::shape_of(req.method(), &path, Api::OpenAiChat);
        // The gateway calls the three configured providers; their other
        // endpoints (completions, embeddings, token counting, batches) go
        // to the same provider, inspected like chat.
        let served = match shape.kind {
            ShapeKind::Chat => true,
            ShapeKind::Endpoint => shape.name.starts_with("openai.") || shape.name.starts_with("anthropic.") || shape.name.starts_with("gemini."),
            ShapeKind::Unknown => false,
        };
        let models = req.method() == http::Method::GET && path == "/v1/models";
        let this = self.clone();
        async move {
            let resp = if served {
                this.handle_llm(shape, req, client, Via::Gateway).await
            } else if models {
                this.handle_models(req, client, ingress)
            } else {
                this.handle_unknown(req, client, ingress)
            };
            tracing::Span::current().record("status", resp.status().as_u16());
            tracing::debug!("done");
            resp
        }
        .instrument(span)
        .await
    }

    /// Route a request that arrived inside an intercepted proxy connection
    /// (or as a plain-HTTP absolute-form request) for `origin`'s host.
    /// LLM API calls go through the full pipeline; anything else (file
    /// uploads, model lists, WebSockets) is forwarded unchanged and audited.
    pub async fn handle_proxied(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
        identity: Identity,
        origin: Arc<Origin>,
    ) -> Response<RespBody> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let span = info_span!("request", id, ingress = "proxy", host = %origin.target().host, method = %req.method(),
            path = %req.uri().path(), team = %identity.team, decision = tracing::field::Empty, status = tracing::field::Empty);
        let this = self.clone();
        async move {
            let resp = if is_websocket_upgrade(req.headers()) {
                this.relay_websocket(req, client, identity, origin).await
            } else if req.body().is_end_stream() {
                // No body, no prompt: model lists, file downloads, deletes.
                this.forward_unchanged(req, client, identity, origin).await
            } else {
                // Everything with a body is inspected: known shapes through
                // their parsers, the rest string by string.
                let fallback = api_family_of_host(&origin.target().host);
                let shape = wire::shapes::shape_of(req.method(), &wire::shapes::normalize_path(req.uri().path()), fallback);
                this.handle_llm(shape, req, client, Via::Proxy { identity, origin }).await
            };
            tracing::Span::current().record("status", resp.status().as_u16());
            tracing::debug!("done");
            resp
        }
        .instrument(span)
        .await
    }

    /// Refuse a proxied request before it reaches the pipeline (wrong host
    /// for the connection, origin unreachable), with an audit record.
    pub fn refuse_proxied(
        &self,
        req: &Request<Incoming>,
        client: SocketAddr,
        identity: &Identity,
        host: &str,
        kind: ErrorKind,
        message: &str,
    ) -> Response<RespBody> {
        let trail = Trail::proxied("proxy", format_of(req.headers()), client, Some(identity), host, "block");
        self.refuse(trail, kind, message)
    }

    /// Audit a refusal at the proxy's door (a CONNECT or absolute-form
    /// request that was never let through); the proxy answers it itself.
    pub fn record_proxy_refusal(&self, client: SocketAddr, identity: Option<&Identity>, host: &str, status: StatusCode, reason: &str) {
        let mut trail = Trail::proxied("proxy.connect", Format::OpenAi, client, identity, host, "block");
        trail.record.reason = reason.to_string();
        trail.record.status = status.as_u16();
        self.record(trail, None);
    }

    pub fn identities(&self) -> &IdentityTable {
        &self.identities
    }

    pub fn cloud(&self) -> &CloudClient {
        &self.cloud
    }

    /// Forward a non-LLM request on an intercepted host unchanged, body
    /// streamed both ways, and record it.
    async fn forward_unchanged(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
        identity: Identity,
        origin: Arc<Origin>,
    ) -> Response<RespBody> {
        let mut trail = Trail::forwarded("passthrough", req.headers(), client, &identity, &origin);
        // The path is the client's text; the record says what happened.
        trail.record.reason = "request without a body; forwarded unchanged".to_string();
        let trail = match self.gate_on_audit(trail) {
            Ok(trail) => trail,
            Err(refused) => return refused,
        };
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        for name in ["proxy-authorization", "proxy-authenticate"] {
            parts.headers.remove(name);
        }
        let upstream = Request::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
        let started = Instant::now();
        let sent = origin.send(upstream).await;
        self.relay_or_refuse(trail, sent, started, "passthrough", "")
    }

    /// Relay a WebSocket upgrade to the origin and then its frames, both
    /// ways; the record is written when the socket closes.
    async fn relay_websocket(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        client: SocketAddr,
        identity: Identity,
        origin: Arc<Origin>,
    ) -> Response<RespBody> {
        let mut trail = Trail::forwarded("websocket", req.headers(), client, &identity, &origin);
        trail.record.decision = "cloud".into();
        if self.policies.team(&identity.team).is_none() {
            let message = format!("team `{}` has no policy; sluice refuses rather than guess", identity.team);
            return self.refuse(trail, ErrorKind::PolicyBlock, &message);
        }
        let trail = match self.gate_on_audit(trail) {
            Ok(trail) => trail,
            Err(refused) => return refused,
        };
        let client_upgrade = hyper::upgrade::on(&mut req);
        let (mut parts, _) = req.into_parts();
        // Compressed messages (permessage-deflate) could not be inspected:
        // without the offer the origin never turns compression on.
        for name in ["proxy-authorization", "proxy-authenticate", "proxy-connection", "keep-alive", "te", "trailer", "transfer-encoding", "sec-websocket-extensions"] {
            parts.headers.remove(name);
        }
        let upstream = Request::from_parts(parts, full_request(Bytes::new()));
        let started = Instant::now();
        let mut resp = match origin.send_upgradable(upstream).await {
            Ok(resp) => resp,
            Err(e) => return self.relay_or_refuse(trail, Err(e), started, "passthrough", ""),
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return self.relay(trail, resp, started, "passthrough", "");
        }
        let origin_upgrade = hyper::upgrade::on(&mut resp);
        let idle = Duration::from_millis(self.config.proxy.idle_timeout_ms);
        let max_message = self.config.gateway.max_body_bytes;
        let this = self.clone();
        tokio::spawn(async move {
            let mut trail = trail;
            trail.record.status = 101;
            match tokio::try_join!(client_upgrade, origin_upgrade) {
                Ok((client_io, origin_io)) => {
                    let mut client_io = TokioIo::new(client_io);
                    let mut origin_io = TokioIo::new(origin_io);
                    let mut seen = MessageVerdicts::default();
                    let relayed = websocket::relay_inspected(&mut client_io, &mut origin_io, idle, max_message, |message| {
                        this.inspect_ws_message(&identity, &trail.record.provider, message, &mut seen)
                    })
                    .await;
                    trail.record.findings = seen.findings;
                    trail.record.attachments = seen.attachments;
                    if !seen.rule.is_empty() {
                        trail.record.rule = seen.rule;
                    }
                    let mut reason = format!(
                        "websocket closed after {} bytes up, {} bytes down, {} messages inspected and forwarded",
                        relayed.up, relayed.down, relayed.messages_up
                    );
                    if let Some(refused) = relayed.refused {
                        trail.record.decision = "block".into();
                        reason = format!("websocket message refused ({refused}); {reason}");
                    }
                    if let Some(e) = relayed.error {
                        reason.push_str(&format!(" ({e})"));
                    }
                    trail.record.reason = reason;
                }
                Err(e) => trail.record.reason = format!("websocket upgrade failed: {e}"),
            }
            this.record(trail, Some(started.elapsed()));
        });
        let (parts, _) = resp.into_parts();
        Response::from_parts(parts, full(Bytes::new()))
    }

    /// Extract a body and scan everything in it: the CPU-heavy part of a
    /// request, run inline or on the inspection pool.
    fn read_and_scan(
        &self,
        shape: Shape,
        path: &str,
        body: &[u8],
        content_type: &str,
        team: &str,
    ) -> Result<(Extracted, Vec<Finding>, String), wire::ParseError> {
        let extracted = wire::shapes::extract(shape, path, body, content_type)?;
        let segments: Vec<&str> = extracted.inventory.texts().collect();
        let mut scanned = self.detectors.scan(self.dictionaries.get(team), &segments);
        scanned.extend(attachment_findings(&extracted.inventory, segments.len()));
        let digest = prompt_digest(&segments);
        Ok((extracted, scanned, digest))
    }

    /// Judge one WebSocket message from the client like a request body:
    /// every string of its JSON (or its text) scanned, the team's policy
    /// deciding. Only `cloud` lets it through: a message cannot be answered
    /// locally or redacted in flight, so those decisions refuse it.
    fn inspect_ws_message(&self, identity: &Identity, provider: &str, message: WsMessage<'_>, seen: &mut MessageVerdicts) -> Verdict {
        let Some(policy) = self.policies.team(&identity.team) else {
            return Verdict::Refuse { close_reason: "team has no policy" };
        };
        let inventory = match message {
            WsMessage::Text(text) => match wire::document::parse_value(text.as_bytes()) {
                Ok(value) => Inventory::of(&value),
                Err(_) => Inventory::of_text(text.as_bytes(), "text/plain"),
            },
            WsMessage::Binary(bytes) => Inventory {
                attachments: vec![wire::document::Attachment {
                    media_type: "application/octet-stream".into(),
                    bytes: bytes.len() as u64,
                    how: "inline",
                    text: None,
                }],
                ..Inventory::default()
            },
        };
        let segments: Vec<&str> = inventory.texts().collect();
        let mut scanned = self.detectors.scan(self.dictionaries.get(&identity.team), &segments);
        scanned.extend(attachment_findings(&inventory, segments.len()));
        let findings = policy.relevant_findings(&scanned);
        for (kind, n) in count_by_kind(&findings) {
            *seen.findings.entry(kind.to_string()).or_insert(0) += n;
        }
        seen.attachments.extend(inventory.attachments.iter().map(AttachmentNote::of));
        let decision = policy.decide(&Signals { findings: &findings, provider, stream: true, ..Signals::default() });
        match decision.action {
            Action::Cloud => Verdict::Forward,
            Action::Block => {
                seen.rule = decision.rule;
                Verdict::Refuse { close_reason: "blocked by sluice policy" }
            }
            Action::Local | Action::Redact => {
                seen.rule = decision.rule;
                Verdict::Refuse { close_reason: "sluice policy keeps this content in-house" }
            }
        }
    }

    /// One request with a body for an LLM API, end to end.
    async fn handle_llm(self: Arc<Self>, shape: Shape, req: Request<Incoming>, client: SocketAddr, via: Via) -> Response<RespBody> {
        let api = shape.api;
        let mut trail = Trail::new(shape.name, api.format(), client, via.ingress());
        let provider = via.provider(api);
        trail.record.provider = provider.clone();
        if let Via::Proxy { origin, .. } = &via {
            trail.record.host = origin.target().host.clone();
        }
        let (parts, body) = req.into_parts();

        // identify
        let identified = match &via {
            Via::Gateway => self.identify(api, &parts.headers),
            // Proxy authentication named the caller; the client's own
            // provider credentials travel on unchanged.
            Via::Proxy { identity, .. } => Ok((identity.clone(), UpstreamAuth::Client)),
        };
        let (identity, auth) = match identified {
            Ok(found) => found,
            Err(message) => return self.refuse(trail, ErrorKind::Authentication, &message),
        };
        trail.record.team = identity.team.clone();
        trail.record.user = identity.user.clone();
        tracing::Span::current().record("team", identity.team.as_str());

        // extract
        if let Err((message, reason)) = check_body_headers(&parts.headers, shape.kind != ShapeKind::Unknown) {
            return self.refuse_as(trail, ErrorKind::UnsupportedMediaType, &message, reason);
        }
        let body = match read_body(body, &parts.headers, &self.config.gateway).await {
            Ok(body) => body,
            Err((kind, message)) => return self.refuse(trail, kind, &message),
        };
        let content_type = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        // Reading and scanning a large body takes milliseconds: off the
        // async workers, through a bounded pool, so a few huge prompts
        // cannot hold up every other connection.
        let inspect_started = Instant::now();
        let read = if InspectPool::should_offload(body.len()) {
            let (this, body, path, team) = (self.clone(), body.clone(), parts.uri.path().to_string(), identity.team.clone());
            match self.pool.run(move || this.read_and_scan(shape, &path, &body, &content_type, &team)).await {
                Ok(read) => read,
                Err(e) => return self.refuse(trail, ErrorKind::Internal, &format!("inspection did not complete ({e}); nothing was forwarded")),
            }
        } else {
            self.read_and_scan(shape, parts.uri.path(), &body, &content_type, &identity.team)
        };
        let (Extracted { mut request, inventory, parsed }, scanned, digest) = match read {
            Ok(read) => read,
            Err(e) => return self.refuse_as(trail, ErrorKind::InvalidRequest, &e.to_string(), &e.audit_reason()),
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

        // inspect: every string of the body, not only what the parser lifted
        let segments: Vec<&str> = inventory.texts().collect();
        // Findings under the team's minimum confidence do not count.
        let findings = policy.relevant_findings(&scanned);
        // Tokenizing costs ~0.3 ms per 1,000 tokens, more than the rest of
        // the request path together, so the loaded model's tokenizer counts
        // only where the exact number can change the outcome: a
        // `prompt_tokens` or cost condition of this team's policy that the
        // count's bounds straddle, or the local route's context check
        // (which counts there). Otherwise the estimate, capped by the bound,
        // decides exactly as the count would.
        let estimate = wire::CanonicalRequest::estimated_prompt_tokens(&request.text_segments());
        let (prompt_tokens, exact_tokens) = if self.local.has_tokenizer() && shape.is_chat() {
            let max_tokens = self.local.max_token_count(&request);
            if policy.needs_exact_tokens(max_tokens) {
                (self.local.count_tokens(&request, estimate), true)
            } else {
                (estimate.min(max_tokens), false)
            }
        } else {
            (estimate, false)
        };
        let task = self.classifier.classify(&request.last_user_text());
        // Digesting the conversation is only worth it when the team keeps
        // conversations sticky and some conversation has been marked.
        let sticky_local = policy.sticky_local()
            && !self.sticky.is_empty()
            && self.sticky.is_sticky(&Conversation::of(&request.identity.team, &request));
        let signals = Signals {
            findings: &findings,
            requested_model: &request.model,
            provider: &provider,
            prompt_tokens,
            prompt_tokens_exact: exact_tokens,
            task: Some(task),
            turns: request.turn_count(),
            tool_steps: request.tool_steps(),
            tools_present: !request.tools.is_empty(),
            stream: request.stream,
            unparsed: !parsed,
            estimated_cost_usd: self.config.estimated_cost_usd(&request.model, prompt_tokens, request.max_tokens),
            local_queue_depth: self.local.queue_depth(),
            sticky_local,
        };
        trail.record.prompt_sha256 = digest;
        trail.record.findings = count_by_kind(&findings)
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        trail.record.attachments = inventory.attachments.iter().map(AttachmentNote::of).collect();
        let inspect_time = inspect_started.elapsed();
        trail.record.latency_us.inspect = micros(inspect_time);
        metrics::histogram!(telemetry::INSPECTION_DURATION).record(inspect_time.as_secs_f64());

        // decide
        let decision = policy.decide(&signals);
        trail.record.signals = Some(signal_summary(&signals, &decision));
        trail.record.decision = decision.action.as_str().to_string();
        trail.record.rule = decision.rule.clone();
        trail.record.reason = decision.reason.clone();
        tracing::Span::current().record("decision", decision.action.as_str());
        // A conversation kept local for what it contains never overflows to
        // the cloud, and its later turns stay local too.
        let sensitive = !findings.is_empty() || decision.sticky;

        // dispatch
        let mut redaction = None;
        let route = match decision.action {
            Action::Block => {
                let message = format!("Blocked by sluice policy rule `{}`: {}", decision.rule, decision.reason);
                return self.refuse(trail, ErrorKind::PolicyBlock, &message);
            }
            Action::Local if !shape.is_chat() => {
                let message = format!(
                    "Policy rule `{}` keeps this request in-house, and the local model cannot answer {} requests; \
                     it was not sent to any cloud provider",
                    decision.rule, shape.name
                );
                return self.refuse(trail, ErrorKind::PolicyBlock, &message);
            }
            Action::Local => {
                if decision.sticky {
                    self.sticky.mark(&Conversation::of(&request.identity.team, &request));
                }
                let prompt_tokens = if exact_tokens { prompt_tokens } else { self.local.count_tokens(&request, prompt_tokens) };
                match self.local_route(&request, policy.local_options(), sensitive, prompt_tokens, &decision.rule).await {
                    Ok(Route::Cloud) => {
                        // Only clean prompts get here; the record says where it really went.
                        trail.record.decision = "cloud".into();
                        trail.record.reason.push_str("; local tier full or prompt too long, sent to cloud by the team's local options");
                        Route::Cloud
                    }
                    Ok(route) => route,
                    Err((kind, message)) => return self.refuse(trail, kind, &message),
                }
            }
            Action::Redact => {
                let planned = Redaction::from_findings(&segments, &policy.findings_to_redact(&decision, &findings));
                if shape.is_chat() && api == Api::GeminiGenerate && request.stream && !planned.is_empty() {
                    // No stream restorer speaks Gemini yet: refuse rather than
                    // show the user placeholders.
                    let message = format!(
                        "Policy rule `{}` redacts this prompt, and sluice cannot restore redacted values in streamed Gemini answers; send it without streaming",
                        decision.rule
                    );
                    return self.refuse(trail, ErrorKind::PolicyBlock, &message);
                }
                trail.record.redacted = planned.counts_by_kind().into_iter().map(|(k, n)| (k.to_string(), n)).collect();
                if !planned.is_empty() {
                    redaction = Some(Arc::new(planned));
                }
                Route::Cloud
            }
            Action::Cloud => Route::Cloud,
        };

        // respond (record happens when the response body is finished)
        match route {
            Route::Local(generation) => {
                // Gemini streams as SSE only with `alt=sse`; otherwise as one JSON array.
                let json_array = api == Api::GeminiGenerate
                    && request.stream
                    && !wire::gemini::is_sse(parts.uri.path_and_query().map_or("", |p| p.as_str()));
                self.respond_local(trail, &request, generation, json_array, &decision.rule).await
            }
            Route::Cloud => {
                let body = match &redaction {
                    None => body,
                    Some(r) => match r.redact_json_body(&body).and_then(|redacted| r.check_gone(&redacted).map(|()| redacted)) {
                        Ok(redacted) => Bytes::from(redacted),
                        // Fail closed: a value that cannot be replaced must not leave.
                        Err(e) => {
                            let message = format!("Policy rule `{}` redacts this prompt, but it could not be redacted: {e}", decision.rule);
                            return self.refuse(trail, ErrorKind::PolicyBlock, &message);
                        }
                    },
                };
                let upstream = match self.upstream_request(api, &via, &parts, body, auth) {
                    Ok(upstream) => upstream,
                    Err(message) => return self.refuse(trail, ErrorKind::Upstream, &message),
                };
                self.forward_to_cloud(trail, shape, &via, upstream, redaction, &decision.rule).await
            }
        }
    }

    /// Where a `local` decision is served: the local tier, or (only for
    /// prompts without findings, and only if the policy allows) the cloud
    /// when the local model is full or the prompt too long for it.
    async fn local_route(
        &self,
        request: &wire::CanonicalRequest,
        options: LocalOptions,
        sensitive: bool,
        prompt_tokens: u64,
        rule: &str,
    ) -> Result<Route, (ErrorKind, String)> {
        // Never falls back to the cloud because the engine is down: the
        // policy said this prompt stays here.
        if let Err(e) = self.local.backend() {
            let message = format!(
                "Policy rule `{rule}` keeps this request on the local model, which is unavailable ({e}); \
                 the request was not sent to any cloud provider"
            );
            return Err((ErrorKind::LocalUnavailable, message));
        }
        if let Some(context) = self.local.prompt_limit().filter(|&c| prompt_tokens >= c) {
            let message = format!(
                "The prompt has {prompt_tokens} tokens; the local model {} takes at most {context}",
                self.local.model_name()
            );
            return match options.too_long {
                TooLong::Cloud if !sensitive => Ok(Route::Cloud),
                TooLong::Cloud => Err((
                    ErrorKind::TooLarge,
                    format!("{message}, and the prompt has sensitive findings, so it cannot go to the cloud"),
                )),
                TooLong::Block => Err((ErrorKind::PolicyBlock, format!("{message}; policy blocks prompts that are too long"))),
                TooLong::Reject => Err((ErrorKind::TooLarge, message)),
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
                return Err((ErrorKind::RateLimited, message));
            }
        };
        match self.local.generate(request, admitted, prompt_tokens).await {
            Ok(generation) => Ok(Route::Local(generation)),
            Err(e) => Err((ErrorKind::LocalUnavailable, format!("Local generation could not start: {e}"))),
        }
    }

    /// Answer from the local tier in the client's format, streamed or whole.
    async fn respond_local(
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
            let mut encoder = SseEncoder::new(trail.format, meta, request.stream_usage);
            let opening = encoder.start(generation.prompt_tokens);
            let body = LocalBody {
                generation,
                encoder,
                pending: Some(opening),
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
                    return self.refuse(trail, ErrorKind::LocalUnavailable, &e.to_string());
                }
                None => {
                    trail.record.latency_us.upstream = micros(generation_started.elapsed());
                    return self.refuse(trail, ErrorKind::LocalUnavailable, "Local generation ended without an answer");
                }
            }
        };
        stats.finish(finish.usage.completion_tokens);
        trail.record.latency_us.upstream = micros(generation_started.elapsed());
        let body = if json_array {
            wire::gemini::render_stream_array(&meta, &answer, finish)
        } else {
            response::render_whole(trail.format, &meta, &answer, finish)
        };
        let mut resp = self.answer(trail, StatusCode::OK, body);
        set_route_headers(resp.headers_mut(), "local", rule);
        resp
    }

    /// Forward the original request to its cloud provider and relay the answer.
    async fn forward_to_cloud(
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
            // Only the chat dialects have a stream restorer; other answers
            // are restored whole.
            (redaction, if shape.is_chat() { stream_format(shape.api) } else { None })
        });
        let upstream_started = Instant::now();
        let sent = match via {
            Via::Gateway => self.cloud.send(upstream).await,
            Via::Proxy { origin, .. } => origin.send(upstream.map(|b| b.map_err(|never| match never {}).boxed_unsync())).await,
        };
        match sent {
            Ok(resp) => {
                let route = if restore.is_some() { "redact" } else { "cloud" };
                self.relay_restoring(trail, resp, upstream_started, route, rule, restore)
            }
            Err(e) => self.relay_or_refuse(trail, Err(e), upstream_started, "cloud", rule),
        }
    }

    /// Fail closed: nothing leaves unless its record can be written.
    #[allow(clippy::result_large_err)]
    fn gate_on_audit(&self, trail: Trail) -> Result<Trail, Response<RespBody>> {
        match self.audit.check_writable() {
            Ok(()) => Ok(trail),
            Err(e) => {
                tracing::error!(error = %e, "audit log not writable; refusing to forward");
                let message = "sluice cannot write its audit log, so the request was not forwarded";
                Err(self.refuse(trail, ErrorKind::LocalUnavailable, message))
            }
        }
    }

    /// Relay an upstream answer, or refuse with the upstream's failure.
    fn relay_or_refuse(
        self: &Arc<Self>,
        mut trail: Trail,
        sent: Result<Response<Incoming>, CloudError>,
        upstream_started: Instant,
        route: &'static str,
        rule: &str,
    ) -> Response<RespBody> {
        match sent {
            Ok(resp) => self.relay(trail, resp, upstream_started, route, rule),
            Err(e) => {
                let provider = trail.record.provider.clone();
                metrics::counter!(telemetry::UPSTREAM_ERRORS, "provider" => provider.clone(), "kind" => e.kind()).increment(1);
                trail.record.latency_us.upstream = micros(upstream_started.elapsed());
                let kind = match e {
                    CloudError::Timeout(_) => ErrorKind::UpstreamTimeout,
                    _ => ErrorKind::Upstream,
                };
                let message = format!("{provider} upstream failed: {e}");
                self.refuse(trail, kind, &message)
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
            Api::OpenAiChat | Api::OpenAiResponses => &self.openai,
            Api::AnthropicMessages => &self.anthropic,
            Api::GeminiGenerate => &self.gemini,
        }
    }

    /// The original request, re-addressed to the provider with the right key.
    fn upstream_request(
        &self,
        api: Api,
        via: &Via,
        parts: &http::request::Parts,
        body: Bytes,
        auth: UpstreamAuth,
    ) -> Result<Request<Full<Bytes>>, String> {
        let provider = self.provider(api);
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let uri = match via {
            Via::Gateway => format!("{}{}", provider.config.base_url.trim_end_matches('/'), path),
            // The origin connection addresses it (origin form or h2 authority).
            Via::Proxy { .. } => path.to_string(),
        };
        let mut builder = Request::builder().method(parts.method.clone()).uri(uri);
        let headers = builder.headers_mut().ok_or("cannot build upstream request")?;
        for (name, value) in &parts.headers {
            if forwardable(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        match auth {
            UpstreamAuth::Client => {
                for name in [http::header::AUTHORIZATION, HeaderName::from_static("x-api-key"), HeaderName::from_static("x-goog-api-key")] {
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
                    Api::OpenAiChat | Api::OpenAiResponses => {
                        headers.insert(http::header::AUTHORIZATION, value(format!("Bearer {key}"))?)
                    }
                    Api::AnthropicMessages => headers.insert("x-api-key", value(key.to_string())?),
                    Api::GeminiGenerate => headers.insert("x-goog-api-key", value(key.to_string())?),
                };
            }
        }
        builder.body(Full::new(body)).map_err(|e| format!("cannot build upstream request: {e}"))
    }

    /// Stream the provider's response back, recording when it ends.
    fn relay(
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
    fn relay_restoring(
        self: &Arc<Self>,
        mut trail: Trail,
        resp: Response<Incoming>,
        upstream_started: Instant,
        route: &'static str,
        rule: &str,
        restore: Option<(Arc<Redaction>, Option<StreamFormat>)>,
    ) -> Response<RespBody> {
        let (mut parts, body) = resp.into_parts();
        trail.record.status = parts.status.as_u16();
        trail.record.model_used = trail.record.model_requested.clone();
        if !parts.status.is_success() {
            metrics::counter!(telemetry::UPSTREAM_ERRORS, "provider" => trail.record.provider.clone(), "kind" => "status")
                .increment(1);
        }
        strip_hop_by_hop(&mut parts.headers);
        set_route_headers(&mut parts.headers, route, rule);
        let idle_timeout = Duration::from_millis(self.config.upstream.idle_timeout_ms);
        let restore = restore.map(|(redaction, format)| {
            parts.headers.remove(http::header::CONTENT_LENGTH);
            let is_sse = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            match format {
                Some(format) if is_sse => Restore::Stream(redaction.sse_restorer(format)),
                _ => Restore::Whole { redaction, buffered: Vec::new() },
            }
        });
        let body = RelayBody {
            inner: body,
            restore,
            finished: false,
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
        if self.local.backend().is_ok() {
            models.push((self.local.model_name(), "sluice-local"));
        }
        self.answer(trail, StatusCode::OK, wire::models_body(format, &models))
    }

    fn handle_unknown(&self, req: Request<Incoming>, client: SocketAddr, ingress: Ingress) -> Response<RespBody> {
        let format = format_of(req.headers());
        let trail = Trail::new("unknown", format, client, ingress);
        let message = format!("sluice does not serve {} {}", req.method(), req.uri().path());
        self.refuse_as(trail, ErrorKind::NotFound, &message, "no such endpoint")
    }

    /// [`Self::refuse`] where the client's message quotes the client's own
    /// text (a path, a header, a field value): the record gets `reason`.
    fn refuse_as(&self, trail: Trail, kind: ErrorKind, message: &str, reason: &str) -> Response<RespBody> {
        let format = trail.format;
        let mut resp = self.refuse(trail, kind, reason);
        *resp.body_mut() = full(wire::error_body(format, kind, message));
        resp
    }

    /// Answer with an error in the client's wire format, and record it.
    fn refuse(&self, mut trail: Trail, kind: ErrorKind, message: &str) -> Response<RespBody> {
        if trail.record.decision.is_empty() {
            trail.record.decision = "error".into();
        }
        // The reason names what went wrong, never the prompt. A policy's own
        // reason is kept and the outcome appended to it.
        trail.record.reason = if trail.record.reason.is_empty() {
            format!("{}: {}", kind.code(), message)
        } else if kind == ErrorKind::PolicyBlock {
            format!("{}; {}", trail.record.reason, kind.code())
        } else {
            format!("{}; {}: {}", trail.record.reason, kind.code(), message)
        };
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
    /// A proxied request forwarded without inspection (not an LLM call).
    fn forwarded(api: &str, headers: &HeaderMap, client: SocketAddr, identity: &Identity, origin: &Origin) -> Trail {
        Trail::proxied(api, format_of(headers), client, Some(identity), &origin.target().host, "forward")
    }

    /// A request at the forward proxy, for `host`, already decided.
    fn proxied(api: &str, format: Format, client: SocketAddr, identity: Option<&Identity>, host: &str, decision: &str) -> Trail {
        let mut trail = Trail::new(api, format, client, Ingress::Proxy);
        if let Some(identity) = identity {
            trail.record.team = identity.team.clone();
            trail.record.user = identity.user.clone();
        }
        trail.record.host = host.to_string();
        trail.record.provider = provider_of_host(host).to_string();
        trail.record.decision = decision.to_string();
        trail
    }

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

/// What the messages of one WebSocket carried, for its record.
#[derive(Default)]
struct MessageVerdicts {
    findings: std::collections::BTreeMap<String, u32>,
    attachments: Vec<AttachmentNote>,
    /// The rule that refused a message, if one did.
    rule: String,
}

/// The API family of an intercepted host, for the error format of shapes
/// sluice does not know there.
fn api_family_of_host(host: &str) -> Api {
    match provider_of_host(host) {
        "anthropic" | "bedrock" => Api::AnthropicMessages,
        "gemini" => Api::GeminiGenerate,
        _ => Api::OpenAiChat,
    }
}

/// An `attachment` finding per attachment of the body, so `attachments:`
/// conditions fire. They point past the scanned segments: there is no
/// text of theirs to redact.
fn attachment_findings(inventory: &Inventory, first_segment: usize) -> impl Iterator<Item = Finding> + '_ {
    inventory.attachments.iter().enumerate().map(move |(i, a)| Finding {
        category: Category::Attachment,
        kind: ATTACHMENT_KIND,
        segment: first_segment + i,
        span: 0..0,
        confidence: 1.0,
        validator: media_class(&a.media_type),
    })
}

fn media_class(media_type: &str) -> &'static str {
    match media_type.split('/').next().unwrap_or("") {
        "image" => "image",
        "audio" => "audio",
        "video" => "video",
        "text" => "text",
        _ if media_type == "application/pdf" => "document",
        _ => "file",
    }
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn full_request(bytes: Bytes) -> OriginBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// Anthropic clients send `anthropic-version`; everyone else gets OpenAI's shape.
fn format_of(headers: &HeaderMap) -> Format {
    if headers.contains_key("anthropic-version") {
        Format::Anthropic
    } else {
        Format::OpenAi
    }
}

/// A body sluice can read: not compressed (compressed bytes would pass the
/// detectors unread), and JSON where the shape is a JSON API. The audit
/// reason names the problem without the client's header value.
fn check_body_headers(headers: &HeaderMap, json_shape: bool) -> Result<(), (String, &'static str)> {
    for value in headers.get_all(http::header::CONTENT_ENCODING) {
        let value = value.to_str().unwrap_or("?");
        if value.split(',').any(|c| !c.trim().is_empty() && !c.trim().eq_ignore_ascii_case("identity")) {
            return Err((
                format!("Content-Encoding `{value}` is not accepted: sluice inspects request bodies and forwards only what it read; send the body uncompressed"),
                "compressed request body refused",
            ));
        }
    }
    let Some(value) = headers.get(http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    if !json_shape {
        return Ok(());
    }
    let value = value.to_str().unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") || essence.to_ascii_lowercase().ends_with("+json") {
        Ok(())
    } else {
        Err((format!("Content-Type must be application/json, not `{value}`"), "Content-Type is not JSON"))
    }
}

/// Read the whole request body, up to `gateway.max_body_bytes`.
///
/// A client that trickles its body would otherwise hold the request, its
/// connection slot and the buffer for as long as it likes, so the body must
/// keep coming (`body_frame_timeout_ms` of silence at most) and be complete
/// within `body_timeout_ms`; too slow is 408.
///
/// An oversized body is still read (and thrown away) for a short while
/// before the 413 goes out, like nginx's lingering close: a client that is
/// still writing when the server closes gets a broken pipe instead of the
/// answer. The drain is bounded in bytes and time so it cannot be abused.
async fn read_body(
    mut body: Incoming,
    headers: &HeaderMap,
    gateway: &crate::config::GatewayConfig,
) -> Result<Bytes, (ErrorKind, String)> {
    let limit = gateway.max_body_bytes;
    let too_large = || (ErrorKind::TooLarge, format!("request body exceeds the limit of {limit} bytes"));
    let frame_timeout = Duration::from_millis(gateway.body_frame_timeout_ms);
    let body_deadline = tokio::time::Instant::now() + Duration::from_millis(gateway.body_timeout_ms);
    let too_slow = |stalled: bool| {
        let message = if stalled {
            format!("request body stalled for more than {} ms", gateway.body_frame_timeout_ms)
        } else {
            format!("request body took longer than {} ms to arrive", gateway.body_timeout_ms)
        };
        (ErrorKind::RequestTimeout, message)
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A declared length is only a claim: reserving all of it up front would
    // let slow clients pin the whole limit each before sending anything.
    const RESERVE_AT_MOST: u64 = 1024 * 1024;
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(limit as u64).min(RESERVE_AT_MOST) as usize);
    let mut over = declared.is_some_and(|n| n > limit as u64);
    let drain_until = tokio::time::Instant::now() + DRAIN_TIME;
    let mut drained: u64 = 0;
    loop {
        let frame = if over {
            match tokio::time::timeout_at(drain_until, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => return Err(too_large()),
            }
        } else {
            let stall_deadline = tokio::time::Instant::now() + frame_timeout;
            match tokio::time::timeout_at(stall_deadline.min(body_deadline), body.frame()).await {
                Ok(frame) => frame,
                Err(_) => return Err(too_slow(stall_deadline <= body_deadline)),
            }
        };
        let frame = match frame {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Err((ErrorKind::InvalidRequest, format!("cannot read request body: {e}"))),
        };
        let Ok(data) = frame.into_data() else { continue };
        if over {
            drained += data.len() as u64;
            if drained > DRAIN_BYTES {
                return Err(too_large());
            }
            continue;
        }
        if buf.len() + data.len() > limit {
            over = true;
            buf.clear();
            continue;
        }
        buf.extend_from_slice(&data);
    }
    if over {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

/// Bounds on reading an oversized body before answering 413.
const DRAIN_TIME: Duration = Duration::from_secs(2);
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;

/// Headers that describe one hop, or carry credentials meant for sluice.
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host" | "authorization" | "x-api-key" | "x-goog-api-key" | "x-sluice-token" | "content-length" | "connection" | "keep-alive"
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
    /// Placeholders to turn back into values on the way to the client.
    restore: Option<Restore>,
    /// The last frame (restored text) has gone out.
    finished: bool,
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
        if this.finished {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let deadline = tokio::time::Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(deadline);
                    let Some(restore) = this.restore.as_mut() else {
                        return Poll::Ready(Some(Ok(frame)));
                    };
                    let Some(data) = frame.data_ref() else {
                        return Poll::Ready(Some(Ok(frame)));
                    };
                    match restore {
                        Restore::Stream(restorer) => {
                            let out = restorer.push(data);
                            // Held back as a possible placeholder prefix: read on.
                            if !out.is_empty() {
                                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                            }
                        }
                        Restore::Whole { buffered, .. } => buffered.extend_from_slice(data),
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.complete(Some("upstream body failed mid-stream"));
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    this.complete(None);
                    let last = match this.restore.take() {
                        None => Vec::new(),
                        Some(Restore::Stream(mut restorer)) => restorer.finish(),
                        // Not JSON (an HTML error page, say): it cannot hold
                        // a placeholder the client would misread; pass it on.
                        Some(Restore::Whole { redaction, buffered }) => {
                            redaction.restore_json_body(&buffered).unwrap_or(buffered)
                        }
                    };
                    if last.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(last)))));
                }
                Poll::Pending => {
                    if this.idle.as_mut().poll(cx).is_ready() {
                        this.complete(Some("upstream went idle mid-stream"));
                        let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream idle timeout");
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || (self.restore.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.restore.is_some() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

/// How a redacted request's answer is restored.
enum Restore {
    Stream(SseRestorer),
    Whole { redaction: Arc<Redaction>, buffered: Vec<u8> },
}

/// The SSE dialect of an API's streamed answers, for restoring placeholders.
fn stream_format(api: Api) -> Option<StreamFormat> {
    match api {
        Api::OpenAiChat => Some(StreamFormat::OpenAiChat),
        Api::AnthropicMessages => Some(StreamFormat::AnthropicMessages),
        Api::OpenAiResponses => Some(StreamFormat::OpenAiResponses),
        Api::GeminiGenerate => None,
    }
}

/// The signals behind a decision, for the audit record: numbers and class
/// names, never text.
pub fn signal_summary(signals: &Signals, decision: &crate::policy::Decision) -> serde_json::Value {
    let mut summary = serde_json::to_value(signals.summary()).unwrap_or_default();
    if let Some(map) = summary.as_object_mut() {
        map.insert("because".into(), serde_json::json!(decision.because));
    }
    summary
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

/// Local decode statistics, reported as metrics when a generation ends.
struct GenStats {
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
struct LocalBody {
    generation: Generation,
    encoder: SseEncoder,
    pending: Option<Bytes>,
    done: bool,
    stats: GenStats,
    completion: Option<Completion>,
}

impl LocalBody {
    fn end(&mut self, problem: Option<&str>) {
        self.done = true;
        if let Some(c) = self.completion.take() {
            c.finish(problem);
        }
    }
}

impl Body for LocalBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
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
                this.encoder.delta(&delta)
            }
            Poll::Ready(Some(Ok(GenEvent::Finish(finish)))) => {
                this.stats.finish(finish.usage.completion_tokens);
                let bytes = this.encoder.finish(finish);
                this.end(None);
                bytes
            }
            Poll::Ready(Some(Err(e))) => {
                let message = format!("local generation failed: {e}");
                let bytes = this.encoder.error(&message);
                this.end(Some(&message));
                bytes
            }
            Poll::Ready(None) => {
                let bytes = this.encoder.error("local generation ended without finishing");
                this.end(Some("local generation ended without finishing"));
                bytes
            }
        };
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none()
    }
}

impl Drop for LocalBody {
    fn drop(&mut self) {
        if !self.done {
            self.end(Some("client disconnected; local generation cancelled"));
        }
    }
}

impl Sluice {
    /// Audit one CONNECT that was answered 200, when it ends: the CONNECT
    /// host in `host`, the provider of the host the traffic was really for
    /// (the SNI when there was one), and the tunnel's facts (SNI, bytes,
    /// duration, outcome) in `signals`. Refusals at the door are recorded
    /// by [`Sluice::record_proxy_refusal`] instead, so every CONNECT has
    /// exactly one `proxy.connect` record.
    pub fn record_tunnel(&self, client: SocketAddr, identity: &Identity, tunnel: &crate::ingress::tunnel::TunnelReport) {
        let decision = tunnel.outcome.decision();
        let mut trail = Trail::proxied("proxy.connect", Format::OpenAi, client, Some(identity), &tunnel.connect_host, decision);
        trail.record.provider = provider_of_host(tunnel.target_host()).to_string();
        trail.record.status = StatusCode::OK.as_u16();
        trail.record.reason = tunnel.reason();
        trail.record.signals = Some(tunnel.signals());
        // The trail is made at the end of the tunnel; its total is the
        // tunnel's life from the CONNECT on.
        trail.started = Instant::now().checked_sub(tunnel.duration).unwrap_or(trail.started);
        self.record(trail, None);
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
        assert!(check_body_headers(&h, true).is_ok());
        h.insert("content-type", "application/json; charset=utf-8".parse().unwrap());
        assert!(check_body_headers(&h, true).is_ok());
        h.insert("content-type", "text/plain".parse().unwrap());
        let (message, reason) = check_body_headers(&h, true).unwrap_err();
        assert!(message.contains("text/plain") && !reason.contains("text/plain"));
        // Unknown shapes may carry any content type, never a compressed one.
        assert!(check_body_headers(&h, false).is_ok());
        h.insert("content-encoding", "gzip".parse().unwrap());
        assert!(check_body_headers(&h, false).is_err());
        h.insert("content-encoding", "identity".parse().unwrap());
        assert!(check_body_headers(&h, false).is_ok());
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
