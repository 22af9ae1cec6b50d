//! State that every shard reads and that is replaced whole: the REST schema cache today; JWT
//! keys, bucket settings and function deployments as those services arrive.
//!
//! Owns: [`Snapshot`], one shard's handle on the current version. A new version is built once
//! (off the shards), wrapped in an `Arc`, and handed to every shard, which swaps it in with
//! [`Snapshot::set`].
//!
//! Invariants: a version is never mutated after it is published; a request takes its handle
//! once, at its start ([`Snapshot::get`]), and keeps that version to its end even if a newer one
//! arrives meanwhile. The shard-local `Rc` around the shared `Arc` keeps the per-request clone
//! off the `Arc`'s reference count, which every shard would otherwise bump on the same cache line.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// One shard's view of a whole-swapped value (`!Send`: lives on its shard).
pub struct Snapshot<T> {
    #[allow(clippy::redundant_allocation)] // deliberate: see the module docs
    current: RefCell<Rc<Arc<T>>>,
}

impl<T> Snapshot<T> {
    pub fn new(first: Arc<T>) -> Snapshot<T> {
        Snapshot { current: RefCell::new(Rc::new(first)) }
    }

    /// The current version (a shard-local `Rc` clone the caller keeps as long as it needs).
    #[allow(clippy::redundant_allocation)] // deliberate: see the module docs
    pub fn get(&self) -> Rc<Arc<T>> {
        self.current.borrow().clone()
    }

    /// Swaps in a new version; holders of the old one keep it.
    pub fn set(&self, next: Arc<T>) {
        *self.current.borrow_mut() = Rc::new(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_keep_their_version() {
        let snapshot = Snapshot::new(Arc::new(1));
        let held = snapshot.get();
        snapshot.set(Arc::new(2));
        assert_eq!((**held, **snapshot.get()), (1, 2));
    }
}
