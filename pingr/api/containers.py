"""Docker containers: list, inspect with one stats sample, logs, and restart/stop/start."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from pingr.api.auth import require
from pingr.api.deps import AUTH_ERRORS, errors, get_app
from pingr.collectors.containers import ContainerInfo, ContainerNotFound, DockerUnavailable
from pingr.collectors.docker import DockerCollector
from pingr.timeutil import from_ms, rfc3339

AppDep = Annotated[Any, Depends(get_app)]

router = APIRouter(tags=["containers"])

#: Logs are bounded twice: by lines and by bytes (a chatty container must not fill RAM).
MAX_LOG_LINES = 5000
MAX_LOG_BYTES = 1 << 20


class ContainerOut(BaseModel):
    id: str
    short_id: str
    name: str
    image: str
    state: str
    health: str | None
    status: str
    created: str | None
    started_at: str | None
    finished_at: str | None
    exit_code: int | None
    restart_count: int
    restart_policy: str | None
    compose_project: str | None
    compose_service: str | None
    monitored: bool
    labels: dict[str, str]


class ContainerDetailOut(ContainerOut):
    cpu_percent: float | None
    memory: dict[str, Any] | None
    network: dict[str, Any] | None
    health_output: str | None


def _iso(ms: int | None) -> str | None:
    return rfc3339(from_ms(ms)) if ms is not None else None


def _out(d: DockerCollector, c: ContainerInfo) -> dict[str, Any]:
    return {
        "id": c.id, "short_id": c.short_id, "name": c.name, "image": c.image, "state": c.state,
        "health": c.health, "status": c.status_text(d.clock_ms()), "created": _iso(c.created),
        "started_at": _iso(c.started_at), "finished_at": _iso(c.finished_at),
        "exit_code": c.exit_code, "restart_count": c.restart_count,
        "restart_policy": c.restart_policy, "compose_project": c.compose_project,
        "compose_service": c.compose_service, "monitored": d.expected(c), "labels": c.labels,
    }


def collector(app: AppDep) -> DockerCollector:
    """The Docker collector, or 503 with the reason it is not there."""
    comp = app.docker
    if comp is None:
        raise HTTPException(503, "Docker monitoring is off (docker.enabled is false, or 'auto' "
                                 f"found no socket at {app.config.docker.socket})")
    if not comp.available:
        raise HTTPException(503, f"Docker unavailable: {comp.error}")
    return comp


CollectorDep = Annotated[DockerCollector, Depends(collector)]


def _find(d: DockerCollector, ref: str) -> ContainerInfo:
    try:
        return d.find(ref)
    except ContainerNotFound:
        raise HTTPException(404, f"no container {ref!r}") from None
    except DockerUnavailable as exc:
        raise HTTPException(503, f"Docker unavailable: {exc}") from None


@router.get("/containers", response_model=list[ContainerOut], dependencies=[require("read")],
            responses=errors(503, *AUTH_ERRORS))
def list_containers(d: CollectorDep) -> list[dict[str, Any]]:
    """Every container (running or not), from the collector's cache: no engine call per request."""
    return [_out(d, c) for c in sorted(d.containers.values(), key=lambda c: c.name)]


@router.get("/containers/{ref}", response_model=ContainerDetailOut,
            dependencies=[require("read")], responses=errors(404, 503, *AUTH_ERRORS))
async def get_container(ref: str, d: CollectorDep) -> dict[str, Any]:
    """One container (by id, id prefix or name) with CPU %, memory and network of one sample."""
    info = _find(d, ref)
    try:
        stats = await d.stats(info.id)
    except ContainerNotFound:
        raise HTTPException(404, f"no container {ref!r}") from None
    except DockerUnavailable as exc:
        raise HTTPException(503, f"Docker unavailable: {exc}") from None
    return {**_out(d, d.containers.get(info.id, info)), **stats,
            "health_output": info.health_output}


@router.get("/containers/{ref}/logs", response_class=PlainTextResponse,
            dependencies=[require("read")], responses=errors(400, 404, 503, *AUTH_ERRORS))
async def container_logs(
    ref: str,
    d: CollectorDep,
    lines: Annotated[int, Query(description=f"1 to {MAX_LOG_LINES}; the newest lines")] = 100,
    since: Annotated[str | None, Query(description="RFC 3339 time, epoch seconds, or a "
                                                   "duration back from now such as 10m")] = None,
) -> PlainTextResponse:
    """The newest log lines (stdout and stderr) as text, at most 1 MiB."""
    if not 1 <= lines <= MAX_LOG_LINES:
        raise HTTPException(400, f"lines must be between 1 and {MAX_LOG_LINES}, got {lines}")
    info = _find(d, ref)
    try:
        text = await d.logs(info.id, lines, since, MAX_LOG_BYTES)
    except ValueError as exc:
        raise HTTPException(400, f"since: {exc}") from None
    except ContainerNotFound:
        raise HTTPException(404, f"no container {ref!r}") from None
    except DockerUnavailable as exc:
        raise HTTPException(503, f"Docker unavailable: {exc}") from None
    return PlainTextResponse(text)


@router.post("/containers/{ref}/{action}", response_model=ContainerOut,
             dependencies=[require("admin")], responses=errors(400, 404, 409, 503, *AUTH_ERRORS))
async def container_action(
    ref: str,
    action: Literal["restart", "stop", "start"],
    d: CollectorDep,
    timeout: Annotated[int, Query(ge=0, le=300, description="seconds before killing")] = 10,
) -> dict[str, Any]:
    """Restart, stop or start a container (admin)."""
    import docker.errors  # the SDK is loaded only where Docker is used

    info = _find(d, ref)
    try:
        fresh = await d.action(info.id, action, timeout)
    except ContainerNotFound:
        raise HTTPException(404, f"no container {ref!r}") from None
    except DockerUnavailable as exc:
        raise HTTPException(503, f"Docker unavailable: {exc}") from None
    except docker.errors.APIError as exc:
        raise HTTPException(409, f"{action} failed: {exc.explanation or exc}") from None
    return _out(d, fresh)
