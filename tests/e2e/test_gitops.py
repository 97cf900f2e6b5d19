"""GitOps: `kudig push --dry-run -o yaml` renders manifests that `kubectl apply` (as Argo CD or
Flux would) takes as they are; applying the same render twice changes nothing, and a changed file
changes exactly one ConfigMap and the Workflow's revision — which the controller then compiles."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import Kube, wait_for
from .operator_fixtures import GROUP, ROOT, VERSION, Operator
from .test_operator_in_cluster import kubectl

pytestmark = pytest.mark.e2e


def render(project: Path, namespace: str, out: Path) -> Path:
    proc = subprocess.run(
        [sys.executable, "-m", "kudig.cli", "push", str(project), "--dry-run", "-o", "yaml", "-n", namespace],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        check=True,
    )
    out.write_text(proc.stdout)
    return out


def apply(path: Path) -> list[str]:
    proc = subprocess.run(
        [kubectl(), "apply", "-f", str(path)], capture_output=True, text=True, timeout=120, check=True
    )
    return sorted(line.strip() for line in proc.stdout.splitlines() if line.strip())


def test_a_render_applies_as_is_and_twice_changes_nothing(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    project = tmp_path / "etl"
    shutil.copytree(
        ROOT / "examples" / "etl", project, ignore=shutil.ignore_patterns(".digdag", "__pycache__")
    )
    first = render(project, namespace, tmp_path / "r1.yaml")
    assert apply(first) == ["configmap/etl-files created", "workflow.kudig.io/etl created"]
    assert apply(render(project, namespace, tmp_path / "r1b.yaml")) == [
        "configmap/etl-files unchanged",
        "workflow.kudig.io/etl unchanged",
    ]

    def workflow() -> dict[str, Any]:
        obj: dict[str, Any] = kube.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "workflows", "etl"
        )
        return obj

    compiled = wait_for(
        lambda: workflow() if (workflow().get("status") or {}).get("projectDigest") else None,
        60,
        "the controller to compile the first revision",
    )
    generation = compiled["metadata"]["generation"]
    script = next(p for p in sorted(project.rglob("*.py")) if p.is_file())
    script.write_text(script.read_text() + "\n# changed in git\n")
    changed = apply(render(project, namespace, tmp_path / "r2.yaml"))
    assert changed == ["configmap/etl-files configured", "workflow.kudig.io/etl configured"]
    new = workflow()
    assert new["metadata"]["generation"] == generation + 1
    digest = new["spec"]["project"]["digest"]
    wait_for(
        lambda: (workflow().get("status") or {}).get("projectDigest") == digest,
        60,
        "the controller to compile the changed revision",
    )
