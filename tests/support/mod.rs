//! Test support: a real PostgreSQL (ephemeral cluster) and the real `madbase` binary on free ports.
//!
//! Nothing is mocked. Each [`TestServer`] owns its cluster and its MadBase process and tears both
//! down on drop. HTTP is spoken with plain `std::net::TcpStream` so the tests see exactly the bytes
//! on the wire.

#![allow(dead_code)] // each test file uses a different part of this module

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use madbase_pg::{Cluster, Connection, SimpleResult};

/// Two user ids the tests sign tokens for (`sub` claims that RLS policies compare with auth.uid()).
pub const ALICE: &str = "11111111-1111-1111-1111-111111111111";
pub const BOB: &str = "22222222-2222-2222-2222-222222222222";

/// The Supabase local-development secret MadBase uses when none is configured.
pub const DEMO_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub struct TestServer {
    pub cluster: Cluster,
    pub addr: SocketAddr,
    child: Option<Child>,
    log_path: std::path::PathBuf,
    _log_dir: tempfile::TempDir,
}

impl TestServer {
    /// PostgreSQL + MadBase with 2 shards, waiting until `/health` answers 200.
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> TestServer {
        Self::start_on(Cluster::ephemeral().expect("ephemeral PostgreSQL"), env)
    }

    /// MadBase (with `env`) on a cluster the caller started, e.g. from other PostgreSQL binaries.
    pub fn start_on(cluster: Cluster, env: &[(&str, &str)]) -> TestServer {
        let mut server = TestServer {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            cluster,
            child: None,
            log_path: Default::default(),
            _log_dir: tempfile::tempdir().expect("tempdir"),
        };
        server.log_path = server._log_dir.path().join("madbase.log");
        server.spawn(env);
        server
    }

    /// Starts the MadBase process (again, after [`TestServer::stop_madbase`]).
    pub fn spawn(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_madbase"));
        command
            .arg("start")
            .env("DATABASE_URL", self.cluster.connection_url())
            .env("MADBASE_LISTEN", self.addr.to_string())
            .env("MADBASE_SHARDS", "2")
            .env("MADBASE_PG_POOL_SIZE", "2")
            .env("MADBASE_LOG", "info")
            .stdout(Stdio::from(log.try_clone().expect("log fd")))
            .stderr(Stdio::from(log));
        for (k, v) in env {
            command.env(k, v);
        }
        self.child = Some(command.spawn().expect("spawn madbase"));
        self.wait_healthy(Duration::from_secs(60));
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The MadBase process's resident memory in KiB (`VmRSS` from `/proc`).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("madbase running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn wait_healthy(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("madbase exited with {status}:\n{}", self.log());
                }
            }
            if let Ok(r) = try_request(self.addr, "GET", "/health", &[], b"") {
                if r.status == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "madbase not healthy in {within:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and waits for the process; returns its exit status.
    pub fn stop_madbase(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("madbase running");
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("madbase did not exit within 30 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        try_request(self.addr, method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[], b"")
    }

    /// Waits (at most 30 s) until every relation in `names` is in MadBase's schema cache on every
    /// shard: DDL reaches the cache asynchronously (event trigger → `NOTIFY pgrst` → reload on
    /// shard 0 → the other shards over the rings). Ten consecutive answers other than PGRST205 on
    /// fresh connections (spread over the shards by SO_REUSEPORT) count as everywhere.
    pub fn wait_for_relations(&self, names: &[&str]) {
        self.wait_for_schema(names, true);
    }

    /// Waits (at most 30 s) until every relation in `names` answers PGRST205 on every shard.
    pub fn wait_for_relations_gone(&self, names: &[&str]) {
        self.wait_for_schema(names, false);
    }

    fn wait_for_schema(&self, names: &[&str], present: bool) {
        let key = format!("Bearer {}", token(serde_json::json!({"role": "service_role"})));
        let deadline = Instant::now() + Duration::from_secs(30);
        for name in names {
            let path = format!("/rest/v1/{name}?limit=0");
            let mut streak = 0;
            while streak < 10 {
                let r = self.request("GET", &path, &[("authorization", &key)], b"");
                let missing = r.status == 404 && r.text().contains("PGRST205");
                if missing != present {
                    streak += 1;
                } else {
                    streak = 0;
                    assert!(
                        Instant::now() < deadline,
                        "{name} still {} in the schema cache after 30 s: {} {}\n{}",
                        if present { "missing" } else { "present" },
                        r.status,
                        r.text(),
                        self.log()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Waits (at most 30 s) until a new function is in MadBase's schema cache on every shard: ten
    /// consecutive answers other than PGRST202 on fresh connections to `GET /rest/v1/rpc/<call>`,
    /// where `call` is the name and the query-string arguments that select the overload
    /// (`add?a=1&b=2`). GET runs the function in a READ ONLY transaction, so a function that
    /// writes fails (25006) instead of writing; that answer counts as present too.
    pub fn wait_for_function(&self, call: &str) {
        let key = format!("Bearer {}", token(serde_json::json!({"role": "service_role"})));
        let deadline = Instant::now() + Duration::from_secs(30);
        let path = format!("/rest/v1/rpc/{call}");
        let mut streak = 0;
        while streak < 10 {
            let r = self.request("GET", &path, &[("authorization", &key)], b"");
            if r.status == 404 && r.text().contains("PGRST202") {
                streak = 0;
                assert!(Instant::now() < deadline, "{call} still missing after 30 s: {}\n{}", r.text(), self.log());
                std::thread::sleep(Duration::from_millis(20));
            } else {
                streak += 1;
            }
        }
    }

    /// Runs SQL as the superuser (multi-statement allowed).
    pub fn sql(&self, sql: &str) -> Vec<SimpleResult> {
        run_sql(&self.cluster.connection_url(), sql).unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn run_sql(url: &str, sql: &str) -> Result<Vec<SimpleResult>, madbase_pg::PgError> {
    let config = madbase_pg::ConnectConfig::from_url(url)?;
    let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime");
    runtime.block_on(async move {
        let conn = Connection::connect(&config).await?;
        let result = conn.simple_query(sql).await;
        conn.close();
        result
    })
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to EOF.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD")
}

pub fn parse_response(raw: &[u8], head_only: bool) -> std::io::Result<HttpResponse> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no header end"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty"))?;
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked && !head_only {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(HttpResponse { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// An HS256 token signed with the demo secret.
pub fn token(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(DEMO_SECRET.as_bytes()),
    )
    .expect("sign")
}

/// An `Authorization` value for a token with `claims`.
pub fn bearer(claims: serde_json::Value) -> String {
    format!("Bearer {}", token(claims))
}

/// An `Authorization` value for the `service_role`.
pub fn service_role() -> String {
    bearer(serde_json::json!({"role": "service_role"}))
}

/// Asserts a PostgREST error response (status, JSON content type, `code`); returns its body.
pub fn assert_pgrst_error(response: &HttpResponse, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json; charset=utf-8"));
    let body = response.json();
    assert_eq!(body["code"], code, "{body}");
    body
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/rest/v1/<table>?k=v&...` with keys and values percent-encoded.
pub fn rest_url(table: &str, params: &[(&str, &str)]) -> String {
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
    format!("/rest/v1/{}?{}", enc(table), query.join("&"))
}

/// Runs `work` on a connection logged in as `authenticator`.
pub fn as_authenticator<T>(server: &TestServer, work: impl AsyncFnOnce(&Connection) -> T) -> T {
    server.sql("alter role authenticator with login password 'authenticator-test'");
    let mut config = server.cluster.connect_config();
    config.user = "authenticator".into();
    config.password = Some("authenticator-test".into());
    let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime");
    runtime.block_on(async move {
        let conn = Connection::connect(&config).await.expect("connect as authenticator");
        let out = work(&conn).await;
        conn.close();
        out
    })
}
