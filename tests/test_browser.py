"""The dashboard and the status page in a real browser: Debian's chromium driven through
chromium-driver and Selenium (no browser download), against a real `pingr run` probing real
loopback servers. Screenshots land in docs/screenshots/ (the README shows them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ADMIN_KEY, SLOW, TargetServer
from tests.webseed import seed_history

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

try:  # only the browser tests need it (test extras; tests/bootstrap.sh installs it)
    from selenium import webdriver
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - reported by the skip below
    webdriver = None

pytestmark = pytest.mark.skipif(
    webdriver is None or not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="the browser tests need selenium and Debian's chromium + chromium-driver "
           "(tests/bootstrap.sh installs them)")

#: Target names that must never reach the public status page (they name hosts).
PRIVATE = ("backend-http-probe", "db-port-check", "edge-proxy-probe")
DESKTOP = (1280, 900)
PHONE = (390, 844)


class Pingr:
    """A real `pingr run` on a loopback port, its targets' servers and the keys made for it."""

    def __init__(self, tmp: Path) -> None:
        self.web = TargetServer()
        self.api = TargetServer()
        self.tmp = tmp
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        targets = [
            {"name": "backend-http-probe", "type": "http", "url": self.web.url + "health",
             "interval": "1s", "timeout": "1s", "failure_threshold": 1, "tags": ["web"]},
            {"name": "edge-proxy-probe", "type": "http", "url": self.api.url, "interval": "1s",
             "timeout": "1s", "tags": ["web"]},
            {"name": "db-port-check", "type": "tcp", "host": "127.0.0.1",
             "port": self.api.port, "interval": "2s", "tags": ["db"]},
        ]
        config = {
            "host": "127.0.0.1", "port": self.port, "auth": {"api_key": ADMIN_KEY},
            "storage": {"path": str(tmp / "pingr.db"), "flush_interval": "100ms"},
            "scheduler": {"stagger": 0}, "docker": {"enabled": False},
            "hardware": {"backend": "mock", "lamp_test": {"at_start": False, "duration": "3s"},
                         "outputs": [{"name": "siren", "type": "relay", "pin": 17},
                                     {"name": "lamp", "type": "led", "pin": 27}]},
            "web": {"status_page": {
                "enabled": True, "title": "Example Co. status",
                "description": "Live status of our services, from the box in the rack.",
                "groups": [
                    {"name": "Services", "components": [
                        {"name": "Website", "targets": ["backend-http-probe"],
                         "description": "The public site"},
                        {"name": "API", "targets": ["edge-proxy-probe"]}]},
                    {"name": "Data", "components": [
                        {"name": "Database", "targets": ["db-port-check"]}]}]}},
            "targets": targets,
        }
        self.config_path = tmp / "pingr.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        from pingr.config import load_config

        specs = load_config(self.config_path).targets
        seed_history(tmp / "pingr.db", specs, days=90,
                     outages={"backend-http-probe": [(30, 2), (24 * 20, 5)],
                              "edge-proxy-probe": [(24 * 45, 1)]})
        self.log = open(tmp / "pingr.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "pingr", "run", "-c",
                                      str(self.config_path)], stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, "PINGR_CONFIG": ""})
        self.client = httpx.Client(base_url=self.base, headers={"x-api-key": ADMIN_KEY},
                                   timeout=10)
        deadline = time.monotonic() + 30 * SLOW
        while True:
            try:
                if self.client.get("/api/v1/health").status_code in (200, 503):
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("pingr did not start: " + (tmp / "pingr.log").read_text())
            time.sleep(0.1)
        self.keys = {scope: self.client.post("/api/v1/keys", json={
            "name": f"{scope}-browser", "scope": scope}).json()["key"]
            for scope in ("read", "operate")}
        self.keys["admin"] = ADMIN_KEY

    def target(self, name: str) -> dict[str, Any]:
        listed = self.client.get("/api/v1/targets").json()
        items = listed["items"] if isinstance(listed, dict) else listed
        return next(t for t in items if t["name"] == name)

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()
        self.web.close()
        self.api.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pingr() -> Iterator[Pingr]:
    tmp = Path(tempfile.mkdtemp(prefix="pingr-browser-"))
    p = Pingr(tmp)
    try:
        yield p
    finally:
        p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Chromium must not reach out (updates, sync, safe browsing): these flags and a fresh
    # profile keep its traffic on loopback; Selenium is pointed at the system driver, so
    # Selenium Manager never runs (it would download one).
    os.environ.setdefault("SE_AVOID_STATS", "true")
    profile = tempfile.mkdtemp(prefix="pingr-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-default-apps", "--disable-extensions", f"--user-data-dir={profile}",
                f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# ---------------------------------------------------------------------- helpers


def wait(driver: Any, predicate: Any, timeout: float = 10.0, what: str = "") -> Any:
    try:
        # Sections are swapped as changes arrive: an element may vanish between two looks.
        return WebDriverWait(driver, timeout * SLOW, poll_frequency=0.05, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException)).until(predicate)
    except TimeoutException:
        raise AssertionError(f"not within {timeout * SLOW:g} s: {what}") from None


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def emulate(driver: Any, size: tuple[int, int], *, phone: bool = False,
            dark: bool = False) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": phone})
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [
        {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})


def screenshot(driver: Any, name: str) -> Path:
    """The whole page (not only the viewport) as docs/screenshots/<name>.png."""
    import base64

    SHOTS.mkdir(parents=True, exist_ok=True)
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    path = SHOTS / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def badge(driver: Any, target_id: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR,
                               f'tr[data-target="{target_id}"] [data-role="state"]')


def sign_in(driver: Any, base: str, key: str) -> None:
    driver.get(base + "/")
    wait(driver, lambda d: "/login" in d.current_url, what="redirect to the sign-in page")
    field = driver.find_element(By.ID, "key")
    assert driver.find_element(By.CSS_SELECTOR, "label[for=key]").text == "API key"
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    wait(driver, lambda d: d.current_url.rstrip("/") == base, what="the overview after sign-in")


def sign_out(driver: Any, base: str) -> None:
    driver.find_element(By.CSS_SELECTOR, "form.signout button").click()
    wait(driver, lambda d: "/login" in d.current_url, what="the sign-in page after sign-out")


# ---------------------------------------------------------------------- the tests


def test_sign_in_live_down_acknowledge_lamp_test_sign_out(pingr: Pingr, browser: Any) -> None:
    d = browser
    emulate(d, DESKTOP)
    sign_in(d, pingr.base, pingr.keys["admin"])
    d.get_log("browser")  # from here on the console must stay clean

    # Every target is listed, with its state.
    names = {t["name"]: t["id"] for t in (
        pingr.target(n) for n in ("backend-http-probe", "edge-proxy-probe", "db-port-check"))}
    rows = d.find_elements(By.CSS_SELECTOR, "#targets tbody tr[data-target]")
    assert {r.get_attribute("data-target") for r in rows} >= set(names.values())
    for name, tid in names.items():
        wait(d, lambda d, tid=tid: badge(d, tid).text == "Up", what=f"{name} shown up")
    assert len(d.find_elements(By.CSS_SELECTOR, "#targets svg.spark")) == len(names)
    screenshot(d, "overview-desktop")

    # The target goes down: its row turns red without a reload.
    d.execute_script("window.__notReloaded = true;")
    web_id = names["backend-http-probe"]
    pingr.web.behaviour.status = 503
    went_down = time.monotonic()
    wait(d, lambda d: badge(d, web_id).text == "Down", 3.0, "the row says Down within 3 s")
    seen = time.monotonic() - went_down
    red = badge(d, web_id).value_of_css_property("background-color")
    assert red in ("rgba(179, 38, 30, 1)", "rgb(179, 38, 30)"), red
    assert d.execute_script("return window.__notReloaded === true;"), "the page was reloaded"
    assert seen < 3.0

    # Acknowledge it from the open alerts (an operate action through the App).
    button = wait(d, lambda d: d.find_element(
        By.CSS_SELECTOR, "#alerts button[aria-label='Acknowledge the alert on "
                         "backend-http-probe']"), what="an acknowledge button")
    button.click()
    wait(d, lambda d: "acknowledged by" in d.find_element(By.ID, "alerts").text,
         what="the alert shown acknowledged")
    open_alerts = pingr.client.get("/api/v1/alerts", params={"state": "open"}).json()
    open_alerts = open_alerts["items"] if isinstance(open_alerts, dict) else open_alerts
    assert [a["acknowledged_by"] for a in open_alerts
            if a["target_name"] == "backend-http-probe"] == ["bootstrap"]
    assert pingr.client.get("/api/v1/alert-status").json()["alert"] is False

    # Test an output: its state changes to testing, then back.
    def siren() -> str:
        return d.find_element(By.CSS_SELECTOR, '[data-output="siren"] [data-role="output"]').text

    before = siren()  # a visual relay: on while the alert is open, acknowledged or not
    assert before == "on"
    d.find_element(By.CSS_SELECTOR, "button[aria-label='Test siren']").click()
    wait(d, lambda d: siren() == "testing", what="the siren shown testing")
    outputs = {o["name"]: o for o in pingr.client.get("/api/v1/outputs").json()}
    assert outputs["siren"]["testing"] is True
    wait(d, lambda d: siren() == before, 8.0, "the siren back to its state after its test")

    # The target page: chart, results, incidents; then back up.
    d.get(pingr.base + f"/targets/{web_id}")
    assert d.find_element(By.CSS_SELECTOR, "#history svg.chart")
    assert "Incidents" in d.find_element(By.ID, "incidents").text
    assert len(d.find_elements(By.CSS_SELECTOR, "#incidents tbody tr")) >= 3
    screenshot(d, "target-desktop")
    emulate(d, PHONE, phone=True)
    d.refresh()
    screenshot(d, "target-phone")
    d.get(pingr.base + "/")
    screenshot(d, "overview-phone")
    emulate(d, PHONE, phone=True, dark=True)
    screenshot(d, "overview-phone-dark")
    emulate(d, DESKTOP)
    pingr.web.behaviour.status = 200
    wait(d, lambda d: badge(d, web_id).text == "Up", 5.0, "the row back to Up")

    assert console_errors(d) == []
    sign_out(d, pingr.base)
    d.get(pingr.base + "/")
    wait(d, lambda d: "/login" in d.current_url, what="signed out: the overview asks again")
    assert console_errors(d) == []


def test_public_status_page_shows_no_host_url_or_target_name(pingr: Pingr, browser: Any) -> None:
    d = browser
    d.delete_all_cookies()
    emulate(d, DESKTOP)
    d.get(pingr.base + "/status")
    d.get_log("browser")
    wait(d, lambda d: d.find_element(By.CSS_SELECTOR, "#banner h1").text ==
         "All systems operational", what="the all-clear banner")
    html = d.page_source
    for secret in (*PRIVATE, "127.0.0.1", str(pingr.web.port), str(pingr.api.port), "health",
                   "http://", "https://", "connection refused", "ConnectError"):
        assert secret not in html, f"{secret!r} is on the public status page"
    components = [e.get_attribute("data-component")
                  for e in d.find_elements(By.CSS_SELECTOR, "[data-component]")]
    assert components == ["Website", "API", "Database"]
    assert len(d.find_elements(By.CSS_SELECTOR, ".bars rect")) == 3 * 90
    assert "Website: outage" in d.find_element(By.TAG_NAME, "main").text
    screenshot(d, "status-desktop")

    # Live, without a reload: the website goes down, the banner and its badge follow.
    d.execute_script("window.__notReloaded = true;")
    pingr.web.behaviour.status = 500
    wait(d, lambda d: d.find_element(By.CSS_SELECTOR, "#banner h1").text == "Partial outage",
         5.0, "the banner says Partial outage")
    assert d.find_element(By.CSS_SELECTOR, '[data-component="Website"] .badge').text == "Outage"
    assert d.execute_script("return window.__notReloaded === true;")
    emulate(d, PHONE, phone=True)
    screenshot(d, "status-phone")
    emulate(d, DESKTOP)
    pingr.web.behaviour.status = 200
    wait(d, lambda d: d.find_element(By.CSS_SELECTOR, "#banner h1").text ==
         "All systems operational", 5.0, "the banner back to all clear")
    assert console_errors(d) == []
    body = pingr.client.get("/api/v1/status-page", headers={"x-api-key": ""}).text
    for secret in (*PRIVATE, "127.0.0.1", "http://"):
        assert secret not in body


def test_read_key_sees_no_admin_controls_and_forged_posts_are_refused(
        pingr: Pingr, browser: Any) -> None:
    d = browser
    d.delete_all_cookies()
    emulate(d, DESKTOP)
    web_id = pingr.target("backend-http-probe")["id"]
    pingr.web.behaviour.status = 500
    wait(d, lambda d: pingr.client.get("/api/v1/alert-status").json()["alert"], 5.0,
         "the target down again, with a new unacknowledged alert")
    sign_in(d, pingr.base, pingr.keys["read"])
    assert "read" in d.find_element(By.CSS_SELECTOR, ".who").text
    wait(d, lambda d: badge(d, web_id).text == "Down", what="the row says Down")
    page = d.page_source
    for control in ("Acknowledge", "aria-label=\"Test ", "action=\"/silences\"", "/pause"):
        assert control not in page, f"a read key sees {control!r}"
    d.get(pingr.base + f"/targets/{web_id}")
    assert not d.find_elements(By.CSS_SELECTOR, "#head form button")
    assert not d.find_elements(By.LINK_TEXT, "Edit")
    d.get(pingr.base + f"/targets/{web_id}/edit")
    assert "Not allowed" in d.find_element(By.TAG_NAME, "h1").text

    # Forged POSTs from the signed-in page: the session's own CSRF token with a read scope,
    # and a request without the token. Neither changes anything.
    alert_id = next(a["id"] for a in _items(pingr.client.get(
        "/api/v1/alerts", params={"state": "open"}).json())
        if a["target_name"] == "backend-http-probe")
    d.get(pingr.base + "/")
    token = d.find_element(By.CSS_SELECTOR, "form.signout input[name=csrf]").get_attribute("value")
    results = d.execute_async_script("""
        const [token, id, done] = arguments;
        const post = (url, body) => fetch(url, {method: "POST", body: new URLSearchParams(body),
            headers: {"Accept": "application/json"}}).then(r => r.status);
        Promise.all([post(`/alerts/${id}/ack`, {csrf: token}), post(`/alerts/${id}/ack`, {}),
                     post("/outputs/siren/test", {csrf: token}),
                     post("/silences", {csrf: token, target: "db-port-check", duration: "1h"}),
                     post(`/targets/x/pause`, {csrf: token})]).then(done);
    """, token, alert_id)
    assert results == [403, 403, 403, 403, 403], results
    alert = pingr.client.get(f"/api/v1/alerts/{alert_id}").json()
    assert alert["acknowledged_at"] is None, "a read key's POST acknowledged the alert"
    assert _items(pingr.client.get("/api/v1/silence").json()) == []
    assert {o["name"]: o["testing"] for o in pingr.client.get("/api/v1/outputs").json()} == {
        "siren": False, "lamp": False}
    sign_out(d, pingr.base)
    pingr.web.behaviour.status = 200


def test_forms_posted_from_other_sites_change_nothing(pingr: Pingr, browser: Any) -> None:
    """An operate session is open in the browser; pages elsewhere post its forms (even with
    a leaked CSRF token). Another port of the same host is the same *site*, so the SameSite
    cookie goes along, and Sec-Fetch-Site refuses it; another address is another site, so the
    cookie stays home and pingr sees nobody signed in."""
    d = browser
    d.delete_all_cookies()
    emulate(d, DESKTOP)
    pingr.web.behaviour.status = 500
    wait(d, lambda d: pingr.client.get("/api/v1/alert-status").json()["alert"], 5.0,
         "an unacknowledged alert")
    alert_id = next(a["id"] for a in _items(pingr.client.get(
        "/api/v1/alerts", params={"state": "open"}).json())
        if a["target_name"] == "backend-http-probe")
    sign_in(d, pingr.base, pingr.keys["operate"])
    token = d.find_element(By.CSS_SELECTOR, "form.signout input[name=csrf]").get_attribute("value")
    form = (f'<form id="f" method="post" action="{pingr.base}/alerts/{alert_id}/ack">'
            f'<input name="csrf" value="{token}"></form>'
            '<script>document.getElementById("f").submit()</script>')
    for host, expect in (("127.0.0.1", "Refused: this form was sent from another site"),
                         ("127.0.0.2", "Sign in")):
        with HtmlServer(host, form) as evil:
            d.get(evil.url)
            wait(d, lambda d: d.current_url.startswith(pingr.base), what="the form posted")
            wait(d, lambda d, expect=expect: expect in d.page_source,
                 what=f"pingr answering the form from {host}: {expect}")
    alert = pingr.client.get(f"/api/v1/alerts/{alert_id}").json()
    assert alert["acknowledged_at"] is None, "a forged POST acknowledged the alert"
    assert pingr.client.get("/api/v1/alert-status").json()["alert"] is True
    pingr.web.behaviour.status = 200


class HtmlServer:
    """A page on another origin (loopback only)."""

    def __init__(self, host: str, html: str) -> None:
        import http.server
        import threading

        body = html.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self) -> HtmlServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _items(body: Any) -> list[dict[str, Any]]:
    """A list answer, enveloped ({"items": [...]}) or bare."""
    return body["items"] if isinstance(body, dict) and "items" in body else body


def test_screenshots_are_written_where_the_readme_says() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("overview-desktop", "overview-phone", "target-desktop", "target-phone",
                 "status-desktop", "status-phone"):
        assert f"docs/screenshots/{name}.png" in readme, name
