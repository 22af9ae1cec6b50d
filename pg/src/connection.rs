//! One pipelined PostgreSQL connection on monoio.
//!
//! Owns the socket of one server session: startup and authentication (trust, cleartext, md5,
//! SCRAM-SHA-256), the session's ParameterStatus values and BackendKeyData, and the pipeline
//! that carries many [`Batch`]es (and simple queries) at once.
//!
//! Shape: after startup the socket is split. A **writer task** owns the write half: it drains the
//! bounded queue of waiting work, skips work whose caller has gone away (so a client disconnect
//! cancels queued work: it is never sent), encodes the rest (coalesced, up to
//! `max_write_bytes`) into one buffer and does one write. A **reader task** owns the read half
//! and reads until the socket closes; it parses backend messages and completes the written work
//! in FIFO order through per-request oneshots. Nothing ever races or drops an in-flight read:
//! the connection is closed by `shutdown(2)` on a duplicate of the socket descriptor, which makes
//! the reader's read return, and the tasks end on their own. A **canceller task** sends
//! PostgreSQL a CancelRequest (on a fresh socket, to the address the session reached) for the
//! head of the pipeline when nobody waits for it any more or its result is being discarded. On a
//! pooled connection a **stall watch task** flags the connection stalled once the head has run
//! for `stalled_after` (so the pool's dispatch reads a flag, not a clock) and, while the pool
//! has a connection that is not stalled, hands the unwritten queue back to it.
//!
//! Host names are resolved off the shard thread (`getaddrinfo` blocks) and every address is
//! tried in turn; IP literals and unix sockets need no lookup.
//!
//! Invariants:
//! - work is completed strictly in the order it was written; each batch ends with exactly one
//!   Sync and therefore exactly one ReadyForQuery;
//! - a batch is one transaction: the messages up to its Sync form PostgreSQL's implicit
//!   extended-protocol transaction (committed at Sync, rolled back as a whole on any error), so an
//!   error can never leave the session inside an aborted transaction block that would poison the
//!   batches pipelined behind it;
//! - at most `max_queued` requests wait and at most `max_in_flight` batches are written but
//!   unanswered;
//! - named prepared statements are cached per connection, keyed by SQL text and parameter types,
//!   in a bounded LRU; a statement is reused by name only after its ParseComplete was seen, and a
//!   Parse the server skipped (because something before it failed) is forgotten again. Evicted
//!   statements are closed at the start of the next batch (where nothing can make the server skip
//!   the Close). Names are never reused.
//! - once the connection is closed every waiting request is answered: unsent work is handed back
//!   (`NotSent`, safe to retry elsewhere), written work fails with [`PgError::ConnectionLost`].
//! - a pooled connection is stalled exactly while its head has been running for `stalled_after`
//!   (the flag is cleared whenever the head changes). While it is stalled and its pool has a
//!   healthy connection that is not, the writer writes nothing: every queued request is handed
//!   back as `NotSent` (never written, so safe to run elsewhere) for the pool to dispatch again.
//!   What was written before the stall was seen stays and waits for the head (at most
//!   `max_in_flight - 1` batches). With nowhere better to go the queue stays and is written as
//!   usual, so nothing bounces between connections.
//! - a written batch whose caller went away (its `Ticket` dropped: a timeout, a disconnected
//!   client) is cancelled on the server as soon as it is the head of the pipeline — never
//!   earlier, since a CancelRequest stops whatever the session runs — and again every second
//!   while it stays the head (at most 60 times), by one canceller task per connection;
//! - a cancel can land after its target finished, on a batch behind it. A batch whose caller
//!   still waits and that failed with "canceling statement due to user request" while a cancel
//!   of ours may be pending rolled back as a whole (a batch is one transaction), so it is handed
//!   back as `NotSent` to run again; retries are bounded by the cancels sent (see
//!   `CancelLedger`). Simple queries are never retried; a `statement_timeout` is not a stray;
//! - the result rows read for one batch are bounded by `max_result_bytes`: each message header
//!   is checked before the message is buffered, and a batch past its limit has the rest of its
//!   rows (and an oversized error) discarded as they arrive, unparsed, fails with
//!   [`PgError::ResultTooLarge`] at its own ReadyForQuery, and is cancelled; later batches are
//!   unaffected.
//! - `NOTIFY`s for this session (after `LISTEN` through [`Connection::simple_query`]) go to a
//!   bounded queue ([`crate::notify`]) that the owner drains with [`Connection::notification`];
//!   overflow drops the oldest and is reported by [`Connection::take_notifications_lost`]. A
//!   notification never completes or disturbs work in flight.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use local_sync::oneshot;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::time::Instant;
use postgres_protocol::message::{backend::Message, frontend};
use postgres_protocol::IsNull;

use crate::auth::Auth;
use crate::batch::{Batch, Oid, Row, SimpleResult, StatementResult, TxEnd};
use crate::config::{ConnectConfig, Host};
use crate::error::{DbError, PgError};
use crate::notify::{Notification, NotificationQueue, DEFAULT_NOTIFICATION_CAPACITY};

/// Bytes requested from the kernel per read.
const READ_CHUNK: usize = 64 * 1024;
/// A read buffer grown past this (by one large message, e.g. a big JSON body) is dropped for a
/// fresh [`READ_CHUNK`] one as soon as it is empty, so the connection does not keep the peak
/// allocation alive; and near its end it is read into what is left rather than reserved (which
/// would double it).
const LARGE_READ_BUFFER: usize = 1024 * 1024;
/// Below this much spare room a normal-sized buffer is grown before reading.
const MIN_READ: usize = 4 * 1024;

/// An abandoned head still running this long after its last CancelRequest is cancelled again
/// (the first one can arrive while the backend holds cancels off, e.g. between two messages).
const CANCEL_REPEAT: Duration = Duration::from_secs(1);
/// CancelRequests sent for one head at most; past that it is left to finish (a statement that
/// ignores a minute of cancels will not stop for more), and the pool routes around it as stalled.
const MAX_CANCELS_PER_HEAD: u32 = 60;
/// Stray-cancel errors one CancelRequest may cause: PostgreSQL signals the backend and then
/// its process group (`signal_child`), and a backend that handles the first SIGINT before the
/// second arrives takes them as two cancels, the second pending until its next statement.
const ERRORS_PER_CANCEL: u32 = 2;
/// Bound on the stray-cancel credits a connection holds (and so on retries they allow).
const MAX_CANCEL_CREDITS: u32 = 2 * ERRORS_PER_CANCEL;
/// PostgreSQL's message for a CancelRequest (`pg_cancel_backend` reads the same; a
/// `statement_timeout` shares SQLSTATE 57014 but not this text). Servers with a non-English
/// `lc_messages` never match, and a stray cancel then fails its batch instead of retrying it.
const USER_CANCEL_MESSAGE: &str = "canceling statement due to user request";
/// A non-DataRow message of a batch may be this large even below a smaller `max_result_bytes`
/// (a RowDescription of many columns, a long error message); larger ones are refused unparsed.
const MIN_MESSAGE_LIMIT: usize = 64 * 1024;
/// Shortest pause between two looks of the stall watch at a stalled connection, however small
/// `stalled_after` is (zero would make it spin while anything is in flight).
const STALL_RECHECK_MIN: Duration = Duration::from_millis(10);
/// Longest `stalled_after` honoured: `Instant` arithmetic panics past its range, and a head
/// running for a day is stalled by any measure.
const STALLED_AFTER_MAX: Duration = Duration::from_secs(24 * 60 * 60);
/// Resolver threads alive at once, process-wide. `getaddrinfo` can block for its own timeouts
/// (far past `connect_timeout`) while reconnect loops keep asking; past this bound a connect
/// fails fast instead of piling up threads.
const MAX_RESOLVER_THREADS: usize = 64;

static NEXT_CONN_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
static RESOLVER_THREADS: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------------------------
// Small single-threaded synchronisation helpers.

/// A level-triggered wake-up for exactly one waiting task.
#[derive(Default)]
pub(crate) struct Signal {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    pub(crate) fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub(crate) fn wait(&self) -> SignalWait<'_> {
        SignalWait { signal: self }
    }
}

pub(crate) struct SignalWait<'a> {
    signal: &'a Signal,
}

impl Future for SignalWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.set.replace(false) {
            Poll::Ready(())
        } else {
            *self.signal.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// A broadcast edge: every listener registered before `notify` is woken. Listeners deregister
/// on drop, so the waker list is bounded by the number of live listeners.
#[derive(Default)]
pub(crate) struct Event {
    generation: Cell<u64>,
    next_id: Cell<u64>,
    wakers: RefCell<Vec<(u64, Waker)>>,
}

impl Event {
    pub(crate) fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for (_, w) in wakers {
            w.wake();
        }
    }

    pub(crate) fn listen(self: &Rc<Self>) -> EventListener {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        EventListener { event: self.clone(), generation: self.generation.get(), id }
    }
}

pub(crate) struct EventListener {
    event: Rc<Event>,
    generation: u64,
    id: u64,
}

impl Future for EventListener {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut wakers = self.event.wakers.borrow_mut();
        match wakers.iter_mut().find(|(id, _)| *id == self.id) {
            Some((_, w)) => w.clone_from(cx.waker()),
            None => wakers.push((self.id, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for EventListener {
    fn drop(&mut self) {
        let id = self.id;
        self.event.wakers.borrow_mut().retain(|(i, _)| *i != id);
    }
}

// ---------------------------------------------------------------------------------------------
// Work items and their outcomes.

pub(crate) enum Work {
    Batch(Batch),
    Simple(String),
}

pub(crate) enum Reply {
    Batch(Vec<StatementResult>),
    Simple(Vec<SimpleResult>),
}

/// How a queued request ended, as seen by the code that queued it.
pub(crate) enum Failure {
    /// Never written to the socket: safe to run elsewhere.
    NotSent(Work),
    /// Failed (server error, connection lost after write, ...).
    Error(PgError),
}

pub(crate) type Outcome = Result<Reply, Failure>;

struct Queued {
    work: Work,
    tx: oneshot::Sender<Outcome>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// An internal Execute (settings, ROLLBACK): its rows and tag are not returned.
    Internal,
    /// A caller statement: Describe precedes its Execute.
    Caller,
}

enum Kind {
    Batch { steps: VecDeque<Step>, results: Vec<StatementResult> },
    Simple { results: Vec<SimpleResult> },
}

struct InFlight {
    /// Position in the connection's write order (never reused; the head has the smallest).
    seq: u64,
    tx: Option<oneshot::Sender<Outcome>>,
    /// The batch itself, kept until its ReadyForQuery so that a batch failed only by a stray
    /// cancel (one sent for an earlier batch) can be handed back as `NotSent` and run again.
    /// `None` for simple queries: they are not one transaction and never run twice.
    work: Option<Work>,
    kind: Kind,
    /// For every Parse written in this batch, in order: the cache key of a named one.
    parses: VecDeque<Option<CacheKey>>,
    /// Cached statements this batch executes by name (to drop them if the server says stale).
    used: Vec<CacheKey>,
    columns: Option<Vec<String>>,
    rows: Vec<Row>,
    error: Option<DbError>,
    /// Bytes of DataRow messages received for this batch (bounded by `max_result_bytes`).
    result_bytes: usize,
    /// The result crossed `max_result_bytes`: the rest of it is discarded unread and the batch
    /// fails with [`PgError::ResultTooLarge`].
    too_large: bool,
}

impl InFlight {
    /// Whether PostgreSQL should stop this batch: its caller went away, or its result is being
    /// thrown away. Once true it stays true (a dropped receiver never comes back).
    fn needs_cancel(&self) -> bool {
        self.too_large || self.tx.as_ref().is_none_or(|tx| tx.is_closed())
    }

    /// Marks the result too large and frees what was kept of it.
    fn mark_too_large(&mut self, counters: &Counters) {
        if self.too_large {
            return;
        }
        self.too_large = true;
        counters.results_too_large.set(counters.results_too_large.get() + 1);
        self.rows = Vec::new();
        if let Kind::Batch { results, .. } = &mut self.kind {
            *results = Vec::new();
        }
    }
}

/// Counters for metrics, shared by every connection a pool slot ever opens (so they survive
/// reconnects).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) cancels_sent: Cell<u64>,
    pub(crate) retried_after_stray_cancel: Cell<u64>,
    pub(crate) results_too_large: Cell<u64>,
    pub(crate) moved_off_stalled: Cell<u64>,
}

/// A connection's counters since it (or, in a pool, the pool) started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// CancelRequests written to the server (for abandoned or too-large batches).
    pub cancels_sent: u64,
    /// Batches that failed only because a cancel sent for an earlier batch hit them, and were
    /// handed back to run again.
    pub retried_after_stray_cancel: u64,
    /// Batches failed with [`PgError::ResultTooLarge`].
    pub results_too_large: u64,
    /// Batches queued, never written, handed back to the pool because this connection's head
    /// had stalled while another connection had not (pooled connections only).
    pub moved_off_stalled: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ConnectionStats {
        ConnectionStats {
            cancels_sent: self.cancels_sent.get(),
            retried_after_stray_cancel: self.retried_after_stray_cancel.get(),
            results_too_large: self.results_too_large.get(),
            moved_off_stalled: self.moved_off_stalled.get(),
        }
    }
}

/// What a pooled connection asks its pool when its head stalls.
pub(crate) trait Lanes {
    /// Whether a healthy connection other than `conn` (a [`Connection::id`]) is not stalled,
    /// i.e. whether unwritten work waiting behind `conn`'s head would be better off there.
    fn open_lane_besides(&self, conn: u64) -> bool;
}

/// How a pooled connection notices a stalled head and where its unwritten work can go.
pub(crate) struct StallWatch {
    /// A head running this long makes the connection stalled.
    pub(crate) after: Duration,
    /// The pool (weak: the pool owns its connections, not the other way round).
    pub(crate) lanes: Weak<dyn Lanes>,
}

/// What a connection shares with whoever opened it.
pub(crate) struct Shared {
    /// Counters (a pool passes one set to all its connections, so they survive reconnects).
    pub(crate) counters: Rc<Counters>,
    /// For a pooled connection: watch the head and hand unwritten work back when it stalls.
    pub(crate) stall: Option<StallWatch>,
}

/// What [`Pool`](crate::Pool) dispatch needs to know about one connection, read at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lane {
    /// The head has been running longer than `stalled_after`.
    pub(crate) stalled: bool,
    /// Requests queued plus batches in flight.
    pub(crate) load: usize,
}

/// The "canceling statement due to user request" errors this connection's own CancelRequests
/// may still cause.
///
/// A cancel lands on whatever the backend runs when its signal arrives: the target or, if the
/// target finished first, a batch behind it. One that arrives while the backend is idle stays
/// pending (PostgreSQL holds cancels off while it reads a command) and hits the next statement,
/// however much later. So every CancelRequest adds [`ERRORS_PER_CANCEL`] credits, every such
/// error consumes one, and only a credit lets a batch whose caller still waits be retried —
/// retries never outnumber the cancels sent. Credits are dropped once a batch written after the
/// last CancelRequest completed (the server closes that socket only after signalling) ends
/// without an error: it ran with nothing of ours pending, so a later cancel is someone else's
/// (an administrator's `pg_cancel_backend`) and fails its batch as usual.
#[derive(Default)]
struct CancelLedger {
    credits: u32,
    /// CancelRequests being sent right now (their signals may land at any moment).
    sending: u32,
    /// `seq` of the first batch written after the latest CancelRequest completed.
    settled_from: u64,
}

impl CancelLedger {
    /// A cancel error arrived: consumes a credit if there is one (then it may be ours).
    fn consume(&mut self) -> bool {
        if self.credits == 0 {
            return false;
        }
        self.credits -= 1;
        true
    }

    /// Batch `seq` ended without an error.
    fn settle(&mut self, seq: u64) {
        if self.sending == 0 && seq >= self.settled_from {
            self.credits = 0;
        }
    }
}

/// Where CancelRequests for this session go: the address the session itself connected to (a
/// host name could resolve elsewhere by now), with the connect timeout bounding each request.
#[derive(Debug, Clone)]
enum CancelAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

// ---------------------------------------------------------------------------------------------
// Statement cache.

#[derive(Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    sql: String,
    types: Vec<Oid>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EntryState {
    /// Parse written, ParseComplete not seen yet: don't Bind to it by name.
    Pending,
    /// The server has it.
    Ready,
}

struct CacheEntry {
    name: String,
    state: EntryState,
    last_used: u64,
}

struct StatementCache {
    capacity: usize,
    entries: HashMap<CacheKey, CacheEntry>,
    clock: u64,
    next_name: u64,
    /// Names evicted or found stale, closed at the start of the next written batch.
    to_close: Vec<String>,
}

enum CacheUse {
    /// Bind to this ready statement by name.
    Ready(String),
    /// Parse under this new name (and Bind to it).
    ParseNamed(String),
    /// Parse and Bind the unnamed statement.
    Unnamed,
}

impl StatementCache {
    fn new(capacity: usize) -> Self {
        StatementCache { capacity, entries: HashMap::new(), clock: 0, next_name: 0, to_close: Vec::new() }
    }

    fn lookup(&mut self, key: &CacheKey) -> CacheUse {
        self.clock += 1;
        let now = self.clock;
        if let Some(e) = self.entries.get_mut(key) {
            e.last_used = now;
            return match e.state {
                EntryState::Ready => CacheUse::Ready(e.name.clone()),
                EntryState::Pending => CacheUse::Unnamed,
            };
        }
        if self.capacity == 0 {
            return CacheUse::Unnamed;
        }
        if self.entries.len() >= self.capacity {
            // Evict the least recently used statement the server is known to have.
            let victim = self
                .entries
                .iter()
                .filter(|(_, e)| e.state == EntryState::Ready)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            match victim.and_then(|k| self.entries.remove(&k)) {
                Some(e) => self.to_close.push(e.name),
                None => return CacheUse::Unnamed,
            }
        }
        self.next_name += 1;
        let name = format!("mb{}", self.next_name);
        self.entries.insert(key.clone(), CacheEntry { name: name.clone(), state: EntryState::Pending, last_used: now });
        CacheUse::ParseNamed(name)
    }

    fn confirm(&mut self, key: &CacheKey) {
        if let Some(e) = self.entries.get_mut(key) {
            e.state = EntryState::Ready;
        }
    }

    /// The server skipped this Parse: forget the pending entry.
    fn forget_pending(&mut self, key: &CacheKey) {
        if self.entries.get(key).is_some_and(|e| e.state == EntryState::Pending) {
            self.entries.remove(key);
        }
    }

    /// The server reports a statement stale/missing: drop it (closing it if it is ready).
    fn invalidate(&mut self, key: &CacheKey) {
        if let Some(e) = self.entries.remove(key) {
            if e.state == EntryState::Ready {
                self.to_close.push(e.name);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connection.

struct State {
    queue: VecDeque<Queued>,
    in_flight: VecDeque<InFlight>,
    cache: StatementCache,
    closed: bool,
    /// `seq` of the next batch written.
    next_seq: u64,
    /// When the current head of `in_flight` became the head (`None` when nothing is in flight):
    /// how long the server has been on it, for the pool to route around a stalled connection.
    head_since: Option<Instant>,
    /// The current head has run past `stalled_after` (set by the stall watch, cleared whenever
    /// the head changes). A flag, so that dispatch reads no clock.
    stalled: bool,
    /// The stall watch waits without a deadline (nothing was in flight): the first batch
    /// written must wake it. While it sleeps on a deadline it re-reads the head on its own.
    watch_idle: bool,
    cancels: CancelLedger,
}

impl State {
    /// The head of `in_flight` changed (popped or first pushed): restart its clock and tell
    /// whether the new head must be cancelled.
    fn head_changed(&mut self, now: Instant) -> bool {
        self.stalled = false;
        match self.in_flight.front() {
            Some(h) => {
                self.head_since = Some(now);
                h.needs_cancel()
            }
            None => {
                self.head_since = None;
                false
            }
        }
    }

    /// Records a request just encoded into the write buffer as written (the next `seq`).
    /// Returns whether the stall watch must be woken (it became the head of an idle pipeline).
    fn push_in_flight(&mut self, q: Queued, (kind, parses, used): Encoded) -> bool {
        let seq = self.next_seq;
        self.next_seq += 1;
        let work = match q.work {
            w @ Work::Batch(_) => Some(w),
            Work::Simple(_) => None,
        };
        self.in_flight.push_back(InFlight {
            seq,
            tx: Some(q.tx),
            work,
            kind,
            parses,
            used,
            columns: None,
            rows: Vec::new(),
            error: None,
            result_bytes: 0,
            too_large: false,
        });
        if self.in_flight.len() > 1 {
            return false;
        }
        // Its caller is waiting (the writer skips abandoned requests), so there is nothing to
        // cancel; the clock starts at the write.
        self.head_changed(Instant::now());
        std::mem::take(&mut self.watch_idle)
    }
}

struct Inner {
    id: u64,
    state: RefCell<State>,
    writer_signal: Signal,
    closed_event: Rc<Event>,
    /// A duplicate of the socket descriptor, used only for `shutdown(2)`.
    shutdown_fd: OwnedFd,
    params: RefCell<HashMap<String, String>>,
    backend_pid: i32,
    backend_secret: i32,
    cancel_addr: CancelAddr,
    connect_timeout: Duration,
    /// Wakes the canceller task: a caller went away, or the head changed to one to cancel.
    cancel_signal: Signal,
    /// Set for pooled connections only (see [`stall_watch_task`]).
    stall: Option<StallWatch>,
    /// Wakes the stall watch: a batch was written while it waited without a deadline, or the
    /// connection closed.
    stall_signal: Signal,
    counters: Rc<Counters>,
    max_result_bytes: usize,
    /// The largest read buffer the reader has held (diagnostics; see
    /// [`Connection::read_buffer_peak`]).
    read_peak: Cell<usize>,
    max_in_flight: usize,
    max_queued: usize,
    max_write_bytes: usize,
    /// `NOTIFY`s delivered to this session (bounded; see [`crate::notify`]).
    notifications: RefCell<NotificationQueue>,
    /// Wakes the owner waiting in [`Connection::notification`] (a notification or the close).
    notification_signal: Signal,
}

impl Inner {
    /// The state of a session that has just completed startup.
    fn new(
        id: u64,
        config: &ConnectConfig,
        info: StartupInfo,
        shutdown_fd: OwnedFd,
        cancel_addr: CancelAddr,
        shared: Shared,
        read_buffer: usize,
    ) -> Inner {
        Inner {
            id,
            state: RefCell::new(State {
                queue: VecDeque::new(),
                in_flight: VecDeque::new(),
                cache: StatementCache::new(config.statement_cache_size),
                closed: false,
                next_seq: 0,
                head_since: None,
                stalled: false,
                watch_idle: false,
                cancels: CancelLedger::default(),
            }),
            writer_signal: Signal::default(),
            closed_event: Rc::new(Event::default()),
            shutdown_fd,
            params: RefCell::new(info.params),
            backend_pid: info.pid,
            backend_secret: info.secret,
            cancel_addr,
            connect_timeout: config.connect_timeout,
            cancel_signal: Signal::default(),
            stall: shared.stall,
            stall_signal: Signal::default(),
            counters: shared.counters,
            // Zero would fail every batch that returns a row; a limit that small is a mistake.
            max_result_bytes: config.max_result_bytes.max(1),
            read_peak: Cell::new(read_buffer),
            max_in_flight: config.max_in_flight.max(1),
            max_queued: config.max_queued.max(1),
            max_write_bytes: config.max_write_bytes.max(1024),
            notifications: RefCell::new(NotificationQueue::new(DEFAULT_NOTIFICATION_CAPACITY)),
            notification_signal: Signal::default(),
        }
    }

    /// Marks the connection closed, shuts the socket down and answers every waiting request.
    fn close(&self, reason: &str) {
        let (queued, in_flight) = {
            let mut st = self.state.borrow_mut();
            if st.closed {
                return;
            }
            st.closed = true;
            (std::mem::take(&mut st.queue), std::mem::take(&mut st.in_flight))
        };
        tracing::debug!(
            conn = self.id,
            reason,
            queued = queued.len(),
            in_flight = in_flight.len(),
            "pg connection closed"
        );
        // SAFETY: shutdown on a descriptor we own; it does not close it.
        unsafe {
            libc::shutdown(self.shutdown_fd.as_raw_fd(), libc::SHUT_RDWR);
        }
        for q in queued {
            let _ = q.tx.send(Err(Failure::NotSent(q.work)));
        }
        for f in in_flight {
            if let Some(tx) = f.tx {
                let _ = tx.send(Err(Failure::Error(PgError::ConnectionLost)));
            }
        }
        self.writer_signal.notify();
        self.closed_event.notify();
        self.notification_signal.notify();
        self.cancel_signal.notify();
        self.stall_signal.notify();
    }

    /// Hands the unwritten queue back to the pool (`NotSent`, to be dispatched again) when the
    /// head has stalled and the pool has a healthy connection that is not stalled. Nothing
    /// queued was written, so moving it is always safe; work already written behind the head
    /// cannot move. Cheap unless stalled: one flag read.
    fn move_off_stall(&self) {
        let Some(watch) = &self.stall else { return };
        {
            let st = self.state.borrow();
            if !st.stalled || st.queue.is_empty() {
                return;
            }
        }
        // Asked with our state released: the pool looks at its connections.
        if !watch.lanes.upgrade().is_some_and(|lanes| lanes.open_lane_besides(self.id)) {
            return;
        }
        let queue = std::mem::take(&mut self.state.borrow_mut().queue);
        let mut moved = 0;
        for q in queue {
            // A caller that went away gets nothing: its work is dropped, never sent.
            if q.tx.send(Err(Failure::NotSent(q.work))).is_ok() {
                moved += 1;
            }
        }
        self.counters.moved_off_stalled.set(self.counters.moved_off_stalled.get() + moved);
        tracing::debug!(conn = self.id, moved, "pg head stalled; queued work handed back to the pool");
    }
}

/// A handle to one pipelined server session. Dropping it closes the session.
pub struct Connection {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("backend_pid", &self.inner.backend_pid)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A request queued on a connection; await it for the outcome.
///
/// Dropping it unanswered (the caller timed out or went away) tells the connection, whose
/// canceller then cancels the batch on the server once it is the head of the pipeline.
pub(crate) struct Ticket {
    rx: oneshot::Receiver<Outcome>,
    conn: Weak<Inner>,
    answered: bool,
}

impl Ticket {
    pub(crate) async fn outcome(mut self) -> Outcome {
        let r = (&mut self.rx).await;
        self.answered = true;
        match r {
            Ok(o) => o,
            Err(_) => Err(Failure::Error(PgError::ConnectionLost)),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        // The receiver is dropped right after this, which is what the canceller checks; the
        // signal is level-triggered, so it sees the closed receiver whenever it runs.
        if let Some(inner) = self.conn.upgrade() {
            inner.cancel_signal.notify();
        }
    }
}

impl Connection {
    /// Connects, authenticates and starts the writer, reader and canceller tasks.
    ///
    /// Must run inside a monoio runtime with the timer enabled. Resolving the host name and the
    /// TCP connect share one `config.connect_timeout`; startup and authentication are bounded
    /// by another. An IP literal is used as it is; a name is resolved off the shard thread and
    /// every address it resolves to is tried in turn.
    pub async fn connect(config: &ConnectConfig) -> Result<Connection, PgError> {
        Self::connect_with(config, Shared { counters: Rc::new(Counters::default()), stall: None }).await
    }

    /// [`Connection::connect`], counting into `shared.counters` and, given a `shared.stall`,
    /// handing unwritten work back to the pool when the head stalls.
    pub(crate) async fn connect_with(config: &ConnectConfig, shared: Shared) -> Result<Connection, PgError> {
        let id = NEXT_CONN_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + config.connect_timeout;
        match &config.host {
            Host::Tcp(host) => {
                let addrs = resolve(host, config.port, deadline, config.connect_timeout).await?;
                let (stream, addr) = connect_tcp(&addrs, deadline, config.connect_timeout).await?;
                // Latency matters more than segment count: batches are already coalesced.
                let _ = stream.set_nodelay(true);
                Self::establish(id, stream, config, CancelAddr::Tcp(addr), shared).await
            }
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", config.port));
                let stream = match monoio::time::timeout_at(deadline, monoio::net::UnixStream::connect(&path)).await {
                    Ok(s) => s?,
                    Err(_) => return Err(PgError::Timeout(config.connect_timeout)),
                };
                Self::establish(id, stream, config, CancelAddr::Unix(path), shared).await
            }
        }
    }

    async fn establish<S>(
        id: u64,
        mut stream: S,
        config: &ConnectConfig,
        cancel_addr: CancelAddr,
        shared: Shared,
    ) -> Result<Connection, PgError>
    where
        S: AsyncReadRent + AsyncWriteRent + AsRawFd + Splitable + 'static,
        S::OwnedRead: AsyncReadRent + 'static,
        S::OwnedWrite: AsyncWriteRent + 'static,
    {
        let (info, rbuf, shutdown_fd) = startup_bounded(&mut stream, config).await?;
        tracing::debug!(conn = id, backend_pid = info.pid, "pg connection established");
        let inner = Rc::new(Inner::new(id, config, info, shutdown_fd, cancel_addr, shared, rbuf.capacity()));
        let (r, w) = stream.into_split();
        monoio::spawn(reader_task(inner.clone(), r, rbuf));
        monoio::spawn(writer_task(inner.clone(), w));
        monoio::spawn(canceller_task(inner.clone()));
        if let Some(watch) = &inner.stall {
            monoio::spawn(stall_watch_task(inner.clone(), watch.after));
        }
        Ok(Connection { inner })
    }

    /// Runs SQL with the simple query protocol (may hold many statements; used for migrations).
    /// Returns one result per statement. On error the statements after the failing one did not
    /// run; earlier ones are committed unless the SQL wrapped them in a transaction.
    pub async fn simple_query(&self, sql: &str) -> Result<Vec<SimpleResult>, PgError> {
        let ticket = self.submit(Work::Simple(sql.to_string())).map_err(|(e, _)| e)?;
        match ticket.outcome().await {
            Ok(Reply::Simple(r)) => Ok(r),
            Ok(Reply::Batch(_)) => Err(PgError::Protocol("reply kind mismatch".into())),
            Err(Failure::NotSent(_)) => Err(PgError::ConnectionLost),
            Err(Failure::Error(e)) => Err(e),
        }
    }

    /// Runs one batch (one transaction, one Sync) and returns the caller statements' results.
    /// Dropping the returned future before the batch is written means it is never sent.
    ///
    /// Dropping it after the batch was written cancels the batch on the server (a
    /// CancelRequest, once everything written before it has finished). A batch that failed only
    /// because such a cancel for an earlier batch hit it is run again here, transparently.
    pub async fn execute(&self, batch: Batch) -> Result<Vec<StatementResult>, PgError> {
        let mut work = Work::Batch(batch);
        loop {
            let ticket = self.submit(work).map_err(|(e, _)| e)?;
            match ticket.outcome().await {
                Ok(Reply::Batch(r)) => return Ok(r),
                Ok(Reply::Simple(_)) => return Err(PgError::Protocol("reply kind mismatch".into())),
                // Handed back unrun (or rolled back by a stray cancel): submit it again; a
                // closed connection refuses it with ConnectionLost. Retries are bounded by the
                // cancels this connection sent.
                Err(Failure::NotSent(w)) => work = w,
                Err(Failure::Error(e)) => return Err(e),
            }
        }
    }

    /// Queues work. Fails with `Busy` when the queue is full and `ConnectionLost` when closed
    /// (handing the work back).
    pub(crate) fn submit(&self, work: Work) -> Result<Ticket, (PgError, Work)> {
        if let Work::Batch(b) = &work {
            if let Err(e) = validate(b) {
                return Err((e, work));
            }
        }
        let mut st = self.inner.state.borrow_mut();
        if st.closed {
            return Err((PgError::ConnectionLost, work));
        }
        if st.queue.len() >= self.inner.max_queued {
            return Err((PgError::Busy, work));
        }
        let (tx, rx) = oneshot::channel();
        st.queue.push_back(Queued { work, tx });
        drop(st);
        self.inner.writer_signal.notify();
        Ok(Ticket { rx, conn: Rc::downgrade(&self.inner), answered: false })
    }

    /// True once the connection is closed (by either side); it never reopens.
    pub fn is_closed(&self) -> bool {
        self.inner.state.borrow().closed
    }

    /// Resolves when the connection is closed.
    pub async fn closed(&self) {
        loop {
            let listener = self.inner.closed_event.listen();
            if self.is_closed() {
                return;
            }
            listener.await;
        }
    }

    /// Closes the connection; waiting requests are answered (unsent ones as not sent).
    pub fn close(&self) {
        self.inner.close("closed by owner");
    }

    /// Requests waiting to be written.
    pub fn queued(&self) -> usize {
        self.inner.state.borrow().queue.len()
    }

    /// Batches written and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.inner.state.borrow().in_flight.len()
    }

    /// Whether the connection is stalled and how loaded it is; `None` once closed. Reads no
    /// clock (the stall watch keeps the flag), so dispatch can ask every connection.
    pub(crate) fn lane(&self) -> Option<Lane> {
        let st = self.inner.state.borrow();
        debug_assert!(!st.stalled || st.head_since.is_some(), "only a head in flight can stall");
        (!st.closed).then(|| Lane { stalled: st.stalled, load: st.queue.len() + st.in_flight.len() })
    }

    /// The latest value of a server-reported parameter (`server_version`, `TimeZone`, ...).
    pub fn parameter(&self, name: &str) -> Option<String> {
        self.inner.params.borrow().get(name).cloned()
    }

    /// Counters since this connection started (for a pooled one: since the pool started).
    pub fn stats(&self) -> ConnectionStats {
        self.inner.counters.snapshot()
    }

    /// The largest read buffer this connection has held, in bytes: a result that
    /// `max_result_bytes` refuses is discarded as it arrives and never raises it.
    pub fn read_buffer_peak(&self) -> usize {
        self.inner.read_peak.get()
    }

    /// The backend's process id and cancel secret (BackendKeyData).
    pub fn backend_key(&self) -> (i32, i32) {
        (self.inner.backend_pid, self.inner.backend_secret)
    }

    /// A process-unique id for logs.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The next `NOTIFY` delivered to this session (after `LISTEN <channel>` through
    /// [`Connection::simple_query`]), oldest first; `None` once the connection is closed and every
    /// queued notification has been taken. Only one task should wait here at a time. Dropping the
    /// future loses nothing (it holds no I/O).
    pub async fn notification(&self) -> Option<Notification> {
        loop {
            if let Some(n) = self.inner.notifications.borrow_mut().pop() {
                return Some(n);
            }
            if self.is_closed() {
                return None;
            }
            self.inner.notification_signal.wait().await;
        }
    }

    /// A notification already queued, without waiting.
    pub fn try_notification(&self) -> Option<Notification> {
        self.inner.notifications.borrow_mut().pop()
    }

    /// Whether notifications were dropped because the queue was full since the last call (the
    /// oldest go first); clears the flag. An owner that must not miss one treats `true` as
    /// "something happened".
    pub fn take_notifications_lost(&self) -> bool {
        self.inner.notifications.borrow_mut().take_lost()
    }

    /// Bounds the notification queue (default [`DEFAULT_NOTIFICATION_CAPACITY`]).
    pub fn set_notification_capacity(&self, capacity: usize) {
        self.inner.notifications.borrow_mut().set_capacity(capacity);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.inner.close("connection handle dropped");
    }
}

fn validate(b: &Batch) -> Result<(), PgError> {
    for s in &b.statements {
        if s.sql.contains('\0') {
            return Err(PgError::Config("SQL text contains a NUL byte".into()));
        }
        if s.params.len() > i16::MAX as usize || s.param_types.len() > i16::MAX as usize {
            return Err(PgError::Config(format!("too many parameters ({}), at most 32767", s.params.len())));
        }
    }
    if b.settings.len() * 2 + 2 > i16::MAX as usize {
        return Err(PgError::Config("too many request settings".into()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Startup and authentication.

struct StartupInfo {
    params: HashMap<String, String>,
    pid: i32,
    secret: i32,
}

async fn read_message<S: AsyncReadRent>(stream: &mut S, buf: &mut BytesMut) -> Result<Message, PgError> {
    loop {
        if let Some(m) = Message::parse(buf)? {
            return Ok(m);
        }
        let b = std::mem::take(buf);
        let b = fill(stream, b).await?;
        *buf = b;
    }
}

/// Appends at least one byte from the stream to `buf` (EOF is an error).
async fn fill<S: AsyncReadRent>(stream: &mut S, mut buf: BytesMut) -> Result<BytesMut, PgError> {
    let len = buf.len();
    let spare = buf.capacity() - len;
    // `Message::parse` has already reserved room for a whole large message: reading its tail
    // into the room left keeps it at 1× (reserving here would reallocate it at 2×).
    if spare == 0 || (spare < MIN_READ && buf.capacity() <= LARGE_READ_BUFFER) {
        buf.reserve(READ_CHUNK);
    }
    let cap = buf.capacity();
    let (res, slice) = stream.read(buf.slice_mut(len..cap)).await;
    let buf = slice.into_inner();
    match res {
        Ok(0) => {
            Err(PgError::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "server closed the connection")))
        }
        Ok(_) => Ok(buf),
        Err(e) => Err(PgError::Io(e)),
    }
}

async fn write_buf<S: AsyncWriteRent>(stream: &mut S, buf: BytesMut) -> Result<BytesMut, PgError> {
    let (res, buf) = stream.write_all(buf).await;
    res?;
    Ok(buf)
}

/// A duplicate of `fd` (close-on-exec), owned by the caller.
fn dup_fd(fd: RawFd) -> Result<OwnedFd, PgError> {
    // SAFETY: dup of a descriptor the caller keeps open; the result is checked.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(PgError::Io(std::io::Error::last_os_error()));
    }
    // SAFETY: `dup` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// [`startup`] bounded by `config.connect_timeout`. Returns what the server said, the read
/// buffer (it may hold bytes past startup) and a duplicate of the socket descriptor for
/// `shutdown(2)`.
async fn startup_bounded<S: AsyncReadRent + AsyncWriteRent + AsRawFd>(
    stream: &mut S,
    config: &ConnectConfig,
) -> Result<(StartupInfo, BytesMut, OwnedFd), PgError> {
    let shutdown_fd = Rc::new(dup_fd(stream.as_raw_fd())?);
    // Watchdog: bound startup without dropping an in-flight read; on expiry the socket is
    // shut down, which makes the pending read return.
    let done = Rc::new(Cell::new(false));
    let fired = Rc::new(Cell::new(false));
    {
        let (done, fired, fd, limit) = (done.clone(), fired.clone(), shutdown_fd.clone(), config.connect_timeout);
        monoio::spawn(async move {
            monoio::time::sleep(limit).await;
            if !done.get() {
                fired.set(true);
                // SAFETY: shutdown on a descriptor we own.
                unsafe {
                    libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR);
                }
            }
        });
    }
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let started = startup(stream, &mut rbuf, config).await;
    done.set(true);
    let info = match started {
        Ok(info) => info,
        Err(_) if fired.get() => return Err(PgError::Timeout(config.connect_timeout)),
        Err(e) => return Err(e),
    };
    let shutdown_fd = match Rc::try_unwrap(shutdown_fd) {
        Ok(fd) => fd,
        // The watchdog still holds its clone: take another duplicate for ourselves.
        Err(rc) => dup_fd(rc.as_raw_fd())?,
    };
    Ok((info, rbuf, shutdown_fd))
}

async fn startup<S: AsyncReadRent + AsyncWriteRent>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    cfg: &ConnectConfig,
) -> Result<StartupInfo, PgError> {
    let mut w = BytesMut::new();
    let mut params: Vec<(&str, &str)> =
        vec![("user", &cfg.user), ("database", &cfg.dbname), ("client_encoding", "UTF8"), ("DateStyle", "ISO")];
    if let Some(app) = &cfg.application_name {
        params.push(("application_name", app));
    }
    frontend::startup_message(params.iter().copied(), &mut w)?;
    let mut w = write_buf(stream, w).await?;

    let mut auth = Auth::new(cfg);
    let mut info = StartupInfo { params: HashMap::new(), pid: 0, secret: 0 };
    loop {
        let msg = read_message(stream, rbuf).await?;
        w.clear();
        match msg {
            Message::ParameterStatus(body) => {
                info.params.insert(body.name()?.to_string(), body.value()?.to_string());
            }
            Message::BackendKeyData(body) => {
                info.pid = body.process_id();
                info.secret = body.secret_key();
            }
            Message::NoticeResponse(body) => {
                if let Ok(n) = DbError::parse(body.fields()) {
                    tracing::debug!(code = %n.code, message = %n.message, "pg notice during startup");
                }
            }
            Message::ErrorResponse(body) => return Err(DbError::parse(body.fields())?.into()),
            Message::ReadyForQuery(_) => return Ok(info),
            msg => {
                auth.respond(msg, &mut w)?;
                if !w.is_empty() {
                    w = write_buf(stream, w).await?;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writer.

async fn writer_task<W: AsyncWriteRent>(inner: Rc<Inner>, mut w: W) {
    let mut buf = BytesMut::with_capacity(inner.max_write_bytes);
    loop {
        // Before anything more goes behind a stalled head: is there somewhere better?
        inner.move_off_stall();
        if !encode_queued(&inner, &mut buf) {
            break;
        }
        if buf.is_empty() {
            inner.writer_signal.wait().await;
            continue;
        }
        let (res, mut out) = w.write_all(std::mem::take(&mut buf)).await;
        if let Err(e) = res {
            tracing::warn!(conn = inner.id, error = %e, "pg write failed");
            inner.close("write failed");
            break;
        }
        out.clear();
        buf = out;
    }
    // Best effort goodbye; the reader sees EOF.
    let mut t = BytesMut::new();
    frontend::terminate(&mut t);
    let _ = w.write_all(t).await;
    let _ = w.shutdown().await;
}

/// Moves queued work into `buf` and `in_flight` while both bounds allow (`max_in_flight`
/// batches, `max_write_bytes`). Returns false once the connection is closed. Leaves `buf` empty
/// only when nothing could be written (everything written appends at least its Sync or Query).
fn encode_queued(inner: &Inner, buf: &mut BytesMut) -> bool {
    let mut st = inner.state.borrow_mut();
    if st.closed {
        return false;
    }
    let st = &mut *st;
    while st.in_flight.len() < inner.max_in_flight && buf.len() < inner.max_write_bytes {
        let Some(q) = st.queue.pop_front() else { break };
        if q.tx.is_closed() {
            // The caller went away before we wrote it: never send it.
            tracing::trace!(conn = inner.id, "skipping cancelled request");
            continue;
        }
        if encode_one(st, q, buf) {
            inner.stall_signal.notify();
        }
    }
    true
}

/// Appends one request to `buf` and records it in flight; a request that cannot be encoded is
/// answered with its error instead, leaving `buf` and the statement cache as they were.
/// Returns whether the stall watch must be woken (see [`State::push_in_flight`]).
fn encode_one(st: &mut State, q: Queued, buf: &mut BytesMut) -> bool {
    let start = buf.len();
    match encode(&q.work, &mut st.cache, buf) {
        Ok(encoded) => {
            debug_assert!(buf.len() > start, "every request ends with a Sync or is a Query");
            st.push_in_flight(q, encoded)
        }
        Err((e, parses)) => {
            buf.truncate(start);
            for k in parses.into_iter().flatten() {
                st.cache.forget_pending(&k);
            }
            let _ = q.tx.send(Err(Failure::Error(e)));
            false
        }
    }
}

type Encoded = (Kind, VecDeque<Option<CacheKey>>, Vec<CacheKey>);

/// Appends one unit of work to `buf`. On error the caller truncates `buf` and forgets the
/// pending cache entries listed in the returned parses.
fn encode(
    work: &Work,
    cache: &mut StatementCache,
    buf: &mut BytesMut,
) -> Result<Encoded, (PgError, VecDeque<Option<CacheKey>>)> {
    let mut parses = VecDeque::new();
    let mut used = Vec::new();
    let batch = match work {
        Work::Simple(sql) => {
            frontend::query(sql, buf).map_err(|e| (PgError::Io(e), VecDeque::new()))?;
            return Ok((Kind::Simple { results: Vec::new() }, parses, used));
        }
        Work::Batch(b) => b,
    };
    // Closes first: right after the previous Sync, nothing can make the server skip them.
    for name in cache.to_close.drain(..) {
        if let Err(e) = frontend::close(b'S', &name, buf) {
            return Err((PgError::Io(e), parses));
        }
    }
    let mut steps = VecDeque::new();
    let r = (|| -> Result<(), PgError> {
        let mut settings: Vec<(&str, &str)> = Vec::with_capacity(batch.settings.len() + 1);
        if batch.read_only {
            settings.push(("transaction_read_only", "on"));
        }
        settings.extend(batch.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        if !settings.is_empty() {
            // Written in place (no `format!` per setting): this runs for every batch.
            let mut sql = String::with_capacity(8 + 30 * settings.len());
            sql.push_str("select ");
            for i in 0..settings.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let _ = write!(sql, "set_config(${}, ${}, true)", 2 * i + 1, 2 * i + 2);
            }
            let values: Vec<Option<&[u8]>> =
                settings.iter().flat_map(|(n, v)| [Some(n.as_bytes()), Some(v.as_bytes())]).collect();
            statement(cache, buf, &mut parses, &mut used, &sql, &[], &values, false)?;
            steps.push_back(Step::Internal);
        }
        for s in &batch.statements {
            let values: Vec<Option<&[u8]>> = s.params.iter().map(|p| p.as_deref()).collect();
            statement(cache, buf, &mut parses, &mut used, &s.sql, &s.param_types, &values, true)?;
            steps.push_back(Step::Caller);
        }
        if batch.end == TxEnd::Rollback {
            statement(cache, buf, &mut parses, &mut used, "ROLLBACK", &[], &[], false)?;
            steps.push_back(Step::Internal);
        }
        frontend::sync(buf);
        Ok(())
    })();
    match r {
        Ok(()) => Ok((Kind::Batch { steps, results: Vec::new() }, parses, used)),
        Err(e) => Err((e, parses)),
    }
}

#[allow(clippy::too_many_arguments)]
fn statement(
    cache: &mut StatementCache,
    buf: &mut BytesMut,
    parses: &mut VecDeque<Option<CacheKey>>,
    used: &mut Vec<CacheKey>,
    sql: &str,
    types: &[Oid],
    values: &[Option<&[u8]>],
    describe: bool,
) -> Result<(), PgError> {
    let key = CacheKey { sql: sql.to_string(), types: types.to_vec() };
    let name = match cache.lookup(&key) {
        CacheUse::Ready(name) => {
            used.push(key);
            name
        }
        CacheUse::ParseNamed(name) => {
            frontend::parse(&name, sql, types.iter().copied(), buf)?;
            parses.push_back(Some(key.clone()));
            used.push(key);
            name
        }
        CacheUse::Unnamed => {
            frontend::parse("", sql, types.iter().copied(), buf)?;
            parses.push_back(None);
            String::new()
        }
    };
    frontend::bind(
        "",
        &name,
        std::iter::once(0i16),
        values.iter(),
        |v, out| match v {
            Some(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        },
        std::iter::once(0i16),
        buf,
    )
    .map_err(|e| match e {
        frontend::BindError::Conversion(e) => PgError::Protocol(format!("bind: {e}")),
        frontend::BindError::Serialization(e) => PgError::Io(e),
    })?;
    if describe {
        frontend::describe(b'P', "", buf)?;
    }
    frontend::execute("", 0, buf)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reader.

/// What the reader does with the message whose header is at the front of its buffer.
enum Admit {
    /// Parse and dispatch it.
    Parse,
    /// Drop its bytes as they arrive, unparsed (a result past `max_result_bytes`).
    Discard,
    /// Larger than anything this connection may buffer and not discardable: close.
    Refuse(PgError),
}

/// Checks one message header against the head batch's `max_result_bytes` *before*
/// `Message::parse`, which would reserve room for the whole message (up to 4 GiB) first.
/// `total` is the message's size on the wire, tag included.
fn admit(inner: &Inner, tag: u8, total: usize) -> Admit {
    let limit = inner.max_result_bytes;
    let mut st = inner.state.borrow_mut();
    // Simple queries (migrations, introspection: the server's own SQL) are not bounded.
    let Some(f) = st.in_flight.front_mut().filter(|f| matches!(f.kind, Kind::Batch { .. })) else {
        return Admit::Parse;
    };
    match tag {
        b'D' => {
            if f.too_large {
                return Admit::Discard;
            }
            debug_assert!(f.result_bytes <= limit, "a batch is never counted past its limit");
            let after = f.result_bytes.saturating_add(total);
            if after <= limit {
                f.result_bytes = after;
                return Admit::Parse;
            }
            tracing::debug!(conn = inner.id, limit, "pg result too large; discarding it and cancelling");
            f.mark_too_large(&inner.counters);
            drop(st);
            // Stop the server producing the rest (if it still runs).
            inner.cancel_signal.notify();
            Admit::Discard
        }
        _ if total <= limit.max(MIN_MESSAGE_LIMIT) => Admit::Parse,
        // An error (or notice) too long to read: the batch fails either way.
        b'E' => {
            f.mark_too_large(&inner.counters);
            Admit::Discard
        }
        b'N' => Admit::Discard,
        _ => Admit::Refuse(PgError::Protocol(format!(
            "a {total}-byte message (type {:?}) exceeds max_result_bytes ({limit})",
            char::from(tag)
        ))),
    }
}

/// Where the reader stands in the byte stream between two reads.
#[derive(Default)]
struct Framing {
    /// Whether the read buffer shares an allocation that a large message made.
    holds_large: bool,
    /// Bytes of a refused message still to drop as they arrive.
    discard: usize,
    /// The message whose header is at the front of the buffer was admitted (and counted)
    /// already; it is waiting for the rest of its bytes.
    admitted: bool,
}

impl Framing {
    /// Drops what is buffered of a message being discarded; false while more of it is to come.
    fn skip_discarded(&mut self, buf: &mut BytesMut) -> bool {
        if self.discard == 0 {
            return true;
        }
        let n = self.discard.min(buf.len());
        buf.advance(n);
        self.discard -= n;
        // Otherwise everything read so far belonged to the refused message.
        debug_assert!(self.discard == 0 || buf.is_empty());
        self.discard == 0
    }

    /// Swaps an emptied buffer that a large message grew for a fresh [`READ_CHUNK`] one: the
    /// message is parsed (its bytes live on only in its result, and the rest of this buffer
    /// would still pin the allocation), so the allocation goes with it.
    fn release_large(&mut self, buf: &mut BytesMut) {
        self.holds_large |= buf.capacity() > LARGE_READ_BUFFER;
        if self.holds_large && buf.is_empty() {
            *buf = BytesMut::with_capacity(READ_CHUNK);
            self.holds_large = false;
        }
    }
}

async fn reader_task<R: AsyncReadRent>(inner: Rc<Inner>, mut r: R, mut buf: BytesMut) {
    let mut framing = Framing::default();
    let reason = loop {
        if let Err(reason) = handle_buffered(&inner, &mut buf, &mut framing) {
            break reason;
        }
        if inner.state.borrow().closed {
            // Closed by the owner or the writer: keep nothing in flight.
            break "closed";
        }
        framing.release_large(&mut buf);
        match fill(&mut r, std::mem::take(&mut buf)).await {
            Ok(b) => {
                if b.capacity() > inner.read_peak.get() {
                    inner.read_peak.set(b.capacity());
                }
                buf = b
            }
            Err(PgError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break "server closed the connection"
            }
            Err(e) => {
                tracing::debug!(conn = inner.id, error = %e, "pg read failed");
                break "read failed";
            }
        }
    };
    inner.close(reason);
}

/// Handles every whole message in `buf` (admitting, discarding or dispatching each), leaving
/// a partial one for the next read. `Err` carries why the connection must close.
fn handle_buffered(inner: &Inner, buf: &mut BytesMut, framing: &mut Framing) -> Result<(), &'static str> {
    loop {
        if !framing.skip_discarded(buf) {
            return Ok(());
        }
        if buf.len() >= 5 && !framing.admitted {
            framing.admitted = true;
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            match admit(inner, buf[0], len.saturating_add(1)) {
                Admit::Parse => {}
                Admit::Discard => {
                    framing.discard = len.saturating_add(1);
                    framing.admitted = false;
                    continue;
                }
                Admit::Refuse(e) => {
                    tracing::warn!(conn = inner.id, error = %e, "pg message refused");
                    return Err("message too large");
                }
            }
        }
        let msg = match Message::parse(buf) {
            Ok(Some(m)) => {
                framing.admitted = false;
                m
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::warn!(conn = inner.id, error = %e, "pg protocol decode error");
                return Err("decode error");
            }
        };
        if let Err(e) = dispatch(inner, msg) {
            tracing::warn!(conn = inner.id, error = %e, "pg protocol error");
            return Err("protocol error");
        }
    }
}

/// Routes one backend message: session-wide ones (parameters, notices, notifications) at any
/// time, everything else to the head of the pipeline.
fn dispatch(inner: &Inner, msg: Message) -> Result<(), PgError> {
    let Some(msg) = handle_asynchronous(inner, msg)? else {
        return Ok(());
    };
    let mut st = inner.state.borrow_mut();
    let st = &mut *st;
    let Some(f) = st.in_flight.front_mut() else {
        return match msg {
            Message::ErrorResponse(body) => {
                let e = DbError::parse(body.fields())?;
                tracing::warn!(conn = inner.id, code = %e.code, message = %e.message, "pg error outside a request");
                Err(PgError::Db(Box::new(e)))
            }
            _ => Err(PgError::Protocol("message received with nothing in flight".into())),
        };
    };
    match msg {
        Message::ParseComplete => match f.parses.pop_front() {
            Some(Some(key)) => st.cache.confirm(&key),
            Some(None) => {}
            None => return Err(PgError::Protocol("unexpected ParseComplete".into())),
        },
        Message::BindComplete | Message::CloseComplete | Message::PortalSuspended => {}
        Message::ReadyForQuery(_) => finish_head(inner, st)?,
        Message::CopyInResponse(_) | Message::CopyOutResponse(_) => {
            return Err(PgError::Protocol("COPY is not supported on pipelined connections".into()));
        }
        msg => collect_result(inner, f, msg)?,
    }
    Ok(())
}

/// Handles the messages that may arrive at any time, outside any request; hands every other
/// message back.
fn handle_asynchronous(inner: &Inner, msg: Message) -> Result<Option<Message>, PgError> {
    match msg {
        Message::ParameterStatus(body) => {
            inner.params.borrow_mut().insert(body.name()?.to_string(), body.value()?.to_string());
        }
        Message::NoticeResponse(body) => {
            let n = DbError::parse(body.fields())?;
            tracing::debug!(conn = inner.id, severity = %n.severity, code = %n.code, message = %n.message, "pg notice");
        }
        Message::NotificationResponse(body) => {
            let n = Notification {
                process_id: body.process_id(),
                channel: body.channel()?.to_owned(),
                payload: body.message()?.to_owned(),
            };
            tracing::debug!(conn = inner.id, channel = %n.channel, payload = %n.payload, "pg notification");
            inner.notifications.borrow_mut().push(n);
            inner.notification_signal.notify();
        }
        msg => return Ok(Some(msg)),
    }
    Ok(None)
}

/// Adds one result message (columns, a row, a statement's end, an error) to the head batch.
fn collect_result(inner: &Inner, f: &mut InFlight, msg: Message) -> Result<(), PgError> {
    match msg {
        Message::RowDescription(body) => {
            let mut cols = Vec::new();
            let mut fields = body.fields();
            while let Some(field) = fields.next()? {
                cols.push(field.name().to_string());
            }
            f.columns = Some(cols);
            f.rows.clear();
        }
        Message::NoData => {
            f.columns = Some(Vec::new());
            f.rows.clear();
        }
        Message::DataRow(body) => {
            // Rows of internal statements (no Describe sent) are dropped here.
            let internal = matches!(&f.kind, Kind::Batch { steps, .. } if steps.front() == Some(&Step::Internal));
            if !internal {
                let storage = body.buffer_bytes().clone();
                let mut cells = Vec::new();
                let mut ranges = body.ranges();
                while let Some(range) = ranges.next()? {
                    cells.push(range.map(|r| storage.slice(r)));
                }
                f.rows.push(Row::new(cells));
            }
        }
        Message::CommandComplete(body) => {
            let tag = body.tag()?.to_string();
            complete_statement(f, tag)?;
        }
        Message::EmptyQueryResponse => complete_statement(f, String::new())?,
        Message::ErrorResponse(body) => {
            let e = DbError::parse(body.fields())?;
            tracing::debug!(conn = inner.id, code = %e.code, message = %e.message, "pg error in request");
            if f.error.is_none() {
                f.error = Some(e);
            }
        }
        _ => return Err(PgError::Protocol("unexpected message from server".into())),
    }
    Ok(())
}

/// The head's ReadyForQuery: pops it, settles the statement cache and the cancel ledger, and
/// answers its caller.
fn finish_head(inner: &Inner, st: &mut State) -> Result<(), PgError> {
    let Some(f) = st.in_flight.pop_front() else {
        return Err(PgError::Protocol("ReadyForQuery with nothing in flight".into()));
    };
    // Completion is strictly FIFO: whatever is now the head was written after `f`.
    debug_assert!(st.in_flight.front().is_none_or(|h| h.seq > f.seq));
    if st.head_changed(Instant::now()) {
        inner.cancel_signal.notify();
    }
    settle_cache(&mut st.cache, &f);
    let (tx, outcome) = outcome_of(inner, &mut st.cancels, f);
    if let Some(tx) = tx {
        // A caller that went away after the write simply doesn't get it.
        let _ = tx.send(outcome);
    }
    if !st.queue.is_empty() {
        inner.writer_signal.notify();
    }
    Ok(())
}

/// Brings the statement cache in line with what the server did with a finished batch.
fn settle_cache(cache: &mut StatementCache, f: &InFlight) {
    // Parses the server skipped never happened: forget them.
    for k in f.parses.iter().flatten() {
        cache.forget_pending(k);
    }
    if let Some(e) = &f.error {
        // 26000: statement missing; 0A000 "cached plan must not change result type".
        if e.code == "26000" || (e.code == "0A000" && e.message.contains("cached plan")) {
            for k in &f.used {
                cache.invalidate(k);
            }
        }
    }
}

/// What the caller of a finished batch gets (and where to send it).
fn outcome_of(inner: &Inner, cancels: &mut CancelLedger, f: InFlight) -> (Option<oneshot::Sender<Outcome>>, Outcome) {
    let user_cancel = f.error.as_ref().is_some_and(|e| e.code == "57014" && e.message == USER_CANCEL_MESSAGE);
    // A cancel hit this batch. If it was one we sent for this batch, it is spent. If this
    // batch's caller still waits, it can only have been meant for an earlier batch (we cancel
    // only batches nobody waits for, and only at the head): the batch rolled back as a whole,
    // so it goes back to run again (once per credit, see CancelLedger).
    let stray = if user_cancel {
        cancels.consume() && !f.needs_cancel() && matches!(f.work, Some(Work::Batch(_)))
    } else {
        if f.error.is_none() {
            cancels.settle(f.seq);
        }
        false
    };
    let outcome = if f.too_large {
        Err(Failure::Error(PgError::ResultTooLarge { limit: inner.max_result_bytes }))
    } else if let (true, Some(work)) = (stray, f.work) {
        inner.counters.retried_after_stray_cancel.set(inner.counters.retried_after_stray_cancel.get() + 1);
        tracing::debug!(conn = inner.id, "batch hit by a cancel meant for an earlier one; retrying it");
        Err(Failure::NotSent(work))
    } else {
        match (f.error, f.kind) {
            (Some(e), _) => Err(Failure::Error(PgError::Db(Box::new(e)))),
            (None, Kind::Batch { results, .. }) => Ok(Reply::Batch(results)),
            (None, Kind::Simple { results }) => Ok(Reply::Simple(results)),
        }
    };
    (f.tx, outcome)
}

fn complete_statement(f: &mut InFlight, tag: String) -> Result<(), PgError> {
    let columns = f.columns.take().unwrap_or_default();
    let rows = std::mem::take(&mut f.rows);
    match &mut f.kind {
        Kind::Batch { steps, results } => match steps.pop_front() {
            Some(Step::Caller) => results.push(StatementResult { columns, rows, command_tag: tag }),
            Some(Step::Internal) => {}
            None => return Err(PgError::Protocol("more results than statements".into())),
        },
        Kind::Simple { results } => results.push(SimpleResult { columns, rows, command_tag: tag }),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Stalled heads.

/// Keeps `State::stalled` true exactly while the head of the pipeline has been running for
/// `after` or longer, and moves unwritten work off the connection while it is (see
/// [`Inner::move_off_stall`]). One per pooled connection, for the connection's life.
///
/// It adds no timer or wake-up per request (the only per-request cost is the clock read that
/// stamps each new head, in [`State::head_changed`]): it sleeps until the current head's
/// deadline and on waking re-reads the head (which may have changed meanwhile, restarting its
/// clock); with nothing in flight it waits for the writer's first batch. While the connection is stalled it
/// looks again every `after` (at least [`STALL_RECHECK_MIN`]), so work queued while every
/// connection was stalled moves soon after another connection frees up or comes back.
async fn stall_watch_task(inner: Rc<Inner>, after: Duration) {
    let after = after.min(STALLED_AFTER_MAX);
    let recheck = after.max(STALL_RECHECK_MIN);
    loop {
        let now = Instant::now();
        let deadline = {
            let mut st = inner.state.borrow_mut();
            if st.closed {
                return;
            }
            match st.head_since {
                None => {
                    st.watch_idle = true;
                    None
                }
                Some(since) if now < since + after => Some(since + after),
                Some(_) => {
                    if !st.stalled {
                        st.stalled = true;
                        let (in_flight, queued) = (st.in_flight.len(), st.queue.len());
                        tracing::debug!(conn = inner.id, ?after, in_flight, queued, "pg connection stalled");
                    }
                    Some(now + recheck)
                }
            }
        };
        inner.move_off_stall();
        match deadline {
            None => inner.stall_signal.wait().await,
            // Dropping a signal wait loses nothing: it holds no I/O.
            Some(t) => {
                let _ = monoio::time::timeout_at(t, inner.stall_signal.wait()).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cancelling abandoned work.

/// Sends CancelRequests for the head of the pipeline while it needs one (its caller went away,
/// or its result is past `max_result_bytes`), so that one abandoned statement does not hold the
/// batches pipelined behind it. One per connection, for the connection's life; it sleeps on
/// `cancel_signal` (a dropped [`Ticket`], a new head) and ends when the connection closes.
///
/// Only the head is ever cancelled: a CancelRequest stops whatever the backend is running, and
/// anything before the head has already finished. A head still there [`CANCEL_REPEAT`] after a
/// cancel is cancelled again, at most [`MAX_CANCELS_PER_HEAD`] times.
async fn canceller_task(inner: Rc<Inner>) {
    enum Next {
        Sleep,
        SleepUntil(Instant),
        Cancel { seq: u64, attempt: u32 },
    }
    // The head last cancelled: its seq, when the cancel finished, how many were sent for it.
    let mut last: Option<(u64, Instant, u32)> = None;
    loop {
        let now = Instant::now();
        let next = {
            let st = inner.state.borrow();
            if st.closed {
                return;
            }
            match st.in_flight.front() {
                Some(head) if head.needs_cancel() => match last {
                    Some((seq, at, attempts)) if seq == head.seq => {
                        if attempts >= MAX_CANCELS_PER_HEAD {
                            Next::Sleep
                        } else if now >= at + CANCEL_REPEAT {
                            Next::Cancel { seq, attempt: attempts + 1 }
                        } else {
                            Next::SleepUntil(at + CANCEL_REPEAT)
                        }
                    }
                    _ => Next::Cancel { seq: head.seq, attempt: 1 },
                },
                _ => Next::Sleep,
            }
        };
        match next {
            Next::Sleep => inner.cancel_signal.wait().await,
            Next::SleepUntil(t) => {
                // Dropping a signal wait loses nothing: it holds no I/O.
                let _ = monoio::time::timeout_at(t, inner.cancel_signal.wait()).await;
            }
            Next::Cancel { seq, attempt } => {
                {
                    // Counted before it is sent: its signal can land (and fail a batch behind
                    // the target) before the request below returns.
                    let mut st = inner.state.borrow_mut();
                    st.cancels.credits = (st.cancels.credits + ERRORS_PER_CANCEL).min(MAX_CANCEL_CREDITS);
                    st.cancels.sending += 1;
                }
                if attempt == MAX_CANCELS_PER_HEAD {
                    tracing::warn!(conn = inner.id, attempt, "pg statement ignores cancels; leaving it to finish");
                }
                // Counted once written (before the server confirms), so that whoever sees the
                // cancel's effect also sees it counted.
                let counters = &inner.counters;
                let count = || counters.cancels_sent.set(counters.cancels_sent.get() + 1);
                let r = send_cancel(
                    &inner.cancel_addr,
                    inner.connect_timeout,
                    (inner.backend_pid, inner.backend_secret),
                    count,
                )
                .await;
                let done = Instant::now();
                {
                    let mut st = inner.state.borrow_mut();
                    st.cancels.sending -= 1;
                    st.cancels.settled_from = st.next_seq;
                }
                match r {
                    Ok(()) => {
                        tracing::debug!(conn = inner.id, backend_pid = inner.backend_pid, attempt, "pg cancel acted on")
                    }
                    Err(e) => tracing::warn!(conn = inner.id, error = %e, "pg cancel request failed"),
                }
                last = Some((seq, done, attempt));
            }
        }
    }
}

/// Sends one CancelRequest to `addr`, bounded by `timeout` as a whole; `written` runs once the
/// request is written.
async fn send_cancel(
    addr: &CancelAddr,
    timeout: Duration,
    backend: (i32, i32),
    written: impl FnOnce(),
) -> Result<(), PgError> {
    let send = async {
        match addr {
            CancelAddr::Tcp(a) => cancel_over(monoio::net::TcpStream::connect_addr(*a).await?, backend, written).await,
            CancelAddr::Unix(p) => cancel_over(monoio::net::UnixStream::connect(p).await?, backend, written).await,
        }
    };
    monoio::time::timeout(timeout, send).await.map_err(|_| PgError::Timeout(timeout))?
}

/// Writes a CancelRequest on a fresh socket and waits for the server to close it: PostgreSQL
/// closes it only after signalling the backend, so on return the cancel has been delivered (as
/// libpq's `PQcancel` does). The socket is thrown away afterwards, so a read dropped by the
/// caller's timeout cannot lose anything anyone would read. `written` runs once the request is
/// written.
async fn cancel_over<S: AsyncReadRent + AsyncWriteRent>(
    mut s: S,
    backend: (i32, i32),
    written: impl FnOnce(),
) -> Result<(), PgError> {
    let mut req = BytesMut::with_capacity(16);
    frontend::cancel_request(backend.0, backend.1, &mut req);
    let (r, _) = s.write_all(req).await;
    r?;
    written();
    // The server sends nothing back; whatever it might send is read into (and cleared from) a
    // small fixed buffer until EOF.
    let mut b = Vec::with_capacity(64);
    loop {
        let (r, back) = s.read(b).await;
        match r {
            Ok(0) => return Ok(()),
            Ok(_) => {
                b = back;
                b.clear();
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(PgError::Io(e)),
        }
    }
}

/// Sends a CancelRequest for `backend` (a [`Connection::backend_key`]) and waits until the
/// server has acted on it, bounded by `config.connect_timeout`. Best effort: PostgreSQL cancels
/// whatever that session runs when the request lands.
///
/// Connections call this on their own for a batch whose caller timed out or went away (see
/// [`Connection::execute`]); this function is for owners of other sessions. A host name is
/// resolved again here (off the shard thread) and its addresses are tried in turn.
pub async fn cancel(config: &ConnectConfig, backend: (i32, i32)) -> Result<(), PgError> {
    let timeout = config.connect_timeout;
    let deadline = Instant::now() + timeout;
    match &config.host {
        Host::Tcp(h) => {
            let addrs = resolve(h, config.port, deadline, timeout).await?;
            let (stream, _) = connect_tcp(&addrs, deadline, timeout).await?;
            monoio::time::timeout_at(deadline, cancel_over(stream, backend, || {}))
                .await
                .map_err(|_| PgError::Timeout(timeout))?
        }
        Host::Unix(dir) => {
            let path = dir.join(format!(".s.PGSQL.{}", config.port));
            send_cancel(&CancelAddr::Unix(path), timeout, backend, || {}).await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Host names.

/// Every address of `host:port`. An IP literal (bracketed or not) is used as it is, without a
/// lookup. A name goes to the system resolver (`getaddrinfo`, which blocks and would stall every
/// connection on this shard) on a short-lived thread; the answer comes back through a oneshot,
/// and waiting for it is bounded by `deadline` (the thread may outlive it; at most
/// [`MAX_RESOLVER_THREADS`] exist at once).
async fn resolve(host: &str, port: u16, deadline: Instant, timeout: Duration) -> Result<Vec<SocketAddr>, PgError> {
    let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    /// Holds one of the [`MAX_RESOLVER_THREADS`] places until the thread ends (or never started).
    struct Place;
    impl Drop for Place {
        fn drop(&mut self) {
            RESOLVER_THREADS.fetch_sub(1, Ordering::AcqRel);
        }
    }
    if RESOLVER_THREADS.fetch_add(1, Ordering::AcqRel) >= MAX_RESOLVER_THREADS {
        drop(Place);
        return Err(PgError::Io(std::io::Error::other(format!(
            "too many host name lookups in progress (at most {MAX_RESOLVER_THREADS}); cannot resolve {host:?}"
        ))));
    }
    let place = Place;
    let (tx, rx) = futures_channel::oneshot::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("pg-resolve".into())
        .spawn(move || {
            let _place = place;
            let _ = tx.send((name.as_str(), port).to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        })
        .map_err(PgError::Io)?;
    let lookup_failed =
        |e: std::io::Error| PgError::Io(std::io::Error::new(e.kind(), format!("resolving {host:?}: {e}")));
    match monoio::time::timeout_at(deadline, rx).await {
        Err(_) => Err(PgError::Timeout(timeout)),
        Ok(Err(_)) => Err(lookup_failed(std::io::Error::other("the resolver thread ended without an answer"))),
        Ok(Ok(Err(e))) => Err(lookup_failed(e)),
        Ok(Ok(Ok(addrs))) if addrs.is_empty() => {
            Err(lookup_failed(std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses")))
        }
        Ok(Ok(Ok(addrs))) => Ok(addrs),
    }
}

/// Connects to the first of `addrs` that accepts, in order, all within `deadline`. Returns the
/// stream and the address it reached.
async fn connect_tcp(
    addrs: &[SocketAddr],
    deadline: Instant,
    timeout: Duration,
) -> Result<(monoio::net::TcpStream, SocketAddr), PgError> {
    let mut last = None;
    for &addr in addrs {
        match monoio::time::timeout_at(deadline, monoio::net::TcpStream::connect_addr(addr)).await {
            Err(_) => return Err(PgError::Timeout(timeout)),
            Ok(Ok(s)) => return Ok((s, addr)),
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "pg connect failed; trying the next address");
                last = Some(e);
            }
        }
    }
    Err(PgError::Io(
        last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses to connect to")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[monoio::test(timer_enabled = true)]
    async fn ip_literals_skip_the_resolver() {
        let d = Instant::now() + Duration::from_secs(1);
        let t = Duration::from_secs(1);
        let before = RESOLVER_THREADS.load(Ordering::Acquire);
        assert_eq!(resolve("127.0.0.1", 5, d, t).await.unwrap(), vec!["127.0.0.1:5".parse().unwrap()]);
        assert_eq!(resolve("::1", 6, d, t).await.unwrap(), vec!["[::1]:6".parse().unwrap()]);
        assert_eq!(resolve("[::1]", 7, d, t).await.unwrap(), vec!["[::1]:7".parse().unwrap()]);
        assert_eq!(RESOLVER_THREADS.load(Ordering::Acquire), before);
    }

    #[monoio::test(timer_enabled = true)]
    async fn names_resolve_off_the_thread_and_release_their_place() {
        let d = Instant::now() + Duration::from_secs(5);
        let addrs = resolve("localhost", 5432, d, Duration::from_secs(5)).await.unwrap();
        assert!(addrs.iter().any(|a| a.ip().is_loopback() && a.port() == 5432), "{addrs:?}");
        let e = resolve("no-such-host.invalid", 1, d, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(e, PgError::Io(_) | PgError::Timeout(_)), "{e:?}");
    }

    #[monoio::test(timer_enabled = true)]
    async fn every_address_is_tried_in_turn() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let good = listener.local_addr().unwrap();
        // A port nobody listens on (bound, then closed) refuses at once.
        let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let t = Duration::from_secs(5);
        let (_s, reached) = connect_tcp(&[refused, good], Instant::now() + t, t).await.unwrap();
        assert_eq!(reached, good);
        assert!(matches!(connect_tcp(&[refused], Instant::now() + t, t).await, Err(PgError::Io(_))));
    }
}
