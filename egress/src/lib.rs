//! `madbase-egress`: the egress runtime. Clients that only speak tokio (SMTP through `lettre`,
//! `object_store`'s S3 client, outbound HTTP from functions) run here, on a small multi-thread
//! tokio runtime with its own named threads, never on a shard (ARCHITECTURE.md, "Libraries that
//! need tokio").
//!
//! The bridge has the blocking pool's shape (`madbase_shards::BlockingPool`): a shard calls
//! [`Egress::run`] with a closure that builds the job's future; the job is admitted against a
//! bounded count (full → [`EgressError::Busy`] at once, the caller's 503), spawned on the tokio
//! runtime, and its result comes back over a `futures_channel::oneshot`, whose waker is
//! thread-safe: the awaiting shard's reactor is woken from the tokio thread, and the shard never
//! polls a tokio future nor blocks.
//!
//! Owns: the tokio runtime (its worker threads `egress-N` and its bounded blocking threads), the
//! admission counter.
//!
//! Invariants:
//! - At most `queue` jobs are admitted and unfinished at once (waiting or running: on a tokio
//!   runtime every spawned task is runnable, so the bound counts both); [`Egress::run`] past that
//!   answers `Busy` without blocking. A job's slot is released when its future finishes or
//!   panics (before its result is sent, so whoever sees the result can submit again), or when a
//!   shutdown drops it.
//! - The job's closure and its future run only on the runtime's threads, so code inside may use
//!   `tokio::spawn`, `tokio::time`, `tokio::net`.
//! - A panic in the closure or the future is caught on the runtime (`catch_unwind` around each
//!   poll); the job resolves to [`EgressError::Panicked`], and the runtime goes on.
//! - Dropping an [`EgressJob`] does not cancel the job: it runs to its end (bounded by its own
//!   timeouts) and its result is discarded. Jobs carry their own deadlines.
//! - [`Egress::close`] (or dropping the last handle) refuses new jobs; `close` waits up to its
//!   grace for admitted jobs, then stops the runtime; a job still unfinished then is dropped and
//!   resolves to [`EgressError::Cancelled`].
//! - The worker threads are `threads` (at least 1); the runtime's blocking threads (DNS lookups
//!   use them) are bounded by [`Egress::BLOCKING_THREADS`].

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_channel::oneshot;

/// Why a job was not admitted, or produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// As many jobs as the queue bound are unfinished: shed load (e.g. HTTP 503).
    #[error("egress runtime is busy (queue of {0} jobs full)")]
    Busy(usize),
    /// The runtime is shut down (or shutting down): no new jobs.
    #[error("egress runtime is shut down")]
    Closed,
    /// The job panicked; the message is the panic payload when it was a string.
    #[error("egress job panicked: {0}")]
    Panicked(String),
    /// The runtime stopped before the job finished.
    #[error("egress job cancelled (runtime shut down)")]
    Cancelled,
}

struct Shared {
    /// Admitted and unfinished jobs.
    in_flight: AtomicUsize,
    capacity: usize,
    threads: usize,
    closed: AtomicBool,
    /// Signalled when `in_flight` drops to zero (for `close`'s drain).
    idle: (Mutex<()>, Condvar),
}

struct Inner {
    handle: tokio::runtime::Handle,
    /// Taken by the shutdown (by `close`, else by the last handle's drop).
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    shared: Arc<Shared>,
}

/// Handle to the egress runtime. `Clone + Send + Sync`; the runtime stops on [`Egress::close`]
/// or when the last handle is dropped.
#[derive(Clone)]
pub struct Egress {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("threads", &self.inner.shared.threads)
            .field("in_flight", &self.in_flight())
            .field("capacity", &self.inner.shared.capacity)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The result of an admitted job; await it on a shard (or anywhere).
#[must_use = "a job's result arrives only through this future (the job runs either way)"]
pub struct EgressJob<T> {
    rx: oneshot::Receiver<Result<T, EgressError>>,
}

impl<T> Future for EgressJob<T> {
    type Output = Result<T, EgressError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(oneshot::Canceled)) => Poll::Ready(Err(EgressError::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Releases a job's admission slot however the job ends (finished, panicked, dropped).
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let (lock, cvar) = &self.0.idle;
            let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            cvar.notify_all();
        }
    }
}

/// Polls the inner future inside `catch_unwind`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => Poll::Ready(Err(panic_message(p.as_ref()))),
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

impl Egress {
    /// The bound on the runtime's blocking threads (`spawn_blocking`, DNS resolution).
    pub const BLOCKING_THREADS: usize = 4;

    /// A grace for [`Egress::close`] at process shutdown (what the binary passes).
    pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

    /// Starts the runtime: `threads` worker threads (at least 1) named `egress-N`, and at most
    /// `queue` (at least 1) admitted, unfinished jobs.
    pub fn start(threads: usize, queue: usize) -> std::io::Result<Egress> {
        let threads = threads.max(1);
        let queue = queue.max(1);
        let next = AtomicUsize::new(0);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .max_blocking_threads(Self::BLOCKING_THREADS)
            .thread_name_fn(move || format!("egress-{}", next.fetch_add(1, Ordering::Relaxed)))
            .enable_io()
            .enable_time()
            .build()?;
        let shared = Arc::new(Shared {
            in_flight: AtomicUsize::new(0),
            capacity: queue,
            threads,
            closed: AtomicBool::new(false),
            idle: (Mutex::new(()), Condvar::new()),
        });
        tracing::debug!(threads, queue, "egress runtime started");
        Ok(Egress {
            inner: Arc::new(Inner { handle: runtime.handle().clone(), runtime: Mutex::new(Some(runtime)), shared }),
        })
    }

    /// Makes this runtime the ambient tokio context of the calling thread for the rest of its
    /// life: `tokio::time` and `tokio::spawn` used there (by a library that needs them, as
    /// `wasmtime-wasi`'s timers and HTTP tasks) run on this runtime's threads instead of a
    /// hidden runtime of their own. The calling thread itself never runs a tokio task: futures
    /// it polls are woken from the runtime's threads. Called once per shard that runs functions.
    pub fn enter_for_this_thread(&self) {
        let handle: &'static tokio::runtime::Handle = Box::leak(Box::new(self.inner.handle.clone()));
        std::mem::forget(handle.enter());
    }

    /// Admits a job: `make` is called on a runtime thread and the future it returns is driven
    /// there. Returns at once: `Err(Busy)` when `queue` jobs are unfinished, `Err(Closed)` after
    /// a shutdown began. The returned [`EgressJob`] resolves to the future's output, or to
    /// `Panicked`/`Cancelled`.
    pub fn run<M, F, T>(&self, make: M) -> Result<EgressJob<T>, EgressError>
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(EgressError::Closed);
        }
        // Admission: take a slot unless `capacity` are taken.
        let mut cur = shared.in_flight.load(Ordering::Acquire);
        loop {
            if cur >= shared.capacity {
                return Err(EgressError::Busy(shared.capacity));
            }
            match shared.in_flight.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let slot = Slot(shared.clone());
        let (tx, rx) = oneshot::channel();
        // `make` runs inside the task, on a runtime thread, under the same `catch_unwind` as
        // the future it builds.
        let job = CatchUnwind(Box::pin(async move {
            let fut = make();
            fut.await
        }));
        self.inner.handle.spawn(async move {
            let r = job.await.map_err(|msg| {
                tracing::warn!(panic = %msg, "egress job panicked");
                EgressError::Panicked(msg)
            });
            // Free the slot before the result is seen, so an awaiting caller can submit again.
            drop(slot);
            // The awaiting side may be gone; that is fine.
            let _ = tx.send(r);
        });
        Ok(EgressJob { rx })
    }

    /// Jobs admitted and unfinished now.
    pub fn in_flight(&self) -> usize {
        self.inner.shared.in_flight.load(Ordering::Acquire)
    }

    /// The bound on unfinished jobs (`queue` at start).
    pub fn capacity(&self) -> usize {
        self.inner.shared.capacity
    }

    /// The worker threads.
    pub fn threads(&self) -> usize {
        self.inner.shared.threads
    }

    /// Whether a shutdown began.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed.load(Ordering::Acquire)
    }

    /// Refuses new jobs, waits up to `grace` for the admitted ones, then stops the runtime (jobs
    /// still unfinished resolve to `Cancelled`). Blocks the calling thread: call it from the
    /// main thread at shutdown, never on a shard. Later calls (and drops) do nothing more.
    pub fn close(&self, grace: Duration) {
        let shared = &self.inner.shared;
        shared.closed.store(true, Ordering::Release);
        let Some(runtime) = self.inner.runtime.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // On a runtime thread (ours or another): waiting would block a reactor.
            runtime.shutdown_background();
            return;
        }
        let deadline = Instant::now() + grace;
        {
            let (lock, cvar) = &shared.idle;
            let mut guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            while shared.in_flight.load(Ordering::Acquire) > 0 {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                guard = cvar.wait_timeout(guard, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
            }
        }
        let left = shared.in_flight.load(Ordering::Acquire);
        if left > 0 {
            tracing::warn!(jobs = left, "egress runtime stopped with unfinished jobs");
        }
        runtime.shutdown_timeout(Duration::from_millis(100));
        tracing::debug!("egress runtime stopped");
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        if let Some(runtime) = self.runtime.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            // No waiting here: a drop may happen anywhere (even on a runtime thread, when a job
            // held the last handle). Unfinished jobs resolve to `Cancelled`.
            runtime.shutdown_background();
        }
    }
}
