//! GoTrue's offset pagination (`internal/api/pagination.go`, `sorting.go`): `page` and `per_page`
//! as Go's `strconv.ParseUint` reads them, the `X-Total-Count` and `Link` headers, and `sort`.

use madbase_http::Response;
use madbase_pg::StatementResult;

use super::{DEFAULT_PER_PAGE, MAX_PER_PAGE, POP_DEFAULT_PER_PAGE};
use crate::call::Call;
use crate::error::{AuthError, AuthResult};
use crate::go::go_quote;

/// The `count(*)` of a result.
pub(super) fn count_of(result: Option<&StatementResult>) -> AuthResult<u64> {
    result
        .and_then(StatementResult::scalar)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| AuthError::internal("admin: count returned no number"))
}

/// GoTrue's `sort` parameter (every value, `created_at [asc|desc]`); whether the first is ascending.
pub(super) fn sort_ascending(query: &[(String, String)]) -> AuthResult<bool> {
    let mut ascending = None;
    for (_, value) in query.iter().filter(|(k, _)| k == "sort") {
        let (field, direction) = match value.split_once(' ') {
            Some((field, direction)) => (field, Some(direction)),
            None => (value.as_str(), None),
        };
        if field != "created_at" {
            return Err(bad_sort(format!("bad field for sort '{field}'")));
        }
        let asc = match direction.map(str::to_ascii_uppercase).as_deref() {
            None | Some("DESC") => false,
            Some("ASC") => true,
            Some(_) => {
                let direction = direction.unwrap_or_default();
                return Err(bad_sort(format!("bad direction for sort '{direction}', only 'asc' and 'desc' allowed")));
            }
        };
        ascending.get_or_insert(asc);
    }
    Ok(ascending.unwrap_or(false))
}

pub(super) fn bad_sort(detail: String) -> AuthError {
    AuthError::validation(format!("Bad Sort Parameters: {detail}"))
}

/// The query string's pairs, decoded, in order (at most 64, as [`Call`] keeps).
pub(super) fn query_pairs(call: &Call<'_>) -> Vec<(String, String)> {
    call.req
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().take(64).collect())
        .unwrap_or_default()
}

/// GoTrue's offset pagination of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Page {
    /// `page` as asked (0 is served as 1, and reported as asked in `Link`, as GoTrue does).
    pub(super) page: u64,
    /// The page size served.
    pub(super) per_page: u64,
}

impl Page {
    pub(super) fn parse(call: &Call<'_>) -> AuthResult<Page> {
        Page::from_params(call.query("page"), call.query("per_page"))
    }

    pub(super) fn from_params(page: Option<&str>, per_page: Option<&str>) -> AuthResult<Page> {
        let page = parse_uint(page)?.unwrap_or(1);
        let per_page = match parse_uint(per_page)? {
            None => DEFAULT_PER_PAGE,
            Some(0) => POP_DEFAULT_PER_PAGE,
            Some(n) => n.min(MAX_PER_PAGE),
        };
        Ok(Page { page, per_page })
    }

    pub(super) fn limit(self) -> u64 {
        self.per_page
    }

    pub(super) fn offset(self) -> u64 {
        self.page.max(1).saturating_sub(1).saturating_mul(self.per_page).min(i64::MAX as u64)
    }

    pub(super) fn total_pages(self, count: u64) -> u64 {
        count.div_ceil(self.per_page)
    }

    /// `X-Total-Count`, and `Link` with `rel="next"` when a next page exists and `rel="last"`
    /// always: the request's path and query with `page` replaced (GoTrue's `addPaginationHeaders`).
    pub(super) fn headers(self, response: &mut Response, call: &Call<'_>, query: &[(String, String)], count: u64) {
        response.set_header("link", self.link(call.path, query, count));
        response.set_header("x-total-count", count.to_string());
    }

    pub(super) fn link(self, path: &str, query: &[(String, String)], count: u64) -> String {
        let total = self.total_pages(count);
        let mut link = String::new();
        if total > self.page {
            link.push('<');
            link.push_str(&page_url(path, query, self.page + 1));
            link.push_str(">; rel=\"next\", ");
        }
        link.push('<');
        link.push_str(&page_url(path, query, total));
        link.push_str(">; rel=\"last\"");
        link
    }
}

/// Go's `strconv.ParseUint(text, 10, 64)` of a query parameter; `None` when absent or empty.
pub(super) fn parse_uint(text: Option<&str>) -> AuthResult<Option<u64>> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(None) };
    let bad = |why: &str| {
        AuthError::validation(format!(
            "Bad Pagination Parameters: strconv.ParseUint: parsing {}: {why}",
            go_quote(crate::call::truncate(text, 64))
        ))
    };
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("invalid syntax"));
    }
    text.parse().map(Some).map_err(|_| bad("value out of range"))
}

/// `path?query` with `page` set to `page`, the query encoded as Go's `url.Values.Encode` does
/// (keys sorted, values in order, `QueryEscape`d).
pub(super) fn page_url(path: &str, query: &[(String, String)], page: u64) -> String {
    let mut keys: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).filter(|k| *k != "page").collect();
    keys.push("page");
    keys.sort_unstable();
    keys.dedup();
    let mut out = String::from(path);
    out.push('?');
    for (i, key) in keys.iter().enumerate() {
        let page_text = page.to_string();
        let values: Vec<&str> = if *key == "page" {
            vec![page_text.as_str()]
        } else {
            query.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
        };
        for (j, value) in values.iter().enumerate() {
            if i > 0 || j > 0 {
                out.push('&');
            }
            go_query_escape(&mut out, key);
            out.push('=');
            go_query_escape(&mut out, value);
        }
    }
    out
}

/// Go's `url.QueryEscape`.
pub(super) fn go_query_escape(out: &mut String, text: &str) {
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        let page = Page::from_params(None, None).unwrap();
        assert_eq!(page, Page { page: 1, per_page: 50 });
        assert_eq!(page.offset(), 0);
        let page = Page::from_params(Some("3"), Some("10")).unwrap();
        assert_eq!(page.offset(), 20);
        assert_eq!(Page::from_params(Some("0"), Some("0")).unwrap(), Page { page: 0, per_page: 20 });
        assert_eq!(Page::from_params(Some("0"), None).unwrap().offset(), 0);
        assert_eq!(Page::from_params(None, Some("100000")).unwrap().per_page, MAX_PER_PAGE);
        assert_eq!(Page::from_params(Some(&u64::MAX.to_string()), None).unwrap().offset(), i64::MAX as u64);
        assert_eq!(
            Page::from_params(Some("-1"), None).unwrap_err().message,
            "Bad Pagination Parameters: strconv.ParseUint: parsing \"-1\": invalid syntax"
        );
        assert_eq!(
            Page::from_params(None, Some("99999999999999999999")).unwrap_err().message,
            "Bad Pagination Parameters: strconv.ParseUint: parsing \"99999999999999999999\": value out of range"
        );
    }

    #[test]
    fn links() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        // auth-js sends both parameters, empty when not chosen.
        let query = q(&[("page", ""), ("per_page", "")]);
        let page = Page::from_params(Some(""), Some("")).unwrap();
        assert_eq!(page.link("/admin/users", &query, 0), "</admin/users?page=0&per_page=>; rel=\"last\"");
        assert_eq!(page.link("/admin/users", &query, 50), "</admin/users?page=1&per_page=>; rel=\"last\"");
        assert_eq!(
            page.link("/admin/users", &query, 51),
            "</admin/users?page=2&per_page=>; rel=\"next\", </admin/users?page=2&per_page=>; rel=\"last\""
        );
        let query = q(&[("per_page", "2"), ("filter", "a b"), ("page", "2")]);
        let page = Page::from_params(Some("2"), Some("2")).unwrap();
        assert_eq!(
            page.link("/admin/users", &query, 7),
            "</admin/users?filter=a+b&page=3&per_page=2>; rel=\"next\", </admin/users?filter=a+b&page=4&per_page=2>; rel=\"last\""
        );
        assert_eq!(page_url("/admin/users", &[], 1), "/admin/users?page=1");
    }

    #[test]
    fn sorts() {
        let q = |v: &str| vec![("sort".to_owned(), v.to_owned())];
        assert!(!sort_ascending(&[]).unwrap());
        assert!(sort_ascending(&q("created_at asc")).unwrap());
        assert!(!sort_ascending(&q("created_at DESC")).unwrap());
        assert_eq!(sort_ascending(&q("email")).unwrap_err().message, "Bad Sort Parameters: bad field for sort 'email'");
        assert_eq!(
            sort_ascending(&q("created_at up")).unwrap_err().message,
            "Bad Sort Parameters: bad direction for sort 'up', only 'asc' and 'desc' allowed"
        );
    }
}
