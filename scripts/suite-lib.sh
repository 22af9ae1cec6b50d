# Shared by the official-suite scripts (postgrest-js-suite.sh, auth-js-suite.sh): installing the
# supabase-js monorepo's packages and running a fresh MadBase on the suite's hard-coded port.
# Source it; the functions exit the script (with a message naming $0) on failure.

# suite_install <checkout> <out dir>: the monorepo's packages, unless SKIP_INSTALL is set. The
# monorepo pins pnpm 11 (packageManager), which needs Node >= 22 (node:sqlite); pnpm 10 reads the
# same lockfile (v9) and runs on Node 20. PNPM overrides the command.
suite_install() {
  local checkout="$1" out="$2"
  [ -z "${SKIP_INSTALL:-}" ] || return 0
  local pnpm=${PNPM:-npx --yes pnpm@10}
  echo "== installing the monorepo's packages ($pnpm install)"
  (cd "$checkout" && npm_config_manage_package_manager_versions=false COREPACK_ENABLE_STRICT=0 \
    $pnpm install --frozen-lockfile >"$out/install.log" 2>&1) \
    || { tail -20 "$out/install.log"; echo "$0: package install failed (log: $out/install.log)" >&2; exit 1; }
}

# suite_start_madbase <port> <working dir> <data-dir prefix> <out dir> [VAR=value ...]: a fresh
# MadBase ($MADBASE_BIN) with its managed PostgreSQL in a temporary data directory, started in
# <working dir> (where it picks up a Supabase project's supabase/config.toml) with the extra
# environment given, healthy within 120 s. Sets MB_PID and DATA; an EXIT trap stops it and
# removes the data. Output in <out dir>/madbase.out.
suite_start_madbase() {
  local port="$1" dir="$2" prefix="$3" out="$4"
  shift 4
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "$0: 127.0.0.1:$port is already in use (a Supabase CLI stack or another MadBase?)" >&2
    exit 1
  fi
  DATA=$(mktemp -d "/tmp/$prefix.XXXXXX")
  chmod 755 "$DATA"
  local pg_port
  pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  MB_PID=
  trap suite_cleanup EXIT
  echo "== starting MadBase ($MADBASE_BIN) on 127.0.0.1:$port in $dir, data in $DATA"
  (cd "$dir" && exec env MADBASE_LISTEN="127.0.0.1:$port" MADBASE_DATA_DIR="$DATA" MADBASE_PG_PORT="$pg_port" \
    MADBASE_LOG="${MADBASE_LOG:-warn}" "$@" "$MADBASE_BIN" start) >"$out/madbase.out" 2>&1 &
  MB_PID=$!
  for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    kill -0 "$MB_PID" 2>/dev/null || { cat "$out/madbase.out"; echo "$0: MadBase exited" >&2; exit 1; }
    sleep 0.2
  done
  echo "$0: MadBase not healthy after 120 s" >&2
  exit 1
}

suite_cleanup() {
  if [ -n "${MB_PID:-}" ]; then kill -TERM "$MB_PID" 2>/dev/null || true; wait "$MB_PID" 2>/dev/null || true; fi
  [ -n "${DATA:-}" ] && rm -rf "$DATA"
}
