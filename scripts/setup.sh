#!/usr/bin/env bash
# Installs what empf's commands need on a fresh Debian machine with rustup, and says what it did.
# Sourced by scripts/main.sh and scripts/test.sh. Idempotent: installed things are skipped.
set -euo pipefail

say() { echo "[setup] $*"; }
# shellcheck source=scripts/apt-wait.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt-wait.sh"

if ! command -v cargo >/dev/null 2>&1; then
  echo "[setup] cargo not found: install Rust with rustup first (https://rustup.rs)" >&2
  exit 1
fi

# Rust targets for the no_std builds of empf-core and the firmware (thumbv8m.main: the
# Cortex-M33 that `cargo xtask mcu-bench` measures).
for target in thumbv6m-none-eabi thumbv7m-none-eabi thumbv7em-none-eabihf thumbv8m.main-none-eabihf; do
  if rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    :
  else
    say "rustup target add $target"
    rustup target add "$target" >/dev/null
  fi
done
for comp in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$comp"; then
    say "rustup component add $comp"
    rustup component add "$comp" >/dev/null
  fi
done

# Debian packages: the real Fashion-MNIST files, and a font for plots.
apt_pkgs=()
dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || apt_pkgs+=(dataset-fashion-mnist)
# DejaVu for the text of the training-curve PNG (without it the plot has curves but no labels).
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || apt_pkgs+=(fonts-dejavu-core)
# QEMU for the Cortex-M3 board test (boards/qemu-lm3s6965 on the lm3s6965evb machine).
command -v qemu-system-arm >/dev/null 2>&1 || apt_pkgs+=(qemu-system-arm)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "apt-get install ${apt_pkgs[*]} (waits up to ${EMPF_APT_LOCK_WAIT_S} s for another apt/dpkg to finish)"
    apt_get_waiting update -qq >/dev/null
    apt_get_waiting install -y -qq "${apt_pkgs[@]}" >/dev/null
  else
    say "missing Debian packages ${apt_pkgs[*]} (need root and apt-get); tests that need them will say 'skipped' (or fail where EMPF_REQUIRE_* is set)"
  fi
fi
# Python venv for the ONNX path: onnxruntime (its libonnxruntime.so is what `ort` loads at run
# time) and onnx (the model checker used by tests/tests/ort_vs_core.rs).
if ! compgen -G ".venv/lib/python3*/site-packages/onnxruntime" >/dev/null; then
  if command -v python3 >/dev/null 2>&1; then
    say "python3 -m venv .venv && pip install onnxruntime==1.31.1 onnx==1.23.2 numpy"
    if ! { python3 -m venv .venv && .venv/bin/pip install -q onnxruntime==1.31.1 onnx==1.23.2 numpy; }; then
      say "could not set up .venv; ONNX Runtime tests will say 'skipped'"
    fi
  else
    say "python3 not found; ONNX Runtime tests will say 'skipped'"
  fi
fi
ort_lib=""
for f in .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1; do
  if [ -f "$f" ]; then ort_lib="$PWD/$f"; fi
done
if [ -n "$ort_lib" ]; then
  export ORT_DYLIB_PATH="$ort_lib"
  say "ORT_DYLIB_PATH=$ORT_DYLIB_PATH"
fi
if [ -x .venv/bin/python ]; then
  export EMPF_PYTHON="$PWD/.venv/bin/python"
  say "EMPF_PYTHON=$EMPF_PYTHON"
fi
say "ready: $(rustc --version)"
