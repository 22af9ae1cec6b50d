//! The SQL-injection property of every statement `/rest/v1` builds, checkable on any request:
//! whatever the request says, the SQL text MadBase sends has only quoted identifiers, `$n`
//! placeholders and MadBase's own SQL outside them. Driven by the property test
//! (`tests/rest_grammar_prop.rs`) and the `rest_query` fuzz target.
//!
//! Owns: a fixture schema cache whose relation, column, constraint, function and argument names
//! are themselves hostile (quotes, semicolons, comment starts), the request-to-statement paths of
//! the handlers rebuilt without a database ([`check_request`]: reads and HEAD with every count and
//! media type, `EXPLAIN` plans, CSV and GeoJSON; writes — POST, PUT, PATCH, DELETE with
//! `on_conflict`, `columns`, `Prefer: return=`, `resolution=`, `missing=default`,
//! `max-affected`; RPC by GET and POST, scalar, composite and set-returning, with filters), the
//! request settings ([`check_settings`]) and a lexer for the built SQL ([`check_sql`]).
//!
//! Invariants the lexer enforces on every statement built: double-quoted identifiers are closed
//! (a `"` inside is doubled); outside them only [`KEYWORDS`] and [`UNQUOTED_CAST_TYPES`] as words
//! (a closed list of what MadBase writes — a cast to a type the request names is quoted unless it
//! is one of the listed keyword types, see `sql::push_cast`), decimal integers, the operators and
//! punctuation of [`PUNCTUATION`], and no string literal except MadBase's own ([`OWN_LITERALS`]);
//! no `;`, `--`, `/*`, `\`, NUL or non-ASCII byte; every `$n` names a bound parameter and every
//! bound parameter is used.
//!
//! The settings statement (`select set_config($1, $2, true), …`, written by `madbase_pg`) binds
//! every name and value; the one request-derived value PostgreSQL parses as SQL-like text is
//! `search_path`, which must be a list of quoted identifiers naming exactly the schemas meant.
//!
//! The write and RPC paths here follow `write::serve` and `rpc::serve` step by step (parse, the
//! handler's own choices, then the same statement builders); the builders are the handlers' own.

use std::sync::OnceLock;

use bytes::Bytes;
use madbase_http::{Headers, Request};

use super::media::{self, Media};
use super::plan;
use super::prefer::Prefer;
use super::query;
use super::read;
use super::request::{pre_request_call, search_path};
use super::rpc::{self, Input};
use super::sql::UNQUOTED_CAST_TYPES;
use super::write;
use crate::schema::relationships::QualifiedName;
use crate::schema::{introspect, SchemaCache};
use crate::settings::Config;

/// The only string literals MadBase writes into a statement (`E'\n'` is CSV's line separator).
const OWN_LITERALS: &[&str] = &[
    "'[]'",
    "','",
    "'response.headers'",
    "'response.status'",
    "''",
    "'null'",
    "'\\n'",
    "'type'",
    "'FeatureCollection'",
    "'features'",
];

/// Every word MadBase writes outside quotes (compared in lower case), besides the cast types of
/// [`UNQUOTED_CAST_TYPES`]: SQL keywords, its own aliases and the functions it calls.
pub const KEYWORDS: &[&str] = &[
    // SQL
    "select",
    "from",
    "where",
    "and",
    "or",
    "not",
    "as",
    "on",
    "true",
    "false",
    "null",
    "is",
    "distinct",
    "in",
    "any",
    "all",
    "like",
    "ilike",
    "order",
    "by",
    "asc",
    "desc",
    "nulls",
    "first",
    "last",
    "limit",
    "offset",
    "group",
    "left",
    "join",
    "inner",
    "cross",
    "lateral",
    "with",
    "ordinality",
    "insert",
    "into",
    "update",
    "set",
    "delete",
    "returning",
    "conflict",
    "do",
    "nothing",
    "excluded",
    "case",
    "when",
    "then",
    "end",
    "unknown",
    "variadic",
    "exists",
    "explain",
    "format",
    "analyze",
    "verbose",
    "settings",
    "buffers",
    "wal",
    "e",
    "regclass",
    "regconfig",
    // Catalog objects and functions
    "pg_catalog",
    "count",
    "json_agg",
    "coalesce",
    "nullif",
    "current_setting",
    "row_to_json",
    "json_strip_nulls",
    "json_build_object",
    "json_build_array",
    "to_jsonb",
    "jsonb_build_object",
    "json_populate_recordset",
    "json_to_recordset",
    "jsonb_array_elements",
    "json_each_text",
    "json_object_keys",
    "string_agg",
    "substr",
    "length",
    "st_asgeojson",
    "sum",
    "avg",
    "min",
    "max",
    "to_tsquery",
    "plainto_tsquery",
    "phraseto_tsquery",
    "websearch_to_tsquery",
    "pg_index",
    "pg_attribute",
    "attname",
    "attrelid",
    "attnum",
    "indrelid",
    "indkey",
    "indisprimary",
    "xmax",
    // MadBase's and PostgREST's aliases
    "_postgrest_t",
    "page_total",
    "body",
    "total_result_set",
    "pgrst_response_headers",
    "pgrst_response_status",
    "pgrst_source",
    "pgrst_body",
    "pgrst_elem",
    "value",
    "n",
    "pgrst_inserted",
    "location",
    "max_affected",
    "inserted",
    "pgrst_call",
    "pgrst_scalar",
    "pgrst_args",
    "pgrst_row",
    "hh",
    "s",
    "r",
    "a",
    "k",
    "d",
    "j",
    "i",
    "key",
];

/// Operator and punctuation characters MadBase writes outside quotes (`--` and `/*` excepted).
pub const PUNCTUATION: &[u8] = b"(),.*=<>!:[]+-|&@~";

/// The relation every checked table request addresses.
pub const TABLE: &str = "t\"; drop table x; --";

/// Functions of the fixture, by what they exercise: a set-returning function of [`TABLE`] rows
/// with hostile argument names, a scalar, a set of scalars, one unnamed `jsonb` parameter,
/// a variadic and a `void` one without arguments.
pub const FUNCTIONS: &[&str] = &["rows\";--", "scalar/*", "scalars'", "json;", "variadic", "void--"];

fn fixture() -> &'static SchemaCache {
    static CACHE: OnceLock<SchemaCache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let document = serde_json::json!({
            "schemas": ["public"],
            "relations": [[1, "public", TABLE, "r", 28], [2, "public", "u/*", "r", 28], [3, "public", "j'", "r", 28]],
            "columns": [
                [1, 1, "id", "bigint", false, null, false, false],
                [1, 2, "a\"b", "jsonb", true, null, false, false],
                [1, 3, "c;d", "bigint", true, "42", false, false],
                [2, 1, "id", "bigint", false, null, false, false],
                [2, 2, "e' or '1'='1", "text", true, null, false, false],
                [3, 1, "t_id", "bigint", false, null, false, false],
                [3, 2, "u_id", "bigint", false, null, false, false]
            ],
            "keys": [
                ["p", "t_pkey", "public", TABLE, ["id"], null, null, null],
                ["p", "u_pkey", "public", "u/*", ["id"], null, null, null],
                ["p", "j_pkey", "public", "j'", ["t_id", "u_id"], null, null, null],
                ["f", "fk\"--", "public", TABLE, ["c;d"], "public", "u/*", ["id"]],
                ["f", "j_t", "public", "j'", ["t_id"], "public", TABLE, ["id"]],
                ["f", "j_u", "public", "j'", ["u_id"], "public", "u/*", ["id"]]
            ],
            "computed": [["public", "f();--", "public", TABLE, "public", "u/*", false]],
            "functions": [
                ["public", FUNCTIONS[0], [["a'b", "integer", "i"], ["x\"y", "text", "i"]], 1, TABLE, "public", TABLE, true, "s", false],
                ["public", FUNCTIONS[1], [["n;", "integer", "i"]], 0, "integer", null, null, false, "i", false],
                ["public", FUNCTIONS[2], [["n", "integer", "i"]], 0, "integer", null, null, true, "i", false],
                ["public", FUNCTIONS[3], [["", "jsonb", "i"]], 0, "jsonb", null, null, false, "v", false],
                ["public", FUNCTIONS[4], [["v--", "integer[]", "v"]], 0, "integer", null, null, false, "i", true],
                ["public", FUNCTIONS[5], [], 0, "void", null, null, false, "v", false]
            ],
            "settings": [["pgrst.db_aggregates_enabled", "true"]]
        });
        introspect::parse(&document.to_string()).expect("the fixture document parses")
    })
}

/// Parses, plans and builds `query_string` as a read of [`TABLE`] (with an exact count) and
/// checks the statement. `Ok(true)`: a statement was built and is safe; `Ok(false)`: the grammar
/// or the planner refused the query (refusing is safe).
pub fn check_read_query(query_string: &str) -> Result<bool, String> {
    check_request(&CheckedRequest { query: query_string, prefer: "count=exact", ..CheckedRequest::default() })
}

/// What a table or RPC request carries that can reach a statement.
#[derive(Debug, Clone, Copy)]
pub struct CheckedRequest<'a> {
    /// `GET`, `HEAD`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: &'a str,
    /// `None`: [`TABLE`]; `Some(name)`: `/rpc/<name>` (see [`FUNCTIONS`]).
    pub function: Option<&'a str>,
    /// The query string, percent-encoded.
    pub query: &'a str,
    /// The `Prefer` header.
    pub prefer: &'a str,
    /// The `Accept` header (plans are enabled).
    pub accept: &'a str,
    /// The body (POST, PUT, PATCH).
    pub body: &'a [u8],
}

impl Default for CheckedRequest<'_> {
    fn default() -> Self {
        CheckedRequest { method: "GET", function: None, query: "", prefer: "", accept: "", body: b"" }
    }
}

/// Builds every statement the request would run (on the fixture, plans enabled) and checks each
/// with [`check_sql`]. `Ok(true)`: built and safe; `Ok(false)`: refused before any SQL (safe).
pub fn check_request(checked: &CheckedRequest<'_>) -> Result<bool, String> {
    let mut headers = Headers::default();
    for (name, value) in [("accept", checked.accept), ("prefer", checked.prefer)] {
        if !value.is_empty() {
            headers.push(Bytes::from_static(name.as_bytes()), Bytes::copy_from_slice(value.as_bytes()));
        }
    }
    let path = match checked.function {
        Some(name) => format!("/rest/v1/rpc/{name}"),
        None => format!("/rest/v1/{TABLE}"),
    };
    let Ok(address) = "127.0.0.1:1".parse() else { return Err("the loopback address does not parse".into()) };
    let req = Request::new(checked.method, &path, headers, address);
    let Ok(media) = media::negotiate(&req, true) else { return Ok(false) };
    let prefer = Prefer::parse(&req);
    let statements = match (checked.function, checked.method) {
        (Some(name), "GET" | "HEAD" | "POST") => rpc_statements(checked, name, &media, &prefer),
        (None, "GET" | "HEAD") => read_statements(checked, &media, &prefer),
        (None, "POST" | "PUT" | "PATCH" | "DELETE") => write_statements(checked, &media, &prefer),
        _ => None,
    };
    let Some(statements) = statements else { return Ok(false) };
    for statement in &statements {
        check_sql(&statement.sql, statement.params.len()).map_err(|e| format!("{e} in {:?}", statement.sql))?;
    }
    Ok(true)
}

/// A read's statements, built as the handler builds them (`read::read_statements`).
fn read_statements(checked: &CheckedRequest<'_>, media: &Media, prefer: &Prefer) -> Option<Vec<madbase_pg::Statement>> {
    let read = query::parse_read_query(checked.query).ok()?;
    let cache = fixture();
    let plan = plan::plan(cache, "public", QualifiedName::new("public", TABLE), &read).ok()?;
    let (statement, count_plan) = read::read_statements(cache, &plan, media, checked.method == "HEAD", prefer);
    Some(std::iter::once(statement).chain(count_plan).collect())
}

/// A write's one statement, built as `write::serve` builds it, but past the handler's checks of
/// the request against the schema (unknown body columns, PUT filters other than `eq` on the key),
/// so that hostile names and filters reach the SQL.
fn write_statements(
    checked: &CheckedRequest<'_>,
    media: &Media,
    prefer: &Prefer,
) -> Option<Vec<madbase_pg::Statement>> {
    let cache = fixture();
    let method = match checked.method {
        "POST" => write::Method::Post,
        "PUT" => write::Method::Put,
        "PATCH" => write::Method::Patch,
        _ => write::Method::Delete,
    };
    let (params, read) = write::parse_write_query(checked.query).ok()?;
    if !read.order.is_empty() || read.limit.is_some() || read.offset.is_some() {
        return None;
    }
    let rel = super::relation::find(cache, "public", TABLE).ok()?;
    let payload = match method {
        write::Method::Delete => None,
        _ => Some(write::parse_payload(Bytes::copy_from_slice(checked.body), params.columns).ok()?),
    };
    let statement = write::WriteInput {
        cache,
        schema: "public",
        relation: TABLE,
        rel,
        method,
        read: &read,
        conflict: write::conflict_target(method, prefer, params.on_conflict.as_deref(), rel),
        prefer,
        media,
        payload: payload.as_ref(),
    }
    .statement()
    .ok()?;
    Some(vec![statement])
}

/// A call's one statement, built as `rpc::serve` builds it.
fn rpc_statements(
    checked: &CheckedRequest<'_>,
    name: &str,
    media: &Media,
    prefer: &Prefer,
) -> Option<Vec<madbase_pg::Statement>> {
    let cache = fixture();
    let (query_args, rest) = rpc::split_query(checked.query).ok()?;
    let read = query::parse_read_query(&rest).ok()?;
    let input = match checked.method {
        "POST" => Input::from_body(Bytes::copy_from_slice(checked.body)).ok()?,
        _ => Input::Query(rpc::group_args(query_args).ok()?),
    };
    let (function, call) = rpc::resolve(cache, "public", name, &input).ok()?;
    let statement = rpc::CallInput {
        cache,
        schema: "public",
        function,
        call: &call,
        input: &input,
        read: &read,
        prefer,
        media,
        head: checked.method == "HEAD",
    }
    .statement()
    .ok()?;
    Some(vec![statement])
}

/// The request settings MadBase composes itself: `search_path` for the profile `schema` and the
/// configured `extra` schemas must be exactly those schemas as quoted identifiers (PostgreSQL
/// parses the value as an identifier list), and a `db_pre_request` function that the
/// configuration accepts is called as a statement that passes [`check_sql`].
pub fn check_settings(schema: &str, extra: &[String], pre_request: &str) -> Result<(), String> {
    let path = search_path(schema, extra);
    let names = parse_identifier_list(&path)
        .ok_or_else(|| format!("search_path {path:?} is not a list of quoted identifiers"))?;
    let expected: Vec<&str> = std::iter::once(schema).chain(extra.iter().map(String::as_str)).collect();
    if names != expected {
        return Err(format!("search_path {path:?} names {names:?}, not {expected:?}"));
    }
    let mut config = Config::default();
    config.rest.pre_request = Some(pre_request.to_owned());
    if let Some(call) = pre_request_call(&config) {
        check_sql(&call, 0).map_err(|e| format!("{e} in the pre-request call {call:?}"))?;
    }
    Ok(())
}

/// `"a", "b""c"` → `[a, b"c]`; `None` unless the whole text is quoted identifiers joined by `, `.
fn parse_identifier_list(text: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        if chars.next()? != '"' {
            return None;
        }
        let mut name = String::new();
        loop {
            match chars.next()? {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    name.push('"');
                }
                '"' => break,
                c => name.push(c),
            }
        }
        names.push(name);
        match chars.next() {
            None => return Some(names),
            Some(',') if chars.next() == Some(' ') => {}
            Some(_) => return None,
        }
    }
}

/// The lexical invariants of the module doc, for a statement with `params` bound parameters.
pub fn check_sql(sql: &str, params: usize) -> Result<(), String> {
    let bytes = sql.as_bytes();
    let mut used = vec![false; params];
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // A quoted identifier: ends at a `"` that is not doubled.
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err("unterminated quoted identifier".into()),
                        Some(b'"') if bytes.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => break,
                        Some(0) => return Err("NUL in an identifier".into()),
                        Some(_) => i += 1,
                    }
                }
            }
            b'\'' => {
                let Some(literal) = OWN_LITERALS.iter().find(|l| sql[i..].starts_with(**l)) else {
                    return Err(format!("string literal at byte {i}"));
                };
                i += literal.len() - 1;
            }
            b'$' => {
                let digits = bytes[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                let n: usize = sql[i + 1..i + 1 + digits].parse().map_err(|_| format!("bare $ at byte {i}"))?;
                match n.checked_sub(1).and_then(|k| used.get_mut(k)) {
                    Some(slot) => *slot = true,
                    None => return Err(format!("${n} is not a bound parameter")),
                }
                i += digits;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let len = bytes[i..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
                let word = sql[i..i + len].to_ascii_lowercase();
                if !KEYWORDS.contains(&word.as_str()) && !UNQUOTED_CAST_TYPES.contains(&word.as_str()) {
                    return Err(format!("unquoted word {word:?} at byte {i} is not MadBase's"));
                }
                i += len - 1;
            }
            b'0'..=b'9' => {
                let len = bytes[i..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
                if !bytes[i..i + len].iter().all(u8::is_ascii_digit) {
                    return Err(format!("{:?} at byte {i} is neither a number nor a word", &sql[i..i + len]));
                }
                i += len - 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => return Err(format!("comment start at byte {i}")),
            b'/' if bytes.get(i + 1) == Some(&b'*') => return Err(format!("comment start at byte {i}")),
            b' ' | b'\n' => {}
            other if PUNCTUATION.contains(&other) => {}
            other => return Err(format!("{:?} outside identifiers at byte {i}", other as char)),
        }
        i += 1;
    }
    match used.iter().position(|u| !u) {
        Some(k) => Err(format!("parameter ${} is never used", k + 1)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_catches_what_it_must() {
        assert!(check_sql(r#"SELECT "a""b" FROM "t" WHERE "x" = $1 AND "y" = '[]' LIMIT 10"#, 1).is_ok());
        assert!(check_sql(r#"SELECT "a"b" FROM t"#, 0).is_err(), "an undoubled quote leaves `b\" FROM t` open");
        assert!(check_sql("SELECT 1; DROP TABLE t", 0).is_err());
        assert!(check_sql("SELECT 'x'", 0).is_err());
        assert!(check_sql("SELECT 1 -- c", 0).is_err());
        assert!(check_sql("SELECT 1 /* c */", 0).is_err());
        assert!(check_sql("SELECT $2", 1).is_err());
        assert!(check_sql("SELECT 1", 1).is_err(), "an unused parameter means a value went elsewhere");
        // Words and casts that are not MadBase's own.
        assert!(check_sql(r#"SELECT "a"::text, pg_catalog.count(*)"#, 0).is_ok());
        assert!(check_sql(r#"SELECT "a"::mood"#, 0).is_err(), "a request's type name must be quoted");
        assert!(check_sql(r#"SELECT "a"::"mood""#, 0).is_ok());
        assert!(check_sql("SELECT pg_sleep(10)", 0).is_err());
        assert!(check_sql(r#"SELECT "a" FROM "t" UNION SELECT "b""#, 0).is_err());
        assert!(check_sql("SELECT 1e5", 0).is_err());
        assert!(check_sql("SELECT 'a' # 1", 0).is_err());
        assert!(check_sql("SELECT \"é\", é", 0).is_err(), "non-ASCII outside quotes");
    }

    #[test]
    fn the_fixture_reads_and_embeds_hostile_names() {
        let queries = [
            r#"select=*,"u/*"!"fk\"--"(*),"j'"(count()),m2m:"u/*"!"j'"(id)"#,
            r#"select="a\"b"->>x,"c;d",u:"u/*"!"c;d"(id)&order=u(id).desc&u=not.is.null&u.id=eq.$1"#,
            r#"select=id,"f();--"(*,"e' or '1'='1")&"c;d"=eq.1';drop&or=(id.eq.1,"a\"b"->k.eq.--)"#,
            "select=id::Mood,x:id::pg_sleep,n:count()::select,id.sum()::union",
        ];
        for query in queries {
            let read = query::parse_read_query(query).unwrap();
            plan::plan(fixture(), "public", QualifiedName::new("public", TABLE), &read).unwrap();
            assert!(check_read_query(query).unwrap(), "{query}");
        }
    }

    fn built(request: CheckedRequest<'_>) {
        match check_request(&request) {
            Ok(true) => {}
            other => panic!("{request:?}: {other:?}"),
        }
    }

    #[test]
    fn every_media_type_count_and_plan_of_a_read_is_built_and_safe() {
        let query = r#"select=id,"a\"b"->>x,u:"u/*"!"c;d"(id)&id=gt.1&limit=5"#;
        for accept in [
            "",
            "text/csv",
            "application/geo+json",
            "application/vnd.pgrst.object+json;nulls=stripped",
            "application/vnd.pgrst.array+json;nulls=stripped",
            "application/vnd.pgrst.plan+json; for=\"text/csv\"; options=analyze|verbose|settings|buffers|wal",
            "application/vnd.pgrst.plan+text",
        ] {
            for prefer in ["", "count=exact", "count=planned", "count=estimated"] {
                for method in ["GET", "HEAD"] {
                    built(CheckedRequest { method, query, prefer, accept, ..CheckedRequest::default() });
                }
            }
        }
    }

    #[test]
    fn every_kind_of_write_is_built_and_safe() {
        let body = br#"[{"id": 1, "c;d": 2, "a\"b": {"k": "'; drop"}}]"#;
        for (method, query) in [
            ("POST", r#"columns=id,"c;d","a\"b"&on_conflict="c;d",id&select=id,"u/*"!"fk\"--"(*)"#),
            ("POST", "select=*"),
            ("PUT", "id=eq.1"),
            ("PATCH", r#"columns="c;d"&"a\"b"->>k=eq.x&or=(id.eq.1,id.is.null)&select=id::Mood"#),
            // No columns: nothing to update, and the body must not be bound either.
            ("PATCH", "columns=&id=eq.1"),
            ("DELETE", r#""c;d"=in.(1,2)&"u/*"=is.null"#),
        ] {
            for prefer in [
                "return=representation, resolution=merge-duplicates, missing=default, count=exact",
                "return=headers-only, resolution=ignore-duplicates",
                "return=minimal, handling=strict, max-affected=3, count=estimated",
            ] {
                for accept in [
                    "",
                    "text/csv",
                    "application/geo+json",
                    "application/vnd.pgrst.object+json",
                    "application/vnd.pgrst.plan+json; options=analyze",
                ] {
                    let body = if query.starts_with("columns=&") { b"{}" } else { &body[..] };
                    built(CheckedRequest { method, query, prefer, accept, body, ..CheckedRequest::default() });
                }
            }
        }
    }

    #[test]
    fn every_kind_of_call_is_built_and_safe() {
        let calls: [(&str, &str, &str, &[u8]); 8] = [
            ("GET", FUNCTIONS[0], r#"a'b=1&x"y=z&select=id,"c;d"&id=gt.1&order=id.desc&limit=2"#, b""),
            (
                "POST",
                FUNCTIONS[0],
                r#"select=id,"u/*"!"fk\"--"(*)&or=(id.eq.1,"c;d".is.null)"#,
                br#"{"a'b": 1, "x\"y": "'--"}"#,
            ),
            ("GET", FUNCTIONS[1], "n%3B=3", b""),
            ("GET", FUNCTIONS[2], "n=3&pgrst_scalar=gt.1&order=pgrst_scalar&offset=1", b""),
            ("POST", FUNCTIONS[3], "", br#"[1, "'; drop"]"#),
            ("GET", FUNCTIONS[4], "v--=1&v--=2", b""),
            ("POST", FUNCTIONS[5], "", b""),
            ("HEAD", FUNCTIONS[2], "n=1", b""),
        ];
        for (method, function, query, body) in calls {
            for prefer in ["", "count=exact", "handling=strict, max-affected=1"] {
                for accept in ["", "text/csv", "application/geo+json", "application/vnd.pgrst.plan"] {
                    let request = CheckedRequest { method, function: Some(function), query, prefer, accept, body };
                    let returns_set = fixture().functions("public", function).iter().all(|f| f.returns_set);
                    if prefer.contains("max-affected") && !returns_set {
                        // The handler refuses max-affected on a function that returns no set
                        // (PGRST128) before any SQL: refused is safe.
                        assert_eq!(check_request(&request), Ok(false), "{request:?}");
                    } else {
                        built(request);
                    }
                }
            }
        }
    }

    #[test]
    fn settings_keep_hostile_schema_names_whole() {
        let extra = vec!["ext\", pg_temp".to_owned(), "a b".to_owned()];
        check_settings("public\"; set role postgres; --", &extra, "\"pre;--\".\"x\"\"y\"").unwrap();
        check_settings("", &[], "f").unwrap();
        assert_eq!(parse_identifier_list(r#""a", "b""c""#), Some(vec!["a".to_owned(), "b\"c".to_owned()]));
        assert_eq!(parse_identifier_list(r#""a", b"#), None);
        assert_eq!(parse_identifier_list(r#""a","b""#), None);
    }
}
