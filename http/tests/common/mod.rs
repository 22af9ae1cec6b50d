//! Test support: a monoio server on a thread, with a closure-free router.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use madbase_http::{serve_connection, Handler, Limits, NoShutdown, Response, Shutdown};

/// Starts `handler` on a fresh monoio runtime thread; returns the address.
pub fn start<H: Handler, F: FnOnce() -> H + Send + 'static>(make: F, limits: Limits) -> SocketAddr {
    start_with(make, limits, || NoShutdown)
}

/// Like [`start`], with a [`Shutdown`] made on the server thread by `make_shutdown`.
///
/// The runtime is monoio's `FusionDriver` (io_uring when the kernel allows it), or the
/// epoll-based `LegacyDriver` when `MADBASE_HTTP_TEST_DRIVER=legacy`.
pub fn start_with<H, F, S, FS>(make: F, limits: Limits, make_shutdown: FS) -> SocketAddr
where
    H: Handler,
    F: FnOnce() -> H + Send + 'static,
    S: Shutdown,
    FS: FnOnce() -> S + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let serve = async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send addr");
            let handler = Rc::new(make());
            let limits = Rc::new(limits);
            let shutdown = make_shutdown();
            while let Ok((stream, peer)) = listener.accept().await {
                monoio::spawn(serve_connection(stream, peer, handler.clone(), limits.clone(), shutdown.clone()));
            }
        };
        if std::env::var("MADBASE_HTTP_TEST_DRIVER").is_ok_and(|d| d == "legacy") {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime");
            rt.block_on(serve);
        } else {
            let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().expect("runtime");
            rt.block_on(serve);
        }
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("server started")
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads one response from `s` (Content-Length, chunked, or until close). `head` = HEAD request.
pub fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, head: bool) -> Option<Resp> {
    loop {
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            let head_bytes = buf[..pos].to_vec();
            let text = String::from_utf8_lossy(&head_bytes).into_owned();
            let mut lines = text.split("\r\n");
            let status_line = lines.next()?;
            let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':').map(|(a, b)| (a.trim().to_string(), b.trim().to_string())))
                .collect();
            buf.drain(..pos + 4);
            let mut r = Resp { status, headers, body: Vec::new() };
            if head || status == 101 || status == 100 || status == 204 || status == 304 {
                return Some(r);
            }
            if let Some(cl) = r.header("content-length") {
                let n: usize = cl.parse().ok()?;
                while buf.len() < n {
                    fill(s, buf)?;
                }
                r.body = buf.drain(..n).collect();
            } else if r.header("transfer-encoding").is_some() {
                loop {
                    let line_end = loop {
                        if let Some(p) = find(buf, b"\r\n") {
                            break p;
                        }
                        fill(s, buf)?;
                    };
                    let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?, 16).ok()?;
                    buf.drain(..line_end + 2);
                    while buf.len() < size + 2 {
                        fill(s, buf)?;
                    }
                    r.body.extend(buf.drain(..size));
                    buf.drain(..2);
                    if size == 0 {
                        break;
                    }
                }
            } else {
                while fill(s, buf).is_some() {}
                r.body = std::mem::take(buf);
            }
            return Some(r);
        }
        fill(s, buf)?;
    }
}

fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut tmp = [0u8; 65536];
    match s.read(&mut tmp) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            Some(())
        }
    }
}

pub fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Sends `req` on a fresh connection and reads one response.
pub fn roundtrip(addr: SocketAddr, req: &[u8]) -> Option<Resp> {
    let mut s = connect(addr);
    s.write_all(req).ok()?;
    read_response(&mut s, &mut Vec::new(), false)
}

/// True when the server closed the connection (EOF or reset) within the read timeout.
pub fn closed(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        let mut tmp = [0u8; 4096];
        match s.read(&mut tmp) {
            Ok(0) => return true,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// The serving shard's counters as `name=value` lines: serve it from a test handler's route
/// (it must run on the server's thread) and read it with [`stats`].
pub fn stats_response() -> Response {
    let s = madbase_http::shard_stats();
    let fields = [
        ("body_bytes_held", s.body_bytes_held),
        ("body_refused_busy", s.body_refused_busy),
        ("body_refused_too_large", s.body_refused_too_large),
        ("body_timeouts", s.body_timeouts),
        ("header_timeouts", s.header_timeouts),
        ("bad_targets", s.bad_targets),
        ("ws_send_queued_bytes", s.ws_send_queued_bytes),
        ("ws_slow_consumer_closes", s.ws_slow_consumer_closes),
        ("ws_shard_queue_closes", s.ws_shard_queue_closes),
    ];
    let text: String = fields.iter().map(|(n, v)| format!("{n}={v}\n")).collect();
    Response::text(200, text)
}

/// Reads one counter from the server's `/stats` route (see [`stats_response`]).
pub fn stat(addr: SocketAddr, name: &str) -> u64 {
    let r = roundtrip(addr, b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").expect("stats response");
    assert_eq!(r.status, 200, "stats route");
    let text = String::from_utf8(r.body).expect("utf-8 stats");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no stat {name} in {text}"))
        .parse()
        .expect("numeric stat")
}

/// Polls `cond` every 20 ms until it holds or `within` passes (a liveness bound, not a timing
/// assertion); returns whether it held.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
