//! What the generator counts: connection and join outcomes, frames received by kind, latency
//! histograms, and a bounded table of error texts.
//!
//! Invariants: bounded — histograms have a fixed range (values above it saturate at the top),
//! shards are a fixed number, the error table keeps at most [`MAX_ERROR_KINDS`] distinct texts
//! (the rest are counted under one line). Counters are relaxed atomics: they are read after the
//! phase that writes them has settled, or as progress.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Distinct error texts kept.
pub const MAX_ERROR_KINDS: usize = 32;
/// Histogram shards (connections record into shard `index % SHARDS`).
const SHARDS: usize = 16;
/// Highest latency recorded, µs (larger values count as this).
const MAX_LATENCY_US: u64 = 120_000_000;

pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// A latency histogram in µs, sharded so that connections on different threads rarely meet.
pub struct Latency {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latency {
    pub fn new() -> Latency {
        let h = || Mutex::new(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"));
        Latency { shards: (0..SHARDS).map(|_| h()).collect() }
    }

    pub fn record(&self, shard: usize, us: i64) {
        let v = us.clamp(1, MAX_LATENCY_US as i64) as u64;
        if let Ok(mut h) = self.shards[shard % SHARDS].lock() {
            h.saturating_record(v);
        }
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds");
        for s in &self.shards {
            if let Ok(h) = s.lock() {
                let _ = all.add(&*h);
            }
        }
        all
    }

    pub fn reset(&self) {
        for s in &self.shards {
            if let Ok(mut h) = s.lock() {
                h.reset();
            }
        }
    }
}

#[derive(Default)]
pub struct Counters {
    pub connect_started: AtomicU64,
    pub connect_failed: AtomicU64,
    /// Sockets open now (after the WebSocket handshake).
    pub open: AtomicU64,
    pub open_peak: AtomicU64,
    pub joins_sent: AtomicU64,
    pub joins_ok: AtomicU64,
    pub joins_error: AtomicU64,
    /// Channels joined and not closed now.
    pub joined: AtomicU64,
    /// Sockets the server closed (or that failed) while the generator still wanted them.
    pub closed_by_server: AtomicU64,
    pub channel_closed: AtomicU64,
    pub heartbeats_sent: AtomicU64,
    pub heartbeats_ok: AtomicU64,
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub broadcasts_in: AtomicU64,
    pub changes_in: AtomicU64,
    /// Postgres changes whose owner column is not the subscriber's own user (RLS variant b).
    pub changes_foreign: AtomicU64,
    pub system_ok: AtomicU64,
    pub system_error: AtomicU64,
    pub presence_in: AtomicU64,
    pub other_in: AtomicU64,
    pub unparsed_in: AtomicU64,
    pub broadcasts_sent: AtomicU64,
    pub send_errors: AtomicU64,
}

pub struct Stats {
    pub c: Counters,
    /// Broadcast send → delivery, or commit (the row's timestamp) → delivery.
    pub latency: Latency,
    /// `phx_join` sent → reply.
    pub join_latency: Latency,
    /// First measured send / first measured receive / last receive, µs since the epoch.
    pub first_send_us: AtomicI64,
    pub first_recv_us: AtomicI64,
    pub last_recv_us: AtomicI64,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Measured deliveries per connection index (one counter per connection: bounded by N).
    pub per_conn: Vec<AtomicU64>,
}

impl Stats {
    pub fn new(connections: usize) -> Stats {
        Stats {
            per_conn: (0..connections).map(|_| AtomicU64::new(0)).collect(),
            c: Counters::default(),
            latency: Latency::new(),
            join_latency: Latency::new(),
            first_send_us: AtomicI64::new(i64::MAX),
            first_recv_us: AtomicI64::new(i64::MAX),
            last_recv_us: AtomicI64::new(0),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn error(&self, text: impl Into<String>) {
        let text = text.into();
        if let Ok(mut e) = self.errors.lock() {
            if let Some(n) = e.get_mut(&text) {
                *n += 1;
            } else if e.len() < MAX_ERROR_KINDS {
                e.insert(text, 1);
            } else {
                *e.entry("(other errors)".to_owned()).or_default() += 1;
            }
        }
    }

    pub fn errors(&self) -> Vec<(String, u64)> {
        self.errors.lock().map(|e| e.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default()
    }

    pub fn opened(&self) {
        let n = self.c.open.fetch_add(1, Relaxed) + 1;
        self.c.open_peak.fetch_max(n, Relaxed);
    }

    /// A measured delivery at `now` (µs since the epoch) with the given latency.
    pub fn delivered(&self, index: usize, now: i64, latency_us: i64) {
        if let Some(n) = self.per_conn.get(index) {
            n.fetch_add(1, Relaxed);
        }
        self.latency.record(index, latency_us);
        self.first_recv_us.fetch_min(now, Relaxed);
        self.last_recv_us.fetch_max(now, Relaxed);
    }

    /// Clears what a measured phase records (before it starts).
    pub fn reset_measured(&self) {
        self.latency.reset();
        self.first_send_us.store(i64::MAX, Relaxed);
        self.first_recv_us.store(i64::MAX, Relaxed);
        self.last_recv_us.store(0, Relaxed);
        self.c.broadcasts_in.store(0, Relaxed);
        self.c.changes_in.store(0, Relaxed);
        self.c.changes_foreign.store(0, Relaxed);
        self.c.broadcasts_sent.store(0, Relaxed);
        for n in &self.per_conn {
            n.store(0, Relaxed);
        }
    }

    /// Measured deliveries per connection among the first `n` connections: (min, median, max,
    /// how many got none).
    pub fn per_conn_spread(&self, n: usize) -> Option<(u64, u64, u64, usize)> {
        let mut v: Vec<u64> = self.per_conn.iter().take(n).map(|c| c.load(Relaxed)).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let none = v.iter().take_while(|c| **c == 0).count();
        Some((v[0], v[v.len() / 2], v[v.len() - 1], none))
    }
}
