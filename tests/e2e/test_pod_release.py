"""Finished task pods released on a real cluster: each log copied to the log store (ConfigMaps,
the default), the pod deleted once its result is committed; `kudig log` reads the same logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from kudig.api import LABEL_SESSION

from .conftest import Kube, wait_for
from .operator_fixtures import Operator, kudig_cli, push, start, task_pods, wait_session

pytestmark = pytest.mark.e2e

DIG = """
+fan:
  _parallel: true
  +one:
    sh>: echo "one says hello"
  +two:
    sh>: echo "two says hello"
+kept:
  sh>: echo "about to fail" && exit 3
"""


def test_released_pods_leave_their_logs_in_the_store(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = tmp_path / "released"
    root.mkdir()
    (root / "released.dig").write_text(DIG)
    objects = push(kube, namespace, root, "released", spec={"history": {"pods": "failed"}})
    wf = next(o for o in objects if o["kind"] == "Workflow")["metadata"]["name"]
    name = start(kube, namespace, wf, "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Failed"
    # the failed try's pod stays (retention "failed"); the others go once their logs are stored
    left = wait_for(
        lambda: (pods := task_pods(kube, namespace, name)) and len(pods) == 1 and pods,
        60,
        "the succeeded tasks' pods to be released",
    )
    assert left[0].metadata.annotations["kudig.io/task"] == "+released+kept"
    stored = kube.core.list_namespaced_config_map(namespace, label_selector=f"{LABEL_SESSION}={name}").items
    logs = {
        cm.metadata.annotations["kudig.io/task"]: cm for cm in stored if cm.metadata.name.endswith("-log")
    }
    assert set(logs) == {"+released+fan+one", "+released+fan+two"}
    assert all(cm.metadata.owner_references[0].kind == "Session" for cm in logs.values())
    out = kudig_cli("log", name, namespace=namespace).stdout
    assert "one says hello" in out and "two says hello" in out and "about to fail" in out
    assert out.index("--- +released+fan+") < out.index("--- +released+kept")
    one = kudig_cli("log", name, "+one", namespace=namespace).stdout
    assert "one says hello" in one and "two says" not in one
