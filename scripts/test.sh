#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then runs them.
# This is the README's test command and what .ci/run calls after the lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."

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
