//! How a request's one result row becomes the HTTP response: reads and calls finish a page of
//! rows here ([`page`]), writes take the pieces they share with them ([`first_row`],
//! [`row_counts`], [`respond`]), and every `EXPLAIN` answer is [`plan_response`].
//!
//! Owns: the status and headers of a page (the range status, `Content-Range`, `Content-Type` with
//! `Content-Profile`, `Preference-Applied`), `.single()` (`Accept:
//! application/vnd.pgrst.object+json` on a page that is not one row: 406 PGRST116), and the
//! `response.headers`/`response.status` overrides of reference/rest.md §2.1.
//!
//! Invariants: the body is the exact bytes PostgreSQL built, never re-serialised (HEAD sends
//! none); the overrides are applied last, so SQL has the final word on status and headers; a
//! malformed override is 500 PGRST111/PGRST112, never a partial response.

use bytes::Bytes;
use madbase_http::Response;
use madbase_pg::{Row, StatementResult};
use serde_json::Value;

use super::error::{self, ApiError};
use super::media::{self, Media};
use super::prefer::Prefer;
use super::range::{content_range, range_status};
use super::request::Profile;

/// At most this many entries in a `response.headers` GUC (more is PGRST111).
const MAX_GUC_HEADERS: usize = 100;

/// The one row of the first statement's result (every request statement returns exactly one).
pub(super) fn first_row(results: &[StatementResult]) -> Result<&Row, ApiError> {
    results.first().and_then(|r| r.rows.first()).ok_or(ApiError::Internal("no result row"))
}

/// `page_total` (column 0) and, when counted, `total_result_set` (column 2) of a read or RPC result
/// row.
pub(super) fn row_counts(row: &Row, exact_count: bool) -> Result<(u64, Option<u64>), ApiError> {
    let number = |i: usize| row.get_str(i).and_then(|n| n.parse::<u64>().ok());
    let page_total = number(0).ok_or(ApiError::Internal("page_total is not a number"))?;
    let total = match exact_count {
        true => Some(number(2).ok_or(ApiError::Internal("total is not a number"))?),
        false => None,
    };
    Ok((page_total, total))
}

/// [`row_counts`] of a page that `media` may require to be exactly one row (`.single()`).
pub(super) fn page_counts(row: &Row, exact_count: bool, media: &Media) -> Result<(u64, Option<u64>), ApiError> {
    let (page_total, total) = row_counts(row, exact_count)?;
    if media.is_singular() && page_total != 1 {
        return Err(ApiError::NotSingular(page_total));
    }
    Ok((page_total, total))
}

/// A page of rows, as its result row reported it.
pub(super) struct Page<'r> {
    pub(super) row: &'r Row,
    /// The position of its first row (the query's offset).
    pub(super) offset: u64,
    pub(super) rows: u64,
    /// The total it was cut from, when counted (or estimated).
    pub(super) total: Option<u64>,
}

/// What a page's response carries. Reads and calls send the same headers; each keeps the order
/// it has always sent them in, so their responses stay byte for byte what they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Content {
    /// A read's rows: `Content-Range`, then `Content-Type`.
    Rows,
    /// A call's result: `Content-Type`, then `Content-Range`.
    Result,
    /// A call of a `void` function: 204 with `Content-Range` only.
    Nothing,
}

/// How a request asked for its page: its media type, schema, preferences and method.
pub(super) struct Asked<'a> {
    pub(super) media: &'a Media,
    pub(super) profile: Profile<'a>,
    pub(super) prefer: &'a Prefer,
    pub(super) head: bool,
}

/// The response for `page`: 416 past the counted total, 206 when the rows do not cover it, else
/// 200 (204 for [`Content::Nothing`]); the body (none for HEAD), `Content-Range`, the content
/// type, `Preference-Applied` (with `max_affected` when it was honoured), then the overrides.
pub(super) fn page(
    page: Page<'_>,
    content: Content,
    asked: &Asked<'_>,
    max_affected: Option<u64>,
) -> Result<Response, ApiError> {
    let status = range_status(page.offset, page.rows, page.total)?;
    let range = content_range(page.offset, page.rows, page.total);
    let mut response = match content {
        Content::Nothing => Response::new(204),
        Content::Rows | Content::Result => Response::with_body(status, body(page.row, asked.head)?),
    };
    if content == Content::Rows {
        response.set_header("content-range", range.clone());
    }
    if content != Content::Nothing {
        asked.profile.content_type(&mut response, asked.media.content_type());
    }
    if content != Content::Rows {
        response.set_header("content-range", range);
    }
    asked.prefer.set_applied(&mut response, Vec::new(), max_affected);
    respond(page.row, response)
}

/// The `body` column (1) of a result row; nothing for HEAD.
pub(super) fn body(row: &Row, head: bool) -> Result<Bytes, ApiError> {
    match head {
        true => Ok(Bytes::new()),
        false => row.get(1).cloned().ok_or(ApiError::Internal("body is NULL")),
    }
}

/// The answer to `Accept: application/vnd.pgrst.plan…`: 200 with the `EXPLAIN` output (one line
/// per row, each ending in `\n`), its media type and nothing else (no `Content-Range`).
pub(super) fn plan_response(
    results: &[StatementResult],
    media: &Media,
    head: bool,
    profile: Profile<'_>,
) -> Result<Response, ApiError> {
    let rows = results.first().map(|r| r.rows.as_slice()).ok_or(ApiError::Internal("no plan"))?;
    let body = if head { Bytes::new() } else { Bytes::from(media::Plan::body(rows)) };
    let mut response = Response::with_body(200, body);
    profile.content_type(&mut response, media.content_type());
    Ok(response)
}

/// `response` with PostgREST's overrides from SQL, read from the last two columns of the
/// statement's `row` ([`super::statement::RESPONSE_GUC_COLUMNS`]): `response.status` replaces the status,
/// `response.headers` (a JSON array of single-key objects) replaces same-named headers and adds
/// the rest. Malformed → 500 PGRST111 / PGRST112.
pub(super) fn respond(row: &Row, mut response: Response) -> Result<Response, ApiError> {
    let (headers, status) = match row.len().checked_sub(2) {
        Some(first) => (row.get_str(first), row.get_str(first + 1)),
        None => return Err(ApiError::Internal("no response GUC columns")),
    };
    if let Some(text) = status {
        response.set_status(guc_status(text)?);
    }
    if let Some(text) = headers {
        let headers = guc_headers(text)?;
        for (name, _) in &headers {
            response.remove_header(name);
        }
        for (name, value) in headers {
            response.set_header(name, value);
        }
    }
    Ok(response)
}

/// `response.status`: leading decimal digits (PostgREST reads the number at the start), a final
/// status code from 200 to 599 (a 1xx is refused: see [`ApiError::GucStatus`]).
fn guc_status(text: &str) -> Result<u16, ApiError> {
    let digits = text.find(|c: char| !c.is_ascii_digit()).map_or(text, |end| &text[..end]);
    match digits.parse::<u16>() {
        Ok(status) if error::FINAL_STATUS.contains(&status) => Ok(status),
        _ => Err(ApiError::GucStatus),
    }
}

/// `response.headers`: `[{"Name":"value"}, …]`, at most [`MAX_GUC_HEADERS`] entries.
fn guc_headers(text: &str) -> Result<Vec<(String, String)>, ApiError> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) else { return Err(ApiError::GucHeaders) };
    if items.len() > MAX_GUC_HEADERS {
        return Err(ApiError::GucHeaders);
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(map) if map.len() == 1 => match map.into_iter().next() {
                Some((name, Value::String(value))) => Ok((name, value)),
                _ => Err(ApiError::GucHeaders),
            },
            _ => Err(ApiError::GucHeaders),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_gucs() {
        assert_eq!(guc_status("418").unwrap(), 418);
        assert_eq!(guc_status("201 Created").unwrap(), 201);
        for bad in ["", "abc", "42", "600", "99999999", "100", "101", "199"] {
            assert!(matches!(guc_status(bad), Err(ApiError::GucStatus)), "{bad}");
        }
        assert_eq!(
            guc_headers(r#"[{"Cache-Control":"public"},{"X-A":"1"},{"X-A":"2"}]"#).unwrap(),
            [("Cache-Control".into(), "public".into()), ("X-A".into(), "1".into()), ("X-A".into(), "2".into())]
        );
        for bad in [r#"{"a":"b"}"#, r#"[{"a":1}]"#, r#"[{"a":"1","b":"2"}]"#, r#"["a"]"#, "[{}]", "nope"] {
            assert!(matches!(guc_headers(bad), Err(ApiError::GucHeaders)), "{bad}");
        }
        assert_eq!(guc_headers("[]").unwrap(), []);
    }
}
