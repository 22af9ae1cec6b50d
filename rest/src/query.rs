//! The PostgREST query-string grammar for reads, parsed into a [`ReadQuery`] tree: `select` with
//! aliases, casts, JSON paths, aggregates, embeds (hints, `!inner`/`!left`, spreads) nested to any
//! bounded depth; horizontal filters with every operator, `any`/`all` quantifiers, full-text
//! search and logic trees; `order` (JSON paths, `embed(col)`), `limit`, `offset`; and all of
//! those on embeds through an embed path (`actors.roles.order=…`), attached to their embed.
//!
//! Owns: percent-decoding of the query string and turning it into typed, validated pieces; it
//! never produces SQL (that is `sql`). Invariants: identifiers come out as plain strings (never
//! quoted here, never containing NUL — NUL cannot travel inside the SQL text of a Parse message);
//! values come out as plain strings that the SQL builder binds as parameters; every list a peer
//! can grow is bounded by the `MAX_*` constants (nesting of embeds and logic trees by
//! [`MAX_TREE_DEPTH`]); a parameter addressed to an embed that is not selected is an error
//! (PGRST108), never silently ignored — a wrong result is worse than a 400.

use std::fmt;

/// At most this many horizontal filters per request.
pub const MAX_FILTERS: usize = 64;
/// At most this many `order` terms.
pub const MAX_ORDER_TERMS: usize = 16;
/// At most this many elements in one `in.(...)` list.
pub const MAX_IN_ITEMS: usize = 1024;
/// At most this many `select` items.
pub const MAX_SELECT_ITEMS: usize = 256;
/// Deepest nesting of logic trees (`or=(and(or(…)))`).
pub const MAX_TREE_DEPTH: usize = 16;
/// Longest identifier accepted, in bytes (PostgreSQL truncates at 63; this only bounds work).
pub const MAX_IDENT_BYTES: usize = 512;

/// A parsed read request: what to select, which rows, in which order, which page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadQuery {
    /// The `select` items; empty means `*`.
    pub select: Vec<SelectItem>,
    /// Filters, ANDed.
    pub filters: Vec<Filter>,
    /// Logic trees (`or=(…)`, `and=(…)`, `not.or=(…)`, `not.and=(…)`), ANDed with the filters.
    pub trees: Vec<LogicTree>,
    pub order: Vec<OrderTerm>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    /// `embed=is.null` / `embed=not.is.null`: keeps rows with (or without) a related row; names
    /// an embed of this level (the parser only puts a filter here when its name is one).
    pub null_embeds: Vec<(String, bool)>,
}

impl ReadQuery {
    /// Whether this level or any embed below uses an aggregate.
    pub fn has_aggregates(&self) -> bool {
        self.select.iter().any(|item| match item {
            SelectItem::Column(field) => field.aggregate.is_some(),
            SelectItem::Count { .. } => true,
            SelectItem::Embed(embed) => embed.query.has_aggregates(),
            SelectItem::Star => false,
        })
    }

    fn embed_mut(&mut self, key: &str) -> Option<&mut Embed> {
        self.select.iter_mut().find_map(|item| match item {
            SelectItem::Embed(embed) if embed.key() == key => Some(&mut **embed),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectItem {
    /// `*`: every column.
    Star,
    /// `[alias:]column[->path][::cast][.aggregate()[::cast]]`.
    Column(Field),
    /// `[alias:]count()[::cast]`: the number of rows (of the group).
    Count { alias: Option<String>, cast: Option<String> },
    /// `[alias:]relation[!hint][!inner|!left](…)` or `...relation(…)`: a related resource.
    Embed(Box<Embed>),
}

/// One selected column (or JSON path into one), possibly cast and aggregated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub path: Vec<JsonStep>,
    pub alias: Option<String>,
    pub cast: Option<String>,
    pub aggregate: Option<Aggregate>,
}

impl Field {
    /// The key this field has in the response: the alias, else the last JSON path key, else the
    /// column name (PostgREST's rule).
    pub fn key(&self) -> &str {
        if let Some(alias) = &self.alias {
            return alias;
        }
        match self.path.last().map(|s| &s.key) {
            Some(JsonKey::Name(name)) => name,
            // An array index has no name: PostgREST keys it by the column.
            Some(JsonKey::Index(_)) | None => &self.name,
        }
    }
}

/// `.sum()`, `.avg()`, `.min()`, `.max()`, `.count()` after a field, with an optional cast of the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    pub function: AggregateFunction,
    pub cast: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFunction {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

impl AggregateFunction {
    pub fn name(self) -> &'static str {
        match self {
            AggregateFunction::Count => "count",
            AggregateFunction::Sum => "sum",
            AggregateFunction::Avg => "avg",
            AggregateFunction::Min => "min",
            AggregateFunction::Max => "max",
        }
    }

    fn from_name(name: &str) -> Option<AggregateFunction> {
        Some(match name {
            "count" => AggregateFunction::Count,
            "sum" => AggregateFunction::Sum,
            "avg" => AggregateFunction::Avg,
            "min" => AggregateFunction::Min,
            "max" => AggregateFunction::Max,
            _ => return None,
        })
    }
}

/// `!inner` / `!left`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinType {
    Inner,
    Left,
}

/// An embedded (or spread) related resource and everything the request says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embed {
    pub alias: Option<String>,
    /// The target: a relation, a foreign-key column, a constraint or a computed-relationship function.
    pub name: String,
    pub hint: Option<String>,
    pub join: Option<JoinType>,
    /// `...name(…)`: the columns are lifted into the parent.
    pub spread: bool,
    /// Its own select list (empty for `name()`), filters, order and page.
    pub query: ReadQuery,
}

impl Embed {
    /// The name filters, order and limits use for it (PostgREST v12+: the alias when aliased).
    pub fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

/// One `->key` / `->>key` step of a JSON path; `->>` (text) can only be the last step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonStep {
    pub key: JsonKey,
    /// `->>`: the value as text rather than JSON.
    pub as_text: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonKey {
    /// An object member.
    Name(String),
    /// An array element (negative counts from the end).
    Index(i64),
}

/// Longest JSON path accepted, in steps.
pub const MAX_JSON_PATH: usize = 16;

/// `->a->0->>b` after a field name (nothing when the cursor is not at `->`).
fn json_path(cur: &mut Cursor<'_>) -> Result<Vec<JsonStep>, (usize, String)> {
    let mut path = Vec::new();
    loop {
        let as_text = if cur.eat("->>") {
            true
        } else if cur.eat("->") {
            false
        } else {
            return Ok(path);
        };
        if path.len() == MAX_JSON_PATH {
            return Err((cur.column(), format!("JSON paths are limited to {MAX_JSON_PATH} steps")));
        }
        let quoted = cur.peek() == Some('"');
        let name = field_name(cur)?;
        let key = match name.parse::<i64>() {
            Ok(index) if !quoted => JsonKey::Index(index),
            _ => JsonKey::Name(name),
        };
        path.push(JsonStep { key, as_text });
        if as_text {
            return Ok(path);
        }
    }
}

/// `[not.]or(…)` / `[not.]and(…)`: conditions joined by one operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicTree {
    pub op: LogicOp,
    pub negated: bool,
    pub children: Vec<Condition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogicOp {
    And,
    Or,
}

impl LogicOp {
    pub fn sql(self) -> &'static str {
        match self {
            LogicOp::And => " AND ",
            LogicOp::Or => " OR ",
        }
    }
}

/// One member of a logic tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Filter(Filter),
    Tree(LogicTree),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub column: String,
    /// `column->a->>b`: the JSON path into the column (empty for the column itself).
    pub path: Vec<JsonStep>,
    /// `not.` prefix.
    pub negated: bool,
    pub op: FilterOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterOp {
    /// A binary comparison against one bound value (`like`/`ilike` values already have `*` → `%`).
    Compare(CompareOp, String),
    /// `op(any).{a,b}` / `op(all).{a,b}`: the comparison against every element of the bound array
    /// literal (`like`/`ilike` elements already have `*` → `%`).
    Quantified(CompareOp, Quantifier, String),
    /// `fts|plfts|phfts|wfts[(config)].query`: `column @@ <fn>([config,] query)`, both bound.
    TextSearch(TextSearch, Option<String>, String),
    /// `is.null|not_null|true|false|unknown` (no value is bound).
    Is(IsValue),
    /// `in.(a,b,"c,d")`: the elements, unquoted.
    In(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    Ilike,
    /// `match`: POSIX regular expression, case-sensitive.
    Match,
    /// `imatch`: POSIX regular expression, case-insensitive.
    Imatch,
    /// `isdistinct`: `IS DISTINCT FROM`.
    IsDistinct,
    /// `cs`: contains (arrays, ranges, JSON).
    Contains,
    /// `cd`: contained in.
    ContainedIn,
    /// `ov`: overlaps.
    Overlaps,
    /// `sl`: strictly left of (ranges).
    StrictlyLeft,
    /// `sr`: strictly right of.
    StrictlyRight,
    /// `nxr`: does not extend to the right of.
    NotRight,
    /// `nxl`: does not extend to the left of.
    NotLeft,
    /// `adj`: adjacent to.
    Adjacent,
}

impl CompareOp {
    /// The operator named `name` in the query string.
    fn from_name(name: &str) -> Option<CompareOp> {
        Some(match name {
            "eq" => CompareOp::Eq,
            "neq" => CompareOp::Neq,
            "gt" => CompareOp::Gt,
            "gte" => CompareOp::Gte,
            "lt" => CompareOp::Lt,
            "lte" => CompareOp::Lte,
            "like" => CompareOp::Like,
            "ilike" => CompareOp::Ilike,
            "match" => CompareOp::Match,
            "imatch" => CompareOp::Imatch,
            "isdistinct" => CompareOp::IsDistinct,
            "cs" => CompareOp::Contains,
            "cd" => CompareOp::ContainedIn,
            "ov" => CompareOp::Overlaps,
            "sl" => CompareOp::StrictlyLeft,
            "sr" => CompareOp::StrictlyRight,
            "nxr" => CompareOp::NotRight,
            "nxl" => CompareOp::NotLeft,
            "adj" => CompareOp::Adjacent,
            _ => return None,
        })
    }

    /// The SQL operator.
    pub fn sql(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Neq => "<>",
            CompareOp::Gt => ">",
            CompareOp::Gte => ">=",
            CompareOp::Lt => "<",
            CompareOp::Lte => "<=",
            CompareOp::Like => "LIKE",
            CompareOp::Ilike => "ILIKE",
            CompareOp::Match => "~",
            CompareOp::Imatch => "~*",
            CompareOp::IsDistinct => "IS DISTINCT FROM",
            CompareOp::Contains => "@>",
            CompareOp::ContainedIn => "<@",
            CompareOp::Overlaps => "&&",
            CompareOp::StrictlyLeft => "<<",
            CompareOp::StrictlyRight => ">>",
            CompareOp::NotRight => "&<",
            CompareOp::NotLeft => "&>",
            CompareOp::Adjacent => "-|-",
        }
    }

    /// Operators PostgREST accepts with an `(any)`/`(all)` quantifier.
    fn quantifiable(self) -> bool {
        matches!(
            self,
            CompareOp::Eq
                | CompareOp::Gt
                | CompareOp::Gte
                | CompareOp::Lt
                | CompareOp::Lte
                | CompareOp::Like
                | CompareOp::Ilike
                | CompareOp::Match
                | CompareOp::Imatch
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantifier {
    Any,
    All,
}

impl Quantifier {
    pub fn sql(self) -> &'static str {
        match self {
            Quantifier::Any => "ANY",
            Quantifier::All => "ALL",
        }
    }
}

/// The full-text search operators and the `tsquery` constructor each uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextSearch {
    /// `fts`: `to_tsquery`.
    Fts,
    /// `plfts`: `plainto_tsquery`.
    Plain,
    /// `phfts`: `phraseto_tsquery`.
    Phrase,
    /// `wfts`: `websearch_to_tsquery`.
    Websearch,
}

impl TextSearch {
    fn from_name(name: &str) -> Option<TextSearch> {
        Some(match name {
            "fts" => TextSearch::Fts,
            "plfts" => TextSearch::Plain,
            "phfts" => TextSearch::Phrase,
            "wfts" => TextSearch::Websearch,
            _ => return None,
        })
    }

    pub fn function(self) -> &'static str {
        match self {
            TextSearch::Fts => "pg_catalog.to_tsquery",
            TextSearch::Plain => "pg_catalog.plainto_tsquery",
            TextSearch::Phrase => "pg_catalog.phraseto_tsquery",
            TextSearch::Websearch => "pg_catalog.websearch_to_tsquery",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsValue {
    Null,
    NotNull,
    True,
    False,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nulls {
    First,
    Last,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTerm {
    /// `order=embed(column)`: the column of a to-one embed of this level.
    pub relation: Option<String>,
    pub column: String,
    /// JSON path into the column (`order=data->a.desc`).
    pub path: Vec<JsonStep>,
    pub direction: Option<Direction>,
    pub nulls: Option<Nulls>,
}

/// Why a query string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// PostgREST's PGRST100 shape: `"failed to parse <what> (<input>)" (line 1, column <c>)`.
    #[error("\"failed to parse {what} ({input})\" (line 1, column {column})")]
    Parse { what: &'static str, input: String, column: usize, details: String },
    /// A bounded list grew past its constant.
    #[error("too many {what} in the query string")]
    TooMany { what: &'static str, max: usize },
    /// A reserved key given twice (which one wins is ambiguous; refuse rather than guess).
    #[error("the query parameter '{0}' was given more than once")]
    Duplicate(&'static str),
    /// `limit=-1`: PostgREST answers 416 PGRST103.
    #[error("Requested range not satisfiable")]
    NegativeLimit,
    /// Bad percent-encoding or not UTF-8 after decoding.
    #[error("the query string is not valid percent-encoded UTF-8")]
    Encoding,
    /// A filter, order or limit on an embed that is not in `select`: 400 PGRST108.
    #[error("'{0}' is not an embedded resource in this request")]
    NotEmbedded(String),
    /// An operator other than `is.null` / `not.is.null` on an embed: 400 PGRST120.
    #[error("Bad operator on the '{0}' embedded resource")]
    BadEmbedOperator(String),
}

/// PGRST108's hint for `name` (an embed filtered, ordered or limited but not selected).
pub fn not_embedded_hint(name: &str) -> String {
    format!("Verify that '{name}' is included in the 'select' query parameter.")
}

impl QueryError {
    /// The `details` member of the error body.
    pub fn details(&self) -> Option<String> {
        match self {
            QueryError::Parse { details, .. } => Some(details.clone()),
            QueryError::TooMany { what, max } => Some(format!("At most {max} {what} are allowed")),
            QueryError::NegativeLimit => Some("Limit should be greater than or equal to zero.".into()),
            QueryError::BadEmbedOperator(_) => {
                Some("Only is null or not is null filters are allowed on embedded resources".into())
            }
            QueryError::Duplicate(_) | QueryError::Encoding | QueryError::NotEmbedded(_) => None,
        }
    }
}

/// Decodes `%XX` escapes (and `+` as space when `plus_is_space`, as HTML forms and
/// `URLSearchParams` encode it; PostgREST's `parseQuery` does the same for the query string).
pub fn percent_decode(input: &str, plus_is_space: bool) -> Result<String, QueryError> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(QueryError::Encoding)?;
                let text = std::str::from_utf8(hex).map_err(|_| QueryError::Encoding)?;
                out.push(u8::from_str_radix(text, 16).map_err(|_| QueryError::Encoding)?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| QueryError::Encoding)
}

/// Parses a whole query string (without `?`) into a [`ReadQuery`].
pub fn parse_read_query(query: &str) -> Result<ReadQuery, QueryError> {
    let mut read = ReadQuery::default();
    let mut seen_select = false;
    // Keys may come in any order, so what targets an embed waits until `select` is known.
    let mut embedded: Vec<(Vec<String>, EmbedParam)> = Vec::new();
    let mut seen: Vec<(Vec<String>, &'static str)> = Vec::new();
    let mut conditions = 0usize;
    for pair in query.split('&') {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(raw_key, true)?;
        let value = percent_decode(raw_value, true)?;
        // PostgREST ignores empty-valued keys (and so empty keys).
        if key.is_empty() || value.is_empty() {
            continue;
        }
        match key.as_str() {
            "select" => {
                once(&mut seen_select, "select")?;
                read.select = parse_select(&value)?;
                continue;
            }
            // Used only by writes; PostgREST accepts and ignores them on reads.
            "columns" | "on_conflict" => continue,
            _ => {}
        }
        let (path, target) = parse_key(&key)?;
        let param = match target {
            KeyTarget::Order => EmbedParam::Order(parse_order(&value)?),
            KeyTarget::Limit => {
                let limit = parse_integer("limit", &value)?;
                if limit < 0 {
                    return Err(QueryError::NegativeLimit);
                }
                EmbedParam::Limit(limit)
            }
            KeyTarget::Offset => {
                let offset = parse_integer("offset", &value)?;
                if offset < 0 {
                    return Err(parse_error("offset", &value, 1, "Offset should be greater than or equal to zero."));
                }
                EmbedParam::Offset(offset)
            }
            KeyTarget::Tree { op, negated } => {
                let mut budget = MAX_FILTERS.saturating_sub(conditions);
                let children = parse_tree_body(&value, 1, &mut budget)?;
                conditions = MAX_FILTERS - budget;
                EmbedParam::Tree(LogicTree { op, negated, children })
            }
            KeyTarget::Filter { column, path: json } => {
                if conditions >= MAX_FILTERS {
                    return Err(QueryError::TooMany { what: "filters", max: MAX_FILTERS });
                }
                conditions += 1;
                let mut filter = parse_filter(column, &value)?;
                filter.path = json;
                EmbedParam::Filter(filter)
            }
        };
        if let Some(name) = param.single_valued() {
            if seen.iter().any(|(p, n)| *p == path && *n == name) {
                return Err(QueryError::Duplicate(name));
            }
            seen.push((path.clone(), name));
        }
        embedded.push((path, param));
    }
    for (path, param) in embedded {
        let mut node = &mut read;
        for name in &path {
            node = &mut node.embed_mut(name).ok_or_else(|| QueryError::NotEmbedded(name.clone()))?.query;
        }
        param.apply(node)?;
    }
    Ok(read)
}

/// What a query-string key (other than `select`) sets, on the level its embed path names.
enum KeyTarget {
    Order,
    Limit,
    Offset,
    Tree { op: LogicOp, negated: bool },
    Filter { column: String, path: Vec<JsonStep> },
}

enum EmbedParam {
    Order(Vec<OrderTerm>),
    Limit(i64),
    Offset(i64),
    Tree(LogicTree),
    Filter(Filter),
}

impl EmbedParam {
    /// The key name when the parameter may be given only once per level.
    fn single_valued(&self) -> Option<&'static str> {
        match self {
            EmbedParam::Order(_) => Some("order"),
            EmbedParam::Limit(_) => Some("limit"),
            EmbedParam::Offset(_) => Some("offset"),
            EmbedParam::Tree(_) | EmbedParam::Filter(_) => None,
        }
    }

    fn apply(self, node: &mut ReadQuery) -> Result<(), QueryError> {
        match self {
            EmbedParam::Order(order) => node.order = order,
            EmbedParam::Limit(limit) => node.limit = Some(limit),
            EmbedParam::Offset(offset) => node.offset = Some(offset),
            EmbedParam::Tree(tree) => node.trees.push(tree),
            EmbedParam::Filter(filter) => {
                // A filter named after an embed of this level filters on the embed's existence.
                if filter.path.is_empty() && node.embed_mut(&filter.column).is_some() {
                    let keep_present = match (&filter.op, filter.negated) {
                        (FilterOp::Is(IsValue::Null), negated) => negated,
                        (FilterOp::Is(IsValue::NotNull), negated) => !negated,
                        _ => return Err(QueryError::BadEmbedOperator(filter.column)),
                    };
                    node.null_embeds.push((filter.column, keep_present));
                } else {
                    node.filters.push(filter);
                }
            }
        }
        Ok(())
    }
}

/// Splits a key into its embed path and what it sets: `a.b.order`, `a.limit`, `a.or`,
/// `a.not.and`, `a.b.col->x` (a filter on `col` of embed `a.b`), or a root key.
fn parse_key(key: &str) -> Result<(Vec<String>, KeyTarget), QueryError> {
    const WHAT: &str = "tree path";
    let fail = |(c, d): (usize, String)| parse_error(WHAT, key, c, d);
    let mut cur = Cursor::new(key);
    let mut names = Vec::new();
    let mut negated = false;
    loop {
        let quoted = cur.peek() == Some('"');
        let name = field_name(&mut cur).map_err(fail)?;
        if !quoted && name == "not" && cur.rest().starts_with('.') && matches!(&cur.rest()[1..], "or" | "and") {
            negated = true;
            cur.eat(".");
            continue;
        }
        if names.len() == MAX_TREE_DEPTH {
            return Err(QueryError::TooMany { what: "nested embeds", max: MAX_TREE_DEPTH });
        }
        let reserved = !quoted && cur.at_end();
        names.push(name);
        if reserved {
            let last = names.last().map(String::as_str);
            let target = match last {
                Some("order") if !negated => Some(KeyTarget::Order),
                Some("limit") if !negated => Some(KeyTarget::Limit),
                Some("offset") if !negated => Some(KeyTarget::Offset),
                Some("or") => Some(KeyTarget::Tree { op: LogicOp::Or, negated }),
                Some("and") => Some(KeyTarget::Tree { op: LogicOp::And, negated }),
                _ => None,
            };
            if let Some(target) = target {
                names.pop();
                return Ok((names, target));
            }
        }
        if cur.eat(".") {
            continue;
        }
        let path = json_path(&mut cur).map_err(fail)?;
        if !cur.at_end() {
            return Err(fail((cur.column(), unexpected(&cur, "\".\", \"->\" or end of input"))));
        }
        let column = names.pop().unwrap_or_default();
        return Ok((names, KeyTarget::Filter { column, path }));
    }
}

fn once(seen: &mut bool, key: &'static str) -> Result<(), QueryError> {
    if std::mem::replace(seen, true) {
        return Err(QueryError::Duplicate(key));
    }
    Ok(())
}

fn parse_error(what: &'static str, input: &str, column: usize, details: impl Into<String>) -> QueryError {
    QueryError::Parse { what, input: input.to_owned(), column, details: details.into() }
}

fn parse_integer(what: &'static str, value: &str) -> Result<i64, QueryError> {
    value.parse::<i64>().map_err(|_| parse_error(what, value, 1, format!("{what} must be an integer")))
}

/// A character cursor over one parameter value; positions are 1-based characters for messages.
struct Cursor<'a> {
    text: &'a str,
    /// Byte offset of the next character.
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor { text, at: 0 }
    }
    fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    fn at_end(&self) -> bool {
        self.at >= self.text.len()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        Some(c)
    }
    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.at += s.len();
            true
        } else {
            false
        }
    }
    /// 1-based character column of the next character.
    fn column(&self) -> usize {
        self.text[..self.at].chars().count() + 1
    }
}

/// Characters allowed in an unquoted field name (PostgREST: letters, digits, `_`, `$`, space,
/// and `-` when it does not start `->`).
fn unquoted_ident_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '$' | ' ')
}

/// Reads a field name: `"quoted"` (with `\"` and `\\` escapes) or unquoted.
/// Errors carry (column, details).
fn field_name(cur: &mut Cursor<'_>) -> Result<String, (usize, String)> {
    let start = cur.column();
    let name = if cur.eat("\"") {
        let mut name = String::new();
        loop {
            match cur.bump() {
                None => return Err((cur.column(), "unexpected end of input expecting closing quote".into())),
                Some('"') => break,
                Some('\\') => match cur.bump() {
                    Some(c) => name.push(c),
                    None => return Err((cur.column(), "unexpected end of input after \"\\\"".into())),
                },
                Some(c) => name.push(c),
            }
        }
        name
    } else {
        let from = cur.at;
        while let Some(c) = cur.peek() {
            if unquoted_ident_char(c) || (c == '-' && !cur.rest().starts_with("->")) {
                cur.bump();
            } else {
                break;
            }
        }
        cur.text[from..cur.at].to_owned()
    };
    if name.is_empty() {
        let what = cur.peek().map_or_else(|| "end of input".to_owned(), |c| format!("\"{c}\""));
        return Err((start, format!("unexpected {what} expecting field name (* or [a..z0..9_$])")));
    }
    if name.contains('\0') {
        return Err((start, "field names cannot contain NUL characters".into()));
    }
    if name.len() > MAX_IDENT_BYTES {
        return Err((start, format!("field names are limited to {MAX_IDENT_BYTES} bytes")));
    }
    Ok(name)
}

fn unexpected(cur: &Cursor<'_>, expecting: &str) -> String {
    match cur.peek() {
        Some(c) => format!("unexpected \"{c}\" expecting {expecting}"),
        None => format!("unexpected end of input expecting {expecting}"),
    }
}

/// `select=item,item,...` (items may nest: `a,b(c,d(e))`).
pub fn parse_select(value: &str) -> Result<Vec<SelectItem>, QueryError> {
    let mut cur = Cursor::new(value);
    let mut budget = MAX_SELECT_ITEMS;
    let items = select_list(&mut cur, value, 0, &mut budget)?;
    if !cur.at_end() {
        return Err(parse_error("select parameter", value, cur.column(), unexpected(&cur, "\",\" or end of input")));
    }
    Ok(items)
}

/// Items until the end of input or an unmatched `)`; `budget` bounds the items over all levels.
fn select_list(
    cur: &mut Cursor<'_>,
    value: &str,
    depth: usize,
    budget: &mut usize,
) -> Result<Vec<SelectItem>, QueryError> {
    const WHAT: &str = "select parameter";
    let fail = |cur: &Cursor<'_>, details: String| parse_error(WHAT, value, cur.column(), details);
    let name_of = |cur: &mut Cursor<'_>| field_name(cur).map_err(|(c, d)| parse_error(WHAT, value, c, d));
    let mut items = Vec::new();
    // `name()` with nothing inside is an embed used only for filtering.
    if depth > 0 && cur.peek() == Some(')') {
        return Ok(items);
    }
    loop {
        if *budget == 0 {
            return Err(QueryError::TooMany { what: "select items", max: MAX_SELECT_ITEMS });
        }
        *budget -= 1;
        if cur.eat("*") {
            items.push(SelectItem::Star);
        } else if cur.eat("...") {
            let name = name_of(cur)?;
            items.push(embed(cur, value, depth, budget, None, name, true)?);
        } else {
            let first = name_of(cur)?;
            let (alias, name) = if !cur.rest().starts_with("::") && cur.eat(":") {
                if cur.rest().starts_with("...") {
                    return Err(fail(cur, "a spread embed (...) cannot have an alias".into()));
                }
                (Some(first), name_of(cur)?)
            } else {
                (None, first)
            };
            if name == "count" && cur.eat("()") {
                let cast = if cur.eat("::") { Some(cast_type(cur).map_err(|d| fail(cur, d))?) } else { None };
                items.push(SelectItem::Count { alias, cast });
            } else if cur.peek() == Some('(') || cur.peek() == Some('!') {
                items.push(embed(cur, value, depth, budget, alias, name, false)?);
            } else {
                let path = json_path(cur).map_err(|(c, d)| parse_error(WHAT, value, c, d))?;
                let cast = if cur.eat("::") { Some(cast_type(cur).map_err(|d| fail(cur, d))?) } else { None };
                let aggregate = if cur.rest().starts_with('.') {
                    cur.eat(".");
                    let function_at = cur.column();
                    let function = name_of(cur)?;
                    let function = AggregateFunction::from_name(&function)
                        .filter(|_| cur.eat("()"))
                        .ok_or_else(|| {
                            parse_error(
                                WHAT,
                                value,
                                function_at,
                                format!("unexpected \"{function}\" expecting an aggregate: count(), sum(), avg(), min() or max()"),
                            )
                        })?;
                    let cast = if cur.eat("::") { Some(cast_type(cur).map_err(|d| fail(cur, d))?) } else { None };
                    Some(Aggregate { function, cast })
                } else {
                    None
                };
                items.push(SelectItem::Column(Field { name, path, alias, cast, aggregate }));
            }
        }
        if cur.at_end() || (depth > 0 && cur.peek() == Some(')')) {
            return Ok(items);
        }
        if !cur.eat(",") {
            return Err(fail(cur, unexpected(cur, "\",\", \"::\", \"->\", \"(\" or end of input")));
        }
    }
}

/// The rest of an embed after its name: `[!hint][!inner|!left](items)`.
fn embed(
    cur: &mut Cursor<'_>,
    value: &str,
    depth: usize,
    budget: &mut usize,
    alias: Option<String>,
    name: String,
    spread: bool,
) -> Result<SelectItem, QueryError> {
    const WHAT: &str = "select parameter";
    let fail = |cur: &Cursor<'_>, details: String| parse_error(WHAT, value, cur.column(), details);
    if depth + 1 > MAX_TREE_DEPTH {
        return Err(QueryError::TooMany { what: "nested embeds", max: MAX_TREE_DEPTH });
    }
    let (mut hint, mut join) = (None, None);
    while cur.eat("!") {
        let word = field_name(cur).map_err(|(c, d)| parse_error(WHAT, value, c, d))?;
        match word.as_str() {
            "inner" if join.is_none() => join = Some(JoinType::Inner),
            "left" if join.is_none() => join = Some(JoinType::Left),
            _ if hint.is_none() && join.is_none() => hint = Some(word),
            _ => {
                return Err(fail(cur, format!("unexpected \"{word}\": an embed takes one hint, then !inner or !left")))
            }
        }
    }
    if !cur.eat("(") {
        return Err(fail(cur, unexpected(cur, "\"(\"")));
    }
    let select = select_list(cur, value, depth + 1, budget)?;
    if !cur.eat(")") {
        return Err(fail(cur, unexpected(cur, "\")\"")));
    }
    let query = ReadQuery { select, ..ReadQuery::default() };
    Ok(SelectItem::Embed(Box::new(Embed { alias, name, hint, join, spread, query })))
}

/// A cast's type name: ASCII letters, digits and `_` only. It is emitted unquoted (quoting would
/// break aliases such as `integer`), which is safe only because of this restriction.
fn cast_type(cur: &mut Cursor<'_>) -> Result<String, String> {
    let from = cur.at;
    while cur.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
        cur.bump();
    }
    let name = &cur.text[from..cur.at];
    if name.is_empty() || name.len() > MAX_IDENT_BYTES {
        return Err(unexpected(cur, "a type name ([a..z0..9_])"));
    }
    Ok(name.to_owned())
}

/// The `(…)` of a logic tree: comma-separated members, each `[not.]and(…)`, `[not.]or(…)` or
/// `field.[not.]op.value`. `budget` is the number of filters still allowed.
fn parse_tree_body(value: &str, depth: usize, budget: &mut usize) -> Result<Vec<Condition>, QueryError> {
    const WHAT: &str = "logic tree";
    if depth > MAX_TREE_DEPTH {
        return Err(QueryError::TooMany { what: "nested logic trees", max: MAX_TREE_DEPTH });
    }
    let inner = value
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| parse_error(WHAT, value, 1, "expecting a parenthesised list such as (a.eq.1,b.eq.2)"))?;
    let mut children = Vec::new();
    for item in split_top_level(inner).map_err(|d| parse_error(WHAT, value, 1, d))? {
        let (negated, rest) = match item.strip_prefix("not.") {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        let nested = [("and(", LogicOp::And), ("or(", LogicOp::Or)]
            .into_iter()
            .find_map(|(prefix, op)| rest.strip_prefix(&prefix[..prefix.len() - 1]).map(|body| (op, body)))
            .filter(|(_, body)| body.starts_with('('));
        if let Some((op, body)) = nested {
            let grandchildren = parse_tree_body(body, depth + 1, budget)?;
            children.push(Condition::Tree(LogicTree { op, negated, children: grandchildren }));
            continue;
        }
        if *budget == 0 {
            return Err(QueryError::TooMany { what: "filters", max: MAX_FILTERS });
        }
        *budget -= 1;
        // A member filter is `field.[not.]op.value`; the field may be quoted.
        let mut cur = Cursor::new(item);
        let column = field_name(&mut cur).map_err(|(c, d)| parse_error(WHAT, value, c, d))?;
        let path = json_path(&mut cur).map_err(|(c, d)| parse_error(WHAT, value, c, d))?;
        if !cur.eat(".") {
            return Err(parse_error(WHAT, value, 1, format!("expecting \".\" after the field name in \"{item}\"")));
        }
        let mut filter = parse_filter(column, cur.rest())?;
        filter.path = path;
        // Inside a tree a value may be double-quoted so it can hold `,` `(` `)`.
        if let FilterOp::Compare(_, operand) = &mut filter.op {
            if let Some(unquoted) = unquote(operand) {
                *operand = unquoted;
            }
        }
        children.push(Condition::Filter(filter));
    }
    if children.is_empty() {
        return Err(parse_error(WHAT, value, 1, "a logic tree needs at least one condition"));
    }
    Ok(children)
}

/// Splits `text` at the commas that are outside parentheses and double quotes.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let (mut items, mut depth, mut quoted, mut escaped, mut from) = (Vec::new(), 0usize, false, false, 0);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.checked_sub(1).ok_or("unbalanced \")\" in the logic tree")?,
            ',' if !quoted && depth == 0 => {
                items.push(&text[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    if quoted || depth != 0 {
        return Err("unbalanced quotes or parentheses in the logic tree".to_owned());
    }
    items.push(&text[from..]);
    Ok(items)
}

/// `"a,b"` → `a,b` (with `\"` and `\\` escapes); `None` when `text` is not double-quoted.
fn unquote(text: &str) -> Option<String> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// `[not.]op[(modifier)].value` for the filter on `column`.
fn parse_filter(column: String, value: &str) -> Result<Filter, QueryError> {
    const WHAT: &str = "filter";
    let fail = |column: usize, details: String| parse_error(WHAT, value, column, details);
    let mut cur = Cursor::new(value);
    let negated = cur.eat("not.");
    let op_column = cur.column();
    let Some((op, operand)) = cur.rest().split_once('.') else {
        let op = cur.rest();
        return Err(if CompareOp::from_name(op).is_some() || matches!(op, "is" | "in") {
            fail(op_column + op.chars().count(), "unexpected end of input expecting \".\"".into())
        } else {
            unknown_operator(op, op_column, value)
        });
    };
    let operand_column = op_column + op.chars().count() + 1;
    // `op(modifier)`: a quantifier for comparisons, a text-search configuration for fts.
    let (name, modifier) = match op.split_once('(') {
        Some((name, rest)) => match rest.strip_suffix(')') {
            Some(modifier) if !modifier.is_empty() => (name, Some(modifier)),
            _ => return Err(fail(op_column + name.chars().count(), "expecting \")\" after the modifier".into())),
        },
        None => (op, None),
    };
    let wildcard = |c: CompareOp, text: &str| match c {
        CompareOp::Like | CompareOp::Ilike => text.replace('*', "%"),
        _ => text.to_owned(),
    };
    let op = if let Some(compare) = CompareOp::from_name(name) {
        match modifier {
            None => FilterOp::Compare(compare, wildcard(compare, operand)),
            Some(q @ ("any" | "all")) if compare.quantifiable() => {
                let quantifier = if q == "any" { Quantifier::Any } else { Quantifier::All };
                let items = parse_quantified_list(operand).map_err(|d| fail(operand_column, d))?;
                let items: Vec<String> = items.iter().map(|i| wildcard(compare, i)).collect();
                FilterOp::Quantified(compare, quantifier, crate::sql::array_literal(&items))
            }
            Some(other) => {
                return Err(fail(
                    op_column + name.chars().count() + 1,
                    format!("\"{other}\" is not a quantifier of \"{name}\" (expected any or all)"),
                ))
            }
        }
    } else if let Some(search) = TextSearch::from_name(name) {
        if let Some(config) = modifier {
            if config.len() > MAX_IDENT_BYTES || config.contains('\0') {
                return Err(fail(op_column + name.chars().count() + 1, "invalid text search configuration".into()));
            }
        }
        FilterOp::TextSearch(search, modifier.map(str::to_owned), operand.to_owned())
    } else if modifier.is_some() {
        return Err(unknown_operator(name, op_column, value));
    } else if name == "is" {
        FilterOp::Is(match operand.to_ascii_lowercase().as_str() {
            "null" => IsValue::Null,
            "not_null" => IsValue::NotNull,
            "true" => IsValue::True,
            "false" => IsValue::False,
            "unknown" => IsValue::Unknown,
            _ => {
                return Err(fail(
                    operand_column,
                    "expecting null, not_null, true, false or unknown after \"is.\"".into(),
                ))
            }
        })
    } else if name == "in" {
        FilterOp::In(parse_in_list(operand).map_err(|(offset, d)| match d {
            InListError::TooMany => QueryError::TooMany { what: "in-list items", max: MAX_IN_ITEMS },
            InListError::Syntax(d) => fail(operand_column + offset, d),
        })?)
    } else {
        return Err(unknown_operator(name, op_column, value));
    };
    Ok(Filter { column, path: Vec::new(), negated, op })
}

fn unknown_operator(op: &str, column: usize, value: &str) -> QueryError {
    let shown = op.chars().next().map_or_else(|| "end of input".to_owned(), |c| format!("\"{c}\""));
    parse_error("filter", value, column, format!("unexpected {shown} expecting \"not\" or operator (eq, gt, ...)"))
}

/// The element list of a quantified comparison: `{a,b,"c,d"}` (PostgREST also accepts `(a,b)`),
/// returned unquoted; the SQL builder re-quotes them into one array literal.
fn parse_quantified_list(operand: &str) -> Result<Vec<String>, String> {
    let inner = operand
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .or_else(|| operand.strip_prefix('(').and_then(|r| r.strip_suffix(')')))
        .ok_or_else(|| "expecting a list such as {a,b} after a quantified operator".to_owned())?;
    parse_in_list(&format!("({inner})")).map_err(|(_, e)| match e {
        InListError::TooMany => format!("at most {MAX_IN_ITEMS} elements are allowed"),
        InListError::Syntax(d) => d,
    })
}

enum InListError {
    TooMany,
    Syntax(String),
}

/// `(a,b,"c,d")`: elements separated by `,`; a quoted element may contain `,` `)` and the escapes
/// `\"` `\\`. Errors carry the 0-based character offset into the list.
fn parse_in_list(list: &str) -> Result<Vec<String>, (usize, InListError)> {
    let mut cur = Cursor::new(list);
    let syntax = |cur: &Cursor<'_>, d: String| (cur.column() - 1, InListError::Syntax(d));
    if !cur.eat("(") {
        return Err(syntax(&cur, unexpected(&cur, "\"(\"")));
    }
    let mut items = Vec::new();
    if cur.eat(")") {
        return if cur.at_end() { Ok(items) } else { Err(syntax(&cur, unexpected(&cur, "end of input"))) };
    }
    loop {
        if items.len() == MAX_IN_ITEMS {
            return Err((cur.column() - 1, InListError::TooMany));
        }
        let mut item = String::new();
        if cur.eat("\"") {
            loop {
                match cur.bump() {
                    None => return Err(syntax(&cur, "unexpected end of input expecting closing quote".into())),
                    Some('"') => break,
                    Some('\\') => match cur.bump() {
                        Some(c) => item.push(c),
                        None => return Err(syntax(&cur, "unexpected end of input after \"\\\"".into())),
                    },
                    Some(c) => item.push(c),
                }
            }
        } else {
            while let Some(c) = cur.peek() {
                if c == ',' || c == ')' {
                    break;
                }
                item.push(c);
                cur.bump();
            }
        }
        items.push(item);
        match cur.bump() {
            Some(',') => continue,
            Some(')') if cur.at_end() => return Ok(items),
            Some(')') => return Err(syntax(&cur, unexpected(&cur, "end of input"))),
            _ => return Err(syntax(&cur, "expecting \",\" or \")\"".into())),
        }
    }
}

/// `order=term,term,...` with `term := field[.asc|.desc][.nullsfirst|.nullslast]`.
pub fn parse_order(value: &str) -> Result<Vec<OrderTerm>, QueryError> {
    const WHAT: &str = "order";
    let fail = |cur: &Cursor<'_>, details: String| parse_error(WHAT, value, cur.column(), details);
    let mut cur = Cursor::new(value);
    let mut terms = Vec::new();
    loop {
        if terms.len() == MAX_ORDER_TERMS {
            return Err(QueryError::TooMany { what: "order terms", max: MAX_ORDER_TERMS });
        }
        let first = field_name(&mut cur).map_err(|(c, d)| parse_error(WHAT, value, c, d))?;
        // `embed(column)`: ordering by a column of a to-one embed.
        let (relation, column) = if cur.eat("(") {
            let column = field_name(&mut cur).map_err(|(c, d)| parse_error(WHAT, value, c, d))?;
            if !cur.eat(")") {
                return Err(fail(&cur, unexpected(&cur, "\")\"")));
            }
            (Some(first), column)
        } else {
            (None, first)
        };
        let path = json_path(&mut cur).map_err(|(c, d)| parse_error(WHAT, value, c, d))?;
        let mut term = OrderTerm { relation, column, path, direction: None, nulls: None };
        // Longest keywords first so `.nullsfirst` is not read as a direction.
        if cur.eat(".asc") && ends_term(&cur) {
            term.direction = Some(Direction::Asc);
        } else if cur.eat(".desc") && ends_term(&cur) {
            term.direction = Some(Direction::Desc);
        }
        if cur.eat(".nullsfirst") && ends_term(&cur) {
            term.nulls = Some(Nulls::First);
        } else if cur.eat(".nullslast") && ends_term(&cur) {
            term.nulls = Some(Nulls::Last);
        }
        terms.push(term);
        if cur.at_end() {
            return Ok(terms);
        }
        if !cur.eat(",") {
            return Err(fail(&cur, unexpected(&cur, "\".asc\", \".desc\", \".nullsfirst\", \".nullslast\" or \",\"")));
        }
    }
}

/// A keyword ends at `.`, `,` or the end of input (so `.ascending` is an error, not `.asc`).
fn ends_term(cur: &Cursor<'_>) -> bool {
    matches!(cur.peek(), None | Some('.') | Some(','))
}

impl fmt::Display for IsValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IsValue::Null => "NULL",
            IsValue::NotNull => "NOT NULL",
            IsValue::True => "TRUE",
            IsValue::False => "FALSE",
            IsValue::Unknown => "UNKNOWN",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str) -> Field {
        Field { name: name.into(), ..Field::default() }
    }

    fn col(name: &str) -> SelectItem {
        SelectItem::Column(field(name))
    }

    fn embed_of(item: &SelectItem) -> &Embed {
        let SelectItem::Embed(embed) = item else { panic!("not an embed: {item:?}") };
        embed
    }

    #[test]
    fn select_lists() {
        assert_eq!(parse_select("*").unwrap(), vec![SelectItem::Star]);
        assert_eq!(parse_select("id,name").unwrap(), vec![col("id"), col("name")]);
        assert_eq!(
            parse_select("n:name,id::text,x:\"odd, name\"::int4").unwrap(),
            vec![
                SelectItem::Column(Field { alias: Some("n".into()), ..field("name") }),
                SelectItem::Column(Field { cast: Some("text".into()), ..field("id") }),
                SelectItem::Column(Field { alias: Some("x".into()), cast: Some("int4".into()), ..field("odd, name") }),
            ]
        );
        assert_eq!(parse_select("Unit Price,first-name").unwrap(), vec![col("Unit Price"), col("first-name")]);
    }

    #[test]
    fn select_json_paths_and_aggregates() {
        let items =
            parse_select("data->foo->>bar,x:data->0,amount.sum(),total:amount::numeric.avg()::int,count()").unwrap();
        let SelectItem::Column(bar) = &items[0] else { panic!() };
        assert_eq!(bar.key(), "bar");
        assert_eq!(bar.path.len(), 2);
        assert!(bar.path[1].as_text);
        let SelectItem::Column(x) = &items[1] else { panic!() };
        assert_eq!((x.key(), &x.path[0].key), ("x", &JsonKey::Index(0)));
        let SelectItem::Column(sum) = &items[2] else { panic!() };
        assert_eq!(sum.aggregate, Some(Aggregate { function: AggregateFunction::Sum, cast: None }));
        let SelectItem::Column(avg) = &items[3] else { panic!() };
        assert_eq!(avg.cast.as_deref(), Some("numeric"));
        assert_eq!(avg.aggregate, Some(Aggregate { function: AggregateFunction::Avg, cast: Some("int".into()) }));
        assert_eq!(items[4], SelectItem::Count { alias: None, cast: None });
        assert!(parse_select("amount.median()").is_err());
        assert!(parse_select("amount.sum").is_err());
    }

    #[test]
    fn select_embeds() {
        let items = parse_select("id,best:users!first_user!inner(id,roles(*)),...dir(name),msgs()").unwrap();
        let users = embed_of(&items[1]);
        assert_eq!((users.alias.as_deref(), users.name.as_str()), (Some("best"), "users"));
        assert_eq!((users.hint.as_deref(), users.join), (Some("first_user"), Some(JoinType::Inner)));
        assert_eq!(users.key(), "best");
        assert_eq!(embed_of(&users.query.select[1]).query.select, vec![SelectItem::Star]);
        let dir = embed_of(&items[2]);
        assert!(dir.spread && dir.alias.is_none());
        assert!(embed_of(&items[3]).query.select.is_empty());
        assert_eq!(embed_of(&parse_select("users!left(id)").unwrap()[0]).join, Some(JoinType::Left));
        for bad in ["users(", "users(id", "users!a!b(id)", "x:...users(id)", "users!inner!fk(id)", "users)"] {
            assert!(parse_select(bad).is_err(), "{bad}");
        }
        let deep = format!("{}x{}", "a(".repeat(MAX_TREE_DEPTH + 1), ")".repeat(MAX_TREE_DEPTH + 1));
        assert!(matches!(parse_select(&deep), Err(QueryError::TooMany { .. })));
    }

    #[test]
    fn embedded_parameters_attach_to_their_embed() {
        let q = parse_read_query(
            "actors.order=name.desc&select=id,actors(name,roles(*))&actors.roles.character=eq.x\
             &actors.limit=2&actors.offset=1&actors.or=(a.eq.1,b.eq.2)&actors.not.and=(c.eq.3)&actors=not.is.null&id=eq.1",
        )
        .unwrap();
        assert_eq!(q.filters.len(), 1);
        assert_eq!(q.null_embeds, [("actors".to_owned(), true)]);
        let actors = &embed_of(&q.select[1]).query;
        assert_eq!((actors.limit, actors.offset, actors.order.len(), actors.trees.len()), (Some(2), Some(1), 1, 2));
        assert!(actors.trees[1].negated);
        assert_eq!(embed_of(&actors.select[1]).query.filters[0].column, "character");
        assert_eq!(parse_read_query("select=*,a(*)&a=is.null").unwrap().null_embeds, [("a".to_owned(), false)]);
        assert!(matches!(parse_read_query("select=id&nope.id=eq.1"), Err(QueryError::NotEmbedded(n)) if n == "nope"));
        assert!(matches!(parse_read_query("select=*,a(*)&a=eq.1"), Err(QueryError::BadEmbedOperator(n)) if n == "a"));
        assert!(matches!(parse_read_query("select=*,a(*)&a.limit=1&a.limit=2"), Err(QueryError::Duplicate("limit"))));
        // An aliased embed is addressed by its alias.
        assert!(parse_read_query("select=x:a(*)&a.limit=1").is_err());
        assert!(parse_read_query("select=x:a(*)&x.limit=1").is_ok());
    }

    #[test]
    fn select_errors_name_the_position() {
        // A cast type can never carry SQL.
        assert!(parse_select("id::int;drop table t").is_err());
        assert!(parse_select("id::").is_err());
        assert!(parse_select("id,").is_err());
        assert!(parse_select("\"unterminated").is_err());
        let err = parse_select("id,name;").unwrap_err();
        assert!(
            err.to_string().starts_with("\"failed to parse select parameter (id,name;)\" (line 1, column 8)"),
            "{err}"
        );
    }

    #[test]
    fn hostile_identifiers_stay_names() {
        // Unquoted: `;`, quotes and comment starts are not identifier characters → refused.
        assert!(parse_select("id;drop table t").is_err());
        assert!(parse_select("id--").is_ok_and(|v| v == vec![col("id--")]), "dashes are name chars");
        assert!(parse_select("a/*b*/").is_err());
        // Quoted: anything goes, and it stays one name (the SQL builder quotes it).
        // A quote closes the name; whatever follows it is refused, never read as SQL.
        assert!(parse_select(r#""x"" from t; drop table t; --""#).is_err());
        assert!(parse_select(r#""x" from t""#).is_err());
        assert_eq!(parse_select(r#""a\"; drop table t; --""#).unwrap(), vec![col("a\"; drop table t; --")]);
        assert!(parse_select("\"a\0b\"").is_err(), "NUL cannot go into SQL text");
        assert!(parse_key("id;delete from t").is_err());
        let (path, target) = parse_key("\"id\\\" = 1 or 1=1 --\"").unwrap();
        assert!(path.is_empty());
        assert!(matches!(target, KeyTarget::Filter { column, .. } if column == "id\" = 1 or 1=1 --"));
    }

    #[test]
    fn filters() {
        let f = |v: &str| parse_filter("c".into(), v);
        assert_eq!(f("eq.5").unwrap().op, FilterOp::Compare(CompareOp::Eq, "5".into()));
        assert_eq!(f("eq.").unwrap().op, FilterOp::Compare(CompareOp::Eq, "".into()));
        assert_eq!(f("eq.a.b").unwrap().op, FilterOp::Compare(CompareOp::Eq, "a.b".into()));
        assert_eq!(f("like.*ab*").unwrap().op, FilterOp::Compare(CompareOp::Like, "%ab%".into()));
        assert_eq!(f("ilike.A%").unwrap().op, FilterOp::Compare(CompareOp::Ilike, "A%".into()));
        for (v, op) in [
            ("neq", CompareOp::Neq),
            ("gt", CompareOp::Gt),
            ("gte", CompareOp::Gte),
            ("lt", CompareOp::Lt),
            ("lte", CompareOp::Lte),
        ] {
            assert_eq!(f(&format!("{v}.1")).unwrap().op, FilterOp::Compare(op, "1".into()));
        }
        assert_eq!(f("is.NULL").unwrap().op, FilterOp::Is(IsValue::Null));
        assert_eq!(f("is.not_null").unwrap().op, FilterOp::Is(IsValue::NotNull));
        assert_eq!(f("is.true").unwrap().op, FilterOp::Is(IsValue::True));
        assert_eq!(f("is.unknown").unwrap().op, FilterOp::Is(IsValue::Unknown));
        assert!(f("is.maybe").is_err());
        let n = f("not.eq.2").unwrap();
        assert!(n.negated);
        assert_eq!(
            f(r#"in.(1,two,"three,3","q\"uote",)"#).unwrap().op,
            FilterOp::In(vec!["1".into(), "two".into(), "three,3".into(), "q\"uote".into(), "".into()])
        );
        assert_eq!(f("in.()").unwrap().op, FilterOp::In(vec![]));
        assert_eq!(f(r#"in.("a)b")"#).unwrap().op, FilterOp::In(vec!["a)b".into()]));
        assert!(f("in.(1,2").is_err());
        assert!(f("in.1,2").is_err());
        assert!(f("in.(1)x").is_err());
        assert!(f("eq").is_err());
    }

    #[test]
    fn every_operator_quantifier_and_text_search() {
        let f = |v: &str| parse_filter("c".into(), v).unwrap().op;
        for (name, op) in [
            ("match", CompareOp::Match),
            ("imatch", CompareOp::Imatch),
            ("isdistinct", CompareOp::IsDistinct),
            ("cs", CompareOp::Contains),
            ("cd", CompareOp::ContainedIn),
            ("ov", CompareOp::Overlaps),
            ("sl", CompareOp::StrictlyLeft),
            ("sr", CompareOp::StrictlyRight),
            ("nxr", CompareOp::NotRight),
            ("nxl", CompareOp::NotLeft),
            ("adj", CompareOp::Adjacent),
        ] {
            assert_eq!(f(&format!("{name}.x")), FilterOp::Compare(op, "x".into()), "{name}");
        }
        assert_eq!(
            f("like(any).{a*,\"b,*\"}"),
            FilterOp::Quantified(CompareOp::Like, Quantifier::Any, r#"{"a%","b,%"}"#.into())
        );
        assert_eq!(f("eq(all).(1,2)"), FilterOp::Quantified(CompareOp::Eq, Quantifier::All, r#"{"1","2"}"#.into()));
        assert_eq!(
            f("wfts(english).the cat"),
            FilterOp::TextSearch(TextSearch::Websearch, Some("english".into()), "the cat".into())
        );
        assert_eq!(f("fts.cat & dog"), FilterOp::TextSearch(TextSearch::Fts, None, "cat & dog".into()));
    }

    #[test]
    fn json_paths_in_filters_and_order() {
        let q = parse_read_query(r#"data->a->0->>"b c"=eq.x&order=data->n.desc,id"#).unwrap();
        let f = &q.filters[0];
        assert_eq!(f.column, "data");
        assert_eq!(
            f.path,
            [
                JsonStep { key: JsonKey::Name("a".into()), as_text: false },
                JsonStep { key: JsonKey::Index(0), as_text: false },
                JsonStep { key: JsonKey::Name("b c".into()), as_text: true },
            ]
        );
        assert_eq!(q.order[0].path, [JsonStep { key: JsonKey::Name("n".into()), as_text: false }]);
        assert_eq!(q.order[0].direction, Some(Direction::Desc));
        // `->>` ends a path; a quoted number is a member name, not an index.
        assert!(parse_read_query("data->>a->b=eq.1").is_err());
        let q = parse_read_query(r#"data->"0"=eq.1&or=(data->>k.eq.v)"#).unwrap();
        assert_eq!(q.filters[0].path[0].key, JsonKey::Name("0".into()));
        let Condition::Filter(inner) = &q.trees[0].children[0] else { panic!() };
        assert_eq!(inner.path[0], JsonStep { key: JsonKey::Name("k".into()), as_text: true });
    }

    #[test]
    fn logic_trees() {
        let q = parse_read_query(
            r#"or=(id.eq.1,and(name.like.A*,"my col".not.is.null),not.or(x.in.(1,2),y.eq."a,b"))&z=gt.0"#,
        )
        .unwrap();
        assert_eq!(q.filters.len(), 1);
        assert_eq!(q.trees.len(), 1);
        let tree = &q.trees[0];
        assert_eq!((tree.op, tree.negated, tree.children.len()), (LogicOp::Or, false, 3));
        let Condition::Tree(and) = &tree.children[1] else { panic!("{tree:?}") };
        assert_eq!(and.op, LogicOp::And);
        let Condition::Filter(quoted) = &and.children[1] else { panic!() };
        assert_eq!((quoted.column.as_str(), quoted.negated), ("my col", true));
        let Condition::Tree(not_or) = &tree.children[2] else { panic!() };
        assert!(not_or.negated);
        let Condition::Filter(y) = &not_or.children[1] else { panic!() };
        assert_eq!(y.op, FilterOp::Compare(CompareOp::Eq, "a,b".into()));
        let q = parse_read_query("not.and=(a.gte.1,a.lte.5)").unwrap();
        assert!(q.trees[0].negated && q.trees[0].op == LogicOp::And);
    }

    #[test]
    fn filter_errors_name_the_problem() {
        let err = parse_filter("c".into(), "noop.0").unwrap_err();
        assert_eq!(err.to_string(), r#""failed to parse filter (noop.0)" (line 1, column 1)"#);
        assert_eq!(err.details().unwrap(), r#"unexpected "n" expecting "not" or operator (eq, gt, ...)"#);
        let err = parse_filter("c".into(), "cs(any).{1}").unwrap_err();
        assert!(err.details().unwrap().contains("not a quantifier"), "{err:?}");
        let err = parse_filter("c".into(), "eq(any).1,2").unwrap_err();
        assert!(err.details().unwrap().contains("expecting a list"), "{err:?}");
        assert!(parse_filter("c".into(), "eq(any.{1}").is_err());
        let err = parse_read_query("or=a.eq.1").unwrap_err();
        assert!(err.to_string().contains("logic tree"), "{err}");
        assert!(parse_read_query("or=(a.eq.1,b.eq.2").is_err());
        assert!(parse_read_query("or=()").is_err());
        assert!(parse_read_query("or=(a)").is_err());
        let deep = format!("or=({}a.eq.1{})", "and(".repeat(20), ")".repeat(20));
        assert!(matches!(parse_read_query(&deep), Err(QueryError::TooMany { .. })));
        let err = parse_read_query("actors.first_name=eq.x").unwrap_err();
        assert_eq!(err, QueryError::NotEmbedded("actors".into()));
    }

    #[test]
    fn order_terms() {
        let o = parse_order("a,b.desc,c.asc.nullsfirst,d.nullslast,\"e.f\".desc").unwrap();
        assert_eq!(o.len(), 5);
        assert_eq!(o[0], OrderTerm { relation: None, column: "a".into(), path: vec![], direction: None, nulls: None });
        assert_eq!(o[1].direction, Some(Direction::Desc));
        assert_eq!((o[2].direction, o[2].nulls), (Some(Direction::Asc), Some(Nulls::First)));
        assert_eq!((o[3].direction, o[3].nulls), (None, Some(Nulls::Last)));
        assert_eq!(o[4].column, "e.f");
        assert!(parse_order("a.ascending").is_err());
        assert!(parse_order("a.desc;drop").is_err());
        let related = &parse_order("rel(col).desc").unwrap()[0];
        assert_eq!((related.relation.as_deref(), related.column.as_str()), (Some("rel"), "col"));
        assert!(parse_order("rel(col").is_err());
    }

    #[test]
    fn whole_query_strings() {
        let q =
            parse_read_query("select=id,name&id=gt.1&name=not.is.null&order=id.desc&limit=2&offset=1&empty=").unwrap();
        assert_eq!(q.select.len(), 2);
        assert_eq!(q.filters.len(), 2);
        assert_eq!((q.limit, q.offset), (Some(2), Some(1)));
        // Percent-encoding and `+` decode in keys and values.
        let q = parse_read_query("Unit%20Price=lt.200&name=eq.a+b%2Cc").unwrap();
        assert_eq!(q.filters[0].column, "Unit Price");
        assert_eq!(q.filters[1].op, FilterOp::Compare(CompareOp::Eq, "a b,c".into()));
        assert_eq!(parse_read_query("limit=-1").unwrap_err(), QueryError::NegativeLimit);
        assert!(parse_read_query("limit=ten").is_err());
        assert!(parse_read_query("offset=-3").is_err());
        assert_eq!(parse_read_query("limit=1&limit=2").unwrap_err(), QueryError::Duplicate("limit"));
        assert_eq!(parse_read_query("a=eq.%ZZ").unwrap_err(), QueryError::Encoding);
        assert_eq!(parse_read_query("a=eq.%FF").unwrap_err(), QueryError::Encoding);
        assert_eq!(parse_read_query("").unwrap(), ReadQuery::default());
    }

    #[test]
    fn bounds() {
        let many: Vec<String> = (0..=MAX_FILTERS).map(|i| format!("c{i}=eq.1")).collect();
        assert_eq!(
            parse_read_query(&many.join("&")).unwrap_err(),
            QueryError::TooMany { what: "filters", max: MAX_FILTERS }
        );
        let items: Vec<String> = (0..=MAX_IN_ITEMS).map(|i| i.to_string()).collect();
        let err = parse_filter("c".into(), &format!("in.({})", items.join(","))).unwrap_err();
        assert!(matches!(err, QueryError::TooMany { max: MAX_IN_ITEMS, .. }), "{err:?}");
        let terms: Vec<String> = (0..=MAX_ORDER_TERMS).map(|i| format!("c{i}")).collect();
        assert!(matches!(parse_order(&terms.join(",")).unwrap_err(), QueryError::TooMany { .. }));
        let cols: Vec<String> = (0..=MAX_SELECT_ITEMS).map(|i| format!("c{i}")).collect();
        assert!(matches!(parse_select(&cols.join(",")).unwrap_err(), QueryError::TooMany { .. }));
        assert!(parse_select(&"x".repeat(MAX_IDENT_BYTES + 1)).is_err());
    }
}
