//! Edge Functions' settings: `[edge_runtime]` (the Supabase CLI's table: `enabled`; plus the
//! sandbox limits Supabase documents for its hosted platform, as MadBase's own keys) and
//! `[functions.<name>]` (the Supabase CLI's per-function table: `verify_jwt`, plus MadBase's
//! `allowed_outbound_hosts` and per-function limits), which a deploy takes as its defaults.
//!
//! Invariants: a value that passed [`EdgeRuntime::validate`] is usable as it is: every limit is
//! positive, the per-shard pool admits at least one instance.

use std::collections::BTreeMap;

use madbase_core::section;

section! {
    /// `[edge_runtime]`: Edge Functions (`/functions/v1`) on Wasmtime.
    pub struct EdgeRuntime {
        /// Serve `/functions/v1`.
        pub enabled: bool = true,
        /// Linear memory a function's instance may grow to, in MiB (Supabase's hosted limit: 256).
        pub memory_limit_mb: u64 = 256,
        /// CPU time one invocation may spend in the function, in milliseconds (Supabase's hosted limit: 2 s) → 546.
        pub cpu_time_limit_ms: u64 = 2_000,
        /// Time a function may take to answer with its response head, in milliseconds (Supabase's request idle timeout, 150 s) → 504.
        pub idle_timeout_ms: u64 = 150_000,
        /// Wall-clock time one invocation may run in all, streaming its body included, in milliseconds (Supabase's free plan: 150 s).
        pub wall_clock_limit_ms: u64 = 150_000,
        /// Instances running at once per shard; more → 546 `WORKER_RESOURCE_LIMIT`.
        pub max_concurrent: usize = 64,
        /// Largest request body an invocation accepts, in bytes → 413.
        pub max_request_bytes: u64 = 20 * 1024 * 1024,
        /// Largest response body a function may stream back, in bytes (the stream is cut past it).
        pub max_response_bytes: u64 = 64 * 1024 * 1024,
        /// Largest component a deploy accepts, in bytes (Supabase's bundle limit is 20 MB; a JavaScript component embeds its engine).
        pub max_component_bytes: u64 = 50 * 1024 * 1024,
        /// SQL statements one invocation may run through `madbase:functions/database`.
        pub max_db_calls: u32 = 100,
        /// Largest JSON answer of one statement, in bytes (more → `MB001`).
        pub max_db_result_bytes: u64 = 4 * 1024 * 1024,
        /// PostgreSQL connections per shard for functions' statements.
        pub pool_size: usize = 2,
        /// The secrets' master key: 32 bytes in base64. Unset: generated into `<data_dir>/functions/master.key` (mode 0600) on first start.
        pub master_key: Option<String> = None,
    }
}

/// One function's table, `[functions.<name>]`: the settings a deploy of `<name>` starts from.
/// Supabase's keys MadBase has no use for (`import_map`, `entrypoint`, `static_files`) are
/// accepted and ignored, so a project's `config.toml` loads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct FunctionConfig {
    /// `false`: deploys of this name are refused.
    pub enabled: bool,
    /// Require a valid JWT in `Authorization` (Supabase's default).
    pub verify_jwt: bool,
    /// Hosts the function may call over HTTP (`api.example.com`, `*.example.com`, `host:8080`); none by default.
    pub allowed_outbound_hosts: Vec<String>,
    /// Overrides `[edge_runtime] memory_limit_mb` (never above it).
    pub memory_limit_mb: Option<u64>,
    /// Overrides `[edge_runtime] cpu_time_limit_ms` (never above it).
    pub cpu_time_limit_ms: Option<u64>,
    /// Overrides `[edge_runtime] wall_clock_limit_ms` (never above it).
    pub wall_clock_limit_ms: Option<u64>,
}

impl Default for FunctionConfig {
    fn default() -> Self {
        FunctionConfig {
            enabled: true,
            verify_jwt: true,
            allowed_outbound_hosts: Vec::new(),
            memory_limit_mb: None,
            cpu_time_limit_ms: None,
            wall_clock_limit_ms: None,
        }
    }
}

/// `[functions.<name>]` by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct Functions(pub BTreeMap<String, FunctionConfig>);

impl madbase_core::settings::Setting for Functions {
    /// `{"hello":{"verify_jwt":false}}` in the environment.
    const KIND: madbase_core::settings::Kind =
        madbase_core::settings::Kind::Value(|raw| madbase_core::settings::json_object_setting(raw, "functions"));
}

impl EdgeRuntime {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("memory_limit_mb", self.memory_limit_mb),
            ("cpu_time_limit_ms", self.cpu_time_limit_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("wall_clock_limit_ms", self.wall_clock_limit_ms),
            ("max_concurrent", self.max_concurrent as u64),
            ("max_request_bytes", self.max_request_bytes),
            ("max_response_bytes", self.max_response_bytes),
            ("max_component_bytes", self.max_component_bytes),
            ("pool_size", self.pool_size as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("edge_runtime.{key} must be at least 1"));
        }
        if self.memory_limit_mb > 4096 {
            return Err("edge_runtime.memory_limit_mb must be at most 4096 (a 32-bit linear memory)".to_owned());
        }
        if let Some(key) = &self.master_key {
            crate::secrets::MasterKey::from_base64(key).map_err(|e| format!("edge_runtime.master_key: {e}"))?;
        }
        Ok(())
    }
}

/// Whether `name` is a function name Supabase accepts (its CLI's slug rule): a letter, then
/// letters, digits, `_` and `-`, at most 128 characters. No path trick gets through.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes[0].is_ascii_alphabetic()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_supabases_slug_rule() {
        for good in ["hello", "hello-world", "a_1", "A"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "1abc", "-x", "_admin", "a/b", "..", "a.b", "a%2fb", "a b", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn zero_limits_are_refused() {
        let settings = EdgeRuntime { cpu_time_limit_ms: 0, ..EdgeRuntime::default() };
        assert_eq!(settings.validate().unwrap_err(), "edge_runtime.cpu_time_limit_ms must be at least 1");
        assert!(EdgeRuntime::default().validate().is_ok());
    }
}
