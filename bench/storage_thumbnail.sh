#!/usr/bin/env bash
# Storage: thumbnails of a 12-megapixel JPEG per second, side by side with vipsthumbnail (Debian's
# libvips-tools) on the same input and the same cores. A fresh release MadBase with the result
# cache off (`cache_bytes = 0`: every request decodes and resizes), one 4000x3000 JPEG uploaded;
# then, for DURATION each:
#   - madbase: wrk with CONNS connections on
#     `/render/image/authenticated/imgs/photo.jpg?width=200&height=200&resize=cover` (JPEG out);
#   - vipsthumbnail: `vipsthumbnail photo.jpg -s 200x200 --smartcrop centre` run back to back
#     by $(nproc) parallel workers (one process per thumbnail, as a script would).
# Prints thumbnails/s for both and the ratio (goal >= 1.0); then MadBase's AVIF thumbnails/s
# (`&format=avif`, rav1e in pure Rust) beside its JPEG ones, for what `format=avif` costs.
#
#   bench/storage_thumbnail.sh        DURATION=20s CONNS=4 MADBASE_BINARY=<binary>
source "$(dirname "$0")/lib.sh"
need_tool wrk wrk
need_tool vipsthumbnail libvips-tools
need_tool curl curl

export CONNS=${CONNS:-4}
export DURATION=${DURATION:-20s}
SECONDS_RUN=${DURATION%s}
PHOTO="$OUT/storage_thumbnail.jpg"

echo "== a 4000x3000 JPEG (noise over a gradient, quality 90)"
vips gaussnoise "$OUT/storage_thumbnail_noise.v" 4000 3000 --mean 128 --sigma 40
vips xyz "$OUT/storage_thumbnail_xyz.v" 4000 3000
vips extract_band "$OUT/storage_thumbnail_xyz.v" "$OUT/storage_thumbnail_x.v" 0
vips linear "$OUT/storage_thumbnail_x.v" "$OUT/storage_thumbnail_ramp.v" 0.06 0
vips add "$OUT/storage_thumbnail_noise.v" "$OUT/storage_thumbnail_ramp.v" "$OUT/storage_thumbnail_sum.v"
vips bandjoin "$OUT/storage_thumbnail_sum.v $OUT/storage_thumbnail_noise.v $OUT/storage_thumbnail_ramp.v" "$OUT/storage_thumbnail_rgb.v"
vips cast "$OUT/storage_thumbnail_rgb.v" "$OUT/storage_thumbnail_u8.v" uchar
vips copy "$OUT/storage_thumbnail_u8.v" "$PHOTO[Q=90]"
rm -f "$OUT"/storage_thumbnail_*.v
echo "   $(vipsheader "$PHOTO"), $(stat -c %s "$PHOTO") bytes"

build_madbase
MB_LOG=warn; MB_OUT="$OUT/storage_thumbnail_madbase.out"
MADBASE_STORAGE_IMAGE_TRANSFORMATION_CACHE_BYTES=0 start_madbase "$OUT/storage_thumbnail_data"
trap stop_madbase EXIT
KEY=$(madbase_key service_role)
API="http://127.0.0.1:$MB_PORT/storage/v1"
curl -fs -H "authorization: Bearer $KEY" -H 'content-type: application/json' -d '{"name":"imgs"}' "$API/bucket" >/dev/null
curl -fs -o /dev/null -X POST --data-binary "@$PHOTO" -H "authorization: Bearer $KEY" -H 'content-type: image/jpeg' \
  "$API/object/imgs/photo.jpg"
cat >"$OUT/storage_thumbnail.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.headers["Accept"] = "image/jpeg"
request = function() return wrk.format("GET", "/storage/v1/render/image/authenticated/imgs/photo.jpg?width=200&height=200&resize=cover") end
LUA
curl -fs -o "$OUT/storage_thumbnail_madbase.jpg" -H "authorization: Bearer $KEY" \
  "$API/render/image/authenticated/imgs/photo.jpg?width=200&height=200&resize=cover"
echo "   madbase's thumbnail: $(vipsheader "$OUT/storage_thumbnail_madbase.jpg")"

echo "== $(machine)"
DURATION=3s wrk_run warm_madbase "http://127.0.0.1:$MB_PORT" -s "$OUT/storage_thumbnail.lua" >/dev/null
wrk_run madbase_thumbnail "http://127.0.0.1:$MB_PORT" -s "$OUT/storage_thumbnail.lua"
sed 's/resize=cover/resize=cover\&format=avif/' "$OUT/storage_thumbnail.lua" >"$OUT/storage_thumbnail_avif.lua"
wrk_run madbase_avif "http://127.0.0.1:$MB_PORT" -s "$OUT/storage_thumbnail_avif.lua"

# vipsthumbnail: $(nproc) workers, each making thumbnails back to back for the same duration.
stop_madbase; trap - EXIT
count_dir="$OUT/storage_thumbnail_vips"; rm -rf "$count_dir"; mkdir -p "$count_dir"
worker() {
  local n=0 end=$(( $(date +%s) + SECONDS_RUN ))
  while [ "$(date +%s)" -lt "$end" ]; do
    vipsthumbnail "$PHOTO" -s 200x200 --smartcrop centre -o "$count_dir/t_$1.jpg[Q=80]"
    n=$((n + 1))
  done
  echo "$n" >"$count_dir/count_$1"
}
for w in $(seq 1 "$(nproc)"); do worker "$w" & done
wait
VIPS_TOTAL=$(cat "$count_dir"/count_* | python3 -c "import sys; print(sum(int(l) for l in sys.stdin))")
VIPS_RATE=$(python3 -c "import sys; print(f'{int(sys.argv[1]) / float(sys.argv[2]):.1f}')" "$VIPS_TOTAL" "$SECONDS_RUN")
echo "   vipsthumbnail's thumbnail: $(vipsheader "$count_dir/t_1.jpg")"
printf '%-28s %12s thumbnails/s\n' madbase "$madbase_thumbnail_RPS" vipsthumbnail "$VIPS_RATE"
echo "ratio madbase/vipsthumbnail: $(ratio "$madbase_thumbnail_RPS" "$VIPS_RATE")"
printf '%-28s %12s thumbnails/s (%s of its JPEG rate)\n' "madbase, format=avif" "$madbase_avif_RPS" \
  "$(ratio "$madbase_avif_RPS" "$madbase_thumbnail_RPS")"
