#!/usr/bin/env bash
# Runs the whole pingr test suite inside an arm64 Debian root under qemu-user emulation.
#
# What it does (as root, on an x86-64 Debian/Ubuntu machine):
#   1. installs debootstrap, qemu-user-static and binfmt-support, and registers the aarch64
#      interpreter (binfmt_misc is mounted first when it is not);
#   2. builds an arm64 Debian bookworm root once with debootstrap (kept in $ROOT and reused);
#   3. copies this checkout (tracked and untracked files, not .venv) into the root, then runs the
#      project's own CI command there: tests/bootstrap.sh (Debian packages and a venv with aarch64
#      wheels from the registry) followed by `python -m pytest`, with PINGR_TEST_SLOW=4 (tests
#      wait up to 4 times longer for things to happen; override it from the environment).
#
# Usage: scripts/test-arm64.sh [--root DIR] [--mirror URL] [-- PYTEST-ARGS...]
#   --root DIR     where the arm64 root lives (default /var/tmp/pingr-arm64-root); reused if present
#   --mirror URL   Debian mirror (default: the first one in this machine's apt sources)
#   --fresh        delete the root first and build it again
# Everything runs emulated, so expect it to be several times slower than natively. The Docker
# tests skip there: qemu-user cannot start a container (runc's namespace clone flags are not
# emulated; with cgroups mounted dockerd starts, but every container fails "invalid argument").
set -euo pipefail

ROOT=/var/tmp/pingr-arm64-root
MIRROR=""
FRESH=0
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$2; shift 2 ;;
    --mirror) MIRROR=$2; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; PYTEST_ARGS=("$@"); break ;;
    *) echo "test-arm64: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || { echo "test-arm64: run as root (debootstrap and chroot need it)" >&2; exit 1; }
SRC=$(cd "$(dirname "$0")/.." && pwd)

# shellcheck source=/dev/null  # scripts/debian-lib.sh, checked on its own by the tests
. "$(dirname "$0")/debian-lib.sh"
[ -n "$MIRROR" ] || MIRROR=$(first_mirror)

install_missing debootstrap qemu-user-static binfmt-support rsync
enable_aarch64_binfmt || {
  echo "test-arm64: the qemu-aarch64 binfmt handler is not registered" >&2; exit 1; }

start=$(date +%s)
[ "$FRESH" -eq 0 ] || rm -rf --one-file-system "$ROOT"
if [ ! -e "$ROOT/.pingr-debootstrap-done" ]; then
  rm -rf --one-file-system "$ROOT"
  echo "test-arm64: debootstrap arm64 bookworm into $ROOT from $MIRROR"
  debootstrap --arch=arm64 --variant=minbase --include=ca-certificates,python3,python3-venv \
    bookworm "$ROOT" "$MIRROR"
  # Same mirror inside, so bootstrap.sh's apt-get reaches what this machine reaches.
  echo "deb $MIRROR bookworm main" > "$ROOT/etc/apt/sources.list"
  touch "$ROOT/.pingr-debootstrap-done"
  echo "test-arm64: root ready after $(( $(date +%s) - start ))s"
fi

mounts=()
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local i
  for (( i=${#mounts[@]}-1; i>=0; i-- )); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
mount -t proc proc "$ROOT/proc"; mounts+=("$ROOT/proc")
mount -t sysfs sys "$ROOT/sys"; mounts+=("$ROOT/sys")
mount --bind /dev "$ROOT/dev"; mounts+=("$ROOT/dev")
mount -t devpts devpts "$ROOT/dev/pts" -o newinstance,ptmxmode=0666 2>/dev/null \
  || mount --bind /dev/pts "$ROOT/dev/pts"
mounts+=("$ROOT/dev/pts")
mount -t tmpfs tmpfs "$ROOT/tmp"; mounts+=("$ROOT/tmp")
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
# A TLS-intercepting proxy's CA may exist only in this machine's trust store: lend pip inside
# the host's bundle (the root's own store stays Debian's).
pip_cert=()
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/host-ca-certificates.crt"
  pip_cert=(PIP_CERT=/etc/ssl/host-ca-certificates.crt)
fi

# The checkout as it is now, without the host's (x86-64) venv and caches.
mkdir -p "$ROOT/srv/pingr"
rsync -a --delete --exclude=.venv --exclude=__pycache__ --exclude='*.egg-info' \
  --exclude=.pytest_cache --exclude=.ruff_cache --exclude='*.img*' "$SRC/" "$ROOT/srv/pingr/"

echo "test-arm64: arch inside the root: $(chroot "$ROOT" uname -m)"
t0=$(date +%s)
set +e
chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root LANG=C.UTF-8 CI=true PINGR_TEST_SLOW="${PINGR_TEST_SLOW:-4}" "${pip_cert[@]}" /bin/bash -c \
  'cd /srv/pingr && ./tests/bootstrap.sh && .venv/bin/python -m pytest "$@"' pytest "${PYTEST_ARGS[@]}"
rc=$?
set -e
t1=$(date +%s)
echo "test-arm64: suite (bootstrap + pytest) exit $rc in $(( t1 - t0 ))s; total $(( t1 - start ))s"
exit $rc
