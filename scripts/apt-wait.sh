#!/usr/bin/env bash
# apt-get that waits for another package manager instead of failing at once. A fresh machine often
# runs apt at boot (unattended upgrades, cloud-init), and a plain `apt-get` then exits with
# "Could not get lock". Sourced by scripts/setup.sh; tested by scripts/tests/apt_lock_wait.sh.
#
# `DPkg::Lock::Timeout` makes apt wait for the dpkg frontend lock (install), but APT 2.6 does not
# apply it to the package-lists lock that `apt-get update` takes, so update is retried here.

: "${EMPF_APT_LOCK_WAIT_S:=600}"   # how long to wait for another apt/dpkg, in seconds

apt_get_waiting() {
  local waited=0 out rc
  export DEBIAN_FRONTEND=noninteractive
  while :; do
    set +e
    out="$(apt-get -o DPkg::Lock::Timeout="$EMPF_APT_LOCK_WAIT_S" "$@" 2>&1)"
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
      return 0
    fi
    if grep -q "Could not get lock" <<<"$out" && [ "$waited" -lt "$EMPF_APT_LOCK_WAIT_S" ]; then
      if [ "$waited" -eq 0 ]; then
        echo >&2 "[setup] another package manager holds apt's lock ($(grep -m1 -o 'held by process.*' <<<"$out" || echo 'holder unknown')); waiting up to ${EMPF_APT_LOCK_WAIT_S} s"
      fi
      sleep 2
      waited=$((waited + 2))
      continue
    fi
    echo "$out" >&2
    return "$rc"
  done
}
