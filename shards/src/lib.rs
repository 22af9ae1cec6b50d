//! `madbase-shards`: MadBase's thread-per-core runtime. It knows nothing about
//! Supabase or HTTP.
//!
//! What it owns:
//! - **Shards** ([`runtime`]): one OS thread per shard, pinned to a core, each with
//!   its own monoio runtime — io_uring preferred, the legacy (epoll) driver as the
//!   fallback — reported as [`Driver`].
//! - **Listeners** ([`listener`]): one `SO_REUSEPORT` listener per shard on one
//!   address, bound before the threads start; [`Shard::serve`] runs the accept loop.
//! - **Messaging** ([`mesh`], [`doorbell`]): bounded SPSC rings in two lanes — per
//!   ordered shard pair a control ring ([`Shard::send_control`], always received
//!   first) and a data ring ([`Shard::send_to`]), plus an injector→shard data ring —
//!   each shard woken by one doorbell its reactor awaits. [`Shard::deliver_to_all`]
//!   reaches every shard without letting one full ring hold up the others.
//! - **Blocking pool** ([`pool`]): bounded threads and queue for CPU-heavy work.
//! - **Shutdown** ([`local`], [`serve`]): SIGINT/SIGTERM or
//!   [`RuntimeHandle::shutdown`] fire every shard's [`ShutdownSignal`]; `serve`
//!   stops accepting and drains connections within the grace period.
//!
//! Shared invariants: nothing a shard does on its hot path takes a lock shared with
//! another shard; every queue is bounded and full queues answer with an error at
//! once; a shard waits for room only in [`Shard::deliver_to_all`], on a timer, never
//! spinning (the injector's `send_blocking` / `broadcast_blocking` spin, yield, then
//! sleep, on the injector's own thread, never on a shard); no in-flight io_uring
//! operation is ever dropped by this crate (the accept is cancelled through monoio's
//! `Canceller`, the doorbell task exits only after a completed read).
//!
//! # Example (the binary's `main`)
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use madbase_shards::{Lane, Runtime, RuntimeConfig, Source};
//! use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
//!
//! enum Msg { Changes(Arc<Vec<u8>>), Presence(u64) }
//! impl Clone for Msg {
//!     fn clone(&self) -> Self {
//!         match self { Msg::Changes(b) => Msg::Changes(b.clone()), Msg::Presence(p) => Msg::Presence(*p) }
//!     }
//! }
//!
//! let config = RuntimeConfig { listen: Some("127.0.0.1:54321".parse().unwrap()), ..Default::default() };
//! let mut rt = Runtime::start(config, |shard| async move {
//!     // Mailbox: messages from other shards and from the injector, control lane first.
//!     let mb = shard.clone();
//!     monoio::spawn(async move {
//!         mb.run_mailbox(|env| match (env.from, env.msg) {
//!             (Source::Injector, Msg::Changes(_batch)) => { /* fan out to subscribers */ }
//!             (Source::Shard(_from), Msg::Presence(_p)) => { /* ... */ }
//!             _ => {}
//!         }).await;
//!     });
//!     // Control: tell every other shard we are here. The control lane never waits
//!     // behind bulk data, and a full ring is retried on a timer without holding up
//!     // the other shards.
//!     let ctl = shard.clone();
//!     monoio::spawn(async move {
//!         let hello = Msg::Presence(ctl.id() as u64);
//!         let delivery = ctl.deliver_to_all(|| hello.clone(), Lane::Control, Duration::from_millis(10)).await;
//!         if !delivery.is_complete() { tracing::warn!(?delivery, "some shards missed it"); }
//!     });
//!     // Serve: one local task per connection.
//!     let s = shard.clone();
//!     let report = shard.serve(move |mut stream, _peer| {
//!         let shutdown = s.shutdown_signal();
//!         async move {
//!             let buf = vec![0u8; 4096];
//!             let (res, _buf) = stream.read(buf).await;
//!             if res.is_ok() {
//!                 let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()).await;
//!             }
//!             if shutdown.is_triggered() { /* close keep-alive after this request */ }
//!         }
//!     }).await;
//!     tracing::info!(?report, "shard done");
//! }).expect("start");
//! println!("listening on {:?}, drivers {:?}", rt.local_addr(), rt.drivers());
//!
//! // The replication core: one dedicated thread owns the injector.
//! let mut injector = rt.take_injector().expect("first take");
//! std::thread::spawn(move || {
//!     let batch = Msg::Changes(Arc::new(vec![1, 2, 3]));
//!     let missed = injector.broadcast_blocking(&batch); // waits while a ring is full
//!     assert!(missed.is_empty());
//! });
//!
//! // SIGINT/SIGTERM trigger shutdown; rt.shutdown() does the same from code.
//! rt.join().expect("shards");
//! ```

pub mod config;
pub mod doorbell;
pub mod listener;
pub mod local;
pub mod mesh;
pub mod pool;
pub mod runtime;
pub mod serve;

pub use config::{ConfigError, RuntimeConfig};
pub use local::{ShutdownSignal, ShutdownTrigger};
pub use mesh::{Delivery, Envelope, Injector, Lane, RingDepth, SendError, Source};
pub use pool::{BlockingJob, BlockingPool, JobError, SpawnError};
pub use runtime::{Driver, JoinError, Runtime, RuntimeHandle, Shard, ShardError, StartError};
pub use serve::{ServeError, ServeReport, FORCE_CLOSE_WAIT};
