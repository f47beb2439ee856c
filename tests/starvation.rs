//! No starvation, over real sockets: idle, slow and over-limit clients of
//! the gateway are cut off by their timeouts and limits while ordinary
//! requests and `/healthz` keep being served.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// What a held connection saw before the server closed it.
#[derive(Debug)]
struct Closed {
    sent: Vec<u8>,
    after: Duration,
}

impl Closed {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.sent).into_owned()
    }
}

/// Open a connection, send `opening`, then send `trickle.1` every
/// `trickle.0` (if any) until the server closes the connection; fails if it
/// is still open after `limit`.
async fn hold(
    addr: SocketAddr,
    opening: Vec<u8>,
    trickle: Option<(Duration, Vec<u8>)>,
    limit: Duration,
) -> Result<Closed, String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    if !opening.is_empty() {
        stream.write_all(&opening).await.map_err(|e| format!("write: {e}"))?;
    }
    let (mut rd, mut wr) = stream.into_split();
    let (every, piece) = trickle.unwrap_or((Duration::from_secs(3600), Vec::new()));
    let mut writing = !piece.is_empty();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let deadline = tokio::time::Instant::now() + limit;
    let mut sent = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            read = rd.read(&mut buf) => match read {
                // A reset counts as closed too.
                Ok(0) | Err(_) => return Ok(Closed { sent, after: started.elapsed() }),
                Ok(n) => sent.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick(), if writing => {
                if wr.write_all(&piece).await.is_err() {
                    writing = false;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(format!("still open after {limit:?}; server sent {:?}", String::from_utf8_lossy(&sent)));
            }
        }
    }
}

fn spawn_many(
    n: usize,
    addr: SocketAddr,
    opening: &[u8],
    trickle: Option<(Duration, &[u8])>,
    limit: Duration,
) -> Vec<JoinHandle<Result<Closed, String>>> {
    (0..n)
        .map(|_| {
            let opening = opening.to_vec();
            let trickle = trickle.map(|(every, piece)| (every, piece.to_vec()));
            tokio::spawn(hold(addr, opening, trickle, limit))
        })
        .collect()
}

async fn all_closed(what: &str, handles: Vec<JoinHandle<Result<Closed, String>>>) -> Vec<Closed> {
    let mut closed = Vec::new();
    for handle in handles {
        match handle.await.unwrap() {
            Ok(c) => closed.push(c),
            Err(e) => panic!("{what}: {e}"),
        }
    }
    closed
}

const CHAT_HEAD: &str = "POST /v1/chat/completions HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty HTTP/2 SETTINGS frame.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_clients_cannot_starve_the_gateway_or_healthz() {
    let fake = FakeProvider::start().await;
    let setup = Setup {
        gateway: "first_byte_timeout_ms: 2000, header_read_timeout_ms: 2000, idle_timeout_ms: 3000, \
                  body_frame_timeout_ms: 1500, body_timeout_ms: 4000"
            .into(),
        ..Setup::default()
    };
    let mut sluice = SluiceProc::start(&fake, setup).await;
    let addr = sluice.gateway;
    let limit = Duration::from_secs(30);
    let tick = Duration::from_millis(300);

    let idle = spawn_many(200, addr, b"", None, limit);
    let slow_head = spawn_many(
        50,
        addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: sluice\r\n",
        Some((tick, b"X-Pad: a\r\n")),
        limit,
    );
    let body_start = format!("{CHAT_HEAD}{{\"model\":\"gpt-4o-mini\",\"messages\":[");
    let slow_body = spawn_many(50, addr, body_start.as_bytes(), Some((tick, b" ")), limit);
    let stalled_body = spawn_many(20, addr, body_start.as_bytes(), None, limit);
    let half_preface = spawn_many(10, addr, &H2_PREFACE[..16], None, limit);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // With all of those connected and being slow, business as usual.
    let c = client();
    let started = Instant::now();
    let resp = c
        .post(sluice.url("/v1/chat/completions"))
        .json(&chat_body("Write a haiku about rivers", false))
        .send()
        .await
        .expect("a normal request is served while slow clients hold connections");
    assert_eq!(resp.status(), 200);
    let health = c.get(format!("http://{}/healthz", sluice.admin)).send().await.expect("/healthz answers");
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok\n");
    assert!(started.elapsed() < Duration::from_secs(5), "served, but slowly: {:?}", started.elapsed());

    // And every slow connection is cut off by its timeout.
    for c in all_closed("idle connection", idle).await {
        assert!(c.sent.is_empty(), "{}", c.text());
        assert!(c.after >= Duration::from_millis(1500), "closed by the first-byte timeout, not refused: {:?}", c.after);
    }
    for c in all_closed("slow request head", slow_head).await {
        assert!(c.after >= Duration::from_millis(1500), "{:?}", c.after);
        assert!(!c.text().contains(" 200 "), "{}", c.text());
    }
    for c in all_closed("trickled body", slow_body).await {
        assert!(c.text().starts_with("HTTP/1.1 408"), "{}", c.text());
        assert!(c.text().contains("request_timeout"), "{}", c.text());
        assert!(c.after >= Duration::from_millis(3500), "the whole-body deadline, not the stall one: {:?}", c.after);
    }
    for c in all_closed("stalled body", stalled_body).await {
        assert!(c.text().starts_with("HTTP/1.1 408"), "{}", c.text());
        assert!(c.text().contains("stalled"), "{}", c.text());
    }
    for c in all_closed("half an HTTP/2 preface", half_preface).await {
        assert!(c.sent.is_empty(), "{}", c.text());
    }

    // Slow bodies are refusals like any other: audited, and nothing went upstream.
    assert_eq!(fake.requests().len(), 1);
    let records = sluice.audit_records();
    assert_eq!(records.iter().filter(|r| r["status"] == 200).count(), 1);
    let timed_out: Vec<_> = records.iter().filter(|r| r["status"] == 408).collect();
    assert_eq!(timed_out.len(), 70, "{records:?}");
    assert!(timed_out.iter().all(|r| r["decision"] != "cloud"), "{timed_out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_closed_but_long_streams_are_not_idle() {
    let fake = FakeProvider::start().await;
    // Header and ping timeouts far away: only the idle timeout can act.
    let setup = Setup { gateway: "idle_timeout_ms: 1500".into(), ..Setup::default() };
    let sluice = SluiceProc::start(&fake, setup).await;
    let addr = sluice.gateway;
    let limit = Duration::from_secs(20);

    // HTTP/1 keep-alive after one answered request.
    let keep_alive = tokio::spawn(hold(addr, b"GET /v1/models HTTP/1.1\r\nHost: sluice\r\n\r\n".to_vec(), None, limit));
    // HTTP/2 with prior knowledge, never opening a stream.
    let mut h2 = H2_PREFACE.to_vec();
    h2.extend_from_slice(H2_SETTINGS);
    let h2_idle = tokio::spawn(hold(addr, h2, None, limit));

    // A stream that stays quiet for twice the idle timeout is still a
    // request in flight.
    fake.hold_streams();
    let resp = client()
        .post(sluice.url("/v1/chat/completions"))
        .json(&chat_body("Stream me a story", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut got = String::new();
    while !got.contains("chat.completion.chunk") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    fake.release_streams();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap() {
        got.push_str(&String::from_utf8_lossy(&chunk.expect("the stream was not cut")));
    }
    assert!(got.contains("[DONE]"), "{got}");

    let c = keep_alive.await.unwrap().unwrap();
    assert!(c.text().starts_with("HTTP/1.1 200"), "{}", c.text());
    assert!(c.after >= Duration::from_millis(1400) && c.after < Duration::from_secs(10), "{:?}", c.after);

    let c = h2_idle.await.unwrap().unwrap();
    assert!(c.after >= Duration::from_millis(1400), "{:?}", c.after);
    let frame_types = h2_frame_types(&c.sent);
    assert_eq!(frame_types.first(), Some(&4), "server SETTINGS first: {frame_types:?}");
    assert!(frame_types.contains(&7), "closed with a GOAWAY: {frame_types:?}");
}

/// Frame types in a server's HTTP/2 byte stream.
fn h2_frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_limit_get_503_and_health_checks_keep_their_own() {
    let fake = FakeProvider::start().await;
    let setup = Setup { gateway: "max_connections: 8, first_byte_timeout_ms: 3000".into(), ..Setup::default() };
    let sluice = SluiceProc::start(&fake, setup).await;
    let addr = sluice.gateway;

    let idle = spawn_many(8, addr, b"", None, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let refused = hold(addr, Vec::new(), None, Duration::from_secs(5)).await.unwrap();
    assert!(refused.text().starts_with("HTTP/1.1 503"), "{}", refused.text());
    assert!(refused.text().contains("too many connections"), "{}", refused.text());
    assert!(refused.after < Duration::from_secs(2), "{:?}", refused.after);

    let c = client();
    let health = c.get(format!("http://{}/healthz", sluice.admin)).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // Slots come back when the idle connections time out.
    for closed in all_closed("idle connection", idle).await {
        assert!(closed.sent.is_empty(), "{}", closed.text());
        assert!(closed.after >= Duration::from_millis(2500), "{:?}", closed.after);
    }
    let resp = c.post(sluice.url("/v1/chat/completions")).json(&chat_body("hello", false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
