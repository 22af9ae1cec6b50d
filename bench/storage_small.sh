#!/usr/bin/env bash
# Storage: many small objects downloaded at high concurrency, side by side with nginx serving the
# same files. A fresh release MadBase with COUNT objects of SIZE bytes in a public bucket (`pub`) and
# in a private one (`priv`, readable by `authenticated` through an RLS policy); nginx (Debian's)
# serving the same bytes from a directory. wrk with CONNS connections requests random objects:
#   - madbase_public:        GET /storage/v1/object/public/pub/<n>  (no token; one row read past RLS)
#   - madbase_authenticated: GET /storage/v1/object/authenticated/priv/<n> with a user's JWT (the
#                            row read as the caller: one pipelined statement under RLS)
#   - nginx:                 GET /<n> from disk
# Prints req/s and p99 for each and the ratios to nginx.
#
#   bench/storage_small.sh        COUNT=1000 SIZE=4096 CONNS=1000 DURATION=15s MADBASE_BINARY=<binary>
source "$(dirname "$0")/lib.sh"
need_tool wrk wrk
need_tool nginx nginx
need_tool curl curl

COUNT=${COUNT:-1000}
SIZE=${SIZE:-4096}
export CONNS=${CONNS:-1000}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

build_madbase
MB_LOG=warn; MB_OUT="$OUT/storage_small_madbase.out"
start_madbase "$OUT/storage_small_data"
NGINX_DIR="$OUT/storage_small_nginx"
trap 'stop_madbase; [ -f "$NGINX_DIR/nginx.pid" ] && kill "$(cat "$NGINX_DIR/nginx.pid")" 2>/dev/null || true' EXIT
KEY=$(madbase_key service_role)
API="http://127.0.0.1:$MB_PORT/storage/v1"
for bucket in pub priv; do
  public=false; [ "$bucket" = pub ] && public=true
  curl -fs -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
    -d "{\"name\":\"$bucket\",\"public\":$public}" "$API/bucket" >/dev/null
done
"$PSQL_BIN" "$MB_DB_URL" -qAt -v ON_ERROR_STOP=1 \
  -c "create policy \"authenticated read priv\" on storage.objects for select to authenticated using (bucket_id = 'priv')"

echo "== $COUNT objects of $SIZE bytes in each bucket and in nginx's root"
rm -rf "$NGINX_DIR"; mkdir -p "$NGINX_DIR/root"
head -c "$SIZE" /dev/urandom >"$OUT/storage_small.obj"
for n in $(seq 1 "$COUNT"); do
  cp "$OUT/storage_small.obj" "$NGINX_DIR/root/$n"
  for bucket in pub priv; do
    curl -fs -o /dev/null -X POST --data-binary "@$OUT/storage_small.obj" -H "authorization: Bearer $KEY" \
      -H 'content-type: application/octet-stream' "$API/object/$bucket/$n"
  done
done

NGINX_PORT=$(free_port)
cat >"$NGINX_DIR/nginx.conf" <<CONF
worker_processes $(nproc);
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  client_body_temp_path $NGINX_DIR/tmp;
  server { listen 127.0.0.1:$NGINX_PORT; root $NGINX_DIR/root; }
}
CONF
nginx -c "$NGINX_DIR/nginx.conf"

USER_JWT=$(python3 - <<'PY'
import base64, hashlib, hmac, json, time
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
h = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
p = b(json.dumps({"role": "authenticated", "sub": "aaaaaaaa-0000-4000-8000-000000000001", "exp": int(time.time()) + 86400}).encode())
s = b(hmac.new(b"super-secret-jwt-token-with-at-least-32-characters-long", f"{h}.{p}".encode(), hashlib.sha256).digest())
print(f"{h}.{p}.{s}")
PY
)
random_path_lua() { # random_path_lua <file> <path prefix> [bearer]
  : >"$1"
  [ -z "${3:-}" ] || echo "wrk.headers[\"Authorization\"] = \"Bearer $3\"" >>"$1"
  echo "request = function() return wrk.format(\"GET\", \"$2\" .. math.random(1, $COUNT)) end" >>"$1"
}
random_path_lua "$OUT/storage_small_public.lua" "/storage/v1/object/public/pub/"
random_path_lua "$OUT/storage_small_auth.lua" "/storage/v1/object/authenticated/priv/" "$USER_JWT"
random_path_lua "$OUT/storage_small_nginx.lua" "/"

echo "== $(machine); wrk $CONNS connections, ${DURATION:-15s} each"
DURATION=3s wrk_run warm_madbase "http://127.0.0.1:$MB_PORT" -s "$OUT/storage_small_public.lua" >/dev/null
DURATION=3s wrk_run warm_nginx "http://127.0.0.1:$NGINX_PORT" -s "$OUT/storage_small_nginx.lua" >/dev/null
wrk_run madbase_public "http://127.0.0.1:$MB_PORT" -s "$OUT/storage_small_public.lua"
wrk_run madbase_authenticated "http://127.0.0.1:$MB_PORT" -s "$OUT/storage_small_auth.lua"
wrk_run nginx "http://127.0.0.1:$NGINX_PORT" -s "$OUT/storage_small_nginx.lua"
echo "ratio public/nginx req/s:        $(ratio "$madbase_public_RPS" "$nginx_RPS")"
echo "ratio authenticated/nginx req/s: $(ratio "$madbase_authenticated_RPS" "$nginx_RPS")"
echo "ratio authenticated/public req/s: $(ratio "$madbase_authenticated_RPS" "$madbase_public_RPS")"
