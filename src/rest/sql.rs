//! SQL for a read: turns a [`ReadQuery`] on one relation into the one statement that builds the
//! whole response body inside PostgreSQL, as PostgREST does.
//!
//! Owns: identifier quoting and parameter numbering. Invariants: every identifier is emitted
//! through [`quote_ident`] (double-quoted, `"` doubled — the parser has already refused NUL);
//! every value is a bind parameter (`$n`), never text in the SQL; the only unquoted words that
//! come from the request are cast type names, which the parser restricts to `[A-Za-z0-9_]`.
//! Same query shape → same SQL text, so the connection's prepared-statement cache hits.
//!
//! Shape (GET as `application/json`; other media types change the `body` expression, see
//! [`super::media`]; HEAD selects `NULL` instead of the aggregate, as PostgREST skips the JSON work):
//!
//! ```sql
//! SELECT pg_catalog.count(_postgrest_t) AS page_total,
//!        coalesce(pg_catalog.json_agg(_postgrest_t), '[]') AS body
//! FROM (SELECT "public"."todos"."id", "public"."todos"."task" FROM "public"."todos"
//!       WHERE "public"."todos"."done" = $1 ORDER BY "public"."todos"."id" DESC
//!       LIMIT $2 OFFSET $3) _postgrest_t
//! ```

use std::fmt::Write as _;

use madbase_pg::Statement;

use super::media::{Media, Rows};
use super::query::{
    Condition, Direction, Filter, FilterOp, JsonKey, JsonStep, LogicTree, Nulls, OrderTerm, ReadQuery, SelectItem,
};

/// `name` as a quoted SQL identifier: `"` + name with `"` doubled + `"`.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    push_ident(&mut out, name);
    out
}

fn push_ident(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

/// A PostgreSQL array literal with every element double-quoted (so `,` `{` `}` and spaces are
/// data), `\` and `"` backslash-escaped: the text form `= ANY($n)` parses into the column's
/// array type.
pub fn array_literal(items: &[String]) -> String {
    let mut out = String::with_capacity(2 + items.iter().map(|i| i.len() + 3).sum::<usize>());
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// Appends the select list for `items` (empty = `*`) to `out`, every column qualified by
/// `qualifier` (an already-quoted relation reference such as `"public"."todos"`).
pub fn push_select_list(out: &mut String, qualifier: &str, items: &[SelectItem]) {
    if items.is_empty() {
        let _ = write!(out, "{qualifier}.*");
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        match item {
            SelectItem::Star => {
                let _ = write!(out, "{qualifier}.*");
            }
            SelectItem::Column { name, alias, cast } => {
                let _ = write!(out, "{qualifier}.");
                push_ident(out, name);
                if let Some(cast) = cast {
                    // The key stays the column name (PostgREST's rule) unless aliased.
                    let _ = write!(out, "::{cast}");
                    if alias.is_none() {
                        out.push_str(" AS ");
                        push_ident(out, name);
                    }
                }
                if let Some(alias) = alias {
                    out.push_str(" AS ");
                    push_ident(out, alias);
                }
            }
        }
    }
}

/// Appends ` WHERE c1 AND c2 …` for `filters` (nothing when there are none) to `out`, every
/// column qualified by `qualifier`; each value goes through `bind`, which returns its `$n`.
pub fn push_where(out: &mut String, qualifier: &str, filters: &[Filter], bind: &mut dyn FnMut(String) -> String) {
    push_where_trees(out, qualifier, filters, &[], bind);
}

/// [`push_where`] plus logic trees (`or=(…)`, `and=(…)`), all ANDed.
pub fn push_where_trees(
    out: &mut String,
    qualifier: &str,
    filters: &[Filter],
    trees: &[LogicTree],
    bind: &mut dyn FnMut(String) -> String,
) {
    let mut first = true;
    let mut next =
        |out: &mut String| out.push_str(if std::mem::replace(&mut first, false) { " WHERE " } else { " AND " });
    for filter in filters {
        next(out);
        push_filter(out, qualifier, filter, bind);
    }
    for tree in trees {
        next(out);
        push_tree(out, qualifier, tree, bind);
    }
}

/// `[NOT ](c1 OR c2 …)`; members are filters or nested trees (depth bounded by the parser).
fn push_tree(out: &mut String, qualifier: &str, tree: &LogicTree, bind: &mut dyn FnMut(String) -> String) {
    if tree.negated {
        out.push_str("NOT ");
    }
    out.push('(');
    for (i, child) in tree.children.iter().enumerate() {
        if i > 0 {
            out.push_str(tree.op.sql());
        }
        match child {
            Condition::Filter(filter) => push_filter(out, qualifier, filter, bind),
            Condition::Tree(tree) => push_tree(out, qualifier, tree, bind),
        }
    }
    out.push(')');
}

/// `->$n::text`, `->$n::integer`, `->>$n::text` … for each step: keys are bound like values, and
/// cast so PostgreSQL picks the object-member or array-element operator.
fn push_json_path(out: &mut String, path: &[JsonStep], bind: &mut dyn FnMut(String) -> String) {
    for step in path {
        out.push_str(if step.as_text { "->>" } else { "->" });
        match &step.key {
            JsonKey::Name(name) => {
                let _ = write!(out, "{}::text", bind(name.clone()));
            }
            JsonKey::Index(index) => {
                let _ = write!(out, "{}::integer", bind(index.to_string()));
            }
        }
    }
}

fn push_filter(out: &mut String, qualifier: &str, filter: &Filter, bind: &mut dyn FnMut(String) -> String) {
    let mut target = format!("{qualifier}.{}", quote_ident(&filter.column));
    push_json_path(&mut target, &filter.path, bind);
    let condition = match &filter.op {
        FilterOp::Compare(op, value) => format!("{target} {} {}", op.sql(), bind(value.clone())),
        FilterOp::Is(value) => format!("{target} IS {value}"),
        FilterOp::In(items) => format!("{target} = ANY ({})", bind(array_literal(items))),
        FilterOp::Quantified(op, quantifier, list) => {
            format!("{target} {} {}({})", op.sql(), quantifier.sql(), bind(list.clone()))
        }
        FilterOp::TextSearch(search, config, query) => match config {
            Some(config) => {
                let config = bind(config.clone());
                format!("{target} @@ {}({config}::regconfig, {})", search.function(), bind(query.clone()))
            }
            None => format!("{target} @@ {}({})", search.function(), bind(query.clone())),
        },
    };
    if filter.negated {
        let _ = write!(out, "NOT ({condition})");
    } else {
        out.push_str(&condition);
    }
}

/// Appends ` ORDER BY …`, ` LIMIT $n` and ` OFFSET $n` of `query` (each only when given) to
/// `out`, every column qualified by `qualifier`; limit and offset go through `bind`.
pub fn push_order_limit(out: &mut String, qualifier: &str, query: &ReadQuery, bind: &mut dyn FnMut(String) -> String) {
    for (i, OrderTerm { column: name, path, direction, nulls }) in query.order.iter().enumerate() {
        out.push_str(if i == 0 { " ORDER BY " } else { ", " });
        let _ = write!(out, "{qualifier}.");
        push_ident(out, name);
        push_json_path(out, path, bind);
        match direction {
            Some(Direction::Asc) => out.push_str(" ASC"),
            Some(Direction::Desc) => out.push_str(" DESC"),
            None => {}
        }
        match nulls {
            Some(Nulls::First) => out.push_str(" NULLS FIRST"),
            Some(Nulls::Last) => out.push_str(" NULLS LAST"),
            None => {}
        }
    }
    // Integers, but still bound: the SQL text stays the same for every page size.
    if let Some(limit) = query.limit {
        let _ = write!(out, " LIMIT {}", bind(limit.to_string()));
    }
    if let Some(offset) = query.offset {
        let _ = write!(out, " OFFSET {}", bind(offset.to_string()));
    }
}

/// Builds the statement for reading `schema.relation` with `query`; its `body` column is built
/// by `media` ([`Media::body_sql`]), or is `NULL` without one (HEAD: the aggregate is not
/// computed at all).
///
/// With `exact_count` (`Prefer: count=exact`) a third column, `total_result_set`, counts the
/// filtered relation without `order`/`limit`/`offset`; it reuses the `WHERE` text, whose parameters
/// are numbered first, so both see the same bound values. A media type that reads the source
/// itself (CSV's header) gets the page as the CTE `pgrst_source`, as in PostgREST.
pub fn read_statement(
    schema: &str,
    relation: &str,
    query: &ReadQuery,
    media: Option<&Media>,
    exact_count: bool,
) -> Statement {
    let mut params: Vec<String> = Vec::new();
    let mut bind = |value: String| {
        params.push(value);
        format!("${}", params.len())
    };
    let qualified = format!("{}.{}", quote_ident(schema), quote_ident(relation));
    let mut filtered = format!(" FROM {qualified}");
    push_where_trees(&mut filtered, &qualified, &query.filters, &query.trees, &mut bind);

    let mut inner = String::from("SELECT ");
    push_select_list(&mut inner, &qualified, &query.select);
    inner.push_str(&filtered);
    push_order_limit(&mut inner, &qualified, query, &mut bind);

    let body = media.map_or_else(|| "NULL".to_owned(), |m| m.body_sql(Rows::Records));
    let total = if exact_count {
        format!(", (SELECT pg_catalog.count(*){filtered}) AS total_result_set")
    } else {
        String::new()
    };
    let sql = if media.is_some_and(Media::needs_source) {
        format!(
            "WITH pgrst_source AS ({inner}) SELECT pg_catalog.count(_postgrest_t) AS page_total, {body} AS body{total} \
             FROM (SELECT * FROM pgrst_source) _postgrest_t"
        )
    } else {
        format!(
            "SELECT pg_catalog.count(_postgrest_t) AS page_total, {body} AS body{total} FROM ({inner}) _postgrest_t"
        )
    };
    params.into_iter().fold(Statement::new(sql), |statement, value| statement.bind(value))
}

/// `Prefer: count=planned|estimated`: `EXPLAIN (FORMAT JSON)` of PostgREST's count query for the
/// read (`SELECT 1` from the filtered relation, without `order`/`limit`/`offset`), bound with the
/// same filter values; the planner's `Plan Rows` is the estimate ([`planned_rows`]).
pub fn count_plan_statement(schema: &str, relation: &str, query: &ReadQuery) -> Statement {
    let mut params: Vec<String> = Vec::new();
    let mut bind = |value: String| {
        params.push(value);
        format!("${}", params.len())
    };
    let qualified = format!("{}.{}", quote_ident(schema), quote_ident(relation));
    let mut sql = format!("EXPLAIN (FORMAT JSON) SELECT 1 FROM {qualified}");
    push_where_trees(&mut sql, &qualified, &query.filters, &query.trees, &mut bind);
    params.into_iter().fold(Statement::new(sql), |statement, value| statement.bind(value))
}

/// The top plan node's `Plan Rows` of an `EXPLAIN (FORMAT JSON)` result.
pub fn planned_rows(explain_json: &[u8]) -> Option<u64> {
    let plan: serde_json::Value = serde_json::from_slice(explain_json).ok()?;
    let rows = plan.get(0)?.get("Plan")?.get("Plan Rows")?;
    rows.as_u64().or_else(|| rows.as_f64().filter(|r| *r >= 0.0).map(|r| r as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::query::parse_read_query;

    fn sql_of(query: &str) -> (String, Vec<String>) {
        let statement = read_statement("public", "todos", &parse_read_query(query).unwrap(), Some(&Media::JSON), false);
        let params =
            statement.params.iter().map(|p| String::from_utf8(p.as_ref().unwrap().to_vec()).unwrap()).collect();
        (statement.sql, params)
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("todos"), "\"todos\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(array_literal(&["a".into(), "b,c".into(), "q\"\\".into(), "".into()]), r#"{"a","b,c","q\"\\",""}"#);
        assert_eq!(array_literal(&[]), "{}");
    }

    #[test]
    fn full_shape() {
        let (sql, params) = sql_of("select=id,t:task,done::text&done=is.false&id=not.in.(1,2)&task=ilike.*x*&order=id.desc.nullslast,task&limit=10&offset=5");
        assert_eq!(
            sql,
            "SELECT pg_catalog.count(_postgrest_t) AS page_total, coalesce(pg_catalog.json_agg(_postgrest_t), '[]') AS body \
             FROM (SELECT \"public\".\"todos\".\"id\", \"public\".\"todos\".\"task\" AS \"t\", \"public\".\"todos\".\"done\"::text AS \"done\" \
             FROM \"public\".\"todos\" WHERE \"public\".\"todos\".\"done\" IS FALSE AND NOT (\"public\".\"todos\".\"id\" = ANY ($1)) \
             AND \"public\".\"todos\".\"task\" ILIKE $2 ORDER BY \"public\".\"todos\".\"id\" DESC NULLS LAST, \"public\".\"todos\".\"task\" \
             LIMIT $3 OFFSET $4) _postgrest_t"
        );
        assert_eq!(params, ["{\"1\",\"2\"}", "%x%", "10", "5"]);
    }

    #[test]
    fn exact_count_reuses_the_filter_and_its_parameters() {
        let statement = read_statement(
            "public",
            "todos",
            &parse_read_query("done=eq.true&limit=2").unwrap(),
            Some(&Media::JSON),
            true,
        );
        assert_eq!(
            statement.sql,
            "SELECT pg_catalog.count(_postgrest_t) AS page_total, coalesce(pg_catalog.json_agg(_postgrest_t), '[]') AS body, \
             (SELECT pg_catalog.count(*) FROM \"public\".\"todos\" WHERE \"public\".\"todos\".\"done\" = $1) AS total_result_set \
             FROM (SELECT \"public\".\"todos\".* FROM \"public\".\"todos\" WHERE \"public\".\"todos\".\"done\" = $1 LIMIT $2) _postgrest_t"
        );
        assert_eq!(statement.params.len(), 2);
    }

    #[test]
    fn csv_reads_the_page_as_a_cte_and_planned_counts_explain_the_filter() {
        let query = parse_read_query("done=eq.true&limit=2").unwrap();
        let csv = Media { handler: crate::rest::media::Handler::Csv, plan: None };
        let statement = read_statement("public", "todos", &query, Some(&csv), false);
        assert!(
            statement.sql.starts_with("WITH pgrst_source AS (SELECT \"public\".\"todos\".* FROM"),
            "{}",
            statement.sql
        );
        assert!(statement.sql.ends_with("FROM (SELECT * FROM pgrst_source) _postgrest_t"), "{}", statement.sql);
        let explain = count_plan_statement("public", "todos", &query);
        assert_eq!(
            explain.sql,
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM \"public\".\"todos\" WHERE \"public\".\"todos\".\"done\" = $1"
        );
        assert_eq!(explain.params.len(), 1);
        assert_eq!(planned_rows(br#"[{"Plan": {"Node Type": "Seq Scan", "Plan Rows": 2260}}]"#), Some(2260));
        assert_eq!(planned_rows(b"[]"), None);
    }

    #[test]
    fn default_select_and_head() {
        let (sql, params) = sql_of("");
        assert!(sql.contains("FROM (SELECT \"public\".\"todos\".* FROM \"public\".\"todos\") _postgrest_t"), "{sql}");
        assert!(params.is_empty());
        let head = read_statement("public", "todos", &ReadQuery::default(), None, false);
        assert!(head.sql.contains("AS page_total, NULL AS body"), "{}", head.sql);
    }

    #[test]
    fn hostile_input_is_quoted_or_bound() {
        // A quoted name with quotes, a semicolon and a comment stays one identifier.
        let (sql, params) =
            sql_of(r#"select="a\"; drop table todos; --"&"x\" or 1%3D1 --"=eq.'; drop table todos; --"#);
        assert!(sql.contains(r#""public"."todos"."a""; drop table todos; --""#), "{sql}");
        assert!(sql.contains(r#""public"."todos"."x"" or 1=1 --" = $1"#), "{sql}");
        assert_eq!(params, ["'; drop table todos; --"]);
        // Values never reach the SQL text.
        let (sql, params) = sql_of("task=like.%27%3B%20select%201%3B--&order=id");
        assert!(!sql.contains("select 1"), "{sql}");
        assert_eq!(params, ["'; select 1;--"]);
        // The relation name is quoted too.
        let statement =
            read_statement("public", "t\"; drop table x; --", &ReadQuery::default(), Some(&Media::JSON), false);
        assert!(statement.sql.contains(r#"FROM "public"."t""; drop table x; --""#), "{}", statement.sql);
    }
}
