//! The per-shard doorbell: how other threads wake a shard's reactor.
//!
//! Owns: `Doorbell` (the `Send + Sync` ringing side) and `run_doorbell` (the one
//! task per shard that listens for it).
//!
//! Mechanism: a `UnixStream::pair()`. The ringing side is non-blocking; ringing
//! writes one byte. The shard side is wrapped with `monoio::net::UnixStream::from_std`
//! on the shard thread and read by a single task, which then wakes the shard's
//! mailbox waiters and lets the shutdown signal observe the global flag.
//!
//! Why not eventfd: monoio's legacy (epoll) driver has no generic "fd readable"
//! future — an eventfd would have to be read as a `File`, and file reads on the
//! legacy driver are blocking syscalls that would stall the whole shard. A Unix
//! socket is a first-class network stream on both drivers, so the same code parks
//! correctly under io_uring and epoll.
//!
//! Invariants (no lost wakeups, bounded bytes in the socket):
//! - `pending` is true from the moment a ringer decides to write a byte until the
//!   listener task clears it. A ringer writes only on the false→true transition, so
//!   at most one byte per listener wake cycle is written; the socket buffer never
//!   fills in practice and `EAGAIN` (buffer full) means "already rung" anyway.
//! - Producers publish their message (ring push) *before* ringing (SeqCst swap);
//!   the listener clears `pending` (SeqCst) *before* waking consumers, which then
//!   drain the rings. Either the ringer sees `pending == false` and writes a byte
//!   (the listener's read completes later), or it sees `true`, in which case the
//!   clear comes after its push and the consumers woken after that clear see it.
//! - Exactly one task reads the socket, and it only exits after a read completed
//!   (never by dropping an in-flight read), so no io_uring op is left behind.

use std::io::{self, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicBool, Ordering};

use monoio::io::AsyncReadRent;

/// The ringing side of a shard's doorbell. Shared (`Arc`) by every producer.
pub(crate) struct Doorbell {
    pending: AtomicBool,
    tx: StdUnixStream,
    shard: usize,
}

impl Doorbell {
    /// Creates a doorbell for `shard`; returns the ringing side and the std socket
    /// the shard thread will wrap and read.
    pub(crate) fn new(shard: usize) -> io::Result<(Doorbell, StdUnixStream)> {
        let (tx, rx) = StdUnixStream::pair()?;
        tx.set_nonblocking(true)?;
        Ok((Doorbell { pending: AtomicBool::new(false), tx, shard }, rx))
    }

    /// Rings the doorbell. Never blocks. Call it *after* publishing what the shard
    /// should look at.
    pub(crate) fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.pending.swap(true, Ordering::SeqCst) {
            return; // A byte is already on its way and not yet consumed.
        }
        loop {
            match (&self.tx).write(&[1u8]) {
                Ok(_) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Buffer full: the shard has unread bytes, it will wake anyway.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // The shard is gone (its read side closed): nobody to wake.
                    tracing::debug!(shard = self.shard, error = %e, "doorbell ring failed");
                    return;
                }
            }
        }
    }

    /// Consumer side: re-arms the doorbell. Must be called before draining.
    pub(crate) fn rearm(&self) {
        self.pending.store(false, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }
}

/// Hooks the doorbell task calls on every wake.
pub(crate) trait BellListener {
    /// Called after every re-arm: wake mailbox waiters, observe shutdown.
    fn on_ring(&self);
    /// Whether the shard is closing and the task should exit.
    fn closing(&self) -> bool;
}

/// The shard's single doorbell task. Exits after a completed read once
/// `listener.closing()` is true (the shard rings itself to make that happen).
pub(crate) async fn run_doorbell<L: BellListener>(
    bell: std::sync::Arc<Doorbell>,
    rx: StdUnixStream,
    listener: Rc<L>,
    legacy: bool,
) {
    let shard = bell.shard;
    if legacy {
        // The legacy driver needs a non-blocking fd; io_uring is fine either way.
        if let Err(e) = rx.set_nonblocking(true) {
            tracing::error!(shard, error = %e, "doorbell: set_nonblocking failed");
            return;
        }
    }
    let mut rx = match monoio::net::UnixStream::from_std(rx) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(shard, error = %e, "doorbell: cannot register socket with the reactor");
            return;
        }
    };
    let mut buf = vec![0u8; 64];
    loop {
        bell.rearm();
        listener.on_ring();
        if listener.closing() {
            break;
        }
        let (res, b) = rx.read(buf).await;
        buf = b;
        match res {
            Ok(0) => {
                tracing::error!(shard, "doorbell: socket closed");
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::error!(shard, error = %e, "doorbell: read failed");
                break;
            }
        }
    }
}
