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
