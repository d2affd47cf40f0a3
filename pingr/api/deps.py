"""Small shared helpers for routes: the app handle, query parsing, error responses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from pingr.api.front import error_body
from pingr.api.schemas import ErrorOut
from pingr.timeutil import parse_duration, parse_timestamp, to_ms

if TYPE_CHECKING:
    from pingr.app import App


def get_app(request: Request) -> App:
    return request.app.state.pingr


def error_response(status: int, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message), status_code=status, headers=headers)


def bad_request(message: str) -> HTTPException:
    return HTTPException(400, message)


def parse_limit(value: int, default_max: int = 1000) -> int:
    """Limits below 1 are errors; above the maximum they are clamped, not refused."""
    if value < 1:
        raise bad_request(f"invalid limit: must be at least 1, got {value}")
    return min(value, default_max)


def parse_time_param(name: str, value: str | None, default_ms: int) -> int:
    if value is None or value == "":
        return default_ms
    try:
        return to_ms(parse_timestamp(value))
    except ValueError as exc:
        raise bad_request(f"{name}: {exc}") from None


#: The Pingu draft's message for a window that does not parse.
WINDOW_FORMAT = "invalid window format, expected like 15m, 1h, 7d"


def parse_window(value: str) -> float:
    """Seconds of a `window` such as 15m, 1h, 24h, 7d (1s to 400d)."""
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise bad_request(WINDOW_FORMAT) from None
    if not isinstance(value, str) or not value.strip() or seconds <= 0 or seconds > 400 * 86400:
        raise bad_request("window must be between 1s and 400d, e.g. 15m, 1h, 7d")
    return seconds


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses, all `{"error", "detail"}`."""
    text = {
        400: "Invalid parameter or body",
        401: "Missing, invalid or disabled API key",
        403: "The key's scope does not allow this",
        404: "No such object",
        409: "Conflicts with an existing object or state",
        429: "Rate limit exceeded (see Retry-After)",
        500: "Unexpected server error",
        503: "Unhealthy",
    }
    return {c: {"model": ErrorOut, "description": text.get(c, "Error")} for c in codes}


AUTH_ERRORS = (401, 403, 429)
