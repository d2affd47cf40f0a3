"""Rollups: aggregates written with the batch, raw: changes, summaries, daily uptime."""

from __future__ import annotations

import sqlite3

from sqlalchemy import event

from pingr.models import Result
from pingr.probes.icmp import IcmpTarget
from pingr.storage.rollup import DAY_MS, HOUR_MS, MINUTE_MS
from pingr.store import Store
from pingr.timeutil import from_ms, now_ms
from tests.conftest import make_config, running_app

NOW = 1000 * DAY_MS + 12 * HOUR_MS + 30 * MINUTE_MS  # 12:30 UTC on some day


def open_store(tmp_path, **kw) -> tuple[Store, object]:
    store = Store(tmp_path / "r.db", clock_ms=kw.pop("clock_ms", lambda: NOW), **kw)
    store.open()
    [target] = store.reconcile([IcmpTarget(type="icmp", name="lo", host="127.0.0.1")])
    return store, target


def rows(tmp_path, sql: str) -> list[tuple]:
    db = sqlite3.connect(tmp_path / "r.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_minute_and_hour_aggregates_are_written_in_the_batch_transaction(tmp_path):
    store, t = open_store(tmp_path)
    base = NOW - NOW % HOUR_MS - HOUR_MS  # 11:00
    # Minute 11:00: 3 successes (10, 30, 20 ms) and a failure that carries a latency (HTTP 500).
    for offset, ok, lat in ((0, True, 10), (15_000, True, 30), (30_000, False, 900),
                            (45_000, True, 20)):
        store.add_result(Result(t.id, base + offset, ok, lat), t.pk)
    # Minute 11:59 and 12:00 (another hour).
    store.add_result(Result(t.id, base + 59 * MINUTE_MS, False, None, error="timeout"), t.pk)
    store.add_result(Result(t.id, base + HOUR_MS, True, 5), t.pk)
    statements: list[str] = []
    with store.engine.connect() as conn:
        conn.connection.dbapi_connection.set_trace_callback(statements.append)
        conn.close()
    store.flush()
    # One transaction carried the raw rows and both aggregates.
    assert sum(1 for s in statements if s.strip().upper() == "COMMIT") <= 1
    assert rows(tmp_path, "SELECT * FROM rollup_minute ORDER BY bucket") == [
        (base, t.pk, 4, 3, 3, 60, 10, 30),
        (base + 59 * MINUTE_MS, t.pk, 1, 0, 0, 0, None, None),
        (base + HOUR_MS, t.pk, 1, 1, 1, 5, 5, 5),
    ]
    assert rows(tmp_path, "SELECT * FROM rollup_hour ORDER BY bucket") == [
        (base, t.pk, 5, 3, 3, 60, 10, 30),
        (base + HOUR_MS, t.pk, 1, 1, 1, 5, 5, 5),
    ]
    # A second batch into the same buckets adds up (upsert), min/max widen.
    store.add_result(Result(t.id, base + 50_000, True, 2), t.pk)
    store.add_result(Result(t.id, base + 59 * MINUTE_MS + 1, True, 40), t.pk)
    store.flush()
    assert rows(tmp_path, "SELECT * FROM rollup_minute ORDER BY bucket")[:2] == [
        (base, t.pk, 5, 4, 4, 62, 2, 30),
        (base + 59 * MINUTE_MS, t.pk, 2, 1, 1, 40, 40, 40),
    ]
    assert rows(tmp_path, "SELECT * FROM rollup_hour ORDER BY bucket")[0] == (
        base, t.pk, 7, 5, 5, 102, 2, 40)
    store.close()


def test_failed_write_keeps_the_aggregates_and_counts_them_once(tmp_path):
    store, t = open_store(tmp_path)
    store.add_result(Result(t.id, NOW - 1000, True, 7), t.pk)
    # Another process holds the write lock: the batch fails, its aggregates stay buffered.
    blocker = sqlite3.connect(tmp_path / "r.db", timeout=0)
    blocker.execute("BEGIN IMMEDIATE")
    store.engine.dispose()
    event.listen(store.engine, "connect", lambda c, _: c.execute("PRAGMA busy_timeout=50"))
    assert store.flush() == 0
    assert store.last_error is not None
    store.add_result(Result(t.id, NOW - 500, False, None), t.pk)
    blocker.rollback()
    blocker.close()
    assert store.flush() == 2
    bucket = (NOW - 1000) - (NOW - 1000) % MINUTE_MS
    assert rows(tmp_path, "SELECT count, successes, lat_sum FROM rollup_minute") == [(2, 1, 7)]
    assert rows(tmp_path, "SELECT bucket FROM rollup_minute") == [(bucket,)]
    store.close()


def test_raw_changes_keeps_failures_flips_and_samples_but_counts_everything(tmp_path):
    store, t = open_store(tmp_path, raw="changes", raw_sample_seconds=300)
    start = NOW - 2 * HOUR_MS
    pattern = [True] * 20 + [False] * 3 + [True] * 20  # probes every 30 s
    for i, ok in enumerate(pattern):
        store.add_result(Result(t.id, start + i * 30_000, ok, 4 if ok else None), t.pk)
    store.flush()
    kept = [r[0] for r in rows(tmp_path, "SELECT id >> 16 FROM results ORDER BY id")]
    idx = [(ts - start) // 30_000 for ts in kept]
    # First result, a sample every 5 min (10 probes), the 3 failures, the first success after
    # them (a flip), and samples again counted from that flip.
    assert idx == [0, 10, 20, 21, 22, 23, 33]
    assert store.raw_skipped == len(pattern) - len(kept)
    total = rows(tmp_path, "SELECT sum(count), sum(successes) FROM rollup_minute")[0]
    assert total == (43, 40)
    assert store.summary(start)[t.pk][:2] == (43, 40)  # summaries read the aggregates here
    store.close()


def test_retention_of_aggregates_and_summary_beyond_raw_retention(tmp_path):
    store, t = open_store(tmp_path, retention_seconds=7 * 86400, minute_retention_seconds=48 * 3600,
                          hour_retention_seconds=30 * 86400)
    # 10 days ago (raw and minutes are past retention, the hour stays), 40 days ago (all gone),
    # and 10 minutes ago (everything kept).
    for day_ago, n in ((10, 6), (40, 4)):
        for i in range(n):
            store.add_result(Result(t.id, NOW - day_ago * DAY_MS + i * 1000, i % 2 == 0, 10), t.pk)
    for i in range(3):
        store.add_result(Result(t.id, NOW - 10 * MINUTE_MS + i, True, 20), t.pk)
    store.flush()
    assert store.summary(NOW - 30 * DAY_MS) == {t.pk: (9, 6, 15.0)}
    assert store.cleanup() == 10  # raw of 10 and 40 days ago
    assert rows(tmp_path, "SELECT count(*) FROM results") == [(3,)]
    assert rows(tmp_path, "SELECT sum(count) FROM rollup_minute") == [(3,)]
    assert rows(tmp_path, "SELECT sum(count) FROM rollup_hour") == [(9,)]
    # The 30-day summary still answers from the per-hour aggregates.
    assert store.summary(NOW - 30 * DAY_MS) == {t.pk: (9, 6, 15.0)}
    # Short windows read the raw rows, exactly.
    assert store.summary(NOW - 5 * MINUTE_MS) == {}
    assert store.summary(NOW - 11 * MINUTE_MS) == {t.pk: (3, 3, 20.0)}
    store.close()


def test_database_of_the_first_layout_is_converted_and_backfilled(tmp_path):
    """A file from before rollups and the append-only results table (a ts column and two
    indexes) keeps every result: converted in place, then aggregated once."""
    with sqlite3.connect(tmp_path / "r.db") as db:
        db.executescript("""
            CREATE TABLE targets (pk INTEGER PRIMARY KEY, id VARCHAR NOT NULL UNIQUE,
              name VARCHAR NOT NULL UNIQUE, type VARCHAR NOT NULL, enabled BOOLEAN NOT NULL,
              spec TEXT NOT NULL, source VARCHAR NOT NULL, created_at INTEGER NOT NULL,
              updated_at INTEGER NOT NULL);
            CREATE TABLE results (id INTEGER PRIMARY KEY, target_pk INTEGER NOT NULL,
              ts INTEGER NOT NULL, success BOOLEAN NOT NULL, latency_ms INTEGER,
              status_code INTEGER, error VARCHAR);
            CREATE INDEX ix_results_target_ts ON results (target_pk, ts);
            CREATE INDEX ix_results_ts ON results (ts);
        """)
        db.executemany("INSERT INTO results (target_pk, ts, success, latency_ms, error) "
                       "VALUES (1, ?, ?, 8, ?)",
                       [(NOW - 3 * HOUR_MS + i * MINUTE_MS, i != 2, None if i != 2 else "down")
                        for i in range(5)])
    store = Store(tmp_path / "r.db", clock_ms=lambda: NOW)
    store.open()
    assert rows(tmp_path, "SELECT name FROM sqlite_master WHERE tbl_name = 'results'") == [
        ("results",)]  # no index left: rows are appended in time order
    got = store.target_results(1, 0, NOW, 10)
    assert [(r.ts, r.success, r.error) for r in reversed(got)] == [
        (NOW - 3 * HOUR_MS + i * MINUTE_MS, i != 2, None if i != 2 else "down") for i in range(5)]
    assert rows(tmp_path, "SELECT sum(count), sum(successes), sum(lat_sum) FROM rollup_minute") == [
        (5, 4, 32)]
    assert rows(tmp_path, "SELECT count, successes, lat_min, lat_max FROM rollup_hour") == [
        (5, 4, 8, 8)]
    assert rows(tmp_path, "PRAGMA integrity_check") == [("ok",)]
    store.close()


async def test_api_summary_daily_uptime_history_and_health(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[
        {"type": "http", "name": "web", "url": target_server.url, "enabled": False},
    ])
    async with running_app(cfg) as run:
        app = run.app
        [t] = app.targets.values()
        now = now_ms()
        today = now - now % DAY_MS
        # Yesterday: 3 of 4 up; 5 days ago: 1 of 2 up; 10 days ago: all up.
        for day, oks in ((1, [True, True, False, True]), (5, [True, False]), (10, [True] * 3)):
            for i, ok in enumerate(oks):
                app.store.add_result(Result(t.id, today - day * DAY_MS + HOUR_MS + i * 1000, ok,
                                            10 * (i + 1) if ok else None), t.pk)
        app.store.flush()
        app.store.cleanup()  # raw of 10 days ago goes; the aggregates answer for it

        r = await run.client.get(f"/api/v1/targets/{t.id}/uptime/daily", params={"days": 12})
        assert r.status_code == 200
        days = r.json()
        assert len(days) == 12
        assert days[-1]["date"] == from_ms(today).date().isoformat()
        assert len({d["date"] for d in days}) == 12
        assert days[-2]["uptime_percent"] == 75.0 and days[-2]["total_probes"] == 4
        assert days[-2]["avg_latency_ms"] == round((10 + 20 + 40) / 3, 2)
        assert days[-6]["uptime_percent"] == 50.0
        assert days[-11]["uptime_percent"] == 100.0 and days[-11]["total_probes"] == 3
        assert days[0]["uptime_percent"] is None and days[0]["total_probes"] == 0

        r = await run.client.get(f"/api/v1/summary/{t.id}", params={"window": "30d"})
        assert r.status_code == 200
        assert r.json()["total_probes"] == 9
        assert r.json()["uptime_percent"] == round(100 * 7 / 9, 3)

        r = await run.client.get(f"/api/v1/targets/{t.id}/history", params={"window": "7d"})
        assert r.status_code == 200
        buckets = r.json()
        assert [b["resolution"] for b in buckets] == ["hour", "hour"]
        assert [b["total_probes"] for b in buckets] == [2, 4]
        assert buckets[1]["latency_min_ms"] == 10 and buckets[1]["latency_max_ms"] == 40

        for params, msg in (({"days": 0}, "days must be between 1 and 366, got 0"),
                            ({"days": 400}, "days must be between 1 and 366, got 400")):
            r = await run.client.get(f"/api/v1/targets/{t.id}/uptime/daily", params=params)
            assert r.status_code == 400 and r.json() == {"error": msg, "detail": msg}
        r = await run.client.get("/api/v1/targets/nope/uptime/daily")
        assert r.status_code == 404
        r = await run.client.get(f"/api/v1/targets/{t.id}/history", params={"window": "soon"})
        assert r.status_code == 400

        files = ("pingr.db", "pingr.db-wal")

        def on_disk() -> int:
            return sum((tmp_path / f).stat().st_size for f in files if (tmp_path / f).exists())

        # The writer keeps appending to the (small) WAL meanwhile: the size only grows here.
        before = on_disk()
        r = await run.client.get("/api/v1/health")
        body = r.json()
        assert before <= body["db_size_bytes"] <= on_disk()
        assert isinstance(body["disk_bytes_written"], int) and body["disk_bytes_written"] >= 0
        assert "disk_bytes_per_day" in body  # null until a minute has been observed

        # Deleting the target takes its aggregates with it.
        r = await run.client.delete(f"/api/v1/targets/{t.id}")
        assert r.status_code == 204
        with sqlite3.connect(tmp_path / "pingr.db") as db:
            assert db.execute("SELECT count(*) FROM rollup_hour").fetchone() == (0,)
            assert db.execute("SELECT count(*) FROM rollup_minute").fetchone() == (0,)
