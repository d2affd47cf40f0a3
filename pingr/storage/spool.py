"""The results spool: an append-only file that makes a result crash-safe within a second.

Why it exists: SQLite writes whole 4 KiB pages (twice in WAL mode: WAL, then checkpoint) for
every commit, so committing each second costs an SD card gigabytes a day. Instead, every
`flush_interval` the new results are appended here in a compact binary form (about 13 bytes
each) with one `write()`, no fsync, and the database gets them in one transaction every
`commit_interval`. A `kill -9` loses nothing that reached `write()` (the kernel has it); at
the next start the spool is replayed into the database. A power cut loses what the kernel had
not yet written back (the same is true of SQLite with `synchronous=NORMAL`).

Layout: a header (magic, version, generation), then frames of `<len:u32><crc32:u32><records>`.
Each commit stores the spool's generation in the database (`meta.spool_gen`) in the same
transaction, then truncates the file and starts the next generation; so a crash between the
commit and the truncation replays nothing twice. A torn or corrupt tail frame (power cut) ends
the replay: everything before it is used.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"PGRS"
VERSION = 1
_HEADER = struct.Struct("<4sBQ")
_FRAME = struct.Struct("<II")
_REC = struct.Struct("<qB")  # id (ts << 16 | pk), flags
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")

F_SUCCESS = 1
F_RAW = 2  # kept as a raw row (raw: changes drops most successes but counts them in rollups)
F_LATENCY = 4
F_STATUS = 8
F_ERROR = 16

#: (id, success, latency_ms, status_code, error, keep_raw)
Record = tuple[int, bool, "int | None", "int | None", "str | None", bool]


def encode(records: list[Record]) -> bytes:
    """One frame holding `records`."""
    parts: list[bytes] = []
    for rid, success, latency, status, error, raw in records:
        flags = ((F_SUCCESS if success else 0) | (F_RAW if raw else 0)
                 | (F_LATENCY if latency is not None else 0)
                 | (F_STATUS if status is not None else 0)
                 | (F_ERROR if error is not None else 0))
        parts.append(_REC.pack(rid, flags))
        if latency is not None:
            parts.append(_U32.pack(min(max(latency, 0), 0xFFFFFFFF)))
        if status is not None:
            parts.append(_U16.pack(status & 0xFFFF))
        if error is not None:
            data = error.encode("utf-8", "replace")[:0xFFFF]
            parts.append(_U16.pack(len(data)) + data)
    payload = b"".join(parts)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> Iterator[Record]:
    """Records of one frame's payload."""
    pos, end = 0, len(payload)
    while pos < end:
        rid, flags = _REC.unpack_from(payload, pos)
        pos += _REC.size
        latency = status = error = None
        if flags & F_LATENCY:
            (latency,) = _U32.unpack_from(payload, pos)
            pos += 4
        if flags & F_STATUS:
            (status,) = _U16.unpack_from(payload, pos)
            pos += 2
        if flags & F_ERROR:
            (n,) = _U16.unpack_from(payload, pos)
            error = payload[pos + 2:pos + 2 + n].decode("utf-8", "replace")
            pos += 2 + n
        yield rid, bool(flags & F_SUCCESS), latency, status, error, bool(flags & F_RAW)


class Spool:
    """The spool file of one database. Used from the store's writer thread only."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.generation = 0
        self.frames = 0  # frames written in this generation
        self.size = 0
        self._fd: int | None = None

    def read(self) -> tuple[int, list[Record], int]:
        """(generation, records, frames) of an existing spool; (0, [], 0) when there is none."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0, [], 0
        if len(data) < _HEADER.size:
            return 0, [], 0
        magic, version, generation = _HEADER.unpack_from(data)
        if magic != MAGIC or version != VERSION:
            log.warning("%s is not a pingr spool file (ignored)", self.path)
            return 0, [], 0
        records: list[Record] = []
        frames = 0
        pos = _HEADER.size
        while pos + _FRAME.size <= len(data):
            size, crc = _FRAME.unpack_from(data, pos)
            payload = data[pos + _FRAME.size:pos + _FRAME.size + size]
            if len(payload) < size or zlib.crc32(payload) != crc:
                log.warning("spool %s: torn frame at byte %d (a power cut?); %d results "
                            "before it are recovered", self.path, pos, len(records))
                break
            try:
                records.extend(decode(payload))
            except struct.error:
                log.warning("spool %s: undecodable frame at byte %d", self.path, pos)
                break
            pos += _FRAME.size + size
            frames += 1
        if pos < len(data):
            # Whatever follows a torn frame cannot be trusted: cut it, so appends stay readable.
            with open(self.path, "r+b") as f:
                f.truncate(pos)
        return generation, records, frames

    def start(self, generation: int) -> None:
        """Begin generation `generation` in an empty file."""
        self.close()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        self._fd, self.generation, self.frames, self.size = fd, generation, 0, 0
        self._write(_HEADER.pack(MAGIC, VERSION, generation))

    def resume(self, generation: int, frames: int) -> None:
        """Keep appending to the existing file of `generation` (records replayed, not committed)."""
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.generation, self.frames = generation, frames
        self.size = os.fstat(self._fd).st_size

    def append(self, records: list[Record]) -> int:
        """Append one frame (one write(), no fsync). Returns the bytes written."""
        frame = encode(records)
        self._write(frame)
        self.frames += 1
        return len(frame)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        try:
            n = os.write(self._fd, data)
            if n != len(data):
                raise OSError(f"short write to {self.path} ({n} of {len(data)} bytes)")
        except OSError:
            # Cut a partial frame off, so the frames after it stay readable.
            try:
                os.ftruncate(self._fd, self.size)
            except OSError:
                pass
            raise
        self.size += len(data)

    def close(self, remove: bool = False) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if remove:
            self.path.unlink(missing_ok=True)
