#!/usr/bin/env python3
"""Poll pingr's /api/v1/alert-status with requests; anything but a clear answer is an alarm.

    PINGR_URL=http://pingr.local:9009 PINGR_API_KEY=pingr_... python3 alert_status_poller.py

Prints one line whenever the state changes: OK, ALERT (with the failing targets) or ALARM
(pingr down, wrong key, rate limited again and again, or an answer that is not pingr's).
`--once` polls once and exits 0 (OK), 1 (ALERT) or 2 (ALARM). Needs `pip install requests`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import requests

#: After this many 429 answers in a row the poller stops waiting politely and raises the alarm.
MAX_RATE_LIMITED = 3


def poll(session: requests.Session, url: str, key: str, timeout: float) -> tuple[str, str, float]:
    """One poll: (state, message, seconds to wait before the next one or 0 for the default).

    state is "ok", "alert", "alarm" or "rate_limited".
    """
    try:
        resp = session.get(f"{url}/api/v1/alert-status", headers={"x-api-key": key},
                           timeout=timeout)
    except requests.RequestException as exc:
        return "alarm", f"cannot reach pingr at {url}: {exc.__class__.__name__}", 0
    if resp.status_code == 429:
        # Honour Retry-After: the server says when asking again makes sense.
        wait = float(resp.headers.get("Retry-After", "60"))
        return "rate_limited", f"rate limited, retrying in {wait:g} s", wait
    try:
        data = resp.json()
    except ValueError:
        data = None
    if resp.status_code != 200:
        detail = data.get("detail") if isinstance(data, dict) else None
        return "alarm", f"pingr answered HTTP {resp.status_code}: {detail or resp.reason}", 0
    if not isinstance(data, dict) or not isinstance(data.get("alert"), bool):
        return "alarm", f"unexpected answer from {url}", 0
    if not data["alert"]:
        return "ok", "OK", 0
    lines = [f"{data['failing_count']} failing"]
    lines += [f"- {t['name']}: {t['failures']}/{t['threshold']} failures"
              for t in data["failing_targets"]]
    return "alert", "\n".join(lines), 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("PINGR_URL", "http://localhost:9009"))
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between polls")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--once", action="store_true", help="poll once; exit 0/1/2")
    parser.add_argument("--count", type=int, default=0, help="stop after this many polls")
    args = parser.parse_args(argv)
    key = os.environ.get("PINGR_API_KEY")
    if not key:
        print("ALARM: set PINGR_API_KEY to a key with the read scope", flush=True)
        return 2
    url = args.url.rstrip("/")
    session = requests.Session()
    shown = None
    limited = 0
    polls = 0
    while True:
        state, message, wait = poll(session, url, key, args.timeout)
        polls += 1
        if state == "rate_limited":
            limited += 1
            print(f"WAIT: {message}", flush=True)
            if limited >= MAX_RATE_LIMITED:
                state, message = "alarm", f"rate limited {limited} times in a row"
        else:
            limited = 0
        if state != "rate_limited" and (state, message) != shown:
            shown = (state, message)
            print(f"{state.upper()}: {message}" if state != "ok" else "OK", flush=True)
        if args.once:
            return {"ok": 0, "alert": 1}.get(state, 2)
        if args.count and polls >= args.count:
            return 0
        time.sleep(wait or args.interval)


if __name__ == "__main__":
    sys.exit(main())
