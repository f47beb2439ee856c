//! The Splunk HEC exporter against a fake HEC on loopback (issue 15,
//! point 2): events arrive in order with the CIM fields and `seq-hash`
//! ids; a 503 storm, a restart and a malformed-batch answer lose nothing;
//! a bad token stops the exporter with a clear error in `/readyz`; with
//! indexer acknowledgement on, the cursor moves only on acknowledged ids.

mod support;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use support::{chat_body, FakeProvider, Setup, SluiceProc};
use tokio::net::TcpListener;

const TOKEN: &str = "11111111-2222-3333-4444-555555555555";

/// What the fake HEC answers, and what it took.
#[derive(Default)]
struct Hec {
    /// Answer this many event posts with 503 / code 9 first.
    busy_first: AtomicU64,
    /// Answer 400 / code 6 to any batch holding the record with this seq.
    bad_seq: AtomicU64,
    /// Take this long before answering each post.
    delay_ms: AtomicU64,
    /// Answer 403 / code 4 to everything.
    reject_token: AtomicBool,
    posts: AtomicU64,
    /// Events of accepted batches, in arrival order.
    accepted: Mutex<Vec<Value>>,
    /// Indexer acknowledgement on: posts need a channel and get an ackId.
    ack_mode: AtomicBool,
    /// Answer ack polls with `false` (the indexers are behind).
    hold_acks: AtomicBool,
    /// Channel GUIDs seen on posts, in order.
    channels: Mutex<Vec<String>>,
    next_ack_id: AtomicU64,
    /// Events per ackId not yet acknowledged.
    unacked: Mutex<std::collections::BTreeMap<u64, Vec<Value>>>,
    /// Events whose ackId an ack poll answered `true`, in that order.
    acked: Mutex<Vec<Value>>,
}

impl Hec {
    /// The audit records' events (signed checkpoints apart).
    fn accepted(&self) -> Vec<Value> {
        self.accepted.lock().unwrap().iter().filter(|e| !is_checkpoint(e)).cloned().collect()
    }

    /// The `sluice:checkpoint` events.
    fn checkpoints(&self) -> Vec<Value> {
        self.accepted.lock().unwrap().iter().filter(|e| is_checkpoint(e)).cloned().collect()
    }
}

fn is_checkpoint(event: &Value) -> bool {
    event["sourcetype"] == "sluice:checkpoint"
}

async fn start_hec() -> (SocketAddr, Arc<Hec>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hec = Arc::new(Hec::default());
    let state = hec.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(&state, req).await) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, hec)
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp
}

async fn answer(hec: &Hec, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let channel = req.headers().get("x-splunk-request-channel").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let delay = hec.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if path == "/services/collector/ack" && hec.ack_mode.load(Ordering::SeqCst) {
        return ack_poll(hec, &body);
    }
    if path != "/services/collector/event" {
        return reply(404, json!({"text": "The requested URL was not found on this server.", "code": 404}));
    }
    hec.posts.fetch_add(1, Ordering::SeqCst);
    if hec.reject_token.load(Ordering::SeqCst) || auth != format!("Splunk {TOKEN}") {
        return reply(403, json!({"text": "Invalid token", "code": 4}));
    }
    if hec.busy_first.load(Ordering::SeqCst) > 0 {
        hec.busy_first.fetch_sub(1, Ordering::SeqCst);
        return reply(503, json!({"text": "Server is busy", "code": 9}));
    }
    // Concatenated JSON events, one per line (sluice's batches).
    let events: Vec<Value> = match String::from_utf8_lossy(&body).lines().map(serde_json::from_str).collect() {
        Ok(events) => events,
        Err(_) => return reply(400, json!({"text": "Invalid data format", "code": 6})),
    };
    let bad = hec.bad_seq.load(Ordering::SeqCst);
    if bad > 0 && events.iter().any(|e| !is_checkpoint(e) && e["event"]["seq"] == bad) {
        return reply(400, json!({"text": "Invalid data format", "code": 6, "invalid-event-number": 0}));
    }
    if hec.ack_mode.load(Ordering::SeqCst) {
        let Some(channel) = channel else {
            return reply(400, json!({"text": "Data channel is missing", "code": 10}));
        };
        hec.channels.lock().unwrap().push(channel);
        let ack_id = hec.next_ack_id.fetch_add(1, Ordering::SeqCst);
        hec.accepted.lock().unwrap().extend(events.iter().cloned());
        hec.unacked.lock().unwrap().insert(ack_id, events);
        return reply(200, json!({"text": "Success", "code": 0, "ackId": ack_id}));
    }
    hec.accepted.lock().unwrap().extend(events);
    reply(200, json!({"text": "Success", "code": 0}))
}

/// `/services/collector/ack`: `{"acks":[ids]}` answered `{"acks":{"id":bool}}`.
fn ack_poll(hec: &Hec, body: &[u8]) -> Response<Full<Bytes>> {
    let asked: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(ids) = asked["acks"].as_array() else {
        return reply(400, json!({"text": "Invalid data format", "code": 6}));
    };
    let hold = hec.hold_acks.load(Ordering::SeqCst);
    let mut answer = serde_json::Map::new();
    for id in ids.iter().filter_map(Value::as_u64) {
        let done = !hold
            && hec.unacked.lock().unwrap().remove(&id).map(|events| hec.acked.lock().unwrap().extend(events)).is_some();
        answer.insert(id.to_string(), Value::Bool(done));
    }
    reply(200, json!({ "acks": answer }))
}

fn setup(hec: SocketAddr, batch: usize) -> Setup {
    setup_with(hec, batch, "")
}

fn setup_with(hec: SocketAddr, batch: usize, more: &str) -> Setup {
    Setup {
        extra_config: format!(
            "export: {{ splunk_hec: {{ url: \"http://{hec}\", token_env: TEST_HEC_TOKEN, index: sluice, flush_ms: 100, batch_max_events: {batch}{more} }} }}\n"
        ),
        env: vec![("TEST_HEC_TOKEN".into(), TOKEN.into())],
        ..Setup::default()
    }
}

/// `n` requests through the gateway; each leaves one audit record.
async fn traffic(sluice: &SluiceProc, n: usize) {
    let client = reqwest::Client::new();
    for i in 0..n {
        let resp = client
            .post(sluice.url("/v1/chat/completions"))
            .json(&chat_body(&format!("Write a haiku about river {i}"), false))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "request {i}: {}", resp.status());
    }
}

/// Waits until the fake holds `n` distinct ids; returns all events.
async fn wait_for(hec: &Hec, n: usize, sluice: &SluiceProc) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = hec.accepted();
        if ids(&events).len() >= n {
            return events;
        }
        assert!(Instant::now() < deadline, "HEC got {} of {n} events:\n{}", ids(&events).len(), sluice.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(events: &[Value]) -> BTreeSet<String> {
    events.iter().map(|e| e["event"]["id"].as_str().unwrap().to_string()).collect()
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["event"]["seq"].as_u64().unwrap()).collect()
}

async fn readyz(sluice: &SluiceProc) -> (u16, String) {
    let resp = reqwest::get(format!("http://{}/readyz", sluice.admin)).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn events_arrive_in_order_with_cim_fields_and_ids() {
    let fake = FakeProvider::start().await;
    let (addr, hec) = start_hec().await;
    let mut sluice = SluiceProc::start(&fake, setup(addr, 4)).await;
    traffic(&sluice, 10).await;
    let events = wait_for(&hec, 10, &sluice).await;
    assert_eq!(seqs(&events), (1..=10).collect::<Vec<u64>>(), "in order, once each");
    for e in &events {
        assert_eq!(e["index"], "sluice");
        assert_eq!(e["source"], "sluice");
        assert_eq!(e["sourcetype"], "sluice:decision");
        assert!(e["time"].as_f64().unwrap() > 1.6e9);
        let ev = &e["event"];
        for field in sluice::export::CIM_WEB_FIELDS {
            assert!(ev.get(field).is_some(), "CIM field {field} missing: {ev}");
        }
        assert_eq!(ev["action"], "allowed");
        assert_eq!(ev["dest"], "api.openai.com");
        assert_eq!(ev["vendor_product"], "sluice");
        let id = ev["id"].as_str().unwrap();
        let hash = ev["chain_hash"].as_str().unwrap();
        assert_eq!(id, format!("{}-{}", ev["seq"], &hash[..16]));
    }
    let (status, text) = readyz(&sluice).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("export splunk_hec: running"), "{text}");
    // The cursor is in the log: the CLI sees the same records the fake got.
    let records = sluice.audit_records();
    assert_eq!(records.len(), 10);
}

#[tokio::test]
async fn a_503_storm_loses_and_duplicates_nothing() {
    let fake = FakeProvider::start().await;
    let (addr, hec) = start_hec().await;
    hec.busy_first.store(5, Ordering::SeqCst);
    let sluice = SluiceProc::start(&fake, setup(addr, 4)).await;
    traffic(&sluice, 9).await;
    let events = wait_for(&hec, 9, &sluice).await;
    // Only accepted batches count, and a refused batch was not taken, so
    // the fake holds every record exactly once.
    assert_eq!(seqs(&events), (1..=9).collect::<Vec<u64>>());
    assert_eq!(hec.busy_first.load(Ordering::SeqCst), 0, "the storm was weathered");
    let metrics = reqwest::get(format!("http://{}/metrics", sluice.admin)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sluice_export_retries_total"), "{metrics}");
    assert!(metrics.contains("sluice_export_lag_records"), "{metrics}");
}

#[tokio::test]
async fn a_restart_resumes_from_the_cursor() {
    let fake = FakeProvider::start().await;
    let (addr, hec) = start_hec().await;
    // A slow HEC, so records are still waiting when sluice stops.
    hec.delay_ms.store(1000, Ordering::SeqCst);
    let mut sluice = SluiceProc::start(&fake, setup(addr, 4)).await;
    traffic(&sluice, 12).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while hec.accepted().is_empty() {
        assert!(Instant::now() < deadline, "nothing exported:\n{}", sluice.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sluice.stop().success(), "unclean exit:\n{}", sluice.log());
    let before = hec.accepted().len();
    assert!(before < 12, "sluice stopped mid-stream ({before} of 12 sent)");
    hec.delay_ms.store(0, Ordering::SeqCst);
    sluice.restart().await;
    traffic(&sluice, 3).await;
    let events = wait_for(&hec, 15, &sluice).await;
    let got = seqs(&events);
    let unique: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(unique, (1..=15).collect::<BTreeSet<u64>>(), "every record arrived");
    // Duplicates only of the batch in flight at the stop (at most 4).
    assert!(got.len() - unique.len() <= 4, "too many duplicates: {got:?}");
    // De-duplicated by id as a Splunk search would, first arrivals are in order.
    let mut seen = BTreeSet::new();
    let first: Vec<u64> = got.iter().copied().filter(|seq| seen.insert(*seq)).collect();
    assert_eq!(first, (1..=15).collect::<Vec<u64>>(), "in order apart from the resent batch: {got:?}");
}

#[tokio::test]
async fn a_malformed_answer_splits_the_batch_and_skips_one_event() {
    let fake = FakeProvider::start().await;
    let (addr, hec) = start_hec().await;
    hec.bad_seq.store(3, Ordering::SeqCst);
    let sluice = SluiceProc::start(&fake, setup(addr, 8)).await;
    traffic(&sluice, 8).await;
    let events = wait_for(&hec, 7, &sluice).await;
    // Give a lingering wrong resend a chance to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = if hec.accepted().len() > events.len() { hec.accepted() } else { events };
    assert_eq!(seqs(&events), vec![1, 2, 4, 5, 6, 7, 8], "all but the bad one, once each");
    let log = sluice.log();
    assert!(log.contains("malformed") && log.contains("seq=3"), "{log}");
    let metrics = reqwest::get(format!("http://{}/metrics", sluice.admin)).await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_export_events_total") && l.contains("dropped") && l.ends_with(" 1")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_bad_token_stops_the_exporter_but_not_sluice() {
    let fake = FakeProvider::start().await;
    let (addr, hec) = start_hec().await;
    hec.reject_token.store(true, Ordering::SeqCst);
    let sluice = SluiceProc::start(&fake, setup(addr, 4)).await;
    traffic(&sluice, 2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = readyz(&sluice).await;
        assert_eq!(status, 200, "a stopped exporter leaves sluice ready: {text}");
        if text.contains("STOPPED") {
            assert!(text.contains("HEC rejected the token") && text.contains("code 4"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "exporter never stopped: {text}\n{}", sluice.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let posts = hec.posts.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hec.posts.load(Ordering::SeqCst), posts, "a stopped exporter sends nothing more");
    assert!(sluice.log().contains("Splunk HEC exporter stopped"), "{}", sluice.log());
    let metrics = reqwest::get(format!("http://{}/metrics", sluice.admin)).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("sluice_export_stopped") && l.ends_with(" 1")), "{metrics}");
    traffic(&sluice, 1).await;
}

#[tokio::test]
async fn with_ack_on_the_cursor_moves_only_on_acknowledged_ids() {
    let fake = FakeProvider::start().await;
    let (addr, hec) = start_hec().await;
    hec.ack_mode.store(true, Ordering::SeqCst);
    hec.hold_acks.store(true, Ordering::SeqCst);
    let mut sluice = SluiceProc::start(&fake, setup_with(addr, 4, ", ack: true")).await;
    traffic(&sluice, 6).await;
    // HEC took the first batch, but the indexers have acknowledged none of
    // it: the cursor stays put and no second batch is sent (one batch is in
    // flight at a time).
    wait_for(&hec, 4, &sluice).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, text) = readyz(&sluice).await;
    assert!(text.contains("cursor 0,"), "the cursor waits for acknowledgement: {text}");
    assert_eq!(seqs(&hec.accepted()), vec![1, 2, 3, 4]);
    assert!(hec.acked.lock().unwrap().is_empty());

    // A restart before the acks came: the unacknowledged batches are sent
    // again, on the same channel.
    assert!(sluice.stop().success(), "unclean exit:\n{}", sluice.log());
    let posts_before = hec.posts.load(Ordering::SeqCst);
    sluice.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while hec.posts.load(Ordering::SeqCst) == posts_before {
        assert!(Instant::now() < deadline, "nothing resent after the restart:\n{}", sluice.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channels: BTreeSet<String> = hec.channels.lock().unwrap().iter().cloned().collect();
    assert_eq!(channels.len(), 1, "one channel GUID per deployment, kept across restarts: {channels:?}");

    // The indexers catch up: every record is acknowledged and the cursor
    // reaches the head.
    hec.hold_acks.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, text) = readyz(&sluice).await;
        if text.contains("cursor 6,") {
            break;
        }
        assert!(Instant::now() < deadline, "cursor never reached 6: {text}\n{}", sluice.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acked = hec.acked.lock().unwrap().clone();
    let unique: BTreeSet<u64> = seqs(&acked).into_iter().collect();
    assert_eq!(unique, (1..=6).collect::<BTreeSet<u64>>(), "every record acknowledged");
}

/// Signed checkpoints go out too, as their own sourcetype, each a note
/// that verifies with the deployment's key and names a record's hash.
#[tokio::test]
async fn signed_checkpoints_go_out_as_their_own_sourcetype() {
    let fake = FakeProvider::start().await;
    let (addr, hec) = start_hec().await;
    let mut setup = setup(addr, 4);
    setup.audit = "checkpoint_every_records: 3, checkpoint_every_secs: 1, checkpoint_origin: sluice/hec-test".into();
    let mut sluice = SluiceProc::start(&fake, setup).await;
    traffic(&sluice, 6).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let checkpoints = loop {
        let checkpoints = hec.checkpoints();
        if checkpoints.iter().any(|e| e["event"]["seq"].as_u64() >= Some(6)) {
            break checkpoints;
        }
        assert!(Instant::now() < deadline, "no checkpoint of record 6 at HEC: {checkpoints:?}\n{}", sluice.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The config names the origin the key is printed under.
    let config = sluice.config.to_str().unwrap().to_string();
    let key = support::cli(&["--config", &config, "audit", "checkpoint", "--public-key"], None);
    assert!(key.status.success(), "{}", String::from_utf8_lossy(&key.stderr));
    let verifier = sluice::audit::note::Verifier::parse(&String::from_utf8_lossy(&key.stdout)).unwrap();
    assert!(verifier.to_string().starts_with("sluice/hec-test+"), "{verifier}");
    let records = sluice.audit_records();
    for e in &checkpoints {
        assert_eq!(e["index"], "sluice");
        let ev = &e["event"];
        assert_eq!(ev["origin"], "sluice/hec-test");
        assert_eq!(ev["kind"], "head");
        let text = verifier.open(ev["checkpoint"].as_str().unwrap()).expect("the exported note verifies");
        let checkpoint = sluice::audit::note::Checkpoint::parse(text).unwrap();
        assert_eq!(ev["seq"], checkpoint.size);
        let record = &records[checkpoint.size as usize - 1];
        assert_eq!(record["seq"], checkpoint.size);
        assert_eq!(ev["chain_hash"], record["hash"], "the checkpoint names the record's hash");
    }
    let ids: Vec<String> = checkpoints.iter().map(|e| e["event"]["id"].as_str().unwrap().to_string()).collect();
    let expected: Vec<String> = (1..=ids.len()).map(|n| format!("checkpoint-{n}")).collect();
    assert_eq!(ids, expected, "each once, in order");
}
