//! Schema migrations: the SQL in `migrations/`, applied at start, in order, exactly once.
//!
//! Owns the list of migrations compiled into the binary and the bookkeeping table
//! `_madbase.migrations (version, name, checksum, applied_at)`.
//!
//! Invariants: migrations run under a session advisory lock, so several MadBase nodes starting
//! against one database apply each migration once; each migration and its bookkeeping row are one
//! simple-query message, hence one transaction (all or nothing); a shipped migration never changes —
//! an applied version whose checksum differs from the binary's stops the start with an error
//! instead of silently diverging. Every migration is also written to be idempotent, so a database
//! that already has Supabase's objects accepts it.

use madbase_pg::{Connection, PgError};
use ring::digest;

/// Key of the advisory lock that serialises migrations across nodes ("madbase" in ASCII, as i64).
const MIGRATION_LOCK_KEY: i64 = 0x006d_6164_6261_7365;

pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "roles_schemas_auth_helpers",
        sql: include_str!("../migrations/0001_roles_schemas_auth_helpers.sql"),
    },
    Migration {
        version: 2,
        name: "schema_reload_trigger",
        sql: include_str!("../migrations/0002_schema_reload_trigger.sql"),
    },
    Migration {
        version: 3,
        name: "role_statement_timeouts",
        sql: include_str!("../migrations/0003_role_statement_timeouts.sql"),
    },
];

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration {version} ({name}) failed: {source}")]
    Failed { version: u32, name: &'static str, source: PgError },
    #[error("migration bookkeeping failed: {0}")]
    Bookkeeping(#[source] PgError),
    #[error(
        "migration {version} ({name}) was applied with checksum {applied} but this binary has {expected}; \
         migrations must never change once shipped"
    )]
    Checksum { version: u32, name: &'static str, applied: String, expected: String },
}

fn checksum(sql: &str) -> String {
    digest::digest(&digest::SHA256, sql.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Applies every migration not yet recorded. Returns the versions applied now.
pub async fn run(conn: &Connection) -> Result<Vec<u32>, MigrateError> {
    conn.simple_query(&format!("select pg_advisory_lock({MIGRATION_LOCK_KEY})"))
        .await
        .map_err(MigrateError::Bookkeeping)?;
    let result = apply_pending(conn).await;
    // Releasing also happens when the session ends; an error here must not hide `result`.
    let _ = conn.simple_query(&format!("select pg_advisory_unlock({MIGRATION_LOCK_KEY})")).await;
    result
}

async fn apply_pending(conn: &Connection) -> Result<Vec<u32>, MigrateError> {
    conn.simple_query(
        "create schema if not exists _madbase;
         create table if not exists _madbase.migrations (
           version integer primary key,
           name text not null,
           checksum text not null,
           applied_at timestamptz not null default now()
         );",
    )
    .await
    .map_err(MigrateError::Bookkeeping)?;
    let applied = conn
        .simple_query("select version::text, checksum from _madbase.migrations order by version")
        .await
        .map_err(MigrateError::Bookkeeping)?;
    let applied: Vec<(u32, String)> = applied
        .first()
        .map(|set| {
            set.rows
                .iter()
                .filter_map(|row| {
                    let version = row.get_str(0)?.parse().ok()?;
                    Some((version, row.get_str(1)?.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();

    let mut now_applied = Vec::new();
    for migration in MIGRATIONS {
        let expected = checksum(migration.sql);
        if let Some((_, found)) = applied.iter().find(|(v, _)| *v == migration.version) {
            if *found != expected {
                return Err(MigrateError::Checksum {
                    version: migration.version,
                    name: migration.name,
                    applied: found.clone(),
                    expected,
                });
            }
            continue;
        }
        // Name and checksum are compile-time constants of hex and [a-z_]: safe to inline.
        debug_assert!(migration.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        let sql = format!(
            "{}\n;\ninsert into _madbase.migrations (version, name, checksum) values ({}, '{}', '{}');",
            migration.sql, migration.version, migration.name, expected
        );
        conn.simple_query(&sql).await.map_err(|source| MigrateError::Failed {
            version: migration.version,
            name: migration.name,
            source,
        })?;
        tracing::info!(version = migration.version, name = migration.name, "migration applied");
        now_applied.push(migration.version);
    }
    Ok(now_applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_strictly_increasing() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(MIGRATIONS.iter().all(|m| !m.sql.trim().is_empty()));
    }
}
