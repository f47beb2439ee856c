//! The admin listener's audit endpoints: a running server's log for
//! `sluice audit` and `sluice policy replay`, read with the same library
//! code as the files of a stopped one. The protocol and the token are
//! described in [`crate::audit::remote`]; nothing here answers without the
//! token.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body::{Body, Frame};
use tokio::sync::{mpsc, Semaphore};

use crate::audit::remote::{parse_filter_query, AdminToken};
use crate::audit::{AuditError, AuditFilter, AuditLog, ChainView};
use crate::body::{full, BoxError, RespBody};

/// Reads of the whole log at once: each walks it on a blocking thread,
/// and the request path keeps the CPUs.
const CONCURRENT_READS: usize = 2;
/// Records are sent in chunks of about this many bytes.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks read ahead of a slow reader.
const CHUNKS_AHEAD: usize = 8;

/// What the audit endpoints need: the open log and the token.
#[derive(Clone)]
pub struct AuditAccess {
    log: Arc<AuditLog>,
    token: AdminToken,
    reads: Arc<Semaphore>,
}

impl AuditAccess {
    pub fn new(log: Arc<AuditLog>, token: AdminToken) -> AuditAccess {
        AuditAccess { log, token, reads: Arc::new(Semaphore::new(CONCURRENT_READS)) }
    }

    /// The admin token, which also guards `/budget`.
    pub(super) fn token(&self) -> &AdminToken {
        &self.token
    }
}

/// The answer to a request for `/audit/...`; `None` for other paths.
pub(super) async fn answer(
    access: &AuditAccess,
    parts: &http::request::Parts,
    peer: SocketAddr,
) -> Option<Response<RespBody>> {
    let path = parts.uri.path();
    if !path.starts_with("/audit/") {
        return None;
    }
    if !access.token.accepts(parts.headers.get(header::AUTHORIZATION)) {
        tracing::warn!(%peer, path, "audit endpoint refused: missing or wrong admin token");
        let mut resp =
            text(StatusCode::UNAUTHORIZED, "the audit endpoints need the admin token (see `sluice audit`)\n");
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Some(resp);
    }
    if parts.method != Method::GET {
        return Some(text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n"));
    }
    tracing::info!(%peer, path, "audit log read through the admin endpoint");
    Some(match path {
        "/audit/records" => match parse_filter_query(parts.uri.query().unwrap_or("")) {
            Ok(filter) => records(access, filter).await,
            Err(why) => text(StatusCode::BAD_REQUEST, &format!("{why}\n")),
        },
        "/audit/verify" => verify(access).await,
        "/audit/checkpoints" => small(access, |log| log.checkpoints()).await,
        "/audit/checkpoint" => small(access, |log| log.latest_checkpoint()).await,
        "/audit/ends" => small(access, |log| log.ends()).await,
        "/audit/record" => match parts.uri.query().and_then(|q| q.strip_prefix("seq=")).map(str::parse::<u64>) {
            Some(Ok(seq)) => small(access, move |log| log.record_at(seq)).await,
            _ => text(StatusCode::BAD_REQUEST, "seq=N, a record's sequence number\n"),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    })
}

/// The log's verify report: a walk of the whole log, so it takes one of
/// the read permits.
async fn verify(access: &AuditAccess) -> Response<RespBody> {
    let Ok(permit) = access.reads.clone().acquire_owned().await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    };
    small(access, move |log| {
        let _permit = permit;
        log.verify()
    })
    .await
}

/// A small answer read from the log on a blocking thread, as JSON.
async fn small<T: serde::Serialize + Send + 'static>(
    access: &AuditAccess,
    read: impl FnOnce(&AuditLog) -> Result<T, AuditError> + Send + 'static,
) -> Response<RespBody> {
    let log = access.log.clone();
    let answer = match tokio::task::spawn_blocking(move || read(&log)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return failed(&e),
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "the read stopped unexpectedly\n"),
    };
    match serde_json::to_vec(&answer) {
        Ok(json) => {
            let mut resp = Response::new(full(Bytes::from(json)));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Err(e) => failed(&AuditError::Encode(e)),
    }
}

/// Why a read stopped part-way.
enum Stop {
    /// The reader went away; nothing to report.
    Gone,
    Failed(AuditError),
}

impl From<AuditError> for Stop {
    fn from(e: AuditError) -> Self {
        Stop::Failed(e)
    }
}

/// The records `filter` selects, one JSON line each, streamed from a
/// blocking thread as the walk reads them.
async fn records(access: &AuditAccess, filter: AuditFilter) -> Response<RespBody> {
    let Ok(permit) = access.reads.clone().acquire_owned().await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, BoxError>>(CHUNKS_AHEAD);
    let log = access.log.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut chunk = Vec::with_capacity(CHUNK_BYTES);
        let walked = log.read_matching(&filter, |stored| {
            serde_json::to_writer(&mut chunk, &stored).map_err(AuditError::Encode)?;
            chunk.push(b'\n');
            if chunk.len() >= CHUNK_BYTES {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES));
                tx.blocking_send(Ok(Bytes::from(full))).map_err(|_| Stop::Gone)?;
            }
            Ok::<(), Stop>(())
        });
        match walked {
            Ok(_) if !chunk.is_empty() => {
                let _ = tx.blocking_send(Ok(Bytes::from(chunk)));
            }
            Ok(_) | Err(Stop::Gone) => {}
            Err(Stop::Failed(e)) => {
                // An error frame aborts the response: the reader sees a
                // broken transfer, never a short list posing as whole.
                tracing::error!(error = %e, "reading the audit log for the admin endpoint failed");
                let _ = tx.blocking_send(Err(e.into()));
            }
        }
    });
    let mut resp = Response::new(RespBody::new(Chunks(rx)));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    resp
}

/// A response body fed by a channel.
struct Chunks(mpsc::Receiver<Result<Bytes, BoxError>>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|chunk| chunk.map(Frame::data)))
    }
}

fn failed(e: &AuditError) -> Response<RespBody> {
    tracing::error!(error = %e, "audit endpoint failed");
    text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n"))
}

fn text(status: StatusCode, body: &str) -> Response<RespBody> {
    let mut resp = Response::new(full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp
}
