"""Store: batched writes, WAL, retention in batches, bounded file, and crash safety (kill -9)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import yaml

from pingr.models import Alert, Result
from pingr.probes.icmp import IcmpTarget
from pingr.storage.retention import DELETE_BATCH
from pingr.storage.tables import ID_SHIFT
from pingr.store import Store


def open_store(tmp_path, **kw) -> Store:
    store = Store(tmp_path / "s.db", **kw)
    store.open()
    return store


def test_reconciled_config_targets_share_the_config_s_spec(tmp_path):
    """A config target's spec is held once: the stored row's JSON is the config spec's, so the
    target takes that very object; a row that differs (removed: disabled) is read back."""
    store = open_store(tmp_path)
    a = IcmpTarget(type="icmp", name="a", host="127.0.0.1")
    b = IcmpTarget(type="icmp", name="b", host="127.0.0.2")
    first = {t.name: t for t in store.reconcile([a, b])}
    assert first["a"].spec is a and first["b"].spec is b
    a2 = IcmpTarget(type="icmp", name="a", host="127.0.0.3")
    second = {t.name: t for t in store.reconcile([a2])}
    assert second["a"].spec is a2 and second["a"].id == first["a"].id
    assert second["b"].spec is not b and second["b"].spec.enabled is False
    assert second["b"].spec.host == "127.0.0.2"
    # A fresh read parses every row again, equal to what the config said.
    again = {t.name: t for t in store.load_targets()}
    assert again["a"].spec == a2 and again["a"].spec is not a2
    store.close()


def test_pragmas_and_batched_flush(tmp_path):
    store = open_store(tmp_path)
    [t] = store.reconcile([IcmpTarget(type="icmp", name="lo", host="127.0.0.1")])
    for i in range(1000):
        store.add_result(Result(t.id, 1_000 + i, i % 2 == 0, 1), t.pk)
    # Count transactions through SQLite's own commit hook: one flush, one transaction.
    commits = []
    raw = store.engine.raw_connection()
    raw.close()
    with store.engine.connect() as conn:
        conn.connection.dbapi_connection.set_trace_callback(
            lambda sql: commits.append(sql) if sql.strip().upper() == "COMMIT" else None)
        conn.close()
    assert store.flush() == 1000
    assert store.flush() == 0
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1000
    assert len(commits) <= 1
    store.close()


def test_retention_deletes_in_batches_and_returns_space(tmp_path):
    now = 10 * 86400 * 1000
    store = open_store(tmp_path, retention_seconds=86400, clock_ms=lambda: now)
    [t] = store.reconcile([IcmpTarget(type="icmp", name="lo", host="127.0.0.1")])
    old = 5 * DELETE_BATCH + 123
    for i in range(old):
        store.add_result(Result(t.id, now - 3 * 86400 * 1000 + i, True, 1, error="x" * 50), t.pk)
    for i in range(500):
        store.add_result(Result(t.id, now - 1000 + i, True, 1), t.pk)
    store.flush()
    store.engine.dispose()
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages_before = db.execute("PRAGMA page_count").fetchone()[0]
    assert store.cleanup() == old
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 500
        assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert db.execute("PRAGMA page_count").fetchone()[0] < pages_before
    assert store.cleanup() == 0
    store.close()


def test_small_deletions_keep_free_pages_for_reuse(tmp_path):
    """Below the reserve, freed pages stay in the file for the next results (no page moves)."""
    now = 10 * 86400 * 1000
    store = open_store(tmp_path, retention_seconds=86400, clock_ms=lambda: now)
    [t] = store.reconcile([IcmpTarget(type="icmp", name="lo", host="127.0.0.1")])
    for i in range(2000):
        store.add_result(Result(t.id, now - 3 * 86400 * 1000 + i, True, 1, error="x" * 50), t.pk)
    for i in range(20000):
        store.add_result(Result(t.id, now - 1000 + i, True, 1), t.pk)
    store.flush()
    assert store.cleanup() == 2000
    with sqlite3.connect(tmp_path / "s.db") as db:
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    assert 0 < free <= max(256, pages // 4)
    store.close()


def test_write_failure_keeps_data_and_recovers(tmp_path):
    store = open_store(tmp_path)
    [t] = store.reconcile([IcmpTarget(type="icmp", name="lo", host="127.0.0.1")])
    store.add_result(Result(t.id, 5, True, 1), t.pk)
    # Another process holds the write lock (as a stuck backup job might): the flush fails,
    # the result stays buffered, and the next flush writes it.
    blocker = sqlite3.connect(tmp_path / "s.db", timeout=0)
    blocker.execute("BEGIN IMMEDIATE")
    store.engine.dispose()
    from sqlalchemy import event

    event.listen(store.engine, "connect", lambda c, _: c.execute("PRAGMA busy_timeout=50"))
    assert store.flush() == 0
    assert store.last_error is not None and store.pending()
    blocker.rollback()
    blocker.close()
    assert store.flush() == 1
    assert store.last_error is None
    store.close()


CRASH_TARGETS = 20


def test_kill_9_leaves_a_sound_database_losing_at_most_one_flush(tmp_path, target_server):
    """Real `pingr run`, killed with SIGKILL at random moments, three times on one file."""
    db = tmp_path / "crash.db"
    cfg = {
        "host": "127.0.0.1", "port": 0,
        "auth": {"api_key": "k" * 32},
        "storage": {"path": str(db), "flush_interval": "1s"},
        "scheduler": {"stagger": 0},
        "targets": [{"name": f"t{i}", "type": "http", "url": target_server.url,
                     "interval_seconds": 1} for i in range(CRASH_TARGETS)],
    }
    path = tmp_path / "pingr.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rng = random.Random(42)
    for round_ in range(3):
        target_server.behaviour.hits.clear()
        proc = subprocess.Popen([sys.executable, "-m", "pingr", "run", "--config", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 20
        while len(target_server.behaviour.hits) < CRASH_TARGETS and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(2.0 + rng.random() * 2.0)
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # The next start replays the spool: results since the last commit were there (a
        # commit happens every commit_interval or at once when an alert changes).
        spool = tmp_path / "crash.db-spool"
        store = Store(db)
        store.open()
        store.close()
        assert not spool.exists()  # a clean stop commits and removes it
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            # Every probe that completed more than one flush interval (plus the probe's own
            # time) before the kill must be in the database now.
            cutoff = killed_at - 1.5
            expected = sum(1 for h in target_server.behaviour.hits if h < cutoff)
            stored = conn.execute(
                "SELECT COUNT(*) FROM results WHERE id >= ? AND id < ?",
                ((int(target_server.behaviour.hits[0] * 1000) - 1000) << ID_SHIFT,
                 (int(cutoff * 1000) + 200) << ID_SHIFT),
            ).fetchone()[0]
            # ... and none twice: ids are unique by construction, so count distinct probes.
            per_target = conn.execute(
                "SELECT target_pk, count(*), count(DISTINCT id >> 16) FROM results "
                "GROUP BY target_pk").fetchall()
        assert stored >= expected, f"round {round_}: {stored} stored < {expected} probed"
        assert expected >= CRASH_TARGETS, "the service did not probe long enough to test"
        assert all(n == distinct for _pk, n, distinct in per_target)


SPOOLER = """
import sys, time
from pathlib import Path
from pingr.probes.icmp import IcmpTarget
from pingr.models import Result
from pingr.store import Store
store = Store(Path(sys.argv[1]))
store.open()
[t] = store.reconcile([IcmpTarget(type="icmp", name="lo", host="127.0.0.1")])
for i in range(300):
    store.add_result(Result(t.id, 1_000_000 + i * 1000, i % 3 != 0, i % 7, error=None
                            if i % 3 else "no reply"), t.pk)
    if i % 10 == 9:
        store.spool()  # what the writer does every flush_interval
print("spooled", flush=True)
time.sleep(60)
"""


def test_spool_is_replayed_after_kill_9_exactly_once(tmp_path):
    """Results that reached the spool survive a kill -9 and are committed once at the next
    start; a crash between the commit and the spool's truncation replays nothing twice; a
    torn tail (power cut) costs only the frame it tore."""
    db = tmp_path / "s.db"
    proc = subprocess.Popen([sys.executable, "-c", SPOOLER, str(db)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "spooled"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    spool = tmp_path / "s.db-spool"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == 0
    saved = spool.read_bytes()

    store = open_store(tmp_path)
    assert store.replayed == 300
    assert store.recent_results(1, 1000)[0].ts == 1_000_000 + 299 * 1000
    store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*), sum(success), sum(error IS NOT NULL) "
                            "FROM results").fetchone() == (300, 200, 100)
        assert conn.execute("SELECT sum(count), sum(successes) FROM rollup_minute"
                            ).fetchone() == (300, 200)

    # The state of a crash after the commit but before the truncation: the old spool is back.
    spool.write_bytes(saved)
    store = open_store(tmp_path)
    assert store.replayed == 0
    store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == 300
        assert conn.execute("SELECT sum(count) FROM rollup_minute").fetchone()[0] == 300

    # A torn last frame on a fresh database: the 29 whole frames before it are recovered.
    db2 = tmp_path / "t.db"
    torn = tmp_path / "t.db-spool"
    torn.write_bytes(saved[:-5])
    store = Store(db2)
    store.open()
    assert store.replayed == 290
    store.close()
    assert not torn.exists()


def test_reads_include_buffered_results(tmp_path):
    """Before a commit, results, summaries, history and daily uptime already count them."""
    now = 100 * 86_400_000 + 3_600_000
    store = open_store(tmp_path, clock_ms=lambda: now)
    [t] = store.reconcile([IcmpTarget(type="icmp", name="lo", host="127.0.0.1")])
    for i in range(10):  # committed
        store.add_result(Result(t.id, now - 600_000 + i * 1000, True, 10), t.pk)
    store.flush()
    for i in range(5):  # only buffered (one in the spool, the rest in memory)
        store.add_result(Result(t.id, now - 1000 + i * 100, i != 4, 20 if i != 4 else None), t.pk)
        if i == 0:
            store.spool()
    assert len(store.target_results(t.pk, now - 3_600_000, now, 100)) == 15
    assert store.latest_results(3)[0].ts == now - 600 and not store.latest_results(3)[0].success
    assert store.summary(now - 3_600_000)[t.pk] == (15, 14, (10 * 10 + 4 * 20) / 14)
    assert store.summary(now - 86_400_000)[t.pk][:2] == (15, 14)  # aggregates path
    assert sum(b[1] for b in store.history(t.pk, now - 7200_000, now, "minute")) == 15
    assert sum(d[0] for d in store.daily_uptime(t.pk, now - 2 * 86_400_000).values()) == 15
    assert store.newest_result_ts() == now - 600
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == 15


def test_alert_reads_racing_commits_see_exactly_the_open_alert(tmp_path):
    """A commit moves alerts from the buffer to the database; a read across it must see the
    newest state of every alert, never neither copy nor an old one (a real flush thread)."""
    import threading

    store = open_store(tmp_path)
    stop = threading.Event()

    def flusher():
        while not stop.is_set():
            store.flush()

    def alert(i, resolved=None):
        return Alert(i, "t", "t", opened_at=i, resolved_at=resolved, peak_failures=1,
                     last_error=str(i))

    thread = threading.Thread(target=flusher)
    thread.start()
    wrong, n = [], 1
    store.put_alert(alert(1))
    try:
        # At least 3 s and 200 transitions (under emulation one takes ~60 ms), at most 60 s.
        start = time.monotonic()
        while (time.monotonic() - start < 3 or n <= 200) and time.monotonic() - start < 60:
            store.put_alert(alert(n, resolved=n))  # the open alert resolves ...
            store.put_alert(alert(n + 1))  # ... and the next one opens
            n += 1
            got = [a.id for a in store.alerts("open", 10)]
            if got != [n]:
                wrong.append((n, got))
    finally:
        stop.set()
        thread.join()
    store.close()
    assert n > 100, "too few transitions to race anything"
    assert not wrong, f"{len(wrong)} of {n - 1} reads wrong, first: {wrong[:3]}"
