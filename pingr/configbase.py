"""Building blocks for config sections, shared by pingr.config and the optional parts' sections."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from pingr.timeutil import format_duration, parse_duration

#: Seconds, written in config as `30s`, `5m`, `7d` (a bare number means seconds).
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
