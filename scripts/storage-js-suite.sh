#!/usr/bin/env bash
# The storage-js live suite against a fresh MadBase, reproducibly:
#
#   scripts/storage-js-suite.sh <supabase-js checkout> [jest arguments, e.g. test file paths]
#
# The suite is supabase/supabase-js's packages/core/storage-js/test: jest files that call
# http://127.0.0.1:54321/storage/v1 (hard-coded) with only `Authorization: Bearer <service_role
# key>` (HS256, signed with the CLI's demo secret), normally served by `supabase start` and
# `supabase db reset` on the Supabase CLI project in test/supabase (config.toml: API schemas public
# and graphql_public, max_rows 1000, storage file_size_limit 50MiB, anonymous sign-ins on, TOTP
# off; no migrations; seed.sql: three auth.users, buckets bucket2…bucket5 and bucket-move, ~20
# storage.objects rows and RLS policies using auth.uid(), auth.role(), storage.foldername()).
# This script does what the CLI would, with MadBase:
#
#   1. installs the monorepo's packages (pnpm 10 through npx, or $PNPM; skip with SKIP_INSTALL=1);
#   2. starts MadBase ($MADBASE_BIN, default target/debug/madbase) with its managed PostgreSQL in
#      a temporary data directory, on 127.0.0.1:54321, with the CLI project's settings as
#      MADBASE_* variables (started in $OUT: no Supabase project there);
#   3. applies test/supabase/migrations/*.sql (none today) in order and seed.sql with psql;
#   4. runs jest as the project's `test:suite` target does (`jest --runInBand`, jest.config.js:
#      ts-jest on tsconfig.test.json), with --ci so that snapshots are compared, never written,
#      and without coverage, on these files (or on the jest arguments given instead):
#        live, against MadBase: storageApi (buckets, with the snapshot),
#          storageBucketApi (one test live: no Authorization → "Invalid Compact JWS"; the rest
#          mock fetch), storageFileApi (objects; its later describe blocks mock fetch),
#          storageFileApiNode (stream uploads);
#        no server (USE_MOCK_SERVER unset: an in-process mock of the vectors API, or no requests):
#          bucket-api.spec, index-api.spec, vector-data-api.spec, e2e-workflow.spec (vectors),
#          analytics-getcatalog (Iceberg catalog client);
#      the pure unit files (common/, downloadBuilders, exports, list-sortby-defaults,
#      storageFileApiErrorHandling) are left out;
#   5. prints the pass/fail/skip counts per file and in all, and each failed test with the first
#      line of its message (and the Expected/Received lines), stops MadBase and removes the data.
#
# Exit status: jest's (0 when every test passed). Output of MadBase and jest goes to $OUT
# (default a temporary directory, printed); $OUT/jest.json has jest's results, $OUT/failures.txt
# each failure's whole message.
set -euo pipefail

usage() { echo "usage: $0 <path to a supabase-js checkout (monorepo)> [jest arguments]" >&2; exit 2; }
[ $# -ge 1 ] || usage
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/suite-lib.sh"
[ -d "$1" ] || usage
CHECKOUT=$(cd "$1" && pwd)
shift
SUITE="$CHECKOUT/packages/core/storage-js"
# Older layouts kept the client at the top level of its own repository (supabase/storage-js).
[ -d "$SUITE/test" ] || SUITE="$CHECKOUT"
PROJECT="$SUITE/test/supabase"
for f in "$SUITE/package.json" "$SUITE/jest.config.js" "$PROJECT/config.toml" "$PROJECT/seed.sql" "$SUITE/test/storageApi.test.ts"; do
  [ -f "$f" ] || { echo "$0: $f not found: not a supabase-js checkout with the storage-js suite" >&2; exit 2; }
done
MADBASE_BIN=${MADBASE_BIN:-$ROOT/target/debug/madbase}
[ -x "$MADBASE_BIN" ] || { echo "$0: $MADBASE_BIN missing: cargo build -p madbase (or set MADBASE_BIN)" >&2; exit 2; }
command -v node >/dev/null || { echo "$0: node not found" >&2; exit 2; }
PSQL=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | tail -1 || true)
[ -n "$PSQL" ] || { echo "$0: psql not found" >&2; exit 2; }
OUT=${OUT:-$(mktemp -d /tmp/storage-js-suite.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PORT=54321 # the suite's URL, hard-coded in its test files

# The files that talk to the server, and those that need none (see the header).
if [ $# -eq 0 ]; then
  set -- test/storageApi.test.ts test/storageBucketApi.test.ts test/storageFileApi.test.ts \
    test/storageFileApiNode.test.ts test/bucket-api.spec.ts test/index-api.spec.ts \
    test/vector-data-api.spec.ts test/e2e-workflow.spec.ts test/analytics-getcatalog.test.ts
fi

# 1. Packages.
suite_install "$CHECKOUT" "$OUT"
[ -d "$SUITE/node_modules/jest" ] || { echo "$0: $SUITE/node_modules/jest missing: install the packages (without SKIP_INSTALL)" >&2; exit 2; }

# 2. A fresh MadBase on the suite's port with test/supabase/config.toml's settings. The suite's
# keys are signed with the CLI's demo secret, MadBase's default too; named here all the same.
suite_start_madbase "$PORT" "$OUT" storage-js-suite-data "$OUT" \
  MADBASE_AUTH_JWT_SECRET=super-secret-jwt-token-with-at-least-32-characters-long \
  MADBASE_API_SCHEMAS="public,graphql_public" MADBASE_API_EXTRA_SEARCH_PATH="public,extensions" \
  MADBASE_API_MAX_ROWS=1000 \
  MADBASE_STORAGE_ENABLED=true MADBASE_STORAGE_FILE_SIZE_LIMIT=50MiB \
  MADBASE_AUTH_SITE_URL=http://127.0.0.1:3000 MADBASE_AUTH_ADDITIONAL_REDIRECT_URLS=https://127.0.0.1:3000 \
  MADBASE_AUTH_ENABLE_ANONYMOUS_SIGN_INS=true \
  MADBASE_AUTH_MFA_TOTP_ENROLL_ENABLED=false MADBASE_AUTH_MFA_TOTP_VERIFY_ENABLED=false
DB_URL=$("$ROOT/scripts/madbase-db-url.py" "$OUT/madbase.out" || true)
[ -n "$DB_URL" ] || { echo "$0: no database URL in MadBase's output ($OUT/madbase.out)" >&2; exit 1; }
# The suite's service_role key must verify: GET /bucket answers 200.
KEY=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6MTk4MzgxMjk5Nn0.EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU
curl -fs "http://127.0.0.1:$PORT/storage/v1/bucket" -H "Authorization: Bearer $KEY" >/dev/null \
  || echo "   warning: GET /storage/v1/bucket with the suite's service_role key failed" >&2

# 3. The suite's schema and seed, as `supabase db reset` applies them.
echo "== applying the suite's migrations and seed"
shopt -s nullglob
for sql in "$PROJECT"/migrations/*.sql "$PROJECT/seed.sql"; do
  "$PSQL" "$DB_URL" -q -v ON_ERROR_STOP=1 -f "$sql" >>"$OUT/fixtures.log" 2>&1 \
    || { tail -20 "$OUT/fixtures.log"; echo "$0: $sql failed (log: $OUT/fixtures.log)" >&2; exit 1; }
done
shopt -u nullglob

# 4. The suite.
echo "== running jest (results in $OUT/jest.json)"
set +e
(cd "$SUITE" && env -u USE_MOCK_SERVER npx jest --runInBand --ci --coverage=false \
  --json --outputFile="$OUT/jest.json" "$@" >"$OUT/jest.log" 2>&1)
status=$?
set -e

# 5. The count.
if [ ! -s "$OUT/jest.json" ]; then
  tail -30 "$OUT/jest.log"
  echo "$0: jest wrote no results (log: $OUT/jest.log)" >&2
  exit 1
fi
node -e '
  const fs = require("fs");
  const r = require(process.argv[1]);
  const rel = (name) => name.split("/storage-js/").pop();
  const plain = (s) => s.replace(/\x1b\[[0-9;]*m/g, "");
  // The first line of a message, then its Expected/Received lines (or a snapshot diff), short.
  const brief = (msg) => {
    const lines = plain(msg).split("\n").map((l) => l.trimEnd());
    const first = (lines.find((l) => l.trim()) || "").trim();
    const stop = lines.findIndex((l) => /^\s+at /.test(l));
    const body = lines.slice(1, stop < 0 ? undefined : stop);
    let more = body.filter((l) => /^\s*(Expected|Received)( value| length| message|:)/.test(l) || /^\s*(Expected|Received) .*:/.test(l));
    if (!more.length) more = body.filter((l) => /^\s*[-+] {1,3}\S/.test(l) && !/^\s*[-+] (Snapshot|Received)\s+[-+] \d/.test(l));
    return [first, ...more.slice(0, 8).map((l) => "      " + l.trim().slice(0, 200))].join("\n");
  };
  const rows = [];
  let failures = "", failed = "";
  for (const suite of [...r.testResults].sort((a, b) => a.name.localeCompare(b.name))) {
    const n = { passed: 0, failed: 0, pending: 0, todo: 0 };
    for (const t of suite.assertionResults) n[t.status] = (n[t.status] || 0) + 1;
    const broken = suite.status === "failed" && suite.assertionResults.length === 0;
    rows.push(`  ${rel(suite.name).padEnd(40)} ${String(n.passed).padStart(4)} passed ${String(n.failed).padStart(4)} failed ` +
      `${String(n.pending + n.todo).padStart(4)} skipped` + (broken ? "  (suite failed to run)" : ""));
    if (broken) {
      failures += `### ${rel(suite.name)} (suite)\n${plain(suite.message)}\n\n`;
      failed += `  FAIL ${rel(suite.name)} (suite failed to run): ${brief(suite.message)}\n`;
    }
    for (const t of suite.assertionResults)
      if (t.status === "failed") {
        failures += `### ${rel(suite.name)}: ${t.fullName}\n${plain(t.failureMessages.join("\n"))}\n\n`;
        failed += `  FAIL ${rel(suite.name)}: ${t.fullName}\n    ${brief(t.failureMessages.join("\n"))}\n`;
      }
  }
  fs.writeFileSync(process.argv[2], failures);
  const s = r.snapshot || {};
  console.log(`storage-js live suite: ${r.numPassedTests}/${r.numTotalTests} tests passed, ${r.numFailedTests} failed, ` +
    `${r.numPendingTests + (r.numTodoTests || 0)} skipped; suites ${r.numPassedTestSuites}/${r.numTotalTestSuites} passed` +
    (r.numRuntimeErrorTestSuites ? `, ${r.numRuntimeErrorTestSuites} failed to run` : "") +
    `; snapshots ${s.matched ?? 0}/${s.total ?? 0} matched, ${s.unmatched ?? 0} unmatched`);
  console.log(rows.join("\n"));
  process.stdout.write(failed);
' "$OUT/jest.json" "$OUT/failures.txt"
echo "(MadBase output: $OUT/madbase.out, seed: $OUT/fixtures.log, jest output: $OUT/jest.log, failure messages: $OUT/failures.txt)"
exit $status
