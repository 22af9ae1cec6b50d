//! WebSocket connections (RFC 6455) after a successful upgrade.
//!
//! Owns: [`WebSocket`] (the receiving side, driven by the handler through [`WebSocket::recv`]),
//! [`WsSender`] (cheap clones that enqueue outgoing messages), the writer task that drains the
//! send queue onto the socket, and [`Running`], the upgraded connection's future. Reads and
//! writes run concurrently on the split stream: the handler's task reads, a writer task writes
//! — spawned when something is queued and ended (the write half parked in the state) once the
//! queue is drained, so an idle connection holds no task. Invariants: the send queue is bounded
//! by [`WsConfig::send_queue_messages`] and [`WsConfig::send_queue_bytes`]; overflowing it closes
//! the connection with 1008 "slow consumer" (queued messages are dropped, the close frame is sent
//! if the socket accepts it within [`WsConfig::close_timeout`]); the bytes queued across all
//! WebSockets of a shard are bounded by [`WsConfig::shard_send_queue_bytes`] (a send that would
//! cross it closes its connection the same way, 1008 "shard send queue full"), and the shard's
//! gauge in `crate::stats` always equals the sum of the queues' `queued_bytes` (every change to
//! a queue goes through `State::push` / `pop` / `clear_queue`); control replies (pongs) are
//! bounded too; once a close is queued nothing else is accepted and the connection ends within
//! `close_timeout`; at most one writer runs per connection (the write half is either parked or
//! owned by it); no read or write is ever dropped in flight (see `crate::io`).
//!
//! Memory of an idle connection is what limits how many a box holds, so between messages the
//! socket waits with a 64-byte read buffer (a larger one — a large frame's, the HTTP head's — is
//! let go once drained), the writer's batch buffer and queue storage live only while it runs,
//! and the long-lived futures keep no timer inline (see `crate::io::boxed_sleep`).

pub mod frame;
pub mod handshake;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::io::AsyncWriteRent;
use monoio::time::Instant;

use crate::body::{ReadSide, Writer};
use crate::io::{read_buf, write_all, ReadOutcome};
use crate::stats::{self, Event};
pub use frame::{close_code, CloseFrame, Incoming, Message, OpCode, Utf8Bytes, WsDecoder, WsProtocolError};

/// Limits and timers of one WebSocket connection. `WsConfig::default()` gives the defaults.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Largest single frame payload accepted from the peer. Default 1 MiB. Larger → close 1009.
    pub max_frame_bytes: usize,
    /// Largest (reassembled) message accepted from the peer. Default 4 MiB. Larger → close 1009.
    pub max_message_bytes: usize,
    /// Most messages waiting in the send queue. Default 1024. Overflow → close 1008.
    pub send_queue_messages: usize,
    /// Most payload bytes waiting in the send queue. Default 8 MiB. Overflow → close 1008.
    pub send_queue_bytes: usize,
    /// Most payload bytes waiting in the send queues of all WebSockets on one shard together.
    /// Default 256 MiB (32 full `send_queue_bytes` queues): without it 16,384 connections × 8 MiB
    /// could queue 128 GiB. A send that would cross it closes that connection with 1008 ("shard
    /// send queue full"), as its own queue overflowing does: under memory pressure the consumer
    /// that is behind is cut, not everyone. The bound checked is the sending connection's value,
    /// so give every connection of a shard the same one. Payloads are counted per queue even
    /// when one `Bytes` is shared by many (a broadcast), so this over-counts shared memory.
    pub shard_send_queue_bytes: usize,
    /// Send a ping after this long without receiving anything. Default `Some(30 s)`.
    pub ping_interval: Option<Duration>,
    /// Close (1001, "idle timeout") after this long without receiving anything. Default
    /// `Some(120 s)`.
    pub idle_timeout: Option<Duration>,
    /// After a close is queued, the most time spent flushing it and waiting for the peer's
    /// close. Default 5 s.
    pub close_timeout: Duration,
    /// Longest wait for write progress before the connection is dropped. Default 30 s.
    pub write_timeout: Duration,
    /// Size of each socket read. Default 16 KiB.
    pub read_buffer_size: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_frame_bytes: 1024 * 1024,
            max_message_bytes: 4 * 1024 * 1024,
            send_queue_messages: 1024,
            send_queue_bytes: 8 * 1024 * 1024,
            shard_send_queue_bytes: 256 * 1024 * 1024,
            ping_interval: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(120)),
            close_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            read_buffer_size: 16 * 1024,
        }
    }
}

/// An error surfaced by [`WebSocket::recv`]. The connection is closing when one is returned.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WsError {
    /// The peer broke the protocol; a close with `e.close_code()` was queued.
    #[error(transparent)]
    Protocol(#[from] WsProtocolError),
    /// Socket error.
    #[error("websocket i/o error: {0}")]
    Io(Arc<std::io::Error>),
}

/// Why [`WsSender::try_send`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError {
    /// The send queue was full: the connection is being closed with 1008 "slow consumer".
    #[error("send queue full; connection closed as a slow consumer")]
    Full,
    /// The connection is closing or closed.
    #[error("websocket is closed")]
    Closed,
}

const MAX_CONTROL_QUEUE: usize = 16;
const WRITE_BATCH: usize = 64 * 1024;
const COPY_LIMIT: usize = 16 * 1024;
/// The buffer of a read that waits for the next message: enough for a heartbeat frame.
const IDLE_READ_BYTES: usize = 64;

#[derive(Default)]
struct State {
    queue: VecDeque<Message>,
    queued_bytes: usize,
    control: VecDeque<(OpCode, Bytes)>,
    close_out: Option<Bytes>,
    close_queued: bool,
    abort_at: Option<Instant>,
    /// The socket's write half while no writer task runs: a writer is spawned when there is
    /// something to write and parks the half here when the queue is drained, so an idle
    /// WebSocket holds no task.
    parked: Option<Writer>,
    writer_waker: Option<Waker>,
    reader_waker: Option<Waker>,
    writer_done: bool,
    dead: bool,
}

impl State {
    /// Queues a data message, counting its bytes here and in the shard's gauge.
    fn push(&mut self, msg: Message) {
        let len = msg.len();
        self.queued_bytes += len;
        stats::ws_queue_add(len);
        self.queue.push_back(msg);
    }

    /// Takes the next data message, uncounting its bytes.
    fn pop(&mut self) -> Option<Message> {
        let msg = self.queue.pop_front()?;
        let len = msg.len();
        debug_assert!(len <= self.queued_bytes, "websocket queue accounting went negative");
        self.queued_bytes = self.queued_bytes.saturating_sub(len);
        stats::ws_queue_sub(len);
        Some(msg)
    }

    /// Drops every queued data message, uncounting their bytes.
    fn clear_queue(&mut self) {
        self.queue.clear();
        stats::ws_queue_sub(self.queued_bytes);
        self.queued_bytes = 0;
    }

    /// Whether the writer has something to do: frames to send, or the connection to end.
    fn writer_has_work(&self) -> bool {
        self.dead || !self.control.is_empty() || !self.queue.is_empty() || self.close_out.is_some()
    }

    fn wake_reader(&mut self) {
        if let Some(w) = self.reader_waker.take() {
            w.wake();
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // The writer clears the queue when it ends; this covers a writer that never ran to its
        // end (runtime shut down), so the shard's gauge never keeps a dead connection's bytes.
        self.clear_queue();
    }
}

/// The sending side of a WebSocket: cheap to clone, usable from any task on the shard.
#[derive(Clone)]
pub struct WsSender {
    st: Rc<RefCell<State>>,
    cfg: Rc<WsConfig>,
}

impl std::fmt::Debug for WsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WsSender")
    }
}

impl WsSender {
    /// Queues a message without waiting. When the queue is full the connection is closed with
    /// 1008 ("slow consumer") and `Full` is returned. `Close` messages act like [`Self::close`].
    pub fn try_send(&self, msg: Message) -> Result<(), TrySendError> {
        if let Message::Close(c) = msg {
            let (code, reason) = c.map_or((close_code::NORMAL, Utf8Bytes::default()), |c| (c.code, c.reason));
            self.close(code, &reason);
            return Ok(());
        }
        let mut s = self.st.borrow_mut();
        if s.close_queued || s.dead {
            return Err(TrySendError::Closed);
        }
        if let Message::Ping(p) | Message::Pong(p) = &msg {
            if s.control.len() >= MAX_CONTROL_QUEUE || p.len() > 125 {
                return Err(TrySendError::Full);
            }
        }
        match msg {
            Message::Ping(p) => s.control.push_back((OpCode::Ping, p)),
            Message::Pong(p) => s.control.push_back((OpCode::Pong, p)),
            msg => {
                let len = msg.len();
                if s.queue.len() >= self.cfg.send_queue_messages
                    || s.queued_bytes.saturating_add(len) > self.cfg.send_queue_bytes
                {
                    drop(s);
                    tracing::info!(
                        queued_limit = self.cfg.send_queue_messages,
                        "websocket slow consumer; closing 1008"
                    );
                    stats::count(Event::WsSlowConsumer);
                    self.close_inner(close_code::POLICY, "slow consumer", true);
                    return Err(TrySendError::Full);
                }
                if stats::ws_queued().saturating_add(len) > self.cfg.shard_send_queue_bytes {
                    drop(s);
                    tracing::info!(
                        shard_limit = self.cfg.shard_send_queue_bytes,
                        "websocket send would exceed the shard's queued bytes; closing 1008"
                    );
                    stats::count(Event::WsShardQueueFull);
                    self.close_inner(close_code::POLICY, "shard send queue full", true);
                    return Err(TrySendError::Full);
                }
                s.push(msg);
            }
        }
        self.wake_writer(&mut s);
        Ok(())
    }

    /// Starts the close handshake: queued messages are still sent, then a close frame with
    /// `code` and `reason` (truncated to 123 bytes). Nothing can be sent afterwards.
    pub fn close(&self, code: u16, reason: &str) {
        self.close_inner(code, reason, false);
    }

    /// True once a close was queued or the connection failed.
    pub fn is_closed(&self) -> bool {
        let s = self.st.borrow();
        s.close_queued || s.dead
    }

    /// Messages waiting in the send queue.
    pub fn queued(&self) -> usize {
        self.st.borrow().queue.len()
    }

    fn close_inner(&self, code: u16, reason: &str, drop_queue: bool) {
        let mut s = self.st.borrow_mut();
        if s.close_queued {
            return;
        }
        s.close_queued = true;
        s.close_out = Some(frame::close_payload(code, reason));
        s.abort_at = Some(Instant::now() + self.cfg.close_timeout);
        if drop_queue {
            s.clear_queue();
        }
        self.wake_writer(&mut s);
        s.wake_reader();
    }

    /// Wakes the writer task, or spawns one with the parked write half.
    fn wake_writer(&self, s: &mut State) {
        if let Some(w) = s.writer_waker.take() {
            w.wake();
        } else if let Some(w) = s.parked.take() {
            monoio::spawn(write_queued(w, self.st.clone(), self.cfg.clone()));
        }
    }

    fn push_control(&self, op: OpCode, payload: Bytes) {
        let mut s = self.st.borrow_mut();
        if s.close_queued || s.dead {
            return;
        }
        if s.control.len() >= MAX_CONTROL_QUEUE {
            s.control.pop_front();
        }
        s.control.push_back((op, payload));
        self.wake_writer(&mut s);
    }
}

/// The receiving side of an upgraded connection, handed to the upgrade closure.
///
/// Drive it with [`WebSocket::recv`]: pings are answered, keep-alive pings sent and idle
/// timeouts enforced only while `recv` is being awaited. Dropping it closes the connection
/// (1000 unless a close was already queued).
pub struct WebSocket {
    rs: Option<ReadSide>,
    slot: Rc<RefCell<Option<ReadSide>>>,
    decoder: WsDecoder,
    sender: WsSender,
    last_rx: Instant,
    next_ping: Option<Instant>,
    shutdown: Option<Pin<Box<dyn Future<Output = ()>>>>,
    finished: bool,
    request_id: String,
    peer: SocketAddr,
}

/// What [`WebSocket::recv`] returns: a message (or the peer's close), a protocol or I/O error,
/// or `None` once the connection is over.
type Recv = Option<Result<Message, WsError>>;

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket").field("request_id", &self.request_id).field("peer", &self.peer).finish()
    }
}

impl WebSocket {
    /// A sender for this connection (clone it freely).
    pub fn sender(&self) -> WsSender {
        self.sender.clone()
    }

    /// The upgrade request's correlation id.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The peer address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Shorthand for `self.sender().try_send(msg)`.
    pub fn try_send(&self, msg: Message) -> Result<(), TrySendError> {
        self.sender.try_send(msg)
    }

    /// Starts the close handshake (see [`WsSender::close`]).
    pub fn close(&self, code: u16, reason: &str) {
        self.sender.close(code, reason);
    }

    /// The next complete `Text`/`Binary` message, or the peer's `Close` (after which `None`).
    /// `None` when the connection is over. A protocol violation is returned once as an error
    /// after the matching close (1002/1007/1009) was queued.
    pub async fn recv(&mut self) -> Option<Result<Message, WsError>> {
        let cfg = self.sender.cfg.clone();
        loop {
            if self.finished {
                return None;
            }
            self.rs.as_ref()?;
            if let Some(got) = self.decode_buffered(&cfg) {
                return got;
            }
            let now = Instant::now();
            let (dead, abort_at) = {
                let s = self.sender.st.borrow();
                (s.dead, s.abort_at)
            };
            if dead || abort_at.is_some_and(|t| t <= now) {
                self.finished = true;
                return None;
            }
            let idle_at = cfg.idle_timeout.map(|d| self.last_rx + d);
            let deadline =
                [abort_at, idle_at, self.next_ping.filter(|_| abort_at.is_none())].into_iter().flatten().min();
            let (outcome, shutdown_hit) = self.read_more(&cfg, deadline, abort_at).await?;
            if let Some(got) = self.after_read(&cfg, outcome, shutdown_hit, idle_at) {
                return got;
            }
        }
    }

    /// Decodes what is buffered, answering pings on the way. `Some` with what `recv` returns
    /// (a message, the close, a protocol error), `None` when more bytes are needed.
    fn decode_buffered(&mut self, cfg: &WsConfig) -> Option<Recv> {
        loop {
            let rs = self.rs.as_mut()?;
            let inc = match self.decoder.decode(&mut rs.buf) {
                Ok(Some(inc)) => inc,
                Ok(None) => return None,
                Err(e) => {
                    self.finished = true;
                    tracing::debug!(request_id = %self.request_id, error = %e, "websocket protocol error");
                    self.sender.close_inner(e.close_code(), &e.to_string(), false);
                    return Some(Some(Err(WsError::Protocol(e))));
                }
            };
            self.touch(cfg);
            match inc {
                Incoming::Ping(p) => self.sender.push_control(OpCode::Pong, p),
                Incoming::Pong(_) => {}
                Incoming::Message(m) => return Some(Some(Ok(m))),
                Incoming::Close(c) => {
                    self.finished = true;
                    let code = c.as_ref().map_or(close_code::NORMAL, |c| c.code);
                    self.sender.close_inner(code, "", false);
                    return Some(Some(Ok(Message::Close(c))));
                }
            }
        }
    }

    /// One read into the buffer, bounded by `deadline`, that stops early when shutdown begins
    /// (then the second value is true), the sender dies or the abort deadline moves. `None`
    /// without a read side.
    async fn read_more(
        &mut self,
        cfg: &WsConfig,
        deadline: Option<Instant>,
        abort_at: Option<Instant>,
    ) -> Option<(ReadOutcome, bool)> {
        let rs = self.rs.as_mut()?;
        // Between messages the socket waits with a small buffer: most WebSockets idle most of
        // the time, and the read in flight pins its buffer for as long as it waits. A frame
        // that has begun is read on in `read_buffer_size` steps. An empty buffer larger than
        // the idle size (a large frame's, the HTTP head's) is let go: its bytes live on only
        // in the messages handed out.
        let reserve = if rs.buf.is_empty() {
            if rs.buf.capacity() > IDLE_READ_BYTES {
                rs.buf = BytesMut::with_capacity(IDLE_READ_BYTES);
            }
            IDLE_READ_BYTES
        } else {
            cfg.read_buffer_size
        };
        let st = self.sender.st.clone();
        let mut shutdown_hit = false;
        let shutdown = &mut self.shutdown;
        let buf = std::mem::take(&mut rs.buf);
        let (outcome, buf) = read_buf(&mut rs.io, buf, reserve, deadline, |cx| {
            if let Some(f) = shutdown.as_mut() {
                if f.as_mut().poll(cx).is_ready() {
                    shutdown_hit = true;
                    return Poll::Ready(());
                }
            }
            let mut s = st.borrow_mut();
            if s.dead || s.abort_at != abort_at {
                return Poll::Ready(());
            }
            s.reader_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        rs.buf = buf;
        Some((outcome, shutdown_hit))
    }

    /// Acts on how a read ended: `Some` with what `recv` returns when the connection is over,
    /// `None` to go on (after closing for shutdown or idleness, or sending a due ping).
    fn after_read(
        &mut self,
        cfg: &WsConfig,
        outcome: ReadOutcome,
        shutdown_hit: bool,
        idle_at: Option<Instant>,
    ) -> Option<Recv> {
        match outcome {
            ReadOutcome::Data(_) => self.touch(cfg),
            ReadOutcome::Eof => {
                self.finished = true;
                return Some(None);
            }
            ReadOutcome::Error(e) => {
                self.finished = true;
                return Some(Some(Err(WsError::Io(Arc::new(e)))));
            }
            ReadOutcome::Interrupted => {
                if shutdown_hit {
                    self.shutdown = None;
                    self.sender.close_inner(close_code::GOING_AWAY, "server shutting down", false);
                }
            }
            ReadOutcome::Timeout => {
                let now = Instant::now();
                if idle_at.is_some_and(|t| t <= now) {
                    self.sender.close_inner(close_code::GOING_AWAY, "idle timeout", false);
                } else if self.next_ping.is_some_and(|t| t <= now) {
                    self.sender.push_control(OpCode::Ping, Bytes::new());
                    self.next_ping = cfg.ping_interval.map(|d| now + d);
                }
            }
        }
        None
    }

    fn touch(&mut self, cfg: &WsConfig) {
        self.last_rx = Instant::now();
        self.next_ping = cfg.ping_interval.map(|d| self.last_rx + d);
    }
}

impl Drop for WebSocket {
    fn drop(&mut self) {
        let code = if std::thread::panicking() { close_code::INTERNAL } else { close_code::NORMAL };
        self.sender.close_inner(code, "", false);
        if let Some(rs) = self.rs.take() {
            *self.slot.borrow_mut() = Some(rs);
        }
    }
}

/// Sets up an upgraded connection and returns it running: the handler's closure on the
/// reader (a writer task runs while there is something to write), then the wait (bounded by
/// `close_timeout`) for the close to flush. It ends with the read side, for the linger.
pub(crate) fn run_upgraded(
    rs: ReadSide,
    writer: Writer,
    cfg: WsConfig,
    run: crate::response::UpgradeFn,
    shutdown: Option<Pin<Box<dyn Future<Output = ()>>>>,
    request_id: String,
    peer: SocketAddr,
) -> Running {
    let cfg = Rc::new(cfg);
    let mut state = State::default();
    state.parked = Some(writer);
    let sender = WsSender { st: Rc::new(RefCell::new(state)), cfg: cfg.clone() };
    let slot = Rc::new(RefCell::new(None));
    let now = Instant::now();
    let ws = WebSocket {
        rs: Some(rs),
        slot: slot.clone(),
        decoder: WsDecoder::new(cfg.max_frame_bytes, cfg.max_message_bytes),
        sender: sender.clone(),
        last_rx: now,
        next_ping: cfg.ping_interval.map(|d| now + d),
        shutdown,
        finished: false,
        request_id: request_id.clone(),
        peer,
    };
    Running { handler: Some(crate::server::CatchUnwind::boxed(run(ws))), sender, slot, request_id }
}

/// An upgraded connection at work, written out as a state machine rather than an `async`
/// block: an idle socket holds it for hours, and it keeps only these fields.
pub(crate) struct Running {
    /// The handler's future, until it ends.
    handler: Option<crate::server::CatchUnwind<dyn Future<Output = ()>>>,
    sender: WsSender,
    /// Where the dropped WebSocket leaves its read side.
    slot: Rc<RefCell<Option<ReadSide>>>,
    request_id: String,
}

impl Future for Running {
    type Output = Option<ReadSide>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(handler) = this.handler.as_mut() {
            let Poll::Ready(ended) = Pin::new(handler).poll(cx) else { return Poll::Pending };
            if ended.is_err() {
                tracing::error!(request_id = %this.request_id, "websocket handler panicked");
            }
            this.handler = None;
            // The WebSocket is gone (its Drop queued a close if none was); the writer ends
            // within close_timeout of that.
            this.sender.close_inner(close_code::NORMAL, "", false);
        }
        let mut s = this.sender.st.borrow_mut();
        if !s.writer_done {
            s.reader_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        drop(s);
        Poll::Ready(this.slot.borrow_mut().take())
    }
}

/// Writes what is queued, then parks the write half in the state and ends (the next send
/// spawns a writer again); ends for good once the close frame is out or the socket failed.
async fn write_queued(mut w: Writer, st: Rc<RefCell<State>>, cfg: Rc<WsConfig>) {
    // Lives only while this writer runs: a 64 KiB batch buffer held by each of 16,384 idle
    // subscribers would be 1 GiB per shard.
    let mut wbuf = BytesMut::new();
    loop {
        {
            let mut s = st.borrow_mut();
            if !s.writer_has_work() {
                // A waker left by the last write's abort watch belongs to this ending task.
                s.writer_waker = None;
                if s.queue.capacity() > 0 {
                    s.queue = VecDeque::new();
                }
                s.parked = Some(w);
                return;
            }
        }
        let mut large: Option<Bytes> = None;
        let mut final_close = false;
        {
            let mut s = st.borrow_mut();
            if s.dead {
                break;
            }
            while let Some((op, p)) = s.control.pop_front() {
                frame::encode_header(&mut wbuf, true, op, p.len());
                wbuf.extend_from_slice(&p);
            }
            while wbuf.len() < WRITE_BATCH && large.is_none() {
                let Some(m) = s.pop() else { break };
                let (op, payload) = match m {
                    Message::Text(t) => (OpCode::Text, t.into_bytes()),
                    Message::Binary(b) => (OpCode::Binary, b),
                    Message::Ping(p) => (OpCode::Ping, p),
                    Message::Pong(p) => (OpCode::Pong, p),
                    Message::Close(_) => continue,
                };
                frame::encode_header(&mut wbuf, true, op, payload.len());
                if payload.len() <= COPY_LIMIT {
                    wbuf.extend_from_slice(&payload);
                } else {
                    large = Some(payload);
                }
            }
            if s.queue.is_empty() && large.is_none() {
                if let Some(p) = s.close_out.take() {
                    frame::encode_header(&mut wbuf, true, OpCode::Close, p.len());
                    wbuf.extend_from_slice(&p);
                    final_close = true;
                }
            }
        }
        let abort = |cx: &mut std::task::Context<'_>| {
            let mut s = st.borrow_mut();
            if s.dead {
                return Poll::Ready(None);
            }
            if let Some(t) = s.abort_at {
                return Poll::Ready(Some(t));
            }
            s.writer_waker = Some(cx.waker().clone());
            Poll::Pending
        };
        let (r, b) = write_all(&mut w, std::mem::take(&mut wbuf), cfg.write_timeout, abort).await;
        wbuf = b;
        wbuf.clear();
        let mut ok = r.is_ok();
        if let (true, Some(p)) = (ok, large) {
            ok = write_all(&mut w, p, cfg.write_timeout, abort).await.0.is_ok();
        }
        if !ok {
            st.borrow_mut().dead = true;
            break;
        }
        if final_close {
            let _ = w.shutdown().await;
            break;
        }
    }
    let mut s = st.borrow_mut();
    s.writer_done = true;
    s.writer_waker = None;
    s.clear_queue();
    s.control.clear();
    s.wake_reader();
}
