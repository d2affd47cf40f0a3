"""Fleet scale: 50, 200 and 1,000 simulated nodes × 20 targets, one `pingr run` subscribing.

For each fleet size, on loopback only: a fresh Mosquitto; the simulated fleet (bench/fleetsim.py:
every node publishes its retained state every 30 s, with a random phase, and at once when a
target changes; a target changes with probability 1/1000 per probe and comes back after about
a minute); one real `pingr run` with fleet mode on; and, as the reference measured in the same
window, a bare paho subscriber that only json-decodes every state (the least any subscriber
must do). Printed per size:

- CPU share (CPU seconds / wall seconds) of pingr, of the reference and of the broker;
- pingr's RSS, against the same pingr with no fleet at all (size 0, measured first);
- the delay from a remote change to pingr's local alert: a node's target goes down, and
  pingr's SSE stream says `target.down` for `fleet:alerts:sim-K` (the broker's own delivery
  delay, as the reference subscriber saw it, alongside); and a node's connection cut without a
  goodbye until `target.down` for `fleet:site:sim-K` (the broker sends the last will);
- with `mesh` (200, 500, 1,000 nodes), every simulated node subscribes to the whole fleet as
  real members without `peers` do, and the broker's CPU share shows what fanning every state
  out to every node costs.

    python -m bench fleet            (9 minutes on a quiet 2-core machine)
    python -m bench fleet --quick    (50 and 200 nodes, mesh 200, 20 s windows)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from bench.common import free_port, heading, median, row, wait_port

KEY = "bench_fleet_admin_key_0123456789abcdef"
#: A fleet not all online in pingr's picture after this long is reported as such.
JOIN_LIMIT = 300.0
ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")

REFERENCE = r"""
import json, sys, time
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
port, watch = int(sys.argv[1]), set(sys.argv[2].split(","))
count = 0
def on_connect(c, u, f, rc, p):
    c.subscribe([("pingr-fleet/+/state", 1), ("pingr-fleet/+/status", 1)])
def on_message(c, u, m):
    global count
    count += 1
    if m.topic.endswith("/state"):
        json.loads(m.payload)
    if m.topic in watch:
        print(f"got {m.topic} {time.monotonic():.6f}", flush=True)
c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-reference")
c.on_connect, c.on_message = on_connect, on_message
c.connect("127.0.0.1", port)
c.loop_forever()
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Figures:
    nodes: int
    mesh: bool
    join_s: float = float("nan")
    joined: int = 0
    window_s: float = 0.0
    messages: int = 0
    cpu_pingr: float = 0.0
    cpu_reference: float = 0.0
    cpu_broker: float = 0.0
    cpu_sim: float = 0.0
    rss: float = 0.0
    alert_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    offline_ms: list[float] = field(default_factory=list)


class Lines:
    """A child's stdout, line by line, on the loop."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            await self.lines.put(line.decode().strip())

    async def expect(self, prefix: str, timeout: float, after: float = 0.0) -> str:
        """The next line starting with `prefix` (whose time field, the last, is >= after)."""
        deadline = time.monotonic() + timeout
        while True:
            line = await asyncio.wait_for(self.lines.get(), max(0.01, deadline - time.monotonic()))
            if line.startswith(prefix) and float(line.split()[-1]) >= after:
                return line


class Events:
    """pingr's SSE stream: (monotonic arrival, event type, target name)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.seen: list[tuple[float, str, str]] = []
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=None, headers={"x-api-key": KEY}) as client:
            async with client.stream("GET", f"{self.base}/api/v1/events",
                                     params={"types": "target.down,target.up"}) as resp:
                kind = None
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind:
                        data = json.loads(line[6:])
                        self.seen.append((time.monotonic(), kind,
                                          (data.get("target") or {}).get("name", "")))

    async def wait(self, kind: str, name: str, after: float, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, k, n in self.seen:
                if k == kind and n == name and at >= after:
                    return at
            await asyncio.sleep(0.002)
        raise TimeoutError(f"no {kind} for {name} within {timeout}s")


async def spawn(argv: list[str], log: Path, stdin: bool = False,
                stdout: bool = False) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if stdout else log.open("ab"),
        stderr=log.open("ab"))


async def stop(proc: asyncio.subprocess.Process | None) -> None:
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 20)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def run_size(nodes: int, seconds: float, probes: int, mesh: bool, work: Path) -> Figures:
    fig = Figures(nodes, mesh)
    work.mkdir(parents=True, exist_ok=True)
    port, api = free_port(), free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
                    "persistence false\nmax_queued_messages 100000\nlog_dest stderr\n"
                    "log_type error\n")
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    broker = sim = ref = pingr = None
    events = None
    try:
        broker = await spawn([mosquitto, "-c", str(conf)], work / "broker.log")
        wait_port(port)
        config = {
            "host": "127.0.0.1", "port": api, "log_level": "warning",
            "auth": {"api_key": KEY, "rate_limit_per_minute": 100_000},
            "storage": {"path": str(work / "pingr.db")}, "docker": {"enabled": False},
            "fleet": {"enabled": nodes > 0, "node_id": "hq",
                      "broker": {"host": "127.0.0.1", "port": port}},
            "targets": [{"name": "broker port", "type": "tcp", "host": "127.0.0.1",
                         "port": port, "interval": "30s"}],
        }
        (work / "pingr.yaml").write_text(yaml.safe_dump(config))
        watch = ",".join(f"pingr-fleet/sim-{k}/state" for k in range(probes))
        if nodes:
            ref = await spawn([sys.executable, "-c", REFERENCE, str(port), watch],
                              work / "reference.log", stdout=True)
        pingr_bin = ROOT / ".venv" / "bin" / "pingr"
        pingr = await spawn([str(pingr_bin) if pingr_bin.exists() else sys.executable,
                             *([] if pingr_bin.exists() else ["-m", "pingr"]), "run",
                             "--config", str(work / "pingr.yaml")], work / "pingr.log")
        wait_port(api, 60)
        base = f"http://127.0.0.1:{api}"
        client = httpx.AsyncClient(base_url=base, headers={"x-api-key": KEY}, timeout=30)
        events = Events(base)
        ref_lines = Lines(ref) if ref is not None else None
        started = time.monotonic()
        if nodes:
            sim = await spawn([sys.executable, "-m", "bench.fleetsim", "--port", str(port),
                               "--nodes", str(nodes), *(["--mesh"] if mesh else [])],
                              work / "sim.log", stdin=True, stdout=True)
            sim_lines = Lines(sim)
            join_cpu = {"broker": cpu_seconds(broker.pid), "sim": cpu_seconds(sim.pid)}
            while not (await sim_lines.lines.get()).startswith("ready"):
                pass
            # Every node online in pingr's picture: the retained burst is absorbed.
            while True:
                view = (await client.get("/api/v1/fleet")).json()
                online = sum(n["online"] for n in view["nodes"] if not n["self"])
                if online >= nodes:
                    break
                if time.monotonic() - started > JOIN_LIMIT:
                    # A figure too: say how far it got and who was busy meanwhile.
                    spent = time.monotonic() - started
                    fig.joined = online
                    fig.cpu_broker = (cpu_seconds(broker.pid) - join_cpu["broker"]) / spent
                    fig.cpu_sim = (cpu_seconds(sim.pid) - join_cpu["sim"]) / spent
                    return fig
                await asyncio.sleep(0.5)
            fig.join_s = time.monotonic() - started
            fig.joined = online
        await asyncio.sleep(5)  # settle: the first heartbeats after the burst
        pids = {"pingr": pingr.pid, "broker": broker.pid, **({"ref": ref.pid} if ref else {}),
                **({"sim": sim.pid} if sim else {})}
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        received0 = ((await client.get("/api/v1/fleet")).json().get("messages") or {}).get(
            "received", 0)
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        fig.window_s = time.monotonic() - t0
        after = {k: cpu_seconds(p) for k, p in pids.items()}
        fig.cpu_pingr = (after["pingr"] - before["pingr"]) / fig.window_s
        fig.cpu_broker = (after["broker"] - before["broker"]) / fig.window_s
        if ref:
            fig.cpu_reference = (after["ref"] - before["ref"]) / fig.window_s
        if sim:
            fig.cpu_sim = (after["sim"] - before["sim"]) / fig.window_s
        fig.rss = rss_mib(pingr.pid)
        fig.messages = ((await client.get("/api/v1/fleet")).json().get("messages") or {}).get(
            "received", 0) - received0
        if nodes and sim is not None and ref_lines is not None:
            assert sim.stdin is not None
            for k in range(probes):
                name = f"fleet:alerts:sim-{k}"
                sim.stdin.write(f"down {k}\n".encode())
                sent = float((await sim_lines.expect(f"sent {k} ", 30)).split()[2])
                got = await ref_lines.expect(f"got pingr-fleet/sim-{k}/state", 30, sent)
                at = await events.wait("target.down", name, sent, 30)
                fig.alert_ms.append((at - sent) * 1000)
                fig.delivery_ms.append((float(got.split()[2]) - sent) * 1000)
                sim.stdin.write(f"up {k}\n".encode())
                up_sent = float((await sim_lines.expect(f"sent {k} ", 30)).split()[2])
                await events.wait("target.up", name, up_sent, 30)
                await asyncio.sleep(0.2)
            for k in range(min(probes, 5)):
                name = f"fleet:site:sim-{k}"
                sim.stdin.write(f"kill {k}\n".encode())
                cut = float((await sim_lines.expect(f"killed {k} ", 30)).split()[2])
                at = await events.wait("target.down", name, cut, 30)
                fig.offline_ms.append((at - cut) * 1000)
                sim.stdin.write(f"revive {k}\n".encode())
                await sim_lines.expect(f"revived {k} ", 30)
                await events.wait("target.up", name, cut, 30)
        await client.aclose()
    finally:
        if events is not None:
            events.task.cancel()
        if sim is not None and sim.stdin is not None:
            with contextlib.suppress(Exception):
                sim.stdin.close()
        for proc in (sim, pingr, ref, broker):
            await stop(proc)
    return fig


def report(f: Figures, base: Figures | None) -> None:
    if f.nodes == 0:
        row("no fleet (the reference for RSS)",
            f"pingr CPU {f.cpu_pingr * 100:.2f} %, RSS {f.rss:.1f} MiB")
        return
    label = f"{f.nodes:,} nodes × 20 targets{' (mesh)' if f.mesh else ''}"
    if f.joined < f.nodes:
        row(label, f"NOT JOINED: {f.joined:,} of {f.nodes:,} online in pingr's picture after "
                   f"{JOIN_LIMIT:g} s; meanwhile CPU broker {f.cpu_broker * 100:.1f} %, "
                   f"simulated fleet {f.cpu_sim * 100:.1f} %")
        return
    ratio = f.cpu_pingr / f.cpu_reference if f.cpu_reference else float("nan")
    row(label, f"{f.messages / f.window_s:.1f} msg/s to pingr; all online {f.join_s:.1f} s "
               "after the start")
    row("  CPU pingr / bare subscriber (same window)",
        f"{f.cpu_pingr * 100:.2f} % / {f.cpu_reference * 100:.2f} % = {ratio:.1f}×")
    row("  CPU broker (simulated fleet)",
        f"{f.cpu_broker * 100:.2f} % ({f.cpu_sim * 100:.2f} %)")
    rss = f"{f.rss:.1f} MiB"
    if base is not None:
        rss += f" (+{f.rss - base.rss:.1f} MiB over no fleet)"
    row("  RSS pingr", rss)
    if f.alert_ms:
        row("  remote change -> local alert, median / max",
            f"{median(f.alert_ms):.0f} / {max(f.alert_ms):.0f} ms "
            f"(broker delivery alone {median(f.delivery_ms):.1f} ms; n={len(f.alert_ms)})")
    if f.offline_ms:
        row("  connection cut -> site offline (last will)",
            f"median {median(f.offline_ms):.0f} ms, max {max(f.offline_ms):.0f} ms "
            f"(n={len(f.offline_ms)})")


def main(sizes: tuple[int, ...] = (50, 200, 1000), seconds: float = 60, probes: int = 10,
         mesh: tuple[int, ...] = (200, 500, 1000)) -> None:
    heading(f"fleet: simulated nodes × 20 targets, {seconds:g} s windows, one pingr subscribing")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    figs: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="pingr-bench-fleet-") as tmp:
        plan = [(0, False), *((n, False) for n in sizes), *((n, True) for n in mesh)]
        for nodes, is_mesh in plan:
            fig = asyncio.run(run_size(nodes, seconds if nodes else min(seconds, 20), probes,
                                       is_mesh, Path(tmp) / f"{nodes}{'m' if is_mesh else ''}"))
            figs.append(fig)
            report(fig, figs[0] if figs[0].nodes == 0 else None)


if __name__ == "__main__":
    main()
