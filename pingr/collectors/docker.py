"""Docker containers via the docker SDK: a cache kept current by the event stream, resyncs
through the scheduler, and the containers expected to run as targets of the alert engine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from pingr.collectors.container_rules import CRASH_LOOP, ContainerRules
from pingr.collectors.containers import (
    ContainerInfo,
    ContainerNotFound,
    DockerUnavailable,
    logs_since,
    socket_path,
    summarize_stats,
)
from pingr.collectors.source import Findings, make_target
from pingr.collectors.timeline import Transition, transitions
from pingr.models import Result
from pingr.settings import DockerConfig

log = logging.getLogger(__name__)

#: Longest pause between reconnection attempts while the engine is away.
RECONNECT_MAX = 5.0


class DockerCollector:
    """Keeps a cache of containers current and turns expected-running ones into targets.

    The engine is followed through its event stream (changes are seen within a second); a
    full resync runs every `resync` seconds as a scheduler job. When the engine goes away the
    collector says so (`available`, `error`), keeps the last known targets, and reconnects
    with backoff. Findings go to `submit` (the App feeds them to the monitor). All SDK calls
    run on worker threads.
    """

    def __init__(self, cfg: DockerConfig, clock_ms: Callable[[], int],
                 submit: Callable[[Findings], None],
                 observe: Callable[[list[Transition]], None] | None = None) -> None:
        self.cfg = cfg
        self.clock_ms = clock_ms
        self.submit = submit
        #: Told every change of state or health seen, and each restart loop as it begins.
        self.observe = observe
        #: Changes are told from the first full read on (before it nothing is known).
        self._baseline = False
        self._looping: set[str] = set()
        self.rules = ContainerRules(cfg)
        self.available = False
        self.error: str | None = "not connected yet"
        self.containers: dict[str, ContainerInfo] = {}
        self.client: Any = None
        self._fed: dict[str, tuple[bool, str | None]] = {}
        self.registered: set[str] = set()
        self._stream: Any = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lock: asyncio.Lock | None = None
        self._stopping = False
        self.reconnect_max = RECONNECT_MAX
        #: Set while connected; tests and callers can await a (re)connection.
        self.connected = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, open_alert_targets: list[str]) -> None:
        """Keep the targets of open container alerts (so they stay open across our restart),
        try a first connection (bounded), then follow the engine in the background."""
        self._lock = asyncio.Lock()
        kept = Findings("docker", partial=True)
        for target_id in open_alert_targets:
            if target_id.startswith("container:"):
                self.registered.add(target_id)
                kept.add(make_target(target_id, "container", ["docker"]))
        if kept.targets:
            self.submit(kept)
        try:
            await asyncio.wait_for(self._connect(), 5.0)
        except Exception as exc:  # noqa: BLE001 - any failure only means "not yet"
            self._set_unavailable(exc)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="docker")

    async def stop(self) -> None:
        """Stop following the engine; close the stream and the client."""
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
        self._close_stream()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.client.close)

    async def resync(self) -> None:
        """The scheduler's periodic job: re-read every container (catches missed events)."""
        if self.available:
            try:
                await self._resync(force=True)
            except Exception as exc:  # noqa: BLE001 - the engine went away: the follower sees it
                log.debug("Docker resync failed: %s", exc)

    # ------------------------------------------------------------------ connection

    def _new_client(self) -> Any:
        import docker  # lazily: a Pi without Docker never pays for the import

        return docker.DockerClient(base_url=self.cfg.socket, timeout=15)

    async def _connect(self) -> None:
        if self.client is None:
            self.client = await asyncio.to_thread(self._new_client)
        await asyncio.to_thread(self.client.ping)
        await self._resync(force=True)
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
        """Process events until the stream ends."""
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
        await self._resync(force=True)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    raise DockerUnavailable("the Docker engine closed the event stream")
                if isinstance(item, BaseException):
                    raise DockerUnavailable(f"event stream failed: {item}")
                await self._on_event(item)
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

    async def _resync(self, force: bool = False) -> None:
        assert self._lock is not None
        async with self._lock:
            containers = await asyncio.to_thread(self._inspect_all)
            before, self.containers = self.containers, containers
            found = self._changes(before, containers)
            self._baseline = True
            now = self.clock_ms()
            for info in containers.values():
                self.rules.note_restarts(info, now)
            self._evaluate_all(force)
            self._tell(found)

    async def _on_event(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        cid = (event.get("Actor") or {}).get("ID") or event.get("id")
        if not cid or action.startswith("exec_"):
            return
        assert self._lock is not None
        async with self._lock:
            before = {cid: self.containers[cid]} if cid in self.containers else {}
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
                    self.rules.note_restarts(info, self.clock_ms())
            after = {cid: self.containers[cid]} if cid in self.containers else {}
            found = self._changes(before, after)
            self._evaluate_all()
            self._tell(found)

    def _changes(self, before: dict[str, ContainerInfo], after: dict[str, ContainerInfo]
                 ) -> list[Transition]:
        """The changes between two views of the same containers (none before the first)."""
        if not self._baseline:
            return []
        now = self.clock_ms()
        return [t for cid in sorted(set(before) | set(after))
                for t in transitions(before.get(cid), after.get(cid), now)]

    def _tell(self, found: list[Transition]) -> None:
        """Changes are told after the verdicts, so a new container's target exists already."""
        if found and self.observe is not None:
            self.observe(found)

    # ------------------------------------------------------------------ findings

    def by_name(self) -> dict[str, ContainerInfo]:
        return {c.name: c for c in self.containers.values()}

    def expected(self, info: ContainerInfo) -> bool:
        """Is this container expected to be running (watched)?"""
        return self.rules.expected(info)

    def _evaluate_all(self, force: bool = False) -> None:
        """Verdicts of every watched container; what changed (or all, with `force`) is
        submitted. Arms a timer for the next moment a verdict can change by itself."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self.clock_ms()
        names = self.by_name()
        watched = {n for n, info in names.items() if self.expected(info)} | set(self.cfg.containers)
        wanted = {f"container:{n}" for n in watched}
        findings = Findings("docker")
        loops: list[Transition] = []
        for gone in self.registered - wanted:
            # Removed (or no longer labelled): nothing is expected of it any more.
            self._fed.pop(gone, None)
            self.rules.forget(gone.removeprefix("container:"))
        self.registered = set(wanted)
        for name in sorted(watched):
            target_id = f"container:{name}"
            info = names.get(name)
            verdict = self.rules.verdict(name, info, now)
            looping = verdict[1] is not None and verdict[1].startswith(CRASH_LOOP)
            if looping and name not in self._looping:
                loops.append(Transition(name, info.id if info else "", now, "restart_loop",
                                        None, "detected", detail=verdict[1]))
            (self._looping.add if looping else self._looping.discard)(name)
            result = None
            if force or self._fed.get(target_id) != verdict:
                self._fed[target_id] = verdict
                metrics = None if info is None else {"state": info.state, "health": info.health,
                                                     "restart_count": info.restart_count}
                result = Result(target_id, now, verdict[0], error=verdict[1], metrics=metrics)
            findings.add(make_target(target_id, "container", ["docker"]), result)
        self.submit(findings)
        self._tell(loops)
        deadline = self.rules.next_deadline()
        if deadline is not None and not self._stopping:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, (deadline - now) / 1000) + 0.01,
                                          self._evaluate_all)

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
        when = logs_since(since)
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
        before = {fresh.id: self.containers[fresh.id]} if fresh.id in self.containers else {}
        self.containers[fresh.id] = fresh
        found = self._changes(before, {fresh.id: fresh})
        self.rules.note_restarts(fresh, self.clock_ms())
        self._evaluate_all()
        self._tell(found)
        return fresh


def docker_wanted(cfg: DockerConfig) -> bool:
    """On when enabled, or with `auto` when the socket exists."""
    if cfg.enabled is False:
        return False
    if cfg.enabled == "auto":
        path = socket_path(cfg.socket)
        if path is not None and not os.path.exists(path):
            log.info("Docker socket %s not found: container monitoring is off (docker.enabled: "
                     "auto)", path)
            return False
    return True
