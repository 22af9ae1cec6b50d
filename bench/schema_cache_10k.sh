#!/usr/bin/env bash
# Schema cache on a large schema: 10,000 tables (4 columns, a primary key and a foreign key each)
# in `public` of MadBase's managed cluster. Prints the seconds the schema cache takes
#   1. at start-up (one introspection statement + parsing, before the shards start), and
#   2. on a reload triggered by DDL (event trigger → NOTIFY pgrst → reload on shard 0 → all shards),
#      measured from the DDL's commit until /rest/v1 serves the new table.
#
#   bench/schema_cache_10k.sh              # TABLES=10000; MADBASE_BIN=path skips the release build
source "$(dirname "$0")/lib.sh"
TABLES=${TABLES:-10000}
if [ -n "${MADBASE_BIN:-}" ]; then MADBASE="$MADBASE_BIN"; else build_madbase; fi
DATA="$OUT/schema-10k-data"

# Logging at info: the timings come from MadBase's own log lines.
MB_LOG=info,madbase_http=warn
MB_OUT="$OUT/schema-10k.out"
REUSE_DATA=${MB_DATA_KEEP:-} # the caller's choice; the data dir is managed below
MB_DATA_KEEP=1
start_info() { start_madbase "$DATA"; }
# MadBase's log without terminal colours.
log_text() { sed 's/\x1b\[[0-9;]*m//g' "$OUT/schema-10k.out"; }
trap stop_madbase EXIT

echo "machine: $(machine)"
if [ -n "$REUSE_DATA" ] && [ -d "$DATA/pgdata" ]; then
  echo "== reusing $DATA (MB_DATA_KEEP)"
else
rm -rf "$DATA"
start_info
echo "== creating $TABLES tables"
# Batches of 500 per transaction keep the lock table small; each commit notifies once.
"$PSQL_BIN" "$MB_DB_URL" -qAt -v ON_ERROR_STOP=1 <<SQL
create table public.t_root (id bigint primary key, name text);
do \$\$
begin
  for i in 1..$TABLES loop
    execute format('create table public.t_%s (id bigint primary key, name text not null default '''', created_at timestamptz default now(), root_id bigint references public.t_root(id))', i);
    if i % 500 = 0 then commit; end if;
  end loop;
end
\$\$;
SQL
stop_madbase
fi

echo "== start-up load"
start_info
startup_ms=$(log_text | grep 'schema cache loaded' | grep -o 'elapsed_ms=[0-9]*' | tail -1 | cut -d= -f2)
relations=$(log_text | grep 'schema cache loaded' | grep -o 'relations=[0-9]*' | tail -1 | cut -d= -f2)

echo "== reload on DDL"
# Let the reload that follows the listener's first LISTEN finish, so the one measured is ours.
for _ in $(seq 1 600); do log_text | grep 'schema cache reloaded' | grep -q 'listen started' && break; sleep 0.1; done
before=$(log_text | grep -c 'schema cache reloaded' || true)
KEY=$(grep -o 'service_role key: [^ ]*' "$OUT/schema-10k.out" | awk '{print $3}')
t0=$(date +%s.%N)
"$PSQL_BIN" "$MB_DB_URL" -qAt -v ON_ERROR_STOP=1 -c 'create table public.t_new (id int)'
until [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:$MB_PORT/rest/v1/t_new?limit=0")" = 200 ]; do sleep 0.01; done
t1=$(date +%s.%N)
sleep 0.2 # the log line follows the swap closely; give it a moment
reload_line=$(log_text | grep 'schema cache reloaded' | tail -n +"$((before + 1))" | tail -1)

python3 - "$startup_ms" "$relations" "$t0" "$t1" "$reload_line" <<'PY'
import sys, re
startup_ms, relations, t0, t1, line = sys.argv[1:6]
print(f"relations in the cache:         {relations}")
print(f"start-up load (query + parse):  {int(startup_ms) / 1000:.2f} s")
m = re.search(r"query_ms=(\d+).*total_ms=(\d+)", line)
if m:
    print(f"reload on shard 0:              {int(m.group(2)) / 1000:.2f} s (introspection query {int(m.group(1)) / 1000:.2f} s)")
print(f"DDL commit -> served by /rest/v1: {float(t1) - float(t0):.2f} s")
PY
