"""Host and container metrics over time: samples in, per-minute / per-hour history out.

The host sampler (every `alerts.thresholds.interval`) and the container sampler (every
`docker.resync`) hand their samples here; each value is counted into its series' minute in
the store (pingr.storage.metrics: nothing is written per sample). Reads merge what is
committed with what waits for the next commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pingr.collectors.resources import Usage
from pingr.collectors.system import HostSample
from pingr.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metric:
    """How one metric is kept: its unit and the factor its values are stored with."""

    unit: str
    #: stored = round(value * scale): integers in the aggregates, as small as the precision
    #: worth keeping allows (a smaller integer is fewer bytes on every row written)
    scale: float


#: Host metrics, `GET /api/v1/system/history?metric=`.
HOST_METRICS = {
    "cpu": Metric("%", 100),
    "memory": Metric("%", 100),
    "disk": Metric("%", 100),  # per mount: ?mount=/
    "net_rx": Metric("B/s", 1),  # every interface but lo
    "net_tx": Metric("B/s", 1),
    "temperature": Metric("°C", 100),
    "load": Metric("", 100),  # 1-minute load average
}
#: Per-container metrics, `GET /api/v1/containers/{id}/resources/history`.
CONTAINER_METRICS = {
    "cpu_percent": Metric("%", 100),
    "memory_bytes": Metric("B", 1 / 1024),  # kept in KiB
    "net_rx_bytes_per_s": Metric("B/s", 1),
    "net_tx_bytes_per_s": Metric("B/s", 1),
}
#: At most this many mounts are kept per host sample (a box with many disks stays bounded).
MAX_MOUNTS = 8


def host_key(metric: str, mount: str | None = None) -> str:
    return f"host:{metric}:{mount}" if metric == "disk" else f"host:{metric}"


def container_key(name: str, metric: str) -> str:
    return f"container:{name}:{metric}"


def host_values(sample: HostSample) -> dict[str, float]:
    """The values of one host sample by series key (metrics it could not measure left out)."""
    out: dict[str, float] = {}
    if sample.cpu_percent is not None:
        out[host_key("cpu")] = sample.cpu_percent
    out[host_key("memory")] = float(sample.memory["usage_percent"])
    for disk in sample.disks[:MAX_MOUNTS]:
        out[host_key("disk", disk.mount)] = disk.usage_percent
    nics = [n for name, n in sample.nics.items() if name != "lo"]
    rx = [n.recv_bytes_per_s for n in nics if n.recv_bytes_per_s is not None]
    tx = [n.sent_bytes_per_s for n in nics if n.sent_bytes_per_s is not None]
    if rx:
        out[host_key("net_rx")] = sum(rx)
    if tx:
        out[host_key("net_tx")] = sum(tx)
    if sample.temperature_c is not None:
        out[host_key("temperature")] = sample.temperature_c
    if sample.load is not None:
        out[host_key("load")] = sample.load[0]
    return out


def _scale_of(key: str) -> float:
    metric = key.split(":")[-1] if key.startswith("container:") else key.split(":")[1]
    spec = CONTAINER_METRICS.get(metric) if key.startswith("container:") else \
        HOST_METRICS.get(metric)
    return spec.scale if spec else 1


class Resources:
    """Feeds samples to the store's metric series and reads their history back."""

    def __init__(self, store: Store, clock_ms: Callable[[], int]) -> None:
        self.store = store
        self.clock_ms = clock_ms
        self.samples = 0

    def start(self) -> None:
        self.store.load_series()

    async def _record(self, ts: int, values: dict[str, float]) -> None:
        if not values:
            return
        ids = await self.store.series_ids(values, self.clock_ms())
        self.store.add_samples(ts, {ids[k]: round(v * _scale_of(k)) for k, v in values.items()})
        self.samples += 1

    async def record_host(self, sample: HostSample | None) -> None:
        """One host sample (the host collector's, on its interval)."""
        if sample is not None:
            await self._record(sample.ts_ms, host_values(sample))

    async def record_containers(self, usages: list[Usage]) -> None:
        """One sample of every running container (the container sampler's)."""
        values: dict[str, float] = {}
        ts = None
        for u in usages:
            ts = u.ts_ms if ts is None else max(ts, u.ts_ms)
            for metric in CONTAINER_METRICS:
                value = getattr(u, metric)
                if value is not None:
                    values[container_key(u.name, metric)] = value
        if ts is not None:
            await self._record(ts, values)

    # ------------------------------------------------------------------ reading

    def disks(self) -> list[str]:
        """Mounts with a disk history."""
        prefix = "host:disk:"
        return sorted(k[len(prefix):] for k in self.store.known_series(prefix))

    def containers(self) -> list[str]:
        """Names of containers with a resources history."""
        names = {k.split(":")[1] for k in self.store.known_series("container:")}
        return sorted(names)

    def series(self, key: str, since: int, until: int, resolution: str
               ) -> list[dict[str, Any]]:
        """Points of one series: {ts, samples, avg, min, max} in the metric's own unit."""
        pk = self.store.known_series(key).get(key)
        if pk is None:
            return []
        scale = _scale_of(key)

        def unscale(v: int | None) -> float | None:
            if v is None:
                return None
            return v / scale if scale > 1 else round(v / scale)

        return [{"ts": b, "samples": n, "avg": unscale(avg), "min": unscale(lo),
                 "max": unscale(hi)}
                for b, n, avg, lo, hi in self.store.series_history(pk, since, until, resolution)]

    def container_history(self, name: str, since: int, until: int, resolution: str
                          ) -> list[dict[str, Any]]:
        """Per bucket: each container metric's average and maximum."""
        points: dict[int, dict[str, Any]] = {}
        for metric in CONTAINER_METRICS:
            for p in self.series(container_key(name, metric), since, until, resolution):
                point = points.setdefault(p["ts"], {"ts": p["ts"]})
                point[metric] = p["avg"]
                point[f"{metric}_max"] = p["max"]
        empty = {m: None for metric in CONTAINER_METRICS for m in (metric, f"{metric}_max")}
        return [{**empty, **points[ts]} for ts in sorted(points)]
