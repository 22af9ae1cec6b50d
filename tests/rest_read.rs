//! `GET`/`HEAD /rest/v1/<table>` from the outside: the real binary against a real PostgreSQL.
//! Roles and RLS, every filter operator of the first Data API slice, order/limit/offset, the
//! request settings PostgREST sets, PostgREST's error shapes, and SQL-injection attempts.

mod support;

use serde_json::{json, Value};
use support::{assert_pgrst_error, bearer, rest_url as url, token, HttpResponse, TestServer, ALICE, BOB};

const SCHEMA: &str = r#"
create table public.todos (
  id int primary key,
  task text not null,
  done boolean not null,
  owner uuid,
  score numeric(5,2),
  note text
);
insert into public.todos values
  (1, 'buy milk',    false, '11111111-1111-1111-1111-111111111111', 1.50, null),
  (2, 'Walk dog',    true,  '22222222-2222-2222-2222-222222222222', 2.00, 'x'),
  (3, 'write, code', false, '11111111-1111-1111-1111-111111111111', null, 'a,b'),
  (4, 'secret',      false, '33333333-3333-3333-3333-333333333333', 4.25, null);
alter table public.todos enable row level security;
create policy anon_reads_public on public.todos for select to anon using (task <> 'secret');
create policy users_read_own on public.todos for select to authenticated using (owner = auth.uid());

create view public.whoami as select
  current_user::text as role,
  current_setting('request.jwt.claims', true) as claims,
  current_setting('request.method', true) as method,
  current_setting('request.path', true) as path,
  current_setting('request.headers', true)::json ->> 'x-test' as x_test,
  current_setting('request.cookies', true)::json ->> 'flavour' as cookie,
  current_setting('search_path') as search_path,
  current_setting('transaction_read_only') as read_only;

create table public.private_notes (id int);
revoke all on public.private_notes from anon, authenticated, service_role;
"#;

fn get(server: &TestServer, table: &str, params: &[(&str, &str)], headers: &[(&str, &str)]) -> HttpResponse {
    server.request("GET", &url(table, params), headers, b"")
}

/// The `id`s of a JSON array response (asserting 200).
fn ids(response: &HttpResponse) -> Vec<i64> {
    assert_eq!(response.status, 200, "{}", response.text());
    response.json().as_array().expect("array").iter().map(|row| row["id"].as_i64().expect("id")).collect()
}

fn ids_where(server: &TestServer, params: &[(&str, &str)]) -> Vec<i64> {
    let mut all = vec![("select", "id"), ("order", "id")];
    all.extend_from_slice(params);
    ids(&get(server, "todos", &all, &[]))
}

fn assert_error(response: &HttpResponse, status: u16, code: &str) -> Value {
    let body = assert_pgrst_error(response, status, code);
    let keys: Vec<&str> = body.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(keys, ["code", "details", "hint", "message"], "{body}");
    body
}

#[test]
fn reads_roles_and_rls() {
    let server = TestServer::start();
    server.sql(SCHEMA);
    server.wait_for_relations(&["todos", "whoami", "private_notes"]);

    // Anonymous: RLS hides the secret row. Body is PostgreSQL's json_agg, headers as PostgREST's.
    let anon = get(&server, "todos", &[("select", "id,task"), ("id", "eq.1")], &[]);
    assert_eq!(anon.status, 200, "{}", anon.text());
    assert_eq!(anon.text(), r#"[{"id":1,"task":"buy milk"}]"#);
    assert_eq!(anon.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(anon.header("content-range"), Some("0-0/*"));
    let all = get(&server, "todos", &[("order", "id")], &[]);
    assert_eq!(ids(&all), [1, 2, 3]);
    assert_eq!(all.header("content-range"), Some("0-2/*"));
    // Types render as PostgreSQL renders them (numeric keeps its scale, NULL is null).
    assert!(all.text().contains(r#""score":1.50,"#), "{}", all.text());
    assert_eq!(all.json()[2]["score"], Value::Null);
    // The same as the anon key through `apikey` only (what the gateway forwards).
    let anon_key = token(json!({"role": "anon"}));
    assert_eq!(ids(&get(&server, "todos", &[("order", "id")], &[("apikey", &anon_key)])), [1, 2, 3]);

    // An authenticated user sees exactly their own rows through auth.uid().
    let alice = bearer(json!({"role": "authenticated", "sub": ALICE}));
    assert_eq!(ids(&get(&server, "todos", &[("order", "id")], &[("Authorization", &alice)])), [1, 3]);
    let bob = bearer(json!({"role": "authenticated", "sub": BOB}));
    assert_eq!(ids(&get(&server, "todos", &[("order", "id")], &[("authorization", &bob)])), [2]);
    // service_role bypasses RLS.
    let service = bearer(json!({"role": "service_role"}));
    assert_eq!(ids(&get(&server, "todos", &[("order", "id")], &[("Authorization", &service)])), [1, 2, 3, 4]);

    // The request settings, in a read-only transaction, as PostgREST sets them.
    let who = get(&server, "whoami", &[], &[("X-Test", "hello"), ("Cookie", "flavour=oat; a=b")]);
    assert_eq!(who.status, 200, "{}", who.text());
    assert_eq!(
        who.json(),
        json!([{
            "role": "anon", "claims": "{\"role\":\"anon\"}", "method": "GET", "path": "/whoami",
            "x_test": "hello", "cookie": "oat", "search_path": "\"public\", \"public\", \"extensions\"",
            "read_only": "on",
        }])
    );
    let who = get(&server, "whoami", &[("select", "role,claims")], &[("Authorization", &alice)]);
    let row = &who.json()[0];
    assert_eq!(row["role"], "authenticated");
    let claims: Value = serde_json::from_str(row["claims"].as_str().unwrap()).unwrap();
    assert_eq!(claims, json!({"role": "authenticated", "sub": ALICE}));

    // HEAD: the same headers, no body.
    let head = server.request("HEAD", &url("todos", &[("order", "id")]), &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-range"), Some("0-2/*"));
    assert_eq!(head.header("content-type"), Some("application/json; charset=utf-8"));
    assert!(head.body.is_empty());

    // Privileges: no grant → 42501, 401 when anonymous, 403 with a token.
    assert_error(&get(&server, "private_notes", &[], &[]), 401, "42501");
    assert_error(&get(&server, "private_notes", &[], &[("Authorization", &alice)]), 403, "42501");
}

#[test]
fn filters_order_and_pages() {
    let server = TestServer::start();
    server.sql(SCHEMA);
    server.wait_for_relations(&["todos", "whoami", "private_notes"]);
    let cases: &[(&str, &str, &[i64])] = &[
        ("id", "eq.3", &[3]),
        ("id", "neq.2", &[1, 3]),
        ("id", "gt.1", &[2, 3]),
        ("id", "gte.2", &[2, 3]),
        ("id", "lt.2", &[1]),
        ("id", "lte.2", &[1, 2]),
        ("score", "gte.2", &[2]),
        ("task", "like.*milk*", &[1]),
        ("task", "like.walk*", &[]),
        ("task", "ilike.walk*", &[2]),
        ("task", "ilike.%DOG", &[2]),
        ("note", "is.null", &[1]),
        ("note", "not.is.null", &[2, 3]),
        ("done", "is.true", &[2]),
        ("done", "is.false", &[1, 3]),
        ("done", "not.is.true", &[1, 3]),
        ("note", "in.(\"a,b\",x)", &[2, 3]),
        ("id", "in.(1,3)", &[1, 3]),
        ("id", "not.in.(1,2)", &[3]),
        ("id", "in.()", &[]),
        ("task", "eq.write, code", &[3]),
        ("id", "not.eq.1", &[2, 3]),
    ];
    for (column, filter, expected) in cases {
        assert_eq!(ids_where(&server, &[(column, filter)]), *expected, "{column}={filter}");
    }
    // Filters AND together, also on one column.
    assert_eq!(ids_where(&server, &[("id", "gt.1"), ("id", "lt.3")]), [2]);

    let ordered = |order: &str| ids(&get(&server, "todos", &[("select", "id"), ("order", order)], &[]));
    assert_eq!(ordered("score.desc.nullslast"), [2, 1, 3]);
    assert_eq!(ordered("score.asc.nullsfirst"), [3, 1, 2]);
    assert_eq!(ordered("score.desc"), [3, 2, 1], "PostgreSQL puts nulls first for desc");
    assert_eq!(ordered("done.desc,id.desc"), [2, 3, 1]);

    let page = get(&server, "todos", &[("select", "id"), ("order", "id"), ("limit", "1"), ("offset", "1")], &[]);
    assert_eq!(ids(&page), [2]);
    assert_eq!(page.header("content-range"), Some("1-1/*"));
    let empty = get(&server, "todos", &[("limit", "0")], &[]);
    assert_eq!((empty.text().as_str(), empty.header("content-range")), ("[]", Some("*/*")));
    let tail = get(&server, "todos", &[("select", "id"), ("order", "id"), ("offset", "2")], &[]);
    assert_eq!((ids(&tail), tail.header("content-range")), (vec![3], Some("2-2/*")));

    // Aliases and casts.
    let aliased = get(&server, "todos", &[("select", "n:id,score::text"), ("id", "eq.2")], &[]);
    assert_eq!(aliased.text(), r#"[{"n":2,"score":"2.00"}]"#);
}

#[test]
fn errors_and_injection() {
    let server = TestServer::start();
    server.sql(SCHEMA);
    server.wait_for_relations(&["todos", "whoami", "private_notes"]);

    let missing = assert_error(&get(&server, "nope", &[], &[]), 404, "PGRST205");
    assert_eq!(missing["message"], "Could not find the table 'public.nope' in the schema cache");
    let column = assert_error(&get(&server, "todos", &[("select", "missing")], &[]), 400, "42703");
    assert_eq!(column["message"], "column todos.missing does not exist");
    assert_error(&get(&server, "todos", &[("id", "eq.abc")], &[]), 400, "22P02");

    // Tokens: PostgREST's codes, messages and challenge.
    let expired = bearer(json!({"role": "authenticated", "exp": 1_000_000}));
    let response = get(&server, "todos", &[], &[("Authorization", &expired)]);
    let body = assert_error(&response, 401, "PGRST303");
    assert_eq!(response.text(), r#"{"code":"PGRST303","details":null,"hint":null,"message":"JWT expired"}"#);
    assert_eq!(body["message"], "JWT expired");
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token", error_description="JWT expired""#)
    );
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"role": "service_role"}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-not-the-secret-not-the-secret"),
    )
    .unwrap();
    let response = get(&server, "todos", &[], &[("Authorization", &format!("Bearer {forged}"))]);
    assert_eq!(assert_error(&response, 401, "PGRST301")["message"], "JWT cryptographic operation failed");
    let response = get(&server, "todos", &[], &[("Authorization", "Bearer not-a-jwt")]);
    assert_eq!(assert_error(&response, 401, "PGRST301")["message"], "Expected 3 parts in JWT; got 1");
    let ghost = bearer(json!({"role": "ghost"}));
    let response = get(&server, "todos", &[], &[("Authorization", &ghost)]);
    assert_eq!(assert_error(&response, 401, "22023")["message"], "role \"ghost\" does not exist");
    let none = bearer(json!({"role": "none"}));
    assert_error(&get(&server, "todos", &[], &[("Authorization", &none)]), 401, "22023");

    // Malformed grammar: a 400 that points at the problem, never a wrong result.
    let select = assert_error(&get(&server, "todos", &[("select", "id,owner(*")], &[]), 400, "PGRST100");
    assert!(select["message"].as_str().unwrap().starts_with("\"failed to parse select parameter (id,owner(*)\""));
    assert!(select["details"].as_str().unwrap().contains("expecting \")\""), "{select}");
    let logic = assert_error(&get(&server, "todos", &[("or", "id.eq.1")], &[]), 400, "PGRST100");
    assert!(logic["details"].as_str().unwrap().contains("parenthesised"), "{logic}");
    // Full-text search also works on a text column (PostgreSQL's implicit to_tsvector).
    assert_eq!(ids_where(&server, &[("task", "fts.milk")]), [1]);
    let noop = assert_error(&get(&server, "todos", &[("id", "noop.0")], &[]), 400, "PGRST100");
    assert_eq!(noop["message"], r#""failed to parse filter (noop.0)" (line 1, column 1)"#);
    assert_error(&get(&server, "todos", &[("limit", "-1")], &[]), 416, "PGRST103");
    let many: Vec<(String, String)> = (0..100).map(|i| (format!("c{i}"), "eq.1".to_owned())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let too_many = assert_error(&get(&server, "todos", &many, &[]), 400, "PGRST100");
    assert!(too_many["details"].as_str().unwrap().contains("At most"), "{too_many}");
    assert_error(&get(&server, "todos", &[], &[("Accept", "text/xml")]), 406, "PGRST107");
    assert_error(&get(&server, "todos", &[], &[("Accept-Profile", "auth")]), 406, "PGRST106");
    assert_error(&server.request("PUT", "/rest/v1/todos?id=eq.1", &[], b"{}"), 400, "PGRST115");
    assert_error(&server.get("/rest/v1/a/b"), 404, "PGRST125");

    // Injection attempts: names are quoted, values are bound. Each is an error or no rows.
    let hostile_names = [
        "id\"; drop table todos; --",
        "id from todos; drop table todos; --",
        "id/**/",
        "id,task); drop table todos; --",
    ];
    for name in hostile_names {
        let response = get(&server, "todos", &[("select", name)], &[]);
        assert!(response.status == 400, "select={name}: {} {}", response.status, response.text());
        let response = get(&server, "todos", &[(name, "eq.1")], &[]);
        assert!(response.status == 400, "{name}=eq.1: {} {}", response.status, response.text());
        let response = get(&server, "todos", &[("order", name)], &[]);
        assert!(response.status == 400, "order={name}: {} {}", response.status, response.text());
    }
    let quoted = get(&server, "todos", &[("select", "\"id\\\"; drop table todos; --\"")], &[]);
    assert_error(&quoted, 400, "42703");
    let quoted = get(&server, "todos", &[("\"id\\\" = 1 or 1=1 --\"", "eq.1")], &[]);
    assert_error(&quoted, 400, "42703");
    for value in ["eq.1; drop table todos", "eq.1 or 1=1", "in.(1,\"2); drop table todos; --\")"] {
        assert_error(&get(&server, "todos", &[("id", value)], &[]), 400, "22P02");
    }
    assert_error(&get(&server, "todos", &[("id", "in.(1); drop table todos; --")], &[]), 400, "PGRST100");
    for value in ["eq.'; drop table todos; --", "eq.x' or '1'='1", "like.*' or 1=1 --", "in.(\"') or true --\")"] {
        assert_eq!(ids_where(&server, &[("task", value)]), Vec::<i64>::new(), "task={value}");
    }
    let table = get(&server, "todos; drop table todos; --", &[], &[]);
    assert_error(&table, 404, "PGRST205");
    let table = get(&server, "todos\"; drop table todos; --", &[], &[]);
    assert_error(&table, 404, "PGRST205");

    // The table is intact.
    let count = server.sql("select count(*) from public.todos");
    assert_eq!(count[0].rows[0].get_str(0), Some("4"));
}

#[test]
fn exact_counts_ranges_and_statuses() {
    let server = TestServer::start();
    server.sql(
        "create table public.counted (id int primary key, even boolean not null);
         insert into public.counted select i, i % 2 = 0 from generate_series(1, 9) i;
         alter table public.counted enable row level security;
         create policy \"anon sees 1..7\" on public.counted for select to anon using (id <= 7);",
    );
    server.wait_for_relations(&["counted"]);
    let exact = [("Prefer", "count=exact")];

    // The whole (RLS-visible) result: 200 with the total.
    let all = server.request("GET", "/rest/v1/counted?select=id", &exact, b"");
    assert_eq!(all.status, 200, "{}", all.text());
    assert_eq!(all.header("content-range"), Some("0-6/7"));
    assert_eq!(all.header("preference-applied"), Some("count=exact"));

    // A page of a filtered result: 206, the total counts the filter but not the page.
    let page = server.request("GET", "/rest/v1/counted?select=id&even=eq.false&order=id&limit=2&offset=1", &exact, b"");
    assert_eq!(page.status, 206);
    assert_eq!(page.header("content-range"), Some("1-2/4"));
    assert_eq!(
        page.text(),
        r#"[{"id":3}, 
 {"id":5}]"#
    );

    // HEAD with a count, as supabase-js sends `select('*', { count: 'exact', head: true })`.
    let head = server.request("HEAD", "/rest/v1/counted?select=*&limit=1", &exact, b"");
    assert_eq!(head.status, 206);
    assert_eq!(head.header("content-range"), Some("0-0/7"));
    assert!(head.body.is_empty());

    // Past the end: 206 at the end, 416 beyond it; nothing to count: */0.
    let at_end = server.request("GET", "/rest/v1/counted?offset=7", &exact, b"");
    assert_eq!((at_end.status, at_end.header("content-range")), (206, Some("*/7")));
    let beyond = server.request("GET", "/rest/v1/counted?offset=8", &exact, b"");
    assert_eq!(beyond.status, 416);
    assert_eq!(
        beyond.text(),
        r#"{"code":"PGRST103","details":"An offset of 8 was requested, but there are only 7 rows.","hint":null,"message":"Requested range not satisfiable"}"#
    );
    let none = server.request("GET", "/rest/v1/counted?id=gt.100", &exact, b"");
    assert_eq!((none.status, none.header("content-range")), (200, Some("*/0")));

    // Without the preference nothing is counted.
    let uncounted = server.get("/rest/v1/counted?select=id&limit=2");
    assert_eq!((uncounted.status, uncounted.header("content-range")), (200, Some("0-1/*")));
    assert_eq!(uncounted.header("preference-applied"), None);

    // handling=strict refuses what it does not understand.
    let strict = server.request("GET", "/rest/v1/counted", &[("Prefer", "handling=strict, frobnicate")], b"");
    assert_eq!(strict.status, 400);
    assert_eq!(strict.json()["code"], "PGRST122");
}

#[test]
fn singular_objects() {
    let server = TestServer::start();
    server.sql(
        "create table public.people (id int primary key, name text, nick text);
         insert into public.people values (1, 'Ada', null), (2, 'Grace', 'amazing'), (3, 'Alan', null);
         grant select on public.people to anon;",
    );
    server.wait_for_relations(&["people"]);
    let object = [("Accept", "application/vnd.pgrst.object+json")];

    let one = server.request("GET", "/rest/v1/people?id=eq.2", &object, b"");
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.header("content-type"), Some("application/vnd.pgrst.object+json; charset=utf-8"));
    assert_eq!(one.text(), r#"{"id":2,"name":"Grace","nick":"amazing"}"#);

    for (query, rows) in [("name=like.A*", 2), ("id=eq.9", 0)] {
        let refused = server.request("GET", &format!("/rest/v1/people?{query}"), &object, b"");
        assert_eq!(refused.status, 406);
        assert_eq!(
            refused.text(),
            format!(
                r#"{{"code":"PGRST116","details":"The result contains {rows} rows","hint":null,"message":"Cannot coerce the result to a single JSON object"}}"#
            )
        );
    }

    // The first acceptable range wins (tests/rest_media.rs covers every media type).
    let json_first = server.request(
        "GET",
        "/rest/v1/people?id=eq.1",
        &[("Accept", "application/json, application/vnd.pgrst.object+json")],
        b"",
    );
    assert_eq!(json_first.text(), r#"[{"id":1,"name":"Ada","nick":null}]"#);
    let stripped = server.request(
        "GET",
        "/rest/v1/people?id=eq.1",
        &[("Accept", "application/vnd.pgrst.object+json;nulls=stripped")],
        b"",
    );
    assert_eq!((stripped.status, stripped.text().as_str()), (200, r#"{"id":1,"name":"Ada"}"#));
}

#[test]
fn operators_quantifiers_and_full_text_search() {
    let server = TestServer::start();
    server.sql(
        "create table public.docs (id int primary key, title text, tags text[], span int4range, body tsvector, note text);
         insert into public.docs values
           (1, 'Rust in Action', '{rust,systems}', '[1,5)', to_tsvector('english', 'the quick brown fox'), null),
           (2, 'Postgres Internals', '{db,postgres}', '[5,9)', to_tsvector('english', 'slow green turtles'), 'x'),
           (3, 'rusty nails', '{hardware}', '[20,30)', to_tsvector('english', 'quick nails and foxes'), 'y');
         grant select on public.docs to anon;",
    );
    server.wait_for_relations(&["docs"]);
    let ids = |query: &str| {
        let r = server.get(&format!("/rest/v1/docs?select=id&order=id&{query}"));
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        r.json().as_array().unwrap().iter().map(|row| row["id"].as_i64().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(ids("title=match.^R"), [1]);
    assert_eq!(ids("title=imatch.^r"), [1, 3]);
    assert_eq!(ids("note=isdistinct.x"), [1, 3]);
    assert_eq!(ids("tags=cs.{rust}"), [1]);
    assert_eq!(ids("tags=cd.{db,postgres,extra}"), [2]);
    assert_eq!(ids("tags=ov.{hardware,db}"), [2, 3]);
    assert_eq!(ids("span=sl.[10,12)"), [1, 2]);
    assert_eq!(ids("span=sr.[10,12)"), [3]);
    assert_eq!(ids("span=adj.[9,20)"), [2, 3]);
    assert_eq!(ids("span=nxr.[0,6)"), [1]);
    assert_eq!(ids("span=nxl.[5,6)"), [2, 3]);
    assert_eq!(ids("title=like(any).{Rust*,*nails}"), [1, 3]);
    assert_eq!(ids("title=ilike(all).{*rust*,*ACTION*}"), [1]);
    assert_eq!(ids("id=gt(all).{1,2}"), [3]);
    assert_eq!(ids("id=not.eq(any).{1,3}"), [2]);
    assert_eq!(ids("body=fts(english).quick%20%26%20fox"), [1, 3]);
    assert_eq!(ids("body=plfts.quick%20nails"), [3]);
    assert_eq!(ids("body=phfts(english).quick%20brown"), [1]);
    assert_eq!(ids("body=wfts(english).quick%20-nails"), [1]);
    // A configuration that does not exist is PostgreSQL's error, not an injection.
    let bad = server.get("/rest/v1/docs?body=fts(nope%27%3B).x");
    assert_eq!(bad.status, 400, "{}", bad.text());
}

#[test]
fn logic_trees() {
    let server = TestServer::start();
    server.sql(
        "create table public.pets (id int primary key, name text, kind text, age int);
         insert into public.pets values (1, 'Rex', 'dog', 3), (2, 'Tom', 'cat', 9), (3, 'Kit, the cat', 'cat', 1),
                                        (4, 'Bo', 'dog', 12), (5, 'Nemo', 'fish', null);
         grant select on public.pets to anon;",
    );
    server.wait_for_relations(&["pets"]);
    let ids = |query: &str| {
        let r = server.get(&format!("/rest/v1/pets?select=id&order=id&{query}"));
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        r.json().as_array().unwrap().iter().map(|row| row["id"].as_i64().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(ids("or=(kind.eq.fish,age.gt.10)"), [4, 5]);
    assert_eq!(ids("kind=eq.cat&or=(age.lt.2,name.eq.Tom)"), [2, 3]);
    assert_eq!(ids("or=(and(kind.eq.dog,age.lt.5),and(kind.eq.cat,age.gt.5))"), [1, 2]);
    assert_eq!(ids("not.or=(kind.eq.dog,kind.eq.cat)"), [5]);
    assert_eq!(ids("and=(age.gte.3,not.or(name.eq.Bo,age.is.null))"), [1, 2]);
    assert_eq!(ids("or=(name.eq.%22Kit,%20the%20cat%22,id.in.(4,5))"), [3, 4, 5]);
    assert_eq!(ids("or=(name.ilike.*o*,kind.like(any).{fi*})"), [2, 4, 5]);
    // Writes apply trees too: exactly the rows the tree selects change.
    let key = format!("Bearer {}", token(json!({"role": "service_role"})));
    let patch = server.request(
        "PATCH",
        "/rest/v1/pets?or=(id.eq.1,and(kind.eq.cat,age.gt.5))",
        &[("Authorization", &key), ("Content-Type", "application/json")],
        br#"{"age":0}"#,
    );
    assert_eq!(patch.status, 204, "{}", patch.text());
    let zeroed = server.sql("select string_agg(id::text, ',' order by id) from public.pets where age = 0");
    assert_eq!(zeroed[0].rows[0].get_str(0), Some("1,2"));
    // Hostile names and values stay quoted and bound.
    let r = server.get("/rest/v1/pets?or=(%22id%22%22;drop%20table%20pets;--%22.eq.1,name.eq.x%27)");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(server.sql("select count(*)::text from public.pets")[0].rows[0].get_str(0), Some("5"));
}

#[test]
fn json_paths_in_filters_and_order() {
    let server = TestServer::start();
    server.sql(
        r#"create table public.profiles (id int primary key, data jsonb, doc json);
           insert into public.profiles values
             (1, '{"name":"Ada","age":36,"langs":["en","fr"],"addr":{"city":"London"}}', '{"k":"a"}'),
             (2, '{"name":"Alan","age":41,"langs":["en"],"addr":{"city":"Wilmslow"}}', '{"k":"b"}'),
             (3, '{"name":"Grace","age":85,"langs":["en","es"],"addr":{"city":"New York"}}', '{"k":"a"}');
           grant select on public.profiles to anon;"#,
    );
    server.wait_for_relations(&["profiles"]);
    let ids = |query: &str| {
        let r = server.get(&format!("/rest/v1/profiles?select=id&{query}"));
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        r.json().as_array().unwrap().iter().map(|row| row["id"].as_i64().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(ids("data->>name=eq.Alan"), [2]);
    assert_eq!(ids("data->addr->>city=like.*o*&order=id"), [1, 2, 3]);
    assert_eq!(ids("data->langs->>1=eq.es"), [3]);
    assert_eq!(ids("data->langs->>-1=eq.fr"), [1]);
    assert_eq!(ids("data->age=gt.40&order=data->age.desc"), [3, 2]);
    assert_eq!(ids("doc->>k=eq.a&order=id.desc"), [3, 1]);
    assert_eq!(ids("data->langs=cs.%5B%22es%22%5D"), [3]);
    assert_eq!(ids("or=(data->>name.eq.Ada,data->>name.eq.Grace)&order=id"), [1, 3]);
    // A hostile key is a bound value: no match, no error, table intact.
    assert_eq!(ids("data->>%22x%27)%20or%201%3D1--%22=eq.1"), Vec::<i64>::new());
    assert_eq!(server.sql("select count(*)::text from public.profiles")[0].rows[0].get_str(0), Some("3"));
}

#[test]
fn prefer_timezone_sets_the_transaction_time_zone() {
    let server = TestServer::start();
    server.sql(
        "create table public.events (id int primary key, at timestamptz not null);
         insert into public.events values (1, '2024-01-15 12:00:00+00');
         grant select on public.events to anon;",
    );
    server.wait_for_relations(&["events"]);
    let read = |prefer: &str| get(&server, "events", &[("select", "at")], &[("Prefer", prefer)]);
    let r = read("timezone=America/Los_Angeles");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"[{"at":"2024-01-15T04:00:00-08:00"}]"#);
    assert_eq!(r.header("preference-applied"), Some("timezone=America/Los_Angeles"));
    let r = read("timezone=Asia/Kolkata, count=exact");
    assert_eq!(r.text(), r#"[{"at":"2024-01-15T17:30:00+05:30"}]"#);
    assert_eq!(r.header("preference-applied"), Some("count=exact, timezone=Asia/Kolkata"));
    // An unknown zone is PostgreSQL's error even when lenient.
    let r = read("timezone=Mars/Olympus");
    let body = assert_error(&r, 400, "22023");
    assert!(body["message"].as_str().unwrap().contains("Mars/Olympus"), "{body}");
    // Writes honour it too.
    let r = server.request(
        "POST",
        "/rest/v1/events?select=at",
        &[("Authorization", &support::service_role()), ("Prefer", "return=representation, timezone=UTC")],
        br#"{"id": 2, "at": "2024-06-01 10:00:00+02"}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (201, r#"[{"at":"2024-06-01T08:00:00+00:00"}]"#));
}
