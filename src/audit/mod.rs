//! Tamper-evident audit log: one hash-chained record per request, stored in sled.
//!
//! Records hold only metadata (digests, finding types and counts, decisions); the
//! caller must never put prompt text, PII or secrets into any field.
//!
//! One process at a time may open the store; while `sluice serve` holds it,
//! readers go through the server's admin listener ([`remote`]), which reads
//! with the same walk ([`AuditLog::read_matching`]) as readers of the files.
//!
//! # Storage layout
//!
//! - Default tree: one entry per block of consecutive records. Key = big-endian
//!   `u64` sequence number of the block's first record (so key order is append
//!   order); value = the block's records, each a [`StoredRecord`] as compact
//!   JSON, joined by `\n` (compact JSON never contains a raw newline). Fields
//!   are in declaration order: `seq`, `prev_hash`, `hash`, then the
//!   [`AuditRecord`] fields (`time_unix_ms` ... `latency_us`), `findings` keys
//!   sorted. The background writer stores each batch it drains as one block:
//!   one sled insert per batch instead of per record is what keeps the log off
//!   the request path's CPU budget under load. A block of one record is the
//!   layout logs had before blocks, so older logs read and verify unchanged.
//! - Tree `meta`, key `head`: `{"seq":N,"hash":"<hex>"}` naming the last record.
//!   It is written right after each block, so removing records from the end of
//!   the log (or replacing the head) is detectable. (Only the block being
//!   written when the process dies can end up past the head.)
//! - Tree `probe`: scratch key rewritten by [`AuditLog::check_writable`].
//! - Directory `wal/` (only with `audit.durability: strict`): the
//!   write-ahead log, fsync'd segment files holding the same blocks byte for
//!   byte before sled gets them (format in `wal.rs`). [`AuditLog::open`]
//!   replays the blocks sled does not have, checking that they continue the
//!   chain, then flushes sled and deletes the segments; a log without the
//!   directory (any log written before it existed) opens unchanged.
//! - Tree `checkpoints`: signed checkpoints of the head, numbered from 1
//!   (`checkpoint.rs`; format in `note.rs`).
//! - Files `checkpoint.key` (Ed25519 signing key) and `prompt.key` (prompt
//!   HMAC key) beside sled's own, 0600 (`keys.rs`).
//!
//! # Hash construction (for outside auditors)
//!
//! Sequence numbers start at 1. The first record's `prev_hash` is 64 ASCII zeros;
//! every later record's `prev_hash` is the previous record's `hash`.
//!
//! ```text
//! hash = lowercase_hex( SHA-256( prev_hash_hex_ascii || "\n" || unsealed_json ) )
//! ```
//!
//! `unsealed_json` is the stored record with the `hash` member removed, i.e. the
//! stored bytes with the exact substring `"hash":"<64 hex>",` cut out. Stored
//! values are canonical (compact, no whitespace, fixed key order), which
//! [`AuditLog::verify`] enforces, so that byte cut is all an auditor needs:
//!
//! ```text
//! stored   = {"seq":7,"prev_hash":"ab..","hash":"cd..","time_unix_ms":...}
//! unsealed = {"seq":7,"prev_hash":"ab..","time_unix_ms":...}
//! ```
//!
//! # Limits
//!
//! The chain alone detects edits, removals, reordering and tail truncation
//! made without recomputing hashes. Someone with write access who recomputes
//! the whole chain and the head passes the chain walk; signed checkpoints
//! (`checkpoint.rs`, `proof.rs`) are what catch them: sluice signs the head
//! every `audit.checkpoint_every_records` records or `checkpoint_every_secs`
//! seconds with its Ed25519 key, and `sluice audit verify --checkpoints FILE
//! --key VERIFIER` then reports
//!
//! - a rewritten chain: a checkpointed record whose hash differs;
//! - a truncated tail: a checkpoint naming a record past the log's end, even
//!   when the head entry was rewritten to match;
//! - a front removed outside retention: the first record's `seq > 1` without
//!   a signed checkpoint of `seq − 1` whose hash is its `prev_hash`
//!   (retention signs one before it removes anything). This fails when any
//!   checkpoint exists and only warns on a log that has none at all (written
//!   before checkpoints).
//!
//! What remains undetectable: records appended after the newest checkpoint
//! the auditor holds can be rewritten or dropped; checkpoints that exist only
//! inside the audit directory can be deleted or re-signed together with the
//! log, as can the signing key kept there, which is why auditors pin the
//! verifier key (`sluice audit checkpoint --public-key`) and keep the
//! checkpoints file and the exported copy (Splunk, `sluice:checkpoint`) out
//! of reach of the log's writers.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod wal;
mod writer;
pub use wal::WalError;
pub use writer::{AuditWriter, Durability, Durable};

// Signed checkpoints, retention and the keys behind them (issue 16).
mod checkpoint;
pub mod keys;
pub mod note;
mod proof;
mod retention;
pub use checkpoint::{write_checkpoint, CheckpointError, CheckpointSettings, Checkpointer, StoredCheckpoint};
pub use keys::PromptKey;
pub use proof::{check_checkpoints, ChainView, Front, Located, ProofReport};
pub use retention::Pruned;
// Reading while `sluice serve` holds the log (issue 16).
mod read;
pub mod remote;

/// `prev_hash` of the first record.
const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const META_TREE: &str = "meta";
const PROBE_TREE: &str = "probe";
const HEAD_KEY: &[u8] = b"head";
const PROBE_KEY: &[u8] = b"probe";
/// sled flushes its write buffers on its own at this interval; explicit
/// [`AuditLog::flush`] calls make a point durable immediately.
const FLUSH_EVERY_MS: u64 = 200;
/// The audit log is append-mostly and read in bulk only by verify/query, so a
/// small page cache is enough; sled's 1 GiB default would compete with the
/// local model for memory.
const CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;
/// Reopen attempts, 50 ms apart, while a lock released by this process's
/// own dropped handle is still held (see [`AuditLog::open`]).
const LOCK_RETRIES: u32 = 10;

/// One request's audit facts, as supplied by the caller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub time_unix_ms: u64,
    pub team: String,
    pub user: String,
    pub client_addr: String,
    /// "gateway" | "proxy"
    pub ingress: String,
    /// e.g. "openai.chat_completions", "anthropic.messages", "models"
    pub api: String,
    pub model_requested: String,
    pub model_used: String,
    pub provider: String,
    /// "cloud" | "local" | "block" | "error"
    pub decision: String,
    pub rule: String,
    /// Policy reason or error reason; never prompt content.
    pub reason: String,
    /// Finding type -> count.
    pub findings: BTreeMap<String, u32>,
    /// Hex SHA-256 of the prompt, unkeyed: only in records written before
    /// `prompt_hmac`; new records leave it empty.
    pub prompt_sha256: String,
    pub status: u16,
    pub latency_us: Latencies,
    /// Host the client addressed (forward proxy only). Fields added after
    /// the first release are skipped when empty, so that older records
    /// re-serialise byte for byte and their hashes still verify.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Finding type -> count of distinct values replaced by placeholders
    /// (`redact` decisions).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub redacted: BTreeMap<String, u32>,
    /// The routing signals behind the decision (task, tokens, turns, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<serde_json::Value>,
    /// The request's attachments (images, files, documents, audio).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentNote>,
    /// The AI service this traffic reached, for the shadow-AI monitor:
    /// set on tunnels, intercepted requests and plain-HTTP requests whose
    /// host is in the catalog or whose shape is an LLM API's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai: Option<AiUsage>,
    /// What the answer cost: tokens, USD, time to first token, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageNote>,
    /// Hex HMAC-SHA-256 of the prompt under the deployment's prompt key
    /// (`audit::keys`): equal prompts correlate within a deployment, but a
    /// guessed prompt cannot be confirmed without the key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prompt_hmac: String,
    /// The request's id, as returned to the client in `x-request-id`: the
    /// client's own when it sent a well-formed one, else sluice's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    /// Rules in `mode: monitor` that matched: what each would have done
    /// had it been enforced. The decision above did not apply them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monitor: Vec<MonitorNote>,
}

/// A `mode: monitor` rule that matched a request, and the action it would
/// have taken (`local`, `cloud`, `redact`, `block`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitorNote {
    /// As in [`AuditRecord::rule`]: `org:<name>` for an organisation rule,
    /// `<profile>:<name>` for a profile's.
    pub rule: String,
    pub action: String,
}

/// Tokens (from the provider's `usage` or the local engine's count), the
/// estimated cost in USD from the price table, time to first token and the
/// bytes each way, for one request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageNote {
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// 0 for local answers and for models without a price.
    pub cost_usd: f64,
    /// From sending the request upstream (or starting the local
    /// generation) to the first byte of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    /// Request body bytes from the client, answer body bytes to it.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One use of an AI service, as the shadow-AI monitor records it. Never
/// content: which app, how much, and on whose account.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AiUsage {
    /// Catalog id (`chatgpt`, `openai-api`, ...), or `unknown-llm-endpoint`
    /// for an unlisted host whose traffic has an LLM API's shape.
    pub app: String,
    /// Catalog category (`chat_assistant`, `llm_api`, `model_hub`, ...).
    pub category: String,
    /// Whether the caller's team policy sanctions this app.
    pub sanctioned: bool,
    /// `monitor`, `block` or `coach`: what the policy did about an
    /// unsanctioned app (empty when sanctioned).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub enforced: String,
    /// Whether sluice saw the requests (intercepted, plain HTTP) or only
    /// relayed encrypted bytes (a tunnel).
    pub inspected: bool,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
    /// A self-hosted server's kind, from its `/v1/models` answer
    /// (`vllm`, `llamacpp`, `ollama`, `lmstudio`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<ModelDownload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountNote>,
}

/// Model weights fetched from a hub or registry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelDownload {
    /// `huggingface`, `ollama`, or the catalog id of another hub.
    pub hub: String,
    /// `org/model` (Hugging Face) or `library/llama3` (Ollama).
    pub repo: String,
    /// File name (`model.safetensors`) or blob digest; empty when only
    /// the host was seen (tunnels).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub file: String,
    pub bytes: u64,
}

/// Whose account an intercepted API call ran on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountNote {
    /// Keyed hash (HMAC-SHA-256 with the deployment's secret, first 16 hex
    /// digits) of the API key; the key itself is never stored.
    pub key_fingerprint: String,
    /// The organisation the provider reports (`openai-organization`,
    /// `anthropic-organization-id`); OpenAI personal accounts read `user-...`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub organization: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project: String,
    /// The organisation is not one of the company's configured ones.
    pub personal: bool,
}

/// One attachment in the record: what kind and how big, never content.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttachmentNote {
    /// A known media type, or `<type>/other`: the client wrote this value,
    /// so only names from a fixed list are kept.
    pub media_type: String,
    /// Decoded size in bytes; 0 for a reference (URL, file id).
    pub bytes: u64,
}

impl AttachmentNote {
    pub fn of(a: &crate::wire::document::Attachment) -> AttachmentNote {
        AttachmentNote { media_type: known_media_type(&a.media_type), bytes: a.bytes }
    }
}

fn known_media_type(media_type: &str) -> String {
    const KNOWN: &[&str] = &[
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/heic",
        "image/heif",
        "image/svg+xml",
        "image/bmp",
        "image/tiff",
        "image/*",
        "application/pdf",
        "application/json",
        "application/xml",
        "application/zip",
        "application/msword",
        "application/octet-stream",
        "application/jsonl",
        "application/x-ndjson",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/docx",
        "application/xlsx",
        "application/doc",
        "application/xls",
        "text/plain",
        "text/csv",
        "text/markdown",
        "text/html",
        "text/xml",
        "text/x-python",
        "audio/wav",
        "audio/mp3",
        "audio/mpeg",
        "audio/flac",
        "audio/ogg",
        "audio/webm",
        "audio/*",
        "video/mp4",
        "video/webm",
        "video/quicktime",
        "video/mov",
        "video/mkv",
        "video/*",
    ];
    let lower = media_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if let Some(known) = KNOWN.iter().find(|k| **k == lower) {
        return known.to_string();
    }
    match lower.split('/').next().unwrap_or("") {
        top @ ("image" | "audio" | "video" | "text" | "application" | "font" | "model") => format!("{top}/other"),
        _ => "other".to_string(),
    }
}

/// Time spent per stage of a request, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    pub inspect: u64,
    pub upstream: u64,
    pub total: u64,
}

/// A record as stored: the caller's record sealed into the hash chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
    #[serde(flatten)]
    pub record: AuditRecord,
}

/// The hashed form of a record: a [`StoredRecord`] without its `hash`.
/// Field order must match [`StoredRecord`] minus `hash`.
#[derive(Serialize)]
struct Unsealed<'a> {
    seq: u64,
    prev_hash: &'a str,
    #[serde(flatten)]
    record: &'a AuditRecord,
}

/// The `meta/head` entry: the last record of the chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

/// Which records [`AuditLog::query`] returns.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Inclusive lower bound on `time_unix_ms`.
    pub since_ms: Option<u64>,
    /// Exclusive upper bound on `time_unix_ms`.
    pub until_ms: Option<u64>,
    /// Exact team name.
    pub team: Option<String>,
    /// Exact decision ("cloud", "local", "block", "error").
    pub decision: Option<String>,
    /// Keep only the newest `limit` matches.
    pub limit: Option<usize>,
}

/// Outcome of [`AuditLog::verify`]. Serialised for the admin endpoint
/// that verifies a running server's log (`remote`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Records that passed every check before the walk stopped.
    pub checked: u64,
    /// The first problem found; `None` means the log is intact.
    pub first_bad: Option<BadRecord>,
}

/// Where and why verification failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BadRecord {
    pub seq: u64,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log at {} is locked by another process (is `sluice serve` running?)", dir.display())]
    Locked { dir: PathBuf },
    #[error("could not create audit log directory {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not make the audit log at {} private (0700/0600): {source}", dir.display())]
    Permissions {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not open audit log at {}: {source}", dir.display())]
    Open {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("audit store error: {0}")]
    Storage(#[from] sled::Error),
    #[error("could not encode audit record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("audit log is not writable: an earlier write failed; fix the store and restart sluice")]
    NotWritable,
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("cannot start the audit writer thread: {0}")]
    Thread(#[source] io::Error),
}

/// Chain position guarded by the append lock.
struct ChainState {
    next_seq: u64,
    last_hash: String,
    /// Sequence number of the oldest record (or `next_seq` when empty); used by `len`.
    first_seq: u64,
}

/// The audit log. `Send + Sync`; share it via `Arc`.
pub struct AuditLog {
    dir: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    probe: sled::Tree,
    state: Mutex<ChainState>,
    /// Set by any failed write or flush; fails `check_writable` until restart.
    broken: AtomicBool,
}

impl AuditLog {
    /// Opens (creating if needed) the log in `dir` and recovers the chain
    /// position. The directory (and any parent it creates) is 0700 and the
    /// store's files 0600, also when they existed looser before.
    pub fn open(dir: &Path) -> Result<AuditLog, AuditError> {
        crate::private_dir::create(dir).map_err(|source| AuditError::CreateDir { dir: dir.to_path_buf(), source })?;
        let config = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .cache_capacity(CACHE_CAPACITY_BYTES)
            // An append-only log rewritten never: spend less CPU compacting.
            .mode(sled::Mode::HighThroughput);
        // sled's flusher thread lets go of the file lock a moment after the
        // last handle in this process is dropped, so a reopen right after a
        // close can find it still held: retry briefly before calling the
        // log locked by someone else.
        let mut attempts = 0;
        let db = loop {
            match config.open().map_err(|e| open_error(e, dir)) {
                Err(AuditError::Locked { .. }) if attempts < LOCK_RETRIES => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        // After sled's open, which may have created its files: they start
        // from the umask.
        crate::private_dir::tighten_tree(dir)
            .map_err(|source| AuditError::Permissions { dir: dir.to_path_buf(), source })?;
        let meta = db.open_tree(META_TREE)?;
        let probe = db.open_tree(PROBE_TREE)?;
        let state = recover_state(&db, &meta)?;
        let log = AuditLog {
            dir: dir.to_path_buf(),
            db,
            meta,
            probe,
            state: Mutex::new(state),
            broken: AtomicBool::new(false),
        };
        let replayed = log.replay_wal()?;
        if replayed > 0 {
            tracing::info!(records = replayed, "recovered audit records from the write-ahead log");
        }
        Ok(log)
    }

    /// Where the write-ahead log of `audit.durability: strict` lives.
    pub(crate) fn wal_dir(&self) -> PathBuf {
        self.dir.join("wal")
    }

    /// Seals `record` into the chain and stores it; returns its sequence number.
    pub fn append(&self, record: AuditRecord) -> Result<u64, AuditError> {
        self.append_batch(vec![record])
    }

    /// Seals and stores several records as one block (one head update);
    /// returns the sequence number of the last.
    pub fn append_batch(&self, records: Vec<AuditRecord>) -> Result<u64, AuditError> {
        self.append_group(records, usize::MAX, None, |_| {})
    }

    /// Seals `records` into the chain in blocks of at most `max_block`
    /// records. With a write-ahead log the blocks are made durable there
    /// first and `durable` is told whether that worked, before sled gets
    /// them; without one `durable` is told `true` right away. Returns the
    /// sequence number of the last record.
    ///
    /// This is the background writer's group commit: one `write` and one
    /// `fdatasync` for everything it drained, however many requests wait.
    pub(crate) fn append_group(
        &self,
        records: Vec<AuditRecord>,
        max_block: usize,
        wal: Option<&mut wal::Wal>,
        durable: impl FnOnce(bool),
    ) -> Result<u64, AuditError> {
        let result = self.append_group_inner(records, max_block, wal, durable);
        if result.is_err() {
            self.broken.store(true, Ordering::SeqCst);
        }
        result
    }

    fn append_group_inner(
        &self,
        records: Vec<AuditRecord>,
        max_block: usize,
        wal: Option<&mut wal::Wal>,
        durable: impl FnOnce(bool),
    ) -> Result<u64, AuditError> {
        // The whole seal-and-insert must be serialized: seq and prev_hash come
        // from the previous append. A poisoned lock is still consistent because
        // the state is only updated after a successful insert.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut seq = state.next_seq;
        let mut last_hash = state.last_hash.clone();
        let mut blocks: Vec<(u64, Vec<u8>)> = Vec::new();
        for (i, record) in records.iter().enumerate() {
            if i % max_block.max(1) == 0 {
                blocks.push((seq, Vec::new()));
            }
            let Some((_, block)) = blocks.last_mut() else { continue };
            if !block.is_empty() {
                block.push(b'\n');
            }
            last_hash = seal_into(seq, &last_hash, record, block)?;
            seq += 1;
        }
        let logged = match (wal, blocks.is_empty()) {
            (Some(wal), false) => wal.append(&blocks),
            _ => Ok(()),
        };
        if logged.is_err() {
            // Before the tickets fail: whoever sees a failed ticket must
            // also find the gate closed.
            self.broken.store(true, Ordering::SeqCst);
        }
        durable(logged.is_ok());
        if blocks.is_empty() {
            return Ok(state.next_seq.saturating_sub(1));
        }
        let last_seq = seq - 1;
        let head = serde_json::to_vec(&Head { seq: last_seq, hash: last_hash.clone() })?;
        // Into sled even when the write-ahead log failed: the log is broken
        // either way, and what sled holds is still evidence.
        //
        // Plain inserts, blocks first, instead of a sled transaction: every
        // sled transaction or batch writes out the log buffer twice (and wakes
        // sled's I/O threads), which cost more CPU than everything else in the
        // store. A crash between them leaves the head behind; the chain is
        // whole and `verify` accepts that, and the next append moves the head
        // past it again.
        for (first_seq, block) in blocks {
            self.db.insert(first_seq.to_be_bytes(), block)?;
        }
        self.meta.insert(HEAD_KEY, head)?;
        state.next_seq = seq;
        state.last_hash = last_hash;
        logged?;
        Ok(last_seq)
    }

    /// Replays the write-ahead log (see the module docs): the blocks past
    /// sled's last record go into sled if they continue the chain; then sled
    /// is flushed and the segments deleted. A block that does not continue
    /// the chain stops the replay: its segments are renamed `*.rejected`
    /// (kept for inspection, never replayed again) and `verify` will show
    /// where the chain ends. Returns the number of records recovered.
    fn replay_wal(&self) -> Result<u64, AuditError> {
        let dir = self.wal_dir();
        let recovered = wal::read_dir(&dir).map_err(|source| WalError::Io { path: dir.clone(), source })?;
        if recovered.segments.is_empty() {
            return Ok(0);
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut replayed = 0u64;
        let mut rejected = None;
        for frame in &recovered.frames {
            match continue_chain(&state, frame) {
                Ok(None) => {}
                Ok(Some(next)) => {
                    self.db.insert(next.first_seq.to_be_bytes(), next.block)?;
                    replayed += next.last_seq + 1 - next.first_seq;
                    state.next_seq = next.last_seq + 1;
                    state.last_hash = next.last_hash;
                }
                Err(bad) => {
                    rejected = Some(bad);
                    break;
                }
            }
        }
        if replayed > 0 {
            let last_seq = state.next_seq - 1;
            self.meta.insert(HEAD_KEY, serde_json::to_vec(&Head { seq: last_seq, hash: state.last_hash.clone() })?)?;
        }
        self.db.flush()?;
        match rejected {
            None => wal::remove_segments(&dir)?,
            Some(bad) => {
                tracing::error!(seq = bad.seq, reason = %bad.reason,
                    "audit write-ahead log does not continue the chain; its segments are kept as *.rejected; run verify");
                for segment in &recovered.segments {
                    wal::set_aside(segment).map_err(|source| WalError::Io { path: segment.clone(), source })?;
                }
            }
        }
        Ok(replayed)
    }

    /// True once a write or flush has failed: the log is no longer trusted
    /// to record what happens, so nothing may be forwarded.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Cheap gate called before a prompt is forwarded to the cloud: fails if the
    /// store is not known to be writable (a previous append/flush failed, or a
    /// probe write into a separate tree fails).
    pub fn check_writable(&self) -> Result<(), AuditError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(AuditError::NotWritable);
        }
        // sled records background flush failures as a global error that makes
        // later writes fail, so a tiny insert surfaces a dead disk.
        let now = now_unix_ms().to_be_bytes();
        if let Err(e) = self.probe.insert(PROBE_KEY, &now[..]) {
            self.broken.store(true, Ordering::SeqCst);
            return Err(AuditError::Storage(e));
        }
        Ok(())
    }

    /// Makes everything appended so far durable on disk.
    pub fn flush(&self) -> Result<(), AuditError> {
        match self.db.flush() {
            Ok(_) => Ok(()),
            Err(e) => {
                self.broken.store(true, Ordering::SeqCst);
                Err(AuditError::Storage(e))
            }
        }
    }

    /// Number of sequence numbers in the chain (last seq − first seq + 1). O(1);
    /// counts records removed from the middle by tampering, which `verify` reports.
    pub fn len(&self) -> u64 {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.next_seq - state.first_seq
    }

    /// True when no record has been appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records matching `filter`, oldest first. Records that cannot be parsed are
    /// skipped (with a warning); `verify` is the tool that reports them.
    pub fn query(&self, filter: &AuditFilter) -> Result<Vec<StoredRecord>, AuditError> {
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut found = Vec::new();
        if limit == 0 {
            return Ok(found);
        }
        // Walking newest-first lets a limit stop the walk early.
        'blocks: for entry in self.db.iter().rev() {
            let (key, value) = entry?;
            for line in value.split(|&b| b == b'\n').rev() {
                let Some(stored) = readable(&key, line) else { continue };
                if matches(filter, &stored.record) {
                    found.push(stored);
                    if found.len() == limit {
                        break 'blocks;
                    }
                }
            }
        }
        found.reverse();
        Ok(found)
    }

    /// Walks the whole log checking keys, sequence, hash chain, canonical form and
    /// the head entry; reports the first problem.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        // The head is read before the walk: records it names were committed with
        // it, so the walk must see them; records appended during the walk are
        // checked too but cannot move the head we compare against.
        let head = match self.meta.get(HEAD_KEY)? {
            None => HeadState::Missing,
            Some(bytes) => match serde_json::from_slice::<Head>(&bytes) {
                Ok(head) => HeadState::Present(head),
                Err(_) => HeadState::Unreadable,
            },
        };
        let mut checked = 0u64;
        let mut prev: Option<(u64, String)> = None;
        let mut head_record_hash: Option<String> = None;
        for entry in self.db.iter() {
            let (key, value) = entry?;
            let next_after_prev = prev.as_ref().map(|(seq, _)| seq + 1).unwrap_or(1);
            let Some(first_in_block) = key_seq(&key) else {
                return Ok(report(
                    checked,
                    BadRecord {
                        seq: next_after_prev,
                        reason: format!("record unreadable (key of {} bytes)", key.len()),
                    },
                ));
            };
            for (i, line) in value.split(|&b| b == b'\n').enumerate() {
                // Only a block's first record is named by its key; the others
                // are held in place by the sequence and hash checks.
                let position = if i == 0 {
                    Position::KeyOf(first_in_block)
                } else {
                    Position::InBlock(prev.as_ref().map(|(seq, _)| seq + 1).unwrap_or(first_in_block))
                };
                let stored = match check_record(position, line, prev.as_ref()) {
                    Ok(stored) => stored,
                    Err(bad) => return Ok(report(checked, bad)),
                };
                if let HeadState::Present(head) = &head {
                    if head.seq == stored.seq {
                        head_record_hash = Some(stored.hash.clone());
                    }
                }
                checked += 1;
                prev = Some((stored.seq, stored.hash));
            }
        }
        let last_seq = prev.as_ref().map(|(seq, _)| *seq);
        let bad = check_head(&head, last_seq, head_record_hash.as_deref());
        Ok(VerifyReport { checked, first_bad: bad })
    }
}

enum HeadState {
    Missing,
    Unreadable,
    Present(Head),
}

fn report(checked: u64, bad: BadRecord) -> VerifyReport {
    VerifyReport { checked, first_bad: Some(bad) }
}

/// Where a record sits in the store, for [`check_record`].
#[derive(Clone, Copy)]
enum Position {
    /// First record of the block stored under this key's sequence number.
    KeyOf(u64),
    /// A later record of a block; the number is the seq it should have.
    InBlock(u64),
}

/// Checks one record against its position and predecessor (`(seq, hash)`).
fn check_record(position: Position, value: &[u8], prev: Option<&(u64, String)>) -> Result<StoredRecord, BadRecord> {
    let expected_seq = match position {
        Position::KeyOf(seq) | Position::InBlock(seq) => seq,
    };
    let bad = |reason: String| BadRecord { seq: expected_seq, reason };
    let stored: StoredRecord = serde_json::from_slice(value).map_err(|_| bad("record unreadable".to_string()))?;
    // From here on the record is named by the number it carries, except the
    // first of a block, whose key is the more trustworthy name.
    let named = match position {
        Position::KeyOf(seq_in_key) => seq_in_key,
        Position::InBlock(_) => stored.seq,
    };
    let bad = |reason: String| BadRecord { seq: named, reason };
    if let Position::KeyOf(seq_in_key) = position {
        if stored.seq != seq_in_key {
            return Err(bad(format!("key {seq_in_key} holds record {} (records reordered or moved)", stored.seq)));
        }
    }
    match prev {
        Some((prev_seq, prev_hash)) => {
            let expected = prev_seq + 1;
            if stored.seq != expected {
                return Err(bad(format!("sequence gap: expected {expected}, found {} (record removed)", stored.seq)));
            }
            if &stored.prev_hash != prev_hash {
                return Err(bad(format!("prev_hash does not match record {prev_seq} (removed or reordered)")));
            }
        }
        // A first record with seq > 1 is a log pruned from the front: its
        // prev_hash has nothing left to be checked against.
        None if stored.seq == 1 && stored.prev_hash != GENESIS_HASH => {
            return Err(bad("prev_hash of the first record is not the genesis hash".to_string()));
        }
        None => {}
    }
    let recomputed =
        chain_hash(stored.seq, &stored.prev_hash, &stored.record).map_err(|_| bad("record unreadable".to_string()))?;
    if recomputed != stored.hash {
        return Err(bad("hash mismatch (record edited)".to_string()));
    }
    // Unknown extra members or reformatting would not change the parsed
    // record, so the stored bytes must also be exactly the canonical form.
    let canonical = serde_json::to_vec(&stored).map_err(|_| bad("record unreadable".to_string()))?;
    if canonical != value {
        return Err(bad("stored JSON is not in canonical form (record edited)".to_string()));
    }
    Ok(stored)
}

/// The part of a write-ahead-log block that sled does not have yet.
struct Continuation {
    first_seq: u64,
    block: Vec<u8>,
    last_seq: u64,
    last_hash: String,
}

/// What of `frame` continues the chain at `state`: `None` when sled has
/// all of it; an error when it does not continue the chain (a gap, an
/// unreadable or edited record).
fn continue_chain(state: &ChainState, frame: &wal::Frame) -> Result<Option<Continuation>, BadRecord> {
    let lines: Vec<&[u8]> = frame.block.split(|&b| b == b'\n').collect();
    let last_seq = frame.first_seq + lines.len() as u64 - 1;
    if last_seq < state.next_seq {
        return Ok(None);
    }
    if frame.first_seq > state.next_seq {
        return Err(BadRecord {
            seq: state.next_seq,
            reason: format!("write-ahead log resumes at record {} (records missing)", frame.first_seq),
        });
    }
    let skip = (state.next_seq - frame.first_seq) as usize;
    let mut prev = (state.next_seq > 1).then(|| (state.next_seq - 1, state.last_hash.clone()));
    for (i, line) in lines.iter().enumerate().skip(skip) {
        let expected = frame.first_seq + i as u64;
        let stored = check_record(Position::KeyOf(expected), line, prev.as_ref())?;
        prev = Some((stored.seq, stored.hash));
    }
    let block = if skip == 0 { frame.block.clone() } else { lines[skip..].join(&b'\n') };
    let last_hash = prev.map(|(_, hash)| hash).unwrap_or_default();
    Ok(Some(Continuation { first_seq: state.next_seq, block, last_seq, last_hash }))
}

/// Compares the head entry with the end of the walked chain.
fn check_head(head: &HeadState, last_seq: Option<u64>, head_record_hash: Option<&str>) -> Option<BadRecord> {
    match (head, last_seq) {
        (HeadState::Missing, None) => None,
        (HeadState::Missing, Some(last)) => {
            Some(BadRecord { seq: last, reason: "head entry missing (log metadata removed)".to_string() })
        }
        (HeadState::Unreadable, last) => {
            Some(BadRecord { seq: last.unwrap_or(0), reason: "head entry unreadable".to_string() })
        }
        (HeadState::Present(head), None) => Some(BadRecord {
            seq: head.seq,
            reason: format!("log is empty but head says the last record is {} (all records removed)", head.seq),
        }),
        (HeadState::Present(head), Some(last)) if last < head.seq => Some(BadRecord {
            seq: last + 1,
            reason: format!(
                "log ends at record {last} but head says the last record is {} \
                 (records removed from the end)",
                head.seq
            ),
        }),
        (HeadState::Present(head), Some(_)) => match head_record_hash {
            None => Some(BadRecord {
                seq: head.seq,
                reason: format!("head names record {} which is not in the log (head replaced)", head.seq),
            }),
            Some(hash) if hash != head.hash => Some(BadRecord {
                seq: head.seq,
                reason: format!("head hash does not match record {} (head replaced)", head.seq),
            }),
            Some(_) => None,
        },
    }
}

fn matches(filter: &AuditFilter, record: &AuditRecord) -> bool {
    filter.since_ms.is_none_or(|since| record.time_unix_ms >= since)
        && filter.until_ms.is_none_or(|until| record.time_unix_ms < until)
        && filter.team.as_ref().is_none_or(|team| &record.team == team)
        && filter.decision.as_ref().is_none_or(|decision| &record.decision == decision)
}

/// Appends the stored form of `record` at position `seq` after `prev_hash`
/// to `out` and returns its hash.
///
/// The record is serialised once: the stored form is the hashed (unsealed)
/// form with `"hash":"…",` spliced in after `prev_hash`, which is exactly how
/// the module docs tell auditors to undo it.
fn seal_into(seq: u64, prev_hash: &str, record: &AuditRecord, out: &mut Vec<u8>) -> Result<String, AuditError> {
    let unsealed = serde_json::to_vec(&Unsealed { seq, prev_hash, record })?;
    let hash = hash_unsealed(prev_hash, &unsealed);
    // `{"seq":N,"prev_hash":"…"` — the serialised prefix minus its closing brace.
    let prefix_len = serde_json::to_vec(&Prefix { seq, prev_hash })?.len() - 1;
    out.reserve(unsealed.len() + hash.len() + 10);
    out.extend_from_slice(&unsealed[..prefix_len]);
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(hash.as_bytes());
    out.push(b'"');
    // The record always has members, so what follows starts with ','.
    out.extend_from_slice(&unsealed[prefix_len..]);
    Ok(hash)
}

/// The leading members shared by the stored and the unsealed form.
#[derive(Serialize)]
struct Prefix<'a> {
    seq: u64,
    prev_hash: &'a str,
}

/// The chain hash described in the module docs.
fn chain_hash(seq: u64, prev_hash: &str, record: &AuditRecord) -> Result<String, serde_json::Error> {
    let unsealed = serde_json::to_vec(&Unsealed { seq, prev_hash, record })?;
    Ok(hash_unsealed(prev_hash, &unsealed))
}

fn hash_unsealed(prev_hash: &str, unsealed: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(unsealed);
    hex::encode(hasher.finalize())
}

/// Finds where the next append continues the chain.
///
/// The head is authoritative when it is at or beyond the last record: if the
/// tail was truncated, continuing from the head keeps the gap visible to
/// `verify` instead of silently reusing the removed sequence numbers. Any
/// disagreement is only warned about here; `verify` reports it precisely, and
/// refusing to open would also stop `sluice audit verify` from running.
fn recover_state(records: &sled::Tree, meta: &sled::Tree) -> Result<ChainState, AuditError> {
    let head = meta.get(HEAD_KEY)?.and_then(|bytes| serde_json::from_slice::<Head>(&bytes).ok());
    let tail = last_record_position(records)?;
    let mut first_seq = None;
    for entry in records.iter() {
        let (key, _) = entry?;
        if let Some(seq) = key_seq(&key) {
            first_seq = Some(seq);
            break;
        }
    }

    let (last_seq, last_hash) = match (head, tail) {
        (None, None) => (0, GENESIS_HASH.to_string()),
        (Some(head), None) => {
            tracing::warn!(head_seq = head.seq, "audit log has a head but no records; run verify");
            (head.seq, head.hash)
        }
        (None, Some(tail)) => {
            tracing::warn!("audit log head is missing or unreadable; run verify");
            tail
        }
        (Some(head), Some(tail)) if head.seq >= tail.0 => {
            if head.seq != tail.0 || head.hash != tail.1 {
                tracing::warn!(
                    head_seq = head.seq,
                    tail_seq = tail.0,
                    "audit log head does not match its last record; run verify"
                );
            }
            (head.seq, head.hash)
        }
        (Some(head), Some(tail)) => {
            tracing::warn!(head_seq = head.seq, tail_seq = tail.0, "audit log has records beyond its head; run verify");
            tail
        }
    };
    let next_seq = last_seq + 1;
    Ok(ChainState { next_seq, last_hash, first_seq: first_seq.filter(|&s| s <= next_seq).unwrap_or(next_seq) })
}

/// `(seq, hash)` of the newest record with a well-formed key. An unreadable
/// value still yields its key's seq (so new records never overwrite it), with a
/// placeholder hash; the chain break is then reported by `verify`.
/// A stored record line for the readers; one that cannot be parsed is
/// skipped with a warning (`verify` is the tool that reports it).
fn readable(key: &[u8], line: &[u8]) -> Option<StoredRecord> {
    match serde_json::from_slice(line) {
        Ok(stored) => Some(stored),
        Err(_) => {
            tracing::warn!(key = ?key, "skipping unreadable audit record");
            None
        }
    }
}

fn last_record_position(records: &sled::Tree) -> Result<Option<(u64, String)>, AuditError> {
    for entry in records.iter().rev() {
        let (key, value) = entry?;
        let Some(first) = key_seq(&key) else {
            tracing::warn!("audit log has a record with a malformed key; run verify");
            continue;
        };
        let lines = value.split(|&b| b == b'\n').count() as u64;
        let seq = first + lines - 1;
        let last = value.rsplit(|&b| b == b'\n').next().unwrap_or(&value);
        return Ok(Some(match serde_json::from_slice::<StoredRecord>(last) {
            Ok(stored) => (seq, stored.hash),
            Err(_) => {
                tracing::warn!(seq, "last audit record is unreadable; run verify");
                (seq, GENESIS_HASH.to_string())
            }
        }));
    }
    Ok(None)
}

fn key_seq(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

/// Maps a sled open failure, recognising the data-directory lock being held.
fn open_error(err: sled::Error, dir: &Path) -> AuditError {
    if is_lock_error(&err) {
        AuditError::Locked { dir: dir.to_path_buf() }
    } else {
        AuditError::Open { dir: dir.to_path_buf(), source: err }
    }
}

/// sled 0.34 reports a held lock as `io::ErrorKind::Other` with the message
/// "could not acquire lock on ...: <flock error>", losing the original kind, so
/// the message prefix is checked as well as the kind a plain flock failure has.
fn is_lock_error(err: &sled::Error) -> bool {
    match err {
        sled::Error::Io(e) => {
            e.kind() == io::ErrorKind::WouldBlock || e.to_string().starts_with("could not acquire lock")
        }
        _ => false,
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Tree of exporters' positions (`cursors`): name -> big-endian `u64`, the
/// last sequence number that exporter delivered, plus small per-exporter
/// strings (a channel id). Outside the default tree, so `verify` and
/// `query` never see it.
const CURSORS_TREE: &str = "cursors";

// Reading for exporters: records in order from a sequence number, and
// durable cursors. Kept apart from the chain code above.
impl AuditLog {
    /// Sequence number of the last appended record; 0 when none.
    pub fn head_seq(&self) -> u64 {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.next_seq.saturating_sub(1)
    }

    /// Up to `max` records with `seq >= from`, oldest first. Records that
    /// cannot be parsed are skipped with a warning (`verify` reports them).
    pub fn read_from(&self, from: u64, max: usize) -> Result<Vec<StoredRecord>, AuditError> {
        let mut found = Vec::new();
        if max == 0 {
            return Ok(found);
        }
        // `from` may sit inside a block: start at the block holding it (the
        // last key at or before it) and skip the records before it.
        let start = match self.db.range(..=from.to_be_bytes()).next_back() {
            Some(entry) => entry?.0.to_vec(),
            None => from.to_be_bytes().to_vec(),
        };
        for entry in self.db.range(start..) {
            let (key, value) = entry?;
            for line in value.split(|&b| b == b'\n') {
                let stored: StoredRecord = match serde_json::from_slice(line) {
                    Ok(stored) => stored,
                    Err(_) => {
                        tracing::warn!(key = ?key.as_ref(), "skipping unreadable audit record");
                        continue;
                    }
                };
                if stored.seq < from {
                    continue;
                }
                found.push(stored);
                if found.len() == max {
                    return Ok(found);
                }
            }
        }
        Ok(found)
    }

    /// The named exporter's cursor: the last sequence number it delivered;
    /// 0 when it has delivered nothing.
    pub fn cursor(&self, name: &str) -> Result<u64, AuditError> {
        let tree = self.db.open_tree(CURSORS_TREE)?;
        Ok(tree.get(name.as_bytes())?.and_then(|v| key_seq(&v)).unwrap_or(0))
    }

    /// Moves the named cursor to `seq` and makes it durable before
    /// returning, so a restart resumes after what was delivered.
    pub fn set_cursor(&self, name: &str, seq: u64) -> Result<(), AuditError> {
        let tree = self.db.open_tree(CURSORS_TREE)?;
        tree.insert(name.as_bytes(), &seq.to_be_bytes()[..])?;
        tree.flush()?;
        Ok(())
    }

    /// A small string an exporter keeps beside its cursor (HEC's channel).
    pub fn cursor_text(&self, name: &str) -> Result<Option<String>, AuditError> {
        let tree = self.db.open_tree(CURSORS_TREE)?;
        Ok(tree.get(name.as_bytes())?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Stores [`AuditLog::cursor_text`] durably.
    pub fn set_cursor_text(&self, name: &str, text: &str) -> Result<(), AuditError> {
        let tree = self.db.open_tree(CURSORS_TREE)?;
        tree.insert(name.as_bytes(), text.as_bytes())?;
        tree.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
