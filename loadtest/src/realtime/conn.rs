//! One generated client: a TCP socket bound to one of the loopback source addresses, the
//! WebSocket handshake, `phx_join`, heartbeats every 25 s, and — by role — broadcasts sent at a
//! fixed rate or frames read and measured.
//!
//! Invariants: a connection holds one task, its socket and tungstenite's state (no read buffer
//! of ours; tungstenite's write buffer flushed per message, message and frame sizes bounded by
//! [`ws_config`]); the handshake permit is held until the join is answered (or fails), which
//! bounds the handshakes and joins in flight; the phase watch is the only way a connection is
//! told to start sending or to close.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::{interval_at, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::proto::{self, ChangeBinding, Vsn};
use super::stats::{now_us, Stats};

/// Phases the driver moves every connection through (a `watch` value).
pub const PHASE_HOLD: u8 = 0;
pub const PHASE_SEND: u8 = 1;
pub const PHASE_QUIET: u8 = 2;
pub const PHASE_CLOSE: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastFormat {
    Binary,
    Text,
}

/// Settings every connection reads.
pub struct ConnConfig {
    pub server: SocketAddr,
    /// `ws://host:port/realtime/v1/websocket?apikey=…&vsn=…`
    pub ws_url: String,
    pub vsn: Vsn,
    pub topic: String,
    pub apikey: String,
    /// Loopback source addresses 127.0.0.1 … 127.0.0.k (0: let the kernel choose).
    pub source_addrs: usize,
    pub heartbeat: Duration,
    pub connect_timeout: Duration,
    /// Send `phx_join` (off: bare WebSockets with heartbeats, to separate the socket's cost
    /// from the channel's).
    pub join: bool,
    /// `changes` mode: the binding, the secret user tokens are signed with, the timestamp and
    /// owner columns read from each change.
    pub changes: Option<ChangeBinding>,
    pub jwt_secret: String,
    pub ts_key: Vec<u8>,
    pub owner_key: Option<Vec<u8>>,
    /// Broadcast senders: per-sender interval, format, event name, padding.
    pub send_interval: Duration,
    pub broadcast_format: BroadcastFormat,
    pub broadcast_event: String,
    pub payload_pad: String,
    /// Print the `id` of every change each subscriber receives (stderr), to find lost rows.
    pub trace_changes: bool,
}

pub fn ws_config() -> WebSocketConfig {
    #[allow(deprecated)]
    WebSocketConfig {
        max_send_queue: None,
        // Each message goes to the socket when sent: no 128 KiB write buffer per connection.
        write_buffer_size: 0,
        max_write_buffer_size: 1 << 20,
        max_message_size: Some(4 << 20),
        max_frame_size: Some(4 << 20),
        accept_unmasked_frames: false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Subscriber,
    Sender,
}

/// `IP_BIND_ADDRESS_NO_PORT`: the port is chosen at `connect` for the 4-tuple, so each source
/// address gives the whole ephemeral range per destination.
fn bind_address_no_port(sock: &TcpSocket) {
    let one: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

async fn open(index: usize, cfg: &ConnConfig) -> Result<WebSocketStream<TcpStream>, String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {}", e.kind()))?;
    if cfg.source_addrs > 0 {
        let host = 1 + (index % cfg.source_addrs) as u8;
        bind_address_no_port(&sock);
        sock.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 0))
            .map_err(|e| format!("bind: {}", e.kind()))?;
    }
    let stream = sock.connect(cfg.server).await.map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    let (ws, _) = tokio_tungstenite::client_async_with_config(cfg.ws_url.as_str(), stream, Some(ws_config()))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

struct Conn {
    index: usize,
    role: Role,
    cfg: Arc<ConnConfig>,
    stats: Arc<Stats>,
    next_ref: u64,
    join_ref: String,
    join_sent: Option<Instant>,
    joined: bool,
    permit: Option<OwnedSemaphorePermit>,
    own_user: Option<String>,
    seq: u64,
}

impl Conn {
    fn next_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    /// The join was answered (or the socket ended before it was): the slot frees up.
    fn settle(&mut self) {
        self.permit = None;
    }

    fn on_text(&mut self, text: &str) {
        let s = &self.stats;
        let Some(f) = proto::parse_text(self.cfg.vsn, text) else {
            s.c.unparsed_in.fetch_add(1, Relaxed);
            return;
        };
        match f.event {
            "broadcast" => self.on_broadcast(f.payload.get().as_bytes()),
            "postgres_changes" => self.on_change(f.payload.get().as_bytes()),
            "phx_reply" => {
                let reply: Option<proto::Reply<'_>> = serde_json::from_str(f.payload.get()).ok();
                let ok = reply.as_ref().and_then(|r| r.status) == Some("ok");
                if f.topic == "phoenix" {
                    if ok {
                        s.c.heartbeats_ok.fetch_add(1, Relaxed);
                    } else {
                        s.error(format!("heartbeat reply: {}", f.payload.get()));
                    }
                } else if f.reference == Some(self.join_ref.as_str()) && self.join_sent.is_some() && !self.joined {
                    if let Some(t) = self.join_sent.take() {
                        s.join_latency.record(self.index, t.elapsed().as_micros() as i64);
                    }
                    if ok {
                        self.joined = true;
                        s.c.joins_ok.fetch_add(1, Relaxed);
                        s.c.joined.fetch_add(1, Relaxed);
                    } else {
                        s.c.joins_error.fetch_add(1, Relaxed);
                        let reason = reply.and_then(|r| r.response).map(|r| r.get().to_owned()).unwrap_or_default();
                        s.error(format!("join refused: {reason}"));
                    }
                    self.settle();
                } else if !ok {
                    s.error(format!("error reply: {}", truncate(f.payload.get(), 160)));
                }
            }
            "system" => match serde_json::from_str::<proto::System>(f.payload.get()) {
                Ok(sys) if sys.status.as_deref() == Some("ok") => {
                    s.c.system_ok.fetch_add(1, Relaxed);
                }
                Ok(sys) => {
                    s.c.system_error.fetch_add(1, Relaxed);
                    s.error(format!(
                        "system {}: {}",
                        sys.extension.unwrap_or_default(),
                        truncate(&sys.message.unwrap_or_default(), 160)
                    ));
                }
                Err(_) => {
                    s.c.unparsed_in.fetch_add(1, Relaxed);
                }
            },
            "presence_state" | "presence_diff" => {
                s.c.presence_in.fetch_add(1, Relaxed);
            }
            "phx_close" | "phx_error" => {
                s.c.channel_closed.fetch_add(1, Relaxed);
                s.error(format!("server sent {}", f.event));
                if self.joined {
                    self.joined = false;
                    s.c.joined.fetch_sub(1, Relaxed);
                }
            }
            _ => {
                s.c.other_in.fetch_add(1, Relaxed);
            }
        }
    }

    fn on_broadcast(&self, payload: &[u8]) {
        let s = &self.stats;
        if self.role == Role::Sender {
            // A sender hears the other senders (self: false); only subscribers are measured.
            return;
        }
        s.c.broadcasts_in.fetch_add(1, Relaxed);
        match proto::u64_after(payload, b"\"t\":") {
            Some(t) => {
                let now = now_us();
                s.delivered(self.index, now, now - t as i64);
            }
            None => {
                s.c.unparsed_in.fetch_add(1, Relaxed);
            }
        }
    }

    fn on_change(&self, payload: &[u8]) {
        let s = &self.stats;
        s.c.changes_in.fetch_add(1, Relaxed);
        if self.cfg.trace_changes {
            let record = payload.windows(9).position(|w| w == b"\"record\":").unwrap_or(0);
            let id = proto::u64_after(&payload[record..], b"\"id\":");
            eprintln!("trace: subscriber {} change id {}", self.index, id.map_or("?".to_owned(), |i| i.to_string()));
        }
        match proto::record_string(payload, &self.cfg.ts_key).and_then(proto::parse_timestamp_us) {
            Some(ts) => {
                let now = now_us();
                s.delivered(self.index, now, now - ts);
            }
            None => {
                s.c.unparsed_in.fetch_add(1, Relaxed);
                s.error(format!(
                    "change without a readable timestamp: {}",
                    truncate(&String::from_utf8_lossy(payload), 200)
                ));
            }
        }
        if let (Some(key), Some(own)) = (&self.cfg.owner_key, &self.own_user) {
            if proto::record_string(payload, key).is_some_and(|o| o != own.as_bytes()) {
                s.c.changes_foreign.fetch_add(1, Relaxed);
            }
        }
    }

    fn broadcast_message(&mut self) -> Message {
        self.seq += 1;
        let payload = format!("{{\"t\":{},\"s\":{},\"p\":\"{}\"}}", now_us(), self.seq, self.cfg.payload_pad);
        let reference = self.next_ref();
        let cfg = &self.cfg;
        match (cfg.vsn, cfg.broadcast_format) {
            (Vsn::V2, BroadcastFormat::Binary) => Message::Binary(proto::broadcast_kind3(
                &self.join_ref,
                &reference,
                &cfg.topic,
                &cfg.broadcast_event,
                &payload,
            )),
            _ => Message::Text(proto::broadcast_text(
                cfg.vsn,
                &self.join_ref,
                &reference,
                &cfg.topic,
                &cfg.broadcast_event,
                &payload,
            )),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

enum Event {
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Heartbeat,
    Send,
    Phase,
}

/// Runs connection `index` until the phase says close or the server ends it.
pub async fn run(
    index: usize,
    role: Role,
    cfg: Arc<ConnConfig>,
    stats: Arc<Stats>,
    mut phase: watch::Receiver<u8>,
    permit: OwnedSemaphorePermit,
) {
    stats.c.connect_started.fetch_add(1, Relaxed);
    let mut ws = match tokio::time::timeout(cfg.connect_timeout, open(index, &cfg)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            stats.c.connect_failed.fetch_add(1, Relaxed);
            stats.error(e);
            return;
        }
        Err(_) => {
            stats.c.connect_failed.fetch_add(1, Relaxed);
            stats.error("connect: timed out");
            return;
        }
    };
    stats.opened();
    let own_user = cfg.changes.as_ref().map(|_| proto::user_uuid(index));
    let token = match &cfg.changes {
        Some(_) => proto::user_token(&cfg.jwt_secret, index, (now_us() / 1_000_000) as u64),
        None => cfg.apikey.clone(),
    };
    let mut c = Conn {
        index,
        role,
        stats: stats.clone(),
        next_ref: 0,
        join_ref: String::new(),
        join_sent: None,
        joined: false,
        permit: Some(permit),
        own_user,
        seq: 0,
        cfg: cfg.clone(),
    };
    c.join_ref = c.next_ref();
    let join = proto::frame(
        cfg.vsn,
        Some(&c.join_ref),
        Some(&c.join_ref),
        &cfg.topic,
        "phx_join",
        &proto::join_payload(&token, cfg.changes.as_ref()),
    );
    let sent_join = if cfg.join {
        c.join_sent = Some(Instant::now());
        stats.c.joins_sent.fetch_add(1, Relaxed);
        ws.send(Message::Text(join)).await
    } else {
        c.settle();
        Ok(())
    };
    let mut wanted_close = false;
    if *phase.borrow() >= PHASE_CLOSE {
        wanted_close = true;
    } else if let Err(e) = sent_join {
        stats.error(format!("send join: {e}"));
    } else {
        // Heartbeats are spread over the interval so that they do not arrive all at once.
        let spread = cfg.heartbeat.as_millis().max(1) as u64;
        let first = tokio::time::Instant::now() + Duration::from_millis((index as u64 * 7919) % spread);
        let mut heartbeat = interval_at(first, cfg.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sending = role == Role::Sender && *phase.borrow() == PHASE_SEND;
        let mut send_tick = interval_at(tokio::time::Instant::now(), cfg.send_interval);
        send_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            let event = tokio::select! {
                biased;
                changed = phase.changed() => match changed {
                    Ok(()) => Event::Phase,
                    Err(_) => { wanted_close = true; break; }
                },
                frame = ws.next() => Event::Frame(frame),
                _ = heartbeat.tick() => Event::Heartbeat,
                _ = send_tick.tick(), if sending => Event::Send,
            };
            match event {
                Event::Phase => {
                    let p = *phase.borrow_and_update();
                    if p >= PHASE_CLOSE {
                        wanted_close = true;
                        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                        break;
                    }
                    let now_sending = role == Role::Sender && p == PHASE_SEND;
                    if now_sending && !sending {
                        send_tick.reset();
                    }
                    sending = now_sending;
                }
                Event::Heartbeat => {
                    let r = c.next_ref();
                    let hb = proto::frame(cfg.vsn, None, Some(&r), "phoenix", "heartbeat", "{}");
                    stats.c.heartbeats_sent.fetch_add(1, Relaxed);
                    if let Err(e) = ws.send(Message::Text(hb)).await {
                        stats.error(format!("send heartbeat: {e}"));
                        break;
                    }
                }
                Event::Send => {
                    let m = c.broadcast_message();
                    let now = now_us();
                    match ws.send(m).await {
                        Ok(()) => {
                            stats.c.broadcasts_sent.fetch_add(1, Relaxed);
                            stats.first_send_us.fetch_min(now, Relaxed);
                        }
                        Err(e) => {
                            stats.c.send_errors.fetch_add(1, Relaxed);
                            stats.error(format!("send broadcast: {e}"));
                            break;
                        }
                    }
                }
                Event::Frame(None) => {
                    stats.error("socket ended by the server");
                    break;
                }
                Event::Frame(Some(Err(e))) => {
                    stats.error(format!("read: {e}"));
                    break;
                }
                Event::Frame(Some(Ok(m))) => {
                    stats.c.frames_in.fetch_add(1, Relaxed);
                    match m {
                        Message::Text(t) => {
                            stats.c.bytes_in.fetch_add(t.len() as u64, Relaxed);
                            c.on_text(&t);
                        }
                        Message::Binary(b) => {
                            stats.c.bytes_in.fetch_add(b.len() as u64, Relaxed);
                            match proto::kind4_payload(&b) {
                                Some(p) => c.on_broadcast(p),
                                None => {
                                    stats.c.unparsed_in.fetch_add(1, Relaxed);
                                }
                            }
                        }
                        Message::Close(f) => {
                            let why = f.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                            stats.error(format!("server closed the socket: {why}"));
                            break;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    if c.permit.is_some() {
        stats.error("socket ended before the join was answered");
        c.settle();
    }
    if !wanted_close {
        stats.c.closed_by_server.fetch_add(1, Relaxed);
    }
    if c.joined {
        stats.c.joined.fetch_sub(1, Relaxed);
    }
    stats.c.open.fetch_sub(1, Relaxed);
}
