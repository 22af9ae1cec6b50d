//! How many bcrypt (cost 10) verifications per second these cores do with nothing else running:
//! the ceiling `bench/auth_signin.sh` compares MadBase's password sign-ins with.
//!
//!     cargo run --release -p madbase-auth --example bcrypt_rate -- [threads] [seconds]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use madbase_auth::crypto::password;

fn main() {
    let mut args = std::env::args().skip(1);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(cores);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let hash = password::hash("bench-password-1");
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (hash, done, stop) = (hash.clone(), done.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    assert!(password::verify("bench-password-1", &hash));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("worker");
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("bcrypt cost {} verifications/s on {threads} threads: {rate:.1}", password::BCRYPT_COST);
}
