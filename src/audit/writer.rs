//! The audit writer: a dedicated thread that appends records in batches, so
//! sled's I/O (and its occasional `sync_file_range` stalls) never runs on
//! the threads serving requests.
//!
//! Requests hand their finished record to [`AuditWriter::submit`] and get a
//! [`Durable`] ticket back. Each batch the thread drains becomes one group:
//!
//! - `strict` ([`Durability::Strict`], the default): the group is sealed,
//!   appended to the write-ahead log (`wal.rs`) with one `fdatasync`, then
//!   every ticket of the group resolves, then the blocks go into sled. The
//!   pipeline holds each answer's last frame until its ticket resolves, so
//!   an answered request's record survives a crash or power cut. Many
//!   requests share one fsync (group commit); the thread does not linger
//!   between groups, since records pile up during each fsync anyway.
//! - `batched`: tickets are resolved at once and records reach the disk on
//!   sled's 200 ms flush schedule, as before the WAL existed: a crash can
//!   lose the last ~200 ms of answered requests' records.
//!
//! The gate that keeps prompts from leaving when the log is broken,
//! [`AuditWriter::check_writable`], is an atomic load; the thread itself
//! probes the store once a second so a dead disk is noticed even when idle.
//! [`AuditWriter::flush`] waits until everything submitted before it is on
//! disk in sled; shutdown calls it, so no acknowledged record is lost, and
//! the write-ahead log is empty after a clean shutdown.
//!
//! The queue is a plain vector under a mutex rather than a channel: a
//! channel wakes the thread for every record, which under load cost two
//! futex calls and two context switches per request. Here a submit only
//! signals a writer that is idle; a busy writer comes back for the queue
//! after each batch by itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::oneshot;

use super::wal::{Wal, SEGMENT_BYTES};
use super::{AuditError, AuditLog, AuditRecord};

/// Records waiting for the thread; beyond this `submit` blocks, which slows
/// requests down instead of dropping their records.
const QUEUE_CAPACITY: usize = 16_384;
/// Most records sealed into one block.
const MAX_BATCH: usize = 512;
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// `batched` only: how long the thread lets records gather after storing a
/// batch. Every batch is one sled insert, whose cost hardly depends on its
/// size, so under load a short wait saves most of the store's CPU; the
/// records were acknowledged already, so the wait costs nothing a client
/// could see. (In `strict` mode clients wait for the group, so there is no
/// linger: the fsync itself is the window in which the next group gathers.)
const LINGER: Duration = Duration::from_millis(1);

/// When a request may be answered relative to its audit record
/// (`audit.durability`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Only once the record is fsync'd to the write-ahead log.
    #[default]
    Strict,
    /// At once; the record reaches the disk within ~200 ms.
    Batched,
}

/// Resolves when a submitted record is durable: at once in `batched` mode
/// (or when the record was never needed to be waited for), after its
/// group's fsync in `strict` mode. Resolves to an error when the record
/// could not be made durable; the answer must then be withheld.
#[must_use = "a request is answered only once its record is durable"]
pub struct Durable(Ticket);

enum Ticket {
    Done,
    Failed,
    Waiting(oneshot::Receiver<bool>),
}

impl Durable {
    fn done() -> Durable {
        Durable(Ticket::Done)
    }

    fn failed() -> Durable {
        Durable(Ticket::Failed)
    }

    /// Whether the ticket has resolved successfully without waiting
    /// (`batched` mode): nothing needs to be held for it.
    pub fn is_done(&self) -> bool {
        matches!(self.0, Ticket::Done)
    }
}

impl Future for Durable {
    type Output = Result<(), AuditError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = match &mut self.0 {
            Ticket::Done => return Poll::Ready(Ok(())),
            Ticket::Failed => return Poll::Ready(Err(AuditError::NotWritable)),
            // A dropped sender (the thread died, or the group failed to
            // seal) is a failure too.
            Ticket::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(true)) => Ok(()),
                Poll::Ready(_) => Err(AuditError::NotWritable),
            },
        };
        self.0 = if result.is_ok() { Ticket::Done } else { Ticket::Failed };
        Poll::Ready(result)
    }
}

enum Message {
    /// A record and, in `strict` mode, the ticket to resolve once it is durable.
    Record(Box<AuditRecord>, Option<oneshot::Sender<bool>>),
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
    durability: Durability,
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
    /// Starts the writer thread. In `strict` mode the write-ahead log is
    /// opened first (the log's own open has replayed what it held).
    pub fn start(log: Arc<AuditLog>, durability: Durability) -> Result<AuditWriter, AuditError> {
        let wal = match durability {
            Durability::Strict => Some(Wal::open(&log.wal_dir())?),
            Durability::Batched => None,
        };
        let shared = Arc::new(Shared::default());
        let thread_log = log.clone();
        let alive = Arc::new(AtomicBool::new(true));
        let guard = AliveGuard(alive.clone(), shared.clone());
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || {
                let _guard = guard;
                run(&thread_log, &thread_shared, wal)
            })
            .map_err(AuditError::Thread)?;
        Ok(AuditWriter { log, shared, durability, alive })
    }

    pub fn log(&self) -> &Arc<AuditLog> {
        &self.log
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Queue a record; the ticket resolves once it is durable (at once in
    /// `batched` mode). Fails only if the writer thread is gone.
    pub fn submit(&self, record: AuditRecord) -> Result<Durable, AuditError> {
        match self.durability {
            Durability::Batched => self.push(Message::Record(Box::new(record), None)).map(|()| Durable::done()),
            Durability::Strict => {
                let (tx, rx) = oneshot::channel();
                self.push(Message::Record(Box::new(record), Some(tx)))?;
                Ok(Durable(Ticket::Waiting(rx)))
            }
        }
    }

    /// [`Self::submit`] for callers that have nothing to hold back: a
    /// failure is logged and counted, and in `strict` mode the ticket fails.
    pub fn submit_or_fail(&self, record: AuditRecord) -> Durable {
        match self.submit(record) {
            Ok(durable) => durable,
            Err(e) => {
                metrics::counter!(crate::telemetry::AUDIT_WRITE_ERRORS).increment(1);
                tracing::error!(error = %e, "audit record could not be written");
                match self.durability {
                    Durability::Strict => Durable::failed(),
                    Durability::Batched => Durable::done(),
                }
            }
        }
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
        // The writer's lag: records that were waiting when it came back for
        // work (0 when it keeps up).
        metrics::gauge!(crate::telemetry::AUDIT_QUEUE_RECORDS).set(messages.len() as f64);
        return Work::Messages(messages);
    }
    if queue.closed {
        Work::Closed
    } else {
        Work::Idle
    }
}

fn run(log: &AuditLog, shared: &Shared, mut wal: Option<Wal>) {
    // Report a failing probe once, not every second.
    let mut probe_failing = false;
    loop {
        let messages = match next_work(shared) {
            Work::Messages(messages) => messages,
            Work::Idle => {
                // A probe write plus a flush reaches the disk, so a full or
                // failed disk is noticed even when no records arrive. Once
                // sled has flushed, the WAL holds nothing it needs.
                match log.check_writable().and_then(|()| log.flush()).and_then(|()| retire(log, &mut wal)) {
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
        let flushed = store(log, &mut wal, messages);
        // A flush waiter wanted its answer now, and in strict mode clients
        // wait for every group; otherwise let the next batch gather (records
        // arriving meanwhile need no wake-up).
        if !flushed && wal.is_none() {
            std::thread::sleep(LINGER);
        }
    }
    if let Err(e) = log.flush().and_then(|()| retire(log, &mut wal)) {
        tracing::error!(error = %e, "final audit flush failed");
    }
}

/// Appends the records in order, answering each flush waiter once everything
/// before it is on disk; returns whether there was a waiter.
fn store(log: &AuditLog, wal: &mut Option<Wal>, messages: Vec<Message>) -> bool {
    let mut group = Group::default();
    let mut flushed = false;
    for message in messages {
        match message {
            Message::Record(record, ticket) => {
                group.records.push(*record);
                group.tickets.extend(ticket);
            }
            Message::Flush(waiter) => {
                commit(log, wal, &mut group);
                let result = if log.is_broken() {
                    Err(AuditError::NotWritable)
                } else {
                    log.flush().and_then(|()| retire(log, wal))
                };
                let _ = waiter.send(result);
                flushed = true;
            }
        }
    }
    commit(log, wal, &mut group);
    flushed
}

/// Records drained together and the tickets waiting on them.
#[derive(Default)]
struct Group {
    records: Vec<AuditRecord>,
    tickets: Vec<oneshot::Sender<bool>>,
}

/// One group commit: seal, WAL + fdatasync, resolve the tickets, then sled.
fn commit(log: &AuditLog, wal: &mut Option<Wal>, group: &mut Group) {
    if group.records.is_empty() {
        return;
    }
    let n = group.records.len();
    let tickets = std::mem::take(&mut group.tickets);
    let started = Instant::now();
    let synced = wal.is_some();
    let result = log.append_group(std::mem::take(&mut group.records), MAX_BATCH, wal.as_mut(), |durable| {
        if synced {
            metrics::histogram!(crate::telemetry::AUDIT_SYNC_SECONDS).record(started.elapsed().as_secs_f64());
        }
        for ticket in tickets {
            let _ = ticket.send(durable);
        }
    });
    if let Err(e) = result {
        metrics::counter!(crate::telemetry::AUDIT_WRITE_ERRORS).increment(n as u64);
        tracing::error!(error = %e, records = n, "audit records could not be written; cloud forwarding stops");
        return;
    }
    // A full segment is retired once sled has flushed what it holds.
    if wal.as_ref().is_some_and(|w| w.segment_bytes() >= SEGMENT_BYTES) {
        if let Err(e) = log.flush().and_then(|()| retire(log, wal)) {
            tracing::error!(error = %e, "audit write-ahead log segment could not be retired");
        }
    }
}

/// Deletes the WAL's segments; only after a successful sled flush, and
/// never once the log is broken (sled may lack records the WAL holds).
fn retire(log: &AuditLog, wal: &mut Option<Wal>) -> Result<(), AuditError> {
    match wal {
        Some(wal) if !log.is_broken() => Ok(wal.retire()?),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submitted_records_are_written_in_order_and_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AuditLog::open(dir.path()).unwrap());
        let writer = AuditWriter::start(log.clone(), Durability::Batched).unwrap();
        for i in 0..1000 {
            drop(writer.submit(AuditRecord { team: format!("t{i}"), ..AuditRecord::default() }).unwrap());
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
        let writer = Arc::new(AuditWriter::start(log.clone(), Durability::Batched).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        drop(
                            writer
                                .submit(AuditRecord { team: format!("t{t}"), status: i, ..AuditRecord::default() })
                                .unwrap(),
                        );
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
        let writer = AuditWriter::start(log.clone(), Durability::Batched).unwrap();
        // Let the thread go idle first.
        std::thread::sleep(Duration::from_millis(20));
        drop(writer.submit(AuditRecord::default()).unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while log.is_empty() {
            assert!(std::time::Instant::now() < deadline, "idle writer was not woken");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn strict_tickets_resolve_once_the_group_is_in_the_wal_and_shutdown_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AuditLog::open(dir.path()).unwrap());
        let writer = AuditWriter::start(log.clone(), Durability::Strict).unwrap();
        let tickets: Vec<Durable> =
            (0..200).map(|i| writer.submit(AuditRecord { status: i, ..AuditRecord::default() }).unwrap()).collect();
        assert!(tickets.iter().all(|t| !t.is_done()), "strict tickets wait for the fsync");
        for ticket in tickets {
            block_on(ticket).unwrap();
        }
        // Every resolved record is in the WAL or already flushed into sled
        // (an idle writer retires segments after flushing sled).
        let in_wal: usize = super::super::wal::read_dir(&log.wal_dir())
            .unwrap()
            .frames
            .iter()
            .map(|f| f.block.split(|&b| b == b'\n').count())
            .sum();
        assert!(in_wal == 200 || in_wal == 0, "WAL holds {in_wal} records");
        writer.flush().unwrap();
        assert_eq!(log.len(), 200);
        assert!(super::super::wal::read_dir(&log.wal_dir()).unwrap().segments.is_empty());
        assert!(log.verify().unwrap().first_bad.is_none());
    }

    #[test]
    fn batched_tickets_are_done_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AuditLog::open(dir.path()).unwrap());
        let writer = AuditWriter::start(log.clone(), Durability::Batched).unwrap();
        assert!(writer.submit(AuditRecord::default()).unwrap().is_done());
        writer.flush().unwrap();
        assert!(!log.wal_dir().exists(), "batched mode writes no WAL");
    }

    #[test]
    fn a_failing_wal_fails_the_tickets_and_closes_the_gate() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AuditLog::open(dir.path()).unwrap());
        let writer = AuditWriter::start(log.clone(), Durability::Strict).unwrap();
        // A file where the segment's directory should be: creating the
        // first segment fails (whatever the permissions, root included).
        std::fs::remove_dir(log.wal_dir()).unwrap();
        std::fs::write(log.wal_dir(), b"not a directory").unwrap();
        let ticket = writer.submit(AuditRecord::default()).unwrap();
        assert!(block_on(ticket).is_err(), "a record that is not durable must not be acknowledged");
        assert!(writer.check_writable().is_err(), "the gate must close");
        // Later records fail too, without touching the WAL again.
        let later = writer.submit(AuditRecord::default()).unwrap();
        assert!(block_on(later).is_err());
    }
}
