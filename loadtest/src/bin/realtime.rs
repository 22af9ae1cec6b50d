//! `realtime`: a WebSocket load generator for MadBase's `/realtime/v1` (the Phoenix channel
//! protocol realtime-js speaks), for connection counts goose cannot hold.
//!
//! ```text
//! cargo build --release --manifest-path loadtest/Cargo.toml --target-dir target/loadtest
//! target/loadtest/release/realtime --mode idle --url ws://127.0.0.1:54321 --connections 10000 \
//!     --duration 30 --server-pid <madbase pid>
//! target/loadtest/release/realtime --mode broadcast --connections 10000 --senders 2 --rate 20 --duration 30
//! target/loadtest/release/realtime --mode changes --connections 1000 --table bench_rt --duration 40 \
//!     --ready-file /tmp/ready        # then run the inserter once the file exists
//! ```
//!
//! Modes:
//! - `idle`: N sockets each join one channel and hold for `--duration` seconds (heartbeats every
//!   25 s); prints the server's RSS (`/proc/<--server-pid>/status` VmRSS) before connecting, with
//!   every socket held, at the end of the hold and after closing, and the RSS per connection.
//! - `broadcast`: N subscribers and S senders on one channel; the senders push broadcasts
//!   (realtime-js's binary kind 3 in vsn 2, text with `--broadcast-format text` or vsn 1) at
//!   `--rate` messages/s in total, each carrying its send time; the subscribers measure delivered
//!   messages/s and latency.
//! - `changes`: N subscribers, subscriber i with its own HS256 token (`role: authenticated`,
//!   `sub: 00000000-0000-4000-8000-<i as 12 hex digits>`), joined with a `postgres_changes` binding
//!   on `--table`; latency is the time from the row's `--ts-column` (written by the inserter with
//!   `clock_timestamp()`, same machine clock) to delivery. With `--owner-column`, changes of rows
//!   another user owns are counted (an RLS check).
//!
//! Sockets are bound to 127.0.0.1 … 127.0.0.k (`--source-addrs`, `IP_BIND_ADDRESS_NO_PORT`) so
//! more than one ephemeral port range's worth of connections fit; connects are paced
//! (`--connect-rate`) with at most `--in-flight` handshakes-and-joins outstanding. The summary is
//! `key: value` lines on stdout (the bench scripts read them); progress goes to stderr.
//! `REALTIME_TRACE_CHANGES=1` prints `trace: subscriber <i> change id <id>` to stderr for every
//! change received (to find which rows a subscriber missed; bounded by what the inserter writes).

#[path = "../realtime/conn.rs"]
mod conn;
#[path = "../realtime/proto.rs"]
mod proto;
#[path = "../realtime/stats.rs"]
mod stats;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conn::{BroadcastFormat, ConnConfig, Role, PHASE_CLOSE, PHASE_HOLD, PHASE_QUIET, PHASE_SEND};
use proto::{ChangeBinding, Vsn};
use stats::{now_us, Stats};
use tokio::sync::{watch, Semaphore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Idle,
    Broadcast,
    Changes,
}

struct Args {
    mode: Mode,
    url: String,
    apikey: String,
    connections: usize,
    vsn: Vsn,
    channel: String,
    duration: f64,
    server_pid: Option<u32>,
    source_addrs: usize,
    connect_rate: f64,
    in_flight: usize,
    connect_timeout: f64,
    join_timeout: f64,
    heartbeat: f64,
    threads: usize,
    senders: usize,
    rate: f64,
    payload_bytes: usize,
    broadcast_format: BroadcastFormat,
    drain: f64,
    schema: String,
    table: String,
    event: String,
    filter: Option<String>,
    ts_column: String,
    owner_column: Option<String>,
    jwt_secret: String,
    subscribe_wait: f64,
    settle: f64,
    ready_file: Option<String>,
    no_join: bool,
}

const USAGE: &str =
    "usage: realtime --mode idle|broadcast|changes [--url ws://127.0.0.1:54321] [--connections N] [--duration S]
  [--server-pid PID] [--vsn 2|1] [--channel NAME] [--apikey KEY] [--source-addrs K] [--connect-rate R/s]
  [--in-flight M] [--connect-timeout S] [--join-timeout S] [--heartbeat S] [--threads T] [--settle S]
  [--no-join] (idle: WebSockets with heartbeats only, no channel)
  broadcast: [--senders S] [--rate MSG/s in total] [--payload-bytes B] [--broadcast-format binary|text] [--drain S]
  changes:   [--schema public] [--table T] [--event INSERT] [--filter F] [--ts-column ts] [--owner-column C]
             [--jwt-secret SECRET] [--subscribe-wait S] [--ready-file PATH] [--drain S]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        mode: Mode::Idle,
        url: "ws://127.0.0.1:54321".into(),
        apikey: std::env::var("MADBASE_ANON_KEY").unwrap_or_else(|_| proto::DEMO_ANON_KEY.into()),
        connections: 1000,
        vsn: Vsn::V2,
        channel: "bench".into(),
        duration: 30.0,
        server_pid: None,
        source_addrs: 4,
        connect_rate: 2000.0,
        in_flight: 256,
        connect_timeout: 15.0,
        join_timeout: 60.0,
        heartbeat: 25.0,
        threads: 2,
        senders: 1,
        rate: 10.0,
        payload_bytes: 64,
        broadcast_format: BroadcastFormat::Binary,
        drain: 3.0,
        schema: "public".into(),
        table: "bench_rt".into(),
        event: "INSERT".into(),
        filter: None,
        ts_column: "ts".into(),
        owner_column: None,
        jwt_secret: std::env::var("MADBASE_JWT_SECRET").unwrap_or_else(|_| proto::DEMO_JWT_SECRET.into()),
        subscribe_wait: 10.0,
        settle: 2.0,
        ready_file: None,
        no_join: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{flag}: not a number: {v}"))
        }
        match flag.as_str() {
            "--mode" => {
                a.mode = match val()?.as_str() {
                    "idle" => Mode::Idle,
                    "broadcast" => Mode::Broadcast,
                    "changes" => Mode::Changes,
                    m => return Err(format!("unknown mode {m}\n{USAGE}")),
                }
            }
            "--url" => a.url = val()?,
            "--apikey" => a.apikey = val()?,
            "--connections" => a.connections = num(&flag, val()?)?,
            "--vsn" => {
                a.vsn = match val()?.as_str() {
                    "1" | "1.0.0" => Vsn::V1,
                    "2" | "2.0.0" => Vsn::V2,
                    v => return Err(format!("--vsn: 1.0.0 or 2.0.0, not {v}")),
                }
            }
            "--channel" => a.channel = val()?,
            "--duration" => a.duration = num(&flag, val()?)?,
            "--server-pid" => a.server_pid = Some(num(&flag, val()?)?),
            "--source-addrs" => a.source_addrs = num(&flag, val()?)?,
            "--connect-rate" => a.connect_rate = num(&flag, val()?)?,
            "--in-flight" => a.in_flight = num(&flag, val()?)?,
            "--connect-timeout" => a.connect_timeout = num(&flag, val()?)?,
            "--join-timeout" => a.join_timeout = num(&flag, val()?)?,
            "--heartbeat" => a.heartbeat = num(&flag, val()?)?,
            "--threads" => a.threads = num(&flag, val()?)?,
            "--senders" => a.senders = num(&flag, val()?)?,
            "--rate" => a.rate = num(&flag, val()?)?,
            "--payload-bytes" => a.payload_bytes = num(&flag, val()?)?,
            "--broadcast-format" => {
                a.broadcast_format = match val()?.as_str() {
                    "binary" => BroadcastFormat::Binary,
                    "text" => BroadcastFormat::Text,
                    v => return Err(format!("--broadcast-format: binary or text, not {v}")),
                }
            }
            "--drain" => a.drain = num(&flag, val()?)?,
            "--schema" => a.schema = val()?,
            "--table" => a.table = val()?,
            "--event" => a.event = val()?,
            "--filter" => a.filter = Some(val()?),
            "--ts-column" => a.ts_column = val()?,
            "--owner-column" => a.owner_column = Some(val()?),
            "--jwt-secret" => a.jwt_secret = val()?,
            "--subscribe-wait" => a.subscribe_wait = num(&flag, val()?)?,
            "--settle" => a.settle = num(&flag, val()?)?,
            "--ready-file" => a.ready_file = Some(val()?),
            "--no-join" => a.no_join = true,
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    if a.source_addrs > 254 {
        return Err("--source-addrs: at most 254 (127.0.0.1 … 127.0.0.254)".into());
    }
    if a.in_flight == 0 || a.connect_rate <= 0.0 || a.threads == 0 {
        return Err("--in-flight, --connect-rate and --threads must be positive".into());
    }
    if a.mode == Mode::Broadcast && (a.senders == 0 || a.rate <= 0.0) {
        return Err("broadcast needs --senders ≥ 1 and --rate > 0".into());
    }
    Ok(a)
}

/// Raises the soft open-file limit to the hard one; returns the limit in force.
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return r.rlim_max;
            }
        }
        r.rlim_cur
    }
}

/// VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user + system) of a process so far.
fn cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf is always safe to call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz.max(1.0))
}

/// (busy, total) jiffies of the whole machine (`/proc/stat`'s cpu line).
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn self_cpu_s() -> f64 {
    cpu_s(std::process::id()).unwrap_or(0.0)
}

fn ws_base(url: &str) -> Result<(String, SocketAddr), String> {
    let trimmed = url.trim_end_matches('/');
    let (scheme, rest) = trimmed.split_once("://").ok_or_else(|| format!("--url needs a scheme: {url}"))?;
    let ws_scheme = match scheme {
        "ws" | "http" => "ws",
        _ => return Err(format!("--url: ws:// or http:// (no TLS), not {scheme}://")),
    };
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("--url: {hostport}: {e}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("--url: {hostport} has no IPv4 address"))?;
    Ok((format!("{ws_scheme}://{rest}"), addr))
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// Waits until `done()` or `timeout`, printing progress every 5 s.
async fn wait_until(stats: &Stats, what: &str, timeout: Duration, done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    let mut last = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= timeout {
            eprintln!("realtime: {what}: gave up after {:.0} s", timeout.as_secs_f64());
            return false;
        }
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            progress(stats, what);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn progress(stats: &Stats, what: &str) {
    let c = &stats.c;
    eprintln!(
        "realtime: {what}: started {} open {} failed {} joins ok {} error {} frames in {} broadcasts in {} changes in {}",
        c.connect_started.load(Relaxed),
        c.open.load(Relaxed),
        c.connect_failed.load(Relaxed),
        c.joins_ok.load(Relaxed),
        c.joins_error.load(Relaxed),
        c.frames_in.load(Relaxed),
        c.broadcasts_in.load(Relaxed),
        c.changes_in.load(Relaxed),
    );
}

async fn sleep_with_progress(stats: &Stats, what: &str, secs: f64) {
    let end = Instant::now() + Duration::from_secs_f64(secs.max(0.0));
    while Instant::now() < end {
        let left = end - Instant::now();
        tokio::time::sleep(left.min(Duration::from_secs(5))).await;
        if Instant::now() < end {
            progress(stats, what);
        }
    }
}

struct Out(Vec<(String, String)>);

impl Out {
    fn put(&mut self, k: &str, v: impl ToString) {
        self.0.push((k.to_owned(), v.to_string()));
    }
}

async fn run(a: Args) -> Result<(), String> {
    let nofile = raise_nofile();
    let (base, server) = ws_base(&a.url)?;
    let senders = if a.mode == Mode::Broadcast { a.senders } else { 0 };
    let total = a.connections + senders;
    if total as u64 + 64 > nofile {
        eprintln!(
            "realtime: warning: {total} connections need more open files than RLIMIT_NOFILE allows this process ({nofile}); the rest will fail with EMFILE"
        );
    }
    let ws_url = format!("{base}/realtime/v1/websocket?apikey={}&vsn={}", a.apikey, a.vsn.as_str());
    let changes = (a.mode == Mode::Changes).then(|| ChangeBinding {
        event: a.event.clone(),
        schema: a.schema.clone(),
        table: a.table.clone(),
        filter: a.filter.clone(),
    });
    let send_interval =
        if senders > 0 { Duration::from_secs_f64(senders as f64 / a.rate) } else { Duration::from_secs(3600) };
    let cfg = Arc::new(ConnConfig {
        server,
        ws_url,
        vsn: a.vsn,
        topic: format!("realtime:{}", a.channel),
        apikey: a.apikey.clone(),
        source_addrs: a.source_addrs,
        heartbeat: Duration::from_secs_f64(a.heartbeat.max(0.1)),
        connect_timeout: Duration::from_secs_f64(a.connect_timeout),
        join: !a.no_join,
        changes,
        jwt_secret: a.jwt_secret.clone(),
        ts_key: format!("\"{}\":", a.ts_column).into_bytes(),
        owner_key: a.owner_column.as_ref().map(|c| format!("\"{c}\":").into_bytes()),
        send_interval,
        broadcast_format: a.broadcast_format,
        broadcast_event: "bench".into(),
        payload_pad: "x".repeat(a.payload_bytes.saturating_sub(40)),
        trace_changes: std::env::var_os("REALTIME_TRACE_CHANGES").is_some(),
    });
    let stats = Arc::new(Stats::new(a.connections));
    let (phase_tx, phase_rx) = watch::channel(PHASE_HOLD);
    let mut out = Out(Vec::new());
    let mode = match a.mode {
        Mode::Idle => "idle",
        Mode::Broadcast => "broadcast",
        Mode::Changes => "changes",
    };
    out.put("mode", mode);
    out.put("vsn", a.vsn.as_str());
    out.put("connections_target", a.connections);
    if senders > 0 {
        out.put("senders", senders);
    }

    let rss_before = a.server_pid.and_then(rss_kib);
    let self_rss_before = rss_kib(std::process::id());

    // Connect phase: paced spawns, at most `in_flight` handshakes and joins outstanding.
    let t_connect = Instant::now();
    let slots = Arc::new(Semaphore::new(a.in_flight));
    // Senders run on their own thread, so that reading 10,000 subscribers' frames never delays
    // their ticks (the send rate stays the one asked for while the generator is busy).
    let sender_rt = if senders > 0 {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("senders")
                .enable_all()
                .build()
                .map_err(|e| format!("senders' runtime: {e}"))?,
        )
    } else {
        None
    };
    let sender_handle = sender_rt.as_ref().map(|rt| rt.handle().clone());
    let spawner = {
        let (cfg, stats, phase_rx, slots) = (cfg.clone(), stats.clone(), phase_rx.clone(), slots.clone());
        let rate = a.connect_rate;
        let subscribers = a.connections;
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            // Senders first (so a slow connect phase never leaves the channel without them).
            for i in 0..total {
                let (index, role) =
                    if i < senders { (subscribers + i, Role::Sender) } else { (i - senders, Role::Subscriber) };
                pace.tick().await;
                let Ok(permit) = slots.clone().acquire_owned().await else { return };
                if *phase_rx.borrow() >= PHASE_CLOSE {
                    return;
                }
                let task = conn::run(index, role, cfg.clone(), stats.clone(), phase_rx.clone(), permit);
                match (&sender_handle, role) {
                    (Some(h), Role::Sender) => drop(h.spawn(task)),
                    _ => drop(tokio::spawn(task)),
                }
            }
        })
    };
    let connect_deadline = Duration::from_secs_f64(total as f64 / a.connect_rate + a.connect_timeout + 5.0);
    {
        let st = stats.clone();
        wait_until(&stats, "connecting", connect_deadline, move || {
            let c = &st.c;
            let started = c.connect_started.load(Relaxed);
            started as usize >= total
                && c.open.load(Relaxed) + c.connect_failed.load(Relaxed) + c.closed_by_server.load(Relaxed) >= started
        })
        .await;
    }
    {
        let st = stats.clone();
        let all = Arc::clone(&slots);
        let in_flight = a.in_flight;
        let join = !a.no_join;
        wait_until(&stats, "joining", Duration::from_secs_f64(a.join_timeout), move || {
            all.available_permits() == in_flight
                && (!join
                    || st.c.joins_ok.load(Relaxed)
                        + st.c.joins_error.load(Relaxed)
                        + st.c.closed_by_server.load(Relaxed)
                        >= st.c.open_peak.load(Relaxed))
        })
        .await;
    }
    let connect_s = t_connect.elapsed().as_secs_f64();
    if a.mode == Mode::Changes {
        let st = stats.clone();
        wait_until(
            &stats,
            "waiting for 'Subscribed to PostgreSQL'",
            Duration::from_secs_f64(a.subscribe_wait),
            move || st.c.system_ok.load(Relaxed) + st.c.system_error.load(Relaxed) >= st.c.joins_ok.load(Relaxed),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    let c = &stats.c;
    let held_after_connect = c.open.load(Relaxed);
    let rss_held = a.server_pid.and_then(rss_kib);
    let self_rss_held = rss_kib(std::process::id());
    progress(&stats, "connected");
    out.put("connect_seconds", format!("{connect_s:.1}"));
    out.put("connect_rate_per_s", format!("{:.0}", held_after_connect as f64 / connect_s.max(0.001)));
    out.put("connections_held", held_after_connect);
    out.put("connect_failed", c.connect_failed.load(Relaxed));
    out.put("joins_ok", c.joins_ok.load(Relaxed));
    out.put("joins_error", c.joins_error.load(Relaxed));
    let jl = stats.join_latency.merged();
    out.put("join_ms_p50", ms(jl.value_at_quantile(0.5)));
    out.put("join_ms_p99", ms(jl.value_at_quantile(0.99)));
    if a.mode == Mode::Changes {
        out.put("subscribed_to_postgres", c.system_ok.load(Relaxed));
    }
    if let Some(path) = &a.ready_file {
        std::fs::write(path, "ready\n").map_err(|e| format!("--ready-file {path}: {e}"))?;
    }

    // Measured phase.
    stats.reset_measured();
    let server_cpu0 = a.server_pid.and_then(cpu_s);
    let self_cpu0 = self_cpu_s();
    let machine0 = machine_jiffies();
    let t_measure = Instant::now();
    let joined_subscribers = c.joined.load(Relaxed).saturating_sub(senders as u64);
    match a.mode {
        Mode::Idle | Mode::Changes => sleep_with_progress(&stats, "holding", a.duration).await,
        Mode::Broadcast => {
            let _ = phase_tx.send(PHASE_SEND);
            sleep_with_progress(&stats, "sending", a.duration).await;
            let _ = phase_tx.send(PHASE_QUIET);
        }
    }
    let send_s = t_measure.elapsed().as_secs_f64();
    if a.mode != Mode::Idle {
        sleep_with_progress(&stats, "draining", a.drain).await;
    }
    // Read after the drain: a sender may finish one last push after the phase changes.
    let sent = c.broadcasts_sent.load(Relaxed);
    let measure_s = t_measure.elapsed().as_secs_f64();
    let server_cpu = server_cpu0.zip(a.server_pid.and_then(cpu_s)).map(|(a, b)| b - a);
    let self_cpu = self_cpu_s() - self_cpu0;
    let machine_busy = machine0
        .zip(machine_jiffies())
        .and_then(|((b0, t0), (b1, t1))| (t1 > t0).then(|| 100.0 * (b1 - b0) as f64 / (t1 - t0) as f64));
    let rss_end = a.server_pid.and_then(rss_kib);
    let held_end = c.open.load(Relaxed);
    out.put("connections_held_at_end", held_end);
    out.put("closed_by_server", c.closed_by_server.load(Relaxed));
    out.put("channels_closed_by_server", c.channel_closed.load(Relaxed));
    out.put("heartbeats_sent", c.heartbeats_sent.load(Relaxed));
    out.put("heartbeats_ok", c.heartbeats_ok.load(Relaxed));
    out.put("frames_received", c.frames_in.load(Relaxed));
    out.put("bytes_received", c.bytes_in.load(Relaxed));

    let delivered = match a.mode {
        Mode::Broadcast => c.broadcasts_in.load(Relaxed),
        Mode::Changes => c.changes_in.load(Relaxed),
        Mode::Idle => 0,
    };
    if a.mode != Mode::Idle {
        let first = stats.first_send_us.load(Relaxed).min(stats.first_recv_us.load(Relaxed));
        let last = stats.last_recv_us.load(Relaxed);
        let span_s = if last > first && first != i64::MAX { (last - first) as f64 / 1e6 } else { 0.0 };
        out.put("messages_received", delivered);
        out.put("delivery_span_seconds", format!("{span_s:.2}"));
        out.put("messages_per_s", format!("{:.0}", if span_s > 0.0 { delivered as f64 / span_s } else { 0.0 }));
        if a.mode == Mode::Broadcast {
            let expected = sent * joined_subscribers;
            out.put("subscribers_joined", joined_subscribers);
            out.put("broadcasts_sent", sent);
            out.put("broadcasts_sent_per_s", format!("{:.1}", sent as f64 / send_s.max(0.001)));
            out.put("deliveries_expected", expected);
            out.put(
                "delivered_fraction",
                format!("{:.4}", if expected > 0 { delivered as f64 / expected as f64 } else { 0.0 }),
            );
            out.put("send_errors", c.send_errors.load(Relaxed));
        } else {
            out.put("changes_of_other_owners", c.changes_foreign.load(Relaxed));
            out.put("system_errors", c.system_error.load(Relaxed));
        }
        if let Some((min, median, max, none)) = stats.per_conn_spread(a.connections) {
            out.put("per_subscriber_min_median_max", format!("{min}/{median}/{max}"));
            out.put("subscribers_with_none", none);
        }
        let h = stats.latency.merged();
        out.put("latency_ms_p50", ms(h.value_at_quantile(0.5)));
        out.put("latency_ms_p99", ms(h.value_at_quantile(0.99)));
        out.put("latency_ms_p999", ms(h.value_at_quantile(0.999)));
        out.put("latency_ms_max", ms(h.max()));
    }
    out.put("unparsed_frames", c.unparsed_in.load(Relaxed));
    out.put("measured_seconds", format!("{measure_s:.1}"));
    if let Some(cpu) = server_cpu {
        out.put("server_cpu_seconds", format!("{cpu:.2}"));
        if delivered > 0 {
            out.put("server_cpu_us_per_message", format!("{:.2}", cpu * 1e6 / delivered as f64));
        }
    }
    out.put("generator_cpu_seconds", format!("{self_cpu:.2}"));
    if let Some(busy) = machine_busy {
        out.put("machine_cpu_busy_percent", format!("{busy:.0}"));
    }

    // Close every socket, then the server's RSS once it has let them go.
    let _ = phase_tx.send(PHASE_CLOSE);
    spawner.abort();
    let st = stats.clone();
    wait_until(&stats, "closing", Duration::from_secs(30), move || st.c.open.load(Relaxed) == 0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_closed = a.server_pid.and_then(rss_kib);
    if let Some(rt) = sender_rt {
        rt.shutdown_background();
    }

    if let Some(pid) = a.server_pid {
        out.put("server_pid", pid);
    }
    let kib = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "n/a".into());
    out.put("server_rss_kib_before", kib(rss_before));
    out.put("server_rss_kib_held", kib(rss_held));
    out.put("server_rss_kib_end", kib(rss_end));
    out.put("server_rss_kib_after_close", kib(rss_closed));
    if let (Some(b), Some(h)) = (rss_before, rss_held) {
        if held_after_connect > 0 {
            let per = (h as f64 - b as f64) * 1024.0 / held_after_connect as f64;
            out.put("server_rss_bytes_per_connection", format!("{per:.0}"));
            out.put("server_rss_kib_per_connection", format!("{:.2}", per / 1024.0));
        }
    }
    // At the end of the hold: what the connection set up and has since freed is gone by then.
    if let (Some(b), Some(e)) = (rss_before, rss_end) {
        if held_end > 0 {
            out.put("server_rss_kib_per_connection_end", format!("{:.2}", (e as f64 - b as f64) / held_end as f64));
        }
    }
    if let (Some(b), Some(h)) = (self_rss_before, self_rss_held) {
        out.put("generator_rss_kib_held", h);
        if held_after_connect > 0 {
            out.put(
                "generator_rss_kib_per_connection",
                format!("{:.2}", (h as f64 - b as f64) / held_after_connect as f64),
            );
        }
    }
    let errors = stats.errors();
    out.put("error_kinds", errors.len());
    for (k, v) in out.0 {
        println!("{k}: {v}");
    }
    for (text, n) in errors {
        println!("error: {n} × {text}");
    }
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = now_us();
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("realtime: {e}");
        std::process::exit(1);
    }
    eprintln!("realtime: done in {:.1} s", (now_us() - started) as f64 / 1e6);
    // Sockets still closing are dropped with the runtime.
    rt.shutdown_timeout(Duration::from_secs(1));
}
