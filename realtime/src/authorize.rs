//! Private-channel authorisation (Realtime Authorization, reference/realtime.md §11): what a
//! user may do on a sub-topic, decided by the project's RLS policies on `realtime.messages`
//! exactly as Supabase Realtime decides it, in one batch.
//!
//! Owns: [`private_channel_batch`] (the batch a shard sends on its realtime lane, logged in as
//! `authenticator`) and [`parse_private_channel`] (its four answers, [`ChannelPermissions`]).
//!
//! The batch, one implicit transaction, in order:
//! 1. as `authenticator` (the session user, before any role switch):
//!    `_madbase.realtime_stage_channel_probes(topic, id₁, id₂)` — a SECURITY DEFINER helper of
//!    migration 0009 that only `authenticator` may execute — inserts one `broadcast` and one
//!    `presence` probe row for the topic as the table's owner, so RLS does not apply to them;
//! 2. Supabase's settings, transaction-local: `role`, `realtime.topic`, `request.jwt.claims`,
//!    `request.jwt.claim.sub`, `request.jwt.claim.role`, `request.headers`;
//! 3. as the user's role, a `DO` block that inserts a `broadcast` and a `presence` row, each in
//!    its own exception block (= savepoint): an `insufficient_privilege` error (an insert policy
//!    that refuses, or no INSERT grant) means no write permission, any other error fails the
//!    check as on Supabase; the answers go to a transaction-local setting. A `DO` block rather
//!    than a function, so that the API roles (and any custom role a token names) get no new
//!    object to execute, and `_madbase` stays closed to them;
//! 4. as the user's role, `SELECT` of the two probe ids (read permission per extension: the
//!    row comes back through the user's select policies), plus the write answers;
//! 5. `ROLLBACK`: nothing staged, inserted or set is ever committed (so no probe reaches the
//!    messages publication).
//!
//! The probe ids are random per batch, generated here, so the read check never sees another
//! check's rows nor the write probes. A policy that raises fails the whole batch (Supabase
//! reports it as an RLS policy error); the caller refuses the join then.

use bytes::Bytes;
use madbase_pg::{Batch, Statement, StatementResult, TxEnd};

/// PostgreSQL's `text` type OID.
const TEXT: u32 = 25;

/// What the user may do on a private channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelPermissions {
    pub read_broadcast: bool,
    pub write_broadcast: bool,
    pub read_presence: bool,
    pub write_presence: bool,
}

impl ChannelPermissions {
    /// A public channel: everything allowed.
    pub const PUBLIC: ChannelPermissions =
        ChannelPermissions { read_broadcast: true, write_broadcast: true, read_presence: true, write_presence: true };
}

/// The check's result could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    #[error("the private-channel check returned {0} results, expected {STATEMENTS}")]
    Results(usize),
    #[error("the private-channel check returned an unexpected row: {0}")]
    Row(String),
}

const STATEMENTS: usize = 4;

const STAGE: &str = "select _madbase.realtime_stage_channel_probes($1, $2::uuid, $3::uuid)";

const SETTINGS: &str = "select set_config('role', $1, true), set_config('realtime.topic', $2, true), \
     set_config('request.jwt.claims', $3, true), \
     set_config('request.jwt.claim.sub', coalesce(nullif($3, '')::jsonb ->> 'sub', ''), true), \
     set_config('request.jwt.claim.role', $1, true), set_config('request.headers', $4, true)";

const WRITE: &str = "do $madbase$
declare
  probe_topic text := current_setting('realtime.topic', true);
  answers text;
begin
  begin
    insert into realtime.messages (topic, extension) values (probe_topic, 'broadcast');
    answers := 't';
  exception when insufficient_privilege then
    answers := 'f';
  end;
  begin
    insert into realtime.messages (topic, extension) values (probe_topic, 'presence');
    answers := answers || 't';
  exception when insufficient_privilege then
    answers := answers || 'f';
  end;
  perform set_config('madbase.realtime_write', answers, true);
end
$madbase$";

const READ: &str = "select coalesce(bool_or(m.extension = 'broadcast'), false), \
     coalesce(bool_or(m.extension = 'presence'), false), current_setting('madbase.realtime_write', true) \
     from realtime.messages m where m.id in ($1::uuid, $2::uuid)";

/// The check for `role` (the token's `role` claim), `claims_json` (the verified token's claims)
/// and `sub_topic` (the channel topic without `realtime:`), with `request.headers` = `{}`.
pub fn private_channel_batch(role: &str, claims_json: &str, sub_topic: &str) -> Batch {
    private_channel_batch_with_headers(role, claims_json, sub_topic, "{}")
}

/// [`private_channel_batch`] with the WebSocket upgrade's headers as `request.headers` (a JSON
/// object, names lower-cased), as Supabase sets them.
pub fn private_channel_batch_with_headers(role: &str, claims_json: &str, sub_topic: &str, headers_json: &str) -> Batch {
    let broadcast = madbase_core::ids::uuid_v4();
    let presence = madbase_core::ids::uuid_v4();
    Batch::new()
        .statement(
            Statement::new(STAGE)
                .bind(Bytes::copy_from_slice(sub_topic.as_bytes()))
                .bind(broadcast.clone())
                .bind(presence.clone())
                .param_types([TEXT, TEXT, TEXT]),
        )
        .statement(
            Statement::new(SETTINGS)
                .bind(Bytes::copy_from_slice(role.as_bytes()))
                .bind(Bytes::copy_from_slice(sub_topic.as_bytes()))
                .bind(Bytes::copy_from_slice(claims_json.as_bytes()))
                .bind(Bytes::copy_from_slice(headers_json.as_bytes()))
                .param_types([TEXT, TEXT, TEXT, TEXT]),
        )
        .query(WRITE)
        .statement(Statement::new(READ).bind(broadcast).bind(presence).param_types([TEXT, TEXT]))
        .end(TxEnd::Rollback)
}

/// The permissions from the results of a [`private_channel_batch`].
pub fn parse_private_channel(results: &[StatementResult]) -> Result<ChannelPermissions, AuthorizeError> {
    if results.len() != STATEMENTS {
        return Err(AuthorizeError::Results(results.len()));
    }
    let row = results[STATEMENTS - 1].rows.first().ok_or_else(|| AuthorizeError::Row("no row".into()))?;
    let flag = |i: usize| match row.get_str(i) {
        Some("t") => Ok(true),
        Some("f") => Ok(false),
        other => Err(AuthorizeError::Row(format!("column {i}: {other:?}"))),
    };
    let writes = row.get_str(2).unwrap_or_default().as_bytes();
    if writes.len() != 2 {
        return Err(AuthorizeError::Row(format!("write answers {:?}", row.get_str(2))));
    }
    Ok(ChannelPermissions {
        read_broadcast: flag(0)?,
        read_presence: flag(1)?,
        write_broadcast: writes[0] == b't',
        write_presence: writes[1] == b't',
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_stages_then_switches_role_and_rolls_back() {
        let batch = private_channel_batch("authenticated", r#"{"sub":"u","role":"authenticated"}"#, "room-1");
        assert!(batch.settings.is_empty(), "the role switch must come after the staging statement");
        assert_eq!(batch.statements.len(), STATEMENTS);
        assert!(batch.statements[0].sql.contains("_madbase.realtime_stage_channel_probes"));
        assert!(batch.statements[1].sql.starts_with("select set_config('role', $1, true)"));
        assert_eq!(batch.end, TxEnd::Rollback);
        // The read statement looks for the staged ids.
        assert_eq!(batch.statements[0].params[1], batch.statements[3].params[0]);
        assert_eq!(batch.statements[0].params[2], batch.statements[3].params[1]);
        assert_ne!(batch.statements[0].params[1], batch.statements[0].params[2]);
    }

    #[test]
    fn uuids_are_version_4() {
        let u = madbase_core::ids::uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn wrong_results_are_errors() {
        assert_eq!(parse_private_channel(&[]), Err(AuthorizeError::Results(0)));
    }
}
