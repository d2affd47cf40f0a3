"""The database file: its pragmas, the day-partitioned tables and their views, small meta values."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from pingr.storage import rollup
from pingr.storage.tables import ID_SHIFT, PK_MASK, RESULTS_COLUMNS, RESULTS_DDL

log = logging.getLogger(__name__)

#: The largest row id (results are deleted "oldest first" below it).
MAX_ID = (1 << 63) - 1
RAW, MINUTE = "results", "rollup_minute"
_DDL = {RAW: RESULTS_DDL, MINUTE: rollup.MINUTE_DDL}
_VIEW_COLUMNS = {RAW: RESULTS_COLUMNS, MINUTE: rollup.MINUTE_COLUMNS}
_PART = re.compile(r"^(results|rollup_minute)_d(\d+)$")


def _set_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # Must come before WAL mode and the first table on a new file (a no-op on an existing one):
    # lets retention hand pages back with `PRAGMA incremental_vacuum`, never a full VACUUM.
    cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode never corrupts the database; a power cut may drop the newest commits,
    # a kill -9 drops nothing that was committed. FULL would fsync on every batch for no gain
    # against process crashes and costs SD-card wear.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    # Bound the WAL file after checkpoints so it cannot grow without limit on a busy day.
    cur.execute("PRAGMA journal_size_limit=4194304")
    cur.execute("PRAGMA foreign_keys=ON")
    # Debian builds SQLite with SECURE_DELETE, which overwrites every freed page with zeros:
    # retention then writes each page it frees (~7 MB/day of card wear at 50 targets). FAST
    # still zeroes deleted rows inside pages that are written anyway, and nothing more.
    cur.execute("PRAGMA secure_delete=FAST")
    cur.close()


def _minute_table(bucket: int) -> str:
    return f"{MINUTE}_d{bucket // rollup.DAY_MS}"


class Schema:
    """Day tables and views of one SQLite file (a part of pingr.store.Store; the state it
    shares, `engine` and `_parts`, is set up by Store)."""

    engine: Engine | None
    #: Days (ts // DAY_MS) that have a results / rollup_minute table.
    _parts: dict[str, list[int]]

    def session(self) -> Session:
        assert self.engine is not None
        return Session(self.engine)

    # ------------------------------------------------------------------ day partitions

    def _load_parts(self, conn: Any) -> None:
        self._parts = {RAW: [], MINUTE: []}
        for (name,) in conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table'"):
            m = _PART.match(name)
            if m:
                self._parts[m.group(1)].append(int(m.group(2)))
        for days in self._parts.values():
            days.sort()

    def _ensure_parts(self, conn: Any, kind: str, days: Iterable[int]) -> None:
        """Create the day tables that do not exist yet (and the view over them)."""
        new = sorted(set(days) - set(self._parts[kind]))
        if not new:
            return
        for day in new:
            conn.exec_driver_sql(_DDL[kind].format(table=f"{kind}_d{day}"))
        self._parts[kind] = sorted(self._parts[kind] + new)
        self._make_view(conn, kind)

    def _drop_part(self, conn: Any, kind: str, day: int) -> int:
        """Drop one day table; returns the rows it held."""
        table = f"{kind}_d{day}"
        rows = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() or 0
        before = self._parts[kind]
        self._parts[kind] = [d for d in before if d != day]
        try:
            self._make_view(conn, kind)
            conn.exec_driver_sql(f"DROP TABLE {table}")
        except Exception:
            self._parts[kind] = before
            raise
        return rows

    def _make_view(self, conn: Any, kind: str) -> None:
        """The view named like the table it replaces: UNION ALL of the day tables, oldest
        first (SQLite merges them for ORDER BY id and pushes WHERE into each)."""
        cols = _VIEW_COLUMNS[kind]
        days = self._parts[kind]
        if days:
            body = " UNION ALL ".join(f"SELECT {cols} FROM {kind}_d{d}" for d in days)
        else:
            body = "SELECT " + ", ".join(f"NULL AS {c.strip()}" for c in cols.split(",")) \
                + " WHERE 0"
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {kind}")
        conn.exec_driver_sql(f"CREATE VIEW {kind} AS {body}")

    def _partition(self, conn: Any, kind: str) -> None:
        """Move a single table of an earlier layout into day tables (once, one transaction).

        Earlier layouts: results with a ts column and two indexes, or keyed by id; one
        rollup_minute table."""
        log.info("converting %s into one table per day (once)", kind)
        cols = {c[1] for c in conn.exec_driver_sql(f"PRAGMA table_info({kind})")}
        conn.exec_driver_sql(f"ALTER TABLE {kind} RENAME TO {kind}_old")
        for name in ("ix_results_target_ts", "ix_results_ts"):
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
        if kind == RAW:
            ts = "ts" if "ts" in cols else f"(id >> {ID_SHIFT})"
            first = f"(ts << {ID_SHIFT}) | (target_pk & {PK_MASK})" if "ts" in cols else "id"
            select = first + ", target_pk, success, latency_ms, status_code, error"
        else:
            ts, select = "bucket", rollup.MINUTE_COLUMNS
        days = [r[0] for r in conn.exec_driver_sql(
            f"SELECT DISTINCT {ts} / {rollup.DAY_MS} FROM {kind}_old")]
        self._ensure_parts(conn, kind, days)
        for day in days:
            conn.exec_driver_sql(
                f"INSERT OR IGNORE INTO {kind}_d{day} SELECT {select} FROM {kind}_old "
                f"WHERE {ts} >= ? AND {ts} < ? ORDER BY 1",
                (day * rollup.DAY_MS, (day + 1) * rollup.DAY_MS))
        conn.exec_driver_sql(f"DROP TABLE {kind}_old")

    def _meta(self, key: str) -> int | None:
        assert self.engine is not None
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT value FROM meta WHERE key = ?", (key,)).scalar()
