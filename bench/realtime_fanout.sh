#!/usr/bin/env bash
# Realtime broadcast fan-out: one public channel (`realtime:fanout`) with SUBSCRIBERS WebSockets
# (vsn 2.0.0, default 10,000) and SENDERS more pushing broadcasts the way realtime-js does in vsn 2
# (binary kind 3, delivered as binary kind 4) at each RATE (messages/s in total, all senders
# together), each carrying its send time; the subscribers measure delivered messages/s, the
# fraction of the expected deliveries (sent × subscribers) that arrived, and send → delivery
# latency. One release MadBase for all rates; each rate connects afresh.
#
#   bench/realtime_fanout.sh [RATE...]     default rates: 1 10 30
#   SUBSCRIBERS=10000 SENDERS=2 DURATION=20 PAYLOAD=64 FORMAT=binary|text MADBASE_BINARY=<binary>
#
# The generator runs on the same cores as MadBase: its CPU seconds are printed beside the server's,
# with the whole machine's busy % over the measured window (100% = every core busy).
source "$(dirname "$0")/lib.sh"
need_tool curl curl
need_tool python3 python3

RATES=("$@"); [ ${#RATES[@]} -gt 0 ] || RATES=(1 10 30)
SUBSCRIBERS=${SUBSCRIBERS:-10000}
SENDERS=${SENDERS:-2}
DURATION=${DURATION:-20}
PAYLOAD=${PAYLOAD:-64}
FORMAT=${FORMAT:-binary}

ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ $((SUBSCRIBERS + SENDERS + 512)) -gt "$(ulimit -n)" ]; then
  echo "SUBSCRIBERS=$SUBSCRIBERS needs more file descriptors than RLIMIT_NOFILE ($(ulimit -n)) allows" >&2; exit 1
fi

prepare_realtime
# Each sender pushes RATE/SENDERS messages/s: lift the per-connection message and byte limits.
export MADBASE_REALTIME_MAX_EVENTS_PER_SECOND=1000000
export MADBASE_REALTIME_MAX_BYTES_PER_SECOND=1000000000

MB_LOG=warn; MB_OUT="$OUT/realtime_fanout_madbase.out"
start_madbase "$OUT/realtime_fanout_data"
trap stop_madbase EXIT
SOURCES=$(( (SUBSCRIBERS + SENDERS) / 25000 + 1 ))

declare -a ROWS
for RATE in "${RATES[@]}"; do
  echo "== $SUBSCRIBERS subscribers, $SENDERS senders, $RATE msg/s for $DURATION s, $PAYLOAD-byte payloads ($FORMAT)"
  f="$OUT/realtime_fanout_$RATE.txt"
  "$RT" --mode broadcast --url "ws://127.0.0.1:$MB_PORT" --apikey "$(madbase_key anon)" --channel fanout \
    --connections "$SUBSCRIBERS" --senders "$SENDERS" --rate "$RATE" --duration "$DURATION" \
    --payload-bytes "$PAYLOAD" --broadcast-format "$FORMAT" --server-pid "$MB_PID" --source-addrs "$SOURCES" \
    --connect-rate 5000 --in-flight 512 --join-timeout 120 --drain 5 >"$f"
  cat "$f"
  get() { awk -F': ' -v k="$1" '$1==k {print $2; exit}' "$f"; }
  ROWS+=("$(printf '%-7s %-9s %-10s %-9s %-12s %-9s %-9s %-9s %-10s %-12s %-6s %s' "$RATE" "$(get broadcasts_sent_per_s)" \
    "$(get subscribers_joined)" "$(get messages_per_s)" "$(get delivered_fraction)" "$(get latency_ms_p50)" \
    "$(get latency_ms_p99)" "$(get latency_ms_p999)" "$(get server_cpu_us_per_message)" \
    "$(get generator_cpu_seconds)/$(get server_cpu_seconds)" "$(get machine_cpu_busy_percent)" "$(get closed_by_server)")")
done

echo
echo "== Realtime broadcast fan-out, $(machine); one channel, $SUBSCRIBERS subscribers, $SENDERS senders, ${DURATION} s per rate, $PAYLOAD-byte payloads ($FORMAT)"
printf '%-7s %-9s %-10s %-9s %-12s %-9s %-9s %-9s %-10s %-12s %-6s %s\n' rate sent/s joined deliv/s delivered p50_ms p99_ms p999_ms srv_us/msg cpu_s_gen/srv busy% closed
for r in "${ROWS[@]}"; do echo "$r"; done
