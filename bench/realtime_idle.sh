#!/usr/bin/env bash
# Idle Realtime connections: memory per connection. For each N (default 10000 and 50000), a fresh
# release MadBase, N WebSockets (vsn 2.0.0) that each join one public channel
# (`realtime:idle`) and hold for HOLD seconds (heartbeats every 25 s), the madbase process's RSS
# (VmRSS) before connecting, with all held, at the end of the hold and after closing; prints the
# RSS per connection against the goal (≤ 8 KiB). The same with bare WebSockets (no channel joined)
# tells the socket's share from the channel's.
#
#   bench/realtime_idle.sh [N...]          HOLD=30 CONNECT_RATE=5000 KINDS="joined bare" MADBASE_BINARY=<binary>
#
# Each process needs one file descriptor per socket: the script raises `ulimit -n` as far as the
# machine allows and, where the hard limit is below N, runs at what fits and says so.
source "$(dirname "$0")/lib.sh"
need_tool curl curl
need_tool python3 python3

COUNTS=("$@"); [ ${#COUNTS[@]} -gt 0 ] || COUNTS=(10000 50000)
HOLD=${HOLD:-30}
CONNECT_RATE=${CONNECT_RATE:-5000}
# joined: each socket joins `realtime:idle` (the measurement); bare: WebSockets with heartbeats and
# no channel, to tell the socket's share from the channel's.
KINDS=${KINDS:-joined bare}

# File descriptors: try 1M, else the hard limit (a container may not let root raise it).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FD_LIMIT=$(ulimit -n)
# Listener, PostgreSQL connections, eventfds, io_uring rings, logs: what madbase keeps besides sockets.
FD_RESERVE=512

prepare_realtime

declare -a ROWS
for N in "${COUNTS[@]}"; do
  RUN_N=$N; NOTE=""
  if [ "$FD_LIMIT" != unlimited ] && [ $((N + FD_RESERVE)) -gt "$FD_LIMIT" ]; then
    RUN_N=$((FD_LIMIT - FD_RESERVE))
    NOTE="requested $N: not reachable here — RLIMIT_NOFILE is $FD_LIMIT (hard limit $(ulimit -Hn), not raisable in this environment) and madbase holds one descriptor per socket; ran $RUN_N"
    echo "== $NOTE"
  fi
  PORTS=$(awk '{print $2 - $1 + 1}' /proc/sys/net/ipv4/ip_local_port_range)
  SOURCES=$(( RUN_N / (PORTS * 9 / 10) + 1 ))
  MEM_FREE=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
  echo "== $RUN_N idle connections (source addresses 127.0.0.1..$SOURCES, $PORTS ephemeral ports each; $((MEM_FREE / 1024)) MiB available)"
  for kind in $KINDS; do
    flags=(); [ "$kind" = joined ] || flags=(--no-join)
    MB_LOG=warn; MB_OUT="$OUT/realtime_idle_madbase_${kind}_$N.out"
    start_madbase "$OUT/realtime_idle_data"
    trap stop_madbase EXIT
    f="$OUT/realtime_idle_${kind}_$N.txt"
    "$RT" --mode idle --url "ws://127.0.0.1:$MB_PORT" --apikey "$(madbase_key anon)" --channel idle \
      --connections "$RUN_N" --duration "$HOLD" --server-pid "$MB_PID" --source-addrs "$SOURCES" \
      --connect-rate "$CONNECT_RATE" --in-flight 512 --join-timeout 120 "${flags[@]}" >"$f"
    cat "$f"
    get() { awk -F': ' -v k="$1" '$1==k {print $2; exit}' "$f"; }
    ROWS+=("$(printf '%-9s %-7s %-9s %-9s %-11s %-11s %-11s %-11s %-10s %-10s %s' "$N" "$kind" "$(get connections_held)" "$(get joins_ok)" \
      "$(get server_rss_kib_before)" "$(get server_rss_kib_held)" "$(get server_rss_kib_end)" "$(get server_rss_kib_after_close)" \
      "$(get server_rss_kib_per_connection)" "$(get server_rss_kib_per_connection_end)" "$(get closed_by_server)")")
    stop_madbase; trap - EXIT
  done
  [ -z "$NOTE" ] || ROWS+=("          ($NOTE)")
done

echo
echo "== Realtime idle connections, $(machine); hold ${HOLD} s; madbase VmRSS in KiB (goal ≤ 8 KiB per connection)"
echo "   KiB/conn: (rss_held − rss_before) ÷ held, 2 s after the last join; KiB/conn@end: the same at the end of the hold"
printf '%-9s %-7s %-9s %-9s %-11s %-11s %-11s %-11s %-10s %-10s %s\n' requested sockets held joins_ok rss_before rss_held rss_end rss_closed KiB/conn KiB/conn@end closed_by_server
for r in "${ROWS[@]}"; do echo "$r"; done
