#!/usr/bin/env bash
# Realtime postgres_changes: commit → client latency and delivered messages/s with RLS, and what
# delivering costs the writers. Table `bench_rt` (RLS on, in the `supabase_realtime` publication,
# select granted to authenticated); SUBSCRIBERS WebSockets (default 1,000), each with its own
# HS256 user token (role authenticated, sub 00000000-0000-4000-8000-<i as 12 hex digits>),
# subscribed to INSERT on it. The inserter is pgbench: single-row INSERTs of a random owner among
# the subscribers' users at a fixed RATE (-R) for DURATION seconds; `ts` defaults to
# clock_timestamp(), which the generator compares with its own clock on delivery (same machine).
# Two policy variants:
#   all — `using (true)`: every subscriber sees every row (Supabase's documented worst case);
#   own — `using (owner = auth.uid())`: each row is visible to one subscriber.
# For each variant and RATE the same pgbench load runs first alone (no subscribers; the
# replication core still streams), then with the subscribers: the ratio of inserts/s and of the
# insert latency with / without is printed beside the delivered messages/s and the p50/p99.
#
#   bench/realtime_changes.sh [RATE...]     default rate: 20 inserts/s
#   SUBSCRIBERS=1000 DURATION=20 CLIENTS=4 VARIANTS="all own" MADBASE_BINARY=<binary>
#   RATE "max" runs pgbench without -R (as fast as it goes).
source "$(dirname "$0")/lib.sh"
need_tool curl curl
need_tool python3 python3
need_tool pgbench postgresql-contrib

RATES=("$@"); [ ${#RATES[@]} -gt 0 ] || RATES=(20)
SUBSCRIBERS=${SUBSCRIBERS:-1000}
DURATION=${DURATION:-20}
CLIENTS=${CLIENTS:-4}
VARIANTS=${VARIANTS:-all own}

ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

prepare_realtime

MB_LOG=warn; MB_OUT="$OUT/realtime_changes_madbase.out"
start_madbase "$OUT/realtime_changes_data"
trap stop_madbase EXIT
psql_q() { "$PSQL_BIN" "$MB_DB_URL" -qAt -v ON_ERROR_STOP=1 "$@"; }

psql_q <<'SQL'
create table public.bench_rt (id bigserial primary key, owner uuid not null, ts timestamptz not null default clock_timestamp(), body text);
alter table public.bench_rt enable row level security;
grant select on public.bench_rt to authenticated;
alter publication supabase_realtime add table public.bench_rt;
SQL

cat >"$OUT/realtime_changes.pgbench" <<SQL
\set i random(0, $((SUBSCRIBERS - 1)))
insert into public.bench_rt (owner, body) values (('00000000-0000-4000-8000-' || lpad(to_hex(:i), 12, '0'))::uuid, 'bench');
SQL

set_policy() {
  case "$1" in
    all) using="true" ;;
    own) using="owner = auth.uid()" ;;
    *) echo "unknown variant $1" >&2; exit 1 ;;
  esac
  psql_q -c "drop policy if exists bench_rt_read on public.bench_rt" \
         -c "create policy bench_rt_read on public.bench_rt for select to authenticated using ($using)"
}

# inserts <label> <rate>: the pgbench INSERT load; sets <label>_TPS, <label>_LAT, <label>_ROWS.
inserts() {
  local label="$1" rate="$2" r=()
  [ "$rate" = max ] || r=(-R "$rate")
  psql_q -c "truncate public.bench_rt"
  pgbench -n -c "$CLIENTS" -j 2 -T "$DURATION" "${r[@]}" -f "$OUT/realtime_changes.pgbench" "$MB_DB_URL" >"$OUT/$label.pgbench" 2>&1 \
    || { cat "$OUT/$label.pgbench"; exit 1; }
  local tps lat rows
  tps=$(awk '/^tps/ {print $3; exit}' "$OUT/$label.pgbench")
  lat=$(awk '/latency average/ {print $4; exit}' "$OUT/$label.pgbench")
  rows=$(psql_q -c "select count(*) from public.bench_rt")
  printf '%-34s %10s inserts/s   avg latency %s ms   rows %s\n' "$label" "$tps" "$lat" "$rows"
  eval "${label}_TPS=$tps; ${label}_LAT=$lat; ${label}_ROWS=$rows"
}

# rt_metric <name>: a counter of /metrics summed over the shards.
rt_metric() {
  local key; key=$(madbase_key service_role)
  curl -fs -H "apikey: $key" -H "Authorization: Bearer $key" "http://127.0.0.1:$MB_PORT/metrics" \
    | awk -v n="$1" '$1 == n || index($1, n "{") == 1 {s += $2} END {printf "%d\n", s}'
}

# caught_up: waits (at most 300 s) until the replication slot has confirmed everything written, so
# that a run that fell behind does not leave its backlog to the next one.
caught_up() {
  local lag
  for _ in $(seq 1 600); do
    lag=$(psql_q -c "select coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)), 0)::bigint from pg_replication_slots where slot_type = 'logical'")
    [ "$lag" -lt 65536 ] && return 0
    sleep 0.5
  done
  echo "== the replication slot is still $lag bytes behind after 300 s" >&2
}

declare -a ROWS
for variant in $VARIANTS; do
  set_policy "$variant"
  for RATE in "${RATES[@]}"; do
    tag="${variant}_${RATE}"
    echo "== policy '$variant', $RATE inserts/s for $DURATION s, $CLIENTS pgbench clients: alone"
    inserts "alone_$tag" "$RATE"
    echo "== the same with $SUBSCRIBERS subscribers"
    psql_q -c "truncate public.bench_rt"
    caught_up
    checks0=$(rt_metric madbase_realtime_rls_checks_total); denied0=$(rt_metric madbase_realtime_changes_denied_total)
    ready="$OUT/realtime_changes.ready"; rm -f "$ready"
    f="$OUT/realtime_changes_$tag.txt"
    "$RT" --mode changes --url "ws://127.0.0.1:$MB_PORT" --apikey "$(madbase_key anon)" --channel "changes_$tag" \
      --connections "$SUBSCRIBERS" --table bench_rt --ts-column ts --owner-column owner \
      --duration "$DURATION" --drain 10 --subscribe-wait 60 --ready-file "$ready" \
      --server-pid "$MB_PID" --connect-rate 2000 >"$f" &
    gen=$!
    for _ in $(seq 1 1200); do [ -f "$ready" ] && break; kill -0 "$gen" 2>/dev/null || break; sleep 0.1; done
    [ -f "$ready" ] || { echo "the generator did not get ready" >&2; wait "$gen" || true; cat "$f"; exit 1; }
    inserts "with_$tag" "$RATE"
    wait "$gen"
    cat "$f"
    checks=$(( $(rt_metric madbase_realtime_rls_checks_total) - checks0 ))
    denied=$(( $(rt_metric madbase_realtime_changes_denied_total) - denied0 ))
    echo "server: RLS group checks $checks, changes denied by them $denied (during the run and its drain)"
    caught_up
    get() { awk -F': ' -v k="$1" '$1==k {print $2; exit}' "$f"; }
    rows=$(eval echo "\$with_${tag}_ROWS")
    if [ "$variant" = all ]; then expected=$((rows * $(get joins_ok))); else expected=$rows; fi
    received=$(get messages_received)
    frac=$(python3 -c "import sys; e,r=int(sys.argv[1]),int(sys.argv[2]); print(f'{r/e:.4f}' if e else 'n/a')" "$expected" "$received")
    ROWS+=("$(printf '%-8s %-6s %-10s %-10s %-7s %-8s %-9s %-16s %-8s %-9s %-9s %-9s %-8s %-7s %-9s %s' "$variant" "$RATE" \
      "$(eval echo "\$alone_${tag}_TPS")" "$(eval echo "\$with_${tag}_TPS")" \
      "$(ratio "$(eval echo "\$with_${tag}_TPS")" "$(eval echo "\$alone_${tag}_TPS")")" \
      "$(ratio "$(eval echo "\$with_${tag}_LAT")" "$(eval echo "\$alone_${tag}_LAT")")" \
      "$(get subscribed_to_postgres)" "$received/$expected" "$frac" "$(get messages_per_s)" \
      "$(get latency_ms_p50)" "$(get latency_ms_p99)" "$([ "$variant" = own ] && get changes_of_other_owners || echo n/a)" "$(get closed_by_server)" "$checks" "$denied")")
  done
done

echo
echo "== Realtime postgres_changes, $(machine); $SUBSCRIBERS subscribers (distinct users), INSERT at a fixed rate for ${DURATION} s, $CLIENTS pgbench clients"
echo "   ins/s: pgbench tps alone / with subscribers; tps_x, lat_x: with ÷ alone (inserts/s, average insert latency); p50/p99: commit (clock_timestamp()) → client;"
echo "   received/expected within the run + 10 s drain; foreign: rows of another owner delivered (policy own); rls_checks, denied: the server's counters over the run"
printf '%-8s %-6s %-10s %-10s %-7s %-8s %-9s %-16s %-8s %-9s %-9s %-9s %-8s %-7s %-9s %s\n' policy rate ins/s_alone ins/s_with tps_x lat_x subscribed received/expected fraction deliv/s p50_ms p99_ms foreign closed rls_checks denied
for r in "${ROWS[@]}"; do echo "$r"; done
