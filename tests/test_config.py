"""Config: zero-config defaults, located errors, env overrides, check-config and init."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pingr.cli import starter_config
from pingr.config import Config, ConfigError, config_paths, load_config, parse_config
from pingr.netinfo import default_gateways, dns_servers
from pingr.paths import database_path, state_directory
from pingr.timeutil import parse_duration

ROOT = Path(__file__).resolve().parent.parent
PINGR = [sys.executable, "-m", "pingr"]


def test_zero_config_defaults_probe_loopback_only():
    cfg = load_config(None, env={})
    assert (cfg.host, cfg.port) == ("0.0.0.0", 9009)
    targets = cfg.effective_targets()
    assert {t.type for t in targets} == {"icmp", "http"}
    for t in targets:
        host = t.host if t.type == "icmp" else t.url.split("/")[2].split(":")[0]
        assert ipaddress.ip_address(host).is_loopback
    assert any(t.type == "http" and t.url.endswith(":9009/api/v1/health") for t in targets)


def test_defaults_follow_port_override():
    cfg = load_config(None, env={"PINGR_PORT": "9123"})
    assert cfg.port == 9123
    assert any(":9123/api/v1/health" in getattr(t, "url", "") for t in cfg.effective_targets())


def test_state_directory_order(tmp_path):
    assert state_directory({"STATE_DIRECTORY": f"{tmp_path}/a:{tmp_path}/b"}) == tmp_path / "a"
    cfg = Config()
    assert database_path(cfg, {"STATE_DIRECTORY": str(tmp_path)}) == tmp_path / "pingr.db"
    cfg.storage.path = str(tmp_path / "x.db")
    assert database_path(cfg, {}) == tmp_path / "x.db"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the /var/lib/pingr choice")
def test_state_directory_prefers_var_lib_when_writable():
    assert state_directory({}) == Path("/var/lib/pingr")


def test_durations():
    assert parse_duration("30s") == 30
    assert parse_duration("5m") == 300
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("250ms") == 0.25
    assert parse_duration(12) == 12
    for bad in ("5 minutes", "-1s", "", "1y", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_env_overrides(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text("port: 1000\nhost: 127.0.0.1\n")
    env = {"PINGR_CONFIG": str(file), "PINGR_PORT": "2000", "PINGR_HOST": "::1",
           "PINGR_DB": str(tmp_path / "db.sqlite"), "PINGR_API_KEY": "k" * 40}
    cfg = load_config(None, env=env)
    assert (cfg.port, cfg.host) == (2000, "::1")
    assert cfg.storage.path == str(tmp_path / "db.sqlite")
    assert cfg.auth.api_key == "k" * 40
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"PINGR_PORT": "http"})
    assert "$PINGR_PORT" in err.value.errors[0]
    # A short key works (the Pingr agent's own example has 15 characters), with a warning.
    cfg = load_config(None, env={"PINGR_API_KEY": "short"})
    assert cfg.auth.api_key == "short"
    assert cfg.warnings()[0].startswith("auth.api_key is shorter than 16 characters")
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"PINGR_API_KEY": " "})
    assert "$PINGR_API_KEY" in err.value.errors[0]


BAD = """\
port: 9009
colour: blue
storage:
  retention: forever
targets:
  - name: router
    type: icmp
    host: 192.0.2.1
  - name: web
    type: http
    url: ftp://example
    interval: 30s
  - name: ssh
    type: tcp
    host: 192.0.2.1
  - name: dns
    type: carrier-pigeon
"""


def test_every_error_is_reported_with_its_location():
    with pytest.raises(ConfigError) as err:
        parse_config(BAD, "bad.yaml")
    lines = err.value.errors
    text = "\n".join(lines)
    assert "bad.yaml:2:1: colour: unknown setting" in text
    assert "bad.yaml:4:3: storage.retention: invalid duration 'forever'" in text
    assert "bad.yaml:11:5: targets[1].url: invalid url" in text
    assert "bad.yaml:13:5: targets[2].port: Field required" in text
    assert "bad.yaml:17:5: targets[3].type: unknown target type" in text
    assert len(lines) == 5


def test_unknown_target_field_and_duplicates_and_cycles():
    with pytest.raises(ConfigError) as err:
        parse_config("targets:\n  - {name: a, type: icmp, host: 127.0.0.1, colour: red}\n")
    assert "targets[0].colour: unknown setting" in err.value.errors[0]
    with pytest.raises(ConfigError) as err:
        parse_config("targets:\n  - {name: a, type: icmp, host: 127.0.0.1}\n"
                     "  - {name: a, type: icmp, host: 127.0.0.2}\n")
    assert "duplicate target name 'a'" in err.value.errors[0]
    with pytest.raises(ConfigError) as err:
        parse_config("targets:\n  - {name: a, type: icmp, host: 127.0.0.1, depends_on: b}\n"
                     "  - {name: b, type: icmp, host: 127.0.0.2, depends_on: a}\n")
    assert "depends_on cycle: a -> b -> a" in err.value.errors[0]
    with pytest.raises(ConfigError) as err:
        parse_config("targets:\n  - {name: a, type: icmp, host: 127.0.0.1, depends_on: gw}\n")
    assert "unknown target 'gw'" in err.value.errors[0]


def test_invalid_yaml_and_non_mapping():
    with pytest.raises(ConfigError) as err:
        parse_config("port: [1,\n", "x.yaml")
    assert err.value.errors[0].startswith("x.yaml:")
    assert "invalid YAML" in err.value.errors[0]
    with pytest.raises(ConfigError):
        parse_config("- 1\n- 2\n")


def test_timeout_defaults_fit_interval_and_are_checked():
    cfg = parse_config("targets:\n  - {name: a, type: icmp, host: 127.0.0.1, interval: 1s}\n")
    assert cfg.targets[0].timeout_ms == 1000
    with pytest.raises(ConfigError) as err:
        parse_config("targets:\n  - {name: a, type: icmp, host: 127.0.0.1, interval: 1s,"
                     " timeout: 5s}\n")
    assert "must not exceed the interval" in err.value.errors[0]


def test_check_config_cli(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    out = subprocess.run([*PINGR, "check-config", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert f"{bad}:2:1: colour: unknown setting" in out.stderr
    assert "5 error(s)" in out.stderr
    good = tmp_path / "good.yaml"
    good.write_text("targets:\n  - {name: lo, type: icmp, host: 127.0.0.1}\n")
    out = subprocess.run([*PINGR, "check-config", str(good)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "OK (1 target" in out.stdout
    missing = subprocess.run([*PINGR, "check-config", str(tmp_path / "nope.yaml")],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_version_cli():
    from pingr import __version__

    out = subprocess.run([*PINGR, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"pingr {__version__}"


def test_example_config_is_valid_and_documents_every_setting():
    example = ROOT / "pingr.example.yaml"
    cfg = parse_config(example.read_text(), str(example))
    text = example.read_text()
    missing = [p for p in config_paths(Config) if p.split(".")[-1] + ":" not in text]
    assert not missing, f"pingr.example.yaml does not mention: {missing}"
    assert cfg.targets, "the example should show targets"


ROUTES = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
wlan0\t00000000\t FE01A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
"""


def test_init_reads_gateway_and_dns_from_files(tmp_path):
    routes = tmp_path / "route"
    routes.write_text(ROUTES.replace("\t FE", "\tFE"))
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# comment\nnameserver 127.0.0.53\nnameserver 192.168.1.1\n"
                      "nameserver 2001:db8::1\nsearch lan\n")
    gws = default_gateways(str(routes))
    assert gws == ["192.168.1.1", "192.168.1.254"]
    assert dns_servers(str(resolv)) == ["192.168.1.1", "2001:db8::1"]
    text = starter_config("pingr.yaml", gws, dns_servers(str(resolv)))
    cfg = parse_config(text)
    names = {t.name: t for t in cfg.targets}
    assert names["gateway"].host == "192.168.1.1"
    assert names["dns 1"].depends_on == "gateway" and names["dns 1"].port == 53


def test_init_cli_writes_a_valid_file_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "pingr.yaml"
    out = subprocess.run([*PINGR, "init", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    parse_config(path.read_text())
    again = subprocess.run([*PINGR, "init", str(path)], capture_output=True, text=True)
    assert again.returncode == 1 and "--force" in again.stderr


def test_spool_lives_in_the_runtime_directory_under_systemd(tmp_path):
    """RAM (/run/pingr) under systemd, `storage.spool_dir` when given, else beside the db."""
    from pingr.paths import spool_path

    db = tmp_path / "state" / "pingr.db"
    assert spool_path(Config(), db, {}) == tmp_path / "state" / "pingr.db-spool"
    assert spool_path(Config(), db, {"RUNTIME_DIRECTORY": "/run/pingr"}) == Path(
        "/run/pingr/pingr.db-spool")
    cfg = Config.model_validate({"storage": {"spool_dir": str(tmp_path / "s")}})
    assert spool_path(cfg, db, {"RUNTIME_DIRECTORY": "/run/pingr"}) == tmp_path / "s" / (
        "pingr.db-spool")


def test_target_specs_are_frozen_values_sharing_their_given_fields():
    """A thousand targets given alike hold one set of given field names (pydantic's per-spec
    set was over half of an ICMP spec's memory); a spec cannot be changed in place, and a
    copy with changes is validated like a new one."""
    from pydantic import ValidationError

    cfg = parse_config(
        "targets:\n" + "".join(f"  - {{type: icmp, name: lo{i}, host: 127.0.0.{i + 1}, "
                               "interval: 10s}\n" for i in range(3)))
    a, b, c = cfg.targets
    assert {"type", "name", "host", "interval_seconds"} <= a.model_fields_set
    assert a.model_fields_set is b.model_fields_set is c.model_fields_set
    assert a.timeout_ms == 2000  # the default that follows the interval
    with pytest.raises(ValidationError, match="frozen"):
        a.host = "127.0.0.9"
    assert a.host == "127.0.0.1"
    moved = a.model_copy(update={"host": "127.0.0.9"})
    assert moved.host == "127.0.0.9" and a.host == "127.0.0.1" and moved.name == "lo0"
    with pytest.raises(ValidationError, match="timeout"):
        a.model_copy(update={"timeout_ms": 60_000})  # longer than the 10 s interval


def test_repacked_target_specs_are_the_ones_the_file_gave():
    """Specs are made again from their JSON once the parse's leftovers are gone (memory per
    target): the same values, and an agent check stays one object in both lists."""
    text = ("targets:\n"
            "  - {type: icmp, name: lo, host: 127.0.0.1, interval: 10s, tags: [a, b]}\n"
            "  - {type: http, name: web, url: 'http://127.0.0.1:9/x', headers: {X-A: '1'},"
            " depends_on: lo}\n"
            "checks:\n"
            "  - {name: agent, url: 'http://127.0.0.1:9/health'}\n")
    cfg = parse_config(text)
    assert [t.name for t in cfg.targets] == ["lo", "web", "agent"]
    assert cfg.checks == [cfg.targets[2]] and cfg.checks[0] is cfg.targets[2]
    lo, web, _ = cfg.targets
    assert (lo.host, lo.interval_seconds, lo.tags) == ("127.0.0.1", 10, ["a", "b"])
    assert (web.headers, web.depends_on) == ({"X-A": "1"}, "lo")
    for spec in cfg.targets:
        assert spec == type(spec).model_validate(spec.model_dump(mode="json"))
