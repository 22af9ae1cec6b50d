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

build_madbase() {
  echo "== cargo build --release"
  (cd "$ROOT" && cargo build --release --locked -q -p madbase)
  MADBASE="$ROOT/target/release/madbase"
}

# start_madbase <data dir>: managed PostgreSQL; sets MB_PORT, MB_PID, MB_DB_URL. Optional:
# MB_LOG (default warn: no access log), MB_OUT (MadBase's output, default $OUT/madbase.out),
# PG_PORT (default a free port), MB_DATA_KEEP (reuse the data dir instead of starting afresh).
start_madbase() {
  local data="$1"
  MB_OUT=${MB_OUT:-$OUT/madbase.out}
  MB_PORT=$(free_port)
  local pg_port=${PG_PORT:-$(free_port)}
  if [ -z "${MB_DATA_KEEP:-}" ]; then rm -rf "$data"; fi
  mkdir -p "$data"; chmod 755 "$data"
  MADBASE_LISTEN="127.0.0.1:$MB_PORT" MADBASE_DATA_DIR="$data" MADBASE_PG_PORT="$pg_port" \
    MADBASE_LOG="${MB_LOG:-warn}" "$MADBASE" start >"$MB_OUT" 2>&1 &
  MB_PID=$!
  for _ in $(seq 1 1500); do
    curl -fs "http://127.0.0.1:$MB_PORT/health" >/dev/null 2>&1 && break
    kill -0 "$MB_PID" 2>/dev/null || { cat "$MB_OUT"; exit 1; }
    sleep 0.2
  done
  MB_DB_URL=$(grep -o 'postgres://[^ ]*' "$MB_OUT" | head -1)
}

stop_madbase() { kill -TERM "$MB_PID" 2>/dev/null || true; wait "$MB_PID" 2>/dev/null || true; }

# wrk_run <label> <url> [extra wrk args...]: prints and records req/s and p99 (ms) in $OUT/<label>.wrk
wrk_run() {
  local label="$1" url="$2"; shift 2
  wrk --latency -t "${WRK_THREADS:-2}" -c "${CONNS:-256}" -d "${DURATION:-15s}" "$@" "$url" >"$OUT/$label.wrk"
  local rps p99
  rps=$(awk '/^Requests\/sec/ {print $2}' "$OUT/$label.wrk")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$OUT/$label.wrk")
  local non2xx; non2xx=$(awk '/Non-2xx/ {print $5}' "$OUT/$label.wrk")
  printf '%-28s %12s req/s   p99 %8s ms   %s\n' "$label" "$rps" "$p99" "${non2xx:+(non-2xx/3xx: $non2xx)}"
  eval "${label//[^a-zA-Z0-9_]/_}_RPS=$rps; ${label//[^a-zA-Z0-9_]/_}_P99=$p99"
}

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}')" "$1" "$2"; }

machine() { echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r)"; }
