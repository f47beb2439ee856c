//! The admin listener: `/healthz` (the process is up), `/readyz` (it can
//! take traffic: policies loaded, audit log writable, not shutting down; its
//! details say when the policies were loaded and why the last reload failed,
//! if it did), `/metrics` (Prometheus text format) and `/budget` (budget
//! usage, per user too, for `sluice budget status`; only with the admin
//! token that sluice writes, owner-only, into `limits.dir`).

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
        let sluice = sluice.clone();
        let resp = (req.uri().path() != "/budget").then(|| route(&sluice, &metrics, *stopping.borrow(), &req));
        async move {
            match resp {
                Some(resp) => resp,
                None => budget(&sluice, &req).await,
            }
        }
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
            for line in [crate::export::splunk::status_line(), sluice.limits().status_line()].into_iter().flatten() {
                details.push_str(&line);
                details.push('\n');
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

/// `GET /budget[?team=T]`: the budget report as JSON. Per-user usage
/// names people, so it needs the admin token, like reading the data
/// directory would.
async fn budget(sluice: &Sluice, req: &Request<Incoming>) -> Response<RespBody> {
    if req.method() != http::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    if !sluice.limits().admin_token_accepts(req.headers().get(http::header::AUTHORIZATION)) {
        return text(StatusCode::UNAUTHORIZED, "send the token in limits.dir/admin.token as a Bearer token\n");
    }
    let team = req.uri().query().and_then(|q| q.split('&').find_map(|p| p.strip_prefix("team=")));
    if team.is_some_and(|t| !crate::identity::is_team_name(t)) {
        return text(StatusCode::BAD_REQUEST, "team must be a team name (a-z, 0-9, `_`, `-`)\n");
    }
    match sluice.budget_report(team).await {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(json) => {
                let mut resp = text(StatusCode::OK, &json);
                resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                resp
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        },
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Response<RespBody> {
    let mut resp = Response::new(full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp
}
