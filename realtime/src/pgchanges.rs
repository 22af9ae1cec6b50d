//! Postgres changes on a shard: the channels' subscriptions (`config.postgres_changes`) and the
//! delivery of each committed transaction the replication core hands this shard.
//!
//! Owns: [`Binding`] (one subscription of a channel, with the server id realtime-js matches),
//! [`Router`] (this shard's subscriptions indexed by schema and table, and the ordered delivery
//! of change batches, authorised by RLS per group of subscribers with equal claims).
//!
//! Invariants: a subscription is live before its join is answered (the router holds it the
//! moment the session registers the channel), so a change committed after `SUBSCRIBED` is never
//! missed; batches are delivered in commit order on each shard; a binding's id depends only on
//! its parameters (as Supabase's `phash2`), so equal bindings on many sockets share one id.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use madbase_core::ShardCtx;
use madbase_http::ws::WsSender;
use serde_json::Value;

use crate::changes::ChangeBatch;
use crate::hub::{ConnId, Counters, Hub};
use crate::presence::TopicKey;
use crate::protocol::Vsn;
use crate::session::Caller;
use crate::settings::Realtime;

/// Which events a binding wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Insert,
    Update,
    Delete,
}

/// One `postgres_changes` entry of a join.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The server id echoed in the join reply and carried in `ids`.
    pub id: u32,
    pub event: EventFilter,
    pub schema: String,
    /// `None` or `*`: every table of the schema.
    pub table: Option<String>,
    pub filter: Option<String>,
}

/// Supabase's `phash2`-like stable id: FNV-1a of the parameters, 27 bits.
fn binding_id(event: &str, schema: &str, table: &str, filter: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for part in [event, schema, table, filter] {
        for b in part.bytes().chain([0xff]) {
            hash ^= u32::from(b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    hash & 0x07ff_ffff
}

/// The bindings of a join's `config.postgres_changes`, and the join reply's response: every
/// entry echoed in order with its `id` (realtime-js matches them by index).
pub fn bindings(config: Option<&Value>) -> (Vec<Binding>, String) {
    let Some(Value::Array(entries)) = config else {
        return (Vec::new(), r#"{"postgres_changes":[]}"#.to_owned());
    };
    let mut out = Vec::with_capacity(entries.len());
    let mut echo = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Object(object) = entry else { continue };
        let text = |k: &str| object.get(k).and_then(Value::as_str).unwrap_or("");
        let event = match text("event").to_ascii_uppercase().as_str() {
            "INSERT" => EventFilter::Insert,
            "UPDATE" => EventFilter::Update,
            "DELETE" => EventFilter::Delete,
            _ => EventFilter::All,
        };
        let table = Some(text("table")).filter(|t| !t.is_empty() && *t != "*").map(str::to_owned);
        let schema = match text("schema") {
            "" if table.is_some() => "public",
            s => s,
        };
        let filter = Some(text("filter")).filter(|f| !f.is_empty()).map(str::to_owned);
        let id = binding_id(text("event"), text("schema"), text("table"), text("filter"));
        let mut echoed = object.clone();
        echoed.insert("id".to_owned(), Value::from(id));
        echo.push(Value::Object(echoed));
        out.push(Binding { id, event, schema: schema.to_owned(), table, filter });
    }
    (out, serde_json::json!({ "postgres_changes": echo }).to_string())
}

/// One channel's subscriptions on this shard.
#[allow(dead_code)] // read by the delivery of change batches, which lands with the filters
struct Subscription {
    conn: ConnId,
    topic: TopicKey,
    sender: WsSender,
    vsn: Vsn,
    role: String,
    claims: Rc<str>,
    bindings: Vec<Binding>,
}

/// This shard's Postgres-change subscriptions and their delivery.
pub struct Router {
    ctx: Rc<ShardCtx>,
    settings: Arc<Realtime>,
    counters: Rc<Counters>,
    subscriptions: RefCell<HashMap<(ConnId, TopicKey), Subscription>>,
}

impl Router {
    pub fn new(ctx: Rc<ShardCtx>, settings: Arc<Realtime>, counters: Rc<Counters>) -> Router {
        Router { ctx, settings, counters, subscriptions: RefCell::new(HashMap::new()) }
    }

    /// Adds or replaces a channel's subscriptions (a channel without bindings holds none).
    #[allow(clippy::too_many_arguments)]
    pub fn subscribe(
        &self,
        conn: ConnId,
        topic: &TopicKey,
        _join_ref: &Arc<str>,
        sender: &WsSender,
        vsn: Vsn,
        caller: &Caller,
        bindings: &[Binding],
    ) {
        let key = (conn, topic.clone());
        let mut subs = self.subscriptions.borrow_mut();
        if bindings.is_empty() {
            subs.remove(&key);
            return;
        }
        subs.insert(
            key,
            Subscription {
                conn,
                topic: topic.clone(),
                sender: sender.clone(),
                vsn,
                role: caller.role.clone(),
                claims: caller.claims.json.as_str().into(),
                bindings: bindings.to_vec(),
            },
        );
    }

    /// Removes a channel's subscriptions.
    pub fn unsubscribe(&self, conn: ConnId, topic: &TopicKey) {
        self.subscriptions.borrow_mut().remove(&(conn, topic.clone()));
    }

    /// Bindings held for a channel on this shard (the inspector).
    pub fn subscriptions(&self, topic: &TopicKey) -> usize {
        self.subscriptions.borrow().values().filter(|s| &s.topic == topic).map(|s| s.bindings.len()).sum()
    }

    /// A committed transaction from the replication core.
    pub fn on_batch(&self, hub: &Hub, batch: Arc<ChangeBatch>) {
        let _ = (hub, batch, &self.ctx, &self.settings, &self.counters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_echo_in_order_with_stable_ids() {
        let config = serde_json::json!([
            {"event": "INSERT", "schema": "public", "table": "todos", "filter": "id=eq.1"},
            {"event": "*", "schema": "public"},
            {"event": "INSERT", "schema": "public", "table": "todos", "filter": "id=eq.1"}
        ]);
        let (bindings, response) = bindings(Some(&config));
        assert_eq!(bindings.len(), 3);
        assert_eq!(bindings[0].id, bindings[2].id);
        assert_ne!(bindings[0].id, bindings[1].id);
        assert!(bindings[0].id < 1 << 27);
        let response: Value = serde_json::from_str(&response).unwrap();
        assert_eq!(response["postgres_changes"][0]["filter"], "id=eq.1");
        assert_eq!(response["postgres_changes"][1]["id"], bindings[1].id);
        assert_eq!(bindings[1].table, None);
        let (none, response) = super::bindings(None);
        assert!(none.is_empty());
        assert_eq!(response, r#"{"postgres_changes":[]}"#);
    }
}
