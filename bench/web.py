"""Dashboard budgets with 100 targets and 90 days of history, each against a reference
measured in the same run: page render time (Server-Timing) vs the JSON target list, the bytes
a first visit downloads (compressed vs not), and the RSS `pingr run` gains when the dashboard
is visited vs an identical `pingr run` with it switched off."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import yaml

from bench.common import free_port, heading, median, percentile, row, wait_port
from bench.probes import SERVER

ADMIN = "bench_admin_key_0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent


def targets(http_port: int, interval: str) -> list[dict]:
    out = [{"type": "icmp", "name": f"lo{i}", "host": f"127.0.1.{i + 1}", "interval": interval}
           for i in range(50)]
    out += [{"type": "http", "name": f"web{i}", "url": f"http://127.0.0.1:{http_port}/{i}",
             "interval": interval} for i in range(50)]
    return out


def status_page() -> dict:
    """Ten components in three groups, as a small company's page might have."""
    groups = []
    for g in range(3):
        comps = [{"name": f"Service {g}.{c}", "targets": [f"web{g * 10 + c}", f"lo{g * 10 + c}"]}
                 for c in range(4 if g < 2 else 2)]
        groups.append({"name": f"Group {g}", "components": comps})
    return {"enabled": True, "title": "Bench status", "description": "100 targets",
            "groups": groups}


def start(tmp: Path, name: str, http_port: int, *, dashboard: bool, interval: str = "5s",
          seed: bool = True) -> tuple[subprocess.Popen, int]:
    """`pingr run` with 100 targets (history seeded), listening on a free port."""
    from pingr.config import load_config
    from tests.webseed import seed_history

    port = free_port()
    cfg = {"host": "127.0.0.1", "port": port,
           "auth": {"api_key": ADMIN, "rate_limit_per_minute": 100_000},
           "storage": {"path": str(tmp / f"{name}.db")}, "docker": {"enabled": False},
           "targets": targets(http_port, interval),
           "web": {"dashboard": dashboard,
                   "status_page": status_page() if dashboard else {"enabled": False}}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    if seed:
        seed_history(tmp / f"{name}.db", load_config(path).targets, days=90,
                     outages={"web3": [(50, 3)], "lo7": [(24 * 12, 6)]})
    proc = subprocess.Popen([sys.executable, "-m", "pingr", "run", "-c", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    wait_port(port, 60)
    return proc, port


def sign_in(client: httpx.Client) -> None:
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = client.post("/login", data={"key": ADMIN, "csrf": token, "next": "/"})
    assert r.status_code == 303, r.text


def server_ms(r: httpx.Response) -> float:
    return float(r.headers["server-timing"].split("dur=")[1])


# ---------------------------------------------------------------------- render time


def render(base: str, rounds: int) -> dict:
    results: dict[str, list[float]] = {}
    with httpx.Client(base_url=base, timeout=30, headers={"accept-encoding": "gzip"}) as c:
        sign_in(c)
        api = httpx.Client(base_url=base, timeout=30, headers={"x-api-key": ADMIN})
        first = c.get("/")  # the very first render: template engine, figures from the store
        cold = server_ms(first)
        first_status = server_ms(c.get("/status"))
        tid = re.search(r'href="/targets/([^"?]+)"', first.text).group(1)
        for _ in range(rounds):
            for label, fn in (
                ("overview", lambda: c.get("/")),
                ("status", lambda: c.get("/status")),
                ("target 24h", lambda: c.get(f"/targets/{tid}")),
                ("reference: GET /api/v1/targets (JSON)", lambda: api.get("/api/v1/targets")),
                ("reference: GET /api/v1/health", lambda: api.get("/api/v1/health")),
            ):
                t0 = time.perf_counter()
                r = fn()
                wall = (time.perf_counter() - t0) * 1000
                assert r.status_code in (200, 503), (label, r.status_code)
                results.setdefault(label + " wall", []).append(wall)
                if "server-timing" in r.headers:
                    results.setdefault(label + " server", []).append(server_ms(r))
        api.close()
    return {"cold_overview": cold, "cold_status": first_status, "samples": results}


# ---------------------------------------------------------------------- first visit bytes


def _header_bytes(r: httpx.Response) -> int:
    return sum(len(k) + len(v) + 4 for k, v in r.headers.raw) + 17


def first_visit(base: str) -> dict:
    """What a browser downloads on its first visit, sign-in included: pages and assets as
    sent (gzip when the browser takes it, as browsers do), headers counted too; and then the
    status page with the assets cached. The reference: the same visit uncompressed."""
    return {"compressed": _visit(base, "gzip, deflate"),
            "reference: identity": _visit(base, "identity")}


def _visit(base: str, encoding: str) -> dict:
    total = [0]
    seen: set[str] = set()
    with httpx.Client(base_url=base, timeout=30, headers={"accept-encoding": encoding}) as c:
        def fetch(r: httpx.Response, assets: bool = True) -> None:
            r.read()
            total[0] += r.num_bytes_downloaded + _header_bytes(r)
            html = r.text if "html" in r.headers.get("content-type", "") else ""
            for ref in re.findall(r'(?:href|src)="(/static/[^"]+)"', html) if assets else ():
                if ref not in seen:
                    seen.add(ref)
                    fetch(c.get(ref))

        fetch(c.get("/"))  # the redirect to the sign-in page
        login = c.get("/login")
        fetch(login)
        token = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
        fetch(c.post("/login", data={"key": ADMIN, "csrf": token, "next": "/"}))
        fetch(c.get("/"))
        dashboard = total[0]
        fetch(c.get("/status"))
    return {"dashboard": dashboard, "status_only": total[0] - dashboard, "assets": sorted(seen)}


# ---------------------------------------------------------------------- memory


def memory(tmp: Path, http_port: int, settle: int, visit: int) -> dict:
    """RSS of two identical `pingr run`s (100 targets, 90 days of history): one with the
    dashboard on and visited, one with it off; sampled together, before and while visiting."""
    on, on_port = start(tmp, "on", http_port, dashboard=True)
    off, off_port = start(tmp, "off", http_port, dashboard=False)
    # A second reference with the dashboard off that is sent the same requests (they answer
    # 404): FastAPI builds an included router's routes (their validators) on the first
    # request that has to look at them, and any API client's first request pays that; this
    # reference pays it too, so "on minus asked" is the dashboard's own cost.
    asked, asked_port = start(tmp, "asked", http_port, dashboard=False)
    procs = {"on": psutil.Process(on.pid), "off": psutil.Process(off.pid),
             "asked": psutil.Process(asked.pid)}
    samples: dict[str, list[int]] = {f"{k} {when}": [] for k in procs
                                     for when in ("before", "visited")}
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < settle:
            time.sleep(1.0)
            if time.monotonic() - t0 > settle / 2:
                for k, p in procs.items():
                    samples[f"{k} before"].append(p.memory_info().rss)
        def markupsafe_mapped() -> bool:  # Jinja2's C part: in memory once templates load
            return any("markupsafe" in m.path for m in procs["on"].memory_maps())

        engine_before = markupsafe_mapped()
        stop = threading.Event()
        pages = [0]

        def browse() -> None:
            base = f"http://127.0.0.1:{on_port}"
            with httpx.Client(base_url=base, timeout=30,
                              headers={"accept-encoding": "gzip"}) as c:
                sign_in(c)
                first = c.get("/").text
                ids = re.findall(r'href="/targets/([^"?]+)"', first)
                i = 0
                while not stop.is_set():
                    for path in ("/", "/status", f"/targets/{ids[i % len(ids)]}",
                                 f"/targets/{ids[(i + 1) % len(ids)]}?window=7d",
                                 f"/targets/{ids[(i + 2) % len(ids)]}?window=30d",
                                 "/api/v1/status-page"):
                        try:
                            c.get(path).read()
                        except httpx.HTTPError:
                            return  # pingr stopped first
                        pages[0] += 1
                    i += 3
                    time.sleep(0.5)

        def ask() -> None:  # the same paths, sent to the reference without a dashboard
            base = f"http://127.0.0.1:{asked_port}"
            with httpx.Client(base_url=base, timeout=30, headers={"x-api-key": ADMIN,
                                                                  "accept-encoding": "gzip"}) as c:
                i = 0
                while not stop.is_set():
                    for path in ("/", "/status", f"/targets/t{i}", f"/targets/t{i}?window=7d",
                                 f"/targets/t{i}?window=30d", "/api/v1/status-page"):
                        try:
                            c.get(path).read()
                        except httpx.HTTPError:
                            return
                    i += 3
                    time.sleep(0.5)

        def listen() -> None:  # the open page's live stream, read as a browser would
            base = f"http://127.0.0.1:{on_port}"
            with httpx.Client(base_url=base, timeout=None) as c:
                sign_in(c)
                try:
                    with c.stream("GET", "/ui/events") as s:
                        for _ in s.iter_bytes():
                            if stop.is_set():
                                return
                except httpx.HTTPError:
                    return  # pingr stopped first

        threads = [threading.Thread(target=browse, daemon=True),
                   threading.Thread(target=ask, daemon=True),
                   threading.Thread(target=listen, daemon=True)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < visit:
            time.sleep(1.0)
            if time.monotonic() - t0 > visit / 2:
                for k, p in procs.items():
                    samples[f"{k} visited"].append(p.memory_info().rss)
        stop.set()
        engine_after = markupsafe_mapped()
    finally:
        for p in (on, off, asked):
            p.terminate()
            p.wait(30)
    return {"medians": {k: median(v) for k, v in samples.items()}, "pages": pages[0],
            "engine": (engine_before, engine_after)}


def main(rounds: int = 60, settle: int = 60, visit: int = 90) -> dict:
    heading("Dashboard: 100 targets (50 ICMP, 50 HTTP, every 5s), 90 days of history")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        http_port = free_port()
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(http_port)])
        try:
            wait_port(http_port)
            proc, port = start(tmp, "render", http_port, dashboard=True)
            base = f"http://127.0.0.1:{port}"
            try:
                time.sleep(3)
                times = render(base, rounds)
                visit_bytes = first_visit(base)
            finally:
                proc.terminate()
                proc.wait(30)
            mem = memory(tmp, http_port, settle, visit)
        finally:
            server.terminate()
            server.wait()
    s = times["samples"]
    row("first overview render (server, cold)", f"{times['cold_overview']:.1f} ms")
    row("first status page render (server, cold)", f"{times['cold_status']:.1f} ms")
    for label in ("overview", "status", "target 24h"):
        server_t = s[label + " server"]
        row(f"{label} render (server, median / p90)",
            f"{median(server_t):.1f} / {percentile(server_t, 90):.1f} ms  (budget <= 50 ms)"
            if label != "target 24h" else
            f"{median(server_t):.1f} / {percentile(server_t, 90):.1f} ms")
        row(f"{label} round trip (median)", f"{median(s[label + ' wall']):.1f} ms")
    for ref in ("reference: GET /api/v1/targets (JSON)", "reference: GET /api/v1/health"):
        row(f"{ref} round trip (median)", f"{median(s[ref + ' wall']):.1f} ms")
    ratio = median(s["overview wall"]) / median(s["reference: GET /api/v1/targets (JSON) wall"])
    row("overview vs the JSON target list (round trip)", f"{ratio:.2f}x")
    comp, ident = visit_bytes["compressed"], visit_bytes["reference: identity"]
    row("first visit: sign-in + overview + assets", f"{comp['dashboard'] / 1024:.1f} KiB "
        f"compressed (budget <= 100 KB); {ident['dashboard'] / 1024:.1f} KiB uncompressed")
    row("first visit: the status page (assets cached)",
        f"{comp['status_only'] / 1024:.1f} KiB compressed; "
        f"{ident['status_only'] / 1024:.1f} KiB uncompressed")
    m = mem["medians"]
    growth = (m["on visited"] - m["on before"]) - (m["off visited"] - m["off before"])
    row("template engine loaded: before / after the visits",
        " / ".join("yes" if e else "no" for e in mem["engine"]))
    row("RSS dashboard on, not visited yet vs off",
        f"{(m['on before'] - m['off before']) / 2**20:+.2f} MiB"
        f"  ({m['on before'] / 2**20:.1f} vs {m['off before'] / 2**20:.1f} MiB)")
    row("RSS growth when visited, minus the reference's", f"{growth / 2**20:+.2f} MiB "
        f"(budget <= 4 MB; {mem['pages']} pages served, live stream open)")
    asked_growth = (m["on visited"] - m["on before"]) - (m["asked visited"]
                                                         - m["asked before"])
    row("RSS growth when visited, minus a reference sent the same requests",
        f"{asked_growth / 2**20:+.2f} MiB (they 404 there; FastAPI builds its routes either way)")
    row("RSS dashboard on and visited vs off",
        f"{(m['on visited'] - m['off visited']) / 2**20:+.2f} MiB"
        f"  ({m['on visited'] / 2**20:.1f} vs {m['off visited'] / 2**20:.1f} MiB)")
    return {"render": times, "bytes": visit_bytes, "memory": mem, "growth": growth,
            "asked_growth": asked_growth}


if __name__ == "__main__":
    main()
