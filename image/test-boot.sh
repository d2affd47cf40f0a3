#!/usr/bin/env bash
# Boots a built pingr image under qemu-system-aarch64 (-M virt) and checks it works:
# the image's own kernel and initrd (read from its FAT partition with mtools), the whole disk
# as a virtio drive, networking restricted to one loopback port forward inside a private
# network namespace (the guest can reach nothing else, and nothing else can reach it).
#
# Before booting, a test pingr.yaml (with a known API key and a target named
# "boot-partition-config") is put on the image's boot partition and the disk is enlarged by
# 1 GiB. The test then waits for /api/v1/health, checks that the target from that file exists
# (the boot-partition config was applied) and that the first boot grew the root partition,
# and prints the boot time.
#
# Usage: sudo image/test-boot.sh [IMAGE]   (default: the newest image/out/pingr-*-arm64.img[.xz])
#   --timeout SECONDS   how long to wait for the API (default 1200: everything is emulated)
#   --keep              keep the work directory (disk, console log) for inspection
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TIMEOUT=1200
KEEP=0
IMAGE=""
HOST_PORT=19009
KEY=pingr_boot_test_key_0123456789abcdef

while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) TIMEOUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --inside) shift; break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "test-boot: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) IMAGE=$1; shift ;;
  esac
done

say() { echo "test-boot: $*"; }
die() { echo "test-boot: FAIL: $*" >&2; exit 1; }

# ------------------------------------------------------------ inside the network namespace
if [ "${PINGR_TEST_BOOT_INSIDE:-}" = 1 ]; then
  work=$1 kernel=$2 initrd=$3 append=$4
  ip link set lo up
  t0=$(date +%s.%N)
  # restrict=on: the guest's user-mode network has no route out, only the forwarded port in.
  qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 \
    -kernel "$kernel" -initrd "$initrd" -append "$append" \
    -drive "if=none,file=$work/disk.img,format=raw,id=hd" -device virtio-blk-pci,drive=hd \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$HOST_PORT-:9009" \
    -device virtio-net-pci,netdev=n0 \
    -display none -monitor none -serial "file:$work/console.log" &
  qemu=$!
  trap 'kill $qemu 2>/dev/null || true; wait $qemu 2>/dev/null || true' EXIT
  deadline=$(( $(date +%s) + TIMEOUT ))
  until curl -fsS -o "$work/health.json" "http://127.0.0.1:$HOST_PORT/api/v1/health" 2>/dev/null; do
    kill -0 "$qemu" 2>/dev/null || die "qemu exited; see $work/console.log"
    [ "$(date +%s)" -lt "$deadline" ] || die "no /api/v1/health within ${TIMEOUT}s (console: $work/console.log)"
    sleep 2
  done
  t1=$(date +%s.%N)
  say "health: $(cat "$work/health.json")"
  curl -fsS -H "X-API-Key: $KEY" "http://127.0.0.1:$HOST_PORT/api/v1/targets" > "$work/targets.json" \
    || die "the API key from the boot-partition pingr.yaml was refused"
  grep -q '"boot-partition-config"' "$work/targets.json" \
    || die "the target from the boot-partition pingr.yaml is missing: $(cat "$work/targets.json")"
  say "the boot partition's pingr.yaml was applied (its key works, its target is there)"
  # Give the journal a moment to reach the console, then look for the first-boot lines.
  grep -q "pingr-firstboot: applied /boot/firmware/pingr.yaml" "$work/console.log" \
    && say "console: $(grep -m1 'pingr-firstboot: applied' "$work/console.log" | tr -d '\r')"
  grep -q "pingr-firstboot: grew " "$work/console.log" \
    || die "the first boot did not report growing the root partition"
  say "console: $(grep -m1 'pingr-firstboot: grew' "$work/console.log" | tr -d '\r')"
  say "PASS: boot to /api/v1/health in $(awk "BEGIN {printf \"%.1f\", $t1 - $t0}") s (qemu TCG, -smp 2)"
  exit 0
fi

# ------------------------------------------------------------ outside: prepare, then enter
[ "$(id -u)" -eq 0 ] || die "run as root (unshare --net needs it)"
need=()
for p in qemu-system-arm ipxe-qemu mtools xz-utils curl fdisk iproute2 util-linux; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ -z "$IMAGE" ]; then
  IMAGE=$(find "$HERE/out" -maxdepth 1 \( -name 'pingr-*-arm64.img.xz' -o -name 'pingr-*-arm64.img' \) \
            -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -n1 | cut -d' ' -f2- || true)
  [ -n "$IMAGE" ] || die "no image in $HERE/out: build one with image/build.sh"
fi
[ -f "$IMAGE" ] || die "$IMAGE does not exist"

work=$(mktemp -d /var/tmp/pingr-boot-test.XXXXXX)
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { if [ "$KEEP" -eq 1 ]; then say "kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
say "image $IMAGE"
case "$IMAGE" in
  *.xz) xz -dc "$IMAGE" > "$work/disk.img" ;;
  *) cp --sparse=always "$IMAGE" "$work/disk.img" ;;
esac
# Room for the first boot to grow into, as on a card bigger than the image.
truncate -s +1G "$work/disk.img"

start=$(sfdisk -d "$work/disk.img" | awk -F'[=,]' '/start=/ {gsub(/ /,"",$2); print $2; exit}')
fat="$work/disk.img@@$(( start * 512 ))"
files=$(mdir -b -i "$fat" ::/ | sed 's|^::/||')
kernel_name=$(echo "$files" | grep -m1 '^vmlinuz-') || die "no vmlinuz-* on the boot partition"
initrd_name=$(echo "$files" | grep -m1 '^initrd.img-') || die "no initrd.img-* on the boot partition"
mcopy -n -i "$fat" "::/$kernel_name" "$work/vmlinuz"
mcopy -n -i "$fat" "::/$initrd_name" "$work/initrd"
cmdline=$(mtype -i "$fat" ::/cmdline.txt | tr -d '\r\n')
say "cmdline.txt: $cmdline"
echo "$cmdline" | grep -q 'root=LABEL=pingr-root' || die "cmdline.txt does not mount the root by label"
# The Pi's consoles are serial0/tty1; QEMU's virt board has a PL011 at ttyAMA0.
append=""
for word in $cmdline; do
  case "$word" in console=*) ;; *) append="$append $word" ;; esac
done
append="${append# } console=ttyAMA0"

cat > "$work/pingr.yaml" <<EOF
# Put on the boot partition by image/test-boot.sh.
host: 0.0.0.0
port: 9009
auth:
  api_key: $KEY
targets:
  - name: boot-partition-config
    type: tcp
    host: 127.0.0.1
    port: 9009
    interval: 10s
EOF
mcopy -o -i "$fat" "$work/pingr.yaml" ::/pingr.yaml
say "booting (TCG emulation, expect minutes; console log: $work/console.log)"
PINGR_TEST_BOOT_INSIDE=1 unshare --net -- "$0" --timeout "$TIMEOUT" --inside "$work" "$work/vmlinuz" "$work/initrd" "$append"
