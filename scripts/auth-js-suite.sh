#!/usr/bin/env bash
# The auth-js live suite against a fresh MadBase, reproducibly:
#
#   scripts/auth-js-suite.sh <supabase-js checkout> [extra jest arguments, e.g. test file paths]
#
# The suite is supabase/supabase-js's packages/core/auth-js/test: jest files that call
# http://127.0.0.1:54321/auth/v1 (hard-coded in test/lib/clients.ts), normally served by
# `supabase start --workdir test` on the Supabase CLI project in test/supabase (its config.toml:
# auto-confirm, anonymous sign-ins, MFA, passkeys, OAuth server, Google, high rate limits; the
# test helpers sign their API keys with the RSA key in test/supabase/signing_keys.json). This
# script does what the CLI would, with MadBase:
#
#   1. installs the monorepo's packages (pnpm 10 through npx, or $PNPM; skip with SKIP_INSTALL=1);
#   2. generates the signing keys (test/generate-signing-keys.js, as `test:generate-keys` does);
#   3. starts MadBase ($MADBASE_BIN, default target/debug/madbase) with its managed PostgreSQL in
#      a temporary data directory, on 127.0.0.1:54321, in test/ so that it reads the suite's own
#      supabase/config.toml (signing_keys_path resolves against supabase/); the keys MadBase does
#      not serve are printed;
#   4. runs jest as the project's `test:suite` target does (jest.config.cli.js: every test file
#      but docker-tests/, in band), with --ci and without coverage;
#   5. prints the pass/fail/skip counts per file and in all, and each failed test, stops MadBase
#      and removes the data.
#
# Exit status: jest's (0 when every test passed). Output of MadBase and jest goes to $OUT
# (default a temporary directory, printed); $OUT/jest.json has jest's results, $OUT/failures.txt
# each failure's message.
set -euo pipefail

usage() { echo "usage: $0 <path to a supabase-js checkout (monorepo)> [jest arguments]" >&2; exit 2; }
[ $# -ge 1 ] || usage
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/suite-lib.sh"
[ -d "$1" ] || usage
CHECKOUT=$(cd "$1" && pwd)
shift
SUITE="$CHECKOUT/packages/core/auth-js"
# Older layouts kept the client at the top level of its own repository (supabase/auth-js).
[ -d "$SUITE/test" ] || SUITE="$CHECKOUT"
PROJECT="$SUITE/test/supabase"
for f in "$SUITE/package.json" "$SUITE/jest.config.cli.js" "$PROJECT/config.toml" "$SUITE/test/generate-signing-keys.js"; do
  [ -f "$f" ] || { echo "$0: $f not found: not a supabase-js checkout with the auth-js suite" >&2; exit 2; }
done
MADBASE_BIN=${MADBASE_BIN:-$ROOT/target/debug/madbase}
[ -x "$MADBASE_BIN" ] || { echo "$0: $MADBASE_BIN missing: cargo build -p madbase (or set MADBASE_BIN)" >&2; exit 2; }
command -v node >/dev/null || { echo "$0: node not found" >&2; exit 2; }
OUT=${OUT:-$(mktemp -d /tmp/auth-js-suite.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PORT=54321 # the suite's URL, hard-coded in its test files

# 1. Packages.
suite_install "$CHECKOUT" "$OUT"
[ -d "$SUITE/node_modules/jest" ] || { echo "$0: $SUITE/node_modules/jest missing: install the packages (without SKIP_INSTALL)" >&2; exit 2; }

# 2. Signing keys: a fresh RSA key each run (git-ignored in the checkout). The test helpers sign
# the publishable, secret and admin keys with it; MadBase reads it through signing_keys_path.
echo "== generating the signing keys ($PROJECT/signing_keys.json)"
(cd "$SUITE" && node test/generate-signing-keys.js >"$OUT/keys.log" 2>&1) \
  || { cat "$OUT/keys.log"; echo "$0: test/generate-signing-keys.js failed" >&2; exit 1; }

# 3. A fresh MadBase on the suite's port, started in test/ so it reads the suite's config.toml.
suite_start_madbase "$PORT" "$SUITE/test" auth-js-suite-data "$OUT"
# What of the suite's configuration MadBase says it does not serve (settings, env() values).
grep -E 'does not serve|is not set' "$OUT/madbase.out" \
  | sed -E 's/\x1b\[[0-9;]*m//g; s/^.* (WARN|INFO) [^ ]+: //; s/^/   MadBase: /' || true
# The suite's keys must verify: GET /settings with the RS256 publishable key.
if ! curl -fs "http://127.0.0.1:$PORT/auth/v1/settings" >/dev/null \
    -H "apikey: $(cd "$SUITE" && node -e '
      const k = require("./test/supabase/signing_keys.json")[0], c = require("crypto"), b = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
      const h = b({alg: "RS256", typ: "JWT", kid: k.kid}) + "." + b({iss: "supabase-demo", role: "anon", exp: 1983812996});
      console.log(h + "." + c.sign("sha256", Buffer.from(h), c.createPrivateKey({key: k, format: "jwk"})).toString("base64url"));')"; then
  echo "   warning: GET /auth/v1/settings with the suite's RS256 publishable key failed: the suite's keys may not be in use" >&2
fi

# 4. The suite.
echo "== running jest (results in $OUT/jest.json)"
set +e
(cd "$SUITE" && npx jest --config jest.config.cli.js --runInBand --ci --coverage=false \
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
  const rel = (name) => name.split("/auth-js/").pop();
  const rows = [];
  let failures = "";
  for (const suite of [...r.testResults].sort((a, b) => a.name.localeCompare(b.name))) {
    const n = { passed: 0, failed: 0, pending: 0, todo: 0 };
    for (const t of suite.assertionResults) n[t.status] = (n[t.status] || 0) + 1;
    const broken = suite.status === "failed" && suite.assertionResults.length === 0;
    rows.push(`  ${rel(suite.name).padEnd(48)} ${String(n.passed).padStart(4)} passed ${String(n.failed).padStart(4)} failed ` +
      `${String(n.pending + n.todo).padStart(4)} skipped` + (broken ? "  (suite failed to run)" : ""));
    if (broken) failures += `### ${rel(suite.name)} (suite)\n${suite.message}\n\n`;
    for (const t of suite.assertionResults)
      if (t.status === "failed") failures += `### ${rel(suite.name)}: ${t.fullName}\n${t.failureMessages.join("\n")}\n\n`;
  }
  fs.writeFileSync(process.argv[2], failures);
  console.log(`auth-js live suite: ${r.numPassedTests}/${r.numTotalTests} tests passed, ${r.numFailedTests} failed, ` +
    `${r.numPendingTests + (r.numTodoTests || 0)} skipped; suites ${r.numPassedTestSuites}/${r.numTotalTestSuites} passed` +
    (r.numRuntimeErrorTestSuites ? `, ${r.numRuntimeErrorTestSuites} failed to run` : ""));
  console.log(rows.join("\n"));
  for (const suite of r.testResults)
    for (const t of suite.assertionResults)
      if (t.status === "failed") console.log(`  FAIL ${rel(suite.name)}: ${t.fullName}`);
' "$OUT/jest.json" "$OUT/failures.txt"
echo "(MadBase output: $OUT/madbase.out, jest output: $OUT/jest.log, failure messages: $OUT/failures.txt)"
exit $status
