//! MadBase's Realtime (`/realtime/v1`): Supabase Realtime's Phoenix-channel protocol on the
//! shards — broadcast, presence, Postgres changes, private channels — and the replication core
//! that streams `pgoutput` changes to every shard.
//!
//! Owns: [`RealtimeService`] (one per shard: the WebSocket endpoint, the REST broadcast API, the
//! inspector), the shard's [`hub::Hub`] and change router, [`RealtimeShared`] (what every shard
//! shares: the settings and the project's connection count), and the `[realtime]` settings.
//!
//! Invariants: each shard owns the sockets it accepted and everything they subscribed to; what
//! crosses shards is a [`hub::RealtimeMessage`] (broadcasts and presence between shards, change
//! batches from the replication core); the project's connection count is the only state the
//! shards share (one atomic add per connection, never per message).

pub mod api;
pub mod authorize;
pub mod changes;
pub mod expiry;
pub mod filter;
pub mod hub;
pub mod payload;
pub mod pgchanges;
pub mod pgoutput;
pub mod presence;
pub mod private;
pub mod protocol;
pub mod render;
pub mod replication;
pub mod rls;
pub mod session;
pub mod settings;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use madbase_core::context::LaneSpec;
use madbase_core::metrics::ServiceSeries;
use madbase_core::{Cors, Outbox, Service, ServiceInfo, ShardCtx};
use madbase_http::ws::WsConfig;
use madbase_http::{Body, Request, Response};

pub use hub::RealtimeMessage;
use hub::{Counters, Hub};
use presence::RefMaker;
use protocol::Vsn;
use replication::ReplicationStats;
use session::Session;
pub use settings::Realtime;

/// What every shard's Realtime shares.
pub struct RealtimeShared {
    pub settings: Arc<Realtime>,
    /// WebSockets open in the project (`max_concurrent_users`).
    users: AtomicUsize,
    /// The replication core's counters, once it runs.
    replication: OnceLock<Arc<ReplicationStats>>,
}

impl RealtimeShared {
    pub fn new(settings: Realtime) -> Arc<RealtimeShared> {
        Arc::new(RealtimeShared {
            settings: Arc::new(settings),
            users: AtomicUsize::new(0),
            replication: OnceLock::new(),
        })
    }

    /// WebSockets open in the project.
    pub fn users(&self) -> usize {
        self.users.load(Ordering::Relaxed)
    }

    /// Records the running replication core's counters (for `/metrics`).
    pub fn set_replication(&self, stats: Arc<ReplicationStats>) {
        let _ = self.replication.set(stats);
    }

    /// Realtime's process-wide series for `/metrics`.
    pub fn process_series(&self) -> Vec<ServiceSeries> {
        let s = |name, kind, help, value| ServiceSeries { name, kind, help, value };
        let mut out = vec![s(
            "madbase_realtime_project_connections",
            "gauge",
            "Realtime WebSockets open in the project (max_concurrent_users counts these).",
            self.users() as u64,
        )];
        if let Some(r) = self.replication.get() {
            out.extend([
                s(
                    "madbase_replication_connected",
                    "gauge",
                    "1 while the replication core streams.",
                    u64::from(r.connected()),
                ),
                s(
                    "madbase_replication_slot_lag_bytes",
                    "gauge",
                    "WAL the slot holds past its confirmed position.",
                    r.lag_bytes(),
                ),
                s("madbase_replication_received_lsn", "gauge", "The last WAL position received.", r.received_lsn()),
                s(
                    "madbase_replication_confirmed_lsn",
                    "gauge",
                    "The position every shard has taken (flushed to PostgreSQL).",
                    r.confirmed_lsn(),
                ),
                s(
                    "madbase_replication_reconnects_total",
                    "counter",
                    "Replication connections re-established.",
                    r.reconnects(),
                ),
                s(
                    "madbase_replication_transactions_total",
                    "counter",
                    "Transactions decoded and handed to the shards.",
                    r.transactions(),
                ),
                s("madbase_replication_changes_total", "counter", "Row changes decoded.", r.changes()),
                s("madbase_replication_messages_total", "counter", "realtime.messages rows decoded.", r.messages()),
                s(
                    "madbase_replication_changes_dropped_total",
                    "counter",
                    "Changes dropped past max_transaction_changes in one transaction.",
                    r.changes_dropped(),
                ),
                s(
                    "madbase_replication_in_flight",
                    "gauge",
                    "Transactions handed out and not yet taken by every shard.",
                    r.in_flight(),
                ),
            ]);
        }
        out
    }
}

/// One shard's Realtime state, shared by its sessions.
pub struct Inner {
    pub ctx: Rc<ShardCtx>,
    pub settings: Arc<Realtime>,
    pub shared: Arc<RealtimeShared>,
    pub hub: Rc<Hub>,
    pub changes: Rc<pgchanges::Router>,
    pub refs: RefMaker,
    /// Token expiry of this shard's channels.
    pub expiries: Rc<expiry::Expiries>,
    next_conn: Cell<u64>,
    /// This shard's sockets (the inspector).
    pub sessions: RefCell<HashMap<hub::ConnId, Weak<Session>>>,
}

/// Realtime on one shard.
pub struct RealtimeService {
    inner: Rc<Inner>,
}

/// The PostgreSQL lane of Realtime's authorisation checks.
pub const LANE: &str = "realtime";

impl RealtimeService {
    /// The lane Realtime needs on every shard.
    pub fn lane(connections: usize) -> LaneSpec {
        LaneSpec { name: LANE, connections }
    }

    pub fn new(ctx: Rc<ShardCtx>, shared: Arc<RealtimeShared>, outbox: Outbox<RealtimeMessage>) -> RealtimeService {
        let hub = Rc::new(Hub::new(outbox));
        let shard = hub.shard;
        let settings = shared.settings.clone();
        let changes = pgchanges::Router::new(ctx.clone(), settings.clone(), hub.clone());
        RealtimeService {
            inner: Rc::new(Inner {
                ctx,
                settings,
                shared,
                hub,
                changes,
                refs: RefMaker::new(shard),
                expiries: Rc::default(),
                next_conn: Cell::new(1),
                sessions: RefCell::new(HashMap::new()),
            }),
        }
    }

    /// This shard's series for `/metrics`.
    pub fn series(&self) -> Vec<ServiceSeries> {
        self.inner.hub.counters.series()
    }

    fn websocket(&self, req: &Request) -> Response {
        let query = req.query_pairs();
        let Some(vsn) = Vsn::parse(query.iter().find(|(k, _)| k == "vsn").map(|(_, v)| v.as_str())) else {
            return api::error(400, "Unsupported serializer version: vsn must be 1.0.0 or 2.0.0");
        };
        let apikey = query
            .iter()
            .find(|(k, _)| k == "apikey")
            .map(|(_, v)| v.clone())
            .or_else(|| req.header_str("apikey").or_else(|| req.header_str("x-api-key")).map(str::to_owned));
        let Some(apikey) = apikey.filter(|k| !k.is_empty()) else {
            return Response::json(401, r#"{"message":"No API key found in request"}"#);
        };
        if self.inner.ctx.tokens.borrow_mut().verify(&apikey).is_err() {
            return Response::json(401, r#"{"message":"Invalid authentication credentials"}"#);
        }
        let inner = self.inner.clone();
        let s = &inner.settings;
        let config = WsConfig {
            max_frame_bytes: s.max_message_bytes(),
            max_message_bytes: s.max_message_bytes(),
            send_queue_messages: s.send_queue_messages,
            send_queue_bytes: s.send_queue_bytes,
            read_buffer_size: s.read_buffer_bytes,
            ..WsConfig::default()
        };
        // The socket's future is the session's own (registered here, unregistered at its end):
        // a wrapping `async` block would hold the WebSocket twice for the socket's whole life.
        Response::websocket(req, config, move |ws| {
            let id = inner.next_conn.get();
            inner.next_conn.set(id + 1);
            let users = inner.shared.users.fetch_add(1, Ordering::Relaxed) + 1;
            let over_limit = users > inner.settings.max_concurrent_users;
            Counters::add(&inner.hub.counters.connections, 1);
            let session = Rc::new(Session::new(inner.clone(), id, vsn, ws.sender(), apikey, over_limit));
            inner.sessions.borrow_mut().insert(id, Rc::downgrade(&session));
            session.run(ws)
        })
    }
}

impl Service for RealtimeService {
    type Message = RealtimeMessage;

    const INFO: ServiceInfo = ServiceInfo { prefix: "/realtime/v1", label: "realtime", cors: Cors::Gateway };

    async fn handle(&self, req: &Request, body: Body) -> Response {
        let path = &req.path()[Self::INFO.prefix.len()..];
        match (req.method(), path) {
            ("GET", "/websocket") => self.websocket(req),
            ("POST", "/api/broadcast") => api::broadcast_batch(&self.inner, req, body).await,
            ("POST", p) if p.starts_with("/api/broadcast/") => api::broadcast_one(&self.inner, req, body).await,
            ("GET", "/api/inspector") => api::inspector(&self.inner, req).await,
            _ => Response::json(404, r#"{"message":"no Route matched with those values"}"#),
        }
    }

    fn owner_tasks(self: &Rc<Self>) -> Vec<madbase_core::service::LocalTask> {
        vec![Box::pin(private::delete_old_messages(self.inner.ctx.clone()))]
    }

    fn on_message(&self, message: RealtimeMessage) {
        match message {
            RealtimeMessage::Broadcast(b) => self.inner.hub.deliver_broadcast(&b),
            RealtimeMessage::Presence(d) => self.inner.hub.apply_presence(&d),
            RealtimeMessage::Changes(batch) => self.inner.changes.on_batch(batch),
            RealtimeMessage::Inspect(inspection) => {
                if let Ok(mut views) = inspection.views.lock() {
                    views.push(api::shard_view(&self.inner));
                }
            }
        }
    }
}
