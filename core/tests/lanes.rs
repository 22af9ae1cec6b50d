//! PostgreSQL lanes against a real PostgreSQL: one service's slow statements never queue another
//! service's work behind them.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use madbase_core::platform::Pg;
use madbase_core::{LaneSpec, Lanes};
use madbase_pg::{Batch, Cluster};

#[monoio::test(timer_enabled = true)]
async fn a_saturated_lane_does_not_hold_up_another() {
    let cluster = Cluster::ephemeral().expect("ephemeral PostgreSQL");
    let pg = Pg { pool_size: 1, ..Pg::default() };
    let lanes = Rc::new(Lanes::new(
        &cluster.connect_config(),
        &pg,
        &[LaneSpec { name: "heavy", connections: 1 }, LaneSpec { name: "light", connections: 1 }],
    ));
    for (name, pool) in lanes.iter() {
        pool.wait_ready(Duration::from_secs(30)).await.unwrap_or_else(|e| panic!("lane {name}: {e}"));
    }

    // Fill the heavy lane: its one connection runs a slow statement with more queued behind it.
    let finished: Rc<RefCell<Vec<&'static str>>> = Rc::default();
    let mut heavy = Vec::new();
    for _ in 0..4 {
        let (lanes, finished) = (lanes.clone(), finished.clone());
        heavy.push(monoio::spawn(async move {
            lanes.get("heavy").execute(Batch::new().query("select pg_sleep(1)")).await.expect("sleep");
            finished.borrow_mut().push("heavy");
        }));
    }
    for _ in 0..500 {
        if lanes.get("heavy").stats().in_flight > 0 {
            break;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(lanes.get("heavy").stats().in_flight > 0, "the heavy lane is busy");

    // The light lane answers while the heavy one is still on its first statement.
    lanes.get("light").execute(Batch::new().query("select 1")).await.expect("select 1");
    finished.borrow_mut().push("light");
    for task in heavy {
        task.await;
    }
    assert_eq!(finished.borrow().as_slice(), ["light", "heavy", "heavy", "heavy", "heavy"]);
    lanes.close();
}
