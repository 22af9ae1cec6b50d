#!/usr/bin/env bash
# Auth's two hot requests through MadBase's full path — `POST /auth/v1/token?grant_type=refresh_token`
# and `GET /auth/v1/user` — against pgbench replaying the identical statements (captured from
# PostgreSQL's log, one pipeline and one Sync per transaction, as MadBase sends them) on the same
# PostgreSQL, same machine, one run, at equal concurrency.
#
# Refresh-token rotation is off for the side-by-side figure (each request then does the same
# work: lock the token and session, touch the session, audit row, claims and user JSON), so that a
# replayed statement does what the HTTP request did; a rotating run (each answer's token feeds the
# next request of its wrk thread) is reported after it.
#
#   bench/auth_roundtrip.sh            # DURATION=15s, concurrency 64 and 256, SESSIONS=100
source "$(dirname "$0")/lib.sh"
need_tool wrk wrk
need_tool pgbench postgresql-contrib
build_madbase

echo "machine: $(machine)"
export MADBASE_AUTH_ENABLE_REFRESH_TOKEN_ROTATION=false
export MADBASE_AUTH_RATE_LIMIT_TOKEN_REFRESH=1000000000
export MADBASE_AUTH_RATE_LIMIT_SIGN_IN_SIGN_UPS=1000000000
start_madbase "$OUT/madbase-data"
trap stop_madbase EXIT
restart_with_max_connections 400
ANON_KEY=$(madbase_key anon)
URL="http://127.0.0.1:$MB_PORT"

# SESSIONS users signed up, one session each: requests spread over them as an app's users do (one
# shared session would serialise every refresh on its row lock). pgbench gets one script per
# session (-f, chosen at random per transaction): the same statements, with that session's values.
SESSIONS=${SESSIONS:-100}
for i in $(seq 1 "$SESSIONS"); do
  curl -fsS -X POST "$URL/auth/v1/signup" -H "apikey: $ANON_KEY" -H 'Content-Type: application/json' \
    -d "{\"email\":\"bench$i@example.com\",\"password\":\"bench-password-1\"}"
  echo
done >"$OUT/sessions.jsonl"
python3 - "$OUT" <<'PY'
import base64, json, sys
out = sys.argv[1]
rows = []
for line in open(f"{out}/sessions.jsonl"):
    s = json.loads(line)
    payload = s["access_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    rows.append((s["access_token"], s["refresh_token"], claims["sub"], claims["session_id"]))
json.dump(rows, open(f"{out}/sessions.json", "w"))
lua_list = lambda i: ",".join('"%s"' % r[i] for r in rows)
open(f"{out}/refresh.lua", "w").write(f"""local tokens = {{{lua_list(1)}}}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function() return wrk.format(nil, nil, nil, '{{"refresh_token":"' .. tokens[math.random(#tokens)] .. '"}}') end
""")
open(f"{out}/user.lua", "w").write(f"""local tokens = {{{lua_list(0)}}}
request = function()
  return wrk.format("GET", nil, {{["Authorization"] = "Bearer " .. tokens[math.random(#tokens)]}})
end
""")
PY
sed -i "1i wrk.headers[\"apikey\"] = \"$ANON_KEY\"" "$OUT/refresh.lua" "$OUT/user.lua"
read -r ACCESS REFRESH <<<"$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))[0]; print(r[0], r[1])' "$OUT/sessions.json")"

refresh_once() {
  curl -fsS -X POST "$URL/auth/v1/token?grant_type=refresh_token" -H "apikey: $ANON_KEY" \
    -H 'Content-Type: application/json' -d "{\"refresh_token\":\"$REFRESH\"}"
}
user_once() { curl -fsS "$URL/auth/v1/user" -H "apikey: $ANON_KEY" -H "Authorization: Bearer $ACCESS"; }
capture_sql "$OUT/refresh.capture" 'auth_refresh\(' refresh_once
capture_sql "$OUT/user.capture" 'auth_user_json\(u\)::text, ' user_once
for f in refresh user; do echo "== the batch pgbench replays for $f, per session ($OUT/$f.capture):"; cut -c1-240 "$OUT/$f.capture"; done
# One script per session: the captured batch with the first session's token (refresh) or user and
# session ids (user) replaced by that session's.
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = json.load(open(f"{out}/sessions.json"))
refresh, user = open(f"{out}/refresh.capture").read(), open(f"{out}/user.capture").read()
for i, (_, token, sub, sid) in enumerate(rows):
    open(f"{out}/refresh.{i}.pgbench", "w").write(refresh.replace(rows[0][1], token))
    open(f"{out}/user.{i}.pgbench", "w").write(user.replace(rows[0][2], sub).replace(rows[0][3], sid))
PY
REFRESH_SCRIPTS=(); USER_SCRIPTS=()
for i in $(seq 0 $((SESSIONS - 1))); do
  REFRESH_SCRIPTS+=(-f "$OUT/refresh.$i.pgbench"); USER_SCRIPTS+=(-f "$OUT/user.$i.pgbench")
done

DURATION=5s wrk_run warm "$URL/auth/v1/token?grant_type=refresh_token" -s "$OUT/refresh.lua" >/dev/null
DURATION=5s wrk_run warm "$URL/auth/v1/user" -s "$OUT/user.lua" >/dev/null
for conns in 64 256; do
  CONNS=$conns wrk_run "madbase_refresh_c$conns" "$URL/auth/v1/token?grant_type=refresh_token" -s "$OUT/refresh.lua"
  pgb "pgbench_refresh_c$conns" "$conns" "${REFRESH_SCRIPTS[@]}"
  CONNS=$conns wrk_run "madbase_user_c$conns" "$URL/auth/v1/user" -s "$OUT/user.lua"
  pgb "pgbench_user_c$conns" "$conns" "${USER_SCRIPTS[@]}"
done
for conns in 64 256; do
  r="madbase_refresh_c${conns}_RPS"; p="pgbench_refresh_c${conns}_TPS"
  u="madbase_user_c${conns}_RPS"; q="pgbench_user_c${conns}_TPS"
  echo "ratio refresh_token grant / pgbench same SQL ($conns clients): $(ratio "${!r}" "${!p}")"
  echo "ratio GET /user / pgbench same SQL ($conns clients):           $(ratio "${!u}" "${!q}")"
done

# With rotation on (the default): each wrk thread chains the tokens its answers carry.
stop_madbase
unset MADBASE_AUTH_ENABLE_REFRESH_TOKEN_ROTATION
MB_DATA_KEEP=1 start_madbase "$MB_DATA"
URL="http://127.0.0.1:$MB_PORT"
session=$(curl -fsS -X POST "$URL/auth/v1/token?grant_type=password" -H "apikey: $ANON_KEY" \
  -H 'Content-Type: application/json' -d '{"email":"bench1@example.com","password":"bench-password-1"}')
REFRESH=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["refresh_token"])' <<<"$session")
cat >"$OUT/refresh_rotating.lua" <<LUA
local token = "$REFRESH"
wrk.method = "POST"
wrk.headers["apikey"] = "$ANON_KEY"
wrk.headers["Content-Type"] = "application/json"
request = function() return wrk.format(nil, nil, nil, '{"refresh_token":"' .. token .. '"}') end
response = function(status, headers, body)
  local next_token = body:match('"refresh_token":"([^"]+)"')
  if next_token then token = next_token end
end
LUA
CONNS=64 wrk_run madbase_refresh_rotating_c64 "$URL/auth/v1/token?grant_type=refresh_token" -s "$OUT/refresh_rotating.lua"
