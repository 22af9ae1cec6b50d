//! Stress: sequenced messages through every shard→shard ring and from the injector
//! to every shard, concurrently, with tiny rings (so `Full` happens and producers
//! retry). Proves nothing is lost, duplicated or reordered per ring.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use madbase_shards::{Runtime, RuntimeConfig, SendError, Source};

/// Yields once to the shard's scheduler.
struct YieldNow(bool);
impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

const SHARDS: usize = 3;
/// 3 shards: 6 shard→shard rings + 3 injector rings = 9 rings × 120,000 = 1,080,000.
const PER_RING: u64 = 120_000;

fn per_ring() -> u64 {
    std::env::var("STRESS_PER_RING").ok().and_then(|v| v.parse().ok()).unwrap_or(PER_RING)
}

#[derive(Debug, Default)]
struct ShardResult {
    /// next expected sequence number per source (shards 0..SHARDS, injector at SHARDS)
    next: Vec<u64>,
    received: u64,
    errors: Vec<String>,
}

#[test]
fn every_ring_delivers_everything_in_order() {
    let per_ring = per_ring();
    let total = stress(false, per_ring);
    if per_ring == PER_RING {
        assert!(total >= 1_000_000, "{total}");
    }
}

/// The same on the legacy (epoll) driver, with fewer messages.
#[test]
fn every_ring_delivers_everything_in_order_legacy_driver() {
    stress(true, per_ring() / 6);
}

fn stress(force_legacy: bool, per_ring: u64) -> u64 {
    let results: Arc<Mutex<Vec<Option<ShardResult>>>> = Arc::new(Mutex::new((0..SHARDS).map(|_| None).collect()));
    let fulls = Arc::new(AtomicU64::new(0));
    let config = RuntimeConfig {
        shards: SHARDS,
        listen: None,
        ring_capacity: 32,
        force_legacy_driver: force_legacy,
        handle_signals: false,
        blocking_threads: 1,
        ..RuntimeConfig::default()
    };
    let res = results.clone();
    let fulls2 = fulls.clone();
    let mut rt = Runtime::start(config, move |shard| {
        let res = res.clone();
        let fulls = fulls2.clone();
        async move {
            let me = shard.id();
            let n = shard.count();
            // Sender task: interleave targets, retry on Full after a yield.
            let tx = shard.clone();
            let sender = monoio::spawn(async move {
                let mut full = 0u64;
                let mut spins = 0u32;
                for seq in 0..per_ring {
                    for to in (0..n).filter(|&t| t != me) {
                        let mut msg = seq;
                        loop {
                            match tx.send_to(to, msg) {
                                Ok(()) => break,
                                Err(SendError::Full(m)) => {
                                    // A shard never blocks on a send; this test's
                                    // policy is: yield a few times, then nap.
                                    full += 1;
                                    msg = m;
                                    spins += 1;
                                    if spins == 8 {
                                        spins = 0;
                                        monoio::time::sleep(Duration::from_millis(1)).await;
                                    } else {
                                        YieldNow(false).await;
                                    }
                                }
                                Err(e) => panic!("send failed: {e}"),
                            }
                        }
                    }
                }
                full
            });
            // Receiver: check per-source order.
            let expected = per_ring * n as u64; // (n-1) shards + injector
            let mut r = ShardResult { next: vec![0; n + 1], ..Default::default() };
            while r.received < expected {
                let Some(env) = shard.recv().await else {
                    r.errors.push("recv returned None before the end".into());
                    break;
                };
                let idx = match env.from {
                    Source::Shard(s) => {
                        if s == me || s >= n {
                            r.errors.push(format!("bad source {s}"));
                            continue;
                        }
                        s
                    }
                    Source::Injector => n,
                };
                if env.msg != r.next[idx] {
                    r.errors.push(format!("from {:?}: got {} expected {}", env.from, env.msg, r.next[idx]));
                    break;
                }
                r.next[idx] += 1;
                r.received += 1;
            }
            fulls.fetch_add(sender.await, Ordering::Relaxed);
            // Nothing extra may be waiting (no duplicates).
            if let Some(env) = shard.try_recv() {
                r.errors.push(format!("extra message {env:?}"));
            }
            res.lock().unwrap()[me] = Some(r);
        }
    })
    .expect("start");

    let mut injector = rt.take_injector().expect("injector");
    assert!(rt.take_injector().is_none(), "injector is handed out once");
    let inj = std::thread::spawn(move || {
        for seq in 0..per_ring {
            let missed = injector.broadcast_blocking(&seq);
            assert!(missed.is_empty(), "shards {missed:?} missed {seq}");
        }
        injector.ring_depths()
    });
    let depths = inj.join().expect("injector thread");
    assert_eq!(depths.len(), SHARDS);
    assert!(depths.iter().all(|d| d.capacity >= 32 && d.len <= d.capacity));
    rt.join().expect("join");

    let results = results.lock().unwrap();
    let mut total = 0;
    for (id, r) in results.iter().enumerate() {
        let r = r.as_ref().unwrap_or_else(|| panic!("shard {id} reported nothing"));
        assert!(r.errors.is_empty(), "shard {id}: {:?}", r.errors);
        for (src, next) in r.next.iter().enumerate() {
            if src != id {
                assert_eq!(*next, per_ring, "shard {id} from source {src}");
            }
        }
        total += r.received;
    }
    assert_eq!(total, per_ring * (SHARDS * SHARDS) as u64);
    assert!(fulls.load(Ordering::Relaxed) > 0, "tiny rings should have been full at least once");
    total
}
