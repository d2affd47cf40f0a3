"""Per-container resource usage (CPU, memory, network), sampled on the Docker collector's
interval from the engine's one-shot stats; CPU and network rates from consecutive samples."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pingr.collectors.containers import ContainerInfo
from pingr.collectors.docker import DockerCollector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usage:
    """One container's usage at one moment (rates since the previous sample; None on the
    first sample of a container, or where the engine reports nothing, e.g. no network)."""

    id: str
    name: str
    ts_ms: int
    cpu_percent: float | None
    memory_bytes: int | None
    memory_limit_bytes: int | None
    memory_percent: float | None
    net_rx_bytes_per_s: float | None
    net_tx_bytes_per_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Counters:
    at: float  # time.monotonic()
    cpu_total: int | None
    system_total: int | None
    rx: int | None
    tx: int | None


def _rate(new: int | None, old: int | None, seconds: float) -> float | None:
    if new is None or old is None or seconds <= 0:
        return None
    return round(max(0, new - old) / seconds, 1)  # counters restart with the container


class ContainerSampler:
    """Reads every running container's stats (one engine call each, no 1 s wait) on a worker
    thread; `latest` holds the newest usage per container id for /resources/top."""

    def __init__(self, docker: DockerCollector, clock_ms: Callable[[], int]) -> None:
        self.docker = docker
        self.clock_ms = clock_ms
        self.latest: dict[str, Usage] = {}
        self._prev: dict[str, _Counters] = {}
        self._one_shot = True

    async def sample(self) -> list[Usage]:
        """Sample the running containers now; [] while the engine is unavailable."""
        if not self.docker.available or self.docker.client is None:
            return []
        running = [c for c in self.docker.containers.values() if c.state == "running"]
        usages = await asyncio.to_thread(self._read_all, running)
        self.latest = {u.id: u for u in usages}
        self._prev = {cid: c for cid, c in self._prev.items() if cid in self.latest}
        return usages

    def _stats(self, cid: str) -> dict[str, Any]:
        api = self.docker.client.api
        if self._one_shot:
            try:
                return api.stats(cid, stream=False, one_shot=True)
            except Exception as exc:  # an engine older than API 1.41 has no one-shot
                if type(exc).__name__ != "InvalidVersion":
                    raise
                self._one_shot = False
        return api.stats(cid, stream=False)  # waits for the engine's second reading (~1 s)

    def _read_all(self, running: list[ContainerInfo]) -> list[Usage]:
        out = []
        for info in running:
            try:
                raw = self._stats(info.id)
            except Exception as exc:  # noqa: BLE001 - stopped or removed meanwhile
                log.debug("stats of %s: %s", info.name, exc)
                continue
            out.append(self._usage(info, raw))
        return out

    def _usage(self, info: ContainerInfo, raw: dict[str, Any]) -> Usage:
        now = time.monotonic()
        cpu = raw.get("cpu_stats") or {}
        cpu_total = (cpu.get("cpu_usage") or {}).get("total_usage")
        system_total = cpu.get("system_cpu_usage")
        percpu = (cpu.get("cpu_usage") or {}).get("percpu_usage") or []
        cpus = cpu.get("online_cpus") or len(percpu) or 1
        nets = raw.get("networks")
        rx = sum(n.get("rx_bytes", 0) for n in nets.values()) if nets else None
        tx = sum(n.get("tx_bytes", 0) for n in nets.values()) if nets else None
        prev = self._prev.get(info.id)
        self._prev[info.id] = _Counters(now, cpu_total, system_total, rx, tx)
        cpu_percent = None
        if prev is not None and None not in (cpu_total, system_total, prev.cpu_total,
                                             prev.system_total):
            # As `docker stats` computes it, between our two readings instead of the engine's.
            d_cpu, d_sys = cpu_total - prev.cpu_total, system_total - prev.system_total
            if d_sys > 0 and d_cpu >= 0:
                cpu_percent = round(d_cpu / d_sys * cpus * 100, 2)
        mem = raw.get("memory_stats") or {}
        used = limit = percent = None
        if "usage" in mem:
            stats = mem.get("stats") or {}
            # Page cache is reclaimable: `docker stats` subtracts it, and so do we.
            cache = stats.get("total_inactive_file", stats.get("inactive_file", 0))
            used = max(0, mem["usage"] - cache)
            limit = mem.get("limit") or None
            percent = round(used * 100 / limit, 2) if limit else None
        seconds = now - prev.at if prev is not None else 0.0
        return Usage(
            id=info.id, name=info.name, ts_ms=self.clock_ms(), cpu_percent=cpu_percent,
            memory_bytes=used, memory_limit_bytes=limit, memory_percent=percent,
            net_rx_bytes_per_s=_rate(rx, prev.rx if prev else None, seconds),
            net_tx_bytes_per_s=_rate(tx, prev.tx if prev else None, seconds),
        )
