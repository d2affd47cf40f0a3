"""Per-target per-minute and per-hour aggregates: accumulated in memory, upserted per batch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from pingr.storage.tables import ID_SHIFT, SERIES_BASE

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# Why WITHOUT ROWID and (bucket, target_pk) as the key: rows of the current minute of every
# target sit side by side at the end of one B-tree, so a flush dirties one or two pages
# instead of one page per target, and there is no second index to keep up to date.


#: Per-minute aggregates live in one table per UTC day, `rollup_minute_d<day>`, with a view
#: `rollup_minute` over them, so retention drops whole days (no page writes).
MINUTE_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    bucket INTEGER NOT NULL,  -- epoch ms of the minute's start
    target_pk INTEGER NOT NULL,
    count INTEGER NOT NULL,
    successes INTEGER NOT NULL,
    lat_count INTEGER NOT NULL,  -- successful results that carried a latency
    lat_sum INTEGER NOT NULL,
    lat_min INTEGER,
    lat_max INTEGER,
    PRIMARY KEY (bucket, target_pk)) WITHOUT ROWID"""
MINUTE_COLUMNS = "bucket, target_pk, count, successes, lat_count, lat_sum, lat_min, lat_max"


#: What history reads: the minute view (over the day tables) and the hour table.
TABLES = {"minute": "rollup_minute", "hour": "rollup_hour"}

_UPSERT = """
INSERT INTO {table} (bucket, target_pk, count, successes, lat_count, lat_sum, lat_min, lat_max)
VALUES (:bucket, :target_pk, :count, :successes, :lat_count, :lat_sum, :lat_min, :lat_max)
ON CONFLICT (bucket, target_pk) DO UPDATE SET
  count = count + excluded.count,
  successes = successes + excluded.successes,
  lat_count = lat_count + excluded.lat_count,
  lat_sum = lat_sum + excluded.lat_sum,
  -- min()/max() of SQLite return NULL if either side is NULL; coalesce keeps the known one.
  lat_min = min(coalesce(lat_min, excluded.lat_min), coalesce(excluded.lat_min, lat_min)),
  lat_max = max(coalesce(lat_max, excluded.lat_max), coalesce(excluded.lat_max, lat_max))
"""

#: One accumulated bucket: [count, successes, lat_count, lat_sum, lat_min, lat_max].
Acc = list[Any]


def add(acc: dict[tuple[int, int], Acc], bucket: int, target_pk: int, success: bool,
        latency_ms: int | None) -> None:
    """Count one result into the in-memory bucket (no I/O)."""
    row = acc.get((bucket, target_pk))
    if row is None:
        row = acc[(bucket, target_pk)] = [0, 0, 0, 0, None, None]
    row[0] += 1
    if success:
        row[1] += 1
        if latency_ms is not None:
            row[2] += 1
            row[3] += latency_ms
            row[4] = latency_ms if row[4] is None else min(row[4], latency_ms)
            row[5] = latency_ms if row[5] is None else max(row[5], latency_ms)


def merge(into: dict[tuple[int, int], Acc], other: dict[tuple[int, int], Acc]) -> None:
    """Add `other`'s buckets into `into` (used to put back a batch whose write failed)."""
    for key, row in other.items():
        cur = into.get(key)
        if cur is None:
            into[key] = list(row)
            continue
        cur[0] += row[0]
        cur[1] += row[1]
        cur[2] += row[2]
        cur[3] += row[3]
        for i, pick in ((4, min), (5, max)):
            if row[i] is not None:
                cur[i] = row[i] if cur[i] is None else pick(cur[i], row[i])


def to_hours(minutes: dict[tuple[int, int], Acc]) -> dict[tuple[int, int], Acc]:
    """Fold minute buckets into hour buckets."""
    hours: dict[tuple[int, int], Acc] = {}
    for (bucket, pk), row in minutes.items():
        merge(hours, {(bucket - bucket % HOUR_MS, pk): row})
    return hours


def _params(acc: dict[tuple[int, int], Acc]) -> list[dict[str, Any]]:
    return [
        {"bucket": b, "target_pk": pk, "count": r[0], "successes": r[1], "lat_count": r[2],
         "lat_sum": r[3], "lat_min": r[4], "lat_max": r[5]}
        for (b, pk), r in sorted(acc.items())
    ]


def write(conn: Connection, minutes: dict[tuple[int, int], Acc],
          minute_table: Callable[[int], str],
          hours: dict[tuple[int, int], Acc] | None = None) -> None:
    """Upsert a batch's minute buckets (into the table `minute_table(bucket)` names) and the
    hour buckets they fold into, or `hours` when given (one transaction)."""
    by_table: dict[str, dict[tuple[int, int], Acc]] = {}
    for key, row in minutes.items():
        by_table.setdefault(minute_table(key[0]), {})[key] = row
    for table, part in sorted(by_table.items()):
        conn.execute(text(_UPSERT.format(table=table)), _params(part))
    hours = to_hours(minutes) if hours is None else hours
    if hours:
        conn.execute(text(_UPSERT.format(table="rollup_hour")), _params(hours))


def backfill(conn: Connection, since_minute: int, since_hour: int
             ) -> tuple[dict[tuple[int, int], Acc], dict[tuple[int, int], Acc]]:
    """Minute and hour buckets computed from the raw results (a database from before rollups
    existed); the caller writes them."""
    out = []
    for size, since in ((MINUTE_MS, since_minute), (HOUR_MS, since_hour)):
        rows = conn.execute(text(f"""
            SELECT (id >> {ID_SHIFT}) - (id >> {ID_SHIFT}) % {size}, target_pk, count(*),
                   sum(success), sum(success AND latency_ms IS NOT NULL),
                   coalesce(sum(CASE WHEN success THEN latency_ms END), 0),
                   min(CASE WHEN success THEN latency_ms END),
                   max(CASE WHEN success THEN latency_ms END)
            FROM results WHERE id >= :since GROUP BY 1, 2
        """), {"since": since << ID_SHIFT}).all()
        out.append({(r[0], r[1]): [r[2], r[3], r[4], r[5], r[6], r[7]] for r in rows})
    return out[0], out[1]


Totals = tuple[int, int, int, int, int | None, int | None]
_AGG = "count, successes, lat_count, lat_sum, lat_min, lat_max"

#: Daily uptime is kept this far back whatever removes the hour rows (the status page's 90
#: bars): hour rows removed within it (by the size cap, or an hour_retention under 90 days)
#: are folded into rollup_day first. With the default hour_retention (365 days) and room
#: under the cap nothing is ever folded: the hour rows answer.
DAILY_HORIZON_MS = 90 * DAY_MS

_FOLD = f"""
INSERT INTO rollup_day (bucket, target_pk, {_AGG})
SELECT bucket - bucket % {DAY_MS}, target_pk, sum(count), sum(successes), sum(lat_count),
       sum(lat_sum), min(lat_min), max(lat_max)
FROM rollup_hour WHERE bucket >= :since AND bucket < :edge AND target_pk < {SERIES_BASE}
GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (bucket, target_pk) DO UPDATE SET
  count = count + excluded.count,
  successes = successes + excluded.successes,
  lat_count = lat_count + excluded.lat_count,
  lat_sum = lat_sum + excluded.lat_sum,
  lat_min = min(coalesce(lat_min, excluded.lat_min), coalesce(excluded.lat_min, lat_min)),
  lat_max = max(coalesce(lat_max, excluded.lat_max), coalesce(excluded.lat_max, lat_max))
"""


def fold_days(conn: Connection, edge: int, now: int) -> None:
    """Before the hour rows below `edge` are deleted: add the targets' ones within the daily
    horizon into rollup_day (in the deleting transaction, so no hour counts twice or never)."""
    since = now - now % DAY_MS - DAILY_HORIZON_MS
    if edge > since:
        conn.execute(text(_FOLD), {"since": since, "edge": edge})


#: Every hour bucket in [:since, :until). Joined to rollup_hour with one target's key, each
#: (bucket, target) row is one seek of the primary key: a range scan would read every target's
#: and every metric series' rows of those hours (~100 per hour) to keep one (4x faster at 30
#: days with 50 targets and 47 series).
_HOURS = (f"WITH RECURSIVE h(b) AS (SELECT :first WHERE :first < :until "
          f"UNION ALL SELECT b + {HOUR_MS} FROM h WHERE b + {HOUR_MS} < :until) ")


def _one_target_hours(since: int, until: int) -> dict[str, int]:
    return {"first": -(-since // HOUR_MS) * HOUR_MS, "until": until}


def totals(conn: Connection, table: str, since: int, until: int,
           pk: int | None = None) -> dict[int, Totals]:
    """Per target: (count, successes, lat_count, lat_sum, lat_min, lat_max) in [since, until)."""
    agg = ("SELECT target_pk, sum(count), sum(successes), sum(lat_count), sum(lat_sum), "
           "min(lat_min), max(lat_max)")
    params: dict[str, Any] = {"since": since, "until": until}
    if pk is not None and table == "rollup_hour":
        sql = f"{_HOURS}{agg} FROM h JOIN rollup_hour ON bucket = b AND target_pk = :pk"
        params.update(_one_target_hours(since, until), pk=pk)
    else:
        sql = f"{agg} FROM {table} WHERE bucket >= :since AND bucket < :until"
        if pk is not None:
            sql += " AND target_pk = :pk"
            params["pk"] = pk
        else:
            sql += f" AND target_pk < {SERIES_BASE}"  # targets only, not metric series
    rows = conn.execute(text(sql + " GROUP BY target_pk"), params).all()
    return {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4]), r[5], r[6]) for r in rows}


def combine(parts: Iterable[dict[int, Totals]]) -> dict[int, Totals]:
    """Sum per-target totals read from different tables/ranges."""
    out: dict[int, Totals] = {}
    for part in parts:
        for pk, t in part.items():
            cur = out.get(pk)
            if cur is None:
                out[pk] = t
                continue
            out[pk] = (cur[0] + t[0], cur[1] + t[1], cur[2] + t[2], cur[3] + t[3],
                       _pick(min, cur[4], t[4]), _pick(max, cur[5], t[5]))
    return out


def _pick(fn: Any, a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return fn(a, b)


def window_totals(conn: Connection, since: int, now: int, minute_kept_from: int,
                  pk: int | None = None) -> dict[int, Totals]:
    """Totals over [since, now] reading as few rows as the window allows.

    Whole hours come from the hour table; the partial hours at either end from the minute
    table while it still holds them (else the partial hour at the start is left out).
    So a 30-day window reads ~720 rows per target instead of ~86,000 raw results.
    Granularity is one minute: the minute containing `since` counts whole.
    """
    start_min = since - since % MINUTE_MS
    first_hour = -(-start_min // HOUR_MS) * HOUR_MS  # ceil to the hour
    last_hour = now - now % HOUR_MS
    if first_hour >= last_hour:
        # Less than one whole hour: minutes only (at most ~120 rows per target).
        return totals(conn, "rollup_minute", start_min, now + 1, pk)
    parts = [totals(conn, "rollup_hour", first_hour, last_hour, pk),
             totals(conn, "rollup_minute", last_hour, now + 1, pk)]
    if start_min < first_hour:
        if start_min >= minute_kept_from:
            parts.append(totals(conn, "rollup_minute", start_min, first_hour, pk))
    return combine(parts)


def daily(conn: Connection, pk: int, since_day: int) -> dict[int, Totals]:
    """Per UTC day (epoch ms of midnight) since `since_day`, from the hour table and the day
    table (hours folded when they were removed; an hour is in one or the other)."""
    newest = conn.execute(text("SELECT max(bucket) FROM rollup_hour")).scalar()
    until = (newest or since_day) + 1
    rows = conn.execute(text(
        f"{_HOURS}SELECT day, sum(count), sum(successes), sum(lat_count), sum(lat_sum), "
        f"min(lat_min), max(lat_max) FROM (SELECT bucket - bucket % {DAY_MS} AS day, {_AGG} "
        f"FROM h JOIN rollup_hour ON bucket = b AND target_pk = :pk UNION ALL "
        f"SELECT bucket, {_AGG} FROM rollup_day WHERE bucket >= :since AND target_pk = :pk) "
        "GROUP BY day"
    ), {"since": since_day, "pk": pk, **_one_target_hours(since_day, until)}).all()
    return {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4]), r[5], r[6]) for r in rows}


def daily_all(conn: Connection, since_day: int, until_day: int | None
              ) -> list[tuple[Any, ...]]:
    """(day, target_pk, count, successes, lat_count, lat_sum, lat_min, lat_max) of every
    target per UTC day in [since_day, until_day), from the hour table."""
    sql = (f"SELECT bucket - bucket % {DAY_MS}, target_pk, sum(count), sum(successes), "
           "sum(lat_count), sum(lat_sum), min(lat_min), max(lat_max) FROM rollup_hour "
           "WHERE bucket >= :since")
    params: dict[str, Any] = {"since": since_day}
    if until_day is not None:
        sql += " AND bucket < :until"
        params["until"] = until_day
    return [(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5]), r[6], r[7])
            for r in conn.execute(text(sql + " GROUP BY 1, 2"), params)]


def series(conn: Connection, table: str, pk: int, since: int, until: int) -> list[tuple[Any, ...]]:
    """Buckets of one target in [since, until], oldest first (for graphs)."""
    columns = "bucket, count, successes, lat_count, lat_sum, lat_min, lat_max"
    if table == "rollup_hour":
        return list(conn.execute(text(
            f"{_HOURS}SELECT {columns} FROM h JOIN rollup_hour ON bucket = b AND target_pk = :pk "
            "ORDER BY bucket"), {"pk": pk, **_one_target_hours(since, until + 1)}).all())
    return list(conn.execute(text(
        f"SELECT {columns} FROM {table} "
        "WHERE bucket >= :since AND bucket <= :until AND target_pk = :pk ORDER BY bucket"
    ), {"since": since, "until": until, "pk": pk}).all())


def series_all(conn: Connection, table: str, since: int, until: int) -> list[tuple[Any, ...]]:
    """Buckets of every target in [since, until] as (bucket, target_pk, count, …)."""
    return list(conn.execute(text(
        f"SELECT bucket, target_pk, count, successes, lat_count, lat_sum, lat_min, lat_max "
        f"FROM {table} WHERE bucket >= :since AND bucket <= :until"
    ), {"since": since, "until": until}).all())
