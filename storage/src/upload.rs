//! Uploads (reference/storage.md §4.1): `POST`/`PUT /object/{bucket}/{key}` and the signed upload
//! URL, with raw or `multipart/form-data` bodies, streamed to the object store.
//!
//! The order is Supabase Storage's: the bucket's limits (read past RLS) and the caller's right to
//! write the row (an INSERT — or upsert — tried as the caller and rolled back) in one round trip
//! before a byte is stored; then the body streams to a new blob under a fresh version; then one
//! transaction, under an advisory lock on the key, writes the row naming that version.
//!
//! Invariants: the row commits only after its blob is durable; a failed or cut upload removes its
//! blob (or temporary file) and leaves the previous version served; an overwrite swaps the row's
//! version in one statement and removes the old blob only after the commit; nothing beyond the
//! size limit is stored (`EntityTooLarge`); multipart fields before the file are bounded.

use base64::Engine;
use bytes::{Bytes, BytesMut};
use madbase_http::{Body, BodyError, Request, Response};
use madbase_pg::{Batch, Statement, TxEnd};
use serde_json::Value;

use crate::backend::Writer;
use crate::caller::Caller;
use crate::db::{caller_batch, text};
use crate::error::StorageError;
use crate::limits::mime_allowed;
use crate::multipart::{self, Event, Parser};
use crate::object::ObjectPath;
use crate::store::{new_version, Stored};
use crate::Inner;

/// Largest user metadata (`x-metadata` or the `metadata` field), as Supabase Storage.
const MAX_USER_METADATA_BYTES: usize = 1024 * 1024;
/// Largest text field of a multipart upload other than `metadata`.
const MAX_FIELD_BYTES: usize = 64 * 1024;

/// How an upload treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `POST` without `x-upsert: true`: an existing key is `KeyAlreadyExists`.
    Create,
    /// `POST` with `x-upsert: true`, and `PUT`: replaces.
    Upsert,
}

/// What an upload stored.
pub struct Uploaded {
    pub id: String,
}

/// The request's file: its bytes and what describes them.
struct Source {
    body: Body,
    multipart: Option<MultipartState>,
    mime: String,
    cache_control: String,
    user_metadata: Option<Value>,
}

struct MultipartState {
    parser: Parser,
    buf: BytesMut,
    /// The file part ended: the rest of the body is not the file's.
    done: bool,
}

/// Uploads the request's file to `path` as `caller` (the rows' RLS identity), owned by `owner`.
pub async fn upload(
    inner: &Inner,
    req: &Request,
    body: Body,
    caller: &Caller,
    owner: Option<&str>,
    path: &ObjectPath,
    mode: Mode,
) -> Result<Uploaded, StorageError> {
    let mut source = Source::read(req, body).await?;
    let (limits, permitted) = monoio::join!(
        bucket_limits(inner, &path.bucket),
        test_permission(inner, caller, owner, path, mode, Some(&source.mime), source.user_metadata.as_ref())
    );
    let limits = limits?;
    permitted?;
    let max = limits.max_size(inner, path);
    limits.check_mime(path, &source.mime)?;
    if source.multipart.is_none() && req.content_length().is_some_and(|n| n > max) {
        return Err(StorageError::entity_too_large());
    }
    let version = new_version();
    let _in_progress = inner.counters.upload_started();
    let mut writer = inner.backend.create(&version).await.map_err(io_error)?;
    stream_to(inner, &mut source, &mut writer, max).await?;
    let stored = writer.commit(&inner.backend, &version).await.map_err(io_error)?;
    let id = commit_object(inner, owner, path, mode, &source.described(), &version, &stored).await?;
    Ok(Uploaded { id })
}

/// What describes an object's bytes in its row: the parts of `storage.objects.metadata` the
/// upload chose, and its user metadata.
pub(crate) struct Described<'a> {
    pub mime: &'a str,
    pub cache_control: &'a str,
    pub user_metadata: Option<&'a Value>,
}

/// The last step of every upload (a request body, a finished resumable upload): writes the row
/// naming `version`'s durable blob, then removes the blob it replaced; when the row cannot be
/// written, removes the new blob instead. Returns the row's id.
pub(crate) async fn commit_object(
    inner: &Inner,
    owner: Option<&str>,
    path: &ObjectPath,
    mode: Mode,
    described: &Described<'_>,
    version: &str,
    stored: &Stored,
) -> Result<String, StorageError> {
    match commit_row(inner, owner, path, mode, described, version, stored).await {
        Ok((id, previous)) => {
            if let Some(previous) = previous.filter(|p| *p != version) {
                remove_blob(inner, &previous).await;
            }
            crate::metrics::add(&inner.counters.uploads, 1);
            Ok(id)
        }
        Err(e) => {
            remove_blob(inner, version).await;
            Err(e)
        }
    }
}

/// `{"Id","Key"}`: the answer of an upload.
pub fn uploaded_response(uploaded: &Uploaded, path: &ObjectPath) -> Response {
    Response::json(200, serde_json::json!({ "Id": uploaded.id, "Key": path.full() }).to_string())
}

/// Removes a blob no row names (any more); a failure leaves an orphan for the sweeper.
pub async fn remove_blob(inner: &Inner, version: &str) {
    if let Err(error) = inner.backend.remove(version).await {
        tracing::warn!(version, %error, "cannot remove a blob; the sweeper will");
    }
}

pub fn io_error(error: std::io::Error) -> StorageError {
    tracing::error!(%error, "object store");
    StorageError::internal()
}

pub(crate) struct BucketLimits {
    file_size_limit: Option<u64>,
    allowed_mime_types: Option<Vec<String>>,
}

impl BucketLimits {
    /// The largest object `path` may be: the bucket's limit capped by the project's; nothing
    /// for a folder placeholder.
    pub(crate) fn max_size(&self, inner: &Inner, path: &ObjectPath) -> u64 {
        match self.file_size_limit {
            _ if path.key.ends_with(".emptyFolderPlaceholder") => 0,
            Some(bucket) => bucket.min(inner.settings.file_size_limit_bytes()),
            None => inner.settings.file_size_limit_bytes(),
        }
    }

    /// `InvalidMimeType` unless the bucket takes `mime` (any type for a folder placeholder).
    pub(crate) fn check_mime(&self, path: &ObjectPath, mime: &str) -> Result<(), StorageError> {
        if let Some(allowed) = &self.allowed_mime_types {
            if !allowed.is_empty() && !path.key.ends_with(".emptyFolderPlaceholder") && !mime_allowed(mime, allowed) {
                return Err(StorageError::invalid_mime_type(mime));
            }
        }
        Ok(())
    }
}

/// The bucket's limits, read past its row level security (as Supabase Storage reads them).
pub(crate) async fn bucket_limits(inner: &Inner, bucket: &str) -> Result<BucketLimits, StorageError> {
    let sql =
        "select b.file_size_limit, array_to_json(b.allowed_mime_types)::text from storage.buckets b where b.id = $1";
    let batch = Batch::new().role("service_role").statement(Statement::new(sql).bind(text(bucket)));
    let mut results = inner.ctx.lanes.get(crate::LANE).execute(batch).await?;
    let result = results.pop().ok_or_else(StorageError::internal)?;
    let row = result.rows.first().ok_or_else(StorageError::no_such_bucket)?;
    Ok(BucketLimits {
        file_size_limit: row.get_str(0).and_then(|n| n.parse().ok()),
        allowed_mime_types: row.get_str(1).and_then(|json| serde_json::from_str(json).ok()),
    })
}

/// Whether `caller` may write the row of `path` (a signed upload URL is made only then): a
/// missing bucket is `NoSuchBucket`.
pub async fn can_upload(
    inner: &Inner,
    caller: &Caller,
    owner: Option<&str>,
    path: &ObjectPath,
    mode: Mode,
) -> Result<(), StorageError> {
    let (limits, permitted) = monoio::join!(
        bucket_limits(inner, &path.bucket),
        test_permission(inner, caller, owner, path, mode, None, None)
    );
    limits?;
    permitted
}

/// The row the upload will write, tried as the caller and rolled back: RLS refuses it here,
/// before any byte is stored. A missing bucket is left to [`bucket_limits`].
pub(crate) async fn test_permission(
    inner: &Inner,
    caller: &Caller,
    owner: Option<&str>,
    path: &ObjectPath,
    mode: Mode,
    mime: Option<&str>,
    user_metadata: Option<&Value>,
) -> Result<(), StorageError> {
    let metadata = serde_json::json!({ "mimetype": mime }).to_string();
    let statement = row_statement(mode, owner, path, "1", &metadata, user_metadata);
    let batch = caller_batch(caller).statement(statement).end(TxEnd::Rollback);
    match inner.ctx.lanes.get(crate::LANE).execute(batch).await {
        Ok(_) => Ok(()),
        Err(e) => match StorageError::from(e) {
            e if e.code == "InvalidRequest" && e.status == 404 => Ok(()),
            e => Err(object_conflict(e)),
        },
    }
}

/// A duplicate key on `storage.objects` is `KeyAlreadyExists`.
fn object_conflict(e: StorageError) -> StorageError {
    if e.code == "ResourceAlreadyExists" {
        StorageError::key_already_exists()
    } else {
        e
    }
}

/// The INSERT (or upsert) of an object row; `$7` is the metadata JSON.
fn row_statement(
    mode: Mode,
    owner: Option<&str>,
    path: &ObjectPath,
    version: &str,
    metadata: &str,
    user_metadata: Option<&Value>,
) -> Statement {
    let conflict = match mode {
        Mode::Create => "",
        Mode::Upsert => {
            " on conflict (bucket_id, name) do update set owner = excluded.owner, owner_id = excluded.owner_id, \
             version = excluded.version, metadata = excluded.metadata, user_metadata = excluded.user_metadata"
        }
    };
    let sql = format!(
        "insert into storage.objects as o (bucket_id, name, owner, owner_id, version, user_metadata, metadata) \
         values ($1, $2, $3::uuid, $4, $5, $6::jsonb, $7::jsonb){conflict} returning o.id"
    );
    Statement::new(sql)
        .bind(text(&path.bucket))
        .bind(text(&path.key))
        .bind_opt(owner.filter(|o| madbase_core::ids::is_uuid(o)).map(text))
        .bind_opt(owner.map(text))
        .bind(text(version))
        .bind_opt(user_metadata.map(|m| Bytes::from(m.to_string())))
        .bind(text(metadata))
}

/// Writes the row naming the new blob, as Supabase Storage completes an upload: past RLS (the
/// caller's right was tried before the bytes), under a lock on the key. Returns the row's id and
/// the version it replaced.
async fn commit_row(
    inner: &Inner,
    owner: Option<&str>,
    path: &ObjectPath,
    mode: Mode,
    described: &Described<'_>,
    version: &str,
    stored: &Stored,
) -> Result<(String, Option<String>), StorageError> {
    let metadata = system_metadata(described, stored);
    let lock = Statement::new("select pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))")
        .bind(text(&path.bucket))
        .bind(text(&path.key));
    let previous =
        Statement::new("select o.version from storage.objects o where o.bucket_id = $1 and o.name = $2 for update")
            .bind(text(&path.bucket))
            .bind(text(&path.key));
    // Supabase writes `{}` when the upload carried no user metadata.
    let empty = Value::Object(serde_json::Map::new());
    let write = row_statement(mode, owner, path, version, &metadata, Some(described.user_metadata.unwrap_or(&empty)));
    let batch = Batch::new().role("service_role").statement(lock).statement(previous).statement(write);
    let results = inner.ctx.lanes.get(crate::LANE).execute(batch).await.map_err(|e| object_conflict(e.into()))?;
    let [_, previous, written] = <[_; 3]>::try_from(results).map_err(|_| StorageError::internal())?;
    let id = written.scalar().ok_or_else(StorageError::internal)?.to_owned();
    let previous = previous.rows.first().and_then(|r| r.get_str(0)).map(str::to_owned);
    Ok((id, previous))
}

/// `storage.objects.metadata` as Supabase Storage writes it.
fn system_metadata(described: &Described<'_>, stored: &Stored) -> String {
    serde_json::json!({
        "eTag": stored.etag,
        "size": stored.size,
        "mimetype": described.mime,
        "cacheControl": described.cache_control,
        "lastModified": crate::object::js_now(),
        "contentLength": stored.size,
        "httpStatusCode": 200,
    })
    .to_string()
}

/// Streams the file to `writer`, refusing more than `max` bytes.
async fn stream_to(inner: &Inner, source: &mut Source, writer: &mut Writer, max: u64) -> Result<(), StorageError> {
    while let Some(chunk) = source.next_chunk().await? {
        if writer.written() + chunk.len() as u64 > max {
            return Err(StorageError::entity_too_large());
        }
        crate::metrics::add(&inner.counters.bytes_in, chunk.len() as u64);
        writer.write(chunk).await.map_err(io_error)?;
    }
    Ok(())
}

impl Source {
    fn described(&self) -> Described<'_> {
        Described { mime: &self.mime, cache_control: &self.cache_control, user_metadata: self.user_metadata.as_ref() }
    }

    /// The file's description: headers for a raw body; the fields before the file part of a
    /// multipart one.
    async fn read(req: &Request, body: Body) -> Result<Source, StorageError> {
        let content_type = req.header_str("content-type").unwrap_or("");
        if content_type.starts_with("multipart/form-data") {
            return Source::read_multipart(content_type, body).await;
        }
        let user_metadata = match req.header_str("x-metadata") {
            Some(encoded) => parse_user_metadata(encoded)?,
            None => None,
        };
        Ok(Source {
            body,
            multipart: None,
            mime: if content_type.is_empty() { "application/octet-stream".to_owned() } else { content_type.to_owned() },
            cache_control: req.header_str("cache-control").unwrap_or("no-cache").to_owned(),
            user_metadata,
        })
    }

    async fn read_multipart(content_type: &str, body: Body) -> Result<Source, StorageError> {
        let boundary = multipart::boundary(content_type).ok_or_else(no_content)?;
        let mut source = Source {
            body,
            multipart: Some(MultipartState { parser: Parser::new(&boundary), buf: BytesMut::new(), done: false }),
            mime: String::new(),
            cache_control: "no-cache".to_owned(),
            user_metadata: None,
        };
        let mut field: Option<(String, Vec<u8>)> = None;
        let mut content_type_field = None;
        loop {
            match source.next_event().await? {
                Event::Part(head) if head.filename.is_some() => {
                    source.mime = content_type_field
                        .filter(|t: &String| !t.is_empty())
                        .or(head.content_type)
                        .unwrap_or_else(|| "application/octet-stream".to_owned());
                    return Ok(source);
                }
                Event::Part(head) => field = Some((head.name, Vec::new())),
                Event::Data(data) => {
                    if let Some((name, value)) = field.as_mut() {
                        let max = if name == "metadata" || name == "userMetadata" {
                            MAX_USER_METADATA_BYTES
                        } else {
                            MAX_FIELD_BYTES
                        };
                        if value.len() + data.len() > max {
                            return Err(StorageError::entity_too_large_for("user_metadata"));
                        }
                        value.extend_from_slice(&data);
                    }
                }
                Event::PartEnd => {
                    if let Some((name, value)) = field.take() {
                        let value = String::from_utf8_lossy(&value).into_owned();
                        match name.as_str() {
                            "cacheControl" if !value.is_empty() => source.cache_control = format!("max-age={value}"),
                            "metadata" | "userMetadata" => source.user_metadata = serde_json::from_str(&value).ok(),
                            "contentType" => content_type_field = Some(value),
                            _ => {}
                        }
                    }
                }
                Event::End => return Err(no_content()),
            }
        }
    }

    /// The next multipart event, reading the body as needed.
    async fn next_event(&mut self) -> Result<Event, StorageError> {
        let state = self.multipart.as_mut().ok_or_else(StorageError::internal)?;
        loop {
            if let Some(event) = state.parser.parse(&mut state.buf).map_err(malformed)? {
                return Ok(event);
            }
            match self.body.chunk().await {
                Some(Ok(chunk)) => state.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(body_error(e)),
                None => {
                    state.parser.finish().map_err(malformed)?;
                    return Err(no_content());
                }
            }
        }
    }

    /// The next bytes of the file; `None` at its end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StorageError> {
        if self.multipart.is_none() {
            return match self.body.chunk().await {
                Some(Ok(chunk)) => Ok(Some(chunk)),
                Some(Err(e)) => Err(body_error(e)),
                None => Ok(None),
            };
        }
        if self.multipart.as_ref().is_some_and(|m| m.done) {
            return Ok(None);
        }
        match self.next_event().await? {
            Event::Data(data) => Ok(Some(data)),
            Event::PartEnd | Event::End => {
                if let Some(m) = self.multipart.as_mut() {
                    m.done = true;
                }
                Ok(None)
            }
            Event::Part(_) => Err(StorageError::internal()),
        }
    }
}

/// `x-metadata`: base64 of a JSON object; unreadable metadata is ignored, as Supabase does.
fn parse_user_metadata(encoded: &str) -> Result<Option<Value>, StorageError> {
    if encoded.len() > MAX_USER_METADATA_BYTES * 4 / 3 + 4 {
        return Err(StorageError::entity_too_large_for("user_metadata"));
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok();
    Ok(decoded.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// A multipart body that cannot be read: Supabase Storage answers "No content provided" for any.
fn malformed(error: multipart::MultipartError) -> StorageError {
    tracing::debug!(%error, "malformed multipart upload");
    no_content()
}

fn no_content() -> StorageError {
    StorageError::invalid_request("No content provided")
}

fn body_error(e: BodyError) -> StorageError {
    match e {
        BodyError::TooLarge { .. } => StorageError::entity_too_large(),
        other => {
            tracing::debug!(error = %other, "upload body ended early");
            no_content()
        }
    }
}
