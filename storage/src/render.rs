//! `/render/image/{authenticated|public|sign}/{bucket}/{key}` (reference/storage.md §6): an
//! object transformed by `transform.rs` — authorised as a download of the same object, the options
//! from the query (or from a signed URL's `transformations` claim), the format negotiated with
//! `Accept`, answered with Supabase's headers (`X-Transformations`, the object's `ETag` and cache
//! control).
//!
//! Owns: each shard's cache of results ([`RenderCache`]) and its limit on transforms in flight.
//! Invariants: a source is read into memory only within the transform limit's source size (the
//! row's size is checked first, the read stops at the limit); at most
//! `[storage.image_transformation] max_concurrent` transforms per shard run at once, on the
//! blocking pool, never on the shard; the cache holds at most `cache_bytes` per shard, keyed by
//! the object's version (a new upload is a new key), the options and the output format.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use local_sync::semaphore::Semaphore;
use madbase_http::{Request, Response};

use crate::caller;
use crate::error::StorageError;
use crate::metrics::add;
use crate::object::{self, Access, ObjectPath};
use crate::sign::{self, SCOPE_DOWNLOAD};
use crate::transform::{self, Limits, OutputFormat, TransformError, TransformOptions};
use crate::upload::io_error;
use crate::Inner;

/// One shard's rendering state.
pub struct Renderer {
    cache: RefCell<RenderCache>,
    running: Semaphore,
}

impl Renderer {
    pub fn new(max_concurrent: usize, cache_bytes: u64) -> Renderer {
        Renderer { cache: RefCell::new(RenderCache::new(cache_bytes)), running: Semaphore::new(max_concurrent.max(1)) }
    }
}

/// Rendered images by (version, options, format); evicts the oldest entries past its byte bound.
pub struct RenderCache {
    max_bytes: u64,
    bytes: u64,
    entries: HashMap<String, (Bytes, &'static str)>,
    order: VecDeque<String>,
}

impl RenderCache {
    fn new(max_bytes: u64) -> RenderCache {
        RenderCache { max_bytes, bytes: 0, entries: HashMap::new(), order: VecDeque::new() }
    }

    fn get(&self, key: &str) -> Option<(Bytes, &'static str)> {
        self.entries.get(key).cloned()
    }

    /// Keeps `image` unless it is over an eighth of the cache.
    fn insert(&mut self, key: String, image: Bytes, mime: &'static str) {
        let size = image.len() as u64;
        if size > self.max_bytes / 8 || self.entries.contains_key(&key) {
            return;
        }
        while self.bytes + size > self.max_bytes {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some((gone, _)) = self.entries.remove(&oldest) {
                self.bytes -= gone.len() as u64;
            }
        }
        self.bytes += size;
        self.order.push_back(key.clone());
        self.entries.insert(key, (image, mime));
        debug_assert!(self.bytes <= self.max_bytes && self.entries.len() == self.order.len());
    }
}

/// The route: `rest` is what follows `/render/image/`.
pub async fn handle(inner: &Inner, req: &Request, rest: &[&str]) -> Result<Response, StorageError> {
    if req.method() != "GET" && req.method() != "HEAD" {
        return Ok(StorageError::route_not_found(req.method(), req.path()));
    }
    let limits = Limits::default();
    let (access, bucket, key) = match rest {
        [mode @ ("authenticated" | "public" | "sign"), bucket, key @ ..] if !key.is_empty() => (*mode, *bucket, key),
        _ => return Ok(StorageError::route_not_found(req.method(), req.path())),
    };
    if !inner.settings.image_transformation.enabled {
        return Err(StorageError::feature_not_enabled("Image transformation is not enabled"));
    }
    let path = ObjectPath::parse(bucket, &key.join("/"))?;
    let query = req.query_pairs();
    let (caller, access, options) = match access {
        "authenticated" => (Some(caller::caller(&inner.ctx, req)?), Access::Caller, options_from(&query, &limits)?),
        "public" => (None, Access::Public, options_from(&query, &limits)?),
        _ => {
            let claims = sign::verify(inner, req, &path, SCOPE_DOWNLOAD)?;
            let claim = claims.get("transformations").and_then(|t| t.as_str()).unwrap_or("");
            (None, Access::Signed, TransformOptions::from_claim(claim, &limits).map_err(transform_error)?)
        }
    };
    let stored = object::find_for_download(inner, caller.as_ref(), &path, access).await?;
    let output = transform::output_format(&options, req.header_str("accept"));
    let image = render(inner, &stored, &options, output, &limits).await?;
    let Some((bytes, mime)) = image else { return Ok(object::resource_not_found()) };
    let mut response = Response::with_body(200, bytes);
    response.set_header("accept-ranges", "bytes");
    response.set_header("content-type", mime);
    response.set_header("x-robots-tag", "none");
    response.set_header("cache-control", stored.cache_control.clone());
    if let Some(etag) = &stored.etag {
        response.set_header("etag", etag.clone());
    }
    if let Some(modified) = &stored.last_modified {
        response.set_header("last-modified", modified.clone());
    }
    let applied = options.applied();
    if !applied.is_empty() {
        response.set_header("x-transformations", applied.join(","));
    }
    if let Some(name) = object::download_name(req) {
        response.set_header("content-disposition", object::content_disposition(&name));
    }
    Ok(response)
}

fn options_from(query: &[(String, String)], limits: &Limits) -> Result<TransformOptions, StorageError> {
    // `download` and `token` (and cache busters) ride along with the transform's own parameters.
    TransformOptions::from_query(query, limits).map_err(transform_error)
}

fn transform_error(error: TransformError) -> StorageError {
    tracing::debug!(%error, "image transformation refused");
    match error.status() {
        500 => StorageError::internal(),
        _ => StorageError::invalid_request(error.public_message()),
    }
}

/// The rendered image (from the cache, or made now); `None` when the object's bytes are missing.
async fn render(
    inner: &Inner,
    stored: &object::Stored,
    options: &TransformOptions,
    output: OutputFormat,
    limits: &Limits,
) -> Result<Option<(Bytes, &'static str)>, StorageError> {
    let version = stored.version.clone().unwrap_or_default();
    let key = format!("{version}|{}", options.cache_key(output));
    if let Some(hit) = inner.renderer.cache.borrow().get(&key) {
        add(&inner.counters.transform_cache_hits, 1);
        return Ok(Some(hit));
    }
    if stored.size.is_some_and(|size| size > limits.max_source_bytes) {
        return Err(transform_error(TransformError::SourceTooLarge));
    }
    let Some(blob) = object::open_stored(inner, stored).await? else { return Ok(None) };
    if blob.len() > limits.max_source_bytes {
        return Err(transform_error(TransformError::SourceTooLarge));
    }
    let source = read_all(blob.stream(0, blob.len()), limits.max_source_bytes).await?;
    let _permit = inner.renderer.running.acquire().await.map_err(|_| StorageError::internal())?;
    let started = Instant::now();
    let (options, limits) = (*options, *limits);
    let job = inner
        .ctx
        .blocking
        .spawn(move || transform::transform(&source, &options, output, &limits))
        .map_err(|_| StorageError::slow_down())?;
    let made = job.await.map_err(|_| StorageError::internal())?.map_err(transform_error)?;
    inner.ctx.metrics.record_duration("storage_transform", started.elapsed());
    let bytes = Bytes::from(made.bytes);
    inner.renderer.cache.borrow_mut().insert(key, bytes.clone(), made.mime);
    Ok(Some((bytes, made.mime)))
}

/// The whole of a (size-checked) source image.
async fn read_all(mut stream: crate::backend::BlobStream, max: u64) -> Result<Vec<u8>, StorageError> {
    use futures_core::Stream;
    let mut out = Vec::new();
    while let Some(chunk) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx)).await {
        let chunk = chunk.map_err(io_error)?;
        if (out.len() + chunk.len()) as u64 > max {
            return Err(transform_error(TransformError::SourceTooLarge));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_bounded_and_evicts_the_oldest() {
        let mut cache = RenderCache::new(80);
        cache.insert("a".into(), Bytes::from(vec![0; 10]), "image/webp");
        cache.insert("b".into(), Bytes::from(vec![0; 10]), "image/webp");
        cache.insert("huge".into(), Bytes::from(vec![0; 11]), "image/webp");
        assert!(cache.get("huge").is_none(), "over an eighth of the cache is not kept");
        for i in 0..8 {
            cache.insert(format!("k{i}"), Bytes::from(vec![0; 10]), "image/png");
        }
        assert!(cache.bytes <= 80);
        assert!(cache.get("a").is_none() && cache.get("b").is_none(), "the oldest went first");
        assert_eq!(cache.get("k7").map(|(b, m)| (b.len(), m)), Some((10, "image/png")));
    }
}
