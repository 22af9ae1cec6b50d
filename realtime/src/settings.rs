//! Realtime's settings: `[realtime]`. `enabled` is the Supabase CLI's key; the limits carry the
//! names and self-hosting defaults of Supabase Realtime's tenant settings
//! (`max_concurrent_users`, `max_events_per_second`, …), so an operator's Supabase knowledge
//! carries over; the rest are MadBase's own bounds (send queues, history, checks in flight).
//!
//! Invariants: a value that passed [`Realtime::validate`] is usable as it is — every limit is at
//! least 1, payload limits fit the WebSocket frame bound, the replay cap is Supabase's 25.

use std::time::Duration;

use madbase_core::section;

section! {
    /// `[realtime]`: Supabase Realtime (`/realtime/v1`).
    pub struct Realtime {
        /// Serve `/realtime/v1`.
        pub enabled: bool = true,
        /// Concurrent WebSocket connections of the project (Supabase's `max_concurrent_users`) → join error `ConnectionRateLimitReached`.
        pub max_concurrent_users: usize = 200,
        /// Messages (broadcasts, presence, access tokens) one connection may send per second → system error and the channel closed.
        pub max_events_per_second: u32 = 100,
        /// Channel joins one connection may make per second → join error `ClientJoinRateLimitReached` and the socket closed.
        pub max_joins_per_second: u32 = 100,
        /// Channels one connection may have joined at once → join error `ChannelRateLimitReached`.
        pub max_channels_per_client: usize = 100,
        /// Bytes of payload one connection may send per second.
        pub max_bytes_per_second: u32 = 100_000,
        /// Presence messages (track, untrack) one connection may send per second → system error and the channel closed.
        pub max_presence_events_per_second: u32 = 100,
        /// Largest broadcast payload, KiB (Supabase's `max_payload_size_in_kb`).
        pub max_payload_size_in_kb: usize = 3000,
        /// Largest presence track payload, KiB → system error `Track message size exceeded`.
        pub max_presence_payload_size_in_kb: usize = 10,
        /// A changed row larger than this (bytes, JSON) is delivered with only its fields of at most 64 bytes and `Error 413: Payload Too Large` (Supabase's `poll_max_record_bytes`).
        pub max_record_bytes: usize = 1_048_576,
        /// Forbid public channels: a join without `config.private` is refused with `PrivateOnly`.
        pub private_only: bool = false,
        /// Messages waiting to be written to one connection; a consumer that falls behind is closed (1008).
        pub send_queue_messages: usize = 1024,
        /// Bytes waiting to be written to one connection; a consumer that falls behind is closed (1008).
        pub send_queue_bytes: usize = 4 * 1024 * 1024,
        /// Bytes of each socket read while a message arrives (between messages a connection waits with a 64-byte buffer).
        pub read_buffer_bytes: usize = 2048,
        /// Transactions of Postgres changes each shard keeps for clients that resume from a position (`config.postgres_changes_resume`).
        pub changes_history: usize = 1024,
        /// RLS check rounds a shard runs at once for Postgres changes; transactions that arrive meanwhile are checked together in the next round.
        pub checks_in_flight: usize = 2,
        /// Subscriber groups (same role and claims) checked per batch of RLS statements.
        pub check_groups_per_batch: usize = 256,
        /// PostgreSQL connections per shard for Realtime's authorisation checks.
        pub pool_size: usize = 2,
        /// The logical replication slot MadBase creates and streams.
        pub slot_name: String = "madbase_realtime".to_owned(),
        /// Stream Postgres changes (the replication core). Off: broadcast and presence only.
        pub replication: bool = true,
    }
}

/// Supabase's hard cap on replayed messages per join.
pub const REPLAY_LIMIT_MAX: usize = 25;

impl Realtime {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let positive: [(&str, u64); 14] = [
            ("max_concurrent_users", self.max_concurrent_users as u64),
            ("max_events_per_second", u64::from(self.max_events_per_second)),
            ("max_joins_per_second", u64::from(self.max_joins_per_second)),
            ("max_channels_per_client", self.max_channels_per_client as u64),
            ("max_bytes_per_second", u64::from(self.max_bytes_per_second)),
            ("max_presence_events_per_second", u64::from(self.max_presence_events_per_second)),
            ("max_payload_size_in_kb", self.max_payload_size_in_kb as u64),
            ("max_presence_payload_size_in_kb", self.max_presence_payload_size_in_kb as u64),
            ("max_record_bytes", self.max_record_bytes as u64),
            ("send_queue_messages", self.send_queue_messages as u64),
            ("send_queue_bytes", self.send_queue_bytes as u64),
            ("read_buffer_bytes", self.read_buffer_bytes as u64),
            ("checks_in_flight", self.checks_in_flight as u64),
            ("check_groups_per_batch", self.check_groups_per_batch as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("realtime.{key} must be at least 1"));
        }
        if self.pool_size == 0 {
            return Err("realtime.pool_size must be at least 1".to_owned());
        }
        if self.max_payload_size_in_kb > 16 * 1024 {
            return Err("realtime.max_payload_size_in_kb must be at most 16384 (16 MiB)".to_owned());
        }
        if self.slot_name.is_empty()
            || self.slot_name.len() > 63
            || !self.slot_name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err("realtime.slot_name must be 1-63 characters of a-z, 0-9 and _".to_owned());
        }
        Ok(())
    }

    /// The largest broadcast payload in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_size_in_kb * 1024
    }

    /// The largest presence payload in bytes.
    pub fn max_presence_payload_bytes(&self) -> usize {
        self.max_presence_payload_size_in_kb * 1024
    }

    /// Largest WebSocket message a client may send: a payload at the limit plus its envelope.
    pub fn max_message_bytes(&self) -> usize {
        self.max_payload_bytes() + 64 * 1024
    }

    /// The window rate limits are counted over.
    pub const RATE_WINDOW: Duration = Duration::from_secs(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_limits_are_not() {
        assert!(Realtime::default().validate().is_ok());
        let zero = Realtime { max_channels_per_client: 0, ..Realtime::default() };
        assert!(zero.validate().unwrap_err().contains("max_channels_per_client"));
        let slot = Realtime { slot_name: "Bad-Name".into(), ..Realtime::default() };
        assert!(slot.validate().is_err());
    }
}
