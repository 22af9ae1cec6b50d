//! The replication core against a real PostgreSQL (no mocks): decoding and rendering of
//! inserts, updates and deletes, replica identities, TOAST, transactions as batches,
//! `realtime.messages`, confirmation only after every shard took a batch, and no loss and no
//! duplicates across killed replication connections and a restart of the core.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use madbase_pg::{BlockingConnection, Cluster, SessionMode, SimpleResult};
use madbase_realtime::changes::{parse_lsn, BatchSink, ChangeBatch, ChangeKind, Lsn, ReplicaIdentity};
use madbase_realtime::replication::{self, ReplicationConfig, ReplicationHandle};

/// One "shard": forwards every batch into a channel; the test takes them.
struct ChannelSink(Sender<Arc<ChangeBatch>>);

impl BatchSink for ChannelSink {
    fn publish(&mut self, batch: Arc<ChangeBatch>) -> usize {
        match self.0.send(batch) {
            Ok(()) => 0,
            Err(_) => 1,
        }
    }
    fn shards(&self) -> usize {
        1
    }
}

fn db(cluster: &Cluster) -> BlockingConnection {
    BlockingConnection::connect(&cluster.connect_config(), SessionMode::Normal, 1 << 24).unwrap()
}

fn sql(conn: &mut BlockingConnection, q: &str) -> Vec<SimpleResult> {
    conn.simple_query(q).unwrap_or_else(|e| panic!("{q}: {e}"))
}

fn scalar(conn: &mut BlockingConnection, q: &str) -> Option<String> {
    sql(conn, q).last().and_then(|r| r.rows.first()).and_then(|r| r.get_str(0).map(str::to_string))
}

fn config(cluster: &Cluster) -> ReplicationConfig {
    let mut c = ReplicationConfig::new(cluster.connect_config());
    c.status_interval = Duration::from_millis(100);
    c.backoff_initial = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(500);
    c
}

fn start(cluster: &Cluster) -> (ReplicationHandle, Receiver<Arc<ChangeBatch>>) {
    let (tx, rx) = channel();
    let handle = replication::start(config(cluster), Box::new(ChannelSink(tx))).unwrap();
    (handle, rx)
}

fn next(rx: &Receiver<Arc<ChangeBatch>>) -> Arc<ChangeBatch> {
    rx.recv_timeout(Duration::from_secs(20)).expect("a batch within 20 s")
}

/// The next batch, taken.
fn take(rx: &Receiver<Arc<ChangeBatch>>) -> Arc<ChangeBatch> {
    let b = next(rx);
    b.taken();
    b
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn v(row: &Option<madbase_realtime::changes::Row>, i: usize) -> Option<&str> {
    row.as_ref().unwrap().values[i].as_deref()
}

const SCHEMA: &str = "
    create table items(id bigint primary key, name text, done bool, score float8, tags text[], meta jsonb,
                       at timestamptz, big text);
    alter table items alter column big set storage external;
    create table full_items(id int primary key, name text, big text);
    alter table full_items alter column big set storage external;
    alter table full_items replica identity full;
    create table unpublished(x int);
    create schema realtime;
    create table realtime.messages(id uuid primary key default gen_random_uuid(), topic text not null,
                                   extension text not null, payload jsonb, event text, private bool default false,
                                   inserted_at timestamptz default now());
    create publication supabase_realtime for table items, full_items;
    create publication supabase_realtime_messages_publication for table realtime.messages;
";

#[test]
fn changes_are_decoded_rendered_and_batched_per_transaction() {
    let cluster = Cluster::ephemeral().unwrap();
    let mut conn = db(&cluster);
    sql(&mut conn, SCHEMA);
    let (core, rx) = start(&cluster);
    wait_for("the core to stream", || core.stats.connected());

    // INSERT: every value rendered as to_jsonb renders it.
    let big = "(select string_agg(md5(i::text), '') from generate_series(1, 400) i)";
    sql(
        &mut conn,
        &format!(
            "insert into items values (1, 'a \"q\"', true, 1.5, '{{x,\"y z\",NULL}}', '{{\"k\": [1, 2]}}', \
             '2024-01-01 00:00:00.123+00', {big})"
        ),
    );
    let b = take(&rx);
    assert_eq!(b.changes.len(), 1);
    assert!(b.messages.is_empty());
    let c = &b.changes[0];
    assert_eq!(c.kind, ChangeKind::Insert);
    let rel = &c.relation;
    assert_eq!((rel.schema.as_str(), rel.table.as_str()), ("public", "items"));
    let types: Vec<&str> = rel.columns.iter().map(|c| c.type_name.as_str()).collect();
    assert_eq!(types, ["int8", "text", "bool", "float8", "_text", "jsonb", "timestamptz", "text"]);
    assert_eq!(rel.primary_key, vec![0]);
    assert!(!rel.rls_enabled);
    assert_eq!(rel.replica_identity, ReplicaIdentity::Default);
    assert!(c.old_record.is_none());
    assert_eq!(v(&c.record, 0), Some("1"));
    assert_eq!(v(&c.record, 1), Some("\"a \\\"q\\\"\""));
    assert_eq!(v(&c.record, 2), Some("true"));
    assert_eq!(v(&c.record, 3), Some("1.5"));
    assert_eq!(v(&c.record, 4), Some("[\"x\", \"y z\", null]"));
    assert_eq!(v(&c.record, 5), Some("{\"k\": [1, 2]}"));
    assert_eq!(v(&c.record, 6), Some("\"2024-01-01T00:00:00.123+00:00\""));
    assert_eq!(v(&c.record, 7).map(str::len), Some(400 * 32 + 2));
    let ts = &b.commit_timestamp;
    assert!(ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    let server_ts = scalar(&mut conn, "select to_char(now() at time zone 'UTC', 'YYYY-MM-DD')").unwrap();
    assert_eq!(&ts[..10], server_ts);

    // UPDATE under DEFAULT identity, key unchanged: no old row; the unchanged TOASTed column is
    // not sent and there is nothing to fill it from.
    sql(&mut conn, "update items set name = null where id = 1");
    let b = take(&rx);
    let c = &b.changes[0];
    assert_eq!(c.kind, ChangeKind::Update);
    assert!(c.old_record.is_none());
    assert_eq!(v(&c.record, 1), Some("null"));
    assert_eq!(v(&c.record, 7), None, "unchanged TOAST without an old row");

    // UPDATE of the key: the old row carries the key only.
    sql(&mut conn, "update items set id = 2, big = 'small' where id = 1");
    let c = &take(&rx).changes[0];
    assert_eq!(v(&c.old_record, 0), Some("1"));
    assert!(c.old_record.as_ref().unwrap().values[1..].iter().all(Option::is_none));
    assert_eq!(v(&c.record, 0), Some("2"));
    assert_eq!(v(&c.record, 7), Some("\"small\""));

    // DELETE under DEFAULT: the key only.
    sql(&mut conn, "delete from items where id = 2");
    let c = &take(&rx).changes[0];
    assert_eq!(c.kind, ChangeKind::Delete);
    assert!(c.record.is_none());
    assert_eq!(v(&c.old_record, 0), Some("2"));
    assert_eq!(v(&c.old_record, 1), None);

    // FULL identity: whole old rows, and the unchanged TOASTed column filled from the old row.
    sql(&mut conn, &format!("insert into full_items values (1, 'one', {big})"));
    let c = &take(&rx).changes[0];
    let big_json = v(&c.record, 2).unwrap().to_string();
    assert_eq!(c.relation.replica_identity, ReplicaIdentity::Full);
    sql(&mut conn, "update full_items set name = 'uno' where id = 1");
    let c = &take(&rx).changes[0];
    assert_eq!(v(&c.old_record, 1), Some("\"one\""));
    assert_eq!(v(&c.record, 1), Some("\"uno\""));
    assert_eq!(v(&c.record, 2), Some(big_json.as_str()), "unchanged TOAST filled from the old row");
    sql(&mut conn, "delete from full_items where id = 1");
    let c = &take(&rx).changes[0];
    assert_eq!(v(&c.old_record, 1), Some("\"uno\""));
    assert_eq!(v(&c.old_record, 2), Some(big_json.as_str()));

    // A multi-statement transaction is one batch, in order; unpublished tables are absent.
    sql(
        &mut conn,
        "begin; insert into items(id, name) values (10, 'a'), (11, 'b'); insert into unpublished values (1);
         update items set done = false where id = 10; delete from items where id = 11;
         insert into full_items(id) values (5); commit;",
    );
    let b = take(&rx);
    let kinds: Vec<(ChangeKind, &str)> = b.changes.iter().map(|c| (c.kind, c.relation.table.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (ChangeKind::Insert, "items"),
            (ChangeKind::Insert, "items"),
            (ChangeKind::Update, "items"),
            (ChangeKind::Delete, "items"),
            (ChangeKind::Insert, "full_items"),
        ]
    );
    assert_eq!(v(&b.changes[2].record, 2), Some("false"));

    // realtime.messages inserts are messages, not changes: broadcast rows with a payload only.
    sql(
        &mut conn,
        "begin;
         insert into realtime.messages(topic, extension, payload, event, private)
           values ('room1', 'broadcast', '{\"a\": 1}', 'ev', true);
         insert into realtime.messages(topic, extension, payload, event) values ('room1', 'broadcast', null, 'ev');
         insert into realtime.messages(topic, extension, payload, event) values ('room1', 'presence', '{}', 'ev');
         insert into realtime.messages(topic, extension, payload, event) values ('room2', 'broadcast', '[1]', 'other');
         commit;",
    );
    let b = take(&rx);
    assert!(b.changes.is_empty());
    assert_eq!(b.messages.len(), 2);
    let m = &b.messages[0];
    assert_eq!((m.topic.as_str(), m.event.as_str(), &*m.payload, m.private), ("room1", "ev", "{\"a\": 1}", true));
    assert_eq!(m.id.len(), 36);
    assert_eq!((b.messages[1].topic.as_str(), b.messages[1].private), ("room2", false));

    // Row level security comes from the catalog: with a shape change (a Relation message) at
    // once, without one within the refresh interval.
    sql(&mut conn, "alter table items enable row level security; alter table items add column extra int");
    sql(&mut conn, "insert into items(id, extra) values (20, 7)");
    let c = &take(&rx).changes[0];
    assert!(c.relation.rls_enabled);
    assert_eq!(c.relation.columns.len(), 9);
    assert_eq!(v(&c.record, 8), Some("7"));
    sql(&mut conn, "alter table items disable row level security");
    std::thread::sleep(Duration::from_millis(2500));
    sql(&mut conn, "insert into items(id) values (22)");
    let c = &take(&rx).changes[0];
    assert!(!c.relation.rls_enabled, "refreshed without a Relation message");

    // Truncates are counted, not delivered.
    sql(&mut conn, "truncate full_items");
    sql(&mut conn, "insert into items(id) values (21)");
    // (the truncate's own transaction is empty for the shards: nothing is published for it)
    let c = &take(&rx).changes[0];
    assert_eq!(v(&c.record, 0), Some("21"));
    assert_eq!(core.stats.truncates(), 1);
    assert!(core.stats.last_error().is_empty(), "{}", core.stats.last_error());
    core.stop();
    core.join();
}

fn slot_confirmed(conn: &mut BlockingConnection) -> Lsn {
    let text =
        scalar(conn, "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = 'madbase_realtime'");
    text.as_deref().and_then(parse_lsn).unwrap_or(0)
}

#[test]
fn the_slot_is_confirmed_only_after_every_shard_took_the_batch() {
    let cluster = Cluster::ephemeral().unwrap();
    let mut conn = db(&cluster);
    sql(&mut conn, "create table t(id int primary key); create publication supabase_realtime for table t");
    let (core, rx) = start(&cluster);
    wait_for("the core to stream", || core.stats.connected());
    sql(&mut conn, "insert into t values (1)");
    let first = next(&rx);
    // Quiet afterwards (keepalives, status updates) and still not confirmed.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(slot_confirmed(&mut conn) < first.end_lsn);
    assert!(core.stats.confirmed_lsn() < first.end_lsn);
    // A second batch taken before the first: still not confirmed past the first.
    sql(&mut conn, "insert into t values (2)");
    let second = next(&rx);
    second.taken();
    std::thread::sleep(Duration::from_millis(500));
    assert!(slot_confirmed(&mut conn) < first.end_lsn);
    first.taken();
    wait_for("the slot to be confirmed past both", || slot_confirmed(&mut conn) >= second.end_lsn);
    assert!(core.stats.confirmed_lsn() >= second.end_lsn);
    assert!(core.stats.received_lsn() >= core.stats.confirmed_lsn() || core.stats.received_lsn() > 0);
    // Idle, with WAL written only for an unpublished table: the slot still moves on.
    sql(&mut conn, "create table other(x int); insert into other values (1)");
    let wal = parse_lsn(&scalar(&mut conn, "select pg_current_wal_lsn()::text").unwrap()).unwrap();
    wait_for("the slot to follow idle WAL", || slot_confirmed(&mut conn) >= wal);
    core.stop();
    core.join();
}

/// Collects the numbers of `numbers` rows as batches arrive, taking each batch.
fn collector(rx: Receiver<Arc<ChangeBatch>>, seen: Arc<Mutex<Vec<i64>>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while let Ok(b) = rx.recv() {
            let mut s = seen.lock().unwrap();
            for c in &b.changes {
                s.push(v(&c.record, 0).unwrap().parse().unwrap());
            }
            drop(s);
            b.taken();
        }
    })
}

#[test]
fn no_loss_no_duplicates_across_killed_connections_and_a_restart() {
    let cluster = Cluster::ephemeral().unwrap();
    let mut conn = db(&cluster);
    sql(
        &mut conn,
        "create table numbers(n bigint primary key); create publication supabase_realtime for table numbers",
    );
    let (core, rx) = start(&cluster);
    wait_for("the core to stream", || core.stats.connected());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let collecting = collector(rx, seen.clone());

    // A writer commits numbered rows, one per transaction, until told to stop.
    let stop_writer = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, committed, mut w) = (stop_writer.clone(), committed.clone(), db(&cluster));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                sql(&mut w, &format!("insert into numbers values ({n})"));
                committed.store(n, Ordering::Relaxed);
            }
        })
    };

    let mut kills = 0;
    while kills < 3 {
        let before = seen.lock().unwrap().len();
        wait_for("changes to flow", || seen.lock().unwrap().len() > before + 50);
        let killed = scalar(
            &mut conn,
            "select count(pg_terminate_backend(pid)) from pg_stat_replication \
             where application_name = 'madbase realtime replication'",
        );
        if killed.as_deref() == Some("1") {
            kills += 1;
            wait_for("a reconnect", || core.stats.reconnects() >= kills);
        }
    }
    stop_writer.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let total = committed.load(Ordering::Relaxed);
    wait_for("every committed number", || seen.lock().unwrap().len() as u64 >= total);
    std::thread::sleep(Duration::from_millis(300));
    {
        let s = seen.lock().unwrap();
        let expected: Vec<i64> = (1..=total as i64).collect();
        assert!(
            *s == expected,
            "{} received for {total} committed; first difference at {:?}",
            s.len(),
            first_diff(&s, &expected)
        );
    }
    assert!(core.stats.reconnects() >= 3);
    eprintln!(
        "{total} committed; {} published, {} resent and skipped, {} reconnects",
        core.stats.transactions(),
        core.stats.transactions_skipped(),
        core.stats.reconnects()
    );

    // Restart the core: what was confirmed is not delivered again, what was committed while it
    // was down is delivered once.
    let wal = core.stats.received_lsn();
    wait_for("everything confirmed", || core.stats.confirmed_lsn() >= wal && core.stats.in_flight() == 0);
    core.stop();
    core.join();
    collecting.join().unwrap();
    sql(&mut conn, &format!("insert into numbers select generate_series({}, {})", total + 1, total + 50));
    for i in 0..20 {
        sql(&mut conn, &format!("insert into numbers values ({})", total + 51 + i));
    }
    let seen2 = Arc::new(Mutex::new(Vec::new()));
    let (core, rx) = start(&cluster);
    let collecting = collector(rx, seen2.clone());
    wait_for("the changes made while stopped", || seen2.lock().unwrap().len() >= 70);
    std::thread::sleep(Duration::from_millis(500));
    let s = seen2.lock().unwrap().clone();
    let expected: Vec<i64> = (total as i64 + 1..=total as i64 + 70).collect();
    assert_eq!(s, expected);
    core.stop();
    core.join();
    collecting.join().unwrap();
}

fn first_diff(a: &[i64], b: &[i64]) -> Option<(usize, Option<i64>, Option<i64>)> {
    (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)).map(|i| (i, a.get(i).copied(), b.get(i).copied()))
}
