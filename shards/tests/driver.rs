//! The driver is reported: io_uring where the kernel allows it, legacy when forced.

use madbase_shards::{Driver, Runtime, RuntimeConfig};
use std::sync::{Arc, Mutex};

fn run(force_legacy: bool) -> (Vec<Driver>, Vec<(usize, Driver)>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let rt = Runtime::start::<(), _, _>(
        RuntimeConfig {
            shards: 2,
            listen: None,
            handle_signals: false,
            force_legacy_driver: force_legacy,
            blocking_threads: 1,
            ..RuntimeConfig::default()
        },
        move |shard| {
            let s = s.clone();
            async move {
                // Timers are enabled on both drivers.
                monoio::time::sleep(std::time::Duration::from_millis(1)).await;
                s.lock().unwrap().push((shard.id(), shard.driver()));
            }
        },
    )
    .expect("start");
    let drivers = rt.drivers().to_vec();
    rt.join().expect("join");
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    (drivers, seen)
}

#[test]
fn io_uring_by_default_where_supported() {
    let (drivers, seen) = run(false);
    let expect = if monoio::utils::detect_uring() {
        Driver::IoUring
    } else {
        eprintln!("io_uring unavailable here; legacy expected");
        Driver::Legacy
    };
    eprintln!("default drivers on this machine: {drivers:?}");
    assert_eq!(drivers, vec![expect; 2]);
    assert_eq!(seen, vec![(0, expect), (1, expect)]);
}

#[test]
fn legacy_when_forced() {
    let (drivers, seen) = run(true);
    assert_eq!(drivers, vec![Driver::Legacy; 2]);
    assert_eq!(seen, vec![(0, Driver::Legacy), (1, Driver::Legacy)]);
}

#[test]
fn driver_display() {
    assert_eq!(Driver::IoUring.to_string(), "io_uring");
    assert_eq!(Driver::Legacy.to_string(), "legacy");
}
