"""Docker containers as the engine reports them: inspect documents, times, stats summaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pingr.timeutil import from_ms, now_ms, parse_duration, parse_timestamp, to_ms

MONITOR_LABEL = "pingr.monitor"
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


class DockerUnavailable(Exception):
    """The engine cannot be reached (stopped, socket gone, permission denied)."""


class ContainerNotFound(Exception):
    """No container with that id or name."""


def docker_time(value: str | None) -> int | None:
    """Docker's RFC 3339 nanosecond timestamps to epoch ms; its zero time means 'never'."""
    if not value or value.startswith("0001-"):
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:  # Python parses at most microseconds
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    try:
        return to_ms(datetime.fromisoformat(text))
    except ValueError:
        return None


def _ago(ms: int | None, now: int) -> str:
    if ms is None:
        return ""
    seconds = max(0, (now - ms) // 1000)
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return "less than a second"


@dataclass
class ContainerInfo:
    """What the cache keeps about one container (from `docker inspect`)."""

    id: str
    name: str
    image: str
    state: str
    health: str | None
    created: int | None
    started_at: int | None
    finished_at: int | None
    exit_code: int | None
    restart_count: int
    restart_policy: str | None
    labels: dict[str, str] = field(default_factory=dict)
    health_output: str | None = None

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def compose_project(self) -> str | None:
        return self.labels.get(COMPOSE_PROJECT)

    @property
    def compose_service(self) -> str | None:
        return self.labels.get(COMPOSE_SERVICE)

    @classmethod
    def from_inspect(cls, attrs: dict[str, Any]) -> ContainerInfo:
        """Build from the engine's inspect document."""
        state = attrs.get("State") or {}
        config = attrs.get("Config") or {}
        health = state.get("Health") or {}
        logs = health.get("Log") or []
        return cls(
            id=attrs["Id"],
            name=(attrs.get("Name") or "").lstrip("/"),
            image=config.get("Image") or attrs.get("Image", ""),
            state=state.get("Status", "unknown"),
            health=health.get("Status"),
            created=docker_time(attrs.get("Created")),
            started_at=docker_time(state.get("StartedAt")),
            finished_at=docker_time(state.get("FinishedAt")),
            exit_code=state.get("ExitCode"),
            restart_count=int(attrs.get("RestartCount") or 0),
            restart_policy=((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name")
            or None,
            labels=dict(config.get("Labels") or {}),
            health_output=(logs[-1].get("Output") or "").strip()[:500] if logs else None,
        )

    def status_text(self, now: int) -> str:
        """Like `docker ps`'s STATUS column: 'Up 5 minutes (healthy)', 'Exited (1) 2 hours ago'."""
        if self.state == "running":
            text = f"Up {_ago(self.started_at, now)}"
            return f"{text} ({self.health})" if self.health else text
        if self.state in ("exited", "dead"):
            ago = _ago(self.finished_at, now)
            return f"{self.state.capitalize()} ({self.exit_code}) {ago} ago" if ago else \
                f"{self.state.capitalize()} ({self.exit_code})"
        if self.state == "restarting":
            ago = _ago(self.finished_at, now)
            return f"Restarting ({self.exit_code}) {ago} ago" if ago else "Restarting"
        return self.state.capitalize()


def logs_since(value: str | None) -> datetime | None:
    """`since` for logs: an RFC 3339 time, epoch seconds, or a duration back from now (10m)."""
    if not value:
        return None
    try:
        return from_ms(now_ms() - int(parse_duration(value) * 1000))
    except ValueError:
        pass
    return parse_timestamp(value)


def summarize_stats(raw: dict[str, Any]) -> dict[str, Any]:
    """CPU % (as `docker stats` computes it), memory and network totals from one sample."""
    cpu, pre = raw.get("cpu_stats") or {}, raw.get("precpu_stats") or {}
    cpu_delta = ((cpu.get("cpu_usage") or {}).get("total_usage", 0)
                 - (pre.get("cpu_usage") or {}).get("total_usage", 0))
    sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    percpu = (cpu.get("cpu_usage") or {}).get("percpu_usage") or []
    cpus = cpu.get("online_cpus") or len(percpu) or 1
    cpu_percent = round(cpu_delta / sys_delta * cpus * 100, 2) if sys_delta > 0 and cpu_delta >= 0 \
        else None
    mem = raw.get("memory_stats") or {}
    memory = None
    if "usage" in mem:
        stats = mem.get("stats") or {}
        # Page cache is reclaimable: `docker stats` subtracts it, and so do we.
        cache = stats.get("total_inactive_file", stats.get("inactive_file", 0))
        used = max(0, mem["usage"] - cache)
        limit = mem.get("limit") or 0
        memory = {"usage_bytes": used, "limit_bytes": limit,
                  "percent": round(used * 100 / limit, 2) if limit else None}
    nets = raw.get("networks")
    network = None
    if nets is not None:
        network = {"rx_bytes": sum(n.get("rx_bytes", 0) for n in nets.values()),
                   "tx_bytes": sum(n.get("tx_bytes", 0) for n in nets.values())}
    return {"cpu_percent": cpu_percent, "memory": memory, "network": network}


def socket_path(url: str) -> str | None:
    """The filesystem path of a unix:// socket URL (None for tcp:// and others)."""
    parts = urlsplit(url)
    if parts.scheme in ("unix", "http+unix", ""):
        return parts.path or None
    return None
