//! Per-shard accounting of the memory the HTTP layer holds for peers, and counters of its
//! refusals, for the binary's `/metrics`.
//!
//! Owns: the shard-local counters behind [`shard_stats`]. A shard is one thread, so every
//! counter is thread-local and read with no lock; [`shard_stats`] must be called on the shard
//! whose numbers are wanted (the binary asks each shard in turn).
//!
//! Invariants: [`HttpStats::body_bytes_held`] is the sum of the capacities of every buffer that
//! [`crate::Body::collect`] has charged to this shard and not yet released: a charge is taken
//! before the buffer grows and released exactly once, when the buffer (or the `Bytes` handed to
//! the handler, and every clone of it) is dropped. That drop may happen on another thread (a
//! handler may parse a body on a blocking pool), so this one gauge is an `Arc<AtomicU64>` that
//! the guard carries; only its owning shard ever adds to it. [`HttpStats::ws_send_queued_bytes`]
//! is the sum of the payload bytes waiting in every WebSocket send queue of this shard, kept
//! equal to the sum of the queues' own `queued_bytes` by `ws` (added on enqueue, removed on
//! dequeue, clear and drop).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A snapshot of one shard's HTTP counters (see [`shard_stats`]). Gauges say what is held now;
/// counters only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// Gauge: bytes of request-body buffers held by [`crate::Body::collect`] on this shard,
    /// bounded by `Limits::shard_body_budget_bytes`.
    pub body_bytes_held: u64,
    /// Counter: bodies refused with `503` because this shard's body budget was in use.
    pub body_refused_busy: u64,
    /// Counter: bodies refused with `413`: a `Content-Length` over `Limits::max_body_bytes`, a
    /// body over the handler's `collect` limit, or one body larger than the whole shard budget.
    pub body_refused_too_large: u64,
    /// Counter: bodies that timed out (`408`): no progress within `Limits::body_timeout`, or not
    /// complete within `Limits::body_timeout_total`.
    pub body_timeouts: u64,
    /// Counter: request heads that did not arrive within `Limits::header_timeout` (`408`).
    pub header_timeouts: u64,
    /// Counter: requests refused with `400` for a malformed request target (absolute-form with
    /// another scheme, userinfo or no host; asterisk-form on a method other than `OPTIONS`).
    pub bad_targets: u64,
    /// Gauge: payload bytes waiting in the send queues of this shard's WebSockets, bounded by
    /// `WsConfig::shard_send_queue_bytes`.
    pub ws_send_queued_bytes: u64,
    /// Counter: WebSockets closed with 1008 because their own send queue was full
    /// (`WsConfig::send_queue_messages` / `send_queue_bytes`).
    pub ws_slow_consumer_closes: u64,
    /// Counter: WebSockets closed with 1008 because a send would have taken the shard's queued
    /// bytes past `WsConfig::shard_send_queue_bytes`.
    pub ws_shard_queue_closes: u64,
}

/// This shard's counters (call it on the shard; each thread has its own).
pub fn shard_stats() -> HttpStats {
    COUNTERS.with(|c| HttpStats {
        body_bytes_held: c.body_held.load(Ordering::Relaxed),
        body_refused_busy: c.body_refused_busy.get(),
        body_refused_too_large: c.body_refused_too_large.get(),
        body_timeouts: c.body_timeouts.get(),
        header_timeouts: c.header_timeouts.get(),
        bad_targets: c.bad_targets.get(),
        ws_send_queued_bytes: c.ws_queued.get() as u64,
        ws_slow_consumer_closes: c.ws_slow_consumer_closes.get(),
        ws_shard_queue_closes: c.ws_shard_queue_closes.get(),
    })
}

struct Counters {
    body_held: Arc<AtomicU64>,
    body_refused_busy: Cell<u64>,
    body_refused_too_large: Cell<u64>,
    body_timeouts: Cell<u64>,
    header_timeouts: Cell<u64>,
    bad_targets: Cell<u64>,
    ws_queued: Cell<usize>,
    ws_slow_consumer_closes: Cell<u64>,
    ws_shard_queue_closes: Cell<u64>,
}

thread_local! {
    static COUNTERS: Counters = Counters {
        body_held: Arc::new(AtomicU64::new(0)),
        body_refused_busy: Cell::new(0),
        body_refused_too_large: Cell::new(0),
        body_timeouts: Cell::new(0),
        header_timeouts: Cell::new(0),
        bad_targets: Cell::new(0),
        ws_queued: Cell::new(0),
        ws_slow_consumer_closes: Cell::new(0),
        ws_shard_queue_closes: Cell::new(0),
    };
}

/// A refusal or event to count.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    BodyBusy,
    BodyTooLarge,
    BodyTimeout,
    HeaderTimeout,
    BadTarget,
    WsSlowConsumer,
    WsShardQueueFull,
}

/// Counts one event on this shard.
pub(crate) fn count(event: Event) {
    COUNTERS.with(|c| {
        let cell = match event {
            Event::BodyBusy => &c.body_refused_busy,
            Event::BodyTooLarge => &c.body_refused_too_large,
            Event::BodyTimeout => &c.body_timeouts,
            Event::HeaderTimeout => &c.header_timeouts,
            Event::BadTarget => &c.bad_targets,
            Event::WsSlowConsumer => &c.ws_slow_consumer_closes,
            Event::WsShardQueueFull => &c.ws_shard_queue_closes,
        };
        cell.set(cell.get().saturating_add(1));
    });
}

/// This shard's body-memory gauge (cloned into every charge so a release on another thread
/// still lands on the shard that charged it).
pub(crate) fn body_gauge() -> Arc<AtomicU64> {
    COUNTERS.with(|c| c.body_held.clone())
}

/// Bytes queued on this shard's WebSockets now.
pub(crate) fn ws_queued() -> usize {
    COUNTERS.with(|c| c.ws_queued.get())
}

/// Adds `n` bytes to this shard's WebSocket queue gauge.
pub(crate) fn ws_queue_add(n: usize) {
    COUNTERS.with(|c| c.ws_queued.set(c.ws_queued.get().saturating_add(n)));
}

/// Removes `n` bytes from this shard's WebSocket queue gauge.
pub(crate) fn ws_queue_sub(n: usize) {
    COUNTERS.with(|c| {
        let now = c.ws_queued.get();
        debug_assert!(n <= now, "websocket queue accounting went negative ({n} > {now})");
        c.ws_queued.set(now.saturating_sub(n));
    });
}
