//! The control lane from the user's side: a control message is never behind bulk
//! data, and `ring_depths` reports both lanes.
//!
//! A shard that must "not drain until told" blocks its own thread on a std channel
//! (with a generous bound): nothing else runs on it, so its rings fill and stay full.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madbase_shards::{Lane, RingDepth, Runtime, RuntimeConfig, SendError, Source};

/// Generous bound on every wait, so a broken build fails instead of hanging.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Msg {
    Data(usize),
    Control,
}

fn config(shards: usize, ring_capacity: usize, control_ring_capacity: usize) -> RuntimeConfig {
    RuntimeConfig {
        shards,
        listen: None,
        ring_capacity,
        control_ring_capacity,
        handle_signals: false,
        blocking_threads: 1,
        ..RuntimeConfig::default()
    }
}

/// A receiver that exactly one shard takes out of the shared closure.
fn once<T>(rx: mpsc::Receiver<T>) -> Arc<Mutex<Option<mpsc::Receiver<T>>>> {
    Arc::new(Mutex::new(Some(rx)))
}

#[test]
fn control_message_overtakes_a_full_data_ring() {
    const CAPACITY: usize = 8;
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = once(go_rx);
    let (out_tx, out_rx) = mpsc::channel::<Result<Vec<Msg>, String>>();
    let rt = Runtime::start(config(2, CAPACITY, 2), move |shard| {
        let (go_tx, go_rx, out_tx) = (go_tx.clone(), go_rx.clone(), out_tx.clone());
        async move {
            if shard.id() == 0 {
                // Fill the data ring 0 → 1 (shard 1 is not draining).
                let mut sent = 0;
                let filled = loop {
                    match shard.send_to(1, Msg::Data(sent)) {
                        Ok(()) => sent += 1,
                        Err(SendError::Full(_)) => break Ok(()),
                        Err(e) => break Err(format!("data send: {e}")),
                    }
                };
                let sent_control = filled.and_then(|()| {
                    if sent != CAPACITY {
                        return Err(format!("the data ring took {sent}, capacity {CAPACITY}"));
                    }
                    shard.send_control(1, Msg::Control).map_err(|e| format!("control send: {e}"))
                });
                if let Err(e) = sent_control {
                    let _ = out_tx.send(Err(e));
                }
                let _ = go_tx.send(());
            } else {
                let go = go_rx.lock().unwrap().take().expect("one shard 1");
                if go.recv_timeout(WAIT).is_err() {
                    let _ = out_tx.send(Err("shard 0 never said go".into()));
                    return;
                }
                let mut got = Vec::new();
                while let Some(env) = shard.try_recv() {
                    assert_eq!(env.from, Source::Shard(0));
                    got.push(env.msg);
                }
                let _ = out_tx.send(Ok(got));
            }
        }
    })
    .expect("start");
    let got = out_rx.recv_timeout(WAIT).expect("shard 1 reports").expect("shard 0 sent both lanes");
    rt.join().expect("join");

    let mut want = vec![Msg::Control];
    want.extend((0..CAPACITY).map(Msg::Data));
    assert_eq!(got, want, "the control message comes first, then the data in push order");
}

/// Sort key for sources: shards by id, then the injector.
fn order(source: &Source) -> usize {
    match source {
        Source::Shard(id) => *id,
        Source::Injector => usize::MAX,
    }
}

#[test]
fn ring_depths_report_both_lanes() {
    const DATA: usize = 8;
    const CONTROL: usize = 4;
    const SHARDS: usize = 3;
    let (sent_tx, sent_rx) = mpsc::channel::<()>();
    let sent_rx = once(sent_rx);
    let (out_tx, out_rx) = mpsc::channel::<(usize, Vec<RingDepth>)>();
    let mut rt = Runtime::start(config(SHARDS, DATA, CONTROL), move |shard| {
        let (sent_tx, sent_rx, out_tx) = (sent_tx.clone(), sent_rx.clone(), out_tx.clone());
        async move {
            match shard.id() {
                0 => {
                    // One control and two data messages wait in 0 → 1 when shard 1 looks.
                    shard.send_control(1, Msg::Control).expect("control");
                    shard.send_to(1, Msg::Data(0)).expect("data");
                    shard.send_to(1, Msg::Data(1)).expect("data");
                    sent_tx.send(()).expect("test alive");
                }
                1 => {
                    let sent = sent_rx.lock().unwrap().take().expect("one shard 1");
                    sent.recv_timeout(WAIT).expect("shard 0 sent");
                }
                _ => {}
            }
            out_tx.send((shard.id(), shard.ring_depths())).expect("test alive");
        }
    })
    .expect("start");
    let injector_depths = rt.take_injector().expect("injector").ring_depths();
    let mut reports: Vec<(usize, Vec<RingDepth>)> =
        (0..SHARDS).map(|_| out_rx.recv_timeout(WAIT).expect("every shard reports")).collect();
    rt.join().expect("join");
    reports.sort_by_key(|(id, _)| *id);

    for (to, depths) in &reports {
        let mut control: Vec<Source> = depths.iter().filter(|d| d.lane == Lane::Control).map(|d| d.from).collect();
        let mut data: Vec<Source> = depths.iter().filter(|d| d.lane == Lane::Data).map(|d| d.from).collect();
        control.sort_by_key(order);
        data.sort_by_key(order);
        let others: Vec<Source> = (0..SHARDS).filter(|s| s != to).map(Source::Shard).collect();
        assert_eq!(control, others, "shard {to}: one control ring from every other shard, none from the injector");
        let mut want_data = vec![Source::Injector];
        want_data.extend(others);
        want_data.sort_by_key(order);
        assert_eq!(data, want_data, "shard {to}: a data ring from every other shard and the injector");
        for d in depths {
            assert_eq!(d.to, *to);
            let capacity = if d.lane == Lane::Control { CONTROL } else { DATA };
            assert_eq!(d.capacity, capacity, "{d:?}");
        }
    }

    let into_1 = &reports[1].1;
    let len = |lane, from| into_1.iter().find(|d| d.lane == lane && d.from == from).map(|d| d.len);
    assert_eq!(len(Lane::Control, Source::Shard(0)), Some(1));
    assert_eq!(len(Lane::Data, Source::Shard(0)), Some(2));
    assert_eq!(len(Lane::Control, Source::Shard(2)), Some(0));
    assert_eq!(len(Lane::Data, Source::Injector), Some(0));

    assert_eq!(injector_depths.len(), SHARDS);
    for (to, d) in injector_depths.iter().enumerate() {
        assert_eq!((d.from, d.to, d.lane, d.capacity), (Source::Injector, to, Lane::Data, DATA));
    }
}

#[test]
fn zero_control_ring_capacity_is_refused() {
    let err = Runtime::start::<Msg, _, _>(config(1, 8, 0), |_| async {}).err().expect("refused");
    assert!(err.to_string().contains("control_ring_capacity"), "{err}");
}
