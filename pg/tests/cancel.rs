//! Abandoned work is cancelled on the server (real PostgreSQL, no mocks): a batch whose caller
//! timed out or went away stops running, the batches pipelined behind it neither wait for it nor
//! see its cancel, and a pool flooded with abandoned slow statements keeps serving.
//!
//! Every bound here is a liveness bound (seconds) for something that would otherwise take a
//! minute; none measures speed.

mod common;

use std::rc::Rc;
use std::time::Duration;

use madbase_pg::{Batch, Connection, PgError, Pool, PoolConfig, Statement};

/// Generous bound for "answers now rather than after the 60 s sleep".
const LIVE: Duration = Duration::from_secs(10);

/// Waits (bounded by [`LIVE`]) until no session other than `watcher` runs `select pg_sleep(60)`.
async fn wait_no_sleepers(watcher: &Connection) {
    let q = "select count(*) from pg_stat_activity \
             where state = 'active' and query like 'select pg_sleep(60)%' and pid <> pg_backend_pid()";
    let deadline = std::time::Instant::now() + LIVE;
    loop {
        let r = watcher.execute(Batch::new().query(q)).await.unwrap();
        if r[0].scalar() == Some("0") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "abandoned pg_sleep(60) still running on the server after {LIVE:?}"
        );
        monoio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A written batch whose `execute` future is dropped is cancelled on the server.
#[monoio::test(timer_enabled = true)]
async fn dropped_execute_cancels_the_statement_on_the_server() {
    let (cluster, cfg) = common::cluster_with_roles().await;
    let conn = Connection::connect(&cfg).await.unwrap();
    let watcher = Connection::connect(&cluster.connect_config()).await.unwrap();

    let r = monoio::time::timeout(Duration::from_millis(200), conn.execute(Batch::new().query("select pg_sleep(60)")))
        .await;
    assert!(r.is_err(), "the sleep cannot have finished");
    wait_no_sleepers(&watcher).await;
    let r = monoio::time::timeout(LIVE, conn.execute(Batch::new().query("select 'next' as n")))
        .await
        .expect("the connection answers within 10 s, not after the abandoned 60 s sleep")
        .unwrap();
    assert_eq!(r[0].scalar(), Some("next"));
    assert!(conn.stats().cancels_sent >= 1); // new API

    // Not every 57014 is a stray cancel: a statement_timeout still fails its batch.
    let e =
        conn.execute(Batch::new().setting("statement_timeout", "100").query("select pg_sleep(5)")).await.unwrap_err();
    assert_eq!(e.code(), Some("57014"), "{e}");
    assert!(e.as_db().unwrap().message.contains("statement timeout"), "{e}");
}

/// Batches pipelined behind an abandoned one on the same connection neither wait for it nor see
/// the cancel sent for it.
#[monoio::test(timer_enabled = true)]
async fn batches_pipelined_behind_an_abandoned_one_succeed() {
    let (_cluster, cfg) = common::cluster_with_roles().await;
    let conn = Rc::new(Connection::connect(&cfg).await.unwrap());

    // One abandoned 60 s sleep with 20 batches written right behind it.
    let c = conn.clone();
    let abandoned = monoio::spawn(async move {
        monoio::time::timeout(Duration::from_millis(300), c.execute(Batch::new().query("select pg_sleep(60)"))).await
    });
    let mut behind = Vec::new();
    for i in 0..20 {
        let c = conn.clone();
        behind.push(monoio::spawn(async move {
            let b = Batch::new().role("anon").statement(Statement::new("select $1::int").bind(i.to_string()));
            (i, monoio::time::timeout(LIVE, c.execute(b)).await)
        }));
    }
    assert!(abandoned.await.is_err());
    for h in behind {
        let (i, r) = h.await;
        let r = r.unwrap_or_else(|_| panic!("batch {i} behind the abandoned sleep waited past {LIVE:?}"));
        let r = r.unwrap_or_else(|e| panic!("batch {i} behind the abandoned sleep failed: {e}"));
        assert_eq!(r[0].scalar(), Some(i.to_string().as_str()));
    }

    // The race PostgreSQL's cancel has: the abandoned batch `x` is quick (its 4 MB result is
    // still on its way when it becomes the head) and becomes the head only when `w` finishes; by
    // the time its CancelRequest lands the server is often already running `y`, which the cancel
    // then hits. `y`'s caller must still get its result, never 57014.
    for round in 0..5 {
        let c = conn.clone();
        let w = monoio::spawn(async move { c.execute(Batch::new().query("select pg_sleep(0.5), 'w'")).await });
        monoio::time::sleep(Duration::from_millis(50)).await;
        // Usually x is still queued behind w when its caller gives up; if a cancel from an
        // earlier round hit w, w went to the back and x may finish first: either is fine.
        let _ = monoio::time::timeout(
            Duration::from_millis(100),
            conn.execute(Batch::new().query("select repeat('x', 4000000)")),
        )
        .await;
        let c = conn.clone();
        let y = monoio::spawn(async move {
            monoio::time::timeout(LIVE, c.execute(Batch::new().query("select pg_sleep(0.5), 'y'"))).await
        });
        let w = w.await.unwrap_or_else(|e| panic!("round {round}: w failed: {e}"));
        assert_eq!(w[0].rows[0].get_str(1), Some("w"));
        let y = y.await.expect("y answers").unwrap_or_else(|e| panic!("round {round}: y failed: {e}"));
        assert_eq!(y[0].rows[0].get_str(1), Some("y"));
    }
    let s = conn.stats(); // new API
    assert!(s.cancels_sent >= 1, "{s:?}"); // new API
    eprintln!("connection stats after the stray-cancel rounds: {s:?}"); // new API
}

/// The pool's `request_timeout` path cancels the statement on the server.
#[monoio::test(timer_enabled = true)]
async fn pool_request_timeout_cancels_on_the_server() {
    let (cluster, cfg) = common::cluster_with_roles().await;
    let mut pc = PoolConfig::new(cfg);
    pc.connections = 1;
    pc.request_timeout = Duration::from_millis(500);
    let pool = Pool::connect(pc, LIVE).await.unwrap();
    let watcher = Connection::connect(&cluster.connect_config()).await.unwrap();

    let e = pool.execute(Batch::new().role("anon").query("select pg_sleep(60)")).await.unwrap_err();
    assert!(matches!(e, PgError::Timeout(_)), "{e:?}");
    wait_no_sleepers(&watcher).await;
    let r = pool.execute(Batch::new().role("anon").query("select 'served'")).await.unwrap();
    assert_eq!(r[0].scalar(), Some("served"));
    assert!(pool.stats().cancels_sent >= 1); // new API
}

/// The attack: many slow statements, each abandoned after a 1 s request timeout, on a
/// small pool. The pool keeps serving new requests, and nothing keeps running on the server.
#[monoio::test(timer_enabled = true)]
async fn abandoned_slow_flood_leaves_the_pool_serving() {
    let (cluster, cfg) = common::cluster_with_roles().await;
    let mut pc = PoolConfig::new(cfg);
    pc.connections = 2;
    pc.request_timeout = Duration::from_secs(1);
    let pool = Rc::new(Pool::connect(pc, LIVE).await.unwrap());
    for _ in 0..500 {
        if pool.stats().connections_up == 2 {
            break;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    let watcher = Connection::connect(&cluster.connect_config()).await.unwrap();

    let mut flood = Vec::new();
    for _ in 0..16 {
        let p = pool.clone();
        flood.push(monoio::spawn(
            async move { p.execute(Batch::new().role("anon").query("select pg_sleep(60)")).await },
        ));
    }
    for h in flood {
        let e = h.await.unwrap_err();
        assert!(matches!(e, PgError::Timeout(_)), "{e:?}");
    }
    let served = monoio::time::timeout(LIVE, async {
        loop {
            match pool.execute(Batch::new().role("anon").query("select 'ok'")).await {
                Ok(r) => return r,
                Err(PgError::Timeout(_)) => {}
                Err(e) => panic!("unexpected: {e}"),
            }
        }
    })
    .await
    .expect("the pool serves a normal request within 10 s of the flood");
    assert_eq!(served[0].scalar(), Some("ok"));
    wait_no_sleepers(&watcher).await;
    // Every connection serves again.
    for i in 0..10 {
        let r =
            pool.execute(Batch::new().statement(Statement::new("select $1::int").bind(i.to_string()))).await.unwrap();
        assert_eq!(r[0].scalar(), Some(i.to_string().as_str()));
    }
}

/// New work goes around a connection whose head batch runs long, when another one is free.
#[monoio::test(timer_enabled = true)]
async fn new_work_avoids_a_stalled_connection() {
    let (_cluster, cfg) = common::cluster_with_roles().await;
    let mut pc = PoolConfig::new(cfg);
    pc.connections = 2;
    pc.stalled_after = Duration::from_secs(1); // new API
    let pool = Rc::new(Pool::connect(pc, LIVE).await.unwrap());
    for _ in 0..500 {
        if pool.stats().connections_up == 2 {
            break;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.stats().connections_up, 2);

    // A caller that keeps waiting for a slow statement (so nothing cancels it).
    let p = pool.clone();
    let _slow = monoio::spawn(async move { p.execute(Batch::new().query("select pg_sleep(30)")).await });
    monoio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(pool.stats().in_flight, 1);

    // Least-loaded alone would put some of these behind the 30 s sleep (loads 1 vs 0, 1, 2 …).
    let mut quick = Vec::new();
    for i in 0..4 {
        let p = pool.clone();
        quick.push(monoio::spawn(async move {
            let b = Batch::new().statement(Statement::new("select pg_sleep(0.1), $1::int").bind(i.to_string()));
            (i, monoio::time::timeout(LIVE, p.execute(b)).await)
        }));
    }
    for h in quick {
        let (i, r) = h.await;
        let r = r.unwrap_or_else(|_| panic!("batch {i} was queued behind the stalled connection"));
        assert_eq!(r.unwrap()[0].rows[0].get_str(1), Some(i.to_string().as_str()));
    }
}
