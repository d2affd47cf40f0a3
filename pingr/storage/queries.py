"""Reading history: raw results, summaries and rollups, alerts (buffer and database merged)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import func
from sqlmodel import select

from pingr.models import Alert, ResultRow
from pingr.storage import rollup
from pingr.storage.schema import MAX_ID
from pingr.storage.tables import ID_SHIFT, RESULTS_COLUMNS, SERIES_BASE, AlertRow
from pingr.storage.writer import Writer

#: Summaries up to this window read raw rows (exact to the millisecond, at most a few
#: thousand rows); longer ones read the aggregates.
RAW_WINDOW_MS = 3_600_000
_COLUMNS = RESULTS_COLUMNS


def _db_row(r: Any) -> ResultRow:
    return ResultRow(r[1], r[0] >> ID_SHIFT, bool(r[2]), r[3], r[4], r[5])


class Queries(Writer):
    """The read side of pingr.store.Store."""

    raw_mode: str

    # ------------------------------------------------------------------ reads


    def latest_results(self, limit: int) -> list[ResultRow]:
        """The newest raw results of all targets, newest first."""
        assert self.engine is not None

        def db() -> list[ResultRow]:
            with self.engine.connect() as conn:
                return [_db_row(r) for r in conn.exec_driver_sql(
                    f"SELECT {_COLUMNS} FROM results ORDER BY id DESC LIMIT ?", (limit,))]

        mem, disk = self._consistent(self._buffered_rows, db)
        return sorted(mem + disk, key=lambda r: r.ts, reverse=True)[:limit]

    def target_results(self, pk: int, since: int, until: int, limit: int) -> list[ResultRow]:
        """One target's raw results with since <= ts <= until, newest first."""
        assert self.engine is not None
        lo, hi = since << ID_SHIFT, (until + 1) << ID_SHIFT

        def db() -> list[ResultRow]:
            with self.engine.connect() as conn:
                return [_db_row(r) for r in conn.exec_driver_sql(
                    f"SELECT {_COLUMNS} FROM results WHERE id >= ? AND id < ? "
                    "AND target_pk = ? ORDER BY id DESC LIMIT ?", (lo, hi, pk, limit))]

        mem, disk = self._consistent(lambda: self._buffered_rows(pk, lo, hi), db)
        return sorted(mem + disk, key=lambda r: r.ts, reverse=True)[:limit]

    def recent_results(self, pk: int, limit: int) -> list[ResultRow]:
        """One target's newest raw results, newest first."""
        return self.recent_by_target([pk], limit).get(pk, [])

    def recent_by_target(self, pks: Iterable[int], limit: int = 1000
                         ) -> dict[int, list[ResultRow]]:
        """Per target, its newest results up to and including the first change of state
        (success <-> failure), at most `limit`: what start-up needs to restore counters.

        One backward pass over the table for all targets (there is no per-target index: it
        would cost a scattered page write per target on every commit)."""
        assert self.engine is not None
        out: dict[int, list[ResultRow]] = {pk: [] for pk in pks}
        open_ = set(out)

        def take(row: ResultRow) -> None:
            got = out[row.target_pk]
            got.append(row)
            if len(got) >= limit or got[-1].success != got[0].success:
                open_.discard(row.target_pk)

        with self._lock:
            mem = self._buffered_rows()
        for row in sorted(mem, key=lambda r: r.ts, reverse=True):
            if row.target_pk in open_:
                take(row)
        edge = MAX_ID
        with self.engine.connect() as conn:
            while open_:
                batch = conn.exec_driver_sql(
                    f"SELECT {_COLUMNS} FROM results WHERE id < ? ORDER BY id DESC LIMIT 20000",
                    (edge,)).all()
                if not batch:
                    break
                for r in batch:
                    if r[1] in open_:
                        take(_db_row(r))
                edge = batch[-1][0]
        return out

    def summary(self, since: int, pk: int | None = None,
                until: int | None = None) -> dict[int, tuple[int, int, float | None]]:
        """Per target: (total probes, successes, average latency of successes) since `since`."""
        return {p: (t[0], t[1], t[3] / t[2] if t[2] else None)
                for p, t in self.window_totals(since, pk, until).items()}

    def window_totals(self, since: int, pk: int | None = None,
                      until: int | None = None, *, lean: bool = False
                      ) -> dict[int, rollup.Totals]:
        """Per target (count, successes, lat_count, lat_sum, lat_min, lat_max) over [since, until].

        Up to RAW_WINDOW the raw rows answer exactly (when every raw result is kept); longer
        windows read the per-hour aggregates plus per-minute ones at the edges. Buffered
        results count too.
        """
        now = self.clock_ms() if until is None else until
        assert self.engine is not None
        if self.raw_mode == "all" and now - since <= RAW_WINDOW_MS:
            lo, hi = since << ID_SHIFT, (now + 1) << ID_SHIFT
            sql = ("SELECT target_pk, count(*), sum(success), "
                   "sum(success AND latency_ms IS NOT NULL), "
                   "coalesce(sum(CASE WHEN success THEN latency_ms END), 0), "
                   "min(CASE WHEN success THEN latency_ms END), "
                   "max(CASE WHEN success THEN latency_ms END) "
                   "FROM results WHERE id >= ? AND id < ?")
            params: tuple[int, ...] = (lo, hi)
            if pk is not None:
                sql += " AND target_pk = ?"
                params += (pk,)

            def raw_db() -> dict[int, rollup.Totals]:
                with self.engine.connect() as conn, _lean(conn, lean):
                    rows = conn.exec_driver_sql(sql + " GROUP BY target_pk", params).all()
                return {r[0]: (int(r[1]), int(r[2] or 0), int(r[3] or 0), int(r[4]), r[5], r[6])
                        for r in rows}

            mem, disk = self._consistent(lambda: self._buffered_rows(pk, lo, hi), raw_db)
            acc: dict[tuple[int, int], rollup.Acc] = {}
            for row in mem:
                rollup.add(acc, 0, row.target_pk, row.success, row.latency_ms)
            return rollup.combine([disk, _acc_totals(acc)])

        start_min = since - since % rollup.MINUTE_MS

        def agg_db() -> dict[int, rollup.Totals]:
            with self.engine.connect() as conn, _lean(conn, lean):
                return rollup.window_totals(conn, since, now, now - self.minute_retention_ms, pk)

        mem_minutes, disk = self._consistent(lambda: self._buffered_minutes(pk), agg_db)
        recent = {k: v for k, v in mem_minutes.items()
                  if start_min <= k[0] <= now and (pk is not None or k[1] < SERIES_BASE)}
        return rollup.combine([disk, _acc_totals(recent)])

    def daily_uptime(self, pk: int, since_day: int) -> dict[int, rollup.Totals]:
        """Per UTC day since `since_day` (midnight, epoch ms), from the per-hour aggregates."""
        assert self.engine is not None

        def db() -> dict[int, rollup.Totals]:
            with self.engine.connect() as conn:
                return rollup.daily(conn, pk, since_day)

        minutes, disk = self._consistent(lambda: self._buffered_minutes(pk), db)
        days: dict[tuple[int, int], rollup.Acc] = {}
        for (bucket, p), acc in minutes.items():
            if bucket >= since_day:
                rollup.merge(days, {(bucket - bucket % rollup.DAY_MS, p): acc})
        out = dict(disk)
        for (day, _p), acc in days.items():
            out[day] = rollup.combine([{0: out[day]} if day in out else {},
                                       {0: _totals(acc)}])[0]
        return out

    def daily_all(self, since_day: int, until_day: int | None = None, *,
                  lean: bool = False) -> dict[int, dict[int, rollup.Totals]]:
        """Per target, per UTC day in [since_day, until_day) (midnights, epoch ms; no end:
        up to now), from the per-hour aggregates and the buffer, in one scan.

        `lean`: scan with a small page cache and hand it back afterwards (see _lean)."""
        assert self.engine is not None

        def db() -> list[tuple[Any, ...]]:
            with self.engine.connect() as conn, _lean(conn, lean):
                return rollup.daily_all(conn, since_day, until_day)

        minutes, disk = self._consistent(self._buffered_minutes, db)
        out: dict[int, dict[int, rollup.Totals]] = {}
        for day, pk, *totals in disk:
            out.setdefault(pk, {})[day] = tuple(totals)  # type: ignore[assignment]
        for (bucket, pk), acc in minutes.items():
            day = bucket - bucket % rollup.DAY_MS
            if day < since_day or (until_day is not None and day >= until_day):
                continue
            per_day = out.setdefault(pk, {})
            per_day[day] = rollup.combine([{0: per_day[day]} if day in per_day else {},
                                           {0: _totals(acc)}])[0]
        return out

    def history(self, pk: int, since: int, until: int, resolution: str, *,
                lean: bool = False) -> list[tuple[Any, ...]]:
        """Aggregated buckets ("minute" or "hour") of one target, oldest first.

        `lean`: as for daily_all (one target's month scans every target's rows of that
        month, the tables being keyed by time first)."""
        assert self.engine is not None
        table = rollup.TABLES[resolution]

        def db() -> list[tuple[Any, ...]]:
            with self.engine.connect() as conn, _lean(conn, lean):
                return rollup.series(conn, table, pk, since, until)

        minutes, disk = self._consistent(lambda: self._buffered_minutes(pk), db)
        if resolution == "hour":
            minutes = rollup.to_hours(minutes)
        by_bucket: dict[int, rollup.Acc] = {r[0]: list(r[1:]) for r in disk}
        for (bucket, _p), acc in minutes.items():
            if since <= bucket <= until:
                rollup.merge(by_bucket, {bucket: acc})  # type: ignore[dict-item]
        return [(b, *by_bucket[b]) for b in sorted(by_bucket)]

    def history_all(self, since: int, until: int, resolution: str, *, lean: bool = False
                    ) -> dict[int, list[tuple[Any, ...]]]:
        """Aggregated buckets ("minute" or "hour") of every target, oldest first, in one scan
        (the dashboard's sparklines: one query instead of one per target, each of which would
        scan every target's rows of the range, the tables being keyed by time first)."""
        assert self.engine is not None
        table = rollup.TABLES[resolution]

        def db() -> list[tuple[Any, ...]]:
            with self.engine.connect() as conn, _lean(conn, lean):
                return rollup.series_all(conn, table, since, until)

        minutes, disk = self._consistent(self._buffered_minutes, db)
        if resolution == "hour":
            minutes = rollup.to_hours(minutes)
        by_key: dict[tuple[int, int], rollup.Acc] = {(r[0], r[1]): list(r[2:]) for r in disk}
        rollup.merge(by_key, {k: acc for k, acc in minutes.items() if since <= k[0] <= until})
        out: dict[int, list[tuple[Any, ...]]] = {}
        for bucket, pk in sorted(by_key):
            out.setdefault(pk, []).append((bucket, *by_key[(bucket, pk)]))
        return out

    def newest_result_ts(self) -> int | None:
        """Timestamp of the newest result, committed or buffered."""
        assert self.engine is not None

        def db() -> int | None:
            with self.engine.connect() as conn:
                return conn.exec_driver_sql(
                    "SELECT id FROM results ORDER BY id DESC LIMIT 1").scalar()

        mem, newest = self._consistent(
            lambda: max((r[0] for buf in (self._spooled, self._new) for r in buf), default=None),
            db)
        ids = [i for i in (mem, newest) if i is not None]
        return max(ids) >> ID_SHIFT if ids else None

    def alerts(self, state: str, limit: int) -> list[Alert]:
        def db() -> dict[int, Alert]:
            with self.session() as s:
                q = select(AlertRow)
                if state == "open":
                    q = q.where(AlertRow.resolved_at.is_(None))
                elif state == "resolved":
                    q = q.where(AlertRow.resolved_at.is_not(None))
                return {r.id: r.to_alert()
                        for r in s.exec(q.order_by(AlertRow.opened_at.desc()).limit(limit))}

        # Buffer and database read with no commit in between (a commit moves alerts from the
        # one to the other: read across it, an alert would be in neither, or an old copy win).
        pending, rows = self._consistent(
            lambda: [a.copy() for a in self._alerts.values()], db)
        # Alerts still in the write buffer are newer than anything on disk.
        for row in pending:
            if state == "all" or (state == "open") == (row.resolved_at is None):
                rows[row.id] = row
            else:
                rows.pop(row.id, None)
        ordered = sorted(rows.values(), key=lambda r: (r.opened_at, r.id), reverse=True)
        return ordered[:limit]

    def alert(self, alert_id: int) -> Alert | None:
        pending = self.pending_alert(alert_id)
        if pending:
            return pending
        with self.session() as s:
            row = s.get(AlertRow, alert_id)
            return row.to_alert() if row is not None else None

    def open_alerts(self) -> list[Alert]:
        with self.session() as s:
            return [r.to_alert() for r in
                    s.exec(select(AlertRow).where(AlertRow.resolved_at.is_(None))).all()]

    def max_alert_id(self) -> int:
        with self.session() as s:
            return s.exec(select(func.max(AlertRow.id))).one() or 0


#: The page cache of a lean scan (KiB); SQLite's default is 2,000 KiB per connection.
LEAN_CACHE_KIB = 256


@contextlib.contextmanager
def _lean(conn: Any, lean: bool) -> Iterator[None]:
    """A scan of months of aggregates reads megabytes of pages. Each pooled connection would
    keep up to its whole page cache (2 MB by default) of them for good, and the pool hands
    out its connections in turn, so a once-a-day scan would cost a Pi Zero megabytes of RSS
    for nothing: scan with a small cache, then give it back."""
    if not lean:
        yield
        return
    size = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size=-{LEAN_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size={int(size)}")
        conn.exec_driver_sql("PRAGMA shrink_memory")


def _totals(acc: rollup.Acc) -> rollup.Totals:
    return (acc[0], acc[1], acc[2], acc[3], acc[4], acc[5])


def _acc_totals(acc: dict[tuple[int, int], rollup.Acc]) -> dict[int, rollup.Totals]:
    """Per-target totals of in-memory buckets."""
    per_target: dict[tuple[int, int], rollup.Acc] = {}
    for (_bucket, pk), row in acc.items():
        rollup.merge(per_target, {(0, pk): row})
    return {pk: _totals(row) for (_b, pk), row in per_target.items()}
