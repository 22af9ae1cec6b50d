//! The decoded changes the replication core hands every shard: the contract between the core
//! (`replication`, one thread) and the shards (`postgres_changes`, broadcast from the database).
//!
//! Owns: [`ChangeBatch`] (one committed transaction, decoded once and shared by every shard as an
//! `Arc`), [`Change`], [`Relation`], [`Row`] and the acknowledgement counter the core reads to
//! advance the slot's confirmed position.
//!
//! Invariants: a batch is immutable once published; values are rendered to JSON text once, by the
//! core, exactly as PostgreSQL's `to_jsonb` renders them (what Supabase's payloads carry), so a
//! shard only copies bytes; `Row::values` has one entry per column of its relation, in attribute
//! order; a batch is acknowledged by each shard exactly once (`ChangeBatch::taken`), and the core
//! confirms a position only when every shard has taken every batch up to it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A log sequence number.
pub type Lsn = u64;

/// Renders an LSN as PostgreSQL does (`16/B374D848`).
pub fn lsn_text(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn as u32)
}

/// Parses PostgreSQL's `X/Y` LSN text.
pub fn parse_lsn(text: &str) -> Option<Lsn> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// How a table logs its old rows (`pg_class.relreplident`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: the whole old row.
    Full,
    /// `i`: a unique index's columns.
    Index,
}

/// One column as pgoutput's Relation message describes it, with its type's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    /// `pg_type.typname` (`int8`, `_text`, an enum's name): what Supabase's `columns[].type` shows.
    pub type_name: String,
    /// Part of the replica identity (pgoutput's key flag).
    pub key: bool,
}

/// A table as the core last saw it described (pgoutput sends a Relation message before the
/// first change of a table in a session and after every change of its shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub table: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<Column>,
    /// Row level security is enabled on the table (`pg_class.relrowsecurity`): a change reaches a
    /// subscriber only if the subscriber may select the row.
    pub rls_enabled: bool,
    /// Indexes into `columns` of the primary key (empty when the table has none).
    pub primary_key: Vec<usize>,
}

/// A row image: one entry per column of the relation, in attribute order. `Some(json)` is the
/// value as `to_jsonb` renders it (`null` for SQL NULL); `None` is a column the image does not
/// carry (a non-key column of an old row under replica identity DEFAULT).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    pub values: Vec<Option<Box<str>>>,
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

impl ChangeKind {
    /// Supabase's `type` / `eventType` text.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "INSERT",
            ChangeKind::Update => "UPDATE",
            ChangeKind::Delete => "DELETE",
        }
    }
}

/// One row change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub relation: Arc<Relation>,
    pub kind: ChangeKind,
    /// The new row (INSERT, UPDATE; unchanged TOAST columns filled from the old row when it
    /// carries them, else `None`).
    pub record: Option<Row>,
    /// The old row (UPDATE when the identity changed or under FULL; DELETE).
    pub old_record: Option<Row>,
}

/// A row of `realtime.messages` inserted by a committed transaction (`realtime.send`,
/// `realtime.broadcast_changes`): fanned out as a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbMessage {
    pub id: String,
    /// The sub-topic (without `realtime:`).
    pub topic: String,
    pub event: String,
    /// The payload as JSON text.
    pub payload: Box<str>,
    pub private: bool,
}

/// One committed transaction, decoded.
#[derive(Debug)]
pub struct ChangeBatch {
    /// The commit record's end position: the position a client resumes after.
    pub end_lsn: Lsn,
    /// The transaction's id (pgoutput's Begin): RLS checks wait until it is visible.
    pub xid: u32,
    /// The commit time, `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, milliseconds), as Supabase renders it.
    pub commit_timestamp: String,
    /// Row changes of published tables, in commit order.
    pub changes: Vec<Change>,
    /// Inserts into `realtime.messages`, in commit order.
    pub messages: Vec<DbMessage>,
    /// Shards that have not taken the batch yet.
    pending: AtomicUsize,
}

impl ChangeBatch {
    /// A batch that `shards` shards must take before its position can be confirmed.
    pub fn new(
        end_lsn: Lsn,
        xid: u32,
        commit_timestamp: String,
        changes: Vec<Change>,
        messages: Vec<DbMessage>,
        shards: usize,
    ) -> ChangeBatch {
        ChangeBatch { end_lsn, xid, commit_timestamp, changes, messages, pending: AtomicUsize::new(shards) }
    }

    /// A shard has taken the batch (or will never take it: it exited). Call once per shard.
    pub fn taken(&self) {
        let before = self.pending.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "a batch taken more often than there are shards");
    }

    /// Every shard has taken the batch.
    pub fn is_taken(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }
}

/// Where the core publishes batches: the binary hands every shard a clone on its data ring.
/// Returns how many shards did *not* get it (exited or shutting down); the core counts those as
/// taken.
pub trait BatchSink: Send + 'static {
    fn publish(&mut self, batch: Arc<ChangeBatch>) -> usize;
    /// Number of shards a batch goes to.
    fn shards(&self) -> usize;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trip() {
        for lsn in [0u64, 1, 0x16_B374_D848, u64::MAX] {
            assert_eq!(parse_lsn(&lsn_text(lsn)), Some(lsn));
        }
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn a_batch_is_taken_once_by_each_shard() {
        let batch = ChangeBatch::new(1, 7, String::new(), Vec::new(), Vec::new(), 2);
        assert!(!batch.is_taken());
        batch.taken();
        assert!(!batch.is_taken());
        batch.taken();
        assert!(batch.is_taken());
    }
}
