"""pi-setup.sh: shellcheck, its flags, and an idempotent install in a fresh Debian root (chroot)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SETUP = REPO / "pi-setup.sh"
SCRIPTS = [SETUP, REPO / "image/build.sh", REPO / "image/firstboot.sh",
           REPO / "image/test-boot.sh", REPO / "image/test-gpio.sh", REPO / "scripts/test-arm64.sh",
           REPO / "scripts/debian-lib.sh"]
#: What pi-setup.sh needs from a checkout (the same list image/build.sh stages).
CHECKOUT = ["pingr", "pyproject.toml", "README.md", "pingr.example.yaml", "pi-setup.sh", "systemd"]


def test_shell_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (tests/bootstrap.sh installs it)")
    proc = subprocess.run(["shellcheck", "--severity=info", *map(str, SCRIPTS)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_help_documents_every_flag():
    proc = subprocess.run(["bash", str(SETUP), "--help"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0
    flags = set(re.findall(r"^\s+(--[a-z-]+)\)", SETUP.read_text(), re.M))
    assert {"--from", "--version", "--uninstall", "--purge", "--no-start"} <= flags
    for flag in flags:
        assert flag in proc.stdout, f"{flag} is not in --help"


def test_unknown_option_is_a_usage_error():
    proc = subprocess.run(["bash", str(SETUP), "--frobnicate"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert "unknown option --frobnicate" in proc.stderr


def _mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 first, then one-line sources)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith("deb ") and "security" not in line:
                    return line.split()[1]
    return "http://deb.debian.org/debian"


def _tree(root: Path, dirs: list[str]) -> dict[str, tuple[int, int, int, int, int]]:
    """Path -> (mode, uid, gid, size, mtime_ns) for everything under dirs: what 'changed' means."""
    out = {}
    for d in dirs:
        base = root / d
        if not base.exists():
            continue
        for p in [base, *base.rglob("*")]:
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                             st.st_mtime_ns)
    return out


def _group_members(root: Path, group: str) -> list[str]:
    for line in (root / "etc/group").read_text().splitlines():
        name, _, _, members = line.split(":")
        if name == group:
            return members.split(",") if members else []
    raise AssertionError(f"no group {group}")


@pytest.fixture
def debian_root(tmp_path):
    """A fresh Debian bookworm (minbase + systemd, as on any real install) made by debootstrap."""
    if os.geteuid() != 0:
        pytest.skip("debootstrap and chroot need root")
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (tests/bootstrap.sh installs it)")
    root = tmp_path / "root"
    proc = subprocess.run(["debootstrap", "--variant=minbase", "--include=systemd", "bookworm",
                           str(root), _mirror()], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    src = root / "srv/pingr"
    src.mkdir(parents=True)
    for name in CHECKOUT:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    # pip inside must trust what pip here trusts (a TLS-intercepting proxy's CA, if any).
    bundle = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
    if bundle.exists():
        shutil.copy(bundle, root / "root/host-ca.crt")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _setup(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"]
    if (root / "root/host-ca.crt").exists():
        env.append("PIP_CERT=/root/host-ca.crt")
    return subprocess.run(["chroot", str(root), "/usr/bin/env", "-i", *env,
                           "/srv/pingr/pi-setup.sh", *args],
                          capture_output=True, text=True, timeout=900)


@contextlib.contextmanager
def _booted(root: Path) -> Iterator[Callable[[str], subprocess.CompletedProcess[str]]]:
    """Boot `root` with systemd-nspawn (private network: loopback only) and run commands in it."""
    proc = subprocess.Popen(["systemd-nspawn", "-q", "--register=no", "--keep-unit",
                             "--private-network", "-D", str(root), "-b"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def init_pid() -> str:
            out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)],
                                 capture_output=True, text=True).stdout.split()
            return out[0] if out else ""

        def run(cmd: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["nsenter", "-t", init_pid(), "-a", "/usr/bin/env", "-i",
                                   "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
                                   "/bin/sh", "-c", cmd],
                                  capture_output=True, text=True, timeout=300)

        def booted() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited with {proc.returncode}")
            if not init_pid():
                return False
            state = run("systemctl is-system-running").stdout.strip()
            return state in ("running", "degraded")

        _until(booted, 120)
        yield run
    finally:
        proc.terminate()  # nspawn turns SIGTERM into a clean shutdown of the container
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _in_chroot() -> bool:
    """True inside a chroot, as Debian's ischroot decides (0: chroot, 2: cannot tell)."""
    if shutil.which("ischroot") is None:
        return False
    return subprocess.run(["ischroot"], capture_output=True).returncode != 1


def _show(run: Callable[[str], subprocess.CompletedProcess[str]], *props: str) -> dict[str, str]:
    out = run("systemctl show pingr " + " ".join(f"-p {p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.5)


def test_install_twice_then_uninstall_in_a_fresh_debian_root(debian_root):
    root = debian_root
    first = _setup(root)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    # Installed: packages, user in gpio, venv, lgpio, units enabled.
    assert (root / "var/lib/dpkg/info/python3-venv.list").exists()
    assert "pingr" in _group_members(root, "gpio")
    version = subprocess.run(["chroot", str(root), "/opt/pingr/venv/bin/pingr", "--version"],
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("pingr "), version.stderr
    # gpiozero's pin library for real relays, in the venv (PyPI's wheel here).
    assert "installed lgpio " in out
    # (Importing lgpio makes its notification FIFO in LG_WD, else in the working directory.)
    lgpio = subprocess.run(["chroot", str(root), "/usr/bin/env", "LG_WD=/tmp",
                            "/opt/pingr/venv/bin/python", "-c",
                            "import lgpio; print(hex(lgpio.LGPIO_PY_VERSION))"],
                           capture_output=True, text=True, timeout=60)
    assert lgpio.returncode == 0 and lgpio.stdout.strip() == "0x20200", lgpio.stderr
    # No made-up example targets: in a chroot (an image build) the config is left to the first
    # boot, where pingr-init.service runs `pingr init` on the machine's real network.
    conf = root / "etc/pingr/pingr.yaml"
    assert not conf.exists()
    assert "pingr-init.service writes it at the first boot" in out
    for unit in ("pingr.service", "pingr-init.service"):
        assert (root / "etc/systemd/system" / unit).read_text() == \
            (root / "srv/pingr/systemd" / unit).read_text()
        assert (root / "etc/systemd/system/multi-user.target.wants" / unit).is_symlink()
    wants = root / "etc/systemd/system/multi-user.target.wants/pingr.service"
    gid = next(line.split(":")[2] for line in (root / "etc/group").read_text().splitlines()
               if line.startswith("pingr:"))
    sysctl = (root / "etc/sysctl.d/99-pingr-ping.conf").read_text()
    assert f"net.ipv4.ping_group_range = {gid} {gid}" in sysctl
    # What cannot run in a chroot is reported, not fatal; the host's kernel is left alone.
    assert "skipped 'systemctl start pingr.service'" in out
    assert "skipped applying /etc/sysctl.d/99-pingr-ping.conf" in out

    # A second run changes nothing at all.
    watched = ["etc", "opt", "usr/local", "var/lib/pingr", "srv"]
    before = _tree(root, watched)
    second = _setup(root)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _tree(root, watched) == before
    assert "wrote" not in second.stdout and "created" not in second.stdout, second.stdout
    assert "installed lgpio" not in second.stdout, second.stdout
    assert "already installed" in second.stdout and "lgpio " in second.stdout

    # A config of the user's own is kept as it is, and nothing else changes either.
    conf.write_text((root / "srv/pingr/pingr.example.yaml").read_text() + "# my own edit\n")
    before = _tree(root, watched)
    third = _setup(root)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "keeping the existing /etc/pingr/pingr.yaml" in third.stdout
    assert _tree(root, watched) == before
    assert conf.read_text().endswith("# my own edit\n")

    # Booted with systemd as PID 1 (a container with only a loopback network), the same script
    # now starts the service, waits for its health and prints the URL and the admin key.
    if shutil.which("systemd-nspawn") is None:
        pytest.skip("systemd-nspawn is not installed (tests/bootstrap.sh installs it)")
    if _in_chroot():
        pytest.skip("the chroot part passed; systemd-nspawn cannot boot a container from "
                    "inside a chroot (scripts/test-arm64.sh runs the suite in one)")
    with _booted(root) as run:
        third = run("/srv/pingr/pi-setup.sh")
        assert third.returncode == 0, third.stdout + third.stderr
        assert "pingr is up: http://" in third.stdout
        key = (root / "var/lib/pingr/admin.key").read_text().strip()
        assert key.startswith("pingr_") and f"    {key}" in third.stdout
        show = _show(run, "Type", "ActiveState", "StatusText", "WatchdogUSec", "User")
        assert show["Type"] == "notify" and show["ActiveState"] == "active", show
        assert show["User"] == "pingr" and show["WatchdogUSec"] == "1min", show
        assert "API on port 9009" in show["StatusText"], show  # from our READY=1 message
        # The results spool is in RAM (RuntimeDirectory=/run/pingr), never on the card.
        assert run("test -f /run/pingr/pingr.db-spool").returncode == 0
        assert not (root / "var/lib/pingr/pingr.db-spool").exists()
        # A frozen pingr sends no WATCHDOG=1: systemd kills and restarts it (a short
        # WatchdogSec here so the test does not wait a minute).
        dropin = root / "etc/systemd/system/pingr.service.d/test-watchdog.conf"
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text("[Service]\nWatchdogSec=3s\nTimeoutAbortSec=5s\n")
        assert run("systemctl daemon-reload && systemctl restart pingr").returncode == 0
        pid = _show(run, "MainPID")["MainPID"]
        assert run(f"kill -STOP {pid}").returncode == 0
        _until(lambda: _show(run, "NRestarts")["NRestarts"] == "1", 60)
        _until(lambda: _show(run, "ActiveState")["ActiveState"] == "active", 60)
        assert _show(run, "MainPID")["MainPID"] != pid
        assert "Watchdog timeout" in run("journalctl -u pingr --no-pager").stdout
        dropin.unlink()
        # Without a config, pingr-init.service writes one from `pingr init` (this container has
        # no gateway: its DNS servers, or the loopback target), never the example's addresses.
        assert run("mv /etc/pingr/pingr.yaml /etc/pingr/mine.yaml").returncode == 0
        init = run("systemctl start pingr-init.service && journalctl -u pingr-init --no-pager")
        assert init.returncode == 0, init.stdout + init.stderr
        assert "pingr-init: wrote /etc/pingr/pingr.yaml" in init.stdout, init.stdout
        written = conf.read_text()
        assert "written by `pingr init`" in written and "192.168.1.1\n" not in written
        assert run("/opt/pingr/venv/bin/pingr check-config /etc/pingr/pingr.yaml").returncode == 0
        assert run("mv /etc/pingr/mine.yaml /etc/pingr/pingr.yaml").returncode == 0
        # Uninstalling under systemd stops the service.
        gone = run("/srv/pingr/pi-setup.sh --uninstall")
        assert gone.returncode == 0, gone.stdout + gone.stderr
        assert run("systemctl is-active pingr").stdout.strip() in ("inactive", "unknown")

    # Uninstall keeps config, data and the user; --purge removes them.
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not (root / "opt/pingr").exists()
    assert not (root / "etc/systemd/system/pingr.service").exists()
    assert not wants.is_symlink() and not wants.exists()
    assert not (root / "etc/sysctl.d/99-pingr-ping.conf").exists()
    assert conf.exists()
    assert "pingr" in _group_members(root, "gpio")
    purged = _setup(root, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not (root / "etc/pingr").exists()
    assert not any(line.startswith("pingr:") for line in
                   (root / "etc/passwd").read_text().splitlines())
    # Uninstalling what is not there is fine too.
    again = _setup(root, "--uninstall", "--purge")
    assert again.returncode == 0, again.stdout + again.stderr
