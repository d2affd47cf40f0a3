"""Notification channels: apprise URLs, listed with their credentials masked."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field

from pingr.api.auth import require
from pingr.api.deps import AUTH_ERRORS, errors, get_app
from pingr.api.schemas import UtcTime, ts
from pingr.notify.urls import check_url, load_apprise, mask_url

router = APIRouter(tags=["notifications"])

On = Literal["alert", "recovery", "reminder"]


class ChannelIn(BaseModel):
    """A new channel. `url` is an apprise URL (ntfy://, tgram://, mailto://, json:// …)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    url: str = Field(min_length=4, max_length=2000)
    on: list[On] = Field(default_factory=lambda: ["alert", "recovery", "reminder"])
    targets: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    enabled: bool = True


class ChannelChange(BaseModel):
    """Fields to change; the others keep their values."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=64)
    url: str | None = Field(None, min_length=4, max_length=2000)
    on: list[On] | None = None
    targets: list[str] | None = None
    tags: list[str] | None = None
    enabled: bool | None = None


class ChannelOut(BaseModel):
    id: int
    name: str
    url: str = Field(description="credentials masked")
    on: list[str]
    targets: list[str]
    tags: list[str]
    enabled: bool
    source: str = Field(description="config (pingr.yaml: change it there) or api")


class DeliveryOut(BaseModel):
    id: int
    channel_id: int
    channel: str
    kind: str = Field(description="alert, recovery, reminder or test")
    target: str | None
    alert_id: int | None
    title: str
    body: str
    state: str = Field(description="queued, retrying, sent, failed, dropped or suppressed")
    attempts: int
    next_attempt_at: UtcTime | None
    last_error: str | None
    created_at: UtcTime
    updated_at: UtcTime

    @classmethod
    def of(cls, d: dict) -> DeliveryOut:
        waiting = d["state"] in ("queued", "retrying")
        return cls(id=d["id"], channel_id=d["channel_id"], channel=d["channel_name"],
                   kind=d["kind"], target=d["target_name"], alert_id=d["alert_id"],
                   title=d["title"], body=d["body"], state=d["state"], attempts=d["attempts"],
                   next_attempt_at=ts(d["next_attempt_at"]) if waiting else None,
                   last_error=d["last_error"], created_at=ts(d["created_at"]),
                   updated_at=ts(d["updated_at"]))


def notifier(app):
    return app.notifier


async def check(url: str) -> str:
    """Validate an apprise URL off the event loop (the first use imports apprise)."""
    await load_apprise()
    try:
        return await asyncio.get_running_loop().run_in_executor(None, check_url, url)
    except ValueError as exc:
        raise HTTPException(400, f"url: {exc}") from None


def channel_out(ch) -> ChannelOut:
    return ChannelOut(id=ch.id, name=ch.name, url=mask_url(ch.url), on=ch.on, targets=ch.targets,
                      tags=ch.tags, enabled=ch.enabled, source=ch.source)


def _find(app, channel_id: int):
    ch = notifier(app).channels.get(channel_id)
    if ch is None:
        raise HTTPException(404, f"no channel with id {channel_id}")
    return ch


def _check_names(app, names: list[str]) -> None:
    known = {t.name for t in app.targets.values()}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise HTTPException(400, f"targets: unknown target {unknown[0]!r}")


@router.get("/channels", response_model=list[ChannelOut], dependencies=[require("admin")],
            responses=errors(*AUTH_ERRORS))
async def list_channels(app=Depends(get_app)) -> list[ChannelOut]:
    """Every channel, from pingr.yaml and the API; URLs are shown with credentials masked."""
    chans = sorted(notifier(app).channels.values(), key=lambda c: c.name.lower())
    if chans:
        await load_apprise()
    return [channel_out(c) for c in chans]


@router.post("/channels", response_model=ChannelOut, status_code=201,
             dependencies=[require("admin")], responses=errors(400, 409, *AUTH_ERRORS))
async def create_channel(body: ChannelIn, app=Depends(get_app)) -> ChannelOut:
    """Add a channel; it is used from the next event on."""
    data = body.model_dump()
    data["url"] = await check(body.url)
    _check_names(app, body.targets)
    try:
        ch = await notifier(app).save_channel({**data, "source": "api"})
    except FileExistsError as exc:
        raise HTTPException(409, str(exc)) from None
    return channel_out(ch)


@router.put("/channels/{channel_id}", response_model=ChannelOut, dependencies=[require("admin")],
            responses=errors(400, 404, 409, *AUTH_ERRORS))
async def update_channel(channel_id: int, body: ChannelChange, app=Depends(get_app)) -> ChannelOut:
    """Change a channel made through the API (pingr.yaml's channels are changed there)."""
    ch = _find(app, channel_id)
    if ch.source == "config":
        raise HTTPException(409, f"channel {ch.name!r} comes from pingr.yaml: change it there")
    data = body.model_dump(exclude_none=True)
    if "url" in data:
        data["url"] = await check(data["url"])
    _check_names(app, data.get("targets", []))
    try:
        ch = await notifier(app).save_channel(data, channel_id)
    except FileExistsError as exc:
        raise HTTPException(409, str(exc)) from None
    return channel_out(ch)


@router.delete("/channels/{channel_id}", status_code=204, response_class=Response,
               dependencies=[require("admin")], responses=errors(404, 409, *AUTH_ERRORS))
async def delete_channel(channel_id: int, app=Depends(get_app)) -> Response:
    ch = _find(app, channel_id)
    if ch.source == "config":
        raise HTTPException(409, f"channel {ch.name!r} comes from pingr.yaml: remove it there")
    await notifier(app).delete_channel(ch)
    return Response(status_code=204)


@router.post("/channels/{channel_id}/test", response_model=DeliveryOut,
             dependencies=[require("admin")], responses=errors(404, *AUTH_ERRORS))
async def test_channel(channel_id: int, app=Depends(get_app)) -> DeliveryOut:
    """Send a test message now (one attempt); the answer says whether it was delivered."""
    return DeliveryOut.of(await notifier(app).test(_find(app, channel_id)))
