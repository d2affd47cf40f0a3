"""What this node makes of the fleet (pure: no I/O; messages, local states and time in,
findings for the alert engine out).

Every verdict becomes a target of the same alert engine, fed as collector findings
(pingr/collectors/source.py), with the tag `fleet`:

    fleet:site:<node>     a peer is offline: its last will (or clean stop) says so, or
                          nothing came from it for `offline_after`
    fleet:alerts:<node>   a peer's own alerts, mirrored (`mirror: true`): its targets that
                          are down there, its uplink, a stale monitor
    fleet:check:<id>      a shared check: down when at least `quorum` of the nodes that check
                          it see it down (all of them, when fewer can vote)
    fleet:uplink          "is it me?": every network target of this node fails at once while
                          a peer sees its own fine (or the broker is gone too): one alert for
                          the uplink instead of one per target, which are held as unreachable
    fleet:broker          this node's own link: its own state has not come back from the
                          broker for `offline_after`; meanwhile no peer is declared offline
                          (when the link is ours to blame, the peers are unknown, not down)

A node hears its own state back from the broker every `interval`; that echo is how it knows
its link works end to end, before it would blame anybody else.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import Field, ValidationError

from pingr.collectors.source import SYNTHETIC_INTERVAL, Findings
from pingr.configbase import TargetBase
from pingr.fleet.config import FLEET_SOURCE, FLEET_TAG, FleetConfig, valid_node_id
from pingr.fleet.wire import STATE, STATUS, NodeState, parse
from pingr.models import Result, Target
from pingr.monitor import PAUSED, PENDING, TargetState

log = logging.getLogger(__name__)

UPLINK_ID = "fleet:uplink"
BROKER_ID = "fleet:broker"
#: Ways a message is dropped (counted, shown by GET /api/v1/fleet).
DROP_REASONS = ("oversized", "malformed", "untrusted", "foreign", "too_many_nodes",
                "out_of_order", "duplicate_node")
#: Kinds of target whose failures say something about this node's uplink (a heartbeat that
#: does not arrive, or the machine's own CPU, do not).
NOT_NETWORK = frozenset({"heartbeat"})
_MAX_ERROR = 400
_MAX_LOGGED = 200


class FleetTarget(TargetBase):
    """The spec of a fleet verdict's target (not a user-facing target kind)."""

    probed: ClassVar[bool] = False
    type: Literal["fleet"]
    interval_seconds: int = Field(SYNTHETIC_INTERVAL, ge=1, le=86400)
    # The fleet decides when a condition holds (offline_after, quorum): one failing result is
    # already a fact.
    failure_threshold: int = Field(1, ge=1, le=1000)


def fleet_target(target_id: str) -> Target:
    spec = FleetTarget(type="fleet", name=target_id[:100], tags=[FLEET_TAG])
    return Target(pk=0, id=target_id, spec=spec, source=FLEET_SOURCE)


def site_id(node: str) -> str:
    return f"fleet:site:{node}"


def alerts_id(node: str) -> str:
    return f"fleet:alerts:{node}"


def check_id(check: str) -> str:
    return f"fleet:check:{check}"


def network_target(target: Target) -> bool:
    """A local target whose failures can mean "my uplink is down"."""
    return (target.source != FLEET_SOURCE and target.probed and target.enabled
            and target.spec.type not in NOT_NETWORK)


@dataclass
class Peer:
    """Another node, as heard through the broker."""

    node: str
    expected: bool = False  # listed in fleet.peers
    status: str | None = None  # its status topic: online / offline (None: not heard)
    state: NodeState | None = None
    heard: float | None = None  # our clock when its last message arrived
    boot: str | None = None
    seq: int = -1

    @property
    def label(self) -> str:
        name = self.state.name if self.state is not None else ""
        return name or self.node


@dataclass
class Verdict:
    """A check's consensus right now."""

    check: str
    down: bool
    quorum: int
    voters: list[str]
    down_from: list[str]


@dataclass
class Counters:
    received: int = 0
    accepted: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))


class FleetView:
    """This node's picture of the fleet and the verdicts it feeds to the alert engine."""

    def __init__(self, config: FleetConfig, node: str, boot: str, *,
                 clock: Callable[[], float], clock_ms: Callable[[], int]) -> None:
        self.config = config
        self.node = node
        self.boot = boot
        self.clock = clock
        self.clock_ms = clock_ms
        self.prefix = config.prefix + "/"
        self.offline_after = float(config.offline_after or 3 * config.interval)
        #: The echo of our own state is due every interval; this late, our link is in doubt.
        self.echo_due = 2 * config.interval
        self.peers: dict[str, Peer] = {p: Peer(p, expected=True) for p in config.peers
                                       if p != node}
        self.counters = Counters()
        self.started = clock()
        #: When our own state last came back from the broker (None: not yet), and what we
        #: sent that has not come back yet (seq -> when).
        self.echo: float | None = None
        self._unechoed: dict[int, float] = {}
        self.link_ok = False
        self.link_ok_since: float | None = None
        #: Local votes on shared checks (check -> True down / False up), this node's
        #: network-target summary, and the uplink verdict.
        self.votes: dict[str, bool] = {}
        self.local_checks: set[str] = set()
        self.all_failing = False
        self.network_count = 0
        self.uplink: str | None = None  # why this node's uplink is down, or None
        self.targets: dict[str, Target] = {}
        self._fed: dict[str, tuple[bool, str | None]] = {}
        self._dirty_nodes: set[str] = set(self.peers)
        self._dirty_checks: set[str] = set()
        self._dirty_self = True
        self._removed = False
        self._logged: set[tuple[str, str]] = set()
        #: Linked for offline_after at least once: every peer had its chance to be heard.
        self.settled = False
        #: Peers by the time we last heard them, oldest first: a tick looks only at those
        #: that may have gone silent, not at a thousand that spoke a moment ago.
        self._by_heard: OrderedDict[str, None] = OrderedDict()

    # ------------------------------------------------------------------ messages

    def receive(self, topic: str, payload: str) -> None:
        """One message from the broker (already within max_message bytes)."""
        self.counters.received += 1
        if not topic.startswith(self.prefix):
            self._drop("foreign", topic)
            return
        parts = topic[len(self.prefix):].split("/")
        if len(parts) != 2 or parts[1] not in (STATE, STATUS) or not valid_node_id(parts[0]):
            self._drop("foreign", topic)
            return
        node, kind = parts
        if node == self.node:
            self._own(kind, payload)
            return
        if self.config.peers and node not in self.peers:
            self._drop("untrusted", topic, f"{node} is not in fleet.peers")
            return
        peer = self.peers.get(node)
        if payload == "":
            # A retained message cleared: the node was retired from the fleet.
            if peer is not None:
                self._forget(peer, kind)
            self.counters.accepted += 1
            return
        if peer is None and len(self.peers) >= self.config.max_nodes:
            self._drop("too_many_nodes", topic, f"already {len(self.peers)} nodes")
            return
        # A new peer is created only once its message proved valid.
        if kind == STATUS:
            if payload not in ("online", "offline"):
                self._drop("malformed", topic, "status must be online or offline")
                return
            peer = peer or self._peer(node)
            peer.status = payload
            self._heard(peer)
        else:
            try:
                state = parse(payload)
            except ValidationError as exc:
                self._drop("malformed", topic, _first_error(exc))
                return
            if state.node != node:
                self._drop("malformed", topic, f"says it is {state.node!r}")
                return
            peer = peer or self._peer(node)
            if peer.boot == state.boot and state.seq < peer.seq:
                self._drop("out_of_order", topic)
                return
            newer = peer.boot != state.boot or state.seq > peer.seq
            if newer and peer.state is not None and peer.status == "offline":
                # A fresh state after its last will: it is back (never on first sight, when
                # the retained state and the retained last will come in either order).
                peer.status = "online"
            before = peer.state
            peer.state, peer.boot, peer.seq = state, state.boot, state.seq
            self._heard(peer)
            if before is not None and before.c != state.c:
                self._dirty_checks.update(before.c)
            self._dirty_checks.update(state.c)
        self.counters.accepted += 1
        self._dirty_nodes.add(node)
        self._dirty_self = True  # peers are part of the uplink verdict

    def oversized(self, topic: str, size: int) -> None:
        self.counters.received += 1
        self._drop("oversized", topic, f"{size} bytes > max_message {self.config.max_message}")

    def _own(self, kind: str, payload: str) -> None:
        if kind == STATUS or payload == "":
            self.counters.accepted += 1
            return
        try:
            state = parse(payload)
        except ValidationError as exc:
            self._drop("malformed", f"{self.prefix}{self.node}/{kind}", _first_error(exc))
            return
        if state.boot == self.boot:
            self.counters.accepted += 1
            self.echo = self.clock()
            for seq in [s for s in self._unechoed if s <= state.seq]:
                del self._unechoed[seq]
            self._dirty_self = True
        elif self.echo is not None:
            # Our own state came back before; this one is from another process: two
            # appliances were given the same node id and overwrite each other's state.
            self._drop("duplicate_node", f"{self.prefix}{self.node}/state",
                       f"another appliance (version {state.ver or '?'}) publishes as node "
                       f"{self.node!r}: give each its own fleet.node_id", level=logging.ERROR)
        else:
            self.counters.accepted += 1  # our previous run's retained state

    def _heard(self, peer: Peer) -> None:
        peer.heard = self.clock()
        self._by_heard.pop(peer.node, None)
        self._by_heard[peer.node] = None

    def _peer(self, node: str) -> Peer:
        peer = self.peers[node] = Peer(node)
        return peer

    def _forget(self, peer: Peer, kind: str) -> None:
        if kind == STATUS:
            peer.status = None
        else:
            if peer.state is not None:
                self._dirty_checks.update(peer.state.c)
            peer.state, peer.boot, peer.seq = None, None, -1
        if peer.expected or peer.state is not None or peer.status is not None:
            self._dirty_nodes.add(peer.node)
            return
        del self.peers[peer.node]
        self._by_heard.pop(peer.node, None)
        for tid in (site_id(peer.node), alerts_id(peer.node)):
            self._remove(tid)
        log.info("fleet: node %s was retired (its retained messages were cleared)", peer.node)

    def _drop(self, reason: str, topic: str, detail: str = "", level: int = logging.WARNING
              ) -> None:
        self.counters.dropped[reason] += 1
        key = (reason, topic)
        if key in self._logged:
            return
        if len(self._logged) < _MAX_LOGGED:
            self._logged.add(key)
        log.log(level, "fleet: dropped a message on %s (%s%s); further ones are only counted",
                topic[:200], reason.replace("_", " "), f": {detail}" if detail else "")

    def sent(self, seq: int) -> None:
        """We published our state `seq`: it should come back within echo_due."""
        self._unechoed[seq] = self.clock()
        if len(self._unechoed) > 64:  # a long outage: keep the oldest time, drop the middle
            oldest = min(self._unechoed.values())
            del self._unechoed[next(iter(self._unechoed))]
            self._unechoed[next(iter(self._unechoed))] = oldest

    # ------------------------------------------------------------------ local side

    def local(self, states: Iterable[TargetState]) -> None:
        """Take this node's own targets: its votes on shared checks and the uplink verdict."""
        states = [s for s in states if s.target.source != FLEET_SOURCE]
        network = [s for s in states if network_target(s.target)]
        self.network_count = len(network)
        self.all_failing = bool(network) and all(s.failures > 0 for s in network)
        uplink = self.uplink_reason(states)
        if uplink != self.uplink:
            (log.warning if uplink else log.info)(
                "fleet: %s", f"this node's UPLINK is down: {uplink}" if uplink
                else "this node's uplink is fine again")
            self.uplink = uplink
            self._dirty_self = True
        votes: dict[str, list[bool]] = {}
        checks = set()
        for s in states:
            check = s.target.spec.check
            if check is None or not s.target.enabled:
                continue
            checks.add(check)
            if s.status in (PENDING, PAUSED):
                continue
            votes.setdefault(check, []).append(s.failures >= s.target.spec.failure_threshold)
        # A node whose own uplink is down has no opinion about anything behind it.
        mine = {} if self.uplink else {c: all(v) for c, v in votes.items()}
        if mine != self.votes or checks != self.local_checks:
            self._dirty_checks.update(set(mine) | set(self.votes) | checks | self.local_checks)
            self.votes, self.local_checks = mine, checks

    def uplink_reason(self, states: Iterable[TargetState]) -> str | None:
        """Is it me? Why this node's uplink is down right now, or None.

        Every network target fails at once (at least `uplink_min_targets` of them) and a peer
        that is online sees its own targets fine, or our broker link is gone as well.
        """
        network = [s for s in states if network_target(s.target)]
        if (not self.config.uplink_check or len(network) < self.config.uplink_min_targets
                or not all(s.failures > 0 for s in network)):
            return None
        fine = [p.label for p in self.peers.values()
                if self.online(p) and p.state is not None and not p.state.f
                and p.state.up == "ok"]
        if fine:
            shown = ", ".join(sorted(fine)[:5]) + (" …" if len(fine) > 5 else "")
            return (f"all {len(network)} targets fail from here while {shown} "
                    f"{'sees' if len(fine) == 1 else 'see'} theirs")
        if not self.link_ok and self.echo is not None:
            return f"all {len(network)} targets fail from here and the fleet broker is gone too"
        return None

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        """Once a second or so: our link by its echo, peers that went silent."""
        now = self.clock()
        # Judged by what we sent, not by the time since the last echo: a loop that stalled
        # (a busy Pi) sent nothing meanwhile and has nothing to blame on the link.
        waiting = min(self._unechoed.values(), default=None)
        ok = self.echo is not None and (waiting is None or now - waiting <= self.echo_due)
        if ok != self.link_ok:
            self.link_ok = ok
            self.link_ok_since = now if ok else None
            if ok:
                log.info("fleet: linked (our state comes back from the broker)")
            else:
                log.warning("fleet: our state did not come back from the broker for %.0f s: "
                            "the other nodes' state is unknown until it does", now - (
                                self.echo if self.echo is not None else self.started))
            self._dirty_self = True
            self._dirty_nodes.update(self.peers)
        if not self.link_ok:
            self._dirty_self = True  # the broker verdict grows into an alert
            return
        if not self.settled and now - (self.link_ok_since or now) > self.offline_after:
            # Every peer had its chance to be heard: checks nobody mentions can go now.
            self.settled = True
            self._dirty_checks.update(t[len("fleet:check:"):] for t in self.targets
                                      if t.startswith("fleet:check:"))
            self._dirty_nodes.update(p.node for p in self.peers.values() if p.heard is None)
        for node in self._by_heard:
            peer = self.peers[node]
            assert peer.heard is not None
            if now - peer.heard <= self.offline_after:
                break  # everyone after it spoke more recently still
            if self._fed.get(site_id(node), (None,))[0] is not False and self._silent(peer):
                self._dirty_nodes.add(node)

    def online(self, peer: Peer) -> bool:
        """Online as far as we can tell (False also while we cannot tell)."""
        if not self.link_ok or peer.heard is None or peer.status == "offline":
            return False
        return not self._silent(peer)

    def _silent(self, peer: Peer) -> bool:
        """Nothing from it for offline_after, while our own state kept coming back after it
        should have sent its next one (so the silence is its, not our link's)."""
        assert peer.heard is not None
        return (self.clock() - peer.heard > self.offline_after and self.echo is not None
                and self.echo - peer.heard > self.echo_due)

    # ------------------------------------------------------------------ verdicts

    def site(self, peer: Peer) -> tuple[bool, str | None] | None:
        """(up, why not) of a peer; None while it cannot be told (our own link is down)."""
        if not self.link_ok:
            return None
        label = peer.label
        if peer.status == "offline":
            return False, (f"site {label} offline: it left the broker (its last will, or it "
                           "was stopped)")
        if peer.heard is None:
            if self.clock() - (self.link_ok_since or 0) < self.offline_after:
                return None
            return False, f"site {label} offline: never heard from it"
        if self._silent(peer):
            return False, (f"site {label} offline: no update for more than "
                           f"{self.offline_after:g} s")
        return True, None

    def mirror(self, peer: Peer) -> tuple[bool, str | None] | None:
        """(fine, what is wrong) of a peer's own alerts; None: nothing known or it is offline
        (what it said last stands)."""
        state = peer.state
        if state is None or not self.online(peer):
            return None
        reasons = []
        if state.stale:
            reasons.append("its monitor is stale")
        elif not state.ok:
            reasons.append("the appliance is unhealthy")
        if state.up == "down":
            held = sum(1 for code, _ in state.t.values() if code == "r")
            reasons.append(f"its uplink is down ({held} targets unreachable from there)")
        alerts = state.alerts()
        if alerts:
            shown = ", ".join(alerts[:10]) + (f" and {len(alerts) - 10} more"
                                              if len(alerts) > 10 else "")
            reasons.append(f"{shown} down")
        if not reasons:
            return True, None
        return False, f"{peer.label}: " + "; ".join(reasons)

    def consensus(self, check: str) -> Verdict | None:
        """The fleet's verdict on a shared check; None when nobody can vote on it."""
        voters: list[str] = []
        down: list[str] = []
        if check in self.votes:
            voters.append(self.node)
            if self.votes[check]:
                down.append(self.node)
        for peer in self.peers.values():
            state = peer.state
            if state is None or check not in state.c or not self.online(peer):
                continue
            voters.append(peer.node)
            if state.c[check]:
                down.append(peer.node)
        if not voters:
            return None
        quorum = self.config.quorum_of(check)
        return Verdict(check, len(down) >= min(quorum, len(voters)), quorum, voters, down)

    def mentioned(self, check: str) -> bool:
        return check in self.local_checks or any(
            p.state is not None and check in p.state.c for p in self.peers.values())

    def checks(self) -> list[str]:
        found = set(self.local_checks)
        for peer in self.peers.values():
            if peer.state is not None:
                found.update(peer.state.c)
        return sorted(found)

    def broker(self) -> tuple[bool, str | None] | None:
        if self.link_ok:
            return True, None
        since = self.echo if self.echo is not None else self.started
        if self.clock() - since <= self.offline_after:
            return None
        return False, ("cannot reach the fleet broker: this node's own state has not come back "
                       f"for more than {self.offline_after:g} s; the other sites are unknown")

    # ------------------------------------------------------------------ findings

    def adopt(self, target_ids: Iterable[str]) -> Findings:
        """Targets of alerts that were open at the last stop: they join the engine at once
        (it adopts the open alerts, so nothing alerts twice), and are judged when known."""
        findings = Findings(FLEET_SOURCE, partial=True)
        for tid in target_ids:
            if not tid.startswith("fleet:"):
                continue
            parts = tid.split(":", 2)
            if parts[1] in ("site", "alerts") and len(parts) == 3:
                node = parts[2]
                if (not valid_node_id(node) or node == self.node
                        or (self.config.peers and node not in self.config.peers)
                        or (parts[1] == "alerts" and not self.config.mirror)):
                    continue  # never judged again: the engine resolves it as an orphan
                if node not in self.peers:
                    self.peers[node] = Peer(node)
                self._dirty_nodes.add(node)
            elif parts[1] == "check" and len(parts) == 3:
                self._dirty_checks.add(parts[2])
            elif tid not in (UPLINK_ID, BROKER_ID):
                continue
            findings.add(self._target(tid))
        return findings

    def findings(self) -> Findings | None:
        """Results for every verdict that changed since the last call (None: nothing did)."""
        out = Findings(FLEET_SOURCE, partial=True)
        if self._dirty_self:
            self._dirty_self = False
            self._feed(out, BROKER_ID, self.broker())
            up = self.uplink
            self._feed(out, UPLINK_ID, (up is None, f"this node's uplink is down: {up}"
                                        if up else None))
        nodes, self._dirty_nodes = self._dirty_nodes, set()
        for node in sorted(nodes):
            peer = self.peers.get(node)
            if peer is None:
                continue
            self._feed(out, site_id(node), self.site(peer))
            if self.config.mirror:
                self._feed(out, alerts_id(node), self.mirror(peer))
            if peer.state is not None:
                self._dirty_checks.update(peer.state.c)
        checks, self._dirty_checks = self._dirty_checks, set()
        for check in sorted(checks):
            verdict = self.consensus(check)
            if verdict is None:
                if not self.mentioned(check) and self.settled:
                    self._remove(check_id(check))
                continue
            error = None
            if verdict.down:
                error = (f"{check} is down from {', '.join(verdict.down_from)} "
                         f"({len(verdict.down_from)} of {len(verdict.voters)} nodes checking "
                         f"it; quorum {verdict.quorum})")
            self._feed(out, check_id(check), (not verdict.down, error))
        if self._removed:
            self._removed = False
            out.partial = False
            out.targets = {**self.targets}
        if not out.results and not out.targets:
            return None
        return out

    def _target(self, tid: str) -> Target:
        target = self.targets.get(tid)
        if target is None:
            target = self.targets[tid] = fleet_target(tid)
        return target

    def _feed(self, out: Findings, tid: str, verdict: tuple[bool, str | None] | None) -> None:
        if verdict is None:
            if tid not in self.targets and (tid.startswith("fleet:site:") or tid == BROKER_ID):
                out.add(self._target(tid))  # known, not judged yet: shown as pending
            return
        ok, error = verdict
        error = error[:_MAX_ERROR] if error else None
        target = self._target(tid)
        if self._fed.get(tid) == (ok, error):
            return
        self._fed[tid] = (ok, error)
        out.add(target, Result(tid, self.clock_ms(), ok, error=error))

    def _remove(self, tid: str) -> None:
        if self.targets.pop(tid, None) is not None:
            self._fed.pop(tid, None)
            self._removed = True


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "invalid"))
    return (f"{where}: {msg}" if where else msg)[:200]

