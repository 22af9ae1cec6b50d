//! `/rest/v1` writes end to end: the real binary against a real PostgreSQL. Insert (single, bulk,
//! `columns=`, every `return=`), upsert, PATCH and DELETE with filters and RLS, atomicity of bulk
//! inserts, `max-affected`, `tx=rollback`, body errors, and hostile names in payload keys.

mod support;

use serde_json::{json, Value};
use support::{assert_pgrst_error as assert_error, bearer, service_role as service, TestServer, ALICE, BOB};

const SCHEMA: &str = r#"
create table public.todos (
  id int primary key,
  task text not null,
  done boolean not null default false,
  owner uuid,
  score numeric(5,2)
);
insert into public.todos values
  (1, 'buy milk', false, '11111111-1111-1111-1111-111111111111', 1.50),
  (2, 'walk dog', true,  '22222222-2222-2222-2222-222222222222', null),
  (3, 'secret',   false, '33333333-3333-3333-3333-333333333333', null);
alter table public.todos enable row level security;
create policy anon_public on public.todos for all to anon
  using (task <> 'secret') with check (task <> 'secret');
create policy users_own on public.todos for all to authenticated
  using (owner = auth.uid()) with check (owner = auth.uid());
"#;

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// The table as the superuser sees it, ordered by id.
fn rows(server: &TestServer) -> Value {
    let result = server
        .sql("select coalesce(json_agg(t order by id), '[]')::text from (select id, task, done from public.todos) t");
    serde_json::from_str(result[0].rows[0].get_str(0).expect("json")).expect("json")
}

#[test]
fn inserts_and_upserts() {
    let server = TestServer::start();
    server.sql(SCHEMA);
    server.wait_for_relations(&["todos"]);
    let svc = service();
    let auth = ("Authorization", svc.as_str());

    // Single object, default return=minimal: 201, no body, Content-Range */*.
    let r = server.request("POST", "/rest/v1/todos", &[JSON, auth], br#"{"id":10,"task":"ten"}"#);
    assert_eq!((r.status, r.text().as_str()), (201, ""));
    assert_eq!(r.header("content-range"), Some("*/*"));
    assert_eq!(r.header("preference-applied"), None);
    assert_eq!(r.header("location"), None);
    assert_eq!(rows(&server)[3], json!({"id": 10, "task": "ten", "done": false}), "absent keys take defaults");

    // return=representation honours select=; the body is PostgreSQL's JSON.
    let r = server.request(
        "POST",
        "/rest/v1/todos?select=id,task,score",
        &[JSON, auth, ("Prefer", "return=representation")],
        br#"{"id":11,"task":"eleven","score":2.50}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.text(), r#"[{"id":11,"task":"eleven","score":2.50}]"#);
    assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(r.header("content-range"), Some("*/*"));
    assert_eq!(r.header("preference-applied"), Some("return=representation"));

    // return=headers-only: Location from the primary key of the single inserted row.
    let r = server.request(
        "POST",
        "/rest/v1/todos",
        &[JSON, auth, ("Prefer", "return=headers-only")],
        br#"{"id":12,"task":"x"}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (201, ""));
    assert_eq!(r.header("location"), Some("/todos?id=eq.12"));
    assert_eq!(r.header("preference-applied"), Some("return=headers-only"));

    // Bulk, with count=exact: one statement, Content-Range */2.
    let r = server.request(
        "POST",
        "/rest/v1/todos?select=id,done",
        &[JSON, auth, ("Prefer", "return=representation, count=exact")],
        br#"[{"id":13,"task":"a","done":true},{"id":14,"task":"b","done":false}]"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // json_agg's own separator, byte for byte what PostgREST sends.
    assert_eq!(r.text(), "[{\"id\":13,\"done\":true}, \n {\"id\":14,\"done\":false}]");
    assert_eq!(r.header("content-range"), Some("*/2"));
    assert_eq!(r.header("preference-applied"), Some("return=representation, count=exact"));

    // columns= (quoted as postgrest-js sends it): other keys are ignored, absent ones are NULL.
    let r = server.request(
        "POST",
        "/rest/v1/todos?columns=%22id%22,%22task%22&select=id,task,done,score",
        &[JSON, auth, ("Prefer", "return=representation")],
        br#"[{"id":15,"task":"c","done":true,"nope":1},{"id":16,"task":"d","score":9}]"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json(),
        json!([{"id":15,"task":"c","done":false,"score":null},{"id":16,"task":"d","done":false,"score":null}])
    );

    // A bulk insert with one bad row writes nothing.
    let before = rows(&server);
    let r =
        server.request("POST", "/rest/v1/todos", &[JSON, auth], br#"[{"id":20,"task":"ok"},{"id":21,"task":null}]"#);
    let body = assert_error(&r, 400, "23502");
    assert!(body["message"].as_str().unwrap().contains("not-null constraint"), "{body}");
    let r =
        server.request("POST", "/rest/v1/todos", &[JSON, auth], br#"[{"id":22,"task":"ok"},{"id":1,"task":"dup"}]"#);
    let body = assert_error(&r, 409, "23505");
    assert_eq!(body["details"], "Key (id)=(1) already exists.");
    assert_eq!(rows(&server), before);

    // Upsert: merge-duplicates updates, ignore-duplicates keeps the existing row.
    let r = server.request(
        "POST",
        "/rest/v1/todos?on_conflict=id&select=id,task",
        &[JSON, auth, ("Prefer", "resolution=merge-duplicates, return=representation")],
        br#"[{"id":10,"task":"ten!"},{"id":17,"task":"new"}]"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), json!([{"id":10,"task":"ten!"},{"id":17,"task":"new"}]));
    assert_eq!(r.header("preference-applied"), Some("resolution=merge-duplicates, return=representation"));
    let r = server.request(
        "POST",
        "/rest/v1/todos?on_conflict=id&select=id,task",
        &[JSON, auth, ("Prefer", "resolution=ignore-duplicates,return=representation")],
        br#"[{"id":10,"task":"ignored"},{"id":18,"task":"eighteen"}]"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.text(), r#"[{"id":18,"task":"eighteen"}]"#);
    assert_eq!(rows(&server).as_array().unwrap().iter().find(|r| r["id"] == 10).unwrap()["task"], "ten!");

    // missing=default: honoured when nothing is missing.
    let r = server.request(
        "POST",
        "/rest/v1/todos",
        &[JSON, auth, ("Prefer", "missing=default")],
        br#"{"id":19,"task":"m"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("preference-applied"), Some("missing=default"));

    // tx=rollback: the representation comes back, nothing stays.
    let before = rows(&server);
    let r = server.request(
        "POST",
        "/rest/v1/todos?select=id,task",
        &[JSON, auth, ("Prefer", "return=representation, tx=rollback")],
        br#"{"id":30,"task":"gone"}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (201, r#"[{"id":30,"task":"gone"}]"#));
    assert_eq!(r.header("preference-applied"), Some("return=representation, tx=rollback"));
    assert_eq!(rows(&server), before);

    // An empty array inserts nothing.
    let r = server.request("POST", "/rest/v1/todos", &[JSON, auth, ("Prefer", "return=representation")], b"[]");
    assert_eq!((r.status, r.text().as_str(), r.header("content-range")), (201, "[]", Some("*/*")));

    // RLS: anon may insert public rows only; the violation is 42501 → 401 for anon, 403 with a token.
    let r = server.request("POST", "/rest/v1/todos", &[JSON], br#"{"id":40,"task":"anon row"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = server.request("POST", "/rest/v1/todos", &[JSON], br#"{"id":41,"task":"secret"}"#);
    let body = assert_error(&r, 401, "42501");
    assert_eq!(body["message"], "new row violates row-level security policy for table \"todos\"");
    let alice = bearer(json!({"role": "authenticated", "sub": ALICE}));
    let r = server.request(
        "POST",
        "/rest/v1/todos",
        &[JSON, ("Authorization", &alice)],
        format!(r#"{{"id":42,"task":"mine","owner":"{ALICE}"}}"#).as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = server.request(
        "POST",
        "/rest/v1/todos",
        &[JSON, ("Authorization", &alice)],
        format!(r#"{{"id":43,"task":"bob's","owner":"{BOB}"}}"#).as_bytes(),
    );
    assert_error(&r, 403, "42501");

    // Body errors, exactly as PostgREST.
    let r = server.request("POST", "/rest/v1/todos", &[JSON, auth], b"{\"id\":");
    assert_error(&r, 400, "PGRST102");
    assert_eq!(r.text(), r#"{"code":"PGRST102","details":null,"hint":null,"message":"Empty or invalid json"}"#);
    assert_eq!(r.header("proxy-status"), Some("PostgREST; error=PGRST102"));
    assert_eq!(server.request("POST", "/rest/v1/todos", &[JSON, auth], b"").json()["message"], "Empty or invalid json");
    let r = server.request("POST", "/rest/v1/todos", &[JSON, auth], br#"[{"id":50,"task":"a"},{"id":51}]"#);
    assert_eq!(assert_error(&r, 400, "PGRST102")["message"], "All object keys must match");
    let r = server.request("POST", "/rest/v1/todos", &[("Content-Type", "text/plain"), auth], b"hi");
    assert_eq!(assert_error(&r, 400, "PGRST102")["message"], "Content-Type not acceptable: text/plain");
    assert_error(
        &server.request("POST", "/rest/v1/todos", &[JSON, ("Content-Profile", "auth")], b"{}"),
        406,
        "PGRST106",
    );

    // Hostile names in payload keys and columns= are unknown columns: PGRST204 before any SQL.
    let before = rows(&server);
    let r = server.request(
        "POST",
        "/rest/v1/todos",
        &[JSON, auth],
        br#"{"id":60,"task\"); drop table public.todos; --":"x"}"#,
    );
    assert_eq!(
        assert_error(&r, 400, "PGRST204")["message"],
        "Could not find the 'task\"); drop table public.todos; --' column of 'todos' in the schema cache"
    );
    let r = server.request(
        "POST",
        "/rest/v1/todos?columns=id,%22task%5C%22)%3B%20drop%20table%20public.todos%3B%20--%22",
        &[JSON, auth],
        br#"{"id":61,"task":"x"}"#,
    );
    assert_error(&r, 400, "PGRST204");
    let r = server.request("POST", "/rest/v1/todos?columns=id;drop", &[JSON, auth], br#"{"id":62}"#);
    assert_error(&r, 400, "PGRST100");
    assert_eq!(rows(&server), before, "table intact");
}

#[test]
fn updates_and_deletes() {
    let server = TestServer::start();
    server.sql(SCHEMA);
    server.wait_for_relations(&["todos"]);
    let svc = service();
    let auth = ("Authorization", svc.as_str());

    // PATCH with a filter: 204, Content-Range 0-0/*.
    let r = server.request("PATCH", "/rest/v1/todos?id=eq.1", &[JSON, auth], br#"{"done":true}"#);
    assert_eq!((r.status, r.text().as_str()), (204, ""));
    assert_eq!(r.header("content-range"), Some("0-0/*"));
    assert_eq!(rows(&server)[0]["done"], true);
    let r = server.request(
        "PATCH",
        "/rest/v1/todos?id=eq.1&select=id,task",
        &[JSON, auth, ("Prefer", "return=representation")],
        br#"{"task":"buy oat milk"}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (200, r#"[{"id":1,"task":"buy oat milk"}]"#));
    assert_eq!(r.header("content-range"), Some("0-0/*"));
    let r = server.request("PATCH", "/rest/v1/todos?id=eq.99", &[JSON, auth], br#"{"done":true}"#);
    assert_eq!((r.status, r.header("content-range")), (204, Some("*/*")));

    // Anonymous PATCH without filters touches every row RLS lets anon see (not the secret one).
    let r = server.request("PATCH", "/rest/v1/todos", &[JSON, ("Prefer", "count=exact")], br#"{"done":false}"#);
    assert_eq!((r.status, r.header("content-range")), (204, Some("0-1/2")));
    let result = server.sql("update public.todos set done = true where id = 3 returning id");
    assert_eq!(result[0].rows.len(), 1);
    let r = server.request("PATCH", "/rest/v1/todos", &[JSON], br#"{"done":false}"#);
    assert_eq!(r.status, 204);
    assert_eq!(rows(&server)[2]["done"], true, "the secret row is out of anon's reach");

    // auth.uid() policies: alice updates only her own rows, bob cannot delete hers.
    let alice = bearer(json!({"role": "authenticated", "sub": ALICE}));
    let bob = bearer(json!({"role": "authenticated", "sub": BOB}));
    let r = server.request(
        "PATCH",
        "/rest/v1/todos?id=in.(1,2)&select=id",
        &[JSON, ("Authorization", &alice), ("Prefer", "return=representation")],
        br#"{"task":"alice was here"}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (200, r#"[{"id":1}]"#));
    assert_eq!(rows(&server)[1]["task"], "walk dog");
    let r = server.request("DELETE", "/rest/v1/todos?id=eq.1", &[("Authorization", &bob)], b"");
    assert_eq!((r.status, r.header("content-range")), (204, Some("*/*")));
    assert_eq!(rows(&server).as_array().unwrap().len(), 3);

    // max-affected with handling=strict: exceeding it fails inside the transaction.
    let before = rows(&server);
    let r = server.request(
        "PATCH",
        "/rest/v1/todos?id=lt.3",
        &[JSON, auth, ("Prefer", "return=representation, handling=strict, max-affected=1")],
        br#"{"task":"too many"}"#,
    );
    assert_error(&r, 400, "PGRST124");
    assert_eq!(
        r.text(),
        r#"{"code":"PGRST124","details":"The query affects 2 rows","hint":null,"message":"Query result exceeds max-affected preference constraint"}"#
    );
    let r = server.request("DELETE", "/rest/v1/todos", &[auth, ("Prefer", "handling=strict, max-affected=2")], b"");
    assert_eq!(assert_error(&r, 400, "PGRST124")["details"], "The query affects 3 rows");
    assert_eq!(rows(&server), before, "nothing changed");
    let r = server.request(
        "PATCH",
        "/rest/v1/todos?id=eq.2&select=id,task",
        &[JSON, auth, ("Prefer", "return=representation, handling=strict, max-affected=1")],
        br#"{"task":"one"}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (200, r#"[{"id":2,"task":"one"}]"#));
    assert_eq!(r.header("preference-applied"), Some("return=representation, handling=strict, max-affected=1"));
    // Lenient handling ignores max-affected.
    let r = server.request(
        "PATCH",
        "/rest/v1/todos?id=lt.3",
        &[JSON, auth, ("Prefer", "max-affected=1")],
        br#"{"done":true}"#,
    );
    assert_eq!((r.status, r.header("preference-applied")), (204, None));
    // Strict handling refuses unknown preferences.
    let r = server.request("DELETE", "/rest/v1/todos?id=eq.1", &[auth, ("Prefer", "handling=strict, foo, bar=1")], b"");
    assert_eq!(assert_error(&r, 400, "PGRST122")["details"], "Invalid preferences: foo, bar=1");

    // DELETE with tx=rollback returns the rows and keeps them.
    let before = rows(&server);
    let r = server.request(
        "DELETE",
        "/rest/v1/todos?id=eq.2&select=id",
        &[auth, JSON, ("Prefer", "return=representation, count=exact, tx=rollback")],
        b"",
    );
    assert_eq!((r.status, r.text().as_str()), (200, r#"[{"id":2}]"#));
    assert_eq!(r.header("content-range"), Some("*/1"));
    assert_eq!(r.header("preference-applied"), Some("return=representation, count=exact, tx=rollback"));
    assert_eq!(rows(&server), before);
    let r = server.request("DELETE", "/rest/v1/todos?id=eq.2", &[auth], b"");
    assert_eq!(r.status, 204);
    assert_eq!(rows(&server).as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 3]);

    // Hostile filter columns and values are quoted/bound.
    let r = server.request("DELETE", "/rest/v1/todos?id=eq.1%3B%20drop%20table%20public.todos", &[auth], b"");
    assert_error(&r, 400, "22P02");
    let r = server.request(
        "PATCH",
        "/rest/v1/todos?%22id%5C%22%20or%201%3D1%20--%22=eq.1",
        &[JSON, auth],
        br#"{"done":true}"#,
    );
    assert_error(&r, 400, "42703");
    assert_eq!(rows(&server).as_array().unwrap().len(), 2, "table intact");
}

#[test]
fn singular_writes_return_one_object_or_write_nothing() {
    let server = TestServer::start();
    server.sql(SCHEMA);
    server.wait_for_relations(&["todos"]);
    let svc = service();
    let object = |prefer: &'static str| {
        vec![
            ("Authorization", svc.clone()),
            ("Content-Type", "application/json".to_owned()),
            ("Accept", "application/vnd.pgrst.object+json".to_owned()),
            ("Prefer", prefer.to_owned()),
        ]
    };
    let send = |method: &str, path: &str, headers: Vec<(&str, String)>, body: &[u8]| {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        server.request(method, path, &headers, body)
    };
    let before = rows(&server);

    // supabase-js `.insert({...}).select().single()`.
    let one =
        send("POST", "/rest/v1/todos?select=id,task", object("return=representation"), br#"{"id":40,"task":"one"}"#);
    assert_eq!(one.status, 201, "{}", one.text());
    assert_eq!(one.header("content-type"), Some("application/vnd.pgrst.object+json; charset=utf-8"));
    assert_eq!(one.text(), r#"{"id":40,"task":"one"}"#);

    // Two rows with a singular Accept: 406 PGRST116 and neither row is written.
    let two = send(
        "POST",
        "/rest/v1/todos",
        object("return=representation"),
        br#"[{"id":41,"task":"a"},{"id":42,"task":"b"}]"#,
    );
    assert_eq!(two.status, 406, "{}", two.text());
    assert_eq!(
        two.text(),
        r#"{"code":"PGRST116","details":"The result contains 2 rows","hint":null,"message":"Cannot coerce the result to a single JSON object"}"#
    );
    let patch_none = send("PATCH", "/rest/v1/todos?id=eq.999", object("return=representation"), br#"{"task":"x"}"#);
    assert_eq!(patch_none.status, 406);
    assert_eq!(patch_none.json()["details"], "The result contains 0 rows");

    let mut expected = before.as_array().unwrap().clone();
    expected.push(serde_json::json!({"id": 40, "task": "one", "done": false}));
    assert_eq!(rows(&server), serde_json::Value::Array(expected));
}

const CORNER: &str = r#"
create table public.cornercase (
  id int primary key,
  "column whitespace" text,
  array_column text[],
  label text not null default 'fresh',
  made timestamptz default '2020-01-02 03:04:05+00',
  n int
);
create table public.users (
  username text primary key,
  status text default 'ONLINE',
  age int
);
create table public.nokey (a int, b text default 'dflt');
grant all on public.cornercase, public.users, public.nokey to anon, authenticated, service_role;
insert into public.users values ('supabot', 'ONLINE', 1);
"#;

fn get(server: &TestServer, sql: &str) -> Value {
    let result = server.sql(&format!("select coalesce(json_agg(t), '[]')::text from ({sql}) t"));
    serde_json::from_str(result[0].rows[0].get_str(0).expect("json")).expect("json")
}

#[test]
fn writes_use_the_schema_cache() {
    let server = TestServer::start();
    server.sql(CORNER);
    server.wait_for_relations(&["cornercase", "users", "nokey"]);

    // 1. Upsert without on_conflict targets the primary key.
    let r = server.request(
        "POST",
        "/rest/v1/users",
        &[JSON, ("Prefer", "resolution=merge-duplicates,return=representation")],
        br#"{"username":"supabot","status":"OFFLINE"}"#,
    );
    // 2. … and a merge that only updated answers 200.
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"[{"username":"supabot","status":"OFFLINE","age":1}]"#);
    assert_eq!(r.header("content-range"), Some("*/*"));
    assert_eq!(r.header("preference-applied"), Some("resolution=merge-duplicates, return=representation"));
    let r = server.request(
        "POST",
        "/rest/v1/users?on_conflict=username",
        &[JSON, ("Prefer", "resolution=merge-duplicates,return=representation")],
        br#"{"username":"supabot","status":"ONLINE"}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (200, r#"[{"username":"supabot","status":"ONLINE","age":1}]"#));
    // One new row among updated ones: 201; select=* keeps the bookkeeping column out.
    let r = server.request(
        "POST",
        "/rest/v1/users?select=*",
        &[JSON, ("Prefer", "resolution=merge-duplicates, return=representation")],
        br#"[{"username":"supabot","age":2},{"username":"kiwicopple","age":3}]"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json(),
        json!([{"username":"supabot","status":"ONLINE","age":2},{"username":"kiwicopple","status":"ONLINE","age":3}])
    );
    // return=minimal follows the same rule; ignore-duplicates is always 201.
    let r = server.request(
        "POST",
        "/rest/v1/users",
        &[JSON, ("Prefer", "resolution=merge-duplicates")],
        br#"{"username":"kiwicopple","age":4}"#,
    );
    assert_eq!((r.status, r.text().as_str(), r.header("content-range")), (200, "", Some("*/*")));
    assert_eq!(r.header("preference-applied"), Some("resolution=merge-duplicates"));
    let r = server.request(
        "POST",
        "/rest/v1/users",
        &[JSON, ("Prefer", "resolution=ignore-duplicates, return=representation")],
        br#"{"username":"kiwicopple","age":5}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (201, "[]"));
    assert_eq!(
        get(&server, "select username, age from public.users order by username"),
        json!([
            {"username":"kiwicopple","age":4},{"username":"supabot","age":2}
        ])
    );
    // A table without a primary key and no on_conflict: a plain insert, resolution not applied.
    let r = server.request(
        "POST",
        "/rest/v1/nokey",
        &[JSON, ("Prefer", "resolution=merge-duplicates, return=representation")],
        br#"{"a":1,"b":"x"}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (201, r#"[{"a":1,"b":"x"}]"#));
    assert_eq!(r.header("preference-applied"), Some("return=representation"));

    // 3. Unknown payload columns: 400 PGRST204 with PostgREST's exact body, nothing written.
    for (path, body) in [
        ("/rest/v1/cornercase", &br#"{"id":1,"nope":1}"#[..]),
        ("/rest/v1/cornercase?columns=id,nope", br#"{"id":1}"#),
        ("/rest/v1/cornercase?columns=%22nope%22,%22zzz%22", br#"[{"id":1}]"#),
    ] {
        let r = server.request("POST", path, &[JSON], body);
        assert_error(&r, 400, "PGRST204");
        assert_eq!(
            r.text(),
            r#"{"code":"PGRST204","details":null,"hint":null,"message":"Could not find the 'nope' column of 'cornercase' in the schema cache"}"#
        );
        assert_eq!(r.header("proxy-status"), Some("PostgREST; error=PGRST204"));
    }
    let r = server.request("PATCH", "/rest/v1/cornercase?id=eq.1", &[JSON], br#"{"nope":1}"#);
    assert_eq!(
        assert_error(&r, 400, "PGRST204")["message"],
        "Could not find the 'nope' column of 'cornercase' in the schema cache"
    );
    // columns= ignores extra (even unknown) body keys.
    let r = server.request("POST", "/rest/v1/cornercase?columns=id", &[JSON], br#"{"id":1,"nope":1}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(get(&server, "select id from public.cornercase"), json!([{"id":1}]));

    // 4. missing=default: absent keys take the column DEFAULT, others NULL; present keys as sent.
    let r = server.request(
        "POST",
        "/rest/v1/cornercase?columns=%22id%22,%22label%22,%22made%22,%22n%22,%22column%20whitespace%22&select=id,label,made,n,column%20whitespace",
        &[JSON, ("Prefer", "missing=default, return=representation")],
        br#"[{"id":2,"label":"given","n":7},{"id":3,"made":"2024-05-06T07:08:09+00:00","column whitespace":"ws"}]"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("preference-applied"), Some("missing=default, return=representation"));
    assert_eq!(
        r.json(),
        json!([
            {"id":2,"label":"given","made":"2020-01-02T03:04:05+00:00","n":7,"column whitespace":null},
            {"id":3,"label":"fresh","made":"2024-05-06T07:08:09+00:00","n":null,"column whitespace":"ws"}
        ])
    );
    // Without missing=default the absent key is NULL (and the NOT NULL column refuses it).
    let r = server.request("POST", "/rest/v1/cornercase?columns=id,label", &[JSON], br#"[{"id":4}]"#);
    assert_error(&r, 400, "23502");
    // PATCH with columns= and missing=default resets the absent column to its default.
    let r = server.request(
        "PATCH",
        "/rest/v1/cornercase?id=eq.2&columns=label,n&select=id,label,n",
        &[JSON, ("Prefer", "missing=default, return=representation")],
        br#"{"n":8}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (200, r#"[{"id":2,"label":"fresh","n":8}]"#));

    // 5. PUT: single-row upsert by the whole primary key.
    let r = server.request(
        "PUT",
        "/rest/v1/users?username=eq.awailas",
        &[JSON, ("Prefer", "return=representation")],
        br#"{"username":"awailas","status":"AWAY","age":9}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (201, r#"[{"username":"awailas","status":"AWAY","age":9}]"#));
    assert_eq!(r.header("content-range"), None);
    assert_eq!(r.header("preference-applied"), Some("return=representation"));
    let r = server.request(
        "PUT",
        "/rest/v1/users?username=eq.awailas",
        &[JSON, ("Prefer", "return=representation")],
        br#"{"username":"awailas","status":"ONLINE","age":10}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (200, r#"[{"username":"awailas","status":"ONLINE","age":10}]"#));
    let r = server.request("PUT", "/rest/v1/users?username=eq.awailas", &[JSON], br#"{"username":"awailas","age":11}"#);
    assert_eq!((r.status, r.text().as_str(), r.header("content-range")), (204, "", None));
    let r = server.request("PUT", "/rest/v1/users?username=eq.awailas", &[JSON], br#"{"username":"other","age":1}"#);
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            400,
            r#"{"code":"PGRST115","details":null,"hint":null,"message":"Payload values do not match URL in primary key column(s)"}"#
        )
    );
    for path in [
        "/rest/v1/users",
        "/rest/v1/users?age=eq.1",
        "/rest/v1/users?username=gt.a",
        "/rest/v1/users?username=eq.a&age=eq.1",
        "/rest/v1/nokey?a=eq.1",
    ] {
        let r = server.request("PUT", path, &[JSON], br#"{"username":"a"}"#);
        assert_eq!(
            (r.status, r.text().as_str()),
            (
                405,
                r#"{"code":"PGRST105","details":null,"hint":null,"message":"Filters must include all and only primary key columns with 'eq' operators"}"#
            ),
            "{path}"
        );
    }
    let r = server.request("PUT", "/rest/v1/users?username=eq.a&limit=1", &[JSON], br#"{"username":"a"}"#);
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            400,
            r#"{"code":"PGRST114","details":null,"hint":null,"message":"limit/offset querystring parameters are not allowed for PUT"}"#
        )
    );
    assert_eq!(
        get(&server, "select username, status, age from public.users where username = 'awailas'"),
        json!([
            {"username":"awailas","status":"ONLINE","age":11}
        ])
    );
}

#[test]
fn csv_and_form_bodies() {
    let server = TestServer::start();
    server.sql(SCHEMA);
    server.wait_for_relations(&["todos"]);
    let service = service();
    let auth = ("Authorization", service.as_str());
    // CSV: a header line, quoted fields with commas and quotes, unquoted NULL is null.
    let r = server.request(
        "POST",
        "/rest/v1/todos?select=id,task,score",
        &[auth, ("Content-Type", "text/csv"), ("Prefer", "return=representation")],
        b"id,task,score\r\n10,\"plain, \"\"quoted\"\"\",NULL\n11,second,2.5\n",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json(),
        json!([{"id": 10, "task": "plain, \"quoted\"", "score": null}, {"id": 11, "task": "second", "score": 2.5}])
    );
    // A form body is one row.
    let r = server.request(
        "POST",
        "/rest/v1/todos",
        &[auth, ("Content-Type", "application/x-www-form-urlencoded")],
        b"id=12&task=from+a+form&done=true",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // Malformed CSV: 400 PGRST102 and nothing written.
    let before = rows(&server);
    let r = server.request(
        "POST",
        "/rest/v1/todos",
        &[auth, ("Content-Type", "text/csv")],
        b"id,task\n13,ok\n14,too,many\n",
    );
    let body = assert_error(&r, 400, "PGRST102");
    assert_eq!(body["message"], "All lines of a CSV body must have as many fields as its header");
    assert_eq!(rows(&server), before);
    assert_eq!(before.as_array().map(Vec::len), Some(6));
}

/// The postgrest-js suite's "bulk insert/upsert with column defaults": rows lacking a column
/// whose default is an identity sequence (no `pg_attrdef` entry) used to get NULL (23502).
/// PostgREST evaluates every listed column's default for every row, so each row consumes a
/// sequence value, even one whose own key wins — the ids below are the suite's.
#[test]
fn missing_default_with_identity_and_domain_defaults() {
    let server = TestServer::start();
    server.sql(
        "create domain public.label as text default 'unlabelled'; \
         create table public.channels (id bigint generated by default as identity primary key, \
           data jsonb default null, slug text, tag public.label); \
         insert into public.channels (data, slug) values (null, 'a'), (null, 'b'), (null, 'c'); \
         grant all on public.channels to anon;",
    );
    server.wait_for_relations(&["channels"]);
    let prefer = ("Prefer", "missing=default, return=representation, tx=rollback");
    let r = server.request(
        "POST",
        "/rest/v1/channels?columns=%22id%22,%22slug%22&select=*",
        &[JSON, prefer],
        br#"[{"id":100},{"slug":"test-slug"}]"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json(),
        json!([{"id": 100, "data": null, "slug": null, "tag": "unlabelled"},
               {"id": 5, "data": null, "slug": "test-slug", "tag": "unlabelled"}])
    );
    assert_eq!(r.header("preference-applied"), Some("missing=default, return=representation, tx=rollback"));
    let r = server.request(
        "POST",
        "/rest/v1/channels?columns=%22id%22,%22slug%22&select=id,slug",
        &[JSON, ("Prefer", "resolution=merge-duplicates, missing=default, return=representation, tx=rollback")],
        br#"[{"id":1},{"slug":"test-slug"}]"#,
    );
    assert_eq!((r.status, r.json()), (201, json!([{"id": 1, "slug": null}, {"id": 7, "slug": "test-slug"}])));
    // Without missing=default an absent key is NULL, as PostgREST's default `missing=null`.
    let r = server.request("POST", "/rest/v1/channels?columns=id,slug", &[JSON], br#"[{"slug":"x"}]"#);
    assert_error(&r, 400, "23502");
    // An explicit null is kept even with missing=default.
    let r = server.request(
        "POST",
        "/rest/v1/channels?select=id,tag",
        &[JSON, ("Prefer", "missing=default, return=representation")],
        br#"{"id":50,"tag":null}"#,
    );
    assert_eq!((r.status, r.json()), (201, json!([{"id": 50, "tag": null}])));
    let rows = server.sql("select count(*) from public.channels");
    assert_eq!(rows[0].rows[0].get_str(0), Some("4"), "tx=rollback left the table as it was");
}
