"""Silences: mute notifications and audible outputs for targets by name or tag."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from pingr.api.auth import KeyInfo, require
from pingr.api.deps import AUTH_ERRORS, errors, get_app
from pingr.api.schemas import UtcTime, ts
from pingr.timeutil import parse_duration, parse_timestamp, to_ms

router = APIRouter(tags=["silences"])


class SilenceIn(BaseModel):
    """Targets (names) and/or tags; from `starts_at` (default now) until `ends_at` or for
    `duration` (30m, 2h, 1d)."""

    model_config = ConfigDict(extra="forbid")
    targets: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    starts_at: str | None = None
    ends_at: str | None = None
    duration: str | None = None
    comment: str | None = Field(None, max_length=500)


class SilenceOut(BaseModel):
    id: int
    targets: list[str]
    tags: list[str]
    starts_at: UtcTime
    ends_at: UtcTime
    active: bool
    comment: str | None
    created_by: str | None
    created_at: UtcTime


def silences(app):
    return app.silences


def out(row: dict, now: int) -> SilenceOut:
    return SilenceOut(id=row["id"], targets=row["targets"], tags=row["tags"],
                      starts_at=ts(row["starts_at"]), ends_at=ts(row["ends_at"]),
                      active=row["starts_at"] <= now < row["ends_at"], comment=row["comment"],
                      created_by=row["created_by"], created_at=ts(row["created_at"]))


def _time(name: str, value: str) -> int:
    try:
        return to_ms(parse_timestamp(value))
    except ValueError as exc:
        raise HTTPException(400, f"{name}: {exc}") from None


@router.get("/silence", response_model=list[SilenceOut], dependencies=[require("read")],
            responses=errors(400, *AUTH_ERRORS))
def list_silences(expired: bool = Query(False, description="include silences that ended"),
                  app=Depends(get_app)) -> list[SilenceOut]:
    """Active and upcoming silences (and, with expired=true, those of the last 7 days)."""
    now = app.clock_ms()
    return [out(r, now) for r in silences(app).list(include_expired=expired)]


@router.post("/silence", response_model=SilenceOut, status_code=201,
             responses=errors(400, *AUTH_ERRORS))
async def create_silence(body: SilenceIn, key: KeyInfo = require("operate"),
                         app=Depends(get_app)) -> SilenceOut:
    """Silence targets: while it lasts they send no notifications and sound no audible
    output, and alert-status lists them under `silenced` instead of failing."""
    if not body.targets and not body.tags:
        raise HTTPException(400, "give targets (names) or tags to silence")
    known = {t.name for t in app.targets.values()}
    unknown = [n for n in body.targets if n not in known]
    if unknown:
        raise HTTPException(400, f"targets: unknown target {unknown[0]!r}")
    now = app.clock_ms()
    starts = _time("starts_at", body.starts_at) if body.starts_at else now
    if (body.ends_at is None) == (body.duration is None):
        raise HTTPException(400, "give either ends_at or duration")
    if body.duration is not None:
        try:
            seconds = parse_duration(body.duration)
        except ValueError as exc:
            raise HTTPException(400, f"duration: {exc}") from None
        if seconds <= 0 or seconds > 366 * 86400:
            raise HTTPException(400, "duration must be between 1s and 366d")
        ends = starts + round(seconds * 1000)
    else:
        ends = _time("ends_at", body.ends_at or "")
    if ends <= now:
        raise HTTPException(400, "ends_at is in the past")
    if ends <= starts:
        raise HTTPException(400, "ends_at must be after starts_at")
    row = await silences(app).create(targets=body.targets, tags=body.tags, starts_at=starts,
                                     ends_at=ends, comment=body.comment, by=key.name)
    return out(row, app.clock_ms())


@router.delete("/silence/{silence_id}", status_code=204, response_class=Response,
               dependencies=[require("operate")], responses=errors(404, *AUTH_ERRORS))
async def delete_silence(silence_id: int, app=Depends(get_app)) -> Response:
    """End a silence now (or drop an upcoming one)."""
    if not await silences(app).delete(silence_id):
        raise HTTPException(404, f"no silence with id {silence_id}")
    return Response(status_code=204)
