//! HTTP/1.1 behaviour from the client's side, over real sockets.

mod common;

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use madbase_http::{Body, Handler, Limits, Request, Response};

struct App;

impl Handler for App {
    async fn handle(&self, req: Request, mut body: Body) -> Response {
        match req.path() {
            "/hello" => Response::text(200, "hello").service("test"),
            "/echo" => match body.collect(1 << 20).await {
                Ok(b) => Response::with_body(200, b),
                Err(e) => Response::from(&e),
            },
            "/count" => {
                let (mut bytes, mut chunks) = (0usize, 0usize);
                while let Some(c) = body.chunk().await {
                    match c {
                        Ok(c) => {
                            bytes += c.len();
                            chunks += 1;
                        }
                        Err(e) => return Response::from(&e),
                    }
                }
                Response::text(200, format!("bytes={bytes} chunks={chunks}"))
            }
            "/ignore" => Response::text(200, "ignored"),
            "/id" => Response::text(200, req.request_id().to_owned()),
            "/target" => {
                let host = req.header_str("host").unwrap_or("-");
                Response::text(200, format!("{} {} {:?} {host}", req.uri(), req.path(), req.query()))
            }
            "*" if req.method() == "OPTIONS" => Response::text(200, "server-wide"),
            "/stats" => stats_response(),
            "/panic" => panic!("handler panic (expected in tests)"),
            "/stream" => {
                let parts: Vec<Result<Bytes, std::io::Error>> = vec![
                    Ok(Bytes::from_static(b"ab")),
                    Ok(Bytes::from_static(b"")),
                    Ok(Bytes::from(vec![b'c'; 40_000])),
                ];
                Response::stream(200, Iter(parts.into_iter()))
            }
            _ => Response::error_json(404, "not found"),
        }
    }
}

struct Iter<I>(I);
impl<I: Iterator<Item = Result<Bytes, std::io::Error>> + Unpin> futures_core::Stream for Iter<I> {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

fn server() -> std::net::SocketAddr {
    start(|| App, Limits { max_body_bytes: 64 * 1024, ..Limits::default() })
}

#[test]
fn keep_alive_serves_several_requests() {
    let addr = server();
    let mut s = connect(addr);
    let mut buf = Vec::new();
    for i in 0..5 {
        let body = format!("req{i}");
        write!(s, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let r = read_response(&mut s, &mut buf, false).expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body.as_bytes());
        assert!(r.header("date").is_some());
        assert!(r.header("connection").is_none());
    }
    // HTTP/1.0 with keep-alive
    s.write_all(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    s.write_all(b"GET /hello HTTP/1.0\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.body, b"hello");
    assert!(closed(&mut s, &mut buf));
}

#[test]
fn pipelined_requests_answered_in_order() {
    let addr = server();
    let mut s = connect(addr);
    let mut all = Vec::new();
    for i in 0..10 {
        let body = format!("pipelined-{i}");
        all.extend_from_slice(
            format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
        );
        all.extend_from_slice(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    s.write_all(&all).unwrap();
    let mut buf = Vec::new();
    for i in 0..10 {
        let r = read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!(r.body, format!("pipelined-{i}").as_bytes());
        let r = read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!(r.body, b"hello");
    }
}

#[test]
fn chunked_request_body_is_streamed() {
    let addr = server();
    let mut s = connect(addr);
    s.write_all(b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let mut total = 0;
    for i in 1..=20usize {
        let data = vec![b'z'; i * 100];
        total += data.len();
        write!(s, "{:x};ext=1\r\n", data.len()).unwrap();
        s.write_all(&data).unwrap();
        s.write_all(b"\r\n").unwrap();
        s.flush().unwrap();
    }
    s.write_all(b"0\r\nTrailer: t\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.starts_with(&format!("bytes={total} ")), "{text}");
    // Connection still usable afterwards.
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, &mut buf, false).unwrap().body, b"hello");
    // Chunked body over the server's max_body_bytes → 413 from the handler.
    s.write_all(b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let big = vec![b'q'; 70 * 1024];
    write!(s, "{:x}\r\n", big.len()).unwrap();
    s.write_all(&big).unwrap();
    s.write_all(b"\r\n0\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn expect_100_continue_is_lazy() {
    let addr = server();
    let mut s = connect(addr);
    let mut buf = Vec::new();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.status, 100);
    s.write_all(b"hello").unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));

    // Handler answers without reading: no 100, final response, connection closed.
    let mut s = connect(addr);
    let mut buf = Vec::new();
    s.write_all(b"POST /ignore HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed(&mut s, &mut buf));
}

#[test]
fn unread_small_body_is_drained_and_connection_kept() {
    let addr = server();
    let mut s = connect(addr);
    let mut buf = Vec::new();
    s.write_all(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, &mut buf, false).unwrap().body, b"ignored");
    assert_eq!(read_response(&mut s, &mut buf, false).unwrap().body, b"hello");
}

#[test]
fn head_has_get_headers_but_no_body() {
    let addr = server();
    let mut s = connect(addr);
    let mut buf = Vec::new();
    s.write_all(b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut buf, true).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    // If a body had been sent, it would corrupt the next response.
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
}

#[test]
fn streamed_response_is_chunked() {
    let addr = server();
    let r = roundtrip(addr, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body.len(), 40_002);
    assert_eq!(&r.body[..3], b"abc");
}

#[test]
fn limits_answer_431_414_413() {
    let addr = server();
    let big = "a".repeat(20 * 1024);
    let r = roundtrip(addr, format!("GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes()).unwrap();
    assert_eq!(r.status, 431);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(String::from_utf8_lossy(&r.body).starts_with("{\"message\":"));
    let mut many = String::from("GET /hello HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(roundtrip(addr, many.as_bytes()).unwrap().status, 431);
    let uri = "a".repeat(9000);
    let r = roundtrip(addr, format!("GET /{uri} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    assert_eq!(r.status, 414);
    let uri = "a".repeat(40_000);
    assert_eq!(roundtrip(addr, format!("GET /{uri} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap().status, 414);
    let r = roundtrip(addr, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n").unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn malformed_requests_get_400_and_close() {
    let addr = server();
    for req in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let mut s = connect(addr);
        s.write_all(req).unwrap();
        let mut buf = Vec::new();
        let r = read_response(&mut s, &mut buf, false).unwrap_or_else(|| panic!("no response to {req:?}"));
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(req));
        assert_eq!(r.header("connection"), Some("close"));
        assert!(closed(&mut s, &mut buf));
    }
    let r = roundtrip(addr, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap();
    assert_eq!(r.status, 501);
    // Invalid chunked framing reaches the handler as an error.
    let r = roundtrip(addr, b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").unwrap();
    assert_eq!(r.status, 400);
}

#[test]
fn slowloris_gets_408_or_closed() {
    let addr = start(|| App, Limits { header_timeout: Duration::from_secs(1), ..Limits::default() });
    let mut s = connect(addr);
    let req = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    for b in req.iter() {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        // Stop once the server has answered/closed.
        s.set_nonblocking(true).unwrap();
        let mut peek = [0u8; 1];
        let done = s.peek(&mut peek).is_ok();
        s.set_nonblocking(false).unwrap();
        if done {
            break;
        }
    }
    let mut buf = Vec::new();
    // Closed without a response is also acceptable.
    if let Some(r) = read_response(&mut s, &mut buf, false) {
        assert_eq!(r.status, 408);
        assert_eq!(r.header("connection"), Some("close"));
    }
}

#[test]
fn request_id_echoed_or_generated() {
    let addr = server();
    let r = roundtrip(addr, b"GET /id HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc-123\r\n\r\n").unwrap();
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    assert_eq!(r.body, b"abc-123");
    let r = roundtrip(addr, b"GET /id HTTP/1.1\r\nHost: x\r\nX-Request-Id: has space\r\n\r\n").unwrap();
    let id = r.header("x-request-id").unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(r.body, id.as_bytes());
    let r = roundtrip(addr, b"GET /id HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(r.header("x-request-id").unwrap().len(), 32);
}

#[test]
fn handler_panic_is_500_and_server_survives() {
    let addr = server();
    let r = roundtrip(addr, b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(r.status, 500);
    let r = roundtrip(addr, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn absolute_form_targets_are_routed_as_origin_form() {
    let addr = server();
    let ask = |req: &str| roundtrip(addr, req.as_bytes()).expect("response");
    // RFC 9112 §3.2.2: the target's path and query route; its authority replaces Host.
    let r = ask("GET http://api.example.com:8080/target?select=id HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"/target?select=id /target Some(\"select=id\") api.example.com:8080");
    let r = ask("GET HTTPS://[::1]:443/target HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.body, b"/target /target None [::1]:443");
    let r = ask("GET http://h/hello HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    // HTTP/1.0 needs no Host: the authority becomes one.
    let r = ask("GET http://h10/target HTTP/1.0\r\n\r\n");
    assert_eq!(r.body, b"/target /target None h10");
    // An empty path is "/".
    let r = ask("GET http://h?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 404, "routed as /?x=1");
    // Asterisk-form is for OPTIONS only.
    let r = ask("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"server-wide"[..]));
}

#[test]
fn malformed_request_targets_get_400() {
    let addr = server();
    for target in [
        "http:///target",       // empty host
        "http://user@h/target", // userinfo
        "http://u:p@h/target",  // userinfo with a password
        "ftp://h/target",       // not http(s)
        "http:/target",         // no authority
        "http://h:8x/target",   // non-numeric port
        "http://h/target#frag", // fragment
        "http://[::1/target",   // unclosed IP literal
        "h:443",                // authority-form outside CONNECT
        "target",               // no leading slash
        "*",                    // asterisk-form on GET
    ] {
        let r = roundtrip(addr, format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        let r = r.unwrap_or_else(|| panic!("no response to {target}"));
        assert_eq!(r.status, 400, "{target}");
        assert_eq!(r.header("connection"), Some("close"), "{target}");
    }
    let r = roundtrip(addr, b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n").expect("response");
    assert_eq!(r.status, 400);
    assert_eq!(stat(addr, "bad_targets"), 12);
}
