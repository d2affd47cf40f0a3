"""Live events: GET /api/v1/events as Server-Sent Events."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse

from pingr.api.auth import require
from pingr.api.deps import AUTH_ERRORS, errors, get_app
from pingr.events import EVENT_TYPES

router = APIRouter(tags=["events"])


@router.get("/events", dependencies=[require("read")], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`event:` type, `id:` sequence and `data:` JSON per "
                                            "event; `: keep-alive` comments in between"},
                       **errors(400, 503, *AUTH_ERRORS)})
async def events(types: str | None = Query(None, description="comma-separated event types"),
                 app=Depends(get_app)) -> StreamingResponse:
    """Server-Sent Events: target.check_result, target.down, target.up, alert.acknowledged,
    heartbeat.pinged, heartbeat.missed, … A client that reads too slowly is disconnected
    (it reconnects) rather than buffered without bound."""
    wanted = None
    if types:
        wanted = frozenset(t.strip() for t in types.split(",") if t.strip())
        unknown = sorted(wanted - set(EVENT_TYPES))
        if unknown:
            raise HTTPException(400, f"unknown event type {unknown[0]!r}: use "
                                     + ", ".join(EVENT_TYPES))
    broker = app.events
    sub = broker.subscribe(wanted)
    if sub is None:
        raise HTTPException(503, f"too many event stream clients (max {broker.max_clients})")

    def stopping() -> bool:
        return app.stopping

    return StreamingResponse(broker.stream(sub, stopping), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
