#!/usr/bin/env bash
# Cargo runner: boots the firmware on QEMU's lm3s6965evb (or EMPF_QEMU_MACHINE=mps2-an385, with
# EMPF_BOARD_MEMORY=memory-mps2-an385.x at build time) and decodes its defmt frames with the
# repository's host tool. Exit status = the firmware's semihosting exit code.
set -euo pipefail
elf=$(realpath "$1")
cd "$(dirname "$0")/../.."
exec cargo run -q --release -p xtask -- qemu-run --machine "${EMPF_QEMU_MACHINE:-lm3s6965evb}" "$elf"
