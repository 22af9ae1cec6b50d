//! Token expiry of the channels on one shard.
//!
//! Owns: [`Expiries`] — the token `exp` of every joined channel on the shard, earliest first —
//! and the one task per shard that closes channels when their time comes. A timer task per
//! channel would cost every idle channel a task and a timer entry (about 1.3 KiB, a fifth of
//! an idle socket); here a channel costs one map entry.
//!
//! Invariants: a channel has at most one entry, added when it is joined or takes a new token and
//! removed on every exit (`Session::drop_channel`) and token change, so the map holds exactly the
//! live channels whose token has an `exp`, and an entry that fires belongs to the channel's
//! current token; the task sleeps at most [`LONGEST_SLEEP`] and is woken when an entry becomes
//! the earliest.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::{poll_fn, Future};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::session::Session;

/// A channel's place in the queue: its token's `exp` (Unix seconds) and a serial number.
pub type ExpiryKey = (u64, u64);

/// What an entry closes: a channel (by topic) of a socket that may be gone.
type Due = (Weak<Session>, Arc<str>);

/// The longest the task sleeps without looking again (an anon key's `exp` is years away).
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// The channels of one shard by token expiry.
#[derive(Default)]
pub struct Expiries {
    due: RefCell<BTreeMap<ExpiryKey, Due>>,
    serial: Cell<u64>,
    /// Set when an entry became the earliest: the task recomputes its deadline.
    rearm: Cell<bool>,
    waiting: RefCell<Option<Waker>>,
    started: Cell<bool>,
}

impl Expiries {
    /// Queues `topic` of `session` to be closed at `exp`; the key removes it again.
    pub fn insert(self: &Rc<Self>, exp: u64, session: Weak<Session>, topic: Arc<str>) -> ExpiryKey {
        let serial = self.serial.get();
        self.serial.set(serial + 1);
        let key = (exp, serial);
        let earliest = self.due.borrow().keys().next().is_none_or(|first| key < *first);
        let replaced = self.due.borrow_mut().insert(key, (session, topic));
        debug_assert!(replaced.is_none(), "expiry keys are unique");
        if !self.started.replace(true) {
            monoio::spawn(close_expired(self.clone()));
        } else if earliest {
            self.rearm.set(true);
            if let Some(w) = self.waiting.borrow_mut().take() {
                w.wake();
            }
        }
        key
    }

    /// Forgets an entry (its channel left or took a new token).
    pub fn remove(&self, key: ExpiryKey) {
        self.due.borrow_mut().remove(&key);
    }

    /// Takes the entries due at `now` (Unix seconds).
    fn take_due(&self, now: u64) -> Vec<Due> {
        let mut due = self.due.borrow_mut();
        let later = due.split_off(&(now + 1, 0));
        std::mem::replace(&mut *due, later).into_values().collect()
    }
}

/// Since the Unix epoch, to the sub-second (the timer wakes at the second `exp` names).
fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The shard's expiry task: closes due channels, then sleeps until the earliest entry.
async fn close_expired(expiries: Rc<Expiries>) {
    loop {
        for (session, topic) in expiries.take_due(since_epoch().as_secs()) {
            if let Some(session) = session.upgrade() {
                session.expire(&topic);
            }
        }
        let next = expiries.due.borrow().keys().next().map(|k| k.0);
        let wait = next.map_or(LONGEST_SLEEP, |exp| Duration::from_secs(exp).saturating_sub(since_epoch()));
        let mut sleep = Box::pin(monoio::time::sleep(wait.min(LONGEST_SLEEP)));
        poll_fn(|cx| {
            if expiries.rearm.replace(false) || sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            *expiries.waiting.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }
}
