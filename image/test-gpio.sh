#!/usr/bin/env bash
# Proves, in a VM, that the image drives real GPIO lines through a real kernel GPIO driver with
# the same stack a Raspberry Pi uses (pingr -> gpiozero -> lgpio -> /dev/gpiochip0, under the
# image's hardened pingr.service), and reads the line levels from outside pingr
# (/sys/kernel/debug/gpio). Opt-in: it needs a built image (image/build.sh, ~30 min).
#
# The machine is qemu-system-aarch64 -M virt, whose PL061 GPIO controller (8 lines, driven by
# the image's own Debian kernel: CONFIG_GPIO_PL061=y) is gpiochip0. Line 3 is wired inside
# QEMU to its "gpio-key", which QMP's system_powerdown pulses high for 100 ms. The device tree
# is QEMU's own (dumped with the same options) with two changes, both outside the image:
#   - /gpio-keys is deleted, so the kernel's gpio-keys driver does not claim line 3 (and there
#     is no power key for systemd-logind to act on: system_powerdown only presses the button);
#   - /system/linux,revision = 0xa020a0, where gpiozero reads a Pi's board revision: a Compute
#     Module 3 (the Pi 3's BCM2837). gpiozero then maps BCM n to line n of gpiochip0, as on any
#     Pi up to the 4. A Compute Module, because on the 40-pin boards GPIO2/3 carry physical I2C
#     pull-ups, and gpiozero (rightly) refuses a pull-down button on GPIO3 there
#     ("PinFixedPull: GPIO3 has a physical pull-up resistor"), while QEMU's key needs one.
# The boot partition gets a pingr.yaml with hardware.backend: lgpio and
#   relay "siren" (audible, when: alert) on line 4, LED "lamp" (visual, when: alert) on line 5,
#   dead-man relay "alive" (when: healthy) on line 6, button "ack" on line 3 (pull_up: false:
#   the QEMU key drives the line high while pressed),
# a heartbeat target the test takes down and up through /ping/TOKEN/fail and /ping/TOKEN, and a
# TCP target on pingr's own port so results keep flowing (the dead-man needs a live monitor).
# SSH (authorized_keys on the card) is used to read /sys/kernel/debug/gpio and to kill pingr.
#
# Steps, each printing the levels of lines 3-6: after boot the relay and lamp are at their safe
# level (out lo) and the dead-man is energised (out hi); the target fails -> relay and lamp
# out hi; POST /api/v1/alerts/ack -> relay out lo, lamp stays out hi; the target recovers ->
# lamp out lo; it fails again -> relay out hi; system_powerdown (the button) -> relay out lo;
# `systemctl kill -s KILL pingr` -> the kernel releases every line pingr held (no longer
# requested); the PL061's direction and data registers (read through /dev/mem) show what the
# pin then does electrically. See hardware/README.md for what real kernels do.
#
# Usage: sudo image/test-gpio.sh [IMAGE]   (default: the newest image/out/pingr-*-arm64.img[.xz])
#   --timeout SECONDS   how long to wait for the API after boot (default 1200: all emulated)
#   --keep              keep the work directory (disk, console log) for inspection
#   --ssh-key FILE      log in with this existing key pair (FILE, FILE.pub) instead of a new
#                       one: for booting a kept disk again, when its card's authorized_keys may
#                       not be re-applied (pingr-firstboot needs the boot partition in time)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TIMEOUT=1200
KEEP=0
SSH_KEY=""
IMAGE=""
API_PORT=19019
SSH_PORT=19022
KEY=pingr_gpio_test_key_0123456789abcdef
TOKEN=pingr-gpio-test-heartbeat-0123
REVISION=0xa020a0
QEMU_OPTS=(-cpu cortex-a72 -smp 2 -m 1024)
MACHINE=virt,acpi=off   # no ACPI: system_powerdown then pulses PL061 line 3 (the gpio-key)

while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) TIMEOUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --ssh-key) SSH_KEY=$2; shift 2 ;;
    --inside) shift; break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "test-gpio: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) IMAGE=$1; shift ;;
  esac
done

say() { echo "test-gpio: $*"; }
die() { echo "test-gpio: FAIL: $*" >&2; exit 1; }

# ------------------------------------------------------------ inside the network namespace
if [ "${PINGR_TEST_GPIO_INSIDE:-}" = 1 ]; then
  work=$1 kernel=$2 initrd=$3 append=$4
  ip link set lo up
  t0=$(date +%s.%N)
  # restrict=on: the guest reaches nothing; only the API and SSH ports are forwarded in.
  qemu-system-aarch64 -M "$MACHINE" "${QEMU_OPTS[@]}" -dtb "$work/virt-pi.dtb" \
    -kernel "$kernel" -initrd "$initrd" -append "$append" \
    -drive "if=none,file=$work/disk.img,format=raw,id=hd" -device virtio-blk-pci,drive=hd \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$API_PORT-:9009,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22" \
    -device virtio-net-pci,netdev=n0 \
    -qmp "unix:$work/qmp.sock,server=on,wait=off" \
    -display none -monitor none -serial "file:$work/console.log" &
  qemu=$!
  trap 'kill $qemu 2>/dev/null || true; wait $qemu 2>/dev/null || true' EXIT

  api() {  # api METHOD PATH: the JSON body of a request with the admin key, or failure
    curl -fsS -X "$1" -H "X-API-Key: $KEY" "http://127.0.0.1:$API_PORT$2"
  }
  vm() {  # vm COMMAND: run a shell command in the guest as root
    ssh -q -i "$work/id_ed25519" -p "$SSH_PORT" -o BatchMode=yes -o ConnectTimeout=20 \
      -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1 "$@"
  }
  qmp() {  # qmp COMMAND [HMP-COMMAND-LINE]: one QMP command (after the handshake); prints
           # the return value when it is a string (human-monitor-command's output)
    python3 - "$work/qmp.sock" "$@" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
json.loads(f.readline())                       # the greeting
cmds = [{"execute": "qmp_capabilities"}, {"execute": sys.argv[2]}]
if len(sys.argv) > 3:
    cmds[1]["arguments"] = {"command-line": sys.argv[3]}
for cmd in cmds:
    f.write(json.dumps(cmd) + "\n"); f.flush()
    while True:
        reply = json.loads(f.readline())
        if "return" in reply or "error" in reply:
            break
    if "error" in reply:
        sys.exit(f"QMP {cmd}: {reply['error']}")
if isinstance(reply["return"], str):
    print(reply["return"].strip())
EOF
  }
  # pl061 REG: a PL061 register as the emulated hardware holds it, read by QEMU itself (not
  # the guest): GPIODATA at 0x3fc (all eight lines), GPIODIR at 0x400 (1 = output).
  pl061() { qmp human-monitor-command "xp /1wx $(( 0x9030000 + $1 ))" | awk '{print $2}'; }
  # line N: what /sys/kernel/debug/gpio says about PL061 line N ("out hi", "in lo", or
  # "released" when no program has it requested).
  gpio_dump() { vm cat /sys/kernel/debug/gpio > "$work/gpio.txt"; }
  line() {
    awk -v n="$1" '
      /^gpiochip/ { chip = ($0 ~ /pl061/); split($3, r, "-"); base = r[1] + 0; next }
      chip && $1 == ("gpio-" (base + n)) { sub(/^[^)]*\) */, ""); print $1, $2; found = 1 }
      END { if (!found) print "released" }' "$work/gpio.txt"
  }
  levels() {  # levels LABEL: one line with every test line's level
    gpio_dump
    printf 'test-gpio: %-44s button(3): %-8s relay(4): %-8s lamp(5): %-8s alive(6): %s\n' \
      "$1" "$(line 3)" "$(line 4)" "$(line 5)" "$(line 6)"
  }
  expect() {  # expect LINE WANT [SECONDS]: poll until the line is WANT, else fail
    local n=$1 want=$2 deadline=$(( $(date +%s) + ${3:-60} ))
    while :; do
      gpio_dump
      [ "$(line "$n")" = "$want" ] && return 0
      [ "$(date +%s)" -lt "$deadline" ] \
        || { cat "$work/gpio.txt" >&2; die "line $n is '$(line "$n")', expected '$want'"; }
      sleep 1
    done
  }
  check() {  # check LINE WANT: the line is WANT right now (from the last dump)
    [ "$(line "$1")" = "$2" ] || { cat "$work/gpio.txt" >&2; die "line $1 is '$(line "$1")', expected '$2'"; }
  }

  deadline=$(( $(date +%s) + TIMEOUT ))
  until vm true 2>/dev/null; do
    kill -0 "$qemu" 2>/dev/null || die "qemu exited; see $work/console.log"
    [ "$(date +%s)" -lt "$deadline" ] || die "no SSH within ${TIMEOUT}s (console: $work/console.log)"
    sleep 2
  done
  say "SSH answered after $(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $t0}") s"
  # Emulation on a busy host can be many times slower than a Pi: give pingr's start (180 s in
  # the unit) and its watchdog (60 s) room, for this boot only (/run), and nothing else.
  vm 'mkdir -p /run/systemd/system/pingr.service.d &&
      printf "[Service]\nTimeoutStartSec=20min\nWatchdogSec=10min\n" \
        > /run/systemd/system/pingr.service.d/50-emulated.conf && systemctl daemon-reload &&
      { systemctl is-failed --quiet pingr && systemctl restart --no-block pingr; true; }'
  until curl -fsS -o "$work/health.json" "http://127.0.0.1:$API_PORT/api/v1/health" 2>/dev/null; do
    kill -0 "$qemu" 2>/dev/null || die "qemu exited; see $work/console.log"
    [ "$(date +%s)" -lt "$deadline" ] || die "no /api/v1/health within ${TIMEOUT}s (console: $work/console.log)"
    sleep 2
  done
  say "pingr answered after $(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $t0}") s: $(cat "$work/health.json")"
  api GET /api/v1/hardware > "$work/hardware.json" || die "GET /api/v1/hardware failed"
  say "GET /api/v1/hardware: $(cat "$work/hardware.json")"
  grep -q '"real_pins":true' "$work/hardware.json" || die "pingr is not on real pins"
  gpio_dump
  say "guest kernel $(vm uname -r); /sys/kernel/debug/gpio:"
  sed 's/^/test-gpio:   /' "$work/gpio.txt"
  grep -q '^gpiochip0: GPIOs [0-9]*-[0-9]*, parent: [a-z]*/9030000.pl061' "$work/gpio.txt" \
    || die "gpiochip0 is not the PL061 at 0x9030000"
  vm "ls -l /dev/gpiochip*; readlink -f /sys/bus/gpio/devices/gpiochip*" \
    | sed 's/^/test-gpio:   /' || true

  # 1. after boot: nothing down, so relay and lamp safe (out lo); the dead-man energised.
  expect 6 "out hi" 60
  expect 4 "out lo" 10
  check 5 "out lo"
  check 3 "in lo"
  levels "1. after boot (nothing down):"
  # 2. the target goes down: relay and lamp active.
  curl -fsS "http://127.0.0.1:$API_PORT/ping/$TOKEN/fail" >/dev/null
  expect 4 "out hi" 60
  expect 5 "out hi" 10
  levels "2. target down (/ping/TOKEN/fail):"
  # 3. acknowledged through the API: the audible relay returns, the visual lamp stays.
  api POST /api/v1/alerts/ack >/dev/null
  expect 4 "out lo" 30
  check 5 "out hi"
  levels "3. POST /api/v1/alerts/ack:"
  # 4. the target recovers: the lamp goes off too.
  curl -fsS "http://127.0.0.1:$API_PORT/ping/$TOKEN" >/dev/null
  expect 5 "out lo" 60
  check 4 "out lo"
  levels "4. target up again (/ping/TOKEN):"
  # 5. down again: a new alert, relay active.
  curl -fsS "http://127.0.0.1:$API_PORT/ping/$TOKEN/fail" >/dev/null
  expect 4 "out hi" 60
  levels "5. target down again:"
  # 6. the button: QEMU pulses line 3 high for 100 ms; pingr acknowledges.
  qmp system_powerdown
  expect 4 "out lo" 30
  check 5 "out hi"
  levels "6. QMP system_powerdown (button, line 3):"
  # Who acknowledged the newest alert (the API's ack above was "api key ...", this one the button).
  api GET "/api/v1/alerts?state=all&limit=1" > "$work/alerts.json" || die "GET /api/v1/alerts failed"
  by=$(python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); a=a.get("items", a) if isinstance(a, dict) else a; print(a[0].get("acknowledged_by"))' "$work/alerts.json")
  say "   the newest alert was acknowledged by: $by"
  case "$by" in *button*|*ack*) ;; *) die "the newest alert was not acknowledged by the button: $by" ;; esac
  kill -0 "$qemu" 2>/dev/null || die "the VM powered off on system_powerdown"
  curl -fsS "http://127.0.0.1:$API_PORT/ping/$TOKEN" >/dev/null
  expect 5 "out lo" 60
  levels "7. target up again:"
  regs() {  # the PL061's registers as QEMU holds them, decoded for lines 3-6
    local data dir n out=""
    data=$(( $(pl061 0x3fc) )) dir=$(( $(pl061 0x400) ))
    for n in 3 4 5 6; do
      out="$out line $n: $( (( dir >> n & 1 )) && echo out || echo in) $(( data >> n & 1 )),"
    done
    printf 'GPIODATA=0x%02x GPIODIR=0x%02x:%s' "$data" "$dir" "${out%,}"
  }
  say "   PL061 registers before the kill (read by QEMU): $(regs)"
  # 8. pingr killed: the kernel releases its lines. Read at once (systemd restarts pingr 5 s
  # later): the guest's view, and the PL061's registers as the emulated hardware holds them.
  vm 'systemctl kill -s KILL pingr.service; sleep 1; cat /sys/kernel/debug/gpio' > "$work/gpio.txt" \
    || die "could not kill pingr over SSH"
  after=$(regs)
  printf 'test-gpio: %-44s button(3): %-8s relay(4): %-8s lamp(5): %-8s alive(6): %s\n' \
    "8. systemctl kill -s KILL pingr (+1 s):" "$(line 3)" "$(line 4)" "$(line 5)" "$(line 6)"
  say "   PL061 registers after the kill (read by QEMU): $after"
  check 6 "released"
  # What the pin does electrically once released is the GPIO driver's business, not pingr's.
  dead="falls to input"
  if (( $(pl061 0x400) >> 6 & 1 )); then
    dead="stays an output at level $(( $(pl061 0x3fc) >> 6 & 1 ))"
    say "   NOT SHOWN BY THIS VM: the kernel released the dead-man line, but the PL061 still drives"
    say "   it ($dead): its driver has no free hook that turns a released line back into an"
    say "   input. The Pi's BCM283x pin controller under Debian's kernel has one; Raspberry Pi OS's"
    say "   keeps outputs unless dtparam=strict_gpiod (hardware/README.md)."
  fi
  # 9. systemd restarts it (Restart=on-failure) and the dead-man is energised again.
  expect 6 "out hi" 900   # a whole start of pingr: minutes under emulation on a busy host
  levels "9. restarted by systemd:"
  say "PASS: relay, lamp, button and dead-man on PL061 lines through gpiozero + lgpio;" \
      "after SIGKILL the kernel released every line, and the PL061's dead-man line $dead"
  exit 0
fi

# ------------------------------------------------------------ outside: prepare, then enter
[ "$(id -u)" -eq 0 ] || die "run as root (unshare --net needs it)"
need=()
for p in qemu-system-arm ipxe-qemu mtools xz-utils curl fdisk iproute2 util-linux \
         device-tree-compiler openssh-client python3; do
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

work=$(mktemp -d /var/tmp/pingr-gpio-test.XXXXXX)
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { if [ "$KEEP" -eq 1 ]; then say "kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
say "image $IMAGE"
case "$IMAGE" in
  *.xz) xz -dc "$IMAGE" > "$work/disk.img" ;;
  *) cp --sparse=always "$IMAGE" "$work/disk.img" ;;
esac
truncate -s +1G "$work/disk.img"

start=$(sfdisk -d "$work/disk.img" | awk -F'[=,]' '/start=/ {gsub(/ /,"",$2); print $2; exit}')
fat="$work/disk.img@@$(( start * 512 ))"
files=$(mdir -b -i "$fat" ::/ | sed 's|^::/||')
kernel_name=$(echo "$files" | grep -m1 '^vmlinuz-') || die "no vmlinuz-* on the boot partition"
initrd_name=$(echo "$files" | grep -m1 '^initrd.img-') || die "no initrd.img-* on the boot partition"
mcopy -n -i "$fat" "::/$kernel_name" "$work/vmlinuz"
mcopy -n -i "$fat" "::/$initrd_name" "$work/initrd"
cmdline=$(mtype -i "$fat" ::/cmdline.txt | tr -d '\r\n')
append=""
for word in $cmdline; do
  case "$word" in console=*) ;; *) append="$append $word" ;; esac
done
# A busy host can make device discovery slower than systemd's 90 s default: wait longer, so the
# boot partition is mounted and its files applied (this boot's command line only).
append="${append# } console=ttyAMA0 systemd.default_timeout_start_sec=600"

# QEMU's own device tree for exactly this machine, minus gpio-keys, plus a Pi board revision.
qemu-system-aarch64 -M "$MACHINE,dumpdtb=$work/virt.dtb" "${QEMU_OPTS[@]}" -display none >/dev/null
dtc -q -I dtb -O dts -o "$work/virt.dts" "$work/virt.dtb"
cat > "$work/virt-pi.dts" <<EOF
/include/ "$work/virt.dts"
/ {
	/delete-node/ gpio-keys;
	system {
		linux,revision = <$REVISION>;
	};
};
EOF
dtc -q -I dts -O dtb -o "$work/virt-pi.dtb" "$work/virt-pi.dts"
say "device tree: QEMU virt's, without /gpio-keys, with /system/linux,revision = <$REVISION>"

if [ -n "$SSH_KEY" ]; then
  install -m 600 "$SSH_KEY" "$work/id_ed25519"
  install -m 644 "$SSH_KEY.pub" "$work/id_ed25519.pub"
else
  ssh-keygen -q -t ed25519 -N '' -f "$work/id_ed25519"
fi
cat > "$work/pingr.yaml" <<EOF
# Put on the boot partition by image/test-gpio.sh.
host: 0.0.0.0
port: 9009
auth:
  api_key: $KEY
alerts:
  stale_factor: 10
targets:
  - name: gpio-test-heartbeat
    type: heartbeat
    token: $TOKEN
    period: 1h
    grace: 1h
    interval: 2s
  - name: own-api
    type: tcp
    host: 127.0.0.1
    port: 9009
    interval: 2s
hardware:
  backend: lgpio
  lamp_test:
    at_start: false
  outputs:
    - {name: siren, type: relay, pin: 4, audible: true}
    - {name: lamp, type: led, pin: 5}
    - {name: alive, type: relay, pin: 6, when: healthy}
  buttons:
    - {name: ack, pin: 3, pull_up: false, action: acknowledge}
EOF
mcopy -o -i "$fat" "$work/pingr.yaml" ::/pingr.yaml
mcopy -o -i "$fat" "$work/id_ed25519.pub" ::/authorized_keys
say "booting (TCG emulation, expect minutes; console log: $work/console.log)"
PINGR_TEST_GPIO_INSIDE=1 unshare --net -- "$0" --timeout "$TIMEOUT" --inside "$work" \
  "$work/vmlinuz" "$work/initrd" "$append"
