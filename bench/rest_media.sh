#!/usr/bin/env bash
# What the media types and counts cost on the same read, side by side in one run: a 20-row page of
# a 10k-row table as JSON (the baseline), CSV, nulls=stripped JSON, with Prefer: count=exact and
# with count=planned (the planner's estimate from EXPLAIN in the same batch). Ratios are to the
# JSON page.
#
#   bench/rest_media.sh            # DURATION=5s per run, ROUNDS=5, CONNS=64 by default
source "$(dirname "$0")/lib.sh"
need_tool wrk wrk
build_madbase
DURATION=${DURATION:-5s}
CONNS=${CONNS:-64}

echo "machine: $(machine)"
start_madbase "$OUT/madbase-media-data"
trap stop_madbase EXIT
"$PSQL_BIN" "$MB_DB_URL" -qAt -v ON_ERROR_STOP=1 <<'SQL'
create table public.bench_media (id bigint primary key, name text not null, price numeric, tags text[]);
insert into public.bench_media
  select i, 'item, "' || i || '"', case when i % 3 = 0 then null else i * 1.5 end, array['a', 'b'] from generate_series(1, 10000) i;
analyze public.bench_media;
SQL
ANON_KEY=$(madbase_key anon)
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "apikey: $ANON_KEY" "http://127.0.0.1:$MB_PORT/rest/v1/bench_media?limit=1")" = 200 ] && break
  sleep 0.2
done

# page <label> <accept> <prefer>: a wrk script reading a random 20-row page by primary key range.
page() {
  local prefer=""
  if [ -n "$3" ]; then prefer="wrk.headers[\"Prefer\"] = \"$3\""; fi
  cat >"$OUT/$1.lua" <<LUA
wrk.headers["apikey"] = "$ANON_KEY"
wrk.headers["Authorization"] = "Bearer $ANON_KEY"
wrk.headers["Accept"] = "$2"
$prefer
request = function()
  local from = math.random(1, 9980)
  return wrk.format("GET", "/rest/v1/bench_media?id=gte." .. from .. "&order=id&limit=20")
end
LUA
}
page json "application/json" ""
page csv "text/csv" ""
page stripped "application/vnd.pgrst.array+json;nulls=stripped" ""
page exact "application/json" "count=exact"
page planned "application/json" "count=planned"

# The machine is shared and noisy: ROUNDS interleaved rounds; the median round of each counts.
DURATION=5s wrk_run warm "http://127.0.0.1:$MB_PORT" -s "$OUT/json.lua" >/dev/null
declare -A RUNS
for round in $(seq 1 "${ROUNDS:-5}"); do
  for label in json csv stripped exact planned; do
    wrk_run "media_${label}_$round" "http://127.0.0.1:$MB_PORT" -s "$OUT/$label.lua"
    rps_var="media_${label}_${round}_RPS"
    RUNS[$label]="${RUNS[$label]:-} ${!rps_var}"
  done
done
declare -A MEDIAN
for label in json csv stripped exact planned; do
  MEDIAN[$label]=$(python3 -c "import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))" ${RUNS[$label]})
  printf 'median %-10s %12s req/s   (runs:%s)\n' "$label" "${MEDIAN[$label]}" "${RUNS[$label]}"
done
for label in csv stripped exact planned; do
  echo "ratio $label / json: $(ratio "${MEDIAN[$label]}" "${MEDIAN[json]}")"
done
