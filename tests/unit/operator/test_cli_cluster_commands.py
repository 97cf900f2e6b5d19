"""The cluster commands by digdag name against the controller's in-memory API server (`FakeKube`,
with the controller compiling the pushed Workflows as on a cluster): `start`, `sessions`,
`schedules`, `disable`/`enable`, `workflows`, `projects`, `show`. The same on a real cluster:
tests/e2e/test_cli_names.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_cli_session_by_name import project, push
from test_controller import NS, Harness

from kudig.api import SESSIONS, WORKFLOWS
from kudig.cli import main
from kudig.cluster.kube import Kube

EVERY = "timezone: UTC\nschedule:\n  daily>: 07:00:00\n+hello:\n  sh>: echo hi\n"


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    h = Harness(tmp_path)
    root = project(tmp_path, "p", "MixedCase_Flow")
    (root / "every_minute.dig").write_text(EVERY)
    push(h, root, "My_Project")
    monkeypatch.setattr(Kube, "from_kubeconfig", classmethod(lambda cls, ns=None: (h.kube, ns or NS)))
    return h


def kudig(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> str:
    assert main(list(args)) == code, capsys.readouterr()
    out = capsys.readouterr()
    return out.out + out.err


def as_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    return json.loads(kudig(capsys, *args, "-o", "json"))


def test_start_and_lists_by_digdag_name(h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    objects = {
        o["spec"]["name"]: o["metadata"]["name"] for (p, _, _), o in h.kube.objects.items() if p == WORKFLOWS
    }
    out = kudig(capsys, "start", "every_minute", "--session", "2024-01-30")
    assert "  workflow: every_minute\n" in out
    kudig(capsys, "start", "My_Project", "MixedCase_Flow", "--session", "2024-01-30")
    kudig(capsys, "start", objects["MixedCase_Flow"], "--session", "2024-01-31")  # the object name works
    sessions = [o for (p, _, _), o in h.kube.objects.items() if p == SESSIONS]
    assert sorted(s["spec"]["workflow"] for s in sessions) == sorted(
        [objects["every_minute"], objects["MixedCase_Flow"], objects["MixedCase_Flow"]]
    ), "the Session names the object, as the scheduler's do (one session per time)"
    listed = as_json(capsys, "sessions")
    assert sorted((r["project"], r["workflow"]) for r in listed) == [
        ("My_Project", "MixedCase_Flow"),
        ("My_Project", "MixedCase_Flow"),
        ("My_Project", "every_minute"),
    ]
    assert len(as_json(capsys, "sessions", "MixedCase_Flow")) == 2
    assert "Workflow 'every_minute' of project 'nope' not found in namespace data" in kudig(
        capsys, "start", "nope", "every_minute", "--session", "now", code=1
    )
    assert "Workflow 'every-minute' not found" in kudig(
        capsys, "start", "every-minute", "--session", "now", code=1
    )


def test_schedule_commands_by_digdag_name(h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    rows = as_json(capsys, "schedules")
    assert [(r["project"], r["workflow"], r["disabled"]) for r in rows] == [
        ("My_Project", "every_minute", False)
    ]
    assert "Disabled the schedule of every_minute" in kudig(capsys, "disable", "every_minute")
    assert as_json(capsys, "schedule")[0]["disabled"] is True
    kudig(capsys, "enable", "My_Project", "every_minute")
    assert as_json(capsys, "schedules")[0]["disabled"] is False
    assert "Would reschedule every_minute" in kudig(capsys, "reschedule", "every_minute", "--skip", "1", "-d")
    out = kudig(capsys, "backfill", "every_minute", "--from", "2024-01-01", "--count", "2", "-d")
    assert "Would start 2 session(s) of every_minute" in out
    assert "Workflow 'MixedCase_Flow' has no schedule" in kudig(capsys, "disable", "MixedCase_Flow", code=1)


def test_workflows_projects_and_show(h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    assert "  My_Project\n    MixedCase_Flow\n    every_minute\n" in kudig(capsys, "workflows")
    assert kudig(capsys, "workflow", "My_Project", "every_minute") == EVERY
    assert [r["workflow"] for r in as_json(capsys, "workflows", "My_Project")] == [
        "MixedCase_Flow",
        "every_minute",
    ]
    assert "Project 'other' not found" in kudig(capsys, "workflows", "other", code=1)
    projects = as_json(capsys, "projects")
    assert [(p["project"], p["workflows"]) for p in projects] == [
        ("My_Project", ["MixedCase_Flow", "every_minute"])
    ]
    assert kudig(capsys, "show", "every_minute") == "+every_minute  (group)\n  +hello  sh>: echo hi\n"
    assert kudig(capsys, "show", "My_Project", "MixedCase_Flow", "--format", "dot").startswith(
        'digraph "MixedCase_Flow"'
    )
