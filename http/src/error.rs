//! Typed errors of the HTTP layer.
//!
//! Owns: [`HeadError`] (a request head the server refuses, each mapped to one status code),
//! [`ChunkError`] (a malformed chunked body) and [`BodyError`] (what a handler sees when reading a
//! body fails). Invariant: every protocol-level refusal has exactly one status and a short,
//! client-safe reason; nothing here carries peer bytes into log lines unescaped.

use std::sync::Arc;

/// Why a request head was refused. [`HeadError::status`] gives the response status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The request line or a header field is not valid HTTP/1.x.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The client spoke HTTP/2 (prior knowledge) to an HTTP/1.1 server.
    #[error("HTTP/2 is not supported on this port")]
    Http2Preface,
    /// The head is larger than `Limits::max_header_bytes`.
    #[error("request header fields too large")]
    HeadTooLarge,
    /// More header fields than `Limits::max_headers`.
    #[error("too many header fields")]
    TooManyHeaders,
    /// The request target is neither origin-form (`/path?query`), absolute-form with an `http`
    /// or `https` scheme and a host (RFC 9112 §3.2.2), nor `*` on an `OPTIONS` request.
    #[error("invalid request target: {0}")]
    BadTarget(&'static str),
    /// The request target is longer than `Limits::max_uri_len`.
    #[error("request URI too long")]
    UriTooLong,
    /// `Content-Length` is not a valid length, or several disagree.
    #[error("invalid content-length")]
    InvalidContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` were sent.
    #[error("both content-length and transfer-encoding present")]
    LengthAndChunked,
    /// A transfer coding other than `chunked` was sent.
    #[error("unsupported transfer-encoding")]
    UnsupportedTransferEncoding,
    /// `Content-Length` above `Limits::max_body_bytes`.
    #[error("request body too large")]
    BodyTooLarge,
}

impl HeadError {
    /// The status code this refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed(_)
            | HeadError::BadTarget(_)
            | HeadError::Http2Preface
            | HeadError::InvalidContentLength
            | HeadError::LengthAndChunked => 400,
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => 431,
            HeadError::UriTooLong => 414,
            HeadError::UnsupportedTransferEncoding => 501,
            HeadError::BodyTooLarge => 413,
        }
    }
}

/// A malformed or over-limit chunked request body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The chunk-size line is not `hex [ext] CRLF`.
    #[error("invalid chunk size line")]
    InvalidSize,
    /// The chunk-size line is longer than `Limits::max_chunk_line_bytes`.
    #[error("chunk size line too long")]
    LineTooLong,
    /// Chunk data is not followed by CRLF.
    #[error("missing CRLF after chunk data")]
    MissingCrlf,
    /// Trailer section malformed or larger than `Limits::max_trailer_bytes`.
    #[error("invalid or oversized trailers")]
    Trailers,
}

/// Reading a request body failed. Cheap to clone (the error sticks to the body).
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    /// The body is larger than the limit in force (`max_body_bytes` or the `collect` limit).
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// The limit that was crossed.
        limit: u64,
    },
    /// No body bytes arrived within `Limits::body_timeout`, or the body was not complete
    /// within `Limits::body_timeout_total`.
    #[error("timed out reading the request body")]
    Timeout,
    /// Collecting the body would take this shard's body memory past
    /// `Limits::shard_body_budget_bytes` (held by other requests now): retry later.
    #[error("server busy: request body memory in use, retry later")]
    Busy,
    /// The client closed the connection before the body was complete.
    #[error("connection closed before the body was complete")]
    UnexpectedEof,
    /// The chunked encoding is invalid.
    #[error("invalid chunked body: {0}")]
    Chunked(#[from] ChunkError),
    /// A socket error.
    #[error("i/o error reading the body: {0}")]
    Io(Arc<std::io::Error>),
    /// The body belongs to a request whose exchange is over (kept past its response).
    #[error("body is no longer attached to its request")]
    Detached,
}

impl BodyError {
    /// The status a handler should answer with when it cannot read the body.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::TooLarge { .. } => 413,
            BodyError::Timeout => 408,
            BodyError::Busy => 503,
            BodyError::UnexpectedEof | BodyError::Chunked(_) | BodyError::Io(_) => 400,
            BodyError::Detached => 500,
        }
    }

    /// The `Retry-After` (seconds) its response carries: only [`BodyError::Busy`], whose budget
    /// frees as soon as other bodies complete, is worth retrying.
    pub fn retry_after_secs(&self) -> Option<u64> {
        matches!(self, BodyError::Busy).then_some(1)
    }
}
