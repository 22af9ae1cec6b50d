//! The service interface: what a service crate (`rest`, and `auth`, `realtime`, `storage`,
//! `functions` as they arrive) gives the binary, and what the binary's gateway needs to know of
//! it.
//!
//! Owns: [`Service`] (construct per shard — each service's own constructor, since each takes its
//! own settings section — then handle requests, handle its own typed messages, run singleton
//! tasks on its owner shard, drain on shutdown) and [`ServiceInfo`], one row of the binary's
//! services table (prefix, metrics label, CORS policy).
//!
//! Invariants: a service never imports another service or the binary; everything it needs from
//! the platform comes through [`ShardCtx`](crate::ShardCtx) and its constructor's arguments, and
//! everything it sends to other shards is its own `Message` type, wrapped by the binary.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use madbase_http::{Body, Request, Response};

/// A task that runs on one shard until shutdown.
pub type LocalTask = Pin<Box<dyn Future<Output = ()>>>;

/// How the gateway answers browsers for a service (Supabase's gateway runs Kong's `cors` plugin
/// in front of every service; some services expose their own response headers too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cors {
    /// `Access-Control-Allow-Origin: *` only.
    Gateway,
    /// And these response headers exposed to scripts (`Access-Control-Expose-Headers`).
    Expose(&'static str),
    /// None from the gateway: preflights reach the service and its answers go out as they are
    /// (Supabase's Edge Functions answer CORS themselves).
    Service,
}

/// One row of the services table: the router, `/metrics` and the access log all read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The mount point (`/rest/v1`): a path is this service's when it equals the prefix or
    /// continues it with `/`.
    pub prefix: &'static str,
    /// The metrics and access-log label (`rest`).
    pub label: &'static str,
    pub cors: Cors,
}

impl ServiceInfo {
    /// Does `path` belong to this service?
    pub fn owns(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// A service on one shard.
pub trait Service: 'static {
    /// What this service's instances send each other across shards (wrapped by the binary).
    type Message: Send + 'static;

    /// Its row of the services table.
    const INFO: ServiceInfo;

    /// Answers one request whose path is under [`ServiceInfo::prefix`].
    fn handle(&self, req: &Request, body: Body) -> impl Future<Output = Response>;

    /// Applies a message another shard's instance sent.
    fn on_message(&self, message: Self::Message);

    /// Singleton tasks, started on the service's owner shard only (the one shard that, say,
    /// holds the `LISTEN` connection). Each ends when the shard shuts down.
    fn owner_tasks(self: &Rc<Self>) -> Vec<LocalTask> {
        Vec::new()
    }

    /// Called once after the shard stopped serving: release what the service holds.
    fn drain(&self) {}
}
