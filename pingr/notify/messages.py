"""What a notification says: titles and bodies of alert, reminder, recovery and test messages."""

from __future__ import annotations

from pingr.models import Alert
from pingr.timeutil import from_ms


def _when(ms: int) -> str:
    return from_ms(ms).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(ms: int) -> str:
    """A duration for people: 45s, 3m, 2h 5m, 1d 4h."""
    seconds = max(0, round(ms / 1000))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m")) if v]
    return " ".join(parts[:2])


def _cert(target_name: str) -> str:
    """`NAS certificate`; an automatic check is already named `nas.lan certificate`."""
    return target_name if target_name.endswith("certificate") else f"{target_name} certificate"


def message(kind: str, target_name: str, alert: Alert | None, now: int) -> tuple[str, str, str]:
    """(title, body, apprise notify type) of a message."""
    error = (alert.last_error if alert else None) or "no error text"
    opened = alert.opened_at if alert else now
    if kind == "alert":
        n = alert.peak_failures if alert else 0
        return (f"pingr: {target_name} is DOWN",
                f"{target_name} is down since {_when(opened)} after {n} failed "
                f"check{'' if n == 1 else 's'}.\nLast error: {error}", "failure")
    if kind == "reminder":
        return (f"pingr: {target_name} is still DOWN",
                f"{target_name} has been down for {span(now - opened)} and nobody has "
                f"acknowledged it.\nLast error: {error}", "warning")
    if kind == "recovery":
        resolved = (alert.resolved_at if alert else None) or now
        return (f"pingr: {target_name} is UP",
                f"{target_name} is up again after {span(resolved - opened)} down "
                f"(since {_when(opened)}).", "success")
    if kind == "certificate.alert":
        text = (alert.last_error if alert else None) or "certificate expires soon"
        what = "has EXPIRED" if text.startswith("certificate expired") else "expires soon"
        return (f"pingr: {_cert(target_name)} {what}",
                f"{target_name}: {text}.\nRenew it before clients refuse the connection.",
                "warning")
    if kind == "certificate.recovery":
        return (f"pingr: {_cert(target_name)} renewed",
                f"{target_name} serves a certificate that is no longer near its expiry.",
                "success")
    return ("pingr: test notification",
            f"This is a test notification from pingr, sent {_when(now)}. "
            "If you can read it, this channel works.", "info")
