#!/usr/bin/env bash
# pi-setup.sh: install pingr as a hardened systemd service on Raspberry Pi OS or Debian.
#
# Usage: sudo ./pi-setup.sh [OPTIONS]
#
# Installs the Debian packages pingr needs, creates the `pingr` user (in the `gpio` group),
# a virtualenv in /opt/pingr/venv with pingr and lgpio (gpiozero's pin library: real relays
# through /dev/gpiochip*) in it, the systemd units and the sysctl drop-in for unprivileged
# ping. /etc/pingr/pingr.yaml, only if absent (an existing config is never overwritten), is
# written by `pingr init` from this machine's real gateway and DNS servers (a loopback target
# when it has none); in a chroot (an image build) pingr-init.service does that at the first
# boot instead. Then it enables and starts the service, waits for /api/v1/health, and prints
# the URL and the first admin API key.
# Running it again changes nothing unless something differs. Supported: Raspberry Pi OS
# Bookworm/Trixie and Debian 12/13, on arm64 and x86-64.
#
# Options:
#   --from DIR            install pingr from this source checkout (default: the script's own
#                         directory when it is a checkout)
#   --version VERSION     install pingr==VERSION from PyPI instead of a checkout
#   --no-start            install and enable, but do not start or wait (image builds)
#   --hardware-watchdog   also let systemd feed the board's hardware watchdog
#                         (/etc/systemd/system.conf.d/pingr-hardware-watchdog.conf)
#   --wait SECONDS        how long to wait for /api/v1/health (default 180)
#   --uninstall           stop and remove the service, venv, unit and drop-ins; keeps
#                         /etc/pingr, /var/lib/pingr (database, admin.key) and the user
#   --purge               with --uninstall (or alone): remove the config, data and user too
#   -h, --help            show this help
#
# Where systemd is not running (a chroot, a container, an image build), systemctl calls that
# need it are reported and skipped; the service starts at the next boot.
set -euo pipefail

PREFIX=/opt/pingr
VENV=$PREFIX/venv
CONF_DIR=/etc/pingr
CONF=$CONF_DIR/pingr.yaml
STATE_DIR=/var/lib/pingr
UNIT=/etc/systemd/system/pingr.service
INIT_UNIT=/etc/systemd/system/pingr-init.service
SYSCTL=/etc/sysctl.d/99-pingr-ping.conf
UDEV=/etc/udev/rules.d/60-pingr-gpio.rules
CAPS_DROPIN=/etc/systemd/system/pingr.service.d/10-pingr-net-raw.conf
HW_WATCHDOG=/etc/systemd/system.conf.d/pingr-hardware-watchdog.conf
PACKAGES=(python3 python3-venv ca-certificates)
# gpiozero's pin factory for every Pi up to the 5 (the kernel's GPIO character devices).
# Debian has no python3-lgpio, and a venv cannot see Raspberry Pi OS's, so it goes into the venv:
# PyPI's wheel where one exists (CPython 3.11 and 3.12 on arm64 and x86-64), otherwise built
# from its source, which bundles the C library (PYPI=1), with these packages.
LGPIO_SPEC="lgpio>=0.2.2"
LGPIO_BUILD_PACKAGES=(swig gcc libc6-dev python3-dev)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=""
VERSION=""
ACTION=install
PURGE=0
START=1
HWDOG=0
WAIT=180
CHANGED=0      # something the running service depends on changed: restart it

say() { echo "pi-setup: $*"; }
warn() { echo "pi-setup: warning: $*" >&2; }
die() { echo "pi-setup: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --from) [ $# -ge 2 ] || die "--from needs a directory"; SRC=$2; shift 2 ;;
    --version) [ $# -ge 2 ] || die "--version needs a version"; VERSION=$2; shift 2 ;;
    --no-start) START=0; shift ;;
    --hardware-watchdog) HWDOG=1; shift ;;
    --wait) [ $# -ge 2 ] || die "--wait needs seconds"; WAIT=$2; shift 2 ;;
    --uninstall) ACTION=uninstall; shift ;;
    --purge) ACTION=uninstall; PURGE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "pi-setup: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$WAIT" in ''|*[!0-9]*) die "--wait needs a whole number of seconds, not '$WAIT'" ;; esac
[ -z "$SRC" ] || [ -z "$VERSION" ] || die "--from and --version exclude each other"
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 $*)"

# systemd as PID 1 of *this* root: not in a chroot (where start/stop would hit the host's
# systemd or nothing) nor in a container without it.
in_chroot() {
  # ischroot exits 0 in a chroot, 1 outside, 2 when it cannot tell (no /proc): treat as chroot.
  if command -v ischroot >/dev/null 2>&1; then
    local rc=0
    ischroot || rc=$?
    [ "$rc" -ne 1 ]
  else
    [ "$(stat -c %d:%i / 2>/dev/null)" != "$(stat -c %d:%i /proc/1/root/. 2>/dev/null)" ]
  fi
}
systemd_running() { [ -d /run/systemd/system ] && ! in_chroot; }
have_systemctl() { command -v systemctl >/dev/null 2>&1; }

# Runs systemctl where it can work, otherwise says what was skipped (never fatal there).
sysctl_run() {
  if ! have_systemctl; then
    say "skipped 'systemctl $*': systemctl is not installed here"
    return 0
  fi
  case "$1" in
    enable|disable|is-enabled)
      # These only edit symlinks and work offline, even in a chroot.
      systemctl "$@" ;;
    *)
      if systemd_running; then
        systemctl "$@"
      else
        say "skipped 'systemctl $*': systemd is not running here (chroot/container)"
      fi ;;
  esac
}

# install SRC DEST MODE: copy only when the content or mode differs; returns 0 if it wrote.
put() {
  local src=$1 dest=$2 mode=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "$mode" ]; then
    return 1
  fi
  install -D -m "$mode" "$src" "$dest"
  say "wrote $dest"
  return 0
}

# write DEST MODE <<< content: like put, from standard input.
write() {
  local tmp rc=0
  tmp=$(mktemp)
  cat > "$tmp"
  put "$tmp" "$1" "$2" || rc=$?
  rm -f "$tmp"
  return "$rc"
}

check_os() {
  local id="" like="" codename=""
  if [ -r /etc/os-release ]; then
    # In a subshell: os-release sets VERSION, which is our --version.
    # shellcheck disable=SC1091
    read -r id like codename <<< "$(. /etc/os-release
                                    echo "${ID:-none} ${ID_LIKE:-none} ${VERSION_CODENAME:-none}")"
  fi
  case " $id $like " in
    *" debian "*|*" raspbian "*) ;;
    *) warn "untested system '${id:-unknown}': this script is for Debian and Raspberry Pi OS" ;;
  esac
  case "$codename" in
    bookworm|trixie) ;;
    *) warn "untested release '${codename:-unknown}' (tested: bookworm, trixie)" ;;
  esac
  case "$(uname -m)" in
    aarch64|x86_64) ;;
    *) warn "untested architecture $(uname -m) (tested: arm64, x86-64)" ;;
  esac
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

create_user() {
  if ! getent group gpio >/dev/null; then
    # Raspberry Pi OS has it; plain Debian does not (the udev rule below gives it the chips).
    groupadd --system gpio
    say "created group gpio"
  fi
  if ! getent group pingr >/dev/null; then
    groupadd --system pingr
    say "created group pingr"
  fi
  if ! getent passwd pingr >/dev/null; then
    useradd --system --gid pingr --groups gpio --home-dir "$STATE_DIR" --no-create-home \
      --shell /usr/sbin/nologin --comment "pingr monitoring appliance" pingr
    say "created user pingr (groups: pingr, gpio)"
    CHANGED=1
  elif ! id -nG pingr | tr ' ' '\n' | grep -qx gpio; then
    usermod -a -G gpio pingr
    say "added user pingr to group gpio"
    CHANGED=1
  fi
  # Debian's kernel creates /dev/gpiochip* root-only; Raspberry Pi OS ships its own rule.
  if write "$UDEV" 644 <<'EOF'
# pingr (pi-setup.sh): GPIO character devices for the gpio group, as on Raspberry Pi OS.
SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"
EOF
  then
    if systemd_running && command -v udevadm >/dev/null 2>&1; then
      udevadm control --reload || true
      udevadm trigger --subsystem-match=gpio || true
    fi
  fi
}

source_fingerprint() {
  # What was installed: the package sources and metadata, so an unchanged checkout is skipped.
  (cd "$1" && find pingr pyproject.toml -type f \( -name '*.py' -o -name '*.yaml' -o -name '*.toml' \
     -o -name '*.typed' \) -not -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z \
     | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

install_pingr() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    say "created $VENV"
  fi
  local stamp=$PREFIX/.installed want
  if [ -n "$VERSION" ]; then
    want="pypi $VERSION"
  else
    want="source $(source_fingerprint "$SRC")"
  fi
  if [ -x "$VENV/bin/pingr" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "pingr $("$VENV/bin/pingr" --version | cut -d' ' -f2) is already installed in $VENV"
    return 0
  fi
  say "installing pingr into $VENV (${want%% *}${VERSION:+ $VERSION})"
  # pip's (and the build backend's) chatter goes to a log, shown only when it fails.
  local log build="" spec="pingr==$VERSION"
  log=$(mktemp)
  if [ -z "$VERSION" ]; then
    # A copy, so pip's build never writes into the user's checkout.
    build=$(mktemp -d)
    tar -C "$SRC" --exclude=.venv --exclude=.git --exclude='*.egg-info' --exclude=__pycache__ \
      -cf - pingr pyproject.toml README.md | tar -C "$build" -xf -
    spec=$build
  fi
  if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
         "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade "$spec"; } \
       >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    rm -rf "$log" "$build"
    die "pip could not install pingr (log above)"
  fi
  rm -rf "$log" "$build"
  echo "$want" > "$stamp"
  CHANGED=1
  say "installed $("$VENV/bin/pingr" --version)"
}

# lgpio in the venv: the wheel, else a source build (see LGPIO_SPEC). Skipped when it imports.
# Importing lgpio creates its notification FIFO (.lgd-nfy0) in LG_WD, else in the working
# directory: a scratch directory, so the check leaves nothing behind.
lgpio_version() {
  local wd rc=0
  wd=$(mktemp -d)
  LG_WD=$wd "$VENV/bin/python" -c 'import importlib.metadata as m, lgpio; print(m.version("lgpio"))' \
    2>/dev/null || rc=$?
  rm -rf "$wd"
  return "$rc"
}

install_gpio_library() {
  local have log
  if have=$(lgpio_version); then
    say "lgpio $have is already installed in $VENV"
    return 0
  fi
  log=$(mktemp)
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --only-binary=lgpio \
       "$LGPIO_SPEC" >"$log" 2>&1; then
    say "no lgpio wheel for $("$VENV/bin/python" -V) on $(uname -m): building it from source"
    PACKAGES=("${LGPIO_BUILD_PACKAGES[@]}")
    install_packages
    if ! PYPI=1 "$VENV/bin/python" -m pip install --disable-pip-version-check \
         --no-binary=lgpio "$LGPIO_SPEC" >"$log" 2>&1; then
      tail -n 40 "$log" >&2
      rm -f "$log"
      die "pip could not install lgpio (log above); without it no relay can switch"
    fi
  fi
  rm -f "$log"
  have=$(lgpio_version) || die "lgpio was installed into $VENV but does not import"
  say "installed lgpio $have (real GPIO through /dev/gpiochip*)"
  CHANGED=1
}

# Prints the targets `pingr init` wrote, so the installer says what it will watch.
show_targets() {
  grep -E '^  - name:|^    host:|^  # No default' "$CONF" | sed 's/^ */    /' || true
}

install_config() {
  install -d -m 755 "$CONF_DIR"
  if [ -e "$CONF" ]; then
    say "keeping the existing $CONF"
  elif in_chroot; then
    # The image's (or chroot's) network is not the one the machine will have: the first boot's
    # pingr-init.service writes it from the gateway and DNS servers found then.
    say "no $CONF yet: pingr-init.service writes it at the first boot with 'pingr init', from" \
        "the gateway and DNS servers the machine has then (loopback if none)"
    return 0
  elif systemd_running && have_systemctl; then
    # The unit reads systemd-resolved's real DNS servers, not its 127.0.0.53 stub.
    systemctl start pingr-init.service \
      || { journalctl -u pingr-init.service -n 20 --no-pager >&2 || true
           die "pingr-init.service could not write $CONF (log above)"; }
    [ -e "$CONF" ] || die "pingr-init.service did not write $CONF"
    say "wrote $CONF with 'pingr init' from this machine's gateway and DNS servers:"
    show_targets
    say "edit it, then 'systemctl restart pingr'"
  else
    "$VENV/bin/pingr" init "$CONF" >/dev/null
    chgrp pingr "$CONF"
    chmod 640 "$CONF"
    say "wrote $CONF with 'pingr init' from this machine's gateway and DNS servers:"
    show_targets
    say "edit it, then 'systemctl restart pingr'"
  fi
  if ! "$VENV/bin/pingr" check-config "$CONF" >/dev/null; then
    "$VENV/bin/pingr" check-config "$CONF" || true
    die "$CONF has errors (above); fix them and run this script again"
  fi
}

# The ping_group_range drop-in, only when the system's range does not already include pingr.
install_sysctl() {
  local gid range lo hi
  gid=$(getent group pingr | cut -d: -f3)
  if [ -f "$SYSCTL" ] || in_chroot || [ ! -r /proc/sys/net/ipv4/ping_group_range ]; then
    # Ours already, or we cannot see this system's real value (chroot): write it for boot.
    :
  else
    range=$(cat /proc/sys/net/ipv4/ping_group_range)
    read -r lo hi <<< "$range"
    if [ "$lo" -le "$gid" ] && [ "$gid" -le "$hi" ]; then
      say "unprivileged ping already allowed for gid $gid (ping_group_range $lo $hi)"
      return 0
    fi
  fi
  if sed "s/@GID@/$gid/g" "$HERE/systemd/99-pingr-ping.conf" | write "$SYSCTL" 644; then
    if in_chroot; then
      say "skipped applying $SYSCTL: in a chroot it would change the host's kernel; applies at boot"
    elif ! sysctl -q -p "$SYSCTL" 2>/dev/null; then
      # A container that may not set it: fall back to the capability, for this unit only.
      warn "cannot set net.ipv4.ping_group_range here; granting pingr CAP_NET_RAW instead"
      write "$CAPS_DROPIN" 644 <<'EOF' || true
# pingr (pi-setup.sh): net.ipv4.ping_group_range could not be set, so ICMP needs raw sockets.
[Service]
CapabilityBoundingSet=CAP_NET_RAW
AmbientCapabilities=CAP_NET_RAW
EOF
      CHANGED=1
    fi
  fi
}

install_units() {
  put "$HERE/systemd/pingr.service" "$UNIT" 644 && CHANGED=1
  put "$HERE/systemd/pingr-init.service" "$INIT_UNIT" 644 || true
  if [ -d /boot/firmware ] && [ -x /usr/local/lib/pingr/firstboot.sh ]; then
    put "$HERE/systemd/pingr-firstboot.service" /etc/systemd/system/pingr-firstboot.service 644 \
      || true
  fi
  if [ "$HWDOG" -eq 1 ]; then
    if put "$HERE/systemd/system.conf.d/pingr-hardware-watchdog.conf" "$HW_WATCHDOG" 644; then
      say "hardware watchdog configured; it takes effect after a reboot"
    fi
  fi
  # The unit's Documentation= points here.
  [ ! -f "$HERE/README.md" ] || put "$HERE/README.md" "$PREFIX/README.md" 644 || true
  sysctl_run daemon-reload
  local u
  for u in pingr-init.service pingr.service; do
    if have_systemctl && systemctl is-enabled "$u" >/dev/null 2>&1; then
      say "$u is already enabled"
    else
      sysctl_run enable "$u"
    fi
  done
}

config_port() {
  "$VENV/bin/python" - "$CONF" <<'EOF'
import sys
from pingr.config import load_config
print(load_config(sys.argv[1]).port)
EOF
}

wait_health() {
  local port=$1 deadline
  deadline=$(( $(date +%s) + WAIT ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if "$VENV/bin/python" - "$port" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/v1/health", timeout=3) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
    then
      return 0
    fi
    if ! systemctl is-active --quiet pingr.service && systemctl is-failed --quiet pingr.service; then
      journalctl -u pingr.service -n 20 --no-pager >&2 || true
      die "pingr.service failed to start (log above)"
    fi
    sleep 1
  done
  journalctl -u pingr.service -n 20 --no-pager >&2 || true
  die "no answer from /api/v1/health on port $port within ${WAIT}s"
}

start_service() {
  if [ "$START" -eq 0 ]; then
    say "not starting pingr (--no-start); it starts at boot"
    return 0
  fi
  if ! systemd_running || ! have_systemctl; then
    sysctl_run start pingr.service
    return 0
  fi
  if [ "$CHANGED" -eq 1 ] && systemctl is-active --quiet pingr.service; then
    systemctl restart pingr.service
    say "restarted pingr.service"
  elif ! systemctl is-active --quiet pingr.service; then
    systemctl start pingr.service
    say "started pingr.service"
  else
    say "pingr.service is already running"
  fi
  local port host
  port=$(config_port)
  wait_health "$port"
  host=$(hostname -I 2>/dev/null | awk '{print $1}')
  say "pingr is up: http://${host:-$(hostname)}:$port/api/v1/  (docs: /docs)"
  if [ -r "$STATE_DIR/admin.key" ]; then
    say "first admin API key (from $STATE_DIR/admin.key; send it as the X-API-Key header):"
    echo
    echo "    $(cat "$STATE_DIR/admin.key")"
    echo
  else
    say "no $STATE_DIR/admin.key: the admin key is the one in $CONF (auth.api_key), or was removed"
  fi
}

uninstall() {
  if have_systemctl; then
    if systemd_running; then
      systemctl disable --now pingr.service pingr-init.service 2>/dev/null || true
    else
      systemctl disable pingr.service pingr-init.service 2>/dev/null || true
      say "skipped 'systemctl stop pingr': systemd is not running here (chroot/container)"
    fi
  fi
  local f
  for f in "$UNIT" "$INIT_UNIT" "$CAPS_DROPIN" "$SYSCTL" "$UDEV" "$HW_WATCHDOG" \
           /etc/systemd/system/pingr-firstboot.service; do
    if [ -e "$f" ]; then rm -f "$f"; say "removed $f"; fi
  done
  rmdir /etc/systemd/system/pingr.service.d 2>/dev/null || true
  if [ -d "$PREFIX" ]; then rm -rf "$PREFIX"; say "removed $PREFIX"; fi
  sysctl_run daemon-reload
  if [ "$PURGE" -eq 1 ]; then
    for f in "$CONF_DIR" "$STATE_DIR"; do
      if [ -e "$f" ]; then rm -rf "$f"; say "removed $f"; fi
    done
    if getent passwd pingr >/dev/null; then userdel pingr; say "removed user pingr"; fi
    if getent group pingr >/dev/null; then groupdel pingr; say "removed group pingr"; fi
    # The gpio group stays: other software (and Raspberry Pi OS itself) uses it.
  else
    say "kept $CONF_DIR, $STATE_DIR and the pingr user (--purge removes them)"
  fi
  say "pingr is uninstalled"
}

if [ "$ACTION" = uninstall ]; then
  uninstall
  exit 0
fi

if [ -z "$VERSION" ]; then
  SRC=${SRC:-$HERE}
  if [ ! -f "$SRC/pyproject.toml" ] || [ ! -d "$SRC/pingr" ]; then
    die "$SRC is not a pingr checkout (use --from DIR or --version VERSION)"
  fi
  SRC=$(cd "$SRC" && pwd)
fi
[ -f "$HERE/systemd/pingr.service" ] || die "$HERE/systemd/pingr.service is missing: run this script from a pingr checkout"

check_os
install_packages
create_user
install -d -m 755 "$PREFIX"
install_pingr
install_gpio_library
install_sysctl
install_units
install_config
start_service
say "done"
