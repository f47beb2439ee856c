//! Signed checkpoints of the chain head: where they are kept, and the
//! background thread that writes them (and runs retention).
//!
//! A checkpoint (format in `note.rs`) names the head record's seq and hash
//! and is signed with the deployment's Ed25519 key. Each is
//!
//! - stored in the log's `checkpoints` tree (key: big-endian `u64`
//!   number, 1, 2, ...; value: the signed note), outside the default tree
//!   so the chain walk never sees it, for `sluice audit checkpoint` and the
//!   Splunk exporter;
//! - appended to `audit.checkpoints_file` when configured, and fsync'd,
//!   before it is stored.
//!
//! The [`Checkpointer`] thread only reads the chain position
//! ([`AuditLog::chain_head`]); it never holds anything the writer or the
//! request path waits for. Before signing it flushes the log, so a
//! checkpoint never names a record that a crash could still take back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::note::{Checkpoint, NoteError, Signer};
use super::{key_seq, now_unix_ms, AuditError, AuditLog};
use crate::config::AuditConfig;

const CHECKPOINT_TREE: &str = "checkpoints";
/// How often the thread looks at the head.
const POLL: Duration = Duration::from_millis(250);
/// How often retention runs after the pass at start.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("{0}")]
    Note(#[from] NoteError),
    #[error("cannot append the checkpoint to {}: {source}", path.display())]
    File { path: PathBuf, source: std::io::Error },
    #[error("retention skipped: {0}; run `sluice audit verify`")]
    ChainBroken(String),
}

/// A checkpoint as the log stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Its place in the `checkpoints` tree: 1 for the first ever written.
    pub number: u64,
    /// The signed note.
    pub note: String,
}

impl AuditLog {
    /// `(seq, hash)` of the last appended record; `(0, genesis)` when none.
    pub fn chain_head(&self) -> (u64, String) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (state.next_seq.saturating_sub(1), state.last_hash.clone())
    }

    /// Every stored checkpoint, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, AuditError> {
        self.checkpoints_after(0, usize::MAX)
    }

    /// Up to `max` stored checkpoints numbered after `number`, oldest first.
    pub fn checkpoints_after(&self, number: u64, max: usize) -> Result<Vec<StoredCheckpoint>, AuditError> {
        let tree = self.db.open_tree(CHECKPOINT_TREE)?;
        let mut found = Vec::new();
        for entry in tree.range(number.saturating_add(1).to_be_bytes()..) {
            if found.len() >= max {
                break;
            }
            let (key, value) = entry?;
            let Some(number) = key_seq(&key) else { continue };
            found.push(StoredCheckpoint { number, note: String::from_utf8_lossy(&value).into_owned() });
        }
        Ok(found)
    }

    /// The newest stored checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, AuditError> {
        let tree = self.db.open_tree(CHECKPOINT_TREE)?;
        Ok(tree.last()?.and_then(|(key, value)| {
            key_seq(&key).map(|number| StoredCheckpoint { number, note: String::from_utf8_lossy(&value).into_owned() })
        }))
    }

    /// Stores a signed note as the next checkpoint and makes it durable.
    fn store_checkpoint(&self, note: &str) -> Result<u64, AuditError> {
        let tree = self.db.open_tree(CHECKPOINT_TREE)?;
        let number = tree.last()?.and_then(|(key, _)| key_seq(&key)).unwrap_or(0) + 1;
        tree.insert(number.to_be_bytes(), note.as_bytes())?;
        tree.flush()?;
        Ok(number)
    }
}

/// Signs a checkpoint of record `seq` (whose hash is `hash`) and keeps it:
/// appended to `file` (fsync'd) first, then stored in the log. `cut` marks
/// the checkpoint retention writes before removing records `..=seq`.
pub fn write_checkpoint(
    log: &AuditLog,
    signer: &Signer,
    file: Option<&Path>,
    seq: u64,
    hash: &str,
    cut: bool,
) -> Result<Checkpoint, CheckpointError> {
    let checkpoint = Checkpoint::new(signer.name(), seq, hash, now_unix_ms(), cut)?;
    let note = signer.sign_checkpoint(&checkpoint);
    if let Some(path) = file {
        append_note(path, &note).map_err(|source| CheckpointError::File { path: path.to_path_buf(), source })?;
    }
    log.store_checkpoint(&note)?;
    Ok(checkpoint)
}

/// Appends `note` and a blank line to the file, durably.
fn append_note(path: &Path, note: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    // One write, so a concurrent reader or a crash sees whole notes or a
    // torn last one (which `verify` reports as such), never interleaving.
    file.write_all(format!("{note}\n").as_bytes())?;
    file.sync_data()
}

/// When and where the [`Checkpointer`] writes.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointSettings {
    /// Records since the last checkpoint that trigger the next; 0: never.
    pub every_records: u64,
    /// Time since the last checkpoint that triggers the next, if the head moved.
    pub every: Option<Duration>,
    pub file: Option<PathBuf>,
    /// Records older than this are removed, in whole blocks.
    pub retention: Option<Duration>,
}

impl CheckpointSettings {
    pub fn of(config: &AuditConfig) -> CheckpointSettings {
        CheckpointSettings {
            every_records: config.checkpoint_every_records,
            every: (config.checkpoint_every_secs > 0).then(|| Duration::from_secs(config.checkpoint_every_secs)),
            file: config.checkpoints_file.clone(),
            retention: config.retention_days.map(|days| Duration::from_secs(days.saturating_mul(86_400))),
        }
    }

    fn periodic(&self) -> bool {
        self.every_records > 0 || self.every.is_some()
    }
}

/// The background thread: a checkpoint every N records or T seconds
/// (whichever comes first, only when the head moved), one more at
/// [`Checkpointer::finish`], and retention at start and hourly.
pub struct Checkpointer {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    pub fn start(log: Arc<AuditLog>, signer: Signer, settings: CheckpointSettings) -> std::io::Result<Checkpointer> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sluice-checkpoint".into())
            .spawn(move || run(&log, &signer, &settings, &stopped))?;
        Ok(Checkpointer { stop, thread })
    }

    /// Writes a last checkpoint of the head (call it after the audit
    /// writer's final flush) and ends the thread.
    pub fn finish(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the checkpoint thread panicked; the last checkpoint may be missing");
        }
    }
}

/// Where the last checkpoint stands.
struct Progress {
    last_seq: u64,
    last_at: Instant,
    /// A write is failing: reported once, not every poll.
    failing: bool,
}

impl Progress {
    fn checkpoint(&mut self, log: &AuditLog, signer: &Signer, file: Option<&Path>) {
        let (seq, hash) = log.chain_head();
        // Only records on disk may be vouched for.
        let result = log
            .flush()
            .map_err(CheckpointError::from)
            .and_then(|()| write_checkpoint(log, signer, file, seq, &hash, false));
        match result {
            Ok(_) => {
                tracing::debug!(seq, "signed a checkpoint of the audit log");
                *self = Progress { last_seq: seq, last_at: Instant::now(), failing: false };
            }
            Err(e) if !self.failing => {
                tracing::error!(error = %e, seq, "cannot write an audit checkpoint; retrying");
                self.failing = true;
            }
            Err(_) => {}
        }
    }
}

fn run(log: &AuditLog, signer: &Signer, settings: &CheckpointSettings, stopped: &mpsc::Receiver<()>) {
    let file = settings.file.as_deref();
    // A restart does not sign the same head again.
    let last_seq = match log.latest_checkpoint() {
        Ok(latest) => {
            latest.and_then(|c| c.note.split('\n').nth(1).and_then(|size| size.parse::<u64>().ok())).unwrap_or(0)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the stored checkpoints");
            0
        }
    };
    let mut progress = Progress { last_seq, last_at: Instant::now(), failing: false };
    let mut retention_due = Instant::now();
    loop {
        if let Some(keep) = settings.retention {
            if Instant::now() >= retention_due {
                retention_due = Instant::now() + RETENTION_EVERY;
                retain(log, signer, file, keep);
            }
        }
        if settings.periodic() {
            let seq = log.head_seq();
            let by_count =
                settings.every_records > 0 && seq >= progress.last_seq.saturating_add(settings.every_records);
            let by_time = settings.every.is_some_and(|every| progress.last_at.elapsed() >= every);
            if seq > progress.last_seq && (by_count || by_time) {
                progress.checkpoint(log, signer, file);
            }
        }
        match stopped.recv_timeout(POLL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if settings.periodic() && log.head_seq() > progress.last_seq {
        progress.failing = false;
        progress.checkpoint(log, signer, file);
    }
}

/// One retention pass: records older than `keep` go.
fn retain(log: &AuditLog, signer: &Signer, file: Option<&Path>, keep: Duration) {
    let cutoff = now_unix_ms().saturating_sub(keep.as_millis() as u64);
    match log.prune_before(cutoff, signer, file) {
        Ok(Some(pruned)) => tracing::info!(
            records = pruned.records,
            through_seq = pruned.through_seq,
            "retention removed audit records; a signed checkpoint marks the cut"
        ),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "audit retention failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::note::Verifier;
    use crate::audit::AuditRecord;

    fn signer() -> Signer {
        Signer::new("sluice/test", &[3u8; 32]).unwrap()
    }

    fn open(note: &str, verifier: &Verifier) -> Checkpoint {
        Checkpoint::parse(verifier.open(note).unwrap()).unwrap()
    }

    #[test]
    fn checkpoints_go_to_the_store_and_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&tmp.path().join("audit")).unwrap();
        for _ in 0..3 {
            log.append(AuditRecord::default()).unwrap();
        }
        let file = tmp.path().join("checkpoints.txt");
        let (seq, hash) = log.chain_head();
        assert_eq!(seq, 3);
        let written = write_checkpoint(&log, &signer(), Some(&file), seq, &hash, false).unwrap();
        log.append(AuditRecord::default()).unwrap();
        let (seq, hash) = log.chain_head();
        write_checkpoint(&log, &signer(), Some(&file), seq, &hash, false).unwrap();

        let stored = log.checkpoints().unwrap();
        assert_eq!(stored.iter().map(|c| c.number).collect::<Vec<_>>(), [1, 2]);
        let verifier = signer().verifier();
        assert_eq!(open(&stored[0].note, &verifier), written);
        assert_eq!(open(&stored[1].note, &verifier).size, 4);
        assert_eq!(open(&stored[1].note, &verifier).hash_hex(), hash);
        assert_eq!(log.latest_checkpoint().unwrap(), Some(stored[1].clone()));
        assert_eq!(log.checkpoints_after(1, 10).unwrap(), vec![stored[1].clone()]);

        let text = std::fs::read_to_string(&file).unwrap();
        let notes: Vec<String> = super::super::note::split_notes(&text).into_iter().map(|n| n.note.unwrap()).collect();
        assert_eq!(notes, [stored[0].note.clone(), stored[1].note.clone()]);
    }

    #[test]
    fn the_thread_checkpoints_by_count_and_at_finish() {
        let tmp = tempfile::tempdir().unwrap();
        let log = Arc::new(AuditLog::open(&tmp.path().join("audit")).unwrap());
        let settings = CheckpointSettings { every_records: 5, every: None, file: None, retention: None };
        let checkpointer = Checkpointer::start(log.clone(), signer(), settings).unwrap();
        for _ in 0..5 {
            log.append(AuditRecord::default()).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while log.checkpoints().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no checkpoint after 5 records");
            std::thread::sleep(Duration::from_millis(10));
        }
        log.append(AuditRecord::default()).unwrap();
        checkpointer.finish();
        let verifier = signer().verifier();
        let sizes: Vec<u64> = log.checkpoints().unwrap().iter().map(|c| open(&c.note, &verifier).size).collect();
        assert_eq!(sizes, [5, 6], "one by count, one at finish");

        // A restart with nothing new signs nothing new.
        let settings = CheckpointSettings { every_records: 1, every: None, file: None, retention: None };
        Checkpointer::start(log.clone(), signer(), settings).unwrap().finish();
        assert_eq!(log.checkpoints().unwrap().len(), 2);
    }
}
