//! The bounded blocking pool: OS threads for CPU-heavy work that must not stall a
//! shard (password hashing, image resizing, file-system calls io_uring lacks).
//!
//! Owns: the worker threads, the bounded job queue and its depth counter.
//!
//! Invariants:
//! - At most `blocking_queue` jobs wait; `spawn` on a full queue answers
//!   `SpawnError::Busy` at once (never blocks the caller).
//! - A panic in a job is caught on the worker (`catch_unwind`); the job's future
//!   resolves to `JobError::Panicked` and the worker goes on with the next job.
//! - Completion is reported through a `futures_channel::oneshot`, whose waker is
//!   thread-safe, so the awaiting shard's reactor is woken from the worker thread.
//! - Workers run at a lower priority (`blocking_nice`): when jobs and shards compete for the
//!   cores, the kernel gives the shards (request latency) the larger share; alone, a job still
//!   gets a whole core.
//! - Shutdown (`close`) refuses new jobs, lets queued jobs run, then stops every
//!   worker; a job that never ran resolves to `JobError::Cancelled`.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use futures_channel::oneshot;

enum Msg {
    Job(Box<dyn FnOnce() + Send + 'static>),
    Stop,
}

struct Shared {
    queued: AtomicUsize,
    running: AtomicUsize,
    closed: AtomicBool,
    capacity: usize,
}

/// Handle to the blocking pool. `Clone + Send + Sync`.
#[derive(Clone)]
pub struct BlockingPool {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// The queue is full (`RuntimeConfig::blocking_queue`): shed load (e.g. HTTP 503).
    #[error("blocking pool is busy (queue full)")]
    Busy,
    /// The pool is shutting down.
    #[error("blocking pool is shut down")]
    Closed,
}

/// Why a queued job produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The job panicked; the message is the panic payload when it was a string.
    #[error("blocking job panicked: {0}")]
    Panicked(String),
    /// The pool stopped before the job ran.
    #[error("blocking job cancelled (pool shut down)")]
    Cancelled,
}

/// The result of a queued job; await it on a shard (or anywhere).
pub struct BlockingJob<R> {
    rx: oneshot::Receiver<Result<R, JobError>>,
}

impl<R> Future for BlockingJob<R> {
    type Output = Result<R, JobError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(oneshot::Canceled)) => Poll::Ready(Err(JobError::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Owner side of the pool: joins the workers.
pub(crate) struct PoolWorkers {
    threads: Vec<JoinHandle<()>>,
}

impl BlockingPool {
    /// Starts `threads` workers with a queue of `queue` jobs.
    pub(crate) fn start(threads: usize, queue: usize, nice: i32) -> std::io::Result<(BlockingPool, PoolWorkers)> {
        let (tx, rx) = sync_channel::<Msg>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            capacity: queue,
        });
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx = rx.clone();
            let shared = shared.clone();
            let h = std::thread::Builder::new().name(format!("blocking-{i}")).spawn(move || {
                lower_priority(nice);
                worker(i, rx, shared)
            });
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // Stop the workers already started, then report.
                    for _ in 0..handles.len() {
                        let _ = tx.send(Msg::Stop);
                    }
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok((BlockingPool { tx, shared }, PoolWorkers { threads: handles }))
    }

    /// Queues `f`. Returns at once: `Err(Busy)` when the queue is full.
    pub fn spawn<F, R>(&self, f: F) -> Result<BlockingJob<R>, SpawnError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(SpawnError::Closed);
        }
        let (otx, orx) = oneshot::channel();
        let job = Box::new(move || {
            let r = catch_unwind(AssertUnwindSafe(f)).map_err(|p| JobError::Panicked(panic_message(p.as_ref())));
            if let Err(JobError::Panicked(msg)) = &r {
                tracing::warn!(panic = %msg, "blocking job panicked");
            }
            // The awaiting side may be gone; that is fine.
            let _ = otx.send(r);
        });
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(Msg::Job(job)) {
            Ok(()) => Ok(BlockingJob { rx: orx }),
            Err(e) => {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                Err(match e {
                    TrySendError::Full(_) => SpawnError::Busy,
                    TrySendError::Disconnected(_) => SpawnError::Closed,
                })
            }
        }
    }

    /// Jobs waiting in the queue now (not counting running ones).
    pub fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// The queue bound.
    pub fn queue_capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::Acquire)
    }
}

impl PoolWorkers {
    /// Refuses new jobs, lets queued ones run, stops and joins every worker.
    pub(crate) fn close(self, pool: &BlockingPool) {
        pool.shared.closed.store(true, Ordering::Release);
        for _ in 0..self.threads.len() {
            // Blocks only while the queue is full of jobs that are about to run.
            if pool.tx.send(Msg::Stop).is_err() {
                break;
            }
        }
        for h in self.threads {
            let _ = h.join();
        }
    }
}

/// Sets the calling thread's nice value (Linux: per thread, by its id). Failure (no permission
/// to lower priority is never needed; raising the value always works) is only logged.
fn lower_priority(nice: i32) {
    debug_assert!((0..=19).contains(&nice));
    // SAFETY: gettid and setpriority have no memory-safety preconditions.
    let result = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if result != 0 {
        tracing::warn!(nice, error = %std::io::Error::last_os_error(), "blocking pool: cannot set the thread's nice value");
    }
}

fn worker(i: usize, rx: Arc<Mutex<Receiver<Msg>>>, shared: Arc<Shared>) {
    loop {
        let msg = {
            let guard = match rx.lock() {
                Ok(g) => g,
                // A worker never panics while holding the lock (jobs run outside it),
                // but stay correct if it ever happens.
                Err(poisoned) => poisoned.into_inner(),
            };
            guard.recv()
        };
        match msg {
            Ok(Msg::Job(job)) => {
                shared.queued.fetch_sub(1, Ordering::AcqRel);
                shared.running.fetch_add(1, Ordering::AcqRel);
                job(); // catches its own panics
                shared.running.fetch_sub(1, Ordering::AcqRel);
            }
            Ok(Msg::Stop) | Err(_) => break,
        }
    }
    tracing::debug!(worker = i, "blocking worker stopped");
}
