"""The CLI on the cluster as a digdag user types it: workflows by their digdag names (`_`, mixed
case) in every command that takes one and in every list, `PROJECT WORKFLOW`, a hand-written
Session naming its Workflow by digdag name, and the commands `workflows`, `projects`, `show`,
`secrets --project` (the task reads `${secret:...}`; no value is ever printed) and `delete`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import Kube, wait_for
from .operator_fixtures import GROUP, VERSION, Operator, kudig_cli, wait_session

pytestmark = pytest.mark.e2e

PROJECT = "My_Project"
SECRET = "s3cret-Value"
EVERY = """\
timezone: UTC
schedule:
  daily>: 07:00:00
+hello:
  sh>: 'test "$(echo "${secret:greeting}" | tr a-z A-Z)" = S3CRET-VALUE && echo secret-ok'
"""
MIXED = """\
+group:
  +first:
    echo>: first of ${task_name}
  +second:
    echo>: second
"""


def kudig(namespace: str, *args: str, ok: bool = True) -> str:
    proc = kudig_cli(*args, namespace=namespace, ok=ok, timeout=90)
    assert SECRET not in proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def started(out: str) -> str:
    found = re.search(r"Started a session: (\S+)", out)
    assert found, out
    return found.group(1)


def test_workflows_by_digdag_name_on_the_cluster(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "every_minute.dig").write_text(EVERY)
    (root / "MixedCase_Flow.dig").write_text(MIXED)
    kudig(namespace, "push", str(root), "--name", PROJECT)

    def workflows() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = kube.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "workflows"
        )["items"]
        return items

    objects = {w["spec"]["name"]: w["metadata"]["name"] for w in workflows()}
    assert objects["every_minute"] != "every_minute" and objects["MixedCase_Flow"] != "MixedCase_Flow"

    # secrets: set, listed by key, read by the task; never printed
    out = kudig(namespace, "secrets", "--project", PROJECT, "--set", f"greeting={SECRET}")
    assert "Secret 'greeting' set (Secret kudig-secrets in namespace" in out
    assert kudig(namespace, "secret", "--project", PROJECT).split() == ["greeting"]

    # start by digdag name, and as PROJECT WORKFLOW
    every = started(kudig(namespace, "start", "every_minute", "--session", "2024-01-30"))
    mixed = started(kudig(namespace, "start", PROJECT, "MixedCase_Flow", "--session", "2024-01-30"))
    assert wait_session(kube, operator, namespace, every)["status"]["phase"] == "Succeeded"
    assert wait_session(kube, operator, namespace, mixed)["status"]["phase"] == "Succeeded"
    assert "secret-ok" in kudig(namespace, "log", every, "+hello")
    assert "first of +MixedCase_Flow+group+first" in kudig(namespace, "logs", mixed, "+first")
    kudig(namespace, "start", "other_project", "every_minute", "--session", "now", ok=False)

    # a Session written by hand names its Workflow by digdag name
    kube.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "sessions",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Session",
            "metadata": {"name": "by-hand"},
            "spec": {"workflow": "MixedCase_Flow", "sessionTime": "2024-02-01T00:00:00+00:00"},
        },
    )
    assert wait_session(kube, operator, namespace, "by-hand")["status"]["phase"] == "Succeeded"

    # lists show digdag names and projects
    sessions = json.loads(kudig(namespace, "sessions", "-o", "json"))
    assert sorted((s["project"], s["workflow"]) for s in sessions) == [
        (PROJECT, "MixedCase_Flow"),
        (PROJECT, "MixedCase_Flow"),
        (PROJECT, "every_minute"),
    ]
    assert [s["name"] for s in json.loads(kudig(namespace, "sessions", "every_minute", "-o", "json"))] == [
        every
    ]
    assert "MixedCase_Flow" in kudig(namespace, "session", "by-hand")
    wait_for(
        lambda: all(
            (w.get("status") or {}).get("nextSessionTime")
            for w in workflows()
            if "schedule" in w["spec"]["dig"]
        ),
        60,
        "every_minute's schedule computed",
    )
    schedules = json.loads(kudig(namespace, "schedule", "-o", "json"))
    assert [(s["project"], s["workflow"], s["disabled"]) for s in schedules] == [
        (PROJECT, "every_minute", False)
    ]
    assert "every_minute" in kudig(namespace, "schedules")

    # schedule commands by digdag name
    assert "Disabled the schedule of every_minute" in kudig(namespace, "disable", "every_minute")
    assert json.loads(kudig(namespace, "schedules", "-o", "json"))[0]["disabled"] is True
    kudig(namespace, "enable", PROJECT, "every_minute")
    assert json.loads(kudig(namespace, "schedules", "-o", "json"))[0]["disabled"] is False
    assert "Would reschedule every_minute" in kudig(
        namespace, "reschedule", "every_minute", "--skip", "1", "-d"
    )
    out = kudig(namespace, "backfill", "every_minute", "--from", "2024-01-01", "--count", "2", "-d")
    assert "Would start 2 session(s) of every_minute" in out
    assert "no schedule" in kudig(namespace, "disable", "MixedCase_Flow", ok=False)

    # workflows, projects, show
    listing = kudig(namespace, "workflows")
    assert f"  {PROJECT}\n    MixedCase_Flow\n    every_minute\n" in listing
    assert kudig(namespace, "workflow", PROJECT, "every_minute").startswith(EVERY.rstrip())
    rows = json.loads(kudig(namespace, "workflows", PROJECT, "-o", "json"))
    assert {(r["workflow"], r["object"]) for r in rows} == set(objects.items())
    projects = json.loads(kudig(namespace, "projects", "-o", "json"))
    assert [(p["project"], p["workflows"]) for p in projects] == [
        (PROJECT, ["MixedCase_Flow", "every_minute"])
    ]
    tree = kudig(namespace, "show", "MixedCase_Flow")
    assert "  +group  (group)\n    +first  echo>: first of ${task_name}\n" in tree
    assert kudig(namespace, "show", PROJECT, "MixedCase_Flow", "--format", "dot").startswith(
        'digraph "MixedCase_Flow"'
    )

    # delete: asks; the project's Workflows and ConfigMaps go, its Sessions stay
    argv = [sys.executable, "-m", "kudig.cli", "delete", PROJECT, "-n", namespace]
    no = subprocess.run(argv, input="n\n", capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert no.returncode == 1 and "Canceled." in no.stdout and len(workflows()) == 2
    assert f"Project '{PROJECT}' is deleted." in kudig(namespace, "delete", PROJECT, "--force")
    assert workflows() == []
    config_maps = kube.core.list_namespaced_config_map(namespace, label_selector="kudig.io/project").items
    assert config_maps == []
    assert len(json.loads(kudig(namespace, "sessions", "-o", "json"))) == 3
    assert "not found" in kudig(namespace, "start", "every_minute", "--session", "now", ok=False)
