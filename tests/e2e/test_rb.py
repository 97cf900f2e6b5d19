"""rb> in a pod: the runner image has no Ruby (rb> is local-only, docs/operators.md), so the task
fails at once with a message saying so, and the workflow's later tasks do not run."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Kube
from .operator_fixtures import Operator, push, start, wait_session

pytestmark = pytest.mark.e2e


def test_rb_in_a_pod_fails_clearly_without_ruby(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = tmp_path / "rbwf"
    root.mkdir()
    (root / "tasks.rb").write_text("def hello\n  puts 'hi'\nend\n")
    (root / "rb.dig").write_text("+hello:\n  rb>: hello\n  require: tasks\n+never:\n  sh>: echo never-here\n")
    push(kube, namespace, root, "rbwf")
    name = start(kube, namespace, "rb", "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name, timeout=300)
    assert obj["status"]["phase"] == "Failed", obj["status"]
    assert "rb> needs Ruby, and 'ruby' was not found here" in str(obj["status"])
    assert "The kudig runner image has no Ruby" in str(obj["status"])
