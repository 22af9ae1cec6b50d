//! `/rest/v1/rpc/<function>` end to end: the real binary against a real PostgreSQL. Result shapes
//! (scalar, composite, setof with select/filters/order/limit, `returns table`, void, single json
//! parameter, variadic), GET/HEAD with query-string arguments, the transaction's access mode
//! (GET on a writing VOLATILE function and a STABLE function that writes → 25006/405), `tx=rollback`,
//! overload resolution with PostgREST's exact PGRST202/PGRST203 bodies, raised exceptions, RLS
//! inside `security invoker` functions, hostile names and values, a pgvector-style signature
//! when the `vector` extension is available, and the postgrest-js live suite's RPC cases
//! (callable functions only, the unnamed parameter as `""`, PGRST203 candidate order, PGRST202
//! without parameters, `Prefer: count=exact`).

mod support;

use serde_json::json;
use support::{assert_pgrst_error as assert_error, service_role as service, token, TestServer, ALICE};

const SCHEMA: &str = r#"
create table public.todos (id int primary key, task text not null, done boolean not null default false, owner uuid);
insert into public.todos values
  (1, 'buy milk', false, '11111111-1111-1111-1111-111111111111'),
  (2, 'walk dog', true,  '22222222-2222-2222-2222-222222222222'),
  (3, 'secret',   false, '33333333-3333-3333-3333-333333333333'),
  (4, 'read',     false, '11111111-1111-1111-1111-111111111111');
alter table public.todos enable row level security;
create policy anon_public on public.todos for select to anon using (task <> 'secret');
create policy users_own on public.todos for select to authenticated using (owner = auth.uid());
create table public.log (msg text);
grant select, insert on public.log to anon, authenticated, service_role;

create function public.add(a integer, b integer) returns integer language sql immutable as $$ select a + b $$;
create function public.greet(name text default 'world') returns text language sql stable as $$ select 'hello ' || name $$;
create function public.todo_by_id(id integer) returns public.todos language sql stable
  as $$ select * from public.todos t where t.id = todo_by_id.id $$;
create function public.my_todos() returns setof public.todos language sql stable security invoker
  as $$ select * from public.todos $$;
create function public.pairs(n integer) returns table (i integer, sq integer) language sql immutable
  as $$ select g, g * g from generate_series(1, n) g $$;
create function public.log_it(msg text) returns void language sql volatile as $$ insert into public.log values (msg) $$;
create function public.do_write() returns integer language plpgsql volatile
  as $$ begin insert into public.log values ('sneaky'); return 1; end $$;
create function public.sneaky_stable() returns integer language plpgsql stable as $$ begin return public.do_write(); end $$;
create function public.echo(jsonb) returns jsonb language sql immutable as $$ select $1 $$;
create function public.total(variadic v integer[]) returns integer language sql immutable
  as $$ select sum(x)::int from unnest(v) x $$;
create function public.over(a integer) returns text language sql immutable as $$ select 'int' $$;
create function public.over(a text) returns text language sql immutable as $$ select 'text' $$;
create function public.fail(code text) returns integer language plpgsql immutable
  as $$ begin raise exception 'failed: %', code using detail = 'the detail', hint = 'the hint'; end $$;
create function public.pay() returns integer language plpgsql volatile
  as $$ begin raise sqlstate 'PT402' using message = 'pay up'; end $$;
create function public."we""ird"("a""; drop table public.todos; --" text) returns text language sql immutable
  as $$ select $1 $$;
"#;

const JSON: (&str, &str) = ("Content-Type", "application/json");

fn log_rows(server: &TestServer) -> Vec<String> {
    let result = server.sql("select coalesce(string_agg(msg, ',' order by msg), '') from public.log");
    let text = result[0].rows[0].get_str(0).unwrap_or("").to_owned();
    text.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn start() -> TestServer {
    let server = TestServer::start();
    server.sql(SCHEMA);
    server.wait_for_function("add?a=1&b=2");
    server
}

#[test]
fn result_shapes_and_arguments() {
    let server = start();
    let svc = service();
    let auth = ("Authorization", svc.as_str());
    let post = |path: &str, body: &str| {
        server.request("POST", &format!("/rest/v1/rpc/{path}"), &[JSON, auth], body.as_bytes())
    };
    let get = |path: &str| server.request("GET", &format!("/rest/v1/rpc/{path}"), &[auth], b"");

    // Scalar: the bare JSON value, Content-Range of one row.
    let r = post("add", r#"{"a":40,"b":2}"#);
    assert_eq!((r.status, r.text().as_str()), (200, "42"));
    assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(r.header("content-range"), Some("0-0/*"));
    // Defaults may be omitted; text renders as a JSON string.
    assert_eq!(post("greet", "{}").text(), r#""hello world""#);
    assert_eq!(post("greet", "").text(), r#""hello world""#, "an empty body is no arguments");
    assert_eq!(post("greet", r#"{"name":"bob"}"#).text(), r#""hello bob""#);

    // GET takes arguments from the query string; HEAD is GET without a body.
    assert_eq!(get("add?a=1&b=2").text(), "3");
    assert_eq!(get("greet?name=x%20y").text(), r#""hello x y""#);
    let r = server.request("HEAD", "/rest/v1/rpc/add?a=1&b=2", &[auth], b"");
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-range"), Some("0-0/*"));

    // A single composite: an object.
    let r = post("todo_by_id", r#"{"id":1}"#);
    assert_eq!(r.json(), json!({"id": 1, "task": "buy milk", "done": false, "owner": ALICE}), "{}", r.text());

    // setof: an array; select, filters (even on unselected columns), order, limit, offset apply.
    let r = server.request(
        "POST",
        "/rest/v1/rpc/my_todos?select=task&done=is.false&id=neq.3&order=id.desc&limit=1&offset=1",
        &[JSON, auth],
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([{"task": "buy milk"}]));
    assert_eq!(r.header("content-range"), Some("1-1/*"));
    // returns table, via GET, with arguments and filters side by side.
    let r = get("pairs?n=5&i=gt.2&order=i.desc&limit=2&select=sq");
    assert_eq!(r.json(), json!([{"sq": 25}, {"sq": 16}]), "{}", r.text());
    assert_eq!(r.header("content-range"), Some("0-1/*"));
    let r = get("pairs?n=0");
    assert_eq!((r.text().as_str(), r.header("content-range")), ("[]", Some("*/*")));

    // A single unnamed jsonb parameter takes the whole body.
    let r = post("echo", r#"{"x":[1,2],"y":"z"}"#);
    assert_eq!(r.json(), json!({"x": [1, 2], "y": "z"}), "{}", r.text());
    assert_eq!(post("echo", "[1,2]").json(), json!([1, 2]));

    // Variadic: a JSON array in a body, a repeated key in a query string.
    assert_eq!(post("total", r#"{"v":[1,2,3]}"#).text(), "6");
    assert_eq!(get("total?v=1&v=2&v=4").text(), "7");

    // void: 204, no body; the write happened (POST to VOLATILE is READ WRITE).
    let r = post("log_it", r#"{"msg":"one"}"#);
    assert_eq!((r.status, r.text().as_str()), (204, ""), "{}", r.text());
    assert_eq!(r.header("content-type"), None);
    assert!(r.header("content-range").is_some());
    assert_eq!(log_rows(&server), ["one"]);
    // Prefer: tx=rollback runs it and rolls back.
    let r =
        server.request("POST", "/rest/v1/rpc/log_it", &[JSON, auth, ("Prefer", "tx=rollback")], br#"{"msg":"two"}"#);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("preference-applied"), Some("tx=rollback"));
    assert_eq!(log_rows(&server), ["one"]);

    // OPTIONS answers from the function's volatility.
    let r = server.request("OPTIONS", "/rest/v1/rpc/log_it?msg=x", &[auth], b"");
    assert_eq!((r.status, r.header("allow")), (200, Some("OPTIONS,POST")));
    let r = server.request("OPTIONS", "/rest/v1/rpc/add?a=1&b=2", &[auth], b"");
    assert_eq!((r.status, r.header("allow")), (200, Some("OPTIONS,GET,HEAD,POST")));
    // Other methods: PGRST101.
    let r = server.request("PUT", "/rest/v1/rpc/add", &[JSON, auth], b"{}");
    let body = assert_error(&r, 405, "PGRST101");
    assert_eq!(body["message"], "Cannot use the PUT method on RPC");
}

#[test]
fn resolution_errors_and_transactions() {
    let server = start();
    let svc = service();
    let auth = ("Authorization", svc.as_str());
    let post = |path: &str, body: &str| {
        server.request("POST", &format!("/rest/v1/rpc/{path}"), &[JSON, auth], body.as_bytes())
    };

    // PGRST202, PostgREST's exact bodies.
    let r = post("add", r#"{"a":1}"#);
    assert_error(&r, 404, "PGRST202");
    assert_eq!(
        r.text(),
        r#"{"code":"PGRST202","details":"Searched for the function public.add with parameter a or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.","hint":null,"message":"Could not find the function public.add(a) in the schema cache"}"#
    );
    let r = post("add", r#"{"b":1,"a":2,"c":3}"#);
    assert_eq!(
        r.text(),
        r#"{"code":"PGRST202","details":"Searched for the function public.add with parameters a, b, c or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.","hint":"Perhaps you meant to call the function public.add(a, b)","message":"Could not find the function public.add(a, b, c) in the schema cache"}"#
    );
    let r = server.request("GET", "/rest/v1/rpc/adx", &[auth], b"");
    assert_eq!(
        r.text(),
        r#"{"code":"PGRST202","details":"Searched for the function public.adx without parameters, but no matches were found in the schema cache.","hint":"Perhaps you meant to call the function public.add","message":"Could not find the function public.adx without parameters in the schema cache"}"#
    );
    // PGRST203: two overloads take {a}.
    let r = post("over", r#"{"a":1}"#);
    assert_error(&r, 300, "PGRST203");
    assert_eq!(
        r.text(),
        r#"{"code":"PGRST203","details":null,"hint":"Try renaming the parameters or the function itself in the database so function overloading can be resolved","message":"Could not choose the best candidate function between: public.over(a => integer), public.over(a => text)"}"#
    );

    // Raised exceptions map through the SQLSTATE table.
    let r = post("fail", r#"{"code":"x1"}"#);
    assert_error(&r, 400, "P0001");
    assert_eq!(r.text(), r#"{"code":"P0001","details":"the detail","hint":"the hint","message":"failed: x1"}"#);
    let r = post("pay", "{}");
    let body = assert_error(&r, 402, "PT402");
    assert_eq!(body["message"], "pay up");
    // A value the argument's type rejects: PostgreSQL's 22P02 → 400.
    assert_error(&post("add", r#"{"a":"one","b":2}"#), 400, "22P02");
    assert_error(&post("add", "{"), 400, "PGRST102");

    // GET runs READ ONLY: a VOLATILE function that writes fails with 25006 → 405.
    let r = server.request("GET", "/rest/v1/rpc/log_it?msg=get", &[auth], b"");
    let body = assert_error(&r, 405, "25006");
    assert_eq!(body["message"], "cannot execute INSERT in a read-only transaction");
    // POST to a STABLE function runs READ ONLY too: a write it reaches fails the same way.
    let r = post("sneaky_stable", "{}");
    assert_error(&r, 405, "25006");
    // POST to a VOLATILE function is READ WRITE.
    assert_eq!(post("do_write", "{}").text(), "1");
    assert_eq!(log_rows(&server), ["sneaky"]);
}

#[test]
fn rls_hostile_input_and_vectors() {
    let server = start();
    let svc = service();

    // RLS applies inside a security invoker function, for the caller's role.
    let anon = server.request("POST", "/rest/v1/rpc/my_todos?select=id&order=id", &[JSON], b"{}");
    assert_eq!(anon.json(), json!([{"id": 1}, {"id": 2}, {"id": 4}]), "{}", anon.text());
    let alice = format!("Bearer {}", token(json!({"role": "authenticated", "sub": ALICE})));
    let r = server.request("GET", "/rest/v1/rpc/my_todos?select=id&order=id", &[("Authorization", &alice)], b"");
    assert_eq!(r.json(), json!([{"id": 1}, {"id": 4}]), "{}", r.text());
    let r = server.request("GET", "/rest/v1/rpc/my_todos?select=id", &[("Authorization", &svc)], b"");
    assert_eq!(r.json().as_array().map(Vec::len), Some(4), "service_role bypasses RLS");

    // Hostile function and argument names are quoted, values are bound.
    let hostile_value = "'); drop table public.todos; --";
    let body = json!({"a\"; drop table public.todos; --": hostile_value}).to_string();
    let r = server.request("POST", "/rest/v1/rpc/we%22ird", &[JSON, ("Authorization", &svc)], body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!(hostile_value));
    let r = server.request(
        "GET",
        "/rest/v1/rpc/greet?name=%27%29%3B%20drop%20table%20public.todos%3B%20--",
        &[("Authorization", &svc)],
        b"",
    );
    assert_eq!(r.json(), json!(format!("hello {hostile_value}")));
    // A hostile key that names no argument never reaches SQL.
    let r = server.request(
        "POST",
        "/rest/v1/rpc/greet",
        &[JSON, ("Authorization", &svc)],
        br#"{"x\"); drop table public.todos; --":1}"#,
    );
    assert_error(&r, 404, "PGRST202");
    assert_eq!(server.sql("select count(*)::text from public.todos")[0].rows[0].get_str(0), Some("4"));

    // pgvector-style similarity search, when the extension is installed on this PostgreSQL.
    let available = server.sql("select count(*)::text from pg_available_extensions where name = 'vector'");
    if available[0].rows[0].get_str(0) != Some("1") {
        eprintln!("skipping the vector check: the vector extension is not available");
        return;
    }
    server.sql(
        r#"
        create extension if not exists vector;
        create table public.documents (id int primary key, content text, embedding vector(3));
        insert into public.documents values (1, 'a', '[1,0,0]'), (2, 'b', '[0,1,0]'), (3, 'c', '[0.9,0.1,0]');
        create function public.match_documents(query_embedding vector(3), match_count int)
          returns table (id int, content text, similarity float) language sql stable as $$
            select d.id, d.content, 1 - (d.embedding <=> query_embedding) as similarity
            from public.documents d order by d.embedding <=> query_embedding limit match_count $$;
        "#,
    );
    server.wait_for_function("match_documents?query_embedding=%5B1,0,0%5D&match_count=1");
    let r = server.request(
        "POST",
        "/rest/v1/rpc/match_documents?select=id",
        &[JSON, ("Authorization", &svc)],
        br#"{"query_embedding":"[1,0,0]","match_count":2}"#,
    );
    assert_eq!(r.json(), json!([{"id": 1}, {"id": 3}]), "{}", r.text());
    let r = server.request(
        "GET",
        "/rest/v1/rpc/match_documents?query_embedding=%5B0,1,0%5D&match_count=1&select=content",
        &[("Authorization", &svc)],
        b"",
    );
    assert_eq!(r.json(), json!([{"content": "b"}]), "{}", r.text());
}

/// The postgrest-js suite's functions (its `00000000000000_schema.sql`), reduced to what these
/// cases need.
const SUITE_FUNCTIONS: &str = r#"
create table public.messages (id int primary key, message text, username text);
insert into public.messages values (1, 'Hello World', 'supabot');
create function public.postgrest_unresolvable_function() returns void language sql as '';
create function public.postgrest_unresolvable_function(a int) returns text language sql as $$ select 'foo' $$;
create function public.postgrest_unresolvable_function(a text) returns int language sql as 'select 1';
create function public.polymorphic_function_with_different_return(bool) returns int language sql as 'SELECT 1';
create function public.polymorphic_function_with_different_return(int) returns int language sql as 'SELECT 2';
create function public.polymorphic_function_with_different_return(text) returns text language sql as $$ SELECT 'foo' $$;
create function public.polymorphic_function_with_no_params_or_unnamed() returns int language sql as 'SELECT 1';
create function public.polymorphic_function_with_no_params_or_unnamed(bool) returns int language sql as 'SELECT 2';
create function public.polymorphic_function_with_no_params_or_unnamed(text) returns text language sql as $$ SELECT 'foo' $$;
create function public.polymorphic_function_with_unnamed_integer(int) returns int language sql as 'SELECT 1';
create function public.polymorphic_function_with_unnamed_json(json) returns int language sql as 'SELECT 1';
create function public.polymorphic_function_with_unnamed_text(text) returns int language sql as 'SELECT 1';
create function public.polymorphic_function_with_unnamed_default() returns int language sql as 'SELECT 1';
create function public.polymorphic_function_with_unnamed_default(int default 42) returns int language sql as 'SELECT 2';
create function public.polymorphic_function_with_unnamed_default(text default 'default') returns text language sql as $$ SELECT 'foo' $$;
create function public.unnamed_text_echo(text) returns text language sql as 'SELECT $1';
create function public.blurb_message(public.messages) returns character varying language sql stable
  as $$ select substring($1.message, 1, 3) $$;
create function public.get_status(name_param text) returns text language sql stable
  as $$ select case when name_param = 'supabot' then 'ONLINE' else 'OFFLINE' end $$;
"#;

#[test]
fn postgrest_js_suite_cases() {
    let server = start();
    server.sql(SUITE_FUNCTIONS);
    server.wait_for_function("get_status?name_param=x");
    let svc = service();
    let auth = ("Authorization", svc.as_str());
    let post = |path: &str, body: &str| {
        server.request("POST", &format!("/rest/v1/rpc/{path}"), &[JSON, auth], body.as_bytes())
    };

    // 1. Only callable functions are in the cache: blurb_message(messages) (one unnamed
    // composite parameter) is not, so there is no overload to hint at.
    let r = post("blurb_message", "{}");
    assert_error(&r, 404, "PGRST202");
    // 4. …and without arguments the message says so.
    assert_eq!(
        r.json(),
        json!({
            "code": "PGRST202",
            "details": "Searched for the function public.blurb_message without parameters or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.",
            "hint": null,
            "message": "Could not find the function public.blurb_message without parameters in the schema cache",
        })
    );
    let r = post("blurb_message", r#"{"":{"id":1,"message":null,"username":"test"}}"#);
    assert_eq!(
        r.json(),
        json!({
            "code": "PGRST202",
            "details": "Searched for the function public.blurb_message with parameter  or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.",
            "hint": null,
            "message": "Could not find the function public.blurb_message() in the schema cache",
        })
    );
    let r = post("polymorphic_function_with_unnamed_integer", r#"{"":1}"#);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({
            "code": "PGRST202",
            "details": "Searched for the function public.polymorphic_function_with_unnamed_integer with parameter  or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.",
            "hint": "Perhaps you meant to call the function public.polymorphic_function_with_unnamed_text",
            "message": "Could not find the function public.polymorphic_function_with_unnamed_integer() in the schema cache",
        })
    );
    // The (int default 42) overload is not callable: the candidates are () and ( => text), in
    // PostgREST's order (fewest parameters first).
    let ambiguous = json!({
        "code": "PGRST203",
        "details": null,
        "hint": "Try renaming the parameters or the function itself in the database so function overloading can be resolved",
        "message": "Could not choose the best candidate function between: public.polymorphic_function_with_unnamed_default(), public.polymorphic_function_with_unnamed_default( => text)",
    });
    for body in ["", "{}"] {
        let r = post("polymorphic_function_with_unnamed_default", body);
        assert_eq!((r.status, r.json()), (300, ambiguous.clone()), "{body:?}");
    }

    // 2. The key "" names the unnamed parameter; the payload goes to it positionally.
    for body in [r#"{"":"test"}"#, r#"{"":true}"#] {
        let r = post("polymorphic_function_with_different_return", body);
        assert_eq!((r.status, r.text().as_str()), (200, r#""foo""#), "{body}");
    }
    assert_eq!(post("polymorphic_function_with_unnamed_default", r#"{"":"custom text"}"#).text(), r#""foo""#);
    assert_eq!(post("polymorphic_function_with_no_params_or_unnamed", "").text(), "1");
    assert_eq!(post("polymorphic_function_with_no_params_or_unnamed", r#"{"":""}"#).text(), r#""foo""#);
    assert_eq!(post("polymorphic_function_with_unnamed_text", r#"{"":"test"}"#).text(), "1");
    assert_eq!(post("polymorphic_function_with_unnamed_json", r#"{"":{"test":"value"}}"#).text(), "1");
    // As in PostgREST, the whole payload is the argument (cast to the parameter's type).
    let r = post("unnamed_text_echo", r#"{"":"x"}"#);
    assert_eq!(r.json(), json!(r#"{"":"x"}"#), "{}", r.text());
    // GET: the query-string arguments as one JSON object, as PostgREST builds it.
    let r = server.request("GET", "/rest/v1/rpc/unnamed_text_echo?=x", &[auth], b"");
    assert_eq!(r.json(), json!(r#"{"":"x"}"#), "{}", r.text());

    // 3. PGRST203 lists (a => integer) before (a => text) whatever the creation order.
    let r = post("postgrest_unresolvable_function", r#"{"a":"test"}"#);
    assert_eq!(r.status, 300);
    assert_eq!(
        r.json()["message"],
        "Could not choose the best candidate function between: public.postgrest_unresolvable_function(a => integer), public.postgrest_unresolvable_function(a => text)"
    );
    let r = post("postgrest_unresolvable_function", "");
    assert_eq!((r.status, r.text().as_str()), (204, ""));

    // 5. Prefer: count=exact on POST, GET and HEAD: the total in Content-Range.
    let count = ("Prefer", "count=exact");
    let r = server.request("POST", "/rest/v1/rpc/get_status", &[JSON, auth, count], br#"{"name_param":"supabot"}"#);
    assert_eq!((r.status, r.text().as_str()), (200, r#""ONLINE""#));
    assert_eq!(r.header("content-range"), Some("0-0/1"));
    assert_eq!(r.header("preference-applied"), Some("count=exact"));
    let r = server.request("GET", "/rest/v1/rpc/get_status?name_param=supabot", &[auth, count], b"");
    assert_eq!((r.status, r.text().as_str(), r.header("content-range")), (200, r#""ONLINE""#, Some("0-0/1")));
    let r = server.request("HEAD", "/rest/v1/rpc/get_status?name_param=supabot", &[auth, count], b"");
    assert_eq!((r.status, r.body.len(), r.header("content-range")), (200, 0, Some("0-0/1")));
    // postgrest-js's head with object arguments: POST with count=exact,return=minimal.
    let r = server.request(
        "POST",
        "/rest/v1/rpc/get_status",
        &[JSON, auth, ("Prefer", "count=exact,return=minimal")],
        br#"{"name_param":"supabot"}"#,
    );
    assert_eq!((r.status, r.header("content-range")), (200, Some("0-0/1")));
    // A set: the filtered total without limit/offset; 206 when the page does not cover it,
    // 416 PGRST103 past it.
    let r =
        server.request("GET", "/rest/v1/rpc/my_todos?select=id&done=is.false&order=id&limit=2", &[auth, count], b"");
    assert_eq!((r.status, r.json()), (206, json!([{"id": 1}, {"id": 3}])));
    assert_eq!(r.header("content-range"), Some("0-1/3"));
    let r = server.request("POST", "/rest/v1/rpc/my_todos?select=id&offset=4", &[JSON, auth, count], b"{}");
    assert_eq!((r.status, r.text().as_str(), r.header("content-range")), (206, "[]", Some("*/4")));
    let r = server.request("HEAD", "/rest/v1/rpc/my_todos?offset=10", &[auth, count], b"");
    assert_eq!(r.status, 416);
    let r = server.request("GET", "/rest/v1/rpc/my_todos?offset=10", &[auth, count], b"");
    assert_eq!(
        r.json(),
        json!({
            "code": "PGRST103",
            "details": "An offset of 10 was requested, but there are only 4 rows.",
            "hint": null,
            "message": "Requested range not satisfiable",
        })
    );
    let r = server.request("GET", "/rest/v1/rpc/my_todos?select=id", &[auth, count], b"");
    assert_eq!((r.status, r.header("content-range")), (200, Some("0-3/4")));
}

#[test]
fn logic_trees_and_max_affected_on_results() {
    let server = start();
    server.sql(
        "create table public.users (username text primary key, status text not null); \
         insert into public.users values ('supabot', 'ONLINE'), ('testuser', 'ONLINE'), ('testuser1', 'ONLINE'), \
                                         ('testuser2', 'ONLINE'); \
         grant all on public.users to anon; \
         create function public.set_users_offline(name_param text) returns setof public.users language sql volatile \
           as $$ update public.users set status = 'OFFLINE' where username like name_param returning * $$;",
    );
    server.wait_for_function("set_users_offline?name_param=none");
    let svc = service();
    let auth = ("Authorization", svc.as_str());
    let statuses = || {
        let rows = server.sql("select string_agg(username || '=' || status, ',' order by username) from public.users");
        rows[0].rows[0].get_str(0).unwrap_or("").to_owned()
    };

    // or= / and= / not.or= filter the result like filters do (and count with it).
    let r = server.request(
        "GET",
        "/rest/v1/rpc/my_todos?select=id&or=(id.eq.1,and(done.is.true,id.lt.3))&order=id",
        &[auth, ("Prefer", "count=exact")],
        b"",
    );
    assert_eq!((r.status, r.json()), (200, json!([{"id": 1}, {"id": 2}])));
    assert_eq!(r.header("content-range"), Some("0-1/2"));
    let r = server.request("POST", "/rest/v1/rpc/pairs?not.or=(i.eq.1,sq.gt.5)", &[JSON, auth], br#"{"n":4}"#);
    assert_eq!(r.json(), json!([{"i": 2, "sq": 4}]));
    let r = server.request("GET", "/rest/v1/rpc/pairs?n=3&or=(i.eq.1", &[auth], b"");
    assert_error(&r, 400, "PGRST100");

    // The postgrest-js suite's cases: max-affected on a setof function, with handling=strict.
    let strict = ("Prefer", "handling=strict,max-affected=1,return=representation");
    let r = server.request(
        "POST",
        "/rest/v1/rpc/set_users_offline?select=*",
        &[JSON, strict],
        br#"{"name_param":"testuser"}"#,
    );
    assert_eq!((r.status, r.json()), (200, json!([{"username": "testuser", "status": "OFFLINE"}])));
    assert_eq!(r.header("preference-applied"), Some("handling=strict, max-affected=1"));
    let r = server.request(
        "POST",
        "/rest/v1/rpc/set_users_offline?select=*",
        &[JSON, strict],
        br#"{"name_param":"testuser%"}"#,
    );
    let body = assert_error(&r, 400, "PGRST124");
    assert_eq!(
        body,
        json!({"code": "PGRST124", "details": "The query affects 3 rows", "hint": null,
               "message": "Query result exceeds max-affected preference constraint"})
    );
    assert_eq!(
        statuses(),
        "supabot=ONLINE,testuser=OFFLINE,testuser1=ONLINE,testuser2=ONLINE",
        "the function's writes are rolled back"
    );
    // The limit counts the rows of the result (after filters), and lenient handling ignores it.
    let r = server.request(
        "POST",
        "/rest/v1/rpc/set_users_offline?username=eq.testuser1",
        &[JSON, strict],
        br#"{"name_param":"testuser%"}"#,
    );
    assert_eq!((r.status, r.json()), (200, json!([{"username": "testuser1", "status": "OFFLINE"}])));
    let r = server.request(
        "POST",
        "/rest/v1/rpc/set_users_offline",
        &[JSON, ("Prefer", "max-affected=1")],
        br#"{"name_param":"%"}"#,
    );
    assert_eq!((r.status, r.header("preference-applied")), (200, None));
    assert_eq!(statuses(), "supabot=OFFLINE,testuser=OFFLINE,testuser1=OFFLINE,testuser2=OFFLINE");
    // Not a set: PGRST128 before anything runs.
    let r = server.request("POST", "/rest/v1/rpc/add", &[JSON, strict], br#"{"a":1,"b":2}"#);
    let body = assert_error(&r, 400, "PGRST128");
    assert_eq!(
        body["message"],
        "Function must return SETOF or TABLE when max-affected preference is used with handling=strict"
    );
}

#[test]
fn raw_bodies_go_to_a_single_unnamed_parameter() {
    let server = start();
    server.sql(
        "create function public.shout(text) returns text language sql immutable as $$ select upper($1) $$;
         create function public.root_name(xml) returns text language sql immutable
           as $$ select (xpath('name(/*)', $1))[1]::text $$;
         create function public.byte_sum(bytea) returns int language sql immutable
           as $$ select sum(get_byte($1, i))::int from generate_series(0, length($1) - 1) i $$;",
    );
    let post = |path: &str, content_type: &str, body: &[u8]| {
        server.request("POST", &format!("/rest/v1/rpc/{path}"), &[("Content-Type", content_type)], body)
    };
    // The schema cache has the functions once a raw call to the last one resolves.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while post("byte_sum", "application/octet-stream", b"x").status != 200 {
        assert!(std::time::Instant::now() < deadline, "byte_sum never reached the schema cache");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = post("shout", "text/plain; charset=utf-8", "hello, wörld".as_bytes());
    assert_eq!((r.status, r.text().as_str()), (200, "\"HELLO, WÖRLD\""));
    let r = post("root_name", "text/xml", b"<invoice><total>3</total></invoice>");
    assert_eq!((r.status, r.text().as_str()), (200, "\"invoice\""));
    // Bytes that are not text reach bytea intact.
    let r = post("byte_sum", "application/octet-stream", &[0, 255, 1, 0x5c, 0x27]);
    assert_eq!((r.status, r.text().as_str()), (200, "387"));
    // Malformed XML is PostgreSQL's error; a type with no such function is PGRST202 without a list.
    assert_eq!(post("root_name", "text/xml", b"<open>").status, 400);
    let r = post("byte_sum", "text/plain", b"abc");
    let body = assert_error(&r, 404, "PGRST202");
    assert_eq!(body["message"], "Could not find the function public.byte_sum in the schema cache");
    assert_eq!(
        body["details"],
        "Searched for the function public.byte_sum with a single unnamed text parameter, but no matches were found in the schema cache."
    );
}

#[test]
fn an_array_of_argument_objects_calls_once_with_the_first() {
    let server = start();
    server.sql(
        "create table public.audit (n int, note text);
         create function public.record(n int, note text default 'none') returns setof public.audit
           language sql volatile as $$ insert into public.audit values (n, note) returning * $$;",
    );
    server.wait_for_function("record?n=1");
    server.sql("delete from public.audit");
    let service = service();
    let call =
        |body: &[u8]| server.request("POST", "/rest/v1/rpc/record", &[JSON, ("Authorization", service.as_str())], body);
    // PostgREST (v12+) reads the arguments from the first object only.
    let r = call(br#"[{"n": 1, "note": "a"}, {"n": 2, "note": "b"}]"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([{"n": 1, "note": "a"}]));
    let rows = server.sql("select count(*)::text from public.audit");
    assert_eq!(rows[0].rows[0].get_str(0), Some("1"));
    // Objects with different keys are refused, as for writes.
    let r = call(br#"[{"n": 4}, {"note": "x"}]"#);
    assert_eq!(assert_error(&r, 400, "PGRST102")["message"], "All object keys must match");
}
