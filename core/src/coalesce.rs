//! One answer for many askers: a shard-local, time-bounded cache of an expensive answer.
//!
//! Owns: [`Coalesced`], which `/health` and `/metrics` use so that a flood of them costs at most
//! one computation (one message to every other shard, one database round trip) per `max_age` per
//! shard, however many clients ask. Callers that arrive while the answer is being computed wait
//! for that same computation instead of starting another.
//!
//! Invariants: at most one computation runs at a time per `Coalesced`; it runs as its own task,
//! so a caller that goes away (client disconnect) never leaves it half done or the waiters
//! stranded; an answer older than `max_age` is never returned; the waiter list holds at most one
//! entry per request waiting on this shard (bounded by the shard's connection limit).

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

struct State<T> {
    last: Option<(Instant, T)>,
    running: bool,
    waiters: Vec<oneshot::Sender<T>>,
}

/// A shard-local coalescing cache for one kind of answer (`!Send`: lives on its shard).
pub struct Coalesced<T> {
    max_age: Duration,
    state: Rc<RefCell<State<T>>>,
}

impl<T: Clone + 'static> Coalesced<T> {
    pub fn new(max_age: Duration) -> Self {
        Coalesced { max_age, state: Rc::new(RefCell::new(State { last: None, running: false, waiters: Vec::new() })) }
    }

    /// The last answer if it is younger than `max_age`; else the answer of the computation
    /// running now, or of a new one started with `compute` (on its own task).
    pub async fn get<F, Fut>(&self, compute: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + 'static,
    {
        let rx = {
            let mut state = self.state.borrow_mut();
            if let Some((at, answer)) = &state.last {
                if at.elapsed() < self.max_age {
                    return answer.clone();
                }
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.push(tx);
            if !state.running {
                state.running = true;
                let shared = self.state.clone();
                let computation = compute();
                monoio::spawn(async move {
                    let answer = computation.await;
                    let waiters = {
                        let mut state = shared.borrow_mut();
                        state.running = false;
                        state.last = Some((Instant::now(), answer.clone()));
                        std::mem::take(&mut state.waiters)
                    };
                    for waiter in waiters {
                        // A waiter whose request went away has dropped its receiver.
                        let _ = waiter.send(answer.clone());
                    }
                });
            }
            rx
        };
        debug_assert!(self.state.borrow().running || self.state.borrow().last.is_some());
        match rx.await {
            Ok(answer) => answer,
            // The computing task can only be dropped with the shard's runtime.
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap()
    }

    #[test]
    fn concurrent_askers_share_one_computation_and_fresh_answers_are_reused() {
        runtime().block_on(async {
            let cache = Rc::new(Coalesced::new(Duration::from_millis(200)));
            let computed = Rc::new(Cell::new(0u32));
            let ask = |cache: Rc<Coalesced<u32>>, computed: Rc<Cell<u32>>| async move {
                cache
                    .get(move || async move {
                        monoio::time::sleep(Duration::from_millis(20)).await;
                        computed.set(computed.get() + 1);
                        computed.get()
                    })
                    .await
            };
            let askers: Vec<_> = (0..50).map(|_| monoio::spawn(ask(cache.clone(), computed.clone()))).collect();
            for asker in askers {
                assert_eq!(asker.await, 1);
            }
            assert_eq!(ask(cache.clone(), computed.clone()).await, 1, "a fresh answer is reused");
            monoio::time::sleep(Duration::from_millis(250)).await;
            assert_eq!(ask(cache.clone(), computed.clone()).await, 2, "a stale answer is recomputed");
            assert_eq!(computed.get(), 2);
        });
    }

    #[test]
    fn an_asker_that_goes_away_does_not_strand_the_others() {
        runtime().block_on(async {
            let cache = Rc::new(Coalesced::new(Duration::from_secs(60)));
            let slow = || async {
                monoio::time::sleep(Duration::from_millis(50)).await;
                7u32
            };
            // The first asker starts the computation and gives up before it ends.
            let gave_up = monoio::time::timeout(Duration::from_millis(5), cache.get(slow)).await;
            assert!(gave_up.is_err());
            assert_eq!(cache.get(|| async { 0u32 }).await, 7, "the running computation still answers");
        });
    }
}
