"""The anchor: pingr against simplemonitor 1.15 on the same loopback ICMP targets at 10 s.

simplemonitor (PyPI) is installed into its own venv, `bench/.simplemonitor-venv` (git-ignored),
on first use. Both are configured alike: N `ping` monitors / `icmp` targets on 127.79.x.y,
interval 10 s, timeout 2 s, every result stored in SQLite (simplemonitor's `db` logger, one row
per result; pingr's store). Runs alternate (simplemonitor, pingr) at 100 targets, then at
1,000; three rounds; medians.

Per run, after a warm-up:
- probes sent = ICMP echo requests to the targets' addresses seen on loopback by a raw socket
  in the bench process (`bench.service.EchoCounter`): what each really sent, so a monitor whose
  rounds stretch past 10 s is charged per probe it made, not per probe it promised (a request
  repeated within 1 s, pingr's re-send after a stall, is the same probe);
- CPU = the process's utime + stime from /proc/<pid>/stat over the window (clock ticks, which
  keep the time of threads that exited: simplemonitor starts a thread pool per round);
- steady RSS = median of VmRSS sampled every second over the window.
Memory per target = (steady RSS at 1,000 - at 100) / 900.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import procstat
from bench.common import heading, median, row
from bench.probes import addresses
from bench.service import EchoCounter, running, start_pingr, wait_healthy, write_config

VERSION = "1.15.0"
VENV = Path(__file__).parent / ".simplemonitor-venv"


def ensure_simplemonitor() -> Path:
    exe = VENV / "bin" / "simplemonitor"
    if exe.exists():
        return exe
    print(f"  installing simplemonitor {VERSION} into {VENV} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", f"simplemonitor=={VERSION}"],
                   check=True)
    return exe


def simplemonitor_config(tmp: Path, addrs: list[str], interval: int = 10) -> Path:
    monitors = "".join(f"[lo{i}]\ntype=ping\nhost={a}\ntimeout=2\n\n" for i, a in enumerate(addrs))
    (tmp / "monitors.ini").write_text(monitors)
    main = tmp / "monitor.ini"
    main.write_text(
        f"[monitor]\ninterval={interval}\nmonitors={tmp / 'monitors.ini'}\n\n"
        "[reporting]\nloggers=db\n\n"
        f"[db]\ntype=db\ndb_path={tmp / 'simplemonitor.db'}\n"
    )
    return main


def _measure(pid: int, counter: EchoCounter, warmup: float, seconds: float) -> dict:
    time.sleep(warmup)
    a, n0, r0 = procstat.sample(pid), counter.count, counter.repeated
    rss = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(1.0)
        rss.append(procstat.sample(pid).rss)
    b, n1, r1 = procstat.sample(pid), counter.count, counter.repeated
    w = procstat.ticks_window(a, b)
    probes = n1 - n0
    return {"cpu": w.cpu, "seconds": w.seconds, "probes": probes, "repeated": r1 - r0,
            "cpu_per_1000": w.cpu / max(probes, 1) * 1000, "rss": median(rss),
            "share": w.share}


def run_simplemonitor(addrs: list[str], warmup: float, seconds: float) -> dict:
    exe = ensure_simplemonitor()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = simplemonitor_config(Path(tmp), addrs)
        counter = EchoCounter(set(addrs))
        try:
            with running(subprocess.Popen([str(exe), "-f", str(cfg), "-H", "-q"], cwd=tmp,
                                          stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)) as proc:
                return _measure(proc.pid, counter, warmup, seconds)
        finally:
            counter.close()


def run_pingr(addrs: list[str], warmup: float, seconds: float) -> dict:
    targets = [{"type": "icmp", "name": f"lo{i}", "host": a, "interval": "10s", "timeout": "2s"}
               for i, a in enumerate(addrs)]
    with tempfile.TemporaryDirectory() as tmp:
        cfg, port = write_config(Path(tmp), targets)
        counter = EchoCounter(set(addrs))
        try:
            with running(start_pingr(cfg)) as proc:
                wait_healthy(port, proc)
                return _measure(proc.pid, counter, warmup, seconds)
        finally:
            counter.close()


def main(rounds: int = 3, seconds: float = 90, big_seconds: float = 30) -> dict:
    heading(f"Anchor: pingr vs simplemonitor {VERSION}, loopback ICMP targets at 10 s, "
            f"{rounds} alternated rounds (100 targets: {seconds:.0f} s windows; 1,000: "
            f"{big_seconds:.0f} s)")
    ensure_simplemonitor()
    # Not 127.0.x.y, which `python -m bench icmp` pings (another engineer's run on this shared
    # machine would add to the count).
    big = [a.replace("127.0.", "127.79.", 1) for a in addresses(1000)]
    small = big[:100]
    res: dict[str, list] = {"sm100": [], "p100": [], "sm1000": [], "p1000": []}
    for _ in range(rounds):
        res["sm100"].append(run_simplemonitor(small, 20, seconds))
        res["p100"].append(run_pingr(small, 20, seconds))
        res["sm1000"].append(run_simplemonitor(big, 30, big_seconds))
        res["p1000"].append(run_pingr(big, 30, big_seconds))

    def med(key: str, field: str) -> float:
        return median(r[field] for r in res[key])

    for n, sm, p in (("100", "sm100", "p100"), ("1,000", "sm1000", "p1000")):
        period_sm = int(n.replace(",", "")) / (med(sm, "probes") / med(sm, "seconds"))
        period_p = int(n.replace(",", "")) / (med(p, "probes") / med(p, "seconds"))
        row(f"{n} targets: simplemonitor CPU per 1,000 probes",
            f"{med(sm, 'cpu_per_1000'):.2f} s ({med(sm, 'probes'):.0f} probes/window, "
            f"mean period {period_sm:.1f} s, {med(sm, 'share') * 100:.1f} % of a core)")
        row(f"{n} targets: pingr CPU per 1,000 probes",
            f"{med(p, 'cpu_per_1000'):.2f} s ({med(p, 'probes'):.0f} probes/window, "
            f"mean period {period_p:.1f} s, {med(p, 'share') * 100:.1f} % of a core, "
            f"{med(p, 'repeated'):.0f} stalled sends repeated)")
        row(f"{n} targets: CPU per probe, pingr / simplemonitor",
            f"{med(p, 'cpu_per_1000') / med(sm, 'cpu_per_1000'):.2f}x"
            + ("  (goal <= 1.0x)" if n == "100" else ""))
        row(f"{n} targets: steady RSS simplemonitor / pingr",
            f"{med(sm, 'rss') / 2**20:.1f} / {med(p, 'rss') / 2**20:.1f} MiB = "
            f"{med(p, 'rss') / med(sm, 'rss'):.2f}x" + ("  (goal <= 1.0x)" if n == "100" else ""))
    per_sm = (med("sm1000", "rss") - med("sm100", "rss")) / 900
    per_p = (med("p1000", "rss") - med("p100", "rss")) / 900
    row("RSS per extra target (100 -> 1,000), simplemonitor",
        f"{per_sm / 1024:.1f} KiB")
    row("RSS per extra target (100 -> 1,000), pingr",
        f"{per_p / 1024:.1f} KiB = {per_p / per_sm:.2f}x  (goal <= 6 KiB)")
    for key in res:
        row(f"per round {key}: CPU s/1,000 probes | RSS MiB",
            ", ".join(f"{r['cpu_per_1000']:.2f}" for r in res[key]) + " | "
            + ", ".join(f"{r['rss'] / 2**20:.1f}" for r in res[key]))
    return res


if __name__ == "__main__":
    main()
