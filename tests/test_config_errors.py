"""Config errors all at once, duplicate YAML keys, sub-second intervals, bad ports, --port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from pingr.config import ConfigError, load_config, parse_config
from tests.conftest import ADMIN_KEY, SLOW

BAD = """\
targets:
  - name: a
    type: icmp
    host: 127.0.0.1
    interval: 5x
    failure_threshold: 0
  - name: a
    type: icmp
    host: 127.0.0.1
    depends_on: ghost
  - name: b
    type: tcp
    host: 127.0.0.1
    port: 99999
    interval: 0.1ms
  - {name: c, type: icmp, host: 127.0.0.1, depends_on: d, interval: 0s}
  - {name: d, type: icmp, host: 127.0.0.1, depends_on: c}
"""


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "p.yaml")
    return err.value.errors


def test_every_error_at_once():
    """A bad duration no longer hides the other errors of its target, and duplicate names,
    unknown depends_on and cycles come with the rest, not after it is fixed."""
    assert _errors(BAD) == [
        "p.yaml:5:5: targets[0].interval: invalid duration '5x': use a number with a unit: "
        "30s, 5m, 2h, 7d",
        "p.yaml:6:5: targets[0].failure_threshold: Input should be greater than or equal to 1",
        "p.yaml:7:5: targets[1].name: duplicate target name 'a' (targets[0] has it too)",
        "p.yaml:10:5: targets[1].depends_on: target 'a' depends_on unknown target 'ghost'",
        "p.yaml:14:5: targets[2].port: Input should be less than or equal to 65535",
        "p.yaml:15:5: targets[2].interval: interval must be at least 1s, got '0.1ms'",
        "p.yaml:16:44: targets[3].depends_on: depends_on cycle: c -> d -> c",
        "p.yaml:16:59: targets[3].interval: interval must be at least 1s, got '0s'",
    ]


def test_graph_errors_alone_are_all_reported():
    errors = _errors("targets:\n  - {name: a, type: icmp, host: 127.0.0.1, depends_on: x}\n"
                     "  - {name: a, type: icmp, host: 127.0.0.2, depends_on: y}\n")
    assert errors == [
        "p.yaml:2:44: targets[0].depends_on: target 'a' depends_on unknown target 'x'",
        "p.yaml:3:6: targets[1].name: duplicate target name 'a' (targets[0] has it too)",
        "p.yaml:3:44: targets[1].depends_on: target 'a' depends_on unknown target 'y'",
    ]


def test_duplicate_yaml_keys_are_errors():
    text = ("targets:\n  - {name: a, type: icmp, host: 127.0.0.1}\nport: 9009\n"
            "targets:\n  - {name: b, type: icmp, host: 127.0.0.1}\n")
    assert _errors(text) == [
        "p.yaml:4:1: targets: duplicate key 'targets' (also on line 1; only one is used)"]
    assert _errors("auth:\n  rate_limit_per_minute: 5\n  rate_limit_per_minute: 6\n") == [
        "p.yaml:3:3: auth.rate_limit_per_minute: duplicate key 'rate_limit_per_minute' "
        "(also on line 2; only one is used)"]


def test_sub_second_intervals_are_refused_not_rounded():
    for spelling in ("0s", "0.1ms", "500ms"):
        [error] = _errors(f"targets:\n  - {{name: a, type: icmp, host: 127.0.0.1, "
                          f"interval: {spelling}}}\n")
        assert f"interval must be at least 1s, got '{spelling}'" in error
    config = parse_config("targets:\n  - {name: a, type: icmp, host: 127.0.0.1, interval: 1s}\n")
    assert config.targets[0].interval_seconds == 1


def test_bad_port_in_the_environment_is_a_clear_error():
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"PINGR_PORT": "abc"})
    assert err.value.errors == ["$PINGR_PORT: invalid value 'abc': expected a port number "
                                "from 0 to 65535"]
    out = subprocess.run([sys.executable, "-m", "pingr", "run"], capture_output=True, text=True,
                         env={**os.environ, "PINGR_PORT": "abc"}, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip() == ("$PINGR_PORT: invalid value 'abc': expected a port number "
                                  "from 0 to 65535")
    assert "invalid literal" not in out.stderr


def test_run_takes_host_and_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PINGR_DB": str(tmp_path / "p.db"), "PINGR_API_KEY": ADMIN_KEY,
           "PINGR_PORT": "1"}  # the command line wins over the environment
    env.pop("PINGR_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "pingr", "run", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30 * SLOW
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
                break
            except httpx.HTTPError:
                assert time.time() < deadline and proc.poll() is None
                time.sleep(0.2)
        assert r.json()["version"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/api/v1/" in err
    out = subprocess.run([sys.executable, "-m", "pingr", "run", "--port", "http"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "invalid port 'http': expected a port number from 0 to 65535" in out.stderr
