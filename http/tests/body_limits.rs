//! Request-body bounds from the client's side: the whole-body deadline and the per-shard budget
//! of collected body memory (issue 7, item 3).

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use madbase_http::{Body, Handler, Limits, Request, Response};

struct App;

impl Handler for App {
    async fn handle(&self, req: Request, body: Body) -> Response {
        match req.path() {
            "/collect" => match body.collect(8 << 20).await {
                Ok(b) => Response::text(200, b.len().to_string()),
                Err(e) => Response::from(&e),
            },
            "/stats" => stats_response(),
            _ => Response::error_json(404, "not found"),
        }
    }
}

fn post_head(len: usize) -> Vec<u8> {
    format!("POST /collect HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n").into_bytes()
}

#[test]
fn body_trickled_past_the_total_deadline_gets_408() {
    // Each byte arrives well within the per-read timeout; only the total deadline can end it.
    let limits = Limits {
        body_timeout: Duration::from_secs(10),
        body_timeout_total: Duration::from_millis(1500),
        ..Limits::default()
    };
    let addr = start(|| App, limits);
    let mut s = connect(addr);
    s.write_all(&post_head(1000)).unwrap();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut w = s.try_clone().unwrap();
    let stop_w = stop.clone();
    // 1000 bytes at one per 100 ms would take 100 s.
    let trickler = std::thread::spawn(move || {
        for _ in 0..1000 {
            if stop_w.load(Ordering::Relaxed) || w.write_all(b"a").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let r = read_response(&mut s, &mut Vec::new(), false);
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    trickler.join().unwrap();
    let r = r.expect("a response before the client's read timeout");
    assert_eq!(r.status, 408);
    assert!(elapsed < Duration::from_secs(15), "408 took {elapsed:?}");
    assert_eq!(stat(addr, "body_timeouts"), 1);
}

#[test]
fn shard_body_budget_refuses_503_then_413_and_recovers() {
    const KIB: usize = 1024;
    let limits = Limits {
        shard_body_budget_bytes: 1024 * KIB as u64,
        max_body_bytes: 4 * 1024 * KIB as u64,
        ..Limits::default()
    };
    let addr = start(|| App, limits);

    // One body declaring more than the whole budget can never fit: 413 before any byte is read.
    let mut c = connect(addr);
    c.write_all(&post_head(2048 * KIB)).unwrap();
    let r = read_response(&mut c, &mut Vec::new(), false).expect("413");
    assert_eq!(r.status, 413);
    drop(c);

    // A holds about half the budget with a body it does not finish.
    let mut a = connect(addr);
    a.write_all(&post_head(600 * KIB)).unwrap();
    for _ in 0..5 {
        a.write_all(&[b'a'; 100 * KIB]).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        eventually(Duration::from_secs(20), || stat(addr, "body_bytes_held") >= 500 * KIB as u64),
        "A's body is charged to the budget"
    );
    let held_by_a = stat(addr, "body_bytes_held");
    assert!(held_by_a <= 600 * KIB as u64, "charge follows what arrived: {held_by_a}");

    // B's complete body would take the shard past the budget while A holds its part: 503.
    let body_b = vec![b'b'; 600 * KIB];
    let mut b = connect(addr);
    b.write_all(&post_head(body_b.len())).unwrap();
    b.write_all(&body_b).unwrap();
    let r = read_response(&mut b, &mut Vec::new(), false).expect("503");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(b);
    assert_eq!(stat(addr, "body_refused_busy"), 1);

    // A goes away: its charge is released and the same body B sent now fits.
    drop(a);
    assert!(
        eventually(Duration::from_secs(20), || stat(addr, "body_bytes_held") == 0),
        "the budget is released when the collecting request ends"
    );
    let mut b = connect(addr);
    b.write_all(&post_head(body_b.len())).unwrap();
    b.write_all(&body_b).unwrap();
    let r = read_response(&mut b, &mut Vec::new(), false).expect("200");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, (600 * KIB).to_string().as_bytes());
    drop(b);
    assert!(eventually(Duration::from_secs(20), || stat(addr, "body_bytes_held") == 0), "released after use");

    // A chunked body that grows past the whole budget on its own (however empty the shard):
    // 413, not 503.
    let mut c = connect(addr);
    c.write_all(b"POST /collect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let piece = vec![b'c'; 64 * KIB];
    for _ in 0..24 {
        let sent =
            write!(c, "{:x}\r\n", piece.len()).and_then(|_| c.write_all(&piece)).and_then(|_| c.write_all(b"\r\n"));
        if sent.is_err() {
            break;
        }
    }
    let r = read_response(&mut c, &mut Vec::new(), false).expect("413");
    assert_eq!(r.status, 413);
    drop(c);
    assert_eq!(stat(addr, "body_refused_too_large"), 2);
    assert!(eventually(Duration::from_secs(20), || stat(addr, "body_bytes_held") == 0), "released after refusal");
}
