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

# one_run <binary>: prints "<CPU µs per request> <req/s>" (runs in a subshell: its own trap).
one_run() {
  MADBASE=$1
  trap stop_madbase EXIT
  start_madbase "$OUT/cpu-ab-data"
  create_bench_items
  sleep 1 # the schema reload the DDL triggered
  get_by_pk_lua "$OUT/cpu_ab.lua"
  DURATION=4s wrk_run warm "http://127.0.0.1:$MB_PORT" -s "$OUT/cpu_ab.lua" >/dev/null
  DURATION=10s wrk_run madbase_get "http://127.0.0.1:$MB_PORT" -s "$OUT/cpu_ab.lua" >/dev/null
  stop_madbase
  echo "$madbase_get_CPU_US $madbase_get_RPS"
}

for round in $(seq 1 "${3:-4}"); do
  for binary in "$1" "$2"; do
    read -r cpu rps <<<"$(one_run "$binary" | tail -1)"
    printf 'round %s: %6s µs CPU per request, %10s req/s  (%s)\n' "$round" "$cpu" "$rps" "$binary"
  done
done
