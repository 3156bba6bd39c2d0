#!/usr/bin/env bash
# Installs what empf's commands need on a fresh Debian machine with rustup, and says what it did.
# Sourced by scripts/main.sh and scripts/test.sh. Idempotent: installed things are skipped.
set -euo pipefail

say() { echo "[setup] $*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "[setup] cargo not found: install Rust with rustup first (https://rustup.rs)" >&2
  exit 1
fi

# Rust targets for the no_std builds of empf-core and the firmware.
for target in thumbv6m-none-eabi thumbv7m-none-eabi thumbv7em-none-eabihf; do
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
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "apt-get install ${apt_pkgs[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
  else
    say "missing Debian packages ${apt_pkgs[*]} (need root and apt-get); tests that need them will say 'skipped'"
  fi
fi
say "ready: $(rustc --version)"
