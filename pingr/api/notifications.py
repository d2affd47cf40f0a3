"""The delivery log and the test notification of the agent contract."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, Query

from pingr.api.auth import require
from pingr.api.channels import DeliveryOut, notifier
from pingr.api.deps import AUTH_ERRORS, errors, get_app, parse_limit

router = APIRouter(tags=["notifications"])

State = Literal["queued", "retrying", "sent", "failed", "dropped", "suppressed"]


@router.get("/notifications", response_model=list[DeliveryOut], dependencies=[require("read")],
            responses=errors(400, *AUTH_ERRORS))
def list_deliveries(state: State | None = Query(None), channel_id: int | None = Query(None),
                    limit: int = Query(100, description="1 to 1000; larger values are clamped"),
                    app=Depends(get_app)) -> list[DeliveryOut]:
    """Recent deliveries, newest first, with their state (queued and retrying ones are the
    persistent retry queue)."""
    rows = notifier(app).log_rows(parse_limit(limit), state, channel_id)
    return [DeliveryOut.of(r.model_dump()) for r in rows]


@router.post("/alerts/test", response_model=list[DeliveryOut], dependencies=[require("operate")],
             responses=errors(*AUTH_ERRORS))
async def test_all(app=Depends(get_app)) -> list[DeliveryOut]:
    """Send a test notification to every enabled channel at once; one delivery per channel."""
    n = notifier(app)
    chans = [c for c in n.channels.values() if c.enabled]
    rows = await asyncio.gather(*(n.test(c) for c in chans))
    return [DeliveryOut.of(r) for r in rows]
