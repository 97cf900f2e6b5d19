"""kudig.ui.server against a fixture directory (FixtureSource), through aiohttp's test client."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from kudig.ui.server import CSP, Settings, make_app
from tests import ui_fixtures as fx

NS = "team-a"
XSS = "<script>alert(1)</script>"


@pytest.fixture
def fixtures(tmp_path: Path) -> Path:
    objs = [
        fx.session(
            NS,
            f"etl-{d}",
            "etl",
            f"2024-01-{d}T00:00:00+00:00",
            fx.chain("etl", ["extract", "load"]),
            phase="Failed" if d == 12 else "Succeeded",
            params={"db_password": "hunter2", "day": d},
            spec={"scheduled": True},
        )
        for d in range(10, 20)
    ]
    objs.append(
        fx.session("team-b", "other-1", "other", "2024-01-15T12:00:00+09:00", fx.chain("other", [XSS]))
    )
    objs.append(fx.pod(NS, "etl-1", "etl-19", "+etl+extract", phase="Running"))
    objs.append(
        {
            "apiVersion": "kudig.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "etl", "namespace": NS, "generation": 3},
            "spec": {
                "dig": "timezone: Asia/Tokyo\nschedule:\n  daily>: 07:00:00\n+extract:\n  sh>: echo hi\n",
                "project": {"configMaps": ["etl-files"]},
            },
            "status": {
                "revision": 3,
                "workflowName": "etl",
                "timezone": "Asia/Tokyo",
                "schedule": "daily>: 07:00:00",
            },
        }
    )
    objs.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "etl-files", "namespace": NS},
            "data": {"etl.dig": "+extract:\n  sh>: echo hi\n", "scripts_.run.sh": "echo run\n"},
        }
    )
    return fx.write_fixtures(tmp_path / "fx", objs, {(NS, "etl-1"): "line 0\nline 1\nline 2\n"})


def serve(root: Path, **kw: Any) -> Callable[[Callable[[TestClient], Awaitable[None]]], None]:
    def run(body: Callable[[TestClient], Awaitable[None]]) -> None:
        async def main() -> None:
            async with TestClient(TestServer(make_app(Settings("fixtures", fixtures=root, **kw)))) as client:
                await body(client)

        asyncio.run(main())

    return run


async def get_json(client: TestClient, path: str, status: int = 200) -> Any:
    resp = await client.get(path)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


def test_sessions_filter_sort_and_page_on_the_server(fixtures: Path) -> None:
    async def body(client: TestClient) -> None:
        page1 = await get_json(client, f"/api/v1/sessions?namespace={NS}&limit=4")
        assert [s["name"] for s in page1["items"]] == ["etl-19", "etl-18", "etl-17", "etl-16"]
        page2 = await get_json(client, f"/api/v1/sessions?namespace={NS}&limit=4&cursor={page1['next']}")
        page3 = await get_json(client, f"/api/v1/sessions?namespace={NS}&limit=4&cursor={page2['next']}")
        assert [s["name"] for s in page2["items"] + page3["items"]] == [f"etl-{d}" for d in range(15, 9, -1)]
        assert page3["next"] is None
        failed = await get_json(client, "/api/v1/sessions?phase=Failed")
        assert [s["name"] for s in failed["items"]] == ["etl-12"]
        window = await get_json(
            client, "/api/v1/sessions?from=2024-01-15T00:00:00Z&to=2024-01-16T00:00:00%2B00:00"
        )
        # other-1 is 2024-01-15T03:00Z: both namespaces are searched when none is given
        assert [s["name"] for s in window["items"]] == ["other-1", "etl-15"]
        first = page1["items"][0]
        assert first["params"] == {"db_password": "***", "day": 19} and first["scheduled"] is True
        bad = await get_json(client, "/api/v1/sessions?phase=Nope", 400)
        assert "phase" in bad["error"]
        assert "cursor" in (await get_json(client, "/api/v1/sessions?cursor=zzz", 400))["error"]

    serve(fixtures)(body)


def test_session_tasks_dag_gantt_and_commands(fixtures: Path) -> None:
    async def body(client: TestClient) -> None:
        s = await get_json(client, f"/api/v1/sessions/{NS}/etl-12")
        assert s["summary"]["phase"] == "Failed"
        assert [t["name"] for t in s["tasks"]] == ["+etl", "+etl+extract", "+etl+load"]
        assert s["tasks"][2]["label"] == "+load" and s["tasks"][2]["upstreams"] == [1]
        assert s["commands"]["retry"] == f"kudig retry etl-12 -n {NS}"
        dag = await get_json(client, f"/api/v1/sessions/{NS}/etl-12/dag")
        assert dag["edges"] == [[1, 2]] and len(dag["nodes"]) == 3
        collapsed = await get_json(client, f"/api/v1/sessions/{NS}/etl-12/dag?collapse=0")
        assert [n["id"] for n in collapsed["nodes"]] == [0]
        gantt = await get_json(client, f"/api/v1/sessions/{NS}/etl-12/gantt")
        rows = {r["name"]: r for r in gantt["rows"]}
        # extract finished at +10 s, load's container started at 12 + 1 s: a 3 s step gap
        assert rows["+etl+extract"]["gapAfter"] == 3.0
        assert rows["+etl+load"]["gapAfter"] is None
        assert (await get_json(client, f"/api/v1/sessions/{NS}/etl-12/gantt?attempt=7", 404))["error"]
        t = await get_json(client, f"/api/v1/sessions/{NS}/etl-12/tasks/%2Betl%2Bload")
        assert t["row"]["id"] == 2 and t["config"] == {"sh>": "echo hi"}
        assert (await get_json(client, f"/api/v1/sessions/{NS}/etl-12/tasks/2"))["row"]["name"] == "+etl+load"
        await get_json(client, f"/api/v1/sessions/{NS}/nope", 404)
        await get_json(client, f"/api/v1/sessions/{NS}/etl-12/tasks/+etl+nope", 404)

    serve(fixtures)(body)


def test_task_names_are_data_not_markup(fixtures: Path) -> None:
    async def body(client: TestClient) -> None:
        resp = await client.get("/api/v1/sessions/team-b/other-1")
        assert resp.content_type == "application/json"
        body_text = await resp.text()
        assert XSS in json.loads(body_text)["tasks"][1]["name"]

    serve(fixtures)(body)


def test_every_response_is_hardened(fixtures: Path) -> None:
    (fixtures.parent / "static").mkdir()
    (fixtures.parent / "static" / "index.html").write_text("<!doctype html><title>kudig</title>")
    (fixtures.parent / "static" / "app.js").write_text("1")

    async def body(client: TestClient) -> None:
        for path in [
            "/",
            "/sessions/team-a/etl-12?tab=dag",
            "/static/app.js",
            "/api/v1/sessions",
            "/api/v1/nope",
            "/static/../secret",
        ]:
            resp = await client.get(path)
            assert resp.headers["Content-Security-Policy"] == CSP, path
            assert "'unsafe-inline'" not in CSP
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Referrer-Policy"] == "no-referrer"
        deep = await client.get(f"/sessions/{NS}/etl-12/tasks/+etl+load/log")
        assert deep.status == 200 and "<title>kudig</title>" in await deep.text()
        assert (await client.get("/api/v1/nope")).status == 404
        traversal = await client.get(URL("/static/..%2F..%2F..%2Fetc%2Fpasswd", encoded=True))
        assert traversal.status == 404 and "root:" not in await traversal.text()
        assert (await client.post("/api/v1/sessions")).status == 405  # read-only: GET only

    serve(fixtures, static_dir=fixtures.parent / "static")(body)


def test_namespace_flag_limits_what_is_served(fixtures: Path) -> None:
    async def body(client: TestClient) -> None:
        assert (await get_json(client, "/api/v1/namespaces"))["items"] == [NS]
        items = (await get_json(client, "/api/v1/sessions"))["items"]
        assert {s["namespace"] for s in items} == {NS}
        await get_json(client, "/api/v1/sessions/team-b/other-1", 403)
        assert (await get_json(client, "/api/v1/info"))["namespace"] == NS

    serve(fixtures, namespace=NS)(body)


def test_workflow_definition_files_and_calendar(fixtures: Path) -> None:
    async def body(client: TestClient) -> None:
        items = (await get_json(client, "/api/v1/workflows"))["items"]
        assert [(w["namespace"], w["objectName"]) for w in items] == [(NS, "etl")]
        wf = await get_json(client, f"/api/v1/workflows/{NS}/etl")
        assert wf["timezone"] == "Asia/Tokyo" and wf["revision"] == 3
        assert wf["files"] == ["etl.dig", "scripts/run.sh"]
        assert wf["definition"].startswith("timezone: Asia/Tokyo")
        nxt = wf["calendar"]["next"]
        assert len(nxt) == 20 and all(t.endswith("T00:00:00+09:00") for t in nxt)
        past = wf["calendar"]["past"]
        # daily>: 07:00:00 has session times at 00:00 JST; the Sessions at 00:00 UTC are not on
        # those slots, so every slot since the oldest one shows as skipped
        assert {p["session"] for p in past if not p["skipped"]} == {f"etl-{d}" for d in range(10, 20)}
        assert any(p["skipped"] and p["sessionTime"].endswith("T00:00:00+09:00") for p in past)
        f = await get_json(client, f"/api/v1/workflows/{NS}/etl/files/scripts/run.sh")
        assert f == {"path": "scripts/run.sh", "text": "echo run\n"}
        await get_json(client, f"/api/v1/workflows/{NS}/etl/files/nope", 404)

    serve(fixtures)(body)


async def sse_events(resp: Any, count: int, timeout: float = 5) -> AsyncIterator[dict[str, Any]]:
    async def read() -> AsyncIterator[dict[str, Any]]:
        event: dict[str, Any] = {}
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if event:
                    yield event
                event = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                event[key] = json.loads(value) if key == "data" else value

    seen = 0
    it = read()
    while seen < count:
        yield await asyncio.wait_for(it.__anext__(), timeout)
        seen += 1


def test_log_pages_and_streams_with_resume(fixtures: Path) -> None:
    log_file = fixtures / NS / "logs" / "etl-1.log"
    pod_file = fixtures / NS / "pods" / "etl-1.json"

    async def body(client: TestClient) -> None:
        log = await get_json(client, f"/api/v1/sessions/{NS}/etl-19/tasks/+etl+extract/log?offset=1")
        assert log["lines"] == ["line 1", "line 2"] and log["next"] == 3 and log["pod"] == "etl-1"
        assert log["source"] == "pod" and log["running"] is True
        resp = await client.get(
            f"/api/v1/sessions/{NS}/etl-19/tasks/+etl+extract/log/stream", headers={"Last-Event-ID": "0"}
        )
        assert resp.headers["Content-Type"] == "text/event-stream"
        events = sse_events(resp, 10)
        assert [(e["id"], e["data"]["line"]) async for e in _take(events, 2)] == [
            ("1", "line 1"),
            ("2", "line 2"),
        ]
        log_file.write_text(log_file.read_text() + "line 3\n")  # the log grows while the pod runs
        e = await events.__anext__()
        assert (e["id"], e["data"]) == ("3", {"line": "line 3"})
        pod = json.loads(pod_file.read_text())
        pod["status"]["phase"] = "Succeeded"
        pod_file.write_text(json.dumps(pod))
        e = await events.__anext__()
        assert e["event"] == "end" and e["data"] == {"reason": "finished"}
        resp.close()
        none = await get_json(client, f"/api/v1/sessions/{NS}/etl-18/tasks/+etl+extract/log")
        assert none["source"] == "none" and none["lines"] == []

    serve(fixtures)(body)


async def _take(it: AsyncIterator[dict[str, Any]], n: int) -> AsyncIterator[dict[str, Any]]:
    for _ in range(n):
        yield await it.__anext__()


def test_events_are_deltas_of_a_watch(fixtures: Path) -> None:
    path = fixtures / NS / "sessions" / "etl-19.json"

    async def body(client: TestClient) -> None:
        await get_json(client, f"/api/v1/events?namespace={NS}&session=nope", 404)
        await get_json(client, "/api/v1/events?session=etl-19", 400)
        other = await client.get(f"/api/v1/events?namespace={NS}&session=etl-18")  # sees nothing of etl-19
        resp = await client.get(f"/api/v1/events?namespace={NS}&session=etl-19")
        events = sse_events(resp, 10)
        assert (await events.__anext__())["event"] == "ready"
        obj = json.loads(path.read_text())
        tasks = fx.chain("etl", ["extract", "load"])
        tasks[2]["state"] = "error"
        obj["status"]["engine"]["data"] = fx.engine_data(tasks)
        obj["status"]["phase"] = "Failed"
        path.write_text(json.dumps(obj))
        os.utime(path)
        got = [await events.__anext__(), await events.__anext__()]
        assert got[0]["event"] == "session" and got[0]["data"]["summary"]["phase"] == "Failed"
        assert got[1]["event"] == "task"
        assert got[1]["data"]["row"]["name"] == "+etl+load" and got[1]["data"]["row"]["state"] == "error"
        resp.close()
        quiet = sse_events(other, 10, timeout=1)
        assert (await quiet.__anext__())["event"] == "ready"
        with pytest.raises(TimeoutError):
            await quiet.__anext__()
        other.close()

    serve(fixtures)(body)


def test_kudig_ui_command_serves_fixtures_and_prints_its_url(fixtures: Path) -> None:
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "kudig.cli", "ui", "--fixtures", str(fixtures), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("kudig ui: http://127.0.0.1:"), line
        url = line.split()[2]
        with urllib.request.urlopen(url + "api/v1/info", timeout=30) as resp:
            assert json.loads(resp.read()) == {
                "authMode": "fixtures",
                "namespace": None,
                "version": ANY_VERSION,
            }
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    bad = subprocess.run(
        [sys.executable, "-m", "kudig.cli", "ui", "--fixtures", str(fixtures / "nope")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "not a directory" in bad.stderr


class _AnyStr(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str)

    __hash__ = str.__hash__


ANY_VERSION = _AnyStr()


def test_watch_lines_longer_than_aiohttps_line_limit() -> None:
    """A watch event carries a whole Session (status up to ~1.5 MB): one JSON line each."""
    from aiohttp import ClientSession, web

    from kudig.ui.source import Cluster, KubeSource

    big = {
        "metadata": {"name": "s", "namespace": "a", "resourceVersion": "7"},
        "status": {"x": "y" * 3_000_000},
    }

    async def watch(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        line = json.dumps({"type": "MODIFIED", "object": big}).encode() + b"\n"
        for i in range(0, len(line), 65_000):  # in pieces, as a network delivers it
            await resp.write(line[i : i + 65_000])
        await resp.write(b'{"type":"DELETED","object":{"metadata":{"name":"s","namespace":"a"}}}\n')
        return resp

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/apis/kudig.io/v1alpha1/namespaces/a/sessions", watch)
        async with TestServer(app) as server, ClientSession() as http:
            src = KubeSource(Cluster(str(server.make_url("")).rstrip("/"), False), http, {})
            events = []
            async for kind, obj in src.watch("sessions", "a", "1"):
                events.append((kind, obj))
                if len(events) == 2:
                    break
        assert events[0] == ("MODIFIED", big) and events[1][0] == "DELETED"

    asyncio.run(main())


def test_whose_credentials_each_mode_sends() -> None:
    """bearer: the viewer's token as is, nothing without one; proxy: the server's own credentials
    impersonating the proxy's user and groups; 401 without a forwarded user. (The real API
    server's answers to them: tests/e2e/test_ui_server.py.)"""
    from aiohttp import web
    from multidict import CIMultiDict

    from kudig.ui.source import Cluster

    seen: list[CIMultiDict[str]] = []

    async def sessions(request: web.Request) -> web.Response:
        seen.append(CIMultiDict(request.headers))
        if request.headers.get("Authorization") == "Bearer nope":
            return web.json_response({"kind": "Status", "message": "Unauthorized"}, status=401)
        return web.json_response({"items": [], "metadata": {"resourceVersion": "5"}})

    class Own:  # the server's own credentials (kubernetes.client.Configuration in real use)
        def get_api_key_with_prefix(self, key: str) -> str:
            return "Bearer server-sa"

    async def main() -> None:
        fake = web.Application()
        fake.router.add_get("/apis/kudig.io/v1alpha1/namespaces/a/sessions", sessions)
        async with TestServer(fake) as api:
            host = str(api.make_url("")).rstrip("/")
            bearer = Settings("bearer", cluster=Cluster(host, False))
            async with TestClient(TestServer(make_app(bearer))) as client:
                no_token = await client.get("/api/v1/sessions?namespace=a")
                assert no_token.status == 401 and "Bearer" in (await no_token.json())["error"]
                assert seen == []  # nothing reached the API server
                ok = await client.get(
                    "/api/v1/sessions?namespace=a", headers={"Authorization": "Bearer alice"}
                )
                assert ok.status == 200
                assert seen[-1]["Authorization"] == "Bearer alice" and "Impersonate-User" not in seen[-1]
                refused = await client.get(
                    "/api/v1/sessions?namespace=a", headers={"Authorization": "Bearer nope"}
                )
                assert refused.status == 401 and "Unauthorized" in (await refused.json())["error"]
                info = await client.get("/api/v1/info")  # no token needed to learn the mode
                assert (await info.json())["authMode"] == "bearer"
            proxy = Settings("proxy", cluster=Cluster(host, False, Own()))
            async with TestClient(TestServer(make_app(proxy))) as client:
                assert (await client.get("/api/v1/sessions?namespace=a")).status == 401
                n = len(seen)
                ok = await client.get(
                    "/api/v1/sessions?namespace=a",
                    headers={
                        "X-Forwarded-User": "bob",
                        "X-Forwarded-Groups": "dev, ops",
                        "Authorization": "Bearer x",
                    },
                )
                assert ok.status == 200 and len(seen) == n + 1
                sent = seen[-1]
                assert sent["Authorization"] == "Bearer server-sa"  # never the browser's header
                assert sent["Impersonate-User"] == "bob" and sent.getall("Impersonate-Group") == [
                    "dev",
                    "ops",
                ]

    asyncio.run(main())


def test_a_released_pods_log_comes_from_the_log_store(fixtures: Path) -> None:
    """The controller released +etl+extract's pod of etl-18 (its log went to a ConfigMap, as
    kudig.cluster.logstore writes it): the log page and stream read it from there."""
    from kudig.cluster.logstore import ConfigMapLogStore, StoredLog

    made: list[dict[str, Any]] = []

    class Capture:
        def create_config_map(self, namespace: str, body: dict[str, Any]) -> bool:
            made.append(body)
            return True

    session = json.loads((fixtures / NS / "sessions" / "etl-18.json").read_text())
    store = ConfigMapLogStore(Capture())  # type: ignore[arg-type]
    store.put(
        NS, session, StoredLog("+etl+extract", "etl-18-gone", "2024-01-30T00:00:01Z"), "kept 1\nkept 2\n"
    )
    (fixtures / NS / "configmaps").mkdir(exist_ok=True)
    (fixtures / NS / "configmaps" / "etl-18-gone-log.json").write_text(json.dumps(made[0]))

    async def body(client: TestClient) -> None:
        log = await get_json(client, f"/api/v1/sessions/{NS}/etl-18/tasks/+etl+extract/log")
        assert (log["source"], log["pod"], log["lines"]) == ("store", "etl-18-gone", ["kept 1", "kept 2"])
        resp = await client.get(f"/api/v1/sessions/{NS}/etl-18/tasks/+etl+extract/log/stream")
        events = sse_events(resp, 10)
        got = [e async for e in _take(events, 3)]
        assert [e["data"] for e in got] == [{"line": "kept 1"}, {"line": "kept 2"}, {"reason": "stored"}]
        resp.close()

    serve(fixtures)(body)
