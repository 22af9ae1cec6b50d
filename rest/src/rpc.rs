//! Function calls on `/rest/v1/rpc/<function>` in the request's schema (`Accept-Profile` for
//! GET/HEAD, `Content-Profile` for POST), as PostgREST answers them (reference/rest.md §7).
//!
//! Owns: the split of the query string into arguments and read parameters, overload resolution
//! against the request's schema cache snapshot (PGRST202/PGRST203), the one call statement, the
//! access mode of its transaction and the result rendering.
//!
//! Shape of a call (POST with `{"a":1,"b":"x"}` to `f(a integer, b text) returns setof todos`,
//! `?select=id&id=gt.1&order=id&limit=5`):
//!
//! ```sql
//! WITH pgrst_source AS (
//!   SELECT pgrst_call.* FROM (SELECT * FROM pg_catalog.json_to_recordset($1::json)
//!          AS pgrst_args("a" integer, "b" text) LIMIT 1) AS pgrst_body,
//!        LATERAL "public"."f"("a" := pgrst_body."a", "b" := pgrst_body."b") pgrst_call)
//! SELECT pg_catalog.count(_postgrest_t) AS page_total, coalesce(pg_catalog.json_agg(_postgrest_t), '[]') AS body,
//!        <super::statement::RESPONSE_GUC_COLUMNS>
//! FROM (SELECT "f"."id" FROM pgrst_source AS "f" WHERE "f"."id" > $2 ORDER BY "f"."id" LIMIT $3) _postgrest_t
//! ```
//!
//! A scalar function selects `pgrst_call AS pgrst_scalar` and renders that column; a single
//! unnamed `json`/`jsonb` parameter receives the whole body (`"public"."f"($1::json)`); no
//! arguments → `"public"."f"()`.
//!
//! Invariants:
//! - **nothing from the request is interpolated.** Argument values never reach SQL text: the POST
//!   body (bytes as received) or a JSON object built from the query-string arguments is ONE bound
//!   parameter, and PostgreSQL's `json_to_recordset` converts each value with the argument's input
//!   function (so `'[1,2,3]'` becomes a `vector`, `{1,2}` an `integer[]`). Argument names, the
//!   function name, `select`/filter/order columns are quoted identifiers; the only unquoted words
//!   are argument type names, and those come from the schema cache (`format_type` output), never
//!   from the request. Only arguments of the resolved overload are named in the call.
//! - **one call = one statement = one round trip**, in the request's batch
//!   ([`super::request::request_batch`]), in a READ ONLY transaction for GET/HEAD and for POST to a
//!   STABLE/IMMUTABLE function, READ WRITE only for POST to a VOLATILE one (so a GET on a
//!   VOLATILE function that writes fails with 25006 → 405, as in PostgREST). `Prefer: tx=rollback`
//!   ends it with a rollback.
//! - **resolution uses only the request's snapshot**: an unknown function or argument set never
//!   reaches PostgreSQL.
//! - **bounded**: the body by `[http] max_body_bytes`, at most [`MAX_ARGS`] argument names and
//!   [`MAX_ARG_VALUES`] query-string argument values; no `unwrap`/`expect` on request input.
//!
//! Logic trees (`or=`, `and=`) filter the result like filters. `db_max_rows` caps the `limit`.
//! `Prefer: handling=strict, max-affected=N` on a set-returning function adds a check column that
//! raises (the row-limit check of [`super::statement`]) when the result has more than N rows, so the
//! function's writes are rolled back and the answer is 400 PGRST124; on any other function it is
//! 400 PGRST128 before anything runs.
//!
//! `Prefer: count=exact` adds `(SELECT pg_catalog.count(*) FROM pgrst_source … WHERE <filters>) AS
//! total_result_set` (the filtered result without limit/offset); the status then follows the read
//! rules (206, 416 PGRST103).
//!
//! Only callable functions are in the schema cache (PostgREST's rule: no unnamed input parameter,
//! or exactly one of type bytea/json/jsonb/text/xml); an unnamed parameter is named `""` in
//! resolution, so the JSON key `""` matches it.
//!
//! Every media type of [`super::media`] applies to the result (plans explain the call statement).
//! `Prefer: count=estimated` counts exactly and `count=planned` counts nothing, as PostgREST (it
//! runs no planner estimate for functions).
//!
//! A `text/plain`, `text/xml` or `application/octet-stream` POST body goes, as it is, to a single
//! unnamed `text`/`xml`/`bytea` parameter (bytea bound as `\x` hex text).
//!
//! A JSON array of objects with the same keys calls the function once, with the first object's
//! arguments, as PostgREST (v12+) does: one object is read as a one-row array and the statement
//! takes the first row (`json_to_recordset … LIMIT 1`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use bytes::Bytes;
use madbase_core::identity::Identity;
use madbase_http::{Body, Request, Response};
use madbase_pg::Statement;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::body_format;
use super::error::{ApiError, SingleParam};
use super::media::{self, Media, Rows};
use super::payload::{self, ShapeError, MAX_BULK_ROWS};
use super::plan::{self, ReadPlan};
use super::prefer::Prefer;
use super::query::{self, QueryError, ReadQuery};
use super::range;
use super::request;
use super::response::{self, Asked, Content, Page};
use super::sql::{push_order_limit, push_where_trees, quote_ident, Builder, Source};
use super::statement::{outer_select, row_limit_broken, row_limit_check, Params};
use crate::schema::relationships::QualifiedName;
use crate::schema::{fuzzy, ArgMode, Function, FunctionArg, SchemaCache, Volatility};
use crate::RestService;

/// At most this many argument names in one call (PostgreSQL's `FUNC_MAX_ARGS`).
pub const MAX_ARGS: usize = 100;
/// At most this many `key=value` arguments in a query string (repeated keys feed variadics).
pub const MAX_ARG_VALUES: usize = 1_000;

/// The arguments of a call, as the request carried them.
#[derive(Debug)]
pub(super) enum Input {
    /// A POST body: the bytes as received; `keys` when it is a JSON object or an array of objects
    /// with the same keys (`bulk`: an array, whose first object is used).
    Body { raw: Bytes, keys: Option<BTreeSet<String>>, bulk: bool },
    /// GET/HEAD/OPTIONS: the query-string arguments, name → values in arrival order.
    Query(BTreeMap<String, Vec<String>>),
    /// A POST whose `Content-Type` is `text/plain`, `text/xml` or `application/octet-stream`:
    /// the bytes go to a single unnamed parameter of type `type_name` (`text`, `xml`, `bytea`).
    Raw { raw: Bytes, type_name: &'static str },
}

impl Input {
    pub(super) fn from_body(raw: Bytes) -> Result<Input, ApiError> {
        // PostgREST treats an empty body as no arguments.
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(Input::Body { raw: Bytes::from_static(b"{}"), keys: Some(BTreeSet::new()), bulk: false });
        }
        match payload::scan(&raw, None, MAX_BULK_ROWS, MAX_ARGS) {
            Ok(shape) => {
                let keys = Some(shape.columns.into_iter().collect());
                Ok(Input::Body { raw, keys, bulk: !shape.single })
            }
            Err(ShapeError::TooManyColumns(_)) => {
                Err(ApiError::InvalidBody(format!("At most {MAX_ARGS} function arguments can be given")))
            }
            // Objects with different keys are refused (PostgREST's payload rule for every array).
            Err(e @ (ShapeError::TooManyRows(_) | ShapeError::KeysDiffer)) => Err(ApiError::InvalidBody(e.to_string())),
            // A scalar or an array of non-objects: valid JSON only reaches a single unnamed
            // json/jsonb parameter.
            Err(ShapeError::Invalid) => {
                serde_json::from_slice::<IgnoredAny>(&raw)
                    .map_err(|_| ApiError::InvalidBody(ShapeError::Invalid.to_string()))?;
                Ok(Input::Body { raw, keys: None, bulk: false })
            }
        }
    }

    /// The argument names given (`None`: a body that is not a JSON object, or a raw one).
    fn keys(&self) -> Option<BTreeSet<String>> {
        match self {
            Input::Body { keys, .. } => keys.clone(),
            Input::Query(args) => Some(args.keys().cloned().collect()),
            Input::Raw { .. } => None,
        }
    }

    /// Which single unnamed parameter this input may also be passed to.
    fn single_param(&self) -> SingleParam {
        match self {
            Input::Body { .. } => SingleParam::Json,
            Input::Query(_) => SingleParam::None,
            Input::Raw { type_name, .. } => SingleParam::Raw(type_name),
        }
    }
}

/// The parameter type a raw POST body goes to, by its `Content-Type` (PostgREST's
/// `text/plain` → `text`, `text/xml` → `xml`, `application/octet-stream` → `bytea`).
fn raw_body_type(req: &Request) -> Option<&'static str> {
    let value = String::from_utf8_lossy(req.header("content-type")?);
    let media = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "text/plain" => Some("text"),
        "text/xml" => Some("xml"),
        "application/octet-stream" => Some("bytea"),
        _ => None,
    }
}

/// A raw body as the text input of its parameter type: `bytea` as `\x` + hex (the bytes
/// need not be text), `text`/`xml` as they are (PostgreSQL validates the encoding and the XML).
fn raw_argument(raw: &Bytes, type_name: &str) -> Bytes {
    if type_name != "bytea" {
        return raw.clone();
    }
    let mut hex = String::with_capacity(2 + raw.len() * 2);
    hex.push_str("\\x");
    for b in raw.iter() {
        let _ = write!(hex, "{b:02x}");
    }
    Bytes::from(hex)
}

/// How the resolved overload is called.
#[derive(Debug, PartialEq)]
pub(super) enum Call<'a> {
    /// `f()`: no arguments given (every input has a default, or there are none).
    NoArgs,
    /// `f($1::json)`: the whole body goes to the single unnamed json/jsonb parameter.
    Single { type_name: &'a str },
    /// `f("a" := …, …)`: the given arguments, in declaration order.
    Named(Vec<&'a FunctionArg>),
}

/// Input parameters (PostgREST's routine params): `IN`, `INOUT` and `VARIADIC` arguments.
fn inputs(function: &Function) -> impl Iterator<Item = &FunctionArg> {
    function.args.iter().filter(|a| matches!(a.mode, ArgMode::In | ArgMode::InOut | ArgMode::Variadic))
}

/// PostgREST's `matchesParams`: the given names minus the optional parameters are exactly the
/// required ones (so with only optional parameters, any subset of them). An unnamed parameter is
/// named `""`, as PostgREST names it: the JSON key `""` (or `?=v`) matches it.
fn matches(function: &Function, keys: &BTreeSet<String>) -> bool {
    let params: Vec<&FunctionArg> = inputs(function).collect();
    if params.is_empty() {
        return keys.is_empty();
    }
    let required: BTreeSet<&str> = params.iter().filter(|a| !a.has_default).map(|a| a.name.as_str()).collect();
    let optional: BTreeSet<&str> = params.iter().filter(|a| a.has_default).map(|a| a.name.as_str()).collect();
    let given: BTreeSet<&str> = keys.iter().map(String::as_str).filter(|k| !optional.contains(k)).collect();
    given == required
}

/// PostgREST's `hasSingleUnnamedParam`: the only input parameter has a type the body can go to
/// (json/jsonb for a JSON body, the raw body's type otherwise; PostgREST checks the type, not
/// the name).
fn single_param_fits(function: &Function, searched: SingleParam) -> bool {
    let mut params = inputs(function);
    let only = params.next();
    let fits = |t: &str| match searched {
        SingleParam::Json => matches!(t, "json" | "jsonb"),
        SingleParam::Raw(type_name) => t == type_name,
        SingleParam::None => false,
    };
    params.next().is_none() && only.is_some_and(|p| fits(&p.type_name))
}

/// How PostgREST calls the chosen overload (its `callPlan`): a single unnamed parameter gets the
/// whole payload positionally (`f($1::text)`); otherwise the given names, in declaration order.
fn call_of<'a>(function: &'a Function, keys: &BTreeSet<String>, raw: bool) -> Call<'a> {
    let mut params = inputs(function);
    if let (Some(only), None) = (params.next(), params.next()) {
        // A raw body always goes to the one parameter, positionally, whatever its name.
        if only.name.is_empty() || raw {
            return Call::Single { type_name: &only.type_name };
        }
    }
    let given: Vec<&FunctionArg> = inputs(function).filter(|a| keys.contains(&a.name)).collect();
    if given.is_empty() {
        Call::NoArgs
    } else {
        Call::Named(given)
    }
}

/// `(a, b)`: parameter names sorted, as PostgREST lists them in hints.
fn name_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    format!("({})", names.join(", "))
}

/// `public.f(a => integer, b => text)` for PGRST203 (an unnamed parameter renders ` => text`).
fn describe(function: &Function) -> String {
    let params: Vec<String> = inputs(function).map(|a| format!("{} => {}", a.name, a.type_name)).collect();
    format!("{}.{}({})", function.schema, function.name, params.join(", "))
}

/// Picks the overload of `schema.name` for `input` (PostgREST's `findProc`): overloads whose
/// parameters match the given names win; otherwise, for a JSON body, one whose only parameter is
/// json/jsonb. None → PGRST202; several → PGRST203, candidates in the cache's (PostgREST's)
/// overload order. The cache holds only callable functions (see `schema::introspect`).
pub(super) fn resolve<'a>(
    cache: &'a SchemaCache,
    schema: &str,
    name: &str,
    input: &Input,
) -> Result<(&'a Function, Call<'a>), ApiError> {
    let overloads = cache.functions(schema, name);
    let keys = input.keys();
    let searched = input.single_param();
    let mut named: Vec<&Function> = Vec::new();
    let mut single: Vec<&Function> = Vec::new();
    for function in overloads {
        if keys.as_ref().is_some_and(|k| matches(function, k)) {
            named.push(function);
        } else if single_param_fits(function, searched) {
            single.push(function);
        }
    }
    let chosen = match (named.as_slice(), single.as_slice()) {
        ([function], _) | ([], [function]) => *function,
        ([], []) => {
            let args: Vec<String> = keys.unwrap_or_default().into_iter().collect();
            let hint = if overloads.is_empty() {
                let names = cache.schemas.get(schema).into_iter().flat_map(|s| s.functions.keys().map(String::as_str));
                fuzzy::closest(name, names).map(|n| format!("Perhaps you meant to call the function {schema}.{n}"))
            } else {
                let lists: Vec<String> =
                    overloads.iter().map(|f| name_list(inputs(f).map(|a| a.name.as_str()))).collect();
                let wanted = name_list(args.iter().map(String::as_str));
                fuzzy::closest(&wanted, lists.iter().map(String::as_str))
                    .map(|l| format!("Perhaps you meant to call the function {schema}.{name}{l}"))
            };
            return Err(ApiError::FunctionNotFound { qualified: format!("{schema}.{name}"), args, searched, hint });
        }
        ([], several) | (several, _) => {
            return Err(ApiError::AmbiguousFunction(several.iter().map(|f| describe(f)).collect()))
        }
    };
    let raw = matches!(searched, SingleParam::Raw(_));
    Ok((chosen, call_of(chosen, &keys.unwrap_or_default(), raw)))
}

/// PostgREST's split of a query string: `(arguments, the rest re-joined for the read grammar)`.
/// An argument is a `key=value` whose key is not reserved and has no `.`, and whose value does
/// not start with a filter operator; everything else is `select`/`order`/`limit`/a filter.
pub(super) fn split_query(query: &str) -> Result<(Vec<(String, String)>, String), QueryError> {
    let mut args = Vec::new();
    let mut rest = String::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let argument = match pair.split_once('=') {
            Some((raw_key, raw_value)) => {
                let key = query::percent_decode(raw_key, true)?;
                let value = query::percent_decode(raw_value, true)?;
                is_argument(&key, &value).then_some((key, value))
            }
            None => None,
        };
        match argument {
            Some(argument) => {
                if args.len() == MAX_ARG_VALUES {
                    return Err(QueryError::TooMany { what: "function arguments", max: MAX_ARG_VALUES });
                }
                args.push(argument);
            }
            None => {
                if !rest.is_empty() {
                    rest.push('&');
                }
                rest.push_str(pair);
            }
        }
    }
    Ok((args, rest))
}

fn is_argument(key: &str, value: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    let reserved = matches!(key, "select" | "columns" | "on_conflict")
        || matches!(last, "order" | "limit" | "offset" | "and" | "or");
    !reserved && !key.contains('.') && !has_operator(value)
}

/// PostgREST's `hasOperator || hasFtsOperator` test on a query-string value.
fn has_operator(value: &str) -> bool {
    const OPERATORS: &[&str] = &[
        "eq", "gte", "gt", "lte", "lt", "neq", "like", "ilike", "cs", "cd", "ov", "sl", "sr", "nxr", "nxl", "adj",
        "match", "imatch", "fts", "plfts", "phfts", "wfts",
    ];
    const FTS: &[&str] = &["fts", "plfts", "phfts", "wfts"];
    let mut parts = value.split('.');
    let first = parts.next().unwrap_or("");
    let dotted = match first {
        "not" => parts.next().is_some(),
        "is" | "in" => true,
        op => OPERATORS.contains(&op),
    };
    let fts = value.split_once('(').is_some_and(|(op, _)| FTS.contains(&op));
    dotted || fts
}

/// The query-string arguments grouped by name, bounded.
pub(super) fn group_args(args: Vec<(String, String)>) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in args {
        if !grouped.contains_key(&key) && grouped.len() == MAX_ARGS {
            return Err(QueryError::TooMany { what: "function arguments", max: MAX_ARGS }.into());
        }
        grouped.entry(key).or_default().push(value);
    }
    Ok(grouped)
}

/// The JSON object of a GET call's arguments: each value as a JSON string (PostgreSQL parses it
/// with the argument's type); a variadic argument gets every repeated value as an array, any
/// other repeated key its last value (PostgREST's map semantics).
fn query_payload(function: &Function, args: &BTreeMap<String, Vec<String>>) -> Bytes {
    let mut object = Map::new();
    for arg in inputs(function) {
        let Some(values) = args.get(&arg.name) else { continue };
        let value = if arg.mode == ArgMode::Variadic {
            Value::Array(values.iter().cloned().map(Value::String).collect())
        } else {
            values.last().cloned().map_or(Value::Null, Value::String)
        };
        object.insert(arg.name.clone(), value);
    }
    Bytes::from(Value::Object(object).to_string())
}

/// Whether rows of the result are composite (rendered as objects) rather than scalars.
fn returns_composite(function: &Function) -> bool {
    function.return_relation.is_some() || function.return_type == "record"
}

fn returns_void(function: &Function) -> bool {
    !function.returns_set && function.return_type == "void"
}

/// Builds the one statement of a call (see the module doc); `payload` is bound as `$1` when the
/// call takes arguments. Result columns: `page_total`, `body` (built by `media`; NULL without
/// one — HEAD — and for `void`), then `total_result_set` with `exact_count`, then `max_affected`
/// (NULL, or raises when the result has more rows than `max_affected`), then the response GUCs
/// ([`super::statement::RESPONSE_GUC_COLUMNS`]).
#[allow(clippy::too_many_arguments)] // each is one independent part of the statement
fn call_statement(
    cache: &SchemaCache,
    function: &Function,
    call: &Call<'_>,
    payload: Option<Bytes>,
    plan: &ReadPlan<'_>,
    media: Option<&Media>,
    exact_count: bool,
    max_affected: Option<u64>,
) -> Statement {
    let mut params = Params::default();
    let composite = returns_composite(function);
    let source = call_source(function, call, payload, composite, &mut params);
    let (page, total) = result_page(cache, function, plan, composite, exact_count, &mut params);
    let body = match media {
        Some(media) if !returns_void(function) => media.body_sql(result_rows(function)),
        _ => "NULL".to_owned(),
    };
    let check = row_limit_check(false, max_affected, &mut params);
    let check = check.map_or_else(String::new, |check| format!(", {check} AS max_affected"));
    params.statement(outer_select(Some(&source), &body, &format!("{total}{check}"), &page))
}

/// How the result's rows render: objects or scalars, a set or one.
fn result_rows(function: &Function) -> Rows {
    match (returns_composite(function), function.returns_set) {
        (true, true) => Rows::Records,
        (true, false) => Rows::Record,
        (false, true) => Rows::Scalars,
        (false, false) => Rows::Scalar,
    }
}

/// The `pgrst_source` CTE: the call itself, its rows (`pgrst_call.*`) or its scalar
/// (`pgrst_scalar`); the arguments, when there are any, are the payload bound first (`$1`).
fn call_source(
    function: &Function,
    call: &Call<'_>,
    payload: Option<Bytes>,
    composite: bool,
    params: &mut Params,
) -> String {
    let callee = format!("{}.{}", quote_ident(&function.schema), quote_ident(&function.name));
    let mut source =
        String::from(if composite { "SELECT pgrst_call.* FROM " } else { "SELECT pgrst_call AS pgrst_scalar FROM " });
    let bind_payload = || params.bind(payload.unwrap_or_else(|| Bytes::from_static(b"{}")));
    match call {
        Call::NoArgs => {
            let _ = write!(source, "{callee}() pgrst_call");
        }
        Call::Single { type_name } => {
            let _ = write!(source, "{callee}({}::{type_name}) pgrst_call", bind_payload());
        }
        Call::Named(args) => push_named_call(&mut source, &callee, args, &bind_payload()),
    }
    source
}

/// PostgREST's shape of a call with named arguments: they are the first row of the (array)
/// payload `p`, typed by the resolved overload, passed by name in declaration order.
fn push_named_call(source: &mut String, callee: &str, args: &[&FunctionArg], p: &str) {
    let _ = write!(source, "(SELECT * FROM pg_catalog.json_to_recordset({p}::json) AS pgrst_args(");
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            source.push_str(", ");
        }
        let _ = write!(source, "{} {}", quote_ident(&arg.name), arg.type_name);
    }
    let _ = write!(source, ") LIMIT 1) AS pgrst_body, LATERAL {callee}(");
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            source.push_str(", ");
        }
        if arg.mode == ArgMode::Variadic {
            source.push_str("VARIADIC ");
        }
        let name = quote_ident(&arg.name);
        let _ = write!(source, "{name} := pgrst_body.{name}");
    }
    source.push_str(") pgrst_call");
}

/// The page of the result read from `pgrst_source` (select, filters, order, limit of `plan`) and,
/// with `exact_count`, the `, (…) AS total_result_set` column: the rows of the filtered result,
/// before limit/offset (the CTE is referenced twice, so PostgreSQL materializes it: the function
/// still runs once).
fn result_page(
    cache: &SchemaCache,
    function: &Function,
    plan: &ReadPlan<'_>,
    composite: bool,
    exact_count: bool,
    params: &mut Params,
) -> (String, String) {
    let mut bind = |value: String| params.bind(value);
    let alias = quote_ident(&function.name);
    let from = format!("pgrst_source AS {alias}");
    let read = plan.query;
    let mut page = String::new();
    let mut total = String::new();
    if composite {
        let source = Source { from: &from, qualifier: &alias, row: &alias };
        let mut builder = Builder::new(cache, &mut bind);
        builder.push_level(&mut page, plan, source, &[], None);
        if exact_count {
            total.push_str(", (");
            builder.push_count(&mut total, plan, source);
            total.push_str(") AS total_result_set");
        }
    } else {
        let mut filtered = format!(" FROM {from}");
        push_where_trees(&mut filtered, &alias, &read.filters, &read.trees, &mut bind);
        let _ = write!(page, "SELECT {alias}.pgrst_scalar{filtered}");
        push_order_limit(&mut page, &alias, read, &|_| None, &mut bind);
        if exact_count {
            let _ = write!(total, ", (SELECT pg_catalog.count(*){filtered}) AS total_result_set");
        }
    }
    (page, total)
}

/// What a call's one statement is built from, once its overload is resolved. The handler and
/// the injection property (`rest::injection`) both build through [`CallInput::statement`].
pub(super) struct CallInput<'a> {
    pub(super) cache: &'a SchemaCache,
    /// The profile's schema.
    pub(super) schema: &'a str,
    pub(super) function: &'a Function,
    pub(super) call: &'a Call<'a>,
    pub(super) input: &'a Input,
    pub(super) read: &'a ReadQuery,
    pub(super) prefer: &'a Prefer,
    pub(super) media: &'a Media,
    pub(super) head: bool,
}

impl CallInput<'_> {
    /// The statement ([`call_statement`]), wrapped in `EXPLAIN` when a plan is asked for.
    pub(super) fn statement(&self) -> Result<Statement, ApiError> {
        let function = self.function;
        let max_affected = self.prefer.strict_max_affected();
        if max_affected.is_some() && !function.returns_set {
            return Err(ApiError::MaxAffectedNotSet);
        }
        if let (Input::Body { keys: None, .. }, Call::Named(_) | Call::NoArgs) = (self.input, self.call) {
            // A body that is not an object (nor an array of objects) only reaches a function whose
            // only parameter is json/jsonb; when that parameter is named, PostgREST would call it
            // without arguments.
            return Err(ApiError::NotImplemented(
                "a JSON scalar or array of scalars goes only to a single unnamed json/jsonb parameter",
            ));
        }
        let payload = match (self.input, self.call) {
            (_, Call::NoArgs) => None,
            // Named arguments are read with json_to_recordset: one object is a one-row array.
            (Input::Body { raw, bulk: false, .. }, Call::Named(_)) => Some(payload::one_row_array(raw)),
            (Input::Body { raw, .. }, _) => Some(raw.clone()),
            (Input::Raw { raw, type_name }, _) => Some(raw_argument(raw, type_name)),
            (Input::Query(args), Call::Named(_)) => Some(payload::one_row_array(&query_payload(function, args))),
            (Input::Query(args), _) => Some(query_payload(function, args)),
        };
        let relation = match &function.return_relation {
            Some((schema, name)) => QualifiedName::new(schema, name),
            None => QualifiedName::new(&function.schema, &function.name),
        };
        let plan = plan::plan(self.cache, self.schema, relation, self.read)?;
        let media = (!self.head).then_some(self.media);
        // PostgREST runs no planner estimate for functions: `planned` counts nothing, `estimated`
        // counts exactly.
        let exact_count = self.prefer.counts_exactly();
        let mut statement =
            call_statement(self.cache, function, self.call, payload, &plan, media, exact_count, max_affected);
        if let Some(explain) = &self.media.plan {
            statement.sql = explain.wrap(&statement.sql);
        }
        Ok(statement)
    }
}

/// Serves `GET`, `HEAD`, `POST` and `OPTIONS` on `/rest/v1/rpc/<name>`; other methods → PGRST101.
pub async fn serve(
    state: &RestService,
    req: &Request,
    identity: Identity,
    body: Body,
    name: &str,
    pgrst_path: &str,
) -> Result<Response, ApiError> {
    let method = req.method();
    let post = match method {
        "POST" => true,
        "GET" | "HEAD" | "OPTIONS" => false,
        other => return Err(ApiError::RpcMethod(other.to_owned())),
    };
    let head = method == "HEAD";
    let config = &state.config;
    let profile = request::profile(req, config)?;
    // The snapshot this request uses to its end; an unknown function never reaches PostgreSQL.
    let schema = state.schema();
    let media = match method {
        "OPTIONS" => Media::JSON,
        _ => media::negotiate(req, request::plan_enabled(state, &schema))?,
    };
    let prefer = Prefer::checked(req)?;
    let (query_args, rest) = split_query(req.query().unwrap_or(""))?;
    let mut read = query::parse_read_query(&rest)?;
    range::apply_range_header(req, &mut read)?;
    range::cap_rows(&mut read, config.api.max_rows.0);
    let input = read_input(state, req, post, body, query_args).await?;
    let (function, call) = resolve(&schema, profile.schema, name, &input)?;

    if method == "OPTIONS" {
        let allow = if function.volatility == Volatility::Volatile { "OPTIONS,POST" } else { "OPTIONS,GET,HEAD,POST" };
        return Ok(Response::new(200).header("allow", allow));
    }
    let call_input = CallInput {
        cache: &schema,
        schema: profile.schema,
        function,
        call: &call,
        input: &input,
        read: &read,
        prefer: &prefer,
        media: &media,
        head,
    };
    let statement = call_input.statement()?;
    let read_only = !(post && function.volatility == Volatility::Volatile);
    let end = prefer.tx_end();
    let results = request::request_batch(state, &schema, req, &identity, profile, pgrst_path, &prefer)
        .with(|batch| batch.statement(statement).read_only(read_only).end(end))
        .run(state)
        .await
        .map_err(|e| match row_limit_broken(&e) {
            Some(rows) => ApiError::MaxAffected(rows),
            None => ApiError::from_pg(e, identity.authenticated),
        })?;
    if media.plan.is_some() {
        return response::plan_response(&results, &media, head, profile);
    }
    let row = response::first_row(&results)?;
    let (rows, total) = response::page_counts(row, prefer.counts_exactly(), &media)?;
    let offset = read.offset.map_or(0, |o| o.unsigned_abs());
    let content = if returns_void(function) { Content::Nothing } else { Content::Result };
    let asked = Asked { media: &media, profile, prefer: &prefer, head };
    response::page(Page { row, offset, rows, total }, content, &asked, prefer.strict_max_affected())
}

/// The call's arguments: the query string's for GET, HEAD and OPTIONS (POST ignores them, as
/// PostgREST reads them only for GET and HEAD); for POST the body, raw for a `text/plain`,
/// `text/xml` or `application/octet-stream` one, else converted to JSON and checked (off the
/// shard when large).
async fn read_input(
    state: &RestService,
    req: &Request,
    post: bool,
    body: Body,
    query_args: Vec<(String, String)>,
) -> Result<Input, ApiError> {
    if !post {
        return Ok(Input::Query(group_args(query_args)?));
    }
    let max_body_bytes = state.config.max_body_bytes;
    if let Some(type_name) = raw_body_type(req) {
        let raw = body.collect(max_body_bytes).await.map_err(ApiError::Body)?;
        return Ok(Input::Raw { raw, type_name });
    }
    let format = body_format::check_content_type(req)?;
    let raw = body.collect(max_body_bytes).await.map_err(ApiError::Body)?;
    request::check_body(state, raw.len(), move || Input::from_body(format.to_json(raw)?)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{parse_read_query, ReadQuery};
    use crate::schema::introspect;

    /// Functions as the introspection query reports them:
    /// [schema, name, [[arg, type, mode]…], n_defaults, return type, ret schema, ret table, set, volatility, variadic].
    fn cache() -> SchemaCache {
        introspect::parse(
            r#"{"schemas":["public"],"relations":[[1,"public","todos","r",28]],"functions":[
              ["public","add",[["a","integer","i"],["b","integer","i"]],0,"integer",null,null,false,"i",false],
              ["public","add",[["a","integer","i"],["b","integer","i"],["c","integer","i"]],1,"integer",null,null,false,"i",false],
              ["public","amb",[["a","text","i"]],0,"text",null,null,false,"i",false],
              ["public","amb",[["a","integer","i"]],0,"integer",null,null,false,"i",false],
              ["public","poly",[["","text","i"]],1,"text",null,null,false,"i",false],
              ["public","poly",[],0,"integer",null,null,false,"i",false],
              ["public","named_json",[["doc","json","i"]],0,"integer",null,null,false,"i",false],
              ["public","todos_after",[["after","integer","i"]],0,"todos","public","todos",true,"s",false],
              ["public","echo",[["","jsonb","i"]],0,"jsonb",null,null,false,"i",false],
              ["public","total",[["v","integer[]","v"]],0,"integer",null,null,false,"i",true],
              ["public","nothing",[],0,"void",null,null,false,"v",false]
            ]}"#,
        )
        .unwrap()
    }

    fn body(json: &str) -> Input {
        Input::from_body(Bytes::copy_from_slice(json.as_bytes())).unwrap()
    }

    fn response_text(error: ApiError) -> (u16, String) {
        let response = error.into_response();
        let madbase_http::ResponseBody::Full(bytes) = response.body() else { panic!("not a full body") };
        (response.status(), String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[test]
    fn resolution_by_argument_names() {
        let cache = cache();
        // add(a, b) and add(a, b, c default): both take {a, b}, as in PostgREST (and PostgreSQL).
        let ambiguous = resolve(&cache, "public", "add", &body(r#"{"a":1,"b":2}"#)).unwrap_err();
        assert!(matches!(ambiguous, ApiError::AmbiguousFunction(ref c) if c.len() == 2));
        assert!(matches!(resolve(&cache, "public", "amb", &body("{}")), Err(ApiError::FunctionNotFound { .. })));
        let (f, call) = resolve(&cache, "public", "todos_after", &body(r#"{"after":1}"#)).unwrap();
        assert_eq!(f.name, "todos_after");
        assert!(matches!(call, Call::Named(ref a) if a.len() == 1));
        let (f, _) = resolve(&cache, "public", "add", &body(r#"{"a":1,"b":2,"c":3}"#)).unwrap();
        assert_eq!(f.args.len(), 3);
        let (f, call) = resolve(&cache, "public", "echo", &body(r#"{"anything":[1]}"#)).unwrap();
        assert_eq!((f.name.as_str(), call), ("echo", Call::Single { type_name: "jsonb" }));
        let (_, call) = resolve(&cache, "public", "nothing", &body("")).unwrap();
        assert_eq!(call, Call::NoArgs);
        // GET never falls back to the json parameter.
        let get = Input::Query(BTreeMap::from([("x".to_owned(), vec!["1".to_owned()])]));
        assert!(matches!(
            resolve(&cache, "public", "echo", &get),
            Err(ApiError::FunctionNotFound { searched: SingleParam::None, .. })
        ));
    }

    #[test]
    fn unnamed_parameters_are_named_empty() {
        let cache = cache();
        // The key "" names the unnamed parameter; it gets the whole payload positionally.
        let (f, call) = resolve(&cache, "public", "poly", &body(r#"{"":"x"}"#)).unwrap();
        assert_eq!((f.return_type.as_str(), call), ("text", Call::Single { type_name: "text" }));
        let (_, call) = resolve(&cache, "public", "poly", &body(r#"{"":true}"#)).unwrap();
        assert_eq!(call, Call::Single { type_name: "text" });
        let get = Input::Query(BTreeMap::from([(String::new(), vec!["x".to_owned()])]));
        let (f, call) = resolve(&cache, "public", "poly", &get).unwrap();
        assert_eq!(call, Call::Single { type_name: "text" });
        assert_eq!(&query_payload(f, &get_args(&get))[..], br#"{"":"x"}"#);
        // {} matches both () and the defaulted unnamed text: PGRST203, fewest parameters first.
        let (status, text) = response_text(resolve(&cache, "public", "poly", &body("{}")).unwrap_err());
        assert_eq!(status, 300);
        assert!(
            text.contains(r#""message":"Could not choose the best candidate function between: public.poly(), public.poly( => text)""#),
            "{text}"
        );
        let (_, call) = resolve(&cache, "public", "echo", &body(r#"{"":{"a":1}}"#)).unwrap();
        assert_eq!(call, Call::Single { type_name: "jsonb" });
        // A named json parameter is PostgREST's fallback too, called with the names given.
        let (f, call) = resolve(&cache, "public", "named_json", &body(r#"{"doc":{},"x":1}"#)).unwrap();
        assert!(matches!(call, Call::Named(ref a) if a.len() == 1 && a[0].name == "doc"), "{call:?}");
        assert_eq!(f.name, "named_json");
    }

    fn get_args(input: &Input) -> BTreeMap<String, Vec<String>> {
        match input {
            Input::Query(args) => args.clone(),
            Input::Body { .. } | Input::Raw { .. } => BTreeMap::new(),
        }
    }

    #[test]
    fn not_found_and_ambiguous_bodies() {
        let cache = cache();
        let (status, text) =
            response_text(resolve(&cache, "public", "add", &body(r#"{"b":1,"a":2,"x":3}"#)).unwrap_err());
        assert_eq!(status, 404);
        assert_eq!(
            text,
            r#"{"code":"PGRST202","details":"Searched for the function public.add with parameters a, b, x or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.","hint":"Perhaps you meant to call the function public.add(a, b, c)","message":"Could not find the function public.add(a, b, x) in the schema cache"}"#
        );
        let (_, text) = response_text(resolve(&cache, "public", "adds", &body("{}")).unwrap_err());
        assert_eq!(
            text,
            r#"{"code":"PGRST202","details":"Searched for the function public.adds without parameters or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.","hint":"Perhaps you meant to call the function public.add","message":"Could not find the function public.adds without parameters in the schema cache"}"#
        );
        // The suite's empty-named argument: a double space, and `()`.
        let (_, text) = response_text(resolve(&cache, "public", "zzzzzz", &body(r#"{"":1}"#)).unwrap_err());
        assert!(
            text.contains(r#""details":"Searched for the function public.zzzzzz with parameter  or with"#),
            "{text}"
        );
        assert!(text.contains(r#""hint":null"#) && text.contains("public.zzzzzz() in the schema cache"), "{text}");
        let get = Input::Query(BTreeMap::from([("a".to_owned(), vec!["1".to_owned()])]));
        let (_, text) = response_text(resolve(&cache, "public", "todos_after", &get).unwrap_err());
        assert!(text.contains("with parameter a, but no matches"), "{text}");
        let (status, text) = response_text(resolve(&cache, "public", "amb", &body(r#"{"a":1}"#)).unwrap_err());
        assert_eq!(status, 300);
        assert_eq!(
            text,
            r#"{"code":"PGRST203","details":null,"hint":"Try renaming the parameters or the function itself in the database so function overloading can be resolved","message":"Could not choose the best candidate function between: public.amb(a => integer), public.amb(a => text)"}"#
        );
    }

    #[test]
    fn query_string_split() {
        let (args, rest) = split_query(
            "a=1&select=id&id=gt.2&b=x%20y&order=id.desc&limit=3&c.d=1&e=not.eq.1&f=in.(1)&g=fts(english).x&h=&i",
        )
        .unwrap();
        assert_eq!(args, [("a".into(), "1".into()), ("b".into(), "x y".into()), ("h".into(), "".into())]);
        assert_eq!(rest, "select=id&id=gt.2&order=id.desc&limit=3&c.d=1&e=not.eq.1&f=in.(1)&g=fts(english).x&i");
        assert!(is_argument("x", "notes") && is_argument("x", "isotope") && is_argument("x", "{1,2}"));
        assert!(!is_argument("x", "is.null") && !is_argument("x", "eq"));
        let many: Vec<String> = (0..=MAX_ARG_VALUES).map(|i| format!("v={i}")).collect();
        assert!(split_query(&many.join("&")).is_err());
    }

    fn stmt(
        cache: &SchemaCache,
        f: &Function,
        call: &Call<'_>,
        payload: Option<Bytes>,
        read: &ReadQuery,
        media: Option<&Media>,
        exact_count: bool,
    ) -> Statement {
        let plan = plan::plan(cache, "public", QualifiedName::new("public", &f.name), read).unwrap();
        call_statement(cache, f, call, payload, &plan, media, exact_count, None)
    }

    #[test]
    fn statement_shapes() {
        let cache = cache();
        let read = parse_read_query("select=id,task&id=gt.1&order=id.desc&limit=5").unwrap();
        let (f, call) = resolve(&cache, "public", "todos_after", &body(r#"{"after":1}"#)).unwrap();
        let s = stmt(&cache, f, &call, Some(Bytes::from_static(br#"{"after":1}"#)), &read, Some(&Media::JSON), false);
        assert_eq!(
            s.sql,
            "WITH pgrst_source AS (SELECT pgrst_call.* FROM (SELECT * FROM pg_catalog.json_to_recordset($1::json) AS pgrst_args(\"after\" integer) LIMIT 1) AS pgrst_body, \
             LATERAL \"public\".\"todos_after\"(\"after\" := pgrst_body.\"after\") pgrst_call) \
             SELECT pg_catalog.count(_postgrest_t) AS page_total, coalesce(pg_catalog.json_agg(_postgrest_t), '[]') AS body, \
             NULLIF(pg_catalog.current_setting('response.headers', true), '') AS pgrst_response_headers, \
             NULLIF(pg_catalog.current_setting('response.status', true), '') AS pgrst_response_status \
             FROM (SELECT \"todos_after\".\"id\", \"todos_after\".\"task\" FROM pgrst_source AS \"todos_after\" \
             WHERE \"todos_after\".\"id\" > $2 ORDER BY \"todos_after\".\"id\" DESC LIMIT $3) _postgrest_t"
        );
        let params: Vec<&[u8]> = s.params.iter().map(|p| p.as_deref().unwrap()).collect();
        assert_eq!(params, [&br#"{"after":1}"#[..], b"1", b"5"]);

        let (f, call) = resolve(&cache, "public", "total", &body(r#"{"v":[1,2]}"#)).unwrap();
        let s = stmt(&cache, f, &call, None, &ReadQuery::default(), Some(&Media::JSON), false);
        assert!(
            s.sql.contains("LATERAL \"public\".\"total\"(VARIADIC \"v\" := pgrst_body.\"v\") pgrst_call"),
            "{}",
            s.sql
        );
        assert!(s.sql.contains("(pg_catalog.json_agg(_postgrest_t.pgrst_scalar)->0)::text, 'null')"), "{}", s.sql);
        // Logic trees filter a scalar result as they filter rows (and its exact count).
        let trees = parse_read_query("or=(pgrst_scalar.eq.1,pgrst_scalar.eq.3)").unwrap();
        let s = stmt(&cache, f, &call, None, &trees, Some(&Media::JSON), true);
        assert_eq!(s.sql.matches(" OR ").count(), 2, "page and count: {}", s.sql);

        let (f, call) = resolve(&cache, "public", "echo", &body("[1]")).unwrap();
        let s = stmt(&cache, f, &call, Some(Bytes::from_static(b"[1]")), &ReadQuery::default(), None, false);
        assert!(s.sql.starts_with("WITH pgrst_source AS (SELECT pgrst_call AS pgrst_scalar FROM \"public\".\"echo\"($1::jsonb) pgrst_call)"), "{}", s.sql);
        assert!(s.sql.contains("NULL AS body"), "HEAD skips the body");

        let (f, call) = resolve(&cache, "public", "nothing", &body("{}")).unwrap();
        let s = stmt(&cache, f, &call, None, &ReadQuery::default(), Some(&Media::JSON), false);
        assert!(
            s.sql.contains("FROM \"public\".\"nothing\"() pgrst_call)") && s.sql.contains("NULL AS body"),
            "{}",
            s.sql
        );
        assert!(s.params.is_empty());
    }

    #[test]
    fn exact_count_counts_the_filtered_result_without_limit() {
        let cache = cache();
        let read = parse_read_query("select=id&id=gt.1&limit=5&offset=2").unwrap();
        let (f, call) = resolve(&cache, "public", "todos_after", &body(r#"{"after":1}"#)).unwrap();
        let s = stmt(&cache, f, &call, Some(Bytes::from_static(br#"{"after":1}"#)), &read, Some(&Media::JSON), true);
        assert!(
            s.sql.ends_with(
                "AS body, (SELECT pg_catalog.count(*) FROM pgrst_source AS \"todos_after\" \
                 WHERE \"todos_after\".\"id\" > $5) AS total_result_set, \
                 NULLIF(pg_catalog.current_setting('response.headers', true), '') AS pgrst_response_headers, \
                 NULLIF(pg_catalog.current_setting('response.status', true), '') AS pgrst_response_status \
                 FROM (SELECT \"todos_after\".\"id\" FROM pgrst_source AS \"todos_after\" \
                 WHERE \"todos_after\".\"id\" > $2 LIMIT $3 OFFSET $4) _postgrest_t"
            ),
            "{}",
            s.sql
        );
        assert_eq!(s.params.len(), 5);
        let s = stmt(&cache, f, &call, None, &ReadQuery::default(), None, true);
        assert!(s
            .sql
            .contains("(SELECT pg_catalog.count(*) FROM pgrst_source AS \"todos_after\") AS total_result_set"));
        // `max-affected`: a check column after the total, its limit and marker bound last.
        let everything = ReadQuery::default();
        let plan = plan::plan(&cache, "public", QualifiedName::new("public", &f.name), &everything).unwrap();
        let s = call_statement(&cache, f, &call, None, &plan, None, true, Some(3));
        assert!(
            s.sql.contains(
                "AS total_result_set, CASE WHEN pg_catalog.count(_postgrest_t) > $2::bigint \
                 THEN ($3::text || pg_catalog.count(_postgrest_t))::integer END AS max_affected, NULLIF("
            ),
            "{}",
            s.sql
        );
        assert_eq!(s.params[1].as_deref(), Some(&b"3"[..]), "after the body");
    }

    #[test]
    fn get_payload_and_variadics() {
        let cache = cache();
        let args = BTreeMap::from([("v".to_owned(), vec!["1".to_owned(), "2".to_owned()])]);
        let f = &cache.functions("public", "total")[0];
        assert_eq!(&query_payload(f, &args)[..], br#"{"v":["1","2"]}"#);
        let args = BTreeMap::from([("after".to_owned(), vec!["1".to_owned(), "\"; drop".to_owned()])]);
        let f = &cache.functions("public", "todos_after")[0];
        assert_eq!(&query_payload(f, &args)[..], br#"{"after":"\"; drop"}"#, "last value wins");
    }
}
