//! A bounded pool for CPU-heavy inspection of large request bodies.
//!
//! Scanning a 10 MB prompt takes long enough to stall the async worker
//! that runs it, and with it every other connection on that worker
//! (`/healthz` included). Bodies above [`INLINE_LIMIT`] are therefore
//! inspected on tokio's blocking threads instead; a semaphore caps how many
//! run at once, so a burst of huge prompts queues for a permit (an async
//! wait) rather than spawning hundreds of threads that fight for the CPUs.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// Bodies up to this size are inspected inline: moving them to another
/// thread costs more than scanning them.
pub const INLINE_LIMIT: usize = 256 * 1024;

/// Why pooled work produced no result.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The semaphore was closed: the process is shutting down.
    #[error("the inspection pool is closed")]
    Closed,
    /// The work panicked; the panic is contained to this request.
    #[error("inspection failed unexpectedly")]
    Panicked,
    /// The runtime is shutting down and cancelled the work.
    #[error("inspection was cancelled")]
    Cancelled,
}

/// At most `size` CPU-heavy jobs at once on tokio's blocking threads.
/// Cheap to clone; clones share the same permits.
#[derive(Clone, Debug)]
pub struct InspectPool {
    permits: Arc<Semaphore>,
    size: usize,
}

impl Default for InspectPool {
    /// One job per available CPU.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        InspectPool::new(cpus)
    }
}

impl InspectPool {
    /// A pool running at most `size` jobs at once (at least one).
    pub fn new(size: usize) -> InspectPool {
        let size = size.max(1);
        InspectPool { permits: Arc::new(Semaphore::new(size)), size }
    }

    /// Jobs that may run at once.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Jobs running now.
    pub fn busy(&self) -> usize {
        self.size - self.permits.available_permits()
    }

    /// Whether a body of `len` bytes should go to the pool.
    pub fn should_offload(len: usize) -> bool {
        len > INLINE_LIMIT
    }

    /// Run `f` on a blocking thread once a permit is free.
    ///
    /// The permit travels with the job, so if the caller stops waiting (the
    /// client went away) the slot stays taken until `f` really returns and
    /// the bound still holds.
    pub async fn run<F, R>(&self, f: F) -> Result<R, PoolError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| PoolError::Closed)?;
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        });
        job.await.map_err(|e| if e.is_panic() { PoolError::Panicked } else { PoolError::Cancelled })
    }

    /// Run `f` inline when `len` is at most [`INLINE_LIMIT`], else as [`Self::run`].
    pub async fn run_sized<F, R>(&self, len: usize, f: F) -> Result<R, PoolError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        if Self::should_offload(len) {
            self.run(f).await
        } else {
            Ok(f())
        }
    }

    /// Refuse new jobs (those waiting get [`PoolError::Closed`]).
    pub fn close(&self) {
        self.permits.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_runs_more_than_its_size() {
        let pool = InspectPool::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..8)
            .map(|i| {
                let pool = pool.clone();
                let running = running.clone();
                let peak = peak.clone();
                tokio::spawn(async move {
                    pool.run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(30));
                        running.fetch_sub(1, Ordering::SeqCst);
                        i * 2
                    })
                    .await
                })
            })
            .collect();
        let mut results = Vec::new();
        for job in jobs {
            results.push(job.await.unwrap().unwrap());
        }
        assert_eq!(results, (0..8).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert_eq!(pool.busy(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_runtime_stays_responsive_while_the_pool_is_busy() {
        let pool = InspectPool::new(2);
        let heavy: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.run(|| std::thread::sleep(Duration::from_millis(300))).await })
            })
            .collect();
        // Had the jobs run on the two async workers, a task spawned now
        // would wait 300 ms for one of them.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        let waited = tokio::spawn(async move { started.elapsed() }).await.unwrap();
        assert!(waited < Duration::from_millis(250), "{waited:?}");
        for job in heavy {
            job.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_panic_is_an_error_and_frees_the_permit() {
        let pool = InspectPool::new(1);
        let err = pool.run(|| -> usize { panic!("boom") }).await.unwrap_err();
        assert!(matches!(err, PoolError::Panicked), "{err}");
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn small_bodies_run_inline_and_closed_pools_refuse() {
        let pool = InspectPool::new(1);
        let caller = std::thread::current().id();
        let ran_on = pool.run_sized(10, || std::thread::current().id()).await.unwrap();
        assert_eq!(ran_on, caller);
        let ran_on = pool.run_sized(INLINE_LIMIT + 1, || std::thread::current().id()).await.unwrap();
        assert_ne!(ran_on, caller);
        pool.close();
        assert!(matches!(pool.run(|| ()).await, Err(PoolError::Closed)));
        // Inline work does not need a permit.
        assert!(pool.run_sized(10, || ()).await.is_ok());
    }
}
