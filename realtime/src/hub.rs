//! One shard's channels: who is subscribed to what, and the fan-out of broadcasts and presence
//! to them and to the other shards.
//!
//! Owns: [`Hub`] (the shard's subscriber lists per channel, its [`PresenceReplica`], the ordered
//! links to the other shards, the shard's realtime counters), [`Broadcast`] and
//! [`RealtimeMessage`] (what crosses the rings), and [`Fanout`] — the one interface broadcasts
//! and presence leave a shard through. Today it reaches the other shards of the process over the
//! rings ([`RingFanout`]); a cluster carries the same two calls across nodes (NATS) beside it.
//!
//! Invariants: a broadcast is encoded once at its origin and every subscriber on every shard gets
//! a reference-counted clone of the same bytes; a broadcast that finds a shard's data ring full
//! is dropped for that shard and counted (broadcast is best effort, as on Supabase); presence
//! diffs are never dropped while their queue has room and reach each shard in the order they
//! were sent (a per-target FIFO retried on a timer), so replicas converge; a subscriber entry
//! exists exactly while its socket has the channel joined (the session removes it on leave, on a
//! server close and when the socket ends).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use madbase_core::metrics::ServiceSeries;
use madbase_core::Outbox;
use madbase_http::ws::WsSender;

use bytes::Bytes;

use crate::changes::{ChangeBatch, DbMessage};
use crate::presence::{PresenceDiff, PresenceReplica, TopicKey};
use crate::protocol::{broadcast_frames, frame, BroadcastFrames, UserPayload, Vsn};

/// A socket on this shard (unique per shard; `(shard, ConnId)` is unique in the process).
pub type ConnId = u64;

/// One socket's membership of one channel.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    pub join_ref: Arc<str>,
    pub sender: WsSender,
    pub vsn: Vsn,
    /// `config.broadcast.self`: its own broadcasts come back to it.
    pub broadcast_self: bool,
    /// Receives broadcasts (a private channel needs the read policy).
    pub read_broadcast: bool,
    /// Receives presence diffs (presence enabled and, on a private channel, readable).
    pub presence: bool,
}

/// A broadcast crossing the shards.
#[derive(Debug)]
pub struct Broadcast {
    pub topic: TopicKey,
    pub frames: BroadcastFrames,
    /// The socket that sent it: skipped unless its channel asked for `self`.
    pub origin: Option<(usize, ConnId)>,
}

/// What Realtime's instances send each other (wrapped by the binary).
#[derive(Debug, Clone)]
pub enum RealtimeMessage {
    Broadcast(Arc<Broadcast>),
    Presence(Arc<PresenceDiff>),
    /// A committed transaction from the replication core (only the injector sends these).
    Changes(Arc<ChangeBatch>),
    /// The inspector's question: every shard adds its view.
    Inspect(Arc<Inspection>),
}

/// The inspector's question to every shard and their answers (an operator's request, never on
/// the path of a message: the one place Realtime's shards share a lock).
#[derive(Debug, Default)]
pub struct Inspection {
    pub views: std::sync::Mutex<Vec<serde_json::Value>>,
}

/// How broadcasts and presence leave this shard.
pub trait Fanout {
    /// Best effort: every other shard that has room.
    fn broadcast(&self, message: Arc<Broadcast>);
    /// In order, to every other shard.
    fn presence(&self, diff: Arc<PresenceDiff>);
}

/// Presence diffs waiting for one shard's ring, at most this many; past it a diff is dropped,
/// counted and logged (that shard's replica then lacks it until the socket leaves).
const ORDERED_QUEUE_MAX: usize = 65_536;
/// How often a waiting presence queue is offered again.
const ORDERED_RETRY: Duration = Duration::from_millis(2);

/// How long the inspector waits for the other shards.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The rings of this process as a [`Fanout`].
pub struct RingFanout {
    outbox: Outbox<RealtimeMessage>,
    /// Per target shard: diffs that found its ring full, in order.
    waiting: RefCell<Vec<VecDeque<Arc<PresenceDiff>>>>,
    pumping: Vec<Cell<bool>>,
    counters: Rc<Counters>,
}

impl RingFanout {
    pub fn new(outbox: Outbox<RealtimeMessage>, counters: Rc<Counters>) -> Rc<RingFanout> {
        let shards = outbox.shards();
        Rc::new(RingFanout {
            outbox,
            waiting: RefCell::new((0..shards).map(|_| VecDeque::new()).collect()),
            pumping: (0..shards).map(|_| Cell::new(false)).collect(),
            counters,
        })
    }

    /// Asks every shard for its view: this shard's is `mine`; waits at most 2 s for the others.
    pub async fn inspect(&self, mine: serde_json::Value) -> Vec<serde_json::Value> {
        let inspection = Arc::new(Inspection::default());
        if let Ok(mut views) = inspection.views.lock() {
            views.push(mine);
        }
        let _ = self.outbox.deliver_to_all(RealtimeMessage::Inspect(inspection.clone())).await;
        let deadline = std::time::Instant::now() + INSPECT_TIMEOUT;
        loop {
            let answered = inspection.views.lock().map_or(0, |v| v.len());
            if answered >= self.outbox.shards() || std::time::Instant::now() >= deadline {
                break;
            }
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut views = inspection.views.lock().map(|v| v.clone()).unwrap_or_default();
        views.sort_by_key(|v| v["shard"].as_u64());
        views
    }

    fn others(&self) -> impl Iterator<Item = usize> {
        let me = self.outbox.me();
        (0..self.outbox.shards()).filter(move |&to| to != me)
    }

    /// Offers the queue of `to` front first until its ring is full; true when it is empty.
    fn drain(&self, to: usize) -> bool {
        let mut waiting = self.waiting.borrow_mut();
        let queue = &mut waiting[to];
        while let Some(front) = queue.front() {
            if !self.outbox.offer(to, RealtimeMessage::Presence(front.clone())) {
                return false;
            }
            queue.pop_front();
        }
        true
    }

    fn pump(self: &Rc<Self>, to: usize) {
        if self.pumping[to].replace(true) {
            return;
        }
        let this = self.clone();
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(ORDERED_RETRY).await;
                if this.drain(to) {
                    this.pumping[to].set(false);
                    return;
                }
            }
        });
    }
}

impl Fanout for Rc<RingFanout> {
    fn broadcast(&self, message: Arc<Broadcast>) {
        for to in self.others() {
            if !self.outbox.offer(to, RealtimeMessage::Broadcast(message.clone())) {
                self.counters.broadcasts_dropped.set(self.counters.broadcasts_dropped.get() + 1);
            }
        }
    }

    fn presence(&self, diff: Arc<PresenceDiff>) {
        for to in self.others() {
            let queued = self.waiting.borrow()[to].len();
            if queued == 0 && self.outbox.offer(to, RealtimeMessage::Presence(diff.clone())) {
                continue;
            }
            if queued >= ORDERED_QUEUE_MAX {
                self.counters.presence_dropped.set(self.counters.presence_dropped.get() + 1);
                tracing::warn!(shard = to, "presence diff dropped: the queue to that shard is full");
                continue;
            }
            self.waiting.borrow_mut()[to].push_back(diff.clone());
            self.pump(to);
        }
    }
}

/// This shard's realtime counters (for `/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: Cell<u64>,
    pub channels: Cell<u64>,
    pub messages_in: Cell<u64>,
    pub messages_out: Cell<u64>,
    pub broadcasts_dropped: Cell<u64>,
    pub presence_dropped: Cell<u64>,
    pub slow_consumers: Cell<u64>,
    pub rate_limited: Cell<u64>,
    pub joins_refused: Cell<u64>,
    pub changes_delivered: Cell<u64>,
    pub changes_denied: Cell<u64>,
    pub rls_checks: Cell<u64>,
}

impl Counters {
    pub fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get().wrapping_add(n));
    }

    /// The counters as `/metrics` series.
    pub fn series(&self) -> Vec<ServiceSeries> {
        let s = |name, kind, help, cell: &Cell<u64>| ServiceSeries { name, kind, help, value: cell.get() };
        vec![
            s("madbase_realtime_connections", "gauge", "Realtime WebSockets open on the shard.", &self.connections),
            s("madbase_realtime_channels", "gauge", "Channels joined on the shard.", &self.channels),
            s(
                "madbase_realtime_messages_in_total",
                "counter",
                "Frames received from Realtime clients.",
                &self.messages_in,
            ),
            s(
                "madbase_realtime_messages_out_total",
                "counter",
                "Broadcast, presence and change frames queued to clients.",
                &self.messages_out,
            ),
            s(
                "madbase_realtime_broadcasts_dropped_total",
                "counter",
                "Broadcasts not handed to another shard: its ring was full.",
                &self.broadcasts_dropped,
            ),
            s(
                "madbase_realtime_presence_dropped_total",
                "counter",
                "Presence diffs dropped: the queue to a shard was full.",
                &self.presence_dropped,
            ),
            s(
                "madbase_realtime_slow_consumers_total",
                "counter",
                "Frames refused by a full send queue (the socket is closed, 1008).",
                &self.slow_consumers,
            ),
            s(
                "madbase_realtime_rate_limited_total",
                "counter",
                "Joins and messages refused by a rate limit.",
                &self.rate_limited,
            ),
            s("madbase_realtime_joins_refused_total", "counter", "Joins answered with an error.", &self.joins_refused),
            s(
                "madbase_realtime_changes_delivered_total",
                "counter",
                "Postgres-change frames queued to subscribers.",
                &self.changes_delivered,
            ),
            s(
                "madbase_realtime_changes_denied_total",
                "counter",
                "Postgres changes withheld from a subscriber by RLS.",
                &self.changes_denied,
            ),
            s(
                "madbase_realtime_rls_checks_total",
                "counter",
                "Subscriber groups checked against RLS.",
                &self.rls_checks,
            ),
        ]
    }
}

/// One shard's channels.
pub struct Hub {
    pub shard: usize,
    channels: RefCell<HashMap<TopicKey, Vec<Subscriber>>>,
    presence: RefCell<PresenceReplica>,
    fanout: Rc<RingFanout>,
    pub counters: Rc<Counters>,
}

impl Hub {
    pub fn new(outbox: Outbox<RealtimeMessage>) -> Hub {
        let counters = Rc::new(Counters::default());
        Hub {
            shard: outbox.me(),
            channels: RefCell::new(HashMap::new()),
            presence: RefCell::new(PresenceReplica::default()),
            fanout: RingFanout::new(outbox, counters.clone()),
            counters,
        }
    }

    /// Adds (or replaces) a socket's membership of a channel.
    pub fn subscribe(&self, topic: &TopicKey, subscriber: Subscriber) {
        let mut channels = self.channels.borrow_mut();
        let list = channels.entry(topic.clone()).or_default();
        list.retain(|s| s.conn != subscriber.conn);
        list.push(subscriber);
    }

    /// Changes a socket's membership in place (permissions after a new token).
    pub fn update(&self, topic: &TopicKey, conn: ConnId, f: impl FnOnce(&mut Subscriber)) {
        if let Some(s) = self.channels.borrow_mut().get_mut(topic).and_then(|l| l.iter_mut().find(|s| s.conn == conn)) {
            f(s);
        }
    }

    /// Removes a socket's membership of a channel.
    pub fn unsubscribe(&self, topic: &TopicKey, conn: ConnId) {
        let mut channels = self.channels.borrow_mut();
        if let Some(list) = channels.get_mut(topic) {
            list.retain(|s| s.conn != conn);
            if list.is_empty() {
                channels.remove(topic);
            }
        }
    }

    /// Sockets of this shard on a channel.
    pub fn subscribers(&self, topic: &TopicKey) -> usize {
        self.channels.borrow().get(topic).map_or(0, Vec::len)
    }

    /// Sends a broadcast from a socket of this shard (or the REST API) everywhere.
    pub fn publish_broadcast(&self, message: Arc<Broadcast>) {
        self.fanout.broadcast(message.clone());
        self.deliver_broadcast(&message);
    }

    /// Hands a broadcast to this shard's subscribers.
    pub fn deliver_broadcast(&self, message: &Broadcast) {
        let channels = self.channels.borrow();
        let Some(list) = channels.get(&message.topic) else { return };
        let origin = message.origin.filter(|(shard, _)| *shard == self.shard).map(|(_, conn)| conn);
        let mut sent = 0;
        for s in list {
            if !s.read_broadcast || (origin == Some(s.conn) && !s.broadcast_self) {
                continue;
            }
            if let Some(frame) = message.frames.for_vsn(s.vsn) {
                self.send(&s.sender, frame.clone());
                sent += 1;
            }
        }
        Counters::add(&self.counters.messages_out, sent);
    }

    /// Hands a `realtime.messages` row (`realtime.send`, `broadcast_changes`) to this shard's
    /// subscribers of its topic. Every shard gets the change batch, so nothing crosses the rings.
    pub fn deliver_db_message(&self, message: &DbMessage) {
        let topic = format!("realtime:{}", message.topic);
        let payload = UserPayload::Json(Bytes::copy_from_slice(message.payload.as_bytes()));
        if let Some(frames) = broadcast_frames(&topic, &message.event, &payload, None, false) {
            self.deliver_broadcast(&Broadcast { topic: (topic.into(), message.private), frames, origin: None });
        }
    }

    /// Sends one frame to one socket, counting a consumer that fell behind (the WebSocket layer
    /// closes it with 1008).
    pub fn send(&self, sender: &WsSender, message: madbase_http::ws::Message) -> bool {
        match sender.try_send(message) {
            Ok(()) => true,
            Err(madbase_http::ws::TrySendError::Full) => {
                Counters::add(&self.counters.slow_consumers, 1);
                false
            }
            Err(madbase_http::ws::TrySendError::Closed) => false,
        }
    }

    /// Publishes a presence change of this shard's sockets everywhere.
    pub fn publish_presence(&self, diff: PresenceDiff) {
        if diff.is_empty() {
            return;
        }
        let diff = Arc::new(diff);
        self.fanout.presence(diff.clone());
        self.apply_presence(&diff);
    }

    /// Applies a presence diff to the replica and tells this shard's subscribers.
    pub fn apply_presence(&self, diff: &PresenceDiff) {
        self.presence.borrow_mut().apply(diff);
        let channels = self.channels.borrow();
        let Some(list) = channels.get(&diff.topic) else { return };
        let payload = diff.payload();
        let mut frames: [Option<madbase_http::ws::Message>; 2] = [None, None];
        let mut sent = 0;
        for s in list.iter().filter(|s| s.presence) {
            let slot = &mut frames[usize::from(s.vsn == Vsn::V2)];
            let frame = slot.get_or_insert_with(|| frame(s.vsn, None, None, &diff.topic.0, "presence_diff", &payload));
            self.send(&s.sender, frame.clone());
            sent += 1;
        }
        Counters::add(&self.counters.messages_out, sent);
    }

    /// The `presence_state` payload of a channel.
    pub fn presence_state(&self, topic: &TopicKey) -> String {
        self.presence.borrow().state(topic)
    }

    /// Asks every shard for its view (the inspector).
    pub async fn inspect(&self, mine: serde_json::Value) -> Vec<serde_json::Value> {
        self.fanout.inspect(mine).await
    }
}
