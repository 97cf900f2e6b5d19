"""The API over Sessions recorded from a real cluster run (tests/fixtures/ui/recorded, written by
hack/ui-record from the e2e suite's `etl` and `fanout` examples): the controller's real status
layout, task pods found by their labels, their real logs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp.test_utils import TestClient, TestServer

from kudig.ui.server import Settings, make_app

RECORDED = Path(__file__).resolve().parents[2] / "fixtures" / "ui" / "recorded"
NS = "kudig-helm-e2e-work"


def serve(body: Callable[[TestClient], Awaitable[None]]) -> None:
    async def main() -> None:
        async with TestClient(TestServer(make_app(Settings("fixtures", fixtures=RECORDED)))) as client:
            await body(client)

    asyncio.run(main())


async def get(client: TestClient, path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def test_recorded_sessions_tasks_dag_gantt_and_logs() -> None:
    async def body(client: TestClient) -> None:
        items = (await get(client, f"/api/v1/sessions?namespace={NS}"))["items"]
        assert [(s["name"], s["phase"]) for s in items] == [
            ("etl-20240201t000000", "Succeeded"),
            ("fanout-20240130t150000", "Failed"),
            ("fanout-20240129t150000", "Succeeded"),
        ]
        failed = await get(client, f"/api/v1/sessions/{NS}/fanout-20240130t150000")
        rows = {t["name"]: t for t in failed["tasks"]}
        bad = rows["+fanout+per_region^sub+for-0=region=1=eu+count"]
        assert bad["state"] == "error" and "Command failed with code 3" in bad["error"]
        assert rows["+fanout+per_region^sub"]["label"] == "^sub"
        assert failed["summary"]["failedTasks"]
        dag = await get(client, f"/api/v1/sessions/{NS}/fanout-20240130t150000/dag")
        nodes = {n["id"]: n for n in dag["nodes"]}
        assert len(nodes) == len(rows) and dag["edges"]
        for a, b in dag["edges"]:
            assert nodes[a]["x"] + nodes[a]["w"] <= nodes[b]["x"]
        gantt = await get(client, f"/api/v1/sessions/{NS}/etl-20240201t000000/gantt")
        g = {r["name"]: r for r in gantt["rows"]}
        assert g["+etl+extract"]["gapAfter"] is not None and g["+etl+extract"]["gapAfter"] >= 0
        log = await get(
            client, f"/api/v1/sessions/{NS}/etl-20240201t000000/tasks/{quote('+etl+load', safe='')}/log"
        )
        assert log["source"] == "pod" and log["running"] is False
        assert log["lines"] == ["loading 18 orders (total 906) from shop for 2024-02-01"]
        wf = await get(client, f"/api/v1/workflows/{NS}/etl")
        assert "etl.dig" in wf["files"] and wf["definition"]

    serve(body)
