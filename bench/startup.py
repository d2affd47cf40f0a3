"""Start-up: from process start to the first healthy `GET /api/v1/health` answer.

`pingr run` with 100 targets (50 ICMP, 50 HTTP at 10 s) on an existing database (one earlier
start made it), against two references served the way pingr serves its API and started and
polled the same way, alternated (`bench.service.BARE_APP`): a plain ASGI function under
uvicorn (the issue's "bare uvicorn app") and a trivial FastAPI app. The clock starts just
before `Popen` and stops when an answer with status 200 arrives (polled every 2 ms).
For the breakdown, the same run also times an interpreter that starts and exits
(`python -c pass`), one that imports only the chosen stack (`STACK_IMPORTS`: uvicorn,
SQLModel with SQLAlchemy, pydantic, httpx, PyYAML) and exits — the floor under any start-up
of pingr on this machine — and one that only imports what `pingr run` imports
(`bench.memory.FLOOR`'s imports) and exits, and prints where that import time goes
(`python -X importtime`, self time summed per top-level package, one run).

pingr's own modules are compiled to bytecode first (`compileall`), as `pip install` does for an
installed pingr (pi-setup.sh, the image): in a checkout installed in editable mode under
PYTHONDONTWRITEBYTECODE, every start would otherwise compile them from source again (~1.3 s
of the import time here), which no appliance pays.
"""

from __future__ import annotations

import collections
import compileall
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import free_port, heading, median, row, wait_port
from bench.lazy import _FLOOR_IMPORTS
from bench.probes import SERVER
from bench.service import running, start_bare, start_pingr, stop, wait_healthy, write_config


def targets_100(http_port: int, interval: str = "10s") -> list[dict]:
    out = [{"type": "icmp", "name": f"lo{i}", "host": f"127.0.1.{i + 1}", "interval": interval}
           for i in range(50)]
    out += [{"type": "http", "name": f"web{i}", "url": f"http://127.0.0.1:{http_port}/{i}",
             "interval": interval} for i in range(50)]
    return out


#: The chosen stack alone, as `pingr run` loads it (the whole API, FastAPI, waits for its first
#: request): the floor of any start-up on this machine before pingr's own code runs.
STACK_IMPORTS = "import asyncio, sqlite3, uvicorn, sqlmodel, pydantic, httpx, yaml"


def _time_exit(code: str) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.monotonic() - t0


def import_breakdown() -> tuple[float, list[tuple[str, float]]]:
    """Total import time and self time per top-level package (seconds), one `-X importtime`."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", _FLOOR_IMPORTS],
                         capture_output=True, text=True, check=True).stderr
    per: collections.Counter = collections.Counter()
    for line in out.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        # "import time:  <self us> | <cumulative us> | <indent><module>"
        self_us, _, name = line[len("import time:"):].split("|")
        per[name.strip().split(".")[0]] += int(self_us) / 1e6
    return sum(per.values()), per.most_common(8)


def _time_healthy(proc_factory, port: int) -> float:  # noqa: ANN001
    t0 = time.monotonic()
    proc = proc_factory()
    try:
        return wait_healthy(port, proc, timeout=60, poll=0.002) - t0
    finally:
        stop(proc)


def main(runs: int = 5) -> dict:
    heading(f"Start-up to the first healthy /api/v1/health, 100 targets on an existing "
            f"database vs a bare uvicorn app, {runs} alternated runs")
    import pingr

    compileall.compile_dir(Path(pingr.__file__).parent, quiet=1)
    http_port = free_port()
    with tempfile.TemporaryDirectory() as tmp, running(
            subprocess.Popen([sys.executable, "-c", SERVER, str(http_port)])):
        wait_port(http_port)
        cfg, port = write_config(Path(tmp), targets_100(http_port))
        # The database: created by a first start that ran a few seconds and stopped cleanly.
        with running(start_pingr(cfg)) as first:
            wait_healthy(port, first)
            time.sleep(3)
        bare_port = free_port()
        ours, asgi, fast, bare_py, imports, stack = [], [], [], [], [], []
        for _ in range(runs):
            bare_py.append(_time_exit("pass"))
            stack.append(_time_exit(STACK_IMPORTS))
            imports.append(_time_exit(_FLOOR_IMPORTS))
            asgi.append(_time_healthy(lambda: start_bare(bare_port, "asgi"), bare_port))
            fast.append(_time_healthy(lambda: start_bare(bare_port), bare_port))
            ours.append(_time_healthy(lambda: start_pingr(cfg), port))
        size = (Path(tmp) / "pingr.db").stat().st_size
    total, top = import_breakdown()
    p, a, f = median(ours), median(asgi), median(fast)
    row("python -c pass (interpreter start and exit)", f"{median(bare_py) * 1000:.0f} ms")
    row("python importing the stack alone, exit", f"{median(stack) * 1000:.0f} ms  ("
        + STACK_IMPORTS.removeprefix("import ") + ")")
    row("python importing what pingr run imports, exit", f"{median(imports) * 1000:.0f} ms")
    row("  import self time by package (one -X importtime)",
        f"{total * 1000:.0f} ms: " + ", ".join(f"{n} {t * 1000:.0f}" for n, t in top))
    row("bare uvicorn app (plain ASGI): first 200", f"{a * 1000:.0f} ms")
    row("trivial FastAPI app under uvicorn: first 200", f"{f * 1000:.0f} ms")
    row("pingr run, 100 targets: first healthy answer",
        f"{p * 1000:.0f} ms  (goal <= 500 ms; database {size / 1e6:.2f} MB)")
    row("ratio pingr / bare uvicorn app; / FastAPI app", f"{p / a:.1f}x; {p / f:.1f}x")
    row("per run, pingr ms", ", ".join(f"{x * 1000:.0f}" for x in ours))
    return {"pingr": ours, "asgi": asgi, "fastapi": fast, "python": bare_py,
            "imports": imports, "stack": stack, "import_top": top}


if __name__ == "__main__":
    main()
