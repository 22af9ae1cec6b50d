//! Media types of `/rest/v1` responses (reference/rest.md §9): `Accept` negotiation, the SQL
//! expression that aggregates a result into the body for each media type, `EXPLAIN` plans and the
//! exact `Content-Type` strings PostgREST sends.
//!
//! Owns: [`negotiate`] (PostgREST's `MediaType.decodeMediaType` + `Plan.Negotiate`), [`Media`]
//! and its [`Handler`]s, [`Media::body_sql`], [`Plan::wrap`] and [`Media::content_type`].
//!
//! Invariants:
//! - every body is built by PostgreSQL from `_postgrest_t` (the page of rows), never re-encoded
//!   here: JSON by `json_agg` (`json_strip_nulls` for `nulls=stripped`), CSV by the rows'
//!   composite text output, GeoJSON by PostGIS `ST_AsGeoJSON(record)`, plans by `EXPLAIN`;
//! - the body expressions are constants per (handler, row shape), so the statement text — the
//!   prepared-statement cache key — does not depend on request values;
//! - `Accept` is read as PostgREST reads it (wai's `parseHttpAccept`: spaces dropped, `q`
//!   ordering, more specific first); the first producible range wins; none → 406 PGRST107 listing
//!   every range as PostgREST renders it. Plans are producible only with `db_plan_enabled`.

use std::fmt::Write as _;

use madbase_http::Request;

use super::error::ApiError;

/// At most this many media ranges of one `Accept` header are looked at.
const MAX_ACCEPT_RANGES: usize = 32;

/// How the rows of a result become the body (PostgREST's built-in media handlers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// `application/json` (and `*/*`): an array, or the value of a single-row function.
    Json,
    /// `application/vnd.pgrst.array+json;nulls=stripped`.
    ArrayStripped,
    /// `application/vnd.pgrst.object+json[;nulls=stripped]`: exactly one row as an object.
    Object { strip: bool },
    /// `text/csv` (§9.1).
    Csv,
    /// `application/geo+json`: a FeatureCollection built by PostGIS.
    GeoJson,
}

/// `EXPLAIN` output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanFormat {
    Text,
    Json,
}

/// `EXPLAIN` options in PostgREST's fixed order (the order of the `options=` parameter does not
/// matter).
const PLAN_OPTIONS: [(&str, &str); 5] =
    [("analyze", "ANALYZE"), ("verbose", "VERBOSE"), ("settings", "SETTINGS"), ("buffers", "BUFFERS"), ("wal", "WAL")];

/// `application/vnd.pgrst.plan[+text|+json]; for="…"; options=…`: the plan of the statement that
/// would build the `for` media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub format: PlanFormat,
    /// Bit `i` set = `PLAN_OPTIONS[i]` requested.
    options: u8,
    /// The `for` media type as PostgREST renders it (`application/json`, `*/*`, `text/csv`, …).
    target: &'static str,
}

impl Plan {
    /// `EXPLAIN (FORMAT …, options…) <sql>`.
    pub fn wrap(&self, sql: &str) -> String {
        let mut out = String::from(match self.format {
            PlanFormat::Text => "EXPLAIN (FORMAT TEXT",
            PlanFormat::Json => "EXPLAIN (FORMAT JSON",
        });
        for (i, (_, keyword)) in PLAN_OPTIONS.iter().enumerate() {
            if self.options & (1 << i) != 0 {
                let _ = write!(out, ", {keyword}");
            }
        }
        let _ = write!(out, ") {sql}");
        out
    }

    /// The body PostgREST sends: every row of the `EXPLAIN` output followed by `\n`.
    pub fn body(rows: &[madbase_pg::Row]) -> Vec<u8> {
        let mut out = Vec::new();
        for row in rows {
            out.extend_from_slice(row.get(0).map_or(&[][..], |b| b.as_ref()));
            out.push(b'\n');
        }
        out
    }
}

/// The negotiated representation of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub handler: Handler,
    /// `Some`: answer with the plan of the statement instead of running it for its body.
    pub plan: Option<Plan>,
}

/// What the rows of `_postgrest_t` are, for the body expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// A set of records (table reads, writes, `SETOF` composite or `TABLE` functions).
    Records,
    /// A set of scalars in column `pgrst_scalar` (`SETOF integer`).
    Scalars,
    /// One composite value (a function returning one row type): the object, `null` when none.
    Record,
    /// One scalar in `pgrst_scalar` (`returns text`): the JSON value.
    Scalar,
}

impl Media {
    /// `application/json`: what a request without `Accept` gets.
    pub const JSON: Media = Media { handler: Handler::Json, plan: None };

    /// `application/vnd.pgrst.object+json` (with or without `nulls=stripped`): the caller refuses
    /// any row count but one with PGRST116 (not for plans: their answer is the plan).
    pub fn is_singular(&self) -> bool {
        self.plan.is_none() && matches!(self.handler, Handler::Object { .. })
    }

    /// The `Content-Type` PostgREST sends for this media type.
    pub fn content_type(&self) -> String {
        match &self.plan {
            None => format!("{}; charset=utf-8", handler_mime(self.handler)),
            Some(plan) => format!("{}; charset=utf-8", plan_mime(plan.format, plan.options, plan.target)),
        }
    }

    /// Whether [`Media::body_sql`] reads the statement's `pgrst_source` CTE (the CSV header).
    pub fn needs_source(&self) -> bool {
        self.handler == Handler::Csv
    }

    /// The expression (over the aggregated `_postgrest_t` rows) that builds the body; CSV's
    /// header comes from the first row of the statement's `pgrst_source` CTE, as in PostgREST.
    pub fn body_sql(&self, rows: Rows) -> String {
        self.body_sql_from(rows, "pgrst_source")
    }

    /// [`Media::body_sql`] with CSV's header read from `source` (a relation expression).
    pub fn body_sql_from(&self, rows: Rows, source: &str) -> String {
        let element = match rows {
            Rows::Records | Rows::Record => "_postgrest_t",
            Rows::Scalars | Rows::Scalar => "_postgrest_t.pgrst_scalar",
        };
        let json = |strip: bool, single: bool| {
            let agg = format!("pg_catalog.json_agg({element})");
            match (strip, single) {
                (false, false) => format!("coalesce({agg}, '[]')"),
                (true, false) => format!("coalesce(pg_catalog.json_strip_nulls({agg}), '[]')"),
                (false, true) => format!("coalesce(({agg}->0)::text, 'null')"),
                (true, true) => format!("coalesce(pg_catalog.json_strip_nulls({agg}->0)::text, 'null')"),
            }
        };
        let single = matches!(rows, Rows::Record | Rows::Scalar);
        match self.handler {
            Handler::Json => json(false, single),
            Handler::ArrayStripped => json(true, single),
            Handler::Object { strip } => json(strip, true),
            // Header: the keys of the source's first row; rows: their composite text output
            // without the parentheses; `\n` between, none at the end (PostgREST's `asCsvF`).
            Handler::Csv => format!(
                "(SELECT coalesce(pg_catalog.string_agg(a.k, ','), '') FROM (SELECT \
                 pg_catalog.json_object_keys(s.r)::text AS k FROM (SELECT pg_catalog.row_to_json(hh) AS r \
                 FROM {source} AS hh LIMIT 1) AS s) AS a) || E'\\n' || \
                 coalesce(pg_catalog.string_agg(pg_catalog.substr(_postgrest_t::text, 2, \
                 pg_catalog.length(_postgrest_t::text) - 2), E'\\n'), '')"
            ),
            // Resolved through `search_path` (PostGIS lives in `extensions`); without PostGIS
            // PostgreSQL answers 42883, which PostgREST (and so MadBase) maps to 404.
            Handler::GeoJson => "pg_catalog.json_build_object('type', 'FeatureCollection', 'features', \
                 coalesce(pg_catalog.json_agg(ST_AsGeoJSON(_postgrest_t)::json), '[]'))"
                .to_owned(),
        }
    }
}

/// `application/vnd.pgrst.plan+json; for="application/json"; options=analyze|verbose` (PostgREST's
/// `toMime`).
fn plan_mime(format: PlanFormat, options: u8, target: &str) -> String {
    let format = match format {
        PlanFormat::Text => "text",
        PlanFormat::Json => "json",
    };
    let mut out = format!("application/vnd.pgrst.plan+{format}; for=\"{target}\"");
    let mut first = true;
    for (i, (name, _)) in PLAN_OPTIONS.iter().enumerate() {
        if options & (1 << i) != 0 {
            out.push_str(if std::mem::replace(&mut first, false) { "; options=" } else { "|" });
            out.push_str(name);
        }
    }
    out
}

fn handler_mime(handler: Handler) -> &'static str {
    match handler {
        Handler::Json => "application/json",
        Handler::ArrayStripped => "application/vnd.pgrst.array+json;nulls=stripped",
        Handler::Object { strip: false } => "application/vnd.pgrst.object+json",
        Handler::Object { strip: true } => "application/vnd.pgrst.object+json;nulls=stripped",
        Handler::Csv => "text/csv",
        Handler::GeoJson => "application/geo+json",
    }
}

/// One media range of `Accept`, decoded as PostgREST decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decoded {
    Any,
    Json,
    GeoJson,
    Csv,
    OpenApi,
    ArrayStripped,
    Object {
        strip: bool,
    },
    Plan {
        target: Box<Decoded>,
        format: PlanFormat,
        options: u8,
    },
    /// Known to PostgREST but never produced by a read (`text/plain`, `text/xml`, …), or unknown:
    /// rendered as given (`known` = PostgREST's canonical spelling).
    Other {
        text: String,
        known: Option<&'static str>,
    },
}

impl Decoded {
    /// PostgREST's `toMime`: how the range is listed in PGRST107.
    fn mime(&self) -> String {
        match self {
            Decoded::Any => "*/*".to_owned(),
            Decoded::Json => "application/json".to_owned(),
            Decoded::GeoJson => "application/geo+json".to_owned(),
            Decoded::Csv => "text/csv".to_owned(),
            Decoded::OpenApi => "application/openapi+json".to_owned(),
            Decoded::ArrayStripped => handler_mime(Handler::ArrayStripped).to_owned(),
            Decoded::Object { strip } => handler_mime(Handler::Object { strip: *strip }).to_owned(),
            Decoded::Plan { target, format, options } => plan_mime(*format, *options, &target.mime()),
            Decoded::Other { text, known } => known.map_or_else(|| text.clone(), str::to_owned),
        }
    }

    /// The handler of a non-vendored type (PostgREST's default media handler map).
    fn handler(&self) -> Option<(Handler, &'static str)> {
        match self {
            Decoded::Any => Some((Handler::Json, "*/*")),
            Decoded::Json => Some((Handler::Json, "application/json")),
            Decoded::Csv => Some((Handler::Csv, "text/csv")),
            Decoded::GeoJson => Some((Handler::GeoJson, "application/geo+json")),
            Decoded::ArrayStripped => Some((Handler::ArrayStripped, handler_mime(Handler::ArrayStripped))),
            Decoded::Object { strip } => {
                let handler = Handler::Object { strip: *strip };
                Some((handler, handler_mime(handler)))
            }
            Decoded::OpenApi | Decoded::Plan { .. } | Decoded::Other { .. } => None,
        }
    }
}

/// A tokenized media type: type, subtype and `(key, value)` parameters.
type Tokens = (String, String, Vec<(String, String)>);

/// PostgREST's media type tokenizer: `type/subtype` then `;key=value` parameters (keys
/// lower-cased, values quoted or `[A-Za-z0-9|-]+`); what does not parse ends the parameters.
fn tokenize(s: &str) -> Option<Tokens> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let take = |i: &mut usize, ok: &dyn Fn(u8) -> bool| {
        let start = *i;
        while *i < bytes.len() && ok(bytes[*i]) {
            *i += 1;
        }
        (*i > start).then(|| s[start..*i].to_owned())
    };
    let main = take(&mut i, &|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'*')?;
    if bytes.get(i) != Some(&b'/') {
        return None;
    }
    i += 1;
    let sub = take(&mut i, &|b| b.is_ascii_alphanumeric() || b".*+-".contains(&b))?;
    let mut params = Vec::new();
    loop {
        let mut j = i;
        if bytes.get(j) != Some(&b';') {
            break;
        }
        j += 1;
        let Some(key) = take(&mut j, &|b| b.is_ascii_alphanumeric() || b == b'-') else { break };
        if bytes.get(j) != Some(&b'=') {
            break;
        }
        j += 1;
        let value = if bytes.get(j) == Some(&b'"') {
            let Some(end) = s[j + 1..].find('"') else { break };
            let value = s[j + 1..j + 1 + end].to_owned();
            j += end + 2;
            value
        } else {
            let Some(value) = take(&mut j, &|b| b.is_ascii_alphanumeric() || b == b'|' || b == b'-') else { break };
            value
        };
        params.push((key.to_ascii_lowercase(), value));
        i = j;
    }
    Some((main, sub, params))
}

/// PostgREST's `decodeMediaType`.
fn decode(text: &str) -> Decoded {
    let Some((main, sub, params)) = tokenize(text) else {
        return Decoded::Other { text: text.to_owned(), known: None };
    };
    // A later parameter of the same name wins (a map built from the list).
    let param = |name: &str| params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let strip = param("nulls") == Some("stripped");
    let plan = |format: PlanFormat| {
        let target = Box::new(decode(param("for").unwrap_or("application/json")));
        let requested: Vec<&str> = param("options").map_or_else(Vec::new, |o| o.split('|').collect());
        let mut options = 0u8;
        for (i, (name, _)) in PLAN_OPTIONS.iter().enumerate() {
            if requested.contains(name) {
                options |= 1 << i;
            }
        }
        Decoded::Plan { target, format, options }
    };
    match (main.to_ascii_lowercase().as_str(), sub.to_ascii_lowercase().as_str()) {
        ("application", "json") => Decoded::Json,
        ("application", "geo+json") => Decoded::GeoJson,
        ("text", "csv") => Decoded::Csv,
        ("text", "plain") => Decoded::Other { text: text.to_owned(), known: Some("text/plain") },
        ("text", "xml") => Decoded::Other { text: text.to_owned(), known: Some("text/xml") },
        ("application", "openapi+json") => Decoded::OpenApi,
        ("application", "x-www-form-urlencoded") => {
            Decoded::Other { text: text.to_owned(), known: Some("application/x-www-form-urlencoded") }
        }
        ("application", "octet-stream") => {
            Decoded::Other { text: text.to_owned(), known: Some("application/octet-stream") }
        }
        ("application", "vnd.pgrst.plan" | "vnd.pgrst.plan+text") => plan(PlanFormat::Text),
        ("application", "vnd.pgrst.plan+json") => plan(PlanFormat::Json),
        ("application", "vnd.pgrst.object+json" | "vnd.pgrst.object") => Decoded::Object { strip },
        ("application", "vnd.pgrst.array+json" | "vnd.pgrst.array") if strip => Decoded::ArrayStripped,
        ("application", "vnd.pgrst.array+json" | "vnd.pgrst.array") => Decoded::Json,
        ("*", "*") => Decoded::Any,
        _ => Decoded::Other { text: text.to_owned(), known: None },
    }
}

/// wai's `parseHttpAccept`: spaces removed, `;q=…` (and what follows it) cut off, then a stable
/// sort by quality and specificity (parameters count up, `*` down), best first.
fn accept_ranges(header: &str) -> Vec<String> {
    let mut ranges: Vec<(String, f64, i64)> = header
        .split(',')
        .take(MAX_ACCEPT_RANGES)
        .map(|range| {
            let range: String = range.chars().filter(|&c| c != ' ').collect();
            let (media, q) = match range.find(";q=") {
                Some(at) => {
                    let q = range[at + 3..].split(';').next().unwrap_or("");
                    (range[..at].to_owned(), q.parse::<f64>().ok().filter(|q| q.is_finite()).unwrap_or(1.0))
                }
                None => (range, 1.0),
            };
            let specificity = media.matches(';').count() as i64 - media.matches('*').count() as i64;
            (media, q, specificity)
        })
        .collect();
    ranges.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.cmp(&a.2)));
    ranges.into_iter().map(|(media, _, _)| media).collect()
}

/// The media type of a table, RPC or write response: the first range of `Accept` that can be
/// produced (PostgREST's `negotiateContent`), `application/json` without `Accept`; plans only when
/// `plan_enabled`. None → 406 PGRST107.
pub fn negotiate(req: &Request, plan_enabled: bool) -> Result<Media, ApiError> {
    let Some(accept) = req.header("accept") else { return Ok(Media::JSON) };
    let decoded: Vec<Decoded> = accept_ranges(&String::from_utf8_lossy(accept)).iter().map(|r| decode(r)).collect();
    for range in &decoded {
        let found = match range {
            Decoded::Plan { target, format, options } if plan_enabled => target.handler().map(|(handler, target)| {
                Media { handler, plan: Some(Plan { format: *format, options: *options, target }) }
            }),
            other => other.handler().map(|(handler, _)| Media { handler, plan: None }),
        };
        if let Some(media) = found {
            return Ok(media);
        }
    }
    Err(ApiError::MediaType(decoded.iter().map(Decoded::mime).collect::<Vec<_>>().join(", ")))
}

/// The OpenAPI document's media types (PostgREST's `inspectPlan`: `application/openapi+json`,
/// `application/json` or `*/*`, in any order). `Some(true)` when the first acceptable range asks
/// for OpenAPI 3.1 (`application/openapi+json;version=3.1`, MadBase's extension), `Some(false)`
/// for Swagger 2.0; `Err` → 406 PGRST107.
pub fn negotiate_openapi(req: &Request) -> Result<bool, ApiError> {
    let Some(accept) = req.header("accept") else { return Ok(false) };
    let ranges = accept_ranges(&String::from_utf8_lossy(accept));
    for range in &ranges {
        match decode(range) {
            Decoded::OpenApi => {
                // PostgREST's tokenizer stops at the `.` of `3.1`: read this parameter directly.
                let version = range
                    .split(';')
                    .skip(1)
                    .filter_map(|p| p.split_once('='))
                    .find_map(|(k, v)| k.eq_ignore_ascii_case("version").then(|| v.trim_matches('"')));
                return Ok(matches!(version, Some("3.1" | "3.1.0")));
            }
            Decoded::Json | Decoded::Any => return Ok(false),
            _ => {}
        }
    }
    Err(ApiError::MediaType(ranges.iter().map(|r| decode(r).mime()).collect::<Vec<_>>().join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(accept: Option<&str>) -> Request {
        let mut headers = madbase_http::Headers::default();
        if let Some(accept) = accept {
            headers.push(bytes::Bytes::from_static(b"accept"), bytes::Bytes::copy_from_slice(accept.as_bytes()));
        }
        Request::new("GET", "/rest/v1/t", headers, "127.0.0.1:1".parse().unwrap())
    }

    fn media(accept: &str) -> Result<Media, String> {
        negotiate(&request(Some(accept)), true).map_err(|e| e.to_string())
    }

    #[test]
    fn negotiation_follows_postgrest() {
        assert_eq!(negotiate(&request(None), false).unwrap(), Media::JSON);
        assert_eq!(media("*/*").unwrap(), Media::JSON);
        assert_eq!(media("application/vnd.pgrst.array+json").unwrap(), Media::JSON);
        assert_eq!(media("text/csv").unwrap().handler, Handler::Csv);
        assert_eq!(media("Application/Geo+JSON").unwrap().handler, Handler::GeoJson);
        assert_eq!(media("application/vnd.pgrst.object").unwrap().handler, Handler::Object { strip: false });
        assert_eq!(
            media("application/vnd.pgrst.object+json;nulls=stripped").unwrap().handler,
            Handler::Object { strip: true }
        );
        assert_eq!(media("application/vnd.pgrst.array+json; nulls=stripped").unwrap().handler, Handler::ArrayStripped);
        // Quality first, then specificity; equal ones keep their order.
        assert_eq!(media("application/json;q=0.5, text/csv").unwrap().handler, Handler::Csv);
        assert_eq!(media("*/*, text/csv").unwrap().handler, Handler::Csv);
        assert_eq!(media("text/xml, application/json").unwrap(), Media::JSON);
        assert_eq!(media("text/xml").unwrap_err(), "None of these media types are available: text/xml");
        assert_eq!(
            media("application/*, text/plain;q=0.2").unwrap_err(),
            "None of these media types are available: application/*, text/plain"
        );
    }

    #[test]
    fn plans() {
        let plan =
            media(r#"application/vnd.pgrst.plan+json; for="application/json"; options=analyze|verbose;"#).unwrap();
        assert_eq!(
            plan.content_type(),
            r#"application/vnd.pgrst.plan+json; for="application/json"; options=analyze|verbose; charset=utf-8"#
        );
        assert_eq!(plan.plan.as_ref().unwrap().wrap("SELECT 1"), "EXPLAIN (FORMAT JSON, ANALYZE, VERBOSE) SELECT 1");
        let text = media("application/vnd.pgrst.plan; options=wal|settings").unwrap();
        assert_eq!(
            text.content_type(),
            r#"application/vnd.pgrst.plan+text; for="application/json"; options=settings|wal; charset=utf-8"#
        );
        assert_eq!(text.plan.as_ref().unwrap().wrap("S"), "EXPLAIN (FORMAT TEXT, SETTINGS, WAL) S");
        let csv = media(r#"application/vnd.pgrst.plan+text;for="text/csv""#).unwrap();
        assert_eq!((csv.handler, csv.content_type().contains(r#"for="text/csv""#)), (Handler::Csv, true));
        assert!(!csv.is_singular());
        assert!(media(r#"application/vnd.pgrst.plan;for="text/xml""#).is_err());
        let disabled = negotiate(
            &request(Some(r#"application/vnd.pgrst.plan+json; for="application/json"; options=analyze;"#)),
            false,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            disabled,
            r#"None of these media types are available: application/vnd.pgrst.plan+json; for="application/json"; options=analyze"#
        );
    }

    #[test]
    fn bodies() {
        let object = Media { handler: Handler::Object { strip: true }, plan: None };
        assert!(object.is_singular());
        assert_eq!(
            object.body_sql(Rows::Records),
            "coalesce(pg_catalog.json_strip_nulls(pg_catalog.json_agg(_postgrest_t)->0)::text, 'null')"
        );
        assert_eq!(Media::JSON.body_sql(Rows::Records), "coalesce(pg_catalog.json_agg(_postgrest_t), '[]')");
        assert_eq!(
            Media::JSON.body_sql(Rows::Scalar),
            "coalesce((pg_catalog.json_agg(_postgrest_t.pgrst_scalar)->0)::text, 'null')"
        );
        let csv = Media { handler: Handler::Csv, plan: None };
        assert!(csv.needs_source() && csv.body_sql(Rows::Records).contains("FROM pgrst_source AS hh LIMIT 1"));
    }

    #[test]
    fn openapi_negotiation() {
        assert!(!negotiate_openapi(&request(None)).unwrap());
        assert!(!negotiate_openapi(&request(Some("application/openapi+json"))).unwrap());
        assert!(negotiate_openapi(&request(Some("application/openapi+json;version=3.1"))).unwrap());
        assert!(!negotiate_openapi(&request(Some("text/csv, */*"))).unwrap());
        assert!(negotiate_openapi(&request(Some("text/csv"))).is_err());
    }
}
