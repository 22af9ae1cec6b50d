//! The egress runtime seen from a monoio runtime, as a shard sees it: jobs run on tokio and wake
//! the monoio reactor; the queue bound answers `Busy` at once; a panic is an error, not a hang;
//! a shutdown cancels what is left.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use madbase_egress::{Egress, EgressError};

/// Runs `f` to completion on a fresh monoio runtime (the legacy driver: works where io_uring is
/// not allowed), with a 10 s watchdog so a lost wake-up fails the test instead of hanging it.
fn on_monoio<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    let (done_tx, done_rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut rt =
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("monoio runtime");
        rt.block_on(f());
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(()) => t.join().expect("monoio thread"),
        // The sender is gone: the thread panicked; surface its panic.
        Err(mpsc::RecvTimeoutError::Disconnected) => match t.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the monoio side did not finish within 10 s"),
    }
}

#[test]
fn monoio_awaits_a_tokio_sleep() {
    let egress = Egress::start(2, 8).expect("egress");
    let e = egress.clone();
    on_monoio(move || async move {
        let started = Instant::now();
        let job = e
            .run(|| async {
                // Only a tokio runtime can drive this: it proves where the job runs.
                tokio::time::sleep(Duration::from_millis(50)).await;
                std::thread::current().name().map(str::to_owned)
            })
            .expect("admitted");
        let thread = job.await.expect("result");
        assert!(started.elapsed() >= Duration::from_millis(50));
        let thread = thread.expect("named thread");
        assert!(thread.starts_with("egress-"), "ran on {thread}");
    });
    assert_eq!(egress.in_flight(), 0);
    egress.close(Duration::from_secs(1));
}

#[test]
fn many_jobs_from_one_shard_all_complete() {
    let egress = Egress::start(2, 64).expect("egress");
    let e = egress.clone();
    on_monoio(move || async move {
        let mut jobs = Vec::new();
        for i in 0..50u64 {
            jobs.push(
                e.run(move || async move {
                    tokio::time::sleep(Duration::from_millis(i % 7)).await;
                    i * 2
                })
                .expect("admitted"),
            );
        }
        let mut sum = 0;
        for j in jobs {
            sum += j.await.expect("result");
        }
        assert_eq!(sum, (0..50u64).map(|i| i * 2).sum::<u64>());
    });
    egress.close(Duration::from_secs(1));
}

#[test]
fn a_full_queue_answers_busy_at_once() {
    let egress = Egress::start(1, 2).expect("egress");
    let mut jobs = Vec::new();
    let mut releases = Vec::new();
    for _ in 0..2 {
        let (release, wait) = futures_channel::oneshot::channel::<()>();
        releases.push(release);
        jobs.push(egress.run(move || async move { wait.await.expect("released") }).expect("admitted"));
    }
    assert_eq!(egress.in_flight(), 2);
    let started = Instant::now();
    match egress.run(|| async {}) {
        Err(EgressError::Busy(2)) => {}
        Err(e) => panic!("expected Busy, got {e}"),
        Ok(_) => panic!("expected Busy, got a job"),
    }
    assert!(started.elapsed() < Duration::from_millis(100), "Busy must not wait");
    // Once the jobs finish, their slots are free again.
    for r in releases {
        r.send(()).expect("job waiting");
    }
    let e = egress.clone();
    on_monoio(move || async move {
        for j in jobs {
            j.await.expect("released job");
        }
        // A slot is freed before its job's result is sent.
        assert_eq!(e.in_flight(), 0);
        assert_eq!(e.run(|| async { 7 }).expect("admitted again").await, Ok(7));
    });
    egress.close(Duration::from_secs(1));
}

#[test]
fn a_panicking_job_is_an_error_not_a_hang() {
    let egress = Egress::start(1, 4).expect("egress");
    let e = egress.clone();
    on_monoio(move || async move {
        let job = e
            .run(|| async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if true {
                    panic!("boom in the future");
                }
            })
            .expect("admitted");
        assert_eq!(job.await, Err(EgressError::Panicked("boom in the future".to_owned())));

        let job = e.run::<_, std::future::Ready<()>, ()>(|| panic!("boom in make")).expect("admitted");
        assert_eq!(job.await, Err(EgressError::Panicked("boom in make".to_owned())));

        // The runtime goes on.
        assert_eq!(e.run(|| async { "ok" }).expect("admitted").await, Ok("ok"));
        assert_eq!(e.in_flight(), 0);
    });
    egress.close(Duration::from_secs(1));
}

#[test]
fn close_waits_for_admitted_jobs_then_refuses() {
    let egress = Egress::start(1, 4).expect("egress");
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let job = egress
        .run(move || async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            d.fetch_add(1, Ordering::SeqCst);
        })
        .expect("admitted");
    egress.close(Duration::from_secs(5));
    assert_eq!(done.load(Ordering::SeqCst), 1, "close drained the job");
    assert!(egress.is_closed());
    assert!(matches!(egress.run(|| async {}), Err(EgressError::Closed)));
    on_monoio(move || async move {
        assert_eq!(job.await, Ok(()));
    });
}

#[test]
fn close_past_its_grace_cancels_what_is_left() {
    let egress = Egress::start(1, 4).expect("egress");
    let job = egress.run(|| async { tokio::time::sleep(Duration::from_secs(60)).await }).expect("admitted");
    let started = Instant::now();
    egress.close(Duration::from_millis(50));
    assert!(started.elapsed() < Duration::from_secs(5));
    on_monoio(move || async move {
        assert_eq!(job.await, Err(EgressError::Cancelled));
    });
}

#[test]
fn dropping_the_last_handle_stops_the_runtime() {
    let egress = Egress::start(1, 4).expect("egress");
    let job = egress.run(|| async { tokio::time::sleep(Duration::from_secs(60)).await }).expect("admitted");
    drop(egress);
    on_monoio(move || async move {
        assert_eq!(job.await, Err(EgressError::Cancelled));
    });
}
