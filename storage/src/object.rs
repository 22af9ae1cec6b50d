//! The object API besides uploads (reference/storage.md §4.2–4.4): download (authenticated,
//! public, and by signed token), `HEAD`, info, single and bulk delete, list (v1, over
//! `storage.search`) and list-v2, move and copy.
//!
//! Each route reads or writes the metadata in one statement as the caller (RLS decides, as on
//! Supabase), then touches the object store. Invariants: a download serves exactly the bytes of
//! the version its row named when it was read (blobs are immutable; a concurrent overwrite makes a
//! new one); a blob is removed only after the statement that dropped its row committed.

use bytes::Bytes;
use madbase_http::{Body, Request, Response};
use madbase_pg::{text_array_literal, Batch, Row, Statement};
use serde_json::{Map, Value};

use crate::backend::Blob;
use crate::caller::Caller;
use crate::db::{
    caller_batch, compact_json, escape_like, js_time, json_body, message, run, run_batch, run_delete, text,
};
use crate::error::StorageError;
use crate::limits::check_object_key;
use crate::metrics::Counted;
use crate::upload::{io_error, remove_blob};
use crate::Inner;

/// Most keys one bulk delete takes (Supabase's `MAX_OBJECTS_PER_REQUEST`).
pub const MAX_DELETE_KEYS: usize = 1000;

/// A bucket and an object key, percent-decoded from the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPath {
    pub bucket: String,
    pub key: String,
}

impl ObjectPath {
    /// `bucket` and `key` as they came in the URL; the key must be a valid object key.
    pub fn parse(bucket: &str, key: &str) -> Result<ObjectPath, StorageError> {
        let bucket = crate::decode(bucket)?;
        // Not UTF-8 once decoded: no key can be that.
        let key = crate::decode(key).map_err(|_| StorageError::invalid_key(key))?;
        check_object_key(&key)?;
        Ok(ObjectPath { bucket, key })
    }

    /// `<bucket>/<key>`: the `Key` of answers and the `url` of signed tokens.
    pub fn full(&self) -> String {
        format!("{}/{}", self.bucket, self.key)
    }
}

/// Now, as JavaScript's `Date#toISOString` prints it.
pub fn js_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (y, m, d) = madbase_http::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, now.subsec_millis())
}

/// How a download is authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// As the caller, under RLS.
    Caller,
    /// Anyone, when the bucket is public.
    Public,
    /// A verified signed-URL token for this very object.
    Signed,
}

/// What a download needs from the row.
pub(crate) struct Stored {
    pub(crate) version: Option<String>,
    pub(crate) mime: String,
    pub(crate) cache_control: String,
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
    last_modified_secs: Option<u64>,
    /// `metadata.size`, when the row records it.
    pub(crate) size: Option<u64>,
}

/// The row's fields a download answers with, rendered by PostgreSQL.
const DOWNLOAD_COLUMNS: &str = "o.version, coalesce(o.metadata->>'mimetype', 'application/octet-stream'), \
     coalesce(o.metadata->>'cacheControl', 'no-cache'), o.metadata->>'eTag', \
     to_char(lm at time zone 'UTC', 'Dy, DD Mon YYYY HH24:MI:SS \"GMT\"'), floor(extract(epoch from lm))::bigint, \
     case when o.metadata->>'size' ~ '^\\d{1,18}$' then o.metadata->>'size' end";

/// Runs a read as the caller, or past RLS for a public bucket or a verified signed token (whose
/// statement checks what that access needs).
async fn run_read(
    inner: &Inner,
    caller: Option<&Caller>,
    access: Access,
    statement: Statement,
) -> Result<madbase_pg::StatementResult, StorageError> {
    match (access, caller) {
        (Access::Caller, Some(caller)) => run(inner, caller, statement).await,
        (Access::Caller, None) => Err(StorageError::internal()),
        (Access::Public | Access::Signed, _) => run_batch(inner, Batch::new().role("service_role"), statement).await,
    }
}

pub(crate) async fn find_for_download(
    inner: &Inner,
    caller: Option<&Caller>,
    path: &ObjectPath,
    access: Access,
) -> Result<Stored, StorageError> {
    // A public download needs a public bucket (else `NoSuchBucket`) and the object (else
    // `NoSuchKey`): one row always comes back, its first column saying which.
    let bucket_ok = if access == Access::Public {
        "exists (select 1 from storage.buckets b where b.id = $1 and b.public)"
    } else {
        "true"
    };
    let sql = format!(
        "select p.ok, o.id, {DOWNLOAD_COLUMNS} from (select {bucket_ok} as ok) p \
         left join storage.objects o on p.ok and o.bucket_id = $1 and o.name = $2 \
         left join lateral (select coalesce(case when o.metadata->>'lastModified' ~ '^\\d{{4}}-' \
                  then (o.metadata->>'lastModified')::timestamptz end, o.updated_at) as lm) t on true"
    );
    let statement = Statement::new(sql).bind(text(&path.bucket)).bind(text(&path.key));
    let result = run_read(inner, caller, access, statement).await?;
    let row = result.rows.first().ok_or_else(StorageError::internal)?;
    if row.get_str(0) != Some("t") {
        return Err(StorageError::no_such_bucket());
    }
    if row.get(1).is_none() {
        return Err(StorageError::no_such_key());
    }
    Ok(Stored {
        version: row.get_str(2).map(str::to_owned),
        mime: row.get_str(3).unwrap_or("application/octet-stream").to_owned(),
        cache_control: row.get_str(4).unwrap_or("no-cache").to_owned(),
        etag: row.get_str(5).map(str::to_owned),
        last_modified: row.get_str(6).map(str::to_owned),
        last_modified_secs: row.get_str(7).and_then(|s| s.parse().ok()),
        size: row.get_str(8).and_then(|s| s.parse().ok()),
    })
}

/// `GET`/`HEAD` of an object: its bytes (or a `Range` of them: 206), `304` for a matching
/// `If-None-Match` or an unchanged `If-Modified-Since`, `download=` as an attachment.
pub async fn download(
    inner: &Inner,
    req: &Request,
    caller: Option<&Caller>,
    path: &ObjectPath,
    access: Access,
) -> Result<Response, StorageError> {
    let stored = find_for_download(inner, caller, path, access).await?;
    let Some(blob) = open_stored(inner, &stored).await? else { return Ok(resource_not_found()) };
    let size = blob.len();
    if not_modified(req, &stored) {
        let mut response = Response::new(304);
        add_cache_headers(&mut response, req, &stored);
        return Ok(response);
    }
    let range = match req.header_str("range") {
        Some(range) => Some(parse_range(range, size)?),
        None => None,
    };
    let (status, start, end) = match range {
        Some((start, end)) => (206, start, end + 1),
        None => (200, 0, size),
    };
    // For HEAD the server sends the length and never polls the stream.
    let mut response =
        Response::sized_stream(status, end - start, Counted::new(blob.stream(start, end), inner.counters.clone()));
    if !req.is_head() {
        crate::metrics::add(&inner.counters.downloads, 1);
    }
    response.set_header("accept-ranges", "bytes");
    response.set_header("content-type", stored.mime.clone());
    response.set_header("x-robots-tag", "none");
    add_cache_headers(&mut response, req, &stored);
    if status == 206 {
        response.set_header("content-range", format!("bytes {start}-{}/{size}", end - 1));
    }
    if let Some(name) = download_name(req) {
        response.set_header("content-disposition", content_disposition(&name));
    }
    Ok(response)
}

/// The blob a row names; `None` when its bytes are not there (a row written by SQL alone).
pub(crate) async fn open_stored(inner: &Inner, stored: &Stored) -> Result<Option<Blob>, StorageError> {
    let Some(version) = stored.version.as_deref().filter(|v| crate::store::is_version(v)) else {
        return Ok(None);
    };
    match inner.backend.open_blob(version, stored.size).await {
        Ok(blob) => Ok(Some(blob)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(e)),
    }
}

/// Supabase's answer when the row exists but its bytes do not.
pub(crate) fn resource_not_found() -> Response {
    Response::json(
        400,
        r#"{"error":"Not found","message":"The resource was not found","statusCode":"404","code":"NoSuchKey"}"#,
    )
    .header("cache-control", "no-store")
}

fn add_cache_headers(response: &mut Response, req: &Request, stored: &Stored) {
    if let Some(etag) = &stored.etag {
        response.set_header("etag", etag.clone());
    }
    if let Some(modified) = &stored.last_modified {
        response.set_header("last-modified", modified.clone());
    }
    let mut cache_control = stored.cache_control.clone();
    if let Some(sent) = req.header_str("if-none-match") {
        if Some(sent) != stored.etag.as_deref() {
            cache_control.push_str(", stale-while-revalidate=30");
        }
    }
    if !cache_control.is_empty() {
        response.set_header("cache-control", cache_control);
    }
}

fn not_modified(req: &Request, stored: &Stored) -> bool {
    if let (Some(sent), Some(etag)) = (req.header_str("if-none-match"), stored.etag.as_deref()) {
        if sent == etag {
            return true;
        }
    }
    match (req.header_str("if-modified-since").and_then(parse_http_date), stored.last_modified_secs) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` → the inclusive range, as Supabase Storage reads it.
fn parse_range(range: &str, size: u64) -> Result<(u64, u64), StorageError> {
    let spec = range.strip_prefix("bytes=").ok_or_else(StorageError::invalid_range)?;
    let (from, to) = spec.split_once('-').ok_or_else(StorageError::invalid_range)?;
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if size == 0 || !digits(from) || !digits(to) || (from.is_empty() && to.is_empty()) {
        return Err(StorageError::invalid_range());
    }
    if from.is_empty() {
        let suffix: u64 = to.parse().map_err(|_| StorageError::invalid_range())?;
        if suffix == 0 {
            return Err(StorageError::invalid_range());
        }
        return Ok((size.saturating_sub(suffix), size - 1));
    }
    let start: u64 = from.parse().map_err(|_| StorageError::invalid_range())?;
    let end: u64 = if to.is_empty() { size - 1 } else { to.parse().map_err(|_| StorageError::invalid_range())? };
    if start >= size || end < start {
        return Err(StorageError::invalid_range());
    }
    Ok((start, end.min(size - 1)))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) as seconds since the epoch.
fn parse_http_date(date: &str) -> Option<u64> {
    let mut parts = date.split_whitespace().skip(1);
    let day: u32 = parts.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| Some(*m) == parts.clone().next())? as u32 + 1;
    parts.next();
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next() != Some("GMT") || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = madbase_http::days_from_civil(year, month, day);
    u64::try_from(days).ok().map(|d| d * 86_400 + h * 3600 + m * 60 + s)
}

/// `?download` (empty: no file name) or `?download=<name>`.
pub(crate) fn download_name(req: &Request) -> Option<String> {
    req.query_pairs().into_iter().find(|(k, _)| k == "download").map(|(_, v)| v)
}

pub(crate) fn content_disposition(name: &str) -> String {
    if name.is_empty() {
        return "attachment;".to_owned();
    }
    let encoded = encode_uri_component(name);
    format!("attachment; filename={encoded}; filename*=UTF-8''{encoded}")
}

/// JavaScript's `encodeURIComponent`.
pub fn encode_uri_component(s: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'!')
        .remove(b'~')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')');
    percent_encoding::utf8_percent_encode(s, KEEP).to_string()
}

/// `GET /object/info/{bucket}/{key}`: the object's description, as the caller (or past RLS for
/// a public bucket).
pub async fn info(
    inner: &Inner,
    caller: Option<&Caller>,
    path: &ObjectPath,
    access: Access,
) -> Result<Response, StorageError> {
    let public = if access == Access::Public {
        " and exists (select 1 from storage.buckets b where b.id = o.bucket_id and b.public)"
    } else {
        ""
    };
    let sql = format!(
        "select json_build_object('id', o.id, 'name', o.name, 'version', o.version, 'bucket_id', o.bucket_id, \
         'size', (o.metadata->>'size')::bigint, 'content_type', o.metadata->>'mimetype', \
         'cache_control', o.metadata->>'cacheControl', 'etag', o.metadata->>'eTag', 'metadata', o.user_metadata, \
         'last_modified', {}, 'created_at', {})::text, o.metadata->>'eTag', o.metadata->>'cacheControl' \
         from storage.objects o where o.bucket_id = $1 and o.name = $2{public}",
        js_time!("o.updated_at"),
        js_time!("o.created_at")
    );
    let statement = Statement::new(sql).bind(text(&path.bucket)).bind(text(&path.key));
    let result = run_read(inner, caller, access, statement).await?;
    let row = result.rows.first().ok_or_else(StorageError::no_such_key)?;
    let mut response = Response::json(200, compact_json(row.get_str(0).unwrap_or("null")));
    if let Some(etag) = row.get_str(1) {
        response.set_header("etag", etag.to_owned());
    }
    if let Some(cache) = row.get_str(2) {
        response.set_header("cache-control", cache.to_owned());
    }
    Ok(response)
}

/// `DELETE /object/{bucket}/{key}`: as the caller (SELECT and DELETE policies decide).
pub async fn delete_one(inner: &Inner, caller: &Caller, path: &ObjectPath) -> Result<Response, StorageError> {
    let sql = "delete from storage.objects o where o.bucket_id = $1 and o.name = $2 returning o.version";
    let result = run_delete(inner, caller, Statement::new(sql).bind(text(&path.bucket)).bind(text(&path.key))).await?;
    let Some(row) = result.rows.first() else { return Err(StorageError::no_such_key()) };
    if let Some(version) = row.get_str(0).filter(|v| crate::store::is_version(v)) {
        remove_blob(inner, version).await;
    }
    Ok(message("Successfully deleted"))
}

/// `DELETE /object/{bucket}` `{"prefixes": [...]}`: the rows deleted (those the caller may see
/// and delete), Supabase's object JSON each.
pub async fn delete_many(
    inner: &Inner,
    req: &Request,
    body: Body,
    caller: &Caller,
    bucket: &str,
) -> Result<Response, StorageError> {
    let body = json_body(req, body, false).await?;
    let Some(prefixes) = body.get("prefixes") else {
        return Err(StorageError::validation("body must have required property 'prefixes'"));
    };
    let Some(prefixes) = prefixes.as_array() else {
        return Err(StorageError::validation("body/prefixes must be array"));
    };
    if prefixes.is_empty() {
        return Err(StorageError::validation("body/prefixes must NOT have fewer than 1 items"));
    }
    if prefixes.len() > MAX_DELETE_KEYS {
        return Err(StorageError::validation(format!("body/prefixes must NOT have more than {MAX_DELETE_KEYS} items")));
    }
    let names: Option<Vec<&str>> = prefixes.iter().map(Value::as_str).collect();
    let Some(names) = names else { return Err(StorageError::validation("body/prefixes/0 must be string")) };
    let sql = format!(
        "with gone as (delete from storage.objects o where o.bucket_id = $1 and o.name = any($2::text[]) returning o.*) \
         select coalesce(json_agg(json_build_object('bucket_id', g.bucket_id, 'name', g.name, 'owner', g.owner, \
         'owner_id', g.owner_id, 'id', g.id, 'updated_at', {}, 'created_at', {}, 'last_accessed_at', {}, \
         'metadata', g.metadata, 'user_metadata', g.user_metadata, 'version', g.version)), '[]')::text, \
         array_to_json(array_agg(g.version))::text from gone g",
        js_time!("g.updated_at"),
        js_time!("g.created_at"),
        js_time!("g.last_accessed_at")
    );
    let names = Bytes::from(text_array_literal(names.iter().copied()));
    let result = run_delete(inner, caller, Statement::new(sql).bind(text(bucket)).bind(names)).await?;
    let row = result.rows.first().ok_or_else(StorageError::internal)?;
    let versions: Vec<Option<String>> = row.get_str(1).and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default();
    for version in versions.iter().flatten().filter(|v| crate::store::is_version(v)) {
        remove_blob(inner, version).await;
    }
    Ok(Response::json(200, compact_json(row.get_str(0).unwrap_or("[]"))))
}

/// A string field of a JSON body, required.
pub fn required_string<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, StorageError> {
    match body.get(key) {
        None => Err(StorageError::validation(format!("body must have required property '{key}'"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(StorageError::validation(format!("body/{key} must be string"))),
    }
}

/// `POST /object/move` `{bucketId, sourceKey, destinationKey, destinationBucket?}`: the row is
/// renamed as the caller (SELECT and UPDATE decide); the bytes stay where they are (a blob is
/// named by its version, not its key).
pub async fn move_object(inner: &Inner, req: &Request, body: Body, caller: &Caller) -> Result<Response, StorageError> {
    let body = json_body(req, body, false).await?;
    let bucket = required_string(&body, "bucketId")?;
    let source = ObjectPath { bucket: bucket.to_owned(), key: required_string(&body, "sourceKey")?.to_owned() };
    let destination_bucket = body.get("destinationBucket").and_then(Value::as_str).unwrap_or(bucket);
    let destination =
        ObjectPath { bucket: destination_bucket.to_owned(), key: required_string(&body, "destinationKey")?.to_owned() };
    check_object_key(&source.key)?;
    check_object_key(&destination.key)?;
    let sql = "update storage.objects o set bucket_id = $3, name = $4, owner = $5::uuid, owner_id = $6, \
               last_accessed_at = now() where o.bucket_id = $1 and o.name = $2 returning o.id";
    let statement = Statement::new(sql)
        .bind(text(&source.bucket))
        .bind(text(&source.key))
        .bind(text(&destination.bucket))
        .bind(text(&destination.key))
        .bind_opt(caller.owner_uuid().map(text))
        .bind_opt(caller.sub.as_deref().map(text));
    let result = run(inner, caller, statement).await.map_err(move_conflict)?;
    if result.rows.is_empty() {
        return Err(StorageError::no_such_key());
    }
    Ok(message("Successfully moved"))
}

fn move_conflict(e: StorageError) -> StorageError {
    match e.code {
        "ResourceAlreadyExists" => StorageError::key_already_exists(),
        // The destination bucket does not exist.
        "InvalidRequest" if e.status == 404 => StorageError::no_such_bucket(),
        _ => e,
    }
}

/// `POST /object/copy` `{bucketId, sourceKey, destinationKey, destinationBucket?, copyMetadata?,
/// metadata?}` → `{"Id","Key"}`: a new row as the caller (SELECT on the source, INSERT of the
/// copy decide) naming a new version that shares the source's bytes.
pub async fn copy_object(inner: &Inner, req: &Request, body: Body, caller: &Caller) -> Result<Response, StorageError> {
    let body = json_body(req, body, false).await?;
    let bucket = required_string(&body, "bucketId")?;
    let source = ObjectPath { bucket: bucket.to_owned(), key: required_string(&body, "sourceKey")?.to_owned() };
    let destination_bucket = body.get("destinationBucket").and_then(Value::as_str).unwrap_or(bucket);
    let destination =
        ObjectPath { bucket: destination_bucket.to_owned(), key: required_string(&body, "destinationKey")?.to_owned() };
    check_object_key(&source.key)?;
    check_object_key(&destination.key)?;
    let copy_metadata = body.get("copyMetadata").and_then(Value::as_bool).unwrap_or(true);
    let user_metadata = body.get("metadata").filter(|m| m.is_object()).map(Value::to_string);
    let upsert = req.header_str("x-upsert") == Some("true");
    let source_row = run(
        inner,
        caller,
        Statement::new("select o.version from storage.objects o where o.bucket_id = $1 and o.name = $2")
            .bind(text(&source.bucket))
            .bind(text(&source.key)),
    )
    .await?;
    let Some(source_version) = source_row.rows.first().and_then(|r| r.get_str(0)).map(str::to_owned) else {
        return Err(StorageError::no_such_key());
    };
    let version = crate::store::new_version();
    if crate::store::is_version(&source_version) {
        inner.backend.link(&source_version, &version).await.map_err(io_error)?;
    }
    let conflict = if upsert {
        " on conflict (bucket_id, name) do update set owner = excluded.owner, owner_id = excluded.owner_id, \
          version = excluded.version, metadata = excluded.metadata, user_metadata = excluded.user_metadata"
    } else {
        ""
    };
    let sql = format!(
        "with src as (select * from storage.objects s where s.bucket_id = $1 and s.name = $2), \
         prev as (select d.version from storage.objects d where d.bucket_id = $3 and d.name = $4) \
         insert into storage.objects as o (bucket_id, name, owner, owner_id, version, metadata, user_metadata) \
         select $3, $4, $5::uuid, $6, $7, jsonb_set(coalesce(src.metadata, '{{}}'), '{{lastModified}}', to_jsonb($10::text)), \
         case when $8::boolean then coalesce($9::jsonb, src.user_metadata) else $9::jsonb end from src{conflict} \
         returning o.id, (select version from prev)"
    );
    let statement = Statement::new(sql)
        .bind(text(&source.bucket))
        .bind(text(&source.key))
        .bind(text(&destination.bucket))
        .bind(text(&destination.key))
        .bind_opt(caller.owner_uuid().map(text))
        .bind_opt(caller.sub.as_deref().map(text))
        .bind(text(&version))
        .bind(text(if copy_metadata { "true" } else { "false" }))
        .bind_opt(user_metadata.map(Bytes::from))
        .bind(text(&js_now()));
    let result = match run_batch(inner, caller_batch(caller), statement).await {
        Ok(result) => result,
        Err(e) => {
            remove_blob(inner, &version).await;
            return Err(move_conflict(e));
        }
    };
    let Some(row) = result.rows.first() else {
        remove_blob(inner, &version).await;
        return Err(StorageError::no_such_key());
    };
    if let Some(previous) = row.get_str(1).filter(|v| crate::store::is_version(v)) {
        remove_blob(inner, previous).await;
    }
    let id = row.get_str(0).unwrap_or_default();
    Ok(Response::json(200, serde_json::json!({ "Id": id, "Key": destination.full() }).to_string()))
}

/// `POST /object/list/{bucket}` `{prefix, limit?, offset?, sortBy?, search?}`: one folder level
/// through `storage.search`, as the caller.
pub async fn list(
    inner: &Inner,
    req: &Request,
    body: Body,
    caller: &Caller,
    bucket: &str,
) -> Result<Response, StorageError> {
    let body = json_body(req, body, false).await?;
    let mut prefix = required_string(&body, "prefix")?.to_owned();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    let limit = optional_integer(&body, "limit", 1)?.unwrap_or(100);
    let offset = optional_integer(&body, "offset", 0)?.unwrap_or(0);
    let search = match body.get("search") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(StorageError::validation("body/search must be string")),
    };
    let (column, order) = sort_by(&body, &["name", "updated_at", "created_at", "last_accessed_at"])?;
    // Supabase escapes LIKE patterns unless sorting by name (where the function matches with ilike).
    let (prefix, search) =
        if column == "name" { (prefix, search) } else { (escape_like(&prefix), escape_like(&search)) };
    let levels = format!("{prefix}{search}").split('/').count();
    let sql = format!(
        "select coalesce(json_agg(json_build_object('name', s.name, 'id', s.id, 'updated_at', {}, \
         'created_at', {}, 'last_accessed_at', {}, 'metadata', s.metadata)), '[]')::text \
         from storage.search($1, $2, $3::int, $4::int, $5::int, $6, $7, $8) s",
        js_time!("s.updated_at"),
        js_time!("s.created_at"),
        js_time!("s.last_accessed_at")
    );
    let statement = Statement::new(sql)
        .bind(text(&prefix))
        .bind(text(bucket))
        .bind(text(&limit.min(i32::MAX as u64).to_string()))
        .bind(text(&levels.to_string()))
        .bind(text(&offset.min(i32::MAX as u64).to_string()))
        .bind(text(&search))
        .bind(text(column))
        .bind(text(order));
    let result = run(inner, caller, statement).await?;
    Ok(Response::json(200, compact_json(result.scalar().unwrap_or("[]"))))
}

fn optional_integer(body: &Map<String, Value>, key: &str, minimum: u64) -> Result<Option<u64>, StorageError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= minimum => Ok(Some(n)),
            Some(_) => Err(StorageError::validation(format!("body/{key} must be >= {minimum}"))),
            None => Err(StorageError::validation(format!("body/{key} must be integer"))),
        },
    }
}

/// `sortBy: {column, order}`, the column one of `columns` (from this fixed list, never the
/// request's text), the order `asc` or `desc`.
fn sort_by(body: &Map<String, Value>, columns: &[&'static str]) -> Result<(&'static str, &'static str), StorageError> {
    let Some(sort) = body.get("sortBy").filter(|v| !v.is_null()) else { return Ok(("name", "asc")) };
    let Some(sort) = sort.as_object() else { return Err(StorageError::validation("body/sortBy must be object")) };
    let column = match sort.get("column").and_then(Value::as_str) {
        None => "name",
        Some(c) => *columns
            .iter()
            .find(|k| **k == c)
            .ok_or_else(|| StorageError::validation("body/sortBy/column must be equal to one of the allowed values"))?,
    };
    let order = match sort.get("order").and_then(Value::as_str) {
        None | Some("asc") => "asc",
        Some("desc") => "desc",
        Some(_) => {
            return Err(StorageError::validation("body/sortBy/order must be equal to one of the allowed values"))
        }
    };
    Ok((column, order))
}

/// `POST /object/list-v2/{bucket}` `{prefix?, limit?, cursor?, with_delimiter?, sortBy?}` →
/// `{hasNext, nextCursor?, folders, objects}`, S3-like paging with an opaque cursor.
pub async fn list_v2(
    inner: &Inner,
    req: &Request,
    body: Body,
    caller: &Caller,
    bucket: &str,
) -> Result<Response, StorageError> {
    let body = json_body(req, body, true).await?;
    let prefix = match body.get("prefix") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(StorageError::validation("body/prefix must be string")),
    };
    let limit = optional_integer(&body, "limit", 1)?.unwrap_or(1000).min(1000);
    let delimited = body.get("with_delimiter").and_then(Value::as_bool).unwrap_or(false);
    let cursor = match body.get("cursor").and_then(Value::as_str) {
        Some(c) if !c.is_empty() => Some(Cursor::decode(c)?),
        _ => None,
    };
    let (column, order) = sort_by(&body, &["name", "updated_at", "created_at"])?;
    let column = cursor.as_ref().and_then(|c| c.column).unwrap_or(column);
    let order = cursor.as_ref().and_then(|c| c.order).unwrap_or(order);
    let after = cursor.as_ref().map(|c| c.start_after.clone()).unwrap_or_default();
    let column_after = cursor.as_ref().and_then(|c| c.column_after.clone());
    let rows = if delimited {
        let levels = if prefix.is_empty() { 1 } else { prefix.split('/').count() };
        let sql = format!(
            "select s.id is null, s.name, {}, json_build_object('key', s.key, \
             'name', case when s.id is null and right(s.name, 1) <> '/' then s.name || '/' else s.name end, 'id', s.id, \
             'updated_at', {}, 'created_at', {}, 'last_accessed_at', {}, 'metadata', s.metadata)::text \
             from storage.search_v2($1, $2, $3::int, $4::int, $5, $6, $7, $8) s",
            sort_value(column, "s"),
            js_time!("s.updated_at"),
            js_time!("s.created_at"),
            js_time!("s.last_accessed_at")
        );
        Statement::new(sql)
            .bind(text(&prefix))
            .bind(text(bucket))
            .bind(text(&(limit + 1).to_string()))
            .bind(text(&levels.to_string()))
            .bind(text(&after))
            .bind(text(order))
            .bind(text(column))
            .bind(text(column_after.as_deref().unwrap_or("")))
    } else {
        undelimited_statement(
            bucket,
            &prefix,
            limit + 1,
            column,
            order,
            cursor.is_some().then_some(&after),
            column_after.as_deref(),
        )
    };
    let result = run(inner, caller, rows).await?;
    Ok(Response::json(200, v2_page(&result.rows, limit as usize, column, order)))
}

/// Objects (no folders) under `prefix`, ordered by `column` then name, after the cursor.
fn undelimited_statement(
    bucket: &str,
    prefix: &str,
    limit: u64,
    column: &str,
    order: &str,
    after: Option<&String>,
    column_after: Option<&str>,
) -> Statement {
    let op = if order == "asc" { ">" } else { "<" };
    let page = match (after, column_after) {
        (Some(_), Some(_)) if column != "name" => format!(
            " and row(date_trunc('milliseconds', o.{column}), o.name collate \"C\") {op} \
             row(coalesce(nullif($5, '')::timestamptz, 'epoch'::timestamptz), $4)"
        ),
        (Some(_), _) => format!(" and o.name collate \"C\" {op} $4"),
        _ => String::new(),
    };
    let order_by = if column == "name" { String::new() } else { format!("o.{column} {order}, ") };
    let sql = format!(
        "select false, o.name, {}, json_build_object('id', o.id, 'name', o.name, \
         'metadata', o.metadata, 'updated_at', {}, 'created_at', {}, 'last_accessed_at', {})::text \
         from storage.objects o where o.bucket_id = $1 and o.name like $2{page} \
         order by {order_by}o.name collate \"C\" {order} limit $3::bigint",
        sort_value(column, "o"),
        js_time!("o.updated_at"),
        js_time!("o.created_at"),
        js_time!("o.last_accessed_at")
    );
    let statement = Statement::new(sql)
        .bind(text(bucket))
        .bind(text(&format!("{}%", escape_like(prefix))))
        .bind(text(&limit.to_string()));
    // Exactly the parameters the page condition names.
    match (after, column_after) {
        (Some(after), Some(value)) if column != "name" => statement.bind(text(after)).bind(text(value)),
        (Some(after), _) => statement.bind(text(after)),
        _ => statement,
    }
}

/// The value of the sort column a cursor resumes after (`''` when sorting by name).
fn sort_value(column: &str, alias: &str) -> String {
    match column {
        "created_at" => js_time_of(alias, "created_at"),
        "updated_at" => js_time_of(alias, "updated_at"),
        _ => "''".to_owned(),
    }
}

fn js_time_of(alias: &str, column: &str) -> String {
    format!("to_char({alias}.{column} at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

/// The page from rows `(is folder, name, sort value, JSON)`: folders and objects (each row's JSON
/// as PostgreSQL wrote it, compacted), and the next cursor when there is more, as Supabase
/// Storage pages.
fn v2_page(rows: &[Row], limit: usize, column: &'static str, order: &'static str) -> Bytes {
    let has_next = rows.len() > limit;
    let rows = &rows[..rows.len().min(limit)];
    let mut folders = Vec::new();
    let mut objects = Vec::new();
    for row in rows {
        let target = if row.get_str(0) == Some("t") { &mut folders } else { &mut objects };
        if !target.is_empty() {
            target.push(b',');
        }
        target.extend_from_slice(&compact_json(row.get_str(3).unwrap_or("null")));
    }
    let mut page = format!("{{\"hasNext\":{has_next}");
    if has_next {
        let last = rows.last();
        let cursor = Cursor {
            start_after: last.and_then(|r| r.get_str(1)).unwrap_or("").to_owned(),
            order: Some(order),
            column: Some(column),
            column_after: last.and_then(|r| r.get_str(2)).filter(|v| !v.is_empty()).map(str::to_owned),
        };
        page.push_str(&format!(",\"nextCursor\":{}", Value::String(cursor.encode())));
    }
    let mut out = page.into_bytes();
    out.extend_from_slice(b",\"folders\":[");
    out.extend_from_slice(&folders);
    out.extend_from_slice(b"],\"objects\":[");
    out.extend_from_slice(&objects);
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// list-v2's continuation token: base64 of `l:<start after>\no:<order>\nc:<column>\na:<column value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    start_after: String,
    order: Option<&'static str>,
    column: Option<&'static str>,
    column_after: Option<String>,
}

impl Cursor {
    fn encode(&self) -> String {
        use base64::Engine;
        let mut text = format!("l:{}", self.start_after);
        for (k, v) in [("o", self.order), ("c", self.column), ("a", self.column_after.as_deref())] {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                text.push_str(&format!("\n{k}:{v}"));
            }
        }
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn decode(token: &str) -> Result<Cursor, StorageError> {
        use base64::Engine;
        let invalid = || StorageError::invalid_parameter("continuation token");
        let bytes = base64::engine::general_purpose::STANDARD.decode(token).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut cursor = Cursor { start_after: String::new(), order: None, column: None, column_after: None };
        for part in text.split('\n') {
            let (k, v) = part.split_once(':').ok_or_else(invalid)?;
            match k {
                "l" => cursor.start_after = v.to_owned(),
                "o" => cursor.order = Some(if v == "desc" { "desc" } else { "asc" }),
                "c" => {
                    cursor.column = Some(match v {
                        "created_at" => "created_at",
                        "updated_at" => "updated_at",
                        _ => "name",
                    })
                }
                "a" => cursor.column_after = Some(v.to_owned()),
                _ => return Err(invalid()),
            }
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_supabase_reads_them() {
        assert_eq!(parse_range("bytes=0-4", 10), Ok((0, 4)));
        assert_eq!(parse_range("bytes=5-", 10), Ok((5, 9)));
        assert_eq!(parse_range("bytes=-3", 10), Ok((7, 9)));
        assert_eq!(parse_range("bytes=-30", 10), Ok((0, 9)));
        assert_eq!(parse_range("bytes=2-100", 10), Ok((2, 9)));
        for bad in ["bytes=10-", "bytes=5-2", "bytes=-", "bytes=-0", "items=0-1", "bytes=a-b", "bytes=0-1,3-4"] {
            assert_eq!(parse_range(bad, 10).unwrap_err().code, "InvalidRange", "{bad}");
        }
        assert!(parse_range("bytes=0-0", 0).is_err());
    }

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
    }

    #[test]
    fn dispositions_encode_as_javascript() {
        assert_eq!(content_disposition(""), "attachment;");
        assert_eq!(content_disposition("a b.txt"), "attachment; filename=a%20b.txt; filename*=UTF-8''a%20b.txt");
        assert_eq!(encode_uri_component("é(1)!"), "%C3%A9(1)!");
    }

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor {
            start_after: "folder/a.txt".into(),
            order: Some("desc"),
            column: Some("created_at"),
            column_after: Some("2021-02-17T04:43:32.770Z".into()),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        assert_eq!(Cursor::decode("bm9wZQ==").unwrap_err().code, "InvalidParameter");
    }
}
