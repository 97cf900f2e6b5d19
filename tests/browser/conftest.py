"""Browser tests of the web UI: Debian's headless Chromium, driven by Selenium through Debian's
chromedriver (hack/chromium installs both when missing; browser downloads cannot work here),
against `kudig ui --fixtures DIR` serving a directory generated with the real compiler and engine
(tests/browser/fixtures.py).

Every page load gets a probe (installed before the page's own scripts) that records calls to
alert/confirm/prompt and CSP violations; after each test the probe and the browser console must be
clean. Set KUDIG_UI_SCREENSHOTS=DIR to keep the screenshots the tests take (docs/ui/ holds the
ones docs/ui.md shows).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import fixtures

ROOT = Path(__file__).resolve().parents[2]
WAIT = 15.0

PROBE = """
window.__probe = {alerts: [], csp: []};
for (const k of ['alert', 'confirm', 'prompt']) {
  window[k] = (...a) => { window.__probe.alerts.push(k + ':' + a.join(' ')); return null; };
}
document.addEventListener('securitypolicyviolation',
  (e) => window.__probe.csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + (e.sample || '')));
"""


def chromium_paths() -> tuple[str, str]:
    proc = subprocess.run([str(ROOT / "hack" / "chromium")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, (
        f"hack/chromium failed (it installs Debian's chromium and chromium-driver):\n{proc.stderr}"
    )
    browser, driver = proc.stdout.split()
    return browser, driver


def start_browser(width: int = 1280, height: int = 800) -> WebDriver:
    browser, driver = chromium_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=opts)
    d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
    return d


class UiServer:
    """`kudig ui --fixtures DIR --port 0`, the real command, in a subprocess."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = root
        kudig = Path(sys.executable).with_name("kudig")
        cmd = (
            [str(kudig)]
            if kudig.exists()
            else [sys.executable, "-c", "import sys; from kudig.cli import main; sys.exit(main())"]
        )
        self.proc = subprocess.Popen(
            [*cmd, "ui", "--fixtures", str(root), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "http://" not in line:
            self.proc.kill()
            raise AssertionError(
                f"kudig ui did not print its URL: {line!r}\n{self.proc.stderr.read() if self.proc.stderr else ''}"
            )
        self.url = line.split("http://", 1)[1].split("/", 1)[0]
        self.url = f"http://{self.url}"

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}/api/v1{path}", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(3)  # open event streams can hold a graceful stop
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> fixtures.Demo:
    return fixtures.demo(tmp_path_factory.mktemp("ui-fixtures"))


@pytest.fixture(scope="session")
def server(demo: fixtures.Demo) -> Iterator[UiServer]:
    s = UiServer(demo.root)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def browser(server: UiServer) -> Iterator[WebDriver]:  # quit before the server stops
    d = start_browser()
    yield d
    d.quit()


class Page:
    """The browser, pointed at the server, with the checks every test makes."""

    def __init__(self, driver: WebDriver, server: UiServer) -> None:
        self.d = driver
        self.server = server
        self.found: list[str] = []
        self.opened = False

    def open(self, path: str) -> None:
        if self.opened:
            self.found += self.problems()  # the document being left
        self.opened = True
        self.d.get(self.server.url + path)

    def wait(self, cond: Callable[[WebDriver], Any], what: str, timeout: float = WAIT) -> Any:
        return WebDriverWait(self.d, timeout, poll_frequency=0.05).until(
            cond, message=f"waited {timeout}s for {what}"
        )

    def js(self, script: str, *args: Any) -> Any:
        return self.d.execute_script(script, *args)

    def css(self, selector: str) -> list[Any]:
        return self.d.find_elements("css selector", selector)

    def wait_css(self, selector: str, timeout: float = WAIT) -> Any:
        return self.wait(lambda d: d.find_elements("css selector", selector) or False, selector, timeout)[0]

    def text(self, selector: str) -> str:
        """The first match's text, or "" while there is none."""
        found = self.css(selector)
        return str(found[0].text) if found else ""

    def location(self) -> str:
        return str(self.js("return location.pathname + location.search"))

    def problems(self) -> list[str]:
        probe = self.js("return window.__probe || {alerts: [], csp: []}")
        logs = [e for e in self.d.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        return [
            *(f"alert: {a}" for a in probe["alerts"]),
            *(f"CSP: {c}" for c in probe["csp"]),
            *(f"console {e['level']}: {e['message']}" for e in logs),
        ]

    def screenshot(self, name: str, scroll_to: str | None = None) -> None:
        out = os.environ.get("KUDIG_UI_SCREENSHOTS")
        if out:
            if scroll_to:
                self.js("document.querySelector(arguments[0]).scrollIntoView()", scroll_to)
            Path(out).mkdir(parents=True, exist_ok=True)
            self.d.save_screenshot(str(Path(out) / f"{name}.png"))


@pytest.fixture
def page(browser: WebDriver, server: UiServer) -> Iterator[Page]:
    p = Page(browser, server)
    browser.get_log("browser")  # drop what earlier tests left
    yield p
    problems = p.found + p.problems()
    assert problems == [], "the page reported problems:\n" + "\n".join(problems)
