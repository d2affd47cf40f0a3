"""Docker containers via the docker SDK: cache, event stream, resync, reconnect, alert sources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pingr.collectors.source import feed, make_target
from pingr.timeutil import format_duration, now_ms, parse_timestamp, to_ms

if TYPE_CHECKING:
    from pingr.app import App
    from pingr.settings import DockerConfig

log = logging.getLogger(__name__)

MONITOR_LABEL = "pingr.monitor"
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
#: Longest pause between reconnection attempts while the engine is away.
RECONNECT_MAX = 5.0
#: How often time-based rules (grace, crash-loop window) are re-checked between events.
TICK = 1.0
_NOT_RUNNING = {"exited", "dead", "created", "paused", "removing", "restarting"}


class DockerUnavailable(Exception):
    """The engine cannot be reached (stopped, socket gone, permission denied)."""


class ContainerNotFound(Exception):
    """No container with that id or name."""


def _ms(value: str | None) -> int | None:
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
            created=_ms(attrs.get("Created")),
            started_at=_ms(state.get("StartedAt")),
            finished_at=_ms(state.get("FinishedAt")),
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


def _since_param(value: str | None) -> datetime | None:
    """`since` for logs: an RFC 3339 time, epoch seconds, or a duration back from now (10m)."""
    if not value:
        return None
    from pingr.timeutil import from_ms, parse_duration

    try:
        return from_ms(now_ms() - int(parse_duration(value) * 1000))
    except ValueError:
        pass
    return parse_timestamp(value)


class DockerCollector:
    """Keeps a cache of containers current and turns expected-running ones into targets.

    The engine is followed through its event stream (changes are seen within a second) with a
    full resync every `resync` seconds; when the engine goes away the collector says so
    (`available`, `error`), keeps the last known targets, and reconnects with backoff.
    All SDK calls run on worker threads.
    """

    name = "docker"

    def __init__(self, app: App, cfg: DockerConfig) -> None:
        self.app = app
        self.monitor = app.monitor
        self.cfg = cfg
        self.clock_ms = app.clock_ms
        self.routers: list[Any] = []
        self.available = False
        self.error: str | None = "not connected yet"
        self.containers: dict[str, ContainerInfo] = {}
        self.client: Any = None
        #: container name -> epoch ms of each restart seen within the crash-loop window
        self.restarts: dict[str, deque[int]] = {}
        self._restart_counts: dict[str, tuple[str, int]] = {}
        self._bad_since: dict[str, int] = {}
        self._fed: dict[str, tuple[bool, str | None]] = {}
        self.registered: set[str] = set()
        self._stream: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.reconnect_max = RECONNECT_MAX
        #: Set while connected; tests and callers can await a (re)connection.
        self.connected = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Adopt open container alerts, try a first connection (bounded), follow in background."""
        for alert in self.app.store.open_alerts():
            if alert.target_id.startswith("container:"):
                self._register(alert.target_id)  # keeps the alert open across our restart
        try:
            await asyncio.wait_for(self._connect(), 5.0)
        except Exception as exc:  # noqa: BLE001 - any failure only means "not yet"
            self._set_unavailable(exc)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="docker")

    async def stop(self) -> None:
        """Stop following the engine; close the stream and the client."""
        self._stopping = True
        self._close_stream()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.client.close)

    # ------------------------------------------------------------------ connection

    def _new_client(self) -> Any:
        import docker  # lazily: a Pi without Docker never pays for the import

        return docker.DockerClient(base_url=self.cfg.socket, timeout=15)

    async def _connect(self) -> None:
        if self.client is None:
            self.client = await asyncio.to_thread(self._new_client)
        await asyncio.to_thread(self.client.ping)
        await self._resync()
        if not self.available:
            log.info("Docker engine connected at %s (%d containers)", self.cfg.socket,
                     len(self.containers))
        self.available, self.error = True, None
        self.connected.set()

    def _set_unavailable(self, exc: BaseException | str) -> None:
        message = str(exc) or type(exc).__name__
        if self.available or self.error != message:
            (log.warning if self.available else log.info)("Docker unavailable: %s", message)
        self.available, self.error = False, message
        self.connected.clear()

    async def _run(self) -> None:
        delay = 0.5
        while not self._stopping:
            try:
                if not self.available:
                    await self._connect()
                delay = 0.5
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the engine going away is expected
                self._set_unavailable(exc)
            if self._stopping:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max)

    async def _follow(self) -> None:
        """Process events until the stream ends; resync periodically; tick the time rules."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue()
        stream = await asyncio.to_thread(
            self.client.api.events, decode=True, filters={"type": "container"})
        self._stream = stream

        def pump() -> None:
            end: BaseException | None = None
            try:
                for event in stream:
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except BaseException as exc:  # noqa: BLE001 - handed to the loop, not lost
                end = exc
            with contextlib.suppress(RuntimeError):  # the loop is already closed at shutdown
                loop.call_soon_threadsafe(queue.put_nowait, end)

        threading.Thread(target=pump, name="docker-events", daemon=True).start()
        # Events that happened between the resync and the stream opening would be lost.
        await self._resync()
        next_resync = loop.time() + self.cfg.resync
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), TICK)
                except TimeoutError:
                    item = False  # type: ignore[assignment]
                if item is None:
                    raise DockerUnavailable("the Docker engine closed the event stream")
                if isinstance(item, BaseException):
                    raise DockerUnavailable(f"event stream failed: {item}")
                if item:
                    await self._on_event(item)
                if loop.time() >= next_resync:
                    await self._resync()
                    next_resync = loop.time() + self.cfg.resync
                    self._evaluate_all(force=True)
                else:
                    self._evaluate_all()
        finally:
            self._close_stream()

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()

    # ------------------------------------------------------------------ cache

    def _inspect_all(self) -> dict[str, ContainerInfo]:
        out = {}
        for summary in self.client.api.containers(all=True):
            try:
                out[summary["Id"]] = ContainerInfo.from_inspect(
                    self.client.api.inspect_container(summary["Id"]))
            except Exception as exc:  # removed between list and inspect
                if getattr(exc, "status_code", None) != 404:
                    raise
        return out

    async def _resync(self) -> None:
        containers = await asyncio.to_thread(self._inspect_all)
        self.containers = containers
        for info in containers.values():
            self._note_restarts(info)
        self._evaluate_all(force=True)

    async def _on_event(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        cid = (event.get("Actor") or {}).get("ID") or event.get("id")
        if not cid or action.startswith("exec_"):
            return
        if action == "destroy":
            self.containers.pop(cid, None)
        else:
            try:
                attrs = await asyncio.to_thread(self.client.api.inspect_container, cid)
            except Exception as exc:
                if getattr(exc, "status_code", None) != 404:
                    raise
                self.containers.pop(cid, None)
            else:
                info = ContainerInfo.from_inspect(attrs)
                self.containers[cid] = info
                self._note_restarts(info)
        self._evaluate_all()

    def _note_restarts(self, info: ContainerInfo) -> None:
        """Count restarts by the engine's restart policy (RestartCount grows by one each)."""
        prev = self._restart_counts.get(info.name)
        self._restart_counts[info.name] = (info.id, info.restart_count)
        if prev is None or prev[0] != info.id or info.restart_count <= prev[1]:
            return  # first sight, a re-created container, or nothing new
        now = self.clock_ms()
        seen = self.restarts.setdefault(info.name, deque(maxlen=1000))
        seen.extend([now] * (info.restart_count - prev[1]))

    # ------------------------------------------------------------------ alert sources

    def by_name(self) -> dict[str, ContainerInfo]:
        return {c.name: c for c in self.containers.values()}

    def expected(self, info: ContainerInfo) -> bool:
        """Is this container expected to be running (watched)?"""
        label = info.labels.get(MONITOR_LABEL, "").strip().lower()
        if label in ("false", "0", "no"):
            return False
        return (self.cfg.monitor == "all" or label in ("true", "1", "yes")
                or info.name in self.cfg.containers)

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
            return False, (f"crash loop: restarted {len(seen)} times in "
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

    def _register(self, target_id: str) -> None:
        if target_id not in self.registered:
            self.monitor.set_target(make_target(target_id, "container", ["docker"]))
            self.registered.add(target_id)

    def _evaluate_all(self, force: bool = False) -> None:
        now = self.clock_ms()
        names = self.by_name()
        watched = {n for n, info in names.items() if self.expected(info)} | set(self.cfg.containers)
        wanted = {f"container:{n}" for n in watched}
        for gone in self.registered - wanted:
            # Removed (or no longer labelled): nothing is expected of it any more.
            self.registered.discard(gone)
            self._fed.pop(gone, None)
            self._bad_since.pop(gone.removeprefix("container:"), None)
            self.monitor.remove(gone)
        for name in sorted(watched):
            target_id = f"container:{name}"
            self._register(target_id)
            verdict = self.verdict(name, names.get(name), now)
            if force or self._fed.get(target_id) != verdict:
                self._fed[target_id] = verdict
                info = names.get(name)
                metrics = None if info is None else {"state": info.state, "health": info.health,
                                                     "restart_count": info.restart_count}
                feed(self.monitor, target_id, now, verdict[0], verdict[1], metrics)

    # ------------------------------------------------------------------ API helpers

    def counts(self) -> dict[str, int | None]:
        """Running / stopped / unhealthy, or nulls while the engine is unavailable."""
        if not self.available:
            return {"running": None, "stopped": None, "unhealthy": None}
        values = list(self.containers.values())
        return {
            "running": sum(c.state == "running" for c in values),
            "stopped": sum(c.state != "running" for c in values),
            "unhealthy": sum(c.health == "unhealthy" for c in values),
        }

    def check(self) -> None:
        """Raise DockerUnavailable unless the engine is connected."""
        if not self.available:
            raise DockerUnavailable(self.error or "not connected")

    def find(self, ref: str) -> ContainerInfo:
        """A cached container by full id, id prefix, or name."""
        self.check()
        if ref in self.containers:
            return self.containers[ref]
        for info in self.containers.values():
            if info.name == ref.lstrip("/"):
                return info
        matches = [c for c in self.containers.values() if len(ref) >= 4 and c.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        raise ContainerNotFound(ref)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import docker.errors

        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except docker.errors.NotFound as exc:
            raise ContainerNotFound(str(exc)) from None
        except docker.errors.APIError:
            raise
        except Exception as exc:  # connection refused, socket gone, timeouts
            raise DockerUnavailable(str(exc)) from exc

    async def stats(self, ref: str) -> dict[str, Any]:
        """One stats sample (the engine measures over about a second, on a worker thread)."""
        info = self.find(ref)
        if info.state != "running":
            return {"cpu_percent": None, "memory": None, "network": None}
        raw = await self._call(self.client.api.stats, info.id, stream=False)
        return summarize_stats(raw)

    async def logs(self, ref: str, lines: int, since: str | None, max_bytes: int) -> str:
        """The last `lines` lines (stdout and stderr), at most `max_bytes` of the newest."""
        info = self.find(ref)
        kwargs: dict[str, Any] = {"stdout": True, "stderr": True, "tail": lines}
        when = _since_param(since)
        if when is not None:
            kwargs["since"] = when
        data = await self._call(self.client.api.logs, info.id, **kwargs)
        data = data[-max_bytes:] if len(data) > max_bytes else data
        return data.decode("utf-8", errors="replace")

    async def action(self, ref: str, verb: str, timeout: int) -> ContainerInfo:
        """restart / stop / start, then the refreshed container."""
        info = self.find(ref)
        api = self.client.api
        if verb == "start":
            await self._call(api.start, info.id)
        elif verb == "stop":
            await self._call(api.stop, info.id, timeout=timeout)
        elif verb == "restart":
            await self._call(api.restart, info.id, timeout=timeout)
        else:
            raise ValueError(f"unknown action {verb!r}")
        log.info("container %s: %s requested through the API", info.name, verb)
        fresh = ContainerInfo.from_inspect(await self._call(api.inspect_container, info.id))
        self.containers[fresh.id] = fresh
        self._note_restarts(fresh)
        self._evaluate_all()
        return fresh


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


def docker_component(app: App) -> DockerCollector | None:
    """Factory for pingr.components: on when enabled, or with `auto` when the socket exists."""
    cfg = app.config.docker
    if cfg.enabled is False:
        return None
    if cfg.enabled == "auto":
        path = socket_path(cfg.socket)
        if path is not None and not os.path.exists(path):
            log.info("Docker socket %s not found: container monitoring is off (docker.enabled: "
                     "auto)", path)
            return None
    return DockerCollector(app, cfg)
