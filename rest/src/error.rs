//! Every way a `/rest/v1` request can fail, and how each becomes PostgREST's error response.
//!
//! Owns: [`ApiError`], the SQLSTATE → HTTP status table (reference/rest.md §11.2) and the error
//! body. Invariants: every error body has exactly the four keys `code`, `details`, `hint`,
//! `message` (in that order, `null` when absent) and `Content-Type: application/json;
//! charset=utf-8`; every error response carries `Proxy-Status: PostgREST; error=<code>`; every 401
//! carries `WWW-Authenticate`; every 503 caused by the pool carries `Retry-After`.

use std::fmt::Write as _;
use std::time::Duration;

use madbase_http::Response;
use madbase_pg::{DbError, PgError};
use serde_json::{json, Value};

use super::plan::PlanError;
use super::query::QueryError;
use madbase_core::jwt::JwtError;

/// A failed `/rest/v1` request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The bearer token (or `apikey`) did not verify: 401 PGRST301/PGRST303.
    #[error("{0}")]
    Jwt(#[from] JwtError),
    /// The `role` claim names a role that can never be switched to (`none`, empty): answered as
    /// PostgreSQL would answer an unknown role (22023 → 401), without asking it.
    #[error("role \"{0}\" does not exist")]
    ForbiddenRole(String),
    /// The query string: 400 PGRST100 (or 416 PGRST103 for a negative limit, PGRST108 and
    /// PGRST120 for filters on embeds).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// An embed, related order or aggregate the schema cache cannot resolve (PGRST108/118/123/200/201).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// `Accept-Profile`/`Content-Profile` names a schema that is not exposed: 406 PGRST106;
    /// `exposed` is `db_schemas` joined by `", "` (PostgREST's hint).
    #[error("Invalid schema: {schema}")]
    InvalidSchema { schema: String, exposed: String },
    /// The `response.headers` GUC is not a JSON array of single-key objects with string
    /// values: 500 PGRST111.
    #[error("response.headers guc must be a JSON array composed of objects with a single key and a string value")]
    GucHeaders,
    /// The `response.status` GUC is not a final status code: 500 PGRST112. So is an
    /// informational status (1xx) from the GUC, `RAISE SQLSTATE 'PT1xx'` or a `PGRST` raise's
    /// DETAIL — a departure from PostgREST, which sends it: a 1xx is never a final response in
    /// HTTP/1.1, and `101` would tell a proxy the connection had switched protocols.
    #[error("response.status guc must be a valid status code")]
    GucStatus,
    /// `Accept` asks for no media type this response can have: 406 PGRST107 (the ranges listed
    /// as PostgREST renders them).
    #[error("None of these media types are available: {0}")]
    MediaType(String),
    /// A path that is not `/<relation>`: 404 PGRST125.
    #[error("Invalid path specified in request URL")]
    InvalidPath,
    /// PostgREST surface that is not implemented yet: 400 PGRST127.
    #[error("Feature not implemented")]
    NotImplemented(&'static str),
    /// A method PostgREST does not serve at all: 405 PGRST117.
    #[error("Unsupported HTTP method: {0}")]
    Method(String),
    /// The relation is not in the request's schema cache snapshot: 404 PGRST205, with the
    /// closest known name (qualified) as PostgREST's hint.
    #[error("Could not find the table '{schema}.{name}' in the schema cache")]
    TableNotFound { schema: String, name: String, closest: Option<String> },
    /// PostgreSQL answered with an error; `authenticated` = the request carried a verified JWT.
    #[error("{error}")]
    Db { error: Box<DbError>, authenticated: bool },
    /// The pool could not run the request.
    #[error(transparent)]
    Pool(PgError),
    /// PostgreSQL answered something the statement cannot produce (a bug, not the client's fault).
    #[error("unexpected result from PostgreSQL: {0}")]
    Internal(&'static str),
    /// The shard's blocking pool, which checks large bodies off the shard, has no room: 503 with
    /// `Retry-After`.
    #[error("The server is busy checking other large request bodies; retry later.")]
    BodyCheckBusy,
    /// A write's body could not be used (invalid JSON, wrong `Content-Type`, mismatched keys):
    /// 400 PGRST102 with PostgREST's message.
    #[error("{0}")]
    InvalidBody(String),
    /// Reading the request body failed (too large → 413, too slow → 408, else 400).
    #[error("{0}")]
    Body(madbase_http::BodyError),
    /// `Prefer: handling=strict` with preferences that are not understood: 400 PGRST122.
    #[error("Invalid preferences given with handling=strict")]
    InvalidPreferences(Vec<String>),
    /// `Accept: application/vnd.pgrst.object+json` and not exactly one row: 406 PGRST116.
    #[error("Cannot coerce the result to a single JSON object")]
    NotSingular(u64),
    /// A `Range` header whose first row lies after its last: 416 PGRST103.
    #[error("Requested range not satisfiable")]
    RangeBounds,
    /// A counted read whose offset lies beyond the total: 416 PGRST103.
    #[error("Requested range not satisfiable")]
    OffsetBeyondTotal { offset: u64, total: u64 },
    /// `Prefer: handling=strict, max-affected=N` and the write touched more rows: 400 PGRST124.
    #[error("Query result exceeds max-affected preference constraint")]
    MaxAffected(u64),
    /// A method other than GET, HEAD, POST or OPTIONS on `/rpc/<fn>`: 405 PGRST101.
    #[error("Cannot use the {0} method on RPC")]
    RpcMethod(String),
    /// No overload of the function takes the given argument names: 404 PGRST202.
    /// `args` are the names given, sorted; `searched` says which single unnamed parameter was
    /// searched for besides them; `hint` is the fuzzy suggestion.
    #[error("Could not find the function {qualified}{} in the schema cache", match searched {
        SingleParam::Raw(_) => String::new(),
        _ => function_params(args),
    })]
    FunctionNotFound { qualified: String, args: Vec<String>, searched: SingleParam, hint: Option<String> },
    /// More than one overload matches the argument names: 300 PGRST203. Each candidate is
    /// rendered `schema.fn(a => integer, b => text)`.
    #[error("Could not choose the best candidate function between: {}", .0.join(", "))]
    AmbiguousFunction(Vec<String>),
    /// `Prefer: handling=strict, max-affected=N` on a function that does not return a set:
    /// 400 PGRST128.
    #[error("Function must return SETOF or TABLE when max-affected preference is used with handling=strict")]
    MaxAffectedNotSet,
    /// A payload key or `columns=` name that is not a column of the relation in the request's
    /// schema cache snapshot: 400 PGRST204 (`relation` is the bare relation name, as PostgREST).
    #[error("Could not find the '{column}' column of '{relation}' in the schema cache")]
    ColumnNotFound { column: String, relation: String },
    /// `PUT` whose filters are not exactly `eq` on every primary-key column: 405 PGRST105.
    #[error("Filters must include all and only primary key columns with 'eq' operators")]
    PutFilters,
    /// `PUT` with `limit`/`offset`: 400 PGRST114.
    #[error("limit/offset querystring parameters are not allowed for PUT")]
    PutLimit,
    /// `PUT` whose body does not repeat the filters' primary-key values: 400 PGRST115.
    #[error("Payload values do not match URL in primary key column(s)")]
    PutMismatch,
}

/// The single unnamed parameter a call was also matched against (PGRST202's wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingleParam {
    /// GET: named arguments only.
    None,
    /// A POST with a JSON body: `or with a single unnamed json/jsonb parameter`.
    Json,
    /// A POST with a `text/plain`, `text/xml` or `application/octet-stream` body: only a single
    /// unnamed parameter of this type (`text`, `xml`, `bytea`) was searched for.
    Raw(&'static str),
}

/// PGRST202's message part after the function name: `(a, b)`, or ` without parameters` when no
/// argument names were given (PostgREST's `fmtPrms`).
fn function_params(args: &[String]) -> String {
    if args.is_empty() {
        " without parameters".to_owned()
    } else {
        format!("({})", args.join(", "))
    }
}

impl From<madbase_core::identity::AuthError> for ApiError {
    fn from(error: madbase_core::identity::AuthError) -> Self {
        match error {
            madbase_core::identity::AuthError::Jwt(error) => ApiError::Jwt(error),
            madbase_core::identity::AuthError::ForbiddenRole(role) => ApiError::ForbiddenRole(role),
        }
    }
}

impl ApiError {
    pub fn from_pg(error: PgError, authenticated: bool) -> ApiError {
        match error {
            PgError::Db(error) => ApiError::Db { error, authenticated },
            other => ApiError::Pool(other),
        }
    }

    /// The HTTP response PostgREST gives for this error. Each arm is one variant (the match stays
    /// exhaustive); a family with more to build than one line has its own function below.
    pub fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            ApiError::Jwt(error) => jwt_response(&error, &message),
            ApiError::ForbiddenRole(_) => body(401, "22023", &message, None, None).header("www-authenticate", "Bearer"),
            ApiError::Query(error) => query_response(error, &message),
            ApiError::InvalidSchema { exposed, .. } => body(
                406,
                "PGRST106",
                &message,
                None,
                Some(format!("Only the following schemas are exposed: {exposed}")),
            ),
            ApiError::GucHeaders => body(500, "PGRST111", &message, None, None),
            ApiError::GucStatus => body(500, "PGRST112", &message, None, None),
            ApiError::Plan(error) => {
                let (status, code, details, hint) = error.parts();
                json_body(status, code, &message, details, hint)
            }
            ApiError::MediaType(_) => body(406, "PGRST107", &message, None, None),
            ApiError::InvalidPath => body(404, "PGRST125", &message, None, None),
            ApiError::NotImplemented(what) => body(400, "PGRST127", &message, Some(what.to_owned()), None),
            ApiError::Method(_) => body(405, "PGRST117", &message, None, None),
            ApiError::TableNotFound { closest, .. } => body(
                404,
                "PGRST205",
                &message,
                None,
                closest.map(|name| format!("Perhaps you meant the table '{name}'")),
            ),
            ApiError::Db { error, authenticated } => db_response(&error, authenticated),
            ApiError::Pool(error) => pool_error(error),
            ApiError::InvalidBody(_) => body(400, "PGRST102", &message, None, None),
            ApiError::Body(error) => body_error_response(&error, &message),
            ApiError::InvalidPreferences(names) => {
                body(400, "PGRST122", &message, Some(format!("Invalid preferences: {}", names.join(", "))), None)
            }
            ApiError::NotSingular(rows) => {
                body(406, "PGRST116", &message, Some(format!("The result contains {rows} rows")), None)
            }
            ApiError::RangeBounds => body(416, "PGRST103", &message, Some(RANGE_BOUNDS_DETAILS.into()), None),
            ApiError::OffsetBeyondTotal { offset, total } => body(
                416,
                "PGRST103",
                &message,
                Some(format!("An offset of {offset} was requested, but there are only {total} rows.")),
                None,
            ),
            ApiError::MaxAffected(rows) => {
                body(400, "PGRST124", &message, Some(format!("The query affects {rows} rows")), None)
            }
            ApiError::RpcMethod(_) => body(405, "PGRST101", &message, None, None),
            ApiError::FunctionNotFound { qualified, args, searched, hint } => {
                body(404, "PGRST202", &message, Some(function_not_found_details(&qualified, &args, searched)), hint)
            }
            ApiError::AmbiguousFunction(_) => body(300, "PGRST203", &message, None, Some(AMBIGUOUS_HINT.to_owned())),
            ApiError::MaxAffectedNotSet => body(400, "PGRST128", &message, None, None),
            ApiError::ColumnNotFound { .. } => body(400, "PGRST204", &message, None, None),
            ApiError::PutFilters => body(405, "PGRST105", &message, None, None),
            ApiError::PutLimit => body(400, "PGRST114", &message, None, None),
            ApiError::PutMismatch => body(400, "PGRST115", &message, None, None),
            ApiError::Internal(what) => {
                tracing::error!(what, "rest: unexpected result from PostgreSQL");
                body(500, "PGRSTX00", "Internal server error", Some(message), None)
            }
            ApiError::BodyCheckBusy => body(503, "PGRSTX00", &message, None, None).header("retry-after", "1"),
        }
    }
}

/// PGRST103's details for a `Range` header whose bounds are reversed.
const RANGE_BOUNDS_DETAILS: &str =
    "The lower boundary must be lower than or equal to the upper boundary in the Range header.";
/// PGRST203's hint.
const AMBIGUOUS_HINT: &str =
    "Try renaming the parameters or the function itself in the database so function overloading can be resolved";

/// 401 with the JWT error's code and a `WWW-Authenticate` challenge that repeats the message.
fn jwt_response(error: &JwtError, message: &str) -> Response {
    let challenge = format!(
        "Bearer error=\"invalid_token\", error_description=\"{}\"",
        message.replace('\\', "\\\\").replace('"', "\\\"")
    );
    body(401, error.pgrst_code(), message, None, None).header("www-authenticate", challenge)
}

/// A query-string error: 416 PGRST103 for a negative limit, PGRST108 (with its hint) and
/// PGRST120 for filters on embeds, else 400 PGRST100.
fn query_response(error: QueryError, message: &str) -> Response {
    let details = error.details();
    match error {
        QueryError::NegativeLimit => body(416, "PGRST103", message, details, None),
        QueryError::NotEmbedded(name) => {
            body(400, "PGRST108", message, None, Some(super::query::not_embedded_hint(&name)))
        }
        QueryError::BadEmbedOperator(_) => body(400, "PGRST120", message, details, None),
        _ => body(400, "PGRST100", message, details, None),
    }
}

/// PostgreSQL's error: a `PGRST` raise as the function asked, an informational `PT1xx` as
/// PGRST112, anything else by the SQLSTATE table (logged when it is the server's fault).
fn db_response(error: &DbError, authenticated: bool) -> Response {
    if error.code == "PGRST" {
        return raised_response(error);
    }
    if is_informational_pt(&error.code) {
        return ApiError::GucStatus.into_response();
    }
    let status = status_for_sqlstate(&error.code, &error.message, authenticated);
    if status >= 500 {
        tracing::warn!(code = %error.code, message = %error.message, "rest: database error");
    }
    let response = body(status, &error.code, &error.message, error.detail.clone(), error.hint.clone());
    if status == 401 {
        response.header("www-authenticate", "Bearer")
    } else {
        response
    }
}

/// Reading the body failed: its status (413, 408, 400) as PGRST102, with `Retry-After` when the
/// client may retry.
fn body_error_response(error: &madbase_http::BodyError, message: &str) -> Response {
    let response = body(error.status(), "PGRST102", message, None, None);
    match error.retry_after_secs() {
        Some(secs) => response.header("retry-after", secs.to_string()),
        None => response,
    }
}

/// PGRST202's details: what was searched for (PostgREST's wording).
fn function_not_found_details(qualified: &str, args: &[String], searched: SingleParam) -> String {
    let mut details = format!("Searched for the function {qualified}");
    if let SingleParam::Raw(type_name) = searched {
        let _ = write!(details, " with a single unnamed {type_name} parameter");
    } else {
        match args.len() {
            0 => details.push_str(" without parameters"),
            1 => details.push_str(" with parameter "),
            _ => details.push_str(" with parameters "),
        }
        details.push_str(&args.join(", "));
    }
    if searched == SingleParam::Json {
        details.push_str(" or with a single unnamed json/jsonb parameter");
    }
    details.push_str(", but no matches were found in the schema cache.");
    details
}

/// `RAISE SQLSTATE 'PGRST' USING message = '<json>', detail = '<json>'` (reference/rest.md §2.1):
/// MESSAGE `{"code","message","details"?,"hint"?}` (strings) is the body, DETAIL
/// `{"status","status_text"?,"headers"}` the status and extra headers. Either unparseable (or a
/// status outside 100–599) → 500 PGRST121 saying which. `status_text` is not sent: the status line
/// carries the standard reason phrase.
fn raised_response(error: &DbError) -> Response {
    #[derive(serde::Deserialize)]
    struct Message {
        code: String,
        message: String,
        details: Option<String>,
        hint: Option<String>,
    }
    /// (`status_text` is not read: the status line carries the standard reason phrase.)
    #[derive(serde::Deserialize)]
    struct Detail {
        status: u16,
        headers: std::collections::BTreeMap<String, String>,
    }
    const MESSAGE_HINT: &str =
        "MESSAGE must be a JSON object with obligatory keys: 'code', 'message' and optional keys: 'details', 'hint'.";
    const DETAIL_HINT: &str =
        "DETAIL must be a JSON object with obligatory keys: 'status', 'headers' and optional key: 'status_text'.";
    let unparseable = |details: String, hint: &str| {
        body(
            500,
            "PGRST121",
            "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error",
            Some(details),
            Some(hint.to_owned()),
        )
    };
    let Ok(message) = serde_json::from_str::<Message>(&error.message) else {
        return unparseable(format!("Invalid JSON value for MESSAGE: '{}'", error.message), MESSAGE_HINT);
    };
    let Some(detail_text) = &error.detail else {
        return unparseable("DETAIL is missing in the RAISE statement".to_owned(), DETAIL_HINT);
    };
    let detail = match serde_json::from_str::<Detail>(detail_text) {
        Ok(detail) if (100..=199).contains(&detail.status) => return ApiError::GucStatus.into_response(),
        Ok(detail) if FINAL_STATUS.contains(&detail.status) => detail,
        _ => return unparseable(format!("Invalid JSON value for DETAIL: '{detail_text}'"), DETAIL_HINT),
    };
    let mut response = body(detail.status, &message.code, &message.message, message.details, message.hint);
    for (name, value) in detail.headers {
        response.set_header(name, value);
    }
    response
}

/// Pool failures: unavailable or saturated → 503 with `Retry-After`; timed out → 504.
fn pool_error(error: PgError) -> Response {
    let retry = |response: Response, after: Duration| {
        // Whole seconds, at least 1: `Retry-After: 0` would invite a tight retry loop.
        let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        response.header("retry-after", seconds.max(1).to_string())
    };
    let details = Some(error.to_string());
    match error {
        PgError::Unavailable { retry_after } => {
            retry(body(503, "PGRST000", "Database connection error.", details, None), retry_after)
        }
        PgError::Busy => retry(
            body(503, "PGRST003", "Too many requests are waiting for a database connection.", details, None),
            Duration::from_secs(1),
        ),
        PgError::Timeout(_) => body(504, "PGRST003", "Timed out waiting for the database.", details, None),
        PgError::ConnectionLost | PgError::Closed | PgError::Io(_) => retry(
            body(503, "PGRST001", "Database client error. Retrying the connection.", details, None),
            Duration::from_secs(1),
        ),
        // MadBase's own bound (`[pg] max_result_bytes`); PostgREST has none and would hold it all.
        PgError::ResultTooLarge { .. } => body(
            500,
            "PGRSTX00",
            "The response is larger than this server allows.",
            details,
            Some("Select fewer columns or rows: filter, or page with limit and offset.".to_owned()),
        ),
        PgError::Db(_) | PgError::Protocol(_) | PgError::Auth(_) | PgError::Config(_) => {
            tracing::error!(error = %details.as_deref().unwrap_or(""), "rest: database client failure");
            body(500, "PGRSTX00", "Database client error.", details, None)
        }
    }
}

/// PostgREST's error body and headers.
pub fn body(status: u16, code: &str, message: &str, details: Option<String>, hint: Option<String>) -> Response {
    let text = |s: Option<String>| s.map_or(Value::Null, Value::String);
    json_body(status, code, message, text(details), text(hint))
}

/// [`body`] with any JSON as `details` and `hint` (PGRST201's details are an array).
fn json_body(status: u16, code: &str, message: &str, details: Value, hint: Value) -> Response {
    // serde_json's map is ordered by key: code, details, hint, message — PostgREST's order.
    let text = json!({ "code": code, "details": details, "hint": hint, "message": message }).to_string();
    Response::with_body(status, text)
        .header("content-type", "application/json; charset=utf-8")
        .header("proxy-status", format!("PostgREST; error={code}"))
}

/// The statuses a response may end with (a 1xx is informational, never final).
pub(super) const FINAL_STATUS: std::ops::RangeInclusive<u16> = 200..=599;

/// `PT100`…`PT199`: a raised status that would be informational (refused as [`ApiError::GucStatus`]).
fn is_informational_pt(code: &str) -> bool {
    code.strip_prefix("PT").and_then(|digits| digits.parse::<u16>().ok()).is_some_and(|s| (100..=199).contains(&s))
}

/// SQLSTATE → HTTP status, as PostgREST maps it (reference/rest.md §11.2).
pub fn status_for_sqlstate(code: &str, message: &str, authenticated: bool) -> u16 {
    let class = code.get(..2).unwrap_or("");
    match code {
        "21000" if message.ends_with("requires a WHERE clause") => return 400,
        "21000" => return 500,
        "22023" if message.starts_with("role \"") && message.ends_with("\" does not exist") => return 401,
        "23503" | "23505" => return 409,
        "25006" => return 405,
        "53400" => return 500,
        "57P01" => return 503,
        "P0001" => return 400,
        "42883" if message.starts_with("function xmlagg(") => return 406,
        "42883" | "42P01" => return 404,
        "42P17" => return 500,
        "42501" => return if authenticated { 403 } else { 401 },
        _ => {}
    }
    if let Some(digits) = code.strip_prefix("PT") {
        if let Ok(status) = digits.parse::<u16>() {
            if FINAL_STATUS.contains(&status) {
                return status;
            }
        }
    }
    match class {
        "08" | "53" => 503,
        "0L" | "0P" | "28" => 403,
        "09" | "25" | "2D" | "38" | "39" | "3B" | "40" | "54" | "55" | "57" | "58" | "F0" | "HV" | "P0" | "XX" => 500,
        // `PGRST` raises carry their status in DETAIL ([`raised_response`]).
        "PG" => 500,
        _ => 400,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_table() {
        for (code, message, authed, status) in [
            ("42P01", "relation \"x\" does not exist", false, 404),
            ("42501", "permission denied for table t", false, 401),
            ("42501", "permission denied for table t", true, 403),
            ("42703", "column t.x does not exist", false, 400),
            ("22P02", "invalid input syntax for type integer: \"a\"", false, 400),
            ("22023", "role \"nobody\" does not exist", true, 401),
            ("22023", "invalid value", true, 400),
            ("23505", "", false, 409),
            ("25006", "", false, 405),
            ("08006", "", false, 503),
            ("53300", "", false, 503),
            ("53400", "", false, 500),
            ("57P01", "", false, 503),
            ("57014", "canceling statement due to statement timeout", false, 500),
            ("PT402", "", false, 402),
            ("P0001", "", false, 400),
            ("P0002", "", false, 500),
            ("42883", "function xmlagg(x) does not exist", false, 406),
            ("42883", "operator does not exist", false, 404),
            ("XX000", "", false, 500),
            ("0P000", "", false, 403),
        ] {
            assert_eq!(status_for_sqlstate(code, message, authed), status, "{code} {message}");
        }
    }

    #[test]
    fn informational_statuses_are_never_final() {
        let status_of = |code: &str, detail: Option<&str>| {
            let error = DbError {
                code: code.into(),
                message: r#"{"code":"c","message":"m"}"#.into(),
                detail: detail.map(str::to_owned),
                ..Default::default()
            };
            let response = ApiError::Db { error: Box::new(error), authenticated: true }.into_response();
            let madbase_http::ResponseBody::Full(bytes) = response.body() else { panic!() };
            (response.status(), serde_json::from_slice::<serde_json::Value>(bytes).unwrap()["code"].clone())
        };
        assert_eq!(status_of("PT101", None), (500, "PGRST112".into()));
        assert_eq!(status_of("PT199", None), (500, "PGRST112".into()));
        assert_eq!(status_of("PT200", None), (200, "PT200".into()));
        assert_eq!(status_of("PGRST", Some(r#"{"status":101,"headers":{}}"#)), (500, "PGRST112".into()));
        assert_eq!(status_of("PGRST", Some(r#"{"status":402,"headers":{}}"#)), (402, "c".into()));
    }

    #[test]
    fn body_shape() {
        let r = body(404, "42P01", "relation \"x\" does not exist", None, Some("h".into()));
        let madbase_http::ResponseBody::Full(bytes) = r.body() else { panic!() };
        assert_eq!(
            std::str::from_utf8(bytes).unwrap(),
            r#"{"code":"42P01","details":null,"hint":"h","message":"relation \"x\" does not exist"}"#
        );
        assert_eq!(r.header_value("content-type"), Some(&b"application/json; charset=utf-8"[..]));
    }

    fn raised(message: &str, detail: Option<&str>) -> (u16, String, Response) {
        let error = DbError {
            code: "PGRST".into(),
            message: message.into(),
            detail: detail.map(str::to_owned),
            ..Default::default()
        };
        let response = ApiError::Db { error: Box::new(error), authenticated: false }.into_response();
        let madbase_http::ResponseBody::Full(bytes) = response.body() else { panic!("not a full body") };
        (response.status(), String::from_utf8(bytes.to_vec()).unwrap(), response)
    }

    #[test]
    fn raise_sqlstate_pgrst() {
        let (status, text, response) = raised(
            r#"{"code":"123","message":"Payment Required","details":"Quota exceeded","hint":"Upgrade your plan"}"#,
            Some(r#"{"status":402,"status_text":"Payment Required","headers":{"X-Powered-By":"Nerd Rage"}}"#),
        );
        assert_eq!(status, 402);
        assert_eq!(
            text,
            r#"{"code":"123","details":"Quota exceeded","hint":"Upgrade your plan","message":"Payment Required"}"#
        );
        assert_eq!(response.header_value("x-powered-by"), Some(&b"Nerd Rage"[..]));
        assert_eq!(response.header_value("proxy-status"), Some(&b"PostgREST; error=123"[..]));
        let (status, text, _) = raised(r#"{"code":"1","message":"m"}"#, Some(r#"{"status":418,"headers":{}}"#));
        assert_eq!((status, text.as_str()), (418, r#"{"code":"1","details":null,"hint":null,"message":"m"}"#));

        let (status, text, _) = raised("not json", Some("{}"));
        assert_eq!(status, 500);
        assert_eq!(
            text,
            r#"{"code":"PGRST121","details":"Invalid JSON value for MESSAGE: 'not json'","hint":"MESSAGE must be a JSON object with obligatory keys: 'code', 'message' and optional keys: 'details', 'hint'.","message":"Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error"}"#
        );
        let (_, text, _) = raised(r#"{"code":"1","message":"m"}"#, None);
        assert!(text.contains(r#""details":"DETAIL is missing in the RAISE statement""#), "{text}");
        for bad in [r#"{"status":402}"#, r#"{"status":"402","headers":{}}"#, r#"{"status":99,"headers":{}}"#] {
            let (status, text, _) = raised(r#"{"code":"1","message":"m"}"#, Some(bad));
            assert_eq!(status, 500);
            assert!(text.contains("Invalid JSON value for DETAIL"), "{text}");
        }
    }

    #[test]
    fn jwt_errors_carry_the_challenge() {
        let r = ApiError::Jwt(JwtError::Expired).into_response();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.header_value("www-authenticate"),
            Some(&br#"Bearer error="invalid_token", error_description="JWT expired""#[..])
        );
    }

    #[test]
    fn pool_errors() {
        let r = ApiError::Pool(PgError::Unavailable { retry_after: Duration::from_millis(1500) }).into_response();
        assert_eq!((r.status(), r.header_value("retry-after")), (503, Some(&b"2"[..])));
        let r = ApiError::Pool(PgError::Busy).into_response();
        assert_eq!((r.status(), r.header_value("retry-after")), (503, Some(&b"1"[..])));
        assert_eq!(ApiError::Pool(PgError::Timeout(Duration::from_secs(5))).into_response().status(), 504);
        let r = ApiError::Pool(PgError::ResultTooLarge { limit: 10 }).into_response();
        assert_eq!(r.status(), 500);
        // The shard's body budget in use is a 503 to come back to, like a full queue.
        let r = ApiError::Body(madbase_http::BodyError::Busy).into_response();
        assert_eq!((r.status(), r.header_value("retry-after")), (503, Some(&b"1"[..])));
        let r = ApiError::BodyCheckBusy.into_response();
        assert_eq!((r.status(), r.header_value("retry-after")), (503, Some(&b"1"[..])));
    }
}
