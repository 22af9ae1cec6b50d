//! One WebSocket on `/realtime/v1/websocket`: the Phoenix channel protocol of realtime-js
//! (reference/realtime.md §3–§11) — heartbeats, joins and leaves, broadcasts, presence, access
//! tokens, and the server's own closes.
//!
//! Owns: [`Session`] (the socket's channels, keyed by topic, with each channel's token, claims,
//! permissions, presence and Postgres-change bindings) and its rate windows.
//!
//! Invariants: only the socket's own task reads frames (the read is never raced in a `select!`);
//! a channel's token expiry is queued in the shard's [`crate::expiry::Expiries`] under a key
//! the channel holds, and every exit and token change removes it, so a stale expiry never closes
//! a re-joined channel and none outlives its socket; a channel is in the hub, the presence replica
//! and the change router exactly while it is in `channels` (every exit path — leave, server
//! close, duplicate join, socket end — goes through [`Session::drop_channel`]); every reply
//! echoes the request's `join_ref` and `ref`; nothing a client sends can panic the shard.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use madbase_core::jwt::{unix_now, Claims, JwtError};
use madbase_http::ws::{Message, WebSocket, WsSender};
use serde_json::{Map, Value};

use crate::authorize::ChannelPermissions;
use crate::expiry::ExpiryKey;
use crate::hub::{Broadcast, ConnId, Counters, Subscriber};
use crate::presence::{meta_json, PresenceDiff, TopicKey};
use crate::protocol::{
    broadcast_frames, decode_binary, decode_text, error_reply, frame, reply, system_payload, InPayload, Inbound,
    UserPayload, Vsn,
};
use crate::{pgchanges, private, Inner};

/// The identity a channel runs under: the verified token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: String,
    pub role: String,
    pub claims: Rc<Claims>,
}

/// One joined channel.
struct Channel {
    key: TopicKey,
    join_ref: Arc<str>,
    sub_topic: String,
    ack: bool,
    broadcast_self: bool,
    presence_key: Arc<str>,
    presence_enabled: bool,
    /// The meta this socket tracks on the channel, with the payload it was made from.
    tracked: Option<(crate::presence::Meta, String)>,
    caller: Caller,
    permissions: ChannelPermissions,
    bindings: Vec<pgchanges::Binding>,
    /// Bindings refused (sent as `postgres_changes` system errors after the join).
    binding_errors: Vec<pgchanges::BindingError>,
    /// `config.broadcast.replay`: (since, limit), done once after the join.
    replay: Option<(i64, usize)>,
    /// How its change frames look (current API with or without positions, or the old API).
    form: pgchanges::PayloadForm,
    /// Its entry in the shard's token-expiry queue.
    expiry: Option<ExpiryKey>,
}

/// A socket's channels, found by topic. A socket has a few at most (`max_channels_per_client`),
/// so a vector searched linearly beats a hash map, whose bucket array would hold several
/// channels' worth of memory for one — and an idle socket's size is what limits a box.
#[derive(Default)]
struct Channels(Vec<Channel>);

impl Channels {
    fn get(&self, topic: &str) -> Option<&Channel> {
        self.0.iter().find(|c| &*c.key.0 == topic)
    }

    fn get_mut(&mut self, topic: &str) -> Option<&mut Channel> {
        self.0.iter_mut().find(|c| &*c.key.0 == topic)
    }

    fn contains_key(&self, topic: &str) -> bool {
        self.get(topic).is_some()
    }

    fn insert(&mut self, channel: Channel) {
        debug_assert!(!self.contains_key(&channel.key.0), "a topic is joined once per socket");
        // Exactly one more: a vector's first growth would make room for four channels.
        self.0.reserve_exact(1);
        self.0.push(channel);
    }

    fn remove(&mut self, topic: &str) -> Option<Channel> {
        let at = self.0.iter().position(|c| &*c.key.0 == topic)?;
        Some(self.0.swap_remove(at))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn topics(&self) -> impl Iterator<Item = String> + '_ {
        self.0.iter().map(|c| c.key.0.to_string())
    }

    fn values(&self) -> impl Iterator<Item = &Channel> {
        self.0.iter()
    }
}

/// Counts events in one-second windows.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u64,
}

impl Window {
    fn new() -> Window {
        Window { started: Instant::now(), count: 0 }
    }

    /// Adds `n`; false when the window's count would pass `limit`.
    fn admit(&mut self, n: u64, limit: u64) -> bool {
        let now = Instant::now();
        if now.duration_since(self.started) >= crate::settings::Realtime::RATE_WINDOW {
            self.started = now;
            self.count = 0;
        }
        if self.count + n > limit {
            return false;
        }
        self.count += n;
        true
    }
}

struct Rates {
    events: Window,
    joins: Window,
    presence: Window,
    bytes: Window,
}

/// One socket.
pub struct Session {
    pub id: ConnId,
    vsn: Vsn,
    sender: WsSender,
    /// The `apikey` the socket connected with: a join without `access_token` runs under it.
    apikey: String,
    inner: Rc<Inner>,
    channels: RefCell<Channels>,
    rates: RefCell<Rates>,
    /// Admitted past `max_concurrent_users`: every join is refused.
    over_limit: bool,
}

/// Why a join was refused: the reply's `reason` (Supabase's `Code: message`).
type Refusal = String;

fn flag(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// Seconds since a token's `exp`, read without verification (only for the refusal's text).
fn expired_seconds_ago(token: &str) -> u64 {
    use base64::Engine;
    let exp = token
        .split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("exp").and_then(Value::as_u64));
    exp.map_or(0, |exp| unix_now().saturating_sub(exp))
}

impl Session {
    pub fn new(inner: Rc<Inner>, id: ConnId, vsn: Vsn, sender: WsSender, apikey: String, over_limit: bool) -> Session {
        Session {
            id,
            vsn,
            sender,
            apikey,
            inner,
            channels: RefCell::new(Channels::default()),
            rates: RefCell::new(Rates {
                events: Window::new(),
                joins: Window::new(),
                presence: Window::new(),
                bytes: Window::new(),
            }),
            over_limit,
        }
    }

    /// Reads frames until the socket ends, then leaves every channel and unregisters the socket
    /// (which `RealtimeService::websocket` registered).
    pub async fn run(self: Rc<Self>, mut ws: WebSocket) {
        while let Some(next) = ws.recv().await {
            let inbound = match next {
                Ok(Message::Text(text)) => decode_text(self.vsn, text.as_str()),
                Ok(Message::Binary(bytes)) if self.vsn == Vsn::V2 => decode_binary(&bytes),
                Ok(Message::Binary(_)) => {
                    tracing::debug!(conn = self.id, "binary frame on a vsn 1 socket ignored");
                    continue;
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            Counters::add(&self.inner.hub.counters.messages_in, 1);
            match inbound {
                Ok(inbound) => {
                    // Joins and new tokens may ask PostgreSQL; their futures are boxed so the
                    // socket's own (long-lived) future stays small.
                    if let Some(pending) = self.handle(inbound) {
                        pending.await;
                    }
                }
                Err(error) => {
                    // Phoenix ignores what it cannot decode; logging is all a malformed frame gets.
                    tracing::debug!(conn = self.id, %error, "malformed realtime frame ignored");
                }
            }
        }
        let topics: Vec<String> = self.channels.borrow().topics().collect();
        for topic in topics {
            self.drop_channel(&topic);
        }
        let inner = &self.inner;
        inner.sessions.borrow_mut().remove(&self.id);
        inner.shared.users.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let c = &inner.hub.counters.connections;
        c.set(c.get().saturating_sub(1));
    }

    /// This socket for the inspector: its channels and their subscriptions.
    pub fn describe(&self) -> Value {
        let channels: Vec<Value> = self
            .channels
            .borrow()
            .values()
            .map(|c| {
                serde_json::json!({
                    "topic": &*c.key.0,
                    "private": c.key.1,
                    "role": c.caller.role,
                    "postgres_changes": c.bindings.len(),
                    "presence": c.tracked.is_some(),
                })
            })
            .collect();
        serde_json::json!({ "id": self.id, "vsn": if self.vsn == Vsn::V1 { "1.0.0" } else { "2.0.0" }, "channels": channels })
    }

    fn send(&self, message: Message) {
        self.inner.hub.send(&self.sender, message);
    }

    fn reply_ok(&self, m: &Inbound, response: &str) {
        self.send(reply(self.vsn, m.join_ref.as_deref(), m.reference.as_deref(), &m.topic, true, response));
    }

    fn reply_error(&self, m: &Inbound, reason: &str) {
        self.send(error_reply(self.vsn, m.join_ref.as_deref(), m.reference.as_deref(), &m.topic, reason));
    }

    /// Handles one frame; `Some` with the rest of the work when it must wait (a join, a new
    /// token), which the socket's task awaits before reading on.
    fn handle(self: &Rc<Self>, m: Inbound) -> Option<Pin<Box<dyn Future<Output = ()>>>> {
        if m.topic == "phoenix" {
            if m.event == "heartbeat" {
                self.reply_ok(&m, "{}");
            }
            return None;
        }
        match m.event.as_str() {
            "phx_join" => return Some(Box::pin(self.clone().join(m))),
            _ if !self.channels.borrow().contains_key(&m.topic) => {
                // Phoenix's answer to a push on a topic the socket has not joined.
                self.reply_error(&m, "unmatched topic");
                return None;
            }
            _ => {}
        }
        match m.event.as_str() {
            "phx_leave" => {
                self.drop_channel(&m.topic);
                self.reply_ok(&m, "{}");
            }
            "access_token" => return Some(Box::pin(self.clone().access_token(m))),
            "broadcast" => self.broadcast(m),
            "presence" => self.presence(m),
            other => tracing::debug!(conn = self.id, event = other, "unknown realtime event ignored"),
        }
        None
    }

    /// Verifies a token for a channel: Supabase's refusal texts.
    fn verify(&self, token: &str) -> Result<Caller, Refusal> {
        let verified = self.inner.ctx.tokens.borrow_mut().verify(token);
        let claims = match verified {
            Ok(claims) => claims,
            Err(JwtError::Expired) => {
                return Err(format!("InvalidJWTToken: Token has expired {} seconds ago", expired_seconds_ago(token)))
            }
            Err(JwtError::Signature | JwtError::NoKey | JwtError::Algorithm) => {
                return Err("JwtSignatureError: Failed to validate JWT signature".to_owned())
            }
            Err(_) => return Err("MalformedJWT: The token provided is not a valid JWT".to_owned()),
        };
        let role = match (claims.role(), claims.exp) {
            (Some(role), Some(_)) => role.to_owned(),
            _ => return Err("InvalidJWTToken: Fields `role` and `exp` are required in JWT".to_owned()),
        };
        if role.is_empty()
            || role.eq_ignore_ascii_case("none")
            || madbase_core::identity::SERVICE_ROLES.contains(&role.as_str())
        {
            return Err("InvalidJWTToken: Fields `role` and `exp` are required in JWT".to_owned());
        }
        Ok(Caller { token: token.to_owned(), role, claims })
    }

    async fn join(self: Rc<Self>, m: Inbound) {
        let settings = &self.inner.settings;
        if !self.rates.borrow_mut().joins.admit(1, u64::from(settings.max_joins_per_second)) {
            Counters::add(&self.inner.hub.counters.rate_limited, 1);
            self.reply_error(&m, "ClientJoinRateLimitReached: Too many joins per second");
            self.sender.close(1008, "too many joins");
            return;
        }
        match self.admit_join(&m).await {
            Ok(response) => {
                self.reply_ok(&m, &response);
                self.after_join(&m.topic);
                self.replay(&m.topic).await;
            }
            Err(reason) => {
                Counters::add(&self.inner.hub.counters.joins_refused, 1);
                self.reply_error(&m, &reason);
            }
        }
    }

    /// Checks and registers a join; the reply's response on success.
    async fn admit_join(&self, m: &Inbound) -> Result<String, Refusal> {
        let settings = self.inner.settings.clone();
        if self.over_limit {
            return Err("ConnectionRateLimitReached: Too many connected users".to_owned());
        }
        let Some(sub_topic) = m.topic.strip_prefix("realtime:") else {
            return Err("Unknown Error on Channel".to_owned());
        };
        let empty = Map::new();
        let payload = match &m.payload {
            InPayload::Json(Value::Object(p)) => p,
            _ => &empty,
        };
        // A second join of a joined topic replaces the first, as Phoenix does.
        if let Some(old) = self.channels.borrow().get(&m.topic).map(|c| c.join_ref.clone()) {
            self.send(frame(self.vsn, Some(&old), Some(&old), &m.topic, "phx_close", "{}"));
        }
        self.drop_channel(&m.topic);
        if self.channels.borrow().len() >= settings.max_channels_per_client {
            return Err("ChannelRateLimitReached: Too many channels".to_owned());
        }
        let token = payload.get("access_token").and_then(Value::as_str).unwrap_or(&self.apikey).to_owned();
        let caller = self.verify(&token)?;
        let config = payload.get("config").and_then(Value::as_object).unwrap_or(&empty);
        let private = flag(config.get("private"));
        if settings.private_only && !private {
            return Err("PrivateOnly: This project only allows private channels".to_owned());
        }
        let broadcast = config.get("broadcast").and_then(Value::as_object).unwrap_or(&empty);
        let replay = broadcast.get("replay").and_then(Value::as_object);
        if replay.is_some() && !private {
            return Err("UnableToReplayMessages: Replay is not allowed for public channels".to_owned());
        }
        let replay = replay.map(|r| {
            let since = r.get("since").and_then(Value::as_i64).unwrap_or(0);
            let limit = r.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
            (since, limit.clamp(1, crate::settings::REPLAY_LIMIT_MAX))
        });
        let presence = config.get("presence").and_then(Value::as_object).unwrap_or(&empty);
        let permissions = if private {
            let p = private::check(&self.inner, &caller, sub_topic).await?;
            if !p.read_broadcast {
                return Err(format!(
                    "Unauthorized: You do not have permissions to read from this Channel topic: {sub_topic}"
                ));
            }
            p
        } else {
            ChannelPermissions::PUBLIC
        };
        // A join without `config` is the old API: the topic names the table (and filter).
        let legacy = !payload.contains_key("config");
        let (mut bindings, mut binding_errors, response) = if legacy {
            match pgchanges::legacy_binding(sub_topic) {
                Ok(binding) => (vec![binding], Vec::new(), "{}".to_owned()),
                Err(error) => (Vec::new(), vec![error], "{}".to_owned()),
            }
        } else {
            pgchanges::bindings(config.get("postgres_changes"))
        };
        pgchanges::drop_missing_tables(&self.inner.ctx, &mut bindings, &mut binding_errors).await;
        // MadBase's extension: `{"position": "<lsn>:<index>" | null}` — payloads carry positions,
        // and the changes after the given one that this shard still holds are replayed.
        let resume = config.get("postgres_changes_resume").and_then(Value::as_object);
        let resume_from = match resume.and_then(|r| r.get("position")) {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => match pgchanges::Position::parse(p) {
                Some(p) => Some(p),
                None => {
                    return Err(format!("Unknown Error on Channel: invalid postgres_changes_resume position {p:?}"))
                }
            },
            Some(_) => {
                return Err("Unknown Error on Channel: postgres_changes_resume.position must be a string".to_owned())
            }
        };
        let presence_key: Arc<str> = match presence.get("key").and_then(Value::as_str) {
            Some(key) if !key.is_empty() => key.into(),
            _ => crate::presence::generated_key().into(),
        };
        let mut channel = Channel {
            key: (m.topic.as_str().into(), private),
            join_ref: m.join_ref.as_deref().unwrap_or("").into(),
            sub_topic: sub_topic.to_owned(),
            ack: flag(broadcast.get("ack")),
            broadcast_self: flag(broadcast.get("self")),
            presence_key,
            presence_enabled: flag(presence.get("enabled")),
            tracked: None,
            caller,
            permissions,
            bindings,
            binding_errors,
            replay,
            form: if legacy {
                pgchanges::PayloadForm::Legacy
            } else {
                pgchanges::PayloadForm::Current { positions: resume.is_some() }
            },
            expiry: None,
        };
        self.register(&channel);
        if let Some(after) = resume_from {
            if let Err(warning) = self.inner.changes.resume(self.id, &channel.key, after) {
                channel.binding_errors.push(warning);
            }
        }
        self.channels.borrow_mut().insert(channel);
        Counters::add(&self.inner.hub.counters.channels, 1);
        Ok(response)
    }

    /// Puts a channel into the hub and the change router.
    fn register(&self, c: &Channel) {
        self.inner.hub.subscribe(&c.key, self.subscriber(c));
        self.inner.changes.subscribe(self.id, &c.key, &self.sender, self.vsn, &c.caller, &c.bindings, c.form);
    }

    fn subscriber(&self, c: &Channel) -> Subscriber {
        Subscriber {
            conn: self.id,
            join_ref: c.join_ref.clone(),
            sender: self.sender.clone(),
            vsn: self.vsn,
            broadcast_self: c.broadcast_self,
            read_broadcast: c.permissions.read_broadcast,
            presence: c.presence_enabled && c.permissions.read_presence,
        }
    }

    /// What follows a successful join's reply: `presence_state`, the Postgres-changes system
    /// message, and the expiry timer.
    fn after_join(self: &Rc<Self>, topic: &str) {
        let channels = self.channels.borrow();
        let Some(c) = channels.get(topic) else { return };
        if c.presence_enabled && c.permissions.read_presence {
            let state = self.inner.hub.presence_state(&c.key);
            self.send(frame(self.vsn, Some(&c.join_ref), None, topic, "presence_state", &state));
        }
        if !c.bindings.is_empty() && c.form != pgchanges::PayloadForm::Legacy {
            self.system(c, "postgres_changes", true, "Subscribed to PostgreSQL");
        }
        for error in &c.binding_errors {
            self.system(c, "postgres_changes", false, error);
        }
        drop(channels);
        if let Some(c) = self.channels.borrow_mut().get_mut(topic) {
            self.schedule_expiry(c);
        }
    }

    /// Replays a private channel's stored broadcasts (`config.broadcast.replay`), each with
    /// `meta: {"replayed": true, "id": …}`, to this socket only.
    async fn replay(&self, topic: &str) {
        let request = self
            .channels
            .borrow_mut()
            .get_mut(topic)
            .and_then(|c| c.replay.take().map(|r| (r, c.caller.clone(), c.sub_topic.clone())));
        let Some(((since, limit), caller, sub_topic)) = request else { return };
        match private::replay(&self.inner, &caller, &sub_topic, since, limit).await {
            Ok(messages) => {
                for m in messages {
                    let meta = format!("{{\"replayed\":true,\"id\":{}}}", crate::protocol::json_str(&m.id));
                    let payload = UserPayload::Json(Bytes::from(m.payload));
                    if let Some(frames) = broadcast_frames(topic, &m.event, &payload, Some(&meta), false) {
                        if let Some(frame) = frames.for_vsn(self.vsn) {
                            self.send(frame.clone());
                        }
                    }
                }
            }
            Err(reason) => {
                let channels = self.channels.borrow();
                if let Some(c) = channels.get(topic) {
                    self.system(c, "system", false, &reason);
                }
            }
        }
    }

    fn system(&self, c: &Channel, extension: &str, ok: bool, message: &str) {
        let payload = system_payload(extension, ok, message, &c.sub_topic);
        self.send(frame(self.vsn, Some(&c.join_ref), None, &c.key.0, "system", &payload));
    }

    /// Closes a channel from the server's side with a system error (reference §4, §10).
    fn close_channel(&self, topic: &str, message: &str) {
        {
            let channels = self.channels.borrow();
            let Some(c) = channels.get(topic) else { return };
            self.system(c, "system", false, message);
            self.send(frame(self.vsn, Some(&c.join_ref), Some(&c.join_ref), topic, "phx_close", "{}"));
        }
        self.drop_channel(topic);
    }

    /// Removes a channel from the session, the hub, presence and the change router.
    fn drop_channel(&self, topic: &str) {
        let Some(c) = self.channels.borrow_mut().remove(topic) else { return };
        if let Some(key) = c.expiry {
            self.inner.expiries.remove(key);
        }
        self.inner.hub.unsubscribe(&c.key, self.id);
        self.inner.changes.unsubscribe(self.id, &c.key);
        if let Some((meta, _)) = c.tracked {
            self.inner.hub.publish_presence(PresenceDiff {
                topic: c.key.clone(),
                joins: vec![],
                leaves: vec![(c.presence_key.clone(), meta)],
            });
        }
        let counters = &self.inner.hub.counters;
        counters.channels.set(counters.channels.get().saturating_sub(1));
    }

    /// Queues the channel's token expiry (replacing the entry of its previous token).
    fn schedule_expiry(self: &Rc<Self>, c: &mut Channel) {
        if let Some(key) = c.expiry.take() {
            self.inner.expiries.remove(key);
        }
        if let Some(exp) = c.caller.claims.exp {
            c.expiry = Some(self.inner.expiries.insert(exp, Rc::downgrade(self), c.key.0.clone()));
        }
    }

    /// Closes a channel whose token expired (called by the shard's expiry queue).
    pub(crate) fn expire(&self, topic: &str) {
        let token = self.channels.borrow().get(topic).map(|c| c.caller.token.clone());
        if let Some(token) = token {
            self.close_channel(topic, &format!("Token has expired {} seconds ago", expired_seconds_ago(&token)));
        }
    }

    /// Counts one client event against the channel's rate limits; closes the channel past them.
    fn admit_event(&self, topic: &str, bytes: usize, presence: bool) -> bool {
        let s = &self.inner.settings;
        let mut rates = self.rates.borrow_mut();
        let refusal = if !rates.events.admit(1, u64::from(s.max_events_per_second)) {
            Some("Too many messages per second")
        } else if presence && !rates.presence.admit(1, u64::from(s.max_presence_events_per_second)) {
            Some("Too many presence messages per second")
        } else if !rates.bytes.admit(bytes as u64, u64::from(s.max_bytes_per_second).max(s.max_payload_bytes() as u64))
        {
            Some("Too many bytes per second")
        } else {
            None
        };
        drop(rates);
        match refusal {
            Some(message) => {
                Counters::add(&self.inner.hub.counters.rate_limited, 1);
                self.close_channel(topic, message);
                false
            }
            None => true,
        }
    }

    fn broadcast(&self, m: Inbound) {
        let (event, payload, binary_in) = match &m.payload {
            InPayload::UserBroadcast { event, payload } => (event.clone(), payload.clone(), true),
            InPayload::Json(Value::Object(p)) => {
                let event = p.get("event").and_then(Value::as_str).unwrap_or("").to_owned();
                let body = p.get("payload").map_or_else(|| "{}".to_owned(), Value::to_string);
                (event, UserPayload::Json(Bytes::from(body)), false)
            }
            InPayload::Json(_) => return self.reply_error(&m, "Payload must be a map"),
        };
        let size = match &payload {
            UserPayload::Json(b) | UserPayload::Binary(b) => b.len(),
        };
        if !self.admit_event(&m.topic, size, false) {
            return;
        }
        let channels = self.channels.borrow();
        let Some(c) = channels.get(&m.topic) else { return };
        if size > self.inner.settings.max_payload_bytes() {
            if c.ack {
                self.reply_error(&m, "Payload too large");
            }
            return;
        }
        if !c.permissions.write_broadcast {
            // Supabase sends nothing, not even the ack, for a broadcast the policies refuse.
            return;
        }
        if let Some(frames) = broadcast_frames(&m.topic, &event, &payload, None, binary_in) {
            self.inner.hub.publish_broadcast(Arc::new(Broadcast {
                topic: c.key.clone(),
                frames,
                origin: Some((self.inner.hub.shard, self.id)),
            }));
        }
        if c.ack {
            self.reply_ok(&m, "{}");
        }
    }

    fn presence(&self, m: Inbound) {
        let InPayload::Json(Value::Object(p)) = &m.payload else {
            return self.reply_error(&m, "Presence message must be a map");
        };
        let event = p.get("event").and_then(Value::as_str).unwrap_or("");
        let body = p.get("payload");
        let size = body.map_or(0, |b| b.to_string().len());
        if !self.admit_event(&m.topic, size, true) {
            return;
        }
        match event {
            "track" => {
                let Some(payload @ Value::Object(_)) = body else {
                    return self.reply_error(&m, "Presence track payload must be a map");
                };
                if size > self.inner.settings.max_presence_payload_bytes() {
                    return self.close_channel(&m.topic, "Track message size exceeded");
                }
                if self.track(&m.topic, payload.to_string()) {
                    self.reply_ok(&m, "{}");
                } else {
                    self.reply_error(&m, "You do not have permissions to track presence on this channel");
                }
            }
            "untrack" => {
                self.untrack(&m.topic);
                self.reply_ok(&m, "{}");
            }
            _ => self.reply_error(&m, "Unknown presence event"),
        }
    }

    /// Tracks (or re-tracks) this socket's presence; false when the policies refuse it.
    fn track(&self, topic: &str, payload: String) -> bool {
        let mut channels = self.channels.borrow_mut();
        let Some(c) = channels.get_mut(topic) else { return false };
        if !c.permissions.write_presence {
            return false;
        }
        if c.tracked.as_ref().is_some_and(|(_, old)| *old == payload) {
            return true;
        }
        let phx_ref = self.inner.refs.next();
        let previous = c.tracked.take();
        let meta = crate::presence::Meta {
            json: meta_json(&phx_ref, previous.as_ref().map(|(m, _)| &*m.phx_ref), &payload),
            phx_ref,
        };
        let key = c.presence_key.clone();
        let diff = PresenceDiff {
            topic: c.key.clone(),
            joins: vec![(key.clone(), meta.clone())],
            leaves: previous.map(|(m, _)| (key, m)).into_iter().collect(),
        };
        c.tracked = Some((crate::presence::Meta { json: meta_json(&meta.phx_ref, None, &payload), ..meta }, payload));
        if !c.presence_enabled {
            c.presence_enabled = true;
            self.inner.hub.subscribe(&c.key, self.subscriber(c));
        }
        drop(channels);
        self.inner.hub.publish_presence(diff);
        true
    }

    fn untrack(&self, topic: &str) {
        let diff = {
            let mut channels = self.channels.borrow_mut();
            let Some(c) = channels.get_mut(topic) else { return };
            let Some((meta, _)) = c.tracked.take() else { return };
            PresenceDiff { topic: c.key.clone(), joins: vec![], leaves: vec![(c.presence_key.clone(), meta)] }
        };
        self.inner.hub.publish_presence(diff);
    }

    /// `access_token`: re-authorise the channel under the new token (reference §9).
    async fn access_token(self: Rc<Self>, m: Inbound) {
        let InPayload::Json(Value::Object(p)) = &m.payload else { return };
        let Some(token) = p.get("access_token").and_then(Value::as_str) else { return };
        if !self.admit_event(&m.topic, token.len(), false) {
            return;
        }
        let (same, private, sub_topic) = match self.channels.borrow().get(&m.topic) {
            Some(c) => (c.caller.token == token, c.key.1, c.sub_topic.clone()),
            None => return,
        };
        if same || token.starts_with("sb_") {
            return;
        }
        let caller = match self.verify(token) {
            Ok(caller) => caller,
            Err(reason) => {
                let message = reason.split_once(": ").map_or(reason.as_str(), |(_, m)| m).to_owned();
                return self.close_channel(&m.topic, &message);
            }
        };
        let permissions = if private {
            match private::check(&self.inner, &caller, &sub_topic).await {
                Ok(p) if p.read_broadcast => p,
                Ok(_) => {
                    let message = format!("You no longer have permission to read from this Channel topic: {sub_topic}");
                    return self.close_channel(&m.topic, &message);
                }
                Err(reason) => return self.close_channel(&m.topic, &reason),
            }
        } else {
            ChannelPermissions::PUBLIC
        };
        {
            let mut channels = self.channels.borrow_mut();
            let Some(c) = channels.get_mut(&m.topic) else { return };
            c.caller = caller;
            c.permissions = permissions;
            self.schedule_expiry(c);
        }
        let channels = self.channels.borrow();
        let Some(c) = channels.get(&m.topic) else { return };
        self.register(c);
        if !c.bindings.is_empty() && c.form != pgchanges::PayloadForm::Legacy {
            self.system(c, "postgres_changes", true, "Subscribed to PostgreSQL");
        }
    }
}
