//! Byte relays with an idle bound: CONNECT tunnels, WebSockets, and the
//! watchdog that closes an intercepted connection that has gone quiet; and
//! [`TunnelReport`], what the audit record of one CONNECT says.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// When a stream last moved a byte, and how many it moved each way, shared
/// between the stream, its watchdog and whoever audits it once the stream
/// itself has been handed to TLS and HTTP. Milliseconds since `origin`, so
/// it fits an atomic.
#[derive(Clone)]
pub struct Activity {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            read: Arc::new(AtomicU64::new(0)),
            written: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Bytes read from and written to the tracked stream so far.
    pub fn bytes(&self) -> (u64, u64) {
        (self.read.load(Ordering::Relaxed), self.written.load(Ordering::Relaxed))
    }

    fn idle_for(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    /// Completes once nothing has moved for `idle`.
    pub async fn idle(&self, idle: Duration) {
        loop {
            let quiet = self.idle_for();
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

/// A stream that reports every byte it moves to an [`Activity`], and
/// counts them there.
pub struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Activity) -> Tracked<S> {
        Tracked { inner, activity }
    }

    fn moved(&self, counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
        self.activity.touch();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.moved(&self.activity.read, buf.filled().len() - before);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = poll {
            self.moved(&self.activity.written, n);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            self.moved(&self.activity.written, n);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A stream whose first bytes were taken to look at them (the ClientHello)
/// and are handed out again before anything else is read, so whoever reads
/// next sees the stream exactly as the client sent it.
pub struct Rewound<S> {
    taken: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewound<S> {
    pub fn new(inner: S, taken: Vec<u8>) -> Rewound<S> {
        Rewound { taken, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.taken.len() {
            let rest = &this.taken[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.taken.len() {
                // Handed out in full: the buffer is not needed for the
                // rest of a long-lived tunnel.
                this.taken = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What a relay moved before it ended, and why it ended if not cleanly.
#[derive(Debug)]
pub struct Relayed {
    /// Bytes from `a` to `b` (client to origin).
    pub up: u64,
    /// Bytes from `b` to `a`.
    pub down: u64,
    pub error: Option<io::Error>,
}

/// Copy both ways until both sides have closed, or nothing moved for
/// `idle`. A client that half-closes (sends FIN) has that passed on, and the
/// other direction keeps flowing until the server closes too.
pub async fn copy_with_idle<A, B>(a: &mut A, b: &mut B, idle: Duration) -> Relayed
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut a = Tracked::new(a, activity.clone());
    let error = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut a, b) => copied.err(),
        _ = activity.idle(idle) => Some(io::Error::new(io::ErrorKind::TimedOut, format!("idle for {idle:?}"))),
    };
    let (up, down) = activity.bytes();
    Relayed { up, down, error }
}

/// How a CONNECT that was answered 200 ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Relayed byte for byte to the address the client named.
    Tunneled,
    /// TLS terminated by sluice and every request inspected. `by_sni`: the
    /// ClientHello named an intercepted host the CONNECT line did not.
    Intercepted { by_sni: bool },
    /// Closed (or every request refused) by sluice. `kind` is a metrics
    /// label; `reason` is sluice's own words, never the client's.
    Refused { kind: &'static str, reason: String },
    /// Ended by an error before any request could be served.
    Failed { kind: &'static str, reason: String },
}

impl Outcome {
    /// The audit record's `decision`.
    pub fn decision(&self) -> &'static str {
        match self {
            Outcome::Tunneled => "tunnel",
            Outcome::Intercepted { .. } => "intercept",
            Outcome::Refused { .. } => "block",
            Outcome::Failed { .. } => "error",
        }
    }

    /// Label for `sluice_proxy_connects_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Tunneled => "tunnel",
            Outcome::Intercepted { by_sni: false } => "intercept",
            Outcome::Intercepted { by_sni: true } => "intercept_by_sni",
            Outcome::Refused { kind, .. } | Outcome::Failed { kind, .. } => kind,
        }
    }
}

/// One CONNECT as its audit record tells it: where the client said it was
/// going (the CONNECT host, and the SNI of its ClientHello), what moved,
/// for how long, and what sluice did with it.
#[derive(Clone, Debug)]
pub struct TunnelReport {
    /// The CONNECT line's host, lower-case.
    pub connect_host: String,
    pub port: u16,
    /// The ClientHello's server name, when one was read.
    pub sni: Option<String>,
    /// The ClientHello carried an Encrypted ClientHello extension.
    pub ech: bool,
    /// Bytes from the client, and to it, on the client's side of sluice.
    pub up: u64,
    pub down: u64,
    /// From the CONNECT request to the end of the tunnel.
    pub duration: Duration,
    pub outcome: Outcome,
    /// Why the relay stopped, if not by both sides closing (idle, reset).
    pub ended: Option<String>,
}

impl TunnelReport {
    /// The host the traffic was really for: the SNI when there was one.
    pub fn target_host(&self) -> &str {
        self.sni.as_deref().unwrap_or(&self.connect_host)
    }

    /// The record's `reason`: what happened, in sluice's words. Host names
    /// live in `host` and `signals`, so nothing here comes from the client.
    pub fn reason(&self) -> String {
        let what = match &self.outcome {
            Outcome::Tunneled => "tunneled".to_string(),
            Outcome::Intercepted { by_sni: false } => "intercepted".to_string(),
            Outcome::Intercepted { by_sni: true } => {
                "intercepted: the TLS server name is an intercepted host".to_string()
            }
            Outcome::Refused { reason, .. } => format!("refused: {reason}"),
            Outcome::Failed { reason, .. } => format!("failed: {reason}"),
        };
        let mut reason =
            format!("{what}; {} bytes up, {} bytes down in {} ms", self.up, self.down, self.duration.as_millis());
        if let Some(ended) = &self.ended {
            reason.push_str(&format!(" (ended: {ended})"));
        }
        reason
    }

    /// The record's `signals`: the tunnel's facts as numbers and host names.
    pub fn signals(&self) -> serde_json::Value {
        serde_json::json!({
            "tunnel": {
                "connect_host": self.connect_host,
                "port": self.port,
                "sni": self.sni,
                "ech": self.ech,
                "bytes_up": self.up,
                "bytes_down": self.down,
                "duration_ms": u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
                "outcome": self.outcome.label(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_and_passes_half_close_on() {
        let (mut client, mut proxy_a) = tokio::io::duplex(64);
        let (mut proxy_b, mut server) = tokio::io::duplex(64);
        let relay =
            tokio::spawn(async move { copy_with_idle(&mut proxy_a, &mut proxy_b, Duration::from_secs(5)).await });
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        // The other direction still flows after the client's FIN.
        server.write_all(b"world!").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"world!");
        let relayed = relay.await.unwrap();
        assert!(relayed.error.is_none(), "{relayed:?}");
        assert_eq!((relayed.up, relayed.down), (5, 6));
    }

    #[tokio::test]
    async fn rewound_bytes_come_first_and_writes_pass_through() {
        let (mut client, inner) = tokio::io::duplex(64);
        let mut rewound = Rewound::new(inner, b"hello ".to_vec());
        client.write_all(b"world").await.unwrap();
        client.shutdown().await.unwrap();
        let mut small = [0u8; 4];
        rewound.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hell");
        let mut rest = Vec::new();
        rewound.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"o world");
        rewound.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }

    #[test]
    fn reports_name_what_happened_without_client_text() {
        let report = TunnelReport {
            connect_host: "203.0.113.7".into(),
            port: 443,
            sni: Some("api.openai.com".into()),
            ech: false,
            up: 517,
            down: 4301,
            duration: Duration::from_millis(1250),
            outcome: Outcome::Intercepted { by_sni: true },
            ended: None,
        };
        assert_eq!(report.target_host(), "api.openai.com");
        assert_eq!(report.outcome.decision(), "intercept");
        let reason = report.reason();
        assert!(reason.contains("517 bytes up, 4301 bytes down in 1250 ms"), "{reason}");
        assert!(!reason.contains("openai") && !reason.contains("203.0"), "{reason}");
        let signals = report.signals();
        assert_eq!(signals["tunnel"]["sni"], "api.openai.com");
        assert_eq!(signals["tunnel"]["bytes_up"], 517);
        assert_eq!(signals["tunnel"]["outcome"], "intercept_by_sni");
    }

    #[tokio::test]
    async fn idle_tunnel_is_closed() {
        let (_client, mut proxy_a) = tokio::io::duplex(64);
        let (mut proxy_b, _server) = tokio::io::duplex(64);
        let relayed = copy_with_idle(&mut proxy_a, &mut proxy_b, Duration::from_millis(100)).await;
        assert_eq!(relayed.error.map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
    }
}
