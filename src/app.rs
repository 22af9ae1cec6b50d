//! The application on one shard: its state, the router in front of every service, and the
//! shard-to-shard messages the application sends.
//!
//! Owns: [`ShardState`] (this shard's PostgreSQL pool, verified-token cache, metrics and schema
//! snapshot — all `!Send`, touched only here) and the gateway behaviour Supabase's API gateway
//! provides in front of the services: routing by service prefix, CORS preflight, the JSON 404 for
//! unknown routes, `/health` and `/metrics`.
//!
//! Invariants: a request never touches another shard's state; what must be seen across shards
//! (metrics, health, a reloaded schema) travels as a [`ShardMessage`] over the rings and is
//! answered or applied by the owning shard, with a bounded wait. Every request is counted once, under one service label.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use madbase_http::{Body, Handler, Request, Response};
use madbase_pg::{Batch, ConnectConfig, Pool, PoolConfig};
use madbase_shards::{Shard, ShutdownSignal, Source};

use crate::coalesce::Coalesced;
use crate::config::Config;
use crate::jwt::{JwtKeys, TokenCache};
use crate::metrics::{self, ShardGauges, ShardMetrics, ShardSnapshot};
use crate::schema::SchemaCache;

/// What is shared by every shard: immutable after start.
pub struct Shared {
    pub config: Arc<Config>,
    pub keys: Arc<JwtKeys>,
    pub pool_config: ConnectConfig,
    /// The schema cache loaded at start-up; each shard starts from it (see `ShardState::schema`).
    pub schema: Arc<SchemaCache>,
}

/// Messages between shards. Questions carry a reply channel so the asking shard can await the
/// answer; announcements (a new schema snapshot) carry the new state.
pub enum ShardMessage {
    /// Send back this shard's metrics snapshot.
    Snapshot(oneshot::Sender<ShardSnapshot>),
    /// Answer to show this shard's reactor is running.
    Ping(oneshot::Sender<usize>),
    /// A new schema cache snapshot (from shard 0's reloader): swap it in.
    Schema(Arc<SchemaCache>),
}

/// How long a shard waits for other shards' answers to `/health` and `/metrics`.
const PEER_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `/health` waits for PostgreSQL.
const HEALTH_DB_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one answer of `/health` or `/metrics` serves every asker on a shard: a flood of them
/// costs at most one message to each shard (and one database round trip) per this interval.
const PROBE_ANSWER_MAX_AGE: Duration = Duration::from_secs(1);
/// The role whose key `/metrics` requires (Supabase's service key).
const METRICS_ROLE: &str = "service_role";

/// One shard's application state.
pub struct ShardState {
    shard: Shard<ShardMessage>,
    pub shared: Arc<Shared>,
    pub pool: Pool,
    pub tokens: RefCell<TokenCache>,
    pub metrics: ShardMetrics,
    /// This shard's current schema snapshot. Replaced whole (never mutated); a request takes
    /// its own handle once, at its start, with [`ShardState::schema`]. The shard-local `Rc`
    /// around the shared `Arc` keeps the per-request clone off the `Arc`'s refcount, which every
    /// shard would otherwise bump on the same cache line.
    #[allow(clippy::redundant_allocation)] // deliberate: see the field's comment
    schema: RefCell<Rc<Arc<SchemaCache>>>,
}

impl ShardState {
    /// The current schema snapshot (a shard-local `Rc` clone the request keeps to its end).
    #[allow(clippy::redundant_allocation)] // deliberate: see the field's comment
    pub fn schema(&self) -> Rc<Arc<SchemaCache>> {
        self.schema.borrow().clone()
    }

    /// Swaps in a new snapshot; requests already running keep the one they took.
    pub fn set_schema(&self, schema: Arc<SchemaCache>) {
        *self.schema.borrow_mut() = Rc::new(schema);
    }

    /// This shard's runtime handle (rings, blocking pool).
    pub(crate) fn shard(&self) -> &Shard<ShardMessage> {
        &self.shard
    }

    fn snapshot(&self) -> ShardSnapshot {
        let gauges = ShardGauges {
            shard: self.shard.id(),
            driver: self.shard.driver().to_string(),
            pg: self.pool.stats(),
            jwt_cache_entries: self.tokens.borrow().cached(),
            rings: self
                .shard
                .ring_depths()
                .into_iter()
                .map(|r| {
                    let from = match r.from {
                        Source::Shard(id) => format!("shard{id}"),
                        Source::Injector => "injector".to_owned(),
                    };
                    (from, r.len, r.capacity)
                })
                .collect(),
            blocking_queued: self.shard.blocking().queue_depth(),
            http: madbase_http::shard_stats(),
        };
        self.metrics.snapshot(gauges)
    }

    /// Asks every other shard with `ask`, answers for this one with `local`, and returns what came
    /// back within [`PEER_ANSWER_TIMEOUT`], in shard order; a shard that did not answer is `None`.
    async fn ask_all<T>(&self, ask: fn(oneshot::Sender<T>) -> ShardMessage, local: T) -> Vec<Option<T>> {
        let me = self.shard.id();
        let mut waiting = Vec::with_capacity(self.shard.count());
        for to in 0..self.shard.count() {
            if to == me {
                waiting.push(None);
                continue;
            }
            let (tx, rx) = oneshot::channel();
            // A full ring means that shard is saturated: it counts as not answering.
            waiting.push(self.shard.send_to(to, ask(tx)).ok().map(|()| rx));
        }
        let deadline = Instant::now() + PEER_ANSWER_TIMEOUT;
        let mut local = Some(local);
        let mut answers = Vec::with_capacity(waiting.len());
        for (shard, rx) in waiting.into_iter().enumerate() {
            if shard == me {
                answers.push(local.take());
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            answers.push(match rx {
                Some(rx) => monoio::time::timeout(left, rx).await.ok().and_then(Result::ok),
                None => None,
            });
        }
        answers
    }
}

/// Adapts the runtime's shutdown signal to the HTTP server's.
#[derive(Clone)]
struct HttpShutdown(ShutdownSignal);

impl madbase_http::Shutdown for HttpShutdown {
    fn is_triggered(&self) -> bool {
        self.0.is_triggered()
    }
    fn triggered(&self) -> impl std::future::Future<Output = ()> {
        let signal = self.0.clone();
        async move { signal.triggered().await }
    }
}

pub fn http_limits(config: &Config) -> madbase_http::Limits {
    madbase_http::Limits {
        max_header_bytes: config.http_max_header_bytes,
        max_headers: config.http_max_headers,
        max_uri_len: config.http_max_uri_bytes,
        max_body_bytes: config.http_max_body_bytes,
        header_timeout: Duration::from_millis(config.http_header_timeout_ms),
        idle_timeout: Duration::from_millis(config.http_idle_timeout_ms),
        body_timeout: Duration::from_millis(config.http_body_timeout_ms),
        body_timeout_total: Duration::from_millis(config.http_body_timeout_total_ms),
        shard_body_budget_bytes: config.http_shard_body_budget_bytes,
        ..madbase_http::Limits::default()
    }
}

/// The body of every shard: builds its state, answers other shards, serves HTTP until shutdown.
pub async fn shard_main(shard: Shard<ShardMessage>, shared: Arc<Shared>) {
    let config = shared.config.clone();
    let mut pool_config = PoolConfig::new(shared.pool_config.clone());
    pool_config.connections = config.pg_pool_size;
    pool_config.max_queued = config.pg_queue_limit;
    pool_config.request_timeout = config.pg_request_timeout();
    let state = Rc::new(ShardState {
        shard: shard.clone(),
        pool: Pool::new(pool_config),
        tokens: RefCell::new(TokenCache::new(shared.keys.clone(), config.jwt_cache_entries)),
        metrics: ShardMetrics::new(),
        schema: RefCell::new(Rc::new(shared.schema.clone())),
        shared,
    });

    let mailbox_state = state.clone();
    let mailbox_shard = shard.clone();
    monoio::spawn(async move {
        mailbox_shard
            .run_mailbox(|envelope| match envelope.msg {
                // The asker may have given up; a dropped receiver is fine.
                ShardMessage::Snapshot(reply) => {
                    let _ = reply.send(mailbox_state.snapshot());
                }
                ShardMessage::Ping(reply) => {
                    let _ = reply.send(mailbox_state.shard.id());
                }
                ShardMessage::Schema(schema) => mailbox_state.set_schema(schema),
            })
            .await;
    });
    if shard.id() == 0 {
        // One LISTEN connection for the whole process; it publishes new snapshots to every shard.
        monoio::spawn(crate::schema::reload::run(state.clone(), shard.shutdown_signal()));
    }

    let app = Rc::new(App {
        state: state.clone(),
        health: Coalesced::new(PROBE_ANSWER_MAX_AGE),
        metrics: Coalesced::new(PROBE_ANSWER_MAX_AGE),
    });
    let limits = Rc::new(http_limits(&config));
    let shutdown = HttpShutdown(shard.shutdown_signal());
    let served = shard
        .serve(move |stream, peer| {
            madbase_http::serve_connection(stream, peer, app.clone(), limits.clone(), shutdown.clone())
        })
        .await;
    match served {
        Ok(report) => tracing::info!(shard = shard.id(), ?report, "shard drained"),
        Err(error) => tracing::error!(shard = shard.id(), %error, "shard stopped serving"),
    }
    state.pool.close();
}

/// The router: one per shard.
pub struct App {
    state: Rc<ShardState>,
    /// `/health`'s last answer: healthy, and the JSON body.
    health: Coalesced<(bool, bytes::Bytes)>,
    /// `/metrics`' last rendering.
    metrics: Coalesced<bytes::Bytes>,
}

/// The service a path belongs to (its metrics label), by prefix.
fn service_of(path: &str) -> &'static str {
    const PREFIXES: &[(&str, &str)] = &[
        ("/rest/v1", "rest"),
        ("/auth/v1", "auth"),
        ("/realtime/v1", "realtime"),
        ("/storage/v1", "storage"),
        ("/functions/v1", "functions"),
        ("/graphql/v1", "graphql"),
        ("/admin", "admin"),
    ];
    for (prefix, service) in PREFIXES {
        if let Some(rest) = path.strip_prefix(prefix) {
            if rest.is_empty() || rest.starts_with('/') {
                return service;
            }
        }
    }
    match path {
        "/health" => "health",
        "/metrics" => "metrics",
        _ => "other",
    }
}

/// The response headers PostgREST exposes to browsers (reference/rest.md, CORS).
const POSTGREST_EXPOSE_HEADERS: &str =
    "Content-Encoding, Content-Location, Content-Range, Content-Type, Date, Location, Server, Transfer-Encoding, Range-Unit";

/// The methods the gateway's CORS preflight allows (Kong's cors plugin defaults, as Supabase runs it).
const CORS_ALLOW_METHODS: &str = "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT";

impl Handler for App {
    async fn handle(&self, req: Request, body: Body) -> Response {
        let started = Instant::now();
        let service = service_of(req.path());
        let preflight = req.method() == "OPTIONS"
            && req.header("origin").is_some()
            && req.header("access-control-request-method").is_some();
        let mut response = if preflight { cors_preflight(&req) } else { self.route(&req, service, body).await };
        if req.header("origin").is_some() && response.header_value("access-control-allow-origin").is_none() {
            response.set_header("access-control-allow-origin", "*");
            if service == "rest" {
                // PostgREST's own CORS headers pass through the gateway: without them a browser
                // client cannot read Content-Range (counts) or Location.
                response.set_header("access-control-expose-headers", POSTGREST_EXPOSE_HEADERS);
            }
        }
        self.state.metrics.record(service, response.status(), started.elapsed());
        response.service(service)
    }
}

impl App {
    async fn route(&self, req: &Request, service: &'static str, body: Body) -> Response {
        match (service, req.path()) {
            ("health", _) => self.health().await,
            ("metrics", _) => match self.refuse_metrics(req) {
                None => self.metrics().await,
                Some(refusal) => refusal,
            },
            ("auth", "/auth/v1/.well-known/jwks.json") if matches!(req.method(), "GET" | "HEAD") => {
                Response::json(200, self.state.shared.keys.public_jwks().to_string())
            }
            ("rest", _) => crate::rest::handle(&self.state, req, body).await,
            _ => gateway_not_found(),
        }
    }

    /// 200 when every shard's reactor answers and PostgreSQL answers a query; else 503. The
    /// answer is shared by every asker for [`PROBE_ANSWER_MAX_AGE`].
    async fn health(&self) -> Response {
        let state = self.state.clone();
        let (healthy, body) = self.health.get(move || async move { check_health(&state).await }).await;
        let response = Response::json(if healthy { 200 } else { 503 }, body);
        if healthy {
            response
        } else {
            response.header("retry-after", "1")
        }
    }

    /// `/metrics` is for operators: it takes the service key (`apikey` or a bearer token whose
    /// role is `service_role`), as Supabase's own metrics endpoint does. `None`: allowed.
    fn refuse_metrics(&self, req: &Request) -> Option<Response> {
        match crate::rest::authenticate(&self.state.tokens, req) {
            Ok(identity) if identity.role == METRICS_ROLE => None,
            Ok(identity) if identity.role == crate::rest::ANON_ROLE && !has_credentials(req) => {
                Some(Response::json(401, r#"{"message":"No API key found in request"}"#))
            }
            Ok(_) => Some(Response::json(403, r#"{"message":"/metrics needs the service_role key"}"#)),
            Err(_) => Some(Response::json(401, r#"{"message":"Invalid authentication credentials"}"#)),
        }
    }

    /// Prometheus text, rendered at most once per [`PROBE_ANSWER_MAX_AGE`] per shard.
    async fn metrics(&self) -> Response {
        let state = self.state.clone();
        let text = self
            .metrics
            .get(move || async move {
                let snapshots: Vec<ShardSnapshot> =
                    state.ask_all(ShardMessage::Snapshot, state.snapshot()).await.into_iter().flatten().collect();
                bytes::Bytes::from(metrics::render(&snapshots, crate::logging::dropped_lines()))
            })
            .await;
        Response::with_body(200, text).header("content-type", "text/plain; version=0.0.4; charset=utf-8")
    }
}

fn has_credentials(req: &Request) -> bool {
    req.header("apikey").is_some() || req.header("authorization").is_some()
}

/// Every shard's reactor and PostgreSQL, asked once: (healthy, the JSON body).
async fn check_health(state: &ShardState) -> (bool, bytes::Bytes) {
    let shards = state.ask_all(ShardMessage::Ping, state.shard.id()).await;
    let answering = shards.iter().filter(|a| a.is_some()).count();
    let db = monoio::time::timeout(HEALTH_DB_TIMEOUT, state.pool.execute(Batch::new().query("select 1"))).await;
    let (db_ok, db_text) = match db {
        Ok(Ok(_)) => (true, "ok".to_owned()),
        Ok(Err(error)) => (false, error.to_string()),
        Err(_) => (false, "timeout".to_owned()),
    };
    let healthy = db_ok && answering == shards.len();
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "shards": { "total": shards.len(), "answering": answering },
        "postgres": db_text,
    });
    (healthy, body.to_string().into())
}

/// What Supabase's gateway answers for a path no service owns.
fn gateway_not_found() -> Response {
    Response::json(404, r#"{"message":"no Route matched with those values"}"#)
}

/// CORS preflight as the gateway answers it: 200, any origin, the requested headers echoed.
fn cors_preflight(req: &Request) -> Response {
    let mut response = Response::new(200)
        .header("access-control-allow-origin", "*")
        .header("access-control-allow-methods", CORS_ALLOW_METHODS);
    if let Some(headers) = req.header("access-control-request-headers") {
        response.set_header("access-control-allow-headers", bytes::Bytes::copy_from_slice(headers));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::service_of;

    #[test]
    fn prefixes_map_to_services() {
        assert_eq!(service_of("/rest/v1/todos"), "rest");
        assert_eq!(service_of("/rest/v1"), "rest");
        assert_eq!(service_of("/rest/v10"), "other");
        assert_eq!(service_of("/auth/v1/token"), "auth");
        assert_eq!(service_of("/health"), "health");
        assert_eq!(service_of("/"), "other");
    }
}
