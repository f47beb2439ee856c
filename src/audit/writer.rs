//! The audit writer: a dedicated thread that appends records in batches, so
//! sled's I/O (and its occasional `sync_file_range` stalls) never runs on
//! the threads serving requests.
//!
//! Requests hand their finished record to [`AuditWriter::submit`] and move
//! on. Each batch the thread drains becomes one block in the store. The
//! gate that keeps prompts from leaving when the log is broken,
//! [`AuditWriter::check_writable`], is an atomic load; the thread itself
//! probes the store once a second so a dead disk is noticed even when idle.
//! [`AuditWriter::flush`] waits until everything submitted before it is on
//! disk; shutdown calls it, so no acknowledged record is lost.
//!
//! The queue is a plain vector under a mutex rather than a channel: a
//! channel wakes the thread for every record, which under load cost two
//! futex calls and two context switches per request. Here a submit only
//! signals a writer that is idle; a busy writer comes back for the queue
//! after each batch (plus [`LINGER`]) by itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::{AuditError, AuditLog, AuditRecord};

/// Records waiting for the thread; beyond this `submit` blocks, which slows
/// requests down instead of dropping their records.
const QUEUE_CAPACITY: usize = 16_384;
/// Most records sealed into one block.
const MAX_BATCH: usize = 512;
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long the thread lets records gather after storing a batch. Every
/// batch is one sled insert, whose cost hardly depends on its size, so
/// under load a short wait saves most of the store's CPU; the records were
/// acknowledged already and sled makes them durable on its own 200 ms
/// schedule, so the wait costs nothing a client could see.
const LINGER: Duration = Duration::from_millis(1);

enum Message {
    Record(Box<AuditRecord>),
    Flush(SyncSender<Result<(), AuditError>>),
}

#[derive(Default)]
struct Queue {
    messages: Vec<Message>,
    /// The thread is waiting for work and must be signalled.
    writer_idle: bool,
    /// The writer handle is gone: the thread drains what is left and ends.
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when an idle writer has work (or must stop).
    work: Condvar,
    /// Signalled when the thread takes messages out of a full queue.
    space: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock, and a queue is consistent
        // between any two statements, so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct AuditWriter {
    log: Arc<AuditLog>,
    shared: Arc<Shared>,
    /// Cleared when the writer thread ends, whether it returned or panicked.
    alive: Arc<AtomicBool>,
}

/// Clears `alive` when the thread ends, even by panic, and wakes any
/// submitter blocked on a full queue so it can fail instead of hanging.
struct AliveGuard(Arc<AtomicBool>, Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
        self.1.lock().closed = true;
        self.1.space.notify_all();
    }
}

impl AuditWriter {
    pub fn start(log: Arc<AuditLog>) -> std::io::Result<AuditWriter> {
        let shared = Arc::new(Shared::default());
        let thread_log = log.clone();
        let alive = Arc::new(AtomicBool::new(true));
        let guard = AliveGuard(alive.clone(), shared.clone());
        let thread_shared = shared.clone();
        std::thread::Builder::new().name("sluice-audit".into()).spawn(move || {
            let _guard = guard;
            run(&thread_log, &thread_shared)
        })?;
        Ok(AuditWriter { log, shared, alive })
    }

    pub fn log(&self) -> &Arc<AuditLog> {
        &self.log
    }

    /// Queue a record. Fails only if the writer thread is gone.
    pub fn submit(&self, record: AuditRecord) -> Result<(), AuditError> {
        self.push(Message::Record(Box::new(record)))
    }

    fn push(&self, message: Message) -> Result<(), AuditError> {
        let mut queue = self.shared.lock();
        while queue.messages.len() >= QUEUE_CAPACITY && !queue.closed {
            queue = self.shared.space.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
        if queue.closed || !self.alive.load(Ordering::SeqCst) {
            return Err(AuditError::NotWritable);
        }
        queue.messages.push(message);
        if queue.writer_idle {
            queue.writer_idle = false;
            self.shared.work.notify_one();
        }
        Ok(())
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
        self.push(Message::Flush(done_tx))?;
        done_rx.recv().map_err(|_| AuditError::NotWritable)?
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
    }
}

/// What one wait for work produced.
enum Work {
    Messages(Vec<Message>),
    /// Nothing arrived for [`PROBE_EVERY`].
    Idle,
    Closed,
}

fn next_work(shared: &Shared) -> Work {
    let mut queue = shared.lock();
    if queue.messages.is_empty() && !queue.closed {
        queue.writer_idle = true;
        let (woken, _) = shared
            .work
            .wait_timeout_while(queue, PROBE_EVERY, |q| q.messages.is_empty() && !q.closed)
            .unwrap_or_else(|e| e.into_inner());
        queue = woken;
        queue.writer_idle = false;
    }
    if !queue.messages.is_empty() {
        let messages = std::mem::take(&mut queue.messages);
        drop(queue);
        shared.space.notify_all();
        return Work::Messages(messages);
    }
    if queue.closed {
        Work::Closed
    } else {
        Work::Idle
    }
}

fn run(log: &AuditLog, shared: &Shared) {
    // Report a failing probe once, not every second.
    let mut probe_failing = false;
    loop {
        let messages = match next_work(shared) {
            Work::Messages(messages) => messages,
            Work::Idle => {
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
            Work::Closed => break,
        };
        let flushed = store(log, messages);
        // A flush waiter wanted its answer now; otherwise let the next
        // batch gather (records arriving meanwhile need no wake-up).
        if !flushed {
            std::thread::sleep(LINGER);
        }
    }
    if let Err(e) = log.flush() {
        tracing::error!(error = %e, "final audit flush failed");
    }
}

/// Appends the records in order, answering each flush waiter once everything
/// before it is on disk; returns whether there was a waiter.
fn store(log: &AuditLog, messages: Vec<Message>) -> bool {
    let mut batch = Vec::with_capacity(messages.len().min(MAX_BATCH));
    let mut flushed = false;
    for message in messages {
        match message {
            Message::Record(record) => {
                batch.push(*record);
                if batch.len() == MAX_BATCH {
                    append(log, &mut batch);
                }
            }
            Message::Flush(waiter) => {
                append(log, &mut batch);
                let result = if log.is_broken() { Err(AuditError::NotWritable) } else { log.flush() };
                let _ = waiter.send(result);
                flushed = true;
            }
        }
    }
    append(log, &mut batch);
    flushed
}

fn append(log: &AuditLog, batch: &mut Vec<AuditRecord>) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len();
    if let Err(e) = log.append_batch(std::mem::take(batch)) {
        metrics::counter!(crate::telemetry::AUDIT_WRITE_ERRORS).increment(n as u64);
        tracing::error!(error = %e, records = n, "audit records could not be written; cloud forwarding stops");
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
            writer.submit(AuditRecord { team: format!("t{i}"), ..AuditRecord::default() }).unwrap();
        }
        writer.flush().unwrap();
        assert_eq!(log.len(), 1000);
        let all = log.query(&super::super::AuditFilter::default()).unwrap();
        assert_eq!(all[0].record.team, "t0");
        assert_eq!(all[999].record.team, "t999");
        assert!(log.verify().unwrap().first_bad.is_none());
        assert!(writer.check_writable().is_ok());
    }

    #[test]
    fn records_from_many_threads_all_arrive_in_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AuditLog::open(dir.path()).unwrap());
        let writer = Arc::new(AuditWriter::start(log.clone()).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        writer
                            .submit(AuditRecord { team: format!("t{t}"), status: i, ..AuditRecord::default() })
                            .unwrap();
                        // Let the writer go idle now and then, so both the
                        // wake-up and the no-wake-up path are taken.
                        if i % 500 == 0 {
                            std::thread::sleep(Duration::from_millis(3));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        writer.flush().unwrap();
        assert_eq!(log.len(), 8_000);
        assert!(log.verify().unwrap().first_bad.is_none());
        // Each submitter's records keep their order.
        let all = log.query(&super::super::AuditFilter::default()).unwrap();
        for t in 0..4 {
            let statuses: Vec<u16> =
                all.iter().filter(|r| r.record.team == format!("t{t}")).map(|r| r.record.status).collect();
            assert_eq!(statuses, (0..2_000).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_record_submitted_to_an_idle_writer_is_stored_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AuditLog::open(dir.path()).unwrap());
        let writer = AuditWriter::start(log.clone()).unwrap();
        // Let the thread go idle first.
        std::thread::sleep(Duration::from_millis(20));
        writer.submit(AuditRecord::default()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while log.is_empty() {
            assert!(std::time::Instant::now() < deadline, "idle writer was not woken");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
