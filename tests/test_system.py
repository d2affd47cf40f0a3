"""Host metrics API (background sampler) and thresholds as alert sources, with persistence."""

from __future__ import annotations

import time

import psutil

from pingr.collectors.settings import ThresholdsConfig
from pingr.collectors.system import DiskUsage, HostSample
from pingr.collectors.thresholds import ThresholdWatcher
from pingr.monitor import Monitor
from tests.conftest import make_config, running_app

FAST = {"interval": "1s"}


async def failing_names(run) -> set[str]:
    status = (await run.client.get("/api/v1/alert-status")).json()
    return {f["name"] for f in status["failing_targets"]}


async def test_system_shape_and_details(tmp_path):
    cfg = make_config(tmp_path, alerts={"thresholds": FAST})
    async with running_app(cfg) as run:
        c = run.client
        # The CPU figure needs two readings; the sampler takes the second within a second.
        body = await run.wait_for(lambda: _cpu_ready(c), timeout=10)
        assert set(body) >= {"hostname", "uptime", "cpu", "memory", "disk", "network",
                             "containers"}
        assert body["hostname"] and body["uptime"] > 0
        assert body["cpu"]["cores"] == psutil.cpu_count()
        assert 0 <= body["cpu"]["usage_percent"] <= 100
        assert body["memory"]["total_bytes"] == psutil.virtual_memory().total
        assert 0 < body["memory"]["used_bytes"] < body["memory"]["total_bytes"]
        # "/" is listed even where the mount table does not name it (a chroot lists host paths).
        root = next(d for d in body["disk"] if d["mount"] == "/")
        assert set(root) >= {"mount", "total_bytes", "used_bytes", "usage_percent"}
        assert root["total_bytes"] == psutil.disk_usage("/").total
        assert set(body["network"]) == {"bytes_sent", "bytes_recv"}
        # No Docker socket configured here: counts are null, not made up.
        assert body["containers"] == {"running": None, "stopped": None, "unhealthy": None}

        cpu = (await c.get("/api/v1/system/cpu")).json()
        assert len(cpu["per_core_percent"]) == cpu["cores"]
        assert set(cpu["load_average"]) == {"1m", "5m", "15m"}
        mem = (await c.get("/api/v1/system/memory")).json()
        assert set(mem) >= {"memory", "swap"} and "total_bytes" in mem["swap"]
        disks = (await c.get("/api/v1/system/disk")).json()["disks"]
        assert all(d["fstype"] not in ("proc", "sysfs", "tmpfs", "devtmpfs", "squashfs")
                   for d in disks)
        net = (await c.get("/api/v1/system/network")).json()["interfaces"]
        assert set(net) == set(psutil.net_io_counters(pernic=True))
        lo = net["lo"]
        assert lo["recv_bytes_per_s"] is not None and lo["recv_bytes_per_s"] >= 0

        # A request never measures: it answers from the last sample, instantly.
        started = time.monotonic()
        for _ in range(5):
            assert (await c.get("/api/v1/system/cpu")).status_code == 200
        assert time.monotonic() - started < 1.0
        r = await c.get("/api/v1/system/pi")
        assert r.status_code == 200 and "available" in r.json()
        # Read scope suffices; no key at all does not.
        assert (await c.get("/api/v1/system", headers={"x-api-key": ""})).status_code == 401


async def _cpu_ready(c):
    body = (await c.get("/api/v1/system")).json()
    return body if body["cpu"]["usage_percent"] is not None else None


def _sample(ts: int, disk_pct: float) -> HostSample:
    return HostSample(
        ts_ms=ts, cpu_percent=5.0, per_cpu_percent=[5.0], cores=1, physical_cores=1, load=None,
        freq_mhz=None, memory={"usage_percent": 10.0}, swap={},
        disks=[DiskUsage("/", "/dev/x", "ext4", 100, int(disk_pct), 100 - int(disk_pct),
                         disk_pct, False)],
        nics={},
    )


def test_a_spike_does_not_alert_a_sustained_breach_does():
    monitor = Monitor()
    events: list[tuple[str, str | None]] = []
    watcher = ThresholdWatcher(ThresholdsConfig(disk={"above": 90, "for": "10s"}))

    def feed(sample: HostSample) -> None:
        """What the App does with a collector's findings."""
        findings = watcher.findings(sample)
        for target in findings.targets.values():
            if monitor.state_of(target.id) is None:
                monitor.set_target(target)
        for result in findings.results:
            change = monitor.process(result)
            events.extend((e.type, e.target and e.target.id) for e in change.events)

    for ts, pct in [(0, 95), (4000, 95), (8000, 50), (9000, 97), (15000, 97)]:
        feed(_sample(ts, pct))
    assert monitor.state_of("system:disk:/").status == "up"  # never 10 s in a row
    assert not events
    feed(_sample(19000, 97))  # 10 s since the breach began at 9 s
    state = monitor.state_of("system:disk:/")
    assert state.status == "down" and "above 90%" in state.alert.last_error
    assert events == [("target.down", "system:disk:/")]
    feed(_sample(20000, 40))
    assert monitor.state_of("system:disk:/").status == "up"
    assert events[-1] == ("target.up", "system:disk:/")
    # A monitor's staleness clock is for probes: collectors leave it alone.
    assert monitor.last_result_ms is None


async def test_thresholds_alert_change_at_runtime_and_persist(tmp_path):
    # The root filesystem is surely more than 0.5 % used: a breach from the first sample.
    cfg = make_config(tmp_path, alerts={"thresholds": {
        **FAST, "disk": {"above": 0.5, "for": "1s"}, "cpu": 90, "memory": 99.9}})
    async with running_app(cfg) as run:
        c = run.client
        await run.wait_for(lambda: _contains(failing_names(run), "system:disk:/"), timeout=10)
        assert run.app.monitor.snapshot().statuses["system:memory"] == "up"
        got = (await c.get("/api/v1/alerts/config")).json()
        assert got["source"] == "config"
        assert got["thresholds"]["disk"] == {"above": 0.5, "for": "1s"}
        assert got["thresholds"]["cpu"] == {"above": 90.0, "for": "2m"}  # `for` by default
        assert got["thresholds"]["temperature"] is None  # off unless configured

        # Invalid changes are refused and change nothing.
        for bad, needle in [({"thresholds": {"cpu": 150}}, "thresholds.cpu"),
                            ({"thresholds": {"disks": 80}}, "thresholds.disks"),
                            ({"thresholds": {"disk": {"above": 80, "for": "soon"}}}, "for"),
                            ({"limits": {}}, "limits"),
                            ({"thresholds": {}}, "thresholds")]:
            r = await c.put("/api/v1/alerts/config", json=bad)
            assert r.status_code == 400, bad
            assert needle in r.json()["detail"]
        assert (await c.get("/api/v1/alerts/config")).json() == got

        r = await c.put("/api/v1/alerts/config",
                        json={"thresholds": {"disk": {"above": 99.5, "for": "3m"}, "memory": None}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["source"] == "runtime" and body["updated_at"].endswith("Z")
        assert body["thresholds"]["disk"] == {"above": 99.5, "for": "3m"}
        assert body["thresholds"]["memory"] is None
        # Re-evaluated at once: the disk alert resolves, the memory target is gone.
        assert "system:disk:/" not in await failing_names(run)
        assert "system:memory" not in run.app.monitor.snapshot().statuses
        alerts = (await c.get("/api/v1/alerts?state=all")).json()
        disk_alerts = [a for a in alerts if a["target_name"] == "system:disk:/"]
        assert len(disk_alerts) == 1 and disk_alerts[0]["resolved_at"]

    # A restart keeps the runtime change.
    async with running_app(cfg) as run:
        got = (await run.client.get("/api/v1/alerts/config")).json()
        assert got["source"] == "runtime" and got["thresholds"]["disk"]["above"] == 99.5

    # Editing the file's section makes the file win again.
    cfg2 = make_config(tmp_path, alerts={"thresholds": {**FAST, "disk": 97}})
    async with running_app(cfg2) as run:
        got = (await run.client.get("/api/v1/alerts/config")).json()
        assert got["source"] == "config" and got["thresholds"]["disk"]["above"] == 97


async def test_restart_adopts_an_open_threshold_alert(tmp_path):
    cfg = make_config(tmp_path, alerts={"thresholds": {**FAST,
                                                       "disk": {"above": 0.5, "for": "0s"}}})
    async with running_app(cfg) as run:
        await run.wait_for(lambda: _contains(failing_names(run), "system:disk:/"), timeout=10)
        first = [a for a in (await run.client.get("/api/v1/alerts")).json()
                 if a["target_name"] == "system:disk:/"]
    async with running_app(cfg) as run:
        await run.wait_for(lambda: run.app.monitor.state_of("system:disk:/") is not None)
        assert "system:disk:/" in await failing_names(run)
        alerts = [a for a in (await run.client.get("/api/v1/alerts")).json()
                  if a["target_name"] == "system:disk:/"]
        # Still the same open alert: a restart does not alert twice.
        assert [a["id"] for a in alerts] == [first[0]["id"]]
        assert alerts[0]["resolved_at"] is None


async def _contains(coro, name: str) -> bool:
    return name in await coro
