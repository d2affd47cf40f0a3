"""The `fleet:` section of pingr.yaml (off by default) and the broker connection it uses."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from pingr.configbase import CHECK_ID, Duration, Size, Strict
from pingr.mqtt.config import MqttConfig, MqttTlsConfig

#: Every fleet target carries this tag: `when: fleet_down` and `{tags: [fleet]}` select them.
FLEET_TAG = "fleet"
#: `Target.source` of the fleet's targets (sites, mirrored alerts, shared checks, the uplink).
FLEET_SOURCE = "fleet"

_NODE_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TOPIC_BAD = re.compile(r"[+#\x00]")


def valid_node_id(value: str) -> bool:
    """Node ids are topic levels and Home Assistant object ids: letters, digits, '_', '-'."""
    return bool(_NODE_OK.match(value))


class FleetBrokerConfig(Strict):
    """The fleet's own broker connection, when it is not the `mqtt:` section's broker."""

    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: MqttTlsConfig = Field(default_factory=MqttTlsConfig)
    keepalive: Duration = Field(30, ge=5, le=3600)
    reconnect_min: Duration = Field(1, ge=0.1, le=600)
    reconnect_max: Duration = Field(60, ge=1, le=3600)


class FleetConfig(Strict):
    """The `fleet:` section: several appliances, one picture, alarms that agree."""

    enabled: bool = False
    node_id: str | None = Field(None, description="default: mqtt.node_id (the host name)")
    name: str | None = Field(None, max_length=100, description="shown to the others")
    prefix: str = "pingr-fleet"
    broker: FleetBrokerConfig | None = Field(
        None, description="default: the host, port, credentials and TLS of `mqtt:`")
    interval: Duration = Field(30, ge=0.5, le=3600)
    offline_after: Duration | None = Field(None, ge=1.5, le=86400,
                                           description="default: 3 × interval")
    peers: list[str] = Field(default_factory=list, max_length=10_000)
    quorum: int = Field(2, ge=1, le=1000)
    quorums: dict[str, int] = Field(default_factory=dict)
    mirror: bool = True
    uplink_check: bool = True
    uplink_min_targets: int = Field(2, ge=1, le=10_000)
    max_message: Size = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_nodes: int = Field(5000, ge=1, le=100_000)

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str | None) -> str | None:
        if value is not None and not valid_node_id(value):
            raise ValueError(f"invalid node_id {value!r}: use letters, digits, '_' and '-' "
                             "only (at most 64)")
        return value

    @field_validator("peers")
    @classmethod
    def _peers(cls, values: list[str]) -> list[str]:
        for value in values:
            if not valid_node_id(value):
                raise ValueError(f"invalid peer {value!r}: node ids use letters, digits, '_' "
                                 "and '-' only (at most 64)")
        return values

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip().strip("/")
        if not value or _TOPIC_BAD.search(value):
            raise ValueError(f"invalid prefix {value!r}: must be non-empty without '+', '#'")
        return value

    @field_validator("quorums")
    @classmethod
    def _quorums(cls, values: dict[str, int]) -> dict[str, int]:
        for check, quorum in values.items():
            if not CHECK_ID.match(check):
                raise ValueError(f"invalid check id {check!r}: letters, digits, '_', '-', '.'")
            if not 1 <= quorum <= 1000:
                raise ValueError(f"quorum of {check!r} must be between 1 and 1000")
        return values

    @model_validator(mode="after")
    def _timing(self) -> FleetConfig:
        if self.offline_after is None:
            self.offline_after = 3 * self.interval
        elif self.offline_after < 3 * self.interval:
            # A node hears its own state back every interval; it must notice that its own link
            # is gone before it could blame a peer (see pingr/fleet/view.py, "is it me?").
            raise ValueError(f"offline_after ({self.offline_after:g}s) must be at least 3 × "
                             f"interval ({3 * self.interval:g}s)")
        return self

    def quorum_of(self, check: str) -> int:
        return self.quorums.get(check, self.quorum)


def node_of(fleet: FleetConfig, mqtt: MqttConfig) -> str:
    """This appliance's node id in the fleet."""
    return fleet.node_id or mqtt.node_id


def connection(fleet: FleetConfig, mqtt: MqttConfig) -> MqttConfig:
    """The broker connection of the fleet: its own client (its own last will) to `fleet.broker`,
    or to the broker of `mqtt:` with the same credentials and TLS."""
    node = node_of(fleet, mqtt)
    src: FleetBrokerConfig | MqttConfig = fleet.broker if fleet.broker is not None else mqtt
    return MqttConfig(
        enabled=True, host=src.host, port=src.port, username=src.username,
        password=src.password, tls=src.tls, client_id=f"pingr-fleet-{node}", node_id=node,
        base_topic=f"{fleet.prefix}/{node}", discovery=False, keepalive=src.keepalive,
        reconnect_min=src.reconnect_min, reconnect_max=src.reconnect_max)
