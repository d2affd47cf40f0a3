"""Composition root: builds and owns every part, runs them, and stops them cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError
from sqlmodel import select

from pingr import __version__
from pingr.api.auth import Authenticator, KeyRing, create_key
from pingr.api.schemas import HealthOut
from pingr.config import (
    Config,
    TargetBase,
    check_dependencies,
    database_path,
    default_targets,
    spool_path,
    state_directory,
)
from pingr.models import ApiKeyRow, Target, parse_target_spec
from pingr.monitor import Monitor
from pingr.probes import ProbeContext
from pingr.probes.icmp import detect_mode
from pingr.scheduler import Scheduler
from pingr.store import Store
from pingr.systemd import Heartbeat, Notifier
from pingr.timeutil import from_ms, now_ms
from pingr.writemeter import WriteMeter

log = logging.getLogger(__name__)


class AppError(Exception):
    """A problem the API reports as an HTTP status with a message."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Server(uvicorn.Server):
    """uvicorn inside our event loop; signals are ours, so shutdown runs our safe-state code."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class App:
    """Everything pingr runs, built from one Config."""

    def __init__(self, config: Config, *, env: dict[str, str] | None = None,
                 clock_ms: Callable[[], int] = now_ms, console: Any = None) -> None:
        self.config = config
        self.env = dict(os.environ if env is None else env)
        self.clock_ms = clock_ms
        self.console = console if console is not None else sys.stderr
        self.db_path = database_path(config, self.env)
        st = config.storage
        self.store = Store(self.db_path, flush_interval=st.flush_interval,
                           commit_interval=st.commit_interval, batch_size=st.batch_size,
                           retention_seconds=st.retention, clock_ms=clock_ms, raw=st.raw,
                           raw_sample_seconds=st.raw_sample_interval,
                           minute_retention_seconds=st.minute_retention,
                           hour_retention_seconds=st.hour_retention, max_size=st.max_size,
                           spool_path=spool_path(config, self.db_path, self.env))
        self.write_meter = WriteMeter()
        self.monitor = Monitor(self.store, stale_factor=config.alerts.stale_factor,
                               clock_ms=clock_ms)
        self.ctx = ProbeContext(clock_ms=clock_ms)
        self.scheduler = Scheduler(self.monitor.process, self.ctx,
                                   max_concurrency=config.scheduler.max_concurrency,
                                   stagger_seconds=config.scheduler.stagger, clock_ms=clock_ms)
        self.keys = KeyRing(self.store)
        self.auth = Authenticator(self.keys, self.store,
                                  per_minute=config.auth.rate_limit_per_minute,
                                  failures_per_minute=config.auth.auth_failures_per_minute,
                                  trusted_proxies=config.auth.trusted_proxies)
        self.targets: dict[str, Target] = {}
        from pingr.components import COMPONENTS

        self.components = [c for factory in COMPONENTS if (c := factory(self)) is not None]
        #: Routers of the optional parts, mounted next to the core ones.
        self.extra_routers: list[Any] = [r for c in self.components for r in c.routers]
        self.started_at = time.monotonic()
        self.tasks: list[asyncio.Task[Any]] = []
        self.server: _Server | None = None
        self._stop = asyncio.Event()
        self.listening = asyncio.Event()
        #: The port actually bound (differs from config.port when that is 0, as in tests).
        self.port: int = config.port
        self.key_file: Path | None = None
        self.bootstrap_key: str | None = None
        #: sd_notify to systemd (READY/STOPPING/WATCHDOG); a no-op outside a Type=notify unit.
        self.sd = Notifier(self.env)
        self.heartbeat: Heartbeat | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the store, reconcile config targets, restore state, start probing."""
        self.store.open()
        specs = self.config.targets or default_targets(self.port)
        targets = self.store.reconcile(specs, self.clock_ms())
        self.targets = {t.id: t for t in targets}
        if any(t.enabled and t.spec.type == "icmp" for t in targets):
            self.ctx.icmp_privileged = detect_mode()  # raises IcmpUnavailable with the fix
        self.monitor.load(targets)
        self._bootstrap_keys()
        self.keys.reload()
        for component in self.components:
            await component.start()
        self.monitor.resolve_orphans()
        # HTTP clients are built before probing, not inside the first HTTP probe, where the
        # build blocked the loop and counted against that probe's timeout (a false first
        # failure under qemu-user: ~0.8 s while it loaded the CA bundle; ~0.2 s since that is
        # deferred to the first TLS connection; ~30 ms on x86-64).
        for verify in sorted({t.spec.verify_tls for t in targets
                              if t.enabled and t.spec.type == "http"}):
            self.ctx.client(verify)
        self.monitor.probing_started()
        for target in targets:
            self.scheduler.set(target)
        loop = asyncio.get_running_loop()
        self.heartbeat = Heartbeat(self, self.sd, loop.time)
        self.tasks += [
            loop.create_task(self.store.run_writer(), name="store-writer"),
            loop.create_task(self.store.run_cleanup(self.config.storage.cleanup_interval),
                             name="retention"),
            loop.create_task(self._watch(), name="watch"),
        ]
        log.info("pingr %s monitoring %d targets; database %s", __version__,
                 sum(t.enabled for t in targets), self.db_path)

    async def stop(self) -> None:
        self.sd.send("STOPPING=1")
        await self.scheduler.stop()
        for component in reversed(self.components):
            try:
                await component.stop()
            except Exception:
                log.exception("stopping %s failed", component.name)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        await self.ctx.aclose()
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)
        self.sd.close()
        log.info("pingr stopped")

    async def _watch(self) -> None:
        """Once a second: staleness (a frozen monitor must never look OK), then the watchdog."""
        while True:
            await asyncio.sleep(1.0)
            self.monitor.check_stale()
            if self.heartbeat is not None:
                # Pings only while probes really finish; see pingr.systemd.Heartbeat.
                self.heartbeat.tick()

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT: listen, start, then stop everything cleanly."""
        from pingr.api import create_api

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        # Bind before anything starts: a port in use is a plain error, and with port 0 the
        # real port is known before the built-in self-probe target is made.
        sock = self._bind()
        self.port = sock.getsockname()[1]
        try:
            await self.start()
        except BaseException:
            sock.close()
            await self.stop()
            raise
        try:
            uconfig = uvicorn.Config(
                create_api(self), host=self.config.host, port=self.port,
                access_log=False, log_level="warning", lifespan="off", server_header=False,
            )
            self.server = _Server(uconfig)
            server_task = loop.create_task(self.server.serve(sockets=[sock]), name="http")
            stop_task = loop.create_task(self._stop.wait())
            started = loop.create_task(self._await_listening(), name="listening")
            await asyncio.wait({server_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            self.server.should_exit = True
            await server_task
            stop_task.cancel()
        finally:
            sock.close()
            await self.stop()

    def _bind(self) -> socket.socket:
        host, port = self.config.host, self.config.port
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        except ValueError:  # a host name: let the resolver pick
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY only on accepted sockets whose
        # proto says TCP, and without it Nagle + delayed ACKs cap the API near 700 requests/s.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
        sock.set_inheritable(True)
        return sock

    async def _await_listening(self) -> None:
        assert self.server is not None
        while not self.server.started:
            await asyncio.sleep(0.01)
        self.listening.set()
        self.sd.send(f"READY=1\nSTATUS=monitoring {sum(t.enabled for t in self.targets.values())}"
                     f" targets; API on port {self.port}")
        log.info("API listening on http://%s:%d/api/v1/", self.config.host, self.port)

    def request_stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ keys

    def _bootstrap_keys(self) -> None:
        """A known admin key from config/env, or on first start a new one printed once."""
        configured = self.config.auth.api_key
        with self.store.session() as s:
            has_keys = s.exec(select(ApiKeyRow).limit(1)).first() is not None
            if configured:
                from pingr.api.auth import hash_key

                row = s.exec(select(ApiKeyRow).where(ApiKeyRow.name == "bootstrap")).first()
                if row is None:
                    create_key(s, "bootstrap", "admin", configured)
                elif row.key_hash != hash_key(configured):
                    row.key_hash, row.prefix, row.enabled = (
                        hash_key(configured), configured[:10], True)
                    s.add(row)
                s.commit()
                return
            if has_keys:
                return
            _, plaintext = create_key(s, "admin", "admin")
            s.commit()
        self.bootstrap_key = plaintext
        key_file = Path(self.config.auth.key_file) if self.config.auth.key_file else (
            state_directory(self.env) if not self.config.storage.path else self.db_path.parent
        ) / "admin.key"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(plaintext + "\n")
        os.chmod(key_file, 0o600)
        self.key_file = key_file
        # The key goes to an interactive console only; under systemd stderr is the journal,
        # and secrets are never logged, so there only the file's path is shown.
        if getattr(self.console, "isatty", lambda: False)():
            print(f"\npingr: created the first admin API key (shown once):\n\n    {plaintext}\n",
                  file=self.console)
        log.warning("created the first admin API key; it is in %s (readable only by this user)",
                    key_file)

    async def keys_admin(self, action: str, **kw: Any) -> Any:
        """Key management on the writer thread; refreshes the in-memory key ring."""

        def plain(row: ApiKeyRow) -> ApiKeyRow:
            # A detached copy: the session's objects expire at commit.
            return ApiKeyRow(**row.model_dump())

        def work(s: Any) -> Any:
            if action == "list":
                return [plain(r) for r in s.exec(select(ApiKeyRow).order_by(ApiKeyRow.id))]
            if action == "create":
                row, plaintext = create_key(s, kw["name"], kw["scope"])
                return plain(row), plaintext
            row = s.get(ApiKeyRow, kw["key_id"])
            if row is None:
                return None
            if action == "delete":
                s.delete(row)
                return plain(row)
            row.enabled = action == "enable"
            s.add(row)
            s.flush()
            return plain(row)

        await self.store.commit()  # usage counts first, so the listing is current
        out = await self.store.write(work)
        if action != "list":
            self.keys.reload()
        return out

    # ------------------------------------------------------------------ targets

    def target_ids_by_pk(self) -> dict[int, str]:
        return {t.pk: t.id for t in self.targets.values()}

    def _check_graph(self, spec: TargetBase, replacing: str | None = None) -> None:
        graph = {t.name: t.spec.depends_on for t in self.targets.values() if t.id != replacing}
        if spec.name in graph:
            raise AppError(409, f"a target named {spec.name!r} already exists")
        graph[spec.name] = spec.depends_on
        try:
            check_dependencies(graph)
        except ValueError as exc:
            raise AppError(400, str(exc)) from None

    async def create_target(self, spec: TargetBase) -> Target:
        self._check_graph(spec)
        ts = self.clock_ms()
        target = await self.store.write(lambda s: self.store.insert_target(s, spec, "api", ts))
        self._apply(target)
        log.info("target %r added", target.name)
        return target

    async def update_target(self, target: Target, changes: dict[str, Any]) -> Target:
        data = {**target.spec.model_dump(), **changes}
        if changes.get("type") and changes["type"] != target.spec.type:
            # Fields of the old type would be unknown to the new one.
            data = {k: v for k, v in data.items() if k in changes or k in TargetBase.model_fields}
        try:
            spec = parse_target_spec(data)
        except ValidationError as exc:
            raise AppError(400, "; ".join(
                f"{'.'.join(str(p) for p in e['loc'][1:] or e['loc'])}: {e['msg']}"
                for e in exc.errors())) from None
        self._check_graph(spec, replacing=target.id)
        ts = self.clock_ms()
        new = await self.store.write(lambda s: self.store.update_target(s, target.pk, spec, ts))
        self._apply(new)
        return new

    async def delete_target(self, target: Target) -> None:
        dependants = [t.name for t in self.targets.values() if t.spec.depends_on == target.name]
        if dependants:
            raise AppError(409, f"targets depend on {target.name!r}: {', '.join(dependants)}")
        await self.store.write(lambda s: self.store.delete_target(s, target.pk))
        self.targets.pop(target.id, None)
        self.scheduler.remove(target.id)
        self.monitor.remove(target.id)
        await self.store.forget(target.pk)
        log.info("target %r deleted", target.name)

    def _apply(self, target: Target) -> None:
        self.targets[target.id] = target
        if target.enabled and target.spec.type == "icmp" and self.ctx.icmp_privileged is None:
            try:
                self.ctx.icmp_privileged = detect_mode()
            except RuntimeError as exc:
                log.error("%s", exc)
        self.monitor.set_target(target)
        self.scheduler.set(target)

    # ------------------------------------------------------------------ alerts

    def acknowledge(self, alert_id: int | None, by: str) -> list[dict[str, Any]]:
        """The one acknowledge path: API, button and MQTT all come here."""
        return self.monitor.acknowledge(alert_id, by)

    # ------------------------------------------------------------------ health

    def health(self) -> HealthOut:
        last = self.monitor.last_result_ms
        now = self.clock_ms()
        db = "ok" if self.store.last_error is None else f"error: {self.store.last_error}"
        stale = self.monitor.stale
        return HealthOut(
            ok=db == "ok" and not stale,
            db=db,
            enabled_targets=sum(t.enabled for t in self.targets.values()),
            last_result_ts=from_ms(last) if last is not None else None,
            seconds_since_last_result=round((now - last) / 1000, 3) if last is not None else None,
            stale=stale,
            version=__version__,
            uptime_seconds=round(time.monotonic() - self.started_at, 1),
            disk_bytes_written=self.write_meter.sample(),
            disk_bytes_per_day=self.write_meter.per_day(),
            db_size_bytes=self.store.file_size(),
        )
