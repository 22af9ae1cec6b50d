//! Runtime configuration: every limit the runtime enforces, with its default.
//!
//! Owns: [`RuntimeConfig`] and its validation. Invariants: after
//! [`RuntimeConfig::validate`] succeeds, `shards >= 1`, `ring_capacity >= 1`,
//! `control_ring_capacity >= 1`, `blocking_threads >= 1`, `blocking_queue >= 1`, `backlog >= 1`,
//! `max_connections_per_shard >= 1` and `uring_entries` is a power of two `>= 256`.
//! The runtime never reads environment variables itself; the binary maps
//! `MADBASE_*` variables onto this struct.

use std::net::SocketAddr;
use std::time::Duration;

/// Configuration of a [`crate::Runtime`]. Build it with `RuntimeConfig::default()`
/// and override fields; every field documents its default.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Number of shards (OS threads, one monoio runtime each).
    /// Default: the number of CPUs this process may run on (`available_parallelism`).
    pub shards: usize,
    /// Pin shard `i` to the `i`-th CPU of the process affinity mask (modulo its size).
    /// A pinning failure is logged and the shard runs unpinned. Default: `true`.
    pub pin_cores: bool,
    /// Address every shard's `SO_REUSEPORT` listener binds. Port 0 picks a free port
    /// (the same one for all shards). `None` binds no listener (`Shard::serve` then
    /// fails with `ServeError::NoListener`). Default: `Some(127.0.0.1:54321)`.
    pub listen: Option<SocketAddr>,
    /// `listen(2)` backlog of each shard's listener. Default: 1024.
    pub backlog: i32,
    /// Most connections one shard serves at once; at the limit the shard stops
    /// accepting until one finishes (the kernel backlog absorbs the rest). Default: 16384.
    pub max_connections_per_shard: usize,
    /// Capacity (messages) of each data-lane SPSC ring: every shard→shard data ring
    /// and every injector→shard ring. Default: 1024.
    pub ring_capacity: usize,
    /// Capacity (messages) of each control-lane SPSC ring (one per ordered shard
    /// pair; see `Shard::send_control`). Control traffic is small, so it needs less
    /// room than data. Default: 256.
    pub control_ring_capacity: usize,
    /// Threads of the blocking pool (CPU-heavy work: password hashing, image resizing).
    /// Default: the number of CPUs, at least 1.
    pub blocking_threads: usize,
    /// Jobs that may wait in the blocking pool's queue; beyond it `spawn` answers
    /// `SpawnError::Busy` at once. Default: 1024.
    pub blocking_queue: usize,
    /// Nice value of the blocking pool's threads (0–19): CPU-heavy jobs yield the cores to the
    /// shards when both want them, so a burst of password hashing cannot stretch request
    /// latency. Default: 10.
    pub blocking_nice: i32,
    /// How long `Shard::serve` waits, after shutdown starts, for in-flight connections
    /// to finish before it shuts their sockets down. Default: 30 s.
    pub shutdown_grace: Duration,
    /// Use monoio's legacy (epoll) driver even where io_uring works. Default: `false`.
    pub force_legacy_driver: bool,
    /// io_uring submission-queue entries per shard (power of two, at least 256).
    /// Default: 1024.
    pub uring_entries: u32,
    /// Install SIGINT/SIGTERM handlers (on a small signal thread) that trigger shutdown
    /// on every shard. Default: `true`. Tests that start several runtimes turn it off.
    pub handle_signals: bool,
    /// Name prefix of the shard threads (`{prefix}-{i}`). Default: `"shard"`.
    pub thread_name: String,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        RuntimeConfig {
            shards: cpus,
            pin_cores: true,
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 54321))),
            backlog: 1024,
            max_connections_per_shard: 16384,
            ring_capacity: 1024,
            control_ring_capacity: 256,
            blocking_threads: cpus.max(1),
            blocking_queue: 1024,
            blocking_nice: 10,
            shutdown_grace: Duration::from_secs(30),
            force_legacy_driver: false,
            uring_entries: 1024,
            handle_signals: true,
            thread_name: "shard".to_owned(),
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid runtime config: {field}: {reason}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// Why it is rejected.
    pub reason: &'static str,
}

impl RuntimeConfig {
    /// Checks every limit; `Runtime::start` calls it first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason| Err(ConfigError { field, reason });
        if self.shards == 0 {
            return bad("shards", "must be at least 1");
        }
        if self.shards > 4096 {
            return bad("shards", "must be at most 4096");
        }
        if self.ring_capacity == 0 {
            return bad("ring_capacity", "must be at least 1");
        }
        if self.control_ring_capacity == 0 {
            return bad("control_ring_capacity", "must be at least 1");
        }
        if self.blocking_threads == 0 {
            return bad("blocking_threads", "must be at least 1");
        }
        if !(0..=19).contains(&self.blocking_nice) {
            return bad("blocking_nice", "must be between 0 and 19");
        }
        if self.blocking_queue == 0 {
            return bad("blocking_queue", "must be at least 1");
        }
        if self.backlog < 1 {
            return bad("backlog", "must be at least 1");
        }
        if self.max_connections_per_shard == 0 {
            return bad("max_connections_per_shard", "must be at least 1");
        }
        if self.uring_entries < 256 || !self.uring_entries.is_power_of_two() {
            return bad("uring_entries", "must be a power of two >= 256");
        }
        Ok(())
    }
}
