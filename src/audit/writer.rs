//! The audit writer: a dedicated thread that appends records in batches, so
//! sled's I/O (and its occasional `sync_file_range` stalls) never runs on
//! the threads serving requests.
//!
//! Requests hand their finished record to [`AuditWriter::submit`] and move
//! on. Each batch the thread drains becomes one block in the store. The gate that keeps prompts from leaving when the log is broken,
//! [`AuditWriter::check_writable`], is an atomic load; the thread itself
//! probes the store once a second so a dead disk is noticed even when idle.
//! [`AuditWriter::flush`] waits until everything submitted before it is on
//! disk; shutdown calls it, so no acknowledged record is lost.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{AuditError, AuditLog, AuditRecord};

/// Records waiting for the thread; beyond this `submit` blocks, which slows
/// requests down instead of dropping their records.
const QUEUE_CAPACITY: usize = 16_384;
/// Most records sealed into one sled transaction.
const MAX_BATCH: usize = 512;
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long the thread waits for more records before storing a small batch.
/// Every batch is one sled insert, whose cost hardly depends on its size, so
/// under load a short wait saves most of the store's CPU; the records were
/// acknowledged already and sled makes them durable on its own 200 ms
/// schedule, so the wait costs nothing a client could see.
const LINGER: Duration = Duration::from_millis(1);
/// A batch this large is stored without lingering.
const LINGER_BELOW: usize = 64;

enum Message {
    Record(Box<AuditRecord>),
    Flush(SyncSender<Result<(), AuditError>>),
}

pub struct AuditWriter {
    log: Arc<AuditLog>,
    tx: SyncSender<Message>,
    /// Cleared when the writer thread ends, whether it returned or panicked.
    alive: Arc<AtomicBool>,
}

/// Clears `alive` when the thread ends, even by panic.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl AuditWriter {
    pub fn start(log: Arc<AuditLog>) -> std::io::Result<AuditWriter> {
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let thread_log = log.clone();
        let alive = Arc::new(AtomicBool::new(true));
        let guard = AliveGuard(alive.clone());
        std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || {
                let _guard = guard;
                run(&thread_log, rx)
            })?;
        Ok(AuditWriter { log, tx, alive })
    }

    pub fn log(&self) -> &Arc<AuditLog> {
        &self.log
    }

    /// Queue a record. Fails only if the writer thread is gone.
    pub fn submit(&self, record: AuditRecord) -> Result<(), AuditError> {
        self.tx
            .send(Message::Record(Box::new(record)))
            .map_err(|_| AuditError::NotWritable)
    }

    /// The fail-closed gate: false once any write, flush or probe failed, or
    /// the writer thread died.
    pub fn check_writable(&self) -> Result<(), AuditError> {
        if self.log.is_broken() || !self.alive.load(Ordering::SeqCst) {
            return Err(AuditError::NotWritable);
        }
        Ok(())
    }

    /// Wait until every record submitted so far is written and flushed.
    pub fn flush(&self) -> Result<(), AuditError> {
        let (done_tx, done_rx) = sync_channel(1);
        self.tx
            .send(Message::Flush(done_tx))
            .map_err(|_| AuditError::NotWritable)?;
        done_rx.recv().map_err(|_| AuditError::NotWritable)?
    }
}

fn run(log: &AuditLog, rx: Receiver<Message>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Report a failing probe once, not every second.
    let mut probe_failing = false;
    loop {
        let first = match rx.recv_timeout(PROBE_EVERY) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                // A probe write plus a flush reaches the disk, so a full or
                // failed disk is noticed even when no records arrive.
                match log.check_writable().and_then(|()| log.flush()) {
                    Err(e) if !probe_failing => {
                        tracing::error!(error = %e, "audit log probe failed; cloud forwarding stops");
                        probe_failing = true;
                    }
                    Err(_) => {}
                    Ok(()) => probe_failing = false,
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut flush_waiters = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Record(r) => batch.push(*r),
                Message::Flush(waiter) => flush_waiters.push(waiter),
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            next = rx.try_recv().ok();
            // A flush waiter wants its answer now, not after the linger.
            if next.is_none() && flush_waiters.is_empty() && batch.len() < LINGER_BELOW {
                next = rx.recv_timeout(LINGER).ok();
            }
        }
        if !batch.is_empty() {
            let n = batch.len();
            if let Err(e) = log.append_batch(std::mem::take(&mut batch)) {
                metrics::counter!(crate::telemetry::AUDIT_WRITE_ERRORS).increment(n as u64);
                tracing::error!(error = %e, records = n, "audit records could not be written; cloud forwarding stops");
            }
        }
        if !flush_waiters.is_empty() {
            let result = if log.is_broken() { Err(AuditError::NotWritable) } else { log.flush() };
            for waiter in flush_waiters {
                let again = match &result {
                    Ok(()) => Ok(()),
                    Err(_) => Err(AuditError::NotWritable),
                };
                let _ = waiter.send(again);
            }
        }
    }
    if let Err(e) = log.flush() {
        tracing::error!(error = %e, "final audit flush failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submitted_records_are_written_in_order_and_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AuditLog::open(dir.path()).unwrap());
        let writer = AuditWriter::start(log.clone()).unwrap();
        for i in 0..1000 {
            writer
                .submit(AuditRecord { team: format!("t{i}"), ..AuditRecord::default() })
                .unwrap();
        }
        writer.flush().unwrap();
        assert_eq!(log.len(), 1000);
        let all = log.query(&super::super::AuditFilter::default()).unwrap();
        assert_eq!(all[0].record.team, "t0");
        assert_eq!(all[999].record.team, "t999");
        assert!(log.verify().unwrap().first_bad.is_none());
        assert!(writer.check_writable().is_ok());
    }
}
