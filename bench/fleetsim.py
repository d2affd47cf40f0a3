"""A simulated fleet: N nodes × T targets speaking pingr's fleet protocol to a broker on loopback.

    python -m bench.fleetsim --port 1883 --nodes 1000 [--targets 20] [--interval 30]
                             [--flip 0.001] [--mesh]

One process, one asyncio loop, one plain MQTT 3.1.1 connection per node (written here: a
thousand paho clients would be a thousand threads). Each node connects with its last will
(`offline`, retained, on <prefix>/<node>/status), says `online`, and publishes its retained
state (pingr/fleet/wire.py) every `interval` with a random phase, and at once when one of its
targets changes. A target changes with probability `flip` per probe (one probe per target per
interval) and comes back after a minute on average. `--mesh` makes every node subscribe to the
whole fleet too (what real members do), so the broker fans each state out to all of them.

Commands on stdin, one per line, answered on stdout with the monotonic time (the clock is
shared by every process of the machine) taken just before the message goes to the socket:

    down K | up K       node sim-K's first target goes down / up: `sent K <t>`
    kill K              node sim-K's connection is cut without a goodbye: `killed K <t>`
    revive K            it connects again: `revived K <t>`

Nodes 0-9 never change by themselves (they are the bench's probes). `ready <n>` is printed
once every node has connected and published.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import random
import struct
import sys
import time

PREFIX = "pingr-fleet"
PROBES = 10


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, will_topic: str, will: bytes, keepalive: int) -> bytes:
    # clean session, will flag, will QoS 1, will retain
    flags = 0x02 | 0x04 | 0x08 | 0x20
    body = (_str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _str(client_id)
            + _str(will_topic) + _str(will))
    return bytes([0x10]) + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, packet_id: int, retain: bool = True) -> bytes:
    body = _str(topic) + struct.pack("!H", packet_id) + payload
    return bytes([0x32 | (1 if retain else 0)]) + _varint(len(body)) + body  # QoS 1


def subscribe_packet(topic: str, packet_id: int) -> bytes:
    body = struct.pack("!H", packet_id) + _str(topic) + bytes([0])  # QoS 0 deliveries
    return bytes([0x82]) + _varint(len(body)) + body


class Discard(asyncio.Protocol):
    """A node's connection: waits for CONNACK, then throws away whatever the broker sends
    (acknowledgements; in mesh mode the whole fleet's states) without buffering it."""

    def __init__(self) -> None:
        self.acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if not self.acked.done():
            if data[:1] == b"\x20" and len(data) >= 4 and data[3] == 0:
                self.acked.set_result(None)
            else:
                self.acked.set_exception(RuntimeError(f"connection refused ({data[:4]!r})"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.acked.done():
            self.acked.set_exception(ConnectionError("closed before CONNACK"))


class Node:
    """One simulated appliance."""

    def __init__(self, index: int, targets: int, port: int, mesh: bool) -> None:
        self.index = index
        self.node = f"sim-{index}"
        self.port = port
        self.mesh = mesh
        self.boot = f"{random.getrandbits(40):x}"
        self.seq = 0
        self.pid = 0
        self.targets = {f"target-{i:02d}": "u" for i in range(targets)}
        self.transport: asyncio.Transport | None = None

    def state(self) -> bytes:
        self.seq += 1
        return json.dumps({
            "v": 1, "node": self.node, "name": f"Simulated site {self.index}",
            "ver": "sim", "boot": self.boot, "seq": self.seq, "ts": int(time.time() * 1000),
            "ok": True, "stale": False, "up": "ok", "f": False,
            "t": {name: [code, 3 if code == "d" else 0] for name, code in self.targets.items()},
            "c": {}, "n": len(self.targets)}, separators=(",", ":")).encode()

    async def connect(self) -> None:
        transport, protocol = await asyncio.get_running_loop().create_connection(
            Discard, "127.0.0.1", self.port)
        transport.write(connect_packet(f"sim-{self.index}-{self.boot}",
                                       f"{PREFIX}/{self.node}/status", b"offline", 60))
        await protocol.acked
        self.transport = transport
        if self.mesh:
            transport.write(subscribe_packet(f"{PREFIX}/+/state", self._id()))
        self.send(f"{PREFIX}/{self.node}/status", b"online")
        self.publish()

    def _id(self) -> int:
        self.pid = self.pid % 65535 + 1
        return self.pid

    def send(self, topic: str, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(publish_packet(topic, payload, self._id()))

    def publish(self) -> None:
        self.send(f"{PREFIX}/{self.node}/state", self.state())

    def kill(self) -> None:
        """Cut the connection without DISCONNECT: the broker sends our last will."""
        if self.transport is not None:
            self.transport.abort()
            self.transport = None


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--flip", type=float, default=0.001)
    parser.add_argument("--mesh", action="store_true")
    args = parser.parse_args()
    rng = random.Random(19)
    nodes = [Node(i, args.targets, args.port, args.mesh) for i in range(args.nodes)]
    # Appliances do not all boot in the same millisecond: connect over a few seconds.
    spread = min(5.0, args.nodes / 200)
    for node in nodes:
        await node.connect()
        if spread:
            await asyncio.sleep(spread / args.nodes)
    print(f"ready {len(nodes)}", flush=True)

    loop = asyncio.get_running_loop()
    now = time.monotonic()
    heap: list[tuple[float, int, str, str]] = [
        (now + rng.uniform(0, args.interval), i, "beat", "") for i in range(len(nodes))]
    rate = len(nodes) * args.targets * args.flip / args.interval  # changes per second
    if rate > 0 and len(nodes) > PROBES:
        heap.append((now + rng.expovariate(rate), -1, "flip", ""))
    heapq.heapify(heap)

    async def commands() -> None:
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().strip():
            verb, k = line.split()
            node = nodes[int(k)]
            # The time is taken before the write: the broker may deliver before it returns.
            at = time.monotonic()
            if verb in ("down", "up"):
                node.targets["target-00"] = "d" if verb == "down" else "u"
                node.publish()
                print(f"sent {k} {at:.6f}", flush=True)
            elif verb == "kill":
                node.kill()
                print(f"killed {k} {at:.6f}", flush=True)
            elif verb == "revive":
                await node.connect()
                print(f"revived {k} {at:.6f}", flush=True)

    cmd = loop.create_task(commands())
    while not cmd.done():
        when, i, kind, name = heap[0]
        wait = when - time.monotonic()
        if wait > 0:
            await asyncio.wait({cmd}, timeout=min(wait, 0.5))
            continue
        heapq.heappop(heap)
        if kind == "beat":
            nodes[i].publish()
            heapq.heappush(heap, (when + args.interval, i, "beat", ""))
        elif kind == "flip":
            node = nodes[rng.randrange(PROBES, len(nodes))]
            target = rng.choice(list(node.targets))
            if node.targets[target] == "u":
                node.targets[target] = "d"
                node.publish()
                # Back up after a minute on average.
                heapq.heappush(heap, (when + rng.expovariate(1 / 60), node.index, "back",
                                      target))
            heapq.heappush(heap, (when + rng.expovariate(rate), -1, "flip", ""))
        elif kind == "back":
            nodes[i].targets[name] = "u"
            nodes[i].publish()
    for node in nodes:
        node.kill()


if __name__ == "__main__":
    asyncio.run(main())
