//! The client-disconnect watch: "a client that goes away cancels its request's work".
//!
//! Owns: [`watch`], the future the connection loop runs next to a pending handler. Once the
//! handler can no longer read the request body (`BodyState::handler_done_reading`: body
//! complete, failed, or its `Body` dropped), the watch takes the connection's read side and
//! keeps exactly one cancelable read in flight on the socket:
//!
//! * EOF or a socket error ends the watch with [`WatchEnd::Gone`]; the loop then drops the
//!   handler future (that *is* the cancellation: e.g. the PostgreSQL pool skips queued batches
//!   whose futures were dropped), logs status 499 and closes without a response.
//! * Data is the start of the next pipelined request: it stays in the read buffer and the watch
//!   reads again, until the buffer holds `max_header_bytes` ([`WatchEnd::Full`]).
//! * When the handler finishes first the loop sets `stop`. A read submitted on an empty buffer
//!   is handed over still in flight ([`WatchEnd::InFlight`], an `io::InflightRead` that owns the
//!   read side): after a keep-alive response it *is* the next head read (the head reader awaits
//!   it under the idle timeout and shutdown, cancelling through its `Canceller` and awaiting
//!   when either fires); on any other path (close, drain, upgrade, write failure) the loop
//!   cancels it and awaits its completion. A read submitted behind buffered pipelined bytes is
//!   cancelled and awaited by the watch itself (bytes that raced the cancel are kept), since
//!   the head parser must see those bytes first ([`WatchEnd::Stopped`]).
//!
//! Half-close policy: like nginx's default (`proxy_ignore_client_abort off`, logged as 499),
//! EOF before the response counts as a client abort, even though RFC 9112 allows a client to
//! half-close (`shutdown(SHUT_WR)`) after a complete request and still read the answer. Supabase
//! clients never half-close; a client that does gets its request cancelled and no response,
//! unless the handler answered on its first poll (then no watch was ever started).
//!
//! Cost: the loop polls the watch only after the handler has returned `Pending`, so a handler
//! that answers on its first poll costs nothing. Otherwise the watch costs one read SQE, which
//! on a keep-alive connection is also the next request's read: no cancel and no fresh read
//! (measured under wrk -c256 on `GET /rest/v1/...`: io_uring submissions per request 4.2 -> 2.2).
//! Only when the read cannot be handed over does it cost a cancel, pushed just before the
//! response's write and awaited after it, so both ride the same `io_uring_enter`.
//!
//! Invariants: at most one read in flight on the connection (the watch only takes the read side
//! when the handler cannot be reading, and only one watch exists per exchange); the read is
//! never dropped in flight (it is an `io::InflightRead`, finished or cancelled-and-awaited by
//! whoever holds it: the watch, the exchange, or the next head read); the
//! watch reserves buffer space only up to `max_header_bytes` and stops reading once the buffer
//! holds that much; the read side (or the in-flight read owning it) is always handed back to
//! the caller with the outcome.

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::task::Poll;

use crate::body::{ConnShared, ReadSide};
use crate::io::{InflightRead, ReadOutcome};

/// How a watch that took the read side ended.
pub(crate) enum WatchEnd {
    /// The loop asked it to stop; its read (if any) was cancelled and completed.
    Stopped(ReadSide),
    /// The loop asked it to stop while its read, submitted on an empty buffer, was still in
    /// flight: the read is handed over uncancelled (the loop either lets the next head read
    /// take it over or cancels it through [`InflightRead::cancel`]).
    InFlight(InflightRead),
    /// The read buffer holds `max_header_bytes`; no more reading until the head parser runs.
    Full(ReadSide),
    /// The peer closed its side (`None`: EOF) or the socket failed.
    Gone(ReadSide, Option<io::Error>),
}

/// Waits until the handler is done reading the body (or `stop` is set), then watches the
/// socket as described in the module docs. Returns `None` when it never took the read side
/// (stopped first, or the read side was not there), otherwise the outcome, which owns the read
/// side (possibly with a read still in flight, see [`WatchEnd::InFlight`]).
pub(crate) async fn watch(
    shared: &ConnShared,
    stop: &Cell<bool>,
    max_buf: usize,
    read_size: usize,
) -> Option<WatchEnd> {
    poll_fn(|cx| {
        if stop.get() {
            return Poll::Ready(());
        }
        let Ok(mut st) = shared.body.try_borrow_mut() else {
            // Cannot happen (no borrow is held across an await); try again on the next poll.
            return Poll::Pending;
        };
        if st.handler_done_reading() {
            return Poll::Ready(());
        }
        if !st.watch_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.watch_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    })
    .await;
    if stop.get() {
        return None;
    }
    let mut rs = shared.reader.borrow_mut().take()?;
    loop {
        if stop.get() {
            return Some(WatchEnd::Stopped(rs));
        }
        let room = max_buf.saturating_sub(rs.buf.len());
        if room == 0 {
            return Some(WatchEnd::Full(rs));
        }
        let mut read = InflightRead::start(rs, room.min(read_size.max(1)));
        let done = poll_fn(|cx| {
            if let Poll::Ready(r) = read.poll_read(cx) {
                return Poll::Ready(Some(r));
            }
            if stop.get() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        let (outcome, back) = match done {
            Some(r) => r,
            // Stopped while the read is in flight. On an empty buffer the read is exactly the
            // next head read, so hand it over; otherwise (pipelined bytes are buffered and must
            // be parsed first) cancel it and await its completion.
            None if read.started_empty() => return Some(WatchEnd::InFlight(read)),
            None => read.cancel().await,
        };
        rs = back;
        match outcome {
            ReadOutcome::Data(_) => {}
            ReadOutcome::Eof => return Some(WatchEnd::Gone(rs, None)),
            ReadOutcome::Error(e) if e.kind() == io::ErrorKind::Interrupted => {}
            ReadOutcome::Error(e) => return Some(WatchEnd::Gone(rs, Some(e))),
            // Only a stop interrupts the read (no deadline is set).
            ReadOutcome::Interrupted | ReadOutcome::Timeout => return Some(WatchEnd::Stopped(rs)),
        }
    }
}
