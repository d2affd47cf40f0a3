"""Pin factories: real GPIO on a Raspberry Pi, gpiozero's MockFactory elsewhere, never a global."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODEL_FILE = Path("/proc/device-tree/model")


def board_model(model_file: Path = MODEL_FILE) -> str | None:
    """The device-tree model string ("Raspberry Pi 4 Model B Rev 1.4"), or None off a Pi."""
    try:
        return model_file.read_bytes().rstrip(b"\0").decode(errors="replace").strip() or None
    except OSError:
        return None


class PinsUnavailable(Exception):
    """Real pins cannot be opened: `cause` says why, `fix` what to do about it."""

    def __init__(self, cause: str, fix: str) -> None:
        super().__init__(f"{cause}; {fix}")
        self.cause, self.fix = cause, fix


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
    """Build the pin factory for `hardware.backend`; `auto` falls back to mock off a Pi.

    A named factory that cannot open (not a Pi, library missing, chip busy) is an error the
    caller reports; only `auto` falls back, and says so once.
    """
    if requested != "auto":
        factory = _named(requested, pwm_pins)
        return Backend(requested, factory, requested, requested != "mock",
                       "mock pins: nothing physical switches" if requested == "mock"
                       else f"configured: {requested}")
    model = board_model(model_file)
    if model is None or "raspberry pi" not in model.lower():
        log.warning("not a Raspberry Pi (%s): GPIO outputs run on gpiozero's MockFactory, "
                    "so nothing physical switches", model or f"no {model_file}")
        return Backend("mock", mock_factory(pwm_pins), requested, False, "not a Raspberry Pi")
    errors = []
    for name in ("lgpio", "rpigpio", "pigpio", "native"):
        try:
            factory = _named(name, pwm_pins)
        except Exception as exc:  # each library fails its own way (ImportError, OSError, …)
            errors.append(f"{name}: {exc}")
            continue
        log.info("GPIO backend %s on %s", name, model)
        return Backend(name, factory, requested, True, model)
    log.warning("%s: no GPIO library could open the pins (%s); outputs run on MockFactory",
                model, "; ".join(errors))
    return Backend("mock", mock_factory(pwm_pins), requested, False,
                   "no GPIO library: " + "; ".join(errors))
