"""Running without a writable database: a start on a full or read-only disk goes on from memory,
and the store catches up when the disk allows; and a free-space floor pingr never writes below.

Starting on a full disk used to exit with a traceback at `PRAGMA journal_mode=WAL`; systemd
gave up after five tries and the appliance stayed dark after space returned.

Degraded, the store runs on an in-memory SQLite database holding copies of the small tables
(targets, keys, alerts, channels, silences, webhooks, heartbeats, settings) read from the file
when it is readable; results wait in the bounded in-memory buffer (reads see them). Every
storage.retry_interval the file is tried again; once it opens, the small tables go back to it, the
spool is replayed and everything buffered is committed.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlmodel import SQLModel, create_engine

from pingr.storage.schema import MINUTE, RAW, _set_pragmas

log = logging.getLogger(__name__)

#: Tables copied into memory at a degraded start.
SMALL_TABLES = ("targets", "api_keys", "alerts", "notify_channels", "silences", "webhooks",
                "heartbeats", "collector_settings")
#: Errors that mean "the disk will not let us", not a bug.
STORAGE_ERRORS = (SQLAlchemyError, sqlite3.Error, OSError)


def reason_of(exc: BaseException, path: Path | None = None) -> str:
    """A short reason in the user's words (no SQL, no traceback). SQLite says "disk I/O error"
    or "unable to open database file" for both; the filesystem says which it is."""
    inner = getattr(exc, "orig", None) or exc
    text = getattr(inner, "strerror", None) or str(inner).split("\n")[0]
    text = text.removeprefix("(sqlite3.OperationalError) ")
    if path is not None:
        try:
            st = os.statvfs(path.parent)
        except OSError:
            return text
        if st.f_flag & os.ST_RDONLY:
            return f"read-only file system; SQLite: {text}"
        if st.f_bavail * st.f_frsize < 64 * 1024:
            return f"disk full; SQLite: {text}"
    return text


def free_bytes(path: Path) -> int | None:
    """Bytes free for this process on the filesystem holding `path` (None if unknown)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def memory_engine() -> Engine:
    """An in-memory database with pingr's schema, shared by every thread."""
    engine = create_engine("sqlite://", poolclass=StaticPool,
                           connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _set_pragmas)
    SQLModel.metadata.create_all(engine)
    return engine


def _columns(conn: Any, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def _names(cols: list[str]) -> str:
    return ", ".join(f'"{c}"' for c in cols)  # quoted: notify_channels has a column "on"


def copy_small_tables(path: Path, target: Engine) -> int:
    """Copy the small tables of the database file at `path` (read only) into `target`.
    Returns the rows copied (0 when the file cannot be read)."""
    src = None
    for uri in (f"file:{path}?mode=ro", f"file:{path}?mode=ro&immutable=1"):
        try:
            src = sqlite3.connect(uri, uri=True)
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()
            break
        except sqlite3.Error:
            if src is not None:
                src.close()
            src = None
    if src is None:
        return 0
    copied = 0
    try:
        raw = target.raw_connection()
        try:
            for table in SMALL_TABLES:
                try:
                    have = set(_columns(raw.cursor(), table))
                    cols = [c for c in _columns(src, table) if c in have]
                    if not cols:
                        continue
                    rows = src.execute(f"SELECT {_names(cols)} FROM {table}").fetchall()
                    if rows:
                        raw.cursor().executemany(
                            f"INSERT OR REPLACE INTO {table} ({_names(cols)}) "
                            f"VALUES ({', '.join('?' * len(cols))})", rows)
                        copied += len(rows)
                except sqlite3.Error as exc:
                    log.warning("degraded start: could not read %s: %s", table, exc)
            raw.commit()
        finally:
            raw.close()
    finally:
        src.close()
    return copied


def write_back(source: Engine, target: Engine) -> None:
    """Make the small tables of `target` (the file, writable again) what they became in memory;
    alerts are merged (the file keeps its older history)."""
    src = source.raw_connection()
    dst = target.raw_connection()
    try:
        cur = dst.cursor()
        cur.execute("PRAGMA foreign_keys=OFF")
        cur.execute("BEGIN IMMEDIATE")
        for table in SMALL_TABLES:
            cols = _columns(src.cursor(), table)
            rows = src.cursor().execute(f"SELECT {_names(cols)} FROM {table}").fetchall()
            if table != "alerts":
                cur.execute(f"DELETE FROM {table}")
            if rows:
                cur.executemany(f"INSERT OR REPLACE INTO {table} ({_names(cols)}) "
                                f"VALUES ({', '.join('?' * len(cols))})", rows)
        cur.execute("COMMIT")
        cur.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        try:
            dst.rollback()
        finally:
            raise
    finally:
        src.close()
        dst.close()


def empty_views(engine: Engine, make_view: Any) -> None:
    """The results / rollup views over no day tables (reads find nothing in memory)."""
    with engine.begin() as conn:
        for kind in (RAW, MINUTE):
            make_view(conn, kind)
