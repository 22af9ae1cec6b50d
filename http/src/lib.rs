//! `madbase-http`: an HTTP/1.1 server and RFC 6455 WebSocket on monoio.
//!
//! Owns: everything between an accepted `TcpStream` and the application's [`Handler`]: request
//! parsing, keep-alive and pipelining, streaming request bodies, response framing, limits,
//! access logging, per-shard accounting of what it holds and refuses ([`stats`], for
//! `/metrics`), client-disconnect cancellation (a request whose client goes away has its
//! handler future dropped and is logged as `499`), and upgraded WebSocket connections. It knows
//! nothing about Supabase services.
//!
//! Invariants: every buffer and queue grown on a peer's behalf is bounded by [`Limits`] or
//! [`WsConfig`]; no socket read or write is dropped in flight (io_uring hygiene, see `io`); no
//! `unwrap`/`expect` on peer-influenced data; a handler panic becomes a `500`, never a dead
//! shard. Everything runs on the current thread (futures are `!Send`).
//!
//! ```no_run
//! use std::rc::Rc;
//! use madbase_http::{serve_connection, Body, Handler, Limits, NoShutdown, Request, Response};
//!
//! struct App;
//! impl Handler for App {
//!     async fn handle(&self, req: Request, body: Body) -> Response {
//!         match req.path() {
//!             "/echo" => match body.collect(1 << 20).await {
//!                 Ok(b) => Response::with_body(200, b),
//!                 Err(e) => Response::from(&e),
//!             },
//!             _ => Response::error_json(404, "not found"),
//!         }
//!     }
//! }
//!
//! async fn accept_loop(listener: monoio::net::TcpListener) {
//!     let (app, limits) = (Rc::new(App), Rc::new(Limits::default()));
//!     while let Ok((stream, peer)) = listener.accept().await {
//!         monoio::spawn(serve_connection(stream, peer, app.clone(), limits.clone(), NoShutdown));
//!     }
//! }
//! ```

mod body;
pub mod chunked;
pub mod error;
pub mod head;
mod io;
pub mod limits;
pub mod response;
mod server;
pub mod stats;
mod watch;
pub mod ws;

pub use body::Body;
pub use error::{BodyError, ChunkError, HeadError};
pub use head::{Headers, Request, Version};
pub use io::format_http_date;
pub use io::http_date;
pub use io::{civil_from_days, days_from_civil};
pub use limits::Limits;
pub use response::{BodyStream, Response, ResponseBody};
pub use server::{serve_connection, Handler, NoShutdown, Shutdown};
pub use stats::{shard_stats, HttpStats};
pub use ws::{close_code, CloseFrame, Message, TrySendError, Utf8Bytes, WebSocket, WsConfig, WsError, WsSender};

/// Pure (no I/O) entry points into the network-facing parsers, for fuzzers and property tests.
pub mod fuzzing {
    use bytes::{Bytes, BytesMut};

    use crate::chunked::{Chunk, ChunkedDecoder};
    pub use crate::head::{parse_request_head, HeadLimits, ParsedHead};
    use crate::ws::frame::{Incoming, WsDecoder};

    /// Decodes a whole chunked body from `input`, feeding it in pieces of `split` bytes (≥ 1).
    /// Returns the decoded data and whether the terminating chunk was seen, or the error.
    pub fn decode_chunked(input: &[u8], split: usize) -> Result<(Vec<u8>, bool), crate::ChunkError> {
        let mut dec = ChunkedDecoder::new(1024, 8 * 1024);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(split.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode(&mut buf)? {
                    Chunk::Data(b) => out.extend_from_slice(&b),
                    Chunk::NeedMore => break,
                    Chunk::Done => return Ok((out, true)),
                }
            }
        }
        Ok((out, false))
    }

    /// Decodes WebSocket client frames from `input` (fed in pieces of `split` bytes) until the
    /// input ends or the peer breaks the protocol. Returns the events and the error, if any.
    pub fn decode_frames(
        input: &[u8],
        split: usize,
        max_frame: usize,
        max_message: usize,
    ) -> (Vec<Incoming>, Option<crate::ws::WsProtocolError>) {
        let mut dec = WsDecoder::new(max_frame, max_message);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(split.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(ev)) => out.push(ev),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    /// Parses a request head from `input` with default limits and, when it is complete and
    /// chunked, decodes the chunked body that follows it.
    pub fn parse_request(input: &[u8]) {
        let limits = HeadLimits::default();
        if let Ok(Some(p)) = parse_request_head(input, &limits) {
            let head = Bytes::copy_from_slice(&input[..p.head_len]);
            let _ = crate::Request::from_parsed(head, &p, ([127, 0, 0, 1], 1).into());
            if p.framing == crate::head::Framing::Chunked {
                let _ = decode_chunked(&input[p.head_len..], 7);
            }
        }
    }
}
