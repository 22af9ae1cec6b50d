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

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use madbase_core::ShardCtx;
use madbase_http::ws::{Message, WsSender};
use serde_json::Value;

use crate::changes::{Change, ChangeBatch, ChangeKind, Relation};
use crate::filter::{subscribe_error_message, BoundFilter, Filter, SubscribeError};
use crate::hub::{ConnId, Counters, Hub};
use crate::payload::{frame_payload, raw_payload, render_data, RenderedChange};
use crate::presence::TopicKey;
use crate::protocol::{frame, Vsn};
use crate::rls::{needs_check, visibility_batch, GroupCheck};
use crate::session::Caller;
use crate::settings::Realtime;
use crate::LANE;

/// Where a change sits in the stream: its transaction's end position and its index in the
/// transaction. Every payload of a channel that asks for positions carries it as
/// `"<lsn>:<index>"` (`"16/B374D848:0"`); a client that reconnects passes the last one it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub lsn: crate::changes::Lsn,
    pub index: usize,
}

impl Position {
    pub fn text(&self) -> String {
        format!("{}:{}", crate::changes::lsn_text(self.lsn), self.index)
    }

    pub fn parse(text: &str) -> Option<Position> {
        let (lsn, index) = text.rsplit_once(':')?;
        Some(Position { lsn: crate::changes::parse_lsn(lsn)?, index: index.parse().ok()? })
    }
}

/// How a channel's change frames look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadForm {
    /// `postgres_changes` with `{"data":…,"ids":[…]}`; with `"position"` when the channel asked
    /// for positions (`config.postgres_changes_resume`).
    Current { positions: bool },
    /// The old API (a join without `config`): the change type as the event, `data` as the payload.
    Legacy,
}

/// The binding of an old-API join, whose topic names what it wants: `realtime:*` (everything),
/// `realtime:<schema>`, `realtime:<schema>:<table>`, `realtime:<schema>:<table>:<filter>`.
pub fn legacy_binding(sub_topic: &str) -> Result<Binding, BindingError> {
    let mut parts = sub_topic.splitn(3, ':');
    let schema = parts.next().unwrap_or("*");
    let table = parts.next().filter(|t| !t.is_empty() && *t != "*").map(str::to_owned);
    let filter_text = parts.next().unwrap_or("");
    let filter = Filter::parse(filter_text).map_err(|e| e.to_string())?;
    let id = binding_id("*", schema, table.as_deref().unwrap_or(""), filter_text);
    Ok(Binding { id, event: EventFilter::All, schema: schema.to_owned(), table, filter, event_text: "*".to_owned() })
}

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
    pub filter: Filter,
    /// The `event` as the client wrote it (Supabase's error texts show it).
    pub event_text: String,
}

impl Binding {
    /// Does the binding's event, schema and table take this change (before its filter)?
    fn wants(&self, change: &Change) -> bool {
        let event = matches!(
            (self.event, change.kind),
            (EventFilter::All, _)
                | (EventFilter::Insert, ChangeKind::Insert)
                | (EventFilter::Update, ChangeKind::Update)
                | (EventFilter::Delete, ChangeKind::Delete)
        );
        event
            && (self.schema == "*" || self.schema == change.relation.schema)
            && self.table.as_ref().is_none_or(|t| *t == change.relation.table)
    }
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

/// A binding the server refuses, with Supabase's system-message text.
pub type BindingError = String;

/// An Elixir map's `inspect` of a binding's parameters (Supabase's error texts show them).
fn elixir_params(object: &serde_json::Map<String, Value>) -> String {
    let parts: Vec<String> = object.iter().map(|(k, v)| format!("{:?} => {}", k, v)).collect();
    format!("%{{{}}}", parts.join(", "))
}

/// The bindings of a join's `config.postgres_changes`, the refusals of those that cannot be
/// served (sent as `system` errors after the join, as Supabase does), and the join reply's
/// response: every entry echoed in order with its `id` (realtime-js matches them by index).
pub fn bindings(config: Option<&Value>) -> (Vec<Binding>, Vec<BindingError>, String) {
    let Some(Value::Array(entries)) = config else {
        return (Vec::new(), Vec::new(), r#"{"postgres_changes":[]}"#.to_owned());
    };
    let mut out = Vec::with_capacity(entries.len());
    let mut errors = Vec::new();
    let mut echo = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Object(object) = entry else { continue };
        let text = |k: &str| object.get(k).and_then(Value::as_str).unwrap_or("");
        let id = binding_id(text("event"), text("schema"), text("table"), text("filter"));
        let mut echoed = object.clone();
        echoed.insert("id".to_owned(), Value::from(id));
        echo.push(Value::Object(echoed));
        let event = match text("event").to_ascii_uppercase().as_str() {
            "INSERT" => EventFilter::Insert,
            "UPDATE" => EventFilter::Update,
            "DELETE" => EventFilter::Delete,
            _ => EventFilter::All,
        };
        let table = Some(text("table")).filter(|t| !t.is_empty() && *t != "*").map(str::to_owned);
        let schema = match text("schema") {
            "" if !text("table").is_empty() => "public",
            "" => {
                errors.push(format!(
                    "No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: {}",
                    elixir_params(object)
                ));
                continue;
            }
            s => s,
        };
        match Filter::parse(text("filter")) {
            Ok(filter) => out.push(Binding {
                id,
                event,
                schema: schema.to_owned(),
                table,
                filter,
                event_text: text("event").to_owned(),
            }),
            Err(error) => errors.push(error.to_string()),
        }
    }
    (out, errors, serde_json::json!({ "postgres_changes": echo }).to_string())
}

/// A binding's filter bound to a relation (`None`: the filter does not apply to that table).
type BoundTo = (Arc<Relation>, Option<BoundFilter>);

/// Drops the bindings whose table does not exist, with Supabase's refusal for each (one
/// statement on Realtime's lane, only when some binding names a table). A failed lookup keeps
/// them all: changes for a table that does not exist never come anyway.
pub async fn drop_missing_tables(ctx: &ShardCtx, bindings: &mut Vec<Binding>, errors: &mut Vec<BindingError>) {
    let named: Vec<&Binding> = bindings.iter().filter(|b| b.table.is_some() && b.schema != "*").collect();
    if named.is_empty() {
        return;
    }
    let array = |f: &dyn Fn(&Binding) -> &str| {
        let items: Vec<String> = named.iter().map(|b| crate::protocol::json_str(f(b))).collect();
        format!("{{{}}}", items.join(","))
    };
    let sql = "select t.n from unnest($1::text[], $2::text[]) with ordinality t(s, r, n) \
               where to_regclass(quote_ident(t.s) || '.' || quote_ident(t.r)) is null";
    let batch = madbase_pg::Batch::new().statement(
        madbase_pg::Statement::new(sql)
            .bind(array(&|b| &b.schema))
            .bind(array(&|b| b.table.as_deref().unwrap_or("")))
            .param_types([25, 25]),
    );
    let missing: Vec<usize> = match ctx.lanes.get(LANE).execute(batch).await {
        Ok(results) => results
            .first()
            .map(|r| r.rows.iter().filter_map(|row| row.get_str(0)?.parse::<usize>().ok()?.checked_sub(1)).collect())
            .unwrap_or_default(),
        Err(error) => {
            tracing::warn!(%error, "could not look up the tables of postgres_changes bindings");
            return;
        }
    };
    let missing_ids: Vec<u32> = missing.iter().filter_map(|&i| named.get(i)).map(|b| b.id).collect();
    bindings.retain(|b| {
        let gone = b.table.is_some() && b.schema != "*" && missing_ids.contains(&b.id);
        if gone {
            let table = b.table.as_deref().unwrap_or("");
            let error = SubscribeError {
                code: "42P01",
                condition: "undefined_table",
                message: format!("relation \"{}.{}\" does not exist", b.schema, table),
            };
            errors.push(subscribe_error_message(&b.event_text, &b.schema, table, &b.filter, None, &error));
        }
        !gone
    });
}

/// One channel's subscriptions on this shard. Shared (`Rc`) with the batches in flight, which
/// check `active` before delivering: a channel that left while its change was being authorised
/// gets nothing.
struct Subscription {
    topic: TopicKey,
    sender: WsSender,
    vsn: Vsn,
    /// (role, claims JSON): subscribers with equal ones are checked against RLS once.
    group: Rc<(String, String)>,
    bindings: Vec<Binding>,
    /// Per binding: its filter bound to the relation it last matched (rebound when the
    /// relation's description changes); `None` inside when the filter does not apply to it.
    bound: RefCell<Vec<Option<BoundTo>>>,
    /// Shared by every version of the channel's subscription (a new token replaces it): false
    /// once the channel left, so nothing in flight for it is delivered after.
    active: Rc<Cell<bool>>,
    /// How its frames look.
    form: PayloadForm,
}

impl Subscription {
    /// The ids of the bindings that want `change`.
    fn matching_ids(&self, change: &Change) -> Vec<u64> {
        let relation = &change.relation;
        let mut ids = Vec::new();
        let mut bound = self.bound.borrow_mut();
        for (i, b) in self.bindings.iter().enumerate() {
            if !b.wants(change) || ids.contains(&u64::from(b.id)) {
                continue;
            }
            let slot = &mut bound[i];
            if !slot.as_ref().is_some_and(|(r, _)| Arc::ptr_eq(r, relation)) {
                let filter = match b.filter.bind(relation) {
                    Ok(f) => Some(f),
                    Err(error) => {
                        tracing::debug!(%error, table = %relation.table, "filter does not apply to the table");
                        None
                    }
                };
                *slot = Some((relation.clone(), filter));
            }
            if slot.as_ref().and_then(|(_, f)| f.as_ref()).is_some_and(|f| f.matches(change)) {
                ids.push(u64::from(b.id));
            }
        }
        ids
    }
}

/// A subscription that wants a change of a batch.
struct Match {
    change: usize,
    subscription: Rc<Subscription>,
    ids: Vec<u64>,
    /// The RLS group that must see the change, if it needs a check.
    group: Option<usize>,
}

/// One RLS group of a batch: the changes (indexes) it must be asked about.
struct GroupPlan {
    key: Rc<(String, String)>,
    changes: Vec<usize>,
}

/// Most batches one check round takes (their changes are checked together per group).
const ROUND_MAX_BATCHES: usize = 256;

/// What makes two subscribers' frames of a change identical: the change, the protocol, the
/// topic, the binding ids and the payload's form.
type FrameKey = (usize, Vsn, Arc<str>, Vec<u64>, PayloadForm);

/// A batch waiting for its checks and its turn.
struct Slot {
    batch: Arc<ChangeBatch>,
    matches: Vec<Match>,
    groups: Vec<GroupPlan>,
    /// Per group, the answer for each of its changes (once checked).
    visible: RefCell<Vec<Vec<bool>>>,
    started: Cell<bool>,
    ready: Cell<bool>,
    /// A batch as it arrived (false: a replay for a resuming channel, whose batch was taken
    /// before and whose database broadcasts went out then).
    live: bool,
}

/// This shard's Postgres-change subscriptions and their delivery.
pub struct Router {
    ctx: Rc<ShardCtx>,
    settings: Arc<Realtime>,
    hub: Rc<Hub>,
    subscriptions: RefCell<HashMap<(ConnId, TopicKey), Rc<Subscription>>>,
    /// Batches in commit order, delivered from the front as they become ready.
    queue: RefCell<VecDeque<Rc<Slot>>>,
    checking: Cell<usize>,
    /// The last `changes_history` batches this shard received, for clients that resume.
    history: RefCell<VecDeque<Arc<ChangeBatch>>>,
}

impl Router {
    pub fn new(ctx: Rc<ShardCtx>, settings: Arc<Realtime>, hub: Rc<Hub>) -> Rc<Router> {
        Rc::new(Router {
            ctx,
            settings,
            hub,
            subscriptions: RefCell::new(HashMap::new()),
            queue: RefCell::new(VecDeque::new()),
            checking: Cell::new(0),
            history: RefCell::new(VecDeque::new()),
        })
    }

    /// Adds or replaces a channel's subscriptions (a channel without bindings holds none). A
    /// replacement (a new token: new claims for later checks) keeps the channel live: changes
    /// already matched under the old token are still delivered, in order.
    #[allow(clippy::too_many_arguments)] // the channel's parts the router keeps
    pub fn subscribe(
        &self,
        conn: ConnId,
        topic: &TopicKey,
        sender: &WsSender,
        vsn: Vsn,
        caller: &Caller,
        bindings: &[Binding],
        form: PayloadForm,
    ) {
        let key = (conn, topic.clone());
        if bindings.is_empty() {
            self.unsubscribe(conn, topic);
            return;
        }
        let active = match self.subscriptions.borrow().get(&key) {
            Some(old) => old.active.clone(),
            None => Rc::new(Cell::new(true)),
        };
        let subscription = Subscription {
            topic: topic.clone(),
            sender: sender.clone(),
            vsn,
            group: Rc::new((caller.role.clone(), caller.claims.json.clone())),
            bindings: bindings.to_vec(),
            bound: RefCell::new(vec![None; bindings.len()]),
            active,
            form,
        };
        self.subscriptions.borrow_mut().insert(key, Rc::new(subscription));
    }

    /// Removes a channel's subscriptions; changes in flight for it are not delivered.
    pub fn unsubscribe(&self, conn: ConnId, topic: &TopicKey) {
        if let Some(old) = self.subscriptions.borrow_mut().remove(&(conn, topic.clone())) {
            old.active.set(false);
        }
    }

    /// Bindings held for a channel on this shard (the inspector).
    pub fn subscriptions(&self, topic: &TopicKey) -> usize {
        self.subscriptions.borrow().values().filter(|s| &s.topic == topic).map(|s| s.bindings.len()).sum()
    }

    /// A committed transaction from the replication core: matched now (so a channel that joins
    /// later does not get it), authorised, then delivered in commit order.
    pub fn on_batch(self: &Rc<Self>, batch: Arc<ChangeBatch>) {
        self.remember(&batch);
        let all = self.subscriptions.borrow().values().cloned().collect::<Vec<_>>();
        self.enqueue(self.plan(batch, &all, None));
    }

    /// Keeps the batch for clients that resume, evicting the oldest past `changes_history`.
    fn remember(&self, batch: &Arc<ChangeBatch>) {
        if batch.changes.is_empty() {
            return;
        }
        let mut history = self.history.borrow_mut();
        history.push_back(batch.clone());
        while history.len() > self.settings.changes_history {
            history.pop_front();
        }
        debug_assert!(history.iter().zip(history.iter().skip(1)).all(|(a, b)| a.end_lsn < b.end_lsn));
    }

    /// Replays to a channel that just subscribed the changes after `after` (a position its
    /// payloads carried) that this shard still holds, authorised like live ones and queued
    /// before any later batch. `Err` is the system message when some may be gone: the position
    /// precedes what the shard holds (or the process restarted since).
    pub fn resume(self: &Rc<Self>, conn: ConnId, topic: &TopicKey, after: Position) -> Result<(), String> {
        let Some(subscription) = self.subscriptions.borrow().get(&(conn, topic.clone())).cloned() else {
            return Ok(());
        };
        let history: Vec<Arc<ChangeBatch>> =
            self.history.borrow().iter().filter(|b| b.end_lsn >= after.lsn).cloned().collect();
        // Everything after the position is held when the position is at or after the oldest
        // transaction held (the history is contiguous from its front).
        let covered = self.history.borrow().front().is_some_and(|front| front.end_lsn <= after.lsn);
        for batch in history {
            let slot = self.plan(batch, std::slice::from_ref(&subscription), Some(after));
            if !slot.matches.is_empty() {
                self.enqueue(slot);
            }
        }
        if covered {
            Ok(())
        } else {
            Err(format!(
                "Changes after position {} may be missed: this server holds the last {} transactions",
                after.text(),
                self.settings.changes_history
            ))
        }
    }

    /// Queues a planned batch; starts its checks or marks it ready.
    fn enqueue(self: &Rc<Self>, slot: Slot) {
        let slot = Rc::new(slot);
        let needs_checks = !slot.groups.is_empty();
        if !needs_checks {
            slot.ready.set(true);
        }
        self.queue.borrow_mut().push_back(slot);
        if needs_checks {
            self.start_checks();
        }
        self.flush();
    }

    /// Which subscriptions want which changes, and the RLS groups to ask.
    /// Which of `subscriptions` want which changes of the batch (only those after `after`
    /// when resuming), and the RLS groups to ask.
    fn plan(&self, batch: Arc<ChangeBatch>, subscriptions: &[Rc<Subscription>], after: Option<Position>) -> Slot {
        let mut matches = Vec::new();
        let mut groups: Vec<GroupPlan> = Vec::new();
        for (index, change) in batch.changes.iter().enumerate() {
            if after.is_some_and(|p| (batch.end_lsn, index) <= (p.lsn, p.index)) {
                continue;
            }
            for subscription in subscriptions {
                let ids = subscription.matching_ids(change);
                if ids.is_empty() {
                    continue;
                }
                let group = needs_check(change).then(|| {
                    let g = match groups.iter().position(|g| g.key == subscription.group) {
                        Some(g) => g,
                        None => {
                            groups.push(GroupPlan { key: subscription.group.clone(), changes: Vec::new() });
                            groups.len() - 1
                        }
                    };
                    if groups[g].changes.last() != Some(&index) {
                        groups[g].changes.push(index);
                    }
                    g
                });
                matches.push(Match { change: index, subscription: subscription.clone(), ids, group });
            }
        }
        Slot {
            batch,
            matches,
            groups,
            visible: RefCell::new(Vec::new()),
            started: Cell::new(false),
            ready: Cell::new(false),
            live: after.is_none(),
        }
    }

    /// Starts check rounds, up to `checks_in_flight` at once. A round takes every batch
    /// waiting (oldest first, at most [`ROUND_MAX_BATCHES`]) and asks once per group for all
    /// of them, so under load the cost of a group's check is shared by every transaction that
    /// arrived while the previous round ran (the way group commit shares a flush).
    fn start_checks(self: &Rc<Self>) {
        while self.checking.get() < self.settings.checks_in_flight {
            let round: Vec<Rc<Slot>> = self
                .queue
                .borrow()
                .iter()
                .filter(|s| !s.ready.get() && !s.started.get())
                .take(ROUND_MAX_BATCHES)
                .cloned()
                .collect();
            if round.is_empty() {
                return;
            }
            for slot in &round {
                slot.started.set(true);
            }
            self.checking.set(self.checking.get() + 1);
            let this = self.clone();
            monoio::spawn(async move {
                this.check_round(&round).await;
                for slot in &round {
                    slot.ready.set(true);
                }
                this.checking.set(this.checking.get() - 1);
                this.start_checks();
                this.flush();
            });
        }
    }

    /// Asks PostgreSQL which changes of the round's batches each group may see: the groups of
    /// every batch merged by (role, claims), one batch per merged group, pipelined in chunks of
    /// `check_groups_per_batch`. A group whose check fails sees nothing (and only that group).
    async fn check_round(&self, slots: &[Rc<Slot>]) {
        /// One (role, claims) across the round: where each of its changes goes back to.
        struct Merged<'a> {
            key: &'a (String, String),
            /// (slot, group of the slot, position in that group's changes), one per change.
            members: Vec<(usize, usize, usize)>,
            changes: Vec<&'a Change>,
        }
        let mut merged: Vec<Merged<'_>> = Vec::new();
        let mut by_key: HashMap<&(String, String), usize> = HashMap::new();
        for (si, slot) in slots.iter().enumerate() {
            *slot.visible.borrow_mut() = slot.groups.iter().map(|g| vec![false; g.changes.len()]).collect();
            for (gi, group) in slot.groups.iter().enumerate() {
                let m = *by_key.entry(&*group.key).or_insert_with(|| {
                    merged.push(Merged { key: &group.key, members: Vec::new(), changes: Vec::new() });
                    merged.len() - 1
                });
                for (pos, &ci) in group.changes.iter().enumerate() {
                    merged[m].members.push((si, gi, pos));
                    merged[m].changes.push(&slot.batch.changes[ci]);
                }
            }
        }
        self.await_visible(slots).await;
        let mut failed: Option<(usize, String)> = None;
        for chunk in merged.chunks(self.settings.check_groups_per_batch) {
            let mut running = Vec::with_capacity(chunk.len());
            for group in chunk {
                let check = GroupCheck { role: &group.key.0, claims_json: &group.key.1, changes: &group.changes };
                let (batch, plan) = visibility_batch(&check);
                let ctx = self.ctx.clone();
                running.push((plan, monoio::spawn(async move { ctx.lanes.get(LANE).execute(batch).await })));
            }
            for ((plan, task), group) in running.into_iter().zip(chunk) {
                let answer = match task.await {
                    Ok(results) => plan.parse(&results).map_err(|e| e.to_string()),
                    Err(error) => Err(error.to_string()),
                };
                let answer = answer.unwrap_or_else(|error| {
                    let (count, _) = failed.get_or_insert((0, error));
                    *count += 1;
                    vec![false; group.changes.len()]
                });
                debug_assert_eq!(answer.len(), group.members.len());
                for (&(si, gi, pos), visible) in group.members.iter().zip(answer) {
                    slots[si].visible.borrow_mut()[gi][pos] = visible;
                }
            }
        }
        Counters::add(&self.hub.counters.rls_checks, merged.len() as u64);
        if let Some((groups, error)) = failed {
            // One line per round, not per group: a failing database must not flood the log.
            tracing::warn!(groups, %error, "postgres_changes RLS checks failed; those groups get nothing of this round");
        }
    }

    /// Waits until the round's transactions are visible to new snapshots (see
    /// `_madbase.realtime_await_visible`): decoding can outrun the commit's visibility by a
    /// moment, and a check in that moment would hide a row its policy allows.
    async fn await_visible(&self, slots: &[Rc<Slot>]) {
        let xids: Vec<String> =
            slots.iter().filter(|s| !s.groups.is_empty()).map(|s| s.batch.xid.to_string()).collect();
        if xids.is_empty() {
            return;
        }
        let batch = madbase_pg::Batch::new().statement(
            madbase_pg::Statement::new("select _madbase.realtime_await_visible($1::bigint[])")
                .bind(format!("{{{}}}", xids.join(",")))
                .param_types([25]),
        );
        if let Err(error) = self.ctx.lanes.get(LANE).execute(batch).await {
            tracing::warn!(%error, "waiting for the visibility of decoded transactions failed; checking anyway");
        }
    }

    /// Delivers the batches at the front of the queue that are ready, in order.
    fn flush(&self) {
        loop {
            let slot = {
                let mut queue = self.queue.borrow_mut();
                match queue.front() {
                    Some(front) if front.ready.get() => queue.pop_front(),
                    _ => None,
                }
            };
            let Some(slot) = slot else { return };
            self.deliver(&slot);
            if slot.live {
                slot.batch.taken();
            }
        }
    }

    fn deliver(&self, slot: &Slot) {
        let batch = &slot.batch;
        let visible = slot.visible.borrow();
        let mut rendered: Vec<Option<RenderedChange>> = vec![None; batch.changes.len()];
        let mut frames: HashMap<FrameKey, Message> = HashMap::new();
        let counters = &self.hub.counters;
        for m in &slot.matches {
            let s = &m.subscription;
            if !s.active.get() {
                continue;
            }
            let allowed = m.group.is_none_or(|g| {
                let group = &slot.groups[g];
                let at = group.changes.iter().position(|&c| c == m.change);
                at.and_then(|at| visible.get(g).and_then(|v| v.get(at))).copied().unwrap_or(false)
            });
            if !allowed {
                Counters::add(&counters.changes_denied, 1);
                continue;
            }
            let data = rendered[m.change].get_or_insert_with(|| {
                render_data(&batch.changes[m.change], &batch.commit_timestamp, self.settings.max_record_bytes)
            });
            let key = (m.change, s.vsn, s.topic.0.clone(), m.ids.clone(), s.form);
            let frame = frames.entry(key).or_insert_with(|| match s.form {
                PayloadForm::Legacy => {
                    let event = batch.changes[m.change].kind.as_str();
                    frame(s.vsn, None, None, &s.topic.0, event, raw_payload(data))
                }
                PayloadForm::Current { positions } => {
                    let mut payload = frame_payload(&m.ids, data);
                    if positions {
                        let position = Position { lsn: batch.end_lsn, index: m.change }.text();
                        payload.insert_str(payload.len() - 1, &format!(",\"position\":\"{position}\""));
                    }
                    frame(s.vsn, None, None, &s.topic.0, "postgres_changes", &payload)
                }
            });
            if self.hub.send(&s.sender, frame.clone()) {
                Counters::add(&counters.changes_delivered, 1);
            }
        }
        if slot.live {
            for message in &batch.messages {
                self.hub.deliver_db_message(message);
            }
        }
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
        let (bindings, errors, response) = bindings(Some(&config));
        assert!(errors.is_empty());
        assert_eq!(bindings.len(), 3);
        assert_eq!(bindings[0].id, bindings[2].id);
        assert_ne!(bindings[0].id, bindings[1].id);
        assert!(bindings[0].id < 1 << 27);
        let response: Value = serde_json::from_str(&response).unwrap();
        assert_eq!(response["postgres_changes"][0]["filter"], "id=eq.1");
        assert_eq!(response["postgres_changes"][1]["id"], bindings[1].id);
        assert_eq!(bindings[1].table, None);
        let bad =
            serde_json::json!([{"event": "*", "schema": "public", "table": "t", "filter": "id=foo.1"}, {"event": "*"}]);
        let (none, errors, response) = super::bindings(Some(&bad));
        assert!(none.is_empty());
        assert!(errors[0].starts_with("Error parsing `filter` params: "), "{errors:?}");
        assert!(errors[1].starts_with("No subscription params provided."), "{errors:?}");
        assert!(response.contains("\"id\""));
        let (none, _, response) = super::bindings(None);
        assert!(none.is_empty());
        assert_eq!(response, r#"{"postgres_changes":[]}"#);
    }
}
