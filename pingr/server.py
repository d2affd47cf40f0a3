"""Runs an App behind its HTTP API: bind, start, serve until SIGTERM/SIGINT, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn

from pingr.api.asgi import create_api
from pingr.app import App

log = logging.getLogger(__name__)

#: How long an idle keep-alive connection stays open. Longer than the slowest poll interval
#: the documents recommend (PiAlert: "Maximum: 5 minutes"), so the server never closes a
#: poller's connection just as it sends its next request (uvicorn's default, 5 s, equal to
#: Home Assistant's poll, made a real HA see "Server disconnected without sending a
#: response"). Idle connections cost a descriptor each; their number is bounded separately.
KEEP_ALIVE = 330


class _Uvicorn(uvicorn.Server):
    """uvicorn inside our event loop; signals are ours, so shutdown runs our safe-state code."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Server:
    """One App and its API on one socket."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.listening = asyncio.Event()
        self._stop = asyncio.Event()
        self.uvicorn: _Uvicorn | None = None

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
            config = uvicorn.Config(
                create_api(app), host=app.config.host, port=app.port,
                access_log=False, log_level="warning", lifespan="off", server_header=False,
                timeout_keep_alive=KEEP_ALIVE,
            )
            self.uvicorn = _Uvicorn(config)
            server_task = loop.create_task(self.uvicorn.serve(sockets=[sock]), name="http")
            stop_task = loop.create_task(self._stop.wait())
            started = loop.create_task(self._await_listening(), name="listening")
            await asyncio.wait({server_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            app.stopping = True
            self.uvicorn.should_exit = True
            await server_task
            stop_task.cancel()
        finally:
            sock.close()
            await app.stop()

    async def _await_listening(self) -> None:
        assert self.uvicorn is not None
        while not self.uvicorn.started:
            await asyncio.sleep(0.01)
        self.listening.set()
        app = self.app
        app.sd.send(f"READY=1\nSTATUS=monitoring {sum(t.enabled for t in app.targets.values())}"
                    f" targets; API on port {app.port}")
        log.info("API listening on http://%s:%d/api/v1/", app.config.host, app.port)


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
