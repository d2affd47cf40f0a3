"""Config sections of the host and Docker collectors (thresholds, crash-loop rule)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, field_validator

from pingr.configbase import Duration, Strict

#: How long a breach must last before it alerts, unless a threshold says otherwise.
DEFAULT_FOR = 120.0


class Limit(Strict):
    """A numeric limit: failing once the value stays above `above` for `for`."""

    # `for` is a Python keyword, so the field is `for_` with `for` as its YAML/JSON name.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    above: float = Field(ge=0, le=1000)
    for_: Duration = Field(DEFAULT_FOR, alias="for", ge=0, le=86400)


class Switch(Strict):
    """An on/off condition (under-voltage): failing once it stays true for `for`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    enabled: bool = True
    for_: Duration = Field(DEFAULT_FOR, alias="for", ge=0, le=86400)


def _limit_shorthand(value: Any) -> Any:
    """`cpu: 90` means `cpu: {above: 90}`; `cpu: null` switches the threshold off."""
    if isinstance(value, bool):
        raise ValueError("expected a number such as 90, a mapping {above: 90, for: 2m}, or null")
    if isinstance(value, int | float):
        return {"above": value}
    return value


def _switch_shorthand(value: Any) -> Any:
    """`undervoltage: true` means `{enabled: true}`; false or null switch it off."""
    if value is False:
        return None
    if value is True:
        return {"enabled": True}
    return value


#: Host sampling with a limit to watch (seconds): how late a breach can be seen.
WATCH_INTERVAL = 5.0
#: Host sampling with none: one sample per minute bucket of the metrics history.
IDLE_INTERVAL = 60.0

LimitSetting = Annotated[Limit | None, BeforeValidator(_limit_shorthand)]
SwitchSetting = Annotated[Switch | None, BeforeValidator(_switch_shorthand)]


class ThresholdsConfig(Strict):
    """Host limits that become failing targets (system:cpu, system:disk:/, pi:temperature, ...).

    Each is a number (`cpu: 90`), a mapping (`cpu: {above: 90, for: 5m}`), or null (off,
    the default).
    """

    # Off unless configured: every target listing (API, MQTT entities, metrics) would otherwise
    # grow by these on every install. pingr.example.yaml shows the suggested values.
    cpu: LimitSetting = None
    memory: LimitSetting = None
    disk: LimitSetting = None
    temperature: LimitSetting = None
    undervoltage: SwitchSetting = None
    mounts: list[str] = Field(default_factory=lambda: ["/"])
    #: How often host metrics are sampled; unset: every WATCH_INTERVAL while a limit is set,
    #: else every IDLE_INTERVAL (once per minute of history: an idle Pi is not woken for more).
    interval: Duration | None = Field(None, ge=0.2, le=3600)

    def sample_interval(self) -> float:
        """The interval in force: the configured one, else by whether a limit is watched."""
        if self.interval is not None:
            return float(self.interval)
        watching = any(v is not None for v in (self.cpu, self.memory, self.disk,
                                                self.temperature, self.undervoltage))
        return WATCH_INTERVAL if watching else IDLE_INTERVAL

    @field_validator("cpu", "memory", "disk")
    @classmethod
    def _percent(cls, value: Limit | None) -> Limit | None:
        if value is not None and not 0 < value.above <= 100:
            raise ValueError(f"a percentage between 0 and 100 is expected, got {value.above:g}")
        return value

    @field_validator("temperature")
    @classmethod
    def _celsius(cls, value: Limit | None) -> Limit | None:
        if value is not None and not 20 <= value.above <= 150:
            raise ValueError(f"a temperature between 20 and 150 °C expected, got {value.above:g}")
        return value

    @field_validator("mounts")
    @classmethod
    def _mounts(cls, value: list[str]) -> list[str]:
        for mount in value:
            if not mount.startswith("/"):
                raise ValueError(f"mount {mount!r} must be an absolute path such as /")
        return list(dict.fromkeys(value))


class CrashLoopConfig(Strict):
    """A container restarting `restarts` times within `window` is in a crash loop."""

    restarts: int = Field(3, ge=1, le=1000)
    window: Duration = Field(300.0, gt=0, le=86400)
