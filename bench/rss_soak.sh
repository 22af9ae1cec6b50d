#!/usr/bin/env bash
# Memory stability under sustained mixed load: MadBase (release build, managed PostgreSQL) serves a
# read/write mix through /rest/v1 for SOAK_SECS seconds (default 600) while its resident set size
# is sampled every SAMPLE_SECS (default 10) from /proc/<pid>/status (VmRSS; the PostgreSQL server is
# a separate process and not counted). Prints every sample, then first/min/max/last and the drift
# (last - first) / first in %; exits non-zero when |drift| exceeds MAX_DRIFT_PCT (default 10).
#
# The mix (per request, at random): 70% GET one row by primary key, 10% GET 50 rows ordered,
# 10% PATCH one row (return=minimal), 10% POST one new row (return=minimal); anon key for reads,
# service_role for writes. A WARMUP (default 30 s) of the same mix runs first so allocator and
# cache warm-up is not counted as drift; the first sample is taken when the measured run starts.
#
#   bench/rss_soak.sh                   # SOAK_SECS=600 CONNS=64 by default
#   SOAK_SECS=60 bench/rss_soak.sh      # a quick check
source "$(dirname "$0")/lib.sh"
need_tool wrk wrk
build_madbase

SOAK_SECS=${SOAK_SECS:-600}
SAMPLE_SECS=${SAMPLE_SECS:-10}
MAX_DRIFT_PCT=${MAX_DRIFT_PCT:-10}
WARMUP=${WARMUP:-30s}
CONNS=${CONNS:-64}

echo "machine: $(machine)"
start_madbase "$OUT/madbase-soak-data"
WRK_PID=
trap '[ -n "$WRK_PID" ] && kill "$WRK_PID" 2>/dev/null; stop_madbase' EXIT
"$PSQL_BIN" "$MB_DB_URL" -qAt -v ON_ERROR_STOP=1 <<'SQL'
create table public.soak_items (id bigint primary key, name text not null, price numeric not null, tags text[] not null);
insert into public.soak_items select i, 'item ' || i, i * 1.5, array['a', 'b'] from generate_series(1, 10000) i;
create table public.soak_events (id bigint generated always as identity primary key, item_id bigint not null, note text not null, at timestamptz not null default now());
grant select on public.soak_items to anon;
analyze public.soak_items;
SQL
sleep 2 # the DDL's schema reload

ANON_KEY=$(madbase_key anon)
SERVICE_KEY=$(madbase_key service_role)
cat >"$OUT/soak_mix.lua" <<LUA
local anon = { ["apikey"] = "$ANON_KEY", ["Authorization"] = "Bearer $ANON_KEY" }
local service = { ["apikey"] = "$ANON_KEY", ["Authorization"] = "Bearer $SERVICE_KEY",
  ["Content-Type"] = "application/json", ["Prefer"] = "return=minimal" }
request = function()
  local r = math.random(1, 100)
  local id = math.random(1, 10000)
  if r <= 70 then
    return wrk.format("GET", "/rest/v1/soak_items?select=*&id=eq." .. id, anon)
  elseif r <= 80 then
    return wrk.format("GET", "/rest/v1/soak_items?select=id,name,price&order=id.desc&limit=50&id=gt." .. id, anon)
  elseif r <= 90 then
    return wrk.format("PATCH", "/rest/v1/soak_items?id=eq." .. id, service, '{"price": ' .. (id * 2) .. '}')
  else
    return wrk.format("POST", "/rest/v1/soak_events", service, '{"item_id": ' .. id .. ', "note": "soak ' .. r .. '"}')
  end
end
LUA
# Every request of the mix must succeed before the soak means anything.
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$MB_PORT/rest/v1/soak_events" \
  -H "apikey: $ANON_KEY" -H "Authorization: Bearer $SERVICE_KEY" -H 'Content-Type: application/json' \
  -H 'Prefer: return=minimal' -d '{"item_id": 1, "note": "probe"}')
[ "$code" = 201 ] || { echo "probe POST answered $code"; exit 1; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$MB_PID/status"; }

echo "== warm-up $WARMUP"
DURATION=$WARMUP wrk_run soak_warmup "http://127.0.0.1:$MB_PORT" -s "$OUT/soak_mix.lua"
echo "== soak ${SOAK_SECS}s, $CONNS connections, RSS every ${SAMPLE_SECS}s"
wrk --latency -t "${WRK_THREADS:-2}" -c "$CONNS" -d "${SOAK_SECS}s" -s "$OUT/soak_mix.lua" \
  "http://127.0.0.1:$MB_PORT" >"$OUT/soak.wrk" &
WRK_PID=$!
: >"$OUT/soak_rss.tsv"
start=$(date +%s)
while :; do
  now=$(( $(date +%s) - start ))
  rss=$(rss_kib)
  printf '%5d s  %8d KiB\n' "$now" "$rss" | tee -a "$OUT/soak_rss.tsv"
  kill -0 "$WRK_PID" 2>/dev/null || break
  [ "$now" -ge "$SOAK_SECS" ] && break
  sleep "$SAMPLE_SECS"
done
wait "$WRK_PID" || true
WRK_PID=
rps=$(awk '/^Requests\/sec/ {print $2}' "$OUT/soak.wrk")
non2xx=$(awk '/Non-2xx/ {print $5}' "$OUT/soak.wrk")
echo "soak load: $rps req/s over ${SOAK_SECS}s${non2xx:+, non-2xx/3xx: $non2xx}"
echo "VmHWM (peak RSS): $(awk '/^VmHWM:/ {print $2}' "/proc/$MB_PID/status") KiB"
awk -v max_drift="$MAX_DRIFT_PCT" '
  { v = $3; if (NR == 1) { first = v; min = v; max = v } if (v < min) min = v; if (v > max) max = v; last = v }
  END {
    drift = (last - first) * 100 / first
    printf "RSS KiB: first %d  min %d  max %d  last %d   drift %+.1f%% (max vs first %+.1f%%)\n", first, min, max, last, drift, (max - first) * 100 / first
    if (drift > max_drift || drift < -max_drift) { printf "FAIL: |drift| > %s%%\n", max_drift; exit 1 }
    printf "PASS: |drift| <= %s%%\n", max_drift
  }' "$OUT/soak_rss.tsv"
