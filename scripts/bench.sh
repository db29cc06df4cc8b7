#!/usr/bin/env bash
# The full benchmark suite, by hand (not part of CI): installs the peers, builds release
# binaries, runs every scenario and writes the JSON results to bench/results/.
# Extra arguments go to tributary-bench (e.g. --rounds 3, --scenarios s1,s2, --s3 1000@20).
# Everything talks to 127.0.0.1 only; each run is bounded in time and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bench-peers.sh
cargo build --release --locked -p tributary -p tributary-bench
target="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
"$target/release/tributary-bench" --tributary-bin "$target/release/tributary" \
  --out bench/results "$@"
