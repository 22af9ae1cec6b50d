#!/usr/bin/env bash
# The postgrest-js live suite against a fresh MadBase, reproducibly:
#
#   scripts/postgrest-js-suite.sh <supabase-js checkout>
#
# The suite is supabase/supabase-js's packages/core/postgrest-js/test: jest files that call
# http://localhost:54321/rest/v1 (hard-coded), normally served by `supabase start` on the Supabase
# CLI project in test/supabase (its migrations and seed.sql; config.toml exposes public, personal
# and graphql_public with max_rows 1000). This script does what the CLI would, with MadBase:
#
#   1. installs the monorepo's packages (pnpm 10 through npx, or $PNPM; skip with SKIP_INSTALL=1);
#   2. starts MadBase ($MADBASE_BIN, default target/debug/madbase) with its managed PostgreSQL in
#      a temporary data directory, on 127.0.0.1:54321, with the CLI project's API settings;
#   3. applies test/supabase/migrations/*.sql in order and seed.sql with psql (the schema needs
#      PostGIS: `postgresql-<major>-postgis-3` where MadBase's PostgreSQL is Debian's);
#   4. runs jest as the project's `test:suite` target does (v12 compatibility tests excluded),
#      with --ci so that snapshots are compared, never written;
#   5. prints the pass/fail counts (tests and snapshots), stops MadBase and removes the data.
#
# Exit status: jest's (0 when every test passed). Output of MadBase and jest goes to $OUT
# (default a temporary directory, printed).
set -euo pipefail

usage() { echo "usage: $0 <path to a supabase-js checkout (monorepo)>" >&2; exit 2; }
[ $# -eq 1 ] || usage
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/suite-lib.sh"
CHECKOUT=$(cd "$1" && pwd)
SUITE="$CHECKOUT/packages/core/postgrest-js"
# Older layouts kept the client at the top level of its own repository.
[ -d "$SUITE/test" ] || SUITE="$CHECKOUT"
PROJECT="$SUITE/test/supabase"
for f in "$SUITE/package.json" "$PROJECT/seed.sql"; do
  [ -f "$f" ] || { echo "$0: $f not found: not a supabase-js checkout with the postgrest-js suite" >&2; exit 2; }
done
MADBASE_BIN=${MADBASE_BIN:-$ROOT/target/debug/madbase}
[ -x "$MADBASE_BIN" ] || { echo "$0: $MADBASE_BIN missing: cargo build -p madbase (or set MADBASE_BIN)" >&2; exit 2; }
PSQL=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | tail -1 || true)
[ -n "$PSQL" ] || { echo "$0: psql not found" >&2; exit 2; }
OUT=${OUT:-$(mktemp -d /tmp/postgrest-js-suite.XXXXXX)}
mkdir -p "$OUT"
PORT=54321 # the suite's URL, hard-coded in its test files

# 1. Packages.
suite_install "$CHECKOUT" "$OUT"

# 2. A fresh MadBase on the suite's port (started in $OUT: no Supabase project there).
suite_start_madbase "$PORT" "$OUT" postgrest-js-suite-data "$OUT" \
  MADBASE_DB_SCHEMAS="public,personal,graphql_public" MADBASE_DB_MAX_ROWS=1000
DB_URL=$("$ROOT/scripts/madbase-db-url.py" "$OUT/madbase.out" || true)
[ -n "$DB_URL" ] || { echo "$0: no database URL in MadBase's output ($OUT/madbase.out)" >&2; exit 1; }

# 3. The suite's schema and seed, as `supabase db reset` applies them.
echo "== applying the suite's migrations and seed"
for sql in "$PROJECT"/migrations/*.sql "$PROJECT/seed.sql"; do
  "$PSQL" "$DB_URL" -q -v ON_ERROR_STOP=1 -f "$sql" >>"$OUT/fixtures.log" 2>&1 \
    || { tail -20 "$OUT/fixtures.log"; echo "$0: $sql failed (PostGIS installed?)" >&2; exit 1; }
done
# The schema cache reloads on DDL; ask once more and give it a moment, as the CLI's `sleep`.
"$PSQL" "$DB_URL" -q -c "notify pgrst, 'reload schema'" >/dev/null
sleep 2

# 4. The suite.
echo "== running jest (results in $OUT/jest.json)"
set +e
(cd "$SUITE" && npx jest --runInBand --ci --testPathIgnorePatterns='test/v12/' \
  --json --outputFile="$OUT/jest.json" >"$OUT/jest.log" 2>&1)
status=$?
set -e

# 5. The count.
if [ ! -s "$OUT/jest.json" ]; then
  tail -30 "$OUT/jest.log"
  echo "$0: jest wrote no results (log: $OUT/jest.log)" >&2
  exit 1
fi
node -e '
  const r = require(process.argv[1]);
  const s = r.snapshot || {};
  console.log(`postgrest-js live suite: ${r.numPassedTests}/${r.numTotalTests} tests passed, ` +
    `${r.numFailedTests} failed, ${r.numPendingTests} skipped; suites ${r.numPassedTestSuites}/${r.numTotalTestSuites}; ` +
    `snapshots ${s.matched ?? 0}/${s.total ?? 0} matched, ${s.unmatched ?? 0} unmatched`);
  for (const suite of r.testResults)
    for (const t of suite.assertionResults)
      if (t.status === "failed") console.log(`  FAIL ${suite.name.split("/test/").pop()}: ${t.fullName}`);
' "$OUT/jest.json"
echo "(MadBase output: $OUT/madbase.out, jest output: $OUT/jest.log)"
exit $status
