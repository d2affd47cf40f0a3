"""Composition root: builds every part from one Config, runs the flow after each result, and
carries out commands (API, buttons, MQTT) through the same methods.

The flow, in the order a reader follows it:

    Scheduler ──> App.on_result(result)
                     change = monitor.process(result)     pure state machine (pingr.monitor)
                     store.add_result(result)             buffered, spooled, batched commits
                     per-result readers                   metrics, SSE check_result, MQTT counters
                     App._apply(change)                   alerts persisted, then _fan_out:
                        outputs.update(snapshot)          relays, LEDs, towers (pingr.outputs)
                        notifier.on_change(change)        apprise, queue, cooldown (pingr.notify)
                        events.on_change(change)          SSE (pingr.events)
                        mqtt.update(change)               Home Assistant state (pingr.mqtt)
                        fleet.update(change)              our state to the fleet (pingr.fleet)
                        webhooks.on_change(change)        signed POSTs (pingr.webhooks)
                     fleet.observe()                      after a local change: shared-check
                                                          votes, "is it me?" (its verdicts come
                                                          back as findings, like a collector's)

Nothing re-enters the monitor from inside the fan-out; buttons and MQTT commands arrive on the
loop as calls of the App's own methods, like API requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pingr import __version__
from pingr.access import Authenticator
from pingr.alertstatus import AlertStatus
from pingr.collectors.docker import DockerCollector, docker_wanted
from pingr.collectors.resources import ContainerSampler
from pingr.collectors.source import Findings
from pingr.collectors.thresholds import HostCollector
from pingr.collectors.timeline import Transition
from pingr.config import Config, default_targets
from pingr.events import EventBroker
from pingr.executions import Executions
from pingr.fleet.config import FLEET_SOURCE
from pingr.fleet.member import Fleet
from pingr.heartbeat import Heartbeats
from pingr.instance import InstanceLock
from pingr.keyadmin import KeyAdmin
from pingr.keys import KeyRing
from pingr.liveness import Inputs, Liveness, Verdict
from pingr.metrics import Metrics
from pingr.models import Alert, Result, Target
from pingr.monitor import NO_CHANGE, Change, Event, Monitor
from pingr.mqtt.publisher import Mqtt
from pingr.notify import fcm
from pingr.notify.notifier import Notifier
from pingr.outputs.manager import Outputs
from pingr.paths import database_path, spool_path
from pingr.probes.context import ProbeContext
from pingr.resources import Resources
from pingr.scheduler import Scheduler
from pingr.silence import Silences
from pingr.store import Store
from pingr.systemd import SdNotify
from pingr.targetadmin import TargetAdmin
from pingr.timeline import ContainerTimeline
from pingr.timeutil import now_ms
from pingr.webhooks import Webhooks
from pingr.writemeter import WriteMeter

log = logging.getLogger(__name__)

#: Liveness is re-checked at the moment it can change (a deadline), and at least this often
#: (a probe loop that died has no deadline of its own).
LIVENESS_MAX_WAIT = 10.0
#: A collector's run is cancelled after this long (a hung psutil read, a stuck engine).
COLLECTOR_TIMEOUT = 30.0


@dataclass(frozen=True)
class Health:
    """What /api/v1/health reports."""

    ok: bool
    db_error: str | None
    enabled_targets: int
    last_result_ms: int | None
    seconds_since_last_result: float | None
    stale: bool
    healthy: bool
    reason: str
    problems: tuple[str, ...]
    uptime_seconds: float
    disk_bytes_written: int | None
    disk_bytes_per_day: int | None
    db_size_bytes: int | None


def _merged(changes: list[Change]) -> Change:
    """Several steps of the monitor as one change (events and alerts in their order)."""
    if len(changes) == 1:
        return changes[0]
    return Change(tuple(e for c in changes for e in c.events),
                  tuple(a for c in changes for a in c.alerts),
                  any(c.situation for c in changes), any(c.targets for c in changes),
                  any(c.urgent for c in changes))


class App:
    """Everything pingr runs, built from one Config."""

    def __init__(self, config: Config, *, env: dict[str, str] | None = None,
                 clock_ms: Callable[[], int] = now_ms, console: Any = None) -> None:
        self.config = config
        self.env = dict(os.environ if env is None else env)
        self.clock_ms = clock_ms
        self.console = console if console is not None else sys.stderr
        self.db_path = database_path(config, self.env)
        self.lock = InstanceLock(self.db_path)
        st = config.storage
        self.store = Store(self.db_path, flush_interval=st.flush_interval,
                           commit_interval=st.commit_interval, batch_size=st.batch_size,
                           retention_seconds=st.retention, clock_ms=clock_ms, raw=st.raw,
                           raw_sample_seconds=st.raw_sample_interval,
                           minute_retention_seconds=st.minute_retention,
                           hour_retention_seconds=st.hour_retention, max_size=st.max_size,
                           min_free=st.min_free, retry_interval=st.retry_interval,
                           spool_path=spool_path(config, self.db_path, self.env))
        self.write_meter = WriteMeter()
        self.silences = Silences(self.store, clock_ms, on_edge=self._silence_edge)
        self.monitor = Monitor(silenced=self.silences.is_silenced, held=self._held,
                               clock_ms=clock_ms)
        self.fleet = (Fleet(config.fleet, config.mqtt, states=self.monitor.states,
                            snapshot=self.monitor.snapshot, submit=self._fleet_submit,
                            clock_ms=clock_ms) if config.fleet.enabled else None)
        self.alert_status = AlertStatus()
        self.ctx = ProbeContext(clock_ms=clock_ms)
        self.scheduler = Scheduler(self.on_result, self.ctx,
                                   max_concurrency=config.scheduler.max_concurrency,
                                   stagger_seconds=config.scheduler.stagger, clock_ms=clock_ms)
        self.liveness = Liveness(stale_factor=config.alerts.stale_factor,
                                 stagger=config.scheduler.stagger, clock_ms=clock_ms,
                                 loop_time=time.monotonic)
        self.keys = KeyRing(self.store)
        # Without auth.key_file the first admin key goes beside the database: in the state
        # directory, or where storage.path put the database.
        self.key_admin = KeyAdmin(self.store, self.keys, config.auth, key_dir=self.db_path.parent,
                                  console=self.console)
        self.auth = Authenticator(self.keys, self.store,
                                  per_minute=config.auth.rate_limit_per_minute,
                                  failures_per_minute=config.auth.auth_failures_per_minute,
                                  trusted_proxies=config.auth.trusted_proxies)
        # ---- the parts, in fan-out order where they take part in it
        self.outputs = Outputs(config.hardware, on_button=self.on_button,
                               on_state=self._outputs_changed)
        self.notifier = Notifier(config.notify + fcm.configured_channels(config.alerts),
                                 config.notify_settings, self.store,
                                 states=self.monitor.states, silenced=self.silences.is_silenced,
                                 clock_ms=clock_ms)
        self.events = EventBroker(config.events)
        self.mqtt = (Mqtt(config.mqtt, self.monitor, self.outputs, commands=self,
                          clock_ms=clock_ms) if config.mqtt.enabled else None)
        self.webhooks = Webhooks(self.store, config.notify_settings, clock_ms)
        self.metrics = (Metrics(config.metrics, self.monitor, self.store)
                        if config.metrics.enabled else None)
        # ---- sources besides the scheduler's probes
        self.heartbeats = Heartbeats(config.push, self.store, clock_ms,
                                     targets=lambda: self.targets.values(), publish=self.publish,
                                     executions=Executions(self.store, clock_ms))
        self.ctx.checkins = self.heartbeats
        self.host = HostCollector(config.alerts.thresholds, self.store, clock_ms)
        self.timeline = ContainerTimeline(self.store, clock_ms)
        self.docker = (DockerCollector(config.docker, clock_ms, submit=self.apply_findings,
                                       observe=self._containers_changed)
                       if docker_wanted(config.docker) else None)
        # ---- history of host and container metrics (fed by the two samplers' jobs)
        self.resources = Resources(self.store, clock_ms)
        self.container_stats = (ContainerSampler(self.docker, clock_ms)
                                if self.docker is not None else None)
        # ---- the stored targets and every change to them (config, API, dashboard)
        self.target_admin = TargetAdmin(self.store, self.monitor, self.scheduler, self.ctx,
                                        self.heartbeats, apply=self._apply, clock_ms=clock_ms)
        #: Collector source -> the ids of its targets in the monitor.
        self._collected: dict[str, set[str]] = {}
        self.started_at = time.monotonic()
        self.tasks: list[asyncio.Task[Any]] = []
        #: The port actually bound (differs from config.port when that is 0, as in tests).
        self.port: int = config.port
        #: Set by the server when it begins to shut down (long-lived responses end).
        self.stopping = False
        #: sd_notify to systemd (READY/STOPPING/WATCHDOG); a no-op outside a Type=notify unit.
        self.sd = SdNotify(self.env)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the store, reconcile config targets, restore state, start the parts, probe."""
        for warning in self.config.warnings():
            log.warning("WARNING: %s", warning)
        self.lock.acquire()
        self.store.open()
        targets = await self.target_admin.load(self.config.targets or default_targets(self.port))
        self.silences.load()
        self.resources.start()
        self._apply(self.monitor.restore(
            targets, self.store.open_alerts(),
            self.store.recent_by_target([t.pk for t in targets if t.enabled]),
            self.store.max_alert_id() + 1, self.store.newest_result_ts()))
        self.key_admin.bootstrap()
        self.keys.reload()
        await self.silences.start()
        await self.heartbeats.start()
        await self.notifier.start()
        await self.webhooks.start()
        self.host.load_override()
        self.apply_findings(await self.host.collect())
        if self.docker is not None:
            await self.docker.start([a.target_id for a in self.store.open_alerts()])
        if self.fleet is not None:
            self.apply_findings(self.fleet.adopt([a.target_id for a in self.store.open_alerts()]))
            # Shared checks are the fleet's to decide, also those that were down at the stop.
            self._apply(self.monitor.reconsider())
        self._apply(self.monitor.resolve_orphans())
        # The lamp test sounds at a clean start only: after a crash-restart it would be noise.
        await self.outputs.start(self.monitor.snapshot(), lamp_test=self.lock.previous_clean)
        self._check_problems()  # e.g. real pins that cannot be opened: degraded, loudly
        if self.mqtt is not None:
            self.mqtt.start(self.config.host, self.port)
        if self.fleet is not None:
            self.fleet.start()
        self.liveness.probing_started()
        for target in targets:
            self.scheduler.set(target)
        interval = self.host.interval
        self.scheduler.set_job("host", interval, min(COLLECTOR_TIMEOUT, interval),
                               self._collect_host, first_delay=min(1.0, interval))
        if self.docker is not None:
            resync = self.config.docker.resync
            self.scheduler.set_job("docker", resync, COLLECTOR_TIMEOUT,
                                   self.docker.resync, first_delay=resync)
            self.scheduler.set_job("container-stats", resync, COLLECTOR_TIMEOUT,
                                   self._sample_containers, first_delay=min(5.0, resync))
        if self.fleet is not None:
            tick = self.fleet.tick_seconds
            self.scheduler.set_job("fleet", tick, COLLECTOR_TIMEOUT, self.fleet.tick,
                                   first_delay=tick)
        loop = asyncio.get_running_loop()
        self.tasks += [
            loop.create_task(self.store.run_writer(), name="store-writer"),
            loop.create_task(self.store.run_cleanup(self.config.storage.cleanup_interval),
                             name="retention"),
            loop.create_task(self._watch(), name="liveness"),
        ]
        log.info("pingr %s monitoring %d targets; database %s", __version__,
                 sum(t.enabled for t in targets), self.db_path)

    async def stop(self) -> None:
        """Stop probing, put every output in its safe state, stop the parts, commit."""
        self.sd.send("STOPPING=1")
        await self.scheduler.stop()
        for name, stop in (("outputs", self.outputs.stop),
                           ("mqtt", self.mqtt.stop if self.mqtt else None),
                           ("fleet", self.fleet.stop if self.fleet else None),
                           ("docker", self.docker.stop if self.docker else None),
                           ("timeline", self.timeline.stop),
                           ("webhooks", self.webhooks.stop), ("notify", self.notifier.stop),
                           ("heartbeats", self.heartbeats.stop), ("silences", self.silences.stop)):
            if stop is None:
                continue
            try:
                await stop()
            except Exception:
                log.exception("stopping %s failed", name)
        self.events.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        await self.ctx.aclose()
        self.keys.close()
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)
        self.lock.release(clean=True)
        self.sd.close()
        log.info("pingr stopped")

    async def reload(self, new: Config) -> list[str]:
        """Apply a new, valid config live (SIGHUP, `systemctl reload pingr`): targets, outputs,
        notification channels and host thresholds. Targets that did not change keep their
        state, counters and open alerts. Returns the sections that changed but only take
        effect at the next start (they are logged)."""
        old = self.config
        changed = await self.target_admin.reload(new.targets or default_targets(self.port))
        if new.hardware != old.hardware:
            await self.outputs.stop()
            self.outputs = Outputs(new.hardware, on_button=self.on_button,
                                   on_state=self._outputs_changed)
            await self.outputs.start(self.monitor.snapshot(), lamp_test=False)
            if self.mqtt is not None:
                self.mqtt.outputs = self.outputs
            self._outputs_changed()
            self._check_problems()
        if new.notify != old.notify:
            await self.notifier.set_channels(new.notify)
        if new.alerts.thresholds != old.alerts.thresholds:
            self.host.file_settings = new.alerts.thresholds
            self.host.use_file()
            self.apply_findings(await self.host.collect())
            self.scheduler.set_job("host", self.host.interval,
                                   min(COLLECTOR_TIMEOUT, self.host.interval), self._collect_host,
                                   first_delay=self.host.interval)
        later = [name for name in Config.model_fields
                 if name not in ("targets", "hardware", "notify", "alerts")
                 and getattr(new, name) != getattr(old, name)]
        if new.alerts.stale_factor != old.alerts.stale_factor:
            later.append("alerts.stale_factor")
        self.config = new
        log.info("config reloaded: %d targets added or changed%s", changed,
                 f"; {', '.join(later)} changed and take effect at the next start" if later
                 else "")
        return later

    # ------------------------------------------------------------------ the flow

    def on_result(self, result: Result) -> None:
        """One probe (or collector) result: the whole flow after a probe, in order."""
        taken = self._take(result)
        if taken is None:
            return
        target, change = taken
        if change is not NO_CHANGE:  # most results change nothing but counters
            self._apply(change)
            if (self.fleet is not None and target.source != FLEET_SOURCE
                    and (change.situation or change.targets or change.statuses)):
                self.fleet.observe()  # after the fan-out, never inside it
        verdict = self.liveness.verdict
        if target.probed and (verdict.stale or not verdict.healthy):
            self._check_liveness()  # alive again with this result, not at the next check

    def _take(self, result: Result) -> tuple[Target, Change] | None:
        """The monitor's step for one result, and the readers of every result (the store,
        metrics, SSE check_result, MQTT counters); the change is the caller's to apply."""
        state = self.monitor.state_of(result.target_id)
        if state is None:
            return None
        target = state.target
        change = self.monitor.process(result)
        if change is None:
            return None  # paused meanwhile
        if target.probed:
            self.store.add_result(result, target.pk)
        if self.metrics is not None:
            self.metrics.count(target, result)
        self.events.on_result(target, result)
        if self.mqtt is not None:
            self.mqtt.on_result(target, result)
        return target, change

    def _apply(self, change: Change) -> None:
        """Persist what a change did to alerts, then tell everybody who cares."""
        for alert in change.alerts:
            self.store.put_alert(alert, urgent=change.urgent)
        if change.events or change.situation or change.targets:
            self._fan_out(change)

    def _fan_out(self, change: Change) -> None:
        """The one ordered fan-out. A consumer that fails is logged and the others go on."""
        steps: list[tuple[str, Callable[[], None]]] = []
        if change.situation and self.outputs.running:
            # The snapshot is built only for a reader: with no pins, a round of 1,000 first
            # results would otherwise rebuild it 1,000 times (measured: 26x CPU per probe).
            steps.append(("outputs", lambda: self.outputs.update(self.monitor.snapshot())))
        steps.append(("notifications", lambda: self.notifier.on_change(change)))
        steps.append(("events", lambda: self.events.on_change(change)))
        if self.mqtt is not None:
            mqtt = self.mqtt
            steps.append(("mqtt", lambda: mqtt.update(change)))
        if self.fleet is not None:
            fleet = self.fleet
            steps.append(("fleet", lambda: fleet.update(change)))
        steps.append(("webhooks", lambda: self.webhooks.on_change(change)))
        for name, step in steps:
            try:
                step()
            except Exception:  # a broken consumer must never stop the monitor or the others
                log.exception("%s failed on %s", name,
                              ", ".join(e.type for e in change.events) or "a state change")

    def publish(self, event: Event) -> None:
        """An event no state change carries (a heartbeat ping) to events and webhooks."""
        self._fan_out(Change((event,)))

    def apply_findings(self, findings: Findings) -> None:
        """A collector's findings: its new targets join the monitor, vanished ones leave,
        then each result takes the same path as a probe's. What they changed fans out once,
        together: a thousand fleet sites heard at once are one new snapshot, not thousands."""
        known = self._collected.setdefault(findings.source, set())
        changes: list[Change] = []
        for target_id, target in findings.targets.items():
            if target_id not in known or self.monitor.state_of(target_id) is None:
                known.add(target_id)
                changes.append(self.monitor.set_target(target))
        if not findings.partial:
            for gone in sorted(known - set(findings.targets)):
                known.discard(gone)
                changes.append(self.monitor.remove(gone))
        for result in findings.results:
            taken = self._take(result)
            if taken is not None:
                changes.append(taken[1])
        self._apply(_merged(changes))

    def _held(self, target: Target) -> str | None:
        """The monitor asks: is this target's failure the fleet's to decide? (pingr.fleet)"""
        return self.fleet.held(target) if self.fleet is not None else None

    def _fleet_submit(self, findings: Findings | None, reconsider: bool) -> None:
        """The fleet's verdicts (sites, mirrored alerts, shared checks, the uplink) join the
        engine like a collector's findings; when this node's uplink just went down, targets
        already down become unreachable (one alert for the uplink, not one per target)."""
        if findings is not None:
            self.apply_findings(findings)
        if reconsider:
            self._apply(self.monitor.reconsider())

    def _containers_changed(self, found: list[Transition]) -> None:
        """Containers changed state or health, or began a restart loop: kept in their
        timelines and told as container.* events (SSE, webhooks)."""
        self.timeline.record(found)
        for t in found:
            state = self.monitor.state_of(f"container:{t.name}")
            data = {"container": t.name, "id": t.container_id[:12], "exit_code": t.exit_code,
                    "detail": t.detail}
            self.publish(Event(t.event_type, t.ts, state.target if state else None, t.old,
                               t.new, data=data))

    async def _collect_host(self) -> None:
        self.apply_findings(await self.host.collect())
        await self.resources.record_host(self.host.sampler.latest)

    async def _sample_containers(self) -> None:
        assert self.container_stats is not None
        await self.resources.record_containers(await self.container_stats.sample())

    def _silence_edge(self, event: Event) -> None:
        self._apply(self.monitor.refresh(event))

    def _outputs_changed(self) -> None:
        if self.mqtt is not None:
            self.mqtt.outputs_changed()

    # ------------------------------------------------------------------ liveness

    def _liveness_inputs(self) -> Inputs:
        return Inputs(self.scheduler.intervals(), self.monitor.last_result_ms,
                      self.scheduler.last_beat, self.scheduler.dead_loops())

    def _check_liveness(self) -> Verdict:
        """The one liveness value: evaluated here, read by outputs (through the snapshot),
        the systemd watchdog, /health and alert-status."""
        before = self.liveness.verdict
        verdict = self.liveness.evaluate(self._liveness_inputs())
        if verdict.healthy != before.healthy:
            if verdict.healthy:
                log.info("appliance healthy again (%s)", verdict.reason)
            else:
                log.error("appliance UNHEALTHY: %s; the dead-man output drops%s", verdict.reason,
                          f" and systemd restarts pingr within {self.sd.watchdog:.0f}s"
                          if self.sd.watchdog else "")
        change = self.monitor.set_liveness(verdict.stale, verdict.healthy)
        if change is not None:
            self._apply(change)
        self._check_problems()
        return verdict

    def _check_problems(self) -> None:
        """Degraded or not: alert-status, /health, MQTT and the tower say so (one value)."""
        change = self.monitor.set_problems(self.problems())
        if change is not None:
            self._apply(change)

    async def _watch(self) -> None:
        """Re-check liveness when it can change, and ping systemd's watchdog while healthy."""
        watchdog = self.sd.watchdog
        while True:
            wait = self.liveness.next_check(self._liveness_inputs(), LIVENESS_MAX_WAIT)
            if watchdog:
                wait = min(wait, watchdog / 3)
            await asyncio.sleep(wait)
            verdict = self._check_liveness()
            if verdict.healthy and watchdog:
                # Pings only while probes really finish: a hung scheduler stops them.
                self.sd.send("WATCHDOG=1")

    # ------------------------------------------------------------------ commands

    def acknowledge(self, alert_id: int | None, by: str) -> list[Alert]:
        """The one acknowledge path: API, button and MQTT all come here.

        Raises KeyError for an unknown alert and ValueError for one already resolved.
        """
        try:
            acked, change = self.monitor.acknowledge(alert_id, by)
        except KeyError:
            if alert_id is not None and self.store.alert(alert_id) is not None:
                raise ValueError(f"alert {alert_id} is already resolved") from None
            raise
        self._apply(change)
        return acked

    def lamp_test(self, names: list[str] | None = None,
                  duration: float | None = None) -> list[str]:
        """Run the lamp test (every output that takes part, or the named ones)."""
        done = self.outputs.lamp_test(names, duration)
        self._outputs_changed()
        return done

    def on_button(self, action: str, by: str) -> None:
        """A button's action, queued onto the loop by the outputs part."""
        if action == "acknowledge":
            acked = self.acknowledge(None, by)  # the API's path: POST /alerts/ack
            log.info("%s pressed: %d open alerts acknowledged", by, len(acked))
        elif action == "lamp_test":
            log.info("%s held: lamp test", by)
            self.lamp_test()

    def checkin(self, token: str, kind: str, *, ip: str, success: bool = True,
                message: str | None = None, latency_ms: int | None = None,
                exit_code: int | None = None) -> dict[str, Any]:
        """A heartbeat ping (raises HeartbeatError for the API to answer)."""
        checkin = self.heartbeats.ping(token, kind, ip=ip, success=success, message=message,
                                       latency_ms=latency_ms, exit_code=exit_code)
        self.publish(checkin.event)
        if checkin.result is not None:
            self.on_result(checkin.result)
        return checkin.answer

    async def update_thresholds(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change host thresholds at run time (ValueError on bad input; nothing changes)."""
        before = self.host.interval
        findings = await self.host.update(changes)
        if findings is not None:
            self.apply_findings(findings)
        if self.host.interval != before:
            self.scheduler.set_job("host", self.host.interval,
                                   min(COLLECTOR_TIMEOUT, self.host.interval), self._collect_host,
                                   first_delay=self.host.interval)
        return self.host.describe()

    # ------------------------------------------------------------------ targets

    @property
    def targets(self) -> dict[str, Target]:
        """The stored targets by id (pingr.targetadmin keeps them)."""
        return self.target_admin.targets

    # ------------------------------------------------------------------ health

    def problems(self) -> tuple[str, ...]:
        """What keeps the appliance from doing its whole job, in the user's words."""
        out = []
        if self.outputs.problem:
            out.append(f"GPIO outputs: {self.outputs.problem}")
        if self.store.degraded is not None:
            # Probes, the monitor, outputs, MQTT and alert-status run on; history waits.
            out.append(f"storage degraded: {self.store.last_error}")
        elif self.store.last_error is not None:
            out.append(f"database: {self.store.last_error}")
        return tuple(out)

    def health(self) -> Health:
        last = self.monitor.last_result_ms
        now = self.clock_ms()
        verdict = self.liveness.verdict
        db_error = self.store.last_error
        return Health(
            ok=db_error is None and not verdict.stale,
            db_error=db_error,
            enabled_targets=sum(t.enabled for t in self.targets.values()),
            last_result_ms=last,
            seconds_since_last_result=round((now - last) / 1000, 3) if last is not None else None,
            stale=verdict.stale,
            healthy=verdict.healthy,
            reason=verdict.reason,
            problems=self.problems(),
            uptime_seconds=round(time.monotonic() - self.started_at, 1),
            disk_bytes_written=self.write_meter.sample(),
            disk_bytes_per_day=self.write_meter.per_day(),
            db_size_bytes=self.store.file_size(),
        )
