#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then runs them.
# This is the README's test command and what .ci/run calls after the lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# Browser tests drive Debian's Chromium with playwright-core (never a downloaded browser).
if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium (Debian package) for the browser tests"
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_ apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq chromium >/dev/null; }
fi
(cd tests/browser && npm install --ignore-scripts --no-audit --no-fund --loglevel=error)

# The tests start the real `tributary` binary, so build it (and everything else) first;
# cargo test then reuses the build.
cargo build --workspace --all-targets --locked

# Property tests run 256 cases by default; PROPTEST_CASES overrides.
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"

# Real LiveStore 0.4.0 clients (npm packages pinned by the committed lockfile) syncing
# through the binary built above. `npm install` with the lockfile rather than `npm ci`,
# which npm 11 refuses for this lockfile over optional platform packages. Node 20 needs
# --experimental-websocket for the WebSocket transport; each test bounds its own time.
(
  cd tests/livestore
  npm install --ignore-scripts --no-audit --no-fund --loglevel=error
  node --experimental-websocket --test --test-concurrency=1 --test-timeout=60000 \
    --test-reporter=spec sync.test.js
)

# A real browser following the real server (node's test runner prints the summary).
bin="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug/tributary"
(cd tests/browser && TRIBUTARY_BIN="$bin" node --test)
