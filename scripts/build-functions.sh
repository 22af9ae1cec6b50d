#!/usr/bin/env bash
# Builds the test and example Edge Functions of functions/guests/ into WebAssembly components
# (wasi:http/proxy) at target/wasm-functions/<name>.wasm, and prints their sizes:
#   - the Rust guests (a cargo workspace of its own: functions/guests/Cargo.toml), release, for
#     wasm32-wasip2, each <crate>.wasm;
#   - the JavaScript guest functions/guests/js/hello.js, with `jco componentize`, as hello-js.wasm;
#   - the Python guest functions/guests/python/hello.py, with componentize-py, as hello-py.wasm.
# Idempotent, from a fresh clone: installs what it needs (the rustup target wasm32-wasip2, the npm
# packages of functions/guests/js with `npm ci`, componentize-py from PyPI in a venv under
# functions/guests/target) and rebuilds only what changed (cargo tracks the Rust guests; the
# JavaScript and Python ones are rebuilt when a source is newer than their component).
# CARGO_BUILD_JOBS limits cargo's parallel jobs as usual.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
GUESTS="$ROOT/functions/guests"
OUT="$ROOT/target/wasm-functions"
mkdir -p "$OUT"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Rust guests. The wasm32-wasip2 standard library comes from rustup's distribution server, which
# is not one of the package registries every machine reaches: where the target is not installed
# and cannot be fetched, the Rust guests are not built and $OUT/NO_WASM32_WASIP2 says so; the
# end-to-end tests that need them are then skipped with that reason (any other failure fails).
rm -f "$OUT/NO_WASM32_WASIP2"
if command -v rustup >/dev/null 2>&1; then rustup target add wasm32-wasip2 >&2 || true; fi
if rustc --print sysroot >/dev/null 2>&1 && [ -d "$(rustc --print sysroot)/lib/rustlib/wasm32-wasip2" ]; then
  echo "== Rust guests (functions/guests, wasm32-wasip2, release)" >&2
  cargo build --manifest-path "$GUESTS/Cargo.toml" --target-dir "$GUESTS/target" --locked \
    --release --target wasm32-wasip2
  for crate in $(sed -n 's/^members = \[\(.*\)\]/\1/p' "$GUESTS/Cargo.toml" | tr -d '",'); do
    wasm="$GUESTS/target/wasm32-wasip2/release/$crate.wasm"
    cmp -s "$wasm" "$OUT/$crate.wasm" || cp "$wasm" "$OUT/$crate.wasm"
  done
else
  echo "== NOT building the Rust guests: the wasm32-wasip2 target is not installed and rustup could not fetch it" >&2
  echo "the wasm32-wasip2 target is not installed and rustup could not fetch it" >"$OUT/NO_WASM32_WASIP2"
fi

# JavaScript guest.
JS="$GUESTS/js"
if ! command -v npm >/dev/null 2>&1; then
  echo "== installing Node.js (Debian packages nodejs, npm)" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! "$JS/node_modules/.package-lock.json" -nt "$JS/package-lock.json" ]; then
  echo "== npm ci (functions/guests/js)" >&2
  (cd "$JS" && npm ci --no-audit --no-fund >&2)
fi
if [ ! -f "$OUT/hello-js.wasm" ] ||
  [ -n "$(find "$JS/hello.js" "$JS/wit" "$JS/package-lock.json" -newer "$OUT/hello-js.wasm" | head -1)" ]; then
  echo "== jco componentize hello.js" >&2
  # jco reads the WIT through its WASI sandbox: relative paths, from the js directory.
  (cd "$JS" && node_modules/.bin/jco componentize hello.js --wit wit --world-name hello \
    -o "$OUT/hello-js.wasm.tmp" >&2)
  mv "$OUT/hello-js.wasm.tmp" "$OUT/hello-js.wasm"
fi

# Python guest (same wasi:http/proxy@0.2.10 world as the JavaScript one).
PY="$GUESTS/python"
VENV="$GUESTS/target/componentize-py"
COMPONENTIZE_PY=componentize-py==0.25.1
if [ "$("$VENV/bin/componentize-py" --version 2>/dev/null)" != "${COMPONENTIZE_PY/==/ }" ]; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "== installing Python venv support (Debian packages python3, python3-venv)" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  echo "== $COMPONENTIZE_PY (PyPI) into functions/guests/target/componentize-py" >&2
  rm -rf "$VENV" && python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "$COMPONENTIZE_PY" >&2
fi
if [ ! -f "$OUT/hello-py.wasm" ] ||
  [ -n "$(find "$PY/hello.py" "$JS/wit" -newer "$OUT/hello-py.wasm" | head -1)" ] ||
  [ "$VENV/bin/componentize-py" -nt "$OUT/hello-py.wasm" ]; then
  echo "== componentize-py hello.py" >&2
  # From a copy, so that the build leaves no __pycache__ in the source tree.
  rm -rf "$GUESTS/target/python-src" && mkdir -p "$GUESTS/target/python-src" && cp "$PY/hello.py" "$GUESTS/target/python-src/"
  "$VENV/bin/componentize-py" -d "$JS/wit" -w hello componentize -p "$GUESTS/target/python-src" hello \
    -o "$OUT/hello-py.wasm.tmp" >&2
  mv "$OUT/hello-py.wasm.tmp" "$OUT/hello-py.wasm"
fi

echo "== components in target/wasm-functions" >&2
for f in "$OUT"/*.wasm; do printf '%10d  %s\n' "$(wc -c <"$f")" "target/wasm-functions/$(basename "$f")"; done
