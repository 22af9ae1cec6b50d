//! `madbase-rest`, `/rest/v1`: the PostgREST-compatible Data API (reference/rest.md), one
//! [`RestService`] per shard.
//!
//! A request flows down, never back up: this module authenticates it and routes it by path and
//! method to one handler — [`read`] (`GET`/`HEAD /rest/v1/<table-or-view>`), [`write`] (`POST`,
//! `PATCH`, `PUT`, `DELETE`: one statement in a READ WRITE transaction), [`rpc`]
//! (`/rest/v1/rpc/<fn>`: one statement, READ ONLY unless a POST calls a VOLATILE function) or
//! [`openapi`] (`/rest/v1/`). Each handler reads what the request carries through the shared
//! modules, builds its one statement, runs it in the request's batch and finishes the response
//! through the shared modules again. Everything else of PostgREST's surface answers with a clear
//! PostgREST-shaped error (never a partial or wrong result) until it is built.
//!
//! Each module's one job:
//! - this module: the service on a shard ([`RestService`], its messages and owner task) and
//!   routing (path → relation, function or root; method → handler);
//! - handlers: [`read`], [`write`], [`rpc`], [`openapi`];
//! - the request: [`request`] (profile → schema, the batch of request settings, the body check
//!   off the shard, whether plans may be asked for), [`prefer`] (the `Prefer` header),
//!   [`range`] (`Range`, `db_max_rows`, the range status and `Content-Range`), [`media`]
//!   (`Accept`: the body's media type and SQL), [`body_format`] and [`payload`] (request bodies);
//! - the statement: [`query`] (the query-string grammar) → [`plan`] (embeds resolved against
//!   the schema cache, [`relation`] for the relation itself) → [`sql`] (the SQL of a read, and the
//!   filter/order grammar writes and calls reuse) → [`statement`] (the part every statement
//!   shares: bound parameters, the outer `SELECT` with the response GUCs, the row-limit check);
//! - the answer: [`response`] (status, headers and `response.*` overrides of a result row) or an
//!   [`ApiError`] ([`error`]);
//! - state: the schema cache ([`schema`]: introspection, the snapshot each shard reads, and the
//!   `LISTEN pgrst` reloader, this service's one owner-shard task) and [`settings`] (Supabase's
//!   `[api]` and MadBase's `[rest]`); [`injection`] checks that every handler's builder keeps
//!   request text out of SQL.
//!
//! Invariants:
//! - one request = one batch = one round trip: the request settings in PostgREST's order
//!   (`search_path`, `role`, the role's own settings, `request.jwt.claims`, `request.method`,
//!   `request.path`, `request.headers`, `request.cookies`, `timezone` from `Prefer`), the
//!   `db_pre_request` function (`[rest] pre_request`) when configured, and the one statement
//!   (which also reads the response GUCs), in one transaction (see [`request`]);
//! - the response body is the exact bytes PostgreSQL built (`json_agg`), never re-serialised, so
//!   every type renders as PostgREST renders it;
//! - nothing from the request reaches SQL text except quoted identifiers (see [`sql`]); the
//!   schema is always one of `db_schemas` (`[api] schemas`), never a name the request made up;
//! - a request reads one schema cache snapshot, taken once at its start, to its end;
//! - `db_max_rows` (`[api] max_rows`) caps the top-level `limit` of every read and function call before SQL is built;
//! - no `unwrap`/`expect` on request input; every list a request can grow is bounded.

mod body_format;
mod error;
pub mod injection;
mod media;
mod openapi;
mod payload;
mod plan;
mod prefer;
mod query;
mod range;
mod read;
mod relation;
mod request;
mod response;
mod rpc;
pub mod schema;
pub mod settings;
mod sql;
mod statement;
mod write;

use std::rc::Rc;
use std::sync::Arc;

use madbase_core::{identity, Cors, LaneSpec, LocalTask, Outbox, Service, ServiceInfo, ShardCtx, Snapshot};
use madbase_http::{Body, Request, Response};
use madbase_pg::Pool;

use crate::schema::SchemaCache;
use crate::settings::Config;
pub use error::ApiError;
pub struct RestService {
    pub(crate) ctx: Rc<ShardCtx>,
    pub(crate) config: Arc<Config>,
    /// The schema cache this shard serves from (see [`Snapshot`]).
    pub(crate) schema: Snapshot<SchemaCache>,
    pub(crate) outbox: Outbox<RestMessage>,
}

/// What the Data API's instances send each other.
#[derive(Clone)]
pub enum RestMessage {
    /// A new schema cache snapshot from the owner shard's reloader: swap it in.
    Schema(Arc<SchemaCache>),
}

impl RestService {
    /// The PostgreSQL lane of the Data API: its own connections on every shard.
    pub const LANE: &'static str = "rest";

    /// The lane the binary creates for this service, `connections` per shard.
    pub fn lane(connections: usize) -> LaneSpec {
        LaneSpec { name: Self::LANE, connections }
    }

    /// Builds the service on one shard, starting from the schema cache loaded at start-up.
    pub fn new(ctx: Rc<ShardCtx>, config: Arc<Config>, schema: Arc<SchemaCache>, outbox: Outbox<RestMessage>) -> Self {
        RestService { ctx, config, schema: Snapshot::new(schema), outbox }
    }

    /// The current schema snapshot (kept by the caller to its end).
    #[allow(clippy::redundant_allocation)] // see `Snapshot`
    pub(crate) fn schema(&self) -> Rc<Arc<SchemaCache>> {
        self.schema.get()
    }

    pub(crate) fn pool(&self) -> &Pool {
        self.ctx.lanes.get(Self::LANE)
    }
}

/// The headers PostgREST exposes to browsers (reference/rest.md, CORS): without them a browser
/// client cannot read `Content-Range` (counts) or `Location`.
const POSTGREST_EXPOSE_HEADERS: &str =
    "Content-Encoding, Content-Location, Content-Range, Content-Type, Date, Location, Server, Transfer-Encoding, Range-Unit";

impl Service for RestService {
    type Message = RestMessage;

    const INFO: ServiceInfo =
        ServiceInfo { prefix: PREFIX, label: "rest", cors: Cors::Expose(POSTGREST_EXPOSE_HEADERS) };

    async fn handle(&self, req: &Request, body: Body) -> Response {
        match serve(self, req, body).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    }

    fn on_message(&self, message: RestMessage) {
        match message {
            RestMessage::Schema(cache) => self.schema.set(cache),
        }
    }

    fn owner_tasks(self: &Rc<Self>) -> Vec<LocalTask> {
        // One LISTEN connection for the whole process; it publishes new snapshots to every shard.
        vec![Box::pin(schema::reload::run(self.clone(), self.ctx.shutdown.clone()))]
    }
}

/// The mount point of the service.
const PREFIX: &str = "/rest/v1";

/// Authenticates, then routes by path and method: the root, a function call, or a relation.
async fn serve(state: &RestService, req: &Request, body: Body) -> Result<Response, ApiError> {
    // PostgREST authenticates before it looks at anything else of the request.
    let identity = identity::authenticate(&state.ctx.tokens, req)?;
    if is_root(req.path()) {
        return openapi::serve(state, req, &identity).await;
    }
    if let Some(target) = rpc_of(req.path()) {
        let (function, pgrst_path) = target?;
        return rpc::serve(state, req, identity, body, &function, &pgrst_path).await;
    }
    // The caller names the write: no default arm can turn another method into a DELETE.
    let write = match req.method() {
        "GET" | "HEAD" => None,
        "OPTIONS" => return Ok(Response::new(200).header("allow", "OPTIONS,GET,HEAD")),
        "POST" => Some(write::Method::Post),
        "PATCH" => Some(write::Method::Patch),
        "PUT" => Some(write::Method::Put),
        "DELETE" => Some(write::Method::Delete),
        other => return Err(ApiError::Method(other.to_owned())),
    };
    let (relation, pgrst_path) = relation_of(req.path())?;
    match write {
        Some(method) => write::serve(state, req, method, identity, body, &relation, &pgrst_path).await,
        None => read::serve(state, req, &identity, req.method() == "HEAD", &relation, &pgrst_path).await,
    }
}

/// `/rest/v1/<name>` → (`name` decoded, the path PostgREST would see: `/<name>` as sent).
fn relation_of(path: &str) -> Result<(String, String), ApiError> {
    let rest = path.strip_prefix(PREFIX).unwrap_or("");
    let encoded = rest.strip_prefix('/').ok_or(ApiError::InvalidPath)?;
    Ok((path_name(encoded)?, rest.to_owned()))
}

/// `/rest/v1` or `/rest/v1/`: the OpenAPI description ([`openapi`]).
fn is_root(path: &str) -> bool {
    matches!(path.strip_prefix(PREFIX), Some("" | "/"))
}

/// `/rest/v1/rpc/<fn>` → `Some((fn decoded, "/rpc/<fn>" as sent))`; `None` for any other path.
fn rpc_of(path: &str) -> Option<Result<(String, String), ApiError>> {
    let rest = path.strip_prefix(PREFIX)?;
    let encoded = rest.strip_prefix("/rpc/")?;
    Some(path_name(encoded).map(|name| (name, rest.to_owned())))
}

/// One percent-encoded path segment as a PostgreSQL name.
fn path_name(encoded: &str) -> Result<String, ApiError> {
    if encoded.is_empty() || encoded.contains('/') {
        return Err(ApiError::InvalidPath);
    }
    let name = query::percent_decode(encoded, false).map_err(|_| ApiError::InvalidPath)?;
    // NUL cannot be carried in SQL text; PostgreSQL names are never empty.
    if name.is_empty() || name.contains('\0') || name.len() > query::MAX_IDENT_BYTES {
        return Err(ApiError::InvalidPath);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(relation_of("/rest/v1/todos").unwrap(), ("todos".into(), "/todos".into()));
        assert_eq!(relation_of("/rest/v1/Order%20Items").unwrap(), ("Order Items".into(), "/Order%20Items".into()));
        assert!(matches!(relation_of("/rest/v1/a/b"), Err(ApiError::InvalidPath)));
        assert!(matches!(relation_of("/rest/v1/a%00"), Err(ApiError::InvalidPath)));
        assert!(is_root("/rest/v1/") && is_root("/rest/v1") && !is_root("/rest/v1/t"));
        assert_eq!(rpc_of("/rest/v1/rpc/my%20fn").unwrap().unwrap(), ("my fn".into(), "/rpc/my%20fn".into()));
        assert!(matches!(rpc_of("/rest/v1/rpc/a/b"), Some(Err(ApiError::InvalidPath))));
        assert!(matches!(rpc_of("/rest/v1/rpc/"), Some(Err(ApiError::InvalidPath))));
        assert!(rpc_of("/rest/v1/rpc").is_none(), "a relation named rpc");
        assert!(rpc_of("/rest/v1/todos").is_none());
    }
}
