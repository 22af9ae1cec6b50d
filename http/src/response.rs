//! Responses built by handlers and their serialisation on the wire.
//!
//! Owns: [`Response`], [`ResponseBody`] and how a response head is written. Invariants: the
//! server alone decides framing (`Content-Length` / `Transfer-Encoding` / `Connection`, `Date`,
//! `x-request-id`); handler-supplied copies of those fields are ignored. Header names must be
//! tokens and values must not contain CR, LF or NUL (no response splitting): an invalid field is
//! dropped with a warning rather than sent.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use bytes::{BufMut, Bytes, BytesMut};
use futures_core::Stream;

use crate::head::Request;
use crate::ws::{handshake, WebSocket, WsConfig};

/// A streamed response body: chunks of bytes, or an I/O error that aborts the response.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>>>>;

/// The body of a [`Response`].
pub enum ResponseBody {
    /// No body (`Content-Length: 0` where the status allows a body).
    Empty,
    /// A body of known bytes, sent with `Content-Length`.
    Full(Bytes),
    /// A streamed body of unknown length, sent with `Transfer-Encoding: chunked` (HTTP/1.1) or
    /// delimited by closing the connection (HTTP/1.0).
    Stream(BodyStream),
    /// A streamed body of a declared length, sent with `Content-Length`. If the stream yields a
    /// different number of bytes the connection is closed.
    SizedStream(u64, BodyStream),
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseBody::Empty => f.write_str("Empty"),
            ResponseBody::Full(b) => write!(f, "Full({} bytes)", b.len()),
            ResponseBody::Stream(_) => f.write_str("Stream"),
            ResponseBody::SizedStream(n, _) => write!(f, "SizedStream({n})"),
        }
    }
}

pub(crate) type UpgradeFn = Box<dyn FnOnce(WebSocket) -> Pin<Box<dyn Future<Output = ()>>>>;

/// A pending WebSocket upgrade carried by a `101` response.
pub(crate) struct Upgrade {
    pub accept: String,
    pub config: WsConfig,
    pub run: UpgradeFn,
}

/// An HTTP response.
pub struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(Cow<'static, str>, Bytes)>,
    pub(crate) body: ResponseBody,
    pub(crate) service: &'static str,
    pub(crate) close: bool,
    pub(crate) upgrade: Option<Upgrade>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.body)
            .field("service", &self.service)
            .finish()
    }
}

impl Response {
    /// A response with `status` and no body.
    pub fn new(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: ResponseBody::Empty, service: "-", close: false, upgrade: None }
    }

    /// A response with a fixed body.
    pub fn with_body(status: u16, body: impl Into<Bytes>) -> Response {
        let mut r = Response::new(status);
        r.body = ResponseBody::Full(body.into());
        r
    }

    /// A fixed body with `content-type: application/json`.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Response {
        Response::with_body(status, body).header("content-type", "application/json")
    }

    /// A fixed body with `content-type: text/plain; charset=utf-8`.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Response {
        Response::with_body(status, body).header("content-type", "text/plain; charset=utf-8")
    }

    /// `{"message":"<msg>"}` as JSON: the shape of this crate's protocol-level errors.
    pub fn error_json(status: u16, msg: &str) -> Response {
        let mut body = String::with_capacity(msg.len() + 16);
        body.push_str("{\"message\":\"");
        json_escape_into(&mut body, msg);
        body.push_str("\"}");
        Response::json(status, body)
    }

    /// A streamed body of unknown length (chunked).
    pub fn stream(status: u16, stream: impl Stream<Item = Result<Bytes, std::io::Error>> + 'static) -> Response {
        let mut r = Response::new(status);
        r.body = ResponseBody::Stream(Box::pin(stream));
        r
    }

    /// A streamed body of known length.
    pub fn sized_stream(
        status: u16,
        len: u64,
        stream: impl Stream<Item = Result<Bytes, std::io::Error>> + 'static,
    ) -> Response {
        let mut r = Response::new(status);
        r.body = ResponseBody::SizedStream(len, Box::pin(stream));
        r
    }

    /// Answers a WebSocket upgrade request. If the handshake is valid the server writes
    /// `101 Switching Protocols` and runs `f` with the [`WebSocket`]; otherwise this returns the
    /// refusal: `400` with a JSON message, or `426` with `Sec-WebSocket-Version: 13`.
    pub fn websocket<F, Fut>(req: &Request, config: WsConfig, f: F) -> Response
    where
        F: FnOnce(WebSocket) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        match handshake::validate(req) {
            Ok(accept) => {
                let mut r = Response::new(101);
                r.upgrade = Some(Upgrade { accept, config, run: Box::new(move |ws| Box::pin(f(ws))) });
                r
            }
            Err(refusal) => *refusal,
        }
    }

    /// Adds a header field. Invalid names/values are dropped (logged), never sent.
    pub fn header(mut self, name: impl Into<Cow<'static, str>>, value: impl Into<Bytes>) -> Response {
        self.set_header(name, value);
        self
    }

    /// Adds a header field in place. Invalid names/values are dropped (logged), never sent.
    pub fn set_header(&mut self, name: impl Into<Cow<'static, str>>, value: impl Into<Bytes>) {
        let name = name.into();
        let value = value.into();
        if !is_token(name.as_bytes()) || value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            tracing::warn!(header = %name.escape_debug(), "dropping invalid response header");
            return;
        }
        self.headers.push((name, value));
    }

    /// Removes every header field named `name` (ASCII case-insensitive).
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Replaces the status code.
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// Tags the response with the service that produced it (for the access log).
    pub fn service(mut self, service: &'static str) -> Response {
        self.service = service;
        self
    }

    /// Closes the connection after this response.
    pub fn close(mut self) -> Response {
        self.close = true;
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The handler-set header fields.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// The first value of a handler-set header field.
    pub fn header_value(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
    }

    /// The body.
    pub fn body(&self) -> &ResponseBody {
        &self.body
    }

    /// Takes the body out (leaving `Empty`).
    pub fn take_body(&mut self) -> ResponseBody {
        std::mem::replace(&mut self.body, ResponseBody::Empty)
    }

    /// The service tag.
    pub fn service_tag(&self) -> &'static str {
        self.service
    }
}

impl From<&crate::error::BodyError> for Response {
    fn from(e: &crate::error::BodyError) -> Response {
        let r = Response::error_json(e.status(), &e.to_string());
        match e.retry_after_secs() {
            Some(secs) => r.header("retry-after", secs.to_string()),
            None => r,
        }
    }
}

/// How the body goes on the wire (decided by the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// No framing header at all (1xx, 204, 101).
    None,
    Length(u64),
    Chunked,
    /// Body delimited by closing the connection (HTTP/1.0 stream).
    UntilClose,
}

fn is_token(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(|&c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

const RESERVED: [&str; 6] = ["content-length", "transfer-encoding", "connection", "date", "x-request-id", "keep-alive"];

/// Writes the status line and header block of `resp` into `out`.
pub(crate) fn write_head(
    out: &mut BytesMut,
    resp: &Response,
    wire: Wire,
    keep_alive: bool,
    http10: bool,
    request_id: &str,
    date: &[u8],
) {
    out.put_slice(if http10 && resp.status != 101 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    let mut code = itoa_buf();
    out.put_slice(fmt_u64(&mut code, u64::from(resp.status)));
    out.put_u8(b' ');
    out.put_slice(reason(resp.status).as_bytes());
    out.put_slice(b"\r\n");
    for (n, v) in &resp.headers {
        if RESERVED.iter().any(|r| n.eq_ignore_ascii_case(r)) {
            continue;
        }
        out.put_slice(n.as_bytes());
        out.put_slice(b": ");
        out.put_slice(v);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"date: ");
    out.put_slice(date);
    out.put_slice(b"\r\nx-request-id: ");
    out.put_slice(request_id.as_bytes());
    out.put_slice(b"\r\n");
    match wire {
        Wire::None | Wire::UntilClose => {}
        Wire::Length(n) => {
            out.put_slice(b"content-length: ");
            out.put_slice(fmt_u64(&mut code, n));
            out.put_slice(b"\r\n");
        }
        Wire::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    if resp.status == 101 {
        out.put_slice(b"connection: upgrade\r\n");
    } else {
        if !keep_alive {
            out.put_slice(b"connection: close\r\n");
        } else if http10 {
            out.put_slice(b"connection: keep-alive\r\n");
        }
    }
    out.put_slice(b"\r\n");
}

pub(crate) fn itoa_buf() -> [u8; 20] {
    [0u8; 20]
}

/// Formats `n` in decimal into `buf`, returning the digits.
pub(crate) fn fmt_u64(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

fn json_escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

/// The reason phrase sent with a status code.
pub fn reason(status: u16) -> &'static str {
    // The classic (RFC 2616) phrases, as Haskell's http-types — and therefore PostgREST — sends
    // them: clients such as postgrest-js surface the phrase as `statusText` and test suites
    // snapshot it, so e.g. 416 is "Requested Range Not Satisfiable", not RFC 9110's wording.
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Requested Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        422 => "Unprocessable Entity",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        // TUS's checksum extension (Storage's resumable uploads).
        460 => "Checksum Mismatch",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        511 => "Network Authentication Required",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::reason;

    #[test]
    fn classic_reason_phrases_as_postgrest_sends_them() {
        assert_eq!(reason(300), "Multiple Choices");
        assert_eq!(reason(402), "Payment Required");
        assert_eq!(reason(413), "Request Entity Too Large");
        assert_eq!(reason(416), "Requested Range Not Satisfiable");
        assert_eq!(reason(422), "Unprocessable Entity");
        assert_eq!(reason(299), "Unknown");
    }
}
