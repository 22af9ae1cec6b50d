//! The database MadBase serves: the managed private cluster (the embedded default) or the server
//! named by `DATABASE_URL`, brought to a usable state before any shard starts.
//!
//! Owns start-up of the database side: finding or initialising the managed cluster (on the
//! binaries [`PgBinaries::choose`] picks: see `madbase_pg::cluster` for the rule, which never
//! starts a data dir with binaries of another major version), checking `wal_level` and the
//! project's `[db] major_version`, applying migrations (MadBase's own, then a Supabase project's
//! and its seed: see [`crate::migrate`]), loading the first schema cache snapshot, and choosing
//! the credentials the shards' pools log in with.
//!
//! Invariants: when [`prepare`] returns, migrations have been applied and the returned
//! [`ConnectConfig`] logs in as a role that can switch to `anon`/`authenticated`/`service_role`. In
//! managed mode that role is `authenticator` (never the superuser: a token's `role` claim must not
//! be able to reach superuser rights), with a random password kept in the data dir (mode 0600).
//! The managed cluster is stopped when the returned [`Database`] is dropped.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use madbase_pg::{Cluster, ClusterError, ClusterOptions, ConnectConfig, Connection, PgBinaries, PgError};

use crate::config::Config;
use crate::migrate::{self, MigrateError, Project};
use madbase_rest::schema::{introspect, IntrospectError, SchemaCache};

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("DATABASE_URL: {0}")]
    Url(PgError),
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect { target: String, source: PgError },
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("setting up the authenticator role failed: {0}")]
    Authenticator(PgError),
    #[error("creating the buckets of [storage.buckets] failed: {0}")]
    Buckets(PgError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("cannot start a runtime for start-up work: {0}")]
    Runtime(std::io::Error),
    #[error("cannot load the schema cache: {0}")]
    Schema(#[from] IntrospectError),
}

/// The database as the shards will use it.
pub struct Database {
    /// What each shard's pool connects with.
    pub pool_config: ConnectConfig,
    /// How to reach the managed cluster as its superuser (printed at start for `psql`); `None`
    /// when external.
    pub managed_superuser: Option<ConnectConfig>,
    /// `wal_level` of the server; realtime needs `logical`.
    pub wal_level: String,
    /// The managed cluster, kept alive for the life of the process; stopped on drop.
    pub cluster: Option<Cluster>,
    /// The schema cache as loaded right after migrations (the shards start from it).
    pub schema: Arc<SchemaCache>,
}

impl Database {
    /// Stops the managed cluster (fast shutdown), if there is one. Call after the shards drained.
    pub fn stop(mut self) {
        if let Some(mut cluster) = self.cluster.take() {
            if let Err(error) = cluster.stop() {
                tracing::warn!(%error, "stopping the managed PostgreSQL failed");
            }
        }
    }
}

/// Starts (managed mode) or reaches (`DATABASE_URL`) PostgreSQL, migrates it (with the Supabase
/// project in `project`, the `supabase/` directory, when given), and returns what the shards
/// connect with. Blocking: runs before the shards start.
pub fn prepare(config: &Config, project: Option<&Path>) -> Result<Database, DatabaseError> {
    let project = project.map(|dir| Project::load(dir, &config.db)).transpose()?;
    let (admin, cluster) = match &config.pg.url {
        Some(url) => (ConnectConfig::from_url(url).map_err(DatabaseError::Url)?, None),
        None => {
            let needs = project.as_ref().map(Project::extensions).unwrap_or_default();
            let cluster = start_managed(config, &needs)?;
            (cluster.connect_config(), Some(cluster))
        }
    };
    let managed = cluster.is_some();
    let managed_data_dir = cluster.as_ref().map(|c| c.data_dir().to_path_buf());
    let data_dir = config.data_dir.clone();
    let expected_major = config.db.major_version;
    let schemas = config.api.schemas.clone();
    let mut runtime =
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().map_err(DatabaseError::Runtime)?;
    let (wal_level, pool_config, schema) = runtime.block_on(async move {
        let target = format!("{}:{}", host_text(&admin), admin.port);
        let conn = Connection::connect(&admin).await.map_err(|source| DatabaseError::Connect { target, source })?;
        let wal_level = conn
            .simple_query("show wal_level")
            .await
            .ok()
            .and_then(|sets| sets.first()?.rows.first()?.get_str(0).map(str::to_owned))
            .unwrap_or_default();
        let server_major = conn
            .simple_query("show server_version_num")
            .await
            .ok()
            .and_then(|sets| sets.first()?.rows.first()?.get_str(0)?.parse::<u32>().ok())
            .map(|num| num / 10000);
        if let Some(major) = server_major.filter(|major| *major != expected_major) {
            tracing::warn!(
                "the project is written for PostgreSQL {expected_major} ([db] major_version) but the server runs \
                 PostgreSQL {major}; its SQL may behave differently"
            );
        }
        migrate::run(&conn, project.as_ref(), managed_data_dir.as_deref()).await?;
        if let Some(buckets) = madbase_storage::declared::batch(&config.storage) {
            conn.execute(buckets).await.map_err(DatabaseError::Buckets)?;
        }
        let pool_config = if managed {
            let password = authenticator_password(&data_dir)?;
            // The password is [A-Za-z0-9]{32} (generated below), safe to inline.
            debug_assert!(password.bytes().all(|b| b.is_ascii_alphanumeric()));
            conn.simple_query(&format!("alter role authenticator with login password '{password}'"))
                .await
                .map_err(DatabaseError::Authenticator)?;
            let mut pool_config = admin.clone();
            pool_config.user = "authenticator".to_owned();
            pool_config.password = Some(password);
            pool_config
        } else {
            admin.clone()
        };
        let started = Instant::now();
        // Read for the role the pools log in as (its settings, the roles it can become).
        let schema = introspect::load(&conn, &schemas, &pool_config.user).await?;
        tracing::info!(
            relations = schema.relation_count(),
            functions = schema.function_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "schema cache loaded"
        );
        conn.close();
        Ok::<_, DatabaseError>((wal_level, pool_config, schema))
    })?;
    if wal_level != "logical" {
        tracing::warn!(
            wal_level = %wal_level,
            "PostgreSQL wal_level is not 'logical': realtime Postgres changes need `wal_level = logical` \
             (set it in postgresql.conf and restart PostgreSQL)"
        );
    }
    let mut pool_config = pool_config;
    pool_config.application_name = Some("madbase".to_owned());
    pool_config.max_in_flight = config.pg.pipeline_depth;
    pool_config.max_result_bytes = config.pg.max_result_bytes;
    Ok(Database {
        managed_superuser: cluster.as_ref().map(Cluster::connect_config),
        pool_config,
        wal_level,
        cluster,
        schema: Arc::new(schema),
    })
}

fn host_text(config: &ConnectConfig) -> String {
    match &config.host {
        madbase_pg::Host::Tcp(host) => host.clone(),
        madbase_pg::Host::Unix(dir) => dir.display().to_string(),
    }
}

/// Starts the managed cluster; `needs` are the extensions the project's migrations create (they
/// steer the choice of binaries for a new data dir).
fn start_managed(config: &Config, needs: &[String]) -> Result<Cluster, DatabaseError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| DatabaseError::Io {
        context: format!("cannot create data dir {}", config.data_dir.display()),
        source,
    })?;
    let data_dir = std::fs::canonicalize(&config.data_dir).map_err(|source| DatabaseError::Io {
        context: format!("cannot resolve data dir {}", config.data_dir.display()),
        source,
    })?;
    let chosen = PgBinaries::choose(&data_dir, config.pg.bin.as_deref(), needs)?;
    tracing::info!(
        bin = %chosen.binaries.bindir.display(),
        major = chosen.major,
        why = %chosen.why,
        "PostgreSQL binaries for the managed cluster"
    );
    let options = ClusterOptions {
        binaries: Some(chosen.binaries),
        // Every shard's pool plus admin and replication connections, with room to spare.
        max_connections: (config.shards.count * (config.pg.pool_size + config.pg.auth_pool_size) + 50).max(100) as u32,
        start_timeout: Duration::from_secs(120),
        ..ClusterOptions::default()
    };
    tracing::info!(data_dir = %data_dir.display(), port = config.db.port, "starting managed PostgreSQL");
    let mut cluster = Cluster::open_or_init(&data_dir, config.db.port, options)?;
    cluster.start()?;
    Ok(cluster)
}

/// The authenticator's password in managed mode: read from `<data_dir>/authenticator.password`,
/// created (32 random alphanumerics, mode 0600) on first start.
fn authenticator_password(data_dir: &Path) -> Result<String, DatabaseError> {
    let path: PathBuf = data_dir.join("authenticator.password");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() == 32 && text.trim().bytes().all(|b| b.is_ascii_alphanumeric()) => {
            return Ok(text.trim().to_owned())
        }
        Ok(_) | Err(_) => {}
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut random = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).map_err(|_| DatabaseError::Io {
        context: "the system random source failed".to_owned(),
        source: std::io::Error::other("getrandom"),
    })?;
    let password: String = random.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
    let io = |source| DatabaseError::Io { context: format!("cannot write {}", path.display()), source };
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path).map_err(io)?;
    file.write_all(password.as_bytes()).map_err(io)?;
    Ok(password)
}
