//! Memory held for peers, measured by a counting global allocator (the server runs in this
//! process): what a client merely declares, or sent once, must not stay allocated (issue 7,
//! item 3). Bytes requested from the allocator are counted, not RSS, so pages an allocation
//! never touched count too (RSS would hide a 50 MB reservation that is never written).
//!
//! The tests in this file measure the whole process, so they take turns (`SERIAL`).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use madbase_http::ws::frame::{encode_client_frame, OpCode};
use madbase_http::{Body, Handler, Limits, Message, Request, Response, WsConfig};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn added(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            added(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            added(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            added(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

static SERIAL: Mutex<()> = Mutex::new(());

const MIB: usize = 1024 * 1024;

struct App;

impl Handler for App {
    async fn handle(&self, req: Request, body: Body) -> Response {
        match req.path() {
            "/collect" => match body.collect(64 * MIB as u64).await {
                Ok(b) => Response::text(200, b.len().to_string()),
                Err(e) => Response::from(&e),
            },
            "/ws" => {
                let cfg = WsConfig { max_frame_bytes: MIB, max_message_bytes: MIB, ..WsConfig::default() };
                Response::websocket(&req, cfg, |mut ws| async move {
                    while let Some(Ok(m)) = ws.recv().await {
                        if let Message::Binary(b) = m {
                            let _ = ws.try_send(Message::text(b.len().to_string()));
                        }
                    }
                })
            }
            "/stats" => stats_response(),
            _ => Response::error_json(404, "not found"),
        }
    }
}

#[test]
fn declared_large_bodies_trickled_hold_little_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const CONNS: usize = 64;
    let addr = start(|| App, Limits::default());
    assert_eq!(stat(addr, "body_bytes_held"), 0);
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);

    // Each declares 50 MB (under the 50 MiB limit) and sends a few bytes in separate pieces,
    // so the server accumulates (the first piece alone would be kept without copying).
    let mut conns: Vec<TcpStream> = (0..CONNS)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\na").unwrap();
            s
        })
        .collect();
    for piece in [b"b", b"c"] {
        std::thread::sleep(Duration::from_millis(100));
        for s in conns.iter_mut() {
            s.write_all(piece).unwrap();
        }
    }
    // Every body now holds a small starting buffer, charged to the shard.
    let expected = (CONNS * 64 * 1024) as u64;
    let settled = eventually(Duration::from_secs(20), || stat(addr, "body_bytes_held") == expected);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(peak < CONNS * 256 * 1024, "{CONNS} trickling 50 MB bodies peaked at {peak} allocated bytes");
    assert!(settled, "each body holds its 64 KiB start, no more: {} (want {expected})", stat(addr, "body_bytes_held"));

    // Closing them releases the budget and the buffers.
    drop(conns);
    assert!(eventually(Duration::from_secs(20), || stat(addr, "body_bytes_held") == 0), "budget released");
    let after = LIVE.load(Ordering::Relaxed).saturating_sub(baseline);
    // Pooled read buffers (bounded per shard) may stay; the bodies may not.
    assert!(after < 4 * MIB, "{after} bytes still allocated after the connections closed");
}

/// Reads one small unmasked server frame (header + payload < 126 bytes).
fn read_small_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).expect("frame header");
    let len = usize::from(h[1] & 0x7f);
    assert!(len < 126, "small frame expected");
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).expect("frame payload");
    p
}

#[test]
fn websocket_read_buffer_is_released_after_a_large_frame() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const CONNS: usize = 16;
    const FRAME: usize = 768 * 1024;
    let addr = start(|| App, Limits::default());
    let mut conns: Vec<TcpStream> = (0..CONNS).map(|_| raw_ws(addr)).collect();
    let baseline = LIVE.load(Ordering::Relaxed);
    for s in conns.iter_mut() {
        let mut frame = BytesMut::new();
        encode_client_frame(&mut frame, true, OpCode::Binary, &vec![7u8; FRAME], [1, 2, 3, 4]);
        s.write_all(&frame).unwrap();
        assert_eq!(read_small_frame(s), FRAME.to_string().as_bytes());
    }
    // Each server connection has handed its frame out and dropped it (the handler's next `recv`
    // runs in the same poll as its reply, before the reply is written); what it still holds
    // must not be the frame's allocation.
    let held = LIVE.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(held < CONNS * 256 * 1024, "{CONNS} idle websockets hold {held} bytes after one {FRAME}-byte frame each");
    drop(conns);
}

/// Opens a WebSocket to `/ws` with raw frames (so the client side allocates next to nothing).
fn raw_ws(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).expect("101");
    assert_eq!(r.status, 101);
    assert!(buf.is_empty());
    s
}

#[test]
fn idle_websockets_hold_no_write_buffer_nor_writer_nor_read_buffer() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const CONNS: usize = 32;
    let addr = start(|| App, Limits::default());
    // Warm the server (pools, timers) so the baseline does not count one-off allocations.
    drop(raw_ws(addr));
    let baseline = LIVE.load(Ordering::Relaxed);
    let mut conns: Vec<TcpStream> = (0..CONNS).map(|_| raw_ws(addr)).collect();
    // Two exchanges each, so every writer has been spawned, gone idle and been spawned again.
    for round in [&b"hi"[..], &b"again"[..]] {
        for s in conns.iter_mut() {
            let mut frame = BytesMut::new();
            encode_client_frame(&mut frame, true, OpCode::Binary, round, [1, 2, 3, 4]);
            s.write_all(&frame).unwrap();
            assert_eq!(read_small_frame(s), round.len().to_string().as_bytes());
        }
    }
    // What stays is the connection's task, the handler's and the socket's futures, the shared
    // state and a 64-byte read buffer (3.3 KiB in the dev profile): not the 16 KiB read size of
    // this config, a write batch buffer or a writer task.
    let per_conn = || LIVE.load(Ordering::Relaxed).saturating_sub(baseline) / CONNS;
    let settled = eventually(Duration::from_secs(10), || per_conn() < 5 * 1024);
    assert!(settled, "an idle websocket holds {} bytes", per_conn());
    drop(conns);
}
