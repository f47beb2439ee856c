//! What the forward proxy relays besides LLM requests on an intercepted
//! connection: bodiless requests forwarded unchanged, and WebSockets
//! relayed frame by frame with each client message judged by the pipeline
//! ([`Sluice::judge_ws_message`]). The records are the pipeline's
//! ([`Sluice::begin_relayed`]); the relaying is done here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::{full, full_request, BoxError, RespBody};
use crate::dispatch::origin::Origin;
use crate::headers::{strip_for_origin, HOP_BY_HOP, PROXY_CREDENTIALS};
use crate::pipeline::{MessageVerdicts, RequestId, Sluice};
use crate::relay::websocket;
use crate::wire::Identity;

pub(super) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Forward a bodiless request (model lists, downloads, deletes) unchanged,
/// the answer streamed back, and record it.
pub(super) async fn forward_unchanged(
    sluice: Arc<Sluice>,
    req: Request<Incoming>,
    client: SocketAddr,
    identity: Identity,
    origin: Arc<Origin>,
    request_id: &RequestId,
) -> Response<RespBody> {
    let relayed = match sluice.begin_relayed("passthrough", &req, client, &identity, &origin, request_id) {
        Ok(relayed) => relayed,
        Err(refused) => return refused,
    };
    let (mut parts, body) = req.into_parts();
    strip_for_origin(&mut parts.headers);
    sluice.identities().strip_identity_headers(&mut parts.headers);
    let upstream = Request::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
    let sent = origin.send(upstream).await;
    sluice.relay_answer(relayed, sent)
}

/// Relay a WebSocket upgrade to the origin and then its frames, both ways;
/// the record is written when the socket closes.
pub(super) async fn relay_websocket(
    sluice: Arc<Sluice>,
    mut req: Request<Incoming>,
    client: SocketAddr,
    identity: Identity,
    origin: Arc<Origin>,
    request_id: &RequestId,
) -> Response<RespBody> {
    let relayed = match sluice.begin_relayed("websocket", &req, client, &identity, &origin, request_id) {
        Ok(relayed) => relayed,
        Err(refused) => return refused,
    };
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _) = req.into_parts();
    // Compressed messages (permessage-deflate) could not be inspected:
    // without the offer the origin never turns compression on.
    // `connection` and `upgrade` stay: they are the upgrade itself.
    for name in PROXY_CREDENTIALS
        .iter()
        .chain(HOP_BY_HOP.iter().filter(|h| !matches!(**h, "connection" | "upgrade")))
        .chain(&["sec-websocket-extensions"])
    {
        parts.headers.remove(*name);
    }
    sluice.identities().strip_identity_headers(&mut parts.headers);
    let upstream = Request::from_parts(parts, full_request(Bytes::new()));
    let mut resp = match origin.send_upgradable(upstream).await {
        Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => resp,
        other => return sluice.relay_answer(relayed, other),
    };
    let origin_upgrade = hyper::upgrade::on(&mut resp);
    let idle = Duration::from_millis(sluice.config().proxy.idle_timeout_ms);
    let max_message = sluice.config().gateway.max_body_bytes;
    let this = sluice.clone();
    tokio::spawn(async move {
        let mut seen = MessageVerdicts::default();
        let ended = match tokio::try_join!(client_upgrade, origin_upgrade) {
            Ok((client_io, origin_io)) => {
                let mut client_io = TokioIo::new(client_io);
                let mut origin_io = TokioIo::new(origin_io);
                Ok(websocket::relay_inspected(&mut client_io, &mut origin_io, idle, max_message, |message| {
                    this.judge_ws_message(&identity, &relayed, message, &mut seen)
                })
                .await)
            }
            Err(e) => Err(e),
        };
        this.finish_websocket(relayed, seen, ended);
    });
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, full(Bytes::new()))
}
