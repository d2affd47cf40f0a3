"""Targets while pingr runs: reconciled with the config, added, changed and deleted."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError

from pingr import autocerts
from pingr.config import check_dependencies
from pingr.configbase import TargetBase
from pingr.errors import AppError
from pingr.heartbeat import Heartbeats
from pingr.models import Target
from pingr.monitor import Change, Monitor
from pingr.probes.context import ProbeContext
from pingr.probes.registry import KINDS, parse_spec
from pingr.scheduler import Scheduler
from pingr.store import Store
from pingr.validation import ALIASES, describe

log = logging.getLogger(__name__)


class TargetAdmin:
    """The stored targets by id, and every change to them (config, API, dashboard): checked
    against the others, written, then handed to the probe's preparation, the monitor and the
    scheduler. The automatic certificate checks follow the HTTPS targets (pingr.autocerts).

    What a change does to the monitor goes through `apply`, the App's fan-out."""

    def __init__(self, store: Store, monitor: Monitor, scheduler: Scheduler, ctx: ProbeContext,
                 heartbeats: Heartbeats, *, apply: Callable[[Change], None],
                 clock_ms: Callable[[], int]) -> None:
        self.store = store
        self.monitor = monitor
        self.scheduler = scheduler
        self.ctx = ctx
        self.heartbeats = heartbeats
        self.apply = apply
        self.clock_ms = clock_ms
        self.targets: dict[str, Target] = {}

    async def load(self, specs: Iterable[TargetBase]) -> list[Target]:
        """At start: the config's targets reconciled with the stored ones, the automatic
        certificate checks brought up to date, each kind prepared. Returns every target."""
        targets = self.store.reconcile(specs, self.clock_ms())
        todo = autocerts.plan(targets)
        if todo:  # HTTPS targets came or went while we were stopped
            await self.store.write(lambda s: autocerts.apply(self.store, s, todo, self.clock_ms()))
            specs_before = {t.id: t.spec for t in targets}
            targets = self.store.load_targets()
            for target in targets:  # keep holding each config spec once (see reconcile)
                before = specs_before.get(target.id)
                if before is not None and before == target.spec:
                    target.spec = before
        self.targets = {t.id: t for t in targets}
        for name, kind in KINDS.items():
            wanted = [t for t in targets if t.enabled and t.spec.type == name]
            if kind.prepare is not None and wanted:
                kind.prepare(self.ctx, wanted)  # e.g. IcmpUnavailable with both fixes
        return targets

    async def reload(self, specs: Iterable[TargetBase]) -> int:
        """At a config reload: the config's targets reconciled with the stored ones; those new
        or changed take effect, the others keep their state. Returns how many changed."""
        ts = self.clock_ms()
        targets = await self.store.write(lambda _s: self.store.reconcile(specs, ts))
        changed = 0
        for target in targets:
            before = self.targets.get(target.id)
            if before is None or before.spec != target.spec:
                self._set(target)
                changed += 1
        # HTTPS targets that came or went with the new file take their certificate checks
        # with them now, not at the next start.
        await self._sync_certificates()
        return changed

    def _check_graph(self, spec: TargetBase, replacing: str | None = None) -> None:
        graph = {t.name: t.spec.depends_on for t in self.targets.values() if t.id != replacing}
        if spec.name in graph:
            raise AppError(409, f"a target named {spec.name!r} already exists")
        graph[spec.name] = spec.depends_on
        try:
            check_dependencies(graph)
        except ValueError as exc:
            raise AppError(400, str(exc)) from None

    async def create(self, spec: TargetBase) -> Target:
        """Add a target (AppError 409: the name is taken, 400: its dependencies do not hold)."""
        self._check_graph(spec)
        ts = self.clock_ms()
        target = await self.store.write(lambda s: self.store.insert_target(s, spec, "api", ts))
        self._set(target)
        log.info("target %r added", target.name)
        await self._sync_certificates()
        return target

    def _not_automatic(self, target: Target) -> None:
        if target.source == autocerts.AUTO:
            raise AppError(409, f"{target.name!r} is checked automatically for the HTTPS "
                                "targets on its host and port: change or delete those, or add "
                                "a tls target of your own for it")

    async def _sync_certificates(self) -> None:
        """Make the automatic certificate checks follow the HTTPS targets (pingr.autocerts)."""
        todo = autocerts.plan(self.targets.values())
        if not todo:
            return
        saved, removed = await self.store.write(
            lambda s: autocerts.apply(self.store, s, todo, self.clock_ms()))
        for target in removed:
            await self._forget(target)
        for target in saved:
            self._set(target)

    async def update(self, target: Target, changes: dict[str, Any]) -> Target:
        """Change a target: `changes` over its settings, validated whole (AppError 400/409)."""
        self._not_automatic(target)
        data = {**target.spec.model_dump(), **changes}
        for long, (short, _) in ALIASES.items():
            if short in changes and long not in changes:
                data.pop(long, None)  # `interval: 5s` replaces the stored interval_seconds
        if changes.get("type") and changes["type"] != target.spec.type:
            # Fields of the old kind would be unknown to the new one.
            data = {k: v for k, v in data.items() if k in changes or k in TargetBase.model_fields}
        try:
            spec = parse_spec(data)
        except ValidationError as exc:
            raise AppError(400, "; ".join(describe(exc, data, tags=KINDS))) from None
        self._check_graph(spec, replacing=target.id)
        ts = self.clock_ms()
        new = await self.store.write(lambda s: self.store.update_target(s, target.pk, spec, ts))
        self._set(new)
        await self._sync_certificates()
        return new

    async def delete(self, target: Target) -> None:
        """Delete a target and its history (AppError 409 while others depend on it)."""
        self._not_automatic(target)
        dependants = [t.name for t in self.targets.values() if t.spec.depends_on == target.name]
        if dependants:
            raise AppError(409, f"targets depend on {target.name!r}: {', '.join(dependants)}")
        await self.store.write(lambda s: self.store.delete_target(s, target.pk))
        await self._forget(target)
        log.info("target %r deleted", target.name)
        await self._sync_certificates()

    async def _forget(self, target: Target) -> None:
        """A target deleted from the database leaves the scheduler, the monitor, the parts."""
        self.targets.pop(target.id, None)
        self.scheduler.remove(target.id)
        self.apply(self.monitor.remove(target.id))
        self.heartbeats.forget(target.id)
        await self.store.forget(target.pk)

    def _set(self, target: Target) -> None:
        self.targets[target.id] = target
        kind = KINDS[target.spec.type]
        if target.enabled and kind.prepare is not None:
            try:
                kind.prepare(self.ctx, [target])
            except RuntimeError as exc:  # the probe will fail with the same reason, visibly
                log.error("%s", exc)
        self.apply(self.monitor.set_target(target))
        self.scheduler.set(target)
