"""The Pingr agent's document: its example pingr.yaml through `check-config` and `run`
unchanged (in a sandbox where /var/lib and /var/run are the test's), its routes (/checks,
/pair with apprise's FCM plugin, /system typed as its example), and PUT /targets/{id} taking
the same durations as create."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pingr.config import ConfigError, parse_config
from pingr.notify import fcm
from tests import netns
from tests.conftest import make_config, running_app
from tests.dockerd import IMAGE, TEST_LABEL

DOC = Path("/work/shared/seeds/000_1059a166cf9e9145.txt").read_text(encoding="utf-8")
ROOT = Path(__file__).resolve().parent.parent
SHORT_KEY_WARNING = ("auth.api_key is shorter than 16 characters: a short key is quickly "
                     "guessed; use 16 or more (`pingr keys create NAME` makes a random one)")


def example_yaml() -> str:
    """The document's example pingr.yaml, as printed."""
    start = DOC.index("```yaml\n# Server") + len("```yaml\n")
    return DOC[start:DOC.index("```", start)]


def example_system() -> dict[str, Any]:
    start = DOC.index("{", DOC.index("GET /api/v1/system\n```"))
    return json.JSONDecoder().raw_decode(DOC, start)[0]


def same_types(ours: Any, theirs: Any, where: str = "") -> None:
    """Every field of the example, with the same JSON type (an int is not a float here)."""
    if isinstance(theirs, dict):
        for key, value in theirs.items():
            assert key in ours, f"{where}.{key} missing"
            same_types(ours[key], value, f"{where}.{key}")
    elif isinstance(theirs, list):
        for item in ours:
            same_types(item, theirs[0], f"{where}[]")
    else:
        assert type(ours) is type(theirs), (where, ours, theirs)


def error_of(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == body["detail"]
    return body["error"]


# ---------------------------------------------------------------- the example config


def test_example_config_checks_unchanged(tmp_path):
    path = tmp_path / "pingr.yaml"
    path.write_text(example_yaml())
    assert 'api_key: "your-secret-key"' in path.read_text()  # 15 characters
    done = subprocess.run([sys.executable, "-m", "pingr", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{path}: OK (2 targets)\n"
    assert done.stderr == f"{path}: WARNING: {SHORT_KEY_WARNING}\n"

    cfg = parse_config(example_yaml())
    assert [(t.name, t.type, t.url, t.interval_seconds) for t in cfg.targets] == [
        ("My App", "http", "https://myapp.example.com/health", 60),
        ("API", "http", "https://api.example.com/ping", 30)]
    assert cfg.docker.enabled is True and cfg.docker.socket == "unix:///var/run/docker.sock"
    assert cfg.alerts.fcm_token == "" and cfg.notify_settings.cooldown == 300
    assert (cfg.alerts.thresholds.cpu.above, cfg.alerts.thresholds.memory.above,
            cfg.alerts.thresholds.disk.above) == (90, 85, 90)
    assert cfg.storage.path == "/var/lib/pingr/data.db" and cfg.storage.retention == 7 * 86400
    assert (cfg.host, cfg.port) == ("0.0.0.0", 9009)
    assert cfg.warnings() == [SHORT_KEY_WARNING]


def test_example_config_runs_unchanged(tmp_path, docker_engine):
    """`pingr run` with the example file as printed: port 9009 on 0.0.0.0, its database in
    /var/lib/pingr, Docker at /var/run/docker.sock (the test's engine), its two checks (whose
    example.com names cannot resolve in the sandbox: no traffic leaves the machine)."""
    reason = netns.why_not()
    if reason:
        pytest.skip(reason)
    with closing(docker_engine.client()) as dc:
        for old in dc.containers.list(all=True, filters={"name": "agent-example"}):
            old.remove(force=True)
        dc.containers.run(IMAGE, ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"],
                          name="agent-example", detach=True, network_mode="none",
                          labels={TEST_LABEL: "1"})
    config = tmp_path / "pingr.yaml"
    config.write_text(example_yaml())
    log = tmp_path / "pingr.log"
    key = {"x-api-key": "your-secret-key"}
    try:
        with netns.sandbox(tmp_path, [], tmpfs=["/var/lib", "/run"], dirs=["/var/lib/pingr"],
                           binds=[(str(docker_engine.sock_path), "/run/docker.sock")]) as box:
            box.popen(sys.executable, "-m", "pingr", "run", "--config", str(config), log=log)
            health = box.wait_http("http://127.0.0.1:9009/api/v1/health")
            body = json.loads(health["body"])
            assert health["status"] == 200 and body["warnings"] == [SHORT_KEY_WARNING]
            assert f"WARNING: {SHORT_KEY_WARNING}" in log.read_text()
            assert box.run("test", "-s", "/var/lib/pingr/data.db").returncode == 0

            checks = json.loads(box.request("GET", "http://127.0.0.1:9009/api/v1/checks",
                                            key)["body"])
            assert [(c["name"], c["url"], c["interval"]) for c in checks["items"]] == [
                ("API", "https://api.example.com/ping", "30s"),
                ("My App", "https://myapp.example.com/health", "1m")]
            containers = box.request("GET", "http://127.0.0.1:9009/api/v1/containers", key)
            assert containers["status"] == 200, containers["body"]
            assert "agent-example" in [c["name"] for c in json.loads(containers["body"])]
            for _ in range(100):  # the first CPU figure needs a second sample to compare with
                system = json.loads(box.request("GET", "http://127.0.0.1:9009/api/v1/system",
                                                key)["body"])
                if system["cpu"]["usage_percent"] is not None:
                    break
                time.sleep(0.1)
            assert system["containers"]["running"] >= 1 and system["docker_available"]
            same_types(system, example_system())
            limits = json.loads(box.request("GET", "http://127.0.0.1:9009/api/v1/alerts/config",
                                            key)["body"])
            assert json.dumps(limits).count("90") >= 2 and "85" in json.dumps(limits)
        assert "Docker engine connected at unix:///var/run/docker.sock" in log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        with closing(docker_engine.client()) as dc:
            for ct in dc.containers.list(all=True, filters={"name": "agent-example"}):
                ct.remove(force=True)


@pytest.mark.parametrize(("text", "where", "message"), [
    ("targets:\n  - {name: web, type: icmp, host: 127.0.0.1}\n"
     "checks:\n  - {name: web, url: 'http://127.0.0.1/'}\n",
     "pingr.yaml:4:6: checks[0].name", "duplicate target name 'web'"),
    ("checks:\n  - {name: a, url: 'http://127.0.0.1/', depends_on: ghost}\n",
     "pingr.yaml:1:1: checks", "depends_on unknown target 'ghost'"),
    ("alerts:\n  cooldown: 5m\nnotify_settings:\n  cooldown: 1m\n",
     "pingr.yaml:2:3: alerts.cooldown", "give either alerts.cooldown or notify_settings"),
    ("docker:\n  socket: docker.sock\n", "pingr.yaml:2:3: docker.socket", "invalid Docker socket"),
    ("alerts:\n  fcm_token: 'two words'\n", "pingr.yaml:2:3: alerts.fcm_token", "invalid FCM"),
    ("auth:\n  api_key: ''\n", "pingr.yaml:2:3: auth.api_key", "at least 1 character"),
    ("checks:\n  - {name: a, url: 'http://127.0.0.1/', timeout: 5m}\n",
     "pingr.yaml:2:", "checks[0].timeout: must be at most 2m (got 5m)"),
])
def test_agent_spellings_errors_are_located(text, where, message):
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert err.value.errors[0].startswith(where) and message in err.value.errors[0], \
        err.value.errors


def test_agent_spellings_that_work():
    cfg = parse_config("alerts:\n  cooldown: 90s\n  fcm_token: abc:DEF-1_2\n"
                       "docker:\n  socket: /run/user/1000/docker.sock\n")
    assert cfg.notify_settings.cooldown == 90
    assert cfg.docker.socket == "unix:///run/user/1000/docker.sock"
    assert cfg.warnings() == ["alerts.fcm_token is set but alerts.fcm (project, keyfile) is "
                              "not: the mobile app gets no push notifications"]
    assert parse_config("docker:\n  socket: tcp://127.0.0.1:2375\n").docker.socket == \
        "tcp://127.0.0.1:2375"


# ---------------------------------------------------------------- /checks


async def test_checks_are_views_onto_http_targets(tmp_path, target_server):
    cfg = make_config(tmp_path, checks=[{"name": "My App", "url": target_server.url,
                                         "interval": "1s"}],
                      targets=[{"name": "ssh", "type": "tcp", "host": "127.0.0.1",
                                "port": target_server.port, "interval": "1s"}])
    async with running_app(cfg) as run:
        c = run.client
        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("My App") == "up")
        listed = (await c.get("/api/v1/checks")).json()["items"]
        assert [x["name"] for x in listed] == ["My App"]  # the tcp target is no check
        check = listed[0]
        assert check["status"] == "up" and check["interval"] == "1s"
        assert check["url"] == target_server.url and check["status_code"] == 200
        assert isinstance(check["response_time_ms"], int) and check["error"] is None
        assert check["source"] == "config" and check["last_check"].endswith("Z")
        same_id = (await c.get(f"/api/v1/targets/{check['id']}")).json()
        assert same_id["name"] == "My App" and same_id["type"] == "http"

        made = await c.post("/api/v1/checks", json={"name": "API", "url": target_server.url,
                                                    "interval": "2s", "timeout": "500ms"})
        assert made.status_code == 201, made.text
        assert (made.json()["interval"], made.json()["timeout_ms"]) == ("2s", 500)
        assert made.json()["source"] == "api"
        assert "already exists" in error_of(await c.post("/api/v1/checks", json={
            "name": "API", "url": target_server.url}), 409)
        assert error_of(await c.post("/api/v1/checks", json={"name": "x", "url": "nope"}),
                        400).startswith("url: invalid url 'nope'")
        assert error_of(await c.post("/api/v1/checks", json={
            "name": "x", "url": target_server.url, "timeout": "5m"}), 400) == \
            "timeout: must be at most 2m (got 5m)"
        assert error_of(await c.post("/api/v1/checks", json={"url": target_server.url}),
                        400) == "name: required"
        assert error_of(await c.post("/api/v1/checks", json={
            "name": "x", "url": target_server.url, "type": "icmp"}), 400) == \
            "type: must be 'http'"

        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("API") == "up")
        hist = await c.get("/api/v1/checks/My App/history")
        assert hist.status_code == 200
        items = hist.json()["items"]
        assert hist.json()["name"] == "My App" and items and items[0]["success"] is True
        assert [x["ts"] for x in items] == sorted((x["ts"] for x in items), reverse=True)
        one = await c.get("/api/v1/checks/My%20App/history", params={"limit": 1})
        assert len(one.json()["items"]) == 1
        assert "since" in error_of(await c.get("/api/v1/checks/My App/history",
                                               params={"since": "soon"}), 400)
        assert error_of(await c.get("/api/v1/checks/ssh/history"), 404) == \
            "no check named 'ssh'"

        # Scopes: reading with a read key, changing only with admin.
        read = (await c.post("/api/v1/keys", json={"name": "app", "scope": "read"})).json()
        async with httpx.AsyncClient(base_url=run.base,
                                     headers={"x-api-key": read["key"]}) as ro:
            assert (await ro.get("/api/v1/checks")).status_code == 200
            assert (await ro.post("/api/v1/checks", json={"name": "y", "url": "http://a/"})
                    ).status_code == 403
            assert (await ro.delete("/api/v1/checks/API")).status_code == 403

        assert (await c.delete("/api/v1/checks/API")).status_code == 204
        assert error_of(await c.delete("/api/v1/checks/API"), 404) == "no check named 'API'"
        assert [x["name"] for x in (await c.get("/api/v1/checks")).json()["items"]] == ["My App"]


# ---------------------------------------------------------------- /pair


async def test_pair_without_credentials_says_what_is_missing(tmp_path):
    cfg = make_config(tmp_path, alerts={"fcm_token": "abc123"})
    async with running_app(cfg) as run:
        c = run.client
        msg = error_of(await c.post("/api/v1/pair", json={"fcm_token": "dAbc:APA91b_x"}), 409)
        assert msg == fcm.MISSING and "alerts.fcm.project" in msg and "alerts.fcm.keyfile" in msg
        health = (await c.get("/api/v1/health")).json()
        assert health["warnings"] == ["alerts.fcm_token is set but alerts.fcm (project, keyfile) "
                                      "is not: the mobile app gets no push notifications"]
        assert error_of(await c.post("/api/v1/pair", json={}), 400) == \
            "give the app's FCM token as fcm_token"
        assert "fcm_token" in error_of(await c.post("/api/v1/pair",
                                                    json={"fcm_token": "a b"}), 400)
        assert (await c.get("/api/v1/channels")).json() == []


def service_account(tmp_path: Path, project: str) -> Path:
    """A Firebase service-account key file whose token_uri is Google's (the sandbox's
    receiver answers for it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = tmp_path / "fcm-service-account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": project, "private_key_id": "0123",
        "private_key": pem, "client_email": f"pingr@{project}.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token"}))
    return path


def test_paired_app_gets_alerts_through_apprise_fcm(tmp_path):
    """POST /pair, then a target goes down: apprise's FCM plugin gets an OAuth token and
    sends the alert to the paired token (fcm.googleapis.com and oauth2.googleapis.com are the
    sandbox's local HTTPS receiver)."""
    reason = netns.why_not()
    if reason:
        pytest.skip(reason)
    ca, cert, key = netns.make_certs(tmp_path, ["fcm.googleapis.com", "oauth2.googleapis.com"])
    keyfile = service_account(tmp_path, "pingr-sandbox")
    status_file, hooks = tmp_path / "status", tmp_path / "hooks.jsonl"
    config = tmp_path / "pingr.yaml"
    config.write_text(yaml.safe_dump({
        "host": "127.0.0.1", "port": 9009, "auth": {"api_key": "pair-test-admin-key-0123456789"},
        "storage": {"path": str(tmp_path / "pingr.db")}, "scheduler": {"stagger": 0},
        "alerts": {"fcm": {"project": "pingr-sandbox", "keyfile": str(keyfile)}},
        "notify_settings": {"retry_base": "1s"},
        "targets": [{"name": "NAS", "type": "http", "url": "http://127.0.0.1:8081/",
                     "interval": "1s", "failure_threshold": 2}],
    }))
    admin = {"x-api-key": "pair-test-admin-key-0123456789"}
    api = "http://127.0.0.1:9009/api/v1"
    token = "dQw4w9WgXcQ:APA91bF_sandbox-token"
    with netns.sandbox(tmp_path, ["fcm.googleapis.com", "oauth2.googleapis.com"]) as box:
        box.popen(sys.executable, "-m", "tests.netns", "target", "8081", str(status_file))
        box.popen(sys.executable, "-m", "tests.netns", "receiver", "443", str(cert), str(key),
                  str(hooks))
        box.popen(sys.executable, "-m", "pingr", "run", "--config", str(config),
                  log=tmp_path / "pingr.log", env=box.env(REQUESTS_CA_BUNDLE=str(ca)))
        box.wait_http(f"{api}/health")
        paired = box.request("POST", f"{api}/pair", admin, {"fcm_token": token})
        assert paired["status"] == 200, paired["body"]
        answer = json.loads(paired["body"])
        assert answer["paired"] is True and answer["channel"] == fcm.CHANNEL
        channels = json.loads(box.request("GET", f"{api}/channels", admin)["body"])
        assert [c["name"] for c in channels] == [fcm.CHANNEL]
        assert channels[0]["url"].startswith("fcm://pingr-sandbox/")

        status_file.write_text("500")

        def sends() -> list[dict[str, Any]]:
            return [h for h in netns.received(hooks) if h["path"].endswith(":send")]

        sent = netns.wait_until(sends, 40, "an FCM send")[0]
        assert sent["host"] == "fcm.googleapis.com"
        assert sent["path"] == "/v1/projects/pingr-sandbox/messages:send"
        assert sent["headers"]["authorization"] == "Bearer ya29.sandbox"
        message = sent["body"]["message"]
        assert message["token"] == token
        assert "NAS" in message["notification"]["title"] + message["notification"]["body"]
        tokens = [h for h in netns.received(hooks) if h["path"] == "/token"]
        assert tokens and tokens[0]["host"] == "oauth2.googleapis.com"
        # A JWT signed with the account's key, exchanged for the bearer token above.
        assert "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in \
            tokens[0]["body"] and "assertion=ey" in tokens[0]["body"]

        # Pairing again (a new phone) replaces the token in the same channel.
        again = box.request("POST", f"{api}/pair", admin, {"token": "second:token"})
        assert json.loads(again["body"])["channel_id"] == answer["channel_id"]
        log = json.loads(box.request("GET", f"{api}/notifications", admin)["body"])
        assert any(d["channel"] == fcm.CHANNEL and d["state"] == "sent" and d["kind"] == "alert"
                   for d in log)
    assert "Traceback" not in (tmp_path / "pingr.log").read_text()


# ---------------------------------------------------------------- /system and PUT


async def test_system_is_typed_as_the_agents_example(tmp_path):
    cfg = make_config(tmp_path, alerts={"thresholds": {"interval": "300ms"}})
    async with running_app(cfg) as run:
        # CPU usage needs two samples (it is null until then: never a made-up 0).
        await run.wait_for(lambda: run.app.host.sampler.latest is not None
                           and run.app.host.sampler.latest.cpu_percent is not None)
        body = (await run.client.get("/api/v1/system")).json()
        example = example_system()
        assert isinstance(example["uptime"], int) and isinstance(body["uptime"], int)
        assert body["uptime"] > 0
        without_containers = {k: v for k, v in example.items() if k != "containers"}
        same_types(body, without_containers)  # (no Docker here: container counts are null)
        assert set(body["containers"]) == set(example["containers"])


async def test_put_takes_the_same_durations_as_create(tmp_path):
    cfg = make_config(tmp_path, targets=[{"name": "lo", "type": "icmp", "host": "127.0.0.1"}])
    async with running_app(cfg) as run:
        c = run.client
        tid = next(iter(run.app.targets))
        r = await c.put(f"/api/v1/targets/{tid}", json={"interval": "5s", "timeout": "1s"})
        assert r.status_code == 200, r.text
        assert (r.json()["interval_seconds"], r.json()["timeout_ms"]) == (5, 1000)
        r = await c.put(f"/api/v1/targets/{tid}", json={"interval": "2m"})
        assert (r.json()["interval_seconds"], r.json()["timeout_ms"]) == (120, 1000)
        assert error_of(await c.put(f"/api/v1/targets/{tid}", json={"timeout": "5m"}), 400) == \
            "timeout: must be at most 2m (got 5m)"
        assert error_of(await c.put(f"/api/v1/targets/{tid}", json={"timeout": "3m",
                                                                     "interval": "2m"}),
                        400) == "timeout: must be at most 2m (got 3m)"
        assert error_of(await c.put(f"/api/v1/targets/{tid}", json={"timeout": "10ms"}),
                        400) == "timeout: must be at least 50ms (got 10ms)"
        assert error_of(await c.put(f"/api/v1/targets/{tid}", json={"interval": "3s",
                                                                     "timeout": "4s"}), 400) == \
            "the timeout (4s) must not exceed the interval (3s)"
        assert error_of(await c.put(f"/api/v1/targets/{tid}", json={"interval": "soon"}),
                        400) == "interval: invalid duration 'soon': use a number with a " \
                                "unit: 30s, 5m, 2h, 7d"
        assert error_of(await c.put(f"/api/v1/targets/{tid}",
                                    json={"interval": "5s", "interval_seconds": 5}), 400) == \
            "interval_seconds: give either interval or interval_seconds, not both"
        # Create says the same, in the same words: no pydantic internals.
        for body, msg in (({"timeout": "5m"}, "timeout: must be at most 2m (got 5m)"),
                          ({"timeout": "40s"}, "the timeout (40s) must not exceed the "
                                               "interval (30s)"),
                          ({"interval_seconds": 0}, "interval_seconds: must be greater than "
                                                    "or equal to 1")):
            r = await c.post("/api/v1/targets", json={"name": "x", "type": "icmp",
                                                      "host": "127.0.0.1", **body})
            text = error_of(r, 400)
            assert text == msg and "function-after" not in text and "IcmpTarget" not in text
        r = await c.post("/api/v1/targets", json={"name": "x", "type": "bogus"})
        assert error_of(r, 400) == ("type: unknown type 'bogus': use one of icmp, http, tcp, "
                                    "heartbeat, dns, tls")
        r = await c.post("/api/v1/targets", json={"type": "icmp"})
        assert error_of(r, 400) == "name: required; host: required"
        assert re.search(r"body is not valid JSON|JSON", error_of(
            await c.post("/api/v1/targets", content=b"{nope",
                         headers={"content-type": "application/json"}), 400))
