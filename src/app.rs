//! The gateway on one shard: the services table, the router in front of every service, the
//! shard-to-shard messages, and what Supabase's API gateway answers itself.
//!
//! Owns: [`SERVICES`] (one row per service: prefix, metrics label, CORS policy — the router,
//! `/metrics` and the access log all read it), the per-shard set of service instances
//! ([`Services`]), [`ShardMessage`] (each service's typed messages wrapped for the rings, plus the
//! gateway's own probes), the owner-shard placement of every service's singleton tasks, CORS
//! preflight, the JSON 404 for unknown routes, `/health` and `/metrics`.
//!
//! Invariants: a request never touches another shard's state; what must be seen across shards
//! (metrics, health, a reloaded schema) travels as a [`ShardMessage`] on the control lane of the
//! rings and is answered or applied by the owning shard, with a bounded wait. Every request is
//! counted once, under one label of the table.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use madbase_auth::{AuthService, AuthShared};
use madbase_core::coalesce::Coalesced;
use madbase_core::context::Delivering;
use madbase_core::identity::{self, ANON_ROLE};
use madbase_core::jwt::JwtKeys;
use madbase_core::metrics::{self, ShardGauges, ShardMetrics, ShardSnapshot};
use madbase_core::{Cors, Outbox, Service, ServiceInfo, ShardCtx};
use madbase_functions::{FunctionsService, Shared as FunctionsShared};
use madbase_http::{Body, Handler, Request, Response};
use madbase_pg::{Batch, ConnectConfig};
use madbase_realtime::changes::{BatchSink, ChangeBatch};
use madbase_realtime::{RealtimeMessage, RealtimeService, RealtimeShared};
use madbase_rest::schema::SchemaCache;
use madbase_rest::{RestMessage, RestService};
use madbase_shards::{Injector, Lane, Shard, ShutdownSignal, Source};
use madbase_storage::{Shared as StorageShared, StorageService};

use crate::config::Config;

/// Who answers the requests of a row of [`SERVICES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Rest,
    Auth,
    Realtime,
    Storage,
    Functions,
    /// The gateway: `/health`.
    Health,
    /// The gateway: `/metrics`.
    Metrics,
    /// A Supabase service MadBase does not serve yet: counted under its label, answered 404.
    Unserved,
}

/// A row of the services table.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub info: ServiceInfo,
    pub target: Target,
}

const fn unserved(prefix: &'static str, label: &'static str) -> Route {
    Route { info: ServiceInfo { prefix, label, cors: Cors::Gateway }, target: Target::Unserved }
}

const fn gateway(prefix: &'static str, label: &'static str, target: Target) -> Route {
    Route { info: ServiceInfo { prefix, label, cors: Cors::Gateway }, target }
}

/// The services table: adding a service is a row here (and its instance in [`Services`]).
pub const SERVICES: &[Route] = &[
    Route { info: RestService::INFO, target: Target::Rest },
    Route { info: AuthService::INFO, target: Target::Auth },
    Route { info: RealtimeService::INFO, target: Target::Realtime },
    Route { info: StorageService::INFO, target: Target::Storage },
    Route { info: FunctionsService::INFO, target: Target::Functions },
    unserved("/graphql/v1", "graphql"),
    unserved("/admin", "admin"),
    gateway("/health", "health", Target::Health),
    gateway("/metrics", "metrics", Target::Metrics),
];

/// The label of requests no row owns.
const OTHER: &str = "other";

/// Every label a request can be counted under: the table's, then [`OTHER`].
pub static LABELS: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| SERVICES.iter().map(|row| row.info.label).chain([OTHER]).collect());

/// The row that owns `path`, if any.
fn route_of(path: &str) -> Option<&'static Route> {
    SERVICES.iter().find(|row| row.info.owns(path))
}

/// The shard that runs the singleton tasks of the service in row `row` of the table: spread
/// over the shards so that no one shard carries every service's background work.
pub fn owner_shard(row: usize, shards: usize) -> usize {
    debug_assert!(shards > 0);
    row % shards
}

/// What is shared by every shard: immutable after start.
pub struct Shared {
    pub config: Arc<Config>,
    pub keys: Arc<JwtKeys>,
    pub connect: ConnectConfig,
    /// The Data API's settings.
    pub rest: Arc<madbase_rest::settings::Config>,
    /// The schema cache loaded at start-up; each shard starts from it.
    pub schema: Arc<SchemaCache>,
    /// Auth's settings and process-wide state (rate limits, mailer).
    pub auth: Arc<AuthShared>,
    /// Realtime's settings and the project's connection count.
    pub realtime: Arc<RealtimeShared>,
    /// Storage's settings, object store and signing keys.
    pub storage: Arc<StorageShared>,
    /// Edge Functions' engine, settings and deployments; `None` when `[edge_runtime] enabled = false`.
    pub functions: Option<Arc<FunctionsShared>>,
}

/// The gateway's own questions to other shards. Each carries a reply channel so the asking shard
/// can await the answer.
pub enum GatewayMessage {
    /// Send back this shard's metrics snapshot.
    Snapshot(oneshot::Sender<ShardSnapshot>),
    /// Answer to show this shard's reactor is running.
    Ping(oneshot::Sender<usize>),
}

/// Everything that travels between shards: each service's own messages, wrapped here only. All
/// of today's are control messages (probes, snapshot swaps) and travel on the control lane, so
/// they never wait behind bulk data (realtime's changes) on the data lane.
pub enum ShardMessage {
    Gateway(GatewayMessage),
    Rest(RestMessage),
    Realtime(RealtimeMessage),
}

/// The replication core's way to the shards: each committed transaction goes to every shard's
/// data ring from the injector (the core's own thread), waiting while a ring is full.
pub struct ChangeSink {
    injector: Injector<ShardMessage>,
}

impl ChangeSink {
    pub fn new(injector: Injector<ShardMessage>) -> ChangeSink {
        ChangeSink { injector }
    }
}

impl BatchSink for ChangeSink {
    fn publish(&mut self, batch: Arc<ChangeBatch>) -> usize {
        (0..self.injector.shards())
            .filter(|&to| {
                let message = ShardMessage::Realtime(RealtimeMessage::Changes(batch.clone()));
                self.injector.send_blocking(to, message).is_err()
            })
            .count()
    }

    fn shards(&self) -> usize {
        self.injector.shards()
    }
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
/// How often a message for a shard whose ring is full is offered again.
const DELIVERY_RETRY: Duration = Duration::from_millis(10);

/// The service instances of one shard.
pub struct Services {
    pub rest: Rc<RestService>,
    pub auth: Rc<AuthService>,
    pub realtime: Rc<RealtimeService>,
    pub storage: Rc<StorageService>,
    pub functions: Option<Rc<FunctionsService>>,
}

/// An [`Outbox`] for one service's messages over this shard's rings: deliveries to all on the
/// control lane, offers to one shard on the data lane.
fn outbox<T: Clone + 'static>(shard: &Shard<ShardMessage>, wrap: fn(T) -> ShardMessage) -> Outbox<T> {
    let deliverer = shard.clone();
    let offerer = shard.clone();
    Outbox::new(
        shard.id(),
        shard.count(),
        move |message: T| -> Delivering {
            let shard = deliverer.clone();
            Box::pin(async move {
                let delivery = shard.deliver_to_all(|| wrap(message.clone()), Lane::Control, DELIVERY_RETRY).await;
                delivery.closed.into_iter().chain(delivery.undelivered).collect()
            })
        },
        move |to, message: T| offerer.send_to(to, wrap(message)).is_ok(),
    )
}

/// Adapts the runtime's shutdown signal to the HTTP server's.
/// The HTTP server's limits. Storage streams object bodies up to its own `file_size_limit`, so the
/// server's body bound is the larger of that and `[http] max_body_bytes`; every other service
/// reads its body with `Body::collect` under its own bound (at most `max_body_bytes`), so nothing
/// else accepts more than before.
pub fn server_limits(config: &Config) -> madbase_http::Limits {
    let mut limits = config.http.limits();
    if config.storage.enabled {
        limits.max_body_bytes = limits.max_body_bytes.max(config.storage.file_size_limit_bytes());
    }
    if config.edge_runtime.enabled {
        // A deploy's component and an invocation's body are collected under their own bounds.
        let functions = config.edge_runtime.max_component_bytes.max(config.edge_runtime.max_request_bytes);
        limits.max_body_bytes = limits.max_body_bytes.max(functions);
    }
    limits
}

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

/// The body of every shard: builds its platform and services, answers other shards, starts the
/// singleton tasks this shard owns, serves HTTP until shutdown.
pub async fn shard_main(shard: Shard<ShardMessage>, shared: Arc<Shared>) {
    let config = shared.config.clone();
    let ctx = Rc::new(ShardCtx::new(
        shard.blocking().clone(),
        shard.shutdown_signal(),
        shared.connect.clone(),
        &config.pg,
        &config.jwt,
        shared.keys.clone(),
        &[
            RestService::lane(config.pg.pool_size),
            AuthService::lane(config.pg.auth_pool_size),
            RealtimeService::lane(config.realtime.pool_size),
            StorageService::lane(config.storage.pool_size),
            FunctionsService::lane(config.edge_runtime.pool_size),
        ],
        ShardMetrics::new(&LABELS),
    ));
    let services = Rc::new(Services {
        rest: Rc::new(RestService::new(
            ctx.clone(),
            shared.rest.clone(),
            shared.schema.clone(),
            outbox(&shard, ShardMessage::Rest),
        )),
        auth: Rc::new(AuthService::new(ctx.clone(), shared.auth.clone())),
        realtime: Rc::new(RealtimeService::new(
            ctx.clone(),
            shared.realtime.clone(),
            outbox(&shard, ShardMessage::Realtime),
        )),
        storage: Rc::new(StorageService::new(ctx.clone(), shared.storage.clone())),
        functions: shared.functions.clone().map(|functions| Rc::new(FunctionsService::new(ctx.clone(), functions))),
    });
    let peers = Rc::new(Peers {
        ctx: ctx.clone(),
        shard: shard.clone(),
        realtime: services.realtime.clone(),
        storage: services.storage.clone(),
        functions: services.functions.clone(),
        shared: shared.clone(),
    });
    monoio::spawn(run_mailbox(shard.clone(), peers.clone(), services.clone()));
    let app = Rc::new(App {
        peers,
        services: services.clone(),
        rest_enabled: config.api.enabled,
        auth_enabled: config.auth.enabled,
        realtime_enabled: config.realtime.enabled,
        storage_enabled: config.storage.enabled,
        health: Coalesced::new(PROBE_ANSWER_MAX_AGE),
        metrics: Coalesced::new(PROBE_ANSWER_MAX_AGE),
    });
    start_owner_tasks(&shard, &services);

    let limits = Rc::new(server_limits(&config));
    let shutdown = HttpShutdown(shard.shutdown_signal());
    let handler = app.clone();
    let served = shard
        .serve(move |stream, peer| {
            madbase_http::serve_connection(stream, peer, handler.clone(), limits.clone(), shutdown.clone())
        })
        .await;
    match served {
        Ok(report) => tracing::info!(shard = shard.id(), ?report, "shard drained"),
        Err(error) => tracing::error!(shard = shard.id(), %error, "shard stopped serving"),
    }
    services.rest.drain();
    services.auth.drain();
    services.realtime.drain();
    services.storage.drain();
    if let Some(functions) = &services.functions {
        functions.drain();
    }
    ctx.lanes.close();
}

/// Applies every message other shards send this one until shutdown.
async fn run_mailbox(shard: Shard<ShardMessage>, peers: Rc<Peers>, services: Rc<Services>) {
    shard
        .run_mailbox(|envelope| match envelope.msg {
            // The asker may have given up; a dropped receiver is fine.
            ShardMessage::Gateway(GatewayMessage::Snapshot(reply)) => {
                let _ = reply.send(peers.snapshot());
            }
            ShardMessage::Gateway(GatewayMessage::Ping(reply)) => {
                let _ = reply.send(peers.shard.id());
            }
            ShardMessage::Rest(message) => services.rest.on_message(message),
            ShardMessage::Realtime(message) => services.realtime.on_message(message),
        })
        .await;
}

/// Spawns the singleton tasks of every service whose owner shard this is.
fn start_owner_tasks(shard: &Shard<ShardMessage>, services: &Services) {
    for (row, route) in SERVICES.iter().enumerate() {
        if owner_shard(row, shard.count()) != shard.id() {
            continue;
        }
        let tasks = match route.target {
            Target::Rest => services.rest.owner_tasks(),
            Target::Auth => services.auth.owner_tasks(),
            Target::Realtime => services.realtime.owner_tasks(),
            Target::Storage => services.storage.owner_tasks(),
            Target::Functions => services.functions.as_ref().map(|f| f.owner_tasks()).unwrap_or_default(),
            Target::Health | Target::Metrics | Target::Unserved => Vec::new(),
        };
        for task in tasks {
            monoio::spawn(task);
        }
    }
}

/// The router: one per shard.
pub struct App {
    peers: Rc<Peers>,
    services: Rc<Services>,
    /// `[api] enabled`: off, `/rest/v1` answers as an unknown route.
    rest_enabled: bool,
    /// `[auth] enabled`: off, `/auth/v1` answers as an unknown route.
    auth_enabled: bool,
    /// `[realtime] enabled`: off, `/realtime/v1` answers as an unknown route.
    realtime_enabled: bool,
    /// `[storage] enabled`: off, `/storage/v1` answers as an unknown route.
    storage_enabled: bool,
    /// `/health`'s last answer: healthy, and the JSON body.
    health: Coalesced<(bool, bytes::Bytes)>,
    /// `/metrics`' last rendering.
    metrics: Coalesced<bytes::Bytes>,
}

/// This shard's side of the gateway's questions to all shards.
struct Peers {
    ctx: Rc<ShardCtx>,
    shard: Shard<ShardMessage>,
    /// Realtime's per-shard series.
    realtime: Rc<RealtimeService>,
    /// Storage's per-shard series.
    storage: Rc<StorageService>,
    /// Functions' per-function series.
    functions: Option<Rc<FunctionsService>>,
    shared: Arc<Shared>,
}

impl Peers {
    fn snapshot(&self) -> ShardSnapshot {
        let gauges = ShardGauges {
            shard: self.shard.id(),
            driver: self.shard.driver().to_string(),
            pg: self.ctx.lanes.iter().map(|(lane, pool)| (lane, pool.stats())).collect(),
            jwt_cache_entries: self.ctx.tokens.borrow().cached(),
            rings: self
                .shard
                .ring_depths()
                .into_iter()
                .map(|r| {
                    let from = match r.from {
                        Source::Shard(id) => format!("shard{id}"),
                        Source::Injector => "injector".to_owned(),
                    };
                    let lane = match r.lane {
                        Lane::Control => "control",
                        Lane::Data => "data",
                    };
                    (from, lane, r.len, r.capacity)
                })
                .collect(),
            blocking_queued: self.shard.blocking().queue_depth(),
            http: madbase_http::shard_stats(),
            services: [self.realtime.series(), self.storage.series()].concat(),
            labeled: self.functions.as_ref().map(|f| self.function_series(f)).into_iter().collect(),
        };
        self.ctx.metrics.snapshot(gauges)
    }

    fn function_series(&self, functions: &FunctionsService) -> (&'static str, String) {
        let mut lines = String::new();
        functions.render_metrics(self.shard.id(), &mut lines);
        (madbase_functions::metrics::HEADER, lines)
    }

    /// Asks every other shard with `ask`, answers for this one with `local`, and returns what came
    /// back within [`PEER_ANSWER_TIMEOUT`], in shard order; a shard that did not answer is `None`.
    async fn ask_all<T>(&self, ask: fn(oneshot::Sender<T>) -> GatewayMessage, local: T) -> Vec<Option<T>> {
        let me = self.shard.id();
        let mut waiting = Vec::with_capacity(self.shard.count());
        for to in 0..self.shard.count() {
            if to == me {
                waiting.push(None);
                continue;
            }
            let (tx, rx) = oneshot::channel();
            // A full ring means that shard is saturated: it counts as not answering.
            waiting.push(self.shard.send_control(to, ShardMessage::Gateway(ask(tx))).ok().map(|()| rx));
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

    /// Every shard's reactor and PostgreSQL, asked once: (healthy, the JSON body).
    async fn check_health(&self) -> (bool, bytes::Bytes) {
        let shards = self.ask_all(GatewayMessage::Ping, self.shard.id()).await;
        let answering = shards.iter().filter(|a| a.is_some()).count();
        let pool = self.ctx.lanes.get(RestService::LANE);
        let db = monoio::time::timeout(HEALTH_DB_TIMEOUT, pool.execute(Batch::new().query("select 1"))).await;
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
}

/// The methods the gateway's CORS preflight allows (Kong's cors plugin defaults, as Supabase runs it).
const CORS_ALLOW_METHODS: &str = "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT";

impl Handler for App {
    async fn handle(&self, req: Request, body: Body) -> Response {
        let started = Instant::now();
        let route = route_of(req.path());
        let label = route.map_or(OTHER, |row| row.info.label);
        let gateway_cors = route.is_none_or(|row| row.info.cors != Cors::Service);
        let preflight = gateway_cors
            && req.method() == "OPTIONS"
            && req.header("origin").is_some()
            && req.header("access-control-request-method").is_some();
        let mut response = match route {
            _ if preflight => cors_preflight(&req),
            Some(row) => self.route(&req, row, body).await,
            None => gateway_not_found(),
        };
        if gateway_cors
            && req.header("origin").is_some()
            && response.header_value("access-control-allow-origin").is_none()
        {
            response.set_header("access-control-allow-origin", "*");
            if let Some(Cors::Expose(headers)) = route.map(|row| row.info.cors) {
                response.set_header("access-control-expose-headers", headers);
            }
        }
        self.peers.ctx.metrics.record(label, response.status(), started.elapsed());
        response.service(label)
    }
}

impl App {
    async fn route(&self, req: &Request, route: &Route, body: Body) -> Response {
        match route.target {
            Target::Rest if self.rest_enabled => self.services.rest.handle(req, body).await,
            Target::Auth if self.auth_enabled => self.services.auth.handle(req, body).await,
            Target::Realtime if self.realtime_enabled => self.services.realtime.handle(req, body).await,
            Target::Storage if self.storage_enabled => self.services.storage.handle(req, body).await,
            Target::Functions => match &self.services.functions {
                Some(functions) => functions.handle(req, body).await,
                None => gateway_not_found(),
            },
            Target::Health => self.health().await,
            Target::Metrics => match self.refuse_metrics(req) {
                None => self.metrics().await,
                Some(refusal) => refusal,
            },
            _ => gateway_not_found(),
        }
    }

    /// 200 when every shard's reactor answers and PostgreSQL answers a query; else 503. The
    /// answer is shared by every asker for [`PROBE_ANSWER_MAX_AGE`].
    async fn health(&self) -> Response {
        let peers = self.peers.clone();
        let (healthy, body) = self.health.get(move || async move { peers.check_health().await }).await;
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
        match identity::authenticate(&self.peers.ctx.tokens, req) {
            Ok(identity) if identity.role == METRICS_ROLE => None,
            Ok(identity) if identity.role == ANON_ROLE && !has_credentials(req) => {
                Some(Response::json(401, r#"{"message":"No API key found in request"}"#))
            }
            Ok(_) => Some(Response::json(403, r#"{"message":"/metrics needs the service_role key"}"#)),
            Err(_) => Some(Response::json(401, r#"{"message":"Invalid authentication credentials"}"#)),
        }
    }

    /// Prometheus text, rendered at most once per [`PROBE_ANSWER_MAX_AGE`] per shard.
    async fn metrics(&self) -> Response {
        let peers = self.peers.clone();
        let text = self
            .metrics
            .get(move || async move {
                let snapshots: Vec<ShardSnapshot> =
                    peers.ask_all(GatewayMessage::Snapshot, peers.snapshot()).await.into_iter().flatten().collect();
                let process = peers.shared.realtime.process_series();
                bytes::Bytes::from(metrics::render(&snapshots, crate::logging::dropped_lines(), &process))
            })
            .await;
        Response::with_body(200, text).header("content-type", "text/plain; version=0.0.4; charset=utf-8")
    }
}

fn has_credentials(req: &Request) -> bool {
    req.header("apikey").is_some() || req.header("authorization").is_some()
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
    use super::*;

    fn label(path: &str) -> &'static str {
        route_of(path).map_or(OTHER, |row| row.info.label)
    }

    #[test]
    fn storage_raises_the_server_body_bound_to_its_file_size_limit() {
        let mut config = Config::default();
        assert_eq!(server_limits(&config).max_body_bytes, config.http.max_body_bytes);
        config.storage.file_size_limit = "5GiB".to_owned();
        assert_eq!(server_limits(&config).max_body_bytes, 5 << 30);
        config.storage.enabled = false;
        assert_eq!(server_limits(&config).max_body_bytes, config.http.max_body_bytes);
    }

    #[test]
    fn prefixes_map_to_services() {
        assert_eq!(label("/rest/v1/todos"), "rest");
        assert_eq!(label("/rest/v1"), "rest");
        assert_eq!(label("/rest/v10"), "other");
        assert_eq!(label("/auth/v1/token"), "auth");
        assert_eq!(label("/health"), "health");
        assert_eq!(label("/"), "other");
    }

    #[test]
    fn labels_are_unique_and_owners_spread() {
        let mut labels = LABELS.clone();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), LABELS.len());
        assert_eq!((0..4).map(|row| owner_shard(row, 2)).collect::<Vec<_>>(), [0, 1, 0, 1]);
    }
}
