//! Connection settings and URL parsing.
//!
//! Owns [`ConnectConfig`]: where to connect (TCP host/port or a unix-socket directory), as whom,
//! which database, and the limits of one connection. Invariant: a config built by
//! [`ConnectConfig::from_url`] never asks for TLS (out of scope); `sslmode=require` and stricter
//! are rejected up front instead of silently connecting in clear text.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::PgError;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A TCP host name or IP address.
    Tcp(String),
    /// A directory holding the server's unix socket `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

/// How to reach and authenticate to one PostgreSQL database.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectConfig {
    /// Server address.
    pub host: Host,
    /// Server port (also names the unix socket file).
    pub port: u16,
    /// Role to log in as.
    pub user: String,
    /// Password (cleartext, md5 and SCRAM-SHA-256 are supported).
    pub password: Option<String>,
    /// Database name (defaults to the user name, as libpq does).
    pub dbname: String,
    /// Reported as `application_name`.
    pub application_name: Option<String>,
    /// Bound on TCP connect + startup + authentication.
    pub connect_timeout: Duration,
    /// Per-connection bound on batches written but not yet answered.
    pub max_in_flight: usize,
    /// Per-connection bound on named prepared statements kept (LRU; evicted ones are closed).
    pub statement_cache_size: usize,
    /// Upper bound on the bytes the writer coalesces into one socket write.
    pub max_write_bytes: usize,
    /// Per-connection bound on requests queued but not yet written (full → `PgError::Busy`).
    pub max_queued: usize,
    /// Bound on the bytes of result rows (DataRow messages, as sent) read for one batch
    /// (default [`ConnectConfig::DEFAULT_MAX_RESULT_BYTES`]). Past it the batch fails with
    /// `PgError::ResultTooLarge`, the rest of its result is discarded as it arrives (never
    /// buffered), the server is sent a cancel, and the connection stays usable. Simple queries
    /// (migrations, schema introspection) are not bounded by it.
    pub max_result_bytes: usize,
}

impl std::fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("statement_cache_size", &self.statement_cache_size)
            .field("max_write_bytes", &self.max_write_bytes)
            .field("max_queued", &self.max_queued)
            .field("max_result_bytes", &self.max_result_bytes)
            .finish()
    }
}

impl ConnectConfig {
    /// Default per-connection in-flight bound.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
    /// Default statement cache size.
    pub const DEFAULT_STATEMENT_CACHE_SIZE: usize = 256;
    /// Default coalesced write size.
    pub const DEFAULT_MAX_WRITE_BYTES: usize = 256 * 1024;
    /// Default per-connection queue bound.
    pub const DEFAULT_MAX_QUEUED: usize = 4096;
    /// Default bound on one batch's result: 64 MiB. A Data API response is usually one row
    /// holding the whole JSON body, held once more while it is sent; 64 MiB is far beyond what
    /// a paginated API answers (Supabase caps reads at 1,000 rows by default) yet keeps a few
    /// hostile requests per shard from reaching gigabytes.
    pub const DEFAULT_MAX_RESULT_BYTES: usize = 64 * 1024 * 1024;

    /// A TCP config with defaults for everything else.
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>, dbname: impl Into<String>) -> Self {
        ConnectConfig {
            host: Host::Tcp(host.into()),
            port,
            user: user.into(),
            password: None,
            dbname: dbname.into(),
            application_name: None,
            connect_timeout: Duration::from_secs(5),
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            statement_cache_size: Self::DEFAULT_STATEMENT_CACHE_SIZE,
            max_write_bytes: Self::DEFAULT_MAX_WRITE_BYTES,
            max_queued: Self::DEFAULT_MAX_QUEUED,
            max_result_bytes: Self::DEFAULT_MAX_RESULT_BYTES,
        }
    }

    /// Sets the password.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Parses `postgres://user:password@host:port/dbname?application_name=x&sslmode=disable`
    /// (also `postgresql://`). User, password and dbname are percent-decoded. A host starting
    /// with `/` (or `%2F`), or `?host=/dir`, selects a unix socket directory.
    pub fn from_url(url: &str) -> Result<ConnectConfig, PgError> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| PgError::Config("connection URL must start with postgres:// or postgresql://".into()))?;
        let (main, query) = match rest.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match main.split_once('/') {
            Some((a, p)) => (a, p),
            None => (main, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((name, pw)) => (Some(percent_decode(name)?), Some(percent_decode(pw)?)),
                None => (Some(percent_decode(u)?), None),
            },
            None => (None, None),
        };
        let (host, port) = split_host_port(hostport)?;
        let mut cfg = ConnectConfig::new(
            "127.0.0.1",
            port.unwrap_or(5432),
            user.unwrap_or_else(|| "postgres".to_string()),
            String::new(),
        );
        if let Some(h) = host {
            let h = percent_decode(&h)?;
            cfg.host = if h.starts_with('/') { Host::Unix(PathBuf::from(h)) } else { Host::Tcp(h) };
        }
        cfg.password = password;
        cfg.dbname = percent_decode(path)?;
        if let Some(q) = query {
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = percent_decode(v)?;
                match k {
                    "application_name" => cfg.application_name = Some(v),
                    "sslmode" => match v.as_str() {
                        "disable" | "allow" | "prefer" => {}
                        other => {
                            return Err(PgError::Config(format!(
                                "sslmode={other} is not supported: MadBase connects to PostgreSQL without TLS; \
                                 use sslmode=disable (or prefer) and a local or private-network server"
                            )))
                        }
                    },
                    "connect_timeout" => {
                        let secs: u64 = v.parse().map_err(|_| {
                            PgError::Config(format!("connect_timeout must be whole seconds, got {v:?}"))
                        })?;
                        cfg.connect_timeout = Duration::from_secs(secs.max(1));
                    }
                    "host" => {
                        cfg.host = if v.starts_with('/') { Host::Unix(PathBuf::from(v)) } else { Host::Tcp(v) };
                    }
                    "port" => {
                        cfg.port = v.parse().map_err(|_| PgError::Config(format!("invalid port {v:?}")))?;
                    }
                    "user" => cfg.user = v,
                    "password" => cfg.password = Some(v),
                    "dbname" => cfg.dbname = v,
                    // Unknown libpq options are ignored (as many drivers do) but logged.
                    other => tracing::debug!(option = other, "ignoring unsupported connection URL option"),
                }
            }
        }
        if cfg.dbname.is_empty() {
            cfg.dbname = cfg.user.clone();
        }
        Ok(cfg)
    }

    /// Renders a URL for this config (the password is included; do not log it).
    pub fn to_url(&self) -> String {
        let host = match &self.host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]"),
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => percent_encode(&p.to_string_lossy()),
        };
        let auth = match &self.password {
            Some(p) => format!("{}:{}@", percent_encode(&self.user), percent_encode(p)),
            None => format!("{}@", percent_encode(&self.user)),
        };
        format!("postgres://{auth}{host}:{}/{}", self.port, percent_encode(&self.dbname))
    }
}

fn split_host_port(hostport: &str) -> Result<(Option<String>, Option<u16>), PgError> {
    if hostport.is_empty() {
        return Ok((None, None));
    }
    let parse_port = |p: &str| -> Result<Option<u16>, PgError> {
        if p.is_empty() {
            return Ok(None);
        }
        p.parse::<u16>().map(Some).map_err(|_| PgError::Config(format!("invalid port {p:?} in connection URL")))
    };
    if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) =
            rest.split_once(']').ok_or_else(|| PgError::Config("unterminated [ in connection URL host".into()))?;
        let port = match after.strip_prefix(':') {
            Some(p) => parse_port(p)?,
            None if after.is_empty() => None,
            None => return Err(PgError::Config("garbage after ] in connection URL host".into())),
        };
        return Ok((Some(h.to_string()), port));
    }
    if hostport.contains(',') {
        return Err(PgError::Config("multiple hosts in one connection URL are not supported".into()));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => Ok(((!h.is_empty()).then(|| h.to_string()), parse_port(p)?)),
        None => Ok((Some(hostport.to_string()), None)),
    }
}

/// Decodes `%XX` escapes (and leaves `+` alone, as in URL paths and userinfo).
pub(crate) fn percent_decode(s: &str) -> Result<String, PgError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| PgError::Config(format!("invalid percent-escape in connection URL component {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PgError::Config("connection URL component is not UTF-8 after decoding".into()))
}

pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let c = ConnectConfig::from_url(
            "postgresql://u%40x:p%2Fw%3A@db.example:6543/my%20db?application_name=mb&sslmode=disable",
        )
        .unwrap();
        assert_eq!(c.user, "u@x");
        assert_eq!(c.password.as_deref(), Some("p/w:"));
        assert_eq!(c.host, Host::Tcp("db.example".into()));
        assert_eq!(c.port, 6543);
        assert_eq!(c.dbname, "my db");
        assert_eq!(c.application_name.as_deref(), Some("mb"));
    }

    #[test]
    fn defaults_and_errors() {
        let c = ConnectConfig::from_url("postgres://alice@localhost").unwrap();
        assert_eq!(c.port, 5432);
        assert_eq!(c.dbname, "alice");
        assert!(c.password.is_none());
        let e = ConnectConfig::from_url("postgres://a@h/db?sslmode=require").unwrap_err();
        assert!(e.to_string().contains("sslmode=require"));
        assert!(ConnectConfig::from_url("mysql://x").is_err());
        assert!(ConnectConfig::from_url("postgres://a@h:notaport/db").is_err());
        let u = ConnectConfig::from_url("postgres://a:b@[::1]:5433/d").unwrap();
        assert_eq!(u.host, Host::Tcp("::1".into()));
        assert_eq!(u.port, 5433);
        let s = ConnectConfig::from_url("postgres://a@%2Ftmp%2Fsock:5433/d").unwrap();
        assert_eq!(s.host, Host::Unix("/tmp/sock".into()));
    }

    #[test]
    fn url_round_trip() {
        let c = ConnectConfig::new("127.0.0.1", 5999, "postgres", "postgres").password("a b/c");
        let back = ConnectConfig::from_url(&c.to_url()).unwrap();
        assert_eq!(back.password.as_deref(), Some("a b/c"));
        assert_eq!(back.port, 5999);
    }
}
