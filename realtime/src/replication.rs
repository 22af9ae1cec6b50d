//! The replication core: one OS thread (`madbase-replication`) holding the one logical
//! replication connection, decoding `pgoutput` into [`ChangeBatch`]es, handing each batch to
//! every shard through a [`BatchSink`] and confirming positions to PostgreSQL only once every
//! shard has taken everything before them.
//!
//! Owns: the replication slot's use (created when missing, never dropped), the session
//! lifecycle (connect, catalog lookups, `START_REPLICATION`, reconnects with backoff), the
//! decoding of one transaction at a time into one batch (values rendered once, by
//! [`crate::render`]), the in-flight window of published batches and the confirmed position,
//! and [`ReplicationStats`].
//!
//! Invariants:
//! - **never confirm what is not taken**: the confirmed position is the end LSN of the longest
//!   prefix of published batches that every shard has taken (or, with nothing in flight and no
//!   transaction open, the server's sent position from a keepalive: everything before it was
//!   already received and handled). It only moves forward;
//! - **no loss, no duplicates**: after any error the core reconnects and streams again from
//!   the confirmed position; PostgreSQL then resends every transaction it was not told about,
//!   and the core skips each one whose commit ends at or before the last one it already
//!   published. Batches published before the error stay in flight and are confirmed as the
//!   shards take them;
//! - batches are published in commit order, one per transaction (`Begin`..`Commit`), each
//!   exactly once; a batch's changes are in the transaction's order;
//! - bounded: at most `max_in_flight_batches` batches wait to be taken (past that the core
//!   stops reading, so PostgreSQL holds the rest), at most `max_transaction_changes` changes
//!   and messages are kept per transaction (the rest are dropped, counted and logged with the
//!   transaction's id), and no server message larger than `max_message_bytes` is read.
//!
//! Why this shape: one thread with blocking sockets and read timeouts is the simplest thing that
//! keeps a single ordered stream, answers the server's keepalives on time and stops within a
//! second; the shards never wait for it and it never touches a shard's state — the only shared
//! things are the immutable batches (`Arc`), their acknowledgement counters and the stats
//! atomics. Catalog facts pgoutput does not carry (type names, row level security, the primary
//! key) come from a second, ordinary connection on the same thread, looked up when a Relation
//! message arrives (once per table per session, and after every change of its shape).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use madbase_pg::replication::{pg_now_micros, quote_ident, quote_literal, ReplicationStream};
use madbase_pg::{BlockingConnection, ConnectConfig, ReplicationError, SessionMode, StreamMessage};

use crate::changes::{
    lsn_text, parse_lsn, BatchSink, Change, ChangeBatch, ChangeKind, Column, DbMessage, Lsn, Relation, ReplicaIdentity,
    Row,
};
use crate::pgoutput::{self, DecodeError, OldTuple, PgOutputMessage, RelationColumn, TupleValue};
use crate::render::{self, ScalarKind, ValueType};

/// The publication Supabase's `postgres_changes` streams.
pub const DEFAULT_PUBLICATION: &str = "supabase_realtime";
/// The publication of `realtime.messages` (broadcast from the database).
pub const MESSAGES_PUBLICATION: &str = "supabase_realtime_messages_publication";
/// The default slot.
pub const DEFAULT_SLOT: &str = "madbase_realtime";

/// Settings of the replication core.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// Where to connect (a role with `REPLICATION` that can read the catalogs).
    pub connect: ConnectConfig,
    /// The logical replication slot (default `madbase_realtime`; created with `pgoutput` when
    /// missing).
    pub slot: String,
    /// Publications to stream (default `supabase_realtime` and
    /// `supabase_realtime_messages_publication`). MadBase never adds tables to them; missing
    /// ones are logged and skipped, and with none at all the core waits and retries.
    pub publications: Vec<String>,
    /// How often the core tells the server its positions (default 1 s).
    pub status_interval: Duration,
    /// First wait before reconnecting (default 100 ms), doubled after each failure...
    pub backoff_initial: Duration,
    /// ...up to this (default 5 s).
    pub backoff_max: Duration,
    /// Bound on one message from the server (default 64 MiB): a larger one fails the session.
    pub max_message_bytes: usize,
    /// Bound on the changes (and database messages) kept from one transaction (default
    /// 100,000); the rest are dropped and counted.
    pub max_transaction_changes: usize,
    /// Bound on published batches not yet taken by every shard (default 4096); past it the
    /// core stops reading until the shards catch up.
    pub max_in_flight_batches: usize,
    /// How often the row level security flag and primary key of the tables seen are read again
    /// (default 2 s): pgoutput sends no Relation message when only those change
    /// (`ALTER TABLE … ENABLE ROW LEVEL SECURITY`), so this bounds how long a change can carry
    /// a stale `rls_enabled`.
    pub catalog_refresh_interval: Duration,
}

impl ReplicationConfig {
    /// The defaults, connecting with `connect`.
    pub fn new(connect: ConnectConfig) -> ReplicationConfig {
        ReplicationConfig {
            connect,
            slot: DEFAULT_SLOT.to_string(),
            publications: vec![DEFAULT_PUBLICATION.to_string(), MESSAGES_PUBLICATION.to_string()],
            status_interval: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_message_bytes: 64 * 1024 * 1024,
            max_transaction_changes: 100_000,
            max_in_flight_batches: 4096,
            catalog_refresh_interval: Duration::from_secs(2),
        }
    }
}

/// What the core reports (for `/metrics`, `/health` and tests). Written by the core's thread
/// only; read by anyone.
#[derive(Debug, Default)]
pub struct ReplicationStats {
    connected: AtomicBool,
    received_lsn: AtomicU64,
    confirmed_lsn: AtomicU64,
    server_wal_end: AtomicU64,
    reconnects: AtomicU64,
    transactions: AtomicU64,
    transactions_skipped: AtomicU64,
    changes: AtomicU64,
    messages: AtomicU64,
    changes_dropped: AtomicU64,
    truncates: AtomicU64,
    in_flight: AtomicU64,
    last_error: Mutex<String>,
}

impl ReplicationStats {
    /// Streaming right now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    /// The last position received from the server.
    pub fn received_lsn(&self) -> Lsn {
        self.received_lsn.load(Ordering::Relaxed)
    }
    /// The position confirmed to the server (everything before it was taken by every shard).
    pub fn confirmed_lsn(&self) -> Lsn {
        self.confirmed_lsn.load(Ordering::Relaxed)
    }
    /// The server's end of WAL as last reported.
    pub fn server_wal_end(&self) -> Lsn {
        self.server_wal_end.load(Ordering::Relaxed)
    }
    /// Bytes of WAL the slot holds back: server end − confirmed.
    pub fn lag_bytes(&self) -> u64 {
        self.server_wal_end().saturating_sub(self.confirmed_lsn())
    }
    /// Sessions that ended in an error.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }
    /// Transactions published (batches, empty ones included).
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }
    /// Transactions received again after a reconnect and skipped (already published).
    pub fn transactions_skipped(&self) -> u64 {
        self.transactions_skipped.load(Ordering::Relaxed)
    }
    /// Row changes published.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }
    /// `realtime.messages` rows published.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }
    /// Changes dropped for `max_transaction_changes`.
    pub fn changes_dropped(&self) -> u64 {
        self.changes_dropped.load(Ordering::Relaxed)
    }
    /// Truncates seen (not delivered, as in Supabase).
    pub fn truncates(&self) -> u64 {
        self.truncates.load(Ordering::Relaxed)
    }
    /// Batches published and not yet taken by every shard.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
    /// The last error's text (empty if none yet).
    pub fn last_error(&self) -> String {
        self.last_error.lock().map(|e| e.clone()).unwrap_or_default()
    }

    fn set_error(&self, text: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = text;
        }
    }
}

/// The running core.
#[derive(Debug)]
pub struct ReplicationHandle {
    /// Live statistics.
    pub stats: Arc<ReplicationStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ReplicationHandle {
    /// Asks the core to stop: it sends a final status update and exits within about a second.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Waits for the thread to exit (call [`ReplicationHandle::stop`] first).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the replication core panicked");
            }
        }
    }
}

impl Drop for ReplicationHandle {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop();
            let _ = t.join();
        }
    }
}

/// Starts the core on its own thread (`madbase-replication`).
pub fn start(config: ReplicationConfig, sink: Box<dyn BatchSink>) -> std::io::Result<ReplicationHandle> {
    let stats = Arc::new(ReplicationStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut core = Core::new(config, sink, stats.clone(), stop.clone());
    let thread = std::thread::Builder::new().name("madbase-replication".into()).spawn(move || core.run())?;
    Ok(ReplicationHandle { stats, stop, thread: Some(thread) })
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum CoreError {
    #[error(transparent)]
    Pg(#[from] ReplicationError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("none of the publications {0:?} exists (create one: CREATE PUBLICATION supabase_realtime FOR TABLE …)")]
    NoPublication(Vec<String>),
    #[error("replication slot {slot:?} exists with {problem}")]
    Slot { slot: String, problem: String },
    #[error("replication stream out of order: {0}")]
    Stream(String),
}

/// What the core knows of one relation beyond the contract's [`Relation`].
struct RelationInfo {
    relation: Arc<Relation>,
    /// How each column renders.
    types: Vec<ValueType>,
    /// Indexes of `realtime.messages`' columns, when this is that table (or a partition).
    messages: Option<MessageColumns>,
}

#[derive(Clone, Copy)]
struct MessageColumns {
    id: Option<usize>,
    topic: Option<usize>,
    event: Option<usize>,
    payload: Option<usize>,
    private: Option<usize>,
    extension: Option<usize>,
}

/// The transaction being decoded.
struct Txn {
    xid: u32,
    final_lsn: Lsn,
    /// Already published before a reconnect: decode nothing.
    skip: bool,
    changes: Vec<Change>,
    messages: Vec<DbMessage>,
    dropped: u64,
}

impl Txn {
    fn kept(&self) -> usize {
        self.changes.len() + self.messages.len()
    }
}

struct Core {
    config: ReplicationConfig,
    sink: Box<dyn BatchSink>,
    stats: Arc<ReplicationStats>,
    stop: Arc<AtomicBool>,
    /// Everything before it was taken by every shard and told to the server (monotonic).
    confirmed: Lsn,
    /// The end of the last transaction published (or known handled): a resent transaction
    /// ending at or before it is skipped.
    published_through: Lsn,
    received: Lsn,
    in_flight: VecDeque<Arc<ChangeBatch>>,
    relations: HashMap<u32, RelationInfo>,
    txn: Option<Txn>,
}

impl Core {
    fn new(
        config: ReplicationConfig,
        sink: Box<dyn BatchSink>,
        stats: Arc<ReplicationStats>,
        stop: Arc<AtomicBool>,
    ) -> Core {
        Core {
            config,
            sink,
            stats,
            stop,
            confirmed: 0,
            published_through: 0,
            received: 0,
            in_flight: VecDeque::new(),
            relations: HashMap::new(),
            txn: None,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn run(&mut self) {
        let mut backoff = self.config.backoff_initial;
        while !self.stopping() {
            let mut streamed = false;
            match self.session(&mut streamed) {
                Ok(()) => break,
                Err(e) => {
                    self.stats.connected.store(false, Ordering::Relaxed);
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    self.stats.set_error(e.to_string());
                    self.txn = None;
                    if streamed {
                        backoff = self.config.backoff_initial;
                    }
                    tracing::warn!(error = %e, retry_in = ?backoff, slot = %self.config.slot, "replication session ended");
                    self.sleep(backoff);
                    backoff = (backoff * 2).min(self.config.backoff_max);
                }
            }
        }
        self.stats.connected.store(false, Ordering::Relaxed);
        tracing::info!(confirmed = %lsn_text(self.confirmed), "replication core stopped");
    }

    /// Sleeps up to `d`, returning early when asked to stop.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopping() {
            let now = Instant::now();
            if now >= until {
                return;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
    }

    fn connect_config(&self, purpose: &str) -> ConnectConfig {
        let mut c = self.config.connect.clone();
        c.application_name = Some(format!("madbase realtime {purpose}"));
        c
    }

    /// One session: connect, prepare, stream until an error or a stop (`Ok`).
    fn session(&mut self, streamed: &mut bool) -> Result<(), CoreError> {
        let max = self.config.max_message_bytes;
        let mut catalog = BlockingConnection::connect(&self.connect_config("catalog"), SessionMode::Normal, max)?;
        let publications = self.existing_publications(&mut catalog)?;
        let mut repl = BlockingConnection::connect(&self.connect_config("replication"), SessionMode::Replication, max)?;
        let system = repl.identify_system()?;
        self.stats.server_wal_end.fetch_max(system.xlogpos, Ordering::Relaxed);
        self.ensure_slot(&mut catalog, &mut repl)?;
        self.published_through = self.published_through.max(self.confirmed);

        let names: Vec<String> = publications.iter().map(|p| quote_ident(p)).collect();
        let names = names.join(",");
        let mut stream = repl.start_logical(
            &self.config.slot,
            self.confirmed,
            &[("proto_version", "1"), ("publication_names", &names)],
        )?;
        tracing::info!(
            slot = %self.config.slot,
            from = %lsn_text(self.confirmed),
            publications = ?publications,
            "replication streaming"
        );
        self.relations.clear();
        self.txn = None;
        self.stats.connected.store(true, Ordering::Relaxed);
        *streamed = true;
        let result = self.stream(&mut stream, &mut catalog);
        if result.is_ok() {
            stream.close();
            catalog.close();
        }
        result
    }

    fn existing_publications(&self, catalog: &mut BlockingConnection) -> Result<Vec<String>, CoreError> {
        let list: Vec<String> = self.config.publications.iter().map(|p| quote_literal(p)).collect();
        let sql = format!("select pubname from pg_publication where pubname in ({})", list.join(","));
        let found = catalog.simple_query(&sql)?;
        let found: Vec<String> = found
            .first()
            .map(|r| r.rows.iter().filter_map(|row| row.get_str(0).map(str::to_string)).collect())
            .unwrap_or_default();
        let (present, missing): (Vec<String>, Vec<String>) =
            self.config.publications.iter().cloned().partition(|p| found.contains(p));
        if !missing.is_empty() {
            tracing::warn!(
                missing = ?missing,
                streaming = ?present,
                "publication(s) missing: their tables' changes are not streamed (MadBase never creates them; \
                 CREATE PUBLICATION <name> FOR TABLE …)"
            );
        }
        if present.is_empty() {
            return Err(CoreError::NoPublication(self.config.publications.clone()));
        }
        Ok(present)
    }

    /// Creates the slot when it does not exist; checks it is a pgoutput slot of this database.
    /// On the first session, the slot's confirmed position becomes the core's.
    fn ensure_slot(
        &mut self,
        catalog: &mut BlockingConnection,
        repl: &mut BlockingConnection,
    ) -> Result<(), CoreError> {
        let slot = &self.config.slot;
        let sql = format!(
            "select plugin, coalesce(confirmed_flush_lsn::text, ''), database = current_database(), slot_type \
             from pg_replication_slots where slot_name = {}",
            quote_literal(slot)
        );
        let res = catalog.simple_query(&sql)?;
        let row = res.first().and_then(|r| r.rows.first());
        match row {
            None => match repl.create_logical_slot(slot, "pgoutput") {
                Ok(at) => {
                    tracing::info!(slot = %slot, at = %lsn_text(at), "replication slot created");
                    self.confirmed = self.confirmed.max(at);
                }
                // Created by someone else in between: use it.
                Err(e) if e.code() == Some("42710") => {}
                Err(e) => return Err(e.into()),
            },
            Some(row) => {
                let problem = if row.get_str(3) != Some("logical") {
                    Some("another type (physical)".to_string())
                } else if row.get_str(0) != Some("pgoutput") {
                    Some(format!("plugin {:?}, not pgoutput", row.get_str(0).unwrap_or("")))
                } else if row.get_str(2) != Some("t") {
                    Some("another database".to_string())
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(CoreError::Slot { slot: slot.clone(), problem });
                }
                if let Some(lsn) = row.get_str(1).and_then(parse_lsn) {
                    self.confirmed = self.confirmed.max(lsn);
                }
            }
        }
        self.stats.confirmed_lsn.store(self.confirmed, Ordering::Relaxed);
        Ok(())
    }

    fn stream(&mut self, stream: &mut ReplicationStream, catalog: &mut BlockingConnection) -> Result<(), CoreError> {
        let interval = self.config.status_interval;
        let mut last_status = Instant::now();
        let mut last_refresh = Instant::now();
        self.send_status(stream, false)?;
        loop {
            if last_refresh.elapsed() >= self.config.catalog_refresh_interval {
                self.refresh_catalog(catalog)?;
                last_refresh = Instant::now();
            }
            if self.stopping() {
                self.advance();
                self.send_status(stream, false)?;
                return Ok(());
            }
            self.advance();
            if last_status.elapsed() >= interval {
                self.send_status(stream, false)?;
                last_status = Instant::now();
            }
            if self.in_flight.len() >= self.config.max_in_flight_batches {
                // The shards are behind: leave the rest with PostgreSQL until they catch up.
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let wait = interval
                .saturating_sub(last_status.elapsed())
                .clamp(Duration::from_millis(1), Duration::from_millis(100));
            match stream.recv(wait)? {
                None => {}
                Some(StreamMessage::XLogData { start, wal_end, data, .. }) => {
                    self.received = self.received.max(start);
                    self.stats.received_lsn.store(self.received, Ordering::Relaxed);
                    self.stats.server_wal_end.fetch_max(wal_end, Ordering::Relaxed);
                    self.handle(&data, catalog)?;
                }
                Some(StreamMessage::Keepalive { wal_end, reply_requested, .. }) => {
                    self.stats.server_wal_end.fetch_max(wal_end, Ordering::Relaxed);
                    self.received = self.received.max(wal_end);
                    self.stats.received_lsn.store(self.received, Ordering::Relaxed);
                    self.advance();
                    // Idle: every transaction that ended before the server's sent position was
                    // received and is taken, so the slot may move past WAL of unpublished tables.
                    if self.txn.is_none() && self.in_flight.is_empty() && wal_end > self.confirmed {
                        self.confirmed = wal_end;
                        self.published_through = self.published_through.max(wal_end);
                        self.stats.confirmed_lsn.store(self.confirmed, Ordering::Relaxed);
                    }
                    if reply_requested {
                        self.send_status(stream, false)?;
                        last_status = Instant::now();
                    }
                }
            }
        }
    }

    /// Reads row level security and primary keys of every relation seen again; a relation
    /// whose facts changed gets a new `Arc` (batches already built keep theirs).
    fn refresh_catalog(&mut self, catalog: &mut BlockingConnection) -> Result<(), CoreError> {
        if self.relations.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = self.relations.keys().map(u32::to_string).collect();
        let list = list.join(",");
        let sql = format!(
            "select oid, relrowsecurity from pg_class where oid in ({list}); \
             select i.indrelid, a.attname from pg_index i \
               join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey) \
               where i.indrelid in ({list}) and i.indisprimary \
               order by i.indrelid, array_position(i.indkey::int2[], a.attnum)"
        );
        let res = catalog.simple_query(&sql)?;
        let oid_of = |r: &madbase_pg::Row| r.get_str(0).and_then(|s| s.parse::<u32>().ok());
        let mut rls: HashMap<u32, bool> = HashMap::new();
        for row in res.first().map(|r| r.rows.as_slice()).unwrap_or_default() {
            if let Some(oid) = oid_of(row) {
                rls.insert(oid, row.get_str(1) == Some("t"));
            }
        }
        let mut pks: HashMap<u32, Vec<&str>> = HashMap::new();
        for row in res.get(1).map(|r| r.rows.as_slice()).unwrap_or_default() {
            if let (Some(oid), Some(name)) = (oid_of(row), row.get_str(1)) {
                pks.entry(oid).or_default().push(name);
            }
        }
        for (oid, info) in self.relations.iter_mut() {
            let rel = &info.relation;
            let rls_enabled = rls.get(oid).copied().unwrap_or(rel.rls_enabled);
            let primary_key: Vec<usize> = pks
                .get(oid)
                .map(|names| names.iter().filter_map(|n| rel.columns.iter().position(|c| c.name == *n)).collect())
                .unwrap_or_default();
            if rls_enabled != rel.rls_enabled || primary_key != rel.primary_key {
                tracing::debug!(schema = %rel.schema, table = %rel.table, rls_enabled, "relation facts changed");
                let mut changed = Relation::clone(rel);
                changed.rls_enabled = rls_enabled;
                changed.primary_key = primary_key;
                info.relation = Arc::new(changed);
            }
        }
        Ok(())
    }

    fn send_status(&self, stream: &mut ReplicationStream, reply: bool) -> Result<(), CoreError> {
        let write = self.received.max(self.confirmed);
        stream.send_status(write, self.confirmed, self.confirmed, reply)?;
        Ok(())
    }

    /// Moves the confirmed position over every leading batch all shards have taken.
    fn advance(&mut self) {
        while let Some(front) = self.in_flight.front() {
            if !front.is_taken() {
                break;
            }
            debug_assert!(front.end_lsn >= self.confirmed || front.end_lsn <= self.published_through);
            self.confirmed = self.confirmed.max(front.end_lsn);
            self.in_flight.pop_front();
        }
        debug_assert!(self.in_flight.iter().zip(self.in_flight.iter().skip(1)).all(|(a, b)| a.end_lsn < b.end_lsn));
        self.stats.confirmed_lsn.store(self.confirmed, Ordering::Relaxed);
        self.stats.in_flight.store(self.in_flight.len() as u64, Ordering::Relaxed);
    }

    fn handle(&mut self, data: &[u8], catalog: &mut BlockingConnection) -> Result<(), CoreError> {
        match pgoutput::decode(data)? {
            PgOutputMessage::Begin { final_lsn, xid, .. } => {
                if self.txn.is_some() {
                    return Err(CoreError::Stream(format!("Begin of {xid} inside another transaction")));
                }
                // A commit record that starts before the end of one already published ends
                // no later than it: a resent transaction.
                let skip = final_lsn < self.published_through;
                self.txn = Some(Txn { xid, final_lsn, skip, changes: Vec::new(), messages: Vec::new(), dropped: 0 });
            }
            PgOutputMessage::Commit { end_lsn, commit_time, .. } => {
                let txn = self.txn.take().ok_or_else(|| CoreError::Stream("Commit without Begin".into()))?;
                self.commit(txn, end_lsn, commit_time);
            }
            PgOutputMessage::Relation { oid, namespace, name, replica_identity, columns } => {
                let info = describe(catalog, oid, namespace, name, replica_identity, &columns)?;
                self.relations.insert(oid, info);
            }
            PgOutputMessage::Insert { relation, new } => self.change(relation, ChangeKind::Insert, None, Some(&new))?,
            PgOutputMessage::Update { relation, old, new } => {
                self.change(relation, ChangeKind::Update, old.as_ref(), Some(&new))?
            }
            PgOutputMessage::Delete { relation, old } => self.change(relation, ChangeKind::Delete, Some(&old), None)?,
            PgOutputMessage::Truncate { .. } => {
                self.stats.truncates.fetch_add(1, Ordering::Relaxed);
            }
            PgOutputMessage::Origin { .. } | PgOutputMessage::Type { .. } | PgOutputMessage::Message { .. } => {}
        }
        Ok(())
    }

    fn change(
        &mut self,
        relation: u32,
        kind: ChangeKind,
        old: Option<&OldTuple<'_>>,
        new: Option<&Vec<TupleValue<'_>>>,
    ) -> Result<(), CoreError> {
        let txn = self.txn.as_mut().ok_or_else(|| CoreError::Stream("a change outside a transaction".into()))?;
        if txn.skip {
            return Ok(());
        }
        let info = self
            .relations
            .get(&relation)
            .ok_or_else(|| CoreError::Stream(format!("a change of relation {relation} before its Relation message")))?;
        if txn.kept() >= self.config.max_transaction_changes {
            txn.dropped += 1;
            return Ok(());
        }
        let ncols = info.relation.columns.len();
        for tuple in old.map(OldTuple::values).into_iter().chain(new.map(Vec::as_slice)) {
            if tuple.len() != ncols {
                return Err(CoreError::Stream(format!(
                    "a tuple of {} columns for {}.{} ({ncols} columns)",
                    tuple.len(),
                    info.relation.schema,
                    info.relation.table
                )));
            }
        }
        if let Some(cols) = info.messages {
            if let (ChangeKind::Insert, Some(new)) = (kind, new) {
                if let Some(m) = db_message(cols, new) {
                    txn.messages.push(m);
                }
            }
            return Ok(());
        }
        let old_record = old.map(|old| old_row(info, old));
        let record = new.map(|new| {
            let mut row = Row { values: Vec::with_capacity(ncols) };
            for (i, v) in new.iter().enumerate() {
                let value = match v {
                    TupleValue::Unchanged => old_record.as_ref().and_then(|o: &Row| o.values.get(i).cloned().flatten()),
                    v => render_value(info.types[i], v),
                };
                row.values.push(value);
            }
            row
        });
        debug_assert!(record.as_ref().is_none_or(|r| r.values.len() == ncols));
        txn.changes.push(Change { relation: info.relation.clone(), kind, record, old_record });
        Ok(())
    }

    fn commit(&mut self, txn: Txn, end_lsn: Lsn, commit_time: i64) {
        if txn.skip || end_lsn <= self.published_through {
            self.stats.transactions_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if txn.dropped > 0 {
            tracing::warn!(
                xid = txn.xid,
                commit_lsn = %lsn_text(txn.final_lsn),
                kept = txn.kept(),
                dropped = txn.dropped,
                "transaction has more changes than max_transaction_changes: the rest were dropped"
            );
            self.stats.changes_dropped.fetch_add(txn.dropped, Ordering::Relaxed);
        }
        let (nchanges, nmessages) = (txn.changes.len(), txn.messages.len());
        let empty = nchanges == 0 && nmessages == 0;
        let shards = if empty { 0 } else { self.sink.shards() };
        let batch = Arc::new(ChangeBatch::new(
            end_lsn,
            txn.xid,
            commit_timestamp(commit_time),
            txn.changes,
            txn.messages,
            shards,
        ));
        if shards > 0 {
            let missed = self.sink.publish(batch.clone());
            debug_assert!(missed <= shards);
            for _ in 0..missed.min(shards) {
                batch.taken();
            }
        }
        debug_assert!(self.in_flight.back().is_none_or(|b| b.end_lsn < end_lsn));
        self.in_flight.push_back(batch);
        self.published_through = end_lsn;
        self.stats.transactions.fetch_add(1, Ordering::Relaxed);
        self.stats.changes.fetch_add(nchanges as u64, Ordering::Relaxed);
        self.stats.messages.fetch_add(nmessages as u64, Ordering::Relaxed);
    }
}

fn render_value(ty: ValueType, v: &TupleValue<'_>) -> Option<Box<str>> {
    match v {
        TupleValue::Null => Some("null".into()),
        TupleValue::Unchanged => None,
        TupleValue::Text(b) => Some(render::render(ty, &String::from_utf8_lossy(b)).into_boxed_str()),
        // Binary values are never asked for; show them as hex text rather than lose them.
        TupleValue::Binary(b) => {
            let mut hex = String::with_capacity(2 + b.len() * 2);
            hex.push_str("\\x");
            for byte in b.iter() {
                let _ = write!(hex, "{byte:02x}");
            }
            Some(render::render(ValueType::Scalar(ScalarKind::Text), &hex).into_boxed_str())
        }
    }
}

/// An old row: a key tuple carries only the replica identity's columns.
fn old_row(info: &RelationInfo, old: &OldTuple<'_>) -> Row {
    let key_only = matches!(old, OldTuple::Key(_));
    let values = old
        .values()
        .iter()
        .enumerate()
        .map(|(i, v)| if key_only && !info.relation.columns[i].key { None } else { render_value(info.types[i], v) })
        .collect();
    Row { values }
}

fn db_message(cols: MessageColumns, new: &[TupleValue<'_>]) -> Option<DbMessage> {
    let text = |i: Option<usize>| -> Option<String> {
        match new.get(i?)? {
            TupleValue::Text(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    };
    if text(cols.extension).as_deref() != Some("broadcast") {
        return None;
    }
    let payload = text(cols.payload)?;
    Some(DbMessage {
        id: text(cols.id).unwrap_or_default(),
        topic: text(cols.topic).unwrap_or_default(),
        event: text(cols.event).unwrap_or_default(),
        payload: payload.into_boxed_str(),
        private: text(cols.private).as_deref() == Some("t"),
    })
}

/// `pg_type` facts for rendering.
struct TypeRow {
    name: String,
    builtin: bool,
    domain_base: u32,
    array_elem: u32,
    delimiter: u8,
}

/// Completes a Relation message from the catalog: type names, how each column renders, row
/// level security, the primary key, and whether it is `realtime.messages`.
fn describe(
    catalog: &mut BlockingConnection,
    oid: u32,
    namespace: &str,
    name: &str,
    replica_identity: u8,
    columns: &[RelationColumn<'_>],
) -> Result<RelationInfo, CoreError> {
    let sql = format!(
        "select c.relrowsecurity, rn.nspname, rc.relname from pg_class c \
           join pg_class rc on rc.oid = coalesce(pg_partition_root(c.oid), c.oid) \
           join pg_namespace rn on rn.oid = rc.relnamespace where c.oid = {oid}; \
         select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey) \
           where i.indrelid = {oid} and i.indisprimary order by array_position(i.indkey::int2[], a.attnum)"
    );
    let res = catalog.simple_query(&sql)?;
    let class = res.first().and_then(|r| r.rows.first());
    if class.is_none() {
        tracing::warn!(oid, schema = namespace, table = name, "relation not in the catalog (dropped since?)");
    }
    let rls_enabled = class.and_then(|r| r.get_str(0)) == Some("t");
    let root = class.map(|r| (r.get_str(1).unwrap_or(""), r.get_str(2).unwrap_or("")));
    let is_messages = (namespace == "realtime" && name == "messages") || root == Some(("realtime", "messages"));
    let pk_names: Vec<&str> =
        res.get(1).map(|r| r.rows.iter().filter_map(|row| row.get_str(0)).collect()).unwrap_or_default();
    let primary_key: Vec<usize> = pk_names.iter().filter_map(|pk| columns.iter().position(|c| c.name == *pk)).collect();

    let types = load_types(catalog, columns.iter().map(|c| c.type_oid).collect())?;
    let value_types: Vec<ValueType> = columns.iter().map(|c| value_type(&types, c.type_oid)).collect();
    let relation = Relation {
        oid,
        schema: namespace.to_string(),
        table: name.to_string(),
        replica_identity: match replica_identity {
            b'f' => ReplicaIdentity::Full,
            b'n' => ReplicaIdentity::Nothing,
            b'i' => ReplicaIdentity::Index,
            _ => ReplicaIdentity::Default,
        },
        columns: columns
            .iter()
            .map(|c| Column {
                name: c.name.to_string(),
                type_oid: c.type_oid,
                type_name: types.get(&c.type_oid).map(|t| t.name.clone()).unwrap_or_default(),
                key: c.key,
            })
            .collect(),
        rls_enabled,
        primary_key,
    };
    let find = |n: &str| columns.iter().position(|c| c.name == n);
    let messages = is_messages.then(|| MessageColumns {
        id: find("id"),
        topic: find("topic"),
        event: find("event"),
        payload: find("payload"),
        private: find("private"),
        extension: find("extension"),
    });
    debug_assert_eq!(value_types.len(), relation.columns.len());
    Ok(RelationInfo { relation: Arc::new(relation), types: value_types, messages })
}

/// Reads `pg_type` rows for `oids` and every domain base and array element they lead to.
fn load_types(catalog: &mut BlockingConnection, oids: Vec<u32>) -> Result<HashMap<u32, TypeRow>, CoreError> {
    let mut types: HashMap<u32, TypeRow> = HashMap::new();
    let mut want = oids;
    // Domains over domains over arrays…: a few rounds at most; bounded anyway.
    for _ in 0..8 {
        want.retain(|o| *o != 0 && !types.contains_key(o));
        want.sort_unstable();
        want.dedup();
        if want.is_empty() {
            break;
        }
        let list: Vec<String> = want.iter().map(u32::to_string).collect();
        let sql = format!(
            "select oid, typname, typnamespace = 'pg_catalog'::regnamespace, \
                    case when typtype = 'd' then typbasetype else 0 end, \
                    case when typcategory = 'A' then typelem else 0 end, typdelim \
             from pg_type where oid in ({})",
            list.join(",")
        );
        let res = catalog.simple_query(&sql)?;
        let mut next = Vec::new();
        for row in res.first().map(|r| r.rows.as_slice()).unwrap_or_default() {
            let num = |i: usize| row.get_str(i).and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
            let t = TypeRow {
                name: row.get_str(1).unwrap_or("").to_string(),
                builtin: row.get_str(2) == Some("t"),
                domain_base: num(3),
                array_elem: num(4),
                delimiter: row.get_str(5).and_then(|d| d.bytes().next()).unwrap_or(b','),
            };
            next.extend([t.domain_base, t.array_elem]);
            types.insert(num(0), t);
        }
        want = next;
    }
    Ok(types)
}

/// Follows domains to their base type.
fn base_of(types: &HashMap<u32, TypeRow>, mut oid: u32) -> u32 {
    for _ in 0..16 {
        match types.get(&oid) {
            Some(t) if t.domain_base != 0 => oid = t.domain_base,
            _ => break,
        }
    }
    oid
}

fn scalar_kind(types: &HashMap<u32, TypeRow>, oid: u32) -> ScalarKind {
    match types.get(&base_of(types, oid)) {
        Some(t) if t.builtin => ScalarKind::of_type_name(&t.name),
        _ => ScalarKind::Text,
    }
}

fn value_type(types: &HashMap<u32, TypeRow>, oid: u32) -> ValueType {
    let base = base_of(types, oid);
    match types.get(&base) {
        Some(t) if t.array_elem != 0 => {
            let elem = base_of(types, t.array_elem);
            let delimiter = types.get(&elem).map_or(b',', |e| e.delimiter);
            ValueType::Array { elem: scalar_kind(types, elem), delimiter }
        }
        _ => ValueType::Scalar(scalar_kind(types, base)),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of PostgreSQL's microseconds since 2000-01-01 UTC.
pub fn commit_timestamp(pg_micros: i64) -> String {
    let unix_micros = pg_micros.saturating_add(madbase_pg::replication::PG_EPOCH_OFFSET_MICROS);
    let secs = unix_micros.div_euclid(1_000_000);
    let millis = unix_micros.rem_euclid(1_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = madbase_http::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

/// Now, as a commit timestamp (for tests and logs).
pub fn now_timestamp() -> String {
    commit_timestamp(pg_now_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_timestamps() {
        assert_eq!(commit_timestamp(0), "2000-01-01T00:00:00.000Z");
        // 2024-01-01T00:00:00.123456Z
        assert_eq!(commit_timestamp(757_382_400_123_456), "2024-01-01T00:00:00.123Z");
        assert_eq!(commit_timestamp(-1), "1999-12-31T23:59:59.999Z");
        assert_eq!(commit_timestamp(5_097_600_000_000 + 86_399_999_999), "2000-02-29T23:59:59.999Z");
    }
}
