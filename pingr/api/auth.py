"""The FastAPI dependency that guards routes (the checks themselves: pingr.access)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, TypeVar

from fastapi import Depends, HTTPException, Request, Response, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel

from pingr.access import Authenticator, key_from_headers
from pingr.keys import KeyInfo
from pingr.secrets import mask_fields

M = TypeVar("M", bound=BaseModel)

#: The scope of the key that passed `require` for the request being handled (FastAPI awaits
#: async dependencies in the task that runs the route, so the route sees what they set).
_SCOPE: ContextVar[str | None] = ContextVar("pingr_scope", default=None)

#: Declares the header in OpenAPI (every route using `require` is marked as secured); the
#: check itself is Authenticator.check, which also accepts `Authorization: Bearer`.
API_KEY_HEADER = APIKeyHeader(name="x-api-key", auto_error=False,
                              description="An API key; `Authorization: Bearer <key>` works too")


def require(scope: str) -> Any:
    """A FastAPI dependency that admits keys with at least `scope` and returns the KeyInfo."""

    # Async on purpose: it runs on the event loop, like the alert-status fast path, so the
    # limiters and usage counters are never touched from two threads.
    async def dependency(request: Request, response: Response,
                   _documented: str | None = Security(API_KEY_HEADER)) -> KeyInfo:
        auth: Authenticator = request.app.state.pingr.auth
        peer = request.client.host if request.client else None
        ip = auth.client_ip(peer, request.headers.get("x-forwarded-for"))
        outcome = auth.check(key_from_headers(request.headers.get), ip, scope)
        if outcome.status != 200:
            raise HTTPException(outcome.status, outcome.detail, headers=outcome.headers)
        response.headers.update(outcome.headers)
        request.state.rate_headers = outcome.headers
        assert outcome.key is not None
        _SCOPE.set(outcome.key.scope)
        return outcome.key

    dependency.__name__ = f"require_{scope}"
    return Depends(dependency)


def reveal(model: M) -> M:
    """`model` whole for an admin key; for any other scope with credentials masked (URL
    passwords and tokens, secret headers, fields named like secrets)."""
    if _SCOPE.get() == "admin":
        return model
    return model.model_validate(mask_fields(model.model_dump()))
