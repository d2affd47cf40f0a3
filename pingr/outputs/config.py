"""The `hardware:` section of pingr.yaml: backend, board profile, pins, buttons, lamp test,
quiet hours, and the outputs (each kind's model: pingr.outputs.kinds)."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pingr.configbase import Duration, Strict, located
from pingr.outputs.boards import BoardProfile, board_names, load_board
from pingr.outputs.kinds import OutputConfig, parse_quiet_hours

#: BCM numbers of the 40-pin header's GPIO lines.
MAX_BCM = 27


def factory_names() -> tuple[str, ...]:
    """gpiozero's registered pin factories (lgpio, rpigpio, pigpio, native, mock)."""
    names = {e.name for e in entry_points(group="gpiozero_pin_factories")}
    return tuple(sorted(names | {"mock"}))


def pin_number(value: int | str) -> int | None:
    """17, "17", "GPIO17" or "BCM17" -> 17; None for a name (a board channel)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = value.strip().upper()
    for prefix in ("GPIO", "BCM"):
        text = text.removeprefix(prefix)
    return int(text) if text.isdigit() else None


class ButtonConfig(Strict):
    """A push button: a short press acknowledges, a long hold runs the lamp test."""

    name: str = Field("button", min_length=1, max_length=60)
    pin: int | str
    pull_up: bool = Field(True, description="true: button to GND, internal pull-up")
    bounce: Duration = Field(0.05, ge=0, le=1, description="presses shorter than this are noise")
    action: Literal["acknowledge", "lamp_test", "none"] = "acknowledge"
    hold_action: Literal["lamp_test", "acknowledge", "none"] = "lamp_test"
    hold_time: Duration = Field(2.0, ge=0.5, le=60)


class LampTestConfig(Strict):
    """Every lamp on for a moment, so a dead bulb is seen before it matters."""

    at_start: bool = True
    duration: Duration = Field(2.0, ge=0.05, le=60)
    chirp: Duration = Field(0.2, ge=0, le=5, description="audible outputs sound this long; 0 = not")


class HardwareConfig(Strict):
    """Physical alerting through gpiozero."""

    backend: str = Field("auto", description="auto, mock, or a gpiozero pin factory name "
                         "(lgpio, rpigpio, pigpio, native)")
    board: str | None = Field(None, description="a board profile: pins by channel name")
    quiet_hours: str | None = Field(None, description="HH:MM-HH:MM local time: audible "
                                    "outputs mute")
    lamp_test: LampTestConfig = Field(default_factory=LampTestConfig)
    outputs: list[OutputConfig] = Field(default_factory=list)  # type: ignore[valid-type]
    buttons: list[ButtonConfig] = Field(default_factory=list)

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        names = ("auto", *factory_names())
        if value not in names:
            raise ValueError(f"unknown backend {value!r}: use one of {', '.join(names)}")
        return value

    @field_validator("board")
    @classmethod
    def _board(cls, value: str | None) -> str | None:
        if value is not None and value not in board_names():
            raise ValueError(f"unknown board {value!r}: profiles are {', '.join(board_names())}")
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value is not None:
            parse_quiet_hours(value)
        return value

    @model_validator(mode="after")
    def _pins(self) -> HardwareConfig:
        board = load_board(self.board) if self.board else None
        used: dict[int, str] = {}
        names: set[str] = set()

        def resolve(raw: int | str, loc: tuple[Any, ...]) -> tuple[int, bool | None]:
            number = pin_number(raw)
            # A board's polarity applies to its own channels, named or given by number.
            on_board = [c for c in board.channels.values() if c.pin == number] if board else []
            default_high = on_board[0].active_high if on_board else None
            if number is None:
                channel = _channel(board, str(raw), loc)
                number, default_high = channel.pin, channel.active_high
            if not 0 <= number <= MAX_BCM:
                raise located(loc, f"unknown pin {raw!r}: GPIO pins are BCM 0-{MAX_BCM}", raw)
            where = _path(loc)
            if number in used:
                raise located(loc, f"pin {number} is already used by {used[number]}", raw)
            used[number] = where
            return number, default_high

        for i, out in enumerate(self.outputs):
            if out.name in names:
                raise located(("outputs", i, "name"), f"duplicate output name {out.name!r}")
            names.add(out.name)
            highs = set()
            resolved = {}
            for role, raw in out.raw_pins().items():
                resolved[role], high = resolve(raw, ("outputs", i, *out.pin_loc(role)))
                highs.add(high)
            out.set_pins(resolved)
            if out.active_high is None:
                highs.discard(None)
                out.active_high = highs.pop() if len(highs) == 1 else True
        buttons: set[str] = set()
        for i, button in enumerate(self.buttons):
            if button.name in buttons:
                raise located(("buttons", i, "name"), f"duplicate button name {button.name!r}")
            buttons.add(button.name)
            button.pin, _ = resolve(button.pin, ("buttons", i, "pin"))
        return self

    def pwm_pins(self) -> list[int]:
        """BCM pins driven with PWM: dimmable LEDs, RGB LEDs, tone buzzers."""
        return [pin for out in self.outputs for pin in out.pwm_pins()]

    def selector_targets(self) -> list[tuple[tuple[Any, ...], str]]:
        """(location, target name) of every target a selector names (checked by pingr.config)."""
        return [(("outputs", i, "when", "targets", j), name)
                for i, out in enumerate(self.outputs) if out.selector is not None
                for j, name in enumerate(out.selector.targets)]


def _channel(board: BoardProfile | None, name: str, loc: tuple[Any, ...]) -> Any:
    if board is None:
        raise located(loc, f"pin {name!r} is neither a BCM number nor usable as a channel name: "
                      "set `hardware.board` to a profile that names it", name)
    channel = board.channels.get(name)
    if channel is None:
        raise located(loc, f"board {board.name!r} has no channel {name!r}: it has "
                      f"{', '.join(board.channels)}", name)
    return channel


def _path(loc: tuple[Any, ...]) -> str:
    out = "hardware"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out
