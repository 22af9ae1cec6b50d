//! What one `/rest/v1` request carries besides its query string, read the same way by reads,
//! writes, calls and the OpenAPI description: the schema it addresses ([`Profile`]), the batch it
//! runs in ([`RequestBatch`]: the request settings PostgREST sets before the statement), whether
//! plans may be asked for, and where its body is checked ([`check_body`]).
//!
//! Invariants:
//! - one request = one batch = one round trip: the request settings in PostgREST's order
//!   (`search_path`, `role`, the role's own settings, `request.jwt.claims`, `request.method`,
//!   `request.path`, `request.headers`, `request.cookies`, `timezone`), the `db_pre_request`
//!   function when configured, then the caller's statement(s), in one transaction;
//! - the schema is always one of `db_schemas`, never a name the request made up, and reaches the
//!   settings only as a quoted identifier;
//! - `request.headers` and `request.cookies` are exactly the JSON PostgREST builds (bounded by the
//!   HTTP layer's header limits and [`MAX_COOKIES`]);
//! - a large body is checked off the shard, and a full blocking pool answers 503 rather than
//!   stall the shard.

use bytes::Bytes;
use madbase_core::identity::Identity;
use madbase_http::{Request, Response};
use madbase_pg::{Batch, PgError, StatementResult};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::prefer::Prefer;
use super::settings::{self, Config};
use super::sql;
use crate::schema::SchemaCache;
use crate::RestService;

/// At most this many cookies are copied into `request.cookies`.
const MAX_COOKIES: usize = 64;

/// A request body at least this large is converted and checked on the blocking pool: scanning
/// 50 MB of JSON takes the shard about a quarter of a second, during which its other requests
/// (and `/health`) would wait.
const OFF_SHARD_BODY_BYTES: usize = 256 * 1024;

/// Runs `check` (conversion and shape check of a body of `len` bytes) inline when the body is
/// small, else on the shard's blocking pool; a full pool answers 503 rather than stall the shard.
pub(super) async fn check_body<T, F>(state: &RestService, len: usize, check: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    if len < OFF_SHARD_BODY_BYTES {
        return check();
    }
    let job = state.ctx.blocking.spawn(check).map_err(|_| ApiError::BodyCheckBusy)?;
    job.await.map_err(|_| ApiError::Internal("the body check did not finish"))?
}

/// `db-plan-enabled`: by configuration, or by PostgREST's in-database setting
/// (`alter role … set pgrst.db_plan_enabled = 'true'`).
pub(super) fn plan_enabled(state: &RestService, schema: &SchemaCache) -> bool {
    state.config.rest.plan_enabled || schema.setting_enabled("db_plan_enabled")
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
pub(super) fn profile<'a>(req: &Request, config: &'a Config) -> Result<Profile<'a>, ApiError> {
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
pub(super) fn request_batch(
    state: &RestService,
    schema: &SchemaCache,
    req: &Request,
    identity: &Identity,
    profile: Profile<'_>,
    pgrst_path: &str,
    prefer: &Prefer,
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
pub(super) fn search_path(schema: &str, extra: &[String]) -> String {
    let mut path = sql::quote_ident(schema);
    for name in extra {
        path.push_str(", ");
        path.push_str(&sql::quote_ident(name));
    }
    path
}

/// `SELECT "schema"."function"()` for `db_pre_request` (validated when the configuration loaded).
pub(super) fn pre_request_call(config: &Config) -> Option<String> {
    let (schema, name) = settings::parse_qualified_name(config.rest.pre_request.as_deref()?).ok()?;
    let qualified = match schema {
        Some(schema) => format!("{}.{}", sql::quote_ident(&schema), sql::quote_ident(&name)),
        None => sql::quote_ident(&name),
    };
    Some(format!("SELECT {qualified}()"))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
