//! The platform's settings sections: what the shards, the HTTP server, the PostgreSQL lanes and
//! token verification read, whichever service is running.
//!
//! Owns the MadBase tables Supabase's `config.toml` has no equivalent for (`[shards]`, `[http]`,
//! `[pg]`, `[jwt]`). Older flat environment names (`MADBASE_LISTEN`, `MADBASE_SHARDS`, …) are
//! aliases. The keys tokens are signed and verified with besides `[jwt] keys` — `[auth] jwt_secret`
//! and `signing_keys_path` — are Auth's (`madbase_auth::settings::Auth`); the binary hands them to
//! [`JwtKeys`](crate::jwt::JwtKeys).
//!
//! Invariants: [`Platform::validate`] accepts only settings the program can run with (every
//! bound non-zero), so nothing downstream re-checks them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::section;

/// The Supabase local-development demo secret: with it the well-known demo anon and
/// service_role keys work. Used only when no secret is configured, and announced loudly at start.
pub const DEMO_JWT_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

section! {
    /// `[shards]`: the thread-per-core runtime.
    pub struct Shards {
        /// Number of shards (threads pinned one per core). Default: the number of cores.
        #[alias("MADBASE_SHARDS")]
        pub count: usize = cores(),
        /// Connections one shard serves at once; beyond it the kernel backlog holds new ones.
        #[alias("MADBASE_MAX_CONNECTIONS_PER_SHARD")]
        pub max_connections: usize = 16_384,
        /// Capacity of each cross-shard data ring, messages.
        #[alias("MADBASE_RING_CAPACITY")]
        pub ring_capacity: usize = 4096,
        /// Capacity of each cross-shard control ring (schema swaps, pings, snapshots), messages.
        pub control_ring_capacity: usize = 256,
        /// Threads of the blocking pool (hashing, large-body checks, image work). Default: the number of cores.
        #[alias("MADBASE_BLOCKING_THREADS")]
        pub blocking_threads: usize = cores(),
        /// Jobs queued on the blocking pool before callers are refused.
        #[alias("MADBASE_BLOCKING_QUEUE")]
        pub blocking_queue: usize = 1024,
        /// Nice value (0–19) of the blocking pool's threads: password hashing yields the cores to the shards when both want them.
        pub blocking_nice: i32 = 10,
        /// After SIGINT/SIGTERM, how long in-flight requests may finish, ms.
        #[alias("MADBASE_SHUTDOWN_GRACE_MS")]
        pub shutdown_grace_ms: u64 = 10_000,
        /// Use the epoll driver even where io_uring works.
        #[alias("MADBASE_FORCE_LEGACY_DRIVER")]
        pub force_legacy_driver: bool = false,
    }
}

section! {
    /// `[http]`: the HTTP server's address and limits.
    pub struct Http {
        /// Address every shard listens on (SO_REUSEPORT). Default: `127.0.0.1` and `[api] port`.
        #[alias("MADBASE_LISTEN")]
        pub listen: Option<SocketAddr> = None,
        /// Request head (request line + headers) bytes → 431.
        pub max_header_bytes: usize = 16 * 1024,
        /// Header lines per request → 431.
        pub max_headers: usize = 100,
        /// Request-target bytes → 414.
        pub max_uri_bytes: usize = 8 * 1024,
        /// Request body bytes accepted by default (services may set a lower one; Storage's uploads are bounded by `storage.file_size_limit` instead) → 413.
        pub max_body_bytes: u64 = 50 * 1024 * 1024,
        /// Time for a whole request head to arrive, ms (slowloris bound) → 408.
        pub header_timeout_ms: u64 = 10_000,
        /// Keep-alive idle time before a connection is closed, ms.
        pub idle_timeout_ms: u64 = 60_000,
        /// Longest wait for body progress, ms → 408.
        pub body_timeout_ms: u64 = 30_000,
        /// Longest a whole request body may take to arrive, ms → 408.
        pub body_timeout_total_ms: u64 = 300_000,
        /// Bytes of request bodies one shard holds at once while collecting them → 503 (413 for one body larger than all of it).
        pub shard_body_budget_bytes: u64 = 256 * 1024 * 1024,
    }
}

section! {
    /// `[pg]`: how the shards reach PostgreSQL.
    pub struct Pg {
        /// External PostgreSQL. Unset: MadBase manages a private cluster.
        #[alias("DATABASE_URL")]
        pub url: Option<String> = None,
        /// Directory of the PostgreSQL server binaries for the managed cluster (else found on PATH, then in the pgserver wheel).
        pub bin: Option<PathBuf> = None,
        /// PostgreSQL connections per shard for the Data API lane.
        pub pool_size: usize = 4,
        /// PostgreSQL connections per shard for the Auth lane.
        pub auth_pool_size: usize = 2,
        /// Batches queued per lane and shard before requests are refused with 503.
        pub queue_limit: usize = 4096,
        /// Batches in flight on one connection.
        pub pipeline_depth: usize = 256,
        /// Bytes read from PostgreSQL for one request's result; past it the request fails and its statement is cancelled.
        pub max_result_bytes: usize = 64 * 1024 * 1024,
        /// Upper bound on one request's database work (queued + executing), ms.
        pub request_timeout_ms: u64 = 30_000,
    }
}

section! {
    /// `[jwt]`: token verification.
    pub struct Jwt {
        /// JWKS file with RS256/ES256 keys that only verify tokens (besides the HS256 secret and `[auth] signing_keys_path`); served in the JWKS too.
        pub keys: Option<PathBuf> = None,
        /// Verified tokens cached per shard.
        pub cache_entries: usize = 4096,
    }
}

section! {
    /// `[egress]`: the egress runtime, the tokio threads off the shards that tokio-only clients
    /// (Auth's SMTP) run on. Started only when a configured service needs it.
    pub struct Egress {
        /// Threads of the egress runtime.
        pub threads: usize = 2,
        /// Jobs (one SMTP conversation each) waiting or running on it before callers are refused.
        pub queue: usize = 256,
    }
}

/// The platform's sections, as the binary's configuration holds them.
pub struct Platform<'a> {
    pub shards: &'a Shards,
    pub http: &'a Http,
    pub pg: &'a Pg,
    pub jwt: &'a Jwt,
    pub egress: &'a Egress,
}

impl Platform<'_> {
    /// Rejects settings the program cannot run with, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let (s, h, p) = (self.shards, self.http, self.pg);
        let positive = [
            ("shards.count", s.count as u64),
            ("shards.max_connections", s.max_connections as u64),
            ("shards.ring_capacity", s.ring_capacity as u64),
            ("shards.control_ring_capacity", s.control_ring_capacity as u64),
            ("shards.blocking_threads", s.blocking_threads as u64),
            ("shards.blocking_queue", s.blocking_queue as u64),
            ("shards.shutdown_grace_ms", s.shutdown_grace_ms),
            ("http.max_header_bytes", h.max_header_bytes as u64),
            ("http.max_headers", h.max_headers as u64),
            ("http.max_uri_bytes", h.max_uri_bytes as u64),
            ("http.max_body_bytes", h.max_body_bytes),
            ("http.header_timeout_ms", h.header_timeout_ms),
            ("http.idle_timeout_ms", h.idle_timeout_ms),
            ("http.body_timeout_ms", h.body_timeout_ms),
            ("http.body_timeout_total_ms", h.body_timeout_total_ms),
            ("http.shard_body_budget_bytes", h.shard_body_budget_bytes),
            ("pg.pool_size", p.pool_size as u64),
            ("pg.auth_pool_size", p.auth_pool_size as u64),
            ("pg.queue_limit", p.queue_limit as u64),
            ("pg.pipeline_depth", p.pipeline_depth as u64),
            ("pg.max_result_bytes", p.max_result_bytes as u64),
            ("pg.request_timeout_ms", p.request_timeout_ms),
            ("jwt.cache_entries", self.jwt.cache_entries as u64),
            ("egress.threads", self.egress.threads as u64),
            ("egress.queue", self.egress.queue as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{key} must be greater than 0"));
        }
        if !(0..=19).contains(&s.blocking_nice) {
            return Err("shards.blocking_nice must be between 0 and 19".to_owned());
        }
        if s.count > 1024 {
            return Err("shards.count must be at most 1024".to_owned());
        }
        if let Some(url) = &p.url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err("pg.url (DATABASE_URL) must start with postgres:// or postgresql://".to_owned());
            }
        }
        Ok(())
    }
}

impl Http {
    /// The HTTP server's limits.
    pub fn limits(&self) -> madbase_http::Limits {
        madbase_http::Limits {
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            max_uri_len: self.max_uri_bytes,
            max_body_bytes: self.max_body_bytes,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            body_timeout_total: Duration::from_millis(self.body_timeout_total_ms),
            shard_body_budget_bytes: self.shard_body_budget_bytes,
            ..madbase_http::Limits::default()
        }
    }
}

impl Pg {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}
