#!/usr/bin/env bash
# The one command that runs every check CI runs: `bash scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The QEMU board test and the ONNX Runtime tests must run here, not skip (setup.sh installs
# qemu-system-arm and the onnxruntime wheel); a missing part fails CI instead of passing quietly.
export EMPF_REQUIRE_QEMU=1 EMPF_REQUIRE_ORT=1
# setup.sh waits for another apt/dpkg instead of failing at once: checked against real apt locks.
EMPF_REQUIRE_APT_TEST=1 bash scripts/tests/apt_lock_wait.sh
exec cargo xtask ci
