//! Byte relays with an idle bound: CONNECT tunnels, WebSockets, and the
//! watchdog that closes an intercepted connection that has gone quiet.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// When a stream last moved a byte, shared between the stream and its
/// watchdog. Milliseconds since `origin`, so it fits an atomic.
#[derive(Clone)]
pub struct Activity {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
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
/// counts them.
pub struct Tracked<S> {
    inner: S,
    activity: Activity,
    read: u64,
    written: u64,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Activity) -> Tracked<S> {
        Tracked { inner, activity, read: 0, written: 0 }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.read += (buf.filled().len() - before) as u64;
            self.activity.touch();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = poll {
            self.written += n as u64;
            self.activity.touch();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            self.written += n as u64;
            self.activity.touch();
        }
        poll
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
    Relayed { up: a.read, down: a.written, error }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_and_passes_half_close_on() {
        let (mut client, mut proxy_a) = tokio::io::duplex(64);
        let (mut proxy_b, mut server) = tokio::io::duplex(64);
        let relay = tokio::spawn(async move { copy_with_idle(&mut proxy_a, &mut proxy_b, Duration::from_secs(5)).await });
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
    async fn idle_tunnel_is_closed() {
        let (_client, mut proxy_a) = tokio::io::duplex(64);
        let (mut proxy_b, _server) = tokio::io::duplex(64);
        let relayed = copy_with_idle(&mut proxy_a, &mut proxy_b, Duration::from_millis(100)).await;
        assert_eq!(relayed.error.map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
    }
}
