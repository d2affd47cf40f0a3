"""One pingr per database: a lock file beside it, which also tells whether the last run ended
cleanly (a crash-restart must not sound the start-up lamp test)."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

RUNNING, CLEAN = b"running\n", b"stopped\n"


class AlreadyRunning(Exception):
    """Another pingr holds the lock on this database."""


class InstanceLock:
    """An exclusive `flock` on `<database>.lock`, held for the life of the process.

    The kernel releases it when the process dies, however it dies, so a stale lock file never
    blocks a restart. Its content says how the previous holder ended: `running` left behind
    means it crashed (or the power went).
    """

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None
        #: True when there was no previous run or it stopped cleanly.
        self.previous_clean = True

    def acquire(self) -> None:
        """Take the lock; raise AlreadyRunning naming the file when another pingr has it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            # A read-only or missing disk: nothing could write the database either, so a
            # second pingr can do no harm; this one starts degraded and says so elsewhere.
            log.warning("cannot lock %s (%s): not guarding against a second pingr",
                        self.path, exc.strerror or exc)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(
                f"another pingr is already running on this database ({self.path} is locked); "
                "stop it first (systemctl stop pingr), or give this one its own storage.path"
            ) from None
        self.previous_clean = os.pread(fd, 64, 0).strip() != RUNNING.strip()
        try:
            self._write(fd, RUNNING)
        except OSError:
            pass  # a full disk: the lock holds all the same
        self._fd = fd

    def release(self, clean: bool = True) -> None:
        """Say how we ended and let go (the file stays: it carries that word)."""
        if self._fd is None:
            return
        if clean:
            try:
                self._write(self._fd, CLEAN)
            except OSError:
                pass  # a full or read-only disk: the next start just skips its lamp test
        os.close(self._fd)
        self._fd = None

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
