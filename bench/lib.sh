# Shared helpers for the side-by-side benchmarks (sourced, not run).
# Every benchmark builds MadBase once in release mode, starts what it compares, runs the same load
# generator against each in turn, and prints ratios. Output lands in bench/out/ (ignored by git).

set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
OUT="$BENCH_DIR/out"
mkdir -p "$OUT"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_tool() { # need_tool <command> <debian package>
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "== installing $2"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$2" >/dev/null
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# build_madbase: builds this checkout's release binary, or with MADBASE_BINARY=<path> uses that
# binary instead (another commit's build, for before/after pairs with this checkout's scripts).
build_madbase() {
  if [ -n "${MADBASE_BINARY:-}" ]; then
    MADBASE="$MADBASE_BINARY"
    echo "== using $MADBASE"
    return
  fi
  echo "== cargo build --release"
  (cd "$ROOT" && cargo build --release --locked -q -p madbase)
  MADBASE="$ROOT/target/release/madbase"
}

# start_madbase <data dir>: managed PostgreSQL; sets MB_PORT, MB_PID, MB_DB_URL, MB_DATA, PSQL_BIN. Optional:
# MB_LOG (default info, the product's default: the access log is on), MB_OUT (MadBase's output, default $OUT/madbase.out),
# PG_PORT (default a free port), MB_DATA_KEEP (reuse the data dir instead of starting afresh), MB_WRAP (a command
# MadBase runs under, e.g. valgrind; word-split).
start_madbase() {
  local data="$1"; MB_DATA="$data"
  # psql of the PostgreSQL install MadBase manages (set-up SQL, capture_sql); installed by now.
  PSQL_BIN=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | tail -1)
  MB_OUT=${MB_OUT:-$OUT/madbase.out}
  MB_PORT=$(free_port)
  local pg_port=${PG_PORT:-$(free_port)}
  if [ -z "${MB_DATA_KEEP:-}" ]; then rm -rf "$data"; fi
  mkdir -p "$data"; chmod 755 "$data"
  MADBASE_LISTEN="127.0.0.1:$MB_PORT" MADBASE_DATA_DIR="$data" MADBASE_PG_PORT="$pg_port" \
    MADBASE_LOG="${MB_LOG:-info}" ${MB_WRAP:-} "$MADBASE" start >"$MB_OUT" 2>&1 &
  MB_PID=$!
  for _ in $(seq 1 1500); do
    curl -fs "http://127.0.0.1:$MB_PORT/health" >/dev/null 2>&1 && break
    kill -0 "$MB_PID" 2>/dev/null || { cat "$MB_OUT"; exit 1; }
    sleep 0.2
  done
  MB_DB_URL=$("$ROOT/scripts/madbase-db-url.py" "$MB_OUT")
}

# create_bench_items: the 10,000-row table with RLS and a `to anon` policy that the one-row read
# benchmarks query (in the database start_madbase started).
create_bench_items() {
  "$PSQL_BIN" "$MB_DB_URL" -qAt -v ON_ERROR_STOP=1 <<'SQL'
create table public.bench_items (id bigint primary key, name text not null, price numeric not null, tags text[] not null);
insert into public.bench_items select i, 'item ' || i, i * 1.5, array['a', 'b'] from generate_series(1, 10000) i;
alter table public.bench_items enable row level security;
create policy "anon reads" on public.bench_items for select to anon using (id > 0);
analyze public.bench_items;
SQL
}

# get_by_pk_lua <file>: the wrk script of the one-row read: a random primary key, the anon key as
# apikey and bearer.
get_by_pk_lua() {
  local key; key=$(madbase_key anon)
  cat >"$1" <<LUA
wrk.headers["apikey"] = "$key"
wrk.headers["Authorization"] = "Bearer $key"
request = function()
  return wrk.format("GET", "/rest/v1/bench_items?select=*&id=eq." .. math.random(1, 10000))
end
LUA
}

stop_madbase() { [ -n "${MB_PID:-}" ] || return 0; kill -TERM "$MB_PID" 2>/dev/null || true; wait "$MB_PID" 2>/dev/null || true; }

# wrk_run <label> <url> [extra wrk args...]: prints and records req/s and p99 (ms) in $OUT/<label>.wrk;
# for a label starting with `madbase`, also the madbase process's CPU per request (µs, from
# `cpu_ticks` around the run; sets <label>_CPU_US).
wrk_run() {
  local label="$1" url="$2"; shift 2
  local mb0="" mb1 requests cpu_us
  [[ $label == madbase* ]] && read -r mb0 _ <<<"$(cpu_ticks)"
  wrk --latency -t "${WRK_THREADS:-2}" -c "${CONNS:-256}" -d "${DURATION:-15s}" "$@" "$url" >"$OUT/$label.wrk"
  if [ -n "$mb0" ]; then
    read -r mb1 _ <<<"$(cpu_ticks)"
    requests=$(awk '/requests in/ {print $1}' "$OUT/$label.wrk")
    cpu_us=$(per_op_us "$mb0" "$mb1" "$requests")
    echo "$label: madbase CPU per request ${cpu_us} µs ($requests requests)"
    eval "${label//[^a-zA-Z0-9_]/_}_CPU_US=$cpu_us"
  fi
  local rps p99
  rps=$(awk '/^Requests\/sec/ {print $2}' "$OUT/$label.wrk")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$OUT/$label.wrk")
  local non2xx; non2xx=$(awk '/Non-2xx/ {print $5}' "$OUT/$label.wrk")
  printf '%-28s %12s req/s   p99 %8s ms   %s\n' "$label" "$rps" "$p99" "${non2xx:+(non-2xx/3xx: $non2xx)}"
  eval "${label//[^a-zA-Z0-9_]/_}_RPS=$rps; ${label//[^a-zA-Z0-9_]/_}_P99=$p99"
}

# madbase_key anon|service_role: the key MadBase printed at start (from $MB_OUT).
madbase_key() { grep -o "$1 key: [^ ]*" "$MB_OUT" | awk '{print $3}'; }

# restart_with_max_connections <n>: pgbench at the HTTP concurrency needs one backend per client;
# max_connections needs a restart, so MadBase (which restarts its managed cluster) is restarted
# on the same data.
restart_with_max_connections() {
  "$PSQL_BIN" "$MB_DB_URL" -qAt -c "alter system set max_connections = $1" >/dev/null
  stop_madbase
  MB_DATA_KEEP=1 start_madbase "$MB_DATA"
}

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}')" "$1" "$2"; }

machine() { echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r)"; }

# capture_sql <pgbench file> <regex> <command...>: runs <command> (one request to MadBase started
# by start_madbase) with log_statement = all and writes, as a pgbench script, the batch MadBase sent
# for it: the statement matching <regex> and the one before it on the same backend (the request
# settings), in one pipeline with one Sync, every bound parameter written as the literal the log
# shows. CAPTURE_BEFORE=n takes the n statements before it on that backend (default 1: the request
# settings; a batch of several statements needs more). SUBST="N=:var ..." instead writes parameter $N of the matched statement as pgbench's :var
# (a bound parameter under -M prepared), for values too large for a literal to be the point.
capture_sql() {
  local file="$1" regex="$2"; shift 2
  local log="$MB_DATA/postgres.log" start
  start=$(stat -c %s "$log")
  "$PSQL_BIN" "$MB_DB_URL" -qAt -c "alter system set log_statement = 'all'" -c "select pg_reload_conf()" >/dev/null
  sleep 1
  "$@" >/dev/null
  "$PSQL_BIN" "$MB_DB_URL" -qAt -c "alter system reset log_statement" -c "select pg_reload_conf()" >/dev/null
  cat >"$OUT/capture_sql.py" <<'PY'
import re, sys
regex, subst = re.compile(sys.argv[1]), dict(s.split("=", 1) for s in sys.argv[2].split())
entries = []  # [pid, kind, text]; continuation lines (no timestamp) belong to the entry before
for line in sys.stdin.read().splitlines():
    m = re.match(r"^\d{4}-\d\d-\d\d \S+ \S+ \[(\d+)\] (\w+):\s+(.*)$", line)
    if m:
        entries.append([m.group(1), m.group(2), m.group(3)])
    elif entries:
        entries[-1][2] += "\n" + line
stmts = []  # (pid, sql, params)
for pid, kind, text in entries:
    m = re.match(r"(?:execute [^:]*|statement): (.*)$", text, re.S)
    if kind == "LOG" and m:
        stmts.append([pid, m.group(1), {}])
    elif kind == "DETAIL" and text.startswith("parameters: ") and stmts and stmts[-1][0] == pid:
        stmts[-1][2] = dict(re.findall(r"\$(\d+) = (NULL|'(?:[^']|'')*')", text))
hits = [i for i, s in enumerate(stmts) if regex.search(s[1])]
if not hits:
    sys.exit("capture_sql: no logged statement matches " + sys.argv[1])
i = hits[-1]
before = [j for j in range(i - 1, -1, -1) if stmts[j][0] == stmts[i][0]][:int(sys.argv[3])]
def inline(sql, params, subst):
    return re.sub(r"\$(\d+)\b", lambda m: subst.get(m.group(1)) or params[m.group(1)], sql)
print("\\startpipeline")
for j in reversed(before):
    print(inline(stmts[j][1], stmts[j][2], {}) + ";")
print(inline(stmts[i][1], stmts[i][2], subst) + ";")
print("\\endpipeline")
PY
  tail -c +"$((start + 1))" "$log" | python3 "$OUT/capture_sql.py" "$regex" "${SUBST:-}" "${CAPTURE_BEFORE:-1}" >"$file"
}

# pgb <label> <clients> <pgbench args...>: pgbench -M prepared against MadBase's PostgreSQL for
# DURATION; prints and records tps and average latency in $OUT/<label>.pgbench (<label>_TPS).
pgb() {
  local label="$1" clients="$2"; shift 2
  local secs=${DURATION:-15s}; secs=${secs%s}
  pgbench -n -M prepared -c "$clients" -j "$(nproc)" -T "$secs" "$@" "$MB_DB_URL" >"$OUT/$label.pgbench" 2>&1
  local tps lat
  tps=$(awk '/^tps/ {print $3; exit}' "$OUT/$label.pgbench")
  lat=$(awk '/latency average/ {print $4; exit}' "$OUT/$label.pgbench")
  [ -n "$tps" ] || { cat "$OUT/$label.pgbench"; exit 1; }
  printf '%-28s %12s tps     avg latency %s ms (clients %s)\n' "$label" "$tps" "$lat" "$clients"
  eval "${label}_TPS=$tps"
}

# cpu_ticks: CPU time (utime + stime, clock ticks) so far of the madbase process and, separately,
# of its managed PostgreSQL: the postmaster, its live children (backends, WAL writer, …) and its
# exited children (cutime + cstime: pgbench's backends after pgbench disconnects). Prints
# "<madbase ticks> <postgres ticks>".
cpu_ticks() {
  local pm
  pm=$(head -1 "$MB_DATA/pgdata/postmaster.pid")
  echo "$(awk '{print $14 + $15}' "/proc/$MB_PID/stat") $({
    awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat"
    for p in $(cat /proc/"$pm"/task/*/children); do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done
  } | awk '{s += $1} END {print s}')"
}

# per_op_us <ticks before> <ticks after> <operations>: CPU µs per operation.
per_op_us() { python3 -c "import os,sys; print(round((float(sys.argv[2]) - float(sys.argv[1])) * 1e6 / os.sysconf('SC_CLK_TCK') / float(sys.argv[3]), 1))" "$@"; }

# prepare_realtime: builds the Realtime load generator (sets RT) and MadBase (build_madbase), and
# lifts the Realtime limits a benchmark would otherwise hit (connections, joins/s).
prepare_realtime() {
  echo "== building the generator"
  (cd "$ROOT" && cargo build --release --locked -q --manifest-path loadtest/Cargo.toml --target-dir target/loadtest --bin realtime)
  RT="$ROOT/target/loadtest/release/realtime"
  build_madbase
  export MADBASE_REALTIME_MAX_CONCURRENT_USERS=1000000
  export MADBASE_REALTIME_MAX_JOINS_PER_SECOND=1000
  export MADBASE_SHARDS_MAX_CONNECTIONS=1000000
}
