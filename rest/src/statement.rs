//! The part every request statement shares — reads ([`super::sql`]), writes ([`super::write`]) and
//! calls ([`super::rpc`]) each build their own page of rows, then finish the statement here.
//!
//! Owns: the parameter list ([`Params`]: values bound in order, numbered `$1`, `$2`, …), the outer
//! `SELECT` around the page ([`outer_select`]: `page_total`, `body`, the caller's columns, then the
//! response GUCs), and the row-limit check column with its marker ([`row_limit_check`],
//! [`row_limit_broken`]).
//!
//! Invariants: every value a statement carries is a bound parameter, numbered in the order it was
//! bound (so the same request shape gives the same SQL text, and the connection's prepared
//! statement cache hits); the outer `SELECT` always ends with [`RESPONSE_GUC_COLUMNS`], evaluated
//! once every row (and every function, trigger and default the statement runs) has been
//! computed; the row-limit check can only be told apart by its per-process marker.

use std::sync::OnceLock;

use bytes::Bytes;
use madbase_pg::{PgError, Statement};

/// The two columns every request statement ends with: the `response.headers` and
/// `response.status` GUCs (reference/rest.md §2.1) as the statement left them. In the outer
/// `SELECT` around the statement's aggregate they are evaluated once every row — and every
/// function, trigger and default the statement runs — has been computed, as PostgREST reads them.
pub(crate) const RESPONSE_GUC_COLUMNS: &str = "NULLIF(pg_catalog.current_setting('response.headers', true), '') \
     AS pgrst_response_headers, NULLIF(pg_catalog.current_setting('response.status', true), '') AS pgrst_response_status";

/// The values a statement binds, in order.
#[derive(Debug, Default)]
pub(crate) struct Params {
    values: Vec<Bytes>,
}

impl Params {
    /// Adds `value` and returns its placeholder (`$n`).
    pub(crate) fn bind(&mut self, value: impl Into<Bytes>) -> String {
        self.values.push(value.into());
        format!("${}", self.values.len())
    }

    /// `sql` with every bound value.
    pub(crate) fn statement(self, sql: String) -> Statement {
        self.values.into_iter().fold(Statement::new(sql), |statement, value| statement.bind(value))
    }
}

/// The outer `SELECT` of a request statement: `page_total` (the rows of `page`), `body` (the
/// expression `body`, or `NULL`), then `columns` (each `, <expression> AS <name>`), then the
/// response GUCs; with `source`, the rows come from it as the CTE `pgrst_source`, which `page`
/// reads.
pub(crate) fn outer_select(source: Option<&str>, body: &str, columns: &str, page: &str) -> String {
    let with = source.map_or_else(String::new, |source| format!("WITH pgrst_source AS ({source}) "));
    format!(
        "{with}SELECT pg_catalog.count(_postgrest_t) AS page_total, {body} AS body{columns}, \
         {RESPONSE_GUC_COLUMNS} FROM ({page}) _postgrest_t"
    )
}

/// The row-limit check of a write or call (`None` when there is no rule): an expression that is
/// NULL while the page's row count keeps the rules — `exactly_one` row, at most `max_affected`
/// rows — and otherwise casts [`row_limit_marker`] followed by the count to an integer, which
/// raises, so the implicit transaction rolls back (nothing is written). The limit and the marker
/// are bound, in that order.
pub(crate) fn row_limit_check(exactly_one: bool, max_affected: Option<u64>, params: &mut Params) -> Option<String> {
    let mut broken: Vec<String> = Vec::new();
    if exactly_one {
        broken.push("pg_catalog.count(_postgrest_t) <> 1".to_owned());
    }
    if let Some(limit) = max_affected {
        let limit = params.bind(limit.to_string());
        broken.push(format!("pg_catalog.count(_postgrest_t) > {limit}::bigint"));
    }
    if broken.is_empty() {
        return None;
    }
    let condition = broken.join(" OR ");
    let marker = params.bind(row_limit_marker().to_owned());
    Some(format!("CASE WHEN {condition} THEN ({marker}::text || pg_catalog.count(_postgrest_t))::integer END"))
}

/// The text the row-limit check (`max-affected`, singular) casts to an integer, followed by the
/// row count. Never a number, so the cast always fails; the nonce keeps a client's own data
/// from imitating it.
pub(crate) fn row_limit_marker() -> &'static str {
    static MARKER: OnceLock<String> = OnceLock::new();
    MARKER.get_or_init(|| {
        let mut nonce = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce);
        let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        format!("madbase row limit {hex}: ")
    })
}

/// The row count from the error the row-limit check raises, if this is that error.
pub(crate) fn row_limit_broken(error: &PgError) -> Option<u64> {
    let PgError::Db(db) = error else { return None };
    if db.code != "22P02" {
        return None;
    }
    let rest = db.message.strip_prefix("invalid input syntax for type integer: \"")?;
    rest.strip_prefix(row_limit_marker())?.strip_suffix('"')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_number_in_order() {
        let mut params = Params::default();
        assert_eq!(params.bind("a"), "$1");
        assert_eq!(params.bind(Bytes::from_static(b"b")), "$2");
        let statement = params.statement("SELECT $1, $2".to_owned());
        assert_eq!(statement.params.len(), 2);
    }

    #[test]
    fn row_limit_checks() {
        let mut params = Params::default();
        assert_eq!(row_limit_check(false, None, &mut params), None);
        assert_eq!(
            row_limit_check(true, Some(2), &mut params).unwrap(),
            "CASE WHEN pg_catalog.count(_postgrest_t) <> 1 OR pg_catalog.count(_postgrest_t) > $1::bigint \
             THEN ($2::text || pg_catalog.count(_postgrest_t))::integer END"
        );
    }

    #[test]
    fn marker_round_trip() {
        let db = madbase_pg::DbError {
            code: "22P02".into(),
            message: format!("invalid input syntax for type integer: \"{}14\"", row_limit_marker()),
            ..Default::default()
        };
        assert_eq!(row_limit_broken(&PgError::Db(Box::new(db))), Some(14));
        let forged = madbase_pg::DbError {
            code: "22P02".into(),
            message: "invalid input syntax for type integer: \"madbase max-affected 0: 14\"".into(),
            ..Default::default()
        };
        assert_eq!(row_limit_broken(&PgError::Db(Box::new(forged))), None);
    }
}
