//! The admin listener: `/healthz` (the process is up), `/readyz` (it can
//! take traffic: policies loaded, audit log writable, not shutting down),
//! `/metrics` (Prometheus text format), and the token-guarded `/audit/...`
//! endpoints through which `sluice audit` reads a running server's log
//! ([`audit`]).

pub mod audit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{full, RespBody};
use crate::pipeline::Sluice;

pub async fn run(
    sluice: Arc<Sluice>,
    metrics: PrometheusHandle,
    audit: audit::AuditAccess,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    let stopping = shutdown.clone();
    let limits = super::ConnLimits::admin(&sluice.config().admin, &sluice.config().gateway);
    let handler = move |req: Request<Incoming>, peer: SocketAddr| {
        let (sluice, metrics, audit, stopping) = (sluice.clone(), metrics.clone(), audit.clone(), *stopping.borrow());
        async move {
            let (parts, _body) = req.into_parts();
            match audit::answer(&audit, &parts, peer).await {
                Some(resp) => resp,
                None => route(&sluice, &metrics, stopping, &parts.method, parts.uri.path()),
            }
        }
    };
    super::serve(listener, handler, limits, shutdown, Duration::from_secs(1)).await;
}

fn route(
    sluice: &Sluice,
    metrics: &PrometheusHandle,
    stopping: bool,
    method: &Method,
    path: &str,
) -> Response<RespBody> {
    match (method.as_str(), path) {
        ("GET", "/healthz") => text(StatusCode::OK, "ok\n"),
        ("GET", "/readyz") if stopping => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        ("GET", "/readyz") => {
            // Exporters are details, never a reason to refuse traffic: the
            // audit log keeps their records until they run again.
            let details: String =
                crate::export::splunk::status_line().map(|line| format!("{line}\n")).unwrap_or_default();
            match sluice.not_ready() {
                None => text(StatusCode::OK, &format!("ready\n{details}")),
                Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{why}\n{details}")),
            }
        }
        ("GET", "/metrics") => {
            let mut resp = text(StatusCode::OK, &metrics.render());
            resp.headers_mut()
                .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &str) -> Response<RespBody> {
    let mut resp = Response::new(full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp
}
