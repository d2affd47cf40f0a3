"""GET /health: the one endpoint without a key (systemd, Docker and boot checks poll it)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from pingr.api.deps import errors, get_app
from pingr.api.front import health_answer
from pingr.api.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut, responses=errors(503))
async def health(app=Depends(get_app)) -> JSONResponse:
    """Liveness and freshness. 200 when healthy, 503 when the monitor is stale or the DB fails.

    `db` says whether the database answered a query just now (the newest stored result, which
    is `last_result_ts`); the query runs off the event loop. The front door answers this
    path before FastAPI (pingr/api/front.py); this route documents it.
    """
    status, body = await health_answer(app)
    return JSONResponse(body, status)
