//! Reads: `GET` and `HEAD /rest/v1/<table-or-view>` (reference/rest.md §3–§5).
//!
//! Owns: the read handler — the query string ([`super::query`]) narrowed by the `Range` header
//! and `db_max_rows` ([`super::range`]), planned against the request's schema cache snapshot
//! ([`super::plan`]), built into one statement ([`super::sql`]) with the planner's count beside it
//! for `Prefer: count=planned|estimated`, run READ ONLY in the request's batch — and the count a
//! read reports (exact, planned, or PostgREST's estimate rule).
//!
//! Invariants: an unknown relation never reaches PostgreSQL (PGRST205 from the snapshot); the
//! planner's count runs in the same batch (still one round trip) and never beside a plan; the
//! response is finished by [`super::response::page`].

use madbase_core::identity::Identity;
use madbase_http::{Request, Response};
use madbase_pg::{Statement, StatementResult};

use super::error::ApiError;
use super::media::{self, Media};
use super::plan::{self, ReadPlan};
use super::prefer::Prefer;
use super::query;
use super::range;
use super::relation;
use super::request;
use super::response::{self, Asked, Content, Page};
use super::sql;
use crate::schema::relationships::QualifiedName;
use crate::schema::SchemaCache;
use crate::RestService;

/// A read's statements, for one batch: the page (with its exact count when asked), wrapped in
/// `EXPLAIN` for a plan; and the planner's count (`planned`, `estimated`), which a plan does not
/// run. The handler and the injection property (`rest::injection`) both build through here.
pub(super) fn read_statements(
    schema: &SchemaCache,
    plan: &ReadPlan,
    media: &Media,
    head: bool,
    prefer: &Prefer,
) -> (Statement, Option<Statement>) {
    let mut statement = sql::read_statement(schema, plan, (!head).then_some(media), prefer.counts_exactly());
    if let Some(explain) = &media.plan {
        statement.sql = explain.wrap(&statement.sql);
    }
    let planned_count = matches!(prefer.count, Some("planned" | "estimated")) && media.plan.is_none();
    (statement, planned_count.then(|| sql::count_plan_statement(schema, plan)))
}

/// Serves `GET` (`head` = false) and `HEAD` on `/rest/v1/<relation>`; `pgrst_path` is the path
/// PostgREST would see (`request.path`).
pub(super) async fn serve(
    state: &RestService,
    req: &Request,
    identity: &Identity,
    head: bool,
    relation: &str,
    pgrst_path: &str,
) -> Result<Response, ApiError> {
    let config = &state.config;
    let profile = request::profile(req, config)?;
    // The snapshot this request uses to its end; an unknown relation never reaches PostgreSQL.
    let schema = state.schema();
    let media = media::negotiate(req, request::plan_enabled(state, &schema))?;
    let mut query = query::parse_read_query(req.query().unwrap_or(""))?;
    range::apply_range_header(req, &mut query)?;
    range::cap_rows(&mut query, config.api.max_rows.0);
    relation::find(&schema, profile.schema, relation)?;
    let plan = plan::plan(&schema, profile.schema, QualifiedName::new(profile.schema, relation), &query)?;

    let prefer = Prefer::checked(req)?;
    let (statement, count_plan) = read_statements(&schema, &plan, &media, head, &prefer);
    let end = prefer.tx_end();
    let results = request::request_batch(state, &schema, req, identity, profile, pgrst_path, &prefer)
        .with(|batch| {
            let batch = batch.statement(statement).read_only(true).end(end);
            // In the same batch: still one round trip.
            match count_plan {
                Some(count_plan) => batch.statement(count_plan),
                None => batch,
            }
        })
        .run(state)
        .await
        .map_err(|e| ApiError::from_pg(e, identity.authenticated))?;
    if media.plan.is_some() {
        return response::plan_response(&results, &media, head, profile);
    }
    let row = response::first_row(&results)?;
    let (rows, exact) = response::page_counts(row, prefer.counts_exactly(), &media)?;
    let total = total(&prefer, exact, &results, config.api.max_rows.0);
    let offset = query.offset.map_or(0, |o| o.unsigned_abs());
    let asked = Asked { media: &media, profile, prefer: &prefer, head };
    response::page(Page { row, offset, rows, total }, Content::Rows, &asked, None)
}

/// The total a read reports for `Prefer: count=…`: the `exact` count, the planner's estimate
/// (the second statement's result) for `planned`, or PostgREST's rule for `estimated`.
fn total(prefer: &Prefer, exact: Option<u64>, results: &[StatementResult], max_rows: Option<u64>) -> Option<u64> {
    let planned =
        || results.get(1).and_then(|r| r.rows.first()).and_then(|r| r.get(0)).and_then(|j| sql::planned_rows(j));
    match prefer.count {
        Some("planned") => planned(),
        Some("estimated") => estimated_total(exact, planned(), max_rows),
        _ => exact,
    }
}

/// `Prefer: count=estimated` (PostgREST's rule): the exact count while it stays within
/// `max_rows` (`db_max_rows`); above it (always, without a cap) the larger of the exact count and the estimate.
fn estimated_total(exact: Option<u64>, planned: Option<u64>, max_rows: Option<u64>) -> Option<u64> {
    // `Option`'s order is PostgREST's (`Nothing` below every `Just`).
    if exact > max_rows {
        Some(exact?.max(planned?))
    } else {
        exact
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates() {
        assert_eq!(estimated_total(Some(3), Some(9), None), Some(9));
        assert_eq!(estimated_total(Some(9), Some(3), None), Some(9));
        assert_eq!(estimated_total(Some(3), Some(9), Some(5)), Some(3));
        assert_eq!(estimated_total(Some(6), Some(900), Some(5)), Some(900));
        assert_eq!(estimated_total(Some(6), None, Some(5)), None);
    }
}
