"""Verify pingr's signed webhooks: a receiver that checks X-Pingr-Signature and the timestamp.

Run: python3 webhook_verify.py SECRET [PORT]   (standard library only)
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import sys
import time
from typing import Any

#: Requests older (or newer) than this many seconds are refused, so a captured one cannot be
#: replayed later.
TOLERANCE = 300


class BadSignature(Exception):
    """The request was not signed by pingr with this secret, or is too old."""


def verify(secret: str, body: bytes, signature: str | None, timestamp: str | None,
           now: float | None = None) -> dict[str, Any]:
    """Check one webhook request; return its JSON payload or raise BadSignature.

    1. HMAC-SHA256 of the raw body (the exact bytes, before any JSON parsing) with the secret
       must equal the hex after `sha256=` in X-Pingr-Signature (compared in constant time).
    2. X-Pingr-Timestamp must be within TOLERANCE seconds of now, and equal `sent_at` in the
       signed body (so the header cannot be swapped for a fresh one).
    """
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not signature or not hmac.compare_digest(expected, signature):
        raise BadSignature("signature does not match")
    try:
        sent = int(timestamp or "")
    except ValueError:
        raise BadSignature("missing or invalid X-Pingr-Timestamp") from None
    if abs((time.time() if now is None else now) - sent) > TOLERANCE:
        raise BadSignature("timestamp too far from now")
    payload = json.loads(body)
    if payload.get("sent_at") != sent:
        raise BadSignature("timestamp header does not match the signed body")
    return payload


def serve(secret: str, port: int) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                payload = verify(secret, body, self.headers.get("X-Pingr-Signature"),
                                 self.headers.get("X-Pingr-Timestamp"))
            except BadSignature as exc:
                self.send_response(401)
                self.end_headers()
                print(f"refused: {exc}", flush=True)
                return
            self.send_response(204)
            self.end_headers()
            print(f"{payload['event']}: {json.dumps(payload['payload'])}", flush=True)

    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: webhook_verify.py SECRET [PORT]")
    serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8765)
