"""Push notifications to the Pingr mobile app: an apprise FCM channel per paired token."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from pingr.settings import AlertsConfig, FcmConfig, NotifyChannel

#: The channel that carries alerts to the paired mobile app.
CHANNEL = "pingr-app"

#: What POST /api/v1/pair and the log say when the credentials are missing.
MISSING = ("push notifications to the mobile app need Firebase credentials: set "
           "alerts.fcm.project (the Firebase project id) and alerts.fcm.keyfile (the service "
           "account's JSON key file) in pingr.yaml")


def fcm_url(cfg: FcmConfig, token: str) -> str:
    """apprise's FCM URL (HTTP v1 API, OAuth2 with the service account's key file)."""
    keyfile = str(Path(cfg.keyfile).expanduser().absolute())
    return f"fcm://{cfg.project}/{token}?mode=oauth2&keyfile={quote(keyfile, safe='/')}"


def configured_channels(alerts: AlertsConfig) -> list[NotifyChannel]:
    """The channel for a token written in pingr.yaml (`alerts.fcm_token`), if it can work."""
    if not alerts.fcm_token or alerts.fcm is None:
        return []
    return [NotifyChannel(name=CHANNEL, url=fcm_url(alerts.fcm, alerts.fcm_token))]
