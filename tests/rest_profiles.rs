//! Exposed schemas and what a request runs inside, end to end: the real binary against a real
//! PostgreSQL. Profiles (`MADBASE_DB_SCHEMAS`, `Accept-Profile`/`Content-Profile`, PGRST106,
//! `Content-Profile` on responses) for reads, writes, RPC and the OpenAPI root; the `search_path` PostgREST sets;
//! the request GUCs (`request.method`, `request.path`, `request.headers`, `request.cookies`,
//! `request.jwt.claims`) for reads, writes and RPC; the pre-request function
//! (`MADBASE_DB_PRE_REQUEST`) and its errors (`RAISE SQLSTATE 'PGRST'` included); the `response.headers`/`response.status` GUCs; and
//! `MADBASE_DB_MAX_ROWS`.

mod support;

use serde_json::{json, Value};
use support::{assert_pgrst_error, bearer, service_role, HttpResponse, TestServer};

const JSON: (&str, &str) = ("Content-Type", "application/json");

const PROFILES: &str = r#"
create table public.users (username text primary key, status text);
insert into public.users values ('supabot', 'ONLINE');
create schema personal;
grant usage on schema personal to anon, authenticated, service_role;
create table personal.users (username text primary key, status text not null default 'ONLINE');
insert into personal.users values ('kiwi', 'OFFLINE'), ('dragarcia', 'ONLINE');
create function personal.get_status(name_param text) returns text language sql stable
  as $$ select status from users where username = name_param $$;
create view personal.settings as select current_setting('search_path') as search_path;
grant all on all tables in schema personal to anon, authenticated, service_role;
create function public.get_status(name_param text) returns text language sql stable
  as $$ select 'public:' || status from users where username = name_param $$;
create view public.settings as select current_setting('search_path') as search_path;
grant all on public.users to anon;
create table public.ready (id int);
"#;

fn body(r: &HttpResponse) -> Value {
    r.json()
}

#[test]
fn profiles_pick_the_schema_for_reads_writes_and_rpc() {
    let server = TestServer::start_with(&[("MADBASE_DB_SCHEMAS", "public, personal")]);
    server.sql(PROFILES);
    server.wait_for_relations(&["ready"]);
    let personal = ("Accept-Profile", "personal");
    let to_personal = ("Content-Profile", "personal");

    // No profile header: the first schema; with several exposed, PostgREST names it anyway.
    let r = server.get("/rest/v1/users?select=username");
    assert_eq!((r.status, body(&r)), (200, json!([{"username": "supabot"}])));
    assert_eq!(r.header("content-profile"), Some("public"));
    let r = server.request("GET", "/rest/v1/users?select=username&order=username", &[personal], b"");
    assert_eq!((r.status, body(&r)), (200, json!([{"username": "dragarcia"}, {"username": "kiwi"}])));
    assert_eq!(r.header("content-profile"), Some("personal"));
    let r = server.request("HEAD", "/rest/v1/users", &[personal], b"");
    assert_eq!((r.status, r.header("content-profile")), (200, Some("personal")));

    // search_path: the request schema, then db-extra-search-path (Supabase's `public, extensions`).
    let r = server.request("GET", "/rest/v1/settings", &[personal], b"");
    assert_eq!(body(&r), json!([{"search_path": "\"personal\", \"public\", \"extensions\""}]));
    let r = server.get("/rest/v1/settings");
    assert_eq!(body(&r), json!([{"search_path": "\"public\", \"public\", \"extensions\""}]));

    // An unknown schema: 406 PGRST106 naming the exposed ones; the write header for writes.
    let r = server.request("GET", "/rest/v1/users", &[("Accept-Profile", "nope")], b"");
    assert_pgrst_error(&r, 406, "PGRST106");
    assert_eq!(
        r.text(),
        r#"{"code":"PGRST106","details":null,"hint":"Only the following schemas are exposed: public, personal","message":"Invalid schema: nope"}"#
    );
    assert_eq!(r.header("content-profile"), None);
    let r = server.request("POST", "/rest/v1/users", &[JSON, ("Content-Profile", "nope")], b"{}");
    assert_pgrst_error(&r, 406, "PGRST106");
    // GET reads Accept-Profile only; POST reads Content-Profile only.
    let r = server.request("GET", "/rest/v1/users?select=username", &[("Content-Profile", "nope")], b"");
    assert_eq!((r.status, r.header("content-profile")), (200, Some("public")));
    // A relation of another schema is not found in this one.
    let r = server.request("GET", "/rest/v1/ready", &[personal], b"");
    let error = assert_pgrst_error(&r, 404, "PGRST205");
    assert_eq!(error["message"], "Could not find the table 'personal.ready' in the schema cache");

    // Writes go to the Content-Profile schema; Content-Profile comes with a body only.
    let r = server.request(
        "POST",
        "/rest/v1/users",
        &[JSON, to_personal, ("Prefer", "return=representation")],
        br#"{"username":"awailas"}"#,
    );
    assert_eq!((r.status, body(&r)), (201, json!([{"username": "awailas", "status": "ONLINE"}])));
    assert_eq!(r.header("content-profile"), Some("personal"));
    let r = server.request("POST", "/rest/v1/users", &[JSON, to_personal], br#"{"username":"minimal"}"#);
    assert_eq!((r.status, r.header("content-profile")), (201, None));
    let r = server.request(
        "PATCH",
        "/rest/v1/users?username=eq.kiwi",
        &[JSON, to_personal, ("Prefer", "return=representation")],
        br#"{"status":"AWAY"}"#,
    );
    assert_eq!((r.status, body(&r)), (200, json!([{"username": "kiwi", "status": "AWAY"}])));
    let r = server.request("DELETE", "/rest/v1/users?username=eq.minimal", &[to_personal], b"");
    assert_eq!((r.status, r.header("content-profile")), (204, None));
    // Accept-Profile does not steer a write.
    let r = server.request("POST", "/rest/v1/users", &[JSON, personal], br#"{"username":"public-one"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let rows = server.sql(
        "select (select string_agg(username, ',' order by username) from personal.users), \
                (select string_agg(username, ',' order by username) from public.users)",
    );
    assert_eq!(rows[0].rows[0].get_str(0), Some("awailas,dragarcia,kiwi"));
    assert_eq!(rows[0].rows[0].get_str(1), Some("public-one,supabot"));

    // RPC: Content-Profile for POST, Accept-Profile for GET; unqualified names inside the
    // function resolve through the request's search_path.
    let r = server.request("POST", "/rest/v1/rpc/get_status", &[JSON, to_personal], br#"{"name_param":"kiwi"}"#);
    assert_eq!((r.status, r.text().as_str()), (200, r#""AWAY""#));
    assert_eq!(r.header("content-profile"), Some("personal"));
    let r = server.request("GET", "/rest/v1/rpc/get_status?name_param=dragarcia", &[personal], b"");
    assert_eq!((r.status, r.text().as_str()), (200, r#""ONLINE""#));
    let r = server.request("POST", "/rest/v1/rpc/get_status", &[JSON], br#"{"name_param":"supabot"}"#);
    assert_eq!((r.status, r.text().as_str()), (200, r#""public:ONLINE""#));
    let r = server.request("POST", "/rest/v1/rpc/get_statuz", &[JSON, to_personal], br#"{"name_param":"x"}"#);
    let error = assert_pgrst_error(&r, 404, "PGRST202");
    assert_eq!(error["hint"], "Perhaps you meant to call the function personal.get_status");
    let r = server.request("GET", "/rest/v1/rpc/get_status?name_param=x", &[("Accept-Profile", "nope")], b"");
    assert_pgrst_error(&r, 406, "PGRST106");

    // The OpenAPI root describes the Accept-Profile schema.
    let r = server.request("GET", "/rest/v1/", &[personal], b"");
    assert_eq!((r.status, r.header("content-profile")), (200, Some("personal")), "{}", r.text());
    let paths = &body(&r)["paths"];
    assert!(paths.get("/users").is_some() && paths.get("/rpc/get_status").is_some(), "{paths}");
    assert!(paths.get("/ready").is_none(), "a public table is not in personal's document: {paths}");
}

#[test]
fn one_exposed_schema_names_it_only_when_asked() {
    let server = TestServer::start();
    server.sql("create table public.items (id int); insert into public.items values (1); grant select on public.items to anon;");
    server.wait_for_relations(&["items"]);
    let r = server.get("/rest/v1/items");
    assert_eq!((r.status, r.header("content-profile")), (200, None));
    // supabase-js always sends the profile header: PostgREST then answers with it.
    let r = server.request("GET", "/rest/v1/items", &[("Accept-Profile", "public")], b"");
    assert_eq!((r.status, r.header("content-profile")), (200, Some("public")));
    let r = server.request("GET", "/rest/v1/items", &[("Accept-Profile", "personal")], b"");
    let error = assert_pgrst_error(&r, 406, "PGRST106");
    assert_eq!(error["hint"], "Only the following schemas are exposed: public");
}

const GUCS: &str = r#"
create function public.request_info() returns json language sql stable as $$
  select json_build_object(
    'method', current_setting('request.method', true),
    'path', current_setting('request.path', true),
    'claims', current_setting('request.jwt.claims', true)::json,
    'headers', current_setting('request.headers', true)::json,
    'cookies', current_setting('request.cookies', true)::json,
    'role', current_user)
$$;
create table public.audit (
  id int primary key,
  info json not null default public.request_info()
);
grant all on public.audit to anon, authenticated;
"#;

#[test]
fn request_settings_as_postgrest_sets_them() {
    let server = TestServer::start();
    server.sql(GUCS);
    server.wait_for_relations(&["audit"]);
    server.wait_for_function("request_info");
    let user = bearer(json!({"role": "authenticated", "sub": "u1", "email": "a@b.c"}));

    // RPC POST: method, path as PostgREST sees it, claims with the role, headers without the
    // cookie (names lower-cased), cookies parsed as PostgREST's parseCookies does.
    let r = server.request(
        "POST",
        "/rest/v1/rpc/request_info",
        &[JSON, ("Authorization", &user), ("X-Mixed-Case", "v"), ("Cookie", "a=1; b= two ;flag")],
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let info = body(&r);
    assert_eq!(
        (&info["method"], &info["path"], &info["role"]),
        (&json!("POST"), &json!("/rpc/request_info"), &json!("authenticated"))
    );
    assert_eq!(info["claims"], json!({"role": "authenticated", "sub": "u1", "email": "a@b.c"}));
    assert_eq!(info["headers"]["x-mixed-case"], "v");
    assert_eq!(info["headers"]["authorization"], user.as_str());
    assert_eq!(info["headers"].get("cookie"), None, "{}", info["headers"]);
    assert_eq!(info["cookies"], json!({"a": "1", "b": " two ", "flag": ""}));

    // GET: anonymous claims, no cookies.
    let r = server.get("/rest/v1/rpc/request_info");
    let info = body(&r);
    assert_eq!((&info["method"], &info["role"]), (&json!("GET"), &json!("anon")));
    assert_eq!((&info["claims"], &info["cookies"]), (&json!({"role": "anon"}), &json!({})));

    // Writes: the settings are in place for defaults and triggers of the statement.
    let r = server.request(
        "POST",
        "/rest/v1/audit?select=info",
        &[JSON, ("Prefer", "return=representation")],
        br#"{"id":1}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let info = &body(&r)[0]["info"];
    assert_eq!((&info["method"], &info["path"], &info["role"]), (&json!("POST"), &json!("/audit"), &json!("anon")));
    // PATCH with `missing=default` re-evaluates the default under the PATCH's settings.
    let r = server.request(
        "PATCH",
        "/rest/v1/audit?id=eq.1&columns=info&select=info",
        &[JSON, ("Authorization", &user), ("Prefer", "return=representation, missing=default")],
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let info = &body(&r)[0]["info"];
    assert_eq!(
        (&info["method"], &info["path"], &info["role"]),
        (&json!("PATCH"), &json!("/audit"), &json!("authenticated"))
    );
    assert_eq!(info["claims"]["sub"], "u1");
}

const PRE_REQUEST: &str = r#"
create schema api;
grant usage on schema api to anon, authenticated, service_role;
create function api.pre() returns void language plpgsql as $$
declare
  headers json := current_setting('request.headers', true)::json;
begin
  perform set_config('madbase.pre_saw', current_setting('request.method') || ' ' ||
                     current_setting('request.path') || ' ' || current_user || ' ' ||
                     split_part(current_setting('search_path'), ',', 1), true);
  if headers->>'x-block' is not null then
    raise exception 'blocked: %', headers->>'x-block' using detail = 'by pre-request', hint = 'drop x-block';
  end if;
  if headers->>'x-pay' is not null then
    raise sqlstate 'PT402' using message = 'pay first';
  end if;
  if headers->>'x-custom' is not null then
    raise sqlstate 'PGRST' using
      message = '{"code":"123","message":"Payment Required","details":"Quota exceeded","hint":"Upgrade your plan"}',
      detail = '{"status":402,"status_text":"Payment Required","headers":{"X-Powered-By":"Nerd Rage"}}';
  end if;
  if headers->>'x-teapot' is not null then
    perform set_config('response.status', '418', true);
    perform set_config('response.headers', '[{"X-Pre":"1"},{"Content-Range":"custom"},{"X-Pre":"2"}]', true);
  end if;
end $$;
grant execute on function api.pre() to anon, authenticated, service_role;

create table public.notes (id int primary key, body text,
  seen text default current_setting('madbase.pre_saw', true));
grant all on public.notes to anon;
create view public.pre_saw as select current_setting('madbase.pre_saw', true) as saw;
grant select on public.pre_saw to anon;
create function public.noted() returns setof public.notes language sql stable as $$ select * from public.notes $$;

create function public.cached() returns int language plpgsql stable as $$
begin
  perform set_config('response.headers', '[{"Cache-Control":"public, max-age=60"}]', true);
  return 1;
end $$;
create view public.cached_view as select public.cached() as one;
grant select on public.cached_view to anon;
create function public.created() returns void language plpgsql volatile as $$
begin
  perform set_config('response.status', '201', true);
  perform set_config('response.headers', '[{"Location":"/somewhere"}]', true);
end $$;
create function public.bad_status() returns int language plpgsql stable as $$
begin perform set_config('response.status', 'teapot', true); return 1; end $$;
create function public.bad_headers() returns int language plpgsql stable as $$
begin perform set_config('response.headers', '{"X-A":"1"}', true); return 1; end $$;
create trigger notes_mark before insert on public.notes for each statement execute function public.notes_mark();
"#;

const TRIGGER: &str = r#"
create function public.notes_mark() returns trigger language plpgsql as $$
begin
  perform set_config('response.headers', '[{"X-Inserted":"yes"}]', true);
  perform set_config('response.status', '202', true);
  return null;
end $$;
"#;

#[test]
fn pre_request_function_and_response_gucs() {
    let server = TestServer::start_with(&[("MADBASE_DB_PRE_REQUEST", "api.pre")]);
    server.sql(TRIGGER);
    server.sql(PRE_REQUEST);
    server.wait_for_relations(&["notes", "pre_saw", "cached_view"]);
    server.wait_for_function("noted");

    // It runs after the request settings, before the statement, in the same transaction.
    let r = server.get("/rest/v1/pre_saw");
    assert_eq!((r.status, body(&r)), (200, json!([{"saw": "GET /pre_saw anon \"public\""}])));
    let r = server.request(
        "POST",
        "/rest/v1/notes?select=seen",
        &[JSON, ("Prefer", "return=representation")],
        br#"{"id":1,"body":"x"}"#,
    );
    assert_eq!((r.status, body(&r)), (202, json!([{"seen": "POST /notes anon \"public\""}])));
    // A statement trigger's response GUCs reach the write response.
    assert_eq!(r.header("x-inserted"), Some("yes"));
    let r = server.request("POST", "/rest/v1/rpc/noted?select=id,seen", &[JSON], b"{}");
    assert_eq!((r.status, body(&r)), (200, json!([{"id": 1, "seen": "POST /notes anon \"public\""}])));

    // Its exceptions are the response, mapped as any SQL error; nothing else runs.
    for (method, path, payload) in [
        ("GET", "/rest/v1/notes", &b""[..]),
        ("POST", "/rest/v1/notes", &br#"{"id":2}"#[..]),
        ("POST", "/rest/v1/rpc/noted", &b"{}"[..]),
    ] {
        let r = server.request(method, path, &[JSON, ("X-Block", "yes")], payload);
        assert_pgrst_error(&r, 400, "P0001");
        assert_eq!(
            r.text(),
            r#"{"code":"P0001","details":"by pre-request","hint":"drop x-block","message":"blocked: yes"}"#
        );
    }
    let r = server.request("DELETE", "/rest/v1/notes?id=eq.1", &[("X-Pay", "1")], b"");
    assert_pgrst_error(&r, 402, "PT402");
    // RAISE SQLSTATE 'PGRST': full control of the body, status and headers.
    let r = server.request("DELETE", "/rest/v1/notes?id=eq.1", &[("X-Custom", "1")], b"");
    assert_pgrst_error(&r, 402, "123");
    assert_eq!(
        r.text(),
        r#"{"code":"123","details":"Quota exceeded","hint":"Upgrade your plan","message":"Payment Required"}"#
    );
    assert_eq!(r.header("x-powered-by"), Some("Nerd Rage"));
    assert_eq!(server.sql("select count(*) from public.notes")[0].rows[0].get_str(0), Some("1"));
    let r = server.request("DELETE", "/rest/v1/notes?id=eq.1", &[("Authorization", &service_role())], b"");
    assert_eq!(r.status, 204, "{}", r.text());

    // response.status / response.headers from the pre-request function: the status replaces
    // PostgREST's, a header replaces the same-named one (Content-Range here), repeats are kept.
    let r = server.request("GET", "/rest/v1/pre_saw", &[("X-Teapot", "1")], b"");
    assert_eq!(r.status, 418, "{}", r.text());
    assert_eq!(r.header("content-range"), Some("custom"));
    let raw_pre: Vec<&str> =
        r.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("x-pre")).map(|(_, v)| v.as_str()).collect();
    assert_eq!(raw_pre, ["1", "2"]);
    assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"), "others stay");

    // ... from a function a read calls, and from RPC (void: 204 overridden).
    let r = server.get("/rest/v1/cached_view");
    assert_eq!((r.status, r.header("cache-control")), (200, Some("public, max-age=60")));
    let r = server.request("POST", "/rest/v1/rpc/created", &[JSON], b"{}");
    assert_eq!((r.status, r.header("location")), (201, Some("/somewhere")));
    // Malformed values are PostgREST's 500s.
    let r = server.get("/rest/v1/rpc/bad_status");
    assert_pgrst_error(&r, 500, "PGRST112");
    assert_eq!(body(&r)["message"], "response.status guc must be a valid status code");
    let r = server.get("/rest/v1/rpc/bad_headers");
    assert_pgrst_error(&r, 500, "PGRST111");
    assert_eq!(
        body(&r)["message"],
        "response.headers guc must be a JSON array composed of objects with a single key and a string value"
    );
}

#[test]
fn max_rows_caps_reads_and_function_results() {
    let server = TestServer::start_with(&[("MADBASE_DB_MAX_ROWS", "2")]);
    server.sql(
        "create table public.nums (n int primary key); insert into public.nums select generate_series(1, 5); \
         grant select on public.nums to anon; \
         create function public.all_nums() returns setof public.nums language sql stable as $$ select * from public.nums $$;",
    );
    server.wait_for_relations(&["nums"]);
    server.wait_for_function("all_nums");
    let ns = |r: &HttpResponse| -> Vec<i64> {
        body(r).as_array().expect("array").iter().map(|row| row["n"].as_i64().expect("n")).collect()
    };
    let r = server.get("/rest/v1/nums?order=n");
    assert_eq!((r.status, ns(&r), r.header("content-range")), (200, vec![1, 2], Some("0-1/*")));
    let r = server.request("GET", "/rest/v1/nums?order=n", &[("Prefer", "count=exact")], b"");
    assert_eq!((r.status, ns(&r), r.header("content-range")), (206, vec![1, 2], Some("0-1/5")));
    let r = server.get("/rest/v1/nums?order=n&limit=1");
    assert_eq!(ns(&r), [1], "a smaller limit wins");
    let r = server.get("/rest/v1/nums?order=n&limit=10&offset=3");
    assert_eq!((ns(&r), r.header("content-range")), (vec![4, 5], Some("3-4/*")));
    let r = server.request("HEAD", "/rest/v1/nums", &[("Prefer", "count=exact")], b"");
    assert_eq!((r.status, r.header("content-range")), (206, Some("0-1/5")));
    // count=estimated above db-max-rows: the larger of the exact count and the planner's estimate
    // (an unanalysed table's estimate is far above its 5 rows).
    let r = server.request("GET", "/rest/v1/nums", &[("Prefer", "count=estimated")], b"");
    let total: u64 = r.header("content-range").and_then(|c| c.split('/').nth(1)).unwrap().parse().unwrap();
    assert!(r.status == 206 && total > 5, "{:?}", r.header("content-range"));

    let r = server.get("/rest/v1/rpc/all_nums?order=n.desc");
    assert_eq!((r.status, ns(&r), r.header("content-range")), (200, vec![5, 4], Some("0-1/*")));
    let r = server.request("POST", "/rest/v1/rpc/all_nums?n=gt.1", &[JSON, ("Prefer", "count=exact")], b"{}");
    assert_eq!((r.status, r.header("content-range")), (206, Some("0-1/4")));
    assert_eq!(ns(&r).len(), 2);
}
