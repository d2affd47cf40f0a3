"""The fleet's messages: one compact, retained state per node, validated with hard bounds.

Topics, under the fleet's prefix:

    <prefix>/<node>/state    retained JSON, NodeState below: on change and every `interval`
    <prefix>/<node>/status   retained `online`; `offline` as the node's last will (and on a
                             clean stop)

A state costs about 20 bytes per target (`"NAS":["u",0]`), so a node with 20 targets sends
some 500 bytes. Unknown keys are ignored (a newer pingr may add some); everything known is
checked strictly (types, lengths, counts) and a message that fails is dropped and counted.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from pingr.configbase import CHECK_ID

#: The one format version this pingr speaks.
VERSION = 1
#: At most this many targets and checks per node state (bounded memory per node).
MAX_TARGETS = 2000
MAX_CHECKS = 500

STATE, STATUS = "state", "status"

#: Status codes in a node's state: the monitor's statuses, with "down" split by what the
#: node's own alert-status makes of it.
CODES: dict[str, str] = {
    "up": "u",
    "down": "d",            # an open, unacknowledged alert there
    "acknowledged": "a",
    "silenced": "s",
    "unreachable": "r",     # behind a parent that is down, or held (shared check, uplink)
    "pending": "p",
    "paused": "x",
}
NAMES = {code: name for name, code in CODES.items()}

TargetName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
CheckId = Annotated[str, StringConstraints(pattern=CHECK_ID.pattern)]
Code = Literal["u", "d", "a", "s", "r", "p", "x"]
Count = Annotated[int, Field(ge=0, le=1_000_000)]


class NodeState(BaseModel):
    """One node's state as it publishes it (and as every other node validates it)."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    v: Literal[1]
    node: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    name: str = Field("", max_length=100)
    ver: str = Field("", max_length=40)
    #: Random per process start: tells a restart from a message that arrived out of order,
    #: and two appliances that were given the same node id.
    boot: str = Field(min_length=1, max_length=32)
    seq: int = Field(ge=0)
    ts: int = Field(ge=0, description="the node's wall clock, ms (shown, never compared)")
    #: The appliance itself works (probes finish on time, not stale).
    ok: bool = True
    stale: bool = False
    #: The node's "is it me?" verdict: its own uplink is down.
    up: Literal["ok", "down"] = "ok"
    #: Every one of its network targets fails right now (peers use it for their own verdict).
    f: bool = False
    #: Target name -> [status code, consecutive failures].
    t: dict[TargetName, tuple[Code, Count]] = Field(default_factory=dict,
                                                   max_length=MAX_TARGETS)
    #: Shared check id -> 1 (sees it down) or 0 (sees it up); absent: no opinion.
    c: dict[CheckId, Literal[0, 1]] = Field(default_factory=dict, max_length=MAX_CHECKS)
    #: How many targets it has (more than `t` holds when it had to leave some out).
    n: Count = 0

    def failing(self) -> list[tuple[str, str, int]]:
        """(name, status, failures) of its targets that are not up, pending or paused."""
        return [(name, NAMES[code], failures) for name, (code, failures) in self.t.items()
                if code in "dasr"]

    def alerts(self) -> list[str]:
        """Names of its targets with an open, unacknowledged alert."""
        return [name for name, (code, _) in self.t.items() if code == "d"]


def encode(state: dict[str, Any]) -> str:
    """A node state as compact JSON."""
    return json.dumps(state, separators=(",", ":"), ensure_ascii=False)


def parse(payload: str) -> NodeState:
    """Validate one state message (raises pydantic's ValidationError)."""
    return NodeState.model_validate_json(payload)
