"""The fleet part: this appliance's state out to the broker, the others' in, verdicts to the App.

The App calls, in its flow:

    fleet.update(change)    in the fan-out, after MQTT: our state is republished (coalesced to
                            one message per loop turn)
    fleet.observe()         after a local result changed something: our votes on shared
                            checks and the "is it me?" verdict; new verdicts go to `submit`
    fleet.held(target)      the monitor asks, when a target reaches its threshold, whether its
                            failure is the fleet's to decide (a shared check, our uplink)

Messages from the broker arrive on the loop (pingr.mqtt.link hops them there) and once a
second `tick` (a scheduler job) looks at the clock; both end in `submit(findings, reconsider)`,
which the App turns into monitor steps outside the fan-out.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

from pingr import __version__
from pingr.collectors.source import Findings
from pingr.fleet.config import FLEET_SOURCE, FleetConfig, connection, node_of
from pingr.fleet.view import FleetView, network_target
from pingr.fleet.wire import CODES, MAX_CHECKS, MAX_TARGETS, STATE, STATUS, VERSION, encode
from pingr.models import Target
from pingr.monitor import DOWN, Change, Snapshot, TargetState
from pingr.mqtt.config import MqttConfig
from pingr.mqtt.link import Link
from pingr.timeutil import from_ms, now_ms, rfc3339

log = logging.getLogger(__name__)

#: How often the clock is looked at (timeouts, the heartbeat) at most.
TICK_SECONDS = 1.0


class Fleet:
    """This appliance as a member of a fleet of appliances sharing one MQTT broker."""

    def __init__(self, config: FleetConfig, mqtt: MqttConfig, *,
                 states: Callable[[], Iterator[TargetState]],
                 snapshot: Callable[[], Snapshot],
                 submit: Callable[[Findings | None, bool], None],
                 clock: Callable[[], float] = time.monotonic,
                 clock_ms: Callable[[], int] = now_ms) -> None:
        self.config = config
        self.node = node_of(config, mqtt)
        self.name = config.name or self.node
        self.states = states
        self.snapshot = snapshot
        self.submit = submit
        self.clock = clock
        self.clock_ms = clock_ms
        self.boot = secrets.token_hex(6)
        self.view = FleetView(config, self.node, self.boot, clock=clock, clock_ms=clock_ms)
        self.connection = connection(config, mqtt)
        prefix = config.prefix
        self.state_topic = f"{prefix}/{self.node}/{STATE}"
        # With `peers`, only their topics (and our own, for the echo): the broker then sends
        # each node what it needs, not the whole fleet (see the README's scaling section).
        nodes = [self.node, *config.peers] if config.peers else ["+"]
        self.link = Link(self.connection,
                         subscriptions=[f"{prefix}/{n}/{kind}" for n in dict.fromkeys(nodes)
                                        for kind in (STATE, STATUS)],
                         on_message=self._message, on_connected=self._connected,
                         label="fleet", max_payload=config.max_message,
                         on_oversized=self._oversized)
        self.seq = 0
        self.published_at = 0.0
        self.published_ms: int | None = None
        self._flush: asyncio.Handle | None = None
        self._verdicts: asyncio.Handle | None = None
        self._uplink_down = False
        self._warned_size = False

    @property
    def tick_seconds(self) -> float:
        return min(TICK_SECONDS, self.config.interval / 4)

    # ------------------------------------------------------------------ lifecycle

    def adopt(self, open_alert_targets: list[str]) -> Findings:
        """The targets of fleet alerts left open at the last stop, for the App to hand the
        engine before it resolves orphans (so nothing alerts twice across a restart)."""
        return self.view.adopt(open_alert_targets)

    def start(self) -> None:
        """Connect in the background (never waits for the broker)."""
        self.view.local(self.states())
        self._publish()
        self.link.start()
        log.info("fleet: node %r (%s) under %s/, offline after %gs without news, quorum %d",
                 self.node, self.name, self.config.prefix, self.view.offline_after,
                 self.config.quorum)

    async def stop(self) -> None:
        for handle in (self._flush, self._verdicts):
            if handle is not None:
                handle.cancel()
        await self.link.stop()

    # ------------------------------------------------------------------ the App's flow

    def update(self, change: Change) -> None:
        """A state change (the fan-out): republish our state once this loop turn is over.

        Changes of the fleet's own targets are left out (they are not part of our state).
        """
        if not (change.situation or change.targets) or self._flush is not None:
            return
        if change.events and all(e.target is not None and e.target.source == FLEET_SOURCE
                                 for e in change.events):
            return
        self._flush = asyncio.get_running_loop().call_soon(self._flushed)

    def observe(self) -> None:
        """Our own targets changed: votes, the uplink verdict, and what follows from them."""
        self.view.local(self.states())
        self._submit()

    def held(self, target: Target) -> str | None:
        """Why the fleet, not this target alone, decides whether it is down (or None)."""
        if target.source == FLEET_SOURCE:
            return None
        check = target.spec.check
        if check is not None:
            return (f"a shared check: fleet:check:{check} is down when "
                    f"{self.config.quorum_of(check)} nodes see it down")
        if network_target(target):
            return self.view.uplink_reason(
                [s for s in self.states() if s.target.source != FLEET_SOURCE])
        return None

    async def tick(self) -> None:
        """The scheduler's job: the heartbeat and everything that happens by time passing."""
        if self.clock() - self.published_at >= self.config.interval:
            self._publish()
        self.view.tick()
        self.view.local(self.states())
        self._submit()

    # ------------------------------------------------------------------ broker side

    def _message(self, topic: str, payload: str) -> None:
        self.view.receive(topic, payload)
        # Messages waiting on the loop (a burst: every retained state at connect) are all
        # read before the verdicts go to the engine, together.
        if self._verdicts is None:
            self._verdicts = asyncio.get_running_loop().call_soon(self._submit)

    def _oversized(self, topic: str, size: int) -> None:
        self.view.oversized(topic, size)

    def _connected(self) -> None:
        self._publish()

    def _flushed(self) -> None:
        self._flush = None
        self._publish()

    def _submit(self) -> None:
        self._verdicts = None
        findings = self.view.findings()
        down = self.view.uplink is not None
        reconsider = down and not self._uplink_down
        self._uplink_down = down
        if findings is not None or reconsider:
            self.submit(findings, reconsider)

    def _publish(self) -> None:
        """Our compact state, retained (the broker keeps the latest for newcomers)."""
        self.seq += 1
        self.published_at = self.clock()
        self.published_ms = self.clock_ms()
        payload = encode(self.state())
        if len(payload) > self.config.max_message and not self._warned_size:
            self._warned_size = True
            log.warning("fleet: our state is %d bytes, over max_message (%d): nodes with the "
                        "same limit drop it", len(payload), self.config.max_message)
        self.link.put(self.state_topic, payload)
        self.view.sent(self.seq)

    def state(self) -> dict[str, Any]:
        """This node's state as it goes to the broker (see pingr/fleet/wire.py)."""
        snap = self.snapshot()
        silenced, acked = set(snap.silenced), set(snap.acknowledged)
        view = self.view
        targets: dict[str, list[Any]] = {}
        local = [s for s in self.states() if s.target.source != FLEET_SOURCE]
        # Failing ones first, should a huge node have to leave some out.
        local.sort(key=lambda s: s.status == "up")
        for s in local[:MAX_TARGETS]:
            name = s.target.name
            status = s.status
            if status == DOWN:
                status = ("silenced" if name in silenced
                          else "acknowledged" if name in acked else DOWN)
            targets[name] = [CODES.get(status, "p"), s.failures]
        votes = dict(sorted(view.votes.items())[:MAX_CHECKS])
        return {
            "v": VERSION, "node": self.node, "name": self.name, "ver": __version__,
            "boot": self.boot, "seq": self.seq, "ts": self.published_ms,
            "ok": snap.healthy and not snap.stale, "stale": snap.stale,
            "up": "down" if view.uplink else "ok", "f": view.all_failing,
            "t": targets, "c": {c: int(v) for c, v in votes.items()}, "n": len(local),
        }

    # ------------------------------------------------------------------ the API

    def describe(self) -> dict[str, Any]:
        """What GET /api/v1/fleet shows: every node, every shared check, the counters."""
        view = self.view
        now = self.clock()
        nodes = [{
            "node": self.node, "name": self.name, "self": True, "online": view.link_ok,
            "status": "online" if view.link_ok else "unknown",
            "last_seen": (_iso(self.clock_ms() - (now - view.echo) * 1000)
                          if view.echo is not None else None),
            "version": __version__, "healthy": self.snapshot().healthy,
            "stale": self.snapshot().stale, "uplink": "down" if view.uplink else "ok",
            "uplink_reason": view.uplink,
            "targets": view.network_count,
            "failing": [{"name": s.target.name, "status": s.status, "failures": s.failures}
                        for s in self.states()
                        if s.target.source != FLEET_SOURCE and s.failures > 0][:100],
        }]
        for peer in sorted(view.peers.values(), key=lambda p: p.node):
            state = peer.state
            online = view.online(peer)
            nodes.append({
                "node": peer.node, "name": peer.label, "self": False, "online": online,
                "status": (peer.status or "unknown") if view.link_ok else "unknown",
                "last_seen": (_iso(self.clock_ms() - (now - peer.heard) * 1000)
                              if peer.heard is not None else None),
                "version": state.ver if state else None,
                "healthy": state.ok if state else None,
                "stale": state.stale if state else None,
                "uplink": state.up if state else None,
                "uplink_reason": None,
                "targets": (state.n or len(state.t)) if state else None,
                "failing": ([{"name": n, "status": st, "failures": f}
                             for n, st, f in state.failing()][:100] if state else []),
            })
        checks = []
        for check in view.checks():
            verdict = view.consensus(check)
            checks.append({
                "check": check, "target": f"fleet:check:{check}",
                "down": verdict.down if verdict else None,
                "quorum": self.config.quorum_of(check),
                "voters": verdict.voters if verdict else [],
                "down_from": verdict.down_from if verdict else [],
            })
        c = view.counters
        return {
            "enabled": True, "node": self.node, "name": self.name, "prefix": self.config.prefix,
            "broker": f"{self.connection.host}:{self.connection.port}",
            "connected": self.link.connected, "linked": view.link_ok,
            "interval_seconds": self.config.interval,
            "offline_after_seconds": view.offline_after,
            "quorum": self.config.quorum, "mirror": self.config.mirror,
            "nodes": nodes, "checks": checks,
            "messages": {"received": c.received, "accepted": c.accepted,
                         "dropped": dict(c.dropped)},
        }


def _iso(ms: float) -> str | None:
    return rfc3339(from_ms(int(ms)))
