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
rm -f "$OUT"/callgrind.out*
export MADBASE_SHARDS=1 MADBASE_FORCE_LEGACY_DRIVER=true
MB_WRAP="valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$OUT/callgrind.out" \
  start_madbase "$OUT/callgrind-data"
trap stop_madbase EXIT
create_bench_items
sleep 3 # the schema reload the DDL triggered, slow under valgrind
key=$(madbase_key anon)
requests() { python3 - "$MB_PORT" "$key" "$1" <<'PY'
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
callgrind_control -i on "$MB_PID" >/dev/null
requests 2000
callgrind_control -d "$MB_PID" >/dev/null
callgrind_control -i off "$MB_PID" >/dev/null
total=$(awk '/^summary:/ {print $2}' "$OUT/callgrind.out.1")
echo "$MADBASE: $((total / 2000)) instructions per request (2,000 requests, $total in all)"
