//! The page of rows a read or a call returns, both ways: the request's `Range` header and
//! `db_max_rows` narrow the query's `offset`/`limit` before SQL is built; the page's row counts
//! give the status (200, 206, 416) and `Content-Range` after it ran.
//!
//! Owns: [`apply_range_header`], [`cap_rows`], [`range_status`] and [`content_range`].
//! Invariants: a `Range` value that is not `<digits>-[<digits>]` is ignored (never an error), and
//! numbers past `i64::MAX` saturate; `db_max_rows` only ever lowers the top-level `limit`.

use madbase_http::Request;

use super::error::ApiError;
use super::query::{self, ReadQuery};

/// `db-max-rows`: the top-level `limit` becomes the smaller of the requested one and the cap.
pub(super) fn cap_rows(query: &mut ReadQuery, max_rows: Option<u64>) {
    if let Some(max) = max_rows {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        query.limit = Some(query.limit.map_or(max, |limit| limit.min(max)));
    }
}

/// The `Range` request header (`Range: 0-19`, open-ended `10-`), read only on GET as PostgREST
/// reads it (RFC 9110 lets other methods ignore it); a value that is not `<digits>-[<digits>]`
/// (e.g. `items=0-1`) is ignored. The rows asked for are intersected with `offset`/`limit`, which
/// then carry the result. `limit=0` bypasses the header and the offset (PostgREST's "limit zero
/// range" starts at row 0, for every method). Errors (416 PGRST103): a lower bound above the upper
/// one; an empty intersection (PostgREST's "Limit should be greater than or equal to zero." then).
pub(super) fn apply_range_header(req: &Request, query: &mut ReadQuery) -> Result<(), ApiError> {
    if query.limit == Some(0) {
        query.offset = None;
        return Ok(());
    }
    if req.method() != "GET" {
        return Ok(());
    }
    let Some((lower, upper)) = req.header("range").and_then(parse_range) else { return Ok(()) };
    if upper.is_some_and(|upper| upper < lower) {
        return Err(ApiError::RangeBounds);
    }
    let offset = query.offset.unwrap_or(0).max(0);
    let limit_upper = query.limit.map(|limit| offset.saturating_add(limit).saturating_sub(1));
    let first = lower.max(offset);
    let last = match (upper, limit_upper) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if last.is_some_and(|last| last < first) {
        return Err(ApiError::Query(query::QueryError::NegativeLimit));
    }
    query.offset = (first > 0 || query.offset.is_some()).then_some(first);
    // `last - first + 1` cannot exceed i64 unless the range reaches i64::MAX: no row lies there,
    // so that is no limit at all.
    query.limit = last.and_then(|last| last.checked_sub(first)?.checked_add(1));
    Ok(())
}

/// `^([0-9]+)-([0-9]*)$` → (first, last); numbers past `i64::MAX` saturate (no row lies there).
fn parse_range(value: &[u8]) -> Option<(i64, Option<i64>)> {
    let text = std::str::from_utf8(value).ok()?;
    let (lower, upper) = text.split_once('-')?;
    let number = |digits: &str| -> Option<i64> {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(digits.parse::<i64>().unwrap_or(i64::MAX))
    };
    let lower = number(lower)?;
    let upper = if upper.is_empty() { None } else { Some(number(upper)?) };
    Some((lower, upper))
}

/// PostgREST's status for a read of `rows` rows from `offset`: 200 without a count; with one,
/// 416 when the offset lies beyond the total, 206 when the rows do not cover it, else 200.
pub(super) fn range_status(offset: u64, rows: u64, total: Option<u64>) -> Result<u16, ApiError> {
    match total {
        None => Ok(200),
        Some(total) if offset > total => Err(ApiError::OffsetBeyondTotal { offset, total }),
        Some(total) if rows < total => Ok(206),
        Some(_) => Ok(200),
    }
}

/// `Content-Range` as PostgREST sends it: `first-last/total`, `*` for the range when no rows came
/// back or the total is 0 (a planned estimate can be), `*` for the total when none was counted.
pub(super) fn content_range(offset: u64, rows: u64, total: Option<u64>) -> String {
    let range_known = rows > 0 && total != Some(0);
    let total = total.map_or_else(|| "*".to_owned(), |t| t.to_string());
    if !range_known {
        format!("*/{total}")
    } else {
        format!("{offset}-{}/{total}", offset.saturating_add(rows - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_rows_caps_the_limit() {
        let mut q = ReadQuery::default();
        cap_rows(&mut q, None);
        assert_eq!(q.limit, None);
        cap_rows(&mut q, Some(10));
        assert_eq!(q.limit, Some(10));
        q.limit = Some(3);
        cap_rows(&mut q, Some(10));
        assert_eq!(q.limit, Some(3));
        q.limit = Some(30);
        cap_rows(&mut q, Some(10));
        assert_eq!(q.limit, Some(10));
    }

    #[test]
    fn ranges() {
        assert_eq!(content_range(0, 0, None), "*/*");
        assert_eq!(content_range(0, 3, None), "0-2/*");
        assert_eq!(content_range(10, 1, None), "10-10/*");
        assert_eq!(content_range(0, 0, Some(0)), "*/0");
        assert_eq!(content_range(2, 2, Some(9)), "2-3/9");
        assert_eq!(range_status(0, 3, None).unwrap(), 200);
        assert_eq!(range_status(0, 3, Some(3)).unwrap(), 200);
        assert_eq!(range_status(0, 2, Some(3)).unwrap(), 206);
        assert_eq!(range_status(3, 0, Some(3)).unwrap(), 206);
        assert_eq!(range_status(0, 0, Some(0)).unwrap(), 200);
        assert!(matches!(range_status(4, 0, Some(3)), Err(ApiError::OffsetBeyondTotal { offset: 4, total: 3 })));
        assert_eq!(content_range(0, 3, Some(0)), "*/0", "a zero estimate hides the range, as PostgREST");
    }

    #[test]
    fn range_headers() {
        assert_eq!(parse_range(b"0-19"), Some((0, Some(19))));
        assert_eq!(parse_range(b"10-"), Some((10, None)));
        assert_eq!(parse_range(b"99999999999999999999-"), Some((i64::MAX, None)));
        for ignored in [&b"items=0-1"[..], b"-5", b"1-2-3", b" 1-2", b"a-b", b""] {
            assert_eq!(parse_range(ignored), None);
        }
    }
}
