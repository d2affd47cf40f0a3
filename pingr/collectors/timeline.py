"""What changed about a container between two looks at it: state, health, a restart loop."""

from __future__ import annotations

from dataclasses import dataclass

from pingr.collectors.containers import ContainerInfo

#: kind -> the event type it is told as (Maintenant's names)
EVENT_TYPES = {"state": "container.state_changed", "health": "container.health_changed",
               "restart_loop": "container.restart_alert"}


@dataclass(frozen=True)
class Transition:
    """One change of one container (`ts` epoch ms, when the collector saw it)."""

    name: str
    container_id: str
    ts: int
    kind: str  # state, health, restart_loop
    old: str | None
    new: str | None
    exit_code: int | None = None
    detail: str | None = None

    @property
    def event_type(self) -> str:
        return EVENT_TYPES[self.kind]


def transitions(old: ContainerInfo | None, new: ContainerInfo | None,
                now: int) -> list[Transition]:
    """The state and health changes from `old` to `new` (None: not there: created, removed)."""
    if old is None and new is None:
        return []
    ref = new if new is not None else old
    assert ref is not None
    out = []
    old_state = old.state if old is not None else None
    new_state = new.state if new is not None else "removed"
    restarted = (old is not None and new is not None and old.id == new.id
                 and new.restart_count > old.restart_count)
    if old_state != new_state or (restarted and old_state == new_state):
        code = new.exit_code if new is not None and new_state in ("exited", "dead",
                                                                  "restarting") else None
        detail = None
        if restarted:
            n = new.restart_count - old.restart_count  # type: ignore[union-attr]
            detail = f"restarted {n} time{'s' if n != 1 else ''} by its restart policy"
        out.append(Transition(ref.name, ref.id, now, "state", old_state, new_state, code,
                              detail))
    old_health = old.health if old is not None else None
    new_health = new.health if new is not None else None
    if new is not None and old_health != new_health and (old_health or new_health):
        detail = new.health_output if new_health == "unhealthy" else None
        out.append(Transition(ref.name, ref.id, now, "health", old_health, new_health,
                              detail=detail))
    return out
