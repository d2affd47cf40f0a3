"""Host metrics (psutil) sampled in the background, so a request never sleeps to measure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from pingr.collectors.pi import PiHealth, PiReader
from pingr.timeutil import now_ms

log = logging.getLogger(__name__)

#: Filesystems that are block-backed but never "a disk the user fills": snap and live images.
_SKIP_FSTYPES = {"squashfs", "iso9660", "udf"}


def _pct(used: float, total: float) -> float:
    return round(used * 100 / total, 1) if total else 0.0


@dataclass(frozen=True)
class DiskUsage:
    """One real mount's usage."""

    mount: str
    device: str
    fstype: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    usage_percent: float
    read_only: bool


@dataclass(frozen=True)
class NicSample:
    """One interface's counters and its throughput since the previous sample."""

    bytes_sent: int
    bytes_recv: int
    packets_sent: int
    packets_recv: int
    errin: int
    errout: int
    dropin: int
    dropout: int
    sent_bytes_per_s: float | None
    recv_bytes_per_s: float | None
    is_up: bool | None


@dataclass(frozen=True)
class HostSample:
    """Everything the sampler read at one moment (`ts_ms` UTC epoch ms)."""

    ts_ms: int
    cpu_percent: float | None  # None until two readings exist to compare
    per_cpu_percent: list[float] | None
    cores: int
    physical_cores: int | None
    load: tuple[float, float, float] | None
    freq_mhz: dict[str, float | None] | None
    memory: dict[str, int | float]
    swap: dict[str, int | float]
    disks: list[DiskUsage]
    nics: dict[str, NicSample]
    pi: PiHealth = field(default_factory=lambda: PiHealth(available=False))
    #: SoC temperature on a Pi, else the first thermal zone's (None where there is none).
    temperature_c: float | None = None

    def disk(self, mount: str) -> DiskUsage | None:
        """The usage of one mount point, if it was sampled."""
        return next((d for d in self.disks if d.mount == mount), None)


def real_disks(extra_mounts: list[str] | tuple[str, ...] = ("/",)) -> list[DiskUsage]:
    """Usage of block-backed mounts (pseudo filesystems excluded), plus `extra_mounts`.

    `/` and configured mounts are always included: inside a container `/` is an overlay,
    which psutil counts as a pseudo filesystem, yet it is the disk that fills up.
    """
    parts = {p.mountpoint: p for p in psutil.disk_partitions(all=False)
             if p.fstype not in _SKIP_FSTYPES}
    if any(m not in parts for m in extra_mounts):
        for p in psutil.disk_partitions(all=True):
            if p.mountpoint in extra_mounts and p.mountpoint not in parts:
                parts[p.mountpoint] = p
    out = []
    seen_devices: set[tuple[str, str]] = set()
    if "/" in extra_mounts and "/" not in parts:
        root = _unlisted_root()
        if root is not None:
            seen_devices.add((root.device, f"{root.total_bytes}:{root.used_bytes}"))
            out.append(root)
    for mount in sorted(parts):
        p = parts[mount]
        try:
            usage = psutil.disk_usage(mount)
        except OSError:  # unmounted meanwhile, or no permission
            continue
        # Bind mounts of the same filesystem would count the same bytes twice.
        key = (p.device, f"{usage.total}:{usage.used}")
        if key in seen_devices and mount not in extra_mounts:
            continue
        seen_devices.add(key)
        out.append(DiskUsage(mount, p.device, p.fstype, usage.total, usage.used, usage.free,
                             _pct(usage.used, usage.used + usage.free),
                             "ro" in p.opts.split(",")))
    return out


def _unlisted_root() -> DiskUsage | None:
    """The root filesystem when no mount entry names "/": in a chroot the mount table lists
    host paths only, yet `/` is still this process's disk and the one that fills up (reported
    as "not mounted" it would raise a false disk alert). Its device is found through sysfs
    where it is a block device; its filesystem type is not known from here."""
    try:
        usage = psutil.disk_usage("/")
        st = os.stat("/")
        read_only = bool(os.statvfs("/").f_flag & os.ST_RDONLY)
    except OSError:
        return None
    device = ""
    with contextlib.suppress(OSError):
        name = os.path.basename(os.readlink(
            f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"))
        device = f"/dev/{name}"
    return DiskUsage("/", device, "", usage.total, usage.used, usage.free,
                     _pct(usage.used, usage.used + usage.free), read_only)


class HostSampler:
    """Reads psutil (and the Pi's kernel files) off the event loop when the scheduler says.

    Readers (API routes, thresholds) only look at `latest`; nothing here blocks a request.
    """

    def __init__(self, interval: float = 5.0, *, mounts: list[str] | None = None,
                 pi: PiReader | None = None, clock_ms: Callable[[], int] | None = None) -> None:
        self.interval = interval
        self.mounts = list(mounts or ["/"])
        self.pi = pi or PiReader("/")
        self.clock_ms = clock_ms or now_ms
        self.latest: HostSample | None = None
        self.hostname = socket.gethostname()
        self._primed = False
        self._prev_net: tuple[float, dict[str, Any]] | None = None

    def uptime(self) -> float:
        """Seconds since the machine booted."""
        return round(time.time() - psutil.boot_time(), 1)

    def collect(self) -> HostSample:
        """Take one sample (blocking; runs on a worker thread)."""
        # cpu_percent(None) compares with the previous call: the sampler's own cadence is the
        # measuring window, so nothing ever sleeps to measure.
        cpu = psutil.cpu_percent(interval=None)
        per_cpu = psutil.cpu_percent(interval=None, percpu=True)
        primed, self._primed = self._primed, True
        try:
            load = tuple(round(x, 2) for x in psutil.getloadavg())
        except (AttributeError, OSError):
            load = None
        try:
            f = psutil.cpu_freq()
            freq = None if f is None else {
                "current": round(f.current, 1),
                "min": round(f.min, 1) or None,
                "max": round(f.max, 1) or None,
            }
        except (OSError, NotImplementedError):  # some ARM kernels have no cpufreq
            freq = None
        vm = psutil.virtual_memory()
        sw = psutil.swap_memory()
        memory = {"total_bytes": vm.total, "available_bytes": vm.available,
                  "used_bytes": vm.total - vm.available, "free_bytes": vm.free,
                  "usage_percent": _pct(vm.total - vm.available, vm.total)}
        swap = {"total_bytes": sw.total, "used_bytes": sw.used, "free_bytes": sw.free,
                "usage_percent": _pct(sw.used, sw.total)}
        now = time.monotonic()
        counters = psutil.net_io_counters(pernic=True)
        try:
            stats = psutil.net_if_stats()
        except OSError:
            stats = {}
        prev = self._prev_net
        nics = {}
        for name, c in counters.items():
            sent_rate = recv_rate = None
            if prev is not None and name in prev[1] and now > prev[0]:
                dt = now - prev[0]
                old = prev[1][name]
                # Counters restart when an interface is re-created: no negative rates.
                sent_rate = round(max(0, c.bytes_sent - old.bytes_sent) / dt, 1)
                recv_rate = round(max(0, c.bytes_recv - old.bytes_recv) / dt, 1)
            st = stats.get(name)
            nics[name] = NicSample(c.bytes_sent, c.bytes_recv, c.packets_sent, c.packets_recv,
                                   c.errin, c.errout, c.dropin, c.dropout, sent_rate, recv_rate,
                                   st.isup if st else None)
        self._prev_net = (now, counters)
        pi = self.pi.read()
        return HostSample(
            ts_ms=self.clock_ms(),
            cpu_percent=round(cpu, 1) if primed else None,
            per_cpu_percent=[round(x, 1) for x in per_cpu] if primed else None,
            cores=psutil.cpu_count() or os.cpu_count() or 1,
            physical_cores=psutil.cpu_count(logical=False),
            load=load,  # type: ignore[arg-type]
            freq_mhz=freq,
            memory=memory,
            swap=swap,
            disks=real_disks(self.mounts),
            nics=nics,
            pi=pi,
            temperature_c=pi.temperature_c if pi.available else self.pi.temperature(),
        )

    async def sample(self) -> HostSample:
        """Take a sample now (off the loop) and keep it as `latest`."""
        sample = await asyncio.to_thread(self.collect)
        self.latest = sample
        return sample
