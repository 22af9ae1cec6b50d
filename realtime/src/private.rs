//! Private channels (reference/realtime.md §11): the caller's RLS policies on
//! `realtime.messages` decide who may read and write a topic.
//!
//! Owns: [`check`] — one batch on Realtime's lane (`authorize::private_channel_batch`: staged
//! probe rows, the caller's role and claims, the write and read checks, rolled back) per join,
//! per new token and per private REST broadcast. Its answer is cached on the channel by the
//! session until the next token.

use crate::authorize::{parse_private_channel, private_channel_batch, ChannelPermissions};
use crate::session::Caller;
use crate::{Inner, LANE};

/// Evaluates the caller's policies for `sub_topic`. `Err` is a join refusal's reason.
pub async fn check(inner: &Inner, caller: &Caller, sub_topic: &str) -> Result<ChannelPermissions, String> {
    let batch = private_channel_batch(&caller.role, &caller.claims.json, sub_topic);
    let results = inner.ctx.lanes.get(LANE).execute(batch).await.map_err(|error| {
        tracing::warn!(%error, topic = sub_topic, "private channel check failed");
        "Unknown Error on Channel".to_owned()
    })?;
    parse_private_channel(&results).map_err(|error| {
        tracing::error!(%error, topic = sub_topic, "private channel check answered unexpectedly");
        "Unknown Error on Channel".to_owned()
    })
}

/// One stored broadcast a private channel replays on join.
pub struct Replayed {
    pub id: String,
    pub event: String,
    /// JSON text.
    pub payload: String,
}

/// `config.broadcast.replay`: the topic's stored broadcasts since `since_ms` (milliseconds since
/// the epoch), oldest first, at most `limit` (Supabase's cap is 25), read as the caller — the
/// read policy decides what comes back. `Err` is a join refusal's reason.
pub async fn replay(
    inner: &Inner,
    caller: &Caller,
    sub_topic: &str,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<Replayed>, String> {
    debug_assert!(limit <= crate::settings::REPLAY_LIMIT_MAX);
    let sql = "select m.id::text, coalesce(m.event, ''), coalesce(m.payload, '{}'::jsonb)::text \
               from realtime.messages m \
               where m.topic = $1 and m.extension = 'broadcast' and m.private \
                 and m.inserted_at >= (to_timestamp($2::bigint / 1000.0) at time zone 'utc') \
               order by m.inserted_at, m.id limit $3::int";
    let batch = madbase_pg::Batch::new()
        .role(caller.role.as_str())
        .jwt_claims(caller.claims.json.as_str())
        .setting("realtime.topic", sub_topic)
        .statement(
            madbase_pg::Statement::new(sql)
                .bind(bytes::Bytes::copy_from_slice(sub_topic.as_bytes()))
                .bind(since_ms.to_string())
                .bind(limit.to_string())
                .param_types([25, 25, 25]),
        )
        .end(madbase_pg::TxEnd::Rollback);
    let results = inner.ctx.lanes.get(LANE).execute(batch).await.map_err(|error| {
        tracing::warn!(%error, topic = sub_topic, "replay failed");
        "UnableToReplayMessages: Realtime was unable to replay messages".to_owned()
    })?;
    let rows = results.first().map(|r| r.rows.as_slice()).unwrap_or_default();
    Ok(rows
        .iter()
        .map(|row| Replayed {
            id: row.get_str(0).unwrap_or_default().to_owned(),
            event: row.get_str(1).unwrap_or_default().to_owned(),
            payload: row.get_str(2).unwrap_or("{}").to_owned(),
        })
        .collect())
}

/// How often the owner shard deletes `realtime.messages` rows past Supabase's 72 hours.
const CLEANUP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The owner shard's task: deletes stored messages older than 72 hours, at start and hourly.
pub async fn delete_old_messages(ctx: std::rc::Rc<madbase_core::ShardCtx>) {
    loop {
        let batch = madbase_pg::Batch::new().query("select _madbase.realtime_delete_old_messages()");
        match ctx.lanes.get(LANE).execute(batch).await {
            Ok(results) => {
                let deleted = results.first().and_then(|r| r.rows.first()).and_then(|r| r.get_str(0)).unwrap_or("0");
                tracing::debug!(deleted, "realtime.messages older than 72 hours deleted");
            }
            Err(error) => tracing::warn!(%error, "deleting old realtime.messages failed"),
        }
        monoio::select! {
            _ = monoio::time::sleep(CLEANUP_EVERY) => {}
            _ = ctx.shutdown.triggered() => return,
        }
    }
}
