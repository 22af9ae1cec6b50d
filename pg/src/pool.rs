//! A per-shard pool of pipelined connections.
//!
//! Owns N [`Connection`]s to one database for one shard (it is `!Send`: `Rc`, no locks), a
//! supervisor task per connection slot that connects, watches the connection and reconnects
//! with bounded, jittered exponential backoff, and request dispatch.
//!
//! Invariants:
//! - every request is bounded in time (`request_timeout`) and in space (`max_queued` batches
//!   waiting pool-wide, `max_in_flight` written per connection); over the queue bound → `Busy`;
//! - while no connection is healthy a request waits at most `connect_wait` for one to come up,
//!   then fails with `Unavailable { retry_after }` — it never hangs;
//! - a batch the pool never wrote (its connection died first, or stalled: see below) is
//!   re-dispatched to a healthy connection; a batch that was written and whose connection died
//!   fails with `ConnectionLost` (it may have committed) and is never re-run;
//! - a dropped `execute` future (the caller went away, or `request_timeout` fired) cancels its
//!   batch: unwritten, it is never sent; written, its connection sends PostgreSQL a
//!   CancelRequest once it is the head of that connection's pipeline (see [`Connection`]);
//! - a batch that failed only because a cancel meant for an earlier batch hit it rolled back as
//!   a whole and is re-dispatched like an unwritten one (bounded by the cancels sent);
//! - new work avoids a stalled connection (its oldest in-flight batch running longer than
//!   `stalled_after`) whenever a healthy one that is not stalled exists;
//! - a slow batch holds up only the batches written behind it before its connection was seen to
//!   stall (those that arrived within `stalled_after` of it reaching the head) or while no other
//!   connection was free; at most `max_in_flight - 1`. Once stalled, while the pool has a healthy
//!   connection that is not stalled, the connection writes nothing more and hands every batch
//!   queued on it back, unwritten, to be dispatched again (counted in `moved_off_stalled`). With
//!   none (one connection, or all stalled) it keeps its queue and writes it as before, so work
//!   never bounces between connections; the queue moves within `stalled_after` of another
//!   connection freeing up or coming back;
//! - a dead connection is replaced, never silently revived; the pool stops its supervisors and
//!   closes its connections when dropped.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Duration;

use monoio::time::Instant;
use rand::Rng;

use crate::batch::{Batch, StatementResult};
use crate::config::ConnectConfig;
use crate::connection::{
    Connection, ConnectionStats, Counters, Event, Failure, Lanes, Reply, Shared, StallWatch, Work,
};
use crate::error::PgError;

/// Pool settings; every field has a default (see [`PoolConfig::new`]).
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// How to connect (also carries the per-connection bounds `max_in_flight`, `max_queued`,
    /// `statement_cache_size`, `connect_timeout`).
    pub connect: ConnectConfig,
    /// Connections in this pool (default 2).
    pub connections: usize,
    /// Pool-wide bound on batches queued but not yet written (default 4096); full → `Busy`.
    pub max_queued: usize,
    /// Bound on one request from `execute` to its result (default 30 s) → `Timeout`.
    pub request_timeout: Duration,
    /// How long a request waits for a connection when none is healthy (default 1 s) →
    /// `Unavailable`.
    pub connect_wait: Duration,
    /// First reconnect delay (default 50 ms); doubles per failed attempt, ±50 % jitter.
    pub backoff_initial: Duration,
    /// Largest reconnect delay (default 2 s).
    pub backoff_max: Duration,
    /// A connection whose oldest in-flight batch has run this long is stalled: while another
    /// connection is not, new work goes there and the stalled one hands its unwritten queue
    /// over to be dispatched again (default 100 ms). Batches written behind a slow statement
    /// before it counts as stalled still wait for it: a smaller value leaves fewer there.
    pub stalled_after: Duration,
}

impl PoolConfig {
    /// Defaults around a connect config.
    pub fn new(connect: ConnectConfig) -> Self {
        PoolConfig {
            connect,
            connections: 2,
            max_queued: 4096,
            request_timeout: Duration::from_secs(30),
            connect_wait: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            stalled_after: Duration::from_millis(100),
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Configured connections.
    pub connections: usize,
    /// Connections currently healthy.
    pub connections_up: usize,
    /// Batches written and awaiting results.
    pub in_flight: usize,
    /// Batches queued, not yet written.
    pub queued: usize,
    /// Successful connects since the pool started (first connects included).
    pub connects: u64,
    /// Failed connect attempts since the pool started.
    pub connect_failures: u64,
    /// CancelRequests sent for batches whose caller timed out or went away, or whose result
    /// passed `max_result_bytes`.
    pub cancels_sent: u64,
    /// Batches hit by a cancel meant for an earlier batch, rolled back and run again.
    pub retried_after_stray_cancel: u64,
    /// Batches failed with `PgError::ResultTooLarge`.
    pub results_too_large: u64,
    /// Batches queued on a connection whose head stalled, handed back unwritten and dispatched
    /// again to a connection that was not stalled.
    pub moved_off_stalled: u64,
}

struct Slot {
    conn: Option<Rc<Connection>>,
    next_attempt: Option<Instant>,
}

struct Inner {
    config: PoolConfig,
    slots: RefCell<Vec<Slot>>,
    rr: Cell<usize>,
    closed: Cell<bool>,
    /// Notified whenever a connection comes up or the pool closes.
    changed: Rc<Event>,
    connects: Cell<u64>,
    connect_failures: Cell<u64>,
    /// Shared by every connection the pool opens, so they outlive reconnects.
    counters: Rc<Counters>,
}

/// A per-shard pool. Create it inside the shard's monoio runtime (timer enabled).
pub struct Pool {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("stats", &self.stats()).finish()
    }
}

impl Pool {
    /// Creates the pool and starts connecting every slot in the background.
    pub fn new(config: PoolConfig) -> Pool {
        let n = config.connections.max(1);
        let inner = Rc::new(Inner {
            slots: RefCell::new((0..n).map(|_| Slot { conn: None, next_attempt: None }).collect()),
            config,
            rr: Cell::new(0),
            closed: Cell::new(false),
            changed: Rc::new(Event::default()),
            connects: Cell::new(0),
            connect_failures: Cell::new(0),
            counters: Rc::new(Counters::default()),
        });
        for i in 0..n {
            monoio::spawn(supervise(inner.clone(), i));
        }
        Pool { inner }
    }

    /// Creates the pool and waits (bounded by `timeout`) until at least one connection is up.
    pub async fn connect(config: PoolConfig, timeout: Duration) -> Result<Pool, PgError> {
        let pool = Pool::new(config);
        pool.wait_ready(timeout).await?;
        Ok(pool)
    }

    /// Waits until at least one connection is up (bounded), else `Unavailable`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), PgError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.inner.closed.get() {
                return Err(PgError::Closed);
            }
            let listener = self.inner.changed.listen();
            if self.stats().connections_up > 0 {
                return Ok(());
            }
            if monoio::time::timeout_at(deadline, listener).await.is_err() {
                return Err(PgError::Unavailable { retry_after: self.retry_after() });
            }
        }
    }

    /// Runs one batch (one transaction, one Sync) on the least-loaded healthy connection.
    ///
    /// Errors: `Db` (server error; the batch rolled back), `Unavailable` (no healthy
    /// connection), `Busy` (queue full), `Timeout`, `ConnectionLost` (written, then the
    /// connection died: outcome unknown), `Closed`.
    pub async fn execute(&self, batch: Batch) -> Result<Vec<StatementResult>, PgError> {
        match self.run(Work::Batch(batch)).await? {
            Reply::Batch(r) => Ok(r),
            Reply::Simple(_) => Err(PgError::Protocol("reply kind mismatch".into())),
        }
    }

    /// Runs multi-statement SQL with the simple protocol on one pooled connection.
    pub async fn simple_query(&self, sql: &str) -> Result<Vec<crate::batch::SimpleResult>, PgError> {
        match self.run(Work::Simple(sql.to_string())).await? {
            Reply::Simple(r) => Ok(r),
            Reply::Batch(_) => Err(PgError::Protocol("reply kind mismatch".into())),
        }
    }

    async fn run(&self, mut work: Work) -> Result<Reply, PgError> {
        let timeout = self.inner.config.request_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            if self.inner.closed.get() {
                return Err(PgError::Closed);
            }
            let conn = match self.pick() {
                Some(c) => c,
                None => {
                    // Wait (bounded) for a connection to come up, then fail fast.
                    let wait_until = deadline.min(Instant::now() + self.inner.config.connect_wait);
                    let listener = self.inner.changed.listen();
                    if self.pick().is_none() {
                        if monoio::time::timeout_at(wait_until, listener).await.is_err() {
                            return Err(PgError::Unavailable { retry_after: self.retry_after() });
                        }
                        continue;
                    }
                    continue;
                }
            };
            if self.queued() >= self.inner.config.max_queued {
                return Err(PgError::Busy);
            }
            let ticket = match conn.submit(work) {
                Ok(t) => t,
                Err((PgError::ConnectionLost, w)) => {
                    work = w;
                    continue;
                }
                Err((e, _)) => return Err(e),
            };
            drop(conn);
            match monoio::time::timeout_at(deadline, ticket.outcome()).await {
                Err(_) => {
                    tracing::debug!(?timeout, "pg request timed out");
                    return Err(PgError::Timeout(timeout));
                }
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(Failure::Error(e))) => return Err(e),
                Ok(Err(Failure::NotSent(w))) => {
                    // Its connection died or stalled before writing it, or it rolled back under
                    // a cancel meant for another batch: safe to run again (on the least-loaded
                    // healthy connection that is not stalled).
                    work = w;
                }
            }
        }
    }

    /// The healthy connection with the least queued + in-flight work (round-robin on ties),
    /// skipping stalled ones (head batch running longer than `stalled_after`) unless all are.
    /// Reads no clock: each connection keeps its stalled flag up to date.
    fn pick(&self) -> Option<Rc<Connection>> {
        let slots = self.inner.slots.borrow();
        let n = slots.len();
        let start = self.inner.rr.get();
        self.inner.rr.set(start.wrapping_add(1));
        // Ordered by (stalled, load): any connection that is not stalled beats every stalled one
        // (the same test `Lanes::open_lane_besides` makes, so work handed back goes elsewhere).
        let mut best: Option<((bool, usize), &Rc<Connection>)> = None;
        for i in 0..n {
            let slot = &slots[(start + i) % n];
            let Some(c) = slot.conn.as_ref() else { continue };
            let Some(lane) = c.lane() else { continue };
            let key = (lane.stalled, lane.load);
            if best.is_none_or(|(k, _)| key < k) {
                best = Some((key, c));
            }
        }
        best.map(|(_, c)| c.clone())
    }

    fn queued(&self) -> usize {
        self.inner.slots.borrow().iter().filter_map(|s| s.conn.as_ref()).map(|c| c.queued()).sum()
    }

    fn retry_after(&self) -> Duration {
        let now = Instant::now();
        let soonest = self
            .inner
            .slots
            .borrow()
            .iter()
            .filter_map(|s| s.next_attempt)
            .map(|t| t.saturating_duration_since(now))
            .min();
        soonest
            .unwrap_or(self.inner.config.backoff_initial)
            .clamp(Duration::from_millis(100), self.inner.config.backoff_max.max(Duration::from_millis(100)))
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        let slots = self.inner.slots.borrow();
        let ConnectionStats { cancels_sent, retried_after_stray_cancel, results_too_large, moved_off_stalled } =
            self.inner.counters.snapshot();
        let mut s = PoolStats {
            connections: slots.len(),
            connects: self.inner.connects.get(),
            connect_failures: self.inner.connect_failures.get(),
            cancels_sent,
            retried_after_stray_cancel,
            results_too_large,
            moved_off_stalled,
            ..PoolStats::default()
        };
        for c in slots.iter().filter_map(|s| s.conn.as_ref()).filter(|c| !c.is_closed()) {
            s.connections_up += 1;
            s.in_flight += c.in_flight();
            s.queued += c.queued();
        }
        s
    }

    /// Stops reconnecting and closes every connection (waiting requests are answered).
    pub fn close(&self) {
        if self.inner.closed.replace(true) {
            return;
        }
        let conns: Vec<Rc<Connection>> =
            self.inner.slots.borrow_mut().iter_mut().filter_map(|s| s.conn.take()).collect();
        for c in conns {
            c.close();
        }
        self.inner.changed.notify();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.close();
    }
}

impl Lanes for Inner {
    fn open_lane_besides(&self, conn: u64) -> bool {
        let slots = self.slots.borrow();
        let mut others = slots.iter().filter_map(|s| s.conn.as_ref()).filter(|c| c.id() != conn);
        others.any(|c| c.lane().is_some_and(|lane| !lane.stalled))
    }
}

fn backoff(config: &PoolConfig, failures: u32) -> Duration {
    let base = config.backoff_initial.max(Duration::from_millis(1));
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(config.backoff_max);
    let jitter = rand::thread_rng().gen_range(0.5..1.5);
    exp.mul_f64(jitter).min(config.backoff_max)
}

async fn supervise(inner: Rc<Inner>, slot: usize) {
    let mut failures: u32 = 0;
    loop {
        if inner.closed.get() {
            return;
        }
        let shared = Shared {
            counters: inner.counters.clone(),
            stall: Some(StallWatch {
                after: inner.config.stalled_after,
                lanes: Rc::downgrade(&inner) as Weak<dyn Lanes>,
            }),
        };
        match Connection::connect_with(&inner.config.connect, shared).await {
            Ok(conn) => {
                if inner.closed.get() {
                    conn.close();
                    return;
                }
                inner.connects.set(inner.connects.get() + 1);
                let conn = Rc::new(conn);
                if let Some(s) = inner.slots.borrow_mut().get_mut(slot) {
                    s.conn = Some(conn.clone());
                    s.next_attempt = None;
                }
                tracing::info!(slot, conn = conn.id(), backend_pid = conn.backend_key().0, "pg pool connection up");
                inner.changed.notify();
                conn.closed().await;
                if let Some(s) = inner.slots.borrow_mut().get_mut(slot) {
                    s.conn = None;
                }
                if inner.closed.get() {
                    return;
                }
                tracing::warn!(slot, conn = conn.id(), "pg pool connection lost; reconnecting");
                failures = 1;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                inner.connect_failures.set(inner.connect_failures.get() + 1);
                tracing::warn!(slot, attempt = failures, error = %e, "pg pool connect failed");
            }
        }
        let delay = backoff(&inner.config, failures);
        if let Some(s) = inner.slots.borrow_mut().get_mut(slot) {
            s.next_attempt = Some(Instant::now() + delay);
        }
        // Sleep, but wake early when the pool closes (timers may be dropped freely).
        let listener = inner.changed.listen();
        let _ = monoio::time::timeout(delay, async {
            let mut l = listener;
            loop {
                (&mut l).await;
                if inner.closed.get() {
                    return;
                }
                l = inner.changed.listen();
            }
        })
        .await;
    }
}
