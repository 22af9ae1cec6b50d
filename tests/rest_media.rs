//! Media types, planned/estimated counts, the `Range` header and the OpenAPI description of
//! `/rest/v1`, from the outside: the real binary against a real PostgreSQL (with PostGIS for
//! GeoJSON). Exact bytes where PostgREST's are known (CSV, content types, error bodies).

mod support;

use serde_json::{json, Value};
use support::{assert_pgrst_error, service_role, HttpResponse, TestServer};

const SCHEMA: &str = r#"
create extension if not exists postgis schema extensions;
comment on schema public is 'People API

Everyone we know';
create table public.people (
  id int primary key,
  name text not null,
  note text,
  data jsonb,
  tags text[],
  born date
);
comment on table public.people is 'People we know';
comment on column public.people.name is 'Full name';
insert into public.people values
  (1, 'Ada', null, '{"a": [1, "x"]}', '{a,b}', '1815-12-10'),
  (2, 'Grace "Amazing" Hopper', 'admiral, navy', null, '{}', null),
  (3, 'Linus', '', '"str"', null, null);

create table public.pets (id int primary key, owner int references public.people (id), kind varchar(10) default 'cat');
create table public.secret (id int);
revoke all on public.secret from anon, authenticated;

create table public.shops (id int primary key, address text, location extensions.geometry(point, 4326));
insert into public.shops values (1, '1369 Cambridge St', 'SRID=4326;POINT(-71.10044 42.373695)');

-- Planner statistics that say 5000 rows while 1000 are stored (autovacuum kept away).
create table public.big (id int primary key) with (autovacuum_enabled = false);
insert into public.big select generate_series(1, 1000);
analyze public.big;
update pg_class set reltuples = 5000 where oid = 'public.big'::regclass;

create function public.people_from(min int) returns setof public.people stable language sql
  as $$ select * from public.people where id >= min order by id $$;
create function public.name_of(pid int) returns text stable language sql
  as $$ select name from public.people where id = pid $$;
comment on function public.name_of(int) is 'The name of a person';
"#;

fn server(env: &[(&str, &str)]) -> TestServer {
    let server = TestServer::start_with(env);
    server.sql(SCHEMA);
    server.wait_for_relations(&["people", "pets", "shops", "big", "secret"]);
    server.wait_for_function("people_from?min=1");
    server.wait_for_function("name_of?pid=1");
    server
}

fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    server.request("GET", &format!("/rest/v1/{path}"), headers, b"")
}

fn accept(media: &str) -> [(&str, &str); 1] {
    [("Accept", media)]
}

#[test]
fn csv_geojson_stripped_nulls_and_406() {
    let server = server(&[]);
    const ALL: &str = "id,name,note,data,tags,born\n\
        1,Ada,,\"{\"\"a\"\": [1, \"\"x\"\"]}\",\"{a,b}\",1815-12-10\n\
        2,\"Grace \"\"Amazing\"\" Hopper\",\"admiral, navy\",,{},\n\
        3,Linus,\"\",\"\"\"str\"\"\",,";

    let csv = get(&server, "people?order=id", &accept("text/csv"));
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(csv.header("content-range"), Some("0-2/*"));
    assert_eq!(csv.text(), ALL);
    // The header is the selected keys; a page is a page; an empty result is PostgREST's "\n".
    let page = get(&server, "people?select=id,n:name&order=id&offset=1&limit=1", &accept("text/csv"));
    assert_eq!(page.text(), "id,n\n2,\"Grace \"\"Amazing\"\" Hopper\"");
    assert_eq!(page.header("content-range"), Some("1-1/*"));
    assert_eq!(get(&server, "people?id=eq.99", &accept("text/csv")).text(), "\n");
    let ranged = get(&server, "people?select=id&order=id", &[("Accept", "text/csv"), ("Range", "1-")]);
    assert_eq!((ranged.text().as_str(), ranged.header("content-range")), ("id\n2\n3", Some("1-2/*")));
    // Function results too (the header comes from the function's rows, as in PostgREST).
    let rpc = get(&server, "rpc/people_from?min=3&select=id,name", &accept("text/csv"));
    assert_eq!(rpc.text(), "id,name,note,data,tags,born\n3,Linus");
    assert_eq!(get(&server, "rpc/name_of?pid=1", &accept("text/csv")).text(), "pgrst_scalar\nAda");
    // And write representations.
    let insert = server.request(
        "POST",
        "/rest/v1/people?select=id,name",
        &[("Accept", "text/csv"), ("Prefer", "return=representation, tx=rollback"), ("Authorization", &service_role())],
        br#"{"id":4,"name":"Edsger, W."}"#,
    );
    assert_eq!((insert.status, insert.text().as_str()), (201, "id,name\n4,\"Edsger, W.\""), "{}", insert.text());
    assert_eq!(insert.header("content-type"), Some("text/csv; charset=utf-8"));

    // nulls=stripped for arrays and objects, with PostgREST's content types.
    let stripped =
        get(&server, "people?select=id,note,data&order=id", &accept("application/vnd.pgrst.array+json;nulls=stripped"));
    assert_eq!(stripped.status, 200);
    assert_eq!(stripped.header("content-type"), Some("application/vnd.pgrst.array+json;nulls=stripped; charset=utf-8"));
    assert_eq!(
        stripped.json(),
        json!([{"id": 1, "data": {"a": [1, "x"]}}, {"id": 2, "note": "admiral, navy"}, {"id": 3, "note": "", "data": "str"}])
    );
    let object =
        get(&server, "people?select=id,note&id=eq.1", &accept("application/vnd.pgrst.object+json;nulls=stripped"));
    assert_eq!(object.header("content-type"), Some("application/vnd.pgrst.object+json;nulls=stripped; charset=utf-8"));
    assert_eq!(object.text(), r#"{"id":1}"#);
    let two = get(&server, "people?id=lt.3", &accept("application/vnd.pgrst.object+json;nulls=stripped"));
    assert_eq!(
        two.text(),
        r#"{"code":"PGRST116","details":"The result contains 2 rows","hint":null,"message":"Cannot coerce the result to a single JSON object"}"#
    );
    let rpc_object = get(&server, "rpc/people_from?min=3&select=id,data", &accept("application/vnd.pgrst.object+json"));
    assert_eq!(rpc_object.json(), json!({"id": 3, "data": "str"}));
    let rpc_scalar = get(&server, "rpc/name_of?pid=3", &accept("application/vnd.pgrst.object+json"));
    assert_eq!((rpc_scalar.status, rpc_scalar.text().as_str()), (200, "\"Linus\""));

    // GeoJSON through PostGIS.
    let geo = get(&server, "shops", &accept("application/geo+json"));
    assert_eq!(geo.status, 200, "{}", geo.text());
    assert_eq!(geo.header("content-type"), Some("application/geo+json; charset=utf-8"));
    assert_eq!(
        geo.json(),
        json!({"type": "FeatureCollection", "features": [{"type": "Feature",
            "geometry": {"type": "Point", "coordinates": [-71.10044, 42.373695]},
            "properties": {"id": 1, "address": "1369 Cambridge St"}}]})
    );
    let none = get(&server, "shops?id=eq.9", &accept("application/geo+json"));
    assert_eq!(none.json(), json!({"type": "FeatureCollection", "features": []}));

    // Nothing producible: 406 PGRST107 listing the ranges as PostgREST renders them.
    let refused = get(&server, "people", &accept("text/xml, text/plain;q=0.5, application/*"));
    let body = assert_pgrst_error(&refused, 406, "PGRST107");
    assert_eq!(body["message"], "None of these media types are available: text/xml, application/*, text/plain");
    let openapi_here = get(&server, "people", &accept("application/openapi+json"));
    assert_eq!(
        assert_pgrst_error(&openapi_here, 406, "PGRST107")["message"],
        "None of these media types are available: application/openapi+json"
    );
    let rpc_refused = get(&server, "rpc/name_of?pid=1", &accept("text/plain"));
    assert_eq!(
        assert_pgrst_error(&rpc_refused, 406, "PGRST107")["message"],
        "None of these media types are available: text/plain"
    );
    // Plans are off by default (PostgREST's db-plan-enabled = false).
    let plan =
        get(&server, "people", &accept(r#"application/vnd.pgrst.plan+json; for="application/json"; options=analyze;"#));
    assert_eq!(
        assert_pgrst_error(&plan, 406, "PGRST107")["message"],
        r#"None of these media types are available: application/vnd.pgrst.plan+json; for="application/json"; options=analyze"#
    );
}

#[test]
fn plans_counts_ranges_and_openapi() {
    let server = server(&[("MADBASE_DB_PLAN_ENABLED", "true")]);

    // Plans: EXPLAIN of the statement with its bound values; text by default, JSON on request.
    let text = get(&server, "people?id=eq.1", &accept("application/vnd.pgrst.plan"));
    assert_eq!(text.status, 200, "{}", text.text());
    assert_eq!(
        text.header("content-type"),
        Some(r#"application/vnd.pgrst.plan+text; for="application/json"; charset=utf-8"#)
    );
    assert!(text.text().starts_with("Aggregate  (cost="), "{}", text.text());
    assert!(text.text().ends_with('\n') && text.header("content-range").is_none());
    let analyzed = get(
        &server,
        "people?id=gt.1",
        &accept(r#"application/vnd.pgrst.plan+json; for="text/csv"; options=settings|analyze;"#),
    );
    assert_eq!(
        analyzed.header("content-type"),
        Some(r#"application/vnd.pgrst.plan+json; for="text/csv"; options=analyze|settings; charset=utf-8"#)
    );
    let plan = analyzed.json();
    assert_eq!(plan[0]["Plan"]["Node Type"], "Aggregate", "{plan}");
    assert_eq!(plan[0]["Plan"]["Actual Rows"], 1, "{plan}");
    // The request schema, then db-extra-search-path: the string the postgrest-js suite compares.
    assert_eq!(plan[0]["Settings"]["search_path"], "\"public\", \"public\", \"extensions\"", "{plan}");
    // Query identifiers are computed (compute_query_id, as with Supabase's pg_stat_statements).
    let verbose = get(&server, "people", &accept("application/vnd.pgrst.plan+json; options=verbose"));
    assert!(verbose.json()[0]["Query Identifier"].is_i64(), "{}", verbose.text());
    let rpc_plan = get(&server, "rpc/people_from?min=2", &accept("application/vnd.pgrst.plan+text"));
    assert!(rpc_plan.text().starts_with("Aggregate  (cost="), "{}", rpc_plan.text());
    let not_for_xml = get(&server, "people", &accept(r#"application/vnd.pgrst.plan; for="text/xml""#));
    assert_pgrst_error(&not_for_xml, 406, "PGRST107");

    // count=planned: the planner's estimate (5000) for 1000 stored rows, in the same round trip.
    let planned = get(&server, "big?limit=10", &[("Prefer", "count=planned")]);
    assert_eq!(planned.status, 206);
    assert_eq!(planned.header("content-range"), Some("0-9/5000"));
    assert_eq!(planned.header("preference-applied"), Some("count=planned"));
    let head = server.request("HEAD", "/rest/v1/big", &[("Prefer", "count=planned")], b"");
    assert_eq!((head.status, head.header("content-range")), (206, Some("0-999/5000")));
    // Past the estimate: 416 as for exact counts.
    let beyond = get(&server, "big?offset=6000", &[("Prefer", "count=planned")]);
    let body = assert_pgrst_error(&beyond, 416, "PGRST103");
    assert_eq!(body["details"], "An offset of 6000 was requested, but there are only 5000 rows.");
    // count=estimated: the exact count while it is within db-max-rows (default 1000), as here.
    let estimated = get(&server, "big?limit=1", &[("Prefer", "count=estimated")]);
    assert_eq!((estimated.status, estimated.header("content-range")), (206, Some("0-0/1000")));
    assert_eq!(estimated.header("preference-applied"), Some("count=estimated"));
    let exact = get(&server, "big?limit=1", &[("Prefer", "count=exact")]);
    assert_eq!(exact.header("content-range"), Some("0-0/1000"));
    // Reads list every honoured preference, in PostgREST's order.
    let prefs = get(&server, "people?id=eq.1", &[("Prefer", "handling=lenient, tx=rollback, count=exact")]);
    assert_eq!(prefs.header("preference-applied"), Some("count=exact, tx=rollback, handling=lenient"));
    let small = get(&server, "people?id=eq.1", &[("Prefer", "count=estimated")]);
    assert_eq!((small.status, small.header("content-range")), (200, Some("0-0/1")));
    // Functions get no planner estimate (PostgREST's behaviour): planned counts nothing.
    let rpc_planned = get(&server, "rpc/people_from?min=1", &[("Prefer", "count=planned")]);
    assert_eq!(rpc_planned.header("content-range"), Some("0-2/*"));
    assert_eq!(rpc_planned.header("preference-applied"), Some("count=planned"));
    let rpc_estimated = get(&server, "rpc/people_from?min=1&limit=1", &[("Prefer", "count=estimated")]);
    assert_eq!((rpc_estimated.status, rpc_estimated.header("content-range")), (206, Some("0-0/3")));

    // The Range header, intersected with limit/offset.
    let ids = |r: &HttpResponse| -> Vec<i64> {
        let rows = r.json();
        rows.as_array().unwrap_or_else(|| panic!("{rows}")).iter().map(|p| p["id"].as_i64().unwrap()).collect()
    };
    let range = |value: &str, query: &str| {
        get(&server, &format!("people?select=id&order=id{query}"), &[("Range", value), ("Range-Unit", "items")])
    };
    let first_two = range("0-1", "");
    assert_eq!((ids(&first_two), first_two.header("content-range")), (vec![1, 2], Some("0-1/*")));
    let open = range("1-", "");
    assert_eq!((ids(&open), open.header("content-range")), (vec![2, 3], Some("1-2/*")));
    let limited = range("1-2", "&offset=1&limit=1");
    assert_eq!((ids(&limited), limited.header("content-range")), (vec![2], Some("1-1/*")));
    let offset = range("0-5", "&offset=2");
    assert_eq!((ids(&offset), offset.header("content-range")), (vec![3], Some("2-2/*")));
    assert_eq!(ids(&range("items=0-0", "")), [1, 2, 3], "not <digits>-[<digits>]: ignored");
    assert_eq!(ids(&range("0-99999999999999999999999", "")), [1, 2, 3], "a range past i64 is no limit");
    assert_eq!(ids(&range("0-1", "&limit=0")), Vec::<i64>::new(), "limit=0 wins");
    let zero = get(&server, "people?limit=0&offset=5", &[("Prefer", "count=exact")]);
    assert_eq!((zero.status, zero.header("content-range"), zero.text().as_str()), (206, Some("*/3"), "[]"));
    let counted = get(&server, "people?select=id&order=id", &[("Range", "0-1"), ("Prefer", "count=exact")]);
    assert_eq!((counted.status, counted.header("content-range")), (206, Some("0-1/3")));
    let head = server.request("HEAD", "/rest/v1/people", &[("Range", "0-0")], b"");
    assert_eq!(head.header("content-range"), Some("0-2/*"), "only GET reads Range");
    let rpc_range = get(&server, "rpc/people_from?min=1&select=id", &[("Range", "2-2")]);
    assert_eq!(rpc_range.json(), json!([{"id": 3}]));
    let reversed = assert_pgrst_error(&range("5-2", ""), 416, "PGRST103");
    assert_eq!(
        reversed,
        json!({"code": "PGRST103", "details": "The lower boundary must be lower than or equal to the upper boundary in the Range header.",
               "hint": null, "message": "Requested range not satisfiable"})
    );
    // An empty intersection is PostgREST's "negative limit" error (so is `limit=1` beside `1-2`).
    let disjoint = assert_pgrst_error(&range("0-1", "&offset=5"), 416, "PGRST103");
    assert_eq!(disjoint["details"], "Limit should be greater than or equal to zero.");
    assert_pgrst_error(&range("1-2", "&limit=1"), 416, "PGRST103");

    // OpenAPI (Swagger 2.0) at the root, following the role's privileges.
    let root = server.get("/rest/v1/");
    assert_eq!(root.status, 200, "{}", root.text());
    assert_eq!(root.header("content-type"), Some("application/openapi+json; charset=utf-8"));
    let doc = root.json();
    assert_eq!(doc["swagger"], "2.0");
    assert_eq!(doc["info"]["title"], "People API");
    assert_eq!(doc["info"]["description"], "Everyone we know");
    assert_eq!(doc["basePath"], "/rest/v1");
    assert_eq!(
        doc["produces"],
        json!([
            "application/json",
            "application/vnd.pgrst.object+json;nulls=stripped",
            "application/vnd.pgrst.object+json",
            "text/csv"
        ])
    );
    let people = &doc["definitions"]["people"];
    assert_eq!(people["type"], "object");
    assert_eq!(people["description"], "People we know");
    assert_eq!(people["required"], json!(["id", "name"]));
    assert_eq!(
        people["properties"]["id"],
        json!({"description": "Note:\nThis is a Primary Key.<pk/>", "format": "int32", "type": "integer"})
    );
    assert_eq!(people["properties"]["name"], json!({"description": "Full name", "format": "text", "type": "string"}));
    assert_eq!(people["properties"]["tags"], json!({"format": "text[]", "type": "array", "items": {"type": "string"}}));
    assert_eq!(people["properties"]["data"], json!({"format": "jsonb"}));
    let pets = &doc["definitions"]["pets"]["properties"];
    assert_eq!(
        pets["owner"]["description"],
        "Note:\nThis is a Foreign Key to `people.id`.<fk table='people' column='id'/>"
    );
    assert_eq!(
        pets["kind"],
        json!({"default": "cat", "format": "character varying", "maxLength": 10, "type": "string"})
    );
    assert!(doc["definitions"].get("secret").is_none(), "anon has no privilege on it");
    let get_people = &doc["paths"]["/people"]["get"];
    assert_eq!(get_people["parameters"][0], json!({"$ref": "#/parameters/rowFilter.people.id"}));
    assert_eq!(get_people["responses"]["206"], json!({"description": "Partial Content"}));
    assert_eq!(get_people["summary"], "People we know");
    assert!(doc["paths"]["/people"]["post"].is_object());
    assert_eq!(
        doc["parameters"]["rowFilter.people.name"],
        json!({"description": "Full name", "in": "query", "name": "name", "required": false, "type": "string"})
    );
    assert_eq!(
        doc["paths"]["/rpc/name_of"]["get"]["parameters"],
        json!([{"format": "int32", "in": "query", "name": "pid", "required": true, "type": "integer"}])
    );
    assert_eq!(doc["paths"]["/rpc/name_of"]["post"]["summary"], "The name of a person");
    assert_eq!(doc["paths"]["/"]["get"]["tags"], json!(["Introspection"]));
    let as_service = server.request("GET", "/rest/v1/", &[("Authorization", &service_role())], b"");
    assert!(as_service.json()["definitions"]["secret"].is_object());
    // OpenAPI 3.1 on request.
    let v31 = server.request("GET", "/rest/v1", &accept("application/openapi+json;version=3.1"), b"");
    assert_eq!(v31.header("content-type"), Some("application/openapi+json;version=3.1; charset=utf-8"));
    let v31: Value = v31.json();
    assert_eq!(v31["openapi"], "3.1.0");
    assert_eq!(v31["components"]["schemas"]["people"]["required"], json!(["id", "name"]));
    assert_eq!(v31["paths"]["/people"]["post"]["requestBody"], json!({"$ref": "#/components/requestBodies/people"}));
    assert_eq!(
        v31["paths"]["/people"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["items"],
        json!({"$ref": "#/components/schemas/people"})
    );
    // HEAD, OPTIONS, other methods and media types.
    let head = server.request("HEAD", "/rest/v1/", &[], b"");
    assert_eq!((head.status, head.text().as_str()), (200, ""));
    let options = server.request("OPTIONS", "/rest/v1/", &[], b"");
    assert_eq!((options.status, options.header("allow")), (200, Some("OPTIONS,GET,HEAD")));
    assert_pgrst_error(&server.request("POST", "/rest/v1/", &[], b"{}"), 405, "PGRST117");
    let csv_root = server.request("GET", "/rest/v1/", &accept("text/csv"), b"");
    assert_eq!(
        assert_pgrst_error(&csv_root, 406, "PGRST107")["message"],
        "None of these media types are available: text/csv"
    );
}

#[test]
fn geojson_without_postgis_is_postgresql_s_error() {
    let server = TestServer::start();
    server.sql("create table public.places (id int, name text); insert into public.places values (1, 'x');");
    server.wait_for_relations(&["places"]);
    let response = get(&server, "places", &accept("application/geo+json"));
    // PostgREST maps 42883 (undefined function) to 404.
    let body = assert_pgrst_error(&response, 404, "42883");
    assert!(body["message"].as_str().unwrap().starts_with("function st_asgeojson("), "{body}");
}
