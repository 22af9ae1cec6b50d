#!/usr/bin/env bash
# One PostgreSQL round trip through MadBase's full request path — HTTP parse, JWT verify (anon key),
# one pipelined batch (settings + the statement, one Sync), JSON built by PostgreSQL — against
# pgbench replaying the identical statements (one pipeline, one Sync per transaction) on the same
# PostgreSQL, same machine, one run. Also bare `pgbench -S` for scale.
#
#   bench/rest_roundtrip.sh            # DURATION=15s CONNS=256 (HTTP clients) by default
source "$(dirname "$0")/lib.sh"
need_tool wrk wrk
need_tool pgbench postgresql-contrib
build_madbase

echo "machine: $(machine)"
start_madbase "$OUT/madbase-data"
trap stop_madbase EXIT
create_bench_items
# pgbench -S's own tables (before the restart, so the schema reload they trigger is long done).
pgbench -i -q -s 1 "$MB_DB_URL" >/dev/null 2>&1
restart_with_max_connections 400

ANON_KEY=$(madbase_key anon)
get_by_pk_lua "$OUT/get_by_pk.lua"

# The batch MadBase sends for that request (the settings statement, then the read), captured from
# PostgreSQL's log (log_statement = all) by capture_sql: pgbench writes the settings as literals
# where MadBase binds them, and binds :id where MadBase binds $1. curl sends exactly wrk's headers,
# so request.headers is the same text.
get_once() {
  curl -fsS "http://127.0.0.1:$MB_PORT/rest/v1/bench_items?select=*&id=eq.1" \
    -H "apikey: $ANON_KEY" -H "Authorization: Bearer $ANON_KEY" -H 'User-Agent:' -H 'Accept:'
}
SUBST="1=:id" capture_sql "$OUT/get_by_pk.capture" 'FROM "public"\."bench_items"' get_once
{ echo '\set id random(1, 10000)'; cat "$OUT/get_by_pk.capture"; } >"$OUT/get_by_pk.pgbench"
echo "== the batch pgbench replays ($OUT/get_by_pk.pgbench):"
cut -c1-300 "$OUT/get_by_pk.pgbench"

PG_CONNS=$(( $(nproc) * 4 ))   # MadBase: shards × pg_pool_size (default 4) connections

# Warm up (caches, per-connection prepared statements) before measuring.
DURATION=10s wrk_run warm "http://127.0.0.1:$MB_PORT" -s "$OUT/get_by_pk.lua" >/dev/null
wrk_run madbase_get_by_pk "http://127.0.0.1:$MB_PORT" -s "$OUT/get_by_pk.lua"
pgb pgbench_same_sql "$PG_CONNS" -f "$OUT/get_by_pk.pgbench"
pgb pgbench_same_sql_c64 64 -f "$OUT/get_by_pk.pgbench"
pgb pgbench_same_sql_c256 "${CONNS:-256}" -f "$OUT/get_by_pk.pgbench"
pgb pgbench_select_only "$PG_CONNS" -S
echo "ratio MadBase / pgbench same SQL (${PG_CONNS} conns): $(ratio "$madbase_get_by_pk_RPS" "$pgbench_same_sql_TPS")"
echo "ratio MadBase / pgbench same SQL (64 conns):  $(ratio "$madbase_get_by_pk_RPS" "$pgbench_same_sql_c64_TPS")"
echo "ratio MadBase / pgbench same SQL (${CONNS:-256} conns, the same concurrency): $(ratio "$madbase_get_by_pk_RPS" "$pgbench_same_sql_c256_TPS")"
echo "ratio MadBase / pgbench -S (${PG_CONNS} conns):       $(ratio "$madbase_get_by_pk_RPS" "$pgbench_select_only_TPS")"
