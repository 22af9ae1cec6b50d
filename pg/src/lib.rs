//! `madbase-pg`: MadBase's PostgreSQL layer.
//!
//! - [`cluster`]: finding the server binaries, initialising/starting/stopping a managed cluster
//!   (and ephemeral ones for tests) as a supervised child process.
//! - [`config`]: connection settings and `postgres://` URL parsing.
//! - [`connection`]: one pipelined session on monoio (startup, auth, simple queries, batches).
//! - [`batch`]: the request model — a [`Batch`] is one API request, one transaction, one Sync.
//! - [`pool`]: a per-shard (`!Send`) pool of pipelined connections with reconnects and bounds,
//!   routing work (queued work included) around connections stalled behind a slow statement.
//! - [`error`]: typed errors ([`PgError`], [`DbError`]).
//! - [`replication`]: a blocking client for one dedicated thread: replication-mode sessions
//!   (`IDENTIFY_SYSTEM`, slots, `START_REPLICATION … LOGICAL`, the CopyBoth stream) and plain
//!   simple queries.
//! - [`notify`]: `LISTEN`/`NOTIFY` notifications a [`Connection`] queues for its owner (bounded).
//!
//! Everything async here (all but [`replication`]) runs on the calling shard's monoio runtime (timer enabled) and is
//! single-threaded by design: no locks, `Rc` instead of `Arc`.

mod auth;
pub mod batch;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod error;
pub mod notify;
pub mod pool;
pub mod replication;

pub use batch::{text_array_literal, Batch, Oid, Row, SimpleResult, Statement, StatementResult, TxEnd};
pub use cluster::{Cluster, ClusterError, ClusterOptions, ClusterStatus, PgBinaries};
pub use config::{ConnectConfig, Host};
pub use connection::{Connection, ConnectionStats};
pub use error::{DbError, PgError};
pub use notify::{Notification, NotificationQueue};
pub use pool::{Pool, PoolConfig, PoolStats};
pub use replication::{
    BlockingConnection, ReplicationError, ReplicationStream, SessionMode, StreamMessage, SystemInfo,
};
