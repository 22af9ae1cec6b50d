//! One invocation: `/functions/v1/<name>[/sub/path][?query]` → a fresh instance of the
//! function's live version, its response streamed back.
//!
//! Owns: the per-shard admission count, the invocation task (the guest and the SQL it asks
//! for), the relay errors (Supabase's status codes, `sb-error-code`, `x-relay-error: true`).
//!
//! Invariants:
//! - At most `max_concurrent` instances run per shard; one more is refused (546) before any
//!   instantiation, so the engine's pool is never exhausted.
//! - The guest runs in its own task on the shard, under its CPU budget (epoch ticks, yielding
//!   to the shard's other tasks every tick) and its wall-clock limit; when the client's request
//!   ends without a response head (idle timeout), the task is cancelled and its store dropped.
//! - A function's own responses pass through untouched; only failures of the runtime carry
//!   `x-relay-error: true`.
//! - The request body is collected up to `max_request_bytes`; the response body streams,
//!   cut at `max_response_bytes`.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_core::Stream;
use http_body::Body as _;
use madbase_core::ShardCtx;
use madbase_http::{Body, Request, Response};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use crate::engine::EPOCH_TICK;
use crate::host::{DbCall, Invocation, Limiter, OutboundHooks};
use crate::metrics::{FunctionStats, Kill};
use crate::registry::{Deployment, Registry};
use crate::Inner;

/// Bytes of a function's stdout and stderr kept for the log, each.
const LOG_CAPACITY: usize = 16 * 1024;

/// A runtime failure, answered as Supabase's relay answers it.
pub fn relay_error(status: u16, code: &str, message: &str) -> Response {
    Response::json(status, serde_json::json!({ "code": code, "message": message }).to_string())
        .header("x-relay-error", "true")
        .header("sb-error-code", code.to_owned())
}

pub fn not_found() -> Response {
    relay_error(404, "NOT_FOUND", "Requested function was not found")
}

/// How the guest task ended when no response head came first.
enum Ended {
    Boot(String),
    Trapped { kill: Option<Kill>, error: String },
    NoResponse,
}

/// The caller as the function sees it.
struct Caller {
    claims: Option<String>,
    role: String,
}

/// Verifies the `Authorization` bearer token; with `verify_jwt` a missing or bad one is refused
/// with Supabase's 401.
fn caller(ctx: &ShardCtx, req: &Request, verify_jwt: bool) -> Result<Caller, Response> {
    let verified = madbase_core::identity::bearer_token(req).map(|t| ctx.tokens.borrow_mut().verify(t));
    match verified {
        Some(Ok(claims)) => {
            let role = claims.role().unwrap_or(madbase_core::identity::ANON_ROLE).to_owned();
            if madbase_core::identity::SERVICE_ROLES.contains(&role.as_str()) {
                return Err(relay_error(401, "UNAUTHORIZED_INVALID_JWT_FORMAT", "Invalid JWT"));
            }
            Ok(Caller { claims: Some(claims.json.clone()), role })
        }
        _ if !verify_jwt => Ok(Caller { claims: None, role: madbase_core::identity::ANON_ROLE.to_owned() }),
        None => Err(relay_error(401, "UNAUTHORIZED_NO_AUTH_HEADER", "Missing authorization header")),
        Some(Err(_)) => Err(relay_error(401, "UNAUTHORIZED_INVALID_JWT_FORMAT", "Invalid JWT")),
    }
}

/// Counts the instances running on this shard.
struct Admission(Rc<Cell<usize>>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Answers one invocation of `name`; `function_path` is what the function sees
/// (`/<name>/sub/path`), `registry` the version of the deployments the request took.
pub async fn invoke(
    inner: &Inner,
    registry: Arc<Registry>,
    req: &Request,
    body: Body,
    name: &str,
    function_path: &str,
) -> Response {
    let Some(deployment) = registry.functions.get(name).cloned() else {
        return not_found();
    };
    let stats = inner.stats.function(name);
    // A CORS preflight carries no token: it reaches the function unverified, as on Supabase.
    let verify_jwt = deployment.config.verify_jwt && req.method() != "OPTIONS";
    let caller = match caller(&inner.ctx, req, verify_jwt) {
        Ok(caller) => caller,
        Err(refused) => {
            stats.status(refused.status());
            return refused;
        }
    };
    let settings = &inner.shared.settings;
    if inner.running.get() >= settings.max_concurrent {
        stats.kill(Kill::Concurrency);
        return relay_error(
            546,
            "WORKER_RESOURCE_LIMIT",
            "Too many concurrent invocations of functions on this worker",
        );
    }
    inner.running.set(inner.running.get() + 1);
    let admission = Admission(inner.running.clone());
    let body = match body.collect(settings.max_request_bytes).await {
        Ok(bytes) => bytes,
        Err(madbase_http::BodyError::TooLarge { .. }) => {
            return relay_error(413, "REQUEST_TOO_LARGE", "The request body is larger than the function accepts")
        }
        Err(e) => return relay_error(400, "BAD_REQUEST", &format!("The request body could not be read: {e}")),
    };
    let request = match http_request(req, function_path, body) {
        Ok(request) => request,
        Err(message) => return relay_error(400, "BAD_REQUEST", &message),
    };
    let started = Instant::now();
    let (db_tx, db_rx) = mpsc::channel(1);
    let mut store = match new_store(inner, &registry, &deployment, &caller, db_tx) {
        Ok(store) => store,
        Err(e) => {
            tracing::error!(function = %name, error = %e, "cannot prepare an invocation");
            return relay_error(503, "BOOT_ERROR", "Function failed to start (please check logs)");
        }
    };
    let (head_tx, mut head_rx) = tokio::sync::oneshot::channel();
    let prepared = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)
        .and_then(|req| Ok((req, store.data_mut().http().new_response_outparam(head_tx)?)));
    let (guest_req, outparam) = match prepared {
        Ok(pair) => pair,
        Err(e) => return relay_error(400, "BAD_REQUEST", &format!("{e:#}")),
    };
    let (ended_tx, mut ended_rx) = oneshot::channel::<Ended>();
    let (cancel_tx, cancel_rx) = oneshot::channel::<()>();
    let wall_clock =
        Duration::from_millis(deployment.config.wall_clock_limit_ms.unwrap_or(settings.wall_clock_limit_ms));
    let task = Guest {
        ctx: inner.ctx.clone(),
        stats: stats.clone(),
        deployment: deployment.clone(),
        role: caller.role,
        claims: caller.claims,
        max_db_result_bytes: settings.max_db_result_bytes,
    };
    monoio::spawn(task.run(store, guest_req, outparam, db_rx, ended_tx, cancel_rx, wall_clock, admission, started));

    let idle = Duration::from_millis(settings.idle_timeout_ms);
    let sleep = monoio::time::sleep(idle);
    let mut sleep = std::pin::pin!(sleep);
    let first = std::future::poll_fn(|cx| {
        if let Poll::Ready(head) = Pin::new(&mut head_rx).poll(cx) {
            return Poll::Ready(First::Head(head.ok()));
        }
        if let Poll::Ready(ended) = Pin::new(&mut ended_rx).poll(cx) {
            return Poll::Ready(First::Ended(ended.ok()));
        }
        sleep.as_mut().poll(cx).map(|()| First::Idle)
    })
    .await;
    let response = match first {
        First::Head(Some(Ok(head))) => stream_response(head, settings.max_response_bytes, cancel_tx),
        First::Head(Some(Err(code))) => {
            tracing::info!(function = %name, error = ?code, "the function answered with an error code");
            relay_error(500, "EDGE_FUNCTION_ERROR", "Function exited due to an error (please check logs)")
        }
        // The outparam was dropped unset: the guest ended; see how.
        First::Head(None) => ended_response(ended_rx.await.ok(), name),
        First::Ended(ended) => match head_rx.try_recv() {
            Ok(Ok(head)) => stream_response(head, settings.max_response_bytes, cancel_tx),
            _ => ended_response(ended, name),
        },
        First::Idle => {
            drop(cancel_tx);
            stats.kill(Kill::IdleTimeout);
            relay_error(504, "IDLE_TIMEOUT", "Function did not respond within the request idle timeout")
        }
    };
    stats.status(response.status());
    response
}

/// The response head a guest sets (`response-outparam.set`).
type Head = http::Response<HyperOutgoingBody>;

/// What the handler saw first.
enum First {
    Head(Option<Result<Head, wasmtime_wasi_http::p2::bindings::http::types::ErrorCode>>),
    Ended(Option<Ended>),
    Idle,
}

fn ended_response(ended: Option<Ended>, name: &str) -> Response {
    match ended {
        Some(Ended::Boot(error)) => {
            tracing::warn!(function = %name, error = %error, "function failed to start");
            relay_error(503, "BOOT_ERROR", "Function failed to start (please check logs)")
        }
        Some(Ended::Trapped { kill: Some(kill), error }) => {
            tracing::warn!(function = %name, limit = kill.label(), error = %error, "function stopped at a resource limit");
            relay_error(
                546,
                "WORKER_RESOURCE_LIMIT",
                "Function failed due to not having enough compute resources (please check logs)",
            )
        }
        Some(Ended::Trapped { kill: None, error }) => {
            tracing::warn!(function = %name, error = %error, "function trapped");
            relay_error(500, "EDGE_FUNCTION_ERROR", "Function exited due to an error (please check logs)")
        }
        Some(Ended::NoResponse) | None => {
            relay_error(500, "EDGE_FUNCTION_ERROR", "Function exited without sending a response (please check logs)")
        }
    }
}

/// The request as `wasi:http` hands it to the guest: the path without `/functions/v1`, the
/// query, every header, the collected body.
fn http_request(
    req: &Request,
    function_path: &str,
    body: Bytes,
) -> Result<http::Request<http_body_util::Full<Bytes>>, String> {
    let host = req.header_str("host").filter(|h| !h.is_empty()).unwrap_or("localhost");
    let uri = match req.query() {
        Some(query) => format!("http://{host}{function_path}?{query}"),
        None => format!("http://{host}{function_path}"),
    };
    let mut builder = http::Request::builder().method(req.method()).uri(uri);
    for (name, value) in req.headers().iter() {
        builder = builder.header(name, value);
    }
    builder
        .body(http_body_util::Full::new(body))
        .map_err(|e| format!("The request cannot be passed to the function: {e}"))
}

fn new_store(
    inner: &Inner,
    registry: &Registry,
    deployment: &Deployment,
    caller: &Caller,
    db: mpsc::Sender<DbCall>,
) -> Result<Store<Invocation>, String> {
    let shared = &inner.shared;
    let settings = &shared.settings;
    let mut wasi = WasiCtxBuilder::new();
    wasi.envs(&shared.base_env);
    for (name, sealed) in &registry.secrets {
        let value = shared.master.open(name, sealed).map_err(|e| format!("secret {name}: {e}"))?;
        wasi.env(name, String::from_utf8_lossy(&value));
    }
    let (stdout, stderr) = (MemoryOutputPipe::new(LOG_CAPACITY), MemoryOutputPipe::new(LOG_CAPACITY));
    wasi.stdout(stdout.clone()).stderr(stderr.clone()).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    let config = &deployment.config;
    let memory_mb = config.memory_limit_mb.unwrap_or(settings.memory_limit_mb).min(settings.memory_limit_mb);
    let cpu_ms = config.cpu_time_limit_ms.unwrap_or(settings.cpu_time_limit_ms).min(settings.cpu_time_limit_ms);
    let state = Invocation {
        wasi: wasi.build(),
        stdout,
        stderr,
        table: wasmtime::component::ResourceTable::new(),
        http: WasiHttpCtx::new(),
        hooks: OutboundHooks {
            allowed_hosts: deployment.allowed_hosts.clone(),
            client: shared.client.clone(),
            max_body_bytes: settings.max_request_bytes as usize,
        },
        limiter: Limiter { memory_limit: (memory_mb * 1024 * 1024) as usize, refused: false, high_water: 0 },
        claims: caller.claims.clone(),
        db,
        db_calls_left: settings.max_db_calls,
        cpu_ticks: 0,
        cpu_limit_ticks: (cpu_ms / EPOCH_TICK.as_millis() as u64).max(1),
        cpu_exceeded: false,
    };
    let mut store = Store::new(shared.runtime.engine(), state);
    store.limiter(|state| &mut state.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        state.cpu_ticks += 1;
        if state.cpu_ticks > state.cpu_limit_ticks {
            state.cpu_exceeded = true;
            return Err(wasmtime::Error::msg("the function used up its CPU time"));
        }
        Ok(UpdateDeadline::Yield(1))
    });
    Ok(store)
}

/// The guest's task: instantiate, call the handler, serve its SQL, record how it went.
struct Guest {
    ctx: Rc<ShardCtx>,
    stats: Rc<FunctionStats>,
    deployment: Arc<Deployment>,
    role: String,
    claims: Option<String>,
    max_db_result_bytes: u64,
}

impl Guest {
    #[allow(clippy::too_many_arguments)] // the task's channels and budgets, each distinct
    async fn run(
        self,
        mut store: Store<Invocation>,
        request: wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostIncomingRequest>,
        outparam: wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostResponseOutparam>,
        db_rx: mpsc::Receiver<DbCall>,
        ended: oneshot::Sender<Ended>,
        cancel: oneshot::Receiver<()>,
        wall_clock: Duration,
        admission: Admission,
        started: Instant,
    ) {
        let pre = self.deployment.pre.clone();
        let stats = self.stats.clone();
        let guest = async {
            let instantiating = Instant::now();
            let proxy = match pre.instantiate_async(&mut store).await {
                Ok(proxy) => proxy,
                Err(e) => return (Ended::Boot(format!("{e:#}")), store),
            };
            stats.instantiated(instantiating.elapsed());
            let result = proxy.wasi_http_incoming_handler().call_handle(&mut store, request, outparam).await;
            let ended = match result {
                Ok(()) => Ended::NoResponse,
                Err(e) => {
                    let state = store.data();
                    let kill = if state.cpu_exceeded {
                        Some(Kill::Cpu)
                    } else if state.limiter.refused {
                        Some(Kill::Memory)
                    } else {
                        None
                    };
                    Ended::Trapped { kill, error: format!("{e:#}") }
                }
            };
            (ended, store)
        };
        let db = crate::sql::serve(&self.ctx, db_rx, &self.role, self.claims.as_deref(), self.max_db_result_bytes);
        let outcome = Race {
            guest: std::pin::pin!(guest),
            db: std::pin::pin!(db),
            cancel: Some(cancel),
            deadline: std::pin::pin!(monoio::time::sleep(wall_clock)),
        }
        .await;
        let function = &self.deployment.name;
        match outcome {
            Raced::Done((how, store)) => {
                let state = store.data();
                stats.finished(
                    started.elapsed(),
                    state.cpu_ticks * EPOCH_TICK.as_micros() as u64,
                    state.limiter.high_water as u64,
                );
                if let Ended::Trapped { kill, .. } = &how {
                    match kill {
                        Some(kill) => stats.kill(*kill),
                        None => stats.trap(),
                    }
                }
                log_output(function, state);
                let _ = ended.send(how);
            }
            Raced::Deadline => {
                stats.kill(Kill::WallClock);
                tracing::info!(function = %function, "invocation stopped at its wall-clock limit");
            }
            // The response was sent whole, or its client went away, or nobody waits any more.
            Raced::Cancelled => {}
        }
        drop(admission);
    }
}

/// What the function printed, to the log (bounded by [`LOG_CAPACITY`] per stream).
fn log_output(function: &str, state: &Invocation) {
    for (stream, pipe) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
        let contents = pipe.contents();
        for line in String::from_utf8_lossy(&contents).lines().filter(|l| !l.is_empty()) {
            tracing::info!(function = %function, stream, "{line}");
        }
    }
}

/// How the guest's race ended.
enum Raced<T> {
    Done(T),
    Cancelled,
    Deadline,
}

/// Polls the guest and its SQL server until the guest ends, the wall clock runs out or the
/// request is cancelled. `cancel` resolves `Ok` when the response was sent whole (the guest may
/// then finish on its own, within the wall clock) and `Err` when nobody waits for the guest any
/// more (idle timeout, the client went away): that cancels it.
struct Race<'a, G, D> {
    guest: Pin<&'a mut G>,
    db: Pin<&'a mut D>,
    cancel: Option<oneshot::Receiver<()>>,
    deadline: Pin<&'a mut monoio::time::Sleep>,
}

impl<G: Future, D: Future<Output = ()>> Future for Race<'_, G, D> {
    type Output = Raced<G::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(out) = self.guest.as_mut().poll(cx) {
            return Poll::Ready(Raced::Done(out));
        }
        let _ = self.db.as_mut().poll(cx);
        if let Some(cancel) = self.cancel.as_mut() {
            match Pin::new(cancel).poll(cx) {
                Poll::Ready(Ok(())) => self.cancel = None,
                Poll::Ready(Err(oneshot::Canceled)) => return Poll::Ready(Raced::Cancelled),
                Poll::Pending => {}
            }
        }
        self.deadline.as_mut().poll(cx).map(|()| Raced::Deadline)
    }
}

/// Largest body answered whole when the guest has already written all of it.
const WHOLE_BODY_LIMIT: usize = 64 * 1024;

/// The function's response: its status and headers, and its body — whole, with a length, when
/// the guest has already finished writing it (the usual case: a guest runs on this shard until it
/// waits, so a small answer is complete by now), else streamed as the guest writes it.
fn stream_response(head: Head, max_bytes: u64, cancel: oneshot::Sender<()>) -> Response {
    let (parts, body) = head.into_parts();
    let status = parts.status.as_u16();
    let mut stream = GuestBody { body, sent: 0, max_bytes, cancel: Some(cancel) };
    let mut response = match stream.take_finished(WHOLE_BODY_LIMIT) {
        Ok(whole) => Response::with_body(status, whole),
        Err(written) => {
            let declared =
                parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let stream = Prefixed { first: written, rest: stream };
            match declared {
                Some(len) if len <= max_bytes => Response::sized_stream(status, len, stream),
                _ => Response::stream(status, stream),
            }
        }
    };
    for (name, value) in &parts.headers {
        if matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection" | "keep-alive") {
            continue;
        }
        response = response.header(name.as_str().to_owned(), Bytes::copy_from_slice(value.as_bytes()));
    }
    response
}

/// The guest's outgoing body as the server's body stream. Holding `cancel` keeps the guest's
/// task alive while the client reads; the body's end releases the guest to finish on its own,
/// and dropping it unfinished (the client went away) cancels the task.
struct GuestBody {
    body: HyperOutgoingBody,
    sent: u64,
    max_bytes: u64,
    cancel: Option<oneshot::Sender<()>>,
}

impl GuestBody {
    /// The whole body if the guest has finished writing it (at most `limit` bytes, no error),
    /// without waiting; otherwise what is written so far, to send first.
    fn take_finished(&mut self, limit: usize) -> Result<Bytes, VecDeque<Result<Bytes, std::io::Error>>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut written = VecDeque::new();
        let mut size = 0;
        loop {
            match Pin::new(&mut *self).poll_next(&mut cx) {
                Poll::Ready(None) => break,
                Poll::Ready(Some(Ok(chunk))) if size + chunk.len() <= limit => {
                    size += chunk.len();
                    written.push_back(Ok(chunk));
                }
                Poll::Ready(Some(other)) => {
                    written.push_back(other);
                    return Err(written);
                }
                Poll::Pending => return Err(written),
            }
        }
        // One chunk (the usual case) goes out as it is; several are joined once.
        if written.len() <= 1 {
            return Ok(written.pop_front().and_then(Result::ok).unwrap_or_default());
        }
        let mut whole = bytes::BytesMut::with_capacity(size);
        for chunk in written.into_iter().flatten() {
            whole.extend_from_slice(&chunk);
        }
        Ok(whole.freeze())
    }

    fn finished(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            let _ = cancel.send(());
        }
    }
}

/// Chunks already taken from a body, then the rest of it.
struct Prefixed {
    first: VecDeque<Result<Bytes, std::io::Error>>,
    rest: GuestBody,
}

impl Stream for Prefixed {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(chunk) = self.first.pop_front() {
            return Poll::Ready(Some(chunk));
        }
        Pin::new(&mut self.rest).poll_next(cx)
    }
}

impl Stream for GuestBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.finished();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(std::io::Error::other(format!("{e:?}"))))),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            // Trailers are not forwarded (HTTP/1.1 chunked trailers are rarely read).
            let Ok(data) = frame.into_data() else { continue };
            self.sent += data.len() as u64;
            if self.sent > self.max_bytes {
                return Poll::Ready(Some(Err(std::io::Error::other(
                    "the function's response is larger than max_response_bytes",
                ))));
            }
            return Poll::Ready(Some(Ok(data)));
        }
    }
}
