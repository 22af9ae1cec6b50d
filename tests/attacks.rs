//! The attack suite: what a hostile or careless client did to MadBase in review, kept so it stays
//! fixed. Each attack runs against the real binary and a real PostgreSQL on loopback, bounded in
//! time and in count, and asserts that everyone else is still served while it runs (a normal
//! request answers within a generous bound) and, where the attack is about memory, that the
//! server's resident memory (from `/proc`) stays bounded. These are liveness checks, not
//! benchmarks: the bounds are many times what a healthy server needs.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{bearer, token, try_request, TestServer, ALICE};

/// A normal request every 20 ms while `attack` runs; returns the slowest answer. Every answer
/// must be a 200.
fn slowest_answer_during(server: &TestServer, path: &str, attack: impl FnOnce()) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let slowest = Arc::new(AtomicU64::new(0));
    let probe = {
        let (stop, slowest, addr, path) = (stop.clone(), slowest.clone(), server.addr, path.to_owned());
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = try_request(addr, "GET", &path, &[], b"").map_err(|e| format!("not answered: {e}"))?;
                if r.status != 200 {
                    return Err(format!("{} {}", r.status, r.text()));
                }
                slowest.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        })
    };
    attack();
    stop.store(true, Ordering::Relaxed);
    if let Err(failure) = probe.join().expect("probe thread") {
        panic!("a normal request during the attack failed: {failure}\n{}", server.log());
    }
    Duration::from_micros(slowest.load(Ordering::Relaxed))
}

fn raw_exchange(server: &TestServer, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits (at most 30 s) until `check` holds, re-asking every 100 ms.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `alter role … set statement_timeout` bounds every request of that role (PostgREST ≥ 11.1 sets a
/// role's settings in its transaction; switching role alone does not), and MadBase ships
/// Supabase's defaults: 3 s for `anon`, 8 s for `authenticated`.
#[test]
fn role_settings_bound_every_request() {
    let server = TestServer::start();
    server.sql(
        "create function public.nap(seconds float8) returns text language sql as $$ select pg_sleep(seconds)::text $$;
         grant execute on function public.nap(float8) to anon, authenticated;",
    );
    server.wait_for_function("nap?seconds=0");
    let shipped = server.sql(
        "select rolname || ':' || array_to_string(rolconfig, ',') from pg_roles
         where rolname in ('anon', 'authenticated', 'authenticator') order by rolname",
    );
    let shipped: Vec<&str> = shipped[0].rows.iter().filter_map(|r| r.get_str(0)).collect();
    assert_eq!(
        shipped,
        ["anon:statement_timeout=3s", "authenticated:statement_timeout=8s", "authenticator:statement_timeout=8s"]
    );

    // The anonymous role's 3 s: a 5 s nap is cancelled by PostgreSQL.
    let started = Instant::now();
    let r = server.get("/rest/v1/rpc/nap?seconds=5");
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json()["code"], "57014", "{}", r.text());
    assert!(started.elapsed() < Duration::from_millis(4900), "the nap ran to its end");

    // A changed setting applies after `reload config`, as in PostgREST.
    let user = bearer(json!({"role": "authenticated", "sub": ALICE}));
    server.sql("alter role authenticated set statement_timeout = '1s'; notify pgrst, 'reload config'");
    eventually("authenticated's 1 s statement_timeout applies", || {
        let r = server.request("GET", "/rest/v1/rpc/nap?seconds=2", &[("authorization", &user)], b"");
        r.status == 500 && r.json()["code"] == "57014"
    });
    // Other settings a role may set apply too, after the role switch and in the same transaction.
    server.sql("alter role authenticated set lock_timeout = '1234ms'; notify pgrst, 'reload config'");
    server.sql(
        "create function public.setting(name text) returns text language sql as $$ select current_setting(name) $$;
         grant execute on function public.setting(text) to authenticated;",
    );
    server.wait_for_function("setting?name=x");
    eventually("lock_timeout is set for authenticated", || {
        let r = server.request("GET", "/rest/v1/rpc/setting?name=lock_timeout", &[("authorization", &user)], b"");
        r.status == 200 && r.json() == json!("1234ms")
    });
}

/// A 1xx is never a final status: `response.status` 101 would send `101 Switching Protocols`
/// with `connection: upgrade` and keep speaking HTTP/1.1 — a smuggling hazard for any proxy.
#[test]
fn informational_statuses_and_hostile_headers_are_refused_cleanly() {
    let server = TestServer::start();
    server.sql(
        "create function public.status(code text) returns int language plpgsql as $$
         begin perform set_config('response.status', code, true); return 1; end $$;
         create function public.raise_pt(code text) returns int language plpgsql as $$
         begin raise sqlstate 'PT101' using message = 'informational'; end $$;
         create table public.secrets (id int primary key);
         revoke all on public.secrets from anon, authenticated;
         grant execute on all functions in schema public to anon;",
    );
    server.wait_for_function("status?code=200");
    server.wait_for_relations(&["secrets"]);
    for code in ["100", "101", "199"] {
        let r = server.get(&format!("/rest/v1/rpc/status?code={code}"));
        assert_eq!(r.status, 500, "{code}: {}", r.text());
        assert_eq!(r.json()["code"], "PGRST112");
    }
    let r = server.get("/rest/v1/rpc/raise_pt?code=x");
    assert_eq!((r.status, r.json()["code"].clone()), (500, json!("PGRST112")), "{}", r.text());
    assert_eq!(server.get("/rest/v1/rpc/status?code=201").status, 201);

    // A non-ASCII Authorization value is not a panic (it was sliced by byte): it is no bearer
    // token, so the request runs as anon.
    let raw = "GET /rest/v1/rpc/status?code=200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: beare\u{20ac} x\r\n\r\n";
    let answer = raw_exchange(&server, raw.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

    // Permission denied: 401 for the anonymous role (also with the anon key), 403 for others.
    let anon_key = token(json!({"role": "anon"}));
    for headers in [vec![], vec![("apikey", anon_key.as_str())]] {
        let r = server.request("GET", "/rest/v1/secrets", &headers, b"");
        assert_eq!((r.status, r.json()["code"].clone()), (401, json!("42501")), "{}", r.text());
    }
    let user = bearer(json!({"role": "authenticated", "sub": ALICE}));
    let r = server.request("GET", "/rest/v1/secrets", &[("authorization", &user)], b"");
    assert_eq!((r.status, r.json()["code"].clone()), (403, json!("42501")), "{}", r.text());
    assert_eq!(server.get("/health").status, 200);
}

/// Four 36 MB JSON bodies at once: their check runs off the shard, so a shard keeps answering
/// its other requests meanwhile (scanning one of them on the shard stalled it for seconds).
#[test]
fn big_bodies_do_not_stall_their_shard() {
    let server = TestServer::start();
    server.sql("create table public.items (id int primary key, a text)");
    server.wait_for_relations(&["items"]);
    // Valid JSON of 9,999 like rows of 400 keys (36 MB; every key is matched against the first
    // row's), then one unlike row: the shape check reads it all and refuses.
    let keys: Vec<String> = (0..400).map(|i| format!(r#""c{i}":0"#)).collect();
    let row = format!("{{{}}},", keys.join(","));
    let mut body = String::with_capacity(row.len() * 10_000);
    body.push('[');
    for _ in 0..9_999 {
        body.push_str(&row);
    }
    body.push_str(r#"{"b":1}]"#);
    let body = Arc::new(body.into_bytes());
    let slowest = slowest_answer_during(&server, "/rest/v1/items?limit=1", || {
        let posts: Vec<_> = (0..4)
            .map(|_| {
                let (addr, body) = (server.addr, body.clone());
                std::thread::spawn(move || {
                    let headers = [("content-type", "application/json")];
                    try_request(addr, "POST", "/rest/v1/items", &headers, &body).expect("answered")
                })
            })
            .collect();
        for post in posts {
            let r = post.join().expect("post thread");
            assert_eq!((r.status, r.json()["code"].clone()), (400, json!("PGRST102")), "{}", r.text());
        }
    });
    assert!(slowest < Duration::from_millis(1500), "a normal read waited {slowest:?} behind the big bodies");
}

/// Opens `n` connections that each send `head` and then one byte of body every `every`, for
/// `hold`; returns how many of them the server refused (answered or closed) by then.
fn trickle(server: &TestServer, n: usize, head: String, every: Duration, hold: Duration) -> usize {
    let mut streams: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).expect("connect");
            s.set_nodelay(true).unwrap();
            s.write_all(head.as_bytes()).expect("head");
            s
        })
        .collect();
    let until = Instant::now() + hold;
    let mut closed = vec![false; n];
    while Instant::now() < until {
        for (s, closed) in streams.iter_mut().zip(closed.iter_mut()) {
            if !*closed && s.write_all(b"[").is_err() {
                *closed = true;
            }
        }
        std::thread::sleep(every);
    }
    // Refused: closed by the server (a write failed or the read sees an answer, EOF or a reset).
    streams
        .iter_mut()
        .zip(closed)
        .map(|(s, closed)| {
            closed || {
                s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 64];
                !matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        })
        .filter(|refused| *refused)
        .count()
}

/// 400 clients declare 50 MB bodies and trickle them a byte at a time, without credentials:
/// the server holds what arrived (not what was declared), everyone else is served meanwhile, a
/// trickled body gets 408 at the total body deadline, and the memory comes back when they close.
#[test]
fn trickled_bodies_hold_only_what_arrived() {
    let server = TestServer::start_with(&[("MADBASE_HTTP_BODY_TIMEOUT_TOTAL_MS", "4000")]);
    server.sql("create table public.notes (id int primary key, body text)");
    server.wait_for_relations(&["notes"]);
    let before = server.rss_kib();
    let head =
        "POST /rest/v1/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 52428800\r\n\r\n"
            .to_owned();
    let mut peak = 0;
    let slowest = slowest_answer_during(&server, "/rest/v1/notes?limit=1", || {
        let answered = trickle(&server, 400, head.clone(), Duration::from_millis(200), Duration::from_secs(2));
        peak = server.rss_kib();
        assert_eq!(answered, 0, "nothing is answered before the body deadline");
        // Past the 4 s total deadline every trickled body has been refused.
        let refused = trickle(&server, 50, head.clone(), Duration::from_millis(200), Duration::from_secs(6));
        assert_eq!(refused, 50, "trickled bodies are cut at the total body deadline");
    });
    assert!(slowest < Duration::from_secs(2), "a normal read waited {slowest:?}");
    let grown_mib = peak.saturating_sub(before) / 1024;
    assert!(grown_mib < 128, "400 trickled 50 MB bodies grew the server by {grown_mib} MiB");
    let r = server.request("POST", "/rest/v1/notes", &[("content-type", "application/json")], br#"{"id":1}"#);
    assert_eq!(r.status, 201, "{}", r.text());
}

/// Slowloris (heads that never end) and oversized heads from many clients at once: each is cut
/// (408 at the header deadline, 431 past the head limit) and nobody else waits for them.
#[test]
fn slow_and_oversized_heads_are_cut_and_others_are_served() {
    let server = TestServer::start_with(&[("MADBASE_HTTP_HEADER_TIMEOUT_MS", "2000")]);
    let slowest = slowest_answer_during(&server, "/health", || {
        let slow: Vec<TcpStream> = (0..300)
            .map(|_| {
                let mut s = TcpStream::connect(server.addr).expect("connect");
                s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ").expect("partial head");
                s
            })
            .collect();
        let big = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(64 * 1024));
        let oversized: Vec<_> = (0..50)
            .map(|_| {
                let (addr, big) = (server.addr, big.clone());
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    let _ = s.write_all(big.as_bytes());
                    let mut out = Vec::new();
                    let _ = s.read_to_end(&mut out);
                    String::from_utf8_lossy(&out).into_owned()
                })
            })
            .collect();
        for answer in oversized {
            let answer = answer.join().expect("oversized thread");
            assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        }
        for mut s in slow {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            let answer = String::from_utf8_lossy(&out);
            assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408 "), "{answer}");
        }
    });
    assert!(slowest < Duration::from_secs(2), "/health waited {slowest:?} behind the attack");
}

/// Sixteen slow requests abandoned after 1 s (504, or the client going away) used to keep every
/// database connection busy until their statements ended by themselves (found with a
/// backtracking regex on the caller's own value; here a 60 s sleep with no statement timeout).
/// Abandoned work is now cancelled on the server, and nothing waits behind it.
#[test]
fn abandoned_slow_queries_are_cancelled_on_the_server() {
    let server = TestServer::start_with(&[("MADBASE_PG_REQUEST_TIMEOUT_MS", "1000")]);
    server.sql(
        "create table public.notes (id int primary key);
         create function public.nap(seconds float8) returns text language sql as $$ select pg_sleep(seconds)::text $$;
         grant execute on function public.nap(float8) to anon;
         alter role anon set statement_timeout = 0; notify pgrst, 'reload config';",
    );
    server.wait_for_relations(&["notes"]);
    server.wait_for_function("nap?seconds=0");
    let path = "/rest/v1/rpc/nap?seconds=60".to_owned();
    let attack: Vec<_> = (0..16)
        .map(|i| {
            let (addr, path) = (server.addr, path.clone());
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    // Half wait for the 504, half go away after 500 ms.
                    try_request(addr, "GET", &path, &[], b"").expect("answered").status
                } else {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).expect("send");
                    std::thread::sleep(Duration::from_millis(500));
                    drop(s);
                    0
                }
            })
        })
        .collect();
    for (i, a) in attack.into_iter().enumerate() {
        let status = a.join().expect("attack thread");
        if i % 2 == 0 {
            assert_eq!(status, 504, "the sleep outlasts the 1 s request timeout");
        }
    }
    // Everyone else is served again promptly, and PostgreSQL is no longer running the regexes.
    let started = Instant::now();
    let r = server.get("/rest/v1/notes?select=id");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(10), "a normal read waited {:?}", started.elapsed());
    eventually("no abandoned sleep still runs in PostgreSQL", || {
        let running = server.sql(
            "select count(*)::text from pg_stat_activity where state = 'active' and query like '%nap%' and pid <> pg_backend_pid()",
        );
        running[0].rows[0].get_str(0) == Some("0")
    });
    assert_eq!(server.get("/health").status, 200);
}

/// A 250-byte GET that selects one 4 MB value under ten aliases asks the server to hold 40 MB;
/// six at once held gigabytes. What is read from PostgreSQL for one response is bounded
/// (`[pg] max_result_bytes`): past it, a clear error, counted in /metrics.
#[test]
fn responses_past_the_result_limit_are_refused_with_bounded_memory() {
    let server = TestServer::start_with(&[("MADBASE_PG_MAX_RESULT_BYTES", "8388608")]);
    server.sql(
        "create table public.blobs (id int primary key, data text);
         insert into public.blobs select 1, repeat('x', 4 * 1024 * 1024);
         insert into public.blobs values (2, 'small');",
    );
    server.wait_for_relations(&["blobs"]);
    let aliases: Vec<String> = (0..10).map(|i| format!("a{i}:data")).collect();
    let path = format!("/rest/v1/blobs?id=eq.1&select={}", aliases.join(","));
    let before = server.rss_kib();
    let huge: Vec<_> = (0..6)
        .map(|_| {
            let (addr, path) = (server.addr, path.clone());
            std::thread::spawn(move || try_request(addr, "GET", &path, &[], b"").expect("answered"))
        })
        .collect();
    let mut peak = 0;
    for h in huge {
        let r = h.join().expect("thread");
        peak = peak.max(server.rss_kib());
        assert_eq!((r.status, r.json()["code"].clone()), (500, json!("PGRSTX00")), "{}", r.text());
        assert!(r.json()["details"].as_str().is_some_and(|d| d.contains("8388608")), "{}", r.text());
    }
    let grown_mib = peak.saturating_sub(before) / 1024;
    assert!(grown_mib < 160, "six refused 40 MB responses grew the server by {grown_mib} MiB");
    // One alias is under the limit; the connection that refused the others still serves.
    let r = server.get("/rest/v1/blobs?id=eq.1&select=id,data");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["data"].as_str().map(str::len), Some(4 * 1024 * 1024));
    assert_eq!(server.get("/rest/v1/blobs?id=eq.2&select=data").json(), json!([{"data": "small"}]));
    let service = support::service_role();
    let metrics = server.request("GET", "/metrics", &[("authorization", &service)], b"").text();
    let refused: u64 = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("madbase_pg_results_too_large_total{"))
        .filter_map(|l| l.split_once("} ").and_then(|(_, n)| n.parse::<u64>().ok()))
        .sum();
    assert_eq!(refused, 6, "{metrics}");
}
