#!/usr/bin/env python3
"""Relay controller for a second Pi: polls a remote pingr and switches a relay to ALARM
whenever pingr reports an alert OR cannot give a clear answer (down, wrong key, rate limited).

    PINGR_URL=http://pingr.local:9009 PINGR_API_KEY=pingr_... \\
        python3 pingr_relay.py --pin 17

The relay is energised for ALARM. It starts in ALARM and leaves it only after pingr has said
"no alert", so a controller that boots into a dead network, or a pingr that was unplugged,
sounds the siren instead of staying silent. For protection against this Pi itself dying, wire
the siren to the relay's normally-closed contact and pass --alarm-when-off: then a dead
controller (no power, crashed, relay released) also means ALARM.

Needs python3-gpiozero and python3-requests (both in Raspberry Pi OS). GPIOZERO_PIN_FACTORY=mock
runs it without hardware.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

import requests

ALARM, OK = "ALARM", "OK"


class Poller:
    """Asks pingr; anything but a well-formed 200 answer counts as a failure to get an answer."""

    def __init__(self, url: str, key: str, timeout: float, max_rate_limited: int) -> None:
        self.url = url.rstrip("/") + "/api/v1/alert-status"
        self.key = key
        self.timeout = timeout
        self.max_rate_limited = max_rate_limited
        self.rate_limited = 0
        self.session = requests.Session()

    def ask(self) -> tuple[str, str, float]:
        """(verdict, reason, seconds to wait or 0); verdict is ok, alert, no_answer or wait."""
        try:
            resp = self.session.get(self.url, headers={"x-api-key": self.key},
                                    timeout=self.timeout)
        except requests.RequestException as exc:
            return "no_answer", f"no answer from pingr ({exc.__class__.__name__})", 0
        if resp.status_code == 429:
            self.rate_limited += 1
            wait = float(resp.headers.get("Retry-After", "60"))
            if self.rate_limited >= self.max_rate_limited:
                return "no_answer", f"rate limited {self.rate_limited} times in a row", wait
            return "wait", f"rate limited; waiting {wait:g} s as asked", wait
        self.rate_limited = 0
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code != 200:
            detail = data.get("detail") if isinstance(data, dict) else resp.reason
            return "no_answer", f"pingr answered HTTP {resp.status_code}: {detail}", 0
        if not isinstance(data, dict) or not isinstance(data.get("alert"), bool):
            return "no_answer", "the answer is not pingr's alert status", 0
        if data["alert"]:
            names = ", ".join(t.get("name", "?") for t in data.get("failing_targets", []))
            return "alert", f"alert: {names}", 0
        return "ok", "no alert", 0


def make_relay(pin: int, active_high: bool) -> Any:
    from gpiozero import OutputDevice

    # initial_value=True: the relay is in ALARM from the first instant, before any poll.
    return OutputDevice(pin, active_high=active_high, initial_value=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Drive a relay from a remote pingr.")
    parser.add_argument("--url", default=os.environ.get("PINGR_URL", "http://localhost:9009"))
    parser.add_argument("--pin", type=int, default=int(os.environ.get("RELAY_PIN", "17")),
                        help="BCM pin of the relay (default 17)")
    parser.add_argument("--active-low", action="store_true",
                        help="the relay board switches on when the pin is low (most do)")
    parser.add_argument("--alarm-when-off", action="store_true",
                        help="ALARM = relay released (siren on the NC contact: fail-safe)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between polls")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--grace", type=int, default=1,
                        help="failed polls in a row before ALARM (an alert is immediate)")
    parser.add_argument("--max-rate-limited", type=int, default=3,
                        help="429 answers in a row before ALARM")
    args = parser.parse_args(argv)
    key = os.environ.get("PINGR_API_KEY", "")

    relay = make_relay(args.pin, active_high=not args.active_low)
    shown: tuple[str, str] | None = None

    def drive(new: str, reason: str) -> None:
        nonlocal shown
        energise = (new == ALARM) != args.alarm_when_off
        relay.value = 1 if energise else 0
        if (new, reason) != shown:  # log changes only, not every poll
            shown = (new, reason)
            print(f"relay {new} ({reason}); pin {args.pin} value {relay.value}", flush=True)

    drive(ALARM, "start: no answer yet")
    if not key:
        print("set PINGR_API_KEY (a read key); staying in ALARM", file=sys.stderr, flush=True)
    poller = Poller(args.url, key, args.timeout, args.max_rate_limited)
    failed = 0
    stop = False

    def on_signal(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop:
        verdict, reason, wait = poller.ask() if key else ("no_answer", "no API key", 0)
        if verdict == "no_answer":
            failed += 1
            # Within the grace a lost poll keeps the current state; after it: ALARM.
            if failed >= args.grace:
                drive(ALARM, reason)
        elif verdict != "wait":
            failed = 0
            drive(OK if verdict == "ok" else ALARM, reason)
        deadline = time.monotonic() + (wait or args.interval)
        while not stop and time.monotonic() < deadline:
            time.sleep(0.05)
    # gpiozero releases the pin on exit: only the NC wiring (--alarm-when-off) keeps sounding.
    relay.close()
    print("controller stopped; relay released", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
