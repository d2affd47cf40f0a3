"""GET /metrics: Prometheus text format, read scope unless `metrics.public` opens it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from pingr.api.auth import require
from pingr.api.deps import AUTH_ERRORS, errors, get_app

#: The content type prometheus_client's text exposition uses (format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_router(public: bool) -> APIRouter:
    """The /metrics route; `public` drops the API-key requirement (trusted networks only)."""
    router = APIRouter(tags=["metrics"])
    dependencies = [] if public else [require("read")]

    @router.get(
        "/metrics",
        dependencies=dependencies,
        responses={200: {"content": {CONTENT_TYPE: {}},
                         "description": "Prometheus text exposition format"},
                   **({} if public else errors(*AUTH_ERRORS))},
        response_class=Response,
        summary="Prometheus metrics",
    )
    def metrics(request: Request) -> Any:
        """Per-target up/latency/failures, alerts, probe counts, storage and process metrics.

        Prometheus sends the key as `authorization: {credentials: <key>}` (Bearer).
        """
        return Response(get_app(request).metrics.render(), media_type=CONTENT_TYPE)

    return router
