//! Storage (`/storage/v1`): Supabase Storage's API on the shards (reference/storage.md).
//!
//! Owns: [`StorageService`] (one per shard: the routes, the Storage lane of PostgreSQL
//! connections its statements run on) and the `[storage]` settings. Built so far: the bucket API
//! (`bucket.rs`); object routes answer as unknown routes until the object store lands.
//!
//! Invariants: every metadata statement runs as the caller's role with its claims, so the
//! project's row level security on `storage.*` decides as on Supabase; every refusal is Supabase
//! Storage's error envelope (`error.rs`); a request body is read up to a bound.

pub mod bucket;
pub mod caller;
pub mod error;
pub mod limits;
pub mod settings;

use std::rc::Rc;
use std::sync::Arc;

use madbase_core::context::LaneSpec;
use madbase_core::service::{Cors, Service, ServiceInfo};
use madbase_core::ShardCtx;
use madbase_http::{Body, Request, Response};

pub use settings::Storage;

use crate::error::StorageError;

/// The PostgreSQL lane of Storage's statements.
pub const LANE: &str = "storage";

/// One shard's Storage state.
pub struct Inner {
    pub ctx: Rc<ShardCtx>,
    pub settings: Arc<Storage>,
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

    pub fn new(ctx: Rc<ShardCtx>, settings: Arc<Storage>) -> StorageService {
        StorageService { inner: Inner { ctx, settings } }
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
            _ => Ok(StorageError::route_not_found(req.method(), req.path())),
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
}
