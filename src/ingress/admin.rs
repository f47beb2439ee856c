//! The admin listener: `/healthz` (the process is up), `/readyz` (it can
//! take traffic: policies loaded, audit log writable, not shutting down; its
//! details say when the policies were loaded and why the last reload failed,
//! if it did) and `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{full, RespBody};
use crate::pipeline::Sluice;

pub async fn run(
    sluice: Arc<Sluice>,
    metrics: PrometheusHandle,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    let stopping = shutdown.clone();
    let limits = super::ConnLimits::admin(&sluice.config().admin, &sluice.config().gateway);
    let handler = move |req: Request<Incoming>, _peer: SocketAddr| {
        let resp = route(&sluice, &metrics, *stopping.borrow(), &req);
        async move { resp }
    };
    super::serve(listener, handler, limits, shutdown, Duration::from_secs(1)).await;
}

fn route(sluice: &Sluice, metrics: &PrometheusHandle, stopping: bool, req: &Request<Incoming>) -> Response<RespBody> {
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/healthz") => text(StatusCode::OK, "ok\n"),
        ("GET", "/readyz") if stopping => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        ("GET", "/readyz") => {
            // Exporters are details, never a reason to refuse traffic: the
            // audit log keeps their records until they run again. So is a
            // refused policy reload: the set loaded before it still decides.
            let mut details = sluice.policies().status_detail();
            if let Some(line) = crate::export::splunk::status_line() {
                details.push_str(&format!("{line}\n"));
            }
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
