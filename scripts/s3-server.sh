#!/usr/bin/env bash
# The test S3 server (scripts/s3_server.py, on the PyPI package moto: its in-memory S3).
#
#   scripts/s3-server.sh                 installs moto if needed, prints the venv's python path
#   scripts/s3-server.sh [--host H] [--port P]
#                                        installs if needed, then runs the server in place of this
#                                        script (exec: the process id stays the same). Port 0 (the
#                                        default) picks a free port; the server prints
#                                        "listening HOST PORT" on stdout once it accepts.
#
# moto (its S3 extra, and Flask for its HTTP server: not the whole `moto[server]`, which brings
# every AWS service's dependencies) is installed with pip into a virtual environment at
# $S3_SERVER_VENV (default target/s3-server-venv). Idempotent and safe to run concurrently (a lock
# serialises the install): once the packages are there it only prints the path or starts the
# server. Progress goes to stderr.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PACKAGES=("moto[s3]==5.2.5" "flask==3.1.3" "flask-cors==6.0.5")
VENV="${S3_SERVER_VENV:-$ROOT/target/s3-server-venv}"

installed() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import moto.moto_server.werkzeug_app, moto.s3' >/dev/null 2>&1
}

if ! installed; then
  mkdir -p "$(dirname "$VENV")"
  exec 9>"$VENV.lock"
  flock 9
  if ! installed; then
    echo "== installing ${PACKAGES[*]} (test S3 server) into $VENV" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}" >&2
    installed || { echo "${PACKAGES[*]} installed but cannot be imported" >&2; exit 1; }
  fi
  exec 9>&-
fi

if [ "$#" -eq 0 ]; then
  echo "$VENV/bin/python"
  exit 0
fi
exec "$VENV/bin/python" "$ROOT/scripts/s3_server.py" "$@"
