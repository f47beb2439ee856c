//! The Splunk HTTP Event Collector exporter: a background task that ships
//! every audit record to HEC, in order, exactly as the log holds it.
//!
//! The audit log itself is the spool. A durable cursor in the log's
//! `cursors` tree names the last record Splunk accepted; the task reads the
//! records after it, posts them as one batch of concatenated HEC events
//! (`<url>/services/collector/event`, newline-separated) and moves the
//! cursor only once Splunk accepted the batch (with `ack: true`, once the
//! indexers acknowledged it). A Splunk outage of any length, or a restart,
//! therefore loses nothing; a batch in flight at a crash is sent again, and
//! every event's `id` (`<seq>-<hash prefix>`) lets searches de-duplicate it.
//!
//! What HEC's answers make the exporter do (HEC status code in brackets):
//!
//! | answer | action |
//! |---|---|
//! | 200 (0) | accepted: advance |
//! | 503 (9 busy; 18, 19, 20 unhealthy), 500 (8), other 5xx, 408, 429, network error, timeout | retry the same batch, exponential back-off (capped, jittered) |
//! | 400 (5 no data, 6 invalid data format, 12 event field required, 13 event field blank, 15 indexed fields), 413 | split the batch in halves; a single bad event is logged (seq and id only), counted and skipped |
//! | 401/403 (1 token disabled, 2 token required, 3 invalid authorization, 4 invalid token) | stop, report |
//! | 400 (7 incorrect index; 10, 11 channel missing/invalid; 14 ack disabled; 16 query-string auth) | stop, report (the configuration is wrong) |
//! | anything else (404, unknown 4xx) | stop, report |
//!
//! The codes are HEC's documented ones (0-16 for event posts, 17-19 from
//! the health endpoint, which a busy collector also returns on posts); an
//! unknown code falls back to its HTTP status.
//!
//! A stopped exporter leaves sluice serving: the records stay in the log and
//! the next start resumes from the cursor. Its state is in `/readyz`'s
//! text ([`status_line`]) and in the `sluice_export_*` metrics.
//!
//! The log's signed checkpoints go out too, as `sluice:checkpoint` events,
//! under a cursor of their own (`splunk_hec.checkpoints`: checkpoints are
//! numbered apart from the records), checked before each read of records.
//!
//! The task only reads sled (on the blocking pool) and talks to HEC over
//! its own client, so it never holds anything the request path waits for.
//! Event contents are never logged.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::hec::{checkpoint_event, hec_event, HecMeta};
use crate::audit::{AuditError, AuditLog, StoredRecord};
use crate::config::{SplunkHecConfig, UpstreamConfig};
use crate::dispatch::upstream::{UpstreamClient, UpstreamError};
use crate::telemetry;

/// The exporter's cursor name in the log's `cursors` tree.
pub const CURSOR: &str = "splunk_hec";
/// Its cursor over the log's signed checkpoints, which are numbered apart
/// from the records: the last checkpoint number Splunk accepted.
pub const CHECKPOINT_CURSOR: &str = "splunk_hec.checkpoints";
/// Where the exporter keeps its HEC channel GUID (stable per deployment,
/// so acknowledgements survive a restart of sluice).
const CHANNEL_KEY: &str = "splunk_hec.channel";
/// Metric label naming this exporter.
const EXPORTER: &str = "splunk_hec";
/// First retry delay; doubled per failure up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often an idle exporter looks for new records (at most; `flush_ms`
/// when smaller).
const IDLE_POLL: Duration = Duration::from_millis(200);
/// HEC answers fast or not at all; a hung connection must not hold the
/// batch for the upstream default of two minutes.
const HEC_TIMEOUT_MS: u64 = 30_000;
/// How long indexer acknowledgement may take before the batch is sent
/// again (Splunk's own default ack timeout is 5 minutes).
const ACK_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest HEC answer read; its JSON is a few dozen bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export.splunk_hec.token_env: environment variable {0} is not set or empty")]
    NoToken(String),
    #[error("export.splunk_hec: {0}")]
    Client(#[from] UpstreamError),
    #[error("export.splunk_hec: audit log: {0}")]
    Audit(#[from] AuditError),
    #[error("export.splunk_hec: reading the audit log failed: {0}")]
    Join(String),
}

/// The exporter's state as `/readyz` and tests see it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportState {
    /// Why the exporter stopped; `None` while it runs.
    pub stopped: Option<String>,
    /// Last record Splunk accepted.
    pub cursor: u64,
    pub lag_records: u64,
    pub lag_seconds: f64,
    /// Events Splunk called malformed even alone, skipped.
    pub dropped: u64,
}

static STATUS: OnceLock<Mutex<ExportState>> = OnceLock::new();

fn status() -> &'static Mutex<ExportState> {
    STATUS.get_or_init(|| Mutex::new(ExportState::default()))
}

fn update(f: impl FnOnce(&mut ExportState)) {
    // A panic elsewhere cannot leave the state half-written: every field is
    // set in one statement.
    f(&mut status().lock().unwrap_or_else(|e| e.into_inner()));
}

/// The exporter's state, when one was started in this process.
pub fn state() -> Option<ExportState> {
    STATUS.get().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

/// One line for `/readyz`: running with its lag, or stopped and why.
/// `None` when no exporter was started.
pub fn status_line() -> Option<String> {
    let s = state()?;
    Some(match &s.stopped {
        Some(why) => format!("export splunk_hec: STOPPED: {why} (records are kept; restart sluice to resume)"),
        None => format!(
            "export splunk_hec: running, cursor {}, lag {} records, {:.1} s",
            s.cursor, s.lag_records, s.lag_seconds
        ),
    })
}

/// Starts the exporter on the current tokio runtime. A missing token does
/// not fail the start: the exporter is reported stopped and sluice serves.
pub fn start(
    log: Arc<AuditLog>,
    cfg: &SplunkHecConfig,
    upstream: &UpstreamConfig,
    host: String,
) -> Result<tokio::task::JoinHandle<()>, ExportError> {
    // The collector's CA comes first; the upstream one otherwise (a lab
    // Splunk is often signed by the same internal CA as a provider mirror).
    let client_cfg = UpstreamConfig {
        extra_ca_file: cfg.tls_ca.clone().or_else(|| upstream.extra_ca_file.clone()),
        response_timeout_ms: HEC_TIMEOUT_MS,
        http2: false,
        ..upstream.clone()
    };
    let client = UpstreamClient::new(&client_cfg)?;
    update(|s| *s = ExportState::default());
    describe_series();
    let token = std::env::var(&cfg.token_env).ok().filter(|t| !t.trim().is_empty());
    // Accept the endpoint as Splunk's docs write it, or just the server.
    let base = cfg.url.trim_end_matches('/');
    let base = base.strip_suffix("/services/collector/event").unwrap_or(base);
    let base = base.strip_suffix("/services/collector").unwrap_or(base).to_string();
    let meta = HecMeta { host, source: cfg.source.clone(), index: cfg.index.clone() };
    let exporter = Exporter {
        log,
        client,
        event_url: format!("{base}/services/collector/event"),
        ack_url: format!("{base}/services/collector/ack"),
        token: token.clone().unwrap_or_default(),
        meta,
        sourcetype_prefix: cfg.sourcetype_prefix.clone(),
        max_events: cfg.batch_max_events.max(1),
        max_bytes: cfg.batch_max_bytes.max(1),
        flush: Duration::from_millis(cfg.flush_ms.max(1)),
        ack: cfg.ack,
        channel: String::new(),
    };
    let token_env = cfg.token_env.clone();
    Ok(tokio::spawn(async move {
        if token.is_none() {
            stop(&ExportError::NoToken(token_env).to_string());
            return;
        }
        if let Err(why) = exporter.run().await {
            stop(&why);
        }
    }))
}

fn describe_series() {
    metrics::gauge!(telemetry::EXPORT_LAG_RECORDS, "exporter" => EXPORTER).set(0.0);
    metrics::gauge!(telemetry::EXPORT_LAG_SECONDS, "exporter" => EXPORTER).set(0.0);
    metrics::gauge!(telemetry::EXPORT_STOPPED, "exporter" => EXPORTER).set(0.0);
    for outcome in ["sent", "dropped"] {
        metrics::counter!(telemetry::EXPORT_EVENTS, "exporter" => EXPORTER, "outcome" => outcome).increment(0);
    }
    metrics::counter!(telemetry::EXPORT_RETRIES, "exporter" => EXPORTER).increment(0);
}

fn stop(why: &str) {
    tracing::error!(error = why, "Splunk HEC exporter stopped; audit records stay in the log until it runs again");
    metrics::gauge!(telemetry::EXPORT_STOPPED, "exporter" => EXPORTER).set(1.0);
    update(|s| s.stopped = Some(why.to_string()));
}

/// One record as a HEC event, ready to concatenate.
struct Event {
    seq: u64,
    id: String,
    line: Vec<u8>,
}

/// What HEC's answer to a post means for the batch.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Accepted; with indexer acknowledgement on, the ack id to wait for.
    Accepted(Option<u64>),
    /// Send the same events again after a pause.
    Retry(String),
    /// Some event in the batch is bad: split it.
    Malformed(String),
    /// Nothing will work until someone changes the configuration.
    Fatal(String),
}

struct Exporter {
    log: Arc<AuditLog>,
    client: UpstreamClient,
    event_url: String,
    ack_url: String,
    token: String,
    meta: HecMeta,
    sourcetype_prefix: Option<String>,
    max_events: usize,
    max_bytes: usize,
    flush: Duration,
    ack: bool,
    channel: String,
}

impl Exporter {
    /// Runs until a fatal answer (returned as the reason) or the runtime ends.
    async fn run(mut self) -> Result<(), String> {
        if self.ack {
            self.channel = self.channel_guid().await.map_err(|e| e.to_string())?;
        }
        let mut cursor = self.blocking(|log| log.cursor(CURSOR)).await.map_err(|e| e.to_string())?;
        tracing::info!(cursor, url = %self.event_url, ack = self.ack, "Splunk HEC exporter started");
        let mut partial_since: Option<Instant> = None;
        let mut checkpoints = self.blocking(|log| log.cursor(CHECKPOINT_CURSOR)).await.map_err(|e| e.to_string())?;
        loop {
            checkpoints = self.ship_checkpoints(checkpoints).await?;
            let from = cursor + 1;
            let max = self.max_events;
            let records = match self.blocking(move |log| log.read_from(from, max)).await {
                Ok(records) => records,
                Err(e) => {
                    tracing::warn!(error = %e, "Splunk HEC exporter cannot read the audit log; trying again");
                    tokio::time::sleep(BACKOFF_MAX).await;
                    continue;
                }
            };
            self.report_lag(cursor, records.first());
            if records.is_empty() {
                partial_since = None;
                tokio::time::sleep(IDLE_POLL.min(self.flush)).await;
                continue;
            }
            let events = self.events(&records);
            let full = events.len() < records.len() || records.len() >= self.max_events;
            // A partial batch waits up to `flush_ms` for more records, so a
            // trickle of requests is not one POST per record.
            if !full {
                let since = *partial_since.get_or_insert_with(Instant::now);
                let waited = since.elapsed();
                if waited < self.flush {
                    tokio::time::sleep((self.flush - waited).min(IDLE_POLL)).await;
                    continue;
                }
            }
            partial_since = None;
            cursor = self.deliver(&events, cursor).await?;
        }
    }

    /// Runs a sled call on the blocking pool: sled may wait on disk.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&AuditLog) -> Result<T, AuditError> + Send + 'static,
    ) -> Result<T, ExportError> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || f(&log))
            .await
            .map_err(|e| ExportError::Join(e.to_string()))?
            .map_err(Into::into)
    }

    fn report_lag(&self, cursor: u64, oldest_unsent: Option<&StoredRecord>) {
        let records = self.log.head_seq().saturating_sub(cursor);
        let seconds = match oldest_unsent {
            Some(r) if records > 0 => now_ms().saturating_sub(r.record.time_unix_ms) as f64 / 1000.0,
            _ => 0.0,
        };
        metrics::gauge!(telemetry::EXPORT_LAG_RECORDS, "exporter" => EXPORTER).set(records as f64);
        metrics::gauge!(telemetry::EXPORT_LAG_SECONDS, "exporter" => EXPORTER).set(seconds);
        update(|s| {
            s.cursor = cursor;
            s.lag_records = records;
            s.lag_seconds = seconds;
        });
    }

    /// The records as HEC events, as many as fit `batch_max_bytes` (at
    /// least one, so an oversized record still goes, alone).
    fn events(&self, records: &[StoredRecord]) -> Vec<Event> {
        let mut events = Vec::with_capacity(records.len());
        let mut bytes = 0usize;
        for stored in records {
            let event = self.event(hec_event(stored, &self.meta), stored.seq);
            if !events.is_empty() && bytes + event.line.len() + 1 > self.max_bytes {
                break;
            }
            bytes += event.line.len() + 1;
            events.push(event);
        }
        events
    }

    /// A HEC event ready to send, under the configured sourcetype prefix.
    fn event(&self, mut event: Value, seq: u64) -> Event {
        if let (Some(prefix), Some(Value::String(st))) = (&self.sourcetype_prefix, event.get_mut("sourcetype")) {
            if let Some(suffix) = st.strip_prefix("sluice:") {
                *st = format!("{prefix}{suffix}");
            }
        }
        let id = event.pointer("/event/id").and_then(Value::as_str).unwrap_or_default().to_string();
        // Serialising a `Value` cannot fail (string keys only).
        let line = serde_json::to_vec(&event).unwrap_or_default();
        Event { seq, id, line }
    }

    /// Sends the checkpoints stored after number `cursor` as
    /// `sluice:checkpoint` events; returns the new cursor, or why to stop.
    /// They are few and small, so one post carries them all.
    async fn ship_checkpoints(&self, cursor: u64) -> Result<u64, String> {
        let max = self.max_events;
        let stored = match self.blocking(move |log| log.checkpoints_after(cursor, max)).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "Splunk HEC exporter cannot read the audit checkpoints; trying again");
                return Ok(cursor);
            }
        };
        let Some(last) = stored.last().map(|c| c.number) else { return Ok(cursor) };
        let events: Vec<Event> =
            stored.iter().map(|c| self.event(checkpoint_event(c.number, &c.note, &self.meta), c.number)).collect();
        match self.send_until_done(&events).await {
            Verdict::Accepted(_) => {
                metrics::counter!(telemetry::EXPORT_EVENTS, "exporter" => EXPORTER, "outcome" => "sent")
                    .increment(events.len() as u64);
            }
            Verdict::Malformed(why) => {
                tracing::error!(answer = %why, checkpoints = events.len(), "Splunk HEC refused checkpoint events as malformed; skipping them (they stay in the audit log)");
                metrics::counter!(telemetry::EXPORT_EVENTS, "exporter" => EXPORTER, "outcome" => "dropped")
                    .increment(events.len() as u64);
            }
            Verdict::Fatal(why) => return Err(why),
            Verdict::Retry(why) => return Err(format!("internal: unexpected retry verdict: {why}")),
        }
        Ok(self.advance_cursor(CHECKPOINT_CURSOR, last).await)
    }

    /// Delivers `events` (split as HEC asks), moving the cursor after each
    /// part Splunk took; returns the new cursor, or why to stop.
    async fn deliver(&self, events: &[Event], mut cursor: u64) -> Result<u64, String> {
        // Parts are taken front first, so the cursor only ever moves over
        // a prefix of the batch that Splunk holds.
        let mut pending: Vec<&[Event]> = vec![events];
        while let Some(part) = pending.pop() {
            match self.send_until_done(part).await {
                Verdict::Accepted(_) => {
                    metrics::counter!(telemetry::EXPORT_EVENTS, "exporter" => EXPORTER, "outcome" => "sent")
                        .increment(part.len() as u64);
                }
                Verdict::Malformed(why) if part.len() == 1 => {
                    let event = &part[0];
                    tracing::error!(
                        seq = event.seq,
                        id = %event.id,
                        answer = %why,
                        "Splunk HEC refused one audit event as malformed; skipping it (it stays in the audit log)"
                    );
                    metrics::counter!(telemetry::EXPORT_EVENTS, "exporter" => EXPORTER, "outcome" => "dropped")
                        .increment(1);
                    update(|s| s.dropped += 1);
                }
                Verdict::Malformed(why) => {
                    tracing::warn!(events = part.len(), answer = %why, "Splunk HEC refused a batch as malformed; splitting it");
                    let (front, back) = part.split_at(part.len() / 2);
                    pending.push(back);
                    pending.push(front);
                    continue;
                }
                Verdict::Fatal(why) => return Err(why),
                Verdict::Retry(why) => return Err(format!("internal: unexpected retry verdict: {why}")),
            }
            if let Some(last) = part.last() {
                cursor = self.advance(last.seq).await;
            }
        }
        Ok(cursor)
    }

    /// Moves the durable cursor; a failed write is retried until it holds,
    /// since resending is harmless but skipping is not.
    async fn advance(&self, seq: u64) -> u64 {
        self.advance_cursor(CURSOR, seq).await
    }

    async fn advance_cursor(&self, name: &'static str, seq: u64) -> u64 {
        let mut delay = BACKOFF_START;
        loop {
            match self.blocking(move |log| log.set_cursor(name, seq)).await {
                Ok(()) => return seq,
                Err(e) => {
                    tracing::warn!(error = %e, seq, "cannot store the Splunk HEC cursor; trying again");
                    tokio::time::sleep(jittered(delay)).await;
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Posts `part` until HEC gives an answer other than "try again"
    /// (waiting for the indexers' acknowledgement when `ack` is on).
    async fn send_until_done(&self, part: &[Event]) -> Verdict {
        let mut body = Vec::with_capacity(part.iter().map(|e| e.line.len() + 1).sum());
        for (i, event) in part.iter().enumerate() {
            if i > 0 {
                body.push(b'\n');
            }
            body.extend_from_slice(&event.line);
        }
        let body = Bytes::from(body);
        let mut delay = BACKOFF_START;
        loop {
            let verdict = match self.post(&self.event_url, body.clone()).await {
                Verdict::Accepted(Some(ack_id)) if self.ack => self.wait_for_ack(ack_id).await,
                Verdict::Accepted(None) if self.ack => Verdict::Fatal(
                    "HEC accepted a batch without an ackId: is indexer acknowledgement enabled on the token?".into(),
                ),
                other => other,
            };
            match verdict {
                Verdict::Retry(why) => {
                    tracing::warn!(answer = %why, retry_in_ms = delay.as_millis() as u64, "Splunk HEC did not take the batch; retrying");
                    metrics::counter!(telemetry::EXPORT_RETRIES, "exporter" => EXPORTER).increment(1);
                    tokio::time::sleep(jittered(delay)).await;
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
                done => return done,
            }
        }
    }

    /// Polls `/services/collector/ack` until `ack_id` is acknowledged;
    /// `Retry` (send the batch again) when it is not within [`ACK_TIMEOUT`].
    async fn wait_for_ack(&self, ack_id: u64) -> Verdict {
        let started = Instant::now();
        let mut delay = BACKOFF_START;
        let body = Bytes::from(serde_json::json!({ "acks": [ack_id] }).to_string());
        while started.elapsed() < ACK_TIMEOUT {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            match self.post_raw(&self.ack_url, body.clone()).await {
                Ok((StatusCode::OK, answer)) => {
                    let acked = answer.pointer(&format!("/acks/{ack_id}")).and_then(Value::as_bool).unwrap_or(false);
                    if acked {
                        return Verdict::Accepted(Some(ack_id));
                    }
                }
                Ok((status, answer)) => {
                    // Busy or odd answers to a poll: poll again later.
                    if let Verdict::Fatal(why) = classify(status, &answer) {
                        return Verdict::Fatal(why);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "ack poll failed; polling again"),
            }
        }
        Verdict::Retry(format!("no acknowledgement for ackId {ack_id} within {}s", ACK_TIMEOUT.as_secs()))
    }

    async fn post(&self, url: &str, body: Bytes) -> Verdict {
        match self.post_raw(url, body).await {
            Ok((status, answer)) => classify(status, &answer),
            Err(e) => Verdict::Retry(e),
        }
    }

    /// One POST; the answer's status and JSON body (`Null` when not JSON).
    async fn post_raw(&self, url: &str, body: Bytes) -> Result<(StatusCode, Value), String> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::AUTHORIZATION, format!("Splunk {}", self.token))
            .header(header::CONTENT_TYPE, "application/json");
        if self.ack {
            req = req.header("X-Splunk-Request-Channel", &self.channel);
        }
        let req = req.body(Full::new(body)).map_err(|e| format!("cannot build the request: {e}"))?;
        let resp = self.client.send(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES);
        let bytes = match tokio::time::timeout(Duration::from_millis(HEC_TIMEOUT_MS), limited.collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) => return Err(format!("reading HEC's answer failed: {e}")),
            Err(_) => return Err("HEC's answer did not finish in time".to_string()),
        };
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// The deployment's channel GUID, created once and kept in the log.
    async fn channel_guid(&self) -> Result<String, ExportError> {
        if let Some(guid) = self.blocking(|log| log.cursor_text(CHANNEL_KEY)).await? {
            return Ok(guid);
        }
        let guid = new_guid(self.log.head_seq());
        let stored = guid.clone();
        self.blocking(move |log| log.set_cursor_text(CHANNEL_KEY, &stored)).await?;
        Ok(guid)
    }
}

/// Maps HEC's answer to an action (see the table in the module docs).
fn classify(status: StatusCode, answer: &Value) -> Verdict {
    let code = answer.get("code").and_then(Value::as_i64);
    let text = answer.get("text").and_then(Value::as_str).unwrap_or("");
    let said = match code {
        Some(code) => format!("HTTP {} (HEC code {code}: {text})", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    };
    match (status.as_u16(), code) {
        (200, None | Some(0)) => Verdict::Accepted(answer.get("ackId").and_then(Value::as_u64)),
        (_, Some(1..=4)) | (401 | 403, _) => {
            Verdict::Fatal(format!("HEC rejected the token: {said}; check export.splunk_hec.token_env"))
        }
        (_, Some(7)) => Verdict::Fatal(format!("HEC refused the index: {said}; check export.splunk_hec.index")),
        (_, Some(10 | 11 | 14 | 16)) => {
            Verdict::Fatal(format!("HEC refused the channel or acknowledgement: {said}; check export.splunk_hec.ack"))
        }
        (_, Some(5 | 6 | 12 | 13 | 15)) | (413, _) => Verdict::Malformed(said),
        (_, Some(8 | 9 | 18..=20)) | (408 | 429 | 500..=599, _) => Verdict::Retry(said),
        _ => Verdict::Fatal(format!("unexpected answer from HEC: {said}; check export.splunk_hec.url")),
    }
}

/// `delay` scaled by a factor in [0.5, 1): many sluice instances that lost
/// Splunk together do not come back in lockstep.
fn jittered(delay: Duration) -> Duration {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let fraction = 0.5 + f64::from(nanos % 1000) / 2000.0;
    delay.mul_f64(fraction)
}

/// A random-enough GUID (8-4-4-4-12 hex) from the clock, the process and
/// the log's position; it only has to differ between deployments.
fn new_guid(head_seq: u64) -> String {
    let mut h = Sha256::new();
    h.update(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0).to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(head_seq.to_le_bytes());
    let hex = hex::encode(h.finalize());
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verdict(status: u16, answer: Value) -> Verdict {
        classify(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), &answer)
    }

    #[test]
    fn hec_answers_map_to_actions() {
        assert_eq!(verdict(200, json!({"text":"Success","code":0})), Verdict::Accepted(None));
        assert_eq!(verdict(200, json!({"text":"Success","code":0,"ackId":7})), Verdict::Accepted(Some(7)));
        assert!(matches!(verdict(503, json!({"text":"Server is busy","code":9})), Verdict::Retry(_)));
        assert!(matches!(verdict(503, Value::Null), Verdict::Retry(_)));
        assert!(matches!(verdict(400, json!({"text":"Invalid data format","code":6})), Verdict::Malformed(_)));
        assert!(matches!(verdict(403, json!({"text":"Invalid token","code":4})), Verdict::Fatal(_)));
        assert!(matches!(verdict(401, Value::Null), Verdict::Fatal(_)));
        assert!(matches!(verdict(400, json!({"text":"Incorrect index","code":7})), Verdict::Fatal(_)));
        assert!(matches!(verdict(404, Value::Null), Verdict::Fatal(_)));
    }

    #[test]
    fn guids_have_the_channel_shape() {
        let guid = new_guid(1);
        let parts: Vec<usize> = guid.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
    }
}
