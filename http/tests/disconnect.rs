//! A client that goes away cancels its request's work (the disconnect watch), and the watch
//! never disturbs pipelining, streamed request bodies or the keep-alive fast path.

mod common;

use std::future::Future;
use std::io::Write;
use std::net::Shutdown as NetShutdown;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::*;
use madbase_http::{Body, Handler, Limits, Request, Response};

#[derive(Debug, PartialEq)]
enum Ev {
    Started(String),
    Dropped(String),
    Finished(String),
}

/// Reports its drop (the cancellation of the handler future that owns it).
struct Guard(mpsc::Sender<Ev>, String);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.send(Ev::Dropped(self.1.clone()));
    }
}

/// Completes after being polled once more (one trip through the run queue).
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

struct App {
    tx: mpsc::Sender<Ev>,
}

impl Handler for App {
    async fn handle(&self, req: Request, mut body: Body) -> Response {
        let id = req.header_str("x-test").unwrap_or("-").to_owned();
        match req.path() {
            "/hello" => Response::text(200, "hello"),
            "/yield" => {
                YieldOnce(false).await;
                Response::text(200, "yielded")
            }
            // Holds a guard across a long wait, like a handler whose PostgreSQL batch is queued.
            "/hang" => {
                let _g = Guard(self.tx.clone(), id.clone());
                let _ = self.tx.send(Ev::Started(id.clone()));
                monoio::time::sleep(Duration::from_secs(60)).await;
                let _ = self.tx.send(Ev::Finished(id));
                Response::text(200, "too late")
            }
            "/slow" => {
                let _g = Guard(self.tx.clone(), id.clone());
                let _ = self.tx.send(Ev::Started(id.clone()));
                monoio::time::sleep(Duration::from_millis(400)).await;
                let _ = self.tx.send(Ev::Finished(id.clone()));
                Response::text(200, format!("slow {id}"))
            }
            // Reads the body slowly, one chunk at a time, pending without the read side between
            // chunks (the moments a wrongly started watch would grab it).
            "/slowcount" => {
                let _ = self.tx.send(Ev::Started(id.clone()));
                let mut n = 0usize;
                loop {
                    monoio::time::sleep(Duration::from_millis(30)).await;
                    match body.chunk().await {
                        Some(Ok(c)) => n += c.len(),
                        Some(Err(e)) => return Response::from(&e),
                        None => break,
                    }
                }
                Response::text(200, format!("bytes={n}"))
            }
            // Reads the whole body, then keeps working (the watch runs during the wait).
            "/echo-late" => {
                let b = match body.collect(1 << 20).await {
                    Ok(b) => b,
                    Err(e) => return Response::from(&e),
                };
                let _ = self.tx.send(Ev::Started(id.clone()));
                monoio::time::sleep(Duration::from_millis(300)).await;
                Response::with_body(200, b)
            }
            // Drops the body unread, then keeps working (the body arrives during the wait).
            "/ignore-late" => {
                drop(body);
                let _ = self.tx.send(Ev::Started(id.clone()));
                monoio::time::sleep(Duration::from_millis(300)).await;
                Response::text(200, "ignored")
            }
            _ => Response::error_json(404, "not found"),
        }
    }
}

fn server() -> (std::net::SocketAddr, mpsc::Receiver<Ev>) {
    let (tx, rx) = mpsc::channel();
    (start(move || App { tx }, Limits::default()), rx)
}

fn wait_for(rx: &mpsc::Receiver<Ev>, want: Ev, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) if ev == want => return,
            Ok(Ev::Finished(id)) => panic!("handler {id} ran to completion while waiting for {want:?}"),
            Ok(_) => {}
            Err(_) => panic!("timed out waiting for {want:?}"),
        }
    }
}

fn get(path: &str, id: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Test: {id}\r\n\r\n").into_bytes()
}

fn assert_healthy(addr: std::net::SocketAddr) {
    let r = roundtrip(addr, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").expect("server still answers");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
}

/// Sets SO_LINGER {on, 0} so that closing the socket sends a RST instead of a FIN.
fn close_with_reset(s: std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid fd and a correctly sized, initialised option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(s);
}

#[test]
fn client_close_cancels_handler() {
    let (addr, rx) = server();
    let mut s = connect(addr);
    s.write_all(&get("/hang", "a")).unwrap();
    wait_for(&rx, Ev::Started("a".into()), Duration::from_secs(10));
    drop(s);
    wait_for(&rx, Ev::Dropped("a".into()), Duration::from_secs(10));
    assert_healthy(addr);

    // Same on a keep-alive connection, after an answered request.
    let mut s = connect(addr);
    let mut buf = Vec::new();
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, &mut buf, false).unwrap().body, b"hello");
    s.write_all(&get("/hang", "b")).unwrap();
    wait_for(&rx, Ev::Started("b".into()), Duration::from_secs(10));
    drop(s);
    wait_for(&rx, Ev::Dropped("b".into()), Duration::from_secs(10));
    assert_healthy(addr);
}

#[test]
fn client_reset_cancels_handler() {
    let (addr, rx) = server();
    let mut s = connect(addr);
    s.write_all(&get("/hang", "rst")).unwrap();
    wait_for(&rx, Ev::Started("rst".into()), Duration::from_secs(10));
    close_with_reset(s);
    wait_for(&rx, Ev::Dropped("rst".into()), Duration::from_secs(10));
    assert_healthy(addr);
}

#[test]
fn half_close_counts_as_abort_like_nginx() {
    // Documented policy: EOF before the response is a client abort (499), even a half-close.
    let (addr, rx) = server();
    let mut s = connect(addr);
    s.write_all(&get("/hang", "half")).unwrap();
    wait_for(&rx, Ev::Started("half".into()), Duration::from_secs(10));
    s.shutdown(NetShutdown::Write).unwrap();
    wait_for(&rx, Ev::Dropped("half".into()), Duration::from_secs(10));
    let mut buf = Vec::new();
    assert!(closed(&mut s, &mut buf), "connection closed");
    assert!(buf.is_empty(), "no response is written to an aborted request");
    assert_healthy(addr);
}

#[test]
fn handler_answering_on_first_poll_never_watches() {
    // Fast path: no watch read is submitted for a handler that is ready at once, so even a
    // half-closed client gets its answer (observable proof that the watch was not started).
    let (addr, _rx) = server();
    let mut s = connect(addr);
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.shutdown(NetShutdown::Write).unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).expect("answered");
    assert_eq!(r.body, b"hello");
    assert!(closed(&mut s, &mut buf));
}

#[test]
fn disconnect_after_pipelined_bytes_still_cancels() {
    // The watch keeps pipelined bytes and keeps watching: a close after them still cancels.
    let (addr, rx) = server();
    let mut s = connect(addr);
    s.write_all(&get("/hang", "p")).unwrap();
    wait_for(&rx, Ev::Started("p".into()), Duration::from_secs(10));
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n").unwrap(); // half a head
    std::thread::sleep(Duration::from_millis(50));
    drop(s);
    wait_for(&rx, Ev::Dropped("p".into()), Duration::from_secs(10));
    assert_healthy(addr);
}

#[test]
fn pipelined_request_arriving_during_handler_is_answered_in_order() {
    let (addr, rx) = server();
    let mut s = connect(addr);
    let mut buf = Vec::new();
    s.write_all(&get("/slow", "1")).unwrap();
    wait_for(&rx, Ev::Started("1".into()), Duration::from_secs(10));
    // Arrives while the first handler runs: the watch reads it and must keep it.
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.write_all(&get("/slow", "2")).unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.body, b"slow 1");
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.body, b"hello");
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.body, b"slow 2");
    // Neither slow handler was cancelled (the guard drops only after it finished).
    let evs: Vec<Ev> = rx.try_iter().collect();
    for id in ["1", "2"] {
        let fin = evs.iter().position(|e| *e == Ev::Finished(id.into()));
        let drop = evs.iter().position(|e| *e == Ev::Dropped(id.into()));
        assert!(fin.is_some() && fin < drop, "{id}: {evs:?}");
    }
    // Still usable.
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, &mut buf, false).unwrap().body, b"hello");
}

#[test]
fn pipelined_bytes_beyond_head_limit_stop_the_watch_not_the_request() {
    // A large pipelined burst while the handler runs: the watch stops at max_header_bytes,
    // nothing is lost, and every request is answered.
    let (tx, rx) = mpsc::channel();
    let addr = start(move || App { tx }, Limits { max_header_bytes: 1024, ..Limits::default() });
    let mut s = connect(addr);
    let mut buf = Vec::new();
    s.write_all(&get("/slow", "big")).unwrap();
    wait_for(&rx, Ev::Started("big".into()), Duration::from_secs(10));
    let mut burst = Vec::new();
    for _ in 0..100 {
        burst.extend_from_slice(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    s.write_all(&burst).unwrap();
    assert_eq!(read_response(&mut s, &mut buf, false).unwrap().body, b"slow big");
    for i in 0..100 {
        let r = read_response(&mut s, &mut buf, false).unwrap_or_else(|| panic!("response {i}"));
        assert_eq!(r.body, b"hello");
    }
}

#[test]
fn streamed_request_body_is_not_disturbed_by_the_watch() {
    let (addr, rx) = server();
    let mut s = connect(addr);
    let mut buf = Vec::new();
    // Content-Length body, sent slowly while the handler reads it slowly.
    s.write_all(b"POST /slowcount HTTP/1.1\r\nHost: x\r\nX-Test: cl\r\nContent-Length: 4000\r\n\r\n").unwrap();
    wait_for(&rx, Ev::Started("cl".into()), Duration::from_secs(10));
    for _ in 0..8 {
        s.write_all(&[b'x'; 500]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"bytes=4000"[..]));

    // Chunked body, same.
    s.write_all(b"POST /slowcount HTTP/1.1\r\nHost: x\r\nX-Test: ch\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    wait_for(&rx, Ev::Started("ch".into()), Duration::from_secs(10));
    for _ in 0..8 {
        s.write_all(b"1f4\r\n").unwrap();
        s.write_all(&[b'y'; 500]).unwrap();
        s.write_all(b"\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"bytes=4000"[..]));

    // Body fully read, then the handler keeps working while the next request arrives.
    s.write_all(b"POST /echo-late HTTP/1.1\r\nHost: x\r\nX-Test: el\r\nContent-Length: 5\r\n\r\nhello").unwrap();
    wait_for(&rx, Ev::Started("el".into()), Duration::from_secs(10));
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, &mut buf, false).unwrap().body, b"hello");
    assert_eq!(read_response(&mut s, &mut buf, false).unwrap().body, b"hello");

    // Body dropped unread; it arrives while the handler still runs, then is drained.
    s.write_all(b"POST /ignore-late HTTP/1.1\r\nHost: x\r\nX-Test: il\r\nContent-Length: 10\r\n\r\n").unwrap();
    wait_for(&rx, Ev::Started("il".into()), Duration::from_secs(10));
    s.write_all(b"0123456789GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.body, b"ignored");
    assert!(r.header("connection").is_none(), "kept alive after draining");
    assert_eq!(read_response(&mut s, &mut buf, false).unwrap().body, b"hello");
}

#[test]
fn keep_alive_fast_path_many_quick_requests() {
    let (addr, _rx) = server();
    let mut s = connect(addr);
    let mut buf = Vec::new();
    // One at a time: handlers that answer at once (no watch) and ones that pend once (watch
    // started and cancelled each time).
    for i in 0..300 {
        let path = if i % 2 == 0 { "/hello" } else { "/yield" };
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
        let r = read_response(&mut s, &mut buf, false).unwrap_or_else(|| panic!("response {i}"));
        assert_eq!(r.status, 200);
        assert!(r.header("connection").is_none());
    }
    // Pipelined bursts of both kinds.
    let mut burst = Vec::new();
    for i in 0..200 {
        let path = if i % 3 == 0 { "/hello" } else { "/yield" };
        burst.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    s.write_all(&burst).unwrap();
    for i in 0..200 {
        let r = read_response(&mut s, &mut buf, false).unwrap_or_else(|| panic!("burst response {i}"));
        let want: &[u8] = if i % 3 == 0 { b"hello" } else { b"yielded" };
        assert_eq!(r.body, want);
    }
}

#[test]
fn handed_over_watch_read_obeys_idle_timeout_and_serves_the_next_request() {
    // A handler that pends once leaves the watch's read in flight; after the keep-alive
    // response that read becomes the next head read. It must still deliver the next request,
    // and an idle connection must still be closed by the idle timeout (read cancelled).
    let (tx, _rx) = mpsc::channel();
    let limits = Limits { idle_timeout: Duration::from_millis(300), ..Limits::default() };
    let addr = start(move || App { tx }, limits);
    let mut s = connect(addr);
    let mut buf = Vec::new();
    for _ in 0..3 {
        s.write_all(b"GET /yield HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let r = read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!(r.body, b"yielded");
        assert!(r.header("connection").is_none());
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(closed(&mut s, &mut buf), "idle connection closed");
    assert!(buf.is_empty(), "nothing written on idle close: {buf:?}");
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(5), "closed after {took:?}");
    assert_healthy(addr);
}

#[test]
fn client_close_after_keep_alive_response_with_handed_over_read() {
    // The handed-over read sees the EOF of a client that leaves after its answer.
    let (addr, _rx) = server();
    for _ in 0..20 {
        let mut s = connect(addr);
        let mut buf = Vec::new();
        s.write_all(b"GET /yield HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut s, &mut buf, false).unwrap().body, b"yielded");
        drop(s);
    }
    assert_healthy(addr);
}
