//! Blocking pool: results come back to a shard, a full queue answers `Busy` at once,
//! a panicking job is an error (not a crash) and the worker keeps serving.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use madbase_shards::{JobError, Runtime, RuntimeConfig, SpawnError};

#[test]
fn results_busy_and_panics() {
    let config = RuntimeConfig {
        shards: 1,
        listen: None,
        handle_signals: false,
        blocking_threads: 1,
        blocking_queue: 2,
        ..RuntimeConfig::default()
    };
    let outcome: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    // The gate holds the single worker busy so the queue can be filled.
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let gate_rx = Arc::new(Mutex::new(Some(gate_rx)));
    let out = outcome.clone();
    let rt = Runtime::start::<(), _, _>(config, move |shard| {
        let out = out.clone();
        let gate_rx = gate_rx.clone();
        async move {
            let pool = shard.blocking().clone();
            let log = |s: String| out.lock().unwrap().push(s);

            // 1. A result comes back.
            let job = pool.spawn(|| (1..=10u64).product::<u64>()).expect("spawn");
            log(format!("result={:?}", job.await));

            // 2. Hold the worker, fill the queue (capacity 2), then Busy.
            let rx = gate_rx.lock().unwrap().take().expect("gate");
            let (started_tx, started_rx) = mpsc::channel::<()>();
            let holder = pool
                .spawn(move || {
                    started_tx.send(()).unwrap();
                    rx.recv().unwrap();
                    "held"
                })
                .expect("spawn holder");
            // Wait (off the reactor's hot path, test only) until the worker took it.
            started_rx.recv().unwrap();
            let q1 = pool.spawn(|| 1).expect("queue slot 1");
            let q2 = pool.spawn(|| 2).expect("queue slot 2");
            log(format!("depth={}", pool.queue_depth()));
            match pool.spawn(|| 3) {
                Err(SpawnError::Busy) => log("busy".into()),
                Err(e) => log(format!("unexpected error {e}")),
                Ok(_) => log("unexpected ok".into()),
            }
            log("release".into());
            let h = holder.await;
            let (a, b) = (q1.await, q2.await);
            log(format!("holder={h:?} q1={a:?} q2={b:?}"));

            // 3. A panicking job is an error; the worker survives.
            let bad = pool.spawn(|| -> u32 { panic!("boom in job") }).expect("spawn bad");
            match bad.await {
                Err(JobError::Panicked(msg)) => log(format!("panicked:{msg}")),
                other => log(format!("unexpected {other:?}")),
            }
            let after = pool.spawn(|| 7).expect("spawn after panic");
            log(format!("after={:?}", after.await));
        }
    })
    .expect("start");

    // Release the holder once the shard reports Busy.
    loop {
        if outcome.lock().unwrap().iter().any(|s| s == "release") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    gate_tx.send(()).unwrap();
    rt.join().expect("join");

    let got = outcome.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            "result=Ok(3628800)".to_string(),
            "depth=2".into(),
            "busy".into(),
            "release".into(),
            "holder=Ok(\"held\") q1=Ok(1) q2=Ok(2)".into(),
            "panicked:boom in job".into(),
            "after=Ok(7)".into(),
        ]
    );
}

/// The workers run at `blocking_nice`, so CPU-heavy jobs yield the cores to the shards.
#[test]
fn workers_run_at_the_configured_nice_value() {
    let config = RuntimeConfig {
        shards: 1,
        listen: None,
        handle_signals: false,
        blocking_threads: 1,
        blocking_nice: 7,
        ..RuntimeConfig::default()
    };
    let seen: Arc<Mutex<Option<i32>>> = Arc::new(Mutex::new(None));
    let out = seen.clone();
    let rt = Runtime::start::<(), _, _>(config, move |shard| {
        let out = out.clone();
        async move {
            let job = shard
                .blocking()
                .spawn(|| {
                    // SAFETY: gettid and getpriority have no memory-safety preconditions.
                    unsafe {
                        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                        libc::getpriority(libc::PRIO_PROCESS, tid)
                    }
                })
                .expect("spawn");
            *out.lock().unwrap() = job.await.ok();
        }
    })
    .expect("runtime");
    rt.join().expect("join");
    assert_eq!(*seen.lock().unwrap(), Some(7));
}
