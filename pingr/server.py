"""Runs an App behind its HTTP API: bind, start, serve until SIGTERM/SIGINT, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
import socket
from collections.abc import Callable, Iterator

import uvicorn

from pingr import logrepeat
from pingr.api.front import Front
from pingr.app import App
from pingr.config import Config, ConfigError
from pingr.httpconns import Tracker, connection_plan, protocol_class, raise_fd_limit

log = logging.getLogger(__name__)

#: How long an idle keep-alive connection stays open. Longer than the slowest poll interval
#: the documents recommend (PiAlert: "Maximum: 5 minutes"), so the server never closes a
#: poller's connection just as it sends its next request (uvicorn's default, 5 s, equal to
#: Home Assistant's poll, made a real HA see "Server disconnected without sending a
#: response"). Idle connections cost a descriptor each; their number is bounded separately.
KEEP_ALIVE = 330


class _Uvicorn(uvicorn.Server):
    """uvicorn inside our event loop; signals are ours, so shutdown runs our safe-state code."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.exit_now = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        """Wait for the stop. uvicorn's own loop wakes ten times a second to poll for it and
        refresh the Date header (measured: 0.2 CPU s/min and 10 wake-ups/s of an idle
        appliance); the Date header is refreshed per request instead (pingr.httpconns)."""
        await self.on_tick(0)
        await self.exit_now.wait()


class Server:
    """One App and its API on one socket."""

    def __init__(self, app: App, reload_config: Callable[[], Config] | None = None) -> None:
        self.app = app
        #: Reads the config file again for SIGHUP (raises ConfigError with every error).
        self.reload_config = reload_config
        self._reloading: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        self._stop = asyncio.Event()
        self.uvicorn: _Uvicorn | None = None
        #: Open HTTP connections (bounded) and how many were closed or refused.
        self.connections: Tracker | None = None

    @property
    def port(self) -> int:
        return self.app.port

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Run until asked to stop: listen, start, then stop everything cleanly."""
        app = self.app
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        # SIGHUP reloads the config (systemctl reload); by default it would kill pingr with
        # exit 129, outputs left as they were and systemd not restarting it.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        # More descriptors for probes and connections alike (the soft limit is often 1,024).
        fd_limit = raise_fd_limit()
        # Bind before anything starts: a port in use is a plain error, and with port 0 the
        # real port is known before the built-in self-probe target is made.
        sock = bind(app.config.host, app.config.port)
        app.port = sock.getsockname()[1]
        try:
            await app.start()
        except BaseException:
            sock.close()
            await app.stop()
            raise
        try:
            http = app.config.http
            cap, backlog = connection_plan(http.max_connections, fd_limit)
            self.connections = Tracker(cap, http.header_timeout)
            if cap < http.max_connections:
                log.warning("http.max_connections lowered to %d: most of the %d open files "
                            "this process may have stay for the probes", cap, fd_limit)
            config = uvicorn.Config(
                Front(app, lambda: whole_api(app)), host=app.config.host, port=app.port,
                access_log=False, log_level="warning", lifespan="off", server_header=False,
                http=protocol_class(self.connections),  # type: ignore[arg-type]
                backlog=backlog,
                timeout_keep_alive=KEEP_ALIVE,
            )
            # After uvicorn configured its loggers: repeated errors (a failing accept(), bad
            # requests) are written once a minute with a count.
            logrepeat.install()
            self.uvicorn = _Uvicorn(config)
            server_task = loop.create_task(self.uvicorn.serve(sockets=[sock]), name="http")
            stop_task = loop.create_task(self._stop.wait())
            started = loop.create_task(self._await_listening(), name="listening")
            await asyncio.wait({server_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            app.stopping = True
            self.uvicorn.should_exit = True
            self.uvicorn.exit_now.set()
            await server_task
            stop_task.cancel()
        finally:
            gc.unfreeze()  # what this run made may be collected again once it has stopped
            sock.close()
            await app.stop()

    def request_reload(self) -> None:
        if self._reloading is not None and not self._reloading.done():
            log.warning("SIGHUP: a reload is already running; ignored")
            return
        self._reloading = asyncio.get_running_loop().create_task(self.reload(), name="reload")

    async def reload(self) -> bool:
        """Read the config file again and apply it; an invalid one is refused with every error
        logged, and the running config stays."""
        if self.reload_config is None:
            log.warning("SIGHUP: no config file to reload (built-in defaults); nothing changed")
            return False
        log.info("SIGHUP: reloading the config")
        try:
            config = await asyncio.get_running_loop().run_in_executor(None, self.reload_config)
        except ConfigError as exc:
            for line in exc.errors:
                log.error("%s", line)
            log.error("config NOT reloaded (%d error%s); still running the previous one",
                      len(exc.errors), "" if len(exc.errors) == 1 else "s")
            return False
        try:
            await self.app.reload(config)
        except Exception:
            log.exception("applying the new config failed; parts of it may be in use")
            return False
        return True

    async def _await_listening(self) -> None:
        assert self.uvicorn is not None
        while not self.uvicorn.started:
            await asyncio.sleep(0.01)
        self.listening.set()
        # What start-up made (config, targets, routes, modules: ~150,000 objects) lives as long
        # as pingr does; frozen, a full collection no longer visits it. Measured with 1,000
        # targets: a full collection paused the event loop 200-250 ms about once a minute (every
        # probe due then waited), and visited ~12,000 objects in at most 13 ms once frozen.
        gc.freeze()
        app = self.app
        app.sd.send(f"READY=1\nSTATUS=monitoring {sum(t.enabled for t in app.targets.values())}"
                    f" targets; API on port {app.port}")
        log.info("API listening on http://%s:%d/api/v1/", app.config.host, app.port)


def whole_api(app: App) -> object:
    """The whole HTTP API, imported and built when the front door first needs it: FastAPI and
    every route and model are ~1 s of start-up and ~12 MiB that an appliance answering only
    alert-status and health never uses (pingr/api/front.py)."""
    from pingr.api.asgi import create_api

    return create_api(app)


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on host:port (a plain OSError naming both if in use)."""
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
