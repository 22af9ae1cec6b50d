//! Resumable uploads: TUS 1.0.0 at `/storage/v1/upload/resumable` (reference/storage.md §8), as
//! Supabase Storage serves them to `tus-js-client` — creation (`POST`, with or without the
//! first bytes), `PATCH` at the upload's offset, `HEAD` to resume, `DELETE` to terminate,
//! `OPTIONS` discovery — and the signed variant under `/upload/resumable/sign` (`x-signature`:
//! a token of `createSignedUploadUrl`).
//!
//! Owns: the routes (this file), the header parsers (`headers.rs`) and the files of uploads in
//! progress (`state.rs`, under `<store root>/uploads/<version>/`), and their expiry. An upload's
//! URL names `<bucket>/<key>/<version>` (base64url); the version is generated at creation and
//! becomes the object's version, so the finished bytes become the object's blob by a hard link
//! with the file-system backend (never copied; streamed up once with S3) and commit through
//! `upload::commit_object`, the same transaction a one-request upload ends with.
//!
//! Invariants:
//! - Authorisation is a normal upload's: creation tries the row as the caller (RLS INSERT; with
//!   upsert also SELECT and UPDATE), checks the bucket's size limit against `Upload-Length` and
//!   its MIME types before anything is stored; every later request must come with the same
//!   credentials (the same role and `sub`, or a signed token for the same object) and a `PATCH`
//!   tries the row again, as Supabase Storage does.
//! - The object is visible only when complete: its row commits after the last byte is durable.
//!   Until then downloads and listings do not see it. Two uploads of one key: the first to
//!   finish commits; the other meets `KeyAlreadyExists` (409) unless it upserts.
//! - Every offset a client is told is durable (`fdatasync` first); bytes that arrived before a
//!   cut are kept, so the client resumes after them; nothing past `Upload-Length` is written.
//! - The checksum extension (`checksum.rs`): a request with `Upload-Checksum` adds its bytes
//!   only when all of them arrived and match (else 460, or the cut's error, with the offset
//!   unchanged); until verified they are not counted, even across a crash (`state.rs`).
//! - A `HEAD` never reports a full offset for an object that is not committed: an upload whose
//!   bytes are all there but whose commit failed or was cut by a crash is finished first.
//! - One request changes an upload at a time. The lock is `flock(2)` on the upload's directory,
//!   taken without waiting (busy → 409, 423 for `HEAD`, which `tus-js-client` retries). Why not
//!   a lock in the shard: requests for one upload land on any shard. Why not a PostgreSQL
//!   advisory lock: a session lock must be held for a whole `PATCH` (minutes for a slow 6 MiB
//!   chunk) on a connection of its own, and Storage's lane connections are shared and
//!   pipelined — a session lock there is re-entrant for every request on that connection and
//!   would need a statement to release on every cancellation path; a transaction lock cannot
//!   outlive one batch. `flock` is free, works across the shards (each request opens its own
//!   descriptor) and across processes sharing the store, is released when the request's future
//!   is dropped or the process dies (no stale locks after a crash, unlike an `O_EXCL` file),
//!   and the file-system store is one node's disk, so no other node can write the upload.
//! - Limits: an upload untouched for `[storage] tus_url_expiry_ms` is gone (404, and removed by
//!   [`expire_forever`]); at most `tus_max_concurrent_uploads` requests write bytes at once in
//!   the process (503 beyond); a request's body may not pass the upload's length (413) nor the
//!   HTTP layer's body limit; `Upload-Metadata` is bounded (`headers.rs`).
//! - Errors are the real HTTP status with a plain-text body: the TUS protocol's own text, or
//!   the message of Storage's error (`new row violates row-level security policy`).

pub mod checksum;
pub mod headers;
pub mod state;

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use madbase_core::jwt::unix_now;
use madbase_core::{Service, ShardCtx};
use madbase_http::{Body, BodyError, Request, Response};
use madbase_pg::{Batch, Statement};
use serde_json::Value;

use crate::caller::{self, jose_message, Caller};
use crate::db::{run_batch, text};
use crate::error::StorageError;
use crate::limits::{check_bucket_name, check_object_key};
use crate::object::ObjectPath;
use crate::sign::SCOPE_UPLOAD;
use crate::store::{new_version, Stored};
use crate::upload::{self, io_error, Described, Mode};
use crate::{Inner, Shared, StorageService};
use checksum::{ChecksumError, UploadChecksum, CHECKSUM_ALGORITHMS};
use headers::{Forwarding, HeaderError, Metadata, UploadId, OFFSET_OCTET_STREAM, TUS_VERSION};
use state::{Access, Appender, Info, Lock, Upload};

/// What `OPTIONS` advertises.
const EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration,checksum";
/// The headers a browser's script may read from an answer.
const EXPOSED_HEADERS: &str =
    "Location, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, Tus-Resumable, \
     Tus-Version, Tus-Max-Size, Tus-Extension, Tus-Checksum-Algorithm";
/// The request headers a browser may send (tus-node-server's list and Supabase's additions).
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, Location, Tus-Extension, Tus-Max-Size, Tus-Resumable, \
     Tus-Version, Upload-Concat, Upload-Defer-Length, Upload-Length, Upload-Metadata, Upload-Offset, \
     X-HTTP-Method-Override, X-Requested-With, X-Forwarded-Host, X-Forwarded-Proto, Forwarded, X-Upsert, \
     Upload-Expires, Upload-Checksum, ApiKey, x-signature";
/// Object type when the metadata names none.
const DEFAULT_MIME: &str = "application/octet-stream";

/// Requests writing upload bytes now, in the whole process (`tus_max_concurrent_uploads`).
static WRITING: AtomicUsize = AtomicUsize::new(0);

/// Why a TUS request is refused; each is answered with its status and its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TusError {
    #[error("Tus-Resumable Required")]
    VersionMissing,
    #[error("Unsupported Tus-Resumable version")]
    VersionUnsupported,
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A malformed `Upload-Checksum`, or one naming an algorithm not computed here.
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
    /// The request's bytes do not have the digest its `Upload-Checksum` names: none was kept.
    #[error("Checksum Mismatch")]
    ChecksumMismatch,
    #[error("Upload-Length or Upload-Defer-Length header required")]
    LengthMissing,
    #[error("Upload-Offset header required")]
    OffsetMissing,
    #[error("creation-defer-length extension is not (yet) supported.")]
    DeferLength,
    #[error("Concatenation extension is not (yet) supported. Disable parallel uploads in the tus client.")]
    Concatenation,
    #[error("Content-Type must be application/offset+octet-stream")]
    ContentType,
    #[error("The file for this url was not found")]
    NotFound,
    #[error("Upload-Offset conflict")]
    OffsetConflict,
    /// Another request holds the upload: 409, or 423 for a `HEAD` (which clients retry).
    #[error("The upload is in use by another request")]
    Locked { status: u16 },
    #[error("upload's size exceeded")]
    SizeExceeded,
    #[error("Maximum size exceeded")]
    MaxSizeExceeded,
    #[error("Cannot terminate an already completed upload")]
    Finished,
    #[error("Too many uploads in progress, retry later")]
    Busy,
    #[error("The request body did not arrive in time")]
    BodyTimeout,
    #[error("The request body ended early")]
    BodyEnded,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl TusError {
    pub fn status(&self) -> u16 {
        match self {
            TusError::VersionMissing | TusError::VersionUnsupported => 412,
            TusError::Header(_) | TusError::Checksum(_) | TusError::LengthMissing | TusError::OffsetMissing => 400,
            TusError::Finished | TusError::BodyEnded => 400,
            TusError::ChecksumMismatch => 460,
            TusError::DeferLength | TusError::Concatenation => 501,
            TusError::ContentType => 415,
            TusError::NotFound => 404,
            TusError::OffsetConflict => 409,
            TusError::Locked { status } => *status,
            TusError::SizeExceeded | TusError::MaxSizeExceeded => 413,
            TusError::Busy => 503,
            TusError::BodyTimeout => 408,
            TusError::Storage(e) => e.http_status.unwrap_or(e.status),
        }
    }

    /// The plain-text answer: the protocol's own errors end with a newline as tus-node-server's
    /// do; Storage's errors are their message alone, as Supabase Storage answers them.
    pub fn response(&self) -> Response {
        let text = match self {
            TusError::Storage(e) => e.message.clone(),
            other => format!("{other}\n"),
        };
        let mut response = Response::text(self.status(), text);
        match self {
            TusError::VersionMissing | TusError::VersionUnsupported => response.set_header("tus-version", TUS_VERSION),
            TusError::Busy => response.set_header("retry-after", "1"),
            _ => {}
        }
        response
    }
}

/// `/upload/resumable/…` (`rest`: the segments after it), any method.
pub async fn handle(inner: &Inner, req: &Request, body: Body, rest: &[&str]) -> Response {
    let (signed, rest) = match rest {
        ["sign", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let id = match rest {
        [] | [""] => None,
        [id] | [id, ""] if !id.is_empty() => Some(*id),
        _ => return StorageError::route_not_found(req.method(), req.path()),
    };
    let answered = match (req.method(), id) {
        ("OPTIONS", _) => Ok(options(inner)),
        ("POST", None) => create(inner, req, body, signed).await,
        ("PATCH", Some(id)) => patch(inner, req, body, signed, id).await,
        ("HEAD", Some(id)) => head(inner, req, signed, id).await,
        ("DELETE", Some(id)) => terminate(inner, req, signed, id).await,
        _ => return StorageError::route_not_found(req.method(), req.path()),
    };
    let mut response = answered.unwrap_or_else(|e| e.response());
    response.set_header("tus-resumable", TUS_VERSION);
    // The gateway adds only the origin; a browser's tus client must read these.
    if req.header("origin").is_some() {
        response.set_header("access-control-allow-origin", "*");
        response.set_header("access-control-expose-headers", EXPOSED_HEADERS);
    }
    response
}

/// `OPTIONS`: discovery, no credentials needed.
fn options(inner: &Inner) -> Response {
    Response::new(204)
        .header("tus-version", TUS_VERSION)
        .header("tus-extension", EXTENSIONS)
        .header("tus-checksum-algorithm", CHECKSUM_ALGORITHMS)
        .header("tus-max-size", inner.settings.file_size_limit_bytes().to_string())
        .header("access-control-allow-methods", "POST, HEAD, PATCH, OPTIONS, DELETE")
        .header("access-control-allow-headers", ALLOWED_HEADERS)
        .header("access-control-max-age", "86400")
}

/// The checks every request but `OPTIONS` passes first: the protocol version and the
/// well-formedness of the headers the protocol defines.
fn check_protocol(req: &Request) -> Result<(), TusError> {
    match req.header("tus-resumable") {
        None => return Err(TusError::VersionMissing),
        Some(v) if v != TUS_VERSION.as_bytes() => return Err(TusError::VersionUnsupported),
        Some(_) => {}
    }
    integer_header(req, "upload-offset")?;
    integer_header(req, "upload-length")?;
    if req.header("upload-defer-length").is_some_and(|v| v != b"1") {
        return Err(HeaderError::Invalid("upload-defer-length").into());
    }
    Ok(())
}

/// An integer header, when present.
fn integer_header(req: &Request, name: &'static str) -> Result<Option<u64>, HeaderError> {
    match req.header(name) {
        None => Ok(None),
        Some(raw) => {
            let value = std::str::from_utf8(raw).map_err(|_| HeaderError::Invalid(name))?;
            headers::parse_integer(name, value).map(Some)
        }
    }
}

/// `Upload-Checksum`, when present.
fn upload_checksum(req: &Request) -> Result<Option<UploadChecksum>, TusError> {
    match req.header("upload-checksum") {
        None => Ok(None),
        Some(raw) => {
            let value = std::str::from_utf8(raw).map_err(|_| HeaderError::Invalid("upload-checksum"))?;
            Ok(Some(UploadChecksum::parse(value)?))
        }
    }
}

fn is_offset_octet_stream(req: &Request) -> bool {
    req.header_str("content-type").is_some_and(|t| t.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
}

/// How the request proves who it is.
enum Credentials {
    /// A verified JWT.
    Token(Caller),
    /// A verified signed upload token for the object: its `owner` and `upsert`.
    Signed { owner: Option<String>, upsert: bool },
}

/// The credentials for `bucket`/`key`: the JWT, or on the signed routes the `x-signature`
/// token, checked as a signed upload URL's token is (scope `upload`, `url` the object).
fn credentials(inner: &Inner, req: &Request, signed: bool, bucket: &str, key: &str) -> Result<Credentials, TusError> {
    if !signed {
        return Ok(Credentials::Token(caller::caller(&inner.ctx, req)?));
    }
    let token = req
        .header_str("x-signature")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| StorageError::invalid_signature_because("Missing x-signature header"))?;
    let claims = inner.keys.verify(token, unix_now()).map_err(|e| StorageError::invalid_jwt(jose_message(&e)))?.object;
    if claims.get("scope").and_then(Value::as_str) != Some(SCOPE_UPLOAD) {
        return Err(StorageError::invalid_signature_because(format!("Token is not scoped for {SCOPE_UPLOAD}")).into());
    }
    if claims.get("url").and_then(Value::as_str) != Some(format!("{bucket}/{key}").as_str()) {
        return Err(StorageError::invalid_signature().into());
    }
    Ok(Credentials::Signed {
        owner: claims.get("owner").and_then(Value::as_str).map(str::to_owned),
        upsert: claims.get("upsert").and_then(Value::as_bool) == Some(true),
    })
}

/// A request writing upload bytes, counted against `tus_max_concurrent_uploads` while it lives.
struct Writing;

impl Writing {
    fn start(inner: &Inner) -> Result<Writing, TusError> {
        let max = inner.settings.tus_max_concurrent_uploads;
        if WRITING.fetch_add(1, Ordering::AcqRel) >= max {
            WRITING.fetch_sub(1, Ordering::AcqRel);
            return Err(TusError::Busy);
        }
        Ok(Writing)
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        let before = WRITING.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0);
    }
}

/// `POST /upload/resumable[/sign]`: creates an upload (and stores the bytes sent with it).
async fn create(inner: &Inner, req: &Request, body: Body, signed: bool) -> Result<Response, TusError> {
    check_protocol(req)?;
    if req.header("upload-concat").is_some() {
        return Err(TusError::Concatenation);
    }
    if req.header("upload-defer-length").is_some() {
        return Err(TusError::DeferLength);
    }
    let length = integer_header(req, "upload-length")?.ok_or(TusError::LengthMissing)?;
    let (metadata_header, metadata) = match req.header("upload-metadata") {
        None => return Err(StorageError::invalid_request("Metadata header is required").into()),
        Some(raw) => {
            let text = std::str::from_utf8(raw).map_err(|_| HeaderError::Invalid("upload-metadata"))?;
            (text, Metadata::parse(text)?)
        }
    };
    let bucket = metadata.get("bucketName").unwrap_or_default();
    let key = metadata.get("objectName").unwrap_or_default();
    check_bucket_name(bucket)?;
    check_object_key(key)?;
    let path = ObjectPath { bucket: bucket.to_owned(), key: key.to_owned() };
    // Before anything is stored: the answer must be able to say where the upload is.
    let origin = headers::origin(&forwarding(req))?;
    let mime = metadata.get("contentType").filter(|t| !t.is_empty()).unwrap_or(DEFAULT_MIME);
    let cache_control = headers::cache_control(metadata.get("cacheControl"));
    // Unreadable user metadata is ignored, as Supabase Storage ignores it.
    let user_metadata = metadata.get("metadata").and_then(|m| serde_json::from_str::<Value>(m).ok());

    let (caller, owner, access, upsert) = match credentials(inner, req, signed, bucket, key)? {
        Credentials::Token(caller) => {
            let access = Access::Token { role: caller.role.clone(), sub: caller.sub.clone() };
            let owner = caller.sub.clone();
            (caller, owner, access, req.header_str("x-upsert") == Some("true"))
        }
        Credentials::Signed { owner, upsert } => {
            (Caller::service_role(owner.as_deref()), owner, Access::Signed, upsert)
        }
    };
    let mode = if upsert { Mode::Upsert } else { Mode::Create };
    let (limits, permitted) = monoio::join!(
        upload::bucket_limits(inner, bucket),
        upload::test_permission(inner, &caller, owner.as_deref(), &path, mode, Some(mime), user_metadata.as_ref())
    );
    let limits = limits?;
    if length > limits.max_size(inner, &path) {
        return Err(TusError::MaxSizeExceeded);
    }
    permitted?;
    limits.check_mime(&path, mime)?;

    let with_data = is_offset_octet_stream(req);
    let checksum = upload_checksum(req)?;
    if with_data && req.content_length().is_some_and(|n| n > length) {
        return Err(TusError::SizeExceeded);
    }
    let _writing = if with_data { Some(Writing::start(inner)?) } else { None };
    let version = new_version();
    let id = UploadId { bucket: path.bucket.clone(), key: path.key.clone(), version: version.clone() };
    let info = Info {
        bucket: path.bucket.clone(),
        key: path.key.clone(),
        length,
        mime: mime.to_owned(),
        cache_control,
        user_metadata,
        metadata_header: metadata_header.to_owned(),
        owner,
        access,
        upsert,
        committed: false,
    };
    let (mut upload, lock) = state::create(&inner.store, &version, &info).await.map_err(io_error)?;
    if with_data {
        upload.offset = append(inner, req, body, &upload, &lock, checksum.as_ref()).await?;
    }
    let mut response = Response::new(201);
    if upload.complete_uncommitted() {
        finish(inner, &mut upload, &lock).await?;
        response.set_header("tus-complete", "1");
    }
    let sign = if signed { "/sign" } else { "" };
    let prefix = StorageService::INFO.prefix;
    response.set_header("location", format!("{origin}{prefix}/upload/resumable{sign}/{}", id.encode()));
    response.set_header("upload-offset", upload.offset.to_string());
    set_expires(inner, &mut response, &upload);
    Ok(response)
}

fn forwarding(req: &Request) -> Forwarding<'_> {
    Forwarding {
        host: req.header_str("host"),
        forwarded: req.header_str("forwarded"),
        x_forwarded_host: req.header_str("x-forwarded-host"),
        x_forwarded_proto: req.header_str("x-forwarded-proto"),
        x_forwarded_port: req.header_str("x-forwarded-port"),
    }
}

/// The upload a URL names, for the request's credentials: `NotFound` for an id that names no
/// upload, an expired one, or one made with other credentials.
async fn find(inner: &Inner, req: &Request, signed: bool, segment: &str) -> Result<(Upload, Credentials), TusError> {
    let id = UploadId::decode(segment).ok_or(TusError::NotFound)?;
    let credentials = credentials(inner, req, signed, &id.bucket, &id.key)?;
    let upload = state::open(&inner.store, &id.version).await.map_err(io_error)?.ok_or(TusError::NotFound)?;
    let same_object = upload.info.bucket == id.bucket && upload.info.key == id.key;
    let same_credentials = match (&upload.info.access, &credentials) {
        (Access::Token { role, sub }, Credentials::Token(caller)) => *role == caller.role && *sub == caller.sub,
        (Access::Signed, Credentials::Signed { .. }) => true,
        _ => false,
    };
    if !same_object || !same_credentials || upload.expired(expiry(inner), SystemTime::now()) {
        return Err(TusError::NotFound);
    }
    Ok((upload, credentials))
}

/// TUS's expiration extension: an unfinished upload's answer says until when it can be resumed
/// (it was just touched, so `tus_url_expiry_ms` from now).
fn set_expires(inner: &Inner, response: &mut Response, upload: &Upload) {
    if !upload.info.committed {
        let at = unix_now().saturating_add(expiry(inner).as_secs());
        response.set_header("upload-expires", madbase_http::format_http_date(at));
    }
}

fn expiry(inner: &Inner) -> Duration {
    Duration::from_millis(inner.settings.tus_url_expiry_ms)
}

/// The upload again under its lock (a request may have changed or removed it meanwhile).
async fn lock(inner: &Inner, upload: &Upload, busy: u16) -> Result<(Upload, Lock), TusError> {
    let lock = match Lock::try_acquire(&upload.dir) {
        Ok(Some(lock)) => lock,
        Ok(None) => return Err(TusError::Locked { status: busy }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(TusError::NotFound),
        Err(e) => return Err(io_error(e).into()),
    };
    let current = state::open(&inner.store, &upload.version).await.map_err(io_error)?.ok_or(TusError::NotFound)?;
    Ok((current, lock))
}

/// `PATCH /upload/resumable[/sign]/{id}`: appends the body at `Upload-Offset`.
async fn patch(inner: &Inner, req: &Request, body: Body, signed: bool, segment: &str) -> Result<Response, TusError> {
    check_protocol(req)?;
    let offset = integer_header(req, "upload-offset")?.ok_or(TusError::OffsetMissing)?;
    if !is_offset_octet_stream(req) {
        return Err(TusError::ContentType);
    }
    let checksum = upload_checksum(req)?;
    let (upload, credentials) = find(inner, req, signed, segment).await?;
    if let Credentials::Token(caller) = &credentials {
        // The caller's right to write the row, tried again as Supabase Storage does on every
        // request (policies or the object may have changed since the creation).
        let info = &upload.info;
        let path = ObjectPath { bucket: info.bucket.clone(), key: info.key.clone() };
        let mode = if info.upsert { Mode::Upsert } else { Mode::Create };
        let owner = info.owner.as_deref();
        upload::test_permission(inner, caller, owner, &path, mode, Some(&info.mime), info.user_metadata.as_ref())
            .await?;
    }
    let _writing = Writing::start(inner)?;
    let (mut upload, lock) = lock(inner, &upload, 409).await?;
    if offset != upload.offset {
        return Err(TusError::OffsetConflict);
    }
    let sends_bytes = req.content_length().is_none_or(|n| n > 0);
    if upload.info.committed || upload.complete_uncommitted() {
        // Nothing more fits; a repeated last request finishes what a failure or crash cut.
        if sends_bytes {
            return Err(TusError::SizeExceeded);
        }
    } else {
        upload.offset = append(inner, req, body, &upload, &lock, checksum.as_ref()).await?;
    }
    let mut response = Response::new(204).header("upload-offset", upload.offset.to_string());
    if upload.complete_uncommitted() {
        finish(inner, &mut upload, &lock).await?;
    }
    set_expires(inner, &mut response, &upload);
    if upload.info.committed {
        response.set_header("tus-complete", "1");
    }
    Ok(response)
}

/// Streams the request body to the end of `upload`'s data (its lock held) and returns the new
/// durable offset. Bytes that arrived before the body failed are kept and made durable — unless
/// the request names a `checksum`: then its bytes count only when all arrived and match, and
/// otherwise none is kept.
async fn append(
    inner: &Inner,
    req: &Request,
    mut body: Body,
    upload: &Upload,
    _lock: &Lock,
    checksum: Option<&UploadChecksum>,
) -> Result<u64, TusError> {
    debug_assert!(upload.offset <= upload.info.length);
    if req.content_length().is_some_and(|n| n > upload.info.length - upload.offset) {
        return Err(TusError::SizeExceeded);
    }
    let _in_progress = inner.counters.upload_started();
    let mut appender = Appender::open(upload, checksum.is_some()).await.map_err(io_error)?;
    let mut running = checksum.map(UploadChecksum::start);
    let streamed: Result<(), TusError> = loop {
        match body.chunk().await {
            None => break Ok(()),
            Some(Err(e)) => break Err(body_error(e)),
            Some(Ok(chunk)) => {
                if appender.offset() + chunk.len() as u64 > upload.info.length {
                    break Err(TusError::SizeExceeded);
                }
                crate::metrics::add(&inner.counters.bytes_in, chunk.len() as u64);
                if let Some(running) = &mut running {
                    running.update(&chunk);
                }
                if let Err(e) = appender.write(chunk).await {
                    break Err(io_error(e).into());
                }
            }
        }
    };
    let verdict = match (checksum.zip(running), &streamed) {
        (None, _) => Ok(()),
        (Some((checksum, running)), Ok(())) => {
            if checksum.matches(running) {
                Ok(())
            } else {
                Err(TusError::ChecksumMismatch)
            }
        }
        // Cut or refused: what arrived cannot be verified.
        (Some(_), Err(e)) => Err(e.clone()),
    };
    let offset = appender.finish(verdict.is_ok()).await.map_err(io_error)?;
    debug_assert!(offset <= upload.info.length);
    verdict.and(streamed).map(|()| offset)
}

fn body_error(e: BodyError) -> TusError {
    match e {
        BodyError::TooLarge { .. } => StorageError::entity_too_large().into(),
        BodyError::Timeout => TusError::BodyTimeout,
        BodyError::Busy => TusError::Busy,
        other => {
            tracing::debug!(error = %other, "resumable upload body ended early");
            TusError::BodyEnded
        }
    }
}

/// Makes a complete upload the object (its lock held): hashes the bytes, names them as the
/// version's blob, commits the row (unless an earlier attempt did and crashed before saying so),
/// then records the upload as committed and drops its own name for the bytes.
async fn finish(inner: &Inner, upload: &mut Upload, _lock: &Lock) -> Result<(), TusError> {
    debug_assert!(upload.complete_uncommitted());
    let data = upload.data_path();
    let hashing = data.clone();
    let job = inner.ctx.blocking.spawn(move || state::etag_blocking(&hashing)).map_err(|_| TusError::Busy)?;
    let etag = job.await.map_err(|e| io_error(std::io::Error::other(e)))?.map_err(io_error)?;
    inner.backend.adopt(&inner.store, &data, &upload.version).await.map_err(io_error)?;
    let info = &upload.info;
    let path = ObjectPath { bucket: info.bucket.clone(), key: info.key.clone() };
    if !row_names_version(inner, &path, &upload.version).await? {
        let described = Described {
            mime: &info.mime,
            cache_control: &info.cache_control,
            user_metadata: info.user_metadata.as_ref(),
        };
        let stored = Stored { size: info.length, etag };
        let mode = if info.upsert { Mode::Upsert } else { Mode::Create };
        upload::commit_object(inner, info.owner.as_deref(), &path, mode, &described, &upload.version, &stored).await?;
    }
    upload.info.committed = true;
    state::write_info(&upload.dir, &upload.info).await.map_err(io_error)?;
    if let Err(error) = monoio::fs::remove_file(&data).await {
        // Only disk space: expiry removes the directory with it.
        tracing::warn!(path = %data.display(), %error, "cannot remove a finished upload's data");
    }
    Ok(())
}

/// Whether the object's row already names `version` (a finish that committed, then crashed).
async fn row_names_version(inner: &Inner, path: &ObjectPath, version: &str) -> Result<bool, StorageError> {
    let sql = "select 1 from storage.objects o where o.bucket_id = $1 and o.name = $2 and o.version = $3";
    let statement = Statement::new(sql).bind(text(&path.bucket)).bind(text(&path.key)).bind(text(version));
    let found = run_batch(inner, Batch::new().role("service_role"), statement).await?;
    Ok(!found.rows.is_empty())
}

/// `HEAD /upload/resumable[/sign]/{id}`: the offset to resume from.
async fn head(inner: &Inner, req: &Request, signed: bool, segment: &str) -> Result<Response, TusError> {
    check_protocol(req)?;
    let (mut upload, _) = find(inner, req, signed, segment).await?;
    if upload.complete_uncommitted() {
        let (mut current, lock) = lock(inner, &upload, 423).await?;
        if current.complete_uncommitted() {
            finish(inner, &mut current, &lock).await?;
        }
        upload = current;
    }
    Ok(Response::new(200)
        .header("upload-offset", upload.offset.to_string())
        .header("upload-length", upload.info.length.to_string())
        .header("upload-metadata", upload.info.metadata_header.clone())
        .header("cache-control", "no-store"))
}

/// `DELETE /upload/resumable[/sign]/{id}`: terminates an unfinished upload.
async fn terminate(inner: &Inner, req: &Request, signed: bool, segment: &str) -> Result<Response, TusError> {
    check_protocol(req)?;
    let (upload, _) = find(inner, req, signed, segment).await?;
    let (upload, lock) = lock(inner, &upload, 409).await?;
    if upload.info.committed {
        return Err(TusError::Finished);
    }
    let dir = upload.dir.clone();
    let job = inner.ctx.blocking.spawn(move || state::remove_blocking(&dir)).map_err(|_| TusError::Busy)?;
    job.await.map_err(|e| io_error(std::io::Error::other(e)))?.map_err(io_error)?;
    drop(lock);
    Ok(Response::new(204))
}

/// Removes expired uploads until shutdown (run beside the object sweeper, on its shard), every
/// quarter of the expiry (at least every second, at most every ten minutes).
pub async fn expire_forever(ctx: Rc<ShardCtx>, shared: Arc<Shared>) {
    let expiry = Duration::from_millis(shared.settings.tus_url_expiry_ms);
    let every = (expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        let uploads = shared.store.uploads_dir();
        match ctx.blocking.spawn(move || state::expire_blocking(&uploads, expiry)) {
            Ok(job) => match job.await {
                Ok(Ok(0)) => {}
                Ok(Ok(removed)) => tracing::info!(removed, "expired resumable uploads removed"),
                Ok(Err(error)) => tracing::warn!(%error, "resumable upload expiry failed; retrying next round"),
                Err(error) => tracing::warn!(%error, "resumable upload expiry did not run"),
            },
            Err(error) => tracing::warn!(%error, "resumable upload expiry skipped: blocking pool busy"),
        }
        monoio::select! {
            _ = monoio::time::sleep(every) => {}
            _ = ctx.shutdown.triggered() => return,
        }
    }
}
