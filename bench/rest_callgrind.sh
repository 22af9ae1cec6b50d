#!/usr/bin/env bash
# Instructions per request of madbase on the one-row read (bench/rest_roundtrip.sh's request),
# counted by callgrind: stable on a noisy machine, where CPU time is not. One shard on the epoll
# driver (valgrind does not follow io_uring), the access log on; the counters start after 300
# warm-up requests and cover exactly 2,000 requests over 4 keep-alive connections.
#
#   bench/rest_callgrind.sh [binary]      # default: this checkout's release build
source "$(dirname "$0")/lib.sh"
need_tool valgrind valgrind
if [ -n "${1:-}" ]; then MADBASE_BINARY=$1; fi
build_madbase
data="$OUT/callgrind-data"; rm -rf "$data"; mkdir -p "$data"; chmod 755 "$data"
port=$(free_port)
MB_OUT="$OUT/callgrind.madbase.out"
rm -f "$OUT"/callgrind.out*
MADBASE_LISTEN="127.0.0.1:$port" MADBASE_DATA_DIR="$data" MADBASE_PG_PORT=$(free_port) MADBASE_SHARDS=1 \
  MADBASE_FORCE_LEGACY_DRIVER=true MADBASE_LOG=info \
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" "$MADBASE" start >"$MB_OUT" 2>&1 &
vpid=$!
trap 'kill -TERM $vpid 2>/dev/null; wait $vpid 2>/dev/null' EXIT
for _ in $(seq 1 600); do curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.5; done
PSQL_BIN=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | tail -1)
"$PSQL_BIN" "$("$ROOT/scripts/madbase-db-url.py" "$MB_OUT")" -qAt -v ON_ERROR_STOP=1 <<'SQL'
create table public.bench_items (id bigint primary key, name text not null, price numeric not null, tags text[] not null);
insert into public.bench_items select i, 'item ' || i, i * 1.5, array['a', 'b'] from generate_series(1, 10000) i;
alter table public.bench_items enable row level security;
create policy "anon reads" on public.bench_items for select to anon using (id > 0);
analyze public.bench_items;
SQL
sleep 3
key=$(madbase_key anon)
requests() { python3 - "$port" "$key" "$1" <<'PY'
import http.client, random, sys
port, key, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
random.seed(1)
conns = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(4)]
for i in range(n):
    c = conns[i % 4]
    c.request("GET", f"/rest/v1/bench_items?select=*&id=eq.{random.randint(1, 10000)}",
              headers={"apikey": key, "Authorization": "Bearer " + key})
    r = c.getresponse(); body = r.read()
    assert r.status == 200, (r.status, body)
PY
}
requests 300
callgrind_control -i on "$vpid" >/dev/null
requests 2000
callgrind_control -d "$vpid" >/dev/null
callgrind_control -i off "$vpid" >/dev/null
total=$(awk '/^summary:/ {print $2}' "$OUT/callgrind.out.1")
echo "$MADBASE: $((total / 2000)) instructions per request (2,000 requests, $total in all)"
