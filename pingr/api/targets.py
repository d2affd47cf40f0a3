"""Targets: list, read, create, change, delete, pause and resume."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Response

from pingr.api.auth import require, reveal
from pingr.api.deps import AUTH_ERRORS, errors, get_app
from pingr.api.schemas import TargetList, TargetOut
from pingr.probes.registry import TargetSpec

router = APIRouter(tags=["targets"])


def _out(app, target) -> TargetOut:
    state = app.monitor.state_of(target.id)
    status = state.status if state else ("paused" if not target.enabled else "pending")
    return reveal(TargetOut.of(target, status, state.failures if state else 0))


def _find(app, target_id: str):
    target = app.targets.get(target_id)
    if target is None:
        raise HTTPException(404, f"no target with id {target_id}")
    return target


@router.get("/targets", response_model=TargetList, dependencies=[require("read")],
            responses=errors(400, *AUTH_ERRORS))
async def list_targets(
    status: Literal["enabled", "disabled", "all"] = Query("enabled"), app=Depends(get_app)
) -> TargetList:
    """Targets by name; `status` filters enabled (default), disabled or all."""
    targets = sorted(app.targets.values(), key=lambda t: t.name.lower())
    if status != "all":
        targets = [t for t in targets if t.enabled == (status == "enabled")]
    return TargetList(items=[_out(app, t) for t in targets])


@router.get("/targets/{target_id}", response_model=TargetOut, dependencies=[require("read")],
            responses=errors(404, *AUTH_ERRORS))
async def get_target(target_id: str, app=Depends(get_app)) -> TargetOut:
    return _out(app, _find(app, target_id))


@router.post("/targets", response_model=TargetOut, status_code=201,
             dependencies=[require("admin")], responses=errors(400, 409, *AUTH_ERRORS))
async def create_target(spec: Annotated[TargetSpec, Body()], app=Depends(get_app)) -> TargetOut:
    """Add a target; it is probed at once, no restart needed."""
    return _out(app, await app.target_admin.create(spec))


@router.put("/targets/{target_id}", response_model=TargetOut, dependencies=[require("admin")],
            responses=errors(400, 404, 409, *AUTH_ERRORS))
async def update_target(target_id: str, changes: dict[str, Any] = Body(...),
                        app=Depends(get_app)) -> TargetOut:
    """Change a target. Fields not given keep their values; the result is validated whole.
    Durations are accepted as on creation (`interval: "5s"`, `timeout: "1s"`)."""
    target = _find(app, target_id)
    return _out(app, await app.target_admin.update(target, changes))


@router.delete("/targets/{target_id}", status_code=204, response_class=Response,
               dependencies=[require("admin")], responses=errors(404, *AUTH_ERRORS))
async def delete_target(target_id: str, app=Depends(get_app)) -> Response:
    await app.target_admin.delete(_find(app, target_id))
    return Response(status_code=204)


@router.post("/targets/{target_id}/pause", response_model=TargetOut,
             dependencies=[require("admin")], responses=errors(404, *AUTH_ERRORS))
async def pause_target(target_id: str, app=Depends(get_app)) -> TargetOut:
    return _out(app, await app.target_admin.update(_find(app, target_id), {"enabled": False}))


@router.post("/targets/{target_id}/resume", response_model=TargetOut,
             dependencies=[require("admin")], responses=errors(404, *AUTH_ERRORS))
async def resume_target(target_id: str, app=Depends(get_app)) -> TargetOut:
    return _out(app, await app.target_admin.update(_find(app, target_id), {"enabled": True}))
