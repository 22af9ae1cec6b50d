//! Cross-shard messaging: bounded SPSC rings plus doorbells, in two lanes.
//!
//! Owns: the ring mesh — for every ordered shard pair `i → j` (`i != j`) one
//! *control* ring and one *data* ring, and one data ring from the single
//! [`Injector`] to every shard — the shard-side `Mailbox` (outboxes, inboxes,
//! control-first receive) and the message types ([`Envelope`], [`Source`],
//! [`SendError`], [`Lane`], [`RingDepth`], [`Delivery`]).
//!
//! Why two lanes: control messages (schema swaps, pings, metric snapshots) are few
//! and must not wait behind bulk data. With one ring per pair, a data ring that is
//! full (a slow consumer, a burst) would make a control send fail or queue behind
//! thousands of messages. The control lane is a separate ring with its own capacity
//! (`RuntimeConfig::control_ring_capacity`), so it has room whatever the data lane
//! holds, and the receiver looks at it first.
//!
//! Why the injector has no control lane: it is the replication core's bulk path
//! (change batches); control traffic comes from shards. A control ring from the
//! injector would be `shards` more rings that nothing ever pushes to.
//!
//! Invariants:
//! - Every ring has exactly one producer and one consumer thread (SPSC): shard `i`
//!   owns the producers of both lanes `i → j`, shard `j` the consumers; the injector
//!   owns the producers of `injector → j`. The `Injector` is `Send` but not `Clone`,
//!   and `RuntimeHandle::take_injector` hands it out once.
//! - Every ring is bounded (`ring_capacity` for data, `control_ring_capacity` for
//!   control). A full ring answers `SendError::Full(msg)` at once; a shard never
//!   blocks on a send. Waiting happens only in `Shard::deliver_to_all` (on a timer,
//!   never spinning) and in the injector's helpers (`send_blocking`,
//!   `broadcast_blocking`, on the injector's own thread).
//! - Per ring, messages are delivered in push order, exactly once. There is no
//!   ordering between different rings — in particular not between the two lanes of
//!   one pair: a control message may overtake data sent before it.
//! - Priority: a receive returns a waiting control message whenever there is one;
//!   it returns a data message only when every control ring is empty. Within a
//!   lane, rings are visited round-robin, so no sender starves another.
//! - A producer rings the target's doorbell (one per shard, shared by both lanes)
//!   after every successful push (cheap: one atomic swap unless the doorbell is
//!   already pending; see `doorbell`).
//! - Messages still in a ring when its consumer shard exits are dropped with it.

use std::cell::RefCell;
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

/// Which of a shard pair's two rings a message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Few, small, urgent messages (schema swaps, pings, snapshots). Received before
    /// any data message; never waits behind the data lane.
    Control,
    /// Bulk messages. The only lane from the injector.
    Data,
}

/// Fill level of one ring, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingDepth {
    /// Producer side.
    pub from: Source,
    /// Consumer shard.
    pub to: usize,
    /// Which of the pair's rings this is (injector rings are always `Data`).
    pub lane: Lane,
    /// Messages waiting in the ring now.
    pub len: usize,
    /// The ring's capacity.
    pub capacity: usize,
}

/// What [`Shard::deliver_to_all`](crate::Shard::deliver_to_all) achieved. Every
/// other shard is in exactly one of the lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Shards that took the message, in the order they took it.
    pub delivered: Vec<usize>,
    /// Shards that had exited (their ring is closed); they will never see it.
    pub closed: Vec<usize>,
    /// Shards whose ring was still full when shutdown started.
    pub undelivered: Vec<usize>,
}

impl Delivery {
    /// Whether every target took the message.
    pub fn is_complete(&self) -> bool {
        self.closed.is_empty() && self.undelivered.is_empty()
    }
}

/// One value per lane (producers, consumers, capacities).
pub(crate) struct Lanes<T> {
    pub(crate) control: T,
    pub(crate) data: T,
}

impl<T> Lanes<T> {
    fn get_mut(&mut self, lane: Lane) -> &mut T {
        match lane {
            Lane::Control => &mut self.control,
            Lane::Data => &mut self.data,
        }
    }
}

/// Consumers of one lane's rings into one shard, each with its source.
pub(crate) type InboxRings<M> = Vec<(Source, Consumer<M>)>;

/// The rings of the whole runtime before they are dealt to their threads.
pub(crate) struct Mesh<M> {
    /// `outboxes[i][j]`: producers of both lanes `i → j` (`None` at `i == j`).
    pub(crate) outboxes: Vec<Vec<Option<Lanes<Producer<M>>>>>,
    /// `inboxes[j]`: consumers of every ring into `j`, by lane.
    pub(crate) inboxes: Vec<Lanes<InboxRings<M>>>,
    /// Producers of `injector → j` (data lane only; see the module docs).
    pub(crate) injector: Vec<Producer<M>>,
}

impl<M> Mesh<M> {
    pub(crate) fn new(shards: usize, capacity: Lanes<usize>) -> Mesh<M> {
        let mut outboxes: Vec<Vec<Option<Lanes<Producer<M>>>>> =
            (0..shards).map(|_| (0..shards).map(|_| None).collect()).collect();
        let mut inboxes: Vec<Lanes<InboxRings<M>>> = (0..shards)
            .map(|_| Lanes { control: Vec::with_capacity(shards), data: Vec::with_capacity(shards) })
            .collect();
        let mut injector = Vec::with_capacity(shards);
        for (to, inbox) in inboxes.iter_mut().enumerate() {
            // The injector ring first: replication batches get the first look among data.
            let (p, c) = RingBuffer::new(capacity.data);
            injector.push(p);
            inbox.data.push((Source::Injector, c));
            for (from, outbox) in outboxes.iter_mut().enumerate() {
                if from != to {
                    let (control_p, control_c) = RingBuffer::new(capacity.control);
                    let (data_p, data_c) = RingBuffer::new(capacity.data);
                    outbox[to] = Some(Lanes { control: control_p, data: data_p });
                    inbox.control.push((Source::Shard(from), control_c));
                    inbox.data.push((Source::Shard(from), data_c));
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

/// One lane's rings into a shard, visited round-robin so no sender starves another.
struct Inbox<M> {
    rings: InboxRings<M>,
    /// The ring to look at first on the next pop.
    cursor: usize,
}

impl<M> Inbox<M> {
    fn new(rings: InboxRings<M>) -> Self {
        Inbox { rings, cursor: 0 }
    }

    fn pop(&mut self) -> Option<Envelope<M>> {
        let n = self.rings.len();
        debug_assert!(self.cursor < n.max(1), "cursor {} out of {n} rings", self.cursor);
        for k in 0..n {
            let i = (self.cursor + k) % n;
            let (from, c) = &mut self.rings[i];
            if let Ok(msg) = c.pop() {
                self.cursor = (i + 1) % n;
                return Some(Envelope { from: *from, msg });
            }
        }
        None
    }

    fn depths(&self, to: usize, lane: Lane) -> impl Iterator<Item = RingDepth> + '_ {
        self.rings.iter().map(move |(from, c)| RingDepth {
            from: *from,
            to,
            lane,
            len: c.slots(),
            capacity: c.buffer().capacity(),
        })
    }
}

/// A shard's side of the mesh. Lives on the shard thread.
pub(crate) struct Mailbox<M> {
    pub(crate) id: usize,
    outboxes: RefCell<Vec<Option<Lanes<Producer<M>>>>>,
    inbox: RefCell<Lanes<Inbox<M>>>,
    doorbells: Vec<Arc<Doorbell>>,
}

impl<M> Mailbox<M> {
    pub(crate) fn new(
        id: usize,
        outboxes: Vec<Option<Lanes<Producer<M>>>>,
        inboxes: Lanes<InboxRings<M>>,
        doorbells: Vec<Arc<Doorbell>>,
    ) -> Self {
        debug_assert_eq!(outboxes.len(), doorbells.len(), "one outbox slot and one doorbell per shard");
        debug_assert!(outboxes.get(id).is_some_and(Option::is_none), "shard {id} has a ring to itself");
        debug_assert_eq!(inboxes.control.len() + 1, inboxes.data.len(), "data lane = control lane + injector");
        Mailbox {
            id,
            outboxes: RefCell::new(outboxes),
            inbox: RefCell::new(Lanes { control: Inbox::new(inboxes.control), data: Inbox::new(inboxes.data) }),
            doorbells,
        }
    }

    pub(crate) fn send(&self, lane: Lane, to: usize, msg: M) -> Result<(), SendError<M>> {
        let mut outboxes = self.outboxes.borrow_mut();
        match (outboxes.get_mut(to), self.doorbells.get(to)) {
            (Some(Some(lanes)), Some(bell)) => push(lanes.get_mut(lane), bell, msg),
            _ => Err(SendError::NoSuchShard(msg)),
        }
    }

    /// Pops one message: a control message whenever one is waiting, else a data message.
    pub(crate) fn try_recv(&self) -> Option<Envelope<M>> {
        let mut inbox = self.inbox.borrow_mut();
        // Control first, so a control message never waits behind bulk data. The lane's
        // contract is that control traffic stays small: a flood of it would starve data.
        inbox.control.pop().or_else(|| inbox.data.pop())
    }

    pub(crate) fn depths(&self) -> Vec<RingDepth> {
        let inbox = self.inbox.borrow();
        inbox.control.depths(self.id, Lane::Control).chain(inbox.data.depths(self.id, Lane::Data)).collect()
    }
}

/// The one producer handle from a dedicated non-shard thread (the replication core)
/// to every shard's data lane. `Send`, not `Clone`; taken once from the `RuntimeHandle`.
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
                RingDepth { from: Source::Injector, to, lane: Lane::Data, len: capacity - p.slots(), capacity }
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
