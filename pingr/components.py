"""Optional parts (outputs, collectors, notifiers, MQTT …) that plug into the App."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pingr.app import App


class Component(Protocol):
    """A part the App starts after state is restored and before probing, and stops after."""

    name: str
    #: FastAPI routers mounted under /api/v1 (each guards itself with `require(scope)`).
    routers: list[Any]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


#: Factories called with the App once at construction; each returns a Component, or None when
#: its part is switched off in the config. A new part is one module and one line here.
COMPONENTS: list[Callable[[App], Component | None]] = []

from pingr.metrics import metrics_component  # noqa: E402  (after COMPONENTS: no cycle)
from pingr.mqtt import mqtt_component  # noqa: E402

COMPONENTS += [metrics_component, mqtt_component]

from pingr.outputs.manager import create as outputs_component  # noqa: E402

COMPONENTS.append(outputs_component)

from pingr.collectors.docker import docker_component  # noqa: E402
from pingr.collectors.thresholds import host_component  # noqa: E402

COMPONENTS += [host_component, docker_component]

from pingr import events, heartbeat, notify, silence, webhooks  # noqa: E402

COMPONENTS += [silence.component, events.component, heartbeat.component, notify.component,
               webhooks.component]
