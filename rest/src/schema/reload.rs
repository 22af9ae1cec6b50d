//! Keeping the schema cache current: one `LISTEN pgrst` connection, on the service's owner shard.
//!
//! Owns the reloader task (the Data API's one owner task: it runs on the service's owner shard only) and the rules for when a
//! reload happens:
//! - a notification on channel `pgrst` with payload `reload schema`, `reload config` (the
//!   in-database `pgrst.*` settings are part of the snapshot) or an empty payload
//!   (reference/rest.md §10; anything else is ignored). MadBase's DDL event
//!   trigger (migration 0002) sends `reload schema` at the end of every DDL command;
//! - a burst (a migration script fires one per statement) is debounced: the reload starts once the
//!   channel has been quiet for [`DEBOUNCE`], or [`MAX_DELAY`] after the first notification;
//! - every (re)connection: notifications sent while nobody listened are lost, so after each
//!   `LISTEN` the cache is reloaded unconditionally; likewise when the connection's notification
//!   queue overflowed.
//!
//! A reload runs the introspection statement on the listener's own connection (never on the
//! request pool), parses the document on the blocking pool (waiting while that pool is full, never
//! on the shard), swaps the owner shard's own `Arc`, then hands the same `Arc` to every other shard as
//! [`RestMessage::Schema`](crate::RestMessage) on the control lane of the rings (a full ring is
//! retried on its own until it takes it, while the others take it at once: a snapshot is never
//! dropped and one busy shard never delays the rest).
//! A failed reload logs and keeps the previous snapshot.
//!
//! Invariants: at most one reload runs at a time (the task is sequential); the connection is
//! re-established with exponential backoff ([`BACKOFF_MIN`]..[`BACKOFF_MAX`]); an idle
//! connection is probed every [`PROBE_INTERVAL`] so a silently dead one is noticed; the task ends
//! when the shard's shutdown signal fires, closing its connection.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use madbase_pg::{ConnectConfig, Connection, Notification};
use madbase_shards::ShutdownSignal;

use super::{introspect, SchemaCache};
use crate::{RestMessage, RestService};

/// PostgREST's channel.
pub const CHANNEL: &str = "pgrst";
/// `application_name` of the listener's session (to find it in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "madbase schema listener";
/// Quiet time that ends a burst of notifications.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// Longest a reload waits for a burst to end.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// First and longest wait between connection attempts.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often an idle listener checks its connection with `select 1`, and how long it waits.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(30);
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on one introspection round trip.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Handing a parse to a full blocking pool: the retry interval.
pub const PARSE_RETRY: Duration = Duration::from_millis(10);
/// Notifications kept while a reload runs (overflow just means "reload again").
pub const NOTIFICATION_CAPACITY: usize = 256;

/// The reloader task: runs until `shutdown` fires.
pub async fn run(state: Rc<RestService>, shutdown: ShutdownSignal) {
    let mut connect = state.ctx.connect.clone();
    connect.application_name = Some(APPLICATION_NAME.to_owned());
    monoio::select! {
        _ = shutdown.triggered() => {}
        _ = listen_forever(&state, &connect) => {}
    }
    tracing::debug!("schema reloader stopped");
}

/// Does a notification ask for a schema reload?
pub fn wants_reload(n: &Notification) -> bool {
    n.channel == CHANNEL && matches!(n.payload.trim(), "" | "reload schema" | "reload config")
}

async fn listen_forever(state: &RestService, connect: &ConnectConfig) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let conn = match listen(connect).await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "schema listener cannot connect");
                monoio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        tracing::info!(conn = conn.id(), channel = CHANNEL, "listening for schema reloads");
        // Anything sent while nobody listened is lost: reload now.
        reload(state, &conn, "listen started").await;
        watch(state, &conn).await;
        conn.close();
        tracing::warn!("schema listener lost its connection; reconnecting");
        monoio::time::sleep(BACKOFF_MIN).await;
    }
}

async fn listen(connect: &ConnectConfig) -> Result<Connection, madbase_pg::PgError> {
    let conn = Connection::connect(connect).await?;
    conn.set_notification_capacity(NOTIFICATION_CAPACITY);
    conn.simple_query(&format!("LISTEN {CHANNEL}")).await?;
    Ok(conn)
}

/// Waits for notifications and reloads on them; returns when the connection is gone.
async fn watch(state: &RestService, conn: &Connection) {
    loop {
        let first = match monoio::time::timeout(PROBE_INTERVAL, conn.notification()).await {
            Ok(Some(n)) => n,
            Ok(None) => return,
            Err(_) => {
                match monoio::time::timeout(PROBE_TIMEOUT, conn.simple_query("select 1")).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(error)) => tracing::warn!(%error, "schema listener probe failed"),
                    Err(_) => tracing::warn!("schema listener probe timed out"),
                }
                return;
            }
        };
        let mut wanted = note(&first);
        let burst = Instant::now();
        loop {
            let left = MAX_DELAY.saturating_sub(burst.elapsed()).min(DEBOUNCE);
            if left.is_zero() {
                break;
            }
            match monoio::time::timeout(left, conn.notification()).await {
                Ok(Some(n)) => wanted |= note(&n),
                // Reconnecting reloads anyway.
                Ok(None) => return,
                Err(_) => break,
            }
        }
        if conn.take_notifications_lost() {
            tracing::info!("schema listener dropped notifications (queue full); reloading");
            wanted = true;
        }
        if wanted {
            reload(state, conn, "notification").await;
        }
    }
}

fn note(n: &Notification) -> bool {
    let wanted = wants_reload(n);
    tracing::debug!(channel = %n.channel, payload = %n.payload, from_pid = n.process_id, wanted, "schema notification");
    wanted
}

/// Reads a new snapshot and publishes it; on failure keeps the current one.
async fn reload(state: &RestService, conn: &Connection, reason: &'static str) {
    let started = Instant::now();
    let schemas = &state.config.api.schemas;
    let login_role = &state.ctx.connect.user;
    let document = match monoio::time::timeout(RELOAD_TIMEOUT, introspect::fetch(conn, schemas, login_role)).await {
        Ok(Ok(document)) => document,
        Ok(Err(error)) => {
            tracing::warn!(%error, reason, "schema reload failed; keeping the previous schema cache");
            return;
        }
        Err(_) => {
            tracing::warn!(
                reason,
                timeout_s = RELOAD_TIMEOUT.as_secs(),
                "schema reload timed out; keeping the previous schema cache"
            );
            return;
        }
    };
    let fetched = started.elapsed();
    let cache = match parse_off_shard(state, document).await {
        Ok(cache) => Arc::new(cache),
        Err(error) => {
            tracing::error!(%error, reason, "schema reload could not be parsed; keeping the previous schema cache");
            return;
        }
    };
    tracing::info!(
        reason,
        relations = cache.relation_count(),
        functions = cache.function_count(),
        query_ms = fetched.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "schema cache reloaded"
    );
    publish(state, cache).await;
}

/// Parses on the blocking pool: a large document (about 1 s at 10,000 tables) must not stall the owner
/// shard's requests. A full pool is waited for ([`PARSE_RETRY`] at a time), never bypassed.
async fn parse_off_shard(state: &RestService, document: String) -> Result<SchemaCache, String> {
    let document: Arc<str> = document.into();
    loop {
        let job_document = document.clone();
        match state.ctx.blocking.spawn(move || introspect::parse(&job_document)) {
            Ok(job) => {
                return match job.await {
                    Ok(parsed) => parsed.map_err(|e| e.to_string()),
                    Err(error) => Err(error.to_string()),
                }
            }
            Err(error) => {
                tracing::debug!(%error, "blocking pool full; the schema parse waits for room");
                monoio::time::sleep(PARSE_RETRY).await;
            }
        }
    }
}

/// Swaps this shard's snapshot, then hands `cache` to every other shard (see the module docs:
/// never dropped, a full ring retried on its own).
async fn publish(state: &RestService, cache: Arc<SchemaCache>) {
    state.schema.set(cache.clone());
    let gone = state.outbox.deliver_to_all(RestMessage::Schema(cache)).await;
    if !gone.is_empty() {
        // Those shards have stopped (shutdown): nothing left to keep current.
        tracing::debug!(?gone, "shards gone; schema cache not handed over");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(channel: &str, payload: &str) -> Notification {
        Notification { process_id: 1, channel: channel.into(), payload: payload.into() }
    }

    #[test]
    fn payloads() {
        assert!(wants_reload(&n("pgrst", "reload schema")));
        assert!(wants_reload(&n("pgrst", "")));
        assert!(wants_reload(&n("pgrst", "reload config")));
        assert!(!wants_reload(&n("pgrst", "something else")));
        assert!(!wants_reload(&n("other", "reload schema")));
    }
}
