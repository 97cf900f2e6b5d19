"""kudig.ui.record (hack/ui-record): what it keeps of a namespace, read through a Source."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from kudig.ui.record import record
from kudig.ui.source import FixtureSource
from tests import ui_fixtures as fx


def test_records_sessions_their_workflow_files_pods_and_logs(tmp_path: Path) -> None:
    world = fx.demo(tmp_path / "world")
    out = tmp_path / "out"
    n = asyncio.run(record(FixtureSource(world), out, ["team-a"], ["etl-12"]))
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "team-a/configmaps/etl-files.json",
        "team-a/logs/etl-12-1.log",
        "team-a/logs/etl-12-2.log",
        "team-a/pods/etl-12-1.json",
        "team-a/pods/etl-12-2.json",
        "team-a/sessions/etl-12.json",
        "team-a/workflows/etl.json",
    ]
    assert n == 5  # the workflow, the session, 2 pods, the config map (logs go with their pods)
    original = json.loads((world / "team-a" / "sessions" / "etl-12.json").read_text())
    assert json.loads((out / "team-a" / "sessions" / "etl-12.json").read_text()) == original
    assert (out / "team-a" / "logs" / "etl-12-2.log").read_text().startswith("+etl+transform line 0")
