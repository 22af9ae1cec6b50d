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
        /// Where objects' bytes live: `"file"` (under the data dir) or `"s3"` (an S3-compatible store, the `s3_*` keys).
        #[alias("STORAGE_BACKEND")]
        pub backend: String = "file".to_owned(),
        /// The S3 bucket objects go to (`backend = "s3"`).
        #[alias("STORAGE_S3_BUCKET")]
        pub s3_bucket: String = String::new(),
        /// The S3 region.
        #[alias("STORAGE_S3_REGION")]
        pub s3_region: String = "us-east-1".to_owned(),
        /// An S3-compatible service's URL (`http://minio:9000`); unset: AWS's endpoint of the region.
        #[alias("STORAGE_S3_ENDPOINT")]
        pub s3_endpoint: Option<String> = None,
        /// Path-style URLs (`endpoint/bucket/key`), as MinIO and most S3-compatible services need.
        #[alias("STORAGE_S3_FORCE_PATH_STYLE")]
        pub s3_force_path_style: bool = false,
        /// The access key id; empty: the AWS credential chain of the environment.
        #[alias("AWS_ACCESS_KEY_ID")]
        pub s3_access_key_id: String = String::new(),
        /// The secret access key.
        #[alias("AWS_SECRET_ACCESS_KEY")]
        pub s3_secret_access_key: String = String::new(),
        /// A session token for temporary credentials.
        #[alias("AWS_SESSION_TOKEN")]
        pub s3_session_token: Option<String> = None,
        /// A key prefix inside the bucket (objects are `<prefix>/<version>`).
        pub s3_prefix: String = String::new(),
        /// Bytes per part of a multipart upload (5 MiB to 5 GiB; Supabase Storage's `STORAGE_S3_UPLOAD_PART_SIZE`).
        #[alias("STORAGE_S3_UPLOAD_PART_SIZE")]
        pub s3_upload_part_size: u64 = 8 * 1024 * 1024,
        /// Deadline of one S3 request other than a streamed download, in milliseconds.
        pub s3_request_timeout_ms: u64 = 60_000,
        /// `[storage.image_transformation]`: `/render/image` and signed URLs with `transform`.
        pub image_transformation: ImageTransformation = ImageTransformation::default(),
        /// Buckets the project declares, created or updated at start (the Supabase CLI's `[storage.buckets.<id>]` tables: `public`, `file_size_limit`, `allowed_mime_types`, `objects_path`); in the environment a JSON object of them.
        pub buckets: Buckets = Buckets::default(),
    }
}

/// One `[storage.buckets.<id>]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeclaredBucket {
    pub public: bool,
    /// With a unit (`"50MiB"`); at most the project's `file_size_limit`.
    pub file_size_limit: Option<String>,
    pub allowed_mime_types: Option<Vec<String>>,
    /// The Supabase CLI's local folder (or file) of objects uploaded into the bucket at start
    /// (`supabase seed buckets`), overwriting; in a project's `config.toml` relative to its
    /// `supabase/` directory, elsewhere to the working directory.
    pub objects_path: Option<String>,
}

/// The declared buckets by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct Buckets(pub std::collections::BTreeMap<String, DeclaredBucket>);

impl madbase_core::settings::Setting for Buckets {
    /// `{"avatars":{"public":true,"file_size_limit":"5MiB"}}` in the environment.
    const KIND: madbase_core::settings::Kind =
        madbase_core::settings::Kind::Value(|raw| madbase_core::settings::json_object_setting(raw, "buckets"));
}

section! {
    /// `[storage.image_transformation]`: Supabase's image transformations (the Supabase CLI's table).
    pub struct ImageTransformation {
        /// Serve `/storage/v1/render/image/…` (Supabase Storage's `ENABLE_IMAGE_TRANSFORMATION`).
        pub enabled: bool = true,
        /// Transforms running at once per shard (each on the blocking pool); more wait their turn.
        pub max_concurrent: usize = 2,
        /// Bytes of rendered images each shard keeps, keyed by object version and options.
        pub cache_bytes: u64 = 64 * 1024 * 1024,
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
        match self.backend.as_str() {
            "file" => {}
            "s3" if self.s3_bucket.is_empty() => {
                return Err("storage.s3_bucket is required with storage.backend = \"s3\"".to_owned())
            }
            "s3" => {}
            other => return Err(format!("storage.backend {other:?} is neither \"file\" nor \"s3\"")),
        }
        self.validate_buckets()?;
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

    /// Each declared bucket: a valid id, a size within the project's, valid MIME patterns.
    fn validate_buckets(&self) -> Result<(), String> {
        let project = self.file_size_limit_bytes();
        for (id, bucket) in &self.buckets.0 {
            crate::limits::check_bucket_name(id).map_err(|_| format!("storage.buckets.{id}: not a valid bucket id"))?;
            if let Some(limit) = &bucket.file_size_limit {
                match parse_config_size(limit) {
                    Some(n) if n <= project => {}
                    Some(_) => {
                        return Err(format!("storage.buckets.{id}.file_size_limit is above storage.file_size_limit"))
                    }
                    None => {
                        return Err(format!(
                            "storage.buckets.{id}.file_size_limit {limit:?} is not a size such as \"5MiB\""
                        ))
                    }
                }
            }
            let mimes = bucket.allowed_mime_types.as_ref().map(|m| serde_json::json!(m));
            crate::limits::mime_types(mimes.as_ref())
                .map_err(|e| format!("storage.buckets.{id}.allowed_mime_types: {}", e.message))?;
        }
        Ok(())
    }

    /// The S3 store's settings (`backend = "s3"`).
    pub fn s3(&self) -> crate::s3::S3Settings {
        crate::s3::S3Settings {
            bucket: self.s3_bucket.clone(),
            region: self.s3_region.clone(),
            endpoint: self.s3_endpoint.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            session_token: self.s3_session_token.clone(),
            force_path_style: self.s3_force_path_style,
            prefix: self.s3_prefix.clone(),
            part_size: usize::try_from(self.s3_upload_part_size).unwrap_or(usize::MAX),
            request_timeout: std::time::Duration::from_millis(self.s3_request_timeout_ms),
        }
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
    fn declared_buckets_come_from_the_environment_as_json_and_are_checked() {
        use madbase_core::settings::{Kind, Setting};
        let Kind::Value(from_env) = <Buckets as Setting>::KIND else { panic!("a value") };
        let value =
            from_env(r#"{"avatars":{"public":true,"file_size_limit":"5MiB","allowed_mime_types":["image/*"]}}"#)
                .unwrap()
                .unwrap();
        let buckets: Buckets = value.try_into().unwrap();
        let avatars = &buckets.0["avatars"];
        assert!(avatars.public);
        assert_eq!(avatars.file_size_limit.as_deref(), Some("5MiB"));
        assert!(from_env("[1,2]").unwrap().unwrap().try_into::<Buckets>().is_err());
        assert!(from_env("{nope").is_err());

        let mut storage = Storage { buckets: buckets.clone(), ..Storage::default() };
        assert!(storage.validate().is_ok());
        storage.buckets.0.get_mut("avatars").unwrap().file_size_limit = Some("1GB".into());
        assert!(storage.validate().unwrap_err().contains("above storage.file_size_limit"));
        storage.buckets.0.get_mut("avatars").unwrap().file_size_limit = None;
        storage.buckets.0.get_mut("avatars").unwrap().allowed_mime_types = Some(vec!["nope".into()]);
        assert!(storage.validate().unwrap_err().contains("allowed_mime_types"));
        let bad_id =
            Storage { buckets: Buckets([("a/b".to_owned(), DeclaredBucket::default())].into()), ..Storage::default() };
        assert!(bad_id.validate().is_err());
    }

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
