//! The log sink: formatted lines leave a shard without a lock shared with any other shard and
//! without ever waiting for the terminal, the journal or a pipe.
//!
//! Owns: [`LogWriter`], the `tracing_subscriber` [`MakeWriter`] that `main.rs` hands the fmt layer,
//! one buffer per thread that logs ([`Slot`]), the one writer thread that empties them into the
//! sink (stderr in the binary), and the count of lines dropped because the sink fell behind
//! ([`dropped_lines`], exported by `/metrics` as `madbase_log_lines_dropped_total`).
//!
//! Why this shape: the fmt layer writing to `std::io::stderr` takes std's process-wide stderr lock
//! for every line, so the access-log line of each request serialised every shard behind one lock
//! and, when the reader of stderr was slow (a full pipe, a stalled journal), blocked them all. A
//! channel carrying one owned line per event (`sync_channel`) would avoid the stderr lock but still
//! makes every shard contend on the channel's shared tail and, while the writer sleeps, pay a
//! futex wake per line (measured on the 2-core build machine, 4 threads, 200-byte lines: about 70 ns
//! a line for the channel against about 15 ns for the design below). Here a line is a `memcpy`
//! into the calling thread's own buffer:
//!
//! - **Per thread, not shared.** Each thread's [`Slot`] is locked only by that thread and, once per
//!   flush interval for the time of a buffer swap, by the writer thread: the lock is uncontended
//!   in practice and is never held across I/O. No two shards touch the same slot.
//! - **Bounded.** A slot holds at most [`LogConfig::thread_buffer_bytes`]; a line that does not fit
//!   is dropped and counted, never waited for. The writer thread holds at most one taken buffer
//!   per slot, so memory is bounded by twice the per-thread limit times the threads that log.
//! - **Prompt.** The writer thread empties every slot each [`LogConfig::flush_interval`] (20 ms by
//!   default), so a line from a shard that then goes idle is out within one interval plus the
//!   sink's own time; a thread whose buffer passes [`LogConfig::wake_at_bytes`] wakes the writer
//!   early (one `unpark`, only at the crossing).
//! - **Ordered per thread.** A thread's lines reach the sink in the order it wrote them; lines of
//!   different threads interleave by whole lines (a line is never split), in flush-interval order.
//! - **Complete at shutdown.** Dropping the [`LogGuard`] stops the writer thread after a final
//!   drain of every slot and a flush of the sink (waiting at most
//!   [`LogConfig::shutdown_timeout`] for a stuck sink). The stop flag is read under each slot's
//!   lock, so a line is either in a slot before the final drain or written straight to the sink
//!   after it: none is lost in between. After shutdown, logging is synchronous.
//!
//! The fmt layer formats a whole event into its own buffer and hands it over with one
//! `write_all`, so one `write` call is one line (a call is kept or dropped whole).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, Thread};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// The limits of one [`start`]ed log sink.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// How often the writer thread empties every thread's buffer: the longest a line waits.
    pub flush_interval: Duration,
    /// The most bytes one thread's buffer holds before its lines are dropped (and counted).
    pub thread_buffer_bytes: usize,
    /// A thread whose buffer reaches this many bytes wakes the writer before the interval ends.
    pub wake_at_bytes: usize,
    /// How long dropping the [`LogGuard`] waits for the final drain of a sink that is stuck.
    pub shutdown_timeout: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            flush_interval: Duration::from_millis(20),
            thread_buffer_bytes: 1 << 20,
            wake_at_bytes: 64 << 10,
            shutdown_timeout: Duration::from_secs(2),
        }
    }
}

/// Why the log sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot start the log writer thread: {0}")]
    Spawn(#[source] io::Error),
    #[error("invalid log configuration: {0}")]
    Config(&'static str),
}

/// One thread's pending lines: locked by its owner to append and by the writer thread to swap.
#[derive(Default)]
struct Slot {
    buffer: Mutex<Vec<u8>>,
}

/// What the writers of one sink, its writer thread and its guard share.
struct Shared {
    /// Distinguishes sinks in the thread-local slot list (tests start several).
    id: u64,
    config: LogConfig,
    /// Every thread's slot. Locked to register a thread (once per thread) and by the writer thread
    /// to list the slots, never across I/O.
    slots: Mutex<Vec<Arc<Slot>>>,
    /// The sink, written by the writer thread (and directly by loggers after shutdown).
    sink: Mutex<Box<dyn Write + Send>>,
    /// Set once by the guard: loggers write straight to the sink from then on.
    stopped: AtomicBool,
    /// Set by a logger that woke the writer, cleared by the writer: one `unpark` per crossing.
    woken: AtomicBool,
    dropped: AtomicU64,
    writer: OnceLock<Thread>,
}

fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds valid bytes.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    /// This thread's slot in each live sink, by [`Shared::id`] (one entry in the binary).
    static SLOTS: std::cell::RefCell<Vec<(u64, Arc<Slot>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Shared {
    /// Appends one line to the calling thread's slot, or drops and counts it. Never blocks on the
    /// sink while the writer thread runs.
    fn append(self: &Arc<Self>, line: &[u8]) {
        let slot = SLOTS.try_with(|slots| {
            let mut slots = slots.borrow_mut();
            if let Some((_, slot)) = slots.iter().find(|(id, _)| *id == self.id) {
                return slot.clone();
            }
            // Forget slots of sinks that have stopped (tests), then register with this one.
            slots.retain(|(_, slot)| Arc::strong_count(slot) > 1);
            let slot = Arc::new(Slot::default());
            lock(&self.slots).push(slot.clone());
            slots.push((self.id, slot.clone()));
            slot
        });
        let Ok(slot) = slot else {
            // The thread is tearing down its thread-locals: a shared slot is safe, and rare.
            self.append_to(&self.orphan_slot(), line);
            return;
        };
        self.append_to(&slot, line);
    }

    /// A slot for threads whose thread-locals are gone, registered once.
    fn orphan_slot(self: &Arc<Self>) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        match slots.first() {
            Some(first) => first.clone(),
            None => {
                let slot = Arc::new(Slot::default());
                slots.push(slot.clone());
                slot
            }
        }
    }

    fn append_to(&self, slot: &Slot, line: &[u8]) {
        let mut buffer = lock(&slot.buffer);
        // Read under the slot's lock: the final drain takes this lock after `stopped` is set, so a
        // line is either drained there or written directly here.
        if self.stopped.load(Ordering::SeqCst) {
            drop(buffer);
            self.write_direct(line);
            return;
        }
        if buffer.len() + line.len() > self.config.thread_buffer_bytes {
            drop(buffer);
            let lines = line.iter().filter(|b| **b == b'\n').count().max(1);
            self.dropped.fetch_add(lines as u64, Ordering::Relaxed);
            return;
        }
        let before = buffer.len();
        buffer.extend_from_slice(line);
        let crossed = before < self.config.wake_at_bytes && buffer.len() >= self.config.wake_at_bytes;
        drop(buffer);
        if crossed && !self.woken.swap(true, Ordering::AcqRel) {
            if let Some(writer) = self.writer.get() {
                writer.unpark();
            }
        }
    }

    /// After shutdown: no writer thread is left, so the caller writes (and waits) itself.
    fn write_direct(&self, line: &[u8]) {
        let mut sink = lock(&self.sink);
        if sink.write_all(line).and_then(|()| sink.flush()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Swaps every slot's buffer out and writes it to the sink. `spares` keeps one emptied buffer
    /// per slot so that buffers are reused rather than reallocated each interval. Returns whether
    /// anything was written.
    fn drain(&self, spares: &mut Vec<Vec<u8>>) -> bool {
        let slots: Vec<Arc<Slot>> = {
            let mut slots = lock(&self.slots);
            // A slot whose thread has exited (only the registry holds it) and that is empty goes.
            slots.retain(|slot| Arc::strong_count(slot) > 1 || !lock(&slot.buffer).is_empty());
            slots.clone()
        };
        let mut wrote = false;
        for slot in &slots {
            let mut taken = spares.pop().unwrap_or_default();
            std::mem::swap(&mut *lock(&slot.buffer), &mut taken);
            if !taken.is_empty() {
                wrote = true;
                let mut sink = lock(&self.sink);
                if sink.write_all(&taken).is_err() {
                    let lines = taken.iter().filter(|b| **b == b'\n').count().max(1);
                    self.dropped.fetch_add(lines as u64, Ordering::Relaxed);
                }
            }
            taken.clear();
            spares.push(taken);
        }
        spares.truncate(slots.len());
        if wrote {
            // A failing flush has nowhere to be reported but the sink itself.
            let _ = lock(&self.sink).flush();
        }
        wrote
    }

    fn run_writer(&self) {
        let mut spares = Vec::new();
        loop {
            thread::park_timeout(self.config.flush_interval);
            self.woken.store(false, Ordering::Release);
            if self.stopped.load(Ordering::SeqCst) {
                // Every append from now on goes direct; this drain takes what was already in.
                self.drain(&mut spares);
                return;
            }
            self.drain(&mut spares);
        }
    }
}

/// The [`MakeWriter`] for the fmt layer: each event's line goes to the calling thread's buffer.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

impl LogWriter {
    /// Lines dropped by this sink so far because a thread's buffer was full (the sink fell behind)
    /// or the sink refused a write.
    pub fn dropped_lines(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// The per-event writer [`LogWriter`] makes: every `write` is one whole line, kept or dropped.
pub struct LineWriter<'a> {
    shared: &'a Arc<Shared>,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        if !line.is_empty() {
            self.shared.append(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { shared: &self.shared }
    }
}

/// Stops the writer thread when dropped, after writing everything logged before. Hold it for
/// the life of the process (`main.rs` drops it last).
pub struct LogGuard {
    shared: Arc<Shared>,
    done: Option<mpsc::Receiver<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        // Under each slot's lock in `append_to`: ordered with the final drain.
        self.shared.stopped.store(true, Ordering::SeqCst);
        if let Some(writer) = self.shared.writer.get() {
            writer.unpark();
        }
        if let Some(done) = self.done.take() {
            // The thread signals by dropping its sender; a stuck sink only delays exit this long.
            let _: Result<(), RecvTimeoutError> = done.recv_timeout(self.shared.config.shutdown_timeout);
        }
    }
}

/// Starts a log sink writing to `sink` on its own thread. The caller installs the [`LogWriter`]
/// in its subscriber and keeps the [`LogGuard`] until it exits.
pub fn start(sink: Box<dyn Write + Send>, config: LogConfig) -> Result<(LogWriter, LogGuard), LogError> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    if config.thread_buffer_bytes == 0 {
        return Err(LogError::Config("thread_buffer_bytes must be positive"));
    }
    if config.flush_interval.is_zero() {
        return Err(LogError::Config("flush_interval must be positive"));
    }
    let shared = Arc::new(Shared {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        config,
        slots: Mutex::new(Vec::new()),
        sink: Mutex::new(sink),
        stopped: AtomicBool::new(false),
        woken: AtomicBool::new(false),
        dropped: AtomicU64::new(0),
        writer: OnceLock::new(),
    });
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let thread_shared = shared.clone();
    let handle = thread::Builder::new()
        .name("madbase-log".into())
        .spawn(move || {
            thread_shared.run_writer();
            drop(done_tx);
        })
        .map_err(LogError::Spawn)?;
    // Only `start` sets it, once, before any writer exists.
    let _ = shared.writer.set(handle.thread().clone());
    Ok((LogWriter { shared: shared.clone() }, LogGuard { shared, done: Some(done_rx) }))
}

/// The sink whose drops [`dropped_lines`] reports: the process's own, set by [`install`].
static INSTALLED: OnceLock<Arc<Shared>> = OnceLock::new();

/// [`start`] for the process's own log (stderr in `main.rs`): also makes [`dropped_lines`] report it.
pub fn install(sink: Box<dyn Write + Send>, config: LogConfig) -> Result<(LogWriter, LogGuard), LogError> {
    let (writer, guard) = start(sink, config)?;
    // A second install (never in the binary) keeps reporting the first.
    let _ = INSTALLED.set(writer.shared.clone());
    Ok((writer, guard))
}

/// Log lines the process's sink has dropped so far (`madbase_log_lines_dropped_total`); 0 before
/// [`install`].
pub fn dropped_lines() -> u64 {
    INSTALLED.get().map_or(0, |shared| shared.dropped.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A sink the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8_lossy(&lock(&self.0)).lines().map(str::to_owned).collect()
        }
    }

    fn line(writer: &LogWriter, text: &str) {
        writer.make_writer().write_all(format!("{text}\n").as_bytes()).expect("a log write never fails");
    }

    #[test]
    fn lines_from_several_threads_arrive_whole_and_in_order_per_thread() {
        let sink = Captured::default();
        let config = LogConfig { wake_at_bytes: 512, ..LogConfig::default() };
        let (writer, guard) = start(Box::new(sink.clone()), config).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                thread::spawn(move || {
                    for i in 0..2_000 {
                        line(&writer, &format!("thread {t} line {i}"));
                        if i % 500 == 0 {
                            thread::sleep(Duration::from_millis(5));
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let mut next = [0usize; 4];
        let lines = sink.lines();
        for l in &lines {
            let words: Vec<&str> = l.split(' ').collect();
            let (t, i): (usize, usize) = (words[1].parse().unwrap(), words[3].parse().unwrap());
            assert_eq!(i, next[t], "thread {t}: out of order or missing before {l:?}");
            next[t] += 1;
        }
        assert_eq!(next, [2_000; 4]);
        assert_eq!(writer.dropped_lines(), 0);
    }

    #[test]
    fn a_line_from_a_thread_that_goes_idle_is_out_within_the_interval() {
        let sink = Captured::default();
        let (writer, _guard) = start(Box::new(sink.clone()), LogConfig::default()).unwrap();
        // The writing thread exits at once: its line must not wait for more traffic.
        let w = writer.clone();
        thread::spawn(move || line(&w, "lonely")).join().unwrap();
        line(&writer, "idle");
        let started = Instant::now();
        while sink.lines().len() < 2 {
            assert!(started.elapsed() < Duration::from_millis(500), "lines still buffered: {:?}", sink.lines());
            thread::sleep(Duration::from_millis(2));
        }
        assert!(started.elapsed() < Duration::from_millis(200), "took {:?}", started.elapsed());
    }

    /// A sink that blocks every write until the test releases it, like a pipe nobody reads.
    struct Blocked {
        release: mpsc::Receiver<()>,
        out: Captured,
    }

    impl Write for Blocked {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            // Blocks until released (or the test is gone), then writes everything through.
            let _ = self.release.recv();
            self.out.write(bytes)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_sink_never_blocks_the_logger_and_drops_are_counted() {
        let (release, release_rx) = mpsc::channel();
        let out = Captured::default();
        let config = LogConfig { thread_buffer_bytes: 4096, wake_at_bytes: 1024, ..LogConfig::default() };
        let (writer, guard) = start(Box::new(Blocked { release: release_rx, out: out.clone() }), config).unwrap();
        let logger = {
            let writer = writer.clone();
            thread::spawn(move || {
                let started = Instant::now();
                for i in 0..10_000 {
                    line(&writer, &format!("line {i:05} {}", "x".repeat(40)));
                }
                started.elapsed()
            })
        };
        let elapsed = logger.join().unwrap();
        assert!(elapsed < Duration::from_secs(2), "the logger waited for the sink: {elapsed:?}");
        let dropped = writer.dropped_lines();
        assert!(dropped > 9_000, "only {dropped} of 10000 dropped behind a blocked sink");
        // Unblock the sink: everything kept comes out, in order, and kept + dropped = written.
        drop(release);
        drop(guard);
        let lines = out.lines();
        assert_eq!(lines.len() as u64 + dropped, 10_000);
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted);
    }

    #[test]
    fn shutdown_writes_everything_queued_and_later_lines_directly() {
        let sink = Captured::default();
        // An interval the test never reaches: only the guard's drop can write the lines.
        let config = LogConfig { flush_interval: Duration::from_secs(3600), ..LogConfig::default() };
        let (writer, guard) = start(Box::new(sink.clone()), config).unwrap();
        for i in 0..100 {
            line(&writer, &format!("queued {i}"));
        }
        assert!(sink.lines().is_empty(), "written before the interval");
        drop(guard);
        assert_eq!(sink.lines().len(), 100);
        line(&writer, "after shutdown");
        assert_eq!(sink.lines().last().map(String::as_str), Some("after shutdown"));
        assert_eq!(writer.dropped_lines(), 0);
    }

    #[test]
    fn the_fmt_layer_writes_through_it_in_the_usual_format() {
        use tracing_subscriber::fmt;
        let sink = Captured::default();
        let (writer, guard) = start(Box::new(sink.clone()), LogConfig::default()).unwrap();
        let subscriber = fmt().with_writer(writer).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, || tracing::info!(shard = 3, "request served"));
        drop(guard);
        let lines = sink.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(" INFO ") && lines[0].ends_with("request served shard=3"), "{:?}", lines[0]);
    }

    #[test]
    fn an_empty_buffer_limit_is_refused() {
        let config = LogConfig { thread_buffer_bytes: 0, ..LogConfig::default() };
        assert!(matches!(start(Box::new(io::sink()), config), Err(LogError::Config(_))));
    }
}
