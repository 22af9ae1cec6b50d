//! `max_result_bytes` against a real PostgreSQL: an oversized result fails with a typed error,
//! is never buffered, is stopped on the server, and leaves the connection in protocol sync.

mod common;

use std::rc::Rc;
use std::time::Duration;

use madbase_pg::{Batch, Connection, PgError, Pool, PoolConfig, Statement};

const MIB: usize = 1024 * 1024;

fn too_large(r: Result<Vec<madbase_pg::StatementResult>, PgError>) -> usize {
    match r {
        Err(PgError::ResultTooLarge { limit }) => limit,
        Err(e) => panic!("expected ResultTooLarge, got {e:?}"),
        Ok(r) => panic!("expected ResultTooLarge, got {} results", r.len()),
    }
}

/// One 64 MiB value over a 1 MiB limit: typed error, the read buffer never grows toward it, and
/// the next batch on the same connection works.
#[monoio::test(timer_enabled = true)]
async fn one_huge_value_is_refused_without_buffering_it() {
    let (_cluster, mut cfg) = common::cluster_with_roles().await;
    cfg.max_result_bytes = MIB;
    let conn = Connection::connect(&cfg).await.unwrap();

    let limit = too_large(conn.execute(Batch::new().query("select repeat('x', 64 * 1024 * 1024)")).await);
    assert_eq!(limit, MIB);
    // Without the header check `Message::parse` reserves the whole 64 MiB row before reading it.
    let peak = conn.read_buffer_peak();
    assert!(peak < 4 * MIB, "the reader buffered {peak} bytes of a refused result");

    let r = conn.execute(Batch::new().query("select 'after' as a")).await.unwrap();
    assert_eq!(r[0].scalar(), Some("after"));
    // Just under the limit passes (a DataRow's header and lengths add a few bytes).
    let r = conn.execute(Batch::new().query("select repeat('y', 1024 * 1024 - 64)")).await.unwrap();
    assert_eq!(r[0].rows[0].get(0).map(|b| b.len()), Some(MIB - 64));
    assert_eq!(conn.stats().results_too_large, 1);
}

/// Many rows add up to the limit; batches pipelined around the oversized one are unaffected;
/// an error message over the limit fails its batch the same way; simple queries are unbounded.
#[monoio::test(timer_enabled = true)]
async fn many_rows_pipelined_neighbours_and_huge_errors() {
    let (_cluster, mut cfg) = common::cluster_with_roles().await;
    cfg.max_result_bytes = MIB;
    let conn = Rc::new(Connection::connect(&cfg).await.unwrap());

    let mut tasks = Vec::new();
    for i in 0..9 {
        let c = conn.clone();
        tasks.push(monoio::spawn(async move {
            let b = if i % 3 == 1 {
                // ~20 MB in 20,000 rows.
                Batch::new().query("select repeat('r', 1000) from generate_series(1, 20000)")
            } else {
                Batch::new().statement(Statement::new("select $1::int, repeat('n', 1000)").bind(i.to_string()))
            };
            (i, c.execute(b).await)
        }));
    }
    for t in tasks {
        let (i, r) = t.await;
        if i % 3 == 1 {
            assert_eq!(too_large(r), MIB, "batch {i}");
        } else {
            let r = r.unwrap_or_else(|e| panic!("batch {i}: {e}"));
            assert_eq!(r[0].scalar(), Some(i.to_string().as_str()), "batch {i}");
        }
    }
    assert_eq!(conn.stats().results_too_large, 3);

    // An error too long to read fails its batch as too large; the connection stays in sync.
    let e =
        conn.execute(Batch::new().query("do $$ begin raise exception '%', repeat('e', 2 * 1024 * 1024); end $$")).await;
    assert_eq!(too_large(e), MIB);
    let r = conn.execute(Batch::new().query("select 'still in sync'")).await.unwrap();
    assert_eq!(r[0].scalar(), Some("still in sync"));

    // The server's own SQL (simple protocol) is not bounded.
    let r = conn.simple_query("select length(repeat('s', 2 * 1024 * 1024))").await.unwrap();
    assert_eq!(r[0].rows[0].get_str(0), Some("2097152"));
}

/// A result that would take minutes to stream (100 GB) is cancelled on the server once it
/// passes the limit: the batch fails within seconds and the connection serves the next one.
#[monoio::test(timer_enabled = true)]
async fn an_endless_result_is_cancelled_on_the_server() {
    let (_cluster, mut cfg) = common::cluster_with_roles().await;
    cfg.max_result_bytes = MIB;
    let mut pc = PoolConfig::new(cfg);
    pc.connections = 1;
    pc.request_timeout = Duration::from_secs(60);
    let pool = Pool::connect(pc, Duration::from_secs(10)).await.unwrap();

    let r = monoio::time::timeout(
        Duration::from_secs(10),
        // In the select list the series streams (in FROM it would be materialized first).
        pool.execute(Batch::new().query("select repeat('z', 100), generate_series(1, 1000000000)")),
    )
    .await
    .expect("the oversized result is stopped within 10 s, not streamed to its end");
    assert_eq!(too_large(r), MIB);
    let r = pool.execute(Batch::new().query("select 'next'")).await.unwrap();
    assert_eq!(r[0].scalar(), Some("next"));
    let s = pool.stats();
    assert_eq!(s.results_too_large, 1, "{s:?}");
    assert!(s.cancels_sent >= 1, "{s:?}");
}
