"""Building blocks of pingr.yaml's models: strict sections, durations, sizes, target fields."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from pingr.timeutil import format_duration, parse_duration

#: Seconds, written in config as `30s`, `5m`, `7d` (a bare number means seconds).
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]

_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def parse_size(value: Any) -> int:
    """Bytes for `256MB`, `1.5G`, `512k` or a bare number of bytes (units are binary)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 256MB or 1GB")
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("kmgib")
    unit = text[len(number):]
    try:
        return int(float(number) * _SIZE_UNITS[unit])
    except (KeyError, ValueError):
        raise ValueError(
            f"invalid size {value!r}: use a number with a unit: 64MB, 256MB, 1GB"
        ) from None


#: Bytes, written in config as `256MB`, `1GB` (a bare number means bytes).
Size = Annotated[int, BeforeValidator(parse_size)]


class BadValue:
    """A value that failed before field validation; its field reports `message`."""

    def __init__(self, message: str) -> None:
        self.message = message


#: Fields that YAML may spell shorter (`interval: 30s` for `interval_seconds: 30`).
FIELD_SPELLINGS = {"interval_seconds": "interval", "timeout_ms": "timeout"}


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def located(loc: tuple[Any, ...], message: str, value: Any = None) -> ValidationError:
    """A validation error at `loc` below the model raising it, so the loader can show line:col."""
    return ValidationError.from_exception_data("pingr", [InitErrorDetails(
        type=PydanticCustomError("pingr", message), loc=loc, input=value)])


def check_host(value: str) -> str:
    """An IP address or a host name, trimmed."""
    value = value.strip()
    if not value or " " in value or "/" in value:
        raise ValueError(f"invalid host {value!r}: give an IP address or a host name")
    return value


#: A shared check's id (`check:` of a target; the fleet's consensus groups targets by it).
CHECK_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


#: One frozenset per combination of fields a spec was given (see TargetBase.model_post_init).
_GIVEN: dict[frozenset[str], frozenset[str]] = {}


class TargetBase(Strict):
    """Fields every target kind shares (the Pingu draft's target model).

    Each kind subclasses it in its own module under pingr/probes/ with a `type` literal.
    A spec is a value: frozen; a changed target gets a new spec.
    """

    model_config = ConfigDict(frozen=True)

    #: False for kinds a collector feeds (system, pi, container): the scheduler does not probe
    #: them one by one, they keep no raw history and they do not count for staleness.
    probed: ClassVar[bool] = True
    name: str = Field(min_length=1, max_length=100)
    interval_seconds: int = Field(30, ge=1, le=86400)
    timeout_ms: int = Field(None, ge=50, le=120_000, description="default: 2000 or the interval")
    enabled: bool = True
    failure_threshold: int = Field(3, ge=1, le=1000)
    recovery_threshold: int = Field(1, ge=1, le=1000)
    tags: list[str] = Field(default_factory=list)
    depends_on: str | None = None
    #: Checked from several appliances of a fleet: down only when `fleet.quorum` of them see it
    #: down (pingr/fleet). Without fleet mode it is an ordinary target.
    check: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _durations(cls, data: Any) -> Any:
        """Accept `interval: 30s` / `timeout: 2s` as friendlier spellings in YAML.

        A bad spelling becomes an error of that one field (the other fields of the target are
        still checked and reported with it), never a silent 1 s for `0s` or `0.1ms`."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for short, long, scale in (("interval", "interval_seconds", 1),
                                   ("timeout", "timeout_ms", 1000)):
            if short in data:
                if long in data:
                    data[long] = BadValue(f"give either {short} or {long}, not both")
                    data.pop(short)
                    continue
                raw = data.pop(short)
                try:
                    value = parse_duration(raw)
                except ValueError as exc:
                    data[long] = BadValue(str(exc))
                    continue
                if short == "interval" and value < 1:
                    data[long] = BadValue(f"interval must be at least 1s, got {raw!r}")
                    continue
                data[long] = round(value * scale)  # a timeout under 50 ms: the field says so
        return data

    @field_validator("interval_seconds", "timeout_ms", mode="before")
    @classmethod
    def _bad_spelling(cls, value: Any) -> Any:
        if isinstance(value, BadValue):
            raise ValueError(value.message)
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("name must not be blank")
        return value

    @field_validator("check")
    @classmethod
    def _check(cls, value: str | None) -> str | None:
        if value is not None and not CHECK_ID.match(value):
            raise ValueError(f"invalid check id {value!r}: use letters, digits, '_', '-' and "
                             "'.' only (at most 64)")
        return value

    def model_post_init(self, context: Any, /) -> None:
        """Share the set of given field names between specs given the same fields.

        pydantic keeps a set per instance (`model_fields_set`): 728 bytes for five names, over
        half of an ICMP target's spec (~1.3 KiB); a thousand targets given alike hold one.
        A frozenset, as nothing may change a frozen spec's fields afterwards."""
        given = frozenset(self.__pydantic_fields_set__)
        object.__setattr__(self, "__pydantic_fields_set__", _GIVEN.setdefault(given, given))

    def model_copy(self, *, update: dict[str, Any] | None = None,  # type: ignore[override]
                   deep: bool = False) -> TargetBase:
        """A spec with changed fields is validated again (pydantic's copy would write them
        unchecked into the shared set of given fields)."""
        if update:
            return type(self).model_validate({**self.model_dump(), **update})
        return super().model_copy(deep=deep)

    @model_validator(mode="after")
    def _timeout_fits(self) -> TargetBase:
        if self.timeout_ms is None:
            # The default follows the interval; set once, while the spec is being made.
            object.__setattr__(self, "timeout_ms", min(2000, self.interval_seconds * 1000))
        if self.timeout_ms > self.interval_seconds * 1000:
            raise ValueError(
                f"the timeout ({format_duration(self.timeout_ms / 1000)}) must not exceed "
                f"the interval ({format_duration(self.interval_seconds)})"
            )
        return self
