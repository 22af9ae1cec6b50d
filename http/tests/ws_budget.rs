//! The per-shard bound on bytes queued for sending across all WebSockets (issue 7, item 12d).

mod common;

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use madbase_http::{Body, Handler, Limits, Message, Request, Response, TrySendError, WsConfig};
use tungstenite::Message as TMsg;

const KIB: usize = 1024;
const PAYLOAD: usize = 32 * KIB;

#[derive(Debug, PartialEq, Eq)]
enum Ev {
    /// `/hold` has this many messages waiting in its queue and stopped sending.
    Holding(usize),
    /// `/flood` was refused with `Full`.
    Full,
    /// `/flood` sent everything it had without being refused.
    SentAll,
}

struct App {
    tx: mpsc::Sender<Ev>,
}

/// Per-connection queues far larger than the shard's bound, so only the shard's bound can bite.
fn cfg() -> WsConfig {
    WsConfig {
        send_queue_messages: 1 << 20,
        send_queue_bytes: 1 << 30,
        shard_send_queue_bytes: 1024 * KIB,
        close_timeout: Duration::from_secs(30),
        ..WsConfig::default()
    }
}

impl Handler for App {
    async fn handle(&self, req: Request, _body: Body) -> Response {
        let tx = self.tx.clone();
        let payload = Bytes::from(vec![7u8; PAYLOAD]);
        match req.path() {
            // Queues 20 messages (640 KiB) behind a client that does not read, then waits.
            "/hold" => Response::websocket(&req, cfg(), move |mut ws| async move {
                let out = ws.sender();
                while out.queued() < 20 {
                    if out.try_send(Message::Binary(payload.clone())).is_err() {
                        return;
                    }
                    monoio::time::sleep(Duration::from_millis(1)).await;
                }
                let _ = tx.send(Ev::Holding(out.queued()));
                while ws.recv().await.is_some() {}
            }),
            // Sends up to 128 MiB (one shared payload) to a client that does not read.
            "/flood" => Response::websocket(&req, cfg(), move |mut ws| async move {
                let out = ws.sender();
                let mut ev = Ev::SentAll;
                for _ in 0..4096 {
                    match out.try_send(Message::Binary(payload.clone())) {
                        Ok(()) => monoio::time::sleep(Duration::from_millis(1)).await,
                        Err(TrySendError::Full) => {
                            ev = Ev::Full;
                            break;
                        }
                        Err(TrySendError::Closed) => return,
                    }
                }
                let _ = tx.send(ev);
                while ws.recv().await.is_some() {}
            }),
            "/echo" => Response::websocket(&req, cfg(), |mut ws| async move {
                while let Some(Ok(m)) = ws.recv().await {
                    if let Message::Text(_) = m {
                        let _ = ws.try_send(m);
                    }
                }
            }),
            "/stats" => stats_response(),
            _ => Response::error_json(404, "not found"),
        }
    }
}

fn client(addr: std::net::SocketAddr, path: &str) -> tungstenite::WebSocket<std::net::TcpStream> {
    let s = connect(addr);
    let (ws, resp) = tungstenite::client(format!("ws://{addr}{path}"), s).expect("handshake");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

#[test]
fn shard_send_queue_bound_closes_the_consumer_that_crosses_it_and_recovers() {
    let (tx, rx) = mpsc::channel();
    let addr = start(move || App { tx }, Limits::default());
    let wait = |rx: &mpsc::Receiver<Ev>| rx.recv_timeout(Duration::from_secs(60)).expect("server event");

    // A: 640 KiB queued, within the shard's 1 MiB, and left there (its client reads nothing).
    let a = client(addr, "/hold");
    assert_eq!(wait(&rx), Ev::Holding(20));

    // B: its own queue may hold 1 GiB, but the shard's may not pass 1 MiB: B is cut once its
    // queue would take the shard past it, long before its own bound.
    let mut b = client(addr, "/flood");
    assert_eq!(wait(&rx), Ev::Full, "the shard's bound refused B");
    // B reads what reached its socket, then the 1008 close.
    let code = loop {
        match b.read() {
            Ok(TMsg::Close(f)) => break f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, Some(1008));
    assert_eq!(stat(addr, "ws_shard_queue_closes"), 1);
    assert_eq!(stat(addr, "ws_slow_consumer_closes"), 0);
    // B's queue was dropped; A's is still counted.
    assert!(eventually(Duration::from_secs(20), || stat(addr, "ws_send_queued_bytes") == (20 * PAYLOAD) as u64));

    // A goes away: its queue leaves the shard's count, and the shard serves WebSockets again.
    drop(a);
    assert!(
        eventually(Duration::from_secs(40), || stat(addr, "ws_send_queued_bytes") == 0),
        "queued bytes of closed connections are released"
    );
    let mut c = client(addr, "/echo");
    c.send(TMsg::Text("still here".into())).unwrap();
    assert_eq!(c.read().unwrap(), TMsg::Text("still here".into()));
}
