//! Realtime's database side (migration 0009, `madbase_realtime::{authorize, rls}`) against a real
//! PostgreSQL migrated by the real `madbase` binary: `realtime.send`, `broadcast_changes`, the
//! private-channel check with the supabase-js fixture policy, the RLS visibility batches with a
//! policy that raises for one user, and running the migration twice.
//!
//! The checks run the way a shard runs them: on a connection logged in as `authenticator` (the
//! login role of MadBase's lanes). With `DATABASE_URL`, MadBase itself logs in as the URL's role,
//! so the test gives `authenticator` a password and connects as it.

mod support;

use std::sync::Arc;

use madbase_pg::{Connection, PgError, StatementResult};
use madbase_realtime::authorize::{parse_private_channel, private_channel_batch, ChannelPermissions};
use madbase_realtime::changes::{Change, ChangeKind, Column, Relation, ReplicaIdentity, Row};
use madbase_realtime::rls::{visibility_batch, GroupCheck};
use support::{as_authenticator, TestServer, ALICE, BOB};

const MIGRATION: &str = include_str!("../migrations/0009_realtime.sql");

/// The supabase-js integration suite's fixture (its `realtime_rls_setup` migration).
const FIXTURE: &str = r#"
create policy "authenticated can receive" on realtime.messages for select to authenticated
  using (realtime.topic() like '%channel%');
create policy "authenticated can send" on realtime.messages for insert to authenticated
  with check (realtime.topic() like '%channel%');
"#;

fn value(server: &TestServer, sql: &str) -> String {
    let sets = server.sql(sql);
    let last = sets.iter().rev().find(|set| !set.rows.is_empty()).unwrap_or_else(|| panic!("no rows: {sql}"));
    last.rows[0].get_str(0).unwrap_or("NULL").to_owned()
}

fn claims(sub: &str, role: &str) -> String {
    format!(r#"{{"sub":"{sub}","role":"{role}","exp":9999999999}}"#)
}

#[test]
fn schema_send_broadcast_changes_and_idempotence() {
    let server = TestServer::start();
    assert_eq!(value(&server, "select count(*) from _madbase.migrations where version = 9 and name = 'realtime'"), "1");
    assert_eq!(
        value(&server, "select relrowsecurity::text from pg_class where oid = 'realtime.messages'::regclass"),
        "true"
    );
    assert_eq!(value(&server, "select relkind::text from pg_class where oid = 'realtime.messages'::regclass"), "r");
    assert_eq!(
        value(
            &server,
            "select string_agg(pubname::text, ',' order by pubname) from pg_publication \
             where pubname like 'supabase_realtime%'"
        ),
        "supabase_realtime,supabase_realtime_messages_publication"
    );
    assert_eq!(
        value(&server, "select string_agg(tablename::text, ',') from pg_publication_tables where pubname = 'supabase_realtime_messages_publication'"),
        "messages"
    );
    assert_eq!(value(&server, "select count(*) from pg_publication_tables where pubname = 'supabase_realtime'"), "0");
    // Grants as Supabase gives them; the staging helper only for authenticator.
    for role in ["anon", "authenticated", "service_role"] {
        assert_eq!(
            value(
                &server,
                &format!("select has_table_privilege('{role}', 'realtime.messages', 'select, insert, update')::text")
            ),
            "true"
        );
        assert_eq!(
            value(&server, &format!(
                "select has_function_privilege('{role}', '_madbase.realtime_stage_channel_probes(text, uuid, uuid)', 'execute')::text"
            )),
            "false",
            "{role} must not stage probes"
        );
    }
    assert_eq!(
        value(&server, "select has_function_privilege('authenticator', '_madbase.realtime_stage_channel_probes(text, uuid, uuid)', 'execute')::text"),
        "true"
    );

    // realtime.topic()
    assert_eq!(value(&server, "select coalesce(realtime.topic(), 'NULL')"), "NULL");
    assert_eq!(
        value(&server, "select set_config('realtime.topic', 'room-1', false); select realtime.topic()"),
        "room-1"
    );

    // realtime.send inserts a private broadcast with the id in its payload.
    server.sql("select realtime.send('{\"hello\":\"world\"}', 'ev', 'room-1')");
    assert_eq!(
        value(&server, "select format('%s|%s|%s|%s|%s', topic, event, extension, private, payload ? 'id' and payload->>'id' = id::text) from realtime.messages"),
        "room-1|ev|broadcast|t|t"
    );
    // An explicit id is kept; `private` can be false.
    server.sql("select realtime.send('{\"id\":\"mine\"}', 'ev2', 'room-2', false)");
    assert_eq!(
        value(&server, "select payload->>'id' || '|' || private from realtime.messages where topic = 'room-2'"),
        "mine|false"
    );
    // It never fails the caller's transaction: a refusing policy is a warning.
    server.sql(
        "create function public.refuse() returns trigger language plpgsql as $$ begin raise exception 'no'; end $$;
         create trigger refuse before insert on realtime.messages for each row when (new.topic = 'refused')
           execute function public.refuse();",
    );
    server.sql("select realtime.send('{}', 'ev', 'refused')");
    assert_eq!(value(&server, "select count(*) from realtime.messages where topic = 'refused'"), "0");

    // broadcast_changes from a row trigger, Supabase's payload shape.
    server.sql(
        "create table public.rooms (id int primary key, name text);
         create function public.rooms_broadcast() returns trigger language plpgsql security definer as $$
         begin
           perform realtime.broadcast_changes('room:' || coalesce(new.id, old.id)::text, tg_op, tg_op, tg_table_name,
                                              tg_table_schema, new, old);
           return null;
         end $$;
         create trigger rooms_broadcast after insert or update or delete on public.rooms
           for each row execute function public.rooms_broadcast();
         insert into public.rooms values (1, 'a');
         update public.rooms set name = 'b' where id = 1;
         delete from public.rooms where id = 1;",
    );
    let payloads = server.sql(
        "select event, (payload - 'id')::text, private::text from realtime.messages where topic = 'room:1' order by inserted_at, event desc",
    );
    let rows: Vec<(String, String, String)> = payloads[0]
        .rows
        .iter()
        .map(|r| (r.get_str(0).unwrap().into(), r.get_str(1).unwrap().into(), r.get_str(2).unwrap().into()))
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let by_event = |e: &str| rows.iter().find(|r| r.0 == e).map(|r| r.1.clone()).unwrap();
    assert_eq!(
        by_event("INSERT"),
        r#"{"table": "rooms", "record": {"id": 1, "name": "a"}, "schema": "public", "operation": "INSERT", "old_record": null}"#
    );
    assert_eq!(
        by_event("UPDATE"),
        r#"{"table": "rooms", "record": {"id": 1, "name": "b"}, "schema": "public", "operation": "UPDATE", "old_record": {"id": 1, "name": "a"}}"#
    );
    assert_eq!(
        by_event("DELETE"),
        r#"{"table": "rooms", "record": null, "schema": "public", "operation": "DELETE", "old_record": {"id": 1, "name": "b"}}"#
    );
    assert!(rows.iter().all(|r| r.2 == "true"));

    // Old messages are deleted by the helper, which returns the count.
    server.sql("update realtime.messages set inserted_at = now() - interval '4 days' where topic = 'room-1'");
    assert_eq!(value(&server, "select _madbase.realtime_delete_old_messages()"), "1");
    assert_eq!(value(&server, "select _madbase.realtime_delete_old_messages('1 hour')"), "0");

    // Running the migration again (what a database with Supabase's objects sees) is harmless.
    let before = value(&server, "select count(*) from realtime.messages");
    server.sql(MIGRATION);
    server.sql(MIGRATION);
    assert_eq!(value(&server, "select count(*) from realtime.messages"), before);
    assert_eq!(value(&server, "select count(*) from pg_publication where pubname like 'supabase_realtime%'"), "2");
}

async fn check_channel(conn: &Connection, role: &str, sub: &str, topic: &str) -> Result<ChannelPermissions, String> {
    let results =
        conn.execute(private_channel_batch(role, &claims(sub, role), topic)).await.map_err(|e| e.to_string())?;
    parse_private_channel(&results).map_err(|e| e.to_string())
}

#[test]
fn private_channel_authorisation() {
    let server = TestServer::start();
    server.sql(FIXTURE);
    let (allowed, other_topic, anon, service) = as_authenticator(&server, async |conn| {
        (
            check_channel(conn, "authenticated", ALICE, "my-channel-1").await,
            check_channel(conn, "authenticated", ALICE, "room-1").await,
            check_channel(conn, "anon", "", "my-channel-1").await,
            check_channel(conn, "service_role", "", "my-channel-1").await,
        )
    });
    let all =
        ChannelPermissions { read_broadcast: true, write_broadcast: true, read_presence: true, write_presence: true };
    assert_eq!(allowed.unwrap(), all);
    assert_eq!(other_topic.unwrap(), ChannelPermissions::default());
    assert_eq!(anon.unwrap(), ChannelPermissions::default());
    // service_role bypasses RLS, as on Supabase.
    assert_eq!(service.unwrap(), all);
    // Nothing staged or inserted was committed.
    assert_eq!(value(&server, "select count(*) from realtime.messages"), "0");

    // Read and write are separate, and per extension.
    server.sql(
        "drop policy \"authenticated can send\" on realtime.messages;
         create policy \"presence only\" on realtime.messages for insert to authenticated
           with check (realtime.messages.extension = 'presence');",
    );
    let split =
        as_authenticator(&server, async |conn| check_channel(conn, "authenticated", ALICE, "my-channel-1").await);
    assert_eq!(
        split.unwrap(),
        ChannelPermissions { read_broadcast: true, write_broadcast: false, read_presence: true, write_presence: true }
    );

    // Policies see the claims (auth.uid()) and the topic.
    server.sql(&format!(
        "create policy \"alice's room\" on realtime.messages for select to authenticated
           using (realtime.topic() = 'alice-room' and auth.uid() = '{ALICE}');"
    ));
    let (alice, bob) = as_authenticator(&server, async |conn| {
        (
            check_channel(conn, "authenticated", ALICE, "alice-room").await,
            check_channel(conn, "authenticated", BOB, "alice-room").await,
        )
    });
    assert!(alice.unwrap().read_broadcast);
    assert!(!bob.unwrap().read_broadcast);

    // A policy that raises fails that check (the join is refused) and nothing else.
    server.sql(
        "create function public.explode() returns boolean language plpgsql as $$ begin raise exception 'boom'; end $$;
         create policy \"boom\" on realtime.messages for select to authenticated using (realtime.topic() <> 'boom' or public.explode());",
    );
    let (boom, fine) = as_authenticator(&server, async |conn| {
        (
            check_channel(conn, "authenticated", ALICE, "boom").await,
            check_channel(conn, "authenticated", ALICE, "my-channel-1").await,
        )
    });
    assert!(boom.unwrap_err().contains("boom"));
    assert!(fine.unwrap().read_broadcast);

    // The API roles cannot stage probes themselves.
    let denied = as_authenticator(&server, async |conn| {
        conn.execute(
            madbase_pg::Batch::new()
                .role("authenticated")
                .query("select _madbase.realtime_stage_channel_probes('x', gen_random_uuid(), gen_random_uuid())"),
        )
        .await
    });
    assert_eq!(denied.unwrap_err().code(), Some("42501"));
}

/// The relation and changes the replication core would decode for `public.notes`.
fn notes_relation(oid: u32) -> Arc<Relation> {
    let col = |name: &str, type_name: &str, key: bool| Column {
        name: name.into(),
        type_oid: 0,
        type_name: type_name.into(),
        key,
    };
    Arc::new(Relation {
        oid,
        schema: "public".into(),
        table: "notes".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![col("id", "int8", true), col("owner", "uuid", false), col("body", "text", false)],
        rls_enabled: true,
        primary_key: vec![0],
    })
}

fn note(relation: &Arc<Relation>, kind: ChangeKind, id: i64, owner: &str) -> Change {
    let row =
        Row { values: vec![Some(id.to_string().into()), Some(format!("\"{owner}\"").into()), Some("\"b\"".into())] };
    let (record, old_record) = match kind {
        ChangeKind::Delete => (None, Some(Row { values: vec![Some(id.to_string().into()), None, None] })),
        _ => (Some(row), None),
    };
    Change { relation: relation.clone(), kind, record, old_record }
}

type GroupAnswer = Result<Vec<bool>, String>;

async fn run_group(conn: &Connection, role: &str, claims_json: &str, changes: &[&Change]) -> GroupAnswer {
    let (batch, plan) = visibility_batch(&GroupCheck { role, claims_json, changes });
    if plan.is_trivial() {
        return Ok(plan.unchecked());
    }
    let results: Result<Vec<StatementResult>, PgError> = conn.execute(batch).await;
    plan.parse(&results.map_err(|e| e.to_string())?).map_err(|e| e.to_string())
}

#[test]
fn postgres_changes_visibility() {
    let server = TestServer::start();
    const CAROL: &str = "33333333-3333-3333-3333-333333333333";
    server.sql(&format!(
        "create table public.notes (id bigint primary key, owner uuid not null, body text);
         alter table public.notes enable row level security;
         create function public.guard(owner uuid) returns boolean language plpgsql stable as $$
         begin
           if auth.uid() = '{CAROL}' then raise exception 'carol breaks policies'; end if;
           return owner = auth.uid();
         end $$;
         create policy \"own notes\" on public.notes for select to authenticated using (public.guard(owner));
         insert into public.notes values (1, '{ALICE}', 'a'), (2, '{BOB}', 'b'), (3, '{ALICE}', 'c');"
    ));
    let oid: u32 = value(&server, "select 'public.notes'::regclass::oid::text").parse().unwrap();
    let rel = notes_relation(oid);
    let changes = [
        note(&rel, ChangeKind::Insert, 1, ALICE),
        note(&rel, ChangeKind::Update, 2, BOB),
        note(&rel, ChangeKind::Insert, 3, ALICE),
        note(&rel, ChangeKind::Delete, 9, BOB),   // never checked
        note(&rel, ChangeKind::Insert, 4, ALICE), // not in the table (rolled back since)
    ];
    let refs: Vec<&Change> = changes.iter().collect();
    let (alice_claims, bob_claims, carol_claims, anon_claims) = (
        claims(ALICE, "authenticated"),
        claims(BOB, "authenticated"),
        claims(CAROL, "authenticated"),
        r#"{"role":"anon"}"#.to_owned(),
    );
    let (alice, bob, carol, anon, alice_again) = as_authenticator(&server, async |conn| {
        // One batch per group on one connection, each its own transaction (awaited in turn: the
        // isolation comes from the transaction boundary, not from the timing).
        let a = run_group(conn, "authenticated", &alice_claims, &refs);
        let b = run_group(conn, "authenticated", &bob_claims, &refs);
        let c = run_group(conn, "authenticated", &carol_claims, &refs);
        let d = run_group(conn, "anon", &anon_claims, &refs);
        let e = run_group(conn, "authenticated", &alice_claims, &refs);
        (a.await, b.await, c.await, d.await, e.await)
    });
    assert_eq!(alice.unwrap(), [true, false, true, true, false]);
    assert_eq!(bob.unwrap(), [false, true, false, true, false]);
    let carol = carol.unwrap_err();
    assert!(carol.contains("carol breaks policies"), "{carol}");
    // anon has no policy: it sees no row (DELETE is never checked).
    assert_eq!(anon.unwrap(), [false, false, false, true, false]);
    // The group after the one that failed is answered normally.
    assert_eq!(alice_again.unwrap(), [true, false, true, true, false]);
}
