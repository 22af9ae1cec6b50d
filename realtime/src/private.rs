//! Private channels (reference/realtime.md §11): the caller's RLS policies on
//! `realtime.messages` decide who may read and write a topic.
//!
//! Owns: [`check`], one batch on Realtime's lane per join or new token.

use crate::session::{Caller, Permissions};
use crate::Inner;

/// Evaluates the caller's policies for `sub_topic`. `Err` is a join refusal's reason.
pub async fn check(inner: &Inner, caller: &Caller, sub_topic: &str) -> Result<Permissions, String> {
    let _ = (inner, caller, sub_topic);
    Err("Unknown Error on Channel".to_owned())
}
