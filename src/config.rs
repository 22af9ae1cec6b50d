//! Configuration: MadBase's settings tree, assembled from the sections each crate owns, and where
//! the values come from.
//!
//! The tree is the Supabase CLI's `supabase/config.toml` for what MadBase serves (`[api]` from
//! the Data API crate, `[db]` here, `[auth]` and its sub-tables from the Auth crate — including
//! `jwt_secret` and `signing_keys_path`, which build the process's `JwtKeys`) plus MadBase's own
//! tables (`[shards]`, `[http]`, `[pg]`, `[jwt]` from the platform, `[rest]` from the Data API,
//! `[log]` here). A key is declared once, in its section (see `madbase_core::settings`).
//!
//! Sources, later ones win: built-in defaults; `supabase/config.toml` when MadBase starts in a
//! Supabase project directory (keys MadBase does not serve are reported once and ignored, and
//! `env(NAME)` values are read from the environment as the Supabase CLI reads them, and relative
//! paths the CLI resolves against the `supabase/` directory — `[auth] signing_keys_path` — are
//! resolved against it here); MadBase's
//! own TOML file (`--config`, else `MADBASE_CONFIG`), where an unknown key is an error naming the
//! nearest known key; then the environment, `MADBASE_<TABLE>_<KEY>` or a documented older alias.
//! Relative paths from those last two stay relative to the working directory.
//!
//! Invariants: a [`Config`] returned by [`load`] has passed [`Config::validate`] — every limit
//! is non-zero and every name parses — so the rest of the program never re-checks it.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};

use madbase_auth::settings::Auth;
use madbase_core::platform::{Egress, Http, Jwt, Pg, Platform, Shards};
use madbase_core::section;
use madbase_core::settings::{self, Section, SettingsError, Strictness};
use madbase_functions::{EdgeRuntime, Functions};
use madbase_realtime::Realtime;
use madbase_rest::settings::{Api, Rest};
use madbase_storage::Storage;
use toml::{Table, Value};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

section! {
    /// `[db]`: Supabase's database table.
    pub struct Db {
        /// Port of the managed PostgreSQL cluster (loopback only), as Supabase's local stack.
        #[alias("MADBASE_PG_PORT")]
        pub port: u16 = 54322,
        /// The PostgreSQL major version the project was written for; MadBase says so at start when the server it runs differs.
        pub major_version: u32 = 15,
        /// Seeding a fresh database.
        pub seed: Seed = Seed::default(),
        /// The project's migrations.
        pub migrations: Migrations = Migrations::default(),
    }
}

section! {
    /// `[db.seed]`.
    pub struct Seed {
        /// Run the seed files once, on a freshly created database.
        pub enabled: bool = true,
        /// Seed files, relative to the `supabase/` directory, in order; globs as the Supabase CLI takes them (`*`, `?`).
        pub sql_paths: Vec<String> = vec!["./seed.sql".to_owned()],
    }
}

section! {
    /// `[db.migrations]`.
    pub struct Migrations {
        /// Apply `supabase/migrations/*.sql` in order at start.
        pub enabled: bool = true,
    }
}

section! {
    /// `[log]`: MadBase's logging.
    pub struct Log {
        /// Log filter in `tracing` syntax (e.g. `info`, `madbase=debug`).
        #[alias("MADBASE_LOG")]
        pub level: String = "info".to_owned(),
        /// `text` or `json`.
        pub format: String = "text".to_owned(),
    }
}

section! {
    /// Every setting of MadBase.
    pub struct Config {
        /// Where the managed cluster and MadBase's own state live.
        pub data_dir: PathBuf = PathBuf::from(".madbase"),
        /// The Data API (Supabase's `[api]`).
        pub api: Api = Api::default(),
        /// The database (Supabase's `[db]`).
        pub db: Db = Db::default(),
        /// Auth (Supabase's `[auth]`), and the keys tokens are signed with.
        pub auth: Auth = Auth::default(),
        /// Realtime (Supabase's `[realtime]`, with Supabase Realtime's tenant limits).
        pub realtime: Realtime = Realtime::default(),
        /// Storage (Supabase's `[storage]`).
        pub storage: Storage = Storage::default(),
        /// Edge Functions' runtime (Supabase's `[edge_runtime]`, with the sandbox's limits).
        pub edge_runtime: EdgeRuntime = EdgeRuntime::default(),
        /// Each function's deploy settings (Supabase's `[functions.<name>]`); in the environment a JSON object of them.
        pub functions: Functions = Functions::default(),
        /// PostgREST settings Supabase's `[api]` lacks.
        pub rest: Rest = Rest::default(),
        /// The thread-per-core runtime.
        pub shards: Shards = Shards::default(),
        /// The HTTP server.
        pub http: Http = Http::default(),
        /// Connections to PostgreSQL.
        pub pg: Pg = Pg::default(),
        /// Token verification.
        pub jwt: Jwt = Jwt::default(),
        /// The egress runtime (tokio threads for SMTP).
        pub egress: Egress = Egress::default(),
        /// Logging.
        pub log: Log = Log::default(),
    }
}

/// A loaded configuration and what loading it noticed.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// The Supabase project directory (`supabase/`) whose `config.toml` was read, if any.
    pub project: Option<PathBuf>,
    /// Things to tell the operator once logging is up: keys of `supabase/config.toml` MadBase
    /// does not serve, likely misspelt `MADBASE_` variables.
    pub notices: Vec<String>,
}

/// The Supabase project directory MadBase picks up in `dir`, if there is one.
pub fn project_in(dir: &Path) -> Option<PathBuf> {
    let project = dir.join("supabase");
    project.join("config.toml").is_file().then_some(project)
}

/// Defaults, `supabase/config.toml` of the working directory (if any), the TOML file (the
/// explicit path, else `MADBASE_CONFIG`), then the environment.
pub fn load(file: Option<PathBuf>) -> Result<Loaded, ConfigError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    load_from(file, &cwd, &|name| std::env::var(name).ok(), &std::env::vars().map(|(k, _)| k).collect())
}

/// [`load`] with the directory and the environment given (for tests): `env` reads one
/// variable, `env_names` lists the names set.
pub fn load_from(
    file: Option<PathBuf>,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    env_names: &BTreeSet<String>,
) -> Result<Loaded, ConfigError> {
    let mut table = Table::new();
    let mut notices = Vec::new();
    let project = project_in(dir);
    if let Some(project) = &project {
        let path = project.join("config.toml");
        let mut supabase = settings::read_file(&path)?;
        resolve_env_functions(&mut supabase, env, &mut notices);
        resolve_project_paths(&mut supabase, project);
        let ignored =
            settings::check_keys(&mut supabase, Config::KEYS, &path.display().to_string(), Strictness::Lenient)?;
        if !ignored.is_empty() {
            notices.push(format!(
                "{}: MadBase does not serve these keys yet, ignored: {}",
                path.display(),
                ignored.join(", ")
            ));
        }
        settings::merge(&mut table, supabase);
    }
    if let Some(path) = file.or_else(|| env("MADBASE_CONFIG").map(PathBuf::from)) {
        let mut own = settings::read_file(&path)?;
        settings::check_keys(&mut own, Config::KEYS, &path.display().to_string(), Strictness::Strict)?;
        settings::merge(&mut table, own);
    }
    let read = settings::apply_env(&mut table, Config::KEYS, env)?;
    notices.extend(misspelt_variables(env_names, &read));
    let config: Config = settings::parse(table, "configuration")?;
    config.validate().map_err(ConfigError::Invalid)?;
    Ok(Loaded { config, project, notices })
}

/// The Supabase CLI's `env(NAME)` values: replaced by the variable's value, or left out (the
/// key keeps its default) with a notice when the variable is not set.
fn resolve_env_functions(table: &mut Table, env: &dyn Fn(&str) -> Option<String>, notices: &mut Vec<String>) {
    let mut unset = Vec::new();
    for (key, value) in table.iter_mut() {
        match value {
            Value::Table(nested) => resolve_env_functions(nested, env, notices),
            Value::String(text) => {
                let Some(name) = text.trim().strip_prefix("env(").and_then(|t| t.strip_suffix(')')) else { continue };
                match env(name.trim()) {
                    Some(set) => *text = set,
                    None => {
                        notices.push(format!("{key} = env({name}): {name} is not set; the default applies"));
                        unset.push(key.clone());
                    }
                }
            }
            _ => {}
        }
    }
    for key in unset {
        table.remove(&key);
    }
}

/// Keys of `supabase/config.toml` holding a path the Supabase CLI resolves against the
/// `supabase/` directory when it is relative (`pkg/config/config.go`, `resolve`); `*` stands for
/// every table at that level (each declared bucket).
const PROJECT_RELATIVE_PATHS: &[&str] = &["auth.signing_keys_path", "storage.buckets.*.objects_path"];

/// Makes the [`PROJECT_RELATIVE_PATHS`] of a project's `config.toml` relative to its `supabase/`
/// directory, as the CLI does (`signing_keys_path = "./signing_keys.json"` is
/// `supabase/signing_keys.json`). Absolute and empty paths stay as they are.
fn resolve_project_paths(table: &mut Table, project: &Path) {
    for path in PROJECT_RELATIVE_PATHS {
        let parts: Vec<&str> = path.split('.').collect();
        resolve_project_path(table, &parts, project);
    }
}

fn resolve_project_path(table: &mut Table, parts: &[&str], project: &Path) {
    match parts {
        [] => {}
        [key] => {
            let Some(Value::String(text)) = table.get_mut(*key) else { return };
            if !text.is_empty() && Path::new(text.as_str()).is_relative() {
                // `filepath.Join` drops the `./`; so does this.
                let relative: PathBuf =
                    Path::new(text.as_str()).components().filter(|c| !matches!(c, Component::CurDir)).collect();
                *text = project.join(relative).display().to_string();
            }
        }
        ["*", rest @ ..] => {
            for (_, value) in table.iter_mut() {
                if let Some(inner) = value.as_table_mut() {
                    resolve_project_path(inner, rest, project);
                }
            }
        }
        [name, rest @ ..] => {
            if let Some(inner) = table.get_mut(*name).and_then(Value::as_table_mut) {
                resolve_project_path(inner, rest, project);
            }
        }
    }
}

/// `MADBASE_` variables no key reads that look like one that does (a typo would otherwise be
/// silently ignored). Variables of other tools that share the prefix stay quiet.
fn misspelt_variables(env_names: &BTreeSet<String>, read: &BTreeSet<String>) -> Vec<String> {
    let known: Vec<(String, String)> = settings::key_paths(Config::KEYS)
        .into_iter()
        .flat_map(|(path, key)| {
            let canonical = settings::env_name(&path);
            std::iter::once((canonical.clone(), path.clone()))
                .chain(key.aliases.iter().map(move |alias| (alias.to_string(), path.clone())))
        })
        .collect();
    env_names
        .iter()
        .filter(|name| name.starts_with("MADBASE_") && *name != "MADBASE_CONFIG" && !read.contains(*name))
        .filter(|name| !known.iter().any(|(known, _)| known == *name))
        .filter_map(|name| {
            let key = name["MADBASE_".len()..].to_ascii_lowercase();
            settings::nearest_key(&key, Config::KEYS)
                .map(|path| format!("{name} is not a MadBase setting; did you mean {}?", settings::env_name(&path)))
        })
        .collect()
}

impl Config {
    /// Rejects settings the program cannot run with, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        Platform { shards: &self.shards, http: &self.http, pg: &self.pg, jwt: &self.jwt, egress: &self.egress }
            .validate()?;
        self.auth.validate()?;
        self.realtime.validate()?;
        self.storage.validate()?;
        self.edge_runtime.validate()?;
        self.rest_config().validate()?;
        if self.db.port == 0 || self.api.port == 0 {
            return Err("api.port and db.port must be greater than 0".to_owned());
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(format!("log.format must be \"text\" or \"json\", not {:?}", self.log.format));
        }
        Ok(())
    }

    /// The address every shard listens on: `[http] listen`, else `127.0.0.1:<[api] port>`.
    pub fn listen(&self) -> SocketAddr {
        self.http.listen.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, self.api.port)))
    }

    /// The Data API's part.
    pub fn rest_config(&self) -> madbase_rest::settings::Config {
        madbase_rest::settings::Config {
            api: self.api.clone(),
            rest: self.rest.clone(),
            max_body_bytes: self.http.max_body_bytes,
        }
    }

    /// Every key as a Markdown table (`madbase settings`): the key, its environment variable
    /// and older aliases, its default, and what it means. README's configuration section is
    /// this table. A default that depends on the machine says so in its doc ("Default: …").
    pub fn reference() -> String {
        let defaults = Value::try_from(Config::default()).expect("the defaults serialise");
        let mut out = String::from("| key | environment | default | meaning |\n|---|---|---|---|\n");
        for (path, key) in settings::key_paths(Config::KEYS) {
            if !matches!(key.kind, settings::Kind::Value(_)) {
                continue;
            }
            let mut names = format!("`{}`", settings::env_name(&path));
            for alias in key.aliases {
                names.push_str(&format!(", `{alias}`"));
            }
            let doc = key.doc.trim().replace('\n', " ").replace('|', "\\|");
            let default = match path.split('.').try_fold(&defaults, |value, part| value.get(part)) {
                _ if doc.contains("Default:") => String::new(),
                Some(value) => format!("`{value}`"),
                None => "unset".to_owned(),
            };
            out.push_str(&format!("| `{path}` | {names} | {default} | {doc} |\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load_in(dir: &Path, file: Option<PathBuf>, vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let names = map.keys().cloned().collect();
        load_from(file, dir, &|k| map.get(k).cloned(), &names)
    }

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let empty = tempfile::tempdir().unwrap();
        load_in(empty.path(), None, vars).map(|loaded| loaded.config)
    }

    #[test]
    fn defaults_are_valid() {
        let c = load(&[]).expect("defaults validate");
        assert_eq!(c.listen().to_string(), "127.0.0.1:54321");
        assert_eq!((c.db.port, c.pg.pool_size, c.api.max_rows.0), (54322, 4, Some(1000)));
        assert!(c.shards.count >= 1);
    }

    #[test]
    fn new_names_and_older_aliases() {
        let c = load(&[("MADBASE_LISTEN", "0.0.0.0:8000"), ("MADBASE_SHARDS", "3"), ("MADBASE_DB_MAX_ROWS", "50")])
            .unwrap();
        assert_eq!((c.listen().port(), c.shards.count, c.api.max_rows.0), (8000, 3, Some(50)));
        let c =
            load(&[("MADBASE_API_PORT", "8001"), ("MADBASE_SHARDS_COUNT", "2"), ("MADBASE_API_MAX_ROWS", "unlimited")])
                .unwrap();
        assert_eq!((c.listen().port(), c.shards.count, c.api.max_rows.0), (8001, 2, None));
        let c = load(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("MADBASE_PG_PORT", "6000"),
            ("MADBASE_JWT_SECRET", &"x".repeat(32)),
        ])
        .unwrap();
        assert_eq!((c.pg.url.as_deref(), c.db.port), (Some("postgres://u@h/db"), 6000));
        assert_eq!(c.auth.jwt_secret.as_deref(), Some("x".repeat(32).as_str()));
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = load(&[("MADBASE_SHARDS", "many")]).unwrap_err().to_string();
        assert!(err.contains("MADBASE_SHARDS"), "{err}");
        let err = load(&[("MADBASE_HTTP_MAX_HEADERS", "0")]).unwrap_err().to_string();
        assert!(err.contains("http.max_headers"), "{err}");
        let err = load(&[("MADBASE_JWT_SECRET", "short")]).unwrap_err().to_string();
        assert!(err.contains("32"), "{err}");
        let err = load(&[("MADBASE_AUTH_JWT_EXPIRY", "0")]).unwrap_err().to_string();
        assert!(err.contains("auth.jwt_expiry"), "{err}");
        let err = load(&[("MADBASE_AUTH_EMAIL_MAX_FREQUENCY", "soon")]).unwrap_err().to_string();
        assert!(err.contains("auth.email.max_frequency"), "{err}");
        let err = load(&[("MADBASE_LOG_FORMAT", "xml")]).unwrap_err().to_string();
        assert!(err.contains("log.format"), "{err}");
        for bad in [("MADBASE_DB_SCHEMAS", " , "), ("MADBASE_DB_MAX_ROWS", "0"), ("MADBASE_DB_PRE_REQUEST", "a.b.c")] {
            assert!(load(&[bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn madbase_file_is_strict_and_suggests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("madbase.toml");
        std::fs::write(&path, "[shards]\ncount = 2\n[pg]\npool_size = 7\n").unwrap();
        let c = load_in(dir.path(), Some(path.clone()), &[("MADBASE_SHARDS_COUNT", "5")]).unwrap().config;
        assert_eq!((c.shards.count, c.pg.pool_size), (5, 7));
        std::fs::write(&path, "pg_pool_size = 1\n").unwrap();
        let err = load_in(dir.path(), Some(path.clone()), &[]).unwrap_err().to_string();
        assert!(err.ends_with("unknown key \"pg_pool_size\" (did you mean \"pg.pool_size\"?)"), "{err}");
        std::fs::write(&path, "[api]\nmax_row = 1\n").unwrap();
        let err = load_in(dir.path(), Some(path), &[]).unwrap_err().to_string();
        assert!(err.contains("did you mean \"api.max_rows\""), "{err}");
    }

    #[test]
    fn a_supabase_project_is_read_leniently() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("supabase")).unwrap();
        std::fs::write(
            dir.path().join("supabase/config.toml"),
            "project_id = \"demo\"\n[api]\nenabled = true\nport = 55321\nschemas = [\"public\", \"graphql_public\"]\n\
             extra_search_path = [\"public\", \"extensions\"]\nmax_rows = 500\n[api.tls]\nenabled = false\n\
             [db]\nport = 55322\nmajor_version = 15\n[db.seed]\nenabled = true\nsql_paths = [\"./seed.sql\"]\n\
             [studio]\nport = 54323\n[auth]\nsite_url = \"http://127.0.0.1:3000\"\njwt_secret = \"env(TEST_SECRET)\"\n",
        )
        .unwrap();
        let secret = "s".repeat(40);
        let loaded = load_in(dir.path(), None, &[("TEST_SECRET", &secret), ("MADBASE_API_MAX_ROWS", "9")]).unwrap();
        let c = &loaded.config;
        assert_eq!(loaded.project.as_deref(), Some(dir.path().join("supabase").as_path()));
        assert_eq!((c.listen().port(), c.db.port, c.api.max_rows.0), (55321, 55322, Some(9)));
        assert_eq!(c.api.schemas, ["public", "graphql_public"]);
        assert_eq!(c.auth.jwt_secret.as_deref(), Some(secret.as_str()));
        assert_eq!(c.auth.site_url, "http://127.0.0.1:3000");
        assert_eq!(loaded.notices.len(), 1, "{:?}", loaded.notices);
        assert!(loaded.notices[0].ends_with("ignored: api.tls, project_id, studio"), "{:?}", loaded.notices);
    }

    #[test]
    fn every_auth_key_has_its_environment_name() {
        let empty = tempfile::tempdir().unwrap();
        let vars = [
            ("MADBASE_AUTH_ENABLE_ANONYMOUS_SIGN_INS", "true"),
            ("MADBASE_AUTH_EMAIL_ENABLE_CONFIRMATIONS", "1"),
            ("MADBASE_AUTH_RATE_LIMIT_SIGN_IN_SIGN_UPS", "77"),
            ("MADBASE_AUTH_EMAIL_SMTP_HOST", "smtp.example.com"),
            ("MADBASE_AUTH_SMS_TEST_OTP", "1234567890:123456"),
            ("MADBASE_AUTH_ADDITIONAL_REDIRECT_URLS", "a,b"),
        ];
        let loaded = load_in(empty.path(), None, &vars).unwrap();
        assert!(loaded.notices.is_empty(), "{:?}", loaded.notices);
        let auth = &loaded.config.auth;
        assert!(auth.enable_anonymous_sign_ins && auth.email.enable_confirmations);
        assert_eq!(auth.rate_limit.sign_in_sign_ups, 77);
        assert_eq!(auth.email.smtp.host.as_deref(), Some("smtp.example.com"));
        assert_eq!(auth.sms.test_otp.get("1234567890").map(String::as_str), Some("123456"));
        assert_eq!(auth.sms.test_otp.len(), 1);
        assert_eq!(auth.additional_redirect_urls, ["a", "b"]);
        // Each of them is a row of `madbase settings`.
        let reference = Config::reference();
        for (name, _) in vars {
            assert!(reference.contains(&format!("`{name}`")), "{name}");
        }
    }

    /// The auth-js suite's `[auth]` block (tests/fixtures/auth-js-config.toml).
    const AUTH_JS_CONFIG: &str = include_str!("../tests/fixtures/auth-js-config.toml");

    #[test]
    fn a_supabase_auth_block_is_read_as_the_suite_runs_it() {
        let dir = tempfile::tempdir().unwrap();
        let supabase = dir.path().join("supabase");
        std::fs::create_dir(&supabase).unwrap();
        std::fs::write(supabase.join("config.toml"), AUTH_JS_CONFIG).unwrap();
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing_keys.json"),
            supabase.join("signing_keys.json"),
        )
        .unwrap();
        let loaded = load_in(dir.path(), None, &[]).unwrap();
        let auth = &loaded.config.auth;
        assert_eq!(auth.site_url, "http://127.0.0.1:3000");
        assert_eq!(auth.additional_redirect_urls, ["https://127.0.0.1:3000", "http://localhost:5173"]);
        assert_eq!(auth.jwt_secret.as_deref(), Some(madbase_core::platform::DEMO_JWT_SECRET));
        assert!(auth.enable_anonymous_sign_ins && auth.enable_signup && !auth.email.enable_confirmations);
        assert_eq!((auth.rate_limit.email_sent, auth.rate_limit.token_refresh), (100, 300));
        assert_eq!(auth.sms.test_otp.get("1234567890").map(String::as_str), Some("123456"));
        assert_eq!((auth.sms.max_frequency.as_str(), auth.mfa.phone.max_frequency.as_str()), ("1s", "1s"));
        assert!(auth.mfa.web_authn.enroll_enabled && auth.mfa.phone.verify_enabled);
        // `./signing_keys.json` is the `supabase/` directory's, as the CLI reads it.
        assert_eq!(auth.signing_keys_path.as_deref(), Some(supabase.join("signing_keys.json").as_path()));
        // What MadBase does not serve is listed once, together; unset `env(…)` values are noticed.
        let ignored = loaded.notices.iter().find(|n| n.contains("ignored:")).unwrap();
        assert!(
            ignored.ends_with(
                "ignored: auth.sms.twilio, auth.external, auth.oauth_server, auth.passkey, auth.third_party, \
                 auth.web3, auth.webauthn"
            ),
            "{ignored}"
        );
        assert!(loaded.notices.iter().any(|n| n.contains("SUPABASE_AUTH_SMS_TWILIO_AUTH_TOKEN is not set")));
        // The keys it names sign and verify.
        let keys = madbase_core::jwt::JwtKeys::new(
            auth.effective_jwt_secret().0,
            loaded.config.jwt.keys.as_deref(),
            auth.signing_keys_path.as_deref(),
        )
        .unwrap();
        let token = keys.sign(&serde_json::json!({"role": "authenticated"})).unwrap();
        let claims = keys.verify(&token, madbase_core::jwt::unix_now()).unwrap();
        assert_eq!(claims.role(), Some("authenticated"));

        // As MadBase's own file (strict), the same block stops at the first key MadBase lacks.
        let own = dir.path().join("madbase.toml");
        std::fs::write(&own, AUTH_JS_CONFIG).unwrap();
        let empty = tempfile::tempdir().unwrap();
        let err = load_in(empty.path(), Some(own.clone()), &[]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Settings(SettingsError::UnknownKey { key, .. }) if key.starts_with("auth.")),
            "{err}"
        );
        // Without the tables MadBase does not serve, it is a valid MadBase file.
        let mut table: Table = AUTH_JS_CONFIG.parse().unwrap();
        let auth_table = table.get_mut("auth").and_then(Value::as_table_mut).unwrap();
        for unserved in ["external", "oauth_server", "passkey", "third_party", "web3", "webauthn"] {
            auth_table.remove(unserved);
        }
        auth_table["sms"].as_table_mut().unwrap().remove("twilio");
        // A path in MadBase's own file stays relative to the working directory.
        auth_table.insert("signing_keys_path".to_owned(), Value::String("keys/signing_keys.json".to_owned()));
        std::fs::write(&own, toml::to_string(&table).unwrap()).unwrap();
        let c = load_in(empty.path(), Some(own), &[]).unwrap().config;
        assert!(c.auth.enable_anonymous_sign_ins);
        assert_eq!(c.auth.signing_keys_path.as_deref(), Some(Path::new("keys/signing_keys.json")));
    }

    #[test]
    fn signing_keys_path_of_a_project_is_the_supabase_directorys() {
        let dir = tempfile::tempdir().unwrap();
        let supabase = dir.path().join("supabase");
        std::fs::create_dir(&supabase).unwrap();
        let config = |path: &str| {
            std::fs::write(supabase.join("config.toml"), format!("[auth]\nsigning_keys_path = {path:?}\n")).unwrap();
            load_in(dir.path(), None, &[]).unwrap().config.auth.signing_keys_path
        };
        assert_eq!(config("./keys.json"), Some(supabase.join("keys.json")));
        assert_eq!(config("keys/a.json"), Some(supabase.join("keys/a.json")));
        assert_eq!(config("/etc/madbase/keys.json"), Some(PathBuf::from("/etc/madbase/keys.json")));
        // The environment overrides the file and stays relative to the working directory.
        let c = load_in(dir.path(), None, &[("MADBASE_AUTH_SIGNING_KEYS_PATH", "here.json")]).unwrap().config;
        assert_eq!(c.auth.signing_keys_path, Some(PathBuf::from("here.json")));
    }

    #[test]
    fn objects_paths_of_a_project_are_the_supabase_directorys() {
        let dir = tempfile::tempdir().unwrap();
        let supabase = dir.path().join("supabase");
        std::fs::create_dir(&supabase).unwrap();
        std::fs::write(
            supabase.join("config.toml"),
            "[storage.buckets.images]\nobjects_path = \"./images\"\n\
             [storage.buckets.docs]\nobjects_path = \"/srv/docs\"\n[storage.buckets.empty]\npublic = true\n",
        )
        .unwrap();
        let buckets = load_in(dir.path(), None, &[]).unwrap().config.storage.buckets.0;
        let path = |id: &str| buckets[id].objects_path.clone();
        assert_eq!(path("images"), Some(supabase.join("images").display().to_string()));
        assert_eq!(path("docs").as_deref(), Some("/srv/docs"));
        assert_eq!(path("empty"), None);
    }

    #[test]
    fn misspelt_variables_are_noticed() {
        let empty = tempfile::tempdir().unwrap();
        let loaded = load_in(empty.path(), None, &[("MADBASE_PG_POOL_SIZ", "3"), ("MADBASE_BIN", "/x")]).unwrap();
        assert_eq!(
            loaded.notices,
            ["MADBASE_PG_POOL_SIZ is not a MadBase setting; did you mean MADBASE_PG_POOL_SIZE?"]
        );
    }

    #[test]
    fn the_example_file_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/madbase.example.toml"));
        let c = load_in(dir.path(), Some(path), &[]).unwrap().config;
        assert_eq!(c.api.extra_search_path, ["public", "extensions"]);
    }

    #[test]
    fn readme_lists_every_key() {
        let readme = include_str!("../README.md");
        for line in Config::reference().lines().skip(2) {
            assert!(readme.contains(line), "README.md lacks the row\n{line}\n(paste `madbase settings`)");
        }
    }
}
