//! A stand-in for cloud LLM providers (OpenAI chat completions, Anthropic
//! messages) for integration tests and benchmarks: an HTTPS server on loopback
//! with its own throwaway CA, speaking HTTP/1.1 and HTTP/2, answering with
//! canned but realistically shaped JSON and SSE, and recording every request.
//!
//! Self-contained on purpose (no `crate::` paths): integration tests and
//! examples include it with `#[path = "..."] mod fake_provider;`.
//!
//! Special request models change behaviour, so tests can provoke upstream
//! failures without extra API:
//! - `fake-slow`: waits 30 s before sending response headers;
//! - `fake-500`: answers 500 with a provider-style error body;
//! - `fake-stream-held`: a streamed answer sends its first event, then waits
//!   for [`FakeProvider::release_streams`].

// Each test binary uses a different subset of this module.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// The assistant text every answer carries; streamed answers split it into
/// [`REPLY_PIECES`].
const REPLY_TEXT: &str = "Hello from the fake provider.";
const REPLY_PIECES: [&str; 3] = ["Hello", " from the fake", " provider."];
const REPLY_TOKENS: u64 = 7;
const SLOW_DELAY: Duration = Duration::from_secs(30);

/// One request as the fake provider received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query string, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Lower-case names in arrival order. Over HTTP/2 the `:authority`
    /// pseudo-header is reported as `host`, so tests can check the upstream
    /// host the same way for both protocols.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// "HTTP/1.1" or "HTTP/2.0".
    pub version: String,
}

/// A running fake provider. Dropping it stops accepting and closes its
/// connections.
pub struct FakeProvider {
    addr: SocketAddr,
    ca_pem: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    recording: AtomicBool,
    hold: AtomicBool,
    /// Bumped by every `release_streams`; a held stream waits until it moves
    /// past the value it saw when the request arrived.
    release_epoch: watch::Sender<u64>,
    next_id: AtomicU64,
}

impl Shared {
    fn requests(&self) -> MutexGuard<'_, Vec<Recorded>> {
        // A panic while holding the lock leaves a Vec that is still valid.
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FakeProvider {
    /// Starts on 127.0.0.1 with an OS-chosen port.
    pub async fn start() -> FakeProvider {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr`. Panics when it cannot bind: this is test support,
    /// and a test without its upstream cannot run.
    pub async fn start_on(addr: SocketAddr) -> FakeProvider {
        let (ca_pem, tls) = make_tls();
        let listener =
            TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("fake provider: cannot bind {addr}: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("fake provider: no local address: {e}"));
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            recording: AtomicBool::new(true),
            hold: AtomicBool::new(false),
            release_epoch: watch::channel(0).0,
            next_id: AtomicU64::new(1),
        });
        let server = tokio::spawn(accept_loop(listener, TlsAcceptor::from(Arc::new(tls)), shared.clone()));
        FakeProvider { addr, ca_pem, shared, server }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn write_ca(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.ca_pem)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests().clone()
    }

    /// Turns request recording on (the default) or off. Long benchmark runs
    /// turn it off, or the record would grow without bound.
    pub fn record_requests(&self, on: bool) {
        self.shared.recording.store(on, Ordering::SeqCst);
    }

    /// Streamed answers started from now on send their first event, then
    /// wait for [`release_streams`](Self::release_streams).
    pub fn hold_streams(&self) {
        self.shared.hold.store(true, Ordering::SeqCst);
    }

    /// Lets every held stream finish, and stops holding new ones.
    pub fn release_streams(&self) {
        self.shared.hold.store(false, Ordering::SeqCst);
        self.shared.release_epoch.send_modify(|epoch| *epoch += 1);
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        // The accept task owns the connection tasks, so this ends them too.
        self.server.abort();
    }
}

/// Makes a fresh CA and a leaf for the provider host names, and the rustls
/// server config serving that leaf. Returns the CA PEM with it.
fn make_tls() -> (String, rustls::ServerConfig) {
    // rcgen and rustls fail here only on programming errors (bad constant
    // names, unsupported algorithms), never on input, so panicking is right.
    let ca_key = KeyPair::generate().expect("generate CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params.distinguished_name.push(DnType::CommonName, "sluice fake provider CA");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");

    let leaf_key = KeyPair::generate().expect("generate leaf key");
    let mut leaf_params = CertificateParams::new(vec![
        "api.openai.com".to_string(),
        "api.anthropic.com".to_string(),
        "bedrock-runtime.us-east-1.amazonaws.com".to_string(),
        "generativelanguage.googleapis.com".to_string(),
        "huggingface.co".to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ])
    .expect("leaf params");
    leaf_params.distinguished_name = DistinguishedName::new();
    leaf_params.distinguished_name.push(DnType::CommonName, "sluice fake provider");
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &ca_cert, &ca_key).expect("sign leaf");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("rcgen key matches its certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (ca_cert.pem(), config)
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    // Owning the connections here means aborting this task drops them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    connections.spawn(serve_connection(tcp, acceptor.clone(), shared.clone()));
                }
                // Out of file descriptors and the like: back off rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(tcp: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    let service = service_fn(move |req| handle(shared.clone(), req));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    // Connection errors (client gone, protocol violations) end just this
    // connection; there is nobody to report them to.
    let _ = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await;
}

type ResponseBody = BoxBody<Bytes, Infallible>;

#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    OpenAi,
    Anthropic,
}

async fn handle(shared: Arc<Shared>, mut req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
    if req.uri().path() == "/v1/realtime" && req.headers().contains_key(hyper::header::UPGRADE) {
        return Ok(websocket_echo(&shared, &mut req));
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if shared.recording.load(Ordering::SeqCst) {
        record(&shared, &parts, &body);
    }

    let response = match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/v1/chat/completions") => {
            let mut response = generate(&shared, Dialect::OpenAi, &body).await;
            // The account OpenAI names for the key: a personal one.
            response.headers_mut().insert("openai-organization", HeaderValue::from_static(FAKE_OPENAI_ORGANIZATION));
            response
        }
        (&Method::GET, path) if path.contains("/resolve/") => model_file(),
        (&Method::POST, "/v1/messages") => generate(&shared, Dialect::Anthropic, &body).await,
        (&Method::GET, "/v1/models") => json_response(StatusCode::OK, &models_list()),
        _ => error_response(Dialect::OpenAi, StatusCode::NOT_FOUND, "invalid_request_error", "Unknown request URL."),
    };
    Ok(response)
}

/// Appends the request to the record, as received.
fn record(shared: &Shared, parts: &hyper::http::request::Parts, body: &Bytes) {
    let path = parts.uri.path_and_query().map(|pq| pq.as_str().to_string()).unwrap_or_else(|| "/".to_string());
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    if !parts.headers.contains_key(hyper::header::HOST) {
        if let Some(authority) = parts.uri.authority() {
            headers.insert(0, ("host".to_string(), authority.as_str().to_string()));
        }
    }
    shared.requests().push(Recorded {
        method: parts.method.to_string(),
        path,
        headers,
        body: body.to_vec(),
        version: format!("{:?}", parts.version),
    });
}

/// `GET /v1/realtime` with an upgrade: answers 101 and echoes every byte
/// back (no WebSocket framing is needed to test a relay).
fn websocket_echo(shared: &Shared, req: &mut Request<Incoming>) -> Response<ResponseBody> {
    if shared.recording.load(Ordering::SeqCst) {
        let mut headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        headers.sort();
        shared.requests().push(Recorded {
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            headers,
            body: Vec::new(),
            version: format!("{:?}", req.version()),
        });
    }
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let mut io = TokioIo::new(upgraded);
            let mut buf = vec![0u8; 8192];
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header("sec-websocket-accept", "fake")
        .body(Full::new(Bytes::new()).boxed())
        .expect("static response")
}

/// Answers a chat completion (OpenAI) or a message (Anthropic).
async fn generate(shared: &Shared, api: Dialect, body: &[u8]) -> Response<ResponseBody> {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error_response(
            api,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "We could not parse the JSON body of your request.",
        );
    };
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return error_response(
            api,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "You must provide a model parameter.",
        );
    };
    let model = model.to_string();
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);

    match model.as_str() {
        "fake-500" => {
            return error_response(
                api,
                StatusCode::INTERNAL_SERVER_ERROR,
                if api == Dialect::OpenAi { "server_error" } else { "api_error" },
                "The fake provider failed on purpose.",
            )
        }
        "fake-slow" => tokio::time::sleep(SLOW_DELAY).await,
        _ => {}
    }

    let serial = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let prompt_tokens = estimate_prompt_tokens(&request);
    // `fake-echo` repeats the last user message, streamed three characters
    // at a time, so tests can see what the provider saw come back.
    let (text, pieces): (String, Vec<String>) = if model == "fake-echo" {
        let said = last_user_text(&request);
        let text = format!("Echo: {said}");
        let chars: Vec<char> = text.chars().collect();
        let pieces = chars.chunks(3).map(|c| c.iter().collect()).collect();
        (text, pieces)
    } else {
        (REPLY_TEXT.to_string(), REPLY_PIECES.iter().map(|p| p.to_string()).collect())
    };
    let created = unix_now();
    if !stream {
        let value = match api {
            Dialect::OpenAi => openai_completion(serial, created, &model, prompt_tokens, &text),
            Dialect::Anthropic => anthropic_message(serial, &model, prompt_tokens, &text),
        };
        return json_response(StatusCode::OK, &value);
    }

    let events = match api {
        Dialect::OpenAi => {
            let include_usage = request.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
            openai_stream(serial, created, &model, prompt_tokens, include_usage, &pieces)
        }
        Dialect::Anthropic => anthropic_stream(serial, &model, prompt_tokens, &pieces),
    };
    let gate = if model == "fake-stream-held" || shared.hold.load(Ordering::SeqCst) {
        let epoch_rx = shared.release_epoch.subscribe();
        let seen = *epoch_rx.borrow();
        Some((epoch_rx, seen))
    } else {
        None
    };
    sse_response(events, gate)
}

/// The text of the last user message (string or text parts).
fn last_user_text(request: &Value) -> String {
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return String::new();
    };
    let Some(last) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

fn openai_completion(serial: u64, created: u64, model: &str, prompt_tokens: u64, text: &str) -> Value {
    json!({
        "id": format!("chatcmpl-fake{serial:06}"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": text, "refusal": null },
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": REPLY_TOKENS,
            "total_tokens": prompt_tokens + REPLY_TOKENS
        }
    })
}

fn openai_stream(
    serial: u64,
    created: u64,
    model: &str,
    prompt_tokens: u64,
    include_usage: bool,
    pieces: &[String],
) -> Vec<Bytes> {
    let id = format!("chatcmpl-fake{serial:06}");
    let chunk = |delta: Value, finish_reason: Value| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason
            }]
        })
    };
    let mut chunks = vec![chunk(json!({ "role": "assistant", "content": "" }), Value::Null)];
    for piece in pieces {
        chunks.push(chunk(json!({ "content": piece }), Value::Null));
    }
    chunks.push(chunk(json!({}), json!("stop")));
    if include_usage {
        chunks.push(json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": REPLY_TOKENS,
                "total_tokens": prompt_tokens + REPLY_TOKENS
            }
        }));
    }
    let mut events: Vec<Bytes> = chunks.iter().map(|c| Bytes::from(format!("data: {c}\n\n"))).collect();
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

fn anthropic_message(serial: u64, model: &str, prompt_tokens: u64, text: &str) -> Value {
    json!({
        "id": format!("msg_fake{serial:06}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{ "type": "text", "text": text }],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": { "input_tokens": prompt_tokens, "output_tokens": REPLY_TOKENS }
    })
}

fn anthropic_stream(serial: u64, model: &str, prompt_tokens: u64, pieces: &[String]) -> Vec<Bytes> {
    let mut events = vec![
        (
            "message_start",
            json!({
                "type": "message_start",
                "message": {
                    "id": format!("msg_fake{serial:06}"),
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": { "input_tokens": prompt_tokens, "output_tokens": 1 }
                }
            }),
        ),
        (
            "content_block_start",
            json!({
                "type": "content_block_start",
                "index": 0,
                "content_block": { "type": "text", "text": "" }
            }),
        ),
        ("ping", json!({ "type": "ping" })),
    ];
    for piece in pieces {
        events.push((
            "content_block_delta",
            json!({
                "type": "content_block_delta",
                "index": 0,
                "delta": { "type": "text_delta", "text": piece }
            }),
        ));
    }
    events.push(("content_block_stop", json!({ "type": "content_block_stop", "index": 0 })));
    events.push((
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": { "stop_reason": "end_turn", "stop_sequence": null },
            "usage": { "output_tokens": REPLY_TOKENS }
        }),
    ));
    events.push(("message_stop", json!({ "type": "message_stop" })));
    events.into_iter().map(|(name, data)| Bytes::from(format!("event: {name}\ndata: {data}\n\n"))).collect()
}

fn models_list() -> Value {
    let created = 1_715_367_049u64;
    let data: Vec<Value> = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3-mini"]
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": created, "owned_by": "system" }))
        .collect();
    json!({ "object": "list", "data": data })
}

/// A rough token count (about four characters a token) over every string in
/// the prompt-bearing fields, so usage numbers grow with the prompt.
fn estimate_prompt_tokens(request: &Value) -> u64 {
    fn chars(value: &Value) -> usize {
        match value {
            Value::String(s) => s.chars().count(),
            Value::Array(items) => items.iter().map(chars).sum(),
            Value::Object(fields) => fields.values().map(chars).sum(),
            _ => 0,
        }
    }
    let total: usize = ["messages", "system", "tools"].iter().filter_map(|field| request.get(field)).map(chars).sum();
    (total as u64).div_ceil(4).max(1)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What the fake answers in `openai-organization`: a personal account.
pub const FAKE_OPENAI_ORGANIZATION: &str = "user-fake0personal";

/// Size of the model file every Hugging Face style `/<repo>/resolve/...`
/// download returns.
pub const FAKE_MODEL_FILE_BYTES: usize = 300_000;

fn model_file() -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from(vec![0u8; FAKE_MODEL_FILE_BYTES])).boxed());
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(api: Dialect, status: StatusCode, kind: &str, message: &str) -> Response<ResponseBody> {
    let body = match api {
        Dialect::OpenAi => json!({
            "error": { "message": message, "type": kind, "param": null, "code": null }
        }),
        Dialect::Anthropic => json!({
            "type": "error",
            "error": { "type": kind, "message": message }
        }),
    };
    json_response(status, &body)
}

/// Streams `events` as SSE, one body frame each. With a gate, only the first
/// event goes out until the release epoch moves past the one recorded.
fn sse_response(events: Vec<Bytes>, gate: Option<(watch::Receiver<u64>, u64)>) -> Response<ResponseBody> {
    // Capacity 1 keeps the producer in step with the connection, so events
    // leave one by one instead of piling up in the channel.
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(produce_events(events, tx, gate));
    let mut response = Response::new(ChannelBody(rx).boxed());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(hyper::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn produce_events(events: Vec<Bytes>, tx: mpsc::Sender<Bytes>, gate: Option<(watch::Receiver<u64>, u64)>) {
    let mut events = events.into_iter();
    if let Some(first) = events.next() {
        if tx.send(first).await.is_err() {
            return;
        }
    }
    if let Some((mut epoch_rx, seen)) = gate {
        tokio::select! {
            // An error means the provider is gone; finishing is as good as anything.
            _ = epoch_rx.wait_for(|epoch| *epoch > seen) => {}
            // The client hung up while held: nothing left to send to.
            _ = tx.closed() => return,
        }
    }
    for event in events {
        tokio::task::yield_now().await;
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

/// A response body fed frame by frame from a channel; ends when the sender
/// is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|event| event.map(|data| Ok(Frame::data(data))))
    }
}
