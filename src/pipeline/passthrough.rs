//! What the forward proxy relays besides LLM requests: bodiless requests
//! forwarded unchanged, WebSockets with each client message inspected, and
//! the records of CONNECT tunnels and of refusals at the proxy's door.

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

    /// Forward a non-LLM request on an intercepted host unchanged, body
    /// streamed both ways, and record it.
    pub(super) async fn forward_unchanged(
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
        strip_for_origin(&mut parts.headers);
        let upstream = Request::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
        let started = Instant::now();
        let sent = origin.send(upstream).await;
        self.relay_or_refuse(trail, sent, started, "passthrough", "")
    }

    /// Relay a WebSocket upgrade to the origin and then its frames, both
    /// ways; the record is written when the socket closes.
    pub(super) async fn relay_websocket(
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
            return self.refuse(trail, Refusal::new(ErrorKind::PolicyBlock, message.to_string()));
        }
        let trail = match self.gate_on_audit(trail) {
            Ok(trail) => trail,
            Err(refused) => return refused,
        };
        let client_upgrade = hyper::upgrade::on(&mut req);
        let (mut parts, _) = req.into_parts();
        // Compressed messages (permessage-deflate) could not be inspected:
        // without the offer the origin never turns compression on.
        // `connection` and `upgrade` stay: they are the upgrade itself.
        for name in crate::headers::PROXY_CREDENTIALS
            .iter()
            .chain(crate::headers::HOP_BY_HOP.iter().filter(|h| !matches!(**h, "connection" | "upgrade")))
            .chain(&["sec-websocket-extensions"])
        {
            parts.headers.remove(*name);
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
                    let relayed =
                        websocket::relay_inspected(&mut client_io, &mut origin_io, idle, max_message, |message| {
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

    /// Judge one WebSocket message from the client like a request body:
    /// every string of its JSON (or its text) scanned, the team's policy
    /// deciding. Only `cloud` lets it through: a message cannot be answered
    /// locally or redacted in flight, so those decisions refuse it.
    pub(super) fn inspect_ws_message(
        &self,
        identity: &Identity,
        provider: &str,
        message: WsMessage<'_>,
        seen: &mut MessageVerdicts,
    ) -> Verdict {
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

/// What the messages of one WebSocket carried, for its record.
#[derive(Default)]
pub(super) struct MessageVerdicts {
    findings: std::collections::BTreeMap<String, u32>,
    attachments: Vec<AttachmentNote>,
    /// The rule that refused a message, if one did.
    rule: String,
}

pub(super) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
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
