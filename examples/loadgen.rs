//! Closed-loop HTTP load generator for benchmarking sluice and the fake
//! provider: N workers, each on its own persistent connection, send POSTs
//! back to back and record every latency.
//!
//! ```text
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080/v1/chat/completions \
//!     --concurrency 16 --duration 10 --warmup 2
//! cargo run --release --example loadgen -- --url https://api.openai.com/v1/chat/completions \
//!     --ca /tmp/fake-ca.pem --resolve api.openai.com:443:127.0.0.1:9443 --requests 1000
//! cargo run --release --example loadgen -- --url https://api.openai.com/v1/chat/completions \
//!     --proxy http://127.0.0.1:3128 --ca data/ca/ca.pem --concurrency 16
//! ```
//!
//! With `--proxy`, an https:// target is reached through a `CONNECT` tunnel
//! (TLS to the target inside it, as `HTTPS_PROXY` clients do) and an http://
//! target by sending absolute-form requests to the proxy.
//!
//! Latencies cover sending the request through reading the whole response
//! body; connecting (including CONNECT and TLS) is not timed (connections are
//! counted instead). Only 2xx answers enter the histogram, so fast failures
//! cannot flatter it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// Longest CONNECT response head accepted from a proxy.
const MAX_PROXY_HEAD: usize = 16 * 1024;

const DEFAULT_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":16}"#;

#[derive(Parser)]
#[command(about = "Closed-loop HTTP load generator (POST, persistent connections)")]
struct Args {
    /// Target URL, http:// or https://.
    #[arg(long)]
    url: Uri,
    /// Concurrent workers, each with its own connection.
    #[arg(long, short = 'c', default_value_t = 1)]
    concurrency: usize,
    /// Measured run time in seconds (default 10 unless --requests is given).
    #[arg(long, conflicts_with = "requests")]
    duration: Option<f64>,
    /// Stop after this many measured requests instead of after a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds of unmeasured load before measuring starts.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Extra CA certificate(s) to trust, PEM.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// HOST:PORT:ADDR or HOST:PORT:ADDR:PORT2 — connect there for HOST:PORT (like curl).
    /// With --proxy the proxy resolves the target, so this only applies to
    /// the proxy's own address.
    #[arg(long = "resolve")]
    resolve: Vec<String>,
    /// Request body file; default is a small OpenAI chat completion request.
    #[arg(long)]
    body: Option<PathBuf>,
    /// Extra request header 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Use HTTP/2 (ALPN h2 over TLS, prior knowledge over plain http).
    #[arg(long)]
    http2: bool,
    /// Per-request timeout in seconds; a timed-out request is a transport error.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Forward proxy http://HOST:PORT: https:// targets go through a CONNECT
    /// tunnel per connection, http:// targets as absolute-form requests.
    #[arg(long)]
    proxy: Option<Uri>,
    /// USER:TOKEN sent to the proxy as Proxy-Authorization: Basic.
    #[arg(long, requires = "proxy")]
    proxy_auth: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Everything a worker needs to connect and build requests; shared read-only.
struct Target {
    host: String,
    port: u16,
    /// The target's address, or the proxy's when there is one.
    connect_to: SocketAddr,
    /// Set when connections are CONNECT tunnels through a proxy.
    tunnel: Option<Tunnel>,
    uri: Uri,
    authority: String,
    http2: bool,
    tls: Option<TlsConnector>,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    timeout: Duration,
}

/// What a worker sends to open a CONNECT tunnel to the target.
struct Tunnel {
    /// `host:port` (IPv6 in brackets), the CONNECT request target.
    authority: String,
    proxy_authorization: Option<String>,
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

#[derive(Default)]
struct WorkerStats {
    latencies_us: Vec<u32>,
    ok: u64,
    status_errors: u64,
    transport_errors: u64,
    connections: u64,
    first_error: Option<String>,
}

#[derive(Clone, Copy)]
enum Stop {
    At(Instant),
    After(u64),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let target = Arc::new(build_target(&args).await?);
    let warmup = Duration::from_secs_f64(args.warmup.max(0.0));
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop = match args.requests {
        Some(n) => Stop::After(n),
        None => Stop::At(measure_from + Duration::from_secs_f64(args.duration.unwrap_or(10.0))),
    };
    let claimed = Arc::new(AtomicU64::new(0));

    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(worker(target.clone(), measure_from, stop, claimed.clone())))
        .collect();
    let mut total = WorkerStats::default();
    for w in workers {
        let s = w.await.context("worker panicked")?;
        total.latencies_us.extend(s.latencies_us);
        total.ok += s.ok;
        total.status_errors += s.status_errors;
        total.transport_errors += s.transport_errors;
        total.connections += s.connections;
        if total.first_error.is_none() {
            total.first_error = s.first_error;
        }
    }
    let elapsed = Instant::now().saturating_duration_since(measure_from);
    report(&args, &target, total, elapsed)
}

async fn build_target(args: &Args) -> anyhow::Result<Target> {
    let https = match args.url.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => bail!("--url must start with http:// or https://"),
    };
    let host = args.url.host().context("--url has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = args.url.port_u16().unwrap_or(if https { 443 } else { 80 });

    let mut overrides = HashMap::new();
    for spec in &args.resolve {
        let (key, addr) = parse_resolve(spec)?;
        overrides.insert(key, addr);
    }
    let proxy = match &args.proxy {
        Some(uri) => Some(parse_proxy(uri)?),
        None => None,
    };
    let proxy_authorization = args
        .proxy_auth
        .as_ref()
        .map(|creds| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(creds)));
    let (dial_host, dial_port) = match &proxy {
        Some((h, p)) => (h.clone(), *p),
        None => (host.clone(), port),
    };
    let connect_to = match overrides.get(&(dial_host.to_ascii_lowercase(), dial_port)) {
        Some(addr) => *addr,
        None => tokio::net::lookup_host((dial_host.as_str(), dial_port))
            .await
            .with_context(|| format!("resolving {dial_host}:{dial_port}"))?
            .next()
            .with_context(|| format!("{dial_host}:{dial_port} resolved to no address"))?,
    };
    // A plain-http target behind a proxy is not tunneled: the proxy gets
    // absolute-form requests, as curl and HTTP_PROXY clients send them.
    let forward_plain = proxy.is_some() && !https;
    if forward_plain && args.http2 {
        bail!("--http2 with an http:// target needs a direct connection, not --proxy");
    }
    let tunnel = if proxy.is_some() && https {
        Some(Tunnel {
            authority: if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") },
            proxy_authorization: proxy_authorization.clone(),
        })
    } else {
        None
    };

    let tls = if https { Some(TlsConnector::from(Arc::new(tls_config(args)?))) } else { None };

    // Leave the default port out of Host, as browsers and curl do.
    let authority = match args.url.port_u16() {
        Some(p) if p != if https { 443 } else { 80 } => {
            format!("{}:{p}", args.url.host().unwrap_or_default())
        }
        _ => args.url.host().unwrap_or_default().to_string(),
    };
    let path = args.url.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    // HTTP/2 carries scheme and authority as pseudo-headers, so it needs the
    // absolute form; HTTP/1.1 sends the origin form plus a Host header
    // (absolute form too when a proxy forwards it).
    let uri: Uri = if args.http2 || forward_plain {
        format!("{}://{authority}{path}", if https { "https" } else { "http" }).parse()?
    } else {
        path.parse()?
    };

    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h.split_once(':').with_context(|| format!("--header {h:?} is not 'Name: value'"))?;
        headers.push((
            HeaderName::from_bytes(name.trim().as_bytes()).with_context(|| format!("bad header name in {h:?}"))?,
            HeaderValue::from_str(value.trim()).with_context(|| format!("bad header value in {h:?}"))?,
        ));
    }
    if !headers.iter().any(|(n, _)| n == CONTENT_TYPE) {
        headers.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
    }
    if forward_plain {
        if let Some(value) = &proxy_authorization {
            headers
                .push((hyper::header::PROXY_AUTHORIZATION, HeaderValue::from_str(value).context("bad --proxy-auth")?));
        }
    }
    let body = match &args.body {
        Some(path) => Bytes::from(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
        None => Bytes::from_static(DEFAULT_BODY.as_bytes()),
    };

    Ok(Target {
        host,
        port,
        connect_to,
        tunnel,
        uri,
        authority,
        http2: args.http2,
        tls,
        headers,
        body,
        timeout: Duration::from_secs_f64(args.timeout),
    })
}

/// Splits `http://HOST:PORT` into host and port (default 80).
fn parse_proxy(uri: &Uri) -> anyhow::Result<(String, u16)> {
    if uri.scheme_str() != Some("http") {
        bail!("--proxy must be http://HOST:PORT (TLS to the proxy is not supported)");
    }
    let authority = uri.authority().context("--proxy has no host")?;
    if authority.as_str().contains('@') {
        bail!("put proxy credentials in --proxy-auth, not in the --proxy URL");
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
    Ok((host, authority.port_u16().unwrap_or(80)))
}

/// Parses `HOST:PORT:ADDR` (ADDR an IP, connecting on PORT) or
/// `HOST:PORT:ADDR:PORT2` / `HOST:PORT:[V6]:PORT2`.
fn parse_resolve(spec: &str) -> anyhow::Result<((String, u16), SocketAddr)> {
    let mut parts = spec.splitn(3, ':');
    let (Some(host), Some(port), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("--resolve {spec:?} is not HOST:PORT:ADDR");
    };
    let port: u16 = port.parse().with_context(|| format!("bad port in --resolve {spec:?}"))?;
    let addr = if let Ok(sock) = addr.parse::<SocketAddr>() {
        sock
    } else {
        let ip: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .with_context(|| format!("bad address in --resolve {spec:?}"))?;
        SocketAddr::new(ip, port)
    };
    Ok(((host.to_ascii_lowercase(), port), addr))
}

fn tls_config(args: &Args) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &args.ca {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots
                .add(cert.with_context(|| format!("parsing {}", path.display()))?)
                .with_context(|| format!("adding CA from {}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            bail!("{} holds no PEM certificate", path.display());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = if args.http2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(config)
}

async fn connect(target: &Target) -> anyhow::Result<Sender> {
    let mut tcp =
        TcpStream::connect(target.connect_to).await.with_context(|| format!("connecting to {}", target.connect_to))?;
    tcp.set_nodelay(true)?;
    if let Some(tunnel) = &target.tunnel {
        open_tunnel(&mut tcp, tunnel)
            .await
            .with_context(|| format!("CONNECT {} via {}", tunnel.authority, target.connect_to))?;
    }
    match &target.tls {
        None => handshake(tcp, target.http2).await,
        Some(tls) => {
            let name = ServerName::try_from(target.host.clone())
                .with_context(|| format!("{:?} is not a valid TLS server name", target.host))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS handshake with {}:{}", target.host, target.port))?;
            if target.http2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                bail!("server did not agree to HTTP/2 (ALPN h2)");
            }
            handshake(stream, target.http2).await
        }
    }
}

/// Sends `CONNECT` and reads the proxy's answer; on a 2xx the stream is a
/// raw tunnel to the target.
async fn open_tunnel(tcp: &mut TcpStream, tunnel: &Tunnel) -> anyhow::Result<()> {
    let mut head = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n", tunnel.authority);
    if let Some(auth) = &tunnel.proxy_authorization {
        head.push_str("Proxy-Authorization: ");
        head.push_str(auth);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await?;

    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            bail!("proxy closed the connection before answering CONNECT");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_PROXY_HEAD {
            bail!("proxy's CONNECT answer head is over {MAX_PROXY_HEAD} bytes");
        }
    };
    let status_line = String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == b'\r').unwrap_or(end)]).into_owned();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("bad CONNECT answer {status_line:?}"))?;
    if !(200..300).contains(&status) {
        bail!("proxy answered {status_line:?}");
    }
    // The target speaks only after our ClientHello, so anything past the
    // head means the proxy is not behaving as a tunnel.
    if buf.len() > end {
        bail!("proxy sent {} bytes after its CONNECT answer", buf.len() - end);
    }
    Ok(())
}

async fn handshake<I>(io: I, use_http2: bool) -> anyhow::Result<Sender>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if use_http2 {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = http1::handshake(io).await?;
        tokio::spawn(conn);
        Ok(Sender::H1(sender))
    }
}

fn build_request(target: &Target) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut req = Request::builder().method(Method::POST).uri(target.uri.clone());
    if !target.http2 {
        req = req.header(HOST, target.authority.as_str());
    }
    for (name, value) in &target.headers {
        req = req.header(name, value);
    }
    Ok(req.body(Full::new(target.body.clone()))?)
}

/// Sends one request and reads the whole answer; returns the status.
async fn exchange(sender: &mut Sender, req: Request<Full<Bytes>>) -> anyhow::Result<u16> {
    let resp = match sender {
        Sender::H1(s) => s.send_request(req).await?,
        Sender::H2(s) => s.send_request(req).await?,
    };
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}

async fn ready(sender: &mut Sender) -> bool {
    match sender {
        Sender::H1(s) => s.ready().await.is_ok(),
        Sender::H2(s) => s.ready().await.is_ok(),
    }
}

async fn worker(target: Arc<Target>, measure_from: Instant, stop: Stop, claimed: Arc<AtomicU64>) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut sender: Option<Sender> = None;
    loop {
        if let Stop::At(end) = stop {
            if Instant::now() >= end {
                break;
            }
        }

        // A closed keep-alive connection is not a failed request: reconnect.
        let live = match sender.as_mut() {
            Some(s) => ready(s).await,
            None => false,
        };
        if !live {
            match connect(&target).await {
                Ok(s) => {
                    stats.connections += 1;
                    sender = Some(s);
                }
                Err(e) => {
                    sender = None;
                    stats.first_error.get_or_insert_with(|| format!("{e:#}"));
                    if Instant::now() >= measure_from {
                        // A failed connect uses up a request, or a run with
                        // --requests against a refusing server never ends.
                        if let Stop::After(n) = stop {
                            if claimed.fetch_add(1, Ordering::Relaxed) >= n {
                                break;
                            }
                        }
                        stats.transport_errors += 1;
                    }
                    // Don't spin on a refusing server.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };

        let req = match build_request(&target) {
            Ok(r) => r,
            Err(e) => {
                stats.first_error.get_or_insert_with(|| format!("{e:#}"));
                stats.transport_errors += 1;
                break;
            }
        };
        let counted = Instant::now() >= measure_from;
        if let Stop::After(n) = stop {
            if counted && claimed.fetch_add(1, Ordering::Relaxed) >= n {
                break;
            }
        }
        let started = Instant::now();
        let outcome = tokio::time::timeout(target.timeout, exchange(s, req)).await;
        let latency = started.elapsed();
        match outcome {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                if counted {
                    stats.ok += 1;
                    stats.latencies_us.push(latency.as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Ok(Ok(status)) => {
                if counted {
                    stats.status_errors += 1;
                }
                stats.first_error.get_or_insert_with(|| format!("HTTP status {status}"));
            }
            Ok(Err(e)) => {
                sender = None;
                if counted {
                    stats.transport_errors += 1;
                }
                stats.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(_) => {
                sender = None;
                if counted {
                    stats.transport_errors += 1;
                }
                stats.first_error.get_or_insert_with(|| "request timed out".to_string());
            }
        }
    }
    stats
}

/// Nearest-rank percentile of sorted micros, in milliseconds.
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    sorted_us[rank.clamp(1, sorted_us.len()) - 1] as f64 / 1000.0
}

fn report(args: &Args, target: &Target, mut total: WorkerStats, elapsed: Duration) -> anyhow::Result<()> {
    total.latencies_us.sort_unstable();
    let lat = &total.latencies_us;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let requests = total.ok + total.status_errors + total.transport_errors;
    let rps = total.ok as f64 / secs;
    let mean_ms =
        if lat.is_empty() { 0.0 } else { lat.iter().map(|&u| u as f64).sum::<f64>() / lat.len() as f64 / 1000.0 };
    let (p50, p90, p99, p999) =
        (percentile_ms(lat, 50.0), percentile_ms(lat, 90.0), percentile_ms(lat, 99.0), percentile_ms(lat, 99.9));
    let max = lat.last().map(|&u| u as f64 / 1000.0).unwrap_or(0.0);
    let protocol = if target.http2 { "HTTP/2" } else { "HTTP/1.1" };
    let round3 = |x: f64| (x * 1000.0).round() / 1000.0;

    if args.json {
        let out = serde_json::json!({
            "url": args.url.to_string(),
            "proxy": args.proxy.as_ref().map(|p| p.to_string()),
            "protocol": protocol,
            "concurrency": args.concurrency,
            "elapsed_s": round3(secs),
            "requests": requests,
            "ok": total.ok,
            "errors_status": total.status_errors,
            "errors_transport": total.transport_errors,
            "connections": total.connections,
            "rps": (rps * 10.0).round() / 10.0,
            "mean_ms": round3(mean_ms),
            "p50_ms": round3(p50),
            "p90_ms": round3(p90),
            "p99_ms": round3(p99),
            "p999_ms": round3(p999),
            "max_ms": round3(max),
        });
        println!("{out}");
    } else {
        let via = match (&args.proxy, &target.tunnel) {
            (Some(_), Some(_)) => format!("CONNECT tunnel through proxy {}", target.connect_to),
            (Some(_), None) => format!("proxy {}", target.connect_to),
            (None, _) => target.connect_to.to_string(),
        };
        println!("url          {} ({protocol}, via {via})", args.url);
        println!("concurrency  {}  connections {}", args.concurrency, total.connections);
        println!("elapsed      {secs:.3} s (after {:.1} s warmup)", args.warmup);
        println!("requests     {requests}");
        println!("errors       {} non-2xx, {} transport", total.status_errors, total.transport_errors);
        println!("rps          {rps:.1} (2xx only)");
        println!(
            "latency ms   p50 {p50:.3}  p90 {p90:.3}  p99 {p99:.3}  p99.9 {p999:.3}  max {max:.3}  mean {mean_ms:.3}"
        );
    }
    if let Some(e) = &total.first_error {
        eprintln!("first error: {e}");
    }
    if total.ok == 0 {
        // A plain message and status; an anyhow error would add a backtrace.
        eprintln!("loadgen: no request succeeded");
        std::process::exit(1);
    }
    Ok(())
}
