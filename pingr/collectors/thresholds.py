"""Host thresholds as alert sources, and the host collector (sampler, Pi, thresholds)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from pingr.collectors.pi import PiReader
from pingr.collectors.settings import Limit, Switch, ThresholdsConfig
from pingr.collectors.source import Findings, make_target
from pingr.collectors.system import HostSample, HostSampler
from pingr.models import Result
from pingr.storage.tables import CollectorSettingRow
from pingr.store import Store
from pingr.timeutil import format_duration, from_ms, rfc3339

log = logging.getLogger(__name__)

SETTINGS_KEY = "alerts.thresholds"


@dataclass(frozen=True)
class Reading:
    """One threshold's input from a sample: a value (or a flag), and how to describe it."""

    target_id: str
    kind: str  # "system" | "pi"
    value: float | bool | None  # None: not measurable right now
    setting: Limit | Switch
    unit: str
    label: str


def readings(sample: HostSample, t: ThresholdsConfig) -> list[Reading]:
    """What each configured threshold looks at in this sample.

    Pi readings appear only where the kernel provides them, so their targets exist only there.
    """
    out = []
    if t.cpu is not None and sample.cpu_percent is not None:
        out.append(Reading("system:cpu", "system", sample.cpu_percent, t.cpu, "%", "CPU"))
    if t.memory is not None:
        out.append(Reading("system:memory", "system", sample.memory["usage_percent"], t.memory,
                           "%", "memory"))
    if t.disk is not None:
        for mount in t.mounts:
            disk = sample.disk(mount)
            out.append(Reading(f"system:disk:{mount}", "system",
                               None if disk is None else disk.usage_percent, t.disk, "%",
                               f"disk {mount}"))
    if t.temperature is not None and sample.temperature_c is not None:
        out.append(Reading("pi:temperature", "pi", sample.temperature_c, t.temperature, " °C",
                           "temperature"))
    if t.undervoltage is not None and sample.pi.throttling is not None:
        out.append(Reading("pi:undervoltage", "pi", sample.pi.throttling.undervoltage_now,
                           t.undervoltage, "", "under-voltage"))
    return out


class ThresholdWatcher:
    """Turns samples into results of synthetic targets; a breach must last `for` to fail."""

    def __init__(self, settings: ThresholdsConfig) -> None:
        self.settings = settings
        #: target id -> ts (ms) of the first sample of the current breach
        self.breach_since: dict[str, int] = {}

    def apply(self, settings: ThresholdsConfig) -> None:
        """New thresholds (PUT /alerts/config); targets no longer configured go away."""
        self.settings = settings

    def findings(self, sample: HostSample) -> Findings:
        """Every threshold evaluated against a sample: its targets and their results."""
        out = Findings("host")
        current = readings(sample, self.settings)
        ids = {r.target_id for r in current}
        for gone in set(self.breach_since) - ids:
            # Switched off (or its sensor vanished): its target and any open alert go with it.
            self.breach_since.pop(gone, None)
        for r in current:
            out.add(make_target(r.target_id, r.kind), self._evaluate(r, sample.ts_ms))  # type: ignore[arg-type]
        return out

    def _evaluate(self, r: Reading, ts: int) -> Result:
        setting = r.setting
        if r.value is None:
            breached, text = True, f"{r.label}: not mounted"
        elif isinstance(setting, Limit):
            breached = float(r.value) > setting.above
            text = f"{r.label} {r.value:g}{r.unit} above {setting.above:g}{r.unit}"
        else:
            breached, text = bool(r.value), f"{r.label} reported by the firmware"
        if not breached:
            self.breach_since.pop(r.target_id, None)
            return Result(r.target_id, ts, True, metrics=self._metrics(r))
        since = self.breach_since.setdefault(r.target_id, ts)
        sustained = ts - since >= setting.for_ * 1000
        error = f"{text} for {format_duration(setting.for_)}" if sustained else None
        # Within `for` the breach is only pending: the target stays up, a spike never alerts.
        return Result(r.target_id, ts, not sustained, error=error, metrics=self._metrics(r))

    @staticmethod
    def _metrics(r: Reading) -> dict[str, Any]:
        limit = r.setting.above if isinstance(r.setting, Limit) else True
        return {"value": r.value, "limit": limit}


def section_hash(settings: ThresholdsConfig) -> str:
    """A stable hash of a thresholds section (to notice the config file changing)."""
    raw = json.dumps(settings.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


class HostCollector:
    """Host metrics, Pi health and thresholds: one sample per scheduler run, as findings."""

    def __init__(self, thresholds: ThresholdsConfig, store: Store,
                 clock_ms: Callable[[], int]) -> None:
        self.store = store
        self.clock_ms = clock_ms
        self.file_settings: ThresholdsConfig = thresholds
        self.settings = thresholds
        self.source = "config"
        self.updated_at: int | None = None
        self.sampler = HostSampler(self.settings.sample_interval(), mounts=self.settings.mounts,
                                   pi=PiReader("/"), clock_ms=clock_ms)
        self.watcher = ThresholdWatcher(self.settings)

    @property
    def interval(self) -> float:
        return self.settings.sample_interval()

    async def collect(self) -> Findings:
        """Take a sample and evaluate every threshold against it."""
        return self.watcher.findings(await self.sampler.sample())

    def load_override(self) -> None:
        """Thresholds changed at run time (PUT /alerts/config), unless the file changed since."""
        with self.store.session() as s:
            row = s.get(CollectorSettingRow, SETTINGS_KEY)
        if row is None:
            return
        if row.base_hash != section_hash(self.file_settings):
            log.info("alerts.thresholds changed in the config file since the runtime change of %s;"
                     " using the file", row.updated_at)
            return
        try:
            self._use(ThresholdsConfig.model_validate(json.loads(row.value)), "runtime",
                      row.updated_at)
        except (ValidationError, ValueError):
            log.warning("ignoring unreadable runtime thresholds saved at %s", row.updated_at)

    def use_file(self) -> None:
        """Use the config file's thresholds (a reload changed them: the file wins over an
        earlier runtime change, as at a start)."""
        self._use(self.file_settings, "config", None)

    def _use(self, settings: ThresholdsConfig, source: str, updated_at: int | None) -> None:
        self.settings, self.source, self.updated_at = settings, source, updated_at
        self.watcher.apply(settings)
        self.sampler.interval = settings.sample_interval()
        self.sampler.mounts = list(settings.mounts)

    def describe(self) -> dict[str, Any]:
        """The GET /alerts/config body."""
        updated = None if self.updated_at is None else rfc3339(from_ms(self.updated_at))
        return {"thresholds": self.settings.model_dump(mode="json", by_alias=True),
                "source": self.source, "updated_at": updated}

    async def update(self, changes: dict[str, Any]) -> Findings | None:
        """Change some thresholds at run time, persist them, re-evaluate at once.

        Returns the new findings (None before the first sample). Raises ValueError with a
        readable message on invalid input (nothing changes then).
        """
        merged = {**self.settings.model_dump(by_alias=True), **changes}
        try:
            new = ThresholdsConfig.model_validate(merged)
        except ValidationError as exc:
            raise ValueError("; ".join(
                "thresholds."
                f"{'.'.join(str(p) for p in e['loc'] if not str(p).startswith('function-'))}: "
                f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())) from None
        ts = self.clock_ms()
        value = json.dumps(new.model_dump(mode="json", by_alias=True))
        base = section_hash(self.file_settings)

        def save(s: Any) -> None:
            row = s.get(CollectorSettingRow, SETTINGS_KEY)
            if row is None:
                row = CollectorSettingRow(key=SETTINGS_KEY, value=value, base_hash=base,
                                          updated_at=ts)
            else:
                row.value, row.base_hash, row.updated_at = value, base, ts
            s.add(row)

        await self.store.write(save)
        self._use(new, "runtime", ts)
        log.info("alert thresholds changed at run time: %s", ", ".join(sorted(changes)))
        latest = self.sampler.latest
        if latest is None:
            return None
        if any(m not in {d.mount for d in latest.disks} for m in new.mounts):
            return await self.collect()  # a newly watched mount needs a reading
        return self.watcher.findings(latest)
