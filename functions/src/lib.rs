//! Edge Functions (`/functions/v1`): WebAssembly components targeting the standard
//! `wasi:http/proxy` world, run in Wasmtime on the shards (reference/functions.md).
//!
//! Owns: [`FunctionsService`] (one per shard: invocation, the deploy API, the shard's
//! admission count and counters), [`Shared`] (engine, settings, master key, the published
//! registry of deployments), the `[edge_runtime]` and `[functions.<name>]` settings, and the
//! host interface `madbase:functions` (`wit/madbase.wit`).
//!
//! Invariants: a request takes one registry version and finishes on it; every instance is
//! fresh (one `Store` per invocation, dropped at its end), so no state leaks between calls;
//! nothing a guest does blocks its shard for longer than one epoch tick.

// A refusal here is the response itself (`Result<_, Response>`), built once on a cold path.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod engine;
pub mod host;
pub mod invoke;
pub mod metrics;
pub mod registry;
pub mod secrets;
pub mod settings;
pub mod sql;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use madbase_core::context::LaneSpec;
use madbase_core::service::{Cors, Service, ServiceInfo};
use madbase_core::ShardCtx;
use madbase_http::{Body, Request, Response};

pub use registry::Shared;
pub use settings::{EdgeRuntime, Functions};

/// The PostgreSQL lane of functions' statements and the deploy API's.
pub const LANE: &str = "functions";

/// One shard's Functions state.
pub struct Inner {
    pub ctx: Rc<ShardCtx>,
    pub shared: Arc<Shared>,
    /// Instances running on this shard.
    pub running: Rc<Cell<usize>>,
    pub stats: metrics::Stats,
    view: registry::ShardView,
}

/// Edge Functions on one shard.
pub struct FunctionsService {
    inner: Inner,
}

impl FunctionsService {
    /// The lane Functions needs on every shard.
    pub fn lane(connections: usize) -> LaneSpec {
        LaneSpec { name: LANE, connections }
    }

    /// Functions on this shard. Makes the egress runtime the shard thread's ambient tokio
    /// context: `wasmtime-wasi`'s timers and `wasi:http` tasks need one (see `madbase-egress`).
    pub fn new(ctx: Rc<ShardCtx>, shared: Arc<Shared>) -> FunctionsService {
        shared.egress.enter_for_this_thread();
        let stats = metrics::Stats::new(ctx.clone());
        FunctionsService {
            inner: Inner { ctx, shared, running: Rc::default(), stats, view: registry::ShardView::default() },
        }
    }

    /// This shard's per-function series as Prometheus text (with its `shard` label).
    pub fn render_metrics(&self, shard: usize, out: &mut String) {
        let registry = self.inner.view.current(&self.inner.shared);
        self.inner.stats.retain(|name| registry.functions.contains_key(name));
        self.inner.stats.render(shard, out);
    }
}

impl Service for FunctionsService {
    type Message = ();
    const INFO: ServiceInfo = ServiceInfo { prefix: "/functions/v1", label: "functions", cors: Cors::Service };

    async fn handle(&self, req: &Request, body: Body) -> Response {
        let inner = &self.inner;
        let path = &req.path()[Self::INFO.prefix.len()..];
        if let Some(rest) = path.strip_prefix("/_admin/") {
            return admin::route(inner, req, body, rest).await;
        }
        // `/<name>[/sub/path]`: the function sees exactly this path.
        let name = path.trim_start_matches('/').split('/').next().unwrap_or("");
        if !settings::valid_name(name) {
            return invoke::not_found();
        }
        let registry = inner.view.current(&inner.shared);
        invoke::invoke(inner, registry, req, body, name, path).await
    }

    fn on_message(&self, _message: ()) {}

    fn owner_tasks(self: &Rc<Self>) -> Vec<madbase_core::service::LocalTask> {
        vec![Box::pin(registry::watch(self.inner.ctx.clone(), self.inner.shared.clone()))]
    }
}
