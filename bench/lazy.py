"""What each part that could load on first use costs in RSS: the memory lever's price list.

Each candidate is measured in a fresh interpreter that first imports the common floor (what a
running `pingr run` has imported: `bench.memory.FLOOR`) and builds whatever the candidate
needs, then reads its own VmRSS, runs the candidate, and reads VmRSS again (after a
`gc.collect()` both times). Three interpreters per candidate, median. A candidate already in
the floor shows 0 and is flagged.

Then, through pingr's stable interfaces, RSS of a running `pingr run` (only `/api/v1/health`
polled so far, as systemd does): after its first other API request (`GET /api/v1/targets`: the
whole API, FastAPI and every route, is built on that first use and kept), and after its first
`GET /openapi.json` and `GET /docs` (the schema is built on that first request and kept).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import procstat
from bench.common import heading, median, row
from bench.memory import FLOOR
from bench.service import API_KEY, TcpListener, running, start_pingr, wait_healthy, write_config

#: The floor's imports, without its idle sleep.
_FLOOR_IMPORTS = FLOOR.split("print('ready'")[0]

PROBE = _FLOOR_IMPORTS + """
import gc, json, sys
def rss():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
setup, measured, module = sys.argv[1], sys.argv[2], sys.argv[3]
already = bool(module) and module in sys.modules and sys.modules[module] is not None
exec(setup)
n0 = len(sys.modules)
gc.collect()
before = rss()
exec(measured)
gc.collect()
after = rss()
print(json.dumps({"before": before, "after": after, "already": already,
                  "modules": len(sys.modules) - n0}))
"""

_ALL_ROUTERS = (
    "from fastapi import FastAPI\napi = FastAPI()\n"
    "from pingr.api.asgi import ROUTERS\n"
    "for r in ROUTERS:\n    api.include_router(r, prefix='/api/v1')\n"
)

#: label -> (setup, measured, module checked against the floor)
CANDIDATES: dict[str, tuple[str, str, str]] = {
    "OpenAPI schema, whole API (get_openapi)": (
        _ALL_ROUTERS,
        "from fastapi.openapi.utils import get_openapi\n"
        "schema = get_openapi(title='pingr', version='1', routes=api.routes)\n",
        "",
    ),
    "the whole API: pingr.api.asgi (FastAPI, every route and model)": (
        "", "import pingr.api.asgi\n", "pingr.api.asgi"),
    "apprise (notify channels)": ("", "import apprise\n", "apprise"),
    "docker SDK": ("", "import docker\n", "docker"),
    "jinja2": ("", "import jinja2\n", "jinja2"),
    "prometheus_client": ("", "import prometheus_client\n", "prometheus_client"),
    "paho.mqtt.client": ("", "import paho.mqtt.client\n", "paho.mqtt.client"),
    "gpiozero": ("", "import gpiozero\n", "gpiozero"),
}


def measure(setup: str, measured: str, module: str, runs: int = 3) -> dict:
    out = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-c", PROBE, setup, measured, module],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1]}
        out.append(json.loads(proc.stdout))
    return {
        "delta": median(r["after"] - r["before"] for r in out),
        "floor": median(r["before"] for r in out),
        "already": any(r["already"] for r in out),
        "modules": out[0]["modules"],
    }


def openapi_in_running_pingr() -> dict:
    """RSS of `pingr run` before its first API request, after it, and after its first
    /openapi.json and /docs."""
    listener = TcpListener()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            from bench.idle import idle_targets

            cfg, port = write_config(Path(tmp), idle_targets(listener.port))
            with running(start_pingr(cfg)) as pingr:
                wait_healthy(port, pingr)
                time.sleep(10)

                def rss() -> float:
                    values = []
                    for _ in range(5):
                        values.append(procstat.sample(pingr.pid).rss)
                        time.sleep(0.4)
                    return median(values)

                before = rss()
                request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/targets",
                                                 headers={"x-api-key": API_KEY})
                took = []
                for _ in range(2):  # the first builds the API, the second finds it built
                    t0 = time.monotonic()
                    with urllib.request.urlopen(request) as r:
                        r.read()
                    took.append(time.monotonic() - t0)
                time.sleep(2)
                api = rss()
                sizes = {}
                for path in ("/openapi.json", "/docs"):
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}") as r:
                        sizes[path] = len(r.read())
                time.sleep(2)
                after = rss()
    finally:
        listener.close()
    return {"before": before, "api": api, "after": after, "sizes": sizes, "took": took}


def main(runs: int = 3) -> dict:
    heading("Load-on-first-use candidates: RSS each adds to the floor of `pingr run` "
            f"(fresh interpreter each, median of {runs})")
    results = {}
    for label, (setup, measured, module) in CANDIDATES.items():
        r = results[label] = measure(setup, measured, module, runs)
        if "error" in r:
            row(label, f"failed: {r['error']}")
            continue
        note = " (already imported by the floor)" if r["already"] else ""
        row(label, f"+{r['delta'] / 2**20:.2f} MiB, {r['modules']} modules{note}")
    floors = [r["floor"] for r in results.values() if "floor" in r]
    row("reference: the floor those were added to", f"{median(floors) / 2**20:.1f} MiB")
    o = openapi_in_running_pingr()
    results["running"] = o
    row("running pingr, only /api/v1/health asked so far", f"{o['before'] / 2**20:.1f} MiB")
    row("  after its first other API request (builds the API)",
        f"{o['api'] / 2**20:.1f} MiB (+{(o['api'] - o['before']) / 2**20:.2f} MiB; that "
        f"request took {o['took'][0] * 1000:.0f} ms, the next {o['took'][1] * 1000:.0f} ms)")
    row("  after /openapi.json + /docs",
        f"{o['after'] / 2**20:.1f} MiB (+{(o['after'] - o['api']) / 2**20:.2f} MiB; schema "
        f"{o['sizes']['/openapi.json'] / 1000:.0f} kB)")
    return results


if __name__ == "__main__":
    main()
