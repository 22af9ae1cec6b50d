//! The object store of the S3 backend: objects' bytes in one bucket of an S3-compatible service
//! (AWS S3, MinIO, R2, …), through `object_store`'s S3 client on the egress runtime. The same
//! shape as the file-system store (`store.rs`): [`S3Store::create`] → [`S3Writer`] (`write`,
//! `commit` → [`Stored`]), [`S3Store::open_blob`] → [`S3Blob`] (`len`, `stream`), `remove`,
//! `link`, and [`S3Store::list_versions`] for the sweeper.
//!
//! Layout: the blob of one object version is the key `<prefix>/<version>` of the bucket
//! (`<version>` when the prefix is empty), a flat namespace: S3 needs no fan-out directories, and
//! random uuids spread the keys over S3's partitions by themselves. As on the file system a blob is
//! named by its row's version, never by the object's name, so a move is a metadata update and a
//! copy ([`S3Store::link`]) a server-side `CopyObject` of an immutable blob.
//!
//! The bridge (ARCHITECTURE.md, "Libraries that need tokio"): a shard never polls a tokio future.
//! Every request runs inside an egress job ([`Egress::run`]), whose result comes back over the
//! job's oneshot; bulk data crosses in chunks over a bounded `futures_channel::mpsc` per
//! transfer, so both sides apply backpressure:
//! - An upload is one job that owns the multipart upload. The shard gathers what it is given into
//!   chunks of at most [`STAGING_BYTES`] (as the file store stages its writes) and sends them over
//!   a channel of [`CHANNEL_CHUNKS`]; the job cuts parts of exactly `part_size` bytes (S3 and R2
//!   want equal parts but the last) and keeps at most [`PARTS_IN_FLIGHT`] uploading while it
//!   gathers the next one, so an upload holds at most about
//!   `(PARTS_IN_FLIGHT + 1) × part_size + (CHANNEL_CHUNKS + 1) × STAGING_BYTES` whatever the
//!   object's size (21 MiB with the 8 MiB default). The multipart upload begins only when a first
//!   part is full: a smaller object is one `PutObject` at commit (one request, not three).
//! - A download is one job: a ranged `GetObject` whose body is gathered into chunks of up to
//!   [`READ_CHUNK_BYTES`] (what is already there, never waiting to fill one; a larger read of the
//!   HTTP client, at most about 408 KiB, goes as it came) and sent over a channel of
//!   [`CHANNEL_CHUNKS`]; a reader that stops reading stops the job reading the socket.
//!
//! Invariants: a blob exists under its key only complete — `CompleteMultipartUpload` or a single
//! `PutObject` makes it appear whole, at commit — so a row that names it never sees a partial
//! object. A writer dropped before [`S3Writer::commit`] (error, client gone, future dropped)
//! closes its channel without a commit, and its job aborts the multipart upload (parts already
//! stored are freed). A crash mid-upload leaves an incomplete multipart upload that only the
//! bucket's lifecycle rule `AbortIncompleteMultipartUpload` removes; a blob whose row never
//! committed is an orphan the sweeper finds with [`S3Store::list_versions`]. The ETag of a stored
//! blob is the quoted MD5 of its bytes, computed on the shard while they stream (as the file
//! store's), never S3's multipart ETag. Each transfer holds one egress job slot from its start to
//! its end; a full egress queue is an error of kind [`io::ErrorKind::ResourceBusy`] at once (the
//! caller's 503, see [`is_busy`]). Requests have deadlines (connect, request, idle read) and
//! bounded retries; a streamed download resumes from where it broke (object_store's retry).

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_channel::mpsc;
use futures_core::Stream;
use madbase_egress::{Egress, EgressError};
use md5::{Digest, Md5};
use object_store::aws::AmazonS3Builder;
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};

use crate::store::{is_version, Stored, READ_CHUNK_BYTES, STAGING_BYTES};

/// S3's smallest part (every part but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
/// The default part size: 8 MiB (Supabase Storage uses 16 MiB with two parts in flight). At most
/// 10,000 parts make an object, so the largest object is 10,000 × `part_size` (78 GiB here).
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one upload being sent while the next is gathered.
pub const PARTS_IN_FLIGHT: usize = 1;
/// Chunks queued between a shard and a transfer's job (each way), besides the one being handed
/// over.
pub const CHANNEL_CHUNKS: usize = 3;
/// Time to set up a connection (TCP and TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default deadline of one request that is not a streamed download (a part upload of
/// `part_size` bytes included: 8 MiB in 60 s needs 140 kB/s).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a streamed download may wait for the next bytes from S3 (no deadline on the whole
/// download: a large object to a slow client takes as long as it takes).
pub const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of a failed request (5xx, throttling, connection errors, timeouts of idempotent
/// requests), with exponential backoff, and the time after which none is tried.
pub const MAX_RETRIES: usize = 3;
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to reach the bucket. The names mirror Supabase Storage's settings
/// (`STORAGE_S3_BUCKET`, `STORAGE_S3_REGION`, `STORAGE_S3_ENDPOINT`,
/// `STORAGE_S3_FORCE_PATH_STYLE`, `STORAGE_S3_UPLOAD_PART_SIZE`, `STORAGE_S3_CLIENT_TIMEOUT`,
/// the AWS SDK's `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    pub region: String,
    /// An S3-compatible service's URL (`http://minio:9000`); `None`: AWS's endpoint of `region`.
    /// An `http://` endpoint is used as given (plain HTTP), as the AWS SDK does for Supabase.
    pub endpoint: Option<String>,
    /// Empty (with an empty secret): the AWS credential chain of the environment (web identity,
    /// ECS task, EKS pod identity, instance metadata).
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key` (MinIO, moto).
    pub force_path_style: bool,
    /// Keys are `<prefix>/<version>`; empty: `<version>`. Leading and trailing `/` are ignored.
    pub prefix: String,
    /// Bytes per part of a multipart upload, from [`MIN_PART_SIZE`] to [`MAX_PART_SIZE`].
    pub part_size: usize,
    /// Deadline of one request other than a streamed download.
    pub request_timeout: Duration,
}

impl Default for S3Settings {
    fn default() -> S3Settings {
        S3Settings {
            bucket: String::new(),
            region: "us-east-1".to_owned(),
            endpoint: None,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: None,
            force_path_style: false,
            prefix: String::new(),
            part_size: DEFAULT_PART_SIZE,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret or the token.
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("force_path_style", &self.force_path_style)
            .field("prefix", &self.prefix)
            .field("part_size", &self.part_size)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// The S3 object store of a process (shared by its shards). `Clone` is an `Arc` clone.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// Every request but streamed downloads: a deadline per request.
    store: Arc<dyn ObjectStore>,
    /// Streamed downloads: an idle deadline per read, none on the whole body.
    reader: Arc<dyn ObjectStore>,
    egress: Egress,
    /// The normalised prefix (no leading or trailing `/`), `None` when empty.
    prefix: Option<Path>,
    part_size: usize,
    /// For messages: `s3://bucket/prefix`.
    name: String,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("location", &self.inner.name).field("part_size", &self.inner.part_size).finish()
    }
}

impl S3Store {
    /// The store for `settings`; its requests run on `egress`. Checks the settings and builds the
    /// clients (no request is made: a wrong bucket or credentials show at the first request).
    pub fn new(settings: &S3Settings, egress: Egress) -> Result<S3Store, String> {
        if settings.bucket.is_empty() {
            return Err("storage S3: the bucket is not set".to_owned());
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&settings.part_size) {
            return Err(format!(
                "storage S3: the part size {} is outside {MIN_PART_SIZE}..={MAX_PART_SIZE} bytes",
                settings.part_size
            ));
        }
        if settings.access_key_id.is_empty() != settings.secret_access_key.is_empty() {
            return Err("storage S3: set both the access key id and the secret access key, or neither".to_owned());
        }
        if settings.request_timeout.is_zero() {
            return Err("storage S3: the request timeout must be positive".to_owned());
        }
        let prefix = normalize_prefix(&settings.prefix)?;
        let endpoint = match &settings.endpoint {
            Some(e) if !e.is_empty() => Some(endpoint_url(e, &settings.bucket, settings.force_path_style)?),
            _ => None,
        };
        let allow_http = endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));

        // TLS through rustls with ring (reqwest's `rustls-no-provider`): install ring as the
        // process's provider unless one is installed already (then that one serves). rustls
        // deprecates ring's provider for its lack of post-quantum key exchange, which only
        // aws-lc-rs (a C/cmake build) has; lettre's SMTP uses the same provider.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();

        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: MAX_RETRIES,
            retry_timeout: RETRY_TIMEOUT,
        };
        let build = |options: ClientOptions| -> Result<Arc<dyn ObjectStore>, String> {
            let mut builder = if settings.access_key_id.is_empty() {
                AmazonS3Builder::from_env()
            } else {
                AmazonS3Builder::new()
                    .with_access_key_id(&settings.access_key_id)
                    .with_secret_access_key(&settings.secret_access_key)
            };
            if let Some(token) = settings.session_token.as_deref().filter(|t| !t.is_empty()) {
                builder = builder.with_token(token);
            }
            if let Some(endpoint) = &endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            let store = builder
                .with_bucket_name(&settings.bucket)
                .with_region(&settings.region)
                .with_virtual_hosted_style_request(!settings.force_path_style)
                .with_retry(retry.clone())
                .with_client_options(options.with_allow_http(allow_http).with_connect_timeout(CONNECT_TIMEOUT))
                .build()
                .map_err(|e| format!("storage S3: {e}"))?;
            Ok(Arc::new(store))
        };
        let store = build(ClientOptions::new().with_timeout(settings.request_timeout))?;
        let reader = build(ClientOptions::new().with_timeout_disabled().with_read_timeout(READ_IDLE_TIMEOUT))?;
        let name = match &prefix {
            Some(p) => format!("s3://{}/{p}", settings.bucket),
            None => format!("s3://{}", settings.bucket),
        };
        Ok(S3Store { inner: Arc::new(Inner { store, reader, egress, prefix, part_size: settings.part_size, name }) })
    }

    /// `s3://bucket[/prefix]`, for logs.
    pub fn location(&self) -> &str {
        &self.inner.name
    }

    /// The part size of multipart uploads.
    pub fn part_size(&self) -> usize {
        self.inner.part_size
    }

    /// The key of a version's blob.
    pub fn blob_path(&self, version: &str) -> io::Result<Path> {
        if !is_version(version) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a blob version: {version:?}")));
        }
        Ok(match &self.inner.prefix {
            Some(prefix) => prefix.clone().join(version),
            None => Path::from(version),
        })
    }

    /// Starts writing `version`'s blob; it appears at [`S3Writer::commit`]. Fails at once when the
    /// egress queue is full ([`is_busy`]).
    pub async fn create(&self, version: &str) -> io::Result<S3Writer> {
        let path = self.blob_path(version)?;
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let store = self.inner.store.clone();
        let part_size = self.inner.part_size;
        let job_path = path.clone();
        let job = self.inner.egress.run(move || upload(store, job_path, part_size, rx)).map_err(egress_error)?;
        Ok(S3Writer { tx: Some(tx), job: Some(job), path, written: 0, staged: BytesMut::new(), md5: Md5::new() })
    }

    /// Opens a version's blob for reading (a `HeadObject`); `NotFound` when there is none.
    pub async fn open_blob(&self, version: &str) -> io::Result<S3Blob> {
        let path = self.blob_path(version)?;
        let p = path.clone();
        let meta =
            self.call(move |store| async move { store.head(&p).await.map_err(|e| s3_error("HEAD", &p, e)) }).await?;
        Ok(S3Blob { inner: self.inner.clone(), path, len: meta.size })
    }

    /// A version's blob whose length is known (from its row): no request until it is read; a
    /// read of a blob that is not there fails with `NotFound`.
    pub fn blob(&self, version: &str, len: u64) -> io::Result<S3Blob> {
        Ok(S3Blob { inner: self.inner.clone(), path: self.blob_path(version)?, len })
    }

    /// Removes a version's blob; one already gone is not an error.
    pub async fn remove(&self, version: &str) -> io::Result<()> {
        let path = self.blob_path(version)?;
        self.call(move |store| async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(s3_error("DELETE", &path, e)),
            }
        })
        .await
    }

    /// Makes `to` a copy of `from`'s blob, inside the service (`CopyObject`: no byte crosses
    /// MadBase). `NotFound` when `from` has no blob. AWS copies objects of up to 5 GiB this way.
    pub async fn link(&self, from: &str, to: &str) -> io::Result<()> {
        let from = self.blob_path(from)?;
        let to = self.blob_path(to)?;
        self.call(move |store| async move { store.copy(&from, &to).await.map_err(|e| s3_error("COPY", &from, e)) })
            .await
    }

    /// Up to `max` versions whose blobs were last modified before `older_than`, in key order: the
    /// sweeper's orphan candidates. Keys under the prefix that are not versions are skipped.
    pub async fn list_versions(&self, older_than: SystemTime, max: usize) -> io::Result<Vec<String>> {
        self.list_versions_after(None, older_than, max).await
    }

    /// As [`S3Store::list_versions`], from the first version after `after` in key order (to go
    /// on where a previous call stopped).
    pub async fn list_versions_after(
        &self,
        after: Option<&str>,
        older_than: SystemTime,
        max: usize,
    ) -> io::Result<Vec<String>> {
        let after = after.map(|a| self.blob_path(a)).transpose()?;
        let prefix = self.inner.prefix.clone();
        let depth = prefix.as_ref().map_or(0, |p| p.parts().count()) + 1;
        self.call(move |store| async move {
            let mut list = match &after {
                Some(after) => store.list_with_offset(prefix.as_ref(), after),
                None => store.list(prefix.as_ref()),
            };
            let mut out = Vec::new();
            while out.len() < max {
                let Some(item) = poll_fn(|cx| list.as_mut().poll_next(cx)).await else { break };
                let meta = item.map_err(|e| s3_error("LIST", prefix.as_ref().unwrap_or(&Path::default()), e))?;
                let Some(name) = meta.location.filename() else { continue };
                if meta.location.parts().count() == depth
                    && is_version(name)
                    && SystemTime::from(meta.last_modified) < older_than
                {
                    out.push(name.to_owned());
                }
            }
            Ok(out)
        })
        .await
    }

    /// Runs one request on the egress runtime.
    async fn call<T, M, F>(&self, make: M) -> io::Result<T>
    where
        M: FnOnce(Arc<dyn ObjectStore>) -> F + Send + 'static,
        F: Future<Output = io::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.inner.store.clone();
        self.inner.egress.run(move || make(store)).map_err(egress_error)?.await.map_err(egress_error)?
    }
}

/// What a writer hands its job.
enum Upload {
    Data(Bytes),
    /// Everything was sent: store the blob.
    Commit,
}

/// A blob being written. Dropped before [`S3Writer::commit`], its job aborts the multipart
/// upload (on the egress runtime) and nothing appears under its key.
pub struct S3Writer {
    /// `None` once committed.
    tx: Option<mpsc::Sender<Upload>>,
    /// The job's answer: the bytes it stored.
    job: Option<madbase_egress::EgressJob<io::Result<u64>>>,
    path: Path,
    /// Bytes accepted; those in `staged` are not sent yet.
    written: u64,
    staged: BytesMut,
    md5: Md5,
}

impl S3Writer {
    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `chunk`. Large chunks are sent as they are (in pieces of at most
    /// [`STAGING_BYTES`], after what was staged); small ones are gathered first. Waits while the
    /// job is behind.
    pub async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        if self.tx.is_none() {
            return Err(io::Error::other("S3 writer already finished"));
        }
        self.md5.update(&chunk);
        self.written += chunk.len() as u64;
        if chunk.len() >= STAGING_BYTES / 2 {
            self.flush().await?;
            let mut chunk = chunk;
            while chunk.len() > STAGING_BYTES {
                let piece = chunk.split_to(STAGING_BYTES);
                self.send(Upload::Data(piece)).await?;
            }
            return self.send(Upload::Data(chunk)).await;
        }
        if self.staged.capacity() == 0 {
            self.staged.reserve(STAGING_BYTES);
        }
        self.staged.extend_from_slice(&chunk);
        if self.staged.len() >= STAGING_BYTES / 2 {
            self.flush().await?;
        }
        debug_assert!(self.staged.len() < STAGING_BYTES / 2);
        Ok(())
    }

    /// Sends what is staged (less than [`STAGING_BYTES`]).
    async fn flush(&mut self) -> io::Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let staged = std::mem::take(&mut self.staged).freeze();
        self.send(Upload::Data(staged)).await
    }

    /// Hands one message to the job, waiting for room in the channel.
    async fn send(&mut self, message: Upload) -> io::Result<()> {
        let tx = self.tx.as_mut().ok_or_else(|| io::Error::other("S3 writer already finished"))?;
        let sent = match poll_fn(|cx| tx.poll_ready(cx)).await {
            Ok(()) => tx.start_send(message).is_ok(),
            Err(_) => false,
        };
        if sent {
            return Ok(());
        }
        // The job stopped taking data: it failed; its error says why.
        self.tx = None;
        Err(self.job_error().await)
    }

    /// The error of a job that ended before the commit.
    async fn job_error(&mut self) -> io::Error {
        match self.job.take() {
            Some(job) => match job.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => io::Error::other(format!("S3 upload of {} ended before its commit", self.path)),
                Err(e) => egress_error(e),
            },
            None => io::Error::other("S3 writer already finished"),
        }
    }

    /// Stores the blob: sends what is staged and the commit, then waits for the job to complete
    /// the multipart upload (or to put a small object whole).
    pub async fn commit(mut self) -> io::Result<Stored> {
        self.flush().await?;
        self.send(Upload::Commit).await?;
        self.tx = None;
        let stored = match self.job.take() {
            Some(job) => job.await.map_err(egress_error)??,
            None => return Err(io::Error::other("S3 writer already finished")),
        };
        if stored != self.written {
            return Err(io::Error::other(format!(
                "S3 upload of {} stored {stored} bytes of {}",
                self.path, self.written
            )));
        }
        let digest = std::mem::take(&mut self.md5).finalize();
        Ok(Stored { size: self.written, etag: format!("\"{}\"", crate::store::hex(&digest)) })
    }
}

/// The job of one upload, on the egress runtime: gathers the writer's chunks into parts, puts a
/// small object whole at the commit, aborts the multipart upload when the writer went away.
async fn upload(
    store: Arc<dyn ObjectStore>,
    path: Path,
    part_size: usize,
    mut rx: mpsc::Receiver<Upload>,
) -> io::Result<u64> {
    // Until a first part is full: the chunks, kept as they came (no copy).
    let mut first: Vec<Bytes> = Vec::new();
    let mut multipart: Option<WriteMultipart> = None;
    // Bytes in the part being gathered (before the multipart upload: in `first`).
    let mut gathered = 0usize;
    let mut total = 0u64;
    loop {
        let message = poll_fn(|cx| Pin::new(&mut rx).poll_next(cx)).await;
        match message {
            Some(Upload::Data(bytes)) => {
                total += bytes.len() as u64;
                match multipart.as_mut() {
                    Some(parts) => {
                        if let Err(e) = put(parts, &mut gathered, part_size, bytes).await {
                            abort(multipart.take(), &path).await;
                            return Err(s3_error("UploadPart", &path, e));
                        }
                    }
                    None => {
                        gathered += bytes.len();
                        first.push(bytes);
                        if gathered >= part_size {
                            let upload = store
                                .put_multipart(&path)
                                .await
                                .map_err(|e| s3_error("CreateMultipartUpload", &path, e))?;
                            let mut parts = WriteMultipart::new_with_chunk_size(upload, part_size);
                            gathered = 0;
                            for bytes in first.drain(..) {
                                // Nothing in flight yet: never waits.
                                if let Err(e) = put(&mut parts, &mut gathered, part_size, bytes).await {
                                    abort(Some(parts), &path).await;
                                    return Err(s3_error("UploadPart", &path, e));
                                }
                            }
                            multipart = Some(parts);
                        }
                    }
                }
            }
            Some(Upload::Commit) => {
                drop(rx);
                match multipart {
                    // `finish` sends the last part, waits for all, completes; on failure it
                    // aborts the upload itself.
                    Some(parts) => {
                        parts.finish().await.map_err(|e| s3_error("CompleteMultipartUpload", &path, e))?;
                    }
                    None => {
                        store
                            .put(&path, PutPayload::from_iter(first))
                            .await
                            .map_err(|e| s3_error("PutObject", &path, e))?;
                    }
                }
                return Ok(total);
            }
            None => {
                // The writer was dropped before its commit.
                abort(multipart, &path).await;
                return Err(io::Error::new(io::ErrorKind::Interrupted, format!("S3 upload of {path} abandoned")));
            }
        }
    }
}

/// Adds `bytes` (shorter than a part) to the multipart upload; when they complete a part, first
/// waits until fewer than [`PARTS_IN_FLIGHT`] parts are being sent.
async fn put(
    parts: &mut WriteMultipart,
    gathered: &mut usize,
    part_size: usize,
    bytes: Bytes,
) -> object_store::Result<()> {
    debug_assert!(bytes.len() < part_size);
    if *gathered + bytes.len() >= part_size {
        parts.wait_for_capacity(PARTS_IN_FLIGHT).await?;
    }
    *gathered = (*gathered + bytes.len()) % part_size;
    parts.put(bytes);
    Ok(())
}

async fn abort(multipart: Option<WriteMultipart>, path: &Path) {
    if let Some(parts) = multipart {
        if let Err(error) = parts.abort().await {
            tracing::warn!(%path, %error, "cannot abort an abandoned S3 multipart upload");
        }
    }
}

/// A blob opened for reading.
pub struct S3Blob {
    inner: Arc<Inner>,
    path: Path,
    len: u64,
}

impl S3Blob {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes `start..end` (clamped to the blob) as a stream of chunks: one ranged
    /// `GetObject`, sent when the stream is first polled.
    pub fn stream(&self, start: u64, end: u64) -> S3Stream {
        let end = end.min(self.len);
        let start = start.min(end);
        S3Stream {
            state: if start == end {
                Reading::Done
            } else {
                Reading::Idle { inner: self.inner.clone(), path: self.path.clone() }
            },
            start,
            pos: start,
            end,
        }
    }
}

enum Reading {
    /// Not polled yet: no request made.
    Idle {
        inner: Arc<Inner>,
        path: Path,
    },
    Receiving(mpsc::Receiver<io::Result<Bytes>>),
    Done,
}

/// A range of a blob, received in chunks from its download job (at most [`CHANNEL_CHUNKS`] + 1
/// chunks of up to [`READ_CHUNK_BYTES`] waiting). Dropping it stops the download.
pub struct S3Stream {
    state: Reading,
    start: u64,
    pos: u64,
    end: u64,
}

impl Stream for S3Stream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                Reading::Done => return Poll::Ready(None),
                Reading::Idle { inner, path } => {
                    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
                    let reader = inner.reader.clone();
                    let path = path.clone();
                    let range = this.start..this.end;
                    match inner.egress.run(move || download(reader, path, range, tx)) {
                        // The job's own answer is not needed: everything comes over `rx`, and
                        // the job ends when `rx` is dropped.
                        Ok(_job) => this.state = Reading::Receiving(rx),
                        Err(e) => {
                            this.state = Reading::Done;
                            return Poll::Ready(Some(Err(egress_error(e))));
                        }
                    }
                }
                Reading::Receiving(rx) => {
                    let item = std::task::ready!(Pin::new(rx).poll_next(cx));
                    return Poll::Ready(match item {
                        Some(Ok(chunk)) => {
                            this.pos += chunk.len() as u64;
                            if this.pos > this.end {
                                this.state = Reading::Done;
                                Some(Err(io::Error::new(io::ErrorKind::InvalidData, "S3 sent more than the range")))
                            } else {
                                Some(Ok(chunk))
                            }
                        }
                        Some(Err(e)) => {
                            this.state = Reading::Done;
                            Some(Err(e))
                        }
                        None => {
                            this.state = Reading::Done;
                            if this.pos < this.end {
                                // The job ended without saying why (a shutdown, a panic).
                                Some(Err(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "S3 download ended before its range's end",
                                )))
                            } else {
                                None
                            }
                        }
                    });
                }
            }
        }
    }
}

/// The job of one download, on the egress runtime: a ranged GET whose body goes to `tx` in chunks
/// of up to [`READ_CHUNK_BYTES`]. Ends when the body does or the reader is gone.
async fn download(
    store: Arc<dyn ObjectStore>,
    path: Path,
    range: std::ops::Range<u64>,
    mut tx: mpsc::Sender<io::Result<Bytes>>,
) {
    let options = GetOptions { range: Some(GetRange::Bounded(range)), ..GetOptions::default() };
    let mut body = match store.get_opts(&path, options).await {
        Ok(result) => result.into_stream(),
        Err(e) => {
            let _ = send(&mut tx, Err(s3_error("GET", &path, e))).await;
            return;
        }
    };
    let mut staged = BytesMut::new();
    let mut ended = false;
    loop {
        let next = poll_fn(|cx| gather(body.as_mut(), &mut staged, &mut ended, cx)).await;
        let item = match next {
            None => return,
            Some(Ok(chunk)) => Ok(chunk),
            Some(Err(e)) => Err(s3_error("GET", &path, e)),
        };
        let failed = item.is_err();
        if !send(&mut tx, item).await || failed {
            return;
        }
    }
}

/// The next chunk of a body: what is there now, up to [`READ_CHUNK_BYTES`] (a chunk that large
/// on its own goes as it is); waits only when nothing is there.
fn gather(
    mut body: Pin<&mut (dyn Stream<Item = object_store::Result<Bytes>> + Send)>,
    staged: &mut BytesMut,
    ended: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Option<object_store::Result<Bytes>>> {
    loop {
        if staged.len() >= READ_CHUNK_BYTES || (*ended && !staged.is_empty()) {
            return Poll::Ready(Some(Ok(staged.split().freeze())));
        }
        if *ended {
            return Poll::Ready(None);
        }
        match body.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if staged.is_empty() && chunk.len() >= READ_CHUNK_BYTES / 2 {
                    return Poll::Ready(Some(Ok(chunk)));
                }
                if staged.capacity() - staged.len() < chunk.len() {
                    staged.reserve(READ_CHUNK_BYTES.max(chunk.len()));
                }
                staged.extend_from_slice(&chunk);
            }
            Poll::Ready(Some(Err(e))) => {
                *ended = true;
                staged.clear();
                return Poll::Ready(Some(Err(e)));
            }
            Poll::Ready(None) => *ended = true,
            Poll::Pending if staged.is_empty() => return Poll::Pending,
            Poll::Pending => return Poll::Ready(Some(Ok(staged.split().freeze()))),
        }
    }
}

/// Sends one item, waiting for room; `false` when the reader is gone.
async fn send<T>(tx: &mut mpsc::Sender<T>, item: T) -> bool {
    match poll_fn(|cx| tx.poll_ready(cx)).await {
        Ok(()) => tx.start_send(item).is_ok(),
        Err(_) => false,
    }
}

/// Whether `error` is a full egress queue (the caller answers 503).
pub fn is_busy(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::ResourceBusy
}

fn egress_error(error: EgressError) -> io::Error {
    let kind = match error {
        EgressError::Busy(_) => io::ErrorKind::ResourceBusy,
        EgressError::Closed | EgressError::Cancelled => io::ErrorKind::Interrupted,
        EgressError::Panicked(_) => io::ErrorKind::Other,
    };
    io::Error::new(kind, error)
}

/// An `object_store` error as an `io::Error`: `NotFound`, `AlreadyExists` and timeouts keep
/// their kind; the message names the request and the key.
fn s3_error(request: &str, path: &Path, error: object_store::Error) -> io::Error {
    let kind = match &error {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
        e if is_timeout(e) => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("S3 {request} {path}: {error}"))
}

fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<HttpError>().is_some_and(|h| matches!(h.kind(), HttpErrorKind::Timeout)) {
            return true;
        }
        if e.downcast_ref::<reqwest::Error>().is_some_and(reqwest::Error::is_timeout) {
            return true;
        }
        next = e.source();
    }
    false
}

/// The prefix as a key path: `None` when empty; an error for `.`/`..` or empty segments.
fn normalize_prefix(prefix: &str) -> Result<Option<Path>, String> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(format!("storage S3: the prefix {prefix:?} has an empty, `.` or `..` segment"));
    }
    Path::parse(trimmed).map(Some).map_err(|e| format!("storage S3: the prefix {prefix:?}: {e}"))
}

/// The endpoint object_store wants: as given for path-style requests; with the bucket as the
/// first label of the host for virtual-hosted ones (`https://bucket.host`), as the AWS SDK builds
/// it for Supabase Storage.
fn endpoint_url(endpoint: &str, bucket: &str, path_style: bool) -> Result<String, String> {
    let endpoint = endpoint.trim_end_matches('/');
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return Err(format!("storage S3: the endpoint {endpoint:?} is not an http:// or https:// URL"));
    };
    if !matches!(scheme, "http" | "https") || rest.is_empty() {
        return Err(format!("storage S3: the endpoint {endpoint:?} is not an http:// or https:// URL"));
    }
    Ok(if path_style { endpoint.to_owned() } else { format!("{scheme}://{bucket}.{rest}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress() -> Egress {
        Egress::start(1, 4).expect("egress")
    }

    fn settings() -> S3Settings {
        S3Settings {
            bucket: "b".to_owned(),
            endpoint: Some("http://127.0.0.1:9".to_owned()),
            access_key_id: "k".to_owned(),
            secret_access_key: "s".to_owned(),
            force_path_style: true,
            ..S3Settings::default()
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(endpoint_url("http://127.0.0.1:9000/", "b", true).unwrap(), "http://127.0.0.1:9000");
        assert_eq!(endpoint_url("https://minio.example", "bk", false).unwrap(), "https://bk.minio.example");
        assert!(endpoint_url("minio:9000", "b", true).is_err());
        assert!(endpoint_url("ftp://x", "b", true).is_err());
    }

    #[test]
    fn prefixes_and_keys() {
        assert_eq!(normalize_prefix("").unwrap(), None);
        assert_eq!(normalize_prefix("/").unwrap(), None);
        assert_eq!(normalize_prefix("/a/b/").unwrap(), Some(Path::from("a/b")));
        assert!(normalize_prefix("a//b").is_err());
        assert!(normalize_prefix("a/../b").is_err());
        let v = crate::store::new_version();
        let store =
            S3Store::new(&S3Settings { prefix: "/madbase/objects/".to_owned(), ..settings() }, egress()).unwrap();
        assert_eq!(store.blob_path(&v).unwrap().as_ref(), format!("madbase/objects/{v}"));
        assert_eq!(store.location(), "s3://b/madbase/objects");
        let store = S3Store::new(&settings(), egress()).unwrap();
        assert_eq!(store.blob_path(&v).unwrap().as_ref(), v);
        assert_eq!(store.blob_path("../x").unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn refused_settings() {
        let e = egress();
        assert!(S3Store::new(&S3Settings { bucket: String::new(), ..settings() }, e.clone()).is_err());
        assert!(S3Store::new(&S3Settings { part_size: MIN_PART_SIZE - 1, ..settings() }, e.clone()).is_err());
        assert!(S3Store::new(&S3Settings { secret_access_key: String::new(), ..settings() }, e.clone()).is_err());
        assert!(S3Store::new(&S3Settings { request_timeout: Duration::ZERO, ..settings() }, e.clone()).is_err());
        assert!(S3Store::new(&S3Settings { endpoint: Some("minio".to_owned()), ..settings() }, e.clone()).is_err());
        let shown = format!("{:?}", S3Settings { secret_access_key: "hunter2".to_owned(), ..settings() });
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
