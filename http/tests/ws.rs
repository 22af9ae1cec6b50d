//! WebSocket behaviour from the client's side (tungstenite client and raw frames).

mod common;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use madbase_http::ws::frame::{encode_client_frame, OpCode};
use madbase_http::{Body, Handler, Limits, Message, Request, Response, TrySendError, WsConfig};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message as TMsg;

struct App {
    flood_full: Option<mpsc::Sender<()>>,
}

fn small() -> WsConfig {
    WsConfig { max_frame_bytes: 64 * 1024, max_message_bytes: 64 * 1024, ..WsConfig::default() }
}

impl Handler for App {
    async fn handle(&self, req: Request, _body: Body) -> Response {
        match req.path() {
            "/ws" => Response::websocket(&req, small(), |mut ws| async move {
                let tx = ws.sender();
                while let Some(m) = ws.recv().await {
                    match m {
                        Ok(Message::Text(t)) if &*t == "close-me" => tx.close(4001, "bye"),
                        Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                            let _ = tx.try_send(m);
                        }
                        _ => {}
                    }
                }
            }),
            "/flood" => {
                let signal = self.flood_full.clone();
                let cfg = WsConfig { send_queue_messages: 64, close_timeout: Duration::from_secs(15), ..small() };
                Response::websocket(&req, cfg, move |mut ws| async move {
                    let tx = ws.sender();
                    let payload = Bytes::from(vec![7u8; 32 * 1024]);
                    loop {
                        match tx.try_send(Message::Binary(payload.clone())) {
                            Ok(()) => monoio::time::sleep(Duration::from_millis(1)).await,
                            Err(TrySendError::Full) => break,
                            Err(TrySendError::Closed) => return,
                        }
                    }
                    if let Some(s) = signal {
                        let _ = s.send(());
                    }
                    while ws.recv().await.is_some() {}
                })
            }
            _ => Response::error_json(404, "not found"),
        }
    }
}

fn server(flood: Option<mpsc::Sender<()>>) -> std::net::SocketAddr {
    start(move || App { flood_full: flood }, Limits::default())
}

fn client(addr: std::net::SocketAddr, path: &str) -> tungstenite::WebSocket<std::net::TcpStream> {
    let s = connect(addr);
    let (ws, resp) = tungstenite::client(format!("ws://{addr}{path}"), s).expect("handshake");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

fn read_close(ws: &mut tungstenite::WebSocket<std::net::TcpStream>) -> Option<u16> {
    loop {
        match ws.read() {
            Ok(TMsg::Close(f)) => return f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

#[test]
fn handshake_refusals() {
    let addr = server(None);
    let r = roundtrip(addr, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = roundtrip(addr, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n").unwrap();
    assert_eq!(r.status, 426);
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    let r = roundtrip(addr, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    assert_eq!(r.status, 101);
    assert_eq!(r.header("sec-websocket-accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
}

#[test]
fn echo_text_and_binary_ping_and_close_roundtrip() {
    let addr = server(None);
    let mut ws = client(addr, "/ws");
    ws.send(TMsg::Text("hello".into())).unwrap();
    assert_eq!(ws.read().unwrap(), TMsg::Text("hello".into()));
    ws.send(TMsg::Binary(vec![1, 2, 3])).unwrap();
    assert_eq!(ws.read().unwrap(), TMsg::Binary(vec![1, 2, 3]));
    ws.send(TMsg::Ping(b"hi".to_vec())).unwrap();
    assert_eq!(ws.read().unwrap(), TMsg::Pong(b"hi".to_vec()));
    ws.close(Some(CloseFrame { code: CloseCode::from(4000), reason: "done".into() })).unwrap();
    assert_eq!(read_close(&mut ws), Some(4000));

    // Server-initiated close with a custom code.
    let mut ws = client(addr, "/ws");
    ws.send(TMsg::Text("close-me".into())).unwrap();
    assert_eq!(read_close(&mut ws), Some(4001));
}

#[test]
fn oversized_message_closes_1009() {
    let addr = server(None);
    let mut ws = client(addr, "/ws");
    let _ = ws.send(TMsg::Binary(vec![0u8; 200 * 1024]));
    assert_eq!(read_close(&mut ws), Some(1009));
}

/// Raw upgrade: returns the socket after the 101 head.
fn raw(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let mut s = connect(addr);
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

/// Reads one server frame: (opcode, payload).
fn read_frame(s: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).unwrap();
    assert_eq!(h[1] & 0x80, 0, "server frames are unmasked");
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).unwrap();
    (h[0] & 0x0f, p)
}

#[test]
fn fragmented_message_reassembled_and_violations_closed() {
    let addr = server(None);
    let mut s = raw(addr);
    let mut b = BytesMut::new();
    encode_client_frame(&mut b, false, OpCode::Text, b"frag", [1, 2, 3, 4]);
    encode_client_frame(&mut b, true, OpCode::Ping, b"mid", [4, 3, 2, 1]);
    encode_client_frame(&mut b, false, OpCode::Continuation, b"men", [9, 8, 7, 6]);
    encode_client_frame(&mut b, true, OpCode::Continuation, b"ted", [0, 0, 0, 1]);
    s.write_all(&b).unwrap();
    assert_eq!(read_frame(&mut s), (0xA, b"mid".to_vec()));
    assert_eq!(read_frame(&mut s), (0x1, b"fragmented".to_vec()));

    // Unmasked frame → 1002.
    s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    let (op, p) = read_frame(&mut s);
    assert_eq!((op, u16::from_be_bytes([p[0], p[1]])), (0x8, 1002));

    // Invalid UTF-8 → 1007.
    let mut s = raw(addr);
    let mut b = BytesMut::new();
    encode_client_frame(&mut b, true, OpCode::Text, &[0xc3, 0x28], [1, 1, 1, 1]);
    s.write_all(&b).unwrap();
    let (op, p) = read_frame(&mut s);
    assert_eq!((op, u16::from_be_bytes([p[0], p[1]])), (0x8, 1007));

    // Reserved bits → 1002.
    let mut s = raw(addr);
    s.write_all(&[0xC1, 0x80, 0, 0, 0, 0]).unwrap();
    let (op, p) = read_frame(&mut s);
    assert_eq!((op, u16::from_be_bytes([p[0], p[1]])), (0x8, 1002));
}

#[test]
fn slow_consumer_is_closed_with_1008() {
    let (tx, rx) = mpsc::channel();
    let addr = server(Some(tx));
    let s = connect(addr);
    // Small receive buffer so the server's writes block quickly.
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/flood"), s).expect("handshake");
    // Do not read until the server reports its queue overflowed.
    rx.recv_timeout(Duration::from_secs(60)).expect("server saw a full queue");
    assert_eq!(read_close(&mut ws), Some(1008));
}
