//! Buckets declared in the configuration (`[storage.buckets.<id>]`, the Supabase CLI's tables):
//! created, or brought to their declared settings, at start — as `supabase start` does — so a
//! project's buckets exist before the first request.
//!
//! Invariants: one batch (one transaction) for all of them, run by the start-up connection after
//! the migrations; a bucket's objects and owner are never touched, only `public`,
//! `file_size_limit` and `allowed_mime_types`; the values were validated with the settings. The
//! files of an `objects_path` are uploaded later, through the API once the shards listen (the
//! binary's `seed_objects`).

use bytes::Bytes;
use madbase_pg::{Batch, Statement};

use crate::bucket::mime_array;
use crate::db::text;
use crate::settings::{parse_config_size, Storage};

/// The batch that creates or updates the declared buckets; `None` when there are none.
pub fn batch(settings: &Storage) -> Option<Batch> {
    if !settings.enabled || settings.buckets.0.is_empty() {
        return None;
    }
    let sql = format!(
        "insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types) \
         values ($2, $2, $3::boolean, $4::bigint, {}) \
         on conflict (id) do update set public = excluded.public, file_size_limit = excluded.file_size_limit, \
         allowed_mime_types = excluded.allowed_mime_types",
        mime_array(1)
    );
    let mut batch = Batch::new();
    for (id, bucket) in &settings.buckets.0 {
        let limit = bucket.file_size_limit.as_deref().and_then(parse_config_size);
        let mimes = bucket.allowed_mime_types.as_ref().map(|m| Bytes::from(serde_json::json!(m).to_string()));
        batch = batch.statement(
            Statement::new(sql.clone())
                .bind_opt(mimes)
                .bind(text(id))
                .bind(text(if bucket.public { "true" } else { "false" }))
                .bind_opt(limit.map(|n| text(&n.to_string()))),
        );
    }
    Some(batch)
}
