//! The forward proxy (`HTTPS_PROXY`): answers `CONNECT` and plain-HTTP
//! absolute-form requests.
//!
//! Phases of one proxied connection:
//! 1. **door** — proxy authentication (the gateway's token table), a
//!    CONNECT port in 1..65535 that config allows, destination resolved once
//!    and checked (no internal addresses);
//! 2. **hello** — after the 200, the client's first bytes are read (bounded
//!    in size and time) and its TLS ClientHello parsed for the server name
//!    ([`sni`]); bytes that are not a readable ClientHello close the tunnel;
//! 3. **tunnel** — when neither the CONNECT host nor the SNI is on the
//!    intercept list, the bytes (the ClientHello replayed first) are relayed
//!    untouched;
//! 4. **intercept** — an LLM API host named by the CONNECT line or by the
//!    SNI, whatever address the CONNECT line named: connect to that host
//!    offering the client's ALPN, then finish the client's handshake with a
//!    leaf from sluice's CA and the protocol the origin chose;
//! 5. **requests** — each request must name the host the connection is for;
//!    one with a body goes to [`Sluice::handle_proxied`], the same pipeline
//!    as the gateway; bodiless requests and WebSockets are relayed by
//!    [`passthrough`].
//!
//! Every CONNECT leaves one `proxy.connect` audit record: a refusal at the
//! door, or, when the tunnel ends, its host, SNI, bytes, duration and
//! outcome ([`Sluice::record_tunnel`]).

mod passthrough;
pub mod sni;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_rustls::LazyConfigAcceptor;
use tracing::Instrument;

use super::netpolicy::{NetPolicy, Refusal};
use super::{accept_loop, http_server, Slots};
use crate::audit::Durable;
use crate::body::{full, RespBody};
use crate::ca::{host_matches, LeafCache};
use crate::dispatch::origin::{Origin, OriginTarget, ALPN_H1, ALPN_H2};
use crate::pipeline::{held_body, RequestId, Sluice};
use crate::relay::tunnel::{copy_with_idle, Activity, Outcome, Rewound, Tracked, TunnelReport};
use crate::telemetry;
use crate::wire::{ErrorKind, Identity};

/// Slow-loris guard for request heads on the proxy port and inside
/// intercepted connections.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the proxy listener needs, built once at start-up.
pub struct Proxy {
    sluice: Arc<Sluice>,
    leaves: LeafCache,
    intercept: Vec<String>,
    net: NetPolicy,
    slots: Slots,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    connect_timeout: Duration,
    response_timeout: Duration,
    shutdown: watch::Receiver<bool>,
}

impl Proxy {
    pub fn new(sluice: Arc<Sluice>, leaves: LeafCache, shutdown: watch::Receiver<bool>) -> Arc<Proxy> {
        let cfg = &sluice.config().proxy;
        let upstream = &sluice.config().upstream;
        Arc::new(Proxy {
            leaves,
            intercept: cfg.intercept.iter().map(|h| h.to_ascii_lowercase()).collect(),
            net: NetPolicy::new(cfg, sluice.upstream().resolve_map()),
            slots: Slots::new("proxy", cfg.max_connections, "sluice proxy: too many connections, try again shortly\n"),
            handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms),
            idle_timeout: Duration::from_millis(cfg.idle_timeout_ms),
            connect_timeout: Duration::from_millis(upstream.connect_timeout_ms),
            response_timeout: Duration::from_millis(upstream.response_timeout_ms),
            shutdown,
            sluice,
        })
    }

    /// How to reach a checked origin address, over verified TLS or plain.
    fn target(&self, host: &str, port: u16, addr: SocketAddr, tls: bool) -> OriginTarget {
        OriginTarget {
            host: host.to_string(),
            port,
            addr,
            tls: tls.then(|| self.sluice.upstream().tls()),
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
        }
    }

    fn intercepts(&self, host: &str) -> bool {
        self.intercept.iter().any(|p| host_matches(p, host))
    }
}

/// Accept proxy connections until shutdown, then let connections in flight
/// finish for the gateway's grace period. A connection's slot is held
/// until its last tunnel or intercepted request is done.
pub async fn run(proxy: Arc<Proxy>, listener: TcpListener) {
    let grace = Duration::from_millis(proxy.sluice.config().gateway.shutdown_grace_ms);
    let shutdown = proxy.shutdown.clone();
    accept_loop(listener, &proxy.slots, shutdown, grace, |stream, peer, permit| {
        tokio::spawn(serve_client(proxy.clone(), stream, peer, Arc::new(permit)));
    })
    .await;
}

/// One client connection to the proxy port.
async fn serve_client(proxy: Arc<Proxy>, stream: TcpStream, peer: SocketAddr, permit: Arc<OwnedSemaphorePermit>) {
    let _open = telemetry::GaugeGuard::new(telemetry::PROXY_OPEN_CONNECTIONS);
    let builder = http_server(HEADER_READ_TIMEOUT, None);
    let svc_proxy = proxy.clone();
    let service = service_fn(move |req| {
        let proxy = svc_proxy.clone();
        let permit = permit.clone();
        async move { Ok::<_, Infallible>(proxy.serve_request(req, peer, permit).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut shutdown = proxy.shutdown.clone();
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "proxy connection ended with an error");
            }
            return;
        }
        _ = shutdown.changed() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

impl Proxy {
    /// Every request on the proxy port: [`Self::door`], then the answer
    /// goes out through [`Sluice::deliver`] with the request's id.
    async fn serve_request(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        permit: Arc<OwnedSemaphorePermit>,
    ) -> Response<RespBody> {
        let request_id = self.sluice.request_id(req.headers());
        let head_only = req.method() == Method::HEAD;
        let sluice = self.sluice.clone();
        let resp = self.door(req, peer, permit, request_id.clone()).await;
        sluice.deliver(&request_id, head_only, resp).await
    }

    /// Phase 1 for every request on the proxy port.
    async fn door(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        permit: Arc<OwnedSemaphorePermit>,
        request_id: RequestId,
    ) -> Response<RespBody> {
        let identity = match self.sluice.identities().identify_proxy(req.headers(), peer.ip()) {
            Ok((identity, source)) => {
                metrics::counter!(telemetry::CALLERS, "ingress" => "proxy", "source" => source.as_str()).increment(1);
                identity
            }
            Err(e) => {
                let reason = e.to_string();
                let host = req.uri().host().unwrap_or("").to_ascii_lowercase();
                let status = StatusCode::PROXY_AUTHENTICATION_REQUIRED;
                let durable = self.sluice.record_proxy_refusal(peer, None, &host, status, &reason, &request_id);
                metrics::counter!(telemetry::PROXY_CONNECTS, "outcome" => "auth_required").increment(1);
                let mut resp = held_text(status, &reason, durable);
                resp.headers_mut()
                    .insert(http::header::PROXY_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"sluice\""));
                return resp;
            }
        };
        if req.method() == Method::CONNECT {
            return self.connect(req, peer, identity, permit, request_id).await;
        }
        if req.uri().scheme_str() == Some("http") && req.uri().host().is_some() {
            return self.plain_http(req, peer, identity, request_id).await;
        }
        text(
            StatusCode::BAD_REQUEST,
            "this is sluice's proxy port: send CONNECT or absolute-form http:// requests (apps that set a base URL use the gateway port)",
        )
    }

    /// `CONNECT host:port`: check the destination and answer 200; what the
    /// client's ClientHello says then decides between tunnel and intercept.
    async fn connect(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        identity: Identity,
        permit: Arc<OwnedSemaphorePermit>,
        request_id: RequestId,
    ) -> Response<RespBody> {
        let started = Instant::now();
        let Some(authority) = req.uri().authority().cloned() else {
            return self.bad_connect(peer, &identity, "", "CONNECT needs host:port", &request_id);
        };
        let host = normalize_host(authority.host());
        // Defaulting a missing or impossible port would connect somewhere
        // the client did not ask for (or, for 0, nowhere sensible).
        let Some(port) = authority.port_u16().filter(|&p| p != 0) else {
            return self.bad_connect(peer, &identity, &host, "CONNECT port missing or outside 1..65535", &request_id);
        };
        // An AI app the caller's team refuses is answered here, where the
        // client can still read why (and before its name is resolved). On
        // intercepted hosts each request is refused in its own wire format.
        let refused =
            (!self.intercepts(&host)).then(|| self.sluice.refuse_app_at_door(peer, &identity, &host, &request_id));
        if let Some((message, durable)) = refused.flatten() {
            metrics::counter!(telemetry::PROXY_CONNECTS, "outcome" => "app_refused").increment(1);
            return held_text(StatusCode::FORBIDDEN, &message, durable);
        }
        let addr = match self.net.destination(&host, port).await {
            Ok(addr) => addr,
            Err(refusal) => return self.refuse_destination(peer, &identity, &host, &refusal, &request_id),
        };
        // A host that may be tunneled is dialled before the 200, so that an
        // unreachable one is still an HTTP answer. If its SNI turns out to
        // be intercepted, this connection is dropped unused.
        let upstream = if self.intercepts(&host) {
            None
        } else {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(upstream)) => {
                    let _ = upstream.set_nodelay(true);
                    Some(upstream)
                }
                Ok(Err(e)) => {
                    let reason = format!("cannot connect to {host}:{port}: {e}");
                    return self.bad_gateway(peer, &identity, &host, &reason, &request_id);
                }
                Err(_) => {
                    let reason = format!("connecting to {host}:{port} timed out");
                    return self.bad_gateway(peer, &identity, &host, &reason, &request_id);
                }
            }
        };
        let upgrade = hyper::upgrade::on(&mut req);
        let tunnel = Tunnel { peer, identity, host, port, addr, started, sni: None, ech: false, request_id };
        tokio::spawn(async move {
            // The slot is held until the tunnel's record is written, so a
            // graceful shutdown waits for it.
            let _permit = permit;
            match upgrade.await {
                Ok(client) => self.tunnel_or_intercept(TokioIo::new(client), tunnel, upstream).await,
                Err(e) => {
                    tracing::debug!(error = %e, "CONNECT upgrade failed");
                    let outcome =
                        Outcome::Failed { kind: "upgrade_failed", reason: "the CONNECT upgrade failed".into() };
                    self.finish(&tunnel, (0, 0), outcome, None);
                }
            }
        });
        empty(StatusCode::OK)
    }

    /// Phase 2: read the ClientHello and decide by both names.
    async fn tunnel_or_intercept(
        self: Arc<Self>,
        mut client: TokioIo<hyper::upgrade::Upgraded>,
        mut tunnel: Tunnel,
        upstream: Option<TcpStream>,
    ) {
        let (first, hello) = sni::read_client_hello(&mut client, self.handshake_timeout).await;
        let hello = match hello {
            Ok(hello) => hello,
            Err(e) => {
                tracing::debug!(error = %e, host = tunnel.host, "no readable ClientHello; closing the tunnel");
                let outcome = Outcome::Refused { kind: e.kind(), reason: e.to_string() };
                return self.finish(&tunnel, (first.len() as u64, 0), outcome, None);
            }
        };
        tunnel.sni = hello.server_name;
        tunnel.ech = hello.ech;
        // What a closed tunnel took from the client: the hello and what came
        // with it.
        let taken = (first.len() as u64, 0);
        if let Some(sni) = tunnel.sni.as_deref().filter(|sni| *sni != tunnel.host && !self.intercepts(sni)) {
            // A CONNECT to an address (or another name) for a refused app:
            // too late for an HTTP answer, so the tunnel closes.
            if let Some(message) = self.sluice.app_refusal(&tunnel.identity, sni) {
                let outcome = Outcome::Refused { kind: "app_refused", reason: message };
                return self.finish(&tunnel, taken, outcome, None);
            }
        }
        let client = Rewound::new(client, first);
        let sni = tunnel.sni.clone();
        if self.intercepts(&tunnel.host) {
            if let Some(sni) = sni.as_deref().filter(|sni| *sni != tunnel.host && !self.intercepts(sni)) {
                // Intercepting would mint a certificate the client rejects,
                // and tunneling would let an intercepted host's traffic
                // out uninspected.
                tracing::debug!(host = tunnel.host, sni, "SNI names a host that is not intercepted; closing");
                let outcome = Outcome::Refused {
                    kind: "sni_mismatch",
                    reason: "the TLS server name is not the intercepted CONNECT host".into(),
                };
                return self.finish(&tunnel, taken, outcome, None);
            }
            let (host, addr) = (tunnel.host.clone(), tunnel.addr);
            return self.intercept(client, tunnel, host, addr, false).await;
        }
        if let Some(sni) = sni.filter(|sni| self.intercepts(sni)) {
            drop(upstream);
            // The origin is the host the client's TLS is for, checked like
            // any destination; the address on the CONNECT line is not used.
            let addr = match self.net.destination(&sni, tunnel.port).await {
                Ok(addr) => addr,
                Err(refusal) => {
                    tracing::debug!(error = %refusal, host = tunnel.host, sni, "intercepted SNI refused");
                    let outcome = Outcome::Refused {
                        kind: "sni_destination",
                        reason: format!("the TLS server name's destination is refused ({})", refusal.kind()),
                    };
                    return self.finish(&tunnel, taken, outcome, None);
                }
            };
            return self.intercept(client, tunnel, sni, addr, true).await;
        }
        let Some(mut upstream) = upstream else {
            let outcome =
                Outcome::Failed { kind: "connect_failed", reason: "no connection to the CONNECT address".into() };
            return self.finish(&tunnel, taken, outcome, None);
        };
        let _open = telemetry::GaugeGuard::new(telemetry::PROXY_OPEN_TUNNELS);
        let mut client = client;
        let relayed = copy_with_idle(&mut client, &mut upstream, self.idle_timeout).await;
        tracing::debug!(host = tunnel.host, up = relayed.up, down = relayed.down, error = ?relayed.error, "tunnel closed");
        let ended = relayed.error.map(|e| e.to_string());
        self.finish(&tunnel, (relayed.up, relayed.down), Outcome::Tunneled, ended);
    }

    /// Phase 4: terminate the client's TLS with a leaf for `host` and serve
    /// its requests through the pipeline, with `host` at `addr` (checked)
    /// as the origin.
    async fn intercept(
        self: Arc<Self>,
        client: Rewound<TokioIo<hyper::upgrade::Upgraded>>,
        tunnel: Tunnel,
        host: String,
        addr: SocketAddr,
        by_sni: bool,
    ) {
        let activity = Activity::new();
        let tracked = Tracked::new(client, activity.clone());
        let outcome = self.clone().serve_intercepted(tracked, &activity, &tunnel, host, addr, by_sni).await;
        self.finish(&tunnel, activity.bytes(), outcome, None);
    }

    async fn serve_intercepted(
        self: Arc<Self>,
        client: Tracked<Rewound<TokioIo<hyper::upgrade::Upgraded>>>,
        activity: &Activity,
        tunnel: &Tunnel,
        host: String,
        addr: SocketAddr,
        by_sni: bool,
    ) -> Outcome {
        let (peer, port) = (tunnel.peer, tunnel.port);
        let identity = tunnel.identity.clone();
        let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), client);
        let start = match tokio::time::timeout(self.handshake_timeout, acceptor).await {
            Ok(Ok(start)) => start,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, host, "client hello unreadable");
                return Outcome::Failed {
                    kind: "bad_hello",
                    reason: "the TLS library rejected the ClientHello".into(),
                };
            }
            Err(_) => {
                return Outcome::Failed {
                    kind: "hello_timeout",
                    reason: "the ClientHello did not arrive in time".into(),
                }
            }
        };
        let hello = start.client_hello();
        let sni = hello.server_name().map(normalize_host);
        // The decision was made on sluice's own reading of the hello; if the
        // TLS library reads another name, one of them is being fooled.
        if sni != tunnel.sni {
            tracing::debug!(host, ours = ?tunnel.sni, theirs = ?sni, "server name read differently");
            return Outcome::Refused {
                kind: "sni_ambiguous",
                reason: "the ClientHello's server name reads differently to the TLS library".into(),
            };
        }
        let offered: Vec<Vec<u8>> =
            hello.alpn().map(|protocols| protocols.map(<[u8]>::to_vec).collect()).unwrap_or_default();

        // SNI must name the host the connection is for. When it names another
        // intercepted host, the leaf follows SNI and every request is refused
        // with 421, so the client learns why instead of seeing a certificate
        // error (a non-intercepted SNI was closed before getting here).
        let cert_host = sni.clone().unwrap_or_else(|| host.clone());
        let misdirected = cert_host != host;

        let mut upstream_offer: Vec<Vec<u8>> =
            offered.iter().filter(|p| p.as_slice() == ALPN_H2 || p.as_slice() == ALPN_H1).cloned().collect();
        if upstream_offer.is_empty() {
            upstream_offer.push(ALPN_H1.to_vec());
        }
        let origin = if misdirected {
            Err(format!("TLS server name {cert_host} does not match the CONNECT host {host}"))
        } else {
            let target = self.target(&host, port, addr, true);
            Origin::connect(target, upstream_offer)
                .await
                .map(Arc::new)
                .map_err(|e| format!("cannot reach {host}:{port}: {e}"))
        };
        // Mirror the origin: the client gets exactly the protocol the origin
        // picked from the client's own offer.
        let h2 = matches!(&origin, Ok(o) if o.is_h2());
        let alpn = match (offered.is_empty(), h2) {
            (true, _) => Vec::new(),
            (false, true) => vec![ALPN_H2.to_vec()],
            (false, false) => vec![ALPN_H1.to_vec()],
        };
        let config = match self.leaves.server_config(&cert_host, &alpn) {
            Ok(config) => config,
            Err(e) => {
                tracing::warn!(error = %e, host = cert_host, "cannot mint a certificate");
                return Outcome::Failed {
                    kind: "no_certificate",
                    reason: format!("no certificate could be minted: {e}"),
                };
            }
        };
        let tls = match tokio::time::timeout(self.handshake_timeout, start.into_stream(config)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, host, "client TLS handshake failed");
                return Outcome::Failed {
                    kind: "client_handshake",
                    reason: format!("the client's TLS handshake failed: {e}"),
                };
            }
            Err(_) => {
                return Outcome::Failed {
                    kind: "client_handshake",
                    reason: "the client's TLS handshake timed out".into(),
                };
            }
        };

        let this = self.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let this = this.clone();
            let origin = origin.clone();
            let identity = identity.clone();
            let cert_host = cert_host.clone();
            async move {
                let request_id = this.sluice.request_id(req.headers());
                let head_only = req.method() == Method::HEAD;
                let refuse = |req: &Request<Incoming>, kind, message: &str| {
                    this.sluice.refuse_proxied(req, peer, &identity, &cert_host, kind, message, &request_id)
                };
                let resp = match (&origin, request_host(&req)) {
                    (_, Some(named)) if named != cert_host => refuse(
                        &req,
                        ErrorKind::Misdirected,
                        &format!("request for {named} on a connection for {cert_host}"),
                    ),
                    (_, None) => refuse(&req, ErrorKind::Misdirected, "request names no host"),
                    (Err(message), _) => {
                        let kind = if misdirected { ErrorKind::Misdirected } else { ErrorKind::Upstream };
                        refuse(&req, kind, message)
                    }
                    (Ok(origin), _) => {
                        route(this.sluice.clone(), req, peer, identity.clone(), origin.clone(), &request_id).await
                    }
                };
                Ok::<_, Infallible>(this.sluice.deliver(&request_id, head_only, resp).await)
            }
        });
        // The protocol was fixed by ALPN; the auto builder recognises the
        // HTTP/2 preface, and serves HTTP/1.1 (with upgrades) otherwise.
        let builder = http_server(HEADER_READ_TIMEOUT, None);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
        let outcome = if misdirected {
            Outcome::Refused {
                kind: "sni_mismatch",
                reason: "the TLS server name is another intercepted host than the CONNECT host; every request was answered 421".into(),
            }
        } else {
            Outcome::Intercepted { by_sni }
        };
        // Runs until the connection ends or goes idle; on shutdown, requests
        // in flight finish.
        tokio::pin!(conn);
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = conn.as_mut() => return outcome,
            _ = activity.idle(self.idle_timeout) => return outcome,
            _ = shutdown.changed() => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
        outcome
    }

    /// Count and audit a CONNECT that was answered 200, now that it is over.
    fn finish(&self, tunnel: &Tunnel, (up, down): (u64, u64), outcome: Outcome, ended: Option<String>) {
        metrics::counter!(telemetry::PROXY_CONNECTS, "outcome" => outcome.label()).increment(1);
        let report = TunnelReport {
            connect_host: tunnel.host.clone(),
            port: tunnel.port,
            sni: tunnel.sni.clone(),
            ech: tunnel.ech,
            up,
            down,
            duration: tunnel.started.elapsed(),
            outcome,
            ended,
        };
        self.sluice.record_tunnel(tunnel.peer, &tunnel.identity, &report, &tunnel.request_id);
    }

    /// A plain-HTTP absolute-form request (`GET http://host/path`).
    async fn plain_http(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        identity: Identity,
        request_id: RequestId,
    ) -> Response<RespBody> {
        let Some(host) = req.uri().host().map(|h| h.trim_matches(|c| c == '[' || c == ']').to_ascii_lowercase()) else {
            return text(StatusCode::BAD_REQUEST, "absolute-form request without a host");
        };
        let port = req.uri().port_u16().unwrap_or(80);
        let addr = match self.net.http_destination(&host, port).await {
            Ok(addr) => addr,
            Err(refusal) => return self.refuse_destination(peer, &identity, &host, &refusal, &request_id),
        };
        let target = self.target(&host, port, addr, false);
        match Origin::connect(target, Vec::new()).await {
            Ok(origin) => route(self.sluice.clone(), req, peer, identity, Arc::new(origin), &request_id).await,
            Err(e) => {
                let reason = format!("cannot connect to {host}:{port}: {e}");
                self.bad_gateway(peer, &identity, &host, &reason, &request_id)
            }
        }
    }

    fn refuse_destination(
        &self,
        peer: SocketAddr,
        identity: &Identity,
        host: &str,
        refusal: &Refusal,
        request_id: &RequestId,
    ) -> Response<RespBody> {
        let status = match refusal {
            Refusal::Resolve { .. } => StatusCode::BAD_GATEWAY,
            Refusal::Port(_) | Refusal::Private { .. } => StatusCode::FORBIDDEN,
        };
        let reason = refusal.to_string();
        let message = format!("sluice proxy refused: {reason}");
        self.refuse_connect(peer, identity, host, status, refusal.kind(), &reason, &message, request_id)
    }

    /// A CONNECT sluice does not carry out: recorded (the answer held until
    /// the record is durable), counted under `outcome`, answered `status`.
    #[allow(clippy::too_many_arguments)]
    fn refuse_connect(
        &self,
        peer: SocketAddr,
        identity: &Identity,
        host: &str,
        status: StatusCode,
        outcome: &'static str,
        reason: &str,
        message: &str,
        request_id: &RequestId,
    ) -> Response<RespBody> {
        let durable = self.sluice.record_proxy_refusal(peer, Some(identity), host, status, reason, request_id);
        metrics::counter!(telemetry::PROXY_CONNECTS, "outcome" => outcome).increment(1);
        held_text(status, message, durable)
    }

    /// A CONNECT line without a usable `host:port`: 400, audited.
    fn bad_connect(
        &self,
        peer: SocketAddr,
        identity: &Identity,
        host: &str,
        reason: &str,
        request_id: &RequestId,
    ) -> Response<RespBody> {
        let message = format!("sluice proxy: {reason}");
        self.refuse_connect(peer, identity, host, StatusCode::BAD_REQUEST, "bad_target", reason, &message, request_id)
    }

    /// The destination could not be reached: 502, audited.
    fn bad_gateway(
        &self,
        peer: SocketAddr,
        identity: &Identity,
        host: &str,
        reason: &str,
        request_id: &RequestId,
    ) -> Response<RespBody> {
        let message = format!("sluice proxy: {reason}");
        self.refuse_connect(
            peer,
            identity,
            host,
            StatusCode::BAD_GATEWAY,
            "connect_failed",
            reason,
            &message,
            request_id,
        )
    }
}

/// Phase 5: a request on an intercepted connection (or a plain-HTTP
/// absolute-form request) for `origin`'s host, in its own request span.
/// Every request with a body goes through the pipeline, whatever its shape;
/// bodiless ones (model lists, downloads) are forwarded unchanged and
/// audited; WebSockets are relayed with each client message judged.
async fn route(
    sluice: Arc<Sluice>,
    req: Request<Incoming>,
    peer: SocketAddr,
    identity: Identity,
    origin: Arc<Origin>,
    request_id: &RequestId,
) -> Response<RespBody> {
    let span = sluice.proxied_span(&req, &identity, &origin, request_id);
    async move {
        let resp = if passthrough::is_websocket_upgrade(req.headers()) {
            passthrough::relay_websocket(sluice, req, peer, identity, origin, request_id).await
        } else if req.body().is_end_stream() {
            passthrough::forward_unchanged(sluice, req, peer, identity, origin, request_id).await
        } else {
            sluice.handle_proxied(req, peer, identity, origin, request_id).await
        };
        tracing::Span::current().record("status", resp.status().as_u16());
        tracing::debug!("done");
        resp
    }
    .instrument(span)
    .await
}

/// One CONNECT answered 200, as far as it is known.
struct Tunnel {
    peer: SocketAddr,
    identity: Identity,
    /// The CONNECT line's host, normalised.
    host: String,
    port: u16,
    /// The CONNECT host's checked address.
    addr: SocketAddr,
    started: Instant,
    /// From the ClientHello, once read.
    sni: Option<String>,
    ech: bool,
    /// The CONNECT request's id, for the tunnel's record.
    request_id: RequestId,
}

/// A host as the intercept list and the audit log compare it: without
/// IPv6 brackets or a trailing dot, lower-case.
fn normalize_host(host: &str) -> String {
    let host = host.trim_matches(|c| c == '[' || c == ']');
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// The host a request names: `:authority` (HTTP/2) or `Host` (HTTP/1.1),
/// without port, lower-case.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    let raw = match req.uri().authority() {
        Some(a) => a.host().to_string(),
        None => {
            let value = req.headers().get(http::header::HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = value.parse().ok()?;
            authority.host().to_string()
        }
    };
    Some(raw.trim_matches(|c| c == '[' || c == ']').to_ascii_lowercase())
}

/// [`text`] for an answer whose record was written: held until it is durable.
fn held_text(status: StatusCode, message: &str, durable: Durable) -> Response<RespBody> {
    let mut resp = text(status, message);
    *resp.body_mut() = held_body(Bytes::from(format!("{message}\n")), durable);
    resp
}

fn text(status: StatusCode, message: &str) -> Response<RespBody> {
    let mut resp = Response::new(full(Bytes::from(format!("{message}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn empty(status: StatusCode) -> Response<RespBody> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = status;
    resp
}
