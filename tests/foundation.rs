//! The foundation from the outside: the real binary against a real PostgreSQL.
//! Health and metrics, gateway behaviour, migrations, outages and graceful shutdown.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use madbase_pg::Cluster;
use support::{service_role, token, try_request, TestServer};

fn io_uring_enabled_here() -> bool {
    // Kernels may disable io_uring system-wide (`kernel.io_uring_disabled` = 2).
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").map(|v| v.trim() != "2").unwrap_or(true)
}

#[test]
fn health_metrics_and_gateway_answers() {
    let server = TestServer::start();

    let health = server.get("/health");
    assert_eq!(health.status, 200, "{}", health.text());
    let body = health.json();
    assert_eq!(body["shards"]["total"], 2);
    assert_eq!(body["shards"]["answering"], 2);
    assert_eq!(body["postgres"], "ok");

    // Unknown route: the gateway's JSON 404, with our request id echoed back.
    let missing = server.request("GET", "/nope", &[("x-request-id", "abc-123")], b"");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.text(), r#"{"message":"no Route matched with those values"}"#);
    assert_eq!(missing.header("content-type"), Some("application/json"));
    assert_eq!(missing.header("x-request-id"), Some("abc-123"));
    let generated = server.get("/nope");
    assert!(generated.header("x-request-id").is_some_and(|id| !id.is_empty()));

    // CORS preflight as Supabase's gateway answers it.
    let preflight = server.request(
        "OPTIONS",
        "/rest/v1/todos",
        &[
            ("Origin", "http://localhost:3000"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization,apikey,content-type,x-client-info"),
        ],
        b"",
    );
    assert_eq!(preflight.status, 200);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("authorization,apikey,content-type,x-client-info")
    );
    assert!(preflight.header("access-control-allow-methods").unwrap().contains("PATCH"));
    let cors = server.request("GET", "/nope", &[("Origin", "http://localhost:3000")], b"");
    assert_eq!(cors.header("access-control-allow-origin"), Some("*"));
    assert_eq!(cors.header("access-control-expose-headers"), None);
    let rest = server.request("GET", "/rest/v1/nope", &[("Origin", "http://localhost:3000")], b"");
    assert_eq!(rest.header("access-control-allow-origin"), Some("*"));
    assert!(rest.header("access-control-expose-headers").is_some_and(|h| h.contains("Content-Range")));

    // JWKS: empty without asymmetric keys, and valid JSON.
    let jwks = server.get("/auth/v1/.well-known/jwks.json");
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.json(), serde_json::json!({"keys": []}));

    // Metrics come from every shard (one per core as configured) and name the driver.
    for _ in 0..20 {
        server.get("/health");
    }
    // Operators only: the service key, as Supabase's metrics endpoint.
    assert_eq!(server.get("/metrics").status, 401);
    let anon = token(serde_json::json!({"role": "anon"}));
    assert_eq!(server.request("GET", "/metrics", &[("apikey", &anon)], b"").status, 403);
    assert_eq!(server.request("GET", "/metrics", &[("authorization", "Bearer not.a.jwt")], b"").status, 401);
    let service = service_role();
    let metrics = server.request("GET", "/metrics", &[("authorization", &service)], b"");
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(text.contains("madbase_shards 2\n"), "{text}");
    let driver = if io_uring_enabled_here() { "io_uring" } else { "legacy" };
    for shard in 0..2 {
        let line = format!("madbase_shard_driver{{shard=\"{shard}\",driver=\"{driver}\"}} 1");
        assert!(text.contains(&line), "missing {line}:\n{text}");
    }
    // At least the 21 health checks above answered 200, counted across both shards.
    let health_ok: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("madbase_http_requests_total{service=\"health\",status=\"200\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(health_ok >= 21, "{text}");
    assert!(text.contains("madbase_http_requests_total{service=\"other\",status=\"404\"} 3"), "{text}");
    assert!(text.contains("madbase_http_request_duration_seconds{service=\"health\",quantile=\"0.99\"}"));
    assert!(text.contains("madbase_pg_connections_up{shard=\"1\",lane=\"rest\"} 2"), "{text}");
}

#[test]
fn malformed_and_oversized_input_through_the_binary() {
    use std::io::{Read, Write};
    let server = TestServer::start();
    let exchange = |raw: &[u8]| {
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(raw).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(exchange(b"GARBAGE\r\n\r\n").starts_with("HTTP/1.1 400 "));
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    assert!(exchange(long_uri.as_bytes()).starts_with("HTTP/1.1 414 "));
    let big_header = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(20_000));
    assert!(exchange(big_header.as_bytes()).starts_with("HTTP/1.1 431 "));
    let huge_body = "POST /rest/v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n";
    assert!(exchange(huge_body.as_bytes()).starts_with("HTTP/1.1 413 "));
    // Still serving.
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn migrations_are_idempotent_and_auth_helpers_read_the_claims() {
    let mut server = TestServer::start();
    // A second start against the same database applies nothing twice.
    assert!(server.stop_madbase().success());
    server.spawn(&[]);
    let applied = server.sql("select count(*)::text from _madbase.migrations");
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql")))
        .count();
    assert_eq!(applied[0].rows[0].get_str(0), Some(shipped.to_string().as_str()));
    for role in ["anon", "authenticated", "service_role", "authenticator", "supabase_admin"] {
        let found = server.sql(&format!("select count(*)::text from pg_roles where rolname = '{role}'"));
        assert_eq!(found[0].rows[0].get_str(0), Some("1"), "role {role}");
    }
    let result = server.sql(
        "begin;
         select set_config('request.jwt.claims',
           '{\"sub\":\"6f1e2a0c-8a38-4d0e-9c52-3c6fb1f0a111\",\"role\":\"authenticated\",\"email\":\"a@b.c\"}', true);
         select auth.uid()::text, auth.role(), auth.email(), auth.jwt()->>'email';
         commit;",
    );
    let row = &result[2].rows[0];
    assert_eq!(row.get_str(0), Some("6f1e2a0c-8a38-4d0e-9c52-3c6fb1f0a111"));
    assert_eq!(row.get_str(1), Some("authenticated"));
    assert_eq!(row.get_str(2), Some("a@b.c"));
    assert_eq!(row.get_str(3), Some("a@b.c"));
    // Outside a request the helpers are NULL, not errors.
    let none = server.sql("select auth.uid() is null, auth.jwt() is null");
    assert_eq!(none[0].rows[0].get_str(0), Some("t"));
    assert_eq!(none[0].rows[0].get_str(1), Some("t"));
}

#[test]
fn postgres_outage_under_load_gives_503_then_recovers() {
    let mut server = TestServer::start();
    server.sql("create table public.up (id int primary key); insert into public.up values (1)");
    server.wait_for_relations(&["up"]);
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let unavailable = Arc::new(AtomicUsize::new(0));
    // Two threads on /health, two on /rest/v1: while PostgreSQL is down both answer 503 with
    // Retry-After, promptly (the pool waits at most 1 s for a connection), never a hang.
    let load: Vec<_> = ["/health", "/health", "/rest/v1/up?select=id", "/rest/v1/up?select=id"]
        .into_iter()
        .map(|path| {
            let (stop, ok, unavailable) = (stop.clone(), ok.clone(), unavailable.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Every request must be answered (the client's read timeout is 30 s): a hang fails here.
                    let started = Instant::now();
                    let r = try_request(addr, "GET", path, &[], b"").expect("answered, not hung");
                    match r.status {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        503 => {
                            assert!(r.header("retry-after").is_some(), "{path}: 503 without Retry-After");
                            let took = started.elapsed();
                            assert!(took < Duration::from_secs(10), "{path}: the 503 took {took:?}");
                            unavailable.fetch_add(1, Ordering::Relaxed)
                        }
                        other => panic!("{path}: unexpected status {other}: {}", r.text()),
                    };
                }
            })
        })
        .collect();
    let wait_for = |counter: &AtomicUsize, at_least: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while counter.load(Ordering::Relaxed) < at_least {
            assert!(Instant::now() < deadline, "counter stuck at {}", counter.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(&ok, 20);
    server.cluster.stop().expect("stop PostgreSQL");
    wait_for(&unavailable, 20);
    server.cluster.start().expect("restart PostgreSQL");
    let before = ok.load(Ordering::Relaxed);
    wait_for(&ok, before + 20);
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("load thread");
    }
    server.wait_healthy(Duration::from_secs(30));
    assert_eq!(server.get("/rest/v1/up?select=id").json(), serde_json::json!([{"id": 1}]));
}

/// A second MadBase on the address the first serves (say, against another database) must not
/// start: with `SO_REUSEPORT` the kernel would split clients between the two.
#[test]
fn a_second_server_on_a_served_address_refuses_to_start() {
    let server = TestServer::start();
    let other = Cluster::ephemeral().expect("a second PostgreSQL");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_madbase"))
        .arg("start")
        .env("DATABASE_URL", other.connection_url())
        .env("MADBASE_LISTEN", server.addr.to_string())
        .env("MADBASE_SHARDS", "1")
        .output()
        .expect("run a second madbase");
    assert!(!out.status.success(), "the second server started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&server.addr.to_string()), "the error names the address: {stderr}");
    assert_eq!(server.get("/health").status, 200, "the first server still serves");
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let mut server = TestServer::start();
    assert_eq!(server.get("/health").status, 200);
    let status = server.stop_madbase();
    assert!(status.success(), "exit status {status}:\n{}", server.log());
    assert!(std::net::TcpStream::connect(server.addr).is_err(), "still accepting after shutdown");
}

#[test]
fn missing_postgres_binaries_are_one_clear_message() {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_madbase"))
        .arg("start")
        .env_remove("DATABASE_URL")
        .env("MADBASE_DATA_DIR", data.path())
        .env("MADBASE_PG_BIN", "/nonexistent/bin")
        .env("MADBASE_LISTEN", format!("127.0.0.1:{}", support::free_port()))
        .output()
        .expect("run madbase");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MADBASE_PG_BIN=/nonexistent/bin does not contain initdb and postgres"), "{stderr}");
}

#[test]
fn bad_configuration_names_the_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_madbase"))
        .arg("start")
        .env("MADBASE_HTTP_MAX_HEADERS", "lots")
        .output()
        .expect("run madbase");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MADBASE_HTTP_MAX_HEADERS"), "{stderr}");
}

#[test]
fn an_old_flat_config_file_points_at_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("madbase.toml");
    std::fs::write(&file, "pg_pool_size = 4\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_madbase"))
        .args(["start", "--config"])
        .arg(&file)
        .current_dir(dir.path())
        .output()
        .expect("run madbase");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown key \"pg_pool_size\" (did you mean \"pg.pool_size\"?)"), "{stderr}");
}

#[test]
fn api_enabled_false_switches_the_data_api_off() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("madbase.toml");
    std::fs::write(&file, "[api]\nenabled = false\n\n[rest]\nplan_enabled = false\n").unwrap();
    let server = TestServer::start_with(&[("MADBASE_CONFIG", file.to_str().unwrap())]);
    let response = server.get("/rest/v1/anything");
    assert_eq!(response.status, 404);
    assert_eq!(response.text(), r#"{"message":"no Route matched with those values"}"#);
    assert_eq!(server.get("/health").status, 200);
}
