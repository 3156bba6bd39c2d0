#!/usr/bin/env bash
# The one command that runs every check CI runs: `bash scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The QEMU board test must run here, not skip (setup.sh installs qemu-system-arm).
export EMPF_REQUIRE_QEMU=1
exec cargo xtask ci
