"""Where pingr keeps its files: the state directory, the database, the results spool."""

from __future__ import annotations

import os
from pathlib import Path

from pingr.config import Config


def state_directory(env: dict[str, str] | None = None) -> Path:
    """systemd's STATE_DIRECTORY, else /var/lib/pingr when writable, else a per-user directory."""
    env = dict(os.environ if env is None else env)
    if env.get("STATE_DIRECTORY"):
        # systemd may pass several colon-separated directories; the first is ours.
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    system = Path("/var/lib/pingr")
    try:
        system.mkdir(parents=True, exist_ok=True)
        if os.access(system, os.W_OK):
            return system
    except OSError:
        pass
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pingr"


def database_path(config: Config, env: dict[str, str] | None = None) -> Path:
    """Where the SQLite file lives."""
    if config.storage.path:
        return Path(config.storage.path).expanduser()
    return state_directory(env) / "pingr.db"


def spool_path(config: Config, db: Path, env: dict[str, str] | None = None) -> Path:
    """Where the results spool lives: `storage.spool_dir`, systemd's RUNTIME_DIRECTORY (a
    tmpfs that outlives restarts of the service with RuntimeDirectoryPreserve=yes), else
    beside the database."""
    env = dict(os.environ if env is None else env)
    name = db.name + "-spool"
    if config.storage.spool_dir:
        return Path(config.storage.spool_dir).expanduser() / name
    if env.get("RUNTIME_DIRECTORY"):
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0]) / name
    return db.with_name(name)
