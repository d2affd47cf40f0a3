"""When a watched container is a problem: not running past its grace, unhealthy, crash loop."""

from __future__ import annotations

from collections import deque

from pingr.collectors.containers import MONITOR_LABEL, ContainerInfo
from pingr.settings import DockerConfig
from pingr.timeutil import format_duration

#: How a crash-loop verdict's error begins (the collector tells a restart loop by it).
CRASH_LOOP = "crash loop"
_NOT_RUNNING = {"exited", "dead", "created", "paused", "removing", "restarting"}


class ContainerRules:
    """The verdict on each watched container; remembers restarts and how long one is down.

    Pure bookkeeping: the collector hands it what the engine reported and the time.
    """

    def __init__(self, cfg: DockerConfig) -> None:
        self.cfg = cfg
        #: container name -> epoch ms of each restart seen within the crash-loop window
        self.restarts: dict[str, deque[int]] = {}
        self._restart_counts: dict[str, tuple[str, int]] = {}
        self._bad_since: dict[str, int] = {}

    def expected(self, info: ContainerInfo) -> bool:
        """Is this container expected to be running (watched)?"""
        label = info.labels.get(MONITOR_LABEL, "").strip().lower()
        if label in ("false", "0", "no"):
            return False
        return (self.cfg.monitor == "all" or label in ("true", "1", "yes")
                or info.name in self.cfg.containers)

    def note_restarts(self, info: ContainerInfo, now: int) -> None:
        """Count restarts by the engine's restart policy (RestartCount grows by one each)."""
        prev = self._restart_counts.get(info.name)
        self._restart_counts[info.name] = (info.id, info.restart_count)
        if prev is None or prev[0] != info.id or info.restart_count <= prev[1]:
            return  # first sight, a re-created container, or nothing new
        seen = self.restarts.setdefault(info.name, deque(maxlen=1000))
        seen.extend([now] * (info.restart_count - prev[1]))

    def forget(self, name: str) -> None:
        self._bad_since.pop(name, None)

    def verdict(self, name: str, info: ContainerInfo | None, now: int) -> tuple[bool, str | None]:
        """(success, error) of one watched container right now."""
        if info is None:
            self._bad_since.pop(name, None)
            return False, "container not found"
        window = self.cfg.crash_loop.window * 1000
        seen = self.restarts.get(name)
        while seen and now - seen[0] > window:
            seen.popleft()
        if seen and len(seen) >= self.cfg.crash_loop.restarts:
            return False, (f"{CRASH_LOOP}: restarted {len(seen)} times in "
                           f"{format_duration(self.cfg.crash_loop.window)}")
        if info.state == "running":
            self._bad_since.pop(name, None)
            if info.health == "unhealthy":
                detail = f": {info.health_output}" if info.health_output else ""
                return False, f"unhealthy{detail}"
            return True, None
        since = self._bad_since.setdefault(name, now)
        if info.state in _NOT_RUNNING and now - since >= self.cfg.grace * 1000:
            code = f" (exit code {info.exit_code})" if info.state in ("exited", "dead") else ""
            return False, f"{info.state}{code}"
        return True, None  # stopped only briefly (a restart): not a problem yet

    def next_deadline(self) -> int | None:
        """The epoch ms at which a verdict can change with no event (a grace ends, a restart
        leaves the crash-loop window), or None."""
        times = [since + round(self.cfg.grace * 1000) for since in self._bad_since.values()]
        window = round(self.cfg.crash_loop.window * 1000)
        times += [seen[0] + window + 1 for seen in self.restarts.values() if seen]
        return min(times, default=None)
