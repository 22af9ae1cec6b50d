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
//! the reader's read return, and the tasks end on their own.
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
//! - `NOTIFY`s for this session (after `LISTEN` through [`Connection::simple_query`]) go to a
//!   bounded queue ([`crate::notify`]) that the owner drains with [`Connection::notification`];
//!   overflow drops the oldest and is reported by [`Connection::take_notifications_lost`]. A
//!   notification never completes or disturbs work in flight.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use local_sync::oneshot;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::{backend::Message, frontend};
use postgres_protocol::IsNull;

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

static NEXT_CONN_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

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
    tx: Option<oneshot::Sender<Outcome>>,
    kind: Kind,
    /// For every Parse written in this batch, in order: the cache key of a named one.
    parses: VecDeque<Option<CacheKey>>,
    /// Cached statements this batch executes by name (to drop them if the server says stale).
    used: Vec<CacheKey>,
    columns: Option<Vec<String>>,
    rows: Vec<Row>,
    error: Option<DbError>,
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
    max_in_flight: usize,
    max_queued: usize,
    max_write_bytes: usize,
    /// `NOTIFY`s delivered to this session (bounded; see [`crate::notify`]).
    notifications: RefCell<NotificationQueue>,
    /// Wakes the owner waiting in [`Connection::notification`] (a notification or the close).
    notification_signal: Signal,
}

impl Inner {
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
pub(crate) struct Ticket {
    rx: oneshot::Receiver<Outcome>,
}

impl Ticket {
    pub(crate) async fn outcome(self) -> Outcome {
        match self.rx.await {
            Ok(o) => o,
            Err(_) => Err(Failure::Error(PgError::ConnectionLost)),
        }
    }
}

impl Connection {
    /// Connects, authenticates and starts the writer and reader tasks.
    ///
    /// Must run inside a monoio runtime with the timer enabled. The whole of TCP connect,
    /// startup and authentication is bounded by `config.connect_timeout`.
    pub async fn connect(config: &ConnectConfig) -> Result<Connection, PgError> {
        let id = NEXT_CONN_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &config.host {
            Host::Tcp(host) => {
                let addr = format!("{}:{}", host, config.port);
                let stream =
                    match monoio::time::timeout(config.connect_timeout, monoio::net::TcpStream::connect(addr)).await {
                        Ok(s) => s?,
                        Err(_) => return Err(PgError::Timeout(config.connect_timeout)),
                    };
                // Latency matters more than segment count: batches are already coalesced.
                let _ = stream.set_nodelay(true);
                Self::establish(id, stream, config).await
            }
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", config.port));
                let stream =
                    match monoio::time::timeout(config.connect_timeout, monoio::net::UnixStream::connect(path)).await {
                        Ok(s) => s?,
                        Err(_) => return Err(PgError::Timeout(config.connect_timeout)),
                    };
                Self::establish(id, stream, config).await
            }
        }
    }

    async fn establish<S>(id: u64, mut stream: S, config: &ConnectConfig) -> Result<Connection, PgError>
    where
        S: AsyncReadRent + AsyncWriteRent + AsRawFd + Splitable + 'static,
        S::OwnedRead: AsyncReadRent + 'static,
        S::OwnedWrite: AsyncWriteRent + 'static,
    {
        // SAFETY: dup of a valid open descriptor; the result is checked and owned.
        let dup = unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(PgError::Io(std::io::Error::last_os_error()));
        }
        // SAFETY: `dup` is a fresh descriptor owned by nobody else.
        let shutdown_fd = Rc::new(unsafe { OwnedFd::from_raw_fd(dup) });

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
        let started = startup(&mut stream, &mut rbuf, config).await;
        done.set(true);
        let info = match started {
            Ok(info) => info,
            Err(_) if fired.get() => return Err(PgError::Timeout(config.connect_timeout)),
            Err(e) => return Err(e),
        };
        let shutdown_fd = match Rc::try_unwrap(shutdown_fd) {
            Ok(fd) => fd,
            // The watchdog still holds its clone: take another duplicate for ourselves.
            Err(rc) => {
                // SAFETY: as above.
                let d = unsafe { libc::fcntl(rc.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
                if d < 0 {
                    return Err(PgError::Io(std::io::Error::last_os_error()));
                }
                // SAFETY: fresh descriptor.
                unsafe { OwnedFd::from_raw_fd(d) }
            }
        };
        tracing::debug!(conn = id, backend_pid = info.pid, "pg connection established");

        let inner = Rc::new(Inner {
            id,
            state: RefCell::new(State {
                queue: VecDeque::new(),
                in_flight: VecDeque::new(),
                cache: StatementCache::new(config.statement_cache_size),
                closed: false,
            }),
            writer_signal: Signal::default(),
            closed_event: Rc::new(Event::default()),
            shutdown_fd,
            params: RefCell::new(info.params),
            backend_pid: info.pid,
            backend_secret: info.secret,
            max_in_flight: config.max_in_flight.max(1),
            max_queued: config.max_queued.max(1),
            max_write_bytes: config.max_write_bytes.max(1024),
            notifications: RefCell::new(NotificationQueue::new(DEFAULT_NOTIFICATION_CAPACITY)),
            notification_signal: Signal::default(),
        });
        let (r, w) = stream.into_split();
        monoio::spawn(reader_task(inner.clone(), r, rbuf));
        monoio::spawn(writer_task(inner.clone(), w));
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
    pub async fn execute(&self, batch: Batch) -> Result<Vec<StatementResult>, PgError> {
        let ticket = self.submit(Work::Batch(batch)).map_err(|(e, _)| e)?;
        match ticket.outcome().await {
            Ok(Reply::Batch(r)) => Ok(r),
            Ok(Reply::Simple(_)) => Err(PgError::Protocol("reply kind mismatch".into())),
            Err(Failure::NotSent(_)) => Err(PgError::ConnectionLost),
            Err(Failure::Error(e)) => Err(e),
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
        Ok(Ticket { rx })
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

    /// The latest value of a server-reported parameter (`server_version`, `TimeZone`, ...).
    pub fn parameter(&self, name: &str) -> Option<String> {
        self.inner.params.borrow().get(name).cloned()
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

    let password = || {
        cfg.password
            .as_deref()
            .ok_or_else(|| PgError::Auth("the server requires a password but none was configured".into()))
    };
    let mut scram: Option<ScramSha256> = None;
    let mut scram_done = false;
    let mut info = StartupInfo { params: HashMap::new(), pid: 0, secret: 0 };
    loop {
        let msg = read_message(stream, rbuf).await?;
        w.clear();
        match msg {
            Message::AuthenticationOk => {
                if scram.is_some() && !scram_done {
                    return Err(PgError::Auth("server skipped the SCRAM final message".into()));
                }
            }
            Message::AuthenticationCleartextPassword => {
                frontend::password_message(password()?.as_bytes(), &mut w)?;
                w = write_buf(stream, w).await?;
            }
            Message::AuthenticationMd5Password(body) => {
                let hash = postgres_protocol::authentication::md5_hash(
                    cfg.user.as_bytes(),
                    password()?.as_bytes(),
                    body.salt(),
                );
                frontend::password_message(hash.as_bytes(), &mut w)?;
                w = write_buf(stream, w).await?;
            }
            Message::AuthenticationSasl(body) => {
                let mut mechs = body.mechanisms();
                let mut has_scram = false;
                while let Some(m) = mechs.next()? {
                    has_scram |= m == sasl::SCRAM_SHA_256;
                }
                if !has_scram {
                    return Err(PgError::Auth("server offers no supported SASL mechanism (need SCRAM-SHA-256)".into()));
                }
                let s = ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(sasl::SCRAM_SHA_256, s.message(), &mut w)?;
                scram = Some(s);
                w = write_buf(stream, w).await?;
            }
            Message::AuthenticationSaslContinue(body) => {
                let s = scram.as_mut().ok_or_else(|| PgError::Protocol("SASL continue without SASL start".into()))?;
                s.update(body.data()).map_err(|e| PgError::Auth(format!("SCRAM: {e}")))?;
                frontend::sasl_response(s.message(), &mut w)?;
                w = write_buf(stream, w).await?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let s = scram.as_mut().ok_or_else(|| PgError::Protocol("SASL final without SASL start".into()))?;
                s.finish(body.data()).map_err(|e| PgError::Auth(format!("SCRAM server proof invalid: {e}")))?;
                scram_done = true;
            }
            Message::AuthenticationGss
            | Message::AuthenticationSspi
            | Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential
            | Message::AuthenticationGssContinue(_) => {
                return Err(PgError::Auth("unsupported authentication method (GSS/SSPI/Kerberos/SCM)".into()))
            }
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
            _ => return Err(PgError::Protocol("unexpected message during startup".into())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writer.

async fn writer_task<W: AsyncWriteRent>(inner: Rc<Inner>, mut w: W) {
    let mut buf = BytesMut::with_capacity(inner.max_write_bytes);
    loop {
        let written = {
            let mut st = inner.state.borrow_mut();
            if st.closed {
                break;
            }
            let st = &mut *st;
            let mut written = 0usize;
            while st.in_flight.len() < inner.max_in_flight && buf.len() < inner.max_write_bytes {
                let Some(q) = st.queue.pop_front() else { break };
                if q.tx.is_closed() {
                    // The caller went away before we wrote it: never send it.
                    tracing::trace!(conn = inner.id, "skipping cancelled request");
                    continue;
                }
                let start = buf.len();
                match encode(&q.work, &mut st.cache, &mut buf) {
                    Ok((kind, parses, used)) => {
                        st.in_flight.push_back(InFlight {
                            tx: Some(q.tx),
                            kind,
                            parses,
                            used,
                            columns: None,
                            rows: Vec::new(),
                            error: None,
                        });
                        written += 1;
                    }
                    Err((e, parses)) => {
                        buf.truncate(start);
                        for k in parses.into_iter().flatten() {
                            st.cache.forget_pending(&k);
                        }
                        let _ = q.tx.send(Err(Failure::Error(e)));
                    }
                }
            }
            written
        };
        if buf.is_empty() {
            if written == 0 {
                inner.writer_signal.wait().await;
            }
            continue;
        }
        let out = std::mem::take(&mut buf);
        let (res, mut out) = w.write_all(out).await;
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

async fn reader_task<R: AsyncReadRent>(inner: Rc<Inner>, mut r: R, mut buf: BytesMut) {
    // Whether `buf` shares an allocation that a large message made.
    let mut holds_large = false;
    let reason = loop {
        loop {
            let msg = match Message::parse(&mut buf) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(conn = inner.id, error = %e, "pg protocol decode error");
                    inner.close("decode error");
                    return;
                }
            };
            if let Err(e) = dispatch(&inner, msg) {
                tracing::warn!(conn = inner.id, error = %e, "pg protocol error");
                inner.close("protocol error");
                return;
            }
        }
        if inner.state.borrow().closed {
            // Closed by the owner or the writer: keep nothing in flight.
            break "closed";
        }
        holds_large |= buf.capacity() > LARGE_READ_BUFFER;
        if holds_large && buf.is_empty() {
            // The large message is parsed (its bytes live on only in its result, and the rest of
            // this buffer would still pin the allocation): let the allocation go with it.
            buf = BytesMut::with_capacity(READ_CHUNK);
            holds_large = false;
        }
        let b = std::mem::take(&mut buf);
        match fill(&mut r, b).await {
            Ok(b) => buf = b,
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

fn dispatch(inner: &Inner, msg: Message) -> Result<(), PgError> {
    // Asynchronous messages may arrive at any time.
    match msg {
        Message::ParameterStatus(body) => {
            inner.params.borrow_mut().insert(body.name()?.to_string(), body.value()?.to_string());
            return Ok(());
        }
        Message::NoticeResponse(body) => {
            let n = DbError::parse(body.fields())?;
            tracing::debug!(conn = inner.id, severity = %n.severity, code = %n.code, message = %n.message, "pg notice");
            return Ok(());
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
            return Ok(());
        }
        _ => {}
    }
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
        Message::ReadyForQuery(_) => {
            let Some(f) = st.in_flight.pop_front() else {
                return Err(PgError::Protocol("ReadyForQuery with nothing in flight".into()));
            };
            // Parses the server skipped never happened: forget them.
            for k in f.parses.iter().flatten() {
                st.cache.forget_pending(k);
            }
            if let Some(e) = &f.error {
                // 26000: statement missing; 0A000 "cached plan must not change result type".
                if e.code == "26000" || (e.code == "0A000" && e.message.contains("cached plan")) {
                    for k in &f.used {
                        st.cache.invalidate(k);
                    }
                }
            }
            let outcome = match (f.error, f.kind) {
                (Some(e), _) => Err(Failure::Error(PgError::Db(Box::new(e)))),
                (None, Kind::Batch { results, .. }) => Ok(Reply::Batch(results)),
                (None, Kind::Simple { results }) => Ok(Reply::Simple(results)),
            };
            if let Some(tx) = f.tx {
                // A caller that went away after the write simply doesn't get it.
                let _ = tx.send(outcome);
            }
            if !st.queue.is_empty() {
                inner.writer_signal.notify();
            }
        }
        Message::CopyInResponse(_) | Message::CopyOutResponse(_) => {
            return Err(PgError::Protocol("COPY is not supported on pipelined connections".into()));
        }
        _ => return Err(PgError::Protocol("unexpected message from server".into())),
    }
    Ok(())
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

/// Sends a CancelRequest for the backend (best effort; used by callers that time out).
pub async fn cancel(config: &ConnectConfig, backend: (i32, i32)) -> Result<(), PgError> {
    let mut buf = BytesMut::new();
    frontend::cancel_request(backend.0, backend.1, &mut buf);
    match &config.host {
        Host::Tcp(h) => {
            let mut s = monoio::time::timeout(
                config.connect_timeout,
                monoio::net::TcpStream::connect(format!("{h}:{}", config.port)),
            )
            .await
            .map_err(|_| PgError::Timeout(config.connect_timeout))??;
            let (r, _) = s.write_all(buf).await;
            r?;
        }
        Host::Unix(dir) => {
            let mut s = monoio::time::timeout(
                config.connect_timeout,
                monoio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{}", config.port))),
            )
            .await
            .map_err(|_| PgError::Timeout(config.connect_timeout))??;
            let (r, _) = s.write_all(buf).await;
            r?;
        }
    }
    Ok(())
}
