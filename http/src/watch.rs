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
//! * When the handler finishes first the loop sets `stop`; the watch cancels its read through
//!   monoio's `Canceller` and awaits the read's completion (bytes that raced the cancel are
//!   kept) before returning the read side ([`WatchEnd::Stopped`]).
//!
//! Half-close policy: like nginx's default (`proxy_ignore_client_abort off`, logged as 499),
//! EOF before the response counts as a client abort, even though RFC 9112 allows a client to
//! half-close (`shutdown(SHUT_WR)`) after a complete request and still read the answer. Supabase
//! clients never half-close; a client that does gets its request cancelled and no response,
//! unless the handler answered on its first poll (then no watch was ever started).
//!
//! Cost: the loop polls the watch only after the handler has returned `Pending`, so a handler
//! that answers on its first poll costs nothing. Otherwise the watch costs one read SQE and, when
//! the handler finishes first, one cancel SQE; the loop pushes the cancel just before writing
//! the response and awaits the read's completion only after the response was written, so both
//! ride the same `io_uring_enter` as the write and add no round trip.
//!
//! Invariants: at most one read in flight on the connection (the watch only takes the read side
//! when the handler cannot be reading, and only one watch exists per exchange); the read is
//! never dropped in flight (all reads go through `io::read_buf`, which cancels and awaits); the
//! watch reserves buffer space only up to `max_header_bytes` and stops reading once the buffer
//! holds that much; the read side is always handed back to the caller with the outcome.

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::task::Poll;

use crate::body::{ConnShared, ReadSide};
use crate::io::{read_buf, ReadOutcome};

/// How a watch that took the read side ended.
#[derive(Debug)]
pub(crate) enum WatchEnd {
    /// The loop asked it to stop; its read (if any) was cancelled and completed.
    Stopped,
    /// The read buffer holds `max_header_bytes`; no more reading until the head parser runs.
    Full,
    /// The peer closed its side (`None`: EOF) or the socket failed.
    Gone(Option<io::Error>),
}

/// Waits until the handler is done reading the body (or `stop` is set), then watches the
/// socket as described in the module docs. Returns `None` when it never took the read side
/// (stopped first, or the read side was not there), otherwise the read side and the outcome.
pub(crate) async fn watch(
    shared: &ConnShared,
    stop: &Cell<bool>,
    max_buf: usize,
    read_size: usize,
) -> Option<(ReadSide, WatchEnd)> {
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
    let end = loop {
        if stop.get() {
            break WatchEnd::Stopped;
        }
        let room = max_buf.saturating_sub(rs.buf.len());
        if room == 0 {
            break WatchEnd::Full;
        }
        let buf = std::mem::take(&mut rs.buf);
        let interrupt = |_: &mut std::task::Context<'_>| if stop.get() { Poll::Ready(()) } else { Poll::Pending };
        let (outcome, buf) = read_buf(&mut rs.io, buf, room.min(read_size.max(1)), None, interrupt).await;
        rs.buf = buf;
        match outcome {
            ReadOutcome::Data(_) => {}
            ReadOutcome::Eof => break WatchEnd::Gone(None),
            ReadOutcome::Error(e) if e.kind() == io::ErrorKind::Interrupted => {}
            ReadOutcome::Error(e) => break WatchEnd::Gone(Some(e)),
            // No deadline is set, so a timeout cannot happen; treat it like a stop.
            ReadOutcome::Interrupted | ReadOutcome::Timeout => break WatchEnd::Stopped,
        }
    };
    Some((rs, end))
}
