"""The fleet: every node (online, its failing targets), shared checks, message counters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from pingr.api.auth import require
from pingr.api.deps import AUTH_ERRORS, errors, get_app

router = APIRouter(tags=["fleet"])


class FleetTargetOut(BaseModel):
    name: str
    status: str
    failures: int


class FleetNodeOut(BaseModel):
    node: str
    name: str
    self: bool = Field(description="this appliance")
    online: bool
    status: str = Field(description="online, offline (its last will) or unknown")
    last_seen: str | None = None
    version: str | None = None
    healthy: bool | None = None
    stale: bool | None = None
    uplink: str | None = Field(None, description="ok or down (its own \"is it me?\" verdict)")
    uplink_reason: str | None = None
    targets: int | None = None
    failing: list[FleetTargetOut]


class FleetCheckOut(BaseModel):
    check: str
    target: str
    down: bool | None = Field(description="the fleet's verdict (None: nobody can vote)")
    quorum: int
    voters: list[str]
    down_from: list[str]


class FleetMessagesOut(BaseModel):
    received: int
    accepted: int
    dropped: dict[str, int]


class FleetOut(BaseModel):
    enabled: bool
    node: str | None = None
    name: str | None = None
    prefix: str | None = None
    broker: str | None = None
    connected: bool | None = None
    linked: bool | None = Field(None, description="our own state comes back from the broker")
    interval_seconds: float | None = None
    offline_after_seconds: float | None = None
    quorum: int | None = None
    mirror: bool | None = None
    nodes: list[FleetNodeOut] = []
    checks: list[FleetCheckOut] = []
    messages: FleetMessagesOut | None = None


# async: the fleet's picture lives on the event loop; reading it there needs no locks.
@router.get("/fleet", response_model=FleetOut, dependencies=[require("read")],
            responses=errors(*AUTH_ERRORS))
async def fleet(app: Any = Depends(get_app)) -> Any:
    """The fleet as this appliance sees it (`{"enabled": false}` without fleet mode)."""
    if app.fleet is None:
        return FleetOut(enabled=False)
    return app.fleet.describe()
