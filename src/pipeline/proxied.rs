//! The pipeline's side of what the forward proxy relays besides LLM
//! requests: the records of relayed requests (bodiless requests, WebSockets)
//! and the judgement of each WebSocket message, the records of CONNECT
//! tunnels and of refusals at the proxy's door. The relaying itself (the
//! upgrade, the bytes) is the proxy's (`ingress::proxy::passthrough`).

use super::*;

impl Sluice {
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
        let trail = Trail::proxied("proxy", dialect_of(req.headers()), client, Some(identity), host, "block");
        // A misdirected request's message quotes the client's Host header.
        match kind {
            ErrorKind::Misdirected => {
                self.refuse(trail, Refusal::quoting(kind, message, "request names a host other than the connection's"))
            }
            _ => self.refuse(trail, Refusal::new(kind, message)),
        }
    }

    /// Audit a refusal at the proxy's door (a CONNECT or absolute-form
    /// request that was never let through); the proxy answers it itself.
    pub fn record_proxy_refusal(
        &self,
        client: SocketAddr,
        identity: Option<&Identity>,
        host: &str,
        status: StatusCode,
        reason: &str,
    ) {
        let mut trail = Trail::proxied("proxy.connect", Dialect::OpenAiChat, client, identity, host, "block");
        trail.record.reason = reason.to_string();
        trail.record.status = status.as_u16();
        self.record(trail, None);
    }

    /// Open the record of a request the proxy relays outside the LLM
    /// path (`api` is `passthrough` or `websocket`). It is answered here
    /// instead when the audit log cannot take its record, or when a
    /// WebSocket's team has no policy to judge its messages by.
    pub fn begin_relayed(
        &self,
        api: &'static str,
        headers: &HeaderMap,
        client: SocketAddr,
        identity: &Identity,
        origin: &Origin,
    ) -> Result<Relayed, Response<RespBody>> {
        let mut trail = Trail::forwarded(api, headers, client, identity, origin);
        if api == "websocket" {
            trail.record.decision = "cloud".into();
            if self.policies.team(&identity.team).is_none() {
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
        self.record(trail, Some(started.elapsed()));
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
        let (scanned, _) = scan_inventory(&self.detectors, self.dictionaries.get(&identity.team), &inventory);
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
}

impl Sluice {
    /// Audit one CONNECT that was answered 200, when it ends: the CONNECT
    /// host in `host`, the provider of the host the traffic was really for
    /// (the SNI when there was one), and the tunnel's facts (SNI, bytes,
    /// duration, outcome) in `signals`. Refusals at the door are recorded
    /// by [`Sluice::record_proxy_refusal`] instead, so every CONNECT has
    /// exactly one `proxy.connect` record.
    pub fn record_tunnel(&self, client: SocketAddr, identity: &Identity, tunnel: &crate::relay::tunnel::TunnelReport) {
        let decision = tunnel.outcome.decision();
        let mut trail = Trail::proxied(
            "proxy.connect",
            Dialect::OpenAiChat,
            client,
            Some(identity),
            &tunnel.connect_host,
            decision,
        );
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
