#!/usr/bin/env bash
# A read with a to-many embed through the whole request path:
# GET /rest/v1/orders?select=id,items(id,qty)&limit=25 (anon key; 10,000 orders with 4 items each,
# RLS on both tables with `to anon` policies), against pgbench replaying the exact batch MadBase
# sends for it (the settings statement and the read, captured with log_statement = all, one
# pipeline with one Sync, bound values written as literals) on the same PostgreSQL, same machine,
# one run, at the same concurrency and at MadBase's own connection count.
#
#   bench/rest_embed.sh                 # DURATION=15s CONNS=64 (HTTP clients) by default
source "$(dirname "$0")/lib.sh"
need_tool wrk wrk
need_tool pgbench postgresql-contrib
build_madbase
CONNS=${CONNS:-64}
URL_PATH='/rest/v1/orders?select=id,items(id,qty)&limit=25'

echo "machine: $(machine)"
start_madbase "$OUT/madbase-embed-data"
trap stop_madbase EXIT
"$PSQL_BIN" "$MB_DB_URL" -qAt -v ON_ERROR_STOP=1 <<SQL
create table public.orders (id bigint primary key, customer text not null, created_at timestamptz not null default now());
create table public.items (id bigint primary key, order_id bigint not null references public.orders (id),
  product text not null, qty integer not null);
create index on public.items (order_id);
insert into public.orders (id, customer) select i, 'customer ' || (i % 97) from generate_series(1, 10000) i;
insert into public.items select i, (i - 1) / 4 + 1, 'product ' || (i % 13), i % 7 + 1 from generate_series(1, 40000) i;
alter table public.orders enable row level security;
alter table public.items enable row level security;
create policy "anon reads orders" on public.orders for select to anon using (true);
create policy "anon reads items" on public.items for select to anon using (true);
analyze public.orders, public.items;
SQL
restart_with_max_connections $((CONNS + 100))

ANON_KEY=$(madbase_key anon)
cat >"$OUT/embed.lua" <<LUA
wrk.headers["apikey"] = "$ANON_KEY"
wrk.headers["Authorization"] = "Bearer $ANON_KEY"
LUA
get_once() {
  curl -fsS "http://127.0.0.1:$MB_PORT$URL_PATH" -H "apikey: $ANON_KEY" -H "Authorization: Bearer $ANON_KEY"
}
# The embed must answer 25 orders with 4 items each before the figures mean anything.
code=$(curl -s -o "$OUT/embed_probe.json" -w '%{http_code}' "http://127.0.0.1:$MB_PORT$URL_PATH" -H "apikey: $ANON_KEY")
[ "$code" = 200 ] || { echo "probe: $URL_PATH answered $code: $(head -c 500 "$OUT/embed_probe.json")"; exit 1; }
python3 -c '
import json, sys
rows = json.load(sys.stdin)
assert len(rows) == 25 and all(len(r["items"]) == 4 for r in rows), rows[:2]
print("== probe: 25 orders, 4 items each")' <"$OUT/embed_probe.json"
capture_sql "$OUT/embed.pgbench" 'FROM "public"\."orders"' get_once
echo "== the batch pgbench replays ($OUT/embed.pgbench):"
cut -c1-400 "$OUT/embed.pgbench"

PG_CONNS=$(( $(nproc) * 4 ))   # MadBase: shards × pg_pool_size (default 4) connections
DURATION=5s wrk_run warm "http://127.0.0.1:$MB_PORT$URL_PATH" -s "$OUT/embed.lua" >/dev/null
wrk_run madbase_embed "http://127.0.0.1:$MB_PORT$URL_PATH" -s "$OUT/embed.lua"
pgb pgbench_same_sql_same_conns "$CONNS" -f "$OUT/embed.pgbench"
pgb pgbench_same_sql "$PG_CONNS" -f "$OUT/embed.pgbench"
echo "ratio MadBase / pgbench same SQL ($CONNS conns, the same concurrency): $(ratio "$madbase_embed_RPS" "$pgbench_same_sql_same_conns_TPS")"
echo "ratio MadBase / pgbench same SQL ($PG_CONNS conns, MadBase's connection count): $(ratio "$madbase_embed_RPS" "$pgbench_same_sql_TPS")"
