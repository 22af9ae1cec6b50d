//! Connection limits for the HTTP/1.1 server.
//!
//! Owns: the [`Limits`] struct, one value per connection-level bound (and the one shard-level
//! bound on collected bodies). Invariant: every buffer the server grows on behalf of a peer
//! (request head, chunk-size lines, trailers, drained and collected bodies) and every wait on a
//! peer (head, body, idle, write) is bounded by one of these fields.

use std::time::Duration;

/// Limits applied to every HTTP connection. `Limits::default()` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (request line + headers + blank line) in bytes. Default 16 KiB.
    /// Exceeding it answers `431 Request Header Fields Too Large` and closes.
    pub max_header_bytes: usize,
    /// Most header fields in one request. Default 100 (capped at 256). Exceeding it answers `431`.
    pub max_headers: usize,
    /// Longest request target (path + query) in bytes. Default 8 KiB. Exceeding it answers `414`.
    pub max_uri_len: usize,
    /// Largest request body the server accepts, in bytes. Default 50 MiB. A larger
    /// `Content-Length` answers `413` before the handler runs; a chunked body that grows past it
    /// makes [`crate::Body::chunk`] return [`crate::BodyError::TooLarge`]. Handlers can ask for
    /// less with [`crate::Body::collect`].
    pub max_body_bytes: u64,
    /// Most unread request-body bytes the server reads and discards after a response so the
    /// connection can be kept alive. Default 64 KiB; more than that closes the connection instead.
    pub max_drain_bytes: u64,
    /// The whole request head must arrive within this time of its first byte (slowloris guard).
    /// Default 10 s. Expiry answers `408` and closes.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests. Default 60 s. Expiry
    /// closes silently.
    pub idle_timeout: Duration,
    /// Longest wait for progress while reading a request body. Default 30 s. Expiry makes the
    /// body read fail with [`crate::BodyError::Timeout`] (the handler answers, normally `408`)
    /// and the connection closes after the response.
    pub body_timeout: Duration,
    /// Longest time a whole request body may take, counted from the handler's first request
    /// for body bytes (so work the handler does before reading is not charged to the client).
    /// Default 300 s (a 50 MiB body at 175 KB/s or more). Without it a client sending a byte
    /// just inside every `body_timeout` holds its connection and buffers indefinitely. Expiry
    /// is [`crate::BodyError::Timeout`] like `body_timeout` (`408`, connection closed); it also
    /// bounds draining an unread body after the response.
    pub body_timeout_total: Duration,
    /// Most bytes all bodies being collected by [`crate::Body::collect`] on one shard may hold
    /// together (buffer capacity, released when the collected `Bytes` is dropped). Default
    /// 256 MiB. Buffers grow with the bytes that actually arrived, never with the declared
    /// length, so a client declaring 50 MB and sending 2 bytes holds nothing here. A body whose
    /// growth would cross the budget fails with [`crate::BodyError::Busy`] (`503`, retry later);
    /// one that could not fit even alone (declared, or grown, past the whole budget) fails with
    /// [`crate::BodyError::TooLarge`] (`413`). Bodies read with [`crate::Body::chunk`] are
    /// streamed, not held, and are not charged.
    pub shard_body_budget_bytes: u64,
    /// Longest wait for progress while writing to the peer. Default 30 s. Expiry closes.
    pub write_timeout: Duration,
    /// Size of each read from the socket (and of pooled read buffers). Default 16 KiB.
    pub read_buffer_size: usize,
    /// Longest chunk-size line (size + extensions) in a chunked body. Default 1 KiB.
    pub max_chunk_line_bytes: usize,
    /// Most bytes of trailer fields after the last chunk. Default 8 KiB.
    pub max_trailer_bytes: usize,
    /// After a response with `Connection: close`, how long the server keeps reading (and
    /// discarding) what the client still sends so the response is not lost to a TCP reset.
    /// Default 2 s.
    pub linger_timeout: Duration,
    /// Most bytes discarded during that lingering close. Default 1 MiB.
    pub max_linger_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_uri_len: 8 * 1024,
            max_body_bytes: 50 * 1024 * 1024,
            max_drain_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            body_timeout_total: Duration::from_secs(300),
            shard_body_budget_bytes: 256 * 1024 * 1024,
            write_timeout: Duration::from_secs(30),
            read_buffer_size: 16 * 1024,
            max_chunk_line_bytes: 1024,
            max_trailer_bytes: 8 * 1024,
            linger_timeout: Duration::from_secs(2),
            max_linger_bytes: 1024 * 1024,
        }
    }
}

/// Hard cap on [`Limits::max_headers`]: the parser's header table lives on the stack.
pub const MAX_HEADERS_CAP: usize = 256;
