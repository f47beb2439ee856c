//! The pipeline's side of what the forward proxy relays besides LLM
//! requests: the records of relayed requests (bodiless requests, WebSockets)
//! and the judgement of each WebSocket message, the records of CONNECT
//! tunnels and of refusals at the proxy's door. The relaying itself (the
//! upgrade, the bytes) is the proxy's (`ingress::proxy::passthrough`).
//!
//! # Durability of connection records
//!
//! Refusals at the door and relayed answers are answers like any other:
//! with `audit.durability: strict` they are held until their record is
//! durable (see `held`). A WebSocket or a CONNECT tunnel is recorded once,
//! when it closes, because only then are its bytes, messages and outcome
//! known; by then the client has had everything the connection carried, so
//! there is nothing left to hold back. For those the guarantee is that the
//! record is in the next group commit after the close: a crash in that
//! window (one fsync) can lose the record of a connection that just ended.
//! The requests inside an intercepted tunnel are ordinary answered requests
//! and fully covered; a tunnel's bytes were never inspected.

use super::trail::count_monitor_matches;
use super::*;
use crate::audit::{AiUsage, ModelDownload, MonitorNote};
use crate::policy::{AiApps, Enforcement, PersonalAccounts};
use crate::relay::tunnel::{Outcome as TunnelOutcome, TunnelReport};
use crate::shadow::monitor::model_download;
use crate::shadow::{Catalog, Category, Entry};

/// The app of model weights fetched from a host the catalog does not know.
const UNLISTED_MODEL_HOST: &str = "unlisted-model-host";

impl Sluice {
    /// Refuse a proxied request before it reaches the pipeline (wrong host
    /// for the connection, origin unreachable), with an audit record.
    #[allow(clippy::too_many_arguments)]
    pub fn refuse_proxied(
        &self,
        req: &Request<Incoming>,
        client: SocketAddr,
        identity: &Identity,
        host: &str,
        kind: ErrorKind,
        message: &str,
        request_id: &RequestId,
    ) -> Response<RespBody> {
        let trail =
            Trail::proxied("proxy", dialect_of(req.headers()), client, Some(identity), host, "block", request_id);
        // A misdirected request's message quotes the client's Host header.
        match kind {
            ErrorKind::Misdirected => {
                self.refuse(trail, Refusal::quoting(kind, message, "request names a host other than the connection's"))
            }
            _ => self.refuse(trail, Refusal::new(kind, message)),
        }
    }

    /// Audit a refusal at the proxy's door (a CONNECT or absolute-form
    /// request that was never let through); the proxy answers it itself,
    /// holding the answer on the ticket ([`held_body`]).
    pub fn record_proxy_refusal(
        &self,
        client: SocketAddr,
        identity: Option<&Identity>,
        host: &str,
        status: StatusCode,
        reason: &str,
        request_id: &RequestId,
    ) -> Durable {
        let mut trail =
            Trail::proxied("proxy.connect", Dialect::OpenAiChat, client, identity, host, "block", request_id);
        trail.record.reason = reason.to_string();
        trail.record.status = status.as_u16();
        self.record(trail, None)
    }

    /// Open the record of a request the proxy relays outside the LLM
    /// path (`api` is `passthrough` or `websocket`). It is answered here
    /// instead when the audit log cannot take its record, or when a
    /// WebSocket's team has no policy to judge its messages by.
    #[allow(clippy::result_large_err)]
    pub fn begin_relayed(
        &self,
        api: &'static str,
        req: &Request<Incoming>,
        client: SocketAddr,
        identity: &Identity,
        origin: &Origin,
        request_id: &RequestId,
    ) -> Result<Relayed, Response<RespBody>> {
        let mut trail = Trail::forwarded(api, req.headers(), client, identity, origin, request_id);
        if let Err(refusal) = self.attribute_relayed(req, identity, origin, &mut trail) {
            return Err(self.refuse(trail, refusal));
        }
        if api == "websocket" {
            trail.record.decision = "cloud".into();
            if self.policies.current().team(&identity.team).is_none() {
                let message = format!("team `{}` has no policy; sluice refuses rather than guess", identity.team);
                return Err(self.refuse(trail, Refusal::new(ErrorKind::PolicyBlock, message)));
            }
        } else {
            // The path is the client's text; the record says what happened.
            trail.record.reason = "request without a body; forwarded unchanged".to_string();
        }
        let trail = self.gate_on_audit(trail)?;
        Ok(Relayed { trail, started: Instant::now() })
    }

    /// For the shadow-AI monitor: a catalogued app's relayed requests, the
    /// model weights a download fetches (its size comes with the answer),
    /// and model lists from unlisted hosts (a self-hosted server may name
    /// itself in the answer).
    fn attribute_relayed(
        &self,
        req: &Request<Incoming>,
        identity: &Identity,
        origin: &Origin,
        trail: &mut Trail,
    ) -> Result<(), Refusal> {
        let host = &origin.target().host;
        let path = req.uri().path();
        let policies = self.policies.current();
        let entry = self.app_of(&policies, &identity.team, host);
        let hub = entry.map_or(host.as_str(), |e| e.id.as_str());
        let download = (self.monitor.enabled() && req.method() == http::Method::GET)
            .then(|| model_download(hub, path, 0))
            .flatten();
        if entry.is_some() || download.is_some() {
            let mut ai = self.monitor.usage(entry, true);
            if entry.is_none() {
                // Weights from a host the catalog does not know.
                ai.app = UNLISTED_MODEL_HOST.to_string();
                ai.category = "model_hub".to_string();
            }
            ai.download = download;
            ai.account = self.monitor.account_of_request(req.headers());
            let refused = self.judge_app(&policies, &identity.team, &mut ai);
            trail.record.ai = Some(ai);
            if let Some(refusal) = refused {
                return Err(refusal);
            }
        } else {
            let path = path.trim_end_matches('/');
            trail.sniff_models =
                self.monitor.enabled() && (path.ends_with("/v1/models") || path.ends_with("/api/tags"));
        }
        Ok(())
    }

    /// The team's verdict on an AI app, written into `ai`: sanctioned, or
    /// what the policy does about it; a refusal for `block` and `coach`,
    /// and for a key already seen on a personal account where the team
    /// blocks those.
    pub(super) fn judge_app(&self, policies: &Policies, team: &str, ai: &mut AiUsage) -> Option<Refusal> {
        let Some(policy) = policies.team(team) else {
            // A team without a policy is refused later, by the pipeline.
            return None;
        };
        let apps = policy.ai_apps();
        let verdict = apps.verdict(&ai.app);
        ai.sanctioned = verdict.is_none();
        ai.enforced = verdict.map(|v| v.as_str().to_string()).unwrap_or_default();
        let catalog = policy.app_catalog().unwrap_or(policies.catalog());
        if let Some(message) = verdict.and_then(|v| app_refusal_message(catalog, apps, &ai.app, v)) {
            return Some(Refusal::new(ErrorKind::PolicyBlock, message));
        }
        let personal = ai.account.as_ref().is_some_and(|a| self.monitor.is_personal_key(&a.key_fingerprint));
        (personal && apps.personal_accounts == PersonalAccounts::Block).then(|| {
            Refusal::new(
                ErrorKind::PolicyBlock,
                "sluice policy: this API key belongs to an account outside the company; use a company key",
            )
        })
    }

    /// The AI app at `host` for `team`: the team's own catalog, else the
    /// organisation's.
    pub(super) fn app_of<'a>(&self, policies: &'a Policies, team: &str, host: &str) -> Option<&'a Entry> {
        let catalog = policies.team(team).and_then(|p| p.app_catalog()).unwrap_or(policies.catalog());
        self.monitor.app_of_host(catalog, host)
    }

    /// Whether the caller's team refuses the AI app at `host`: the message
    /// saying why. The tunnel's own record notes the refusal.
    pub fn app_refusal(&self, identity: &Identity, host: &str) -> Option<String> {
        let policies = self.policies.current();
        self.judge_host(&policies, identity, host).map(|(_, _, refusal)| refusal.message)
    }

    /// The app at `host`, its usage event for a tunnel, and the team's
    /// refusal of it, when the team refuses it.
    fn judge_host<'a>(
        &self,
        policies: &'a Policies,
        identity: &Identity,
        host: &str,
    ) -> Option<(&'a Entry, AiUsage, Refusal)> {
        let entry = self.app_of(policies, &identity.team, host)?;
        let mut ai = self.monitor.usage(Some(entry), false);
        let refusal = self.judge_app(policies, &identity.team, &mut ai)?;
        Some((entry, ai, refusal))
    }

    /// A CONNECT to an AI app the caller's team refuses: the message to
    /// answer with, and the refusal recorded with its usage event (the
    /// answer waits for the ticket). `None` lets it through.
    pub fn refuse_app_at_door(
        &self,
        client: SocketAddr,
        identity: &Identity,
        host: &str,
        request_id: &RequestId,
    ) -> Option<(String, Durable)> {
        let policies = self.policies.current();
        let (entry, ai, refusal) = self.judge_host(&policies, identity, host)?;
        let mut trail =
            Trail::proxied("proxy.connect", Dialect::OpenAiChat, client, Some(identity), host, "block", request_id);
        trail.record.reason = format!("{} is not sanctioned for team {} ({})", entry.id, identity.team, ai.enforced);
        trail.record.status = StatusCode::FORBIDDEN.as_u16();
        trail.record.ai = Some(ai);
        let durable = self.record(trail, None);
        Some((refusal.message, durable))
    }

    /// Relay the origin's answer to a relayed request, or refuse with its
    /// failure; the record is written when the answer ends.
    pub fn relay_answer(
        self: &Arc<Self>,
        relayed: Relayed,
        sent: Result<Response<Incoming>, UpstreamError>,
    ) -> Response<RespBody> {
        self.relay_or_refuse(relayed.trail, sent, relayed.started, "passthrough", "")
    }

    /// Record a WebSocket once it has closed (or its upgrade failed).
    pub fn finish_websocket(&self, relayed: Relayed, seen: MessageVerdicts, ended: Result<WsRelayed, hyper::Error>) {
        let Relayed { mut trail, started } = relayed;
        trail.record.status = 101;
        match ended {
            Ok(relayed) => {
                trail.record.findings = seen.findings;
                trail.record.attachments = seen.attachments;
                trail.record.monitor = seen.monitor;
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
        // The socket is closed: nothing is left to hold (see the module docs).
        drop(self.record(trail, Some(started.elapsed())));
    }

    /// Judge one WebSocket message from the client like a request body:
    /// every string of its JSON (or its text) scanned, the team's policy
    /// deciding. Only `cloud` lets it through: a message cannot be answered
    /// locally or redacted in flight, so those decisions refuse it.
    pub fn judge_ws_message(
        &self,
        identity: &Identity,
        relayed: &Relayed,
        message: WsMessage<'_>,
        seen: &mut MessageVerdicts,
    ) -> Verdict {
        let provider = relayed.trail.record.provider.as_str();
        // Each message is judged under the policies current when it arrives.
        let policies = self.policies.current();
        let Some(policy) = policies.team(&identity.team) else {
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
        let (scanned, _) = scan_inventory(&self.detectors, policies.dictionary(&identity.team), &inventory, None);
        let findings = policy.relevant_findings(&scanned);
        for (kind, n) in count_by_kind(&findings) {
            *seen.findings.entry(kind.to_string()).or_insert(0) += n;
        }
        seen.attachments.extend(inventory.attachments.iter().map(AttachmentNote::of));
        let decision = policy.decide(&Signals { findings: &findings, provider, stream: true, ..Signals::default() });
        count_monitor_matches(&identity.team, &decision);
        for m in &decision.monitor {
            if !seen.monitor.iter().any(|n| n.rule == m.rule) {
                seen.monitor.push(MonitorNote { rule: m.rule.clone(), action: m.action.as_str().to_string() });
            }
        }
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
}

/// The open record of a request the proxy relays outside the LLM path.
pub struct Relayed {
    trail: Trail,
    started: Instant,
}

/// What the messages of one WebSocket carried, for its record.
#[derive(Default)]
pub struct MessageVerdicts {
    findings: std::collections::BTreeMap<String, u32>,
    attachments: Vec<AttachmentNote>,
    /// The rule that refused a message, if one did.
    rule: String,
    /// Monitor-mode rules that matched some message, once each.
    monitor: Vec<MonitorNote>,
}

impl Sluice {
    /// Audit one CONNECT that was answered 200, when it ends: the CONNECT
    /// host in `host`, the provider of the host the traffic was really for
    /// (the SNI when there was one), and the tunnel's facts (SNI, bytes,
    /// duration, outcome) in `signals`. Refusals at the door are recorded
    /// by [`Sluice::record_proxy_refusal`] instead, so every CONNECT has
    /// exactly one `proxy.connect` record.
    pub fn record_tunnel(
        &self,
        client: SocketAddr,
        identity: &Identity,
        tunnel: &TunnelReport,
        request_id: &RequestId,
    ) {
        let policies = self.policies.current();
        let entry = self.app_of(&policies, &identity.team, tunnel.target_host());
        let plain = matches!(tunnel.outcome, TunnelOutcome::Tunneled);
        count_traffic(entry, tunnel);
        if entry.is_none() && plain && !self.monitor.records_other_tunnels() {
            // Traffic outside the catalog is counted, not recorded one by one.
            return;
        }
        let decision = tunnel.outcome.decision();
        let mut trail = Trail::proxied(
            "proxy.connect",
            Dialect::OpenAiChat,
            client,
            Some(identity),
            &tunnel.connect_host,
            decision,
            request_id,
        );
        trail.record.provider = provider_of_host(tunnel.target_host()).to_string();
        trail.record.status = StatusCode::OK.as_u16();
        trail.record.reason = tunnel.reason();
        trail.record.signals = Some(tunnel.signals());
        if let Some(entry) = entry {
            let mut ai = self.monitor.usage(Some(entry), matches!(tunnel.outcome, TunnelOutcome::Intercepted { .. }));
            // Refusals happened at the door; this notes the verdict.
            let _ = self.judge_app(&policies, &identity.team, &mut ai);
            ai.bytes_up = tunnel.up;
            ai.bytes_down = tunnel.down;
            ai.duration_ms = u64::try_from(tunnel.duration.as_millis()).unwrap_or(u64::MAX);
            if entry.category == Category::ModelHub && plain {
                // Only the host and the size are visible in a tunnel.
                ai.download =
                    Some(ModelDownload { hub: entry.id.clone(), bytes: tunnel.down, ..ModelDownload::default() });
            }
            trail.record.ai = Some(ai);
        }
        // The trail is made at the end of the tunnel; its total is the
        // tunnel's life from the CONNECT on.
        trail.started = Instant::now().checked_sub(tunnel.duration).unwrap_or(trail.started);
        // The tunnel is closed: nothing is left to hold (see the module docs).
        drop(self.record(trail, None));
    }
}

/// Proxied traffic by kind (an AI app from the catalog, or other), in
/// connections and bytes: bounded labels, the app only from the catalog.
fn count_traffic(entry: Option<&Entry>, tunnel: &TunnelReport) {
    let app = entry.map_or("other".to_string(), |e| e.id.clone());
    let category = entry.map_or("none", |e| e.category.as_str());
    metrics::counter!(telemetry::PROXY_TRAFFIC_CONNECTIONS, "app" => app.clone(), "category" => category).increment(1);
    metrics::counter!(telemetry::PROXY_TRAFFIC_BYTES, "app" => app.clone(), "category" => category, "direction" => "up")
        .increment(tunnel.up);
    metrics::counter!(telemetry::PROXY_TRAFFIC_BYTES, "app" => app, "category" => category, "direction" => "down")
        .increment(tunnel.down);
}

/// What a refused app's user reads: `block` says no, `coach` names the
/// sanctioned alternatives (of the same kind where there are some).
fn app_refusal_message(catalog: &Catalog, apps: &AiApps, app: &str, verdict: Enforcement) -> Option<String> {
    let entry = catalog.get(app);
    let name = entry.map_or(app, |e| e.name.as_str());
    match verdict {
        Enforcement::Monitor => None,
        Enforcement::Block => Some(format!("sluice policy: {name} is not sanctioned for your team")),
        Enforcement::Coach => {
            let sanctioned: Vec<_> = apps.sanctioned.iter().filter_map(|id| catalog.get(id)).collect();
            let same_kind: Vec<&str> = sanctioned
                .iter()
                .filter(|e| entry.is_some_and(|app| app.category == e.category))
                .map(|e| e.name.as_str())
                .collect();
            let alternatives = if same_kind.is_empty() {
                sanctioned.iter().map(|e| e.name.as_str()).collect::<Vec<_>>()
            } else {
                same_kind
            };
            Some(if alternatives.is_empty() {
                format!("sluice policy: {name} is not sanctioned for your team; ask your security team which AI services are")
            } else {
                format!(
                    "sluice policy: {name} is not sanctioned for your team; please use {} instead",
                    alternatives.join(" or ")
                )
            })
        }
    }
}
