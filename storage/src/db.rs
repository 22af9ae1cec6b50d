//! Storage's metadata statements: each request's SQL runs in one batch on the shard's Storage
//! lane as the caller's role with its claims (so the project's row level security on `storage.*`
//! decides as on Supabase), and the small JSON bodies of the metadata routes.
//!
//! Invariants: a batch runs as exactly one role; a JSON body is read up to [`JSON_BODY_LIMIT`].

use bytes::Bytes;
use madbase_http::{Body, Request, Response};
use madbase_pg::{Batch, Statement, StatementResult, TxEnd};
use serde_json::{Map, Value};

use crate::caller::Caller;
use crate::error::StorageError;
use crate::Inner;

/// A timestamp as JavaScript's `Date#toISOString` prints it.
macro_rules! js_time {
    ($col:literal) => {
        concat!("to_char(", $col, " at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
    };
}
pub(crate) use js_time;

/// Largest JSON body a metadata route reads.
pub const JSON_BODY_LIMIT: u64 = 64 * 1024;

/// A text parameter.
pub fn text(value: &str) -> Bytes {
    Bytes::copy_from_slice(value.as_bytes())
}

/// Runs one statement as `caller` and returns its result.
pub async fn run(inner: &Inner, caller: &Caller, statement: Statement) -> Result<StatementResult, StorageError> {
    run_batch(inner, caller_batch(caller), statement).await
}

/// Runs one statement that deletes rows: Supabase's `storage.protect_delete` triggers refuse
/// deletes from `storage.buckets` and `storage.objects` outside the Storage API, which says it is
/// the API with this setting.
pub async fn run_delete(inner: &Inner, caller: &Caller, statement: Statement) -> Result<StatementResult, StorageError> {
    run_batch(inner, caller_batch(caller).setting("storage.allow_delete_query", "true"), statement).await
}

/// A batch as `caller`.
pub fn caller_batch(caller: &Caller) -> Batch {
    Batch::new().role(caller.role.as_str()).jwt_claims(caller.claims_json.as_str())
}

/// Runs `statement` in `batch`, committed.
pub async fn run_batch(inner: &Inner, batch: Batch, statement: Statement) -> Result<StatementResult, StorageError> {
    let batch = batch.statement(statement).end(TxEnd::Commit);
    let mut results = inner.ctx.lanes.get(crate::LANE).execute(batch).await?;
    results.pop().ok_or_else(StorageError::internal)
}

/// The JSON text a statement selected, as the response.
pub fn json_response(result: &StatementResult) -> Response {
    Response::json(200, compact_json(result.scalar().unwrap_or("null")))
}

/// PostgreSQL's JSON text (`{"a" : 1, "b" : {"c": 2}}`) as `JSON.stringify` writes it: no
/// whitespace outside strings, key order kept.
pub fn compact_json(json: &str) -> Bytes {
    let mut out = Vec::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in json.as_bytes() {
        if in_string {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if !b.is_ascii_whitespace() {
            in_string = b == b'"';
            out.push(b);
        }
    }
    debug_assert!(!in_string, "PostgreSQL writes whole JSON values");
    Bytes::from(out)
}

/// `{"message": text}`.
pub fn message(text: &str) -> Response {
    Response::json(200, serde_json::json!({ "message": text }).to_string())
}

/// Reads a JSON object body; an empty body is `{}` where `empty_ok`.
pub async fn json_body(req: &Request, body: Body, empty_ok: bool) -> Result<Map<String, Value>, StorageError> {
    let bytes = body.collect(JSON_BODY_LIMIT).await.map_err(|_| StorageError::entity_too_large())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        let json = req.header_str("content-type").is_some_and(|t| t.starts_with("application/json"));
        return match (empty_ok, json) {
            (true, _) => Ok(Map::new()),
            (false, true) => {
                Err(StorageError::validation("Body cannot be empty when content-type is set to 'application/json'"))
            }
            (false, false) => Err(StorageError::validation("body must be object")),
        };
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(StorageError::validation("body must be object")),
        Err(_) => Err(StorageError::validation("Body is not valid JSON but content-type is set to 'application/json'")),
    }
}

/// `%`, `_` and `\` taken literally in a `like`/`ilike` pattern.
pub fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_compacted_outside_strings() {
        let pg = r#"{"id" : "a b", "m" : {"k": "x : y", "q": "\" , \\"}, "n" : [1, 2]}"#;
        assert_eq!(&compact_json(pg)[..], br#"{"id":"a b","m":{"k":"x : y","q":"\" , \\"},"n":[1,2]}"#);
    }
}
