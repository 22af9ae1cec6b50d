//! `madbase-core`: the platform every MadBase service is built on, and nothing service-specific.
//!
//! Owns:
//! - [`context`]: the per-shard context ([`ShardCtx`]: blocking pool, shutdown signal, PostgreSQL lanes,
//!   verified-token cache, metrics registry) and a service's typed [`Outbox`] to other shards;
//! - [`service`]: the service interface and the row of the services table;
//! - [`snapshot`]: state all shards read and that is swapped whole;
//! - [`settings`] and [`platform`]: the Supabase-shaped configuration machinery and the
//!   platform's own sections;
//! - [`jwt`] and [`identity`]: token verification and the role a request runs as;
//! - [`metrics`] and [`coalesce`]: per-shard counters and shared probe answers.
//!
//! Invariants: this crate depends on no service crate and not on the binary; every service
//! depends on it. Everything per-shard here is `!Send`.

pub mod coalesce;
pub mod context;
pub mod identity;
pub mod ids;
pub mod jwt;
pub mod metrics;
pub mod platform;
pub mod service;
pub mod settings;
pub mod snapshot;

pub use context::{LaneSpec, Lanes, Outbox, ShardCtx};
pub use service::{Cors, LocalTask, Service, ServiceInfo};
pub use snapshot::Snapshot;
