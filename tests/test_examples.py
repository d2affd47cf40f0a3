"""The examples/ run against a real pingr: bash+curl+jq, the requests poller, the relay
controller (gpiozero MockFactory), and the decision logic of the Home Assistant package
(its Jinja templates) and the Node-RED flow (its function nodes, run with node)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import make_config, running_app
from tests.mqttbroker import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
WRONG_KEY = "pingr_this_key_does_not_exist_0000000000"


async def run_cmd(*cmd: str, env: dict[str, str] | None = None,
                  timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command without blocking the event loop pingr is serving from."""
    return await asyncio.to_thread(subprocess.run, list(cmd), capture_output=True, text=True,
                                   timeout=timeout, env={**os.environ, **(env or {})})


def web_target(server: Any) -> dict[str, Any]:
    return {"name": "web", "type": "http", "url": server.url, "interval": "1s",
            "failure_threshold": 1}


async def read_key(run: Any, name: str = "example") -> str:
    resp = await run.client.post("/api/v1/keys", json={"name": name, "scope": "read"})
    assert resp.status_code == 201, resp.text
    return resp.json()["key"]


async def aget(url: str, **kw: Any) -> httpx.Response:
    """GET without blocking the event loop that pingr serves from."""
    async with httpx.AsyncClient() as c:
        return await c.get(url, **kw)


async def exhaust(run: Any, key: str) -> httpx.Response:
    """Spend a key's rate-limit budget; return the first real 429."""
    async with httpx.AsyncClient(base_url=run.base, headers={"x-api-key": key}) as c:
        for _ in range(1000):
            resp = await c.get("/api/v1/alert-status")
            if resp.status_code == 429:
                return resp
    raise AssertionError("never rate limited")


# ---------------------------------------------------------------- bash: curl + jq


async def test_bash_script(tmp_path, target_server):
    if not (shutil.which("curl") and shutil.which("jq")):
        pytest.skip("curl and jq are needed (tests/bootstrap.sh installs them)")
    script = str(EXAMPLES / "alert-status.sh")
    async with running_app(make_config(tmp_path, targets=[web_target(target_server)])) as run:
        key = await read_key(run)
        env = {"PINGR_URL": run.base, "PINGR_API_KEY": key}
        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("web") == "up")
        ok = await run_cmd("bash", script, env=env)
        assert (ok.returncode, ok.stdout) == (0, "OK\n"), ok.stderr

        target_server.behaviour.status = 503
        await run.wait_for(lambda: run.app.monitor.snapshot().alert)
        alert = await run_cmd("bash", script, env=env)
        assert alert.returncode == 1, alert.stderr
        lines = alert.stdout.splitlines()
        assert lines[0] == "ALERT: 1 failing"
        assert lines[1].startswith("- web: ") and lines[1].endswith("/1 failures")

        bad = await run_cmd("bash", script, env={**env, "PINGR_API_KEY": WRONG_KEY})
        assert bad.returncode == 2
        assert bad.stdout == "ALARM: pingr answered HTTP 401: Invalid or disabled API key\n"
    gone = await run_cmd("bash", script, env={"PINGR_URL": f"http://127.0.0.1:{free_port()}",
                                              "PINGR_API_KEY": key})
    assert gone.returncode == 2 and gone.stdout.startswith("ALARM: cannot reach pingr")
    if shutil.which("shellcheck"):
        lint = await run_cmd("shellcheck", script)
        assert lint.returncode == 0, lint.stdout


# ---------------------------------------------------------------- Python requests poller


async def test_python_poller(tmp_path, target_server):
    poller = str(EXAMPLES / "alert_status_poller.py")
    # Two requests a minute per key: the OK and the ALERT poll below use them up.
    cfg = make_config(tmp_path, targets=[web_target(target_server)],
                      auth={"api_key": "pingr_test_admin_key_0123456789abcdef",
                            "rate_limit_per_minute": 2})
    async with running_app(cfg) as run:
        key = await read_key(run)
        env = {"PINGR_URL": run.base, "PINGR_API_KEY": key}
        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("web") == "up")
        ok = await run_cmd(sys.executable, poller, "--once", env=env)
        assert (ok.returncode, ok.stdout) == (0, "OK\n"), ok.stderr
        first_accepted = time.monotonic()

        target_server.behaviour.status = 500
        await run.wait_for(lambda: run.app.monitor.snapshot().alert)
        alert = await run_cmd(sys.executable, poller, "--once", env=env)
        assert alert.returncode == 1
        assert alert.stdout.startswith("ALERT: 1 failing\n- web: ")

        bad = await run_cmd(sys.executable, poller, "--once",
                            env={**env, "PINGR_API_KEY": WRONG_KEY})
        assert bad.returncode == 2
        assert "ALARM: pingr answered HTTP 401: Invalid or disabled API key" in bad.stdout

        # Rate limited: Retry-After says when the next request will be accepted (the OK poll
        # leaves the 60 s window then); the poller waits exactly that and gets its answer at
        # the first try after it.
        t0 = time.monotonic()
        polled = await run_cmd(sys.executable, poller, "--count", "2", "--interval", "0.01",
                               env=env, timeout=120)
        elapsed = time.monotonic() - t0
        lines = polled.stdout.splitlines()
        assert len(lines) == 3, lines
        m = re.fullmatch(r"WAIT: rate limited, retrying in (\d+) s", lines[0])
        assert m, lines
        asked = int(m[1])
        assert asked - 1 < first_accepted + 60 - t0 <= asked + 1  # (the poller's start-up)
        assert elapsed >= asked
        assert lines[1] == "ALERT: 1 failing" and lines[2].startswith("- web: ")
    gone = await run_cmd(sys.executable, poller, "--once", env=env)
    assert gone.returncode == 2 and gone.stdout.startswith("ALARM: cannot reach pingr")


# ---------------------------------------------------------------- relay controller


class Lines:
    """stdout of a running process, line by line, read in a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._task = asyncio.get_running_loop().run_in_executor(None, self._read)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    async def wait(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            await asyncio.sleep(0.05)
        raise AssertionError(f"{text!r} not printed; got {self.lines}")


async def test_relay_controller_defaults_to_alarm(tmp_path, target_server):
    relay = str(EXAMPLES / "relay-controller" / "pingr_relay.py")
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}

    def start(url: str, key: str, *extra: str) -> Lines:
        proc = subprocess.Popen(
            [sys.executable, relay, "--pin", "17", "--interval", "0.2", "--grace", "1", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**env, "PINGR_URL": url, "PINGR_API_KEY": key})
        return Lines(proc)

    async def stop(lines: Lines) -> None:
        lines.proc.terminate()
        await asyncio.to_thread(lines.proc.wait, 10)
        await lines._task

    async with running_app(make_config(tmp_path, targets=[web_target(target_server)])) as run:
        key = await read_key(run)
        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("web") == "up")
        ctl = start(run.base, key)
        try:
            # gpiozero's MockFactory pin: 1 = relay energised = ALARM.
            assert await ctl.wait("relay ALARM (start") == \
                "relay ALARM (start: no answer yet); pin 17 value 1"
            assert (await ctl.wait("relay OK")).endswith("pin 17 value 0")
            target_server.behaviour.status = 500
            assert (await ctl.wait("relay ALARM (alert: web)")).endswith("value 1")
            target_server.behaviour.status = 200
            await run.wait_for(lambda: not run.app.monitor.snapshot().alert)
            await run.wait_for(lambda: ctl.lines[-1].startswith("relay OK"))
        except BaseException:
            await stop(ctl)
            raise
        wrong = start(run.base, WRONG_KEY)
        try:
            line = await wrong.wait("HTTP 401")
            assert line == ("relay ALARM (pingr answered HTTP 401: Invalid or disabled API key); "
                            "pin 17 value 1")
            assert not any("relay OK" in x for x in wrong.lines)
        finally:
            await stop(wrong)
    # pingr stopped: no answer -> ALARM, not off.
    try:
        line = await ctl.wait("no answer from pingr")
        assert line.startswith("relay ALARM") and line.endswith("pin 17 value 1")
    finally:
        await stop(ctl)
    assert ctl.lines[-1] == "controller stopped; relay released"


# ---------------------------------------------------------------- Home Assistant package


class SecretLoader(yaml.SafeLoader):
    """Home Assistant's YAML with `!secret name` (resolved to a placeholder here)."""


SecretLoader.add_constructor("!secret", lambda loader, node: f"<secret {node.value}>")


def ha_render(template: str, **variables: Any) -> str:
    """Render like Home Assistant: Jinja2, result stripped. Our templates use only plain
    Jinja plus HA's states()/is_state(), which callers pass in."""
    import jinja2

    return jinja2.Environment().from_string(template).render(**variables).strip()


def ha_rest_value(template: str, resp: httpx.Response | None) -> str | None:
    """The REST sensor's state for a response (None = no response: the entity is unavailable).

    Home Assistant passes value_json only when the body parses as JSON.
    """
    if resp is None:
        return None
    try:
        return ha_render(template, value=resp.text, value_json=resp.json())
    except ValueError:
        return ha_render(template, value=resp.text)


def ha_binary_from_text(value: str) -> bool:
    """How HA's REST binary_sensor turns a rendered value into on/off (for the wrong config)."""
    try:
        return bool(int(value))
    except ValueError:
        return {"true": True, "on": True, "open": True, "yes": True}.get(value.lower(), False)


async def test_home_assistant_package(tmp_path, target_server):
    package = yaml.load((EXAMPLES / "home-assistant" / "pingr_rest.yaml").read_text(),
                        Loader=SecretLoader)
    rest = package["rest"][0]
    assert rest["resource"].endswith("/api/v1/alert-status")
    assert rest["headers"] == {"x-api-key": "<secret pingr_api_key>"}
    sensor = rest["sensor"][0]
    assert sensor["name"] == "pingr alert status"
    problem = package["template"][0]["binary_sensor"][0]
    assert problem["device_class"] == "problem" and problem["unique_id"]
    entity = "sensor." + sensor["name"].replace(" ", "_")
    assert entity in problem["state"]

    cfg = make_config(tmp_path, targets=[web_target(target_server)],
                      auth={"api_key": "pingr_test_admin_key_0123456789abcdef",
                            "rate_limit_per_minute": 60})
    answers: dict[str, httpx.Response | None] = {}
    async with running_app(cfg) as run:
        key = await read_key(run)
        url = run.base + "/api/v1/alert-status"
        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("web") == "up")
        answers["ok"] = await aget(url, headers={"x-api-key": key})
        target_server.behaviour.status = 500
        await run.wait_for(lambda: run.app.monitor.snapshot().alert)
        answers["alert"] = await aget(url, headers={"x-api-key": key})
        answers["401"] = await aget(url, headers={"x-api-key": WRONG_KEY})
        answers["429"] = await exhaust(run, key)
        answers["not pingr"] = await aget(run.base + "/docs")  # a 200 HTML page
    answers["unreachable"] = None
    assert answers["401"].status_code == 401 and answers["429"].status_code == 429

    expected = {"ok": "ok", "alert": "alert", "401": "error", "429": "error",
                "not pingr": "error", "unreachable": None}
    for case, resp in answers.items():
        value = ha_rest_value(sensor["value_template"], resp)
        assert value == expected[case], case
        sensor_state = "unavailable" if value is None else value
        states = {entity: sensor_state}
        on = ha_render(problem["state"], is_state=lambda e, s, st=states: st.get(e) == s,
                       states=lambda e, st=states: st.get(e, "unknown"))
        assert on == ("False" if case == "ok" else "True"), case
        reason = ha_render(problem["attributes"]["reason"],
                           states=lambda e, st=states: st.get(e, "unknown"))
        assert reason and ("no alert" in reason) == (case == "ok")
    # Before the first poll the sensor is "unknown": that is a problem too.
    assert ha_render(problem["state"], is_state=lambda e, s: s == "unknown") == "True"

    # The copy-paste configuration the README warns about: 401, 429 and junk read as "OK".
    wrong = "{{ value_json.alert }}"
    for case in ("401", "429"):
        assert ha_binary_from_text(ha_rest_value(wrong, answers[case])) is False
    assert ha_binary_from_text(ha_rest_value(wrong, answers["alert"])) is True


# ---------------------------------------------------------------- Node-RED flow

HARNESS = r"""
// Runs Node-RED function-node bodies the way the function node does: the body wrapped in a
// function of (msg, node, context, flow, global, env), its return value is the output.
const fs = require('fs');
const input = JSON.parse(fs.readFileSync(0, 'utf8'));
const nodes = JSON.parse(fs.readFileSync(input.flow, 'utf8'));
const flowStore = {};
const store = (s) => ({get: (k) => s[k], set: (k, v) => { s[k] = v; }});
const results = [];
for (const step of input.steps) {
  const fn = nodes.find((n) => n.type === 'function' && n.id === step.node);
  const status = [];
  const node = {status: (s) => status.push(s), warn() {}, error() {}, log() {}};
  const env = {get: (k) => step.env[k]};
  const realNow = Date.now;
  Date.now = () => step.now;
  try {
    const body = new Function('msg', 'node', 'context', 'flow', 'global', 'env', fn.func);
    const out = body(step.msg, node, store({}), store(flowStore), store({}), env);
    results.push({out: out === undefined ? null : out, status, flow: {...flowStore}});
  } finally {
    Date.now = realNow;
  }
}
process.stdout.write(JSON.stringify(results));
"""


def node_red_msg(resp: httpx.Response) -> dict[str, Any]:
    """What the http request node (ret: obj) sends: statusCode, lower-case headers, payload
    parsed as JSON when it parses, else the text."""
    try:
        payload: Any = resp.json()
    except ValueError:
        payload = resp.text
    return {"statusCode": resp.status_code, "headers": dict(resp.headers), "payload": payload}


async def test_node_red_flow(tmp_path, target_server):
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is needed to run the flow's function nodes")
    flow_file = EXAMPLES / "node-red" / "pingr-flow.json"
    flow = json.loads(flow_file.read_text())
    by_id = {n["id"]: n for n in flow}
    assert len(by_id) == len(flow)
    for n in flow:
        for wire in (w for out in n.get("wires", []) for w in out):
            assert wire in by_id, f"{n['id']} is wired to a missing node {wire}"
    http = next(n for n in flow if n["type"] == "http request")
    assert http["method"] == "use" and http["ret"] == "obj" and http["url"] == ""
    catch = next(n for n in flow if n["type"] == "catch")
    assert catch["scope"] == [http["id"]]
    inject = next(n for n in flow if n["type"] == "inject")
    gate = by_id[inject["wires"][0][0]]
    assert gate["type"] == "function" and gate["wires"] == [[http["id"]]]
    decide = by_id[http["wires"][0][0]]
    assert catch["wires"] == [[decide["id"]]] and decide["type"] == "function"
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)

    async def run_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        proc = await asyncio.to_thread(subprocess.run, [node, str(harness)], text=True,
                                       capture_output=True, timeout=30,
                                       input=json.dumps({"flow": str(flow_file),
                                                         "steps": steps}))
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    cfg = make_config(tmp_path, targets=[web_target(target_server)],
                      auth={"api_key": "pingr_test_admin_key_0123456789abcdef",
                            "rate_limit_per_minute": 60})
    async with running_app(cfg) as run:
        key = await read_key(run)
        env = {"PINGR_URL": run.base + "/", "PINGR_API_KEY": key}
        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("web") == "up")

        async def poll(env: dict[str, str]) -> dict[str, Any]:
            """The gate builds the request (url, key); we send it for real; decide judges."""
            now = int(time.time() * 1000)
            (gated,) = await run_steps([{"node": gate["id"], "msg": {}, "env": env,
                                         "now": now}])
            req = gated["out"]
            assert req["url"] == run.base + "/api/v1/alert-status" and req["method"] == "GET"
            resp = await aget(req["url"], headers=req["headers"])
            (decided,) = await run_steps([{"node": decide["id"], "msg": node_red_msg(resp),
                                           "env": env, "now": now}])
            return decided["out"]

        ok = await poll(env)
        assert ok["payload"] is False and ok["reason"] == "OK"
        target_server.behaviour.status = 500
        await run.wait_for(lambda: run.app.monitor.snapshot().alert)
        alert = await poll(env)
        assert alert["payload"] is True and alert["reason"].startswith("web: ")
        bad = await poll({**env, "PINGR_API_KEY": WRONG_KEY})
        assert bad["payload"] is True
        assert bad["reason"] == "pingr answered HTTP 401: Invalid or disabled API key"

        # 429s: back off for Retry-After (the gate holds polls back), alarm on the third.
        limited = node_red_msg(await exhaust(run, key))
        retry_after = int(limited["headers"]["retry-after"])
        t0 = 1_000_000
        steps = [
            {"node": decide["id"], "msg": limited, "env": env, "now": t0},
            {"node": gate["id"], "msg": {}, "env": env, "now": t0 + 10},
            {"node": gate["id"], "msg": {}, "env": env, "now": t0 + retry_after * 1000 + 1},
            {"node": decide["id"], "msg": limited, "env": env, "now": t0 + 2000},
            {"node": decide["id"], "msg": limited, "env": env, "now": t0 + 4000},
        ]
        first, held, released, second, third = await run_steps(steps)
        assert first["out"] is None and first["flow"]["pingr_429"] == 1
        assert first["flow"]["pingr_backoff_until"] == t0 + retry_after * 1000
        assert held["out"] is None
        assert released["out"]["url"].endswith("/api/v1/alert-status")
        assert second["out"] is None
        assert third["out"]["payload"] is True
        assert third["out"]["reason"] == "rate limited 3 times in a row"

    # pingr stopped: the real connection error, as the catch node delivers it.
    try:
        httpx.get(env["PINGR_URL"], timeout=2)
        raise AssertionError("pingr still answers")
    except httpx.ConnectError as exc:
        error = str(exc)
    (down,) = await run_steps([{"node": decide["id"], "env": env, "now": 0, "msg": {
        "payload": f"RequestError: {error}", "error": {"message": error,
                                                        "source": {"id": http["id"]}}}}])
    assert down["out"]["payload"] is True
    assert down["out"]["reason"].startswith("cannot reach pingr: ")
    # The http request node's own error output (statusCode is the error code, not a number).
    (down,) = await run_steps([{"node": decide["id"], "env": env, "now": 0, "msg": {
        "payload": "RequestError: connect ECONNREFUSED", "statusCode": "ECONNREFUSED"}}])
    assert down["out"]["payload"] is True
