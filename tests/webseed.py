"""History for dashboard tests and benchmarks: days of per-hour aggregates written straight into
a real database, the last hours as real results through the Store, and past alerts.

The database is then opened by a real pingr (same file, same target names), which reconciles
the targets by name and finds the history as if it had run for weeks.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

from pingr.configbase import TargetBase
from pingr.models import Alert, Result
from pingr.storage import rollup
from pingr.storage.rollup import DAY_MS, HOUR_MS
from pingr.storage.schema import _minute_table
from pingr.store import Store
from pingr.timeutil import now_ms

#: Results per hour in the written aggregates (one a minute), and the step of real results.
PER_HOUR = 60
RECENT_STEP_MS = 5 * 60_000


def seed_history(db: Path, specs: Iterable[TargetBase], *, days: int = 90, recent_hours: int = 24,
                 outages: dict[str, list[tuple[float, float]]] | None = None,
                 now: int | None = None, seed: int = 7) -> dict[str, int]:
    """Fill `db` with history for `specs`; returns target name -> row number.

    `outages` maps a target name to (hours ago it began, how many hours) periods in which its
    probes failed; each becomes a resolved alert too. Latency wanders around a per-target base.
    """
    now = now_ms() if now is None else now
    clock = [now]
    store = Store(db, clock_ms=lambda: clock[0])
    store.open()
    targets = store.reconcile(list(specs), now)
    outages = outages or {}
    rnd = random.Random(seed)
    hour_now = now - now % HOUR_MS
    recent_from = hour_now - recent_hours * HOUR_MS

    def down(name: str, ts: int) -> bool:
        return any(now - (ago * HOUR_MS) <= ts < now - (ago - span) * HOUR_MS
                   for ago, span in outages.get(name, ()))

    hours: dict[tuple[int, int], rollup.Acc] = {}
    first = hour_now - days * DAY_MS
    for t in targets:
        base = rnd.uniform(2, 40)
        for bucket in range(first, recent_from, HOUR_MS):
            failed = PER_HOUR if down(t.name, bucket) else (rnd.random() < 0.02)
            ok = PER_HOUR - failed
            lat = [max(1, round(base * rnd.uniform(0.6, 1.8))) for _ in range(3)]
            hours[(bucket, t.pk)] = [PER_HOUR, ok, ok, ok * lat[1], min(lat), max(lat) * 2] if ok \
                else [PER_HOUR, 0, 0, 0, None, None]
    with store.engine.begin() as conn:  # type: ignore[union-attr]
        rollup.write(conn, {}, _minute_table, hours=hours)
    for ts in range(recent_from, now, RECENT_STEP_MS):
        clock[0] = ts
        for t in targets:
            fail = down(t.name, ts)
            store.add_result(Result(t.id, ts, not fail, None if fail else rnd.randint(1, 60),
                                    error="connection refused" if fail else None), t.pk)
    clock[0] = now
    alert_id = 1
    by_name = {t.name: t for t in targets}
    for name, periods in outages.items():
        for ago, span in periods:
            t = by_name[name]
            store.put_alert(Alert(alert_id, t.id, t.name, now - int(ago * HOUR_MS),
                                  resolved_at=now - int((ago - span) * HOUR_MS),
                                  peak_failures=3, last_error="connection refused"))
            alert_id += 1
    store.close()
    return {t.name: t.pk for t in targets}
