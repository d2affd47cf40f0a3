"""The `mqtt:` section of pingr.yaml (off by default)."""

from __future__ import annotations

import re
import socket

from pydantic import Field, field_validator, model_validator

from pingr.configbase import Duration, Strict

#: Home Assistant accepts [a-zA-Z0-9_-] in the node_id and object_id parts of discovery topics.
_ID_OK = re.compile(r"^[A-Za-z0-9_-]+$")
_TOPIC_BAD = re.compile(r"[+#\x00]")


def default_node_id() -> str:
    """The hostname, made safe for topics and Home Assistant object ids."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0]) or "pingr"


class MqttTlsConfig(Strict):
    """TLS to the broker: CA file, optional client certificate."""

    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = Field(False, description="skip the broker host name check (self-signed)")

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("give cert_file and key_file together (client certificate)")
        return self


class MqttConfig(Strict):
    """The `mqtt:` section (off by default)."""

    enabled: bool = False
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: MqttTlsConfig = Field(default_factory=MqttTlsConfig)
    client_id: str | None = Field(None, min_length=1, max_length=128)
    node_id: str = Field(default_factory=default_node_id, max_length=64)
    base_topic: str | None = None
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    keepalive: Duration = Field(30, ge=5, le=3600)
    reconnect_min: Duration = Field(1, ge=0.1, le=600)
    reconnect_max: Duration = Field(60, ge=1, le=3600)
    latency_refresh: Duration = Field(300, ge=0, le=86400)
    #: State topics go out when the situation changes; the counters in them (failures, the
    #: last error) at most this often.
    counter_interval: Duration = Field(30, ge=0.1, le=3600)
    configuration_url: str | None = None

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not _ID_OK.match(value):
            raise ValueError(f"invalid node_id {value!r}: use letters, digits, '_' and '-' only")
        return value

    @field_validator("base_topic", "discovery_prefix")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().strip("/")
        if not value or _TOPIC_BAD.search(value):
            raise ValueError(f"invalid topic {value!r}: must be non-empty without '+', '#'")
        return value

    @field_validator("configuration_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"invalid configuration_url {value!r}: expected http(s)://host…")
        return value

    @model_validator(mode="after")
    def _delays(self) -> MqttConfig:
        if self.reconnect_min > self.reconnect_max:
            raise ValueError("reconnect_min must not exceed reconnect_max")
        return self

    @property
    def base(self) -> str:
        """The topic everything of this appliance lives under."""
        return self.base_topic or f"pingr/{self.node_id}"
