#!/usr/bin/env bash
# The main job: `bash scripts/main.sh`. Builds everything, then runs the empf-core demo: the bench
# network encoded, calibrated for the integer path, and run float / integer / dense.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
echo "[main] cargo build --workspace --release"
cargo build --workspace --release
echo "[main] empf-core demo and benchmark"
cargo run --release -p empf-core --features std --example bench
