"""Write budget and database size: 50 targets at 30 s in simulated time, with real writes.

The Store gets an injected clock; the writer's cadence maps 1:1 onto simulated time (a 1 s
flush interval means one flush per simulated second that has results waiting, exactly as
the real writer does), and retention runs every simulated hour. Each variant runs in its
own process so /proc/self/io counts only its writes.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import heading, mb, median, row

TARGETS = 50
#: The host sampler's series (a Pi with one disk and a temperature sensor) and its interval
#: (alerts.thresholds.interval, default 5 s); containers are sampled every docker.resync (60 s).
HOST_SERIES = ["host:cpu", "host:memory", "host:disk:/", "host:net_rx", "host:net_tx",
               "host:temperature", "host:load"]
#: Stored values drawn uniformly from these ranges: CPU and memory 0-100 %, disk 20-90 %,
#: network up to 2 MB/s each way, 40-80 °C, load 0-4 (in their stored units, see above).
HOST_RANGES = [(0, 10_000), (0, 10_000), (2_000, 9_000), (0, 2_000_000), (0, 2_000_000),
               (4_000, 8_000), (0, 400)]
#: Per container, in pingr.resources.CONTAINER_METRICS' order and stored units: CPU 0-200 %,
#: memory 1 MiB-1 GiB (KiB), network up to 1 MB/s each way.
CONTAINER_RANGES = [(0, 20_000), (1_024, 1_048_576), (0, 1_000_000), (0, 1_000_000)]
HOST_EVERY_MS = 5_000
CONTAINER_EVERY_MS = 60_000
#: Containers in the "with metrics history" variants (a typical home server's compose stack).
CONTAINERS = 10
INTERVAL_MS = 30_000
DAY_MS = 86_400_000
START_MS = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS  # a UTC midnight in 2027


def simulate(
    db: Path,
    start_ms: int,
    hours: float,
    flush_s: float,
    raw: str,
    per_result: bool = False,
    seed: int = 1,
    commit_s: float = 600.0,
    containers: int | None = None,
) -> dict:
    """Feed TARGETS×(hours) of results through a Store in simulated time; return counters.

    `containers` None: no metrics history (pingr before it existed); else the host sampler's
    series every HOST_EVERY_MS and that many containers' every CONTAINER_EVERY_MS, as
    pingr.resources records them."""
    import asyncio

    from bench.common import proc_io
    from pingr.models import Result
    from pingr.probes.icmp import IcmpTarget
    from pingr.resources import CONTAINER_METRICS, container_key
    from pingr.store import Store

    now = [start_ms]
    store = Store(db, clock_ms=lambda: now[0], raw=raw, flush_interval=flush_s,
                  commit_interval=commit_s)
    store.open()
    targets = store.reconcile(
        [IcmpTarget(type="icmp", name=f"t{i}", host=f"127.0.0.{i + 1}") for i in range(TARGETS)],
        start_ms,
    )
    rnd = random.Random(seed)
    host_pks: list[int] = []
    container_pks: list[int] = []
    if containers is not None:
        store.load_series()
        ids = asyncio.run(store.series_ids(
            HOST_SERIES + [container_key(f"c{j}", m) for j in range(containers)
                           for m in CONTAINER_METRICS], start_ms))
        host_pks = [ids[k] for k in HOST_SERIES]
        container_pks = [v for k, v in ids.items() if k.startswith("container:")]
    next_host = next_containers = start_ms
    flush_ms = int(flush_s * 1000)
    commit_ms = int(commit_s * 1000)
    step = INTERVAL_MS // TARGETS  # staggered: one target every 600 ms
    end = start_ms + int(hours * 3_600_000)
    next_flush = start_ms + flush_ms
    next_commit = start_ms + commit_ms
    next_cleanup = start_ms + 3_600_000
    # A flaky target: down for 5 minutes every 6 hours (failures, flips, an alert's worth).
    io0, t0 = proc_io(), time.process_time()
    transactions = 0
    i = 0
    ts = start_ms
    while ts < end:
        target = targets[i % TARGETS]
        if ts >= next_flush:
            # The writer's cadence: the spool every flush interval, a commit every commit
            # interval (pingr/store.py run_writer).
            now[0] = ts
            store.spool()
            next_flush = ts - ts % flush_ms + flush_ms
        if ts >= next_commit:
            now[0] = ts
            transactions += store.flush() > 0
            next_commit = ts - ts % commit_ms + commit_ms
        if ts >= next_cleanup:
            now[0] = ts
            store.flush()
            store.cleanup()
            next_cleanup += 3_600_000
        if host_pks and ts >= next_host:
            # Host sampler: CPU, memory, disk, network, temperature, load (pingr.resources),
            # as stored: hundredths of %, of °C and of the load, bytes/s.
            store.add_samples(ts, {pk: rnd.randint(lo, hi)
                                   for pk, (lo, hi) in zip(host_pks, HOST_RANGES, strict=True)})
            next_host += HOST_EVERY_MS
        if container_pks and ts >= next_containers:
            store.add_samples(ts, {pk: rnd.randint(*CONTAINER_RANGES[i % 4])
                                   for i, pk in enumerate(container_pks)})
            next_containers += CONTAINER_EVERY_MS
        down = target.pk == 1 and (ts // 60_000) % 360 < 5
        ok = not down and rnd.random() > 0.001
        now[0] = ts
        store.add_result(
            Result(
                target.id,
                ts,
                ok,
                rnd.randint(0, 2) if ok else None,
                error=None if ok else "no echo reply within 2000 ms",
            ),
            target.pk,
        )
        if per_result:
            transactions += store.flush() > 0
        i += 1
        ts = start_ms + i * step
    now[0] = end
    store.flush()
    io1, t1 = proc_io(), time.process_time()
    size, used = store.db_size()
    store.close()
    return {
        "results": i,
        "transactions": transactions,
        "wchar": io1["wchar"] - io0["wchar"],
        "spool_bytes": store.spool_bytes,
        "write_bytes": io1["write_bytes"]
        - io0["write_bytes"]
        - (io1["cancelled_write_bytes"] - io0["cancelled_write_bytes"]),
        "cpu": t1 - t0,
        "file_bytes": size,
        "used_bytes": used,
    }


def run_variant(
    db: Path, start_ms: int, hours: float, flush_s: float, raw: str, per_result: bool = False,
    commit_s: float = 600.0, containers: int | None = None,
) -> dict:
    """simulate() in a fresh process (clean I/O counters)."""
    args = json.dumps([str(db), start_ms, hours, flush_s, raw, per_result, commit_s,
                       containers])
    out = subprocess.run(
        [sys.executable, "-m", "bench.storage", "--variant", args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def summary_timing(db: Path, now_ms: int, runs: int = 21) -> tuple[float, float, int]:
    """Median ms of a 30-day /summary (all targets) and of one target's; rows it read."""
    from pingr.store import Store

    store = Store(db, clock_ms=lambda: now_ms)
    store.open()
    since = now_ms - 30 * DAY_MS
    store.summary(since)  # warm the page cache as a running service has it
    all_t, one_t = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        stats = store.summary(since)
        all_t.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        store.summary(since, pk=1)
        one_t.append((time.perf_counter() - t0) * 1000)
    with store.engine.connect() as conn:
        hour_rows = conn.exec_driver_sql(
            "SELECT count(*) FROM rollup_hour WHERE bucket >= ?", (since,)
        ).scalar()
    store.close()
    assert len(stats) == TARGETS
    return median(all_t), median(one_t), hour_rows


def without_series(db: Path, out: Path) -> None:
    """A copy of `db` without the metric series' aggregates (as if pingr kept no metrics
    history), vacuumed so its pages are laid out as if they had never been there."""
    import sqlite3

    from pingr.storage.tables import SERIES_BASE

    shutil.copy(db, out)
    for suffix in ("-wal", "-shm"):
        if Path(str(db) + suffix).exists():
            shutil.copy(str(db) + suffix, str(out) + suffix)
    conn = sqlite3.connect(out)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND "
            "(name = 'rollup_hour' OR name LIKE 'rollup_minute_d%')")]
        for table in tables:
            conn.execute(f"DELETE FROM {table} WHERE target_pk >= ?", (SERIES_BASE,))
        conn.commit()
        conn.execute("VACUUM")
    finally:
        conn.close()


def main(hours: float = 3.0, days: int = 30) -> dict:
    """Database size over `days`, then the write budget of one more day from that state."""
    out: dict = {}
    work = Path(tempfile.mkdtemp(prefix="pingr-bench-"))
    try:
        heading(f"Database size: {TARGETS} targets at 30 s for {days} simulated days, with "
                f"the history of {len(HOST_SERIES)} host metrics (every {HOST_EVERY_MS // 1000} s)"
                f" and {CONTAINERS} containers (4 metrics each, every "
                f"{CONTAINER_EVERY_MS // 1000} s)")
        base = work / "month.db"
        t0 = time.monotonic()
        r = run_variant(base, START_MS, days * 24, 600, "all", containers=CONTAINERS)
        end = START_MS + days * DAY_MS
        all_ms, one_ms, rows = summary_timing(base, end)
        out["db"] = {**r, "summary_all_ms": all_ms, "summary_one_ms": one_ms, "hour_rows": rows}
        row("results written", f"{r['results']:,}")
        row(
            "database file (7d raw, 48h minutes, hours)", f"{mb(r['file_bytes'])}  (target < 64 MB)"
        )
        row("30-day /summary, all 50 targets (median)", f"{all_ms:.1f} ms  (target < 50 ms)")
        row("30-day /summary/{id}, one target (median)", f"{one_ms:.1f} ms")
        row(
            "hour rows behind a 30-day summary",
            f"{rows:,} (raw rows it replaces: {TARGETS * 2880 * 30:,})",
        )
        row("simulation wall time", f"{time.monotonic() - t0:.0f} s")
        # What the series cost readers: the same database without them, timed alternately.
        bare = work / "bare.db"
        without_series(base, bare)
        timings: dict[str, list[tuple[float, float]]] = {"with": [], "without": []}
        for _ in range(3):
            timings["with"].append(summary_timing(base, end)[:2])
            timings["without"].append(summary_timing(bare, end)[:2])
        for label, runs in timings.items():
            row(f"30-day /summary all / one, {label} the series (3 alternated runs)",
                f"{median([a for a, _ in runs]):.1f} / {median([o for _, o in runs]):.1f} ms")
        out["db"]["summary_alternated"] = {k: v for k, v in timings.items()}
        for suffix in ("", "-wal", "-shm"):
            Path(str(bare) + suffix).unlink(missing_ok=True)

        heading(
            f"Write budget: {TARGETS} targets at 30 s, {hours:g} simulated hours from "
            "that state (steady: retention deletes as much as arrives)"
        )
        c = CONTAINERS
        variants = [
            ("reference: one transaction per result", 1.0, "all", True, 1.0, c),
            ("commit_interval 1s (the old default)", 1.0, "all", False, 1.0, c),
            ("commit_interval 5m", 1.0, "all", False, 300.0, c),
            ("pingr default: spool 1s, commit 10m, raw: all", 1.0, "all", False, 600.0, c),
            ("commit_interval 30m", 1.0, "all", False, 1800.0, c),
            ("default + raw: changes", 1.0, "changes", False, 600.0, c),
            ("default, host metrics only (no Docker)", 1.0, "all", False, 600.0, 0),
            ("default without metrics history", 1.0, "all", False, 600.0, None),
        ]
        print(f"  (metrics history: {len(HOST_SERIES)} host series every "
              f"{HOST_EVERY_MS // 1000} s and {c} containers' 4 every "
              f"{CONTAINER_EVERY_MS // 1000} s, unless the variant says otherwise)")
        scale = 24.0 / hours
        results = {}
        for label, flush_s, raw, per_result, commit_s, containers in variants:
            db = work / "day.db"
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(base) + suffix)
                if src.exists():
                    shutil.copy(src, str(db) + suffix)
            r = run_variant(db, end, hours, flush_s, raw, per_result, commit_s, containers)
            results[label] = r
            for suffix in ("", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)
        ref = results[variants[0][0]]
        print(
            f"  {'variant':<48} {'commits/day':>11} {'to fs/day':>11} {'spool/day':>10} "
            f"{'to disk/day':>12} {'vs ref':>7}"
        )
        for label, *_ in variants:
            r = results[label]
            ratio = r["wchar"] / ref["wchar"]
            print(
                f"  {label:<48} {r['transactions'] * scale:>11,.0f} "
                f"{mb(r['wchar'] * scale):>11} {mb(r['spool_bytes'] * scale):>10} "
                f"{mb(r['write_bytes'] * scale):>12} "
                f"{ratio:>7.3f}",
                flush=True,
            )
        print(
            "  (to fs = bytes handed to write(), timing-independent; to disk = /proc write_bytes,"
            "\n   which page-cache merging lowers more in accelerated time than in real time)"
        )
        out["writes"] = {"hours": hours, "results": results}
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--variant":
        db, start, hours, flush_s, raw, per_result, commit_s, containers = json.loads(
            sys.argv[2])
        print(json.dumps(simulate(Path(db), start, hours, flush_s, raw, per_result,
                                  commit_s=commit_s, containers=containers)))
    else:
        main(float(sys.argv[1]) if len(sys.argv) > 1 else 24.0)
