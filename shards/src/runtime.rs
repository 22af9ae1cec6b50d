//! Starting, running and joining the shards.
//!
//! Owns: [`Runtime::start`] (validates config, binds listeners, builds the ring mesh,
//! doorbells and blocking pool, spawns one pinned thread per shard with its own
//! monoio runtime, installs the signal thread — each step its own function, the
//! thread bring-up in `Launch`), [`Shard`] (a shard's handle on its own thread: its
//! mailbox's send, receive and deliver-to-all, its listener, its shutdown signal)
//! and [`RuntimeHandle`] (the `Send` handle the caller keeps).
//!
//! Invariants:
//! - Everything that can fail synchronously (config, bind, pool threads, signal
//!   handlers, thread spawn, building each shard's reactor) fails inside `start`,
//!   which then stops whatever it had started. No shard runs `shard_main` until
//!   every shard has built its reactor.
//! - Each shard tries io_uring first (unless `force_legacy_driver` or
//!   `monoio::utils::detect_uring()` says no) and falls back to the legacy (epoll)
//!   driver if building it fails (the ring asks for cooperative task running, see
//!   `uring_runtime`); the result is logged (`shard`, `driver`, `core`)
//!   and reported by `RuntimeHandle::drivers` / `Shard::driver`. Timers are enabled.
//! - The shard's future is built on its own thread, so it may be `!Send`.
//! - A shard never blocks its thread on another shard: sends answer at once, and
//!   `Shard::deliver_to_all` waits for full rings on a timer (not a spin), ending at
//!   shutdown.
//! - When `shard_main` returns, the shard stops its doorbell task (after a completed
//!   read, never dropping an in-flight op) and its runtime ends.
//! - A shard thread that panics triggers shutdown of all shards (a dead shard's share
//!   of the port would otherwise keep accepting nothing) and `join` reports it.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use rtrb::Producer;

use crate::config::{ConfigError, RuntimeConfig};
use crate::doorbell::{run_doorbell, BellListener, Doorbell};
use crate::local::{Global, ShutdownSignal, ShutdownTrigger, SignalState, WaitList};
use crate::mesh::{Delivery, Envelope, InboxRings, Injector, Lane, Lanes, Mailbox, Mesh, RingDepth, SendError};
use crate::pool::{BlockingPool, PoolWorkers};
use crate::serve::{Conns, ServeError, ServeParams, ServeReport};

/// The I/O driver a shard runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Driver {
    /// io_uring.
    IoUring,
    /// monoio's legacy driver (epoll via mio).
    Legacy,
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::IoUring => "io_uring",
            Driver::Legacy => "legacy",
        })
    }
}

/// Why `Runtime::start` failed. Nothing is left running when it returns this.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A config value cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Binding or listening on the address failed (e.g. the port is in use).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Creating a doorbell socket pair failed.
    #[error("cannot create the doorbell of shard {shard}: {source}")]
    Doorbell {
        /// The shard.
        shard: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Spawning a thread (shard, blocking worker or signal thread) failed.
    #[error("cannot spawn thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Neither driver could be built on a shard.
    #[error("shard {shard}: cannot build a reactor: {source}")]
    Reactor {
        /// The shard.
        shard: usize,
        /// The OS error of the legacy driver (io_uring failures are logged).
        #[source]
        source: std::io::Error,
    },
    /// Installing the SIGINT/SIGTERM handlers failed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// How one shard ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The shard thread panicked (in `shard_main` or the runtime).
    #[error("shard {shard} panicked: {message}")]
    Panicked {
        /// The shard.
        shard: usize,
        /// The panic payload, when it was a string.
        message: String,
    },
}

/// `RuntimeHandle::join` found failed shards.
#[derive(Debug, thiserror::Error)]
#[error("{} shard(s) failed: {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct JoinError(pub Vec<ShardError>);

/// Entry point.
pub struct Runtime;

/// What one shard thread is handed at start.
struct ShardSeed<M> {
    id: usize,
    core: Option<usize>,
    listener: Option<std::net::TcpListener>,
    outboxes: Vec<Option<Lanes<Producer<M>>>>,
    inboxes: Lanes<InboxRings<M>>,
    bell_rx: StdUnixStream,
}

/// Settings every shard shares.
struct Common {
    count: usize,
    local_addr: Option<SocketAddr>,
    config: RuntimeConfig,
    global: Arc<Global>,
    pool: BlockingPool,
}

type Ready = (usize, Result<Driver, std::io::Error>);

/// Floor of `Shard::deliver_to_all`'s retry period, so a zero period cannot turn the
/// retry into a busy loop.
const MIN_RETRY_EVERY: Duration = Duration::from_millis(1);

impl Runtime {
    /// Starts `config.shards` shards and runs `shard_main(shard)` on each, on the
    /// shard's own thread. Returns once every shard has its reactor; `shard_main`
    /// runs from then on. See the crate docs for an example.
    pub fn start<M, F, Fut>(config: RuntimeConfig, shard_main: F) -> Result<RuntimeHandle<M>, StartError>
    where
        M: Send + 'static,
        F: Fn(Shard<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        config.validate()?;
        let n = config.shards;
        let (listeners, local_addr) = bind_listeners(&config)?;
        let (doorbells, bell_rxs) = create_doorbells(n)?;
        let global = Arc::new(Global { shutdown: AtomicBool::new(false), doorbells: doorbells.clone() });
        let trigger = ShutdownTrigger { global: global.clone() };
        let (pool, workers) = BlockingPool::start(config.blocking_threads, config.blocking_queue, config.blocking_nice)
            .map_err(|source| StartError::Thread { name: "blocking".into(), source })?;

        let capacity = Lanes { control: config.control_ring_capacity, data: config.ring_capacity };
        let Mesh { outboxes, inboxes, injector } = Mesh::<M>::new(n, capacity);
        let injector = Injector::new(injector, doorbells, trigger.clone());
        let seeds = shard_seeds(&config, listeners, outboxes, inboxes, bell_rxs);
        let common = Arc::new(Common { count: n, local_addr, config: config.clone(), global, pool: pool.clone() });

        let mut launch = Launch::spawn(seeds, common, shard_main);
        let mut signals = None;
        if launch.failure.is_none() && config.handle_signals {
            match start_signal_thread(trigger.clone()) {
                Ok(s) => signals = Some(s),
                Err(e) => launch.failure = Some(e),
            }
        }
        if launch.failure.is_none() && !launch.all_ready() {
            launch.failure = Some(StartError::Thread {
                name: config.thread_name.clone(),
                source: std::io::Error::other("shard thread exited during start"),
            });
        }
        let (threads, drivers) = match launch.finish() {
            Ok(running) => running,
            Err(err) => {
                workers.close(&pool);
                return Err(err);
            }
        };
        Ok(RuntimeHandle {
            threads,
            drivers,
            local_addr,
            injector: Some(injector),
            trigger,
            pool,
            workers: Some(workers),
            signals,
        })
    }
}

/// One `SO_REUSEPORT` listener per shard and the address they share (the real port
/// when configured with 0); all `None` when `config.listen` is `None`.
fn bind_listeners(
    config: &RuntimeConfig,
) -> Result<(Vec<Option<std::net::TcpListener>>, Option<SocketAddr>), StartError> {
    let n = config.shards;
    match config.listen {
        Some(addr) => {
            let (ls, bound) = crate::listener::bind_all(addr, n, config.backlog)
                .map_err(|source| StartError::Bind { addr, source })?;
            Ok((ls.into_iter().map(Some).collect(), Some(bound)))
        }
        None => Ok(((0..n).map(|_| None).collect(), None)),
    }
}

/// One doorbell per shard: the ringing sides (shared by every producer) and the
/// sockets each shard thread will read.
fn create_doorbells(n: usize) -> Result<(Vec<Arc<Doorbell>>, Vec<StdUnixStream>), StartError> {
    let mut doorbells = Vec::with_capacity(n);
    let mut bell_rxs = Vec::with_capacity(n);
    for shard in 0..n {
        let (bell, rx) = Doorbell::new(shard).map_err(|source| StartError::Doorbell { shard, source })?;
        doorbells.push(Arc::new(bell));
        bell_rxs.push(rx);
    }
    Ok((doorbells, bell_rxs))
}

/// Deals listeners, rings, doorbell sockets and cores out to the shards, by id.
fn shard_seeds<M>(
    config: &RuntimeConfig,
    listeners: Vec<Option<std::net::TcpListener>>,
    outboxes: Vec<Vec<Option<Lanes<Producer<M>>>>>,
    inboxes: Vec<Lanes<InboxRings<M>>>,
    bell_rxs: Vec<StdUnixStream>,
) -> Vec<ShardSeed<M>> {
    let cores = if config.pin_cores { allowed_cpus() } else { Vec::new() };
    listeners
        .into_iter()
        .zip(outboxes)
        .zip(inboxes)
        .zip(bell_rxs)
        .enumerate()
        .map(|(id, (((listener, outboxes), inboxes), bell_rx))| ShardSeed {
            id,
            core: (!cores.is_empty()).then(|| cores[id % cores.len()]),
            listener,
            outboxes,
            inboxes,
            bell_rx,
        })
        .collect()
}

/// The shard threads while `start` brings them up. Each builds its reactor,
/// reports it on the ready channel, then waits on its go channel: `true` runs
/// `shard_main`, `false` (or a dropped sender) makes it return at once.
struct Launch {
    threads: Vec<JoinHandle<()>>,
    gos: Vec<mpsc::Sender<bool>>,
    /// Driver per shard id; valid for the shards that reported one.
    drivers: Vec<Driver>,
    /// Shards that reported a working reactor.
    reported: usize,
    /// The first thing that went wrong; `finish` then stops every thread.
    failure: Option<StartError>,
}

impl Launch {
    /// Spawns one thread per seed (stopping at the first spawn failure) and waits
    /// until every spawned thread has reported its reactor or died.
    fn spawn<M, F, Fut>(seeds: Vec<ShardSeed<M>>, common: Arc<Common>, shard_main: F) -> Launch
    where
        M: Send + 'static,
        F: Fn(Shard<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let n = seeds.len();
        let shard_main = Arc::new(shard_main);
        let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
        let mut launch = Launch {
            threads: Vec::with_capacity(n),
            gos: Vec::with_capacity(n),
            drivers: vec![Driver::Legacy; n],
            reported: 0,
            failure: None,
        };
        for seed in seeds {
            let name = format!("{}-{}", common.config.thread_name, seed.id);
            let (go_tx, go_rx) = mpsc::channel::<bool>();
            let (common, main, ready) = (common.clone(), shard_main.clone(), ready_tx.clone());
            let spawned = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || shard_thread(seed, common, main, ready, go_rx));
            match spawned {
                Ok(h) => {
                    launch.threads.push(h);
                    launch.gos.push(go_tx);
                }
                Err(source) => {
                    launch.failure = Some(StartError::Thread { name, source });
                    break;
                }
            }
        }
        // Only the shard threads hold senders now, so a thread that dies before
        // reporting shows up as a disconnect instead of a hang.
        drop(ready_tx);
        launch.await_reactors(&ready_rx);
        launch
    }

    /// Collects one report per spawned thread; a reactor failure is kept unless an
    /// earlier failure (a spawn) is already recorded.
    fn await_reactors(&mut self, ready: &mpsc::Receiver<Ready>) {
        for _ in 0..self.threads.len() {
            match ready.recv() {
                Ok((shard, Ok(d))) => {
                    self.drivers[shard] = d;
                    self.reported += 1;
                }
                Ok((shard, Err(source))) => {
                    self.failure.get_or_insert(StartError::Reactor { shard, source });
                }
                // A shard thread died before reporting (it panicked); join says why.
                Err(_) => break,
            }
        }
    }

    /// Whether every shard has a thread and a working reactor.
    fn all_ready(&self) -> bool {
        let n = self.drivers.len();
        self.threads.len() == n && self.reported == n
    }

    /// Without a failure, lets every shard run `shard_main` and hands back the
    /// threads and drivers. With one, tells every shard to quit, joins them and
    /// returns the failure.
    fn finish(self) -> Result<(Vec<JoinHandle<()>>, Vec<Driver>), StartError> {
        let go = self.failure.is_none();
        for tx in &self.gos {
            let _ = tx.send(go);
        }
        match self.failure {
            None => Ok((self.threads, self.drivers)),
            Some(err) => {
                for h in self.threads {
                    let _ = h.join();
                }
                Err(err)
            }
        }
    }
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&i| libc::CPU_ISSET(i, &set)).collect()
    }
}

struct SignalThread {
    handle: signal_hook::iterator::Handle,
    thread: JoinHandle<()>,
}

fn start_signal_thread(trigger: ShutdownTrigger) -> Result<SignalThread, StartError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(StartError::Signals)?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                tracing::info!(signal = sig, "signal received; starting graceful shutdown");
                trigger.trigger();
            }
        })
        .map_err(|source| StartError::Thread { name: "signals".into(), source })?;
    Ok(SignalThread { handle, thread })
}

/// Triggers shutdown everywhere if the shard thread unwinds.
struct PanicGuard {
    shard: usize,
    trigger: ShutdownTrigger,
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(shard = self.shard, "shard panicked; shutting every shard down");
            self.trigger.trigger();
        }
    }
}

fn shard_thread<M, F, Fut>(
    seed: ShardSeed<M>,
    common: Arc<Common>,
    main: Arc<F>,
    ready: mpsc::Sender<Ready>,
    go: mpsc::Receiver<bool>,
) where
    M: Send + 'static,
    F: Fn(Shard<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let id = seed.id;
    // Report once, then drop the sender, so `start` sees a disconnect (not a hang)
    // if another shard thread dies before reporting.
    let mut ready = Some(ready);
    let mut report = move |r: Ready| ready.take().is_some_and(|tx| tx.send(r).is_ok());
    let _guard = PanicGuard { shard: id, trigger: ShutdownTrigger { global: common.global.clone() } };
    if let Some(core) = seed.core {
        if let Err(e) = monoio::utils::bind_to_cpu_set([core]) {
            tracing::warn!(shard = id, core, error = %e, "cannot pin shard to core; running unpinned");
        }
    }
    let cfg = &common.config;
    if !cfg.force_legacy_driver && monoio::utils::detect_uring() {
        match uring_runtime(cfg.uring_entries) {
            Ok(mut rt) => {
                if report((id, Ok(Driver::IoUring))) && go.recv() == Ok(true) {
                    rt.block_on(run_shard(seed, Driver::IoUring, common.clone(), main));
                }
                return;
            }
            Err(e) => {
                tracing::warn!(shard = id, error = %e, "io_uring driver failed to build; falling back to legacy");
            }
        }
    }
    match RuntimeBuilder::<LegacyDriver>::new().with_entries(cfg.uring_entries).enable_timer().build() {
        Ok(mut rt) => {
            if report((id, Ok(Driver::Legacy))) && go.recv() == Ok(true) {
                rt.block_on(run_shard(seed, Driver::Legacy, common.clone(), main));
            }
        }
        Err(e) => {
            tracing::error!(shard = id, error = %e, "legacy driver failed to build");
            let _ = report((id, Err(e)));
        }
    }
}

/// The shard's io_uring runtime, set up with `IORING_SETUP_COOP_TASKRUN` (Linux 5.19+): a
/// completion that arrives while the shard runs (a packet from a client on another core) is
/// processed at the shard's next `io_uring_enter`, which its scheduler makes every round,
/// instead of interrupting the shard with an inter-processor interrupt to run it at once. On
/// an older kernel, which refuses the flag, the ring is set up without it.
fn uring_runtime(entries: u32) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<IoUringDriver>>> {
    let mut cooperative = io_uring::IoUring::builder();
    cooperative.setup_coop_taskrun();
    let builder = || RuntimeBuilder::<IoUringDriver>::new().with_entries(entries).enable_timer();
    match builder().uring_builder(cooperative).build() {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => builder().build(),
        built => built,
    }
}

async fn run_shard<M, F, Fut>(seed: ShardSeed<M>, driver: Driver, common: Arc<Common>, main: Arc<F>)
where
    M: Send + 'static,
    F: Fn(Shard<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let id = seed.id;
    tracing::info!(shard = id, driver = %driver, core = ?seed.core, "shard started");
    let bell = common.global.doorbells[id].clone();
    let inner = Rc::new(ShardInner {
        id,
        driver,
        mailbox: Mailbox::new(id, seed.outboxes, seed.inboxes, common.global.doorbells.clone()),
        mail_waiters: WaitList::default(),
        signal: ShutdownSignal {
            state: Rc::new(SignalState {
                fired: Cell::new(false),
                waiters: WaitList::default(),
                global: common.global.clone(),
            }),
        },
        listener: std::cell::RefCell::new(seed.listener),
        conns: Rc::new(Conns::default()),
        closing: Cell::new(false),
        common,
    });
    let bell_task = monoio::spawn(run_doorbell(bell.clone(), seed.bell_rx, inner.clone(), driver == Driver::Legacy));
    main(Shard { inner: inner.clone() }).await;
    inner.closing.set(true);
    bell.ring();
    bell_task.await;
    tracing::info!(shard = id, "shard stopped");
}

struct ShardInner<M> {
    id: usize,
    driver: Driver,
    mailbox: Mailbox<M>,
    mail_waiters: WaitList,
    signal: ShutdownSignal,
    listener: std::cell::RefCell<Option<std::net::TcpListener>>,
    conns: Rc<Conns>,
    closing: Cell<bool>,
    common: Arc<Common>,
}

impl<M> BellListener for ShardInner<M> {
    fn on_ring(&self) {
        self.signal.state.observe();
        self.mail_waiters.wake_all();
    }
    fn closing(&self) -> bool {
        self.closing.get()
    }
}

/// A shard's handle, valid on the shard's own thread (`!Send`; clones share state).
pub struct Shard<M> {
    inner: Rc<ShardInner<M>>,
}

impl<M> Clone for Shard<M> {
    fn clone(&self) -> Self {
        Shard { inner: self.inner.clone() }
    }
}

impl<M: Send + 'static> Shard<M> {
    /// This shard's id, `0..count()`.
    pub fn id(&self) -> usize {
        self.inner.id
    }

    /// Number of shards.
    pub fn count(&self) -> usize {
        self.inner.common.count
    }

    /// The driver this shard runs on.
    pub fn driver(&self) -> Driver {
        self.inner.driver
    }

    /// The address every shard listens on (`None` without a listener).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.common.local_addr
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.common.config
    }

    /// Accepts connections on this shard's listener and runs `handler` for each as a
    /// local task, until shutdown; then drains (see the `serve` module docs) and
    /// returns. Call it once per shard.
    pub async fn serve<H, Fut>(&self, handler: H) -> Result<ServeReport, ServeError>
    where
        H: Fn(monoio::net::TcpStream, SocketAddr) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let listener = self.inner.listener.borrow_mut().take().ok_or(ServeError::NoListener)?;
        let cfg = &self.inner.common.config;
        let params = ServeParams {
            shard: self.inner.id,
            legacy: self.inner.driver == Driver::Legacy,
            grace: cfg.shutdown_grace,
            max_conns: cfg.max_connections_per_shard,
        };
        crate::serve::serve(listener, params, self.inner.conns.clone(), self.inner.signal.clone(), handler).await
    }

    /// Connections this shard is serving now.
    pub fn connections(&self) -> usize {
        self.inner.conns.active()
    }

    /// This shard's shutdown signal.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.inner.signal.clone()
    }

    /// Starts shutdown on every shard.
    pub fn request_shutdown(&self) {
        self.inner.signal.trigger_handle().trigger();
    }

    /// Sends `msg` to shard `to` on the data lane without waiting. `Full` gives the
    /// message back; the caller picks the policy (drop, fail the request, or retry
    /// after a timer, as [`Shard::deliver_to_all`] does).
    /// Do not retry in a tight yield loop: a spinning shard burns the core the
    /// consumer may need (measured: on 2 cores that turns a 1 s transfer into minutes).
    pub fn send_to(&self, to: usize, msg: M) -> Result<(), SendError<M>> {
        self.inner.mailbox.send(Lane::Data, to, msg)
    }

    /// Sends `msg` to shard `to` on the control lane without waiting: its own ring
    /// (capacity `RuntimeConfig::control_ring_capacity`), so a full data ring never
    /// refuses it, and the receiver takes it before any waiting data message. Same
    /// errors and retry advice as [`Shard::send_to`]. For schema swaps, pings and
    /// snapshots, not bulk data (a flood of control messages would starve data).
    pub fn send_control(&self, to: usize, msg: M) -> Result<(), SendError<M>> {
        self.inner.mailbox.send(Lane::Control, to, msg)
    }

    /// Sends a clone of `msg` to every other shard on the data lane without
    /// waiting; returns the shards whose ring was full or closed. To wait until
    /// every shard has it, use [`Shard::deliver_to_all`].
    pub fn broadcast(&self, msg: &M) -> Vec<usize>
    where
        M: Clone,
    {
        (0..self.count()).filter(|&to| to != self.id()).filter(|&to| self.send_to(to, msg.clone()).is_err()).collect()
    }

    /// Gives a clone of `msg` to every other shard on `lane`, and never lets one full
    /// ring hold up the others: every target is tried at once, and only the targets
    /// whose ring was full are retried, every `retry_every` (at least 1 ms), each on
    /// its own: it takes the message at the first retry after its ring has room. A
    /// target that has exited is given up.
    /// Returns when every target has the message or has exited, or once shutdown has
    /// started (the targets still full are then reported `undelivered`).
    ///
    /// Retries sleep on a monoio timer: no ring tells its producer it drained, and
    /// spinning or yielding would take the core the slow consumer needs.
    ///
    /// `make` makes each target's copy of the message (a message need not be `Clone`:
    /// one carrying a reply channel makes a fresh channel per target).
    pub async fn deliver_to_all(&self, make: impl Fn() -> M, lane: Lane, retry_every: Duration) -> Delivery {
        let retry_every = retry_every.max(MIN_RETRY_EVERY);
        let mut delivery = Delivery::default();
        // Each target keeps its own copy: a `Full` hands it back for the next try.
        let mut pending: Vec<(usize, M)> =
            (0..self.count()).filter(|&to| to != self.id()).map(|to| (to, make())).collect();
        loop {
            pending = self.try_deliver(lane, pending, &mut delivery);
            if pending.is_empty() {
                return delivery;
            }
            let signal = &self.inner.signal;
            if signal.is_triggered() {
                delivery.undelivered = pending.into_iter().map(|(to, _)| to).collect();
                return delivery;
            }
            monoio::select! {
                _ = monoio::time::sleep(retry_every) => {}
                _ = signal.triggered() => {}
            }
        }
    }

    /// One non-waiting try per pending target; records who took it or exited and
    /// returns the targets whose ring was full, with their message back.
    fn try_deliver(&self, lane: Lane, pending: Vec<(usize, M)>, delivery: &mut Delivery) -> Vec<(usize, M)> {
        let mut full = Vec::new();
        for (to, msg) in pending {
            match self.inner.mailbox.send(lane, to, msg) {
                Ok(()) => delivery.delivered.push(to),
                Err(SendError::Full(msg)) => full.push((to, msg)),
                Err(e) => {
                    debug_assert!(matches!(e, SendError::Closed(_)), "shard {to} has no ring: {e}");
                    delivery.closed.push(to);
                }
            }
        }
        full
    }

    /// Takes one waiting message, if any: a control message whenever one is waiting,
    /// else a data message (within a lane, rings are visited round-robin).
    pub fn try_recv(&self) -> Option<Envelope<M>> {
        self.inner.mailbox.try_recv()
    }

    /// Waits for the next message from another shard or the injector, control lane
    /// first (as [`Shard::try_recv`]). Parks on the doorbell (no polling). Returns `None` once shutdown has started and no
    /// message is waiting. Cancel-safe: dropping it loses no message.
    pub async fn recv(&self) -> Option<Envelope<M>> {
        let inner = &self.inner;
        inner
            .mail_waiters
            .wait(|| match inner.mailbox.try_recv() {
                Some(env) => Some(Some(env)),
                None if inner.signal.is_triggered() => Some(None),
                None => None,
            })
            .await
    }

    /// Runs `handler` on every message until `recv` returns `None` (shutdown).
    pub async fn run_mailbox<H: FnMut(Envelope<M>)>(&self, mut handler: H) {
        while let Some(env) = self.recv().await {
            handler(env);
        }
    }

    /// The blocking pool (shared by all shards).
    pub fn blocking(&self) -> &BlockingPool {
        &self.inner.common.pool
    }

    /// Fill level of every ring into this shard, both lanes (`RingDepth::lane`).
    pub fn ring_depths(&self) -> Vec<RingDepth> {
        self.inner.mailbox.depths()
    }
}

/// The caller's handle on a started runtime. `Send`.
pub struct RuntimeHandle<M> {
    threads: Vec<JoinHandle<()>>,
    drivers: Vec<Driver>,
    local_addr: Option<SocketAddr>,
    injector: Option<Injector<M>>,
    trigger: ShutdownTrigger,
    pool: BlockingPool,
    workers: Option<PoolWorkers>,
    signals: Option<SignalThread>,
}

impl<M: Send + 'static> RuntimeHandle<M> {
    /// The address the shards listen on (the real port when configured with 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The driver of each shard, by shard id.
    pub fn drivers(&self) -> &[Driver] {
        &self.drivers
    }

    /// The injector (the replication core's producer). `Some` only the first time.
    pub fn take_injector(&mut self) -> Option<Injector<M>> {
        self.injector.take()
    }

    /// Starts graceful shutdown on every shard (idempotent; returns at once).
    pub fn shutdown(&self) {
        self.trigger.trigger();
    }

    /// A `Send + Sync + Clone` handle that starts shutdown.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    /// The blocking pool.
    pub fn blocking(&self) -> &BlockingPool {
        &self.pool
    }

    /// Waits for every shard thread to end (that is, every `shard_main` to return),
    /// then stops the blocking pool and the signal thread. Errors list the shards
    /// that panicked.
    pub fn join(mut self) -> Result<(), JoinError> {
        let mut failures = Vec::new();
        for (shard, h) in std::mem::take(&mut self.threads).into_iter().enumerate() {
            if let Err(p) = h.join() {
                let message = if let Some(s) = p.downcast_ref::<&str>() {
                    (*s).to_owned()
                } else if let Some(s) = p.downcast_ref::<String>() {
                    s.clone()
                } else {
                    "non-string panic payload".to_owned()
                };
                failures.push(ShardError::Panicked { shard, message });
            }
        }
        if let Some(w) = self.workers.take() {
            w.close(&self.pool);
        }
        if let Some(s) = self.signals.take() {
            s.handle.close();
            let _ = s.thread.join();
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(JoinError(failures))
        }
    }
}
