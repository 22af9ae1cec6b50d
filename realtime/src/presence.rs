//! Presence: who is on a channel, merged across the shards.
//!
//! Owns: [`PresenceDiff`] (what a shard tells every shard when one of its sockets tracks,
//! re-tracks or untracks, or goes away) and [`PresenceReplica`] (every shard's copy of every
//! topic's presences, built from the diffs), and the JSON realtime-js reads (`presence_state`,
//! `presence_diff`; reference/realtime.md §7).
//!
//! Why a replica per shard: a socket joining on any shard must get the whole `presence_state` at
//! once, without asking the other shards. Each shard owns the metas of its own sockets and is the
//! only one that ever creates or removes them; the diffs it sends reach every shard in the order it
//! sent them (`fanout` keeps a per-target FIFO), so every replica converges to the same state.
//!
//! Invariants: a meta's `phx_ref` is unique in the process (shard id and a per-shard counter);
//! a replica holds at most one meta per `phx_ref`; a key with no metas is removed; removing an
//! unknown `phx_ref` is a no-op (a leave for a meta whose join this replica never saw is harmless).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::protocol::{json_str, push_json_str};

/// One tracked presence: its reference and its meta object as JSON text (the tracked payload's
/// members plus `phx_ref`, and `phx_ref_prev` in a diff that replaces an older meta).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub phx_ref: Arc<str>,
    /// `{"phx_ref":…,…}`.
    pub json: Arc<str>,
}

/// The key of a channel's presence state: the full topic and whether the channel is private
/// (public and private channels of the same name are different channels).
pub type TopicKey = (Arc<str>, bool);

/// One shard's change to one topic's presences.
#[derive(Debug, Clone)]
pub struct PresenceDiff {
    pub topic: TopicKey,
    pub joins: Vec<(Arc<str>, Meta)>,
    pub leaves: Vec<(Arc<str>, Meta)>,
}

/// Makes `phx_ref`s unique in the process: `F` + shard + counter, base 36.
#[derive(Debug)]
pub struct RefMaker {
    shard: usize,
    next: Cell<u64>,
}

impl RefMaker {
    pub fn new(shard: usize) -> RefMaker {
        RefMaker { shard, next: Cell::new(1) }
    }

    pub fn next(&self) -> Arc<str> {
        let n = self.next.get();
        self.next.set(n + 1);
        format!("F{}-{}", base36(self.shard as u64), base36(n)).into()
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The meta object for a tracked `payload` (a JSON object's text): `phx_ref` (and
/// `phx_ref_prev`) first, then the payload's members as the client sent them.
pub fn meta_json(phx_ref: &str, phx_ref_prev: Option<&str>, payload: &str) -> Arc<str> {
    let inner = payload.trim().strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or("").trim();
    let mut out = String::with_capacity(payload.len() + 48);
    out.push_str("{\"phx_ref\":");
    push_json_str(&mut out, phx_ref);
    if let Some(prev) = phx_ref_prev {
        out.push_str(",\"phx_ref_prev\":");
        push_json_str(&mut out, prev);
    }
    if !inner.is_empty() {
        out.push(',');
        out.push_str(inner);
    }
    out.push('}');
    out.into()
}

/// Renders `{"key":{"metas":[…]},…}`.
fn render_keys<'a>(out: &mut String, keys: impl Iterator<Item = (&'a str, Vec<&'a str>)>) {
    out.push('{');
    for (i, (key, metas)) in keys.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, key);
        out.push_str(":{\"metas\":[");
        for (j, meta) in metas.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(meta);
        }
        out.push_str("]}");
    }
    out.push('}');
}

impl PresenceDiff {
    /// The `presence_diff` payload: `{"joins":{…},"leaves":{…}}`.
    pub fn payload(&self) -> String {
        fn group(list: &[(Arc<str>, Meta)]) -> BTreeMap<&str, Vec<&str>> {
            let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (key, meta) in list {
                by_key.entry(key).or_default().push(&meta.json);
            }
            by_key
        }
        let mut out = String::from("{\"joins\":");
        render_keys(&mut out, group(&self.joins).into_iter());
        out.push_str(",\"leaves\":");
        render_keys(&mut out, group(&self.leaves).into_iter());
        out.push('}');
        out
    }

    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }
}

/// One topic's presences: key → metas in the order they joined.
#[derive(Debug, Default)]
struct TopicPresence {
    keys: BTreeMap<Arc<str>, Vec<Meta>>,
    metas: usize,
}

/// Every topic's presences as this shard knows them.
#[derive(Debug, Default)]
pub struct PresenceReplica {
    topics: HashMap<TopicKey, TopicPresence>,
}

impl PresenceReplica {
    /// Applies a diff (leaves, then joins, so a re-track's replacement lands whole).
    pub fn apply(&mut self, diff: &PresenceDiff) {
        let topic = self.topics.entry(diff.topic.clone()).or_default();
        for (key, meta) in &diff.leaves {
            if let Some(metas) = topic.keys.get_mut(key) {
                let before = metas.len();
                metas.retain(|m| m.phx_ref != meta.phx_ref);
                topic.metas -= before - metas.len();
                if metas.is_empty() {
                    topic.keys.remove(key);
                }
            }
        }
        for (key, meta) in &diff.joins {
            let metas = topic.keys.entry(key.clone()).or_default();
            if metas.iter().all(|m| m.phx_ref != meta.phx_ref) {
                metas.push(Meta { phx_ref: meta.phx_ref.clone(), json: strip_prev(&meta.json) });
                topic.metas += 1;
            }
        }
        debug_assert_eq!(topic.metas, topic.keys.values().map(Vec::len).sum::<usize>());
        if topic.keys.is_empty() {
            self.topics.remove(&diff.topic);
        }
    }

    /// The `presence_state` payload of a topic (`{}` when nobody is present).
    pub fn state(&self, topic: &TopicKey) -> String {
        let mut out = String::new();
        match self.topics.get(topic) {
            Some(t) => {
                render_keys(&mut out, t.keys.iter().map(|(k, metas)| (&**k, metas.iter().map(|m| &*m.json).collect())))
            }
            None => out.push_str("{}"),
        }
        out
    }

    /// Metas held for a topic.
    pub fn metas(&self, topic: &TopicKey) -> usize {
        self.topics.get(topic).map_or(0, |t| t.metas)
    }
}

/// A replica keeps metas without `phx_ref_prev` (it only means something in the diff).
fn strip_prev(json: &Arc<str>) -> Arc<str> {
    let Some(at) = json.find(",\"phx_ref_prev\":") else { return json.clone() };
    let rest = &json[at + ",\"phx_ref_prev\":".len()..];
    // The value is a JSON string without escapes (our own refs).
    let Some(end) = rest.get(1..).and_then(|r| r.find('"')).map(|i| i + 2) else { return json.clone() };
    format!("{}{}", &json[..at], &rest[end..]).into()
}

/// A key for a generated presence key: Supabase generates a UUID when `config.presence.key` is
/// empty.
pub fn generated_key() -> String {
    let b: [u8; 16] = rand::random();
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!("{}-{}-4{}-{}-{}", h(0..4), h(4..6), &h(6..8)[1..], h(8..10), h(10..16))
}

/// Text for logs.
pub fn describe(topic: &TopicKey) -> String {
    format!("{}{}", json_str(&topic.0), if topic.1 { " (private)" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> TopicKey {
        ("realtime:room1".into(), false)
    }

    fn meta(r: &str, payload: &str) -> Meta {
        Meta { phx_ref: r.into(), json: meta_json(r, None, payload) }
    }

    #[test]
    fn diffs_build_the_state_and_leaves_remove_it() {
        let mut replica = PresenceReplica::default();
        assert_eq!(replica.state(&topic()), "{}");
        let join = PresenceDiff {
            topic: topic(),
            joins: vec![("u1".into(), meta("F1", r#"{"online_at":"2024-01-01"}"#)), ("u1".into(), meta("F2", "{}"))],
            leaves: vec![],
        };
        assert_eq!(
            join.payload(),
            r#"{"joins":{"u1":{"metas":[{"phx_ref":"F1","online_at":"2024-01-01"},{"phx_ref":"F2"}]}},"leaves":{}}"#
        );
        replica.apply(&join);
        replica.apply(&join);
        assert_eq!(replica.metas(&topic()), 2);
        assert_eq!(
            replica.state(&topic()),
            r#"{"u1":{"metas":[{"phx_ref":"F1","online_at":"2024-01-01"},{"phx_ref":"F2"}]}}"#
        );
        let update = PresenceDiff {
            topic: topic(),
            joins: vec![("u1".into(), Meta { phx_ref: "F3".into(), json: meta_json("F3", Some("F1"), r#"{"a":1}"#) })],
            leaves: vec![("u1".into(), meta("F1", r#"{"online_at":"2024-01-01"}"#))],
        };
        replica.apply(&update);
        assert_eq!(replica.state(&topic()), r#"{"u1":{"metas":[{"phx_ref":"F2"},{"phx_ref":"F3","a":1}]}}"#);
        replica.apply(&PresenceDiff {
            topic: topic(),
            joins: vec![],
            leaves: vec![
                ("u1".into(), meta("F2", "{}")),
                ("u1".into(), meta("F3", "{}")),
                ("zz".into(), meta("F9", "{}")),
            ],
        });
        assert_eq!(replica.state(&topic()), "{}");
        assert_eq!(replica.metas(&topic()), 0);
    }

    #[test]
    fn refs_are_unique_and_keys_look_like_uuids() {
        let refs = RefMaker::new(3);
        assert_ne!(refs.next(), refs.next());
        let key = generated_key();
        assert_eq!(key.len(), 36);
        assert_eq!(key.as_bytes()[14], b'4');
    }
}
