//! Asynchronous notifications (`LISTEN`/`NOTIFY`): the bounded queue a [`Connection`] fills from
//! its reader and its owner drains.
//!
//! Owns: [`Notification`] (one `NotificationResponse` message) and [`NotificationQueue`].
//!
//! Invariants: the queue never holds more than its capacity; when a notification arrives at a
//! full queue the **oldest** one is dropped and the `lost` flag is set, so an owner that must not
//! miss anything (a schema-cache reloader) can tell that it has to act as if it had seen every
//! dropped notification. The flag stays set until the owner takes it.
//!
//! [`Connection`]: crate::Connection

use std::collections::VecDeque;

/// How many notifications a connection keeps for its owner by default.
pub const DEFAULT_NOTIFICATION_CAPACITY: usize = 1024;

/// One `NOTIFY` delivered to this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The notifying backend's process id.
    pub process_id: i32,
    /// The channel (`pgrst`, …).
    pub channel: String,
    /// The payload (empty when `NOTIFY` had none).
    pub payload: String,
}

/// A bounded FIFO of notifications that drops the oldest on overflow and remembers that it did.
#[derive(Debug)]
pub struct NotificationQueue {
    items: VecDeque<Notification>,
    capacity: usize,
    lost: bool,
}

impl NotificationQueue {
    /// A queue holding at most `capacity` notifications (at least one).
    pub fn new(capacity: usize) -> Self {
        NotificationQueue { items: VecDeque::new(), capacity: capacity.max(1), lost: false }
    }

    /// Appends `n`; at capacity the oldest is dropped and the lost flag is set.
    pub fn push(&mut self, n: Notification) {
        while self.items.len() >= self.capacity {
            self.items.pop_front();
            self.lost = true;
        }
        self.items.push_back(n);
    }

    /// The oldest notification, if any.
    pub fn pop(&mut self) -> Option<Notification> {
        self.items.pop_front()
    }

    /// Whether notifications were dropped since the last call; clears the flag.
    pub fn take_lost(&mut self) -> bool {
        std::mem::take(&mut self.lost)
    }

    /// Changes the capacity (at least one), dropping the oldest entries if needed.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.items.len() > self.capacity {
            self.items.pop_front();
            self.lost = true;
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: i32) -> Notification {
        Notification { process_id: i, channel: "pgrst".into(), payload: String::new() }
    }

    #[test]
    fn overflow_drops_oldest_and_sets_flag() {
        let mut q = NotificationQueue::new(2);
        q.push(n(1));
        q.push(n(2));
        assert!(!q.take_lost());
        q.push(n(3));
        assert!(q.take_lost());
        assert!(!q.take_lost(), "the flag clears when taken");
        assert_eq!(q.pop().map(|x| x.process_id), Some(2));
        assert_eq!(q.pop().map(|x| x.process_id), Some(3));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn shrinking_drops_oldest() {
        let mut q = NotificationQueue::new(4);
        (1..=4).for_each(|i| q.push(n(i)));
        q.set_capacity(1);
        assert!(q.take_lost());
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop().map(|x| x.process_id), Some(4));
        assert!(q.is_empty());
    }
}
