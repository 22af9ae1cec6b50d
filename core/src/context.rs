//! The per-shard context every service is built on.
//!
//! Owns: [`ShardCtx`] (what a service uses of this shard's runtime — the blocking pool and the
//! shutdown signal —, its PostgreSQL [`Lanes`], verified-token cache and metrics registry), [`Outbox`] (a service's typed sender to its instances on the other
//! shards) and [`Lanes`].
//!
//! PostgreSQL lanes: every service that talks to PostgreSQL on the request path gets its own
//! pool of pipelined connections per shard, with its own connections and queue bound, so a burst
//! or a slow statement of one service (a heavy Data API read) never queues another's short work
//! (token refreshes, realtime authorisation) behind it; within a lane the pool keeps new work off
//! a connection whose head statement has stalled.
//!
//! Invariants: everything here is `!Send` and touched only by its own shard; nothing a request
//! does reaches another shard's context except through an [`Outbox`] message.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use madbase_pg::{ConnectConfig, Pool, PoolConfig};
use madbase_shards::{BlockingPool, ShutdownSignal};

use crate::jwt::{JwtKeys, TokenCache};
use crate::metrics::ShardMetrics;
use crate::platform::{Jwt, Pg};

/// A lane: one service's connections to PostgreSQL on one shard.
pub struct LaneSpec {
    /// The service label the lane serves (also its name in `/metrics`).
    pub name: &'static str,
    /// Connections of the lane on each shard.
    pub connections: usize,
}

/// This shard's PostgreSQL lanes, by name.
pub struct Lanes {
    lanes: Vec<(&'static str, Pool)>,
}

impl Lanes {
    /// One pool per lane, each with `pg`'s bounds and its own connection count.
    pub fn new(connect: &ConnectConfig, pg: &Pg, specs: &[LaneSpec]) -> Lanes {
        assert!(!specs.is_empty(), "at least one lane");
        let lanes = specs
            .iter()
            .map(|spec| {
                assert!(spec.connections > 0, "lane {} has no connections", spec.name);
                let mut config = PoolConfig::new(connect.clone());
                config.connections = spec.connections;
                config.max_queued = pg.queue_limit;
                config.request_timeout = pg.request_timeout();
                (spec.name, Pool::new(config))
            })
            .collect();
        Lanes { lanes }
    }

    /// The lane named `name`. Panics on a name no spec gave: lanes are fixed at start-up.
    pub fn get(&self, name: &str) -> &Pool {
        match self.lanes.iter().find(|(lane, _)| *lane == name) {
            Some((_, pool)) => pool,
            None => panic!("no PostgreSQL lane {name:?}"),
        }
    }

    /// Every lane, for metrics.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Pool)> {
        self.lanes.iter().map(|(name, pool)| (*name, pool))
    }

    /// Closes every lane's connections (after the shard drained).
    pub fn close(&self) {
        for (_, pool) in &self.lanes {
            pool.close();
        }
    }
}

/// One shard's platform: built once per shard by the binary, shared by its services.
pub struct ShardCtx {
    /// The process-wide blocking pool (CPU work that must not run on the shard).
    pub blocking: BlockingPool,
    /// Fires when the shard starts shutting down (owner tasks end on it).
    pub shutdown: ShutdownSignal,
    pub lanes: Lanes,
    pub tokens: RefCell<TokenCache>,
    pub metrics: ShardMetrics,
    /// How to reach PostgreSQL (for a service's own dedicated connections, e.g. a `LISTEN`).
    pub connect: ConnectConfig,
}

impl ShardCtx {
    #[allow(clippy::too_many_arguments)] // each is a distinct part of the platform
    pub fn new(
        blocking: BlockingPool,
        shutdown: ShutdownSignal,
        connect: ConnectConfig,
        pg: &Pg,
        jwt: &Jwt,
        keys: Arc<JwtKeys>,
        lanes: &[LaneSpec],
        metrics: ShardMetrics,
    ) -> ShardCtx {
        ShardCtx {
            lanes: Lanes::new(&connect, pg, lanes),
            tokens: RefCell::new(TokenCache::new(keys, jwt.cache_entries)),
            metrics,
            blocking,
            shutdown,
            connect,
        }
    }
}

/// A delivery to every other shard under way; resolves to the shards that never took it.
pub type Delivering = Pin<Box<dyn Future<Output = Vec<usize>>>>;

/// Sends one service's typed messages to its instances on the other shards; the binary builds it
/// around the shard's rings and wraps each message in its own enum.
pub struct Outbox<T> {
    deliver_to_all: Box<dyn Fn(T) -> Delivering>,
    offer: Box<dyn Fn(usize, T) -> bool>,
    me: usize,
    shards: usize,
}

impl<T> Outbox<T> {
    /// `deliver_to_all` hands a message to every other shard on the control lane, waiting for
    /// room; `offer` gives one shard a message on the data lane without waiting (false: its ring
    /// was full or it exited). `me` is this shard, `shards` the count.
    pub fn new(
        me: usize,
        shards: usize,
        deliver_to_all: impl Fn(T) -> Delivering + 'static,
        offer: impl Fn(usize, T) -> bool + 'static,
    ) -> Outbox<T> {
        assert!(me < shards, "shard {me} of {shards}");
        Outbox { deliver_to_all: Box::new(deliver_to_all), offer: Box::new(offer), me, shards }
    }

    /// Hands `message` to every other shard on the control lane: shards with room get it at
    /// once, a full ring is retried on its own, so one busy shard never delays the others.
    /// Resolves when every shard has it; returns the shards that exited without taking it.
    pub fn deliver_to_all(&self, message: T) -> impl Future<Output = Vec<usize>> {
        (self.deliver_to_all)(message)
    }

    /// Offers `message` to shard `to` (never this one) on the data lane without waiting; false
    /// when its ring is full or it exited. Bulk traffic (broadcasts) goes this way, and the
    /// sender decides what a full ring means: drop and count, or queue in order and retry.
    pub fn offer(&self, to: usize, message: T) -> bool {
        debug_assert!(to != self.me && to < self.shards, "offer to shard {to} from {} of {}", self.me, self.shards);
        (self.offer)(to, message)
    }

    /// This shard.
    pub fn me(&self) -> usize {
        self.me
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }
}
