//! What one invocation's `Store` holds, and the host side of every import: WASI (through
//! `wasmtime-wasi`), `wasi:http` (through `wasmtime-wasi-http`, with outgoing requests checked
//! against the function's allow-list and sent from the egress runtime), and MadBase's
//! `madbase:functions` package (`wit/madbase.wit`): SQL as the caller, the caller's claims.
//!
//! Owns: [`Invocation`] (the store's data), [`OutboundHooks`], [`Limiter`].
//!
//! Invariants:
//! - The store's data is `Send` (Wasmtime's async calls need it), so it holds no `Rc`: SQL goes
//!   over a channel to the invocation's own task on the shard ([`crate::invoke`]), which runs it
//!   on the shard's Functions lane as the caller's role with the caller's claims.
//! - An outgoing request whose host is not on the function's allow-list never leaves the
//!   process: it fails with `HTTP-request-denied` before any connection.
//! - Memory growth past the function's limit is refused and remembered, so the trap that
//!   follows is reported as a resource limit (546), not as the function's error (500).

use std::sync::Arc;

use futures_channel::{mpsc, oneshot};
use http_body_util::BodyExt;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Host bindings of `wit/madbase.wit`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "madbase:functions/host",
        imports: { default: async },
    });
}

use bindings::madbase::functions::{caller, database};

/// One SQL statement a guest asked for, on its way to the invocation's task.
pub struct DbCall {
    pub sql: String,
    pub params: Vec<Option<String>>,
    pub reply: oneshot::Sender<Result<String, database::DatabaseError>>,
}

/// The data of one invocation's `Store`.
pub struct Invocation {
    pub wasi: WasiCtx,
    /// What the function prints (bounded), logged when it ends.
    pub stdout: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
    pub stderr: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
    pub table: ResourceTable,
    pub http: WasiHttpCtx,
    pub hooks: OutboundHooks,
    pub limiter: Limiter,
    /// The caller's verified claims (JSON), when a valid token came with the request.
    pub claims: Option<String>,
    /// Where SQL goes; `None` once the invocation's statement budget is spent.
    pub db: mpsc::Sender<DbCall>,
    pub db_calls_left: u32,
    /// Epoch ticks the guest ran for, and how many it may.
    pub cpu_ticks: u64,
    pub cpu_limit_ticks: u64,
    pub cpu_exceeded: bool,
}

impl WasiView for Invocation {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Invocation {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Outgoing HTTP for one invocation: the allow-list and the client on the egress runtime.
pub struct OutboundHooks {
    pub allowed_hosts: Arc<[String]>,
    pub client: reqwest::Client,
    /// Largest outgoing request body sent.
    pub max_body_bytes: usize,
}

/// Whether `allowed` (entries `host`, `host:port`, `*.suffix`, or `*` for any host) admits the
/// authority `host` with `port`.
pub fn host_allowed(allowed: &[String], host: &str, port: u16) -> bool {
    let host = host.to_ascii_lowercase();
    allowed.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        if entry == "*" {
            return true;
        }
        let (pattern, entry_port) = match entry.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h.to_owned(), p.parse::<u16>().ok()),
            _ => (entry.clone(), None),
        };
        let host_matches = match pattern.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == pattern,
        };
        host_matches && entry_port.is_none_or(|p| p == port)
    })
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
)>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn std::future::Future<Output = SendResult> + Send> {
        let uri = request.uri();
        let host = uri.host().unwrap_or("").to_owned();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let allowed = host_allowed(&self.allowed_hosts, &host, port);
        let client = self.client.clone();
        let max_body = self.max_body_bytes;
        Box::new(async move {
            if !allowed {
                tracing::info!(host = %host, port, "a function's outgoing request was refused (not in its allowed_outbound_hosts)");
                return Err(ErrorCode::HttpRequestDenied.into());
            }
            let (parts, body) = request.into_parts();
            let body = http_body_util::Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|_| wasmtime_wasi_http::Error::from(ErrorCode::HttpRequestBodySize(None)))?
                .to_bytes();
            let mut outgoing = reqwest::Request::new(
                parts.method,
                parts.uri.to_string().parse().map_err(|_| ErrorCode::HttpRequestUriInvalid)?,
            );
            *outgoing.headers_mut() = parts.headers;
            *outgoing.body_mut() = Some(reqwest::Body::from(body));
            let response = client.execute(outgoing).await.map_err(|e| {
                let code = if e.is_timeout() {
                    ErrorCode::ConnectionTimeout
                } else if e.is_connect() {
                    ErrorCode::ConnectionRefused
                } else {
                    ErrorCode::InternalError(Some(e.to_string()))
                };
                wasmtime_wasi_http::Error::from(code)
            })?;
            let response: http::Response<reqwest::Body> = response.into();
            let response = response.map(|body| {
                body.map_err(|e| wasmtime_wasi_http::Error::from(ErrorCode::InternalError(Some(e.to_string()))))
                    .boxed_unsync()
            });
            let done: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

/// Memory and table growth of one invocation.
pub struct Limiter {
    pub memory_limit: usize,
    /// Growth was refused: the function hit its memory limit.
    pub refused: bool,
    /// The largest linear memory the instance reached, in bytes.
    pub high_water: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.refused = true;
            return Ok(false);
        }
        self.high_water = self.high_water.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl database::Host for Invocation {
    async fn query(&mut self, sql: String, params: Vec<Option<String>>) -> Result<String, database::DatabaseError> {
        if self.db_calls_left == 0 {
            return Err(database::DatabaseError {
                code: "MB002".to_owned(),
                message: "this invocation ran as many statements as edge_runtime.max_db_calls allows".to_owned(),
            });
        }
        self.db_calls_left -= 1;
        let (reply, answer) = oneshot::channel();
        let call = DbCall { sql, params, reply };
        if self.db.try_send(call).is_err() {
            return Err(unavailable());
        }
        answer.await.unwrap_or_else(|_| Err(unavailable()))
    }
}

fn unavailable() -> database::DatabaseError {
    database::DatabaseError { code: "MB003".to_owned(), message: "the database is not available".to_owned() }
}

impl caller::Host for Invocation {
    async fn claims(&mut self) -> Option<String> {
        self.claims.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn allow_lists_match_hosts_ports_and_wildcards() {
        let list: Vec<String> = ["api.example.com", "*.internal", "localhost:8080"].map(String::from).to_vec();
        assert!(host_allowed(&list, "api.example.com", 443));
        assert!(host_allowed(&list, "API.example.com", 80));
        assert!(host_allowed(&list, "a.b.internal", 443));
        assert!(host_allowed(&list, "localhost", 8080));
        assert!(!host_allowed(&list, "localhost", 8081));
        assert!(!host_allowed(&list, "internal", 443));
        assert!(!host_allowed(&list, "evil.com", 443));
        assert!(!host_allowed(&list, "api.example.com.evil.com", 443));
        assert!(!host_allowed(&[], "api.example.com", 443));
        assert!(host_allowed(&["*".to_owned()], "anything", 1));
    }
}
