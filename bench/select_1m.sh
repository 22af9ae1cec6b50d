#!/usr/bin/env bash
# One unbounded read of a 1,000,000-row table: GET /rest/v1/big as anon (no limit, no range), with
# MadBase's peak resident set size (VmHWM from /proc/<pid>/status; the PostgreSQL backends are
# separate processes, sampled separately) before and after, the answer's status, bytes and time, and
# RSS sampled every 0.1 s while the requests run. The request is made REPEAT times (default 3) in a
# row, so memory kept after a response (per pooled connection) shows too. Exits non-zero when
# MadBase's peak RSS exceeds MAX_PEAK_RSS_MIB (default 256).
#
#   bench/select_1m.sh                  # ROWS=1000000 MAX_PEAK_RSS_MIB=256 REPEAT=3 by default
#   MADBASE_DB_MAX_ROWS=1000 bench/select_1m.sh   # with the default cap (1000 rows answered)
# Without a setting the script removes MadBase's default row cap (MADBASE_DB_MAX_ROWS=unlimited):
# the point is the uncapped worst case.
source "$(dirname "$0")/lib.sh"
build_madbase
ROWS=${ROWS:-1000000}
export MADBASE_DB_MAX_ROWS=${MADBASE_DB_MAX_ROWS:-unlimited}
MAX_PEAK_RSS_MIB=${MAX_PEAK_RSS_MIB:-256}
REPEAT=${REPEAT:-3}

echo "machine: $(machine)"
start_madbase "$OUT/madbase-1m-data"
SAMPLER_PID=
trap '[ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null; stop_madbase' EXIT
"$PSQL_BIN" "$MB_DB_URL" -qAt -v ON_ERROR_STOP=1 <<SQL
create table public.big (id bigint primary key, name text not null, price numeric not null, created_at timestamptz not null);
insert into public.big select i, 'item ' || i, i * 1.5, timestamptz '2026-01-01' + i * interval '1 second'
  from generate_series(1, $ROWS) i;
grant select on public.big to anon;
analyze public.big;
SQL
ANON_KEY=$(madbase_key anon)
URL="http://127.0.0.1:$MB_PORT/rest/v1/big"
for _ in $(seq 1 100); do # the DDL's schema reload
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL?limit=1" -H "apikey: $ANON_KEY")" = 200 ] && break
  sleep 0.1
done

status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
mib() { echo $(( $1 / 1024 )); }
hwm_before=$(status_kib "$MB_PID" VmHWM)
rss_before=$(status_kib "$MB_PID" VmRSS)
# The backend that will serve the request is one of MadBase's pooled connections: sample them all.
backends() { "$PSQL_BIN" "$MB_DB_URL" -qAt -c "select pid from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()"; }
BACKENDS=$(backends | tr '\n' ' ')
(
  while :; do
    pg=0; for p in $BACKENDS; do v=$(status_kib "$p" VmRSS 2>/dev/null); pg=$(( pg > ${v:-0} ? pg : ${v:-0} )); done
    echo "$(date +%s.%N | cut -c1-14) $(status_kib "$MB_PID" VmRSS) $pg"
    sleep 0.1
  done
) >"$OUT/select_1m_rss.tsv" 2>/dev/null &
SAMPLER_PID=$!

for i in $(seq 1 "$REPEAT"); do
  echo "== GET /rest/v1/big ($ROWS rows, anon, unbounded), request $i of $REPEAT"
  curl -s -o "$OUT/select_1m.body" --max-time 600 -H "apikey: $ANON_KEY" -H "Authorization: Bearer $ANON_KEY" \
    -w 'status %{http_code}  bytes %{size_download}  time %{time_total} s  (first byte after %{time_starttransfer} s)\n' \
    "$URL" || echo "curl failed (exit $?)"
  kill -0 "$MB_PID" 2>/dev/null || break
  sleep 0.5
  echo "   madbase RSS now $(mib "$(status_kib "$MB_PID" VmRSS)") MiB, peak (VmHWM) $(mib "$(status_kib "$MB_PID" VmHWM)") MiB"
done
sleep 0.3
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=

if kill -0 "$MB_PID" 2>/dev/null; then
  hwm_after=$(status_kib "$MB_PID" VmHWM)
  rss_after=$(status_kib "$MB_PID" VmRSS)
else
  echo "madbase is gone (killed for memory?): $(tail -3 "$MB_OUT")"
  hwm_after=$(awk 'BEGIN {m = 0} $2 > m {m = $2} END {print m}' "$OUT/select_1m_rss.tsv"); rss_after=0
fi
pg_peak=$(awk 'BEGIN {m = 0} $3 > m {m = $3} END {print m}' "$OUT/select_1m_rss.tsv")
head -c 200 "$OUT/select_1m.body"; echo " …"
echo "rows in the body: $(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(len(d) if isinstance(d, list) else d)" "$OUT/select_1m.body" 2>&1 | head -c 300)"
echo "madbase RSS before: $(mib "$rss_before") MiB   peak before (VmHWM): $(mib "$hwm_before") MiB"
echo "madbase peak RSS (VmHWM) after: $(mib "$hwm_after") MiB   RSS after: $(mib "$rss_after") MiB"
echo "PostgreSQL backend peak RSS (sampled): $(mib "$pg_peak") MiB"
echo "RSS samples (time, madbase KiB, largest backend KiB): $OUT/select_1m_rss.tsv"
if [ "$(mib "$hwm_after")" -gt "$MAX_PEAK_RSS_MIB" ]; then
  echo "FAIL: madbase peak RSS $(mib "$hwm_after") MiB > $MAX_PEAK_RSS_MIB MiB"
  exit 1
fi
echo "PASS: madbase peak RSS $(mib "$hwm_after") MiB <= $MAX_PEAK_RSS_MIB MiB"
