//! Where a flow may send the browser: GoTrue's `IsRedirectURLValid` and `GetReferrer`
//! (`internal/utilities/request.go`), with the allow list matched as GoTrue's gobwas globs with
//! `.` and `/` as separators.
//!
//! Owns the redirect allow-list rule and the glob matcher. Invariants: a URL is accepted only
//! when it is the site (same scheme and host, and same port unless the host is a loopback name),
//! or a loopback IP, or it matches an entry of `additional_redirect_urls` (without its
//! fragment) — decimal-IP hosts and hosts with unusual characters never are; a refused
//! `redirect_to` falls back to the `Referer` header under the same rule, then to `site_url`.
//!
//! Departure: Rust's `url` drops a port equal to the scheme's default (`http://a:80` is
//! `http://a`), Go's keeps it, so such a pair counts as the same site here.

use crate::call::Call;
use crate::settings::Auth;

/// Longest redirect URL considered (longer ones are refused).
const MAX_URL: usize = 2048;

/// The redirect target of a request (GoTrue's `GetReferrer`): `redirect_to` from the header of
/// that name or the query, else `Referer`, each only when allowed; else `site_url`.
pub fn referrer(settings: &Auth, call: &Call<'_>) -> String {
    let requested = call
        .req
        .header_str("redirect_to")
        .filter(|v| !v.is_empty())
        .or_else(|| call.query("redirect_to"))
        .unwrap_or("");
    if is_valid(settings, requested) {
        return requested.to_owned();
    }
    match call.req.header_str("referer") {
        Some(referer) if is_valid(settings, referer) => referer.to_owned(),
        _ => settings.site_url.clone(),
    }
}

/// GoTrue's `IsRedirectURLValid`.
pub fn is_valid(settings: &Auth, redirect: &str) -> bool {
    is_valid_for(&settings.site_url, &settings.additional_redirect_urls, redirect)
}

fn is_valid_for(site_url: &str, allow_list: &[String], redirect: &str) -> bool {
    if redirect.is_empty() || redirect.len() > MAX_URL {
        return false;
    }
    let Ok(base) = url::Url::parse(site_url) else { return false };
    let (scheme, host, port) = match url::Url::parse(redirect) {
        // The host as written: WHATWG parsing rewrites some (`http://2130706433/` is 127.0.0.1), Go does not.
        Ok(target) => (target.scheme().to_owned(), raw_host(redirect).to_ascii_lowercase(), target.port()),
        // Go parses a relative reference too (empty scheme and host); only the globs can allow it.
        Err(url::ParseError::RelativeUrlWithoutBase) => (String::new(), String::new(), None),
        Err(_) => return false,
    };
    if !host.is_empty()
        && host == host_name(&base)
        && scheme == base.scheme()
        && (port == base.port() || is_localhost(&host))
    {
        return true;
    }
    let is_http = scheme == "http" || scheme == "https";
    if !host.is_empty() && host.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    if is_http && !regular_hostname(&host) {
        return false;
    }
    let without_fragment = redirect.split_once('#').map_or(redirect, |(before, _)| before);
    allow_list.iter().any(|pattern| glob_match(pattern.as_bytes(), without_fragment.as_bytes()))
}

/// The host as Go's `URL.Hostname()` gives it: lower-case, IPv6 without brackets.
fn host_name(url: &url::Url) -> String {
    url.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase()
}

/// The host of `url` as written (between `scheme://` and the path, without user info or port).
fn raw_host(url: &str) -> &str {
    let Some((_, rest)) = url.split_once("://") else { return "" };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        return host_port.split_once(']').map_or(host_port, |(h, _)| h).trim_start_matches('[');
    }
    host_port.split_once(':').map_or(host_port, |(h, _)| h)
}

/// GoTrue's `isLocalhost`.
fn is_localhost(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "0.0.0.0" | "::") || host.ends_with(".localhost")
}

/// `^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$`
fn regular_hostname(host: &str) -> bool {
    let b = host.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'-')
}

const SEPARATORS: &[u8] = b"./";

/// gobwas/glob with separators `.` and `/`: `*` any run of non-separators, `**` any run, `?` one
/// non-separator, `[abc]`/`[a-z]`/`[!…]` one character of a class, `{a,b}` alternatives, `\`
/// escapes. The whole text must match. Bounded by the inputs' lengths (patterns come from
/// settings, texts are at most [`MAX_URL`] bytes), backtracking on `*` only.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    glob_at(pattern, text, 0)
}

fn glob_at(pattern: &[u8], text: &[u8], depth: usize) -> bool {
    if depth > 64 {
        return false;
    }
    let Some((&first, rest)) = pattern.split_first() else { return text.is_empty() };
    match first {
        b'*' => {
            let (any, rest) = match rest.split_first() {
                Some((b'*', after)) => (true, after),
                _ => (false, rest),
            };
            for split in 0..=text.len() {
                if split > 0 && !any && SEPARATORS.contains(&text[split - 1]) {
                    return false;
                }
                if glob_at(rest, &text[split..], depth + 1) {
                    return true;
                }
            }
            false
        }
        b'?' => match text.split_first() {
            Some((c, after)) if !SEPARATORS.contains(c) => glob_at(rest, after, depth + 1),
            _ => false,
        },
        b'[' => {
            let Some(close) = rest.iter().position(|&c| c == b']') else {
                return literal(b'[', rest, text, depth);
            };
            let (class, after) = (&rest[..close], &rest[close + 1..]);
            let (negated, class) = match class.split_first() {
                Some((b'!', tail)) => (true, tail),
                _ => (false, class),
            };
            let Some((&c, text_after)) = text.split_first() else { return false };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= (class[i]..=class[i + 2]).contains(&c);
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negated && glob_at(after, text_after, depth + 1)
        }
        b'{' => {
            let Some(close) = matching_brace(rest) else { return literal(b'{', rest, text, depth) };
            let (inner, after) = (&rest[..close], &rest[close + 1..]);
            split_alternatives(inner).into_iter().any(|alternative| {
                let mut joined = Vec::with_capacity(alternative.len() + after.len());
                joined.extend_from_slice(alternative);
                joined.extend_from_slice(after);
                glob_at(&joined, text, depth + 1)
            })
        }
        b'\\' => match rest.split_first() {
            Some((&escaped, after)) => literal(escaped, after, text, depth),
            None => literal(b'\\', rest, text, depth),
        },
        c => literal(c, rest, text, depth),
    }
}

fn literal(c: u8, rest: &[u8], text: &[u8], depth: usize) -> bool {
    matches!(text.split_first(), Some((&t, after)) if t == c && glob_at(rest, after, depth + 1))
}

fn matching_brace(text: &[u8]) -> Option<usize> {
    let mut level = 0usize;
    for (i, &c) in text.iter().enumerate() {
        match c {
            b'{' => level += 1,
            b'}' if level == 0 => return Some(i),
            b'}' => level -= 1,
            _ => {}
        }
    }
    None
}

fn split_alternatives(inner: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let (mut level, mut start) = (0usize, 0usize);
    for (i, &c) in inner.iter().enumerate() {
        match c {
            b'{' => level += 1,
            b'}' => level = level.saturating_sub(1),
            b',' if level == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
}

/// `redirect_to` for a link in a mail, as GoTrue's `encodeRedirectURL`: escaped only when it
/// holds `&`, `=` or `#` (otherwise taken as already encoded).
pub fn encode_for_link(redirect: &str) -> String {
    if redirect.contains(['&', '=', '#']) {
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect()
    } else {
        redirect.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(redirect: &str) -> bool {
        let allow = [
            "https://127.0.0.1:3000".to_owned(),
            "http://localhost:5173".to_owned(),
            "https://*.example.com/**".to_owned(),
            "myapp://callback".to_owned(),
            "https://app.test/{a,b}/?".to_owned(),
        ];
        is_valid_for("http://127.0.0.1:3000", &allow, redirect)
    }

    #[test]
    fn the_site_and_loopback() {
        assert!(ok("http://127.0.0.1:3000/welcome?x=1"));
        assert!(ok("http://127.0.0.1:9999/other-port-on-loopback"));
        assert!(!ok("http://localhost:1234/"), "another host than the site's, not in the list");
        assert!(
            is_valid_for("http://localhost:3000", &[], "http://localhost:1234/cb"),
            "the site's loopback name, any port"
        );
        assert!(!is_valid_for("https://app.test", &[], "https://app.test:8443/"), "the site's host, another port");
        assert!(ok("http://[::1]:80/"));
        assert!(!ok(""));
        assert!(!ok("http://2130706433/"), "decimal IP");
        assert!(!ok("http://10.0.0.1/"), "non-loopback IP");
    }

    #[test]
    fn allow_list_globs() {
        assert!(ok("https://127.0.0.1:3000"));
        assert!(ok("http://localhost:5173"));
        assert!(ok("https://a.example.com/deep/path"));
        assert!(!ok("https://a.b.example.com/x"), "* does not cross a dot");
        assert!(!ok("https://evil.com/?https://a.example.com/x"));
        assert!(ok("myapp://callback"));
        assert!(ok("myapp://callback#fragment-ignored"));
        assert!(ok("https://app.test/a/1") && ok("https://app.test/b/2"));
        assert!(!ok("https://app.test/c/1") && !ok("https://app.test/a/12"));
        assert!(!ok("https://evil.com/"));
        assert!(!ok("https://ex_ample.com/"), "unusual host characters");
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"a*c", b"abbc"));
        assert!(!glob_match(b"a*c", b"ab/c"));
        assert!(glob_match(b"a**c", b"ab/.c"));
        assert!(glob_match(b"[a-c]x", b"bx") && !glob_match(b"[!a-c]x", b"bx"));
        assert!(glob_match(b"\\*", b"*") && !glob_match(b"\\*", b"a"));
        assert!(glob_match(b"{x,y{1,2}}", b"y2"));
    }

    #[test]
    fn link_encoding() {
        assert_eq!(encode_for_link("http://a/b"), "http://a/b");
        assert_eq!(encode_for_link("http://a/?x=1&y=2"), "http%3A%2F%2Fa%2F%3Fx%3D1%26y%3D2");
    }
}
