//! Storage's settings: `[storage]`, the Supabase CLI's table (`enabled`, `file_size_limit`), plus
//! Supabase Storage's server limits `empty_bucket_max` (its `STORAGE_EMPTY_BUCKET_MAX`),
//! `tus_url_expiry_ms` and `tus_max_concurrent_uploads` (its `TUS_*`), and MadBase's own
//! `pool_size`.
//!
//! Invariants: a value that passed [`Storage::validate`] is usable as it is — the global file size
//! limit parses to a positive byte count, the pool has a connection.

use madbase_core::section;

section! {
    /// `[storage]`: Supabase Storage (`/storage/v1`).
    pub struct Storage {
        /// Serve `/storage/v1`.
        pub enabled: bool = true,
        /// Largest object the project accepts, with a unit (`"50MiB"`, `"5GB"`); a bucket's own limit may only be lower.
        pub file_size_limit: String = "50MiB".to_owned(),
        /// Most objects a bucket may hold for `POST /bucket/{id}/empty` → `InvalidRequest` "Unable to empty the bucket because it contains too many objects".
        pub empty_bucket_max: u64 = 200_000,
        /// Lifetime of a signed upload URL in seconds (Supabase Storage's `UPLOAD_SIGNED_URL_EXPIRATION_TIME`; two hours, as hosted Supabase documents).
        pub upload_signed_url_expiration_time: u64 = 7200,
        /// PostgreSQL connections per shard for Storage's statements.
        pub pool_size: usize = 2,
        /// How long a resumable (TUS) upload may go untouched before it is removed, in milliseconds (Supabase Storage's `TUS_URL_EXPIRY_MS`).
        pub tus_url_expiry_ms: u64 = 3_600_000,
        /// Most resumable (TUS) upload requests writing bytes at once in the process (Supabase Storage's `TUS_MAX_CONCURRENT_UPLOADS`); more → 503.
        pub tus_max_concurrent_uploads: usize = 500,
    }
}

impl Storage {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        match parse_config_size(&self.file_size_limit) {
            Some(n) if n > 0 => {}
            _ => {
                return Err(format!(
                    "storage.file_size_limit {:?} is not a size such as \"50MiB\" or \"5GB\"",
                    self.file_size_limit
                ))
            }
        }
        if self.upload_signed_url_expiration_time == 0 {
            return Err("storage.upload_signed_url_expiration_time must be at least 1 second".to_owned());
        }
        if self.pool_size == 0 {
            return Err("storage.pool_size must be at least 1".to_owned());
        }
        if self.tus_url_expiry_ms < 1000 {
            return Err("storage.tus_url_expiry_ms must be at least 1000 (one second)".to_owned());
        }
        if self.tus_max_concurrent_uploads == 0 {
            return Err("storage.tus_max_concurrent_uploads must be at least 1".to_owned());
        }
        Ok(())
    }

    /// The global file size limit in bytes.
    pub fn file_size_limit_bytes(&self) -> u64 {
        parse_config_size(&self.file_size_limit).unwrap_or(0)
    }
}

/// A size as the Supabase CLI's config writes it: a number and a unit, decimal (`KB`, `MB`, `GB`)
/// or binary (`KiB`, `MiB`, `GiB`), or bytes (`B` or none).
pub fn parse_config_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number * factor;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_the_cli_writes_them() {
        assert_eq!(parse_config_size("50MiB"), Some(50 * 1024 * 1024));
        assert_eq!(parse_config_size("5GB"), Some(5_000_000_000));
        assert_eq!(parse_config_size("1.5kb"), Some(1500));
        assert_eq!(parse_config_size("123"), Some(123));
        assert_eq!(parse_config_size("12 parsecs"), None);
        assert!(Storage::default().validate().is_ok());
        assert!(Storage { file_size_limit: "lots".into(), ..Storage::default() }.validate().is_err());
    }
}
