//! `Shard::deliver_to_all` from the user's side: one full ring never holds up the
//! other targets; the full one gets the message once it drains; an exited target
//! is given up; shutdown ends the delivery. Also the non-waiting `broadcast`.
//!
//! A shard that must "not drain until told" blocks its own thread on a std channel
//! (with a generous bound): nothing else runs on it, so its rings fill and stay full.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madbase_shards::{Delivery, Lane, Runtime, RuntimeConfig, Shard, Source};

/// Generous bound on every wait, so a broken build fails instead of hanging.
const WAIT: Duration = Duration::from_secs(30);
/// Data ring capacity in these tests: small, so filling one is quick.
const CAPACITY: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Msg {
    Filler(usize),
    Hello,
}

fn config(shards: usize) -> RuntimeConfig {
    RuntimeConfig {
        shards,
        listen: None,
        ring_capacity: CAPACITY,
        handle_signals: false,
        blocking_threads: 1,
        ..RuntimeConfig::default()
    }
}

/// A receiver that exactly one shard takes out of the shared closure.
fn once<T>(rx: mpsc::Receiver<T>) -> Arc<Mutex<Option<mpsc::Receiver<T>>>> {
    Arc::new(Mutex::new(Some(rx)))
}

/// Pushes fillers on the data ring `shard → to` until it refuses one; returns how
/// many it took.
fn fill(shard: &Shard<Msg>, to: usize) -> usize {
    let mut n = 0;
    while shard.send_to(to, Msg::Filler(n)).is_ok() {
        n += 1;
    }
    n
}

/// What a shard saw, sent to the test thread.
#[derive(Debug)]
enum Report {
    Got(usize, Vec<Msg>),
    Delivered(Delivery),
    Missed(Vec<usize>),
}

#[test]
fn a_full_ring_does_not_hold_up_the_other_targets() {
    const SHARDS: usize = 4;
    let (drain_tx, drain_rx) = mpsc::channel::<()>();
    let drain_rx = once(drain_rx);
    let (out_tx, out_rx) = mpsc::channel::<Report>();
    let rt = Runtime::start(config(SHARDS), move |shard| {
        let (drain_rx, out_tx) = (drain_rx.clone(), out_tx.clone());
        async move {
            let report = match shard.id() {
                0 => {
                    assert_eq!(fill(&shard, 1), CAPACITY, "shard 1 is not draining");
                    let delivery = shard.deliver_to_all(|| Msg::Hello, Lane::Data, Duration::from_millis(5)).await;
                    Report::Delivered(delivery)
                }
                1 => {
                    // Not draining until the test has seen shards 2 and 3 get the message.
                    let drain = drain_rx.lock().unwrap().take().expect("one shard 1");
                    drain.recv_timeout(WAIT).expect("the test says drain");
                    let mut got = Vec::new();
                    while got.len() < CAPACITY + 1 {
                        let env = shard.recv().await.expect("no shutdown in this test");
                        assert_eq!(env.from, Source::Shard(0));
                        got.push(env.msg);
                    }
                    Report::Got(1, got)
                }
                id => Report::Got(id, vec![shard.recv().await.expect("a message").msg]),
            };
            out_tx.send(report).expect("test alive");
        }
    })
    .expect("start");

    // Shards 2 and 3 get the message while shard 1's ring is still full.
    let mut early = Vec::new();
    for _ in 2..SHARDS {
        match out_rx.recv_timeout(WAIT).expect("shards 2 and 3 get it before shard 1 drains") {
            Report::Got(id, got) => {
                assert_eq!(got, vec![Msg::Hello], "shard {id}");
                early.push(id);
            }
            other => panic!("before shard 1 drains: {other:?}"),
        }
    }
    early.sort_unstable();
    assert_eq!(early, vec![2, 3]);
    drain_tx.send(()).expect("shard 1 waits");

    let mut delivery = None;
    let mut from_1 = None;
    for _ in 0..2 {
        match out_rx.recv_timeout(WAIT).expect("shards 0 and 1 finish") {
            Report::Delivered(d) => delivery = Some(d),
            Report::Got(1, got) => from_1 = Some(got),
            other => panic!("unexpected {other:?}"),
        }
    }
    rt.join().expect("join");

    let mut want = (0..CAPACITY).map(Msg::Filler).collect::<Vec<_>>();
    want.push(Msg::Hello);
    assert_eq!(from_1, Some(want), "shard 1 gets it after the fillers it drained");
    let delivery = delivery.expect("shard 0 reported");
    assert!(delivery.is_complete(), "{delivery:?}");
    assert_eq!(delivery.delivered.last(), Some(&1), "the full target takes it last: {delivery:?}");
    let mut delivered = delivery.delivered.clone();
    delivered.sort_unstable();
    assert_eq!(delivered, vec![1, 2, 3]);
}

#[test]
fn an_exited_target_is_given_up_and_reported() {
    let (out_tx, out_rx) = mpsc::channel::<Report>();
    let rt = Runtime::start(config(3), move |shard| {
        let out_tx = out_tx.clone();
        async move {
            match shard.id() {
                0 => {
                    // Fill 0 → 1 (pushes to an exited shard succeed until its ring is
                    // full), so deliver_to_all finds it full, then closed.
                    fill(&shard, 1);
                    let delivery = shard.deliver_to_all(|| Msg::Hello, Lane::Data, Duration::from_millis(5)).await;
                    out_tx.send(Report::Delivered(delivery)).expect("test alive");
                }
                // Shard 1 exits at once; its rings are dropped with it.
                1 => {}
                id => {
                    let got = shard.recv().await.expect("a message").msg;
                    out_tx.send(Report::Got(id, vec![got])).expect("test alive");
                }
            }
        }
    })
    .expect("start");
    let mut delivery = None;
    for _ in 0..2 {
        match out_rx.recv_timeout(WAIT).expect("shards 0 and 2 report") {
            Report::Delivered(d) => delivery = Some(d),
            Report::Got(id, got) => assert_eq!((id, got), (2, vec![Msg::Hello])),
            other => panic!("unexpected {other:?}"),
        }
    }
    rt.join().expect("join");
    assert_eq!(delivery, Some(Delivery { delivered: vec![2], closed: vec![1], undelivered: vec![] }));
}

#[test]
fn shutdown_ends_a_delivery_and_reports_the_full_targets() {
    let (filled_tx, filled_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let done_rx = once(done_rx);
    let (out_tx, out_rx) = mpsc::channel::<Delivery>();
    let rt = Runtime::start(config(2), move |shard| {
        let (filled_tx, done_rx, out_tx) = (filled_tx.clone(), done_rx.clone(), out_tx.clone());
        async move {
            if shard.id() == 0 {
                fill(&shard, 1);
                filled_tx.send(()).expect("test alive");
                // A retry period far beyond the test's bound: only shutdown can end it in time.
                let delivery = shard.deliver_to_all(|| Msg::Hello, Lane::Data, Duration::from_secs(3600)).await;
                out_tx.send(delivery).expect("test alive");
            } else {
                // Never drains, and stays alive (its ring open) until the test has the
                // report, so the target is full, not closed.
                let done = done_rx.lock().unwrap().take().expect("one shard 1");
                let _ = done.recv_timeout(WAIT);
            }
        }
    })
    .expect("start");
    filled_rx.recv_timeout(WAIT).expect("shard 0 filled the ring");
    rt.shutdown();
    let delivery = out_rx.recv_timeout(WAIT).expect("shutdown ends deliver_to_all");
    done_tx.send(()).expect("shard 1 waits");
    rt.join().expect("join");
    assert_eq!(delivery, Delivery { delivered: vec![], closed: vec![], undelivered: vec![1] });
}

#[test]
fn broadcast_reports_the_full_ring_and_serves_the_rest() {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let done_rx = once(done_rx);
    let (out_tx, out_rx) = mpsc::channel::<Report>();
    let rt = Runtime::start(config(3), move |shard| {
        let (done_rx, out_tx) = (done_rx.clone(), out_tx.clone());
        async move {
            match shard.id() {
                0 => {
                    fill(&shard, 1);
                    out_tx.send(Report::Missed(shard.broadcast(&Msg::Hello))).expect("test alive");
                }
                // Not draining (and alive) until the test is done.
                1 => {
                    let done = done_rx.lock().unwrap().take().expect("one shard 1");
                    let _ = done.recv_timeout(WAIT);
                }
                id => {
                    let got = shard.recv().await.expect("a message").msg;
                    out_tx.send(Report::Got(id, vec![got])).expect("test alive");
                }
            }
        }
    })
    .expect("start");
    for _ in 0..2 {
        match out_rx.recv_timeout(WAIT).expect("shards 0 and 2 report") {
            Report::Missed(missed) => assert_eq!(missed, vec![1]),
            Report::Got(id, got) => assert_eq!((id, got), (2, vec![Msg::Hello])),
            other => panic!("unexpected {other:?}"),
        }
    }
    done_tx.send(()).expect("shard 1 waits");
    rt.join().expect("join");
}
