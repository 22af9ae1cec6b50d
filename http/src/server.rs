//! The HTTP/1.1 connection loop.
//!
//! Owns: [`serve_connection`], the [`Handler`] and [`Shutdown`] traits, and the per-exchange
//! policy: read a head (bounded by `header_timeout` / `idle_timeout`), run the handler (a panic
//! becomes `500`) while watching for the client going away (EOF or reset: the handler future is
//! dropped, the request logged as `499` with `cancelled_by_client`, and the connection closed
//! without a response; see `watch`), write the response, then drain the unread body or close.
//! Graceful shutdown closes idle connections at once and answers an in-flight request with
//! `Connection: close`; upgraded WebSockets close with 1001. Invariants: responses
//! go out in request order (pipelining); at most one request is in the handler at a time; the
//! connection never buffers more than `max_header_bytes` of head or `read_buffer_size` of body
//! beyond what the handler asked for; a connection that cannot be reused is answered with
//! `Connection: close` and closed with a bounded lingering read so the response is not lost; the
//! read side is owned by exactly one of head parser, handler `Body`, disconnect watch (or its
//! read handed over in flight, `Conn::pending`), drain or linger at a time, so at most one socket
//! read is ever in flight.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use monoio::io::{AsyncWriteRent, Splitable};
use monoio::net::TcpStream;
use monoio::time::Instant;

use crate::body::{body_step, Body, BodyFraming, BodyState, ConnShared, ReadSide, Step, Writer};
use crate::chunked::ChunkedDecoder;
use crate::error::HeadError;
use crate::head::{parse_request_head, Framing, HeadLimits, Request, Version};
use crate::io::{
    give_back_read_buffer, http_date, no_abort, no_interrupt, read_buf, take_read_buffer, write_all, InflightRead,
    ReadOutcome,
};
use crate::limits::Limits;
use crate::response::{write_head, Response, ResponseBody, Wire};
use crate::stats::{self, Event};
use crate::watch::{self, WatchEnd};

/// The application: turns a request (and its streaming body) into a response.
///
/// Futures need not be `Send`; they run on the connection's shard.
pub trait Handler: 'static {
    /// Handles one request. Implementations may be written as `async fn handle(...)`.
    fn handle(&self, req: Request, body: Body) -> impl Future<Output = Response>;
}

/// Graceful-shutdown signal supplied by the binary (so this crate does not depend on `shards`).
pub trait Shutdown: Clone + 'static {
    /// True once shutdown has begun.
    fn is_triggered(&self) -> bool;
    /// Completes when shutdown begins.
    fn triggered(&self) -> impl Future<Output = ()>;
}

/// A [`Shutdown`] that never triggers (tests, tools).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoShutdown;

impl Shutdown for NoShutdown {
    fn is_triggered(&self) -> bool {
        false
    }
    fn triggered(&self) -> impl Future<Output = ()> {
        std::future::pending()
    }
}

/// Polls a future, turning a panic inside it into `Err(())`.
pub(crate) struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> CatchUnwind<F> {
    pub(crate) fn new(f: F) -> Self {
        CatchUnwind { inner: Box::pin(f) }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// Serves one accepted TCP connection until it closes. Never panics on peer input; a handler
/// panic answers `500`. Requires a monoio runtime with timers enabled.
pub async fn serve_connection<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Rc<H>,
    limits: Rc<Limits>,
    shutdown: impl Shutdown,
) {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let rbuf_size = limits.read_buffer_size.max(1024);
    let shared = Rc::new(ConnShared {
        reader: std::cell::RefCell::new(Some(ReadSide { io: r, buf: take_read_buffer(rbuf_size) })),
        writer: std::cell::RefCell::new(Some(w)),
        body: std::cell::RefCell::new(BodyState {
            gen: 0,
            framing: BodyFraming::Done,
            received: 0,
            expect_pending: false,
            response_started: false,
            deadline: None,
            error: None,
            released: false,
            watch_waker: None,
        }),
        limits: limits.clone(),
    });
    let mut conn = Conn { shared, handler, limits, peer, wbuf: BytesMut::with_capacity(4096), gen: 0, pending: None };
    let leftover = conn.run(shutdown).await;
    if let Some(rs) = leftover {
        give_back_read_buffer(rs.buf, rbuf_size);
    }
}

struct Conn<H> {
    shared: Rc<ConnShared>,
    handler: Rc<H>,
    limits: Rc<Limits>,
    peer: SocketAddr,
    wbuf: BytesMut,
    gen: u64,
    /// The disconnect watch's read, still in flight after a keep-alive response and taken over
    /// by the next head read (see `watch`). While it is here, `shared.reader` is empty.
    pending: Option<InflightRead>,
}

enum HeadResult {
    Request(Request),
    /// Close without a response (EOF, idle timeout, shutdown while idle, socket error).
    Close,
    /// Answer with this error and close.
    Refuse(u16, String),
}

impl<H: Handler> Conn<H> {
    fn take_reader(&self) -> Option<ReadSide> {
        self.shared.reader.borrow_mut().take()
    }

    fn put_reader(&self, rs: ReadSide) {
        *self.shared.reader.borrow_mut() = Some(rs);
    }

    async fn run<S: Shutdown>(&mut self, shutdown: S) -> Option<ReadSide> {
        let hl = HeadLimits::from(&*self.limits);
        loop {
            if shutdown.is_triggered() && self.shared.reader.borrow().as_ref().is_some_and(|r| r.buf.is_empty()) {
                return self.take_reader();
            }
            let started = std::time::Instant::now();
            let req = match self.read_head(&hl, &shutdown).await {
                HeadResult::Request(r) => r,
                HeadResult::Close => return self.take_reader(),
                HeadResult::Refuse(status, msg) => {
                    let resp = Response::error_json(status, &msg);
                    let id = crate::head::generate_request_id();
                    self.shared.body.borrow_mut().framing = BodyFraming::Done;
                    let _ = self.write_response(resp, &id, Version::Http11, false, false).await;
                    tracing::info!(request_id = %id, method = "-", path = "-", status, bytes_out = 0u64, latency_us = started.elapsed().as_micros() as u64, peer = %self.peer, service = "http", "request refused");
                    return self.linger().await;
                }
            };
            match self.exchange(req, started, &shutdown).await {
                Next::KeepAlive => {}
                Next::Close => return self.linger().await,
                Next::Abort => return None,
                Next::Upgraded(rs) => return rs,
                Next::Cancelled => return self.take_reader(),
            }
        }
    }

    async fn read_head<S: Shutdown>(&mut self, hl: &HeadLimits, shutdown: &S) -> HeadResult {
        let mut shutdown_fut = pin!(shutdown.triggered());
        let mut head_deadline = None;
        let mut rs = match self.pending.take() {
            // Take over the watch's read (submitted on an empty buffer, so the connection is
            // idle until it completes): same idle timeout and shutdown rules as a fresh read.
            Some(read) => {
                let deadline = Instant::now() + self.limits.idle_timeout;
                let mut stop_for_shutdown = false;
                let (outcome, rs) = read
                    .finish(Some(deadline), |cx| {
                        if shutdown_fut.as_mut().poll(cx).is_ready() {
                            stop_for_shutdown = true;
                            return Poll::Ready(());
                        }
                        Poll::Pending
                    })
                    .await;
                match outcome {
                    ReadOutcome::Data(_) => head_deadline = Some(Instant::now() + self.limits.header_timeout),
                    ReadOutcome::Interrupted if !stop_for_shutdown => {}
                    _ => {
                        self.put_reader(rs);
                        return HeadResult::Close;
                    }
                }
                rs
            }
            None => {
                let Some(rs) = self.take_reader() else { return HeadResult::Close };
                head_deadline = (!rs.buf.is_empty()).then(|| Instant::now() + self.limits.header_timeout);
                rs
            }
        };
        let result = loop {
            if !rs.buf.is_empty() {
                match parse_request_head(&rs.buf, hl) {
                    Ok(Some(p)) => {
                        let head = rs.buf.split_to(p.head_len).freeze();
                        break HeadResult::Request(Request::from_parsed(head, &p, self.peer));
                    }
                    Ok(None) => {}
                    Err(e) => break refuse(e),
                }
            }
            let idle = rs.buf.is_empty();
            let deadline = match head_deadline {
                Some(d) => d,
                None => Instant::now() + self.limits.idle_timeout,
            };
            let mut stop_for_shutdown = false;
            let buf = std::mem::take(&mut rs.buf);
            let reserve = self.limits.read_buffer_size.min(hl.max_header_bytes + 1);
            let (outcome, buf) = read_buf(&mut rs.io, buf, reserve, Some(deadline), |cx| {
                if idle && shutdown_fut.as_mut().poll(cx).is_ready() {
                    stop_for_shutdown = true;
                    return Poll::Ready(());
                }
                Poll::Pending
            })
            .await;
            rs.buf = buf;
            match outcome {
                ReadOutcome::Data(_) => {
                    if head_deadline.is_none() {
                        head_deadline = Some(Instant::now() + self.limits.header_timeout);
                    }
                }
                ReadOutcome::Eof | ReadOutcome::Error(_) => break HeadResult::Close,
                ReadOutcome::Timeout if idle => break HeadResult::Close,
                ReadOutcome::Timeout => {
                    stats::count(Event::HeaderTimeout);
                    break HeadResult::Refuse(408, "request header timeout".into());
                }
                ReadOutcome::Interrupted if stop_for_shutdown => break HeadResult::Close,
                ReadOutcome::Interrupted => {}
            }
        };
        self.put_reader(rs);
        result
    }

    async fn exchange<S: Shutdown>(&mut self, req: Request, started: std::time::Instant, shutdown: &S) -> Next {
        self.gen += 1;
        let gen = self.gen;
        {
            let mut st = self.shared.body.borrow_mut();
            st.gen = gen;
            st.received = 0;
            st.error = None;
            st.response_started = false;
            st.deadline = None;
            st.released = false;
            st.watch_waker = None;
            st.framing = match req.framing {
                Framing::Length(0) => BodyFraming::Done,
                Framing::Length(n) => BodyFraming::Remaining(n),
                Framing::Chunked => BodyFraming::Chunked(ChunkedDecoder::new(
                    self.limits.max_chunk_line_bytes,
                    self.limits.max_trailer_bytes,
                )),
            };
            st.expect_pending = req.expect_continue && !matches!(st.framing, BodyFraming::Done);
        }
        let method_is_head = req.is_head();
        let version = req.version();
        let client_keep_alive = req.keep_alive;
        let request_id = req.request_id().to_owned();
        let method = req.method().to_owned();
        let path = req.path().to_owned();
        let body = Body::from_conn(self.shared.clone(), gen);
        let mut handler = Some(CatchUnwind::new(self.handler.handle(req, body)));

        // Run the handler while watching for a client disconnect (see `watch`). The watch is
        // only polled once the handler has returned `Pending`, so a handler that answers on its
        // first poll costs nothing; otherwise it costs one read, reused as the next head read.
        let shared = self.shared.clone();
        let stop = Cell::new(false);
        let max_buf = self.limits.max_header_bytes.max(1);
        let mut watch = pin!(Some(watch::watch(&shared, &stop, max_buf, self.limits.read_buffer_size)));
        // The watch's read when it was stopped in flight (never dropped: handed to the next head
        // read or cancelled and awaited).
        let mut handed: Option<InflightRead> = None;
        let raced = poll_fn(|cx| {
            if let Some(h) = handler.as_mut() {
                if let Poll::Ready(r) = Pin::new(h).poll(cx) {
                    return Poll::Ready(Raced::Done(r));
                }
            }
            match poll_watch(&mut watch, &shared, &mut handed, cx) {
                Poll::Ready(Some(e)) => Poll::Ready(Raced::Gone(e)),
                _ => Poll::Pending,
            }
        })
        .await;
        let mut resp = match raced {
            Raced::Done(Ok(r)) => r,
            Raced::Done(Err(())) => {
                tracing::error!(request_id = %request_id, method = %method, path = %path, "handler panicked");
                Response::error_json(500, "internal server error")
            }
            Raced::Gone(err) => {
                // The watch has ended and handed the read side back; nothing is in flight.
                // Dropping the handler future is the cancellation of its queued work.
                let h = handler.take();
                if std::panic::catch_unwind(AssertUnwindSafe(move || drop(h))).is_err() {
                    tracing::error!(request_id = %request_id, "handler panicked while being cancelled");
                }
                {
                    let mut st = self.shared.body.borrow_mut();
                    st.gen = u64::MAX;
                    st.watch_waker = None;
                }
                let reason = err.as_ref().map_or_else(|| "eof".to_owned(), |e| e.to_string());
                tracing::debug!(request_id = %request_id, reason = %reason, "client disconnected; handler cancelled");
                tracing::info!(request_id = %request_id, method = %method, path = %path, status = 499u16, bytes_out = 0u64, latency_us = started.elapsed().as_micros() as u64, peer = %self.peer, service = "-", cancelled_by_client = true, "request (cancelled by client)");
                return Next::Cancelled;
            }
        };
        drop(handler);
        // Stop the watch now. A read it submitted on an empty buffer stays in flight and is
        // handed over (`handed`): on a reusable connection it becomes the next head read, so a
        // keep-alive exchange costs no cancel and no fresh read. Otherwise its cancel is
        // submitted together with the response's first write, and its completion is awaited
        // after the response (before the read side is used).
        stop.set(true);
        let peer_gone =
            poll_fn(|cx| Poll::Ready(matches!(poll_watch(&mut watch, &shared, &mut handed, cx), Poll::Ready(Some(_)))))
                .await;

        // Decide what happens to the rest of the request body.
        let (body_done, body_clean, expect_unread, remaining) = {
            let mut st = self.shared.body.borrow_mut();
            st.response_started = true;
            st.watch_waker = None;
            let remaining = match &st.framing {
                BodyFraming::Done => Some(0),
                BodyFraming::Remaining(n) => Some(*n),
                BodyFraming::Chunked(_) => None,
            };
            (matches!(st.framing, BodyFraming::Done), st.error.is_none(), st.expect_pending, remaining)
        };
        let drainable = body_clean && !expect_unread && remaining.is_some_and(|n| n <= self.limits.max_drain_bytes);
        let mut keep_alive = client_keep_alive
            && !peer_gone
            && !resp.close
            && !shutdown.is_triggered()
            && (body_done && body_clean || drainable);

        if resp.upgrade.is_some() {
            if resp.status != 101 || !body_done || peer_gone {
                resp.upgrade = None;
            } else {
                finish_watch(&mut watch, &shared, &mut handed).await;
                self.cancel_handed(&mut handed).await;
                return self.upgrade(resp, request_id, shutdown, started, method, path).await;
            }
        }
        let service = resp.service;
        let status = resp.status;
        let out = self.write_response(resp, &request_id, version, keep_alive, method_is_head).await;
        // The read side is needed from here on (drain, linger, next head) and the watch must not
        // be dropped with its read in flight.
        if finish_watch(&mut watch, &shared, &mut handed).await {
            keep_alive = false;
        }
        if keep_alive && body_done && matches!(out, Ok((_, true))) {
            // The handed-over read (if any) is the next head read.
            self.pending = handed.take();
        } else {
            self.cancel_handed(&mut handed).await;
        }
        let bytes_out = match out {
            Ok((n, reusable)) => {
                keep_alive &= reusable;
                n
            }
            Err(n) => {
                tracing::info!(request_id = %request_id, method = %method, path = %path, status, bytes_out = n, latency_us = started.elapsed().as_micros() as u64, peer = %self.peer, service, "request (write failed)");
                // Invalidate the body before dropping the connection.
                self.shared.body.borrow_mut().gen = u64::MAX;
                return Next::Abort;
            }
        };
        tracing::info!(request_id = %request_id, method = %method, path = %path, status, bytes_out, latency_us = started.elapsed().as_micros() as u64, peer = %self.peer, service, "request");
        if keep_alive && !body_done && !self.drain_body().await {
            keep_alive = false;
        }
        // Detach any Body the handler kept.
        self.shared.body.borrow_mut().gen = u64::MAX;
        if keep_alive {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// Cancels the watch's handed-over read, if any, awaits it and puts the read side back.
    async fn cancel_handed(&self, handed: &mut Option<InflightRead>) {
        if let Some(read) = handed.take() {
            let (_, rs) = read.cancel().await;
            self.put_reader(rs);
        }
    }

    /// Reads and discards the rest of the current body (bounded by `max_drain_bytes`).
    async fn drain_body(&mut self) -> bool {
        let Some(mut rs) = self.take_reader() else { return false };
        let mut drained = 0u64;
        let ok = loop {
            let step = {
                let mut st = self.shared.body.borrow_mut();
                body_step(&mut st, &mut rs.buf, self.limits.max_body_bytes)
            };
            match step {
                Ok(Step::Done) => break true,
                Ok(Step::Data(b)) => {
                    drained += b.len() as u64;
                    if drained > self.limits.max_drain_bytes {
                        break false;
                    }
                    continue;
                }
                Err(_) => break false,
                Ok(Step::NeedMore) => {}
            }
            // Draining is bounded in time like reading: a client trickling the rest of an unread
            // body cannot hold the connection past the body's total deadline.
            let deadline = self.shared.body.borrow_mut().read_deadline(&self.limits);
            let buf = std::mem::take(&mut rs.buf);
            let (o, buf) = read_buf(&mut rs.io, buf, self.limits.read_buffer_size, Some(deadline), no_interrupt).await;
            rs.buf = buf;
            if !matches!(o, ReadOutcome::Data(_)) {
                break false;
            }
        };
        self.put_reader(rs);
        ok
    }

    /// After a final response on a connection that will close: stop writing, then read and
    /// discard what the client still sends (bounded) so our response is not destroyed by a RST.
    async fn linger(&mut self) -> Option<ReadSide> {
        let writer = self.shared.writer.borrow_mut().take();
        if let Some(mut w) = writer {
            let _ = w.shutdown().await;
        }
        let mut rs = self.take_reader()?;
        let deadline = Instant::now() + self.limits.linger_timeout;
        let mut seen = 0usize;
        loop {
            rs.buf.clear();
            let buf = std::mem::take(&mut rs.buf);
            let (o, buf) = read_buf(&mut rs.io, buf, self.limits.read_buffer_size, Some(deadline), no_interrupt).await;
            rs.buf = buf;
            match o {
                ReadOutcome::Data(n) if seen + n <= self.limits.max_linger_bytes => seen += n,
                _ => break,
            }
        }
        rs.buf.clear();
        Some(rs)
    }

    async fn upgrade<S: Shutdown>(
        &mut self,
        mut resp: Response,
        request_id: String,
        shutdown: &S,
        started: std::time::Instant,
        method: String,
        path: String,
    ) -> Next {
        let Some(up) = resp.upgrade.take() else { return Next::Close };
        resp.set_header("upgrade", "websocket");
        resp.set_header("sec-websocket-accept", up.accept.clone());
        let service = resp.service;
        let n = match self.write_response(resp, &request_id, Version::Http11, true, false).await {
            Ok((n, _)) => n,
            Err(_) => return Next::Abort,
        };
        tracing::info!(request_id = %request_id, method = %method, path = %path, status = 101u16, bytes_out = n, latency_us = started.elapsed().as_micros() as u64, peer = %self.peer, service, "request (upgraded)");
        let (Some(rs), Some(w)) = (self.take_reader(), self.shared.writer.borrow_mut().take()) else {
            return Next::Abort;
        };
        let sd = shutdown.clone();
        let shutdown_fut: Pin<Box<dyn Future<Output = ()>>> = Box::pin(async move { sd.triggered().await });
        let close_timeout = up.config.close_timeout;
        let max_linger = self.limits.max_linger_bytes;
        let rs = crate::ws::run_upgraded(rs, w, up.config, up.run, Some(shutdown_fut), request_id, self.peer).await;
        // Linger for the peer's close / EOF, bounded.
        let Some(mut rs) = rs else { return Next::Upgraded(None) };
        let deadline = Instant::now() + close_timeout;
        let mut seen = 0usize;
        loop {
            rs.buf.clear();
            let buf = std::mem::take(&mut rs.buf);
            let (o, buf) = read_buf(&mut rs.io, buf, 4096, Some(deadline), no_interrupt).await;
            rs.buf = buf;
            match o {
                ReadOutcome::Data(n) if seen + n <= max_linger => seen += n,
                _ => break,
            }
        }
        rs.buf.clear();
        Next::Upgraded(Some(rs))
    }

    /// Writes a response. Ok((bytes_out, connection reusable)) or Err(bytes_out) on failure.
    async fn write_response(
        &mut self,
        mut resp: Response,
        request_id: &str,
        version: Version,
        keep_alive: bool,
        head_only: bool,
    ) -> Result<(u64, bool), u64> {
        let http10 = version == Version::Http10;
        let no_body_status = resp.status < 200 || resp.status == 204 || resp.status == 304;
        let body = resp.take_body();
        let (wire, body) = match body {
            _ if resp.status < 200 || resp.status == 204 => (Wire::None, ResponseBody::Empty),
            ResponseBody::Empty => (Wire::Length(0), ResponseBody::Empty),
            ResponseBody::Full(b) => (Wire::Length(b.len() as u64), ResponseBody::Full(b)),
            ResponseBody::SizedStream(n, s) => (Wire::Length(n), ResponseBody::SizedStream(n, s)),
            ResponseBody::Stream(s) if http10 => (Wire::UntilClose, ResponseBody::Stream(s)),
            ResponseBody::Stream(s) => (Wire::Chunked, ResponseBody::Stream(s)),
        };
        let keep_alive = keep_alive && wire != Wire::UntilClose;
        let date = http_date();
        let mut wbuf = std::mem::take(&mut self.wbuf);
        wbuf.clear();
        write_head(&mut wbuf, &resp, wire, keep_alive, http10, request_id, &date);
        let send_body = !(head_only || no_body_status);
        let Some(mut w) = self.shared.writer.borrow_mut().take() else { return Err(0) };
        let wt = self.limits.write_timeout;
        let mut out = 0u64;
        let result: Result<bool, ()> = async {
            match body {
                ResponseBody::Full(b) if send_body => {
                    if b.len() <= 16 * 1024 {
                        wbuf.extend_from_slice(&b);
                        out += b.len() as u64;
                        flush(&mut w, &mut wbuf, wt).await?;
                    } else {
                        flush(&mut w, &mut wbuf, wt).await?;
                        let n = b.len() as u64;
                        write_all(&mut w, b, wt, no_abort).await.0.map_err(|_| ())?;
                        out += n;
                    }
                    Ok(true)
                }
                ResponseBody::Stream(s) | ResponseBody::SizedStream(_, s) if send_body => {
                    let chunked = wire == Wire::Chunked;
                    let declared = match wire {
                        Wire::Length(n) => Some(n),
                        _ => None,
                    };
                    let mut s = s;
                    let mut sent = 0u64;
                    loop {
                        let next = poll_fn(|cx| {
                            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                futures_core::Stream::poll_next(s.as_mut(), cx)
                            }));
                            match r {
                                Ok(p) => p.map(|o| o.map(|r| r.map_err(|_| ()))),
                                Err(_) => Poll::Ready(Some(Err(()))),
                            }
                        })
                        .await;
                        match next {
                            None => break,
                            Some(Err(())) => {
                                let _ = flush(&mut w, &mut wbuf, wt).await;
                                return Err(());
                            }
                            Some(Ok(chunk)) if chunk.is_empty() => continue,
                            Some(Ok(chunk)) => {
                                sent += chunk.len() as u64;
                                if declared.is_some_and(|d| sent > d) {
                                    let _ = flush(&mut w, &mut wbuf, wt).await;
                                    return Err(());
                                }
                                if chunked {
                                    let mut hex = [0u8; 18];
                                    let h = fmt_hex(&mut hex, chunk.len() as u64);
                                    wbuf.put_slice(h);
                                    wbuf.put_slice(b"\r\n");
                                }
                                if chunk.len() <= 16 * 1024 {
                                    wbuf.extend_from_slice(&chunk);
                                    if chunked {
                                        wbuf.put_slice(b"\r\n");
                                    }
                                    if wbuf.len() >= 16 * 1024 {
                                        flush(&mut w, &mut wbuf, wt).await?;
                                    }
                                } else {
                                    flush(&mut w, &mut wbuf, wt).await?;
                                    write_all(&mut w, chunk, wt, no_abort).await.0.map_err(|_| ())?;
                                    if chunked {
                                        wbuf.put_slice(b"\r\n");
                                    }
                                }
                                out = sent;
                            }
                        }
                        // Push out what we have when the stream is slow to produce more.
                        if !wbuf.is_empty() {
                            flush(&mut w, &mut wbuf, wt).await?;
                        }
                    }
                    if chunked {
                        wbuf.put_slice(b"0\r\n\r\n");
                    }
                    flush(&mut w, &mut wbuf, wt).await?;
                    Ok(declared.is_none_or(|d| d == sent) && wire != Wire::UntilClose)
                }
                _ => {
                    flush(&mut w, &mut wbuf, wt).await?;
                    Ok(true)
                }
            }
        }
        .await;
        *self.shared.writer.borrow_mut() = Some(w);
        wbuf.clear();
        if wbuf.capacity() <= 64 * 1024 {
            self.wbuf = wbuf;
        }
        match result {
            Ok(reusable) => Ok((out, reusable)),
            Err(()) => Err(out),
        }
    }
}

enum Next {
    KeepAlive,
    Close,
    Abort,
    Upgraded(Option<ReadSide>),
    /// The client went away while the handler ran; close without a response.
    Cancelled,
}

/// How the handler/disconnect race ended (a short-lived local; its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Raced {
    Done(Result<Response, ()>),
    Gone(Option<std::io::Error>),
}

/// Polls the disconnect watch if it is still running. When it ends, it is cleared (never polled
/// again) and the read side it took goes back into `shared`, or, when its read was handed over
/// in flight, into `handed`. `Ready(Some(err))` when it saw the peer go away (`None`: EOF),
/// `Ready(None)` for any other ending; `Pending` while it runs or when it already ended.
fn poll_watch<W>(
    watch: &mut Pin<&mut Option<W>>,
    shared: &ConnShared,
    handed: &mut Option<InflightRead>,
    cx: &mut Context<'_>,
) -> Poll<Option<Option<std::io::Error>>>
where
    W: Future<Output = Option<WatchEnd>>,
{
    let Some(w) = watch.as_mut().as_pin_mut() else { return Poll::Pending };
    let Poll::Ready(end) = w.poll(cx) else { return Poll::Pending };
    watch.set(None);
    let (rs, gone) = match end {
        None => return Poll::Ready(None),
        Some(WatchEnd::InFlight(read)) => {
            *handed = Some(read);
            return Poll::Ready(None);
        }
        Some(WatchEnd::Stopped(rs) | WatchEnd::Full(rs)) => (rs, None),
        Some(WatchEnd::Gone(rs, e)) => (rs, Some(e)),
    };
    *shared.reader.borrow_mut() = Some(rs);
    Poll::Ready(gone)
}

/// Runs the (stopped) watch to completion and puts the read side back (or its in-flight read
/// into `handed`). True if it saw the peer go away.
async fn finish_watch<W>(
    watch: &mut Pin<&mut Option<W>>,
    shared: &ConnShared,
    handed: &mut Option<InflightRead>,
) -> bool
where
    W: Future<Output = Option<WatchEnd>>,
{
    let mut gone = false;
    poll_fn(|cx| {
        if watch.is_none() {
            return Poll::Ready(());
        }
        match poll_watch(watch, shared, handed, cx) {
            Poll::Ready(end) => {
                gone = end.is_some();
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    gone
}

fn refuse(e: HeadError) -> HeadResult {
    match e {
        HeadError::BodyTooLarge => stats::count(Event::BodyTooLarge),
        HeadError::BadTarget(_) => stats::count(Event::BadTarget),
        _ => {}
    }
    HeadResult::Refuse(e.status(), e.to_string())
}

async fn flush(w: &mut Writer, wbuf: &mut BytesMut, timeout: std::time::Duration) -> Result<(), ()> {
    if wbuf.is_empty() {
        return Ok(());
    }
    let b = std::mem::take(wbuf);
    let (r, mut b) = write_all(w, b, timeout, no_abort).await;
    b.clear();
    *wbuf = b;
    r.map_err(|_| ())
}

fn fmt_hex(buf: &mut [u8; 18], mut n: u64) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = HEX[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}
