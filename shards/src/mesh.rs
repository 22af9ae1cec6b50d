//! Cross-shard messaging: bounded SPSC rings plus doorbells.
//!
//! Owns: the ring mesh (one `rtrb` ring per ordered shard pair `i → j`, `i != j`,
//! and one ring from the single [`Injector`] to every shard), the shard-side
//! `Mailbox` (outboxes, inboxes, round-robin receive) and the message types
//! ([`Envelope`], [`Source`], [`SendError`], [`RingDepth`]).
//!
//! Invariants:
//! - Every ring has exactly one producer and one consumer thread (SPSC): shard `i`
//!   owns the producer of `i → j`, shard `j` the consumer; the injector owns the
//!   producers of `injector → j`. The `Injector` is `Send` but not `Clone`, and
//!   `RuntimeHandle::take_injector` hands it out once.
//! - Every ring is bounded (`RuntimeConfig::ring_capacity`). A full ring answers
//!   `SendError::Full(msg)` at once; a shard never blocks on a send. Only the
//!   injector (not a shard) has waiting helpers (`send_blocking`, `broadcast_blocking`).
//! - Per ring, messages are delivered in push order, exactly once. There is no
//!   ordering between different rings.
//! - A producer rings the target's doorbell after every successful push (cheap: one
//!   atomic swap unless the doorbell is already pending; see `doorbell`).
//! - Messages still in a ring when its consumer shard exits are dropped with it.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use rtrb::{Consumer, Producer, PushError, RingBuffer};

use crate::doorbell::Doorbell;

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Another shard, by id.
    Shard(usize),
    /// The injector (the replication core's thread).
    Injector,
}

/// A received message and its sender.
#[derive(Debug)]
pub struct Envelope<M> {
    /// Who sent it.
    pub from: Source,
    /// The message.
    pub msg: M,
}

/// Why a send did not happen. Every variant gives the message back.
#[derive(Debug, thiserror::Error)]
pub enum SendError<M> {
    /// The target's ring is full; the caller chooses: retry later, drop, or fail.
    #[error("ring to the target shard is full")]
    Full(M),
    /// The target is not another shard of this runtime (out of range, or self).
    #[error("no ring to that shard (out of range or self)")]
    NoSuchShard(M),
    /// The target shard has exited; nobody will read the message.
    #[error("the target shard has exited")]
    Closed(M),
}

impl<M> SendError<M> {
    /// Takes the message back.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m) | SendError::NoSuchShard(m) | SendError::Closed(m) => m,
        }
    }
}

/// Fill level of one ring, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingDepth {
    /// Producer side.
    pub from: Source,
    /// Consumer shard.
    pub to: usize,
    /// Messages waiting in the ring now.
    pub len: usize,
    /// The ring's capacity.
    pub capacity: usize,
}

/// The rings of the whole runtime before they are dealt to their threads.
pub(crate) struct Mesh<M> {
    /// `outboxes[i][j]`: producer of ring `i → j` (`None` at `i == j`).
    pub(crate) outboxes: Vec<Vec<Option<Producer<M>>>>,
    /// `inboxes[j]`: consumers of every ring into `j`, with their source.
    pub(crate) inboxes: Vec<Vec<(Source, Consumer<M>)>>,
    /// Producers of `injector → j`.
    pub(crate) injector: Vec<Producer<M>>,
}

impl<M> Mesh<M> {
    pub(crate) fn new(shards: usize, capacity: usize) -> Mesh<M> {
        let mut outboxes: Vec<Vec<Option<Producer<M>>>> =
            (0..shards).map(|_| (0..shards).map(|_| None).collect()).collect();
        let mut inboxes: Vec<Vec<(Source, Consumer<M>)>> = (0..shards).map(|_| Vec::with_capacity(shards)).collect();
        let mut injector = Vec::with_capacity(shards);
        for (to, inbox) in inboxes.iter_mut().enumerate() {
            // The injector ring first: replication batches get the first look.
            let (p, c) = RingBuffer::new(capacity);
            injector.push(p);
            inbox.push((Source::Injector, c));
            for (from, outbox) in outboxes.iter_mut().enumerate() {
                if from != to {
                    let (p, c) = RingBuffer::new(capacity);
                    outbox[to] = Some(p);
                    inbox.push((Source::Shard(from), c));
                }
            }
        }
        Mesh { outboxes, inboxes, injector }
    }
}

fn push<M>(p: &mut Producer<M>, bell: &Doorbell, msg: M) -> Result<(), SendError<M>> {
    match p.push(msg) {
        Ok(()) => {
            bell.ring();
            Ok(())
        }
        Err(PushError::Full(m)) => {
            if p.is_abandoned() {
                Err(SendError::Closed(m))
            } else {
                Err(SendError::Full(m))
            }
        }
    }
}

/// A shard's side of the mesh. Lives on the shard thread.
pub(crate) struct Mailbox<M> {
    pub(crate) id: usize,
    outboxes: RefCell<Vec<Option<Producer<M>>>>,
    inboxes: RefCell<Vec<(Source, Consumer<M>)>>,
    cursor: Cell<usize>,
    doorbells: Vec<Arc<Doorbell>>,
}

impl<M> Mailbox<M> {
    pub(crate) fn new(
        id: usize,
        outboxes: Vec<Option<Producer<M>>>,
        inboxes: Vec<(Source, Consumer<M>)>,
        doorbells: Vec<Arc<Doorbell>>,
    ) -> Self {
        Mailbox {
            id,
            outboxes: RefCell::new(outboxes),
            inboxes: RefCell::new(inboxes),
            cursor: Cell::new(0),
            doorbells,
        }
    }

    pub(crate) fn send_to(&self, to: usize, msg: M) -> Result<(), SendError<M>> {
        let mut outboxes = self.outboxes.borrow_mut();
        match (outboxes.get_mut(to), self.doorbells.get(to)) {
            (Some(Some(p)), Some(bell)) => push(p, bell, msg),
            _ => Err(SendError::NoSuchShard(msg)),
        }
    }

    /// Pops one message, visiting rings round-robin so no sender starves another.
    pub(crate) fn try_recv(&self) -> Option<Envelope<M>> {
        let mut inboxes = self.inboxes.borrow_mut();
        let n = inboxes.len();
        let start = self.cursor.get();
        for k in 0..n {
            let i = (start + k) % n;
            let (from, c) = &mut inboxes[i];
            if let Ok(msg) = c.pop() {
                self.cursor.set((i + 1) % n);
                return Some(Envelope { from: *from, msg });
            }
        }
        None
    }

    pub(crate) fn depths(&self) -> Vec<RingDepth> {
        self.inboxes
            .borrow()
            .iter()
            .map(|(from, c)| RingDepth { from: *from, to: self.id, len: c.slots(), capacity: c.buffer().capacity() })
            .collect()
    }
}

/// The one producer handle from a dedicated non-shard thread (the replication core)
/// to every shard. `Send`, not `Clone`; taken once from the `RuntimeHandle`.
///
/// Its waiting helpers (`send_blocking`, `broadcast_blocking`) spin, then yield,
/// then sleep briefly while a ring is full: use them on the injector's own thread,
/// never on a shard.
pub struct Injector<M> {
    producers: Vec<Producer<M>>,
    doorbells: Vec<Arc<Doorbell>>,
    shutdown: crate::local::ShutdownTrigger,
}

impl<M: Send + 'static> Injector<M> {
    pub(crate) fn new(
        producers: Vec<Producer<M>>,
        doorbells: Vec<Arc<Doorbell>>,
        shutdown: crate::local::ShutdownTrigger,
    ) -> Self {
        Injector { producers, doorbells, shutdown }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.producers.len()
    }

    /// Pushes `msg` to shard `to` without waiting.
    pub fn send(&mut self, to: usize, msg: M) -> Result<(), SendError<M>> {
        match (self.producers.get_mut(to), self.doorbells.get(to)) {
            (Some(p), Some(bell)) => push(p, bell, msg),
            _ => Err(SendError::NoSuchShard(msg)),
        }
    }

    /// Pushes `msg` to shard `to`, waiting (spin, yield, then sleeps of up to 1 ms)
    /// while its ring is full. Fails with `Closed` if the shard exits, or once
    /// shutdown has been requested and the ring is still full.
    pub fn send_blocking(&mut self, to: usize, mut msg: M) -> Result<(), SendError<M>> {
        let mut backoff = Backoff::default();
        loop {
            match self.send(to, msg) {
                Err(SendError::Full(m)) => {
                    if self.shutdown.is_triggered() {
                        return Err(SendError::Closed(m));
                    }
                    msg = m;
                    backoff.snooze();
                }
                other => return other,
            }
        }
    }

    /// Tries to give a clone of `msg` to every shard without waiting. Returns the
    /// shards whose ring was full or closed (empty when all took it).
    pub fn broadcast(&mut self, msg: &M) -> Vec<usize>
    where
        M: Clone,
    {
        let mut missed = Vec::new();
        for to in 0..self.producers.len() {
            if self.send(to, msg.clone()).is_err() {
                missed.push(to);
            }
        }
        missed
    }

    /// Gives a clone of `msg` (typically an `Arc<Batch>`) to every shard, waiting for
    /// room as [`Injector::send_blocking`] does. Returns the shards that did not get
    /// it (exited, or shutdown while their ring was full).
    pub fn broadcast_blocking(&mut self, msg: &M) -> Vec<usize>
    where
        M: Clone,
    {
        let mut missed = Vec::new();
        for to in 0..self.producers.len() {
            if self.send_blocking(to, msg.clone()).is_err() {
                missed.push(to);
            }
        }
        missed
    }

    /// Fill level of every injector ring.
    pub fn ring_depths(&self) -> Vec<RingDepth> {
        self.producers
            .iter()
            .enumerate()
            .map(|(to, p)| {
                let capacity = p.buffer().capacity();
                RingDepth { from: Source::Injector, to, len: capacity - p.slots(), capacity }
            })
            .collect()
    }
}

/// Spin, then yield, then sleep with a growing (capped) period.
#[derive(Default)]
struct Backoff {
    step: u32,
}

impl Backoff {
    fn snooze(&mut self) {
        if self.step < 6 {
            for _ in 0..(1 << self.step) {
                std::hint::spin_loop();
            }
        } else if self.step < 10 {
            std::thread::yield_now();
        } else {
            let us = 50u64 << (self.step - 10).min(4);
            std::thread::sleep(std::time::Duration::from_micros(us.min(1000)));
        }
        self.step = self.step.saturating_add(1).min(20);
    }
}
