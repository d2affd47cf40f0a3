"""The probe registry: target kind name -> Kind. A new kind is one module and one line here."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from pingr.configbase import TargetBase
from pingr.probes import dns, heartbeat, http, icmp, tcp, tls
from pingr.probes.kind import Kind

KINDS: dict[str, Kind] = {k.name: k for k in (
    icmp.KIND,
    http.KIND,
    tcp.KIND,
    heartbeat.KIND,
    dns.KIND,
    tls.KIND,
)}

#: The config model of one target: the kinds' models, told apart by `type`.
TargetSpec = Annotated[Union[tuple(k.spec for k in KINDS.values())],  # noqa: UP007
                       Field(discriminator="type")]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(TargetSpec)


def parse_spec(data: dict[str, Any]) -> TargetBase:
    """Validate a target dict (from YAML, the API or the database) into its kind's model."""
    return _ADAPTER.validate_python(data)
