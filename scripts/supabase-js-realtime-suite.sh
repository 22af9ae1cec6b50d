#!/usr/bin/env bash
# The Realtime part of supabase-js's own integration suite against a fresh MadBase, reproducibly:
#
#   scripts/supabase-js-realtime-suite.sh <supabase-js checkout> [jest -t pattern, default "Realtime"]
#
# realtime-js's own tests run against a mocked socket only; the live ones are in
# packages/core/supabase-js/test/integration.test.ts (`describe.each` over vsn 1.0.0 and 2.0.0:
# broadcast round trips, sockets that disconnect when the last channel goes, httpSend to public and
# private channels, binary httpSend; a custom HS256 JWT), written for `supabase start` on the
# package's supabase/ project at http://127.0.0.1:54321. This script does what the CLI would:
#
#   1. installs the monorepo's packages (pnpm 10 through npx, or $PNPM; skip with SKIP_INSTALL=1)
#      and builds the packages supabase-js's sources import (shared/tracing, core/*-js);
#   2. copies the package's supabase/ project (config.toml, migrations — including the
#      realtime_rls_setup fixture policies) to a temporary directory, leaving out the migrations
#      that need Storage until MadBase serves it;
#   3. starts MadBase ($MADBASE_BIN, default target/debug/madbase) there on 127.0.0.1:54321;
#   4. runs jest on the file with `-t Realtime` under Node 22 (the suite needs a native
#      WebSocket for the clients it builds without a transport; Node 22 comes from npm's `node`
#      package when the machine's node is older);
#   5. prints the counts and each failure, stops MadBase and removes the data.
#
# Exit status: jest's. Output goes to $OUT (default a temporary directory, printed).
set -euo pipefail

usage() { echo "usage: $0 <path to a supabase-js checkout (monorepo)> [jest -t pattern]" >&2; exit 2; }
[ $# -ge 1 ] || usage
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/suite-lib.sh"
[ -d "$1" ] || usage
CHECKOUT=$(cd "$1" && pwd)
PATTERN=${2:-Realtime}
SUITE="$CHECKOUT/packages/core/supabase-js"
for f in "$SUITE/test/integration.test.ts" "$SUITE/supabase/config.toml" "$CHECKOUT/packages/shared/tracing/package.json"; do
  [ -f "$f" ] || { echo "$0: $f not found: not a supabase-js monorepo checkout" >&2; exit 2; }
done
MADBASE_BIN=${MADBASE_BIN:-$ROOT/target/debug/madbase}
[ -x "$MADBASE_BIN" ] || { echo "$0: $MADBASE_BIN missing: cargo build -p madbase (or set MADBASE_BIN)" >&2; exit 2; }
command -v node >/dev/null || { echo "$0: node not found" >&2; exit 2; }
OUT=${OUT:-$(mktemp -d /tmp/supabase-js-realtime-suite.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PORT=54321 # the suite's URL, hard-coded in the test file

# 1. Packages, and the builds supabase-js's sources resolve through package.json "main".
suite_install "$CHECKOUT" "$OUT"
for pkg in shared/tracing core/realtime-js core/auth-js core/postgrest-js core/storage-js core/functions-js; do
  echo "== building packages/$pkg"
  (cd "$CHECKOUT/packages/$pkg" && npm run build >"$OUT/build-${pkg//\//-}.log" 2>&1) \
    || { tail -20 "$OUT/build-${pkg//\//-}.log"; echo "$0: building packages/$pkg failed" >&2; exit 1; }
done
NODE22_BIN=$(node -e 'process.exit(+process.versions.node.split(".")[0] >= 22 ? 0 : 1)' && dirname "$(command -v node)" \
  || dirname "$(npx -y -p node@22 which node)")
echo "== node $("$NODE22_BIN/node" --version) from $NODE22_BIN"

# 2. The project, without what needs Storage.
PROJECT=$(mktemp -d /tmp/supabase-js-realtime-project.XXXXXX)
mkdir -p "$PROJECT/supabase/migrations"
cp "$SUITE/supabase/config.toml" "$PROJECT/supabase/"
for m in "$SUITE"/supabase/migrations/*.sql; do
  if grep -q 'storage\.' "$m"; then echo "   leaving out $(basename "$m") (needs Storage)"; continue; fi
  cp "$m" "$PROJECT/supabase/migrations/"
done

# 3. MadBase on the suite's port, in the project copy.
suite_start_madbase "$PORT" "$PROJECT" supabase-js-realtime-data "$OUT"
trap 'suite_cleanup; rm -rf "$PROJECT"' EXIT

# 4. The suite.
echo "== running jest -t \"$PATTERN\" (results in $OUT/jest.json)"
set +e
(cd "$SUITE" && PATH="$NODE22_BIN:$PATH" npx jest --runInBand --ci --coverage=false --json \
  --outputFile="$OUT/jest.json" test/integration.test.ts -t "$PATTERN" >"$OUT/jest.log" 2>&1)
status=$?
set -e

# 5. The count.
[ -s "$OUT/jest.json" ] || { tail -30 "$OUT/jest.log"; echo "$0: jest wrote no results (log: $OUT/jest.log)" >&2; exit 1; }
node -e '
  const r = require(process.argv[1]);
  const run = r.numPassedTests + r.numFailedTests;
  console.log(`supabase-js integration suite (-t ${process.argv[2]}): ${r.numPassedTests}/${run} tests passed, ${r.numFailedTests} failed (${r.numPendingTests} other tests not selected)`);
  for (const suite of r.testResults)
    for (const t of suite.assertionResults)
      if (t.status === "failed") console.log(`  FAIL ${t.fullName}\n    ${t.failureMessages.join("\n").split("\n")[0]}`);
' "$OUT/jest.json" "$PATTERN"
echo "(MadBase output: $OUT/madbase.out, jest output: $OUT/jest.log)"
exit $status
