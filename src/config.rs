//! Configuration: every setting and every limit MadBase has, with its default.
//!
//! Sources, later ones win: built-in defaults, then an optional TOML file (`MADBASE_CONFIG`, or the
//! `--config` flag), then `MADBASE_*` environment variables (and `DATABASE_URL`). The result is
//! validated once at start and is immutable afterwards; every shard reads the same `Arc<Config>`.
//!
//! Invariants: a `Config` returned by [`Config::load`] has passed [`Config::validate`] — every limit
//! is non-zero and every address parses — so the rest of the program never re-checks it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The Supabase local-development demo secret: with it the well-known demo anon and service_role
/// keys work. Used only when no secret is configured, and announced loudly at start.
pub const DEMO_JWT_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?}: {message}")]
    Env { name: &'static str, value: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// All settings. Field names are the TOML keys; each has an environment variable
/// `MADBASE_<UPPER_NAME>` (see [`ENV_KEYS`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address every shard listens on (SO_REUSEPORT). Default `127.0.0.1:54321`.
    pub listen: SocketAddr,
    /// Number of shards (threads pinned one per core). Default: the number of cores.
    pub shards: usize,
    /// External PostgreSQL (`DATABASE_URL`). Unset: MadBase manages a private cluster.
    pub database_url: Option<String>,
    /// Where the managed cluster and MadBase's own state live. Default `./.madbase`.
    pub data_dir: PathBuf,
    /// Directory of the PostgreSQL server binaries for the managed cluster (else found on PATH).
    pub pg_bin: Option<PathBuf>,
    /// Port of the managed PostgreSQL cluster (loopback only). Default 54322, as Supabase's local stack.
    pub pg_port: u16,
    /// PostgreSQL connections per shard. Default 4.
    pub pg_pool_size: usize,
    /// Batches queued per shard pool before requests are refused with 503. Default 4096.
    pub pg_queue_limit: usize,
    /// Batches in flight on one connection. Default 256.
    pub pg_pipeline_depth: usize,
    /// Bytes read from PostgreSQL for one request's result; past it the request fails (500 PGRSTX00) and its statement is cancelled. Default 64 MiB.
    pub pg_max_result_bytes: usize,
    /// Upper bound on one request's database work (queued + executing), ms. Default 30000.
    pub pg_request_timeout_ms: u64,
    /// HS256 secret. Default: the local-development demo secret (announced at start).
    pub jwt_secret: Option<String>,
    /// JWKS file with RS256/ES256 keys.
    pub jwt_keys: Option<PathBuf>,
    /// Verified tokens cached per shard. Default 4096.
    pub jwt_cache_entries: usize,
    /// Request head (request line + headers) bytes. Default 16384 → 431.
    pub http_max_header_bytes: usize,
    /// Header lines per request. Default 100 → 431.
    pub http_max_headers: usize,
    /// Request-target bytes. Default 8192 → 414.
    pub http_max_uri_bytes: usize,
    /// Request body bytes accepted by default (services may set a lower one). Default 50 MiB → 413.
    pub http_max_body_bytes: u64,
    /// Time for a whole request head to arrive, ms (slowloris bound). Default 10000 → 408.
    pub http_header_timeout_ms: u64,
    /// Keep-alive idle time before a connection is closed, ms. Default 60000.
    pub http_idle_timeout_ms: u64,
    /// Longest wait for body progress, ms. Default 30000 → 408.
    pub http_body_timeout_ms: u64,
    /// Longest a whole request body may take to arrive, ms (a trickle of bytes cannot hold a body open). Default 300000 → 408.
    pub http_body_timeout_total_ms: u64,
    /// Bytes of request bodies one shard holds at once while collecting them. Default 256 MiB; past it → 503 (413 for one body larger than all of it).
    pub http_shard_body_budget_bytes: u64,
    /// Connections one shard serves at once; beyond it the kernel backlog holds new ones. Default 16384.
    pub max_connections_per_shard: usize,
    /// Capacity of each cross-shard ring, messages. Default 4096.
    pub ring_capacity: usize,
    /// Threads of the blocking pool (hashing, image work). Default: the number of cores.
    pub blocking_threads: usize,
    /// Jobs queued on the blocking pool before callers are refused. Default 1024.
    pub blocking_queue: usize,
    /// After SIGINT/SIGTERM, how long in-flight requests may finish, ms. Default 10000.
    pub shutdown_grace_ms: u64,
    /// Use the epoll driver even where io_uring works. Default false.
    pub force_legacy_driver: bool,
    /// Answer `Accept: application/vnd.pgrst.plan…` with the statement's `EXPLAIN` (PostgREST's
    /// `db-plan-enabled`). Default false: plans are then a 406 PGRST107, as in PostgREST.
    pub db_plan_enabled: bool,
    /// Log filter in `tracing` syntax. Default `info`.
    pub log: String,
    /// `text` or `json`. Default `text`.
    pub log_format: String,
    /// Schemas the Data API exposes, the first being the default (PostgREST's `db-schemas`);
    /// `Accept-Profile`/`Content-Profile` pick another. TOML: a list or a comma-separated string
    /// (as PostgREST writes it); env: comma-separated. Default `public`.
    #[serde(deserialize_with = "list_or_commas")]
    pub db_schemas: Vec<String>,
    /// Schemas every Data API request's `search_path` has after the request schema (PostgREST's
    /// `db-extra-search-path`). Env: comma-separated. Default `public, extensions`, Supabase's
    /// setting (PostgREST's own default is `public`). TOML: a list or a comma-separated string.
    #[serde(deserialize_with = "list_or_commas")]
    pub db_extra_search_path: Vec<String>,
    /// A function (`name` or `schema.name`, optionally double-quoted parts) every Data API request
    /// calls after its request settings and before its statement (PostgREST's `db-pre-request`).
    pub db_pre_request: Option<String>,
    /// At most this many rows in a read or function result (PostgREST's `db-max-rows`); a smaller
    /// `limit` still wins. Default 1000, Supabase's; `"unlimited"` removes the cap (then one read
    /// is bounded only by PostgreSQL's 1 GB limit on the value it builds).
    #[serde(deserialize_with = "rows_or_unlimited")]
    pub db_max_rows: Option<u64>,
}

/// At most this many schemas in `db_schemas` and in `db_extra_search_path` each.
pub const MAX_SCHEMAS: usize = 100;
/// PostgreSQL's longest identifier (`NAMEDATALEN - 1`): longer names would be truncated.
const MAX_IDENTIFIER_BYTES: usize = 63;

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 54321)),
            shards: cores,
            database_url: None,
            data_dir: PathBuf::from(".madbase"),
            pg_bin: None,
            pg_port: 54322,
            pg_pool_size: 4,
            pg_queue_limit: 4096,
            pg_pipeline_depth: 256,
            pg_max_result_bytes: 64 * 1024 * 1024,
            pg_request_timeout_ms: 30_000,
            jwt_secret: None,
            jwt_keys: None,
            jwt_cache_entries: 4096,
            http_max_header_bytes: 16 * 1024,
            http_max_headers: 100,
            http_max_uri_bytes: 8 * 1024,
            http_max_body_bytes: 50 * 1024 * 1024,
            http_header_timeout_ms: 10_000,
            http_idle_timeout_ms: 60_000,
            http_body_timeout_ms: 30_000,
            http_body_timeout_total_ms: 300_000,
            http_shard_body_budget_bytes: 256 * 1024 * 1024,
            max_connections_per_shard: 16_384,
            ring_capacity: 4096,
            blocking_threads: cores,
            blocking_queue: 1024,
            shutdown_grace_ms: 10_000,
            force_legacy_driver: false,
            db_plan_enabled: false,
            log: "info".to_owned(),
            log_format: "text".to_owned(),
            db_schemas: vec!["public".to_owned()],
            db_extra_search_path: vec!["public".to_owned(), "extensions".to_owned()],
            db_pre_request: None,
            db_max_rows: Some(DEFAULT_DB_MAX_ROWS),
        }
    }
}

/// Every environment variable MadBase reads, for `--help` and the README.
pub const ENV_KEYS: &[&str] = &[
    "MADBASE_CONFIG",
    "MADBASE_LISTEN",
    "MADBASE_SHARDS",
    "DATABASE_URL",
    "MADBASE_DATA_DIR",
    "MADBASE_PG_BIN",
    "MADBASE_PG_PORT",
    "MADBASE_PG_POOL_SIZE",
    "MADBASE_PG_QUEUE_LIMIT",
    "MADBASE_PG_PIPELINE_DEPTH",
    "MADBASE_PG_MAX_RESULT_BYTES",
    "MADBASE_PG_REQUEST_TIMEOUT_MS",
    "MADBASE_JWT_SECRET",
    "MADBASE_JWT_KEYS",
    "MADBASE_JWT_CACHE_ENTRIES",
    "MADBASE_HTTP_MAX_HEADER_BYTES",
    "MADBASE_HTTP_MAX_HEADERS",
    "MADBASE_HTTP_MAX_URI_BYTES",
    "MADBASE_HTTP_MAX_BODY_BYTES",
    "MADBASE_HTTP_HEADER_TIMEOUT_MS",
    "MADBASE_HTTP_IDLE_TIMEOUT_MS",
    "MADBASE_HTTP_BODY_TIMEOUT_MS",
    "MADBASE_HTTP_BODY_TIMEOUT_TOTAL_MS",
    "MADBASE_HTTP_SHARD_BODY_BUDGET_BYTES",
    "MADBASE_MAX_CONNECTIONS_PER_SHARD",
    "MADBASE_RING_CAPACITY",
    "MADBASE_BLOCKING_THREADS",
    "MADBASE_BLOCKING_QUEUE",
    "MADBASE_SHUTDOWN_GRACE_MS",
    "MADBASE_FORCE_LEGACY_DRIVER",
    "MADBASE_DB_PLAN_ENABLED",
    "MADBASE_LOG",
    "MADBASE_LOG_FORMAT",
    "MADBASE_DB_SCHEMAS",
    "MADBASE_DB_EXTRA_SEARCH_PATH",
    "MADBASE_DB_PRE_REQUEST",
    "MADBASE_DB_MAX_ROWS",
];

/// `a, b ,c` → `["a", "b", "c"]` (empty items dropped).
fn name_list(raw: &str) -> Vec<String> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Supabase's default row cap for the Data API (its dashboard's "Max rows").
pub const DEFAULT_DB_MAX_ROWS: u64 = 1000;

/// `db_max_rows`: a number, or `"unlimited"` for no cap.
fn rows_or_unlimited<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Rows {
        Count(u64),
        Word(String),
    }
    match Rows::deserialize(deserializer)? {
        Rows::Count(n) => Ok(Some(n)),
        Rows::Word(word) if word.eq_ignore_ascii_case("unlimited") => Ok(None),
        Rows::Word(word) => Err(serde::de::Error::custom(format!("expected a number or \"unlimited\", not {word:?}"))),
    }
}

/// A TOML list of names, or one comma-separated string of them.
fn list_or_commas<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Names {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match Names::deserialize(deserializer)? {
        Names::List(names) => names,
        Names::Commas(text) => name_list(&text),
    })
}

/// A possibly schema-qualified function name as `db_pre_request` takes it: `f`, `s.f`,
/// `"my schema"."f.x"` (inside double quotes `""` is a quote). Returns (schema, name).
pub fn parse_qualified_name(raw: &str) -> Result<(Option<String>, String), String> {
    let mut parts: Vec<String> = Vec::new();
    let mut chars = raw.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err("unterminated double quote".to_owned()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                part.push(c);
                chars.next();
            }
        }
        if part.is_empty() || part.contains('\0') || part.len() > MAX_IDENTIFIER_BYTES {
            return Err(format!("names must be 1 to {MAX_IDENTIFIER_BYTES} bytes, without NUL"));
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') => {}
            Some(c) => return Err(format!("unexpected {c:?} after a quoted name")),
        }
    }
    match <[String; 2]>::try_from(parts) {
        Ok([schema, name]) => Ok((Some(schema), name)),
        Err(parts) => match <[String; 1]>::try_from(parts) {
            Ok([name]) => Ok((None, name)),
            Err(_) => Err("expected name or schema.name".to_owned()),
        },
    }
}

/// Parses `raw` into `slot`, naming the variable in the error.
fn set<T: std::str::FromStr>(slot: &mut T, name: &'static str, raw: &str) -> Result<(), ConfigError>
where
    T::Err: std::fmt::Display,
{
    *slot = raw.trim().parse().map_err(|e: T::Err| ConfigError::Env {
        name,
        value: raw.to_owned(),
        message: e.to_string(),
    })?;
    Ok(())
}

fn set_bool(slot: &mut bool, name: &'static str, raw: &str) -> Result<(), ConfigError> {
    *slot = match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => true,
        "0" | "false" | "no" | "off" | "" => false,
        _ => {
            return Err(ConfigError::Env { name, value: raw.to_owned(), message: "expected true or false".to_owned() })
        }
    };
    Ok(())
}

impl Config {
    /// Defaults, then the TOML file (the explicit path, else `MADBASE_CONFIG`), then the environment.
    pub fn load(file: Option<PathBuf>) -> Result<Config, ConfigError> {
        Self::load_from(file, |name| std::env::var(name).ok())
    }

    /// [`Config::load`] with the environment given as a lookup function (for tests).
    pub fn load_from(file: Option<PathBuf>, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let file = file.or_else(|| env("MADBASE_CONFIG").map(PathBuf::from));
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| ConfigError::ReadFile { path: path.clone(), source })?;
                toml::from_str(&text).map_err(|e| ConfigError::ParseFile { path, message: e.to_string() })?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for &name in ENV_KEYS {
            let Some(raw) = env(name) else { continue };
            let c = &mut *self;
            match name {
                "MADBASE_CONFIG" => {}
                "MADBASE_LISTEN" => set(&mut c.listen, name, &raw)?,
                "MADBASE_SHARDS" => set(&mut c.shards, name, &raw)?,
                "DATABASE_URL" => c.database_url = Some(raw).filter(|s| !s.is_empty()),
                "MADBASE_DATA_DIR" => c.data_dir = PathBuf::from(raw),
                "MADBASE_PG_BIN" => c.pg_bin = Some(PathBuf::from(raw)),
                "MADBASE_PG_PORT" => set(&mut c.pg_port, name, &raw)?,
                "MADBASE_PG_POOL_SIZE" => set(&mut c.pg_pool_size, name, &raw)?,
                "MADBASE_PG_QUEUE_LIMIT" => set(&mut c.pg_queue_limit, name, &raw)?,
                "MADBASE_PG_PIPELINE_DEPTH" => set(&mut c.pg_pipeline_depth, name, &raw)?,
                "MADBASE_PG_MAX_RESULT_BYTES" => set(&mut c.pg_max_result_bytes, name, &raw)?,
                "MADBASE_PG_REQUEST_TIMEOUT_MS" => set(&mut c.pg_request_timeout_ms, name, &raw)?,
                "MADBASE_JWT_SECRET" => c.jwt_secret = Some(raw).filter(|s| !s.is_empty()),
                "MADBASE_JWT_KEYS" => c.jwt_keys = Some(PathBuf::from(raw)),
                "MADBASE_JWT_CACHE_ENTRIES" => set(&mut c.jwt_cache_entries, name, &raw)?,
                "MADBASE_HTTP_MAX_HEADER_BYTES" => set(&mut c.http_max_header_bytes, name, &raw)?,
                "MADBASE_HTTP_MAX_HEADERS" => set(&mut c.http_max_headers, name, &raw)?,
                "MADBASE_HTTP_MAX_URI_BYTES" => set(&mut c.http_max_uri_bytes, name, &raw)?,
                "MADBASE_HTTP_MAX_BODY_BYTES" => set(&mut c.http_max_body_bytes, name, &raw)?,
                "MADBASE_HTTP_HEADER_TIMEOUT_MS" => set(&mut c.http_header_timeout_ms, name, &raw)?,
                "MADBASE_HTTP_IDLE_TIMEOUT_MS" => set(&mut c.http_idle_timeout_ms, name, &raw)?,
                "MADBASE_HTTP_BODY_TIMEOUT_MS" => set(&mut c.http_body_timeout_ms, name, &raw)?,
                "MADBASE_HTTP_BODY_TIMEOUT_TOTAL_MS" => set(&mut c.http_body_timeout_total_ms, name, &raw)?,
                "MADBASE_HTTP_SHARD_BODY_BUDGET_BYTES" => set(&mut c.http_shard_body_budget_bytes, name, &raw)?,
                "MADBASE_MAX_CONNECTIONS_PER_SHARD" => set(&mut c.max_connections_per_shard, name, &raw)?,
                "MADBASE_RING_CAPACITY" => set(&mut c.ring_capacity, name, &raw)?,
                "MADBASE_BLOCKING_THREADS" => set(&mut c.blocking_threads, name, &raw)?,
                "MADBASE_BLOCKING_QUEUE" => set(&mut c.blocking_queue, name, &raw)?,
                "MADBASE_SHUTDOWN_GRACE_MS" => set(&mut c.shutdown_grace_ms, name, &raw)?,
                "MADBASE_FORCE_LEGACY_DRIVER" => set_bool(&mut c.force_legacy_driver, name, &raw)?,
                "MADBASE_DB_PLAN_ENABLED" => set_bool(&mut c.db_plan_enabled, name, &raw)?,
                "MADBASE_LOG" => c.log = raw,
                "MADBASE_LOG_FORMAT" => c.log_format = raw,
                "MADBASE_DB_SCHEMAS" => c.db_schemas = name_list(&raw),
                "MADBASE_DB_EXTRA_SEARCH_PATH" => c.db_extra_search_path = name_list(&raw),
                "MADBASE_DB_PRE_REQUEST" => c.db_pre_request = Some(raw.trim().to_owned()).filter(|s| !s.is_empty()),
                "MADBASE_DB_MAX_ROWS" if raw.trim().eq_ignore_ascii_case("unlimited") => c.db_max_rows = None,
                "MADBASE_DB_MAX_ROWS" => {
                    let mut max = 0u64;
                    set(&mut max, name, &raw)?;
                    c.db_max_rows = Some(max);
                }
                _ => unreachable!("ENV_KEYS and apply_env list the same names"),
            }
        }
        Ok(())
    }

    /// Rejects settings the program cannot run with, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("shards", self.shards as u64),
            ("pg_pool_size", self.pg_pool_size as u64),
            ("pg_queue_limit", self.pg_queue_limit as u64),
            ("pg_pipeline_depth", self.pg_pipeline_depth as u64),
            ("pg_max_result_bytes", self.pg_max_result_bytes as u64),
            ("pg_request_timeout_ms", self.pg_request_timeout_ms),
            ("jwt_cache_entries", self.jwt_cache_entries as u64),
            ("http_max_header_bytes", self.http_max_header_bytes as u64),
            ("http_max_headers", self.http_max_headers as u64),
            ("http_max_uri_bytes", self.http_max_uri_bytes as u64),
            ("http_max_body_bytes", self.http_max_body_bytes),
            ("http_header_timeout_ms", self.http_header_timeout_ms),
            ("http_idle_timeout_ms", self.http_idle_timeout_ms),
            ("http_body_timeout_ms", self.http_body_timeout_ms),
            ("http_body_timeout_total_ms", self.http_body_timeout_total_ms),
            ("http_shard_body_budget_bytes", self.http_shard_body_budget_bytes),
            ("max_connections_per_shard", self.max_connections_per_shard as u64),
            ("ring_capacity", self.ring_capacity as u64),
            ("blocking_threads", self.blocking_threads as u64),
            ("blocking_queue", self.blocking_queue as u64),
            ("shutdown_grace_ms", self.shutdown_grace_ms),
            ("pg_port", self.pg_port as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("{key} must be greater than 0")));
        }
        if self.shards > 1024 {
            return Err(ConfigError::Invalid("shards must be at most 1024".to_owned()));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid(format!(
                "log_format must be \"text\" or \"json\", not {:?}",
                self.log_format
            )));
        }
        if let Some(secret) = &self.jwt_secret {
            if secret.len() < 32 {
                return Err(ConfigError::Invalid("jwt_secret must be at least 32 characters".to_owned()));
            }
        }
        if self.db_schemas.is_empty() {
            return Err(ConfigError::Invalid("db_schemas must name at least one schema".to_owned()));
        }
        for (key, list) in [("db_schemas", &self.db_schemas), ("db_extra_search_path", &self.db_extra_search_path)] {
            if list.len() > MAX_SCHEMAS {
                return Err(ConfigError::Invalid(format!("{key} may name at most {MAX_SCHEMAS} schemas")));
            }
            if let Some(bad) = list.iter().find(|s| s.is_empty() || s.contains('\0') || s.len() > MAX_IDENTIFIER_BYTES)
            {
                return Err(ConfigError::Invalid(format!(
                    "{key}: {bad:?} is not a schema name (1 to {MAX_IDENTIFIER_BYTES} bytes, without NUL)"
                )));
            }
        }
        if let Some(function) = &self.db_pre_request {
            parse_qualified_name(function)
                .map_err(|e| ConfigError::Invalid(format!("db_pre_request {function:?}: {e}")))?;
        }
        if self.db_max_rows == Some(0) {
            return Err(ConfigError::Invalid(
                "db_max_rows must be greater than 0 (\"unlimited\" for no cap)".to_owned(),
            ));
        }
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::Invalid(
                    "DATABASE_URL must start with postgres:// or postgresql://".to_owned(),
                ));
            }
        }
        Ok(())
    }

    pub fn pg_request_timeout(&self) -> Duration {
        Duration::from_millis(self.pg_request_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The HS256 secret in effect, and whether it is the public demo secret.
    pub fn effective_jwt_secret(&self) -> (&str, bool) {
        match &self.jwt_secret {
            Some(secret) => (secret, false),
            None => (DEMO_JWT_SECRET, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load_from(None, |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_valid() {
        let c = load(&[]).expect("defaults validate");
        assert_eq!(c.listen.to_string(), "127.0.0.1:54321");
        assert!(c.shards >= 1);
    }

    #[test]
    fn environment_overrides_and_names_bad_values() {
        let c = load(&[("MADBASE_LISTEN", "0.0.0.0:8000"), ("MADBASE_SHARDS", "3")]).unwrap();
        assert_eq!(c.listen.port(), 8000);
        assert_eq!(c.shards, 3);
        let err = load(&[("MADBASE_SHARDS", "many")]).unwrap_err().to_string();
        assert!(err.contains("MADBASE_SHARDS"), "{err}");
        let err = load(&[("MADBASE_HTTP_MAX_HEADERS", "0")]).unwrap_err().to_string();
        assert!(err.contains("http_max_headers"), "{err}");
        let err = load(&[("MADBASE_JWT_SECRET", "short")]).unwrap_err().to_string();
        assert!(err.contains("32"), "{err}");
    }

    #[test]
    fn data_api_keys() {
        let c = load(&[]).unwrap();
        assert_eq!(
            (c.db_schemas, c.db_extra_search_path),
            (vec!["public".into()], vec!["public".into(), "extensions".into()])
        );
        assert_eq!((c.db_pre_request, c.db_max_rows), (None, Some(DEFAULT_DB_MAX_ROWS)));
        let c = load(&[
            ("MADBASE_DB_SCHEMAS", "public, personal ,"),
            ("MADBASE_DB_EXTRA_SEARCH_PATH", ""),
            ("MADBASE_DB_PRE_REQUEST", "api.check"),
            ("MADBASE_DB_MAX_ROWS", "1000"),
        ])
        .unwrap();
        assert_eq!(c.db_schemas, ["public", "personal"]);
        assert!(c.db_extra_search_path.is_empty());
        assert_eq!((c.db_pre_request.as_deref(), c.db_max_rows), (Some("api.check"), Some(1000)));
        assert_eq!(load(&[("MADBASE_DB_MAX_ROWS", "Unlimited")]).unwrap().db_max_rows, None);
        assert_eq!(toml::from_str::<Config>("db_max_rows = \"unlimited\"").unwrap().db_max_rows, None);
        assert_eq!(toml::from_str::<Config>("db_max_rows = 50").unwrap().db_max_rows, Some(50));
        assert!(toml::from_str::<Config>("db_max_rows = \"lots\"").is_err());
        for bad in [("MADBASE_DB_SCHEMAS", " , "), ("MADBASE_DB_MAX_ROWS", "0"), ("MADBASE_DB_PRE_REQUEST", "a.b.c")] {
            assert!(load(&[bad]).is_err(), "{bad:?}");
        }
        assert_eq!(parse_qualified_name("f").unwrap(), (None, "f".to_owned()));
        assert_eq!(parse_qualified_name("\"my s\".\"f.\"\"x\"").unwrap(), (Some("my s".into()), "f.\"x".into()));
        for bad in ["", "a.", ".f", "\"a", "\"a\"b", "a.b.c"] {
            assert!(parse_qualified_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_example_file_is_valid() {
        let c: Config = toml::from_str(include_str!("../deploy/madbase.example.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.db_extra_search_path, ["public", "extensions"]);
        let c: Config = toml::from_str("db_schemas = \"public, personal\"\ndb_extra_search_path = []").unwrap();
        assert_eq!(c.db_schemas, ["public", "personal"]);
        assert!(c.db_extra_search_path.is_empty());
        assert!(toml::from_str::<Config>("db_schemas = 1").is_err());
    }

    #[test]
    fn toml_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("madbase.toml");
        std::fs::write(&path, "shards = 2\npg_pool_size = 7\n").unwrap();
        let c = Config::load_from(Some(path.clone()), |k| (k == "MADBASE_SHARDS").then(|| "5".to_owned())).unwrap();
        assert_eq!((c.shards, c.pg_pool_size), (5, 7));
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        let err = Config::load_from(Some(path), |_| None).unwrap_err().to_string();
        assert!(err.contains("no_such_key"), "{err}");
    }
}
