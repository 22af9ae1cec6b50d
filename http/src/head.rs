//! Request-head parsing (sans I/O) and the [`Request`] type handed to handlers.
//!
//! Owns: turning the bytes of a request head into a [`ParsedHead`] (offsets into the buffer, so
//! no header is copied) and deciding the body framing. Invariants: the head is never larger than
//! `max_header_bytes`, has at most `max_headers` fields and a target of at most `max_uri_len`
//! bytes; a request has exactly one framing (none, `Content-Length`, or `chunked` as the only
//! transfer coding) or it is refused; HTTP/1.1 requests carry exactly one `Host`; the target a
//! handler sees is always origin-form (`/path?query`) or `*` (only on `OPTIONS`): an absolute-form
//! target (`http://host/path`, RFC 9112 §3.2.2, which a server must accept) is reduced to its
//! path and query, and its authority replaces the `Host` header's value, as §3.2.2 requires.

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;

use bytes::Bytes;

use crate::error::HeadError;
use crate::limits::{Limits, MAX_HEADERS_CAP};

/// HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes follow the head (0: no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The limits the pure head parser needs (a subset of [`Limits`]).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// See [`Limits::max_header_bytes`].
    pub max_header_bytes: usize,
    /// See [`Limits::max_headers`].
    pub max_headers: usize,
    /// See [`Limits::max_uri_len`].
    pub max_uri_len: usize,
    /// See [`Limits::max_body_bytes`].
    pub max_body_bytes: u64,
}

impl From<&Limits> for HeadLimits {
    fn from(l: &Limits) -> Self {
        HeadLimits {
            max_header_bytes: l.max_header_bytes,
            max_headers: l.max_headers.min(MAX_HEADERS_CAP),
            max_uri_len: l.max_uri_len,
            max_body_bytes: l.max_body_bytes,
        }
    }
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits::from(&Limits::default())
    }
}

/// A parsed request head: byte ranges into the buffer it was parsed from.
#[derive(Debug, Clone)]
pub struct ParsedHead {
    /// Length of the head including the final blank line.
    pub head_len: usize,
    /// Range of the method token.
    pub method: Range<usize>,
    /// Range of the request target in origin-form: all of it for origin-form and `*`; the path
    /// and query of an absolute-form target (empty, or starting with `?`, when it has no path:
    /// the path is then `/`).
    pub target: Range<usize>,
    /// Range of the authority (`host[:port]`) of an absolute-form target.
    pub authority: Option<Range<usize>>,
    /// Protocol version.
    pub version: Version,
    /// (name, value) ranges of every header field, in order.
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    /// Body framing.
    pub framing: Framing,
    /// Whether the connection may stay open after this exchange (as the client asked).
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent (HTTP/1.1 only).
    pub expect_continue: bool,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

fn range_of(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (and the limits still allow them),
/// `Ok(Some(head))` when a complete, acceptable head was found, or the refusal.
pub fn parse_request_head(buf: &[u8], limits: &HeadLimits) -> Result<Option<ParsedHead>, HeadError> {
    if starts_like_h2_preface(buf)? {
        return Ok(None);
    }
    let max_headers = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut storage: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS_CAP] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    let parsed = req.parse_with_uninit_headers(buf, &mut storage[..max_headers]);
    let Some(head_len) = head_length(parsed, buf, limits)? else {
        return Ok(None);
    };
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    if path.len() > limits.max_uri_len {
        return Err(HeadError::UriTooLong);
    }
    if head_len > limits.max_header_bytes {
        return Err(HeadError::HeadTooLarge);
    }
    if path.is_empty() {
        return Err(HeadError::Malformed("empty request target"));
    }
    let (origin, authority) = split_target(method, path.as_bytes())?;
    let version = if minor == 1 { Version::Http11 } else { Version::Http10 };
    let mut fields = FieldFacts::default();
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        headers.push((range_of(buf, h.name.as_bytes()), range_of(buf, h.value)));
        fields.note(h.name.as_bytes(), h.value, version)?;
    }
    if version == Version::Http11 && fields.hosts != 1 {
        return Err(HeadError::Malformed("HTTP/1.1 requires exactly one Host header"));
    }
    let framing = fields.framing(version, limits)?;
    Ok(Some(ParsedHead {
        head_len,
        method: range_of(buf, method.as_bytes()),
        target: range_of(buf, origin),
        authority: authority.map(|a| range_of(buf, a)),
        version,
        headers,
        framing,
        keep_alive: fields.keep_alive(version),
        expect_continue: fields.expect_continue,
    }))
}

/// Whether `buf` is a prefix of the HTTP/2 connection preface (more bytes will tell); the whole
/// preface is refused.
fn starts_like_h2_preface(buf: &[u8]) -> Result<bool, HeadError> {
    let n = buf.len().min(H2_PREFACE.len());
    if n == 0 || buf[..n] != H2_PREFACE[..n] {
        return Ok(false);
    }
    if n == H2_PREFACE.len() {
        return Err(HeadError::Http2Preface);
    }
    Ok(true)
}

/// The head's length once httparse found all of it; `None` while more bytes may still make an
/// acceptable head.
fn head_length(
    parsed: Result<httparse::Status<usize>, httparse::Error>,
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<usize>, HeadError> {
    // A request line still incomplete and already longer than any acceptable one (only looked
    // for when the head is not complete: a complete one is checked against the limit as parsed).
    let uri_too_long = || buf.len() > limits.max_uri_len + 32 && !buf.contains(&b'\n');
    match parsed {
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if uri_too_long() => Err(HeadError::UriTooLong),
        Ok(httparse::Status::Partial) if buf.len() > limits.max_header_bytes => Err(HeadError::HeadTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => Err(HeadError::Malformed("unsupported HTTP version")),
        // A token error inside an over-long target is still "URI too long".
        Err(httparse::Error::Token) if uri_too_long() => Err(HeadError::UriTooLong),
        Err(httparse::Error::Token) => Err(HeadError::Malformed("invalid token")),
        Err(httparse::Error::HeaderName) => Err(HeadError::Malformed("invalid header name")),
        Err(httparse::Error::HeaderValue) => Err(HeadError::Malformed("invalid header value")),
        Err(httparse::Error::NewLine) => Err(HeadError::Malformed("invalid line ending")),
        Err(httparse::Error::Status) => Err(HeadError::Malformed("invalid request line")),
    }
}

/// What the header fields say about framing and the connection, gathered field by field.
#[derive(Default)]
struct FieldFacts {
    content_length: Option<u64>,
    /// A `Transfer-Encoding` field was seen (its only accepted coding is one `chunked`).
    te_seen: bool,
    te_chunked: bool,
    close: bool,
    keep_alive_token: bool,
    expect_continue: bool,
    hosts: usize,
}

impl FieldFacts {
    /// Takes one header field into account; refuses a bad length or transfer coding.
    fn note(&mut self, name: &[u8], value: &[u8], version: Version) -> Result<(), HeadError> {
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(value)?;
            match self.content_length {
                Some(prev) if prev != n => return Err(HeadError::InvalidContentLength),
                _ => self.content_length = Some(n),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.te_seen = true;
            self.note_transfer_codings(value)?;
        } else if name.eq_ignore_ascii_case(b"connection") {
            self.close |= has_token(value, "close");
            self.keep_alive_token |= has_token(value, "keep-alive");
        } else if name.eq_ignore_ascii_case(b"expect") {
            if value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                self.expect_continue = version == Version::Http11;
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            self.hosts += 1;
        }
        Ok(())
    }

    fn note_transfer_codings(&mut self, value: &[u8]) -> Result<(), HeadError> {
        for coding in value.split(|&b| b == b',') {
            let c = coding.trim_ascii();
            if c.is_empty() {
                return Err(HeadError::Malformed("empty transfer coding"));
            }
            if !c.eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::UnsupportedTransferEncoding);
            }
            if self.te_chunked {
                return Err(HeadError::Malformed("chunked applied twice"));
            }
            self.te_chunked = true;
        }
        Ok(())
    }

    /// How the body is delimited (RFC 9112 §6.3), within `max_body_bytes` when it has a length.
    fn framing(&self, version: Version, limits: &HeadLimits) -> Result<Framing, HeadError> {
        let framing = match (self.te_seen, self.content_length) {
            (true, Some(_)) => return Err(HeadError::LengthAndChunked),
            (true, None) if version == Version::Http10 => {
                return Err(HeadError::Malformed("transfer-encoding in an HTTP/1.0 request"))
            }
            (true, None) => Framing::Chunked,
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::Length(0),
        };
        match framing {
            Framing::Length(n) if n > limits.max_body_bytes => Err(HeadError::BodyTooLarge),
            framing => Ok(framing),
        }
    }

    /// Whether the client lets the connection stay open after this exchange.
    fn keep_alive(&self, version: Version) -> bool {
        match version {
            Version::Http11 => !self.close,
            Version::Http10 => self.keep_alive_token && !self.close,
        }
    }
}

/// A `Content-Length` value: ASCII digits only, at most 19 of them (fits a `u64`).
fn parse_content_length(value: &[u8]) -> Result<u64, HeadError> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::InvalidContentLength);
    }
    Ok(v.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')))
}

/// Splits a request target (RFC 9112 §3.2) into its origin-form part and, for absolute-form,
/// its authority. Refuses asterisk-form except on `OPTIONS`, authority-form (only `CONNECT`
/// uses it, and this server is no proxy) and absolute-form with a scheme other than `http` or
/// `https`, with userinfo (RFC 9110 §4.2.4), with an empty or invalid host (§4.2.1), or with a
/// fragment.
fn split_target<'a>(method: &str, target: &'a [u8]) -> Result<(&'a [u8], Option<&'a [u8]>), HeadError> {
    if target.first() == Some(&b'/') {
        return Ok((target, None));
    }
    if target == b"*" {
        if method == "OPTIONS" {
            return Ok((target, None));
        }
        return Err(HeadError::BadTarget("asterisk-form is only for OPTIONS"));
    }
    if method == "CONNECT" {
        return Err(HeadError::BadTarget("CONNECT is not supported"));
    }
    let Some(colon) = target.iter().position(|&b| b == b':') else {
        return Err(HeadError::BadTarget("not origin-form or absolute-form"));
    };
    let scheme = &target[..colon];
    if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
        return Err(HeadError::BadTarget("absolute-form needs an http or https scheme"));
    }
    let Some(rest) = target[colon + 1..].strip_prefix(b"//") else {
        return Err(HeadError::BadTarget("absolute-form without an authority"));
    };
    let end = rest.iter().position(|&b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(rest.len());
    let (authority, origin) = rest.split_at(end);
    if origin.contains(&b'#') {
        return Err(HeadError::BadTarget("fragment in request target"));
    }
    if authority.contains(&b'@') {
        return Err(HeadError::BadTarget("userinfo in request target"));
    }
    if !valid_authority(authority) {
        return Err(HeadError::BadTarget("invalid host in request target"));
    }
    Ok((origin, Some(authority)))
}

/// `host [ ":" port ]` with a non-empty host (RFC 9110 §4.2.1: an `http` URI with an empty host
/// is invalid): an IP-literal in brackets, or a reg-name / IPv4 address of unreserved,
/// percent-encoded and sub-delimiter characters; the port is digits.
fn valid_authority(a: &[u8]) -> bool {
    let (host, port) = if a.first() == Some(&b'[') {
        let Some(close) = a.iter().position(|&b| b == b']') else { return false };
        let literal = &a[1..close];
        if literal.is_empty() || !literal.iter().all(|&b| b.is_ascii_hexdigit() || b":.vV".contains(&b)) {
            return false;
        }
        match &a[close + 1..] {
            [] => (&a[..=close], None),
            [b':', port @ ..] => (&a[..=close], Some(port)),
            _ => return false,
        }
    } else {
        match a.iter().rposition(|&b| b == b':') {
            Some(i) => (&a[..i], Some(&a[i + 1..])),
            None => (a, None),
        }
    };
    let host_ok = host.first() == Some(&b'[')
        || (!host.is_empty() && host.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b)));
    host_ok && port.is_none_or(|p| p.iter().all(u8::is_ascii_digit))
}

/// Header fields of a request: zero-copy slices of the request head.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    entries: Vec<(Bytes, Bytes)>,
}

impl Headers {
    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v.as_ref())
    }

    /// The first value of `name` as text, if it is valid UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v.as_ref())
    }

    /// All fields as (name, value) in the order received.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(n, v)| (std::str::from_utf8(n).unwrap_or(""), v.as_ref()))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a field (for building requests in tests of handlers).
    pub fn push(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.entries.push((name.into(), value.into()));
    }
}

/// An HTTP request head as the handler sees it. The body is passed separately as [`crate::Body`].
#[derive(Debug, Clone)]
pub struct Request {
    method: Bytes,
    target: Bytes,
    version: Version,
    headers: Headers,
    peer: SocketAddr,
    request_id: String,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
    pub(crate) expect_continue: bool,
}

impl Request {
    /// Builds a request from a frozen head buffer and its parse result.
    pub(crate) fn from_parsed(head: Bytes, p: &ParsedHead, peer: SocketAddr) -> Request {
        let mut headers = Headers {
            entries: p.headers.iter().map(|(n, v)| (head.slice(n.clone()), head.slice(v.clone()))).collect(),
        };
        let mut target = head.slice(p.target.clone());
        if let Some(authority) = &p.authority {
            // RFC 9112 §3.2.2: the target's authority replaces any Host header's value.
            let authority = head.slice(authority.clone());
            let mut had_host = false;
            for (n, v) in headers.entries.iter_mut() {
                if n.eq_ignore_ascii_case(b"host") {
                    *v = authority.clone();
                    had_host = true;
                }
            }
            if !had_host {
                headers.entries.push((Bytes::from_static(b"host"), authority));
            }
            if target.first() != Some(&b'/') {
                // `http://host` or `http://host?q`: the path of an empty http(s) path is `/`.
                let mut t = Vec::with_capacity(target.len() + 1);
                t.push(b'/');
                t.extend_from_slice(&target);
                target = Bytes::from(t);
            }
        }
        let request_id = match headers.get("x-request-id") {
            Some(id) if is_sane_request_id(id) => String::from_utf8_lossy(id).into_owned(),
            _ => generate_request_id(),
        };
        Request {
            method: head.slice(p.method.clone()),
            target,
            version: p.version,
            headers,
            peer,
            request_id,
            framing: p.framing,
            keep_alive: p.keep_alive,
            expect_continue: p.expect_continue,
        }
    }

    /// Builds a request by hand (for unit tests of handlers and routers).
    pub fn new(method: &str, target: &str, headers: Headers, peer: SocketAddr) -> Request {
        Request {
            method: Bytes::copy_from_slice(method.as_bytes()),
            target: Bytes::copy_from_slice(target.as_bytes()),
            version: Version::Http11,
            headers,
            peer,
            request_id: generate_request_id(),
            framing: Framing::Length(0),
            keep_alive: true,
            expect_continue: false,
        }
    }

    /// The method, e.g. `"GET"`.
    pub fn method(&self) -> &str {
        std::str::from_utf8(&self.method).unwrap_or("")
    }

    /// The request target in origin-form (path and query), e.g. `"/rest/v1/todos?select=*"`. An
    /// absolute-form target (`http://host/rest/v1/todos?select=*`) is given in the same form (its
    /// authority is the `Host` header); an `OPTIONS *` request has `"*"`.
    pub fn uri(&self) -> &str {
        std::str::from_utf8(&self.target).unwrap_or("")
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        let uri = self.uri();
        uri.split_once('?').map_or(uri, |(p, _)| p)
    }

    /// The query string (without `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.uri().split_once('?').map(|(_, q)| q)
    }

    /// The query string's pairs, form-decoded (`+` is a space), in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// All header fields.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    /// The first value of a header as text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.get_str(name)
    }

    /// The peer's socket address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The correlation id: the client's `x-request-id` when sane, else a generated one.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Declared body length (`None` for chunked bodies).
    pub fn content_length(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::Chunked => None,
        }
    }

    /// True for `HEAD` requests.
    pub fn is_head(&self) -> bool {
        self.method.as_ref() == b"HEAD"
    }
}

/// A client-supplied request id is echoed when it is 1..=200 visible ASCII characters.
pub fn is_sane_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 200 && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A fresh random request id: 32 lowercase hex digits.
pub fn generate_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
