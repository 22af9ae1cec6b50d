#!/usr/bin/env bash
# Edge Functions: invocations per second on ONE core, side by side in one run.
#   - madbase_hello:  GET /functions/v1/hello (the Rust hello component of functions/guests,
#                     deployed --no-verify-jwt): a fresh instance per request, 1 shard pinned to core 0
#   - wasmtime_serve: `wasmtime serve` 48.0.8 (the wasmtime-cli crate) with the same component,
#                     pinned to core 0 (its tokio runtime and its instances)
#   - madbase_health: GET /health on the same MadBase (the upper bound: the HTTP path alone)
#   - madbase_db:     POST /functions/v1/db with a statement returning 10 rows, as anon under RLS
#   - madbase_rest:   the same 10 rows through GET /rest/v1 (PostgREST's path)
# wrk runs on core 1 with CONNS connections. Then the instantiation times MadBase measured
# (p50/p99 of madbase_operation_duration_seconds{operation="function_instantiate"}) and the
# ratios. Needs 2 cores or more.
#
#   bench/functions_hello.sh     CONNS=64 DURATION=10s MADBASE_BINARY=<binary> WASMTIME=<wasmtime 48.0.8>
source "$(dirname "$0")/lib.sh"
need_tool wrk wrk
need_tool curl curl
need_tool taskset util-linux
export CONNS=${CONNS:-64} DURATION=${DURATION:-10s} WRK_THREADS=1

"$ROOT/scripts/build-functions.sh" >/dev/null
WASM="$ROOT/target/wasm-functions"
WASMTIME=${WASMTIME:-$(command -v wasmtime || true)}
if [ -z "$WASMTIME" ] || ! "$WASMTIME" --version | grep -q '^wasmtime 48\.0\.8'; then
  echo "== cargo install wasmtime-cli 48.0.8 (once, into target/bench-tools)"
  cargo install -q wasmtime-cli --version 48.0.8 --locked --root "$ROOT/target/bench-tools"
  WASMTIME="$ROOT/target/bench-tools/bin/wasmtime"
fi

build_madbase
MB_LOG=warn; MB_OUT="$OUT/functions_madbase.out"; MB_WRAP="taskset -c 0"; export MADBASE_SHARDS=1
start_madbase "$OUT/functions_data"
WT_PORT=$(free_port)
taskset -c 0 "$WASMTIME" serve -Scli --addr "127.0.0.1:$WT_PORT" "$WASM/hello.wasm" >"$OUT/functions_wasmtime.out" 2>&1 &
WT_PID=$!
trap 'stop_madbase; kill "$WT_PID" 2>/dev/null || true' EXIT
API="http://127.0.0.1:$MB_PORT"
SERVICE=$(madbase_key service_role); ANON=$(madbase_key anon)
deploy() { # deploy <name> <component> [query]
  curl -fs -o /dev/null -X POST --data-binary "@$WASM/$2.wasm" -H "authorization: Bearer $SERVICE" \
    -H 'content-type: application/wasm' "$API/functions/v1/_admin/functions/$1${3:+?$3}"
}
deploy hello hello verify_jwt=false
deploy db db
create_bench_items
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$WT_PORT/" >/dev/null 2>&1 && break; sleep 0.2; done
[ "$(curl -fs "$API/functions/v1/hello")" = "Hello World" ] || { echo "hello does not answer"; exit 1; }
[ "$(curl -fs "http://127.0.0.1:$WT_PORT/")" = "Hello World" ] || { echo "wasmtime serve does not answer"; exit 1; }

cat >"$OUT/functions_db.lua" <<LUA
wrk.method = "POST"
wrk.headers["apikey"] = "$ANON"
wrk.headers["Authorization"] = "Bearer $ANON"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"sql":"select id, name, price from public.bench_items where id > \$1 order by id limit 10","params":["100"]}'
LUA
cat >"$OUT/functions_rest.lua" <<LUA
wrk.headers["apikey"] = "$ANON"
wrk.headers["Authorization"] = "Bearer $ANON"
LUA
[ "$(curl -fs -X POST -H "authorization: Bearer $ANON" -H 'content-type: application/json' \
  -d '{"sql":"select id from public.bench_items where id > $1 order by id limit 10","params":["100"]}' \
  "$API/functions/v1/db" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 10 ] || { echo "db does not answer 10 rows"; exit 1; }

echo "== $(machine); servers pinned to core 0, wrk on core 1, $CONNS connections, $DURATION each"
# wrk (this shell's children from here on) on core 1; the servers stay on core 0.
taskset -cp 1 $$ >/dev/null
DURATION=3s wrk_run warm_madbase "$API/functions/v1/hello" >/dev/null
DURATION=3s wrk_run warm_wasmtime "http://127.0.0.1:$WT_PORT/" >/dev/null
wrk_run madbase_hello "$API/functions/v1/hello"
wrk_run wasmtime_serve "http://127.0.0.1:$WT_PORT/"
wrk_run madbase_health "$API/health"
wrk_run madbase_db "$API/functions/v1/db" -s "$OUT/functions_db.lua"
wrk_run madbase_rest "$API/rest/v1/bench_items?select=id,name,price&id=gt.100&order=id&limit=10" -s "$OUT/functions_rest.lua"
METRICS=$(curl -fs -H "authorization: Bearer $SERVICE" "$API/metrics")
quantile() { echo "$METRICS" | awk -v q="$1" -F'[{} ]' '$1=="madbase_operation_duration_seconds" && $2 ~ /function_instantiate/ && $2 ~ "quantile=\""q"\"" {printf "%.1f", $4*1e6}'; }
echo "instantiation (MadBase's own measure, pooled + copy-on-write): p50 $(quantile 0.5) µs, p99 $(quantile 0.99) µs"
echo "ratio madbase/wasmtime serve req/s: $(ratio "$madbase_hello_RPS" "$wasmtime_serve_RPS")"
echo "ratio madbase hello//health req/s:  $(ratio "$madbase_hello_RPS" "$madbase_health_RPS")"
echo "ratio db function//rest/v1 req/s:   $(ratio "$madbase_db_RPS" "$madbase_rest_RPS")"
