//! `madbase-rest`, `/rest/v1`: the PostgREST-compatible Data API (reference/rest.md), one
//! [`RestService`] per shard.
//!
//! Reads are `GET` and `HEAD /rest/v1/<table-or-view>`: the query string is parsed ([`query`]),
//! resolved against the schema cache snapshot into a read plan ([`plan`]: embeds and their
//! relationships) and turned into one statement ([`sql`]), with the `Range` header,
//! `Prefer: count=exact|planned|estimated`, and every media type of [`media`] (JSON,
//! `nulls=stripped`, CSV, GeoJSON, `EXPLAIN` plans). `/rest/v1/` is the OpenAPI description
//! ([`openapi`]).
//! Writes (`POST`, `PATCH`, `PUT`, `DELETE`) are [`write`]: one statement in a READ WRITE
//! transaction. Function calls (`/rpc/<fn>`) are [`rpc`]: one statement, READ ONLY unless a POST
//! calls a VOLATILE function. Everything else of PostgREST's surface answers with a clear
//! PostgREST-shaped error (never a partial or wrong result) until it is built.
//!
//! Owns: the schema cache ([`schema`]: introspection, the snapshot each shard reads, and the
//! `LISTEN pgrst` reloader, this service's one owner-shard task), its settings ([`settings`]:
//! Supabase's `[api]` and MadBase's `[rest]`), and the request flow — route → authenticate
//! ([`madbase_core::identity`]) → pick the schema ([`profile`]:
//! `Accept-Profile`/`Content-Profile` against `db_schemas`) → parse the query string ([`query`])
//! → plan it ([`plan`]) → build one statement ([`sql`]) → run it in the request's batch
//! ([`request_batch`]) → the response (with the `response.headers`/`response.status` overrides of
//! reference/rest.md §2.1), or an [`ApiError`] ([`error`]).
//!
//! Invariants:
//! - one request = one batch = one round trip: the request settings in PostgREST's order
//!   (`search_path`, `role`, `request.jwt.claims`, `request.method`, `request.path`,
//!   `request.headers`, `request.cookies`), the `db_pre_request` function when configured, and
//!   the one statement (which also reads the response GUCs), in one transaction;
//! - the response body is the exact bytes PostgreSQL built (`json_agg`), never re-serialised, so
//!   every type renders as PostgREST renders it;
//! - nothing from the request reaches SQL text except quoted identifiers (see [`sql`]); the
//!   schema is always one of `db_schemas`, never a name the request made up;
//! - `db_max_rows` caps the top-level `limit` of every read and function call before SQL is built;
//! - no `unwrap`/`expect` on request input; every list a request can grow is bounded.

mod body_format;
mod error;
pub mod injection;
mod media;
mod openapi;
mod payload;
mod plan;
mod query;
mod relation;
mod rpc;
pub mod schema;
pub mod settings;
mod sql;
mod write;

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use madbase_core::identity as auth;
use madbase_core::{Cors, LaneSpec, LocalTask, Outbox, Service, ServiceInfo, ShardCtx, Snapshot};
use madbase_http::{Body, Request, Response};
use madbase_pg::{Batch, PgError, Pool, Row, StatementResult};
use serde_json::{Map, Value};

use crate::schema::relationships::QualifiedName;
use crate::schema::SchemaCache;
use crate::settings::Config;
pub use error::ApiError;

/// The Data API on one shard.
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
        vec![Box::pin(schema::reload::run(self.clone(), self.ctx.shard.shutdown_signal()))]
    }
}

/// The mount point of the service.
const PREFIX: &str = "/rest/v1";
/// At most this many cookies are copied into `request.cookies`.
const MAX_COOKIES: usize = 64;
/// At most this many entries in a `response.headers` GUC (more is PGRST111).
const MAX_GUC_HEADERS: usize = 100;
/// The two columns every request statement ends with: the `response.headers` and
/// `response.status` GUCs (reference/rest.md §2.1) as the statement left them. In the outer
/// `SELECT` around the statement's aggregate they are evaluated once every row — and every
/// function, trigger and default the statement runs — has been computed, as PostgREST reads them.
pub(crate) const RESPONSE_GUC_COLUMNS: &str = "NULLIF(pg_catalog.current_setting('response.headers', true), '') \
     AS pgrst_response_headers, NULLIF(pg_catalog.current_setting('response.status', true), '') AS pgrst_response_status";

/// A request body at least this large is converted and checked on the blocking pool: scanning
/// 50 MB of JSON takes the shard about a quarter of a second, during which its other requests
/// (and `/health`) would wait.
const OFF_SHARD_BODY_BYTES: usize = 256 * 1024;

/// Runs `check` (conversion and shape check of a body of `len` bytes) inline when the body is
/// small, else on the shard's blocking pool; a full pool answers 503 rather than stall the shard.
pub(crate) async fn check_body<T, F>(state: &RestService, len: usize, check: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    if len < OFF_SHARD_BODY_BYTES {
        return check();
    }
    let job = state.ctx.shard.blocking().spawn(check).map_err(|_| ApiError::BodyCheckBusy)?;
    job.await.map_err(|_| ApiError::Internal("the body check did not finish"))?
}

/// `count=exact`, and `estimated` (which counts exactly too, then takes the planner's estimate
/// above db-max-rows).
fn counts_exactly(prefer: &write::Prefer) -> bool {
    matches!(prefer.count, Some("exact" | "estimated"))
}

/// A read's statements, for one batch: the page (with its exact count when asked), wrapped in
/// `EXPLAIN` for a plan; and the planner's count (`planned`, `estimated`), which a plan does not
/// run. The handler and the injection property (`rest::injection`) both build through here.
pub(crate) fn read_statements(
    schema: &crate::schema::SchemaCache,
    plan: &plan::ReadPlan,
    media: &media::Media,
    head: bool,
    prefer: &write::Prefer,
) -> (madbase_pg::Statement, Option<madbase_pg::Statement>) {
    let mut statement = sql::read_statement(schema, plan, (!head).then_some(media), counts_exactly(prefer));
    if let Some(explain) = &media.plan {
        statement.sql = explain.wrap(&statement.sql);
    }
    let planned_count = matches!(prefer.count, Some("planned" | "estimated")) && media.plan.is_none();
    (statement, planned_count.then(|| sql::count_plan_statement(schema, plan)))
}

async fn serve(state: &RestService, req: &Request, body: Body) -> Result<Response, ApiError> {
    // PostgREST authenticates before it looks at anything else of the request.
    let identity = auth::authenticate(&state.ctx.tokens, req)?;
    let method = req.method();
    if is_root(req.path()) {
        return openapi::serve(state, req, &identity).await;
    }
    if let Some(target) = rpc_of(req.path()) {
        let (function, pgrst_path) = target?;
        return rpc::serve(state, req, identity, body, &function, &pgrst_path).await;
    }
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        "OPTIONS" => return Ok(Response::new(200).header("allow", "OPTIONS,GET,HEAD")),
        // The caller names the write: no default arm can turn another method into a DELETE.
        "POST" => return write::serve(state, req, write::Method::Post, identity, body).await,
        "PATCH" => return write::serve(state, req, write::Method::Patch, identity, body).await,
        "PUT" => return write::serve(state, req, write::Method::Put, identity, body).await,
        "DELETE" => return write::serve(state, req, write::Method::Delete, identity, body).await,
        other => return Err(ApiError::Method(other.to_owned())),
    };
    let (relation, pgrst_path) = relation_of(req.path())?;
    let config = &state.config;
    let profile = profile(req, config)?;
    // The snapshot this request uses to its end; an unknown relation never reaches PostgreSQL.
    let schema = state.schema();
    let media = media::negotiate(req, plan_enabled(state, &schema))?;
    let mut query = query::parse_read_query(req.query().unwrap_or(""))?;
    apply_range_header(req, &mut query)?;
    cap_rows(&mut query, config.api.max_rows.0);
    relation::find(&schema, profile.schema, &relation)?;
    let plan = plan::plan(&schema, profile.schema, QualifiedName::new(profile.schema, &relation), &query)?;

    let prefer = write::Prefer::checked(req)?;
    let (statement, count_plan) = read_statements(&schema, &plan, &media, head, &prefer);
    let end = prefer.tx_end();
    let results = request_batch(state, &schema, req, &identity, profile, &pgrst_path, &prefer)
        .with(|batch| {
            let batch = batch.statement(statement).read_only(true).end(end);
            // In the same batch: still one round trip.
            match count_plan {
                Some(count_plan) => batch.statement(count_plan),
                None => batch,
            }
        })
        .run(state)
        .await
        .map_err(|e| ApiError::from_pg(e, identity.authenticated))?;
    if media.plan.is_some() {
        return plan_response(&results, &media, head, profile);
    }

    let row = results.first().and_then(|r| r.rows.first()).ok_or(ApiError::Internal("no result row"))?;
    let (page_total, exact) = row_counts(row, counts_exactly(&prefer))?;
    if media.is_singular() && page_total != 1 {
        return Err(ApiError::NotSingular(page_total));
    }
    let planned =
        || results.get(1).and_then(|r| r.rows.first()).and_then(|r| r.get(0)).and_then(|j| sql::planned_rows(j));
    let total = match prefer.count {
        Some("planned") => planned(),
        Some("estimated") => estimated_total(exact, planned(), state.config.api.max_rows.0),
        _ => exact,
    };
    let offset = query.offset.map_or(0, |o| o.unsigned_abs());
    let status = range_status(offset, page_total, total)?;
    let body = if head { Bytes::new() } else { row.get(1).cloned().ok_or(ApiError::Internal("body is NULL"))? };
    let mut response =
        Response::with_body(status, body).header("content-range", content_range(offset, page_total, total));
    profile.content_type(&mut response, media.content_type());
    prefer.set_applied(&mut response, Vec::new(), None);
    respond(row, response)
}

/// `db-max-rows`: the top-level `limit` becomes the smaller of the requested one and the cap.
fn cap_rows(query: &mut query::ReadQuery, max_rows: Option<u64>) {
    if let Some(max) = max_rows {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        query.limit = Some(query.limit.map_or(max, |limit| limit.min(max)));
    }
}

/// `Prefer: count=estimated` (PostgREST's rule): the exact count while it stays within
/// `max_rows` (`db_max_rows`); above it (always, without a cap) the larger of the exact count and the estimate.
fn estimated_total(exact: Option<u64>, planned: Option<u64>, max_rows: Option<u64>) -> Option<u64> {
    // `Option`'s order is PostgREST's (`Nothing` below every `Just`).
    if exact > max_rows {
        Some(exact?.max(planned?))
    } else {
        exact
    }
}

/// The answer to `Accept: application/vnd.pgrst.plan…`: 200 with the `EXPLAIN` output (one line
/// per row, each ending in `\n`), its media type and nothing else (no `Content-Range`).
fn plan_response(
    results: &[madbase_pg::StatementResult],
    media: &media::Media,
    head: bool,
    profile: Profile<'_>,
) -> Result<Response, ApiError> {
    let rows = results.first().map(|r| r.rows.as_slice()).ok_or(ApiError::Internal("no plan"))?;
    let body = if head { Bytes::new() } else { Bytes::from(media::Plan::body(rows)) };
    let mut response = Response::with_body(200, body);
    profile.content_type(&mut response, media.content_type());
    Ok(response)
}

/// The `Range` request header (`Range: 0-19`, open-ended `10-`), read only on GET as PostgREST
/// reads it (RFC 9110 lets other methods ignore it); a value that is not `<digits>-[<digits>]`
/// (e.g. `items=0-1`) is ignored. The rows asked for are intersected with `offset`/`limit`, which
/// then carry the result. `limit=0` bypasses the header and the offset (PostgREST's "limit zero
/// range" starts at row 0, for every method). Errors (416 PGRST103): a lower bound above the upper
/// one; an empty intersection (PostgREST's "Limit should be greater than or equal to zero." then).
fn apply_range_header(req: &Request, query: &mut query::ReadQuery) -> Result<(), ApiError> {
    if query.limit == Some(0) {
        query.offset = None;
        return Ok(());
    }
    if req.method() != "GET" {
        return Ok(());
    }
    let Some((lower, upper)) = req.header("range").and_then(parse_range) else { return Ok(()) };
    if upper.is_some_and(|upper| upper < lower) {
        return Err(ApiError::RangeBounds);
    }
    let offset = query.offset.unwrap_or(0).max(0);
    let limit_upper = query.limit.map(|limit| offset.saturating_add(limit).saturating_sub(1));
    let first = lower.max(offset);
    let last = match (upper, limit_upper) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if last.is_some_and(|last| last < first) {
        return Err(ApiError::Query(query::QueryError::NegativeLimit));
    }
    query.offset = (first > 0 || query.offset.is_some()).then_some(first);
    // `last - first + 1` cannot exceed i64 unless the range reaches i64::MAX: no row lies there,
    // so that is no limit at all.
    query.limit = last.and_then(|last| last.checked_sub(first)?.checked_add(1));
    Ok(())
}

/// `^([0-9]+)-([0-9]*)$` → (first, last); numbers past `i64::MAX` saturate (no row lies there).
fn parse_range(value: &[u8]) -> Option<(i64, Option<i64>)> {
    let text = std::str::from_utf8(value).ok()?;
    let (lower, upper) = text.split_once('-')?;
    let number = |digits: &str| -> Option<i64> {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(digits.parse::<i64>().unwrap_or(i64::MAX))
    };
    let lower = number(lower)?;
    let upper = if upper.is_empty() { None } else { Some(number(upper)?) };
    Some((lower, upper))
}

/// `db-plan-enabled`: by configuration, or by PostgREST's in-database setting
/// (`alter role … set pgrst.db_plan_enabled = 'true'`).
pub(crate) fn plan_enabled(state: &RestService, schema: &crate::schema::SchemaCache) -> bool {
    state.config.rest.plan_enabled || schema.setting_enabled("db_plan_enabled")
}

/// `page_total` (column 0) and, when counted, `total_result_set` (column 2) of a read or RPC result
/// row.
pub(crate) fn row_counts(row: &madbase_pg::Row, exact_count: bool) -> Result<(u64, Option<u64>), ApiError> {
    let number = |i: usize| row.get_str(i).and_then(|n| n.parse::<u64>().ok());
    let page_total = number(0).ok_or(ApiError::Internal("page_total is not a number"))?;
    let total = match exact_count {
        true => Some(number(2).ok_or(ApiError::Internal("total is not a number"))?),
        false => None,
    };
    Ok((page_total, total))
}

/// PostgREST's status for a read of `rows` rows from `offset`: 200 without a count; with one,
/// 416 when the offset lies beyond the total, 206 when the rows do not cover it, else 200.
fn range_status(offset: u64, rows: u64, total: Option<u64>) -> Result<u16, ApiError> {
    match total {
        None => Ok(200),
        Some(total) if offset > total => Err(ApiError::OffsetBeyondTotal { offset, total }),
        Some(total) if rows < total => Ok(206),
        Some(_) => Ok(200),
    }
}

/// The schema a request addresses (PostgREST's profile negotiation, reference/rest.md §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Profile<'a> {
    /// One of `db_schemas`.
    pub schema: &'a str,
    /// PostgREST's `iNegotiatedByProfile`: a profile header chose the schema, or several are
    /// exposed. Then a response that carries a `Content-Type` also carries `Content-Profile`.
    pub negotiated: bool,
}

impl Profile<'_> {
    /// Sets `Content-Type` and, when negotiated, `Content-Profile` (PostgREST sends them together).
    pub(crate) fn content_type(&self, response: &mut Response, content_type: impl Into<Bytes>) {
        response.set_header("content-type", content_type);
        if self.negotiated {
            response.set_header("content-profile", self.schema.to_owned());
        }
    }
}

/// The request's schema: `Content-Profile` for POST/PATCH/PUT/DELETE, `Accept-Profile` for any
/// other method, else the first of `db_schemas`; a schema that is not exposed is 406 PGRST106.
pub(crate) fn profile<'a>(req: &Request, config: &'a Config) -> Result<Profile<'a>, ApiError> {
    let schemas = &config.api.schemas;
    let header = match req.method() {
        "POST" | "PATCH" | "PUT" | "DELETE" => "content-profile",
        _ => "accept-profile",
    };
    match req.header(header) {
        None => {
            let schema = schemas.first().ok_or(ApiError::Internal("db_schemas is empty"))?;
            Ok(Profile { schema, negotiated: schemas.len() > 1 })
        }
        Some(value) => match schemas.iter().find(|s| s.as_bytes() == value) {
            Some(schema) => Ok(Profile { schema, negotiated: true }),
            None => Err(ApiError::InvalidSchema {
                schema: String::from_utf8_lossy(value).into_owned(),
                exposed: schemas.join(", "),
            }),
        },
    }
}

/// `response` with PostgREST's overrides from SQL, read from the last two columns of the
/// statement's `row` ([`RESPONSE_GUC_COLUMNS`]): `response.status` replaces the status,
/// `response.headers` (a JSON array of single-key objects) replaces same-named headers and adds
/// the rest. Malformed → 500 PGRST111 / PGRST112.
pub(crate) fn respond(row: &Row, mut response: Response) -> Result<Response, ApiError> {
    let (headers, status) = match row.len().checked_sub(2) {
        Some(first) => (row.get_str(first), row.get_str(first + 1)),
        None => return Err(ApiError::Internal("no response GUC columns")),
    };
    if let Some(text) = status {
        response.set_status(guc_status(text)?);
    }
    if let Some(text) = headers {
        let headers = guc_headers(text)?;
        for (name, _) in &headers {
            response.remove_header(name);
        }
        for (name, value) in headers {
            response.set_header(name, value);
        }
    }
    Ok(response)
}

/// `response.status`: leading decimal digits (PostgREST reads the number at the start), a final
/// status code from 200 to 599 (a 1xx is refused: see [`ApiError::GucStatus`]).
fn guc_status(text: &str) -> Result<u16, ApiError> {
    let digits = text.find(|c: char| !c.is_ascii_digit()).map_or(text, |end| &text[..end]);
    match digits.parse::<u16>() {
        Ok(status) if error::FINAL_STATUS.contains(&status) => Ok(status),
        _ => Err(ApiError::GucStatus),
    }
}

/// `response.headers`: `[{"Name":"value"}, …]`, at most [`MAX_GUC_HEADERS`] entries.
fn guc_headers(text: &str) -> Result<Vec<(String, String)>, ApiError> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) else { return Err(ApiError::GucHeaders) };
    if items.len() > MAX_GUC_HEADERS {
        return Err(ApiError::GucHeaders);
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(map) if map.len() == 1 => match map.into_iter().next() {
                Some((name, Value::String(value))) => Ok((name, value)),
                _ => Err(ApiError::GucHeaders),
            },
            _ => Err(ApiError::GucHeaders),
        })
        .collect()
}

/// One `/rest/v1` request's batch (one transaction, one round trip): the request settings in
/// PostgREST's order (`search_path` = the profile's schema then `db_extra_search_path`, `role`,
/// `request.jwt.claims`, `request.method`, `request.path`, `request.headers`,
/// `request.cookies`, `timezone` from `Prefer`), then `SELECT <db_pre_request>()` when
/// configured. The caller adds its statement(s), access mode and end ([`RequestBatch::with`]);
/// [`RequestBatch::run`] returns the results of the caller's statements only. Any error (the
/// pre-request function's `RAISE` included) rolls everything back.
pub(crate) struct RequestBatch {
    batch: Batch,
    pre_request: bool,
}

impl RequestBatch {
    pub(crate) fn with(self, add: impl FnOnce(Batch) -> Batch) -> RequestBatch {
        RequestBatch { batch: add(self.batch), ..self }
    }

    pub(crate) async fn run(self, state: &RestService) -> Result<Vec<StatementResult>, PgError> {
        let mut results = state.pool().execute(self.batch).await?;
        if self.pre_request && !results.is_empty() {
            results.remove(0);
        }
        Ok(results)
    }
}

/// The [`RequestBatch`] of a request addressed to `profile`'s schema.
pub(crate) fn request_batch(
    state: &RestService,
    schema: &crate::schema::SchemaCache,
    req: &Request,
    identity: &auth::Identity,
    profile: Profile<'_>,
    pgrst_path: &str,
    prefer: &write::Prefer,
) -> RequestBatch {
    let config = &state.config;
    let mut batch = Batch::new()
        .search_path(search_path(profile.schema, &config.api.extra_search_path))
        .role(identity.role.as_str());
    // The role's own settings (`statement_timeout` …), which switching role does not apply;
    // after the role, as PostgreSQL applies them at login.
    for (name, value) in schema.settings_of_role(&identity.role) {
        batch = batch.setting(name.as_str(), value.as_str());
    }
    let batch = batch
        .jwt_claims(identity.claims_json.as_str())
        .method(req.method())
        .path(pgrst_path)
        .headers(headers_json(req))
        .setting("request.cookies", cookies_json(req));
    let batch = prefer.settings(batch);
    match pre_request_call(config) {
        Some(call) => RequestBatch { batch: batch.query(call), pre_request: true },
        None => RequestBatch { batch, pre_request: false },
    }
}

/// `search_path` as PostgREST sets it: each schema quoted, joined by `", "`.
fn search_path(schema: &str, extra: &[String]) -> String {
    let mut path = sql::quote_ident(schema);
    for name in extra {
        path.push_str(", ");
        path.push_str(&sql::quote_ident(name));
    }
    path
}

/// `SELECT "schema"."function"()` for `db_pre_request` (validated when the configuration loaded).
fn pre_request_call(config: &Config) -> Option<String> {
    let (schema, name) = settings::parse_qualified_name(config.rest.pre_request.as_deref()?).ok()?;
    let qualified = match schema {
        Some(schema) => format!("{}.{}", sql::quote_ident(&schema), sql::quote_ident(&name)),
        None => sql::quote_ident(&name),
    };
    Some(format!("SELECT {qualified}()"))
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

/// `request.headers`: every request header but `Cookie` (PostgREST puts cookies in
/// `request.cookies` only), names lower-cased (a repeated name keeps the last value, as
/// PostgREST's map does), keys in sorted order as `serde_json::Map` writes them. Built directly
/// into one `String` because it runs on every request: no map, no per-header `String`s. Bounded
/// by the HTTP layer's header limits.
fn headers_json(req: &Request) -> String {
    let mut fields: Vec<(&str, &[u8])> =
        req.headers().iter().filter(|(name, _)| !name.eq_ignore_ascii_case("cookie")).collect();
    // Stable: equal names stay in arrival order, so the last of each run is the one kept.
    fields.sort_by(|(a, _), (b, _)| lowercase_cmp(a, b));
    let mut out = String::with_capacity(2 + fields.iter().map(|(n, v)| n.len() + v.len() + 6).sum::<usize>());
    out.push('{');
    let mut first = true;
    for (i, (name, value)) in fields.iter().enumerate() {
        if fields.get(i + 1).is_some_and(|(next, _)| next.eq_ignore_ascii_case(name)) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        push_json_str(&mut out, name, true);
        out.push(':');
        match std::str::from_utf8(value) {
            Ok(text) => push_json_str(&mut out, text, false),
            Err(_) => push_json_str(&mut out, &String::from_utf8_lossy(value), false),
        }
    }
    out.push('}');
    out
}

/// Orders names as their ASCII-lower-cased forms compare (what sorting the lowered keys gives).
fn lowercase_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    a.bytes().map(|c| c.to_ascii_lowercase()).cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

/// Appends `s` as a JSON string literal, escaped exactly as `serde_json` escapes (`\"`, `\\`,
/// the short forms `\b \t \n \f \r`, other control characters as `\u00xx`); `lower`
/// lower-cases ASCII letters on the way.
fn push_json_str(out: &mut String, s: &str, lower: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let begin = out.len();
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            0x08 => Some("\\b"),
            b'\t' => Some("\\t"),
            b'\n' => Some("\\n"),
            0x0c => Some("\\f"),
            b'\r' => Some("\\r"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        start = i + 1;
        match escape {
            Some(e) => out.push_str(e),
            None => {
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 0xf) as usize] as char);
            }
        }
    }
    out.push_str(&s[start..]);
    out.push('"');
    if lower {
        // Only ASCII letters change, so the escapes above (all lower-case already) are unaffected
        // and the string stays valid UTF-8.
        out[begin..].make_ascii_lowercase();
    }
}

/// `request.cookies`: PostgREST's `parseCookies` of the first `Cookie` header — pairs split on
/// `;` (a final empty one dropped), name and value on the first `=` (none: an empty value),
/// leading spaces dropped from the name, the value kept as sent; a repeated name keeps its last
/// value. At most [`MAX_COOKIES`] pairs.
fn cookies_json(req: &Request) -> String {
    // Most API requests carry no cookie: no map to build.
    let Some(header) = req.header("cookie").filter(|h| !h.is_empty()) else { return "{}".to_owned() };
    let mut map = Map::new();
    let header = String::from_utf8_lossy(header);
    let header = header.strip_suffix(';').unwrap_or(&header);
    for pair in header.split(';').take(MAX_COOKIES) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        map.insert(name.trim_start_matches(' ').to_owned(), Value::String(value.to_owned()));
    }
    Value::Object(map).to_string()
}

/// `Content-Range` as PostgREST sends it: `first-last/total`, `*` for the range when no rows came
/// back or the total is 0 (a planned estimate can be), `*` for the total when none was counted.
pub(crate) fn content_range(offset: u64, rows: u64, total: Option<u64>) -> String {
    let range_known = rows > 0 && total != Some(0);
    let total = total.map_or_else(|| "*".to_owned(), |t| t.to_string());
    if !range_known {
        format!("*/{total}")
    } else {
        format!("{offset}-{}/{total}", offset.saturating_add(rows - 1))
    }
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

    /// What `headers_json` built before it was hand-written: the reference for its output.
    fn headers_json_via_serde(req: &Request) -> String {
        let mut map = Map::new();
        for (name, value) in req.headers().iter().filter(|(name, _)| !name.eq_ignore_ascii_case("cookie")) {
            map.insert(name.to_ascii_lowercase(), Value::String(String::from_utf8_lossy(value).into_owned()));
        }
        Value::Object(map).to_string()
    }

    #[test]
    fn headers_json_matches_serde() {
        fn h(name: &[u8], value: &[u8]) -> (Bytes, Bytes) {
            (Bytes::copy_from_slice(name), Bytes::copy_from_slice(value))
        }
        let cases = vec![
            vec![],
            vec![h(b"Host", b"localhost:3000"), h(b"apikey", b"k"), h(b"Authorization", b"Bearer x.y.z")],
            vec![h(b"X-B", b"1"), h(b"x-a", b"2"), h(b"X-A", b"3"), h(b"x-b", b"4"), h(b"x-a", b"5")],
            vec![h(b"X-Quote", b"a\"b\\c"), h(b"X-Ctl", b"\x00\x01\x08\t\n\x0b\x0c\r\x1f\x7f end")],
            vec![h(b"X-Utf8", "caf\u{e9} \u{1f600}".as_bytes()), h(b"X-Bad", b"a\xff\xfeb\xc3")],
            vec![h(b"X-Name\"Q", b"v"), h(b"\xff", b"bad name"), h(b"", b"empty")],
            vec![h(b"Cookie", b"a=1"), h(b"x-a", b"1"), h(b"COOKIE", b"b=2")],
        ];
        for fields in cases {
            let mut headers = madbase_http::Headers::default();
            for (name, value) in fields {
                headers.push(name, value);
            }
            let req = Request::new("GET", "/rest/v1/t", headers, "127.0.0.1:1".parse().unwrap());
            let expected = headers_json_via_serde(&req);
            assert_eq!(headers_json(&req), expected);
            let _: Value = serde_json::from_str(&expected).unwrap();
        }
    }

    fn request_with(headers: &[(&str, &str)]) -> Request {
        let mut h = madbase_http::Headers::default();
        for (k, v) in headers {
            h.push(k.to_string(), v.to_string());
        }
        Request::new("GET", "/rest/v1/t", h, "127.0.0.1:1".parse().unwrap())
    }

    #[test]
    fn cookies_as_postgrest_parses_them() {
        for (header, expected) in [
            ("a=1; b=x=y", r#"{"a":"1","b":"x=y"}"#),
            ("a=1;", r#"{"a":"1"}"#),
            ("a=1;;b= 2 ;flag", r#"{"":"","a":"1","b":" 2 ","flag":""}"#),
            ("a=1; a=2", r#"{"a":"2"}"#),
            ("", "{}"),
        ] {
            assert_eq!(cookies_json(&request_with(&[("Cookie", header)])), expected, "{header}");
        }
        // Only the first Cookie header, as PostgREST's lookup.
        assert_eq!(cookies_json(&request_with(&[("cookie", "a=1"), ("cookie", "b=2")])), r#"{"a":"1"}"#);
        assert_eq!(cookies_json(&request_with(&[])), "{}");
    }

    #[test]
    fn profiles() {
        let mut config = Config::default();
        let get = request_with(&[("Accept-Profile", "personal"), ("Content-Profile", "nope")]);
        let err = profile(&get, &config).unwrap_err();
        assert!(
            matches!(err, ApiError::InvalidSchema { ref schema, ref exposed } if schema == "personal" && exposed == "public")
        );
        assert_eq!(profile(&request_with(&[]), &config).unwrap(), Profile { schema: "public", negotiated: false });
        config.api.schemas = vec!["public".into(), "personal".into()];
        assert_eq!(profile(&get, &config).unwrap(), Profile { schema: "personal", negotiated: true });
        assert_eq!(profile(&request_with(&[]), &config).unwrap(), Profile { schema: "public", negotiated: true });
        let post = Request::new("POST", "/rest/v1/t", get.headers().clone(), "127.0.0.1:1".parse().unwrap());
        let (status, body) = {
            let response = profile(&post, &config).unwrap_err().into_response();
            let madbase_http::ResponseBody::Full(bytes) = response.body() else { panic!("not a full body") };
            (response.status(), String::from_utf8(bytes.to_vec()).unwrap())
        };
        assert_eq!(status, 406);
        assert_eq!(
            body,
            r#"{"code":"PGRST106","details":null,"hint":"Only the following schemas are exposed: public, personal","message":"Invalid schema: nope"}"#
        );
    }

    #[test]
    fn search_paths_and_pre_request() {
        assert_eq!(
            search_path("public", &["public".into(), "extensions".into()]),
            r#""public", "public", "extensions""#
        );
        assert_eq!(search_path("my \"s\"", &[]), r#""my ""s""""#);
        let mut config = Config::default();
        assert_eq!(pre_request_call(&config), None);
        config.rest.pre_request = Some("\"a b\".check".into());
        assert_eq!(pre_request_call(&config).unwrap(), r#"SELECT "a b"."check"()"#);
        config.rest.pre_request = Some("check".into());
        assert_eq!(pre_request_call(&config).unwrap(), r#"SELECT "check"()"#);
    }

    #[test]
    fn response_gucs() {
        assert_eq!(guc_status("418").unwrap(), 418);
        assert_eq!(guc_status("201 Created").unwrap(), 201);
        for bad in ["", "abc", "42", "600", "99999999", "100", "101", "199"] {
            assert!(matches!(guc_status(bad), Err(ApiError::GucStatus)), "{bad}");
        }
        assert_eq!(
            guc_headers(r#"[{"Cache-Control":"public"},{"X-A":"1"},{"X-A":"2"}]"#).unwrap(),
            [("Cache-Control".into(), "public".into()), ("X-A".into(), "1".into()), ("X-A".into(), "2".into())]
        );
        for bad in [r#"{"a":"b"}"#, r#"[{"a":1}]"#, r#"[{"a":"1","b":"2"}]"#, r#"["a"]"#, "[{}]", "nope"] {
            assert!(matches!(guc_headers(bad), Err(ApiError::GucHeaders)), "{bad}");
        }
        assert_eq!(guc_headers("[]").unwrap(), []);
    }

    #[test]
    fn max_rows_caps_the_limit() {
        let mut q = query::ReadQuery::default();
        cap_rows(&mut q, None);
        assert_eq!(q.limit, None);
        cap_rows(&mut q, Some(10));
        assert_eq!(q.limit, Some(10));
        q.limit = Some(3);
        cap_rows(&mut q, Some(10));
        assert_eq!(q.limit, Some(3));
        q.limit = Some(30);
        cap_rows(&mut q, Some(10));
        assert_eq!(q.limit, Some(10));
    }

    #[test]
    fn ranges() {
        assert_eq!(content_range(0, 0, None), "*/*");
        assert_eq!(content_range(0, 3, None), "0-2/*");
        assert_eq!(content_range(10, 1, None), "10-10/*");
        assert_eq!(content_range(0, 0, Some(0)), "*/0");
        assert_eq!(content_range(2, 2, Some(9)), "2-3/9");
        assert_eq!(range_status(0, 3, None).unwrap(), 200);
        assert_eq!(range_status(0, 3, Some(3)).unwrap(), 200);
        assert_eq!(range_status(0, 2, Some(3)).unwrap(), 206);
        assert_eq!(range_status(3, 0, Some(3)).unwrap(), 206);
        assert_eq!(range_status(0, 0, Some(0)).unwrap(), 200);
        assert!(matches!(range_status(4, 0, Some(3)), Err(ApiError::OffsetBeyondTotal { offset: 4, total: 3 })));
        assert_eq!(content_range(0, 3, Some(0)), "*/0", "a zero estimate hides the range, as PostgREST");
    }

    #[test]
    fn range_headers_and_estimates() {
        assert_eq!(parse_range(b"0-19"), Some((0, Some(19))));
        assert_eq!(parse_range(b"10-"), Some((10, None)));
        assert_eq!(parse_range(b"99999999999999999999-"), Some((i64::MAX, None)));
        for ignored in [&b"items=0-1"[..], b"-5", b"1-2-3", b" 1-2", b"a-b", b""] {
            assert_eq!(parse_range(ignored), None);
        }
        assert_eq!(estimated_total(Some(3), Some(9), None), Some(9));
        assert_eq!(estimated_total(Some(9), Some(3), None), Some(9));
        assert_eq!(estimated_total(Some(3), Some(9), Some(5)), Some(3));
        assert_eq!(estimated_total(Some(6), Some(900), Some(5)), Some(900));
        assert_eq!(estimated_total(Some(6), None, Some(5)), None);
    }
}
