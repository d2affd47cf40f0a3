"""Read (never probe) the machine's default gateway and DNS servers for `pingr init`."""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path


def default_gateways(route_file: str = "/proc/net/route") -> list[str]:
    """IPv4 default gateways from the kernel routing table, in metric order."""
    found: list[tuple[int, str]] = []
    try:
        lines = Path(route_file).read_text().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        dest, gateway, flags, metric = fields[1], fields[2], int(fields[3], 16), int(fields[6])
        # RTF_UP (0x1) and RTF_GATEWAY (0x2), destination 0.0.0.0: a default route.
        if dest == "00000000" and flags & 0x3 == 0x3:
            addr = socket.inet_ntoa(struct.pack("<L", int(gateway, 16)))
            found.append((metric, addr))
    return list(dict.fromkeys(a for _, a in sorted(found)))


def dns_servers(resolv_conf: str = "/etc/resolv.conf") -> list[str]:
    """Nameservers from resolv.conf; systemd-resolved's stub (127.0.0.53) is skipped."""
    try:
        lines = Path(resolv_conf).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            addr = parts[1].split("%")[0]
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                continue
            if not ip.is_loopback:
                out.append(str(ip))
    return list(dict.fromkeys(out))
