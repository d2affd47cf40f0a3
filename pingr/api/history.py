"""What pingr remembers: host and container metrics over time, the top consumers, container
state transitions and live logs, heartbeat job executions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse

from pingr.api.auth import require
from pingr.api.containers import collector
from pingr.api.deps import AUTH_ERRORS, errors, get_app
from pingr.collectors.containers import ContainerNotFound, DockerUnavailable
from pingr.collectors.docker import DockerCollector
from pingr.resources import HOST_METRICS, host_key
from pingr.storage.rollup import HOUR_MS, MINUTE_MS
from pingr.timeutil import format_duration, from_ms, now_ms, parse_duration, rfc3339

AppDep = Annotated[Any, Depends(get_app)]

router = APIRouter(tags=["history"])

#: Per-minute points up to this range (and within storage.minute_retention), hourly beyond.
MINUTE_RANGE_S = 6 * 3600
RANGE = Query("24h", description="how far back: a duration such as 1h, 24h, 7d, 30d")


def _iso(ms: int | None) -> str | None:
    return rfc3339(from_ms(ms)) if ms is not None else None


def _window(app: Any, value: str) -> tuple[int, int, str, str]:
    """(since, now, resolution, range as written back) of a `range` parameter."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise HTTPException(400, f"range: {exc}") from None
    longest = app.store.hour_retention_ms / 1000
    if not 60 <= seconds <= longest:
        raise HTTPException(400, f"range must be between 1m and {format_duration(longest)} "
                                 f"(storage.hour_retention), got {value}")
    now = now_ms()
    per_minute = seconds <= MINUTE_RANGE_S and seconds * 1000 <= app.store.minute_retention_ms
    size = MINUTE_MS if per_minute else HOUR_MS
    since = now - int(seconds * 1000)
    return since - since % size, now, "minute" if per_minute else "hour", format_duration(seconds)


@router.get("/system/history", tags=["system"], dependencies=[require("read")],
            responses=errors(400, *AUTH_ERRORS))
def system_history(
    app: AppDep,
    metric: Annotated[str, Query(description="cpu, memory, disk, net_rx, net_tx, temperature "
                                             "or load")] = "cpu",
    range: str = RANGE,  # noqa: A002 - the name Maintenant and the issue give it
    mount: Annotated[str, Query(description="for metric=disk: the mount point")] = "/",
) -> dict[str, Any]:
    """A host metric over time, oldest first: per minute up to 6 hours, per hour beyond.

    Each point: `ts`, `samples` (readings in the bucket), `avg`, `min`, `max` in `unit`
    (% for cpu, memory and disk; bytes/s for net_rx and net_tx summed over every interface
    but lo; °C; load is the 1-minute load average). Sampled every alerts.thresholds.interval;
    kept like probe history (storage.minute_retention, hour_retention, max_size)."""
    spec = HOST_METRICS.get(metric)
    if spec is None:
        raise HTTPException(400, f"unknown metric {metric!r}: use {', '.join(HOST_METRICS)}")
    if metric == "disk" and mount not in app.resources.disks():
        known = ", ".join(app.resources.disks()) or "none yet"
        raise HTTPException(400, f"no disk history for mount {mount!r} (mounts: {known})")
    since, now, resolution, shown = _window(app, range)
    points = app.resources.series(host_key(metric, mount), since, now, resolution)
    out: dict[str, Any] = {"metric": metric, "unit": spec.unit, "range": shown,
                           "resolution": resolution,
                           "points": [{**p, "ts": _iso(p["ts"])} for p in points]}
    if metric == "disk":
        out["mount"] = mount
    return out


def _container_name(app: Any, ref: str) -> tuple[str, str | None]:
    """(name, id) of a container by id, id prefix or name; a removed container's history is
    still found by its name."""
    docker: DockerCollector | None = app.docker
    if docker is not None and docker.available:
        try:
            info = docker.find(ref)
            return info.name, info.id
        except Exception:  # noqa: BLE001 - not there (any more): its history may be
            pass
    name = ref.lstrip("/")
    if name in app.resources.containers():
        return name, None
    if docker is None:
        raise HTTPException(503, "Docker monitoring is off (docker.enabled is false, or 'auto' "
                                 f"found no socket at {app.config.docker.socket})")
    raise HTTPException(404, f"no container {ref!r}")


@router.get("/containers/{ref}/resources/history", tags=["containers"],
            dependencies=[require("read")], responses=errors(400, 404, 503, *AUTH_ERRORS))
def container_resources_history(ref: str, app: AppDep, range: str = RANGE  # noqa: A002
                                ) -> dict[str, Any]:
    """A container's CPU (%), memory (bytes, page cache excluded) and network (bytes/s) over
    time, oldest first: average and maximum per minute up to 6 hours, per hour beyond.
    Sampled every docker.resync while it runs; kept by name, so a re-created container
    (compose up) continues its history."""
    name, cid = _container_name(app, ref)
    since, now, resolution, shown = _window(app, range)
    points = app.resources.container_history(name, since, now, resolution)
    return {"container": name, "id": cid, "range": shown, "resolution": resolution,
            "points": [{**p, "ts": _iso(p["ts"])} for p in points]}


@router.get("/resources/top", tags=["containers"], dependencies=[require("read")],
            responses=errors(400, 503, *AUTH_ERRORS))
def resources_top(
    app: AppDep,
    d: Annotated[DockerCollector, Depends(collector)],
    sort: Literal["cpu", "memory", "network"] = "cpu",
    limit: Annotated[int, Query(description="1 to 100; larger values are clamped")] = 10,
) -> list[dict[str, Any]]:
    """The running containers using the most CPU, memory or network (rx + tx) in the newest
    sample (taken every docker.resync; none before the first)."""
    if limit < 1:
        raise HTTPException(400, f"limit must be at least 1, got {limit}")
    sampler = app.container_stats
    usages = list(sampler.latest.values()) if sampler is not None else []

    def weight(u: Any) -> float:
        if sort == "cpu":
            value = u.cpu_percent
        elif sort == "memory":
            value = u.memory_bytes
        else:
            parts = [v for v in (u.net_rx_bytes_per_s, u.net_tx_bytes_per_s) if v is not None]
            value = sum(parts) if parts else None
        return -1.0 if value is None else float(value)

    usages.sort(key=lambda u: (-weight(u), u.name))
    items = [{**u.as_dict(), "sampled_at": _iso(u.ts_ms)} for u in usages[:min(limit, 100)]]
    for item in items:
        item.pop("ts_ms")
    return items


@router.get("/heartbeats/{target_id}/executions", tags=["heartbeats"],
            dependencies=[require("read")], responses=errors(400, 404, *AUTH_ERRORS))
async def executions(
    target_id: str, app: AppDep,
    limit: Annotated[int, Query(description="1 to 1000; larger values are clamped")] = 100,
) -> list[dict[str, Any]]:
    """A heartbeat target's job runs, newest first: `/ping/{token}/start` opens one (`state`
    running), a success, failure or exit code closes it (`ended_at`, `duration_ms`,
    `exit_code`, `message`); a run that outlives the target's grace is a failure, "started
    but did not finish". A ping without a start is a run of its own with no `started_at`.
    The newest 1,000 runs per target are kept."""
    target = app.targets.get(target_id)
    if target is None or target.spec.type != "heartbeat":
        raise HTTPException(404, f"no heartbeat target with id {target_id}")
    if limit < 1:
        raise HTTPException(400, f"limit must be at least 1, got {limit}")
    rows = await app.heartbeats.executions.list(target.id, min(limit, 1000))
    return [{"id": r.id, "started_at": _iso(r.started_at), "ended_at": _iso(r.ended_at),
             "duration_ms": r.duration_ms, "state": r.state, "exit_code": r.exit_code,
             "message": r.message} for r in rows]


@router.get("/containers/{ref}/transitions", tags=["containers"],
            dependencies=[require("read")], responses=errors(400, 404, 503, *AUTH_ERRORS))
async def container_transitions(
    ref: str, app: AppDep,
    limit: Annotated[int, Query(description="1 to 1000; larger values are clamped")] = 100,
) -> list[dict[str, Any]]:
    """A container's timeline, newest first: each change of `state` (created, running,
    restarting, exited with its exit code, removed, …) and `health` (starting, healthy,
    unhealthy with the check's output) as the collector saw it, and `restart_loop` when the
    crash-loop rule (docker.crash_loop) fired. Kept by name (the newest 1,000), so a removed
    or re-created container's history stays."""
    if limit < 1:
        raise HTTPException(400, f"limit must be at least 1, got {limit}")
    docker: DockerCollector | None = app.docker
    if docker is None:
        collector(app)  # 503 with the reason
    assert docker is not None
    name, known = ref.lstrip("/"), False
    if docker.available:
        try:
            name, known = docker.find(ref).name, True
        except ContainerNotFound:
            pass
    items = await app.timeline.list(name, min(limit, 1000))
    if not items and not known:
        if not docker.available:
            raise HTTPException(503, f"Docker unavailable: {docker.error}")
        raise HTTPException(404, f"no container {ref!r}")
    return [{**item, "ts": _iso(item["ts"])} for item in items]


#: Longest log line sent as one event (a container printing megabytes without a newline must
#: not hold that much in memory per client).
MAX_LINE = 16 * 1024
#: Log chunks read ahead of a slow client before the engine's stream is made to wait.
LOG_QUEUE = 256


@router.get("/containers/{ref}/logs/stream", tags=["containers"],
            dependencies=[require("read")], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`event: log` with `data: {\"line\": …}` per line; "
                                            "`event: end` when the container stops"},
                       **errors(400, 404, 409, 503, *AUTH_ERRORS)})
async def container_logs_stream(
    ref: str, app: AppDep, d: Annotated[DockerCollector, Depends(collector)],
    tail: Annotated[int, Query(description="lines from before the stream begins, 0 to 1000")]
    = 10,
) -> StreamingResponse:
    """A container's log (stdout and stderr) live, as Server-Sent Events. The stream ends by
    itself (`event: end`) when the container stops, and is closed at once when the client
    leaves or pingr stops."""
    if not 0 <= tail <= 1000:
        raise HTTPException(400, f"tail must be between 0 and 1000, got {tail}")
    try:
        info = d.find(ref)
    except ContainerNotFound:
        raise HTTPException(404, f"no container {ref!r}") from None
    except DockerUnavailable as exc:
        raise HTTPException(503, f"Docker unavailable: {exc}") from None
    if info.state != "running":
        raise HTTPException(409, f"container {info.name} is not running ({info.state})")
    try:
        stream = await asyncio.to_thread(d.client.api.logs, info.id, stdout=True, stderr=True,
                                         stream=True, follow=True, tail=tail)
    except Exception as exc:  # removed or stopped meanwhile, engine gone
        raise HTTPException(503, f"Docker unavailable: {exc}") from None
    return StreamingResponse(_log_events(stream, info.name, lambda: app.stopping),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _log_events(stream: Any, name: str, stopping: Callable[[], bool]
                      ) -> AsyncIterator[bytes]:
    """Lines of the engine's log stream as SSE; the engine's stream is read on a thread
    that waits while the client is slow (bounded), and is closed when this generator ends."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(LOG_QUEUE)
    closed = threading.Event()

    def pump() -> None:
        end: BaseException | None = None
        try:
            for chunk in stream:
                if closed.is_set():
                    return
                asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, not lost
            end = exc
        if not closed.is_set():
            with contextlib.suppress(RuntimeError):  # the loop is already gone at shutdown
                asyncio.run_coroutine_threadsafe(queue.put(end), loop)

    threading.Thread(target=pump, name=f"docker-logs-{name}", daemon=True).start()
    partial = b""
    try:
        yield b"retry: 3000\n: connected\n\n"
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), 0.5)
            except TimeoutError:
                if stopping():
                    yield _sse("end", {"reason": "pingr is stopping"})
                    return
                continue
            if item is None or isinstance(item, BaseException):
                if partial:
                    yield _sse("log", {"line": partial.decode("utf-8", "replace")})
                reason = "the container stopped" if item is None else f"stream failed: {item}"
                yield _sse("end", {"reason": reason})
                return
            partial += item
            *lines, partial = partial.split(b"\n")
            if len(partial) > MAX_LINE:
                lines.append(partial)
                partial = b""
            for line in lines:
                yield _sse("log", {"line": line[:MAX_LINE].decode("utf-8", "replace")})
    finally:
        closed.set()
        with contextlib.suppress(Exception):
            stream.close()  # unblocks the pump thread's read
        while not queue.empty():  # and a put it may be waiting on
            queue.get_nowait()
