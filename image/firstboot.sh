#!/bin/sh
# pingr image: apply the settings a user left on the SD card's FAT partition, at every boot
# before pingr starts, and on the first boot grow the root partition to fill the card.
# Run by pingr-firstboot.service; see image/README.md for the files it reads.
set -eu

BOOT=/boot/firmware
DONE=/var/lib/pingr-firstboot/grown
PINGR=/opt/pingr/venv/bin/pingr

log() { echo "pingr-firstboot: $*"; }

# Strips CR (files edited on Windows) and surrounding blanks from a key=value file's value.
value() { sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$2" | tr -d '\r' | tail -n1 \
  | sed 's/[[:space:]]*$//'; }

grow_root() {
  [ ! -e "$DONE" ] || return 0
  src=$(findmnt -no SOURCE /)
  name=$(basename "$src")
  disk=/dev/$(lsblk -no PKNAME "$src")
  part=$(cat "/sys/class/block/$name/partition")
  # ", +" = keep the start, take all free space after it. The disk is in use (it is /), so the
  # kernel is told about the new size with partx rather than a re-read.
  if echo ", +" | sfdisk --force --no-reread --no-tell-kernel -q -N "$part" "$disk"; then
    partx -u "$disk" || true
    resize2fs "$src" >/dev/null 2>&1 || true
    log "grew $src to $(lsblk -bno SIZE "$src" | awk '{printf "%d MiB", $1/1048576}')"
  else
    log "could not grow $src; it keeps its size"
  fi
  mkdir -p "$(dirname "$DONE")"
  touch "$DONE"
}

apply_pingr_yaml() {
  f=$BOOT/pingr.yaml
  [ -f "$f" ] || return 0
  if cmp -s "$f" /etc/pingr/pingr.yaml; then
    return 0
  fi
  if out=$("$PINGR" check-config "$f" 2>&1); then
    install -m 640 -o root -g pingr "$f" /etc/pingr/pingr.yaml
    log "applied $f to /etc/pingr/pingr.yaml"
  else
    # Never replace a working config with a broken one; the reasons go to the journal.
    log "NOT applying $f, it has errors:"
    echo "$out" | sed 's/^/pingr-firstboot:   /'
  fi
}

apply_hostname() {
  f=$BOOT/hostname.txt
  [ -f "$f" ] || return 0
  name=$(tr -d '\r\n[:space:]' < "$f" | tr '[:upper:]' '[:lower:]')
  case "$name" in
    ''|-*|*[!a-z0-9-]*) log "ignoring hostname.txt: '$name' is not a valid hostname"; return 0 ;;
  esac
  [ "$(cat /etc/hostname)" != "$name" ] || return 0
  echo "$name" > /etc/hostname
  sed -i "s/^127\.0\.1\.1[[:space:]].*/127.0.1.1\t$name/" /etc/hosts
  hostname "$name"
  log "hostname set to $name"
}

apply_wifi() {
  f=$BOOT/wifi.txt
  [ -f "$f" ] || return 0
  ssid=$(value ssid "$f")
  psk=$(value psk "$f")
  country=$(value country "$f")
  if [ -z "$ssid" ]; then
    log "ignoring wifi.txt: no ssid= line"
    return 0
  fi
  conf=/etc/wpa_supplicant/wpa_supplicant-wlan0.conf
  umask 077
  {
    echo "ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev"
    echo "update_config=0"
    [ -z "$country" ] || echo "country=$country"
    echo "network={"
    printf '    ssid="%s"\n' "$ssid"
    if [ -n "$psk" ]; then
      printf '    psk="%s"\n' "$psk"
    else
      echo "    key_mgmt=NONE"
    fi
    echo "}"
  } > "$conf"
  umask 022
  cat > /etc/systemd/network/30-pingr-wlan.network <<'EOF'
[Match]
Name=wlan0

[Network]
DHCP=yes
EOF
  systemctl enable wpa_supplicant@wlan0.service >/dev/null 2>&1 || true
  systemctl start --no-block wpa_supplicant@wlan0.service || true
  # The passphrase now lives only in the root filesystem (mode 0600), not on a FAT partition
  # that any computer can read.
  rm -f "$f"
  log "wifi configured for '$ssid'${country:+ (country $country)}; removed wifi.txt from the card"
}

apply_network() {
  f=$BOOT/network.txt
  [ -f "$f" ] || return 0
  address=$(value address "$f")
  gateway=$(value gateway "$f")
  dns=$(value dns "$f")
  out=/etc/systemd/network/10-pingr-static.network
  if [ -z "$address" ]; then
    [ ! -e "$out" ] || { rm -f "$out"; log "network.txt has no address=: back to DHCP"; }
    return 0
  fi
  tmp=$(mktemp)
  {
    printf '[Match]\nName=e*\n\n[Network]\nAddress=%s\n' "$address"
    [ -z "$gateway" ] || echo "Gateway=$gateway"
    for d in $(echo "$dns" | tr ',' ' '); do echo "DNS=$d"; done
  } > "$tmp"
  if cmp -s "$tmp" "$out"; then rm -f "$tmp"; return 0; fi
  install -m 644 "$tmp" "$out"
  rm -f "$tmp"
  log "static wired address $address${gateway:+ via $gateway}"
}

# raspi-firmware rewrites config.txt at every kernel update and appends
# /etc/default/raspi-firmware-custom to it: copy the card's lines of that section back there, so
# lines a user added on the card (gpio=...=op,dh for relays) survive the next rewrite.
keep_config_txt() {
  f=$BOOT/config.txt
  marker="# Inserted by /etc/default/raspi-firmware-custom"
  [ -f "$f" ] && grep -qxF "$marker" "$f" || return 0
  tmp=$(mktemp)
  tr -d '\r' < "$f" | sed -n "\|^$marker\$|,\$p" | sed 1d > "$tmp"
  if cmp -s "$tmp" /etc/default/raspi-firmware-custom; then rm -f "$tmp"; return 0; fi
  install -m 644 "$tmp" /etc/default/raspi-firmware-custom
  rm -f "$tmp"
  log "config.txt: your lines after '$marker' are kept across kernel updates"
}

# Wi-Fi firmware Debian does not ship (the Pi Zero 2 W's brcmfmac43436*): files put in
# wifi-firmware/ on the card are installed into /lib/firmware/brcm, and the driver reloaded.
apply_wifi_firmware() {
  dir=$BOOT/wifi-firmware
  [ -d "$dir" ] || return 0
  new=0
  for f in "$dir"/*; do
    [ -f "$f" ] || continue
    dest=/lib/firmware/brcm/$(basename "$f")
    cmp -s "$f" "$dest" && continue
    install -D -m 644 "$f" "$dest"
    new=1
    log "installed Wi-Fi firmware $(basename "$f")"
  done
  if [ "$new" -eq 1 ] && grep -q '^brcmfmac ' /proc/modules; then
    if ! { modprobe -r brcmfmac 2>/dev/null && modprobe brcmfmac; }; then
      log "reboot to load the new Wi-Fi firmware"
    fi
  fi
}

apply_ssh() {
  f=$BOOT/authorized_keys
  if [ -f "$f" ]; then
    install -d -m 700 /root/.ssh
    tr -d '\r' < "$f" > /root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
    # Host keys are made per card, on the first boot that enables SSH.
    ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A >/dev/null
    if ! systemctl is-enabled --quiet ssh.service; then
      systemctl enable ssh.service >/dev/null 2>&1
      log "SSH enabled for the keys in authorized_keys (key login only, no passwords)"
    fi
    systemctl start --no-block ssh.service || true
  elif systemctl is-enabled --quiet ssh.service 2>/dev/null; then
    systemctl disable --now --no-block ssh.service >/dev/null 2>&1 || true
    rm -f /root/.ssh/authorized_keys
    log "authorized_keys is gone from the card: SSH disabled"
  fi
}

grow_root
keep_config_txt
apply_wifi_firmware
apply_hostname
apply_network
apply_wifi
apply_ssh
apply_pingr_yaml
