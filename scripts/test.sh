#!/usr/bin/env bash
# The one command that runs every check CI runs: `bash scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec cargo xtask ci
