//! Pool tests against a real PostgreSQL: cancellation, outage and recovery.

mod common;

use std::time::Duration;

use madbase_pg::{Batch, Connection, PgError, Pool, PoolConfig, Statement};

/// Dropping a request before it is written means it never executes.
#[monoio::test(timer_enabled = true)]
async fn dropped_queued_request_never_runs() {
    let (cluster, mut cfg) = common::cluster_with_roles().await;
    cfg.max_in_flight = 1;
    let mut pc = PoolConfig::new(cfg);
    pc.connections = 1;
    let pool = std::rc::Rc::new(Pool::connect(pc, Duration::from_secs(10)).await.unwrap());

    // Hold a lock from another session so the first batch blocks on the server.
    let holder = Connection::connect(&cluster.connect_config()).await.unwrap();
    holder.simple_query("begin; lock table gate in access exclusive mode").await.unwrap();

    let p = pool.clone();
    let blocked =
        monoio::spawn(async move { p.execute(Batch::new().role("anon").query("select count(*) from gate")).await });
    // Wait until it is written (bounded loop; correctness doesn't depend on timing).
    for _ in 0..500 {
        if pool.stats().in_flight == 1 {
            break;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.stats().in_flight, 1);

    // This one is queued behind it (max_in_flight = 1); the caller gives up and drops it.
    let insert = pool.execute(
        Batch::new()
            .role("anon")
            .statement(Statement::new("insert into side_effect(note) values ($1)").bind("dropped")),
    );
    let r = monoio::time::timeout(Duration::from_millis(50), insert).await;
    assert!(r.is_err(), "the queued insert cannot have completed");
    assert_eq!(pool.stats().queued, 1, "it was queued, not written");

    // Control: one that is not dropped runs.
    let p = pool.clone();
    let kept = monoio::spawn(async move {
        p.execute(
            Batch::new()
                .role("anon")
                .statement(Statement::new("insert into side_effect(note) values ($1)").bind("kept")),
        )
        .await
    });
    monoio::time::sleep(Duration::from_millis(20)).await;
    holder.simple_query("commit").await.unwrap();
    blocked.await.unwrap();
    kept.await.unwrap();

    let r = pool
        .execute(
            Batch::new().role("anon").query("select coalesce(string_agg(note, ',' order by id), '') from side_effect"),
        )
        .await
        .unwrap();
    assert_eq!(r[0].scalar(), Some("kept"), "the dropped insert never executed");
}

/// PostgreSQL stopped → requests fail with Unavailable (bounded); restarted on the same port →
/// the pool reconnects and requests succeed.
#[monoio::test(timer_enabled = true)]
async fn unavailable_while_down_then_recovers() {
    let (mut cluster, cfg) = common::cluster_with_roles().await;
    let mut pc = PoolConfig::new(cfg);
    pc.connections = 2;
    pc.connect_wait = Duration::from_millis(200);
    pc.request_timeout = Duration::from_secs(5);
    let pool = Pool::connect(pc, Duration::from_secs(10)).await.unwrap();
    for _ in 0..10 {
        pool.execute(Batch::new().role("anon").query("select 1")).await.unwrap();
    }
    // Wait for both connections to come up (bounded).
    for _ in 0..200 {
        if pool.stats().connections_up == 2 {
            break;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    let port = cluster.port();
    cluster.stop().unwrap();

    let mut saw_unavailable = false;
    for _ in 0..100 {
        match pool.execute(Batch::new().query("select 1")).await {
            Err(PgError::Unavailable { retry_after }) => {
                assert!(retry_after > Duration::ZERO);
                saw_unavailable = true;
                break;
            }
            // In-flight work on a dying connection, or an admin-shutdown error, may come first.
            Err(PgError::ConnectionLost) | Err(PgError::Db(_)) | Err(PgError::Io(_)) => {}
            other => panic!("unexpected while down: {other:?}"),
        }
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_unavailable);
    assert_eq!(pool.stats().connections_up, 0);

    cluster.start().unwrap();
    assert_eq!(cluster.port(), port);
    let mut recovered = false;
    for _ in 0..300 {
        match pool.execute(Batch::new().role("authenticated").query("select current_user")).await {
            Ok(r) => {
                assert_eq!(r[0].scalar(), Some("authenticated"));
                recovered = true;
                break;
            }
            Err(PgError::Unavailable { .. }) => monoio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("unexpected while recovering: {e}"),
        }
    }
    assert!(recovered);
    assert!(pool.stats().connects >= 2);
}

/// The per-pool queue is bounded: beyond it requests fail with Busy instead of queueing.
#[monoio::test(timer_enabled = true)]
async fn full_queue_is_busy() {
    let (cluster, mut cfg) = common::cluster_with_roles().await;
    cfg.max_in_flight = 1;
    let mut pc = PoolConfig::new(cfg);
    pc.connections = 1;
    pc.max_queued = 2;
    let pool = std::rc::Rc::new(Pool::connect(pc, Duration::from_secs(10)).await.unwrap());
    let holder = Connection::connect(&cluster.connect_config()).await.unwrap();
    holder.simple_query("begin; lock table gate in access exclusive mode").await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let p = pool.clone();
        tasks.push(monoio::spawn(async move {
            p.execute(Batch::new().role("anon").query("select count(*) from gate")).await
        }));
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    // 1 in flight + 2 queued: the next is refused.
    let e = pool.execute(Batch::new().query("select 1")).await.unwrap_err();
    assert!(matches!(e, PgError::Busy), "{e:?}");
    holder.simple_query("commit").await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
}
