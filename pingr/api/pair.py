"""POST /pair: the Pingr mobile app registers its FCM token; alerts reach it through apprise."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pingr.api.auth import require
from pingr.api.deps import AUTH_ERRORS, errors, get_app
from pingr.notify import fcm
from pingr.notify.urls import check_url, load_apprise
from pingr.settings import NOTIFY_ON

router = APIRouter(tags=["pairing"])


class PairIn(BaseModel):
    """The app's FCM registration token (`fcm_token`, or `token`)."""

    model_config = ConfigDict(extra="forbid")
    fcm_token: str | None = Field(None, min_length=1, max_length=4096,
                                  pattern=r"^[A-Za-z0-9_:.\-]+$")
    token: str | None = Field(None, min_length=1, max_length=4096,
                              pattern=r"^[A-Za-z0-9_:.\-]+$")

    @model_validator(mode="after")
    def _one(self) -> PairIn:
        if (self.fcm_token is None) == (self.token is None):
            raise ValueError("give the app's FCM token as fcm_token")
        return self


class PairOut(BaseModel):
    paired: bool
    channel: str = Field(description="the notification channel that carries the pushes")
    channel_id: int


@router.post("/pair", response_model=PairOut, dependencies=[require("admin")],
             responses=errors(400, 409, *AUTH_ERRORS))
async def pair(body: PairIn, app=Depends(get_app)) -> PairOut:
    """Register the mobile app: alerts, recoveries and reminders are pushed to this token
    through Firebase Cloud Messaging (apprise's FCM plugin, the credentials in
    `alerts.fcm`). Pairing again replaces the token. 409 when the credentials are missing."""
    alerts = app.config.alerts
    if alerts.fcm is None:
        raise HTTPException(409, fcm.MISSING)
    notifier = app.notifier
    current = next((c for c in notifier.channels.values() if c.name == fcm.CHANNEL), None)
    if current is not None and current.source == "config":
        raise HTTPException(409, "the app's token is set in pingr.yaml (alerts.fcm_token): "
                            "change it there")
    token = body.fcm_token or body.token or ""
    url = fcm.fcm_url(alerts.fcm, token)
    await load_apprise()
    try:
        await asyncio.get_running_loop().run_in_executor(None, check_url, url)
    except ValueError as exc:
        raise HTTPException(400, f"fcm_token: {exc}") from None
    if current is None:
        channel = await notifier.save_channel({"name": fcm.CHANNEL, "url": url,
                                               "on": list(NOTIFY_ON), "targets": [],
                                               "tags": [], "source": "api"})
    else:  # a new token; what the channel is told about stays as the user set it
        channel = await notifier.save_channel({"url": url}, current.id)
    return PairOut(paired=True, channel=channel.name, channel_id=channel.id)
