//! Ingress: the listeners. `gateway` takes OpenAI/Anthropic API calls
//! addressed to sluice; `admin` serves health and metrics; `proxy` is the
//! forward proxy. All three share one accept loop with connection slots
//! and graceful shutdown ([`accept_loop`]) and one HTTP server builder
//! ([`http_server`]), which also serves intercepted TLS connections.
//!
//! No client may hold a connection slot for free: a connection must send
//! its first byte (and, for HTTP/2, its whole preface) in time, an HTTP/1
//! request head in time, and is closed once it has had no request in flight
//! for the idle timeout. Slow request bodies are bounded where the body is
//! read (`pipeline::read_body`).

pub mod admin;
pub mod gateway;
pub mod netpolicy;
pub mod proxy;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::body::RespBody;
use crate::config::{AdminConfig, GatewayConfig};
use crate::telemetry;

/// How long a connection closed for idleness may take to say goodbye
/// (HTTP/2 GOAWAY) before it is dropped: a peer that never answers must
/// not keep its slot that way.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What an over-limit client reads before the connection closes.
const OVER_LIMIT_BODY: &str = "sluice: too many connections, try again shortly\n";

/// Connection limits and timeouts of one listener.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    /// Metrics label: `gateway` or `admin`.
    pub listener: &'static str,
    pub max_connections: usize,
    /// Accept to first byte, and to the end of an HTTP/2 preface.
    pub first_byte_timeout: Duration,
    /// HTTP/1 request head, from connection start or the previous response.
    pub header_read_timeout: Duration,
    /// No request in flight for this long closes the connection.
    pub idle_timeout: Duration,
    pub h2_keepalive_interval: Duration,
    pub h2_keepalive_timeout: Duration,
}

impl ConnLimits {
    pub fn gateway(cfg: &GatewayConfig) -> ConnLimits {
        ConnLimits {
            listener: "gateway",
            max_connections: cfg.max_connections,
            first_byte_timeout: Duration::from_millis(cfg.first_byte_timeout_ms),
            header_read_timeout: Duration::from_millis(cfg.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(cfg.idle_timeout_ms),
            h2_keepalive_interval: Duration::from_millis(cfg.http2_keepalive_interval_ms),
            h2_keepalive_timeout: Duration::from_millis(cfg.http2_keepalive_timeout_ms),
        }
    }

    /// The admin listener keeps its own connection slots but the gateway's
    /// timeouts.
    pub fn admin(admin: &AdminConfig, gateway: &GatewayConfig) -> ConnLimits {
        ConnLimits { listener: "admin", max_connections: admin.max_connections, ..ConnLimits::gateway(gateway) }
    }

    fn http(&self) -> auto::Builder<TokioExecutor> {
        http_server(self.header_read_timeout, Some((self.h2_keepalive_interval, self.h2_keepalive_timeout)))
    }
}

/// The HTTP/1.1 and HTTP/2 server for every listener and intercepted
/// connection: keep-alive, a request-head timeout against slow loris, and
/// HTTP/2 pings (`interval`, `timeout`) where given.
pub(crate) fn http_server(
    header_read_timeout: Duration,
    h2_keepalive: Option<(Duration, Duration)>,
) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout).keep_alive(true);
    let mut h2 = builder.http2();
    h2.timer(TokioTimer::new());
    if let Some((interval, timeout)) = h2_keepalive {
        h2.keep_alive_interval(interval).keep_alive_timeout(timeout);
    }
    builder
}

/// A listener's connection slots: a connection holds one until it closes,
/// and a client over the limit is answered 503 without being read.
pub(crate) struct Slots {
    /// Metrics label: `gateway`, `admin` or `proxy`.
    pub listener: &'static str,
    pub max: usize,
    pub semaphore: Arc<Semaphore>,
    /// What an over-limit client reads before the connection closes.
    pub over_limit_body: &'static str,
}

impl Slots {
    pub fn new(listener: &'static str, max: usize, over_limit_body: &'static str) -> Slots {
        Slots { listener, max, semaphore: Arc::new(Semaphore::new(max)), over_limit_body }
    }
}

/// The one accept loop: hand every connection that gets a slot to `serve`
/// until `shutdown` flips, then stop accepting and give connections up to
/// `grace` to finish (all slots back means all work is finished).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    slots: &Slots,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    mut serve: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Usually EMFILE; back off instead of spinning.
                        tracing::warn!(error = %e, listener = slots.listener, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Ok(permit) = slots.semaphore.clone().try_acquire_owned() else {
                    count(slots.listener, "over_limit");
                    tokio::spawn(refuse_over_limit(stream, slots.over_limit_body));
                    continue;
                };
                serve(stream, peer, permit);
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let all = u32::try_from(slots.max).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.semaphore.acquire_many(all)).await.is_err() {
        tracing::warn!(?grace, listener = slots.listener, "grace period over; dropping connections still open");
    }
}

/// Serve HTTP on a gateway or admin listener until `shutdown` flips, then
/// give in-flight requests up to `grace` to finish.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    limits: ConnLimits,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<RespBody>> + Send + 'static,
{
    let builder = Arc::new(limits.http());
    let slots = Slots::new(limits.listener, limits.max_connections, OVER_LIMIT_BODY);
    let limits = Arc::new(limits);
    let conn_shutdown = shutdown.clone();
    accept_loop(listener, &slots, shutdown, grace, |stream, peer, permit| {
        let conn = Conn {
            peer,
            builder: builder.clone(),
            limits: limits.clone(),
            shutdown: conn_shutdown.clone(),
            _slot: permit,
        };
        tokio::spawn(conn.run(stream, handler.clone()));
    })
    .await;
}

fn count(listener: &'static str, outcome: &'static str) {
    metrics::counter!(telemetry::LISTENER_CONNECTIONS, "listener" => listener, "outcome" => outcome).increment(1);
}

/// Answer a connection over the limit with a plain HTTP/1.1 503 and close
/// it, without reading its request: reading would cost the very resources
/// the limit protects. Bounded to one second so refusals cannot pile up.
async fn refuse_over_limit(mut stream: TcpStream, body: &'static str) {
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// One accepted connection and the slot it holds until it closes.
struct Conn {
    peer: SocketAddr,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Arc<ConnLimits>,
    shutdown: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    async fn run<H, F>(mut self, stream: TcpStream, handler: H)
    where
        H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<RespBody>> + Send + 'static,
    {
        let peer = self.peer;
        let stream = tokio::select! {
            read = read_preface(stream, self.limits.first_byte_timeout) => match read {
                Ok(stream) => stream,
                Err(e) => {
                    if let Some(outcome) = e.outcome() {
                        count(self.limits.listener, outcome);
                    }
                    tracing::debug!(error = %e, %peer, "connection dropped before its first request");
                    return;
                }
            },
            _ = self.shutdown.changed() => return,
        };
        let activity = Arc::new(Activity::new());
        let tracker = activity.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            let busy = Busy::begin(tracker.clone());
            async move {
                let resp = handler(req, peer).await;
                Ok::<_, Infallible>(resp.map(|body| InFlight { body, _busy: busy }))
            }
        });
        let conn = self.builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let mut draining = false;
        let mut hard_stop: Option<Instant> = None;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    return;
                }
                _ = self.shutdown.changed(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = activity.idle(self.limits.idle_timeout), if !draining => {
                    draining = true;
                    count(self.limits.listener, "idle_closed");
                    conn.as_mut().graceful_shutdown();
                    hard_stop = Some(Instant::now() + IDLE_CLOSE_GRACE);
                }
                _ = sleep_until_some(hard_stop) => return,
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Why a connection was dropped before HTTP began.
#[derive(Debug, thiserror::Error)]
enum PrefaceError {
    #[error("no byte received within {0:?}")]
    FirstByte(Duration),
    #[error("HTTP/2 connection preface incomplete after {0:?}")]
    Preface(Duration),
    #[error("closed before sending anything")]
    Closed,
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

impl PrefaceError {
    fn outcome(&self) -> Option<&'static str> {
        match self {
            PrefaceError::FirstByte(_) => Some("first_byte_timeout"),
            PrefaceError::Preface(_) => Some("preface_timeout"),
            PrefaceError::Closed | PrefaceError::Io(_) => None,
        }
    }
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Read until the protocol is known: the first byte that breaks the HTTP/2
/// preface, or the whole preface, within `limit`. hyper's own version
/// detection waits for these bytes with no deadline at all.
async fn read_preface(mut stream: TcpStream, limit: Duration) -> Result<Prefixed<TcpStream>, PrefaceError> {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf[filled..])).await {
            Ok(read) => read?,
            Err(_) if filled == 0 => return Err(PrefaceError::FirstByte(limit)),
            Err(_) => return Err(PrefaceError::Preface(limit)),
        };
        if n == 0 {
            if filled == 0 {
                return Err(PrefaceError::Closed);
            }
            // A truncated request: hyper reads the EOF and answers it.
            break;
        }
        filled += n;
        if filled == H2_PREFACE.len() || buf[..filled] != H2_PREFACE[..filled] {
            break;
        }
    }
    Ok(Prefixed { prefix: buf, start: 0, end: filled, inner: stream })
}

/// A stream that first replays the bytes [`read_preface`] took from it.
struct Prefixed<S> {
    prefix: [u8; H2_PREFACE.len()],
    start: usize,
    end: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start < this.end {
            let n = (this.end - this.start).min(buf.remaining());
            buf.put_slice(&this.prefix[this.start..this.start + n]);
            this.start += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Requests in flight on one connection and when the last one ended, for
/// the idle timeout. A request counts until its response body is dropped,
/// so a long stream is not "idle".
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the connection last became idle.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { opened: Instant::now(), in_flight: AtomicUsize::new(0), idle_since_ms: AtomicU64::new(0) }
    }

    /// Resolves once the connection has had nothing in flight for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            if self.in_flight.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(timeout).await;
                continue;
            }
            let since = self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
            let deadline = since + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// One request in flight; dropping it marks the end of its activity.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        // The time goes in before the count drops, so the idle check never
        // pairs "nothing in flight" with an old timestamp.
        self.0.idle_since_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight.
struct InFlight<B> {
    body: B,
    _busy: Busy,
}

impl<B: Body + Unpin> Body for InFlight<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    async fn replayed(stream: Prefixed<TcpStream>, n: usize) -> Vec<u8> {
        let mut stream = stream;
        let mut out = vec![0u8; n];
        stream.read_exact(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn silent_client_times_out_before_its_first_byte() {
        let (_client, server) = pair().await;
        let err = read_preface(server, Duration::from_millis(100)).await.err().unwrap();
        assert!(matches!(err, PrefaceError::FirstByte(_)), "{err}");
    }

    #[tokio::test]
    async fn stalled_http2_preface_times_out() {
        let (mut client, server) = pair().await;
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        let err = read_preface(server, Duration::from_millis(200)).await.err().unwrap();
        assert!(matches!(err, PrefaceError::Preface(_)), "{err}");
    }

    #[tokio::test]
    async fn http1_bytes_are_replayed_intact() {
        let (mut client, server) = pair().await;
        let request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n";
        client.write_all(request).await.unwrap();
        let stream = read_preface(server, Duration::from_secs(5)).await.unwrap();
        assert_eq!(replayed(stream, request.len()).await, request);
    }

    #[tokio::test]
    async fn http2_preface_is_replayed_intact() {
        let (mut client, server) = pair().await;
        client.write_all(H2_PREFACE).await.unwrap();
        client.write_all(b"\0\0\0\x04\0\0\0\0\0").await.unwrap();
        let stream = read_preface(server, Duration::from_secs(5)).await.unwrap();
        let got = replayed(stream, H2_PREFACE.len() + 9).await;
        assert_eq!(&got[..24], H2_PREFACE);
        assert_eq!(&got[24..], b"\0\0\0\x04\0\0\0\0\0");
    }

    #[tokio::test]
    async fn idle_waits_for_requests_in_flight() {
        let activity = Arc::new(Activity::new());
        let busy = Busy::begin(activity.clone());
        let timeout = Duration::from_millis(100);
        // Busy for longer than the timeout: not idle.
        assert!(tokio::time::timeout(Duration::from_millis(350), activity.idle(timeout)).await.is_err());
        drop(busy);
        let ended = Instant::now();
        activity.idle(timeout).await;
        assert!(Instant::now() >= ended + timeout);
    }
}
