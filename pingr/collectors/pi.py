"""Raspberry Pi health from kernel files: SoC temperature, throttling flags, read-only root."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Where the firmware driver (raspberrypi-firmware / rpi-hwmon) publishes the same word that
#: `vcgencmd get_throttled` prints, on kernels since 4.19.
THROTTLED_FILES = (
    "sys/devices/platform/soc/soc:firmware/get_throttled",
    "sys/devices/platform/soc@0/soc:firmware/get_throttled",
)
MODEL_FILES = ("proc/device-tree/model", "sys/firmware/devicetree/base/model")

# Bits of the throttled word (documented with vcgencmd).
UNDERVOLTAGE_NOW = 1 << 0
FREQ_CAPPED_NOW = 1 << 1
THROTTLED_NOW = 1 << 2
SOFT_TEMP_LIMIT_NOW = 1 << 3
UNDERVOLTAGE_SINCE_BOOT = 1 << 16
FREQ_CAPPED_SINCE_BOOT = 1 << 17
THROTTLED_SINCE_BOOT = 1 << 18
SOFT_TEMP_LIMIT_SINCE_BOOT = 1 << 19


@dataclass(frozen=True)
class Throttling:
    """The firmware's throttling flags, decoded."""

    raw: int
    undervoltage_now: bool
    undervoltage_since_boot: bool
    frequency_capped_now: bool
    frequency_capped_since_boot: bool
    throttled_now: bool
    throttled_since_boot: bool
    soft_temperature_limit_now: bool
    soft_temperature_limit_since_boot: bool

    @classmethod
    def decode(cls, word: int) -> Throttling:
        """Split the firmware's bit field into named flags."""
        return cls(
            raw=word,
            undervoltage_now=bool(word & UNDERVOLTAGE_NOW),
            undervoltage_since_boot=bool(word & UNDERVOLTAGE_SINCE_BOOT),
            frequency_capped_now=bool(word & FREQ_CAPPED_NOW),
            frequency_capped_since_boot=bool(word & FREQ_CAPPED_SINCE_BOOT),
            throttled_now=bool(word & THROTTLED_NOW),
            throttled_since_boot=bool(word & THROTTLED_SINCE_BOOT),
            soft_temperature_limit_now=bool(word & SOFT_TEMP_LIMIT_NOW),
            soft_temperature_limit_since_boot=bool(word & SOFT_TEMP_LIMIT_SINCE_BOOT),
        )


@dataclass(frozen=True)
class PiHealth:
    """One reading of everything the Pi's kernel tells about its health."""

    available: bool
    model: str | None = None
    temperature_c: float | None = None
    throttling: Throttling | None = None
    root_read_only: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """The /system/pi body: `{"available": false}` off a Pi."""
        if not self.available:
            return {"available": False}
        out = asdict(self)
        t = out.pop("throttling")
        out["throttled"] = None if t is None else {**t, "raw": f"0x{t['raw']:x}"}
        return out


class PiReader:
    """Reads the kernel's files under `root` ("/" on a real system, a fixture tree in tests)."""

    def __init__(self, root: str | Path = "/") -> None:
        self.root = Path(root)

    def _read(self, rel: str) -> str | None:
        try:
            return (self.root / rel).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def model(self) -> str | None:
        """The board model from the device tree (e.g. 'Raspberry Pi 4 Model B Rev 1.4')."""
        for rel in MODEL_FILES:
            text = self._read(rel)
            if text:
                return text.replace("\x00", "").strip() or None
        return None

    def temperature(self) -> float | None:
        """SoC temperature in °C: the 'cpu-thermal' zone when there is one, else the first."""
        base = self.root / "sys/class/thermal"
        try:
            zones = sorted(p for p in base.iterdir() if p.name.startswith("thermal_zone"))
        except OSError:
            return None
        chosen = None
        for zone in zones:
            kind = self._read(str((zone / "type").relative_to(self.root)))
            if kind is not None and kind.strip() in ("cpu-thermal", "cpu_thermal", "soc_thermal"):
                chosen = zone
                break
        for zone in ([chosen] if chosen else []) + zones:
            text = self._read(str((zone / "temp").relative_to(self.root)))
            if text is None:
                continue
            try:
                return round(int(text.strip()) / 1000, 1)  # millidegrees
            except ValueError:
                continue
        return None

    def throttling(self) -> Throttling | None:
        """The firmware's throttled word, or None where the driver does not publish it."""
        for rel in THROTTLED_FILES:
            text = self._read(rel)
            if text is None:
                continue
            try:
                return Throttling.decode(int(text.strip(), 16))
            except ValueError:
                log.debug("unreadable throttled word %r in %s", text, rel)
        return None

    def root_read_only(self) -> bool | None:
        """Whether / is mounted read-only (an SD card the kernel gave up on does this)."""
        text = self._read("proc/mounts")
        if text is None:
            return None
        found = None
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "/":
                found = "ro" in parts[3].split(",")  # the last mount on / is the one in effect
        return found

    def read(self) -> PiHealth:
        """Everything at once; `available` is False off a Raspberry Pi."""
        model = self.model()
        throttling = self.throttling()
        is_pi = throttling is not None or bool(model and "Raspberry Pi" in model)
        if not is_pi:
            return PiHealth(available=False)
        return PiHealth(True, model, self.temperature(), throttling, self.root_read_only())
