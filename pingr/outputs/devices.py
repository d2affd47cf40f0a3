"""Outputs: each relay, LED, buzzer, RGB LED or tower as gpiozero devices plus a Player."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from pingr.outputs.kinds import (
    RGB_NAMES,
    TOWER_COLORS,
    BuzzerConfig,
    LedConfig,
    OutputBase,
    PatternConfig,
    RgbLedConfig,
    TowerConfig,
)
from pingr.outputs.patterns import Player, Step, once, steps

log = logging.getLogger(__name__)

Color = Any  # a tower's frozenset of lit lamps, or an RGB triple


class Output(ABC):
    """One configured output. `show()` changes what it displays only when the look changes."""

    def __init__(self, config: Any, factory: Any) -> None:
        self.config = config
        self.name = config.name
        self.factory = factory
        self.player = Player(self._level, config.name)
        #: Identity of what is showing now; equal looks keep their pattern running undisturbed.
        self.look_key: tuple[Any, ...] | None = None
        self._color: Color = self.full_color()
        self.devices: list[Any] = []

    # What a subclass provides --------------------------------------------------------------

    @abstractmethod
    def _write(self, color: Color, level: float) -> None:
        """Drive the devices to `color` at brightness `level` (0..1)."""

    @abstractmethod
    def full_color(self) -> Color:
        """Everything on: the lamp-test look."""

    @property
    @abstractmethod
    def value(self) -> Any:
        """The devices' current value (JSON-ready)."""

    # Shared behaviour -----------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def audible(self) -> bool:
        """Silenced by acknowledgements and quiet hours; a siren in Home Assistant."""
        return bool(self.config.is_audible)

    @property
    def shows_states(self) -> bool:
        """Shows every state in its own colour (tower, RGB LED) instead of one condition."""
        return bool(self.config.shows_states)

    def _level(self, level: float) -> None:
        self._write(self._color, level)

    def show(self, color: Color | None, pattern: PatternConfig | None,
             key: tuple[Any, ...]) -> None:
        """Display `color` with `pattern`, or switch off when color is None."""
        if key == self.look_key:
            return
        self.look_key = key
        if color is None or pattern is None:
            self.player.cancel()
            self._write(self._color, 0.0)
            return
        # The first level is written for the new colour in one pass: a tower going from red
        # to amber switches both lamps together, with no dark gap in between.
        self._color = color
        self.player.play(steps(pattern))

    def play(self, color: Color, sequence: Iterator[Step], key: tuple[Any, ...]) -> None:
        """Play an explicit sequence (lamp test, chirp)."""
        self.look_key = key
        self._color = color
        self.player.play(sequence)

    def lamp_test(self, chirp: float) -> None:
        """Everything on; audible outputs only chirp; a healthy relay drops (its alarm state)."""
        if not self.shows_states and self.config.drive == "healthy":
            self.show(None, None, ("test",))
        elif self.config.is_audible:
            chirping = once(1.0, chirp) if chirp > 0 else once(0.0, 0.0)
            self.play(self.full_color(), chirping, ("test",))
        else:
            self.play(self.full_color(), iter([(1.0, None)]), ("test",))

    def safe(self) -> None:
        """The declared safe state, with every pattern stopped."""
        self.player.cancel()
        self.look_key = ("safe",)
        if self.config.safe_state == "on":
            self._color = self.full_color()
            self._write(self._color, 1.0)
        else:
            self._write(self._color, 0.0)

    def close(self) -> None:
        self.player.cancel()
        for device in self.devices:
            device.close()

    def pins(self) -> dict[str, int]:
        return self.config.pin_map()


class SingleOutput(Output):
    """A relay, LED or buzzer on one pin (`_device` builds its gpiozero device)."""

    def __init__(self, config: Any, factory: Any) -> None:
        super().__init__(config, factory)
        self.tone: Any = None
        self.device = self._device(config.pin_map()["out"], bool(config.active_high), factory)
        self.devices = [self.device]

    @abstractmethod
    def _device(self, pin: int, high: bool, factory: Any) -> Any:
        """The gpiozero device, off."""

    def full_color(self) -> Color:
        return 1.0

    def _write(self, color: Color, level: float) -> None:
        if self.config.dimmable:
            self.device.value = level * color
        else:
            self.device.value = 1 if level * color >= 0.5 else 0

    @property
    def value(self) -> Any:
        return float(self.device.value)


class RelayOutput(SingleOutput):
    def _device(self, pin: int, high: bool, factory: Any) -> Any:
        import gpiozero

        return gpiozero.OutputDevice(pin, active_high=high, initial_value=False,
                                     pin_factory=factory)


class LedOutput(SingleOutput):
    config: LedConfig

    def _device(self, pin: int, high: bool, factory: Any) -> Any:
        import gpiozero

        if self.config.pwm:
            return gpiozero.PWMLED(pin, active_high=high, initial_value=0, pin_factory=factory)
        return gpiozero.LED(pin, active_high=high, initial_value=False, pin_factory=factory)


class BuzzerOutput(SingleOutput):
    """An active buzzer (on/off), or a passive one playing `tone` (TonalBuzzer)."""

    config: BuzzerConfig

    def _device(self, pin: int, high: bool, factory: Any) -> Any:
        import gpiozero

        if self.config.tone is None:
            return gpiozero.Buzzer(pin, active_high=high, initial_value=False,
                                   pin_factory=factory)
        from gpiozero.tones import Tone

        self.tone = Tone(self.config.tone)
        return gpiozero.TonalBuzzer(pin, initial_value=None, mid_tone=self.tone, octaves=1,
                                    pin_factory=factory)

    def _write(self, color: Color, level: float) -> None:
        if self.tone is None:
            super()._write(color, level)
        elif level > 0 and color:
            self.device.play(self.tone)
        else:
            self.device.stop()

    @property
    def value(self) -> Any:
        if self.tone is not None:
            playing = self.device.value is not None
            return round(self.tone.frequency, 2) if playing else 0
        return float(self.device.value)


class TowerOutput(Output):
    """A stack light: gpiozero's LEDBoard with one named lamp per colour (green, amber, red)."""

    config: TowerConfig

    def __init__(self, config: TowerConfig, factory: Any) -> None:
        pins = config.pin_map()
        self.names = [c for c in TOWER_COLORS if c in pins]
        super().__init__(config, factory)
        import gpiozero

        self.board = gpiozero.LEDBoard(**{c: pins[c] for c in self.names},
                                       active_high=bool(config.active_high),
                                       initial_value=False, pin_factory=factory)
        self.devices = [self.board]

    def full_color(self) -> Color:
        return frozenset(self.names)

    def _write(self, color: Color, level: float) -> None:
        lit = level >= 0.5
        for name in self.names:  # by name: the board orders its lamps its own way
            getattr(self.board, name).value = 1 if (lit and name in color) else 0

    @staticmethod
    def parse(text: str) -> frozenset[str]:
        return frozenset(p.strip() for p in text.split("+") if p.strip() != "off")

    @property
    def value(self) -> Any:
        return {name: int(getattr(self.board, name).value) for name in self.names}


class RgbOutput(Output):
    """An RGB LED (common cathode by default; `active_high: false` for common anode)."""

    config: RgbLedConfig

    def __init__(self, config: RgbLedConfig, factory: Any) -> None:
        super().__init__(config, factory)
        import gpiozero

        pins = config.pin_map()
        self.device = gpiozero.RGBLED(pins["red"], pins["green"], pins["blue"],
                                      active_high=bool(config.active_high),
                                      pwm=config.pwm is not False, pin_factory=factory)
        self.devices = [self.device]

    def full_color(self) -> Color:
        return (1.0, 1.0, 1.0)

    def _write(self, color: Color, level: float) -> None:
        value = tuple(c * level for c in color)
        if self.config.pwm is False:
            value = tuple(1 if c >= 0.5 else 0 for c in value)
        self.device.value = value

    @staticmethod
    def parse(text: str) -> tuple[float, float, float]:
        if text.startswith("#"):
            return tuple(int(text[i:i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]
        return RGB_NAMES[text]

    @property
    def value(self) -> Any:
        return [round(float(c), 3) for c in self.device.value]


#: The output registry: config `type` -> class (the config models: pingr.outputs.kinds).
OUTPUTS: dict[str, type[Output]] = {
    "relay": RelayOutput, "led": LedOutput, "buzzer": BuzzerOutput,
    "rgb_led": RgbOutput, "tower": TowerOutput,
}


def build_outputs(configs: list[OutputBase], factory: Any) -> dict[str, Output]:
    """Open every configured output (all off); on failure close what was opened and re-raise."""
    built: dict[str, Output] = {}
    try:
        for cfg in configs:
            built[cfg.name] = OUTPUTS[cfg.kind](cfg, factory)
    except Exception:
        for out in built.values():
            out.close()
        raise
    return built
