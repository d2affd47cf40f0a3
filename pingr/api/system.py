"""Host metrics, Raspberry Pi health and the runtime thresholds (GET/PUT /alerts/config)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException
from pydantic import BaseModel, Field

from pingr.api.auth import require
from pingr.api.deps import AUTH_ERRORS, errors, get_app
from pingr.collectors.system import HostSample
from pingr.timeutil import from_ms, rfc3339

AppDep = Annotated[Any, Depends(get_app)]

router = APIRouter(tags=["system"])


class CpuBrief(BaseModel):
    usage_percent: float | None
    cores: int


class MemoryBrief(BaseModel):
    total_bytes: int
    used_bytes: int
    usage_percent: float


class DiskBrief(BaseModel):
    mount: str
    total_bytes: int
    used_bytes: int
    usage_percent: float


class NetworkBrief(BaseModel):
    bytes_sent: int
    bytes_recv: int


class ContainerCounts(BaseModel):
    running: int | None
    stopped: int | None
    unhealthy: int | None


class SystemOut(BaseModel):
    """The machine at a glance (CPU from the background sampler, never measured per request)."""

    hostname: str
    uptime: int = Field(description="seconds since boot, a whole number (the Pingr agent's type)")
    cpu: CpuBrief
    memory: MemoryBrief
    disk: list[DiskBrief]
    network: NetworkBrief
    containers: ContainerCounts
    docker_available: bool
    temperature_c: float | None
    sampled_at: str


def host(app: Any) -> Any:
    """The host collector, once it has a sample."""
    if app.host.sampler.latest is None:
        raise HTTPException(503, "host metrics are not sampled yet")
    return app.host


def _latest(app: Any) -> HostSample:
    return host(app).sampler.latest


def _iso(ms: int) -> str:
    return rfc3339(from_ms(ms)) or ""


@router.get("/system", response_model=SystemOut, dependencies=[require("read")],
            responses=errors(503, *AUTH_ERRORS))
def system(app: AppDep) -> SystemOut:
    """Hostname, uptime, CPU, memory, disks, network totals and container counts."""
    comp = host(app)
    s: HostSample = comp.sampler.latest
    docker = app.docker
    counts = docker.counts() if docker is not None else \
        {"running": None, "stopped": None, "unhealthy": None}
    nics = [n for name, n in s.nics.items() if name != "lo"]
    return SystemOut(
        hostname=comp.sampler.hostname,
        uptime=int(comp.sampler.uptime()),
        cpu=CpuBrief(usage_percent=s.cpu_percent, cores=s.cores),
        memory=MemoryBrief(total_bytes=s.memory["total_bytes"], used_bytes=s.memory["used_bytes"],
                           usage_percent=s.memory["usage_percent"]),
        disk=[DiskBrief(mount=d.mount, total_bytes=d.total_bytes, used_bytes=d.used_bytes,
                        usage_percent=d.usage_percent) for d in s.disks],
        network=NetworkBrief(bytes_sent=sum(n.bytes_sent for n in nics),
                             bytes_recv=sum(n.bytes_recv for n in nics)),
        containers=ContainerCounts(**counts),
        docker_available=bool(docker is not None and docker.available),
        temperature_c=s.temperature_c,
        sampled_at=_iso(s.ts_ms),
    )


@router.get("/system/cpu", dependencies=[require("read")], responses=errors(503, *AUTH_ERRORS))
def system_cpu(app: AppDep) -> dict[str, Any]:
    """Aggregate and per-core usage, load average (1/5/15 min) and frequency (MHz)."""
    s = _latest(app)
    load = None if s.load is None else dict(zip(("1m", "5m", "15m"), s.load, strict=True))
    return {"usage_percent": s.cpu_percent, "per_core_percent": s.per_cpu_percent,
            "cores": s.cores, "physical_cores": s.physical_cores, "load_average": load,
            "frequency_mhz": s.freq_mhz, "sampled_at": _iso(s.ts_ms)}


@router.get("/system/memory", dependencies=[require("read")],
            responses=errors(503, *AUTH_ERRORS))
def system_memory(app: AppDep) -> dict[str, Any]:
    """RAM (used = total - available) and swap."""
    s = _latest(app)
    return {"memory": s.memory, "swap": s.swap, "sampled_at": _iso(s.ts_ms)}


@router.get("/system/disk", dependencies=[require("read")], responses=errors(503, *AUTH_ERRORS))
def system_disk(app: AppDep) -> dict[str, Any]:
    """Every real mount (pseudo filesystems such as proc, tmpfs and squashfs excluded)."""
    s = _latest(app)
    return {"disks": [asdict(d) for d in s.disks], "sampled_at": _iso(s.ts_ms)}


@router.get("/system/network", dependencies=[require("read")],
            responses=errors(503, *AUTH_ERRORS))
def system_network(app: AppDep) -> dict[str, Any]:
    """Per-interface counters and bytes/s since the previous sample."""
    s = _latest(app)
    return {"interfaces": {name: asdict(n) for name, n in sorted(s.nics.items())},
            "sampled_at": _iso(s.ts_ms)}


@router.get("/system/pi", dependencies=[require("read")], responses=errors(503, *AUTH_ERRORS))
def system_pi(app: AppDep) -> dict[str, Any]:
    """SoC temperature, throttling flags, read-only root; `{"available": false}` off a Pi."""
    return _latest(app).pi.as_dict()


@router.get("/alerts/config", tags=["alerts"], dependencies=[require("admin")],
            responses=errors(*AUTH_ERRORS))
def get_alerts_config(app: AppDep) -> dict[str, Any]:
    """The host thresholds in force, and whether they come from the config file or a PUT."""
    return app.host.describe()


@router.put("/alerts/config", tags=["alerts"], dependencies=[require("admin")],
            responses=errors(400, *AUTH_ERRORS))
async def put_alerts_config(
    body: Annotated[dict[str, Any], Body(examples=[
        {"thresholds": {"cpu": 95, "disk": {"above": 80, "for": "5m"}, "memory": None}}])],
    app: AppDep,
) -> dict[str, Any]:
    """Change some thresholds at run time (others keep their value); kept across restarts.

    Body: `{"thresholds": {...}}` with any of cpu, memory, disk, temperature (a number, a
    mapping `{above, for}`, or null to switch off), undervoltage (bool or `{enabled, for}`),
    mounts, interval.
    """
    unknown = sorted(set(body) - {"thresholds"})
    if unknown:
        raise HTTPException(400, f"{unknown[0]}: unknown field (expected 'thresholds')")
    changes = body.get("thresholds")
    if not isinstance(changes, dict) or not changes:
        raise HTTPException(400, "thresholds: expected a non-empty object of settings")
    try:
        return await app.update_thresholds(changes)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
