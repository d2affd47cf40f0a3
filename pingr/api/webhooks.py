"""Outgoing webhooks: register, list, delete and test."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pingr.api.auth import require
from pingr.api.deps import AUTH_ERRORS, errors, get_app
from pingr.api.schemas import UtcTime, ts
from pingr.webhooks import WEBHOOK_EVENTS

router = APIRouter(tags=["webhooks"])


class WebhookIn(BaseModel):
    """`events`: types to send (default all, "*"); `secret`: for the signature (generated when
    not given, shown once in the answer)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    url: str = Field(max_length=2000)
    events: list[str] = Field(default_factory=lambda: ["*"])
    secret: str | None = Field(None, min_length=16, max_length=256)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected http://host[:port]/path or https://…")
        return value.strip()

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one event type (or \"*\")")
        for item in value:
            if item != "*" and item not in WEBHOOK_EVENTS:
                raise ValueError(f"unknown event {item!r}: use * or one of "
                                 f"{', '.join(WEBHOOK_EVENTS)}")
        return value


class WebhookOut(BaseModel):
    id: int
    name: str
    url: str
    events: list[str]
    enabled: bool
    secret_hint: str = Field(description="the secret's first characters")
    created_at: UtcTime
    last_sent_at: UtcTime | None
    last_status: int | None
    last_error: str | None


class WebhookCreated(WebhookOut):
    secret: str = Field(description="shown only in this answer")


class TestOut(BaseModel):
    ok: bool
    status: int | None
    error: str | None


def hooks(app):
    return app.webhooks


def out(hook: dict, cls: type[WebhookOut] = WebhookOut) -> WebhookOut:
    extra = {"secret": hook["secret"]} if cls is WebhookCreated else {}
    return cls(id=hook["id"], name=hook["name"], url=hook["url"], events=hook["events"],
               enabled=hook["enabled"], secret_hint=hook["secret"][:10] + "…",
               created_at=ts(hook["created_at"]), last_sent_at=ts(hook["last_sent_at"]),
               last_status=hook["last_status"], last_error=hook["last_error"], **extra)


def _find(app, hook_id: int) -> dict:
    hook = hooks(app).hooks.get(hook_id)
    if hook is None:
        raise HTTPException(404, f"no webhook with id {hook_id}")
    return hook


@router.get("/webhooks", response_model=list[WebhookOut], dependencies=[require("admin")],
            responses=errors(*AUTH_ERRORS))
def list_webhooks(app=Depends(get_app)) -> list[WebhookOut]:
    return [out(h) for h in sorted(hooks(app).hooks.values(), key=lambda h: h["id"])]


@router.post("/webhooks", response_model=WebhookCreated, status_code=201,
             dependencies=[require("admin")], responses=errors(400, 409, *AUTH_ERRORS))
async def create_webhook(body: WebhookIn, app=Depends(get_app)) -> WebhookOut:
    """Register a webhook. Each POST carries `X-Pingr-Signature: sha256=<hex HMAC-SHA256 of the
    raw body>` and `X-Pingr-Timestamp` (also `sent_at` in the body); see the README."""
    try:
        hook = await hooks(app).create(body.name.strip(), body.url, body.events, body.secret)
    except FileExistsError as exc:
        raise HTTPException(409, str(exc)) from None
    return out(hook, WebhookCreated)


@router.delete("/webhooks/{hook_id}", status_code=204, response_class=Response,
               dependencies=[require("admin")], responses=errors(404, *AUTH_ERRORS))
async def delete_webhook(hook_id: int, app=Depends(get_app)) -> Response:
    if not await hooks(app).delete(hook_id):
        raise HTTPException(404, f"no webhook with id {hook_id}")
    return Response(status_code=204)


@router.post("/webhooks/{hook_id}/test", response_model=TestOut, dependencies=[require("admin")],
             responses=errors(404, *AUTH_ERRORS))
async def test_webhook(hook_id: int, app=Depends(get_app)) -> TestOut:
    """Send a signed `webhook.test` event now and report the receiver's answer."""
    return TestOut(**await hooks(app).test(_find(app, hook_id)))
