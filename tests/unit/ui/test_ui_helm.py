"""The chart's web UI (helm/kudig/templates/ui.yaml): off by default, read-only, never Secrets."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "kudig"

pytestmark = pytest.mark.slow  # the first run builds helm (hack/helm)


@functools.cache
def helm() -> str:
    proc = subprocess.run([str(ROOT / "hack" / "helm")], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"hack/helm failed:\n{proc.stderr}"
    return proc.stdout.strip().splitlines()[-1]


def render(*sets: str) -> list[dict[str, Any]]:
    args = [a for s in sets for a in ("--set", s)]
    proc = subprocess.run(
        [helm(), "template", "kudig", str(CHART), "--namespace", "kudig-system", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def ui_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "ui"]


def test_off_by_default() -> None:
    assert ui_docs(render()) == []


def test_bearer_mode_gives_the_service_account_no_rights() -> None:
    docs = ui_docs(render("ui.enabled=true"))
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == [
        ("ClusterRole", "kudig-ui-viewer"),
        ("Deployment", "kudig-ui"),
        ("Service", "kudig-ui"),
        ("ServiceAccount", "kudig-ui"),
    ]
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == [
        "python3", "-m", "kudig.cli", "ui", "--in-cluster", "--address", "0.0.0.0", "--port", "8765",
        "--auth-mode", "bearer",
    ]  # fmt: skip
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == "kudig-ui"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # the controller's Service never selects the UI's pods, nor the UI's Service the controller's
    selectors = {
        d["metadata"]["name"]: d["spec"]["selector"]
        for d in render("ui.enabled=true")
        if d["kind"] == "Service"
    }
    assert selectors["kudig-ui"]["app.kubernetes.io/component"] == "ui"
    assert all(s.get("app.kubernetes.io/component") != "ui" for n, s in selectors.items() if n != "kudig-ui")


def test_viewer_role_is_read_only_and_never_secrets() -> None:
    (viewer,) = [d for d in ui_docs(render("ui.enabled=true")) if d["kind"] == "ClusterRole"]
    for rule in viewer["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
        assert "secrets" not in rule["resources"] and "*" not in rule["resources"]
    granted = {(g, r) for rule in viewer["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {
        ("kudig.io", "sessions"), ("kudig.io", "workflows"),
        ("", "pods"), ("", "pods/log"), ("", "configmaps"), ("", "namespaces"),
    }  # fmt: skip


def test_proxy_mode_only_adds_impersonation() -> None:
    docs = ui_docs(
        render("ui.enabled=true", "ui.authMode=proxy", "ui.namespace=team-a", "ui.viewerRole=false")
    )
    roles = [d for d in docs if d["kind"] == "ClusterRole"]
    assert [r["rules"] for r in roles] == [
        [{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}]
    ]
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kudig-ui", "namespace": "kudig-system"}
    ]
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deploy["spec"]["template"]["spec"]["containers"][0]["command"][-4:] == [
        "--auth-mode", "proxy", "--namespace", "team-a",
    ]  # fmt: skip
