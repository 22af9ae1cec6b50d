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
