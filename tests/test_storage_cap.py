"""Size cap: oldest raw results go first, aggregates last; WAL bounded; config of sizes."""

from __future__ import annotations

import sqlite3

import pytest

from pingr.config import ConfigError, parse_config
from pingr.models import Result
from pingr.probes.icmp import IcmpTarget
from pingr.storage.retention import CAP_HEADROOM
from pingr.storage.rollup import DAY_MS, MINUTE_MS
from pingr.store import Store

NOW = 2000 * DAY_MS


def make_store(tmp_path, **kw) -> tuple[Store, object]:
    store = Store(tmp_path / "c.db", clock_ms=lambda: NOW, **kw)
    store.open()
    [target] = store.reconcile([IcmpTarget(type="icmp", name="lo", host="127.0.0.1")])
    return store, target


def query(tmp_path, sql: str):
    db = sqlite3.connect(tmp_path / "c.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_over_the_cap_the_oldest_raw_results_go_first(tmp_path):
    cap = 1024 * 1024
    store, t = make_store(tmp_path, max_size=0)  # fill without the cap first
    n = 30_000
    for i in range(n):  # ~2.5 MB: one result a minute for ~3 weeks, each with an error text
        store.add_result(Result(t.id, NOW - (n - i) * MINUTE_MS, False, error="e" * 40), t.pk)
    store.flush()
    hours_before = query(tmp_path, "SELECT count(*), sum(count) FROM rollup_hour")
    assert store.db_size()[0] > 2 * cap
    store.max_size = cap
    removed = store.enforce_cap()
    assert removed > 0
    size, used = store.db_size()
    assert size <= cap and used <= cap * CAP_HEADROOM
    store.engine.dispose()  # the last connection checkpoints into the file
    assert store.file_size() <= cap
    # The newest results stayed, the oldest went, aggregates were not touched.
    (left, oldest, newest), = query(
        tmp_path, "SELECT count(*), min(id) >> 16, max(id) >> 16 FROM results")
    assert left == n - removed and newest == NOW - MINUTE_MS
    assert oldest == NOW - (n - removed) * MINUTE_MS
    assert query(tmp_path, "SELECT count(*), sum(count) FROM rollup_hour") == hours_before
    assert query(tmp_path, "PRAGMA integrity_check") == [("ok",)]
    # Under the cap nothing more happens.
    assert store.enforce_cap() == 0
    store.close()


def test_aggregates_go_last_minutes_before_hours(tmp_path):
    # Many targets' per-minute aggregates are bigger than the cap on their own: raw results
    # are removed completely, then the oldest minutes; the per-hour aggregates survive.
    store, t = make_store(tmp_path, max_size=0, minute_retention_seconds=30 * 86400)
    for pk in range(1, 41):
        for m in range(720):  # 12 hours of minutes per target
            store.add_result(Result(t.id, NOW - (720 - m) * MINUTE_MS, True, pk), pk)
    store.flush()
    hours = query(tmp_path, "SELECT count(*), sum(count) FROM rollup_hour")
    cap = 512 * 1024
    assert store.db_size()[0] > cap
    store.max_size = cap
    assert store.enforce_cap() > 0
    assert store.db_size()[0] <= cap
    assert query(tmp_path, "SELECT count(*) FROM results") == [(0,)]
    (minutes, oldest), = query(tmp_path, "SELECT count(*), min(bucket) FROM rollup_minute")
    assert 0 < minutes < 40 * 720
    assert oldest > NOW - 720 * MINUTE_MS  # the oldest minutes went
    newest = query(tmp_path, "SELECT count(*) FROM rollup_minute WHERE bucket = "
                             f"{NOW - MINUTE_MS}")
    assert newest == [(40,)]  # the newest minute of every target is still there
    assert query(tmp_path, "SELECT count(*), sum(count) FROM rollup_hour") == hours
    store.close()


def test_cleanup_enforces_the_cap_and_the_wal_stays_bounded(tmp_path):
    store, t = make_store(tmp_path, max_size=1024 * 1024)
    with store.engine.connect() as conn:  # a per-connection setting: ask pingr's own
        limit = conn.exec_driver_sql("PRAGMA journal_size_limit").scalar()
    assert 0 < limit <= 4 * 1024 * 1024
    wal = tmp_path / "c.db-wal"
    peak = 0
    for round_ in range(3):  # big batches, each beyond the WAL limit
        for i in range(30_000):
            ts = NOW - DAY_MS + (round_ * 30_000 + i) * 1000
            store.add_result(Result(t.id, ts, False, error="x" * 120), t.pk)
        store.flush()
        peak = max(peak, wal.stat().st_size)
        store.cleanup()
    assert peak > limit
    # After a checkpoint the WAL is truncated back to journal_size_limit, not left at its peak.
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
    store.add_result(Result(t.id, NOW, True, 1), t.pk)
    store.flush()
    assert wal.stat().st_size <= limit + 64 * 1024
    assert store.db_size()[0] <= 1024 * 1024
    assert store.cap_removed > 0
    store.close()


def test_storage_settings_parse_and_errors_are_located():
    cfg = parse_config("storage:\n  max_size: 64MB\n  raw: changes\n  raw_sample_interval: 10m\n")
    assert cfg.storage.max_size == 64 * 1024 * 1024
    assert cfg.storage.raw == "changes" and cfg.storage.raw_sample_interval == 600
    assert parse_config("storage: {max_size: 1.5GB}").storage.max_size == int(1.5 * 1024**3)
    assert parse_config("storage: {max_size: 0}").storage.max_size == 0
    for text, msg in (
        ("storage:\n  max_size: 12 parsecs\n", "storage.max_size: invalid size '12 parsecs'"),
        ("storage:\n  max_size: 500k\n", "max_size must be at least 1MB"),
        ("storage:\n  raw: some\n", "storage.raw"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_config(text)
        assert msg in str(err.value)
        assert "pingr.yaml:2:" in str(err.value)
