#!/usr/bin/env bash
# Storage: one large object up and down through /storage/v1, side by side with the disk itself.
# A fresh release MadBase (data dir under bench/out, the same disk as the test file); a SIZE_MIB
# file of random bytes; then, each REPEAT times:
#   - upload: `POST /storage/v1/object/bench/big.bin` streamed by curl with storage-js's headers
#     (`x-upsert: true`, `cache-control: max-age=3600`, a content type), against
#     `dd if=<file> of=<copy> bs=1M conv=fdatasync` (a durable copy of the same bytes on the same disk);
#   - download: `GET /storage/v1/object/bench/big.bin` to /dev/null, against `cat <file> >/dev/null`
#     (both from the page cache), and against nginx (Debian's, `sendfile on`) serving the same file
#     to the same client: the loopback ceiling of an HTTP download on this machine;
#   - cold download: the same two with the object's blob and the file dropped from the page cache
#     first (`dd iflag=nocache count=0`, POSIX_FADV_DONTNEED: no root needed), so both read the disk.
# MadBase's RSS is sampled every 20 ms during each transfer; the peak growth over the idle RSS is
# reported (goal < 64 MiB), with throughputs and their ratios (goal >= 0.5).
#
#   bench/storage_transfer.sh            SIZE_MIB=1024 REPEAT=3 MADBASE_BINARY=<binary>
source "$(dirname "$0")/lib.sh"
need_tool curl curl
need_tool python3 python3
need_tool nginx nginx

SIZE_MIB=${SIZE_MIB:-1024}
REPEAT=${REPEAT:-3}
FILE="$OUT/storage_transfer.bin"
COPY="$OUT/storage_transfer.copy"

build_madbase
MB_LOG=warn; MB_OUT="$OUT/storage_transfer_madbase.out"
MADBASE_STORAGE_FILE_SIZE_LIMIT=$((SIZE_MIB * 2))MiB start_madbase "$OUT/storage_transfer_data"
NGINX_DIR="$OUT/storage_transfer_nginx"
stop_all() {
  stop_madbase
  [ -f "$NGINX_DIR/nginx.pid" ] && kill "$(cat "$NGINX_DIR/nginx.pid")" 2>/dev/null
  rm -f "$FILE" "$COPY"
}
trap stop_all EXIT
KEY=$(madbase_key service_role)
API="http://127.0.0.1:$MB_PORT/storage/v1"
curl -fs -H "authorization: Bearer $KEY" -H 'content-type: application/json' -d '{"name":"bench"}' "$API/bucket" >/dev/null

echo "== writing $SIZE_MIB MiB of random bytes"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$FILE"
sync

NGINX_PORT=$(free_port)
mkdir -p "$NGINX_DIR"
cat >"$NGINX_DIR/nginx.conf" <<CONF
worker_processes 1;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log warn;
events { worker_connections 64; }
http { access_log off; sendfile on; client_body_temp_path $NGINX_DIR/tmp; server { listen 127.0.0.1:$NGINX_PORT; root $OUT; } }
CONF
nginx -c "$NGINX_DIR/nginx.conf"

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$MB_PID/status"; }

# sample_rss <file>: the RSS every 20 ms until killed.
sample_rss() { while :; do rss_kib >>"$1"; sleep 0.02; done; }

# timed <rss file> <command...>: seconds the command took, with MadBase's RSS sampled meanwhile.
timed() {
  local rss="$1"; shift
  : >"$rss"
  sample_rss "$rss" & local sampler=$!
  local start end
  start=$(date +%s.%N)
  "$@"
  end=$(date +%s.%N)
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$start" "$end"
}

upload() {
  curl -fsS -o /dev/null -X POST -T "$FILE" -H "authorization: Bearer $KEY" -H 'x-upsert: true' \
    -H 'cache-control: max-age=3600' -H 'content-type: application/octet-stream' "$API/object/bench/big.bin"
}
download() { curl -fsS -o /dev/null -H "authorization: Bearer $KEY" "$API/object/bench/big.bin"; }
disk_copy() { dd if="$FILE" of="$COPY" bs=1M conv=fdatasync status=none; }
disk_read() { cat "$FILE" >/dev/null; }
nginx_download() { curl -fsS -o /dev/null "http://127.0.0.1:$NGINX_PORT/$(basename "$FILE")"; }
# Drops the stored blobs and the test file from the page cache (clean pages: they were synced).
evict() { find "$OUT/storage_transfer_data/storage" "$FILE" -type f -exec dd if={} iflag=nocache count=0 status=none \; ; }
mibps() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.0f}')" "$SIZE_MIB" "$1"; }
peak_growth_mib() { python3 -c "import sys; v=[int(x) for x in open(sys.argv[1]) if x.strip()]; print(f'{(max(v) - int(sys.argv[2])) / 1024:.1f}' if v else 'n/a')" "$1" "$2"; }

upload >/dev/null; download; disk_read # warm: the first object, the page cache
IDLE=$(rss_kib)
echo "== idle RSS $((IDLE / 1024)) MiB; $REPEAT rounds of $SIZE_MIB MiB"
printf '%-6s %-12s %-12s %-7s %-14s %-14s %-10s %-7s %-11s %-7s %-14s %-10s %-9s %-7s\n' round "upload MiB/s" "dd MiB/s" ratio "upload RSS+MiB" \
  "download MiB/s" "cat MiB/s" ratio "nginx MiB/s" ratio "download RSS+MiB" "cold MiB/s" "cold cat" ratio
for round in $(seq 1 "$REPEAT"); do
  t_up=$(timed "$OUT/storage_rss_up.txt" upload)
  g_up=$(peak_growth_mib "$OUT/storage_rss_up.txt" "$IDLE")
  t_dd=$(timed /dev/null disk_copy); rm -f "$COPY"
  t_down=$(timed "$OUT/storage_rss_down.txt" download)
  g_down=$(peak_growth_mib "$OUT/storage_rss_down.txt" "$IDLE")
  t_cat=$(timed /dev/null disk_read)
  t_nginx=$(timed /dev/null nginx_download)
  evict; t_cold=$(timed /dev/null download)
  evict; t_cold_cat=$(timed /dev/null disk_read)
  up=$(mibps "$t_up"); dd_rate=$(mibps "$t_dd"); down=$(mibps "$t_down"); cat_rate=$(mibps "$t_cat"); nginx_rate=$(mibps "$t_nginx")
  cold=$(mibps "$t_cold"); cold_cat=$(mibps "$t_cold_cat")
  printf '%-6s %-12s %-12s %-7s %-14s %-14s %-10s %-7s %-11s %-7s %-14s %-10s %-9s %-7s\n' "$round" "$up" "$dd_rate" "$(ratio "$up" "$dd_rate")" "$g_up" \
    "$down" "$cat_rate" "$(ratio "$down" "$cat_rate")" "$nginx_rate" "$(ratio "$down" "$nginx_rate")" "$g_down" \
    "$cold" "$cold_cat" "$(ratio "$cold" "$cold_cat")"
done
echo "== $(machine)"
