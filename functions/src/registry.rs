//! What is deployed: the process-wide [`Shared`] state (engine, settings, master key, the
//! published [`Registry`]) and its loading from PostgreSQL.
//!
//! Owns: the registry snapshot and its publication; the compiled-component memo (by SHA-256);
//! the queries over `_madbase.functions`, `_madbase.function_versions` and
//! `_madbase.function_secrets` (migration 0012).
//!
//! Invariants:
//! - A registry is immutable once published, and published whole: a request takes one
//!   (`Arc`) at its start and finishes on the version it took, so a deploy or a rollback never
//!   changes a request in flight, and no request sees half a change.
//! - Readers on the request path touch one atomic (the publication counter) and take the lock
//!   only when it moved, i.e. once per shard per publication.
//! - The registry mirrors the database: every change commits there first (bumping
//!   `_madbase.functions_generation`), then the node reloads; other nodes notice the generation
//!   within [`RELOAD_INTERVAL`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine as _;
use madbase_core::ShardCtx;
use madbase_pg::{Batch, Statement, TxEnd};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::engine::Runtime;
use crate::host::Invocation;
use crate::secrets::MasterKey;
use crate::settings::{EdgeRuntime, FunctionConfig, Functions};
use crate::LANE;

/// How often a node checks whether another node changed the deployments.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// One live function: the version being served.
pub struct Deployment {
    pub name: String,
    pub version: i32,
    pub sha256: String,
    pub config: FunctionConfig,
    /// `config.allowed_outbound_hosts`, shared by its invocations.
    pub allowed_hosts: Arc<[String]>,
    pub pre: ProxyPre<Invocation>,
}

/// Everything served at one moment.
#[derive(Default)]
pub struct Registry {
    /// `_madbase.functions_generation` when this was loaded.
    pub generation: i64,
    pub functions: HashMap<String, Arc<Deployment>>,
    /// Sealed secrets by name (opened per invocation).
    pub secrets: Vec<(String, Vec<u8>)>,
}

/// Edge Functions' process-wide state.
pub struct Shared {
    pub settings: EdgeRuntime,
    /// `[functions.<name>]`: the defaults of each name's deploys.
    pub configs: Functions,
    pub runtime: Runtime,
    pub master: MasterKey,
    /// `SUPABASE_URL`, `SUPABASE_ANON_KEY`, `SUPABASE_SERVICE_ROLE_KEY`.
    pub base_env: Vec<(String, String)>,
    /// Outgoing HTTP of functions (runs on the egress runtime).
    pub client: reqwest::Client,
    pub egress: madbase_egress::Egress,
    registry: RwLock<Arc<Registry>>,
    published: AtomicU64,
    /// Compiled components by SHA-256: a reload reuses them, a deploy adds one.
    compiled: Mutex<HashMap<String, ProxyPre<Invocation>>>,
    /// One reload at a time per process.
    reloading: futures_lock::Lock,
}

mod futures_lock {
    //! A process-wide async lock for the rare reloads (a shard must not block its thread on it).
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Default)]
    pub struct Lock(AtomicBool);

    pub struct Guard<'a>(&'a Lock);

    impl Lock {
        pub async fn lock(&self) -> Guard<'_> {
            while self.0.swap(true, Ordering::Acquire) {
                monoio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Guard(self)
        }
    }

    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            self.0 .0.store(false, Ordering::Release);
        }
    }
}

/// A shard's view of the published registry.
#[derive(Default)]
pub struct ShardView {
    seen: RefCell<(u64, Arc<Registry>)>,
}

impl ShardView {
    /// The current registry (one atomic load unless a publication happened).
    pub fn current(&self, shared: &Shared) -> Arc<Registry> {
        let published = shared.published.load(Ordering::Acquire);
        let mut seen = self.seen.borrow_mut();
        if seen.0 != published {
            *seen = (published, shared.registry.read().unwrap_or_else(|p| p.into_inner()).clone());
        }
        seen.1.clone()
    }
}

/// Why the deployments could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("database: {0}")]
    Pg(#[from] madbase_pg::PgError),
    #[error("{0}")]
    Corrupt(String),
    #[error("the blocking pool is full")]
    Busy,
}

impl Shared {
    #[allow(clippy::too_many_arguments)] // each is a distinct input of the service
    pub fn new(
        settings: EdgeRuntime,
        configs: Functions,
        shards: usize,
        data_dir: &std::path::Path,
        base_env: Vec<(String, String)>,
        egress: madbase_egress::Egress,
    ) -> Result<Arc<Shared>, String> {
        let dir = data_dir.join("functions");
        let master =
            MasterKey::load(settings.master_key.as_deref(), &dir.join("master.key")).map_err(|e| e.to_string())?;
        let runtime = Runtime::new(&settings, shards, &dir.join("cache"))?;
        // TLS with ring, as Storage's S3 client (reqwest's `rustls-no-provider`).
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_millis(settings.wall_clock_limit_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("the functions' HTTP client: {e}"))?;
        Ok(Arc::new(Shared {
            settings,
            configs,
            runtime,
            master,
            base_env,
            client,
            egress,
            registry: RwLock::default(),
            published: AtomicU64::new(0),
            compiled: Mutex::default(),
            reloading: futures_lock::Lock::default(),
        }))
    }

    /// The settings a deploy of `name` starts from.
    pub fn config_for(&self, name: &str) -> FunctionConfig {
        self.configs.0.get(name).cloned().unwrap_or_default()
    }

    /// Remembers a compiled component (a deploy compiled it before committing).
    pub fn remember(&self, sha256: &str, pre: ProxyPre<Invocation>) {
        self.compiled.lock().unwrap_or_else(|p| p.into_inner()).insert(sha256.to_owned(), pre);
    }

    fn published_registry(&self) -> Arc<Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn publish(&self, registry: Registry) {
        *self.registry.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(registry);
        self.published.fetch_add(1, Ordering::Release);
    }

    /// The database's generation of the deployments.
    pub async fn db_generation(ctx: &ShardCtx) -> Result<i64, LoadError> {
        let batch = Batch::new()
            .statement(Statement::new(
                "select case when is_called then last_value else 0 end::text from _madbase.functions_generation",
            ))
            .end(TxEnd::Commit);
        let results = ctx.lanes.get(LANE).execute(batch).await?;
        Ok(results.first().and_then(|r| r.scalar()).and_then(|g| g.parse().ok()).unwrap_or(0))
    }

    /// Loads the deployments and secrets from the database and publishes them, unless the
    /// published registry is already at the database's generation. Components not compiled yet
    /// are compiled on the blocking pool.
    pub async fn reload(self: &Arc<Self>, ctx: &ShardCtx) -> Result<(), LoadError> {
        let _guard = self.reloading.lock().await;
        let generation = Self::db_generation(ctx).await?;
        if generation == self.published_registry().generation && self.published.load(Ordering::Acquire) > 0 {
            return Ok(());
        }
        let known: Vec<String> = self.compiled.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        let known = madbase_pg::text_array_literal(known.iter().map(String::as_str));
        let batch = Batch::new()
            .statement(
                Statement::new(
                    "select v.name, v.version::text, v.sha256, v.settings::text, \
                       case when v.sha256 = any($1::text[]) then null else encode(v.component, 'base64') end \
                     from _madbase.functions f \
                     join _madbase.function_versions v on v.name = f.name and v.version = f.active_version",
                )
                .bind(known),
            )
            .statement(Statement::new(
                "select name, encode(sealed, 'base64') from _madbase.function_secrets order by name",
            ))
            .end(TxEnd::Commit);
        let mut results = ctx.lanes.get(LANE).execute(batch).await?;
        let secrets_rows = results.pop().unwrap_or_default();
        let function_rows = results.pop().unwrap_or_default();
        let mut functions = HashMap::new();
        for row in function_rows.rows {
            let field =
                |i: usize| row.get_str(i).map(str::to_owned).ok_or_else(|| LoadError::Corrupt("a NULL field".into()));
            let (name, version, sha256, settings) = (field(0)?, field(1)?, field(2)?, field(3)?);
            let config: FunctionConfig =
                serde_json::from_str(&settings).map_err(|e| LoadError::Corrupt(format!("settings of {name}: {e}")))?;
            let pre = match row.get_str(4) {
                None => self.compiled.lock().unwrap_or_else(|p| p.into_inner()).get(&sha256).cloned(),
                Some(encoded) => {
                    let bytes = decode_pg_base64(encoded)
                        .map_err(|e| LoadError::Corrupt(format!("component of {name}: {e}")))?;
                    self.compile(ctx, bytes, sha256.clone()).await?
                }
            };
            let Some(pre) = pre else {
                tracing::error!(function = %name, version = %version, "a deployed function does not compile any more; not served");
                continue;
            };
            let version = version.parse().map_err(|_| LoadError::Corrupt("version".into()))?;
            let allowed_hosts = config.allowed_outbound_hosts.clone().into();
            functions.insert(name.clone(), Arc::new(Deployment { name, version, sha256, config, allowed_hosts, pre }));
        }
        let mut secrets = Vec::new();
        for row in secrets_rows.rows {
            let (Some(name), Some(sealed)) = (row.get_str(0), row.get_str(1)) else { continue };
            let sealed = decode_pg_base64(sealed).map_err(|e| LoadError::Corrupt(format!("secret {name}: {e}")))?;
            secrets.push((name.to_owned(), sealed));
        }
        tracing::info!(generation, functions = functions.len(), secrets = secrets.len(), "functions loaded");
        self.publish(Registry { generation, functions, secrets });
        Ok(())
    }

    /// Compiles `bytes` on the blocking pool and remembers it; `None` when it does not compile.
    async fn compile(
        self: &Arc<Self>,
        ctx: &ShardCtx,
        bytes: Vec<u8>,
        sha256: String,
    ) -> Result<Option<ProxyPre<Invocation>>, LoadError> {
        let shared = self.clone();
        let job = ctx
            .blocking
            .spawn(move || shared.runtime.prepare(&bytes, &sha256).map(|pre| (sha256, pre)))
            .map_err(|_| LoadError::Busy)?;
        match job.await {
            Ok(Ok((sha256, pre))) => {
                self.remember(&sha256, pre.clone());
                Ok(Some(pre))
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "a stored function does not compile");
                Ok(None)
            }
            Err(_) => Err(LoadError::Busy),
        }
    }
}

/// PostgreSQL's `encode(…, 'base64')`, which breaks lines every 76 characters, decoded.
fn decode_pg_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let joined: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(joined)
}

/// Loads the deployments now, then checks every [`RELOAD_INTERVAL`] whether another node
/// changed them (the owner shard's task).
pub async fn watch(ctx: std::rc::Rc<ShardCtx>, shared: Arc<Shared>) {
    loop {
        if let Err(e) = shared.reload(&ctx).await {
            tracing::warn!(error = %e, "loading the functions failed; retrying");
        }
        monoio::time::sleep(RELOAD_INTERVAL).await;
        if ctx.shutdown.is_triggered() {
            return;
        }
    }
}
