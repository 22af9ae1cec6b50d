//! The `filter` of a `postgres_changes` subscription (reference/realtime.md §5.1): parsing it
//! exactly as Supabase Realtime does, checking it against the table it subscribes to, and
//! evaluating it against a decoded row.
//!
//! Owns: [`Filter::parse`] (`column=op.value`, several joined by `,` outside `(...)` and `"..."`,
//! the operators `eq neq lt lte gt gte in like ilike is match imatch isdistinct`, the `not.`
//! prefix) with Supabase's error texts (`Error parsing \`filter\` params: ["foo", "hey"]`);
//! [`Filter::bind`], which resolves every column against a [`Relation`] and casts every value to
//! the column's type once, failing as Supabase's `subscription_check_filters` trigger fails
//! ([`SubscribeError`], rendered into Supabase's "Unable to subscribe …" text by
//! [`subscribe_error_message`]); [`BoundFilter::matches`], which a shard runs per change and
//! subscriber (DELETE events are matched on `old_record`, everything else on `record`).
//!
//! Invariants: a bound filter never fails at match time — every cast and pattern is checked
//! when binding, as Supabase checks them when the subscription row is inserted, so one bad
//! subscription cannot stop the stream; SQL's three-valued logic is kept (a NULL operand makes
//! a comparison unknown, and an unknown condition hides the change, negated or not); a column
//! the row image does not carry hides the change (Supabase: every filter must meet a column of
//! the payload).
//!
//! Comparison follows the column's type, as Supabase casts both sides to it: `int2 int4 int8
//! oid` as integers, `float4 float8` as doubles and `numeric` as exact decimals (NaN above every
//! number, as PostgreSQL orders them), `bool`, `uuid` (normalised to lower-case hex), `date`,
//! `timestamp` and `timestamptz` as instants (ISO 8601 text; a `timestamptz` without an offset
//! is taken as UTC — PostgreSQL would use the session's `TimeZone`), `json`/`jsonb` as JSON
//! values; every other type (text, varchar, enums, arrays …) compares its text byte-wise, which is
//! PostgreSQL's order under the `C` collation (other collations order non-ASCII text, and enums
//! order by declaration, differently — equality is the same). `like`/`ilike` use `%`, `_` and
//! `\` escapes; `match`/`imatch` use the `regex` crate (POSIX classes and the usual syntax agree
//! with PostgreSQL's; back-references and look-around are refused when binding). Column
//! privileges (`has_column_privilege`) are the caller's to check: the relation does not carry them.

use std::cmp::Ordering;
use std::fmt;

use crate::changes::{Change, ChangeKind, Relation, Row};

/// The operators Supabase accepts, in its order.
const OPERATORS: [&str; 13] =
    ["eq", "neq", "lt", "lte", "gt", "gte", "in", "like", "ilike", "is", "match", "imatch", "isdistinct"];

/// At most this many values in an `in` list (Supabase's limit).
pub const MAX_IN_VALUES: usize = 100;

/// A filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
    Like,
    Ilike,
    Is,
    Match,
    Imatch,
    IsDistinct,
}

impl Op {
    fn from_name(name: &str) -> Option<Op> {
        Some(match name {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "in" => Op::In,
            "like" => Op::Like,
            "ilike" => Op::Ilike,
            "is" => Op::Is,
            "match" => Op::Match,
            "imatch" => Op::Imatch,
            "isdistinct" => Op::IsDistinct,
            _ => return None,
        })
    }

    /// The operator's name in the filter grammar.
    pub fn name(self) -> &'static str {
        OPERATORS[self as usize]
    }
}

/// One `column=op.value` condition, as Supabase stores it: `in` values already turned into an
/// array literal (`(a,b)` → `{a,b}`), other values with one level of `"…"` quoting removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub column: String,
    pub op: Op,
    pub value: String,
    /// The `not.` prefix.
    pub negate: bool,
}

/// A parsed filter: its conditions are ANDed. Empty = every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub conditions: Vec<Condition>,
}

/// A filter that does not parse; `Display` is Supabase's system-message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Error parsing `filter` params: {reason}")]
pub struct FilterParseError {
    pub reason: String,
}

impl FilterParseError {
    fn new(reason: impl Into<String>) -> Self {
        FilterParseError { reason: reason.into() }
    }

    /// Supabase reports a segment it could not split as the Elixir list of its parts.
    fn parts(parts: &[&str]) -> Self {
        let mut out = String::from("[");
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            push_elixir_string(&mut out, part);
        }
        out.push(']');
        FilterParseError { reason: out }
    }
}

/// A string as Elixir's `inspect` writes it.
fn push_elixir_string(out: &mut String, s: &str) {
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '#' if chars.peek() == Some(&'{') => out.push_str("\\#"),
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Filter {
    /// Parses a subscription's `filter` string. Empty or blank = no filter.
    pub fn parse(filter: &str) -> Result<Filter, FilterParseError> {
        let trimmed = filter.trim();
        if trimmed.is_empty() {
            return Ok(Filter::default());
        }
        let conditions = split_top_level(trimmed).iter().map(|s| parse_segment(s)).collect::<Result<_, _>>()?;
        Ok(Filter { conditions })
    }

    /// True without conditions.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// Resolves the filter against the table: every column must exist, every value must cast to
    /// the column's type, every operator must apply to it.
    pub fn bind(&self, relation: &Relation) -> Result<BoundFilter, SubscribeError> {
        let conditions = self.conditions.iter().map(|c| bind_condition(c, relation)).collect::<Result<_, _>>()?;
        Ok(BoundFilter { conditions })
    }

    /// The filters as Supabase's log and error texts list them:
    /// `[{"subject", "eq", "hey", false}]`.
    pub fn elixir_list(&self) -> String {
        let mut out = String::from("[");
        for (i, c) in self.conditions.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push('{');
            push_elixir_string(&mut out, &c.column);
            out.push_str(", ");
            push_elixir_string(&mut out, c.op.name());
            out.push_str(", ");
            push_elixir_string(&mut out, &c.value);
            out.push_str(if c.negate { ", true}" } else { ", false}" });
        }
        out.push(']');
        out
    }
}

/// Splits on commas outside parentheses and outside `"…"` (a quote opens only after `.`, `(` or
/// `,` inside parentheses; `\` escapes inside quotes), as Supabase does.
fn split_top_level(filter: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut prev: Option<char> = None;
    let mut chars = filter.chars();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '\\' => {
                    current.push('\\');
                    if let Some(next) = chars.next() {
                        current.push(next);
                        prev = Some(next);
                    }
                    continue;
                }
                '"' => quoted = false,
                _ => {}
            }
            current.push(c);
            prev = Some(c);
            continue;
        }
        match c {
            '"' if matches!(prev, Some('.') | Some('(') | Some(',')) => quoted = true,
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                prev = None;
                continue;
            }
            _ => {}
        }
        current.push(c);
        prev = Some(c);
    }
    out.push(current);
    out
}

fn parse_segment(segment: &str) -> Result<Condition, FilterParseError> {
    let trimmed = segment.trim();
    if trimmed.is_empty() {
        return Err(FilterParseError::new("filter must not contain empty segments (check for extra commas)"));
    }
    let Some((column, rest)) = trimmed.split_once('=') else {
        return Err(FilterParseError::parts(&[trimmed]));
    };
    let (negate, op_value) = match rest.strip_prefix("not.") {
        Some(op_value) => (true, op_value),
        None => (false, rest),
    };
    let Some((op_name, value)) = op_value.split_once('.') else {
        return Err(FilterParseError::parts(&[op_value]));
    };
    let Some(op) = Op::from_name(op_name) else {
        return Err(FilterParseError::parts(&[op_name, value]));
    };
    let value = if op == Op::In {
        match value.strip_prefix('(').and_then(|v| v.strip_suffix(')')) {
            Some(inner) if value.len() >= 2 => format!("{{{inner}}}"),
            _ => return Err(FilterParseError::new("`in` filter value must be wrapped by parentheses")),
        }
    } else {
        unquote(value)
    };
    Ok(Condition { column: column.to_owned(), op, value, negate })
}

/// `"…"` with `\` escapes → its content; anything else (or an unterminated quote) as it is.
fn unquote(value: &str) -> String {
    let Some(rest) = value.strip_prefix('"') else {
        return value.to_owned();
    };
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                return if chars.next().is_none() { out } else { value.to_owned() };
            }
            '\\' => match chars.next() {
                Some(next) => out.push(next),
                None => return value.to_owned(),
            },
            c => out.push(c),
        }
    }
    value.to_owned()
}

/// A subscription PostgreSQL would refuse. `Display` is how Supabase renders the PostgreSQL
/// error (`ERROR P0001 (raise_exception) invalid column for filter subject`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ERROR {code} ({condition}) {message}")]
pub struct SubscribeError {
    /// SQLSTATE.
    pub code: &'static str,
    /// PostgreSQL's condition name for it.
    pub condition: &'static str,
    pub message: String,
}

impl SubscribeError {
    fn raise(message: String) -> Self {
        SubscribeError { code: "P0001", condition: "raise_exception", message }
    }

    fn syntax(type_text: &str, value: &str) -> Self {
        SubscribeError {
            code: "22P02",
            condition: "invalid_text_representation",
            message: format!("invalid input syntax for type {type_text}: \"{value}\""),
        }
    }

    fn range(type_text: &str, value: &str) -> Self {
        SubscribeError {
            code: "22003",
            condition: "numeric_value_out_of_range",
            message: format!("value \"{value}\" is out of range for type {type_text}"),
        }
    }
}

/// Supabase's system-message text for a subscription its database refused:
/// `Unable to subscribe to changes with given parameters. An exception happened so please check
/// your connect parameters: [event: *, schema: public, table: test, filters: [...], select: nil].
/// Exception: ERROR P0001 (raise_exception) invalid column for filter subject`.
pub fn subscribe_error_message(
    event: &str,
    schema: &str,
    table: &str,
    filter: &Filter,
    select: Option<&[String]>,
    error: &SubscribeError,
) -> String {
    let select = match select {
        None => "nil".to_owned(),
        Some(columns) => {
            let mut out = String::from("[");
            for (i, c) in columns.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_elixir_string(&mut out, c);
            }
            out.push(']');
            out
        }
    };
    format!(
        "Unable to subscribe to changes with given parameters. An exception happened so please check your \
         connect parameters: [event: {event}, schema: {schema}, table: {table}, filters: {}, select: {select}]. \
         Exception: {error}",
        filter.elixir_list()
    )
}

/// How values of a column compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int { min: i128, max: i128 },
    Float,
    Numeric,
    Bool,
    Uuid,
    Date,
    Timestamp,
    Timestamptz,
    Json,
    Text,
}

/// The column type as `regtype::text` writes it (Supabase's error texts use it).
fn type_text(type_name: &str) -> &str {
    match type_name {
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" => "double precision",
        "bool" => "boolean",
        "varchar" => "character varying",
        "bpchar" => "character",
        "timestamptz" => "timestamp with time zone",
        "timestamp" => "timestamp without time zone",
        "timetz" => "time with time zone",
        "time" => "time without time zone",
        other => other,
    }
}

fn kind_of(type_name: &str) -> Kind {
    match type_name {
        "int2" => Kind::Int { min: i16::MIN.into(), max: i16::MAX.into() },
        "int4" => Kind::Int { min: i32::MIN.into(), max: i32::MAX.into() },
        "int8" => Kind::Int { min: i64::MIN.into(), max: i64::MAX.into() },
        "oid" => Kind::Int { min: 0, max: u32::MAX.into() },
        "float4" | "float8" => Kind::Float,
        "numeric" => Kind::Numeric,
        "bool" => Kind::Bool,
        "uuid" => Kind::Uuid,
        "date" => Kind::Date,
        "timestamp" => Kind::Timestamp,
        "timestamptz" => Kind::Timestamptz,
        "json" | "jsonb" => Kind::Json,
        _ => Kind::Text,
    }
}

/// A value cast to its column's type.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(i128),
    Float(f64),
    Numeric(Decimal),
    Bool(bool),
    /// Lower-case hex without hyphens; dates and timestamps as microseconds (days for dates).
    Ordered(i128),
    Json(serde_json::Value),
    Text(String),
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    Some(match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => match (x.is_nan(), y.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => x.partial_cmp(y)?,
        },
        (Value::Numeric(x), Value::Numeric(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Ordered(x), Value::Ordered(y)) => x.cmp(y),
        (Value::Text(x), Value::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Json(x), Value::Json(y)) => {
            if x == y {
                Ordering::Equal
            } else {
                x.to_string().cmp(&y.to_string())
            }
        }
        _ => return None,
    })
}

/// Casts text to the column's kind as PostgreSQL's input function would (for the forms clients
/// send); the error is PostgreSQL's.
fn cast(kind: Kind, type_name: &str, text: &str) -> Result<Value, SubscribeError> {
    let tt = type_text(type_name);
    let bad = || SubscribeError::syntax(tt, text);
    match kind {
        Kind::Int { min, max } => {
            let t = text.trim();
            let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let n: i128 = t.parse().map_err(|_| SubscribeError::range(tt, text))?;
            if n < min || n > max {
                return Err(SubscribeError::range(tt, text));
            }
            Ok(Value::Int(n))
        }
        Kind::Float => {
            let t = text.trim();
            let n = match t.to_ascii_lowercase().as_str() {
                "nan" => f64::NAN,
                "infinity" | "+infinity" | "inf" | "+inf" => f64::INFINITY,
                "-infinity" | "-inf" => f64::NEG_INFINITY,
                _ => {
                    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) {
                        return Err(bad());
                    }
                    t.parse().map_err(|_| bad())?
                }
            };
            Ok(Value::Float(if n == 0.0 { 0.0 } else { n }))
        }
        Kind::Numeric => Decimal::parse(text.trim()).map(Value::Numeric).ok_or_else(bad),
        Kind::Bool => parse_bool(text).map(Value::Bool).ok_or_else(bad),
        Kind::Uuid => parse_uuid(text).map(Value::Ordered).ok_or_else(bad),
        Kind::Date => parse_timestamp(text, false).map(|us| Value::Ordered(us.div_euclid(DAY_US))).ok_or_else(bad),
        Kind::Timestamp => parse_timestamp(text, false).map(Value::Ordered).ok_or_else(bad),
        Kind::Timestamptz => parse_timestamp(text, true).map(Value::Ordered).ok_or_else(bad),
        Kind::Json => serde_json::from_str(text).map(Value::Json).map_err(|_| bad()),
        Kind::Text => Ok(Value::Text(text.to_owned())),
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    let t = text.trim().to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| t.len() >= min && word.starts_with(t.as_str());
    if prefix_of("true", 1) || prefix_of("yes", 1) || t == "on" || t == "1" {
        Some(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || t == "0" {
        Some(false)
    } else {
        None
    }
}

/// A UUID as a 128-bit number (so equal UUIDs in any accepted spelling compare equal).
fn parse_uuid(text: &str) -> Option<i128> {
    let t = text.trim();
    let t = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(t);
    let hex: String = t.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || t.starts_with('-') || t.ends_with('-') || t.contains("--") {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok().map(|n| n as i128)
}

const DAY_US: i128 = 86_400_000_000;

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.ffffff]]][ ][Z|±HH[:MM]]`, `infinity`, `-infinity` →
/// microseconds since 1970-01-01 (the offset applied only when `with_zone`).
fn parse_timestamp(text: &str, with_zone: bool) -> Option<i128> {
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => return Some(i128::MAX),
        "-infinity" => return Some(i128::MIN),
        _ => {}
    }
    let b = t.as_bytes();
    let num = |s: &[u8]| -> Option<i128> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    let dash1 = b.iter().position(|&c| c == b'-')?;
    let year = num(&b[..dash1])?;
    let rest = &b[dash1 + 1..];
    if rest.len() < 5 || rest[2] != b'-' {
        return None;
    }
    let month = num(&rest[..2])?;
    let day = num(&rest[3..5])?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut us = i128::from(madbase_http::days_from_civil(year as i64, month as u32, day as u32)) * DAY_US;
    let mut rest = &rest[5..];
    if rest.is_empty() {
        return Some(us);
    }
    if rest[0] != b'T' && rest[0] != b't' && rest[0] != b' ' {
        return None;
    }
    rest = &rest[1..];
    if rest.len() < 5 || rest[2] != b':' {
        return None;
    }
    let hour = num(&rest[..2])?;
    let minute = num(&rest[3..5])?;
    rest = &rest[5..];
    let mut second = 0;
    let mut micros = 0;
    if rest.first() == Some(&b':') {
        second = num(rest.get(1..3)?)?;
        rest = &rest[3..];
        if rest.first() == Some(&b'.') {
            let end = rest[1..].iter().position(|c| !c.is_ascii_digit()).map_or(rest.len(), |p| p + 1);
            let frac = &rest[1..end];
            if frac.is_empty() {
                return None;
            }
            let mut digits = [b'0'; 6];
            for (slot, d) in digits.iter_mut().zip(frac) {
                *slot = *d;
            }
            micros = num(&digits)?;
            rest = &rest[end..];
        }
    }
    if hour > 24 || minute > 59 || second > 60 {
        return None;
    }
    us += ((hour * 60 + minute) * 60 + second) * 1_000_000 + micros;
    let zone = std::str::from_utf8(rest).ok()?.trim_start();
    if zone.is_empty() {
        return Some(us);
    }
    let offset = if zone.eq_ignore_ascii_case("z") || zone.eq_ignore_ascii_case("utc") {
        0
    } else {
        let (sign, digits) = match zone.as_bytes()[0] {
            b'+' => (1, &zone[1..]),
            b'-' => (-1, &zone[1..]),
            _ => return None,
        };
        let parts: Vec<&str> = if digits.contains(':') {
            digits.split(':').collect()
        } else if digits.len() == 4 {
            vec![&digits[..2], &digits[2..]]
        } else {
            vec![digits]
        };
        let mut seconds = 0;
        for (i, part) in parts.iter().enumerate() {
            if i > 2 {
                return None;
            }
            seconds += num(part.as_bytes())? * [3600, 60, 1][i];
        }
        sign * seconds
    };
    Some(if with_zone { us - offset * 1_000_000 } else { us })
}

fn days_in_month(year: i128, month: i128) -> i128 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// An exact decimal: NaN above +Infinity above every number, as PostgreSQL's `numeric` orders.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decimal {
    NegInfinity,
    /// Sign, significant digits (no leading or trailing zeros; empty for zero) and the exponent
    /// of the first digit: value = 0.d1d2… × 10^exp.
    Finite {
        negative: bool,
        digits: Vec<u8>,
        exp: i64,
    },
    Infinity,
    NaN,
}

impl Decimal {
    fn parse(t: &str) -> Option<Decimal> {
        match t.to_ascii_lowercase().as_str() {
            "nan" => return Some(Decimal::NaN),
            "infinity" | "+infinity" | "inf" | "+inf" => return Some(Decimal::Infinity),
            "-infinity" | "-inf" => return Some(Decimal::NegInfinity),
            _ => {}
        }
        let (negative, t) = match t.as_bytes().first()? {
            b'-' => (true, &t[1..]),
            b'+' => (false, &t[1..]),
            _ => (false, t),
        };
        let (mantissa, exponent) = match t.find(['e', 'E']) {
            Some(i) => (&t[..i], t[i + 1..].parse::<i64>().ok()?),
            None => (t, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let all: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let lead = all.iter().position(|&d| d != 0);
        let Some(lead) = lead else {
            return Some(Decimal::Finite { negative: false, digits: Vec::new(), exp: 0 });
        };
        let trail = all.iter().rposition(|&d| d != 0).unwrap_or(lead);
        let exp = int.len() as i64 - lead as i64 + exponent;
        Some(Decimal::Finite { negative, digits: all[lead..=trail].to_vec(), exp })
    }

    fn rank(&self) -> u8 {
        match self {
            Decimal::NegInfinity => 0,
            Decimal::Finite { .. } => 1,
            Decimal::Infinity => 2,
            Decimal::NaN => 3,
        }
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        let (
            Decimal::Finite { negative: an, digits: ad, exp: ae },
            Decimal::Finite { negative: bn, digits: bd, exp: be },
        ) = (self, other)
        else {
            return self.rank().cmp(&other.rank());
        };
        let sign = |negative: bool, digits: &Vec<u8>| match (digits.is_empty(), negative) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        };
        let (sa, sb) = (sign(*an, ad), sign(*bn, bd));
        if sa != sb || sa == 0 {
            return sa.cmp(&sb);
        }
        let magnitude = ae.cmp(be).then_with(|| ad.cmp(bd));
        if sa < 0 {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What a bound condition compares with.
#[derive(Debug, Clone)]
enum Operand {
    Value(Value),
    /// `in`: the array's elements (`None` = NULL).
    List(Vec<Option<Value>>),
    /// `is`: `None` = NULL/UNKNOWN, `Some(b)` = TRUE/FALSE.
    Is(Option<bool>),
    Like(LikePattern),
    Regex(regex::Regex),
}

#[derive(Debug, Clone)]
struct BoundCondition {
    column: usize,
    kind: Kind,
    type_name: String,
    op: Op,
    negate: bool,
    operand: Operand,
}

/// A filter checked against its table: every column resolved to its index, every value cast.
#[derive(Debug, Clone, Default)]
pub struct BoundFilter {
    conditions: Vec<BoundCondition>,
}

fn bind_condition(c: &Condition, relation: &Relation) -> Result<BoundCondition, SubscribeError> {
    let Some(column) = relation.columns.iter().position(|col| col.name == c.column) else {
        return Err(SubscribeError::raise(format!("invalid column for filter {}", c.column)));
    };
    let type_name = relation.columns[column].type_name.as_str();
    let kind = kind_of(type_name);
    let tt = type_text(type_name);
    let text_like = matches!(type_name, "text" | "bpchar" | "name" | "citext");
    let operand = match c.op {
        Op::In => {
            let elements = parse_array_literal(&c.value).ok_or_else(|| SubscribeError {
                code: "22P02",
                condition: "invalid_text_representation",
                message: format!("malformed array literal: \"{}\"", c.value),
            })?;
            if elements.len() > MAX_IN_VALUES {
                return Err(SubscribeError::raise("too many values for `in` filter. Maximum 100".to_owned()));
            }
            let list = elements
                .iter()
                .map(|e| e.as_deref().map(|text| cast(kind, type_name, text)).transpose())
                .collect::<Result<_, _>>()?;
            Operand::List(list)
        }
        Op::Is => {
            let is = match c.value.as_str() {
                "null" | "unknown" => None,
                "true" => Some(true),
                "false" => Some(false),
                _ => {
                    return Err(SubscribeError::raise(
                        "invalid value for is filter: must be null, true, false, or unknown".to_owned(),
                    ))
                }
            };
            if c.value != "null" && kind != Kind::Bool {
                return Err(SubscribeError::raise(format!(
                    "is {} filter requires a boolean column, got {tt}",
                    c.value
                )));
            }
            Operand::Is(is)
        }
        Op::Like | Op::Ilike | Op::Match | Op::Imatch => {
            if !text_like || (type_name == "name" && matches!(c.op, Op::Match | Op::Imatch)) {
                return Err(SubscribeError::raise(format!(
                    "operator {} requires a text-compatible column type, got {tt}",
                    c.op.name()
                )));
            }
            let case_insensitive = matches!(c.op, Op::Ilike | Op::Imatch) || type_name == "citext";
            if matches!(c.op, Op::Like | Op::Ilike) {
                Operand::Like(LikePattern::new(&c.value, case_insensitive))
            } else {
                let regex = regex::RegexBuilder::new(&c.value)
                    .case_insensitive(case_insensitive)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| {
                        SubscribeError::raise(format!(
                            "invalid regular expression for {} filter: invalid regular expression: {}",
                            c.op.name(),
                            first_line(&e.to_string())
                        ))
                    })?;
                Operand::Regex(regex)
            }
        }
        _ => Operand::Value(cast(kind, type_name, &c.value)?),
    };
    Ok(BoundCondition { column, kind, type_name: type_name.to_owned(), op: c.op, negate: c.negate, operand })
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| l.trim_start().starts_with("error:")).map(str::trim).unwrap_or(s)
}

/// PostgreSQL's one-dimensional array literal `{a,"b c",NULL}` → its elements.
fn parse_array_literal(text: &str) -> Option<Vec<Option<String>>> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    if inner.trim().is_empty() {
        return Some(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut element = String::new();
        let mut quoted = false;
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => element.push(chars.next()?),
                    c => element.push(c),
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if matches!(c, '{' | '}' | '"') {
                    return None;
                }
                chars.next();
                if c == '\\' {
                    element.push(chars.next()?);
                } else {
                    element.push(c);
                }
            }
            let trimmed = element.trim_end().len();
            element.truncate(trimmed);
            if element.is_empty() {
                return None;
            }
        }
        out.push(if !quoted && element.eq_ignore_ascii_case("null") { None } else { Some(element) });
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// A LIKE pattern: `%` any run, `_` one character, `\` escapes the next.
#[derive(Debug, Clone)]
struct LikePattern {
    tokens: Vec<LikeToken>,
    case_insensitive: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum LikeToken {
    Char(char),
    One,
    Any,
}

impl LikePattern {
    fn new(pattern: &str, case_insensitive: bool) -> LikePattern {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '%' => LikeToken::Any,
                '_' => LikeToken::One,
                '\\' => LikeToken::Char(fold(chars.next().unwrap_or('\\'), case_insensitive)),
                c => LikeToken::Char(fold(c, case_insensitive)),
            });
        }
        LikePattern { tokens, case_insensitive }
    }

    /// Iterative wildcard match with backtracking to the last `%` (linear in practice).
    fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().map(|c| fold(c, self.case_insensitive)).collect();
        let (mut t, mut p) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.tokens.get(p) {
                Some(LikeToken::Any) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(LikeToken::One) => {
                    t += 1;
                    p += 1;
                }
                Some(LikeToken::Char(c)) if *c == text[t] => {
                    t += 1;
                    p += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        self.tokens[p..].iter().all(|t| *t == LikeToken::Any)
    }
}

fn fold(c: char, case_insensitive: bool) -> char {
    if case_insensitive {
        c.to_lowercase().next().unwrap_or(c)
    } else {
        c
    }
}

/// The SQL text of a JSON value as `#>> '{}'` gives it (`None` for JSON null).
fn json_text(json: &str) -> Option<String> {
    let json = json.trim();
    if json == "null" {
        return None;
    }
    if json.starts_with('"') {
        if let Ok(serde_json::Value::String(s)) = serde_json::from_str(json) {
            return Some(s);
        }
    }
    Some(json.to_owned())
}

impl BoundFilter {
    /// No conditions: every change matches.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// Does the change pass the filter? DELETE is matched on `old_record`, INSERT and UPDATE on
    /// `record`; a change without that image passes only an empty filter.
    pub fn matches(&self, change: &Change) -> bool {
        if self.conditions.is_empty() {
            return true;
        }
        let row = match change.kind {
            ChangeKind::Delete => change.old_record.as_ref(),
            ChangeKind::Insert | ChangeKind::Update => change.record.as_ref(),
        };
        row.is_some_and(|row| self.matches_row(row))
    }

    /// Does this row image pass every condition (SQL's `true`, not unknown)?
    pub fn matches_row(&self, row: &Row) -> bool {
        self.conditions.iter().all(|c| {
            let Some(Some(json)) = row.values.get(c.column) else {
                return false;
            };
            c.evaluate(json_text(json)) == Some(true)
        })
    }
}

impl BoundCondition {
    /// SQL's three-valued answer (`None` = unknown).
    fn evaluate(&self, text: Option<String>) -> Option<bool> {
        // A stored value that does not cast (cannot happen for values PostgreSQL rendered) is
        // treated as unknown.
        let value = match text {
            None => None,
            Some(text) => Some(cast(self.kind, &self.type_name, &text).ok()?),
        };
        match (&self.operand, self.op) {
            (Operand::Is(expected), _) => {
                let result = match (expected, &value) {
                    (None, v) => v.is_none(),
                    (Some(b), Some(Value::Bool(v))) => v == b,
                    (Some(_), _) => false,
                };
                Some(result != self.negate)
            }
            (Operand::Value(operand), Op::IsDistinct) => {
                let distinct = match &value {
                    None => true,
                    Some(v) => compare(v, operand) != Some(Ordering::Equal),
                };
                Some(distinct != self.negate)
            }
            (Operand::Value(operand), op) => {
                let ordering = compare(value.as_ref()?, operand)?;
                let result = match op {
                    Op::Eq => ordering == Ordering::Equal,
                    Op::Neq => ordering != Ordering::Equal,
                    Op::Lt => ordering == Ordering::Less,
                    Op::Lte => ordering != Ordering::Greater,
                    Op::Gt => ordering == Ordering::Greater,
                    Op::Gte => ordering != Ordering::Less,
                    _ => return None,
                };
                Some(result != self.negate)
            }
            (Operand::List(list), _) => {
                let value = value.as_ref()?;
                let mut unknown = false;
                for element in list {
                    match element {
                        Some(e) if compare(value, e) == Some(Ordering::Equal) => return Some(!self.negate),
                        Some(_) => {}
                        None => unknown = true,
                    }
                }
                if unknown {
                    None
                } else {
                    Some(self.negate)
                }
            }
            (Operand::Like(pattern), _) => match value? {
                Value::Text(t) => Some(pattern.matches(&t) != self.negate),
                _ => None,
            },
            (Operand::Regex(regex), _) => match value? {
                Value::Text(t) => Some(regex.is_match(&t) != self.negate),
                _ => None,
            },
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::changes::{Column, ReplicaIdentity};

    fn relation() -> Relation {
        let col = |name: &str, type_name: &str, key: bool| Column {
            name: name.into(),
            type_oid: 0,
            type_name: type_name.into(),
            key,
        };
        Relation {
            oid: 1,
            schema: "public".into(),
            table: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                col("id", "int8", true),
                col("name", "text", false),
                col("price", "numeric", false),
                col("score", "float8", false),
                col("done", "bool", false),
                col("uid", "uuid", false),
                col("at", "timestamptz", false),
                col("day", "date", false),
                col("small", "int2", false),
                col("meta", "jsonb", false),
                col("title", "varchar", false),
            ],
            rls_enabled: false,
            primary_key: vec![0],
        }
    }

    /// A row from `(column, JSON)` pairs; other columns are JSON null.
    fn row(values: &[(&str, &str)]) -> Row {
        let rel = relation();
        let mut out = vec![Some(Box::<str>::from("null")); rel.columns.len()];
        for (name, json) in values {
            let i = rel.columns.iter().position(|c| c.name == *name).expect("column");
            out[i] = Some((*json).into());
        }
        Row { values: out }
    }

    fn check(filter: &str, values: &[(&str, &str)]) -> bool {
        Filter::parse(filter).expect("parse").bind(&relation()).expect("bind").matches_row(&row(values))
    }

    fn parse_err(filter: &str) -> String {
        Filter::parse(filter).expect_err("should fail").to_string()
    }

    fn bind_err(filter: &str) -> String {
        Filter::parse(filter).expect("parse").bind(&relation()).expect_err("should fail").to_string()
    }

    #[test]
    fn parses_as_supabase() {
        let f = Filter::parse("subject=eq.hey").unwrap();
        assert_eq!(
            f.conditions,
            [Condition { column: "subject".into(), op: Op::Eq, value: "hey".into(), negate: false }]
        );
        assert_eq!(Filter::parse("subject=in.(hidee,ho)").unwrap().conditions[0].value, "{hidee,ho}");
        let f = Filter::parse("subject=not.like.hey%").unwrap();
        assert_eq!(
            (f.conditions[0].op, f.conditions[0].negate, f.conditions[0].value.as_str()),
            (Op::Like, true, "hey%")
        );
        let f = Filter::parse("id=gt.0,id=lt.100").unwrap();
        assert_eq!(f.conditions.len(), 2);
        assert_eq!(f.conditions[1].value, "100");
        assert!(Filter::parse("").unwrap().is_empty());
        assert!(Filter::parse("   ").unwrap().is_empty());
        // Commas inside parentheses and quotes do not split; one level of quotes is removed.
        let f = Filter::parse(r#"name=in.(a,b),name=eq."x,y",name=eq."a\"b""#).unwrap();
        assert_eq!(f.conditions.len(), 3);
        assert_eq!(f.conditions[0].value, "{a,b}");
        assert_eq!(f.conditions[1].value, "x,y");
        assert_eq!(f.conditions[2].value, "a\"b");
        // The value keeps later dots and equals signs.
        assert_eq!(Filter::parse("name=eq.a.b=c").unwrap().conditions[0].value, "a.b=c");
    }

    #[test]
    fn parse_errors_are_supabase_texts() {
        assert_eq!(parse_err("subject=foo.hey"), r#"Error parsing `filter` params: ["foo", "hey"]"#);
        assert_eq!(parse_err("undefined"), r#"Error parsing `filter` params: ["undefined"]"#);
        assert_eq!(parse_err("id=eq"), r#"Error parsing `filter` params: ["eq"]"#);
        assert_eq!(parse_err("id=not.eq"), r#"Error parsing `filter` params: ["eq"]"#);
        assert_eq!(parse_err("a=q.\"x"), r#"Error parsing `filter` params: ["q", "\"x"]"#);
        assert_eq!(
            parse_err("id=eq.1,,id=eq.2"),
            "Error parsing `filter` params: filter must not contain empty segments (check for extra commas)"
        );
        assert_eq!(
            parse_err("id=in.1,2"),
            "Error parsing `filter` params: `in` filter value must be wrapped by parentheses"
        );
    }

    #[test]
    fn bind_errors_are_postgres_errors() {
        assert_eq!(bind_err("subject=eq.hey"), "ERROR P0001 (raise_exception) invalid column for filter subject");
        assert_eq!(
            bind_err("id=eq.hey"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type bigint: \"hey\""
        );
        assert_eq!(
            bind_err("small=eq.40000"),
            "ERROR 22003 (numeric_value_out_of_range) value \"40000\" is out of range for type smallint"
        );
        assert_eq!(
            bind_err("uid=eq.nope"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type uuid: \"nope\""
        );
        assert_eq!(
            bind_err("done=eq.maybe"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type boolean: \"maybe\""
        );
        assert_eq!(
            bind_err("id=in.(1,x)"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type bigint: \"x\""
        );
        assert_eq!(
            bind_err("id=is.true"),
            "ERROR P0001 (raise_exception) is true filter requires a boolean column, got bigint"
        );
        assert_eq!(
            bind_err("done=is.maybe"),
            "ERROR P0001 (raise_exception) invalid value for is filter: must be null, true, false, or unknown"
        );
        assert_eq!(
            bind_err("id=like.1%"),
            "ERROR P0001 (raise_exception) operator like requires a text-compatible column type, got bigint"
        );
        assert!(bind_err("name=match.(").starts_with(
            "ERROR P0001 (raise_exception) invalid regular expression for match filter: invalid regular expression"
        ));
        let many = (0..101).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert_eq!(
            bind_err(&format!("id=in.({many})")),
            "ERROR P0001 (raise_exception) too many values for `in` filter. Maximum 100"
        );
    }

    #[test]
    fn subscribe_error_text() {
        let filter = Filter::parse("subject=eq.hey").unwrap();
        let error = filter.bind(&relation()).unwrap_err();
        assert_eq!(
            subscribe_error_message("*", "public", "test", &filter, None, &error),
            "Unable to subscribe to changes with given parameters. An exception happened so please check your \
             connect parameters: [event: *, schema: public, table: test, filters: [{\"subject\", \"eq\", \"hey\", \
             false}], select: nil]. Exception: ERROR P0001 (raise_exception) invalid column for filter subject"
        );
    }

    #[test]
    fn comparisons_follow_the_column_type() {
        // Integers numerically, not as text.
        assert!(check("id=eq.5", &[("id", "5")]));
        assert!(check("id=eq. 5", &[("id", "5")]));
        assert!(!check("id=eq.5", &[("id", "50")]));
        assert!(check("id=neq.5", &[("id", "6")]));
        assert!(check("id=lt.10", &[("id", "9")]));
        assert!(!check("id=lt.10", &[("id", "10")]));
        assert!(check("id=lte.10", &[("id", "10")]));
        assert!(check("id=gt.9", &[("id", "10")]));
        assert!(check("id=gte.10", &[("id", "10")]));
        assert!(!check("id=gte.11", &[("id", "10")]));
        // Numeric exactly, whatever the spelling.
        assert!(check("price=eq.1.50", &[("price", "1.5")]));
        assert!(check("price=eq.15e-1", &[("price", "1.5")]));
        assert!(check("price=gt.-2", &[("price", "-1.99")]));
        assert!(check("price=lt.100", &[("price", "99.999")]));
        assert!(check("price=gt.1000000", &[("price", "\"NaN\"")]));
        // Floats.
        assert!(check("score=gt.1.5", &[("score", "2")]));
        assert!(check("score=eq.0.5", &[("score", "0.5")]));
        // Booleans in PostgreSQL's spellings.
        assert!(check("done=eq.true", &[("done", "true")]));
        assert!(check("done=eq.t", &[("done", "true")]));
        assert!(check("done=eq.no", &[("done", "false")]));
        // UUIDs in any case and with or without hyphens.
        let uid = "\"0f8fad5b-d9cb-469f-a165-70867728950e\"";
        assert!(check("uid=eq.0F8FAD5B-D9CB-469F-A165-70867728950E", &[("uid", uid)]));
        assert!(check("uid=eq.{0f8fad5bd9cb469fa16570867728950e}", &[("uid", uid)]));
        // Timestamps as instants.
        let at = "\"2024-01-01T10:00:00+00:00\"";
        assert!(check("at=eq.2024-01-01 12:00:00+02", &[("at", at)]));
        assert!(check("at=gt.2024-01-01T09:59:59.999Z", &[("at", at)]));
        assert!(check("at=lt.2024-01-01 10:00:00.000001+00", &[("at", at)]));
        assert!(check("day=eq.2024-02-29", &[("day", "\"2024-02-29\"")]));
        assert!(check("day=lt.2024-03-01", &[("day", "\"2024-02-29\"")]));
        // Text byte-wise.
        assert!(check("name=eq.hey", &[("name", "\"hey\"")]));
        assert!(check("name=lt.b", &[("name", "\"a\"")]));
        assert!(check("name=gt.B", &[("name", "\"a\"")]));
        assert!(check("title=eq.x", &[("title", "\"x\"")]));
        // JSON as values.
        // (a top-level comma splits, as on Supabase: such a value is quoted)
        assert!(check(r#"meta=eq."{\"b\":1, \"a\":2}""#, &[("meta", "{\"a\": 2, \"b\": 1}")]));
    }

    #[test]
    fn in_like_is_match_isdistinct_and_not() {
        assert!(check("id=in.(1,2,3)", &[("id", "2")]));
        assert!(!check("id=in.(1,2,3)", &[("id", "4")]));
        assert!(check("id=not.in.(1,2,3)", &[("id", "4")]));
        // NULL in the list makes a miss unknown: hidden, negated or not.
        assert!(!check("id=in.(1,NULL)", &[("id", "4")]));
        assert!(!check("id=not.in.(1,NULL)", &[("id", "4")]));
        assert!(check("name=in.(\"a b\",c)", &[("name", "\"a b\"")]));

        assert!(check("name=like.he%", &[("name", "\"hey\"")]));
        assert!(check("name=like.h_y", &[("name", "\"hey\"")]));
        assert!(!check("name=like.H%", &[("name", "\"hey\"")]));
        assert!(check("name=ilike.H%", &[("name", "\"hey\"")]));
        assert!(check("name=like.100\\%", &[("name", "\"100%\"")]));
        assert!(!check("name=like.100\\%", &[("name", "\"1000\"")]));
        assert!(check("name=like.%a%b%", &[("name", "\"xxaxxbxx\"")]));
        assert!(check("name=not.like.x%", &[("name", "\"hey\"")]));

        assert!(check("name=match.^h.y$", &[("name", "\"hey\"")]));
        assert!(!check("name=match.^H", &[("name", "\"hey\"")]));
        assert!(check("name=imatch.^H", &[("name", "\"hey\"")]));

        assert!(check("name=is.null", &[]));
        assert!(!check("name=is.null", &[("name", "\"x\"")]));
        assert!(check("name=not.is.null", &[("name", "\"x\"")]));
        assert!(check("done=is.true", &[("done", "true")]));
        assert!(check("done=is.false", &[("done", "false")]));
        assert!(!check("done=is.false", &[]));
        assert!(check("done=is.unknown", &[]));

        assert!(check("name=isdistinct.a", &[]));
        assert!(check("name=isdistinct.a", &[("name", "\"b\"")]));
        assert!(!check("name=isdistinct.a", &[("name", "\"a\"")]));
        assert!(check("name=not.isdistinct.a", &[("name", "\"a\"")]));

        // NULL operands are unknown for comparisons, also negated.
        assert!(!check("name=eq.a", &[]));
        assert!(!check("name=not.eq.a", &[]));
        assert!(check("name=not.eq.a", &[("name", "\"b\"")]));
        // AND of conditions.
        assert!(check("id=gt.0,id=lt.10", &[("id", "5")]));
        assert!(!check("id=gt.0,id=lt.10", &[("id", "15")]));
    }

    #[test]
    fn deletes_match_on_the_old_record_and_missing_columns_hide() {
        let rel = Arc::new(relation());
        let filter = Filter::parse("id=eq.7").unwrap().bind(&rel).unwrap();
        let old = Row { values: (0..rel.columns.len()).map(|i| (i == 0).then(|| Box::<str>::from("7"))).collect() };
        let delete = Change { relation: rel.clone(), kind: ChangeKind::Delete, record: None, old_record: Some(old) };
        assert!(filter.matches(&delete));
        let other = Filter::parse("name=eq.x").unwrap().bind(&rel).unwrap();
        assert!(!other.matches(&delete), "a column the old row does not carry hides the change");
        let insert =
            Change { relation: rel, kind: ChangeKind::Insert, record: Some(row(&[("id", "7")])), old_record: None };
        assert!(filter.matches(&insert));
        assert!(Filter::default().bind(&relation()).unwrap().matches(&insert));
    }
}
