//! Shard-local wait lists and the shutdown signal.
//!
//! Owns: `WaitList` (a single-threaded set of parked wakers), the `Wait` future
//! built on it, [`ShutdownSignal`] (shard-local view of shutdown) and
//! [`ShutdownTrigger`] (the process-wide, `Send` way to start it).
//!
//! Invariants: a `WaitList` lives on one shard thread (`!Send`), so "check the
//! condition, then register the waker" cannot race with a wake (wakes come from
//! other tasks of the same thread, which cannot run in between). A `Wait` future
//! holds at most one slot and frees it when it completes or is dropped, so a list
//! never holds more slots than there are live waiting futures. Shutdown is
//! one-way: once triggered it stays triggered.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::doorbell::Doorbell;

/// Parked wakers of one shard, keyed by slot.
#[derive(Default)]
pub(crate) struct WaitList {
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
    /// Reused buffer for `wake_all`, so a wake does not allocate.
    scratch: Cell<Vec<Waker>>,
}

impl WaitList {
    fn register(&self, key: &mut Option<usize>, waker: &Waker) {
        let mut slots = self.slots.borrow_mut();
        match *key {
            Some(k) => match &mut slots[k] {
                Some(w) if w.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            },
            None => {
                let k = match self.free.borrow_mut().pop() {
                    Some(k) => {
                        slots[k] = Some(waker.clone());
                        k
                    }
                    None => {
                        slots.push(Some(waker.clone()));
                        slots.len() - 1
                    }
                };
                *key = Some(k);
            }
        }
    }

    fn remove(&self, key: usize) {
        self.slots.borrow_mut()[key] = None;
        self.free.borrow_mut().push(key);
    }

    /// Wakes every parked future (they re-check their condition when polled).
    pub(crate) fn wake_all(&self) {
        // Take the wakers out first: waking may run code that touches the list.
        let mut wakers = self.scratch.take();
        wakers.extend(self.slots.borrow_mut().iter_mut().filter_map(Option::take));
        for w in wakers.drain(..) {
            w.wake();
        }
        self.scratch.set(wakers);
    }

    /// A future that resolves when `check` returns `Some`; it is re-checked each
    /// time the list is woken.
    pub(crate) fn wait<T, F: FnMut() -> Option<T>>(&self, check: F) -> Wait<'_, F> {
        Wait { list: self, key: None, check }
    }
}

/// Future returned by [`WaitList::wait`].
pub(crate) struct Wait<'a, F> {
    list: &'a WaitList,
    key: Option<usize>,
    check: F,
}

impl<F> Unpin for Wait<'_, F> {}

impl<T, F: FnMut() -> Option<T>> Future for Wait<'_, F> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        if let Some(v) = (this.check)() {
            if let Some(k) = this.key.take() {
                this.list.remove(k);
            }
            return Poll::Ready(v);
        }
        this.list.register(&mut this.key, cx.waker());
        Poll::Pending
    }
}

impl<F> Drop for Wait<'_, F> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.list.remove(k);
        }
    }
}

/// Process-wide shutdown state shared by all shards and the handle.
pub(crate) struct Global {
    pub(crate) shutdown: AtomicBool,
    pub(crate) doorbells: Vec<Arc<Doorbell>>,
}

/// Starts shutdown on every shard. `Send + Sync + Clone`; usable from any thread
/// (the signal thread, the replication core, an admin endpoint).
#[derive(Clone)]
pub struct ShutdownTrigger {
    pub(crate) global: Arc<Global>,
}

impl ShutdownTrigger {
    /// Starts shutdown (idempotent): sets the flag, then rings every shard's doorbell
    /// so each shard's [`ShutdownSignal`] fires.
    pub fn trigger(&self) {
        if !self.global.shutdown.swap(true, Ordering::SeqCst) {
            tracing::info!(shards = self.global.doorbells.len(), "shutdown requested");
        }
        for bell in &self.global.doorbells {
            bell.ring();
        }
    }

    /// Whether shutdown has been requested.
    pub fn is_triggered(&self) -> bool {
        self.global.shutdown.load(Ordering::SeqCst)
    }
}

pub(crate) struct SignalState {
    pub(crate) fired: Cell<bool>,
    pub(crate) waiters: WaitList,
    pub(crate) global: Arc<Global>,
}

impl SignalState {
    /// Called by the doorbell task on every wake: fires the local signal once the
    /// global flag is set.
    pub(crate) fn observe(&self) {
        if !self.fired.get() && self.global.shutdown.load(Ordering::SeqCst) {
            self.fired.set(true);
            self.waiters.wake_all();
        }
    }
}

/// A shard's view of shutdown: cheap to clone (`Rc`), `!Send`. Connection handlers
/// check [`ShutdownSignal::is_triggered`] between requests to close keep-alive
/// connections, or await [`ShutdownSignal::triggered`].
#[derive(Clone)]
pub struct ShutdownSignal {
    pub(crate) state: Rc<SignalState>,
}

impl ShutdownSignal {
    /// Whether shutdown has started (reads the process-wide flag, so it is true as
    /// soon as any thread triggers it, even before this shard's doorbell is read).
    pub fn is_triggered(&self) -> bool {
        self.state.fired.get() || self.state.global.shutdown.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown has started. Cancel-safe (it holds no I/O).
    pub async fn triggered(&self) {
        self.state.waiters.wait(|| self.state.fired.get().then_some(())).await
    }

    /// A `Send` handle that can start shutdown from anywhere.
    pub fn trigger_handle(&self) -> ShutdownTrigger {
        ShutdownTrigger { global: self.state.global.clone() }
    }
}
