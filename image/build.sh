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
# debootstrap installs PACKAGES; KERNEL_PACKAGES follow with apt while update-initramfs is
# diverted to a no-op, so the initramfs is built exactly once, at the end (the kernel's postinst
# and initramfs-tools' trigger would each build it, minutes apiece under emulation).
PACKAGES=(systemd systemd-sysv systemd-timesyncd systemd-resolved udev dbus kmod
          iproute2 iputils-ping netbase wpasupplicant wireless-regdb openssh-server
          ca-certificates unattended-upgrades python3 python3-venv e2fsprogs fdisk dosfstools
          util-linux)
KERNEL_PACKAGES=(linux-image-arm64 raspi-firmware firmware-brcm80211 initramfs-tools zstd)
SECURITY_MIRROR=http://deb.debian.org/debian-security

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
# The security archive beside the mirror when that is a Debian one (.../debian -> ...-security).
case "$MIRROR" in */debian|*/debian/) SECURITY_MIRROR=${MIRROR%/}-security ;; esac

install_missing debootstrap qemu-user-static binfmt-support e2fsprogs dosfstools mtools fdisk xz-utils
enable_aarch64_binfmt || die "the qemu-aarch64 binfmt handler is not registered"

VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$SRC/pingr/__init__.py")
[ -n "$VERSION" ] || die "cannot read pingr's version from pingr/__init__.py"
NAME=pingr-$VERSION-arm64
start=$(date +%s)
mkdir -p "$WORK" "$OUT"
BASE=$WORK/base
ROOT=$WORK/root

# in_dir DIR CMD...: CMD inside the arm64 root DIR, with a clean environment and /proc mounted
# (maintainer scripts, ischroot and update-initramfs look there), unmounted again afterwards.
MOUNTED=""
# shellcheck disable=SC2317  # called by the EXIT trap
unmount_proc() {
  if [ -n "$MOUNTED" ]; then umount -l "$MOUNTED" 2>/dev/null || true; MOUNTED=""; fi
}
trap unmount_proc EXIT
real_root() { case "$1" in ''|/|/.) die "refusing to use '$1' as the image root" ;; esac; }
in_dir() {
  local dir=$1 rc=0
  shift
  real_root "$dir"
  [ -x "$dir/usr/bin/env" ] || die "$dir is not a Debian root"
  mount -t proc proc "$dir/proc"
  MOUNTED=$dir/proc
  chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@" || rc=$?
  unmount_proc
  return "$rc"
}
in_root() { in_dir "$ROOT" "$@"; }
# The image's apt sources: the release, its point-release updates and its security archive.
write_sources() {
  real_root "$1"
  printf '%s\n' "deb $MIRROR $SUITE main non-free-firmware" \
    "deb $MIRROR $SUITE-updates main non-free-firmware" \
    "deb $SECURITY_MIRROR $SUITE-security main non-free-firmware" > "$1/etc/apt/sources.list"
}
# apt_in DIR ARGS...: apt-get update, then apt-get ARGS, in DIR with this machine's DNS (the
# image's resolv.conf is systemd-resolved's stub link, dangling in a chroot).
apt_in() {
  local dir=$1 resolv rc=0
  shift
  real_root "$dir"
  resolv=$(readlink "$dir/etc/resolv.conf" || true)
  rm -f "$dir/etc/resolv.conf"
  cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
  in_dir "$dir" sh -c 'apt-get update -qq && apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"' \
    apt "$@" || rc=$?
  rm -f "$dir/etc/resolv.conf"
  if [ -n "$resolv" ]; then ln -s "$resolv" "$dir/etc/resolv.conf"; fi
  return "$rc"
}
# update-initramfs as a no-op while packages install (dpkg-divert keeps the real one aside).
divert_initramfs() {
  real_root "$1"
  in_dir "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs
  ln -s /bin/true "$1/usr/sbin/update-initramfs"
}
undivert_initramfs() {
  real_root "$1"
  rm -f "$1/usr/sbin/update-initramfs"
  in_dir "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
}

# ---------------------------------------------------------------- 1. the Debian base (cached)
want="$SUITE $MIRROR $SECURITY_MIRROR ${PACKAGES[*]} + ${KERNEL_PACKAGES[*]} (initramfs diverted)"
[ "$FRESH" -eq 0 ] || rm -rf --one-file-system "$BASE"
if [ ! -f "$BASE/.pingr-base" ] || [ "$(cat "$BASE/.pingr-base")" != "$want" ]; then
  rm -rf --one-file-system "$BASE"
  say "debootstrap arm64 $SUITE from $MIRROR (emulated; this is the slow part)"
  debootstrap --arch=arm64 --variant=minbase --components=main,non-free-firmware \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" "$SUITE" "$BASE" "$MIRROR"
  write_sources "$BASE"
  divert_initramfs "$BASE"
  say "installing ${KERNEL_PACKAGES[*]} (the initramfs is built later, once)"
  apt_in "$BASE" install --no-install-recommends "${KERNEL_PACKAGES[@]}"
  echo "$want" > "$BASE/.pingr-base"
  say "base ready after $(( $(date +%s) - start ))s"
else
  say "reusing the debootstrap base in $BASE (--fresh rebuilds it)"
fi

# ---------------------------------------------------------------- 2. the appliance root
rm -rf --one-file-system "$ROOT"
cp -a "$BASE" "$ROOT"
rm -f "$ROOT/.pingr-base"
write_sources "$ROOT"
# Today's security and point-release updates, however old the cached base is.
say "applying $SUITE-security and $SUITE-updates"
apt_in "$ROOT" dist-upgrade --no-install-recommends
# Only the newest kernel stays (an update may have brought a new ABI beside the old one).
kver=$(find "$ROOT/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)
# shellcheck disable=SC2016  # dpkg-query's own ${...} format, not the shell's
old=$(in_root dpkg-query -W -f='${Package} ${db:Status-Status}\n' 'linux-image-[0-9]*' \
      | awk -v k="linux-image-$kver" '$2 == "installed" && $1 != k {print $1}')
if [ -n "$old" ]; then
  # shellcheck disable=SC2086  # one word per package
  in_root apt-get purge -y -q $old
fi
rm -rf "$ROOT"/var/lib/apt/lists/*
# Security updates keep coming after the card is flashed: unattended-upgrades installs the
# security archive's updates daily (Debian's default origins: only $SUITE-security).
printf '%s\n' 'APT::Periodic::Update-Package-Lists "1";' 'APT::Periodic::Unattended-Upgrade "1";' \
  > "$ROOT/etc/apt/apt.conf.d/20auto-upgrades"
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
# CONSOLES: "auto" probes for /dev/ttyS1 in this chroot, finds none and would leave the Pi with
# an HDMI console only. ttyS1 is the header's serial port (GPIO14/15, the mini UART that
# enable_uart=1 turns on) on the Pi 3, 4 and Zero 2 W under Debian's kernel; the last console
# gets the boot log and the emergency shell.
cat > "$ROOT/etc/default/raspi-firmware" <<'EOF'
ROOTPART=LABEL=pingr-root
CONSOLES="tty0 ttyS1,115200"
EOF
# raspi-firmware appends this file to config.txt each time it rewrites config.txt (every kernel
# update); pingr-firstboot copies the card's lines of that section back into it at every boot,
# so what a user adds there (gpio=...=op,dh for relays) survives kernel updates.
install -m 644 "$HERE/raspi-firmware-custom" "$ROOT/etc/default/raspi-firmware-custom"
# The one initramfs build. raspi-firmware's post-update hook then copies the kernel, initrd and
# device trees to /boot/firmware and writes config.txt and cmdline.txt from the settings above.
undivert_initramfs "$ROOT"
say "building the initramfs for $kver (once)"
in_root update-initramfs -c -k "$kver"
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
