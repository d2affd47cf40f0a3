"""apprise, loaded on first use, and its URLs: checked and masked without leaking secrets."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pingr.secrets import mask_topics

_apprise: Any = None


def apprise_module() -> Any:
    """Import apprise on first use (it loads ~200 plugins: memory and a second on a Pi Zero).

    Its own logger is cut off from ours: apprise logs whole URLs (with their secrets) at debug
    level and in some errors. What a delivery reports is captured per call instead.
    """
    global _apprise
    # Checked on every use: logging set-ups elsewhere (dictConfig, test harnesses) may reset it.
    logging.getLogger("apprise").propagate = False
    if _apprise is None:
        import apprise

        _apprise = apprise
    return _apprise


async def load_apprise() -> Any:
    """apprise_module() off the event loop (the first import blocks for a while)."""
    if _apprise is not None:
        return _apprise
    return await asyncio.get_running_loop().run_in_executor(None, apprise_module)


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def check_url(url: str) -> str:
    """Validate an apprise URL; the error names the scheme only, never the secret-bearing URL."""
    url = url.strip()
    scheme = _scheme(url)
    if not scheme:
        raise ValueError("not an apprise URL: expected scheme://…, e.g. ntfy://topic or json://host/path")
    if apprise_module().Apprise.instantiate(url) is None:
        raise ValueError(f"apprise cannot use this {scheme}:// URL "
                         "(unknown scheme or missing parts)")
    return url


def mask_url(url: str) -> str:
    """The URL with credentials hidden, as apprise renders it in privacy mode."""
    plugin = apprise_module().Apprise.instantiate(url)
    if plugin is None:
        return f"{_scheme(url)}://****"
    return mask_topics(plugin.url(privacy=True))  # apprise shows ntfy topics in clear
