"""Alerts: history, acknowledgement, and the /alert-status polling contract."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from pingr.alertstatus import alert_status_response
from pingr.api.auth import KeyInfo, require
from pingr.api.deps import AUTH_ERRORS, errors, get_app, parse_limit
from pingr.api.schemas import AckOut, AlertOut, AlertStatusOut

router = APIRouter(tags=["alerts"])


@router.get("/alert-status", response_model=AlertStatusOut, dependencies=[require("read")],
            responses={304: {"description": "The situation is the one the ETag given names "
                                            "(a weak validator: counters may have moved)"},
                       **errors(*AUTH_ERRORS)})
def alert_status(request: Request, app=Depends(get_app)) -> Response:
    """Is anything down right now? Served from memory; supports ETag / If-None-Match.

    The server answers this path on a fast path with the same key checks (pingr/api/front.py);
    this route documents it and serves it if the fast path is off.
    """
    status, body, etag = alert_status_response(app, request.headers.get("if-none-match"))
    headers = {"ETag": etag, "Cache-Control": "no-cache", **request.state.rate_headers}
    return Response(body if status == 200 else None, status, headers, "application/json")


@router.get("/alerts", response_model=list[AlertOut], dependencies=[require("read")],
            responses=errors(400, *AUTH_ERRORS))
def list_alerts(state: Literal["open", "resolved", "all"] = Query("all"),
                limit: int = Query(100, description="1 to 1000; larger values are clamped"),
                app=Depends(get_app)) -> list[AlertOut]:
    """Alert history, newest first."""
    return [AlertOut.of(a) for a in app.store.alerts(state, parse_limit(limit))]


# Acknowledging changes the monitor, which lives on the event loop: these routes are async so
# they run there, never on the threadpool that serves sync routes.
@router.post("/alerts/ack", response_model=AckOut, responses=errors(*AUTH_ERRORS))
async def ack_all(key: KeyInfo = require("operate"), app=Depends(get_app)) -> AckOut:
    """Acknowledge every open alert (the same action as the box's button)."""
    acked = app.acknowledge(None, key.name)
    return AckOut(acknowledged=[AlertOut.of(a) for a in acked], count=len(acked))


# `:int` so that GET /alerts/config (pingr/api/system.py) is not read as an alert id.
@router.get("/alerts/{alert_id:int}", response_model=AlertOut, dependencies=[require("read")],
            responses=errors(404, *AUTH_ERRORS))
def get_alert(alert_id: int, app=Depends(get_app)) -> AlertOut:
    row = app.store.alert(alert_id)
    if row is None:
        raise HTTPException(404, f"no alert with id {alert_id}")
    return AlertOut.of(row)


@router.post("/alerts/{alert_id}/ack", response_model=AckOut,
             responses=errors(404, 409, *AUTH_ERRORS))
async def ack_one(alert_id: int, key: KeyInfo = require("operate"), app=Depends(get_app)) -> AckOut:
    """Acknowledge one alert: it stays open until recovery but no longer raises alert-status."""
    try:
        acked = app.acknowledge(alert_id, key.name)
    except KeyError:
        raise HTTPException(404, f"no alert with id {alert_id}") from None
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    return AckOut(acknowledged=[AlertOut.of(a) for a in acked], count=len(acked))
