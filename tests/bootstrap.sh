#!/usr/bin/env bash
# Installs everything the test suite needs on Debian / Raspberry Pi OS, idempotently:
# Debian packages (docker.io for the Docker tests, busybox-static for their tiny image,
# mosquitto for MQTT, fping for the benchmark's reference, dnsmasq-base: the DNS server the
# DNS probe tests start on loopback, without the system service; chromium and chromium-driver:
# the browser the dashboard tests drive through Selenium, with fonts-dejavu-core for its
# screenshots), then a venv in .venv with pingr and its test extras. The Docker daemon itself
# is started by the tests (tests/dockerd.py).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(python3 python3-venv python3-dev gcc iproute2 procps curl jq wrk
          docker.io busybox-static mosquitto fping dnsmasq-base shellcheck systemd nodejs
          chromium chromium-driver fonts-dejavu-core
          debootstrap systemd-container)  # pi-setup.sh is tested in a fresh Debian root,
                                          # chrooted and booted with systemd-nspawn

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "bootstrap: ready ($(.venv/bin/python --version), pingr $(.venv/bin/pingr --version | cut -d' ' -f2))"
