//! The schema cache from the outside: the real binary against a real PostgreSQL.
//!
//! Unknown relations are PGRST205 with PostgREST's body and fuzzy hint (answered without asking
//! PostgreSQL: its own answer would be 42P01); DDL reaches every shard through MadBase's event
//! trigger; `NOTIFY pgrst` reloads with `reload schema` and with an empty payload; drops are seen;
//! the LISTEN connection comes back after its backend is terminated. Every wait is a bounded poll,
//! never a timing assertion.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{token, HttpResponse, TestServer};

fn service_get(server: &TestServer, path: &str) -> HttpResponse {
    let key = format!("Bearer {}", token(json!({"role": "service_role"})));
    server.request("GET", path, &[("authorization", &key)], b"")
}

/// Waits (at most 30 s) until `needle` occurs at least `count` times in MadBase's log.
fn wait_for_log(server: &TestServer, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.log().matches(needle).count() < count {
        assert!(Instant::now() < deadline, "{needle:?} not logged {count} times in 30 s:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_pgrst205(response: &HttpResponse, name: &str, hint: Option<&str>) {
    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(response.header("proxy-status"), Some("PostgREST; error=PGRST205"));
    let expected = json!({
        "code": "PGRST205",
        "details": null,
        "hint": hint.map(|h| format!("Perhaps you meant the table '{h}'")),
        "message": format!("Could not find the table 'public.{name}' in the schema cache"),
    });
    assert_eq!(response.text(), expected.to_string());
}

#[test]
fn reloads_on_ddl_and_notify_on_every_shard() {
    let server = TestServer::start();
    // The listener is up and has done its first reload: from here every reload is caused below.
    wait_for_log(&server, "listening for schema reloads", 1);
    wait_for_log(&server, "schema cache reloaded", 1);

    assert_pgrst205(&service_get(&server, "/rest/v1/items"), "items", None);

    // DDL after start: the event trigger notifies, the reload reaches both shards.
    server.sql(
        "create table public.items (id int primary key, name text);
         insert into public.items values (1, 'one'), (2, 'two');",
    );
    server.wait_for_relations(&["items"]);
    for _ in 0..20 {
        // Fresh connections each time: SO_REUSEPORT spreads them over both shards.
        let r = service_get(&server, "/rest/v1/items?select=id,name&order=id");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!([{"id": 1, "name": "one"}, {"id": 2, "name": "two"}]));
    }

    // Unknown names: PostgREST's exact body, the closest name as the hint, or null.
    assert_pgrst205(&service_get(&server, "/rest/v1/itemz"), "itemz", Some("public.items"));
    assert_pgrst205(&service_get(&server, "/rest/v1/item"), "item", Some("public.items"));
    assert_pgrst205(&service_get(&server, "/rest/v1/zzzzzzzz"), "zzzzzzzz", None);
    // Also for requests PostgreSQL would have refused anyway (anon without a grant): nothing is asked.
    let anon = server.get("/rest/v1/itemz");
    assert_eq!(anon.status, 404, "{}", anon.text());

    // Without the trigger, DDL is not seen until someone says so with NOTIFY.
    server.sql("alter event trigger madbase_schema_reload_ddl disable");
    server.sql("create table public.quiet (id int)");
    std::thread::sleep(Duration::from_millis(1500)); // longer than the reloader's debounce window
    assert_pgrst205(&service_get(&server, "/rest/v1/quiet"), "quiet", None);
    server.sql("notify pgrst, 'reload schema'");
    server.wait_for_relations(&["quiet"]);

    // An empty payload reloads too, and so does `reload config` (settings are in the snapshot).
    server.sql("create table public.quiet_two (id int)");
    server.sql("notify pgrst");
    server.wait_for_relations(&["quiet_two"]);
    server.sql("create table public.quiet_three (id int)");
    server.sql("notify pgrst, 'reload config'");
    server.wait_for_relations(&["quiet_three"]);
    server.sql("alter event trigger madbase_schema_reload_ddl enable");

    // Drops go through the sql_drop trigger.
    server.sql("drop table public.items");
    server.wait_for_relations_gone(&["items"]);
    assert_pgrst205(&service_get(&server, "/rest/v1/items"), "items", None);
    let r = service_get(&server, "/rest/v1/quiet_two");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn listener_reconnects_after_its_backend_is_terminated() {
    let server = TestServer::start();
    wait_for_log(&server, "listening for schema reloads", 1);
    wait_for_log(&server, "schema cache reloaded", 1);

    let killed = server.sql(
        "select pg_terminate_backend(pid)::text from pg_stat_activity
         where application_name = 'madbase schema listener'",
    );
    assert_eq!(killed[0].rows.len(), 1, "exactly one listener connection");
    assert_eq!(killed[0].rows[0].get_str(0), Some("true"));

    // It comes back, reloads (notifications may have been missed), and listens again.
    wait_for_log(&server, "listening for schema reloads", 2);
    wait_for_log(&server, "schema cache reloaded", 2);
    server.sql("create table public.after_reconnect (id int)");
    server.wait_for_relations(&["after_reconnect"]);
    let listeners =
        server.sql("select count(*)::text from pg_stat_activity where application_name = 'madbase schema listener'");
    assert_eq!(listeners[0].rows[0].get_str(0), Some("1"));
}
