//! Writes on `/rest/v1/<table>`: `POST` (insert, bulk insert, upsert), `PUT` (single-row
//! upsert), `PATCH` (update) and `DELETE`, as PostgREST answers them (reference/rest.md §6, §8).
//!
//! Owns: the write-only query parameters (`columns`, `on_conflict`), the
//! JSON body checks, the one write statement and the write responses (`Content-Range`,
//! `Location`, `Preference-Applied`, 201/200/204).
//!
//! Invariants:
//! - **one write = one statement = one round trip, atomic.** The mutation is a data-modifying CTE
//!   (`WITH pgrst_source AS (INSERT|UPDATE|DELETE … RETURNING …)`) and the outer `SELECT`
//!   ([`super::statement::outer_select`]) builds the whole response inside PostgreSQL (and reads
//!   the response GUCs). It runs in the batch's implicit READ WRITE transaction after the same
//!   request settings as reads ([`super::request::request_batch`]); any error — a bad row of
//!   a bulk insert, a constraint, RLS, or a row-limit check — rolls back everything.
//! - **Row limits fail inside the transaction.** With `handling=strict, max-affected=N`, or with
//!   `Accept: application/vnd.pgrst.object+json` (exactly one row), the outer `SELECT` raises (a
//!   cast of a marker text that can never be an integer, [`super::statement::row_limit_check`]) when the count breaks the rule, so nothing
//!   is committed; the marker carries a per-process nonce, so only this check maps to PGRST124 or
//!   PGRST116.
//! - **nothing from the request is interpolated.** The JSON body is ONE bound parameter
//!   (`$1::json`) that PostgreSQL turns into rows with `json_populate_recordset(NULL::table, $1)`
//!   — the table's own row type does every conversion; the body's bytes are sent as received
//!   (an object wrapped in `[` `]`), never re-serialised. Identifiers (table, payload keys,
//!   `columns=`, `on_conflict=`, `select=`, filter columns) go through [`quote_ident`]; filter
//!   values, the limit, the marker and the relation name for the `Location` lookup are bound.
//! - **bounded.** The body is read with `[http] max_body_bytes`; at most [`payload::MAX_BULK_ROWS`] rows per
//!   insert and [`MAX_COLUMNS`] columns; names as long as the read grammar allows.
//! - no `unwrap`/`expect` on request input.
//!
//! From the request's schema cache snapshot: unknown payload/`columns=` names → 400 PGRST204
//! before any SQL; the primary key as the upsert target when `on_conflict` is absent (no key: a
//! plain insert) and for `PUT`; column DEFAULT expressions for `missing=default` (PostgREST's
//! `jsonb_build_object(<column>, <default>, …) || row` for every row, so a row's own keys win
//! and, as in PostgREST, each default — a sequence's `nextval` too — is evaluated once per row).
//! The table is in the request's schema (`Content-Profile`). A merge upsert on a table returns
//! `(xmax = 0) AS pgrst_inserted` to tell 201 (some row inserted) from 200.
//!
//! Not here yet: `Location` for views, 200-vs-201 for merge upserts through views (always 201).

use std::collections::HashSet;
use std::fmt::Write as _;

use bytes::Bytes;
use madbase_core::identity::Identity;
use madbase_http::{Body, Request, Response};
use madbase_pg::{Row, Statement};

use super::body_format;
use super::error::ApiError;
use super::media::{self, Media, Rows};
use super::payload::{self, MAX_BULK_ROWS};
use super::plan::{self, ReadPlan};
use super::prefer::{Prefer, Resolution, Return};
use super::query::{self, CompareOp, Filter, FilterOp, IsValue, QueryError, ReadQuery, MAX_IDENT_BYTES};
use super::range::content_range;
use super::request::{self, Profile};
use super::response;
use super::sql::{self, push_where, push_where_trees, quote_ident};
use super::statement::{outer_select, row_limit_broken, row_limit_check, Params};
use crate::schema::relationships::QualifiedName;
use crate::schema::{Relation, RelationKind, SchemaCache};
use crate::RestService;

/// At most this many columns in a payload or `columns=` (PostgreSQL's own limit per table is 1600).
pub const MAX_COLUMNS: usize = 1_600;

/// What kind of write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Post,
    /// Single-row upsert by the whole primary key.
    Put,
    Patch,
    Delete,
}

/// The write-only query parameters; everything else goes through the read grammar.
#[derive(Debug, Default)]
pub(super) struct WriteParams {
    pub(super) columns: Option<Vec<String>>,
    pub(super) on_conflict: Option<Vec<String>>,
}

fn parse_write_params(query: &str) -> Result<WriteParams, ApiError> {
    let mut params = WriteParams::default();
    for pair in query.split('&') {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = query::percent_decode(raw_key, true)?;
        let slot = match key.as_str() {
            "columns" => &mut params.columns,
            "on_conflict" => &mut params.on_conflict,
            _ => continue,
        };
        let value = query::percent_decode(raw_value, true)?;
        if value.is_empty() {
            continue;
        }
        if slot.is_some() {
            return Err(QueryError::Duplicate(if key == "columns" { "columns" } else { "on_conflict" }).into());
        }
        let what = if key == "columns" { "columns parameter" } else { "on_conflict parameter" };
        *slot = Some(parse_column_list(what, &value)?);
    }
    Ok(params)
}

/// `a,b,"c d","e\"f"`: column names, unquoted (letters, digits, `_`, `$`, space, `-`) or
/// double-quoted with `\"` and `\\` escapes.
fn parse_column_list(what: &'static str, value: &str) -> Result<Vec<String>, QueryError> {
    let fail = |column: usize, details: &str| QueryError::Parse {
        what,
        input: value.to_owned(),
        column,
        details: details.to_owned(),
    };
    let mut names = Vec::new();
    let mut chars = value.chars().enumerate().peekable();
    loop {
        let start = chars.peek().map_or(value.chars().count() + 1, |(i, _)| i + 1);
        let mut name = String::new();
        if chars.peek().is_some_and(|(_, c)| *c == '"') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(fail(value.chars().count() + 1, "unexpected end of input expecting closing quote"))
                    }
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => name.push(c),
                        None => return Err(fail(value.chars().count() + 1, "unexpected end of input after \"\\\"")),
                    },
                    Some((_, c)) => name.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.peek() {
                if c.is_alphanumeric() || matches!(c, '_' | '$' | ' ' | '-') {
                    name.push(*c);
                    chars.next();
                } else {
                    break;
                }
            }
        }
        if name.is_empty() {
            return Err(fail(start, "unexpected character expecting column name"));
        }
        if name.contains('\0') || name.len() > MAX_IDENT_BYTES {
            return Err(fail(start, "column names cannot contain NUL and are limited in length"));
        }
        if names.len() == MAX_COLUMNS {
            return Err(QueryError::TooMany { what: "columns", max: MAX_COLUMNS });
        }
        names.push(name);
        match chars.next() {
            None => return Ok(names),
            Some((_, ',')) => {}
            Some((i, _)) => return Err(fail(i + 1, "unexpected character expecting \",\" or end of input")),
        }
    }
}

/// The JSON body, checked: the bytes to bind (always a JSON array of objects) and the columns.
#[derive(Debug)]
pub(super) struct Payload {
    /// A JSON array of objects, exactly the client's bytes (an object is wrapped in `[` `]`).
    json: Bytes,
    /// The columns to write, in order.
    columns: Vec<String>,
}

/// Checks the body as PostgREST does; `columns` is `columns=` when given.
pub(super) fn parse_payload(raw: Bytes, columns: Option<Vec<String>>) -> Result<Payload, ApiError> {
    let shape =
        payload::scan(&raw, columns, MAX_BULK_ROWS, MAX_COLUMNS).map_err(|e| ApiError::InvalidBody(e.to_string()))?;
    if shape.columns.iter().any(|k| k.is_empty() || k.contains('\0') || k.len() > MAX_IDENT_BYTES) {
        return Err(ApiError::InvalidBody(format!(
            "Column names must be non-empty, without NUL, at most {MAX_IDENT_BYTES} bytes"
        )));
    }
    let json = if shape.single { payload::one_row_array(&raw) } else { raw };
    Ok(Payload { json, columns: shape.columns })
}

/// 400 PGRST204 for the first name (in sorted order, as PostgREST's key set) that is not a
/// column of `rel`.
fn check_columns(rel: &Relation, columns: &[String]) -> Result<(), ApiError> {
    let known: HashSet<&str> = rel.columns.iter().map(|c| c.name.as_str()).collect();
    match columns.iter().filter(|c| !known.contains(c.as_str())).min() {
        None => Ok(()),
        Some(column) => Err(ApiError::ColumnNotFound { column: column.clone(), relation: rel.name.clone() }),
    }
}

/// The columns of `columns` that have a DEFAULT (generated columns excluded), with its expression.
fn defaults_of<'a>(rel: &'a Relation, columns: &[String]) -> Vec<(&'a str, &'a str)> {
    rel.columns
        .iter()
        .filter(|c| !c.generated && columns.contains(&c.name))
        .filter_map(|c| Some((c.name.as_str(), c.default.as_deref()?)))
        .collect()
}

/// PUT's filters must be exactly `eq` on every primary-key column (405 PGRST105 otherwise).
fn check_put_filters(rel: &Relation, read: &ReadQuery) -> Result<(), ApiError> {
    let eq_only = read.filters.iter().all(|f| !f.negated && matches!(f.op, FilterOp::Compare(CompareOp::Eq, _)));
    let mut named: Vec<&str> = read.filters.iter().map(|f| f.column.as_str()).collect();
    named.sort_unstable();
    named.dedup();
    let mut key: Vec<&str> = rel.primary_key.iter().map(String::as_str).collect();
    key.sort_unstable();
    if key.is_empty() || !read.trees.is_empty() || !eq_only || named != key {
        return Err(ApiError::PutFilters);
    }
    Ok(())
}

/// The write to build SQL for.
#[derive(Debug)]
enum Mutation<'a> {
    /// `inserted`: count the rows the statement inserted (rather than updated) — a merge upsert,
    /// whose status is 200 when it inserted none. Holds every column of the table in order: the
    /// extra `pgrst_inserted` column of `pgrst_source` is then kept out of `select=*`.
    /// `put`: the query's filters (`eq` on every primary-key column) select the body row, so a
    /// body whose key differs from the URL's writes nothing (PostgREST's PUT).
    Insert {
        columns: &'a [String],
        conflict: Option<(&'a [String], Resolution)>,
        inserted: Option<&'a [String]>,
        put: bool,
    },
    Update {
        columns: &'a [String],
    },
    Delete,
}

/// Builds the one statement of a write (see the module doc for the shape).
///
/// Columns of the result: `page_total` (rows written), `body` (JSON array with
/// `return=representation`, else NULL), `location` (JSON `[[key, value-or-null], …]` of the
/// primary key of the single inserted row with `return=headers-only`, else NULL),
/// `max_affected` (NULL; raises instead when `limits` are broken, see [`RowLimits`]), `inserted`,
/// then the response GUCs ([`super::statement::RESPONSE_GUC_COLUMNS`]). Values are bound in the
/// order the parts are built: body, filters, representation, location, row limits.
#[allow(clippy::too_many_arguments)] // each is one independent part of the statement
fn write_statement(
    cache: &SchemaCache,
    schema: &str,
    relation: &str,
    mutation: &Mutation<'_>,
    read: &ReadQuery,
    representation: &ReadPlan<'_>,
    ret: Return,
    media: &Media,
    payload: Option<Source<'_>>,
    limits: RowLimits,
) -> Statement {
    let mut params = Params::default();
    let table = format!("{}.{}", quote_ident(schema), quote_ident(relation));
    let inserted = match mutation {
        Mutation::Insert { inserted: Some(columns), .. } => Some(*columns),
        _ => None,
    };
    let recordset = recordset(&table, mutation, payload, &mut params);
    let returning = returning(&table, ret, inserted.is_some());
    let source = mutation_sql(&table, mutation, &recordset, &returning, read, &mut params);
    let (page, body) = match ret {
        Return::Representation => representation_page(cache, relation, representation, media, inserted, &mut params),
        Return::Minimal | Return::HeadersOnly => ("SELECT * FROM pgrst_source".to_owned(), "NULL".to_owned()),
    };
    let location = match (ret, mutation) {
        (Return::HeadersOnly, Mutation::Insert { .. }) => location_column(&table, &mut params),
        _ => "NULL".to_owned(),
    };
    let check = row_limit_check(limits.singular || limits.exactly_one, limits.max_affected, &mut params);
    let check = check.unwrap_or_else(|| "NULL".to_owned());
    let inserted = if inserted.is_some() {
        "(SELECT pg_catalog.count(*) FROM pgrst_source WHERE pgrst_source.pgrst_inserted)"
    } else {
        "NULL"
    };
    let columns = format!(", {location} AS location, {check} AS max_affected, {inserted} AS inserted");
    params.statement(outer_select(Some(&source), &body, &columns, &page))
}

/// ` RETURNING …` of the mutation: the whole row when the response shows rows or a `Location`,
/// and whether each row was inserted when a merge upsert must tell.
fn returning(table: &str, ret: Return, inserted: bool) -> String {
    let mut returning = match ret {
        Return::Minimal => " RETURNING 1".to_owned(),
        Return::HeadersOnly | Return::Representation => format!(" RETURNING {table}.*"),
    };
    if inserted {
        // `xmax` is 0 on a row version this statement inserted, the updater's xid on one that
        // `ON CONFLICT DO UPDATE` rewrote.
        let _ = write!(returning, ", ({table}.xmax = 0) AS pgrst_inserted");
    }
    returning
}

/// The rows of the body as the table's row type (`json_populate_recordset`), binding the body
/// (and, with `missing=default`, the names of the defaulted columns).
fn recordset(table: &str, mutation: &Mutation<'_>, payload: Option<Source<'_>>, params: &mut Params) -> String {
    match payload {
        // An update of no columns selects no rows (see `mutation_sql`) and must bind no body:
        // PostgreSQL refuses a Bind with more values than the statement has parameters.
        _ if matches!(mutation, Mutation::Update { columns: [] }) => String::new(),
        None => format!("pg_catalog.json_populate_recordset(NULL::{table}, NULL::json)"),
        Some(Source { json, defaults }) if defaults.is_empty() => {
            let p = params.bind(json);
            format!("pg_catalog.json_populate_recordset(NULL::{table}, {p}::json)")
        }
        Some(Source { json, defaults }) => {
            // `missing=default`, as PostgREST builds it: every row becomes
            // `jsonb_build_object(<column>, <default>, …) || row`, so a key the row has wins and a
            // missing one takes the default's value before the table's row type converts it
            // (DEFAULT itself cannot appear in an expression). The expressions are the catalog's
            // (schema cache), never the request's; like PostgREST's, they run for every row.
            let p = params.bind(json);
            let mut row = String::from("pg_catalog.jsonb_build_object(");
            for (i, (column, default)) in defaults.iter().enumerate() {
                if i > 0 {
                    row.push_str(", ");
                }
                let key = params.bind(column.to_string());
                let _ = write!(row, "{key}::text, {default}");
            }
            row.push_str(") || pgrst_elem.value");
            format!(
                "pg_catalog.json_populate_recordset(NULL::{table}, (SELECT coalesce(pg_catalog.json_agg({row} \
                 ORDER BY pgrst_elem.n), '[]') FROM pg_catalog.jsonb_array_elements({p}::jsonb) \
                 WITH ORDINALITY AS pgrst_elem(value, n)))"
            )
        }
    }
}

/// The data-modifying statement of the `pgrst_source` CTE, filter values bound.
fn mutation_sql(
    table: &str,
    mutation: &Mutation<'_>,
    recordset: &str,
    returning: &str,
    read: &ReadQuery,
    params: &mut Params,
) -> String {
    let mut m = String::new();
    match mutation {
        Mutation::Insert { columns, conflict, put, .. } => {
            push_insert(&mut m, table, columns, recordset, *put, read, params);
            if let Some((target, resolution)) = conflict {
                push_on_conflict(&mut m, target, *resolution, columns);
            }
        }
        Mutation::Update { columns: [] } => {
            // `SET` with nothing is not SQL; PostgREST selects no rows instead.
            let _ = write!(m, "SELECT {table}.* FROM {table} WHERE false");
            return m;
        }
        Mutation::Update { columns } => {
            let _ = write!(m, "UPDATE {table} SET ");
            push_list(&mut m, columns, |out, c| {
                let c = quote_ident(c);
                let _ = write!(out, "{c} = pgrst_body.{c}");
            });
            let _ = write!(m, " FROM (SELECT * FROM {recordset} LIMIT 1) AS pgrst_body");
            push_where_trees(&mut m, table, &read.filters, &read.trees, &mut |v| params.bind(v));
        }
        Mutation::Delete => {
            let _ = write!(m, "DELETE FROM {table}");
            push_where_trees(&mut m, table, &read.filters, &read.trees, &mut |v| params.bind(v));
        }
    }
    m.push_str(returning);
    m
}

/// `INSERT INTO table(cols) SELECT pgrst_body.cols FROM <recordset> AS pgrst_body`, for `put`
/// only the body row the URL's key filters select.
fn push_insert(
    m: &mut String,
    table: &str,
    columns: &[String],
    recordset: &str,
    put: bool,
    read: &ReadQuery,
    params: &mut Params,
) {
    let _ = write!(m, "INSERT INTO {table}");
    if !columns.is_empty() {
        m.push('(');
        push_list(m, columns, |out, c| out.push_str(&quote_ident(c)));
        m.push(')');
    }
    m.push_str(" SELECT ");
    push_list(m, columns, |out, c| {
        let _ = write!(out, "pgrst_body.{}", quote_ident(c));
    });
    let _ = write!(m, " FROM {recordset} AS pgrst_body");
    if put {
        push_where(m, "pgrst_body", &read.filters, &mut |v| params.bind(v));
    }
}

/// ` ON CONFLICT (target) DO UPDATE SET …` (merge) or ` DO NOTHING` (ignore, or nothing to set).
fn push_on_conflict(m: &mut String, target: &[String], resolution: Resolution, columns: &[String]) {
    m.push_str(" ON CONFLICT (");
    push_list(m, target, |out, c| out.push_str(&quote_ident(c)));
    m.push(')');
    if resolution == Resolution::MergeDuplicates && !columns.is_empty() {
        m.push_str(" DO UPDATE SET ");
        push_list(m, columns, |out, c| {
            let c = quote_ident(c);
            let _ = write!(out, "{c} = EXCLUDED.{c}");
        });
    } else {
        m.push_str(" DO NOTHING");
    }
}

/// `return=representation`: the page of written rows shaped by `select` (with its embeds), and
/// the body built from it by `media`. `inserted` names the table's columns for `*`, which would
/// otherwise show `pgrst_inserted`.
fn representation_page(
    cache: &SchemaCache,
    relation: &str,
    representation: &ReadPlan<'_>,
    media: &Media,
    inserted: Option<&[String]>,
    params: &mut Params,
) -> (String, String) {
    // Aliased as the table, so errors name it as reads do (`column todos.x does not exist`).
    let alias = quote_ident(relation);
    let from = format!("pgrst_source AS {alias}");
    let mut page = String::new();
    let source = sql::Source { from: &from, qualifier: &alias, row: &alias };
    let mut bind = |v: String| params.bind(v);
    sql::Builder::new(cache, &mut bind).push_level(&mut page, representation, source, &[], inserted);
    // CSV's header: the selected columns (PostgREST returns only those from the mutation).
    let body = media.body_sql_from(Rows::Records, &format!("({page})"));
    (page, body)
}

/// `return=headers-only` on an insert: the primary key of the single inserted row, as
/// `[[key, value-or-null], …]`, for `Location` (the relation name is bound, cast to `regclass`).
fn location_column(table: &str, params: &mut Params) -> String {
    let relation_param = params.bind(table.to_owned());
    format!(
        "CASE WHEN pg_catalog.count(_postgrest_t) = 1 THEN (\
         SELECT pg_catalog.json_agg(pg_catalog.json_build_array(j.key, j.value) ORDER BY j.n) \
         FROM (SELECT pg_catalog.row_to_json(pgrst_row) AS r FROM pgrst_source AS pgrst_row LIMIT 1) AS d \
         CROSS JOIN LATERAL pg_catalog.json_each_text(d.r) WITH ORDINALITY AS j(key, value, n) \
         WHERE j.key IN (SELECT a.attname::text FROM pg_catalog.pg_index AS i \
         JOIN pg_catalog.pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
         WHERE i.indrelid = {relation_param}::regclass AND i.indisprimary)) END"
    )
}

/// The body to bind and, with `missing=default`, the listed columns that have a DEFAULT with its
/// expression (from the schema cache).
#[derive(Debug)]
struct Source<'a> {
    json: Bytes,
    defaults: Vec<(&'a str, &'a str)>,
}

/// Row-count rules a write must meet, checked inside its statement so that breaking one raises
/// and the implicit transaction rolls back (nothing is written).
#[derive(Debug, Clone, Copy, Default)]
struct RowLimits {
    /// `Prefer: handling=strict, max-affected=N`: at most N rows.
    max_affected: Option<u64>,
    /// `Accept: application/vnd.pgrst.object+json`: exactly one row (the body is that object).
    singular: bool,
    /// `PUT`: exactly one row, else the body's key did not match the URL's (PGRST115).
    exactly_one: bool,
}

fn push_list(out: &mut String, items: &[String], mut each: impl FnMut(&mut String, &str)) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        each(out, item);
    }
}
/// Percent-encodes all but RFC 3986 unreserved characters (for the `Location` query).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// `Location: /<table>?pk=eq.v&…` from the `location` column (`[[key, value-or-null], …]`).
fn location(pgrst_path: &str, cell: Option<&Bytes>) -> Option<String> {
    let pairs: Vec<(String, Option<String>)> = serde_json::from_slice(cell?).ok()?;
    if pairs.is_empty() {
        return None;
    }
    let query: Vec<String> = pairs
        .iter()
        .map(|(key, value)| match value {
            Some(v) => format!("{}=eq.{}", url_encode(key), url_encode(v)),
            None => format!("{}=is.null", url_encode(key)),
        })
        .collect();
    Some(format!("{pgrst_path}?{}", query.join("&")))
}

/// The query string of a write: its own parameters (`columns`, `on_conflict`) and the read
/// grammar. `embed=is.null` filters a read by an embed's rows; a write has no embeds to join, so
/// it is a filter on a column of that name, as in PostgREST (PostgreSQL refuses an unknown
/// column): never a filter that silently disappears from the WHERE of an UPDATE or DELETE.
pub(super) fn parse_write_query(query_string: &str) -> Result<(WriteParams, ReadQuery), ApiError> {
    let params = parse_write_params(query_string)?;
    let mut read = query::parse_read_query(query_string)?;
    for (column, keep_present) in std::mem::take(&mut read.null_embeds) {
        let op = FilterOp::Is(if keep_present { IsValue::NotNull } else { IsValue::Null });
        read.filters.push(Filter { column, path: Vec::new(), negated: false, op });
    }
    Ok((params, read))
}

/// The conflict target: for a POST with `resolution`, `on_conflict`, else the primary key (a
/// table with neither gets a plain insert and `resolution` is not applied: PostgREST's rule);
/// for a PUT, the whole primary key, merging.
pub(super) fn conflict_target<'a>(
    method: Method,
    prefer: &Prefer,
    on_conflict: Option<&'a [String]>,
    rel: &'a Relation,
) -> Option<(&'a [String], Resolution)> {
    match (method, prefer.resolution, on_conflict) {
        (Method::Post, Some(resolution), Some(target)) => Some((target, resolution)),
        (Method::Post, Some(resolution), None) if !rel.primary_key.is_empty() => {
            Some((rel.primary_key.as_slice(), resolution))
        }
        (Method::Put, _, _) => Some((rel.primary_key.as_slice(), Resolution::MergeDuplicates)),
        _ => None,
    }
}

/// `max-affected` applies to PATCH and DELETE, and only with `handling=strict`.
fn max_affected(method: Method, prefer: &Prefer) -> Option<u64> {
    prefer.strict_max_affected().filter(|_| matches!(method, Method::Patch | Method::Delete))
}

/// What the one statement of a write is built from, once the handler's checks passed and the
/// body (if any) was read and checked. The handler and the injection property
/// (`rest::injection`) both build through [`WriteInput::statement`].
pub(super) struct WriteInput<'a> {
    pub(super) cache: &'a SchemaCache,
    /// The profile's schema and the relation written, as the URL names it.
    pub(super) schema: &'a str,
    pub(super) relation: &'a str,
    pub(super) rel: &'a Relation,
    pub(super) method: Method,
    pub(super) read: &'a ReadQuery,
    pub(super) conflict: Option<(&'a [String], Resolution)>,
    pub(super) prefer: &'a Prefer,
    pub(super) media: &'a Media,
    pub(super) payload: Option<&'a Payload>,
}

impl WriteInput<'_> {
    /// The statement ([`write_statement`]), wrapped in `EXPLAIN` when a plan is asked for.
    pub(super) fn statement(&self) -> Result<Statement, ApiError> {
        let (method, rel, prefer) = (self.method, self.rel, self.prefer);
        let missing_default = prefer.missing_default == Some(true) && matches!(method, Method::Post | Method::Patch);
        let source = self.payload.map(|p| Source {
            json: p.json.clone(),
            defaults: if missing_default { defaults_of(rel, &p.columns) } else { Vec::new() },
        });
        let columns = self.payload.map_or(&[][..], |p| p.columns.as_slice());
        // A merge upsert answers 200 when it inserted no row; telling needs `xmax`, which only a
        // table's rows have (a merge upsert through a view always answers 201).
        let all_columns: Vec<String>;
        let inserted = match (self.conflict, rel.kind) {
            (Some((_, Resolution::MergeDuplicates)), RelationKind::Table | RelationKind::PartitionedTable) => {
                all_columns = rel.columns.iter().map(|c| c.name.clone()).collect();
                Some(all_columns.as_slice())
            }
            _ => None,
        };
        let mutation = match method {
            Method::Post | Method::Put => {
                Mutation::Insert { columns, conflict: self.conflict, inserted, put: method == Method::Put }
            }
            Method::Patch => Mutation::Update { columns },
            Method::Delete => Mutation::Delete,
        };
        // The representation shows the written rows: `select` (with its embeds), not the filters.
        let shaped = ReadQuery { select: self.read.select.clone(), ..ReadQuery::default() };
        let target = QualifiedName::new(self.schema, self.relation);
        let representation = plan::plan(self.cache, self.schema, target, &shaped)?;
        let mut statement = write_statement(
            self.cache,
            self.schema,
            self.relation,
            &mutation,
            self.read,
            &representation,
            prefer.ret.unwrap_or(Return::Minimal),
            self.media,
            source,
            RowLimits {
                max_affected: max_affected(method, prefer),
                singular: self.media.is_singular() && method != Method::Put,
                exactly_one: method == Method::Put,
            },
        );
        if let Some(explain) = &self.media.plan {
            // Without `analyze` nothing runs; with it the write runs (and commits unless
            // `Prefer: tx=rollback`), as in PostgREST.
            statement.sql = explain.wrap(&statement.sql);
        }
        Ok(statement)
    }
}

/// Serves `POST`, `PUT`, `PATCH` and `DELETE` on `/rest/v1/<relation>`; `pgrst_path` is the path
/// PostgREST would see (`request.path`, and the base of `Location`).
pub(super) async fn serve(
    state: &RestService,
    req: &Request,
    method: Method,
    identity: Identity,
    body: Body,
    relation: &str,
    pgrst_path: &str,
) -> Result<Response, ApiError> {
    let profile = request::profile(req, &state.config)?;
    // The snapshot this request uses to its end (plan setting, columns, defaults, primary key).
    let schema = state.schema();
    let media = media::negotiate(req, request::plan_enabled(state, &schema))?;
    let prefer = Prefer::checked(req)?;
    let (params, read) = parse_write_query(req.query().unwrap_or(""))?;
    check_write_query(method, &read)?;
    // An unknown relation is PGRST205 from the schema cache, as for reads; it never reaches SQL.
    let rel = super::relation::find(&schema, profile.schema, relation)?;
    if method == Method::Put {
        check_put_filters(rel, &read)?;
    }
    let conflict = conflict_target(method, &prefer, params.on_conflict.as_deref(), rel);
    let payload = read_payload(state, req, method, body, params.columns).await?;
    if let Some(payload) = &payload {
        // Every written column must exist: 400 PGRST204 before any SQL runs.
        check_columns(rel, &payload.columns)?;
    }
    let statement = WriteInput {
        cache: &schema,
        schema: profile.schema,
        relation,
        rel,
        method,
        read: &read,
        conflict,
        prefer: &prefer,
        media: &media,
        payload: payload.as_ref(),
    }
    .statement()?;
    let end = prefer.tx_end();
    let results = request::request_batch(state, &schema, req, &identity, profile, pgrst_path, &prefer)
        .with(|batch| batch.statement(statement).read_only(false).end(end))
        .run(state)
        .await
        .map_err(|e| match row_limit_broken(&e) {
            Some(_) if method == Method::Put => ApiError::PutMismatch,
            Some(rows) if media.is_singular() && rows != 1 => ApiError::NotSingular(rows),
            Some(rows) => ApiError::MaxAffected(rows),
            None => ApiError::from_pg(e, identity.authenticated),
        })?;
    if media.plan.is_some() {
        return response::plan_response(&results, &media, false, profile);
    }
    let row = response::first_row(&results)?;
    let written = Written { method, conflict, prefer: &prefer, media: &media, profile, pgrst_path };
    written.response(row)
}

/// The query-string parts a write refuses: `limit`/`offset` on PUT (PGRST114), order and paging
/// on any write, filters on POST.
fn check_write_query(method: Method, read: &ReadQuery) -> Result<(), ApiError> {
    if method == Method::Put && (read.limit.is_some() || read.offset.is_some()) {
        return Err(ApiError::PutLimit);
    }
    if !read.order.is_empty() || read.limit.is_some() || read.offset.is_some() {
        return Err(ApiError::NotImplemented(
            "order, limit and offset are not supported on writes (removed in PostgREST v13)",
        ));
    }
    if method == Method::Post && (!read.filters.is_empty() || !read.trees.is_empty()) {
        return Err(ApiError::NotImplemented("filters on POST are not supported"));
    }
    Ok(())
}

/// The body of a POST, PUT or PATCH, read (bounded by `[http] max_body_bytes`), converted to JSON
/// and checked (off the shard when large); `columns` is `columns=` when given.
async fn read_payload(
    state: &RestService,
    req: &Request,
    method: Method,
    body: Body,
    columns: Option<Vec<String>>,
) -> Result<Option<Payload>, ApiError> {
    if method == Method::Delete {
        // PostgREST ignores a DELETE body; it is never read.
        return Ok(None);
    }
    let format = body_format::check_content_type(req)?;
    let raw = body.collect(state.config.max_body_bytes).await.map_err(ApiError::Body)?;
    let len = raw.len();
    Ok(Some(request::check_body(state, len, move || parse_payload(format.to_json(raw)?, columns)).await?))
}

/// What a write's response is made from, besides its result row.
struct Written<'a> {
    method: Method,
    conflict: Option<(&'a [String], Resolution)>,
    prefer: &'a Prefer,
    media: &'a Media,
    profile: Profile<'a>,
    pgrst_path: &'a str,
}

impl Written<'_> {
    /// PostgREST's write response: the status (201/200/204), the representation when asked for,
    /// `Content-Range`, `Location` (POST with `return=headers-only`), `Preference-Applied`, then
    /// the `response.*` overrides.
    fn response(&self, row: &Row) -> Result<Response, ApiError> {
        let (method, prefer) = (self.method, self.prefer);
        let (rows, _) = response::row_counts(row, false)?;
        // PostgREST counts writes for `exact` and `estimated` (the rows written are the exact count).
        let total = prefer.counts_exactly().then_some(rows);
        let insert_status = insert_status(method, row)?;
        let ret = prefer.ret.unwrap_or(Return::Minimal);
        let mut response = match (method, ret) {
            (_, Return::Representation) => {
                let body = response::body(row, false)?;
                let status = if matches!(method, Method::Post | Method::Put) { insert_status } else { 200 };
                let mut response = Response::with_body(status, body);
                self.profile.content_type(&mut response, self.media.content_type());
                response
            }
            (Method::Post, _) => Response::new(insert_status),
            _ => Response::new(204),
        };
        let range = match method {
            // PATCH shows the updated rows' range; POST and DELETE show none (PostgREST's behaviour).
            Method::Patch => Some(content_range(0, rows, total)),
            Method::Post | Method::Delete => Some(content_range(0, 0, total)),
            // A single-row upsert has no Content-Range at all.
            Method::Put => None,
        };
        if let Some(range) = range {
            response.set_header("content-range", range);
        }
        if method == Method::Post && ret == Return::HeadersOnly {
            if let Some(location) = location(self.pgrst_path, row.get(2)) {
                response.set_header("location", location);
            }
        }
        prefer.set_applied(&mut response, self.applied(), max_affected(method, prefer));
        response::respond(row, response)
    }

    /// The write's own entries of `Preference-Applied`, in PostgREST's order (before count, tx,
    /// handling and timezone): resolution (POST with a conflict target), missing (POST, PATCH),
    /// return.
    fn applied(&self) -> Vec<String> {
        let mut applied: Vec<String> = Vec::new();
        if let (Some((_, resolution)), Method::Post) = (self.conflict, self.method) {
            applied.push(resolution.applied().to_owned());
        }
        if matches!(self.method, Method::Post | Method::Patch) {
            match self.prefer.missing_default {
                Some(true) => applied.push("missing=default".to_owned()),
                Some(false) => applied.push("missing=null".to_owned()),
                None => {}
            }
        }
        if let Some(ret) = self.prefer.ret {
            applied.push(ret.applied().to_owned());
        }
        applied
    }
}

/// PostgREST's `isInsertIfGTZero`: a merge upsert (or PUT) that inserted no row is 200, any
/// other insert 201 (a view's merge upsert cannot tell: 201, 200 for PUT).
fn insert_status(method: Method, row: &Row) -> Result<u16, ApiError> {
    match row.get_str(4).map(str::parse::<u64>) {
        None if method == Method::Put => Ok(200),
        None => Ok(201),
        Some(Ok(0)) => Ok(200),
        Some(Ok(_)) => Ok(201),
        Some(Err(_)) => Err(ApiError::Internal("inserted is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::ShapeError;

    /// `write_statement` with a representation of the query's `select`, against an empty cache.
    fn stmt(
        relation: &str,
        mutation: &Mutation<'_>,
        read: &ReadQuery,
        ret: Return,
        media: &Media,
        payload: Option<Source<'_>>,
        limits: RowLimits,
    ) -> Statement {
        let cache = SchemaCache::default();
        let shaped = ReadQuery { select: read.select.clone(), ..ReadQuery::default() };
        let representation = plan::plan(&cache, "public", QualifiedName::new("public", relation), &shaped).unwrap();
        write_statement(&cache, "public", relation, mutation, read, &representation, ret, media, payload, limits)
    }
    use crate::query::parse_read_query;

    fn params_of(statement: &Statement) -> Vec<String> {
        statement.params.iter().map(|p| String::from_utf8(p.as_ref().unwrap().to_vec()).unwrap()).collect()
    }

    #[test]
    fn column_lists() {
        assert_eq!(
            parse_column_list("columns parameter", "a,b c,\"d\\\"e\",f-g").unwrap(),
            ["a", "b c", "d\"e", "f-g"]
        );
        assert_eq!(
            parse_column_list("columns parameter", "\"message\",\"channel_id\"").unwrap(),
            ["message", "channel_id"]
        );
        assert!(parse_column_list("columns parameter", "a,").is_err());
        assert!(parse_column_list("columns parameter", "a;b").is_err());
        assert!(parse_column_list("columns parameter", "\"a").is_err());
    }

    #[test]
    fn payloads() {
        let p = parse_payload(Bytes::from_static(br#"{"b":1,"a":2}"#), None).unwrap();
        assert_eq!(
            (&p.json[..], p.columns.as_slice()),
            (&br#"[{"b":1,"a":2}]"#[..], &["a".to_owned(), "b".to_owned()][..])
        );
        let p = parse_payload(Bytes::from_static(br#"[{"a":1},{"a":2.50}]"#), None).unwrap();
        assert_eq!(&p.json[..], br#"[{"a":1},{"a":2.50}]"#, "bytes are sent as received");
        let err = parse_payload(Bytes::from_static(br#"[{"a":1},{"b":2}]"#), None).unwrap_err();
        assert_eq!(err.to_string(), "All object keys must match");
        let p = parse_payload(Bytes::from_static(br#"[{"a":1},{"b":2}]"#), Some(vec!["a".into()])).unwrap();
        assert_eq!(p.columns, ["a"], "columns= decides; rows may lack keys");
        for bad in [&b""[..], b"{", b"1", b"[1]", b"null"] {
            assert_eq!(
                parse_payload(Bytes::copy_from_slice(bad), None).unwrap_err().to_string(),
                ShapeError::Invalid.to_string()
            );
        }
        assert!(parse_payload(Bytes::from_static(b"{\"a\\u0000\":1}"), None).is_err());
        let p = parse_payload(Bytes::from_static(b"[]"), None).unwrap();
        assert!(p.columns.is_empty());
    }

    #[test]
    fn insert_shape() {
        let columns = vec!["task".to_owned(), "x\"y".to_owned()];
        let target = vec!["id".to_owned()];
        let m = Mutation::Insert {
            columns: &columns,
            conflict: Some((&target, Resolution::MergeDuplicates)),
            inserted: None,
            put: false,
        };
        let read = parse_read_query("select=id,task").unwrap();
        let s = stmt(
            "todos",
            &m,
            &read,
            Return::Representation,
            &Media::JSON,
            Some(Source { json: Bytes::from_static(b"[]"), defaults: Vec::new() }),
            RowLimits::default(),
        );
        assert_eq!(
            s.sql,
            "WITH pgrst_source AS (INSERT INTO \"public\".\"todos\"(\"task\", \"x\"\"y\") \
             SELECT pgrst_body.\"task\", pgrst_body.\"x\"\"y\" \
             FROM pg_catalog.json_populate_recordset(NULL::\"public\".\"todos\", $1::json) AS pgrst_body \
             ON CONFLICT (\"id\") DO UPDATE SET \"task\" = EXCLUDED.\"task\", \"x\"\"y\" = EXCLUDED.\"x\"\"y\" \
             RETURNING \"public\".\"todos\".*) \
             SELECT pg_catalog.count(_postgrest_t) AS page_total, coalesce(pg_catalog.json_agg(_postgrest_t), '[]') AS body, \
             NULL AS location, NULL AS max_affected, NULL AS inserted, \
             NULLIF(pg_catalog.current_setting('response.headers', true), '') AS pgrst_response_headers, \
             NULLIF(pg_catalog.current_setting('response.status', true), '') AS pgrst_response_status \
             FROM (SELECT \"todos\".\"id\", \"todos\".\"task\" FROM pgrst_source AS \"todos\") _postgrest_t"
        );
        assert_eq!(params_of(&s), ["[]"]);
        let m = Mutation::Insert { columns: &[], conflict: None, inserted: None, put: false };
        let s = stmt(
            "todos",
            &m,
            &ReadQuery::default(),
            Return::Minimal,
            &Media::JSON,
            Some(Source { json: Bytes::from_static(b"[]"), defaults: Vec::new() }),
            RowLimits::default(),
        );
        assert!(s.sql.starts_with("WITH pgrst_source AS (INSERT INTO \"public\".\"todos\" SELECT  FROM"), "{}", s.sql);
        assert!(s.sql.contains("RETURNING 1) "), "{}", s.sql);
    }

    #[test]
    fn update_and_delete_shapes() {
        let read = parse_read_query("id=gt.1&task=eq.'; drop table x; --").unwrap();
        let columns = vec!["done".to_owned()];
        let m = Mutation::Update { columns: &columns };
        let s = stmt(
            "todos",
            &m,
            &read,
            Return::Minimal,
            &Media::JSON,
            Some(Source { json: Bytes::from_static(b"[{}]"), defaults: Vec::new() }),
            RowLimits { max_affected: Some(2), ..RowLimits::default() },
        );
        assert_eq!(
            s.sql,
            "WITH pgrst_source AS (UPDATE \"public\".\"todos\" SET \"done\" = pgrst_body.\"done\" \
             FROM (SELECT * FROM pg_catalog.json_populate_recordset(NULL::\"public\".\"todos\", $1::json) LIMIT 1) AS pgrst_body \
             WHERE \"public\".\"todos\".\"id\" > $2 AND \"public\".\"todos\".\"task\" = $3 RETURNING 1) \
             SELECT pg_catalog.count(_postgrest_t) AS page_total, NULL AS body, NULL AS location, \
             CASE WHEN pg_catalog.count(_postgrest_t) > $4::bigint THEN ($5::text || pg_catalog.count(_postgrest_t))::integer END AS max_affected, \
             NULL AS inserted, NULLIF(pg_catalog.current_setting('response.headers', true), '') AS pgrst_response_headers, \
             NULLIF(pg_catalog.current_setting('response.status', true), '') AS pgrst_response_status \
             FROM (SELECT * FROM pgrst_source) _postgrest_t"
        );
        let params = params_of(&s);
        assert_eq!(params[..4], ["[{}]", "1", "'; drop table x; --", "2"]);
        assert_eq!(params[4], crate::statement::row_limit_marker());
        let s = stmt("todos", &Mutation::Delete, &read, Return::HeadersOnly, &Media::JSON, None, RowLimits::default());
        assert!(s.sql.starts_with(
            "WITH pgrst_source AS (DELETE FROM \"public\".\"todos\" WHERE \"public\".\"todos\".\"id\" > $1 AND \"public\".\"todos\".\"task\" = $2 RETURNING \"public\".\"todos\".*)"
        ), "{}", s.sql);
        assert!(s.sql.contains("NULL AS location"), "Location is for inserts only");
    }

    #[test]
    fn merge_upsert_and_default_shapes() {
        let columns = vec!["id".to_owned(), "task".to_owned()];
        let all = vec!["id".to_owned(), "task".to_owned(), "done".to_owned()];
        let m = Mutation::Insert {
            columns: &columns,
            conflict: Some((&columns[..1], Resolution::MergeDuplicates)),
            inserted: Some(&all),
            put: false,
        };
        let source = Source {
            json: Bytes::from_static(b"[]"),
            defaults: vec![("id", "nextval('todos_id_seq'::regclass)"), ("task", "'x'::text")],
        };
        let s = stmt(
            "todos",
            &m,
            &ReadQuery::default(),
            Return::Representation,
            &Media::JSON,
            Some(source),
            RowLimits::default(),
        );
        for fragment in [
            "FROM pg_catalog.json_populate_recordset(NULL::\"public\".\"todos\", (SELECT coalesce(pg_catalog.json_agg(\
             pg_catalog.jsonb_build_object($2::text, nextval('todos_id_seq'::regclass), $3::text, 'x'::text) \
             || pgrst_elem.value ORDER BY pgrst_elem.n), '[]') \
             FROM pg_catalog.jsonb_array_elements($1::jsonb) WITH ORDINALITY AS pgrst_elem(value, n))) AS pgrst_body ",
            "RETURNING \"public\".\"todos\".*, (\"public\".\"todos\".xmax = 0) AS pgrst_inserted) ",
            "(SELECT pg_catalog.count(*) FROM pgrst_source WHERE pgrst_source.pgrst_inserted) AS inserted, ",
            // `select=*` names the table's columns, so `pgrst_inserted` stays out of the body.
            "FROM (SELECT \"todos\".\"id\", \"todos\".\"task\", \"todos\".\"done\" FROM pgrst_source AS \"todos\") _postgrest_t",
        ] {
            assert!(s.sql.contains(fragment), "{fragment}\n{}", s.sql);
        }
        assert_eq!(params_of(&s), ["[]", "id", "task"]);
    }

    #[test]
    fn put_and_tree_shapes() {
        let read = parse_read_query("id=eq.7").unwrap();
        let columns = vec!["id".to_owned(), "task".to_owned()];
        let key = vec!["id".to_owned()];
        let m = Mutation::Insert {
            columns: &columns,
            conflict: Some((&key, Resolution::MergeDuplicates)),
            inserted: None,
            put: true,
        };
        let source = Source { json: Bytes::from_static(b"[{}]"), defaults: Vec::new() };
        let limits = RowLimits { exactly_one: true, ..RowLimits::default() };
        let s = stmt("todos", &m, &read, Return::Minimal, &Media::JSON, Some(source), limits);
        assert!(
            s.sql.contains(
                "AS pgrst_body WHERE pgrst_body.\"id\" = $2 ON CONFLICT (\"id\") DO UPDATE SET \"id\" = EXCLUDED.\"id\""
            ),
            "{}",
            s.sql
        );
        assert!(s.sql.contains("CASE WHEN pg_catalog.count(_postgrest_t) <> 1 THEN ($3::text"), "{}", s.sql);
        // Logic trees restrict PATCH and DELETE as they restrict reads.
        let read = parse_read_query("or=(id.eq.1,id.eq.2)").unwrap();
        let s = stmt("todos", &Mutation::Delete, &read, Return::Minimal, &Media::JSON, None, RowLimits::default());
        assert!(s.sql.contains("DELETE FROM \"public\".\"todos\" WHERE ("), "{}", s.sql);
        assert_eq!(params_of(&s), ["1", "2"]);
    }

    #[test]
    fn locations() {
        let cell = Bytes::from_static(br#"[["id","5"],["k","a b/c"],["n",null]]"#);
        assert_eq!(location("/todos", Some(&cell)).unwrap(), "/todos?id=eq.5&k=eq.a%20b%2Fc&n=is.null");
        assert_eq!(location("/todos", None), None);
    }
}
