//! The per-shard accept loop and graceful connection draining.
//!
//! Owns: `Conns` (this shard's in-flight connections: count, wait list, and the
//! socket of each, for the forced close) and `serve`, the loop behind
//! `Shard::serve`.
//!
//! Shutdown sequence on a shard, in order:
//! 1. The shard's `ShutdownSignal` fires; a small watcher task calls
//!    `Canceller::cancel` on the in-flight `cancelable_accept`. The accept op
//!    completes (`ECANCELED`) through the driver — it is never dropped while in
//!    flight (io_uring hygiene) — and the loop ends.
//! 2. The listener is dropped: its socket is closed, so once every shard has done
//!    the same, new connects are refused.
//! 3. The loop waits for in-flight connections to finish, up to
//!    `RuntimeConfig::shutdown_grace`. Handlers see `ShutdownSignal::is_triggered`
//!    and close keep-alive connections after the current request.
//! 4. If some are still running, their sockets are `shutdown(2)` (read and write),
//!    so their pending reads complete with EOF through the driver, and the loop
//!    waits up to [`FORCE_CLOSE_WAIT`] more. Connections still running after that
//!    are reported as abandoned (their tasks are dropped with the runtime).
//!
//! Invariants: every accepted connection is counted until its handler future
//! completes or panics (a guard decrements on drop); a panicking handler is caught
//! and logged and never takes the shard down; at most
//! `RuntimeConfig::max_connections_per_shard` handlers run at once.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use monoio::io::Canceller;
use monoio::net::{TcpListener, TcpStream};

use crate::local::{ShutdownSignal, WaitList};

/// How long, after the grace period, `serve` waits for connections whose sockets it
/// shut down to notice and finish.
pub const FORCE_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Pause after an accept error caused by resource exhaustion (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// What one shard's `serve` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// Connections accepted.
    pub accepted: u64,
    /// Whether every connection finished within the grace period.
    pub drained: bool,
    /// Connections whose sockets were shut down after the grace period.
    pub force_closed: usize,
    /// Connections still running when `serve` returned.
    pub abandoned: usize,
}

/// Why `serve` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No listener: `RuntimeConfig::listen` was `None`, or `serve` already ran.
    #[error("this shard has no listener (none configured, or serve was already called)")]
    NoListener,
    /// Registering the listener with the reactor failed.
    #[error("cannot register the listener with the reactor: {0}")]
    Register(#[source] io::Error),
}

/// The shard's in-flight connections.
#[derive(Default)]
pub(crate) struct Conns {
    active: Cell<usize>,
    waiters: WaitList,
    socks: RefCell<Vec<Option<(RawFd, SocketAddr)>>>,
    free: RefCell<Vec<usize>>,
}

impl Conns {
    pub(crate) fn active(&self) -> usize {
        self.active.get()
    }

    fn insert(&self, fd: RawFd, peer: SocketAddr) -> usize {
        self.active.set(self.active.get() + 1);
        let mut socks = self.socks.borrow_mut();
        match self.free.borrow_mut().pop() {
            Some(k) => {
                socks[k] = Some((fd, peer));
                k
            }
            None => {
                socks.push(Some((fd, peer)));
                socks.len() - 1
            }
        }
    }

    fn remove(&self, key: usize) {
        self.socks.borrow_mut()[key] = None;
        self.free.borrow_mut().push(key);
        self.active.set(self.active.get() - 1);
        self.waiters.wake_all();
    }

    /// Shuts down (read + write) every live connection's socket. The peer address
    /// is re-checked first, so an fd number the handler closed and the process
    /// reused for something else is left alone.
    fn shutdown_all(&self) -> usize {
        let mut n = 0;
        for (fd, peer) in self.socks.borrow().iter().flatten() {
            // SAFETY: the fd is only borrowed for the duration of these calls, on the
            // thread that owns it; if it was closed meanwhile the calls fail harmlessly.
            let borrowed = unsafe { BorrowedFd::borrow_raw(*fd) };
            let sock = socket2::SockRef::from(&borrowed);
            let same = sock.peer_addr().ok().and_then(|a| a.as_socket()).is_some_and(|a| a == *peer);
            if same && sock.shutdown(std::net::Shutdown::Both).is_ok() {
                n += 1;
            }
        }
        n
    }

    async fn wait_idle(&self, limit: Duration) -> bool {
        if self.active.get() == 0 {
            return true;
        }
        let idle = self.waiters.wait(|| (self.active.get() == 0).then_some(()));
        monoio::time::timeout(limit, idle).await.is_ok()
    }
}

struct ConnGuard {
    conns: Rc<Conns>,
    key: usize,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.conns.remove(self.key);
    }
}

/// Polls a future, turning a panic into `Err`.
struct CatchUnwind<F> {
    fut: Pin<Box<F>>,
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.fut.as_mut();
        match catch_unwind(AssertUnwindSafe(move || fut.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => {
                let msg = if let Some(s) = p.downcast_ref::<&str>() {
                    (*s).to_owned()
                } else if let Some(s) = p.downcast_ref::<String>() {
                    s.clone()
                } else {
                    "non-string panic payload".to_owned()
                };
                Poll::Ready(Err(msg))
            }
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

pub(crate) struct ServeParams {
    pub(crate) shard: usize,
    pub(crate) legacy: bool,
    pub(crate) grace: Duration,
    pub(crate) max_conns: usize,
}

pub(crate) async fn serve<H, Fut>(
    std_listener: std::net::TcpListener,
    params: ServeParams,
    conns: Rc<Conns>,
    signal: ShutdownSignal,
    handler: H,
) -> Result<ServeReport, ServeError>
where
    H: Fn(TcpStream, SocketAddr) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let shard = params.shard;
    if params.legacy {
        std_listener.set_nonblocking(true).map_err(ServeError::Register)?;
    }
    let listener = TcpListener::from_std(std_listener).map_err(ServeError::Register)?;
    let canceller = Canceller::new();
    let cancel_handle = canceller.handle();
    {
        let signal = signal.clone();
        let conns = conns.clone();
        monoio::spawn(async move {
            signal.triggered().await;
            let _ = canceller.cancel();
            conns.waiters.wake_all();
        });
    }
    let mut report = ServeReport::default();
    tracing::debug!(shard, "accept loop started");
    loop {
        if conns.active() >= params.max_conns {
            tracing::warn!(shard, limit = params.max_conns, "connection limit reached; pausing accept");
            conns.waiters.wait(|| (conns.active() < params.max_conns || signal.is_triggered()).then_some(())).await;
        }
        if signal.is_triggered() {
            break;
        }
        match listener.cancelable_accept(cancel_handle.clone()).await {
            Ok((stream, peer)) => {
                report.accepted += 1;
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(shard, %peer, error = %e, "set_nodelay failed");
                }
                let key = conns.insert(stream.as_raw_fd(), peer);
                let guard = ConnGuard { conns: conns.clone(), key };
                let fut = CatchUnwind { fut: Box::pin(handler(stream, peer)) };
                monoio::spawn(async move {
                    let _guard = guard;
                    if let Err(panic) = fut.await {
                        tracing::error!(shard, %peer, panic = %panic, "connection handler panicked");
                    }
                });
            }
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => break,
            Err(e) if is_resource_exhaustion(&e) => {
                tracing::warn!(shard, error = %e, "accept: out of resources; backing off");
                monoio::time::sleep(ACCEPT_BACKOFF).await;
            }
            Err(e) => {
                if signal.is_triggered() {
                    break;
                }
                tracing::debug!(shard, error = %e, "accept failed");
            }
        }
    }
    // Stop accepting: close this shard's listening socket.
    drop(listener);
    tracing::info!(shard, in_flight = conns.active(), "stopped accepting; draining connections");

    report.drained = conns.wait_idle(params.grace).await;
    if !report.drained {
        report.force_closed = conns.shutdown_all();
        tracing::warn!(
            shard,
            in_flight = conns.active(),
            force_closed = report.force_closed,
            "grace period over; shutting connection sockets down"
        );
        conns.wait_idle(FORCE_CLOSE_WAIT).await;
    }
    report.abandoned = conns.active();
    tracing::info!(
        shard,
        accepted = report.accepted,
        drained = report.drained,
        force_closed = report.force_closed,
        abandoned = report.abandoned,
        "serve finished"
    );
    Ok(report)
}
