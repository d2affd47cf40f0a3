"""GET /health: the one endpoint without a key (systemd, Docker and boot checks poll it)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from pingr import __version__
from pingr.api.deps import errors, get_app
from pingr.api.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut, responses=errors(503))
async def health(response: Response, app=Depends(get_app)) -> HealthOut:
    """Liveness and freshness. 200 when healthy, 503 when the monitor is stale or the DB fails."""
    info = app.health()
    if not info.ok:
        response.status_code = 503
    return info

__all__ = ["router", "__version__"]
