//! SIGTERM (handled on the signal thread) triggers shutdown on every shard: the
//! mailbox loops end (`recv` returns None) and join returns. Its own test binary,
//! since it signals the whole process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use madbase_shards::{Runtime, RuntimeConfig};

#[test]
fn sigterm_shuts_every_shard_down() {
    let stopped = Arc::new(AtomicUsize::new(0));
    let st = stopped.clone();
    let rt = Runtime::start::<u32, _, _>(
        RuntimeConfig {
            shards: 2,
            listen: None,
            handle_signals: true,
            blocking_threads: 1,
            ..RuntimeConfig::default()
        },
        move |shard| {
            let st = st.clone();
            async move {
                shard.run_mailbox(|_env| {}).await;
                assert!(shard.shutdown_signal().is_triggered());
                st.fetch_add(1, Ordering::SeqCst);
            }
        },
    )
    .expect("start");
    // SAFETY: sending a signal to our own process; handlers are installed.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
    rt.join().expect("join");
    assert_eq!(stopped.load(Ordering::SeqCst), 2);
}
