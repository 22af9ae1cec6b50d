//! `madbase`: a Supabase-compatible backend in one binary.
//!
//! This file owns the command line and the order of start-up: configuration, logging, keys, the
//! database (managed or external, migrated), then the shards. Everything after start-up happens on
//! the shards (`app`), one thread per core.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use madbase_shards::{Runtime, RuntimeConfig};

use madbase::config::{self, Config};
use madbase::{app, database, logging};
use madbase_auth::AuthShared;
use madbase_core::jwt::JwtKeys;
use madbase_core::platform::DEMO_JWT_SECRET;
use madbase_egress::Egress;
use madbase_realtime::replication::{ReplicationConfig, ReplicationHandle};
use madbase_realtime::RealtimeShared;
use tracing_subscriber::fmt::MakeWriter;

/// mimalloc instead of glibc malloc: every request allocates and frees many small buffers on
/// its shard's thread, and mimalloc's thread-local free lists make that markedly cheaper (glibc
/// spent about a quarter of the process's CPU in malloc/free under load).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE_TEMPLATE: &str = "\
madbase — a Supabase-compatible backend in one binary

USAGE:
    madbase start   [--config FILE]   run every service (and a managed PostgreSQL unless DATABASE_URL is set)
    madbase migrate [--config FILE]   apply migrations and exit
    madbase keys    [--config FILE]   print the anon and service_role keys for the configured secret
    madbase settings                  list every configuration key, its environment variable and meaning
    madbase functions ... | secrets ...   deploy and manage Edge Functions on the running server:
{FUNCTIONS}
    madbase --version | --help

Configuration: supabase/config.toml when started in a Supabase project, then the TOML file, then
MADBASE_* environment variables; see README.md.";

fn usage() -> String {
    USAGE_TEMPLATE.replace("{FUNCTIONS}", madbase::cli::USAGE)
}

enum Command {
    Start,
    Migrate,
    Keys,
    /// `functions …` or `secrets …`, with their own arguments.
    Functions(Vec<String>),
    Secrets(Vec<String>),
}

fn parse_args() -> Result<(Command, Option<PathBuf>), String> {
    let mut args = std::env::args().skip(1);
    let command = match args.next().as_deref() {
        Some("start") => Command::Start,
        Some("migrate") => Command::Migrate,
        Some("keys") => Command::Keys,
        Some(cli @ ("functions" | "secrets")) => {
            // Their own arguments, less the shared `--config`, `--url` and `--service-key`.
            let (mut own, mut config_file, mut url, mut key) = (Vec::new(), None, None, None);
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--config" | "-c" => config_file = Some(PathBuf::from(args.next().ok_or("--config needs a file")?)),
                    "--url" => url = Some(args.next().ok_or("--url needs a URL")?),
                    "--service-key" => key = Some(args.next().ok_or("--service-key needs a key")?),
                    _ => own.push(arg),
                }
            }
            own.extend(url.map(|u| format!("--url={u}")));
            own.extend(key.map(|k| format!("--service-key={k}")));
            let command = if cli == "functions" { Command::Functions(own) } else { Command::Secrets(own) };
            return Ok((command, config_file));
        }
        Some("settings") => {
            print!("{}", Config::reference());
            std::process::exit(0);
        }
        Some("--version" | "-V") => {
            println!("madbase {}", env!("CARGO_PKG_VERSION"));
            std::process::exit(0);
        }
        Some("--help" | "-h" | "help") | None => {
            println!("{}", usage());
            std::process::exit(0);
        }
        Some(other) => return Err(format!("unknown command {other:?}\n\n{}", usage())),
    };
    let mut config_file = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => config_file = Some(PathBuf::from(args.next().ok_or("--config needs a file")?)),
            other => return Err(format!("unknown argument {other:?}\n\n{}", usage())),
        }
    }
    Ok((command, config_file))
}

/// The fmt subscriber with `config.log` as its filter (RUST_LOG syntax) and `config.log_format`,
/// writing through [`logging`]: lines go to a per-thread buffer and one writer thread empties
/// them into stderr, so no shard waits for stderr or for another shard. The guard must live until
/// the process ends: dropping it writes what is still buffered. If the writer thread cannot start,
/// lines go to stderr directly as before.
fn init_logging(config: &Config) -> Option<logging::LogGuard> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = config.log.format == "json";
    match logging::install(Box::new(std::io::stderr()), logging::LogConfig::default()) {
        Ok((writer, guard)) => {
            init_subscriber(filter, json, writer);
            Some(guard)
        }
        Err(error) => {
            init_subscriber(filter, json, std::io::stderr);
            tracing::error!("{error}; logging to stderr directly");
            None
        }
    }
}

fn init_subscriber<W>(filter: tracing_subscriber::EnvFilter, json: bool, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let (command, config_file) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("madbase: {message}");
            return ExitCode::from(2);
        }
    };
    let loaded = match config::load(config_file) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("madbase: {error}");
            return ExitCode::from(2);
        }
    };
    let config = loaded.config;
    // Dropped last, after every line of the run (and the final error, if any) is logged.
    let _log = init_logging(&config);
    for notice in &loaded.notices {
        tracing::warn!("{notice}");
    }
    let project = loaded.project.as_deref();
    let result = match command {
        Command::Start => start(config, project),
        Command::Migrate => database::prepare(&config, project).map(drop).map_err(|e| e.to_string()),
        Command::Keys => load_keys(&config).map(|keys| {
            let (anon, service) = api_keys(&keys);
            println!("anon key:         {anon}\nservice_role key: {service}");
        }),
        Command::Functions(args) => admin_client(&config, args).and_then(|(c, a)| madbase::cli::functions(&c, &a)),
        Command::Secrets(args) => admin_client(&config, args).and_then(|(c, a)| madbase::cli::secrets(&c, &a)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("madbase: {message}");
            ExitCode::FAILURE
        }
    }
}

fn load_keys(config: &Config) -> Result<JwtKeys, String> {
    let (secret, demo) = config.auth.effective_jwt_secret();
    if demo {
        tracing::warn!(
            "no [auth] jwt_secret (MADBASE_AUTH_JWT_SECRET) configured: using the PUBLIC Supabase local-development demo secret. \
             Anyone can sign tokens for this server. Set one before exposing it."
        );
    }
    let signing_keys = config.auth.signing_keys_path.as_deref();
    let keys = JwtKeys::new(secret, config.jwt.keys.as_deref(), signing_keys).map_err(|e| e.to_string())?;
    match (signing_keys, keys.signing_key()) {
        (Some(path), (jsonwebtoken::Algorithm::HS256, _)) => tracing::warn!(
            "[auth] signing_keys_path {} holds no key: access tokens are signed with the HS256 secret",
            path.display()
        ),
        (Some(path), (algorithm, kid)) => tracing::info!(
            "access tokens are signed with {algorithm:?}{} from {} ([auth] signing_keys_path)",
            kid.map(|kid| format!(" key {kid}")).unwrap_or_default(),
            path.display()
        ),
        (None, _) => {}
    }
    Ok(keys)
}

/// The anon and service_role API keys for the HS256 secret in effect (HS256 even when
/// `[auth] signing_keys_path` signs access tokens).
/// The functions API's client for `madbase functions|secrets`: `--url=` and `--service-key=`
/// taken out of `args`, else the configured address and the service_role key of the
/// configured secret.
fn admin_client(config: &Config, args: Vec<String>) -> Result<(madbase::cli::Client, Vec<String>), String> {
    let mut url = format!("http://{}", config.listen());
    let mut key = None;
    let mut rest = Vec::new();
    for arg in args {
        if let Some(u) = arg.strip_prefix("--url=") {
            url = u.to_owned();
        } else if let Some(k) = arg.strip_prefix("--service-key=") {
            key = Some(k.to_owned());
        } else {
            rest.push(arg);
        }
    }
    let key = match key {
        Some(key) => key,
        None => api_keys(&load_keys(config)?).1,
    };
    Ok((madbase::cli::Client::new(&url, key)?, rest))
}

fn api_keys(keys: &JwtKeys) -> (String, String) {
    (keys.api_key("anon"), keys.api_key("service_role"))
}

/// Starts Realtime's replication core (one thread streaming the `supabase_realtime`
/// publications) when Realtime and its replication are on and the server runs with
/// `wal_level = logical`. It logs in as the managed cluster's superuser, or as `DATABASE_URL`'s
/// role (which then needs the REPLICATION attribute).
fn start_replication(
    config: &Config,
    database: &database::Database,
    realtime: &Arc<RealtimeShared>,
    injector: Option<madbase_shards::Injector<app::ShardMessage>>,
) -> Result<Option<ReplicationHandle>, String> {
    if !(config.realtime.enabled && config.realtime.replication) {
        return Ok(None);
    }
    if database.wal_level != "logical" {
        tracing::warn!(
            wal_level = %database.wal_level,
            "Realtime's Postgres changes need wal_level = logical: the replication core is not started"
        );
        return Ok(None);
    }
    let Some(injector) = injector else { return Err("the shards' injector was already taken".to_owned()) };
    let connect = database.managed_superuser.clone().unwrap_or_else(|| database.pool_config.clone());
    let mut replication = ReplicationConfig::new(connect);
    replication.slot = config.realtime.slot_name.clone();
    let handle = madbase_realtime::replication::start(replication, Box::new(app::ChangeSink::new(injector)))
        .map_err(|e| format!("cannot start the replication core: {e}"))?;
    realtime.set_replication(handle.stats.clone());
    Ok(Some(handle))
}

/// Edge Functions' engine and state, when `[edge_runtime] enabled`; its functions see
/// `SUPABASE_URL` and the project's keys in their environment, as on Supabase.
fn start_functions(
    config: &Config,
    keys: &JwtKeys,
    egress: Option<&Egress>,
) -> Result<Option<Arc<madbase_functions::Shared>>, String> {
    let (Some(egress), true) = (egress, config.edge_runtime.enabled) else {
        return Ok(None);
    };
    let (anon, service) = api_keys(keys);
    let base_env = vec![
        ("SUPABASE_URL".to_owned(), format!("http://{}", config.listen())),
        ("SUPABASE_ANON_KEY".to_owned(), anon),
        ("SUPABASE_SERVICE_ROLE_KEY".to_owned(), service),
    ];
    madbase_functions::Shared::new(
        config.edge_runtime.clone(),
        config.functions.clone(),
        config.shards.count,
        &config.data_dir,
        base_env,
        egress.clone(),
    )
    .map(Some)
    .map_err(|e| format!("functions: {e}"))
}

fn start(config: Config, project: Option<&Path>) -> Result<(), String> {
    let keys = Arc::new(load_keys(&config)?);
    let database = database::prepare(&config, project).map_err(|e| e.to_string())?;
    let config = Arc::new(config);
    // The egress runtime runs tokio-only clients (SMTP) off the shards; only when one is configured.
    let egress = (AuthShared::needs_egress(&config.auth)
        || madbase_storage::Shared::needs_egress(&config.storage)
        || config.edge_runtime.enabled)
        .then(|| Egress::start(config.egress.threads, config.egress.queue))
        .transpose()
        .map_err(|e| format!("cannot start the egress runtime: {e}"))?;
    let runtime_config = RuntimeConfig {
        shards: config.shards.count,
        listen: Some(config.listen()),
        max_connections_per_shard: config.shards.max_connections,
        ring_capacity: config.shards.ring_capacity,
        control_ring_capacity: config.shards.control_ring_capacity,
        blocking_threads: config.shards.blocking_threads,
        blocking_queue: config.shards.blocking_queue,
        blocking_nice: config.shards.blocking_nice,
        shutdown_grace: Duration::from_millis(config.shards.shutdown_grace_ms),
        force_legacy_driver: config.shards.force_legacy_driver,
        ..RuntimeConfig::default()
    };
    let shared = Arc::new(app::Shared {
        config: config.clone(),
        keys: keys.clone(),
        connect: database.pool_config.clone(),
        rest: Arc::new(config.rest_config()),
        schema: database.schema.clone(),
        auth: Arc::new(AuthShared::new(
            config.auth.clone(),
            keys.clone(),
            &format!("http://{}", config.listen()),
            project,
            egress.clone(),
        )?),
        realtime: RealtimeShared::new(config.realtime.clone()),
        storage: madbase_storage::Shared::new(
            config.storage.clone(),
            &config.data_dir.join("storage"),
            keys.clone(),
            egress.clone(),
        )
        .map_err(|e| format!("storage: {e}"))?,
        functions: start_functions(&config, &keys, egress.as_ref())?,
    });
    let realtime = shared.realtime.clone();
    let mut runtime = Runtime::start(runtime_config, move |shard| app::shard_main(shard, shared.clone()))
        .map_err(|e| format!("cannot start the shards: {e}"))?;
    let replication = start_replication(&config, &database, &realtime, runtime.take_injector())?;

    let addr = runtime.local_addr().unwrap_or(config.listen());
    let drivers: Vec<String> = runtime.drivers().iter().map(ToString::to_string).collect();
    let (anon, service) = api_keys(&keys);
    madbase::seed_objects::upload_all(addr, &service, &config.storage)?;
    println!("MadBase {} started", env!("CARGO_PKG_VERSION"));
    println!("         API URL: http://{addr}");
    if let Some(superuser) = &database.managed_superuser {
        // The password only on a terminal: under systemd stdout is the journal, kept and read
        // by more people than the data directory's 0600 file.
        if std::io::stdout().is_terminal() {
            println!("          DB URL: {}", superuser.to_url());
        } else {
            let mut without_password = superuser.clone();
            without_password.password = None;
            println!(
                "          DB URL: {} (password in {})",
                without_password.to_url(),
                config.data_dir.join(madbase_pg::Cluster::PASSWORD_FILE).display()
            );
        }
    } else {
        println!("          DB URL: (external, DATABASE_URL)");
    }
    println!("       wal_level: {}", database.wal_level);
    println!("          shards: {} ({})", drivers.len(), drivers.join(", "));
    println!("        anon key: {anon}");
    println!("service_role key: {service}");
    if config.auth.effective_jwt_secret().1 {
        println!("      JWT secret: {DEMO_JWT_SECRET} (the public demo secret — set MADBASE_AUTH_JWT_SECRET)");
    }

    let joined = runtime.join();
    if let Some(replication) = replication {
        replication.stop(); // the shards no longer take batches
        replication.join();
    }
    if let Some(egress) = &egress {
        egress.close(Egress::CLOSE_GRACE); // after the shards: no new job can arrive
    }
    database.stop(); // after the shards have drained
    joined.map_err(|e| format!("shards failed: {e}"))
}
