"""What a probe kind module provides, as one record the registry lists."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pingr.configbase import TargetBase
from pingr.models import Result, Target
from pingr.probes.context import ProbeContext

Probe = Callable[[Target, ProbeContext], Awaitable[Result]]
#: Called with the kind's enabled targets before they are probed (at start, and when targets
#: are added); raises with a clear message when the kind cannot work on this machine.
Prepare = Callable[[ProbeContext, list[Target]], None]


@dataclass(frozen=True)
class Kind:
    """A target kind: its config model (with a `type` literal), its probe, its preparation."""

    spec: type[TargetBase]
    run: Probe
    prepare: Prepare | None = None
    name: str = field(init=False)

    def __post_init__(self) -> None:
        literal: Any = self.spec.model_fields["type"].annotation
        object.__setattr__(self, "name", literal.__args__[0])
