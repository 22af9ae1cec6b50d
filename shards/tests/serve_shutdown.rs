//! Serve + graceful shutdown on both drivers: SO_REUSEPORT spreads connections over
//! both shards; shutdown lets a handler that is mid-work finish; new connects are
//! refused afterwards; join returns. Also: the grace deadline, and bind errors.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madbase_shards::{Driver, Runtime, RuntimeConfig, ServeReport, StartError};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

/// Reads one '\n'-terminated line from a monoio stream (None on EOF/error).
async fn read_line(stream: &mut monoio::net::TcpStream, pending: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            return Some(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
        }
        let (res, buf) = stream.read(Vec::with_capacity(256)).await;
        match res {
            Ok(0) | Err(_) => return None,
            Ok(_) => pending.extend_from_slice(&buf),
        }
    }
}

fn config(force_legacy: bool, grace: Duration) -> RuntimeConfig {
    RuntimeConfig {
        shards: 2,
        listen: Some("127.0.0.1:0".parse().unwrap()),
        handle_signals: false,
        force_legacy_driver: force_legacy,
        shutdown_grace: grace,
        blocking_threads: 1,
        ..RuntimeConfig::default()
    }
}

type Reports = Arc<Mutex<Vec<(usize, Driver, ServeReport)>>>;

/// Starts 2 shards whose handler greets with the shard id, then on "hold" answers
/// "holding" and waits for "finish", answering "done <shutdown-seen>".
fn start(force_legacy: bool, grace: Duration) -> (madbase_shards::RuntimeHandle<()>, Reports) {
    let reports: Reports = Arc::new(Mutex::new(Vec::new()));
    let reps = reports.clone();
    let rt = Runtime::start::<(), _, _>(config(force_legacy, grace), move |shard| {
        let reps = reps.clone();
        async move {
            let id = shard.id();
            let signal = shard.shutdown_signal();
            let report = shard
                .serve(move |mut stream, _peer| {
                    let signal = signal.clone();
                    async move {
                        let mut pending = Vec::new();
                        if stream.write_all(format!("S{id}\n").into_bytes()).await.0.is_err() {
                            return;
                        }
                        if read_line(&mut stream, &mut pending).await.as_deref() != Some("hold") {
                            return;
                        }
                        let _ = stream.write_all(b"holding\n".to_vec()).await;
                        if read_line(&mut stream, &mut pending).await.as_deref() != Some("finish") {
                            return;
                        }
                        let msg = format!("done {}\n", signal.is_triggered());
                        let _ = stream.write_all(msg.into_bytes()).await;
                    }
                })
                .await
                .expect("serve");
            reps.lock().unwrap().push((id, shard.driver(), report));
        }
    })
    .expect("start");
    (rt, reports)
}

fn read_std_line(r: &mut BufReader<TcpStream>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).expect("read line");
    s.trim_end().to_owned()
}

fn refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect(addr), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

fn serve_then_graceful_shutdown(force_legacy: bool) {
    let (rt, reports) = start(force_legacy, Duration::from_secs(60));
    let addr = rt.local_addr().expect("bound");
    assert_ne!(addr.port(), 0, "port 0 resolves to a real port");
    let expected_driver = if force_legacy { Driver::Legacy } else { rt.drivers()[0] };
    assert!(rt.drivers().iter().all(|d| *d == expected_driver));

    // Both shards accept on the same port (SO_REUSEPORT).
    let mut seen = [false; 2];
    for _ in 0..2000 {
        let s = TcpStream::connect(addr).expect("connect");
        let mut r = BufReader::new(s);
        match read_std_line(&mut r).as_str() {
            "S0" => seen[0] = true,
            "S1" => seen[1] = true,
            other => panic!("unexpected greeting {other:?}"),
        }
        if seen == [true, true] {
            break;
        }
    }
    assert_eq!(seen, [true, true], "both shards accepted connections");

    // A connection whose handler is mid-work.
    let held = TcpStream::connect(addr).expect("connect held");
    let mut held_r = BufReader::new(held.try_clone().unwrap());
    let mut held_w = held;
    let greeting = read_std_line(&mut held_r);
    assert!(greeting == "S0" || greeting == "S1");
    held_w.write_all(b"hold\n").unwrap();
    assert_eq!(read_std_line(&mut held_r), "holding");

    rt.shutdown();

    // Listeners close: new connects are refused (poll until both shards closed theirs).
    let mut closed = false;
    for _ in 0..2000 {
        if refused(addr) {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(closed, "connects are refused after shutdown");

    // The held handler is still allowed to finish, and saw the shutdown signal.
    held_w.write_all(b"finish\n").unwrap();
    assert_eq!(read_std_line(&mut held_r), "done true");

    rt.join().expect("join");
    assert!(refused(addr), "still refused after join");

    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 2);
    for (id, driver, report) in reports.iter() {
        assert_eq!(*driver, expected_driver);
        assert!(report.accepted >= 1, "shard {id} accepted: {report:?}");
        assert!(report.drained, "shard {id}: {report:?}");
        assert_eq!(report.abandoned, 0, "shard {id}: {report:?}");
    }
}

#[test]
fn graceful_shutdown_default_driver() {
    serve_then_graceful_shutdown(false);
}

#[test]
fn graceful_shutdown_legacy_driver() {
    serve_then_graceful_shutdown(true);
}

fn grace_expiry(force_legacy: bool) {
    // The handler never finishes on its own ("hold" without "finish").
    let (rt, reports) = start(force_legacy, Duration::from_millis(200));
    let addr = rt.local_addr().unwrap();
    let held = TcpStream::connect(addr).unwrap();
    let mut r = BufReader::new(held.try_clone().unwrap());
    let mut w = held;
    read_std_line(&mut r);
    w.write_all(b"hold\n").unwrap();
    assert_eq!(read_std_line(&mut r), "holding");
    rt.shutdown();
    rt.join().expect("join");
    // The server shut the socket down: the client sees EOF.
    let mut rest = String::new();
    assert_eq!(r.read_line(&mut rest).unwrap_or(0), 0);
    let reports = reports.lock().unwrap();
    let total_forced: usize = reports.iter().map(|(_, _, rep)| rep.force_closed).sum();
    assert_eq!(total_forced, 1, "{reports:?}");
    assert!(reports.iter().all(|(_, _, rep)| rep.abandoned == 0), "{reports:?}");
    assert!(reports.iter().any(|(_, _, rep)| !rep.drained), "{reports:?}");
}

#[test]
fn grace_deadline_force_closes_default_driver() {
    grace_expiry(false);
}

#[test]
fn grace_deadline_force_closes_legacy_driver() {
    grace_expiry(true);
}

#[test]
fn port_in_use_is_a_start_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = RuntimeConfig { listen: Some(addr), ..config(false, Duration::from_secs(1)) };
    match Runtime::start::<(), _, _>(cfg, |_shard| async {}) {
        Err(StartError::Bind { addr: a, .. }) => assert_eq!(a, addr),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("start succeeded on a port in use"),
    }
}

#[test]
fn invalid_config_is_a_start_error() {
    let cfg = RuntimeConfig { ring_capacity: 0, ..config(false, Duration::from_secs(1)) };
    assert!(matches!(Runtime::start::<(), _, _>(cfg, |_shard| async {}), Err(StartError::Config(_))));
}

/// A second server on an address another process serves with `SO_REUSEPORT` (a second
/// `madbase start`) must not start: the kernel would split clients between the two.
#[test]
fn an_address_another_reuseport_listener_serves_is_a_start_error() {
    let first = Runtime::start::<(), _, _>(config(false, Duration::from_secs(1)), |shard| async move {
        let _ = shard.serve(|_stream, _peer| async {}).await;
    })
    .expect("first runtime starts");
    let addr = first.local_addr().expect("bound address");
    let cfg = RuntimeConfig { listen: Some(addr), ..config(false, Duration::from_secs(1)) };
    match Runtime::start::<(), _, _>(cfg, |_shard| async {}) {
        Err(StartError::Bind { addr: a, source }) => {
            assert_eq!(a, addr);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{source}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a second server started on {addr}, which the first one serves"),
    }
    first.shutdown();
    first.join().expect("first runtime joins");
}
