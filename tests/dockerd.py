"""A private Docker engine for tests: own data, exec root, pidfile and socket; a busybox image."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

IMAGE = "pingr-test-busybox:latest"
TEST_LABEL = "pingr.test"


class Engine:
    """dockerd started and stopped by the tests (the daemon-restart test stops it mid-run)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.sock_path = base / "docker.sock"
        self.socket = f"unix://{self.sock_path}"
        self.log = base / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        """Start dockerd and wait until it answers; raise RuntimeError with its log otherwise."""
        (self.base / "data").mkdir(exist_ok=True)
        (self.base / "exec").mkdir(exist_ok=True)
        cmd = [
            shutil.which("dockerd") or "dockerd",
            "--data-root", str(self.base / "data"),
            "--exec-root", str(self.base / "exec"),
            "--pidfile", str(self.base / "dockerd.pid"),
            "--host", self.socket,
            # Containers use network_mode="none": no bridge, no iptables rules on the host.
            "--bridge", "none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
            "--userland-proxy=false",
        ]
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child, closed with it
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.proc.returncode}: {self.why()}")
            try:
                with closing(self.client()) as c:
                    if c.ping():
                        return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dockerd did not answer within {timeout:.0f}s: {self.why()}")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM and wait (dockerd stops its containers and containerd); SIGKILL if stuck."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.socket, timeout=30)

    def why(self) -> str:
        """The log line that says why dockerd stopped (its start-up warnings come first and
        are not the reason), else the end of its log."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        for line in reversed(lines):
            if line.startswith("failed to start daemon") or "level=fatal" in line:
                return line
        return "\n".join(lines[-15:]) or "(empty log)"

    def ensure_image(self) -> str:
        """A tiny image from the host's static busybox (no registry is reachable)."""
        with closing(self.client()) as c:
            if any(IMAGE in (i.tags or []) for i in c.images.list()):
                return IMAGE
            c.api.import_image_from_data(busybox_rootfs(), repository=IMAGE.split(":")[0],
                                         tag=IMAGE.split(":")[1])
        return IMAGE


def busybox_rootfs() -> bytes:
    """A root filesystem tar: /bin/busybox plus one symlink per applet, and /tmp."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox not found (Debian package busybox-static)")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, "bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return buf.getvalue()


def _why_not() -> str | None:
    if shutil.which("dockerd") is None:
        return "dockerd not installed (Debian package docker.io; tests/bootstrap.sh installs it)"
    if shutil.which("busybox") is None:
        return "busybox not installed (Debian package busybox-static)"
    if os.geteuid() != 0:
        return "starting a Docker engine needs root"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Engine]:
    """A running private engine with the busybox image; skips with the reason if impossible."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    # Short path: unix socket paths are limited to 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="pingr-dockerd-"))
    engine = Engine(base)
    try:
        engine.start()
        engine.ensure_image()
    except RuntimeError as exc:
        engine.stop()
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"cannot start a Docker engine here: {exc}")
    yield engine
    engine.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def docker_env(docker_engine: Engine) -> Iterator[Engine]:
    """The engine, running, with the containers a test created removed afterwards."""
    if docker_engine.proc is None:
        docker_engine.start()
    yield docker_engine
    if docker_engine.proc is None:
        docker_engine.start()
    with closing(docker_engine.client()) as c:
        for ct in c.containers.list(all=True, filters={"label": TEST_LABEL}):
            ct.remove(force=True)
