//! `/rest/v1`: the PostgREST-compatible Data API (reference/rest.md).
//!
//! This slice serves `GET` and `HEAD /rest/v1/<table-or-view>` in schema `public`: flat `select`,
//! horizontal filters, `order`, `limit`, `offset`. Everything else of PostgREST's surface answers
//! with a clear PostgREST-shaped error (never a partial or wrong result) until it is built.
//!
//! Owns: the request flow — route → authenticate ([`auth`]) → parse the query string ([`query`])
//! → build one statement ([`sql`]) → one [`Batch`] → the response, or an [`ApiError`] ([`error`]).
//!
//! Invariants:
//! - one request = one batch = one round trip: the request settings in PostgREST's order
//!   (`search_path`, `role`, `request.jwt.claims`, `request.method`, `request.path`,
//!   `request.headers`, `request.cookies`) and one statement, in a READ ONLY transaction;
//! - the response body is the exact bytes PostgreSQL built (`json_agg`), never re-serialised, so
//!   every type renders as PostgREST renders it;
//! - nothing from the request reaches SQL text except quoted identifiers (see [`sql`]);
//! - no `unwrap`/`expect` on request input; every list a request can grow is bounded.

mod auth;
mod error;
mod query;
mod sql;

use bytes::Bytes;
use madbase_http::{Request, Response};
use madbase_pg::Batch;
use serde_json::{Map, Value};

use crate::app::ShardState;
pub use error::ApiError;

/// The schema this slice serves (the first and only exposed one).
const SCHEMA: &str = "public";
/// `search_path` as PostgREST sets it: the request schema, then the extra search path.
const SEARCH_PATH: &str = "\"public\", \"extensions\"";
/// The mount point of the service.
const PREFIX: &str = "/rest/v1";
/// At most this many cookies are copied into `request.cookies`.
const MAX_COOKIES: usize = 64;

/// Entry point: serves one `/rest/v1` request on this shard.
pub async fn handle(state: &ShardState, req: &Request) -> Response {
    match serve(state, req).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn serve(state: &ShardState, req: &Request) -> Result<Response, ApiError> {
    // PostgREST authenticates before it looks at anything else of the request.
    let identity = auth::authenticate(&state.tokens, req)?;
    let method = req.method();
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        "OPTIONS" => return Ok(Response::new(200).header("allow", "OPTIONS,GET,HEAD")),
        "POST" | "PATCH" | "PUT" | "DELETE" => {
            return Err(ApiError::NotImplemented("writes (POST, PATCH, PUT, DELETE) are not implemented yet"))
        }
        other => return Err(ApiError::Method(other.to_owned())),
    };
    let (relation, pgrst_path) = relation_of(req.path())?;
    let profile = accept_profile(req)?;
    check_accept(req)?;
    if req.header("range").is_some() {
        // Ignoring it would return more rows than asked for.
        return Err(ApiError::NotImplemented("the Range request header is not supported yet; use limit and offset"));
    }
    let query = query::parse_read_query(req.query().unwrap_or(""))?;

    let statement = sql::read_statement(SCHEMA, &relation, &query, head);
    let batch = Batch::new()
        .search_path(SEARCH_PATH)
        .role(identity.role.as_str())
        .jwt_claims(identity.claims_json.as_str())
        .method(method)
        .path(pgrst_path)
        .headers(headers_json(req))
        .setting("request.cookies", cookies_json(req))
        .statement(statement)
        .read_only(true);
    let results = state.pool.execute(batch).await.map_err(|e| ApiError::from_pg(e, identity.authenticated))?;

    let row = results.first().and_then(|r| r.rows.first()).ok_or(ApiError::Internal("no result row"))?;
    let page_total: u64 =
        row.get_str(0).and_then(|n| n.parse().ok()).ok_or(ApiError::Internal("page_total is not a number"))?;
    let body = if head { Bytes::new() } else { row.get(1).cloned().ok_or(ApiError::Internal("body is NULL"))? };
    let offset = query.offset.map_or(0, |o| o.unsigned_abs());
    let mut response = Response::with_body(200, body)
        .header("content-type", "application/json; charset=utf-8")
        .header("content-range", content_range(offset, page_total));
    if let Some(schema) = profile {
        response.set_header("content-profile", schema);
    }
    Ok(response)
}

/// `/rest/v1/<name>` → (`name` decoded, the path PostgREST would see: `/<name>` as sent).
fn relation_of(path: &str) -> Result<(String, String), ApiError> {
    let rest = path.strip_prefix(PREFIX).unwrap_or("");
    match rest {
        "" | "/" => return Err(ApiError::NotImplemented("the OpenAPI root endpoint is not implemented yet")),
        _ if rest.starts_with("/rpc/") => {
            return Err(ApiError::NotImplemented("RPC (/rpc/<function>) is not implemented yet"))
        }
        _ => {}
    }
    let encoded = rest.strip_prefix('/').ok_or(ApiError::InvalidPath)?;
    if encoded.is_empty() || encoded.contains('/') {
        return Err(ApiError::InvalidPath);
    }
    let name = query::percent_decode(encoded, false).map_err(|_| ApiError::InvalidPath)?;
    // NUL cannot be carried in SQL text; PostgreSQL names are never empty.
    if name.is_empty() || name.contains('\0') || name.len() > query::MAX_IDENT_BYTES {
        return Err(ApiError::InvalidPath);
    }
    Ok((name, rest.to_owned()))
}

/// `Accept-Profile` must name an exposed schema; returns it for `Content-Profile`.
fn accept_profile(req: &Request) -> Result<Option<&'static str>, ApiError> {
    match req.header("accept-profile") {
        None => Ok(None),
        Some(value) if value == SCHEMA.as_bytes() => Ok(Some(SCHEMA)),
        Some(value) => Err(ApiError::InvalidSchema(String::from_utf8_lossy(value).into_owned())),
    }
}

/// This slice produces JSON arrays only; any other requested representation (singular objects,
/// CSV, plans, …) is refused with PostgREST's 406 rather than answered in the wrong shape.
fn check_accept(req: &Request) -> Result<(), ApiError> {
    let Some(accept) = req.header("accept") else { return Ok(()) };
    let accept = String::from_utf8_lossy(accept);
    let acceptable = accept.split(',').any(|range| {
        let media = range.split(';').next().unwrap_or("").trim();
        media.is_empty()
            || media.eq_ignore_ascii_case("*/*")
            || media.eq_ignore_ascii_case("application/*")
            || media.eq_ignore_ascii_case("application/json")
    });
    if acceptable {
        Ok(())
    } else {
        Err(ApiError::MediaType(accept.into_owned()))
    }
}

/// `request.headers`: every request header, names lower-cased (a repeated name keeps the last
/// value, as PostgREST's map does). Bounded by the HTTP layer's header limits.
fn headers_json(req: &Request) -> String {
    let mut map = Map::new();
    for (name, value) in req.headers().iter() {
        map.insert(name.to_ascii_lowercase(), Value::String(String::from_utf8_lossy(value).into_owned()));
    }
    Value::Object(map).to_string()
}

/// `request.cookies`: the `Cookie` header's `name=value` pairs as a JSON object.
fn cookies_json(req: &Request) -> String {
    let mut map = Map::new();
    for header in req.headers().get_all("cookie") {
        let header = String::from_utf8_lossy(header);
        for pair in header.split(';').take(MAX_COOKIES) {
            if let Some((name, value)) = pair.split_once('=') {
                if map.len() < MAX_COOKIES {
                    map.insert(name.trim().to_owned(), Value::String(value.trim().to_owned()));
                }
            }
        }
    }
    Value::Object(map).to_string()
}

/// `Content-Range` of a read without a count: `first-last/*`, or `*/*` for no rows.
fn content_range(offset: u64, rows: u64) -> String {
    if rows == 0 {
        "*/*".to_owned()
    } else {
        format!("{offset}-{}/*", offset.saturating_add(rows - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(relation_of("/rest/v1/todos").unwrap(), ("todos".into(), "/todos".into()));
        assert_eq!(
            relation_of("/rest/v1/Order%20Items").unwrap(),
            ("Order Items".into(), "/Order%20Items".into())
        );
        assert!(matches!(relation_of("/rest/v1/a/b"), Err(ApiError::InvalidPath)));
        assert!(matches!(relation_of("/rest/v1/a%00"), Err(ApiError::InvalidPath)));
        assert!(matches!(relation_of("/rest/v1/"), Err(ApiError::NotImplemented(_))));
        assert!(matches!(relation_of("/rest/v1/rpc/f"), Err(ApiError::NotImplemented(_))));
    }

    #[test]
    fn ranges() {
        assert_eq!(content_range(0, 0), "*/*");
        assert_eq!(content_range(0, 3), "0-2/*");
        assert_eq!(content_range(10, 1), "10-10/*");
    }
}
