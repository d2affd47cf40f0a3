#!/usr/bin/env bash
# Builds a flashable Raspberry Pi SD-card image, pingr-<version>-arm64.img.xz, from Debian
# packages alone: an arm64 Debian root (debootstrap under qemu-user emulation) with
# linux-image-arm64 and raspi-firmware (Raspberry Pi 3, 4, 400, Zero 2 W, CM4), pingr installed
# by pi-setup.sh, and a first-boot service that applies files from the FAT boot partition.
#
# The image is assembled WITHOUT mounting it (no loop devices): `mkfs.ext4 -d` fills the root
# filesystem from a directory, `mkfs.vfat` + mtools' `mcopy` fill the boot partition, `sfdisk`
# writes the partition table, and dd places both into the disk file.
#
# Usage: sudo image/build.sh [--out DIR] [--work DIR] [--mirror URL] [--fresh] [--no-xz]
#   --out DIR     where the image goes (default: image/out in this checkout)
#   --work DIR    build area, reused between runs (default /var/tmp/pingr-image)
#   --mirror URL  Debian mirror (default: the first one in this machine's apt sources)
#   --fresh       rebuild the cached debootstrap base too
#   --no-xz       leave the .img uncompressed (faster to iterate; test-boot.sh takes both)
# Needs root (debootstrap and chroot), about 4 GB in --work, and the qemu-aarch64 binfmt
# handler (installed and registered here when missing). See image/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
OUT=$HERE/out
WORK=/var/tmp/pingr-image
MIRROR=""
FRESH=0
XZ=1
SUITE=bookworm
BOOT_MB=256
# What the appliance needs, all from Debian (main + non-free-firmware for the Pi's firmware).
PACKAGES=(systemd systemd-sysv systemd-timesyncd systemd-resolved udev dbus kmod
          linux-image-arm64 raspi-firmware firmware-brcm80211 initramfs-tools zstd
          iproute2 iputils-ping netbase wpasupplicant openssh-server ca-certificates
          python3 python3-venv e2fsprogs fdisk dosfstools util-linux)

while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --mirror) MIRROR=$2; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    --no-xz) XZ=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "build: $*"; }
die() { echo "build: error: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and chroot need it)"

# shellcheck source=/dev/null  # scripts/debian-lib.sh, checked on its own by the tests
. "$(dirname "$0")/../scripts/debian-lib.sh"
[ -n "$MIRROR" ] || MIRROR=$(first_mirror)

install_missing debootstrap qemu-user-static binfmt-support e2fsprogs dosfstools mtools fdisk xz-utils
enable_aarch64_binfmt || die "the qemu-aarch64 binfmt handler is not registered"

VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$SRC/pingr/__init__.py")
[ -n "$VERSION" ] || die "cannot read pingr's version from pingr/__init__.py"
NAME=pingr-$VERSION-arm64
start=$(date +%s)
mkdir -p "$WORK" "$OUT"
BASE=$WORK/base
ROOT=$WORK/root

# ---------------------------------------------------------------- 1. the Debian base (cached)
want="$SUITE $MIRROR ${PACKAGES[*]}"
[ "$FRESH" -eq 0 ] || rm -rf --one-file-system "$BASE"
if [ ! -f "$BASE/.pingr-base" ] || [ "$(cat "$BASE/.pingr-base")" != "$want" ]; then
  rm -rf --one-file-system "$BASE"
  say "debootstrap arm64 $SUITE from $MIRROR (emulated; this is the slow part)"
  debootstrap --arch=arm64 --variant=minbase --components=main,non-free-firmware \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" "$SUITE" "$BASE" "$MIRROR"
  echo "$want" > "$BASE/.pingr-base"
  say "base ready after $(( $(date +%s) - start ))s"
else
  say "reusing the debootstrap base in $BASE (--fresh rebuilds it)"
fi

# ---------------------------------------------------------------- 2. the appliance root
rm -rf --one-file-system "$ROOT"
cp -a "$BASE" "$ROOT"
rm -f "$ROOT/.pingr-base"
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

cat > "$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main non-free-firmware
deb $MIRROR $SUITE-updates main non-free-firmware
EOF
echo pingr > "$ROOT/etc/hostname"
cat > "$ROOT/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	pingr
::1		localhost ip6-localhost ip6-loopback
EOF
cat > "$ROOT/etc/fstab" <<'EOF'
# pingr image: partitions by label, so the same card works in any slot or USB reader.
LABEL=pingr-root  /              ext4  rw,noatime,commit=60          0 1
LABEL=PINGR-BOOT  /boot/firmware vfat  rw,noatime,umask=0022,nofail  0 2
EOF
# Each flashed card gets its own machine-id and SSH host keys on first boot.
: > "$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id" "$ROOT"/etc/ssh/ssh_host_*

# Root filesystem by label in cmdline.txt; raspi-firmware's kernel hook writes config.txt,
# cmdline.txt, the kernel, initrd and device trees into /boot/firmware (the FAT partition).
cat > "$ROOT/etc/default/raspi-firmware" <<'EOF'
ROOTPART=LABEL=pingr-root
CONSOLES="auto"
EOF
# The firmware blobs are already there (raspi-firmware's postinst); the hook rewrites
# config.txt and cmdline.txt with the settings above.
kver=$(find "$ROOT/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)
# Without /proc in the chroot, ischroot cannot tell and the hook would refuse (it wants a mounted
# /boot/firmware outside chroots); we know this is one, so ischroot says so.
mkdir -p "$ROOT/tmp/pingr-shim"
printf '#!/bin/sh\nexec /usr/bin/ischroot --default-true "$@"\n' > "$ROOT/tmp/pingr-shim/ischroot"
chmod 755 "$ROOT/tmp/pingr-shim/ischroot"
in_root PATH=/tmp/pingr-shim:/usr/sbin:/usr/bin:/sbin:/bin DEB_MAINT_PARAMS=configure \
  /etc/kernel/postinst.d/z50-raspi-firmware "$kver" "/boot/vmlinuz-$kver"
rm -rf "$ROOT/tmp/pingr-shim"
grep -q 'root=LABEL=pingr-root' "$ROOT/boot/firmware/cmdline.txt" \
  || die "cmdline.txt does not name the root by label: $(cat "$ROOT/boot/firmware/cmdline.txt")"
[ -f "$ROOT/boot/firmware/config.txt" ] || die "raspi-firmware wrote no config.txt"

# Networking: DHCP on any wired interface; wifi.txt/network.txt on the card change that.
mkdir -p "$ROOT/etc/systemd/network"
cat > "$ROOT/etc/systemd/network/20-pingr-wired.network" <<'EOF'
[Match]
Name=e*

[Network]
DHCP=yes
EOF
# An appliance must start monitoring (and report the outage) even with no network at all:
# wait for any one link, and not for long.
mkdir -p "$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d"
cat > "$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d/pingr.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30
EOF
# SSH: installed but off; first boot turns it on only when authorized_keys is on the card.
# Keys only: there is no password to log in with anyway, and never will be over the network.
mkdir -p "$ROOT/etc/ssh/sshd_config.d"
cat > "$ROOT/etc/ssh/sshd_config.d/pingr.conf" <<'EOF'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
EOF
in_root passwd -l root >/dev/null
in_root systemctl disable ssh.service >/dev/null 2>&1 || true
in_root systemctl enable systemd-networkd.service systemd-resolved.service \
  systemd-timesyncd.service >/dev/null 2>&1
# An empty machine-id makes the first boot a "first boot": systemd-firstboot would then wait on
# the console for a locale and timezone that a headless appliance has nobody to type.
ln -sf /dev/null "$ROOT/etc/systemd/system/systemd-firstboot.service"

# pingr itself, by the same installer users run (systemctl start is skipped in a chroot).
install -D -m 755 "$HERE/firstboot.sh" "$ROOT/usr/local/lib/pingr/firstboot.sh"
stage=$ROOT/tmp/pingr-src
rm -rf "$stage"
mkdir -p "$stage"
tar -C "$SRC" --exclude=__pycache__ -cf - pingr pyproject.toml README.md pingr.example.yaml \
  pi-setup.sh systemd | tar -C "$stage" -xf -
# resolv.conf is systemd-resolved's stub symlink, dangling in a chroot: use ours for pip.
resolv=$(readlink "$ROOT/etc/resolv.conf" || true)
rm -f "$ROOT/etc/resolv.conf"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# A TLS-intercepting proxy's CA may exist only in this machine's trust store: lend pip the
# host's bundle for the install, without adding it to the image's own store.
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/tmp/host-ca.crt" 2>/dev/null || true
in_root PIP_CERT=/tmp/host-ca.crt /tmp/pingr-src/pi-setup.sh --no-start --from /tmp/pingr-src
in_root systemctl enable pingr-firstboot.service
rm -f "$ROOT/etc/resolv.conf"
if [ -n "$resolv" ]; then ln -s "$resolv" "$ROOT/etc/resolv.conf"; fi
install -D -m 644 "$HERE/README.md" "$ROOT/opt/pingr/image/README.md"
echo "pingr $VERSION image, Debian $SUITE arm64, built $(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  > "$ROOT/etc/pingr-image-release"

# Leave no build traces: package lists, caches, the staged source.
rm -rf "$stage" "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin \
  "$ROOT"/var/cache/apt/archives/*.deb "$ROOT/root/.cache" "$ROOT"/var/log/*.log
find "$ROOT/tmp" -mindepth 1 -delete

# ---------------------------------------------------------------- 3. the boot partition
bootdir=$WORK/bootfs
rm -rf "$bootdir"
mv "$ROOT/boot/firmware" "$bootdir"
mkdir -p "$ROOT/boot/firmware"    # the mount point
install -m 644 "$SRC/pingr.example.yaml" "$bootdir/pingr.yaml.example"
install -m 644 "$HERE/boot-files/"* "$bootdir/"
boot_img=$WORK/boot.img
rm -f "$boot_img"
mkfs.vfat -F 32 -n PINGR-BOOT -C "$boot_img" $(( BOOT_MB * 1024 )) >/dev/null
(cd "$bootdir" && mcopy -s -p -m -i "$boot_img" ./* ::/)

# ---------------------------------------------------------------- 4. the root filesystem
used_mb=$(du -sm "$ROOT" | cut -f1)   # blocks, not bytes: a venv is many small files
root_mb=$(( (used_mb * 13 / 10 + 300 + 3) / 4 * 4 ))   # 30% + 300 MB free; grown on first boot
root_img=$WORK/root.img
rm -f "$root_img"
mkfs.ext4 -q -L pingr-root -d "$ROOT" -m 1 "$root_img" "${root_mb}M"

# ---------------------------------------------------------------- 5. the disk
img=$OUT/$NAME.img
boot_start=8192                               # 4 MiB: aligned for SD cards' erase blocks
boot_sectors=$(( BOOT_MB * 2048 ))
root_start=$(( boot_start + boot_sectors ))
root_sectors=$(( root_mb * 2048 ))
rm -f "$img" "$img.xz"
truncate -s $(( (root_start + root_sectors) * 512 )) "$img"
sfdisk -q "$img" <<EOF
label: dos
label-id: 0x$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
start=$boot_start, size=$boot_sectors, type=c, bootable
start=$root_start, size=$root_sectors, type=83
EOF
dd if="$boot_img" of="$img" bs=512 seek="$boot_start" conv=notrunc,sparse status=none
dd if="$root_img" of="$img" bs=512 seek="$root_start" conv=notrunc,sparse status=none
rm -f "$boot_img" "$root_img"
size_mb=$(( $(stat -c %s "$img") / 1048576 ))
final=$img
if [ "$XZ" -eq 1 ]; then
  xz -T0 -6 "$img"
  final=$img.xz
fi
(cd "$OUT" && sha256sum "$(basename "$final")" > "$(basename "$final").sha256")
say "built $final: image ${size_mb} MiB, file $(( $(stat -c %s "$final") / 1048576 )) MiB, in $(( $(date +%s) - start ))s"
