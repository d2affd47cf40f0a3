"""The output kinds of `hardware.outputs`: one model each (relay, LED, buzzer, RGB LED, tower),
with the patterns, selectors, looks and quiet hours they are set with."""

from __future__ import annotations

import re
from datetime import time as dtime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from pingr.configbase import Duration, Strict, located

#: What can drive a single-channel output (besides a target selector).
WHEN = ("alert", "ok", "stale", "degraded", "healthy", "heartbeat", "fleet_down")
#: The states a tower or RGB LED shows, highest priority first.
STATES = ("stale", "unhealthy", "alert", "acknowledged", "degraded", "ok")
TOWER_COLORS = ("green", "amber", "red")
RGB_NAMES: dict[str, tuple[float, float, float]] = {
    "off": (0, 0, 0), "red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1),
    "amber": (1, 0.5, 0), "orange": (1, 0.3, 0), "yellow": (1, 1, 0), "white": (1, 1, 1),
    "cyan": (0, 1, 1), "magenta": (1, 0, 1), "purple": (0.5, 0, 1),
}
_NOTE = re.compile(r"^[A-G][#b]?[0-9]$")
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
_QUIET = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_quiet_hours(value: str) -> tuple[dtime, dtime]:
    """`22:00-07:00` -> (start, end); the range may cross midnight."""
    match = _QUIET.match(value)
    if not match:
        raise ValueError(f"invalid quiet_hours {value!r}: use HH:MM-HH:MM, e.g. 22:00-07:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    try:
        start, end = dtime(h1, m1), dtime(h2, m2)
    except ValueError:
        raise ValueError(f"invalid quiet_hours {value!r}: hours 0-23, minutes 0-59") from None
    if start == end:
        raise ValueError(f"quiet_hours {value!r} starts and ends at the same time")
    return start, end


def in_quiet_hours(span: tuple[dtime, dtime], now: dtime) -> bool:
    """True when local time `now` falls inside [start, end), wrapping past midnight."""
    start, end = span
    return start <= now < end if start < end else (now >= start or now < end)


def _yaml_bool_word(value: Any) -> Any:
    """YAML 1.1 turns bare on/off into True/False; give the words back."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class PatternConfig(Strict):
    """How an active output shows itself: steady, blink, pulse (PWM) or beep bursts."""

    type: Literal["steady", "blink", "pulse", "beep"] = "steady"
    on: Duration = Field(0.5, gt=0, le=3600, description="blink/beep: on time")
    off: Duration = Field(0.5, gt=0, le=3600, description="blink/beep: off time")
    count: int = Field(3, ge=1, le=1000, description="beep: beeps per burst")
    repeat: Duration | None = Field(None, gt=0, le=86400,
                                    description="beep: a burst starts every `repeat`; none = once")
    fade_in: Duration = Field(1.0, gt=0, le=60, description="pulse: rise time")
    fade_out: Duration = Field(1.0, gt=0, le=60, description="pulse: fall time")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"type": data}
        if isinstance(data, dict):
            # YAML 1.1 reads the bare keys `on:` and `off:` as booleans.
            return {_yaml_bool_word(k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _fields_fit_type(self) -> PatternConfig:
        allowed = {"steady": set(), "blink": {"on", "off"},
                   "beep": {"on", "off", "count", "repeat"},
                   "pulse": {"fade_in", "fade_out"}}[self.type]
        for extra in sorted(self.model_fields_set - allowed - {"type"}):
            raise located((extra,), f"{extra!r} does not apply to a {self.type} pattern")
        burst = self.count * (self.on + self.off)
        if self.type == "beep" and self.repeat is not None and self.repeat < burst:
            raise located(("repeat",), f"repeat ({self.repeat:g}s) is shorter than one burst of "
                          f"{self.count} beeps ({burst:g}s)")
        return self

    def key(self) -> tuple[Any, ...]:
        """Hashable identity: the same pattern keeps running instead of restarting."""
        return (self.type, self.on, self.off, self.count, self.repeat, self.fade_in, self.fade_out)


class SelectorConfig(Strict):
    """Drive an output from some targets only: any of these names, or any target with these tags."""

    targets: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> SelectorConfig:
        if not self.targets and not self.tags:
            raise ValueError("a selector needs `targets` or `tags`")
        return self

    def matches(self, name: str, tags: tuple[str, ...]) -> bool:
        return name in self.targets or any(t in self.tags for t in tags)


class LookConfig(Strict):
    """What a tower or RGB LED shows in one state: a colour and a pattern."""

    color: str
    pattern: PatternConfig = Field(default_factory=PatternConfig)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"color": data} if isinstance(data, str) else data


def _look(color: str, pattern: str = "steady") -> LookConfig:
    return LookConfig(color=color, pattern=PatternConfig(type=pattern))  # type: ignore[arg-type]


#: green = all up, amber = failures below threshold or acknowledged alerts, red = alert,
#: amber blinking = the monitor is stale or the appliance unhealthy.
DEFAULT_LOOKS = {
    "ok": _look("green"), "degraded": _look("amber"), "acknowledged": _look("amber"),
    "alert": _look("red"), "stale": _look("amber", "blink"), "unhealthy": _look("amber", "blink"),
}


class OutputBase(Strict):
    """What every output has: a name, a polarity, a safe state, a place in the lamp test.

    Each kind is its own model below; `OutputConfig` is their union, told apart by `type`.
    A setting that belongs to another kind gets the message in `_foreign` (in the user's
    words) instead of "unknown setting".
    """

    #: Shows every state itself (towers, RGB LEDs) instead of being driven by one condition.
    shows_states: ClassVar[bool] = False
    _foreign: ClassVar[dict[str, str]] = {}

    name: str = Field(min_length=1, max_length=60)
    active_high: bool | None = Field(None, description="false for active-low relay modules; "
                                     "default: the board profile's, else true")
    safe_state: Literal["off", "on"] = "off"
    lamp_test: bool = Field(True, description="take part in the lamp test")

    _safe_word = field_validator("safe_state", mode="before")(
        classmethod(lambda cls, v: _yaml_bool_word(v)))

    @model_validator(mode="before")
    @classmethod
    def _no_foreign(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in cls._foreign:
                    raise located((key,), cls._foreign[key])
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value or "/" in value:
            raise ValueError("name must not be blank or contain '/'")
        return value

    @property
    def kind(self) -> str:
        return self.type  # type: ignore[attr-defined,no-any-return]

    @property
    def is_audible(self) -> bool:
        return False

    @property
    def dimmable(self) -> bool:
        return False

    @property
    def uses_tone(self) -> bool:
        """Plays tones (PWM) rather than switching on and off."""
        return False

    @property
    def selector(self) -> SelectorConfig | None:
        """The targets/tags that drive it, when a selector does."""
        return None

    @property
    def own_quiet_hours(self) -> str | None:
        """Its own quiet hours setting (else hardware.quiet_hours applies)."""
        return None

    def raw_pins(self) -> dict[str, int | str]:
        """Role -> pin as written (BCM number, GPIOnn or a board channel name)."""
        raise NotImplementedError

    def pin_loc(self, role: str) -> tuple[str, ...]:
        """Where a role's pin is written, for located errors."""
        raise NotImplementedError

    def set_pins(self, resolved: dict[str, int]) -> None:
        """Store the BCM numbers the board profile resolved."""
        raise NotImplementedError

    def pin_map(self) -> dict[str, int]:
        """Role -> BCM pin, after the board profile resolved channel names."""
        return {role: int(p) for role, p in self.raw_pins().items()}

    def pwm_pins(self) -> list[int]:
        """BCM pins this output drives with PWM (dimming, tones)."""
        return list(self.pin_map().values()) if self.dimmable or self.uses_tone else []

    def _check_pattern(self, pattern: PatternConfig, loc: tuple[Any, ...]) -> None:
        if pattern.type == "pulse" and not self.dimmable:
            raise located(loc, f"a pulse needs PWM: a {self.kind} cannot fade"
                          + (" (set `pwm: true`)" if self.kind == "led" else ""))


class SingleOutput(OutputBase):
    """An output on one pin, driven by one condition (`when`) with a pattern."""

    pin: int | str | None = Field(None, description="BCM number, GPIOnn, or a board channel name")
    when: str | SelectorConfig | None = Field(
        None, description="alert (default), ok, stale, degraded, healthy, heartbeat, or "
        "{targets: [...], tags: [...]}")
    pattern: PatternConfig | None = None
    audible: bool | None = Field(None, description="silenced by acknowledgement and quiet hours; "
                                 "default: true for buzzers")
    quiet_hours: str | None = Field(None, description="HH:MM-HH:MM, or 'none'; "
                                    "default: hardware.quiet_hours")

    @field_validator("when", mode="before")
    @classmethod
    def _when(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in WHEN:
            raise ValueError(f"unknown when {value!r}: use one of {', '.join(WHEN)} or a selector "
                             "{targets: [...], tags: [...]}")
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() != "none":
            parse_quiet_hours(value)
        return value

    @model_validator(mode="after")
    def _rules(self) -> SingleOutput:
        if self.pin is None:
            raise located(("pin",), f"a {self.kind} needs a `pin:`")
        if self.when in ("healthy", "heartbeat"):
            if self.is_audible:
                raise located(("audible",), f"a {self.when} output cannot be audible: "
                              "an acknowledgement must never silence it")
            if self.safe_state == "on":
                raise located(("safe_state",), f"a {self.when} output must be off when pingr "
                              "stops: that is the alarm it exists for")
        if self.when == "heartbeat" and self.pattern is not None and self.pattern.type != "blink":
            raise located(("pattern",), "a heartbeat toggles: its pattern is a blink "
                          "(on/off times)")
        if self.pattern is not None:
            self._check_pattern(self.pattern, ("pattern",))
        if self.quiet_hours is not None and not self.is_audible:
            raise located(("quiet_hours",), "quiet hours mute audible outputs only; "
                          "set `audible: true` or remove quiet_hours")
        return self

    @property
    def is_audible(self) -> bool:
        return bool(self.audible)

    @property
    def drive(self) -> str | SelectorConfig:
        """What drives this output (`alert` unless configured)."""
        return self.when if self.when is not None else "alert"

    @property
    def selector(self) -> SelectorConfig | None:
        return self.when if isinstance(self.when, SelectorConfig) else None

    @property
    def own_quiet_hours(self) -> str | None:
        return self.quiet_hours

    @property
    def effective_pattern(self) -> PatternConfig:
        if self.pattern is not None:
            return self.pattern
        if self.when == "heartbeat":
            return PatternConfig(type="blink")
        return PatternConfig()

    def raw_pins(self) -> dict[str, int | str]:
        assert self.pin is not None
        return {"out": self.pin}

    def pin_loc(self, role: str) -> tuple[str, ...]:
        return ("pin",)

    def set_pins(self, resolved: dict[str, int]) -> None:
        self.pin = resolved["out"]


def _single_foreign(kind: str, *extra: str) -> dict[str, str]:
    out = {
        "pins": f"a {kind} has one pin: use `pin:`",
        "colors": "`colors` applies to towers and RGB LEDs only",
        "tone": "`tone` applies to buzzers only",
        "pwm": "`pwm` applies to LEDs and RGB LEDs only",
    }
    for key in extra:
        out.pop(key)
    return out


class RelayConfig(SingleOutput):
    """A relay: switches a siren, a beacon or a lamp."""

    _foreign: ClassVar[dict[str, str]] = _single_foreign("relay")
    type: Literal["relay"]


class LedConfig(SingleOutput):
    """An LED; `pwm: true` makes it dimmable (PWMLED: pulse patterns)."""

    _foreign: ClassVar[dict[str, str]] = _single_foreign("led", "pwm")
    type: Literal["led"]
    pwm: bool | None = Field(None, description="dimmable (PWMLED)")

    @property
    def dimmable(self) -> bool:
        return bool(self.pwm)


class BuzzerConfig(SingleOutput):
    """A buzzer (active, or passive with a `tone`); audible unless `audible: false`."""

    _foreign: ClassVar[dict[str, str]] = _single_foreign("buzzer", "tone")
    type: Literal["buzzer"]
    tone: float | str | None = Field(None, description="Hz or a note such as A4 (passive "
                                     "buzzers)")

    @field_validator("tone")
    @classmethod
    def _tone(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, str) and not _NOTE.match(value):
            raise ValueError(f"invalid tone {value!r}: a frequency in Hz or a note such as A4")
        if isinstance(value, float | int) and not 20 <= value <= 20000:
            raise ValueError("tone must be between 20 and 20000 Hz")
        return value

    @property
    def uses_tone(self) -> bool:
        return self.tone is not None

    @property
    def is_audible(self) -> bool:
        return self.audible if self.audible is not None else True


class StateLight(OutputBase):
    """A light that shows every state in a colour of its own (towers, RGB LEDs)."""

    shows_states: ClassVar[bool] = True
    roles: ClassVar[tuple[str, ...]] = ()
    pins: dict[str, int | str] | None = Field(
        None, description="tower: green/amber/red; rgb_led: red/green/blue")
    colors: dict[str, LookConfig] | None = Field(None, description="state -> look")

    @model_validator(mode="after")
    def _rules(self) -> StateLight:
        if not self.pins:
            raise located(("pins",), f"a {self.kind} needs `pins:` with {', '.join(self.roles)}")
        for role in self.pins:
            if role not in self.roles:
                raise located(("pins", role), f"unknown {self.kind} pin {role!r}: use "
                              f"{', '.join(self.roles)}")
        for state, look in (self.colors or {}).items():
            if state not in STATES:
                raise located(("colors", state), f"unknown state {state!r}: use "
                              f"{', '.join(STATES)}")
            self._check_color(state, look)
            self._check_pattern(look.pattern, ("colors", state, "pattern"))
        return self

    def _check_color(self, state: str, look: LookConfig) -> None:
        raise NotImplementedError

    def look(self, state: str) -> LookConfig:
        """What it shows in `state`."""
        return (self.colors or {}).get(state) or DEFAULT_LOOKS[state]

    def raw_pins(self) -> dict[str, int | str]:
        return dict(self.pins or {})

    def pin_loc(self, role: str) -> tuple[str, ...]:
        return ("pins", role)

    def set_pins(self, resolved: dict[str, int]) -> None:
        self.pins = dict(resolved)


def _light_foreign(kind: str, *extra: str) -> dict[str, str]:
    roles = ", ".join(TOWER_COLORS if kind == "tower" else ("red", "green", "blue"))
    out = {
        "pin": f"a {kind} has several pins: give `pins:` with {roles}",
        "when": f"a {kind} shows every state; set per-state looks under `colors:` instead",
        "pattern": f"a {kind} shows every state; set per-state looks under `colors:` instead",
        "tone": "`tone` applies to buzzers only",
        "pwm": "`pwm` applies to LEDs and RGB LEDs only",
        "audible": f"a {kind} is a light: it is never audible",
        "quiet_hours": "quiet hours mute audible outputs only",
    }
    for key in extra:
        out.pop(key)
    return out


class TowerConfig(StateLight):
    """A stack light: a lamp per colour (green, amber, red), each switched on its own pin."""

    _foreign: ClassVar[dict[str, str]] = _light_foreign("tower")
    roles: ClassVar[tuple[str, ...]] = TOWER_COLORS
    type: Literal["tower"]

    def _check_color(self, state: str, look: LookConfig) -> None:
        for part in (p.strip() for p in look.color.split("+")):
            if part not in (*TOWER_COLORS, "off"):
                raise located(("colors", state, "color"), f"unknown tower colour {part!r}: "
                              "use green, amber, red, off or a combination such as red+amber")
            if part != "off" and part not in (self.pins or {}):
                raise located(("colors", state, "color"), f"this tower has no {part} lamp")


class RgbLedConfig(StateLight):
    """An RGB LED (common cathode by default; `active_high: false` for common anode)."""

    _foreign: ClassVar[dict[str, str]] = _light_foreign("rgb_led", "pwm")
    roles: ClassVar[tuple[str, ...]] = ("red", "green", "blue")
    type: Literal["rgb_led"]
    pwm: bool | None = Field(None, description="default true (dimmable)")

    @model_validator(mode="after")
    def _three(self) -> RgbLedConfig:
        if self.pins and len(self.pins) != 3:
            raise located(("pins",), "an rgb_led needs all three pins: red, green, blue")
        return self

    def _check_color(self, state: str, look: LookConfig) -> None:
        if look.color not in RGB_NAMES and not _HEX.match(look.color):
            raise located(("colors", state, "color"), f"unknown colour {look.color!r}: use "
                          f"{', '.join(RGB_NAMES)} or #rrggbb")

    @property
    def dimmable(self) -> bool:
        return self.pwm is not False


#: The output kinds; a new kind is one model here and one class in pingr.outputs.devices.
OUTPUT_KINDS: dict[str, type[OutputBase]] = {
    "relay": RelayConfig, "led": LedConfig, "buzzer": BuzzerConfig,
    "rgb_led": RgbLedConfig, "tower": TowerConfig,
}
OutputConfig = Annotated[RelayConfig | LedConfig | BuzzerConfig | RgbLedConfig | TowerConfig,
                         Field(discriminator="type")]
