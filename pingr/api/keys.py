"""API keys: list, create (the key is shown once), enable, disable, delete. Admin only."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Response

from pingr.api.auth import require
from pingr.api.deps import AUTH_ERRORS, errors, get_app
from pingr.api.schemas import KeyCreated, KeyIn, KeyOut
from pingr.storage.tables import ApiKeyRow
from pingr.timeutil import from_ms

router = APIRouter(tags=["keys"], dependencies=[require("admin")])


def _out(row: ApiKeyRow, cls=KeyOut, **extra) -> KeyOut:
    return cls(id=row.id, name=row.name, scope=row.scope, prefix=row.prefix,
               created_at=from_ms(row.created_at),
               last_used_at=from_ms(row.last_used_at) if row.last_used_at else None,
               usage_count=row.usage_count, enabled=row.enabled, **extra)


@router.get("/keys", response_model=list[KeyOut], responses=errors(*AUTH_ERRORS))
async def list_keys(app=Depends(get_app)) -> list[KeyOut]:
    return [_out(r) for r in await app.key_admin.manage("list")]


@router.post("/keys", response_model=KeyCreated, status_code=201,
             responses=errors(400, 409, *AUTH_ERRORS))
async def create_key(body: KeyIn, app=Depends(get_app)) -> KeyCreated:
    """Create a key. The response is the only time the key itself is shown."""
    try:
        row, plaintext = await app.key_admin.manage("create", name=body.name, scope=body.scope)
    except FileExistsError as exc:
        raise HTTPException(409, str(exc)) from None
    return _out(row, KeyCreated, key=plaintext)


async def _set(app, key_id: int, action: str):
    row = await app.key_admin.manage(action, key_id=key_id)
    if row is None:
        raise HTTPException(404, f"no API key with id {key_id}")
    return row


@router.post("/keys/{key_id}/disable", response_model=KeyOut, responses=errors(404, *AUTH_ERRORS))
async def disable_key(key_id: int, app=Depends(get_app)) -> KeyOut:
    return _out(await _set(app, key_id, "disable"))


@router.post("/keys/{key_id}/enable", response_model=KeyOut, responses=errors(404, *AUTH_ERRORS))
async def enable_key(key_id: int, app=Depends(get_app)) -> KeyOut:
    return _out(await _set(app, key_id, "enable"))


@router.delete("/keys/{key_id}", status_code=204, response_class=Response,
               responses=errors(404, *AUTH_ERRORS))
async def delete_key(key_id: int, app=Depends(get_app)) -> Response:
    await _set(app, key_id, "delete")
    return Response(status_code=204)
