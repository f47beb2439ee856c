//! The upstream side of one intercepted proxy connection: a dedicated,
//! verified connection to the origin the client asked for, speaking the
//! protocol the origin chose by ALPN from the client's own offer.
//!
//! Unlike the gateway's pooled client, the proxy connects to the address it
//! resolved and checked at CONNECT time, so it keeps one connection per
//! client connection (as mitmproxy does) and reconnects to that same address
//! if the origin closes it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::upstream::{error_chain, UpstreamError};

pub use crate::body::OriginBody;

pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_H1: &[u8] = b"http/1.1";

/// How to reach one origin, fixed at CONNECT time.
#[derive(Clone)]
pub struct OriginTarget {
    /// Lower-case host name, as in the CONNECT line (and SNI).
    pub host: String,
    pub port: u16,
    /// The checked address; never re-resolved.
    pub addr: SocketAddr,
    /// Verifying TLS settings; `None` for plain HTTP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

enum Sender {
    H1(http1::SendRequest<OriginBody>),
    H2(http2::SendRequest<OriginBody>),
}

/// A live connection to an origin, shared by the requests of one client
/// connection.
pub struct Origin {
    target: OriginTarget,
    /// ALPN protocols offered upstream: the client's offer, so that both
    /// sides end up speaking the same version.
    offer: Vec<Vec<u8>>,
    h2: bool,
    sender: Mutex<Option<Sender>>,
}

type Io = TokioIo<Box<dyn IoStream>>;

trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> IoStream for T {}

impl Origin {
    /// Connect (TCP + verified TLS) offering `offer` by ALPN; the protocol
    /// the origin picks is the one the client must be given.
    pub async fn connect(target: OriginTarget, offer: Vec<Vec<u8>>) -> Result<Origin, UpstreamError> {
        let (io, h2) = open(&target, &offer).await?;
        let sender = handshake(io, h2).await?;
        Ok(Origin { target, offer, h2, sender: Mutex::new(Some(sender)) })
    }

    pub fn target(&self) -> &OriginTarget {
        &self.target
    }

    /// Whether the origin chose HTTP/2.
    pub fn is_h2(&self) -> bool {
        self.h2
    }

    /// Send a request (origin-form URI, client's headers) and wait for the
    /// response head. Reconnects once if the origin had closed the connection.
    pub async fn send(&self, mut req: Request<OriginBody>) -> Result<Response<Incoming>, UpstreamError> {
        self.address(&mut req)?;
        let pending = {
            let mut slot = self.sender.lock().await;
            let live = match slot.as_mut() {
                Some(Sender::H1(s)) => s.ready().await.is_ok(),
                Some(Sender::H2(s)) => s.ready().await.is_ok(),
                None => false,
            };
            if !live {
                let (io, h2) = open(&self.target, &self.offer).await?;
                if h2 != self.h2 {
                    return Err(UpstreamError::Connect("origin changed its protocol on reconnect".into()));
                }
                *slot = Some(handshake(io, h2).await?);
            }
            match slot.as_mut() {
                Some(Sender::H1(s)) => s.send_request(req),
                Some(Sender::H2(s)) => {
                    let fut = s.send_request(req);
                    return self.wait(fut).await;
                }
                None => return Err(UpstreamError::Connect("no origin connection".into())),
            }
        };
        self.wait(pending).await
    }

    async fn wait(
        &self,
        fut: impl std::future::Future<Output = hyper::Result<Response<Incoming>>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.target.response_timeout, fut).await {
            Err(_) => Err(UpstreamError::Timeout(self.target.response_timeout)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(UpstreamError::Request(error_chain(&e))),
        }
    }

    /// A fresh HTTP/1.1 connection that supports upgrades, for WebSockets.
    pub async fn send_upgradable(&self, mut req: Request<OriginBody>) -> Result<Response<Incoming>, UpstreamError> {
        let (io, _) = open(&self.target, &[ALPN_H1.to_vec()]).await?;
        let (mut sender, conn) = http1::handshake(io).await.map_err(|e| UpstreamError::Connect(error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "origin upgrade connection ended with an error");
            }
        });
        let authority = self.authority();
        *req.uri_mut() = origin_form(req.uri());
        if let Ok(host) = HeaderValue::from_str(&authority) {
            req.headers_mut().insert(http::header::HOST, host);
        }
        self.wait(sender.send_request(req)).await
    }

    fn authority(&self) -> String {
        let default_port = if self.target.tls.is_some() { 443 } else { 80 };
        if self.target.port == default_port {
            self.target.host.clone()
        } else {
            format!("{}:{}", self.target.host, self.target.port)
        }
    }

    /// HTTP/2 wants the scheme and authority in the URI; HTTP/1.1 wants the
    /// origin form and a Host header.
    fn address(&self, req: &mut Request<OriginBody>) -> Result<(), UpstreamError> {
        let authority = self.authority();
        if self.h2 {
            let scheme = if self.target.tls.is_some() { "https" } else { "http" };
            let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            *req.uri_mut() = format!("{scheme}://{authority}{path}")
                .parse()
                .map_err(|e| UpstreamError::Request(format!("bad upstream URI: {e}")))?;
            req.headers_mut().remove(http::header::HOST);
        } else {
            *req.uri_mut() = origin_form(req.uri());
            let host = HeaderValue::from_str(&authority).map_err(|e| UpstreamError::Request(e.to_string()))?;
            req.headers_mut().insert(http::header::HOST, host);
        }
        Ok(())
    }
}

fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query().and_then(|p| p.as_str().parse().ok()).unwrap_or_else(|| Uri::from_static("/"))
}

/// TCP to the checked address, then TLS with the host name as SNI.
async fn open(target: &OriginTarget, offer: &[Vec<u8>]) -> Result<(Io, bool), UpstreamError> {
    let tcp = match tokio::time::timeout(target.connect_timeout, TcpStream::connect(target.addr)).await {
        Err(_) => return Err(UpstreamError::Timeout(target.connect_timeout)),
        Ok(Err(e)) => return Err(UpstreamError::Connect(format!("{}: {e}", target.addr))),
        Ok(Ok(tcp)) => tcp,
    };
    tcp.set_nodelay(true).map_err(|e| UpstreamError::Connect(e.to_string()))?;
    let Some(tls) = &target.tls else {
        return Ok((TokioIo::new(Box::new(tcp)), false));
    };
    let mut config = (**tls).clone();
    config.alpn_protocols = offer.to_vec();
    let name = ServerName::try_from(target.host.clone())
        .map_err(|e| UpstreamError::Connect(format!("{} is not a valid TLS name: {e}", target.host)))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = match tokio::time::timeout(target.connect_timeout, connector.connect(name, tcp)).await {
        Err(_) => return Err(UpstreamError::Timeout(target.connect_timeout)),
        Ok(Err(e)) => return Err(UpstreamError::Connect(format!("TLS to {}: {}", target.host, error_chain(&e)))),
        Ok(Ok(stream)) => stream,
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    Ok((TokioIo::new(Box::new(stream)), h2))
}

async fn handshake(io: Io, h2: bool) -> Result<Sender, UpstreamError> {
    let fail = |e: hyper::Error| UpstreamError::Connect(error_chain(&e));
    if h2 {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await.map_err(fail)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "origin h2 connection ended with an error");
            }
        });
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = http1::handshake(io).await.map_err(fail)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "origin connection ended with an error");
            }
        });
        Ok(Sender::H1(sender))
    }
}
