//! A slow statement does not hold up unrelated work queued behind it on the same pipelined
//! connection (real PostgreSQL, no mocks): once the slow batch has been the head of its
//! connection for `stalled_after`, the batches queued there but not yet written move to a
//! connection that is not stalled. With nowhere better to go they stay and run after it.
//!
//! `max_in_flight = 1` makes the work behind the slow batch wait unwritten (movable); a batch
//! already written behind a slow one cannot move, and that bound is not what is tested here.
//! Assertions are on completion order and counts; the only durations are liveness bounds.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use madbase_pg::{Batch, ConnectConfig, Pool, PoolConfig};

/// Generous bound for "answers at all" (the slowest statement here sleeps 3 s).
const LIVE: Duration = Duration::from_secs(20);

/// A pool of `connections` that writes one batch at a time per connection, once all are up.
async fn pool_of(cfg: ConnectConfig, connections: usize, stalled_after: Duration) -> Rc<Pool> {
    let mut cfg = cfg;
    cfg.max_in_flight = 1;
    let mut pc = PoolConfig::new(cfg);
    pc.connections = connections;
    pc.stalled_after = stalled_after;
    let pool = Rc::new(Pool::connect(pc, LIVE).await.unwrap());
    for _ in 0..1000 {
        if pool.stats().connections_up == connections {
            break;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.stats().connections_up, connections);
    pool
}

/// Waits (bounded) until `n` batches are written and unanswered.
async fn wait_in_flight(pool: &Pool, n: usize) {
    for _ in 0..5000 {
        if pool.stats().in_flight == n {
            return;
        }
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("expected {n} batches in flight, have {:?}", pool.stats());
}

/// Runs `sql` on the pool and appends `label` to `done` when it completes.
fn spawn_logged(
    pool: &Rc<Pool>,
    sql: &str,
    label: &'static str,
    done: &Rc<RefCell<Vec<&'static str>>>,
) -> monoio::task::JoinHandle<()> {
    let (pool, sql, done) = (pool.clone(), sql.to_string(), done.clone());
    monoio::spawn(async move {
        let r = monoio::time::timeout(LIVE, pool.execute(Batch::new().role("anon").query(sql))).await;
        r.unwrap_or_else(|_| panic!("{label} did not complete")).unwrap_or_else(|e| panic!("{label}: {e}"));
        done.borrow_mut().push(label);
    })
}

/// Asserts that every "quick" in `done` completed before "slow", and that all `quick` did.
fn assert_quick_first(done: &[&str], quick: usize) {
    assert_eq!(done.iter().filter(|l| **l == "quick").count(), quick, "{done:?}");
    let slow = done.iter().position(|l| *l == "slow").expect("the slow batch completed");
    assert_eq!(slow, done.len() - 1, "quick batches waited for the slow one: {done:?}");
}

/// Quick batches submitted right after a slow one, some of them queued on its connection, all
/// complete before it does: the queued ones move to the other connection once it stalls.
#[monoio::test(timer_enabled = true)]
async fn queued_work_moves_off_a_stalled_connection() {
    let (_cluster, cfg) = common::cluster_with_roles().await;
    // Long enough that the quick batches are placed while the slow one is not yet stalled, so
    // least-loaded dispatch queues about half of them behind it.
    let pool = pool_of(cfg, 2, Duration::from_millis(300)).await;
    let done = Rc::new(RefCell::new(Vec::new()));
    let slow = spawn_logged(&pool, "select pg_sleep(3)", "slow", &done);
    wait_in_flight(&pool, 1).await;
    let quick: Vec<_> = (0..20).map(|_| spawn_logged(&pool, "select 1", "quick", &done)).collect();
    for q in quick {
        q.await;
    }
    slow.await;
    assert_quick_first(&done.borrow(), 20);
    assert!(pool.stats().moved_off_stalled > 0, "{:?}", pool.stats());
}

/// With every connection stalled, queued work stays where it is; when one connection frees
/// up, the work queued on the still-stalled one moves to it.
#[monoio::test(timer_enabled = true)]
async fn queued_work_moves_once_another_connection_frees_up() {
    let (_cluster, cfg) = common::cluster_with_roles().await;
    let pool = pool_of(cfg, 2, Duration::from_millis(100)).await;
    let done = Rc::new(RefCell::new(Vec::new()));
    let slow = spawn_logged(&pool, "select pg_sleep(3)", "slow", &done);
    let shorter = spawn_logged(&pool, "select pg_sleep(0.5)", "shorter", &done);
    wait_in_flight(&pool, 2).await;
    // Both heads are past `stalled_after` well before the shorter sleep ends.
    monoio::time::sleep(Duration::from_millis(250)).await;
    let quick: Vec<_> = (0..20).map(|_| spawn_logged(&pool, "select 1", "quick", &done)).collect();
    for q in quick {
        q.await;
    }
    shorter.await;
    slow.await;
    let done = done.borrow();
    assert_quick_first(&done, 20);
    assert!(pool.stats().moved_off_stalled > 0, "{:?}", pool.stats());
}

/// A lone connection has nowhere to move its queue: the work waits for the slow batch and
/// runs after it, and nothing is moved (or bounced back and forth).
#[monoio::test(timer_enabled = true)]
async fn a_lone_stalled_connection_keeps_its_queue() {
    let (_cluster, cfg) = common::cluster_with_roles().await;
    let pool = pool_of(cfg, 1, Duration::from_millis(100)).await;
    let done = Rc::new(RefCell::new(Vec::new()));
    let slow = spawn_logged(&pool, "select pg_sleep(1)", "slow", &done);
    wait_in_flight(&pool, 1).await;
    let quick: Vec<_> = (0..5).map(|_| spawn_logged(&pool, "select 1", "quick", &done)).collect();
    slow.await;
    for q in quick {
        q.await;
    }
    let done = done.borrow();
    assert_eq!(done[0], "slow", "{done:?}");
    assert_eq!(done.len(), 6, "{done:?}");
    assert_eq!(pool.stats().moved_off_stalled, 0);
}
