//! MadBase's Realtime (`/realtime/v1`): Supabase Realtime's Phoenix-channel protocol on the
//! shards — broadcast, presence, Postgres changes, private channels — and the replication core
//! that streams `pgoutput` changes to every shard.
//!
//! Owns: the WebSocket sessions and their channels (each shard owns the sockets it accepted and
//! their subscriptions), the cross-shard fan-out of broadcasts and presence, the replication
//! core's thread, the authorisation of changes and private channels by PostgreSQL's RLS, and the
//! `[realtime]` settings.

pub mod changes;
// The replication core (rt-repl): pgoutput decoding, value rendering, the core's thread.
pub mod pgoutput;
pub mod render;
pub mod replication;
