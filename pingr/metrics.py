"""Prometheus metrics: a collector that reads the monitor's memory at scrape time."""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from pingr.models import Result, Target
from pingr.monitor import Monitor
from pingr.settings import MetricsConfig
from pingr.store import Store

log = logging.getLogger(__name__)


class PingrCollector:
    """Builds every pingr metric family from current state on each scrape.

    Nothing is kept per target between scrapes, so a deleted target's series disappear with it
    and the label sets stay as bounded as the target list. Only the probe counters live here,
    keyed by probe type: a closed set (icmp, http, tcp, …).
    """

    def __init__(self, monitor: Monitor, store: Store) -> None:
        self.monitor = monitor
        self.store = store
        self.probes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def on_result(self, target: Target, result: Result) -> None:
        """Count one probe result (a monitor result listener: memory only)."""
        kind = target.spec.type
        self.probes[kind] += 1
        if not result.success:
            self.errors[kind] += 1

    def collect(self) -> Iterator[Any]:
        """Yield the metric families (prometheus_client's custom-collector protocol)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        monitor = self.monitor
        up = GaugeMetricFamily("pingr_target_up",
                               "1 when the target's last probe succeeded, 0 when it failed",
                               labels=["target", "type"])
        state = GaugeMetricFamily("pingr_target_state",
                                  "1 for the target's current state (up, down, unreachable, "
                                  "pending, paused)", labels=["target", "state"])
        latency = GaugeMetricFamily("pingr_target_latency_seconds",
                                    "Latency of the target's last successful probe",
                                    labels=["target", "type"])
        failures = GaugeMetricFamily("pingr_target_consecutive_failures",
                                     "Consecutive failed probes of the target", labels=["target"])
        threshold = GaugeMetricFamily("pingr_target_failure_threshold",
                                      "Consecutive failures that make the target down",
                                      labels=["target"])
        open_alerts = 0
        for ts in monitor.states():
            name, kind = ts.target.name, ts.target.spec.type
            state.add_metric([name, ts.status], 1)
            failures.add_metric([name], ts.failures)
            threshold.add_metric([name], ts.target.spec.failure_threshold)
            if ts.alert is not None:
                open_alerts += 1
            if ts.last is None or not ts.target.enabled:
                continue
            up.add_metric([name, kind], 1 if ts.last.success else 0)
            if ts.last.success and ts.last.latency_ms is not None:
                latency.add_metric([name, kind], ts.last.latency_ms / 1000)
        yield from (up, state, latency, failures, threshold)

        snap = monitor.snapshot()
        yield GaugeMetricFamily("pingr_alert", "1 when alert-status reports an alert",
                                value=1 if snap.alert else 0)
        yield GaugeMetricFamily("pingr_failing_targets",
                                "Targets counted in alert-status failing_targets",
                                value=len(snap.failing))
        yield GaugeMetricFamily("pingr_open_alerts",
                                "Open alerts, acknowledged or not", value=open_alerts)
        yield GaugeMetricFamily("pingr_acknowledged_alerts", "Open alerts that are acknowledged",
                                value=len(snap.acknowledged))
        yield GaugeMetricFamily("pingr_monitor_stale",
                                "1 when no probe results are arriving (the monitor is frozen)",
                                value=1 if snap.stale else 0)

        probes = CounterMetricFamily("pingr_probes", "Probes run, by probe type", labels=["type"])
        errors = CounterMetricFamily("pingr_probe_errors", "Failed probes, by probe type",
                                     labels=["type"])
        for kind in sorted(self.probes):
            probes.add_metric([kind], self.probes[kind])
            errors.add_metric([kind], self.errors[kind])
        yield probes
        yield errors

        store = self.store
        yield CounterMetricFamily("pingr_storage_rows_written",
                                  "Result rows written to SQLite", value=store.rows_written)
        yield CounterMetricFamily("pingr_storage_dropped_results",
                                  "Results dropped because the database could not take them",
                                  value=store.dropped_results)
        yield GaugeMetricFamily("pingr_storage_write_ok",
                                "0 while database writes are failing",
                                value=0 if store.last_error else 1)
        yield GaugeMetricFamily("pingr_storage_database_bytes",
                                "Size of the SQLite database file and its WAL",
                                value=_db_bytes(store.path))


class ProcessMetrics:
    """The standard `process_*` families (the names and meaning of prometheus_client's
    ProcessCollector), read through psutil and os.times() rather than /proc/self/stat.

    /proc/self/stat is the file qemu-user fakes (zeros for memory and CPU time), and it does not
    exist off Linux; /proc/self/statm (psutil's memory figures) and times() are real there.
    """

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()

    def collect(self) -> Iterator[Any]:
        import psutil
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        mem = self.process.memory_info()
        yield GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                value=mem.vms)
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size in bytes.",
                                value=mem.rss)
        yield GaugeMetricFamily("process_start_time_seconds",
                                "Start time of the process since unix epoch in seconds.",
                                value=self.process.create_time())
        times = os.times()
        yield CounterMetricFamily("process_cpu_seconds_total",
                                  "Total user and system CPU time spent in seconds.",
                                  value=times.user + times.system)
        if hasattr(self.process, "num_fds"):  # POSIX only
            with contextlib.suppress(psutil.Error):
                yield GaugeMetricFamily("process_open_fds", "Number of open file descriptors.",
                                        value=self.process.num_fds())
        try:
            import resource
        except ImportError:
            return
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        yield GaugeMetricFamily("process_max_fds", "Maximum number of open file descriptors.",
                                value=float("inf") if soft == resource.RLIM_INFINITY else soft)


def _db_bytes(path: Any) -> int:
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += (path.parent / (path.name + suffix)).stat().st_size
        except OSError:
            pass
    return total


class Metrics:
    """The metrics part: its own registry (never the global one), built on the first scrape."""

    def __init__(self, config: MetricsConfig, monitor: Monitor, store: Store) -> None:
        self.config = config
        self.collector = PingrCollector(monitor, store)
        #: Built on the first scrape: prometheus_client costs several MB of RAM, which a Pi
        #: Zero that nobody scrapes should not pay.
        self._registry: Any = None
        #: Count one probe result (memory only; the collector's own method, no extra call).
        self.count: Callable[[Target, Result], None] = self.collector.on_result

    @property
    def registry(self) -> Any:
        """This App's own registry (never the global one): tests and reloads build several
        Apps in one process, and the global registry refuses a second collector of a name."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry
            from prometheus_client.gc_collector import GCCollector
            from prometheus_client.platform_collector import PlatformCollector

            registry = CollectorRegistry(auto_describe=False)
            registry.register(self.collector)
            registry.register(ProcessMetrics())
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
            self._registry = registry
        return self._registry

    def render(self) -> bytes:
        """The current metrics in the Prometheus text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
