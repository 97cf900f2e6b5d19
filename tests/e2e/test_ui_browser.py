"""The web UI in headless Chromium against the real cluster (issue #16): a running task's log grows
on the page while the task runs, and the session page's task rows change state from the event
stream without a reload. `kudig ui -n NS` with the test's kubeconfig, as a user starts it; the
browser is Debian's Chromium driven by Selenium (tests/browser/conftest.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.browser.conftest import start_browser

from .conftest import Kube, wait_for
from .operator_fixtures import Operator, push, start, wait_session
from .test_ui_server import get, project, ui_server

pytestmark = pytest.mark.e2e


def test_session_rows_change_live_in_the_browser(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = project(
        tmp_path,
        {
            "livelog.dig": "+slow:\n  sh>: for i in 1 2 3 4 5 6 7 8; do echo line-$i; sleep 1; done\n"
            "+after:\n  sh>: echo after\n",
        },
    )
    push(kube, namespace, root, "livelog")
    browser = start_browser()
    try:
        with ui_server("-n", namespace) as url:
            name = start(kube, namespace, "livelog", "2024-01-30T00:00:00+00:00")
            log_api = f"{url}/api/v1/sessions/{namespace}/{name}/tasks/%2Blivelog%2Bslow/log"
            wait_for(lambda: get(log_api).json()["pod"], 120, "the +slow task's pod")

            # the session page, opened while the session runs: its rows change from the stream
            browser.get(f"{url}/sessions/{namespace}/{name}")
            wait_for(lambda: browser.find_elements("css selector", ".live-live"), 30, "the event stream")

            def state(task: str) -> str:
                cells = browser.find_elements("css selector", f"[data-task='{task}'] .c-state")
                return cells[0].text if cells else ""

            wait_for(lambda: state("+livelog+after") == "success", 180, "+after's row turns success live")
            assert (
                browser.execute_script(
                    "return performance.getEntriesByType('navigation').length"
                    " + performance.getEntriesByType('resource')"
                    ".filter(e => e.name.endsWith('/api/v1/sessions/' + arguments[0] + '/' + arguments[1])).length",
                    namespace,
                    name,
                )
                == 2
            )  # one page load, one fetch of the session: the rest came as deltas
    finally:
        browser.quit()
    wait_session(kube, operator, namespace, name)


def test_the_log_page_follows_a_running_task(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = project(
        tmp_path,
        {"follow.dig": "+slow:\n  sh>: for i in 1 2 3 4 5 6 7 8; do echo line-$i; sleep 1; done\n"},
    )
    push(kube, namespace, root, "follow")
    browser = start_browser()
    try:
        with ui_server("-n", namespace) as url:
            name = start(kube, namespace, "follow", "2024-01-30T00:00:00+00:00")
            log_api = f"{url}/api/v1/sessions/{namespace}/{name}/tasks/%2Bfollow%2Bslow/log"
            wait_for(lambda: get(log_api).json()["pod"], 120, "the +slow task's pod")
            browser.get(f"{url}/sessions/{namespace}/{name}/tasks/%2Bfollow%2Bslow/log")

            def lines() -> list[str]:
                pre = browser.find_elements("css selector", "[data-test=log]")
                return pre[0].text.splitlines() if pre else []

            def status() -> str:
                s = browser.find_elements("css selector", "[data-test=log-status]")
                return s[0].text if s else ""

            first = wait_for(
                lambda: lines() if lines() and status() == "live" else None, 120, "the first lines"
            )
            seen = [(time.monotonic(), len(first))]
            # it grows on the page while the task runs
            while status() != "finished" and time.monotonic() - seen[0][0] < 120:
                n = len(lines())
                if n != seen[-1][1]:
                    seen.append((time.monotonic(), n))
                time.sleep(0.1)
            assert status() == "finished"
            assert lines() == [f"line-{i}" for i in range(1, 9)]  # every line once, in order
            growth = [n for _, n in seen]
            assert len(growth) >= 3 and growth[0] < 8, f"the page did not follow the log: {growth}"
            assert seen[-1][0] - seen[0][0] >= 2.0, seen
            probe = browser.execute_script("return window.__probe")
            assert probe == {"alerts": [], "csp": []}
            severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
            assert severe == []
    finally:
        browser.quit()
    wait_session(kube, operator, namespace, name)
