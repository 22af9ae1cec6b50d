#!/usr/bin/env bash
# madbase CPU per request (µs, from /proc around a wrk run) of two builds, interleaved A B A B …
# on a fresh managed database each: the same one-row read as bench/rest_roundtrip.sh, 10 s after a
# 4 s warm-up, with the product's default log level (the access log on). CPU per request moves less
# with this shared VM's noise than req/s, and interleaving spreads the drift over both builds.
#
#   bench/rest_cpu_ab.sh <binary A> <binary B> [rounds, default 4]
source "$(dirname "$0")/lib.sh"
need_tool wrk wrk
[ $# -ge 2 ] || { echo "usage: $0 <binary A> <binary B> [rounds]" >&2; exit 2; }
echo "machine: $(machine)"

one_run() {
  MADBASE=$1
  start_madbase "$OUT/cpu-ab-data"
  "$PSQL_BIN" "$MB_DB_URL" -qAt -v ON_ERROR_STOP=1 <<'SQL'
create table public.bench_items (id bigint primary key, name text not null, price numeric not null, tags text[] not null);
insert into public.bench_items select i, 'item ' || i, i * 1.5, array['a', 'b'] from generate_series(1, 10000) i;
alter table public.bench_items enable row level security;
create policy "anon reads" on public.bench_items for select to anon using (id > 0);
analyze public.bench_items;
SQL
  sleep 1
  local key; key=$(madbase_key anon)
  cat >"$OUT/cpu_ab.lua" <<LUA
wrk.headers["apikey"] = "$key"
wrk.headers["Authorization"] = "Bearer $key"
request = function()
  return wrk.format("GET", "/rest/v1/bench_items?select=*&id=eq." .. math.random(1, 10000))
end
LUA
  DURATION=4s wrk_run warm "http://127.0.0.1:$MB_PORT" -s "$OUT/cpu_ab.lua" >/dev/null
  DURATION=10s wrk_run madbase_get "http://127.0.0.1:$MB_PORT" -s "$OUT/cpu_ab.lua" >/dev/null
  stop_madbase
  echo "$madbase_get_CPU_US $madbase_get_RPS"
}

for round in $(seq 1 "${3:-4}"); do
  for which in A B; do
    binary=$1; [ "$which" = B ] && binary=$2
    read -r cpu rps <<<"$(one_run "$binary" | tail -1)"
    printf 'round %s %s: %6s µs CPU per request, %10s req/s  (%s)\n' "$round" "$which" "$cpu" "$rps" "$binary"
  done
done
