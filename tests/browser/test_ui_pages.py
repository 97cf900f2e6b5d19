"""The web UI in headless Chromium against `kudig ui --fixtures` (see conftest.py): every page,
filters and deep links in the URL, user data shown as text, live deltas, the live log."""

from __future__ import annotations

import json
import socket
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from selenium.webdriver.common.by import By

from tests.browser import fixtures
from tests.browser.conftest import Page, UiServer
from tests.browser.fixtures import XSS


def name(workflow: str, day: datetime) -> str:
    return fixtures.session_name(workflow, day)


def rows(page: Page) -> list[str]:
    return [str(e.get_attribute("data-session")) for e in page.css("[data-test=sessions] tbody tr")]


def query(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.location()).query)


# ---- sessions list ------------------------------------------------------------------------------


def test_sessions_list_filters_live_in_the_url(page: Page, demo: fixtures.Demo) -> None:
    page.open("/sessions?namespace=demo&phase=Succeeded")
    page.wait(lambda d: len(rows(page)) == 4, "4 succeeded sessions in demo")
    assert set(rows(page)) == {
        f"demo/{name('etl', demo.days[k])}" for k in ("first", "backfill", "secret", "yesterday")
    }
    # the form shows the URL's filters
    assert page.css("select[name=namespace]")[0].get_attribute("value") == "demo"
    assert page.css("input[name=phase-Succeeded]")[0].is_selected()
    assert not page.css("input[name=phase-Failed]")[0].is_selected()

    # a filter changed in the form goes into the URL, and the server filters
    page.css("input[name=phase-Failed]")[0].click()
    page.css("[data-test=filters] button[type=submit]")[0].click()
    page.wait(lambda d: query(page).get("phase") == ["Succeeded,Failed"], "phase=Succeeded,Failed in the URL")
    page.wait(
        lambda d: f"demo/{name('failing', demo.days['yesterday'].replace(hour=5))}" in rows(page),
        "the failed session",
    )
    assert len(rows(page)) == 5

    # a time range (session time from <= t < to) and a workflow
    frm = demo.days["backfill"].isoformat()
    to = demo.days["yesterday"].isoformat()
    page.open(f"/sessions?workflow=etl&from={quote(frm)}&to={quote(to)}")
    page.wait(lambda d: len(rows(page)) == 2, "2 etl sessions in [from, to)")
    assert set(rows(page)) == {f"demo/{name('etl', demo.days[k])}" for k in ("backfill", "secret")}
    # back: the previous filters, from the URL alone
    page.d.back()
    page.wait(
        lambda d: len(rows(page)) == 5 and query(page).get("phase") == ["Succeeded,Failed"],
        "back to the phase filter",
    )


def test_sessions_list_pages_with_a_cursor(page: Page, server: UiServer) -> None:
    everything = [f"{s['namespace']}/{s['name']}" for s in server.api("/sessions?limit=500")["items"]]
    assert len(everything) == 7
    seen: list[str] = []
    page.open("/sessions?limit=3")
    for _ in range(3):
        page.wait(lambda d, seen=seen: rows(page) and rows(page)[0] not in seen, "a new page of sessions")
        seen += rows(page)
        older = page.css(".pager a.next")
        if not older:
            break
        older[0].click()
        page.wait(lambda d: "cursor" in query(page), "cursor in the URL")
    assert seen == everything  # newest first, no row twice, none missing


def test_a_session_change_patches_its_row(page: Page, demo: fixtures.Demo) -> None:
    running = name("etl", demo.days["today"])
    page.open("/sessions?namespace=demo")
    badge = f"tr[data-session='demo/{running}'] .badge"
    page.wait(lambda d: page.css(badge) and page.text(badge) == "Running", "the running session")
    page.wait_css(".live-live")
    page.screenshot("sessions")
    path = demo.root / "demo" / "sessions" / f"{running}.json"
    before = path.read_text()
    obj = json.loads(before)
    obj["status"]["phase"] = "Failed"
    obj["status"]["progress"] = "5/6"
    try:
        path.write_text(json.dumps(obj))
        page.wait(lambda d: page.text(badge) == "Failed", "the row patched to Failed", timeout=5)
    finally:
        path.write_text(before)
    page.wait(lambda d: page.text(badge) == "Running", "the row patched back")
    # patched from the event stream: the list itself was fetched once
    fetched = page.js(
        "return performance.getEntriesByType('resource').filter(e => e.name.includes('/api/v1/sessions?')).length"
    )
    assert fetched == 1


# ---- a session: tasks, text safety, params --------------------------------------------------------


def test_session_tasks_show_user_data_as_text(page: Page, demo: fixtures.Demo) -> None:
    s = name("etl", demo.days["secret"])
    page.open(f"/sessions/demo/{s}")
    page.wait_css("[data-test=tasks] .trow[data-task]")
    names = [e.get_attribute("data-task") for e in page.css("[data-test=tasks] .tbody .trow")]
    assert names == [
        "+etl",
        "+etl+extract",
        "+etl+transform",
        "+etl+transform+clean",
        f"+etl+transform+{XSS}",
        "+etl+transform+enrich",
        "+etl+load",
        "+etl+report",
    ]
    xss = page.css(f"[data-test=tasks] .trow[data-task='+etl+transform+{XSS}'] .c-name")[0]
    assert xss.text == f"+{XSS}"  # the label, shown as text
    assert page.js("return document.querySelectorAll('#app script').length") == 0
    # the CLI commands to copy
    commands = [e.get_attribute("textContent") for e in page.css("[data-test=commands] .copy-text")]
    assert f"kudig retry {s} -n demo" in commands and f"kudig kill {s} -n demo" in commands
    page.screenshot("session")

    # the XSS task's panel: its name as text again, and a link to its log
    page.css(f"[data-test=tasks] .trow[data-task='+etl+transform+{XSS}'] .c-name a")[0].click()
    panel = page.wait_css("[data-test=task-panel]")
    assert panel.find_element(By.CSS_SELECTOR, ".task-name").text == f"+etl+transform+{XSS}"
    assert query(page)["task"] == [f"+etl+transform+{XSS}"]

    # params: a secret-looking key's value never reaches the browser
    page.css(".tabs a.tab")[3].click()
    page.wait_css("[data-test=params]")
    assert "db_password" in page.css("[data-test=params]")[0].text
    assert "hunter2" not in page.d.page_source


def test_a_failed_task_shows_its_error_as_text(page: Page, demo: fixtures.Demo) -> None:
    s = name("failing", demo.days["yesterday"].replace(hour=5))
    page.open(f"/sessions/demo/{s}?task=%2Bfailing%2Bload")
    panel = page.wait_css("[data-test=task-panel]")
    error = panel.find_element(By.CSS_SELECTOR, ".task-error").text
    assert error == "load: connection refused (db.example:5432) <img src=x onerror=alert(2)>"
    assert page.js("return document.querySelectorAll('#app img').length") == 0
    retries = page.css("[data-task='+failing+load'] .c-retries")[0].text
    assert retries == "1"
    assert page.css(".failed li")[0].text.startswith("+failing+load: load: connection refused")


# ---- DAG ------------------------------------------------------------------------------------------


def test_dag_draws_the_server_layout_and_opens_tasks(
    page: Page, demo: fixtures.Demo, server: UiServer
) -> None:
    s = name("etl", demo.days["yesterday"])
    layout = server.api(f"/sessions/demo/{s}/dag")
    page.open(f"/sessions/demo/{s}?tab=dag")
    page.wait_css("[data-test=dag] [data-node]")
    drawn = {e.get_attribute("data-node") for e in page.css("[data-test=dag] [data-node]")}
    assert drawn == {n["name"] for n in layout["nodes"] if not n["group"]}
    groups = {e.get_attribute("data-group") for e in page.css("[data-test=dag] [data-group]")}
    assert groups == {"+etl", "+etl+transform"}
    # the server's coordinates, as given
    load = next(n for n in layout["nodes"] if n["name"] == "+etl+load")
    rect = page.css("[data-node='+etl+load'] rect")[0]
    assert (float(rect.get_attribute("x")), float(rect.get_attribute("y"))) == (load["x"], load["y"])
    page.screenshot("dag", scroll_to=".tabs")

    # click a node: its panel, the task in the URL
    page.css("[data-node='+etl+load'] rect")[0].click()
    page.wait(lambda d: query(page).get("task") == ["+etl+load"], "task=+etl+load in the URL")
    assert page.wait_css("[data-test=task-panel] .task-name").text == "+etl+load"

    # collapse a group: its children are no longer drawn, the group is a node; in the URL
    page.css("[data-group='+etl+transform'] .dag-group-label")[0].click()
    transform = next(n for n in layout["nodes"] if n["name"] == "+etl+transform")
    page.wait(lambda d: query(page).get("collapse") == [str(transform["id"])], "collapse= in the URL")
    page.wait(lambda d: page.css("[data-node='+etl+transform']"), "the collapsed group drawn as a node")
    assert not page.css("[data-node='+etl+transform+clean']")

    # zoom (wheel) and pan (drag) go into ?view= (replaced, not pushed)
    page.js("""
      const el = document.querySelector('[data-test=dag]');
      const r = el.getBoundingClientRect();
      el.dispatchEvent(new WheelEvent('wheel', {deltaY: 400, clientX: r.left + 10, clientY: r.top + 10, bubbles: true, cancelable: true}));
    """)
    page.wait(lambda d: "view" in query(page), "view= in the URL")
    k = float(query(page)["view"][0].split(",")[2])
    assert k < 1


def test_dag_draws_only_the_viewport(page: Page, tmp_path: Path) -> None:
    # a 600-task for_range> fan-out from the real engine: zoomed in, a screenful is drawn
    root = tmp_path
    fixtures.fanout(root, n=600, namespace="bench", name="fanout-600")
    big = UiServer(root)
    try:
        page.server = big
        page.open("/sessions/bench/fanout-600?tab=dag&view=20,20,1.000")
        page.wait_css("[data-test=dag] [data-node]")
        total = len(big.api("/sessions/bench/fanout-600/dag")["nodes"])
        drawn = len(page.css("[data-test=dag] [data-node]"))
        assert total > 600
        assert 0 < drawn < 100, f"{drawn} of {total} nodes drawn at zoom 1"
        count = page.css("[data-test=dag-count]")[0].text
        assert count.startswith(f"{drawn} of {total}")
    finally:
        page.found += page.problems()
        page.opened = False
        page.d.get("about:blank")  # close the event stream before its server goes
        big.stop()


# ---- Gantt ----------------------------------------------------------------------------------------


def test_gantt_shows_the_phases_and_the_gap(page: Page, demo: fixtures.Demo, server: UiServer) -> None:
    s = name("etl", demo.days["yesterday"])
    gantt = server.api(f"/sessions/demo/{s}/gantt")
    page.open(f"/sessions/demo/{s}?tab=gantt")
    page.wait_css("[data-test=gantt] .grow")
    row = page.css("[data-test=gantt] .grow[data-task='+etl+extract']")[0]
    classes = [e.get_attribute("class") for e in row.find_elements(By.CSS_SELECTOR, ".seg")]
    assert classes[:4] == ["seg seg-wait", "seg seg-pod", "seg seg-start", "seg seg-run st-success"]
    assert "seg seg-gap" in classes
    extract = next(r for r in gantt["rows"] if r["name"] == "+etl+extract")
    assert extract["gapAfter"] is not None
    label = row.find_element(By.CSS_SELECTOR, "[data-test=gap]").text
    assert label == f"gap {round(extract['gapAfter'] * 1000)} ms"
    # the segments are where the times say: running starts after the pod started
    seg = {c: e for c, e in zip(classes, row.find_elements(By.CSS_SELECTOR, ".seg"), strict=True)}
    assert seg["seg seg-start"].location["x"] <= seg["seg seg-run st-success"].location["x"]
    page.screenshot("gantt", scroll_to=".tabs")

    # zoom: the window goes into the URL and a reload shows the same window
    window = page.css("[data-test=gantt-window]")[0].text
    page.css(".gantt-tools button[title='zoom in']")[0].click()
    page.wait(lambda d: "from" in query(page) and page.text("[data-test=gantt-window]") != window, "zoomed")
    zoomed = page.css("[data-test=gantt-window]")[0].text
    page.open(page.location())
    page.wait(
        lambda d: (
            page.css("[data-test=gantt-window]") and page.css("[data-test=gantt-window]")[0].text == zoomed
        ),
        "the same window after a reload",
    )


# ---- deep links, time zones ---------------------------------------------------------------------


def test_a_deep_link_round_trips(page: Page, demo: fixtures.Demo) -> None:
    s = name("etl", demo.days["yesterday"])
    link = f"/sessions/demo/{s}?tab=dag&task=%2Betl%2Breport&tz=local"
    page.open(link)
    page.wait(lambda d: page.css("[data-test=task-panel] .task-name"), "the task panel")
    assert page.css(".tabs a.active")[0].text == "DAG"
    assert page.css("[data-test=task-panel] .task-name")[0].text == "+etl+report"
    assert page.css("[data-test=tz-label]")[0].text.startswith("local time")
    assert page.css("[data-node='+etl+report'].selected")
    # move around inside the app, then come back by history: the same state from the URL
    page.css(".tabs a.tab")[2].click()  # Gantt
    page.wait_css("[data-test=gantt] .grow")
    page.css("a.tz-switch")[0].click()
    page.wait(lambda d: page.text("[data-test=tz-label]").startswith("workflow zone"), "workflow zone")
    assert page.css("[data-test=tz-label]")[0].text == "workflow zone (UTC+09:00)"
    page.d.back()
    page.d.back()
    page.wait(
        lambda d: page.location() == link.replace("%2B", "+") or page.location() == link, "back at the link"
    )
    page.wait(lambda d: page.css("[data-test=task-panel] .task-name"), "the task panel again")
    assert page.css(".tabs a.active")[0].text == "DAG"
    # a copied link opens the same view in a fresh load
    copied = page.css("[data-test=task-panel] .copy-text")[-1].text
    assert urlsplit(copied).path == f"/sessions/demo/{s}"
    page.open(urlsplit(copied).path + "?" + urlsplit(copied).query)
    page.wait(lambda d: page.css("[data-test=task-panel] .task-name"), "the task panel from the copied link")
    assert page.css("[data-test=task-panel] .task-name")[0].text == "+etl+report"


# ---- logs ---------------------------------------------------------------------------------------


def test_a_running_tasks_log_grows_live(page: Page, demo: fixtures.Demo, server: UiServer) -> None:
    s = name("etl", demo.days["today"])
    detail = server.api(f"/sessions/demo/{s}")
    running = next(t for t in detail["tasks"] if t["state"] == "running" and t["pod"])
    log = demo.root / "demo" / "logs" / f"{running['pod']}.log"
    pod = demo.root / "demo" / "pods" / f"{running['pod']}.json"
    saved = log.read_text(), pod.read_text()
    try:
        page.open(f"/sessions/demo/{s}/tasks/{quote(running['name'], safe='')}/log")
        pre = page.wait_css("[data-test=log]")
        page.wait(lambda d: len(pre.text.splitlines()) >= 4, "the first lines")
        before = pre.text.splitlines()
        with log.open("a") as f:
            f.write(f"a new line {XSS}\n")
        page.wait(lambda d: pre.text.splitlines()[-1] == f"a new line {XSS}", "the new line")
        assert pre.text.splitlines()[: len(before)] == before
        page.screenshot("log")
        obj = json.loads(pod.read_text())
        obj["status"]["phase"] = "Succeeded"
        pod.write_text(json.dumps(obj))
        page.wait(lambda d: page.text("[data-test=log-status]") == "finished", "the log finished")
        assert page.js("return document.querySelectorAll('#app script').length") == 0
    finally:
        log.write_text(saved[0])
        pod.write_text(saved[1])


def test_a_log_resumes_after_the_connection_drops(page: Page, demo: fixtures.Demo, tmp_path: Path) -> None:
    # the server goes away mid-stream and comes back on the same port: the page reconnects with
    # Last-Event-ID and shows every line once
    s = name("etl", demo.days["today"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    own = UiServer(demo.root, port)
    running = next(t for t in own.api(f"/sessions/demo/{s}")["tasks"] if t["state"] == "running" and t["pod"])
    log = demo.root / "demo" / "logs" / f"{running['pod']}.log"
    original = log.read_text()
    try:
        page.server = own
        page.open(f"/sessions/demo/{s}/tasks/{quote(running['name'], safe='')}/log")
        pre = page.wait_css("[data-test=log]")
        page.wait(
            lambda d: (
                pre.text.splitlines() == original.splitlines()
                and page.text("[data-test=log-status]") == "live"
            ),
            "the lines so far",
        )
        own.stop()
        page.wait(lambda d: page.text("[data-test=log-status]") == "reconnecting", "reconnecting")
        with log.open("a") as f:
            f.write("after the drop 1\nafter the drop 2\n")
        own = UiServer(demo.root, port)
        page.wait(lambda d: pre.text.splitlines()[-1:] == ["after the drop 2"], "the lines written meanwhile")
        lines = pre.text.splitlines()
        assert lines == [*original.splitlines(), "after the drop 1", "after the drop 2"]
        # and the server resumed after the last line seen (Last-Event-ID): nothing was sent twice
        assert pre.get_attribute("data-received") == str(len(lines))
    finally:
        log.write_text(original)
        page.d.get_log("browser")  # the dropped connection's errors are this test's point
        page.opened = False
        page.d.get("about:blank")
        own.stop()


def test_only_http_links_and_same_origin_paths(page: Page) -> None:
    page.open("/sessions")
    page.wait_css("[data-test=sessions]")
    got = page.d.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        import('/static/lib.js').then((m) => done([
          'javascript:alert(1)', 'JAVASCRIPT:alert(1)', 'data:text/html,x', '//evil.example/x', 'vbscript:x',
          'https://example.com/a?b', 'http://example.com/', '/sessions?x=1', 'ftp://example.com/',
        ].map((u) => m.safeHref(u) ?? null)));
        """
    )
    assert got == [
        None,
        None,
        None,
        None,
        None,
        "https://example.com/a?b",
        "http://example.com/",
        "/sessions?x=1",
        None,
    ]


def test_a_finished_tasks_log(page: Page, demo: fixtures.Demo) -> None:
    s = name("etl", demo.days["first"])
    page.open(f"/sessions/demo/{s}/tasks/%2Betl%2Bextract/log")
    page.wait(lambda d: page.text("[data-test=log-status]") == "finished", "finished")
    text = page.css("[data-test=log]")[0].text
    assert text.splitlines()[1:] == ["+etl+extract: step 1", "+etl+extract: step 2", "+etl+extract: step 3"]


# ---- workflows ----------------------------------------------------------------------------------


def test_workflow_definition_and_calendar(page: Page, demo: fixtures.Demo) -> None:
    page.open("/workflows")
    page.wait(lambda d: len(page.css("[data-test=workflows] tbody tr")) == 3, "3 workflows")
    page.css("[data-test=workflows] a[href='/workflows/demo/etl']")[0].click()
    page.wait_css("[data-test=definition]")
    ops = [e.text for e in page.css("[data-test=definition] .hl-op")]
    assert ops[:2] == ["daily>", "sh>"]
    assert [e.text for e in page.css("[data-test=definition] .hl-interp")] == ["${session_date}", "${orders}"]
    assert f'echo "{XSS}"' in page.css("[data-test=definition]")[0].text
    # the project files, one opened as text
    page.css(".tabs a.tab")[1].click()
    page.wait(
        lambda d: [e.text for e in page.css("[data-test=files] a")] == ["etl.dig", "scripts/load_data.py"],
        "files",
    )
    page.css("[data-test=files] a")[1].click()
    page.wait(lambda d: query(page).get("file") == ["scripts/load_data.py"], "file= in the URL")
    page.wait(lambda d: page.text("pre.source").startswith(f"print('{XSS}')"), "the file's text")

    month = demo.days["skipped"].strftime("%Y-%m")
    page.open(f"/workflows/demo/etl?tab=calendar&month={month}")
    page.wait_css("[data-test=calendar] .cal-day")

    def chips(day: datetime) -> list[str]:
        return [str(e.get_attribute("class")) for e in page.css(f".cal-day[data-day='{day:%Y-%m-%d}'] .chip")]

    assert any("skipped" in c for c in chips(demo.days["skipped"]))
    assert any("backfill" in c and "st-succeeded" in c for c in chips(demo.days["backfill"]))
    assert any("st-succeeded" in c for c in chips(demo.days["first"]))
    assert len(page.css("[data-test=next] li")) == 20
    page.screenshot("calendar")
    # the time-zone toggle: always labelled, and in the URL
    assert page.css("[data-test=tz-label]")[0].text == "workflow zone (Asia/Tokyo)"
    page.css("a.tz-switch")[0].click()
    page.wait(lambda d: query(page).get("tz") == ["local"], "tz=local")
    assert page.css("[data-test=tz-label]")[0].text.startswith("local time (")


# ---- recorded from a real cluster run -----------------------------------------------------------

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "ui" / "recorded"


def test_recorded_sessions_tasks_dag_and_gantt(page: Page) -> None:
    # objects hack/ui-record took from a real e2e run, as the API server returned them
    own = UiServer(RECORDED)
    try:
        page.server = own
        sessions = own.api("/sessions?limit=500")["items"]
        assert sessions
        page.open("/sessions")
        page.wait(lambda d: len(rows(page)) == len(sessions), "every recorded session")
        for s in sessions:
            detail = own.api(f"/sessions/{s['namespace']}/{s['name']}")
            page.open(f"/sessions/{s['namespace']}/{s['name']}")
            page.wait(
                lambda d, detail=detail: (
                    [e.get_attribute("data-task") for e in page.css("[data-test=tasks] .tbody .trow")]
                    == [t["name"] for t in detail["tasks"]][: len(page.css("[data-test=tasks] .tbody .trow"))]
                    and page.css("[data-test=tasks] .tbody .trow")
                ),
                f"{s['name']}'s task rows",
            )
            page.open(f"/sessions/{s['namespace']}/{s['name']}?tab=dag")
            page.wait_css("[data-test=dag] [data-node]")
            page.open(f"/sessions/{s['namespace']}/{s['name']}?tab=gantt")
            page.wait_css("[data-test=gantt] .grow .seg")
    finally:
        page.found += page.problems()
        page.opened = False
        page.d.get("about:blank")
        own.stop()
