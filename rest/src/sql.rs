//! SQL for a read: turns a [`ReadPlan`] (a query resolved against the schema cache) into the one
//! statement that builds the whole response body inside PostgreSQL, as PostgREST does.
//!
//! Embeds become lateral joins, as in PostgREST: a to-one embed
//! `LEFT JOIN LATERAL (SELECT … FROM "public"."users" AS "users_1" WHERE "users_1"."id" =
//! <parent>."user_id") AS "x_1" ON TRUE` selected as `row_to_json("x_1".*)::jsonb`; a to-many
//! embed aggregates its rows, `LEFT JOIN LATERAL (SELECT json_agg("x_1")::jsonb AS "x_1" FROM
//! (…) AS "x_1") AS "x_1" ON TRUE`, selected as `COALESCE("x_1"."x_1", '[]')`; `!inner` turns the
//! join into an inner one (to-many: `ON "x_1" IS NOT NULL`); spreads select the child's columns
//! instead of one JSON value; aggregates group by every other selected expression.
//!
//! Owns: identifier quoting, the SQL of a read level ([`Builder`]: select list, embeds, counts)
//! and the filter/order grammar that writes and calls reuse; the statement around the page and
//! its parameter numbering are [`super::statement`]'s. Invariants: every identifier is emitted
//! through [`quote_ident`] (double-quoted, `"` doubled — the parser has already refused NUL);
//! every value is a bind parameter (`$n`), never text in the SQL; a cast type name from the request
//! (`[A-Za-z0-9_]` only, by the parser) is emitted unquoted only when it is one of
//! [`UNQUOTED_CAST_TYPES`], else quoted in lower case ([`push_cast`]): no word of the request
//! reaches the SQL text unquoted.
//! Same query shape → same SQL text, so the connection's prepared-statement cache hits.
//!
//! Shape (GET as `application/json`; other media types change the `body` expression, see
//! [`super::media`]; HEAD selects `NULL` instead of the aggregate, as PostgREST skips the JSON work):
//!
//! ```sql
//! SELECT pg_catalog.count(_postgrest_t) AS page_total,
//!        coalesce(pg_catalog.json_agg(_postgrest_t), '[]') AS body,
//!        NULLIF(pg_catalog.current_setting('response.headers', true), '') AS pgrst_response_headers, …
//! FROM (SELECT "public"."todos"."id", "public"."todos"."task" FROM "public"."todos"
//!       WHERE "public"."todos"."done" = $1 ORDER BY "public"."todos"."id" DESC
//!       LIMIT $2 OFFSET $3) _postgrest_t
//! ```

use std::fmt::Write as _;

use madbase_pg::Statement;

use super::media::{Media, Rows};
use super::plan::{ChildPlan, ReadPlan};
use super::query::{
    Condition, Direction, Embed, Field, Filter, FilterOp, JoinType, JsonKey, JsonStep, LogicTree, Nulls, OrderTerm,
    ReadQuery, SelectItem,
};
use super::statement::{outer_select, Params};
use crate::schema::relationships::Link;
use crate::schema::SchemaCache;

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

/// The cast type names emitted unquoted: the SQL standard's type keywords, which quoting would
/// change (`"integer"` is no type, `"char"` is a one-byte type, `bit` means `bit(1)`), and the
/// common built-in names (the SQL text of the usual casts stays as written). Every other name is
/// quoted in lower case, which is what PostgreSQL folds an unquoted name to, so `::Mood` and
/// `::"mood"` name the same type.
pub const UNQUOTED_CAST_TYPES: &[&str] = &[
    "bigint",
    "bit",
    "bool",
    "boolean",
    "bytea",
    "char",
    "character",
    "date",
    "dec",
    "decimal",
    "float",
    "float4",
    "float8",
    "int",
    "int2",
    "int4",
    "int8",
    "integer",
    "interval",
    "json",
    "jsonb",
    "nchar",
    "numeric",
    "real",
    "smallint",
    "text",
    "time",
    "timestamp",
    "timestamptz",
    "uuid",
    "varchar",
];

/// Appends `::<type>` for a cast type name from the request: unquoted when it is one of
/// [`UNQUOTED_CAST_TYPES`] (compared case-insensitively, as PostgreSQL reads it), else as a
/// quoted identifier in lower case.
pub fn push_cast(out: &mut String, cast: &str) {
    out.push_str("::");
    let lower = cast.to_ascii_lowercase();
    if UNQUOTED_CAST_TYPES.contains(&lower.as_str()) {
        out.push_str(&lower);
    } else {
        push_ident(out, &lower);
    }
}

/// A PostgreSQL array literal with every element double-quoted (so `,` `{` `}` and spaces are
/// data), `\` and `"` backslash-escaped: the text form `= ANY($n)` parses into the column's
/// array type.
pub fn array_literal(items: &[String]) -> String {
    madbase_pg::text_array_literal(items.iter().map(String::as_str))
}

/// Where one level of a read takes its rows from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'s> {
    /// The `FROM` item (`"public"."todos"`, `pgrst_source AS "todos"`).
    pub from: &'s str,
    /// How its columns are qualified (`"public"."todos"`, `"todos"`).
    pub qualifier: &'s str,
    /// A whole-row reference to its row (`"todos"`), for computed relationships.
    pub row: &'s str,
}

/// State shared by every level of one statement: the schema snapshot, the parameter binder and
/// the embedding depth of the level being built.
///
/// Aliases are PostgREST's: an embedded relation is `"<target>_<depth>"`, its lateral join
/// `"<parent>_<embed key>_<depth>"`. Each lateral subquery is its own scope, so only siblings could
/// clash — two un-aliased embeds of the same name, which PostgreSQL then refuses (42712) exactly
/// as it does behind PostgREST.
pub struct Builder<'b> {
    pub cache: &'b SchemaCache,
    pub bind: &'b mut dyn FnMut(String) -> String,
    depth: usize,
}

impl<'b> Builder<'b> {
    pub fn new(cache: &'b SchemaCache, bind: &'b mut dyn FnMut(String) -> String) -> Self {
        Builder { cache, bind, depth: 0 }
    }

    /// Appends `SELECT … FROM … [joins] [WHERE …] [GROUP BY …] [ORDER BY …] [LIMIT/OFFSET]` for
    /// `plan` read from `source`; `conditions` (join conditions to a parent) are ANDed first.
    /// `star_columns` replaces `*` (writes, whose source has extra columns); `paged` = false
    /// leaves order, limit and offset to the caller.
    pub fn push_level(
        &mut self,
        out: &mut String,
        plan: &ReadPlan<'_>,
        source: Source<'_>,
        conditions: &[String],
        star_columns: Option<&[String]>,
    ) {
        let q = source.qualifier;
        let query = plan.query;
        let mut level = Level {
            aggregated: is_aggregated(&query.select),
            group: Vec::new(),
            joins: String::new(),
            child_aliases: Vec::with_capacity(plan.children.len()),
        };
        self.push_select_list(out, plan, source, star_columns, &mut level);
        let _ = write!(out, " FROM {}{}", source.from, level.joins);
        let null_embeds: Vec<String> = query
            .null_embeds
            .iter()
            .filter_map(|(key, keep_present)| {
                let alias = quote_ident(level.child_alias(plan, key)?);
                Some(if *keep_present { format!("NOT ({alias} IS NULL)") } else { format!("{alias} IS NULL") })
            })
            .collect();
        self.push_where(out, q, query, conditions, &null_embeds);
        if level.aggregated && !level.group.is_empty() {
            out.push_str(" GROUP BY ");
            out.push_str(&level.group.join(", "));
        }
        let related = |name: &str| Some(quote_ident(level.child_alias(plan, name)?));
        push_order_limit(out, q, query, &related, self.bind);
    }

    /// `SELECT <expressions>` of a level: `*` (or `star_columns`) when nothing is selected, else
    /// each item of `select` in order; embeds add their lateral joins to `level`.
    fn push_select_list(
        &mut self,
        out: &mut String,
        plan: &ReadPlan<'_>,
        source: Source<'_>,
        star_columns: Option<&[String]>,
        level: &mut Level,
    ) {
        out.push_str("SELECT ");
        let start = out.len();
        let select: &[SelectItem] = &plan.query.select;
        if select.is_empty() {
            self.push_star(out, start, plan, source.qualifier, star_columns, level);
        }
        for item in select {
            match item {
                SelectItem::Star => self.push_star(out, start, plan, source.qualifier, star_columns, level),
                SelectItem::Column(field) => {
                    separate(out, start);
                    self.push_column(out, plan, source.qualifier, field, level);
                }
                SelectItem::Count { alias, cast } => {
                    separate(out, start);
                    out.push_str("pg_catalog.count(*)");
                    if let Some(cast) = cast {
                        push_cast(out, cast);
                    }
                    out.push_str(" AS ");
                    push_ident(out, alias.as_deref().unwrap_or("count"));
                }
                SelectItem::Embed(embed) => {
                    let Some(child) = plan.child(embed) else { continue };
                    let alias = self.push_join(&mut level.joins, plan, child, source);
                    for (expression, name) in self.embed_selects(child, &alias) {
                        separate(out, start);
                        let _ = write!(out, "{expression} AS ");
                        push_ident(out, &name);
                        if level.aggregated {
                            level.group.push(expression);
                        }
                    }
                    level.child_aliases.push(alias);
                }
            }
        }
    }

    /// `q.*`, or each of `star_columns` by name (grouped by in an aggregated level).
    fn push_star(
        &self,
        out: &mut String,
        start: usize,
        plan: &ReadPlan<'_>,
        q: &str,
        star_columns: Option<&[String]>,
        level: &mut Level,
    ) {
        match star_columns {
            Some(columns) => {
                for c in columns {
                    separate(out, start);
                    let _ = write!(out, "{q}.");
                    push_ident(out, c);
                    if level.aggregated {
                        level.group.push(format!("{q}.{}", quote_ident(c)));
                    }
                }
            }
            None => {
                separate(out, start);
                let _ = write!(out, "{q}.*");
                if level.aggregated {
                    level.group.extend(self.relation_columns(plan).iter().map(|c| format!("{q}.{}", quote_ident(c))));
                }
            }
        }
    }

    /// One selected column: its expression (JSON path, cast, aggregate) and, when its key differs
    /// from the column's name, ` AS "key"`; a plain column of an aggregated level is grouped by.
    fn push_column(&mut self, out: &mut String, plan: &ReadPlan<'_>, q: &str, field: &Field, level: &mut Level) {
        let mut e = self.field_expression(plan, q, field);
        if let Some(cast) = &field.cast {
            push_cast(&mut e, cast);
        }
        let key = match &field.aggregate {
            Some(aggregate) => {
                e = format!("pg_catalog.{}({e})", aggregate.function.name());
                if let Some(cast) = &aggregate.cast {
                    push_cast(&mut e, cast);
                }
                field.alias.as_deref().unwrap_or(aggregate.function.name())
            }
            None => {
                if level.aggregated {
                    level.group.push(e.clone());
                }
                field.key()
            }
        };
        out.push_str(&e);
        if key != field.name || field.cast.is_some() || field.aggregate.is_some() || !field.path.is_empty() {
            out.push_str(" AS ");
            push_ident(out, key);
        }
    }

    /// ` WHERE …` (nothing when there is no condition): `before`, then every filter and logic tree
    /// of `query` (columns qualified by `q`), then `after`, ANDed.
    fn push_where(&mut self, out: &mut String, q: &str, query: &ReadQuery, before: &[String], after: &[String]) {
        push_conditions(out, q, &query.filters, &query.trees, [before, after], self.bind);
    }

    /// The columns of the level's relation, from the snapshot (empty when unknown).
    fn relation_columns(&self, plan: &ReadPlan<'_>) -> Vec<String> {
        self.cache
            .relation(&plan.relation.schema, &plan.relation.name)
            .map(|r| r.columns.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default()
    }

    /// `q."col"` with the field's JSON path; a path into a column that is not `json`/`jsonb`
    /// (composite, array) goes through `to_jsonb` first, as in PostgREST.
    fn field_expression(&mut self, plan: &ReadPlan<'_>, q: &str, field: &Field) -> String {
        let mut e = format!("{q}.{}", quote_ident(&field.name));
        if !field.path.is_empty() {
            let column_type = self
                .cache
                .relation(&plan.relation.schema, &plan.relation.name)
                .and_then(|r| r.column(&field.name))
                .map(|c| c.type_name.as_str());
            if column_type.is_some_and(|t| t != "json" && t != "jsonb") {
                e = format!("pg_catalog.to_jsonb({e})");
            }
            push_json_path(&mut e, &field.path, self.bind);
        }
        e
    }

    /// The FROM item of `child` (its relation, junction or function, aliased for the current
    /// depth) and the conditions that join it to `parent`; returns (table alias, from, conditions).
    fn child_from(&self, child: &ChildPlan<'_>, parent: Source<'_>) -> (String, String, Vec<String>) {
        let n = self.depth;
        let target = &child.relationship.target;
        let table_alias = quote_ident(&format!("{}_{n}", target.name));
        let target_qualified = format!("{}.{}", quote_ident(&target.schema), quote_ident(&target.name));
        let mut conditions = Vec::new();
        let from = match &child.relationship.link {
            Link::ForeignKey { columns, .. } => {
                for (origin, target) in columns {
                    conditions.push(format!(
                        "{table_alias}.{} = {}.{}",
                        quote_ident(target),
                        parent.qualifier,
                        quote_ident(origin)
                    ));
                }
                format!("{target_qualified} AS {table_alias}")
            }
            Link::Junction { junction, origin_columns, target_columns, .. } => {
                let junction_alias = quote_ident(&format!("{}_{n}", junction.name));
                for (target, j) in target_columns {
                    conditions.push(format!(
                        "{junction_alias}.{} = {table_alias}.{}",
                        quote_ident(j),
                        quote_ident(target)
                    ));
                }
                for (origin, j) in origin_columns {
                    conditions.push(format!(
                        "{junction_alias}.{} = {}.{}",
                        quote_ident(j),
                        parent.qualifier,
                        quote_ident(origin)
                    ));
                }
                format!(
                    "{target_qualified} AS {table_alias}, {}.{} AS {junction_alias}",
                    quote_ident(&junction.schema),
                    quote_ident(&junction.name)
                )
            }
            Link::Computed { function, .. } => {
                let origin = &child.relationship.origin;
                format!(
                    "{}.{}({}::{}.{}) AS {table_alias}",
                    quote_ident(&function.schema),
                    quote_ident(&function.name),
                    parent.row,
                    quote_ident(&origin.schema),
                    quote_ident(&origin.name)
                )
            }
        };
        (table_alias, from, conditions)
    }

    /// Appends the lateral join of `child` (of the level `plan`) to `joins`; returns its alias.
    fn push_join(
        &mut self,
        joins: &mut String,
        plan: &ReadPlan<'_>,
        child: &ChildPlan<'_>,
        parent: Source<'_>,
    ) -> String {
        self.depth += 1;
        let (table_alias, from, conditions) = self.child_from(child, parent);
        let alias = format!("{}_{}_{}", plan.relation.name, child.embed.key(), self.depth);
        let quoted = quote_ident(&alias);
        let mut sub = String::new();
        let source = Source { from: &from, qualifier: &table_alias, row: &table_alias };
        self.push_level(&mut sub, &child.plan, source, &conditions, None);
        self.depth -= 1;
        let inner = child.embed.join == Some(JoinType::Inner);
        let join = if inner { " INNER JOIN LATERAL (" } else { " LEFT JOIN LATERAL (" };
        if child.relationship.is_to_one() {
            let _ = write!(joins, "{join}{sub}) AS {quoted} ON TRUE");
        } else {
            let aggregates = if child.embed.spread {
                self.output_names(&child.plan)
                    .iter()
                    .map(|name| {
                        let name = quote_ident(name);
                        format!("pg_catalog.json_agg({quoted}.{name})::jsonb AS {name}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                format!("pg_catalog.json_agg({quoted})::jsonb AS {quoted}")
            };
            let on = if inner { format!("{quoted} IS NOT NULL") } else { "TRUE".to_owned() };
            let _ = write!(joins, "{join}SELECT {aggregates} FROM ({sub}) AS {quoted}) AS {quoted} ON {on}");
        }
        alias
    }

    /// What the parent selects for `child` (expression, output name): nothing for an empty embed
    /// (`name()`, used only to filter), one JSON value for an embed, the child's columns for a
    /// spread.
    fn embed_selects(&self, child: &ChildPlan<'_>, alias: &str) -> Vec<(String, String)> {
        let quoted = quote_ident(alias);
        let embed: &Embed = child.embed;
        if embed.query.select.is_empty() {
            return Vec::new();
        }
        if embed.spread {
            let to_one = child.relationship.is_to_one();
            return self
                .output_names(&child.plan)
                .into_iter()
                .map(|name| {
                    let column = format!("{quoted}.{}", quote_ident(&name));
                    let e = if to_one { column } else { format!("COALESCE({column}, '[]')") };
                    (e, name)
                })
                .collect();
        }
        let e = if child.relationship.is_to_one() {
            format!("row_to_json({quoted}.*)::jsonb")
        } else {
            format!("COALESCE({quoted}.{quoted}, '[]')")
        };
        vec![(e, embed.key().to_owned())]
    }

    /// The keys a level's rows have (for spreads).
    fn output_names(&self, plan: &ReadPlan<'_>) -> Vec<String> {
        let mut names = Vec::new();
        if plan.query.select.is_empty() {
            return self.relation_columns(plan);
        }
        for item in &plan.query.select {
            match item {
                SelectItem::Star => names.extend(self.relation_columns(plan)),
                SelectItem::Column(field) => names.push(match &field.aggregate {
                    Some(aggregate) => field.alias.clone().unwrap_or_else(|| aggregate.function.name().to_owned()),
                    None => field.key().to_owned(),
                }),
                SelectItem::Count { alias, .. } => names.push(alias.clone().unwrap_or_else(|| "count".to_owned())),
                SelectItem::Embed(embed) => {
                    let Some(child) = plan.child(embed) else { continue };
                    if embed.spread {
                        names.extend(self.output_names(&child.plan));
                    } else if !embed.query.select.is_empty() {
                        names.push(embed.key().to_owned());
                    }
                }
            }
        }
        names
    }

    /// `EXISTS`/`NOT EXISTS` conditions that make a count see what the page sees: one per
    /// `!inner` embed and per embed null filter of `plan`'s level (recursively).
    fn push_count_conditions(&mut self, clauses: &mut Vec<String>, plan: &ReadPlan<'_>, parent: Source<'_>) {
        for child in &plan.children {
            let null_filter = plan.query.null_embeds.iter().find(|(k, _)| k == child.embed.key()).map(|(_, p)| *p);
            let keep = match (child.embed.join, null_filter) {
                (_, Some(keep_present)) => keep_present,
                (Some(JoinType::Inner), None) => true,
                _ => continue,
            };
            let mut probe = String::new();
            self.push_exists(&mut probe, child, parent);
            clauses.push(if keep { probe } else { format!("NOT {probe}") });
        }
    }

    fn push_exists(&mut self, out: &mut String, child: &ChildPlan<'_>, parent: Source<'_>) {
        // The same FROM and join conditions as the embed, without building any JSON.
        self.depth += 1;
        let (table_alias, from, conditions) = self.child_from(child, parent);
        let source = Source { from: &from, qualifier: &table_alias, row: &table_alias };
        let mut nested = Vec::new();
        self.push_count_conditions(&mut nested, &child.plan, source);
        let _ = write!(out, "EXISTS (SELECT 1 FROM {from}");
        self.push_where(out, &table_alias, child.plan.query, &conditions, &nested);
        out.push(')');
        self.depth -= 1;
    }

    /// `SELECT pg_catalog.count(*) FROM … WHERE …`: the number of rows of `plan`'s level that the
    /// page is cut from.
    pub fn push_count(&mut self, out: &mut String, plan: &ReadPlan<'_>, source: Source<'_>) {
        self.push_rows(out, "pg_catalog.count(*)", plan, source);
    }

    /// `SELECT <what> FROM … WHERE …` over the rows of `plan`'s level that the page is cut from
    /// (filters, trees, `!inner` embeds and embed null filters; no order or page).
    pub fn push_rows(&mut self, out: &mut String, what: &str, plan: &ReadPlan<'_>, source: Source<'_>) {
        let mut nested = Vec::new();
        self.push_count_conditions(&mut nested, plan, source);
        let _ = write!(out, "SELECT {what} FROM {}", source.from);
        self.push_where(out, source.qualifier, plan.query, &[], &nested);
    }
}

/// What one level of a read collects while its select list is written.
struct Level {
    /// The level has aggregates: its other expressions are grouped by.
    aggregated: bool,
    /// The `GROUP BY` expressions.
    group: Vec<String>,
    /// The lateral joins of its embeds.
    joins: String,
    /// The lateral alias of each child, in `plan.children` order.
    child_aliases: Vec<String>,
}

impl Level {
    /// The lateral alias of the embed `key` of `plan`.
    fn child_alias<'l>(&'l self, plan: &ReadPlan<'_>, key: &str) -> Option<&'l str> {
        let i = plan.children.iter().position(|c| c.embed.key() == key)?;
        Some(&self.child_aliases[i])
    }
}

/// Only a level with aggregates needs its other expressions again, for `GROUP BY`.
fn is_aggregated(select: &[SelectItem]) -> bool {
    select.iter().any(|item| match item {
        SelectItem::Column(field) => field.aggregate.is_some(),
        SelectItem::Count { .. } => true,
        SelectItem::Star | SelectItem::Embed(_) => false,
    })
}

/// `, ` before every select expression but the first (which starts at `start`).
fn separate(out: &mut String, start: usize) {
    if out.len() > start {
        out.push_str(", ");
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
    push_conditions(out, qualifier, filters, trees, [&[], &[]], bind);
}

/// ` WHERE …` (nothing when there is no condition): `extra[0]`, the filters, the trees, then
/// `extra[1]` (conditions already written as SQL), ANDed.
fn push_conditions(
    out: &mut String,
    qualifier: &str,
    filters: &[Filter],
    trees: &[LogicTree],
    extra: [&[String]; 2],
    bind: &mut dyn FnMut(String) -> String,
) {
    let mut first = true;
    let mut next =
        |out: &mut String| out.push_str(if std::mem::replace(&mut first, false) { " WHERE " } else { " AND " });
    for condition in extra[0] {
        next(out);
        out.push_str(condition);
    }
    for filter in filters {
        next(out);
        push_filter(out, qualifier, filter, bind);
    }
    for tree in trees {
        next(out);
        push_tree(out, qualifier, tree, bind);
    }
    for condition in extra[1] {
        next(out);
        out.push_str(condition);
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
/// `out`, every column qualified by `qualifier`; `related` gives the alias of a to-one embed
/// named by an `order=embed(col)` term; limit and offset go through `bind`.
pub fn push_order_limit(
    out: &mut String,
    qualifier: &str,
    query: &ReadQuery,
    related: &dyn Fn(&str) -> Option<String>,
    bind: &mut dyn FnMut(String) -> String,
) {
    for (i, OrderTerm { relation, column: name, path, direction, nulls }) in query.order.iter().enumerate() {
        out.push_str(if i == 0 { " ORDER BY " } else { ", " });
        match relation.as_deref().and_then(related) {
            Some(alias) => out.push_str(&alias),
            None => out.push_str(qualifier),
        }
        out.push('.');
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

/// Builds the statement for reading `plan` (rooted at its relation); its `body` column is built
/// by `media` ([`Media::body_sql`]), or is `NULL` without one (HEAD: the aggregate is not
/// computed at all); the outer `SELECT` is [`outer_select`], which ends with the response GUCs.
///
/// With `exact_count` (`Prefer: count=exact`) a third column, `total_result_set`, counts the rows
/// the page is cut from (filters, `!inner` embeds, embed null filters; no order or page). A media
/// type that reads the source itself (CSV's header) gets the page as the CTE `pgrst_source`, as in
/// PostgREST.
pub fn read_statement(cache: &SchemaCache, plan: &ReadPlan<'_>, media: Option<&Media>, exact_count: bool) -> Statement {
    root_statement(cache, plan, |builder, source| {
        let mut inner = String::new();
        builder.push_level(&mut inner, plan, source, &[], None);
        let total = if exact_count {
            let mut count = String::new();
            builder.push_count(&mut count, plan, source);
            format!(", ({count}) AS total_result_set")
        } else {
            String::new()
        };
        let body = media.map_or_else(|| "NULL".to_owned(), |m| m.body_sql(Rows::Records));
        if media.is_some_and(Media::needs_source) {
            outer_select(Some(&inner), &body, &total, "SELECT * FROM pgrst_source")
        } else {
            outer_select(None, &body, &total, &inner)
        }
    })
}

/// `Prefer: count=planned|estimated`: `EXPLAIN (FORMAT JSON)` of PostgREST's count query for the
/// read (`SELECT 1` from the rows the page is cut from, see [`Builder::push_count`]), bound with the
/// same filter values; the planner's `Plan Rows` is the estimate ([`planned_rows`]).
pub fn count_plan_statement(cache: &SchemaCache, plan: &ReadPlan<'_>) -> Statement {
    root_statement(cache, plan, |builder, source| {
        let mut sql = String::from("EXPLAIN (FORMAT JSON) ");
        builder.push_rows(&mut sql, "1", plan, source);
        sql
    })
}

/// The statement `build` writes for `plan` read from its own relation (`"schema"."name"`, its rows
/// referenced as `"name"`), with the values it binds as parameters in order.
fn root_statement(
    cache: &SchemaCache,
    plan: &ReadPlan<'_>,
    build: impl FnOnce(&mut Builder<'_>, Source<'_>) -> String,
) -> Statement {
    let mut params = Params::default();
    let sql = {
        let mut bind = |value: String| params.bind(value);
        let relation = &plan.relation;
        let qualified = format!("{}.{}", quote_ident(&relation.schema), quote_ident(&relation.name));
        let row = quote_ident(&relation.name);
        let source = Source { from: &qualified, qualifier: &qualified, row: &row };
        build(&mut Builder::new(cache, &mut bind), source)
    };
    params.statement(sql)
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
    use crate::query::parse_read_query;
    use crate::schema::relationships::QualifiedName;

    /// The read statement for `query` on `relation`, planned against an empty cache.
    fn statement(relation: &str, query: &ReadQuery, media: Option<&Media>, exact_count: bool) -> Statement {
        let cache = SchemaCache::default();
        let plan = crate::plan::plan(&cache, "public", QualifiedName::new("public", relation), query).unwrap();
        read_statement(&cache, &plan, media, exact_count)
    }

    fn sql_of(query: &str) -> (String, Vec<String>) {
        let statement = statement("todos", &parse_read_query(query).unwrap(), Some(&Media::JSON), false);
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
    fn casts_from_the_request_are_keywords_or_quoted() {
        let cast = |name: &str| {
            let mut out = String::new();
            push_cast(&mut out, name);
            out
        };
        assert_eq!(cast("text"), "::text");
        assert_eq!(cast("INTEGER"), "::integer");
        assert_eq!(cast("Mood"), "::\"mood\"");
        assert_eq!(cast("pg_sleep"), "::\"pg_sleep\"");
        let (sql, _) = sql_of("select=id::int,task::citext,n:id::Select");
        assert!(sql.contains("\"id\"::int AS \"id\""), "{sql}");
        assert!(sql.contains("\"task\"::\"citext\" AS \"task\""), "{sql}");
        assert!(sql.contains("\"id\"::\"select\" AS \"n\""), "{sql}");
    }

    #[test]
    fn full_shape() {
        let (sql, params) = sql_of("select=id,t:task,done::text&done=is.false&id=not.in.(1,2)&task=ilike.*x*&order=id.desc.nullslast,task&limit=10&offset=5");
        assert_eq!(
            sql,
            format!(
                "SELECT pg_catalog.count(_postgrest_t) AS page_total, coalesce(pg_catalog.json_agg(_postgrest_t), '[]') AS body, \
             {} FROM (SELECT \"public\".\"todos\".\"id\", \"public\".\"todos\".\"task\" AS \"t\", \"public\".\"todos\".\"done\"::text AS \"done\" \
             FROM \"public\".\"todos\" WHERE \"public\".\"todos\".\"done\" IS FALSE AND NOT (\"public\".\"todos\".\"id\" = ANY ($1)) \
             AND \"public\".\"todos\".\"task\" ILIKE $2 ORDER BY \"public\".\"todos\".\"id\" DESC NULLS LAST, \"public\".\"todos\".\"task\" \
             LIMIT $3 OFFSET $4) _postgrest_t",
                crate::statement::RESPONSE_GUC_COLUMNS
            )
        );
        assert_eq!(params, ["{\"1\",\"2\"}", "%x%", "10", "5"]);
    }

    #[test]
    fn exact_count_repeats_the_filter() {
        let statement =
            statement("todos", &parse_read_query("done=eq.true&limit=2").unwrap(), Some(&Media::JSON), true);
        assert_eq!(
            statement.sql,
            format!(
                "SELECT pg_catalog.count(_postgrest_t) AS page_total, coalesce(pg_catalog.json_agg(_postgrest_t), '[]') AS body, \
             (SELECT pg_catalog.count(*) FROM \"public\".\"todos\" WHERE \"public\".\"todos\".\"done\" = $3) AS total_result_set, \
             {} FROM (SELECT \"public\".\"todos\".* FROM \"public\".\"todos\" WHERE \"public\".\"todos\".\"done\" = $1 LIMIT $2) _postgrest_t",
                crate::statement::RESPONSE_GUC_COLUMNS
            )
        );
        assert_eq!(statement.params.len(), 3);
    }

    #[test]
    fn csv_reads_the_page_as_a_cte_and_planned_counts_explain_the_filter() {
        let query = parse_read_query("done=eq.true&limit=2").unwrap();
        let csv = Media { handler: crate::media::Handler::Csv, plan: None };
        let statement = statement("todos", &query, Some(&csv), false);
        assert!(
            statement.sql.starts_with("WITH pgrst_source AS (SELECT \"public\".\"todos\".* FROM"),
            "{}",
            statement.sql
        );
        assert!(statement.sql.ends_with("FROM (SELECT * FROM pgrst_source) _postgrest_t"), "{}", statement.sql);
        let cache = SchemaCache::default();
        let plan = crate::plan::plan(&cache, "public", QualifiedName::new("public", "todos"), &query).unwrap();
        let explain = count_plan_statement(&cache, &plan);
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
        let head = statement("todos", &ReadQuery::default(), None, false);
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
        let statement = statement("t\"; drop table x; --", &ReadQuery::default(), Some(&Media::JSON), false);
        assert!(statement.sql.contains(r#"FROM "public"."t""; drop table x; --""#), "{}", statement.sql);
    }
}
