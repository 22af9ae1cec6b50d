//! Storage (`/storage/v1`): Supabase Storage's API on the shards (reference/storage.md).
//!
//! Owns: [`StorageService`] (one per shard: the routes, the Storage lane of PostgreSQL
//! connections its statements run on), [`Shared`] (the settings, the object store and the signing
//! keys, one per process) and the `[storage]` settings. Built: buckets (`bucket.rs`), uploads
//! (`upload.rs`), the other object routes (`object.rs`), signed URLs (`sign.rs`) on the
//! file-system store (`store.rs`).
//!
//! Invariants: every metadata statement runs as the caller's role with its claims, so the
//! project's row level security on `storage.*` decides as on Supabase; every refusal is Supabase
//! Storage's error envelope (`error.rs`); a request body is read up to a bound.

pub mod backend;
pub mod bucket;
pub mod caller;
pub mod db;
pub mod declared;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod multipart;
pub mod object;
pub mod render;
pub mod s3;
pub mod settings;
pub mod sign;
pub mod store;
pub mod sweep;
pub mod transform;
pub mod tus;
pub mod upload;

use std::rc::Rc;
use std::sync::Arc;

use madbase_core::context::LaneSpec;
use madbase_core::jwt::JwtKeys;
use madbase_core::service::{Cors, Service, ServiceInfo};
use madbase_core::ShardCtx;
use madbase_http::{Body, Request, Response};

pub use settings::Storage;

use crate::backend::Backend;
use crate::error::StorageError;
use crate::object::{Access, ObjectPath};
use crate::store::FileStore;
use crate::upload::Mode;

/// The PostgreSQL lane of Storage's statements.
pub const LANE: &str = "storage";

/// Storage's process-wide state: immutable after start.
pub struct Shared {
    pub settings: Storage,
    /// The local store under the data dir: objects with the file backend, and resumable uploads'
    /// parts with either.
    pub store: FileStore,
    /// Where objects' bytes live.
    pub backend: Backend,
    /// Signs and verifies the signed-URL tokens (the project's JWT keys).
    pub keys: Arc<JwtKeys>,
}

impl Shared {
    /// The state for `settings`, its local store under `root` (`<data_dir>/storage`); `egress`
    /// runs the S3 client when `backend = "s3"`.
    pub fn new(
        settings: Storage,
        root: &std::path::Path,
        keys: Arc<JwtKeys>,
        egress: Option<madbase_egress::Egress>,
    ) -> Result<Arc<Shared>, String> {
        let store = FileStore::open(root).map_err(|e| format!("cannot open {}: {e}", root.display()))?;
        let backend = match settings.backend.as_str() {
            "s3" => {
                let egress = egress.ok_or("storage.backend = \"s3\" needs the egress runtime")?;
                Backend::S3(s3::S3Store::new(&settings.s3(), egress)?)
            }
            _ => Backend::File(store.clone()),
        };
        Ok(Arc::new(Shared { settings, store, backend, keys }))
    }

    /// Whether the S3 backend is configured (the binary then starts the egress runtime).
    pub fn needs_egress(settings: &Storage) -> bool {
        settings.enabled && settings.backend == "s3"
    }
}

/// One shard's Storage state.
pub struct Inner {
    pub ctx: Rc<ShardCtx>,
    pub shared: Arc<Shared>,
    pub counters: Rc<metrics::Counters>,
    pub renderer: render::Renderer,
}

impl std::ops::Deref for Inner {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// Storage on one shard.
pub struct StorageService {
    inner: Inner,
}

impl StorageService {
    /// The lane Storage needs on every shard.
    pub fn lane(connections: usize) -> LaneSpec {
        LaneSpec { name: LANE, connections }
    }

    pub fn new(ctx: Rc<ShardCtx>, shared: Arc<Shared>) -> StorageService {
        let transformation = &shared.settings.image_transformation;
        let renderer = render::Renderer::new(transformation.max_concurrent, transformation.cache_bytes);
        StorageService { inner: Inner { ctx, shared, counters: Rc::default(), renderer } }
    }

    /// This shard's series for `/metrics`.
    pub fn series(&self) -> Vec<madbase_core::metrics::ServiceSeries> {
        self.inner.counters.series()
    }

    async fn route(&self, req: &Request, body: Body) -> Result<Response, StorageError> {
        let inner = &self.inner;
        let path = &req.path()[Self::INFO.prefix.len()..];
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (req.method(), segments.as_slice()) {
            ("GET", ["bucket"] | ["bucket", ""]) => bucket::list(inner, req, &caller::caller(&inner.ctx, req)?).await,
            ("POST", ["bucket"] | ["bucket", ""]) => {
                bucket::create(inner, req, body, &caller::caller(&inner.ctx, req)?).await
            }
            ("GET", ["bucket", id]) => bucket::get(inner, &caller::caller(&inner.ctx, req)?, &decode(id)?).await,
            ("PUT", ["bucket", id]) => {
                bucket::update(inner, req, body, &caller::caller(&inner.ctx, req)?, &decode(id)?).await
            }
            ("DELETE", ["bucket", id]) => bucket::delete(inner, &caller::caller(&inner.ctx, req)?, &decode(id)?).await,
            ("POST", ["bucket", id, "empty"]) => {
                bucket::empty(inner, &caller::service_role(&inner.ctx, req)?, &decode(id)?).await
            }
            (_, ["object", ..]) => self.object_route(req, body, &segments[1..]).await,
            (_, ["upload", "resumable", rest @ ..]) => Ok(tus::handle(inner, req, body, rest).await),
            (_, ["render", "image", rest @ ..]) => render::handle(inner, req, rest).await,
            _ => Ok(StorageError::route_not_found(req.method(), req.path())),
        }
    }
}

impl StorageService {
    /// `/object/…`. Fixed first segments (`public`, `sign`, `info`, …) take precedence over a
    /// bucket of that name, as in Supabase Storage's router.
    async fn object_route(&self, req: &Request, body: Body, rest: &[&str]) -> Result<Response, StorageError> {
        let inner = &self.inner;
        let caller = || caller::caller(&inner.ctx, req);
        let path = |bucket: &str, key: &[&str]| ObjectPath::parse(bucket, &key.join("/"));
        let method = req.method();
        let get_or_head = method == "GET" || method == "HEAD";
        match rest {
            ["move"] if method == "POST" => object::move_object(inner, req, body, &caller()?).await,
            ["copy"] if method == "POST" => object::copy_object(inner, req, body, &caller()?).await,
            ["list", bucket] if method == "POST" => object::list(inner, req, body, &caller()?, &decode(bucket)?).await,
            ["list-v2", bucket] if method == "POST" => {
                object::list_v2(inner, req, body, &caller()?, &decode(bucket)?).await
            }
            ["public", bucket, key @ ..] if get_or_head && !key.is_empty() => {
                object::download(inner, req, None, &path(bucket, key)?, Access::Public).await
            }
            ["authenticated", bucket, key @ ..] if get_or_head && !key.is_empty() => {
                object::download(inner, req, Some(&caller()?), &path(bucket, key)?, Access::Caller).await
            }
            ["info", "public", bucket, key @ ..] if get_or_head && !key.is_empty() => {
                object::info(inner, None, &path(bucket, key)?, Access::Public).await
            }
            ["info", "authenticated", bucket, key @ ..] | ["info", bucket, key @ ..]
                if get_or_head && !key.is_empty() =>
            {
                object::info(inner, Some(&caller()?), &path(bucket, key)?, Access::Caller).await
            }
            ["sign", bucket] if method == "POST" => {
                sign::create_urls(inner, req, body, &caller()?, &decode(bucket)?).await
            }
            ["sign", bucket, key @ ..] if method == "POST" && !key.is_empty() => {
                sign::create_url(inner, req, body, &caller()?, &path(bucket, key)?).await
            }
            ["sign", bucket, key @ ..] if get_or_head && !key.is_empty() => {
                sign::download(inner, req, &path(bucket, key)?).await
            }
            ["upload", "sign", bucket, key @ ..] if method == "POST" && !key.is_empty() => {
                sign::create_upload_url(inner, req, &caller()?, &path(bucket, key)?).await
            }
            ["upload", "sign", bucket, key @ ..] if method == "PUT" && !key.is_empty() => {
                sign::upload(inner, req, body, &path(bucket, key)?).await
            }
            [bucket] if method == "DELETE" => object::delete_many(inner, req, body, &caller()?, &decode(bucket)?).await,
            [bucket, key @ ..] if !key.is_empty() => {
                let path = path(bucket, key)?;
                match method {
                    "GET" | "HEAD" => object::download(inner, req, Some(&caller()?), &path, Access::Caller).await,
                    "DELETE" => object::delete_one(inner, &caller()?, &path).await,
                    "POST" | "PUT" => {
                        let caller = caller()?;
                        let mode = if method == "PUT" || req.header_str("x-upsert") == Some("true") {
                            Mode::Upsert
                        } else {
                            Mode::Create
                        };
                        let uploaded =
                            upload::upload(inner, req, body, &caller, caller.sub.as_deref(), &path, mode).await?;
                        Ok(upload::uploaded_response(&uploaded, &path))
                    }
                    _ => Ok(StorageError::route_not_found(method, req.path())),
                }
            }
            _ => Ok(StorageError::route_not_found(method, req.path())),
        }
    }
}

/// A path segment, percent-decoded (as Fastify hands route parameters over).
fn decode(segment: &str) -> Result<String, StorageError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| StorageError::invalid_request("Invalid path encoding"))
}

impl Service for StorageService {
    type Message = ();

    const INFO: ServiceInfo = ServiceInfo { prefix: "/storage/v1", label: "storage", cors: Cors::Gateway };

    async fn handle(&self, req: &Request, body: Body) -> Response {
        match self.route(req, body).await {
            Ok(response) => response,
            Err(error) => error.response(),
        }
    }

    fn on_message(&self, _message: ()) {}

    fn owner_tasks(self: &Rc<Self>) -> Vec<madbase_core::service::LocalTask> {
        vec![Box::pin(sweep::sweep_forever(self.inner.ctx.clone(), self.inner.shared.clone()))]
    }
}
