"""GET /api/v1/alert-status with a valid key vs a bare ASGI app returning the same bytes (wrk)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import yaml

from bench.common import free_port, heading, median, row, wait_port

ADMIN = "bench_admin_key_0123456789abcdef"
KEYS = 8

BARE = """
import sys, uvicorn
body = open(sys.argv[2], "rb").read()
ctype = sys.argv[3].encode()
headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
# The same settings pingr gives uvicorn (pingr.app.App.serve).
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False,
            log_level="warning", lifespan="off", server_header=False)
"""

LUA = """
keys = {%s}
i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/api/v1/alert-status", {["x-api-key"] = keys[(i %% #keys) + 1]})
end
"""


def wrk(port: int, script: Path, seconds: int, connections: int) -> dict:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/api/v1/alert-status",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p99_ms": p99, "non_2xx": int(bad.group(1)) if bad else 0}


def main(seconds: int = 8, runs: int = 3, connections: int = 32) -> dict:
    heading(f"alert-status throughput: wrk, {connections} connections, {runs}x{seconds}s each")
    if not shutil.which("wrk"):
        row("skipped", "wrk is not installed (apt-get install wrk; tests/bootstrap.sh has it)")
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        port, bare_port = free_port(), free_port()
        cfg = {
            "host": "127.0.0.1",
            "port": port,
            # The per-key limit (120/min by default) is raised, and the load is spread over
            # 8 keys, so that this measures serving rather than the 429 path.
            "auth": {"api_key": ADMIN, "rate_limit_per_minute": 100_000},
            "storage": {"path": str(tmpdir / "a.db")},
            "targets": [{"type": "icmp", "name": "lo", "host": "127.0.0.1", "interval": "5s"}],
        }
        (tmpdir / "pingr.yaml").write_text(yaml.safe_dump(cfg))
        pingr = subprocess.Popen(
            [sys.executable, "-m", "pingr", "run", "-c", str(tmpdir / "pingr.yaml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        bare = None
        try:
            wait_port(port)
            base = f"http://127.0.0.1:{port}/api/v1"
            keys = []
            for i in range(KEYS):
                r = httpx.post(
                    f"{base}/keys",
                    json={"name": f"bench{i}", "scope": "read"},
                    headers={"x-api-key": ADMIN},
                )
                r.raise_for_status()
                keys.append(r.json()["key"])
            r = httpx.get(f"{base}/alert-status", headers={"x-api-key": keys[0]})
            r.raise_for_status()
            (tmpdir / "body").write_bytes(r.content)
            bare = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    BARE,
                    str(bare_port),
                    str(tmpdir / "body"),
                    r.headers["content-type"],
                ]
            )
            wait_port(bare_port)
            script = tmpdir / "keys.lua"
            script.write_text(LUA % ", ".join(f'"{k}"' for k in keys))
            ours, ref = [], []
            for _ in range(runs):
                ref.append(wrk(bare_port, script, seconds, connections))
                ours.append(wrk(port, script, seconds, connections))
        finally:
            for proc in (pingr, bare):
                if proc is not None:
                    proc.terminate()
                    proc.wait(timeout=20)
    p_rps, b_rps = median(r["rps"] for r in ours), median(r["rps"] for r in ref)
    p_p99, b_p99 = median(r["p99_ms"] for r in ours), median(r["p99_ms"] for r in ref)
    row("response body", f"{len(r.content)} bytes")
    row("bare ASGI app: requests/s, p99 (median)", f"{b_rps:,.0f} /s, {b_p99:.2f} ms")
    row("pingr /alert-status: requests/s, p99 (median)", f"{p_rps:,.0f} /s, {p_p99:.2f} ms")
    row("ratio pingr / bare", f"{p_rps / b_rps:.2f}  (target >= 0.7; p99 target <= 20 ms)")
    row("non-2xx responses (pingr runs)", str(sum(r["non_2xx"] for r in ours)))
    return {"pingr": ours, "bare": ref}


if __name__ == "__main__":
    main()
