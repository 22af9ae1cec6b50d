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

use bytes::{BufMut, Bytes, BytesMut};
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
use crate::response::{write_head, BodyStream, Response, ResponseBody, Upgrade, Wire};
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
pub(crate) struct CatchUnwind<F: ?Sized> {
    inner: Pin<Box<F>>,
}

impl<F: Future> CatchUnwind<F> {
    pub(crate) fn new(f: F) -> Self {
        CatchUnwind { inner: Box::pin(f) }
    }
}

impl<F: Future + ?Sized> CatchUnwind<F> {
    /// Wraps a future that is boxed already.
    pub(crate) fn boxed(inner: Pin<Box<F>>) -> Self {
        CatchUnwind { inner }
    }
}

impl<F: Future + ?Sized> Future for CatchUnwind<F> {
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
    let ws_shutdown = shutdown.clone();
    // Each phase is its own allocation: the connection's task keeps only a pointer, and an
    // upgraded WebSocket — which may idle for hours — holds none of the HTTP phase's state (its
    // future is several KiB).
    let http = Box::pin(async move {
        let mut conn =
            Conn { shared, handler, limits, peer, wbuf: BytesMut::with_capacity(4096), gen: 0, pending: None };
        conn.run(shutdown).await
    });
    // Bound first: a `match` on `http.await` would keep the finished phase's allocation alive
    // (a temporary of the scrutinee) for the whole WebSocket phase.
    let ended = http.await;
    match ended {
        Ended::Closed(Some(rs)) => give_back_read_buffer(rs.buf, rbuf_size),
        Ended::Closed(None) => {}
        Ended::Upgraded(upgraded) => Box::pin(upgraded.run(ws_shutdown)).await,
    }
}

/// How the HTTP phase of a connection ended.
enum Ended {
    /// Closed; the read side (and its buffer) when it is still there.
    Closed(Option<ReadSide>),
    /// Switched to a WebSocket, which runs next in its own allocation.
    Upgraded(Box<Upgraded>),
}

/// What a WebSocket takes over from the HTTP phase.
struct Upgraded {
    rs: ReadSide,
    writer: Writer,
    upgrade: Upgrade,
    request_id: String,
    peer: SocketAddr,
    max_linger: usize,
}

impl Upgraded {
    /// Runs the WebSocket, then lingers (bounded) for the peer's close or EOF. Set up before
    /// the first await, so the long-lived future holds only the running socket.
    fn run<S: Shutdown>(self, shutdown: S) -> impl Future<Output = ()> {
        let Upgraded { rs, writer, upgrade, request_id, peer, max_linger } = self;
        let shutdown_fut: Pin<Box<dyn Future<Output = ()>>> = Box::pin(async move { shutdown.triggered().await });
        let close_timeout = upgrade.config.close_timeout;
        let socket =
            crate::ws::run_upgraded(rs, writer, upgrade.config, upgrade.run, Some(shutdown_fut), request_id, peer);
        async move {
            if let Some(mut rs) = socket.await {
                // Boxed: the linger's read future would otherwise sit in the socket's frame.
                Box::pin(discard_input(&mut rs, 4096, Instant::now() + close_timeout, max_linger)).await;
            }
        }
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

    async fn run<S: Shutdown>(&mut self, shutdown: S) -> Ended {
        let hl = HeadLimits::from(&*self.limits);
        loop {
            if shutdown.is_triggered() && self.shared.reader.borrow().as_ref().is_some_and(|r| r.buf.is_empty()) {
                return Ended::Closed(self.take_reader());
            }
            let started = std::time::Instant::now();
            let req = match self.read_head(&hl, &shutdown).await {
                HeadResult::Request(r) => r,
                HeadResult::Close => return Ended::Closed(self.take_reader()),
                HeadResult::Refuse(status, msg) => {
                    let resp = Response::error_json(status, &msg);
                    let id = crate::head::generate_request_id();
                    self.shared.body.borrow_mut().framing = BodyFraming::Done;
                    let _ = self.write_response(resp, &id, Version::Http11, false, false).await;
                    tracing::info!(request_id = %id, method = "-", path = "-", status, bytes_out = 0u64, latency_us = started.elapsed().as_micros() as u64, peer = %self.peer, service = "http", "request refused");
                    return Ended::Closed(self.linger().await);
                }
            };
            match self.exchange(req, started, &shutdown).await {
                Next::KeepAlive => {}
                Next::Close => return Ended::Closed(self.linger().await),
                Next::Abort => return Ended::Closed(None),
                Next::Upgraded(upgraded) => return Ended::Upgraded(upgraded),
                Next::Cancelled => return Ended::Closed(self.take_reader()),
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
        let gen = self.begin_body(&req);
        let ex = Exchange {
            head_only: req.is_head(),
            version: req.version(),
            client_keep_alive: req.keep_alive,
            request_id: req.request_id().to_owned(),
            method: req.method().to_owned(),
            path: req.path().to_owned(),
            started,
        };
        let body = Body::from_conn(self.shared.clone(), gen);
        let mut handler = Some(CatchUnwind::new(self.handler.handle(req, body)));

        // Run the handler while watching for a client disconnect (see `watch`). The watch is
        // only polled once the handler has returned `Pending`, so a handler that answers on its
        // first poll costs nothing; otherwise it costs one read, reused as the next head read.
        let shared = self.shared.clone();
        let stop = Cell::new(false);
        let max_buf = self.limits.max_header_bytes.max(1);
        let mut watch = WatchSlot {
            watch: pin!(Some(watch::watch(&shared, &stop, max_buf, self.limits.read_buffer_size))),
            shared: &shared,
            handed: None,
        };
        let resp = match race_handler(&mut handler, &mut watch).await {
            Raced::Done(Ok(r)) => r,
            Raced::Done(Err(())) => {
                tracing::error!(request_id = %ex.request_id, method = %ex.method, path = %ex.path, "handler panicked");
                Response::error_json(500, "internal server error")
            }
            Raced::Gone(err) => return self.cancel_handler(handler.take(), err, &ex),
        };
        drop(handler);
        // Stop the watch now. A read it submitted on an empty buffer stays in flight and is
        // handed over (`handed`): on a reusable connection it becomes the next head read, so a
        // keep-alive exchange costs no cancel and no fresh read. Otherwise its cancel is
        // submitted together with the response's first write, and its completion is awaited
        // after the response (before the read side is used).
        stop.set(true);
        let peer_gone = watch.poll_stopped().await;
        self.respond(resp, ex, peer_gone, shutdown, &mut watch).await
    }

    /// Resets the shared body state for the next exchange; returns its generation (a `Body`
    /// from an earlier exchange no longer reads).
    fn begin_body(&mut self, req: &Request) -> u64 {
        self.gen += 1;
        let mut st = self.shared.body.borrow_mut();
        st.gen = self.gen;
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
        self.gen
    }

    /// The client went away while the handler ran: drops the handler future (which cancels its
    /// queued work), detaches its body and logs the request as 499.
    fn cancel_handler<F>(&self, handler: Option<F>, err: Option<std::io::Error>, ex: &Exchange) -> Next {
        // The watch has ended and handed the read side back; nothing is in flight.
        if std::panic::catch_unwind(AssertUnwindSafe(move || drop(handler))).is_err() {
            tracing::error!(request_id = %ex.request_id, "handler panicked while being cancelled");
        }
        {
            let mut st = self.shared.body.borrow_mut();
            st.gen = u64::MAX;
            st.watch_waker = None;
        }
        let reason = err.as_ref().map_or_else(|| "eof".to_owned(), |e| e.to_string());
        tracing::debug!(request_id = %ex.request_id, reason = %reason, "client disconnected; handler cancelled");
        tracing::info!(request_id = %ex.request_id, method = %ex.method, path = %ex.path, status = 499u16, bytes_out = 0u64, latency_us = ex.started.elapsed().as_micros() as u64, peer = %self.peer, service = "-", cancelled_by_client = true, "request (cancelled by client)");
        Next::Cancelled
    }

    /// Everything after the handler answered: decides whether the connection stays open,
    /// upgrades or writes the response, settles the watch's read and the unread body, and logs
    /// the request.
    async fn respond<S, W>(
        &mut self,
        mut resp: Response,
        ex: Exchange,
        peer_gone: bool,
        shutdown: &S,
        watch: &mut WatchSlot<'_, W>,
    ) -> Next
    where
        S: Shutdown,
        W: Future<Output = Option<WatchEnd>>,
    {
        let body = self.start_response();
        let mut keep_alive =
            ex.client_keep_alive && !peer_gone && !resp.close && !shutdown.is_triggered() && body.reusable;
        if resp.upgrade.is_some() {
            if resp.status != 101 || !body.done || peer_gone {
                resp.upgrade = None;
            } else {
                watch.finish().await;
                self.cancel_handed(&mut watch.handed).await;
                return self.upgrade(resp, ex).await;
            }
        }
        let (service, status) = (resp.service, resp.status);
        let out = self.write_response(resp, &ex.request_id, ex.version, keep_alive, ex.head_only).await;
        // The read side is needed from here on (drain, linger, next head) and the watch must not
        // be dropped with its read in flight.
        if watch.finish().await {
            keep_alive = false;
        }
        if keep_alive && body.done && matches!(out, Ok((_, true))) {
            // The handed-over read (if any) is the next head read.
            self.pending = watch.handed.take();
        } else {
            self.cancel_handed(&mut watch.handed).await;
        }
        let bytes_out = match out {
            Ok((n, reusable)) => {
                keep_alive &= reusable;
                n
            }
            Err(n) => {
                tracing::info!(request_id = %ex.request_id, method = %ex.method, path = %ex.path, status, bytes_out = n, latency_us = ex.started.elapsed().as_micros() as u64, peer = %self.peer, service, "request (write failed)");
                // Invalidate the body before dropping the connection.
                self.shared.body.borrow_mut().gen = u64::MAX;
                return Next::Abort;
            }
        };
        tracing::info!(request_id = %ex.request_id, method = %ex.method, path = %ex.path, status, bytes_out, latency_us = ex.started.elapsed().as_micros() as u64, peer = %self.peer, service, "request");
        if keep_alive && !body.done && !self.drain_body().await {
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

    /// Marks the response started (the body sends no `100 Continue` from now on) and says what
    /// is left of the request body.
    fn start_response(&self) -> BodyLeft {
        let mut st = self.shared.body.borrow_mut();
        st.response_started = true;
        st.watch_waker = None;
        let remaining = match &st.framing {
            BodyFraming::Done => Some(0),
            BodyFraming::Remaining(n) => Some(*n),
            BodyFraming::Chunked(_) => None,
        };
        let done = matches!(st.framing, BodyFraming::Done);
        let clean = st.error.is_none();
        let drainable = clean && !st.expect_pending && remaining.is_some_and(|n| n <= self.limits.max_drain_bytes);
        BodyLeft { done, reusable: done && clean || drainable }
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
        discard_input(&mut rs, self.limits.read_buffer_size, deadline, self.limits.max_linger_bytes).await;
        Some(rs)
    }

    async fn upgrade(&mut self, mut resp: Response, ex: Exchange) -> Next {
        let Some(up) = resp.upgrade.take() else { return Next::Close };
        resp.set_header("upgrade", "websocket");
        resp.set_header("sec-websocket-accept", up.accept.clone());
        let service = resp.service;
        let n = match self.write_response(resp, &ex.request_id, Version::Http11, true, false).await {
            Ok((n, _)) => n,
            Err(_) => return Next::Abort,
        };
        tracing::info!(request_id = %ex.request_id, method = %ex.method, path = %ex.path, status = 101u16, bytes_out = n, latency_us = ex.started.elapsed().as_micros() as u64, peer = %self.peer, service, "request (upgraded)");
        let (Some(rs), Some(w)) = (self.take_reader(), self.shared.writer.borrow_mut().take()) else {
            return Next::Abort;
        };
        Next::Upgraded(Box::new(Upgraded {
            rs,
            writer: w,
            upgrade: up,
            request_id: ex.request_id,
            peer: self.peer,
            max_linger: self.limits.max_linger_bytes,
        }))
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
        let (wire, body) = wire_for(resp.status, resp.take_body(), http10);
        let keep_alive = keep_alive && wire != Wire::UntilClose;
        let date = http_date();
        let mut wbuf = std::mem::take(&mut self.wbuf);
        wbuf.clear();
        write_head(&mut wbuf, &resp, wire, keep_alive, http10, request_id, &date);
        let send_body = !(head_only || no_body_status);
        let Some(mut w) = self.shared.writer.borrow_mut().take() else { return Err(0) };
        let mut sink = Sink { w: &mut w, buf: &mut wbuf, timeout: self.limits.write_timeout, out: 0 };
        let result = match body {
            ResponseBody::Full(b) if send_body => sink.full(b).await.map(|()| true),
            ResponseBody::Stream(s) | ResponseBody::SizedStream(_, s) if send_body => sink.stream(s, wire).await,
            _ => sink.flush().await.map(|()| true),
        };
        let out = sink.out;
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

/// What the connection keeps of a request once the handler owns it: how to answer, and what
/// the access log says.
struct Exchange {
    head_only: bool,
    version: Version,
    /// The client allows the connection to stay open.
    client_keep_alive: bool,
    request_id: String,
    method: String,
    path: String,
    started: std::time::Instant,
}

/// What is left of the request body when the response starts.
struct BodyLeft {
    /// All of it was read.
    done: bool,
    /// It leaves the connection usable for another request: read cleanly, or the rest can be
    /// drained (within `max_drain_bytes`, with no `100 Continue` outstanding).
    reusable: bool,
}

/// How a response body is delimited on the wire, given its status and the HTTP version.
fn wire_for(status: u16, body: ResponseBody, http10: bool) -> (Wire, ResponseBody) {
    match body {
        _ if status < 200 || status == 204 => (Wire::None, ResponseBody::Empty),
        ResponseBody::Empty => (Wire::Length(0), ResponseBody::Empty),
        ResponseBody::Full(b) => (Wire::Length(b.len() as u64), ResponseBody::Full(b)),
        ResponseBody::SizedStream(n, s) => (Wire::Length(n), ResponseBody::SizedStream(n, s)),
        ResponseBody::Stream(s) if http10 => (Wire::UntilClose, ResponseBody::Stream(s)),
        ResponseBody::Stream(s) => (Wire::Chunked, ResponseBody::Stream(s)),
    }
}

/// Pieces of a response up to this size are copied into the write buffer; larger ones are
/// written from their own buffer after it.
const COALESCE_BYTES: usize = 16 * 1024;

/// A response on its way out: the socket's write half, the buffer that coalesces small pieces,
/// and the body bytes sent so far.
struct Sink<'a> {
    w: &'a mut Writer,
    buf: &'a mut BytesMut,
    timeout: std::time::Duration,
    out: u64,
}

impl Sink<'_> {
    /// Writes out the buffer (if anything is in it).
    async fn flush(&mut self) -> Result<(), ()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = std::mem::take(self.buf);
        let (r, mut b) = write_all(self.w, b, self.timeout, no_abort).await;
        b.clear();
        *self.buf = b;
        r.map_err(|_| ())
    }

    /// Writes the buffer, then `data` without copying it.
    async fn write_through(&mut self, data: Bytes) -> Result<(), ()> {
        self.flush().await?;
        write_all(self.w, data, self.timeout, no_abort).await.0.map_err(|_| ())
    }

    /// Sends a body of known bytes.
    async fn full(&mut self, b: Bytes) -> Result<(), ()> {
        let n = b.len() as u64;
        if b.len() <= COALESCE_BYTES {
            self.buf.extend_from_slice(&b);
            self.out += n;
            self.flush().await
        } else {
            self.write_through(b).await?;
            self.out += n;
            Ok(())
        }
    }

    /// Sends a streamed body as `wire` delimits it; Ok(whether the connection is reusable: the
    /// stream matched its declared length and the end is not marked by closing).
    async fn stream(&mut self, mut s: BodyStream, wire: Wire) -> Result<bool, ()> {
        let chunked = wire == Wire::Chunked;
        let declared = match wire {
            Wire::Length(n) => Some(n),
            _ => None,
        };
        let mut sent = 0u64;
        while let Some(next) = next_chunk(&mut s).await {
            let Ok(chunk) = next else {
                let _ = self.flush().await;
                return Err(());
            };
            if chunk.is_empty() {
                continue;
            }
            sent += chunk.len() as u64;
            if declared.is_some_and(|d| sent > d) {
                let _ = self.flush().await;
                return Err(());
            }
            self.chunk(chunk, chunked).await?;
            self.out = sent;
            // Push out what we have when the stream is slow to produce more.
            self.flush().await?;
        }
        if chunked {
            self.buf.put_slice(b"0\r\n\r\n");
        }
        self.flush().await?;
        Ok(declared.is_none_or(|d| d == sent) && wire != Wire::UntilClose)
    }

    /// Adds one non-empty body chunk (framed when `chunked`), written through when large.
    async fn chunk(&mut self, chunk: Bytes, chunked: bool) -> Result<(), ()> {
        debug_assert!(!chunk.is_empty(), "an empty chunk would end a chunked body");
        if chunked {
            let mut hex = [0u8; 18];
            self.buf.put_slice(fmt_hex(&mut hex, chunk.len() as u64));
            self.buf.put_slice(b"\r\n");
        }
        if chunk.len() <= COALESCE_BYTES {
            self.buf.extend_from_slice(&chunk);
        } else {
            self.write_through(chunk).await?;
        }
        if chunked {
            self.buf.put_slice(b"\r\n");
        }
        Ok(())
    }
}

/// The stream's next chunk; an error from the stream, or a panic inside it, is `Err(())`.
async fn next_chunk(s: &mut BodyStream) -> Option<Result<Bytes, ()>> {
    poll_fn(|cx| {
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| futures_core::Stream::poll_next(s.as_mut(), cx)));
        match r {
            Ok(p) => p.map(|o| o.map(|r| r.map_err(|_| ()))),
            Err(_) => Poll::Ready(Some(Err(()))),
        }
    })
    .await
}

enum Next {
    KeepAlive,
    Close,
    Abort,
    /// Switched protocols: the WebSocket runs after the HTTP phase ends.
    Upgraded(Box<Upgraded>),
    /// The client went away while the handler ran; close without a response.
    Cancelled,
}

/// How the handler/disconnect race ended (a short-lived local; its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Raced {
    Done(Result<Response, ()>),
    Gone(Option<std::io::Error>),
}

/// Polls the handler and, once it has returned `Pending`, the disconnect watch, until the
/// handler answers or the watch sees the client go away.
async fn race_handler<F, W>(handler: &mut Option<CatchUnwind<F>>, watch: &mut WatchSlot<'_, W>) -> Raced
where
    F: Future<Output = Response>,
    W: Future<Output = Option<WatchEnd>>,
{
    poll_fn(|cx| {
        if let Some(h) = handler.as_mut() {
            if let Poll::Ready(r) = Pin::new(h).poll(cx) {
                return Poll::Ready(Raced::Done(r));
            }
        }
        match watch.poll(cx) {
            Poll::Ready(Some(e)) => Poll::Ready(Raced::Gone(e)),
            _ => Poll::Pending,
        }
    })
    .await
}

/// One exchange's disconnect watch (`None` once it ended) and the read it handed over.
struct WatchSlot<'a, W> {
    watch: Pin<&'a mut Option<W>>,
    shared: &'a ConnShared,
    /// The watch's read when it was stopped in flight (never dropped: handed to the next head
    /// read or cancelled and awaited).
    handed: Option<InflightRead>,
}

impl<W: Future<Output = Option<WatchEnd>>> WatchSlot<'_, W> {
    /// Polls the watch if it is still running. When it ends, it is cleared (never polled
    /// again) and the read side it took goes back into `shared`, or, when its read was handed
    /// over in flight, into `handed`. `Ready(Some(err))` when it saw the peer go away (`None`:
    /// EOF), `Ready(None)` for any other ending; `Pending` while it runs or when it already
    /// ended.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Option<std::io::Error>>> {
        let Some(w) = self.watch.as_mut().as_pin_mut() else { return Poll::Pending };
        let Poll::Ready(end) = w.poll(cx) else { return Poll::Pending };
        self.watch.set(None);
        let (rs, gone) = match end {
            None => return Poll::Ready(None),
            Some(WatchEnd::InFlight(read)) => {
                self.handed = Some(read);
                return Poll::Ready(None);
            }
            Some(WatchEnd::Stopped(rs) | WatchEnd::Full(rs)) => (rs, None),
            Some(WatchEnd::Gone(rs, e)) => (rs, Some(e)),
        };
        *self.shared.reader.borrow_mut() = Some(rs);
        Poll::Ready(gone)
    }

    /// Polls the just-stopped watch once: true if it saw the peer go away.
    async fn poll_stopped(&mut self) -> bool {
        poll_fn(|cx| Poll::Ready(matches!(self.poll(cx), Poll::Ready(Some(_))))).await
    }

    /// Runs the (stopped) watch to completion and puts the read side back (or its in-flight
    /// read into `handed`). True if it saw the peer go away.
    async fn finish(&mut self) -> bool {
        let mut gone = false;
        poll_fn(|cx| {
            if self.watch.is_none() {
                return Poll::Ready(());
            }
            match self.poll(cx) {
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
}

/// Reads and drops what the peer still sends, until EOF, `deadline` or more than `max_bytes`,
/// leaving the buffer empty.
async fn discard_input(rs: &mut ReadSide, read_size: usize, deadline: Instant, max_bytes: usize) {
    let mut seen = 0usize;
    loop {
        rs.buf.clear();
        let buf = std::mem::take(&mut rs.buf);
        let (o, buf) = read_buf(&mut rs.io, buf, read_size, Some(deadline), no_interrupt).await;
        rs.buf = buf;
        match o {
            ReadOutcome::Data(n) if seen + n <= max_bytes => seen += n,
            _ => break,
        }
    }
    rs.buf.clear();
}

fn refuse(e: HeadError) -> HeadResult {
    match e {
        HeadError::BodyTooLarge => stats::count(Event::BodyTooLarge),
        HeadError::BadTarget(_) => stats::count(Event::BadTarget),
        _ => {}
    }
    HeadResult::Refuse(e.status(), e.to_string())
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
