"""Pin factories: real GPIO, or gpiozero's MockFactory only when the config asks for it.

Never a silent fallback: an alarm that pretends to switch relays is worse than none. When real
pins cannot be opened, open_backend raises PinsUnavailable naming the cause and the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODEL_FILE = Path("/proc/device-tree/model")
#: gpiozero's real pin factories, in the order `auto` tries them (lgpio: every Pi up to the 5).
REAL_FACTORIES = ("lgpio", "rpigpio", "pigpio", "native")
MOCK_HINT = "or, to run the outputs on simulated pins (nothing physical switches), set " \
    "hardware.backend: mock"


class PinsUnavailable(Exception):
    """Outputs are configured but real GPIO pins cannot be opened (and mock was not asked for).

    `cause` says what failed, `fix` what to do; the message names both.
    """

    def __init__(self, cause: str, fix: str) -> None:
        super().__init__(f"GPIO pins unavailable: {cause}. Fix: {fix}")
        self.cause = cause
        self.fix = fix


def _fix_for(errors: dict[str, BaseException]) -> str:
    """What to do about the libraries' failures, most likely remedy first."""
    fixes = []
    texts = " ".join(f"{type(e).__name__} {e}" for e in errors.values()).lower()
    lgpio = errors.get("lgpio")
    if lgpio is None or isinstance(lgpio, ImportError):
        fixes.append("install lgpio, gpiozero's pin library for every Pi up to the 5: "
                     "`pip install lgpio` in pingr's venv (pi-setup.sh does this), or on "
                     "Raspberry Pi OS `apt install python3-lgpio` with a venv made with "
                     "--system-site-packages")
    if any(word in texts for word in ("permission", "denied", "not permitted", "eacces",
                                      "eperm", "can not open gpiochip", "no such file",
                                      "gpiomem", "/dev/mem")):
        fixes.append("give the service /dev/gpiochip* (DeviceAllow=char-gpiochip rw and "
                     "SupplementaryGroups=gpio in pingr.service; pi-setup.sh's udev rule gives "
                     "the gpio group the chips)")
    if "lgd-nfy" in texts or "working directory" in texts:
        fixes.append("give lgpio a writable working directory (WorkingDirectory=/run/pingr and "
                     "Environment=LG_WD=/run/pingr in pingr.service)")
    if not fixes:
        fixes.append("check that this board's GPIO chip is /dev/gpiochip0 and that no other "
                     "program holds the pins (stop it, or test through pingr's API)")
    return "; ".join(fixes) + "; " + MOCK_HINT


def board_model(model_file: Path = MODEL_FILE) -> str | None:
    """The device-tree model string ("Raspberry Pi 4 Model B Rev 1.4"), or None off a Pi."""
    try:
        return model_file.read_bytes().rstrip(b"\0").decode(errors="replace").strip() or None
    except OSError:
        return None


@dataclass
class Backend:
    """The pin factory in use and how it was chosen (reported by GET /api/v1/hardware)."""

    name: str
    factory: Any
    requested: str
    real: bool
    reason: str

    def close(self) -> None:
        try:
            self.factory.close()
        except Exception:  # closing a half-opened chip must not hide the real error
            log.debug("closing pin factory %s failed", self.name, exc_info=True)


def mock_factory(pwm_pins: Iterable[int] = ()) -> Any:
    """gpiozero's MockFactory, with MockPWMPin for the BCM pins that need PWM.

    Only those: a MockPWMPin drops to 0 when its device closes, which would hide the safe
    state a plain pin keeps after shutdown.
    """
    from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin

    wanted = {f"GPIO{n}" for n in pwm_pins}

    class Factory(MockFactory):
        def pin(self, name: Any, pin_class: Any = None, **kwargs: Any) -> Any:
            if pin_class is None:
                found = {info.name for _, info in self.board_info.find_pin(name)}
                pin_class = MockPWMPin if found & wanted else MockPin
            return super().pin(name, pin_class, **kwargs)

    return Factory()


def _named(name: str, pwm_pins: Iterable[int]) -> Any:
    if name == "mock":
        return mock_factory(pwm_pins)
    found = [e for e in entry_points(group="gpiozero_pin_factories") if e.name == name]
    if not found:
        raise RuntimeError(f"gpiozero has no pin factory {name!r}")
    return found[0].load()()


def open_backend(requested: str, pwm_pins: Iterable[int] = (),
                 model_file: Path = MODEL_FILE) -> Backend:
    """Build the pin factory for `hardware.backend`, or raise PinsUnavailable.

    `mock` is the only way to get simulated pins. `auto` tries the real libraries on a Raspberry
    Pi (lgpio first); a named factory is opened as named. Whatever cannot open real pins (not a
    Pi, library missing, chip not accessible or busy) raises PinsUnavailable with the cause and
    the fix, for the caller to report loudly.
    """
    if requested == "mock":
        return Backend("mock", mock_factory(pwm_pins), requested, False,
                       "mock pins: nothing physical switches")
    if requested != "auto":
        try:
            factory = _named(requested, pwm_pins)
        except Exception as exc:  # ImportError, OSError, gpiozero's PinError, lgpio.error, …
            raise PinsUnavailable(f"the configured pin factory {requested} could not open the "
                                  f"pins ({requested}: {exc})",
                                  _fix_for({requested: exc})) from exc
        return Backend(requested, factory, requested, True, f"configured: {requested}")
    model = board_model(model_file)
    if model is None or "raspberry pi" not in model.lower():
        raise PinsUnavailable(
            f"not a Raspberry Pi ({model or f'no {model_file}'}), so hardware.backend: auto "
            "has no pins to drive",
            "set hardware.backend: mock to run the outputs on simulated pins (nothing physical "
            "switches), or name the pin factory for this board (hardware.backend: lgpio)")
    errors: dict[str, BaseException] = {}
    for name in REAL_FACTORIES:
        try:
            factory = _named(name, pwm_pins)
        except Exception as exc:  # each library fails its own way (ImportError, OSError, …)
            errors[name] = exc
            continue
        log.info("GPIO backend %s on %s", name, model)
        return Backend(name, factory, requested, True, model)
    tried = "; ".join(f"{name}: {exc}" for name, exc in errors.items())
    raise PinsUnavailable(f"{model}: no GPIO library could open the pins ({tried})",
                          _fix_for(errors))
