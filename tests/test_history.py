"""Metrics history (host series in the rollup tables), daily uptime kept for 90 days under
the size cap, and the history API on a running App sampling this machine."""

from __future__ import annotations

import sqlite3

from pingr.models import Result
from pingr.probes.icmp import IcmpTarget
from pingr.storage import rollup
from pingr.storage.rollup import DAY_MS, HOUR_MS, MINUTE_MS
from pingr.storage.tables import SERIES_BASE
from pingr.store import Store
from tests.conftest import make_config, running_app

NOW = 2000 * DAY_MS + 12 * HOUR_MS + 30 * MINUTE_MS  # 12:30 UTC


def open_store(tmp_path, **kw) -> tuple[Store, object]:
    store = Store(tmp_path / "h.db", clock_ms=lambda: NOW, **kw)
    store.open()
    [target] = store.reconcile([IcmpTarget(type="icmp", name="lo", host="127.0.0.1")])
    store.load_series()
    return store, target


def rows(tmp_path, sql: str) -> list[tuple]:
    db = sqlite3.connect(tmp_path / "h.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


async def test_metric_samples_ride_the_results_commit_and_read_back_merged(tmp_path):
    store, t = open_store(tmp_path)
    ids = await store.series_ids(["host:cpu", "host:memory"], NOW)
    assert all(pk > SERIES_BASE for pk in ids.values())  # never a target's pk
    assert await store.series_ids(["host:cpu"], NOW) == {"host:cpu": ids["host:cpu"]}
    base = NOW - NOW % MINUTE_MS - MINUTE_MS
    for i, (cpu, mem) in enumerate(((1250, 4000), (3750, 4100), (500, 4200))):
        store.add_samples(base + i * 5000, {ids["host:cpu"]: cpu, ids["host:memory"]: mem})
    store.add_result(Result(t.id, base, True, 3), t.pk)
    # Buffered: read back before any commit.
    assert store.series_history(ids["host:cpu"], base, NOW, "minute") == [
        (base, 3, 1833, 500, 3750)]
    store.flush()
    # One transaction wrote both; the series live beside the target in the same tables.
    assert rows(tmp_path, "SELECT target_pk, count, lat_sum, lat_min, lat_max FROM "
                          "rollup_minute ORDER BY target_pk") == [
        (t.pk, 1, 3, 3, 3), (ids["host:cpu"], 3, 5500, 500, 3750),
        (ids["host:memory"], 3, 12300, 4000, 4200)]
    store.add_samples(base + 20_000, {ids["host:cpu"]: 9000})  # buffered again
    assert store.series_history(ids["host:cpu"], base, NOW, "minute") == [
        (base, 4, 3625, 500, 9000)]
    assert store.series_history(ids["host:cpu"], base - base % HOUR_MS, NOW, "hour") == [
        (base - base % HOUR_MS, 4, 3625, 500, 9000)]
    # Summaries and their "all targets" form never see a series.
    assert set(store.summary(NOW - 2 * DAY_MS)) == {t.pk}
    store.flush()
    store.close()
    # Series names survive a restart with their keys.
    again = Store(tmp_path / "h.db", clock_ms=lambda: NOW)
    again.open()
    assert again.load_series() == ids
    again.close()


def _hours(store: Store, pk: int, days: int, per_hour: tuple[int, int]) -> None:
    """Hour aggregates of `days` whole days before today, written as the writer would."""
    today = NOW - NOW % DAY_MS
    hours = {(today - d * DAY_MS + h * HOUR_MS, pk): [per_hour[0], per_hour[1], per_hour[1],
                                                      per_hour[1] * 10, 5, 15]
             for d in range(1, days + 1) for h in range(24)}
    with store.engine.begin() as conn:
        rollup.write(conn, {}, lambda b: "unused", hours=hours)


def test_daily_uptime_of_90_days_outlives_the_hours_under_the_cap(tmp_path):
    store, t = open_store(tmp_path, max_size=0)
    _hours(store, t.pk, 120, (60, 57))  # 95 % every day, 120 days back
    for pk in range(2, 40):  # other targets' hours: the bulk the cap has to cut
        _hours(store, pk, 120, (60, 60))
    today = NOW - NOW % DAY_MS
    before = store.daily_uptime(t.pk, today - 89 * DAY_MS)
    assert len(before) == 89 and all(v[:2] == (1440, 1368) for v in before.values())
    hours_before = rows(tmp_path, "SELECT count(*) FROM rollup_hour")[0][0]
    store.max_size = store.db_size()[0] // 4
    assert store.enforce_cap() > 0
    assert store.db_size()[1] <= store.max_size
    hours_after, oldest_hour = rows(tmp_path, "SELECT count(*), min(bucket) FROM rollup_hour")[0]
    assert hours_after < hours_before / 3
    assert oldest_hour > today - 89 * DAY_MS  # the cap took hours of the last 90 days too
    # ...yet every day of the last 90 is still whole: folded into rollup_day as they went.
    assert store.daily_uptime(t.pk, today - 89 * DAY_MS) == before
    (days_kept,) = rows(tmp_path, f"SELECT count(DISTINCT bucket) FROM rollup_day "
                                  f"WHERE target_pk = {t.pk}")[0]
    assert 0 < days_kept <= 90
    # Beyond the horizon nothing was folded (the oldest hours simply went).
    assert rows(tmp_path, "SELECT min(bucket) FROM rollup_day")[0][0] >= today - 90 * DAY_MS
    assert rows(tmp_path, "PRAGMA integrity_check") == [("ok",)]
    store.close()


def test_a_short_hour_retention_keeps_the_daily_uptime_and_the_default_folds_nothing(tmp_path):
    store, t = open_store(tmp_path, hour_retention_seconds=7 * 86400)
    _hours(store, t.pk, 120, (60, 30))
    today = NOW - NOW % DAY_MS
    store.cleanup()
    (oldest,) = rows(tmp_path, "SELECT min(bucket) FROM rollup_hour")[0]
    assert oldest >= NOW - 7 * DAY_MS
    daily = store.daily_uptime(t.pk, today - 89 * DAY_MS)
    assert len(daily) == 89 and all(v[:2] == (1440, 720) for v in daily.values())
    # 90 whole days before today are kept (the horizon); older ones went with their hours.
    kept = store.daily_uptime(t.pk, today - 119 * DAY_MS)
    assert sorted(kept) == [today - d * DAY_MS for d in range(90, 0, -1)]
    store.close()

    other = tmp_path / "default"
    other.mkdir()
    store, t = open_store(other)  # hour_retention 365 days
    _hours(store, t.pk, 120, (60, 30))
    store.cleanup()
    assert rows(other, "SELECT count(*) FROM rollup_day") == [(0,)]
    assert len(store.daily_uptime(t.pk, today - 119 * DAY_MS)) == 119
    store.close()


async def test_system_history_api_samples_this_machine(tmp_path):
    cfg = make_config(tmp_path, alerts={"thresholds": {"interval": "200ms"}})
    async with running_app(cfg) as r:
        c = r.client

        async def cpu_points():
            body = (await c.get("/api/v1/system/history?metric=cpu&range=1h")).json()
            return body["points"] if body["points"] and body["points"][-1]["samples"] >= 3 \
                else None

        points = await r.wait_for(cpu_points, timeout=15)
        body = (await c.get("/api/v1/system/history?metric=cpu&range=1h")).json()
        assert (body["metric"], body["unit"], body["range"], body["resolution"]) == (
            "cpu", "%", "1h", "minute")
        last = points[-1]
        assert last["ts"].endswith(":00.000000Z") and 0 <= last["min"] <= last["avg"] <= last["max"]
        assert last["max"] <= 100
        mem = (await c.get("/api/v1/system/history?metric=memory&range=10m")).json()
        assert 0 < mem["points"][-1]["avg"] < 100
        disk = (await c.get("/api/v1/system/history?metric=disk&mount=/&range=1h")).json()
        assert disk["mount"] == "/" and 0 < disk["points"][-1]["avg"] <= 100
        day = (await c.get("/api/v1/system/history?metric=memory&range=7d")).json()
        assert day["resolution"] == "hour" and day["points"][-1]["ts"].endswith(":00:00.000000Z")
        for bad, says in (("metric=swap", "unknown metric 'swap'"),
                          ("metric=cpu&range=2y", "range: "),
                          ("metric=cpu&range=10s", "range must be between 1m"),
                          ("metric=disk&mount=/nowhere", "no disk history for mount")):
            resp = await c.get(f"/api/v1/system/history?{bad}")
            assert resp.status_code == 400 and says in resp.json()["detail"], resp.json()
        _, ro = await r.app.key_admin.manage("create", name="ro", scope="read")
        assert (await c.get("/api/v1/system/history", headers={"x-api-key": ro})
                ).status_code == 200
        assert (await c.get("/api/v1/resources/top")).status_code == 503  # no Docker here
