//! Streaming request bodies.
//!
//! Owns: [`Body`], the handler's view of a request body, and the connection state it shares
//! with the server loop ([`ConnShared`]). Invariants: body bytes are read into the connection's
//! read buffer once and handed out as zero-copy [`Bytes`]; a body never reads past its own
//! framing (pipelined requests behind it stay in the buffer); `Expect: 100-continue` is answered
//! only when the handler first asks for body bytes and only before the response has started;
//! a body kept past its exchange reads nothing ([`BodyError::Detached`]); every read is bounded
//! by `Limits::body_timeout`, the whole body by `Limits::body_timeout_total` (from the handler's
//! first request for bytes) and its size by `Limits::max_body_bytes`.
//!
//! [`Body::collect`] is the one place a body is held whole. Its buffer grows with the bytes that
//! arrived (amortised doubling from a small start, never past the declared length or the
//! handler's limit), never with what the client merely declared, and every growth is first
//! charged to the shard's body budget (`Limits::shard_body_budget_bytes`, gauge in
//! [`crate::stats`]); the charge travels inside the returned `Bytes` and is released when the
//! last clone of it is dropped, or when collection fails or is cancelled.
//!
//! The body also tells the server loop when the handler can no longer read from the socket
//! ([`BodyState::handler_done_reading`]: framing complete, a sticky error, or the [`Body`]
//! dropped), waking the waker the loop parks in [`BodyState::watch_waker`]. From then on, and
//! only then, the loop may own the read side to watch for a client disconnect (see `server`).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::io::{OwnedReadHalf, OwnedWriteHalf};
use monoio::net::TcpStream;
use monoio::time::Instant;

use crate::chunked::{Chunk, ChunkedDecoder};
use crate::error::BodyError;
use crate::io::{no_abort, no_interrupt, read_buf, write_all, ReadOutcome};
use crate::limits::Limits;
use crate::stats::{self, Event};

pub(crate) type Reader = OwnedReadHalf<TcpStream>;
pub(crate) type Writer = OwnedWriteHalf<TcpStream>;

/// The read half of a connection with its buffer of received, unconsumed bytes.
pub(crate) struct ReadSide {
    pub io: Reader,
    pub buf: BytesMut,
}

/// Remaining framing of the current request body.
#[derive(Debug)]
pub(crate) enum BodyFraming {
    Remaining(u64),
    Chunked(ChunkedDecoder),
    Done,
}

/// Per-exchange body state, shared by the server loop and the handler's [`Body`].
#[derive(Debug)]
pub(crate) struct BodyState {
    pub gen: u64,
    pub framing: BodyFraming,
    pub received: u64,
    pub expect_pending: bool,
    pub response_started: bool,
    /// When the whole body must have arrived (`Limits::body_timeout_total`), set by the first
    /// read of this exchange's body (handler or drain).
    pub deadline: Option<Instant>,
    pub error: Option<BodyError>,
    /// The handler's [`Body`] for this exchange was dropped.
    pub released: bool,
    /// Woken when [`BodyState::handler_done_reading`] may have become true.
    pub watch_waker: Option<Waker>,
}

impl BodyState {
    /// True once the handler can no longer read the body: it is complete, failed (errors are
    /// sticky), or its [`Body`] is gone. The read side is then free for the disconnect watch.
    pub fn handler_done_reading(&self) -> bool {
        matches!(self.framing, BodyFraming::Done) || self.error.is_some() || self.released
    }

    /// The deadline of the next body read: `body_timeout` from now, but never past the whole
    /// body's deadline (started here on the exchange's first body read).
    pub fn read_deadline(&mut self, limits: &Limits) -> Instant {
        let now = Instant::now();
        let total = *self.deadline.get_or_insert_with(|| after(now, limits.body_timeout_total));
        after(now, limits.body_timeout).min(total)
    }

    /// Wakes the disconnect watch if the handler is now done reading. Call without holding
    /// a borrow of the state (wakers may run arbitrary code).
    fn wake_watch_if_done(state: &RefCell<BodyState>) {
        let waker = {
            let Ok(mut st) = state.try_borrow_mut() else { return };
            if st.handler_done_reading() {
                st.watch_waker.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// State of one connection that the handler's [`Body`] needs while the handler runs.
pub(crate) struct ConnShared {
    pub reader: RefCell<Option<ReadSide>>,
    pub writer: RefCell<Option<Writer>>,
    pub body: RefCell<BodyState>,
    pub limits: Rc<Limits>,
}

/// `now + d`, saturating far in the future for durations too large to add (a config value of
/// "never").
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

pub(crate) enum Step {
    Data(Bytes),
    NeedMore,
    Done,
}

/// Consumes the next piece of the body from `buf` (pure; no I/O).
pub(crate) fn body_step(st: &mut BodyState, buf: &mut BytesMut, max: u64) -> Result<Step, BodyError> {
    match &mut st.framing {
        BodyFraming::Done => Ok(Step::Done),
        BodyFraming::Remaining(0) => {
            st.framing = BodyFraming::Done;
            Ok(Step::Done)
        }
        BodyFraming::Remaining(n) => {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            let take = usize::try_from(*n).unwrap_or(usize::MAX).min(buf.len());
            *n -= take as u64;
            if *n == 0 {
                st.framing = BodyFraming::Done;
            }
            st.received += take as u64;
            Ok(Step::Data(buf.split_to(take).freeze()))
        }
        BodyFraming::Chunked(dec) => match dec.decode(buf)? {
            Chunk::Data(b) => {
                st.received += b.len() as u64;
                if st.received > max {
                    return Err(BodyError::TooLarge { limit: max });
                }
                Ok(Step::Data(b))
            }
            Chunk::NeedMore => Ok(Step::NeedMore),
            Chunk::Done => {
                st.framing = BodyFraming::Done;
                Ok(Step::Done)
            }
        },
    }
}

enum Inner {
    Empty,
    Full(Option<Bytes>),
    Conn { shared: Rc<ConnShared>, gen: u64 },
}

/// A request body, read as a stream of chunks. Dropping it unread is fine: the server drains
/// (up to `Limits::max_drain_bytes`) or closes the connection after the response.
pub struct Body {
    inner: Inner,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Body")
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Inner::Conn { shared, gen } = &self.inner {
            if let Ok(mut st) = shared.body.try_borrow_mut() {
                if st.gen != *gen {
                    return;
                }
                st.released = true;
            }
            BodyState::wake_watch_if_done(&shared.body);
        }
    }
}

impl Body {
    /// A body with no bytes.
    pub fn empty() -> Body {
        Body { inner: Inner::Empty }
    }

    /// A body that yields `bytes` as one chunk (for unit tests of handlers).
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Body {
        Body { inner: Inner::Full(Some(bytes.into())) }
    }

    pub(crate) fn from_conn(shared: Rc<ConnShared>, gen: u64) -> Body {
        Body { inner: Inner::Conn { shared, gen } }
    }

    /// Declared body length still unread, when it is known (`None` for chunked bodies).
    pub fn len_hint(&self) -> Option<u64> {
        match &self.inner {
            Inner::Empty => Some(0),
            Inner::Full(b) => Some(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Conn { shared, gen } => {
                let st = shared.body.borrow();
                match st.framing {
                    _ if st.gen != *gen => Some(0),
                    BodyFraming::Remaining(n) => Some(n),
                    BodyFraming::Done => Some(0),
                    BodyFraming::Chunked(_) => None,
                }
            }
        }
    }

    /// The next chunk of the body; `None` at its end. Errors are sticky.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        match &mut self.inner {
            Inner::Empty => None,
            Inner::Full(b) => b.take().filter(|b| !b.is_empty()).map(Ok),
            Inner::Conn { shared, gen } => conn_chunk(shared, *gen).await,
        }
    }

    /// Reads the whole body into one buffer, refusing bodies over `max` bytes with
    /// [`BodyError::TooLarge`]. A body that arrives in one piece is returned without copying.
    /// Otherwise the buffer grows with what arrived and is charged to the shard's body budget
    /// (see the module docs): [`BodyError::Busy`] when the budget is in use by other bodies,
    /// [`BodyError::TooLarge`] when this body alone would not fit in it.
    pub async fn collect(mut self, max: u64) -> Result<Bytes, BodyError> {
        let budget = match &self.inner {
            Inner::Conn { shared, .. } => shared.limits.shard_body_budget_bytes,
            // Already in memory: nothing to charge.
            Inner::Empty | Inner::Full(_) => u64::MAX,
        };
        let hint = self.len_hint();
        if hint.is_some_and(|n| n > max) {
            return Err(too_large(max));
        }
        if hint.is_some_and(|n| n > budget) {
            return Err(too_large(budget));
        }
        let mut first: Option<Bytes> = None;
        let mut acc: Option<Collected> = None;
        let mut total = 0u64;
        while let Some(c) = self.chunk().await {
            let c = c?;
            total += c.len() as u64;
            if total > max {
                return Err(too_large(max));
            }
            if let Some(acc) = acc.as_mut() {
                acc.append(&c)?;
            } else if let Some(f) = first.take() {
                // Nothing may arrive past the declared length (or the handler's limit).
                let ceiling = hint.map_or(max, |h| h.min(max));
                let mut a = Collected::new(budget, ceiling);
                a.append(&f)?;
                a.append(&c)?;
                acc = Some(a);
            } else {
                first = Some(c);
            }
        }
        Ok(match (acc, first) {
            (Some(a), _) => {
                debug_assert!(a.charged >= a.buf.capacity() as u64, "collected buffer larger than its charge");
                Bytes::from_owner(a)
            }
            (None, Some(f)) => f,
            (None, None) => Bytes::new(),
        })
    }
}

/// Smallest buffer [`Body::collect`] starts accumulating into (unless the declared length is
/// smaller): small enough that a client declaring a large body and trickling bytes costs little,
/// large enough that typical bodies grow at most a few times.
const MIN_COLLECT_CAPACITY: usize = 64 * 1024;

fn too_large(limit: u64) -> BodyError {
    stats::count(Event::BodyTooLarge);
    BodyError::TooLarge { limit }
}

/// A body being collected: its buffer and the part of the shard's body budget it holds.
/// Becomes the owner behind the `Bytes` that [`Body::collect`] returns, so the charge is
/// released when the handler drops the body (on whichever thread), not when collection ends.
struct Collected {
    buf: Vec<u8>,
    /// Bytes of the shard's budget held: always ≥ `buf.capacity()`.
    charged: u64,
    /// The shard's gauge of held body bytes (an `Arc` so a release on another thread still
    /// lands on the shard that charged it).
    gauge: Arc<AtomicU64>,
    budget: u64,
    /// Most bytes this body can still legitimately reach (declared length or the limit).
    ceiling: u64,
}

impl Collected {
    fn new(budget: u64, ceiling: u64) -> Collected {
        Collected { buf: Vec::new(), charged: 0, gauge: stats::body_gauge(), budget, ceiling }
    }

    /// Appends `data`, first growing the buffer (amortised doubling, capped by the ceiling) and
    /// charging the growth to the shard's budget.
    fn append(&mut self, data: &[u8]) -> Result<(), BodyError> {
        let need = self.buf.len().saturating_add(data.len());
        let cap = self.buf.capacity();
        if need > cap {
            let ceiling = usize::try_from(self.ceiling).unwrap_or(usize::MAX);
            let want = need.max(cap.saturating_mul(2)).max(MIN_COLLECT_CAPACITY).min(ceiling).max(need);
            self.charge((want - cap) as u64)?;
            self.buf.reserve_exact(want - self.buf.len());
            // The allocator may round up; account for what is really held.
            let extra = (self.buf.capacity() as u64).saturating_sub(self.charged);
            if extra > 0 {
                self.gauge.fetch_add(extra, Ordering::Relaxed);
                self.charged += extra;
            }
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn charge(&mut self, delta: u64) -> Result<(), BodyError> {
        if self.charged.saturating_add(delta) > self.budget {
            return Err(too_large(self.budget));
        }
        // Only this shard adds to its gauge (other threads only release), and nothing runs
        // between this check and the add: the budget cannot be overshot.
        let held = self.gauge.load(Ordering::Relaxed);
        if held.saturating_add(delta) > self.budget {
            stats::count(Event::BodyBusy);
            return Err(BodyError::Busy);
        }
        self.gauge.fetch_add(delta, Ordering::Relaxed);
        self.charged += delta;
        Ok(())
    }
}

impl AsRef<[u8]> for Collected {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Collected {
    fn drop(&mut self) {
        self.gauge.fetch_sub(self.charged, Ordering::Relaxed);
    }
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

async fn conn_chunk(shared: &Rc<ConnShared>, gen: u64) -> Option<Result<Bytes, BodyError>> {
    let limits = shared.limits.clone();
    let send_continue = {
        let mut st = shared.body.borrow_mut();
        if st.gen != gen {
            return Some(Err(BodyError::Detached));
        }
        if let Some(e) = &st.error {
            return Some(Err(e.clone()));
        }
        if matches!(st.framing, BodyFraming::Done) {
            return None;
        }
        let send = st.expect_pending && !st.response_started;
        st.expect_pending = false;
        send
    };
    if send_continue {
        let w = shared.writer.borrow_mut().take();
        let Some(mut w) = w else { return Some(Err(BodyError::Detached)) };
        let (r, _) = write_all(&mut w, CONTINUE, limits.write_timeout, no_abort).await;
        *shared.writer.borrow_mut() = Some(w);
        if let Err(e) = r {
            let err = BodyError::Io(Arc::new(std::io::Error::other(format!("{e:?}"))));
            shared.body.borrow_mut().error = Some(err.clone());
            BodyState::wake_watch_if_done(&shared.body);
            return Some(Err(err));
        }
    }
    let taken = shared.reader.borrow_mut().take();
    let Some(mut rs) = taken else { return Some(Err(BodyError::Detached)) };
    let result = loop {
        let step = {
            let mut st = shared.body.borrow_mut();
            body_step(&mut st, &mut rs.buf, limits.max_body_bytes)
        };
        match step {
            Ok(Step::Data(b)) => break Some(Ok(b)),
            Ok(Step::Done) => break None,
            Err(e) => break Some(Err(e)),
            Ok(Step::NeedMore) => {}
        }
        let deadline = shared.body.borrow_mut().read_deadline(&limits);
        let buf = std::mem::take(&mut rs.buf);
        let (outcome, buf) = read_buf(&mut rs.io, buf, limits.read_buffer_size, Some(deadline), no_interrupt).await;
        rs.buf = buf;
        match outcome {
            ReadOutcome::Data(_) => {}
            ReadOutcome::Eof => break Some(Err(BodyError::UnexpectedEof)),
            ReadOutcome::Timeout | ReadOutcome::Interrupted => {
                stats::count(Event::BodyTimeout);
                break Some(Err(BodyError::Timeout));
            }
            ReadOutcome::Error(e) => break Some(Err(BodyError::Io(Arc::new(e)))),
        }
    };
    *shared.reader.borrow_mut() = Some(rs);
    if let Some(Err(e)) = &result {
        shared.body.borrow_mut().error = Some(e.clone());
    }
    BodyState::wake_watch_if_done(&shared.body);
    result
}
