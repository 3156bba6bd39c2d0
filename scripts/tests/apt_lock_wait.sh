#!/usr/bin/env bash
# Test for scripts/apt-wait.sh: while another process holds apt's locks, `apt_get_waiting` waits
# and then succeeds, where a plain `apt-get` fails at once ("Could not get lock"). Real apt, real
# fcntl locks (the kind dpkg and apt take). Run by scripts/test.sh; needs root and apt-get.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1; then
  echo "skipped: apt lock test needs root, apt-get and python3"
  [ "${EMPF_REQUIRE_APT_TEST:-0}" = 1 ] && exit 1
  exit 0
fi
source scripts/apt-wait.sh
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial"

# Holds the given lock files (fcntl write locks, as apt/dpkg take them) for $1 seconds.
hold_locks() {
  python3 - "$@" <<'PY' &
import fcntl, os, sys, time
fds = []
for path in sys.argv[2:]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    fds.append(fd)
open(os.environ["READY"], "w").close()
time.sleep(float(sys.argv[1]))
PY
  holder=$!
  while [ ! -e "$READY" ]; do sleep 0.1; done
}

# `apt-get update` against an empty source list and a private lists directory: it takes the
# lists lock like a real update but touches neither the network nor the machine's package lists.
update_args=(update -qq -o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts=/nonexistent
  -o Dir::State::Lists="$tmp/lists")

export READY="$tmp/ready1"
hold_locks 4 "$tmp/lists/lock"
if apt-get "${update_args[@]}" >/dev/null 2>&1; then
  echo "FAIL: plain apt-get update succeeded while the lists lock was held (the test cannot see a lock)"
  exit 1
fi
start=$SECONDS
apt_get_waiting "${update_args[@]}" 2>"$tmp/update.err" >/dev/null \
  || { echo "FAIL: apt_get_waiting update failed"; cat "$tmp/update.err"; exit 1; }
wait "$holder"
grep -q "waiting up to" "$tmp/update.err" || { echo "FAIL: no waiting message"; cat "$tmp/update.err"; exit 1; }
echo "ok: apt_get_waiting update waited $((SECONDS - start)) s for the lists lock, then succeeded"

# `apt-get install` of an installed package takes the dpkg frontend lock and changes nothing.
pkg="$(dpkg-query -W -f='${Package}\n' coreutils hostname 2>/dev/null | head -n1)"
export READY="$tmp/ready2"
hold_locks 4 /var/lib/dpkg/lock-frontend
if apt-get install -y -qq "$pkg" >/dev/null 2>&1; then
  echo "FAIL: plain apt-get install succeeded while the dpkg frontend lock was held"
  exit 1
fi
start=$SECONDS
apt_get_waiting install -y -qq "$pkg" >/dev/null 2>"$tmp/install.err" \
  || { echo "FAIL: apt_get_waiting install failed"; cat "$tmp/install.err"; exit 1; }
wait "$holder"
echo "ok: apt_get_waiting install waited $((SECONDS - start)) s for the dpkg lock, then succeeded"
