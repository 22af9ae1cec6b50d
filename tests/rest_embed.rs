//! Resource embedding from the outside (reference/rest.md §3.2): to-one, to-many, one-to-one,
//! many-to-many, self references, computed relationships, hints and their errors, `!inner`,
//! spreads, embedded filters/order/limit, null filters on embeds, related order, aggregates and
//! JSON paths in `select` — the real binary against a real PostgreSQL.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{assert_pgrst_error, rest_url as url, HttpResponse, TestServer};

const SCHEMA: &str = r#"
create table public.users (username text primary key, status text not null default 'ONLINE', data jsonb);
create table public.channels (id bigint primary key, slug text);
create table public.channel_details (id bigint primary key references public.channels(id), details text);
create table public.messages (
  id bigint primary key,
  message text,
  username text not null references public.users,
  channel_id bigint not null references public.channels
);
create table public.best_friends (
  id int primary key,
  first_user text not null references public.users,
  second_user text not null references public.users
);
create table public.collections (id int primary key, parent_id int references public.collections(id), name text);
create table public.products (id int primary key, name text, price numeric(6,2));
create table public.categories (id int primary key, name text);
create table public.product_categories (
  product_id int references public.products,
  category_id int references public.categories,
  primary key (product_id, category_id)
);
create view public.online_users as select username as name, status from public.users where status = 'ONLINE';
create view public.online_names as select name from public.online_users;
create function public.get_messages(u public.users) returns setof public.messages
  language sql stable as $$ select * from public.messages where username = u.username $$;
create function public.first_message(u public.users) returns setof public.messages rows 1
  language sql stable as $$ select * from public.messages where username = u.username order by id limit 1 $$;
create function public.shout(public.messages) returns text
  language sql stable as $$ select upper($1.message) $$;

insert into public.users values
  ('alice', 'ONLINE', '{"tags": ["a", "b"], "address": {"city": "Oslo"}}'),
  ('bob', 'OFFLINE', null),
  ('carol', 'ONLINE', null);
insert into public.channels values (1, 'public'), (2, 'random'), (3, 'empty');
insert into public.channel_details values (1, 'Details for public');
insert into public.messages values
  (1, 'hello', 'alice', 1), (2, 'world', 'alice', 2), (3, 'hi there', 'bob', 1), (4, 'again', 'alice', 1);
insert into public.best_friends values (1, 'alice', 'bob');
insert into public.collections values (1, null, 'root'), (2, 1, 'child a'), (3, 1, 'child b'), (4, 2, 'grandchild');
insert into public.products values (1, 'pen', 1.50), (2, 'ink', 3.00), (3, 'pad', 2.25);
insert into public.categories values (1, 'office'), (2, 'writing');
insert into public.product_categories values (1, 1), (1, 2), (2, 2);
grant select on all tables in schema public to anon;
"#;

fn get(server: &TestServer, table: &str, params: &[(&str, &str)]) -> HttpResponse {
    server.request("GET", &url(table, params), &[], b"")
}

fn ok(response: HttpResponse) -> Value {
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

fn start() -> TestServer {
    let server = TestServer::start();
    server.sql(SCHEMA);
    server.wait_for_relations(&["users", "channels", "channel_details", "messages", "best_friends"]);
    server.wait_for_relations(&["collections", "products", "categories", "product_categories", "online_names"]);
    server
}

#[test]
fn to_one_to_many_one_to_one_and_many_to_many() {
    let server = start();
    // many-to-one: an object (aliased), one-to-many: an array (empty when none).
    let body = ok(get(
        &server,
        "messages",
        &[("select", "id,author:users(username,status)"), ("id", "in.(1,3)"), ("order", "id")],
    ));
    assert_eq!(
        body,
        json!([
            {"id": 1, "author": {"username": "alice", "status": "ONLINE"}},
            {"id": 3, "author": {"username": "bob", "status": "OFFLINE"}}
        ])
    );
    let body = ok(get(&server, "users", &[("select", "username,messages(id)"), ("order", "username")]));
    assert_eq!(
        body,
        json!([
            {"username": "alice", "messages": [{"id": 1}, {"id": 2}, {"id": 4}]},
            {"username": "bob", "messages": [{"id": 3}]},
            {"username": "carol", "messages": []}
        ])
    );
    // one-to-one from the referenced side: an object or null.
    let body = ok(get(&server, "channels", &[("select", "id,channel_details(details)"), ("order", "id")]));
    assert_eq!(
        body,
        json!([
            {"id": 1, "channel_details": {"details": "Details for public"}},
            {"id": 2, "channel_details": null},
            {"id": 3, "channel_details": null}
        ])
    );
    // many-to-many through the junction table, nested two levels, `*` inside.
    let body = ok(get(
        &server,
        "products",
        &[("select", "name,categories(*,products(name))"), ("id", "eq.1"), ("categories.order", "id")],
    ));
    assert_eq!(
        body,
        json!([{"name": "pen", "categories": [
            {"id": 1, "name": "office", "products": [{"name": "pen"}]},
            {"id": 2, "name": "writing", "products": [{"name": "pen"}, {"name": "ink"}]}
        ]}])
    );
    // Views relate through the base-table keys whose columns they show (also views of views).
    let body =
        ok(get(&server, "messages", &[("select", "id,online_users(name)"), ("id", "in.(1,3)"), ("order", "id")]));
    assert_eq!(body, json!([{"id": 1, "online_users": {"name": "alice"}}, {"id": 3, "online_users": null}]));
    let body = ok(get(&server, "online_names", &[("select", "name,messages(id)"), ("order", "name")]));
    assert_eq!(
        body,
        json!([{"name": "alice", "messages": [{"id": 1}, {"id": 2}, {"id": 4}]}, {"name": "carol", "messages": []}])
    );
    // Embedding by the foreign-key column or the constraint name.
    let by_column = ok(get(&server, "messages", &[("select", "id,username(status)"), ("id", "eq.3")]));
    assert_eq!(by_column, json!([{"id": 3, "username": {"status": "OFFLINE"}}]));
    let by_constraint =
        ok(get(&server, "messages", &[("select", "id,messages_username_fkey(username)"), ("id", "eq.3")]));
    assert_eq!(by_constraint, json!([{"id": 3, "messages_username_fkey": {"username": "bob"}}]));
    // An empty embed is used only to filter; `!inner` drops parents without a match.
    let body = ok(get(
        &server,
        "users",
        &[("select", "username,messages!inner()"), ("messages.channel_id", "eq.2"), ("order", "username")],
    ));
    assert_eq!(body, json!([{"username": "alice"}]));
    // Null filters on an embed filter the parent rows (and the count agrees).
    let response = server.request(
        "GET",
        &url("users", &[("select", "username,messages(id)"), ("messages", "is.null")]),
        &[("prefer", "count=exact")],
        b"",
    );
    assert_eq!(response.header("content-range"), Some("0-0/1"), "{}", response.text());
    assert_eq!(response.json(), json!([{"username": "carol", "messages": []}]));
    let response = server.request(
        "GET",
        &url("users", &[("select", "username,messages!inner(id)"), ("messages.id", "gt.2"), ("order", "username")]),
        &[("prefer", "count=exact")],
        b"",
    );
    assert_eq!(response.header("content-range"), Some("0-1/2"), "{}", response.text());
    assert_eq!(
        response.json(),
        json!([{"username": "alice", "messages": [{"id": 4}]}, {"username": "bob", "messages": [{"id": 3}]}])
    );
}

#[test]
fn self_references_hints_and_their_errors() {
    let server = start();
    // Self reference: the table name gives the children, the column name the parent.
    let body = ok(get(&server, "collections", &[("select", "name,collections(name)"), ("id", "eq.1")]));
    assert_eq!(body, json!([{"name": "root", "collections": [{"name": "child a"}, {"name": "child b"}]}]));
    let body = ok(get(&server, "collections", &[("select", "name,parent:parent_id(name)"), ("id", "eq.4")]));
    assert_eq!(body, json!([{"name": "grandchild", "parent": {"name": "child a"}}]));
    let body = ok(get(&server, "collections", &[("select", "name,collections!parent_id(name)"), ("id", "eq.2")]));
    assert_eq!(body, json!([{"name": "child a", "collections": [{"name": "grandchild"}]}]));
    let response = get(&server, "collections", &[("select", "*,collections!collections_parent_id_fkey(*)")]);
    let error = assert_pgrst_error(&response, 400, "PGRST200");
    assert_eq!(
        error["details"],
        "Searched for a foreign key relationship between 'collections' and 'collections' using the hint \
         'collections_parent_id_fkey' in the schema 'public', but no matches were found."
    );
    assert_eq!(error["hint"], Value::Null);

    // Two foreign keys to the same table: ambiguous without a hint (300 Multiple Choices).
    let response = get(&server, "best_friends", &[("select", "users(username)")]);
    let error = assert_pgrst_error(&response, 300, "PGRST201");
    assert_eq!(
        error,
        json!({
            "code": "PGRST201",
            "details": [
                {"cardinality": "many-to-one", "embedding": "best_friends with users",
                 "relationship": "best_friends_first_user_fkey using best_friends(first_user) and users(username)"},
                {"cardinality": "many-to-one", "embedding": "best_friends with users",
                 "relationship": "best_friends_second_user_fkey using best_friends(second_user) and users(username)"}
            ],
            "hint": "Try changing 'users' to one of the following: 'users!best_friends_first_user_fkey', \
                     'users!best_friends_second_user_fkey'. Find the desired relationship in the 'details' key.",
            "message": "Could not embed because more than one relationship was found for 'best_friends' and 'users'"
        })
    );
    let body = ok(get(
        &server,
        "best_friends",
        &[("select", "first:users!first_user(username),second:users!best_friends_second_user_fkey(username)")],
    ));
    assert_eq!(body, json!([{"first": {"username": "alice"}, "second": {"username": "bob"}}]));
    // The same embed twice without aliases would repeat a key; PostgreSQL refuses it as behind PostgREST.
    let response = get(&server, "best_friends", &[("select", "users!first_user(*),users!second_user(*)")]);
    let error = assert_pgrst_error(&response, 400, "42712");
    assert_eq!(error["message"], "table name \"best_friends_users_1\" specified more than once");

    // No relationship: PGRST200 with a fuzzy suggestion.
    let response = get(&server, "messages", &[("select", "*,user(*)")]);
    let error = assert_pgrst_error(&response, 400, "PGRST200");
    assert_eq!(error["message"], "Could not find a relationship between 'messages' and 'user' in the schema cache");
    assert_eq!(error["hint"], "Perhaps you meant 'users' instead of 'user'.");
    // Filters, order and limits on something not embedded: PGRST108; bad operator: PGRST120.
    let response = get(&server, "messages", &[("select", "id"), ("users.status", "eq.ONLINE")]);
    let error = assert_pgrst_error(&response, 400, "PGRST108");
    assert_eq!(error["message"], "'users' is not an embedded resource in this request");
    let response = get(&server, "users", &[("select", "*,messages(*)"), ("messages", "eq.1")]);
    let error = assert_pgrst_error(&response, 400, "PGRST120");
    assert_eq!(error["details"], "Only is null or not is null filters are allowed on embedded resources");
    // Ordering by a to-many embed is refused (PGRST118); by a to-one embed it works.
    let response = get(&server, "users", &[("select", "*,messages(*)"), ("order", "messages(id)")]);
    assert_pgrst_error(&response, 400, "PGRST118");
    let body = ok(get(
        &server,
        "messages",
        &[("select", "id,users(username)"), ("order", "users(username).desc,id"), ("limit", "2")],
    ));
    assert_eq!(body, json!([{"id": 3, "users": {"username": "bob"}}, {"id": 1, "users": {"username": "alice"}}]));
}

#[test]
fn shaping_embeds_computed_relationships_spreads_aggregates_and_json_paths() {
    let server = start();
    // Embedded filters, logic trees, order and limit apply inside the embed only.
    let body = ok(get(
        &server,
        "users",
        &[
            ("select", "username,messages(id,message)"),
            ("username", "eq.alice"),
            ("messages.or", "(id.eq.1,message.eq.again)"),
            ("messages.order", "id.desc"),
            ("messages.limit", "1"),
        ],
    ));
    assert_eq!(body, json!([{"username": "alice", "messages": [{"id": 4, "message": "again"}]}]));
    // Computed relationships (to-many, and to-one by `rows 1`) and computed fields inside embeds.
    let body = ok(get(
        &server,
        "users",
        &[("select", "username,all:get_messages(id,shout),first:first_message(id)"), ("username", "eq.bob")],
    ));
    assert_eq!(body, json!([{"username": "bob", "all": [{"id": 3, "shout": "HI THERE"}], "first": {"id": 3}}]));
    // Spreads: a to-one spread lifts columns, a to-many spread makes arrays.
    let body = ok(get(&server, "messages", &[("select", "id,...users(who:username,status)"), ("id", "eq.3")]));
    assert_eq!(body, json!([{"id": 3, "who": "bob", "status": "OFFLINE"}]));
    let body =
        ok(get(&server, "channels", &[("select", "slug,...messages(id)"), ("id", "eq.1"), ("messages.order", "id")]));
    assert_eq!(body, json!([{"slug": "public", "id": [1, 3, 4]}]));
    // Embeds on the representation of a write.
    let response = server.request(
        "POST",
        &url("messages", &[("select", "id,users(status)")]),
        &[("prefer", "return=representation"), ("authorization", &support::service_role())],
        br#"{"id": 9, "message": "new", "username": "carol", "channel_id": 3}"#,
    );
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json(), json!([{"id": 9, "users": {"status": "ONLINE"}}]));

    // JSON paths in select: the key is the last path element unless aliased.
    let body = ok(get(
        &server,
        "users",
        &[("select", "data->address->>city,first_tag:data->tags->0,data->tags"), ("username", "eq.alice")],
    ));
    assert_eq!(body, json!([{"city": "Oslo", "first_tag": "a", "tags": ["a", "b"]}]));

    // Aggregates are off until the database enables them (PostgREST's db-aggregates-enabled).
    let response = get(&server, "products", &[("select", "price.sum()")]);
    let error = assert_pgrst_error(&response, 400, "PGRST123");
    assert_eq!(error["message"], "Use of aggregate functions is not allowed");
    // The setting belongs to the role MadBase logs in as (here the test cluster's superuser).
    server.sql("alter role current_user set pgrst.db_aggregates_enabled to 'true'; notify pgrst, 'reload config'");
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&server, "products", &[("select", "price.sum()")]).status != 200 {
        assert!(Instant::now() < deadline, "aggregates were never enabled");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ok(get(&server, "products", &[("select", "price.sum()")])), json!([{"sum": 6.75}]));
    assert_eq!(
        ok(get(&server, "products", &[("select", "total:price.sum()::int,n:count(),most:price.max()")])),
        json!([{"total": 7, "n": 3, "most": 3.00}])
    );
    // Grouping by the other selected columns, and aggregates inside embeds.
    assert_eq!(
        ok(get(&server, "users", &[("select", "status,count()"), ("order", "status")])),
        json!([{"status": "OFFLINE", "count": 1}, {"status": "ONLINE", "count": 2}])
    );
    assert_eq!(
        ok(get(&server, "users", &[("select", "username,messages(count())"), ("order", "username")])),
        json!([
            {"username": "alice", "messages": [{"count": 3}]},
            {"username": "bob", "messages": [{"count": 1}]},
            {"username": "carol", "messages": [{"count": 1}]}
        ])
    );
}

#[test]
fn embed_filters_never_vanish_from_writes() {
    let server = start();
    let service = support::service_role();
    // On a read `users=is.null` filters by the embed; a write has no embed to join, so it is a
    // filter on a column of that name — which does not exist: refused, nothing deleted.
    let r = server.request(
        "DELETE",
        &url("messages", &[("select", "id,users()"), ("users", "is.null")]),
        &[("authorization", &service)],
        b"",
    );
    assert_pgrst_error(&r, 400, "42703");
    let left = server.sql("select count(*)::text from public.messages");
    assert_eq!(left[0].rows[0].get_str(0), Some("4"));
}
