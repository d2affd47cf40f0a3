"""Full and read-only disks: pingr starts degraded from memory and catches up; it never fills
the disk itself (storage.min_free). Each test mounts a small tmpfs of its own (root only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_config, running_app


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if out.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the filesystem, leaving about `leave` bytes free; returns the filler file."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free - leave
    with open(filler, "wb") as f:
        with contextlib.suppress(OSError):
            while free > 0:
                n = min(free, 65536)
                f.write(b"\0" * n)
                free -= n
            f.flush()
    return filler


def _config(disk: Path, **storage):
    target = {"name": "svc", "type": "tcp", "host": "127.0.0.1", "port": 9, "interval": "1s",
              "failure_threshold": 2}
    return make_config(disk, targets=[target], storage={
        "path": str(disk / "pingr.db"), "flush_interval": "100ms", "commit_interval": "1s",
        "retry_interval": "1s", "min_free": 0, **storage})


async def test_start_on_a_full_disk_runs_degraded_and_catches_up(tmp_path):
    with small_disk(tmp_path / "disk", "2m") as disk:
        cfg = _config(disk)
        async with running_app(cfg):
            pass  # a database exists, with its target and key
        filler = fill(disk)
        async with running_app(cfg) as run:
            health = await run.client.get("/api/v1/health")
            assert health.status_code == 503
            [problem] = health.json()["problems"]
            assert problem.startswith("storage degraded: cannot write") and "memory" in problem
            assert "disk full" in problem
            # The monitor, its alert and alert-status run from memory.
            await run.wait_for(lambda: run.app.monitor.snapshot().failing, timeout=15)
            status = (await run.client.get("/api/v1/alert-status")).json()
            assert status["alert"] is True and status["failing_targets"][0]["name"] == "svc"
            tid = next(iter(run.app.targets))
            results = (await run.client.get(f"/api/v1/targets/{tid}/results")).json()["items"]
            assert results and results[0]["success"] is False
            r = await run.client.post("/api/v1/targets", json={
                "name": "made-while-full", "type": "tcp", "host": "127.0.0.1", "port": 9})
            assert r.status_code == 201
            # Space comes back: the store catches up by itself.
            filler.unlink()
            await run.wait_for(lambda: run.app.store.degraded is None, timeout=20)
            await run.wait_for(lambda: run.app.store.rows_written > 0, timeout=10)
            health = await run.client.get("/api/v1/health")
            assert health.json()["problems"] == [] and health.status_code == 200
        # What happened while full is in the file now.
        async with running_app(cfg) as run:
            names = {t["name"] for t in
                     (await run.client.get("/api/v1/targets")).json()["items"]}
            assert names == {"svc", "made-while-full"}
            alerts = (await run.client.get("/api/v1/alerts")).json()
            assert alerts and alerts[0]["target_name"] == "svc"


async def test_start_on_a_read_only_disk_runs_degraded(tmp_path):
    with small_disk(tmp_path / "disk", "4m") as disk:
        cfg = _config(disk)
        async with running_app(cfg):
            pass
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        async with running_app(cfg) as run:
            health = (await run.client.get("/api/v1/health")).json()
            assert "storage degraded" in health["problems"][0]
            assert "read-only file system" in health["problems"][0]
            await run.wait_for(lambda: run.app.monitor.snapshot().failing, timeout=15)
            assert (await run.client.get("/api/v1/alert-status")).json()["alert"] is True
            subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
            await run.wait_for(lambda: run.app.store.degraded is None, timeout=20)


async def test_pingr_never_writes_below_the_free_space_floor(tmp_path):
    """On a 4 MB disk with a 1 MB floor pingr pauses its writes instead of filling it (a
    4 MB filesystem filled by pingr itself made a later start fail)."""
    with small_disk(tmp_path / "disk", "4m") as disk:
        cfg = _config(disk, min_free="1MB")
        async with running_app(cfg):
            pass
        fill(disk, leave=900 * 1024)
        async with running_app(cfg) as run:
            store = run.app.store
            await asyncio.sleep(3)
            assert store.commits == 0
            health = (await run.client.get("/api/v1/health")).json()
            assert any("disk nearly full" in p and "storage.min_free" in p
                       for p in health["problems"]), health
            assert shutil.disk_usage(disk).free > 600 * 1024
            # Results wait in memory and are still read.
            tid = next(iter(run.app.targets))
            assert (await run.client.get(f"/api/v1/targets/{tid}/results")).json()["items"]
            (disk / "filler").unlink()
            await run.wait_for(lambda: store.commits > 0, timeout=10)
