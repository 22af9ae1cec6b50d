#!/usr/bin/env bash
# The test SMTP server (scripts/smtp_sink.py, on the PyPI package aiosmtpd).
#
#   scripts/smtp-sink.sh                 installs aiosmtpd if needed, prints the venv's python path
#   scripts/smtp-sink.sh --dir DIR [--host H] [--port P]
#                                        installs if needed, then runs the sink in place of this
#                                        script (exec: the process id stays the same). Port 0 (the
#                                        default) picks a free port; the sink prints
#                                        "listening HOST PORT" on stdout once it accepts.
#
# aiosmtpd is installed with pip into a virtual environment at $SMTP_SINK_VENV (default
# target/smtp-sink-venv). Idempotent and safe to run concurrently (a lock serialises the install):
# once the package is there it only prints the path or starts the sink. Progress goes to stderr.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PACKAGE="aiosmtpd==1.4.6"
VENV="${SMTP_SINK_VENV:-$ROOT/target/smtp-sink-venv}"

installed() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import aiosmtpd' >/dev/null 2>&1; }

if ! installed; then
  mkdir -p "$(dirname "$VENV")"
  exec 9>"$VENV.lock"
  flock 9
  if ! installed; then
    echo "== installing $PACKAGE (test SMTP server) into $VENV" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$PACKAGE" >&2
    installed || { echo "$PACKAGE installed but cannot be imported" >&2; exit 1; }
  fi
  exec 9>&-
fi

if [ "$#" -eq 0 ]; then
  echo "$VENV/bin/python"
  exit 0
fi
exec "$VENV/bin/python" "$ROOT/scripts/smtp_sink.py" "$@"
