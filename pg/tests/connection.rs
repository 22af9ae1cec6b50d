//! Connection-level tests against a real PostgreSQL (no mocks).

mod common;

use std::rc::Rc;

use madbase_pg::{Batch, Cluster, ConnectConfig, Connection, PgError, Statement, TxEnd};

#[monoio::test(timer_enabled = true)]
async fn scram_auth_and_simple_query() {
    let cluster = Cluster::ephemeral().unwrap();
    // The URL round-trips through ConnectConfig::from_url; the cluster only allows SCRAM.
    let cfg = ConnectConfig::from_url(&cluster.connection_url()).unwrap();
    let conn = Connection::connect(&cfg).await.unwrap();
    assert!(conn.parameter("server_version").is_some());
    let auth = conn
        .simple_query("select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'postgres'")
        .await
        .unwrap();
    assert_eq!(auth[0].rows[0].get_str(0), Some("t"), "superuser password is stored as SCRAM");

    let res = conn
        .simple_query(
            "create table t(x int, y text); insert into t values (1, 'a'), (2, null); select x, y from t order by x;",
        )
        .await
        .unwrap();
    assert_eq!(res.len(), 3);
    assert_eq!(res[0].command_tag, "CREATE TABLE");
    assert_eq!(res[1].command_tag, "INSERT 0 2");
    assert_eq!(res[2].columns, vec!["x", "y"]);
    assert_eq!(res[2].rows.len(), 2);
    assert_eq!(res[2].rows[1].get_str(0), Some("2"));
    assert_eq!(res[2].rows[1].get(1), None);

    // An error mid-way stops the rest; the connection stays usable.
    let err = conn.simple_query("select 1; select * from missing_table; select 3").await.unwrap_err();
    assert_eq!(err.code(), Some("42P01"));
    let ok = conn.simple_query("select 42").await.unwrap();
    assert_eq!(ok[0].rows[0].get_str(0), Some("42"));

    // The same over the unix socket in the data dir.
    let mut unix = cfg.clone();
    unix.host = madbase_pg::Host::Unix(cluster.socket_dir());
    let uc = Connection::connect(&unix).await.unwrap();
    let r = uc.execute(Batch::new().query("select count(*) from t")).await.unwrap();
    assert_eq!(r[0].scalar(), Some("2"));

    // Wrong password → a typed server error (28P01).
    let bad = cfg.clone().password("wrong");
    let e = Connection::connect(&bad).await.unwrap_err();
    assert_eq!(e.code(), Some("28P01"), "{e}");
    // Missing password → a clear auth error.
    let mut none = cfg.clone();
    none.password = None;
    assert!(matches!(Connection::connect(&none).await.unwrap_err(), PgError::Auth(_)));
}

/// ≥ 1,000 batches in flight on ONE connection, alternating roles and claims; each proves it
/// saw only its own settings. Every 7th batch fails; its neighbours are unaffected.
#[monoio::test(timer_enabled = true)]
async fn pipelined_batches_see_only_their_own_settings() {
    let (_cluster, cfg) = common::cluster_with_roles().await;
    let conn = Rc::new(Connection::connect(&cfg).await.unwrap());
    const N: usize = 1500;
    let mut handles = Vec::with_capacity(N);
    for i in 0..N {
        let conn = conn.clone();
        handles.push(monoio::spawn(async move {
            let role = if i % 2 == 0 { "anon" } else { "authenticated" };
            let claims = format!(r#"{{"sub":"user-{i}","role":"{role}"}}"#);
            let sql = if i % 7 == 3 {
                "select current_user, current_setting('request.jwt.claims', true), $1::int / 0"
            } else {
                "select current_user, current_setting('request.jwt.claims', true), $1::int"
            };
            let batch = Batch::new()
                .role(role)
                .jwt_claims(claims.clone())
                .method("GET")
                .path("/things")
                .statement(Statement::new(sql).bind(i.to_string()));
            (i, role, claims, conn.execute(batch).await)
        }));
    }
    let mut ok = 0;
    let mut failed = 0;
    for h in handles {
        let (i, role, claims, res) = h.await;
        if i % 7 == 3 {
            let e = res.unwrap_err();
            assert_eq!(e.code(), Some("22012"), "batch {i}: {e}");
            let db = e.as_db().unwrap();
            assert_eq!(db.severity, "ERROR");
            assert!(db.message.contains("division by zero"));
            failed += 1;
        } else {
            let res = res.unwrap_or_else(|e| panic!("batch {i}: {e}"));
            assert_eq!(res.len(), 1, "only the caller's statement is returned");
            let row = &res[0].rows[0];
            assert_eq!(row.get_str(0), Some(role), "batch {i} current_user");
            assert_eq!(row.get_str(1), Some(claims.as_str()), "batch {i} claims");
            assert_eq!(row.get_str(2), Some(i.to_string().as_str()));
            assert_eq!(res[0].columns, vec!["current_user", "current_setting", "int4"]);
            ok += 1;
        }
    }
    assert_eq!(ok + failed, N);
    assert!(failed > 100);

    // Settings are transaction-local: a batch without settings sees none of them.
    let res = conn
        .execute(Batch::new().query(
            "select current_user, coalesce(current_setting('request.jwt.claims', true), ''), \
             coalesce(current_setting('request.method', true), '')",
        ))
        .await
        .unwrap();
    let row = &res[0].rows[0];
    assert_eq!(row.get_str(0), Some("authenticator"));
    assert_eq!(row.get_str(1), Some(""));
    assert_eq!(row.get_str(2), Some(""));
    assert_eq!(conn.in_flight(), 0);
    assert_eq!(conn.queued(), 0);
}

#[monoio::test(timer_enabled = true)]
async fn transactions_read_only_rollback_and_statement_cache() {
    let (_cluster, mut cfg) = common::cluster_with_roles().await;
    cfg.statement_cache_size = 4;
    let conn = Connection::connect(&cfg).await.unwrap();

    // A batch is atomic: an error in its second statement undoes its first.
    let e = conn
        .execute(
            Batch::new()
                .role("authenticated")
                .statement(Statement::new("insert into side_effect(note) values ($1)").bind("atomic"))
                .query("select 1/0"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("22012"));
    // Rollback end: statements run, nothing persists.
    let r = conn
        .execute(
            Batch::new()
                .role("authenticated")
                .statement(Statement::new("insert into side_effect(note) values ($1) returning note").bind("rolled"))
                .end(TxEnd::Rollback),
        )
        .await
        .unwrap();
    assert_eq!(r[0].rows[0].get_str(0), Some("rolled"));
    assert_eq!(r[0].rows_affected(), Some(1));
    // Read-only: writes fail with 25006.
    let e = conn
        .execute(
            Batch::new().role("authenticated").read_only(true).query("insert into side_effect(note) values ('ro')"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("25006"), "{e}");
    let count =
        conn.execute(Batch::new().role("authenticated").query("select count(*) from side_effect")).await.unwrap();
    assert_eq!(count[0].scalar(), Some("0"));

    // Many distinct statements through a 4-entry cache: evictions close statements and
    // nothing breaks; NULL parameters and typed parameters work.
    for round in 0..3 {
        for k in 0..12 {
            let sql = format!("select $1::text is null, {k} + $2::int");
            let r = conn
                .execute(Batch::new().statement(Statement::new(sql).bind_null().bind(round.to_string())))
                .await
                .unwrap();
            assert_eq!(r[0].rows[0].get_str(0), Some("t"));
            assert_eq!(r[0].rows[0].get_str(1), Some((k + round).to_string().as_str()));
        }
    }
    let prepared = conn.execute(Batch::new().query("select count(*) from pg_prepared_statements")).await.unwrap();
    let n: usize = prepared[0].scalar().unwrap().parse().unwrap();
    assert!(n <= 5, "statement cache is bounded, server holds {n}");
    let typed = conn
        .execute(Batch::new().statement(Statement::new("select $1 + 1").param_types(vec![20]).bind("41")))
        .await
        .unwrap();
    assert_eq!(typed[0].scalar(), Some("42"));

    // A Parse the server skips (an earlier statement failed) is not cached as ready: the same
    // statement works right after, and repeatedly.
    for _ in 0..3 {
        let e = conn.execute(Batch::new().query("select 1/0").query("select 'skipped parse' as s")).await.unwrap_err();
        assert_eq!(e.code(), Some("22012"));
        let r = conn.execute(Batch::new().query("select 'skipped parse' as s")).await.unwrap();
        assert_eq!(r[0].scalar(), Some("skipped parse"));
    }
    let e = conn.execute(Batch::new().query("select * from not_there")).await.unwrap_err();
    assert_eq!(e.code(), Some("42P01"));
    assert!(e.as_db().unwrap().position.is_some());
    // Empty query and a multi-row result.
    let r = conn.execute(Batch::new().query("select generate_series(1, 3) as n")).await.unwrap();
    assert_eq!(r[0].rows.len(), 3);
    assert_eq!(r[0].columns, vec!["n"]);
}

/// A host name is resolved (off the shard) and each of its addresses tried: `localhost` may
/// resolve to ::1 first, where the test server (127.0.0.1 only) does not listen. `cancel` goes
/// the same way.
#[monoio::test(timer_enabled = true)]
async fn host_names_resolve_and_cancel_reaches_the_session() {
    let (_cluster, mut cfg) = common::cluster_with_roles().await;
    cfg.host = madbase_pg::Host::Tcp("localhost".into());
    let conn = Rc::new(Connection::connect(&cfg).await.unwrap());
    let r = conn.execute(Batch::new().query("select 1")).await.unwrap();
    assert_eq!(r[0].scalar(), Some("1"));

    let c = conn.clone();
    let slow = monoio::spawn(async move { c.execute(Batch::new().query("select pg_sleep(60)")).await });
    monoio::time::sleep(std::time::Duration::from_millis(200)).await;
    madbase_pg::connection::cancel(&cfg, conn.backend_key()).await.unwrap();
    let e = monoio::time::timeout(std::time::Duration::from_secs(10), slow)
        .await
        .expect("the cancelled sleep ends within 10 s")
        .unwrap_err();
    // Nobody else cancelled on this connection: the caller sees the cancel, it is not retried.
    assert_eq!(e.code(), Some("57014"), "{e}");

    let mut bad = cfg.clone();
    bad.host = madbase_pg::Host::Tcp("no-such-host.invalid".into());
    bad.connect_timeout = std::time::Duration::from_secs(3);
    assert!(Connection::connect(&bad).await.is_err());
}
