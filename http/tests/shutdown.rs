//! Graceful shutdown: idle connections close at once, in-flight requests are answered with
//! `Connection: close`, WebSockets get close code 1001.

mod common;

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use common::*;
use madbase_http::{Body, Handler, Limits, Message, Request, Response, Shutdown, WsConfig};
use tungstenite::Message as TMsg;

/// Test-only [`Shutdown`]: a flag plus the wakers of everyone waiting for it (one shard).
#[derive(Clone, Default)]
struct TestShutdown(Rc<Inner>);

#[derive(Default)]
struct Inner {
    triggered: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl TestShutdown {
    fn trigger(&self) {
        self.0.triggered.set(true);
        let waiters = std::mem::take(&mut *self.0.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    /// Made on the server thread: triggers once `remote` (set by the test thread) is true.
    fn bridged(remote: Arc<AtomicBool>) -> TestShutdown {
        let sd = TestShutdown::default();
        let local = sd.clone();
        monoio::spawn(async move {
            while !remote.load(Ordering::SeqCst) {
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
            local.trigger();
        });
        sd
    }
}

impl Shutdown for TestShutdown {
    fn is_triggered(&self) -> bool {
        self.0.triggered.get()
    }

    fn triggered(&self) -> impl Future<Output = ()> {
        let inner = self.0.clone();
        poll_fn(move |cx| {
            if inner.triggered.get() {
                return Poll::Ready(());
            }
            let mut w = inner.waiters.borrow_mut();
            if !w.iter().any(|w| w.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

struct App {
    started: mpsc::Sender<()>,
}

impl Handler for App {
    async fn handle(&self, req: Request, _body: Body) -> Response {
        match req.path() {
            "/hello" => Response::text(200, "hello"),
            // Pends once, so the disconnect watch's read is in flight when it answers.
            "/yield" => {
                let mut once = false;
                std::future::poll_fn(|cx| {
                    if once {
                        return Poll::Ready(());
                    }
                    once = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                })
                .await;
                Response::text(200, "yielded")
            }
            "/slow" => {
                let _ = self.started.send(());
                monoio::time::sleep(Duration::from_millis(500)).await;
                Response::text(200, "finished")
            }
            "/ws" => Response::websocket(&req, WsConfig::default(), |mut ws| async move {
                let tx = ws.sender();
                while let Some(m) = ws.recv().await {
                    if let Ok(m @ (Message::Text(_) | Message::Binary(_))) = m {
                        let _ = tx.try_send(m);
                    }
                }
            }),
            _ => Response::error_json(404, "not found"),
        }
    }
}

/// A server with its own shutdown switch and a channel that reports handler starts.
fn server() -> (std::net::SocketAddr, Arc<AtomicBool>, mpsc::Receiver<()>) {
    let switch = Arc::new(AtomicBool::new(false));
    let remote = switch.clone();
    let (tx, rx) = mpsc::channel();
    let addr = start_with(move || App { started: tx }, Limits::default(), move || TestShutdown::bridged(remote));
    (addr, switch, rx)
}

/// Asserts that the server closes `s` well before the idle timeout (60 s) could.
fn assert_closed_promptly(s: &mut std::net::TcpStream, buf: &mut Vec<u8>) {
    let t0 = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(closed(s, buf), "connection still open");
    assert!(t0.elapsed() < Duration::from_secs(5), "closed only after {:?}", t0.elapsed());
}

#[test]
fn idle_keep_alive_connections_close_on_shutdown() {
    let (addr, switch, _rx) = server();
    // One connection that has been served and sits in keep-alive, one that never sent a byte.
    let mut used = connect(addr);
    let mut buf = Vec::new();
    used.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = read_response(&mut used, &mut buf, false).unwrap();
    assert_eq!(r.body, b"hello");
    assert!(r.header("connection").is_none(), "keep-alive before shutdown");
    // One whose handler pended, so its idle read is the watch's handed-over read.
    let mut pended = connect(addr);
    let mut pbuf = Vec::new();
    pended.write_all(b"GET /yield HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = read_response(&mut pended, &mut pbuf, false).unwrap();
    assert_eq!(r.body, b"yielded");
    assert!(r.header("connection").is_none(), "keep-alive before shutdown");
    let mut fresh = connect(addr);
    std::thread::sleep(Duration::from_millis(100));

    switch.store(true, Ordering::SeqCst);
    assert_closed_promptly(&mut used, &mut buf);
    assert!(buf.is_empty(), "nothing written to an idle connection: {buf:?}");
    assert_closed_promptly(&mut pended, &mut pbuf);
    assert!(pbuf.is_empty(), "nothing written to an idle connection: {pbuf:?}");
    let mut buf = Vec::new();
    assert_closed_promptly(&mut fresh, &mut buf);
    assert!(buf.is_empty());
}

#[test]
fn in_flight_request_is_answered_with_connection_close() {
    let (addr, switch, rx) = server();
    let mut s = connect(addr);
    let mut buf = Vec::new();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    rx.recv_timeout(Duration::from_secs(10)).expect("handler started");
    switch.store(true, Ordering::SeqCst);
    let r = read_response(&mut s, &mut buf, false).expect("in-flight request still answered");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"finished"[..]));
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed_promptly(&mut s, &mut buf);
}

#[test]
fn websocket_gets_1001_on_shutdown() {
    let (addr, switch, _rx) = server();
    let s = connect(addr);
    let (mut ws, resp) = tungstenite::client(format!("ws://{addr}/ws"), s).expect("handshake");
    assert_eq!(resp.status().as_u16(), 101);
    ws.send(TMsg::Text("before".into())).unwrap();
    assert_eq!(ws.read().unwrap(), TMsg::Text("before".into()));

    switch.store(true, Ordering::SeqCst);
    let code = loop {
        match ws.read() {
            Ok(TMsg::Close(f)) => break f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, Some(1001));
}
