"""Board profiles: pins of common relay HATs and light boards by channel name (pingr/boards/)."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml
from pydantic import Field, field_validator

from pingr.configbase import Strict


class Channel(Strict):
    """One named pin on a board."""

    pin: int = Field(ge=0, le=27)
    active_high: bool | None = None


class BoardProfile(Strict):
    """A board's channels, so a config can say `pin: ch1` instead of looking up BCM numbers."""

    name: str
    url: str | None = None
    active_high: bool = True
    channels: dict[str, Channel]

    @field_validator("channels", mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"pin": v} if isinstance(v, int) else v for k, v in value.items()}
        return value

    def model_post_init(self, _: Any) -> None:
        for channel in self.channels.values():
            if channel.active_high is None:
                channel.active_high = self.active_high


def _directory() -> Any:
    return resources.files("pingr").joinpath("boards")


@functools.cache
def board_names() -> tuple[str, ...]:
    """Names of the shipped profiles (file names without .yaml), sorted."""
    return tuple(sorted(p.name.removesuffix(".yaml") for p in _directory().iterdir()
                        if p.name.endswith(".yaml")))


@functools.cache
def load_board(name: str) -> BoardProfile:
    """The profile `name`; KeyError when there is none."""
    if name not in board_names():
        raise KeyError(name)
    text = _directory().joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return BoardProfile.model_validate(yaml.safe_load(text))
